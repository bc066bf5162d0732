"""numpy ``.npz`` archives (and single ``.npy`` files), headers read with the stdlib.

Each ``.npy`` member starts with a small header (a Python dict literal with ``descr``,
``fortran_order`` and ``shape``), parsed with :func:`ast.literal_eval` under numpy's own rules
(format versions 1.0-3.0, at most 10,000 header characters, exactly those three keys, a bool
``fortran_order``, a tuple of integer dimensions), so a header paramscope accepts is one numpy
reads the same way; object arrays are refused, since loading them would unpickle.

Which of the two a file is follows numpy's own test, its first bytes: ``PK`` makes it an
archive, ``\\x93NUMPY`` a single array, whatever else the file also holds (an array with a zip
directory appended is an array, as for ``numpy.load``). Values are read member by member from
the members the manifest names, and each must have the manifest's dtype and shape.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from .._dtypes import DType
from .._enums import Format, RoleSource
from .._errors import FormatError, UnsupportedDTypeError
from .._manifest import Entry, Manifest, infer_role
from ._source import ByteSource, as_file, opened

if TYPE_CHECKING:
    import torch

__all__ = ["NPY_MAGIC", "load_npz", "read_npy_header", "read_npz_manifest"]

NPY_MAGIC = b"\x93NUMPY"
ZIP_PREFIXES = (b"PK\x03\x04", b"PK\x05\x06")  # numpy.load: an archive (or an empty one)
MAX_HEADER = 10_000  # numpy's max_header_size: a longer header is refused by numpy.load
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand beyond this: a larger claim is a lie
_VERSIONS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}


def read_npy_header(f: IO[bytes], where: str) -> tuple[DType, tuple[int, ...], bool]:
    """Parse the header of one ``.npy`` stream, as ``numpy.lib.format`` would.

    Args:
        f: a binary stream positioned at the start of the array.
        where: the file (and member) for errors.

    Returns:
        ``(dtype, shape, fortran_order)``.

    Raises:
        FormatError: malformed header, or one numpy would refuse.
        UnsupportedDTypeError: object, structured or big-endian arrays.

    Example:
        >>> import io
        >>> head = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        >>> raw = b"\\x93NUMPY\\x01\\x00" + struct.pack("<H", len(head)) + head.encode()
        >>> read_npy_header(io.BytesIO(raw), "x.npy")
        (<DType.F32: 'F32'>, (2,), False)
    """
    head = f.read(8)
    if len(head) < 8 or head[:6] != NPY_MAGIC:
        raise FormatError(where, "expected a .npy header (\\x93NUMPY)")
    version = (head[6], head[7])
    if version not in _VERSIONS:
        raise FormatError(
            where, f".npy format version {version}: numpy reads (1, 0), (2, 0) and (3, 0)"
        )
    fmt, encoding = _VERSIONS[version]
    raw_len = f.read(struct.calcsize(fmt))
    if len(raw_len) < struct.calcsize(fmt):
        raise FormatError(where, ".npy header: the file ends inside the header length")
    (hlen,) = struct.unpack(fmt, raw_len)
    if hlen > 1 << 20:
        raise FormatError(where, f".npy header of {hlen} bytes is too large")
    raw = f.read(hlen)
    if len(raw) < hlen:
        raise FormatError(where, f".npy header: expected {hlen} bytes, {len(raw)} follow")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise FormatError(where, f".npy header is not {encoding} text") from None
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        # TypeError: an unhashable key; MemoryError / RecursionError: nesting too deep
        raise FormatError(where, f".npy header is not a dict literal: {exc!r:.200}") from None
    if len(text) > MAX_HEADER:
        raise FormatError(
            where, f".npy header of {len(text)} characters: numpy reads at most {MAX_HEADER}"
        )
    if not isinstance(d, dict) or set(d) != {"descr", "shape", "fortran_order"}:
        found = sorted(map(repr, d)) if isinstance(d, dict) else type(d).__name__
        raise FormatError(
            where, f".npy header: expected exactly keys descr, fortran_order, shape; found {found}"
        )
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(type(x) is int and x >= 0 for x in shape):
        raise FormatError(where, f".npy header: bad shape {shape!r:.100}")
    if type(d["fortran_order"]) is not bool:
        raise FormatError(
            where, f".npy header: fortran_order {d['fortran_order']!r:.40}: expected a bool"
        )
    if not isinstance(d["descr"], str):
        raise UnsupportedDTypeError(f"{where}: structured arrays are not supported")
    try:
        dtype = DType.from_numpy(d["descr"])
    except UnsupportedDTypeError as exc:
        raise UnsupportedDTypeError(f"{where}: {exc}") from None
    return dtype, shape, d["fortran_order"]


def _is_archive(src: ByteSource) -> bool:
    """numpy.load's test: an archive by its first bytes, an array by the .npy magic."""
    spath = src.name
    magic = src.read_at(0, len(NPY_MAGIC))
    if magic.startswith(ZIP_PREFIXES):
        return True
    if magic == NPY_MAGIC:
        return False
    raise FormatError(
        spath, f"expected an .npz (zip) or .npy (\\x93NUMPY) file, found first bytes {magic!r}"
    )


