"""Mixture of experts: total and active parameters per token, from configs, headers and modules.

The oracle is the model transformers builds (tiny configs, meta device): its active count is
computed from the real module tree, not from paramscope's rules: every ``*Experts`` module's
parameters times ``top_k / num_experts``, with ``top_k`` read from the router module beside it
(``MixtralTopKRouter.top_k`` …) and ``num_experts`` from the experts module, plus every other
parameter in full. Checkpoints are written by transformers' ``save_pretrained`` and by
``safetensors.torch.save_file``; the published totals are from the model cards cited at
each test.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import paramscope
from paramscope import DType, Entry, Manifest
from paramscope._enums import Role
from paramscope._moe import (
    TOP_K_DEFAULTS,
    MoEConfig,
    moe_config_from_gguf,
    moe_config_from_hf,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from _helpers import without_torch  # noqa: E402

CONFIGS = Path(__file__).parent / "data" / "hf_configs"

CAUSAL = {
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
}

_SMALL = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "intermediate_size": 20,
}
_MLA = {
    "n_group": 1,
    "topk_group": 1,
    "kv_lora_rank": 8,
    "qk_rope_head_dim": 4,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "moe_intermediate_size": 6,
}

#: Tiny configs of every MoE family, with the options that change which layers are MoE.
CASES: dict[str, dict[str, Any]] = {
    "mixtral": {
        **_SMALL,
        "model_type": "mixtral",
        "num_hidden_layers": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    "mixtral-tied-top1": {
        **_SMALL,
        "model_type": "mixtral",
        "num_hidden_layers": 1,
        "num_local_experts": 3,
        "num_experts_per_tok": 1,
        "tie_word_embeddings": True,
    },
    "qwen2_moe-sparse-step": {
        **_SMALL,
        "model_type": "qwen2_moe",
        "num_hidden_layers": 4,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [3],
        "moe_intermediate_size": 12,
        "shared_expert_intermediate_size": 8,
    },
    "qwen3_moe-mlp-only": {
        **_SMALL,
        "model_type": "qwen3_moe",
        "num_hidden_layers": 3,
        "num_experts": 6,
        "num_experts_per_tok": 3,
        "mlp_only_layers": [0],
        "moe_intermediate_size": 10,
    },
    "qwen3_moe-default-top-k": {
        **_SMALL,
        "model_type": "qwen3_moe",
        "num_hidden_layers": 1,
        "num_experts": 16,
        "moe_intermediate_size": 4,
    },
    "deepseek_v2-dense-first": {
        **_SMALL,
        **_MLA,
        "model_type": "deepseek_v2",
        "num_hidden_layers": 3,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 2,
        "first_k_dense_replace": 1,
        "q_lora_rank": None,
    },
    "deepseek_v3-dense-first": {
        **_SMALL,
        **_MLA,
        "model_type": "deepseek_v3",
        "num_hidden_layers": 4,
        "num_key_value_heads": 4,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "first_k_dense_replace": 2,
        "q_lora_rank": 8,
    },
    "gpt_oss": {
        **_SMALL,
        "model_type": "gpt_oss",
        "num_hidden_layers": 2,
        "head_dim": 4,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
}


def build(cfg: dict[str, Any], device: str = "meta") -> Any:
    cfg = copy.deepcopy(cfg)
    model_type = cfg.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    cls = getattr(transformers, CAUSAL[model_type])
    with torch.device(device):
        return cls._from_config(config, dtype=torch.float32)


def oracle(model: Any) -> tuple[int, int, int]:
    """``(total, active, active without the embedding lookup)`` from the module tree."""
    total = sum(p.numel() for p in model.parameters())  # shared parameters once
    active = total
    seen = 0
    for path, mod in model.named_modules():
        if not type(mod).__name__.endswith("Experts"):
            continue
        parent = model.get_submodule(path.rsplit(".", 1)[0])
        routers = [c for c in parent.children() if hasattr(c, "top_k")]
        assert len(routers) == 1, f"{path}: no single router beside the experts"
        k, e = routers[0].top_k, mod.num_experts
        p = sum(t.numel() for t in mod.parameters())
        assert (p * k) % e == 0
        active -= p - p * k // e
        seen += 1
    assert seen, "no experts module found: the oracle would say nothing"
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb
    return total, active, active if tied else active - emb.numel()


def write_config(tmp_path: Path, cfg: dict[str, Any], name: str = "config.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({**cfg, "architectures": [CAUSAL[cfg["model_type"]]]}))
    return p


# --- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_counts_match_the_module_tree(case: str, tmp_path: Path) -> None:
    cfg = CASES[case]
    model = build(cfg)
    total, active, no_embed = oracle(model)
    assert active < total  # the case exercises routing
    c = paramscope.count(write_config(tmp_path, cfg))
    assert c.format == "config"
    assert (c.params, c.active_params) == (total, active)
    assert c.moe is not None and c.moe.active_params_without_embedding == no_embed
    assert c.to_dict()["active_params"] == active
    # the module itself: top-k from model.config
    m = paramscope.count(model)
    assert (m.params, m.active_params) == (total, active)
    assert m.moe is not None and m.moe.source == "model.config num_experts_per_tok"


def test_top_k_defaults_are_the_config_classes() -> None:
    classes = {
        "mixtral": transformers.MixtralConfig,
        "qwen2_moe": transformers.Qwen2MoeConfig,
        "qwen3_moe": transformers.Qwen3MoeConfig,
        "deepseek_v3": transformers.DeepseekV3Config,
        "gpt_oss": transformers.GptOssConfig,
    }
    assert {k: v().num_experts_per_tok for k, v in classes.items()} == TOP_K_DEFAULTS
    # DeepSeek-V2's default is None: no default is assumed for it
    assert transformers.DeepseekV2Config().num_experts_per_tok is None
    c = moe_config_from_hf({"model_type": "qwen3_moe", "num_experts": 16})
    assert c is not None and c.top_k == 8 and "Qwen3MoeConfig's default" in str(c.top_k_from)


def test_deepseek_v2_without_top_k_says_it_cannot(tmp_path: Path) -> None:
    cfg = {k: v for k, v in CASES["deepseek_v2-dense-first"].items() if k != "num_experts_per_tok"}
    c = paramscope.count(write_config(tmp_path, cfg))
    assert c.params == oracle(build(CASES["deepseek_v2-dense-first"]))[0]
    assert c.active_params is None and c.moe is not None and c.moe.top_k is None
    assert any("cannot be computed" in n and "gives no top-k" in n for n in c.notes)
    assert "unknown" in c.to_text()


#: Mixtral-8x7B-v0.1's config.json as published (huggingface.co/mistralai/Mixtral-8x7B-v0.1).
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.36.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}


def test_mixtral_8x7b_from_its_config(tmp_path: Path, cli: Any) -> None:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(MIXTRAL_8X7B))
    c = paramscope.count(p)
    assert c.params == 46_702_792_704
    assert c.active_params == 12_879_925_248  # input embedding counted
    assert c.moe is not None
    assert c.moe.active_params_without_embedding == 12_748_853_248
    assert (c.moe.experts, c.moe.top_k, c.moe.moe_layers) == (8, 2, 32)
    assert c.moe.source == "config.json num_experts_per_tok"
    assert any("input embedding included" in n for n in c.notes)
    code, out, err = cli("count", p, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["params"] == 46_702_792_704 and d["active_params"] == 12_879_925_248
    assert d["moe"]["active_params_without_embedding"] == 12_748_853_248
    assert d["moe"]["top_k"] == 2 and d["moe"]["experts"] == 8
    code, out, _ = cli("count", p)
    assert code == 0
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith("params"))
    assert lines[i + 1].split()[:2] == ["active", "12,879,925,248"]
    assert "top-2 of 8 experts" in lines[i + 1]


@pytest.mark.parametrize(
    ("name", "low", "high", "without_embedding"),
    [
        # "37B activated for each token" (DeepSeek-V3 technical report, abstract)
        ("DeepSeek-V3", 36.5e9, 38.0e9, False),
        # "30.5B total, 3.3B activated" (Qwen/Qwen3-30B-A3B model card)
        ("Qwen3-30B-A3B", 3.25e9, 3.4e9, False),
        # "3.6B active parameters", not counting embeddings (openai/gpt-oss-20b model card)
        ("gpt-oss-20b", 3.55e9, 3.65e9, True),
        # "2.7B activated" (Qwen/Qwen1.5-MoE-A2.7B model card)
        ("Qwen1.5-MoE-A2.7B", 2.65e9, 2.75e9, False),
        # "2.4B activated" (DeepSeek-V2-Lite model card), not counting embeddings
        ("DeepSeek-V2-Lite", 2.4e9, 2.5e9, True),
    ],
)
def test_published_active_counts(
    name: str, low: float, high: float, without_embedding: bool
) -> None:
    c = paramscope.count(CONFIGS / f"{name}.json")
    assert c.moe is not None
    n = c.moe.active_params_without_embedding if without_embedding else c.active_params
    assert n is not None and low <= n <= high, n


# --- checkpoints -----------------------------------------------------------------------------


def saved(tmp_path: Path, case: str, **kw: Any) -> tuple[Path, Any]:
    torch.manual_seed(0)
    model = build(CASES[case], device="cpu")
    out = tmp_path / case
    model.save_pretrained(out, **kw)
    return out, model


@pytest.mark.parametrize("case", ["mixtral", "qwen2_moe-sparse-step", "deepseek_v3-dense-first"])
def test_save_pretrained_folder(case: str, tmp_path: Path) -> None:
    folder, model = saved(tmp_path, case)
    total, active, no_embed = oracle(model)
    c = paramscope.count(folder)
    # DeepSeek-V3's float buffer e_score_correction_bias reads as a parameter from a header
    # (roles inferred from names and dtypes): dense, so in both counts
    extra = sum(b.numel() for n, b in model.named_buffers() if n.endswith("correction_bias"))
    assert (c.params, c.active_params) == (total + extra, active + extra)
    no_embed += extra
    assert c.moe is not None and c.moe.active_params_without_embedding == no_embed
    assert c.moe.source == "config.json num_experts_per_tok"


def test_sharded_folder_and_single_file(tmp_path: Path) -> None:
    folder, model = saved(tmp_path, "mixtral", max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file()
    _, active, _ = oracle(model)
    assert paramscope.count(folder).active_params == active
    shard = sorted(folder.glob("*.safetensors"))[-1]  # one shard: its config still gives top-k
    assert paramscope.count(shard).moe is not None


def test_per_expert_names_as_mixtral_ships_them(tmp_path: Path) -> None:
    """Mixtral's published checkpoints name each expert: block_sparse_moe.experts.N.w1/w2/w3
    (transformers 4.x layout; e.g. mistralai/Mixtral-8x7B-v0.1's index)."""
    model = build(CASES["mixtral"], device="cpu")
    total, active, no_embed = oracle(model)
    sd = {}
    for name, t in model.state_dict().items():
        if ".mlp.experts." not in name:
            sd[name.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = t
            continue
        prefix = name.split(".mlp.experts.")[0] + ".block_sparse_moe.experts"
        for i in range(t.shape[0]):
            if name.endswith("gate_up_proj"):
                w1, w3 = t[i].chunk(2, dim=0)
                sd[f"{prefix}.{i}.w1.weight"], sd[f"{prefix}.{i}.w3.weight"] = w1, w3
            else:
                sd[f"{prefix}.{i}.w2.weight"] = t[i]
    sd = {k: v.contiguous() for k, v in sd.items()}
    safetensors_torch.save_file(sd, tmp_path / "model.safetensors")
    write_config(tmp_path, CASES["mixtral"])
    c = paramscope.count(tmp_path / "model.safetensors")
    assert c.params == total and c.active_params == active
    assert c.moe is not None and c.moe.layout == "per-expert entries" and c.moe.experts == 4
    assert c.moe.active_params_without_embedding == no_embed


def test_fused_experts_without_config_say_why(tmp_path: Path) -> None:
    model = build(CASES["gpt_oss"], device="cpu")
    f = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f)
    c = paramscope.count(f)
    total, _, _ = oracle(model)
    assert c.params == total and c.active_params is None
    assert c.moe is not None and c.moe.layout == "fused experts" and c.moe.experts == 4
    assert any("cannot be computed" in n for n in c.notes)
    write_config(tmp_path, CASES["gpt_oss"])
    assert paramscope.count(f).active_params == oracle(model)[1]


def test_unreadable_config_is_said(tmp_path: Path) -> None:
    model = build(CASES["mixtral"], device="cpu")
    f = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f)
    (tmp_path / "config.json").write_text("{not json")
    c = paramscope.count(f)
    assert c.active_params is None
    assert any("config.json is not readable as JSON" in n for n in c.notes)


