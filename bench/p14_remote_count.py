"""P14: ``paramscope count s3://bucket/llama-2-7b/`` on a local S3 server vs an s3fs peer.

The data is P2's sparse Llama-2-7B-shaped checkpoint (``p2_sharded_7b.build``: 291 bf16
entries with the real names and shapes, two shards split at HF's 10 GB limit, and
``model.safetensors.index.json``; 13.5 GB described, a few hundred KiB on disk) served by
moto's S3-compatible server (``ThreadedMotoServer`` on 127.0.0.1, started in this process).

How the 13.5 GB objects are held. moto keeps an object's bytes in a ``SpooledTemporaryFile``
(memory up to ~5 MiB, then a temporary file), and it answers every GET, ranged or not, by
reading the WHOLE object into memory (``FakeKey.value``) and slicing it
(``S3Response._handle_range_header``). Uploading the real 13.5 GB (mostly zeros) would write
13.5 GB to its temporary files, and every 100-byte range request would then read a 10 GB
shard into memory: minutes per run and more memory than this machine has. A smaller model is
no way out either: the shapes define the data offsets, and the headers must be the real
Llama-2-7B ones. So each shard object is uploaded with boto3 as its first 8 + N bytes (the
real header, byte for byte), and then, in this process, its moto key is turned into a
:class:`SparseKey` whose content is the local sparse shard (the full size, the data a hole):
``value`` is a :class:`SparseValue` that reads only the slice asked for (``os.pread``), so a
range GET costs what it asks for on the server too, and HEAD / listings report the full size.
Everything else (signatures, HEAD, listing, ranges, ``Content-Range``, ETag / If-Match) is
moto's own code. The index is uploaded as it is. After the upload the script checks through
boto3 that sizes and the first/last bytes of every object equal the local files.

Every request the server answers is logged by a WSGI wrapper (method, path, ``Range``, body
bytes written), so both sides' bytes are measured the same way, on the server.

Times, alternating, each in a fresh process (``_common.probe``: the child's wall and peak RSS):

* ours: ``python -m paramscope count s3://bucket/llama-2-7b/ --json``; its ``params`` must be
  6,738,415,616 and its ``bytes_transferred`` is recorded;
* peer: ``python -c`` with s3fs, the way one reads safetensors headers through fsspec
  (``safetensors.safe_open`` takes only a local path, so the peer does what it does, through
  an fsspec file): ``fs.cat`` the index, then for each shard ``fs.open(url, "rb")`` with
  s3fs's defaults (50 MiB blocks, read-ahead cache), ``read(8)`` for the header length N and
  ``read(N)`` for the header, and the sum of the shapes. Its first ``read(8)`` fetches a whole
  block, which is the cost this benchmark shows;
* floor: ``python -c "import s3fs"`` (what both sides import: paramscope reads s3:// through
  s3fs, whose aiobotocore/botocore import is most of either side's wall on a local server);

Header bytes = the index + sum over the shards of (8 + N). The table shows, from the server's
log, the object bytes of each side (GET bodies of objects) and all response bodies (listings'
XML included, which ``bytes_transferred`` does not count).
Goal: ours' bytes (its ``bytes_transferred``) <= 1.01 x header bytes, and the peer's median
wall >= 10 x ours.

Run: ``.venv/bin/python bench/p14_remote_count.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from _common import du_bytes, header, human, med, ms, parse_args, probe, require_cli, scratch, table
from p2_sharded_7b import (
    HF_SHARD_LIMIT,
    LLAMA2_7B_PARAMS,
    analytic_params,
    build,
    llama_layout,
    shard_plan,
)

GOAL_BYTES_RATIO = 1.01
GOAL_SPEEDUP = 10.0
BUCKET = "bucket"
PREFIX = "llama-2-7b"
INDEX = "model.safetensors.index.json"

PEER_CODE = """
import json, math, struct, sys
import s3fs
base = sys.argv[1].rstrip("/")
fs = s3fs.S3FileSystem()
index = json.loads(fs.cat(f"{base}/model.safetensors.index.json"))
n = 0
for shard in sorted(set(index["weight_map"].values())):
    with fs.open(f"{base}/{shard}", "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(size))
    n += sum(math.prod(v["shape"]) for k, v in hdr.items() if k != "__metadata__")
print(n)
"""


# ------------------------------------------------------------------------------ the server
class SparseValue:
    """A moto object's content read from a local (sparse) file, a slice at a time.

    Args:
        path: the local file; its size is the object's size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __getitem__(self, s: slice) -> bytes:
        start, stop, step = s.indices(self.size)
        assert step == 1, "SparseValue supports plain slices only"
        out = bytearray()
        while start < stop:
            chunk = os.pread(self._fd, min(stop - start, 1 << 24), start)
            if not chunk:
                break
            out += chunk
            start += len(chunk)
        return bytes(out)

    def __iter__(self) -> Iterator[bytes]:  # a GET without Range streams the file
        for start in range(0, self.size, 1 << 20):
            yield self[start : start + (1 << 20)]

    def close(self) -> None:
        os.close(self._fd)


def sparse_key_class() -> type:
    """moto's ``FakeKey`` with its ``value`` read from a :class:`SparseValue`."""
    from moto.s3.models import FakeKey

    class SparseKey(FakeKey):
        __module__ = "moto.s3.p14_sparse"  # moto's model metaclass files classes by service
        _sparse: SparseValue

        @property
        def value(self) -> SparseValue:  # type: ignore[override]
            return self._sparse

    return SparseKey


class RequestLog:
    """A WSGI wrapper counting, per request, the body bytes the server sends."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        entry = {
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO", "")
            + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else ""),
            "range": environ.get("HTTP_RANGE"),
            "sent": 0,
        }
        with self._lock:
            self.entries.append(entry)
        body = self.app(environ, start_response)
        try:
            for chunk in body:
                entry["sent"] += len(chunk)
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self.entries = self.entries, []
        return out


def object_bytes(entries: list[dict[str, Any]]) -> int:
    """Body bytes of object GETs (not listings: a key after the bucket, no list query)."""
    return sum(
        e["sent"]
        for e in entries
        if e["method"] == "GET" and e["path"].split("?")[0].strip("/").count("/") >= 1
    )


def start_server() -> tuple[Any, RequestLog, str]:
    """moto's S3 server on a free port, requests logged; ``(server, log, endpoint)``."""
    from moto.server import ThreadedMotoServer

    for name in ("werkzeug", "moto"):
        logging.getLogger(name).setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    log = RequestLog(server._server.app)
    server._server.app = log  # werkzeug's handler calls self.server.app for every request
    host, port = server.get_host_and_port()
    return server, log, f"http://{host}:{port}"


def upload(folder: Path, shards: list[Path]) -> None:
    """The index as it is; each shard as its header bytes, then backed by the sparse file."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(folder / INDEX), BUCKET, f"{PREFIX}/{INDEX}")
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    sparse_cls = sparse_key_class()
    for p in shards:
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            f.seek(0)
            head = f.read(8 + n)
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{p.name}", Body=head)
        key = backend.get_object(BUCKET, f"{PREFIX}/{p.name}")
        assert key is not None and key.size == 8 + n
        key.__class__ = sparse_cls
        key._sparse = SparseValue(p)
        key.contentsize = key._sparse.size
        key._etag = f"{key._etag}-sparse{key.contentsize}"  # what S3 does for multipart
        key.checksum_value = key.checksum_algorithm = key.checksum_type = None
    # check: every object's size and first / last bytes are the local file's
    for p in [folder / INDEX, *shards]:
        k = f"{PREFIX}/{p.name}"
        size = p.stat().st_size
        assert s3.head_object(Bucket=BUCKET, Key=k)["ContentLength"] == size, k
        with open(p, "rb") as f:
            first = f.read(4096)
            f.seek(max(0, size - 64))
            last = f.read()
        got = s3.get_object(Bucket=BUCKET, Key=k, Range=f"bytes=0-{len(first) - 1}")["Body"]
        assert got.read() == first, k
        got = s3.get_object(Bucket=BUCKET, Key=k, Range=f"bytes={max(0, size - 64)}-")["Body"]
        assert got.read() == last, k


# --------------------------------------------------------------------------------- main
def header_bytes(folder: Path, shards: list[Path]) -> int:
    """The index plus each shard's 8 + N."""
    total = (folder / INDEX).stat().st_size
    for p in shards:
        with open(p, "rb") as f:
            total += 8 + struct.unpack("<Q", f.read(8))[0]
    return total


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=5, quick_runs=2)
    header("P14: paramscope count s3://… (sparse Llama-2-7B, 2 shards) vs s3fs headers", args)
    require_cli()
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    })  # fmt: skip
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(k, None)
    server, log, endpoint = start_server()
    os.environ["AWS_ENDPOINT_URL"] = endpoint

    full = (4096, 11008, 32000)
    assert analytic_params(*full) == LLAMA2_7B_PARAMS
    plan = shard_plan(llama_layout(*full), HF_SHARD_LIMIT)
    url = f"s3://{BUCKET}/{PREFIX}/"
    try:
        with scratch(args, "p14-") as root:
            folder = root / PREFIX
            build(folder, *full, plan)
            shards = sorted(folder.glob("*.safetensors"))
            logical = sum(p.stat().st_size for p in folder.iterdir())
            hdr = header_bytes(folder, shards)
            upload(folder, shards)
            log.take()
            print(
                f"   {len(shards)} shards + index on {endpoint}: {human(logical)} described, "
                f"{human(du_bytes(folder))} on disk; header bytes {hdr:,} "
                f"(index {(folder / INDEX).stat().st_size:,})"
            )

            variants = {
                "ours: paramscope count s3://… --json": [
                    sys.executable, "-m", "paramscope", "count", url, "--json"],
                "peer: s3fs index + open/read(8)/read(N) per shard": [
                    sys.executable, "-c", PEER_CODE, url],
                "floor: python -c 'import s3fs'": [sys.executable, "-c", "import s3fs"],
            }  # fmt: skip
            names = list(variants)
            res: dict[str, list[dict[str, Any]]] = {n: [] for n in names}

            def one(name: str) -> dict[str, Any]:
                out = probe(variants[name])
                reqs = log.take()
                got = out["out"]
                moved = None
                if name == names[0]:
                    j = json.loads(got)
                    count, moved = int(j["params"]), int(j["bytes_transferred"])
                    assert count == LLAMA2_7B_PARAMS, (name, count)
                elif name == names[1]:
                    count = int(got.strip().splitlines()[-1])
                    assert count == LLAMA2_7B_PARAMS, (name, count)
                return {
                    "s": out["s"],
                    "kib": out["kib"],
                    "reported": moved,
                    "server": object_bytes(reqs),
                    "bodies": sum(e["sent"] for e in reqs),
                    "requests": reqs,
                }

            for n in names:  # warm-up, untimed
                one(n)
            for r in range(args.runs):
                order = names if r % 2 == 0 else [names[1], names[0], *names[2:]]
                for n in order:
                    res[n].append(one(n))
    finally:
        server.stop()

    ours, peer, floor = res[names[0]], res[names[1]], res[names[2]]
    print(f"   counts agree: {LLAMA2_7B_PARAMS:,} (ours and peer, every run)")
    rows = []
    for n in names:
        t = [x["s"] for x in res[n]]
        srv = med([x["server"] for x in res[n]])
        bodies = med([x["bodies"] for x in res[n]])
        rows.append(
            [
                n,
                ms(med(t)),
                ms(min(t)),
                ms(max(t)),
                f"{max(x['kib'] for x in res[n]) / 1024:.0f} MiB",
                f"{srv:,.0f}",
                f"{srv / hdr:.4f}",
                f"{bodies:,.0f}",
                len(res[n][-1]["requests"]),
            ]
        )
    print()
    print(
        table(
            [
                "variant",
                "median",
                "min",
                "max",
                "peak RSS",
                "object bytes (server)",
                "x header",
                "all bodies (+listings)",
                "requests",
            ],
            rows,
        )
    )
    print()
    print("   ours, last run's requests:")
    for e in ours[-1]["requests"]:
        print(f"     {e['method']:4} {e['path'][:90]:90} {e['range'] or '':24} {e['sent']:>10,}")
    print("   peer, last run's requests:")
    for e in peer[-1]["requests"]:
        print(f"     {e['method']:4} {e['path'][:90]:90} {e['range'] or '':24} {e['sent']:>10,}")

    reported = med([x["reported"] for x in ours])
    b_ratio = reported / hdr
    speedup = med([x["s"] for x in peer]) / med([x["s"] for x in ours])
    ok = b_ratio <= GOAL_BYTES_RATIO and speedup >= GOAL_SPEEDUP
    print()
    print(
        f"VERDICT P14: {'PASS' if ok else 'FAIL'} - ours bytes_transferred {reported:,.0f} = "
        f"{b_ratio:.4f} x header bytes {hdr:,} (goal <= {GOAL_BYTES_RATIO}); peer "
        f"{med([x['server'] for x in peer]):,.0f} object bytes; wall ours "
        f"{med([x['s'] for x in ours]) * 1e3:.0f} ms, peer {med([x['s'] for x in peer]) * 1e3:.0f}"
        f" ms, peer/ours {speedup:.1f}x (goal >= {GOAL_SPEEDUP:.0f}x); n={args.runs}"
    )
    f = med([x["s"] for x in floor])
    print(
        f"   above the floor (import s3fs, {f * 1e3:.0f} ms): ours "
        f"{(med([x['s'] for x in ours]) - f) * 1e3:.0f} ms, peer "
        f"{(med([x['s'] for x in peer]) - f) * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
