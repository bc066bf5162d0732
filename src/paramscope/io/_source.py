"""The one way io reads bytes: a :class:`ByteSource`, "these bytes at this offset".

Every format reader (the safetensors header parser, the sharded index, torch ``.pt``/``.bin``,
``.npz``/``.npy``, DCP's ``.metadata`` and sidecar) and the streaming
:class:`~paramscope.io._reader.SourceReader` read through a ByteSource that
:func:`open_source` opens, never by opening a path themselves. A new kind of storage (fsspec
URLs: s3, http, hf, a later issue) is therefore one more ByteSource here, and every format
reads from it.

Two kinds: :class:`~paramscope.io._remote.RemoteSource` for URLs (range requests through
fsspec, see :mod:`paramscope.io._remote`), and :class:`LocalSource`: a regular local file,
opened through
:func:`paramscope._files.open_regular` (a FIFO, a device or a socket is refused without
blocking) and read with positioned reads (``os.pread``), so two reads never share a file
position. Formats built on ``zipfile`` or ``pickle`` (torch, npz, DCP metadata) hand them
:func:`as_file`, a buffered, seekable file object over the source.

What stays path based, on purpose: memory-mapping for lazy loading (:meth:`LocalSource.mmap`,
a local file's privilege), writing (:mod:`paramscope._atomic`), and the loaders that hand a
path to a library (``torch.load``, DCP's chunk reader).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from .._errors import FormatError
from .._files import open_regular

__all__ = ["ByteSource", "Cursor", "LocalSource", "as_file", "open_source", "opened"]


@runtime_checkable
class ByteSource(Protocol):
    """Bytes at offsets: what every format reader reads through.

    Attributes:
        name: the source's name in messages (a path, later a URL).
        size: its length in bytes when it was opened.
        identity: what a cached parse of it is keyed on (for a local file: device, inode,
            size and modification time); ``None`` means never reuse a parse.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as t:
        ...     _ = t.write(b"0123456789"); t.flush()
        ...     with open_source(t.name) as src:
        ...         isinstance(src, ByteSource), src.read_at(3, 4), src.size
        (True, b'3456', 10)
    """

    name: str
    size: int
    identity: tuple[Any, ...] | None

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``; fewer only where the source ends."""
        ...

    def readinto_at(self, offset: int, buf: Any) -> int:
        """Fill the writable buffer ``buf`` from ``offset``; the bytes read (short at the end)."""
        ...

    def close(self) -> None:
        """Release what the source holds (a file descriptor)."""
        ...


