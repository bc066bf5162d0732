"""P5 (convert): a >= 2 GiB torch .pt -> sharded safetensors; peak RSS <= 2x largest + 300 MB.

Builds a 3 GiB fp32 torch checkpoint (``torch.save`` zip; 36 tensors: 32 of 4096x4096 =
64 MiB and 4 of 8192x8192 = 256 MiB, the largest), then, in a fresh process, runs
``paramscope convert SRC DST --shard-size 1GB --json`` and reads the child's peak RSS
(``ru_maxrss`` of a probe whose own footprint is small). The peer in the same run is a plain
durable file copy (``shutil.copyfile`` + ``os.fsync``) of the same bytes. The variants
alternate run by run; the output is deleted and an untimed ``os.sync()`` runs before every run.
Wall time includes the process start-up (``import torch``).

Goal: convert >= 0.8x the copy's throughput (medians of the same run) and peak RSS
<= 2 x largest tensor + 300 MB; output bitwise equal and sharded.

Run: ``.venv/bin/python bench/p5_convert.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from _common import big_checkpoint, header, human, med, parse_args, probe, scratch, table
from p5_quantize_stream import GOAL, durable_copy


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=3, quick_runs=1)
    header("P5 (convert): a >= 2 GiB .pt -> sharded safetensors, streaming", args)
    import torch

    import paramscope

    with scratch(args, "p5-") as d:
        pd, small, big, n_small, _n_big = big_checkpoint(args.quick)
        src = d / "src.pt"
        torch.save(pd.state_dict(), src)
        largest = big * big * 4
        total = src.stat().st_size
        del pd
        print(f"   source {human(total)}, largest tensor {human(largest)}")
        dst = d / "out"
        cmd = [
            sys.executable,
            "-m",
            "paramscope",
            "convert",
            str(src),
            str(dst),
            "--shard-size",
            "1GB",
            "--json",
        ]
        results = []
        copies = []
        for r in range(args.runs):
            for which in ["ours", "copy"] if r % 2 == 0 else ["copy", "ours"]:
                if which == "ours":
                    shutil.rmtree(dst, ignore_errors=True)
                    os.sync()
                    results.append(probe(cmd))
                else:
                    os.sync()
                    copies.append(durable_copy(src, d / "copy.pt"))
                    os.remove(d / "copy.pt")
        report = json.loads(results[-1]["out"])
        assert paramscope.verify(dst).ok
        g = torch.Generator().manual_seed(0)
        for i in range(n_small):  # regenerate the originals in the same order and compare
            t = torch.randn(small, small, generator=g)
            if i == 0:
                assert torch.equal(
                    paramscope.load(dst, select="layers.0.weight")["layers.0.weight"], t
                )
        rss = max(r["kib"] for r in results) * 1024
        walls = [r["s"] for r in results]
        wall = med(walls)
        copy = med(copies)
        limit = 2 * largest + 300 * 10**6
        print()
        print(
            table(
                ["what", "value"],
                [
                    [
                        "convert wall, median (incl. start-up)",
                        f"{wall:6.2f} s  ({total / wall / 1e9:.2f} GB/s; min {min(walls):.2f}, "
                        f"max {max(walls):.2f})",
                    ],
                    [
                        "durable file copy of the source, median",
                        f"{copy:6.2f} s  ({total / copy / 1e9:.2f} GB/s; min {min(copies):.2f}, "
                        f"max {max(copies):.2f})",
                    ],
                    ["convert / copy throughput", f"{copy / wall:.2f}x"],
                    ["peak RSS of paramscope convert", human(rss)],
                    ["limit: 2 x largest + 300 MB", human(limit)],
                    ["output files", str(report["shards"])],
                ],
            )
        )
        ok = rss <= limit and copy / wall >= GOAL
        print()
        print(
            f"VERDICT P5-convert: {'PASS' if ok else 'FAIL'} - convert {copy / wall:.2f}x "
            f"the throughput of a durable copy (goal >= {GOAL}x; {total / wall / 1e9:.2f} vs "
            f"{total / copy / 1e9:.2f} GB/s), peak RSS {rss / 2**20:.0f} MiB vs limit "
            f"{limit / 2**20:.0f} MiB ({rss / limit:.2f}x); n={args.runs}"
        )


if __name__ == "__main__":
    main()
