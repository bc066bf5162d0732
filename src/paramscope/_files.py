"""Opening files named by users or by other files: regular files only, never a hang.

A path can name a FIFO (``open`` blocks until a writer comes, forever), a character device
(``/dev/zero`` reads without end, ``/dev/tty`` waits for a key), a socket, or a symlink to one
of them. Every reader opens through :func:`open_regular`, which opens without blocking, checks
what was opened (``fstat`` on the open descriptor, so the check and the read are about the same
file) and refuses anything that is not a regular file, naming it.
"""

from __future__ import annotations

import os
import re
import stat
from typing import BinaryIO

from ._errors import FormatError

__all__ = ["check_kind", "is_url", "kind_of", "open_regular"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(x: object) -> bool:
    """Whether ``x`` names a URL (``scheme://…``; ``file://`` included) rather than a local path.

    Example:
        >>> is_url("s3://bucket/model.safetensors"), is_url("model.safetensors")
        (True, False)
    """
    if not isinstance(x, str):
        x = getattr(x, "url", None)
    return isinstance(x, str) and bool(_URL.match(x))


def kind_of(mode: int) -> str:
    """A file type in words, from an ``st_mode``.

    Args:
        mode: ``os.stat(...).st_mode``.

    Returns:
        ``"regular file"``, ``"folder"``, ``"FIFO"``, ``"character device"``, …

    Example:
        >>> import stat
        >>> kind_of(stat.S_IFIFO)
        'FIFO'
    """
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def check_kind(path: str | os.PathLike[str], *, folder_ok: bool = True) -> os.stat_result:
    """``stat`` a path (following links) and refuse what is neither a regular file nor a folder.

    Args:
        path: the path.
        folder_ok: whether a folder is acceptable.

    Returns:
        The ``stat`` result.

    Raises:
        FormatError: a FIFO, device, socket (or a folder when ``folder_ok`` is False).
        OSError: the path cannot be stat'ed (missing, no permission).

    Example:
        >>> check_kind(".").st_size >= 0
        True
    """
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode) or (folder_ok and stat.S_ISDIR(st.st_mode)):
        return st
    want = "a regular file or a folder" if folder_ok else "a regular file"
    raise FormatError(path, f"expected {want}, found a {kind_of(st.st_mode)}")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for reading, refusing FIFOs, devices and sockets without blocking.

    Args:
        path: the file (symlinks are followed to what they name, which must be regular).

    Returns:
        A binary file object, positioned at 0.

    Raises:
        FormatError: the path names something other than a regular file.
        OSError: it cannot be opened.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as t, open_regular(t.name) as f:
        ...     f.read()
        b''
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(path, f"expected a regular file, found a {kind_of(st.st_mode)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
