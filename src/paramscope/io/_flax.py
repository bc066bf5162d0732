"""Flax msgpack files (``flax.serialization.to_bytes``) and Orbax checkpoint folders.

**Flax msgpack.** ``to_bytes(params)`` is one msgpack value: the state dict (maps of maps;
lists become maps keyed ``"0"``, ``"1"`` …) whose arrays are msgpack *ext* values of type 1
(type 3 for numpy scalars), each holding a nested msgpack array ``(shape, dtype name,
buffer)``; the buffer is the array's row-major bytes (``arr.tobytes("C")``, native order:
little-endian on every machine flax runs on). Arrays over 1 GiB are split by flax into a map
``{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}`` of flat chunks.

The parser here reads msgpack itself, through positioned reads of a
:class:`~._source.ByteSource` (no jax, flax or msgpack import, and msgpack carries no
code): every length is checked against the bytes left before anything is read, nesting is
bounded (:data:`MAX_DEPTH`), and array buffers are not read at all, only located, so an
unchunked array is an entry with a :class:`~paramscope._manifest.Location` and the file
streams tensor by tensor (``convert``, ``verify --values``). Names are the dotted paths of
the nested maps. Leaves that are not arrays (Python numbers, strings, complex scalars) are
left out and counted in a note.

**Orbax.** A checkpoint folder (``StandardCheckpointer`` / ``PyTreeCheckpointer``, or a
``CheckpointManager`` step holding item folders) keeps the tree in ``_METADATA`` (JSON: each
leaf's key path and value type) and each array's zarr metadata (``.zarray``, or
``zarr.json`` for zarr3: shape and dtype) next to its chunks: as files ``<name>/.zarray``
without OCDBT, or as keys of the OCDBT key-value store (orbax's default), read through
``tensorstore`` (its kvstore only: the metadata keys, no array chunk, no jax). Chunks are
compressed (zstd), so entries have no location and values are restored through orbax
(:func:`load_orbax`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._enums import Format, RoleSource
from .._errors import FormatError, UnsupportedDTypeError
from .._manifest import Entry, Location, Manifest
from .._pytree import role_of
from ._source import ByteSource, Cursor, opened

if TYPE_CHECKING:
    import torch

__all__ = ["load_msgpack", "load_orbax", "read_msgpack_manifest", "read_orbax_manifest"]

#: Maps and arrays nest at most this deep (a parameter tree is a few levels).
MAX_DEPTH = 64
#: Longest map key accepted.
MAX_KEY = 1 << 16
_CHUNK = 1 << 16
_CHUNKED = "__msgpack_chunked_array__"
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3

#: numpy / ml_dtypes dtype names (what flax writes, and zarr3 ``data_type``) → DType.
DTYPE_NAMES: dict[str, DType] = {
    "bool": DType.BOOL,
    "int8": DType.I8,
    "uint8": DType.U8,
    "int16": DType.I16,
    "uint16": DType.U16,
    "int32": DType.I32,
    "uint32": DType.U32,
    "int64": DType.I64,
    "uint64": DType.U64,
    "float16": DType.F16,
    "bfloat16": DType.BF16,
    "float32": DType.F32,
    "float64": DType.F64,
    "complex64": DType.C64,
    "float8_e4m3fn": DType.F8_E4M3,
    "float8_e5m2": DType.F8_E5M2,
    "float8_e4m3fnuz": DType.F8_E4M3FNUZ,
    "float8_e5m2fnuz": DType.F8_E5M2FNUZ,
    "float8_e8m0fnu": DType.F8_E8M0,
}


def _dtype(where: str, name: str) -> DType:
    if name in DTYPE_NAMES:
        return DTYPE_NAMES[name]
    if name[:1] in "<|":  # a numpy type string (zarr2 ``dtype``)
        try:
            return DType.from_numpy(name)
        except UnsupportedDTypeError:
            pass
    raise UnsupportedDTypeError(
        f"{where}: dtype {name!r:.40}: expected one of {', '.join(DTYPE_NAMES)}"
    )


# ------------------------------------------------------------------ msgpack, bounded


class _Cursor(Cursor):
    """:class:`~paramscope.io._source.Cursor` over a msgpack file (64 KiB local chunks, 16 KiB
    remote ones), with msgpack's big-endian integers."""

    def __init__(self, src: ByteSource, path: str) -> None:
        super().__init__(src, path, local_chunk=_CHUNK)

    def left(self) -> int:
        return self.size - self.pos

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")


