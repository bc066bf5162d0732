"""Streaming transforms at disk speed: the overlapped paths (reader thread, threaded numpy
quantiser, writer thread) give the bytes of the sequential ones, raise the errors of their
threads with nothing half-written, keep memory within their budget, and need no torch."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest
import torch

import paramscope
from _helpers import without_torch
from paramscope._errors import ArgumentError, EntryError
from paramscope.compress import _qkernels, _stream, quantize_file
from paramscope.compress._qkernels import QuantConfig, quantize_tensor, quantize_with_errors
from paramscope.io import _writer
from paramscope.io._reader import HUGE_MIN, SourceReader


def _checkpoint(tmp_path: Path) -> Path:
    """Five dtypes and layouts; two entries of 4 MiB (huge-page buffers), the rest small."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": torch.randn(1024, 1024, generator=g),  # 4 MiB = HUGE_MIN
        "b.weight": torch.randn(64, 3, 5, 8, generator=g).to(torch.bfloat16),
        "c.weight": torch.randn(96, 40, generator=g).to(torch.float16),
        "d.weight": torch.randn(24, 16, generator=g).to(torch.float64),
        "e.bias": torch.randn(300, generator=g),
        "f.weight": torch.randn(2, 2**19 + 8, generator=g),  # rows longer than a block
        "ids": torch.arange(10),
    }
    return paramscope.save(sd, tmp_path / "src.safetensors")


def _sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read in the caller's thread, quantise with torch on one thread."""

    def stream(self: SourceReader, entries=None, **kw):  # type: ignore[no-untyped-def]
        read = self.read_raw if kw.get("raw") else self.read
        return ((e, read(e)) for e in (self.entries if entries is None else entries))

    monkeypatch.setattr(SourceReader, "stream", stream)
    monkeypatch.setattr(_stream, "_RAW_KINDS", {})
    monkeypatch.setattr(_qkernels, "_workers", lambda: (None, 1))


CONFIGS = [
    {"bits": 8},
    {"bits": 4},
    {"bits": 8, "scheme": "asymmetric"},
    {"bits": 4, "scheme": "asymmetric", "granularity": 8},
    {"bits": 8, "granularity": "tensor"},
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_quantize_file_bytes_equal_the_sequential_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kw: dict[str, object]
) -> None:
    src = _checkpoint(tmp_path)
    fast = quantize_file(src, tmp_path / "fast.safetensors", **kw)
    with monkeypatch.context() as mp:
        _sequential(mp)
        slow = quantize_file(src, tmp_path / "slow.safetensors", **kw)
    assert (tmp_path / "fast.safetensors").read_bytes() == (
        tmp_path / "slow.safetensors"
    ).read_bytes()
    # 6 float entries with ndim >= 2 are quantised (e.bias is 1-D, ids is integer)
    assert [t["name"] for t in fast.tensors] == [t["name"] for t in slow.tensors]
    assert len(fast.tensors) == 5
    for a, b in zip(fast.tensors, slow.tensors, strict=True):
        assert a["max_abs_error"] == b["max_abs_error"]  # the same restored values
        assert a["sqnr_db"] == pytest.approx(b["sqnr_db"], abs=1e-3)  # sums in another order


def test_convert_bytes_equal_the_sequential_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _checkpoint(tmp_path)
    torch.save(paramscope.load(src).state_dict(), tmp_path / "src.pt")
    paramscope.convert(tmp_path / "src.pt", tmp_path / "fast", max_shard_size="5MB")
    with monkeypatch.context() as mp:
        _sequential(mp)
        paramscope.convert(tmp_path / "src.pt", tmp_path / "slow", max_shard_size="5MB")
    fast = sorted(p.name for p in (tmp_path / "fast").iterdir())
    assert fast == sorted(p.name for p in (tmp_path / "slow").iterdir())
    # a.weight (4,194,304 B) and f.weight (4,194,368 B) cannot share a 5,000,000 B shard, the
    # small entries (23 KB) fit beside either: 2 shards and the index
    assert len(fast) == 2 + 1
    for name in fast:
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "slow" / name).read_bytes()
    assert paramscope.verify(tmp_path / "fast").ok


def test_quantize_tensor_same_bytes_for_any_block_size_and_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(37, 129, generator=g)
    cfgs = [QuantConfig(8), QuantConfig(4, "asymmetric", 3), QuantConfig(8, granularity="tensor")]
    ref = [quantize_with_errors(w, c) for c in cfgs]
    for chunk, workers in [(50, None), (129 * 3, None), (1 << 19, (None, 1))]:
        monkeypatch.setattr(_qkernels, "_CHUNK", chunk)  # 50: every row split in 3 slices
        if workers is not None:
            monkeypatch.setattr(_qkernels, "_workers", lambda w=workers: w)
        for c, (q0, s0) in zip(cfgs, ref, strict=True):
            q, s = quantize_with_errors(w, c)
            assert torch.equal(q.data, q0.data) and torch.equal(q.scale, q0.scale)
            assert s is not None and s0 is not None
            assert s.max_abs_error == s0.max_abs_error and s.count == s0.count == 37 * 129
            assert s.noise == pytest.approx(s0.noise, rel=1e-6)


def test_nan_in_a_late_block_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_qkernels, "_CHUNK", 64)  # 16 blocks of 4 rows
    w = torch.randn(64, 16)
    w[61, 3] = float("nan")
    with pytest.raises(EntryError, match=r"'late': contains NaN or Inf"):
        quantize_tensor(w, QuantConfig(), "late")


