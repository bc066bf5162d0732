"""Reading GGUF (llama.cpp) headers: a strict parser, bounded on hostile input, torch- and
numpy-free.

The layout (GGUF v2 and v3; ggml's ``docs/gguf.md``, and ``ggml/src/gguf.cpp``, which this
parser follows in what it refuses)::

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count × (key: string, value_type u32, value)
    tensor_count × (name: string, n_dims u32, dims u64 × n_dims (innermost first),
                    ggml type u32, offset u64 (from the data section, aligned))
    padding to general.alignment (default 32) | data section

A string is a u64 byte length and UTF-8 bytes; an array value is its element type u32, a
u64 count and the elements (arrays of arrays nest). Numbers are little-endian, or all
big-endian in a big-endian file (told apart by the version, as gguf.cpp does).

Memory is bounded by what the header holds, not what it claims: every count and length is
checked against the bytes left in the file before anything is read or allocated; the header
is read in chunks; long metadata arrays (a tokenizer's 32,000 to 256,000 strings) are walked,
not kept (their type and length are). Every refusal is a :class:`~paramscope.GGUFError`
naming the file and what is wrong.

Dims are reported in numpy order (outermost first, ``[4096, 11008]`` for ggml's
``ne = [11008, 4096]``). A tensor of a block type (``Q4_K`` …) is one stored ``U8`` entry of
its bytes with the record ``extra["gguf"] = {"type", "shape", "bytes"}``; see
:mod:`paramscope._quantlayouts._gguf`. Values are read by :mod:`._gguf_load`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._dtypes import DType
from .._enums import Format, RoleSource
from .._errors import GGUFError
from .._ggml import GGML_TYPES, PLAIN_TYPES
from .._manifest import Entry, EntryRows, FrozenDict, Location, Manifest
from ._source import ByteSource, Cursor, opened

__all__ = ["GGUFArray", "GGUFFile", "parse_gguf", "read_gguf_manifest", "split_files"]

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
#: ggml's GGML_MAX_DIMS: gguf.cpp refuses tensors of more dimensions.
MAX_DIMS = 4
#: Longest key or tensor name accepted (gguf.cpp allows 63-byte tensor names; gguf-py writes
#: longer ones, so the limit here only stops a hostile length).
MAX_NAME = 1 << 16
#: Metadata strings longer than this are skipped, not kept (said in their value).
MAX_KEPT_STRING = 1 << 16
#: Arrays longer than this are walked, not kept (their type and length are).
MAX_KEPT_ARRAY = 64
#: Arrays nest at most this deep (gguf.cpp refuses any nesting; gguf-py writes it).
MAX_DEPTH = 16
_CHUNK = 1 << 20
#: Up to this many tensors the manifest's entries are built at once; past it, on access.
EAGER_ENTRIES = 1 << 16

# value type id → (name, struct code, size); 8 = string, 9 = array
_SCALARS: dict[int, tuple[str, str, int]] = {
    0: ("uint8", "B", 1),
    1: ("int8", "b", 1),
    2: ("uint16", "H", 2),
    3: ("int16", "h", 2),
    4: ("uint32", "I", 4),
    5: ("int32", "i", 4),
    6: ("float32", "f", 4),
    7: ("bool", "B", 1),
    10: ("uint64", "Q", 8),
    11: ("int64", "q", 8),
    12: ("float64", "d", 8),
}
STRING, ARRAY = 8, 9
_TYPE_NAMES = {**{k: v[0] for k, v in _SCALARS.items()}, STRING: "string", ARRAY: "array"}
# The fewest bytes an element of each type takes (an array: its type and count).
_MIN_SIZE = {**{k: v[2] for k, v in _SCALARS.items()}, STRING: 8, ARRAY: 12}

_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array: its element type and length, and its values when short.

    Attributes:
        type: the element type (``"string"``, ``"int32"``, ``"array"`` …).
        length: the element count.
        values: the elements (nested arrays as :class:`GGUFArray`) when at most
            :data:`MAX_KEPT_ARRAY`, else ``None`` (walked, not kept).
    """

    type: str
    length: int
    values: list[Any] | None = None

    def __str__(self) -> str:
        if self.values is None:
            return f"[{self.length} × {self.type}]"
        return json.dumps(_plain(self.values), ensure_ascii=False)


