"""Crash safety: SIGKILL a writer at random moments; the destination is never torn.

Each trial runs the operation in a fresh subprocess that imports first and reports
readiness on stdout; the kill timer starts at the "go" (so most kills land inside the
write), except a few trials killed during startup/import. Half the trials write over an
existing previous version. After every kill the destination is absent (none before),
byte-identical to the previous version, or complete (verified, equal to a reference run).
Leftover temps must carry the temp mark and be removed by the next write.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope._convert import convert
from paramscope.compress import prune_file, quantize_file

TEMP_MARK = ".paramscope-tmp-"
TRIALS = 20
EARLY = 3  # trials killed during interpreter start / imports
SPARES = 1  # workers importing ahead
LATE = 4  # trials killed near the end of the write

WORKER = r"""
import json, sys
cfg = json.loads(sys.argv[1])
import torch
import paramscope
from paramscope._convert import convert
from paramscope.compress import prune_file, quantize_file
import paramscope.compress._stream, paramscope.io._safetensors, paramscope.io._sharded

def make(seed, n, numel):
    g = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(numel, generator=g).reshape(-1, 256)
            for i in range(n)}

op, src, dst = cfg["op"], cfg["src"], cfg["dst"]
if op == "save":
    data = make(cfg["seed"], cfg["n"], cfg["numel"])
print("ready", flush=True)
sys.stdin.readline()
if op == "save":
    paramscope.save(data, dst)
elif op == "convert":
    convert(src, dst, dtype="float16")
elif op == "convert_sharded":
    convert(src, dst, max_shard_size=cfg["shard"])
elif op == "prune":
    prune_file(src, dst, 0.5)
elif op == "quantize":
    quantize_file(src, dst, bits=8)
print("done", flush=True)
"""

SAVE = {"seed": 1234, "n": 16, "numel": 1 << 20}  # 16 x 4 MiB = 64 MiB
SHARD = "6MB"


def make(seed: int, n: int, numel: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(numel, generator=g).reshape(-1, 256) for i in range(n)}


def snapshot(p: Path) -> dict[str, bytes] | bytes | None:
    """The destination's content: bytes of a file, name → bytes of a folder, None if absent."""
    if p.is_dir():
        return {f.name: f.read_bytes() for f in sorted(p.iterdir())}
    if p.exists():
        return p.read_bytes()
    return None


def temps_of(dst: Path) -> list[Path]:
    return [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}{TEMP_MARK}")]


