"""Crash-safe writes: a temp file in the destination's folder, fsync, rename, fsync the folder.

A reader never sees a half-written file: until the rename the destination is absent or holds
its previous version. Temp files are named ``.<name>.paramscope-tmp-<random>`` so that they
are recognisable; :func:`clean_stale_temps` removes those a killed writer left behind. Folder
writers (sharded safetensors, DCP) build their files in a temp folder (:func:`temp_folder`)
and then commit them into the destination folder under :func:`folder_lock`, touching only
their own files (see :mod:`paramscope.io._sharded` and :func:`paramscope.io._dcp.save_dcp`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "BACKUP_MARK",
    "TEMP_MARK",
    "Flusher",
    "atomic_write",
    "clean_stale_temps",
    "exchange_paths",
    "folder_lock",
    "fsync_dir",
    "lock_temp",
    "name_error",
    "only_own",
    "remove_own",
    "swap_folder",
    "temp_folder",
]

TEMP_MARK = ".paramscope-tmp-"
#: Temp files that keep an old checkpoint's files alive while a new one is moved in. The index
#: on disk may name them (after a kill), so only the writer of that checkpoint removes them.
BACKUP_MARK = TEMP_MARK + "bak-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened.

    Args:
        folder: the folder.

    Example:
        >>> fsync_dir(".")
    """
    try:
        fd = os.open(folder, os.O_RDONLY | _CLOEXEC)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def name_error(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """The same error, naming ``path`` when it names no file (``ENOSPC`` from a write does not).

    Args:
        exc: the error.
        path: the destination being written.

    Returns:
        ``exc`` itself when it names a file, else a new ``OSError`` of the same ``errno``.

    Example:
        >>> import errno
        >>> str(name_error(OSError(errno.ENOSPC, "No space left on device"), "m.safetensors"))
        "[Errno 28] No space left on device: 'm.safetensors'"
    """
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))


def clean_stale_temps(folder: str | os.PathLike[str], stem: str | None = None) -> list[Path]:
    """Remove temp files (and temp folders) a killed writer left in ``folder``.

    Only entries carrying paramscope's temp mark are touched, and only those not modified in
    the last minute unless they belong to ``stem`` (the file about to be rewritten). A temp a
    live writer still holds (see :func:`lock_temp`) is never removed, so concurrent writers,
    of the same destination or of others, keep their temps. Only regular files and real
    folders are removed (paramscope makes nothing else): an entry is ``lstat``-ed first and
    opened without following links and without blocking, so a FIFO or a symlink named like a
    temp is left alone. Backups (:data:`BACKUP_MARK`) are left to the checkpoint writer that
    made them, as an index may still name them.

    Args:
        folder: where to look.
        stem: the destination name being written now; its temps are removed whatever their age.

    Returns:
        The paths removed.

    Example:
        >>> clean_stale_temps(".")
        []
    """
    import time

    removed: list[Path] = []
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:  # absent, not a folder, unreadable
        return removed
    now = time.time()
    for name in names:
        if TEMP_MARK not in name or not name.startswith(".") or BACKUP_MARK in name:
            continue
        p = folder / name
        mine = stem is not None and name.startswith(f".{stem}{TEMP_MARK}")
        try:
            st = os.lstat(p)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue  # a FIFO, device, socket or symlink: not ours, never opened
            if not (mine or now - st.st_mtime > 60):
                continue
            with _unless_locked(p, st) as free:
                if not free:  # a live writer (thread or process) still holds it
                    continue
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(p)
                else:
                    p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


