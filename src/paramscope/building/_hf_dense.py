"""Analytic counters of the dense decoder families of transformers: Llama, Mistral, Qwen2,
Qwen3, Gemma, Gemma 2, Gemma 3 (text) and Phi-3.

Every shape and registration order below is read from transformers 5.x
``models/<family>/modeling_<family>.py`` and the defaults from ``configuration_<family>.py``.
Gemma's scaled embedding adds a scalar ``embed_scale`` buffer in the build dtype; Gemma 3 keeps
one pair of rotary buffers per layer type; Phi-3 fuses ``qkv_proj`` and ``gate_up_proj`` and
registers ``o_proj`` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._hf_common import Cfg, Entries, Unsupported, rope_length
from ._hf_decoders import DecoderFamily, Dims, attention, gated_mlp

__all__ = ["DENSE_FAMILIES"]


def _norms(e: Entries, prefix: str, hidden: int, names: tuple[str, ...]) -> None:
    for n in names:
        e.norm(f"{prefix}.{n}", hidden)


_TWO = ("input_layernorm", "post_attention_layernorm")
_FOUR = (*_TWO, "pre_feedforward_layernorm", "post_feedforward_layernorm")


def _llama_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    bias = cfg.bool("attention_bias")
    attention(e, f"{prefix}.self_attn", d, qkv_bias=bias, o_bias=bias)
    gated_mlp(e, f"{prefix}.mlp", d.hidden, d.inter, bias=cfg.bool("mlp_bias"))
    _norms(e, prefix, d.hidden, _TWO)


def _mistral_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    attention(e, f"{prefix}.self_attn", d, qkv_bias=False, o_bias=False)
    gated_mlp(e, f"{prefix}.mlp", d.hidden, d.inter)
    _norms(e, prefix, d.hidden, _TWO)


def _qwen2_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    attention(e, f"{prefix}.self_attn", d, qkv_bias=True, o_bias=False)
    gated_mlp(e, f"{prefix}.mlp", d.hidden, d.inter)
    _norms(e, prefix, d.hidden, _TWO)


def _qwen3_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    bias = cfg.bool("attention_bias")
    attention(e, f"{prefix}.self_attn", d, qkv_bias=bias, o_bias=bias, qk_norm=True)
    gated_mlp(e, f"{prefix}.mlp", d.hidden, d.inter)
    _norms(e, prefix, d.hidden, _TWO)


def _gemma_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    bias = cfg.bool("attention_bias")
    attention(e, f"{prefix}.self_attn", d, qkv_bias=bias, o_bias=bias)
    gated_mlp(e, f"{prefix}.mlp", d.hidden, d.inter)
    _norms(e, prefix, d.hidden, _TWO)


def _gemma2_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    bias = cfg.bool("attention_bias")
    attention(e, f"{prefix}.self_attn", d, qkv_bias=bias, o_bias=bias)
    gated_mlp(e, f"{prefix}.mlp", d.hidden, d.inter)
    _norms(e, prefix, d.hidden, _FOUR)


def _gemma3_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    bias = cfg.bool("attention_bias")
    attention(e, f"{prefix}.self_attn", d, qkv_bias=bias, o_bias=bias, qk_norm=True)
    gated_mlp(e, f"{prefix}.mlp", d.hidden, d.inter)
    _norms(e, prefix, d.hidden, _FOUR)


def _phi3_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    q, kv = d.heads * d.head_dim, d.kv * d.head_dim
    e.linear(f"{prefix}.self_attn.o_proj", q, d.hidden, bias=False)  # registered first
    e.linear(f"{prefix}.self_attn.qkv_proj", d.hidden, q + 2 * kv, bias=False)
    e.linear(f"{prefix}.mlp.gate_up_proj", d.hidden, 2 * d.inter, bias=False)
    e.linear(f"{prefix}.mlp.down_proj", d.inter, d.hidden, bias=False)
    _norms(e, prefix, d.hidden, _TWO)


def _gemma3_rotary(e: Entries, cfg: Cfg, d: Dims, prefix: str) -> None:
    """Gemma 3: one RoPE dict per layer type (``full_attention`` / ``sliding_attention``),
    buffers ``{type}_inv_freq`` and ``{type}_original_inv_freq`` in sorted type order."""
    types = cfg.layer_types(d.layers)
    if types is None:
        pattern = cfg.raw.get("sliding_window_pattern", 6)
        if not isinstance(pattern, int) or isinstance(pattern, bool) or pattern < 1:
            raise Unsupported(f"sliding_window_pattern={pattern!r}")
        types = [
            "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(d.layers)
        ]
    rp = cfg.raw.get("rope_parameters")
    scaling = cfg.raw.get("rope_scaling")
    if scaling and not isinstance(scaling, Mapping):
        raise Unsupported("rope_scaling: expected a mapping")
    if rp is None:
        rp = {}
    elif not isinstance(rp, Mapping) or (scaling and "full_attention" not in rp):
        raise Unsupported("rope_parameters: expected a mapping with full_attention")
    for lt in sorted(set(types)):
        params = rp.get(lt)
        if not isinstance(params, (Mapping, type(None))):
            raise Unsupported(f"rope_parameters[{lt!r}]: expected a mapping")
        one: dict[str, Any] = {"rope_type": "default"} if params is None else dict(params)
        if lt == "full_attention" and scaling:
            one.update(scaling)
        n = rope_length(one, head_dim_attr=d.head_dim_attr, hidden_size=d.hidden, num_heads=d.heads)
        e.rotary(prefix, n, names=(f"{lt}_",))


def _phi3_rotary(e: Entries, cfg: Cfg, d: Dims, prefix: str) -> None:
    """Phi-3: legacy ``su`` / ``yarn`` RoPE types are read as ``longrope``; only ``default``
    and ``longrope`` pass the config's validation; ``default`` honours the partial factor."""
    rp = dict(cfg.rope_parameters())
    rope_type = rp.get("rope_type", rp.get("type", "default"))
    if rope_type in ("su", "yarn"):
        # renamed after the config filled in original_max_position_embeddings for longrope
        if "original_max_position_embeddings" not in rp:
            raise Unsupported("phi3 legacy RoPE type without original_max_position_embeddings")
        rope_type = "longrope"
    if rope_type not in ("default", "longrope"):
        raise Unsupported(f"phi3 rope_type {rope_type!r}")
    rp["rope_type"] = rope_type
    if rope_type == "longrope":
        # Phi3Config checks the factor lengths against hidden_size // num_attention_heads
        rotary = int(d.hidden // d.heads * float(rp.get("partial_rotary_factor", 1.0)))
        for key in ("short_factor", "long_factor"):
            factors = rp.get(key)
            if not isinstance(factors, list) or len(factors) != rotary // 2:
                raise Unsupported(f"phi3 longrope {key} of the wrong length")
    n = rope_length(
        rp,
        head_dim_attr=d.head_dim_attr,
        hidden_size=d.hidden,
        num_heads=d.heads,
        default_partial=True,
    )
    e.rotary(prefix, n)


def _family(model_type: str, stem: str, **kw: Any) -> DecoderFamily:
    return DecoderFamily(
        model_type=model_type,
        base=kw.pop("base", f"{stem}Model"),
        causal=kw.pop("causal", f"{stem}ForCausalLM"),
        seqcls=kw.pop("seqcls", f"{stem}ForSequenceClassification"),
        **kw,
    )


_COMMON = {"num_key_value_heads": None, "pad_token_id": None, "tie_word_embeddings": False}

DENSE_FAMILIES: dict[str, DecoderFamily] = {
    f.model_type: f
    for f in (
        _family(
            "llama",
            "Llama",
            defaults={
                **_COMMON,
                "vocab_size": 32000,
                "hidden_size": 4096,
                "intermediate_size": 11008,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "attention_bias": False,
                "mlp_bias": False,
                "head_dim": None,
            },
            head_dim="post_init",
            kv_none_ok=True,
            check_divisible=True,
            layer=_llama_layer,
        ),
        _family(
            "mistral",
            "Mistral",
            defaults={
                **_COMMON,
                "vocab_size": 32000,
                "hidden_size": 4096,
                "intermediate_size": 14336,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "head_dim": None,
            },
            head_dim="post_init",
            kv_none_ok=False,
            check_divisible=False,
            layer=_mistral_layer,
        ),
        _family(
            "qwen2",
            "Qwen2",
            defaults={
                **_COMMON,
                "vocab_size": 151936,
                "hidden_size": 4096,
                "intermediate_size": 22016,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
            },
            head_dim="getattr",
            kv_none_ok=True,
            check_divisible=False,
            layer=_qwen2_layer,
        ),
        _family(
            "qwen3",
            "Qwen3",
            defaults={
                **_COMMON,
                "vocab_size": 151936,
                "hidden_size": 4096,
                "intermediate_size": 22016,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
                "head_dim": 128,
                "attention_bias": False,
            },
            head_dim="field",
            kv_none_ok=True,
            check_divisible=False,
            layer=_qwen3_layer,
        ),
        _family(
            "gemma",
            "Gemma",
            defaults={
                **_COMMON,
                "vocab_size": 256000,
                "hidden_size": 3072,
                "intermediate_size": 24576,
                "num_hidden_layers": 28,
                "num_attention_heads": 16,
                "num_key_value_heads": 16,
                "head_dim": 256,
                "pad_token_id": 0,
                "tie_word_embeddings": True,
                "attention_bias": False,
            },
            head_dim="field",
            kv_none_ok=False,
            check_divisible=False,
            layer=_gemma_layer,
            embed_scale=True,
        ),
        _family(
            "gemma2",
            "Gemma2",
            defaults={
                **_COMMON,
                "vocab_size": 256000,
                "hidden_size": 2304,
                "intermediate_size": 9216,
                "num_hidden_layers": 26,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "pad_token_id": 0,
                "tie_word_embeddings": True,
                "attention_bias": False,
            },
            head_dim="field",
            kv_none_ok=False,
            check_divisible=True,
            layer=_gemma2_layer,
            embed_scale=True,
        ),
        _family(
            "gemma3_text",
            "Gemma3",
            base="Gemma3TextModel",
            seqcls="Gemma3TextForSequenceClassification",
            defaults={
                **_COMMON,
                "vocab_size": 262208,
                "hidden_size": 2304,
                "intermediate_size": 9216,
                "num_hidden_layers": 26,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "pad_token_id": 0,
                "tie_word_embeddings": True,
                "attention_bias": False,
            },
            head_dim="field",
            kv_none_ok=False,
            check_divisible=True,
            layer=_gemma3_layer,
            rotary=_gemma3_rotary,
            embed_scale=True,
        ),
        _family(
            "phi3",
            "Phi3",
            defaults={
                **_COMMON,
                "vocab_size": 32064,
                "hidden_size": 3072,
                "intermediate_size": 8192,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "pad_token_id": 32000,
            },
            head_dim="getattr",
            kv_none_ok=True,
            check_divisible=False,
            layer=_phi3_layer,
            rotary=_phi3_rotary,
        ),
    )
}
