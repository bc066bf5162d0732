"""A DCP ``Metadata``'s fields and chunk layout, checked before anything uses them.

:func:`check_metadata` checks every field DCP or paramscope will use and names the entry at
fault; from ``.metadata`` alone it checks that each tensor's chunks tile its global size
exactly (no gap, no overlap, nothing out of bounds, the tensor's rank) and fit in the bytes
``storage_data`` gives them. :func:`check_chunk_files` checks those byte ranges against the
chunk files on disk (inside the folder, within each file, not overlapping, not transformed),
so a loader never allocates more than the files hold and never hands back memory no chunk
filled.
"""

from __future__ import annotations

import itertools
import math
import ntpath
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import filesystem as _fs
from torch.distributed.checkpoint import metadata as _md

from .._errors import FormatError
from ._dcp_pickle import describe

__all__ = ["check_chunk_files", "check_metadata"]

#: Corner updates the tiling check may spend on one tensor (chunks × 2**split dimensions).
_CORNER_BUDGET = 1 << 21


_MISSING = object()


def _get(path: str, where: str, obj: Any, name: str, *types: type) -> Any:
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        raise FormatError(path, f"{where}: {name}: missing")
    if type(value) not in types:
        want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
        raise FormatError(path, f"{where}: {name}: expected {want}, found {describe(value)}")
    return value


def _dims(path: str, where: str, value: torch.Size, rank: int | None = None) -> tuple[int, ...]:
    dims = tuple(value)
    if rank is not None and len(dims) != rank:
        raise FormatError(path, f"{where}: expected {rank} dimensions, found {len(dims)}")
    if any(d < 0 for d in dims):
        raise FormatError(path, f"{where}: negative size {dims}")
    return dims


def _check_storage_info(path: str, key: Any, info: Any) -> None:
    where = f"storage_data[{key.fqn!r:.80}]"
    if type(info) is not _fs._StorageInfo:
        raise FormatError(path, f"{where}: expected a _StorageInfo, found {describe(info)}")
    rel = _get(path, where, info, "relative_path", str)
    for name in ("offset", "length"):
        if _get(path, where, info, name, int) < 0:
            raise FormatError(path, f"{where}: {name}: expected >= 0, found {getattr(info, name)}")
    td = _get(path, where, info, "transform_descriptors", type(None), list, tuple)
    if td is not None and not all(type(t) is str for t in td):
        raise FormatError(path, f"{where}: transform_descriptors: expected strings")
    bad = not rel or "\0" in rel or os.path.isabs(rel) or ntpath.isabs(rel)
    if bad or ".." in Path(rel).parts or ".." in ntpath.normpath(rel).split("\\"):
        raise FormatError(path, f"chunk file {rel!r:.200} is outside the checkpoint folder")


def _check_tensor(
    path: str, fqn: str, item: Any, storage: dict[tuple[str, Any], Any] | None
) -> None:
    where = f"entry {fqn!r:.200}"
    props = _get(path, where, item, "properties", _md.TensorProperties)
    dtype = _get(path, where, props, "dtype", torch.dtype)
    _get(path, where, props, "layout", torch.layout)
    _get(path, where, props, "memory_format", torch.memory_format)
    _get(path, where, props, "requires_grad", bool)
    _get(path, where, props, "pin_memory", bool)
    shape = _dims(path, where, _get(path, where, item, "size", torch.Size))
    chunks = _get(path, where, item, "chunks", list)
    boxes = []
    for i, chunk in enumerate(chunks):
        at = f"{where}: chunk {i}"
        if type(chunk) is not _md.ChunkStorageMetadata:
            raise FormatError(path, f"{at}: expected ChunkStorageMetadata, found {describe(chunk)}")
        offsets = _dims(
            path, f"{at} offsets", _get(path, at, chunk, "offsets", torch.Size), len(shape)
        )
        sizes = _dims(path, f"{at} sizes", _get(path, at, chunk, "sizes", torch.Size), len(shape))
        if any(o + s > n for o, s, n in zip(offsets, sizes, shape, strict=True)):
            raise FormatError(
                path,
                f"{at}: offsets {offsets} + sizes {sizes} reach outside the tensor's size {shape}",
            )
        boxes.append((offsets, sizes))
        volume = math.prod(sizes)
        if not volume:
            continue  # an empty chunk holds nothing to read
        info = None if storage is None else storage.get((fqn, offsets))
        if info is None:
            raise FormatError(path, f"{at} at offsets {offsets}: no storage_data entry for it")
        need = volume * dtype.itemsize
        if not info.transform_descriptors and need > info.length:
            raise FormatError(
                path,
                f"{at}: {sizes} {dtype} needs {need} bytes, its storage entry in "
                f"{info.relative_path!r:.200} holds {info.length}",
            )
    problem = _tiling_problem(shape, boxes)
    if problem is not None:
        raise FormatError(path, f"{where}: its chunks do not tile its size {shape}: {problem}")


