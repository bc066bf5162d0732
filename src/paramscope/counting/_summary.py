"""summary: a module's tree with own and cumulative counts, layer types, ties and formulas."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .._enums import Role
from .._errors import ArgumentTypeError, TargetError
from .._names import Pattern
from ._count import Count, count_manifest
from ._module import ModuleScan, scan_module

if TYPE_CHECKING:
    import torch

    from ._flops import FlopsReport

__all__ = ["ModuleNode", "Summary", "filter_tree", "summary"]


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
        filter: the module-path pattern the shown tree is narrowed to (see :meth:`shown`).
        flops: a measured :class:`~paramscope.counting.FlopsReport` of the same model whose
            per-module FLOPs are shown next to the parameters (``None``: no FLOPs column).
    """

    total: Count
    root: ModuleNode
    by_type: dict[str, dict[str, int]]
    depth: int | None = None
    filter: Pattern | None = None
    _shown: ModuleNode | None = field(default=None, repr=False, compare=False)
    flops: FlopsReport | None = field(default=None, repr=False, compare=False)

    def shown(self) -> ModuleNode:
        """The tree as shown: :attr:`root` down to :attr:`depth`, narrowed to the module
        paths that match :attr:`filter` (with their ancestors; the root is always kept).

        Returns:
            A pruned copy of the tree (the root itself without a filter).

        Raises:
            MissingNameError: the filter matches no module path down to :attr:`depth`: the
                message names the depth that would show a deeper match, or suggests close
                paths, or says that it matches parameter names (``*.weight``) instead.

        Example:
            >>> import torch
            >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
            >>> [c.path for c in summary(model, pattern="0").shown().children]
            ['0']
        """
        if self.filter is None:
            return self.root
        if self._shown is None:
            self._shown = filter_tree(self.root, self.filter, self.depth)
        return self._shown

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
            ``shared``, ``formulas`` (path → formula of leaf layers); with :attr:`flops`
            also ``flops`` (the report's totals, inputs, convention, uncounted ops and notes)
            and a ``flops`` value on every tree node (``None`` where the report has no such
            path).
        """
        formulas = {n.path: n.formula for _, n in self.rows(None) if n.formula is not None}
        total = self.total.to_dict(depth=0)
        total.pop("tree", None)
        out = {
            "total": total,
            "depth": self.depth,
            "tree": self.shown().to_dict(self.depth),
            "by_type": self.by_type,
            "ties": self.total.ties,
            "shared": self.total.shared,
            "formulas": formulas,
        }
        if self.filter is not None:
            out["filter"] = self.filter
        if self.flops is not None:
            _add_flops(out, self.flops)
        return out

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope inspect TARGET`` prints for a model: the module tree
        (runs of identical blocks as one row), totals, the by-layer-type table, ties, shared
        modules, pruned tensors and notes.

        Args:
            width: the table width (``None``: unlimited, nothing is cut or wrapped).

        Returns:
            The text, without a final newline; strings are escaped for a terminal.

        Example:
            >>> import torch
            >>> s = summary(torch.nn.Sequential(torch.nn.Linear(784, 10)), depth=1)
            >>> print(s.to_text().splitlines()[5])
               0      Linear        7,850   7,850             784×10 + 10 = 7,850
        """
        from .._text import printable_tree
        from ._render import summary_text

        return summary_text(printable_tree(self.to_dict()), width)


def summary(
    model: torch.nn.Module | str | os.PathLike[str],
    *,
    depth: int | None = None,
    pattern: Pattern | None = None,
    flops: FlopsReport | None = None,
) -> Summary:
    """Summarise a module: totals, a module tree, a by-layer-type table, ties and formulas.

    Counting never runs ``forward``; any device works, ``meta`` included. Every parameter is
    counted once, under the first path that reaches it, so the children of every node add up
    to the node (asserted in the tests).

    Args:
        model: the module, or a model TARGET (``zoo:NAME``, ``package.module:callable``, an
            HF ``config.json``), built on the meta device.
        depth: how deep :meth:`Summary.rows` and the JSON tree go by default (``None``: all).
        pattern: show only the module paths matching this glob / ``re:`` pattern (and their
            ancestors) down to ``depth`` (:meth:`Summary.shown`); counts stay the whole
            model's.
        flops: a measured :func:`~paramscope.counting.flops` report of the same model, shown
            as a FLOPs column per module (matched by module path) and in the totals.

    Returns:
        A :class:`Summary`.

    Raises:
        MissingNameError: ``pattern`` matches no module path down to ``depth``.
        TargetError: ``model`` is a checkpoint path (a file has no module tree: use
            :func:`paramscope.inspect`).
        ArgumentTypeError: ``model`` is neither a module nor a TARGET.
        ArgumentError: ``flops`` has no module tree (an analytic report).

    Example:
        >>> import torch
        >>> s = summary(torch.nn.Sequential(torch.nn.Linear(784, 10)), depth=1)
        >>> s.root.params, s.root.children[0].formula["expression"]
        (7850, '784×10 + 10 = 7,850')
    """
    if flops is not None and getattr(flops, "root", None) is None:
        from .._errors import ArgumentError

        raise ArgumentError(
            "summary: flops= must be a measured FlopsReport with a module tree; found "
            f"{getattr(flops, 'method', type(flops).__name__)!r} (an analytic report has none)"
        )
    spec = None  # the TARGET as given, which names the summary's source
    if isinstance(model, (str, os.PathLike)):
        from .._targets import resolve_target

        spec = os.fspath(model)
        model = resolve_target(spec)
        if isinstance(model, str):
            raise TargetError(
                f"{spec}: summary needs a model (an nn.Module, zoo:NAME, package.module:callable "
                "or an HF config.json); a checkpoint has no module tree: use paramscope.inspect"
            )
    if not hasattr(model, "_modules"):
        raise ArgumentTypeError(
            f"summary: expected an nn.Module or a model TARGET, found {type(model).__name__}"
        )
    scan = scan_module(model)
    total = count_manifest(scan.manifest())
    total.source = spec
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
    shown = None
    if pattern is not None:
        params = [e.name for e in scan.entries if e.role is Role.PARAM]
        shown = filter_tree(nodes[""], pattern, depth, params)
    return Summary(total, nodes[""], ordered, depth, pattern, shown, flops)


def _add_flops(out: dict[str, Any], report: FlopsReport) -> None:
    """Put ``report``'s per-module FLOPs on every node of ``out["tree"]`` (by path) and its
    totals under ``out["flops"]``."""
    from ._flops import CONVENTION

    by_path: dict[str, int] = {}
    stack = [report.root] if report.root is not None else []
    while stack:
        node = stack.pop()
        by_path[node.path] = node.flops
        stack.extend(node.children)

    def put(d: dict[str, Any]) -> None:
        d["flops"] = by_path.get(d["path"])
        for c in d.get("children", []):
            put(c)

    put(out["tree"])
    out["flops"] = {
        "flops": report.flops,
        "macs": report.macs,
        "forward_flops": report.forward_flops,
        "backward_flops": report.backward_flops,
        "convention": CONVENTION,
        "method": report.method,
        "inputs": report.inputs,
        "uncounted": report.uncounted,
        "notes": report.notes,
    }


def filter_tree(
    root: ModuleNode,
    pattern: Pattern,
    depth: int | None = None,
    param_names: Iterable[str] | None = None,
) -> ModuleNode:
    """Keep the nodes down to ``depth`` whose path matches ``pattern``, with their ancestors.

    Args:
        root: the module tree.
        pattern: glob or ``re:`` regex on module paths.
        depth: the levels below the root that are shown (``None``: all); a match deeper
            than that is named in the error, with the depth that would show it.
        param_names: the model's parameter names, to say so when the pattern matches those
            (``*.weight``) rather than module paths.

    Returns:
        A pruned copy of the tree, cut at ``depth`` (the root is always kept).

    Raises:
        MissingNameError: nothing down to ``depth`` matches: the message names the
            ``--depth`` that would show a deeper match, or suggests close paths and lists the
            top-level ones.

    Example:
        >>> tree = ModuleNode("", "Net", children=[ModuleNode("fc", "Linear")])
        >>> [c.path for c in filter_tree(tree, "f*").children]
        ['fc']
    """
    from .._errors import MissingNameError
    from .._names import compile_pattern, no_match

    match = compile_pattern(pattern)

    def keep(node: ModuleNode, left: int | None) -> ModuleNode | None:
        below = node.children if left is None or left > 0 else []
        step = None if left is None else left - 1
        kids = [k for k in (keep(c, step) for c in below) if k is not None]
        if kids or (node.path and match(node.path)):
            return replace(node, children=kids)
        return None

    kept = keep(root, depth)
    if kept is not None:
        return kept

    def walk(node: ModuleNode) -> Iterator[str]:
        if node.path:
            yield node.path
        for c in node.children:
            yield from walk(c)

    names = list(walk(root))
    shown = pattern if isinstance(pattern, str) else ", ".join(pattern)
    deeper = sorted((p for p in names if match(p)), key=lambda p: (p.count("."), p))
    if deeper:
        more = f" and {len(deeper) - 1} more" if len(deeper) > 1 else ""
        need = deeper[0].count(".") + 1
        raise MissingNameError(
            f"filter {shown!r} matches no module path in the tree shown; {deeper[0]!r}{more} "
            f"{'match' if more else 'matches'} deeper: use --depth {need} or more "
            f"(depth={need})"
        )
    error = no_match(pattern, names, what="module path")
    hits = [n for n in param_names or () if match(n)]
    if hits:
        owner = hits[0].rpartition(".")[0] or "(root)"
        raise type(error)(
            f"{error}; it matches parameter names ({hits[0]!r}…): for a model, --filter "
            f"(pattern=) selects module paths such as {owner!r}"
        )
    raise error


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
