"""Hostile inputs not covered elsewhere: each names the exact error class and the file/entry."""

from __future__ import annotations

import json
import os
import pickle
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import paramscope
from _helpers import _g, _i, _s, _t, raises_exactly
from paramscope import FormatError, UnsafePickleError
from paramscope._errors import HeaderError, ShardIndexError, UnknownFormatError
from paramscope.io import _dcp, _safetensors

# ----------------------------------------------------------------------------- helpers


class SystemMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def st_file(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    n = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + header + data)
    return path


# Hand-assembled pickle opcodes (protocol 2), for what no Python object pickles into.
def _tensor(key: str = "0", size=(2,), stride=(1,), numel: int = 4) -> bytes:
    pid = _t(_s("storage"), _g("torch", "FloatStorage"), _s(key), _s("cpu"), _i(numel)) + b"Q"
    hooks = _g("collections", "OrderedDict") + b")R"
    sz, sd = _t(*map(_i, size)), _t(*map(_i, stride))
    return _g("torch._utils", "_rebuild_tensor_v2") + _t(pid, _i(0), sz, sd, b"\x89", hooks) + b"R"


def _state(proto: int = 2, **items: bytes) -> bytes:
    body = b"".join(_s(k) + v + b"s" for k, v in items.items())
    return b"\x80" + bytes([proto]) + b"}" + body + b"."


def torch_zip(path: Path, pkl: bytes, members: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        for name, data in (
            members if members is not None else {"archive/data/0": b"\0" * 16}
        ).items():
            z.writestr(name, data)
    return path


# ------------------------------------------------------------------- refused pickles (torch)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda p: {"w": torch.ones(2), "l": [1, [p]]}, id="list"),
        pytest.param(lambda p: {"w": torch.ones(2), "d": {"x": {"y": p}}}, id="dict"),
        pytest.param(lambda p: OrderedDict([("w", torch.ones(2)), ("o", p)]), id="ordereddict"),
        pytest.param(lambda p: {"w": torch.ones(2), "t": (p,), "s": {1, 2}}, id="tuple"),
    ],
)
def test_reduce_payload_nested_in_containers(tmp_path, wrap):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(wrap(SystemMarker(marker)), path)
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "system")
    raises_exactly(UnsafePickleError, lambda: paramscope.load(path), str(path), "system")
    assert not marker.exists()


@pytest.mark.parametrize("slot", ["data", "hooks"])
def test_reduce_payload_inside_parameter_rebuild(tmp_path, slot):
    marker = tmp_path / "pwned"
    evil = _g("posix", "system") + _t(_s(f"touch {marker}")) + b"R"
    hooks = _g("collections", "OrderedDict") + b")R"
    args = (evil, b"\x88", hooks) if slot == "data" else (_tensor(), b"\x88", evil)
    param = _g("torch._utils", "_rebuild_parameter") + _t(*args) + b"R"
    path = torch_zip(tmp_path / "param.pt", _state(w=param))
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "system")
    assert not marker.exists()
    good = torch_zip(tmp_path / "ok.pt", _state(w=param.replace(evil, _tensor())))
    if slot == "data":  # the same rebuild with a tensor in the slot is accepted
        assert paramscope.read_manifest(good)["w"].role.value == "param"


@pytest.mark.parametrize(
    ("key", "member"),
    [
        ("../../etc/passwd", "archive/data/../../etc/passwd"),
        ("/etc/passwd", "archive/data//etc/passwd"),
        ("7", "archive/data/7"),
    ],
)
def test_storage_member_outside_or_missing(tmp_path, key, member):
    path = torch_zip(tmp_path / "m.pt", _state(w=_tensor(key=key)))
    raises_exactly(
        FormatError, lambda: paramscope.read_manifest(path), str(path), f"{member!r}", "not in"
    )


