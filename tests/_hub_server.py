"""A local fake of the Hugging Face Hub's file routes, so ``hf://`` URLs are tested offline.

:class:`FakeHub` serves model (and dataset) repos from local folders over HTTP on
``127.0.0.1:0``, speaking the routes ``huggingface_hub.HfFileSystem`` (v2.4) uses for
``info``, ``ls``, ``exists``, ``find``, ``cat_file(path, start, end)`` and ``open().read()``:

- ``GET /api/{models|datasets}/{org}/{name}[/revision/{rev}]``: repo info (``HfApi.repo_info``,
  which HfFileSystem calls once per repo and revision to check they exist). ``{"id", "sha",
  "siblings", ...}``; 404 with ``X-Error-Code: RepoNotFound`` or ``RevisionNotFound``.
- ``GET /api/{models|datasets}/{org}/{name}/tree/{rev}[/{path}]?recursive=&expand=``:
  ``HfApi.list_repo_tree``; entries ``{"type": "file", "path", "size", "oid", "lfs":
  {"oid", "size", "pointerSize"}?}`` and ``{"type": "directory", "path", "oid"}``; pages of
  ``page_size`` entries linked by a ``Link: <...>; rel="next"`` header (cursor based, as the
  Hub); 404 ``EntryNotFound`` for a missing folder or a file.
- ``POST /api/{models|datasets}/{org}/{name}/paths-info/{rev}`` (form ``paths=...&expand=``):
  ``HfApi.get_paths_info``; missing paths are left out.
- ``GET|HEAD /[datasets/]{org}/{name}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``,
  ``ETag`` (git blob id), ``Accept-Ranges: bytes`` and ``Range: bytes=a-b`` (206,
  ``Content-Range``; 416 past the end). LFS files (weights, or anything from 10 MiB) are
  answered, as on the Hub, by a 302 to a content-addressed CDN URL on a *second* port (another
  origin, so ``get_hf_file_metadata`` stops there and reads ``X-Linked-Size`` /
  ``X-Linked-Etag`` from the redirect), unless ``lfs_redirect=False``.
- ``GET|HEAD /cdn-lfs/{sha256}`` on the CDN port: the LFS file's bytes, with ranges.

Revisions are branch names (``main`` and any others given, ``refs/pr/1`` style names too) or
the 40-hex commit id of a branch (a fixed SHA-1 of repo id and branch name). Any token, or
none, is accepted. Every request is logged (:attr:`FakeHub.log`: method, path, Range header,
status, body bytes sent) so tests can assert what went over the wire.

Pointing ``huggingface_hub`` at the server: ``HF_ENDPOINT`` is read once, when
``huggingface_hub.constants`` is imported, and baked into ``constants.ENDPOINT`` *and*
``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (which ``hf_hub_url`` builds resolve URLs from);
patching ``ENDPOINT`` alone sends file reads to huggingface.co. So:

- a subprocess: :meth:`FakeHub.env` (``HF_ENDPOINT``, telemetry off, ``HF_HUB_OFFLINE`` unset);
- in this process: ``HfFileSystem(endpoint=hub.url)``, or :meth:`FakeHub.patch` which sets
  both constants (and ``HF_HUB_OFFLINE`` false) through a ``monkeypatch`` and drops fsspec's
  cached ``HfFileSystem`` instances, so a plain ``fsspec.filesystem("hf")`` / ``hf://`` URL
  reaches the fake server.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:
    import pytest

#: File suffixes the Hub stores with git LFS (``.gitattributes`` of a new repo), besides any
#: file of :data:`LFS_MIN_SIZE` bytes or more.
LFS_SUFFIXES = frozenset(
    {
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".gguf",
        ".npz",
        ".npy",
        ".h5",
        ".msgpack",
        ".onnx",
        ".pkl",
    }
)
LFS_MIN_SIZE = 10 * 1024 * 1024
_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_DATE = "2026-01-01T00:00:00.000Z"


@dataclass(frozen=True)
class Request:
    """One request the fake Hub answered.

    Attributes:
        method: ``GET``, ``HEAD`` or ``POST``.
        path: the raw request path, query string included.
        range: the ``Range`` header, or None.
        status: the status code sent.
        sent: body bytes sent (headers not counted).
        server: ``"hub"`` or ``"cdn"``.
    """

    method: str
    path: str
    range: str | None
    status: int
    sent: int
    server: str


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    branches: dict[str, Path]

    def commit(self, branch: str) -> str:
        return hashlib.sha1(f"{self.repo_type}/{self.repo_id}@{branch}".encode()).hexdigest()

    def resolve(self, revision: str) -> tuple[str, Path] | None:
        if revision in self.branches:
            return self.commit(revision), self.branches[revision]
        for branch, root in self.branches.items():
            if self.commit(branch) == revision:
                return revision, root
        return None


@dataclass
class _Blob:
    size: int
    oid: str
    sha256: str | None  # set for LFS files


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeHub:
    """A fake Hugging Face Hub serving local folders as repos (context manager).

    Args:
        repos: ``{"org/name": folder}`` (branch ``main``) or ``{"org/name": {"main": folder,
            "v1": other}}``; more with :meth:`add_repo`.
        page_size: entries per page of the ``tree`` route (the Hub sends 1000, 50 expanded).
        lfs_redirect: answer LFS files' resolve URL with a 302 to the CDN port, as the Hub does.

    Example:
        >>> with FakeHub({"org/repo": folder}) as hub:  # doctest: +SKIP
        ...     fs = HfFileSystem(endpoint=hub.url, skip_instance_cache=True)
        ...     fs.cat_file("org/repo/model.safetensors", 0, 8)
    """

    def __init__(
        self,
        repos: Mapping[str, str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]]]
        | None = None,
        *,
        page_size: int = 1000,
        lfs_redirect: bool = True,
    ) -> None:
        self.page_size = page_size
        self.lfs_redirect = lfs_redirect
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[tuple[str, int, int], _Blob] = {}
        self._cdn: dict[str, Path] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        for repo_id, spec in (repos or {}).items():
            if isinstance(spec, Mapping):
                self.add_repo(
                    repo_id, spec["main"], branches={k: v for k, v in spec.items() if k != "main"}
                )
            else:
                self.add_repo(repo_id, spec)
        self.url = ""
        self.cdn_url = ""

    # ------------------------------------------------------------------ set-up
    def add_repo(
        self,
        repo_id: str,
        folder: str | os.PathLike[str],
        *,
        repo_type: str = "model",
        branches: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        """Serve ``folder`` as branch ``main`` of ``repo_id`` (plus other ``branches``).

        Args:
            repo_id: ``"org/name"``.
            folder: the local folder the repo's files are read from (read at request time).
            repo_type: ``"model"``, ``"dataset"`` or ``"space"``.
            branches: more branch names mapped to their folders.

        Returns:
            None.
        """
        if repo_id.count("/") != 1:
            raise ValueError(f"repo id: expected 'org/name', found {repo_id!r}")
        if repo_type not in _URL_PREFIX:
            raise ValueError(
                f"repo type: expected one of {sorted(_URL_PREFIX)}, found {repo_type!r}"
            )
        all_branches = {"main": Path(folder), **{k: Path(v) for k, v in (branches or {}).items()}}
        for name, root in all_branches.items():
            if not root.is_dir():
                raise ValueError(f"repo {repo_id}@{name}: expected a folder, found {str(root)!r}")
        with self._lock:
            self._repos[(repo_type, repo_id)] = _Repo(repo_id, repo_type, all_branches)

    def commit(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str:
        """The 40-hex commit id the fake Hub gives ``branch`` of ``repo_id``.

        Args:
            repo_id: ``"org/name"``.
            branch: a branch name.
            repo_type: ``"model"``, ``"dataset"`` or ``"space"``.

        Returns:
            The commit id (also accepted as a revision).
        """
        return self._repos[(repo_type, repo_id)].commit(branch)

    def start(self) -> FakeHub:
        """Start the hub and CDN servers on free ports of 127.0.0.1.

        Returns:
            self, with :attr:`url` and :attr:`cdn_url` set.
        """
        for name in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self, name))
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, name=f"fake-{name}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop both servers (idempotent).

        Returns:
            None.
        """
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ pointing clients at it
    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for a subprocess whose ``huggingface_hub`` uses this server.

        Args:
            base: the environment to start from (default ``os.environ``).

        Returns:
            ``base`` with ``HF_ENDPOINT`` set, telemetry and the update check off, and
            ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` / ``HUGGINGFACE_CO_STAGING`` removed.
        """
        env = dict(os.environ if base is None else base)
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_CO_STAGING"):
            env.pop(key, None)
        env.update(
            {
                "HF_ENDPOINT": self.url,
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            }
        )
        return env

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's ``huggingface_hub`` at the server for one test.

        Sets ``constants.ENDPOINT``, ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (resolve URLs are
        built from it), ``HF_HUB_OFFLINE`` false, telemetry off, and clears fsspec's cache of
        ``HfFileSystem`` instances (keyed by endpoint, and holding listings) before and after.

        Args:
            monkeypatch: the test's ``monkeypatch`` fixture (undoes everything at teardown).

        Returns:
            None.
        """
        from huggingface_hub import HfFileSystem, constants

        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", self.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            self.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        # A fresh instance cache for the test (the old one comes back at teardown): cached
        # instances are keyed by endpoint and token and hold directory listings.
        monkeypatch.setattr(HfFileSystem, "_cache", {})

    # ------------------------------------------------------------------ log
    def clear_log(self) -> None:
        """Forget the requests logged so far.

        Returns:
            None.
        """
        with self._lock:
            self.log.clear()

    def requests(
        self, *, method: str | None = None, ranged: bool | None = None, status: int | None = None
    ) -> list[Request]:
        """The logged requests, optionally only one method, status, or with(out) a Range header.

        Args:
            method: keep only this method.
            ranged: True: only requests with a Range header; False: only without.
            status: keep only answers with this status code.

        Returns:
            A copy of the matching log entries, in arrival order.
        """
        with self._lock:
            out = list(self.log)
        if method is not None:
            out = [r for r in out if r.method == method]
        if ranged is not None:
            out = [r for r in out if (r.range is not None) == ranged]
        if status is not None:
            out = [r for r in out if r.status == status]
        return out

    def bytes_sent(self, *, files_only: bool = False) -> int:
        """Body bytes sent so far (JSON and file bytes; with ``files_only``, file bytes only).

        Args:
            files_only: count only resolve / CDN responses.

        Returns:
            The sum of :attr:`Request.sent`.
        """
        reqs = self.requests()
        if files_only:
            reqs = [r for r in reqs if "/resolve/" in r.path or r.path.startswith("/cdn-lfs/")]
        return sum(r.sent for r in reqs)

    # ------------------------------------------------------------------ routes
    def _record(self, req: Request) -> None:
        with self._lock:
            self.log.append(req)

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "RepoNotFound", f"Repository not found: {repo_type} {repo_id}")
        return repo

    def _revision(self, repo: _Repo, revision: str) -> tuple[str, Path]:
        found = repo.resolve(revision)
        if found is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return found

    def _blob(self, path: Path) -> _Blob:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            blob = self._blobs.get(key)
        if blob is not None:
            return blob
        data = path.read_bytes()
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if path.suffix in LFS_SUFFIXES or len(data) >= LFS_MIN_SIZE:
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = (
                "version https://git-lfs.github.com/spec/v1\n"
                f"oid sha256:{sha256}\nsize {len(data)}\n"
            ).encode()
            blob = _Blob(
                len(data), hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest(), sha256
            )
        else:
            blob = _Blob(len(data), git_oid, None)
        with self._lock:
            self._blobs[key] = blob
            if blob.sha256 is not None:
                self._cdn[blob.sha256] = path
        return blob

    def _entry(self, root: Path, rel: str, commit: str, expand: bool) -> dict[str, Any]:
        full = root / rel
        out: dict[str, Any]
        if full.is_dir():
            tree_oid = hashlib.sha1(f"tree {commit} {rel}".encode()).hexdigest()
            out = {"type": "directory", "oid": tree_oid, "path": rel}
        else:
            blob = self._blob(full)
            out = {"type": "file", "oid": blob.oid, "size": blob.size, "path": rel}
            if blob.sha256 is not None:
                out["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
        if expand:
            out["lastCommit"] = {"id": commit, "title": "fake commit", "date": _DATE}
        return out

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> dict[str, Any]:
        repo = self._repo(repo_type, repo_id)
        commit, root = self._revision(repo, revision)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit,
            "lastModified": _DATE,
            "createdAt": _DATE,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": f} for f in files],
        }

    def _tree(
        self, repo_type: str, repo_id: str, revision: str, rel: str, query: dict[str, list[str]]
    ) -> tuple[list[dict[str, Any]], int | None]:
        repo = self._repo(repo_type, repo_id)
        commit, root = self._revision(repo, revision)
        rel = rel.strip("/")
        base = root / rel if rel else root
        if not base.is_dir() or not _inside(root, base):
            raise _HubError(404, "EntryNotFound", f"{rel} does not exist on {revision}")
        recursive = _truthy(query.get("recursive", ["false"])[-1])
        expand = _truthy(query.get("expand", ["false"])[-1])
        paths = _walk(base, recursive)
        names = [p.relative_to(root).as_posix() for p in paths]
        start = int(query.get("cursor", ["0"])[-1])
        limit = min(self.page_size, 50) if expand else self.page_size
        page = names[start : start + limit]
        nxt = start + limit if start + limit < len(names) else None
        return [self._entry(root, n, commit, expand) for n in page], nxt

    def _paths_info(
        self, repo_type: str, repo_id: str, revision: str, form: dict[str, list[str]]
    ) -> list[dict[str, Any]]:
        repo = self._repo(repo_type, repo_id)
        commit, root = self._revision(repo, revision)
        expand = _truthy(form.get("expand", ["false"])[-1])
        out = []
        for rel in form.get("paths", []):
            rel = rel.strip("/")
            full = root / rel
            if rel and full.exists() and _inside(root, full):
                out.append(self._entry(root, rel, commit, expand))
        return out

    def _file(
        self, repo_type: str, repo_id: str, revision: str, rel: str
    ) -> tuple[str, Path, _Blob]:
        repo = self._repo(repo_type, repo_id)
        commit, root = self._revision(repo, revision)
        full = root / rel
        if not rel or not full.is_file() or not _inside(root, full):
            raise _HubError(404, "EntryNotFound", f"Entry not found: {rel}")
        return commit, full, self._blob(full)


def _truthy(text: str) -> bool:
    return text.lower() in ("1", "true", "yes")


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _walk(base: Path, recursive: bool) -> list[Path]:
    """Children of ``base`` sorted folders first then files (the Hub's "tree first" order)."""
    out: list[Path] = []
    children = sorted(base.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    out.extend(children)
    if recursive:
        for child in children:
            if child.is_dir():
                out.extend(_walk(child, True))
    return out


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end_inclusive)``, None for no/ignored Range, ``"bad"`` for unsatisfiable."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "bad"
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "bad"
    return start, min(end, size - 1)


def _handler_class(hub: FakeHub, server_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeHub/1.0"
        timeout = 60

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._dispatch(head=False)

        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            self._dispatch(head=False, body=body)

        # ---------------------------------------------------------------- plumbing
        def _send(
            self,
            status: int,
            headers: Mapping[str, str],
            body: bytes = b"",
            *,
            head: bool = False,
            length: int | None = None,
        ) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            sent = 0
            if not head and body:
                self.wfile.write(body)
                sent = len(body)
            hub._record(
                Request(
                    self.command, self.path, self.headers.get("Range"), status, sent, server_name
                )
            )

        def _json(
            self, obj: Any, *, head: bool = False, extra: Mapping[str, str] | None = None
        ) -> None:
            body = json.dumps(obj).encode()
            self._send(
                200,
                {"Content-Type": "application/json; charset=utf-8", **(extra or {})},
                body,
                head=head,
            )

        def _error(self, err: _HubError, head: bool) -> None:
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "X-Error-Message": err.message,
            }
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, headers, json.dumps({"error": err.message}).encode(), head=head)

        def _dispatch(self, head: bool, body: bytes = b"") -> None:
            try:
                self._route(head, body)
            except _HubError as err:
                self._error(err, head)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _route(self, head: bool, body: bytes) -> None:
            split = urlsplit(self.path)
            parts = split.path.split("/")[1:]
            query = parse_qs(split.query)
            if server_name == "cdn":
                if len(parts) == 2 and parts[0] == "cdn-lfs":
                    with hub._lock:
                        path = hub._cdn.get(parts[1])
                    if path is not None and path.is_file():
                        self._serve_file(path, {"ETag": f'"{parts[1]}"'}, head)
                        return
                raise _HubError(404, None, f"no such object: {split.path}")
            if parts and parts[0] == "api":
                self._api(parts[1:], query, head, body)
                return
            repo_type = "model"
            if parts and parts[0] in ("datasets", "spaces"):
                repo_type = _API_TYPES[parts[0]]
                parts = parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
                revision = unquote(parts[3])
                rel = "/".join(unquote(p) for p in parts[4:])
                self._resolve(repo_type, repo_id, revision, rel, head)
                return
            raise _HubError(404, None, f"no route: {split.path}")

        def _api(
            self, parts: list[str], query: dict[str, list[str]], head: bool, body: bytes
        ) -> None:
            if len(parts) < 3 or parts[0] not in _API_TYPES:
                raise _HubError(404, None, f"no api route: {self.path}")
            repo_type = _API_TYPES[parts[0]]
            repo_id = f"{unquote(parts[1])}/{unquote(parts[2])}"
            rest = parts[3:]
            if self.command == "POST":
                if len(rest) == 2 and rest[0] == "paths-info":
                    form = parse_qs(body.decode(), keep_blank_values=True)
                    self._json(hub._paths_info(repo_type, repo_id, unquote(rest[1]), form))
                    return
                raise _HubError(404, None, f"no api route: POST {self.path}")
            if not rest:
                self._json(hub._repo_info(repo_type, repo_id, "main"), head=head)
                return
            if len(rest) == 2 and rest[0] == "revision":
                self._json(hub._repo_info(repo_type, repo_id, unquote(rest[1])), head=head)
                return
            if len(rest) >= 2 and rest[0] == "tree":
                revision = unquote(rest[1])
                rel = "/".join(unquote(p) for p in rest[2:])
                entries, nxt = hub._tree(repo_type, repo_id, revision, rel, query)
                extra = {}
                if nxt is not None:
                    q = {k: v[-1] for k, v in query.items() if k != "cursor"}
                    q["cursor"] = str(nxt)
                    qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in q.items())
                    path = self.path.split("?", 1)[0]
                    extra["Link"] = f'<{hub.url}{path}?{qs}>; rel="next"'
                self._json(entries, head=head, extra=extra)
                return
            raise _HubError(404, None, f"no api route: {self.path}")

        def _resolve(
            self, repo_type: str, repo_id: str, revision: str, rel: str, head: bool
        ) -> None:
            commit, path, blob = hub._file(repo_type, repo_id, revision, rel)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{blob.oid}"'}
            if blob.sha256 is not None:
                headers["X-Linked-Size"] = str(blob.size)
                headers["X-Linked-Etag"] = f'"{blob.sha256}"'
                if hub.lfs_redirect:
                    headers["Location"] = f"{hub.cdn_url}/cdn-lfs/{blob.sha256}"
                    self._send(302, headers, b"", head=head)
                    return
            self._serve_file(path, headers, head)

        def _serve_file(self, path: Path, headers: Mapping[str, str], head: bool) -> None:
            size = path.stat().st_size
            rng = _parse_range(self.headers.get("Range"), size)
            base = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            if rng == "bad":
                self._send(416, {**base, "Content-Range": f"bytes */{size}"}, b"", head=head)
                return
            if rng is None:
                start, end, status = 0, size - 1, 200
            else:
                assert isinstance(rng, tuple)
                start, end = rng
                status = 206
                base["Content-Range"] = f"bytes {start}-{end}/{size}"
            length = max(0, end - start + 1)
            if head:
                self._send(status, base, b"", head=True, length=length)
                return
            with path.open("rb") as f:
                f.seek(start)
                data = f.read(length)
            self._send(status, base, data)

    return Handler


def iter_files(folder: str | os.PathLike[str]) -> Iterator[str]:
    """Relative POSIX paths of the files under ``folder``, sorted.

    Args:
        folder: a local folder.

    Returns:
        An iterator of paths such as ``"sub/model.safetensors"``.
    """
    root = Path(folder)
    yield from sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


__all__ = ["FakeHub", "Request", "iter_files"]
