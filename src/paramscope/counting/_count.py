"""Counting parameters: totals, bytes by dtype and a per-prefix tree, ties counted once.

Works on a :class:`Manifest` (so on any checkpoint path, from headers alone), a
:class:`ParamDict`, or a ``torch.nn.Module`` (through ``ParamDict.from_module``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._enums import Role, RoleSource
from .._manifest import Entry, Manifest
from .._names import Pattern, group_prefix

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = ["Count", "Group", "Node", "count", "group", "to_manifest"]


@dataclass
class Node:
    """One name prefix in the tree, with cumulative counts of everything under it.

    Attributes:
        path: the dotted prefix (``""`` for the root).
        params: parameter elements under it.
        trainable: trainable parameter elements under it.
        buffers: buffer elements under it.
        bytes: bytes under it.
        entries: stored entries under it.
        kind: a module type name where known (module sources), else ``None``.
        children: child prefixes by segment, in first-seen order.
    """

    path: str = ""
    params: int = 0
    trainable: int = 0
    buffers: int = 0
    bytes: int = 0
    entries: int = 0
    kind: str | None = None
    children: dict[str, Node] = field(default_factory=dict)

    def _add(self, e: Entry) -> None:
        if e.role is Role.PARAM:
            n = e.logical_numel  # quantised entries count what they stand for
            self.params += n
            self.trainable += n if e.trainable else 0
        else:
            self.buffers += e.numel
        self.bytes += e.nbytes
        self.entries += 1

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """A JSON-able dict of this node and its children down to ``depth`` levels.

        Args:
            depth: how many levels of children to include (``None``: all).

        Returns:
            ``{"path", "params", "trainable", "buffers", "bytes", "entries", "kind",
            "children": [...]}``.
        """
        out: dict[str, Any] = {
            "path": self.path,
            "params": self.params,
            "trainable": self.trainable,
            "buffers": self.buffers,
            "bytes": self.bytes,
            "entries": self.entries,
        }
        if self.kind is not None:
            out["kind"] = self.kind
        if depth is None or depth > 0:
            out["children"] = [
                c.to_dict(None if depth is None else depth - 1) for c in self.children.values()
            ]
        return out


@dataclass
class Count:
    """The result of :func:`count`.

    Attributes:
        params: parameter elements (role ``param``), ties counted once.
        trainable: trainable parameter elements.
        frozen: frozen parameter elements (``params - trainable``).
        buffers: buffer elements.
        bytes: bytes of stored values (ties once).
        by_dtype: dtype → ``{"elements", "bytes"}``.
        roles: ``exact`` or ``inferred``.
        entries: stored entries (ties once).
        ties: tie groups, ``[stored name, alias, ...]``.
        tree: the per-prefix tree.
        format: where the counts came from.
        source: the path, when there is one.
        notes: what the reader or counter wants said.
        nonpersistent_buffers: buffer elements left out of ``state_dict`` (modules only);
            included in ``buffers``.
        uninitialized: lazy tensors not counted (modules only).
        pruned: pruned parameter → ``{"params", "nonzero"}`` (modules only).
        shared: module path → first path of the same instance (modules only).
    """

    params: int
    trainable: int
    frozen: int
    buffers: int
    bytes: int
    by_dtype: dict[str, dict[str, int]]
    roles: RoleSource
    entries: int
    ties: list[list[str]]
    tree: Node
    format: str
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    nonpersistent_buffers: int = 0
    uninitialized: list[str] = field(default_factory=list)
    pruned: dict[str, dict[str, int | None]] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Parameters plus buffer elements."""
        return self.params + self.buffers

    def to_dict(self, depth: int | None = 1) -> dict[str, Any]:
        """The JSON form used by ``paramscope count --json``.

        Args:
            depth: tree levels to include.

        Returns:
            ``params, trainable, frozen, buffers, bytes, by_dtype, roles, entries, ties,
            format, source, notes, tree``.
        """
        return {
            "source": self.source,
            "format": self.format,
            "params": self.params,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "buffers": self.buffers,
            "bytes": self.bytes,
            "entries": self.entries,
            "by_dtype": self.by_dtype,
            "roles": self.roles.value,
            "ties": self.ties,
            "nonpersistent_buffers": self.nonpersistent_buffers,
            "uninitialized": self.uninitialized,
            "pruned": self.pruned,
            "shared": self.shared,
            "notes": self.notes,
            "tree": self.tree.to_dict(depth),
        }


