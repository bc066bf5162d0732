"""Small helpers the safetensors-layout recognisers share (compressed-tensors, FP8, MLX, MXFP4,
optimum-quanto): looking up siblings, ceiling division, the contradiction error.

Core: imports only core modules.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import QuantConfigError
from .._manifest import Entry, Manifest

__all__ = ["cdiv", "config_error", "free", "siblings"]


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ``a`` by positive ``b``.

    Args:
        a: the dividend.
        b: the divisor.

    Returns:
        ``ceil(a / b)`` in integers.

    Example:
        >>> cdiv(300, 128), cdiv(256, 128)
        (3, 2)
    """
    return -(-a // b)


def free(m: Manifest, claimed: frozenset[str], name: str) -> Entry | None:
    """The entry ``name`` when it is in ``m`` and no earlier recogniser took it.

    Args:
        m: the manifest.
        claimed: names already taken.
        name: the name looked up.

    Returns:
        The entry, or ``None``.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("a", (1,), DType.F32)])
        >>> free(m, frozenset(), "a").name, free(m, frozenset({"a"}), "a")
        ('a', None)
    """
    if name in claimed or name not in m:
        return None
    return m[name]


def siblings(
    m: Manifest, claimed: frozenset[str], prefix: str, suffixes: Iterable[str]
) -> tuple[str, ...]:
    """The names ``prefix + suffix`` that exist in ``m`` and are not claimed, in order.

    Args:
        m: the manifest.
        claimed: names already taken.
        prefix: the common start (``"layer.0.q_proj."``).
        suffixes: the endings looked for.

    Returns:
        The names found.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("p.s", (1,), DType.F32)])
        >>> siblings(m, frozenset(), "p.", ("s", "z"))
        ('p.s',)
    """
    return tuple(prefix + s for s in suffixes if prefix + s in m and prefix + s not in claimed)


def config_error(m: Manifest, problem: str) -> QuantConfigError:
    """The error for a config that contradicts the tensors, naming the checkpoint.

    Args:
        m: the manifest (its ``source`` names the checkpoint).
        problem: the entry, what the config says and what the tensors say.

    Returns:
        The error, to raise.

    Example:
        >>> from paramscope import Manifest
        >>> str(config_error(Manifest([]), "x: config says 4-bit, the tensor fits 8"))
        'checkpoint: x: config says 4-bit, the tensor fits 8'
    """
    return QuantConfigError(m.source or "checkpoint", problem)
