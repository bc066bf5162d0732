"""Reused block FLOPs (counting/_flops_reuse.py): a repeated block identical to one already
measured is counted with that measurement instead of running again. The oracle is
``paramscope.flops(reuse=False)`` — torch's flop counter over every block — whose whole report
(totals, per-module tree, op tables with call counts, uncounted ops) must be equal."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import paramscope
from paramscope.building import zoo
from paramscope.counting._flops_reuse import BlockCache

SAME = ("flops", "macs", "forward_flops", "tree", "by_op", "uncounted", "no_arithmetic", "inputs")


def _both(model: Any, **kw: Any) -> tuple[Any, Any]:
    full = paramscope.flops(model, reuse=False, **kw)
    fast = paramscope.flops(model, **kw)
    a, b = full.to_dict(), fast.to_dict()
    for key in SAME:
        assert a[key] == b[key], key
    assert full.details["reused_blocks"] == 0
    return full, fast


def _meta(name: str, **cfg: Any) -> nn.Module:
    with torch.device("meta"):
        return zoo.build(name, **cfg)


@pytest.mark.parametrize(
    ("name", "cfg", "kw", "reused"),
    [
        ("llama-2-7b", {}, {"seq": 64}, 30),  # 32 blocks: 0 measured, 1 measured and equal
        ("gpt2", {}, {"seq": 32}, 10),
        ("bert-base", {}, {"seq": 32}, 10),
        ("vit-b-16", {}, {"input_shape": (1, 3, 224, 224)}, 10),
        ("resnet50", {}, {"input_shape": (1, 3, 224, 224)}, None),
    ],
)
def test_zoo_models_equal_a_full_run(name: str, cfg: dict[str, Any], kw: dict, reused) -> None:
    _, fast = _both(_meta(name, **cfg), **kw)
    if reused is not None:
        assert fast.details["reused_blocks"] == reused
        assert any(n.startswith("repeated blocks:") for n in fast.notes)


def _hf(arch: str, cfg: Any) -> nn.Module:
    import transformers as tf

    with torch.device("meta"):
        return getattr(tf, arch)(cfg).eval()


def _hf_cases() -> dict[str, Any]:
    import transformers as tf

    base = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return {
        "BertModel": tf.BertConfig(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            vocab_size=100,
        ),
        "GPT2LMHeadModel": tf.GPT2Config(n_embd=64, n_layer=4, n_head=4, vocab_size=100),
        "LlamaForCausalLM": tf.LlamaConfig(**base),
        # per-layer choices made in __init__ from the config: MoE every other layer and a
        # dense one by index, dense first layers, sliding / full attention, RoPE on or off
        "Qwen2MoeForCausalLM": tf.Qwen2MoeConfig(
            **base,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=64,
            num_experts=4,
            num_experts_per_tok=2,
            decoder_sparse_step=2,
            mlp_only_layers=[1],
        ),
        "DeepseekV3ForCausalLM": tf.DeepseekV3Config(
            **{**base, "num_key_value_heads": 4},
            moe_intermediate_size=32,
            n_routed_experts=4,
            num_experts_per_tok=2,
            first_k_dense_replace=2,
            q_lora_rank=16,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=8,
            n_group=1,
            topk_group=1,
        ),
        "Gemma3ForCausalLM": tf.Gemma3TextConfig(**base, head_dim=16, sliding_window=4),
        "Llama4ForCausalLM": tf.Llama4TextConfig(
            **base,
            head_dim=16,
            intermediate_size_mlp=128,
            num_local_experts=4,
            num_experts_per_tok=1,
            interleave_moe_layer_step=2,
            no_rope_layers=[1, 1, 1, 0, 1, 1],
            attention_chunk_size=4,
        ),
    }


@pytest.mark.parametrize("arch", list(_hf_cases()))
def test_transformers_models_equal_a_full_run(arch: str) -> None:
    """transformers' blocks keep their index in layer_idx (left out of their key) and get a
    KV cache; what differs per layer is set in __init__ and is in the key."""
    _, fast = _both(_hf(arch, _hf_cases()[arch]), seq=12)
    assert fast.details["reused_blocks"] >= 1


@settings(max_examples=12, deadline=None)
@given(
    hidden=st.sampled_from([64, 128, 192]),
    layers=st.integers(1, 6),
    kv=st.sampled_from([1, 2]),
    seq=st.integers(1, 40),
    batch=st.integers(1, 3),
)
def test_generated_llama_configs(hidden: int, layers: int, kv: int, seq: int, batch: int) -> None:
    heads = hidden // 32
    model = _meta(
        "llama-2-7b",
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv if heads % kv == 0 else 1,
        intermediate_size=3 * hidden,
        vocab_size=97,
    )
    _, fast = _both(model, seq=seq, batch=batch)
    assert fast.details["reused_blocks"] == max(0, layers - 2)


class _Block(nn.Module):
    """A block that does an extra matmul when ``extra(self)`` says so."""

    def __init__(self, d: int, extra: Any) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(d, d))
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y @ y.transpose(-1, -2) @ y if self.extra(self) else y


def _stack(blocks: list[nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(*blocks)


def test_an_index_attribute_keeps_blocks_apart() -> None:
    class Indexed(_Block):
        def __init__(self, d: int, i: int) -> None:
            super().__init__(d, lambda b: b.layer_idx == 3)
            self.layer_idx = i

    with torch.device("meta"):
        model = _stack([Indexed(8, i) for i in range(6)])
    full, fast = _both(model, input_shape=(2, 5, 8))
    assert fast.details["reused_blocks"] == 0
    assert full.flops > paramscope.flops(model[:1], input_shape=(2, 5, 8)).flops * 6


def test_a_forward_that_differs_between_positions_is_never_reused_across_them() -> None:
    calls = {"n": 0}

    def every_other(_: nn.Module) -> bool:  # hidden state the key cannot see
        calls["n"] += 1
        return calls["n"] % 2 == 0

    with torch.device("meta"):
        model = _stack([_Block(8, every_other) for _ in range(6)])
    calls["n"] = 0
    full = paramscope.flops(model, input_shape=(1, 4, 8), reuse=False)
    calls["n"] = 0
    fast = paramscope.flops(model, input_shape=(1, 4, 8))
    assert fast.flops == full.flops and fast.to_dict()["tree"] == full.to_dict()["tree"]
    assert fast.details["reused_blocks"] == 0


def test_different_input_shapes_are_measured_apart() -> None:
    # ResNet's first block of a stage widens; the rest repeat: only equal inputs reuse
    _both(_meta("resnet18"), input_shape=(2, 3, 64, 64))


def test_a_block_with_its_own_hook_always_runs() -> None:
    with torch.device("meta"):
        model = _stack([_Block(8, lambda b: False) for _ in range(5)])
    seen: list[int] = []
    for i, block in enumerate(model):
        block.register_forward_hook(lambda m, a, o, i=i: seen.append(i))
    _, fast = _both(model, input_shape=(3, 8))
    assert seen == list(range(5)) * 2
    assert fast.details["reused_blocks"] == 0


def test_the_forwards_are_put_back() -> None:
    model = _meta("gpt2", n_layer=4)
    paramscope.flops(model, seq=8)
    assert all("forward" not in vars(b) for b in model.transformer.h)


def test_a_shared_cache_carries_blocks_across_models() -> None:
    cache = BlockCache()
    small = _meta(
        "llama-2-7b",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=50,
    )
    deep = _meta(
        "llama-2-7b",
        hidden_size=64,
        num_hidden_layers=7,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=50,
    )
    first = paramscope.flops(small, seq=8, _cache=cache)
    assert first.details["reused_blocks"] == 0 and len(cache) == 1
    second = paramscope.flops(deep, seq=8, _cache=cache)
    assert second.details["reused_blocks"] == 7  # measured and verified in the first model
    assert second.to_dict()["tree"] == paramscope.flops(deep, seq=8, reuse=False).to_dict()["tree"]


@pytest.mark.parametrize("name", ["gpt2", "vit-b-16"])
def test_real_weights_reuse_under_fake_tensors(name: str) -> None:
    """A model with real weights runs under fake tensors; the kept outputs are made as fake
    tensors there, and their allocations are not counted as the block's ops."""
    torch.manual_seed(0)
    model = zoo.build(name, **({"n_layer": 6} if name == "gpt2" else {}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw: dict[str, Any] = {"seq": 16} if name == "gpt2" else {"input_shape": (1, 3, 224, 224)}
    _, fast = _both(model, **kw)
    assert fast.details["reused_blocks"] >= 4
    assert any("fake tensors" in n for n in fast.notes)
    for k, v in model.state_dict().items():  # nothing written
        assert torch.equal(v, before[k]), k


def test_backward_runs_every_block() -> None:
    meta = _meta("gpt2", n_layer=4)
    back = paramscope.flops(meta, seq=8, backward=True)
    assert back.details["reused_blocks"] == 0
    assert back.flops == paramscope.flops(meta, seq=8, backward=True, reuse=False).flops


def test_cli_no_reuse(cli: Any) -> None:
    import json

    a = json.loads(cli("flops", "zoo:gpt2", "--seq", "16", "--json").out)
    b = json.loads(cli("flops", "zoo:gpt2", "--seq", "16", "--json", "--no-reuse").out)
    assert a["details"]["reused_blocks"] == 10 and b["details"]["reused_blocks"] == 0
    for key in SAME:
        assert a[key] == b[key], key
