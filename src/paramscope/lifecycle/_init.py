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
"""

from __future__ import annotations

import ast
import inspect
import secrets
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ParamscopeError
from .._names import compile_pattern, did_you_mean

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = ["InitReport", "SchemeFn", "init", "init_schemes", "parse_scheme", "register_scheme"]

SchemeFn = Callable[..., None]
"""A scheme: ``fn(tensor, generator, **kwargs)`` fills ``tensor`` in place."""

_MAX_SCHEME_TEXT = 500


# ------------------------------------------------------------------------------ built-ins
def _zeros(t: torch.Tensor, g: torch.Generator) -> None:
    t.zero_()


def _ones(t: torch.Tensor, g: torch.Generator) -> None:
    t.fill_(1)


def _constant(t: torch.Tensor, g: torch.Generator, val: float) -> None:
    t.fill_(val)


class _ArgError(ValueError):
    """A scheme argument is wrong whatever the tensor (checked when the rule is compiled)."""


def _positive(what: str, value: float) -> None:
    if value <= 0:
        raise _ArgError(f"{what} must be > 0, found {value}")


_NONLINEARITIES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)


def _kaiming_args(mode: str, nonlinearity: str) -> None:
    if mode not in ("fan_in", "fan_out"):
        raise _ArgError(f"mode={mode!r}: expected 'fan_in' or 'fan_out'")
    if nonlinearity not in _NONLINEARITIES:
        raise _ArgError(f"nonlinearity={nonlinearity!r}: expected one of {list(_NONLINEARITIES)}")


def _normal(t: torch.Tensor, g: torch.Generator, mean: float = 0.0, std: float = 1.0) -> None:
    _positive("std", std)
    t.normal_(mean, std, generator=g)


def _uniform(t: torch.Tensor, g: torch.Generator, a: float = 0.0, b: float = 1.0) -> None:
    if a > b:
        raise _ArgError(f"expected a <= b, found a={a}, b={b}")
    t.uniform_(a, b, generator=g)


def _trunc_normal(
    t: torch.Tensor,
    g: torch.Generator,
    mean: float = 0.0,
    std: float = 1.0,
    a: float | None = None,
    b: float | None = None,
    *,
    sigmas: float | None = None,
) -> None:
    import torch

    _positive("std", std)
    if sigmas is not None:
        if a is not None or b is not None:
            raise _ArgError(
                "give either absolute cut-offs a=, b= (torch semantics) or sigmas=k "
                f"(cut-offs mean ± k·std), not both; found a={a}, b={b}, sigmas={sigmas}"
            )
        _positive("sigmas", sigmas)
        lo, hi = mean - sigmas * std, mean + sigmas * std
    else:
        lo = -2.0 if a is None else a
        hi = 2.0 if b is None else b
    if lo >= hi:
        raise _ArgError(f"expected a < b, found a={lo}, b={hi}")
    torch.nn.init.trunc_normal_(t, mean, std, lo, hi, generator=g)


def _xavier_uniform(t: torch.Tensor, g: torch.Generator, gain: float = 1.0) -> None:
    import torch

    torch.nn.init.xavier_uniform_(t, gain, generator=g)


def _xavier_normal(t: torch.Tensor, g: torch.Generator, gain: float = 1.0) -> None:
    import torch

    torch.nn.init.xavier_normal_(t, gain, generator=g)


def _kaiming_uniform(
    t: torch.Tensor,
    g: torch.Generator,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
) -> None:
    import torch

    _kaiming_args(mode, nonlinearity)
    torch.nn.init.kaiming_uniform_(t, a, mode, nonlinearity, generator=g)  # type: ignore[arg-type]


def _kaiming_normal(
    t: torch.Tensor,
    g: torch.Generator,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
) -> None:
    import torch

    _kaiming_args(mode, nonlinearity)
    torch.nn.init.kaiming_normal_(t, a, mode, nonlinearity, generator=g)  # type: ignore[arg-type]


def _orthogonal(t: torch.Tensor, g: torch.Generator, gain: float = 1.0) -> None:
    import torch

    torch.nn.init.orthogonal_(t, gain, generator=g)


def _eye(t: torch.Tensor, g: torch.Generator) -> None:
    import torch

    torch.nn.init.eye_(t)


def _dirac(t: torch.Tensor, g: torch.Generator, groups: int = 1) -> None:
    import torch

    _positive("groups", groups)
    torch.nn.init.dirac_(t, groups)


def _default(t: torch.Tensor, g: torch.Generator) -> None:  # pragma: no cover - never called
    raise AssertionError("'default' is applied per module, not per tensor")


_SCHEMES: dict[str, SchemeFn] = {
    "zeros": _zeros,
    "ones": _ones,
    "constant": _constant,
    "normal": _normal,
    "uniform": _uniform,
    "trunc_normal": _trunc_normal,
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": _kaiming_normal,
    "orthogonal": _orthogonal,
    "eye": _eye,
    "dirac": _dirac,
    "default": _default,
}
_BUILTIN = frozenset(_SCHEMES)

# Annotation (a string: this module uses postponed annotations) → accepted literal types.
_ARG_TYPES: dict[str, tuple[type, ...]] = {
    "float": (int, float),
    "int": (int,),
    "str": (str,),
    "float | None": (int, float, type(None)),
}


def register_scheme(name: str, fn: SchemeFn, *, replace: bool = False) -> None:
    """Add a named scheme that rules can use as ``"name"`` or ``"name(arg=...)"``.

    Args:
        name: a Python identifier (not ``default``).
        fn: ``fn(tensor, generator, *args, **kwargs)``; fills ``tensor`` in place, drawing
            every random number from ``generator`` (a CPU ``torch.Generator``).
        replace: allow replacing a scheme of that name (built-ins included).

    Raises:
        ParamscopeError: a bad name, a taken name without ``replace``, or ``fn`` does not
            accept ``(tensor, generator)``.

    Example:
        >>> def spike(t, g, at=0.0):
        ...     t.zero_(); t.view(-1)[0] = at
        >>> register_scheme("spike", spike, replace=True)
        >>> "spike" in init_schemes()
        True
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ParamscopeError(f"register_scheme: name {name!r}: expected a Python identifier")
    if name == "default":
        raise ParamscopeError("register_scheme: 'default' is reserved (module reset_parameters)")
    if name in _SCHEMES and not replace:
        raise ParamscopeError(
            f"register_scheme: scheme {name!r} exists; pass replace=True to replace it"
        )
    if not callable(fn):
        raise ParamscopeError(f"register_scheme {name!r}: expected a callable, found {fn!r}")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError as exc:
        raise ParamscopeError(
            f"register_scheme {name!r}: fn must accept (tensor, generator): {exc}"
        ) from None
    except ValueError:  # no signature (a builtin): trust it
        pass
    _SCHEMES[name] = fn


