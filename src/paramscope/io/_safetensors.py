"""safetensors: the format's manifest, from its header alone (no torch, no tensor bytes).

The format is read and written by one module per concern; this one turns a parsed header
into a :class:`~paramscope._manifest.Manifest` and is where the rest is found by name:

* :mod:`._safetensors_rules` — the layout, paramscope's metadata key, :class:`Header`, and
  every check on entries, tiling and metadata (messages name file, entry, expected, found);
* :mod:`._safetensors_header` — :func:`parse_header`: length and limits, the streaming
  parse (:mod:`._safetensors_scan`), the ``json`` replay on errors, the parse cache;
* :mod:`._lazytensors` — tensors made from a private mmap when first read (torch);
* :mod:`._digest` — per-entry digests and :func:`verify_hashes`;
* :mod:`._writer` — the atomic hashed writer, streamed (:func:`write_stream`) or in one go.

All bytes are read through a :class:`~paramscope.io._source.ByteSource`. The names of those
modules stay importable from here (the writer's, digest's and lazy tensors' on first use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._enums import Format, Role, RoleSource
from .._errors import HeaderError
from .._lazy import lazy_getattr
from .._manifest import NO_EXTRA, Entry, EntryRows, Location, Manifest, infer_role
from ._safetensors_header import _PARSED as _PARSED  # the parse cache (tests clear it)
from ._safetensors_header import _parse_json as _parse_json  # the reference parse
from ._safetensors_header import parse_header
from ._safetensors_rules import (
    DEFAULT_HASH,
    DIGEST_KEY,
    HASH_ALGOS,
    MAX_HEADER,
    MAX_RANK,
    META_KEY,
    META_VERSION,
    Header,
)
from ._safetensors_scan import _Stream as _Stream  # the streaming parser
from ._source import ByteSource

if TYPE_CHECKING:
    from ._digest import hash_bytes as hash_bytes
    from ._digest import verify_hashes as verify_hashes
    from ._lazytensors import LazyTensors as LazyTensors
    from ._lazytensors import load_tensors as load_tensors
    from ._lazytensors import open_mmap as open_mmap
    from ._lazytensors import tensor_from_buffer as tensor_from_buffer
    from ._writer import Planned as Planned
    from ._writer import StoredEntry as StoredEntry
    from ._writer import _as_bytes as _as_bytes
    from ._writer import write_file as write_file
    from ._writer import write_stream as write_stream

__all__ = [
    "DEFAULT_HASH",
    "DIGEST_KEY",
    "HASH_ALGOS",
    "MAX_HEADER",
    "MAX_RANK",
    "META_KEY",
    "META_VERSION",
    "Header",
    "LazyTensors",
    "Planned",
    "StoredEntry",
    "hash_bytes",
    "load_tensors",
    "manifest_entries",
    "manifest_rows",
    "open_mmap",
    "parse_header",
    "read_manifest",
    "tensor_from_buffer",
    "verify_hashes",
    "write_file",
    "write_stream",
]

#: Names of the other safetensors modules, loaded on first use (the manifest path needs none).
_LAZY: dict[str, str] = {
    "hash_bytes": "paramscope.io._digest",
    "verify_hashes": "paramscope.io._digest",
    "LazyTensors": "paramscope.io._lazytensors",
    "load_tensors": "paramscope.io._lazytensors",
    "open_mmap": "paramscope.io._lazytensors",
    "tensor_from_buffer": "paramscope.io._lazytensors",
    "Planned": "paramscope.io._writer",
    "StoredEntry": "paramscope.io._writer",
    "_as_bytes": "paramscope.io._writer",
    "write_file": "paramscope.io._writer",
    "write_stream": "paramscope.io._writer",
}

__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


def manifest_entries(h: Header, external: Mapping[str, Entry] | None = None) -> list[Entry]:
    """Entries of one parsed file, aliases included, with roles exact or inferred.

    Args:
        h: the parsed header.
        external: entries of sibling shards, for aliases whose target lives elsewhere.

    Returns:
        The entries, stored ones in header order, then aliases.

    Raises:
        HeaderError: an alias points at a name no file holds.
    """
    return list(manifest_rows(h, external).values())


def manifest_rows(h: Header, external: Mapping[str, Entry] | None = None) -> EntryRows:
    """The entries of one parsed file as compact rows, each :class:`Entry` built on access.

    Nothing is kept per entry beyond the header's own tuples, so a manifest of a header
    with 1.4 M entries costs what the header does.

    Args:
        h: the parsed header.
        external: entries of sibling shards, for aliases whose target lives elsewhere.

    Returns:
        The rows: stored entries in header order, then aliases.

    Raises:
        HeaderError: an alias points at a name no file holds, or is also stored.

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> path = paramscope.save({"wte.weight": torch.zeros(50, 8)}, f"{d}/model.safetensors")
        >>> rows = manifest_rows(parse_header(path))
        >>> rows["wte.weight"].shape, rows["wte.weight"].location.length
        ((50, 8), 1600)
    """
    ps_meta = h.ps_meta
    ps_entries = (ps_meta or {}).get("entries", {})
    aliases: dict[str, str] = (ps_meta or {}).get("aliases", {})
    outside = external or {}
    for alias, target in aliases.items():
        if target not in h.tensors and target not in outside:
            raise HeaderError(h.path, f"alias {alias!r}: its target {target!r} is not stored")
        if alias in h.tensors:
            raise HeaderError(h.path, f"alias {alias!r}: the name is also stored as a tensor")
    path, start = h.path, h.data_start
    tensors = h.tensors
    param = Role.PARAM  # a local: read per entry

    if ps_meta is None:

        def stored(name: str, row: tuple[DType, tuple[int, ...], int, int]) -> Entry:
            dtype, shape, begin, end = row
            role = infer_role(name, dtype, shape)
            loc = Location(path, start + begin, end - begin)
            return Entry(name, shape, dtype, role, role is param, None, (), NO_EXTRA, loc)

    else:

        def stored(name: str, row: tuple[DType, tuple[int, ...], int, int]) -> Entry:
            dtype, shape, begin, end = row
            loc = Location(path, start + begin, end - begin)
            return _entry(name, dtype, shape, ps_entries.get(name), ps_meta, loc)

    def alias_entry(alias: str, target: str) -> Entry:
        row = tensors.get(target)
        dtype, shape = (
            (row[0], row[1]) if row is not None else (outside[target].dtype, outside[target].shape)
        )
        return _entry(alias, dtype, shape, ps_entries.get(alias), ps_meta, None, target)

    return EntryRows((tensors, stored), (aliases, alias_entry), ties=aliases, owner=h)


def _entry(
    name: str,
    dtype: DType,
    shape: tuple[int, ...],
    meta: Mapping[str, Any] | None,
    ps_meta: Mapping[str, Any] | None,
    loc: Location | None,
    tie: str | None = None,
) -> Entry:
    if ps_meta is not None and meta is not None:
        role = Role(meta.get("role", "param"))
        digest = meta.get(DIGEST_KEY)
        return Entry(
            name,
            shape,
            dtype,
            role=role,
            trainable=bool(meta.get("trainable", role is Role.PARAM)),
            tie=tie,
            tags=tuple(str(t) for t in meta.get("tags", ())),
            extra=dict(extra) if (extra := meta.get("extra")) else NO_EXTRA,
            location=loc,
            hash=f"{ps_meta['hash']}:{digest}" if isinstance(digest, str) else None,
        )
    role = infer_role(name, dtype, shape)
    return Entry(name, shape, dtype, role=role, trainable=role is Role.PARAM, tie=tie, location=loc)


def read_manifest(path: str | os.PathLike[str] | ByteSource) -> Manifest:
    """The manifest of one safetensors file, from its header alone.

    Args:
        path: the file (or a ByteSource open on it).

    Returns:
        A :class:`Manifest`; roles are ``exact`` when paramscope wrote the file.

    Raises:
        HeaderError: the header breaks a rule of the format.

    Example:
        >>> import tempfile, torch, paramscope
        >>> from safetensors.torch import save_file
        >>> d = tempfile.mkdtemp()
        >>> read_manifest(paramscope.save({"w": torch.ones(2)}, f"{d}/ours.safetensors")).roles
        <RoleSource.EXACT: 'exact'>
        >>> save_file({"w": torch.ones(2)}, f"{d}/plain.safetensors")  # no paramscope metadata
        >>> read_manifest(f"{d}/plain.safetensors").roles
        <RoleSource.INFERRED: 'inferred'>
    """
    h = parse_header(path)
    exact = h.ps_meta is not None
    return Manifest(
        manifest_rows(h),
        format=Format.SAFETENSORS,
        source=h.path,
        roles=RoleSource.EXACT if exact else RoleSource.INFERRED,
        metadata=h.metadata,
    )
