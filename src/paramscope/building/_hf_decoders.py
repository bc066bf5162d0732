"""The decoder skeleton the analytic counters of every decoder family share (dense ones in
:mod:`._hf_dense`, mixtures of experts in :mod:`._hf_moe`).

Every shape, dtype and registration order below is read from transformers 5.x
``models/<family>/modeling_<family>.py`` and the defaults from ``configuration_<family>.py``.
A decoder model registers ``embed_tokens``, ``layers.{i}``, ``norm`` and ``rotary_emb``
(whose ``inv_freq`` / ``original_inv_freq`` are non-persistent float32 buffers whatever the
build dtype); ``*ForCausalLM`` wraps it as ``model.`` and adds ``lm_head`` (an alias of
``model.embed_tokens.weight`` when ``tie_word_embeddings``); ``*ForSequenceClassification``
adds ``score``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._dtypes import DType
from ._hf_common import MISSING, Cfg, Entries, Unsupported, rope_length

__all__ = [
    "DecoderFamily",
    "Dims",
    "attention",
    "build_decoder",
    "flat_rotary",
    "gated_mlp",
]


@dataclass(frozen=True)
class Dims:
    """The widths every decoder layer reads.

    Attributes:
        vocab: ``vocab_size``.
        hidden: ``hidden_size``.
        inter: ``intermediate_size``.
        layers: ``num_hidden_layers``.
        heads: ``num_attention_heads``.
        kv: ``num_key_value_heads`` (resolved).
        head_dim: the attention head width.
        head_dim_attr: the config's ``head_dim`` attribute as the RoPE code sees it.
    """

    vocab: int
    hidden: int
    inter: int
    layers: int
    heads: int
    kv: int
    head_dim: int
    head_dim_attr: Any


LayerFn = Callable[[Entries, Cfg, Dims, str, int], None]
RotaryFn = Callable[[Entries, Cfg, Dims, str], None]


@dataclass(frozen=True)
class DecoderFamily:
    """How one ``model_type`` builds: class names, config defaults and the layer writer.

    Attributes:
        model_type: the config's ``model_type``.
        base: the base model class name.
        causal: the causal-LM class name.
        seqcls: the sequence-classification class name.
        defaults: config class defaults that matter for shapes.
        head_dim: how ``head_dim`` resolves: ``"post_init"`` (``None`` → derived),
            ``"field"`` (a class default, ``None`` breaks the model), ``"getattr"`` (no field:
            derived unless the JSON gives it), ``"or"`` (``None`` kept, the code falls back),
            ``"deepseek"`` (``qk_rope_head_dim``; not used by the attention widths).
        kv_none_ok: whether ``num_key_value_heads: null`` means ``num_attention_heads``.
        check_divisible: whether the config rejects ``hidden_size % num_attention_heads``.
        layer: writes one decoder layer.
        rotary: writes the rotary buffers (default: one flat RoPE dict).
        embed_scale: Gemma's scaled embedding (an ``embed_scale`` scalar buffer).
        default_partial: whether the family's ``default`` RoPE honours
            ``partial_rotary_factor``.
    """

    model_type: str
    base: str
    causal: str
    seqcls: str
    defaults: Mapping[str, Any]
    head_dim: str
    kv_none_ok: bool
    check_divisible: bool
    layer: LayerFn
    rotary: RotaryFn | None = None
    embed_scale: bool = False
    default_partial: bool = False


def _dims(cfg: Cfg, fam: DecoderFamily) -> Dims:
    hidden = cfg.int("hidden_size", minimum=1)
    heads = cfg.int("num_attention_heads", minimum=1)
    if fam.check_divisible and hidden % heads:
        raise Unsupported("hidden_size is not a multiple of num_attention_heads")
    kv_raw = cfg.get("num_key_value_heads")
    none_ok = kv_raw is None and fam.kv_none_ok
    kv = heads if none_ok else cfg.int("num_key_value_heads", minimum=1)
    derived = hidden // heads
    raw = cfg.get("head_dim")
    if fam.head_dim == "post_init":
        head_dim = derived if raw is None or raw is MISSING else cfg.int("head_dim", minimum=1)
        attr: Any = head_dim
    elif fam.head_dim in ("field", "getattr"):
        if raw is MISSING:
            head_dim, attr = derived, MISSING
        else:
            head_dim = attr = cfg.int("head_dim", minimum=1)
    elif fam.head_dim == "or":
        attr = cfg.opt_int("head_dim", minimum=1)
        head_dim = attr or derived
    else:  # "deepseek": head_dim is qk_rope_head_dim (the rotary width), attention ignores it
        head_dim = attr = cfg.int("qk_rope_head_dim")
    return Dims(
        vocab=cfg.int("vocab_size", minimum=1),
        hidden=hidden,
        inter=cfg.int("intermediate_size"),
        layers=cfg.int("num_hidden_layers"),
        heads=heads,
        kv=kv,
        head_dim=head_dim,
        head_dim_attr=attr,
    )


def flat_rotary(fam: DecoderFamily) -> RotaryFn:
    """The usual rotary writer: one RoPE dict, buffers ``inv_freq`` and ``original_inv_freq``.

    Args:
        fam: the family (for ``default_partial``).

    Returns:
        A rotary writer.
    """

    def rotary(e: Entries, cfg: Cfg, d: Dims, prefix: str) -> None:
        n = rope_length(
            cfg.rope_parameters(),
            head_dim_attr=d.head_dim_attr,
            hidden_size=d.hidden,
            num_heads=d.heads,
            default_partial=fam.default_partial,
        )
        e.rotary(prefix, n)

    return rotary


def build_decoder(fam: DecoderFamily, cfg: Cfg, kind: str, dtype: DType) -> Entries:
    """Write the entries of a decoder ``base`` / ``causal`` / ``seqcls`` model.

    Args:
        fam: the family.
        cfg: the config.
        kind: ``"base"``, ``"causal"`` or ``"seqcls"``.
        dtype: the build dtype.

    Returns:
        The entries in ``scan_module`` order.

    Raises:
        Unsupported: for configs not modelled.

    Example:
        >>> from paramscope.building._hf_dense import DENSE_FAMILIES
        >>> fam = DENSE_FAMILIES["llama"]
        >>> cfg = Cfg({"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
        ...            "intermediate_size": 4, "vocab_size": 10}, fam.defaults)
        >>> e = build_decoder(fam, cfg, "causal", DType.BF16)
        >>> for x in e.items[-3:]:
        ...     print(x.name, x.shape, x.dtype.value)
        model.rotary_emb.inv_freq (2,) F32
        model.rotary_emb.original_inv_freq (2,) F32
        lm_head.weight (10, 8) BF16
    """
    d = _dims(cfg, fam)
    if cfg.raw.get("per_layer_config") is not None:
        raise Unsupported("per_layer_config (heterogeneous layers)")
    cfg.layer_types(d.layers)  # validated like the config class does
    e = Entries(dtype)
    p = "" if kind == "base" else "model."
    e.embedding(f"{p}embed_tokens", d.vocab, d.hidden, cfg.get("pad_token_id"))
    if fam.embed_scale:
        e.buffer(f"{p}embed_tokens.embed_scale", (), dtype, persistent=False)
    for i in range(d.layers):
        fam.layer(e, cfg, d, f"{p}layers.{i}", i)
    e.norm(f"{p}norm", d.hidden)
    (fam.rotary or flat_rotary(fam))(e, cfg, d, f"{p}rotary_emb")
    if kind == "causal":
        if cfg.bool("tie_word_embeddings"):
            e.tie("lm_head.weight", "model.embed_tokens.weight")
        else:
            e.param("lm_head.weight", (d.vocab, d.hidden))
    elif kind == "seqcls":
        e.param("score.weight", (cfg.num_labels(), d.hidden))
    return e


def gated_mlp(e: Entries, prefix: str, hidden: int, inter: int, *, bias: bool = False) -> None:
    """A SwiGLU MLP: ``gate_proj``, ``up_proj``, ``down_proj``.

    Args:
        e: the entries.
        prefix: the module path.
        hidden: model width.
        inter: hidden width.
        bias: whether the three projections have biases.

    Example:
        >>> e = Entries(DType.F32)
        >>> gated_mlp(e, "mlp", 4, 6)
        >>> [x.shape for x in e.items]
        [(6, 4), (6, 4), (4, 6)]
    """
    e.linear(f"{prefix}.gate_proj", hidden, inter, bias=bias)
    e.linear(f"{prefix}.up_proj", hidden, inter, bias=bias)
    e.linear(f"{prefix}.down_proj", inter, hidden, bias=bias)


def attention(
    e: Entries,
    prefix: str,
    d: Dims,
    *,
    qkv_bias: bool,
    o_bias: bool,
    qk_norm: bool = False,
) -> None:
    """Grouped-query attention: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` and, for
    Qwen3 / Gemma 3, ``q_norm`` / ``k_norm`` over one head.

    Args:
        e: the entries.
        prefix: the module path.
        d: the widths.
        qkv_bias: biases on q/k/v.
        o_bias: bias on o.
        qk_norm: per-head RMSNorms after q and k.
    """
    q, kv = d.heads * d.head_dim, d.kv * d.head_dim
    e.linear(f"{prefix}.q_proj", d.hidden, q, bias=qkv_bias)
    e.linear(f"{prefix}.k_proj", d.hidden, kv, bias=qkv_bias)
    e.linear(f"{prefix}.v_proj", d.hidden, kv, bias=qkv_bias)
    e.linear(f"{prefix}.o_proj", q, d.hidden, bias=o_bias)
    if qk_norm:
        e.norm(f"{prefix}.q_norm", d.head_dim)
        e.norm(f"{prefix}.k_norm", d.head_dim)