def test_dense_models_have_no_moe(tmp_path: Path) -> None:
    c = paramscope.count(CONFIGS / "Llama-2-7b-hf.json")
    assert c.moe is None and c.active_params is None
    assert "active" not in c.to_text()
    assert c.to_dict()["active_params"] is None and c.to_dict()["moe"] is None


def test_header_only_without_torch(tmp_path: Path) -> None:
    folder, model = saved(tmp_path, "qwen3_moe-mlp-only")
    _, active, _ = oracle(model)
    got = without_torch(
        "import paramscope\nresult = paramscope.count(sys.argv[1]).active_params",
        folder,
        absent=("torch", "numpy"),
    )
    assert got == active


# --- GGUF names and metadata -----------------------------------------------------------------


def gguf_like_manifest(experts: int = 8, used: int | None = 2, tied: bool = False) -> Manifest:
    """llama.cpp's tensor names for a Mixtral (gguf-py constants.py MODEL_TENSOR names:
    ffn_gate_inp, ffn_{gate,up,down}_exps; numpy-order shapes [E, out, in])."""
    h, ff, v = 8, 12, 32
    es = [Entry("token_embd.weight", (v, h), DType.F32)]
    for b in range(2):
        es += [
            Entry(f"blk.{b}.attn_q.weight", (h, h), DType.F32),
            Entry(f"blk.{b}.ffn_gate_inp.weight", (experts, h), DType.F32),
            Entry(f"blk.{b}.ffn_gate_exps.weight", (experts, ff, h), DType.F32),
            Entry(f"blk.{b}.ffn_up_exps.weight", (experts, ff, h), DType.F32),
            Entry(f"blk.{b}.ffn_down_exps.weight", (experts, h, ff), DType.F32),
            Entry(f"blk.{b}.ffn_up_shexp.weight", (ff, h), DType.F32),
        ]
    if not tied:
        es.append(Entry("output.weight", (v, h), DType.F32))
    meta = {"general.architecture": "llama", "llama.expert_count": experts}
    if used is not None:
        meta["llama.expert_used_count"] = used
    return Manifest(es, moe=moe_config_from_gguf(meta))


