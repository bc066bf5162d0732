"""Hugging Face style sharded checkpoints: a folder of shards and a ``*.index.json``.

The index is ``{"metadata": {"total_size": N, ...}, "weight_map": {name: shard file}}``.
Shard paths must stay inside the index's folder: absolute paths, ``..`` and symlinks leading
out are refused. Entries the index names that no shard holds, and stored entries the index
does not name, are reported with their names. The index is refused unread when it is not a
regular file (a FIFO, ``/dev/zero``) or is over 100 MB.

Writing (:func:`write_shards`) builds the files aside and commits them into the folder with the
index as the commit point, touching none of the folder's other files.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._atomic import (
    BACKUP_MARK,
    TEMP_MARK,
    atomic_write,
    clean_stale_temps,
    folder_lock,
    fsync_dir,
    name_error,
    remove_own,
    temp_folder,
)
from .._enums import Format, RoleSource
from .._errors import FormatError, ShardIndexError, SourceNotFoundError, WriteError
from .._manifest import Entry, Manifest
from . import _writer
from ._source import open_source

__all__ = [
    "SHARD_RE",
    "read_index",
    "read_sharded_manifest",
    "write_planned",
    "write_sharded",
    "write_shards",
]

MAX_INDEX = 100_000_000
SHARD_RE = r"(.+)-(\d{5})-of-(\d{5})(\.safetensors)"


def _names(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


#: Remote shards whose headers are fetched at once.
REMOTE_POOL = 8


def safe_member(folder: Any, rel: object, index: str, key: str) -> Any:
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
    from ._remote import RemotePath

    if isinstance(folder, RemotePath):  # object stores and web servers have no links
        return path
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

    The index must be a regular file (a symlink to one is fine) of at most 100 MB: a FIFO, a
    device such as ``/dev/zero`` or a socket is refused without being read (it is opened
    without blocking and checked on the open descriptor), and at most the limit is read.

    Args:
        index: the ``*.index.json`` path.

    Returns:
        ``(metadata, weight_map)``.

    Raises:
        ShardIndexError: not a regular file, over the size limit, malformed JSON or structure.

    Example:
        >>> import tempfile, torch
        >>> from paramscope.io import save
        >>> sd = {"a": torch.ones(30, 4), "b": torch.ones(30, 4)}  # 480 bytes each
        >>> index = save(sd, f"{tempfile.mkdtemp()}/ckpt", max_shard_size="500B")
        >>> meta, weight_map = read_index(index)
        >>> meta
        {'total_size': 960, 'format': 'pt'}
        >>> weight_map
        {'a': 'model-00001-of-00002.safetensors', 'b': 'model-00002-of-00002.safetensors'}
    """
    spath = os.fspath(index)
    try:
        src = open_source(spath)
    except ShardIndexError:
        raise
    except FormatError as exc:
        raise ShardIndexError(spath, f"index: {exc.problem}") from None
    try:
        size = src.size
        if size > MAX_INDEX:
            raise ShardIndexError(spath, f"index is {size} bytes, over the 100 MB limit")
        raw = src.read_at(0, MAX_INDEX + 1)
    finally:
        src.close()
    if len(raw) > MAX_INDEX:  # grew while being read
        raise ShardIndexError(spath, f"index is over {MAX_INDEX} bytes, the 100 MB limit")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates(spath))
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
    from . import detect_format, read_resolved
    from ._remote import RemotePath, as_path

    spath = os.fspath(index)
    folder = as_path(spath).parent
    meta, weight_map = read_index(spath)
    shards: dict[str, Any] = {}
    for key, rel in weight_map.items():
        if not isinstance(rel, str) or rel not in shards:  # check each shard path once
            shards[rel] = safe_member(folder, rel, spath, key)
    remote = isinstance(folder, RemotePath)

    def shard(rel: str, path: Any) -> Manifest:
        if not remote:  # (remote: the first read says so, without a request of its own)
            try:
                exists = path.is_file()
            except OSError:  # e.g. a name too long for the file system
                exists = False
            if not exists:
                raise ShardIndexError(spath, f"shard {rel!r} named by the index does not exist")
        try:
            # remote: one source for the detection and the header, so the first bytes it
            # keeps serve both (one request fewer per shard)
            src = open_source(path) if remote else None
        except SourceNotFoundError:
            msg = f"shard {rel!r} named by the index does not exist"
            raise ShardIndexError(spath, msg) from None
        try:
            shard_format = detect_format(src if src is not None else path)
            if shard_format is Format.SHARDED:  # an index as a shard: endless recursion
                msg = f"shard {rel!r} is itself an index, not a weights file"
                raise ShardIndexError(spath, msg)
            if src is not None and shard_format is Format.SAFETENSORS:
                from . import _safetensors

                return _safetensors.read_manifest(src)
            return read_resolved(path, shard_format)  # layouts are marked once, on the whole
        except SourceNotFoundError:
            msg = f"shard {rel!r} named by the index does not exist"
            raise ShardIndexError(spath, msg) from None
        finally:
            if src is not None:
                src.close()

    if remote and len(shards) > 1:  # the headers of remote shards are fetched concurrently
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(REMOTE_POOL, len(shards))) as pool:
            read = dict(zip(shards, pool.map(lambda kv: shard(*kv), shards.items()), strict=True))
    else:
        read = {}
    entries: dict[str, Entry] = {}
    where: dict[str, str] = {}
    exact = True
    files = [spath]
    user_meta: dict[str, str] = {}
    for rel, path in shards.items():
        m = read[rel] if rel in read else shard(rel, path)
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
    entries: Sequence[_writer.StoredEntry],
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
    The checkpoint replaces the folder's previous one atomically (see :func:`write_shards`);
    the folder's other files and subfolders are never touched.

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

    Example:
        >>> import tempfile, torch
        >>> from paramscope.io import load
        >>> from paramscope.io._writer import StoredEntry
        >>> entries = [StoredEntry(n, torch.ones(30, 4), {"role": "param"}) for n in "ab"]
        >>> index = write_sharded(f"{tempfile.mkdtemp()}/ckpt", entries, max_size=500,
        ...                       aliases={"c": "a"}, alias_meta={}, metadata={})
        >>> index.name, sorted(load(index)), read_index(index)[1]["b"]
        ('model.safetensors.index.json', ['a', 'b', 'c'], 'model-00002-of-00002.safetensors')
    """
    by_name = {e.name: e for e in entries}
    sizes = [(e.name, e.tensor.element_size() * e.tensor.numel()) for e in entries]
    plan = plan_shards(sizes, max_size)

    def write_one(path: Path, names: list[str]) -> int:
        held = set(names)
        mine = {a: t for a, t in aliases.items() if t in held}
        return _writer.write_file(
            path,
            [by_name[x] for x in names],
            aliases=mine,
            alias_meta={a: dict(alias_meta.get(a, {})) for a in mine},
            metadata=metadata,
            fsync=fsync,
        )

    if not plan:  # nothing stored: one empty file carrying the aliases' metadata, if any
        plan = [[]]
    out, _ = write_shards(folder, plan, write_one, prefix=prefix, fsync=fsync)
    return out


def write_planned(
    dst: str | os.PathLike[str],
    plan: Sequence[_writer.Planned],
    chunks_of: Callable[[list[str]], Any],
    *,
    aliases: Mapping[str, str],
    alias_meta: Mapping[str, Mapping[str, Any]],
    metadata: Mapping[str, str],
    max_shard_size: int | None = None,
    fsync: bool = True,
    what: str = "write",
) -> int:
    """Write planned entries, streamed, as one safetensors file or as HF shards, atomically.

    The one output path of the streaming operations (``convert``, ``merge``): the plan says
    every entry's name, dtype, shape and bytes before any value exists; ``chunks_of(names)``
    yields ``(name, bytes)`` for those names in that order, one tensor alive at a time.

    Args:
        dst: a ``.safetensors`` file (``max_shard_size=None``) or a folder (shards and an
            index; one ``model.safetensors`` when everything fits in one shard).
        plan: the entries, in the order they are written.
        chunks_of: names → iterator of ``(name, buffer)`` in that order.
        aliases: alias → stored name.
        alias_meta: paramscope metadata of the aliases.
        metadata: free str → str metadata, copied into each file.
        max_shard_size: shard limit in bytes, or ``None`` for one file.
        fsync: flush each file before it is renamed into place.
        what: the operation's name, for the error when ``dst`` is a folder.

    Returns:
        The number of files written.

    Raises:
        WriteError: ``dst`` is a folder and no ``max_shard_size`` was given.

    Example:
        >>> import tempfile, torch
        >>> from paramscope.io import load
        >>> from paramscope.io._writer import Planned, tensor_bytes
        >>> from paramscope._dtypes import DType
        >>> t = {"a": torch.ones(3), "b": torch.zeros(2)}
        >>> plan = [Planned(k, DType.F32, list(v.shape), 4 * v.numel(), {}) for k, v in t.items()]
        >>> dst = f"{tempfile.mkdtemp()}/out"
        >>> write_planned(dst, plan, lambda names: ((k, tensor_bytes(t[k])) for k in names),
        ...               aliases={}, alias_meta={}, metadata={}, max_shard_size=12)
        2
        >>> sorted(load(dst))
        ['a', 'b']
    """
    if max_shard_size is None:
        if Path(dst).is_dir():
            raise WriteError(
                f"{what}: dst={os.fspath(dst)!r} is a folder; give a .safetensors file name, or "
                "max_shard_size= (--shard-size) to write shards into it"
            )
        _writer.write_stream(
            dst,
            plan,
            chunks_of([p.name for p in plan]),
            aliases=aliases,
            alias_meta=alias_meta,
            metadata=metadata,
            fsync=fsync,
        )
        return 1
    by_name = {p.name: p for p in plan}
    groups = plan_shards([(p.name, p.nbytes) for p in plan], max_shard_size) or [[]]

    def write_one(path: Path, names: list[str]) -> int:
        held = set(names)
        mine = {a: t for a, t in aliases.items() if t in held}
        return _writer.write_stream(
            path,
            [by_name[x] for x in names],
            chunks_of(names),
            aliases=mine,
            alias_meta={a: alias_meta[a] for a in mine if a in alias_meta},
            metadata=metadata,
            fsync=fsync,
        )

    _, n = write_shards(dst, groups, write_one, fsync=fsync)
    return n


def _own_patterns(prefix: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(shard file names, backups of shard or single file names) of one checkpoint prefix."""
    p = re.escape(prefix)
    shard = re.compile(p + r"-\d{5}-of-\d{5}\.safetensors")
    backup = re.compile(
        r"\." + p + r"(?:-\d{5}-of-\d{5})?\.safetensors" + re.escape(BACKUP_MARK) + r"[0-9a-f]+"
    )
    return shard, backup