# Leaf kinds the walker produces
@dataclass
class _Array:
    """An ndarray ext value: shape, dtype name and where its buffer lies."""

    shape: tuple[int, ...]
    dtype: DType
    dtype_name: str
    offset: int
    nbytes: int


@dataclass
class _Leaf:
    """One named array of a msgpack file: one piece, or several (flax's chunked form)."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    pieces: list[tuple[int, int]] = field(default_factory=list)


_SKIPPED = object()  # a leaf that is not an array


class _Msgpack:
    """A walker over a flax msgpack file: maps become names, ext arrays become leaves."""

    def __init__(self, src: ByteSource, path: str) -> None:
        self.c = _Cursor(src, path)
        self.path = path
        self.leaves: list[_Leaf] = []
        self.skipped = 0

    # -------------------------------------------------------------- headers
    def _header(self, what: str) -> tuple[str, int]:
        """The next value's kind and its count / length / immediate value."""
        c = self.c
        b = c.take(1, what)[0]
        if b <= 0x7F:
            return "int", b
        if b >= 0xE0:
            return "int", b - 0x100
        if 0x80 <= b <= 0x8F:
            return "map", b & 0x0F
        if 0x90 <= b <= 0x9F:
            return "array", b & 0x0F
        if 0xA0 <= b <= 0xBF:
            return "str", b & 0x1F
        if b == 0xC0:
            return "nil", 0
        if b in (0xC2, 0xC3):
            return "bool", b - 0xC2
        if b in (0xC4, 0xC5, 0xC6):
            return "bin", c.uint(1 << (b - 0xC4), what)
        if b in (0xC7, 0xC8, 0xC9):
            n = c.uint(1 << (b - 0xC7), what)
            return "ext", n
        if b in (0xCA, 0xCB):
            c.skip(4 if b == 0xCA else 8, what)
            return "float", 0
        if 0xCC <= b <= 0xCF:
            return "int", c.uint(1 << (b - 0xCC), what)
        if 0xD0 <= b <= 0xD3:
            n = 1 << (b - 0xD0)
            return "int", int.from_bytes(c.take(n, what), "big", signed=True)
        if 0xD4 <= b <= 0xD8:
            return "ext", 1 << (b - 0xD4)
        if b in (0xD9, 0xDA, 0xDB):
            return "str", c.uint(1 << (b - 0xD9), what)
        if b in (0xDC, 0xDD):
            return "array", c.uint(2 if b == 0xDC else 4, what)
        if b in (0xDE, 0xDF):
            return "map", c.uint(2 if b == 0xDE else 4, what)
        raise c.fail(f"{what}: byte 0xc1 at offset {c.pos - 1} is no msgpack type")

    def _count(self, kind: str, n: int, per: int, what: str) -> None:
        if n * per > self.c.left():
            raise self.c.fail(
                f"{what}: a {kind} of {n} items at offset {self.c.pos} cannot fit in the "
                f"{self.c.left()} bytes left"
            )

    def _text(self, n: int, what: str) -> str:
        if n > MAX_KEY:
            raise self.c.fail(f"{what}: a {n}-byte string, longer than {MAX_KEY}")
        try:
            return self.c.take(n, what).decode()
        except UnicodeDecodeError:
            raise self.c.fail(f"{what}: a string that is not UTF-8") from None

    # -------------------------------------------------------------- values
    def walk(self) -> None:
        kind, n = self._header("the top-level value")
        if kind != "map":
            raise self.c.fail(
                f"expected a msgpack map (flax.serialization.to_bytes of a state dict) at "
                f"offset 0, found a {kind}"
            )
        self._map(n, (), 1)
        if self.c.pos != self.c.size:
            raise self.c.fail(
                f"the msgpack value ends at offset {self.c.pos}, "
                f"{self.c.size - self.c.pos} bytes before the end of the file"
            )

    def _value(self, kind: str, n: int, path: tuple[str, ...], depth: int) -> Any:
        """Walk one value whose header was read; return an ``_Array`` for an ndarray ext,
        an int / str for keys and chunk shapes, ``_SKIPPED`` for other leaves, a dict for a
        chunked array's map."""
        where = ".".join(path) or "the top-level map"
        if depth > MAX_DEPTH:
            raise self.c.fail(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if kind == "map":
            return self._map(n, path, depth + 1)
        if kind == "array":
            self._count("array", n, 1, where)
            for i in range(n):
                self._child((*path, str(i)), depth + 1)
            return None
        if kind == "ext":
            return self._ext(n, where)
        if kind in ("str", "bin"):  # a string or bytes leaf: not an array, not read
            self.c.skip(n, where)
        if kind in ("int", "bool"):
            return n if kind == "int" else bool(n)
        return _SKIPPED

    def _child(self, path: tuple[str, ...], depth: int) -> None:
        kind, n = self._header(".".join(path))
        got = self._value(kind, n, path, depth)
        self._leaf(path, got)

    def _leaf(self, path: tuple[str, ...], got: Any) -> None:
        if isinstance(got, _Array):
            self.leaves.append(
                _Leaf(".".join(path), got.shape, got.dtype, [(got.offset, got.nbytes)])
            )
        elif isinstance(got, _Leaf):
            got.name = ".".join(path)
            self.leaves.append(got)
        elif got is not None:
            self.skipped += 1

    def _map(self, n: int, path: tuple[str, ...], depth: int) -> Any:
        where = ".".join(path) or "the top-level map"
        self._count("map", n, 2, where)
        keys: set[str] = set()
        chunked: dict[str, Any] = {}
        start = len(self.leaves)
        for _ in range(n):
            kind, kn = self._header(f"{where}: a key")
            if kind == "str":
                key = self._text(kn, f"{where}: a key")
            elif kind == "int":
                key = str(kn)
            else:
                raise self.c.fail(f"{where}: a map key of type {kind}: expected a string or int")
            if key in keys:
                raise self.c.fail(f"{where}: the key {key!r:.80} appears twice")
            keys.add(key)
            if not key or "." in key:
                raise self.c.fail(
                    f"{where}: the key {key!r:.80}: expected a non-empty key without '.'"
                )
            if key == _CHUNKED or (_CHUNKED in keys and key in ("shape", "chunks")):
                chunked[key] = self._raw_value((*path, key), depth)
                continue
            vkind, vn = self._header(f"{where}.{key}")
            got = self._value(vkind, vn, (*path, key), depth)
            if _CHUNKED in keys:
                chunked[key] = got
            else:
                self._leaf((*path, key), got)
        if _CHUNKED in keys:
            del self.leaves[start:]
            return self._unchunk(chunked, where)
        return None

    def _raw_value(self, path: tuple[str, ...], depth: int) -> Any:
        """A small value of a chunked array's map: True, or a map of ints / arrays by index."""
        where = ".".join(path)
        kind, n = self._header(where)
        if kind == "bool":
            return bool(n)
        if kind != "map":
            raise self.c.fail(f"{where}: expected a map in flax's chunked-array form, found {kind}")
        self._count("map", n, 2, where)
        out: dict[str, Any] = {}
        for _ in range(n):
            kk, kn = self._header(f"{where}: a key")
            if kk != "str":
                raise self.c.fail(f"{where}: a key of type {kk}: expected a string")
            key = self._text(kn, f"{where}: a key")
            vk, vn = self._header(f"{where}.{key}")
            if vk == "int":
                out[key] = vn
            elif vk == "ext":
                out[key] = self._ext(vn, f"{where}.{key}")
            else:
                raise self.c.fail(f"{where}.{key}: expected an int or an array, found {vk}")
        return out

    def _unchunk(self, d: dict[str, Any], where: str) -> _Leaf:
        def by_index(v: Any, what: str) -> list[Any]:
            if not isinstance(v, dict) or sorted(v) != sorted(str(i) for i in range(len(v))):
                raise self.c.fail(f"{where}: chunked array: {what} is not a map keyed 0..n-1")
            return [v[str(i)] for i in range(len(v))]

        if set(d) != {_CHUNKED, "shape", "chunks"} or d[_CHUNKED] is not True:
            raise self.c.fail(
                f"{where}: chunked array: expected keys {_CHUNKED}, shape, chunks; "
                f"found {sorted(d)}"
            )
        shape = by_index(d["shape"], "shape")
        if not all(isinstance(x, int) and x >= 0 for x in shape):
            raise self.c.fail(f"{where}: chunked array: shape {shape!r:.80} is not sizes")
        chunks = by_index(d["chunks"], "chunks")
        if not chunks or not all(isinstance(a, _Array) and len(a.shape) == 1 for a in chunks):
            raise self.c.fail(f"{where}: chunked array: chunks are not flat arrays")
        dtypes = {a.dtype for a in chunks}
        total = sum(a.shape[0] for a in chunks)
        if len(dtypes) != 1 or total != math.prod(shape):
            raise self.c.fail(
                f"{where}: chunked array: chunks of {total} elements ({sorted(dtypes)}) for "
                f"shape {tuple(shape)}"
            )
        return _Leaf("", tuple(shape), chunks[0].dtype, [(a.offset, a.nbytes) for a in chunks])

    def _ext(self, n: int, where: str) -> Any:
        c = self.c
        code = int.from_bytes(c.take(1, where), "big", signed=True)
        if n > c.left():
            raise c.fail(f"{where}: an ext value of {n} bytes runs past the end of the file")
        end = c.pos + n
        if code not in (EXT_NDARRAY, EXT_NPSCALAR):
            c.skip(n, where)
            return _SKIPPED  # complex scalars, other extensions: not arrays
        kind, k = self._header(f"{where}: array header")
        if kind != "array" or k != 3:
            raise c.fail(f"{where}: expected an array ext holding (shape, dtype, buffer)")
        kind, ndim = self._header(f"{where}: shape")
        if kind != "array":
            raise c.fail(f"{where}: the shape is a {kind}, expected an array")
        self._count("shape", ndim, 1, where)
        shape = []
        for _ in range(ndim):
            kind, d = self._header(f"{where}: shape")
            if kind != "int" or d < 0:
                raise c.fail(f"{where}: a dimension that is not a size ({kind} {d})")
            shape.append(d)
        kind, k = self._header(f"{where}: dtype")
        if kind not in ("str", "bin"):
            raise c.fail(f"{where}: the dtype is a {kind}, expected a string")
        dname = self._text(k, f"{where}: dtype")
        dtype = _dtype(f"{self.path}: {where}", dname)
        kind, nbytes = self._header(f"{where}: buffer")
        if kind not in ("bin", "str"):
            raise c.fail(f"{where}: the buffer is a {kind}, expected bytes")
        need = dtype.nbytes(math.prod(shape))
        if nbytes != need:
            raise c.fail(
                f"{where}: shape {tuple(shape)} of {dname} needs {need} bytes, the buffer "
                f"holds {nbytes}"
            )
        offset = c.pos
        c.skip(nbytes, where)
        if c.pos != end:
            raise c.fail(f"{where}: the array ext ends at {end}, its contents at {c.pos}")
        return _Array(tuple(shape), dtype, dname, offset, nbytes)


def _parse_msgpack(src: ByteSource, spath: str) -> tuple[list[_Leaf], int]:
    p = _Msgpack(src, spath)
    p.walk()
    return p.leaves, p.skipped


def read_msgpack_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of a ``flax.serialization.to_bytes`` file, from its msgpack structure.

    Args:
        path: the ``.msgpack`` file (local or a URL).

    Returns:
        A :class:`Manifest` (format ``FLAX``, roles inferred); unchunked arrays have a
        location (their raw little-endian bytes).

    Raises:
        FormatError: malformed msgpack, or not a flax state dict.
        UnsupportedDTypeError: an array of a dtype with no safetensors counterpart.

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/params.msgpack"
        >>> inner = b"\\x93\\x91\\x02\\xa7float32\\xc4\\x08" + bytes(8)  # ((2,), float32, 8 bytes)
        >>> raw = b"\\x81\\xa1w\\xc7" + bytes([len(inner), 1]) + inner  # {"w": ext 1}
        >>> with open(path, "wb") as f:
        ...     _ = f.write(raw)
        >>> e = read_msgpack_manifest(path)["w"]
        >>> e.shape, e.dtype.value, e.location.offset, e.location.length
        ((2,), 'F32', 19, 8)
    """
    spath = os.fspath(path)
    with opened(spath) as src:
        leaves, skipped = _parse_msgpack(src, spath)
    entries = []
    for leaf in leaves:
        role = role_of(leaf.name, leaf.dtype, leaf.shape)
        loc = Location(spath, *leaf.pieces[0]) if len(leaf.pieces) == 1 else None
        entries.append(
            Entry(
                leaf.name,
                leaf.shape,
                leaf.dtype,
                role=role,
                trainable=role.value == "param",
                location=loc,
            )
        )
    notes = [f"{skipped} leaves that are not arrays left out"] if skipped else []
    return Manifest(
        entries, format=Format.FLAX, source=spath, roles=RoleSource.INFERRED, notes=notes
    )


def load_msgpack(path: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of a flax msgpack file, read with this module's parser.

    Args:
        path: the file.

    Yields:
        Names (dotted paths) and CPU tensors, in file order.

    Raises:
        FormatError: as :func:`read_msgpack_manifest`.

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/params.msgpack"
        >>> inner = b"\\x93\\x91\\x02\\xa5int32\\xc4\\x08" + bytes([7, 0, 0, 0, 9, 0, 0, 0])
        >>> with open(path, "wb") as f:
        ...     _ = f.write(b"\\x81\\xa1w\\xc7" + bytes([len(inner), 1]) + inner)
        >>> [(n, t.tolist()) for n, t in load_msgpack(path)]
        [('w', [7, 9])]
    """
    import torch

    spath = os.fspath(path)
    with opened(spath) as src:
        leaves, _ = _parse_msgpack(src, spath)
        for leaf in leaves:
            buf = bytearray()
            for off, n in leaf.pieces:
                got = src.read_at(off, n)
                if len(got) != n:
                    raise FormatError(spath, f"{leaf.name}: the file ends inside its data")
                buf += got
            dt = leaf.dtype.to_torch()
            if not buf:
                t = torch.empty(leaf.shape, dtype=dt)
            else:
                t = torch.frombuffer(buf, dtype=dt).reshape(leaf.shape)
            yield leaf.name, t


# ------------------------------------------------------------------ Orbax


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


def _read_json(path: str, what: str) -> Any:
    try:
        with opened(path) as src:
            if src.size > 1 << 30:
                raise FormatError(path, f"{what}: {src.size} bytes, too large for metadata")
            raw = src.read_at(0, src.size)
    except FileNotFoundError:
        raise FormatError(path, f"{what}: the file is missing") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FormatError(path, f"{what}: not JSON ({exc})") from None


def _items(folder: str) -> list[tuple[str, str]]:
    """``(prefix, item folder)`` of an Orbax checkpoint: the folder itself when it holds
    ``_METADATA``, else its item subfolders (``default``, or several named items)."""
    if _exists(_join(folder, "_METADATA")):
        return [("", folder)]
    if "://" not in folder and os.path.isdir(folder):
        subs = sorted(
            d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "_METADATA"))
        )
        if len(subs) == 1:
            return [("", os.path.join(folder, subs[0]))]
        if subs:
            return [(d + ".", os.path.join(folder, d)) for d in subs]
    raise FormatError(
        folder,
        "an Orbax checkpoint without _METADATA (tree metadata), in it or in an item folder: "
        "written by an Orbax older than 0.5, or not a PyTree checkpoint",
    )


