"""Header cost: a large but valid safetensors header costs a small multiple of its size.

Issue 12, item 8: a 99 MB header of 1.5 M one-element entries took 1.5 GB to count. The
header is now parsed in chunks into compact rows, entries are built when read, and every
sink (count, inspect's table and JSON, load, verify) walks them one at a time. These tests
bound memory (tracemalloc, in process) and check results against the safetensors library's
own reader; speed is measured by ``bench/p9_header_cost.py``, never asserted here.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import paramscope
from paramscope import HeaderError
from paramscope.cli import _output
from paramscope.counting import _count
from paramscope.counting._render import limit_rows
from paramscope.io import _safetensors as st
from paramscope.io import _safetensors_scan, _writer

# ----------------------------------------------------------------------------- helpers


def write_header(path: Path, text: str | bytes, data_len: int) -> int:
    """A safetensors file from its header text (padded to 8 bytes); returns ``N``."""
    raw = text.encode() if isinstance(text, str) else text
    raw += b" " * (-(8 + len(raw)) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data_len)
    return len(raw)


def many_entries(path: Path, n: int, dotted: bool = False) -> int:
    """``n`` one-element tensors (F32, then every 7th BF16 and every 11th I64) with short
    names; returns the header length."""
    parts, pos = [], 0
    for i in range(n):
        dtype, size = ("I64", 8) if i % 11 == 0 else ("BF16", 2) if i % 7 == 0 else ("F32", 4)
        name = f"layers.{i}.w" if dotted else format(i, "x")
        parts.append(
            f'"{name}":{{"dtype":"{dtype}","shape":[1],"data_offsets":[{pos},{pos + size}]}}'
        )
        pos += size
    return write_header(path, "{" + ",".join(parts) + "}", pos)


@contextlib.contextmanager
def traced() -> Any:
    """Yields a dict that gets ``peak``: the most Python memory allocated inside."""
    out: dict[str, int] = {}
    tracemalloc.start()
    try:
        yield out
    finally:
        out["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def plain_parse(path: Path) -> Any:
    """The reference: the whole header through ``json.loads`` (the parse as it was)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    return st._parse_json(str(path), raw, n, size)


def outcome(parse: Any, path: Path) -> tuple[Any, ...]:
    try:
        h = parse(path)
    except HeaderError as exc:
        return ("error", str(exc))
    return ("ok", h.tensors, h.metadata, h.ps_meta)


# ----------------------------------------------------------------------------- memory


def test_large_header_counts_within_5x_its_size_and_agrees_with_safetensors(tmp_path):
    path = tmp_path / "many.safetensors"
    n = 200_000
    header_len = many_entries(path, n)
    with traced() as mem:
        c = paramscope.count(path)
    assert mem["peak"] <= 5 * header_len, (mem["peak"], header_len)

    with safe_open(str(path), "numpy") as f:  # the library that defines the format
        keys = list(f.keys())
        shapes = [f.get_slice(k).get_shape() for k in keys]
    assert c.entries == len(keys) == n
    assert c.params + c.buffers == sum(math.prod(s) for s in shapes)
    assert c.by_dtype["I64"]["elements"] == c.buffers == len(range(0, n, 11))
    assert c.by_dtype["F32"]["bytes"] == 4 * c.by_dtype["F32"]["elements"]


def test_inspect_verify_and_load_stay_within_5x(tmp_path):
    path = tmp_path / "many.safetensors"
    header_len = many_entries(path, 100_000, dotted=True)
    with traced() as mem:
        ins = paramscope.inspect(path)
        listed = sum(1 for g in ins.groups for _ in g.entries)
    assert listed == 100_000 and mem["peak"] <= 5 * header_len
    with traced() as mem:
        report = paramscope.verify(path)
    assert report.ok and report.entries == 100_000 and mem["peak"] <= 5 * header_len
    with traced() as mem:
        pd = paramscope.load(path)
    assert len(pd) == 100_000 and mem["peak"] <= 5 * header_len
    ref = load_file(str(path))
    for name in ("layers.0.w", "layers.7.w", "layers.99999.w"):
        assert torch.equal(pd[name], ref[name]) and pd[name].dtype == ref[name].dtype


def test_prefix_tree_is_built_level_by_level_when_read(tmp_path):
    path = tmp_path / "dotted.safetensors"
    many_entries(path, 3_000, dotted=True)
    c = paramscope.count(path)
    assert dict.__len__(c.tree.children) == 0  # nothing built yet below the root
    layers = c.tree.children["layers"]
    assert layers.params + layers.buffers == 3_000 and layers.entries == 3_000
    assert len(layers.children) == 3_000 and layers.children["42"].path == "layers.42"
    # the same tree as built eagerly, entry by entry
    root = _count.Node()
    for e in paramscope.read_manifest(path).values():
        node = root
        node._add(e)
        parts = e.name.split(".")[:-1]
        for i, seg in enumerate(parts):
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = _count.Node(".".join(parts[: i + 1]))
            child._add(e)
            node = child
    assert c.tree.to_dict(None) == root.to_dict(None)


