"""Reading a checkpoint's stored tensors one at a time: bounded memory whatever its size.

Each stored tensor is read into fresh memory with one positioned read through a
:class:`~paramscope.io._source.ByteSource` (not a memory map, whose touched pages would count
against the process until it ends). Streaming operations (convert, diff, verify, count's value
pass, prune / quantize into a new file) read through :class:`SourceReader`, transform, write
(:func:`paramscope.io._writer.write_stream`) and free each tensor before the next one is read,
so their peak memory is about twice the largest tensor plus a constant. Sources whose tensors
have a byte location in the file (safetensors, sharded folders, torch zip checkpoints) stream;
legacy torch pickles and .npz archives are loaded whole first (said in a note).

:meth:`SourceReader.stream` reads ahead in a background thread while the caller works on the
current tensor, within a byte budget over the buffers it handed out that are still alive.
Large buffers come from :func:`empty_bytes`: anonymous memory advised for 2 MiB pages, which
the kernel faults in ~5x faster than 4 KiB pages (a fresh 64 MiB buffer costs 16,384 page
faults otherwise, more than the read itself from the page cache).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._enums import Format
from .._errors import ArgumentError, FormatError
from .._manifest import Entry, Manifest
from .._target_kind import model_target_error
from ._source import ByteSource, open_source

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_OPEN", "SourceReader", "empty_bytes"]

#: Source files a :class:`SourceReader` keeps open at once (entries are read file by file, so
#: a few suffice); a checkpoint of thousands of shards stays far below ``ulimit -n``.
MAX_OPEN = 16

#: Buffers from this size up are mapped anonymously and advised for huge pages (Linux).
HUGE_MIN = 4 << 20


def _owned_bytes(n: int) -> tuple[torch.Tensor, Any]:
    """``(a fresh uint8 tensor of n bytes, the object owning its memory)``; the owner lives
    exactly as long as some tensor uses the memory (it can be watched with ``weakref``)."""
    import torch

    if n == 0:  # numpy's empty array becomes a stride-0 tensor, which no dtype view accepts
        t = torch.empty(0, dtype=torch.uint8)
        return t, t
    if n >= HUGE_MIN and sys.platform == "linux":
        m = _huge(n)
        if m is not None:
            return torch.frombuffer(m, dtype=torch.uint8), m
    import numpy as np

    a = np.empty(n, dtype=np.uint8)
    return torch.from_numpy(a), a


def _huge(n: int) -> Any:
    """An anonymous private mapping of ``n`` bytes advised for huge pages, or ``None``."""
    import mmap

    try:
        m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError, OverflowError):  # no address space left: malloc says so
        return None
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if advise is not None:
        with contextlib.suppress(OSError):  # THP compiled out: 4 KiB pages, still correct
            m.madvise(advise)
    return m


def empty_bytes(n: int) -> torch.Tensor:
    """A fresh uint8 tensor of ``n`` bytes (uninitialised), cheap to fault in when large.

    From :data:`HUGE_MIN` bytes up (on Linux) it is anonymous memory advised for transparent
    huge pages, freed (unmapped) when the last tensor using it goes; smaller ones are plain
    allocations.

    Args:
        n: the byte count.

    Returns:
        The tensor.

    Example:
        >>> empty_bytes(8).fill_(7).tolist()
        [7, 7, 7, 7, 7, 7, 7, 7]
    """
    return _owned_bytes(n)[0]


class SourceReader:
    """Reads the stored tensors of a checkpoint one at a time, in file order.

    Args:
        path: any checkpoint source (not a model TARGET: it has no values).

    Raises:
        TargetError: ``path`` names a model (``zoo:``, ``module:callable``, a config).

    Example:
        >>> import tempfile, torch, paramscope
        >>> sd = {"w": torch.ones(2, 3), "b": torch.arange(3.0)}
        >>> path = paramscope.save(sd, f"{tempfile.mkdtemp()}/model.safetensors")
        >>> with SourceReader(path) as r:
        ...     for entry in r.entries:
        ...         print(entry.name, r.read(entry).sum().item())
        w 6.0
        b 3.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from . import read_manifest

        err = model_target_error(path, "reading tensor values")
        if err is not None:
            raise err
        self.path = os.fspath(path)
        self.manifest: Manifest = read_manifest(path)
        stored = [e for e in self.manifest.values() if e.tie is None]
        self.streaming = all(e.location is not None for e in stored)
        key: Callable[[Entry], Any] = (
            (lambda e: (e.location.file, e.location.offset))  # type: ignore[union-attr]
            if self.streaming
            else (lambda e: 0)
        )
        self.entries: list[Entry] = sorted(stored, key=key)  # GGUF: see _gguf_load
        self._gguf: dict[str, Any] = {}
        if self.manifest.format is Format.GGUF:  # block types come back as float32 values
            from ._gguf_load import logical_entries

            self.entries = logical_entries(self.entries, self._gguf)
        self.aliases = {e.name: e.tie for e in self.manifest.values() if e.tie is not None}
        self._files: OrderedDict[str, ByteSource] = OrderedDict()  # most recently used last
        self._whole: Any = None
        self._budget: _Budget | None = None
        self._active: tuple[_Budget, threading.Thread] | None = None  # the running stream
        self.notes: list[str] = []
        if not self.streaming:
            self.notes.append(
                f"{self.manifest.format.value} source without byte locations: loaded whole, "
                "memory not bounded by the largest tensor"
            )

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop a stream still running and close the sources opened for reading."""
        if self._active is not None:
            self._stop_stream(*self._active)
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._whole = None

    def _file(self, path: str) -> ByteSource:
        """The source ``path``, opened on first use; at most :data:`MAX_OPEN` stay open."""
        f = self._files.get(path)
        if f is not None:
            self._files.move_to_end(path)
            return f
        while len(self._files) >= MAX_OPEN:  # a source of thousands of shards: close the oldest
            self._files.popitem(last=False)[1].close()
        f = self._files[path] = open_source(path)
        return f

    def _alloc(self, n: int) -> torch.Tensor:
        """A buffer for one read, counted while alive when a :meth:`stream` watches it."""
        t, owner = _owned_bytes(n)
        budget = self._budget
        if budget is not None:
            budget.take(owner, n)
        return t

    def _fill(self, e: Entry, mv: Any, start: int = 0) -> None:
        """Read bytes of ``e`` from byte ``start`` of its data into the writable buffer
        ``mv`` (as many as it holds: by default the whole entry)."""
        loc = e.location
        assert loc is not None
        f = self._file(loc.file)
        n = len(memoryview(mv).cast("B"))
        try:
            got = f.readinto_at(loc.offset + start, mv)
        except OSError as exc:  # EIO and the like name no file: name the source
            if exc.filename is None and exc.errno is not None:
                raise OSError(exc.errno, exc.strerror, loc.file) from exc
            raise
        if got != n:
            raise FormatError(
                loc.file,
                f"entry {e.name!r}: expected {n} bytes at "
                f"offset {loc.offset + start}, the file ends after {got}",
            )

    @property
    def raw_ok(self) -> bool:
        """Whether :meth:`read_raw` works: every tensor has a byte location and is stored
        as it is read (not GGUF, whose block types are dequantised)."""
        return self.streaming and self.manifest.format is not Format.GGUF

    def read_raw(self, e: Entry) -> Any:
        """The stored bytes of one entry, in a fresh writable buffer, without torch.

        Large buffers are huge-page memory (see :func:`empty_bytes`). Only where
        :attr:`raw_ok`.

        Args:
            e: a stored entry of :attr:`entries`.

        Returns:
            A bytes-like object (``bytearray`` or ``mmap``) of ``e.nbytes`` bytes.

        Raises:
            FormatError: the file ends before the entry's bytes.

        Example:
            >>> import tempfile, torch, paramscope
            >>> path = paramscope.save({"b": torch.ones(2)}, f"{tempfile.mkdtemp()}/m.safetensors")
            >>> with SourceReader(path) as r:
            ...     bytes(r.read_raw(r.entries[0]))
            b'\\x00\\x00\\x80?\\x00\\x00\\x80?'
        """
        if not self.raw_ok:
            raise FormatError(self.path, "read_raw: this source's tensors are not stored raw")
        loc = e.location
        assert loc is not None
        n = loc.length
        buf: Any
        if n >= HUGE_MIN and sys.platform == "linux":
            buf = _huge(n)
            if buf is not None and self._budget is not None:
                self._budget.take(buf, n)
        else:
            buf = None
        if buf is None:
            buf = bytearray(n)
        if n:
            self._fill(e, buf)
        return buf

    def read_raw_part(self, e: Entry, start: int, n: int) -> bytearray:
        """``n`` stored bytes of one entry from byte ``start`` of its data, without torch
        (one positioned read: a sample of a large tensor costs only the bytes sampled).

        Only where :attr:`raw_ok`. Call it from the thread that uses the reader (it may
        open the entry's file), not while a :meth:`stream` runs.

        Args:
            e: a stored entry of :attr:`entries`.
            start: byte offset inside the entry's data.
            n: bytes to read.

        Returns:
            A fresh ``bytearray`` of ``n`` bytes.

        Raises:
            FormatError: the range is outside the entry, or the file ends before it.

        Example:
            >>> import tempfile, torch, paramscope
            >>> d = tempfile.mkdtemp()
            >>> path = paramscope.save({"b": torch.arange(4.0)}, f"{d}/m.safetensors")
            >>> with SourceReader(path) as r:
            ...     bytes(r.read_raw_part(r.entries[0], 4, 4))
            b'\\x00\\x00\\x80?'
        """
        if not self.raw_ok:
            raise FormatError(self.path, "read_raw_part: this source's tensors are not stored raw")
        loc = e.location
        assert loc is not None
        if start < 0 or n < 0 or start + n > loc.length:
            raise FormatError(
                loc.file,
                f"entry {e.name!r}: bytes {start}…{start + n} asked of its {loc.length}",
            )
        buf = bytearray(n)
        if n:
            self._fill(e, memoryview(buf), start)
        return buf

    def scan_raw(self, entries: Sequence[Entry] | None = None) -> Iterator[tuple[Entry, Any]]:
        """Each entry's stored bytes, read-only, for a pass that looks at them once and keeps
        nothing (a count, a histogram).

        Entries in local files are read through a read-only memory map: no copy, and the
        entry's pages are dropped from the process (``MADV_DONTNEED``; the page cache keeps
        them) when the caller asks for the next entry, so the memory held stays about the
        largest entry. Where that cannot be done (other sources, no ``madvise``), the
        entries come from :meth:`stream` (``raw=True``). Only where :attr:`raw_ok`. A file
        cut before the scan is an error; one cut by another process *during* the scan stops
        this one with ``SIGBUS``, as with any memory map (nothing is written by a scan).

        Args:
            entries: the entries (default: :attr:`entries`).

        Returns:
            An iterator of ``(entry, bytes-like)``; a buffer is valid until the next step.

        Raises:
            FormatError: a file ends before an entry's bytes.

        Example:
            >>> import tempfile, torch, paramscope
            >>> d = tempfile.mkdtemp()
            >>> path = paramscope.save({"b": torch.ones(2)}, f"{d}/m.safetensors")
            >>> with SourceReader(path) as r:
            ...     [(e.name, bytes(buf)) for e, buf in r.scan_raw()]
            [('b', b'\\x00\\x00\\x80?\\x00\\x00\\x80?')]
        """
        import mmap

        from ._source import LocalSource

        if not self.raw_ok:
            raise FormatError(self.path, "scan_raw: this source's tensors are not stored raw")
        todo = list(self.entries if entries is None else entries)
        files = {e.location.file for e in todo if e.location is not None}
        sources = {f: self._file(f) for f in files} if len(files) <= MAX_OPEN else {}
        if (
            not hasattr(mmap.mmap, "madvise")
            or not sources
            or not all(isinstance(s, LocalSource) for s in sources.values())
        ):
            yield from self.stream(todo, raw=True)
            return
        sizes = {f: os.fstat(s.fileno()).st_size for f, s in sources.items()}  # as it is now
        for e in todo:  # a file cut since it was opened: the error reads would give
            loc = e.location
            assert loc is not None
            if loc.offset + loc.length > sizes[loc.file]:
                raise FormatError(
                    loc.file,
                    f"entry {e.name!r}: expected {loc.length} bytes at offset {loc.offset}, "
                    f"the file ends after {max(0, sizes[loc.file] - loc.offset)}",
                )
        maps: dict[str, Any] = {}
        page = mmap.PAGESIZE
        try:
            for e in todo:
                loc = e.location
                assert loc is not None
                if loc.length == 0:
                    yield e, b""
                    continue
                m = maps.get(loc.file)
                if m is None:
                    fd = sources[loc.file].fileno()
                    m = maps[loc.file] = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                first = loc.offset - loc.offset % page
                end = loc.offset + loc.length
                with contextlib.suppress(OSError):
                    m.madvise(mmap.MADV_WILLNEED, first, end - first)
                try:
                    yield e, memoryview(m)[loc.offset : end]
                finally:  # (a view still alive afterwards reads the file again: still right)
                    with contextlib.suppress(OSError):  # whole pages only: none of another's
                        m.madvise(mmap.MADV_DONTNEED, first, (end - first) // page * page)
        finally:
            for m in maps.values():
                with contextlib.suppress(BufferError):  # a caller kept a view: GC closes it
                    m.close()

    @property
    def total_bytes(self) -> int:
        """Bytes of all stored tensors."""
        return sum(e.nbytes for e in self.entries)

    def read(self, e: Entry) -> torch.Tensor:
        """The tensor of one stored entry, in fresh memory the caller owns.

        Args:
            e: a stored entry of :attr:`entries`.

        Returns:
            The tensor (its storage dtype and shape; a GGUF block-typed tensor dequantised
            to float32 in its logical shape, as :attr:`entries` lists it).

        Raises:
            FormatError: the file ends before the entry's bytes.
        """
        from ._lazytensors import torch_shape

        if not self.streaming:
            if self._whole is None:
                from . import load

                self._whole = load(self.path)
            return self._whole[e.name]
        loc = e.location
        assert loc is not None
        f = self._file(loc.file)
        if self.manifest.format is Format.GGUF:
            from ._gguf_load import read_entry

            return read_entry(f, e, self._gguf.get(e.name))
        buf = self._alloc(loc.length)
        if loc.length:
            self._fill(e, memoryview(buf.numpy()))
        shape = torch_shape(e.dtype, e.shape, e.name)
        return buf.view(e.dtype.to_torch()).reshape(shape)

    def stream(
        self,
        entries: Sequence[Entry] | None = None,
        *,
        budget: int | None = None,
        depth: int = 2,
        raw: bool = False,
    ) -> Iterator[tuple[Entry, Any]]:
        """``(entry, tensor)`` for each entry in order, read ahead in a background thread.

        While the caller works on one tensor, a thread reads the next ones (at most
        ``depth`` waiting), as long as the buffers of this stream that are still alive
        (anywhere: the caller's, a writer's) plus the next one stay within ``budget`` bytes.
        When the caller waits for a tensor it is read whatever the budget, so the memory is
        never above what reading one tensor at a time would take plus ``budget``. An error
        of the reader is raised at the entry it concerns; closing the iterator early stops
        the thread. Do not call :meth:`read` while a stream runs. Sources that are loaded
        whole, and GGUF files, are read in the caller's thread.

        Args:
            entries: the entries to read (default: :attr:`entries`).
            budget: bytes of live buffers up to which the thread reads ahead (default: the
                largest entry).
            depth: tensors read ahead at most.
            raw: yield the stored bytes (:meth:`read_raw`, no torch) instead of tensors;
                only where :attr:`raw_ok`.

        Returns:
            An iterator of ``(entry, tensor or bytes)``; each in fresh memory the caller owns.

        Raises:
            FormatError: as :meth:`read`, at the entry concerned.

        Example:
            >>> import tempfile, torch, paramscope
            >>> sd = {"w": torch.ones(2, 3), "b": torch.arange(3.0)}
            >>> path = paramscope.save(sd, f"{tempfile.mkdtemp()}/model.safetensors")
            >>> with SourceReader(path) as r:
            ...     print([(e.name, t.sum().item()) for e, t in r.stream()])
            [('w', 6.0), ('b', 3.0)]
        """
        todo = list(self.entries if entries is None else entries)
        read = self.read_raw if raw else self.read
        if not self.raw_ok or len(todo) < 2:
            return ((e, read(e)) for e in todo)
        largest = max(e.nbytes for e in todo)
        return self._stream(todo, largest if budget is None else budget, max(1, depth), read)

    def _stream(
        self, todo: list[Entry], budget: int, depth: int, read: Callable[[Entry], Any]
    ) -> Iterator[tuple[Entry, Any]]:
        if self._active is not None:  # one stream at a time: an abandoned one stops first
            self._stop_stream(*self._active)
        state = self._budget = _Budget()
        cond = state.cond
        ready: deque[tuple[Entry, Any, BaseException | None]] = deque()

        def run() -> None:
            for e in todo:
                with cond:
                    while not state.stop and not (
                        len(ready) < depth
                        and (state.live == 0 or state.live + e.nbytes <= budget or state.hungry)
                    ):
                        cond.wait()
                    if state.stop:
                        return
                try:
                    item: tuple[Entry, Any, BaseException | None] = (e, read(e), None)
                except BaseException as exc:  # handed to the caller at this entry
                    item = (e, None, exc)
                with cond:
                    ready.append(item)
                    state.hungry = False  # fed: the caller says so again when it waits
                    cond.notify_all()
                    if item[2] is not None:
                        return
                del item

        def take() -> tuple[Entry, Any]:
            with cond:
                state.hungry = True
                cond.notify_all()
                while not ready and not state.stop:
                    cond.wait()
                if state.stop:
                    raise ArgumentError(
                        f"{self.path}: this stream of SourceReader was stopped (the reader "
                        "was closed or started another stream); start a new one"
                    )
                state.hungry = False
                e, t, exc = ready.popleft()
                cond.notify_all()
            if exc is not None:
                raise exc
            return e, t

        thread = threading.Thread(target=run, name="paramscope-reader", daemon=True)
        thread.start()
        self._active = (state, thread)
        try:
            for _ in todo:
                yield take()  # not bound to a name here: the caller alone holds the tensor
        finally:
            self._stop_stream(state, thread)

    def _stop_stream(self, state: _Budget, thread: threading.Thread) -> None:
        """Stop a stream's thread (after the read under way) and forget it."""
        with state.cond:
            state.stop = True
            state.cond.notify_all()
        if thread is not threading.current_thread():
            thread.join()
        if self._budget is state:
            self._budget = None
        if self._active is not None and self._active[0] is state:
            self._active = None


class _Budget:
    """Bytes of a stream's buffers still alive, and the reading thread's flags."""

    def __init__(self) -> None:
        self.cond = threading.Condition()  # re-entrant: a release may run while it is held
        self.live = 0
        self.peak = 0  # the most bytes alive at once
        self.hungry = False
        self.stop = False

    def take(self, owner: Any, n: int) -> None:
        with self.cond:
            self.live += n
            self.peak = max(self.peak, self.live)
        weakref.finalize(owner, self._give, n)

    def _give(self, n: int) -> None:
        with self.cond:
            self.live -= n
            self.cond.notify_all()
