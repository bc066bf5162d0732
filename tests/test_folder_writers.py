"""Writers that take a folder touch only their own files, atomically, whatever else is there.

Sharded safetensors (``save(..., max_shard_size=)``, ``convert --shard-size``) and DCP
(``save(..., format="dcp")``, ``convert --format dcp``) write into folders that also hold a
user's files: ``config.json``, tokenizer files, subfolders, the source being converted, FIFOs,
symlinks to devices, read-only files. Every such entry must come out byte-identical, same
inode, never opened. The previous checkpoint must be replaced atomically: a failure at any
step (simulated here by failing the N-th rename / link / unlink) leaves it readable as the
old or the new version, and the next write removes the leftovers.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import stat
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import paramscope
from _helpers import run_python
from paramscope import ParamDict, ParamscopeError, ShardIndexError
from paramscope._convert import convert
from paramscope.io import _sharded

TEMP_MARK = ".paramscope-tmp-"
INDEX = "model.safetensors.index.json"
DCP_OWN = (".metadata", "paramscope.json")


# --------------------------------------------------------------------------- helpers


def values(seed: int, n: int = 6, numel: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(numel, generator=g) for i in range(n)}


def tied(seed: int) -> ParamDict:
    pd = ParamDict(values(seed), metadata={"seed": str(seed)})
    pd.tie("head.weight", "layer0.weight")
    return pd


def same_values(got: ParamDict, want: dict[str, torch.Tensor]) -> bool:
    return set(want) <= set(got) and all(torch.equal(got[k], v) for k, v in want.items())


def fingerprint(p: Path) -> tuple[Any, ...]:
    """What must not change about a foreign entry: kind, inode, mode, size, mtime, content."""
    st = os.lstat(p)
    digest = None
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        digest = os.readlink(p)
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, digest)


def tree(folder: Path) -> dict[str, tuple[Any, ...]]:
    """Fingerprints of every entry under ``folder`` (not following links)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            out[os.fspath(p.relative_to(folder))] = fingerprint(p)
    return out


def add_foreign(folder: Path) -> dict[str, tuple[Any, ...]]:
    """A typical Hugging Face folder's other files, a subfolder, a read-only file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama-ish"}')
    (folder / "tokenizer.json").write_text('{"vocab": {}}')
    (folder / "README.md").write_text("# my model\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("keep me")
    (folder / "sub" / "model-00001-of-00002.safetensors").write_bytes(b"not ours: a subfolder")
    ro = folder / "LICENSE"
    ro.write_text("read-only")
    ro.chmod(0o444)
    (folder / "other-00001-of-00002.safetensors").write_bytes(b"another prefix")
    return {k: v for k, v in tree(folder).items() if k in foreign_names(folder)}


def foreign_names(folder: Path) -> set[str]:
    own = {INDEX, "model.safetensors", *DCP_OWN}
    out = set()
    for rel in tree(folder):
        top = rel.split(os.sep)[0]
        if top in own or TEMP_MARK in top or _sharded_name(top) or _dcp_chunk(top):
            continue
        out.add(rel)
    return out


def _sharded_name(name: str) -> bool:
    import re

    return re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", name) is not None


def _dcp_chunk(name: str) -> bool:
    import re

    return re.fullmatch(r"__\d+_\d+(-[0-9a-f]+)?\.distcp", name) is not None


def foreign_of(folder: Path, names: set[str]) -> dict[str, tuple[Any, ...]]:
    t = tree(folder)
    return {k: t.get(k) for k in names}


def leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if TEMP_MARK in n)


def run_py(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh process (hangs and runaway reads become a timeout)."""
    return run_python(textwrap.dedent(code), env=env, timeout=timeout)


# --------------------------------------------------------------------------- 1. foreign files


@pytest.mark.parametrize("shard", ["600B", "1MB"], ids=["shards", "one-file"])
def test_convert_into_folder_keeps_foreign_files_and_source(tmp_path: Path, shard: str) -> None:
    d = tmp_path / "D"
    before = add_foreign(d)
    src = paramscope.save(values(1), d / "orig.safetensors")  # SRC lives in DST
    before["orig.safetensors"] = fingerprint(src)
    convert(src, d, max_shard_size=shard)
    convert(src, d, max_shard_size=shard, dtype="fp16")  # again, over the first output
    assert foreign_of(d, set(before)) == before
    got = paramscope.load(d)
    assert all(torch.equal(got[k], v.half()) for k, v in values(1).items())
    assert paramscope.verify(d).ok and leftovers(d) == []
    if shard == "1MB":
        assert not (d / INDEX).exists() and (d / "model.safetensors").is_file()


