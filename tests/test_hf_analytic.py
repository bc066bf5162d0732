"""The analytic config.json counter against transformers as the oracle.

Every check builds the real model with transformers on the meta device
(``cls._from_config(config, dtype=...)``), walks it with ``scan_module`` and compares
everything with :func:`analytic_manifest`: names in order, shapes, dtypes, roles, trainable
flags, non-persistent flags and ties. Hypothesis draws small configs per family; the
published configs in ``tests/data/hf_configs`` are compared too, and their totals with the
published parameter counts.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paramscope import DType
from paramscope._enums import Format, Role, RoleSource
from paramscope.building._hf_analytic import VERIFIED_MODEL_TYPES, analytic_manifest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _helpers import HEAVY, without_torch  # noqa: E402
from paramscope.counting._module import scan_module  # noqa: E402

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([DType.F32, DType.BF16, DType.F16, DType.F64])

# model_type -> (base, causal / masked-LM, sequence classification), written out here so the
# test does not borrow the table of the code under test.
CLASSES: dict[str, tuple[str, str, str]] = {
    "llama": ("LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification"),
    "mistral": ("MistralModel", "MistralForCausalLM", "MistralForSequenceClassification"),
    "qwen2": ("Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification"),
    "qwen3": ("Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification"),
    "gemma": ("GemmaModel", "GemmaForCausalLM", "GemmaForSequenceClassification"),
    "gemma2": ("Gemma2Model", "Gemma2ForCausalLM", "Gemma2ForSequenceClassification"),
    "gemma3_text": (
        "Gemma3TextModel",
        "Gemma3ForCausalLM",
        "Gemma3TextForSequenceClassification",
    ),
    "phi3": ("Phi3Model", "Phi3ForCausalLM", "Phi3ForSequenceClassification"),
    "mixtral": ("MixtralModel", "MixtralForCausalLM", "MixtralForSequenceClassification"),
    "qwen2_moe": ("Qwen2MoeModel", "Qwen2MoeForCausalLM", "Qwen2MoeForSequenceClassification"),
    "qwen3_moe": ("Qwen3MoeModel", "Qwen3MoeForCausalLM", "Qwen3MoeForSequenceClassification"),
    "deepseek_v2": (
        "DeepseekV2Model",
        "DeepseekV2ForCausalLM",
        "DeepseekV2ForSequenceClassification",
    ),
    "deepseek_v3": (
        "DeepseekV3Model",
        "DeepseekV3ForCausalLM",
        "DeepseekV3ForSequenceClassification",
    ),
    "gpt_oss": ("GptOssModel", "GptOssForCausalLM", "GptOssForSequenceClassification"),
    "bert": ("BertModel", "BertForMaskedLM", "BertForSequenceClassification"),
    "roberta": ("RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification"),
}


def hf_manifest(cfg: dict[str, Any], architecture: str | None, dtype: DType) -> Any:
    """What transformers builds from the config, walked by scan_module."""
    cfg = copy.deepcopy(cfg)  # transformers fills nested RoPE dicts in place
    model_type = cfg.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    cls = getattr(transformers, architecture or CLASSES[model_type][0])
    with torch.device("meta"):
        model = cls._from_config(config, dtype=dtype.to_torch())
    return scan_module(model).manifest()


def rows(manifest: Any) -> list[tuple[Any, ...]]:
    return [
        (e.name, e.shape, e.dtype, e.role, e.trainable, e.tie, dict(e.extra))
        for e in manifest.values()
    ]


def check(cfg: dict[str, Any], architecture: str | None, dtype: DType) -> Any:
    before = copy.deepcopy(cfg)
    ours = analytic_manifest(cfg, architecture=architecture, dtype=dtype, source="c.json")
    assert cfg == before, "analytic_manifest modified its input"
    assert ours is not None, f"not modelled: {architecture} {cfg}"
    theirs = hf_manifest(cfg, architecture, dtype)
    got, want = rows(ours), rows(theirs)
    if got != want:  # name the first difference
        for a, b in zip(got, want, strict=False):
            assert a == b
        assert [r[0] for r in got] == [r[0] for r in want]
    assert ours.format is Format.CONFIG and ours.roles is RoleSource.EXACT
    assert ours.source == "c.json" and "analytically" in ours.notes[0]
    return ours


def total(manifest: Any) -> int:
    return sum(e.numel for e in manifest.values() if e.role is Role.PARAM and e.tie is None)


# --- strategies --------------------------------------------------------------------------


@st.composite
def heads_and_width(draw: Any, *, kv_key: bool = True) -> dict[str, Any]:
    """Heads, kv heads and a width divisible by the heads; head widths multiples of 4 so
    that a 0.5 partial rotary factor stays even."""
    heads = draw(st.sampled_from([1, 2, 4]))
    per = draw(st.sampled_from([4, 8, 12]))
    out: dict[str, Any] = {"num_attention_heads": heads, "hidden_size": heads * per}
    if kv_key:
        kv = draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0] + [None]))
        if kv is not None:
            out["num_key_value_heads"] = kv
    return out


@st.composite
def flat_rope(draw: Any) -> dict[str, Any]:
    """A RoPE setting: absent, legacy ``rope_scaling`` or new ``rope_parameters``, with or
    without a partial rotary factor inside or at the top level."""
    kind = draw(st.sampled_from(["none", "linear", "dynamic", "yarn", "llama3"]))
    out: dict[str, Any] = {}
    rp: dict[str, Any] = {
        "none": {},
        "linear": {"rope_type": "linear", "factor": 2.0},
        "dynamic": {"type": "dynamic", "factor": 2.0},
        "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
        "llama3": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    }[kind]
    # no partial factor with dynamic: over a 2-wide rotary it divides by zero in transformers
    prf = "none" if kind == "dynamic" else draw(st.sampled_from(["none", "inside", "top"]))
    if prf == "inside" and rp:
        rp["partial_rotary_factor"] = 0.5
    elif prf == "top":
        out["partial_rotary_factor"] = 0.5
    if rp:
        if draw(st.booleans()):
            out["rope_scaling"] = rp
        else:
            out["rope_parameters"] = {**rp, "rope_theta": 10000.0}
    return out


def common(draw: Any, model_type: str, *, head_dim: bool = True, rope: bool = True) -> dict:
    cfg: dict[str, Any] = {"model_type": model_type}
    cfg.update(draw(heads_and_width()))
    cfg["num_hidden_layers"] = draw(st.integers(0, 3))
    cfg["intermediate_size"] = draw(st.integers(1, 24))
    cfg["vocab_size"] = draw(st.integers(8, 40))
    cfg["max_position_embeddings"] = 64
    if draw(st.booleans()):
        cfg["tie_word_embeddings"] = draw(st.booleans())
    if head_dim and draw(st.booleans()):
        cfg["head_dim"] = draw(st.sampled_from([4, 8, 16]))
    if rope:
        cfg.update(draw(flat_rope()))
    if draw(st.booleans()):
        cfg["pad_token_id"] = draw(st.integers(0, 7))
    if draw(st.booleans()):
        cfg["num_labels"] = draw(st.integers(1, 5))
    return cfg


def pick_class(draw: Any, model_type: str) -> str | None:
    base, head, seq = CLASSES[model_type]
    return draw(st.sampled_from([None, base, head, seq]))


@st.composite
def dense_case(draw: Any, model_type: str) -> tuple[dict, str | None, DType]:
    rope = model_type not in ("phi3", "gemma3_text")
    cfg = common(draw, model_type, rope=rope)
    biased = model_type in ("llama", "qwen3", "gemma", "gemma2", "gemma3_text")
    if biased and draw(st.booleans()):
        cfg["attention_bias"] = draw(st.booleans())
    if model_type == "llama" and draw(st.booleans()):
        cfg["mlp_bias"] = draw(st.booleans())
    if model_type in ("mistral", "gemma", "gemma2", "gemma3_text"):
        # num_key_value_heads: null is not handled by these config classes
        cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    if model_type == "phi3":
        cfg["pad_token_id"] = cfg.get("pad_token_id", 0)  # the default 32000 is past the vocab
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
        cfg.pop("head_dim", None)
        if draw(st.booleans()):
            prf = draw(st.sampled_from([1.0, 0.5]))
            n = int(hd * prf) // 2
            legacy = draw(st.sampled_from(["longrope", "su"]))
            cfg["rope_scaling"] = {
                "type": legacy,
                "short_factor": [1.0] * n,
                "long_factor": [2.0] * n,
            }
            if legacy == "su":  # renamed late: the dict must carry its pretraining length
                cfg["rope_scaling"]["original_max_position_embeddings"] = 32
            cfg["partial_rotary_factor"] = prf
            cfg["original_max_position_embeddings"] = 32
        elif draw(st.booleans()):
            cfg["partial_rotary_factor"] = 0.5
    if model_type == "gemma3_text":
        if draw(st.booleans()):
            cfg["layer_types"] = [
                draw(st.sampled_from(["sliding_attention", "full_attention"]))
                for _ in range(cfg["num_hidden_layers"])
            ]
        else:
            cfg["sliding_window_pattern"] = draw(st.integers(1, 3))
        style = draw(st.sampled_from(["none", "scaling", "nested"]))
        if style == "scaling":
            cfg["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
            cfg["rope_local_base_freq"] = 10000.0
        elif style == "nested":
            cfg["rope_parameters"] = {
                "full_attention": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            }
    if model_type == "qwen2" and draw(st.booleans()):
        cfg["use_sliding_window"] = True
        cfg["max_window_layers"] = draw(st.integers(0, 3))
    return cfg, pick_class(draw, model_type), draw(DTYPES)


@st.composite
def moe_case(draw: Any, model_type: str) -> tuple[dict, str | None, DType]:
    head_dim = model_type not in ("deepseek_v2", "deepseek_v3")
    cfg = common(draw, model_type, head_dim=head_dim)
    layers = cfg["num_hidden_layers"]
    experts = draw(st.integers(1, 4))
    if model_type == "mixtral":
        rp = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
        if rp.get("rope_type", rp.get("type")) in ("dynamic", "yarn"):
            # head_dim: null breaks these RoPE types in MixtralConfig (see the None tests)
            cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        cfg[draw(st.sampled_from(["num_local_experts", "num_experts"]))] = experts
        cfg["num_experts_per_tok"] = 1
    elif model_type in ("qwen2_moe", "qwen3_moe"):
        key = "num_experts"
        if model_type == "qwen3_moe":
            key = draw(st.sampled_from(["num_experts", "num_local_experts"]))
            cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
            if draw(st.booleans()):
                cfg["attention_bias"] = draw(st.booleans())
        else:
            experts = draw(st.integers(0, 4))
            cfg["shared_expert_intermediate_size"] = draw(st.integers(0, 12))
            if draw(st.booleans()):
                cfg["qkv_bias"] = draw(st.booleans())
        cfg[key] = experts
        cfg["num_experts_per_tok"] = 1
        cfg["moe_intermediate_size"] = draw(st.integers(1, 12))
        cfg["decoder_sparse_step"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            cfg["mlp_only_layers"] = draw(st.lists(st.integers(0, 3), max_size=2, unique=True))
    elif model_type.startswith("deepseek"):
        v3 = model_type == "deepseek_v3"
        alias = "num_local_experts" if v3 else "num_experts"
        cfg[draw(st.sampled_from(["n_routed_experts", alias]))] = experts
        cfg["num_experts_per_tok"] = 1
        cfg["n_group"] = 1
        cfg["topk_group"] = 1
        cfg["moe_intermediate_size"] = draw(st.integers(1, 12))
        cfg["n_shared_experts"] = draw(st.integers(0, 2))
        cfg["first_k_dense_replace"] = draw(st.integers(0, layers))
        cfg["moe_layer_freq"] = 1
        cfg["q_lora_rank"] = draw(st.sampled_from([None, 4, 8]))
        cfg["kv_lora_rank"] = draw(st.sampled_from([4, 8]))
        cfg["qk_rope_head_dim"] = draw(st.sampled_from([4, 8]))
        cfg["qk_nope_head_dim"] = draw(st.sampled_from([4, 8]))
        cfg["v_head_dim"] = draw(st.sampled_from([4, 12]))
        if draw(st.booleans()):
            cfg["attention_bias"] = draw(st.booleans())
        if not v3 and draw(st.booleans()):
            cfg["mlp_bias"] = draw(st.booleans())
        if v3:
            cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    elif model_type == "gpt_oss":
        cfg[draw(st.sampled_from(["num_local_experts", "num_experts"]))] = experts
        cfg["num_experts_per_tok"] = 1
        if draw(st.booleans()):
            cfg["attention_bias"] = draw(st.booleans())
    return cfg, pick_class(draw, model_type), draw(DTYPES)


@st.composite
def encoder_case(draw: Any, model_type: str) -> tuple[dict, str | None, DType]:
    cfg: dict[str, Any] = {"model_type": model_type}
    cfg.update(draw(heads_and_width(kv_key=False)))
    cfg["num_hidden_layers"] = draw(st.integers(0, 2))
    cfg["intermediate_size"] = draw(st.integers(1, 24))
    cfg["vocab_size"] = draw(st.integers(8, 40))
    cfg["max_position_embeddings"] = draw(st.integers(4, 20))
    cfg["type_vocab_size"] = draw(st.integers(1, 3))
    cfg["pad_token_id"] = draw(st.sampled_from([None, 0, 1, 3]))
    if draw(st.booleans()):
        cfg["tie_word_embeddings"] = draw(st.booleans())
    if draw(st.booleans()):
        cfg["is_decoder"] = True
        cfg["add_cross_attention"] = draw(st.booleans())
    labels = draw(st.sampled_from(["none", "num", "map"]))
    if labels == "num":
        cfg["num_labels"] = draw(st.integers(1, 5))
    elif labels == "map":
        cfg["id2label"] = {str(i): f"L{i}" for i in range(draw(st.integers(1, 4)))}
    return cfg, pick_class(draw, model_type), draw(DTYPES)


DENSE = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"]
MOE = ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss"]
ENCODERS = ["bert", "roberta"]


def test_every_verified_type_is_tested() -> None:
    assert set(DENSE + MOE + ENCODERS) == set(VERIFIED_MODEL_TYPES)


@pytest.mark.parametrize("model_type", DENSE)
def test_dense_decoders_match_transformers(model_type: str) -> None:
    @SETTINGS
    @given(dense_case(model_type))
    def run(case: tuple[dict, str | None, DType]) -> None:
        check(*case)

    run()


@pytest.mark.parametrize("model_type", MOE)
def test_moe_decoders_match_transformers(model_type: str) -> None:
    @SETTINGS
    @given(moe_case(model_type))
    def run(case: tuple[dict, str | None, DType]) -> None:
        check(*case)

    run()


@pytest.mark.parametrize("model_type", ENCODERS)
def test_encoders_match_transformers(model_type: str) -> None:
    @SETTINGS
    @given(encoder_case(model_type))
    def run(case: tuple[dict, str | None, DType]) -> None:
        check(*case)

    run()


# --- published configs ---------------------------------------------------------------------

# Parameter counts published for these checkpoints (model cards, papers, safetensors totals).
PUBLISHED: dict[tuple[str, str | None], int] = {
    ("Llama-2-7b-hf", "LlamaForCausalLM"): 6_738_415_616,
    ("Meta-Llama-3-8B", "LlamaForCausalLM"): 8_030_261_248,
    ("Mistral-7B-v0.1", "MistralForCausalLM"): 7_241_732_096,
    ("Mixtral-8x7B-v0.1", "MixtralForCausalLM"): 46_702_792_704,
    ("gemma-7b", "GemmaForCausalLM"): 8_537_680_896,
    ("gemma-2-9b", "Gemma2ForCausalLM"): 9_241_705_984,
    ("Phi-3-mini-4k-instruct", "Phi3ForCausalLM"): 3_821_079_552,
    ("Qwen2-7B", "Qwen2ForCausalLM"): 7_615_616_512,
    ("bert-base-uncased", None): 109_482_240,
    ("bert-base-uncased", "BertForMaskedLM"): 109_514_298,
    ("roberta-base", None): 124_645_632,
    ("roberta-base", "RobertaForMaskedLM"): 124_697_433,
}

TORCH_DTYPES = {"float16": DType.F16, "bfloat16": DType.BF16, "float32": DType.F32}


def published(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{name}.json").read_text("utf-8"))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.json")))
def test_published_configs_match_transformers(name: str) -> None:
    cfg = published(name)
    dtype = TORCH_DTYPES[cfg.get("torch_dtype", "bfloat16")]
    for architecture in (cfg["architectures"][0], None):
        check(cfg, architecture, dtype)


@pytest.mark.parametrize(("name", "architecture"), sorted(PUBLISHED, key=str))
def test_published_totals(name: str, architecture: str | None) -> None:
    m = analytic_manifest(published(name), architecture=architecture, dtype=DType.BF16)
    assert m is not None
    assert total(m) == PUBLISHED[(name, architecture)]


def test_published_dtypes_and_ties() -> None:
    # DeepSeek-V3: routers and the score correction bias stay float32 in a bf16 build.
    m = analytic_manifest(published("DeepSeek-V3"), architecture=None, dtype=DType.BF16)
    assert m is not None
    assert m["layers.3.mlp.gate.weight"].dtype is DType.F32
    bias = m["layers.3.mlp.gate.e_score_correction_bias"]
    assert (bias.dtype, bias.role, bias.shape) == (DType.F32, Role.BUFFER, (256,))
    assert "layers.2.mlp.gate.weight" not in m  # first_k_dense_replace = 3
    assert m["rotary_emb.inv_freq"].shape == (32,)  # qk_rope_head_dim 64, yarn
    # gemma-7b ties lm_head by default; bert-base ties the MLM decoder weight and bias.
    g = analytic_manifest(published("gemma-7b"), architecture="GemmaForCausalLM", dtype=DType.F32)
    assert g is not None and g["lm_head.weight"].tie == "model.embed_tokens.weight"
    b = analytic_manifest(
        published("bert-base-uncased"), architecture="BertForMaskedLM", dtype=DType.F32
    )
    assert b is not None
    assert b.ties() == [
        ["bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"],
        ["cls.predictions.bias", "cls.predictions.decoder.bias"],
    ]


# --- what is not modelled ------------------------------------------------------------------

LLAMA = {
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "vocab_size": 10,
}


@pytest.mark.parametrize(
    ("cfg", "architecture", "dtype"),
    [
        ({**LLAMA, "model_type": "gpt2"}, "GPT2LMHeadModel", DType.F32),
        ({**LLAMA, "model_type": "gemma3"}, "Gemma3ForConditionalGeneration", DType.F32),
        ({k: v for k, v in LLAMA.items() if k != "model_type"}, None, DType.F32),
        (LLAMA, "LlamaForTokenClassification", DType.F32),
        (LLAMA, "LlamaForQuestionAnswering", DType.F32),
        (LLAMA, "MistralForCausalLM", DType.F32),  # a class of another family
        (LLAMA, "LlamaForCausalLM", DType.F8_E4M3),
        (LLAMA, "LlamaForCausalLM", DType.I64),
        ({**LLAMA, "hidden_size": 15}, None, DType.F32),  # refused by LlamaConfig
        ({**LLAMA, "rope_parameters": {"rope_type": "proportional"}}, None, DType.F32),
        (
            {
                **LLAMA,
                "head_dim": 6,
                "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "partial_rotary_factor": 0.5},
            },
            None,
            DType.F32,
        ),  # odd rotary width
        ({**LLAMA, "rope_scaling": {"rope_type": "linear"}}, None, DType.F32),  # no factor
        ({**LLAMA, "num_hidden_layers": 2, "layer_types": ["full_attention"]}, None, DType.F32),
        ({**LLAMA, "per_layer_config": [{}]}, None, DType.F32),
        ({**LLAMA, "num_hidden_layers": 2.0}, None, DType.F32),
        ({**LLAMA, "vocab_size": float("inf")}, None, DType.F32),
        ({**LLAMA, "pad_token_id": 10}, None, DType.F32),  # outside the vocabulary
        ({**LLAMA, "model_type": "phi3"}, None, DType.F32),  # default pad 32000 > vocab
        ({**LLAMA, "model_type": "qwen2", "head_dim": None}, None, DType.F32),
        ({**LLAMA, "model_type": "mistral", "num_key_value_heads": None}, None, DType.F32),
        (
            {
                **LLAMA,
                "model_type": "phi3",
                "pad_token_id": 0,
                "rope_scaling": {"rope_type": "linear", "factor": 2.0},
            },
            None,
            DType.F32,
        ),
        ({**LLAMA, "model_type": "deepseek_v3", "first_k_dense_replace": None}, None, DType.F32),
        ({**LLAMA, "model_type": "qwen2_moe", "decoder_sparse_step": 0}, None, DType.F32),
        ({**LLAMA, "model_type": "bert", "hidden_size": 15}, None, DType.F32),
        ({**LLAMA, "model_type": "bert", "add_cross_attention": True}, None, DType.F32),
        ({**LLAMA, "model_type": "bert"}, "BertForPreTraining", DType.F32),
    ],
)
def test_not_modelled_returns_none(cfg: dict, architecture: str | None, dtype: DType) -> None:
    assert analytic_manifest(cfg, architecture=architecture, dtype=dtype) is None


def test_none_cases_do_not_hide_buildable_models() -> None:
    # Where a config is refused for its values, transformers refuses or breaks on it too.
    for cfg, arch in [
        ({**LLAMA, "hidden_size": 15}, "LlamaModel"),
        ({**LLAMA, "pad_token_id": 10}, "LlamaModel"),
        ({**LLAMA, "model_type": "phi3"}, "Phi3Model"),
        ({**LLAMA, "model_type": "qwen2", "head_dim": None}, "Qwen2Model"),
        ({**LLAMA, "model_type": "deepseek_v3", "first_k_dense_replace": None}, "DeepseekV3Model"),
        (
            {**LLAMA, "model_type": "mixtral", "rope_scaling": {"type": "yarn", "factor": 2.0}},
            "MixtralModel",
        ),
        (
            {**LLAMA, "rope_scaling": {"type": "dynamic", "factor": 2.0}, "head_dim": 2},
            "LlamaModel",
        ),
    ]:
        assert analytic_manifest(cfg, architecture=arch, dtype=DType.F32) is None
        with pytest.raises(Exception):  # noqa: B017 - any failure will do
            hf_manifest(cfg, arch, DType.F32)


def test_moe_layer_freq_is_noted() -> None:
    cfg = {**published("DeepSeek-V2-Lite"), "moe_layer_freq": 2}
    m = analytic_manifest(cfg, architecture=None, dtype=DType.BF16)
    assert m is not None and any("moe_layer_freq=2" in n for n in m.notes)


# --- no heavy imports, docstrings run -------------------------------------------------------


def test_does_not_import_torch_or_transformers() -> None:
    code = (
        "import json\n"
        "from paramscope.building._hf_analytic import analytic_manifest\n"
        "from paramscope import DType\n"
        "cfg = json.load(open(sys.argv[1]))\n"
        "m = analytic_manifest(cfg, architecture='LlamaForCausalLM', dtype=DType.BF16)\n"
        "result = [[e.name, list(e.shape), e.dtype.value, e.tie] for e in m.values()]\n"
    )
    got = without_torch(code, CONFIGS / "Meta-Llama-3-8B.json", absent=HEAVY)
    want = hf_manifest(published("Meta-Llama-3-8B"), "LlamaForCausalLM", DType.BF16)
    assert got == [[e.name, list(e.shape), e.dtype.value, e.tie] for e in want.values()]

