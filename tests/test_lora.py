"""LoRA before training: adapter counts against peft itself, the published mt0-large figure,
GPT-3's shapes analytically, an adapter folder written by peft's ``save_pretrained``, and the
``--lora`` CLI option."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramscope
from paramscope import ArgumentError, LoraSpec
from paramscope.cli import main

peft = pytest.importorskip("peft")  # the test extra installs it; never skipped there
transformers = pytest.importorskip("transformers")


def _peft_counts(model: torch.nn.Module, **config: Any) -> tuple[int, int]:
    pm = peft.get_peft_model(model, peft.LoraConfig(**config))
    return pm.get_nb_trainable_parameters()  # (trainable, all)


# mt5-large's config.json (google/mt5-large; bigscience/mt0-large is a fine-tune of it),
# the fields that fix its shapes, written inline: no download.
MT5_LARGE = {
    "d_ff": 2816,
    "d_kv": 64,
    "d_model": 1024,
    "feed_forward_proj": "gated-gelu",
    "num_decoder_layers": 24,
    "num_heads": 16,
    "num_layers": 24,
    "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False,
    "vocab_size": 250112,
}


def test_mt0_large_as_peft_prints() -> None:
    # peft's README: "trainable params: 2359296 || all params: 1231940608" for mt0-large,
    # LoraConfig(r=8, lora_alpha=32, target_modules=["q", "v"]) (T5's default targets).
    config = transformers.MT5Config(**MT5_LARGE)
    config.tie_word_embeddings = False  # transformers 5 ignores it as a constructor argument
    with torch.device("meta"):
        model = transformers.MT5ForConditionalGeneration(config)
    # transformers 4 (whose count peft printed) kept both stacks' embed_tokens as the shared
    # embedding and only lm_head apart; transformers 5 unties all three without tying
    model.encoder.embed_tokens = model.shared
    model.decoder.embed_tokens = model.shared
    c = paramscope.count(model, lora=LoraSpec(8, 32, ["q", "v"]))
    assert (c.trainable, c.params) == (2_359_296, 1_231_940_608)
    assert c.frozen == c.params - c.trainable
    assert (
        c.lora is not None and c.lora["modules"] == 24 * 2 + 24 * 2 * 2
    )  # enc self; dec self+cross


def test_gpt3_analytic(tmp_path: Path) -> None:
    # GPT-3 175B's attention shapes (d_model 12288, 96 layers, 96 heads; Brown et al. 2020,
    # Table 2.1) in a llama-type config.json, counted from the config alone; r=4 on Wq, Wv as
    # in the LoRA paper (Hu et al. 2021, section 4): 96 × 2 × 4 × (12288 + 12288).
    cfg = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 12288,
        "intermediate_size": 49152,
        "num_hidden_layers": 96,
        "num_attention_heads": 96,
        "num_key_value_heads": 96,
        "vocab_size": 50257,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    c = paramscope.count(tmp_path / "config.json", lora=LoraSpec(4, targets=["q_proj", "v_proj"]))
    assert c.format != "module"  # analytic: no model was built
    assert c.trainable == 18_874_368 == 96 * 2 * 4 * (12288 + 12288)
    assert c.lora is not None and c.lora["adapter_bytes"] == 4 * 18_874_368


def _llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return transformers.LlamaForCausalLM(cfg)


def _gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(vocab_size=80, n_positions=16, n_embd=24, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(cfg)


class _ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3)
        self.conv2 = torch.nn.Conv2d(8, 8, (3, 5), groups=2)
        self.emb = torch.nn.Embedding(30, 6)
        self.head = torch.nn.Linear(8, 4)


_CASES = {
    "llama": (
        _llama,
        [
            "q_proj",
            "v_proj",
            "k_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "embed_tokens",
            "lm_head",
        ],
    ),
    "gpt2": (_gpt2, ["c_attn", "c_proj", "c_fc", "wte", "wpe"]),
    "conv": (_ConvNet, ["conv1", "conv2", "emb", "head"]),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(sorted(_CASES)),
    r=st.sampled_from([1, 2, 4, 8]),
    data=st.data(),
    bias=st.booleans(),
)
def test_against_peft(case: str, r: int, data: st.DataObject, bias: bool) -> None:
    build, names = _CASES[case]
    targets = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    if bias and any(t in ("embed_tokens", "wte", "wpe", "emb") for t in targets):
        bias = False  # peft: lora_bias is not supported for Embedding layers
    if "conv2" in targets and r % 2:  # groups=2: peft's lora_B Conv(r, out, groups=2) fails
        with pytest.raises(ValueError, match="groups"):
            _peft_counts(build(), r=r, target_modules=targets)
        with pytest.raises(ArgumentError, match="groups=2"):
            paramscope.count(build(), lora=LoraSpec(r, 16, targets))
        return
    c = paramscope.count(build(), lora=LoraSpec(r, 16, targets, bias=bias))
    trainable, total = _peft_counts(
        build(), r=r, lora_alpha=16, target_modules=targets, lora_bias=bias
    )
    assert (c.trainable, c.params) == (trainable, total), targets


def test_regex_targets_match_like_peft() -> None:
    regex = r".*layers\.1\.self_attn\.(q|v)_proj"
    c = paramscope.count(_llama(), lora=LoraSpec(4, targets=regex))
    trainable, _ = _peft_counts(_llama(), r=4, target_modules=regex)
    assert c.trainable == trainable and c.lora is not None and c.lora["modules"] == 2


def test_checkpoint_shapes_match_the_module(tmp_path: Path) -> None:
    model = _llama()
    path = paramscope.save(model.state_dict(), tmp_path / "model.safetensors")
    spec = LoraSpec(8, targets=["q_proj", "down_proj"])
    assert (
        paramscope.count(path, lora=spec).trainable == paramscope.count(model, lora=spec).trainable
    )


def test_adapter_folder_written_by_peft(tmp_path: Path) -> None:
    pm = peft.get_peft_model(
        _llama(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    pm.save_pretrained(tmp_path)
    trainable, _ = pm.get_nb_trainable_parameters()
    c = paramscope.count(tmp_path)
    assert c.params == trainable
    assert c.lora is not None
    assert (c.lora["peft_type"], c.lora["r"], c.lora["alpha"]) == ("LORA", 4, 8)
    assert c.lora["targets"] == ["q_proj", "v_proj"]
    assert any("adapter" in n for n in c.notes)
    f = paramscope.count(tmp_path / "adapter_model.safetensors")
    assert f.lora == c.lora


def test_memory_of_a_lora_run() -> None:
    spec = LoraSpec(4, targets=["q_proj", "v_proj"])
    model = _llama()
    base = paramscope.count(model).params
    adapters = paramscope.count(model, lora=spec).trainable
    e = paramscope.estimate_memory(model, training=True, lora=spec)
    assert e.trainable == adapters and e.params == base + adapters
    assert e.weights == 4 * (base + adapters)  # fp32 base as stored + fp32 adapters
    assert e.gradients == 4 * adapters and e.optimizer_states == 2 * 4 * adapters
    assert e.settings["lora"]["adapter_bytes"] == 4 * adapters
    half = paramscope.estimate_memory(model.to(torch.bfloat16), training=True, lora=spec)
    assert half.weights == 2 * base + 4 * adapters  # the base at its stored dtype


def test_parse() -> None:
    s = LoraSpec.parse("r=16,alpha=32,targets=q_proj,v_proj,bias=true")
    assert (s.r, s.alpha, s.targets, s.bias) == (16, 32.0, ("q_proj", "v_proj"), True)
    assert LoraSpec.parse("r=2,regex=.*(q|v),x").targets == ".*(q|v),x"
    for bad in (
        "alpha=3,targets=q",
        "r=4",
        "r=4,rank=3,targets=q",
        "r=x,targets=q",
        "r=0,targets=q",
    ):
        with pytest.raises(ArgumentError):
            LoraSpec.parse(bad)


def test_bad_targets_name_the_module() -> None:
    with pytest.raises(ArgumentError, match="match no module"):
        paramscope.count(_llama(), lora=LoraSpec(4, targets=["nope"]))
    with pytest.raises(ArgumentError, match=r"'model\.layers\.0\.self_attn' is a LlamaAttention"):
        paramscope.count(_llama(), lora=LoraSpec(4, targets=["self_attn"]))
    with pytest.raises(ArgumentError, match="LlamaRMSNorm"):
        paramscope.count(_llama(), lora=LoraSpec(4, targets=["norm"]))


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["count", "zoo:llama-2-7b", "--lora", "r=16,alpha=32,targets=q_proj,v_proj", "--json"])
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    # peft prints "trainable params: 8,388,608 || all params: 6,746,804,224" for Llama-2-7B
    assert (d["trainable"], d["params"]) == (8_388_608, 6_746_804_224)
    assert main(["memory", "zoo:gpt2", "--train", "--lora", "r=4,targets=c_attn", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["breakdown"]["gradients"] == 4 * 12 * 4 * (768 + 2304)
    assert main(["count", "zoo:gpt2", "--lora", "r=4,targets=nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "match no module" in err
