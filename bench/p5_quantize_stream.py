"""P5: quantise a >= 2 GiB checkpoint streaming; peak RSS <= 2x the largest tensor + 300 MB.

Builds a 3 GiB fp32 safetensors checkpoint (36 tensors: 32 of 4096x4096 = 64 MiB and
4 of 8192x8192 = 256 MiB, the largest), then, in a fresh process, runs
``paramscope quantize SRC DST --bits 8 --json`` and reads the child's peak RSS (VmHWM via
``ru_maxrss`` of a probe whose own footprint is small). The peer in the same run is a plain
file copy (``shutil.copyfile``) of the same bytes: throughput for comparison.

Goal: peak RSS <= 2 x largest tensor + 300 MB (= 812 MiB here), output loads and dequantises.

Run: ``.venv/bin/python bench/p5_quantize_stream.py [--quick]``
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from _common import big_checkpoint, header, human, parse_args, probe, scratch, table


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=1, quick_runs=1)
    header("P5: streaming quantisation of a >= 2 GiB checkpoint", args)

    import paramscope

    with scratch(args, "p5-") as d:
        pd, _small, big, _n_small, _n_big = big_checkpoint(args.quick)
        src = paramscope.save(pd, d / "src.safetensors", fsync=False)
        largest = big * big * 4
        total = src.stat().st_size
        del pd
        print(f"   source {human(total)}, largest tensor {human(largest)}")
        dst = d / "q.safetensors"
        cmd = [sys.executable, "-m", "paramscope", "quantize", str(src), str(dst),
               "--bits", "8", "--json"]
        results = []
        copies = []
        for _ in range(args.runs):
            results.append(probe(cmd))
            t0 = time.perf_counter()
            shutil.copyfile(src, d / "copy.safetensors")
            copies.append(time.perf_counter() - t0)
            os.remove(d / "copy.safetensors")
        report = json.loads(results[-1]["out"])
        assert paramscope.verify(dst).ok
        q = paramscope.load(dst, select="big.0.*", dequantize=True)
        assert tuple(q["big.0.weight"].shape) == (big, big)
        rss = max(r["kib"] for r in results) * 1024
        wall = min(r["s"] for r in results)
        copy = min(copies)
        limit = 2 * largest + 300 * 10**6
        print()
        print(table(["what", "value"], [
            ["quantize wall (incl. start-up)", f"{wall:6.2f} s  ({total / wall / 1e9:.2f} GB/s)"],
            ["plain file copy of the source", f"{copy:6.2f} s  ({total / copy / 1e9:.2f} GB/s)"],
            ["peak RSS of paramscope quantize", human(rss)],
            ["limit: 2 x largest + 300 MB", human(limit)],
            ["output size", human(dst.stat().st_size)],
            ["total SQNR", f"{report['total']['sqnr_db']:.1f} dB"],
        ]))
        ok = rss <= limit
        print()
        print(f"VERDICT P5: {'PASS' if ok else 'FAIL'} - peak RSS {rss / 2**20:.0f} MiB vs "
              f"limit {limit / 2**20:.0f} MiB ({rss / limit:.2f}x); quantize at "
              f"{total / wall / 1e9:.2f} GB/s vs file copy {total / copy / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