def test_persistent_id_other_than_storage_refused(tmp_path):
    path = torch_zip(tmp_path / "pid.pt", _state(w=_t(_s("module"), _s("x")) + b"Q"))
    raises_exactly(
        UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "persistent id"
    )
    dcp = tmp_path / "c"
    _dcp.save_dcp({"w": torch.ones(2)}, dcp)
    (dcp / ".metadata").write_bytes(_state(w=_s("storage") + b"Q"))
    raises_exactly(
        UnsafePickleError, lambda: _dcp.read_dcp_manifest(dcp), ".metadata", "persistent id"
    )


def test_protocol5_out_of_band_buffer_refused(tmp_path):
    oob = pickle.dumps(
        {"w": pickle.PickleBuffer(b"abcd")}, protocol=5, buffer_callback=lambda b: False
    )
    assert b"\x97" in oob  # NEXT_BUFFER
    path = torch_zip(tmp_path / "oob.pt", oob)
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "out-of-band")
    dcp = tmp_path / "c"
    _dcp.save_dcp({"w": torch.ones(2)}, dcp)
    (dcp / ".metadata").write_bytes(oob)
    raises_exactly(FormatError, lambda: _dcp.read_dcp_manifest(dcp), ".metadata", "out-of-band")


@pytest.mark.parametrize(
    ("size", "stride", "numel", "fragment"),
    [
        ((2, 2), (1,), 4, "stride"),  # fewer strides than dimensions
        ((-2, 2), (2, 1), 4, "(-2, 2)"),
        ((2, 2), (-2, 1), 4, "(-2, 1)"),
    ],
)
def test_torch_tensor_with_impossible_geometry(tmp_path, size, stride, numel, fragment):
    path = torch_zip(tmp_path / "g.pt", _state(w=_tensor(size=size, stride=stride, numel=numel)))
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), fragment)


def test_torch_storage_with_negative_size(tmp_path):
    path = torch_zip(tmp_path / "n.pt", _state(w=_tensor(size=(0,), numel=-5)))
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "'0'")


def test_torch_object_tree_nested_too_deeply(tmp_path):
    deep = b"\x80\x02}" + _s("w") + b"]" * 50_000 + b"a" * 49_999 + b"s."
    path = torch_zip(tmp_path / "deep.pt", deep, members={})
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "nested")


# ------------------------------------------------------------------------------- DCP metadata


@pytest.fixture
def dcp_dir(tmp_path):
    folder = tmp_path / "c"
    _dcp.save_dcp({"w": torch.ones(2, 2)}, folder)
    (folder / _dcp.SIDECAR_NAME).unlink()
    return folder


def rewrite_metadata(folder: Path, change) -> None:
    md = pickle.loads((folder / ".metadata").read_bytes())  # our own file: trusted
    change(md)
    (folder / ".metadata").write_bytes(pickle.dumps(md))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda md: setattr(md.state_dict_metadata["w"], "properties", None), "'w'"),
        (lambda md: setattr(md.state_dict_metadata["w"], "size", 5), "'w'"),
        (lambda md: setattr(md.state_dict_metadata["w"], "size", torch.Size([-3])), "'w'"),
        (lambda md: setattr(md, "storage_data", [1]), "storage_data"),
    ],
)
def test_dcp_metadata_with_malformed_fields(dcp_dir, change, fragment):
    rewrite_metadata(dcp_dir, change)
    raises_exactly(FormatError, lambda: paramscope.read_manifest(dcp_dir), ".metadata", fragment)


@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside.distcp"])
def test_dcp_chunk_file_outside_folder(dcp_dir, rel):
    def point_out(md):
        for info in md.storage_data.values():
            info.relative_path = rel

    rewrite_metadata(dcp_dir, point_out)
    raises_exactly(FormatError, lambda: paramscope.read_manifest(dcp_dir), ".metadata", repr(rel))
    raises_exactly(FormatError, lambda: paramscope.load(dcp_dir), repr(rel))


# ---------------------------------------------------------------------------- sharded index


