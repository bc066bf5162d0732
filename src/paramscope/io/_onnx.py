"""ONNX models as checkpoints: their initializers, read from the protobuf without ``onnx``.

A ``.onnx`` file is one serialized ``ModelProto`` (``onnx/onnx.proto`` of the ``onnx``
package); the weights are ``ModelProto.graph`` (field 7) → ``GraphProto.initializer`` (field
5, repeated ``TensorProto``). A small protobuf wire-format walker reads what paramscope needs
with positioned reads: a field's tag and length, then a jump past it. Nodes, value infos and
every ``raw_data`` payload are skipped unread, so the header of a 1 GB model costs a few KB
(read in windows of 512 bytes that grow while reads are contiguous).

The ``TensorProto`` fields read::

    dims 1 (int64, packed or not) | data_type 2 | segment 3 | float_data 4 | int32_data 5
    int64_data 7 | name 8 | raw_data 9 | double_data 10 | uint64_data 11
    external_data 13 (StringStringEntryProto: location, offset, length) | data_location 14

Where the values are, as ``onnx.numpy_helper.to_array`` decides (external first, then
``raw_data``, then the typed field of the data type):

* ``raw_data``: little-endian, contiguous: ``Location(model, absolute offset, length)``, so
  paramscope's streaming readers (convert, verify, quantize …) read one tensor at a time;
* external data (``data_location = EXTERNAL``): the ``location`` file joined to the model's
  folder (absolute paths, ``..`` and links leading out of the folder are refused), at
  ``offset`` for ``length`` bytes (default: the rest of the file), checked against the file's
  size: a ``Location`` in that file;
* typed fields (``float_data`` …): not raw bytes, ``location=None``; :func:`load_onnx`
  decodes them (the manifest checks that the field holds enough bytes for the shape).

Names are kept as stored: ``torch.onnx.export`` (TorchScript exporter) keeps a module's
parameter names (``fc.weight``), and names the tensors it makes by constant folding
``onnx::<Op>_<n>`` (in eval mode a Conv followed by BatchNorm becomes one Conv whose weight
and bias are such tensors: the BatchNorm's parameters and running statistics are gone);
initializers of equal values may be deduplicated under the first name. Every initializer is
an entry (shape constants included, so the count equals ``onnx``'s); roles are inferred from
names and dtypes as for ``.npz`` (integer tensors and ``running_mean``-like names are buffers).
Initializers of types paramscope has no dtype for (STRING, COMPLEX128, INT4/UINT4, INT2/UINT2),
segmented tensors and sparse initializers are skipped with a note.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._enums import Format, RoleSource
from .._errors import FormatError, SourceNotFoundError, UnsupportedDTypeError
from .._manifest import Entry, Location, Manifest, infer_role
from ._source import ByteSource, opened

if TYPE_CHECKING:
    import torch

__all__ = ["ONNX_DTYPES", "load_onnx", "read_onnx_manifest"]

#: ONNX ``TensorProto.DataType`` → paramscope dtype.
ONNX_DTYPES: dict[int, DType] = {
    1: DType.F32,
    2: DType.U8,
    3: DType.I8,
    4: DType.U16,
    5: DType.I16,
    6: DType.I32,
    7: DType.I64,
    9: DType.BOOL,
    10: DType.F16,
    11: DType.F64,
    12: DType.U32,
    13: DType.U64,
    14: DType.C64,
    16: DType.BF16,
    17: DType.F8_E4M3,  # FLOAT8E4M3FN
    18: DType.F8_E4M3FNUZ,
    19: DType.F8_E5M2,
    20: DType.F8_E5M2FNUZ,
    23: DType.F4,  # FLOAT4E2M1, two per byte (low nibble first), as safetensors' F4
    24: DType.F8_E8M0,
    27: DType.F6_E2M3,
    28: DType.F6_E3M2,
}
#: Data types ONNX has and paramscope does not hold (skipped with a note).
_UNHELD = {
    0: "UNDEFINED",
    8: "STRING",
    15: "COMPLEX128",
    21: "UINT4",
    22: "INT4",
    25: "UINT2",
    26: "INT2",
}

# typed value fields of TensorProto
_FLOAT_DATA, _INT32_DATA, _INT64_DATA, _DOUBLE_DATA, _UINT64_DATA = 4, 5, 7, 10, 11
#: field → (wire type of one unpacked value, bytes per value, or 0 for varints)
_TYPED = {
    _FLOAT_DATA: (5, 4),
    _INT32_DATA: (0, 0),
    _INT64_DATA: (0, 0),
    _DOUBLE_DATA: (1, 8),
    _UINT64_DATA: (0, 0),
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

#: Longest string or packed field read into memory (names, dims, external data entries).
MAX_SMALL = 1 << 20
_MIN_WINDOW = 512
_MAX_WINDOW = 1 << 20


def _typed_field(dt: DType) -> int:
    """The typed field holding values of ``dt`` when ``raw_data`` is not used."""
    if dt in (DType.F32, DType.C64):
        return _FLOAT_DATA
    if dt is DType.F64:
        return _DOUBLE_DATA
    if dt is DType.I64:
        return _INT64_DATA
    if dt in (DType.U32, DType.U64):
        return _UINT64_DATA
    return _INT32_DATA


def _typed_count(dt: DType, numel: int) -> int:
    """How many typed-field values hold ``numel`` elements of ``dt``."""
    if dt is DType.C64:
        return 2 * numel
    if dt is DType.F4:
        return (numel + 1) // 2
    return numel


class _Walker:
    """Positioned reads of one source through a small window, with protobuf primitives."""

    def __init__(self, src: ByteSource, where: str) -> None:
        self.src = src
        self.where = where
        self.size = src.size
        self._w0 = 0
        self._buf = b""
        self._chunk = _MIN_WINDOW

    def bytes(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` (the caller has checked they lie inside the message)."""
        w0, buf = self._w0, self._buf
        if w0 <= pos and pos + n <= w0 + len(buf):
            return buf[pos - w0 : pos - w0 + n]
        contiguous = w0 <= pos <= w0 + len(buf)
        self._chunk = min(self._chunk * 2, _MAX_WINDOW) if contiguous else _MIN_WINDOW
        data = self.src.read_at(pos, max(n, min(self._chunk, self.size - pos)))
        if len(data) < n:
            raise FormatError(
                self.where, f"the file ends at byte {pos + len(data)}, inside a field"
            )
        self._w0, self._buf = pos, data
        return data[:n]

    def varint(self, pos: int, end: int, what: str) -> tuple[int, int]:
        """The varint at ``pos`` (before ``end``) and the position after it."""
        head = self.bytes(pos, min(10, end - pos))
        value = 0
        for i, b in enumerate(head):
            value |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                return value & 0xFFFF_FFFF_FFFF_FFFF, pos + i + 1
        if len(head) == 10:
            raise FormatError(self.where, f"{what}: a varint longer than 10 bytes at byte {pos}")
        raise FormatError(self.where, f"{what}: the message ends inside a varint at byte {pos}")

    def fields(self, start: int, end: int, what: str) -> Iterator[tuple[int, int, int, int]]:
        """``(field, wire type, value, length)`` of each field of the message ``[start, end)``.

        For wire type 0 ``value`` is the varint and ``length`` 0; for the others ``value`` is
        the payload's absolute offset and ``length`` its byte count. Groups are refused.
        """
        pos = start
        while pos < end:
            tag, pos = self.varint(pos, end, what)
            number, wire = tag >> 3, tag & 7
            if number == 0 or number > 0x1FFF_FFFF:
                raise FormatError(self.where, f"{what}: field number {number} at byte {pos}")
            if wire == 0:
                value, pos = self.varint(pos, end, what)
                yield number, wire, value, 0
                continue
            if wire == 2:
                length, pos = self.varint(pos, end, what)
            elif wire in (1, 5):
                length = 8 if wire == 1 else 4
            else:
                raise FormatError(
                    self.where,
                    f"{what}: wire type {wire} (field {number}) at byte {pos}: expected a "
                    "varint, fixed or length-delimited field (ONNX uses no groups)",
                )
            if length > end - pos:
                raise FormatError(
                    self.where,
                    f"{what}: field {number} of {length} bytes at byte {pos}, only "
                    f"{end - pos} left in the message",
                )
            yield number, wire, pos, length
            pos += length

    def small(self, pos: int, length: int, what: str) -> bytes:
        """A field read into memory, at most :data:`MAX_SMALL` bytes."""
        if length > MAX_SMALL:
            raise FormatError(self.where, f"{what}: {length} bytes, at most {MAX_SMALL} expected")
        return self.bytes(pos, length)

    def text(self, pos: int, length: int, what: str) -> str:
        try:
            return self.small(pos, length, what).decode()
        except UnicodeDecodeError:
            raise FormatError(self.where, f"{what}: not UTF-8 text") from None

    def packed_varints(self, pos: int, length: int, what: str) -> list[int]:
        data, out, value, shift = self.small(pos, length, what), [], 0, 0
        for b in data:
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                out.append(value & 0xFFFF_FFFF_FFFF_FFFF)
                value, shift = 0, 0
            elif shift >= 70:
                raise FormatError(self.where, f"{what}: a varint longer than 10 bytes")
        if shift:
            raise FormatError(self.where, f"{what}: the packed field ends inside a varint")
        return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class _Tensor:
    """What a TensorProto says, as far as paramscope needs it."""

    start: int
    end: int
    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    raw: tuple[int, int] | None = None
    external: dict[str, str] = field(default_factory=dict)
    data_location: int = 0
    segmented: bool = False
    typed_bytes: dict[int, int] = field(default_factory=dict)  # field → payload bytes


