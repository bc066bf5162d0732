"""Tensors viewing a safetensors file: made from a private mmap when first read (torch).

:func:`paramscope.load` keeps an entry's header row until its tensor is asked for
(:class:`LazyTensors`), then views a copy-on-write mapping of its file (no copy when aligned),
so loading 1.4 M entries costs the header's rows and a few dict slots each.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._errors import UnsupportedDTypeError
from ._safetensors_rules import Header
from ._source import LocalSource

if TYPE_CHECKING:
    import torch

__all__ = ["LazyTensors", "load_tensors", "open_mmap", "tensor_from_buffer", "torch_shape"]


def torch_shape(dtype: DType, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """The shape torch holds an entry's bytes in: FP4 packs two values a byte.

    Args:
        dtype: the entry's dtype.
        shape: its logical shape.
        name: for errors.

    Returns:
        ``shape``, with the last dimension halved for ``F4``.

    Raises:
        UnsupportedDTypeError: ``F4`` with an odd last dimension.

    Example:
        >>> torch_shape(DType.F4, (3, 8), "w"), torch_shape(DType.F32, (3, 8), "w")
        ((3, 4), (3, 8))
    """
    if dtype is DType.F4:
        if not shape or shape[-1] % 2:
            raise UnsupportedDTypeError(
                f"entry {name!r}: F4 with an odd last dimension {shape} has no torch layout"
            )
        return (*shape[:-1], shape[-1] // 2)
    return shape


def tensor_from_buffer(
    buf: Any, offset: int, dtype: DType, shape: tuple[int, ...], name: str
) -> torch.Tensor:
    """A tensor viewing ``buf`` (no copy when aligned), for one stored entry.

    Args:
        buf: a writable buffer (a copy-on-write mmap).
        offset: byte offset of the entry in ``buf``.
        dtype: its dtype.
        shape: its logical shape.
        name: for errors.

    Returns:
        The tensor.
    """
    import torch

    tdt = dtype.to_torch()
    tshape = torch_shape(dtype, shape, name)
    nbytes = dtype.nbytes(_prod(shape))
    if nbytes == 0:
        return torch.empty(tshape, dtype=tdt)
    itemsize = tdt.itemsize
    if offset % itemsize == 0:
        t = torch.frombuffer(buf, dtype=tdt, count=nbytes // itemsize, offset=offset)
    else:  # unaligned: copy into an aligned allocation
        raw = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=offset)
        t = raw.clone().view(tdt)
    return t.reshape(tshape)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class RemoteSpans:
    """What a mapping is to a local file, for a URL: each span read is one range request.

    Args:
        path: the URL.
    """

    def __init__(self, path: str) -> None:
        from ._remote import RemoteSource

        self._src = RemoteSource(path)

    def span(self, start: int, end: int) -> bytearray:
        """Bytes ``start … end - 1`` of the file, in a fresh writable buffer."""
        return bytearray(self._src.read_at(start, end - start))

    def close(self) -> None:
        self._src.close()


def open_mmap(path: str) -> Any:
    """Map a file copy-on-write (writes stay private); empty files give ``b""``; a URL gives
    a :class:`RemoteSpans` (read entry by entry with range requests).

    Args:
        path: the file.

    Returns:
        The mapping.
    """
    from .._files import is_url

    if is_url(path):
        return RemoteSpans(path)
    with LocalSource(path) as src:  # a mapping outlives the descriptor it was made from
        return src.mmap()


def _entry_tensor(mm: Any, start: int, dtype: DType, shape: tuple[int, ...], name: str) -> Any:
    """The tensor of one entry at byte ``start`` of a mapping (or of a remote file)."""
    if isinstance(mm, RemoteSpans):
        buf = mm.span(start, start + dtype.nbytes(_prod(shape)))
        return tensor_from_buffer(buf, 0, dtype, shape, name)
    return tensor_from_buffer(mm, start, dtype, shape, name)


def load_tensors(h: Header, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Tensors of the stored entries ``names``, viewing a private mmap of the file (lazy).

    Args:
        h: the parsed header of the file.
        names: stored names to load.

    Returns:
        name → tensor.

    Raises:
        UnsupportedDTypeError: for dtypes torch lacks, or on big-endian machines.
    """
    if sys.byteorder != "little":  # pragma: no cover
        raise UnsupportedDTypeError("safetensors data is little-endian; this machine is not")
    names = list(names)
    if not names:
        return {}
    mm = open_mmap(h.path)
    out = {}
    for name in names:
        dtype, shape, begin, _ = h.tensors[name]
        out[name] = _entry_tensor(mm, h.data_start + begin, dtype, shape, name)
    return out


