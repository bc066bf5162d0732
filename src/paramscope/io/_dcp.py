"""torch.distributed.checkpoint (DCP) folders, read without running any code from the file.

A DCP checkpoint is a folder: ``.metadata`` (a pickle of
``torch.distributed.checkpoint.metadata.Metadata``: every tensor's global size, dtype and the
chunks each rank wrote) and the chunk files ``__<rank>_<n>.distcp``. DCP itself reads
``.metadata`` with plain ``pickle.load``, so a crafted file could run code. paramscope reads it
with a restricted unpickler instead (:mod:`._dcp_pickle`, :data:`ALLOWED_GLOBALS`): only DCP's
own metadata classes and the few torch / standard-library globals they refer to
(``torch.Size``, torch dtypes, ``torch.serialization._get_layout``, ``pathlib`` paths, kept as
plain strings) are admitted, each as a builder of fresh values, never the real class; any
other global is refused with :class:`UnsafePickleError` before anything is called, and
``BUILD`` may only fill the known fields of a DCP object the file itself created, so the file
cannot change any object of the process. Every field is then checked, and each tensor's chunks
must tile its global size exactly and fit in their chunk files' bytes before anything is
allocated (:func:`.check_metadata`, :func:`.check_chunk_files`). :func:`load_dcp` hands DCP a
storage reader (:class:`SafeFileSystemReader`) that reads ``.metadata`` this same way, so the
file DCP acts on is the file that was checked, and checks afterwards that every element of
every tensor was filled from a chunk; the chunk files are read by DCP with
``torch.load(weights_only=True)``.

paramscope's own metadata (roles, trainable flags, tags, extra, ties, free metadata) lives in
a JSON sidecar ``paramscope.json`` beside ``.metadata``::

    {"format": "paramscope-dcp", "version": 2,
     "entries": {name: {"role", "trainable", "tags"?, "extra"?}, ...},   # every name, in order
     "aliases": {alias: stored name, ...},                              # ties
     "metadata": {str: str, ...}}

Ties are written as DCP itself writes a tied ``state_dict``: every name of a tie group has its
own item (and its own bytes) in ``.metadata``, so plain ``torch.distributed.checkpoint.load``
into the model the checkpoint came from finds every key. The sidecar's ``aliases`` says which
names are one tensor, so :func:`load_dcp` gives them back as one object and counting counts
them once. Version 1 sidecars (paramscope before that) stored each tie once, under its stored
name only; they are still read.

Without a sidecar (a checkpoint written by other DCP code) roles are inferred and ties are
unknown: DCP keeps no trace of shared storage.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import metadata as _md
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from .._atomic import atomic_write
from .._dtypes import DType
from .._enums import Format, Role, RoleSource
from .._errors import ArgumentTypeError, FormatError, SourceNotFoundError, WriteError
from .._manifest import Entry, Manifest, infer_role
from .._names import Pattern, compile_pattern
from ._dcp_layout import check_chunk_files, check_metadata
from ._dcp_pickle import ALLOWED_GLOBALS, DcpUnpickler, unpickle
from ._source import as_file, opened

if TYPE_CHECKING:
    from .._paramdict import ParamDict

__all__ = [
    "ALLOWED_GLOBALS",
    "METADATA_NAME",
    "SIDECAR_NAME",
    "SafeFileSystemReader",
    "is_dcp_dir",
    "iter_dcp_tensors",
    "load_dcp",
    "read_dcp_manifest",
    "read_dcp_metadata",
    "save_dcp",
]

METADATA_NAME = ".metadata"
SIDECAR_NAME = "paramscope.json"
SIDECAR_FORMAT = "paramscope-dcp"
SIDECAR_VERSION = 2
#: Sidecar versions this module reads (1: ties stored once; 2: every name stored).
SIDECAR_VERSIONS = (1, 2)

#: The format tag of DCP manifests.
_FORMAT: Format = Format.DCP


#: The restricted unpickler of ``.metadata`` (see :mod:`._dcp_pickle`).
_DcpUnpickler = DcpUnpickler


def is_dcp_dir(path: str | os.PathLike[str]) -> bool:
    """Whether a path is a DCP checkpoint folder (a folder holding a ``.metadata`` file).

    Args:
        path: any path.

    Returns:
        ``True`` for a folder with ``.metadata`` in it.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> is_dcp_dir(d), is_dcp_dir(save_dcp({"w": torch.ones(2)}, f"{d}/ckpt"))
        (False, True)
    """
    from ._remote import as_path

    p = as_path(path)
    return p.is_dir() and (p / METADATA_NAME).is_file()


def _metadata_file(path: str | os.PathLike[str]) -> Any:
    from ._remote import as_path

    p = as_path(path)  # a URL: the manifest comes from .metadata with range requests
    if not p.exists():
        raise SourceNotFoundError(p)
    if p.is_file() and p.name == METADATA_NAME:
        return p
    if not is_dcp_dir(p):
        raise FormatError(p, f"not a DCP checkpoint: expected a folder holding {METADATA_NAME}")
    return p / METADATA_NAME


def read_dcp_metadata(path: str | os.PathLike[str]) -> _md.Metadata:
    """DCP's ``Metadata`` object, unpickled with the restricted unpickler (no code is run).

    Args:
        path: the checkpoint folder, or its ``.metadata`` file.

    Every field DCP or paramscope uses is checked (:func:`.check_metadata`), and so is the
    chunk layout, from ``.metadata`` alone: each tensor's chunks must tile its global size
    exactly and each chunk's bytes fit in its ``storage_data`` entry. The chunk files
    themselves are checked by the loaders (:func:`.check_chunk_files`).

    Returns:
        The ``torch.distributed.checkpoint.metadata.Metadata``.

    Raises:
        SourceNotFoundError: the path does not exist.
        UnsafePickleError: the pickle names a global outside :data:`ALLOWED_GLOBALS`, or
            tries to change an object it did not create (``BUILD`` on a class, a dtype, ...).
        FormatError: the file is not a well-formed DCP metadata pickle, a field has the wrong
            type, or a tensor's chunks do not tile it.

    Example:
        >>> import tempfile
        >>> folder = save_dcp({"fc.weight": torch.ones(2, 3)}, f"{tempfile.mkdtemp()}/ckpt")
        >>> md = read_dcp_metadata(folder)
        >>> md.state_dict_metadata["fc.weight"].size
        torch.Size([2, 3])
    """
    file = _metadata_file(path)
    spath = os.fspath(file)
    with opened(spath) as src:
        try:
            md = unpickle(as_file(src), spath)
        except FormatError:  # UnsafePickleError too
            raise
        except Exception as exc:  # a broken pickle, a huge claimed length, a bad opcode
            raise FormatError(
                spath, f"unreadable DCP metadata: {type(exc).__name__}: {exc!s:.200}"
            ) from None
    return check_metadata(md, spath)


def _read_sidecar(folder: Any) -> dict[str, Any] | None:
    side = folder / SIDECAR_NAME
    if not side.is_file():
        return None
    try:
        with opened(side) as src:
            raw = src.read_at(0, src.size)
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(side, f"not valid JSON: {exc}") from None
    ok = (
        isinstance(data, dict)
        and data.get("format") == SIDECAR_FORMAT
        and isinstance(data.get("entries"), dict)
        and isinstance(data.get("aliases", {}), dict)
        and isinstance(data.get("metadata", {}), dict)
    )
    if not ok:
        raise FormatError(
            side, f"expected a {SIDECAR_FORMAT!r} object with 'entries', 'aliases', 'metadata'"
        )
    version = data.get("version", 1)
    if version not in SIDECAR_VERSIONS or isinstance(version, bool):
        raise FormatError(
            side,
            f"sidecar version {version!r}: this paramscope reads versions "
            f"{', '.join(map(str, SIDECAR_VERSIONS))} (a newer paramscope wrote it?)",
        )
    return data


def read_dcp_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The :class:`Manifest` of a DCP checkpoint, from ``.metadata`` alone (no tensor is read).

    Shapes are the global (unsharded) sizes. Roles, flags, tags, extra and ties come from the
    ``paramscope.json`` sidecar when there is one (roles ``exact``), else roles are inferred.
    Non-tensor (bytes) items are skipped with a note. Locations are ``None``: a chunk is a
    torch-serialised blob inside a ``.distcp`` file, not raw values.

    Args:
        path: the checkpoint folder (or its ``.metadata`` file).

    Returns:
        The manifest (format ``dcp``; ``files`` lists ``.metadata`` and the chunk files).

    Raises:
        SourceNotFoundError, UnsafePickleError, FormatError: see :func:`read_dcp_metadata`;
        FormatError also for a sidecar that disagrees with ``.metadata``.
        UnsupportedDTypeError: a tensor dtype paramscope has no name for.

    Example:
        >>> import tempfile
        >>> w = torch.ones(2, 3)
        >>> folder = save_dcp({"fc.weight": w, "head.weight": w}, f"{tempfile.mkdtemp()}/ckpt")
        >>> m = read_dcp_manifest(folder)
        >>> m["fc.weight"].shape, m.format.value, m.ties()
        ((2, 3), 'dcp', [['fc.weight', 'head.weight']])
    """
    file = _metadata_file(path)
    return _manifest(file, read_dcp_metadata(file))


