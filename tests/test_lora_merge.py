"""LoRA adapters: read / count, merge into the base, extract from a fine-tune — against peft."""

from __future__ import annotations

import copy
import json
import os

import peft
import pytest
import torch
import transformers

import paramscope
from paramscope._errors import (
    ArgumentError,
    EntryError,
    FormatError,
    ShapeMismatchError,
    WriteError,
)
from paramscope.merging._lora import (
    AdapterInfo,
    LoraExtractReport,
    LoraMergeReport,
    lora_extract,
    lora_merge,
    read_adapter,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _llama(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def _gpt2(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=4,
        vocab_size=128,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


def _randomise(pm: torch.nn.Module, seed: int = 1) -> None:
    """peft initialises lora_B to zero: give every adapter tensor random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.2 * torch.rand(p.shape, generator=g))
            elif "lora_" in n or "modules_to_save" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def _adapter(model, tmp_path, name="adapter", seed=1, **config):
    """Save ``model`` as the base, an adapter made by peft, and peft's merged state dict."""
    pm = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(**config))
    _randomise(pm, seed)
    folder = tmp_path / name
    pm.save_pretrained(folder)
    count = sum(t.numel() for t in peft.get_peft_model_state_dict(pm).values())
    merged = {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}
    return folder, merged, count


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory):
    model = _llama()
    folder = tmp_path_factory.mktemp("llama") / "base"
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder


def _check_equal(dst, merged, atol=1e-6):
    out = paramscope.load(dst)
    assert set(out) == set(merged)
    for k, v in merged.items():
        assert out[k].dtype == v.dtype, k
        torch.testing.assert_close(out[k], v, rtol=1e-5, atol=atol, msg=k)
    return out


@pytest.mark.parametrize(
    "config",
    [
        {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]},
        {"r": 8, "lora_alpha": 4, "use_rslora": True, "target_modules": ["k_proj", "o_proj"]},
        {"r": 4, "lora_alpha": 16, "use_dora": True, "target_modules": ["q_proj", "up_proj"]},
        {
            "r": 4,
            "lora_alpha": 8,
            "target_modules": ["q_proj", "v_proj", "gate_proj"],
            "rank_pattern": {"v_proj": 2, "layers.1.self_attn.q_proj": 6},
            "alpha_pattern": {"gate_proj": 3},
        },
        {
            "r": 2,
            "lora_alpha": 4,
            "target_modules": ["q_proj", "embed_tokens"],
            "modules_to_save": ["lm_head"],
        },
        {"r": 2, "lora_alpha": 4, "use_dora": True, "target_modules": ["embed_tokens", "v_proj"]},
    ],
    ids=["plain", "rslora", "dora", "rank_pattern", "embedding+modules_to_save", "dora_embedding"],
)
def test_merge_equals_peft_llama(llama_base, tmp_path, config):
    model, base = llama_base
    folder, merged, count = _adapter(model, tmp_path, **config)
    info = read_adapter(folder)
    assert info.params == count
    dst = tmp_path / "merged.safetensors"
    report = lora_merge(base, folder, dst, show_progress=False)
    out = _check_equal(dst, merged)
    assert report.merged == len(info.modules) > 0
    assert report.entries == len(out)
    assert report.copied + report.merged + len(report.replaced) >= len(out) - len(info.modules)
    # relative update of each module, measured here
    ref = paramscope.load(base / "model.safetensors")
    for m in report.modules:
        w = ref[m["name"] + ".weight"].float()
        want = float((out[m["name"] + ".weight"].float() - w).norm() / w.norm())
        assert m["relative_update"] == pytest.approx(want, rel=1e-4, abs=1e-7)
        assert m["scaling"] == pytest.approx(info.scaling(m["name"]))
    json.dumps(report.to_dict())
    assert "modules merged" in report.to_text()


