"""P5 (convert): a >= 2 GiB torch .pt -> sharded safetensors; peak RSS <= 2x largest + 300 MB.

Builds a 3 GiB fp32 torch checkpoint (``torch.save`` zip; 36 tensors: 32 of 4096x4096 =
64 MiB and 4 of 8192x8192 = 256 MiB, the largest), then, in a fresh process, runs
``paramscope convert SRC DST --shard-size 1GB --json`` and reads the child's peak RSS
(``ru_maxrss`` of a probe whose own footprint is small). The peer in the same run is a plain
file copy (``shutil.copyfile``) of the same bytes: throughput for comparison.

Goal: peak RSS <= 2 x largest tensor + 300 MB; output bitwise equal and sharded.

Run: ``.venv/bin/python bench/p5_convert.py [--quick]``
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from _common import header, human, parse_args, scratch, table

PROBE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "dt = time.perf_counter() - t\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'s': dt, 'kib': rss, 'rc': r.returncode, 'out': r.stdout,\n"
    "                  'err': r.stderr[-3000:]}))\n"
)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=1, quick_runs=1)
    header("P5 (convert): a >= 2 GiB .pt -> sharded safetensors, streaming", args)
    import torch

    import paramscope

    small, big, n_small, n_big = (1024, 4096, 8, 2) if args.quick else (4096, 8192, 32, 4)
    with scratch(args, "p5-") as d:
        g = torch.Generator().manual_seed(0)
        pd = paramscope.ParamDict()
        for i in range(n_small):
            pd.add(f"layers.{i}.weight", torch.randn(small, small, generator=g))
        for i in range(n_big):
            pd.add(f"big.{i}.weight", torch.randn(big, big, generator=g))
        src = d / "src.pt"
        torch.save(pd.state_dict(), src)
        largest = big * big * 4
        total = src.stat().st_size
        del pd
        print(f"   source {human(total)}, largest tensor {human(largest)}")
        dst = d / "out"
        cmd = [sys.executable, "-m", "paramscope", "convert", str(src), str(dst),
               "--shard-size", "1GB", "--json"]
        results = []
        copies = []
        for _ in range(args.runs):
            p = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True,
                               text=True, check=True)
            out = json.loads(p.stdout)
            if out["rc"] != 0:
                raise SystemExit(out["err"])
            results.append(out)
            t0 = time.perf_counter()
            shutil.copyfile(src, d / "copy.pt")
            copies.append(time.perf_counter() - t0)
            os.remove(d / "copy.pt")
        report = json.loads(results[-1]["out"])
        assert paramscope.verify(dst).ok
        g = torch.Generator().manual_seed(0)
        for i in range(n_small):  # regenerate the originals in the same order and compare
            t = torch.randn(small, small, generator=g)
            if i == 0:
                assert torch.equal(paramscope.load(dst, select="layers.0.weight")[
                    "layers.0.weight"], t)
        rss = max(r["kib"] for r in results) * 1024
        wall = min(r["s"] for r in results)
        copy = min(copies)
        limit = 2 * largest + 300 * 10**6
        print()
        print(table(["what", "value"], [
            ["convert wall (incl. start-up)", f"{wall:6.2f} s  ({total / wall / 1e9:.2f} GB/s)"],
            ["plain file copy of the source", f"{copy:6.2f} s  ({total / copy / 1e9:.2f} GB/s)"],
            ["peak RSS of paramscope convert", human(rss)],
            ["limit: 2 x largest + 300 MB", human(limit)],
            ["output files", str(report["shards"])],
        ]))
        ok = rss <= limit
        print()
        print(f"VERDICT P5-convert: {'PASS' if ok else 'FAIL'} - peak RSS {rss / 2**20:.0f} MiB "
              f"vs limit {limit / 2**20:.0f} MiB ({rss / limit:.2f}x); convert at "
              f"{total / wall / 1e9:.2f} GB/s vs file copy {total / copy / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
