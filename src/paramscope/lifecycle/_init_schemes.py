"""Init schemes: the registry of named schemes, the built-ins, and the safe scheme parser.

A scheme fills one tensor in place, drawing every random number from the generator it is
given: ``fn(tensor, generator, *args, **kwargs)``. Rules name a scheme as text, ``"zeros"`` or
``"normal(std=0.02)"``; :func:`parse_scheme` reads that text with :mod:`ast` (literal arguments
only, never evaluated), and :func:`register_scheme` adds named schemes next to the built-ins
(listed in :mod:`paramscope.lifecycle._init`'s docstring). Importing this module never imports
torch: the built-ins import it when they run.

Example:
    >>> parse_scheme("normal(std=0.02)")
    ('normal', (), {'std': 0.02})
    >>> "kaiming_uniform" in init_schemes()
    True
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, DuplicateNameError

if TYPE_CHECKING:
    import torch

__all__ = ["SchemeFn", "init_schemes", "parse_scheme", "register_scheme"]


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


_BUILTIN_FNS = dict(_SCHEMES)


# Annotation (a string: this module uses postponed annotations) → accepted literal types.
_ARG_TYPES: dict[str, tuple[type, ...]] = {
    "float": (int, float),
    "int": (int,),
    "str": (str,),
    "float | None": (int, float, type(None)),
}


# ------------------------------------------------------------------------------ registry


def register_scheme(name: str, fn: SchemeFn, *, replace: bool = False) -> None:
    """Add a named scheme that rules can use as ``"name"`` or ``"name(arg=...)"``.

    Args:
        name: a Python identifier (not ``default``).
        fn: ``fn(tensor, generator, *args, **kwargs)``; fills ``tensor`` in place, drawing
            every random number from ``generator`` (a CPU ``torch.Generator``).
        replace: allow replacing a scheme of that name (built-ins included).

    Raises:
        ArgumentError: a bad name.
        DuplicateNameError: a taken name without ``replace``.
        ArgumentTypeError: ``fn`` is not callable or does not accept ``(tensor, generator)``.

    Example:
        >>> def spike(t, g, at=0.0):
        ...     t.zero_(); t.view(-1)[0] = at
        >>> register_scheme("spike", spike, replace=True)
        >>> "spike" in init_schemes()
        True
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ArgumentError(f"register_scheme: name {name!r}: expected a Python identifier")
    if name == "default":
        raise ArgumentError(
            "register_scheme: name='default' is reserved (it runs each module's own "
            "reset_parameters); choose another name"
        )
    if name in _SCHEMES and not replace:
        raise DuplicateNameError(
            f"register_scheme: scheme {name!r} exists; pass replace=True to replace it"
        )
    if not callable(fn):
        raise ArgumentTypeError(f"register_scheme {name!r}: expected a callable, found {fn!r}")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError as exc:
        raise ArgumentTypeError(
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
        ArgumentError: the text is not of that form.

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
        raise ArgumentError(f"scheme {text!r}: {expected}")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ArgumentError(f"scheme {text!r}: {expected}") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ArgumentError(f"scheme {text!r}: {expected}")
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError("**")
            kwargs[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ArgumentError(
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
