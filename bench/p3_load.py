"""P3: load a ~355M-parameter checkpoint into a model ready to run.

GPT-2 medium (354,823,168 parameters, 1.42 GB fp32, tied LM head) with random weights is
saved once as safetensors (and as a torch ``.pt`` for the third variant). Then, each in a
fresh process, alternating run by run, timing the whole process and reading its peak RSS:

* ours: build on the meta device + ``paramscope.load_into(model, file)`` (assignment from
  the memory map: no copy, no random init)
* peer: ``safetensors.torch.load_model(model, file)`` on a normally built model
* torch: ``model.load_state_dict(torch.load(file.pt))`` on a normally built model

Every variant then touches every parameter once (a sum), so lazily mapped pages count, and
checks the LM head is still tied and one checksum equals the saved model's.

Goal: ours >= 2x faster than ``load_model`` at <= 0.5x its peak RSS, ties intact.

Run: ``.venv/bin/python bench/p3_load.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _common import BENCH_DIR, header, human, med, parse_args, scratch, table

GOAL_SPEED = 2.0
GOAL_RSS = 0.5

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
import torch
from paramscope.building import zoo
variant, path, name, kw = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if variant == "ours":
    import paramscope
    with torch.device("meta"):
        model = zoo.build(name, **kw)
    report = paramscope.load_into(model, path)
    assert report.ok, report.format()
elif variant == "peer":
    from safetensors.torch import load_model
    model = zoo.build(name, **kw)
    load_model(model, path)
else:
    model = zoo.build(name, **kw)
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
with torch.no_grad():
    total = sum(float(p.sum()) for p in model.parameters())  # reads every page, no temp copy
tied = model.lm_head.weight is model.transformer.wte.weight
dt = time.perf_counter() - t0
# VmHWM: this process's own peak (ru_maxrss would include the forking parent's RSS)
rss = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({"s": dt, "kib": rss, "tied": tied, "sum": total}))
'''


def run(variant: str, path: Path, name: str, kw: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, variant, str(path), name, json.dumps(kw)],
                       capture_output=True, text=True, cwd=BENCH_DIR.parent)
    if p.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=5)
    header("P3: load GPT-2 medium into a ready model vs safetensors load_model", args)
    import torch

    import paramscope
    from paramscope.building import zoo

    name = "gpt2-medium"
    kw = {"n_layer": 4} if args.quick else {}
    with scratch(args, "p3-") as d:
        torch.manual_seed(0)
        model = zoo.build(name, **kw)
        n = sum(p.numel() for p in model.parameters())
        st = paramscope.save(model, d / "model.safetensors")
        torch.save(model.state_dict(), d / "model.pt")
        with torch.no_grad():
            expected = sum(float(p.sum()) for p in model.parameters())
        print(f"   {name}{kw or ''}: {n:,} params, file {human(st.stat().st_size)}")
        del model
        files = {"ours": st, "peer": st, "torch": d / "model.pt"}
        labels = {"ours": "ours: meta build + paramscope.load_into",
                  "peer": "peer: build + safetensors.torch.load_model",
                  "torch": "torch: build + load_state_dict(torch.load)"}
        res: dict[str, list[dict]] = {k: [] for k in files}
        names = list(files)
        for r in range(args.runs):
            for v in names[r % 3:] + names[: r % 3]:
                out = run(v, files[v], name, kw)
                assert out["tied"], f"{v}: ties broken"
                assert abs(out["sum"] - expected) <= 1e-4 * max(1.0, abs(expected)), v
                res[v].append(out)
    rows = []
    for v in names:
        s = med([x["s"] for x in res[v]])
        mib = med([x["kib"] for x in res[v]]) / 1024
        rows.append([labels[v], f"{s:6.2f} s", f"{min(x['s'] for x in res[v]):6.2f} s",
                     f"{mib:8.0f} MiB"])
    print()
    print(table(["variant", "median wall", "min", "peak RSS (median)"], rows))
    o = med([x["s"] for x in res["ours"]])
    p = med([x["s"] for x in res["peer"]])
    orss = med([x["kib"] for x in res["ours"]])
    prss = med([x["kib"] for x in res["peer"]])
    speed, rss = p / o, orss / prss
    ok = speed >= GOAL_SPEED and rss <= GOAL_RSS
    print()
    print(f"VERDICT P3: {'PASS' if ok else 'FAIL'} - {speed:.2f}x faster than load_model "
          f"(goal >= {GOAL_SPEED}x), peak RSS {rss:.2f}x of it (goal <= {GOAL_RSS}x), ties "
          f"intact, checksums equal; n={args.runs}")


if __name__ == "__main__":
    main()
