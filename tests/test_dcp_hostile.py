"""Hostile DCP folders (issue 12): a `.metadata` may neither change the process nor leak memory.

1. ``BUILD`` (and the other opcodes that touch an object) on what the unpickler hands out:
   classes, dtypes, enum members, ``_get_layout``, paths, containers. Refused with
   :class:`UnsafePickleError`; afterwards ``Path`` and a normal DCP round trip still behave.
2. Chunks that do not tile the tensor (gaps, overlaps, out of bounds, wrong rank): refused
   from ``.metadata`` alone; a read that leaves a tensor partly unfilled is never handed back.
3. Sizes beyond what the chunk files hold: refused before anything is allocated.
4. A DCP overwrite prints no torch warning; other warnings still pass.
"""

from __future__ import annotations

import collections
import os
import pathlib
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.serialization
from torch.distributed.checkpoint import filesystem as dcp_fs
from torch.distributed.checkpoint import metadata as dcp_md

import paramscope
from _helpers import _g, _i, _s, raises_exactly, restore, run_python, snapshot
from paramscope import FormatError, UnsafePickleError
from paramscope.io import _dcp

MD = "torch.distributed.checkpoint.metadata"
FS = "torch.distributed.checkpoint.filesystem"

# ----------------------------------------------------------------------------- helpers


# Hand-assembled pickle opcodes (protocol 2), for what no Python object pickles into.
def _d(**items: bytes) -> bytes:
    """A dict literal: ``EMPTY_DICT`` then one ``SETITEM`` per item."""
    return b"}" + b"".join(_s(k) + v + b"s" for k, v in items.items())


def slotstate(**items: bytes) -> bytes:
    """A ``(None, {name: value})`` BUILD state: pickle sets each with ``setattr``."""
    return b"N" + _d(**items) + b"\x86"


#: Objects a ``.metadata`` could once reach and change for the whole process.
TARGETS: list[object] = [
    pathlib.PurePath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    pathlib.Path,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    dcp_md.Metadata,
    dcp_md.MetadataIndex,
    dcp_md.StorageMeta,
    dcp_md.TensorStorageMetadata,
    dcp_md.BytesStorageMetadata,
    dcp_md.ChunkStorageMetadata,
    dcp_md.TensorProperties,
    dcp_md._MEM_FORMAT_ENCODING,
    *dcp_md._MEM_FORMAT_ENCODING,
    dcp_fs._StorageInfo,
    torch.serialization._get_layout,
    collections.OrderedDict,
    torch.Size,
]


@pytest.fixture
def process_unchanged():
    """Fail a test whose file changed a class or singleton of the process (and undo it)."""
    snap = snapshot(TARGETS)
    yield
    changed = restore(snap)
    assert not changed, f"the .metadata changed the process: {changed}"


def assert_process_behaves(tmp_path: Path) -> None:
    """``Path`` prints what it holds and a normal DCP round trip works, in this process."""
    assert str(Path("x")) == "x"
    assert str(pathlib.PurePosixPath("/a/b")) == "/a/b"
    assert os.fspath(tmp_path / "y") == os.path.join(os.fspath(tmp_path), "y")
    assert torch.serialization._get_layout("torch.strided") is torch.strided
    assert dcp_md._MEM_FORMAT_ENCODING(0) is dcp_md._MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    folder = tmp_path / "after"
    _dcp.save_dcp({"w": w}, folder)
    assert sorted(os.listdir(folder)) == [".metadata", "__0_0.distcp", "paramscope.json"]
    assert torch.equal(_dcp.load_dcp(folder)["w"], w)
    assert torch.equal(dict(_dcp.iter_dcp_tensors(folder))["w"], w)


@pytest.fixture
def good(tmp_path) -> tuple[Path, bytes]:
    """A valid one-tensor DCP folder and its ``.metadata`` bytes."""
    folder = tmp_path / "c"
    _dcp.save_dcp({"w": torch.ones(2, 2)}, folder)
    return folder, (folder / ".metadata").read_bytes()


def hostile(folder: Path, original: bytes, attack: bytes) -> None:
    """``.metadata`` = the attack's opcodes (result popped), then the valid pickle."""
    assert original[:2] == b"\x80\x04"
    (folder / ".metadata").write_bytes(b"\x80\x04" + attack + b"0" + original[2:])


# ------------------------------------------------------------------- 1. BUILD and friends


