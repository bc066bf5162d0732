"""Sub-networks of a supernet: fewer blocks and narrower layers, as views of the big model.

A supernet (once-for-all, slimmable networks, a pretrained model searched for a smaller one)
holds many sub-networks. :func:`subnet` builds one: the blocks kept (``depth`` /
``keep_ratio``) and the channels or neurons kept per layer (``width``), with weights that are
slices of the supernet's (views with ``share=True``, so training or editing the supernet shows
in every sub-network; copies with ``share=False``). :func:`count_subnet` gives a candidate's
parameter count from the traced graph and the shapes alone, without building anything, so a
search can score thousands of candidates.

Both stand on the traced dependency graph of :mod:`._depgraph` (consumers follow their
producers: narrowing ``layer1.0.conv1`` narrows its BatchNorm and ``conv2``'s input; a residual
stream is one joined space) and on the block stacks of :mod:`._stacks` (an
``nn.ModuleList`` / ``nn.Sequential`` of blocks of one class that its owner runs in order).
A block whose parameters differ from the stack's last block (ResNet's first block of a stage,
with its ``downsample``) changes the shape and is always kept.

Kept units. ``importance="order"`` keeps the first ``k`` units of a space and the first blocks
of a stack (the supernet convention: its channels are sorted by importance when it is
trained); ``"l1"`` / ``"l2"`` keep the ``k`` units whose producers' weight slices have the
largest norm (as :func:`paramscope.shrink` ranks them) and the blocks whose parameters do; a
callable is called as ``shrink`` calls it: ``f(name, weight_slice) -> float`` for units,
``f(stack, block_index, tensors) -> float`` for blocks. A view needs the kept units to be one
run, so ``share=True`` with ``width`` needs ``importance="order"``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    import torch

    from ._depgraph import Space

__all__ = ["SubnetReport", "Supernet", "count_subnet", "subnet", "trace_supernet"]

Depth = Sequence[int] | Mapping[str, "Sequence[int] | int"] | None
Width = Mapping[str, "float | int"] | None
Importance = str | Callable[..., float]


@dataclass
class _Stack:
    name: str
    size: int
    fixed: list[bool]  # blocks that are always kept
    prefixes: list[str]
    norms: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class _Tensor:
    numel: int
    shape: tuple[int, ...]
    cuts: tuple[tuple[int, int, int], ...]  # (dim, space, block)
    homes: tuple[tuple[int, int], ...] | None  # (stack, block) holders; None: kept always


@dataclass
class Supernet:
    """A supernet's traced graph and block stacks, ready to count sub-networks quickly.

    Made by :func:`trace_supernet`; :func:`count_subnet` takes it in place of the model.

    Attributes:
        model: the supernet.
        params: its parameter count (ties once).
        spaces: per joined space: ``(size, producer names, why it cannot narrow or "")``.
        stacks: ``(stack name, number of blocks, indices of blocks always kept)``.
        leaves: submodules fx could not trace inside.
        notes: stacks left whole, and why.
    """

    model: Any
    params: int
    spaces: list[tuple[int, list[str], str]]
    stacks: list[tuple[str, int, list[int]]]
    leaves: set[str]
    notes: list[str] = field(default_factory=list)
    _graph: list[Space] = field(default_factory=list, repr=False)
    _stacks: list[_Stack] = field(default_factory=list, repr=False)
    _tensors: list[_Tensor] = field(default_factory=list, repr=False)
    _fixed_params: int = field(default=0, repr=False)
    _match_cache: dict[str, list[tuple[int, set[str]]]] = field(default_factory=dict, repr=False)


@dataclass
class SubnetReport:
    """What :func:`subnet` built.

    Attributes:
        params_before: the supernet's parameters (ties once).
        params_after: the sub-network's (equal to its ``sum(p.numel())`` over unique ones).
        buffers_before: the supernet's buffer elements.
        buffers_after: the sub-network's.
        blocks: per stack with blocks left out: ``{"name", "kept", "total"}`` (kept indices).
        widths: per narrowed space: ``{"name", "kept", "total", "members"}``.
        shared: the weights are views of the supernet's.
        importance: how units and blocks were chosen.
        deviation: with example inputs: ``{"max_abs", "relative"}`` against the supernet.
        notes: what else there is to know.
        model: the sub-network (not part of :meth:`to_dict`).

    Example:
        >>> SubnetReport(100, 60, 0, 0).to_dict()["params_removed"]
        40
    """

    params_before: int
    params_after: int
    buffers_before: int
    buffers_after: int
    blocks: list[dict[str, Any]] = field(default_factory=list)
    widths: list[dict[str, Any]] = field(default_factory=list)
    shared: bool = True
    importance: str = "order"
    deviation: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    model: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the attributes but :attr:`model`, and ``params_removed``.

        Returns:
            The dict.

        Example:
            >>> sorted(SubnetReport(1, 1, 0, 0).to_dict())[:3]
            ['blocks', 'buffers_after', 'buffers_before']
        """
        d = {k: v for k, v in self.__dict__.items() if k != "model"}
        d["params_removed"] = self.params_before - self.params_after
        return d

    def to_text(self, width: int | None = None) -> str:
        """The human form: the totals, the stacks, the narrowed layers and the notes.

        Args:
            width: unused (every report's signature).

        Returns:
            The text, without a final newline.

        Example:
            >>> print(SubnetReport(100, 60, 8, 4).to_text())
            subnet [order, views]: 100 -> 60 parameters (40.0% removed); buffers 8 -> 4
        """
        from .._text import printable
        from .._units import format_count
        from ._shrink_report import deviation_line

        gone = self.params_before - self.params_after
        pct = 100 * gone / self.params_before if self.params_before else 0.0
        lines = [
            f"subnet [{printable(self.importance)}, {'views' if self.shared else 'copies'}]: "
            f"{format_count(self.params_before)} -> {format_count(self.params_after)} "
            f"parameters ({pct:.1f}% removed); buffers {format_count(self.buffers_before)} -> "
            f"{format_count(self.buffers_after)}"
        ]
        for b in self.blocks:
            lines.append(
                f"blocks {printable(b['name'])}: {len(b['kept'])}/{b['total']} kept {b['kept']}"
            )
        for w in self.widths:
            lines.append(f"width {printable(w['name'])}: {w['kept']}/{w['total']}")
        if self.deviation is not None:
            lines.append(deviation_line(self.deviation))
        lines += [f"note: {printable(n)}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------ tracing
def _find_stacks(model: torch.nn.Module, example_inputs: Any) -> tuple[list[_Stack], list[str]]:
    """Block stacks whose blocks can be left out (outermost only), and notes."""
    from torch import nn

    from ._stacks import block_signature, observe_blocks, runs_in_order

    owners: dict[int, tuple[Any, str]] = {}
    for _, parent in model.named_modules():
        for attr, child in parent._modules.items():
            if child is not None:
                owners.setdefault(id(child), (parent, attr))
    found: list[tuple[str, Any]] = []
    notes: list[str] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList | nn.Sequential) or len(mod) < 2:
            continue
        if any(name.startswith(f + ".") or not f for f, _ in found):
            continue
        blocks = list(mod)
        if len({type(b) for b in blocks}) != 1 or not any(True for _ in blocks[0].children()):
            continue
        owner, attr = owners.get(id(mod), (None, ""))
        if example_inputs is None and not runs_in_order(owner, attr, mod):
            notes.append(
                f"{name}: the forward of {type(owner).__name__} does not visibly run it block "
                "by block; its blocks are all kept (pass example_inputs to check by running it)"
            )
            continue
        found.append((name, mod))
    if example_inputs is not None and found:
        seen = observe_blocks(model, [s for _, s in found], example_inputs, "l1")
        ok = []
        for n, s in found:
            order, _, same = seen[id(s)]
            if order != list(range(len(s))):
                notes.append(
                    f"{n}: its blocks ran in the order {order} on the example inputs, not each "
                    "once in order; they are all kept"
                )
                continue
            ok.append((n, s, same))
    else:
        ok = [(n, s, [True] * len(s)) for n, s in found]
    stacks = []
    for n, s, same in ok:
        sigs = [block_signature(b) for b in s]
        keys = list(s._modules)
        fixed = [sig != sigs[-1] or not same[i] for i, sig in enumerate(sigs)]
        if all(fixed[:-1]):
            continue
        stacks.append(_Stack(n, len(s), fixed, [f"{n}.{k}" if n else k for k in keys]))
    return stacks, notes


