"""The fake Hugging Face Hub (tests/_hub_server.py) against ``huggingface_hub`` itself, then
paramscope's ``hf://`` sources against the fake Hub.

The first half uses ``huggingface_hub.HfFileSystem`` (and ``get_hf_file_metadata`` /
``hf_hub_download``) directly, with the local folder the repo is served from as the oracle:
if the fake Hub spoke a route wrongly, huggingface_hub would fail or return other bytes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from _hub_server import FakeHub, iter_files

if TYPE_CHECKING:
    from huggingface_hub import HfFileSystem

REPO = "org/repo"


def _write_safetensors(path: Path, seed: int, n: int = 3, rows: int = 16) -> dict[str, object]:
    """A small safetensors file written by the safetensors library (the format's own writer)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {f"layer{i}.weight": torch.randn(rows + i, 8, generator=g) for i in range(n)}
    tensors["bias"] = torch.zeros(7, dtype=torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"seed": str(seed)})
    return tensors


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``main``: a weights file, a config, a text file in a subfolder; ``v1``: other weights."""
    main = tmp_path_factory.mktemp("main")
    _write_safetensors(main / "model.safetensors", seed=0)
    (main / "config.json").write_text(json.dumps({"hidden_size": 8, "model_type": "toy"}))
    (main / "sub").mkdir()
    (main / "sub" / "notes.txt").write_bytes(bytes(range(256)) * 3)
    (main / "sub" / "deeper").mkdir()
    (main / "sub" / "deeper" / "a.txt").write_text("deep")
    v1 = tmp_path_factory.mktemp("v1")
    _write_safetensors(v1 / "model.safetensors", seed=1, n=2)
    (v1 / "config.json").write_text(json.dumps({"hidden_size": 8, "model_type": "toy", "v": 1}))
    pr = tmp_path_factory.mktemp("pr")
    (pr / "config.json").write_text('{"pr": 1}')
    return {"main": main, "v1": v1, "refs/pr/1": pr}


@pytest.fixture(scope="module")
def hub(folders: dict[str, Path]) -> Iterator[FakeHub]:
    with FakeHub({REPO: {**folders}}) as h:
        yield h


@pytest.fixture
def fs(hub: FakeHub) -> HfFileSystem:
    """A fresh HfFileSystem (no cached listings) pointed at the fake Hub by its ``endpoint``."""
    from huggingface_hub import HfFileSystem

    hub.clear_log()
    return HfFileSystem(endpoint=hub.url, skip_instance_cache=True)


# ---------------------------------------------------------------------------- HfFileSystem


def test_ls_matches_the_local_folder(fs: HfFileSystem, folders: dict[str, Path]) -> None:
    main = folders["main"]
    listed = {d["name"]: d for d in fs.ls(REPO)}
    expected = {f"{REPO}/{p.name}": p for p in main.iterdir()}
    assert set(listed) == set(expected)
    for name, p in expected.items():
        assert listed[name]["type"] == ("directory" if p.is_dir() else "file")
        if p.is_file():
            assert listed[name]["size"] == p.stat().st_size
    assert sorted(fs.ls(f"{REPO}/sub", detail=False)) == sorted(
        f"{REPO}/sub/{p.name}" for p in (main / "sub").iterdir()
    )
    assert sorted(fs.find(REPO)) == [f"{REPO}/{f}" for f in iter_files(main)]


def test_info_gives_sizes_types_and_lfs(
    hub: FakeHub, fs: HfFileSystem, folders: dict[str, Path]
) -> None:
    main = folders["main"]
    info = fs.info(f"{REPO}/model.safetensors")
    assert (info["type"], info["size"]) == ("file", (main / "model.safetensors").stat().st_size)
    assert fs.info(f"{REPO}/sub/notes.txt")["size"] == 768
    assert fs.info(f"{REPO}/sub")["type"] == "directory"
    assert fs.info(REPO)["type"] == "directory"
    import hashlib

    # expand_info goes through paths-info (POST) and carries the LFS sha256 and the commit
    full = fs.info(f"{REPO}/model.safetensors", expand_info=True)
    assert (
        full["lfs"].sha256 == hashlib.sha256((main / "model.safetensors").read_bytes()).hexdigest()
    )
    assert full["last_commit"].oid == fs._api.repo_info(REPO).sha
    assert any(r.method == "POST" and "/paths-info/main" in r.path for r in hub.requests())


def test_exists(fs: HfFileSystem) -> None:
    assert fs.exists(f"{REPO}/config.json")
    assert fs.exists(f"{REPO}/sub/deeper/a.txt")
    assert fs.exists(f"{REPO}/sub")
    assert not fs.exists(f"{REPO}/nope.bin")
    assert not fs.exists(f"{REPO}/sub/nope.txt")
    assert not fs.exists("org/missing/config.json")  # RepoNotFound
    assert not fs.exists(f"{REPO}@nobranch/config.json")  # RevisionNotFound


def test_missing_things_raise_file_not_found_with_the_hubs_reason(fs) -> None:
    with pytest.raises(FileNotFoundError, match="repository not found"):
        fs.info("org/missing/config.json")
    with pytest.raises(FileNotFoundError, match="revision not found"):
        fs.info(f"{REPO}@nobranch/config.json")
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{REPO}/nope.bin")


def test_cat_file_range_is_one_range_request_of_that_size(
    hub: FakeHub, fs: HfFileSystem, folders: dict[str, Path]
) -> None:
    data = (folders["main"] / "sub" / "notes.txt").read_bytes()
    start, end = 100, 300
    # No read-ahead: the request is exactly the range asked for.
    assert fs.cat_file(f"{REPO}/sub/notes.txt", start, end, cache_type="none") == data[start:end]
    ranged = hub.requests(ranged=True)
    assert [(r.range, r.status, r.sent) for r in ranged] == [
        (f"bytes={start}-{end - 1}", 206, end - start)
    ]
    # HfFileSystem's default (read-ahead) cache asks from `start` on, possibly more than asked.
    hub.clear_log()
    assert fs.cat_file(f"{REPO}/sub/notes.txt", 10, 20) == data[10:20]
    (r,) = hub.requests(ranged=True)
    assert r.range is not None and r.range.startswith("bytes=10-")
    assert r.sent >= 10 and r.status == 206


def test_lfs_file_range_is_redirected_to_the_cdn(
    hub: FakeHub, fs: HfFileSystem, folders: dict[str, Path]
) -> None:
    data = (folders["main"] / "model.safetensors").read_bytes()
    assert fs.cat_file(f"{REPO}/model.safetensors", 0, 8, cache_type="none") == data[:8]
    n = int.from_bytes(data[:8], "little")
    assert fs.cat_file(f"{REPO}/model.safetensors", 8, 8 + n, cache_type="none") == data[8 : 8 + n]
    ranged = hub.requests(ranged=True)
    assert [(r.server, r.status) for r in ranged] == [("hub", 302), ("cdn", 206)] * 2
    assert [r.sent for r in ranged if r.server == "cdn"] == [8, n]
    assert hub.bytes_sent(files_only=True) == 8 + n


def test_open_read_whole_file(fs: HfFileSystem, folders: dict[str, Path]) -> None:
    for rel in ("model.safetensors", "config.json", "sub/notes.txt"):
        with fs.open(f"{REPO}/{rel}", "rb") as f:
            assert f.read() == (folders["main"] / rel).read_bytes()
    with fs.open(f"{REPO}/sub/notes.txt", "rb", block_size=0) as f:  # streaming file
        assert f.read(5) == bytes(range(5))
        assert f.read() == (folders["main"] / "sub/notes.txt").read_bytes()[5:]


def test_revisions_main_branch_commit_and_pr_ref(
    hub: FakeHub, fs: HfFileSystem, folders: dict[str, Path]
) -> None:
    main_bytes = (folders["main"] / "config.json").read_bytes()
    assert fs.cat_file(f"{REPO}@main/config.json") == main_bytes
    assert any(r.path == f"/api/models/{REPO}/revision/main" for r in hub.requests())
    assert any(r.path == f"/{REPO}/resolve/main/config.json" for r in hub.requests())
    assert fs.cat_file(f"{REPO}@v1/config.json") == (folders["v1"] / "config.json").read_bytes()
    assert (
        fs.info(f"{REPO}@v1/model.safetensors")["size"]
        == (folders["v1"] / "model.safetensors").stat().st_size
    )
    sha = hub.commit(REPO, "v1")
    assert fs._api.repo_info(REPO, revision="v1").sha == sha
    assert fs.cat_file(f"{REPO}@{sha}/config.json") == (folders["v1"] / "config.json").read_bytes()
    assert fs.cat_file(f"{REPO}@refs/pr/1/config.json") == b'{"pr": 1}'
    assert any("/revision/refs%2Fpr%2F1" in r.path for r in hub.requests())
    assert not fs.exists(f"{REPO}@v1/sub/notes.txt")  # only on main


def test_tree_pages_are_followed(folders: dict[str, Path]) -> None:
    from huggingface_hub import HfFileSystem

    with FakeHub({REPO: folders["main"]}, page_size=2) as small:
        fs = HfFileSystem(endpoint=small.url, skip_instance_cache=True)
        assert sorted(fs.ls(REPO, detail=False)) == sorted(
            f"{REPO}/{p.name}" for p in folders["main"].iterdir()
        )
        pages = [r for r in small.requests() if "/tree/main" in r.path]
        assert len(pages) == 2 and "cursor=2" in pages[1].path
        assert sorted(fs.find(REPO)) == [f"{REPO}/{f}" for f in iter_files(folders["main"])]


def test_dataset_repo(folders: dict[str, Path]) -> None:
    from huggingface_hub import HfFileSystem

    with FakeHub() as data_hub:
        data_hub.add_repo(REPO, folders["v1"], repo_type="dataset")
        fs = HfFileSystem(endpoint=data_hub.url, skip_instance_cache=True)
        assert (
            fs.cat_file(f"datasets/{REPO}/config.json")
            == (folders["v1"] / "config.json").read_bytes()
        )
        assert not fs.exists(f"{REPO}/config.json")  # no model repo of that name
        paths = [r.path for r in data_hub.requests()]
        assert (
            f"/api/datasets/{REPO}" in paths
            and f"/datasets/{REPO}/resolve/main/config.json" in paths
        )


def test_head_metadata_and_hf_hub_download(
    hub: FakeHub, folders: dict[str, Path], tmp_path: Path
) -> None:
    import hashlib

    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    weights = folders["main"] / "model.safetensors"
    url = hf_hub_url(REPO, "model.safetensors", endpoint=hub.url)
    assert url == f"{hub.url}/{REPO}/resolve/main/model.safetensors"
    meta = get_hf_file_metadata(url)
    assert meta.size == weights.stat().st_size  # X-Linked-Size on the 302
    assert meta.etag == hashlib.sha256(weights.read_bytes()).hexdigest()  # X-Linked-Etag
    assert meta.commit_hash == hub.commit(REPO)
    assert meta.location.startswith(hub.cdn_url + "/cdn-lfs/")
    small = get_hf_file_metadata(hf_hub_url(REPO, "config.json", endpoint=hub.url))
    assert small.size == (folders["main"] / "config.json").stat().st_size
    assert small.location == f"{hub.url}/{REPO}/resolve/main/config.json"
    got = hf_hub_download(
        REPO, "model.safetensors", revision="v1", cache_dir=tmp_path, endpoint=hub.url
    )
    assert Path(got).read_bytes() == (folders["v1"] / "model.safetensors").read_bytes()


def test_raw_routes_ranges_and_errors(hub: FakeHub, folders: dict[str, Path]) -> None:
    data = (folders["main"] / "sub" / "notes.txt").read_bytes()

    def get(path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(hub.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    status, headers, body = get(f"/{REPO}/resolve/main/sub/notes.txt", Range="bytes=-10")
    assert (status, body, headers["Content-Range"]) == (
        206,
        data[-10:],
        f"bytes 758-767/{len(data)}",
    )
    assert headers["Accept-Ranges"] == "bytes" and headers["X-Repo-Commit"] == hub.commit(REPO)
    status, headers, _ = get(f"/{REPO}/resolve/main/sub/notes.txt", Range=f"bytes={len(data)}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
    assert get(f"/{REPO}/resolve/main/nope")[1]["X-Error-Code"] == "EntryNotFound"
    assert get(f"/{REPO}/resolve/nobranch/config.json")[1]["X-Error-Code"] == "RevisionNotFound"
    assert get("/org/other/resolve/main/config.json")[1]["X-Error-Code"] == "RepoNotFound"
    assert get(f"/api/models/{REPO}/tree/main/config.json")[1]["X-Error-Code"] == "EntryNotFound"


def test_without_lfs_redirect_files_come_from_the_hub(folders: dict[str, Path]) -> None:
    from huggingface_hub import HfFileSystem

    with FakeHub({REPO: folders["main"]}, lfs_redirect=False) as plain:
        fs = HfFileSystem(endpoint=plain.url, skip_instance_cache=True)
        data = (folders["main"] / "model.safetensors").read_bytes()
        assert fs.cat_file(f"{REPO}/model.safetensors", 8, 16, cache_type="none") == data[8:16]
        assert {r.server for r in plain.requests()} == {"hub"}


def test_patch_points_plain_hf_urls_at_the_server(
    hub: FakeHub, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec

    hub.patch(monkeypatch)
    hub.clear_log()
    fs, path = fsspec.core.url_to_fs(f"hf://{REPO}/config.json")
    assert fs.endpoint == hub.url and path == f"{REPO}/config.json"
    with fsspec.open(f"hf://{REPO}@v1/config.json", "rb") as f:
        assert f.read() == (folders["v1"] / "config.json").read_bytes()
    assert any(r.path == f"/{REPO}/resolve/v1/config.json" for r in hub.requests())


def test_env_points_a_subprocess_at_the_server(hub: FakeHub, folders: dict[str, Path]) -> None:
    code = (
        "import sys, fsspec\n"
        "fs, p = fsspec.core.url_to_fs(sys.argv[1])\n"
        "sys.stdout.buffer.write(fs.cat_file(p, 8, 40))\n"
    )
    base = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the env must undo an offline setting
    hub.clear_log()
    r = subprocess.run(
        [sys.executable, "-c", code, f"hf://{REPO}/model.safetensors"],
        env=hub.env(base),
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == (folders["main"] / "model.safetensors").read_bytes()[8:40]
    assert hub.requests(ranged=True)


# ---------------------------------------------------------------------------- paramscope on hf://
#
# paramscope opens ``hf://`` URLs through ``fsspec.core.url_to_fs``, i.e. a plain
# ``HfFileSystem()`` reading ``huggingface_hub.constants``: ``FakeHub.patch`` points it at the
# fake Hub in this process, ``FakeHub.env`` in a subprocess (``HF_ENDPOINT``).

#: Slack per range request over the bytes a header-only read needs (8 + N per safetensors
#: file, the whole index): a read-ahead of a few KiB is fine, a whole shard is not.
SLACK_PER_REQUEST = 4096


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A safetensors file (written by safetensors) and a sharded folder (written by paramscope),
    each much larger than its header, so a read of more than the header shows on the wire."""
    import torch

    import paramscope

    root = tmp_path_factory.mktemp("ckpt")
    single = root / "single"
    _write_safetensors(single / "model.safetensors", seed=3, n=4, rows=4096)
    (single / "config.json").write_text('{"model_type": "toy"}')
    g = torch.Generator().manual_seed(4)
    sd = {
        f"blocks.{i}.{k}": torch.randn(128, 96, generator=g)
        for i in range(4)
        for k in ("q", "k", "v")
    }
    sd["norm.weight"] = torch.ones(96, dtype=torch.bfloat16)
    sharded = root / "sharded"
    paramscope.save(sd, sharded, max_shard_size=200_000)
    assert len(list(sharded.glob("*.safetensors"))) >= 3
    return {"single": single, "sharded": sharded}