def _plain(v: Any) -> Any:
    if isinstance(v, GGUFArray):
        return _plain(v.values) if v.values is not None else str(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


@dataclass
class GGUFFile:
    """One parsed GGUF header.

    Attributes:
        path: the file.
        size: its size in bytes.
        version: 2 or 3.
        byteorder: ``"<"`` (little-endian) or ``">"``.
        alignment: the data alignment (``general.alignment``, default 32).
        data_start: where the data section begins.
        metadata: key → value (int, float, bool, str, :class:`GGUFArray`), in file order.
        value_types: key → its value type name.
        tensors: name → ``(ggml type id, numpy-order shape, absolute offset, bytes)``.
    """

    path: str
    size: int
    version: int
    byteorder: str
    alignment: int
    data_start: int
    metadata: dict[str, Any] = field(default_factory=dict)
    value_types: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, tuple[int, tuple[int, ...], int, int]] = field(default_factory=dict)


class _Cursor(Cursor):
    """Sequential reads of a GGUF header: :class:`~paramscope.io._source.Cursor` (1 MiB
    local chunks; a remote header in pieces from 16 KiB, doubling) with GGUF's byte order,
    numbers, counts and strings, and :class:`GGUFError` for errors."""

    def __init__(self, src: ByteSource, order: str = "<") -> None:
        super().__init__(src, local_chunk=_CHUNK, grow_to=_CHUNK)
        self.order = order

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(self.path, problem)

    def unpack(self, code: str, size: int, what: str) -> Any:
        return struct.unpack(self.order + code, self.take(size, what))[0]

    def u32(self, what: str) -> int:
        return int(self.unpack("I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", 8, what))

    def count(self, what: str, min_size: int) -> int:
        """A u64 count of items of at least ``min_size`` bytes, checked against the bytes left."""
        n = self.u64(what)
        left = self.size - self.pos
        if min_size and n > left // min_size:
            raise self.fail(
                f"{what} is {n}, but {left} bytes are left in the file (at least {min_size} each)"
            )
        return n

    def string(self, what: str, limit: int | None = None, strict: bool = True) -> str | None:
        """A string; ``None`` (skipped) when longer than ``limit``."""
        n = self.u64(f"{what} length")
        if n > self.size - self.pos:
            raise self.fail(
                f"{what}: length {n} at offset {self.pos - 8} runs past the end of the "
                f"{self.size}-byte file"
            )
        if limit is not None and n > limit:
            if strict:
                raise self.fail(f"{what}: length {n} exceeds the {limit}-byte limit")
            self.pos += n
            return None
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8") if strict else raw.decode("utf-8", "replace")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what}: not valid UTF-8 (byte {exc.start})") from None

    def skip_strings(self, count: int, what: str) -> None:
        """Walk ``count`` strings without keeping them (a tokenizer's vocabulary)."""
        code = self.order + "Q"
        unpack_from = struct.unpack_from
        i = 0
        while i < count:
            off = self.pos - self.base
            if off < 0 or off + 8 > len(self.buf):
                self._fill(8, f"{what}[{i}] length")
                off = 0
            buf = self.buf
            end = len(buf) - 8
            while i < count and off <= end:
                off += 8 + unpack_from(code, buf, off)[0]
                i += 1
            self.pos = self.base + off
            if self.pos > self.size:
                raise self.fail(
                    f"{what}[{i - 1}]: the string runs past the end of the {self.size}-byte file"
                )