def trace_supernet(model: torch.nn.Module, example_inputs: Any = None) -> Supernet:
    """Trace a supernet once, for :func:`count_subnet` to score many candidates.

    Args:
        model: the supernet (not changed; with ``example_inputs`` it runs once in eval mode).
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs;
            gives the graph its shapes (flatten → Linear) and checks the blocks run in order.

    Returns:
        The :class:`Supernet`.

    Raises:
        ArgumentTypeError: ``model`` is not a module.
        TargetError: torch.fx cannot trace the model.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 2))
        >>> sn = trace_supernet(net)
        >>> sn.params, [s[:2] for s in sn.spaces]
        (58, [(8, ['0']), (2, ['2'])])
    """
    import torch

    from ._depgraph import trace_graph

    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(
            f"subnet: model: expected a torch.nn.Module, found {type(model).__name__}"
        )
    graph = trace_graph(model, example_inputs)
    stacks, notes = _find_stacks(model, example_inputs)
    home_of: dict[str, tuple[int, int]] = {}
    for si, st in enumerate(stacks):
        for bi, p in enumerate(st.prefixes):
            home_of[p] = (si, bi)

    def home(mname: str) -> tuple[int, int] | None:
        parts = mname.split(".")
        for i in range(len(parts), 0, -1):
            h = home_of.get(".".join(parts[:i]))
            if h is not None:
                return h
        return None

    cuts: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for si, sp in enumerate(graph.spaces):
        for s in sp.slices:
            if not s.buffer:
                cuts.setdefault((s.module, s.attr), []).append((s.dim, si, s.block))
    by_id: dict[int, tuple[Any, list[str], tuple[str, str]]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            entry = by_id.setdefault(id(p), (p, [], (mname, pname)))
            entry[1].append(mname)
    tensors: list[_Tensor] = []
    fixed_params = 0
    for p, mnames, key in by_id.values():
        homes_l = [home(m) for m in mnames]
        homes = None if any(h is None for h in homes_l) else tuple(sorted(set(homes_l)))  # type: ignore[arg-type]
        c = tuple(cuts.get(key, ()))
        if not c and homes is None:
            fixed_params += p.numel()
            continue
        tensors.append(_Tensor(p.numel(), tuple(p.shape), c, homes))
    sn = Supernet(
        model,
        sum(p.numel() for p, _, _ in by_id.values()),
        [
            (sp.size, [n for n, _ in sp.producers], sp.bad[0] if sp.bad else "")
            for sp in graph.spaces
        ],
        [(st.name, st.size, [i for i, f in enumerate(st.fixed) if f]) for st in stacks],
        set(graph.leaves),
    )
    sn._graph = graph.spaces
    sn._stacks = stacks
    sn._tensors = tensors
    sn._fixed_params = fixed_params
    sn.notes = notes
    return sn


# ------------------------------------------------------------------------------ choosing
def _is_ratio(v: Any) -> bool:
    return isinstance(v, float) and 0 < v <= 1


def _check_importance(importance: Any) -> str:
    if callable(importance):
        return str(getattr(importance, "__name__", type(importance).__name__))
    if importance not in ("order", "l1", "l2"):
        raise ArgumentError(
            f"subnet: importance={importance!r}: expected 'order', 'l1', 'l2' or a callable"
        )
    return str(importance)


def _choose_blocks(
    sn: Supernet, depth: Depth, keep_ratio: float | None, importance: Any
) -> dict[int, list[int]]:
    """Kept block indices per stack index (stacks left whole are absent)."""
    if depth is not None and keep_ratio is not None:
        raise ArgumentError(
            "subnet: give depth= (block indices) or keep_ratio= (a fraction), not both"
        )
    wanted: dict[int, list[int] | int | float] = {}
    names = [st.name for st in sn._stacks]
    if keep_ratio is not None:
        if (
            isinstance(keep_ratio, bool)
            or not isinstance(keep_ratio, (int, float))
            or not (0 < keep_ratio <= 1)
        ):
            raise ArgumentError(
                f"subnet: keep_ratio={keep_ratio!r}: expected a number with 0 < keep_ratio <= 1"
            )
        if not sn._stacks:
            raise ArgumentError(_no_stack(sn))
        wanted = {i: float(keep_ratio) for i in range(len(names))}
    elif isinstance(depth, Mapping):
        from .._names import compile_pattern

        for pat, v in depth.items():
            match = compile_pattern(pat)
            hits = [i for i, n in enumerate(names) if match(n)]
            if not hits:
                raise ArgumentError(
                    f"subnet: depth: {pat!r} matches no block stack; expected one of "
                    f"{', '.join(repr(n) for n in names) or '(none: ' + _no_stack(sn) + ')'}"
                )
            for i in hits:
                wanted[i] = v  # type: ignore[assignment]
    elif depth is not None:
        if isinstance(depth, (str, bytes, bool)) or not isinstance(depth, (Sequence, int, float)):
            raise ArgumentTypeError(
                f"subnet: depth={depth!r}: expected block indices, a block count or a dict "
                "{stack: indices or count}"
            )
        if len(names) != 1:
            raise ArgumentError(
                f"subnet: depth={depth!r} needs one block stack; the model has {len(names)}"
                + (
                    f" ({', '.join(names)}): give depth={{stack: indices}}"
                    if names
                    else f": {_no_stack(sn)}"
                )
            )
        wanted = {0: depth if isinstance(depth, (int, float)) else list(depth)}
    out: dict[int, list[int]] = {}
    for si, v in wanted.items():
        st = sn._stacks[si]
        must = [i for i, f in enumerate(st.fixed) if f]
        if isinstance(v, bool) or not isinstance(v, (int, float, Sequence)) or isinstance(v, str):
            raise ArgumentError(
                f"subnet: depth[{st.name!r}]={v!r}: expected block indices or a block count"
            )
        if isinstance(v, Sequence):
            kept = list(v)
            bad = [i for i in kept if isinstance(i, bool) or not isinstance(i, int)]
            if bad or any(not 0 <= i < st.size for i in kept) or len(set(kept)) != len(kept):
                raise ArgumentError(
                    f"subnet: depth {st.name}: {kept!r}: expected distinct block indices in "
                    f"0..{st.size - 1}"
                )
            if not kept:
                raise ArgumentError(f"subnet: depth {st.name}: keep at least one block")
            missing = [i for i in must if i not in kept]
            if missing:
                raise ArgumentError(
                    f"subnet: depth {st.name}: block {missing[0]} cannot be left out (its "
                    "parameters differ from the other blocks', so it changes the shape); "
                    f"keep {must}"
                )
            out[si] = sorted(kept)
            continue
        if isinstance(v, float):
            if not 0 < v <= 1:
                raise ArgumentError(
                    f"subnet: depth {st.name}: {v!r}: expected a ratio in (0, 1] or a count"
                )
            n = max(1, round(v * st.size))
        else:
            n = v
            if not 1 <= n <= st.size:
                raise ArgumentError(f"subnet: depth {st.name}: {n} blocks: expected 1..{st.size}")
        n = max(n, len(must))
        free = [i for i in range(st.size) if not st.fixed[i]]
        if importance == "order":
            ranked = free
        else:
            key = f"fn:{id(importance)}" if callable(importance) else str(importance)
            if key not in st.norms:
                from ._stacks import call_importance, tensor_norm

                blocks = list(sn.model.get_submodule(st.name)) if st.name else list(sn.model)
                st.norms[key] = [
                    call_importance(importance, st.name, i, dict(b.named_parameters()))
                    if callable(importance)
                    else tensor_norm(list(b.parameters()), str(importance))
                    for i, b in enumerate(blocks)
                ]
            s = st.norms[key]
            ranked = sorted(free, key=lambda i, s=s: (-s[i], i))
        out[si] = sorted(must + ranked[: n - len(must)])
    return {si: k for si, k in out.items() if len(k) < sn._stacks[si].size}


def _no_stack(sn: Supernet) -> str:
    return (
        f"{type(sn.model).__name__} has no stack of blocks that can be left out (an "
        "nn.ModuleList / nn.Sequential of blocks of one class its forward runs in order)"
    )


def _choose_widths(sn: Supernet, width: Width) -> dict[int, int]:
    """Units kept per space index (spaces left whole are absent)."""
    if width is None:
        return {}
    if not isinstance(width, Mapping):
        raise ArgumentTypeError(
            f"subnet: width={width!r}: expected a dict {{'module glob': ratio or size}}"
        )
    from .._names import compile_pattern

    keep: dict[int, tuple[int, str, set[str]]] = {}
    for pat, v in width.items():
        hits = sn._match_cache.get(pat)
        if hits is None:
            match = compile_pattern(pat)
            hits = [
                (i, {p for p in prods if match(p)})
                for i, (_, prods, _) in enumerate(sn.spaces)
                if any(map(match, prods))
            ]
            sn._match_cache[pat] = hits
        if not hits:
            some = [p for size, prods, bad in sn.spaces if not bad for p in prods][:3]
            raise ArgumentError(
                f"subnet: width: {pat!r} matches no layer whose outputs can be narrowed; "
                f"expected a glob over layer names such as {', '.join(map(repr, some))}"
            )
        good = [(i, names) for i, names in hits if not sn.spaces[i][2]]
        if not good:
            size, prods, bad = sn.spaces[hits[0][0]]
            raise ArgumentError(f"subnet: width: {pat!r}: {prods[0]} cannot narrow: {bad}")
        is_int = isinstance(v, int) and not isinstance(v, bool)
        if not (is_int or _is_ratio(v)):
            raise ArgumentError(
                f"subnet: width[{pat!r}]={v!r}: expected a ratio in (0, 1] or a unit count"
            )
        for i, names in good:
            size = sn.spaces[i][0]
            if is_int:
                if not 1 <= v <= size:
                    raise ArgumentError(
                        f"subnet: width[{pat!r}]={v}: {sn.spaces[i][1][0]} has {size} units; "
                        f"expected 1..{size}"
                    )
                k = int(v)
            else:
                k = max(1, round(v * size))
            prev = keep.get(i)
            if prev is not None and prev[0] != k and not (prev[2] & names):
                raise ArgumentError(
                    f"subnet: width: {prev[1]!r} gives {min(prev[2])} {prev[0]} units and "
                    f"{pat!r} gives {min(names)} {k}, but they write one joined space "
                    "(a residual add or a product); give them one value"
                )
            keep[i] = (k, pat, names if prev is None else prev[2] | names)
    return {i: k for i, (k, _, _) in keep.items() if k < sn.spaces[i][0]}


def _count(sn: Supernet, blocks: dict[int, list[int]], widths: dict[int, int]) -> int:
    gone = {
        (si, bi)
        for si, st in enumerate(sn._stacks)
        if si in blocks
        for bi in range(st.size)
        if bi not in set(blocks[si])
    }
    spaces = sn.spaces
    total = sn._fixed_params
    for t in sn._tensors:
        if t.homes is not None and gone and all(h in gone for h in t.homes):
            continue
        if not t.cuts or not widths:
            total += t.numel
            continue
        shape = list(t.shape)
        for dim, si, block in t.cuts:
            k = widths.get(si)
            if k is not None:
                shape[dim] -= (spaces[si][0] - k) * block
        total += math.prod(shape)
    return total


def count_subnet(
    model_or_graph: torch.nn.Module | Supernet,
    *,
    depth: Depth = None,
    keep_ratio: float | None = None,
    width: Width = None,
    importance: Importance = "order",
    example_inputs: Any = None,
) -> int:
    """The parameter count of a sub-network, from the graph and shapes alone (nothing built).

    Trace once with :func:`trace_supernet` and pass the :class:`Supernet` to score many
    candidates; a model is traced on every call.

    Args:
        model_or_graph: the supernet, or its :class:`Supernet`.
        depth: kept block indices (one stack), or ``{stack glob: indices | count | ratio}``.
        keep_ratio: instead of ``depth``: the fraction of every stack's blocks kept.
        width: ``{layer glob: ratio in (0, 1] | unit count}`` over the layers writing a space.
        importance: which blocks a count or ratio keeps (see :func:`subnet`); the count of a
            width does not depend on which units are kept.
        example_inputs: used only when a model is given (see :func:`trace_supernet`).

    Returns:
        The parameters (ties once), equal to the built sub-network's.

    Raises:
        ArgumentError: a bad option, a glob matching no narrowable layer, a ratio out of range.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 2))
        >>> count_subnet(net, width={"0": 0.5})
        30
    """
    _check_importance(importance)
    sn = (
        model_or_graph
        if isinstance(model_or_graph, Supernet)
        else trace_supernet(model_or_graph, example_inputs)
    )
    return _count(sn, _choose_blocks(sn, depth, keep_ratio, importance), _choose_widths(sn, width))


# ------------------------------------------------------------------------------ building
def _copy(model: torch.nn.Module, share: bool) -> torch.nn.Module:
    import torch

    if not share:
        return copy.deepcopy(model)
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach()
    return copy.deepcopy(model, memo)


def _keep_units(sn: Supernet, si: int, k: int, importance: Any) -> list[int]:
    if importance == "order":
        return list(range(k))
    from ._shrink import _scores

    s = _scores(sn.model, sn._graph[si], importance)
    return sorted(sorted(range(len(s)), key=lambda i: (-s[i], i))[:k])


def _narrow(
    new: torch.nn.Module,
    sn: Supernet,
    kept: dict[int, list[int]],
    gone_prefixes: list[str],
    share: bool,
) -> list[str]:
    """Slice every member tensor of the narrowed spaces; return the touched module names."""
    import torch

    from ._shrink import _resize

    cuts: dict[tuple[str, str], dict[int, set[int]]] = {}
    buffer_of: dict[tuple[str, str], bool] = {}
    for si, units in kept.items():
        sp = sn._graph[si]
        drop = sorted(set(range(sp.size)) - set(units))
        for s in sp.slices:
            if any(s.module == g or s.module.startswith(g + ".") for g in gone_prefixes):
                continue
            key = (s.module, s.attr)
            cuts.setdefault(key, {}).setdefault(s.dim, set()).update(s.indices(drop))
            buffer_of[key] = s.buffer
    plans = []
    for (mname, attr), dims in cuts.items():
        owner = new.get_submodule(mname) if mname else new
        t = getattr(owner, attr)
        sel: dict[int, list[int]] = {}
        for dim, idx in dims.items():
            keep = [i for i in range(t.shape[dim]) if i not in idx]
            if share and keep != list(range(keep[0], keep[0] + len(keep))):
                where = f"{mname}.{attr}" if mname else attr
                raise ArgumentError(
                    f"subnet: share=True: {where} keeps entries that are not one run along "
                    f"dimension {dim} (concatenated channels), so it cannot be a view; "
                    "pass share=False"
                )
            sel[dim] = keep
        plans.append((owner, attr, t, sel, buffer_of[(mname, attr)], mname))
    touched = []
    with torch.no_grad():
        for owner, attr, t, sel, is_buffer, mname in plans:
            data = t.detach()
            for dim, keep in sel.items():
                if share:
                    data = data.narrow(dim, keep[0], len(keep))
                else:
                    data = data.index_select(dim, torch.tensor(keep, device=data.device))
            if is_buffer:
                owner._buffers[attr] = data
            else:
                owner._parameters[attr] = torch.nn.Parameter(data, requires_grad=t.requires_grad)
            touched.append(mname)
    for mname in dict.fromkeys(touched):
        _resize(new.get_submodule(mname) if mname else new)
    return touched


def subnet(
    model: torch.nn.Module,
    *,
    depth: Depth = None,
    keep_ratio: float | None = None,
    width: Width = None,
    importance: Importance = "order",
    share: bool = True,
    example_inputs: Any = None,
) -> tuple[torch.nn.Module, SubnetReport]:
    """Build a sub-network of a supernet: fewer blocks, narrower layers, the same weights.

    Args:
        model: the supernet (not changed).
        depth: the kept block indices when the model has one block stack (GPT-2's
            ``transformer.h``), or ``{stack glob: indices | count | ratio}`` (ResNet's
            ``layer1`` … ``layer4``); blocks that change the shape are always kept.
        keep_ratio: instead of ``depth``: keep ``round(keep_ratio * n)`` blocks of every stack.
        width: ``{layer glob: ratio in (0, 1] | unit count}``: the output channels (neurons)
            a layer keeps; every consumer, norm and residual partner follows. A glob may also
            match layers that cannot narrow (the model's head): those are left whole. A later
            entry overrides an earlier one for the layers both match; layers that share one
            joined space (a residual stream) must get one value.
        importance: ``"order"`` (the first units and blocks), ``"l1"`` / ``"l2"`` (largest
            norm first) or a callable (``f(name, weight_slice)`` for units,
            ``f(stack, index, tensors)`` for blocks).
        share: the sub-network's parameters and buffers are views of the supernet's (values
            shared, gradients not); ``False``: copies. With ``width`` it needs
            ``importance="order"``.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs:
            gives the graph its shapes, checks the stacks run in order and measures the
            report's output deviation (eval mode; the modes are restored).

    Returns:
        ``(sub-network, report)``; ``report.params_after`` equals the sub-network's
        ``sum(p.numel())`` and :func:`count_subnet` with the same options.

    Raises:
        ArgumentError: a bad option, a glob matching nothing, a block that cannot go.
        ArgumentTypeError: ``model`` is not a module.
        TargetError: torch.fx cannot trace the model.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 2))
        >>> small, report = subnet(net, width={"0": 0.5})
        >>> small[0].out_features, report.params_after
        (4, 30)
        >>> small[0].weight.data_ptr() == net[0].weight.data_ptr()
        True
    """
    from .._outputs import output_deviation
    from ._shrink_report import ShrinkReport
    from ._stacks import remove_blocks

    name = _check_importance(importance)
    if not isinstance(share, bool):
        raise ArgumentTypeError(f"subnet: share={share!r}: expected True or False")
    sn = trace_supernet(model, example_inputs)
    blocks = _choose_blocks(sn, depth, keep_ratio, importance)
    widths = _choose_widths(sn, width)
    if share and widths and importance != "order":
        raise ArgumentError(
            f"subnet: share=True with width needs importance='order' (a view keeps the first "
            f"units); found importance={name!r}: pass share=False, or sort the supernet's "
            "channels by importance first"
        )
    kept_units = {si: _keep_units(sn, si, k, importance) for si, k in widths.items()}
    gone_prefixes = [
        sn._stacks[si].prefixes[bi]
        for si, kept in blocks.items()
        for bi in range(sn._stacks[si].size)
        if bi not in kept
    ]
    new = _copy(model, share)
    _narrow(new, sn, kept_units, gone_prefixes, share)
    scratch = ShrinkReport("layers", None, None, name)
    for si, kept in blocks.items():
        st = sn._stacks[si]
        stack = new.get_submodule(st.name) if st.name else new
        remove_blocks(new, st.name, stack, set(range(st.size)) - set(kept), scratch)
    params = {id(p): p.numel() for p in model.parameters()}
    report = SubnetReport(
        sum(params.values()),
        sum(p.numel() for p in new.parameters()),
        sum(b.numel() for b in model.buffers()),
        sum(b.numel() for b in new.buffers()),
        shared=share,
        importance=name,
    )
    report.blocks = [
        {"name": sn._stacks[si].name, "kept": kept, "total": sn._stacks[si].size}
        for si, kept in blocks.items()
    ]
    report.widths = [
        {
            "name": sn.spaces[si][1][0],
            "kept": len(units),
            "total": sn.spaces[si][0],
            "members": list(dict.fromkeys(s.label for s in sn._graph[si].slices)),
        }
        for si, units in kept_units.items()
        if not all(
            any(p == g or p.startswith(g + ".") for g in gone_prefixes) for p in sn.spaces[si][1]
        )
    ]
    report.notes += sn.notes
    report.notes += scratch.notes
    if sn.leaves:
        report.notes.append(
            "traced as opaque (fx cannot trace inside): " + ", ".join(sorted(sn.leaves))
        )
    if example_inputs is not None:
        report.deviation = output_deviation(model, new, example_inputs)
    report.model = new
    return new, report
