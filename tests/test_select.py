"""The bit-pattern selection of prune's numpy path (compress/_select.py) against the torch
reference (compress/_prune.py: the multi-pass histogram threshold and threshold_mask), and
prune_file's numpy path against its torch path, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import paramscope
from _helpers import without_torch
from paramscope._errors import EntryError
from paramscope.compress import _select as S
from paramscope.compress import _stream
from paramscope.compress._prune import _threshold_for_k, threshold_mask

KINDS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _raw(t: torch.Tensor) -> np.ndarray:
    """The typed view of _select for a torch tensor's bytes (a copy)."""
    kind = {v: k for k, v in KINDS.items()}[t.dtype]
    return S.typed(t.contiguous().view(torch.uint8).numpy().copy(), kind)


def _parts(raws: list[np.ndarray]) -> list[S.Part]:
    return [S.Part(f"t{i}", r.size, lambda s, c, r=r: r[s : s + c]) for i, r in enumerate(raws)]


def _as_torch(r: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    if r.size == 0:
        return like.clone()
    return torch.from_numpy(r.view(np.uint8).copy()).view(like.dtype).reshape(like.shape)


def _check(tensors: list[torch.Tensor], k: int) -> None:
    raws = [_raw(t) for t in tensors]
    key, ties = S.kth_key(_parts(raws), k, lambda: iter((f"t{i}", r) for i, r in enumerate(raws)))
    thr, ties_ref = _threshold_for_k(lambda: iter(tensors), k)
    assert (S.key_value(key), ties) == (thr, ties_ref)
    left = ties
    pruned = 0
    for t, r in zip(tensors, raws, strict=True):
        keep, used = threshold_mask(t, thr, left)
        want = t.masked_fill(~keep, 0)
        nonzero, used_here = S.prune_below(r, key, left)
        got = _as_torch(r, t)
        assert used_here == used
        left -= used
        assert torch.equal(got.view(torch.uint8), want.contiguous().view(torch.uint8))  # +0 bits
        assert nonzero == int(torch.count_nonzero(want))
        pruned += int((~keep).sum())
    assert pruned == k  # the cut prunes exactly k elements over all tensors


def _tensor(seed: int, size: int, kind: str, mode: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if mode == 0:  # continuous
        t = torch.randn(size, generator=g)
    elif mode == 1:  # few distinct magnitudes: many ties
        t = torch.randint(-3, 4, (size,), generator=g).float() * 0.5
    elif mode == 2:  # mostly zeros
        t = torch.zeros(size)
        t[::7] = 1.5
    else:  # wide range, infinities, subnormals of float16
        t = torch.randn(size, generator=g) * torch.logspace(-7, 7, size)
        if size > 3:
            t[1] = float("inf")
            t[2] = -float("inf")
    return t.to(KINDS[kind])


@settings(max_examples=25, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.integers(0, 2**16),
            st.sampled_from([0, 1, 5, 999, 70_001, (1 << 20) + 17]),
            st.sampled_from(list(KINDS)),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=4,
    ),
    frac=st.floats(0.0, 1.0),
)
def test_cut_equals_the_torch_reference(specs: list, frac: float) -> None:
    tensors = [_tensor(*s) for s in specs]
    total = sum(t.numel() for t in tensors)
    if total == 0:
        return
    for k in sorted({1, total, max(1, round(frac * total))}):
        _check(tensors, k)


def test_bracket_miss_falls_back_and_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    tensors = [_tensor(1, 300_000, "F32", 0), _tensor(2, 200_000, "BF16", 0)]
    raws = [_raw(t) for t in tensors]
    # a sample that lies (it sees only tiny values): its bracket misses the real cut
    liar = [
        S.Part(f"t{i}", r.size, lambda s, c: S.typed(np.full(c, 1e-30, np.float32), "F32"))
        for i, r in enumerate(raws)
    ]
    calls = {"top": 0}
    top = S._top_pass

    def counted(arrays):  # type: ignore[no-untyped-def]
        calls["top"] += 1
        return top(arrays)

    monkeypatch.setattr(S, "_top_pass", counted)
    k = 123_457
    key, ties = S.kth_key(liar, k, lambda: iter((f"t{i}", r) for i, r in enumerate(raws)))
    assert calls["top"] == 1  # the fallback ran
    assert (S.key_value(key), ties) == _threshold_for_k(lambda: iter(tensors), k)


def test_nan_is_refused_naming_its_tensor() -> None:
    t = torch.randn(100_000)
    t[77_777] = float("nan")
    raws = [_raw(torch.randn(1000)), _raw(t)]
    scan = lambda: iter([("ok", raws[0]), ("bad.weight", raws[1])])  # noqa: E731
    # found by the sample, or (a sample that misses it) by the exact pass
    blind = S.Part("bad.weight", raws[1].size, lambda s, c: raws[0][:c])
    for parts in (_parts(raws), [_parts(raws)[0], blind]):
        with pytest.raises(EntryError, match=r"'bad\.weight' holds NaN"):
            S.kth_key(parts, 50_000, scan)
    small = [_raw(torch.tensor([1.0, float("nan")]))]
    with pytest.raises(EntryError, match=r"'t0' holds NaN"):
        S.kth_key(_parts(small), 1, lambda: iter([("t0", small[0])]))


def test_k_outside_the_elements_is_refused() -> None:
    raws = [_raw(torch.ones(10))]
    for k in (0, 11):
        with pytest.raises(ValueError, match="outside 1 … 10"):
            S.kth_key(_parts(raws), k, lambda: iter([("t0", raws[0])]))


# ----------------------------------------------------------------------- prune_file, both paths
def _checkpoint(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": torch.randn(1024, 1100, generator=g),  # more than a chunk
        "b.weight": torch.randn(64, 3, 5, 8, generator=g).to(torch.bfloat16),
        "c.weight": (torch.randint(-4, 5, (96, 40), generator=g) * 0.25).to(torch.float16),
        "d.weight": torch.zeros(30, 30),
        "e.bias": torch.randn(300, generator=g),
        "ids": torch.arange(10),
    }
    return paramscope.save(sd, tmp_path / "src.safetensors")


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.97])
def test_prune_file_numpy_path_equals_the_torch_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scope: str, amount: float
) -> None:
    src = _checkpoint(tmp_path)
    fast = _stream.prune_file(src, tmp_path / "fast.safetensors", amount, scope=scope)
    monkeypatch.setattr(S, "KINDS", ())  # no stored type qualifies: the torch path
    slow = _stream.prune_file(src, tmp_path / "slow.safetensors", amount, scope=scope)
    assert fast.to_dict()["tensors"] == slow.to_dict()["tensors"]
    a = paramscope.load(tmp_path / "fast.safetensors")
    b = paramscope.load(tmp_path / "slow.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name].view(torch.uint8), b[name].view(torch.uint8)), name
    pruned = paramscope.count(tmp_path / "fast.safetensors").pruned  # from the header
    for name, t in a.items():
        if name.endswith(".weight"):
            assert pruned[name]["nonzero"] == int(torch.count_nonzero(t)), name
    total = sum(a[n].numel() for n in a if n.endswith(".weight"))
    zeros = sum(row["zeros"] for row in fast.to_dict()["tensors"])
    if scope == "global":  # exact: round(amount * total) pruned, plus the zeros of d.weight
        assert zeros >= round(amount * total)


def test_prune_file_runs_without_torch(tmp_path: Path) -> None:
    src = _checkpoint(tmp_path)
    code = (
        "from paramscope.compress._stream import prune_file\n"
        "r = prune_file(sys.argv[1], sys.argv[2] + '/p.safetensors', 0.5)\n"
        "result = sum(t['zeros'] for t in r.tensors)\n"
    )
    zeros = without_torch(code, src, tmp_path)
    out = paramscope.load(tmp_path / "p.safetensors")
    assert zeros == sum(int((out[n] == 0).sum()) for n in out if n.endswith(".weight"))
    assert paramscope.verify(tmp_path / "p.safetensors").ok


# ----------------------------------------------------------------------- SourceReader.scan_raw
def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_scan_raw_gives_the_stored_bytes_and_drops_each_entrys_pages(tmp_path: Path) -> None:
    from paramscope.io._reader import SourceReader

    n = 8 << 20  # 8 entries of 8 MiB
    sd = {f"w{i}": torch.full((n // 4,), float(i)) for i in range(8)}
    sd["empty"] = torch.zeros(0)
    path = paramscope.save(sd, tmp_path / "m.safetensors")
    with SourceReader(path) as r:
        base = _rss_file_kib()
        most = 0
        seen = []
        for e, buf in r.scan_raw():
            a = np.frombuffer(buf, dtype=np.float32)
            assert bytes(buf) == bytes(r.read_raw(e))
            if a.size:
                assert float(a.sum()) == a.size * int(e.name[1:])  # every page touched
            most = max(most, _rss_file_kib() - base)
            seen.append(e.name)
            del a
        assert seen == [e.name for e in r.entries]
    # mapped pages leave the process entry by entry: at most about two entries at once
    assert most <= 2 * n // 1024 + 4096


def test_scan_raw_refuses_a_short_file_and_falls_back_without_a_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from paramscope._errors import FormatError
    from paramscope.io import _source
    from paramscope.io._reader import SourceReader

    path = paramscope.save(
        {"a": torch.ones(1000), "b": torch.ones(1000)}, tmp_path / "m.safetensors"
    )
    with SourceReader(path) as r:
        want = [(e.name, bytes(r.read_raw(e))) for e in r.entries]  # (the file is open now)
        # not a local file (a remote source): read as stream(raw=True)
        monkeypatch.setattr(_source, "LocalSource", type("Remote", (), {}))
        assert [(e.name, bytes(b)) for e, b in r.scan_raw()] == want
    monkeypatch.undo()
    with SourceReader(path) as r:
        with open(path, "r+b") as f:  # cut after the header was read: no SIGBUS, an error
            f.truncate(path.stat().st_size - 100)
        with pytest.raises(FormatError, match="'b': expected 4000 bytes"):
            list(r.scan_raw())
