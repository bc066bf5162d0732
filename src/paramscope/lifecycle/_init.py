"""Initialisation rules: ordered ``(selector, scheme)`` pairs, first match wins, seeded.

A rule says which parameters to fill and how::

    init(model, [
        ("*.bias", "zeros"),
        ("re:.*norm.*\\.weight", "ones"),
        (nn.Embedding, "normal(std=0.02)"),
        ("*.weight", "trunc_normal(std=0.02, sigmas=2)"),
    ], seed=0)

**Selectors** — a name glob or ``re:`` regex (:func:`paramscope.compile_pattern`) matched
against the full parameter name, or a list of them; a module class (``nn.Linear``: every
parameter directly owned by a module of that type) or the string ``"type:Linear"`` (a
``torch.nn`` class, or else any class of that name in the owner's MRO, so JSON / YAML specs can
name custom blocks); or a predicate ``(name, tensor) -> bool``. A tied parameter (one object
reached by several names) matches a rule when any of its names does.

**Schemes** — a registered name with optional call syntax, parsed with :mod:`ast` (literal
arguments only, never evaluated as code): ``zeros``, ``ones``, ``constant(val)``,
``normal(mean=0, std=1)``, ``uniform(a=0, b=1)``, ``trunc_normal(mean=0, std=1, a=-2, b=2)``
or ``trunc_normal(std=0.02, sigmas=2)``, ``xavier_uniform(gain=1)``, ``xavier_normal(gain=1)``,
``kaiming_uniform(a=0, mode="fan_in", nonlinearity="leaky_relu")``, ``kaiming_normal(...)``,
``orthogonal(gain=1)``, ``eye``, ``dirac(groups=1)`` and ``default`` (the owning module's own
``reset_parameters()``); positional arguments follow ``torch.nn.init``'s order. A scheme may
also be a callable ``(tensor, generator) -> None`` that fills the tensor in place, and
:func:`register_scheme` adds named ones.

**trunc_normal's cut-offs** — ``a`` and ``b`` are *absolute* values, as in
``torch.nn.init.trunc_normal_`` (and timm): ``trunc_normal(std=0.02)`` cuts at ±2, i.e. at
±100 std, which truncates nothing. To cut at a number of standard deviations say
``sigmas=k`` (cut-offs ``mean ± k·std``); giving ``sigmas`` together with ``a`` or ``b`` is an
error.

**Determinism** — every random draw comes from one ``torch.Generator`` seeded with ``seed``
(a fresh seed from :mod:`secrets` when ``None``, reported so the run can be repeated), in the
order of ``named_parameters()``, so the result is bitwise the same for the same seed whatever
the global RNG state and whatever the order of non-overlapping rules. Draws are made on the
CPU in float32 or wider (parameters on other devices or in half precision are filled through a
CPU scratch tensor), so the values do not depend on the device either. ``default`` runs the
module's ``reset_parameters()`` on the global RNG, forked and seeded from the generator, so it
is reproducible too and leaves the caller's RNG state untouched.

The scheme registry and parser live in :mod:`._init_schemes`, rule compilation in
:mod:`._init_rules`, planning, filling and materialising in :mod:`._init_plan`; this module
holds :func:`init` and its :class:`InitReport`.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, MissingNameError
from ._init_plan import (
    _dict_items,
    _draw_seed,
    _dry_run,
    _fill,
    _materialize_dict,
    _materialize_module,
    _module_items,
    _plan,
    _reset_materialized,
    _run_defaults,
)
from ._init_rules import _compile_rules

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = ["InitReport", "init"]


# ------------------------------------------------------------------------------ report


@dataclass
class InitReport:
    """What :func:`init` did.

    Attributes:
        assigned: name → the text of the rule that set it (``"*.weight -> normal(std=0.02)"``).
            A tied parameter is set once, under its first name; its other names map to
            ``"tied to <first name>"``.
        untouched: parameter names no rule matched (every name of a tied parameter). On a
            materialised meta model they hold their module's ``reset_parameters()`` values,
            or zeros where the module has none.
        unused_rules: texts of the rules that set nothing: they matched no parameter, or every
            parameter they match was taken by an earlier rule.
        seed: the seed used (drawn from :mod:`secrets` when none was given).
        materialized: meta tensors were materialised on the CPU first.
    """

    assigned: dict[str, str] = field(default_factory=dict)
    untouched: list[str] = field(default_factory=list)
    unused_rules: list[str] = field(default_factory=list)
    seed: int = 0
    materialized: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; keys equal the attribute names.

        Returns:
            ``{"assigned", "untouched", "unused_rules", "seed", "materialized"}``.
        """
        return {
            "assigned": dict(self.assigned),
            "untouched": list(self.untouched),
            "unused_rules": list(self.unused_rules),
            "seed": self.seed,
            "materialized": self.materialized,
        }


# ------------------------------------------------------------------------------ init


def _check_seed(seed: object) -> int:
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ArgumentError(f"init: seed={seed!r}: expected an int in [0, 2**64) or None")
    return seed


