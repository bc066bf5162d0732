"""Activation memory (Korthikanti et al. 2022), the KV cache and the measured activations.

References: Korthikanti et al., "Reducing Activation Recomputation in Large Transformer
Models" (2022), Table 2 and the GPT-3 175B figures of §5; transformers' ``DynamicCache`` as
the oracle for KV-cache bytes; ``torch.autograd.graph.saved_tensors_hooks`` as the oracle for
what autograd keeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paramscope import estimate_memory
from paramscope._errors import ArgumentError
from paramscope.counting._activations import (
    activation_bytes,
    fit_context,
    kv_cache_bytes,
    measure_activations,
    transformer_shape,
)

GPT3 = {"num_hidden_layers": 96, "hidden_size": 12288, "num_attention_heads": 96}
LLAMA2_7B = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "torch_dtype": "float16",
}
LLAMA3_8B = {
    **LLAMA2_7B,
    "intermediate_size": 14336,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}


def test_gpt3_175b_against_the_paper() -> None:
    """§5 of the paper: 2.869 GB per layer without parallelism, 0.107 GB with TP+SP+selective
    (10.27 GB for 96 layers), 50.3 MB with full recompute; s=2048, b=1, t=8."""
    g = transformer_shape(GPT3)
    base = activation_bytes(g, seq=2048)
    assert round(base["per_layer"] / 1e9, 3) == 2.869
    best = activation_bytes(g, seq=2048, tp=8, sp=True, recompute="selective")
    assert round(best["per_layer"] / 1e9, 3) == 0.107
    assert round(best["layers"] / 1e9, 2) == 10.27
    full = activation_bytes(g, seq=2048, recompute="full")
    assert round(full["per_layer"] / 1e6, 1) == 50.3
    # Table 2 rows, each by its own closed form
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    sbh = s * b * h
    assert activation_bytes(g, seq=s, tp=t)["per_layer"] == sbh * 10 + sbh * 24 // t + (
        5 * a * s * s * b // t
    )
    assert activation_bytes(g, seq=s, tp=t, sp=True)["per_layer"] == sbh * 34 // t + (
        5 * a * s * s * b // t
    )
    assert activation_bytes(g, seq=s, tp=t, recompute="selective")["per_layer"] == (
        sbh * 10 + sbh * 24 // t
    )
    # flash attention drops the 5as²b term, as selective recompute does
    assert activation_bytes(g, seq=s, flash=True)["per_layer"] == 34 * sbh


def test_pipeline_and_extra_terms() -> None:
    g = transformer_shape({**GPT3, "vocab_size": 51200})
    one = activation_bytes(g, seq=2048, tp=8, sp=True, recompute="selective")
    four = activation_bytes(g, seq=2048, tp=8, sp=True, recompute="selective", pp=4)
    assert four["layers"] == one["layers"]  # 1F1B: L/p layers × p micro-batches
    assert four["embedding"] == 4 * one["embedding"]
    sbh = 2048 * 12288
    assert one["output"] == 4 * sbh * (1 + 51200 / 12288) // 8
    assert one["total"] == one["layers"] + one["embedding"] + one["output"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"tp": 7}, ["tp=7", "96 attention heads"]),
        ({"pp": 5}, ["pp=5", "96 layers"]),
        ({"recompute": "some"}, ["'some'", "selective"]),
    ],
)
def test_options_that_do_not_fit(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ArgumentError) as ei:
        activation_bytes(transformer_shape(GPT3), seq=2048, **kwargs)
    assert all(w in str(ei.value) for w in words)


def test_kv_cache_llama() -> None:
    l2 = transformer_shape(LLAMA2_7B)
    kv = kv_cache_bytes(l2, context=4096)
    assert kv["per_token"] == 524_288
    assert kv["per_sequence"] == 2 * 2**30
    l3 = transformer_shape(LLAMA3_8B)
    assert l3.attention == "GQA"
    assert kv_cache_bytes(l3, context=1)["per_token"] == 131_072


def test_kv_cache_mqa_window_mla() -> None:
    mqa = transformer_shape(
        {"n_layer": 2, "n_embd": 64, "n_head": 4, "multi_query": True}  # gpt_bigcode keys
    )
    assert mqa.attention == "MQA"
    assert kv_cache_bytes(mqa, context=10)["per_sequence"] == 2 * 1 * 16 * 2 * 2 * 10
    mistral = transformer_shape({**LLAMA3_8B, "sliding_window": 4096})
    assert kv_cache_bytes(mistral, context=32768)["per_sequence"] == 131_072 * 4096
    mixed = transformer_shape(
        {
            **LLAMA3_8B,
            "num_hidden_layers": 4,
            "sliding_window": 100,
            "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
        }
    )
    per_layer = 131_072 // 32
    assert kv_cache_bytes(mixed, context=1000)["per_sequence"] == per_layer * (3 * 100 + 1000)
    # DeepSeek-V3: 61 layers, latent 512 + rope 64 values a token and layer
    ds = transformer_shape(
        {**LLAMA2_7B, "num_hidden_layers": 61, "kv_lora_rank": 512, "qk_rope_head_dim": 64}
    )
    assert ds.attention == "MLA"
    assert kv_cache_bytes(ds, context=1)["per_token"] == 61 * 576 * 2


def test_kv_cache_against_transformers_dynamic_cache() -> None:
    """The oracle: run a tiny model with ``use_cache`` and add up the cache tensors' bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for kv_heads in (4, 2, 1):  # MHA, GQA, MQA
        cfg = LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=kv_heads,
        )
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
        with torch.no_grad():
            out = model(torch.zeros(2, 7, dtype=torch.long), use_cache=True)
        cache = out.past_key_values
        real = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
        ours = kv_cache_bytes(transformer_shape(cfg), context=7, batch=2, bytes_per_value=2)
        assert ours["total"] == real, kv_heads


