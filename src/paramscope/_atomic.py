"""Crash-safe writes: a temp file in the destination's folder, fsync, rename, fsync the folder.

A reader never sees a half-written file: until the rename the destination is absent or holds
its previous version. Temp files are named ``.<name>.paramscope-tmp-<random>`` so that they
are recognisable; :func:`clean_stale_temps` removes those a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TEMP_MARK",
    "Flusher",
    "atomic_write",
    "clean_stale_temps",
    "fsync_dir",
    "lock_temp",
]

TEMP_MARK = ".paramscope-tmp-"


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened.

    Args:
        folder: the folder.

    Example:
        >>> fsync_dir(".")
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def clean_stale_temps(folder: str | os.PathLike[str], stem: str | None = None) -> list[Path]:
    """Remove temp files (and temp folders) a killed writer left in ``folder``.

    Only entries carrying paramscope's temp mark are touched, and only those not modified in
    the last minute unless they belong to ``stem`` (the file about to be rewritten). A temp a
    live writer still holds (see :func:`lock_temp`) is never removed, so concurrent writers,
    of the same destination or of others, keep their temps.

    Args:
        folder: where to look.
        stem: the destination name being written now; its temps are removed whatever their age.

    Returns:
        The paths removed.

    Example:
        >>> clean_stale_temps(".")
        []
    """
    import shutil
    import time

    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.iterdir():
        if TEMP_MARK not in p.name or not p.name.startswith("."):
            continue
        mine = stem is not None and p.name.startswith(f".{stem}{TEMP_MARK}")
        try:
            if not (mine or now - p.stat().st_mtime > 60):
                continue
            with _unless_locked(p) as free:
                if not free:  # a live writer (thread or process) still holds it
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


@contextlib.contextmanager
def _unless_locked(p: Path) -> Iterator[bool]:
    """Yield whether ``p`` is free: no live writer holds its ``flock`` (held while cleaning)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locks, rely on the age rule
        yield True
        return
    fd = os.open(p, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def lock_temp(fd: int) -> None:
    """Mark a temp file or folder (open as ``fd``) as in use until ``fd`` is closed.

    :func:`clean_stale_temps` skips locked temps, so concurrent writers of one destination do
    not remove each other's temps; the lock dies with the process, so a killed writer's temp
    is removed by the next write.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on success fsync it and rename it onto ``path``.

    On any exception the temp file is removed and ``path`` is left as it was.

    Args:
        path: the destination file.
        fsync: flush the file before the rename and the folder after it (durable against
            power loss); ``False`` keeps the rename atomic but leaves flushing to the OS.

    Yields:
        A binary file object open for writing (and seeking).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with atomic_write(os.path.join(d, "x.bin")) as f:
        ...     _ = f.write(b"abc")
        >>> open(os.path.join(d, "x.bin"), "rb").read()
        b'abc'
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder, dest.name)
    while True:
        tmp = folder / f".{dest.name}{TEMP_MARK}{secrets.token_hex(4)}"
        f = open(tmp, "w+b")  # noqa: SIM115 - closed below on every path
        lock_temp(f.fileno())
        if os.fstat(f.fileno()).st_nlink:  # else a cleaner removed it before the lock: retry
            break
        f.close()
    try:
        yield f
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        if os.name == "nt":  # pragma: no cover - an open file cannot be renamed there
            f.close()
            os.replace(tmp, dest)
        else:  # rename while still locked, so no cleaner can take the temp in between
            os.replace(tmp, dest)
            f.close()
        if fsync:
            fsync_dir(folder)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class Flusher:
    """Starts writeback of a file being written, in a background thread, every ``every`` bytes.

    The final ``fsync`` then has little left to do, so disk time overlaps with writing and
    hashing instead of adding to them.

    Args:
        fileobj: the file being written.
        every: bytes written between two background ``fdatasync`` calls; ``None`` disables.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f:
        ...     fl = Flusher(f, every=4)
        ...     _ = f.write(b"abcdef"); fl.wrote(6); fl.close()
    """

    def __init__(self, fileobj: BinaryIO, every: int | None = 256 << 20) -> None:
        self._fd = fileobj.fileno()
        self._every = every
        self._pending = 0
        self._thread: threading.Thread | None = None

    def _sync(self) -> None:
        with contextlib.suppress(OSError):
            os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)

    def wrote(self, n: int) -> None:
        """Record ``n`` more bytes written; start a sync when enough have piled up.

        Args:
            n: bytes just written.
        """
        if self._every is None:
            return
        self._pending += n
        if self._pending >= self._every and (self._thread is None or not self._thread.is_alive()):
            self._pending = 0
            self._thread = threading.Thread(target=self._sync, daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Wait for a running sync to end."""
        if self._thread is not None:
            self._thread.join()
