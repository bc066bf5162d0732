"""Removing attention heads from transformers' GPT-2, BERT (and its copies) and ViT.

transformers 5.x dropped ``PreTrainedModel.prune_heads``; two oracles stand in for it:

- :func:`hf_prune_heads`: the transformers 4.x ``prune_heads`` (``BertAttention.prune_heads``,
  ``GPT2Attention.prune_heads``, ``ViTAttention.prune_heads``) transcribed line by line onto
  transformers' own ``prune_linear_layer`` and ``Conv1D``. The same heads removed must give the
  same parameter count and the same outputs.
- masking: a head whose value rows are zero adds nothing to the attention output, so the
  unpruned model run by transformers' own forward with those value rows zeroed must give the
  pruned model's outputs.

Counts are also checked against the formula written next to them, the report, and
``sum(p.numel())``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

import paramscope
from paramscope.compress._shrink_blocks import shrink_heads
from paramscope.compress._shrink_report import ShrinkReport

E, H, HD, VOCAB, SEQ = 32, 4, 8, 60, 7


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random biases and LayerNorm weights too (transformers zeroes some): every slice counts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def gpt2(layers: int = 2, embd: int = E, heads: int = H, **kw) -> nn.Module:
    import transformers

    cfg = transformers.GPT2Config(
        n_layer=layers, n_embd=embd, n_head=heads, vocab_size=VOCAB, n_positions=16, **kw
    )
    return randomize(transformers.GPT2LMHeadModel(cfg))


def bert(layers: int = 2, hidden: int = E, heads: int = H, cls: str = "Bert", **kw) -> nn.Module:
    import transformers

    cfg = getattr(transformers, f"{cls}Config")(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        vocab_size=VOCAB,
        max_position_embeddings=20,
        **kw,
    )
    return randomize(getattr(transformers, f"{cls}Model")(cfg))


def vit(layers: int = 2, cls: str = "ViT") -> nn.Module:
    import transformers

    cfg = getattr(transformers, f"{cls}Config")(
        hidden_size=E,
        num_hidden_layers=layers,
        num_attention_heads=H,
        intermediate_size=2 * E,
        image_size=16,
        patch_size=8,
    )
    return randomize(getattr(transformers, f"{cls}Model")(cfg))


def imagegpt(layers: int = 2) -> nn.Module:
    import transformers

    cfg = transformers.ImageGPTConfig(
        n_layer=layers, n_embd=E, n_head=H, vocab_size=VOCAB, n_positions=16
    )
    return randomize(transformers.ImageGPTModel(cfg))


def tokens() -> torch.Tensor:
    return torch.arange(2 * SEQ).reshape(2, SEQ) % VOCAB


def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def out(model: nn.Module, x: torch.Tensor, **kw) -> torch.Tensor:
    with torch.no_grad():
        if x.dim() == 4:
            return model(pixel_values=x, **kw)[0]
        return model(x, **kw)[0]


# ------------------------------------------------------------------------------- oracles
def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention module of every layer, in layer order (what ``prune_heads`` indexes)."""
    found = []
    for name, mod in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("attn", "attention") and any(
            hasattr(mod, a) for a in ("c_attn", "q_proj", "output")
        ):
            found.append(mod)
    return found


def find_pruneable(heads: set[int], n_heads: int, head_size: int) -> torch.Tensor:
    """transformers 4.x ``find_pruneable_heads_and_indices`` (nothing pruned before)."""
    mask = torch.ones(n_heads, head_size)
    for h in heads:
        mask[h] = 0
    return torch.arange(n_heads * head_size)[mask.view(-1).eq(1)].long()


def prune_conv1d_layer(layer: nn.Module, index: torch.Tensor, dim: int) -> nn.Module:
    """transformers 4.x ``pytorch_utils.prune_conv1d_layer`` on transformers' own Conv1D."""
    from transformers.pytorch_utils import Conv1D

    w = layer.weight.index_select(dim, index).clone().detach()
    b = layer.bias.clone().detach() if dim == 0 else layer.bias[index].clone().detach()
    size = list(layer.weight.size())
    size[dim] = len(index)
    new = Conv1D(size[1], size[0])
    with torch.no_grad():
        new.weight.copy_(w)
        new.bias.copy_(b)
    return new


