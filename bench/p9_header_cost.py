"""P9: header cost — count, inspect, load, convert and verify on hostile-but-valid headers.

Builds safetensors files whose header is large and whose data is tiny, written byte by byte
(the format allows all of them; the safetensors library opens them):

* ``many``: one-element F32 tensors with short hex names (``"1a2b"``), as many as fit
  (~1.44 M in a 99 MB header);
* ``dotted``: the same with names ``layers.<i>.w``, so every entry adds a node to the
  per-prefix tree and a row to ``inspect``;
* ``shape``: one F32 entry whose shape is ``[1, 1, …]`` with ~49 M dimensions (2 header bytes
  per dimension).

each at ×1/4, ×1/2 and ×1 of a 99 MB header (``--quick``: 1, 2 and 4 MB, one run, the
``many`` and ``shape`` files only; ``--variants`` picks). Every
command runs in a fresh process, measured from outside (wall time and the child's peak RSS,
``ru_maxrss``): ``count --json``, ``inspect`` (table), ``inspect --json``, ``inspect -d 2
--json`` (one group per entry for ``dotted``), ``paramscope.load``
(lazy mmap; ``len`` of the result printed), ``convert`` to a new file and ``verify --json``;
beside them the peer, the safetensors library's own reader in a fresh process:
``safe_open(path, "numpy").keys()`` and every ``get_slice(k).get_shape()``.

Each command's output goes to a file and is checked (counts equal the number of entries,
``inspect --json`` lists every entry, ``verify`` says OK). A refusal with a clear one-line error
(exit code 2) is an accepted outcome where paramscope refuses by design (the ``shape``
variant exceeds the rank limit, ``MAX_RANK``; a ``convert`` whose output header would pass
the 100 MB limit every safetensors reader enforces); it is shown as ``refused`` and held to
the same bounds.

Goal, per command and file: peak RSS <= 5 × header size + 100 MB (``load`` and ``convert``
above the ``import torch`` floor, which no header changes) and linear time: the CPU time per
entry (the child's user + system time, steadier than wall time on a shared machine, less the
start-up floor measured on a 10-entry file) at ×1 at most 1.5 × the one at ×1/4.

Run: ``.venv/bin/python bench/p9_header_cost.py [--quick] [--runs N] [--only count,load]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

from _common import header, human, med, parse_args, scratch, table

FULL = 99_000_000
SCALES = (0.25, 0.5, 1.0)
QUICK_SIZES = (1_000_000, 2_000_000, 4_000_000)
GOAL_RATIO = 5.0
GOAL_FIXED = 100_000_000
GOAL_LINEAR = 1.5

LOAD = (
    "import sys, paramscope\n"
    "try:\n"
    "    pd = paramscope.load(sys.argv[1])\n"
    "except paramscope.ParamscopeError as exc:  # a refusal, as the CLI says it\n"
    "    print(f'paramscope: error: {exc}', file=sys.stderr)\n"
    "    sys.exit(2)\n"
    "print(len(pd))\n"
)
PEER = (
    "import math, sys\n"
    "from safetensors import safe_open\n"
    "f = safe_open(sys.argv[1], 'numpy')\n"
    "keys = f.keys()\n"
    "print(len(keys), sum(math.prod(f.get_slice(k).get_shape()) for k in keys))\n"
)
FLOOR_TORCH = "import torch, paramscope"

# Runs a command as a child with stdout to a file; prints wall time, the child's CPU time
# (user + system: steadier than wall on a shared machine, so linearity is judged on it), its
# peak RSS (ru_maxrss, KiB) and the tail of its stderr as JSON. The probe itself stays small.
PROBE = (
    "import json, resource, subprocess, sys, time\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    t = time.perf_counter()\n"
    "    r = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.PIPE)\n"
    "    dt = time.perf_counter() - t\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'s': dt, 'cpu': u.ru_utime + u.ru_stime, 'kib': u.ru_maxrss,\n"
    "                  'rc': r.returncode, 'err': r.stderr.decode(errors='replace')[-2000:]}))\n"
)
#: Commands that import torch by design (values): their goal is above its import floor.
TORCH_COMMANDS = ("load", "convert")


# ----------------------------------------------------------------------------- the files


def _write(path: Path, text: str, data_len: int) -> int:
    """A safetensors file from its header text; returns the header length ``N``."""
    raw = text.encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.write(b"\0" * data_len)
    return len(raw)


def build_many(path: Path, target: int, dotted: bool = False) -> tuple[int, int]:
    """One-element F32 tensors until the header reaches ``target`` bytes: ``(entries, N)``."""
    parts: list[str] = []
    size, i = 2, 0
    while True:
        name = f"layers.{i}.w" if dotted else format(i, "x")
        s = f'"{name}":{{"dtype":"F32","shape":[1],"data_offsets":[{4 * i},{4 * i + 4}]}}'
        if size + len(s) + 1 > target:
            break
        parts.append(s)
        size += len(s) + 1
        i += 1
    return i, _write(path, "{" + ",".join(parts) + "}", 4 * i)


def build_shape(path: Path, target: int) -> tuple[int, int]:
    """One F32 entry of shape ``[1] * R`` filling ``target`` header bytes: ``(R, N)``."""
    rank = (target - 60) // 2
    text = '{"w":{"dtype":"F32","shape":[' + ",".join(["1"] * rank) + '],"data_offsets":[0,4]}}'
    return rank, _write(path, text, 4)


# ----------------------------------------------------------------------------- commands


def commands(src: Path, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "count --json": [py, "-m", "paramscope", "count", str(src), "--json"],
        "inspect": [py, "-m", "paramscope", "inspect", str(src)],
        "inspect --json": [py, "-m", "paramscope", "inspect", str(src), "--json"],
        "inspect -d2 --json": [py, "-m", "paramscope", "inspect", str(src), "-d", "2", "--json"],
        "load": [py, "-c", LOAD, str(src)],
        "convert": [py, "-m", "paramscope", "convert", str(src), str(out)],
        "verify --json": [py, "-m", "paramscope", "verify", str(src), "--json"],
        "peer safe_open": [py, "-c", PEER, str(src)],
    }


def probe(cmd: list[str], stdout: Path) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", PROBE, str(stdout), *cmd], capture_output=True, text=True, check=True
    )
    return json.loads(p.stdout)


def _count_in_file(path: Path, needle: bytes) -> int:
    n, tail = 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            buf = tail + chunk
            n += buf.count(needle)
            tail = buf[-(len(needle) - 1) :]
    return n


def check(name: str, stdout: Path, entries: int, params: int, res: dict) -> str:
    """``ok``, ``refused: <error>`` (a clear one-line refusal, exit 2) or ``FAILED …``."""
    if res["rc"] != 0:
        line = res["err"].strip().splitlines()[-1] if res["err"].strip() else "?"
        if name.startswith("verify") and stdout.stat().st_size < 1 << 20:
            with contextlib.suppress(ValueError, KeyError, IndexError):
                line = json.loads(stdout.read_text())["problems"][0]  # a report, not a crash
        line = line.split(".safetensors: ", 1)[-1]  # the message, without the scratch path
        if res["rc"] in (1, 2) and "Traceback" not in res["err"] and name.startswith("verify"):
            return f"refused: {line[:150]}"
        if res["rc"] == 2 and "Traceback" not in res["err"]:
            return f"refused: {line[:150]}"
        return f"FAILED (exit {res['rc']}): {line[:150]}"
    try:
        _check_output(name, stdout, entries, params)
    except (AssertionError, ValueError, KeyError) as exc:
        return f"FAILED (wrong output): {str(exc)[:150]}"
    return "ok"


def _check_output(name: str, stdout: Path, entries: int, params: int) -> None:
    head = stdout.read_bytes()[:4096] if stdout.stat().st_size > 4096 else stdout.read_bytes()
    text = head.decode(errors="replace")
    if name == "count --json":
        obj = json.loads(stdout.read_text())
        assert obj["params"] + obj["buffers"] == params and obj["entries"] == entries, obj
    elif name.startswith("inspect") and name.endswith("--json"):
        m = re.search(r'"total": \{\s*"params": (\d+)', text)
        assert m and int(m.group(1)) == params, text[:500]
        listed = _count_in_file(stdout, b'"name": ')
        assert listed == entries, (listed, entries)
    elif name == "inspect":
        assert "total" in stdout.read_bytes()[-20000:].decode(errors="replace")
    elif name == "load":
        assert int(text.split()[0]) == entries, text[:200]
    elif name == "verify --json":
        obj = json.loads(stdout.read_text())
        assert obj["ok"] and obj["entries"] == entries, obj
    elif name == "peer safe_open":
        n, total = map(int, text.split())
        assert (n, total) == (entries, params), text


# ----------------------------------------------------------------------------- main


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--only", default="", help="comma-separated command names to run")
        p.add_argument("--variants", default=None,
                       help="which files to build (default many,dotted,shape; quick: many,shape)")

    args = parse_args(__doc__.splitlines()[0], default_runs=3, quick_runs=1, extra=extra)
    header("P9: header cost (count, inspect, load, convert, verify) vs safe_open", args)
    sizes = QUICK_SIZES if args.quick else tuple(int(FULL * s) for s in SCALES)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    builders = {
        "many": lambda p, t: build_many(p, t),
        "dotted": lambda p, t: build_many(p, t, dotted=True),
        "shape": build_shape,
    }
    chosen = args.variants or ("many,shape" if args.quick else "many,dotted,shape")
    variants = [v for v in chosen.split(",") if v]
    heads = ["file", "header", "command", "wall", "cpu", "cpu/item", "peak RSS", "peak/hdr",
             "mem ok", "outcome"]
    rows: list[list[str]] = []
    problems: list[str] = []
    with scratch(args, "p9-") as d:
        out = d / "out.safetensors"
        stdout = d / "stdout.txt"
        tiny = d / "tiny.safetensors"  # start-up floors: each command on a 10-entry file
        build_many(tiny, 700)
        floor: dict[str, float] = {}
        for name, cmd in commands(tiny, out).items():
            if only and name not in only:
                continue
            floor[name] = med([probe(cmd, stdout)["cpu"] for _ in range(max(1, args.runs))])
            out.unlink(missing_ok=True)
        torch_floor = probe([sys.executable, "-c", FLOOR_TORCH], stdout)["kib"] * 1024
        print(f"   start-up CPU floors: {', '.join(f'{k} {v:.2f} s' for k, v in floor.items())};"
              f" import torch peak {human(torch_floor)}", flush=True)
        print("   " + " | ".join(heads), flush=True)
        for variant in variants:
            per_item: dict[str, dict[int, float]] = {}
            items_at: dict[int, int] = {}
            for size in sizes:
                src = d / f"{variant}-{size}.safetensors"
                n_items, hlen = builders[variant](src, size)
                items_at[size] = n_items
                entries, params = (1, 1) if variant == "shape" else (n_items, n_items)
                what = f"{n_items:,} dims" if variant == "shape" else f"{n_items:,} entries"
                print(f"   {variant}: header {hlen / 1e6:.1f} MB, {what}", flush=True)
                for name, cmd in commands(src, out).items():
                    if only and name not in only:
                        continue
                    runs = [probe(cmd, stdout) for _ in range(args.runs)]
                    outcome = check(name, stdout, entries, params, runs[-1])
                    out.unlink(missing_ok=True)
                    wall = med([r["s"] for r in runs])
                    cpu = med([r["cpu"] for r in runs])
                    peak = max(r["kib"] for r in runs) * 1024
                    above = max(0, peak - torch_floor) if name in TORCH_COMMANDS else peak
                    limit = GOAL_RATIO * hlen + GOAL_FIXED
                    per = max(0.0, cpu - floor.get(name, 0.0)) / n_items
                    per_item.setdefault(name, {})[size] = per
                    peer = name.startswith("peer")
                    ok_mem = peer or above <= limit
                    row = [variant, f"{hlen / 1e6:.0f} MB", name, f"{wall:.2f} s",
                           f"{cpu:.2f} s", f"{per * 1e6:.2f} us", human(peak),
                           f"{above / hlen:.2f}", "yes" if ok_mem else "NO", outcome[:70]]
                    rows.append(row)
                    print("   " + " | ".join(row), flush=True)
                    if not ok_mem:
                        problems.append(f"{variant}/{hlen / 1e6:.0f}MB/{name}: peak "
                                        f"{human(above)} > {human(limit)}")
                    if outcome.startswith("FAILED") and not peer:
                        problems.append(f"{variant}/{hlen / 1e6:.0f}MB/{name}: {outcome[:80]}")
                src.unlink()
            for name, per in per_item.items():
                lo, hi = per[sizes[0]], per[sizes[-1]]
                work = lo * items_at[sizes[0]]
                # under 0.3 s of work above the start-up floor at the smallest size, the floor's
                # noise decides the ratio (--quick): not judged
                if name.startswith("peer") or work < 0.3 or hi <= lo * GOAL_LINEAR:
                    continue
                problems.append(f"{variant}/{name}: {hi * 1e6:.2f} us/item at the largest, "
                                f"{lo * 1e6:.2f} at the smallest (not linear)")
    print()
    print(table(heads, rows))
    print()
    print("   peak/hdr: peak RSS (load, convert: above the import-torch floor) / header bytes;"
          " goal peak <= 5 x header + 100 MB. cpu/item: (CPU time - start-up floor) / entries"
          " (shape: / dims); goal: at x1 <= 1.5 x that at x1/4 (judged where the smallest"
          " file takes >= 0.3 s above the floor).")
    ok = not problems
    print()
    print(f"VERDICT P9: {'PASS' if ok else 'FAIL'} - "
          + ("every command within 5 x header + 100 MB and linear in entries"
             if ok else "; ".join(problems[:8]) + (f"; +{len(problems) - 8} more"
                                                    if len(problems) > 8 else ""))
          + f"; n={args.runs}")


if __name__ == "__main__":
    main()