def test_fit_context_and_batch() -> None:
    l2 = transformer_shape(LLAMA2_7B)
    assert fit_context(l2, 2 * 2**30) == 4096
    assert fit_context(l2, 2 * 2**30 - 1) == 4095
    assert fit_context(l2, 0) == 0
    win = transformer_shape({**LLAMA2_7B, "sliding_window": 8})
    assert fit_context(win, 10**12) is None  # every layer windowed: any context fits


def test_estimate_memory_inference_and_fit(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA2_7B))
    e = estimate_memory(str(cfg), context=4096)
    assert e.kv_cache == 2 * 2**30
    assert e.per_gpu_bytes == e.weights + e.buffers + e.kv_cache
    assert "kv_cache" in e.terms["exact"] and e.terms["formula"] == {}
    assert e.to_dict()["breakdown"]["kv_cache"] == 2 * 2**30
    fit = estimate_memory(str(cfg), fit="80GB")
    free = 80 * 10**9 - fit.weights - fit.buffers
    assert fit.details["kv_cache"]["fit"]["context"] == free // 524_288
    batch = estimate_memory(str(cfg), context=4096, fit="80GB")
    assert batch.details["kv_cache"]["fit"]["batch"] == free // (2 * 2**30)


def test_estimate_memory_training_activations() -> None:
    e = estimate_memory(_tiny_module(), training=True, seq=2048, config=GPT3)
    expected = activation_bytes(transformer_shape(GPT3), seq=2048)["total"]
    assert e.activations == expected
    assert e.to_dict()["breakdown"]["activations"] == expected
    assert "Korthikanti" in e.terms["formula"]["activations"]
    assert any("sbh(10 + 24 + 5as/h)" in n for n in e.notes)
    with pytest.raises(ArgumentError, match="--train"):
        estimate_memory(_tiny_module(), seq=2048, config=GPT3)
    with pytest.raises(ArgumentError, match="config"):
        estimate_memory(_tiny_module(), training=True, seq=2048)


def _tiny_module():  # type: ignore[no-untyped-def]
    import torch

    return torch.nn.Linear(4, 4)


