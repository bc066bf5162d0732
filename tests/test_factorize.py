"""factorize: Linear layers -> two thin Linears from a truncated SVD, on a module or a file.

Checked against the definitions themselves: torch's Linear forward (a full-rank
factorisation reproduces the output), the parameter counts of the real modules
(``sum(p.numel())``), the actual ``||W - W1 @ W0|| / ||W||``, and transformers' models
written with ``save_pretrained`` (the factorised file loads strictly into the factorised
model).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import paramscope
from paramscope._errors import ArgumentError, ArgumentTypeError, EntryError, TargetError
from paramscope.merging import _lowrank as lr
from paramscope.merging._factorize import FactorizeReport, factorize


def _low_rank(n_out: int, n_in: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_out, k, generator=g) @ torch.randn(k, n_in, generator=g)


def _with_spectrum(n_out: int, n_in: int, s: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n_out, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n_in, len(s), generator=g, dtype=torch.float64))
    return (u * torch.tensor(s, dtype=torch.float64)) @ v.T


def _llama(seed: int = 0):
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def _gpt2(seed: int = 0):
    import transformers

    cfg = transformers.GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=4,
        vocab_size=128,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _nparams(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------ modules
def test_full_rank_of_a_rank_deficient_layer_reproduces_the_output():
    lin = torch.nn.Linear(40, 48)
    with torch.no_grad():
        lin.weight.copy_(_low_rank(48, 40, 4))
    model = torch.nn.Sequential(lin, torch.nn.ReLU())
    x = torch.randn(7, 40)
    report = factorize(model, rank=4)
    new = report.model
    assert isinstance(new[0], torch.nn.Sequential)
    assert new[0][0].weight.shape == (4, 40) and new[0][1].weight.shape == (48, 4)
    assert new[0][0].bias is None and torch.equal(new[0][1].bias, lin.bias)
    torch.testing.assert_close(new(x), model(x), atol=1e-4, rtol=1e-4)
    (layer,) = report.layers
    assert layer["rel_error"] < 1e-5 and layer["energy_kept"] > 1 - 1e-9
    # the state dict names of the issue
    assert set(new.state_dict()) == {"0.0.weight", "0.1.weight", "0.1.bias"}


def test_energy_one_stops_at_the_numerical_rank_and_reproduces():
    lin = torch.nn.Linear(40, 48, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_low_rank(48, 40, 5))
    x = torch.randn(3, 40)
    report = factorize(torch.nn.Sequential(lin), energy=1.0)
    assert report.layers[0]["rank"] == 5
    torch.testing.assert_close(report.model(x), lin(x), atol=1e-4, rtol=1e-4)


def test_energy_picks_the_smallest_rank():
    s = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]
    w = _with_spectrum(30, 20, s).float()
    s2 = torch.tensor(s, dtype=torch.float64) ** 2
    frac = (s2.cumsum(0) / s2.sum()).tolist()
    for energy in (0.5, 0.8, 0.95, 0.99, 0.999):
        expected = next(i + 1 for i, f in enumerate(frac) if f >= energy)
        lin = torch.nn.Linear(20, 30, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        (layer,) = factorize(torch.nn.Sequential(lin), energy=energy).layers
        assert layer["rank"] == expected, energy
        assert layer["energy_kept"] >= energy
        if expected > 1:  # one less would not keep enough
            assert frac[expected - 2] < energy
        assert layer["energy_kept"] == pytest.approx(frac[expected - 1], rel=1e-5)


def test_counts_equal_the_formula_and_the_real_modules():
    model = _llama()
    before = _nparams(model)
    report = factorize(model, rank=4)
    new = report.model
    assert report.totals["params_before"] == before
    assert report.totals["params_after"] == _nparams(new)
    assert report.totals["saved"] == before - _nparams(new) > 0
    mods = dict(model.named_modules())
    new_mods = dict(new.named_modules())
    assert len(report.layers) == 15  # 7 Linears per layer, and lm_head
    for layer in report.layers:
        old = mods[layer["name"]]
        b = 0 if old.bias is None else old.bias.numel()
        assert layer["params_before"] == old.in_features * old.out_features + b
        assert layer["params_before"] == sum(p.numel() for p in old.parameters())
        assert layer["params_after"] == 4 * (old.in_features + old.out_features) + b
        assert layer["params_after"] == sum(p.numel() for p in new_mods[layer["name"]].parameters())
    assert (
        before - sum(x["params_before"] - x["params_after"] for x in report.layers)
        == (report.totals["params_after"])
    )


def test_relative_error_is_the_actual_error():
    model = _llama(1)
    report = factorize(model, rank=3)
    mods = dict(model.named_modules())
    new_mods = dict(report.model.named_modules())
    for layer in report.layers:
        w = mods[layer["name"]].weight.detach().double()
        seq = new_mods[layer["name"]]
        approx = (seq[1].weight @ seq[0].weight).detach().double()
        actual = float(torch.linalg.norm(w - approx) / torch.linalg.norm(w))
        assert layer["rel_error"] == pytest.approx(actual, rel=1e-4)
        assert 0 < layer["rel_error"] < 1
        assert layer["energy_kept"] == pytest.approx(1 - actual**2, rel=1e-4)
        assert layer["method"] == "svd"


def test_skipped_layers_say_why():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 64))
    report = factorize(model, rank=3)  # 3*(8+4)=36 >= 32; 3*(4+64)=204 >= 256? no: saves
    assert [x["name"] for x in report.skipped] == ["0"]
    assert "no parameters saved" in report.skipped[0]["reason"]
    assert [x["name"] for x in report.layers] == ["1"]
    assert isinstance(report.model[0], torch.nn.Linear)
    # energy=1 on full-rank random layers: the full rank saves nothing -> skipped
    report = factorize(torch.nn.Sequential(torch.nn.Linear(16, 16)), energy=1.0)
    assert report.layers == [] and report.skipped[0]["reason"].startswith("energy 1.0: rank 16")
    assert report.totals["params_before"] == report.totals["params_after"] == 16 * 16 + 16


def test_ties_subclasses_and_shared_modules():
    a, b = torch.nn.Linear(32, 32), torch.nn.Linear(32, 32)
    b.weight = a.weight  # tie
    shared = torch.nn.Linear(32, 48)
    mha = torch.nn.MultiheadAttention(32, 4)
    model = torch.nn.ModuleDict({"a": a, "b": b, "s1": shared, "s2": shared, "mha": mha})
    report = factorize(model, rank=2)
    reasons = {x["name"]: x["reason"] for x in report.skipped}
    assert "tied to b.weight" in reasons["a"] and "tied to a.weight" in reasons["b"]
    assert "subclass of nn.Linear" in reasons["mha.out_proj"]
    assert [x["name"] for x in report.layers] == ["s1"]
    new = report.model
    assert new["s1"] is new["s2"] and isinstance(new["s1"], torch.nn.Sequential)
    assert report.totals["params_after"] == _nparams(new)
    assert report.totals["params_before"] - report.totals["params_after"] == (
        32 * 48 - 2 * (32 + 48)
    )


def test_a_root_linear_becomes_the_sequential():
    lin = torch.nn.Linear(30, 20, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_low_rank(20, 30, 2))
    report = factorize(lin, rank=2)
    assert isinstance(report.model, torch.nn.Sequential) and isinstance(lin, torch.nn.Linear)
    assert set(report.model.state_dict()) == {"0.weight", "1.weight"}
    x = torch.randn(5, 30)
    torch.testing.assert_close(report.model(x), lin(x), atol=1e-4, rtol=1e-4)
    assert report.totals["params_after"] == 2 * 50 == _nparams(report.model)


def test_callers_model_is_unchanged():
    model = _llama()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    types = {n: type(m) for n, m in model.named_modules()}
    model.train()
    report = factorize(model, rank=4, example_inputs=torch.tensor([[1, 2, 3]]))
    assert model.training  # modes restored
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    assert report.model is not model
    assert report.model.model.layers[0].mlp.up_proj[0].weight.shape == (4, 32)


def test_example_inputs_deviation_matches_a_direct_run():
    model = _llama(2)
    ids = torch.tensor([[5, 6, 7, 8]])
    report = factorize(model, rank=6, example_inputs=ids)
    with torch.no_grad():
        old = model(ids).logits.double()
        new = report.model(ids).logits.double()
    assert report.deviation["max_abs"] == pytest.approx(float((new - old).abs().max()))
    assert report.deviation["relative"] == pytest.approx(
        float(torch.linalg.norm(new - old) / torch.linalg.norm(old))
    )
    assert report.deviation["max_abs"] > 0
    exact = torch.nn.Sequential(torch.nn.Linear(20, 30))
    with torch.no_grad():
        exact[0].weight.copy_(_low_rank(30, 20, 3))
    dev = factorize(exact, rank=3, example_inputs=torch.randn(4, 20)).deviation
    assert dev["relative"] < 1e-5


def test_gpt2_conv1d_layers_are_factorised():
    model = _gpt2()
    ids = torch.tensor([[1, 2, 3, 4]])
    report = factorize(model, rank=4, example_inputs=ids)
    kinds = {x["name"]: x["kind"] for x in report.layers}
    assert kinds["transformer.h.0.attn.c_attn"] == "Conv1D"
    c_attn = report.model.transformer.h[0].attn.c_attn
    assert c_attn[0].weight.shape == (4, 32) and c_attn[1].weight.shape == (96, 4)
    w = model.transformer.h[0].attn.c_attn.weight.detach().T.double()  # Conv1D: (in, out)
    approx = (c_attn[1].weight @ c_attn[0].weight).detach().double()
    layer = next(x for x in report.layers if x["name"] == "transformer.h.0.attn.c_attn")
    assert layer["in"] == 32 and layer["out"] == 96
    assert layer["rel_error"] == pytest.approx(float(torch.linalg.norm(w - approx) / w.norm()))
    assert "tied to" in {x["name"]: x["reason"] for x in report.skipped}["lm_head"]
    assert report.totals["params_after"] == _nparams(report.model)
    assert report.deviation["max_abs"] > 0 and math.isfinite(report.deviation["relative"])


def test_select_and_lowrank_method(monkeypatch):
    model = _llama()
    report = factorize(model, rank=2, select="*.mlp.*")
    assert {x["name"].rsplit(".", 1)[-1] for x in report.layers} == {
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert len(report.layers) == 6
    report = factorize(model, rank=2, select=["re:.*q_proj", "lm_head"])
    assert [x["name"] for x in report.layers][-1] == "lm_head" and len(report.layers) == 3
    monkeypatch.setattr(lr, "LOWRANK_MIN_DIM", 16)  # sketch 2*4 + 10 = 18 <= 40 / 2
    monkeypatch.setattr(lr, "LOWRANK_FRACTION", 2)
    exact = torch.nn.Sequential(torch.nn.Linear(40, 48))
    with torch.no_grad():
        exact[0].weight.copy_(_low_rank(48, 40, 4) + 1e-3 * torch.randn(48, 40))
    report = factorize(exact, rank=4)
    (layer,) = report.layers
    assert layer["method"] == "svd_lowrank"
    seq = report.model[0]
    w = exact[0].weight.detach().double()
    approx = (seq[1].weight @ seq[0].weight).detach().double()
    actual = float(torch.linalg.norm(w - approx) / w.norm())
    assert layer["rel_error"] == pytest.approx(actual, rel=1e-3) and actual < 1e-2
    again = factorize(exact, rank=4).model[0][0].weight  # seeded: the same factors
    assert torch.equal(again, seq[0].weight)


@settings(max_examples=40, deadline=None)
@given(
    n_in=st.integers(1, 24),
    n_out=st.integers(1, 24),
    rank=st.integers(1, 24),
    bias=st.booleans(),
)
def test_count_formula_random_shapes(n_in, n_out, rank, bias):
    model = torch.nn.Sequential(torch.nn.Linear(n_in, n_out, bias=bias))
    report = factorize(model, rank=rank)
    b = n_out if bias else 0
    assert report.totals["params_before"] == n_in * n_out + b == _nparams(model)
    assert report.totals["params_after"] == _nparams(report.model)
    if rank * (n_in + n_out) < n_in * n_out:
        (layer,) = report.layers
        assert layer["params_after"] == rank * (n_in + n_out) + b == _nparams(report.model)
        assert report.skipped == []
    else:
        assert report.layers == [] and report.skipped[0]["name"] == "0"
        assert report.totals["saved"] == 0


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_loads_into_the_factorised_model(tmp_path):
    model = _llama()
    model.save_pretrained(tmp_path / "llama")
    out = tmp_path / "out.safetensors"
    report = factorize(tmp_path / "llama", rank=4, dst=out)
    expected = factorize(model, rank=4)
    assert sorted(x["name"] for x in report.layers) == sorted(x["name"] for x in expected.layers)
    assert report.totals["params_before"] == _nparams(model)
    assert report.totals["params_after"] == _nparams(expected.model)
    pd = paramscope.load(out)
    sd = expected.model.state_dict()
    assert set(pd) == set(sd)
    assert "model.layers.0.mlp.down_proj.0.weight" in pd
    assert "model.layers.0.mlp.down_proj.weight" not in pd
    assert tuple(pd["model.layers.0.mlp.down_proj.0.weight"].shape) == (4, 64)
    assert tuple(pd["lm_head.1.weight"].shape) == (128, 4)
    assert tuple(pd["model.embed_tokens.weight"].shape) == (128, 32)  # embeddings left out
    fresh = _llama(5)
    target = factorize(fresh, rank=4).model
    target.load_state_dict(dict(pd), strict=True)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        torch.testing.assert_close(target(ids).logits, expected.model(ids).logits)
    by_name = {x["name"]: x for x in expected.layers}
    for a in report.layers:
        b = by_name[a["name"]]
        assert a["rank"] == b["rank"] == 4
        assert a["rel_error"] == pytest.approx(b["rel_error"], rel=1e-4, abs=1e-7)
    json.dumps(report.to_dict())
    assert "lm_head" in report.to_text() and report.to_text().count("\n") >= 16


def test_checkpoint_energy_bias_rename_and_bf16(tmp_path):
    lin = torch.nn.Linear(20, 30)
    with torch.no_grad():
        lin.weight.copy_(_with_spectrum(30, 20, [8.0, 4.0, 2.0, 1.0, 0.5]).float())
    sd = {
        "fc.weight": lin.weight.detach(),
        "fc.bias": lin.bias.detach(),
        "embed.weight": torch.ones(9, 4),
    }
    src = paramscope.save(sd, tmp_path / "a.safetensors")
    report = factorize(src, energy=0.95, dst=tmp_path / "b.safetensors")
    mod = factorize(torch.nn.ModuleDict({"fc": lin}), energy=0.95)
    assert report.layers[0]["rank"] == mod.layers[0]["rank"] == 3
    pd = paramscope.load(tmp_path / "b.safetensors")
    assert sorted(pd) == ["embed.weight", "fc.0.weight", "fc.1.bias", "fc.1.weight"]
    torch.testing.assert_close(pd["fc.1.bias"], lin.bias.detach())
    torch.testing.assert_close(
        pd["fc.1.weight"] @ pd["fc.0.weight"], mod.model["fc"][1].weight @ mod.model["fc"][0].weight
    )
    assert report.layers[0]["params_before"] == 20 * 30 + 30
    assert report.layers[0]["params_after"] == 3 * 50 + 30
    assert report.totals["params_before"] == 630 + 36
    assert any("first pass" in n for n in report.notes)
    # bf16 stays bf16, sharded output
    bf = paramscope.save(
        {k: v.to(torch.bfloat16) for k, v in sd.items()}, tmp_path / "c.safetensors"
    )
    factorize(bf, rank=2, dst=tmp_path / "shards", max_shard_size=600)
    pd = paramscope.load(tmp_path / "shards")
    assert pd["fc.0.weight"].dtype == torch.bfloat16 and tuple(pd["fc.0.weight"].shape) == (2, 20)


def test_gpt2_checkpoint_conv1d_layout_from_config(tmp_path):
    model = _gpt2()
    model.save_pretrained(tmp_path / "gpt2")
    report = factorize(tmp_path / "gpt2", rank=4, dst=tmp_path / "out.safetensors")
    expected = factorize(model, rank=4).model
    pd = paramscope.load(tmp_path / "out.safetensors")
    assert tuple(pd["transformer.h.0.attn.c_attn.0.weight"].shape) == (4, 32)
    assert tuple(pd["transformer.h.0.attn.c_attn.1.weight"].shape) == (96, 4)
    assert "transformer.h.0.mlp.c_fc.1.bias" in pd
    sd = dict(pd)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied: save_pretrained stores one
    fresh = factorize(_gpt2(3), rank=4).model
    fresh.load_state_dict(sd, strict=True)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, expected(ids).logits)
    assert any("Conv1D" in n for n in report.notes)


def test_checkpoint_alias_target_is_skipped(tmp_path):
    w = _low_rank(40, 40, 2)
    pd = paramscope.ParamDict()
    pd.add("a.weight", w)
    pd.tie("b.weight", "a.weight")
    src = paramscope.save(pd, tmp_path / "t.safetensors")
    report = factorize(src, rank=2, dst=tmp_path / "o.safetensors")
    assert report.layers == [] and "tied to b.weight" in report.skipped[0]["reason"]
    assert torch.equal(paramscope.load(tmp_path / "o.safetensors")["b.weight"], w)


# ------------------------------------------------------------------------------ errors
def test_errors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with pytest.raises(ArgumentError, match="exactly one"):
        factorize(model, rank=2, energy=0.5)
    with pytest.raises(ArgumentError, match="exactly one"):
        factorize(model)
    with pytest.raises(ArgumentError, match="rank=0"):
        factorize(model, rank=0)
    with pytest.raises(ArgumentError, match=r"energy=1\.5"):
        factorize(model, energy=1.5)
    with pytest.raises(ArgumentError, match="energy=0"):
        factorize(model, energy=0)
    with pytest.raises(ArgumentError, match=r"'decoder\.\*'"):
        factorize(model, rank=2, select="decoder.*")
    src = paramscope.save({"fc.weight": torch.ones(8, 8)}, tmp_path / "a.safetensors")
    with pytest.raises(ArgumentError, match="nothing_here"):
        factorize(src, rank=2, select="nothing_here", dst=tmp_path / "b.safetensors")
    with pytest.raises(ArgumentError, match=r"pass dst= \(e\.g\. dst='.*a-lowrank\.safetensors'\)"):
        factorize(src, rank=2)
    with pytest.raises(TargetError, match="omit dst="):
        factorize(model, rank=2, dst=tmp_path / "c.safetensors")
    with pytest.raises(TargetError):
        factorize("zoo:mlp", rank=2, dst=tmp_path / "c.safetensors")
    with pytest.raises(ArgumentError, match="example_inputs"):
        factorize(src, rank=2, dst=tmp_path / "b.safetensors", example_inputs=torch.ones(8))
    with pytest.raises(ArgumentTypeError, match="found int"):
        factorize(3, rank=2)
    meta = torch.nn.Sequential(torch.nn.Linear(8, 8, device="meta"))
    with pytest.raises(EntryError, match="meta device"):
        factorize(meta, rank=2)
    assert not (tmp_path / "b.safetensors").exists()


def test_report_text_and_dict():
    r = FactorizeReport(rank=2)
    assert r.to_dict()["totals"]["saved"] == 0
    report = factorize(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 2)), rank=4)
    text = report.to_text()
    assert "skipped 1: rank 4" in text and "total: 4,290 -> 706 parameters" in text
    assert "model" not in report.to_dict()
    assert json.loads(json.dumps(report.to_dict()))["layers"][0]["rank"] == 4
