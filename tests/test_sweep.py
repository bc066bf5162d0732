"""Config sweeps (issue 21): every row is what the single-point functions give for that point
built alone (``paramscope.count``, ``paramscope.flops``, ``paramscope.estimate_memory``),
parameters are checked against transformers' own models built from ``LlamaConfig`` /
``GPT2Config``, the closed form is checked by predicting points outside the grid, bad points
are rows, and the HTML page is opened in headless Chromium with the network blocked."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramscope
from _browser import Browser
from paramscope._errors import ArgumentError
from paramscope._targets import resolve_target
from paramscope.counting._sweep import parse_grid, sweep
from paramscope.reporting._sweep_html import sweep_chart_data, write_sweep_html

LLAMA_MODULE = '''
from paramscope.building import zoo

def llama(hidden, layers, heads=4, kv_heads=4, ffn=None, vocab=1000):
    """A Llama-shaped callable: the zoo's Llama with the usual knobs."""
    return zoo.build("llama-2-7b", hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads,
                     intermediate_size=ffn or 4 * hidden, vocab_size=vocab)
'''


@pytest.fixture
def llama_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "psweep_models.py").write_text(LLAMA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "psweep_models:llama"
    sys.modules.pop("psweep_models", None)


def _hf_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # unique parameters (ties once)


# ------------------------------------------------------------------ rows = single points


def test_rows_equal_single_points_built_alone(llama_target: str) -> None:
    grid = {"hidden": [64, 128], "layers": [1, 3], "heads": [4]}
    r = sweep(llama_target, grid, flops=True, seq=32, batch=2, memory=True, train=True)
    assert r.swept == ["hidden", "layers"] and r.fixed == {"heads": 4}
    assert len(r.rows) == 4 and r.errors == 0
    for row in r.rows:
        args = {**row["args"], "heads": 4}
        model = resolve_target(llama_target, args)
        c = paramscope.count(model)
        f = paramscope.flops(model, seq=32, batch=2)
        m = paramscope.estimate_memory(model, training=True, seq=32, batch=2)
        assert (row["params"], row["trainable"]) == (c.params, c.trainable)
        assert row["flops"] == f.forward_flops
        assert row["flops_per_token"] == f.forward_flops / 64
        assert row["memory_bytes"] == m.per_gpu_bytes
        assert row["error"] is None


def test_analytic_flops_and_inference_memory_equal_single_points() -> None:
    grid = {"n_layer": [1, 2], "n_embd": [32, 64], "n_head": [2]}
    r = sweep("zoo:gpt2", grid, flops=True, analytic=True, seq=16, memory=True, dtype="bf16")
    for row in r.rows:
        model = resolve_target("zoo:gpt2", {**row["args"], "n_head": 2})
        f = paramscope.flops(model, seq=16, analytic=True)
        m = paramscope.estimate_memory(model, dtype="bf16", context=16)
        assert row["flops"] == f.forward_flops and row["memory_bytes"] == m.per_gpu_bytes


def test_processes_give_the_same_rows(llama_target: str) -> None:
    grid = {"hidden": [64, 96, 128], "layers": [1, 2], "heads": [4]}
    one = sweep(llama_target, grid, flops=True, seq=8, workers=1)
    two = sweep(llama_target, grid, flops=True, seq=8, workers=2)
    assert one.rows == two.rows and two.settings["workers"] == 2


def test_grid_as_a_list_of_points() -> None:
    r = sweep("zoo:gpt2", [{"n_layer": 1, "n_head": 2}, {"n_layer": 3, "n_head": 2}])
    assert r.swept == ["n_layer"] and r.fixed == {"n_head": 2}
    assert [row["params"] for row in r.rows] == [
        paramscope.count(resolve_target("zoo:gpt2", {"n_layer": n, "n_head": 2})).params
        for n in (1, 3)
    ]


# --------------------------------------------------------- transformers as the oracle


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    heads=st.sampled_from([2, 4]),
    widths=st.lists(st.sampled_from([32, 48, 64, 96]), min_size=1, max_size=2, unique=True),
    layers=st.lists(st.integers(1, 4), min_size=1, max_size=2, unique=True),
    kv=st.sampled_from([1, 2]),
    ffn=st.integers(8, 200),
    vocab=st.integers(10, 500),
)
def test_llama_params_equal_transformers(
    heads: int, widths: list[int], layers: list[int], kv: int, ffn: int, vocab: int
) -> None:
    import transformers

    grid = {
        "hidden_size": widths,
        "num_hidden_layers": layers,
        "num_attention_heads": [heads],
        "num_key_value_heads": [kv],
        "intermediate_size": [ffn],
        "vocab_size": [vocab],
    }
    r = sweep("zoo:llama-2-7b", grid)
    for row in r.rows:
        cfg = transformers.LlamaConfig(
            hidden_size=row["args"].get("hidden_size", widths[0]),
            num_hidden_layers=row["args"].get("num_hidden_layers", layers[0]),
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=ffn,
            vocab_size=vocab,
        )
        with torch.device("meta"):
            hf = transformers.LlamaForCausalLM(cfg)
        assert row["params"] == _hf_params(hf)


@settings(max_examples=5, deadline=None)
@given(
    widths=st.lists(st.sampled_from([16, 32, 48, 64]), min_size=2, max_size=3, unique=True),
    layers=st.lists(st.integers(1, 5), min_size=2, max_size=3, unique=True),
    vocab=st.integers(10, 400),
    positions=st.integers(8, 64),
)
def test_gpt2_params_equal_transformers_and_fit_is_exact(
    widths: list[int], layers: list[int], vocab: int, positions: int
) -> None:
    import transformers

    grid = {
        "n_embd": widths,
        "n_layer": layers,
        "n_head": [2],
        "vocab_size": [vocab],
        "n_positions": [positions],
    }
    r = sweep("zoo:gpt2", grid)
    for row in r.rows:
        cfg = transformers.GPT2Config(
            n_embd=row["args"]["n_embd"],
            n_layer=row["args"]["n_layer"],
            n_head=2,
            vocab_size=vocab,
            n_positions=positions,
        )
        with torch.device("meta"):
            hf = transformers.GPT2LMHeadModel(cfg)
        assert row["params"] == _hf_params(hf)
    fit = r.fit
    assert fit is not None and fit.family == "gpt2"
    assert fit.max_relative_residual < 1e-9
    terms = dict(fit.terms)
    # GPT-2's block: 12·d² + 13·d per layer; outside the blocks (V + n_ctx + 2)·d
    assert terms["L·d²"] == pytest.approx(12, rel=1e-9)
    assert terms["L·d"] == pytest.approx(13, rel=1e-9)
    # a point outside the grid: the fitted form predicts transformers' own count
    cfg = transformers.GPT2Config(
        n_embd=80, n_layer=7, n_head=2, vocab_size=vocab, n_positions=positions
    )
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(cfg)
    assert fit.predict(7, 80, vocab) == pytest.approx(_hf_params(hf), rel=1e-9)


def test_fit_of_a_llama_callable_predicts_llama_2_7b(llama_target: str) -> None:
    """Grid of small Llamas (ffn = 4·d, untied head, vocab 1000): the form extrapolates."""
    r = sweep(llama_target, {"hidden": [64, 128, 256], "layers": [1, 2, 4]})
    fit = r.fit
    assert fit is not None and fit.family == "llama" and fit.max_relative_residual < 1e-9
    big = paramscope.count(resolve_target(llama_target, {"hidden": 1024, "layers": 8})).params
    assert fit.predict(8, 1024, 1000) == pytest.approx(big, rel=1e-9)
    assert "closed form for the llama family" in r.to_text()
    assert "max relative residual" in r.to_text()


def test_config_json_target(tmp_path: Path) -> None:
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=100,
        vocab_size=300,
    )
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(tmp_path)
    r = sweep(tmp_path / "config.json", {"num_hidden_layers": [1, 2, 3], "hidden_size": [32, 64]})
    for row in r.rows:
        c2 = transformers.LlamaConfig(**{**cfg.to_dict(), **row["args"]})
        with torch.device("meta"):
            hf = transformers.LlamaForCausalLM(c2)
        assert row["params"] == _hf_params(hf)
    assert r.fit is not None and r.fit.family == "llama"


def test_no_closed_form_for_other_families() -> None:
    r = sweep("zoo:mlp-3-5-2", {})
    assert r.fit is None and r.fit_note is not None and "no closed form" in r.fit_note
    assert r.rows[0]["params"] == 32
    assert "no closed form" in r.to_text()


# ------------------------------------------------------------------------- bad points


def test_bad_points_are_rows_with_their_error() -> None:
    r = sweep("zoo:gpt2", {"n_embd": [64, 66, 128], "n_head": [4], "n_layer": [1]})
    assert r.errors == 1
    bad = r.rows[1]
    assert bad["args"] == {"n_embd": 66} and bad["params"] is None
    assert "must divide" in bad["error"] and "\n" not in bad["error"]
    good = [row["params"] for row in r.rows if row["error"] is None]
    assert good == [
        paramscope.count(
            resolve_target("zoo:gpt2", {"n_embd": d, "n_head": 4, "n_layer": 1})
        ).params
        for d in (64, 128)
    ]
    text = r.to_text()
    assert "1 failed" in text and "point 2: " in text
    assert "must divide" in r.to_csv().splitlines()[2]


def test_a_point_whose_forward_fails_keeps_its_count(llama_target: str) -> None:
    # head width 125 is odd: the rotary embedding cannot split it, the forward fails
    r = sweep(
        llama_target,
        {"hidden": [128, 1000], "layers": [1], "heads": [8], "kv_heads": [8]},
        flops=True,
        seq=4,
    )
    assert r.rows[0]["error"] is None and r.rows[1]["error"] is not None
    assert (
        r.rows[1]["params"]
        == paramscope.count(
            resolve_target(llama_target, {"hidden": 1000, "layers": 1, "heads": 8, "kv_heads": 8})
        ).params
    )
    assert r.rows[1]["flops"] is None


def test_invalid_input_is_one_clear_error() -> None:
    with pytest.raises(ArgumentError, match="every point failed"):
        sweep("zoo:gpt2", {"n_embd": [63, 65], "n_head": [4]})
    with pytest.raises(ArgumentError, match="needs seq"):
        sweep("zoo:gpt2", {"n_layer": [1, 2]}, flops=True)
    with pytest.raises(ArgumentError, match="is empty"):
        sweep("zoo:gpt2", {"n_layer": []})
    with pytest.raises(ArgumentError, match="expected a list of values"):
        sweep("zoo:gpt2", {"n_layer": 2})
    with pytest.raises(ArgumentError, match="unknown config field"):
        sweep("zoo:gpt2", {"n_layers": [1, 2]})


def test_parse_grid() -> None:
    assert parse_grid(["a=1,2", "b=x,y", "c=[1,2]", "d=3"]) == {
        "a": [1, 2],
        "b": ["x", "y"],
        "c": [[1, 2]],
        "d": [3],
    }
    with pytest.raises(ArgumentError, match="empty value"):
        parse_grid(["a=1,,2"])
    with pytest.raises(ArgumentError, match="key=value"):
        parse_grid(["a"])


# ------------------------------------------------------------------------------- CLI


def test_cli_json_csv_and_exit_codes(cli: Any, llama_target: str, tmp_path: Path) -> None:
    res = cli(
        "sweep",
        llama_target,
        "--arg",
        "hidden=64,128",
        "--arg",
        "layers=1,2,3",
        "--flops",
        "--seq",
        "16",
        "--json",
    )
    assert res.code == 0, res.err
    data = json.loads(res.out)
    api = sweep(llama_target, {"hidden": [64, 128], "layers": [1, 2, 3]}, flops=True, seq=16)
    assert data["rows"] == api.rows and data["fit"] == api.fit.to_dict()
    res = cli("sweep", llama_target, "--arg", "hidden=64,128", "--arg", "layers=1", "--csv")
    assert res.code == 0 and res.out == api_csv(llama_target)
    res = cli(
        "sweep",
        llama_target,
        "--arg",
        "hidden=64",
        "--arg",
        "layers=1,2",
        "-o",
        tmp_path / "s.html",
    )
    assert res.code == 0 and (tmp_path / "s.html").exists() and "wrote" in res.out
    res = cli("sweep", "zoo:gpt2", "--arg", "n_embd=63,65", "--arg", "n_head=4")
    assert res.code == 2 and res.err.count("\n") == 1 and "every point failed" in res.err
    res = cli("sweep", "zoo:gpt2", "--arg", "n_layer=1,2", "--flops")
    assert res.code == 2 and "needs seq" in res.err
    res = cli("sweep", "zoo:gpt2", "--arg", "n_layer=1,2", "--csv", "--json")
    assert res.code == 2


def api_csv(target: str) -> str:
    return sweep(target, {"hidden": [64, 128], "layers": [1]}).to_csv()


# ----------------------------------------------------------------- the page in Chromium


def test_page_in_headless_chromium(browser: Browser, tmp_path: Path) -> None:
    grid = {"n_layer": [1, 2, 3], "n_embd": [32, 64, 66], "n_head": [4]}
    r = sweep("zoo:gpt2", grid, flops=True, seq=8, memory=True)
    assert r.errors == 3  # 4 heads do not divide n_embd=66: three rows with their error
    page_file = write_sweep_html(r, tmp_path / "sweep.html")
    page = browser.open(page_file, ready="[data-chart]")
    charts = page.evaluate(
        """() => Object.entries(window.paramscopeCharts).map(([name, u]) => ({name,
            points: +document.querySelector('[data-chart="' + name + '"]').dataset.points,
            x: Array.from(u.data[0]),
            y: u.data.slice(1).map(c => Array.from(c, v => v === undefined ? null : v))}))"""
    )
    good = [row for row in r.rows if row["error"] is None]
    expected = {c["name"]: c for c in sweep_chart_data(r)}
    assert sorted(c["name"] for c in charts) == sorted(
        f"{m}-{a}"
        for m in ("params", "flops_per_token", "memory_bytes")
        for a in ("n_layer", "n_embd")
    )
    for c in charts:
        # one drawn point per grid point that was built
        drawn = sum(v is not None for ys in c["y"] for v in ys)
        assert c["points"] == drawn == len(good)
        measure, _ = c["name"].rsplit("-", 1)
        assert c["x"] == expected[c["name"]]["xs"]
        want = sorted(row[measure] for row in good)
        assert sorted(v for ys in c["y"] for v in ys if v is not None) == want
    rows = page.locator("#sweep-table tbody tr")
    assert rows.count() == len(r.rows)
    assert "closed form for the gpt2 family" in page.inner_text("#fit")
    assert not browser.errors, browser.errors
    assert not browser.blocked, browser.blocked
