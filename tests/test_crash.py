"""Crash safety: SIGKILL a writer at random moments; the destination is never torn.

File writers (save, convert, prune, quantize) and folder writers (sharded save, DCP convert,
into folders that also hold a user's files) are covered. Each trial runs the operation in a
fresh subprocess that imports first and reports readiness on stdout; the kill timer starts at
the "go" (so most kills land inside the write), except a few trials killed during
startup/import. Half the trials write over an existing previous version. After every kill the
destination is absent (none before), the previous version (byte-identical for files; the same
verified values for folders), or complete (verified, equal to a reference run); a user's files
in a destination folder are untouched. Leftover temps must carry the temp mark and be removed
by the next write.
"""

from __future__ import annotations

import json
import random
import re
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
from paramscope._atomic import clean_stale_temps
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
import paramscope.io._reader, paramscope.io._writer

def make(seed, n, numel):
    g = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(numel, generator=g).reshape(-1, 256)
            for i in range(n)}

op, src, dst = cfg["op"], cfg["src"], cfg["dst"]
if op in ("save", "save_sharded"):
    data = make(cfg["seed"], cfg["n"], cfg["numel"])
if op == "convert_dcp":
    import paramscope.io._dcp
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
elif op == "save_sharded":
    paramscope.save(data, dst, max_shard_size=cfg["shard_save"])
elif op == "convert_dcp":
    convert(src, dst, format="dcp")
print("done", flush=True)
"""

SAVE = {"seed": 1234, "n": 16, "numel": 1 << 20}  # 16 x 4 MiB = 64 MiB
SHARD = "6MB"


def make(seed: int, n: int, numel: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(numel, generator=g).reshape(-1, 256) for i in range(n)}


def snapshot(p: Path) -> dict[str, bytes] | bytes | None:
    """The destination's content: bytes of a file, name → bytes of a folder, None if absent."""
    if p.is_dir():  # temps (a killed writer's temp folder inside) are counted apart
        return {f.name: f.read_bytes() for f in sorted(p.iterdir()) if TEMP_MARK not in f.name}
    if p.exists():
        return p.read_bytes()
    return None


def temps_of(dst: Path) -> list[Path]:
    """Temps beside the destination, and inside it when it is a folder."""
    beside = [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}{TEMP_MARK}")]
    inside = [p for p in dst.iterdir() if TEMP_MARK in p.name] if dst.is_dir() else []
    return beside + inside


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
            elif state == reference or not folder_dst:
                assert state == reference, f"{op} trial {trial}: destination torn"
                assert paramscope.verify(dst).ok
                outcome = "complete"
            else:  # a folder between two steps of the commit: old or new, plus the other's files
                assert isinstance(state, dict) and isinstance(reference, dict)
                for f, data in state.items():
                    assert data in (reference.get(f), (previous or {}).get(f)), (op, trial, f)
                vals = values_of(dst)
                if with_previous and equal(vals, values_of(prev_src)):
                    outcome = "previous"
                else:
                    assert equal(vals, values_of(ref)), f"{op} trial {trial}: destination torn"
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
    # What a writer killed inside the folder leaves: its temp folder, backups of the old
    # shards (the index on disk may name them), shards of the new version the index does not
    # name yet.
    inside = dst / f".model.safetensors.index.json{TEMP_MARK}0badf00d"
    shutil.copytree(sources["prev_dir"], inside)
    shard = "model-00001-of-00003.safetensors"
    backup = dst / f".{shard}{TEMP_MARK}bak-12345678"
    shutil.copyfile(dst / shard, backup)
    unnamed = dst / "model-00001-of-00007.safetensors"
    unnamed.write_bytes(b"a killed writer's new shard")
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    index["weight_map"] = {
        k: backup.name if v == shard else v for k, v in index["weight_map"].items()
    }
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    assert paramscope.verify(dst).ok  # killed after the old index was pointed at the backup
    clean_stale_temps(dst)  # a writer of another file in the folder keeps the backup
    assert backup.exists()
    convert(sources["prev_file"], dst, max_shard_size="300KB")
    assert not stale.exists() and not old.exists() and other.exists()
    assert not inside.exists() and not backup.exists() and not unnamed.exists()
    assert snapshot(dst) == snapshot(sources["prev_dir"])