def _other_index(folder: Path, index_name: str) -> str | None:
    """An index file in ``folder`` other than ours: a reader would pick it over a single file."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    for name in sorted(names):
        if name.endswith(".index.json") and name != index_name and TEMP_MARK not in name:
            try:
                if stat.S_ISREG(os.stat(folder / name).st_mode):
                    return name
            except OSError:
                continue
    return None


def _write_shards_remote(
    url: str,
    groups: Sequence[Sequence[str]],
    write_one: Callable[[Path, list[str]], int],
    *,
    prefix: str,
) -> tuple[Any, int]:
    """:func:`write_shards` into a remote folder: the files are written into a local temp
    folder, then uploaded one by one, each object visible only once complete, the index last
    (a reader of the folder sees no index until every shard it names is there). The remote
    folder's other objects are not touched; shards of an earlier checkpoint with the same
    names are overwritten object by object."""
    import tempfile

    from .._atomic import upload
    from ._remote import RemotePath

    with tempfile.TemporaryDirectory(prefix="paramscope-shards-") as tmp:
        out, n = write_shards(Path(tmp, "out"), groups, write_one, prefix=prefix, fsync=False)
        names = sorted(f for f in os.listdir(out.parent) if not f.startswith("."))
        index = [f for f in names if f.endswith(".index.json")]
        for name in [f for f in names if f not in index] + index:
            upload(out.parent / name, f"{url.rstrip('/')}/{name}")
    return RemotePath(url) / out.name, n


def write_shards(
    folder: str | os.PathLike[str],
    groups: Sequence[Sequence[str]],
    write_one: Callable[[Path, list[str]], int],
    *,
    prefix: str = "model",
    fsync: bool = True,
) -> tuple[Path, int]:
    """Write a sharded (or single-file) safetensors checkpoint into a folder, atomically.

    Every file is first written into a locked temp folder (inside ``folder``, or beside it
    when ``folder`` does not exist yet) and fsynced. A new ``folder`` is then the temp folder
    renamed into place. An existing one receives only the checkpoint's own files, under
    :func:`~paramscope._atomic.folder_lock`, with the index as the commit point:

    1. an old shard that a new one will overwrite and that the old index names is first
       hard-linked (or copied) to a backup ``.NAME.paramscope-tmp-bak-XXXX``, and the old index
       is atomically rewritten to name the backups (still the previous checkpoint);
    2. the new shards are renamed to their final names;
    3. the new index is renamed into place (for one shard: ``prefix.safetensors`` is in place
       and the old index is removed);
    4. the previous checkpoint's own files are removed: shards of ``prefix`` the new index
       does not name, backups, and ``prefix.safetensors`` when an index was written.

    At every instant the folder reads as the previous checkpoint or the new one. Other files
    and subfolders are never touched; a killed writer's temps and backups are removed by the
    next write (backups only after its commit, as the index on disk may name them). With one
    shard, an index is still written (``prefix-00001-of-00001.safetensors``) when another
    ``*.index.json`` in the folder would hide a lone ``prefix.safetensors`` from readers.

    Args:
        folder: the destination folder (created with its parents).
        groups: the entry names of each shard, in order.
        write_one: ``write_one(path, names)`` writes one shard file (atomically) and returns
            its bytes of tensor data.
        prefix: file name stem.
        fsync: flush files and folders to disk.

    Returns:
        ``(the index or single file written, number of weight files)``.

    Raises:
        WriteError: ``folder`` is a file, holds a DCP checkpoint (``.metadata``, which
            readers would pick instead), or one of the names to write is a folder.

    Example:
        >>> import tempfile, torch
        >>> from paramscope.io._writer import StoredEntry, write_file
        >>> tensors = {"a": torch.ones(2), "b": torch.zeros(3)}
        >>> def write_one(path: str, names: list[str]) -> int:
        ...     return write_file(path, [StoredEntry(n, tensors[n], {}) for n in names])
        >>> index, files = write_shards(f"{tempfile.mkdtemp()}/ckpt", [["a"], ["b"]], write_one)
        >>> index.name, files, read_index(index)[0]["total_size"]
        ('model.safetensors.index.json', 2, 20)
    """
    from .._files import is_url

    if is_url(folder) and not os.fspath(folder).lower().startswith("file://"):
        return _write_shards_remote(os.fspath(folder), groups, write_one, prefix=prefix)
    folder = Path(folder)
    index_name = f"{prefix}.safetensors.index.json"
    exists = os.path.lexists(folder)
    if exists and not folder.is_dir():
        raise WriteError(
            f"{folder}: is a file, and shards go into a folder; give a folder path, or "
            "drop max_shard_size= to write one file"
        )
    if exists and (folder / ".metadata").is_file():
        raise WriteError(
            f"{folder}: holds a DCP checkpoint (.metadata), which readers pick before "
            "safetensors shards; remove its files (.metadata, __*_*.distcp, paramscope.json) "
            "or choose another folder"
        )
    n = len(groups)
    indexed = n > 1 or (exists and _other_index(folder, index_name) is not None)
    names = (
        [shard_name(k, n, prefix) for k in range(1, n + 1)]
        if indexed
        else [f"{prefix}.safetensors"]
    )
    if exists:
        for name in [*names, index_name]:
            if (folder / name).is_dir() and not (folder / name).is_symlink():
                raise WriteError(
                    f"{folder / name}: is a folder where a checkpoint file goes; remove it, "
                    "or choose another folder"
                )
        parent, stem = folder, index_name
    else:
        parent, stem = folder.parent if str(folder.parent) else Path("."), folder.name
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise name_error(exc, parent) from exc
    clean_stale_temps(parent, stem)  # temp folders a killed writer left
    if exists:  # and whole temp folders beside it (a killed writer of a new folder)
        clean_stale_temps(folder.parent if str(folder.parent) else Path("."), folder.name)
    with temp_folder(parent, stem) as tmp:
        weight_map: dict[str, str] = {}
        total = 0
        for fname, group in zip(names, groups, strict=True):
            try:
                total += write_one(tmp / fname, list(group))
            except OSError as exc:  # name the destination, not the temp folder
                where = exc.filename
                if where is None or (isinstance(where, str) and where.startswith(str(tmp))):
                    raise OSError(exc.errno, exc.strerror, os.fspath(folder / fname)) from exc
                raise
            weight_map.update(dict.fromkeys(group, fname))
        if indexed:
            write_index(tmp / index_name, weight_map, total, fsync=fsync)
        out = folder / (index_name if indexed else names[0])
        if not exists:
            try:
                os.rename(tmp, folder)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    raise name_error(exc, folder) from exc
                # the folder appeared meanwhile: commit into it like into any existing folder
            else:
                if fsync:
                    fsync_dir(parent)
                return out, n
        with folder_lock(folder):
            _commit(tmp, folder, names, index_name if indexed else None, prefix, fsync)
    return out, n


def _old_index(index: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The metadata and weight map of the index now in place; empty if absent or malformed.

    An index that exists but cannot be read (``EIO``, ``EACCES``) stops the write: its shards
    could not be kept whole while new ones take their names.
    """
    if not os.path.lexists(index):
        return {}, {}
    try:
        meta, wm = read_index(index)
    except FormatError:  # not JSON, not a regular file, a dangling link: no checkpoint to keep
        return {}, {}
    except FileNotFoundError:
        return {}, {}
    return meta, {str(k): v for k, v in wm.items() if isinstance(v, str)}