def _tensor(w: _Walker, start: int, end: int, index: int) -> _Tensor:
    what = f"initializer #{index}"
    t = _Tensor(start, end)
    for number, wire, value, length in w.fields(start, end, what):
        if number == 1 and wire == 0:
            t.dims.append(_signed(value))
        elif number == 1 and wire == 2:
            t.dims.extend(_signed(v) for v in w.packed_varints(value, length, f"{what} dims"))
        elif number == 2 and wire == 0:
            t.data_type = _signed(value)
        elif number == 3 and wire == 2:
            t.segmented = True
        elif number == 8 and wire == 2:
            t.name = w.text(value, length, f"{what} name")
            what = f"initializer {t.name!r}"
        elif number == 9 and wire == 2:
            t.raw = (value, length)
        elif number == 13 and wire == 2:
            key, val = _string_pair(w, value, length, f"{what} external_data")
            t.external[key] = val
        elif number == 14 and wire == 0:
            t.data_location = _signed(value)
        elif number in _TYPED and (wire == 2 or wire == _TYPED[number][0]):
            # an unpacked varint takes at least one byte: counted as one
            t.typed_bytes[number] = t.typed_bytes.get(number, 0) + (length if wire else 1)
    return t


def _string_pair(w: _Walker, start: int, length: int, what: str) -> tuple[str, str]:
    key = value = ""
    for number, wire, pos, n in w.fields(start, start + length, what):
        if number == 1 and wire == 2:
            key = w.text(pos, n, f"{what} key")
        elif number == 2 and wire == 2:
            value = w.text(pos, n, f"{what} value")
    return key, value