def test_read_adapter_fields(llama_base, tmp_path):
    model, _ = llama_base
    folder, _, count = _adapter(
        model,
        tmp_path,
        r=4,
        lora_alpha=8,
        use_dora=True,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["lm_head"],
        rank_pattern={"v_proj": 2},
    )
    info = read_adapter(folder / "adapter_model.safetensors")  # the file works as well
    assert isinstance(info, AdapterInfo)
    assert info.params == count
    assert info.r == 4 and info.alpha == 8 and info.use_dora and not info.use_rslora
    assert info.targets == ["q_proj", "v_proj"]
    assert info.modules == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    ]
    assert info.modules_to_save == ["lm_head.weight"]
    assert info.rank_alpha("model.layers.0.self_attn.v_proj") == (2, 8)
    # per module: A (r, 32) + B (out, r) + magnitude (out)
    q = info.module_params["model.layers.0.self_attn.q_proj"]
    assert q == 4 * 32 + 32 * 4 + 32
    v = info.module_params["model.layers.0.self_attn.v_proj"]
    assert v == 2 * 32 + 16 * 2 + 16
    assert sum(info.module_params.values()) == info.params
    assert info.dtypes == ["F32"]
    d = info.to_dict()
    assert json.loads(json.dumps(d))["modules"] == info.modules
    assert "lm_head.weight" in info.to_text()


def test_merge_gpt2_fan_in_fan_out_and_ties(tmp_path):
    model = _gpt2()
    # paramscope.save keeps the tie lm_head -> wte as an alias; no config.json: the square
    # c_proj is taken by the adapter's fan_in_fan_out
    base = paramscope.save(model.state_dict(), tmp_path / "base.safetensors")
    folder, merged, count = _adapter(
        model,
        tmp_path,
        r=4,
        lora_alpha=8,
        fan_in_fan_out=True,
        target_modules=["c_attn", "c_proj", "c_fc"],
        lora_bias=True,
    )
    assert read_adapter(folder).params == count
    dst = tmp_path / "merged.safetensors"
    report = lora_merge(base, folder, dst, show_progress=False)
    out = _check_equal(dst, merged)
    assert {m["kind"] for m in report.modules} == {"conv1d"}
    assert all(m["bias"] for m in report.modules)
    assert torch.equal(out["lm_head.weight"], out["transformer.wte.weight"])
    # the same with the base saved by transformers (config.json says gpt2)
    base2 = tmp_path / "hf"
    model.save_pretrained(base2, safe_serialization=True)
    dst2 = tmp_path / "merged2.safetensors"
    lora_merge(base2, folder, dst2, show_progress=False)
    out2 = paramscope.load(dst2)
    for k, v in out2.items():
        torch.testing.assert_close(v, merged[k], rtol=1e-5, atol=1e-6)


def test_merge_gpt2_dora(tmp_path):
    model = _gpt2()
    model.save_pretrained(tmp_path / "base", safe_serialization=True)
    folder, merged, _ = _adapter(
        model,
        tmp_path,
        r=4,
        lora_alpha=8,
        use_dora=True,
        fan_in_fan_out=True,
        target_modules=["c_attn", "c_proj"],
    )
    report = lora_merge(tmp_path / "base", folder, tmp_path / "m.safetensors")
    assert all(m["dora"] and m["kind"] == "conv1d" for m in report.modules)
    out = paramscope.load(tmp_path / "m.safetensors")
    for k, v in out.items():
        torch.testing.assert_close(v, merged[k], rtol=1e-5, atol=1e-6)


