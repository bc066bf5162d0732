"""Argument checks shared by the layer formulas.

Each check takes the calling formula's name (``fn``) and the argument's name, and raises a
:class:`~paramscope.ArgumentError` (a value out of range) or
:class:`~paramscope.ArgumentTypeError` (a value of another type) naming both, the expected and
the found value, e.g.
``linear: in_features must be a positive int, got 0``. Nothing here imports torch.

Example:
    >>> _kernel("conv2d", 2, 3)
    (3, 3)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from ..._errors import ArgumentError, ArgumentTypeError


def _int(fn: str, name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or an error naming ``fn`` and ``name``."""
    expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{fn}: {name} must be {expected}, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(f"{fn}: {name} must be {expected}, got {value!r}") from None
    if number < minimum:
        raise ArgumentError(f"{fn}: {name} must be {expected}, got {number}")
    return number


def _flag(fn: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{fn}: {name} must be True or False, got {value!r}")
    return value


def _divisible(fn: str, name: str, value: int, by_name: str, by: int) -> None:
    if value % by:
        raise ArgumentError(f"{fn}: {name} must be divisible by {by_name}={by}, got {name}={value}")


def _shape(fn: str, name: str, value: object) -> tuple[int, ...]:
    """An int or a non-empty sequence of positive ints, as a tuple."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise ArgumentError(f"{fn}: {name} must be a non-empty shape, got {value!r}")
        return tuple(_int(fn, name, v) for v in value)
    return (_int(fn, name, value),)


def _kernel(fn: str, dims: int, kernel_size: object) -> tuple[int, ...]:
    kernel = _shape(fn, "kernel_size", kernel_size)
    if len(kernel) == 1:
        return kernel * dims
    if len(kernel) != dims:
        raise ArgumentError(
            f"{fn}: kernel_size must be an int or a tuple of {dims} ints, got {kernel_size!r}"
        )
    return kernel


def _dims(fn: str, dims: object) -> int:
    d = _int(fn, "dims", dims)
    if d > 3:
        raise ArgumentError(f"{fn}: dims must be 1, 2 or 3, got {d}")
    return d