@dataclass
class _Parsed:
    manifest: Manifest
    typed: dict[str, _Tensor]  # entries without a location: their message, decoded on load


def read_onnx_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an ONNX model's initializers, from its protobuf framing alone.

    Args:
        path: the ``.onnx`` file (a local path or a URL).

    Returns:
        A :class:`Manifest` (format ``onnx``, inferred roles); entries with ``raw_data`` or
        external data have byte locations, typed-field entries none.

    Raises:
        FormatError: a malformed protobuf, a size that does not match a shape, an external
            data file that is missing, too short or outside the model's folder.

    Example:
        >>> import tempfile, numpy as np, onnx
        >>> from onnx import helper, numpy_helper, TensorProto
        >>> w = numpy_helper.from_array(np.ones((2, 3), np.float32), "fc.weight")
        >>> g = helper.make_graph([], "g", [], [helper.make_tensor_value_info(
        ...     "fc.weight", TensorProto.FLOAT, [2, 3])], [w])
        >>> path = f"{tempfile.mkdtemp()}/m.onnx"
        >>> onnx.save(helper.make_model(g), path)
        >>> m = read_onnx_manifest(path)
        >>> m["fc.weight"].shape, m["fc.weight"].dtype, m.format.value
        ((2, 3), <DType.F32: 'F32'>, 'onnx')
    """
    return _parse(os.fspath(path)).manifest


def _parse(spath: str) -> _Parsed:
    with opened(spath) as src:
        w = _Walker(src, spath)
        tensors, sparse, metadata = _walk_model(w)
    return _build(spath, tensors, sparse, metadata)


def _walk_model(w: _Walker) -> tuple[list[_Tensor], int, dict[str, str]]:
    tensors: list[_Tensor] = []
    sparse = 0
    meta: dict[str, str] = {}
    opsets: list[str] = []
    for number, wire, value, length in w.fields(0, w.size, "ModelProto"):
        if number == 7 and wire == 2:  # graph (a repeated occurrence merges: lists append)
            for gn, gw, gv, gl in w.fields(value, value + length, "GraphProto"):
                if gn == 5 and gw == 2:
                    tensors.append(_tensor(w, gv, gv + gl, len(tensors)))
                elif gn == 15 and gw == 2:
                    sparse += 1
        elif number == 1 and wire == 0:
            meta["onnx.ir_version"] = str(_signed(value))
        elif number in (2, 3) and wire == 2:
            key = "onnx.producer_name" if number == 2 else "onnx.producer_version"
            meta[key] = w.text(value, length, key)
        elif number == 8 and wire == 2:
            domain, version = "", 0
            for on, ow, ov, ol in w.fields(value, value + length, "opset_import"):
                if on == 1 and ow == 2:
                    domain = w.text(ov, ol, "opset_import domain")
                elif on == 2 and ow == 0:
                    version = _signed(ov)
            opsets.append(f"{domain or 'ai.onnx'}:{version}")
        elif number == 14 and wire == 2:
            key, val = _string_pair(w, value, length, "metadata_props")
            meta[key] = val
    if opsets:
        meta["onnx.opset_import"] = ",".join(opsets)
    return tensors, sparse, meta


def _build(spath: str, tensors: list[_Tensor], sparse: int, metadata: dict[str, str]) -> _Parsed:
    from ._remote import as_path

    folder = as_path(spath).parent
    entries: list[Entry] = []
    typed: dict[str, _Tensor] = {}
    skipped: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}  # external file → its size
    files = [spath]
    seen: set[str] = set()
    made_up = 0
    for i, t in enumerate(tensors):
        if not t.name:
            raise FormatError(spath, f"initializer #{i} has no name: initializers are named")
        what = f"initializer {t.name!r}"
        if t.name in seen:
            raise FormatError(spath, f"two initializers are named {t.name!r}")
        seen.add(t.name)
        bad = [d for d in t.dims if d < 0]
        if bad:
            raise FormatError(spath, f"{what}: dims {t.dims}: expected no negative dimension")
        dt = ONNX_DTYPES.get(t.data_type)
        if dt is None or t.segmented:
            why = "segmented" if t.segmented else _UNHELD.get(t.data_type, f"type {t.data_type}")
            skipped.setdefault(why, []).append(t.name)
            continue
        shape = tuple(t.dims)
        e = Entry(t.name, shape, dt)
        nbytes = e.nbytes
        location: Location | None = None
        if t.data_location == _EXTERNAL:
            location = _external(spath, folder, t, nbytes, sizes, files)
        elif t.raw is not None:
            if t.raw[1] != nbytes:
                raise FormatError(
                    spath,
                    f"{what}: raw_data of {t.raw[1]} bytes, its shape {list(shape)} of "
                    f"{dt.value} needs {nbytes}",
                )
            location = Location(spath, t.raw[0], t.raw[1])
        else:
            _check_typed(spath, what, t, dt, e.numel)
            typed[t.name] = t
        role = infer_role(t.name, dt, shape)
        entries.append(
            Entry(t.name, shape, dt, role=role, trainable=role.value == "param", location=location)
        )
        made_up += t.name.startswith("onnx::")
    notes = []
    if made_up:
        notes.append(
            f"{made_up} initializers have names the exporter made up (onnx::…): folded "
            "constants (e.g. a Conv fused with its BatchNorm), not a module's parameters"
        )
    for why, names in skipped.items():
        shown_names = ", ".join(repr(n) for n in names[:5]) + (" …" if len(names) > 5 else "")
        notes.append(
            f"skipped {len(names)} {why} initializers paramscope cannot hold: {shown_names}"
        )
    if sparse:
        notes.append(f"skipped {sparse} sparse initializers (graph.sparse_initializer)")
    m = Manifest(
        entries,
        format=Format.ONNX,
        source=spath,
        roles=RoleSource.INFERRED,
        metadata=metadata,
        files=files,
        notes=notes,
    )
    return _Parsed(m, typed)


def _check_typed(spath: str, what: str, t: _Tensor, dt: DType, numel: int) -> None:
    """Refuse a typed field too short for the shape (exact for fixed-width values; varints
    take 1 to 10 bytes, counted exactly when loaded)."""
    fld = _typed_field(dt)
    need = _typed_count(dt, numel)
    have = t.typed_bytes.get(fld, 0)
    width = _TYPED[fld][1]
    if width:
        ok = have == need * width
        expected = f"{need * width} bytes"
    else:
        ok = need <= have <= 10 * need
        expected = f"{need} to {10 * need} bytes"
    if not ok:
        raise FormatError(
            spath,
            f"{what}: shape {t.dims} of {dt.value} needs {expected} of typed values (field "
            f"{fld}), found {have}",
        )


def _external(
    spath: str, folder: Any, t: _Tensor, nbytes: int, sizes: dict[str, int], files: list[str]
) -> Location:
    """The location of an initializer's external data, checked against its file."""
    what = f"initializer {t.name!r}"
    rel = t.external.get("location", "")
    if not rel or "\x00" in rel:
        raise FormatError(spath, f"{what}: external data without a location file")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or "\\" in rel or ".." in Path(rel).parts:
        raise FormatError(
            spath,
            f"{what}: external data location {rel!r} must be relative to the model's folder "
            "without '..'",
        )
    path = folder / rel
    from ._remote import RemotePath

    if not isinstance(folder, RemotePath):  # object stores and web servers have no links
        real, base = os.path.realpath(path), os.path.realpath(folder)
        if os.path.commonpath([real, base]) != base:
            raise FormatError(
                spath, f"{what}: external data {rel!r} is a link leading out of {folder}"
            )
    file = os.fspath(path)
    if file not in sizes:
        try:
            with opened(file) as src:
                sizes[file] = src.size
        except (SourceNotFoundError, FileNotFoundError):
            raise FormatError(spath, f"{what}: external data file {rel!r} does not exist") from None
        except OSError as exc:
            raise FormatError(spath, f"{what}: external data file {rel!r}: {exc}") from None
        files.append(file)
    size = sizes[file]
    offset = _number(spath, what, t.external, "offset", 0)
    length = _number(spath, what, t.external, "length", max(0, size - offset))
    if length != nbytes:
        raise FormatError(
            spath,
            f"{what}: external data of {length} bytes in {rel!r}, its shape {t.dims} of "
            f"{ONNX_DTYPES[t.data_type].value} needs {nbytes}",
        )
    if offset + length > size:
        raise FormatError(
            spath,
            f"{what}: external data at offset {offset} of {length} bytes, {rel!r} has {size} bytes",
        )
    return Location(file, offset, length)