def test_merge_bf16_base_bin_adapter_dora(tmp_path):
    """A bf16 base with float32 adapters saved as adapter_model.bin: bitwise peft's result."""
    model = _llama().to(torch.bfloat16)
    model.save_pretrained(tmp_path / "base", safe_serialization=True)
    pm = peft.get_peft_model(
        copy.deepcopy(model),
        peft.LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"]),
    )
    _randomise(pm)
    pm.save_pretrained(tmp_path / "ad", safe_serialization=False)
    assert (tmp_path / "ad" / "adapter_model.bin").exists()
    info = read_adapter(tmp_path / "ad")
    assert info.dtypes == ["F32"] and info.path.endswith("adapter_model.bin")
    merged = pm.merge_and_unload().state_dict()
    lora_merge(tmp_path / "base", tmp_path / "ad", tmp_path / "m.safetensors")
    out = paramscope.load(tmp_path / "m.safetensors")
    assert set(out) == set(merged)
    for k, v in merged.items():
        assert out[k].dtype == torch.bfloat16 and torch.equal(out[k], v), k


def test_merge_dtype_and_shards(llama_base, tmp_path):
    model, base = llama_base
    folder, merged, _ = _adapter(model, tmp_path, r=4, lora_alpha=8, target_modules=["q_proj"])
    dst = tmp_path / "shards"
    report = lora_merge(base, folder, dst, dtype="bf16", max_shard_size=20_000, fsync=False)
    assert report.shards > 1
    out = paramscope.load(dst)
    assert {v.dtype for v in out.values()} == {torch.bfloat16}
    for k, v in merged.items():
        assert torch.equal(out[k], v.to(torch.bfloat16)), k


def test_merge_errors(llama_base, tmp_path):
    model, base = llama_base
    folder, _, _ = _adapter(model, tmp_path, r=2, lora_alpha=4, target_modules=["q_proj"])
    sd = paramscope.load(base / "model.safetensors")
    # a base without one adapted module: every unmatched name listed, nothing written
    partial = {k: v for k, v in sd.items() if "layers.1.self_attn.q_proj" not in k}
    paramscope.save(partial, tmp_path / "partial.safetensors")
    dst = tmp_path / "out.safetensors"
    with pytest.raises(EntryError, match=r"model\.layers\.1\.self_attn\.q_proj\.weight"):
        lora_merge(tmp_path / "partial.safetensors", folder, dst)
    assert not dst.exists()
    # a base of another width: both shapes named
    sd2 = dict(sd)
    sd2["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(32, 16)
    paramscope.save(sd2, tmp_path / "other.safetensors")
    with pytest.raises(ShapeMismatchError, match=r"\[32, 16\]"):
        lora_merge(tmp_path / "other.safetensors", folder, dst)
    assert not dst.exists()
    # a non-LoRA adapter (peft's own IA3)
    pm = peft.get_peft_model(
        copy.deepcopy(model),
        peft.IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    )
    pm.save_pretrained(tmp_path / "ia3")
    with pytest.raises(ArgumentError, match="IA3"):
        read_adapter(tmp_path / "ia3")
    with pytest.raises(ArgumentError, match="IA3"):
        lora_merge(base, tmp_path / "ia3", dst)
    # no config beside the tensors; a folder without tensors
    bare = tmp_path / "bare"
    bare.mkdir()
    os.link(folder / "adapter_model.safetensors", bare / "adapter_model.safetensors")
    with pytest.raises(FormatError, match=r"adapter_config\.json"):
        read_adapter(bare)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="adapter_model"):
        read_adapter(tmp_path / "empty")
    # a dst folder without max_shard_size
    with pytest.raises(WriteError):
        lora_merge(base, folder, tmp_path)
    assert not dst.exists()


# --------------------------------------------------------------------------------------------
# extract


def _low_rank(shape, r, g):
    return torch.randn(shape[0], r, generator=g) @ torch.randn(r, shape[1], generator=g) * 0.05


def _finetune(model, changes, noise=0.0, seed=3):
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, r in changes.items():
        sd[name] = sd[name] + _low_rank(sd[name].shape, r, g)
        if noise:
            sd[name] += noise * torch.randn(sd[name].shape, generator=g)
    return sd


def _peft_merged(model, folder):
    pm = peft.PeftModel.from_pretrained(copy.deepcopy(model), folder)
    return {k: v.detach() for k, v in pm.merge_and_unload().state_dict().items()}