def test_build_on_purepath_class_is_refused_and_paths_still_work(good, tmp_path, process_unchanged):
    folder, original = good
    attack = _g("pathlib", "PurePosixPath") + slotstate(_str=_s("/some/where")) + b"b"
    hostile(folder, original, attack)
    raises_exactly(UnsafePickleError, lambda: _dcp.read_dcp_metadata(folder), ".metadata", "BUILD")
    raises_exactly(UnsafePickleError, lambda: _dcp.load_dcp(folder), "PurePosixPath")
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(folder))
    assert_process_behaves(tmp_path)


def test_build_on_purepath_in_a_fresh_process(good, tmp_path):
    """End to end: after the file, this process's paths, saves and loads are its own."""
    folder, original = good
    for name in ("PurePosixPath", "PosixPath"):
        attack = _g("pathlib", name) + slotstate(_str=_s(str(tmp_path / "elsewhere"))) + b"b"
        hostile(folder, original, attack)
        code = (
            "import sys, torch\n"
            "from pathlib import Path\n"
            "from paramscope.io import _dcp\n"
            "try:\n"
            "    _dcp.load_dcp(sys.argv[1])\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n"
            "print(str(Path('x')))\n"
            "_dcp.save_dcp({'w': torch.ones(3)}, Path(sys.argv[2]))\n"
            "print(float(_dcp.load_dcp(Path(sys.argv[2]))['w'].sum()))\n"
        )
        out = tmp_path / f"out-{name}"
        proc = run_python(code, folder, out, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == ["UnsafePickleError", "x", "3.0"], proc.stdout
        assert not (tmp_path / "elsewhere").exists()
        assert sorted(os.listdir(out)) == [".metadata", "__0_0.distcp", "paramscope.json"]


def _globals() -> list[tuple[str, str]]:
    return sorted(_dcp.ALLOWED_GLOBALS)


@pytest.mark.parametrize("state", ["slots", "dict"])
@pytest.mark.parametrize(("module", "name"), _globals(), ids=lambda v: str(v))
def test_build_on_every_allowed_global_is_refused(good, module, name, state, process_unchanged):
    """The object a GLOBAL opcode hands out is never a BUILD target (class, dtype, function)."""
    folder, original = good
    value = _s("poisoned")
    st = slotstate(paramscope_poison=value) if state == "slots" else _d(paramscope_poison=value)
    hostile(folder, original, _g(module, name) + st + b"b")
    raises_exactly(UnsafePickleError, lambda: _dcp.read_dcp_metadata(folder), "BUILD")


SHARED = {
    "enum member": _g(MD, "_MEM_FORMAT_ENCODING") + _i(0) + b"\x85R",
    "layout": _g("torch.serialization", "_get_layout") + _s("torch.strided") + b"\x85R",
    "torch.Size": _g("torch", "Size") + _i(2) + b"\x85\x85R",
    "path": _g("pathlib", "PosixPath") + _s("/") + _s("tmp") + b"\x86R",
    "OrderedDict": _g("collections", "OrderedDict") + b")R",
    "dict": _g("builtins", "dict") + b")R",
    "dtype via memo": _g("torch", "float32") + b"q\x01" + b"0" + b"h\x01",
    "class via memo": _g("pathlib", "PurePosixPath") + b"q\x01" + b"0" + b"h\x01",
}


@pytest.mark.parametrize("target", list(SHARED))
def test_build_on_values_the_unpickler_returns_is_refused(good, target, process_unchanged):
    """Singletons (an enum member, a layout), shared objects and plain values: no BUILD."""
    folder, original = good
    st = _d(_value_=_i(1), _name_=_s("x"), _str=_s("/x"))
    hostile(folder, original, SHARED[target] + st + b"b")
    raises_exactly(UnsafePickleError, lambda: _dcp.read_dcp_metadata(folder), "BUILD")


def test_build_on_enum_member_does_not_change_it(good, tmp_path, process_unchanged):
    folder, original = good
    attack = SHARED["enum member"] + _d(_value_=_i(7), _name_=_s("EVIL")) + b"b"
    hostile(folder, original, attack)
    raises_exactly(UnsafePickleError, lambda: _dcp.read_dcp_manifest(folder), "_MEM_FORMAT")
    assert dcp_md._MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT.value == 0
    assert_process_behaves(tmp_path)


def test_build_on_get_layout_does_not_poison_torch(good, tmp_path, process_unchanged):
    """``_get_layout`` keeps a cache in its ``__dict__``: BUILD would re-point torch's layouts."""
    folder, original = good
    evil = b"}" + _s("torch.strided") + _s("EVIL") + b"s"
    hostile(folder, original, _g("torch.serialization", "_get_layout") + _d(cache=evil) + b"b")
    raises_exactly(UnsafePickleError, lambda: _dcp.load_dcp(folder), "_get_layout")
    assert_process_behaves(tmp_path)


def test_build_on_storage_info_class_does_not_break_saves(good, tmp_path, process_unchanged):
    """Setting ``_StorageInfo.__getstate__`` would break every later DCP save of the process."""
    folder, original = good
    state = slotstate(__getstate__=_g("torch.serialization", "_get_layout"))
    hostile(folder, original, _g(FS, "_StorageInfo") + state + b"b")
    raises_exactly(UnsafePickleError, lambda: _dcp.load_dcp(folder), "_StorageInfo")
    assert_process_behaves(tmp_path)


def _fresh(cls: str) -> bytes:
    return _g(MD, cls) + b")\x81"  # NEWOBJ with no arguments, as DCP writes it


@pytest.mark.parametrize(
    ("attack", "fragment"),
    [
        pytest.param(
            _fresh("ChunkStorageMetadata") + _d(__class__=_i(1)) + b"b",
            "__class__",
            id="unknown-field-dunder",
        ),
        pytest.param(_fresh("StorageMeta") + _d(evil=_i(1)) + b"b", "evil", id="unknown-field"),
        pytest.param(
            _fresh("StorageMeta") + slotstate(modules=b"]") + b"b", "tuple", id="slotstate-on-fresh"
        ),
        pytest.param(_fresh("StorageMeta") + b"]b", "list", id="list-state"),
        pytest.param(_fresh("StorageMeta") + b"}b}b", "second BUILD", id="build-twice"),
        pytest.param(
            _fresh("TensorProperties") + _d(dtype=_g("torch", "float32")) + b"b",
            "5-tuple",
            id="properties-dict",
        ),
        pytest.param(
            _g(MD, "StorageMeta") + _s("x") + b"\x85\x81", "arguments", id="newobj-with-args"
        ),
        pytest.param(
            _g(MD, "StorageMeta") + _s("x") + b"\x85R", "arguments", id="reduce-dataclass"
        ),
        pytest.param(
            b"(" + _s("x") + b"i" + MD.encode() + b"\nStorageMeta\n",
            "arguments",
            id="inst-with-args",
        ),
        pytest.param(_g("torch", "float32") + b")R", "REDUCE", id="call-a-dtype"),
        pytest.param(SHARED["enum member"] + b")R", "REDUCE", id="call-an-enum-member"),
        pytest.param(_g("torch", "float32") + b")\x81", "NEWOBJ", id="newobj-of-a-dtype"),
        pytest.param(
            _g(MD, "_MEM_FORMAT_ENCODING") + b"(" + _i(1) + b"e",
            "APPENDS",
            id="appends-on-enum-class",
        ),
        pytest.param(
            _g("torch.serialization", "_get_layout") + _s("k") + _s("v") + b"s",
            "SETITEM",
            id="setitem-on-get-layout",
        ),
        pytest.param(
            _g("collections", "OrderedDict") + b"(" + _s("k") + _s("v") + b"u",
            "SETITEMS",
            id="setitems-on-ordereddict-class",
        ),
        pytest.param(
            _g("builtins", "set") + b"(" + _i(1) + b"\x90", "ADDITEMS", id="additems-on-set-class"
        ),
        pytest.param(_fresh("StorageMeta") + _i(1) + b"a", "APPEND", id="append-on-dataclass"),
        pytest.param(SHARED["layout"] + _i(1) + b"a", "APPEND", id="append-on-layout"),
        pytest.param(b"}" + _fresh("Metadata") + _i(1) + b"s", "dict key", id="unhashable-key"),
        pytest.param(
            b"}" + _fresh("MetadataIndex") + _i(1) + b"s", "dict key", id="unbuilt-index-as-key"
        ),
        pytest.param(b"(" + _i(1) + b"\x85\x85" + b"\x91", "set member", id="nested-frozenset"),
    ],
)
def test_other_opcodes_on_what_the_unpickler_returns(good, attack, fragment, process_unchanged):
    folder, original = good
    hostile(folder, original, attack)
    raises_exactly(UnsafePickleError, lambda: _dcp.read_dcp_metadata(folder), fragment)


def test_deeply_nested_dict_key_is_refused_without_crashing(good, tmp_path):
    """Hashing a tuple nested 10**6 deep recurses in C: plain pickle.loads segfaults."""
    folder, original = good
    hostile(folder, original, b"}N" + b"\x85" * 1_000_000 + b"Ns")
    code = (
        "import sys\nfrom paramscope.io import _dcp\n"
        "try:\n    _dcp.read_dcp_metadata(sys.argv[1])\n"
        "except Exception as exc:\n    print(type(exc).__name__, str(exc)[-80:])\n"
    )
    proc = run_python(code, folder, timeout=120)
    assert proc.returncode == 0, f"crashed: {proc.returncode} {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("UnsafePickleError"), proc.stdout


@pytest.mark.parametrize(
    ("name", "parts", "expected"),
    [
        ("PosixPath", ("/", "tmp", "ckpt"), "/tmp/ckpt"),
        ("PurePosixPath", ("rel", "ckpt"), "rel/ckpt"),
        ("WindowsPath", ("C:\\", "ckpt"), "C:\\ckpt"),
        ("PureWindowsPath", (), "."),
    ],
)
def test_checkpoint_id_path_is_a_plain_string(good, name, parts, expected):
    folder, _original = good
    assert type(_dcp.read_dcp_metadata(folder).storage_meta.checkpoint_id) is str
    path = _g("pathlib", name) + b"(" + b"".join(_s(p) for p in parts) + b"tR"
    state = _d(checkpoint_id=path)
    meta = _fresh("StorageMeta") + state + b"b"
    md = _fresh("Metadata") + _d(state_dict_metadata=b"}", storage_meta=meta) + b"b"
    (folder / ".metadata").write_bytes(b"\x80\x02" + md + b".")
    got = _dcp.read_dcp_metadata(folder).storage_meta.checkpoint_id
    assert type(got) is str and got == expected


def test_real_dcp_metadata_still_reads_identically(tmp_path):
    """The restricted reader returns what plain pickle does for a file DCP itself wrote."""
    state = {
        "fc.weight": torch.randn(3, 2),
        "h": torch.zeros(4, dtype=torch.bfloat16),
        "step": 7,
        "opt": {"lr": 0.1},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=tmp_path / "c", no_dist=True)
    trusted = pickle.loads((tmp_path / "c" / ".metadata").read_bytes())  # our own file
    ours = _dcp.read_dcp_metadata(tmp_path / "c")
    assert ours.state_dict_metadata == trusted.state_dict_metadata
    assert ours.storage_data == trusted.storage_data
    assert ours.planner_data == trusted.planner_data
    assert ours.version == trusted.version
    assert ours.storage_meta.checkpoint_id == os.fspath(trusted.storage_meta.checkpoint_id)


# --------------------------------------------------------------------------- 2. tiling


def rewrite_metadata(folder: Path, change) -> None:
    md = pickle.loads((folder / ".metadata").read_bytes())  # our own file: trusted
    change(md)
    (folder / ".metadata").write_bytes(pickle.dumps(md))


def chunk(offsets, sizes) -> dcp_md.ChunkStorageMetadata:
    return dcp_md.ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes))


