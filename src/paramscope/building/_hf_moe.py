"""Analytic counters of the mixture-of-experts decoder families of transformers: Mixtral,
Qwen2-MoE, Qwen3-MoE, DeepSeek-V2, DeepSeek-V3 and gpt-oss.

Experts are fused in transformers 5.x: one ``experts.gate_up_proj`` of shape
``(experts, 2 * moe_intermediate, hidden)`` and one ``experts.down_proj`` of shape
``(experts, hidden, moe_intermediate)`` per MoE layer (gpt-oss stores them transposed and
with biases). The DeepSeek routers are created in float32 whatever the build dtype, and
DeepSeek-V3's ``e_score_correction_bias`` is a persistent float32 buffer.
"""

from __future__ import annotations

from .._dtypes import DType
from ._hf_common import Cfg, Entries
from ._hf_decoders import DecoderFamily, Dims, LayerFn, attention, gated_mlp

__all__ = ["MOE_FAMILIES"]

_TWO = ("input_layernorm", "post_attention_layernorm")


def _norms(e: Entries, prefix: str, hidden: int) -> None:
    for n in _TWO:
        e.norm(f"{prefix}.{n}", hidden)


def _fused_experts(e: Entries, prefix: str, experts: int, hidden: int, inter: int) -> None:
    e.param(f"{prefix}.gate_up_proj", (experts, 2 * inter, hidden))
    e.param(f"{prefix}.down_proj", (experts, hidden, inter))


# --- Mixtral -------------------------------------------------------------------------------


def _mixtral_experts(cfg: Cfg) -> int:
    # field num_local_experts; attribute_map num_experts -> num_local_experts (a JSON alias wins)
    return cfg.int("num_local_experts", "num_experts")


def _mixtral_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    attention(e, f"{prefix}.self_attn", d, qkv_bias=False, o_bias=False)
    n = _mixtral_experts(cfg)
    e.param(f"{prefix}.mlp.gate.weight", (n, d.hidden))
    _fused_experts(e, f"{prefix}.mlp.experts", n, d.hidden, d.inter)
    _norms(e, prefix, d.hidden)


# --- Qwen2-MoE / Qwen3-MoE ------------------------------------------------------------------


def _is_sparse(cfg: Cfg, i: int, experts: int) -> bool:
    only = cfg.int_list("mlp_only_layers") or []
    step = cfg.int("decoder_sparse_step", minimum=1)
    return i not in only and experts > 0 and (i + 1) % step == 0


def _qwen2_moe_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    bias = cfg.bool("qkv_bias")
    attention(e, f"{prefix}.self_attn", d, qkv_bias=bias, o_bias=False)
    n = cfg.int("num_experts")
    mlp = f"{prefix}.mlp"
    if _is_sparse(cfg, i, n):
        e.param(f"{mlp}.gate.weight", (n, d.hidden))
        _fused_experts(e, f"{mlp}.experts", n, d.hidden, cfg.int("moe_intermediate_size"))
        shared = cfg.int("shared_expert_intermediate_size")
        gated_mlp(e, f"{mlp}.shared_expert", d.hidden, shared)
        e.linear(f"{mlp}.shared_expert_gate", d.hidden, 1, bias=False)
    else:
        gated_mlp(e, mlp, d.hidden, d.inter)
    _norms(e, prefix, d.hidden)


def _qwen3_moe_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    bias = cfg.bool("attention_bias")
    attention(e, f"{prefix}.self_attn", d, qkv_bias=bias, o_bias=bias, qk_norm=True)
    # field num_experts; attribute_map num_experts -> num_local_experts (a JSON alias wins)
    n = cfg.int("num_experts", "num_local_experts")
    mlp = f"{prefix}.mlp"
    if _is_sparse(cfg, i, n):
        _fused_experts(e, f"{mlp}.experts", n, d.hidden, cfg.int("moe_intermediate_size"))
        e.param(f"{mlp}.gate.weight", (n, d.hidden))
    else:
        gated_mlp(e, mlp, d.hidden, d.inter)
    _norms(e, prefix, d.hidden)