@pytest.fixture
def remote_hub(checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The checkpoints as ``org/single`` and ``org/sharded``; this process pointed at them."""
    from paramscope.io import _remote

    with FakeHub({"org/single": checkpoints["single"], "org/sharded": checkpoints["sharded"]}) as h:
        h.patch(monkeypatch)
        _remote.TRANSFERS.reset()
        yield h


def _header_bytes(path: Path) -> int:
    """8 + N: what reading a safetensors file's header costs."""
    with path.open("rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def _count_dict(c: object) -> dict[str, object]:
    d = dict(c.to_dict())  # type: ignore[attr-defined]
    d.pop("source", None)
    d.pop("bytes_transferred", None)
    return d


def _manifest_view(m: object) -> tuple[object, ...]:
    """A manifest without where its files are: entries (name, shape, dtype, role, tie,
    offset, length, file name, hash), format, metadata, notes, file names."""
    entries = tuple(
        (
            e.name,
            e.shape,
            e.dtype,
            e.role,
            e.tie,
            e.location.offset if e.location else None,
            e.location.length if e.location else None,
            str(e.location.file).rsplit("/", 1)[-1] if e.location else None,
            e.hash,
        )
        for e in m.values()  # type: ignore[attr-defined]
    )
    files = tuple(str(f).rsplit("/", 1)[-1] for f in m.files)  # type: ignore[attr-defined]
    return entries, m.format, m.metadata, m.notes, files  # type: ignore[attr-defined]


def test_count_of_an_hf_file_equals_the_local_count(
    remote_hub: FakeHub, checkpoints: dict[str, Path]
) -> None:
    from safetensors import safe_open

    import paramscope
    from paramscope.io import _remote

    local = checkpoints["single"] / "model.safetensors"
    remote = paramscope.count("hf://org/single/model.safetensors")
    assert _count_dict(remote) == _count_dict(paramscope.count(local))
    with safe_open(str(local), "pt") as f:  # the format's own reader as a second oracle
        assert remote.params == sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    assert paramscope.count("hf://org/single@main/model.safetensors").params == remote.params
    wire = remote_hub.bytes_sent(files_only=True)
    ranged = remote_hub.requests(ranged=True)
    assert ranged and all(r.status in (206, 302) for r in ranged)
    ranged = remote_hub.requests(ranged=True, status=206)  # the 302s to the CDN carry no bytes
    # header only: 8 + N bytes (plus a little per request), and the counter says what came
    assert wire <= _header_bytes(local) + SLACK_PER_REQUEST * len(ranged), (
        wire,
        local.stat().st_size,
    )
    assert _remote.TRANSFERS.bytes == wire


def test_count_of_an_hf_sharded_folder_equals_the_local_count(
    remote_hub: FakeHub, checkpoints: dict[str, Path]
) -> None:
    import paramscope
    from paramscope.io import _remote

    folder = checkpoints["sharded"]
    remote = paramscope.count("hf://org/sharded")
    assert _count_dict(remote) == _count_dict(paramscope.count(folder))
    assert remote.params == sum(_numels(folder))  # the shards' headers, read by safetensors
    wire = remote_hub.bytes_sent(files_only=True)
    ranged = remote_hub.requests(ranged=True, status=206)
    index = (folder / "model.safetensors.index.json").stat().st_size
    headers = sum(_header_bytes(p) for p in folder.glob("*.safetensors"))
    assert wire <= index + headers + SLACK_PER_REQUEST * len(ranged), (wire, index + headers)
    assert _remote.TRANSFERS.bytes >= wire
    assert paramscope.count("hf://org/sharded@main").params == remote.params


def _numels(folder: Path) -> Iterator[int]:
    from safetensors import safe_open

    for p in sorted(folder.glob("*.safetensors")):
        with safe_open(str(p), "pt") as f:
            for k in f.keys():  # noqa: SIM118
                yield math.prod(f.get_slice(k).get_shape())


def test_read_manifest_of_hf_urls_equals_the_local_one(
    remote_hub: FakeHub, checkpoints: dict[str, Path]
) -> None:
    import paramscope

    for url, local in (
        ("hf://org/single/model.safetensors", checkpoints["single"] / "model.safetensors"),
        ("hf://org/sharded", checkpoints["sharded"]),
    ):
        remote = paramscope.read_manifest(url)
        assert _manifest_view(remote) == _manifest_view(paramscope.read_manifest(local)), url
        assert all(str(f).startswith(url.removesuffix("/model.safetensors")) for f in remote.files)


def test_cli_count_of_hf_urls_json_has_bytes_transferred(checkpoints: dict[str, Path]) -> None:
    from _helpers import ENV

    def cli(*args: str, env: dict[str, str]) -> dict[str, object]:
        r = subprocess.run(
            [sys.executable, "-m", "paramscope", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    with FakeHub({"org/sharded": checkpoints["sharded"]}) as hub:
        env = hub.env(ENV)
        remote = cli("count", "hf://org/sharded", "--json", env=env)
        wire = hub.bytes_sent(files_only=True)
        local = cli("count", str(checkpoints["sharded"]), "--json", env=env)
        assert "bytes_transferred" not in local
        assert isinstance(remote["bytes_transferred"], int)
        assert remote["bytes_transferred"] >= wire > 0  # not less than the server sent
        assert {k: v for k, v in remote.items() if k not in ("source", "bytes_transferred")} == {
            k: v for k, v in local.items() if k != "source"
        }
        # a missing repo: exit 2, one line naming the URL
        r = subprocess.run(
            [sys.executable, "-m", "paramscope", "count", "hf://org/missing", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 2 and "hf://org/missing" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