def _manifest(file: Any, md: _md.Metadata) -> Manifest:
    """The manifest of ``.metadata`` ``file`` whose ``Metadata`` ``md`` has been checked."""
    folder = file.parent
    notes: list[str] = []
    tensors: dict[str, tuple[tuple[int, ...], DType]] = {}
    spath = os.fspath(file)
    for fqn, item in md.state_dict_metadata.items():  # types checked by check_metadata
        if isinstance(item, _md.TensorStorageMetadata):
            shape = tuple(int(s) for s in item.size)
            tensors[str(fqn)] = (shape, DType.from_torch(item.properties.dtype))
        else:
            notes.append(f"skipped {fqn!r}: not a tensor ({type(item).__name__})")
    files = [spath]
    for info in (md.storage_data or {}).values():  # relative paths checked by check_metadata
        if os.fspath(folder / info.relative_path) not in files:
            files.append(os.fspath(folder / info.relative_path))
    side = _read_sidecar(folder)
    if side is None:
        entries = []
        for name, (shape, dtype) in tensors.items():
            role = infer_role(name, dtype, shape)
            entries.append(Entry(name, shape, dtype, role=role, trainable=role is Role.PARAM))
        return Manifest(
            entries,
            format=_FORMAT,
            source=os.fspath(folder),
            roles=RoleSource.INFERRED,
            files=files,
            notes=notes,
        )
    return _manifest_from_sidecar(folder, side, tensors, files, notes)


