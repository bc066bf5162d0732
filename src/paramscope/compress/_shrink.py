"""Physical structured shrinking: remove channels, neurons, heads or layers and return a
smaller dense model that runs.

Channels and neurons follow the traced dependency graph of :mod:`._depgraph`: removing output
channel ``k`` of a convolution removes entry ``k`` of every tensor in its joined space (the
BatchNorm after it, input channel ``k`` of every consumer, the other branch of a residual
add, …). Heads and layers are transformer blocks, shrunk by :mod:`._shrink_blocks`.

Importance of unit ``i`` of a space is the sum, over the layers producing the space, of the
l1 (or l2) norm of their weight's output slice ``i`` (``weight[i]``); a callable
``f(name, weight_slice) -> float`` is called once per producer and unit and summed the same
way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError
from .._outputs import output_deviation
from ._shrink_report import ShrinkReport

if TYPE_CHECKING:
    import torch

    from ._depgraph import Slice, Space

__all__ = ["shrink"]

_UNITS = ("channels", "neurons", "heads", "layers")
_KIND = {"channels": "conv", "neurons": "linear"}


def _counts(model: torch.nn.Module) -> tuple[int, int]:
    params = {id(p): p.numel() for p in model.parameters()}
    buffers = {id(b): b.numel() for b in model.buffers()}
    return sum(params.values()), sum(buffers.values())


def _check(
    model: Any,
    amount: float | None,
    target_params: int | None,
    unit: str,
    importance: Any,
) -> str:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(
            f"shrink: model: expected a torch.nn.Module, found {type(model).__name__}"
        )
    if (amount is None) == (target_params is None):
        raise ArgumentError(
            "shrink: give exactly one of amount= (a fraction of each group) and target_params="
            f" (a parameter count); found amount={amount!r}, target_params={target_params!r}"
        )
    if amount is not None and (
        isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1
    ):
        raise ArgumentError(f"shrink: amount={amount!r}: expected a number with 0 <= amount < 1")
    if target_params is not None and (
        isinstance(target_params, bool) or not isinstance(target_params, int) or target_params < 0
    ):
        raise ArgumentError(
            f"shrink: target_params={target_params!r}: expected a non-negative integer"
        )
    if unit not in _UNITS:
        raise ArgumentError(f"shrink: unit={unit!r}: expected one of {', '.join(_UNITS)}")
    if callable(importance):
        return str(getattr(importance, "__name__", type(importance).__name__))
    if importance not in ("l1", "l2"):
        raise ArgumentError(
            f"shrink: importance={importance!r}: expected 'l1', 'l2' or a callable "
            "f(name, weight_slice) -> float"
        )
    return str(importance)


def shrink(
    model: torch.nn.Module,
    amount: float | None = None,
    *,
    target_params: int | None = None,
    unit: str = "channels",
    importance: str | Callable[[str, torch.Tensor], float] = "l1",
    select: str | Sequence[str] | None = None,
    example_inputs: Any = None,
) -> ShrinkReport:
    """Remove whole units and return a smaller dense model (the caller's model is not changed).

    Args:
        model: the model; it is deep-copied first.
        amount: the fraction of units removed in each selected group (rounded down; at least
            one unit of a group is always kept).
        target_params: instead of ``amount``: remove the least important units, globally
            across the selected groups (importance divided by its group's mean), until the
            model has at most this many parameters.
        unit: ``"channels"`` (spaces written by convolutions), ``"neurons"`` (by Linear
            layers), ``"heads"`` or ``"layers"`` (transformer blocks).
        importance: ``"l1"`` or ``"l2"`` norm of each producer's output slice, summed over the
            producers of a joined space; or ``f(name, weight_slice) -> float``, summed the
            same way.
        select: glob or ``re:`` patterns over the producing layers' names (``None``: all).
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs:
            gives the traced graph its shapes (flatten → Linear) and the report its output
            deviation (run in eval mode; the modes are restored).

    Returns:
        A :class:`~paramscope.compress._shrink_report.ShrinkReport`; ``report.model`` is the
        smaller model.

    Raises:
        ArgumentError: a bad option, or ``select`` matching no layer.
        ArgumentTypeError: ``model`` is not a module.
        TargetError: the model cannot be traced at all.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 2))
        >>> r = shrink(net, 0.5, unit="neurons")
        >>> r.params_before, r.params_after, r.model[0].out_features
        (58, 30, 4)
    """
    name = _check(model, amount, target_params, unit, importance)
    new = copy.deepcopy(model)
    report = ShrinkReport(unit, amount, target_params, name)
    report.params_before, report.buffers_before = _counts(new)
    if unit in ("heads", "layers"):
        from . import _shrink_blocks

        fn = _shrink_blocks.shrink_heads if unit == "heads" else _shrink_blocks.shrink_layers
        new = fn(
            new,
            amount,
            target_params=target_params,
            importance=importance,
            select=select,
            report=report,
            example_inputs=example_inputs,
        )
    else:
        _shrink_spaces(new, amount, target_params, unit, importance, select, example_inputs, report)
    report.params_after, report.buffers_after = _counts(new)
    if target_params is not None and report.params_after > target_params:
        report.notes.append(
            f"target_params={target_params:,} not reached: {report.params_after:,} parameters "
            "remain after removing every unit the selected groups can lose"
        )
    if example_inputs is not None:
        report.deviation = output_deviation(model, new, example_inputs)
    report.model = new
    return report


# ------------------------------------------------------------------------------ spaces
def _select(
    spaces: list[Space], unit: str, select: Any, model: torch.nn.Module, report: ShrinkReport
) -> list[tuple[Space, str]]:
    """The spaces to shrink, each with the name it is reported under; refusals filled."""
    from .._names import compile_pattern

    kind = _KIND[unit]
    match = compile_pattern(select) if select is not None else (lambda _n: True)
    chosen: list[tuple[Space, str]] = []
    seen: set[str] = set()
    for sp in spaces:
        hits = [p for p, k in sp.producers if k == kind and match(p)]
        if not hits:
            continue
        seen.update(hits)
        if sp.bad:
            if select is not None or not any(
                "reaches the model output" in r for r in sp.bad
            ):  # the head of a model is refused silently unless asked for
                for p in hits:
                    report.refused.append({"name": p, "reason": sp.bad[0]})
            continue
        if sp.size < 2:
            for p in hits:
                report.refused.append({"name": p, "reason": "a single unit: nothing to remove"})
            continue
        chosen.append((sp, hits[0]))
    if select is not None:
        other = [
            n
            for n, m in model.named_modules()
            if n
            and match(n)
            and n not in seen
            and type(m).__name__ in ("Conv1d", "Conv2d", "Conv3d", "Linear")
        ]
        for n in other:
            m = model.get_submodule(n)
            if type(m).__name__ == "Linear" and unit == "channels":
                why = "a Linear layer: its outputs are neurons (unit='neurons')"
            elif type(m).__name__ != "Linear" and unit == "neurons":
                why = "a convolution: its outputs are channels (unit='channels')"
            else:
                why = "its outputs follow its input's channels (depthwise convolution)"
            report.refused.append({"name": n, "reason": why})
        if not seen and not other:
            raise ArgumentError(
                f"shrink: select={select!r} matches no "
                f"{'convolution' if kind == 'conv' else 'Linear layer'}; pass the name of a "
                "layer whose outputs to shrink (e.g. 'layer1.0.conv1')"
            )
    return chosen


def _tensor(model: torch.nn.Module, s: Slice) -> torch.Tensor:
    owner = model.get_submodule(s.module) if s.module else model
    return getattr(owner, s.attr)


def _scores(model: torch.nn.Module, sp: Space, importance: Any) -> list[float]:
    import torch

    scores = [0.0] * sp.size
    with torch.no_grad():
        for prod, _kind in sp.producers:
            w = model.get_submodule(prod).weight.detach()
            flat = w.reshape(w.shape[0], -1).to(torch.float64)
            if callable(importance):
                for i in range(sp.size):
                    scores[i] += float(importance(prod, w[i]))
            elif importance == "l1":
                for i, v in enumerate(flat.abs().sum(1).tolist()):
                    scores[i] += v
            else:
                for i, v in enumerate(torch.linalg.vector_norm(flat, dim=1).tolist()):
                    scores[i] += v
    return scores


class _Ledger:
    """Current sizes of every tensor that loses entries, for exact counts as units go."""

    def __init__(self, model: torch.nn.Module, chosen: list[tuple[Space, str]]) -> None:
        self.sizes: dict[tuple[str, str], list[int]] = {}
        for sp, _ in chosen:
            for s in sp.slices:
                key = (s.module, s.attr)
                if key not in self.sizes:
                    self.sizes[key] = list(_tensor(model, s).shape)

    def remove(self, sp: Space) -> tuple[int, int]:
        """Drop one unit of ``sp``; return (parameters, buffer elements) removed."""
        params = buffers = 0
        for s in sp.slices:
            shape = self.sizes[(s.module, s.attr)]
            other = math.prod(shape) // shape[s.dim] if shape[s.dim] else 0
            delta = other * s.block
            shape[s.dim] -= s.block
            if s.buffer:
                buffers += delta
            else:
                params += delta
        return params, buffers


def _shrink_spaces(
    model: torch.nn.Module,
    amount: float | None,
    target_params: int | None,
    unit: str,
    importance: Any,
    select: Any,
    example_inputs: Any,
    report: ShrinkReport,
) -> None:
    from ._depgraph import trace_graph

    graph = trace_graph(model, example_inputs)
    if graph.leaves:
        report.notes.append(
            "traced as opaque (fx cannot trace inside): " + ", ".join(sorted(graph.leaves))
        )
    chosen = _select(graph.spaces, unit, select, model, report)
    scores = [_scores(model, sp, importance) for sp, _ in chosen]
    order = [
        sorted(range(sp.size), key=lambda i, s=s: (s[i], i))
        for (sp, _), s in zip(chosen, scores, strict=True)
    ]
    ledger = _Ledger(model, chosen)
    removed: list[list[int]] = [[] for _ in chosen]
    tally = [[0, 0] for _ in chosen]

    def drop(g: int) -> int:
        unit_i = order[g][len(removed[g])]
        removed[g].append(unit_i)
        p, b = ledger.remove(chosen[g][0])
        tally[g][0] += p
        tally[g][1] += b
        return p

    if amount is not None:
        for g, (sp, _) in enumerate(chosen):
            for _ in range(min(int(amount * sp.size), sp.size - 1)):
                drop(g)
    else:
        assert target_params is not None
        total = report.params_before
        cand: list[tuple[float, int, int]] = []
        for g, ((sp, _), s) in enumerate(zip(chosen, scores, strict=True)):
            mean = sum(s) / len(s) if s else 0.0
            for rank, i in enumerate(order[g][: sp.size - 1]):
                cand.append((s[i] / mean if mean else 0.0, g, rank))
        cand.sort()
        for _score, g, _rank in cand:
            if total <= target_params:
                break
            total -= drop(g)
    _apply(model, chosen, removed)
    for g, (sp, gname) in enumerate(chosen):
        if not removed[g]:
            continue
        labels = list(dict.fromkeys(s.label for s in sp.slices))
        report.groups.append(
            {
                "name": gname,
                "kept": sp.size - len(removed[g]),
                "removed": len(removed[g]),
                "total": sp.size,
                "params_removed": tally[g][0],
                "buffers_removed": tally[g][1],
                "members": labels,
                "producers": [p for p, _ in sp.producers],
            }
        )


def _apply(
    model: torch.nn.Module, chosen: list[tuple[Space, str]], removed: list[list[int]]
) -> None:
    """Slice every member tensor and update the modules' size attributes."""
    import torch

    cuts: dict[tuple[str, str], dict[int, set[int]]] = {}
    buffer_of: dict[tuple[str, str], bool] = {}
    for (sp, _), rem in zip(chosen, removed, strict=True):
        if not rem:
            continue
        for s in sp.slices:
            key = (s.module, s.attr)
            cuts.setdefault(key, {}).setdefault(s.dim, set()).update(s.indices(rem))
            buffer_of[key] = s.buffer
    touched: set[str] = set()
    with torch.no_grad():
        for (mname, attr), dims in cuts.items():
            owner = model.get_submodule(mname) if mname else model
            t = getattr(owner, attr)
            data = t.detach()
            for dim, idx in dims.items():
                keep = [i for i in range(data.shape[dim]) if i not in idx]
                data = data.index_select(dim, torch.tensor(keep, device=data.device))
            data = data.clone()
            if buffer_of[(mname, attr)]:
                owner._buffers[attr] = data
            else:
                owner._parameters[attr] = torch.nn.Parameter(data, requires_grad=t.requires_grad)
            touched.add(mname)
    for mname in touched:
        _resize(model.get_submodule(mname) if mname else model)


def _resize(mod: torch.nn.Module) -> None:
    """Make a module's size attributes match its (sliced) tensors."""
    from torch import nn

    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        w = mod.weight
        if mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels:
            mod.groups = mod.in_channels = mod.out_channels = w.shape[0]
        else:
            mod.out_channels = w.shape[0]
            mod.in_channels = w.shape[1] * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        ref = mod.weight if mod.weight is not None else mod.running_mean
        if ref is not None:
            mod.num_features = ref.shape[0]
    elif isinstance(mod, nn.GroupNorm):
        n = mod.weight.shape[0] if mod.weight is not None else mod.num_channels
        if mod.num_groups == mod.num_channels:
            mod.num_groups = n
        mod.num_channels = n
    elif isinstance(mod, nn.LayerNorm) or type(mod).__name__ == "RMSNorm":
        ref = getattr(mod, "weight", None)
        if ref is not None and hasattr(mod, "normalized_shape"):
            mod.normalized_shape = (ref.shape[0],)