@pytest.fixture
def small(tmp_path) -> Path:
    """A DCP folder of one 2x2 float32 tensor ``w`` (one chunk at (0, 0))."""
    folder = tmp_path / "c"
    _dcp.save_dcp({"w": torch.arange(4, dtype=torch.float32).reshape(2, 2)}, folder)
    return folder


def _every_reader(folder: Path, *fragments: str) -> None:
    for fn in (
        lambda: _dcp.read_dcp_metadata(folder),
        lambda: _dcp.read_dcp_manifest(folder),
        lambda: _dcp.load_dcp(folder),
        lambda: list(_dcp.iter_dcp_tensors(folder)),
        lambda: paramscope.load(folder),
    ):
        raises_exactly(FormatError, fn, *fragments)


def test_64x64_tensor_with_one_2x2_chunk_is_refused(small, tmp_path):
    rewrite_metadata(
        small, lambda md: setattr(md.state_dict_metadata["w"], "size", torch.Size([64, 64]))
    )
    _every_reader(small, ".metadata", "'w'", "do not tile", "gap", "4 of its 4096")
    with pytest.raises(FormatError):
        paramscope.convert(small, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_convert_of_untiled_dcp_exits_2_with_one_line(cli, small, tmp_path):
    rewrite_metadata(
        small, lambda md: setattr(md.state_dict_metadata["w"], "size", torch.Size([64, 64]))
    )
    r = cli("convert", small, tmp_path / "o.safetensors")
    assert r.code == 2 and r.out == "", r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "'w'" in lines[0] and "tile" in lines[0], r.err
    assert not (tmp_path / "o.safetensors").exists()


def _set_chunks(*chunks):
    def change(md):
        item = md.state_dict_metadata["w"]
        item.chunks = list(chunks)
        ((_key, info),) = [(k, v) for k, v in md.storage_data.items() if k.fqn == "w"]
        md.storage_data = {
            dcp_md.MetadataIndex("w", c.offsets, i): info for i, c in enumerate(chunks)
        }

    return change


@pytest.mark.parametrize(
    ("chunks", "fragments"),
    [
        pytest.param([chunk((0, 0), (1, 2))], ("gap", "2 of its 4"), id="gap"),
        pytest.param([chunk((0, 0), (2, 2)), chunk((0, 0), (1, 1))], ("overlap",), id="overlap"),
        pytest.param(
            [chunk((0, 0), (2, 1)), chunk((0, 0), (1, 1)), chunk((1, 1), (1, 1))],
            ("overlap, and leave a gap",),
            id="overlap-and-gap",
        ),
        pytest.param(
            [chunk((0, 0), (2, 2)), chunk((1, 1), (2, 2))], ("outside",), id="out-of-bounds"
        ),
        pytest.param([chunk((0,), (4,))], ("expected 2 dimensions",), id="wrong-rank"),
        pytest.param([chunk((0, 0, 0), (2, 2, 1))], ("expected 2 dimensions",), id="rank-3"),
        pytest.param([chunk((-1, 0), (3, 2))], ("negative",), id="negative-offset"),
        pytest.param([chunk((0, 0), (-2, 2)), chunk((0, 0), (2, 2))], ("negative",), id="neg-size"),
        pytest.param([], ("gap", "0 of its 4"), id="no-chunks"),
    ],
)
def test_chunks_that_do_not_tile(small, chunks, fragments):
    rewrite_metadata(small, _set_chunks(*chunks))
    _every_reader(small, ".metadata", "'w'", *fragments)


def test_exact_tilings_in_any_order_still_load(tmp_path):
    """Four 1x1 chunks (and an empty one) written by hand tile a 2x2 tensor: accepted."""
    folder = tmp_path / "c"
    w = torch.arange(4, dtype=torch.float32).reshape(2, 2)
    parts = {(1, 1): w[1:, 1:], (0, 0): w[:1, :1], (1, 0): w[1:, :1], (0, 1): w[:1, 1:]}
    write_chunks(folder, "w", (2, 2), {**parts, (2, 0): w[2:, :]})
    out = _dcp.load_dcp(folder)
    assert torch.equal(out["w"], w)
    assert torch.equal(dict(_dcp.iter_dcp_tensors(folder))["w"], w)


def write_chunks(folder: Path, fqn: str, size, parts: dict[tuple[int, ...], torch.Tensor]) -> None:
    """A DCP folder laid out as FileSystemWriter does: one torch.save blob per chunk."""
    import io

    folder.mkdir()
    blob = io.BytesIO()
    storage, chunks = {}, []
    for i, (offsets, t) in enumerate(parts.items()):
        start = blob.tell()
        torch.save(t.clone(), blob)
        storage[dcp_md.MetadataIndex(fqn, torch.Size(offsets), i)] = dcp_fs._StorageInfo(
            "__0_0.distcp", start, blob.tell() - start
        )
        chunks.append(chunk(offsets, t.shape))
    first = next(iter(parts.values()))
    md = dcp_md.Metadata(
        state_dict_metadata={
            fqn: dcp_md.TensorStorageMetadata(
                dcp_md.TensorProperties(dtype=first.dtype), torch.Size(size), chunks
            )
        },
        storage_data=storage,
    )
    (folder / "__0_0.distcp").write_bytes(blob.getvalue())
    (folder / ".metadata").write_bytes(pickle.dumps(md))


def test_chunk_without_storage_entry(small):
    rewrite_metadata(small, lambda md: setattr(md, "storage_data", {}))
    _every_reader(small, "'w'", "no storage_data entry")


def test_a_partial_read_is_never_handed_back(small, monkeypatch):
    """Defence in depth: were the tiling check bypassed, the fill count still refuses."""
    from paramscope.io import _dcp_layout

    rewrite_metadata(
        small, lambda md: setattr(md.state_dict_metadata["w"], "size", torch.Size([64, 64]))
    )
    monkeypatch.setattr(_dcp_layout, "_tiling_problem", lambda shape, boxes: None)
    raises_exactly(FormatError, lambda: _dcp.load_dcp(small), "'w'", "filled 4 of its 4096")
    raises_exactly(FormatError, lambda: list(_dcp.iter_dcp_tensors(small)), "filled 4 of its 4096")


# --------------------------------------------------------------------------- 3. sizes


@pytest.fixture
def no_alloc(monkeypatch):
    """Call it to fail any later allocation of a tensor (torch.empty / zeros / ones)."""

    def boom(*args, **kwargs):
        raise AssertionError(f"allocated {args} before validating")

    def arm() -> None:
        for name in ("empty", "zeros", "ones"):
            monkeypatch.setattr(torch, name, boom)

    return arm


def _claim(size, length):
    def change(md):
        md.state_dict_metadata["w"].size = torch.Size(size)
        md.state_dict_metadata["w"].chunks = [chunk((0,) * len(size), size)]
        for info in md.storage_data.values():
            info.length = length

    return change


def test_4tb_claim_with_small_storage_entry_is_refused_from_metadata(small, no_alloc):
    rewrite_metadata(small, _claim((2**20, 2**20), 1000))
    no_alloc()
    _every_reader(small, ".metadata", "'w'", "needs 4398046511104 bytes", "holds 1000")


def test_4tb_claim_past_the_chunk_file_is_refused_before_allocating(small, no_alloc):
    rewrite_metadata(small, _claim((2**20, 2**20), 2**42))
    no_alloc()
    m = _dcp.read_dcp_manifest(small)  # header only: the claim is just a number
    assert m["w"].shape == (2**20, 2**20)
    for fn in (
        lambda: _dcp.load_dcp(small),
        lambda: list(_dcp.iter_dcp_tensors(small)),
        lambda: paramscope.load(small),
    ):
        raises_exactly(FormatError, fn, "__0_0.distcp", "'w'", "which holds")


def test_two_entries_claiming_the_same_bytes(tmp_path, no_alloc):
    folder = tmp_path / "c"
    _dcp.save_dcp({"a": torch.ones(4), "b": torch.ones(4)}, folder)

    def same(md):
        infos = list(md.storage_data.values())
        infos[1].offset, infos[1].length = infos[0].offset, infos[0].length

    rewrite_metadata(folder, same)
    no_alloc()
    for fn in (lambda: _dcp.load_dcp(folder), lambda: list(_dcp.iter_dcp_tensors(folder))):
        raises_exactly(FormatError, fn, "'a'", "'b'", "same bytes")


def test_chunk_file_missing_or_outside(small, tmp_path):
    (small / "__0_0.distcp").unlink()
    raises_exactly(FormatError, lambda: _dcp.load_dcp(small), "__0_0.distcp", "'w'")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    (small / "__0_0.distcp").symlink_to(tmp_path / "outside.bin")
    raises_exactly(FormatError, lambda: _dcp.load_dcp(small), "outside the checkpoint folder")


def test_transformed_chunks_are_refused_on_load(small):
    def zstd(md):
        for info in md.storage_data.values():
            info.transform_descriptors = ["zstandard"]

    rewrite_metadata(small, zstd)
    assert _dcp.read_dcp_manifest(small)["w"].shape == (2, 2)
    raises_exactly(FormatError, lambda: _dcp.load_dcp(small), "'w'", "transformed", "zstandard")


# --------------------------------------------------------------------------- 4. warnings


def test_dcp_overwrite_prints_no_warning(tmp_path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _dcp.save_dcp({"w": torch.ones(2)}, tmp_path / "c")
        _dcp.save_dcp({"w": torch.zeros(2)}, tmp_path / "c")
        assert torch.equal(_dcp.load_dcp(tmp_path / "c")["w"], torch.zeros(2))
        list(_dcp.iter_dcp_tensors(tmp_path / "c"))
    assert [str(w.message) for w in seen] == []


def test_torch_overwrite_warning_silenced_other_warnings_kept(tmp_path):
    """The filter names torch's overwrite message only: other warnings and errors pass."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with _dcp._quiet_single_process():
            dcp.save({"w": torch.ones(2)}, checkpoint_id=tmp_path / "c", no_dist=True)
            dcp.save({"w": torch.ones(2)}, checkpoint_id=tmp_path / "c", no_dist=True)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]
    with pytest.raises(RuntimeError, match="boom"), _dcp._quiet_single_process():
        raise RuntimeError("boom")


# ------------------------------------------------- the class of 1 elsewhere: chunk files


class SystemMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def bytes_ckpt(tmp_path) -> tuple[Path, Path]:
    """A DCP folder (written by DCP itself) with a non-tensor item that runs code if unpickled."""
    marker = tmp_path / "pwned"
    state = {"w": torch.ones(2), "step": 7, "cfg": {"lr": 0.5}, "evil": SystemMarker(marker)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=tmp_path / "c", no_dist=True)
    return tmp_path / "c", marker


def test_safe_reader_loads_non_tensor_items_weights_only(bytes_ckpt):
    """DCP's planner unpickles non-tensor items with weights_only=False: not through us."""
    folder, marker = bytes_ckpt
    state = {"w": torch.empty(2), "step": 0, "cfg": {"lr": 0.0}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, storage_reader=_dcp.SafeFileSystemReader(folder), no_dist=True)
    assert state["step"] == 7 and state["cfg"] == {"lr": 0.5}
    assert torch.equal(state["w"], torch.ones(2))
    evil = {"evil": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BaseException, match=r"(?i)weights.only|Unsupported global"):
            dcp.load(evil, storage_reader=_dcp.SafeFileSystemReader(folder), no_dist=True)
    assert not marker.exists()


def test_plain_dcp_reader_does_run_the_payload(bytes_ckpt):
    """The payload above is live: DCP's own reader runs it (so the check above can fail)."""
    folder, marker = bytes_ckpt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load({"evil": None}, storage_reader=dcp.FileSystemReader(folder), no_dist=True)
    assert marker.exists()


# ---------------------------------------------- the class of "one clear line": the sidecar


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        pytest.param({"entries": {"a": {"role": "evil"}, "b": {}, "c": {}}}, "role", id="role"),
        pytest.param({"entries": {"a": {"tags": 5}, "b": {}, "c": {}}}, "tags", id="tags-int"),
        pytest.param({"entries": {"a": {"tags": [[1]]}, "b": {}, "c": {}}}, "tags", id="tags-nest"),
        pytest.param({"entries": {"a": {"extra": [1]}, "b": {}, "c": {}}}, "extra", id="extra"),
        pytest.param({"entries": {"a": {"extra": "xy"}, "b": {}, "c": {}}}, "extra", id="extra-s"),
        pytest.param(
            {"entries": {"a": {"trainable": "no"}, "b": {}, "c": {}}}, "trainable", id="trainable"
        ),
        pytest.param({"aliases": {"c": "b", "b": "a"}}, "alias", id="alias-chain"),
        pytest.param({"aliases": {"a": "b", "b": "a"}}, "alias", id="alias-cycle"),
        pytest.param({"aliases": {"a": "a"}}, "alias", id="alias-self"),
        pytest.param({"aliases": {"a": 3}}, "alias", id="alias-int"),
        pytest.param({"aliases": {"zz": "a"}}, "'zz'", id="alias-unknown"),
        pytest.param({"metadata": {"k": [1, 2]}}, "'k'", id="metadata"),
    ],
)
def test_malformed_sidecar_is_one_clear_error(tmp_path, patch, fragment):
    import json

    folder = tmp_path / "c"
    _dcp.save_dcp({"a": torch.ones(2), "b": torch.ones(2), "c": torch.ones(2)}, folder)
    side = json.loads((folder / "paramscope.json").read_text())
    (folder / "paramscope.json").write_text(json.dumps({**side, **patch}))
    for fn in (
        lambda: _dcp.read_dcp_manifest(folder),
        lambda: _dcp.load_dcp(folder),
        lambda: list(_dcp.iter_dcp_tensors(folder)),
    ):
        raises_exactly(FormatError, fn, "paramscope.json", fragment)
