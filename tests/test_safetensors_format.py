"""safetensors: exact bytes, bitwise round trips, strict header checks, interop, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tracemalloc
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
import xxhash
from torch import nn

import paramscope
from paramscope import (
    DType,
    EntryMeta,
    Format,
    HeaderError,
    ParamDict,
    ParamscopeError,
    Role,
    RoleSource,
    UnsupportedDTypeError,
)

TEMP_MARK = ".paramscope-tmp-"


# --------------------------------------------------------------------------- helpers


def write_raw(
    path: Path,
    header: object = None,
    data: bytes = b"",
    *,
    raw: bytes | None = None,
    length: int | None = None,
) -> Path:
    """A safetensors-like file built by hand: 8-byte LE length, header bytes, data."""
    body = raw if raw is not None else json.dumps(header).encode()
    n = len(body) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + body + data)
    return path


def entry(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor (its logical, row-major order) as a uint8 tensor."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random bit patterns (NaN payloads included) of ``dtype`` in ``shape``."""
    g = torch.Generator().manual_seed(seed)
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = 1
    for d in shape:
        n *= d
    raw = torch.randint(0, 256, (n * itemsize,), dtype=torch.uint8, generator=g)
    if dtype is torch.bool:
        raw = raw % 2
    return raw.view(dtype).reshape(shape)


def no_temps(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if TEMP_MARK in p.name]


# --------------------------------------------------------------------------- exact bytes


def test_exact_bytes_of_tiny_file(tmp_path):
    path = tmp_path / "tiny.safetensors"
    paramscope.save(ParamDict({"w": torch.arange(4, dtype=torch.float32)}), path)

    data = struct.pack("<4f", 0.0, 1.0, 2.0, 3.0)
    digest = xxhash.xxh3_128(data).hexdigest()
    # paramscope's own metadata: JSON with sorted keys and compact separators.
    ps = (
        '{"aliases":{},"entries":{"w":{"digest":"'
        + digest
        + '","role":"param","trainable":true}},"hash":"xxh3-128","version":1}'
    )
    # Embedded as a JSON string inside __metadata__: its quotes are escaped.
    header = (
        '{"__metadata__":{"format":"pt","paramscope":"' + ps.replace('"', '\\"') + '"},'
        '"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    ).encode()
    header += b" " * ((8 - (8 + len(header)) % 8) % 8)
    expected = struct.pack("<Q", len(header)) + header + data

    got = path.read_bytes()
    assert got == expected
    assert (8 + len(header)) % 8 == 0


# --------------------------------------------------------------------------- round trips

ALL_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.complex64,
    torch.float4_e2m1fn_x2,
]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_bitwise_round_trip_every_dtype(tmp_path, dtype):
    base = random_tensor(dtype, (3, 4), seed=ALL_DTYPES.index(dtype))
    pd = ParamDict()
    pd.add("m.full", base)
    pd.add("m.transposed", base.t())  # non-contiguous
    assert not pd["m.transposed"].is_contiguous()
    pd.add("m.empty", base[:0])  # zero elements
    if dtype is not torch.float4_e2m1fn_x2:  # a 0-dim x2 pack has no logical shape of its own
        pd.add("m.scalar", base[1, 2].clone())
    path = paramscope.save(pd, tmp_path / "rt.safetensors")

    out = paramscope.load(path)
    assert list(out) == list(pd)
    for name in pd:
        a, b = pd[name], out[name]
        assert b.dtype == a.dtype, name
        assert tuple(b.shape) == tuple(a.shape), name
        assert torch.equal(as_bytes(b), as_bytes(a)), name

    m = paramscope.read_manifest(path)
    assert m["m.full"].dtype is DType.from_torch(dtype)
    logical_last = 8 if dtype is torch.float4_e2m1fn_x2 else 4
    assert m["m.full"].shape == (3, logical_last)
    assert m["m.transposed"].shape == ((4, 6) if dtype is torch.float4_e2m1fn_x2 else (4, 3))
    assert m["m.full"].nbytes == 12 * base.element_size()