def test_gguf_exps_tensors() -> None:
    m = gguf_like_manifest()
    c = paramscope.count(m)
    routed = 2 * 3 * 8 * 12 * 8
    assert c.params == sum(e.numel for e in m.values())
    assert c.active_params == c.params - routed + routed * 2 // 8
    assert c.moe is not None and c.moe.shared_params == 2 * 12 * 8
    assert c.moe.source == "GGUF metadata llama.expert_used_count"
    assert c.moe.active_params_without_embedding == c.active_params - 32 * 8
    no_k = paramscope.count(gguf_like_manifest(used=None))
    assert no_k.active_params is None
    assert any("GGUF metadata gives no llama.expert_used_count" in n for n in no_k.notes)


def test_gguf_metadata_as_strings() -> None:
    c = moe_config_from_gguf(
        {
            "general.architecture": "qwen2moe",
            "qwen2moe.expert_count": "60",
            "qwen2moe.expert_used_count": "4",
            "qwen2moe.expert_shared_count": "1",
        }
    )
    assert c == MoEConfig(
        top_k=4,
        experts=60,
        shared=1,
        source="GGUF metadata",
        top_k_from="qwen2moe.expert_used_count",
    )


def test_config_keys_of_other_families() -> None:
    for key in ("num_experts_per_token", "experts_per_token", "moe_topk", "moe_top_k"):
        c = moe_config_from_hf({"model_type": "x", key: 3, "num_experts": 9})
        assert c is not None and (c.top_k, c.experts, c.top_k_from) == (3, 9, key)
    nested = moe_config_from_hf(
        {"model_type": "llama4", "text_config": {"num_local_experts": 16, "num_experts_per_tok": 1}}
    )
    assert nested is not None and (nested.top_k, nested.experts) == (1, 16)
    bad = moe_config_from_hf({"model_type": "x", "num_experts_per_tok": "two", "num_experts": 4})
    assert bad is not None and bad.top_k is None and "'two'" in str(bad.problem)


