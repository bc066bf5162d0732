"""Checkpoints where they live (issue 18): paramscope on ``s3://`` and ``http://`` URLs against
real servers started by the tests (``_servers.py``: moto's S3 server, a stdlib HTTP server with
and without Range support). The oracle is paramscope on the same files on the local disk, and
the servers' own request logs for what crossed the wire.

``hf://`` is not tested here: it needs a server speaking the Hub's file-resolution routes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import paramscope
from _helpers import ENV, run_cli
from _servers import S3Bucket, http_server

#: Bytes a request may cost above the header bytes it is for (detection's first bytes, a
#: length prefix read apart): small next to any tensor's data here (≥ 64 KiB).
SLACK = 256


# ------------------------------------------------------------------------------ fixtures


def _state_dict(seed: int = 0, rows: int = 64) -> dict[str, Any]:
    """Tensors of a few dtypes whose data (≥ 64 KiB each) dwarfs their headers."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Any] = {}
    for i in range(6):
        sd[f"layers.{i}.attn.weight"] = torch.randn(rows, 256, generator=g)
        sd[f"layers.{i}.mlp.weight"] = torch.randn(rows, 512, generator=g).to(torch.bfloat16)
        sd[f"layers.{i}.norm.bias"] = torch.randn(256, generator=g)
    sd["embed.weight"] = torch.randn(rows * 4, 128, generator=g).to(torch.float16)
    return sd


def _header_bytes(path: Path) -> int:
    """A safetensors file's 8 + N header bytes."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The local checkpoints: a sharded safetensors folder (4+ shards), one safetensors file,
    a torch zip and a GGUF file."""
    import torch

    root = tmp_path_factory.mktemp("remote-ckpts")
    sd = _state_dict()
    sharded = root / "sharded"
    paramscope.save(sd, sharded, max_shard_size=250_000)
    single = root / "single"
    single.mkdir()
    paramscope.save(sd, single / "model.safetensors")
    pt = root / "torch" / "model.pt"
    pt.parent.mkdir()
    torch.save(sd, pt)
    gguf_file = root / "gguf" / "model.gguf"
    gguf_file.parent.mkdir()
    _write_gguf(gguf_file)
    return {
        "sharded": sharded,
        "single": single / "model.safetensors",
        "torch": pt,
        "gguf": gguf_file,
    }


def _write_gguf(path: Path) -> None:
    """A GGUF file by the ``gguf`` package's own writer (as test_gguf.py writes them), with a
    tokenizer vocabulary in its header as real ones have (a header of ~100 KB, 4+ MB of data)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny")
    w.add_context_length(2048)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i:05d}" for i in range(6000)])
    w.add_token_scores([float(i) for i in range(6000)])
    w.add_tensor("output_norm.weight", np.ones(256, np.float32))
    w.add_tensor("token_embd.weight", rng.standard_normal((4096, 256), dtype=np.float32))
    q = rng.standard_normal((256, 512)).astype(np.float32)
    w.add_tensor(
        "blk.0.attn_q.weight",
        gguf.quants.quantize(q, gguf.GGMLQuantizationType.Q8_0),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def transfers() -> Iterator[Any]:
    """The core's process-wide counter of remote bytes and requests, reset for the test."""
    from paramscope.io._remote import TRANSFERS

    TRANSFERS.reset()
    yield TRANSFERS
    TRANSFERS.reset()


@pytest.fixture
def allow() -> Iterator[Any]:
    """``allow_download`` of the core, forbidden again after the test."""
    from paramscope.io._remote import allow_download

    allow_download(False)
    yield allow_download
    allow_download(False)


def _same_count(remote: Any, local: Any) -> None:
    """Counts equal but for where they were read from."""
    assert remote.source != local.source
    assert dataclasses.replace(remote, source=local.source) == local


def _entries(m: Any) -> list[tuple[Any, ...]]:
    """A manifest's entries without the local/remote part of their file name."""
    out = []
    for e in m.values():
        loc = e.location
        where = None
        if loc is not None:
            where = (Path(str(loc.file)).name, loc.offset, loc.length, loc.member)
        out.append((e.name, e.shape, e.dtype, e.role, e.trainable, e.tie, e.tags, e.hash, where))
    return out


