"""P15: the report's statistics, spectral and change views on a 1.4 GB GPT-2-medium checkpoint.

A GPT-2-medium-shaped model (``transformers.GPT2LMHeadModel`` from a config: 24 layers,
hidden 1024, 16 heads, vocabulary 50,257, random init, seed 0) is saved with
``save_pretrained`` as ``model.safetensors`` + ``config.json`` (tied head stored once: 1.42 GB
fp32, largest tensor the 206 MB embedding) as ``B``; ``A`` is ``B`` with a few layers
perturbed (:data:`PERTURBED`), saved separately. Both are cached in ``<data-dir>/p15-gpt2m``
(reused when there, removed afterwards unless ``--keep``). Then, each variant in a fresh
process, rotating the order run by run, the parent timing the whole process and the child
reporting its own work time (after imports, ``import torch`` included) and its peak RSS
(``VmHWM``):

1. **stats**: ``paramscope.weight_stats(B)`` (and ``paramscope report B --stats`` when the
   CLI has ``--stats``) against one streaming read of the file
   (``SourceReader(B).stream()`` over every entry) and a plain sequential file read
   (16 MiB ``readinto``). Goal: work time ≤ 2 × the streaming read's, peak RSS ≤ 2 × largest
   tensor + 300 MB.
2. **spectral**: ``paramscope.spectral_stats(B)`` (and ``report B --spectral`` when there)
   against ``weightwatcher.WeightWatcher(model=model).analyze()`` on the same weights loaded
   with ``GPT2LMHeadModel.from_pretrained``; the α of every matrix both fit are compared
   (max |Δα|; weightwatcher's ``layer_id`` names the module, the same set of matrices and
   equal ``N × M`` asserted). Goal: ``spectral_stats`` (file read
   included) ≥ 2 × faster than ``analyze()`` alone (model load excluded), at |Δα| within the
   tolerance below.
3. **change**: ``paramscope.reporting._change.layer_changes(A, B)`` (and ``report A
   --against B`` when there) against two streaming reads (``A`` then ``B``). Goal as for
   stats: ≤ 2 × the reads, peak RSS ≤ 2 × largest + 300 MB. The perturbed layers must come
   out as the changed ones.

α tolerance: weightwatcher takes singular values of ``W`` in float64 (``scipy.linalg.svd``);
``spectral_stats`` takes eigenvalues of the float64 Gram matrix, the same numbers to
~1e-13 relative, so equal α are expected to about 1e-6 (:data:`ALPHA_TOL`, in the verdict).

Run: ``.venv/bin/python bench/p15_report.py [--quick] [--runs N] [--only stats,spectral,change]``
(``--quick``: 4 layers instead of 24; needs ~3 GiB free under ``--data-dir``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from _common import BENCH_DIR, header, human, med, parse_args, table

GOAL_STATS = 2.0
GOAL_SPECTRAL = 2.0
GOAL_CHANGE = 2.0
RSS_EXTRA = 300 * 10**6
#: max |Δα| accepted between spectral_stats and weightwatcher (part of the verdict).
ALPHA_TOL = 1e-6
#: (block, tensor) of A that differ from B, and the relative size of the change.
PERTURBED = (
    (3, "mlp.c_fc.weight"),
    (11, "attn.c_attn.weight"),
    (20, "mlp.c_proj.weight"),
)
SCALE = 0.05

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
variant, args = sys.argv[1], json.loads(sys.argv[2])
out = {}
if variant not in ("plain", "cli"):
    import torch  # imported before the clock starts, as transformers imports it for the peer
if variant == "plain":
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    n = 0
    t1 = time.perf_counter()
    with open(args["a"], "rb", buffering=0) as f:
        while (k := f.readinto(view)):
            n += k
    out["bytes"] = n
elif variant in ("stream", "stream2"):
    from paramscope.io._reader import SourceReader
    t1 = time.perf_counter()
    n = 0
    for p in [args["a"]] + ([args["b"]] if variant == "stream2" else []):
        with SourceReader(p) as r:
            for e, t in r.stream():
                n += t.numel() * t.element_size()
                del t
    out["bytes"] = n
elif variant == "stats":
    import paramscope
    t1 = time.perf_counter()
    rep = paramscope.weight_stats(args["a"])
    out["tensors"] = len(rep.tensors)
elif variant == "spectral":
    import paramscope
    t1 = time.perf_counter()
    rep = paramscope.spectral_stats(args["a"])
    out["rows"] = [[m["name"], m["N"], m["M"], m["alpha"]] for m in rep.matrices]
    out["method"] = sorted({m["method"] for m in rep.matrices})
elif variant == "ww":
    import logging
    import transformers, weightwatcher
    logging.disable(logging.WARNING)
    t1 = time.perf_counter()
    model = transformers.GPT2LMHeadModel.from_pretrained(args["dir"])
    t2 = time.perf_counter()
    d = weightwatcher.WeightWatcher(model=model).analyze()
    out["analyze_s"] = time.perf_counter() - t2
    out["load_s"] = t2 - t1
    names = [n for n, _ in model.named_modules()]  # weightwatcher's layer_id indexes these
    out["rows"] = [[names[int(r["layer_id"])] + ".weight", int(r["N"]), int(r["M"]),
                    float(r["alpha"])] for _, r in d.iterrows()]
elif variant == "change":
    from paramscope.reporting._change import layer_changes
    t1 = time.perf_counter()
    res = layer_changes(args["a"], args["b"])
    out["changed"] = [t["name"] for t in res.tensors if t["diff_l2"] != 0]
    out["compared"] = len(res.tensors)
elif variant == "cli":
    import subprocess
    t1 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "paramscope", *args["argv"]],
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit(p.stderr[-3000:])
else:
    sys.exit(f"unknown variant {variant}")
out["work_s"] = time.perf_counter() - t1
rss = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
if variant == "cli":  # the CLI is a grandchild: its own peak, not the launcher's
    import resource
    rss = max(rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
out["kib"] = rss
print(json.dumps(out))
"""


