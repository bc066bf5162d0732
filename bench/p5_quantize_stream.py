"""P5: quantise and prune a >= 2 GiB checkpoint streaming, at disk speed, in bounded memory.

Builds a 3 GiB fp32 safetensors checkpoint (36 tensors: 32 of 4096x4096 = 64 MiB and
4 of 8192x8192 = 256 MiB, the largest), then runs N times, rotating the order every run,
each in a fresh process and each reading the same (page-cached) source:

* ours: ``paramscope quantize SRC DST --bits 8 --json`` (int8 per-channel, durable output)
* ours: ``paramscope prune SRC DST --amount 0.5 --json`` (global L1, exact count, durable)
* ours: ``paramscope prune SRC DST --amount 0.5 --scope layer --json``
* peer: a durable plain file copy of the same bytes (``shutil.copyfile`` + ``os.fsync``)

The output is deleted and an untimed ``os.sync()`` runs before every run, so no run inherits
another's dirty pages. Wall time includes the process start-up (``import torch``). Peak RSS is
the child's (``ru_maxrss`` of a probe whose own footprint is small).

Goal: each of ours >= 0.8x the copy's throughput (source bytes per second, medians of the same
run) and peak RSS <= 2 x largest tensor + 300 MB (= 798 MiB here); the output loads.

Run: ``.venv/bin/python bench/p5_quantize_stream.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from _common import big_checkpoint, header, human, med, parse_args, probe, scratch, table

GOAL = 0.8


def durable_copy(src: Path, dst: Path) -> float:
    """Seconds for ``shutil.copyfile`` + ``os.fsync`` of the copy (durable, like ours)."""
    t0 = time.perf_counter()
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=3, quick_runs=1)
    header("P5: streaming quantize / prune of a >= 2 GiB checkpoint vs a durable copy", args)

    import paramscope

    with scratch(args, "p5-") as d:
        pd, _small, big, _n_small, _n_big = big_checkpoint(args.quick)
        src = paramscope.save(pd, d / "src.safetensors", fsync=False)
        largest = big * big * 4
        total = src.stat().st_size
        del pd
        print(f"   source {human(total)}, largest tensor {human(largest)}")
        exe = [sys.executable, "-m", "paramscope"]
        outs = {
            "quantize --bits 8": d / "q.safetensors",
            "prune --amount 0.5 (global)": d / "p.safetensors",
            "prune --amount 0.5 --scope layer": d / "pl.safetensors",
            "peer: durable file copy": d / "copy.safetensors",
        }
        cmds = {
            "quantize --bits 8": [
                *exe,
                "quantize",
                str(src),
                str(outs["quantize --bits 8"]),
                "--bits",
                "8",
                "--json",
            ],
            "prune --amount 0.5 (global)": [
                *exe,
                "prune",
                str(src),
                str(outs["prune --amount 0.5 (global)"]),
                "--amount",
                "0.5",
                "--json",
            ],
            "prune --amount 0.5 --scope layer": [
                *exe,
                "prune",
                str(src),
                str(outs["prune --amount 0.5 --scope layer"]),
                "--amount",
                "0.5",
                "--scope",
                "layer",
                "--json",
            ],
        }
        names = list(outs)
        times: dict[str, list[float]] = {n: [] for n in names}
        rss: dict[str, int] = dict.fromkeys(names, 0)
        last: dict[str, dict] = {}
        for r in range(args.runs):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                with_out = outs[n]
                if with_out.exists():
                    os.remove(with_out)
                os.sync()
                if n in cmds:
                    res = probe(cmds[n])
                    times[n].append(res["s"])
                    rss[n] = max(rss[n], res["kib"] * 1024)
                    last[n] = res
                else:
                    times[n].append(durable_copy(src, with_out))
        os.remove(outs["peer: durable file copy"])
        qrep = json.loads(last["quantize --bits 8"]["out"])
        prep = json.loads(last["prune --amount 0.5 (global)"]["out"])
        for n in cmds:
            assert paramscope.verify(outs[n]).ok, n
        q = paramscope.load(outs["quantize --bits 8"], select="big.0.*", dequantize=True)
        assert tuple(q["big.0.weight"].shape) == (big, big)
        copy = med(times["peer: durable file copy"])
        limit = 2 * largest + 300 * 10**6
        rows = []
        for n in names:
            t = times[n]
            rows.append(
                [
                    n,
                    f"{med(t):6.2f} s",
                    f"{min(t):6.2f} s",
                    f"{max(t):6.2f} s",
                    f"{total / med(t) / 1e9:5.2f} GB/s",
                    f"{copy / med(t):5.2f}x",
                    human(rss[n]) if n in cmds else "-",
                ]
            )
        print()
        print(table(["variant", "median", "min", "max", "throughput", "vs copy", "peak RSS"], rows))
        print(
            f"   limit 2 x largest + 300 MB = {human(limit)}; quantize output "
            f"{human(outs['quantize --bits 8'].stat().st_size)}, total SQNR "
            f"{qrep['total']['sqnr_db']:.1f} dB; prune zeros "
            f"{prep['total']['zeros'] if 'total' in prep else '?'}"
        )
        verdicts = []
        ok = True
        for n in cmds:
            ratio = copy / med(times[n])
            good = ratio >= GOAL and rss[n] <= limit
            ok &= good
            verdicts.append(
                f"{n.split(' ')[0]}{' layer' if 'layer' in n else ''} "
                f"{ratio:.2f}x copy, {rss[n] / 2**20:.0f} MiB"
            )
        print()
        print(
            f"VERDICT P5: {'PASS' if ok else 'FAIL'} - "
            + "; ".join(verdicts)
            + f" (goal >= {GOAL}x a durable copy at {total / copy / 1e9:.2f} GB/s, "
            f"RSS <= {limit / 2**20:.0f} MiB); n={args.runs}"
        )


if __name__ == "__main__":
    main()
