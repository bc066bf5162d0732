"""Property-based fuzzing of DCP input shapes (issue 12): opcodes on what the unpickler hands
out, chunk tilings, huge sizes.

Bounded and reproducible (``derandomize=True``, a fixed example budget). Whatever the input,
only a ``ParamscopeError`` escapes, no object of the process changes, a tiling is accepted
exactly when a brute-force count says every element is covered once, and nothing is allocated
for a size the chunk files cannot hold.
"""

from __future__ import annotations

import collections
import io
import pathlib
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint import filesystem as dcp_fs
from torch.distributed.checkpoint import metadata as dcp_md

from _helpers import _g, _i, _s, restore, snapshot
from paramscope import FormatError, ParamscopeError, UnsafePickleError
from paramscope.io import _dcp

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MD = "torch.distributed.checkpoint.metadata"


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="paramscope-fuzz-dcp-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


#: Objects a ``.metadata`` could once reach and change for the whole process.
TARGETS: list[object] = [
    pathlib.PurePath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    pathlib.Path,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    *(getattr(dcp_md, n) for n in dir(dcp_md) if isinstance(getattr(dcp_md, n), type)),
    *dcp_md._MEM_FORMAT_ENCODING,
    dcp_fs._StorageInfo,
    torch.serialization._get_layout,
    collections.OrderedDict,
    torch.Size,
]


def outcome(fn: Callable[[], object]) -> Exception | None:
    """``None`` if ``fn`` succeeds, its error if a ParamscopeError; anything else fails."""
    try:
        fn()
    except Exception as exc:  # the point: nothing but ParamscopeError
        assert isinstance(exc, ParamscopeError), f"{type(exc).__name__} escaped: {exc!r:.300}"
        return exc
    return None


# ------------------------------------------------------------------- opcodes on objects


GLOBALS = sorted(_dcp.ALLOWED_GLOBALS)
#: Plausible calls of the allowed constructors (fresh values, enum members, layouts).
CALLS = [
    _g(MD, "_MEM_FORMAT_ENCODING") + _i(0) + b"\x85R",
    _g(MD, "_MEM_FORMAT_ENCODING") + _i(2) + b"\x85R",
    _g("torch.serialization", "_get_layout") + _s("torch.strided") + b"\x85R",
    _g("torch", "Size") + _i(3) + b"\x85\x85R",
    _g("pathlib", "PosixPath") + _s("/") + _s("x") + b"\x86R",
    _g("collections", "OrderedDict") + b")R",
    _g("builtins", "set") + b")R",
    _g(MD, "StorageMeta") + b")\x81",
    _g(MD, "MetadataIndex") + b")\x81",
    _g("torch.distributed.checkpoint.filesystem", "_StorageInfo") + b")\x81",
]
NAMES = ["_str", "_value_", "_name_", "cache", "__getstate__", "__class__", "fqn", "modules", "x"]
VALUES = [
    _i(1),
    _s("/evil"),
    b"N",
    b"]",
    b"}",
    _g("torch", "float32"),
    _g("pathlib", "PurePosixPath"),
]


@st.composite
def object_ops(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Opcodes that get an object and touch it; whether the object is a global itself."""
    direct = draw(st.booleans())
    if direct:
        module, name = draw(st.sampled_from(GLOBALS))
        obj = _g(module, name)
    else:
        obj = draw(st.sampled_from(CALLS))
    if draw(st.booleans()):  # through the memo, as a shared reference
        obj += b"q\x07" + b"0" + b"h\x07"
    items = draw(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=3))
    pairs = b"".join(_s(k) + v for k, v in items)
    op = draw(
        st.sampled_from(
            [
                "build-dict",
                "build-slots",
                "build-tuple",
                "appends",
                "setitems",
                "additems",
                "append",
                "setitem",
            ]
        )
    )
    tail = {
        "build-dict": b"}(" + pairs + b"ub",
        "build-slots": b"N}(" + pairs + b"u\x86b",
        "build-tuple": b"(" + pairs + b"tb",
        "appends": b"(" + pairs + b"e",
        "setitems": b"(" + pairs + b"u",
        "additems": b"(" + pairs + b"\x90",
        "append": _i(1) + b"a",
        "setitem": _s("k") + _i(1) + b"s",
    }[op]
    return obj + tail, direct and op.startswith("build")


@pytest.fixture(scope="module")
def dcp_folder(work) -> tuple[Path, bytes]:
    folder = work / "ops"
    _dcp.save_dcp({"w": torch.ones(2, 2)}, folder)
    return folder, (folder / ".metadata").read_bytes()


@FUZZ
@given(case=object_ops())
def test_opcodes_on_what_the_unpickler_hands_out(dcp_folder, work, case):
    """BUILD / APPEND(S) / SETITEM(S) / ADDITEMS on every allowed global or constructed value."""
    folder, original = dcp_folder
    attack, on_a_global = case
    snap = snapshot(TARGETS)
    try:
        (folder / ".metadata").write_bytes(b"\x80\x04" + attack + b"0" + original[2:])
        err = outcome(lambda: _dcp.read_dcp_metadata(folder))
        if on_a_global:
            assert type(err) is UnsafePickleError, err
    finally:
        (folder / ".metadata").write_bytes(original)
        changed = restore(snap)
    assert not changed, f"the .metadata changed the process: {changed}"
    assert str(Path("x")) == "x"


# --------------------------------------------------------------------------- tilings

Box = tuple[tuple[int, ...], tuple[int, ...]]


def oracle(shape: tuple[int, ...], boxes: list[Box]) -> bool:
    """Brute force: the boxes are of the tensor's rank, in bounds, and cover each element once."""
    count = np.zeros(shape, dtype=np.int64)
    for offsets, sizes in boxes:
        if len(offsets) != len(shape) or len(sizes) != len(shape):
            return False
        if any(o < 0 or s < 0 or o + s > n for o, s, n in zip(offsets, sizes, shape, strict=True)):
            return False
        count[tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))] += 1
    return bool((count == 1).all())


