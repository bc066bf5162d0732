"""P4: ``paramscope.save`` throughput against ``safetensors.torch.save_file``.

Saves a 1 GiB dict of random fp32 tensors (16 x 4096x4096) N times with each writer,
alternating within each like-for-like pair (the no-fsync pair first, then the durable pair),
deleting the output (and running an untimed ``os.sync``) between runs:

* ours: ``paramscope.save(pd, path)`` - atomic (temp + rename), fsync'd, XXH3-128 digest per entry
* ours, ``fsync=False``: the same without waiting for the disk (rename still atomic)
* peer: ``safetensors.torch.save_file(tensors, path)`` - no fsync, no hashes
* peer + fsync: ``save_file`` then ``os.fsync`` of the file

Goal: ours >= 0.8x the peer's throughput. Two pairs are compared like for like: ours with
``fsync=False`` against the plain peer (neither waits for the disk), and ours (durable, the
default) against the peer followed by fsync. PASS needs both pairs >= 0.8x.

With ``--profile`` (or automatically when the goal is missed) it re-runs ours once with
timers wrapped around its phases (tensor preparation, hashing in the helper thread, the
data writes, the background ``fdatasync`` calls and the final ``fsync``), patched in from
this script only, and times the raw building blocks alone (one SHA-256 pass over 1 GiB, a
plain 1 GiB write without fsync, and its fsync) for comparison.

Run: ``.venv/bin/python bench/p4_save.py [--quick] [--runs N] [--profile]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from _common import header, human, med, parse_args, scratch, table

GOAL = 0.8


def _extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", action="store_true", help="always print the phase breakdown")


def make_tensors(n: int, side: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    return {f"layers.{i}.weight": torch.randn(side, side, generator=g) for i in range(n)}


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.sync()  # untimed: leave no dirty pages of this run to the next one


# ----------------------------------------------------------------------------- profiling


class _Acc:
    """Thread-safe accumulated seconds and call counts per phase."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, key: str, dt: float) -> None:
        with self._lock:
            self.t[key] = self.t.get(key, 0.0) + dt
            self.n[key] = self.n.get(key, 0) + 1


class _TimedFile:
    """Wraps the temp file ``atomic_write`` opens, timing its writes."""

    def __init__(self, f, acc: _Acc) -> None:
        self._f = f
        self._acc = acc

    def write(self, b) -> int:
        t0 = time.perf_counter()
        n = self._f.write(b)
        self._acc.add("write (main thread, page cache)", time.perf_counter() - t0)
        return n

    def __getattr__(self, name: str):
        return getattr(self._f, name)


@contextlib.contextmanager
def instrumented(acc: _Acc) -> Iterator[None]:
    """Patch timers around paramscope's save phases (module globals only; src/ is untouched)."""
    import paramscope._atomic as atomic
    import paramscope.io._writer as st  # where save looks up hash_bytes and _as_bytes

    orig_hash, orig_prep = st.hash_bytes, st._as_bytes
    orig_fsync, orig_fdatasync = os.fsync, getattr(os, "fdatasync", None)

    def hash_bytes(buf, algo="xxh3-128") -> str:
        t0 = time.perf_counter()
        try:
            return orig_hash(buf, algo)
        finally:
            acc.add(f"{algo} (helper thread)", time.perf_counter() - t0)

    def as_bytes(name, t):
        t0 = time.perf_counter()
        try:
            return orig_prep(name, t)
        finally:
            acc.add("prepare tensors (_as_bytes)", time.perf_counter() - t0)

    def fsync(fd) -> None:
        t0 = time.perf_counter()
        try:
            orig_fsync(fd)
        finally:
            acc.add("fsync (final, main thread)", time.perf_counter() - t0)

    def fdatasync(fd) -> None:
        t0 = time.perf_counter()
        try:
            orig_fdatasync(fd)
        finally:
            acc.add("fdatasync (Flusher, background)", time.perf_counter() - t0)

    def timed_open(*a, **kw):
        return _TimedFile(open(*a, **kw), acc)

    st.hash_bytes, st._as_bytes = hash_bytes, as_bytes
    os.fsync = fsync
    if orig_fdatasync is not None:
        os.fdatasync = fdatasync
    atomic.open = timed_open  # shadows the builtin inside paramscope._atomic only
    try:
        yield
    finally:
        st.hash_bytes, st._as_bytes = orig_hash, orig_prep
        os.fsync = orig_fsync
        if orig_fdatasync is not None:
            os.fdatasync = orig_fdatasync
        del atomic.open


