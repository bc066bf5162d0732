"""Formulas of the convolutions: ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d``.

:func:`conv` and :func:`conv_transpose` take the number of spatial dimensions first, then
torch's signature; ``conv2d`` and the others take torch's signature exactly (see
:mod:`paramscope.formulas`).

Example:
    >>> conv2d(64, 64, 3, 2).params  # stride 2, as nn.Conv2d(64, 64, 3, 2)
    36928
    >>> conv_transpose(2, 64, 32, 4).expression
    '64×(32/1)×4×4 + 32 = 32,800'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._checks import _dims, _divisible, _flag, _int, _kernel
from ._formula import Formula, _done

__all__ = [
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
]


_Size = int | Sequence[int]  # torch's ``Union[int, tuple[int, ...]]`` size arguments


def _conv_args(
    fn: str,
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    groups: int,
    bias: bool,
) -> tuple[int, int, int, tuple[int, ...], int, bool]:
    d = _dims(fn, dims)
    i = _int(fn, "in_channels", in_channels)
    o = _int(fn, "out_channels", out_channels)
    k = _kernel(fn, d, kernel_size)
    g = _int(fn, "groups", groups)
    b = _flag(fn, "bias", bias)
    _divisible(fn, "in_channels", i, "groups", g)
    _divisible(fn, "out_channels", o, "groups", g)
    return d, i, o, k, g, b


def conv(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: str | _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.Conv1d/2d/3d``: weight ``(out, in/groups, *kernel)``, bias ``(out,)``.

    After ``dims`` this takes ``nn.Conv2d``'s signature (the same for 1d and 3d); ``stride``,
    ``padding``, ``dilation``, ``padding_mode``, ``device`` and ``dtype`` are accepted in their
    positions and ignored.

    Args:
        dims: 1, 2 or 3 spatial dimensions.
        in_channels: input channels (divisible by ``groups``).
        out_channels: output channels (divisible by ``groups``).
        kernel_size: an int (same size in every dimension) or a tuple of ``dims`` ints.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        dilation: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``(3/1)×64×7×7 + 64 = 9,472``.

    Example:
        >>> conv(2, 3, 64, 7).expression
        '(3/1)×64×7×7 + 64 = 9,472'
    """
    fn = f"conv{dims}d" if dims in (1, 2, 3) else "conv"
    d, i, o, k, g, b = _conv_args(fn, dims, in_channels, out_channels, kernel_size, groups, bias)
    struct = f"({i}/{g})×{o}×" + "×".join(map(str, k)) + (f" + {o}" if b else "")
    return _done(f"Conv{d}d", (i // g) * o * math.prod(k) + (o if b else 0), struct)


def conv1d(
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: str | _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.Conv1d`` (its exact signature); see :func:`conv`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: an int or a 1-tuple.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        dilation: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> conv1d(16, 32, 3).params
        1568
    """
    return conv(1, in_channels, out_channels, kernel_size, groups=groups, bias=bias)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: str | _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.Conv2d`` (its exact signature); see :func:`conv`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: an int or a 2-tuple.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        dilation: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> conv2d(64, 64, 3, 2).params  # stride=2, as in nn.Conv2d(64, 64, 3, 2)
        36928
        >>> conv2d(32, 32, (3, 3), groups=32, bias=False).expression
        '(32/32)×32×3×3 = 288'
    """
    return conv(2, in_channels, out_channels, kernel_size, groups=groups, bias=bias)


def conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: str | _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.Conv3d`` (its exact signature); see :func:`conv`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: an int or a 3-tuple.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        dilation: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> conv3d(3, 8, (1, 3, 3)).params
        224
    """
    return conv(3, in_channels, out_channels, kernel_size, groups=groups, bias=bias)


def conv_transpose(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: _Size = 0,
    output_padding: _Size = 0,
    groups: int = 1,
    bias: bool = True,
    dilation: _Size = 1,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.ConvTranspose1d/2d/3d``: weight ``(in, out/groups, *k)``, bias ``(out,)``.

    After ``dims`` this takes ``nn.ConvTranspose2d``'s signature (the same for 1d and 3d; note
    that torch puts ``output_padding`` before ``groups`` and ``dilation`` after ``bias``);
    ``stride``, ``padding``, ``output_padding``, ``dilation``, ``padding_mode``, ``device`` and
    ``dtype`` are accepted in their positions and ignored.

    Args:
        dims: 1, 2 or 3 spatial dimensions.
        in_channels: input channels (divisible by ``groups``).
        out_channels: output channels (divisible by ``groups``).
        kernel_size: an int (same size in every dimension) or a tuple of ``dims`` ints.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        output_padding: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        dilation: ignored (does not change the count).
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``64×(32/1)×4×4 + 32 = 32,800``.

    Example:
        >>> conv_transpose(2, 64, 32, 4).expression
        '64×(32/1)×4×4 + 32 = 32,800'
    """
    fn = f"conv_transpose{dims}d" if dims in (1, 2, 3) else "conv_transpose"
    d, i, o, k, g, b = _conv_args(fn, dims, in_channels, out_channels, kernel_size, groups, bias)
    struct = f"{i}×({o}/{g})×" + "×".join(map(str, k)) + (f" + {o}" if b else "")
    return _done(f"ConvTranspose{d}d", i * (o // g) * math.prod(k) + (o if b else 0), struct)


def conv_transpose1d(
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: _Size = 0,
    output_padding: _Size = 0,
    groups: int = 1,
    bias: bool = True,
    dilation: _Size = 1,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.ConvTranspose1d`` (its exact signature); see :func:`conv_transpose`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: an int or a 1-tuple.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        output_padding: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        dilation: ignored (does not change the count).
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> conv_transpose1d(8, 4, 3).params
        100
    """
    return conv_transpose(1, in_channels, out_channels, kernel_size, groups=groups, bias=bias)


def conv_transpose2d(
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: _Size = 0,
    output_padding: _Size = 0,
    groups: int = 1,
    bias: bool = True,
    dilation: _Size = 1,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.ConvTranspose2d`` (its exact signature); see :func:`conv_transpose`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: an int or a 2-tuple.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        output_padding: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        dilation: ignored (does not change the count).
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> conv_transpose2d(8, 4, (2, 3), groups=2).params
        100
        >>> conv_transpose2d(8, 4, 3, 2, 1, 1, 2).params  # stride, padding, output_padding, groups
        148
    """
    return conv_transpose(2, in_channels, out_channels, kernel_size, groups=groups, bias=bias)


def conv_transpose3d(
    in_channels: int,
    out_channels: int,
    kernel_size: _Size,
    stride: _Size = 1,
    padding: _Size = 0,
    output_padding: _Size = 0,
    groups: int = 1,
    bias: bool = True,
    dilation: _Size = 1,
    padding_mode: str = "zeros",
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.ConvTranspose3d`` (its exact signature); see :func:`conv_transpose`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: an int or a 3-tuple.
        stride: ignored (does not change the count).
        padding: ignored (does not change the count).
        output_padding: ignored (does not change the count).
        groups: blocked connections from input to output channels.
        bias: whether the layer has a bias.
        dilation: ignored (does not change the count).
        padding_mode: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> conv_transpose3d(2, 2, 2, bias=False).params
        32
    """
    return conv_transpose(3, in_channels, out_channels, kernel_size, groups=groups, bias=bias)