def metadata_for(shape: tuple[int, ...], boxes: list[Box], dtype=torch.float32) -> bytes:
    """A ``.metadata`` (pickled by plain pickle) with one storage entry per chunk offset."""
    chunks = [
        dcp_md.ChunkStorageMetadata(offsets=torch.Size(o), sizes=torch.Size(s)) for o, s in boxes
    ]
    storage = {
        dcp_md.MetadataIndex("w", torch.Size(o), i): dcp_fs._StorageInfo("__0_0.distcp", 0, 2**40)
        for i, (o, _) in enumerate(boxes)
    }
    md = dcp_md.Metadata(
        state_dict_metadata={
            "w": dcp_md.TensorStorageMetadata(
                dcp_md.TensorProperties(dtype=dtype), torch.Size(shape), chunks
            )
        },
        storage_data=storage,
    )
    return pickle.dumps(md)


@st.composite
def tilings(draw: st.DrawFn) -> tuple[tuple[int, ...], list[Box]]:
    """A shape of rank 0-3 and 0-6 chunks, mostly near the bounds (and sometimes past them)."""
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=rank, max_size=rank)))
    boxes = []
    for _ in range(draw(st.integers(0, 6))):
        r = rank if draw(st.integers(0, 9)) else draw(st.integers(0, 4))  # sometimes wrong rank
        boxes.append(
            (
                tuple(draw(st.lists(st.integers(-1, 5), min_size=r, max_size=r))),
                tuple(draw(st.lists(st.integers(-1, 5), min_size=r, max_size=r))),
            )
        )
    return shape, boxes


@st.composite
def guillotine(draw: st.DrawFn) -> tuple[tuple[int, ...], list[Box]]:
    """An exact tiling: a shape cut recursively along random dimensions, in random order."""
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    todo: list[Box] = [((0,) * rank, shape)]
    done: list[Box] = []
    while todo:
        offsets, sizes = todo.pop()
        cuttable = [k for k in range(rank) if sizes[k] > 1]
        if not cuttable or len(done) + len(todo) > 8 or not draw(st.booleans()):
            done.append((offsets, sizes))
            continue
        k = draw(st.sampled_from(cuttable))
        at = draw(st.integers(1, sizes[k] - 1))
        lo = (offsets, (*sizes[:k], at, *sizes[k + 1 :]))
        hi = (
            (*offsets[:k], offsets[k] + at, *offsets[k + 1 :]),
            (*sizes[:k], sizes[k] - at, *sizes[k + 1 :]),
        )
        todo += [lo, hi]
    return shape, draw(st.permutations(done))


@FUZZ
@given(case=st.one_of(tilings(), guillotine()))
def test_tiling_check_matches_brute_force(work, case):
    shape, boxes = case
    folder = work / "tiling"
    folder.mkdir(exist_ok=True)
    (folder / ".metadata").write_bytes(metadata_for(shape, boxes))
    err = outcome(lambda: _dcp.read_dcp_metadata(folder))
    if oracle(shape, boxes):
        assert err is None, f"{shape} {boxes}: refused an exact tiling: {err}"
    else:
        assert type(err) is FormatError, f"{shape} {boxes}: accepted: {err}"
        assert "'w'" in str(err)