def _backup(src: Path, folder: Path) -> str:
    """Keep ``src`` alive under a backup name (a hard link, else a copy); return that name."""
    import shutil

    bak = folder / f".{src.name}{BACKUP_MARK}{secrets.token_hex(4)}"
    try:
        os.link(src, bak, follow_symlinks=False)
        return bak.name
    except FileNotFoundError:
        raise
    except OSError:  # no hard links here (some network and FAT file systems): copy
        pass
    try:
        with open(src, "rb") as fin, atomic_write(bak) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise name_error(exc, bak) from exc
    return bak.name


def _commit(
    tmp: Path, folder: Path, names: list[str], index_name: str | None, prefix: str, fsync: bool
) -> None:
    """Move the files built in ``tmp`` into ``folder`` (steps 1-4 of :func:`write_shards`)."""
    index = folder / f"{prefix}.safetensors.index.json"
    meta, old = _old_index(index)
    referenced = {os.path.normpath(v) for v in old.values()}
    backups: dict[str, str] = {}
    for name in names:
        if name in referenced and os.path.lexists(folder / name):
            try:
                backups[name] = _backup(folder / name, folder)
            except FileNotFoundError:
                continue
    if backups:  # step 1: the old index names the backups (still the old checkpoint)
        if fsync:
            fsync_dir(folder)
        body = {
            "metadata": meta,
            "weight_map": {k: backups.get(os.path.normpath(v), v) for k, v in old.items()},
        }
        with atomic_write(index, fsync=fsync) as f:
            f.write(json.dumps(body, indent=2).encode())
    for name in names:  # step 2: new shards in place (the old index does not see them)
        os.replace(tmp / name, folder / name)
    if fsync:
        fsync_dir(folder)
    if index_name is not None:  # step 3: the commit point
        os.replace(tmp / index_name, index)
    elif os.path.lexists(index):
        remove_own(index)
    if fsync:
        fsync_dir(folder)
    shard, backup = _own_patterns(prefix)  # step 4: the previous checkpoint's files
    keep = set(names)
    single = f"{prefix}.safetensors"
    for entry in os.listdir(folder):
        stale_shard = shard.fullmatch(entry) is not None and entry not in keep
        stale_single = entry == single and index_name is not None
        if stale_shard or stale_single or backup.fullmatch(entry):
            remove_own(folder / entry)