def _same_manifest(remote: Any, local: Any) -> None:
    assert remote.format == local.format
    assert list(remote.keys()) == list(local.keys())
    assert _entries(remote) == _entries(local)
    assert remote.metadata == local.metadata


def _one_line(text: str) -> str:
    text = text.strip()
    assert text, "no error message"
    assert "\n" not in text, f"expected a one-line error, found:\n{text}"
    assert "Traceback" not in text
    return text


def _object_gets(log: Any) -> list[Any]:
    """The server's answered GETs of object bodies: not listings (those carry a query
    string), not error answers (a probe for an optional file that is not there)."""
    return [r for r in log.of("GET") if "?" not in r.path and r.status < 300]


def _payload(log: Any) -> int:
    """Body bytes of the answered object GETs: what the core's counter should count."""
    return sum(r.sent for r in _object_gets(log))


# ------------------------------------------------------------------------------ S3: reads


def test_s3_sharded_count_and_manifest_equal_local(s3: S3Bucket, files: dict[str, Path]) -> None:
    url = s3.upload_folder(files["sharded"], "llama")
    assert len(s3.keys("llama/")) >= 5  # an index and at least four shards
    _same_count(paramscope.count(url), paramscope.count(files["sharded"]))
    _same_manifest(paramscope.read_manifest(url), paramscope.read_manifest(files["sharded"]))
    # the index's own URL and the folder without its trailing slash read the same
    index = s3.url("llama/model.safetensors.index.json")
    _same_count(paramscope.count(index), paramscope.count(files["sharded"]))
    _same_count(paramscope.count(url.rstrip("/")), paramscope.count(files["sharded"]))


def test_s3_sharded_count_reads_only_index_and_headers(
    s3: S3Bucket, files: dict[str, Path], transfers: Any
) -> None:
    folder = files["sharded"]
    url = s3.upload_folder(folder, "llama")
    shards = sorted(folder.glob("*.safetensors"))
    index_bytes = (folder / "model.safetensors.index.json").stat().st_size
    header_bytes = sum(_header_bytes(p) for p in shards)
    data_bytes = sum(p.stat().st_size for p in shards) - header_bytes
    s3.log.clear()
    transfers.reset()

    c = paramscope.count(url)

    assert c.params == paramscope.count(folder).params
    gets = _object_gets(s3.log)
    on_wire = sum(r.sent for r in gets)
    bound = index_bytes + header_bytes + SLACK * len(gets)
    assert on_wire <= bound, (on_wire, bound, [(r.path, r.range, r.sent) for r in gets])
    assert data_bytes > 10 * bound  # the bound is far below reading any tensor
    # every shard is read with range requests only
    for r in gets:
        if r.path.endswith(".safetensors"):
            assert r.range is not None and r.status == 206, r
    # the core's counter agrees with the server's log
    assert transfers.bytes == on_wire
    assert transfers.requests == len(gets)
    assert transfers.bytes <= index_bytes + header_bytes + SLACK * transfers.requests


def test_s3_torch_zip_count_equal_local(
    s3: S3Bucket, files: dict[str, Path], transfers: Any
) -> None:
    import zipfile

    pt = files["torch"]
    url = s3.upload_file(pt, "t/model.pt")
    s3.log.clear()
    transfers.reset()
    _same_count(paramscope.count(url), paramscope.count(pt))
    # header-only: the central directory, every member's local header (its own extra field:
    # torch aligns data with it), and the small members (data.pkl, version, byteorder …)
    raw = pt.read_bytes()
    with zipfile.ZipFile(pt) as z:
        tail = len(raw) - z.start_dir
        local = 0
        small = 0
        for i in z.infolist():
            n, extra = struct.unpack_from("<HH", raw, i.header_offset + 26)
            local += 30 + n + extra
            if "/data/" not in i.filename:
                small += i.compress_size
    gets = _object_gets(s3.log)
    on_wire = sum(r.sent for r in gets)
    bound = tail + local + small + SLACK * len(gets)
    assert on_wire <= bound, (on_wire, bound, [(r.range, r.sent) for r in gets])
    assert transfers.bytes == on_wire
    _same_manifest(paramscope.read_manifest(url), paramscope.read_manifest(pt))