@pytest.fixture
def shard_dir(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    paramscope.save({"a": torch.ones(2)}, folder / "model-00001-of-00001.safetensors")
    return folder


def test_index_duplicate_key(shard_dir):
    index = shard_dir / "model.safetensors.index.json"
    shard = "model-00001-of-00001.safetensors"
    index.write_text(f'{{"weight_map": {{"a": "{shard}", "a": "{shard}"}}}}')
    raises_exactly(ShardIndexError, lambda: paramscope.read_manifest(index), str(index), "'a'")


def test_index_not_utf8(shard_dir):
    index = shard_dir / "model.safetensors.index.json"
    index.write_bytes(b'{"weight_map": {"\xff": "x"}}')
    raises_exactly(ShardIndexError, lambda: paramscope.read_manifest(index), str(index), "UTF-8")


@pytest.mark.parametrize(
    ("rel", "fragments"),
    [
        ("x\x00y.safetensors", ("'a'", "file name")),  # NUL: no OS path can hold it
        ("x" * 5000 + ".safetensors", ("'xxxx", "does not exist")),  # too long for the OS
        ("model.safetensors.index.json", ("'model.safetensors.index.json'", "itself an index")),
    ],
)
def test_index_shard_names_the_os_cannot_take(shard_dir, rel, fragments):
    index = shard_dir / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": rel}}))
    raises_exactly(ShardIndexError, lambda: paramscope.read_manifest(index), str(index), *fragments)


def test_two_indexes_naming_each_other(shard_dir):
    first = shard_dir / "model.safetensors.index.json"
    second = shard_dir / "other.index.json"
    first.write_text(json.dumps({"weight_map": {"a": "other.index.json"}}))
    second.write_text(json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    raises_exactly(
        ShardIndexError, lambda: paramscope.read_manifest(first), "'other.index.json'", "index"
    )


def test_index_with_integer_too_long_to_convert(shard_dir):
    index = shard_dir / "model.safetensors.index.json"
    index.write_text('{"weight_map": {}, "metadata": {"total_size": ' + "9" * 5000 + "}}")
    raises_exactly(ShardIndexError, lambda: paramscope.read_manifest(index), str(index), "JSON")


def test_symlinked_shard_to_a_folder_outside(shard_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    paramscope.save({"a": torch.ones(2)}, outside / "real.safetensors")
    (shard_dir / "sub").symlink_to(outside)
    index = shard_dir / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "sub/real.safetensors"}}))
    raises_exactly(
        ShardIndexError, lambda: paramscope.read_manifest(index), str(index), "'a'", "link"
    )


# ----------------------------------------------------------------------------- safetensors


def test_header_with_integer_too_long_to_convert(tmp_path):
    path = st_file(tmp_path / "i.safetensors", b'{"a": ' + b"1" * 5000 + b"}")
    raises_exactly(HeaderError, lambda: paramscope.read_manifest(path), str(path), "JSON")


@pytest.mark.parametrize(
    "inner", ["[" * 100_000 + "]" * 100_000, '{"version": ' + "1" * 5000 + "}"]
)
def test_paramscope_metadata_too_deep_or_huge(tmp_path, inner):
    header = json.dumps({"__metadata__": {"paramscope": inner}}).encode()
    path = st_file(tmp_path / "m.safetensors", header)
    raises_exactly(
        HeaderError, lambda: paramscope.read_manifest(path), str(path), "__metadata__['paramscope']"
    )


def test_entry_name_with_lone_surrogate_is_refused_or_kept(tmp_path):
    # JSON may escape a lone surrogate; it is no UTF-8 text, yet must not crash anything.
    header = b'{"w\\udc80": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = st_file(tmp_path / "s.safetensors", header, b"\x07")
    try:
        m = paramscope.read_manifest(path)
    except paramscope.ParamscopeError as exc:
        assert str(path) in str(exc)
    else:
        assert list(m) == ["w\udc80"]


def test_non_utf8_bytes_in_an_entry_name(tmp_path):
    header = b'{"w\xc3\x28": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = st_file(tmp_path / "n.safetensors", header, b"\x07")
    raises_exactly(HeaderError, lambda: paramscope.read_manifest(path), str(path), "UTF-8")


