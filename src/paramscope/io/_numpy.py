"""numpy ``.npz`` archives (and single ``.npy`` files), headers read with the stdlib.

Each ``.npy`` member starts with a small header (a Python dict literal with ``descr``,
``fortran_order`` and ``shape``), parsed with :func:`ast.literal_eval`; object arrays are
refused, since loading them would unpickle.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from .._dtypes import DType
from .._enums import Format, RoleSource
from .._errors import FormatError, UnsupportedDTypeError
from .._manifest import Entry, Manifest, infer_role

if TYPE_CHECKING:
    import torch

__all__ = ["NPY_MAGIC", "load_npz", "read_npy_header", "read_npz_manifest"]

NPY_MAGIC = b"\x93NUMPY"


def read_npy_header(f: IO[bytes], where: str) -> tuple[DType, tuple[int, ...], bool]:
    """Parse the header of one ``.npy`` stream.

    Args:
        f: a binary stream positioned at the start of the array.
        where: the file (and member) for errors.

    Returns:
        ``(dtype, shape, fortran_order)``.

    Raises:
        FormatError: malformed header.
        UnsupportedDTypeError: object, structured or big-endian arrays.
    """
    head = f.read(10)
    if len(head) < 10 or head[:6] != NPY_MAGIC:
        raise FormatError(where, "expected a .npy header (\\x93NUMPY)")
    major = head[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", head[8:10])
    else:
        (hlen,) = struct.unpack("<I", head[8:10] + f.read(2))
    if hlen > 1 << 20:
        raise FormatError(where, f".npy header of {hlen} bytes is too large")
    try:
        d = ast.literal_eval(f.read(hlen).decode("latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        # TypeError: an unhashable key; MemoryError / RecursionError: nesting too deep
        raise FormatError(where, f".npy header is not a dict literal: {exc!r:.200}") from None
    if not isinstance(d, dict) or not {"descr", "shape", "fortran_order"} <= d.keys():
        raise FormatError(where, ".npy header: expected keys descr, shape, fortran_order")
    if not isinstance(d["descr"], str):
        raise UnsupportedDTypeError(f"{where}: structured arrays are not supported")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise FormatError(where, f".npy header: bad shape {shape!r}")
    try:
        dtype = DType.from_numpy(d["descr"])
    except UnsupportedDTypeError as exc:
        raise UnsupportedDTypeError(f"{where}: {exc}") from None
    return dtype, shape, bool(d["fortran_order"])


def _members(z: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [i for i in z.infolist() if i.filename.endswith(".npy")]


def read_npz_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an ``.npz`` (or ``.npy``) file from its array headers.

    Args:
        path: the archive.

    Returns:
        A :class:`Manifest` with inferred roles.

    Raises:
        FormatError: unreadable archive or member header.
    """
    spath = os.fspath(path)
    entries: list[Entry] = []
    if not zipfile.is_zipfile(spath):
        with open(spath, "rb") as f:
            dtype, shape, _ = read_npy_header(f, spath)
            _check_size(spath, dtype, shape, os.fstat(f.fileno()).st_size - f.tell())
        name = os.path.basename(spath).rsplit(".", 1)[0]
        entries.append(_entry(name, dtype, shape))
    else:
        try:
            with zipfile.ZipFile(spath) as z:
                for info in _members(z):
                    with z.open(info) as f:
                        where = f"{spath}[{info.filename}]"
                        dtype, shape, _ = read_npy_header(f, where)
                        _check_size(where, dtype, shape, info.file_size - f.tell())
                    entries.append(_entry(info.filename[:-4], dtype, shape))
        except zipfile.BadZipFile as exc:
            raise FormatError(spath, f"not a readable .npz archive: {exc}") from None
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

    Args:
        path: the archive.

    Yields:
        Names and tensors.
    """
    import numpy as np

    spath = os.fspath(path)
    read_npz_manifest(spath)  # validates headers (refuses object arrays) before numpy reads
    loaded: Any = np.load(spath, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        yield (
            os.path.basename(spath).rsplit(".", 1)[0],
            _to_torch(loaded),
        )
        return
    with loaded:
        for name in loaded.files:
            yield name, _to_torch(loaded[name])


def _to_torch(a: Any) -> torch.Tensor:
    import numpy as np
    import torch

    # np.ascontiguousarray returns at least one dimension: keep 0-d arrays 0-d.
    return torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape))