# --- DeepSeek-V2 / V3 (multi-head latent attention) ----------------------------------------


def _mla(e: Entries, cfg: Cfg, d: Dims, prefix: str) -> None:
    q_lora = cfg.opt_int("q_lora_rank", minimum=1)
    kv_lora = cfg.int("kv_lora_rank", minimum=1)
    rope = cfg.int("qk_rope_head_dim")
    nope = cfg.int("qk_nope_head_dim")
    v = cfg.int("v_head_dim")
    qk = nope + rope
    bias = cfg.bool("attention_bias")
    if q_lora is None:
        e.linear(f"{prefix}.q_proj", d.hidden, d.heads * qk, bias=False)
    else:
        e.linear(f"{prefix}.q_a_proj", d.hidden, q_lora, bias=bias)
        e.norm(f"{prefix}.q_a_layernorm", q_lora)
        e.linear(f"{prefix}.q_b_proj", q_lora, d.heads * qk, bias=False)
    e.linear(f"{prefix}.kv_a_proj_with_mqa", d.hidden, kv_lora + rope, bias=bias)
    e.norm(f"{prefix}.kv_a_layernorm", kv_lora)
    e.linear(f"{prefix}.kv_b_proj", kv_lora, d.heads * (nope + v), bias=False)
    e.linear(f"{prefix}.o_proj", d.heads * v, d.hidden, bias=bias)


def _deepseek_layer(v3: bool) -> LayerFn:
    def layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
        _mla(e, cfg, d, f"{prefix}.self_attn")
        mlp = f"{prefix}.mlp"
        mlp_bias = False if v3 else cfg.bool("mlp_bias")
        if i >= cfg.int("first_k_dense_replace"):
            # v2: attribute_map num_experts -> n_routed_experts; v3: num_local_experts -> …
            n = cfg.int("n_routed_experts", "num_local_experts" if v3 else "num_experts")
            moe = cfg.int("moe_intermediate_size")
            _fused_experts(e, f"{mlp}.experts", n, d.hidden, moe)
            e.param(f"{mlp}.gate.weight", (n, d.hidden), DType.F32)
            if v3:
                e.buffer(f"{mlp}.gate.e_score_correction_bias", (n,), DType.F32)
            shared = moe * cfg.int("n_shared_experts")
            gated_mlp(e, f"{mlp}.shared_experts", d.hidden, shared, bias=mlp_bias)
        else:
            gated_mlp(e, mlp, d.hidden, d.inter, bias=mlp_bias)
        _norms(e, prefix, d.hidden)

    return layer


# --- gpt-oss --------------------------------------------------------------------------------


def _gpt_oss_layer(e: Entries, cfg: Cfg, d: Dims, prefix: str, i: int) -> None:
    attn = f"{prefix}.self_attn"
    e.param(f"{attn}.sinks", (d.heads,))  # the module's own parameter comes before its children
    bias = cfg.bool("attention_bias")
    attention(e, attn, d, qkv_bias=bias, o_bias=bias)
    n = cfg.int("num_local_experts", "num_experts")
    e.param(f"{prefix}.mlp.router.weight", (n, d.hidden))
    e.param(f"{prefix}.mlp.router.bias", (n,))
    ex = f"{prefix}.mlp.experts"
    e.param(f"{ex}.gate_up_proj", (n, d.hidden, 2 * d.inter))
    e.param(f"{ex}.gate_up_proj_bias", (n, 2 * d.inter))
    e.param(f"{ex}.down_proj", (n, d.inter, d.hidden))
    e.param(f"{ex}.down_proj_bias", (n, d.hidden))
    _norms(e, prefix, d.hidden)


_COMMON = {"num_key_value_heads": None, "pad_token_id": None, "tie_word_embeddings": False}

_MLA_DEFAULTS = {
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "attention_bias": False,
}

