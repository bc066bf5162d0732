"""P6: int8 per-channel quantisation throughput of 1 GiB fp32 against a memcpy of it.

Both run in this process on the same tensor, alternating, N times:

* ours: ``paramscope.compress.quantize_tensor(t, QuantConfig(8, "symmetric", "channel"))``
* peer: ``dst.copy_(t)`` — a memcpy of the same 1 GiB into a preallocated buffer

Throughput is input bytes per second. Goal: ours >= 50% of the memcpy bandwidth.

Run: ``.venv/bin/python bench/p6_quant_throughput.py [--quick] [--runs N]``
"""

from __future__ import annotations

import time

from _common import header, med, parse_args, table

GOAL = 0.50


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    header("P6: int8 per-channel quantisation vs memcpy, 1 GiB fp32", args)
    import torch

    from paramscope.compress import QuantConfig, quantize_tensor

    rows_, cols = (4096, 4096) if args.quick else (16384, 16384)
    g = torch.Generator().manual_seed(0)
    t = torch.randn(rows_, cols, generator=g)
    nbytes = t.numel() * 4
    dst = torch.empty_like(t)
    cfg = QuantConfig(8, "symmetric", "channel")
    quantize_tensor(t, cfg)  # warm-up
    dst.copy_(t)
    times: dict[str, list[float]] = {"ours": [], "memcpy": []}
    for r in range(args.runs):
        for name in ["ours", "memcpy"] if r % 2 == 0 else ["memcpy", "ours"]:
            t0 = time.perf_counter()
            if name == "ours":
                q = quantize_tensor(t, cfg)
                del q
            else:
                dst.copy_(t)
            times[name].append(time.perf_counter() - t0)
    o, p = med(times["ours"]), med(times["memcpy"])
    rows = [
        [k, f"{med(v):7.3f} s", f"{min(v):7.3f} s", f"{nbytes / med(v) / 1e9:6.2f} GB/s"]
        for k, v in times.items()
    ]
    print(
        f"   tensor {rows_}x{cols} fp32 = {nbytes / 2**30:.2f} GiB, "
        f"torch threads {torch.get_num_threads()}"
    )
    print()
    print(table(["variant", "median", "min", "throughput"], rows))
    ratio = p / o
    print()
    print(
        f"VERDICT P6: {'PASS' if ratio >= GOAL else 'FAIL'} - int8 per-channel at "
        f"{nbytes / o / 1e9:.2f} GB/s = {ratio:.0%} of memcpy {nbytes / p / 1e9:.2f} GB/s "
        f"(goal >= {GOAL:.0%}); n={args.runs}"
    )


if __name__ == "__main__":
    main()