class Worker:
    def __init__(self, cfg: dict[str, object]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started = time.monotonic()

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise AssertionError(f"worker failed to start: {self.proc.stderr.read().decode()}")

    def go(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        return time.monotonic()

    def finish(self) -> None:
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err.decode()
        assert out.strip() == b"done"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crash-src")
    out = {"root": root}
    out["src"] = root / "src.safetensors"  # 48 MiB float32 source for convert/prune/quantize
    paramscope.save(make(7, 12, 1 << 20), out["src"])
    out["prev_file"] = root / "prev.safetensors"  # a previous version of a file destination
    paramscope.save(make(99, 3, 1 << 16), out["prev_file"])
    out["prev_dir"] = root / "prev_dir"  # a previous version of a sharded destination
    convert(out["prev_file"], out["prev_dir"], max_shard_size="300KB")
    assert len(list(out["prev_dir"].iterdir())) > 2
    return out


def run_here(op: str, src: Path, dst: Path) -> None:
    """The worker's operation, in this process."""
    if op == "save":
        paramscope.save(make(SAVE["seed"], SAVE["n"], SAVE["numel"]), dst)
    elif op == "convert":
        convert(src, dst, dtype="float16")
    elif op == "convert_sharded":
        convert(src, dst, max_shard_size=SHARD)
    elif op == "prune":
        prune_file(src, dst, 0.5)
    else:
        quantize_file(src, dst, bits=8)


def check_reference(op: str, ref: Path, src: Path) -> None:
    """The reference output (an uninterrupted run) loads with the expected values."""
    assert paramscope.verify(ref).ok
    if op == "save":
        expected = make(SAVE["seed"], SAVE["n"], SAVE["numel"])
        got = paramscope.load(ref)
        assert sorted(got) == sorted(expected)
        assert all(torch.equal(got[k], v) for k, v in expected.items())
        return
    orig = paramscope.load(src)
    got = paramscope.load(ref, dequantize=True) if op == "quantize" else paramscope.load(ref)
    assert sorted(got) == sorted(orig)
    for k, v in orig.items():
        if op == "convert":
            assert got[k].dtype == torch.float16 and torch.equal(got[k], v.half())
        elif op == "convert_sharded":
            assert torch.equal(got[k], v)
        elif op == "prune":
            assert torch.all((got[k] == 0) | (got[k] == v))
            assert 0.3 < float((got[k] == 0).float().mean()) < 0.7
        else:
            assert torch.allclose(got[k], v, atol=float(v.abs().max()) / 100)


def run_trials(op: str, sources: dict[str, Path], work: Path, seed: int) -> Counter[str]:
    folder_dst = op == "convert_sharded"
    name = "out" if folder_dst else "out.safetensors"
    dst = work / name
    cfg_base: dict[str, object] = {"op": op, "src": str(sources["src"]), **SAVE, "shard": SHARD}
    prev_src = sources["prev_dir" if folder_dst else "prev_file"]
    previous = snapshot(prev_src)

    # Reference run: uninterrupted, in a worker, timed from "go" to "done" while the next
    # workers import (as in the trials). Outputs are deterministic, so "complete" below means
    # byte-identical to it; a run in this process checks that determinism.
    ref = work / ("ref" if folder_dst else "ref.safetensors")
    cfg = {**cfg_base, "dst": str(dst)}
    w = Worker({**cfg_base, "dst": str(ref)})
    spares: deque[Worker] = deque()
    w.ready()
    spares.extend(Worker(cfg) for _ in range(SPARES))
    t0 = w.go()
    t_tmp = None  # when the temp appears, and when the output is renamed into place
    while not ref.exists():
        if t_tmp is None and temps_of(ref):
            t_tmp = time.monotonic() - t0
        assert w.proc.poll() is None or ref.exists(), "reference run failed"
        time.sleep(0.002)
    duration = time.monotonic() - t0
    w.finish()
    start = t_tmp if t_tmp is not None else 0.0
    check_reference(op, ref, sources["src"])
    reference = snapshot(ref)
    run_here(op, sources["src"], work / "again")
    assert snapshot(work / "again") == reference
    shutil.rmtree(work / "again") if folder_dst else (work / "again").unlink()

    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    leftovers = 0
    try:
        for trial in range(TRIALS):
            with_previous = trial % 2 == 0
            if folder_dst:
                shutil.rmtree(dst, ignore_errors=True)
                if with_previous:
                    shutil.copytree(prev_src, dst)
            else:
                dst.unlink(missing_ok=True)
                if with_previous:
                    shutil.copyfile(prev_src, dst)
            if trial < EARLY:  # killed during startup / imports: a fresh process
                w = Worker(cfg)
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                while len(spares) < min(SPARES + 1, TRIALS - trial):  # import while we write
                    spares.append(Worker(cfg))
                w = spares.popleft()
                w.ready()
                w.go()
                if trial == TRIALS - 1:  # synchronised: as soon as the temp exists
                    deadline = time.monotonic() + 60
                    while not temps_of(dst) and time.monotonic() < deadline:
                        time.sleep(0.0005)
                    delay = 0.0
                elif trial >= TRIALS - 1 - LATE:  # around the end of the write and the rename
                    delay = duration * rng.uniform(0.9, 1.5)
                elif trial % 3 == 0:  # anywhere from the start of the operation
                    delay = rng.uniform(0.0, duration)
                else:  # inside the write: from the temp's creation to the rename
                    delay = rng.uniform(start, duration)
                time.sleep(delay)
            w.kill()

            state = snapshot(dst)
            if state is None:
                assert not with_previous, f"{op} trial {trial}: the previous version vanished"
                outcome = "absent"
            elif with_previous and state == previous:
                outcome = "previous"
            else:
                assert state == reference, f"{op} trial {trial}: destination torn"
                assert paramscope.verify(dst).ok
                outcome = "complete"
            outcomes[outcome] += 1
            stray = [
                p
                for p in work.iterdir()
                if p.name not in (name, ref.name) and TEMP_MARK not in p.name
            ]
            assert not stray, f"{op} trial {trial}: unrecognisable leftovers {stray}"
            leftovers += len(temps_of(dst))

    finally:
        for spare in spares:
            spare.kill()

    assert sum(outcomes.values()) == TRIALS
    assert set(outcomes) <= {"absent", "previous", "complete"}
    # Kills inside the write (the last trial's at least) left temps; the next write removes them.
    assert leftovers > 0, f"{op}: no kill landed inside the write"
    w = Worker(cfg)
    w.ready()
    w.go()
    w.finish()
    assert snapshot(dst) == reference and paramscope.verify(dst).ok
    assert temps_of(dst) == [], f"{op}: temps survived the next write"
    print(
        f"\n[crash] {op}: {TRIALS} trials ({EARLY} during startup), op {duration:.2f}s "
        f"(write from {start:.2f}s): "
        f"absent={outcomes['absent']} previous={outcomes['previous']} "
        f"complete={outcomes['complete']}, temps seen {leftovers}, all cleaned by next write"
    )
    return outcomes


OPS: dict[str, int] = {"save": 1, "convert": 2, "convert_sharded": 3, "prune": 4, "quantize": 5}


@pytest.mark.parametrize("op", list(OPS))
def test_kill_never_tears_destination(op: str, sources: dict[str, Path], tmp_path: Path) -> None:
    outcomes = run_trials(op, sources, tmp_path, seed=OPS[op])
    assert outcomes["absent"] > 0 and outcomes["previous"] > 0


def test_stale_temp_folder_of_killed_sharded_convert_is_cleaned(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """Deterministic twin of the random trials: a killed convert's temp folders go next time."""
    dst = tmp_path / "out"
    shutil.copytree(sources["prev_dir"], dst)
    stale = tmp_path / f".out{TEMP_MARK}deadbeef"
    shutil.copytree(sources["prev_dir"], stale)
    old = tmp_path / f".out{TEMP_MARK}old-cafe0000"
    shutil.copytree(sources["prev_dir"], old)
    other = tmp_path / f".other{TEMP_MARK}00000000"  # another destination's fresh temp: kept
    other.write_bytes(b"x")
    convert(sources["prev_file"], dst, max_shard_size="300KB")
    assert not stale.exists() and not old.exists() and other.exists()
    assert snapshot(dst) == snapshot(sources["prev_dir"])
