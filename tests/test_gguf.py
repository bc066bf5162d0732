"""GGUF (llama.cpp) files: the header parser, counts, inspect/verify/report, dequantisation,
split sets, hostile inputs, fuzzing.

Fixtures are written by the ``gguf`` package's own writer (``gguf.GGUFWriter``, gguf-py 0.19)
and checked against its reader (``gguf.GGUFReader``: ``n_elements``, field contents) and its
dequantiser (``gguf.quants.dequantize``). Hostile files are built byte for byte from the
format's documentation (ggml ``docs/gguf.md``: magic, version, counts, key/value pairs, tensor
infos, alignment padding) with :func:`raw_gguf` below.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramscope
from _helpers import run_cli, without_torch
from paramscope import GGUFError, ParamscopeError, UnsupportedDTypeError
from paramscope._enums import Format
from paramscope._ggml import GGML_TYPES
from paramscope.io import detect_format
from paramscope.io._gguf import GGUFArray, parse_gguf

# --------------------------------------------------------------------------------- fixtures


def blocks(t: T, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random bytes of a ``t`` tensor of logical ``shape`` (numpy order), as the writer takes
    them: rows of the type's bytes."""
    block, size = gguf.GGML_QUANT_SIZES[t]
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(*shape[:-1], shape[-1] // block * size), dtype=np.uint8)


def write(path: Path, tensors: dict[str, object], *, arch: str = "llama", **kw: object) -> Path:
    """A GGUF file by ``gguf.GGUFWriter``: ``tensors`` maps name → a float32 array (written as
    is) or ``(type, logical shape)`` (random blocks of that type) or ``(type, array)``
    (the array quantised by ``gguf.quants.quantize``)."""
    w = gguf.GGUFWriter(path, arch, **kw)  # type: ignore[arg-type]
    w.add_name("tiny")
    w.add_context_length(2048)
    for i, (name, spec) in enumerate(tensors.items()):
        if isinstance(spec, np.ndarray):
            w.add_tensor(name, spec)
        elif isinstance(spec[1], np.ndarray):  # type: ignore[index]
            t, x = spec  # type: ignore[misc]
            w.add_tensor(name, gguf.quants.quantize(x, t), raw_dtype=t)
        else:
            t, shape = spec  # type: ignore[misc]
            w.add_tensor(name, blocks(t, shape, seed=i), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def reference(path: Path) -> Path:
    """The issue's reference: F32[4096] + Q4_K[4096×4096]."""
    return write(
        path,
        {
            "output_norm.weight": np.ones(4096, np.float32),
            "blk.0.attn_q.weight": (T.Q4_K, (4096, 4096)),
        },
    )


def oracle_count(path: Path) -> int:
    return sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


# ------------------------------------------------------------------------- the type table


def test_type_table_equals_the_gguf_package():
    theirs = {int(t): (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGML_QUANT_SIZES}
    ours = {i: (t.name, t.block_size, t.type_size) for i, t in GGML_TYPES.items()}
    assert ours == theirs
    assert set(ours) == {int(t) for t in T}  # every type the package names, none more


# ------------------------------------------------------------------------------- counting


def test_reference_counts_and_bytes(tmp_path, cli):
    path = reference(tmp_path / "ref.gguf")
    c = paramscope.count(path)
    assert c.params == 16_781_312 == oracle_count(path)
    m = paramscope.read_manifest(path)
    q = m["blk.0.attn_q.weight"]
    assert q.nbytes == 9_437_184 and q.logical_numel == 16_777_216
    assert dict(q.extra["gguf"]) == {"type": "Q4_K", "shape": [4096, 4096], "bytes": 9_437_184}
    assert m["output_norm.weight"].dtype.value == "F32" and not m["output_norm.weight"].extra
    assert c.bytes == 9_437_184 + 4 * 4096
    code, out, _ = cli("count", str(path), "--json")
    d = json.loads(out)
    assert code == 0 and d["params"] == 16_781_312 and d["format"] == "gguf"
    assert d["bytes"] == 9_437_184 + 16_384


def test_types_shapes_and_counts_equal_the_reader(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    path = write(
        tmp_path / "m.gguf",
        {
            "token_embd.weight": (T.Q6_K, (8, 512)),
            "blk.0.ffn_gate_exps.weight": (T.Q4_K, (4, 8, 256)),  # 3-D experts
            "blk.0.attn_k.weight": (T.Q8_0, x),
            "blk.0.attn_v.weight": (T.Q4_0, x),
            "blk.0.attn_output.weight": (T.Q5_K, (2, 256)),
            "blk.0.ffn_down.weight": (T.IQ4_XS, (2, 256)),
            "blk.0.ffn_up.weight": (T.TQ2_0, (2, 256)),
            "blk.0.attn_norm.weight": np.ones(64, np.float16),
            "rope_freqs.weight": np.ones(32, np.float32),
            "blk.0.ids": np.arange(6, dtype=np.int32).reshape(2, 3),
        },
    )
    reader = gguf.GGUFReader(path)
    m = paramscope.read_manifest(path)
    assert m.format is Format.GGUF and list(m) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        e = m[t.name]
        shape = tuple(reversed([int(d) for d in t.shape]))  # reader: ggml order
        assert e.nbytes == int(t.n_bytes), t.name
        assert e.logical_numel == int(t.n_elements), t.name
        if t.tensor_type.name in ("F32", "F16", "I32"):
            assert (e.shape, e.dtype.value) == (shape, t.tensor_type.name)
        else:
            assert e.extra["gguf"]["shape"] == list(shape)
            assert e.extra["gguf"]["type"] == t.tensor_type.name
            assert e.location is not None and e.location.offset == t.data_offset
    assert paramscope.count(path).params == oracle_count(path)
    assert m["blk.0.ffn_gate_exps.weight"].extra["gguf"]["shape"] == [4, 8, 256]


def test_every_metadata_value_type(tmp_path):
    path = tmp_path / "meta.gguf"
    w = gguf.GGUFWriter(path, "llama")
    scalars = {
        "t.u8": (200, V.UINT8),
        "t.i8": (-5, V.INT8),
        "t.u16": (60000, V.UINT16),
        "t.i16": (-30000, V.INT16),
        "t.u32": (4_000_000_000, V.UINT32),
        "t.i32": (-2_000_000_000, V.INT32),
        "t.f32": (0.5, V.FLOAT32),
        "t.u64": (2**63 + 5, V.UINT64),
        "t.i64": (-(2**62), V.INT64),
        "t.f64": (0.1, V.FLOAT64),
        "t.bool": (True, V.BOOL),
        "t.str": ("héllo", V.STRING),
    }
    for k, (v, vt) in scalars.items():
        w.add_key_value(k, v, vt)
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.strs", ["a", "bc"])
    w.add_array("t.nested", [[1, 2], [3], [4, 5, 6]])
    w.add_array("t.vocab", [f"tok{i}" for i in range(1000)])  # walked, not kept
    w.add_key_value("t.scores", [0.5] * 300, V.ARRAY, sub_type=V.FLOAT32)
    w.add_tensor("w", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = parse_gguf(path)
    r = gguf.GGUFReader(path)
    for k in scalars:
        assert h.metadata[k] == r.fields[k].contents(), k
        assert h.value_types[k] == r.fields[k].types[0].name.lower(), k
    assert h.metadata["t.ints"] == GGUFArray("int32", 3, [1, 2, 3])
    assert h.metadata["t.strs"].values == r.fields["t.strs"].contents()
    nested = h.metadata["t.nested"]
    assert nested.type == "array" and [a.values for a in nested.values] == [[1, 2], [3], [4, 5, 6]]
    assert h.metadata["t.vocab"] == GGUFArray("string", 1000)  # type and length kept
    assert h.metadata["t.scores"] == GGUFArray("float32", 300)
    assert h.metadata["general.architecture"] == "llama"
    m = paramscope.read_manifest(path)
    assert m.metadata["t.bool"] == "true" and m.metadata["t.nested"] == "[[1, 2], [3], [4, 5, 6]]"
    assert m.metadata["t.vocab"] == "[1000 × string]" and m.metadata["t.str"] == "héllo"
    assert h.data_start % 32 == 0 and h.tensors["w"][2] == h.data_start


def test_custom_alignment_and_big_endian(tmp_path):
    path = tmp_path / "a.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.arange(3, dtype=np.float32))
    w.add_tensor("b", np.arange(5, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = parse_gguf(path)
    assert h.alignment == 64 and all(t[2] % 64 == 0 for t in h.tensors.values())
    be = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(be, "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_tensor("a", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.add_tensor("h", np.arange(4, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = parse_gguf(be)
    assert h.byteorder == ">" and h.tensors["a"][1] == (2, 3)
    pd = paramscope.load(be)
    assert pd["a"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert pd["h"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert "big-endian" in paramscope.count(be).notes[0]


def test_header_only_paths_import_neither_torch_nor_numpy(tmp_path):
    path = reference(tmp_path / "ref.gguf")
    code = (
        "import paramscope\n"
        "c = paramscope.count(sys.argv[1])\n"
        "text = paramscope.inspect(sys.argv[1], depth=2).to_text()\n"
        "r = paramscope.verify(sys.argv[1])\n"
        "result = [c.params, r.ok, 'Q4_K' in text]\n"
    )
    assert without_torch(code, path, absent=("torch", "numpy")) == [16_781_312, True, True]
    cli_code = (
        "from paramscope.cli import main\n"
        "try:\n    main(['count', sys.argv[1], '--json'])\nexcept SystemExit:\n    pass\n"
    )
    without_torch(cli_code, path, absent=("torch", "numpy"))


# ------------------------------------------------------------------ inspect, verify, report


def test_inspect_verify_report(tmp_path, cli):
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("evil\x1b[31mname\n")
    w.add_context_length(4096)
    w.add_tensor("blk.0.attn_q.weight", blocks(T.Q4_K, (2, 256)), raw_dtype=T.Q4_K)
    w.add_tensor("blk.1.attn_q.weight", blocks(T.Q6_K, (2, 256)), raw_dtype=T.Q6_K)
    w.add_tensor("output_norm.weight", np.ones(256, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    code, out, _ = cli("inspect", str(path), "--depth", "2")
    assert code == 0
    assert "blk.0" in out and "blk.1" in out and "Q4_K" in out and "Q6_K" in out
    assert "architecture llama" in out and "context length 4,096" in out
    assert "\x1b" not in out and "evil\\x1b[31mname\\n" in out  # escaped for the terminal
    code, out, _ = cli("verify", str(path))
    assert code == 0 and out.startswith("OK:") and "no hashes" in out
    code, _, _ = cli("report", str(path), "-o", str(tmp_path / "r.html"))
    assert code == 0 and "blk.0.attn_q.weight" in (tmp_path / "r.html").read_text()


def test_folder_and_detection(tmp_path):
    path = reference(tmp_path / "model.bin")  # the bytes decide, not the suffix
    assert detect_format(path) is Format.GGUF
    folder = tmp_path / "d"
    folder.mkdir()
    reference(folder / "llama.gguf")
    assert paramscope.count(folder).params == 16_781_312


# --------------------------------------------------------------------------- dequantising

DEQUANTISED = [T.Q4_0, T.Q8_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K,
               T.Q6_K, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M,
               T.IQ4_NL, T.IQ4_XS, T.TQ1_0, T.TQ2_0, T.MXFP4, T.BF16]  # fmt: skip


def test_dequantised_values_equal_gguf(tmp_path):
    tensors: dict[str, object] = {f"w.{t.name}": (t, (2, 256)) for t in DEQUANTISED}
    tensors["w.F16"] = np.linspace(-1, 1, 512, dtype=np.float16).reshape(2, 256)
    tensors["w.F32"] = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    path = write(tmp_path / "q.gguf", tensors)
    pd = paramscope.load(path)
    with np.errstate(all="ignore"):  # random blocks hold NaN/inf scales: compared as such
        for t in gguf.GGUFReader(path).tensors:
            want = gguf.quants.dequantize(t.data, t.tensor_type)
            got = pd[t.name].float().numpy()  # BF16 comes back as bfloat16: exact in float32
            assert got.shape == want.shape, t.name
            assert np.array_equal(got, want, equal_nan=True), t.name
    assert str(pd["w.F16"].dtype) == "torch.float16" and str(pd["w.Q4_K"].dtype) == "torch.float32"


def test_own_types_need_no_gguf_package(tmp_path):
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    path = write(
        tmp_path / "m.gguf",
        {
            "a": (T.Q8_0, x),
            "b": (T.Q4_0, x),
            "c": x.astype(np.float16),
            "d": (T.BF16, x),
            "k": (T.Q4_K, (1, 256)),
        },
    )
    want = {
        n: gguf.quants.dequantize(t.data, t.tensor_type).tolist()
        for t in gguf.GGUFReader(path).tensors
        for n in [t.name]
        if n != "k"
    }
    code = (
        "sys.modules['gguf'] = None  # as if not installed\n"
        "import paramscope\n"
        "pd = paramscope.load(sys.argv[1], select=['a', 'b', 'c', 'd'])\n"
        "result = {n: pd[n].float().tolist() for n in pd}\n"
        "try:\n"
        "    paramscope.load(sys.argv[1], select='k')\n"
        "except paramscope.UnsupportedDTypeError as exc:\n"
        "    result['error'] = str(exc)\n"
    )
    got = without_torch(code, path, absent=())
    error = got.pop("error")
    assert "tensor 'k' is Q4_K: dequantising it needs the gguf package" in error
    assert got == want


def test_a_type_without_dequantisation_is_a_clear_error(tmp_path, cli):
    path = write(tmp_path / "k.gguf", {"blk.0.w": (T.Q8_K, (2, 256)), "n": np.ones(4, np.float32)})
    assert paramscope.count(path).params == 516  # counting needs no values
    with pytest.raises(UnsupportedDTypeError, match=r"tensor 'blk\.0\.w' is Q8_K"):
        paramscope.load(path)
    code, _, err = cli("convert", str(path), str(tmp_path / "out.safetensors"))
    assert code == 2 and "'blk.0.w' is Q8_K" in err and len(err.strip().splitlines()) == 1


def test_convert_dequantises_to_safetensors(tmp_path, cli):
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    path = write(
        tmp_path / "m.gguf",
        {"blk.0.q": (T.Q4_0, x), "blk.0.k": (T.Q6_K, (4, 256)), "norm": np.ones(64, np.float32)},
    )
    out = tmp_path / "out.safetensors"
    code, _, err = cli("convert", str(path), str(out))
    assert code == 0, err
    pd = paramscope.load(out)
    for t in gguf.GGUFReader(path).tensors:
        assert np.array_equal(pd[t.name].numpy(), gguf.quants.dequantize(t.data, t.tensor_type))
    assert tuple(pd["blk.0.k"].shape) == (4, 256)
    m = paramscope.read_manifest(out)
    assert all("gguf" not in e.extra and "quant_layout" not in e.extra for e in m.values())
    assert m.metadata["general.architecture"] == "llama"
    assert paramscope.count(out).params == paramscope.count(path).params


# ------------------------------------------------------------------------------ split sets


def test_split_files_read_as_one_model(tmp_path, cli):
    tensors: dict[str, object] = {f"blk.{i}.w": (T.Q4_K, (2, 256)) for i in range(5)}
    write(tmp_path / "m.gguf", tensors, split_max_tensors=2)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    total = sum(oracle_count(tmp_path / f) for f in files)
    for f in files:  # any file of the set reads the whole model
        m = paramscope.read_manifest(tmp_path / f)
        assert len(m) == 5 and len(m.files) == 3 and paramscope.count(m).params == total
    assert m.metadata["general.name"] == "tiny" and "in 3 split files" in m.notes[0]
    pd = paramscope.load(tmp_path / files[1])
    assert sorted(pd) == sorted(tensors)
    code, out, _ = cli("count", str(tmp_path), "--json")  # the folder: the set
    assert code == 0 and json.loads(out)["params"] == total
    (tmp_path / files[2]).unlink()
    with pytest.raises(GGUFError, match=r"split 3 of 3 \(m-00003-of-00003\.gguf\) is missing"):
        paramscope.read_manifest(tmp_path / files[0])


def test_split_keys_must_add_up(tmp_path):
    write(tmp_path / "m.gguf", {f"w{i}": np.ones(4, np.float32) for i in range(4)},
          split_max_tensors=2)  # fmt: skip
    second = tmp_path / "m-00002-of-00002.gguf"
    second.rename(tmp_path / "m-00002-of-00003.gguf")
    with pytest.raises(GGUFError, match=r"split\.count is 2, but the name is not"):
        paramscope.read_manifest(tmp_path / "m-00002-of-00003.gguf")


# --------------------------------------------------------------------------- hostile files


def s(text: str | bytes) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tinfo(name: str, dims: list[int], ggml: int, offset: int) -> bytes:
    return (
        s(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<II", ggml, 0)[:4]
        + struct.pack("<Q", offset)
    )


def raw_gguf(
    kvs: list[bytes] = (),  # type: ignore[assignment]
    tensors: list[bytes] = (),  # type: ignore[assignment]
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    data: bytes = b"",
    align: int = 32,
) -> bytes:
    """A GGUF file byte for byte, as ggml's docs/gguf.md lays it out."""
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)  # fmt: skip
    body = head + b"".join(kvs) + b"".join(tensors)
    body += b"\0" * (-len(body) % align)
    return body + data


F32 = 0
GOOD_T = tinfo("w", [4], F32, 0)

HOSTILE: dict[str, tuple[bytes, str]] = {
    "bad magic": (raw_gguf(magic=b"GGUX"), "bad magic b'GGUX'"),
    "version 1": (raw_gguf(version=1), "GGUF version 1 is not supported"),
    "version 4": (raw_gguf(version=4), "GGUF version 4 is not supported: expected version 2 or 3"),
    "unknown value type": (raw_gguf([kv("k", 13, b"\0" * 8)]), "'k': unknown value type 13"),
    "unknown element type": (
        raw_gguf([kv("k", 9, struct.pack("<IQ", 99, 1))]),
        "unknown array element type 99",
    ),
    "string past the end": (
        raw_gguf([kv("k", 8, struct.pack("<Q", 2**62) + b"ab")]),
        "length 4611686018427387904 at offset",
    ),
    "array past the end": (
        raw_gguf([kv("k", 9, struct.pack("<IQ", 10, 2**60))]),
        "length is 1152921504606846976, but",
    ),
    "key past the end": (raw_gguf(n_kv=1), "metadata key count is 1, but 8 bytes are left"),
    "tensor count past the end": (raw_gguf(n_tensors=2**40), "tensor count is 1099511627776"),
    "unknown ggml type": (
        raw_gguf(tensors=[tinfo("w", [4], 4, 0)], data=b"\0" * 16),
        "tensor 'w': unknown ggml type 4",
    ),
    "offset past the end": (
        raw_gguf(tensors=[tinfo("w", [4], F32, 64)], data=b"\0" * 16),
        "tensor 'w': its 16 bytes at offset",
    ),
    "data past the end": (
        raw_gguf(tensors=[GOOD_T], data=b"\0" * 8),
        "run past the end of the",
    ),
    "misaligned data": (
        raw_gguf(tensors=[tinfo("w", [4], F32, 8)], data=b"\0" * 64),
        "data offset 8 is not aligned to 32 bytes",
    ),
    "overlapping tensors": (
        raw_gguf(tensors=[tinfo("a", [16], F32, 0), tinfo("b", [4], F32, 32)], data=b"\0" * 64),
        "tensors 'a' (bytes",
    ),
    "row not whole blocks": (
        raw_gguf(tensors=[tinfo("q", [100, 2], 12, 0)], data=b"\0" * 1024),
        "tensor 'q' of type Q4_K has 100 values per row: not a multiple of its block size 256",
    ),
    "too many dims": (
        raw_gguf(tensors=[tinfo("w", [1] * 5, F32, 0)], data=b"\0" * 32),
        "tensor 'w' has 5 dimensions: at most 4",
    ),
    "negative dim": (
        raw_gguf(tensors=[tinfo("w", [2**63 + 1], F32, 0)], data=b"\0" * 32),
        "is negative as an int64",
    ),
    "element count overflow": (
        raw_gguf(tensors=[tinfo("w", [2**32, 2**32], F32, 0)], data=b"\0" * 32),
        "do not fit an int64",
    ),
    "duplicate key": (
        raw_gguf([kv("k", 4, b"\1\0\0\0"), kv("k", 4, b"\1\0\0\0")]),
        "metadata key 'k' appears twice",
    ),
    "duplicate tensor": (
        raw_gguf(tensors=[GOOD_T, GOOD_T], data=b"\0" * 32),
        "tensor 'w' appears twice",
    ),
    "alignment not a power of two": (
        raw_gguf([kv("general.alignment", 4, struct.pack("<I", 48))]),
        "general.alignment is 48: expected a power of two",
    ),
    "alignment of the wrong type": (
        raw_gguf([kv("general.alignment", 10, struct.pack("<Q", 64))]),
        "general.alignment: expected a uint32, found a uint64",
    ),
    "key not utf-8": (
        raw_gguf([s(b"\xff") + struct.pack("<I", 4) + b"\0" * 4]),
        "metadata key #0: not valid UTF-8",
    ),
    "nesting too deep": (
        raw_gguf([kv("k", 9, struct.pack("<IQ", 9, 1) * 40 + struct.pack("<IQ", 0, 0))]),
        "arrays nested more than 16 deep",
    ),
    "truncated header": (
        raw_gguf()[:10],
        "tensor count: expected 8 bytes at offset 8, the 10-byte file ends",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_are_refused_in_one_line(tmp_path, case):
    raw, fragment = HOSTILE[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(GGUFError) as info:
            paramscope.read_manifest(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert fragment in msg and msg.startswith(str(path)) and "\n" not in msg
    assert peak < 4 << 20  # nothing allocated for what a count or length claims


def test_hostile_file_exits_2_on_the_cli(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(HOSTILE["offset past the end"][0])
    r = run_cli("count", str(path))
    assert r.returncode == 2 and "its 16 bytes at offset" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_valid_raw_file_reads(tmp_path):
    """The byte-for-byte builder itself makes files the gguf package reads (so the hostile
    cases differ from a valid file in what they name only)."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(
        raw_gguf([kv("general.architecture", 8, s("llama"))], [GOOD_T], data=b"\0" * 32)
    )
    assert oracle_count(path) == 4 == paramscope.count(path).params


# ------------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz_base(folder: Path) -> tuple[bytes, int]:
    path = folder / "base.gguf"
    if not path.exists():
        w = gguf.GGUFWriter(path, "llama")
        w.add_context_length(64)
        w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
        w.add_array("x.nested", [[1, 2], [3]])
        w.add_bool("x.flag", True)
        w.add_float64("x.f", 1.5)
        w.add_tensor("blk.0.w", blocks(T.Q4_K, (1, 256)), raw_dtype=T.Q4_K)
        w.add_tensor("n", np.ones(8, np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path.read_bytes(), parse_gguf(path).data_start


@st.composite
def mutated(draw: st.DrawFn, raw: bytes, header_end: int) -> bytes:
    buf = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        pos = draw(st.integers(0, max(1, min(header_end, len(buf))) - 1))
        op = draw(st.sampled_from(("flip", "set", "big", "insert", "delete", "cut")))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[pos] = draw(st.integers(0, 255))
        elif op == "big":  # a count, length or dim near a limit
            word = draw(st.sampled_from([2**31, 2**32 - 1, 2**62, 2**63, 2**64 - 1, 255, 0]))
            buf[pos : pos + 8] = struct.pack("<Q", word)
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        else:
            del buf[pos:]
    return bytes(buf)


def only_format_errors(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:  # the point: nothing but ParamscopeError
        assert isinstance(exc, ParamscopeError), f"{type(exc).__name__} escaped: {exc!r:.300}"


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="paramscope-fuzz-gguf-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@FUZZ
@given(data=st.data())
def test_fuzzed_headers_raise_only_format_errors(work, data):
    raw, header_end = fuzz_base(work)
    bad = data.draw(mutated(raw, header_end))
    path = work / "fuzz.gguf"
    path.write_bytes(bad)
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        only_format_errors(lambda: paramscope.count(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5 and peak < 8 << 20