def init(
    target: torch.nn.Module | ParamDict,
    rules: Sequence[Any] | Mapping[Any, Any],
    *,
    seed: int | None = None,
    strict: bool = False,
) -> InitReport:
    """Initialise parameters by ordered rules; the first rule that matches a parameter wins.

    See the module docstring for selectors and schemes. Parameters are filled once each, in
    ``named_parameters()`` order (a tied parameter once, under its first name), from one
    ``torch.Generator`` seeded with ``seed``: the same seed gives bitwise the same values,
    whatever the global RNG state. Works inside ``torch.no_grad()`` and outside it. Every
    rule is checked (scheme name, arguments, and for built-ins each matched shape, on the meta
    device) before any tensor is written.

    **Meta models** are materialised first with ``model.to_empty(device="cpu")``
    (``materialized=True``); ties that ``to_empty`` breaks are re-tied. Every tensor is then
    zeroed, and modules that hold buffers or rule-less parameters get their own
    ``reset_parameters()`` (or, for buffers alone, ``reset_running_stats()``), seeded from the
    generator; what has neither stays zero and is named in a ``UserWarning`` (buffers computed
    in ``__init__``, such as rotary ``inv_freq``, must be recomputed).

    **ParamDict targets** are filled in place (so a dict from ``ParamDict.from_module`` fills
    the model). Entries with role ``buffer`` are skipped unless a rule's selector is exactly
    their name. Type selectors match nothing there (listed in ``unused_rules``) and
    ``default`` is an error. Meta entries are replaced by zeroed CPU tensors.

    Args:
        target: a ``torch.nn.Module`` or a :class:`~paramscope.ParamDict`.
        rules: ``(selector, scheme)`` pairs or ``{"select": ..., "init": ...}`` dicts, in order
            (a mapping selector → scheme is read in its order).
        seed: the generator seed (an int in ``[0, 2**64)``); ``None`` draws one from
            :mod:`secrets` and reports it.
        strict: raise when a rule sets nothing, instead of listing it in ``unused_rules``.

    Returns:
        An :class:`InitReport`.

    Raises:
        ArgumentError: a malformed rule, an unknown scheme or bad arguments (naming the rule
            index, the text and what is expected), a scheme that cannot fill a matched shape,
            ``default`` without ``reset_parameters()``, a bad ``seed``.
        ArgumentTypeError: a target that is neither a module nor a ParamDict.
        MissingNameError: with ``strict``, a rule that sets nothing.

    Example:
        The D2L "custom initialisation" as a callable scheme:

        >>> import torch
        >>> from torch import nn
        >>> def d2l(t, g):
        ...     t.uniform_(-10, 10, generator=g)
        ...     t.mul_(t.abs() >= 5)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> report = init(net, [(nn.Linear, d2l)], seed=0)
        >>> report.assigned["0.weight"], report.seed
        ('type:Linear -> d2l', 0)
        >>> bool(((net[0].weight == 0) | (net[0].weight.abs() >= 5)).all())
        True

        Declarative rules, as a JSON spec would give them:

        >>> spec = [{"select": "*.bias", "init": "zeros"},
        ...         {"select": "type:Linear", "init": "trunc_normal(std=0.02, sigmas=2)"}]
        >>> report = init(net, spec, seed=1)
        >>> report.assigned["2.bias"], bool(net[2].weight.abs().max() <= 0.04)
        ('*.bias -> zeros', True)
    """
    import torch

    from .._paramdict import ParamDict

    seed = _check_seed(seed)
    compiled = _compile_rules(rules)
    is_dict = isinstance(target, ParamDict)
    if is_dict:
        items = _dict_items(target)  # type: ignore[arg-type]
        tensors = [it.tensor for it in items]
    elif isinstance(target, torch.nn.Module):
        items = _module_items(target)
        tensors = [*(it.tensor for it in items), *target.buffers()]
    else:
        raise ArgumentTypeError(
            f"init: expected a torch.nn.Module or a ParamDict, found {type(target).__name__}"
        )
    _plan(items, compiled, is_dict)
    unused = [r.text for r in compiled if not r.used]
    if strict and unused:
        raise MissingNameError(
            f"init: {len(unused)} rule(s) set nothing: {unused} (strict=True); check the "
            "selectors against the parameter names"
        )
    _dry_run(items)

    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    materialized = any(t.device.type == "meta" for t in tensors)
    zeroed: list[str] = []
    with torch.no_grad():
        if materialized and is_dict:
            zeroed = _materialize_dict(target, items)  # type: ignore[arg-type]
        elif materialized:
            model: torch.nn.Module = target  # type: ignore[assignment]
            _materialize_module(model)
            fresh = {it.names[0]: it.tensor for it in _module_items(model)}
            for it in items:
                it.tensor = fresh[it.names[0]]
            zeroed = _reset_materialized(model, items, _draw_seed(gen))
        done: set[int] = set()
        for item in items:
            if item.rule is None:
                continue
            if item.rule.scheme.is_default:
                _run_defaults(item, items, done, gen)
            else:
                _fill(item, gen)
    if zeroed:
        shown = ", ".join(zeroed[:8]) + (f" and {len(zeroed) - 8} more" if len(zeroed) > 8 else "")
        warnings.warn(
            f"init: materialised meta tensors with no rule and no reset method were zeroed: "
            f"{shown}; buffers computed in __init__ (e.g. rotary inv_freq) must be recomputed",
            UserWarning,
            stacklevel=2,
        )

    report = InitReport(seed=seed, materialized=materialized, unused_rules=unused)
    for item in items:
        first = item.names[0]
        if item.rule is not None:
            report.assigned[first] = item.rule.text
            for alias in item.names[1:]:
                report.assigned[alias] = f"tied to {first}"
        elif not item.buffer:
            report.untouched.extend(item.names)
    return report
