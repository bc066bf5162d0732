"""Hugging Face style sharded checkpoints: a folder of shards and a ``*.index.json``.

The index is ``{"metadata": {"total_size": N, ...}, "weight_map": {name: shard file}}``.
Shard paths must stay inside the index's folder: absolute paths, ``..`` and symlinks leading
out are refused. Entries the index names that no shard holds, and stored entries the index
does not name, are reported with their names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._atomic import TEMP_MARK, atomic_write, clean_stale_temps
from .._enums import Format, RoleSource
from .._errors import ShardIndexError
from .._manifest import Entry, Manifest
from . import _safetensors as st

__all__ = ["SHARD_RE", "read_index", "read_sharded_manifest", "write_sharded"]

MAX_INDEX = 100_000_000
SHARD_RE = r"(.+)-(\d{5})-of-(\d{5})(\.safetensors)"


def _names(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def safe_member(folder: Path, rel: object, index: str, key: str) -> Path:
    """Resolve a shard path named by an index, refusing anything that leaves ``folder``.

    Args:
        folder: the index's folder.
        rel: the path as written in the index.
        index: the index file, for errors.
        key: the entry naming it, for errors.

    Returns:
        The shard's path.

    Raises:
        ShardIndexError: for a non-string, absolute, ``..`` or escaping-symlink path.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ShardIndexError(index, f"weight_map[{key!r}]: expected a file name, found {rel!r}")
    parts = Path(rel).parts
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or ".." in parts or "\\" in rel:
        raise ShardIndexError(
            index,
            f"weight_map[{key!r}]: shard path {rel!r} must be relative to the index's folder "
            "without '..'",
        )
    path = folder / rel
    real = Path(os.path.realpath(path))
    if os.path.commonpath([real, os.path.realpath(folder)]) != os.path.realpath(folder):
        raise ShardIndexError(
            index, f"weight_map[{key!r}]: shard {rel!r} is a link leading out of {folder}"
        )
    return path


