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
