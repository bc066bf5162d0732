"""The model zoo: exact reference counts, reference state_dict layouts, forward passes, errors.

The oracles are (1) parameter counts read off the real torchvision 0.29.1 and transformers
5.24.0 models and hard-coded below, (2) tests/data/zoo_reference_keys.json, the state_dict
keys and shapes dumped from those libraries, and (3) where transformers is installed, the live
transformers models themselves, built on the meta device (and run on tiny configs).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from _helpers import SMALL_GPT2, without_torch
from paramscope import ArgumentError, ArgumentTypeError, MissingNameError
from paramscope.building import zoo

FIXTURE = json.loads((Path(__file__).parent / "data" / "zoo_reference_keys.json").read_text())
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None

# sum(p.numel() for p in model.parameters()) of each reference, ties counted once.
EXPECTED_PARAMS = {
    "mlp": 235_146,  # 784*256+256 + 256*128+128 + 128*10+10
    "mlp-3-5-2": 32,  # 3*5+5 + 5*2+2
    "lenet5": 61_706,  # 156 + 2,416 + 48,120 + 10,164 + 850
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vgg16": 138_357_544,
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "bert-base": 109_482_240,
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "vit-b-16": 86_567_656,
}

GPT2_TINY = {**SMALL_GPT2, "vocab_size": 100}  # every tiny config here has 100 tokens
BERT_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 100,
}
LLAMA_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
}


def on_meta(name: str, **overrides) -> torch.nn.Module:
    with torch.device("meta"):
        return zoo.build(name, **overrides)


def layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def layout_lines(model: torch.nn.Module) -> list[str]:
    return [f"{k}:{','.join(map(str, s))}" for k, s in layout(model).items()]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- registry


def test_names_in_order():
    assert zoo.names() == list(EXPECTED_PARAMS)
    assert set(zoo.REFERENCE_PARAMS) == set(zoo.REFERENCE) == set(EXPECTED_PARAMS)
    for name in zoo.names():
        line = zoo.describe(name)
        assert line and "\n" not in line
    assert zoo.describe("gpt2") == "GPT-2 small (124M), tied LM head, HF GPT2LMHeadModel layout"
    assert zoo.REFERENCE["resnet18"].endswith("torchvision.models.resnet18()")
    assert "GPT2LMHeadModel(GPT2Config())" in zoo.REFERENCE["gpt2"]


def test_registry_works_without_torch():
    code = (
        "from paramscope.building import zoo\n"
        "result = [zoo.names(), zoo.describe('bert-base'), zoo.REFERENCE_PARAMS['gpt2-xl']]\n"
    )
    names, bert, xl = without_torch(code)
    assert names == list(zoo.names()) and names[0] == "mlp"
    assert bert == zoo.describe("bert-base") and xl == 1_557_611_200


# ---------------------------------------------------------------- counts


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_reference_param_count(name):
    model = on_meta(name)
    assert n_params(model) == zoo.REFERENCE_PARAMS[name] == EXPECTED_PARAMS[name]
    assert all(t.is_meta for t in model.state_dict().values())


def test_fixture_agrees_with_reference_counts():
    for name, entry in FIXTURE["models"].items():
        assert entry["params"] == EXPECTED_PARAMS[name], name


def test_llama_70b_by_overrides():
    # Llama 3 70B; 70,553,706,496 checked against transformers 5.24.0 LlamaForCausalLM on meta
    model = on_meta(
        "llama-3-8b",
        hidden_size=8192,
        num_hidden_layers=80,
        num_attention_heads=64,
        intermediate_size=28672,
    )
    assert n_params(model) == 70_553_706_496


# ---------------------------------------------------------------- layouts


def test_small_model_layouts():
    assert layout(on_meta("mlp")) == {
        "0.weight": (256, 784),
        "0.bias": (256,),
        "2.weight": (128, 256),
        "2.bias": (128,),
        "4.weight": (10, 128),
        "4.bias": (10,),
    }
    assert layout(on_meta("mlp-3-5-2")) == {
        "hidden.weight": (5, 3),
        "hidden.bias": (5,),
        "output.weight": (2, 5),
        "output.bias": (2,),
    }
    assert layout(on_meta("lenet5")) == {
        "conv1.weight": (6, 1, 5, 5),
        "conv1.bias": (6,),
        "conv2.weight": (16, 6, 5, 5),
        "conv2.bias": (16,),
        "fc1.weight": (120, 400),
        "fc1.bias": (120,),
        "fc2.weight": (84, 120),
        "fc2.bias": (84,),
        "fc3.weight": (10, 84),
        "fc3.bias": (10,),
    }


@pytest.mark.parametrize("name", list(FIXTURE["models"]))
def test_layout_matches_fixture(name):
    entry = FIXTURE["models"][name]
    lines = layout_lines(on_meta(name))
    if "keys" in entry:
        assert lines == entry["keys"]  # same keys, shapes and order
    assert len(lines) == entry["n_keys"]
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    assert digest == entry["sha256"]


def test_gpt2_lm_head_is_tied():
    model = on_meta("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    state = model.state_dict()
    assert "lm_head.weight" in state and "transformer.wte.weight" in state
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (768, 2304)  # Conv1D: (in, out)
    untied = on_meta("gpt2", tie_word_embeddings=False)
    assert n_params(untied) == 124_439_808 + 50257 * 768


def test_llama_rotary_buffer_is_not_saved():
    model = on_meta("llama-2-7b", **LLAMA_TINY)
    assert "model.rotary_emb.inv_freq" in dict(model.named_buffers())
    assert "model.rotary_emb.inv_freq" not in model.state_dict()
    assert model.model.rotary_emb.inv_freq.shape == (8,)


HF_CASES = {
    "gpt2": [{}, GPT2_TINY],
    "bert-base": [{}, BERT_TINY],
    "llama-2-7b": [{}, LLAMA_TINY],
    "llama-3-8b": [{}, LLAMA_TINY],
}
LAYER_3_ON = re.compile(r"\.(h|layer|layers)\.([2-9]|\d\d+)\.")


def hf_reference(name: str, overrides: dict) -> torch.nn.Module:
    import transformers as tf

    if name.startswith("gpt2"):
        return tf.GPT2LMHeadModel(tf.GPT2Config(**overrides))
    if name == "bert-base":
        return tf.BertModel(tf.BertConfig(**overrides))
    llama: dict[str, dict] = {
        "llama-2-7b": {},
        "llama-3-8b": {"num_key_value_heads": 8, "vocab_size": 128256, "intermediate_size": 14336},
    }
    base = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32}
    base |= {"num_key_value_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000}
    return tf.LlamaForCausalLM(tf.LlamaConfig(**(base | llama[name] | overrides)))


@pytest.mark.parametrize(
    ("name", "overrides"),
    [(name, o) for name, cases in HF_CASES.items() for o in cases],
    ids=lambda v: v if isinstance(v, str) else ("default" if not v else "tiny"),
)
def test_hf_layout(name, overrides):
    ours = on_meta(name, **overrides)
    if HAS_TRANSFORMERS:
        with torch.device("meta"):
            ref = hf_reference(name, overrides)
        assert list(layout(ours).items()) == list(layout(ref).items())
        assert n_params(ours) == n_params(ref)
    else:  # the committed dump of transformers 5.24.0 is the reference
        if not overrides:
            entry = FIXTURE["models"][name]
            digest = hashlib.sha256("\n".join(sorted(layout_lines(ours))).encode()).hexdigest()
            assert (digest, n_params(ours)) == (entry["sha256"], entry["params"])
        else:  # a tiny model has the keys of the (fixture-checked) default's first two layers
            first_two = {k for k in layout(on_meta(name)) if not LAYER_3_ON.search(k)}
            assert set(layout(ours)) == first_two


# ---------------------------------------------------------------- forward


IDS = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("name", "overrides", "x", "shape"),
    [
        ("mlp", {}, torch.randn(2, 784), (2, 10)),
        ("mlp-3-5-2", {}, torch.randn(2, 3), (2, 2)),
        ("lenet5", {}, torch.randn(2, 1, 32, 32), (2, 10)),
        ("resnet18", {}, torch.randn(1, 3, 64, 64), (1, 1000)),
        ("resnet50", {}, torch.randn(1, 3, 64, 64), (1, 1000)),
        ("vgg16", {"hidden": 64, "num_classes": 10}, torch.randn(1, 3, 32, 32), (1, 10)),
        (
            "vit-b-16",
            {"image_size": 32, "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "mlp_dim": 128},
            torch.randn(1, 3, 32, 32),
            (1, 1000),
        ),
        ("gpt2", GPT2_TINY, IDS, (1, 8, 100)),
        ("llama-2-7b", LLAMA_TINY, IDS, (1, 8, 100)),
        ("llama-3-8b", LLAMA_TINY, IDS, (1, 8, 100)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_forward_shapes(name, overrides, x, shape):
    model = zoo.build(name, **overrides).eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == shape
    assert torch.isfinite(y).all()


def test_bert_forward_shapes():
    model = zoo.build("bert-base", **BERT_TINY).eval()
    mask = torch.ones(1, 8, dtype=torch.long)
    mask[0, 6:] = 0
    with torch.no_grad():
        hidden, pooled = model(IDS, attention_mask=mask)
    assert hidden.shape == (1, 8, 64)
    assert pooled.shape == (1, 64)


def test_init_is_real_off_meta():
    model = zoo.build("gpt2", **GPT2_TINY)
    std = model.transformer.wte.weight.std().item()
    assert 0.015 < std < 0.025  # transformers' N(0, 0.02)
    assert torch.all(model.transformer.h[0].attn.c_attn.bias == 0)


def test_same_numbers_as_transformers():
    """Load the live transformers model's weights into ours: same outputs (tiny configs)."""
    if not HAS_TRANSFORMERS:  # nothing live to compare with; layouts are checked above
        return
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 8))
    for name, overrides in (("gpt2", GPT2_TINY), ("bert-base", BERT_TINY)):
        ref = hf_reference(name, overrides).eval()
        ours = zoo.build(name, **overrides).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        with torch.no_grad():
            out = ref(ids)
            got = ours(ids)
        if name == "bert-base":
            torch.testing.assert_close(got[0], out.last_hidden_state)
            torch.testing.assert_close(got[1], out.pooler_output)
        else:
            torch.testing.assert_close(got, out.logits)
    import transformers as tf

    for name in ("llama-2-7b", "llama-3-8b"):
        ours = zoo.build(name, **LLAMA_TINY).eval()
        theta = ours.config.rope_theta
        cfg = tf.LlamaConfig(**LLAMA_TINY, rope_theta=theta, rms_norm_eps=1e-5)
        ref = tf.LlamaForCausalLM(cfg).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        torch.testing.assert_close(ours.model.rotary_emb.inv_freq, ref.model.rotary_emb.inv_freq)
        with torch.no_grad():
            torch.testing.assert_close(ours(ids), ref(ids).logits)


# ---------------------------------------------------------------- errors


def test_unknown_name_suggests_close_one():
    with pytest.raises(MissingNameError, match=r"no zoo model 'gtp2'; did you mean 'gpt2'"):
        zoo.build("gtp2")
    with pytest.raises(MissingNameError, match="resnet50"):
        zoo.describe("resnet05")


def test_unknown_override_names_the_key():
    with pytest.raises(ArgumentError, match=r"'n_embed'.*valid fields are .*n_embd"):
        zoo.build("gpt2", n_embed=64)


def test_invalid_override_is_refused():
    with pytest.raises(ArgumentError, match="n_head=5 must divide n_embd=64"):
        on_meta("gpt2", n_embd=64, n_head=5)
    with pytest.raises(ArgumentError, match="num_key_value_heads=3"):
        on_meta("llama-3-8b", num_key_value_heads=3)
    with pytest.raises(ArgumentTypeError, match=r"n_layer='2': expected an int"):
        on_meta("gpt2", n_layer="2")  # a str, as a CLI --arg that is no JSON would give