@pytest.mark.parametrize("pad", [1, 3, 5, 7])
def test_header_length_not_a_multiple_of_8_is_accepted(tmp_path, pad):
    header = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
    header += b" " * ((-len(header) + pad) % 8)
    assert (8 + len(header)) % 8 == pad
    data = struct.pack("<2f", 1.5, -2.0)
    path = st_file(tmp_path / "odd.safetensors", header, data)
    assert _safetensors.parse_header(path).data_start == 8 + len(header)
    assert paramscope.load(path)["w"].tolist() == [1.5, -2.0]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    raises_exactly(HeaderError, lambda: paramscope.read_manifest(path), str(path), "0 bytes")


def test_folder_named_like_a_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.mkdir()
    raises_exactly(UnknownFormatError, lambda: paramscope.read_manifest(path), str(path))
    raises_exactly(UnknownFormatError, lambda: paramscope.read_manifest(tmp_path), str(tmp_path))


def test_folder_named_like_an_index_beside_a_real_file(tmp_path):
    (tmp_path / "x.index.json").mkdir()
    (tmp_path / "y.safetensors").mkdir()
    paramscope.save({"a": torch.ones(2)}, tmp_path / "real.safetensors")
    assert list(paramscope.read_manifest(tmp_path)) == ["a"]


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**63], [2**40, 2**40, 0]])
def test_shape_product_overflowing_64_bits_with_zero_data(tmp_path, shape):
    header = json.dumps({"w": {"dtype": "U8", "shape": shape, "data_offsets": [0, 0]}}).encode()
    path = st_file(tmp_path / "o.safetensors", header)
    raises_exactly(HeaderError, lambda: paramscope.read_manifest(path), str(path), "'w'")


def test_offsets_past_the_end_of_the_file(tmp_path):
    header = b'{"w": {"dtype": "U8", "shape": [4096], "data_offsets": [0, 4096]}}'
    path = st_file(tmp_path / "p.safetensors", header, b"\0" * 16)
    raises_exactly(HeaderError, lambda: paramscope.read_manifest(path), str(path), "'w'", "4096")


# ------------------------------------------------------------------------------------- npz


def _npy(header: str, data: bytes) -> bytes:
    raw = header.encode("latin1")
    raw += b" " * (-(10 + len(raw) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data


def test_npz_member_claiming_a_huge_shape_fails_fast(tmp_path):
    path = tmp_path / "bomb.npz"
    head = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", _npy(head, b"\0" * 16))
    tracemalloc.start()
    try:
        raises_exactly(FormatError, lambda: paramscope.read_manifest(path), "w.npy", "bytes")
        raises_exactly(FormatError, lambda: paramscope.load(path), "w.npy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_single_npy_claiming_a_huge_shape_fails_fast(tmp_path):
    path = tmp_path / "bomb.npy"
    path.write_bytes(
        _npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (10**6, 10**6), }".replace(
                "10**6", "1000000"
            ),
            b"\0" * 8,
        )
    )
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "bytes")


@pytest.mark.parametrize(
    "head",
    [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), [1]: 2}",  # unhashable key
        "-" * 60_000 + "1",  # nesting too deep for the parser
    ],
)
def test_npy_header_that_breaks_literal_eval(tmp_path, head):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", _npy(head, b"\0" * 12))
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), "w.npy", "dict literal")


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x96"])  # BINBYTES8, BYTEARRAY8
def test_pickle_claiming_2_to_62_bytes_fails_without_allocating(tmp_path, opcode):
    raw = b"\x80\x05" + opcode + struct.pack("<Q", 2**62) + b"."
    path = torch_zip(tmp_path / "claim.pt", raw, members={})
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "MemoryError")
    dcp = tmp_path / "c"
    _dcp.save_dcp({"w": torch.ones(2)}, dcp)
    (dcp / ".metadata").write_bytes(raw)
    raises_exactly(FormatError, lambda: _dcp.read_dcp_manifest(dcp), ".metadata", "MemoryError")
