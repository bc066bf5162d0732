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

This package is :mod:`paramscope.formulas`; its modules hold one layer family each, as
equinox's ``nn/`` does: :mod:`._dense` (linear, bilinear, embeddings), :mod:`._conv`,
:mod:`._norm`, :mod:`._recurrent`, :mod:`._attention` (attention and transformer layers), with
:mod:`._formula` (the :class:`Formula` type), :mod:`._checks` (argument checks) and
:mod:`._formula_for` (the torch-reading :func:`formula_for`).

Example:
    >>> linear(784, 10).expression
    '784×10 + 10 = 7,850'
    >>> conv2d(64, 64, 3, 2).params  # stride 2, as nn.Conv2d(64, 64, 3, 2)
    36928
"""

from __future__ import annotations

from ._attention import multihead_attention, transformer_decoder_layer, transformer_encoder_layer
from ._conv import (
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from ._dense import bilinear, embedding, embedding_bag, linear
from ._formula import Formula
from ._formula_for import formula_for
from ._norm import batch_norm, group_norm, layer_norm, rms_norm
from ._recurrent import gru, lstm, rnn, rnn_tanh

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