@contextlib.contextmanager
def _unless_locked(p: Path, st: os.stat_result) -> Iterator[bool]:
    """Yield whether ``p`` is free: no live writer holds its ``flock`` (held while cleaning).

    ``p`` is opened without following links or blocking, and must still be the entry that
    was ``lstat``-ed as ``st``; otherwise it is reported busy and left alone.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locks, rely on the age rule
        yield True
        return
    flags = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC
    if stat.S_ISDIR(st.st_mode):
        flags |= _DIRECTORY
    fd = os.open(p, flags)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):  # replaced since the lstat
            yield False
            return
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

    Args:
        fd: the open temp file or folder.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f:
        ...     lock_temp(f.fileno())
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on a folder: paramscope's writers of it commit one at a time.

    No file is created for the lock (the folder itself is locked), so a user's folder gains
    nothing; the lock dies with the process. A folder swapped away (:func:`swap_folder`) while
    waiting is noticed, and the folder now at that path is locked instead.

    Args:
        folder: an existing folder.

    Yields:
        Nothing; the lock is held inside the ``with`` block.

    Example:
        >>> with folder_lock("."):
        ...     pass
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    while True:
        fd = os.open(folder, os.O_RDONLY | _CLOEXEC | _DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(folder)):
                break  # else another writer swapped the folder while we waited: lock the new one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_folder(parent: str | os.PathLike[str], stem: str) -> Iterator[Path]:
    """Make a locked temp folder ``parent/.<stem>.paramscope-tmp-<random>``; remove it after.

    The folder is locked (:func:`lock_temp`) for the whole block, so no cleaner takes it from
    a live writer; a killed writer's folder is removed by the next write (see
    :func:`clean_stale_temps`). On leaving the block the folder is removed if it is still
    there (renamed into place, it is not).

    Args:
        parent: where to make it (the destination's folder, or the folder holding it).
        stem: the destination name it is for.

    Yields:
        The temp folder's path.

    Example:
        >>> import tempfile
        >>> with temp_folder(tempfile.mkdtemp(), "ckpt") as tmp:
        ...     tmp.is_dir()
        True
    """
    parent = Path(parent)
    while True:
        tmp = parent / f".{stem}{TEMP_MARK}{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            fd = os.open(tmp, os.O_RDONLY | _CLOEXEC | _DIRECTORY)
        except FileNotFoundError:  # a concurrent cleaner took it before it was opened: retry
            continue
        lock_temp(fd)
        st = os.fstat(fd)
        try:
            ok = os.path.samestat(st, os.lstat(tmp))
        except OSError:
            ok = False
        if ok:  # else a cleaner removed it before the lock: retry
            break
        os.close(fd)
    try:
        yield tmp
    finally:
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(st, os.lstat(tmp)):
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            os.close(fd)


def remove_own(path: str | os.PathLike[str]) -> bool:
    """Remove a file paramscope wrote (or a link standing for one); leave anything else.

    Regular files and symbolic links are unlinked (a link's target is never touched);
    folders, FIFOs and devices are left alone.

    Args:
        path: the file.

    Returns:
        Whether it was removed.

    Example:
        >>> remove_own("no-such-file")
        False
    """
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Args:
        a: one existing path.
        b: another, on the same file system.

    Returns:
        ``True`` when swapped; ``False`` where the call is not supported (nothing changed).

    Raises:
        OSError: the swap was refused for another reason (naming ``b``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in "ab":
        ...         _ = Path(d, name).write_text(name.upper())
        ...     swapped = exchange_paths(f"{d}/a", f"{d}/b")
        ...     Path(d, "a").read_text() == ("B" if swapped else "A")
        True
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def swap_folder(tmp: Path, folder: Path, own: Callable[[str], bool]) -> bool:
    """Exchange a finished temp folder with ``folder`` (atomic); then drop the old one's own files.

    For a folder that holds only a checkpoint's own files (regular files whose name passes
    ``own``): readers see the old folder or the new one, never a mix. Entries of the old
    folder that are not (a file that appeared during the write) are moved back into the new
    folder, so nothing of the user's is lost. Refused (``False``, nothing changed) where the
    exchange is not supported or ``folder`` holds anything else.

    Args:
        tmp: the finished temp folder (beside ``folder``, same file system).
        folder: the existing destination folder.
        own: whether an entry name belongs to the checkpoint (removed with the old folder).

    Returns:
        Whether the folders were exchanged.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "ckpt").mkdir()
        >>> _ = (root / "ckpt" / "old.bin").write_text("old")
        >>> with temp_folder(root, "ckpt") as tmp:
        ...     _ = (tmp / "new.bin").write_text("new")
        ...     swapped = swap_folder(tmp, root / "ckpt", lambda name: name.endswith(".bin"))
        >>> sorted(os.listdir(root / "ckpt")) == (["new.bin"] if swapped else ["old.bin"])
        True
        >>> shutil.rmtree(root)
    """
    try:
        if os.path.islink(folder) or only_own(folder, own) is not True:
            return False
        os.chmod(tmp, stat.S_IMODE(os.stat(folder).st_mode))
    except OSError:
        return False
    if not exchange_paths(tmp, folder):
        return False
    fsync_dir(folder.parent if str(folder.parent) else ".")
    for name in os.listdir(tmp):  # tmp is now the old folder
        p = tmp / name
        with contextlib.suppress(OSError):
            if own(name) and stat.S_ISREG(os.lstat(p).st_mode):
                os.unlink(p)
            elif not os.path.lexists(folder / name):  # appeared during the write: give it back
                os.rename(p, folder / name)
    try:
        os.rmdir(tmp)
    except OSError:  # something could not be given back: keep it, under a name no cleaner takes
        with contextlib.suppress(OSError):
            os.rename(tmp, folder.parent / f"{folder.name}.paramscope-kept-{secrets.token_hex(4)}")
    return True


def only_own(folder: str | os.PathLike[str], own: Callable[[str], bool]) -> bool:
    """Whether every entry of ``folder`` is a regular file whose name passes ``own``.

    Entries are ``lstat``-ed, never opened; a temp of any writer counts as someone else's.

    Args:
        folder: an existing folder.
        own: whether a name belongs to the checkpoint.

    Returns:
        ``True`` when the folder holds nothing else (an empty folder included).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     empty = only_own(d, lambda name: False)
        ...     Path(d, "model.safetensors").touch()
        ...     (empty, only_own(d, lambda name: name.endswith(".safetensors")),
        ...      only_own(d, lambda name: False))
        (True, True, False)
    """
    for name in os.listdir(folder):
        if not own(name) or not stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode):
            return False
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on success fsync it and rename it onto ``path``.

    On any exception the temp file is removed and ``path`` is left as it was. An ``OSError``
    that names no file (``ENOSPC`` or ``EIO`` from a write or ``fsync``) is raised naming
    ``path``.

    Args:
        path: the destination file.
        fsync: flush the file before the rename and the folder after it (durable against
            power loss); ``False`` keeps the rename atomic but leaves flushing to the OS.

    Yields:
        A binary file object open for writing (and seeking).

    Raises:
        OSError: writing failed; the message names ``path``.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with atomic_write(os.path.join(d, "x.bin")) as f:
        ...     _ = f.write(b"abc")
        >>> Path(d, "x.bin").read_bytes()
        b'abc'
    """
    from ._files import is_url

    if is_url(path) and not os.fspath(path).lower().startswith("file://"):
        with _remote_write(os.fspath(path)) as f:
            yield f
        return
    if is_url(path):
        from urllib.parse import unquote, urlsplit

        path = unquote(urlsplit(os.fspath(path)).path)
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise name_error(exc, folder) from exc
    clean_stale_temps(folder, dest.name)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0)
    while True:
        tmp = folder / f".{dest.name}{TEMP_MARK}{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        except OSError as exc:
            raise name_error(exc, dest) from exc
        f = os.fdopen(fd, "w+b")
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
    except BaseException as exc:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            named = name_error(exc, dest)
            if named is not exc:
                raise named from exc
        raise