def _exists(path: str) -> bool:
    try:
        with opened(path):
            return True
    except (OSError, FormatError):
        return False


def _tree_leaves(meta: Any, mpath: str) -> list[tuple[str, str]]:
    """``(name, value type)`` of each leaf ``_METADATA`` lists, in its order."""
    if not isinstance(meta, dict):
        raise FormatError(mpath, f"expected a JSON object, found {type(meta).__name__}")
    tree = meta.get("tree_metadata", meta)
    if not isinstance(tree, dict):
        raise FormatError(mpath, "tree_metadata: expected a JSON object")
    out = []
    for key, leaf in tree.items():
        if not isinstance(leaf, dict):
            raise FormatError(mpath, f"tree_metadata[{key!r:.80}]: expected an object")
        keys = leaf.get("key_metadata")
        value = leaf.get("value_metadata")
        if not isinstance(keys, list) or not isinstance(value, dict):
            raise FormatError(
                mpath, f"tree_metadata[{key!r:.80}]: expected key_metadata and value_metadata"
            )
        parts = []
        for k in keys:
            if not isinstance(k, dict) or not isinstance(k.get("key"), (str, int)):
                raise FormatError(mpath, f"tree_metadata[{key!r:.80}]: a key without a name")
            parts.append(str(k["key"]))
        if value.get("skip_deserialize"):
            continue
        out.append((".".join(parts), str(value.get("value_type", ""))))
    return out