def profile(pd, tensors: dict, folder: Path, nbytes: int) -> None:
    import paramscope

    print()
    print("PROFILE of one paramscope.save (phases overlap: hashing and fdatasync run in")
    print("other threads; times are summed per phase, not exclusive)")
    out = folder / "ours-profile.safetensors"
    acc = _Acc()
    with instrumented(acc):
        t0 = time.perf_counter()
        paramscope.save(pd, out)
        total = time.perf_counter() - t0
    remove(out)
    rows = [["total paramscope.save", f"{total:7.3f} s", "", f"{nbytes / total / 1e9:5.2f} GB/s"]]
    for k, v in acc.t.items():
        rows.append([k, f"{v:7.3f} s", str(acc.n[k]), f"{100 * v / total:5.0f}% of total"])
    print(table(["phase", "time", "calls", ""], rows))

    # the raw building blocks, alone
    bufs = [memoryview(t.reshape(-1).view(__import__("torch").uint8).numpy())
            for t in tensors.values()]
    t0 = time.perf_counter()
    for b in bufs:
        hashlib.sha256(b).hexdigest()
    t_hash = time.perf_counter() - t0
    import xxhash

    t0 = time.perf_counter()
    for b in bufs:
        xxhash.xxh3_128(b).hexdigest()
    t_b3 = time.perf_counter() - t0
    raw = folder / "raw.bin"
    t0 = time.perf_counter()
    with open(raw, "wb") as f:
        for b in bufs:
            f.write(b)
        t_write = time.perf_counter() - t0
        t1 = time.perf_counter()
        f.flush()
        os.fsync(f.fileno())
        t_fsync = time.perf_counter() - t1
    remove(raw)
    print()
    print(table(
        ["building block, alone", "time", "GB/s"],
        [
            ["sha256 of all data, 1 thread", f"{t_hash:7.3f} s", f"{nbytes / t_hash / 1e9:5.2f}"],
            ["xxh3-128 of all data, 1 thread", f"{t_b3:7.3f} s", f"{nbytes / t_b3 / 1e9:5.2f}"],
            ["plain write(), no fsync", f"{t_write:7.3f} s", f"{nbytes / t_write / 1e9:5.2f}"],
            ["fsync after that write", f"{t_fsync:7.3f} s", ""],
            ["write + fsync", f"{t_write + t_fsync:7.3f} s",
             f"{nbytes / (t_write + t_fsync) / 1e9:5.2f}"],
        ],
    ))


# ----------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra=_extra_args)
    header("P4: paramscope.save vs safetensors.torch.save_file, 1 GiB fp32", args)
    from safetensors.torch import save_file

    import paramscope

    n, side = (16, 1024) if args.quick else (16, 4096)
    tensors = make_tensors(n, side)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    pd = paramscope.ParamDict(tensors)
    print(f"   data: {n} x {side}x{side} fp32 = {human(nbytes)}")

    with scratch(args, "p4-") as d:
        def ours(p: Path) -> None:
            paramscope.save(pd, p)

        def ours_nofsync(p: Path) -> None:
            paramscope.save(pd, p, fsync=False)

        def peer(p: Path) -> None:
            save_file(tensors, str(p))

        def peer_fsync(p: Path) -> None:
            save_file(tensors, str(p))
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        variants = {
            "ours: paramscope.save (atomic, fsync, xxh3)": ours,
            "peer + os.fsync": peer_fsync,
            "ours: save(fsync=False) (atomic, xxh3)": ours_nofsync,
            "peer: safetensors save_file": peer,
        }
        names = list(variants)

        # warm-up + check the files are equivalent
        for k, name in enumerate(names):
            p = d / f"warm{k}.safetensors"
            variants[name](p)
            if k == 0:
                got = paramscope.load(p)
                assert list(got) == list(tensors) or set(got) == set(tensors)
                assert all(bool((got[x] == tensors[x]).all()) for x in tensors)
                del got
            remove(p)

        # Two phases, each alternating one like-for-like pair: a durable write leaves the disk
        # busy for a while, which would otherwise land on whichever run comes next.
        times: dict[str, list[float]] = {x: [] for x in names}
        for pair in (names[2:], names[:2]):
            for r in range(args.runs):
                for name in (pair if r % 2 == 0 else pair[::-1]):
                    p = d / f"run{r}.safetensors"
                    t0 = time.perf_counter()
                    variants[name](p)
                    times[name].append(time.perf_counter() - t0)
                    assert p.stat().st_size > nbytes
                    remove(p)

        o = med(times[names[0]])
        rows = [
            [x, f"{med(times[x]):7.3f} s", f"{min(times[x]):7.3f} s", f"{max(times[x]):7.3f} s",
             f"{nbytes / med(times[x]) / 1e9:5.2f} GB/s", f"{med(times[x]) / o:5.2f}x"]
            for x in names
        ]
        print()
        print(table(["variant", "median", "min", "max", "throughput", "ours tput / this"], rows))
        # throughput ratios ours / peer, like for like
        durable = med(times[names[1]]) / o
        o_nf, pe = med(times[names[2]]), med(times[names[3]])
        fast = pe / o_nf
        ok = durable >= GOAL and fast >= GOAL
        print()
        print(f"   durable:     ours {nbytes / o / 1e9:.2f} GB/s vs peer+fsync "
              f"{nbytes / med(times[names[1]]) / 1e9:.2f} GB/s -> {durable:.2f}x")
        print(f"   no fsync:    ours {nbytes / o_nf / 1e9:.2f} GB/s vs peer "
              f"{nbytes / pe / 1e9:.2f} GB/s -> {fast:.2f}x")
        print(f"   (ours durable vs plain peer, which never waits for the disk: {pe / o:.2f}x)")
        print(
            f"VERDICT P4: {'PASS' if ok else 'FAIL'} - durable {durable:.2f}x, no-fsync "
            f"{fast:.2f}x (goal >= {GOAL}x each); n={args.runs}"
        )
        if args.profile or not ok:
            profile(pd, tensors, d, nbytes)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