MOE_FAMILIES: dict[str, DecoderFamily] = {
    "mixtral": DecoderFamily(
        model_type="mixtral",
        base="MixtralModel",
        causal="MixtralForCausalLM",
        seqcls="MixtralForSequenceClassification",
        defaults={
            **_COMMON,
            "vocab_size": 32000,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": None,
            "num_local_experts": 8,
        },
        head_dim="or",
        kv_none_ok=True,
        check_divisible=False,
        layer=_mixtral_layer,
    ),
    "qwen2_moe": DecoderFamily(
        model_type="qwen2_moe",
        base="Qwen2MoeModel",
        causal="Qwen2MoeForCausalLM",
        seqcls="Qwen2MoeForSequenceClassification",
        defaults={
            **_COMMON,
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "decoder_sparse_step": 1,
            "moe_intermediate_size": 1408,
            "shared_expert_intermediate_size": 5632,
            "num_experts": 60,
            "mlp_only_layers": None,
            "qkv_bias": True,
        },
        head_dim="getattr",
        kv_none_ok=True,
        check_divisible=False,
        layer=_qwen2_moe_layer,
    ),
    "qwen3_moe": DecoderFamily(
        model_type="qwen3_moe",
        base="Qwen3MoeModel",
        causal="Qwen3MoeForCausalLM",
        seqcls="Qwen3MoeForSequenceClassification",
        defaults={
            **_COMMON,
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 24,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "attention_bias": False,
            "decoder_sparse_step": 1,
            "moe_intermediate_size": 768,
            "num_experts": 128,
            "mlp_only_layers": None,
        },
        head_dim="getattr",
        kv_none_ok=False,
        check_divisible=False,
        layer=_qwen3_moe_layer,
    ),
    "deepseek_v2": DecoderFamily(
        model_type="deepseek_v2",
        base="DeepseekV2Model",
        causal="DeepseekV2ForCausalLM",
        seqcls="DeepseekV2ForSequenceClassification",
        defaults={
            **_COMMON,
            **_MLA_DEFAULTS,
            "vocab_size": 102400,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "mlp_bias": False,
            "first_k_dense_replace": 0,
            "n_routed_experts": 64,
            "n_shared_experts": 2,
            "moe_intermediate_size": 1407,
        },
        head_dim="deepseek",
        kv_none_ok=True,
        check_divisible=True,
        layer=_deepseek_layer(v3=False),
    ),
    "deepseek_v3": DecoderFamily(
        model_type="deepseek_v3",
        base="DeepseekV3Model",
        causal="DeepseekV3ForCausalLM",
        seqcls="DeepseekV3ForSequenceClassification",
        defaults={
            **_COMMON,
            **_MLA_DEFAULTS,
            "vocab_size": 129280,
            "hidden_size": 7168,
            "intermediate_size": 18432,
            "num_hidden_layers": 61,
            "num_attention_heads": 128,
            "num_key_value_heads": 128,
            "first_k_dense_replace": 3,
            "n_routed_experts": 256,
            "n_shared_experts": 1,
            "moe_intermediate_size": 2048,
        },
        head_dim="deepseek",
        kv_none_ok=True,
        check_divisible=False,
        layer=_deepseek_layer(v3=True),
    ),
    "gpt_oss": DecoderFamily(
        model_type="gpt_oss",
        base="GptOssModel",
        causal="GptOssForCausalLM",
        seqcls="GptOssForSequenceClassification",
        defaults={
            **_COMMON,
            "vocab_size": 201088,
            "hidden_size": 2880,
            "intermediate_size": 2880,
            "num_hidden_layers": 36,
            "num_attention_heads": 64,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "num_local_experts": 128,
            "attention_bias": True,
            "rope_parameters": {
                "rope_type": "yarn",
                "factor": 32.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": False,
                "original_max_position_embeddings": 4096,
            },
        },
        head_dim="post_init",
        kv_none_ok=True,
        check_divisible=False,
        layer=_gpt_oss_layer,
    ),
}