def init_schemes() -> list[str]:
    """The registered scheme names, sorted.

    Returns:
        The names usable in rules.

    Example:
        >>> {"normal", "trunc_normal", "default"} <= set(init_schemes())
        True
    """
    return sorted(_SCHEMES)


def parse_scheme(text: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """Split ``"name"`` or ``"name(args)"`` into the name and literal arguments, safely.

    The text is parsed with :func:`ast.parse`; arguments must be literals (numbers, strings,
    ``True``/``False``/``None``, tuples, lists), read with :func:`ast.literal_eval`. Nothing is
    evaluated or imported.

    Args:
        text: the scheme text.

    Returns:
        ``(name, args, kwargs)``.

    Raises:
        ParamscopeError: the text is not of that form.

    Example:
        >>> parse_scheme("trunc_normal(std=0.02, sigmas=2)")
        ('trunc_normal', (), {'std': 0.02, 'sigmas': 2})
        >>> parse_scheme("uniform(-10, 10)")
        ('uniform', (-10, 10), {})
    """
    expected = "expected a scheme name like 'zeros' or a call with literal arguments like " + (
        "'normal(std=0.02)'"
    )
    if not isinstance(text, str) or len(text) > _MAX_SCHEME_TEXT:
        raise ParamscopeError(f"scheme {text!r}: {expected}")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ParamscopeError(f"scheme {text!r}: {expected}") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ParamscopeError(f"scheme {text!r}: {expected}")
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError("**")
            kwargs[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ParamscopeError(
            f"scheme {text!r}: arguments must be literals (numbers, strings, True/False/None), "
            "written name=value or positionally"
        ) from None
    return node.func.id, args, kwargs


def _signature_text(name: str, fn: SchemeFn) -> str:
    try:
        params = list(inspect.signature(fn).parameters.values())[2:]
    except (TypeError, ValueError):
        return f"{name}(...)"
    parts: list[str] = []
    star = False
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"{name}({', '.join(parts)})" if parts else name


# ------------------------------------------------------------------------------ rules
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


_BUILTIN_FNS = dict(_SCHEMES)


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


def _err(i: int, text: str, problem: str) -> ParamscopeError:
    return ParamscopeError(f"init rule {i} ({text!r}): {problem}")


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
            raise ParamscopeError(
                f"init rule {i} ({dict(rule)!r}): expected keys 'select' and 'init', found "
                f"{sorted(map(str, rule))}"
            )
        selector, scheme = rule["select"], rule["init"]
    elif isinstance(rule, (tuple, list)) and len(rule) == 2:
        selector, scheme = rule
    else:
        raise ParamscopeError(
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
        raise ParamscopeError(
            "init: rules is one {'select': ..., 'init': ...} dict; pass a list of rules"
        )
    if isinstance(rules, Mapping):
        pairs: Iterable[object] = list(rules.items())
    elif isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        raise ParamscopeError(
            f"init: rules must be a list of (selector, scheme) pairs, found {type(rules).__name__}"
        )
    else:
        pairs = list(rules)
    return [_compile_rule(i, r) for i, r in enumerate(pairs)]


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


# ------------------------------------------------------------------------------ targets
@dataclass
class _Item:
    names: list[str]
    tensor: Any
    owners: list[Any]  # the module directly owning each name (None for a ParamDict)
    buffer: bool = False
    rule: _Rule | None = None
    owner: Any = None  # the owner of the name the rule matched


def _module_items(model: torch.nn.Module) -> list[_Item]:
    items: dict[int, _Item] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        pre = f"{mod_name}." if mod_name else ""
        for leaf, p in mod._parameters.items():
            if p is None:
                continue
            item = items.get(id(p))
            if item is None:
                items[id(p)] = _Item([pre + leaf], p, [mod])
            elif pre + leaf not in item.names:
                item.names.append(pre + leaf)
                item.owners.append(mod)
    return list(items.values())


def _dict_items(pd: ParamDict) -> list[_Item]:
    from .._enums import Role

    items: dict[int, _Item] = {}
    for name in pd:
        t = pd[name]
        item = items.get(id(t))
        if item is None:
            items[id(t)] = _Item([name], t, [None], buffer=pd.meta(name).role is Role.BUFFER)
        else:
            item.names.append(name)
            item.owners.append(None)
    return list(items.values())


def _match(rule: _Rule, item: _Item) -> int:
    for k, name in enumerate(item.names):
        if item.buffer:
            if rule.exact == name:
                return k
        elif rule.kind == "pattern":
            if rule.match is not None and rule.match(name):
                return k
        elif rule.kind == "type":
            if rule.owner_matches(item.owners[k]):
                return k
        elif rule.predicate is not None and rule.predicate(name, item.tensor):
            return k
    return -1


def _plan(items: list[_Item], rules: list[_Rule], is_dict: bool) -> None:
    import torch

    for item in items:
        for rule in rules:
            k = _match(rule, item)
            if k < 0:
                continue
            item.rule, item.owner = rule, item.owners[k]
            rule.used = True
            name = item.names[0]
            if isinstance(item.tensor, torch.nn.parameter.UninitializedParameter):
                raise _err(
                    rule.index,
                    rule.text,
                    f"parameter {name!r} is lazy (uninitialised); run a forward pass first",
                )
            if rule.scheme.is_default:
                if is_dict:
                    raise _err(
                        rule.index,
                        rule.text,
                        f"'default' calls the owning module's reset_parameters(), but entry "
                        f"{name!r} is in a ParamDict, which has no modules; name an explicit "
                        "scheme such as 'normal(std=0.02)'",
                    )
                if not callable(getattr(item.owner, "reset_parameters", None)):
                    raise _err(
                        rule.index,
                        rule.text,
                        f"'default' needs reset_parameters() on the module owning {name!r}, but "
                        f"{type(item.owner).__name__} has none; name an explicit scheme",
                    )
            break


def _scratch_dtype(dtype: torch.dtype) -> torch.dtype:
    import torch

    if dtype.is_floating_point and dtype.itemsize < 4:
        return torch.float32
    return dtype


def _dry_run(items: list[_Item]) -> None:
    """Run built-in schemes on meta tensors of each shape, so bad args fail before any write."""
    import torch

    seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
    for item in items:
        rule = item.rule
        if rule is None or not rule.scheme.checkable or rule.scheme.is_default:
            continue
        shape = tuple(item.tensor.shape)
        dtype = _scratch_dtype(item.tensor.dtype)
        if (rule.index, shape, dtype) in seen:
            continue
        seen.add((rule.index, shape, dtype))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rule.scheme(torch.empty(shape, dtype=dtype, device="meta"), None)
        except Exception as exc:
            raise _err(
                rule.index,
                rule.text,
                f"cannot initialise {item.names[0]!r} of shape {shape}, dtype {item.tensor.dtype}:"
                f" {exc}",
            ) from None


def _fill(item: _Item, g: torch.Generator) -> None:
    import torch

    t, rule = item.tensor, item.rule
    assert rule is not None
    if t.numel() == 0:
        return
    dtype = _scratch_dtype(t.dtype)
    try:
        if t.device.type == "cpu" and dtype == t.dtype:
            rule.scheme(t, g)
        else:
            scratch = torch.empty(t.shape, dtype=dtype)
            rule.scheme(scratch, g)
            t.copy_(scratch)
    except ParamscopeError:
        raise
    except Exception as exc:
        raise _err(
            rule.index,
            rule.text,
            f"failed on {item.names[0]!r} of shape {tuple(t.shape)}: {type(exc).__name__}: {exc}",
        ) from exc


def _draw_seed(g: torch.Generator) -> int:
    import torch

    return int(torch.randint(0, 2**62, (1,), generator=g))


@contextmanager
def _seeded_global_rng(seed: int, tensors: Iterable[torch.Tensor]) -> Iterator[None]:
    """Fork the global RNGs of the CPU and of the devices ``tensors`` live on, seeded."""
    import torch

    devices: dict[str, set[int]] = {}
    for t in tensors:
        if t.device.type not in ("cpu", "meta"):
            devices.setdefault(t.device.type, set()).add(t.device.index or 0)
    with ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))
        torch.random.default_generator.manual_seed(seed)
        for dtype_name, idx in devices.items():
            stack.enter_context(torch.random.fork_rng(devices=sorted(idx), device_type=dtype_name))
            backend = getattr(torch, dtype_name, None)
            for i in sorted(idx):
                if backend is not None and hasattr(backend, "device"):
                    with backend.device(i):
                        backend.manual_seed(seed)
        yield


def _run_defaults(item: _Item, items: list[_Item], done: set[int], g: torch.Generator) -> None:
    """``reset_parameters()`` of the owner, once, restoring its params assigned elsewhere."""
    mod = item.owner
    if id(mod) in done:
        return
    done.add(id(mod))
    keep = {
        id(it.tensor)
        for it in items
        if it.rule is not None and it.rule.scheme.is_default and it.owner is mod
    }
    params = list(mod.parameters())
    saved = [(p, p.detach().clone()) for p in params if id(p) not in keep]
    seed = _draw_seed(g)
    try:
        with _seeded_global_rng(seed, params):
            mod.reset_parameters()
    except Exception as exc:
        rule = item.rule
        assert rule is not None
        raise _err(
            rule.index,
            rule.text,
            f"{type(mod).__name__}.reset_parameters() failed for {item.names[0]!r}: {exc}",
        ) from exc
    for p, value in saved:
        p.copy_(value)


def _materialize_module(model: torch.nn.Module) -> None:
    """``to_empty(device="cpu")``, then re-tie what it untied and zero every tensor."""
    places: dict[int, list[tuple[Any, str, str]]] = {}
    for mod in model.modules():
        for table in ("_parameters", "_buffers"):
            for leaf, t in getattr(mod, table).items():
                if t is not None:
                    spots = places.setdefault(id(t), [])
                    if (mod, table, leaf) not in spots:
                        spots.append((mod, table, leaf))
    model.to_empty(device="cpu")
    for spots in places.values():
        mod0, table0, leaf0 = spots[0]
        first = getattr(mod0, table0)[leaf0]
        for mod, table, leaf in spots[1:]:
            if getattr(mod, table)[leaf] is not first:
                getattr(mod, table)[leaf] = first
    seen: set[int] = set()
    for mod in model.modules():
        for table in ("_parameters", "_buffers"):
            for t in getattr(mod, table).values():
                if t is not None and id(t) not in seen and t.device.type != "meta":
                    seen.add(id(t))
                    t.zero_()


def _reset_materialized(model: torch.nn.Module, items: list[_Item], seed: int) -> list[str]:
    """Give a materialised model's buffers and rule-less params their module defaults.

    Returns:
        Names left at zero (no rule and no reset method on their module).
    """
    untouched = {id(it.tensor) for it in items if it.rule is None}
    zeroed: list[str] = []
    with _seeded_global_rng(seed, []):
        for mod_name, mod in model.named_modules():
            pre = f"{mod_name}." if mod_name else ""
            bufs = [pre + n for n, b in mod._buffers.items() if b is not None]
            bare = [
                pre + n for n, p in mod._parameters.items() if p is not None and id(p) in untouched
            ]
            has_rp = callable(getattr(mod, "reset_parameters", None))
            has_rs = callable(getattr(mod, "reset_running_stats", None))
            if has_rp and (bare or (bufs and not has_rs)):
                mod.reset_parameters()
                continue
            if bufs and has_rs:
                mod.reset_running_stats()  # type: ignore[operator]
            else:
                zeroed.extend(bufs)
            zeroed.extend(bare)
    return zeroed


def _materialize_dict(pd: ParamDict, items: list[_Item]) -> list[str]:
    import torch

    zeroed: list[str] = []
    for item in items:
        t = item.tensor
        if t.device.type != "meta":
            continue
        pd.update(item.names[0], torch.zeros(t.shape, dtype=t.dtype))
        item.tensor = pd[item.names[0]]
        if item.rule is None:
            zeroed.append(item.names[0])
    return zeroed


def _check_seed(seed: object) -> int:
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ParamscopeError(f"init: seed={seed!r}: expected an int in [0, 2**64) or None")
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
        ParamscopeError: a malformed rule, an unknown scheme or bad arguments (naming the rule
            index, the text and what is expected), a scheme that cannot fill a matched shape,
            ``default`` without ``reset_parameters()``, or with ``strict`` an unused rule.

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
        raise ParamscopeError(
            f"init: expected a torch.nn.Module or a ParamDict, found {type(target).__name__}"
        )
    _plan(items, compiled, is_dict)
    unused = [r.text for r in compiled if not r.used]
    if strict and unused:
        raise ParamscopeError(
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