def test_a_huge_shape_is_refused_without_building_it(tmp_path):
    path = tmp_path / "rank.safetensors"
    rank = 1_000_000
    text = '{"w":{"dtype":"F32","shape":[' + ",".join(["1"] * rank) + '],"data_offsets":[0,4]}}'
    header_len = write_header(path, text, 4)
    with traced() as mem, pytest.raises(HeaderError) as info:
        paramscope.count(path)
    assert f"{rank} dimensions" in str(info.value) and str(st.MAX_RANK) in str(info.value)
    assert mem["peak"] < 4 * header_len  # a list of a million ints alone takes 4x
    # keys in another order take the general way: refused the same, still not built
    text = '{"w":{"shape":[' + ",".join(["1"] * rank) + '],"data_offsets":[0,4],"dtype":"F32"}}'
    write_header(path, text, 4)
    with traced() as mem, pytest.raises(HeaderError, match=f"{rank} dimensions"):
        paramscope.count(path)
    assert mem["peak"] < 4 * header_len


@pytest.mark.parametrize("order", ["canonical", "shuffled"])
def test_rank_limit_is_exact(tmp_path, order):
    def header(rank: int) -> str:
        shape = "[" + ",".join(["1"] * rank) + "]"
        if order == "canonical":
            return f'{{"w":{{"dtype":"U8","shape":{shape},"data_offsets":[0,1]}}}}'
        return f'{{"w":{{"data_offsets":[0,1],"shape":{shape},"dtype":"U8"}}}}'

    path = tmp_path / "r.safetensors"
    write_header(path, header(st.MAX_RANK), 1)
    assert paramscope.read_manifest(path)["w"].shape == (1,) * st.MAX_RANK
    write_header(path, header(st.MAX_RANK + 1), 1)
    with pytest.raises(HeaderError, match=f"{st.MAX_RANK + 1} dimensions"):
        paramscope.read_manifest(path)


# ----------------------------------------------------------------------------- the parser


NAMES = ["a", "b.c", "é", "日本", "𝔘", 'x"q', "k\\", "tab\t", "__metadata__x", "w"]
DTYPES = [("F32", 4), ("U8", 1), ("F16", 2), ("I64", 8), ("BOOL", 1)]


def random_header(rng: random.Random) -> tuple[bytes, int]:
    """A header as some writer might produce it (any key order, spacing, escapes), valid or
    not; returns ``(text, data length)``."""
    entries, pos = [], 0
    for i in range(rng.randint(0, 12)):
        dtype, size = rng.choice(DTYPES)
        shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.04:
            shape = [1] * rng.choice([st.MAX_RANK - 1, st.MAX_RANK, st.MAX_RANK + 1, 3000])
        nbytes = math.prod(shape) * size + (1 if rng.random() < 0.05 else 0)
        info: dict[str, Any] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + nbytes]}
        if rng.random() < 0.3:
            items = list(info.items())
            rng.shuffle(items)
            info = dict(items)
        if rng.random() < 0.1:
            info["junk"] = [1, {"z": None}]
        entries.append((rng.choice(NAMES) + str(i) * rng.randint(1, 3), info))
        pos += nbytes
    if rng.random() < 0.3:
        rng.shuffle(entries)
    obj: dict[str, Any] = {}
    if rng.random() < 0.5:
        obj["__metadata__"] = {"format": "pt", "é": "x" * rng.randint(0, 5)}
    obj.update(entries)
    if rng.random() < 0.3 and "__metadata__" in obj:
        obj["__metadata__"] = obj.pop("__metadata__")
    style = rng.choice(
        [{}, {"separators": (",", ":")}, {"indent": 2}, {"ensure_ascii": False}, {"indent": "\t"}]
    )
    text = json.dumps(obj, **style)
    if rng.random() < 0.3:
        text = " \n" + text + "\r\n  "
    if rng.random() < 0.2 and "1, 1, 1" in text:  # break a long shape list
        at = text.index("1, 1, 1") + rng.randint(0, 3000)
        text = text[:at] + rng.choice(["0", ",", "01", "-1", "1.0", "]", "9" * 4400]) + text[at:]
    raw = bytearray(text.encode())
    for _ in range(rng.choice([0, 0, 1, 2])):  # and sometimes any byte
        at = rng.randrange(len(raw) + 1)
        raw[at:at] = bytes([rng.choice(b'{}[]",:0123456789 -.eE\\u\xff\xc3\x00')])
    return bytes(raw), pos + (1 if rng.random() < 0.05 else 0)