def write_tiled(folder: Path, full: torch.Tensor, boxes: list[Box]) -> None:
    """A DCP folder laid out as FileSystemWriter does: one torch.save blob per chunk."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    blob = io.BytesIO()
    storage, chunks = {}, []
    for i, (offsets, sizes) in enumerate(boxes):
        part = full[tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))].clone()
        start = blob.tell()
        torch.save(part, blob)
        storage[dcp_md.MetadataIndex("w", torch.Size(offsets), i)] = dcp_fs._StorageInfo(
            "__0_0.distcp", start, blob.tell() - start
        )
        chunks.append(
            dcp_md.ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes))
        )
    md = dcp_md.Metadata(
        state_dict_metadata={
            "w": dcp_md.TensorStorageMetadata(
                dcp_md.TensorProperties(dtype=full.dtype), full.shape, chunks
            )
        },
        storage_data=storage,
    )
    (folder / "__0_0.distcp").write_bytes(blob.getvalue())
    (folder / ".metadata").write_bytes(pickle.dumps(md))


@FUZZ
@given(case=guillotine(), data=st.data())
def test_exact_tilings_load_bitwise_and_broken_ones_never_load(work, case, data):
    shape, boxes = case
    full = torch.arange(max(1, int(np.prod(shape))), dtype=torch.int32)[: int(np.prod(shape))]
    full = full.reshape(shape)
    folder = work / "tiled"
    write_tiled(folder, full, boxes)
    assert torch.equal(_dcp.load_dcp(folder)["w"], full)
    assert torch.equal(dict(_dcp.iter_dcp_tensors(folder))["w"], full)
    if not shape:
        return
    # one chunk moved or resized by one element: a gap, an overlap or out of bounds
    i = data.draw(st.integers(0, len(boxes) - 1))
    k = data.draw(st.integers(0, len(shape) - 1))
    which = data.draw(st.sampled_from(["offset", "size"]))
    delta = data.draw(st.sampled_from([-1, 1]))
    offsets, sizes = map(list, boxes[i])
    (offsets if which == "offset" else sizes)[k] += delta
    broken = [*boxes[:i], (tuple(offsets), tuple(sizes)), *boxes[i + 1 :]]
    if oracle(shape, broken):
        return
    (folder / ".metadata").write_bytes(metadata_for(shape, broken, dtype=torch.int32))
    for fn in (lambda: _dcp.load_dcp(folder), lambda: list(_dcp.iter_dcp_tensors(folder))):
        assert type(outcome(fn)) is FormatError


# ------------------------------------------------------------------------- huge sizes


def _boom(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"allocated {args} before the sizes were checked")


@FUZZ
@given(
    dims=st.lists(st.integers(1, 2**40), min_size=1, max_size=3),
    length=st.one_of(st.integers(0, 2**12), st.integers(2**12, 2**62)),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.int64, torch.bool]),
)
def test_huge_sizes_fail_before_allocating(work, dims, length, dtype):
    shape = tuple(dims)
    folder = work / "huge"
    folder.mkdir(exist_ok=True)
    (folder / "__0_0.distcp").write_bytes(b"\0" * 4096)
    md = pickle.loads(metadata_for(shape, [((0,) * len(shape), shape)], dtype=dtype))
    for info in md.storage_data.values():
        info.length = length
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need <= 4096 and length <= 4096:
        return  # small enough to be real: allocating it is fine
    with mock.patch.object(torch, "empty", _boom), mock.patch.object(torch, "zeros", _boom):
        meta = outcome(lambda: _dcp.read_dcp_manifest(folder))
        if need > length:
            assert type(meta) is FormatError and "needs" in str(meta), meta
        for fn in (lambda: _dcp.load_dcp(folder), lambda: list(_dcp.iter_dcp_tensors(folder))):
            assert type(outcome(fn)) is FormatError


def test_corner_budget_refuses_instead_of_spinning(work):
    """An exact staircase tiling split along 24 dimensions: a clear refusal, quickly.

    Chunk ``k`` is the upper half along dimension ``k`` of what chunks ``0..k-1`` left; with
    the last unit cell they tile ``(2,) * 24`` exactly, but checking them would take
    ``25 * 2**24`` corner updates, past the budget.
    """
    rank = 24
    shape = (2,) * rank
    boxes: list[Box] = [
        (
            tuple(1 if j == k else 0 for j in range(rank)),
            tuple(1 if j <= k else 2 for j in range(rank)),
        )
        for k in range(rank)
    ]
    boxes.append(((0,) * rank, (1,) * rank))
    assert sum(int(np.prod(s)) for _, s in boxes) == 2**rank
    folder = work / "budget"
    folder.mkdir(exist_ok=True)
    (folder / ".metadata").write_bytes(metadata_for(shape, boxes))
    err = outcome(lambda: _dcp.read_dcp_metadata(folder))
    assert type(err) is FormatError and "'w'" in str(err) and "more than" in str(err)
