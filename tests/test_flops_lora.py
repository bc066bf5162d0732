"""FLOPs of a LoRA run (issue 15): ``flops(target, lora=LoraSpec(...))`` and ``flops --lora``.

The oracle is peft itself: ``peft.get_peft_model(model, LoraConfig(...))`` run through
:func:`paramscope.flops` under torch's ``FlopCounterMode`` (on meta, or under fake tensors for
a model with real weights). The adapters paramscope runs must give the same totals, forward and
backward, the same op table and the same uncounted ops.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import paramscope
from paramscope import ArgumentError, LoraSpec
from paramscope.counting._flops_lora import lora_adapters

peft = pytest.importorskip("peft")  # the test extra installs it; never skipped there
transformers = pytest.importorskip("transformers")


def _tiny_llama(device: str = "meta") -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    with torch.device(device):
        return transformers.LlamaForCausalLM(cfg)


def _same(ours: Any, theirs: Any) -> None:
    assert ours.flops == theirs.flops
    assert ours.forward_flops == theirs.forward_flops
    assert ours.backward_flops == theirs.backward_flops
    assert ours.by_op == theirs.by_op
    assert ours.uncounted == theirs.uncounted


@pytest.mark.parametrize("backward", [False, True])
def test_llama_matches_peft_on_meta(backward: bool) -> None:
    spec = LoraSpec(8, 16, ["q_proj", "v_proj"])
    ref = peft.get_peft_model(
        _tiny_llama(), peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    base = _tiny_llama()
    ours = paramscope.flops(base, batch=2, seq=16, backward=backward, lora=spec)
    _same(ours, paramscope.flops(ref, batch=2, seq=16, backward=backward))
    plain = paramscope.flops(base, batch=2, seq=16)
    # forward: 2·r·(in + out) per token per adapted Linear; q 64→64, v 64→32, 2 layers
    per_token = 2 * (2 * 8 * (64 + 64) + 2 * 8 * (64 + 32))
    assert ours.details["lora"]["adapter_forward_flops"] == 32 * per_token
    assert ours.forward_flops - plain.forward_flops == 32 * per_token
    assert ours.details["lora"]["modules"] == 4
    # the adapters' FLOPs are in the adapted module's row
    nodes = {}
    stack = [ours.root]
    while stack:
        node = stack.pop()
        nodes[node.path] = node
        stack.extend(node.children)
    q_proj = nodes["model.layers.0.self_attn.q_proj"]
    assert q_proj.forward_flops == 32 * (2 * 64 * 64 + 2 * 8 * (64 + 64))
    assert any("LoRA r=8" in n for n in ours.notes)
    # the model is as it was: no wrapped forward, parameters trainable again
    assert all(p.requires_grad for p in base.parameters())
    assert all("forward" not in m.__dict__ for m in base.modules())


def test_backward_is_a_lora_step_not_a_full_one() -> None:
    """The frozen base has no weight gradients: the LoRA step costs less than the full one."""
    spec = LoraSpec(4, targets=["q_proj", "k_proj", "v_proj", "o_proj"])
    full = paramscope.flops(_tiny_llama(), seq=32, backward=True)
    lora = paramscope.flops(_tiny_llama(), seq=32, backward=True, lora=spec)
    assert lora.backward_flops < full.backward_flops
    assert "no weight gradient for the base" in " ".join(lora.notes)


def test_gpt2_conv1d_matches_peft() -> None:
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=50)
    with torch.device("meta"):
        base = transformers.GPT2LMHeadModel(cfg)
        ref = peft.get_peft_model(
            transformers.GPT2LMHeadModel(cfg),
            peft.LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True),
        )
    ours = paramscope.flops(base, seq=8, backward=True, lora=LoraSpec(4, targets=["c_attn"]))
    _same(ours, paramscope.flops(ref, seq=8, backward=True))
    assert ours.details["lora"]["by_type"] == {"Conv1D": 2}


class _Mixed(torch.nn.Module):
    """An embedding, a grouped conv and a linear, with real (CPU) weights: the fake path."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.conv = torch.nn.Conv1d(8, 16, 3, stride=2, padding=1, groups=2)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids).transpose(1, 2)
        return self.head(self.conv(h).transpose(1, 2))