def test_save_sharded_keeps_foreign_files_through_every_transition(tmp_path: Path) -> None:
    d = tmp_path / "D"
    before = add_foreign(d)
    (d / "model.safetensors").write_bytes(b"stale single file of the same name")
    steps: list[tuple[int, int | str]] = [
        (1, 600),  # 3 shards (over a stale model.safetensors: removed)
        (2, 600),  # 3 shards again: the same names, old ones backed up while moving
        (3, 300),  # 6 shards: the 3 old ones go
        (4, "1MB"),  # one file: index and shards go
        (5, 600),  # shards again: the single file goes
    ]
    for seed, size in steps:
        paramscope.save(tied(seed), d, max_shard_size=size)
        got = paramscope.load(d)
        assert same_values(got, values(seed)) and got["head.weight"] is got["layer0.weight"]
        assert foreign_of(d, set(before)) == before, seed
        assert leftovers(d) == []
        own = sorted(set(os.listdir(d)) - {k.split(os.sep)[0] for k in before})
        if size == "1MB":
            assert own == ["model.safetensors"]
        else:
            n = len(set(json.loads((d / INDEX).read_text())["weight_map"].values()))
            shards = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
            assert own == sorted([INDEX, *shards])


@pytest.mark.parametrize("how", ["save", "convert"])
def test_dcp_into_folder_keeps_foreign_files(tmp_path: Path, how: str) -> None:
    d = tmp_path / "D"
    before = add_foreign(d)
    src = paramscope.save(tied(0), d / "model.safetensors")  # HF weights beside the DCP
    before["model.safetensors"] = fingerprint(src)
    for seed in (1, 2, 3):  # the chunk file name is taken by the old checkpoint every time
        if how == "save":
            paramscope.save(tied(seed), d, format="dcp")
        else:
            paramscope.save(tied(seed), tmp_path / f"s{seed}.safetensors")
            convert(tmp_path / f"s{seed}.safetensors", d, format="dcp")
        got = paramscope.load(d)
        assert same_values(got, values(seed)) and got["head.weight"] is got["layer0.weight"]
        assert got.metadata["seed"] == str(seed)
        assert foreign_of(d, set(before)) == before
        chunks = [n for n in os.listdir(d) if n.endswith(".distcp")]
        assert len(chunks) == 1 and leftovers(d) == []  # the old chunk files went
    assert paramscope.verify(d).ok
    convert(d / "model.safetensors", d, format="dcp")  # SRC inside DST: SRC stays
    assert foreign_of(d, set(before)) == before
    assert same_values(paramscope.load(d), values(0))


def test_dcp_folder_of_own_files_is_swapped_whole(tmp_path: Path) -> None:
    d = tmp_path / "D"
    paramscope.save(tied(1), d, format="dcp")
    paramscope.save(tied(2), d, format="dcp")
    assert sorted(os.listdir(d)) == [".metadata", "__0_0.distcp", "paramscope.json"]
    assert sorted(os.listdir(tmp_path)) == ["D"]
    assert same_values(paramscope.load(d), values(2))


def test_shards_into_a_dcp_folder_are_refused_untouched(tmp_path: Path) -> None:
    d = tmp_path / "D"
    paramscope.save(tied(1), d, format="dcp")
    before = tree(d)
    with pytest.raises(ParamscopeError, match=r"DCP checkpoint \(\.metadata\)"):
        paramscope.save(tied(2), d, max_shard_size=600)
    assert tree(d) == before and sorted(os.listdir(tmp_path)) == ["D"]


def test_one_shard_beside_another_index_is_written_with_an_index(tmp_path: Path) -> None:
    """A lone model.safetensors would be hidden by pytorch_model.bin.index.json."""
    d = tmp_path / "D"
    d.mkdir()
    other = {"metadata": {}, "weight_map": {"x": "pytorch_model-00001-of-00001.bin"}}
    (d / "pytorch_model.bin.index.json").write_text(json.dumps(other))
    out = paramscope.save(tied(1), d, max_shard_size="1MB")
    assert out == d / INDEX
    assert (d / "model-00001-of-00001.safetensors").is_file()
    assert same_values(paramscope.load(d), values(1))
    assert json.loads((d / "pytorch_model.bin.index.json").read_text()) == other


