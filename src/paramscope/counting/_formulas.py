"""Analytic parameter counts of common layers, with the arithmetic written out.

Each function takes the exact constructor signature of the torch layer it mirrors: the same
parameter names, in the same order, with the same defaults, so ``conv2d(64, 64, 3, 2)`` reads
its arguments the way ``nn.Conv2d(64, 64, 3, 2)`` does (the 4th one is ``stride``). Arguments
that do not change the count (``stride``, ``padding``, ``dilation``, ``eps``, ``momentum``,
``dropout``, ``batch_first``, ``device``, ``dtype``, …) are accepted in torch's position and
ignored. Each returns a :class:`Formula`: the count of learnable parameters, the buffer elements
kept apart (BatchNorm running statistics), and a one-line expression that shows where the
number comes from, e.g. ``784×10 + 10 = 7,850``.

The plain functions never import torch. :func:`formula_for` reads a module's configuration
attributes (never tensor values, so meta-device modules work) and picks the matching formula.

Example:
    >>> linear(784, 10).expression
    '784×10 + 10 = 7,850'
    >>> conv2d(64, 64, 3, 2).params  # stride 2, as nn.Conv2d(64, 64, 3, 2)
    36928
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._errors import ParamscopeError

__all__ = [
    "Formula",
    "batch_norm",
    "bilinear",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "embedding",
    "embedding_bag",
    "formula_for",
    "group_norm",
    "gru",
    "layer_norm",
    "linear",
    "lstm",
    "multihead_attention",
    "rms_norm",
    "rnn",
    "rnn_tanh",
    "transformer_decoder_layer",
    "transformer_encoder_layer",
]


@dataclass(frozen=True)
class Formula:
    """A layer's parameter count and the arithmetic behind it.

    Attributes:
        params: learnable parameter elements.
        expression: the arithmetic with its result, e.g. ``"784×10 + 10 = 7,850"``.
        buffers: buffer elements (BatchNorm running statistics), not part of ``params``.
        layer: the layer kind, e.g. ``"Linear"``.
    """

    params: int
    expression: str
    buffers: int = 0
    layer: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of this formula.

        Returns:
            ``{"layer", "params", "buffers", "expression"}``.

        Example:
            >>> linear(4, 2).to_dict()
            {'layer': 'Linear', 'params': 10, 'buffers': 0, 'expression': '4×2 + 2 = 10'}
        """
        return {
            "layer": self.layer,
            "params": self.params,
            "buffers": self.buffers,
            "expression": self.expression,
        }


# --------------------------------------------------------------------------- validation helpers


