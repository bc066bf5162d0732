"""P7: ``paramscope inspect zoo:llama-2-7b`` end to end against ``torchinfo.summary``.

Each variant runs in a fresh process (so imports count), alternating run by run; the script
reports the median wall time and the peak RSS of the child (``ru_maxrss``):

* ours: ``python -m paramscope inspect zoo:llama-2-7b`` (build on meta + summary + table)
* peer: ``python -c "import torch, torchinfo; <build the same zoo model on meta>;
  torchinfo.summary(model, depth=3)"`` — the same meta model, summarised by torchinfo 1.8

Goal: ours <= 2 s and <= 400 MiB end to end. Also checks both report 6,738,415,616 params.

Run: ``.venv/bin/python bench/p7_inspect_zoo.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from _common import header, med, parse_args, table

GOAL_S = 2.0
GOAL_MIB = 400.0
EXPECTED = 6_738_415_616

PEER = (
    "import torch, torchinfo\n"
    "from paramscope.building import zoo\n"
    "with torch.device('meta'):\n"
    "    m = zoo.build('llama-2-7b')\n"
    "s = torchinfo.summary(m, depth=3, verbose=1)\n"
    "print('TOTAL', s.total_params)\n"
)

# Runs a command as a child and prints its wall time and peak RSS (KiB) as JSON.
PROBE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "dt = time.perf_counter() - t\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'s': dt, 'kib': rss, 'rc': r.returncode, 'out': r.stdout[-4000:],\n"
    "                  'err': r.stderr[-2000:]}))\n"
)


def measure(cmd: list[str]) -> dict:
    env = {**os.environ, "COLUMNS": "120"}
    p = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True, text=True,
                       env=env, check=True)
    d = json.loads(p.stdout)
    if d["rc"] != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{d['err']}")
    return d


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    header("P7: inspect zoo:llama-2-7b end to end vs torchinfo.summary", args)
    try:
        import torchinfo
    except ImportError:
        raise SystemExit("P7 needs the peer: pip install torchinfo") from None
    ours_cmd = [sys.executable, "-m", "paramscope", "inspect", "zoo:llama-2-7b", "--json"]
    ours_table = [sys.executable, "-m", "paramscope", "inspect", "zoo:llama-2-7b"]
    peer_cmd = [sys.executable, "-c", PEER]

    first = measure(ours_cmd)  # warm-up and correctness
    total = json.loads(first["out"] if first["out"].startswith("{") else "{}").get("total")
    if total is None:  # --json output longer than the probe keeps: ask the library directly
        import paramscope
        from paramscope._targets import resolve_target

        total = {"params": paramscope.count(resolve_target("zoo:llama-2-7b")).params}
    assert total["params"] == EXPECTED, total
    peer_first = measure(peer_cmd)
    assert f"TOTAL {EXPECTED}" in peer_first["out"], peer_first["out"][-300:]

    variants = {"ours: paramscope inspect (table)": ours_table,
                "ours: paramscope inspect --json": ours_cmd,
                f"peer: torchinfo {torchinfo.__version__} summary": peer_cmd}
    res: dict[str, list[dict]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.runs):
        for name in names[r % len(names):] + names[: r % len(names)]:
            res[name].append(measure(variants[name]))
    rows = []
    for name in names:
        s = med([x["s"] for x in res[name]])
        mib = max(x["kib"] for x in res[name]) / 1024
        rows.append([name, f"{s:6.2f} s", f"{min(x['s'] for x in res[name]):6.2f} s",
                     f"{mib:7.1f} MiB"])
    print()
    print(table(["variant", "median wall", "min", "peak RSS (max)"], rows))
    ours_s = med([x["s"] for x in res[names[0]]])
    ours_mib = max(x["kib"] for x in res[names[0]]) / 1024
    peer_s = med([x["s"] for x in res[names[2]]])
    peer_mib = max(x["kib"] for x in res[names[2]]) / 1024
    ok = ours_s <= GOAL_S and ours_mib <= GOAL_MIB
    print()
    print(
        f"VERDICT P7: {'PASS' if ok else 'FAIL'} - ours {ours_s:.2f} s, {ours_mib:.0f} MiB "
        f"(goal <= {GOAL_S} s, <= {GOAL_MIB:.0f} MiB); torchinfo {peer_s:.2f} s, "
        f"{peer_mib:.0f} MiB; wall ratio peer/ours {peer_s / ours_s:.2f}x; n={args.runs}"
    )
    sys.stdout.flush()
    time.sleep(0)


if __name__ == "__main__":
    main()