def run_child(variant: str, **kw: object) -> dict:
    """Run one variant in a fresh process; its JSON plus ``wall`` (the whole process)."""
    import time

    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", CHILD, variant, json.dumps(kw, default=str)],
        capture_output=True,
        text=True,
        cwd=BENCH_DIR.parent,
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def make_data(root: Path, quick: bool) -> tuple[Path, Path, int, int]:
    """``(folder of A, folder of B, largest tensor bytes, layers)``, written once and cached."""
    a_dir, b_dir = root / "A", root / "B"
    done = root / "done.json"
    layers = 4 if quick else 24
    if done.exists():
        return a_dir, b_dir, int(json.loads(done.read_text())["largest"]), layers
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    cfg = transformers.GPT2Config(
        n_layer=layers, n_embd=1024, n_head=16, vocab_size=50257, n_positions=1024
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(b_dir, safe_serialization=True)
    del model
    sd = load_file(str(b_dir / "model.safetensors"))
    largest = max(t.numel() * t.element_size() for t in sd.values())
    g = torch.Generator().manual_seed(1)
    for block, tail in PERTURBED:
        name = f"transformer.h.{block}.{tail}"
        if name not in sd:
            continue
        t = sd[name]
        t.add_(torch.randn(t.shape, generator=g), alpha=SCALE * float(t.std()))
    a_dir.mkdir()
    shutil.copy(b_dir / "config.json", a_dir / "config.json")
    save_file(sd, str(a_dir / "model.safetensors"), metadata={"format": "pt"})
    del sd
    done.write_text(json.dumps({"largest": largest}))
    return a_dir, b_dir, largest, layers


def cli_has(sub: str, flag: str) -> bool:
    """Whether ``paramscope <sub> --help`` lists ``flag``."""
    p = subprocess.run([sys.executable, "-m", "paramscope", sub, "--help"],
                       capture_output=True, text=True, cwd=BENCH_DIR.parent)  # fmt: skip
    return p.returncode == 0 and flag in p.stdout


def measure(variants: dict[str, tuple[str, dict]], runs: int) -> dict[str, list[dict]]:
    """Every variant ``runs`` times, the order rotated by one each run."""
    names = list(variants)
    res: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(runs):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            v, kw = variants[n]
            res[n].append(run_child(v, **kw))
    return res


def show(res: dict[str, list[dict]], ref: str) -> None:
    """Median work time and process wall, min, peak RSS, and the ratio against ``ref``."""
    rows = []
    rw = med([x["work_s"] for x in res[ref]])
    for n, xs in res.items():
        w = med([x["work_s"] for x in xs])
        rows.append([
            n,
            f"{w:7.2f} s",
            f"{min(x['work_s'] for x in xs):7.2f} s",
            f"{med([x['wall'] for x in xs]):7.2f} s",
            f"{max(x['kib'] for x in xs) / 1024:7.0f} MiB",
            f"{w / rw:5.2f}x",
        ])  # fmt: skip
    print()
    print(table(["variant", "median work", "min work", "median process", "peak RSS",
                 f"work / {ref.split(':')[0]}"], rows))  # fmt: skip
    print("   work: after the child's imports and `import torch` (CLI: the whole run)")


def part_stats(a: Path, b: Path, largest: int, runs: int) -> tuple[bool, str]:
    fa = str(b / "model.safetensors")
    variants: dict[str, tuple[str, dict]] = {
        "stream: SourceReader.stream()": ("stream", {"a": fa}),
        "plain: sequential file read": ("plain", {"a": fa}),
        "ours: weight_stats(path)": ("stats", {"a": fa}),
    }
    cli = cli_has("report", "--stats")
    if cli:
        html = str(b.parent / "stats.html")
        variants["ours: report --stats (CLI)"] = ("cli", {"argv": ["report", fa, "--stats",
                                                                    "-o", html]})  # fmt: skip
    print("\n-- 1. stats" + ("" if cli else "  (`report --stats` not in the CLI yet)"))
    res = measure(variants, runs)
    show(res, "stream: SourceReader.stream()")
    ref = med([x["work_s"] for x in res["stream: SourceReader.stream()"]])
    ours_name = "ours: report --stats (CLI)" if cli else "ours: weight_stats(path)"
    ours = med([x["work_s"] for x in res["ours: weight_stats(path)"]])
    rss = max(x["kib"] for x in res[ours_name]) * 1024
    limit = 2 * largest + RSS_EXTRA
    ok = ours <= GOAL_STATS * ref and rss <= limit
    return ok, (
        f"stats {ours / ref:.2f}x the streaming read (goal <= {GOAL_STATS}x), "
        f"peak RSS{' (CLI)' if cli else ''} {rss / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)"
    )


def part_spectral(b: Path, runs: int) -> tuple[bool, str]:
    fa = str(b / "model.safetensors")
    variants: dict[str, tuple[str, dict]] = {
        "peer: weightwatcher analyze()": ("ww", {"dir": str(b)}),
        "ours: spectral_stats(path)": ("spectral", {"a": fa}),
    }
    cli = cli_has("report", "--spectral")
    if cli:
        html = str(b.parent / "spectral.html")
        variants["ours: report --spectral (CLI)"] = ("cli", {"argv": ["report", fa, "--spectral",
                                                                       "-o", html]})  # fmt: skip
    print("\n-- 2. spectral" + ("" if cli else "  (`report --spectral` not in the CLI yet)"))
    res = measure(variants, runs)
    peer = res["peer: weightwatcher analyze()"]
    for x in peer:  # the peer's work is analyze() alone; its model load shown apart
        x["work_s"] = x["analyze_s"]
    show(res, "peer: weightwatcher analyze()")
    print(
        f"   weightwatcher's model load (from_pretrained), not counted: "
        f"{med([x['load_s'] for x in peer]):.2f} s median"
    )
    ours_rows = res["ours: spectral_stats(path)"][-1]["rows"]
    ww_rows = peer[-1]["rows"]
    how = "; ".join(res["ours: spectral_stats(path)"][-1]["method"])
    print(f"   ours: {len(ours_rows)} matrices ({how}); weightwatcher: {len(ww_rows)}")
    # the same matrices (ours in file order, weightwatcher's in module order)
    theirs = {name: (n, m, alpha) for name, n, m, alpha in ww_rows}
    assert sorted(theirs) == sorted(r[0] for r in ours_rows), (theirs, ours_rows)
    worst, where = 0.0, ""
    for name, n, m, alpha in ours_rows:
        wn, wm, walpha = theirs[name]
        assert (n, m) == (wn, wm), (name, n, m, wn, wm)
        d = abs(alpha - walpha)
        if d > worst:
            worst, where = d, name
    print(
        f"   max |alpha ours - weightwatcher| = {worst:.2e} ({where or '-'}) over "
        f"{len(ours_rows)} matrices"
    )
    ours = med([x["work_s"] for x in res["ours: spectral_stats(path)"]])
    ww = med([x["analyze_s"] for x in peer])
    ok = ww / ours >= GOAL_SPECTRAL and worst <= ALPHA_TOL
    return ok, (
        f"spectral {ww / ours:.2f}x faster than weightwatcher's analyze() "
        f"(goal >= {GOAL_SPECTRAL}x), max |dalpha| {worst:.1e} (tolerance {ALPHA_TOL:g})"
    )


def part_change(a: Path, b: Path, largest: int, layers: int, runs: int) -> tuple[bool, str] | None:
    fa, fb = str(a / "model.safetensors"), str(b / "model.safetensors")
    src = BENCH_DIR.parent / "src" / "paramscope" / "reporting" / "_change.py"
    if not src.exists():
        print("\n-- 3. change: skipped (src/paramscope/reporting/_change.py not there yet)")
        return None
    variants: dict[str, tuple[str, dict]] = {
        "stream: two SourceReader.stream()": ("stream2", {"a": fa, "b": fb}),
        "ours: layer_changes(A, B)": ("change", {"a": fa, "b": fb}),
    }
    cli = cli_has("report", "--against")
    if cli:
        html = str(a.parent / "change.html")
        variants["ours: report A --against B (CLI)"] = (
            "cli", {"argv": ["report", fa, "--against", fb, "-o", html]})  # fmt: skip
    print("\n-- 3. change" + ("" if cli else "  (`report --against` not in the CLI yet)"))
    res = measure(variants, runs)
    show(res, "stream: two SourceReader.stream()")
    last = res["ours: layer_changes(A, B)"][-1]
    want = sorted(f"transformer.h.{blk}.{tail}" for blk, tail in PERTURBED if blk < layers)
    print(f"   layer_changes compared {last['compared']} tensors; changed: {last['changed']}")
    assert sorted(last["changed"]) == want, (last["changed"], want)
    ref = med([x["work_s"] for x in res["stream: two SourceReader.stream()"]])
    ours_name = "ours: report A --against B (CLI)" if cli else "ours: layer_changes(A, B)"
    ours = med([x["work_s"] for x in res["ours: layer_changes(A, B)"]])
    rss = max(x["kib"] for x in res[ours_name]) * 1024
    limit = 2 * largest + RSS_EXTRA
    ok = ours <= GOAL_CHANGE * ref and rss <= limit
    return ok, (
        f"change {ours / ref:.2f}x two streaming reads (goal <= {GOAL_CHANGE}x), "
        f"peak RSS{' (CLI)' if cli else ''} {rss / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)"
    )


def main() -> None:
    def extra(p):
        p.add_argument("--only", default="stats,spectral,change",
                       help="comma-separated parts to run (stats, spectral, change)")  # fmt: skip

    args = parse_args(__doc__.splitlines()[0], default_runs=3, quick_runs=1, extra=extra)
    header("P15: report statistics / spectral / change views on GPT-2 medium", args)
    parts = set(args.only.split(","))
    root = args.data_dir / ("p15-gpt2m-quick" if args.quick else "p15-gpt2m")
    free = shutil.disk_usage(args.data_dir.parent if not args.data_dir.exists()
                             else args.data_dir).free  # fmt: skip
    if not (root / "done.json").exists() and free < 4 * 2**30:
        raise SystemExit(f"{args.data_dir}: {human(free)} free, need 4 GiB")
    verdicts: list[tuple[bool, str]] = []
    try:
        a, b, largest, layers = make_data(root, args.quick)
        size = (b / "model.safetensors").stat().st_size
        print(f"   B: {human(size)} safetensors, largest tensor {human(largest)}; A = B with "
              f"{len(PERTURBED)} tensors perturbed (page cache warm: files just written or "
              f"read)")  # fmt: skip
        if "stats" in parts:
            verdicts.append(part_stats(a, b, largest, args.runs))
        if "spectral" in parts:
            verdicts.append(part_spectral(b, args.runs))
        if "change" in parts:
            got = part_change(a, b, largest, layers, args.runs)
            if got is not None:
                verdicts.append(got)
    finally:
        if args.keep:
            print(f"(kept data in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    ok = all(v for v, _ in verdicts)
    print()
    print(f"VERDICT P15: {'PASS' if ok else 'FAIL'} - "
          + "; ".join(f"{m} [{'ok' if v else 'MISS'}]" for v, m in verdicts)
          + f"; n={args.runs}")  # fmt: skip


if __name__ == "__main__":
    main()