class LocalSource:
    """A regular local file as a :class:`ByteSource` (positioned reads, no shared position).

    Args:
        path: the file; symlinks are followed to what they name, which must be regular.

    Raises:
        FormatError: the path names a FIFO, a device, a socket or a folder.
        OSError: it cannot be opened.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with open(f"{d}/data.bin", "wb") as f:
        ...     _ = f.write(b"0123456789")
        >>> with LocalSource(f"{d}/data.bin") as src:
        ...     src.size, src.read_at(2, 4), src.read_at(8, 8)  # short at the end
        (10, b'2345', b'89')
        >>> LocalSource(d)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.FormatError: ...: expected a regular file, found a folder
    """

    __slots__ = ("_fd", "_file", "identity", "name", "size")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        self._file: BinaryIO | None = open_regular(path)
        self._fd = self._file.fileno()
        st = os.fstat(self._fd)
        self.size: int = st.st_size
        self.identity: tuple[Any, ...] | None = (
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
        )

    def __enter__(self) -> LocalSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalSource({self.name!r}, {self.size} bytes)"

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``; fewer only where the file ends.

        Args:
            offset: the byte position.
            n: how many bytes.

        Returns:
            The bytes.
        """
        if n <= 0:
            return b""
        data = _pread(self._fd, n, offset)
        if 0 < len(data) < n:  # a short read before the end (signals, pipes of the OS): go on
            parts, got = [data], len(data)
            while got < n:
                more = _pread(self._fd, n - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def readinto_at(self, offset: int, buf: Any) -> int:
        """Fill ``buf`` (any writable buffer) with the bytes from ``offset``.

        Args:
            offset: the byte position.
            buf: the destination.

        Returns:
            The bytes read: ``len(buf)``, or fewer where the file ends.
        """
        mv = memoryview(buf).cast("B")
        total = 0
        while total < len(mv):
            got = _preadinto(self._fd, mv[total:], offset + total)
            if not got:
                break
            total += got
        return total

    def fileno(self) -> int:
        """The open file descriptor (owned by this source: do not close it)."""
        return self._fd

    def mmap(self) -> Any:
        """The file mapped copy-on-write (changes stay private); ``b""`` when it is empty.

        Returns:
            The mapping.
        """
        import mmap

        if os.fstat(self._fd).st_size == 0:
            return b""
        return mmap.mmap(self._fd, 0, access=mmap.ACCESS_COPY)


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - no pread (Windows)
    return os.read(fd, n)  # pragma: no cover


def _preadinto(fd: int, mv: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [mv], offset)
    data = _pread(fd, len(mv), offset)  # pragma: no cover - no preadv
    mv[: len(data)] = data  # pragma: no cover
    return len(data)  # pragma: no cover


def open_source(source: str | os.PathLike[str] | ByteSource) -> ByteSource:
    """Open what a reader was given as a :class:`ByteSource`.

    Args:
        source: a local path, a URL (``s3://``, ``http(s)://``, ``hf://`` …: a
            :class:`~paramscope.io._remote.RemoteSource`, read with range requests), or a
            ByteSource already open (returned as is).

    Returns:
        The source; the caller closes one it opened (see :func:`opened`).

    Raises:
        FormatError: a path naming something other than a regular file.
        OSError: it cannot be opened.

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/data.bin"
        >>> with open(path, "wb") as f:
        ...     _ = f.write(b"0123456789")
        >>> src = open_source(path)
        >>> src.read_at(0, 4), open_source(src) is src
        (b'0123', True)
        >>> src.close()
    """
    from ._remote import as_path, is_url

    if is_url(source):
        p = as_path(source)  # a file:// URL is a local path
        if isinstance(p, Path):
            return LocalSource(p)
        from ._remote import RemoteSource

        return RemoteSource(p)
    if isinstance(source, (str, os.PathLike)):
        return LocalSource(source)
    return source


@contextmanager
def opened(source: str | os.PathLike[str] | ByteSource) -> Iterator[ByteSource]:
    """:func:`open_source` as a context: closes the source only if it opened it.

    Args:
        source: a path or an open ByteSource.

    Yields:
        The ByteSource.

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/data.bin"
        >>> with open(path, "wb") as f:
        ...     _ = f.write(b"0123456789")
        >>> with opened(path) as src:  # opened here: closed on leaving
        ...     src.read_at(0, 16)
        b'0123456789'
        >>> with LocalSource(path) as mine:
        ...     with opened(mine) as src:  # given: left open
        ...         same = src is mine
        ...     same, mine.read_at(7, 3)
        (True, b'789')
    """
    src = open_source(source)
    try:
        yield src
    finally:
        if src is not source:
            src.close()


class _Raw(io.RawIOBase):
    """A ByteSource (or ``size`` bytes of it from ``start``) as an unbuffered, seekable,
    read-only raw stream."""

    def __init__(self, src: ByteSource, start: int = 0, size: int | None = None) -> None:
        super().__init__()
        self._src = src
        self._start = start
        self._size = src.size - start if size is None else size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(22, "Invalid argument: negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self._size - self._pos))
        if n == 0:
            return 0
        mv = memoryview(b).cast("B")
        got = self._src.readinto_at(self._start + self._pos, mv[:n] if n < len(mv) else mv)
        self._pos += got
        return got


class Cursor:
    """Sequential, bounds-checked reads of a header through a ByteSource, a chunk at a time
    (the GGUF and Flax msgpack parsers read through one).

    A local file is read in chunks of ``local_chunk`` bytes; a remote one from 16 KiB, each
    chunk a request whose bytes are paid for, doubling up to ``grow_to`` when given (a header's
    length is known only once it is read). Every read is checked against the file's size and
    a short read is an error naming the offset.

    Args:
        src: the source.
        path: the name in errors (default: the source's).
        local_chunk: bytes per read of a local file.
        grow_to: the largest chunk a remote read grows to; ``None``: 16 KiB throughout.

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/data.bin"
        >>> with open(path, "wb") as f:
        ...     _ = f.write(b"0123456789")
        >>> with opened(path) as src:
        ...     c = Cursor(src, local_chunk=4)
        ...     c.take(3, "head"), c.skip(5, "body"), c.take(2, "tail")
        (b'012', None, b'89')
    """

    def __init__(
        self,
        src: ByteSource,
        path: str | None = None,
        *,
        local_chunk: int,
        grow_to: int | None = None,
    ) -> None:
        self.src = src
        self.path = src.name if path is None else path
        self.size = src.size
        self.pos = 0
        self.base = 0
        self.buf = b""
        self.chunk = local_chunk if isinstance(src, LocalSource) else 1 << 14
        self._grow_to = grow_to

    def fail(self, problem: str) -> FormatError:
        """The error to raise for ``problem`` at this file (subclasses name their own)."""
        return FormatError(self.path, problem)

    def _fill(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise self.fail(
                f"{what}: expected {n} bytes at offset {self.pos}, the {self.size}-byte file "
                "ends first"
            )
        self.buf = self.src.read_at(self.pos, max(n, self.chunk))
        if self._grow_to is not None:
            self.chunk = min(2 * self.chunk, self._grow_to)
        self.base = self.pos
        if len(self.buf) < n:  # the source shrank under us
            raise self.fail(f"{what}: the file ends at offset {self.pos + len(self.buf)}")

    def take(self, n: int, what: str) -> bytes:
        """The next ``n`` bytes (``what`` names them in errors)."""
        off = self.pos - self.base
        if off < 0 or off + n > len(self.buf):
            self._fill(n, what)
            off = 0
        self.pos += n
        return self.buf[off : off + n]

    def skip(self, n: int, what: str) -> None:
        """Move past ``n`` bytes without reading them."""
        if n > self.size - self.pos:
            raise self.fail(
                f"{what}: {n} bytes at offset {self.pos} run past the end of the "
                f"{self.size}-byte file"
            )
        self.pos += n


def as_file(
    src: ByteSource, buffer_size: int | None = None, *, start: int = 0, size: int | None = None
) -> BinaryIO:
    """A buffered, seekable binary file object reading ``src`` (for ``zipfile``, ``pickle``).

    Closing it leaves ``src`` open: the source's owner closes it.

    Args:
        src: the source.
        buffer_size: bytes read ahead per positioned read (default 64 KiB for a local file,
            256 bytes for a remote one, where each read is a request and its bytes are paid
            for: a zip member's local header costs a request of 256 bytes, not 4 KiB; larger
            reads bypass the buffer).
        start: the first byte of the window the file object shows (a zip member stored
            uncompressed, read in place).
        size: the window's length (default: to the end of ``src``).

    Returns:
        A file object positioned at 0.

    Example:
        >>> import tempfile, zipfile
        >>> path = f"{tempfile.mkdtemp()}/data.zip"
        >>> with zipfile.ZipFile(path, "w") as z:
        ...     z.writestr("model/data.pkl", b"...")
        >>> with opened(path) as src:
        ...     zipfile.ZipFile(as_file(src)).namelist()
        ['model/data.pkl']
    """
    if buffer_size is None:
        buffer_size = 1 << 16 if isinstance(src, LocalSource) else 256
    return io.BufferedReader(_Raw(src, start, size), buffer_size)  # type: ignore[return-value]
