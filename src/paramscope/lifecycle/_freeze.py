"""Freezing: which parameters train, by name pattern, with counts and a restoring context.

Patterns are globs or ``re:`` regexes (:func:`paramscope.compile_pattern`) matched against
every name of every parameter (a tied parameter is frozen through any of its names, and then
it is frozen under all of them). A pattern that matches no parameter is an error with
suggestions, so a typo never freezes nothing in silence.

**BatchNorm in fine-tuning** — ``requires_grad=False`` stops the affine weights from training
but not the running statistics, which a forward pass in train mode still updates. With
``bn_eval=True``, :func:`freeze` puts in eval mode every BatchNorm layer whose affine
parameters are all frozen afterwards (and every non-affine one whose module name matches a
pattern), so its statistics stay as loaded. ``model.train()`` puts them back in train mode:
call :func:`eval_frozen_bn` after it (or freeze again) to re-apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentTypeError, MissingNameError, TargetError
from .._names import compile_pattern, missing

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = ["FreezeCounts", "eval_frozen_bn", "freeze", "trainable_only", "unfreeze"]

Target = Any  # torch.nn.Module | ParamDict inside the helpers


@dataclass
class FreezeCounts:
    """Parameter elements by trainability after a freeze operation (ties counted once).

    Attributes:
        trainable: trainable parameter elements.
        frozen: frozen parameter elements.
        total: all parameter elements (buffers are not parameters).
        trainable_pct: ``100 * trainable / total`` (0.0 for a model without parameters).
    """

    trainable: int
    frozen: int
    total: int
    trainable_pct: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; keys equal the attribute names.

        Returns:
            ``{"trainable", "frozen", "total", "trainable_pct"}``.
        """
        return {
            "trainable": self.trainable,
            "frozen": self.frozen,
            "total": self.total,
            "trainable_pct": self.trainable_pct,
        }


def _counts(target: Target) -> FreezeCounts:
    """Parameter elements by trainability, as :func:`paramscope.count` counts them: ties once,
    quantised and packed weights at their logical size, lazy tensors left out."""
    from .._enums import Role
    from .._modtree import scan_module
    from .._paramdict import ParamDict

    m = target.manifest() if isinstance(target, ParamDict) else scan_module(target).manifest()
    params = trainable = 0
    for e in m.values():
        if e.tie is None and e.role is Role.PARAM:
            n = e.logical_numel
            params += n
            trainable += n if e.trainable else 0
    pct = 100.0 * trainable / params if params else 0.0
    return FreezeCounts(trainable, params - trainable, params, pct)


def _kind(target: Target, what: str) -> str:
    import torch

    from .._paramdict import ParamDict

    if isinstance(target, ParamDict):
        return "dict"
    if isinstance(target, torch.nn.Module):
        return "module"
    raise ArgumentTypeError(
        f"{what}: expected a torch.nn.Module or a ParamDict, found {type(target).__name__}"
    )


def _groups(target: Target, kind: str) -> list[tuple[list[str], Any]]:
    """``(names, tensor)`` per parameter, tied names together, in first-name order."""
    groups: dict[int, tuple[list[str], Any]] = {}
    if kind == "module":
        named = target.named_parameters(remove_duplicate=False)
    else:
        from .._enums import Role

        named = ((n, target[n]) for n in target if target.meta(n).role is Role.PARAM)
    for name, t in named:
        groups.setdefault(id(t), ([], t))[0].append(name)
    return list(groups.values())


def _flatten(patterns: Sequence[Any], what: str) -> list[str]:
    out: list[str] = []
    for p in patterns:
        items = [p] if isinstance(p, str) else p
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            items = [items]
        for q in items:
            if not isinstance(q, str):
                raise ArgumentTypeError(
                    f"{what}: pattern {q!r}: expected a glob or 're:regex' string"
                )
            out.append(q)
    return out


def _resolve(
    groups: list[tuple[list[str], Any]],
    patterns: list[str],
    what: str,
    also: Sequence[str] = (),
) -> list[tuple[list[str], Any]]:
    """The groups any pattern matches (all without patterns); unmatched patterns raise.

    A pattern matching one of ``also`` (non-affine BatchNorm names under ``bn_eval``) counts
    as matched.
    """
    if not patterns:
        return groups
    names = [n for names, _ in groups for n in names]
    hit: set[int] = set()
    unmatched: list[str] = []
    for p in patterns:
        match = compile_pattern(p)
        found = {k for k, (ns, _) in enumerate(groups) if any(match(n) for n in ns)}
        if not found and not any(match(n) for n in also):
            unmatched.append(p)
        hit |= found
    if unmatched:
        msg = "; ".join(_unmatched(p, names) for p in unmatched)
        raise MissingNameError(f"{what}: {msg}")
    return [g for k, g in enumerate(groups) if k in hit]