def _check_errors(report, model, ft, folder):
    merged = _peft_merged(model, folder)
    base = model.state_dict()
    for t in report.tensors:
        n = t["name"]
        actual = float((merged[n] - ft[n]).norm() / (ft[n] - base[n]).norm())
        assert t["relative_error"] == pytest.approx(actual, abs=1e-4), n
    return merged


LLAMA_CHANGES = {
    "model.layers.0.self_attn.q_proj.weight": 3,
    "model.layers.1.self_attn.v_proj.weight": 3,
    "model.layers.0.mlp.down_proj.weight": 3,
}


def test_extract_true_rank_is_exact(llama_base, tmp_path):
    model, base = llama_base
    ft = _finetune(model, LLAMA_CHANGES)
    ft["model.norm.weight"] = ft["model.norm.weight"] * 1.5  # a change LoRA cannot hold
    paramscope.save(ft, tmp_path / "ft.safetensors")
    out = tmp_path / "lora"
    out.mkdir()
    (out / "README.md").write_text("keep me")
    report = lora_extract(base, tmp_path / "ft.safetensors", out, rank=3, show_progress=False)
    assert isinstance(report, LoraExtractReport)
    assert sorted(os.listdir(out)) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert (out / "README.md").read_text() == "keep me"
    assert sorted(t["name"] for t in report.tensors) == sorted(LLAMA_CHANGES)
    assert all(t["rank"] == 3 and t["relative_error"] < 1e-5 for t in report.tensors)
    assert all(t["energy"] == pytest.approx(1.0, abs=1e-6) for t in report.tensors)
    assert report.not_held == [
        {
            "name": "model.norm.weight",
            "shape": [32],
            "relative_change": pytest.approx(0.5, rel=1e-5),
            "reason": "not 2-D",
        }
    ]
    assert report.params == sum(3 * sum(ft[n].shape) for n in LLAMA_CHANGES)
    assert report.full_params == sum(ft[n].numel() for n in LLAMA_CHANGES)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 3 and cfg["lora_alpha"] == 3
    assert cfg["target_modules"] == sorted(n[: -len(".weight")] for n in LLAMA_CHANGES)
    assert read_adapter(out).params == report.params
    merged = _check_errors(report, model, ft, out)
    for n in LLAMA_CHANGES:
        torch.testing.assert_close(merged[n], ft[n], rtol=1e-5, atol=1e-5)
    assert "not 2-D" in report.to_text()
    json.dumps(report.to_dict())


def test_extract_rank_below_truth_reports_the_peft_error(llama_base, tmp_path):
    model, base = llama_base
    ft = _finetune(model, LLAMA_CHANGES, noise=1e-3)
    paramscope.save(ft, tmp_path / "ft.safetensors")
    report = lora_extract(base, tmp_path / "ft.safetensors", tmp_path / "lora", rank=2, alpha=8)
    errs = [t["relative_error"] for t in report.tensors]
    assert all(0.05 < e < 1 for e in errs)
    for t in report.tensors:
        # error^2 = 1 - energy kept (Eckart-Young, full SVD)
        assert t["relative_error"] ** 2 == pytest.approx(1 - t["energy"], abs=1e-4)
        assert t["svd"] == "full" and t["scaling"] == 4.0
    _check_errors(report, model, ft, tmp_path / "lora")