def test_cli_convert_shard_size_keeps_folder(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "D"
    before = add_foreign(d)
    torch.save(values(3), d / "pytorch_model.bin")
    before["pytorch_model.bin"] = fingerprint(d / "pytorch_model.bin")
    monkeypatch.chdir(d)
    r = cli("convert", "pytorch_model.bin", ".", "--shard-size", "600B")
    assert r.code == 0, r.err
    assert foreign_of(d, set(before)) == before
    assert same_values(paramscope.load(d / INDEX), values(3))


# --------------------------------------------------------------------------- 2. atomicity


@contextmanager
def fail_nth(n: int) -> Iterator[list[int]]:
    """Make the ``n``-th rename / replace / link / unlink in this process fail (EIO)."""
    names = ("replace", "rename", "link", "unlink")
    real = {k: getattr(os, k) for k in names}
    count = [0]

    def wrap(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] == n:
                raise OSError(errno.EIO, f"injected failure of os.{name}", str(args[0]))
            return real[name](*args, **kwargs)

        return call

    for k in names:
        setattr(os, k, wrap(k))
    try:
        yield count
    finally:
        for k, f in real.items():
            setattr(os, k, f)


def state_of(d: Path, old: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor]) -> str:
    """'old' or 'new' (the checkpoint in ``d`` loads and verifies as one of them), else fail."""
    if old is None:
        try:
            paramscope.read_manifest(d)
        except ParamscopeError:
            return "absent"
    assert paramscope.verify(d).ok, paramscope.verify(d).problems
    got = paramscope.load(d)
    if old is not None and same_values(got, old) and len(got) == len(old) + 1:
        return "old"
    assert same_values(got, new) and len(got) == len(new) + 1, "torn checkpoint"
    return "new"


WRITERS: dict[str, Callable[[ParamDict, Path], Any]] = {
    "shards-same-names": lambda pd, d: paramscope.save(pd, d, max_shard_size=600),
    "shards-more": lambda pd, d: paramscope.save(pd, d, max_shard_size=300),
    "shards-to-one-file": lambda pd, d: paramscope.save(pd, d, max_shard_size="1MB"),
    "dcp": lambda pd, d: paramscope.save(pd, d, format="dcp"),
}