def _array_type(value_type: str) -> bool:
    return value_type.endswith(("Array", "ndarray"))


def _zarr_meta(item: str, names: list[str], meta: Any, mpath: str) -> list[Any]:
    """The zarr metadata (``.zarray`` or ``zarr.json`` JSON) of each named array."""
    zarr3 = bool(meta.get("use_zarr3")) if isinstance(meta, dict) else False
    ocdbt = bool(meta.get("use_ocdbt", True)) if isinstance(meta, dict) else True
    leaf = "zarr.json" if zarr3 else ".zarray"
    if ocdbt and _exists(_join(item, "manifest.ocdbt")):
        if "://" in item:
            raise FormatError(
                item, "an OCDBT Orbax checkpoint: its metadata is read from a local folder only"
            )
        try:
            import tensorstore as ts
        except ImportError:
            raise FormatError(
                item, "an OCDBT Orbax checkpoint: reading its metadata needs tensorstore"
            ) from None
        try:
            kv = ts.KvStore.open(
                {"driver": "ocdbt", "base": f"file://{os.path.abspath(item)}/"}
            ).result()
            futures = [kv.read(f"{n}/{leaf}") for n in names]
            raws = [f.result() for f in futures]
        except Exception as exc:  # tensorstore raises ValueError / its own errors
            text = " ".join(str(exc).split())[:200]
            raise FormatError(item, f"OCDBT store unreadable: {text}") from None
        out = []
        for n, r in zip(names, raws, strict=True):
            if r.state != "value":
                raise FormatError(item, f"{n}: no {leaf} in the OCDBT store")
            try:
                out.append(json.loads(bytes(r.value)))
            except (ValueError, RecursionError):
                raise FormatError(item, f"{n}/{leaf}: not JSON") from None
        return out
    return [_read_json(_join(item, f"{n}/{leaf}"), f"{n}/{leaf}") for n in names]