def _value(cur: _Cursor, vtype: int, what: str, depth: int = 0) -> Any:
    scalar = _SCALARS.get(vtype)
    if scalar is not None:
        v = cur.unpack(scalar[1], scalar[2], what)
        return bool(v) if vtype == 7 else v
    if vtype == STRING:
        s = cur.string(what, MAX_KEPT_STRING, strict=False)
        return s if s is not None else f"<string of more than {MAX_KEPT_STRING} bytes, not kept>"
    if vtype == ARRAY:
        if depth >= MAX_DEPTH:
            raise cur.fail(f"{what}: arrays nested more than {MAX_DEPTH} deep")
        etype = cur.u32(f"{what} element type")
        if etype not in _TYPE_NAMES:
            raise cur.fail(f"{what}: unknown array element type {etype} (expected 0 to 12)")
        n = cur.count(f"{what} length", _MIN_SIZE[etype])
        tname = _TYPE_NAMES[etype]
        if n <= MAX_KEPT_ARRAY:
            if etype in _SCALARS:
                _, code, size = _SCALARS[etype]
                raw = cur.take(n * size, what)
                vals: list[Any] = list(struct.unpack(f"{cur.order}{n}{code}", raw))
                if etype == 7:
                    vals = [bool(v) for v in vals]
                return GGUFArray(tname, n, vals)
            return GGUFArray(
                tname, n, [_value(cur, etype, f"{what}[{i}]", depth + 1) for i in range(n)]
            )
        if etype in _SCALARS:
            cur.skip(n * _SCALARS[etype][2], what)
        elif etype == STRING:
            cur.skip_strings(n, what)
        else:
            for i in range(n):
                _value(cur, etype, f"{what}[{i}]", depth + 1)
        return GGUFArray(tname, n)
    raise cur.fail(f"{what}: unknown value type {vtype} (expected 0 to 12)")


def parse_gguf(source: str | os.PathLike[str] | ByteSource) -> GGUFFile:
    """Read and check a GGUF header without touching tensor data.

    Args:
        source: the file, or a ByteSource open on it (left open).

    Returns:
        The :class:`GGUFFile`.

    Raises:
        GGUFError: bad magic, a version other than 2 or 3, an unknown value or ggml type, a
            count, length or offset past the end of the file, misaligned or overlapping
            tensor data, a row that is not a whole number of blocks, repeated keys or names.

    Example:
        >>> import tempfile, numpy as np, gguf
        >>> path = f"{tempfile.mkdtemp()}/m.gguf"
        >>> w = gguf.GGUFWriter(path, "llama")
        >>> w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
        >>> w.write_header_to_file(); w.write_kv_data_to_file()
        >>> w.write_tensors_to_file(); w.close()
        >>> h = parse_gguf(path)
        >>> h.version, h.metadata["general.architecture"], h.tensors["token_embd.weight"][1]
        (3, 'llama', (8, 4))
    """
    with opened(source) as src:
        return _parse(src)