@pytest.mark.parametrize(("ahead", "chunk"), [(1 << 20, 8 << 20), (1, 1), (5, 3), (64, 17)])
def test_streaming_parse_equals_the_plain_parse(tmp_path, monkeypatch, ahead, chunk):
    # Tiny windows put a chunk (and a window) boundary everywhere, UTF-8 sequences included.
    monkeypatch.setattr(_safetensors_scan, "_AHEAD", ahead)
    monkeypatch.setattr(_safetensors_scan, "_CHUNK_TEXT", chunk)
    rng = random.Random(ahead * 31 + chunk)
    seen = {"ok": 0, "error": 0}
    for i in range(300):
        raw, data_len = random_header(rng)
        path = tmp_path / f"h{i % 3}.safetensors"
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * data_len)
        st._PARSED.clear()
        want = outcome(plain_parse, path)
        assert outcome(st.parse_header, path) == want, raw[:300]
        seen[want[0]] += 1
    assert seen["ok"] > 30 and seen["error"] > 30


def test_header_is_parsed_once_for_verify_and_load(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(3), "b": torch.zeros(2)}, str(path))
    calls = []
    real = st._Stream.parse

    def counting(self: Any) -> Any:
        calls.append(self.spath)
        return real(self)

    monkeypatch.setattr(st._Stream, "parse", counting)
    assert paramscope.verify(path).ok and len(calls) == 1
    calls.clear()
    assert torch.equal(paramscope.load(path)["a"], torch.ones(3)) and len(calls) == 1
    # changed bytes (same size, same second) are parsed again
    calls.clear()
    m = paramscope.read_manifest(path)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b'"a"') + 1] = ord("c")
    path.write_bytes(bytes(raw))
    assert "c" in paramscope.read_manifest(path) and "a" in m and len(calls) == 2


# ----------------------------------------------------------------------------- load


def test_load_is_lazy_and_keeps_what_it_makes(tmp_path):
    path = tmp_path / "m.safetensors"
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    pd0 = paramscope.ParamDict({"enc.w": w, "enc.b": torch.ones(4)})
    pd0.tie("dec.w", "enc.w")
    paramscope.save(pd0, path)
    pd = paramscope.load(path)
    values = pd._values
    assert isinstance(values, st.LazyTensors)
    assert not values.is_made("enc.b")  # nothing read yet (a tie reads its target)
    assert pd.numel() == 16 and sum(t.numel() for _, t in values.items()) == 16
    assert not values.is_made("enc.b")  # sums keep nothing
    assert "ParamDict(3 entries" in repr(pd)
    t = pd["enc.w"]
    assert t is pd["enc.w"] is pd["dec.w"] and torch.equal(t, w)
    t.add_(1)
    assert torch.equal(pd["dec.w"], w + 1)
    assert pd.meta("enc.w").role.value == "param" and pd.ties() == [["enc.w", "dec.w"]]
    assert set(paramscope.load(path, select="enc.*")) == {"enc.w", "enc.b"}


def test_load_refuses_what_torch_cannot_hold_at_load_time(tmp_path):
    path = tmp_path / "f4.safetensors"
    write_header(path, '{"w":{"dtype":"F4","shape":[2,1],"data_offsets":[0,1]}}', 1)
    with pytest.raises(paramscope.UnsupportedDTypeError, match="'w'"):
        paramscope.load(path)


# ----------------------------------------------------------------------------- writing


def reference_header(
    plan: list[st.Planned],
    order: list[str],
    aliases: dict[str, str],
    alias_meta: dict[str, dict[str, Any]],
    metadata: dict[str, str],
    hashes: dict[str, str],
    late: dict[str, dict[str, Any]],
    pad_to: int = 0,
) -> bytes:
    """The header ``write_stream`` wrote before it was made entry by entry (dict based)."""
    by_name = {p.name: p for p in plan}
    offsets, pos = {}, 0
    for name in order:
        offsets[name] = [pos, pos + by_name[name].nbytes]
        pos += by_name[name].nbytes
    placeholder = "0" * 32
    header, ps_entries = {}, {}
    for p in plan:
        header[p.name] = {
            "dtype": p.dtype.value,
            "shape": list(p.shape),
            "data_offsets": offsets[p.name],
        }
        ps_entries[p.name] = {**p.meta, "digest": placeholder}
    for alias in aliases:
        ps_entries[alias] = dict(alias_meta.get(alias, {}))
    ents = {
        k: ({**v, **late.get(k, {}), "digest": hashes[k]} if k in hashes else v)
        for k, v in ps_entries.items()
    }
    ps = {"version": 1, "hash": "xxh3-128", "entries": ents, "aliases": dict(aliases)}
    meta = {
        "format": "pt",
        **metadata,
        "paramscope": json.dumps(ps, separators=(",", ":"), sort_keys=True),
    }
    raw = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
    raw += b" " * max(0, pad_to - len(raw))
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