def _shape_dtype(where: str, z: Any) -> tuple[tuple[int, ...], DType]:
    if not isinstance(z, dict):
        raise FormatError(where, "zarr metadata: expected a JSON object")
    shape = z.get("shape")
    name = z.get("dtype", z.get("data_type"))
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(where, f"zarr metadata: shape {shape!r:.80} is not a list of sizes")
    if not isinstance(name, str):
        raise FormatError(where, f"zarr metadata: dtype {name!r:.80}: expected a string")
    return tuple(shape), _dtype(where, name)


def read_orbax_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """The manifest of an Orbax checkpoint from its metadata, without jax and no restore.

    Args:
        folder: the checkpoint folder (holding ``_METADATA``), or a ``CheckpointManager``
            step folder whose item folders hold it (names prefixed by the item when there
            are several).

    Returns:
        A :class:`Manifest` (format ``ORBAX``, roles inferred, no locations).

    Raises:
        FormatError: missing or malformed metadata.

    Example:
        >>> import json, os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> keys = [{"key": "dense", "key_type": 2}, {"key": "kernel", "key_type": 2}]
        >>> leaf = {"key_metadata": keys, "value_metadata": {"value_type": "jax.Array"}}
        >>> meta = {"tree_metadata": {"k": leaf}, "use_ocdbt": False, "use_zarr3": False}
        >>> with open(f"{d}/_METADATA", "w") as f:
        ...     json.dump(meta, f)
        >>> os.makedirs(f"{d}/dense.kernel")
        >>> with open(f"{d}/dense.kernel/.zarray", "w") as f:
        ...     json.dump({"shape": [3, 4], "dtype": "<f4"}, f)
        >>> e = read_orbax_manifest(d)["dense.kernel"]
        >>> e.shape, e.dtype.value
        ((3, 4), 'F32')
    """
    spath = os.fspath(folder)
    entries: list[Entry] = []
    skipped = 0
    for prefix, item in _items(spath):
        mpath = _join(item, "_METADATA")
        meta = _read_json(mpath, "Orbax _METADATA")
        leaves = _tree_leaves(meta, mpath)
        arrays = [n for n, vt in leaves if _array_type(vt)]
        skipped += len(leaves) - len(arrays)
        for name, z in zip(arrays, _zarr_meta(item, arrays, meta, mpath), strict=True):
            shape, dtype = _shape_dtype(_join(item, name), z)
            full = prefix + name
            role = role_of(full, dtype, shape)
            entries.append(Entry(full, shape, dtype, role=role, trainable=role.value == "param"))
    notes = [f"{skipped} leaves that are not arrays left out"] if skipped else []
    return Manifest(
        entries, format=Format.ORBAX, source=spath, roles=RoleSource.INFERRED, notes=notes
    )