def _unmatched(pattern: str, names: list[str]) -> str:
    if not pattern.startswith("re:") and any(n.startswith(pattern + ".") for n in names):
        return (
            f"no parameter matching {pattern!r}; did you mean {pattern + '.*'!r} "
            f"(every parameter under {pattern!r})?"
        )
    return str(missing(pattern, names, "parameter matching"))


def _set(target: Target, kind: str, groups: list[tuple[list[str], Any]], flag: bool) -> None:
    for names, t in groups:
        if kind == "dict":
            for n in names:
                target.set_meta(n, trainable=flag)
            if not t.is_leaf:
                continue
        if flag and not (t.is_floating_point() or t.is_complex()):
            continue  # integer tensors cannot require grad
        t.requires_grad_(flag)


def _is_bn(mod: Any) -> bool:
    from torch.nn.modules.batchnorm import _BatchNorm

    return isinstance(mod, _BatchNorm)


def _bn_to_eval(
    model: torch.nn.Module, name_match: Callable[[str], bool] | None
) -> list[tuple[str, Any]]:
    """Put frozen BatchNorm layers in eval mode; return ``(name, module)`` of those changed.

    A layer with affine parameters qualifies when all of them are frozen; one without
    qualifies when ``name_match`` accepts its module name.
    """
    changed: list[tuple[str, Any]] = []
    for name, mod in model.named_modules():
        if not _is_bn(mod) or not mod.training:
            continue
        params = [p for p in mod._parameters.values() if p is not None]
        if params:
            qualifies = not any(p.requires_grad for p in params)
        else:
            qualifies = name_match is not None and name_match(name)
        if qualifies:
            mod.train(False)
            changed.append((name, mod))
    return changed


def _plain_bn_names(model: torch.nn.Module) -> list[str]:
    """Names of the BatchNorm layers without affine parameters."""
    return [
        name
        for name, mod in model.named_modules()
        if _is_bn(mod) and not any(p is not None for p in mod._parameters.values())
    ]


def _bn_matcher(patterns: list[str]) -> Callable[[str], bool]:
    return compile_pattern(patterns) if patterns else (lambda name: True)


def freeze(
    target: torch.nn.Module | ParamDict, *patterns: str | Sequence[str], bn_eval: bool = False
) -> FreezeCounts:
    """Set ``requires_grad=False`` on the parameters matching any pattern (all without one).

    Args:
        target: a ``torch.nn.Module``, or a :class:`~paramscope.ParamDict` (its entries'
            ``trainable`` metadata is set, and ``requires_grad`` of its leaf tensors).
        *patterns: globs or ``re:`` regexes on parameter names (or lists of them); none
            freezes every parameter.
        bn_eval: also put BatchNorm layers in eval mode whose affine parameters are all
            frozen afterwards, and non-affine ones whose module name matches a pattern, so
            their running statistics stop updating. ``model.train()`` undoes it (see
            :func:`eval_frozen_bn`). Modules only.

    Returns:
        :class:`FreezeCounts` of the whole target afterwards.

    Raises:
        MissingNameError: a pattern matches no parameter (the message suggests names).
        ArgumentTypeError: a target that is neither a module nor a ParamDict.
        TargetError: ``bn_eval`` with a ParamDict.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))
        >>> freeze(net, "0.*").to_dict()
        {'trainable': 22, 'frozen': 110, 'total': 132, 'trainable_pct': 16.666666666666668}
        >>> freeze(net, "2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.MissingNameError: freeze: no parameter matching '2'; did you mean ...
    """
    kind = _kind(target, "freeze")
    pats = _flatten(patterns, "freeze")
    if bn_eval and kind != "module":
        raise TargetError(
            "freeze: bn_eval=True puts BatchNorm modules in eval mode, but the target is a "
            "ParamDict, which has no modules; pass the model, or drop bn_eval="
        )
    also = _plain_bn_names(target) if bn_eval else []
    _set(target, kind, _resolve(_groups(target, kind), pats, "freeze", also), False)
    if bn_eval:
        _bn_to_eval(target, _bn_matcher(pats))
    return _counts(target)


