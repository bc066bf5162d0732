"""Formulas of the normalisation layers: ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GroupNorm``,
``nn.BatchNorm1d/2d/3d``.

BatchNorm's running statistics are buffers: :attr:`Formula.buffers` holds them, apart from the
learnable ``params``.

Example:
    >>> layer_norm(768).expression
    '2×768 = 1,536'
    >>> batch_norm(64).buffers
    129
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._checks import _divisible, _flag, _int, _shape
from ._formula import Formula, _done, _shape_str, _times

__all__ = ["batch_norm", "group_norm", "layer_norm", "rms_norm"]


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
