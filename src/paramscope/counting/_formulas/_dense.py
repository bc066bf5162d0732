"""Formulas of the dense layers: ``nn.Linear``, ``nn.Bilinear``, ``nn.Embedding``,
``nn.EmbeddingBag``.

Each takes the exact constructor signature of the torch layer it mirrors (see
:mod:`paramscope.formulas`).

Example:
    >>> linear(784, 10).expression
    '784×10 + 10 = 7,850'
    >>> embedding(50257, 768).params
    38597376
"""

from __future__ import annotations

from typing import Any

from ._checks import _flag, _int
from ._formula import Formula, _done

__all__ = ["bilinear", "embedding", "embedding_bag", "linear"]


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
