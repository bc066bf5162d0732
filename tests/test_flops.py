"""FLOPs and MACs (issue 15): measured on the meta device, checked against published references,
fvcore and closed forms; the analytic Kaplan formula; errors and the CLI.

References: torchvision's model cards give ``_ops`` (GFLOPS, counted as MACs) of 4.089 for
ResNet-50 and 17.564 for ViT-B/16 at 224×224 (torchvision.models docs, "Table of all
available classification weights"); BERT-base at seq 128 is 11.17 GMACs (the linear layers
12·128·(4·768² + 2·768·3072) plus attention 12·2·128²·768 plus the pooler).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import paramscope
from paramscope import ShapeMismatchError
from paramscope.counting._flops import CONVENTION, _extra_formulas, analytic_flops, parse_tokens


def test_resnet50_matches_torchvision_reference() -> None:
    r = paramscope.flops("zoo:resnet50", input_shape=(1, 3, 224, 224))
    assert r.macs == 4_089_184_256  # torchvision: 4.089 GFLOPS (MACs)
    assert r.flops == 2 * r.macs
    assert r.by_op["aten.convolution"]["calls"] == 53
    # the rows of the root's children add up to the root (no shared modules here)
    assert sum(c.flops for c in r.root.children) == r.root.flops == r.flops


def test_vit_b16_matches_torchvision_reference() -> None:
    r = paramscope.flops("zoo:vit-b-16", input_shape=(1, 3, 224, 224))
    assert round(r.macs / 1e9, 3) == 17.564  # torchvision: 17.564 GFLOPS (MACs)
    assert "aten.bmm" in r.by_op  # attention is counted, not skipped


def test_bert_base_seq128_and_transformers_agree() -> None:
    from transformers import BertConfig, BertModel

    ours = paramscope.flops("zoo:bert-base", seq=128)
    expected = 12 * 128 * (4 * 768 * 768 + 2 * 768 * 3072) + 12 * 2 * 128 * 128 * 768
    expected += 768 * 768  # the pooler on the first token
    assert ours.macs == expected
    assert round(ours.macs / 1e9, 2) == 11.17
    with torch.device("meta"):
        hf = BertModel(BertConfig())
    theirs = paramscope.flops(hf, seq=128)
    assert theirs.macs == ours.macs  # transformers' own BertModel, sdpa attention on meta


def test_fvcore_agrees_on_convolutions_and_linears() -> None:
    from fvcore.nn import FlopCountAnalysis

    from paramscope.building import zoo

    model = zoo.build("resnet18").eval()
    fv = FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224))
    fv.unsupported_ops_warnings(False)
    fv.uncalled_modules_warnings(False)
    ops = fv.by_operator()
    ours = paramscope.flops(model, input_shape=(1, 3, 224, 224))
    assert ours.by_op["aten.convolution"]["macs"] == ops["conv"]
    assert ours.by_op["aten.addmm"]["macs"] == ops["linear"]


class _Attention(torch.nn.Module):
    """One self-attention through ``F.scaled_dot_product_attention`` (no nn.Linear for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(64, 192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).view(2, 16, 3, 4, 16).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)


def test_fvcore_counts_zero_for_attention_paramscope_does_not() -> None:
    from fvcore.nn import FlopCountAnalysis

    model = _Attention()
    fv = FlopCountAnalysis(model, torch.zeros(2, 16, 64))
    fv.unsupported_ops_warnings(False)
    fv.total()
    assert fv.unsupported_ops() == {"aten::scaled_dot_product_attention": 1}
    assert fv.total() == 2 * 16 * 64 * 192  # the projection only: attention counted as 0
    ours = paramscope.flops(model, input_shape=(2, 16, 64))
    attention = 2 * 4 * 16 * 16 * 16 * 2  # QKᵀ and AV: b·h·s·s·d MACs each
    assert ours.macs == fv.total() + attention