def _sidecar_aliases(sidepath: Path, side: dict[str, Any]) -> dict[str, str]:
    """The sidecar's ``aliases``: entry → another entry that is no alias itself."""
    aliases = side.get("aliases", {})
    for alias, target in aliases.items():
        if not isinstance(target, str) or target == alias or target in aliases:
            raise FormatError(
                sidepath,
                f"alias {alias!r}: expected the name of a stored entry, found {target!r:.80} "
                "(an alias of itself, of another alias, or not a name)",
            )
        if alias not in side["entries"]:
            raise FormatError(sidepath, f"alias {alias!r} is not an entry of the sidecar")
    return dict(aliases)


def _sidecar_meta(
    sidepath: Path, name: str, meta: Any
) -> tuple[Role, bool, tuple[str, ...], dict[str, Any]]:
    """An entry's role, trainable flag, tags and extra, each of its JSON type."""
    if not isinstance(meta, dict):
        raise FormatError(sidepath, f"entry {name!r}: expected an object, found {meta!r:.80}")
    role = meta.get("role", Role.PARAM.value)
    trainable = meta.get("trainable", True)
    tags = meta.get("tags", [])
    extra = meta.get("extra", {})
    if role not in [r.value for r in Role]:
        expected = ", ".join(repr(r.value) for r in Role)
        raise FormatError(
            sidepath, f"entry {name!r}: role: expected {expected}, found {role!r:.80}"
        )
    if not isinstance(trainable, bool):
        raise FormatError(
            sidepath, f"entry {name!r}: trainable: expected true or false, found {trainable!r:.80}"
        )
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise FormatError(
            sidepath, f"entry {name!r}: tags: expected a list of strings, found {tags!r:.80}"
        )
    if not isinstance(extra, dict):
        raise FormatError(
            sidepath, f"entry {name!r}: extra: expected an object, found {extra!r:.80}"
        )
    return Role(role), trainable, tuple(tags), dict(extra)


