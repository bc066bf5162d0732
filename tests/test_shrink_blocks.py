"""Removing whole attention heads (GQA groups whole) and whole layers: exact counts, models
that run, and zero units that leave the output unchanged.

Every count is checked three ways: the formula written next to it, the report, and
``sum(p.numel())`` of the shrunk model.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from _helpers import raises_exactly, small_gpt2
from paramscope._errors import ArgumentError, TargetError
from paramscope.building import zoo
from paramscope.compress._shrink_blocks import _mha_class, shrink_heads, shrink_layers
from paramscope.compress._shrink_report import ShrinkReport

HIDDEN, HEADS, KV, HD, INTER, VOCAB = 32, 4, 2, 8, 64, 50
#: one GQA unit: a KV head with its HEADS // KV = 2 query heads, in one layer:
#: q rows hidden*(2*hd) + k, v rows 2*hidden*hd + o columns 2*hd*hidden
UNIT = HIDDEN * (2 * HD) + 2 * HIDDEN * HD + 2 * HD * HIDDEN
#: one Llama decoder layer: q, o (hidden x heads*hd), k, v (hidden x kv*hd), gate/up/down, 2 norms
BLOCK = 2 * HIDDEN * HEADS * HD + 2 * HIDDEN * KV * HD + 3 * HIDDEN * INTER + 2 * HIDDEN


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def report(unit: str, amount: float | None = None, target: int | None = None) -> ShrinkReport:
    return ShrinkReport(unit, amount, target, "l1")


def zoo_llama(layers: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.build(
        "llama-3-8b",
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV,
        head_dim=HD,
        vocab_size=VOCAB,
    ).eval()


def hf_llama(layers: int = 2, seed: int = 0) -> nn.Module:
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV,
        head_dim=HD,
        vocab_size=VOCAB,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def small_vit(layers: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = zoo.build(
        "vit-b-16",
        image_size=32,
        patch_size=16,
        hidden_dim=16,
        num_heads=4,
        mlp_dim=32,
        num_layers=layers,
        num_classes=10,
    ).eval()
    nn.init.normal_(m.heads.head.weight)  # torchvision zeroes the classifier: outputs would be 0
    return m


def ids() -> torch.Tensor:
    return torch.arange(12).reshape(2, 6) % VOCAB


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out


def zero_llama_unit(model: nn.Module, unit: int) -> None:
    """Zero every weight of GQA unit ``unit`` (q, k, v rows and o columns) in every layer."""
    g = HEADS // KV
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "q_proj"):
                mod.q_proj.weight[unit * g * HD : (unit + 1) * g * HD] = 0
                mod.k_proj.weight[unit * HD : (unit + 1) * HD] = 0
                mod.v_proj.weight[unit * HD : (unit + 1) * HD] = 0
                mod.o_proj.weight[:, unit * g * HD : (unit + 1) * g * HD] = 0


# --------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("build", [zoo_llama, hf_llama], ids=["zoo", "transformers"])
def test_llama_gqa_group_removed_whole(build):
    model = build()
    before = count(model)
    r = report("heads", 0.5)
    out = shrink_heads(model, 0.5, target_params=None, importance="l1", select=None, report=r)
    # 2 layers x one unit: 2 * (32*16 + 2*32*8 + 16*32) = 2 * 1536
    assert UNIT == 1536
    assert before - count(out) == 2 * UNIT == 3072
    assert [g["params_removed"] for g in r.groups] == [UNIT, UNIT]
    assert [(g["kept"], g["removed"], g["total"]) for g in r.groups] == [(1, 1, 2)] * 2
    assert [g["heads_removed"] for g in r.groups] == [2, 2]
    attn = out.model.layers[0].self_attn
    assert tuple(attn.q_proj.weight.shape) == (2 * HD, HIDDEN)
    assert tuple(attn.k_proj.weight.shape) == (HD, HIDDEN)
    assert tuple(attn.o_proj.weight.shape) == (HIDDEN, 2 * HD)
    assert out.config.num_attention_heads == 2 and out.config.num_key_value_heads == 1
    assert out.config.head_dim == HD
    assert logits(out, ids()).shape == (2, 6, VOCAB)
    members = r.groups[0]["members"]
    assert len(members) == 2 * HD + HD + HD + 2 * HD  # q rows, k rows, v rows, o columns
    u = r.groups[0]["units"][0]
    assert f"model.layers.0.self_attn.o_proj.weight[:, {u * 2 * HD}]" in members
    assert f"model.layers.0.self_attn.k_proj.weight[{u * HD}]" in members


def test_zoo_llama_attributes_follow():
    model = shrink_heads(zoo_llama(), 0.5, report=report("heads", 0.5))
    attn = model.model.layers[1].self_attn
    assert (attn.num_heads, attn.num_kv_heads, attn.head_dim) == (2, 1, HD)
    assert model.model.rotary_emb.config is model.config  # the frozen config replaced everywhere


def test_hf_llama_group_ratio_and_cache():
    model = shrink_heads(hf_llama(), 0.5, report=report("heads", 0.5))
    attn = model.model.layers[0].self_attn
    assert attn.num_key_value_groups == HEADS // KV  # a whole group goes: the ratio stays
    assert model.config._attn_implementation == "sdpa"  # the config was changed in place
    with torch.no_grad():  # the KV cache path runs too
        gen = model.generate(ids()[:1], max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 9)


@pytest.mark.parametrize("build", [zoo_llama, hf_llama], ids=["zoo", "transformers"])
def test_zero_group_removed_leaves_output(build):
    model = build()
    zero_llama_unit(model, 1)
    ref = logits(model, ids())
    r = report("heads", 0.5)
    out = shrink_heads(model, 0.5, report=r)
    assert [g["units"] for g in r.groups] == [[1], [1]]  # the zero unit has l1 norm 0
    torch.testing.assert_close(logits(out, ids()), ref, rtol=1e-5, atol=1e-6)


def test_heads_callable_importance_and_select():
    calls = []

    def imp(name, index, tensors):
        calls.append((name, index, sorted(k.rsplit(".", 2)[-2] for k in tensors)))
        return -index  # the last unit is the least important

    r = report("heads", 0.5)
    model = shrink_heads(zoo_llama(), 0.5, importance=imp, select="model.layers.0.*", report=r)
    assert [g["name"] for g in r.groups] == ["model.layers.0.self_attn"]
    assert r.groups[0]["units"] == [1]
    assert calls[0] == ("model.layers.0.self_attn", 0, ["k_proj", "o_proj", "q_proj", "v_proj"])
    assert len(calls) == 2  # layer 1 is not selected
    assert model.model.layers[1].self_attn.num_heads == HEADS
    # layers now differ: the config is left alone and a note says so
    assert model.config.num_attention_heads == HEADS
    assert any("differ in their head counts" in n for n in r.notes)


def test_heads_target_params():
    model = zoo_llama()
    before = count(model)
    target = before - UNIT  # one unit of one layer is enough
    r = report("heads", None, target)
    out = shrink_heads(model, None, target_params=target, report=r)
    assert count(out) == before - UNIT <= target
    assert sum(g["removed"] for g in r.groups) == 1


def test_heads_target_unreachable_keeps_one_unit():
    r = report("heads", None, 0)
    out = shrink_heads(zoo_llama(), None, target_params=0, report=r)
    assert count(out) == count(zoo_llama()) - 2 * UNIT  # one unit per layer stays
    assert any("not reached" in n for n in r.notes)


def test_vit_heads_replaced_module():
    model = small_vit()
    before = count(model)
    x = torch.randn(2, 3, 32, 32)
    r = report("heads", 0.5)
    out = shrink_heads(model, 0.5, report=r)
    # per layer 2 of 4 heads (head_dim 4) go: in_proj rows 3*2*4 = 24 of width 16 (384),
    # in_proj_bias 24, out_proj columns 2*4 = 8 of height 16 (128): 536
    per_layer = 3 * 2 * 4 * 16 + 3 * 2 * 4 + 2 * 4 * 16
    assert per_layer == 536
    assert before - count(out) == 2 * per_layer
    attn = out.encoder.layers.encoder_layer_0.self_attention
    assert type(attn).__name__ == "HeadPrunedMultiheadAttention"
    assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (2, 4, 16)
    assert sorted(n for n, _ in attn.named_parameters()) == [
        "in_proj_bias",
        "in_proj_weight",
        "out_proj.bias",
        "out_proj.weight",
    ]
    assert logits(out, x).shape == (2, 10)
    assert any("HeadPrunedMultiheadAttention" in n for n in r.notes)
    # a shrunk model pickles and loads back (the class is found by its module)
    again = pickle.loads(pickle.dumps(out))
    torch.testing.assert_close(logits(again, x), logits(out, x))


def test_vit_zero_heads_leave_output():
    model = small_vit()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.MultiheadAttention):
                for part in range(3):  # q, k, v rows of heads 1 and 2 (head_dim 4)
                    mod.in_proj_weight[part * 16 + 4 : part * 16 + 12] = 0
                    mod.in_proj_bias[part * 16 + 4 : part * 16 + 12] = 0
                mod.out_proj.weight[:, 4:12] = 0
    x = torch.randn(2, 3, 32, 32)
    ref = logits(model, x)
    r = report("heads", 0.5)
    out = shrink_heads(model, 0.5, report=r)
    assert [g["units"] for g in r.groups] == [[1, 2], [1, 2]]
    torch.testing.assert_close(logits(out, x), ref, rtol=1e-5, atol=1e-5)


def test_pruned_mha_matches_multiheadattention_with_masks():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        twin = _mha_class().from_mha(copy.deepcopy(mha), [0, 1, 2, 3]).eval()
        q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
        pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
        causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
        per_head = torch.randn(2 * 4, 5, 5)
        for kwargs in (
            {},
            {"key_padding_mask": pad},
            {"attn_mask": causal},
            {"attn_mask": per_head, "average_attn_weights": False},
        ):
            a, wa = mha(q, q, q, **kwargs)
            b, wb = twin(q, q, q, **kwargs)
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(wb, wa, rtol=1e-5, atol=1e-5)
    # a per-head mask is narrowed to the heads kept
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        for part in range(3):
            mha.in_proj_weight[part * 16 + 4 : part * 16 + 8] = 0
            mha.in_proj_bias[part * 16 + 4 : part * 16 + 8] = 0
        mha.out_proj.weight[:, 4:8] = 0
    q = torch.randn(2, 5, 16)
    mask = torch.randn(2 * 4, 5, 5)
    ref, _ = mha(q, q, q, attn_mask=mask, need_weights=False)
    r = report("heads", 0.25)
    small = shrink_heads(copy.deepcopy(mha), 0.25, report=r)
    assert small.head_index == (0, 2, 3)
    out, none = small(q, q, q, attn_mask=mask, need_weights=False)
    assert none is None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_unhandled_attention_refused_with_reason():
    model = small_gpt2()
    before = count(model)
    r = report("heads", 0.5)
    out = shrink_heads(model, 0.5, report=r)
    assert count(out) == before and not r.groups
    assert [x["name"] for x in r.refused] == ["transformer.h.0.attn", "transformer.h.1.attn"]
    assert all("no head handler for CausalSelfAttention" in x["reason"] for x in r.refused)


def test_heads_errors():
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    raises_exactly(
        TargetError, lambda: shrink_heads(mlp, 0.5, report=report("heads")), "no attention"
    )
    raises_exactly(
        ArgumentError,
        lambda: shrink_heads(zoo_llama(), 0.5, target_params=10, report=report("heads")),
        "exactly one",
    )
    raises_exactly(
        ArgumentError, lambda: shrink_heads(zoo_llama(), 1.0, report=report("heads")), "amount"
    )
    raises_exactly(
        ArgumentError,
        lambda: shrink_heads(zoo_llama(), 0.5, select="nothing.*", report=report("heads")),
        "no attention module matches",
    )


# --------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("build", [zoo_llama, hf_llama], ids=["zoo", "transformers"])
@pytest.mark.parametrize("examples", [False, True])
def test_llama_one_of_four_layers(build, examples):
    model = build(layers=4)
    before = count(model)
    x = ids()
    # one decoder layer: q, o 32*32 each, k, v 32*16 each, gate/up/down 32*64 each, 2 norms of 32
    assert BLOCK == 9280
    target = before - BLOCK
    r = report("layers", None, target)
    out = shrink_layers(
        model, None, target_params=target, report=r, example_inputs=x if examples else None
    )
    assert count(out) == before - BLOCK == target
    assert len(out.model.layers) == 3
    assert r.groups[0]["name"] == "model.layers"
    assert (r.groups[0]["removed"], r.groups[0]["params_removed"]) == (1, BLOCK)
    assert out.config.num_hidden_layers == 3
    assert logits(out, x).shape == (2, 6, VOCAB)
    how = "relative change" if examples else "l1 norm of its parameters"
    assert any(how in n for n in r.notes), r.notes
    assert list(out.model.layers._modules) == ["0", "1", "2"]


def test_hf_llama_layer_idx_renumbered_and_generates():
    r = report("layers", 0.5)
    out = shrink_layers(hf_llama(layers=4), 0.5, report=r)
    gone = r.groups[0]["units"]
    assert len(gone) == 2
    assert [layer.self_attn.layer_idx for layer in out.model.layers] == [0, 1]
    with torch.no_grad():
        gen = out.generate(ids()[:1], max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 9)


def test_zero_block_is_removed_and_output_unchanged():
    model = zoo_llama(layers=4)
    with torch.no_grad():  # block 2 adds nothing to the residual stream
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    x = ids()
    ref = logits(model, x)
    r = report("layers", 0.25)
    out = shrink_layers(model, 0.25, report=r, example_inputs=x)
    assert r.groups[0]["units"] == [2]
    torch.testing.assert_close(logits(out, x), ref, rtol=1e-5, atol=1e-6)


def test_vit_layers_renumbered_and_config():
    model = small_vit(layers=4)
    before = count(model)
    # a block: ln_1, ln_2 (2*16 each), in_proj 3*16*16 + 48, out_proj 16*16 + 16,
    # mlp 16*32 + 32 + 32*16 + 16
    block = 2 * 2 * 16 + 3 * 16 * 16 + 48 + 16 * 16 + 16 + 16 * 32 + 32 + 32 * 16 + 16
    assert block == 2224
    r = report("layers", 0.5)
    out = shrink_layers(model, 0.5, report=r)
    assert before - count(out) == 2 * block
    assert list(out.encoder.layers._modules) == ["encoder_layer_0", "encoder_layer_1"]
    assert out.config.num_layers == 2
    assert logits(out, torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_resnet_identical_stack_and_refused_stack():
    torch.manual_seed(0)
    model = zoo.build("resnet18").eval()
    before = count(model)
    buffers = sum(b.numel() for b in model.buffers())
    r = report("layers", 0.5)
    out = shrink_layers(model, 0.5, select=["layer1", "layer2"], report=r)
    # a BasicBlock(64): two 3x3 convs 64*64*9 and two BatchNorms (weight + bias 2*64);
    # buffers: two BatchNorms' running mean and var (2*64) and num_batches_tracked (1)
    assert before - count(out) == 2 * 64 * 64 * 9 + 2 * 2 * 64 == 73_984
    assert buffers - sum(b.numel() for b in out.buffers()) == 2 * (2 * 64 + 1)
    assert r.groups[0]["buffers_removed"] == 258
    assert [x["name"] for x in r.refused] == ["layer2"]
    assert "layer2.1 has other parameters than layer2.0" in r.refused[0]["reason"]
    assert out(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_layers_block_select_and_callable():
    seen = []

    def imp(name, index, tensors):
        seen.append((name, index, len(tensors)))
        return float(index)

    r = report("layers", 0.25)
    out = shrink_layers(
        zoo_llama(layers=4), 0.25, importance=imp, select="model.layers.3", report=r
    )
    assert r.groups[0]["units"] == [3]  # only block 3 may go, whatever it scores
    assert seen[0] == ("model.layers", 0, 9)  # 4 attention + 3 mlp weights + 2 norms
    assert len(out.model.layers) == 3


def test_layers_refused_when_not_iterated():
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4)) for _ in range(3))

        def forward(self, x):
            return self.blocks[0](x) + self.blocks[2](x)

    r = report("layers", 0.5)
    shrink_layers(Picky(), 0.5, report=r)
    assert r.refused[0]["name"] == "blocks" and "block by block" in r.refused[0]["reason"]
    r = report("layers", 0.5)
    shrink_layers(Picky(), 0.5, report=r, example_inputs=torch.randn(2, 4))
    assert "ran in the order [0, 2]" in r.refused[0]["reason"]
    assert not r.groups


def test_layers_errors():
    raises_exactly(
        TargetError,
        lambda: shrink_layers(nn.Linear(2, 2), 0.5, report=report("layers")),
        "no stack of identical blocks",
    )
    raises_exactly(
        ArgumentError,
        lambda: shrink_layers(zoo_llama(), 0.5, select="encoder", report=report("layers")),
        "no stack or block matches",
    )