def load_orbax(folder: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of an Orbax checkpoint, restored by orbax as numpy arrays.

    Args:
        folder: as for :func:`read_orbax_manifest`.

    Yields:
        The arrays :func:`read_orbax_manifest` lists, in its order, as CPU tensors.

    Raises:
        FormatError: orbax cannot restore it, or restores otherwise than its metadata says.

    Example:
        >>> import tempfile, numpy as np, orbax.checkpoint as ocp
        >>> path = f"{tempfile.mkdtemp()}/ckpt"
        >>> ocp.PyTreeCheckpointer().save(path, {"w": np.ones(3, np.float32)})
        >>> [(n, t.tolist()) for n, t in load_orbax(path)]
        [('w', [1.0, 1.0, 1.0])]
    """
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from .._pytree import _to_torch, flatten_pytree

    spath = os.fspath(folder)
    m = read_orbax_manifest(spath)
    restored: dict[str, Any] = {}
    for prefix, item in _items(spath):
        ckptr = ocp.PyTreeCheckpointer()
        try:
            tree = ckptr.metadata(item)
            tree = getattr(getattr(tree, "item_metadata", tree), "tree", tree)
            args = jax.tree_util.tree_map(lambda _m: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            out = ckptr.restore(item, args=ocp.args.PyTreeRestore(restore_args=args))
        except Exception as exc:  # orbax raises many kinds
            text = " ".join(str(exc).split())[:200]
            raise FormatError(item, f"orbax cannot restore it: {text}") from None
        for name, leaf in flatten_pytree(out)[0]:
            restored[prefix + name] = leaf
    for e in m.values():
        if e.name not in restored:
            raise FormatError(spath, f"{e.name}: in the metadata, not restored by orbax")
        t = _to_torch(restored[e.name])
        if tuple(t.shape) != e.shape or DType.from_torch(t.dtype) is not e.dtype:
            raise FormatError(
                spath,
                f"{e.name}: the metadata says {e.shape} of {e.dtype.value}, orbax restores "
                f"{tuple(t.shape)} of {t.dtype}",
            )
        yield e.name, t
