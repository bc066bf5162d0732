"""Shared helpers for the benchmark scripts (argument parsing, timing, tables, scratch folders).

Not a benchmark itself; the scripts in this folder import it as a sibling module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "_data"


def parse_args(
    description: str,
    default_runs: int = 7,
    quick_runs: int = 3,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Common options: ``--quick``, ``--runs N``, ``--data-dir``, ``--keep`` (+ ``extra``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer runs, smaller data (smoke test)")
    p.add_argument(
        "--runs", type=int, default=None, help=f"runs per variant (default {default_runs})"
    )
    p.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="scratch data folder (default bench/_data)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch data afterwards")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    if args.runs is None:
        args.runs = quick_runs if args.quick else default_runs
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


@contextlib.contextmanager
def scratch(args: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """A fresh folder under ``args.data_dir``, removed afterwards unless ``--keep``."""
    args.data_dir.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=args.data_dir))
    try:
        yield d
    finally:
        if args.keep:
            print(f"(kept scratch data in {d})")
        else:
            shutil.rmtree(d, ignore_errors=True)


def timed_run(cmd: Sequence[str]) -> tuple[float, str]:
    """Run a command to completion; ``(wall seconds, stdout)``. Fails loudly on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
        )
    return dt, proc.stdout


def alternating_runs(
    variants: dict[str, list[str]],
    runs: int,
    expected: int,
    total: Callable[[str], int] = lambda out: int(json.loads(out)["params"]),
) -> dict[str, list[float]]:
    """Time every variant ``runs`` times, the first two (ours, the peer) swapping places on
    every other run so neither always runs second; each run of ours (the first variant) must
    print ``expected``, as ``total`` reads it from its stdout (default: ``params`` of
    ``count --json``).

    Returns:
        variant name -> wall seconds of each run.
    """
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        order = names if r % 2 == 0 else [names[1], names[0], *names[2:]]
        for n in order:
            dt, out = timed_run(variants[n])
            times[n].append(dt)
            if n == names[0]:
                assert total(out) == expected
    return times


def timed_call(fn: Callable[[], object]) -> tuple[float, object]:
    """Call ``fn``; ``(wall seconds, its result)``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def paramscope_count_cmd(path: str | os.PathLike[str]) -> list[str]:
    """The CLI under test, run with the same interpreter as the benchmark."""
    return [sys.executable, "-m", "paramscope", "count", os.fspath(path), "--json"]


def cli_total(stdout: str) -> int:
    """Parameter plus buffer elements from ``paramscope count --json`` output."""
    obj = json.loads(stdout)
    return int(obj["params"]) + int(obj.get("buffers", 0))


def cli_available() -> bool:
    """Whether ``python -m paramscope`` runs at all (the CLI may still be in progress)."""
    proc = subprocess.run(
        [sys.executable, "-m", "paramscope", "--help"], capture_output=True, text=True
    )
    return proc.returncode == 0


def require_cli() -> None:
    if not cli_available():
        raise SystemExit(
            "`python -m paramscope --help` fails: the CLI (src/paramscope/cli) is not there yet"
        )


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def ms(x: float) -> str:
    return f"{x * 1e3:8.1f} ms"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left/right aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(parts))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def speed_verdict(
    label: str,
    times: dict[str, list[float]],
    ours_name: str,
    peer_name: str,
    goal_ms: float,
    goal_speedup: float,
    runs: int,
) -> None:
    """Print the median / min / max table (with peer/this ratios) and a PASS/FAIL verdict for
    a "faster than the peer and under a time budget" goal."""
    ours, peer = med(times[ours_name]), med(times[peer_name])
    rows = [
        [n, ms(med(t)), ms(min(t)), ms(max(t)), f"{peer / med(t):6.1f}x"] for n, t in times.items()
    ]
    print()
    print(table(["variant", "median", "min", "max", "peer/this"], rows))
    speedup = peer / ours
    ok = speedup >= goal_speedup and ours * 1e3 <= goal_ms
    print()
    print(
        f"VERDICT {label}: {'PASS' if ok else 'FAIL'} - ours {ours * 1e3:.1f} ms median "
        f"(goal <= {goal_ms:.0f} ms), peer {peer * 1e3:.1f} ms, speedup {speedup:.1f}x "
        f"(goal >= {goal_speedup:.0f}x), n={runs}"
    )


def du_bytes(folder: Path) -> int:
    """Bytes actually allocated on disk under ``folder`` (``du``; holes are free)."""
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # pragma: no cover


def header(title: str, args: argparse.Namespace) -> None:
    print(f"== {title}")
    print(
        f"   python {sys.version.split()[0]}, {os.cpu_count()} cpus, runs={args.runs}"
        f"{' (quick)' if args.quick else ''}, data in {args.data_dir}"
    )


# Runs a command as a child and prints its wall time and peak RSS (ru_maxrss of the child,
# KiB) as JSON; the probe itself is small, so the child's RSS is not inflated by a fork.
PROBE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "dt = time.perf_counter() - t\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'s': dt, 'kib': rss, 'rc': r.returncode, 'out': r.stdout,\n"
    "                  'err': r.stderr[-3000:]}))\n"
)


def probe(cmd: Sequence[str]) -> dict:
    """Run ``cmd`` under :data:`PROBE`; ``{"s", "kib", "rc", "out", "err"}``."""
    p = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True, text=True,
                       check=True)
    out = json.loads(p.stdout)
    if out["rc"] != 0:
        raise SystemExit(out["err"])
    return out


def big_checkpoint(quick: bool, seed: int = 0) -> tuple[object, int, int, int, int]:
    """The P5 data: 32 x 4096² + 4 x 8192² fp32 (3 GiB), or a small version for --quick.

    Returns:
        ``(ParamDict, small side, big side, number of small, number of big)``.
    """
    import torch

    import paramscope

    small, big, n_small, n_big = (1024, 4096, 8, 2) if quick else (4096, 8192, 32, 4)
    g = torch.Generator().manual_seed(seed)
    pd = paramscope.ParamDict()
    for i in range(n_small):
        pd.add(f"layers.{i}.weight", torch.randn(small, small, generator=g))
    for i in range(n_big):
        pd.add(f"big.{i}.weight", torch.randn(big, big, generator=g))
    return pd, small, big, n_small, n_big