def hf_prune_heads(model: nn.Module, heads_to_prune: dict[int, list[int]]) -> None:
    """transformers 4.x ``PreTrainedModel.prune_heads({layer: [heads]})``, per family."""
    from transformers.pytorch_utils import prune_linear_layer

    layers = attention_modules(model)
    for layer, heads in heads_to_prune.items():
        att = layers[layer]
        heads_set = set(heads)
        if hasattr(att, "c_attn"):  # GPT2Attention.prune_heads
            index = find_pruneable(heads_set, att.num_heads, att.head_dim)
            split = att.split_size
            index_attn = torch.cat([index, index + split, index + 2 * split])
            att.c_attn = prune_conv1d_layer(att.c_attn, index_attn, dim=1)
            att.c_proj = prune_conv1d_layer(att.c_proj, index, dim=0)
            att.split_size = (att.split_size // att.num_heads) * (att.num_heads - len(heads_set))
            att.num_heads = att.num_heads - len(heads_set)
        elif hasattr(att, "q_proj"):  # ViTAttention.prune_heads (its 5.x q/k/v/o names)
            index = find_pruneable(heads_set, att.num_attention_heads, att.head_dim)
            att.q_proj = prune_linear_layer(att.q_proj, index)
            att.k_proj = prune_linear_layer(att.k_proj, index)
            att.v_proj = prune_linear_layer(att.v_proj, index)
            att.o_proj = prune_linear_layer(att.o_proj, index, dim=1)
            att.num_attention_heads = att.num_attention_heads - len(heads_set)
        else:  # BertAttention.prune_heads
            s = att.self
            index = find_pruneable(heads_set, s.num_attention_heads, s.attention_head_size)
            s.query = prune_linear_layer(s.query, index)
            s.key = prune_linear_layer(s.key, index)
            s.value = prune_linear_layer(s.value, index)
            att.output.dense = prune_linear_layer(att.output.dense, index, dim=1)
            s.num_attention_heads = s.num_attention_heads - len(heads_set)
            s.all_head_size = s.attention_head_size * s.num_attention_heads
    model.eval()


def zero_values(model: nn.Module, heads_to_zero: dict[int, list[int]]) -> None:
    """Zero the value rows (and value bias) of the heads: their attention output is 0."""
    layers = attention_modules(model)
    with torch.no_grad():
        for layer, heads in heads_to_zero.items():
            att = layers[layer]
            for h in heads:
                if hasattr(att, "c_attn"):
                    hd, split = att.head_dim, att.split_size
                    v0 = 2 * split + h * hd
                    att.c_attn.weight[:, v0 : v0 + hd] = 0
                    att.c_attn.bias[v0 : v0 + hd] = 0
                else:
                    v = att.v_proj if hasattr(att, "v_proj") else att.self.value
                    hd = att.head_dim if hasattr(att, "v_proj") else att.self.attention_head_size
                    v.weight[h * hd : (h + 1) * hd] = 0
                    v.bias[h * hd : (h + 1) * hd] = 0


def forcing(heads: dict[int, list[int]]) -> Callable[[str, int, dict], float]:
    """An importance that is 0 for the given (layer, head) and 1 elsewhere."""

    def f(name: str, index: int, tensors: dict) -> float:
        layer = int(name.split(".")[-2])  # transformer.h.<i>.attn, encoder.layer.<i>.attention
        return 0.0 if index in heads.get(layer, []) else 1.0

    return f


def head_params(model: nn.Module, heads: dict[int, list[int]]) -> int:
    """Parameters of those heads: per head 3 * (E * hd + hd) + hd * E (q, k, v rows with their
    biases, output columns) in every family here, E and hd read off the model."""
    cfg = model.config
    e = cfg.hidden_size
    hd = e // cfg.num_attention_heads
    return sum(len(h) for h in heads.values()) * (3 * (e * hd + hd) + hd * e)


def shrink_these(model: nn.Module, heads: dict[int, list[int]], x: torch.Tensor):
    """paramscope.shrink removing exactly ``heads`` (a target of the formula's count)."""
    target = count(model) - head_params(model, heads)
    return paramscope.shrink(
        model, target_params=target, unit="heads", importance=forcing(heads), example_inputs=x
    )


FAMILIES = {
    "gpt2": (gpt2, tokens),
    "bert": (bert, tokens),
    "roberta": (lambda: bert(cls="Roberta"), tokens),
    "electra": (lambda: bert(cls="Electra"), tokens),
    "vit": (vit, pixels),
    "deit": (lambda: vit(cls="DeiT"), pixels),
    "imagegpt": (imagegpt, tokens),
}


# --------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("family", ["gpt2", "bert", "vit"])
def test_same_as_transformers_prune_heads(family):
    build, inputs = FAMILIES[family]
    x = inputs()
    model = build()
    heads = {0: [0, 2], 1: [3]}  # per-layer head counts differ afterwards
    ref = copy.deepcopy(model)
    hf_prune_heads(ref, heads)
    r = shrink_these(model, heads, x)
    assert [g["units"] for g in r.groups] == [[0, 2], [3]]
    assert [g["kept_units"] for g in r.groups] == [[1, 3], [0, 1, 2]]
    assert count(r.model) == count(ref) == r.params_after
    assert r.params_before - r.params_after == head_params(model, heads)
    for a, b in zip(r.model.state_dict().values(), ref.state_dict().values(), strict=True):
        assert a.shape == b.shape
    torch.testing.assert_close(out(r.model, x), out(ref, x), rtol=1e-5, atol=1e-5)
    assert count(model) == r.params_before  # the caller's model is not changed


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pruned_equals_zeroed_values(family):
    build, inputs = FAMILIES[family]
    x = inputs()
    model = build()
    heads = {0: [1], 1: [0, 3]}
    r = shrink_these(model, heads, x)
    assert r.params_after == count(r.model) == count(model) - head_params(model, heads)
    masked = copy.deepcopy(model)
    zero_values(masked, heads)
    torch.testing.assert_close(out(r.model, x), out(masked, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out(r.model, x), out(model, x), atol=1e-3)  # heads did matter


def test_gpt2_attributes_follow_and_generate():
    model = gpt2()
    r = paramscope.shrink(model, 0.25, unit="heads")
    for block in r.model.transformer.h:
        a = block.attn
        assert (a.num_heads, a.split_size, a.head_dim) == (H - 1, (H - 1) * HD, HD)
        assert (
            (a.c_attn.nf, a.c_attn.nx)
            == (3 * (H - 1) * HD, E)
            == tuple(a.c_attn.weight.shape)[::-1]
        )
        assert (a.c_proj.nf, a.c_proj.nx) == (E, (H - 1) * HD)
        assert a.embed_dim == E  # the residual width is unchanged
    assert r.model.config.n_head == H  # a config count cannot describe hd = E // n_head
    assert any("kept_units" in n for n in r.notes)
    with torch.no_grad():
        gen = r.model.generate(tokens()[:, :3], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert gen.shape == (2, 6)


def test_bert_one_head_of_768_exact_count():
    model = bert(layers=1, hidden=768, heads=12)
    r = ShrinkReport("heads", 0.1, None, "l1")
    shrink_heads(model, 0.1, report=r)  # floor(0.1 * 12) = 1 head
    assert r.groups[0]["params_removed"] == 3 * (768 * 64 + 64) + 64 * 768 == 196_800
    s = model.encoder.layer[0].attention.self
    assert (s.num_attention_heads, s.all_head_size, s.query.out_features) == (11, 704, 704)
    assert model.encoder.layer[0].attention.output.dense.in_features == 704
    assert out(model, tokens()).shape == (2, SEQ, 768)


def test_zero_heads_removed_leave_output_unchanged():
    for family in ("gpt2", "bert", "vit"):
        build, inputs = FAMILIES[family]
        x = inputs()
        model = build()
        with torch.no_grad():  # head 2 of every layer: all its weights zero
            for att in attention_modules(model):
                if hasattr(att, "c_attn"):
                    for part in range(3):
                        att.c_attn.weight[:, part * E + 2 * HD : part * E + 3 * HD] = 0
                        att.c_attn.bias[part * E + 2 * HD : part * E + 3 * HD] = 0
                    att.c_proj.weight[2 * HD : 3 * HD] = 0
                else:
                    q = att if hasattr(att, "q_proj") else att.self
                    lins = (
                        (q.q_proj, q.k_proj, q.v_proj)
                        if hasattr(att, "q_proj")
                        else (q.query, q.key, q.value)
                    )
                    for lin in lins:
                        lin.weight[2 * HD : 3 * HD] = 0
                        lin.bias[2 * HD : 3 * HD] = 0
                    o = att.o_proj if hasattr(att, "o_proj") else att.output.dense
                    o.weight[:, 2 * HD : 3 * HD] = 0
        r = paramscope.shrink(model, 0.25, unit="heads", example_inputs=x)
        assert [g["units"] for g in r.groups] == [[2], [2]], family
        torch.testing.assert_close(out(r.model, x), out(model, x), rtol=1e-5, atol=1e-5)
        assert r.deviation is not None and r.deviation["max_abs"] < 1e-5


def test_gpt2_cross_attention_pruned():
    model = gpt2(add_cross_attention=True)
    enc = torch.randn(2, 5, E, generator=torch.Generator().manual_seed(2))
    x = tokens()
    r = paramscope.shrink(model, 0.5, unit="heads", select="*crossattention")
    assert [g["name"] for g in r.groups] == [f"transformer.h.{i}.crossattention" for i in (0, 1)]
    # k, v columns of c_attn (2 * (E*hd + hd)), q_attn columns (E*hd + hd), c_proj rows (hd*E)
    assert r.params_before - r.params_after == 2 * 2 * (3 * (E * HD + HD) + HD * E)
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for block, g in zip(masked.transformer.h, r.groups, strict=True):
            for h in g["units"]:  # the value half of the cross c_attn (k | v)
                block.crossattention.c_attn.weight[:, E + h * HD : E + (h + 1) * HD] = 0
                block.crossattention.c_attn.bias[E + h * HD : E + (h + 1) * HD] = 0
    torch.testing.assert_close(
        out(r.model, x, encoder_hidden_states=enc),
        out(masked, x, encoder_hidden_states=enc),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bert_cross_attention_pruned():
    model = bert(is_decoder=True, add_cross_attention=True)
    enc = torch.randn(2, 5, E, generator=torch.Generator().manual_seed(3))
    x = tokens()
    heads = {0: [1], 1: [2]}
    r = paramscope.shrink(
        model,
        target_params=count(model) - head_params(model, heads),
        unit="heads",
        importance=forcing(heads),
        select="*crossattention",
    )
    assert [g["units"] for g in r.groups] == [[1], [2]]
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for layer, hs in heads.items():
            v = masked.encoder.layer[layer].crossattention.self.value
            for h in hs:
                v.weight[h * HD : (h + 1) * HD] = 0
                v.bias[h * HD : (h + 1) * HD] = 0
    torch.testing.assert_close(
        out(r.model, x, encoder_hidden_states=enc),
        out(masked, x, encoder_hidden_states=enc),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_implementations(impl):
    model = bert()
    model.config._attn_implementation = impl
    x = tokens()
    mask = torch.ones_like(x)
    mask[0, -2:] = 0
    heads = {0: [0], 1: [1, 2]}
    r = shrink_these(model, heads, x)
    masked = copy.deepcopy(model)
    zero_values(masked, heads)
    torch.testing.assert_close(
        out(r.model, x, attention_mask=mask),
        out(masked, x, attention_mask=mask),
        rtol=1e-5,
        atol=1e-5,
    )


def test_rebuild_from_config_with_kept_units():
    """No ``config.pruned_heads`` in transformers 5.x: a saved result is rebuilt by shrinking
    a model built from the config to the reported heads, then loading the weights."""
    import transformers

    model = bert(layers=3)
    heads = {0: [0, 1], 2: [3]}
    r = shrink_these(model, heads, tokens())
    kept = {int(g["name"].split(".")[2]): g["kept_units"] for g in r.groups}
    fresh = transformers.BertModel(r.model.config).eval()
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(r.model.state_dict())
    gone = {k: [h for h in range(H) if h not in v] for k, v in kept.items()}
    rebuilt = shrink_these(fresh, gone, tokens()).model
    rebuilt.load_state_dict(r.model.state_dict())
    torch.testing.assert_close(out(rebuilt, tokens()), out(r.model, tokens()))
    assert not hasattr(r.model.config, "pruned_heads")


def test_amount_and_target_params_counts():
    model = gpt2(layers=3)
    before = count(model)
    per_head = 3 * (E * HD + HD) + HD * E
    r = paramscope.shrink(model, 0.5, unit="heads")
    assert r.params_before - r.params_after == 3 * 2 * per_head
    assert r.params_after == count(r.model)
    t = paramscope.shrink(model, target_params=before - 4 * per_head, unit="heads")
    assert t.params_after == count(t.model) == before - 4 * per_head
    assert sum(g["removed"] for g in t.groups) == 4


def test_layout_refused_with_reason():
    model = bert()
    model.encoder.layer[1].attention.self.extra = nn.Parameter(torch.ones(HD))
    r = paramscope.shrink(model, 0.5, unit="heads")
    assert [g["name"] for g in r.groups] == ["encoder.layer.0.attention"]
    assert r.refused == [
        {
            "name": "encoder.layer.1.attention",
            "reason": "BertSelfAttention: parameters outside query / key / value (extra)",
        }
    ]
    import transformers

    gpt = transformers.OpenAIGPTModel(
        transformers.OpenAIGPTConfig(n_layer=1, n_embd=E, n_head=H, vocab_size=VOCAB)
    )
    r = paramscope.shrink(gpt, 0.5, unit="heads")
    assert not r.groups and r.refused[0]["name"] == "h.0.attn"
    assert "no head handler for Attention" in r.refused[0]["reason"]