@pytest.mark.parametrize("seed", range(6))
def test_written_header_is_byte_for_byte_the_dict_built_one(tmp_path, seed):
    rng = random.Random(seed)
    metas = [
        {"role": "param", "trainable": True},
        {"role": "buffer", "trainable": False, "tags": ["x", "é"]},
        {"role": "param", "trainable": False, "extra": {"b": 1.5, "a": [1, "日"], "nonzero": 3}},
        {"aaa": 1, "role": "param", "trainable": True},  # a key sorting before "digest"
    ]
    shared = rng.choice(metas)
    plan, tensors = [], {}
    for i in range(rng.randint(0, 40)):
        name = rng.choice(["w", "é.b", 'q"', "日本", "a\\b"]) + str(i)
        t = torch.randn(rng.randint(0, 3), rng.randint(1, 3))
        tensors[name] = t
        meta = shared if rng.random() < 0.6 else dict(rng.choice(metas))
        plan.append(st.Planned(name, st.DType.F32, tuple(t.shape), t.numel() * 4, meta))
    names = [p.name for p in plan]
    aliases = {f"alias{k}": rng.choice(names) for k in range(rng.randint(0, 3))} if names else {}
    alias_meta = {a: {"role": "param", "trainable": True, "tags": ["tied"]} for a in aliases}
    metadata = rng.choice([{}, {"format": "np", "z": 'é\x00"'}, {"k": "paramscope"}])
    late = {n: {"extra": {"nonzero": 1}} for n in names if rng.random() < 0.3}
    path = tmp_path / "out.safetensors"
    st.write_stream(
        path,
        plan,
        ((n, tensors[n].numpy().tobytes()) for n in names),
        aliases=aliases,
        alias_meta=alias_meta,
        metadata=metadata,
        fsync=False,
        late_meta=late,
        reserve=64 * len(late),
    )
    hashes = {n: st.hash_bytes(tensors[n].numpy().tobytes()) for n in names}
    first = reference_header(plan, names, aliases, alias_meta, metadata, {}, {})
    pad = len(first) - 8 + 64 * len(late)
    want = reference_header(plan, names, aliases, alias_meta, metadata, hashes, late, pad)
    got = path.read_bytes()[: len(want)]
    assert got == want
    assert set(load_file(str(path))) == set(names)


def test_a_header_over_100_mb_is_refused_before_any_data(tmp_path, monkeypatch):
    monkeypatch.setattr(_writer, "MAX_HEADER", 4096)
    plan = [st.Planned(f"n{i}", st.DType.U8, (1,), 1, {"role": "param"}) for i in range(100)]
    produced = []

    def chunks() -> Any:
        for p in plan:
            produced.append(p.name)
            yield p.name, b"\0"

    with pytest.raises(paramscope.ParamscopeError, match="over the 100 MB limit"):
        st.write_stream(tmp_path / "big.safetensors", plan, chunks(), fsync=False)
    assert produced == [] and not (tmp_path / "big.safetensors").exists()


# ----------------------------------------------------------------------------- the CLI


def test_inspect_json_streams_the_same_text_and_the_table_is_capped(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    pd = paramscope.ParamDict({f"l{i // 3}.p{i}": torch.ones(2) for i in range(30)})
    pd.set_meta("l0.p0", extra={"scale": float("nan"), "hi": float("inf")})
    paramscope.save(pd, path)
    ins = paramscope.inspect(path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _output.emit_json(ins.to_dict(stream=True))
    want = json.loads(out.getvalue())
    assert out.getvalue().startswith('{\n  "source": ')
    assert want["groups"][0]["entries"][0]["extra"] == {"scale": "nan", "hi": "inf"}
    plain = json.dumps(json.loads(out.getvalue()), indent=2) + "\n"  # same layout as dumps
    assert out.getvalue() == plain
    assert sum(len(g["entries"]) for g in want["groups"]) == 30

    d = limit_rows(ins.to_dict(stream=True), 12)
    shown = len(d["groups"]) + sum(len(g["entries"]) for g in d["groups"])
    assert shown == 12 and d["hidden"]["entries"] + shown - len(d["groups"]) == 30
    text = ins.to_text(rows=12)
    assert "more entries" in text and "inspect --json lists every entry" in text
