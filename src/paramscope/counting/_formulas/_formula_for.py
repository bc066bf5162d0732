"""The formula of a torch module: :func:`formula_for`, the one part of the formulas that
reads torch objects.

It reads a module's configuration attributes (never tensor values, so meta-device modules
work), picks the formula of its layer family and checks it against the parameters the module
really holds. torch is imported when :func:`formula_for` is called, never at import.

Example:
    >>> import torch
    >>> formula_for(torch.nn.Linear(784, 10)).expression
    '784×10 + 10 = 7,850'
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..._errors import ParamscopeError
from ._attention import multihead_attention, transformer_decoder_layer, transformer_encoder_layer
from ._conv import conv, conv_transpose
from ._dense import bilinear, embedding, embedding_bag, linear
from ._formula import Formula
from ._norm import batch_norm, group_norm, layer_norm, rms_norm
from ._recurrent import rnn

__all__ = ["formula_for"]


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