def _members(z: zipfile.ZipFile, spath: str) -> list[zipfile.ZipInfo]:
    """The archive's members, each an ``.npy`` numpy can read without surprises."""
    out: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    for info in z.infolist():
        where = f"{spath}[{info.filename}]"
        if not info.filename.endswith(".npy"):
            raise FormatError(where, "an .npz member that is not an .npy array")
        if info.filename in seen:
            raise FormatError(where, "the archive holds two members of this name")
        seen.add(info.filename)
        if info.flag_bits & 1:
            raise FormatError(where, "the member is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise FormatError(
                    where,
                    f"a stored member of {info.file_size} bytes occupying {info.compress_size}",
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 1024:
                raise FormatError(
                    where,
                    f"claims {info.file_size} bytes from {info.compress_size} deflated, more "
                    "than deflate can expand",
                )
        else:
            raise FormatError(
                where,
                f"compression method {info.compress_type}: numpy writes stored or deflate members",
            )
        out.append(info)
    return out


def read_npz_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an ``.npz`` (or ``.npy``) file from its array headers.

    Args:
        path: the archive.

    Returns:
        A :class:`Manifest` with inferred roles.

    Raises:
        FormatError: unreadable archive or member header.

    Example:
        >>> import tempfile, numpy as np
        >>> path = f"{tempfile.mkdtemp()}/weights.npz"
        >>> np.savez(path, **{"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(2)})
        >>> m = read_npz_manifest(path)
        >>> m["fc.weight"].shape, m["fc.bias"].dtype, m.roles
        ((2, 3), <DType.F64: 'F64'>, <RoleSource.INFERRED: 'inferred'>)
    """
    spath = os.fspath(path)
    with opened(spath) as src:
        return _npz_manifest(src, spath)


def _npz_manifest(src: ByteSource, spath: str) -> Manifest:
    entries: list[Entry] = []
    try:
        if not _is_archive(src):
            f = as_file(src)
            dtype, shape, _ = read_npy_header(f, spath)
            _check_size(spath, dtype, shape, src.size - f.tell())
            name = os.path.basename(spath).rsplit(".", 1)[0]
            entries.append(_entry(name, dtype, shape))
        else:
            with zipfile.ZipFile(as_file(src)) as z:
                for info in _members(z, spath):
                    with z.open(info) as f:
                        where = f"{spath}[{info.filename}]"
                        dtype, shape, _ = read_npy_header(f, where)
                        _check_size(where, dtype, shape, info.file_size - f.tell())
                    entries.append(_entry(info.filename[:-4], dtype, shape))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise FormatError(spath, f"not a readable .npz archive: {exc}") from None
    except zlib.error as exc:
        raise FormatError(spath, f"a deflated member does not inflate: {exc}") from None
    return Manifest(entries, format=Format.NUMPY, source=spath, roles=RoleSource.INFERRED)


def _check_size(where: str, dtype: DType, shape: tuple[int, ...], have: int) -> None:
    """Refuse a header claiming more bytes than follow it (before numpy allocates them)."""
    need = dtype.nbytes(math.prod(shape))
    if need > have:
        raise FormatError(
            where, f".npy header: shape {shape} of {dtype.value} needs {need} bytes, {have} follow"
        )


def _entry(name: str, dtype: DType, shape: tuple[int, ...]) -> Entry:
    role = infer_role(name, dtype, shape)
    return Entry(name, shape, dtype, role=role, trainable=role.value == "param")


def load_npz(path: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of an ``.npz`` / ``.npy`` file (``allow_pickle=False``).

    The members read are exactly those :func:`read_npz_manifest` lists, in its order, and
    each array must have the dtype and shape its header gave the manifest.

    Args:
        path: the archive.

    Yields:
        Names and tensors.

    Raises:
        FormatError: a member numpy cannot read, or reads otherwise than its header says.

    Example:
        >>> import tempfile, numpy as np
        >>> path = f"{tempfile.mkdtemp()}/weights.npz"
        >>> np.savez(path, **{"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(2)})
        >>> {name: (tuple(t.shape), t.dtype) for name, t in load_npz(path)}
        {'fc.weight': ((2, 3), torch.float32), 'fc.bias': ((2,), torch.float64)}
    """
    spath = os.fspath(path)
    with opened(spath) as src:
        m = _npz_manifest(src, spath)  # validates headers (refuses object arrays) first
        if not _is_archive(src):
            (e,) = m.values()
            arr = _read_array(as_file(src), spath, e)
            yield e.name, _to_torch(arr)
            return
        with zipfile.ZipFile(as_file(src)) as z:
            yield from _member_arrays(z, m, spath)


def _member_arrays(z: zipfile.ZipFile, m: Manifest, spath: str) -> Iterator[tuple[str, Any]]:
    """The arrays of an archive's members, in the manifest's order, as torch tensors."""
    for info, e in zip(_members(z, spath), m.values(), strict=True):
        where = f"{spath}[{info.filename}]"
        with z.open(info) as f:
            arr = _read_array(f, where, e)
        yield e.name, _to_torch(arr)


def _read_array(f: IO[bytes], where: str, e: Entry) -> Any:
    from numpy.lib import format as npformat

    try:
        arr = npformat.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        text = " ".join(str(exc).split())[:200]
        raise FormatError(where, f"numpy cannot read the array: {text}") from None
    got = (tuple(arr.shape), arr.dtype.str)
    if got != (e.shape, e.dtype.to_numpy()):
        raise FormatError(
            where,
            f"the header says {e.shape} of {e.dtype.to_numpy()}, numpy reads {got[0]} of "
            f"{got[1]}: refused",
        )
    return arr


def _to_torch(a: Any) -> torch.Tensor:
    import numpy as np
    import torch

    # np.ascontiguousarray returns at least one dimension: keep 0-d arrays 0-d.
    return torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape))