@contextlib.contextmanager
def _remote_write(url: str) -> Iterator[BinaryIO]:
    """:func:`atomic_write` to a URL: the bytes go to a local temporary file, which is
    uploaded only when complete (object stores make an object visible only when its upload,
    multi-part for large files, completes), then removed. On any exception nothing is
    uploaded."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix="paramscope-upload-", suffix=".part")
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
        upload(tmp, url)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


#: Bytes uploaded by :func:`upload` in this process (the CLI's ``bytes_transferred``).
UPLOADED = [0]


def upload(local: str | os.PathLike[str], url: str) -> None:
    """Copy a complete local file to a URL through fsspec (``put_file``; multi-part on object
    stores), naming the URL without secrets if it fails.

    Args:
        local: the file.
        url: the destination (``s3://bucket/key`` …).

    Raises:
        WriteError: the upload failed, or the URL's storage library is missing.
    """
    from ._errors import WriteError, shown

    try:
        import fsspec

        fs, rpath = fsspec.core.url_to_fs(url)
        fs.put_file(os.fspath(local), rpath)
        UPLOADED[0] += os.path.getsize(local)
    except ImportError as exc:
        raise WriteError(
            f"{shown(url)}: writing there needs its storage library ({exc}); install the "
            "matching paramscope extra (s3, gcs, azure, hub)"
        ) from None
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        msg = f"{shown(url)}: upload failed: {type(exc).__name__}: {shown(first)}"
        raise WriteError(msg) from None


class Flusher:
    """Starts writeback of a file being written, every ``every`` bytes, so the final ``fsync``
    has little left to do and disk time overlaps with reading, computing and writing.

    Where the OS has ``posix_fadvise`` (Linux), each step advises ``POSIX_FADV_DONTNEED`` on
    the whole file: the kernel starts asynchronous writeback of the dirty pages and drops the
    pages already written back from the page cache: no waiting, and the output does not push
    other files out of the cache (advising only the latest range was 2× slower: pages still
    under writeback then stay cached). Elsewhere a background
    ``fdatasync`` runs instead. Durability still comes from the final ``fsync`` of
    :func:`atomic_write`; this only moves the disk work earlier. (Measured on a 3 GiB stream:
    a background ``fdatasync`` every 256 MiB made a durable write 3× slower than a plain
    copy + ``fsync``; the advice makes it faster than the copy, see ``bench/``.)

    Args:
        fileobj: the file being written.
        every: bytes written between two steps; ``None`` disables.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f:
        ...     fl = Flusher(f, every=4)
        ...     _ = f.write(b"abcdef"); fl.wrote(6); fl.close()
    """

    def __init__(self, fileobj: BinaryIO, every: int | None = 64 << 20) -> None:
        self._fd = fileobj.fileno()
        self._every = every
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._advise = hasattr(os, "posix_fadvise")

    def _sync(self) -> None:
        with contextlib.suppress(OSError):
            os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)

    def wrote(self, n: int) -> None:
        """Record ``n`` more bytes written; start writeback when enough have piled up.

        Args:
            n: bytes just written.
        """
        if self._every is None:
            return
        self._pending += n
        if self._pending < self._every:
            return
        self._pending = 0
        if self._advise:
            with contextlib.suppress(OSError):  # advice only: the final fsync is what counts
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
        elif self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._sync, daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Wait for a running sync to end."""
        if self._thread is not None:
            self._thread.join()