def test_extract_energy_gives_rank_pattern(llama_base, tmp_path):
    model, base = llama_base
    changes = {
        "model.layers.0.self_attn.q_proj.weight": 1,
        "model.layers.1.self_attn.o_proj.weight": 4,
        "model.layers.1.mlp.up_proj.weight": 4,
    }
    ft = _finetune(model, changes)
    paramscope.save(ft, tmp_path / "ft.safetensors")
    report = lora_extract(base, tmp_path / "ft.safetensors", tmp_path / "lora", energy=0.999999)
    ranks = {t["name"]: t["rank"] for t in report.tensors}
    assert ranks == changes
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["rank_pattern"] == {"model.layers.0.self_attn.q_proj": 1}
    assert cfg["alpha_pattern"] == {"model.layers.0.self_attn.q_proj": 1}
    merged = _check_errors(report, model, ft, tmp_path / "lora")
    for n in changes:
        torch.testing.assert_close(merged[n], ft[n], rtol=1e-5, atol=1e-5)
    # a lower energy keeps fewer values, and the smallest rank that reaches it
    r2 = lora_extract(base, tmp_path / "ft.safetensors", tmp_path / "lora2", energy=0.5)
    for t in r2.tensors:
        assert t["energy"] >= 0.5
        d = (ft[t["name"]] - model.state_dict()[t["name"]]).double()
        s2 = torch.linalg.svdvals(d).square()
        assert float(s2[: t["rank"] - 1].sum() / s2.sum()) < 0.5


def test_extract_gpt2_conv1d(tmp_path):
    model = _gpt2()
    base = tmp_path / "base"
    model.save_pretrained(base, safe_serialization=True)  # config.json: model_type gpt2
    changes = {  # Conv1D weights are stored (in, out)
        "transformer.h.0.attn.c_attn.weight": 2,
        "transformer.h.1.attn.c_proj.weight": 2,
        "transformer.h.1.mlp.c_fc.weight": 2,
    }
    ft = _finetune(model, changes, noise=1e-4)
    ft["transformer.h.0.attn.c_attn.bias"] += 0.01
    del ft["lm_head.weight"]  # tied to wte: transformers does not save it either
    paramscope.save(ft, tmp_path / "ft.safetensors")
    report = lora_extract(base, tmp_path / "ft.safetensors", tmp_path / "lora", rank=2)
    assert {t["kind"] for t in report.tensors} == {"conv1d"}
    assert [x["name"] for x in report.not_held] == ["transformer.h.0.attn.c_attn.bias"]
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["fan_in_fan_out"] is True
    from safetensors import safe_open

    with safe_open(tmp_path / "lora" / "adapter_model.safetensors", "pt") as f:
        a = f.get_slice("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").get_shape()
        b = f.get_slice("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight").get_shape()
    assert (a, b) == ([2, 32], [96, 2])  # lora_A (r, in), lora_B (out, r)
    merged = _check_errors(report, model, ft, tmp_path / "lora")
    for n in changes:
        assert float((merged[n] - ft[n]).norm() / (ft[n] - model.state_dict()[n]).norm()) < 0.01


def test_extract_select_and_errors(llama_base, tmp_path):
    model, base = llama_base
    ft = _finetune(model, {**LLAMA_CHANGES, "model.embed_tokens.weight": 2})
    paramscope.save(ft, tmp_path / "ft.safetensors")
    ftp = tmp_path / "ft.safetensors"
    r = lora_extract(base, ftp, tmp_path / "a", rank=2, select="*.self_attn.*")
    assert sorted(t["name"] for t in r.tensors) == sorted(n for n in LLAMA_CHANGES if "attn" in n)
    held = {x["name"]: x["reason"] for x in r.not_held}
    assert held == {
        "model.layers.0.mlp.down_proj.weight": "not selected",
        "model.embed_tokens.weight": "not selected",
    }
    r = lora_extract(base, ftp, tmp_path / "b", rank=2)  # default: embeddings left out
    assert {x["name"]: x["reason"] for x in r.not_held} == {
        "model.embed_tokens.weight": "embedding or head (by name)"
    }
    assert any("by name" in n for n in r.notes)
    with pytest.raises(ArgumentError, match="exactly one"):
        lora_extract(base, ftp, tmp_path / "c")
    with pytest.raises(ArgumentError, match="exactly one"):
        lora_extract(base, ftp, tmp_path / "c", rank=2, energy=0.9)
    with pytest.raises(ArgumentError, match="energy"):
        lora_extract(base, ftp, tmp_path / "c", energy=1.5)
    with pytest.raises(ArgumentError, match="nothing to extract"):
        lora_extract(base, base, tmp_path / "c", rank=2)
    assert not (tmp_path / "c" / "adapter_config.json").exists()
    short = {k: v for k, v in ft.items() if k != "model.norm.weight"}
    paramscope.save(short, tmp_path / "short.safetensors")
    with pytest.raises(EntryError, match=r"model\.norm\.weight"):
        lora_extract(base, tmp_path / "short.safetensors", tmp_path / "c", rank=2)
    wide = dict(ft)
    wide["model.norm.weight"] = torch.ones(33)
    paramscope.save(wide, tmp_path / "wide.safetensors")
    with pytest.raises(ShapeMismatchError, match=r"\[33\]"):
        lora_extract(base, tmp_path / "wide.safetensors", tmp_path / "c", rank=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError):
        lora_extract(base, ftp, tmp_path / "file", rank=2)


