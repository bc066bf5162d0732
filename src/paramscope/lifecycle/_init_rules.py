"""Init rules: compiling ``(selector, scheme)`` pairs into checked rules.

A rule pairs a selector (a name glob or ``re:`` regex, a list of them, a module class,
``"type:Name"``, or a predicate ``(name, tensor) -> bool``) with a scheme (a registered name
with literal arguments, or a callable). :func:`_compile_rules` checks every rule, the scheme's
name and arguments included, before :func:`paramscope.lifecycle._init.init` touches a tensor,
and raises a :class:`~paramscope.ArgumentError` that names the rule's index and text.

Example:
    >>> [r.text for r in _compile_rules([("*.bias", "zeros"), ("type:Linear", "ones")])]
    ['*.bias -> zeros', 'type:Linear -> ones']
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, ParamscopeError
from .._names import compile_pattern, did_you_mean
from ._init_schemes import (
    _ARG_TYPES,
    _BUILTIN,
    _BUILTIN_FNS,
    _SCHEMES,
    SchemeFn,
    _ArgError,
    _signature_text,
    parse_scheme,
)

if TYPE_CHECKING:
    import torch


@dataclass
class _Scheme:
    text: str
    name: str | None  # registered name, None for a callable
    fn: SchemeFn
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return self.name == "default"

    @property
    def checkable(self) -> bool:  # a built-in, safe to dry-run on the meta device
        return self.name is not None and self.fn is _BUILTIN_FNS.get(self.name)

    def __call__(self, t: torch.Tensor, g: torch.Generator | None) -> None:
        self.fn(t, g, *self.args, **self.kwargs)


@dataclass
class _Rule:
    index: int
    text: str
    scheme: _Scheme
    kind: str  # "pattern" | "type" | "predicate"
    match: Callable[[str], bool] | None = None
    module_type: type | None = None
    type_name: str | None = None
    predicate: Callable[[str, Any], bool] | None = None
    exact: str | None = None  # the selector when it is one plain string (names a buffer)
    used: bool = False

    def owner_matches(self, mod: Any) -> bool:
        if mod is None:
            return False
        if self.module_type is not None:
            return isinstance(mod, self.module_type)
        return any(c.__name__ == self.type_name for c in type(mod).__mro__)


def _err(i: int, text: str, problem: str) -> ArgumentError:
    return ArgumentError(f"init rule {i} ({text!r}): {problem}")


def _compile_scheme(i: int, rule_text: str, scheme: object) -> _Scheme:
    if callable(scheme) and not isinstance(scheme, str):
        name = getattr(scheme, "__name__", type(scheme).__name__)
        return _Scheme(str(name), None, scheme)
    if not isinstance(scheme, str):
        raise _err(
            i,
            rule_text,
            f"scheme {scheme!r}: expected a scheme name, a call like "
            "'normal(std=0.02)' or a callable (tensor, generator) -> None",
        )
    try:
        name, args, kwargs = parse_scheme(scheme)
    except ParamscopeError as exc:
        raise _err(i, rule_text, str(exc)) from None
    key = name if name in _SCHEMES else name.rstrip("_")  # accept torch's "normal_" spelling
    if key not in _SCHEMES:
        hints = did_you_mean(name, _SCHEMES)
        tail = f"; did you mean {' or '.join(repr(h) for h in hints)}?" if hints else ""
        raise _err(
            i,
            rule_text,
            f"unknown init scheme {name!r}; expected one of {', '.join(sorted(_SCHEMES))}, or "
            f"a callable (tensor, generator) -> None, or register_scheme() it{tail}",
        )
    fn = _SCHEMES[key]
    expected = _signature_text(key, fn)
    try:
        bound = inspect.signature(fn).bind(None, None, *args, **kwargs)
    except TypeError as exc:
        raise _err(i, rule_text, f"bad arguments for {key!r}: {exc}; expected {expected}") from None
    except ValueError:  # no signature to check against
        bound = None
    if bound is not None and key in _BUILTIN and fn is _BUILTIN_FNS[key]:
        params = inspect.signature(fn).parameters
        for arg, value in list(bound.arguments.items())[2:]:
            ann = params[arg].annotation
            ok = _ARG_TYPES.get(ann) if isinstance(ann, str) else None
            if ok is not None and (isinstance(value, bool) or not isinstance(value, ok)):
                raise _err(
                    i,
                    rule_text,
                    f"bad argument {arg}={value!r} for {key!r}: expected {ann}; "
                    f"expected {expected}",
                )
    compiled = _Scheme(scheme.strip(), key, fn, args, kwargs)
    if compiled.checkable and not compiled.is_default:
        import torch

        try:  # argument checks only: shape problems surface per parameter in _dry_run
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled(torch.empty((1, 1, 1), device="meta"), None)
        except _ArgError as exc:
            raise _err(i, rule_text, f"{exc}; expected {expected}") from None
        except Exception:
            pass  # a shape this probe does not fit: checked per parameter in _dry_run
    return compiled


def _selector_text(selector: object) -> str:
    if isinstance(selector, str):
        return selector
    if isinstance(selector, type):
        return f"type:{selector.__name__}"
    if isinstance(selector, Sequence):
        return "[" + ", ".join(str(s) for s in selector) + "]"
    return str(getattr(selector, "__name__", type(selector).__name__))


def _compile_rule(i: int, rule: object) -> _Rule:
    import torch

    if isinstance(rule, Mapping):
        extra = set(rule) - {"select", "init"}
        if extra or "select" not in rule or "init" not in rule:
            raise ArgumentError(
                f"init rule {i} ({dict(rule)!r}): expected keys 'select' and 'init', found "
                f"{sorted(map(str, rule))}"
            )
        selector, scheme = rule["select"], rule["init"]
    elif isinstance(rule, (tuple, list)) and len(rule) == 2:
        selector, scheme = rule
    else:
        raise ArgumentError(
            f"init rule {i} ({rule!r}): expected a (selector, scheme) pair or "
            "{'select': ..., 'init': ...}"
        )
    sel_text = _selector_text(selector)
    scheme_text = scheme if isinstance(scheme, str) else _selector_text(scheme)
    text = f"{sel_text} -> {str(scheme_text).strip()}"
    compiled = _compile_scheme(i, text, scheme)
    text = f"{sel_text} -> {compiled.text}"
    if isinstance(selector, str) and selector.startswith("type:"):
        tname = selector[len("type:") :].strip()
        for pre in ("torch.nn.", "nn."):
            tname = tname.removeprefix(pre)
        if not tname.isidentifier():
            raise _err(i, text, f"selector {selector!r}: expected 'type:<ClassName>'")
        cls = getattr(torch.nn, tname, None)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            return _Rule(i, text, compiled, "type", module_type=cls)
        return _Rule(i, text, compiled, "type", type_name=tname)
    if isinstance(selector, str) or (
        isinstance(selector, Sequence) and selector and all(isinstance(s, str) for s in selector)
    ):
        try:
            match = compile_pattern(selector)  # type: ignore[arg-type]
        except ParamscopeError as exc:
            raise _err(i, text, str(exc)) from None
        exact = selector if isinstance(selector, str) and not selector.startswith("re:") else None
        return _Rule(i, text, compiled, "pattern", match=match, exact=exact)
    if isinstance(selector, type):
        if not issubclass(selector, torch.nn.Module):
            raise _err(i, text, f"selector {selector!r}: a class must be a torch.nn.Module type")
        return _Rule(i, text, compiled, "type", module_type=selector)
    if callable(selector):
        return _Rule(i, text, compiled, "predicate", predicate=selector)
    raise _err(
        i,
        text,
        f"selector {selector!r}: expected a glob, 're:regex', 'type:Name', a module "
        "class or a predicate (name, tensor) -> bool",
    )


def _compile_rules(rules: object) -> list[_Rule]:
    if isinstance(rules, Mapping) and {"select", "init"} <= set(rules):
        raise ArgumentError(
            "init: rules is one {'select': ..., 'init': ...} dict; pass a list of rules"
        )
    if isinstance(rules, Mapping):
        pairs: Iterable[object] = list(rules.items())
    elif isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        raise ArgumentTypeError(
            f"init: rules must be a list of (selector, scheme) pairs, found {type(rules).__name__}"
        )
    else:
        pairs = list(rules)
    return [_compile_rule(i, r) for i, r in enumerate(pairs)]
