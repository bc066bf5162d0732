"""The test servers of ``_servers.py`` checked with fsspec directly (no paramscope): what they
answer, and that their request logs count what crossed the wire. The remote tests
(test_remote.py) rely on both."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from _servers import S3Bucket, http_server


def _data(n: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


@pytest.fixture
def www(tmp_path: Path) -> tuple[Path, bytes]:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    data = _data(200_000)
    (root / "sub" / "a.bin").write_bytes(data)
    (root / "forbidden").mkdir()
    (root / "forbidden" / "b.bin").write_bytes(b"secret")
    return root, data


def _http():
    import fsspec

    return fsspec.filesystem("http", skip_instance_cache=True)


@pytest.mark.parametrize(("start", "end"), [(0, 8), (1000, 5000), (199_990, 200_000)])
def test_http_range_cat_file(www: tuple[Path, bytes], start: int, end: int) -> None:
    root, data = www
    with http_server(root) as (url, log):
        out = _http().cat_file(f"{url}/sub/a.bin", start, end)
        assert out == data[start:end]
        gets = log.of("GET", "/sub/a.bin")
        assert len(gets) == 1
        assert gets[0].range == f"bytes={start}-{end - 1}"
        assert gets[0].status == 206
        assert gets[0].sent == end - start == log.total_sent()


def test_http_range_headers(www: tuple[Path, bytes]) -> None:
    root, data = www
    with http_server(root) as (url, log):
        head = urllib.request.Request(f"{url}/sub/a.bin", method="HEAD")
        with urllib.request.urlopen(head) as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == str(len(data))
            assert r.headers["Accept-Ranges"] == "bytes"
            assert r.read() == b""
        for rng, status, want, content_range in [
            ("bytes=10-19", 206, data[10:20], f"bytes 10-19/{len(data)}"),
            ("bytes=199995-", 206, data[199995:], f"bytes 199995-199999/{len(data)}"),
            ("bytes=-4", 206, data[-4:], f"bytes 199996-199999/{len(data)}"),
            ("bytes=0-999999", 206, data, f"bytes 0-199999/{len(data)}"),
            ("bytes=0-1,5-6", 200, data, None),  # several ranges: ignored, whole body
        ]:
            req = urllib.request.Request(f"{url}/sub/a.bin", headers={"Range": rng})
            with urllib.request.urlopen(req) as r:
                assert r.status == status, rng
                assert r.read() == want, rng
                assert r.headers.get("Content-Range") == content_range, rng
        req = urllib.request.Request(f"{url}/sub/a.bin", headers={"Range": "bytes=300000-"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 416
        assert e.value.headers["Content-Range"] == f"bytes */{len(data)}"
        assert log.of("HEAD")[0].sent == 0
        assert [r.status for r in log.of("GET")] == [206, 206, 206, 206, 200, 416]


def test_http_without_ranges(www: tuple[Path, bytes]) -> None:
    root, data = www
    with http_server(root, ranges=False) as (url, log):
        head = urllib.request.Request(f"{url}/sub/a.bin", method="HEAD")
        with urllib.request.urlopen(head) as r:
            assert r.headers["Content-Length"] == str(len(data))
            assert "Accept-Ranges" not in r.headers
        log.clear()
        # What fsspec does on a server that ignores Range (fsspec 2026.9): HTTPFileSystem.cat_file
        # does NOT raise: it sends ``Range: bytes=10-19``, gets 200 and the whole body, and
        # returns the whole body (200,000 bytes, not data[10:20]). A client must check the
        # status (206) or the length itself; paramscope's RemoteSource has to.
        out = _http().cat_file(f"{url}/sub/a.bin", 10, 20)
        assert out == data
        (get,) = log.of("GET")
        assert (get.range, get.status, get.sent) == ("bytes=10-19", 200, len(data))
        # The file interface (HTTPFile.async_fetch_range) does check: a 200 longer than the range
        # raises ValueError "The HTTP server doesn't appear to support range requests ...".
        log.clear()
        f = _http().open(f"{url}/sub/a.bin", block_size=1024)
        with pytest.raises(ValueError, match="support range requests"):
            f.seek(50)
            f.read(10)
        f.close()
        assert [r.status for r in log.of("GET")] == [200]


def test_http_errors(www: tuple[Path, bytes]) -> None:
    import aiohttp

    root, _ = www
    with http_server(root) as (url, log):
        fs = _http()
        with pytest.raises(FileNotFoundError):
            fs.cat_file(f"{url}/sub/missing.bin")
        with pytest.raises(aiohttp.ClientResponseError) as e:
            fs.cat_file(f"{url}/forbidden/b.bin")
        assert e.value.status == 403
        with pytest.raises(FileNotFoundError):  # no escape from the root
            fs.cat_file(f"{url}/../www/sub/a.bin".replace("/../", "/%2E%2E/"))
        with pytest.raises(FileNotFoundError):  # no directory listing
            fs.cat_file(f"{url}/sub/")
        assert [r.status for r in log.of("GET")] == [404, 403, 404, 404]


def test_http_log_counts_concurrent_reads(www: tuple[Path, bytes]) -> None:
    root, data = www
    ranges = [(i * 10_000, i * 10_000 + 777) for i in range(16)]
    with http_server(root) as (url, log):
        out = _http().cat_ranges(
            [f"{url}/sub/a.bin"] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges]
        )
        assert out == [data[a:b] for a, b in ranges]
        assert log.total_sent("GET") == 16 * 777
        assert sorted(r.range for r in log.of("GET")) == sorted(
            f"bytes={a}-{b - 1}" for a, b in ranges
        )


def test_s3_cat_file_and_ls(s3: S3Bucket, tmp_path: Path) -> None:
    import fsspec

    data = _data(300_000, seed=1)
    folder = tmp_path / "ckpt"
    (folder / "nested").mkdir(parents=True)
    (folder / "model.bin").write_bytes(data)
    (folder / "nested" / "x.json").write_text('{"a": 1}')
    assert s3.upload_folder(folder, "m") == f"s3://{s3.name}/m/"
    assert s3.keys("m/") == ["m/model.bin", "m/nested/x.json"]
    assert os.environ["AWS_ENDPOINT_URL"] == s3.endpoint
    s3.log.clear()

    fs = fsspec.filesystem("s3")  # endpoint and credentials from the environment only
    assert fs.cat_file(f"{s3.name}/m/model.bin", start=1234, end=5678) == data[1234:5678]
    (get,) = s3.log.of("GET", "/m/model.bin")
    assert (get.range, get.status, get.sent) == ("bytes=1234-5677", 206, 5678 - 1234)
    assert sorted(fs.ls(f"{s3.name}/m", detail=False)) == [
        f"{s3.name}/m/model.bin",
        f"{s3.name}/m/nested",
    ]
    assert fs.info(f"{s3.name}/m/model.bin")["size"] == len(data)
    assert fs.cat_file(f"{s3.url('m/nested/x.json')}") == b'{"a": 1}'
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{s3.name}/m/missing.bin")


def test_s3_fresh_bucket_per_test(s3: S3Bucket) -> None:
    import fsspec

    assert s3.keys() == []
    s3.put_bytes("k", b"v")
    assert s3.get_bytes("k") == b"v"
    assert fsspec.filesystem("s3").ls(s3.name, detail=False) == [f"{s3.name}/k"]
    assert s3.pending_uploads() == []


def test_s3_env_for_subprocess(s3: S3Bucket) -> None:
    from _helpers import run_python

    s3.put_bytes("p/q.bin", b"0123456789")
    r = run_python(
        "import fsspec, sys; print(fsspec.filesystem('s3').cat_file(sys.argv[1], start=2, end=5))",
        s3.url("p/q.bin"),
        env=s3.env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "b'234'"
