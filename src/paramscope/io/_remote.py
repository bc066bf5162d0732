"""Checkpoints where they live: fsspec URLs as sources, read with range requests.

Every source argument (Python and CLI) may be a URL: ``s3://bucket/key``, ``gs://…``,
``az://…`` / ``abfs://…``, ``http(s)://…``, ``hf://org/repo[@revision]/path`` (huggingface_hub's
filesystem) and ``file://…`` (a local path). The storage library is an optional extra
(``paramscope[s3]``, ``[gcs]``, ``[azure]``, ``[http]``, ``[hub]``); a missing one is an error
naming the extra. Credentials and endpoints come only from the storage library's usual places
(for S3: the ``AWS_*`` variables, ``~/.aws``; ``AWS_ENDPOINT_URL`` for an S3-compatible
server; for the Hub: ``HF_TOKEN`` / the login cache, ``HF_ENDPOINT``); paramscope never prints
them, and URLs in messages have their user, password and query string removed.

Two objects make a URL look like what the readers already use:

- :class:`RemotePath`: the part of :class:`pathlib.Path` the format detection and the sharded
  reader use (``/``, ``parent``, ``name``, ``exists``, ``is_file``, ``is_dir``, ``glob``,
  ``read_bytes``), over the URL's filesystem;
- :class:`RemoteSource`: a :class:`~paramscope.io._source.ByteSource`: ``read_at(offset, n)`` is
  one range request (``Range: bytes=offset-…``), retried with backoff on transient errors.
  Reads of up to :data:`KEEP` bytes are kept, so format detection's first bytes and the header
  read that follows cost one request, not two.

A safetensors header therefore costs its 8 + N bytes (the length, then the header), a sharded
folder its index and each shard's header (read concurrently by the sharded reader), GGUF its
header, a torch zip its central directory and ``data.pkl``. :data:`TRANSFERS` counts the
payload bytes and requests of every remote read of the process; the CLI's ``--json`` output
carries ``bytes_transferred`` when a command read a URL.

A server that ignores ``Range`` (an answer longer than asked) is refused, naming
``--allow-download``; with :func:`allow_download` (the CLI flag) the file is downloaded once
per process into a temporary file (removed when the process ends) and read locally.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._errors import ParamscopeError, SourceNotFoundError, shown
from .._files import is_url

__all__ = [
    "KEEP",
    "TRANSFERS",
    "MissingExtraError",
    "RemoteError",
    "RemotePath",
    "RemoteSource",
    "allow_download",
    "as_path",
    "is_url",
]

#: The optional extra that installs each protocol's filesystem.
EXTRAS = {
    "s3": ("s3", "s3fs"),
    "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"),
    "gcs": ("gcs", "gcsfs"),
    "az": ("azure", "adlfs"),
    "abfs": ("azure", "adlfs"),
    "abfss": ("azure", "adlfs"),
    "adl": ("azure", "adlfs"),
    "http": ("http", "aiohttp"),
    "https": ("http", "aiohttp"),
    "hf": ("hub", "huggingface_hub"),
}

#: Reads up to this many bytes are kept by a source (a header read after a detection read).
KEEP = 1 << 20

#: Attempts of one request on transient errors (connection, timeout, HTTP 5xx / 429).
ATTEMPTS = 4
_BACKOFF = 0.25


class RemoteError(ParamscopeError, OSError):
    """A remote source could not be read: forbidden, bad credentials, a server without range
    requests, or a network failure that retries did not overcome."""


class MissingExtraError(ParamscopeError, ImportError):
    """A URL's storage library is not installed; the message names the extra."""


@dataclass
class _Transfers:
    """Payload bytes and requests of every remote read of this process."""

    bytes: int = 0
    requests: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            self.requests += 1

    def reset(self) -> None:
        with self._lock:
            self.bytes = self.requests = 0


#: The process-wide counter (see the module docstring).
TRANSFERS = _Transfers()
_USED = threading.Event()  # some remote source was opened in this process
_ALLOW_DOWNLOAD = threading.Event()


def used() -> bool:
    """Whether this process opened a remote source (the CLI adds ``bytes_transferred``)."""
    return _USED.is_set()


def allow_download(allow: bool = True) -> None:
    """Allow (or forbid again) downloading a whole file from a server without range requests.

    Args:
        allow: the new setting (the CLI's ``--allow-download``).

    Example:
        >>> allow_download(False)
    """
    if allow:
        _ALLOW_DOWNLOAD.set()
    else:
        _ALLOW_DOWNLOAD.clear()