def _tiling_problem(
    shape: tuple[int, ...], boxes: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> str | None:
    """Why in-bounds ``(offsets, sizes)`` boxes do not cover ``shape`` exactly once, or ``None``.

    Exact: the boxes' indicator functions sum to the tensor's iff their signed corners (each
    box's ``2**d`` corners, ``-1`` per upper coordinate) sum to the tensor's, because a
    box's indicator is the d-fold prefix sum of its signed corners. Dimensions every chunk
    spans fully are left out; empty chunks have no corners.

    Args:
        shape: the tensor's global size.
        boxes: the chunks' offsets and sizes, all of ``len(shape)`` dimensions, in bounds.

    Returns:
        A short description of the gap or overlap, or ``None`` for an exact tiling.
    """
    total = math.prod(shape)
    covered = sum(math.prod(s) for _, s in boxes)
    if covered < total:
        return f"they cover {covered} of its {total} elements (a gap)"
    if covered > total:
        return f"they cover {covered} elements, it has {total} (an overlap)"
    if not total:
        return None  # an empty tensor: every in-bounds chunk is empty too
    full = sorted(b for b in boxes if all(b[1]))
    split = [k for k in range(len(shape)) if any(o[k] or s[k] != shape[k] for o, s in full)]
    if len(full) << len(split) > _CORNER_BUDGET:
        return (
            f"{len(full)} chunks split along {len(split)} dimensions are more than paramscope "
            "checks (a real DCP checkpoint shards a tensor along a few dimensions)"
        )
    corners: dict[tuple[int, ...], int] = {}

    def add(lo: tuple[int, ...], hi: tuple[int, ...], sign: int) -> None:
        for ups in itertools.product((0, 1), repeat=len(split)):
            corner = tuple(hi[k] if up else lo[k] for k, up in zip(split, ups, strict=True))
            count = corners.get(corner, 0) + (-sign if sum(ups) % 2 else sign)
            if count:
                corners[corner] = count
            else:
                del corners[corner]

    for o, s in full:
        add(o, tuple(a + b for a, b in zip(o, s, strict=True)), 1)
    add((0,) * len(shape), shape, -1)
    if corners:
        return "they overlap, and leave a gap of the same size"
    return None


def check_metadata(md: Any, path: str) -> Any:
    """Check every field of an unpickled DCP ``Metadata`` DCP or paramscope will use.

    Tensor items: properties of the right types, a non-negative ``torch.Size``, chunks of the
    tensor's rank that lie inside it and tile it exactly (no gap, no overlap), each non-empty
    chunk with a ``storage_data`` entry large enough for its bytes. ``storage_data``:
    ``MetadataIndex`` → ``_StorageInfo`` with a relative path inside the folder and
    non-negative offset and length. ``storage_meta`` and ``version``: their documented types.

    Args:
        md: what :func:`._dcp_pickle.unpickle` returned.
        path: the ``.metadata`` file, for messages.

    Returns:
        ``md``, checked.

    Raises:
        FormatError: naming the entry, what was expected and what was found.

    Example:
        >>> import tempfile
        >>> from paramscope.io._dcp import save_dcp
        >>> from paramscope.io._dcp_pickle import unpickle
        >>> folder = save_dcp({"w": torch.ones(2, 3)}, f"{tempfile.mkdtemp()}/ckpt")
        >>> name = str(folder / ".metadata")
        >>> with open(name, "rb") as f:
        ...     md = check_metadata(unpickle(f, name), name)
        >>> md.state_dict_metadata["w"].size
        torch.Size([2, 3])
        >>> md.state_dict_metadata["w"].size = torch.Size([2, 4])  # one chunk of 2×3 in it
        >>> check_metadata(md, name)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.FormatError: ...: entry 'w': its chunks do not tile its size (2, 4): ...
    """
    if type(md) is not _md.Metadata:
        raise FormatError(
            path, f"expected a DCP Metadata object, found {describe(md)} in the pickle"
        )
    where = "Metadata"
    items = _get(path, where, md, "state_dict_metadata", dict, OrderedDict)
    raw = _get(path, where, md, "storage_data", type(None), dict, OrderedDict)
    storage: dict[tuple[str, Any], Any] | None = None
    if raw is not None:
        storage = {}
        for key, info in raw.items():
            if type(key) is not _md.MetadataIndex:
                raise FormatError(
                    path, f"storage_data: expected MetadataIndex keys, found {describe(key)}"
                )
            _check_storage_info(path, key, info)
            offset = None if key.offset is None else tuple(key.offset)
            storage[(key.fqn, offset)] = info
    for fqn, item in items.items():
        if type(fqn) is not str:
            raise FormatError(
                path, f"state_dict_metadata: expected str keys, found {describe(fqn)}"
            )
        if type(item) is _md.TensorStorageMetadata:
            _check_tensor(path, fqn, item, storage)
        elif type(item) is not _md.BytesStorageMetadata:
            raise FormatError(
                path,
                f"entry {fqn!r:.200}: expected TensorStorageMetadata or BytesStorageMetadata, "
                f"found {describe(item)}",
            )
    meta = _get(path, where, md, "storage_meta", type(None), _md.StorageMeta)
    if meta is not None:
        for name in ("checkpoint_id", "save_id", "load_id"):
            _get(path, "storage_meta", meta, name, type(None), str)
        modules = _get(path, "storage_meta", meta, "modules", list)
        if not all(type(m) is str for m in modules):
            raise FormatError(path, "storage_meta: modules: expected a list of str")
    _get(path, where, md, "version", type(None), str)
    return md


# --------------------------------------------------------------------------- chunk files


def _spans(md: Any) -> Iterator[tuple[str, int, int, str, Any]]:
    """``(relative_path, start, end, fqn, info)`` of every non-empty tensor chunk's bytes."""
    storage = {
        (k.fqn, None if k.offset is None else tuple(k.offset)): v
        for k, v in (md.storage_data or {}).items()
    }
    for fqn, item in md.state_dict_metadata.items():
        if type(item) is not _md.TensorStorageMetadata:
            continue
        for chunk in item.chunks:
            if all(chunk.sizes):
                info = storage[(fqn, tuple(chunk.offsets))]
                yield info.relative_path, info.offset, info.offset + info.length, fqn, info


def check_chunk_files(folder: str | os.PathLike[str], md: Any) -> None:
    """Check the chunk files against a checked ``Metadata``, before anything is allocated.

    Every non-empty tensor chunk's bytes must lie in a regular file inside ``folder`` and
    within its size, no two chunks' bytes may overlap, and no chunk may be transformed
    (compressed): together with :func:`check_metadata` this bounds what a load allocates by
    the bytes on disk.

    Args:
        folder: the checkpoint folder.
        md: the ``Metadata``, checked by :func:`check_metadata`.

    Raises:
        FormatError: naming the chunk file and the entry.

    Example:
        >>> import os, tempfile
        >>> from paramscope.io._dcp import read_dcp_metadata, save_dcp
        >>> folder = save_dcp({"w": torch.ones(2, 3)}, f"{tempfile.mkdtemp()}/ckpt")
        >>> md = read_dcp_metadata(folder)
        >>> check_chunk_files(folder, md)  # fine: nothing to say
        >>> os.truncate(folder / "__0_0.distcp", 10)
        >>> check_chunk_files(folder, md)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.FormatError: ...__0_0.distcp: ... which holds 10 bytes (truncated?)
    """
    folder = Path(folder)
    root = folder.resolve()
    per_file: dict[str, list[tuple[int, int, str]]] = {}
    for rel, start, end, fqn, info in _spans(md):
        if info.transform_descriptors:
            raise FormatError(
                folder / rel,
                f"entry {fqn!r:.200}: transformed chunk ({', '.join(info.transform_descriptors)}"
                "): paramscope reads plain DCP chunks only (it cannot bound a transformed "
                "chunk's size before reading it)",
            )
        per_file.setdefault(rel, []).append((start, end, fqn))
    for rel, spans in per_file.items():
        file = folder / rel
        try:
            st = os.stat(file)
            real = file.resolve()
        except OSError as exc:
            raise FormatError(
                file, f"DCP load failed: chunk file of entry {spans[0][2]!r:.200}: {exc.strerror}"
            ) from None
        if not real.is_relative_to(root):
            raise FormatError(file, f"chunk file {rel!r} resolves outside the checkpoint folder")
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(file, "DCP load failed: expected a regular chunk file")
        spans.sort()
        for start, end, fqn in spans:
            if end > st.st_size:
                raise FormatError(
                    file,
                    f"DCP load failed: entry {fqn!r:.200} has bytes {start}..{end} in this "
                    f"chunk file, which holds {st.st_size} bytes (truncated?)",
                )
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                raise FormatError(
                    file,
                    f"DCP load failed: entries {a!r:.200} and {b!r:.200} claim the same bytes "
                    f"({start}..{end}) of this chunk file",
                )
