"""``paramscope memory TARGET --measured`` (issue 15): the model run once on the meta device
under :func:`paramscope.measure_activations`; the peak, its phase and the module holding the
most in the text and in the JSON (``details.measured``); checkpoints are an error (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

import paramscope
from paramscope._targets import resolve_target


def _oracle(target: str, inputs: torch.Tensor, backward: bool) -> dict:
    model = resolve_target(target)
    assert isinstance(model, torch.nn.Module)
    model = model.to("meta")
    if not backward:
        model.eval()
    with torch.set_grad_enabled(backward):
        return paramscope.measure_activations(model, inputs, backward=backward)


def test_training_step_of_gpt2_matches_measure_activations(cli) -> None:
    code, out, err = cli(
        "memory", "zoo:gpt2", "--train", "--seq", "32", "--batch", "2", "--measured", "--json"
    )
    assert code == 0, err
    d = json.loads(out)
    m = d["details"]["measured"]
    ref = _oracle("zoo:gpt2", torch.zeros(2, 32, dtype=torch.long, device="meta"), True)
    assert (m["peak"], m["peak_phase"], m["saved"]) == (
        ref["peak"],
        ref["peak_phase"],
        ref["saved"],
    )
    assert m["top_module"] == ref["top_module"] == "lm_head"
    # lm_head's logits 2·32·50257 fp32 are among what it holds at the end of forward
    assert m["top_module_bytes"] >= 2 * 32 * 50257 * 4
    assert m["peak_phase"] == "backward" and m["inputs"] == ["(2, 32) int64"]
    assert d["breakdown"]["activations"] > 0  # the formula's row is still there
    text = cli("memory", "zoo:gpt2", "--train", "--seq", "32", "--batch", "2", "--measured").out
    assert "measured activations" in text and "in backward" in text and "'lm_head'" in text


def test_forward_of_an_mlp_with_an_input_shape(cli) -> None:
    code, out, err = cli("memory", "zoo:mlp", "--measured", "--input-shape", "8,784", "--json")
    assert code == 0, err
    m = json.loads(out)["details"]["measured"]
    ref = _oracle("zoo:mlp", torch.zeros(8, 784, device="meta"), False)
    assert (m["peak"], m["peak_phase"], m["top_module"]) == (
        ref["peak"],
        "forward",
        ref["top_module"],
    )
    assert m["peak"] > 0


def test_bad_uses_exit_2(cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(ckpt))
    code, _, err = cli("memory", str(ckpt), "--measured", "--seq", "8")
    assert code == 2 and "a checkpoint has no forward to run" in err and str(ckpt) in err
    code, _, err = cli("memory", "zoo:gpt2", "--measured")
    assert code == 2 and "--measured: give --seq" in err
    code, _, err = cli("memory", "zoo:mlp", "--input-shape", "1,784")
    assert code == 2 and "--input-shape needs --measured" in err


def _config(tmp_path: Path, name: str, cfg) -> str:
    cfg.architectures = [name]
    cfg.save_pretrained(tmp_path / name)
    return str(tmp_path / name / "config.json")


def test_transformers_cache_and_experts(cli, tmp_path: Path) -> None:
    """A config with use_cache=false runs with a cache (transformers cannot run without one
    on meta) and says the peak includes it; a mixture of experts is refused in one line;
    an encoder keeps no cache and gets no note."""
    import transformers as tf

    shape = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    off = _config(tmp_path, "LlamaForCausalLM", tf.LlamaConfig(**shape, use_cache=False))
    code, out, err = cli("memory", off, "--train", "--seq", "16", "--measured", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert "use_cache=True" in d["details"]["measured"]["inputs"]
    assert any("kept a KV cache" in n and "use_cache=True" in n for n in d["notes"])
    on = tmp_path / "on"
    on.mkdir()
    (on / "config.json").write_text(
        json.dumps({**json.loads(Path(off).read_text()), "use_cache": True})
    )
    code, out2, err = cli(
        "memory", str(on / "config.json"), "--train", "--seq", "16", "--measured", "--json"
    )
    assert code == 0, err
    assert json.loads(out2)["details"]["measured"]["peak"] == d["details"]["measured"]["peak"]

    bert = _config(
        tmp_path,
        "BertModel",
        tf.BertConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            vocab_size=100,
        ),
    )
    code, out, err = cli("memory", bert, "--train", "--seq", "16", "--measured", "--json")
    assert code == 0, err
    assert not any("KV cache" in n for n in json.loads(out)["notes"])

    moe = _config(
        tmp_path,
        "MixtralForCausalLM",
        tf.MixtralConfig(**shape, num_local_experts=4, num_experts_per_tok=2),
    )
    code, out, err = cli("memory", moe, "--train", "--seq", "16", "--measured")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "mixture of experts" in err


def test_a_kept_cache_raises_the_real_peak() -> None:
    """What the note says, on real tensors: the same tiny Llama's training peak is higher
    with use_cache=True than with use_cache=False."""
    import transformers as tf

    from paramscope.counting._activations import measure_activations

    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(
        tf.LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=100,
        )
    )
    ids = torch.zeros(1, 16, dtype=torch.long)
    peaks = [
        measure_activations(model, ids, kwargs={"use_cache": flag})["peak"]
        for flag in (False, True)
    ]
    assert peaks[1] > peaks[0]