def _number(spath: str, what: str, ext: dict[str, str], key: str, default: int) -> int:
    text = ext.get(key)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit():
        raise FormatError(
            spath, f"{what}: external data {key} {text!r:.40}: expected a non-negative integer"
        )
    return int(text)


def load_onnx(path: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every initializer :func:`read_onnx_manifest` lists, in its order.

    Raw and external values are read from their byte locations; typed-field values
    (``float_data``, ``int32_data`` …) are decoded as ``onnx.numpy_helper.to_array`` does.

    Args:
        path: the ``.onnx`` file.

    Yields:
        Names and tensors (their stored dtype and shape).

    Raises:
        FormatError: a malformed model, or typed values that do not fill the shape.
        UnsupportedDTypeError: FLOAT6 values in ``int32_data`` (no torch layout).

    Example:
        >>> import tempfile, onnx
        >>> from onnx import helper, TensorProto
        >>> t = helper.make_tensor("steps", TensorProto.INT64, [2], [3, -4])  # typed, not raw
        >>> g = helper.make_graph([], "g", [], [helper.make_tensor_value_info(
        ...     "steps", TensorProto.INT64, [2])], [t])
        >>> path = f"{tempfile.mkdtemp()}/m.onnx"
        >>> onnx.save(helper.make_model(g), path)
        >>> [(n, v.tolist()) for n, v in load_onnx(path)]
        [('steps', [3, -4])]
    """
    spath = os.fspath(path)
    parsed = _parse(spath)
    sources: dict[str, ByteSource] = {}
    try:
        for e in parsed.manifest.values():
            loc = e.location
            if loc is None:
                src = sources.get(spath)
                if src is None:
                    src = sources[spath] = _open(spath)
                yield e.name, _decode_typed(_Walker(src, spath), e, parsed.typed[e.name])
                continue
            src = sources.get(loc.file)
            if src is None:
                src = sources[loc.file] = _open(loc.file)
            yield e.name, _read_raw(src, e, loc)
    finally:
        for s in sources.values():
            s.close()


def _open(file: str) -> ByteSource:
    from ._source import open_source

    return open_source(file)


def _read_raw(src: ByteSource, e: Entry, loc: Location) -> torch.Tensor:
    import torch

    from ._lazytensors import torch_shape

    shape = torch_shape(e.dtype, e.shape, e.name)
    if loc.length == 0:
        return torch.empty(shape, dtype=e.dtype.to_torch())
    buf = bytearray(loc.length)
    got = src.readinto_at(loc.offset, buf)
    if got != loc.length:
        raise FormatError(
            loc.file,
            f"initializer {e.name!r}: expected {loc.length} bytes at offset {loc.offset}, the "
            f"file ends after {got}",
        )
    return torch.frombuffer(buf, dtype=torch.uint8).view(e.dtype.to_torch()).reshape(shape)


def _varints(data: bytes) -> Any:
    """Concatenated varints, decoded at once (numpy), as unsigned 64-bit values."""
    import numpy as np

    a = np.frombuffer(data, np.uint8)
    if not len(a):
        return np.zeros(0, np.uint64)
    ends = np.flatnonzero(a < 0x80)
    if not len(ends) or ends[-1] != len(a) - 1:
        raise ValueError("the values end inside a varint")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lens = ends - starts + 1
    if int(lens.max()) > 10:
        raise ValueError("a varint longer than 10 bytes")
    shift = (np.arange(len(a)) - np.repeat(starts, lens)) * 7
    with np.errstate(over="ignore"):
        parts = (a & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


_INT_STORAGE = {
    DType.I32: "<i4",
    DType.I16: "<i2",
    DType.I8: "i1",
    DType.U16: "<u2",
    DType.U8: "u1",
    DType.F16: "<u2",
    DType.BF16: "<u2",
    DType.F8_E4M3: "u1",
    DType.F8_E4M3FNUZ: "u1",
    DType.F8_E5M2: "u1",
    DType.F8_E5M2FNUZ: "u1",
    DType.F8_E8M0: "u1",
    DType.F4: "u1",
}


def _decode_typed(w: _Walker, e: Entry, t: _Tensor) -> torch.Tensor:
    """The values of a typed-field initializer, as ``onnx.numpy_helper.to_array`` reads them."""
    import numpy as np
    import torch

    from ._lazytensors import torch_shape

    what = f"initializer {e.name!r}"
    dt = e.dtype
    fld = _typed_field(dt)
    one_wire, width = _TYPED[fld]
    chunks: list[bytes] = []
    varint_bytes: list[bytes] = []
    for number, wire, value, length in w.fields(t.start, t.end, what):
        if number != fld:
            continue
        if wire == 2:
            chunks.append(w.bytes(value, length))
        elif wire == one_wire == 0:  # one unpacked varint: re-encode its bytes
            varint_bytes.append(_encode_varint(value))
            chunks.append(varint_bytes[-1])
        elif wire == one_wire:
            chunks.append(w.bytes(value, length))
    data = b"".join(chunks)
    need = _typed_count(dt, e.numel)
    if width:
        if len(data) != need * width:
            raise FormatError(
                w.where, f"{what}: {len(data)} bytes of typed values, {need * width} expected"
            )
        arr = np.frombuffer(data, "<f4" if width == 4 else "<f8")
        if dt is DType.C64:
            arr = arr.view("<c8")
    else:
        try:
            raw = _varints(data)
        except ValueError as exc:
            raise FormatError(w.where, f"{what}: typed values: {exc}") from None
        if len(raw) != need:
            raise FormatError(
                w.where,
                f"{what}: {len(raw)} typed values, shape {list(e.shape)} of {dt.value} needs "
                f"{need}",
            )
        signed = raw.view(np.int64)
        if dt is DType.I64:
            arr = signed
        elif dt is DType.U64:
            arr = raw
        elif dt is DType.U32:
            arr = raw.astype("<u4")
        elif dt is DType.BOOL:
            arr = signed != 0
        elif dt in (DType.F6_E2M3, DType.F6_E3M2):
            raise UnsupportedDTypeError(
                f"{w.where}: {what}: {dt.value} values in int32_data: paramscope reads "
                "FLOAT6 initializers from raw_data only"
            )
        else:
            arr = signed.astype(_INT_STORAGE[dt])
    tensor = torch.from_numpy(np.ascontiguousarray(arr).copy())
    target = dt.to_torch()
    if tensor.dtype != target:
        tensor = tensor.view(target)
    return tensor.reshape(torch_shape(dt, e.shape, e.name))


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