def test_cpu_flash_attention_kernel_has_a_formula() -> None:
    """torch's registry has no formula for the CPU flash kernel; paramscope adds one."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    assert op not in flop_registry
    q = torch.randn(2, 4, 16, 8)
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_flop_counts()["Global"] == {op: 2 * (2 * 2 * 4 * 16 * 16 * 8)}


def test_shared_module_counted_once_per_call() -> None:
    lin = torch.nn.Linear(8, 8)
    model = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)
    r = paramscope.flops(model, input_shape=(1, 8))
    assert r.macs == 2 * 64 + 0  # two calls, addmm counts the weight only
    first, _, again = r.root.children
    assert first.macs == 128 and again.shared_with == "0"
    assert any("once per call" in n for n in r.notes)


def test_backward_of_an_mlp() -> None:
    r = paramscope.flops("zoo:mlp", input_shape=(4, 784), backward=True)
    fwd = 2 * 4 * (784 * 256 + 256 * 128 + 128 * 10)
    assert r.forward_flops == fwd
    # weight grads for every layer, input grads for all but the first (the input needs none)
    assert r.backward_flops == 2 * fwd - 2 * 4 * 784 * 256


def test_uncounted_ops_are_listed_never_silently_zero() -> None:
    r = paramscope.flops("zoo:resnet50", input_shape=(1, 3, 224, 224))
    assert r.uncounted["aten.native_batch_norm"] == 53
    assert r.uncounted["aten.max_pool2d_with_indices"] == 1
    assert "aten.view" in r.no_arithmetic or "aten.flatten" in r.no_arithmetic
    assert "uncounted (no formula, not in the totals): " in r.to_text()


def test_gpt2_per_token_in_line_with_kaplan() -> None:
    seq = 1024
    measured = paramscope.flops("zoo:gpt2", seq=seq)
    kaplan = analytic_flops("zoo:gpt2", seq=seq)
    d = kaplan.details
    n, layers, width = d["non_embedding_params"], d["n_layer"], d["d_model"]
    per_token = measured.flops / seq
    # what the matmuls really do: weights (N less biases and norms), QKᵀ and AV over the
    # whole (unmasked) score matrix, and the logits
    weights = 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    exact = 2 * weights + 4 * layers * seq * width + d["logits_flops_per_token"]
    assert per_token == exact
    kaplan_with_logits = d["forward_flops_per_token"] + d["logits_flops_per_token"]
    assert abs(per_token / kaplan_with_logits - 1) < 0.10
    assert n == 85_056_000


def test_analytic_training_run() -> None:
    r = paramscope.flops("zoo:llama-2-7b", backward=True, tokens="2T")
    n = r.details["non_embedding_params"]
    assert n == 6_738_415_616 - 2 * 32000 * 4096  # embeddings and the LM head left out
    assert r.method == "analytic" and r.root is None
    assert r.flops == 3 * 2_000_000_000_000 * (2 * n + 2 * 32 * 4096 * 4096)
    # ≈ 6·N·D: the attention term adds 2·n_layer·n_ctx·d_model / 2N = 8 % at 4k context
    assert math.isclose(r.flops, 6 * n * 2e12, rel_tol=0.09)
    assert parse_tokens("300B") == 300_000_000_000


def test_bad_input_shape_names_module_and_shapes(cli) -> None:
    with pytest.raises(ShapeMismatchError, match=r"module 'conv1' \(Conv2d\) got \(1, 3, 22\)"):
        paramscope.flops("zoo:resnet50", input_shape=(1, 3, 22))
    code, out, err = cli("flops", "zoo:resnet50", "--input-shape", "1,3,22")
    assert code == 2 and not out
    assert "module 'conv1' (Conv2d)" in err and "(1, 3, 22)" in err


def test_cli_json_keys(cli) -> None:
    code, out, err = cli("flops", "zoo:lenet5", "--input-shape", "1,1,32,32", "--json")
    assert code == 0, err
    d = json.loads(out)
    keys = {"flops", "macs", "forward_flops", "backward_flops", "convention", "method"}
    assert keys <= set(d) and {"tree", "by_op", "uncounted", "no_arithmetic", "notes"} <= set(d)
    assert d["convention"] == CONVENTION and d["flops"] == 2 * d["macs"]
    assert d["source"] == "zoo:lenet5"
    assert "FLOPs = 2 × MACs" in cli("flops", "zoo:lenet5", "--input-shape", "1,1,32,32").out
    code, out, err = cli("flops", "zoo:llama-2-7b", "--train", "--tokens", "2T", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["method"] == "analytic" and d["details"]["tokens"] == 2 * 10**12


def test_no_inputs_is_an_error(cli) -> None:
    code, _, err = cli("flops", "zoo:lenet5")
    assert code == 2 and "input_shape" in err


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    cin=st.integers(1, 4),
    cout=st.integers(1, 4),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    pad=st.integers(0, 2),
    hw=st.integers(4, 12),
)
def test_conv2d_macs_closed_form(
    n: int, groups: int, cin: int, cout: int, k: int, stride: int, pad: int, hw: int
) -> None:
    conv = torch.nn.Conv2d(cin * groups, cout * groups, k, stride, pad, groups=groups, bias=False)
    out = (hw + 2 * pad - k) // stride + 1
    r = paramscope.flops(conv.to("meta"), input_shape=(n, cin * groups, hw, hw))
    assert r.macs == n * cout * groups * out * out * cin * k * k


def test_a_forward_alone_runs_in_eval_mode_and_the_mode_comes_back() -> None:
    """Dropout is not part of an inference: no bernoulli/dropout ops are listed, the FLOPs are
    the same as for the model put in eval mode by hand, and the model's modes are restored."""
    model = paramscope.zoo.build("gpt2", n_layer=2, n_embd=64, n_head=4, vocab_size=100)
    model.train()
    r = paramscope.flops(model, seq=16)
    assert not any("bernoulli" in op or "dropout" in op for op in r.uncounted), r.uncounted
    assert all(m.training for m in model.modules())  # put back
    model.eval()
    assert paramscope.flops(model, seq=16).flops == r.flops
    assert all(not m.training for m in model.modules())
    model.train()
    step = paramscope.flops(model, seq=16, backward=True)  # a training step keeps train mode
    assert step.forward_flops == r.flops and step.backward_flops > 0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_config_without_kv_cache_counts_as_with_one(tmp_path: Path, family: str) -> None:
    """transformers tests the position ids' values for packed sequences when no cache is
    kept, which meta cannot; flops keeps one (use_cache=True) and says so. Oracle: torch's
    FlopCounterMode over the same model with use_cache=True."""
    import transformers
    from torch.utils.flop_counter import FlopCounterMode

    if family == "llama":
        cfg = transformers.LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=100,
            use_cache=False,
        )
        cfg.architectures = ["LlamaForCausalLM"]
    else:
        cfg = transformers.GPT2Config(
            n_embd=64, n_layer=2, n_head=4, vocab_size=100, use_cache=False
        )
        cfg.architectures = ["GPT2LMHeadModel"]
    cfg.save_pretrained(tmp_path)
    r = paramscope.flops(tmp_path / "config.json", seq=16)
    assert "use_cache=True" in r.inputs
    assert any("use_cache=false" in n for n in r.notes)
    model_cls = getattr(transformers, cfg.architectures[0])
    with torch.device("meta"):
        model = model_cls(cfg).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 16, dtype=torch.long, device="meta"), use_cache=True)
    assert r.flops == counter.get_total_flops()