@pytest.mark.parametrize("foreign", [True, False], ids=["with-foreign", "own-only"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_failure_at_every_step_leaves_old_or_new(
    tmp_path: Path, writer: str, foreign: bool
) -> None:
    """Fail each file-system step of a write in turn: the folder reads as old or new."""
    write = WRITERS[writer]
    dcp = writer == "dcp"
    outcomes: list[str] = []
    degraded = 0
    n = 0
    while True:
        n += 1
        d = tmp_path / f"D{n}"
        before = add_foreign(d) if foreign else {}
        if dcp:
            paramscope.save(tied(1), d, format="dcp")
        elif writer == "shards-to-one-file":
            paramscope.save(tied(1), d, max_shard_size=300)
        else:
            paramscope.save(tied(1), d, max_shard_size=600)
        with fail_nth(n) as count:
            try:
                write(tied(2), d)
                failed = False
            except (OSError, ParamscopeError) as exc:
                assert "injected" in str(exc)
                failed = True
        outcome = state_of(d, values(1), values(2))
        if dcp and not (d / "paramscope.json").exists():
            degraded += 1  # the sidecar's two renames: values whole, ties unknown
        else:
            got = paramscope.load(d)
            assert got["head.weight"] is got["layer0.weight"]
        outcomes.append(outcome)
        assert foreign_of(d, set(before)) == before
        write(tied(3), d)  # the next write succeeds and removes what the failed one left
        assert state_of(d, None, values(3)) == "new"
        assert leftovers(d) == [] and foreign_of(d, set(before)) == before
        own = set(os.listdir(d)) - {k.split(os.sep)[0] for k in before}
        fresh = tmp_path / f"F{n}"
        write(tied(3), fresh)
        own_fresh = set(os.listdir(fresh))
        if dcp:  # chunk names may carry a suffix
            own = {("chunk" if n.endswith(".distcp") else n) for n in own}
            own_fresh = {("chunk" if n.endswith(".distcp") else n) for n in own_fresh}
        assert own == own_fresh, "stale files of the old checkpoint survived"
        if count[0] < n:  # the write took fewer steps: every step has failed once
            assert not failed
            break
    assert outcomes[-1] == "new" and "old" in outcomes and n > 5
    assert degraded <= (2 if dcp and foreign else 0)


def test_sharded_save_failing_mid_write_keeps_previous_bytes(tmp_path: Path, monkeypatch) -> None:
    """A save whose 2nd shard fails leaves every file of the previous version as it was."""
    d = tmp_path / "D"
    paramscope.save(tied(1), d, max_shard_size=600)
    before = tree(d)
    real = paramscope.io._writer.write_file
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> int:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(paramscope.io._writer, "write_file", flaky)
    with pytest.raises(OSError, match="No space left") as info:
        paramscope.save(tied(2), d, max_shard_size=600)
    assert str(d / "model-00002-of-00003.safetensors") in str(info.value)
    assert tree(d) == before
    assert same_values(paramscope.load(d), values(1)) and paramscope.verify(d).ok


def test_dcp_save_failing_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from torch.distributed.checkpoint import filesystem

    d = tmp_path / "D"
    for foreign in (False, True):
        if foreign:
            add_foreign(d)
        paramscope.save(tied(1), d, format="dcp")
        before = tree(d)

        def full(*args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as m:
            m.setattr(filesystem, "_write_item", full)
            with pytest.raises(ParamscopeError, match="No space left") as info:
                paramscope.save(tied(2), d, format="dcp")
        assert str(d) in str(info.value)
        assert tree(d) == before
        got = paramscope.load(d)
        assert same_values(got, values(1)) and got["head.weight"] is got["layer0.weight"]
        assert sorted(os.listdir(tmp_path)) == ["D"]


# --------------------------------------------------------------------------- 3. FIFOs, devices


def test_fifo_named_like_a_stale_temp_does_not_hang_writers(tmp_path: Path) -> None:
    d = tmp_path / "D"
    d.mkdir()
    fifos = [
        d / f".{INDEX}{TEMP_MARK}deadbeef",
        d / f".model.safetensors{TEMP_MARK}00000000",
        d / f".paramscope-dcp{TEMP_MARK}00000000",
        tmp_path / f".D{TEMP_MARK}00000000",
        tmp_path / f".m.safetensors{TEMP_MARK}00000000",
    ]
    for f in fifos:
        os.mkfifo(f)
    target = tmp_path / "users-file"
    target.write_text("precious")
    link = d / f".{INDEX}{TEMP_MARK}cafecafe"
    link.symlink_to(target)
    os.utime(link, (0, 0), follow_symlinks=False)  # old enough for the age rule
    r = run_py(
        f"""
        import torch, paramscope
        from paramscope._convert import convert
        pd = {{"a": torch.ones(64), "b": torch.zeros(64)}}
        paramscope.save(pd, {str(tmp_path / "m.safetensors")!r})
        paramscope.save(pd, {str(d)!r}, max_shard_size=300)
        paramscope.save(pd, {str(d)!r}, max_shard_size=300)
        convert({str(tmp_path / "m.safetensors")!r}, {str(d)!r}, max_shard_size=300)
        print("ok")
        """,
        timeout=90,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    for f in fifos:
        assert stat.S_ISFIFO(os.lstat(f).st_mode)  # not ours: left alone
    assert link.is_symlink() and target.read_text() == "precious"


def test_dcp_writer_ignores_fifos_and_device_links(tmp_path: Path) -> None:
    d = tmp_path / "D"
    d.mkdir()
    os.mkfifo(d / "pipe")
    os.mkfifo(d / f".paramscope-dcp{TEMP_MARK}00000000")
    (d / "zero").symlink_to("/dev/zero")
    before = tree(d)
    r = run_py(
        f"""
        import torch, paramscope
        paramscope.save({{"a": torch.ones(4)}}, {str(d)!r}, format="dcp")
        paramscope.save({{"a": torch.zeros(4)}}, {str(d)!r}, format="dcp")
        print(float(paramscope.load({str(d)!r})["a"].sum()))
        """,
        timeout=90,
    )
    assert r.returncode == 0 and r.stdout.strip() == "0.0", r.stderr
    assert foreign_of(d, set(before)) == before


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge"])
def test_index_that_is_not_a_small_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "D"
    paramscope.save(tied(1), d, max_shard_size=600)
    index = d / INDEX
    index.unlink()
    if kind == "dev-zero":
        index.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(index)
    else:
        with open(index, "wb") as f:  # sparse: 100 MB + 1 without using the disk
            f.truncate(100_000_001)
    r = run_py(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from paramscope.io._sharded import read_index
        from paramscope import ShardIndexError
        try:
            read_index({str(index)!r})
        except ShardIndexError as exc:
            print("refused:", exc)
        """,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("refused:") and str(index) in r.stdout
    assert ("100 MB" in r.stdout) if kind == "huge" else ("regular file" in r.stdout)


def test_writers_replace_a_device_link_or_fifo_at_their_own_index_name(tmp_path: Path) -> None:
    d = tmp_path / "D"
    d.mkdir()
    (d / INDEX).symlink_to("/dev/zero")
    os.mkfifo(d / "model-00001-of-00003.safetensors")
    r = run_py(
        f"""
        import torch, paramscope
        pd = {{f"w{{i}}": torch.full((64,), float(i)) for i in range(6)}}
        paramscope.save(pd, {str(d)!r}, max_shard_size=600)
        print(float(paramscope.load({str(d)!r})["w5"][0]))
        """,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == "5.0", r.stderr
    assert (d / INDEX).is_file() and not (d / INDEX).is_symlink()


def test_read_index_rejects_non_regular_in_process(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.index.json")
    with pytest.raises(ShardIndexError, match="FIFO"):
        _sharded.read_index(tmp_path / "x.index.json")


# --------------------------------------------------------------------------- 4. open files


def test_thousands_of_shards_under_a_low_open_file_limit(tmp_path: Path) -> None:
    """Reading and writing 300 shards with ``ulimit -n 64``: files are opened one at a time."""
    src = tmp_path / "src"
    pd = {f"w{i}": torch.full((16,), float(i)) for i in range(300)}
    paramscope.save(pd, src, max_shard_size=64, fsync=False)
    assert len(os.listdir(src)) == 301
    r = run_py(
        f"""
        import resource
        import paramscope
        from paramscope._convert import convert
        import paramscope.io._reader, paramscope.io._sharded, paramscope.io._writer, torch
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        rep = convert({str(src)!r}, {str(tmp_path / "out")!r}, max_shard_size=64, fsync=False)
        rep2 = convert({str(src)!r}, {str(tmp_path / "one.safetensors")!r}, fsync=False)
        print(rep.shards, rep2.entries)
        """,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["300", "300"]
    out = paramscope.load(tmp_path / "one.safetensors")
    assert all(torch.equal(out[k], v) for k, v in pd.items())
    assert len(os.listdir(tmp_path / "out")) == 301


# --------------------------------------------------------------------------- 5. write errors


class _Full:
    """A file object whose writes fail with ENOSPC once the shared ``room`` is used up."""

    def __init__(self, f: Any, room: list[int]) -> None:
        self._f = f
        self._room = room

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        if n > self._room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room[0] -= n
        return self._f.write(b)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _Full:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.mark.parametrize("shards", [False, True], ids=["file", "shards"])
def test_enospc_names_the_destination_file(cli, tmp_path: Path, monkeypatch, shards) -> None:
    src = paramscope.save(values(1, n=4, numel=4096), tmp_path / "src.safetensors")
    real = os.fdopen
    budget = [25_000]  # bytes left on the "disk", over all files
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _Full(real(*a, **k), budget))
    dst = tmp_path / ("out" if shards else "out.safetensors")
    args = ["convert", str(src), str(dst)] + (["--shard-size", "20KB"] if shards else [])
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "No space left on device" in err
    named = dst / "model-00002-of-00004.safetensors" if shards else dst
    assert f"{named}" in err
    assert not dst.exists() and sorted(os.listdir(tmp_path)) == ["src.safetensors"]


def test_real_write_error_names_the_file_at_the_cli(tmp_path: Path) -> None:
    """A kernel write error (EFBIG past RLIMIT_FSIZE) names the destination, exit 2."""
    src = paramscope.save(values(1, n=4, numel=1 << 16), tmp_path / "src.safetensors")
    r = run_py(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        from paramscope.cli import main
        raise SystemExit(main(["convert", {str(src)!r}, {str(tmp_path / "out.safetensors")!r}]))
        """,
        PARAMSCOPE_DEBUG="0",
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and str(tmp_path / "out.safetensors") in r.stderr
    assert "File too large" in r.stderr


# --------------------------------------------------------------------------- 6. fuzz


def _random_folder(rng: random.Random, d: Path, outside: Path) -> None:
    d.mkdir()
    kinds = ["file", "ro", "dir", "fifo", "zero", "link-out", "temp-fifo", "temp-link", "dangling"]
    for i in range(rng.randint(1, 8)):
        kind = rng.choice(kinds)
        name = rng.choice(["config.json", "tokenizer.model", f"x{i}.bin", f"notes{i}", ".hidden"])
        p = d / f"{name}.{i}" if (d / name).exists() or os.path.lexists(d / name) else d / name
        if kind == "file":
            p.write_bytes(os.urandom(rng.randint(0, 256)))
        elif kind == "ro":
            p.write_text("ro")
            p.chmod(0o400)
        elif kind == "dir":
            p.mkdir()
            (p / "inner.safetensors").write_bytes(b"x")
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "zero":
            p.symlink_to("/dev/zero")
        elif kind == "link-out":
            p.symlink_to(outside)
        elif kind == "temp-fifo":
            os.mkfifo(d / f".{rng.choice([INDEX, 'paramscope-dcp', 'x'])}{TEMP_MARK}{i:08x}")
        elif kind == "temp-link":
            q = d / f".{INDEX}{TEMP_MARK}{i:08x}"
            q.symlink_to(outside)
            os.utime(q, (0, 0), follow_symlinks=False)
        else:
            p.symlink_to(d / "no-such-target")


def test_fuzz_folder_writers_against_odd_destinations(tmp_path: Path) -> None:
    """Random foreign entries × every folder writer: no hang, nothing foreign changes."""
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    rng = random.Random(1234)
    cases = []
    for k in range(12):
        d = tmp_path / f"case{k}"
        _random_folder(rng, d, outside)
        cases.append((d, k % 4, tree(d)))
    src = paramscope.save(values(9), tmp_path / "src.safetensors")
    script = f"""
        import json, sys, torch, paramscope
        from paramscope._convert import convert
        cases = json.loads(sys.argv[1])
        src = paramscope.load({str(src)!r})
        for d, how in cases:
            for seed in (1, 2):
                pd = {{f"w{{i}}": torch.full((64,), float(i + seed)) for i in range(5)}}
                if how == 0:
                    paramscope.save(pd, d, max_shard_size=600)
                elif how == 1:
                    paramscope.save(pd, d, max_shard_size="1MB")
                elif how == 2:
                    paramscope.save(pd, d, format="dcp")
                else:
                    convert({str(src)!r}, d, max_shard_size=600)
            got = paramscope.load(d)
            if how == 3:
                assert all(torch.equal(got[k], v) for k, v in src.items()), d
            else:
                assert torch.equal(got["w4"], torch.full((64,), 6.0)), d
            assert paramscope.verify(d).ok, d
            print(d, flush=True)
    """
    r = run_python(
        textwrap.dedent(script), json.dumps([(str(d), how) for d, how, _ in cases]), timeout=240
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(r.stdout.split()) == len(cases)
    for d, _how, before in cases:
        assert foreign_of(d, set(before)) == before, d
        assert leftovers(d) == sorted(k for k in before if TEMP_MARK in k), d
    assert outside.read_text() == "outside"


def test_write_stream_lets_go_of_each_buffer_before_the_next_is_made(tmp_path) -> None:
    """A streamed write holds no produced buffer while the producer makes the next one (small
    buffers are hashed inline, so nothing but the writer could keep them): the streaming
    operations' memory bound (two tensors for convert, inputs + 1 for merge) depends on it."""
    import gc
    import struct
    import weakref

    from paramscope._dtypes import DType
    from paramscope.io import load
    from paramscope.io._writer import Planned, write_stream

    class Buf(bytearray):  # a buffer a weak reference can watch
        pass

    names = [f"t{i}" for i in range(4)]
    plan = [Planned(n, DType.F32, [256], 1024, {}) for n in names]
    alive: list[weakref.ref] = []
    seen_alive: list[int] = []

    def chunks():
        for i, n in enumerate(names):
            gc.collect()
            seen_alive.append(sum(r() is not None for r in alive))
            buf = Buf(struct.pack("<256f", *([float(i)] * 256)))
            alive.append(weakref.ref(buf))
            yield n, buf
            del buf

    write_stream(tmp_path / "s.safetensors", plan, chunks(), fsync=False)
    assert seen_alive == [0, 0, 0, 0]
    out = load(tmp_path / "s.safetensors")
    assert [float(out[n][0]) for n in names] == [0.0, 1.0, 2.0, 3.0]
