"""Real servers for the remote-checkpoint tests (issue 18), started by the tests themselves:
no internet, nothing mocked inside the client.

* :func:`s3_server` (session fixture): moto's S3-compatible server in a thread
  (``moto.server.ThreadedMotoServer`` on 127.0.0.1, a free port), its WSGI app wrapped so that
  every request is logged (:class:`RequestLog`).
* :func:`s3` (function fixture): a fresh bucket on that server, the ``AWS_*`` variables that
  point botocore/s3fs at it set for the test (``AWS_ENDPOINT_URL`` and test credentials: the
  storage library's usual places, nothing passed to paramscope), fsspec's cached S3
  filesystems dropped, and helpers to upload files and folders with boto3
  (not through paramscope): :class:`S3Bucket`.
* :func:`http_server`: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 serving the files under a
  folder, with ``Range: bytes=a-b`` support (206, ``Content-Range``, ``Accept-Ranges``) or
  without (200 and the whole body, always); 404 for a missing file, 403 for a path containing
  ``forbidden``; every request logged.

Both logs record method, path, the ``Range`` header, the status and the body bytes actually
written to the socket, so a test can assert what crossed the wire.

The fixtures are registered for every test module in ``conftest.py``; moto, boto3 and fsspec
are imported only when a fixture is used.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: Credentials and region for the test S3 server (moto accepts any).
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

#: Variables that could send botocore elsewhere (a profile, a session token, a config file).
_AWS_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL_S3",
)


# ---------------------------------------------------------------------------------------------
# the request log
# ---------------------------------------------------------------------------------------------


@dataclass
class Request:
    """One request a test server answered.

    Attributes:
        method: ``GET``, ``HEAD``, ``PUT``, ...
        path: the URL path (and query), as the client sent it.
        range: the ``Range`` header, or ``None``.
        status: the HTTP status answered.
        sent: body bytes written to the socket (0 for ``HEAD``); final once the log is settled.
    """

    method: str
    path: str
    range: str | None
    status: int = 0
    sent: int = 0


class RequestLog(list[Request]):
    """The requests a server answered, in arrival order. A request still being answered is
    counted as in flight; :meth:`settle` waits for none (a client can return before the server
    thread has finished its bookkeeping)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Condition()
        self._in_flight = 0

    def _begin(self, req: Request) -> None:
        with self._lock:
            self.append(req)
            self._in_flight += 1

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    def settle(self, timeout: float = 5.0) -> RequestLog:
        """Wait until no request is in flight and return the log.

        Args:
            timeout: seconds to wait before failing.

        Returns:
            This log.

        Example:
            >>> RequestLog().settle().total_sent()
            0
        """
        with self._lock:
            ok = self._lock.wait_for(lambda: self._in_flight == 0, timeout)
        assert ok, f"server requests still in flight after {timeout} s"
        return self

    def total_sent(self, method: str | None = None) -> int:
        """Body bytes sent by all settled requests (or those of one method).

        Args:
            method: only requests with this method (e.g. ``"GET"``); all when ``None``.

        Returns:
            The sum of :attr:`Request.sent`.

        Example:
            >>> RequestLog().total_sent("GET")
            0
        """
        self.settle()
        return sum(r.sent for r in self if method is None or r.method == method)

    def of(self, method: str | None = None, contains: str = "") -> list[Request]:
        """The settled requests with that method whose path contains ``contains``.

        Args:
            method: a method, or ``None`` for all.
            contains: a substring of the path.

        Returns:
            The matching requests, in order.

        Example:
            >>> RequestLog().of("GET", "model.safetensors")
            []
        """
        self.settle()
        return [r for r in self if (method is None or r.method == method) and contains in r.path]

    def clear(self) -> None:
        """Forget the settled requests (a test calls this after its setup uploads)."""
        self.settle()
        with self._lock:
            super().clear()


# ---------------------------------------------------------------------------------------------
# S3: moto's server
# ---------------------------------------------------------------------------------------------