def to_manifest(source: Any) -> Manifest:
    """Any countable source as a :class:`Manifest`.

    Args:
        source: a path, a Manifest, a ParamDict, a ``torch.nn.Module`` or a dict of tensors.

    Returns:
        The manifest (read from headers for paths).
    """
    if isinstance(source, Manifest):
        return source
    if isinstance(source, (str, os.PathLike)):
        from ..io import read_manifest

        return read_manifest(source)
    from .._paramdict import ParamDict  # not needed on the header-only path above

    if isinstance(source, ParamDict):
        return source.manifest()
    if hasattr(source, "named_parameters"):
        from ._module import scan_module

        return scan_module(source).manifest()
    if isinstance(source, dict):
        return ParamDict(source).manifest()
    raise TypeError(
        f"count: expected a path, Manifest, ParamDict or nn.Module, found {type(source).__name__}"
    )


def count(
    source: str | os.PathLike[str] | Manifest | ParamDict | torch.nn.Module,
    *,
    nonzero: bool = False,
) -> Count:
    """Count parameters exactly: totals, trainable/frozen, buffers, bytes by dtype, a tree.

    Ties (aliases of one storage) are counted once, under the stored name. Nonzero counts of
    sparse tensors come for free where they are recorded (pruned modules with masks, files
    written by :func:`paramscope.prune`); ``nonzero=True`` also reads the values (a model's
    tensors, or a checkpoint streamed tensor by tensor) and reports every parameter that has
    zeros in :attr:`Count.pruned`.

    Args:
        source: a checkpoint path (file, sharded folder, index), a Manifest, a ParamDict or a
            module.
        nonzero: read values to count the nonzeros of every parameter with zeros.

    Returns:
        A :class:`Count`.

    Example:
        >>> import torch, paramscope
        >>> c = paramscope.count(torch.nn.Linear(784, 10))
        >>> c.params, c.trainable, c.buffers
        (7850, 7850, 0)
    """
    if hasattr(source, "named_parameters") and not isinstance(source, (Manifest, dict)):
        from ._module import scan_module

        scan = scan_module(source)  # type: ignore[arg-type]
        c = count_manifest(scan.manifest())
        c.uninitialized = scan.uninitialized
        c.pruned = scan.pruned
        c.shared = scan.shared
        _set_kinds(c.tree, scan.kinds)
        if nonzero:
            _nonzero(
                c,
                (
                    (e, _module_tensor(source, e.name))
                    for e in scan.entries
                    if e.tie is None and e.role is Role.PARAM and "packed" not in e.tags
                ),
            )
        return c
    c = count_manifest(to_manifest(source))
    if nonzero:
        _nonzero_of(source, c)
    return c


def _module_tensor(model: Any, name: str) -> Any:
    from ..lifecycle._ties import owner

    mod, local = owner(model, name)
    return mod._parameters.get(local, mod._buffers.get(local))


def _nonzero(c: Count, pairs: Any) -> None:
    import torch

    for e, t in pairs:
        if e.name in c.pruned or t is None or t.is_meta or "quant" in e.extra:
            continue
        nnz = int(torch.count_nonzero(t))
        if nnz < t.numel():
            c.pruned[e.name] = {"params": t.numel(), "nonzero": nnz}


def _nonzero_of(source: Any, c: Count) -> None:
    from .._paramdict import ParamDict

    if isinstance(source, (str, os.PathLike)):
        from ..compress._stream import SourceReader

        with SourceReader(source) as reader:
            _nonzero(
                c,
                (
                    (e, reader.read(e))
                    for e in reader.entries
                    if e.role is Role.PARAM and e.name not in c.pruned
                ),
            )
    elif isinstance(source, (ParamDict, dict)):
        pd = source if isinstance(source, ParamDict) else ParamDict(source)
        m = pd.manifest()
        _nonzero(c, ((m[n], pd[n]) for n in pd.stored() if m[n].role is Role.PARAM))


def _set_kinds(node: Node, kinds: dict[str, str]) -> None:
    node.kind = kinds.get(node.path)
    for child in node.children.values():
        _set_kinds(child, kinds)