@pytest.mark.parametrize("backward", [False, True])
def test_embedding_conv_linear_match_peft_under_fake_tensors(backward: bool) -> None:
    torch.manual_seed(0)
    ref = peft.get_peft_model(
        _Mixed(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["emb", "conv", "head"])
    )
    base = _Mixed()
    ours = paramscope.flops(
        base, batch=3, seq=10, backward=backward, lora=LoraSpec(4, 8, ["emb", "conv", "head"])
    )
    _same(ours, paramscope.flops(ref, batch=3, seq=10, backward=backward))
    assert ours.details["lora"]["by_type"] == {"Embedding": 1, "Conv1d": 1, "Linear": 1}
    plain = paramscope.flops(base, batch=3, seq=10)
    assert ours.forward_flops - plain.forward_flops == ours.details["lora"]["adapter_forward_flops"]
    assert base.conv.weight.device.type == "cpu"  # nothing moved, nothing allocated on it


def test_errors_name_the_problem() -> None:
    with pytest.raises(ArgumentError, match="no module of LlamaForCausalLM matches"):
        paramscope.flops(_tiny_llama(), seq=4, lora=LoraSpec(4, targets=["nope"]))
    with pytest.raises(ArgumentError, match=r"'model\.layers\.0\.self_attn' is a LlamaAttention"):
        paramscope.flops(_tiny_llama(), seq=4, lora=LoraSpec(4, targets=r".*layers\.0\.self_attn"))
    with pytest.raises(ArgumentError, match="needs a measured count"):
        paramscope.flops("zoo:llama-2-7b", seq=4, analytic=True, lora=LoraSpec(4))
    m = _Mixed()
    with pytest.raises(ArgumentError, match="groups=2"):
        paramscope.flops(m, seq=4, lora=LoraSpec(3, targets=["conv"]))
    # a failing run leaves the model as it was
    with pytest.raises(paramscope.ShapeMismatchError):
        paramscope.flops(m, input_shape=(1, 7, 7), lora=LoraSpec(4, targets=["head"]))
    assert all(p.requires_grad for p in m.parameters())
    assert "forward" not in m.head.__dict__


def test_context_manager_restores_an_instance_forward() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(4, 3))
    own = m[0].forward
    m[0].forward = own  # an instance attribute, as accelerate's hooks set
    with lora_adapters(m, LoraSpec(2, targets=["0"])):
        assert m[0].forward is not own
    assert m[0].forward is own


def test_cli_lora(cli) -> None:
    code, out, err = cli(
        "flops", "zoo:gpt2", "--seq", "8", "--lora", "r=8,alpha=16,targets=c_attn", "--json"
    )
    assert code == 0, err
    d = json.loads(out)
    lora = d["details"]["lora"]
    assert (lora["r"], lora["alpha"], lora["targets"], lora["modules"]) == (8, 16.0, ["c_attn"], 12)
    # GPT-2 small: c_attn is 768 → 2304; 8 tokens, 12 layers
    assert lora["adapter_forward_flops"] == 12 * 8 * 2 * 8 * (768 + 2304)
    plain = json.loads(cli("flops", "zoo:gpt2", "--seq", "8", "--json").out)
    assert d["forward_flops"] - plain["forward_flops"] == lora["adapter_forward_flops"]
    text = cli("flops", "zoo:gpt2", "--seq", "8", "--lora", "r=8,targets=c_attn").out
    assert "LoRA r=8" in text
    code, _, err = cli("flops", "zoo:gpt2", "--seq", "8", "--lora", "r=8,targets=nope")
    assert code == 2 and "no module of" in err
