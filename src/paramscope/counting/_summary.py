"""summary: a module's tree with own and cumulative counts, layer types, ties and formulas."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._enums import Role
from .._errors import ParamscopeError
from ._count import Count, count_manifest
from ._module import ModuleScan, scan_module

if TYPE_CHECKING:
    import torch

__all__ = ["ModuleNode", "Summary", "summary"]


@dataclass
class ModuleNode:
    """One module path in the tree.

    Attributes:
        path: dotted path (``""`` for the root).
        kind: the module's type name.
        own_params: parameters registered on this module itself (not its children).
        params: parameters under this path, each counted once in the whole tree.
        trainable: trainable parameters under this path.
        buffers: buffer elements under this path.
        bytes: bytes under this path.
        shared_with: for a later path to an instance seen before, the first path; its
            counts are 0 here (they are counted there).
        formula: the analytic formula of a leaf layer, when one exists.
        tied: this module's own tensors that alias a tensor counted elsewhere, as
            ``local name → the name it is counted under``.
        children: child nodes in registration order.
    """

    path: str
    kind: str
    own_params: int = 0
    params: int = 0
    trainable: int = 0
    buffers: int = 0
    bytes: int = 0
    shared_with: str | None = None
    formula: dict[str, Any] | None = None
    tied: dict[str, str] = field(default_factory=dict)
    children: list[ModuleNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The last segment of the path (``"(root)"`` for the root)."""
        return self.path.rsplit(".", 1)[-1] if self.path else "(root)"

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """JSON form, children to ``depth`` levels.

        Args:
            depth: levels of children to include (``None``: all).

        Returns:
            ``path, kind, own_params, params, trainable, buffers, bytes, shared_with, formula,
            tied, children``.
        """
        out: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "own_params": self.own_params,
            "params": self.params,
            "trainable": self.trainable,
            "buffers": self.buffers,
            "bytes": self.bytes,
            "shared_with": self.shared_with,
            "formula": self.formula,
            "tied": self.tied,
        }
        if depth is None or depth > 0:
            out["children"] = [
                c.to_dict(None if depth is None else depth - 1) for c in self.children
            ]
        return out


@dataclass
class Summary:
    """The result of :func:`summary`.

    Attributes:
        total: the :class:`Count` of the whole module.
        root: the module tree.
        by_type: layer type → ``{"modules", "params"}`` (unique instances, their own params).
        depth: the depth shown by default.
    """

    total: Count
    root: ModuleNode
    by_type: dict[str, dict[str, int]]
    depth: int | None = None

    def rows(self, depth: int | None = None) -> list[tuple[int, ModuleNode]]:
        """The tree flattened to ``(level, node)`` rows down to ``depth``.

        Args:
            depth: deepest level shown (``None``: the summary's own depth, or all).

        Returns:
            Rows in tree order; level 0 is the root.
        """
        limit = self.depth if depth is None else depth
        out: list[tuple[int, ModuleNode]] = []

        def walk(node: ModuleNode, level: int) -> None:
            out.append((level, node))
            if limit is None or level < limit:
                for c in node.children:
                    walk(c, level + 1)

        walk(self.root, 0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by ``paramscope inspect TARGET --json`` for modules.

        Returns:
            ``total`` (the count's JSON), ``depth``, ``tree``, ``by_type``, ``ties``,
            ``shared``, ``formulas`` (path → formula of leaf layers).
        """
        formulas = {n.path: n.formula for _, n in self.rows(None) if n.formula is not None}
        total = self.total.to_dict(depth=0)
        total.pop("tree", None)
        return {
            "total": total,
            "depth": self.depth,
            "tree": self.root.to_dict(self.depth),
            "by_type": self.by_type,
            "ties": self.total.ties,
            "shared": self.total.shared,
            "formulas": formulas,
        }


def summary(
    model: torch.nn.Module | str | os.PathLike[str], *, depth: int | None = None
) -> Summary:
    """Summarise a module: totals, a module tree, a by-layer-type table, ties and formulas.

    Counting never runs ``forward``; any device works, ``meta`` included. Every parameter is
    counted once, under the first path that reaches it, so the children of every node add up
    to the node (asserted in the tests).

    Args:
        model: the module, or a model TARGET (``zoo:NAME``, ``package.module:callable``, an
            HF ``config.json``), built on the meta device.
        depth: how deep :meth:`Summary.rows` and the JSON tree go by default (``None``: all).

    Returns:
        A :class:`Summary`.

    Raises:
        ParamscopeError: ``model`` is a checkpoint path (a file has no module tree: use
            :func:`paramscope.inspect`) or neither a module nor a TARGET.

    Example:
        >>> import torch
        >>> s = summary(torch.nn.Sequential(torch.nn.Linear(784, 10)), depth=1)
        >>> s.root.params, s.root.children[0].formula["expression"]
        (7850, '784×10 + 10 = 7,850')
    """
    if isinstance(model, (str, os.PathLike)):
        from .._targets import resolve_target

        spec = os.fspath(model)
        model = resolve_target(spec)
        if isinstance(model, str):
            raise ParamscopeError(
                f"{spec}: summary needs a model (an nn.Module, zoo:NAME, package.module:callable "
                "or an HF config.json); a checkpoint has no module tree: use paramscope.inspect"
            )
    if not hasattr(model, "_modules"):
        raise ParamscopeError(
            f"summary: expected an nn.Module or a model TARGET, found {type(model).__name__}"
        )
    scan = scan_module(model)
    total = count_manifest(scan.manifest())
    total.uninitialized = scan.uninitialized
    total.pruned = scan.pruned
    total.shared = scan.shared
    nodes = _build_tree(scan)
    by_type: dict[str, dict[str, int]] = {}
    for path, mod in scan.modules.items():  # unique instances only
        row = by_type.setdefault(type(mod).__name__, {"modules": 0, "params": 0})
        row["modules"] += 1
        row["params"] += nodes[path].own_params
    ordered = dict(sorted(by_type.items(), key=lambda kv: -kv[1]["params"]))
    return Summary(total, nodes[""], ordered, depth)


def _build_tree(scan: ModuleScan) -> dict[str, ModuleNode]:
    from ._formulas import formula_for

    nodes: dict[str, ModuleNode] = {}
    for path, kind in scan.kinds.items():
        node = ModuleNode(path, kind, shared_with=scan.shared.get(path))
        nodes[path] = node
        if path:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            nodes[parent].children.append(node)
    for e in scan.entries:
        owner = e.name.rsplit(".", 1)[0] if "." in e.name else ""
        if e.tie is not None:
            if owner in nodes and owner not in scan.shared:
                nodes[owner].tied[e.name.rsplit(".", 1)[-1]] = e.tie
            continue
        if owner in nodes and e.role is Role.PARAM:
            nodes[owner].own_params += e.numel
        parts = e.name.split(".")[:-1]
        for i in range(len(parts) + 1):
            node = nodes.get(".".join(parts[:i]))
            if node is None:
                continue
            if e.role is Role.PARAM:
                node.params += e.numel
                node.trainable += e.numel if e.trainable else 0
            else:
                node.buffers += e.numel
            node.bytes += e.nbytes
    for path, mod in scan.modules.items():
        node = nodes[path]
        if not node.children:
            f = formula_for(mod)
            if f is not None:
                node.formula = f.to_dict()
    return nodes