def _parse(src: ByteSource) -> GGUFFile:
    cur = _Cursor(src)
    magic = src.read_at(0, 4)
    if magic != MAGIC:
        raise cur.fail(f"bad magic {magic!r}: expected {MAGIC!r} (not a GGUF file)")
    cur.pos = 4
    raw = cur.take(4, "version")
    version = struct.unpack("<I", raw)[0]
    if version & 0xFFFF == 0 and version:  # written on a big-endian machine
        cur.order = ">"
        version = struct.unpack(">I", raw)[0]
    if version == 1:
        raise cur.fail(
            "GGUF version 1 is not supported (llama.cpp dropped it): expected version 2 or 3; "
            "convert the model again with a current llama.cpp"
        )
    if version not in (2, 3):
        raise cur.fail(f"GGUF version {version} is not supported: expected version 2 or 3")
    n_tensors = cur.count("tensor count", 24)  # name length, n_dims, type, offset
    n_kv = cur.count("metadata key count", 13)  # key length, type, one byte of value
    h = GGUFFile(cur.path, cur.size, version, cur.order, DEFAULT_ALIGNMENT, 0)
    meta, vtypes = h.metadata, h.value_types
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}", MAX_NAME)
        assert key is not None
        if key in meta:
            raise cur.fail(f"metadata key {key!r} appears twice")
        vtype = cur.u32(f"metadata {key!r} type")
        if vtype not in _TYPE_NAMES:
            raise cur.fail(f"metadata {key!r}: unknown value type {vtype} (expected 0 to 12)")
        meta[key] = _value(cur, vtype, f"metadata {key!r}")
        vtypes[key] = _TYPE_NAMES[vtype]
    if "general.alignment" in meta:
        a = meta["general.alignment"]
        if vtypes["general.alignment"] != "uint32":
            raise cur.fail(
                f"general.alignment: expected a uint32, found a {vtypes['general.alignment']}"
            )
        if a == 0 or a & (a - 1):
            raise cur.fail(f"general.alignment is {a}: expected a power of two")
        h.alignment = a
    infos = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(f"tensor #{i} name", MAX_NAME)
        assert name is not None
        if name in names:
            raise cur.fail(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = cur.u32(f"tensor {name!r} dimension count")
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions: at most {MAX_DIMS}")
        ne = struct.unpack(f"{cur.order}{n_dims}Q", cur.take(8 * n_dims, f"tensor {name!r} dims"))
        tid = cur.u32(f"tensor {name!r} type")
        offset = cur.u64(f"tensor {name!r} offset")
        infos.append((name, ne, tid, offset))
    h.data_start = -(-cur.pos // h.alignment) * h.alignment
    spans = []
    for name, ne, tid, offset in infos:
        t = GGML_TYPES.get(tid)
        if t is None:
            raise cur.fail(f"tensor {name!r}: unknown ggml type {tid}")
        numel = 1
        for d in ne:
            if d >= 1 << 63:
                raise cur.fail(f"tensor {name!r}: dimension {d} is negative as an int64")
            numel *= d
        if numel >= 1 << 63:
            raise cur.fail(f"tensor {name!r}: {numel} elements do not fit an int64")
        row = ne[0] if ne else 1
        if row % t.block_size:
            raise cur.fail(
                f"tensor {name!r} of type {t.name} has {row} values per row: not a multiple "
                f"of its block size {t.block_size}"
            )
        if offset % h.alignment:
            raise cur.fail(
                f"tensor {name!r}: data offset {offset} is not aligned to {h.alignment} bytes"
            )
        nbytes = t.nbytes(numel)
        start = h.data_start + offset
        if start + nbytes > cur.size:
            raise cur.fail(
                f"tensor {name!r}: its {nbytes} bytes at offset {start} run past the end of "
                f"the {cur.size}-byte file"
            )
        h.tensors[name] = (tid, tuple(reversed(ne)), start, nbytes)
        if nbytes:
            spans.append((start, nbytes, name))
    spans.sort()
    for (a, an, aname), (b, _, bname) in itertools.pairwise(spans):
        if b < a + an:
            raise cur.fail(
                f"tensors {aname!r} (bytes {a} to {a + an}) and {bname!r} (from {b}) overlap"
            )
    return h


def split_files(path: str | os.PathLike[str], h: GGUFFile) -> list[Path]:
    """The files of a split model (``NAME-0000k-of-0000N.gguf``), or ``[path]`` alone.

    Args:
        path: one file of the set (any).
        h: its parsed header.

    Returns:
        The files in order, the first holding the model's metadata.

    Raises:
        GGUFError: the header says it is split but the name does not follow the pattern,
            or a file of the set is missing.

    Example:
        >>> split_files("m.gguf", GGUFFile("m.gguf", 0, 3, "<", 32, 0))
        [PosixPath('m.gguf')]
    """
    p = Path(path)
    count = h.metadata.get("split.count")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 1:
        return [p]
    mt = _SPLIT.match(p.name)
    if mt is None or int(mt["count"]) != count:
        raise GGUFError(
            p,
            f"split.count is {count}, but the name is not NAME-0000k-of-{count:05d}.gguf "
            "(gguf-split's names; rename the files as gguf-split wrote them)",
        )
    files = [p.with_name(f"{mt['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    for i, f in enumerate(files, 1):
        if not f.is_file():
            raise GGUFError(p, f"split {i} of {count} ({f.name}) is missing")
    return files


def _entry_maker(files: list[str]) -> Any:
    locations = files

    def make(name: str, row: tuple[int, tuple[int, ...], int, int, int]) -> Entry:
        tid, shape, start, nbytes, fi = row
        t = GGML_TYPES[tid]
        loc = Location(locations[fi], start, nbytes)
        plain = PLAIN_TYPES.get(t.name)
        if plain is not None:
            return Entry(name, shape, DType(plain), location=loc)
        rec = FrozenDict(gguf={"type": t.name, "shape": list(shape), "bytes": nbytes})
        return Entry(name, (nbytes,), DType.U8, extra=rec, location=loc)

    return make


def read_gguf_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The :class:`Manifest` of a GGUF file (or of the split set it belongs to).

    Every tensor is a parameter (GGUF holds a model's weights only; roles are marked
    inferred). Metadata values become strings (arrays: ``[N × type]`` when long); a note
    says the architecture, name, context length and tensor types.

    Args:
        path: a ``.gguf`` file; for a split model, any of its files.

    Returns:
        The manifest, entries in file order (split files one after another).

    Raises:
        GGUFError: see :func:`parse_gguf`; and a split set that does not add up.

    Example:
        >>> import tempfile, numpy as np, gguf
        >>> path = f"{tempfile.mkdtemp()}/m.gguf"
        >>> w = gguf.GGUFWriter(path, "llama")
        >>> w.add_tensor("output.weight", gguf.quants.quantize(np.ones((2, 32), np.float32),
        ...              gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        >>> w.write_header_to_file(); w.write_kv_data_to_file()
        >>> w.write_tensors_to_file(); w.close()
        >>> e = read_gguf_manifest(path)["output.weight"]
        >>> e.dtype.value, e.nbytes, dict(e.extra["gguf"])
        ('U8', 68, {'type': 'Q8_0', 'shape': [2, 32], 'bytes': 68})
    """
    first = parse_gguf(path)
    files = split_files(path, first)
    headers = [first] if len(files) == 1 else []
    if len(files) > 1:
        count = len(files)
        for i, f in enumerate(files):
            h = first if os.path.samefile(f, path) else parse_gguf(f)
            no, n = h.metadata.get("split.no"), h.metadata.get("split.count")
            if no != i or n != count:
                raise GGUFError(
                    f, f"split.no/split.count are {no}/{n}: expected {i}/{count} from its name"
                )
            headers.append(h)
        head = headers[0]
        want = head.metadata.get("split.tensors.count")
        have = sum(len(h.tensors) for h in headers)
        if want != have:
            raise GGUFError(
                files[0],
                f"split.tensors.count is {want}, the {count} files hold {have} tensors",
            )
    head = headers[0]
    rows: dict[str, tuple[int, tuple[int, ...], int, int, int]] = {}
    for fi, h in enumerate(headers):
        for name, (tid, shape, start, nbytes) in h.tensors.items():
            if name in rows:
                raise GGUFError(h.path, f"tensor {name!r} is also in {headers[rows[name][4]].path}")
            rows[name] = (tid, shape, start, nbytes, fi)
    paths = [h.path for h in headers]
    make = _entry_maker(paths)
    # Real models hold hundreds to a few thousand tensors: their entries are built once, here
    # (every pass over them after is free). A hostile header of millions keeps compact rows.
    entries: list[Entry] | EntryRows = (
        [make(n, r) for n, r in rows.items()]
        if len(rows) <= EAGER_ENTRIES
        else EntryRows((rows, make), owner=headers)
    )
    return Manifest(
        entries,
        format=Format.GGUF,
        source=os.fspath(path),
        roles=RoleSource.INFERRED,
        metadata={k: _as_text(v) for k, v in head.metadata.items()},
        files=paths,
        notes=[_summary(head, rows, len(headers))],
    )


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _summary(h: GGUFFile, rows: dict[str, Any], n_files: int) -> str:
    """One line: version, architecture, name, context length, tensor types (file metadata)."""
    meta = h.metadata
    arch = meta.get("general.architecture")
    parts = [f"gguf v{h.version}" + ("" if h.byteorder == "<" else " big-endian")]
    if n_files > 1:
        parts[0] += f" in {n_files} split files"
    if isinstance(arch, str):
        parts.append(f"architecture {arch}")
        ctx = meta.get(f"{arch}.context_length")
        if isinstance(ctx, int):
            parts.append(f"context length {ctx:,}")
    name = meta.get("general.name")
    if isinstance(name, str):
        parts.append(f"name {name!r}")
    types: dict[str, int] = {}
    for row in rows.values():
        tname = GGML_TYPES[row[0]].name
        types[tname] = types.get(tname, 0) + 1
    if types:
        shown = ", ".join(f"{t} ×{n}" for t, n in sorted(types.items(), key=lambda x: -x[1]))
        parts.append(f"tensor types {shown}")
    return ", ".join(parts) + " (from the file's metadata)"