def _sidecar_metadata(sidepath: Path, side: dict[str, Any]) -> dict[str, str]:
    """The sidecar's free ``metadata``: str → str."""
    metadata = side.get("metadata", {})
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise FormatError(sidepath, f"metadata {k!r}: expected a string, found {v!r:.80}")
    return dict(metadata)


def _manifest_from_sidecar(
    folder: Path,
    side: dict[str, Any],
    tensors: dict[str, tuple[tuple[int, ...], DType]],
    files: list[str],
    notes: list[str],
) -> Manifest:
    sidepath = folder / SIDECAR_NAME
    aliases = _sidecar_aliases(sidepath, side)
    entries = []
    for name, meta in side["entries"].items():
        stored = aliases.get(name, name)
        if stored not in tensors:
            raise FormatError(
                sidepath,
                f"entry {name!r} (stored as {stored!r}) is not a tensor in {METADATA_NAME}; "
                "the sidecar belongs to another save",
            )
        role, trainable, tags, extra = _sidecar_meta(sidepath, name, meta)
        shape, dtype = tensors[stored]
        own = tensors.get(name)  # version 2: an alias has its own item too
        if stored != name and own is not None and own != (shape, dtype):
            raise FormatError(
                sidepath,
                f"alias {name!r} of {stored!r}: expected shape {shape} {dtype.value} as its "
                f"target, {METADATA_NAME} has {own[0]} {own[1].value}",
            )
        entries.append(
            Entry(
                name,
                shape,
                dtype,
                role=role,
                trainable=trainable,
                tie=aliases.get(name),
                tags=tags,
                extra=extra,
            )
        )
    named = {e.name for e in entries}
    for name, (shape, dtype) in tensors.items():  # tensors the sidecar does not know
        if name not in named:
            role = infer_role(name, dtype, shape)
            entries.append(Entry(name, shape, dtype, role=role, trainable=role is Role.PARAM))
            notes.append(f"{name!r}: not in {SIDECAR_NAME}, role inferred")
    return Manifest(
        entries,
        format=_FORMAT,
        source=os.fspath(folder),
        roles=RoleSource.EXACT,
        metadata=_sidecar_metadata(sidepath, side),
        files=[*files, os.fspath(sidepath)],
        notes=notes,
    )


class SafeFileSystemReader(FileSystemReader):
    """DCP's ``FileSystemReader`` whose ``.metadata`` goes through the restricted unpickler.

    Pass it as ``storage_reader=`` to ``torch.distributed.checkpoint.load`` (also across
    ranks) so that no code from ``.metadata`` can run, no object of the process can be changed
    by it, and no chunk layout that leaves part of a tensor unread (or claims more bytes than
    the chunk files hold) reaches DCP. Non-tensor items (``step``, a dict of floats), which
    DCP's default planner unpickles with ``torch.load(weights_only=False)``, are first read
    with ``weights_only=True`` (:class:`_WeightsOnlyBytes`), so a chunk file cannot run code
    either.

    Args:
        path: the checkpoint folder.

    Example:
        >>> import tempfile, warnings
        >>> import torch.distributed.checkpoint as dcp
        >>> w = torch.arange(6.0).reshape(2, 3)
        >>> folder = save_dcp({"fc.weight": w}, f"{tempfile.mkdtemp()}/ckpt")
        >>> state = {"fc.weight": torch.zeros(2, 3)}
        >>> with warnings.catch_warnings():  # torch says it loads in one process
        ...     warnings.simplefilter("ignore")
        ...     dcp.load(state, storage_reader=SafeFileSystemReader(folder), no_dist=True)
        >>> torch.equal(state["fc.weight"], w)
        True
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> _md.Metadata:
        """Read ``.metadata`` (or ``__<rank>.metadata``) with :func:`read_dcp_metadata`.

        Args:
            *args: as DCP passes them.
            **kwargs: ``rank=`` for per-rank metadata files.

        Returns:
            The checkpoint's ``Metadata``, its chunk layout and chunk files checked.
        """
        md = read_dcp_metadata(self._get_metadata_path(kwargs.get("rank")))
        check_chunk_files(self.path, md)
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = _md.StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md

    def read_data(self, plan: Any, planner: Any) -> Any:
        """Read a load plan's items, non-tensor items through ``weights_only=True``.

        Args:
            plan: DCP's ``LoadPlan``.
            planner: DCP's ``LoadPlanner`` (wrapped in :class:`_WeightsOnlyBytes`).

        Returns:
            DCP's future, as ``FileSystemReader.read_data`` returns it.
        """
        return super().read_data(plan, _WeightsOnlyBytes(planner))


class _WeightsOnlyBytes:
    """A load planner whose ``load_bytes`` sees only what ``weights_only=True`` admits.

    DCP's ``DefaultLoadPlanner.load_bytes`` calls ``torch.load(value, weights_only=False)`` on
    a non-tensor item's bytes: a crafted chunk file would run code. This proxy loads the bytes
    with ``weights_only=True`` first (plain containers, numbers, strings, tensors), saves that
    object again and hands the planner those bytes, which hold nothing else. Everything else is
    the wrapped planner's.

    Args:
        planner: the planner DCP was given.
    """

    def __init__(self, planner: Any) -> None:
        self._planner = planner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._planner, name)

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        """Load a non-tensor item, refusing anything ``weights_only=True`` refuses.

        Args:
            read_item: DCP's ``ReadItem``.
            value: the item's bytes from the chunk file.
        """
        obj = torch.load(value, map_location="cpu", weights_only=True)
        safe = io.BytesIO()
        torch.save(obj, safe)
        safe.seek(0)
        self._planner.load_bytes(read_item, safe)


def _first_line(exc: BaseException) -> str:
    """The last line of DCP's per-rank traceback text: the error itself."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """Silence the warnings torch gives for what paramscope's own DCP calls mean to do.

    Only these, by message and category: one process without ``torch.distributed``, and
    overwriting a checkpoint folder (a save replaces what was there). Every other warning
    and every error passes through.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        warnings.filterwarnings(
            "ignore",
            message=r"Detected an existing checkpoint in .*, overwriting since",
            category=UserWarning,
        )
        yield


