"""torch.distributed.checkpoint (DCP) folders, read without running any code from the file.

A DCP checkpoint is a folder: ``.metadata`` (a pickle of
``torch.distributed.checkpoint.metadata.Metadata``: every tensor's global size, dtype and the
chunks each rank wrote) and the chunk files ``__<rank>_<n>.distcp``. DCP itself reads
``.metadata`` with plain ``pickle.load``, so a crafted file could run code. paramscope reads it
with a restricted unpickler instead (:data:`ALLOWED_GLOBALS`): only DCP's own metadata classes
and the few torch / standard-library globals they refer to (``torch.Size``, torch dtypes,
``torch.serialization._get_layout``, ``pathlib`` paths as pure paths) are admitted, mapped to
the real classes; any other global is refused with :class:`UnsafePickleError` before anything
is called. :func:`load_dcp` hands DCP a storage reader (:class:`SafeFileSystemReader`) that
reads ``.metadata`` this same way, so the file DCP acts on is the file that was checked; the
chunk files are read by DCP with ``torch.load(weights_only=True)``.

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
import json
import os
import pathlib
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import filesystem as _fs
from torch.distributed.checkpoint import metadata as _md
from torch.distributed.checkpoint.api import CheckpointException

from .._atomic import atomic_write
from .._dtypes import DType
from .._enums import Format, Role, RoleSource
from .._errors import FormatError, ParamscopeError, SourceNotFoundError, UnsafePickleError
from .._manifest import Entry, Manifest, infer_role
from .._names import Pattern, compile_pattern

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


def _torch_dtypes() -> dict[tuple[str, str], Any]:
    return {
        ("torch", name): value
        for name, value in vars(torch).items()
        if isinstance(value, torch.dtype) and not name.startswith("_")
    }


#: Every global a DCP ``.metadata`` pickle may name, ``(module, name)`` → the object used.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        ("torch.distributed.checkpoint.metadata", cls.__name__): cls
        for cls in (
            _md.Metadata,
            _md.MetadataIndex,
            _md.StorageMeta,
            _md.TensorStorageMetadata,
            _md.BytesStorageMetadata,
            _md.ChunkStorageMetadata,
            _md.TensorProperties,
            _md._MEM_FORMAT_ENCODING,
        )
    },
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _fs._StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    **_torch_dtypes(),
    # StorageMeta.checkpoint_id: a path, rebuilt as a pure path (no file-system access)
    ("pathlib", "PosixPath"): pathlib.PurePosixPath,
    ("pathlib", "WindowsPath"): pathlib.PureWindowsPath,
    ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
    ("pathlib", "PureWindowsPath"): pathlib.PureWindowsPath,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _DcpUnpickler(pickle.Unpickler):
    """Admits :data:`ALLOWED_GLOBALS` only; no persistent ids."""

    def __init__(self, f: Any, path: str) -> None:
        super().__init__(f)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                self.path,
                f"refused: the DCP metadata asks for {module}.{name}, which is not part of "
                "torch.distributed.checkpoint's metadata (paramscope never runs code from a "
                "file)",
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self.path, f"refused: unexpected persistent id {pid!r:.80}")


def is_dcp_dir(path: str | os.PathLike[str]) -> bool:
    """Whether a path is a DCP checkpoint folder (a folder holding a ``.metadata`` file).

    Args:
        path: any path.

    Returns:
        ``True`` for a folder with ``.metadata`` in it.

    Example:
        >>> is_dcp_dir(".")
        False
    """
    p = Path(path)
    return p.is_dir() and (p / METADATA_NAME).is_file()


def _metadata_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
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

    Returns:
        The ``torch.distributed.checkpoint.metadata.Metadata``.

    Raises:
        SourceNotFoundError: the path does not exist.
        UnsafePickleError: the pickle names a global outside :data:`ALLOWED_GLOBALS`.
        FormatError: the file is not a well-formed DCP metadata pickle.

    Example:
        >>> # md = read_dcp_metadata("ckpt/"); md.state_dict_metadata["fc.weight"].size
    """
    file = _metadata_file(path)
    spath = os.fspath(file)
    with open(file, "rb") as f:
        try:
            md = _DcpUnpickler(f, spath).load()
        except UnsafePickleError:
            raise
        except Exception as exc:  # a broken pickle, a bad layout name, a wrong setstate
            raise FormatError(
                spath, f"unreadable DCP metadata: {type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(md, _md.Metadata) or not isinstance(md.state_dict_metadata, Mapping):
        raise FormatError(
            spath, f"expected a DCP Metadata object, found {type(md).__name__} in the pickle"
        )
    return md


def _read_sidecar(folder: Path) -> dict[str, Any] | None:
    side = folder / SIDECAR_NAME
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
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
        >>> # m = read_dcp_manifest("ckpt/"); m["fc.weight"].shape
    """
    file = _metadata_file(path)
    folder = file.parent
    md = read_dcp_metadata(file)
    notes: list[str] = []
    tensors: dict[str, tuple[tuple[int, ...], DType]] = {}
    spath = os.fspath(file)
    for fqn, item in md.state_dict_metadata.items():
        if isinstance(item, _md.TensorStorageMetadata):
            try:  # the pickle set these attributes: check them
                shape = tuple(int(s) for s in item.size)
                dtype = item.properties.dtype
            except (AttributeError, TypeError, ValueError) as exc:
                raise FormatError(spath, f"entry {fqn!r}: malformed metadata: {exc}") from None
            if any(s < 0 for s in shape):
                raise FormatError(spath, f"entry {fqn!r}: negative size {shape}")
            tensors[str(fqn)] = (shape, DType.from_torch(dtype))
        else:
            notes.append(f"skipped {fqn!r}: not a tensor ({type(item).__name__})")
    files = [spath]
    storage_data = md.storage_data or {}
    if not isinstance(storage_data, Mapping):
        raise FormatError(spath, f"storage_data: expected a mapping, found {storage_data!r:.80}")
    for info in storage_data.values():
        rel = getattr(info, "relative_path", None)
        if isinstance(rel, str) and (os.path.isabs(rel) or ".." in Path(rel).parts):
            raise FormatError(spath, f"chunk file {rel!r} is outside the checkpoint folder")
        if isinstance(rel, str) and os.fspath(folder / rel) not in files:
            files.append(os.fspath(folder / rel))
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


def _manifest_from_sidecar(
    folder: Path,
    side: dict[str, Any],
    tensors: dict[str, tuple[tuple[int, ...], DType]],
    files: list[str],
    notes: list[str],
) -> Manifest:
    sidepath = folder / SIDECAR_NAME
    aliases: dict[str, str] = {str(k): str(v) for k, v in side.get("aliases", {}).items()}
    entries = []
    for name, meta in side["entries"].items():
        stored = aliases.get(name, name)
        if stored not in tensors:
            raise FormatError(
                sidepath,
                f"entry {name!r} (stored as {stored!r}) is not a tensor in {METADATA_NAME}; "
                "the sidecar belongs to another save",
            )
        if not isinstance(meta, dict):
            raise FormatError(sidepath, f"entry {name!r}: expected an object, found {meta!r}")
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
                role=Role(meta.get("role", Role.PARAM.value)),
                trainable=bool(meta.get("trainable", True)),
                tie=aliases.get(name),
                tags=tuple(meta.get("tags", ())),
                extra=dict(meta.get("extra", {})),
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
        metadata={str(k): str(v) for k, v in side.get("metadata", {}).items()},
        files=[*files, os.fspath(sidepath)],
        notes=notes,
    )


class SafeFileSystemReader(FileSystemReader):
    """DCP's ``FileSystemReader`` whose ``.metadata`` goes through the restricted unpickler.

    Pass it as ``storage_reader=`` to ``torch.distributed.checkpoint.load`` (also across
    ranks) so that no code from ``.metadata`` can run.

    Args:
        path: the checkpoint folder.

    Example:
        >>> # dcp.load(state, storage_reader=SafeFileSystemReader("ckpt/"))
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> _md.Metadata:
        """Read ``.metadata`` (or ``__<rank>.metadata``) with :func:`read_dcp_metadata`.

        Args:
            *args: as DCP passes them.
            **kwargs: ``rank=`` for per-rank metadata files.

        Returns:
            The checkpoint's ``Metadata``.
        """
        md = read_dcp_metadata(self._get_metadata_path(kwargs.get("rank")))
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = _md.StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md


def _first_line(exc: BaseException) -> str:
    """The last line of DCP's per-rank traceback text: the error itself."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet_single_process() -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        yield


def save_dcp(source: ParamDict | Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Save a ParamDict (or dict of tensors) as a one-process DCP checkpoint folder.

    ``torch.distributed.checkpoint.save(..., no_dist=True)`` writes ``.metadata`` and
    ``__0_0.distcp``; no process group is needed (and one that exists is not used). Every
    name is written, aliases included, as DCP writes a tied ``state_dict`` (each name its own
    item and bytes), so plain ``dcp.load(model.state_dict(), checkpoint_id=path)`` finds every
    key of the model it came from. paramscope's metadata, ties included, goes to the
    ``paramscope.json`` sidecar, written atomically after the checkpoint (an older sidecar is
    removed first, so a failed save never leaves a sidecar describing other data).

    Args:
        source: a ParamDict or a plain dict of tensors (the same object twice is a tie).
        path: the destination folder (created if needed).

    Returns:
        The folder.

    Raises:
        ParamscopeError: ``source`` is neither; extra metadata is not JSON-able.

    Example:
        >>> # save_dcp(pd, "ckpt/"); load_dcp("ckpt/")
        >>> # dcp.load(model.state_dict(), checkpoint_id="ckpt/")  # plain torch, ties too
    """
    from .._paramdict import ParamDict

    if isinstance(source, ParamDict):
        pd = source
    elif isinstance(source, Mapping):
        pd = ParamDict(source)
    else:
        raise ParamscopeError(
            f"save_dcp: expected a ParamDict or a dict of tensors, found {type(source).__name__}"
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
        raise ParamscopeError(f"save_dcp: metadata is not JSON-able: {exc}") from None
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SIDECAR_NAME).unlink(missing_ok=True)
    state = {n: pd[n] for n in pd}  # aliases too: plain DCP loads look each name up
    try:
        with _quiet_single_process():
            torch.distributed.checkpoint.save(state, checkpoint_id=folder, no_dist=True)
    except CheckpointException as exc:  # a BaseException: make it an ordinary error
        raise ParamscopeError(f"{folder}: DCP save failed: {_first_line(exc)}") from None
    with atomic_write(folder / SIDECAR_NAME) as f:
        f.write(text.encode("utf-8"))
    return folder


def load_dcp(path: str | os.PathLike[str], *, select: Pattern | None = None) -> ParamDict:
    """Load a DCP checkpoint (from any number of ranks) as full tensors, in one process.

    ``.metadata`` is checked by the restricted unpickler first; empty tensors of the global
    shapes are then filled by ``torch.distributed.checkpoint.load(..., no_dist=True)`` with
    :class:`SafeFileSystemReader`, which stitches the chunks every rank wrote. Ties, roles,
    flags, tags, extra and free metadata come back from the sidecar when present.

    Args:
        path: the checkpoint folder.
        select: a glob / ``re:`` pattern (or list) of names to load; ``None`` loads all.

    Returns:
        The ParamDict.

    Raises:
        Everything :func:`read_dcp_manifest` raises.

    Example:
        >>> # pd = load_dcp("ckpt/", select="encoder.*")
    """
    from .._paramdict import EntryMeta, ParamDict

    m = read_dcp_manifest(path)
    folder = Path(m.source or path)
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
        try:
            with _quiet_single_process():
                torch.distributed.checkpoint.load(
                    state, storage_reader=SafeFileSystemReader(folder), no_dist=True
                )
        except CheckpointException as exc:  # a BaseException: make it an ordinary error
            raise FormatError(folder, f"DCP load failed: {_first_line(exc)}") from None
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

    ``.metadata`` is read and checked once (restricted unpickler); each tensor is then filled
    by its own ``torch.distributed.checkpoint.load(..., no_dist=True)``, which stitches the
    chunks every rank wrote and reads only that tensor's bytes.

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
        >>> # for name, t in iter_dcp_tensors("ckpt/"): print(name, t.sum())
    """
    m = read_dcp_manifest(path)
    folder = Path(m.source or path)
    md = read_dcp_metadata(folder)
    reader = _CachedReader(folder, md)
    todo = [n for n, e in m.items() if e.tie is None] if names is None else list(names)
    for n in todo:
        if n not in m:
            raise FormatError(folder, f"{n!r}: expected a tensor of the checkpoint, found none")
        e = m[n]
        key = n if n in md.state_dict_metadata else (e.tie or n)
        t = torch.empty(e.shape, dtype=e.dtype.to_torch())
        try:
            with _quiet_single_process():
                torch.distributed.checkpoint.load({key: t}, storage_reader=reader, no_dist=True)
        except CheckpointException as exc:  # a BaseException: make it an ordinary error
            raise FormatError(folder, f"DCP load of {n!r} failed: {_first_line(exc)}") from None
        yield n, t