# --------------------------------------------------------------------------- folder writers
# Writers that commit into a folder holding other files (config.json, a subfolder, a
# read-only file): the folder is never swapped out, only the checkpoint's own files are
# replaced, with the index (sharded) or .metadata (DCP) as the commit point.

SAVE_SHARDED = {"seed": 4321, "n": 12, "numel": 1 << 18, "shard_save": "3MB"}  # 6 shards
OWN_RE = re.compile(
    r"model\.safetensors(\.index\.json)?|model-\d{5}-of-\d{5}\.safetensors"
    r"|\.metadata|paramscope\.json|__\d+_\d+(-[0-9a-f]+)?\.distcp"
)


def add_foreign(d: Path, config: str = "config.json") -> dict[str, tuple[int, int, bytes]]:
    """A user's files in the destination; returns (inode, mode, bytes) of each."""
    d.mkdir(parents=True, exist_ok=True)
    (d / config).write_text('{"model_type": "x"}')
    (d / "tokenizer.json").write_text("{}")
    (d / "sub").mkdir()
    (d / "sub" / "model-00001-of-00002.safetensors").write_bytes(b"a user's file")
    (d / "LICENSE").write_text("read-only")
    (d / "LICENSE").chmod(0o444)
    return foreign_state(
        d, [config, "tokenizer.json", "sub/model-00001-of-00002.safetensors", "LICENSE"]
    )


def foreign_state(d: Path, names: list[str]) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for n in names:
        st = (d / n).lstat()
        out[n] = (st.st_ino, st.st_mode, (d / n).read_bytes())
    return out


def values_of(path: Path) -> dict[str, torch.Tensor] | None:
    """The checkpoint a folder holds now (None when it holds none); verified first."""
    try:
        paramscope.read_manifest(path)
    except (paramscope.ParamscopeError, FileNotFoundError):
        return None
    assert paramscope.verify(path).ok, paramscope.verify(path).problems
    return dict(paramscope.load(path).items())