def _no_duplicates(path: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ShardIndexError(path, f"duplicate key {k!r} in the index JSON")
            out[k] = v
        return out

    return hook


def read_index(index: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse and validate an index file.

    Args:
        index: the ``*.index.json`` path.

    Returns:
        ``(metadata, weight_map)``.

    Raises:
        ShardIndexError: malformed JSON or structure.
    """
    spath = os.fspath(index)
    size = os.path.getsize(spath)
    if size > MAX_INDEX:
        raise ShardIndexError(spath, f"index is {size} bytes, over the 100 MB limit")
    try:
        with open(spath, "rb") as f:
            obj = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_duplicates(spath))
    except ShardIndexError:
        raise
    except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, too deep, huge ints
        raise ShardIndexError(spath, f"index is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("weight_map"), dict):
        raise ShardIndexError(spath, "index: expected an object with a 'weight_map' object")
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ShardIndexError(spath, f"index metadata: expected an object, found {meta!r}")
    return meta, obj["weight_map"]


def read_sharded_manifest(index: str | os.PathLike[str]) -> Manifest:
    """The union manifest of an index and its shards, checked against each other.

    Args:
        index: the ``*.index.json`` file.

    Returns:
        A :class:`Manifest` with format ``sharded``.

    Raises:
        ShardIndexError: unsafe paths, names missing on either side, duplicates.
        HeaderError: a shard's header is malformed.
    """
    # shards may be any format (e.g. pytorch_model-0000x.bin)
    from . import detect_format, read_manifest

    spath = os.fspath(index)
    folder = Path(spath).parent
    meta, weight_map = read_index(spath)
    shards: dict[str, Path] = {}
    for key, rel in weight_map.items():
        if not isinstance(rel, str) or rel not in shards:  # check each shard path once
            shards[rel] = safe_member(folder, rel, spath, key)
    entries: dict[str, Entry] = {}
    where: dict[str, str] = {}
    exact = True
    files = [spath]
    user_meta: dict[str, str] = {}
    for rel, path in shards.items():
        try:
            exists = path.is_file()
        except OSError:  # e.g. a name too long for the file system
            exists = False
        if not exists:
            raise ShardIndexError(spath, f"shard {rel!r} named by the index does not exist")
        if detect_format(path) is Format.SHARDED:  # an index as a shard: endless recursion
            raise ShardIndexError(spath, f"shard {rel!r} is itself an index, not a weights file")
        m = read_manifest(path)
        files.append(os.fspath(path))
        exact = exact and m.roles is RoleSource.EXACT
        user_meta.update(m.metadata)
        for name, e in m.items():
            if name in entries:
                raise ShardIndexError(
                    spath, f"entry {name!r} is stored in both {where[name]!r} and {rel!r}"
                )
            entries[name] = e
            where[name] = rel
    stored = {n for n, e in entries.items() if e.tie is None}
    not_held = [k for k in weight_map if k not in stored and k not in entries]
    if not_held:
        raise ShardIndexError(
            spath, f"the index names {len(not_held)} entries no shard holds: {_names(not_held)}"
        )
    misplaced = [k for k in weight_map if k in where and where[k] != weight_map[k]]
    if misplaced:
        k = misplaced[0]
        raise ShardIndexError(
            spath, f"entry {k!r}: the index says {weight_map[k]!r}, it is stored in {where[k]!r}"
        )
    unnamed = [n for n in stored if n not in weight_map]
    if unnamed:
        raise ShardIndexError(
            spath,
            f"shards hold {len(unnamed)} entries the index does not name: "
            f"{_names(sorted(unnamed))}",
        )
    total = meta.get("total_size")
    notes = []
    actual = sum(e.nbytes for e in entries.values() if e.tie is None)
    if isinstance(total, int) and total != actual:
        notes.append(f"index metadata total_size is {total}, the shards hold {actual} bytes")
    return Manifest(
        list(entries.values()),
        format=Format.SHARDED,
        source=spath,
        roles=RoleSource.EXACT if exact else RoleSource.INFERRED,
        metadata=user_meta,
        files=files,
        notes=notes,
    )


def plan_shards(sizes: Sequence[tuple[str, int]], max_size: int) -> list[list[str]]:
    """Split entries into shards of at most ``max_size`` bytes, in order (as HF does).

    An entry larger than ``max_size`` gets a shard of its own.

    Args:
        sizes: ``(name, bytes)`` in save order.
        max_size: the shard size limit.

    Returns:
        Lists of names, one per shard.

    Example:
        >>> plan_shards([("a", 4), ("b", 4), ("c", 9)], 8)
        [['a', 'b'], ['c']]
    """
    shards: list[list[str]] = [[]]
    current = 0
    for name, n in sizes:
        if shards[-1] and current + n > max_size:
            shards.append([])
            current = 0
        shards[-1].append(name)
        current += n
    return [s for s in shards if s]


def shard_name(k: int, n: int, prefix: str = "model") -> str:
    """The Hugging Face file name of shard ``k`` of ``n``.

    Args:
        k: 1-based shard number.
        n: number of shards.
        prefix: file name stem.

    Returns:
        E.g. ``model-00001-of-00003.safetensors``.

    Example:
        >>> shard_name(1, 3)
        'model-00001-of-00003.safetensors'
    """
    return f"{prefix}-{k:05d}-of-{n:05d}.safetensors"


def write_index(
    index: Path, weight_map: Mapping[str, str], total: int, *, fsync: bool = True
) -> None:
    """Write an HF ``*.safetensors.index.json`` atomically.

    Args:
        index: the index path.
        weight_map: entry name → shard file.
        total: bytes of tensor data over all shards (``metadata.total_size``).
        fsync: flush before the rename.
    """
    body = {"metadata": {"total_size": total, "format": "pt"}, "weight_map": dict(weight_map)}
    with atomic_write(index, fsync=fsync) as f:
        f.write(json.dumps(body, indent=2).encode())


def write_sharded(
    folder: str | os.PathLike[str],
    entries: Sequence[st.StoredEntry],
    *,
    max_size: int,
    aliases: Mapping[str, str],
    alias_meta: Mapping[str, dict[str, Any]],
    metadata: Mapping[str, str],
    prefix: str = "model",
    fsync: bool = True,
) -> Path:
    """Write ``prefix-0000k-of-0000N.safetensors`` shards and ``prefix.safetensors.index.json``.

    With one shard only, writes ``prefix.safetensors`` and no index (as Hugging Face does).
    Every file is written atomically; the index is written last, then the files of an earlier
    save that the new one does not use (shards, index, single file) are removed.

    Args:
        folder: destination folder (created).
        entries: tensors to store.
        max_size: shard size limit in bytes.
        aliases: alias → stored name.
        alias_meta: paramscope metadata of the aliases.
        metadata: free str → str metadata, copied into each shard.
        prefix: file name stem.
        fsync: flush each file to disk before it is renamed into place.

    Returns:
        The index path, or the single file's path.
    """
    import re

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)
    by_name = {e.name: e for e in entries}
    sizes = [(e.name, e.tensor.element_size() * e.tensor.numel()) for e in entries]
    plan = plan_shards(sizes, max_size)
    pattern = re.compile(re.escape(prefix) + r"-\d{5}-of-\d{5}\.safetensors")
    single = folder / f"{prefix}.safetensors"
    index = folder / f"{prefix}.safetensors.index.json"
    if len(plan) <= 1:
        st.write_file(
            single,
            entries,
            aliases=aliases,
            alias_meta=alias_meta,
            metadata=metadata,
            fsync=fsync,
        )
        # An index left by an earlier sharded save would win over the new file when the
        # folder is read: remove it first, then its shards.
        if index.is_file():
            index.unlink()
        _remove_stale_shards(folder, pattern, keep=set())
        return single
    weight_map: dict[str, str] = {}
    total = 0
    n = len(plan)
    for k, names in enumerate(plan, 1):
        fname = shard_name(k, n, prefix)
        held = set(names)
        mine = {a: t for a, t in aliases.items() if t in held}
        total += st.write_file(
            folder / fname,
            [by_name[x] for x in names],
            aliases=mine,
            alias_meta={a: dict(alias_meta.get(a, {})) for a in mine},
            metadata=metadata,
            fsync=fsync,
        )
        weight_map.update(dict.fromkeys(names, fname))
    write_index(index, weight_map, total, fsync=fsync)
    _remove_stale_shards(folder, pattern, keep=set(weight_map.values()))
    if single.is_file():  # the single file of an earlier unsharded save
        single.unlink()
    return index


def _remove_stale_shards(folder: Path, pattern: Any, keep: set[str]) -> None:
    for p in folder.iterdir():
        if pattern.fullmatch(p.name) and p.name not in keep and TEMP_MARK not in p.name:
            p.unlink()