def count_manifest(m: Manifest) -> Count:
    """:func:`count` of a manifest.

    Args:
        m: the manifest.

    Returns:
        A :class:`Count`.
    """
    root = Node()
    nonpersistent = 0
    quantized = 0
    sparse: dict[str, dict[str, int | None]] = {}
    by_dtype: dict[str, dict[str, int]] = {}
    for e in m.values():
        if e.tie is not None:
            continue
        if "quant" in e.extra:
            quantized += 1
        nnz = e.extra.get("nonzero")
        if isinstance(nnz, int) and not isinstance(nnz, bool):  # recorded by prune
            sparse[e.name] = {"params": e.logical_numel, "nonzero": nnz}
        d = by_dtype.setdefault(e.dtype.value, {"elements": 0, "bytes": 0})
        d["elements"] += e.numel
        d["bytes"] += e.nbytes
        if e.extra.get("persistent") is False:
            nonpersistent += e.numel
        node = root
        node._add(e)
        parts = e.name.split(".")[:-1]
        for i, seg in enumerate(parts):
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = Node(".".join(parts[: i + 1]))
            child._add(e)
            node = child
    notes = list(m.notes)
    if quantized:
        notes.append(
            f"{quantized} quantised entries counted at their logical size (not packed "
            "elements); their scales and zero points are buffers"
        )
    return Count(
        params=root.params,
        trainable=root.trainable,
        frozen=root.params - root.trainable,
        buffers=root.buffers,
        bytes=root.bytes,
        by_dtype=by_dtype,
        roles=m.roles,
        entries=root.entries,
        ties=m.ties(),
        tree=root,
        format=m.format.value,
        source=m.source,
        notes=notes,
        nonpersistent_buffers=nonpersistent,
        pruned=sparse,
    )


@dataclass
class Group:
    """Entries sharing a name prefix, with subtotals (``inspect``'s rows).

    Attributes:
        prefix: the shared prefix (``""`` for names at the root).
        params: parameter elements (ties once).
        buffers: buffer elements.
        bytes: bytes (ties once).
        entries: the entries, aliases included (their counts are 0 in subtotals).
    """

    prefix: str
    params: int = 0
    buffers: int = 0
    bytes: int = 0
    entries: list[Entry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``prefix, params, buffers, bytes, entries``.

        Returns:
            The dict.
        """
        return {
            "prefix": self.prefix,
            "params": self.params,
            "buffers": self.buffers,
            "bytes": self.bytes,
            "entries": [e.to_dict() for e in self.entries],
        }


def group(m: Manifest, depth: int, pattern: Pattern | None = None) -> list[Group]:
    """Group a manifest's entries by name prefix to ``depth`` segments, with subtotals.

    Subtotals count each stored value once (aliases add nothing), so they add up to the
    totals of :func:`count` on the same entries.

    Args:
        m: the manifest.
        depth: prefix depth (0: one group).
        pattern: an optional glob / ``re:`` filter on names.

    Returns:
        Groups in first-seen order.

    Example:
        >>> from paramscope import Manifest, Entry, DType
        >>> m = Manifest([Entry("a.0.w", (2,), DType.F32), Entry("a.1.w", (3,), DType.F32)])
        >>> [(g.prefix, g.params) for g in group(m, 2)]
        [('a.0', 2), ('a.1', 3)]
    """
    if pattern is not None:
        m = m.select(pattern)
    groups: dict[str, Group] = {}
    for e in m.values():
        key = group_prefix(e.name, depth)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(key)
        g.entries.append(e)
        if e.tie is None:
            if e.role is Role.PARAM:
                g.params += e.logical_numel
            else:
                g.buffers += e.numel
            g.bytes += e.nbytes
    return list(groups.values())


@dataclass
class Inspection:
    """The result of :func:`inspect`: entries grouped by prefix, and totals.

    Attributes:
        total: the :class:`Count` of the (filtered) entries.
        groups: the groups, subtotals adding up to the total.
        depth: the grouping depth.
        filter: the name filter applied, if any.
    """

    total: Count
    groups: list[Group]
    depth: int
    filter: Pattern | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by ``paramscope inspect --json``.

        Returns:
            ``source, format, roles, depth, filter, total, groups, notes``.
        """
        t = self.total
        return {
            "source": t.source,
            "format": t.format,
            "roles": t.roles.value,
            "depth": self.depth,
            "filter": self.filter,
            "total": {
                "params": t.params,
                "trainable": t.trainable,
                "frozen": t.frozen,
                "buffers": t.buffers,
                "bytes": t.bytes,
                "entries": t.entries,
            },
            "ties": t.ties,
            "groups": [g.to_dict() for g in self.groups],
            "notes": t.notes,
        }


def inspect(source: Any, *, depth: int = 1, pattern: Pattern | None = None) -> Inspection:
    """Entries grouped by name prefix to ``depth``, with subtotals that add up to the total.

    Args:
        source: anything :func:`count` takes.
        depth: prefix depth of the groups.
        pattern: optional glob / ``re:`` filter on names; totals then cover the filtered set.

    Returns:
        An :class:`Inspection`.

    Example:
        >>> import torch, paramscope
        >>> ins = paramscope.inspect(torch.nn.Sequential(torch.nn.Linear(4, 2)), depth=1)
        >>> [(g.prefix, g.params) for g in ins.groups]
        [('0', 10)]
    """
    m = to_manifest(source)
    if pattern is not None:
        m = m.select(pattern)
    return Inspection(count(m), group(m, depth), depth, pattern)
