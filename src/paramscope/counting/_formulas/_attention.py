"""Formulas of attention and transformer layers: ``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer`` and ``nn.TransformerDecoderLayer``.

A transformer layer's expression shows its parts (attention, the two linear layers, the
norms), each written as the formula of that part.

Example:
    >>> multihead_attention(64, 8).params
    16640
    >>> transformer_encoder_layer(512, 8).params
    3152384
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._errors import ArgumentError
from ._checks import _divisible, _flag, _int
from ._dense import linear
from ._formula import Formula, _done, _lhs, _times
from ._norm import layer_norm

__all__ = ["multihead_attention", "transformer_decoder_layer", "transformer_encoder_layer"]


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
            raise ArgumentError(
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