def save_dcp(source: ParamDict | Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Save a ParamDict (or dict of tensors) as a one-process DCP checkpoint folder, atomically.

    ``torch.distributed.checkpoint.save(..., no_dist=True)`` writes ``.metadata`` and
    ``__0_0.distcp``; no process group is needed (and one that exists is not used). Every
    name is written, aliases included, as DCP writes a tied ``state_dict`` (each name its own
    item and bytes), so plain ``dcp.load(model.state_dict(), checkpoint_id=path)`` finds every
    key of the model it came from. paramscope's metadata, ties included, goes to the
    ``paramscope.json`` sidecar.

    The checkpoint is built in a locked temp folder and fsynced first; a failure (a full
    disk) leaves the destination as it was. A new folder, or one holding only DCP and
    paramscope files (``.metadata``, ``__*_*.distcp``, ``paramscope.json``), is then
    exchanged with the temp folder in one step (``renameat2(RENAME_EXCHANGE)``). A folder
    holding other files keeps them untouched: the new chunk files are moved in under names the
    old ``.metadata`` does not use (``__0_0-<hex>.distcp`` when ``__0_0.distcp`` is taken,
    recorded in the new ``.metadata``), then ``.metadata``, the commit point, is renamed over
    the old one and the old chunk files are removed. Only there the sidecar is swapped just
    before and after ``.metadata`` (two renames): a kill between them leaves the checkpoint
    whole, without its sidecar (roles inferred, ties unknown) until the next save.

    Args:
        source: a ParamDict or a plain dict of tensors (the same object twice is a tie).
        path: the destination folder (created if needed).

    Returns:
        The folder.

    Raises:
        ArgumentTypeError: ``source`` is neither; extra metadata is not JSON-able.
        WriteError: the DCP save failed (the message names the folder and the cause);
            ``path`` is a file.

    Example:
        >>> import tempfile, warnings
        >>> import torch.distributed.checkpoint as dcp
        >>> from paramscope import ParamDict
        >>> def tied_model() -> torch.nn.Module:
        ...     emb, head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
        ...     head.weight = emb.weight
        ...     return torch.nn.ModuleDict({"emb": emb, "head": head})
        >>> model = tied_model()
        >>> folder = save_dcp(ParamDict.from_module(model), f"{tempfile.mkdtemp()}/ckpt")
        >>> sorted(p.name for p in folder.iterdir())
        ['.metadata', '__0_0.distcp', 'paramscope.json']
        >>> pd = load_dcp(folder)
        >>> sorted(pd), pd["head.weight"] is pd["emb.weight"]
        (['emb.weight', 'head.weight'], True)
        >>> fresh = tied_model()  # plain torch finds every key of the model, the tie too
        >>> with warnings.catch_warnings():  # torch says it loads in one process
        ...     warnings.simplefilter("ignore")
        ...     dcp.load(fresh.state_dict(), checkpoint_id=folder, no_dist=True)
        >>> torch.equal(fresh.head.weight, model.emb.weight)
        True
    """
    import dataclasses
    import errno
    import re
    import secrets

    from .._atomic import (
        clean_stale_temps,
        folder_lock,
        fsync_dir,
        only_own,
        remove_own,
        swap_folder,
        temp_folder,
    )
    from .._paramdict import ParamDict

    if isinstance(source, ParamDict):
        pd = source
    elif isinstance(source, Mapping):
        pd = ParamDict(source)
    else:
        raise ArgumentTypeError(
            f"save: expected a ParamDict or a dict of tensors, found {type(source).__name__}"
        )
    side = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "entries": {n: pd.meta(n).to_json() for n in pd},
        "aliases": {n: pd.alias_of(n) for n in pd if pd.alias_of(n) is not None},
        "metadata": dict(pd.metadata),
    }
    try:
        text = json.dumps(side, indent=1)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            f"save: the metadata is not JSON-able ({exc}); keep str values there"
        ) from None
    folder = Path(path)
    chunk = re.compile(r"__\d+_\d+(?:-[0-9a-f]+)?\.distcp")

    def own(name: str) -> bool:
        return name in (METADATA_NAME, SIDECAR_NAME) or chunk.fullmatch(name) is not None

    exists = os.path.lexists(folder)
    if exists and not folder.is_dir():
        raise WriteError(
            f"{folder}: is a file, and a DCP checkpoint is a folder; give a folder path, or "
            "remove the file"
        )
    parent = folder.parent if str(folder.parent) else Path(".")
    if exists:
        for name in (METADATA_NAME, SIDECAR_NAME):
            if (folder / name).is_dir() and not (folder / name).is_symlink():
                raise WriteError(
                    f"{folder / name}: is a folder where the checkpoint's {name} file goes; "
                    "remove it, or choose another folder"
                )
        clean_stale_temps(folder, "paramscope-dcp")  # temp folders a killed save left inside
    else:
        parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(parent, folder.name)  # and beside
    in_place = exists and (
        folder.is_symlink()
        or os.stat(folder).st_dev != os.stat(parent).st_dev  # a mount point
        or not os.access(parent, os.W_OK)
        or not only_own(folder, own)  # a user's files: never swapped out with the folder
    )
    tparent, stem = (folder, "paramscope-dcp") if in_place else (parent, folder.name)

    def commit_in_place(tmp: Path) -> None:
        """Move the built files into ``folder``, ``.metadata`` last but the sidecar."""
        new_chunks = sorted(n for n in os.listdir(tmp) if chunk.fullmatch(n))
        renames = {
            c: f"{c[: -len('.distcp')]}-{secrets.token_hex(4)}.distcp"
            for c in new_chunks
            if os.path.lexists(folder / c)
        }
        if renames:  # the old .metadata may use these names: record the new ones
            md = read_dcp_metadata(tmp)
            md.storage_data = {
                k: dataclasses.replace(
                    v, relative_path=renames.get(v.relative_path, v.relative_path)
                )
                for k, v in md.storage_data.items()
            }
            with atomic_write(tmp / METADATA_NAME) as f:
                pickle.dump(md, f)
        for c in new_chunks:  # not yet named by any .metadata in place
            os.replace(tmp / c, folder / renames.get(c, c))
        fsync_dir(folder)
        remove_own(folder / SIDECAR_NAME)  # never describe the other checkpoint's data
        os.replace(tmp / METADATA_NAME, folder / METADATA_NAME)  # the commit point
        os.replace(tmp / SIDECAR_NAME, folder / SIDECAR_NAME)
        fsync_dir(folder)
        keep = {renames.get(c, c) for c in new_chunks}
        for name in os.listdir(folder):  # the previous checkpoint's chunks
            if chunk.fullmatch(name) and name not in keep:
                remove_own(folder / name)

    state = {n: pd[n] for n in pd}  # aliases too: plain DCP loads look each name up
    with temp_folder(tparent, stem) as tmp:
        try:
            with _quiet_single_process():
                torch.distributed.checkpoint.save(state, checkpoint_id=tmp, no_dist=True)
        except CheckpointException as exc:  # a BaseException: make it an ordinary error
            raise WriteError(f"{folder}: DCP save failed: {_first_line(exc)}") from None
        except OSError as exc:  # name the destination, not the temp folder
            raise OSError(exc.errno, exc.strerror, os.fspath(folder)) from exc
        try:
            with atomic_write(tmp / SIDECAR_NAME) as f:
                f.write(text.encode("utf-8"))
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, os.fspath(folder / SIDECAR_NAME)) from exc
        fsync_dir(tmp)
        if not exists:
            try:
                os.rename(tmp, folder)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    raise
            else:
                fsync_dir(parent)
                return folder
        with folder_lock(folder):  # one commit at a time, swaps included
            if in_place or not swap_folder(tmp, folder, own):
                commit_in_place(tmp)
    return folder


def load_dcp(path: str | os.PathLike[str], *, select: Pattern | None = None) -> ParamDict:
    """Load a DCP checkpoint (from any number of ranks) as full tensors, in one process.

    ``.metadata`` is read by the restricted unpickler and checked first, and so are the
    chunk files (each tensor's chunks tile it, their bytes lie in the files): nothing is
    allocated before that. Tensors of the global shapes are then filled by
    ``torch.distributed.checkpoint.load(..., no_dist=True)``, which stitches the chunks every
    rank wrote; a tensor not filled to its last element is never handed back. Ties, roles,
    flags, tags, extra and free metadata come back from the sidecar when present.

    Args:
        path: the checkpoint folder.
        select: a glob / ``re:`` pattern (or list) of names to load; ``None`` loads all.

    Returns:
        The ParamDict.

    Raises:
        FormatError: a chunk file that is missing, too short or overlaps another chunk's
            bytes, or a failed read.
        Everything :func:`read_dcp_manifest` raises.

    Example:
        >>> import tempfile
        >>> sd = {"encoder.w": torch.ones(2), "encoder.b": torch.zeros(2), "head.w": torch.ones(3)}
        >>> pd = load_dcp(save_dcp(sd, f"{tempfile.mkdtemp()}/ckpt"), select="encoder.*")
        >>> sorted(pd), pd["encoder.w"].tolist()
        (['encoder.b', 'encoder.w'], [1.0, 1.0])
    """
    from .._paramdict import EntryMeta, ParamDict

    folder, md, m = _read_checked(path)
    match = compile_pattern(select) if select is not None else (lambda _n: True)
    wanted = [n for n in m if match(n)]
    state: dict[str, torch.Tensor] = {}
    for n in wanted:
        e = m[n]
        stored = e.tie or n
        if stored not in state:
            se = m[stored]
            state[stored] = torch.empty(se.shape, dtype=se.dtype.to_torch())
    if state:
        _fill(state, _CachedReader(folder, md), folder, "DCP load")
    pd = ParamDict(metadata=m.metadata)
    for n in wanted:
        e = m[n]
        if e.tie is not None and e.tie in pd:
            pd.tie(n, e.tie)
        else:
            pd.add(n, state[e.tie or n])
        pd._meta[n] = EntryMeta(e.role, e.trainable, e.tags, dict(e.extra))
    for n in list(pd):  # aliases whose target came later in the order
        tie = m[n].tie
        if tie is not None and tie in pd and pd.alias_of(n) is None:
            meta = pd.meta(n)
            pd.tie(n, tie)
            pd._meta[n] = meta
    return pd


def _read_checked(path: str | os.PathLike[str]) -> tuple[Path, _md.Metadata, Manifest]:
    """The folder, checked ``Metadata`` and manifest of a checkpoint whose chunk files check."""
    from ._remote import RemotePath

    file = _metadata_file(path)
    if isinstance(file, RemotePath):
        raise FormatError(
            file.parent,
            "DCP values are read from a local folder (torch.distributed.checkpoint's reader "
            "opens its chunk files by path): count, inspect and match read this one's "
            ".metadata remotely; copy the folder to read or convert its values",
        )
    md = read_dcp_metadata(file)
    m = _manifest(file, md)
    check_chunk_files(file.parent, md)
    return file.parent, md, m


class _FillPlanner(DefaultLoadPlanner):
    """DCP's default load planner, counting the elements each read fills, per name."""

    def __init__(self) -> None:
        super().__init__()
        self.filled: dict[str, int] = {}

    def commit_tensor(self, read_item: Any, tensor: torch.Tensor) -> None:
        """Count a chunk DCP has copied into a tensor.

        Args:
            read_item: DCP's ``ReadItem`` (destination name and the lengths copied).
            tensor: the destination view.
        """
        fqn = read_item.dest_index.fqn
        self.filled[fqn] = self.filled.get(fqn, 0) + math.prod(read_item.lengths)
        super().commit_tensor(read_item, tensor)


def _fill(
    state: dict[str, torch.Tensor], reader: FileSystemReader, folder: Path, what: str
) -> None:
    """Fill ``state`` from the checkpoint; raise unless every element of every tensor was read.

    The chunk layout was checked (no overlap), so filled elements summing to ``numel`` means
    every element came from a chunk: no byte of ``torch.empty``'s memory is handed back.
    """
    planner = _FillPlanner()
    try:
        with _quiet_single_process():
            torch.distributed.checkpoint.load(
                state, storage_reader=reader, planner=planner, no_dist=True
            )
    except CheckpointException as exc:  # a BaseException: make it an ordinary error
        raise FormatError(folder, f"{what} failed: {_first_line(exc)}") from None
    for key, t in state.items():
        got = planner.filled.get(key, 0)
        if got != t.numel():
            raise FormatError(
                folder,
                f"{what} failed: {key!r}: the chunks filled {got} of its {t.numel()} elements "
                "(a partly read tensor is never handed back)",
            )


class _CachedReader(SafeFileSystemReader):
    """A :class:`SafeFileSystemReader` that reuses one checked ``Metadata`` for many loads."""

    def __init__(self, path: Path, md: _md.Metadata) -> None:
        super().__init__(path)
        self._md = md

    def read_metadata(self, *args: Any, **kwargs: Any) -> _md.Metadata:
        """The metadata read once by :func:`read_dcp_metadata`.

        Args:
            *args: as DCP passes them.
            **kwargs: as DCP passes them.

        Returns:
            The checkpoint's ``Metadata``.
        """
        if getattr(self._md, "storage_meta", None) is None:
            self._md.storage_meta = _md.StorageMeta()
        self._md.storage_meta.load_id = self.load_id
        return self._md


def iter_dcp_tensors(
    path: str | os.PathLike[str], names: Iterable[str] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Read a DCP checkpoint's tensors one at a time (memory: about the largest tensor).

    ``.metadata`` and the chunk files are read and checked once (restricted unpickler, chunk
    tiling, byte ranges), before anything is allocated; each tensor is then filled by its own
    ``torch.distributed.checkpoint.load(..., no_dist=True)``, which stitches the chunks every
    rank wrote and reads only that tensor's bytes. A tensor not filled to its last element is
    never yielded.

    Args:
        path: the checkpoint folder.
        names: manifest names to read, in this order (an alias of a version 1 sidecar reads
            its stored name); ``None``: every stored (non-alias) entry.

    Yields:
        ``(name, tensor)``, the tensor in fresh memory the caller owns.

    Raises:
        FormatError: a name that is not a tensor of the checkpoint, or a failed read.
        Everything :func:`read_dcp_manifest` raises.

    Example:
        >>> import tempfile
        >>> sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
        >>> for name, t in iter_dcp_tensors(save_dcp(sd, f"{tempfile.mkdtemp()}/ckpt")):
        ...     print(name, t.sum().item())
        w 15.0
        b 2.0
    """
    folder, md, m = _read_checked(path)
    reader = _CachedReader(folder, md)
    todo = [n for n, e in m.items() if e.tie is None] if names is None else list(names)
    for n in todo:
        if n not in m:
            raise FormatError(folder, f"{n!r}: expected a tensor of the checkpoint, found none")
        e = m[n]
        key = n if n in md.state_dict_metadata else (e.tie or n)
        t = torch.empty(e.shape, dtype=e.dtype.to_torch())
        _fill({key: t}, reader, folder, f"DCP load of {n!r}")
        yield n, t
