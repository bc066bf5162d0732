"""P17: ``count_subnet`` over 1,000 candidate sub-networks of the zoo's ResNet-50 (issue 21).

The supernet is traced once (:func:`trace_supernet`, timed on its own); then each candidate, a
random depth per stage (``layer1`` … ``layer4``: 1 … all blocks, the first always kept) and a
random width ratio for each stage's ``conv1`` and ``conv2`` (0.25 … 1 in steps of 0.125), is
counted from the graph alone. The peer is what a search does without it: build the candidate
(``subnet(..., share=True)``, views, no weight copies) and take ``sum(p.numel())``; that is done
for a sample of candidates, whose counts must be equal.

Goal: ``count_subnet`` ≤ 1 ms per candidate after the trace (median of per-candidate times).

Run: ``.venv/bin/python bench/p17_subnet.py [--candidates 1000] [--sample 30] [--seed 0]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def _candidates(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    sizes = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
    ratios = [0.25 + 0.125 * i for i in range(7)]
    out = []
    for _ in range(n):
        depth = {s: rng.randint(1, k) for s, k in sizes.items()}
        width = {}
        for s in sizes:
            width[f"{s}.*.conv1"] = rng.choice(ratios)
            width[f"{s}.*.conv2"] = rng.choice(ratios)
        out.append({"depth": depth, "width": width})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=30, help="candidates also built (the peer)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from paramscope.building import zoo
    from paramscope.compress._subnet import count_subnet, subnet, trace_supernet

    torch.set_num_threads(1)
    model = zoo.build("resnet50").eval()
    traces = []
    for _ in range(3):
        t0 = time.perf_counter()
        sn = trace_supernet(model)
        traces.append(time.perf_counter() - t0)
    cands = _candidates(args.candidates, args.seed)
    per: list[float] = []
    counts = []
    t_all = time.perf_counter()
    for c in cands:
        t0 = time.perf_counter()
        counts.append(count_subnet(sn, **c))
        per.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    built: list[float] = []
    for i in range(min(args.sample, len(cands))):
        t0 = time.perf_counter()
        small, _ = subnet(model, **cands[i])
        n = sum(p.numel() for p in small.parameters())
        built.append(time.perf_counter() - t0)
        if n != counts[i]:
            raise SystemExit(f"candidate {i}: count_subnet {counts[i]:,} != built {n:,}")
    med = statistics.median(per)
    print(
        f"ResNet-50 supernet: {sn.params:,} parameters, {len(sn.spaces)} spaces, stacks "
        f"{[(s[0], s[1]) for s in sn.stacks]}"
    )
    print(f"trace_supernet: median {statistics.median(traces) * 1e3:.1f} ms (3 runs)")
    print(
        f"count_subnet: {len(cands)} candidates in {total * 1e3:.1f} ms; per candidate median "
        f"{med * 1e3:.3f} ms, p90 {sorted(per)[int(0.9 * len(per))] * 1e3:.3f} ms, max "
        f"{max(per) * 1e3:.3f} ms; counts {min(counts):,} .. {max(counts):,}"
    )
    bmed = statistics.median(built)
    print(
        f"peer (build with views + sum(p.numel())): median {bmed * 1e3:.1f} ms per candidate over "
        f"{len(built)}; counts equal; count_subnet is {bmed / med:.0f}x faster"
    )
    print(f"goal <= 1 ms per candidate: {'met' if med <= 1e-3 else 'NOT met'}")


if __name__ == "__main__":
    main()