def test_measured_matches_what_autograd_saves() -> None:
    """The tracked bytes alive after forward against the tensors autograd really saves
    (``saved_tensors_hooks``), on a small transformer on CPU: within 5 %."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 128, (2, 16))
    measured = measure_activations(model, ids)
    existing = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers(), ids]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st._cdata not in existing:
            saved[st._cdata] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(ids, use_cache=False).logits
    real = sum(saved.values()) + out.nbytes  # what is saved, plus the output itself
    assert abs(measured["saved"] - real) <= 0.05 * real, (measured["saved"], real)
    assert measured["peak"] >= measured["saved"]
    assert measured["top_module"] in dict(model.named_modules())


def test_measured_on_meta_costs_nothing() -> None:
    import torch

    with torch.device("meta"):
        m = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU())
        r = measure_activations(m, torch.zeros(64, 1024))
    # GELU keeps its input (the Linear output); its own output is the result
    assert r["saved"] == 2 * 64 * 4096 * 4
    assert r["top_module"] in {"0", "1"}


def test_cli_memory_kv_and_activations(cli, tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA2_7B))
    r = cli("memory", str(cfg), "--inference", "--context", "4096", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["breakdown"]["kv_cache"] == 2 * 2**30
    assert d["details"]["kv_cache"]["per_token"] == 524_288
    r = cli("memory", str(cfg), "--fit", "80GB")
    assert r.code == 0, r.err
    assert "KV cache" in r.out and "fit:" in r.out
    r = cli("memory", str(cfg), "--train", "--seq", "4096", "--tp", "8", "--sp", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["breakdown"]["activations"] > 0
    assert d["terms"]["formula"]["activations"].startswith("Korthikanti")
    r = cli("memory", str(cfg), "--train", "--seq", "4096", "--tp", "3")
    assert r.code == 2 and "tp=3" in r.err and "32 attention heads" in r.err
    r = cli("memory", str(cfg), "--inference", "--train", "--seq", "8")
    assert r.code == 2 and "--inference" in r.err


def test_fit_says_when_nothing_fits(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA2_7B))
    for kwargs in ({}, {"context": 4096}):
        e = estimate_memory(str(cfg), fit="10GB", **kwargs)
        resident = e.weights + e.buffers
        assert resident > 10 * 10**9
        said = [n for n in e.notes if n.startswith("fit:")]
        assert said == [
            f"fit: nothing fits in 10,000,000,000 bytes: the weights and buffers alone take "
            f"{resident:,} bytes (at their stored size unless a dtype is given; a smaller "
            "--dtype, a quantised checkpoint or more GPUs would help)"
        ], said


def test_formula_gaps_name_what_korthikanti_does_not_describe(tmp_path: Path) -> None:
    """The per-layer formula is GPT's (MHA, one 4h MLP); a model that differs gets its
    activations called an estimate, naming each difference; GPT-2 and BERT do not."""
    import transformers

    from paramscope.counting._activations import formula_gaps, transformer_shape

    gpt2 = transformers.GPT2Config().to_dict()
    bert = transformers.BertConfig().to_dict()
    assert formula_gaps(transformer_shape(gpt2)) == []
    assert formula_gaps(transformer_shape(bert)) == []
    llama = transformers.LlamaConfig(num_key_value_heads=8).to_dict()
    assert formula_gaps(transformer_shape(llama)) == [
        "GQA: keys and values 1024 wide, not h = 4096",
        "MLP 11008 wide, not 4h = 16384",
    ]
    mixtral = transformers.MixtralConfig().to_dict()
    gaps = formula_gaps(transformer_shape(mixtral))
    assert gaps[-1] == "a mixture of experts: top-2 of 8 experts per token, not one MLP"
    for name, cfg, estimate in (("gpt2", gpt2, False), ("mixtral", mixtral, True)):
        path = tmp_path / name / "config.json"
        path.parent.mkdir()
        path.write_text(json.dumps({**cfg, "architectures": cfg.get("architectures") or []}))
        m = estimate_memory(str(path), training=True, seq=64)
        notes = [n for n in m.notes if n.startswith("activations are an estimate")]
        assert bool(notes) is estimate, name
        assert m.details["activations"]["estimate_because"] == (gaps if estimate else [])