def _no_trace(folder: Path, keep: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == keep  # no output, no temp file


def test_reader_thread_error_propagates_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _checkpoint(tmp_path)
    real = SourceReader._fill
    reads: list[str] = []

    def failing(self: SourceReader, e, mv) -> None:  # type: ignore[no-untyped-def]
        reads.append(e.name)
        if e.name == "c.weight":
            raise OSError(errno.EIO, "Input/output error", "disk")
        real(self, e, mv)

    monkeypatch.setattr(SourceReader, "_fill", failing)
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(OSError, match="Input/output error"):
        quantize_file(src, tmp_path / "q.safetensors")
    with pytest.raises(OSError, match="Input/output error"):
        paramscope.convert(src, tmp_path / "c.safetensors")
    _no_trace(tmp_path, {"src.safetensors"})
    assert not [t for t in threading.enumerate() if t.name.startswith("paramscope-reader")]


def test_writer_thread_error_propagates_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _checkpoint(tmp_path)
    real = _writer._WriterThread._write
    seen: list[str] = []

    def failing(self, name: str, mv: memoryview) -> None:  # type: ignore[no-untyped-def]
        seen.append(threading.current_thread().name)
        if name == "f.weight":  # a large buffer: written by the writer thread
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, mv)

    monkeypatch.setattr(_writer._WriterThread, "_write", failing)
    with pytest.raises(OSError, match="No space left on device"):
        paramscope.convert(src, tmp_path / "c.safetensors")
    assert "paramscope-writer" in seen  # the failing write ran in the writer thread
    with pytest.raises(OSError, match="No space left on device"):
        _stream.prune_file(src, tmp_path / "p.safetensors", 0.5)
    _no_trace(tmp_path, {"src.safetensors"})
    assert not [t for t in threading.enumerate() if t.name == "paramscope-writer"]


def test_producer_error_stops_the_threads_and_writes_nothing(tmp_path: Path) -> None:
    t = torch.randn(2048, 1024)
    t[1000, 5] = float("inf")
    bad = paramscope.save(
        {"x.weight": torch.ones(1024, 1024), "y.weight": t}, tmp_path / "b.safetensors"
    )
    with pytest.raises(EntryError, match=r"'y\.weight': contains NaN or Inf"):
        quantize_file(bad, tmp_path / "q.safetensors")
    _no_trace(tmp_path, {"b.safetensors"})


def test_stream_memory_stays_within_its_budget(tmp_path: Path) -> None:
    n = HUGE_MIN  # 4 MiB entries: counted through their huge-page buffers
    sd = {f"w{i}": torch.full((n // 4,), float(i)) for i in range(6)}
    path = paramscope.save(sd, tmp_path / "m.safetensors")
    for budget, most in [(0, n), (2 * n, 2 * n)]:
        with SourceReader(path) as r:
            names = []
            for e, t in r.stream(budget=budget):
                time.sleep(0.05)  # let the thread read ahead as far as it may
                state = r._budget
                assert state is not None
                assert float(t[0]) == int(e.name[1:])
                names.append(e.name)
                del t
        peak = state.peak  # the most bytes of read buffers alive at once
        assert names == [f"w{i}" for i in range(6)]
        # budget 0: one buffer at a time (read when asked for, or when none is alive);
        # budget 2n: the one held and one read ahead, whatever the thread's speed
        assert peak <= most
        if budget:
            assert peak > n  # it did read ahead


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "paramscope-reader"]


def test_stream_closed_early_stops_its_thread(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    with SourceReader(path) as r:
        it = r.stream()
        next(it)
        assert len(_readers()) == 1
        it.close()  # type: ignore[attr-defined]
        assert _readers() == []
        old = r.stream()
        next(old)
        new = r.stream()
        next(new)  # a new stream stops the one left behind: one thread at a time
        assert len(_readers()) == 1
        with pytest.raises(ArgumentError, match="this stream of SourceReader was stopped"):
            next(old)
    assert _readers() == []  # closing the reader stops the stream still running
    with pytest.raises(ArgumentError, match="was stopped"):
        next(new)


def test_convert_and_quantize_file_run_without_torch(tmp_path: Path) -> None:
    src = _checkpoint(tmp_path)
    code = (
        "import paramscope\n"
        "from paramscope.compress import quantize_file\n"
        "paramscope.convert(sys.argv[1], sys.argv[2] + '/c.safetensors')\n"
        "r = quantize_file(sys.argv[1], sys.argv[2] + '/q.safetensors', bits=4)\n"
        "result = [t['name'] for t in r.tensors]\n"
    )
    names = without_torch(code, src, tmp_path)
    assert sorted(names) == ["a.weight", "b.weight", "c.weight", "d.weight", "f.weight"]
    assert paramscope.verify(tmp_path / "q.safetensors").ok
    a, b = paramscope.load(src), paramscope.load(tmp_path / "c.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_empty_entries_read_as_empty_tensors_of_their_dtype(tmp_path) -> None:
    """A zero-size entry is read as an empty tensor of its dtype and shape (a zero-byte
    buffer must still accept the dtype view), one at a time and through the stream."""
    import torch

    import paramscope
    from paramscope.io._reader import SourceReader

    path = paramscope.save(
        {"e": torch.empty(0, 3), "h": torch.empty(2, 0, dtype=torch.float16), "w": torch.ones(2)},
        tmp_path / "m.safetensors",
    )
    with SourceReader(path) as r:
        got = {e.name: r.read(e) for e in r.entries}
        streamed = {e.name: t for e, t in r.stream()}
    for d in (got, streamed):
        assert (d["e"].shape, d["e"].dtype) == ((0, 3), torch.float32)
        assert (d["h"].shape, d["h"].dtype) == ((2, 0), torch.float16)
        assert d["w"].tolist() == [1.0, 1.0]