def test_s3_gguf_count_equal_local(s3: S3Bucket, files: dict[str, Path], transfers: Any) -> None:
    import gguf

    path = files["gguf"]
    url = s3.upload_file(path, "g/model.gguf")
    s3.log.clear()
    transfers.reset()
    remote = paramscope.count(url)
    _same_count(remote, paramscope.count(path))
    assert remote.params == sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)
    # header-only: a GGUF header's length is known only once it is parsed, so a reader fetches
    # it in growing pieces; doubling from 16 KiB reads less than 2 × header + 16 KiB in all.
    # Never the tensor data.
    header = gguf.GGUFReader(path).data_offset
    gets = _object_gets(s3.log)
    on_wire = sum(r.sent for r in gets)
    bound = 2 * header + (1 << 14) + SLACK * len(gets)
    assert on_wire <= bound, (header, bound, [(r.range, r.sent) for r in gets])
    assert path.stat().st_size - header > 10 * bound
    assert transfers.bytes == on_wire
    _same_manifest(paramscope.read_manifest(url), paramscope.read_manifest(path))
    # the folder holding it too
    _same_count(paramscope.count(s3.url("g/")), paramscope.count(path.parent))


def test_cli_count_json_has_bytes_transferred(s3: S3Bucket, files: dict[str, Path]) -> None:
    folder = files["sharded"]
    url = s3.upload_folder(folder, "llama")
    s3.log.clear()
    r = run_cli("count", url, "--json", env=s3.env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    local = json.loads(run_cli("count", folder, "--json").stdout)
    assert "bytes_transferred" in out, sorted(out)
    assert "bytes_transferred" not in local  # only when a URL was read
    on_wire = sum(x.sent for x in _object_gets(s3.log))
    assert out["bytes_transferred"] == on_wire > 0
    assert out["params"] == local["params"]
    assert out["bytes"] == local["bytes"]


@pytest.mark.parametrize("command", [["inspect"], ["verify"], ["diff", "{local}"]])
def test_cli_other_commands_json_have_bytes_transferred(
    s3: S3Bucket, files: dict[str, Path], command: list[str]
) -> None:
    url = s3.upload_folder(files["sharded"], "llama")
    args = [a.replace("{local}", str(files["sharded"])) for a in command]
    r = run_cli(args[0], url, *args[1:], "--json", env=s3.env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert isinstance(out, dict) and isinstance(out.get("bytes_transferred"), int), r.stdout[:300]
    assert out["bytes_transferred"] > 0


def test_load_select_fetches_only_selected(
    s3: S3Bucket, files: dict[str, Path], transfers: Any
) -> None:
    import torch

    folder = files["sharded"]
    url = s3.upload_folder(folder, "llama")
    transfers.reset()
    got = paramscope.load(url, select="layers.1.*")
    want = paramscope.load(folder, select="layers.1.*")
    assert sorted(got) == sorted(want) and len(want) == 3
    for k in want:
        assert torch.equal(got[k], want[k])
    index_bytes = (folder / "model.safetensors.index.json").stat().st_size
    header_bytes = sum(_header_bytes(p) for p in folder.glob("*.safetensors"))
    data = sum(t.numel() * t.element_size() for t in want.values())
    assert transfers.bytes <= index_bytes + header_bytes + data + SLACK * transfers.requests


# ------------------------------------------------------------------------------ S3: values


def test_s3_verify_values_reads_each_byte_once(
    s3: S3Bucket, files: dict[str, Path], transfers: Any
) -> None:
    folder = files["sharded"]
    url = s3.upload_folder(folder, "llama")
    transfers.reset()
    remote = paramscope.verify(url, values=True)
    local = paramscope.verify(folder, values=True)
    assert remote.problems == local.problems == []
    assert (remote.files, remote.entries, remote.hashed) == (
        local.files,
        local.entries,
        local.hashed,
    )
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert transfers.bytes <= total + SLACK * transfers.requests
    assert transfers.bytes == _payload(s3.log)


def test_convert_to_s3_sharded_folder(s3: S3Bucket, files: dict[str, Path], tmp_path: Path) -> None:
    paramscope.convert(files["torch"], tmp_path / "ref", max_shard_size=250_000)
    paramscope.convert(files["torch"], s3.url("outdir/"), max_shard_size=250_000)
    ref = {p.name: p.read_bytes() for p in (tmp_path / "ref").iterdir()}
    assert len(ref) >= 4
    assert s3.keys("outdir/") == sorted(f"outdir/{n}" for n in ref)
    for name, data in ref.items():
        assert s3.get_bytes(f"outdir/{name}") == data, name


@pytest.mark.parametrize("kind", ["sharded", "torch", "gguf"])
def test_s3_convert_bitwise_equal_local(
    s3: S3Bucket, files: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    src = files[kind]
    url = s3.upload_folder(src, kind) if src.is_dir() else s3.upload_file(src, f"{kind}/{src.name}")
    paramscope.convert(src, tmp_path / "local.safetensors")
    paramscope.convert(url, tmp_path / "remote.safetensors")
    local = (tmp_path / "local.safetensors").read_bytes()
    assert (tmp_path / "remote.safetensors").read_bytes() == local


def test_cli_convert_s3_to_local_bitwise(
    s3: S3Bucket, files: dict[str, Path], tmp_path: Path
) -> None:
    url = s3.upload_folder(files["sharded"], "llama")
    r = run_cli("convert", url, "out.safetensors", "--json", env=s3.env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes_transferred"] > 0
    r = run_cli("convert", files["sharded"], "ref.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ref = (tmp_path / "ref.safetensors").read_bytes()
    assert (tmp_path / "out.safetensors").read_bytes() == ref


def test_convert_to_s3_writes_the_same_bytes(
    s3: S3Bucket, files: dict[str, Path], tmp_path: Path
) -> None:
    paramscope.convert(files["sharded"], tmp_path / "ref.safetensors")
    paramscope.convert(files["sharded"], s3.url("out/model.safetensors"))
    assert s3.keys("out/") == ["out/model.safetensors"]
    assert s3.get_bytes("out/model.safetensors") == (tmp_path / "ref.safetensors").read_bytes()
    assert s3.pending_uploads() == []


def test_remote_write_failing_midway_leaves_no_object(
    s3: S3Bucket, files: dict[str, Path], tmp_path: Path
) -> None:
    """A source that breaks after some bytes (an HTTP server answering 503 past a budget): the
    convert fails and nothing is under the destination name, nor a pending upload."""
    src = files["single"]
    budget = src.stat().st_size // 3
    with (
        http_server(src.parent, fail_after=budget) as (base, _log),
        pytest.raises(Exception) as e,
    ):
        paramscope.convert(f"{base}/{src.name}", s3.url("out/model.safetensors"))
    assert isinstance(e.value, paramscope.ParamscopeError), repr(e.value)
    _one_line(str(e.value))
    assert s3.keys("out/") == []
    assert s3.pending_uploads() == []


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 112 MiB safetensors file: above s3fs's multi-part threshold (``put_file`` sends one
    ``PutObject`` below twice its 50 MiB part size) and boto3's (8 MiB)."""
    import torch

    path = tmp_path_factory.mktemp("remote-big") / "big.safetensors"
    paramscope.save({f"w{i}": torch.ones(1 << 20) * i for i in range(28)}, path)
    return path


def test_large_upload_is_multipart(s3: S3Bucket, big: Path) -> None:
    paramscope.convert(big, s3.url("out/big.safetensors"))
    assert s3.get_bytes("out/big.safetensors") == big.read_bytes()
    log = s3.log.settle()
    started = [r for r in log if r.method == "POST" and r.path.endswith("?uploads")]
    parts = [r for r in log if r.method == "PUT" and "partNumber=" in r.path]
    assert started and len(parts) >= 2, [(r.method, r.path[-60:], r.status) for r in log]
    assert s3.pending_uploads() == []


def test_remote_write_killed_leaves_no_object(s3: S3Bucket, big: Path) -> None:
    """``convert … s3://`` killed (SIGKILL) while its upload is on the wire: no object under
    the destination name (a multi-part upload left pending is not an object)."""
    s3.log.clear()
    dest = s3.url("out/big.safetensors")
    proc = subprocess.Popen(
        [sys.executable, "-m", "paramscope", "convert", str(big), dest],
        env={**ENV, **s3.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # a body on the wire: a part of a multi-part upload, or a single PUT
            if any(r.method == "PUT" and "/out/" in r.path for r in list(s3.log)):
                break
            time.sleep(0.005)
        assert proc.poll() is None, (
            f"convert ended (code {proc.returncode}) before its upload could be killed: "
            f"{proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    s3.log.settle(timeout=30)
    assert s3.keys("out/") == []
    # the kill came before the upload was complete
    assert not [r for r in s3.log if r.method == "POST" and "uploadId=" in r.path]


# ------------------------------------------------------------------------------ HTTP


def test_http_with_range_counts_equal_local(files: dict[str, Path], transfers: Any) -> None:
    root = files["single"].parents[1]  # single/, sharded/, torch/, gguf/
    with http_server(root) as (base, log):
        for rel, local in [
            ("single/model.safetensors", files["single"]),
            ("sharded/model.safetensors.index.json", files["sharded"]),
            ("torch/model.pt", files["torch"]),
            ("gguf/model.gguf", files["gguf"]),
        ]:
            log.clear()
            transfers.reset()
            _same_count(paramscope.count(f"{base}/{rel}"), paramscope.count(local))
            assert transfers.bytes == _payload(log), rel
            gets = log.of("GET")
            assert all(r.status == 206 for r in gets if not r.path.endswith(".json")), rel
        # a safetensors file costs its 8 + N header bytes (plus a small constant per request)
        log.clear()
        paramscope.count(f"{base}/single/model.safetensors")
        gets = _object_gets(log)
        assert _payload(log) <= _header_bytes(files["single"]) + SLACK * len(gets), gets


def test_http_without_range_needs_allow_download(
    files: dict[str, Path], allow: Any, transfers: Any
) -> None:
    single = files["single"]
    with http_server(single.parent, ranges=False) as (base, log):
        url = f"{base}/{single.name}"
        with pytest.raises(paramscope.ParamscopeError) as e:
            paramscope.count(url)
        msg = _one_line(str(e.value))
        assert "--allow-download" in msg and url in msg, msg
        assert "range" in msg.lower(), msg

        allow(True)
        log.clear()
        _same_count(paramscope.count(url), paramscope.count(single))
        # the whole file once (the core's docstring: "downloaded once"), not once per read
        gets = _object_gets(log)
        assert _payload(log) <= single.stat().st_size + SLACK * len(gets), [
            (r.range, r.sent) for r in gets
        ]


def test_cli_http_without_range(files: dict[str, Path], tmp_path: Path) -> None:
    single = files["single"]
    with http_server(single.parent, ranges=False) as (base, _log):
        url = f"{base}/{single.name}"
        r = run_cli("count", url, "--json")
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        msg = _one_line(r.stderr)
        assert "--allow-download" in msg and url in msg, msg
        r = run_cli("count", url, "--json", "--allow-download")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        local = json.loads(run_cli("count", single, "--json").stdout)
        assert out["params"] == local["params"]
        assert out["bytes_transferred"] >= single.stat().st_size


def test_not_found_and_forbidden(s3: S3Bucket, files: dict[str, Path], tmp_path: Path) -> None:
    single = files["single"]
    (tmp_path / "forbidden").mkdir()
    (tmp_path / "forbidden" / "model.safetensors").write_bytes(single.read_bytes())
    with http_server(tmp_path) as (base, _log):
        cases = [
            (s3.url("nope/model.safetensors"), paramscope.SourceNotFoundError, s3.env),
            ("s3://no-such-bucket-here/model.safetensors", paramscope.SourceNotFoundError, s3.env),
            (f"{base}/nope/model.safetensors", paramscope.SourceNotFoundError, {}),
            (f"{base}/forbidden/model.safetensors", paramscope.ParamscopeError, {}),
        ]
        for url, cls, env in cases:
            with pytest.raises(cls) as e:
                paramscope.count(url)
            msg = _one_line(str(e.value))
            assert url in msg, msg
            r = run_cli("count", url, env=env)
            assert r.returncode == 2, (url, r.returncode, r.stderr)
            assert url in _one_line(r.stderr), r.stderr
        forbidden = f"{base}/forbidden/model.safetensors"
        with pytest.raises(paramscope.ParamscopeError) as e:
            paramscope.count(forbidden)
        assert not isinstance(e.value, FileNotFoundError)  # forbidden is not "not found"
        assert "403" in str(e.value) or "denied" in str(e.value).lower(), str(e.value)


def test_errors_do_not_show_secrets(files: dict[str, Path], tmp_path: Path) -> None:
    with http_server(tmp_path) as (base, _log):
        host = base.split("://", 1)[1]
        url = f"http://alice:s3cr3t@{host}/forbidden/model.safetensors?token=t0k3n"
        r = run_cli("count", url)
        assert r.returncode == 2, r.stderr
        msg = _one_line(r.stderr)
        assert "s3cr3t" not in msg and "t0k3n" not in msg, msg
        assert f"{host}/forbidden/model.safetensors" in msg, msg


def test_transient_errors_are_retried(files: dict[str, Path], transfers: Any) -> None:
    from paramscope.io import _remote

    root = files["single"].parents[1]
    # two 503s, then answers: the retries (with backoff) get through
    with http_server(root, flaky=2) as (base, log):
        got = paramscope.count(f"{base}/single/model.safetensors")
        _same_count(got, paramscope.count(files["single"]))
        model = [r.status for r in log.of("GET") if r.path.endswith("model.safetensors")]
        assert model[:2] == [503, 503] and 206 in model  # (config.json probes: 404)
    # more 503s in a row than attempts: one clear line naming the URL, no traceback
    with http_server(root, flaky=100) as (base, log):
        with pytest.raises(paramscope.ParamscopeError) as err:
            paramscope.count(f"{base}/single/model.safetensors")
        assert f"{base}/single/model.safetensors" in _one_line(str(err.value))
        assert len(log.of("GET")) >= _remote.ATTEMPTS


@pytest.mark.parametrize(
    ("url", "extra"), [("gs://b/m.safetensors", "gcs"), ("az://c/m.safetensors", "azure")]
)
def test_missing_storage_library_names_the_extra(
    url: str, extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from paramscope.cli import main
    from paramscope.io._remote import EXTRAS, MissingExtraError

    monkeypatch.setitem(sys.modules, EXTRAS[url.split(":")[0]][1], None)  # not installed
    with pytest.raises(MissingExtraError, match=rf"pip install 'paramscope\[{extra}\]'"):
        paramscope.count(url)
    capsys.readouterr()
    assert main(["count", url]) == 2
    assert f"paramscope[{extra}]" in _one_line(capsys.readouterr().err)


def test_s3_dcp_counts_from_its_metadata_and_refuses_values_clearly(
    s3: S3Bucket, tmp_path: Path
) -> None:
    import torch

    sd = {"enc.weight": torch.randn(8, 4), "head.weight": torch.randn(3, 8)}
    local = paramscope.save(sd, tmp_path / "dcp", format="dcp")
    url = s3.upload_folder(local, "dcp")
    assert paramscope.count(url).params == paramscope.count(local).params == 56
    assert list(paramscope.read_manifest(url)) == list(paramscope.read_manifest(local))
    with pytest.raises(paramscope.ParamscopeError, match="DCP values are read from a local"):
        paramscope.load(url)


def test_whole_downloads_of_files_without_identity_are_never_mixed_up(
    files: dict[str, Path], allow: Any, tmp_path: Path
) -> None:
    import torch

    # two files of the same size, on a server without Range, ETag or date: each download is
    # its own (a cache keyed by a missing identity once served one file for every other)
    allow(True)
    root = tmp_path / "www"
    root.mkdir()
    paramscope.save({"a": torch.zeros(10)}, root / "a.safetensors")
    paramscope.save({"b": torch.ones(10)}, root / "b.safetensors")
    with http_server(root, ranges=False) as (base, _log):
        for name in ["a", "b", "a"]:
            got = paramscope.load(f"{base}/{name}.safetensors")
            assert list(got) == [name]
            assert float(got[name].sum()) == (10.0 if name == "b" else 0.0)
