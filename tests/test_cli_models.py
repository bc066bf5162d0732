"""The CLI on model targets: zoo:, module:callable, HF config.json; memory and zoo commands.

In process (the ``cli`` fixture), but for the one test whose point is a real pipe.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from _helpers import run_cli


@pytest.fixture
def ok_json(cli):
    """``paramscope ARGS... --json`` that must succeed: its JSON."""

    def run(*args: str) -> object:
        r = cli(*args, "--json")
        assert r.code == 0, r.err
        return json.loads(r.out)

    return run


def tree_adds_up(node: dict) -> None:
    kids = node.get("children", [])
    if kids:
        assert node["params"] == node["own_params"] + sum(k["params"] for k in kids), node["path"]
    for k in kids:
        tree_adds_up(k)


def test_count_zoo_gpt2_ties_once(ok_json) -> None:
    d = ok_json("count", "zoo:gpt2")
    assert d["params"] == 124_439_808 and d["format"] == "module" and d["source"] == "zoo:gpt2"
    assert ["transformer.wte.weight", "lm_head.weight"] in d["ties"]


def test_inspect_zoo_golden(cli, golden) -> None:
    r = cli("inspect", "zoo:gpt2", "--depth", "3")
    assert r.code == 0, r.err
    golden("inspect_zoo_gpt2_depth3.txt", r.out)
    r = cli("inspect", "zoo:mlp-3-5-2")
    assert r.code == 0, r.err
    golden("inspect_zoo_mlp_3_5_2.txt", r.out)


@pytest.mark.parametrize("depth", ["1", "2", "4"])
def test_inspect_module_json_tree_adds_up(ok_json, depth: str) -> None:
    d = ok_json("inspect", "zoo:resnet18", "--depth", depth)
    assert d["total"]["params"] == 11_689_512 == d["tree"]["params"]
    tree_adds_up(d["tree"])
    assert sum(r["params"] for r in d["by_type"].values()) == d["total"]["params"]
    assert d["formulas"]["conv1"]["params"] == 3 * 64 * 7 * 7


def test_memory_json_hand_computed(ok_json) -> None:
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


def test_memory_golden(cli, golden) -> None:
    r = cli("memory", "zoo:gpt2", "--dtype", "bf16", "--train", "--mixed-precision")
    assert r.code == 0, r.err
    golden("memory_zoo_gpt2.txt", r.out)


def test_zoo_listing_matches_references(cli, ok_json, golden) -> None:
    from paramscope.building import zoo

    rows = ok_json("zoo")
    assert [r["name"] for r in rows] == [f"zoo:{n}" for n in zoo.names()]
    for r in rows:
        assert r["params"] == zoo.REFERENCE_PARAMS[r["name"][4:]], r["name"]
    r = cli("zoo")
    assert r.code == 0
    golden("zoo_list.txt", r.out)


def test_callable_target_with_args(
    cli, ok_json, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a module of the current folder, as `python -m` finds it
    (tmp_path / "cli_user_model.py").write_text(
        "from torch import nn\n"
        "def make(width=4, depth=1):\n"
        "    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])\n"
    )
    try:
        d = ok_json("count", "cli_user_model:make", "--arg", "width=1000", "--arg", "depth=3")
        assert d["params"] == 3 * (1000 * 1000 + 1000)
        r = cli("count", "cli_user_model:make", "--arg", "colour=red")
        assert r.code == 2 and "colour" in r.err and r.err.count("\n") == 1
    finally:
        sys.modules.pop("cli_user_model", None)


def test_bad_targets_exit_2(cli) -> None:
    for args, needles in (
        (["count", "zoo:gpt3"], ["zoo model", "gpt2"]),
        (["inspect", "nosuchpkg_zz.models:make"], ["cannot import", "nosuchpkg_zz"]),
        (["memory", "zoo:gpt2", "--optimizer", "lion"], ["lion"]),
    ):
        r = cli(*args)
        assert r.code == 2 and r.out == "", r
        (line,) = r.err.splitlines()  # one line, no traceback
        assert line.startswith("paramscope: error: ")
        assert all(needle in line for needle in needles), (needles, line)


def test_hf_config_target(ok_json, tmp_path: Path) -> None:
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


def test_inspect_module_filter_keeps_matches_and_their_ancestors(ok_json) -> None:
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
def test_inspect_module_filter_matching_nothing_exits_2(
    cli, args: list[str], needles: list[str]
) -> None:
    r = cli("inspect", "zoo:gpt2", *args)
    assert r.code == 2 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_piped_output_is_never_cut() -> None:
    """A real pipe, with a narrow COLUMNS: numbers and names stay whole, lines unpadded."""
    p = run_cli("inspect", "zoo:llama-3-8b", "--depth", "2", env={"COLUMNS": "40"})  # a pipe
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any("8,030,261,248" in line and "LlamaForCausalLM" in line for line in lines)
    assert any("embed_tokens" in line and "128256×4096 = 525,336,576" in line for line in lines)
    assert "…" not in p.stdout
    assert all(line == line.rstrip(" ") for line in lines)


def test_captured_output_is_never_cut(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Output captured in this process (not a terminal), with a narrow COLUMNS."""
    monkeypatch.setenv("COLUMNS", "40")
    r = cli("inspect", "zoo:llama-3-8b", "--depth", "2")
    assert r.code == 0, r.err
    assert "8,030,261,248" in r.out and "rotary_emb" in r.out and "…" not in r.out
    r = cli("inspect", "zoo:llama-3-8b", "--depth", "5", "--filter", "*.q_proj")
    assert r.code == 0, r.err
    rows = [line for line in r.out.splitlines()[1:] if "q_proj" in line]  # past the title
    assert len(rows) == 32 and all("4096×4096 = 16,777,216" in line for line in rows)