def test_extract_then_merge_round_trip(llama_base, tmp_path):
    model, base = llama_base
    ft = _finetune(model, LLAMA_CHANGES)
    paramscope.save(ft, tmp_path / "ft.safetensors")
    lora_extract(base, tmp_path / "ft.safetensors", tmp_path / "lora", rank=3)
    report = lora_merge(base, tmp_path / "lora", tmp_path / "m.safetensors")
    assert isinstance(report, LoraMergeReport) and report.merged == 3
    out = paramscope.load(tmp_path / "m.safetensors")
    for n in LLAMA_CHANGES:
        torch.testing.assert_close(out[n], ft[n], rtol=1e-5, atol=1e-5)


def test_extract_big_matrix_uses_svd_lowrank(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 280, generator=g)
    delta = _low_rank((300, 280), 2, g)
    paramscope.save({"fc.weight": w}, tmp_path / "b.safetensors")
    paramscope.save({"fc.weight": w + delta}, tmp_path / "f.safetensors")
    r = lora_extract(tmp_path / "b.safetensors", tmp_path / "f.safetensors", tmp_path / "l", rank=2)
    (t,) = r.tensors
    assert t["svd"] == "lowrank" and t["rank"] == 2 and t["relative_error"] < 1e-4
    assert t["params"] == 2 * (300 + 280) and t["full_params"] == 300 * 280
    m = lora_merge(tmp_path / "b.safetensors", tmp_path / "l", tmp_path / "m.safetensors")
    got = paramscope.load(tmp_path / "m.safetensors")["fc.weight"] - w
    assert float((got - delta).norm() / delta.norm()) == pytest.approx(
        t["relative_error"], abs=1e-4
    )
    assert m.modules[0]["name"] == "fc"


def test_merge_refuses_conv_and_broken_adapters(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 4))
    base = paramscope.save(model.state_dict(), tmp_path / "base.safetensors")
    pm = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=["0"]))
    pm.save_pretrained(tmp_path / "conv")
    assert read_adapter(tmp_path / "conv").modules == ["0"]
    with pytest.raises(EntryError, match="Conv"):
        lora_merge(base, tmp_path / "conv", tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["1"]}
    for name, tensors, match in [
        ("halfway", {"base_model.model.1.lora_A.weight": torch.zeros(2, 4)}, "lora_B"),
        ("unknown", {"base_model.model.1.lora_E": torch.zeros(2)}, "lora_E"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        paramscope.save(tensors, folder / "adapter_model.safetensors")
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
        with pytest.raises(FormatError, match=match):
            read_adapter(folder)
    # a rank that disagrees with the config
    folder = tmp_path / "rank"
    folder.mkdir()
    paramscope.save(
        {
            "base_model.model.1.lora_A.weight": torch.zeros(3, 4),
            "base_model.model.1.lora_B.weight": torch.zeros(4, 3),
        },
        folder / "adapter_model.safetensors",
    )
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ShapeMismatchError, match="rank 3"):
        lora_merge(base, folder, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