class _Row:
    """A lazy entry of a file other than a :class:`LazyTensors`' first."""

    __slots__ = ("file", "row")

    def __init__(self, file: int, row: tuple[DType, tuple[int, ...], int, int]) -> None:
        self.file = file
        self.row = row


class LazyTensors(dict):  # type: ignore[type-arg]
    """name → tensor of stored safetensors entries, each made when first read.

    Until then an entry's value is its header row, the very tuple the parsed header holds (so
    a lazy entry costs one dict slot); reading it through ``[]`` makes a tensor viewing a
    private copy-on-write mmap of its file (no copy when aligned) and keeps it, so a name
    gives the same tensor each time and changes to it stay. :meth:`values` and :meth:`items`
    make the tensors they yield without keeping them, so a sum over 1.4 M entries stays small.
    Real tensors may be stored too (``d[name] = t``).

    Example:
        >>> import tempfile, torch, paramscope
        >>> path = paramscope.save({"b": torch.arange(3.0)}, f"{tempfile.mkdtemp()}/m.safetensors")
        >>> lazy = paramscope.load(path)._values
        >>> type(lazy).__name__, type(dict.__getitem__(lazy, "b")).__name__  # a header row
        ('LazyTensors', 'tuple')
        >>> lazy["b"].tolist(), lazy["b"] is lazy["b"]  # read: a tensor, kept
        ([0.0, 1.0, 2.0], True)
    """

    __slots__ = ("_files",)

    def __init__(self) -> None:
        super().__init__()
        self._files: list[list[Any]] = []  # [header, mmap or None] per file

    def add_file(self, h: Header) -> int:
        """Register a file whose entries will be put; returns its number for :meth:`put`.

        Args:
            h: the file's parsed header.

        Returns:
            The file's number.
        """
        if sys.byteorder != "little":  # pragma: no cover
            raise UnsupportedDTypeError("safetensors data is little-endian; this machine is not")
        self._files.append([h, None])
        return len(self._files) - 1

    def put(self, name: str, file: int, stored: str) -> None:
        """Make ``name`` the lazy value of entry ``stored`` of file ``file``.

        Args:
            name: the key.
            file: a number from :meth:`add_file`.
            stored: the entry's name in that file's header.

        Raises:
            UnsupportedDTypeError: torch cannot hold the entry (checked now, not on first use).
        """
        row = self._files[file][0].tensors[stored]
        dtype, shape = row[0], row[1]
        if dtype not in _LOADABLE:
            _loadable(dtype)
        if dtype is DType.F4:
            torch_shape(dtype, shape, name)
        dict.__setitem__(self, name, row if file == 0 else _Row(file, row))

    def is_made(self, name: str) -> bool:
        """Whether ``name``'s tensor exists already (read before, or stored as a tensor).

        Args:
            name: the key.

        Returns:
            True once it is a tensor.
        """
        v = dict.__getitem__(self, name)
        return type(v) is not tuple and type(v) is not _Row

    def _make(self, name: str, v: Any) -> Any:
        if type(v) is tuple:
            file, row = 0, v
        elif type(v) is _Row:
            file, row = v.file, v.row
        else:
            return v
        slot = self._files[file]
        if slot[1] is None:
            slot[1] = open_mmap(slot[0].path)
        dtype, shape, begin, _ = row
        return _entry_tensor(slot[1], slot[0].data_start + begin, dtype, shape, name)

    def __getitem__(self, name: str) -> Any:
        v = dict.__getitem__(self, name)
        t = self._make(name, v)
        if t is not v:
            dict.__setitem__(self, name, t)
        return t

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if dict.__contains__(self, name) else default

    def pop(self, name: str, *default: Any) -> Any:  # type: ignore[override]
        if not dict.__contains__(self, name):
            return dict.pop(self, name, *default)
        return self._make(name, dict.pop(self, name))

    def values(self) -> Any:  # type: ignore[override]
        return (self._make(k, v) for k, v in dict.items(self))

    def items(self) -> Any:  # type: ignore[override]
        return ((k, self._make(k, v)) for k, v in dict.items(self))

    def copy(self) -> LazyTensors:
        out = LazyTensors()
        out._files = self._files
        dict.update(out, self)
        return out

    def __reduce__(self) -> Any:
        return (dict, (dict(self.items()),))

    def __repr__(self) -> str:
        made = sum(1 for k in self if self.is_made(k))
        return f"LazyTensors({len(self)} entries, {made} read)"


_LOADABLE: dict[DType, bool] = {}


def _loadable(dtype: DType) -> bool:
    dtype.to_torch()  # raises UnsupportedDTypeError when torch lacks it
    _LOADABLE[dtype] = True
    return True
