"""load_into on meta-built models: ready to run afterwards, or the report says why not.

Every family is written by its real writer (``save_pretrained``), built again on the meta
device, loaded with ``load_into`` and run: the outputs must equal those of the normally built
model with the same weights. Buffers no checkpoint holds (rotary ``inv_freq``, BERT's
``position_ids`` / ``token_type_ids``, Gemma's ``embed_scale``) must have been computed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as T
from safetensors.torch import load_file, save_file
from torch import nn

import paramscope
from _helpers import SMALL_GPT2
from paramscope import ParamDict, ParamscopeError
from paramscope.building import zoo
from paramscope.lifecycle import load_into, match

SMALL = {
    "vocab_size": 100,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _families() -> dict[str, tuple[Any, Any]]:
    return {
        "llama": (T.LlamaConfig(**SMALL), T.LlamaForCausalLM),
        "mistral": (T.MistralConfig(**SMALL), T.MistralForCausalLM),
        "qwen2": (T.Qwen2Config(**SMALL), T.Qwen2ForCausalLM),
        "gemma": (T.GemmaConfig(**SMALL, head_dim=8), T.GemmaForCausalLM),
        "bert": (
            T.BertConfig(
                vocab_size=100,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
            ),
            T.BertModel,
        ),
        "gpt2": (
            T.GPT2Config(**{**SMALL_GPT2, "vocab_size": 100}),  # every family's vocabulary
            T.GPT2LMHeadModel,
        ),
        "t5": (
            T.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
            T.T5ForConditionalGeneration,
        ),
    }


def _out(model: nn.Module, x: torch.Tensor, family: str) -> torch.Tensor:
    kw = {"decoder_input_ids": x} if family == "t5" else {}
    with torch.no_grad():
        out = model(x, **kw)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", list(_families()))
def test_hf_family_built_on_meta_runs_after_load_into(family: str, tmp_path: Path) -> None:
    cfg, cls = _families()[family]
    torch.manual_seed(0)
    ref = cls(cfg).eval()
    ref.save_pretrained(tmp_path)
    with torch.device("meta"):
        model = cls(cfg)
    model.eval()
    r = load_into(model, tmp_path / "model.safetensors", strict=True)
    assert r.ok and r.still_meta == [], r.format()
    assert not any(t.is_meta for t in model.state_dict().values())
    assert not any(b.is_meta for b in model.buffers())
    for name, buf in ref.named_buffers():  # the computed buffers equal the real ones
        assert torch.equal(model.get_buffer(name), buf), name
    x = torch.randint(0, 100, (2, 8))
    out = _out(model, x, family)
    assert not out.isnan().any()
    assert torch.equal(out, _out(ref, x, family))


def test_the_buffers_each_family_needs_are_reported_as_recomputed(tmp_path: Path) -> None:
    needs = {
        "llama": {"model.rotary_emb.inv_freq", "model.rotary_emb.original_inv_freq"},
        "gemma": {"model.embed_tokens.embed_scale", "model.rotary_emb.inv_freq"},
        "bert": {"embeddings.position_ids", "embeddings.token_type_ids"},
    }
    for family, names in needs.items():
        cfg, cls = _families()[family]
        d = tmp_path / family
        cls(cfg).save_pretrained(d)
        with torch.device("meta"):
            model = cls(cfg)
        r = load_into(model, d / "model.safetensors")
        assert names <= set(r.recomputed), (family, r.recomputed)
        assert all("_init_weights (transformers)" in how for how in r.recomputed.values())
        assert "recomputed" in r.format()


def test_zoo_llama_on_meta_runs_after_load_into(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = zoo.build("llama-2-7b", **SMALL).eval()
    path = paramscope.save(ParamDict.from_module(ref), tmp_path / "m.safetensors")
    model = paramscope.resolve_target("zoo:llama-2-7b", SMALL).eval()
    assert model.model.rotary_emb.inv_freq.is_meta
    r = load_into(model, path, strict=True)
    assert r.ok, r.format()
    assert r.recomputed == {"model.rotary_emb.inv_freq": "rebuilt RotaryEmbedding on the CPU"}
    x = torch.randint(0, 100, (2, 8))
    assert torch.equal(model(x), ref(x))


class RandomProjection(nn.Module):
    """A non-persistent buffer filled at random: nothing can recompute it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.lin = nn.Linear(n, n)
        self.register_buffer("proj", torch.randn(n, n), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) @ self.proj


