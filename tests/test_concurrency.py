"""Concurrency: threaded lazy reads, atomic replacement under readers, concurrent savers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import paramscope

TEMP_MARK = ".paramscope-tmp-"
NAMES = [f"block{i}.weight" for i in range(12)]


def version(v: int) -> dict[str, torch.Tensor]:
    """Version ``v``: every element of every tensor encodes (v, tensor index)."""
    return {n: torch.full((64, 128), float(v * 1000 + i)) for i, n in enumerate(NAMES)}


def originals(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(128, 96, generator=g) for n in NAMES}


def test_eight_threads_read_one_file_lazily(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    data = originals(0)
    paramscope.save(data, path)
    shared = paramscope.load(path)
    barrier = threading.Barrier(8)

    def reader(k: int) -> int:
        own = paramscope.load(path)
        barrier.wait()
        checked = 0
        for rnd in range(20):
            # different tensors per thread, plus the same ones in every thread
            for n in [NAMES[(k + rnd) % len(NAMES)], NAMES[0], NAMES[-1]]:
                for pd in (own, shared):
                    assert torch.equal(pd[n], data[n]), (k, n)
                    checked += 1
        return checked

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(reader, range(8)))
    assert counts == [20 * 3 * 2] * 8


def test_reader_keeps_old_version_across_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    paramscope.save(version(1), path)
    held = paramscope.load(path)
    first = held[NAMES[0]]  # touched before the replace
    paramscope.save(version(2), path)
    # The old inode stays mapped: every tensor, touched before or after, is version 1.
    assert torch.equal(first, version(1)[NAMES[0]])
    for n, t in version(1).items():
        assert torch.equal(held[n], t), n
    fresh = paramscope.load(path)
    for n, t in version(2).items():
        assert torch.equal(fresh[n], t), n
    assert not [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]


def test_concurrent_savers_and_loaders_see_whole_versions(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    paramscope.save(version(0), path)
    stop = threading.Event()
    seen: list[int] = []
    lock = threading.Lock()

    def saver(k: int) -> int:
        saved = 0
        for rnd in range(6):
            paramscope.save(version(1 + k * 10 + rnd), path)
            saved += 1
        return saved

    def loader(_: int) -> int:
        loads = 0
        while (not stop.is_set() or loads < 3) and loads < 10_000:
            pd = paramscope.load(path)
            assert sorted(pd) == sorted(NAMES)
            vs = {(int(pd[n][0, 0]) - i) // 1000 for i, n in enumerate(NAMES)}
            assert len(vs) == 1, f"mixed versions {vs}"
            v = vs.pop()
            for i, n in enumerate(NAMES):  # each tensor whole, of that version
                assert torch.equal(pd[n], torch.full((64, 128), float(v * 1000 + i))), (v, n)
            with lock:
                seen.append(v)
            loads += 1
        return loads

    with ThreadPoolExecutor(8) as pool:
        loads = [pool.submit(loader, k) for k in range(4)]
        saves = [pool.submit(saver, k) for k in range(4)]
        try:
            assert [f.result() for f in saves] == [6] * 4
        finally:
            stop.set()
        assert all(f.result() >= 3 for f in loads)
    valid = {0} | {1 + k * 10 + r for k in range(4) for r in range(6)}
    assert set(seen) <= valid and len(seen) >= 12
    final = paramscope.load(path)
    v = int(final[NAMES[0]][0, 0]) // 1000
    assert v in valid - {0}
    assert paramscope.verify(path).ok
    assert not [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]


def test_concurrent_sharded_savers_into_one_folder_leave_one_whole_version(
    tmp_path: Path,
) -> None:
    """Writers of one folder commit one at a time (a lock on the folder), beside a user's files."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "sub").mkdir()
    (folder / "sub" / "keep.txt").write_text("mine")
    ino = (folder / "config.json").stat().st_ino
    paramscope.save(version(0), folder, max_shard_size=70_000)
    sizes = [70_000, 70_000, 100_000, "1MB"]  # 6, 6, 4 shards, one file: names collide

    def saver(k: int) -> int:
        for rnd in range(4):
            size = sizes[(k + rnd) % len(sizes)]
            paramscope.save(version(1 + k * 10 + rnd), folder, max_shard_size=size)
        return 4

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(saver, range(4))) == [4] * 4
    pd = paramscope.load(folder)
    vs = {(int(pd[n][0, 0]) - i) // 1000 for i, n in enumerate(NAMES)}
    assert len(vs) == 1 and vs.pop() in {1 + k * 10 + r for k in range(4) for r in range(4)}
    assert paramscope.verify(folder).ok
    assert (folder / "config.json").stat().st_ino == ino
    assert (folder / "sub" / "keep.txt").read_text() == "mine"
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if TEMP_MARK in n]
    own = [n for n in names if n not in ("config.json", "sub")]
    if "model.safetensors" in own:
        assert own == ["model.safetensors"]
    else:
        n = len(own) - 1
        shards = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
        assert own == sorted([*shards, "model.safetensors.index.json"])


def test_a_temp_folder_taken_by_a_cleaner_before_it_is_opened_is_made_again(
    tmp_path: Path, monkeypatch
) -> None:
    """Between making a temp folder and opening it to lock it, another writer's cleaner may
    remove it (it is not locked yet): the writer makes a new one instead of failing."""
    import os
    import shutil

    from paramscope import _atomic

    real_open = os.open
    taken: list[str] = []

    def racing_open(path, flags, *args, **kwargs):  # the cleaner wins the first race
        if (
            not taken
            and _atomic.TEMP_MARK in str(path)
            and "dir_fd" not in kwargs
            and os.path.isdir(path)
        ):
            taken.append(os.fspath(path))
            shutil.rmtree(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(_atomic.os, "open", racing_open)
    with _atomic.temp_folder(tmp_path, "ckpt") as tmp:
        assert tmp.is_dir() and os.fspath(tmp) != taken[0]
    assert len(taken) == 1 and not any(tmp_path.iterdir())