def test_nan_payloads_survive(tmp_path):
    bits = torch.tensor([0x7FC00001, 0x7F800001, -0x00400001, 0x7FFFFFFF], dtype=torch.int32)
    f = bits.view(torch.float32)
    assert torch.isnan(f).all()
    h = torch.tensor([0x7E01, 0x7C01, -0x0201], dtype=torch.int16).view(torch.float16)
    paramscope.save(ParamDict({"f": f, "h": h}), tmp_path / "nan.safetensors")
    out = paramscope.load(tmp_path / "nan.safetensors")
    assert torch.equal(out["f"].view(torch.int32), bits)
    assert torch.equal(out["h"].view(torch.int16), h.view(torch.int16))


def test_f4_scalar_keeps_its_bytes(tmp_path):
    t = torch.tensor(0xA7, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    paramscope.save(ParamDict({"s": t}), tmp_path / "f4.safetensors")
    m = paramscope.read_manifest(tmp_path / "f4.safetensors")
    assert m["s"].shape == (2,) and m["s"].nbytes == 1
    out = paramscope.load(tmp_path / "f4.safetensors")["s"]
    assert out.reshape(-1).view(torch.uint8).tolist() == [0xA7]


# --------------------------------------------------------------------------- malformed files


def expect_header_error(path: Path, *fragments: str) -> HeaderError:
    with pytest.raises(HeaderError) as info:
        paramscope.read_manifest(path)
    err = info.value
    assert isinstance(err, ParamscopeError)
    msg = str(err)
    assert str(path) in msg
    assert err.path == str(path)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return err


def test_file_shorter_than_8_bytes(tmp_path):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x01\x00\x00")
    expect_header_error(p, "8 bytes", "3 bytes")


def test_huge_header_length_fails_fast(tmp_path):
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", 10**12) + b"{}      ")
    assert p.stat().st_size == 16
    tracemalloc.start()
    try:
        expect_header_error(p, str(10**12), "100 MB")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_header_length_over_limit_even_if_file_is_that_big(tmp_path):
    p = tmp_path / "big.safetensors"
    n = 100_000_001
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", n))
        f.truncate(8 + n + 8)  # sparse: cheap on disk
    tracemalloc.start()
    try:
        expect_header_error(p, str(n), "100 MB")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the 100 MB header was never read


def test_header_length_past_end_of_file(tmp_path):
    p = write_raw(tmp_path / "past.safetensors", raw=b'{"a":1}', length=500)
    expect_header_error(p, "500", "past the end")


def test_header_not_utf8(tmp_path):
    p = write_raw(tmp_path / "latin.safetensors", raw=b'{"\xff\xfe":1}')
    expect_header_error(p, "UTF-8")


def test_header_invalid_json(tmp_path):
    p = write_raw(tmp_path / "bad.safetensors", raw=b'{"w": {"dtype": ')
    expect_header_error(p, "not valid JSON")


def test_header_json_list(tmp_path):
    p = write_raw(tmp_path / "list.safetensors", [1, 2, 3])
    expect_header_error(p, "JSON object", "list")


def test_header_duplicate_keys(tmp_path):
    e = json.dumps(entry("F32", [1], 0, 4))
    raw = ('{"w":' + e + ',"w":' + e + "}").encode()
    p = write_raw(tmp_path / "dup.safetensors", raw=raw, data=b"\0" * 4)
    expect_header_error(p, "duplicate key", "'w'")


@pytest.mark.parametrize("meta", [{"a": 1}, {"a": None}, ["a"], "x", {"a": {"b": "c"}}])
def test_metadata_not_str_to_str(tmp_path, meta):
    p = write_raw(tmp_path / "meta.safetensors", {"__metadata__": meta})
    expect_header_error(p, "__metadata__")


def test_unknown_dtype(tmp_path):
    p = write_raw(tmp_path / "dt.safetensors", {"w": entry("F128", [1], 0, 16)}, b"\0" * 16)
    expect_header_error(p, "'w'", "F128")


@pytest.mark.parametrize("shape", [[-1], [2, -3], [1.0], ["2"], [True], [None], 4, {"a": 1}])
def test_bad_shape(tmp_path, shape):
    p = write_raw(tmp_path / "shape.safetensors", {"w": entry("U8", shape, 0, 4)}, b"\0" * 4)
    expect_header_error(p, "'w'", "shape")


@pytest.mark.parametrize("offsets", [[0], [0, 4, 8], [], "0,4", [0, 4.0], [-4, 0], [True, 4], None])
def test_data_offsets_wrong_form(tmp_path, offsets):
    header = {"w": {"dtype": "U8", "shape": [4], "data_offsets": offsets}}
    p = write_raw(tmp_path / "off.safetensors", header, b"\0" * 4)
    expect_header_error(p, "'w'", "data_offsets")


def test_data_offsets_begin_after_end(tmp_path):
    p = write_raw(tmp_path / "rev.safetensors", {"w": entry("U8", [0], 4, 0)}, b"\0" * 4)
    expect_header_error(p, "'w'", "begin 4", "end 0")


def test_missing_entry_field(tmp_path):
    p = write_raw(tmp_path / "miss.safetensors", {"w": {"dtype": "U8", "shape": [4]}}, b"\0" * 4)
    expect_header_error(p, "'w'", "data_offsets")


def test_byte_size_differs_from_shape(tmp_path):
    p = write_raw(tmp_path / "size.safetensors", {"w": entry("F32", [3], 0, 8)}, b"\0" * 8)
    expect_header_error(p, "'w'", "12 bytes", "8")


def test_offsets_not_starting_at_zero(tmp_path):
    p = write_raw(tmp_path / "hole.safetensors", {"w": entry("U8", [4], 4, 8)}, b"\0" * 8)
    expect_header_error(p, "'w'", "hole")


def test_hole_between_entries(tmp_path):
    header = {"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 8, 12)}
    p = write_raw(tmp_path / "hole2.safetensors", header, b"\0" * 12)
    expect_header_error(p, "'b'", "hole", "'a'")


def test_overlapping_entries(tmp_path):
    header = {"a": entry("U8", [8], 0, 8), "b": entry("U8", [4], 4, 8)}
    p = write_raw(tmp_path / "overlap.safetensors", header, b"\0" * 8)
    expect_header_error(p, "overlapping")


def test_trailing_bytes_after_data(tmp_path):
    p = write_raw(tmp_path / "trail.safetensors", {"w": entry("U8", [4], 0, 4)}, b"\0" * 7)
    expect_header_error(p, "trailing", "3")


def test_end_offset_past_data(tmp_path):
    p = write_raw(tmp_path / "end.safetensors", {"w": entry("U8", [16], 0, 16)}, b"\0" * 8)
    expect_header_error(p, "'w'", "end 16")


def test_huge_shape_in_small_file(tmp_path):
    header = {"w": entry("F32", [10**6, 10**6], 0, 1024)}
    p = write_raw(tmp_path / "claim.safetensors", header, b"\0" * 1024)
    expect_header_error(p, "'w'")
    # also with offsets that agree with the claim
    header = {"w": entry("F32", [10**6, 10**6], 0, 4 * 10**12)}
    p2 = write_raw(tmp_path / "claim2.safetensors", header, b"\0" * 1024)
    expect_header_error(p2, "'w'")


@pytest.mark.parametrize(
    "shape",
    [[2**32, 2**32, 2**32], [2**64], [2**64 + 1, 1], [2**33, 2**33, 0], [0, 2**70], [2**64, 0]],
)
def test_shape_product_overflowing_64_bits(tmp_path, shape):
    p = write_raw(tmp_path / "ovf.safetensors", {"w": entry("F32", shape, 0, 0)})
    expect_header_error(p, "'w'")
    with pytest.raises(HeaderError):
        paramscope.load(p)


def test_empty_name_refused(tmp_path):
    p = write_raw(tmp_path / "noname.safetensors", {"": entry("U8", [1], 0, 1)}, b"\0")
    expect_header_error(p, "''")


def test_load_and_verify_refuse_malformed(tmp_path):
    p = write_raw(tmp_path / "bad.safetensors", {"w": entry("U8", [4], 0, 4)}, b"\0" * 5)
    with pytest.raises(HeaderError):
        paramscope.load(p)
    report = paramscope.verify(p)
    assert not report.ok
    assert any("trailing" in x for x in report.problems)


def test_valid_empty_file(tmp_path):
    p = write_raw(tmp_path / "empty.safetensors", {})
    m = paramscope.read_manifest(p)
    assert len(m) == 0 and m.format is Format.SAFETENSORS


@pytest.mark.parametrize(
    ("dtype", "itemsize"),
    [
        ("BF16", 2),
        ("F8_E4M3", 1),
        ("F8_E5M2", 1),
        ("BOOL", 1),
        ("U16", 2),
        ("U32", 4),
        ("U64", 8),
        ("C64", 8),
        ("F16", 2),
        ("I64", 8),
        ("F8_E8M0", 1),
    ],
)
def test_dtypes_in_hand_written_files(tmp_path, dtype, itemsize):
    nbytes = 6 * itemsize
    header = {"__metadata__": {"note": "by hand"}, "t": entry(dtype, [2, 3], 0, nbytes)}
    p = write_raw(tmp_path / f"{dtype}.safetensors", header, bytes(range(nbytes)))
    m = paramscope.read_manifest(p)
    e = m["t"]
    assert e.shape == (2, 3)
    assert e.dtype is DType(dtype)
    assert e.dtype.value == dtype
    assert e.nbytes == nbytes
    assert e.numel == 6
    assert m.metadata == {"note": "by hand"}
    assert m.roles is RoleSource.INFERRED
    assert e.location is not None and e.location.length == nbytes


def test_f4_in_hand_written_file(tmp_path):
    data = b"\x12\x34\x56\x78"
    p = write_raw(tmp_path / "f4.safetensors", {"t": entry("F4", [2, 4], 0, 4)}, data)
    e = paramscope.read_manifest(p)["t"]
    assert e.shape == (2, 4) and e.nbytes == 4 and e.numel == 8
    t = paramscope.load(p)["t"]
    assert t.dtype is torch.float4_e2m1fn_x2 and tuple(t.shape) == (2, 2)
    assert as_bytes(t).tolist() == [0x12, 0x34, 0x56, 0x78]
    p2 = write_raw(tmp_path / "f4odd.safetensors", {"t": entry("F4", [3], 0, 2)}, b"\0\0")
    expect_header_error(p2, "'t'")


# --------------------------------------------------------------------------- interop


def test_reads_files_written_by_safetensors(tmp_path):
    p = tmp_path / "st.safetensors"
    tensors = {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "bn.weight": torch.randn(4),
        "bn.running_mean": torch.randn(4),
        "bn.running_var": torch.rand(4),
        "bn.num_batches_tracked": torch.tensor(7),
        "tok.ids": torch.arange(5, dtype=torch.int32),
        "h.bf": torch.randn(2, 2).to(torch.bfloat16),
    }
    safetensors.torch.save_file(tensors, str(p), metadata={"source": "hf"})
    m = paramscope.read_manifest(p)
    assert m.roles == RoleSource.INFERRED
    assert m.metadata == {"source": "hf"}
    assert set(m) == set(tensors)
    assert m["conv.weight"].role is Role.PARAM and m["conv.weight"].trainable
    assert m["bn.weight"].role is Role.PARAM
    for name in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "tok.ids"):
        assert m[name].role is Role.BUFFER, name
        assert not m[name].trainable
    assert m["bn.num_batches_tracked"].shape == ()
    assert m["h.bf"].dtype is DType.BF16

    pd = paramscope.load(p)
    for name, t in tensors.items():
        assert pd[name].dtype == t.dtype
        assert torch.equal(pd[name], t), name
    assert pd.meta("bn.running_mean").role is Role.BUFFER
    assert paramscope.verify(p).ok


def test_paramscope_files_open_with_safetensors(tmp_path):
    pd = ParamDict()
    pd.add("a.weight", torch.randn(3, 5))
    pd.add("a.bias", torch.randn(3).to(torch.float16))
    pd.add("a.count", torch.tensor([1, 2, 3]), role="buffer")
    pd.add("b.mask", torch.tensor([True, False]), role="buffer")
    p = paramscope.save(pd, tmp_path / "ps.safetensors", metadata={"owner": "me"})

    with safetensors.safe_open(str(p), framework="pt") as f:
        assert set(f.keys()) == set(pd)
        meta = f.metadata()
        assert meta["format"] == "pt"
        assert meta["owner"] == "me"
        assert "paramscope" in meta
        for name in pd:
            t = f.get_tensor(name)
            assert t.dtype == pd[name].dtype
            assert torch.equal(t, pd[name]), name
    loaded = safetensors.torch.load_file(str(p))
    assert set(loaded) == set(pd)
    for name in pd:
        assert torch.equal(loaded[name], pd[name])


# --------------------------------------------------------------------------- ties & metadata


def test_ties_and_metadata_round_trip(tmp_path):
    w = torch.randn(6, 4)
    pd = ParamDict(metadata={"k": "v"})
    pd.add("enc.weight", w, tags=("embedding", "shared"), extra={"init": "normal", "n": [1, 2]})
    pd.add("enc.frozen", torch.randn(4), trainable=False)
    pd.add("enc.stat", torch.zeros(4), role="buffer", extra={"persistent": True})
    pd.tie("dec.weight", "enc.weight")
    path = paramscope.save(pd, tmp_path / "t.safetensors")

    out = paramscope.load(path)
    assert list(out) == ["enc.weight", "enc.frozen", "enc.stat", "dec.weight"]
    assert out["dec.weight"] is out["enc.weight"]
    assert out.ties() == [["enc.weight", "dec.weight"]]
    assert torch.equal(out["enc.weight"], w)
    assert out.meta("enc.weight") == EntryMeta(
        Role.PARAM, True, ("embedding", "shared"), {"init": "normal", "n": [1, 2]}
    )
    assert out.meta("enc.frozen").trainable is False
    assert out.meta("enc.frozen").role is Role.PARAM
    assert out.meta("enc.stat") == EntryMeta(Role.BUFFER, False, (), {"persistent": True})
    assert out.meta("dec.weight").tags == ("embedding", "shared")
    assert out.metadata["k"] == "v"

    with safetensors.safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert keys == {"enc.weight", "enc.frozen", "enc.stat"}  # tie stored once

    m = paramscope.read_manifest(path)
    assert m.roles is RoleSource.EXACT
    assert m["dec.weight"].tie == "enc.weight"
    assert m.ties() == [["enc.weight", "dec.weight"]]
    assert paramscope.count(path).params == 6 * 4 + 4

    # writing through one name changes the other
    out["dec.weight"].mul_(0)
    assert float(out["enc.weight"].abs().sum()) == 0.0
    assert torch.equal(paramscope.load(path)["enc.weight"], w)  # the file is untouched (COW)


class TiedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        shared = nn.Linear(6, 6)
        self.block = nn.Sequential(shared, nn.ReLU(), shared)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight
        self.frozen = nn.Linear(6, 2)
        self.frozen.requires_grad_(False)


def test_module_round_trip_keeps_ties_and_roles(tmp_path):
    torch.manual_seed(0)
    model = TiedNet()
    pd = ParamDict.from_module(model)
    path = paramscope.save(pd, tmp_path / "net.safetensors")
    out = paramscope.load(path)

    assert set(out) == set(model.state_dict())
    for name, t in model.state_dict().items():
        assert torch.equal(out[name], t), name
    assert out["head.weight"] is out["emb.weight"]
    assert out["block.2.weight"] is out["block.0.weight"]
    assert out["block.2.bias"] is out["block.0.bias"]
    assert sorted(sorted(g) for g in out.ties()) == sorted(sorted(g) for g in pd.ties())
    for name in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert out.meta(name).role is Role.BUFFER
    assert out.meta("frozen.weight").trainable is False
    assert out.meta("bn.weight").trainable is True

    c = paramscope.count(path)
    assert c.params == sum(p.numel() for p in model.parameters())
    assert c.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert c.buffers == sum(b.numel() for b in model.buffers())
    # saving the module directly gives the same file content
    path2 = paramscope.save(model, tmp_path / "net2.safetensors")
    assert path2.read_bytes() == path.read_bytes()


# --------------------------------------------------------------------------- select


def test_lazy_select(tmp_path):
    pd = ParamDict()
    for name in ("enc.0.weight", "enc.0.bias", "dec.0.weight", "dec.0.bias", "head.weight"):
        pd.add(name, torch.randn(3))
    pd.tie("dec.tied", "enc.0.weight")
    path = paramscope.save(pd, tmp_path / "s.safetensors")

    enc = paramscope.load(path, select="enc.*")
    assert list(enc) == ["enc.0.weight", "enc.0.bias"]
    assert torch.equal(enc["enc.0.bias"], pd["enc.0.bias"])

    rx = paramscope.load(path, select=r"re:(enc|dec)\.0\.bias")
    assert set(rx) == {"enc.0.bias", "dec.0.bias"}

    both = paramscope.load(path, select=["head.*", "dec.tied"])
    assert set(both) == {"head.weight", "dec.tied"}
    assert torch.equal(both["dec.tied"], pd["enc.0.weight"])

    tied = paramscope.load(path, select=["dec.tied", "enc.0.weight"])
    assert tied["dec.tied"] is tied["enc.0.weight"]

    assert len(paramscope.load(path, select="nothing.*")) == 0


# --------------------------------------------------------------------------- atomic write


def test_failed_save_leaves_previous_file(tmp_path):
    path = tmp_path / "model.safetensors"
    paramscope.save(ParamDict({"a": torch.randn(4), "b": torch.randn(4)}), path)
    before = path.read_bytes()

    bad = ParamDict()
    bad.add("a", torch.randn(8))
    bad.add("m", torch.empty(8, device="meta"))
    bad.add("z", torch.randn(8))
    with pytest.raises(UnsupportedDTypeError, match="'m'"):
        paramscope.save(bad, path)
    assert path.read_bytes() == before
    assert no_temps(tmp_path)


def test_failure_while_writing_data_leaves_previous_file(tmp_path, monkeypatch):
    from paramscope.io import _writer

    path = tmp_path / "model.safetensors"
    paramscope.save(ParamDict({"a": torch.randn(4)}), path)
    before = path.read_bytes()

    real = _writer.hash_bytes
    calls = []

    def failing(buf, algo="xxh3-128"):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(buf, algo)

    monkeypatch.setattr(_writer, "hash_bytes", failing)
    pd = ParamDict({"x": torch.randn(100), "y": torch.randn(100), "z": torch.randn(100)})
    with pytest.raises(OSError, match="simulated"):
        paramscope.save(pd, path)
    assert len(calls) >= 2
    assert path.read_bytes() == before
    assert no_temps(tmp_path)


def test_stale_temp_of_same_file_is_removed(tmp_path):
    stale = tmp_path / f".model.safetensors{TEMP_MARK}deadbeef"
    stale.write_bytes(b"junk")
    other = tmp_path / "keep.bin"
    other.write_bytes(b"x")
    paramscope.save(ParamDict({"a": torch.ones(2)}), tmp_path / "model.safetensors")
    assert not stale.exists()
    assert other.exists()


def test_save_refuses_bad_metadata(tmp_path):
    with pytest.raises(ParamscopeError, match="str"):
        paramscope.save(
            ParamDict({"a": torch.ones(1)}), tmp_path / "m.safetensors", metadata={"k": 1}
        )
    with pytest.raises(ParamscopeError, match="reserved"):
        paramscope.save(
            ParamDict({"a": torch.ones(1)}),
            tmp_path / "m.safetensors",
            metadata={"paramscope": "x"},
        )
    pd = ParamDict()
    pd.add("a", torch.ones(1), extra={"bad": object()})
    with pytest.raises(ParamscopeError, match="'a'"):
        paramscope.save(pd, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    assert no_temps(tmp_path)


# --------------------------------------------------------------------------- verify


def test_verify_good_and_flipped_byte(tmp_path):
    pd = ParamDict()
    pd.add("a.weight", torch.randn(16, 8))
    pd.add("a.bias", torch.randn(16))
    pd.add("b.steps", torch.tensor([3]), role="buffer")
    pd.tie("c.weight", "a.weight")
    path = paramscope.save(pd, tmp_path / "v.safetensors")

    with safetensors.safe_open(str(path), framework="pt") as f:
        stored = len(list(f.keys()))
    assert stored == 3
    good = paramscope.verify(path)
    assert good.ok and good.problems == []
    assert good.hashed == stored
    assert good.entries == 4
    assert good.format == "safetensors"

    loc = paramscope.read_manifest(path)["a.bias"].location
    assert loc is not None
    raw = bytearray(path.read_bytes())
    raw[loc.offset + 5] ^= 0x01
    path.write_bytes(bytes(raw))

    bad = paramscope.verify(path)
    assert not bad.ok
    assert len(bad.problems) == 1
    assert "'a.bias'" in bad.problems[0]
    assert str(path) in bad.problems[0]
    assert bad.hashed == stored


def test_verify_without_hashes_notes_it(tmp_path):
    p = tmp_path / "st.safetensors"
    safetensors.torch.save_file({"w": torch.ones(3)}, str(p))
    r = paramscope.verify(p)
    assert r.ok and r.hashed == 0
    assert any("no stored hash" in n for n in r.notes)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    for fn in (paramscope.verify, paramscope.read_manifest, paramscope.load):
        with pytest.raises(paramscope.SourceNotFoundError, match="no such file"):
            fn(missing)


@pytest.mark.parametrize("header_len", [0x80, 0x180, 0x2080])
def test_header_length_with_pickle_like_first_byte(tmp_path, header_len):
    # The low byte of the length is 0x80, a pickle's first byte: still safetensors.
    raw = json.dumps({"w": entry("F32", [2], 0, 8)}).encode()
    raw += b" " * (header_len - len(raw))
    p = write_raw(tmp_path / "w.bin", raw=raw, data=struct.pack("<2f", 1.5, -2.0))
    assert p.read_bytes()[:1] == b"\x80"
    assert paramscope.detect_format(p) is Format.SAFETENSORS
    assert paramscope.read_manifest(p)["w"].shape == (2,)
    assert paramscope.load(p)["w"].tolist() == [1.5, -2.0]


def test_detect_format_ignores_suffix(tmp_path):
    p = tmp_path / "weights.bin"
    paramscope.save(ParamDict({"a": torch.ones(2)}), p)
    assert paramscope.detect_format(p) is Format.SAFETENSORS
    q = tmp_path / "junk.dat"
    q.write_bytes(b"hello world, not weights")
    with pytest.raises(paramscope.UnknownFormatError):
        paramscope.read_manifest(q)
    assert os.path.exists(q)


def _hand_written(path: Path, data: bytes, ps: dict) -> None:
    meta = {"format": "pt", "paramscope": json.dumps(ps)}
    header = json.dumps(
        {"__metadata__": meta, "w": {"dtype": "U8", "shape": [len(data)],
                                     "data_offsets": [0, len(data)]}}
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def test_verify_understands_sha256_digests(tmp_path):
    data = bytes(range(32))
    ps = {"version": 1, "hash": "sha256", "aliases": {},
          "entries": {"w": {"role": "param", "digest": hashlib.sha256(data).hexdigest()}}}
    _hand_written(tmp_path / "ok.safetensors", data, ps)
    r = paramscope.verify(tmp_path / "ok.safetensors")
    assert r.ok and r.hashed == 1
    m = paramscope.read_manifest(tmp_path / "ok.safetensors")
    assert m["w"].hash == "sha256:" + hashlib.sha256(data).hexdigest()
    _hand_written(tmp_path / "bad.safetensors", data[:-1] + b"\xff", ps)
    r = paramscope.verify(tmp_path / "bad.safetensors")
    assert not r.ok and "sha256" in r.problems[0] and "'w'" in r.problems[0]


def test_unknown_hash_algorithm_is_a_header_error(tmp_path):
    ps = {"version": 1, "hash": "md5", "aliases": {}, "entries": {}}
    _hand_written(tmp_path / "x.safetensors", b"ab", ps)
    with pytest.raises(paramscope.HeaderError, match="md5"):
        paramscope.read_manifest(tmp_path / "x.safetensors")


def test_saved_digests_are_xxh3_128_of_the_bytes(tmp_path):
    t = torch.randn(7, 3)
    paramscope.save(ParamDict({"a.w": t}), tmp_path / "b.safetensors")
    m = paramscope.read_manifest(tmp_path / "b.safetensors")
    assert m["a.w"].hash == "xxh3-128:" + xxhash.xxh3_128(t.numpy().tobytes()).hexdigest()


def test_fsync_false_still_writes_atomically_and_verifies(tmp_path):
    pd = ParamDict({"a.w": torch.randn(5, 5), "b.w": torch.randn(3)})
    out = paramscope.save(pd, tmp_path / "nf.safetensors", fsync=False)
    assert paramscope.verify(out).ok
    assert torch.equal(paramscope.load(out)["a.w"], pd["a.w"])
    assert no_temps(tmp_path)
    idx = paramscope.save(pd, tmp_path / "sh", max_shard_size=40, fsync=False)
    assert paramscope.verify(idx).ok and idx.name.endswith(".index.json")
