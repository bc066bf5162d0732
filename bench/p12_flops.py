"""P12: ``paramscope flops zoo:llama-2-7b --seq 4096 --json`` end to end against fvcore.

Each variant runs in a fresh process (so imports count), rotating run by run; the script
reports the median wall time and the peak RSS of the child (``ru_maxrss``):

* ours: ``python -m paramscope flops zoo:llama-2-7b --seq 4096 --json`` (build on meta, one
  forward under torch's ``FlopCounterMode``, the tree and the op table);
* peer: fvcore's ``FlopCountAnalysis`` on the same zoo model built on meta, token ids
  ``(1, 4096)`` on meta (fvcore traces with ``torch.jit``, which runs on meta);
* floor: the same model built on meta and one plain forward, nothing counted.

It also compares the totals: fvcore's "flops" are MACs; both count the same linear layers
(asserted equal to our ``aten.mm`` MACs), and fvcore has no handle for
``aten::scaled_dot_product_attention`` (listed in its ``unsupported_ops``, counted as 0), so
ours = fvcore + attention (asserted).

Goal: ours <= 5 s and <= 500 MiB end to end.

Run: ``.venv/bin/python bench/p12_flops.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import sys

from _common import header, med, parse_args, probe, table

GOAL_S = 5.0
GOAL_MIB = 500.0
SEQ = 4096

PEER = (
    "import json, sys, torch\n"
    "from fvcore.nn import FlopCountAnalysis\n"
    "from paramscope.building import zoo\n"
    "with torch.device('meta'):\n"
    "    m = zoo.build('llama-2-7b')\n"
    "m.eval()\n"
    "ids = torch.zeros(1, int(sys.argv[1]), dtype=torch.long, device='meta')\n"
    "a = FlopCountAnalysis(m, (ids,))\n"
    "a.unsupported_ops_warnings(False)\n"
    "a.uncalled_modules_warnings(False)\n"
    "print(json.dumps({'total': a.total(), 'unsupported': dict(a.unsupported_ops())}))\n"
)

FLOOR = (
    "import sys, torch\n"
    "from paramscope.building import zoo\n"
    "with torch.device('meta'):\n"
    "    m = zoo.build('llama-2-7b')\n"
    "m.eval()\n"
    "with torch.no_grad():\n"
    "    m(torch.zeros(1, int(sys.argv[1]), dtype=torch.long, device='meta'))\n"
)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=5, quick_runs=2)
    header(f"P12: flops zoo:llama-2-7b --seq {SEQ} end to end vs fvcore FlopCountAnalysis", args)
    try:
        import fvcore
    except ImportError:
        raise SystemExit("P12 needs the peer: pip install fvcore") from None
    ours_cmd = [
        sys.executable, "-m", "paramscope", "flops", "zoo:llama-2-7b", "--seq", str(SEQ), "--json"
    ]  # fmt: skip
    peer_cmd = [sys.executable, "-c", PEER, str(SEQ)]
    floor_cmd = [sys.executable, "-c", FLOOR, str(SEQ)]

    ours = json.loads(probe(ours_cmd)["out"])  # warm-up and the totals
    peer = json.loads(probe(peer_cmd)["out"])
    mm_macs = ours["by_op"]["aten.mm"]["macs"]
    attn_macs = sum(v["macs"] for k, v in ours["by_op"].items() if k != "aten.mm")
    assert peer["total"] == mm_macs, (peer["total"], mm_macs)
    assert ours["macs"] == peer["total"] + attn_macs, (ours["macs"], peer["total"], attn_macs)
    print(
        f"   MACs: ours {ours['macs']:,} = fvcore {peer['total']:,} (the linear layers, equal) "
        f"+ attention {attn_macs:,} ({', '.join(k for k in ours['by_op'] if k != 'aten.mm')}) "
        f"that fvcore counts 0: ours/fvcore {ours['macs'] / peer['total']:.4f}"
    )
    print(f"   fvcore unsupported ops (counted 0): {peer['unsupported']}")
    print(f"   ours uncounted ops (listed, no formula): {ours['uncounted']}")

    variants = {
        "ours: paramscope flops --json": ours_cmd,
        f"peer: fvcore {getattr(fvcore, '__version__', '?')} FlopCountAnalysis": peer_cmd,
        "floor: build on meta + one forward": floor_cmd,
    }
    names = list(variants)
    res: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(args.runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            res[name].append(probe(variants[name]))
    rows = []
    for name in names:
        s = med([x["s"] for x in res[name]])
        mib = max(x["kib"] for x in res[name]) / 1024
        rows.append(
            [name, f"{s:6.2f} s", f"{min(x['s'] for x in res[name]):6.2f} s", f"{mib:7.1f} MiB"]
        )
    print()
    print(table(["variant", "median wall", "min", "peak RSS (max)"], rows))
    ours_s = med([x["s"] for x in res[names[0]]])
    ours_mib = max(x["kib"] for x in res[names[0]]) / 1024
    peer_s = med([x["s"] for x in res[names[1]]])
    ok = ours_s <= GOAL_S and ours_mib <= GOAL_MIB
    print()
    print(
        f"VERDICT P12: {'PASS' if ok else 'FAIL'} - ours {ours_s:.2f} s, {ours_mib:.0f} MiB "
        f"(goal <= {GOAL_S} s, <= {GOAL_MIB:.0f} MiB); fvcore {peer_s:.2f} s; wall ratio "
        f"fvcore/ours {peer_s / ours_s:.2f}x; MACs ours/fvcore "
        f"{ours['macs'] / peer['total']:.4f} (fvcore misses attention); n={args.runs}"
    )


if __name__ == "__main__":
    main()
