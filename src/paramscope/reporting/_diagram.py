"""Parameter-structure diagrams: a model's modules (or a checkpoint's name prefixes) as nested
states, their tensors as simple states with shape and count, ties and shared modules as edges.

Two outputs: Mermaid ``stateDiagram-v2`` (for Markdown) and Graphviz ``dot`` (for ``dot -Tsvg``).
Runs of 3+ identical sibling blocks (GPT-2's ``h.0`` … ``h.11``) are drawn once, as
``h.0–11 ×12``, so a 7B model stays a few dozen lines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError
from .._manifest import Entry, Manifest
from .._text import printable

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict
    from ..counting._count import Node
    from ..counting._summary import ModuleNode

__all__ = ["FORMATS", "diagram"]

FORMATS: tuple[str, ...] = ("mermaid", "dot")
"""The diagram formats :func:`diagram` writes."""

_RUN = 3  # the shortest run of identical siblings drawn once
_ID_BAD = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class _Tree:
    """A module or name prefix, format- and source-neutral."""

    path: str
    kind: str | None
    params: int
    buffers: int
    shared_with: str | None = None
    entries: list[Entry] = field(default_factory=list)
    children: list[_Tree] = field(default_factory=list)

    def walk(self) -> Iterator[_Tree]:
        yield self
        for c in self.children:
            yield from c.walk()

    def signature(self) -> tuple[Any, ...]:
        """What must agree for two siblings to be drawn as one (names relative to self)."""
        return (
            self.kind,
            self.params,
            self.buffers,
            self.shared_with is not None,
            tuple((_local(e.name), e.shape, e.role, e.tie is not None) for e in self.entries),
            tuple((_local(c.path), c.signature()) for c in self.children),
        )


@dataclass
class _State:
    """One drawn state: simple when ``children`` is empty, else composite."""

    id: str
    label: list[str]
    children: list[_State] = field(default_factory=list)
    kind: str = "module"  # "module" or "entry"


def _local(name: str) -> str:
    return name.rpartition(".")[2]


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


# -- sources -------------------------------------------------------------------------------------


def _from_module(model: torch.nn.Module) -> _Tree:
    from ..counting import scan_module, summary

    s = summary(model)
    owned: dict[str, list[Entry]] = {}
    for e in scan_module(model).entries:
        owned.setdefault(_parent(e.name), []).append(e)

    def conv(n: ModuleNode) -> _Tree:
        t = _Tree(n.path, n.kind, n.params, n.buffers, n.shared_with)
        if n.shared_with is None:  # a shared path is drawn as one state and a "shared" edge
            t.entries = owned.get(n.path, [])
            t.children = [conv(c) for c in n.children]
        return t

    return conv(s.root)


def _from_manifest(m: Manifest) -> _Tree:
    from ..counting import count_manifest

    def conv(n: Node) -> _Tree:
        return _Tree(
            n.path, n.kind, n.params, n.buffers, children=[conv(c) for c in n.children.values()]
        )

    root = conv(count_manifest(m).tree)
    index = {t.path: t for t in root.walk()}

    def ensure(path: str) -> _Tree:  # aliases may live under prefixes with no stored entry
        if path not in index:
            t = index[path] = _Tree(path, None, 0, 0)
            ensure(_parent(path) if "." in path else "").children.append(t)
        return index[path]

    for e in m.values():
        ensure(_parent(e.name)).entries.append(e)
    return root


def _source_tree(source: Any) -> tuple[_Tree, str]:
    from .._paramdict import ParamDict
    from ..counting import to_manifest

    if isinstance(source, (str, os.PathLike)):
        from .._targets import resolve_target

        source = resolve_target(source)
    if hasattr(source, "named_parameters") and not isinstance(source, (Manifest, ParamDict)):
        return _from_module(source), type(source).__name__
    m = to_manifest(source, "diagram")
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else type(source).__name__
    return _from_manifest(m), name


# -- layout --------------------------------------------------------------------------------------


def _count_text(t: _Tree) -> str:
    text = f"{t.params:,} params"
    return text + (f", {t.buffers:,} buffer elements" if t.buffers else "")


def _entry_label(e: Entry) -> list[str]:
    shape = "×".join(map(str, e.shape)) if e.shape else "scalar"
    local = _local(e.name)
    if e.tie is not None:
        return [f"{local} {shape} (tied)"]
    buffer = " (buffer)" if e.role.value != "param" else ""
    return [f"{local} {shape} = {e.numel:,}{buffer}"]


def _display_name(path: str) -> str:
    local = _local(path)
    if local.isdigit() and "." in path:  # a list index reads better with its list: "h.0"
        return f"{_local(_parent(path))}.{local}"
    return local


class _Planner:
    """Turns a :class:`_Tree` into nested :class:`_State` objects and resolved edges."""

    def __init__(self, depth: int | None) -> None:
        self.depth = depth
        self.ids: set[str] = set()
        self.where: dict[str, str] = {}  # module path or entry name → drawn state id

    def new_id(self, prefix: str, name: str) -> str:
        base = prefix + (_ID_BAD.sub("_", name) or "root")
        sid, i = base, 1
        while sid in self.ids:
            i += 1
            sid = f"{base}_{i}"
        self.ids.add(sid)
        return sid

    def plan(self, t: _Tree, level: int, label: list[str]) -> _State:
        sid = self.new_id("s_", t.path)
        self.where[t.path] = sid
        state = _State(sid, label)
        expand = self.depth is None or level < self.depth
        if not expand or t.shared_with is not None or not (t.entries or t.children):
            return state
        for e in t.entries:
            eid = self.new_id("e_", e.name)
            self.where.setdefault(e.name, eid)
            state.children.append(_State(eid, _entry_label(e), kind="entry"))
        kids = t.children
        i = 0
        while i < len(kids):
            j = i
            sig = kids[i].signature() if kids[i].shared_with is None else None
            while sig is not None and j + 1 < len(kids) and kids[j + 1].signature() == sig:
                j += 1
            if j - i + 1 >= _RUN:
                first, last, n = kids[i], kids[j], j - i + 1
                name = f"{_display_name(first.path)}–{_local(last.path)} ×{n}"
                each = f"{first.params:,} params each" + (
                    f", {first.buffers:,} buffer elements each" if first.buffers else ""
                )
                sub = self.plan(first, level + 1, [f"{name} ({first.kind})", each])
                if first.kind is None:
                    sub.label[0] = name
                for other in kids[i + 1 : j + 1]:
                    self.where[other.path] = sub.id
                state.children.append(sub)
                i = j + 1
                continue
            state.children.append(self.plan(kids[i], level + 1, _module_label(kids[i])))
            i += 1
        return state

    def resolve(self, name: str) -> str:
        while name not in self.where:
            name = _parent(name) if "." in name else ""
        return self.where[name]


def _module_label(t: _Tree) -> list[str]:
    head = _display_name(t.path) + (f" ({t.kind})" if t.kind else "")
    if t.shared_with is not None:
        return [head, f"shared with {t.shared_with}"]
    return [head, _count_text(t)]


def _layout(
    tree: _Tree, title: str, depth: int | None
) -> tuple[_State, list[tuple[str, str, str]]]:
    planner = _Planner(depth)
    root_label = [
        title + (f" ({tree.kind})" if tree.kind and tree.kind != title else ""),
        _count_text(tree),
    ]
    root = planner.plan(tree, 0, root_label)
    edges: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    raw: list[tuple[str, str, str]] = []
    for t in tree.walk():
        if t.shared_with is not None:
            raw.append((t.path, t.shared_with, "shared"))
        raw.extend((e.name, e.tie, "tied") for e in t.entries if e.tie is not None)
    for a, b, why in raw:
        edge = (planner.resolve(a), planner.resolve(b), why)
        if edge[0] != edge[1] and edge not in seen:
            seen.add(edge)
            edges.append(edge)
    return root, edges


# -- writers -------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    text = printable(text)  # names from files: no ESC, CR or bidi override reaches the output
    text = text.replace('"', "'").replace(":", " -").replace("\n", " ")
    return re.sub(r"[{}\[\];#<>\\`|]", "", text)


def _to_mermaid(root: _State, edges: list[tuple[str, str, str]]) -> str:
    lines = ["stateDiagram-v2"]

    def emit(s: _State, indent: str) -> None:
        label = _mermaid_text(" · ".join(s.label))
        lines.append(f'{indent}state "{label}" as {s.id}')
        if s.children:
            lines.append(f"{indent}state {s.id} {{")
            for c in s.children:
                emit(c, indent + "    ")
            lines.append(f"{indent}}}")

    emit(root, "    ")
    lines.extend(f"    {a} --> {b} : {_mermaid_text(why)}" for a, b, why in edges)
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    text = printable(text)  # names from files: no ESC, CR or bidi override reaches the output
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _to_dot(root: _State, edges: list[tuple[str, str, str]]) -> str:
    lines = [
        "digraph paramscope {",
        "    compound=true;",
        "    rankdir=LR;",
        "    node [shape=box, fontsize=10];",
        "    graph [fontsize=11, style=rounded];",
    ]
    by_id: dict[str, _State] = {}
    inside: dict[str, set[str]] = {}  # composite id → ids of everything drawn inside it

    def emit(s: _State, indent: str) -> set[str]:
        by_id[s.id] = s
        label = "\\n".join(_dot_text(x) for x in s.label)
        if not s.children:
            style = "" if s.kind == "entry" else ', style="rounded,filled", fillcolor="#eeeeee"'
            lines.append(f'{indent}"{s.id}" [label="{label}"{style}];')
            return {s.id}
        lines.append(f'{indent}subgraph "cluster_{s.id}" {{')
        lines.append(f'{indent}    label="{label}";')
        ids: set[str] = set()
        for c in s.children:
            ids |= emit(c, indent + "    ")
        lines.append(f"{indent}}}")
        inside[s.id] = ids
        return ids | {s.id}

    def anchor(sid: str) -> str:
        s = by_id[sid]
        while s.children:
            s = s.children[0]
        return s.id

    emit(root, "    ")
    for a, b, why in edges:
        attrs = [f'label="{_dot_text(why)}"', "style=dashed"]
        if a in inside and b not in inside[a] and a not in inside.get(b, ()):
            attrs.append(f'ltail="cluster_{a}"')
        if b in inside and a not in inside[b] and b not in inside.get(a, ()):
            attrs.append(f'lhead="cluster_{b}"')
        lines.append(f'    "{anchor(a)}" -> "{anchor(b)}" [{", ".join(attrs)}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def diagram(
    source: str | os.PathLike[str] | Manifest | ParamDict | torch.nn.Module,
    *,
    format: str = "mermaid",
    depth: int | None = None,
) -> str:
    """Draw the parameter structure of a model or checkpoint as a Mermaid or Graphviz diagram.

    Modules (for a checkpoint: dotted name prefixes) are nested composite states labelled with
    their type and cumulative parameter count; their own tensors are simple states inside them
    (``weight 768×2304 = 1,769,472``). Ties are edges from the alias to the stored tensor
    (``tied``), a module reachable by a second path an edge to its first path (``shared``).
    Runs of 3+ identical sibling blocks are drawn once (``h.0–11 ×12``).

    Args:
        source: a ``torch.nn.Module``; a checkpoint path, :class:`Manifest` or
            :class:`ParamDict`; or a TARGET string (``zoo:gpt2``, ``package.module:callable``,
            a path) resolved with :func:`paramscope.resolve_target`.
        format: ``"mermaid"`` (``stateDiagram-v2``) or ``"dot"`` (Graphviz).
        depth: levels of modules drawn as composites below the root (``None``: all); a
            module at the depth is one simple state with its cumulative count.

    Returns:
        The diagram text, ending in a newline.

    Raises:
        ArgumentError: an unknown format or a negative depth.
        ArgumentTypeError: a source of a type it does not take.
        ParamscopeError: a source that cannot be read (a subclass naming why).

    Example:
        >>> import torch
        >>> text = diagram(torch.nn.Sequential(torch.nn.Linear(784, 256)))
        >>> text.splitlines()[0]
        'stateDiagram-v2'
        >>> "weight 256×784 = 200,704" in text
        True
    """
    if format not in FORMATS:
        raise ArgumentError(
            f"diagram: format={format!r}: expected one of {', '.join(map(repr, FORMATS))} "
            "(Mermaid or Graphviz text)"
        )
    if depth is not None and depth < 0:
        raise ArgumentError(f"diagram: depth={depth}: expected >= 0, or None for all levels")
    tree, title = _source_tree(source)
    root, edges = _layout(tree, title, depth)
    return _to_mermaid(root, edges) if format == "mermaid" else _to_dot(root, edges)