def _logging_app(app: Callable[..., Any], log: RequestLog) -> Callable[..., Any]:
    """A WSGI app that logs each request to ``log`` and counts the body bytes it returns."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        req = Request(environ.get("REQUEST_METHOD", ""), path, environ.get("HTTP_RANGE"))
        log._begin(req)

        def start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            req.status = int(status.split()[0])
            return start_response(status, headers, *exc)

        try:
            body = app(environ, start)
            try:
                for chunk in body:
                    if req.method != "HEAD":
                        req.sent += len(chunk)
                    yield chunk
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        finally:
            log._end()

    return wrapped


class S3Server:
    """moto's S3 server on 127.0.0.1 in a daemon thread, requests logged.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``.
        log: every request it answered (:class:`RequestLog`).
    """

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        log = RequestLog()

        class _Server(ThreadedMotoServer):
            def _server_entry(self) -> None:  # moto 5.x: the app wrapped in the request log
                from moto.moto_server import threaded_moto_server as t

                app = t.DomainDispatcherApplication(t.create_backend_app)
                self._server = t.make_server(
                    self._ip_address,
                    self._port,
                    _logging_app(app, log),
                    True,
                    request_handler=t.MotoRequestHandler,
                )
                self._server_ready_event.set()
                self._server.serve_forever()

        self.log = log
        self._server = _Server(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        """Shut the server down."""
        self._server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server for the session (quiet: werkzeug's request log off)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


def clear_fsspec_s3_cache() -> None:
    """Drop fsspec's cached S3 filesystems, so the next one reads the endpoint and
    credentials from the environment again."""
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fsspec.get_filesystem_class("s3").clear_instance_cache()


_bucket_numbers = itertools.count()


class S3Bucket:
    """A bucket on the test server and boto3 helpers that do not go through paramscope.

    Attributes:
        name: the bucket (``ckpts-N``: a valid, fresh name).
        endpoint: the server's URL.
        env: the variables a subprocess needs to reach the server (``AWS_ENDPOINT_URL``, ...).
        log: the server's request log (shared by all buckets of the session; the fixture
            clears it at the start of each test).
        client: a boto3 S3 client for the server.
    """

    def __init__(self, server: S3Server, name: str, env: dict[str, str]) -> None:
        import boto3

        self.name = name
        self.endpoint = server.endpoint
        self.env = env
        self.log = server.log
        self.client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        self.client.create_bucket(Bucket=name)

    def url(self, key: str = "") -> str:
        """``s3://BUCKET/KEY``.

        Args:
            key: the object key or prefix.

        Returns:
            The URL.

        Example:
            >>> bucket.url("m/model.safetensors")  # doctest: +SKIP
            's3://ckpts-0/m/model.safetensors'
        """
        return f"s3://{self.name}/{key.lstrip('/')}"

    def upload_file(self, local: str | os.PathLike[str], key: str) -> str:
        """Upload one local file as ``KEY`` with boto3.

        Args:
            local: the file.
            key: the object key.

        Returns:
            Its ``s3://`` URL.

        Example:
            >>> bucket.upload_file("model.safetensors", "m/model.safetensors")  # doctest: +SKIP
            's3://ckpts-0/m/model.safetensors'
        """
        self.client.upload_file(str(local), self.name, key)
        return self.url(key)

    def upload_folder(self, local: str | os.PathLike[str], prefix: str) -> str:
        """Upload every file under a local folder to ``PREFIX/relative/path`` with boto3.

        Args:
            local: the folder.
            prefix: the key prefix (without a trailing ``/``).

        Returns:
            The folder's ``s3://BUCKET/PREFIX/`` URL.

        Example:
            >>> bucket.upload_folder("sharded", "llama")  # doctest: +SKIP
            's3://ckpts-0/llama/'
        """
        root = Path(local)
        prefix = prefix.strip("/")
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.upload_file(path, f"{prefix}/{path.relative_to(root).as_posix()}")
        return self.url(prefix + "/")

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` as ``KEY``.

        Args:
            key: the object key.
            data: its contents.

        Returns:
            Its ``s3://`` URL.

        Example:
            >>> bucket.put_bytes("x.bin", b"abc")  # doctest: +SKIP
            's3://ckpts-0/x.bin'
        """
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return self.url(key)

    def get_bytes(self, key: str) -> bytes:
        """The contents of ``KEY`` (boto3).

        Args:
            key: the object key.

        Returns:
            Its bytes.

        Example:
            >>> bucket.get_bytes("x.bin")  # doctest: +SKIP
            b'abc'
        """
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        """The keys under a prefix, sorted (complete multi-part uploads only, as S3 lists).

        Args:
            prefix: the key prefix.

        Returns:
            The keys.

        Example:
            >>> bucket.keys("out/")  # doctest: +SKIP
            ['out/model.safetensors']
        """
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def pending_uploads(self) -> list[str]:
        """Keys of multi-part uploads started and neither completed nor aborted.

        Returns:
            The keys (one per pending upload).

        Example:
            >>> bucket.pending_uploads()  # doctest: +SKIP
            []
        """
        out = self.client.list_multipart_uploads(Bucket=self.name)
        return sorted(u["Key"] for u in out.get("Uploads", []))


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh bucket on the session's S3 server; ``AWS_ENDPOINT_URL`` and test credentials
    set in this process's environment for the test (``bucket.env`` for a subprocess), fsspec's
    S3 filesystem cache cleared before and after, the request log cleared."""
    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_server.endpoint}
    for name in _AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # no user's config or credentials file
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    clear_fsspec_s3_cache()
    bucket = S3Bucket(s3_server, f"ckpts-{next(_bucket_numbers)}-{os.getpid()}", env)
    s3_server.log.clear()
    try:
        yield bucket
    finally:
        clear_fsspec_s3_cache()


# ---------------------------------------------------------------------------------------------
# HTTP: a stdlib server with or without Range
# ---------------------------------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """``(start, end_inclusive)`` for one satisfiable ``bytes=`` range; ``None`` for a header
    the server ignores (answers 200: several ranges, another unit, malformed); ``"416"`` for
    a range outside the file."""
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":  # suffix: the last b bytes
        n = int(b)
        if n == 0:
            return "416"
        return (max(size - n, 0), size - 1)
    start = int(a)
    end = size - 1 if b == "" else min(int(b), size - 1)
    if b != "" and int(b) < start:
        return None
    if start >= size:
        return "416"
    return (start, end)


def _make_handler(
    root: Path, ranges: bool, log: RequestLog, fail_after: int | None, flaky: int = 0
) -> type[BaseHTTPRequestHandler]:
    failed = [0]  # GETs answered 503 so far (flaky)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp clients expect

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _error(self, req: Request, status: int, extra: dict[str, str] | None = None) -> None:
            body = b"" if req.method == "HEAD" else f"{status}\n".encode()
            req.status = status
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            req.sent = len(body)

        def _serve(self, head: bool) -> None:
            req = Request(self.command, self.path, self.headers.get("Range"))
            log._begin(req)
            try:
                self._answer(req, head)
            finally:
                log._end()

        def _answer(self, req: Request, head: bool) -> None:
            rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            if "forbidden" in rel:
                return self._error(req, 403)
            path = (root / rel).resolve()
            if (root not in path.parents and path != root) or not path.is_file():
                return self._error(req, 404)
            if req.method == "GET" and failed[0] < flaky:
                failed[0] += 1
                return self._error(req, 503)
            if fail_after is not None and req.method == "GET":
                sent = sum(r.sent for r in list(log) if r.method == "GET" and r.status < 300)
                if sent >= fail_after:
                    return self._error(req, 503)
            size = path.stat().st_size
            start, end, status = 0, size - 1, 200
            if ranges and req.range is not None:
                parsed = _parse_range(req.range, size)
                if parsed == "416":
                    return self._error(req, 416, {"Content-Range": f"bytes */{size}"})
                if isinstance(parsed, tuple):
                    start, end = parsed
                    status = 206
            length = max(end - start + 1, 0)
            req.status = status
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            if ranges:
                self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            with path.open("rb") as f:
                f.seek(start)
                left = length
                while left > 0:
                    chunk = f.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                        return
                    req.sent += len(chunk)
                    left -= len(chunk)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    """No traceback on stderr when a client drops a kept-alive connection."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def http_server(
    root: str | os.PathLike[str],
    ranges: bool = True,
    fail_after: int | None = None,
    flaky: int = 0,
) -> Iterator[tuple[str, RequestLog]]:
    """Serve the files under ``root`` on 127.0.0.1 (a free port) for the ``with`` block.

    With ``ranges=True`` a single ``Range: bytes=a-b`` (also ``a-`` and ``-n``) is answered
    with 206, ``Content-Range`` and ``Accept-Ranges: bytes``, a range past the end with 416;
    with ``ranges=False`` the header is ignored: always 200 and the whole body, no
    ``Accept-Ranges``. ``HEAD`` answers the headers with ``Content-Length``. A missing file is
    404, a path containing ``forbidden`` 403. No directory listing. With
    ``fail_after``, once the file bodies answered add up to that many bytes every further
    ``GET`` is answered 503 (a server that breaks midway, past any retry).

    Args:
        root: the folder served at ``/``.
        ranges: whether Range requests are honoured.
        fail_after: body bytes after which ``GET`` fails with 503; never when ``None``.
        flaky: the first ``flaky`` ``GET`` requests are answered 503 (a transient failure
            a client should retry).

    Returns:
        A context manager yielding ``(base_url, log)``: ``http://127.0.0.1:PORT`` (no trailing
        slash) and the server's :class:`RequestLog`.

    Example:
        >>> with http_server(tmp_path) as (url, log):  # doctest: +SKIP
        ...     fsspec.filesystem("http").cat_file(f"{url}/a.bin", 0, 8)
    """
    log = RequestLog()
    server = _QuietServer(
        ("127.0.0.1", 0), _make_handler(Path(root).resolve(), ranges, log, fail_after, flaky)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        time.sleep(0)  # let handler threads notice the closed socket


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[Path, str, RequestLog]]:
    """A Range-capable :func:`http_server` over a fresh folder: ``(folder, base_url, log)``."""
    root = tmp_path / "www"
    root.mkdir()
    with http_server(root) as (url, log):
        yield root, url, log