def _int(fn: str, name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ParamscopeError naming ``fn`` and ``name``."""
    expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool):
        raise ParamscopeError(f"{fn}: {name} must be {expected}, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ParamscopeError(f"{fn}: {name} must be {expected}, got {value!r}") from None
    if number < minimum:
        raise ParamscopeError(f"{fn}: {name} must be {expected}, got {number}")
    return number


def _flag(fn: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ParamscopeError(f"{fn}: {name} must be True or False, got {value!r}")
    return value


def _divisible(fn: str, name: str, value: int, by_name: str, by: int) -> None:
    if value % by:
        raise ParamscopeError(
            f"{fn}: {name} must be divisible by {by_name}={by}, got {name}={value}"
        )


def _shape(fn: str, name: str, value: object) -> tuple[int, ...]:
    """An int or a non-empty sequence of positive ints, as a tuple."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise ParamscopeError(f"{fn}: {name} must be a non-empty shape, got {value!r}")
        return tuple(_int(fn, name, v) for v in value)
    return (_int(fn, name, value),)


def _kernel(fn: str, dims: int, kernel_size: object) -> tuple[int, ...]:
    kernel = _shape(fn, "kernel_size", kernel_size)
    if len(kernel) == 1:
        return kernel * dims
    if len(kernel) != dims:
        raise ParamscopeError(
            f"{fn}: kernel_size must be an int or a tuple of {dims} ints, got {kernel_size!r}"
        )
    return kernel


def _dims(fn: str, dims: object) -> int:
    d = _int(fn, "dims", dims)
    if d > 3:
        raise ParamscopeError(f"{fn}: dims must be 1, 2 or 3, got {d}")
    return d


# --------------------------------------------------------------------------- expression helpers


def _done(layer: str, params: int, struct: str, buffers: int = 0, suffix: str = "") -> Formula:
    return Formula(params, f"{struct} = {params:,}{suffix}", buffers, layer)


def _lhs(formula: Formula) -> str:
    """The structure of ``formula.expression`` without its ``= result`` part."""
    return formula.expression.rsplit(" = ", 1)[0]


def _times(n: int, struct: str) -> str:
    """``n×struct``, with parentheses when ``struct`` is more than one number."""
    return f"{n}×{struct}" if struct.isdigit() else f"{n}×({struct})"


def _shape_str(shape: tuple[int, ...]) -> str:
    return str(shape[0]) if len(shape) == 1 else "(" + "×".join(map(str, shape)) + ")"


# --------------------------------------------------------------------------- dense layers


def linear(
    in_features: int,
    out_features: int,
    bias: bool = True,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.Linear``: weight ``(out, in)`` and bias ``(out,)``.

    Takes ``nn.Linear``'s signature; ``device`` and ``dtype`` are accepted and ignored.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: whether the layer has a bias.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``784×10 + 10 = 7,850``.

    Example:
        >>> linear(784, 10).params
        7850
        >>> linear(784, 10, False).expression
        '784×10 = 7,840'
    """
    i = _int("linear", "in_features", in_features)
    o = _int("linear", "out_features", out_features)
    b = _flag("linear", "bias", bias)
    struct = f"{i}×{o}" + (f" + {o}" if b else "")
    return _done("Linear", i * o + (o if b else 0), struct)


def bilinear(
    in1_features: int,
    in2_features: int,
    out_features: int,
    bias: bool = True,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.Bilinear``: weight ``(out, in1, in2)`` and bias ``(out,)``.

    Takes ``nn.Bilinear``'s signature; ``device`` and ``dtype`` are accepted and ignored.

    Args:
        in1_features: size of each first input sample.
        in2_features: size of each second input sample.
        out_features: size of each output sample.
        bias: whether the layer has a bias.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``16×32×8 + 8 = 4,104``.

    Example:
        >>> bilinear(16, 32, 8).expression
        '16×32×8 + 8 = 4,104'
    """
    i1 = _int("bilinear", "in1_features", in1_features)
    i2 = _int("bilinear", "in2_features", in2_features)
    o = _int("bilinear", "out_features", out_features)
    b = _flag("bilinear", "bias", bias)
    struct = f"{i1}×{i2}×{o}" + (f" + {o}" if b else "")
    return _done("Bilinear", i1 * i2 * o + (o if b else 0), struct)


# --------------------------------------------------------------------------- convolutions

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


# --------------------------------------------------------------------------- embeddings


def embedding(
    num_embeddings: int,
    embedding_dim: int,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
    _weight: Any = None,
    _freeze: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.Embedding``: weight ``(num_embeddings, embedding_dim)``.

    Takes ``nn.Embedding``'s signature; every argument after ``embedding_dim`` is accepted in
    its position and ignored (torch requires a given ``_weight`` to have the same shape).

    Args:
        num_embeddings: size of the vocabulary.
        embedding_dim: size of each embedding vector.
        padding_idx: ignored (does not change the count).
        max_norm: ignored (does not change the count).
        norm_type: ignored (does not change the count).
        scale_grad_by_freq: ignored (does not change the count).
        sparse: ignored (does not change the count).
        _weight: ignored (does not change the count).
        _freeze: ignored (a frozen weight is still a parameter).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``50257×768 = 38,597,376``.

    Example:
        >>> embedding(50257, 768).expression
        '50257×768 = 38,597,376'
    """
    n = _int("embedding", "num_embeddings", num_embeddings)
    d = _int("embedding", "embedding_dim", embedding_dim)
    return _done("Embedding", n * d, f"{n}×{d}")


def embedding_bag(
    num_embeddings: int,
    embedding_dim: int,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    mode: str = "mean",
    sparse: bool = False,
    _weight: Any = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.EmbeddingBag``: weight ``(num_embeddings, embedding_dim)``.

    Takes ``nn.EmbeddingBag``'s signature; every argument after ``embedding_dim`` is accepted
    in its position and ignored.

    Args:
        num_embeddings: size of the vocabulary.
        embedding_dim: size of each embedding vector.
        max_norm: ignored (does not change the count).
        norm_type: ignored (does not change the count).
        scale_grad_by_freq: ignored (does not change the count).
        mode: ignored (does not change the count).
        sparse: ignored (does not change the count).
        _weight: ignored (does not change the count).
        include_last_offset: ignored (does not change the count).
        padding_idx: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> embedding_bag(1000, 16).params
        16000
    """
    n = _int("embedding_bag", "num_embeddings", num_embeddings)
    d = _int("embedding_bag", "embedding_dim", embedding_dim)
    return _done("EmbeddingBag", n * d, f"{n}×{d}")


# --------------------------------------------------------------------------- normalisation


def layer_norm(
    normalized_shape: int | Sequence[int],
    eps: float = 1e-05,
    elementwise_affine: bool = True,
    bias: bool = True,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.LayerNorm``: weight and bias of ``normalized_shape`` when affine.

    Takes ``nn.LayerNorm``'s signature; ``eps``, ``device`` and ``dtype`` are ignored.

    Args:
        normalized_shape: an int or a shape.
        eps: ignored (does not change the count).
        elementwise_affine: whether there is a learnable weight (and bias).
        bias: whether there is a learnable bias (only with ``elementwise_affine``).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``2×768 = 1,536``.

    Example:
        >>> layer_norm(768).expression
        '2×768 = 1,536'
        >>> layer_norm((4, 5), bias=False).expression
        '(4×5) = 20'
    """
    shape = _shape("layer_norm", "normalized_shape", normalized_shape)
    affine = _flag("layer_norm", "elementwise_affine", elementwise_affine)
    b = _flag("layer_norm", "bias", bias)
    n, s = math.prod(shape), _shape_str(shape)
    if not affine:
        return _done("LayerNorm", 0, "no elementwise affine")
    if not b:
        return _done("LayerNorm", n, s)
    return _done("LayerNorm", 2 * n, _times(2, s))


def rms_norm(
    normalized_shape: int | Sequence[int],
    eps: float | None = None,
    elementwise_affine: bool = True,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.RMSNorm``: a weight of ``normalized_shape`` when affine.

    Takes ``nn.RMSNorm``'s signature; ``eps``, ``device`` and ``dtype`` are ignored.

    Args:
        normalized_shape: an int or a shape.
        eps: ignored (does not change the count).
        elementwise_affine: whether there is a learnable weight.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``4096 = 4,096``.

    Example:
        >>> rms_norm(4096).params
        4096
    """
    shape = _shape("rms_norm", "normalized_shape", normalized_shape)
    affine = _flag("rms_norm", "elementwise_affine", elementwise_affine)
    if not affine:
        return _done("RMSNorm", 0, "no elementwise affine")
    return _done("RMSNorm", math.prod(shape), _shape_str(shape))


def group_norm(
    num_groups: int,
    num_channels: int,
    eps: float = 1e-05,
    affine: bool = True,
    device: Any = None,
    dtype: Any = None,
    *,
    bias: bool = True,
) -> Formula:
    """Parameters of ``nn.GroupNorm``: weight and bias of ``(num_channels,)`` when affine.

    Takes ``nn.GroupNorm``'s signature (``bias`` keyword-only, as in torch); ``eps``,
    ``device`` and ``dtype`` are ignored.

    Args:
        num_groups: groups to split the channels into.
        num_channels: channels (divisible by ``num_groups``).
        eps: ignored (does not change the count).
        affine: whether there is a learnable weight (and bias).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).
        bias: whether there is a learnable bias (only with ``affine``).

    Returns:
        The formula, e.g. ``2×64 = 128``.

    Example:
        >>> group_norm(8, 64).expression
        '2×64 = 128'
        >>> group_norm(8, 64, bias=False).params
        64
    """
    g = _int("group_norm", "num_groups", num_groups)
    c = _int("group_norm", "num_channels", num_channels)
    a = _flag("group_norm", "affine", affine)
    b = _flag("group_norm", "bias", bias)
    _divisible("group_norm", "num_channels", c, "num_groups", g)
    if not a:
        return _done("GroupNorm", 0, "no affine")
    if not b:
        return _done("GroupNorm", c, str(c))
    return _done("GroupNorm", 2 * c, f"2×{c}")


def batch_norm(
    num_features: int,
    eps: float = 1e-05,
    momentum: float | None = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
    device: Any = None,
    dtype: Any = None,
    *,
    bias: bool = True,
) -> Formula:
    """Parameters of ``nn.BatchNorm1d/2d/3d``: weight and bias ``(C,)``; running stats as buffers.

    Takes ``nn.BatchNorm2d``'s signature (the same for 1d and 3d; ``bias`` keyword-only, as in
    torch); ``eps``, ``momentum``, ``device`` and ``dtype`` are ignored.

    Args:
        num_features: channels ``C``.
        eps: ignored (does not change the count).
        momentum: ignored (does not change the count).
        affine: whether there is a learnable weight (and bias).
        track_running_stats: whether ``running_mean``, ``running_var`` (``C`` each) and
            ``num_batches_tracked`` (1) are kept as buffers.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).
        bias: whether there is a learnable bias (only with ``affine``).

    Returns:
        The formula, with ``buffers`` = ``2C + 1`` when tracking running statistics.

    Example:
        >>> f = batch_norm(64)
        >>> f.params, f.buffers, f.expression
        (128, 129, '2×64 = 128 (+ buffers 2×64 + 1)')
    """
    c = _int("batch_norm", "num_features", num_features)
    a = _flag("batch_norm", "affine", affine)
    t = _flag("batch_norm", "track_running_stats", track_running_stats)
    b = _flag("batch_norm", "bias", bias)
    buffers, suffix = (2 * c + 1, f" (+ buffers 2×{c} + 1)") if t else (0, "")
    if not a:
        return _done("BatchNorm", 0, "no affine", buffers, suffix)
    if not b:
        return _done("BatchNorm", c, str(c), buffers, suffix)
    return _done("BatchNorm", 2 * c, f"2×{c}", buffers, suffix)


# --------------------------------------------------------------------------- recurrent layers

_RNN_MODES = {"RNN": "RNN_TANH", "RNN_TANH": "RNN_TANH", "RNN_RELU": "RNN_RELU"}
_RNN_MODES |= {"LSTM": "LSTM", "GRU": "GRU"}
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def rnn(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``.

    Takes ``nn.RNNBase``'s signature (``mode`` first); ``batch_first``, ``dropout``,
    ``device`` and ``dtype`` are accepted in their positions and ignored. Per layer and
    direction, with ``G`` gates (RNN 1, GRU 3, LSTM 4), hidden size ``h`` and
    ``r = proj_size or h``: ``weight_ih (G·h, in)``, ``weight_hh (G·h, r)``, two bias vectors
    ``bias_ih`` and ``bias_hh`` of ``G·h`` each, and for an LSTM with projections
    ``weight_hr (proj_size, h)``. Layers after the first take ``r × directions`` inputs.

    Args:
        mode: ``"RNN"`` (= ``"RNN_TANH"``), ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"`` or
            ``"GRU"``.
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards (doubles every count).
        proj_size: LSTM only: project the hidden state to this size (0: no projection).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``layer 0: 4×(32×(10+32) + 2×32) = 5,632``.

    Example:
        >>> rnn("LSTM", 10, 32).expression
        'layer 0: 4×(32×(10+32) + 2×32) = 5,632'
    """
    if not isinstance(mode, str) or mode not in _RNN_MODES:
        raise ParamscopeError(
            f"rnn: mode must be one of {', '.join(map(repr, _RNN_MODES))}, got {mode!r}"
        )
    mode = _RNN_MODES[mode]
    fn = mode.lower()
    i = _int(fn, "input_size", input_size)
    h = _int(fn, "hidden_size", hidden_size)
    layers = _int(fn, "num_layers", num_layers)
    b = _flag(fn, "bias", bias)
    bi = _flag(fn, "bidirectional", bidirectional)
    p = _int(fn, "proj_size", proj_size, minimum=0)
    if p and mode != "LSTM":
        raise ParamscopeError(f"{fn}: proj_size must be 0 (projections are LSTM only), got {p}")
    if p >= h:
        raise ParamscopeError(
            f"{fn}: proj_size must be smaller than hidden_size={h}, got proj_size={p}"
        )
    gates, dirs = _GATES[mode], 2 if bi else 1
    r = p or h

    def layer(inputs: int) -> tuple[int, str]:
        count = gates * (h * (inputs + r) + (2 * h if b else 0)) + p * h
        core = f"{h}×({inputs}+{r})"
        if b:
            core = f"{core} + 2×{h}"
            struct = f"{gates}×({core})" if gates > 1 else core
        else:
            struct = f"{gates}×{core}" if gates > 1 else core
        if p:
            struct += f" + {p}×{h}"
        return count, struct

    first, first_struct = layer(i)
    total, parts = first, [f"layer 0: {first_struct}"]
    if layers > 1:
        rest, rest_struct = layer(r * dirs)
        total += (layers - 1) * rest
        label = "layer 1" if layers == 2 else f"layers 1–{layers - 1}"
        parts.append(
            f"{label}: " + (rest_struct if layers == 2 else _times(layers - 1, rest_struct))
        )
    struct = " + ".join(parts)
    if bi:
        struct = f"2 directions×({struct})"
    name = "RNN" if mode.startswith("RNN") else mode
    return _done(name, dirs * total, struct)


def lstm(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.LSTM`` (its exact signature); see :func:`rnn`.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards.
        proj_size: project the hidden state to this size (0: no projection).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> lstm(10, 32, proj_size=8).expression
        'layer 0: 4×(32×(10+8) + 2×32) + 8×32 = 2,816'
    """
    return rnn(
        "LSTM",
        input_size,
        hidden_size,
        num_layers,
        bias,
        bidirectional=bidirectional,
        proj_size=proj_size,
    )


def gru(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.GRU`` (its exact signature); see :func:`rnn`.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> gru(10, 20, num_layers=2).params
        4440
    """
    return rnn("GRU", input_size, hidden_size, num_layers, bias, bidirectional=bidirectional)


def rnn_tanh(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    nonlinearity: str = "tanh",
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.RNN`` (its exact signature, either nonlinearity); see :func:`rnn`.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        nonlinearity: ``"tanh"`` or ``"relu"`` (the count is the same).
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> rnn_tanh(4, 8, bidirectional=True).expression
        '2 directions×(layer 0: 8×(4+8) + 2×8) = 224'
        >>> rnn_tanh(4, 8, 1, "relu").params
        112
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ParamscopeError(f"rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
    return rnn(mode, input_size, hidden_size, num_layers, bias, bidirectional=bidirectional)


# --------------------------------------------------------------------------- attention


def multihead_attention(
    embed_dim: int,
    num_heads: int,
    dropout: float = 0.0,
    bias: bool = True,
    add_bias_kv: bool = False,
    add_zero_attn: bool = False,
    kdim: int | None = None,
    vdim: int | None = None,
    batch_first: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.MultiheadAttention``.

    Takes ``nn.MultiheadAttention``'s signature; ``dropout``, ``add_zero_attn``,
    ``batch_first``, ``device`` and ``dtype`` are accepted in their positions and ignored.
    With ``kdim == vdim == embed_dim`` (the default) the q, k and v projections are one
    ``in_proj_weight (3E, E)``; otherwise they are ``q_proj_weight (E, E)``,
    ``k_proj_weight (E, kdim)`` and ``v_proj_weight (E, vdim)``. Either way ``in_proj_bias``
    is ``3E`` and ``out_proj`` is an ``E×E`` linear layer; ``add_bias_kv`` adds
    ``bias_k`` and ``bias_v`` of ``(1, 1, E)`` each.

    Args:
        embed_dim: model dimension ``E`` (divisible by ``num_heads``).
        num_heads: parallel attention heads.
        dropout: ignored (does not change the count).
        bias: whether the input and output projections have biases.
        add_bias_kv: whether to learn a bias added to the key and value sequences.
        add_zero_attn: ignored (does not change the count).
        kdim: key features (``None``: ``embed_dim``).
        vdim: value features (``None``: ``embed_dim``).
        batch_first: ignored (does not change the count).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> multihead_attention(64, 8).expression
        'in_proj 3×64×64 + 3×64 + out_proj 64×64 + 64 = 16,640'
    """
    fn = "multihead_attention"
    e = _int(fn, "embed_dim", embed_dim)
    heads = _int(fn, "num_heads", num_heads)
    b = _flag(fn, "bias", bias)
    kv = _flag(fn, "add_bias_kv", add_bias_kv)
    k = e if kdim is None else _int(fn, "kdim", kdim)
    v = e if vdim is None else _int(fn, "vdim", vdim)
    _divisible(fn, "embed_dim", e, "num_heads", heads)
    if k == e and v == e:
        params, struct = 3 * e * e, f"in_proj 3×{e}×{e}"
        if b:
            struct += f" + 3×{e}"
    else:
        params, struct = e * (e + k + v), f"q/k/v_proj {e}×({e}+{k}+{v})"
        if b:
            struct += f" + in_proj_bias 3×{e}"
    params += 3 * e if b else 0
    params += e * e + (e if b else 0)
    struct += f" + out_proj {e}×{e}" + (f" + {e}" if b else "")
    if kv:
        params += 2 * e
        struct += f" + bias_k/bias_v 2×{e}"
    return _done("MultiheadAttention", params, struct)


def _activation_params(fn: str, activation: object) -> int:
    """Elements of the parameters an activation module holds (``nn.PReLU``), else 0."""
    if isinstance(activation, str):
        if activation not in ("relu", "gelu"):
            raise ParamscopeError(
                f"{fn}: activation must be 'relu', 'gelu' or a callable, got {activation!r}"
            )
        return 0
    parameters = getattr(activation, "parameters", None)
    if not callable(parameters):
        return 0
    return sum(int(p.numel()) for p in parameters())


def _transformer_layer(
    fn: str,
    layer: str,
    d_model: int,
    nhead: int,
    dim_feedforward: int,
    activation: object,
    bias: bool,
    cross: bool,
) -> Formula:
    d = _int(fn, "d_model", d_model)
    heads = _int(fn, "nhead", nhead)
    ff = _int(fn, "dim_feedforward", dim_feedforward)
    b = _flag(fn, "bias", bias)
    act = _activation_params(fn, activation)
    _divisible(fn, "d_model", d, "nhead", heads)
    attn = multihead_attention(d, heads, bias=b)
    lin1, lin2, norm = linear(d, ff, b), linear(ff, d, b), layer_norm(d, bias=b)
    norms = 3 if cross else 2
    parts = [f"self_attn [{_lhs(attn)}]"]
    if cross:
        parts.append(f"multihead_attn [{_lhs(attn)}]")
    parts += [
        f"linear1 [{_lhs(lin1)}]",
        f"linear2 [{_lhs(lin2)}]",
        f"{norms} norms [{_times(norms, _lhs(norm))}]",
    ]
    if act:
        parts.append(f"activation [{act}]")
    params = (2 if cross else 1) * attn.params + lin1.params + lin2.params + norms * norm.params
    return _done(layer, params + act, " + ".join(parts))


def transformer_encoder_layer(
    d_model: int,
    nhead: int,
    dim_feedforward: int = 2048,
    dropout: float = 0.1,
    activation: str | Callable[..., Any] = "relu",
    layer_norm_eps: float = 1e-05,
    batch_first: bool = False,
    norm_first: bool = False,
    bias: bool = True,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.TransformerEncoderLayer``.

    Takes ``nn.TransformerEncoderLayer``'s signature (``activation`` defaults to ``"relu"``,
    which torch treats as its default ``F.relu``); ``dropout``, ``layer_norm_eps``,
    ``batch_first``, ``norm_first``, ``device`` and ``dtype`` are accepted in their positions
    and ignored. Self-attention, ``linear1 (d_model → dim_feedforward)``, ``linear2`` back,
    and two LayerNorms of ``d_model``; ``bias`` applies to all of them. An activation given as
    a module with parameters (``nn.PReLU()``) adds them.

    Args:
        d_model: model dimension (divisible by ``nhead``).
        nhead: attention heads.
        dim_feedforward: hidden size of the feed-forward block.
        dropout: ignored (does not change the count).
        activation: ``"relu"``, ``"gelu"`` or a callable; only a module's parameters count.
        layer_norm_eps: ignored (does not change the count).
        batch_first: ignored (does not change the count).
        norm_first: ignored (does not change the count).
        bias: whether the linear layers and LayerNorms have biases.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> transformer_encoder_layer(512, 8).params
        3152384
    """
    return _transformer_layer(
        "transformer_encoder_layer",
        "TransformerEncoderLayer",
        d_model,
        nhead,
        dim_feedforward,
        activation,
        bias,
        cross=False,
    )


def transformer_decoder_layer(
    d_model: int,
    nhead: int,
    dim_feedforward: int = 2048,
    dropout: float = 0.1,
    activation: str | Callable[..., Any] = "relu",
    layer_norm_eps: float = 1e-05,
    batch_first: bool = False,
    norm_first: bool = False,
    bias: bool = True,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.TransformerDecoderLayer``.

    Takes ``nn.TransformerDecoderLayer``'s signature (``activation`` defaults to ``"relu"``,
    which torch treats as its default ``F.relu``); ``dropout``, ``layer_norm_eps``,
    ``batch_first``, ``norm_first``, ``device`` and ``dtype`` are accepted in their positions
    and ignored. Self-attention, cross-attention (``multihead_attn``), ``linear1``,
    ``linear2`` and three LayerNorms of ``d_model``; ``bias`` applies to all of them. An
    activation given as a module with parameters (``nn.PReLU()``) adds them.

    Args:
        d_model: model dimension (divisible by ``nhead``).
        nhead: attention heads.
        dim_feedforward: hidden size of the feed-forward block.
        dropout: ignored (does not change the count).
        activation: ``"relu"``, ``"gelu"`` or a callable; only a module's parameters count.
        layer_norm_eps: ignored (does not change the count).
        batch_first: ignored (does not change the count).
        norm_first: ignored (does not change the count).
        bias: whether the linear layers and LayerNorms have biases.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> transformer_decoder_layer(512, 8).params
        4204032
    """
    return _transformer_layer(
        "transformer_decoder_layer",
        "TransformerDecoderLayer",
        d_model,
        nhead,
        dim_feedforward,
        activation,
        bias,
        cross=True,
    )


# --------------------------------------------------------------------------- modules


def _from_module(module: Any, nn: Any) -> Formula | None:
    """The formula matching ``module``'s type and configuration, or ``None``."""
    has_bias = getattr(module, "bias", None) is not None
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # Hugging Face GPT-2 style
        shape = tuple(module.weight.shape)
        if len(shape) != 2 or shape[1] != module.nf:
            return None
        return linear(shape[0], shape[1], has_bias)
    if isinstance(module, nn.Linear):
        return linear(module.in_features, module.out_features, has_bias)
    if isinstance(module, nn.Bilinear):
        return bilinear(module.in1_features, module.in2_features, module.out_features, has_bias)
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    if isinstance(module, (*convs, nn.ConvTranspose3d)):
        build = conv_transpose if module.transposed else conv
        return build(
            len(module.kernel_size),
            module.in_channels,
            module.out_channels,
            tuple(module.kernel_size),
            groups=module.groups,
            bias=has_bias,
        )
    if isinstance(module, nn.Embedding):
        return embedding(module.num_embeddings, module.embedding_dim)
    if isinstance(module, nn.EmbeddingBag):
        return embedding_bag(module.num_embeddings, module.embedding_dim)
    if isinstance(module, nn.LayerNorm):
        return layer_norm(
            tuple(module.normalized_shape),
            elementwise_affine=module.elementwise_affine,
            bias=has_bias,
        )
    rms = getattr(nn, "RMSNorm", None)
    if rms is not None and isinstance(module, rms):
        return rms_norm(
            tuple(module.normalized_shape), elementwise_affine=module.elementwise_affine
        )
    if isinstance(module, nn.GroupNorm):
        return group_norm(
            module.num_groups, module.num_channels, affine=module.affine, bias=has_bias
        )
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        tracked = getattr(module, "running_mean", None) is not None
        return batch_norm(
            module.num_features, affine=module.affine, track_running_stats=tracked, bias=has_bias
        )
    if isinstance(module, nn.RNNBase):
        return rnn(
            module.mode,
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            bidirectional=module.bidirectional,
            proj_size=getattr(module, "proj_size", 0),
        )
    if isinstance(module, nn.MultiheadAttention):
        return multihead_attention(
            module.embed_dim,
            module.num_heads,
            bias=module.in_proj_bias is not None,
            add_bias_kv=module.bias_k is not None,
            kdim=module.kdim,
            vdim=module.vdim,
        )
    layers = {
        nn.TransformerEncoderLayer: transformer_encoder_layer,
        nn.TransformerDecoderLayer: transformer_decoder_layer,
    }
    for cls, build in layers.items():
        if isinstance(module, cls):
            return build(
                module.linear1.in_features,
                module.self_attn.num_heads,
                module.linear1.out_features,
                activation=module.activation,
                bias=module.linear1.bias is not None,
            )
    return None


def formula_for(module: Any) -> Formula | None:
    """The formula of a torch layer, picked from its type and configuration attributes.

    Knows ``nn.Linear``, ``nn.Bilinear``, ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``,
    ``nn.Embedding``, ``nn.EmbeddingBag``, ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GroupNorm``,
    ``nn.BatchNorm1d/2d/3d``, ``nn.RNN/LSTM/GRU``, ``nn.MultiheadAttention``,
    ``nn.TransformerEncoderLayer/DecoderLayer`` (and their subclasses), and Hugging Face's
    ``Conv1D`` (a linear layer with a transposed ``(nx, nf)`` weight). Only attributes and
    shapes are read, never tensor values, and the module is never run: meta-device modules
    work. As a guard, the formula is dropped when it disagrees with the parameter shapes the
    module really holds (a subclass that adds parameters, a weight replaced by hand).

    Args:
        module: a ``torch.nn.Module`` (anything else gives ``None``).

    Returns:
        The formula, with ``layer`` set to the module's class name; ``None`` for other
        modules, lazy modules whose parameters are not yet initialised, and configurations
        the formulas do not cover (e.g. zero-sized layers).

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     layer = torch.nn.Conv2d(3, 64, 7)
        >>> formula_for(layer).expression
        '(3/1)×64×7×7 + 64 = 9,472'
        >>> formula_for(torch.nn.ReLU()) is None
        True
    """
    from torch import nn
    from torch.nn.modules.lazy import LazyModuleMixin
    from torch.nn.parameter import UninitializedParameter

    if not isinstance(module, nn.Module):
        return None
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        return None
    try:
        formula = _from_module(module, nn)
    except (ParamscopeError, AttributeError, TypeError):
        return None
    if formula is None:
        return None
    held = 0
    for p in module.parameters():
        if isinstance(p, UninitializedParameter):
            return None
        held += p.numel()
    if held != formula.params:
        return None
    return replace(formula, layer=type(module).__name__)
