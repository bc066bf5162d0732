"""The CLI on model targets: zoo:, module:callable, HF config.json; memory and zoo commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "COLUMNS": "110", "NO_COLOR": "1", "TERM": "dumb"}
ENV.pop("PARAMSCOPE_DEBUG", None)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paramscope", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )


def ok_json(*args: str, cwd: Path | None = None) -> object:
    r = run(*args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def tree_adds_up(node: dict) -> None:
    kids = node.get("children", [])
    if kids:
        assert node["params"] == node["own_params"] + sum(k["params"] for k in kids), node["path"]
    for k in kids:
        tree_adds_up(k)


def test_count_zoo_gpt2_ties_once() -> None:
    d = ok_json("count", "zoo:gpt2")
    assert d["params"] == 124_439_808 and d["format"] == "module" and d["source"] == "zoo:gpt2"
    assert ["transformer.wte.weight", "lm_head.weight"] in d["ties"]


def test_inspect_zoo_golden(golden) -> None:
    r = run("inspect", "zoo:gpt2", "--depth", "3")
    assert r.returncode == 0, r.stderr
    golden("inspect_zoo_gpt2_depth3.txt", r.stdout)
    r = run("inspect", "zoo:mlp-3-5-2")
    assert r.returncode == 0, r.stderr
    golden("inspect_zoo_mlp_3_5_2.txt", r.stdout)


@pytest.mark.parametrize("depth", ["1", "2", "4"])
def test_inspect_module_json_tree_adds_up(depth: str) -> None:
    d = ok_json("inspect", "zoo:resnet18", "--depth", depth)
    assert d["total"]["params"] == 11_689_512 == d["tree"]["params"]
    tree_adds_up(d["tree"])
    assert sum(r["params"] for r in d["by_type"].values()) == d["total"]["params"]
    assert d["formulas"]["conv1"]["params"] == 3 * 64 * 7 * 7


def test_memory_json_hand_computed() -> None:
    d = ok_json(
        "memory",
        "zoo:llama-2-7b",
        "--dtype",
        "bf16",
        "--train",
        "--mixed-precision",
        "--zero",
        "3",
        "--gpus",
        "8",
    )
    psi = 6_738_415_616
    assert d["params"] == psi
    assert d["breakdown"]["weights"] == 2 * psi
    assert d["breakdown"]["optimizer_states"] == 8 * psi
    assert d["breakdown"]["master_weights"] == 4 * psi
    assert d["per_gpu_bytes"] == 16 * psi // 8 + d["breakdown"]["buffers"]
    assert d["total_bytes"] == 8 * d["per_gpu_bytes"]
    assert any("activations" in n for n in d["notes"])


def test_memory_golden(golden) -> None:
    r = run("memory", "zoo:gpt2", "--dtype", "bf16", "--train", "--mixed-precision")
    assert r.returncode == 0, r.stderr
    golden("memory_zoo_gpt2.txt", r.stdout)


def test_zoo_listing_matches_references(golden) -> None:
    from paramscope.building import zoo

    rows = ok_json("zoo")
    assert [r["name"] for r in rows] == [f"zoo:{n}" for n in zoo.names()]
    for r in rows:
        assert r["params"] == zoo.REFERENCE_PARAMS[r["name"][4:]], r["name"]
    r = run("zoo")
    assert r.returncode == 0
    golden("zoo_list.txt", r.stdout)


def test_callable_target_with_args(tmp_path: Path) -> None:
    (tmp_path / "cli_user_model.py").write_text(
        "from torch import nn\n"
        "def make(width=4, depth=1):\n"
        "    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])\n"
    )
    d = ok_json(
        "count", "cli_user_model:make", "--arg", "width=1000", "--arg", "depth=3", cwd=tmp_path
    )
    assert d["params"] == 3 * (1000 * 1000 + 1000)
    r = run("count", "cli_user_model:make", "--arg", "colour=red", cwd=tmp_path)
    assert r.returncode == 2 and "colour" in r.stderr and r.stderr.count("\n") == 1


def test_bad_targets_exit_2() -> None:
    r = run("count", "zoo:gpt3")
    assert r.returncode == 2 and "zoo model" in r.stderr and "gpt2" in r.stderr
    r = run("inspect", "nosuchpkg_zz.models:make")
    assert r.returncode == 2 and "cannot import" in r.stderr
    r = run("memory", "zoo:gpt2", "--optimizer", "lion")
    assert r.returncode == 2 and "lion" in r.stderr


def test_hf_config_target(tmp_path: Path) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    d = ok_json("count", str(tmp_path / "config.json"))
    emb = 100 * 64
    # q,o: 64×64; k,v: 64×(2 heads × 16); mlp 3×64×128; two RMSNorms per layer
    layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    assert d["params"] == emb + 2 * layer + 64 + 100 * 64


def test_inspect_module_filter_keeps_matches_and_their_ancestors() -> None:
    d = ok_json("inspect", "zoo:llama-2-7b", "--depth", "4", "--filter", "model.layers.1.*")

    def paths(node: dict) -> list[str]:
        return [node["path"]] + [p for c in node.get("children", []) for p in paths(c)]

    got = paths(d["tree"])
    assert got[:4] == ["", "model", "model.layers", "model.layers.1"]
    assert "model.layers.1.self_attn" in got and "model.layers.1.mlp" in got
    assert not any(p.startswith(("model.layers.0", "model.layers.2", "lm_head")) for p in got)
    assert d["filter"] == "model.layers.1.*"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["--filter", "tranformer.h.*"],
            [
                "'tranformer.h.*' matches no module path",
                "did you mean 'transformer.h.*'",
                "names start with 'lm_head', 'transformer'",
            ],
        ),
        (
            ["--depth", "2", "--filter", "transformer.h.1.attn.*"],
            [
                "matches no module path in the tree shown",
                "'transformer.h.1.attn.c_attn'",
                "use --depth 5",
            ],
        ),
        (
            ["--filter", "*.weight"],
            [
                "matches no module path",
                "it matches parameter names",
                "selects module paths such as 'transformer.wte'",
            ],
        ),
    ],
)
def test_inspect_module_filter_matching_nothing_exits_2(args: list[str], needles: list[str]):
    r = run("inspect", "zoo:gpt2", *args)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_piped_output_is_never_cut() -> None:
    """A real pipe, with a narrow COLUMNS: numbers and names stay whole, lines unpadded."""
    env = {**ENV, "COLUMNS": "40"}
    p = subprocess.run(
        [sys.executable, "-m", "paramscope", "inspect", "zoo:llama-3-8b", "--depth", "2"],
        env=env,
        capture_output=True,  # stdout is a real pipe
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any("8,030,261,248" in line and "LlamaForCausalLM" in line for line in lines)
    assert any("embed_tokens" in line and "128256×4096 = 525,336,576" in line for line in lines)
    assert "…" not in p.stdout
    assert all(line == line.rstrip(" ") for line in lines)


def test_cli_runner_output_is_never_cut() -> None:
    from typer.testing import CliRunner

    from paramscope.cli._app import app

    r = CliRunner().invoke(
        app, ["inspect", "zoo:llama-3-8b", "--depth", "2"], env={"COLUMNS": "40"}
    )
    assert r.exit_code == 0, r.output
    assert "8,030,261,248" in r.output and "rotary_emb" in r.output and "…" not in r.output
    r = CliRunner().invoke(
        app, ["inspect", "zoo:llama-3-8b", "--depth", "5", "--filter", "*.q_proj"]
    )
    assert r.exit_code == 0, r.output
    assert "4096×4096 = 16,777,216" in r.output