def _mixtral(k: int) -> Any:
    import transformers

    cfg = transformers.MixtralConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        num_local_experts=4,
        num_experts_per_tok=k,
    )
    with torch.device("meta"):
        return transformers.MixtralForCausalLM(cfg).eval()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_moe_experts_count_the_top_k_a_token_is_routed_to(k: int) -> None:
    """transformers' default grouped_mm experts cannot run without values; flops runs its
    batched_mm experts (and puts the model's own back). Oracle: the layer formula from the
    config, and each extra expert per token adding exactly one expert's MLP per token."""
    model = _mixtral(k)
    r = paramscope.flops(model, seq=16)
    assert model.get_experts_implementation() == {"": "grouped_mm"}
    assert any("batched_mm" in n for n in r.notes)
    s, d, f, layers, heads, kv, hd, vocab = 16, 64, 96, 2, 4, 2, 16, 100
    per_layer = (
        2 * s * (d * heads * hd + 2 * d * kv * hd + heads * hd * d)  # q, k, v, o
        + 4 * s * s * heads * hd  # torch's sdpa formula: QKᵀ and AV
        + 2 * s * d * 4  # router
        + 2 * s * k * 3 * d * f  # the k experts' gate, up and down
    )
    assert r.flops == layers * per_layer + 2 * s * d * vocab
    if k > 1:
        less = paramscope.flops(_mixtral(k - 1), seq=16)
        assert r.flops - less.flops == layers * 2 * s * 3 * d * f


def test_other_moe_families_run() -> None:
    import transformers
    from torch.utils.flop_counter import FlopCounterMode

    cfg = transformers.Qwen2MoeConfig(
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        num_experts=4,
        num_experts_per_tok=2,
    )
    with torch.device("meta"):
        model = transformers.Qwen2MoeForCausalLM(cfg).eval()
    r = paramscope.flops(model, seq=8)
    model.set_experts_implementation("batched_mm")
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 8, dtype=torch.long, device="meta"))
    assert r.flops == counter.get_total_flops() > 0