def unfreeze(target: torch.nn.Module | ParamDict, *patterns: str | Sequence[str]) -> FreezeCounts:
    """Set ``requires_grad=True`` on the parameters matching any pattern (all without one).

    BatchNorm modes are left as they are (``model.train()`` restores train mode).
    Integer-typed parameters, which cannot require grad, stay as they are.

    Args:
        target: a ``torch.nn.Module`` or a :class:`~paramscope.ParamDict`.
        *patterns: globs or ``re:`` regexes on parameter names; none unfreezes everything.

    Returns:
        :class:`FreezeCounts` of the whole target afterwards.

    Raises:
        MissingNameError: a pattern matches no parameter.

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(4, 2)
        >>> _ = freeze(net)
        >>> unfreeze(net, "bias").trainable
        2
    """
    kind = _kind(target, "unfreeze")
    pats = _flatten(patterns, "unfreeze")
    _set(target, kind, _resolve(_groups(target, kind), pats, "unfreeze"), True)
    return _counts(target)


def eval_frozen_bn(model: torch.nn.Module) -> list[str]:
    """Put BatchNorm layers whose affine parameters are all frozen in eval mode.

    Call it after ``model.train()``, which sets every layer back to train mode. Non-affine
    BatchNorm layers (nothing to freeze) are left alone.

    Args:
        model: the module.

    Returns:
        Names of the layers switched from train to eval mode.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> _ = freeze(net, "1.*")
        >>> eval_frozen_bn(net.train())
        ['1']
    """
    return [name for name, _ in _bn_to_eval(model, None)]


def _snapshot(target: Target, kind: str) -> tuple[list[tuple[Any, bool]], list[tuple[str, bool]]]:
    tensors: dict[int, tuple[Any, bool]] = {}
    metas: list[tuple[str, bool]] = []
    if kind == "module":
        for p in target.parameters():
            tensors[id(p)] = (p, bool(p.requires_grad))
    else:
        for names, t in _groups(target, kind):
            tensors.setdefault(id(t), (t, bool(t.requires_grad)))
            metas.extend((n, target.meta(n).trainable) for n in names)
    return list(tensors.values()), metas


@contextmanager
def trainable_only(
    target: torch.nn.Module | ParamDict, *patterns: str | Sequence[str], bn_eval: bool = False
) -> Iterator[FreezeCounts]:
    """Inside the block only the matching parameters train; on exit every flag is restored.

    Every parameter's previous ``requires_grad`` (and for a ParamDict each entry's
    ``trainable`` metadata) comes back exactly on exit, an exception included, and so does
    the train/eval mode of the BatchNorm layers that ``bn_eval`` switched.

    Args:
        target: a ``torch.nn.Module`` or a :class:`~paramscope.ParamDict`.
        *patterns: globs or ``re:`` regexes of the parameters to train; none trains all.
        bn_eval: inside the block, put in eval mode the BatchNorm layers whose affine
            parameters are all frozen, and the non-affine ones no pattern names. Modules
            only.

    Yields:
        :class:`FreezeCounts` inside the block.

    Raises:
        MissingNameError: a pattern matches no parameter (raised before anything changes).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2))
        >>> with trainable_only(net, "1.*") as counts:
        ...     counts.trainable, net[0].weight.requires_grad
        (22, False)
        >>> net[0].weight.requires_grad
        True
    """
    kind = _kind(target, "trainable_only")
    pats = _flatten(patterns, "trainable_only")
    if bn_eval and kind != "module":
        raise TargetError(
            "trainable_only: bn_eval=True puts BatchNorm modules in eval mode, but the target "
            "is a ParamDict, which has no modules; pass the model, or drop bn_eval="
        )
    groups = _groups(target, kind)
    also = _plain_bn_names(target) if bn_eval else []
    chosen = _resolve(groups, pats, "trainable_only", also)
    tensors, metas = _snapshot(target, kind)
    switched: list[tuple[str, Any]] = []
    try:
        _set(target, kind, groups, False)
        _set(target, kind, chosen, True)
        if bn_eval:  # non-affine layers go to eval unless a pattern names them (to train)
            keep = _bn_matcher(pats) if pats else (lambda name: True)
            switched = _bn_to_eval(target, lambda name: not keep(name))
        yield _counts(target)
    finally:
        for t, flag in tensors:
            if t.requires_grad != flag:
                t.requires_grad_(flag)
        for name, flag in metas:
            target.set_meta(name, trainable=flag)
        for _, mod in switched:
            mod.train(True)