def as_path(x: str | os.PathLike[str]) -> Path | RemotePath:
    """A local :class:`~pathlib.Path`, or a :class:`RemotePath` for a URL (``file://`` URLs
    become local paths).

    Example:
        >>> as_path("file:///tmp/m.safetensors"), type(as_path("s3://b/m.safetensors")).__name__
        (PosixPath('/tmp/m.safetensors'), 'RemotePath')
    """
    if isinstance(x, RemotePath):
        return x
    s = os.fspath(x)
    if is_url(s):
        if s.lower().startswith("file://"):
            from urllib.parse import unquote, urlsplit

            return Path(unquote(urlsplit(s).path))
        return RemotePath(s)
    return Path(s)


def _filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, its path)`` of a URL, or the error naming the missing extra."""
    protocol = url.split("://", 1)[0].lower()
    extra = EXTRAS.get(protocol)
    try:
        import fsspec
    except ImportError:
        raise MissingExtraError(
            f"{shown(url)}: reading URLs needs fsspec; install paramscope's extra for this "
            f"storage: pip install 'paramscope[{extra[0] if extra else 'http'}]'"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        want = f"paramscope[{extra[0]}]" if extra else "the fsspec implementation it names"
        raise MissingExtraError(
            f"{shown(url)}: reading {protocol}:// URLs needs "
            f"{extra[1] if extra else protocol}: pip install '{want}' ({exc})"
        ) from None
    except ValueError as exc:  # an unknown protocol
        raise RemoteError(f"{shown(url)}: {exc}") from None
    return fs, path


_T = TypeVar("_T")


def _status(exc: BaseException) -> int | None:
    for attr in ("status", "status_code", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int):
            return v
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        meta = response.get("ResponseMetadata", {})
        code = meta.get("HTTPStatusCode")
        return code if isinstance(code, int) else None
    return getattr(response, "status_code", None)


def _transient(exc: BaseException) -> bool:
    status = _status(exc)
    if status is not None:
        return status >= 500 or status == 429
    name = type(exc).__name__
    return isinstance(exc, (ConnectionError, TimeoutError)) or name in {
        "ClientConnectionError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "TimeoutError",
    }


def _mapped(url: str, exc: BaseException) -> BaseException:
    """The one-line paramscope error for a storage library's error (URL without secrets)."""
    if isinstance(exc, ParamscopeError):
        return exc
    status = _status(exc)
    text = str(exc)
    code = getattr(exc, "response", {}) or {}
    code = code.get("Error", {}).get("Code", "") if isinstance(code, dict) else ""
    if isinstance(exc, FileNotFoundError) or status == 404 or code in {"NoSuchKey", "NoSuchBucket"}:
        return SourceNotFoundError(url)
    creds = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
    if code in creds or type(exc).__name__ in {"NoCredentialsError", "PartialCredentialsError"}:
        return RemoteError(
            f"{shown(url)}: the storage refused the credentials ({code or type(exc).__name__}); "
            "check the storage library's usual settings (for S3: AWS_* variables, ~/.aws)"
        )
    if isinstance(exc, PermissionError) or status in (401, 403) or code == "AccessDenied":
        return RemoteError(
            f"{shown(url)}: access denied ({status or code or 'forbidden'}); the credentials "
            "in the storage library's usual places do not allow reading it"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return RemoteError(f"{shown(url)}: {type(exc).__name__}: {shown(first)[:300]}")


def _call(url: str, fn: Callable[[], _T]) -> _T:
    """``fn()`` with retries and backoff on transient errors; other errors mapped."""
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except Exception as exc:
            if attempt + 1 < ATTEMPTS and _transient(exc):
                time.sleep(_BACKOFF * 2**attempt)
                continue
            raise _mapped(url, exc) from None
    raise AssertionError("unreachable")  # pragma: no cover


class _Stat:
    def __init__(self, size: int) -> None:
        self.st_size = size


class RemotePath:
    """A URL with the part of :class:`pathlib.Path` paramscope's readers use.

    Args:
        url: ``scheme://…``; a trailing ``/`` is dropped (``s3://b/folder/`` is the folder).

    Example:
        >>> p = RemotePath("s3://bucket/ckpt/")
        >>> str(p / "model.safetensors"), (p / "a.bin").suffix, p.name, str(p.parent)
        ('s3://bucket/ckpt/model.safetensors', '.bin', 'ckpt', 's3://bucket')
    """

    __slots__ = ("_fs", "_info", "_kept", "_path", "_whole", "url")

    def __init__(self, url: str, _fs: Any = None, _path: str | None = None) -> None:
        scheme, rest = url.split("://", 1)
        self.url = f"{scheme}://{rest.rstrip('/')}" if rest.rstrip("/") else url
        self._fs = _fs
        self._path = _path
        self._info: dict[str, Any] | None = None
        # what the sources opened on this very object share: small reads already made (a
        # format check's first bytes serve the header read after it), and a whole download
        self._kept: list[tuple[int, bytes]] = []
        self._whole: str | None = None

    # ----------------------------------------------------------------- names (no requests)
    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({shown(self.url)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __truediv__(self, rel: str | os.PathLike[str]) -> RemotePath:
        r = os.fspath(rel).lstrip("/")
        return RemotePath(f"{self.url}/{r}")

    @property
    def name(self) -> str:
        rest = self.url.split("://", 1)[1]
        return rest.rsplit("/", 1)[-1] if "/" in rest else ""

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def web(self) -> bool:
        """Whether the URL is http(s): no listing, and fsspec's ``info`` says "not found" for
        any failure."""
        return self.url.split("://", 1)[0].lower() in ("http", "https")

    @property
    def parent(self) -> RemotePath:
        scheme, rest = self.url.split("://", 1)
        return RemotePath(f"{scheme}://{rest.rsplit('/', 1)[0]}") if "/" in rest else self

    # ------------------------------------------------------------------------- requests
    @property
    def fs(self) -> Any:
        """The fsspec filesystem (``MissingExtraError`` if its library is not installed)."""
        if self._fs is None:
            self._fs, self._path = _filesystem(self.url)
        return self._fs

    @property
    def fspath(self) -> str:
        """The path in the filesystem's own terms (no protocol)."""
        _ = self.fs
        assert self._path is not None
        return self._path

    def info(self) -> dict[str, Any]:
        """The filesystem's ``info`` (type, size …), cached; ``SourceNotFoundError`` if
        nothing is there."""
        if self._info is None:
            _USED.set()
            fs = self.fs
            try:
                self._info = _call(self.url, lambda: fs.info(self.fspath))
            except SourceNotFoundError:
                if self.web:
                    # fsspec's http info says "not found" for any failure: one byte asked
                    # for tells a 403 or 401 (raised, mapped) from a real 404
                    _call(self.url, lambda: fs.cat_file(self.fspath, start=0, end=1))
                raise
        return self._info

    def exists(self) -> bool:
        try:
            self.info()
        except SourceNotFoundError:
            return False
        return True

    def is_file(self) -> bool:
        try:
            return self.info().get("type") != "directory"
        except SourceNotFoundError:
            return False

    def is_dir(self) -> bool:
        try:
            return self.info().get("type") == "directory"
        except SourceNotFoundError:
            return False

    def stat(self) -> _Stat:
        return _Stat(int(self.info().get("size") or 0))

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """The entries of this folder whose name matches ``pattern`` (one listing request;
        each entry's type and size come with it, so asking them costs nothing more)."""
        import fnmatch

        fs = self.fs
        try:
            listed = _call(self.url, lambda: fs.ls(self.fspath, detail=True))
        except SourceNotFoundError:
            return iter(())
        own = self.fspath.rstrip("/")
        first = listed[0] if len(listed) == 1 else {}
        if str(first.get("name", "")).rstrip("/") == own and first.get("type") != "directory":
            self._info = first  # listing a file lists the file itself: it is no folder
            return iter(())
        out = []
        for info in listed:
            name = str(info.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
            if name and fnmatch.fnmatchcase(name, pattern):
                kid = RemotePath(f"{self.url}/{name}")
                kid._info = info
                out.append(kid)
        return iter(sorted(out, key=lambda p: p.url))

    def read_bytes(self) -> bytes:
        with RemoteSource(self) as src:
            return src.read_at(0, src.size)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


_RANGE_KW: dict[type, dict[str, Any]] = {}  # filesystem class → cat_file options
_DOWNLOADS: dict[Any, str] = {}  # identity → the temp file of its whole download
_TEMPS: list[str] = []  # every such temp file, removed at exit
_DOWNLOADS_LOCK = threading.Lock()


def _forget_downloads() -> None:
    for tmp in _TEMPS:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _TEMPS.clear()
    _DOWNLOADS.clear()


class RemoteSource:
    """A remote file as a :class:`~paramscope.io._source.ByteSource`: positioned reads are
    range requests (see the module docstring).

    Args:
        path: the URL or :class:`RemotePath`.

    Raises:
        SourceNotFoundError: nothing is there. RemoteError: refused, or a folder.
        MissingExtraError: the URL's storage library is not installed.
    """

    def __init__(self, path: str | RemotePath) -> None:
        self._remote = path if isinstance(path, RemotePath) else RemotePath(path)
        info = self._remote.info()
        if info.get("type") == "directory":
            raise RemoteError(f"{shown(self._remote.url)}: expected a file, found a folder")
        self.name = self._remote.url
        self.size = int(info.get("size") or 0)
        etag = info.get("ETag") or info.get("etag")
        tag = etag or info.get("LastModified") or info.get("mtime")
        # no tag at all: never reuse a parse; an ETag names the content: reuse without
        # re-reading the header to fingerprint it (strong_identity)
        self.identity: tuple[Any, ...] | None = (
            ("remote", self.name, self.size, str(tag)) if tag else None
        )
        self.strong_identity = bool(etag)
        self._kept = self._remote._kept  # shared by every source of this RemotePath
        self._local: Any = None  # a LocalSource over a whole download (no-range servers)
        self._lock = threading.Lock()

    def __enter__(self) -> RemoteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteSource({shown(self.name)!r})"

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None

    def _fetch(self, start: int, end: int) -> bytes:
        with _DOWNLOADS_LOCK:  # without an identity only this RemotePath's download is known
            known = (
                _DOWNLOADS.get(self.identity) if self.identity is not None else self._remote._whole
            )
        if known is not None and os.path.exists(known):  # downloaded whole before
            self._download(None)
            return self._local.read_at(start, end - start)
        fs, path = self._remote.fs, self._remote.fspath
        kw = _RANGE_KW.get(type(fs))
        if kw is None:
            import fsspec

            # fsspec's generic cat_file opens a buffered file that reads ahead (5 MiB for the
            # Hub's filesystem): ask for no cache there, so a range costs only its bytes;
            # s3fs and http have their own cat_file, which takes no such option
            generic = (
                not getattr(fs, "async_impl", False)  # (async ones mirror their _cat_file)
                and type(fs).cat_file is fsspec.AbstractFileSystem.cat_file
            )
            kw = _RANGE_KW[type(fs)] = {"cache_type": "none"} if generic else {}
        data = _call(self.name, lambda: fs.cat_file(path, start=start, end=end, **kw))
        TRANSFERS.add(len(data))
        if len(data) > end - start:  # the server sent more than the range: it ignores Range
            if not _ALLOW_DOWNLOAD.is_set():
                raise RemoteError(
                    f"{shown(self.name)}: the server does not support range requests (asked "
                    f"for {end - start} bytes, it sent {len(data)}); reading only the header "
                    "is impossible there: pass --allow-download (allow_download()) to fetch "
                    "the whole file"
                )
            self._download(data if len(data) == self.size else None)
            return self._local.read_at(start, end - start)
        return data

    def _download(self, whole: bytes | None) -> None:
        """Fetch the whole file into a temp file that lives until the process ends, once per
        process when the file has an identity (URL, size, ETag or date), else once per
        :class:`RemotePath` object (one operation), and read it locally from now on."""
        from ._source import LocalSource

        with _DOWNLOADS_LOCK:
            key = self.identity
            tmp = _DOWNLOADS.get(key) if key is not None else self._remote._whole
            if tmp is None or not os.path.exists(tmp):
                fd, tmp = tempfile.mkstemp(prefix="paramscope-download-", suffix=".part")
                with os.fdopen(fd, "wb") as f:
                    if whole is None:
                        fs, path = self._remote.fs, self._remote.fspath
                        whole = _call(self.name, lambda: fs.cat_file(path))
                        TRANSFERS.add(len(whole))
                    f.write(whole)
                if not _TEMPS:
                    import atexit

                    atexit.register(_forget_downloads)
                _TEMPS.append(tmp)
                if key is not None:
                    _DOWNLOADS[key] = tmp
                self._remote._whole = tmp
        self._local = LocalSource(tmp)

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer only where the file ends): one range
        request, or none when an earlier read of this source holds them."""
        if self._local is not None:
            return self._local.read_at(offset, n)
        end = min(self.size, offset + max(0, n))
        if offset >= end:
            return b""
        with self._lock:
            for start, data in self._kept:
                if start <= offset and end <= start + len(data):
                    return data[offset - start : end - start]
        data = self._fetch(offset, end)
        if self._local is None and len(data) <= KEEP:
            with self._lock:
                if sum(len(d) for _, d in self._kept) + len(data) <= 4 * KEEP:
                    self._kept.append((offset, data))
        return data

    def readinto_at(self, offset: int, buf: Any) -> int:
        """Fill ``buf`` from ``offset``; the bytes read (short at the end)."""
        mv = memoryview(buf).cast("B")
        data = self.read_at(offset, len(mv))
        mv[: len(data)] = data
        return len(data)