def test_tied_embedding_is_active_in_both_conventions() -> None:
    c = paramscope.count(gguf_like_manifest())
    t = Manifest(
        [
            *gguf_like_manifest(tied=True).values(),
            Entry("output.weight", (32, 8), DType.F32, tie="token_embd.weight"),
        ],
        moe=gguf_like_manifest().moe,
    )
    ct = paramscope.count(t)
    assert ct.moe is not None and c.moe is not None
    assert ct.active_params == ct.moe.active_params_without_embedding
    assert c.moe.active_params_without_embedding != c.active_params


def test_roles_and_buffers_are_not_experts() -> None:
    m = Manifest(
        [
            Entry("l.experts.gate_up_proj", (4, 6, 8), DType.F32),
            Entry("l.experts.counts", (4,), DType.I64, role=Role.BUFFER),
        ],
        moe=MoEConfig(top_k=1),
    )
    c = paramscope.count(m)
    assert (c.params, c.active_params) == (192, 48)


# --- inspect, report -------------------------------------------------------------------------


def test_inspect_and_report_show_active(tmp_path: Path, cli: Any) -> None:
    folder, model = saved(tmp_path, "mixtral")
    _, active, _ = oracle(model)
    ins = paramscope.inspect(folder)
    assert ins.to_dict()["total"]["active_params"] == active
    assert f"active {active:,}" in ins.to_text()
    code, out, err = cli("inspect", folder)
    assert code == 0, err and f"active {active:,}" in out
    html = tmp_path / "r.html"
    code, _, err = cli("report", folder, "-o", html)
    assert code == 0, err
    text = html.read_text()
    blob = text.split('id="paramscope-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(blob)["counts"]["active_params"] == active


# --- quantised experts: logical parameters -------------------------------------------------


def test_gguf_file_written_by_gguf_writer(tmp_path: Path, cli: Any) -> None:
    """A Mixtral-style GGUF (llama.cpp names, ``llama.expert_count`` / ``expert_used_count``)
    with Q8_0 and Q4_K experts, written by gguf-py's GGUFWriter; params equal GGUFReader's
    ``n_elements`` sum, active ones count the experts' logical elements."""
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    e_, ff, h, v = 4, 256, 256, 32
    p = tmp_path / "moe.gguf"
    w = gguf.GGUFWriter(p, "llama")
    w.add_expert_count(e_)
    w.add_expert_used_count(2)
    w.add_tensor("token_embd.weight", np.zeros((v, h), np.float32))
    for b in range(2):
        w.add_tensor(f"blk.{b}.attn_q.weight", np.zeros((h, h), np.float32))
        w.add_tensor(f"blk.{b}.ffn_gate_inp.weight", np.zeros((e_, h), np.float32))
        q8 = gguf.quants.quantize(
            np.random.default_rng(b).random((e_, ff, h), np.float32),
            gguf.GGMLQuantizationType.Q8_0,
        )
        w.add_tensor(f"blk.{b}.ffn_up_exps.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        q4k = np.zeros((e_, ff, h // 256 * 144), np.uint8)  # Q4_K: 144 bytes per 256 values
        w.add_tensor(f"blk.{b}.ffn_gate_exps.weight", q4k, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
        w.add_tensor(f"blk.{b}.ffn_down_exps.weight", np.zeros((e_, h, ff), np.float32))
    w.add_tensor("output.weight", np.zeros((v, h), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    reader = gguf.GGUFReader(p)
    total = sum(int(t.n_elements) for t in reader.tensors)
    routed = sum(int(t.n_elements) for t in reader.tensors if "_exps" in t.name)
    c = paramscope.count(p)
    assert c.params == total
    assert c.active_params == total - routed + routed * 2 // e_
    assert c.moe is not None and (c.moe.experts, c.moe.top_k) == (4, 2)
    assert c.moe.active_params_without_embedding == c.active_params - v * h
    code, out, err = cli("count", p, "--json")
    assert code == 0, err
    assert json.loads(out)["active_params"] == c.active_params
    got = without_torch(
        "import paramscope\nresult = paramscope.count(sys.argv[1]).active_params",
        p,
        absent=("torch", "numpy"),
    )
    assert got == c.active_params


def test_mxfp4_experts_as_gpt_oss_ships_them(tmp_path: Path) -> None:
    """gpt-oss's MXFP4 experts: ``experts.gate_up_proj_blocks`` U8 ``[E, 2I, H/32, 16]`` +
    ``_scales`` ``[E, 2I, H/32]`` (transformers integrations/mxfp4.py); active params count
    their logical ``[E, 2I, H]`` elements, equal to the float model's."""
    cfg = {**CASES["gpt_oss"], "hidden_size": 64, "intermediate_size": 32}
    model = build(cfg, device="cpu")
    total, active, _ = oracle(model)
    sd = {}
    for name, t in model.state_dict().items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            x = t.transpose(1, 2)  # [E, out, in], as the checkpoint stores it
            e, rows, cols = x.shape
            sd[f"{name}_blocks"] = torch.zeros((e, rows, cols // 32, 16), dtype=torch.uint8)
            sd[f"{name}_scales"] = torch.zeros((e, rows, cols // 32), dtype=torch.uint8)
        else:
            sd[name] = t.contiguous()
    safetensors_torch.save_file(sd, tmp_path / "model.safetensors")
    write_config(tmp_path, {**cfg, "quantization_config": {"quant_method": "mxfp4"}})
    c = paramscope.count(tmp_path)
    assert (c.params, c.active_params) == (total, active)
    assert c.moe is not None and c.moe.experts == 4