def equal(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor] | None) -> bool:
    if a is None or b is None:
        return a is b
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def run_folder_trials(op: str, sources: dict[str, Path], work: Path, seed: int) -> Counter[str]:
    """Kill a folder writer at random moments, over a previous version and a user's files."""
    dst = work / "out"
    cfg_base: dict[str, object] = {"op": op, "src": str(sources["src"]), **SAVE_SHARDED}
    prev = work / "prev"
    if op == "save_sharded":  # the same shard names as the new version: backups are needed
        paramscope.save(make(77, 12, 1 << 18), prev, max_shard_size=SAVE_SHARDED["shard_save"])
        expected = make(SAVE_SHARDED["seed"], SAVE_SHARDED["n"], SAVE_SHARDED["numel"])
    else:  # a 12 MiB source: the DCP writer gathers it whole
        src = work / "dcp_src.safetensors"
        paramscope.save(make(7, 12, 1 << 18), src)
        cfg_base["src"] = str(src)
        paramscope.save(paramscope.load(sources["prev_file"]), prev, format="dcp")
        expected = dict(paramscope.load(src).items())
    previous = values_of(prev)
    assert previous is not None

    ref = work / "ref"  # reference run into a new folder, timed, while spares import
    cfg = {**cfg_base, "dst": str(dst)}
    w = Worker({**cfg_base, "dst": str(ref)})
    spares: deque[Worker] = deque()
    w.ready()
    spares.extend(Worker(cfg) for _ in range(SPARES))
    t0 = w.go()
    while not ref.exists():
        if w.proc.poll() is not None and not ref.exists():
            w.finish()  # raises with the worker's stderr
            raise AssertionError("reference run failed")
        time.sleep(0.002)
    duration = time.monotonic() - t0
    w.finish()
    assert equal(values_of(ref), expected)
    ref_own = sorted(p.name for p in ref.iterdir())

    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    leftovers = 0
    try:
        for trial in range(TRIALS):
            with_previous = trial % 2 == 0
            foreign = trial % 4 != 3  # else the folder holds only the checkpoint (or is new)
            shutil.rmtree(dst, ignore_errors=True)
            if with_previous:
                shutil.copytree(prev, dst)
            # A DCP folder with a config.json reads as a model config (_targets._WEIGHTS has
            # no DCP pattern), so the DCP trials name it otherwise.
            config = "config.json" if op == "save_sharded" else "generation_config.json"
            kept = add_foreign(dst, config) if foreign else {}
            if trial < EARLY:
                w = Worker(cfg)
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                while len(spares) < min(SPARES + 1, TRIALS - trial):
                    spares.append(Worker(cfg))
                w = spares.popleft()
                w.ready()
                w.go()
                if trial == TRIALS - 1:  # synchronised: as soon as a temp exists
                    deadline = time.monotonic() + 60
                    while not temps_of(dst) and time.monotonic() < deadline:
                        time.sleep(0.0005)
                    delay = 0.0
                elif trial >= TRIALS - 1 - LATE:  # around the commit
                    delay = duration * rng.uniform(0.8, 1.3)
                else:
                    delay = rng.uniform(0.0, duration)
                time.sleep(delay)
            w.kill()

            if foreign:
                assert foreign_state(dst, list(kept)) == kept, f"{op} {trial}: user file touched"
            state = values_of(dst)
            if state is None:
                assert not with_previous, f"{op} trial {trial}: the previous version vanished"
                outcome = "absent"
            elif with_previous and equal(state, previous):
                outcome = "previous"
            else:
                assert equal(state, expected), f"{op} trial {trial}: destination torn"
                outcome = "complete"
            if state is not None and op == "convert_dcp" and not (dst / "paramscope.json").exists():
                outcome += "-no-sidecar"  # killed between the sidecar's two renames
            outcomes[outcome] += 1
            names = [p.name for p in dst.iterdir()] if dst.is_dir() else []
            stray = [
                n
                for n in names
                if n not in {k.split("/")[0] for k in kept}
                and TEMP_MARK not in n
                and not OWN_RE.fullmatch(n)
            ]
            assert not stray, f"{op} trial {trial}: unrecognisable leftovers {stray}"
            beside = [
                p.name
                for p in work.iterdir()
                if p.name not in ("out", "ref", "prev", "dcp_src.safetensors")
                and TEMP_MARK not in p.name
            ]
            assert not beside, f"{op} trial {trial}: leftovers beside the folder {beside}"
            leftovers += len(temps_of(dst))
    finally:
        for spare in spares:
            spare.kill()

    assert sum(outcomes.values()) == TRIALS
    assert outcomes["absent"] > 0 and outcomes["previous"] > 0  # "complete": the next write
    assert sum(v for k, v in outcomes.items() if k.endswith("no-sidecar")) <= 1
    assert leftovers > 0, f"{op}: no kill landed inside the write"
    # The next write (over the last trial's state) completes and removes every leftover.
    kept = foreign_state(
        dst,
        [
            k
            for k in ("config.json", "generation_config.json", "tokenizer.json", "LICENSE")
            if (dst / k).exists()
        ],
    )
    w = Worker(cfg)
    w.ready()
    w.go()
    w.finish()
    assert equal(values_of(dst), expected) and temps_of(dst) == []
    assert foreign_state(dst, list(kept)) == kept
    own = sorted(p.name for p in dst.iterdir() if OWN_RE.fullmatch(p.name))
    chunk = re.compile(r"__0_0(-[0-9a-f]+)?\.distcp")
    assert [chunk.sub("chunk", n) for n in own] == [chunk.sub("chunk", n) for n in ref_own]
    print(
        f"\n[crash] {op}: {TRIALS} trials ({EARLY} during startup), op {duration:.2f}s: "
        + " ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
        + f", torn=0, temps seen {leftovers}, all cleaned by next write"
    )
    return outcomes


@pytest.mark.parametrize("op", ["save_sharded", "convert_dcp"])
def test_kill_never_tears_folder_destination(
    op: str, sources: dict[str, Path], tmp_path: Path
) -> None:
    run_folder_trials(op, sources, tmp_path, seed=10 + len(op))