class Hidden(nn.Module):
    """Its constructor argument is not kept under its own name."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.lin = nn.Linear(size, size)
        self.register_buffer("ids", torch.arange(size), persistent=False)


def test_a_buffer_that_cannot_be_recomputed_makes_the_report_not_ok(tmp_path: Path) -> None:
    real = nn.Sequential(RandomProjection(4))
    path = paramscope.save(ParamDict.from_module(real), tmp_path / "r.safetensors")
    with torch.device("meta"):
        model = nn.Sequential(RandomProjection(4))
    dry = match(model, path)
    assert not dry.ok and [m["name"] for m in dry.still_meta] == ["0.proj"]
    with pytest.raises(ParamscopeError, match=r"0\.proj \(owner 0: RandomProjection\)"):
        load_into(model, path, strict=True)
    assert model[0].lin.weight.is_meta  # strict refused before changing anything
    r = load_into(model, path)
    assert not r.ok and r.loaded == ["0.lin.weight", "0.lin.bias"]
    (m,) = r.still_meta
    assert m["owner"] == "0" and m["kind"] == "RandomProjection"
    assert "does not compute it the same way twice" in m["reason"]
    assert "still on meta (1)" in r.format()
    assert json.loads(json.dumps(r.to_dict()))["ok"] is False


def test_a_constructor_argument_that_is_not_kept_is_named(tmp_path: Path) -> None:
    path = paramscope.save(ParamDict.from_module(Hidden(3)), tmp_path / "h.safetensors")
    with torch.device("meta"):
        model = Hidden(3)
    r = load_into(model, path)
    assert not r.ok
    assert "needs 'size', which the module does not keep" in r.still_meta[0]["reason"]


def test_a_buffer_the_checkpoint_holds_is_loaded_even_if_non_persistent(tmp_path: Path) -> None:
    """An old BERT/MiniLM checkpoint holds embeddings.position_ids (persistent back then)."""
    cfg, cls = _families()["bert"]
    torch.manual_seed(0)
    ref = cls(cfg).eval()
    ref.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    sd = load_file(f)
    assert "embeddings.position_ids" not in sd
    sd["embeddings.position_ids"] = torch.arange(64).view(1, 64)
    save_file(sd, f, metadata={"format": "pt"})
    with torch.device("meta"):
        model = cls(cfg)
    model.eval()
    r = load_into(model, f, strict=True)
    assert "embeddings.position_ids" in r.loaded
    assert r.unexpected == [] and r.suggestions == {}
    assert list(r.recomputed) == ["embeddings.token_type_ids"]
    x = torch.randint(0, 100, (2, 8))
    assert torch.equal(_out(model, x, "bert"), _out(ref, x, "bert"))


def test_a_checkpoint_buffer_of_another_shape_is_ignored_and_recomputed(tmp_path: Path) -> None:
    cfg, cls = _families()["bert"]
    cls(cfg).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    sd = load_file(f)
    sd["embeddings.position_ids"] = torch.arange(512).view(1, 512)
    save_file(sd, f, metadata={"format": "pt"})
    with torch.device("meta"):
        model = cls(cfg)
    r = load_into(model, f)
    assert r.ok, r.format()
    assert "shape (1, 64)" in r.ignored["embeddings.position_ids"]
    assert torch.equal(model.embeddings.position_ids, torch.arange(64).view(1, 64))


def test_old_per_layer_rotary_buffers_are_ignored(tmp_path: Path) -> None:
    cfg, cls = _families()["llama"]
    cls(cfg).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    sd = load_file(f)
    for i in range(2):
        sd[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    save_file(sd, f, metadata={"format": "pt"})
    with torch.device("meta"):
        model = cls(cfg)
    r = load_into(model, f, strict=True)
    assert r.ok and r.unexpected == []
    assert set(r.ignored) == {f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in (0, 1)}


@pytest.fixture
def hub_gpt2(tmp_path: Path) -> tuple[nn.Module, Path]:
    """A GPT-2 model.safetensors in the Hub layout: no ``transformer.`` prefix, causal masks."""
    torch.manual_seed(0)
    base = T.GPT2Model(T.GPT2Config(**SMALL_GPT2)).eval()
    base.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    sd = load_file(f)
    n = SMALL_GPT2["n_positions"]
    for i in range(SMALL_GPT2["n_layer"]):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(sd, f, metadata={"format": "pt"})
    return base, f


def test_hub_layout_gpt2_loads_into_the_zoo_head_model(hub_gpt2) -> None:
    base, f = hub_gpt2
    model = paramscope.resolve_target("zoo:gpt2", SMALL_GPT2).eval()
    dry = match(model, f)
    assert not dry.ok and dry.prefix_hint == "(none) → transformer."
    assert len(dry.ignored) == 4 and all("computes for itself" in w for w in dry.ignored.values())
    r = load_into(model, f, fix_prefix=True, strict=True)
    assert r.ok and r.prefix_fix == "(none) → transformer." and len(r.loaded) == 28
    assert model.lm_head.weight is model.transformer.wte.weight
    x = torch.randint(0, SMALL_GPT2["vocab_size"], (1, 8))
    with torch.no_grad():
        want = base(x).last_hidden_state @ base.wte.weight.T
        got = model(x)
    got = got[0] if isinstance(got, tuple) else got
    assert torch.allclose(got, want, atol=1e-5)


def test_prefix_fix_both_ways_between_base_and_head_models(tmp_path: Path) -> None:
    cfg = T.LlamaConfig(**SMALL)
    T.LlamaModel(cfg).save_pretrained(tmp_path / "base")
    T.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "head")
    with torch.device("meta"):
        head = T.LlamaForCausalLM(cfg)
        base = T.LlamaModel(cfg)
    r = load_into(head, tmp_path / "base" / "model.safetensors", fix_prefix=True)
    assert r.prefix_fix == "(none) → model."
    assert r.missing == ["lm_head.weight"] and r.unexpected == [] and not r.ok
    r = load_into(base, tmp_path / "head" / "model.safetensors", fix_prefix=True)
    assert r.prefix_fix == "model. → (none)"
    assert r.unexpected == ["lm_head.weight"] and r.missing == [] and not r.ok
    assert all(not p.is_meta for p in base.parameters())


def test_an_ambiguous_prefix_is_not_fixed() -> None:
    model = nn.ModuleDict({"enc": nn.Linear(2, 2), "dec": nn.Linear(2, 2)})
    r = match(model, {"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, fix_prefix=True)
    assert r.prefix_fix is None and r.prefix_hint is None and not r.ok


MINILM_CONFIG = {
    "_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "transformers_version": "4.8.2",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 1000,  # MiniLM has 30522; smaller here to keep the fixture small
}


def test_cli_match_minilm_config_against_its_checkpoint_exits_0(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The all-MiniLM-L6-v2 layout: BertModel keys and an old persistent position_ids."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(MINILM_CONFIG))
    cfg = T.BertConfig(**{k: v for k, v in MINILM_CONFIG.items() if k != "model_type"})
    model = T.BertModel(cfg)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["embeddings.position_ids"] = torch.arange(512).view(1, 512)
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    r = cli("match", "config.json", "model.safetensors")
    assert r.code == 0, r.out + r.err
    assert r.out.startswith("OK: would load")
    assert "recomputed (1): embeddings.token_type_ids" in r.out
    r = cli("match", "config.json", "model.safetensors", "--json")
    d = json.loads(r.out)
    assert d["ok"] and d["unexpected"] == [] and d["missing"] == []
    assert sorted(d["loaded"]) == sorted(sd)  # every stored entry, position_ids included


def test_cli_match_hub_gpt2_with_fix_prefix(cli, hub_gpt2) -> None:
    _, f = hub_gpt2
    args = [a for kv in (("--arg", f"{k}={v}") for k, v in SMALL_GPT2.items()) for a in kv]
    r = cli("match", "zoo:gpt2", f, *args)
    assert r.code == 1 and "hint: fix_prefix=True (--fix-prefix)" in r.out
    r = cli("match", "zoo:gpt2", f, "--fix-prefix", *args)
    assert r.code == 0, r.out + r.err
    assert "ignored (2): h.{0..1}.attn.bias" in r.out
