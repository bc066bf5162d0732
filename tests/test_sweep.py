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
import math

from paramscope.building import zoo

def llama(hidden, layers, heads=4, kv_heads=4, ffn=None, vocab=1000):
    """A Llama-shaped callable: the zoo's Llama with the usual knobs."""
    return zoo.build("llama-2-7b", hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads,
                     intermediate_size=ffn or 4 * hidden, vocab_size=vocab)

def llama_rounded(hidden, layers, heads=4, kv_heads=4, vocab=1000):
    """Llama's own intermediate size: 8/3 of the width rounded up to a multiple of 256."""
    return llama(hidden, layers, heads, kv_heads, ffn=ffn_of(hidden), vocab=vocab)

def ffn_of(hidden):
    return 256 * math.ceil(8 * hidden / 3 / 256)
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
    # exact, with integer coefficients: GPT-2's block is 12·d² + 13·d per layer, the final
    # norm 2·d; the token and position embeddings are counted, not fitted (even when the
    # vocabulary and the positions are the same number)
    assert fit.max_relative_residual == 0
    assert fit.terms == [("L·d²", 12), ("L·d", 13), ("d", 2)]
    assert all(isinstance(c, float) and c.is_integer() for _, c in fit.terms)
    assert fit.exact == [("V·d", 1), ("P·d", 1)]
    assert fit.sizes == {"V": vocab, "P": positions}
    assert fit.formula() == "params = 12·L·d² + 13·L·d + 2·d + V·d + P·d"
    # points outside the grid, other vocabularies and positions too: the form gives
    # transformers' own counts (the head is tied: GPT2Model counts the same)
    for n_embd, n_layer, v, p in ((80, 7, vocab, positions), (96, 2, 777, 129)):
        cfg = transformers.GPT2Config(
            n_embd=n_embd, n_layer=n_layer, n_head=2, vocab_size=v, n_positions=p
        )
        with torch.device("meta"):
            lm, base = transformers.GPT2LMHeadModel(cfg), transformers.GPT2Model(cfg)
        assert fit.predict(n_layer, n_embd, v, positions=p) == _hf_params(lm) == _hf_params(base)


def test_embeddings_are_exact_terms_by_name_and_size() -> None:
    """The vocabulary and the positions swept (so V·d and P·d cannot fold into d), or equal
    (so only the table's name tells them apart): still exact, checked against transformers."""
    import transformers

    grid = {"n_layer": [1, 2, 3], "n_embd": [32, 64, 96], "n_head": [2]}
    same = sweep("zoo:gpt2", {**grid, "vocab_size": [40], "n_positions": [40]}).fit
    assert same is not None and same.exact == [("V·d", 1), ("P·d", 1)]
    assert same.max_relative_residual == 0 and same.sizes == {"V": 40, "P": 40}
    both = sweep("zoo:gpt2", {**grid, "vocab_size": [40, 50], "n_positions": [40, 60]}).fit
    assert both is not None and both.max_relative_residual == 0 and both.sizes == {}
    assert both.formula() == "params = 12·L·d² + 13·L·d + 2·d + V·d + P·d"
    cfg = transformers.GPT2Config(n_embd=128, n_layer=4, n_head=2, vocab_size=333, n_positions=77)
    with torch.device("meta"):
        want = _hf_params(transformers.GPT2Model(cfg))
    assert both.predict(4, 128, 333, positions=77) == want
    with pytest.raises(ArgumentError, match="positions="):
        both.predict(4, 128, 333)
    # a head tied at some points only: V·d is not one number of matrices, so it is left to
    # the fit (not exact here), and the note says so
    llama = {
        "hidden_size": [64, 128, 192],
        "num_hidden_layers": [1, 2],
        "tie_word_embeddings": [False, True],
        "num_attention_heads": [4],
        "num_key_value_heads": [4],
    }
    mixed = sweep("zoo:llama-2-7b", llama).fit
    assert mixed is not None and mixed.exact == [] and mixed.max_relative_residual > 0
    assert mixed.note is not None and "V·d is 1 to 2 matrices" in mixed.note


def test_fit_of_a_llama_callable_predicts_llama_2_7b(llama_target: str) -> None:
    """Grid of small Llamas (ffn = 4·d, untied head, vocab 1000): the form extrapolates, and
    the note says that F = 4·d folds L·d·F into L·d²."""
    r = sweep(llama_target, {"hidden": [64, 128, 256], "layers": [1, 2, 4]})
    fit = r.fit
    assert fit is not None and fit.family == "llama" and fit.max_relative_residual == 0
    assert fit.exact == [("V·d", 2)]  # the embedding and the untied head, counted
    big = paramscope.count(resolve_target(llama_target, {"hidden": 1024, "layers": 8})).params
    assert fit.predict(8, 1024, 1000) == big
    assert fit.note is not None and "L·d·F = 4·L·d²" in fit.note
    text = r.to_text()
    assert "closed form for the llama family" in text and "max relative residual" in text
    assert f"note: {fit.note}" in text


def _llama_hf(hidden: int, layers: int, heads: int, kv: int, ffn: int, vocab: int) -> int:
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=ffn,
        vocab_size=vocab,
    )
    with torch.device("meta"):
        return _hf_params(transformers.LlamaForCausalLM(cfg))


def _ffn(hidden: int) -> int:
    return 256 * -(-8 * hidden // (3 * 256))  # Llama's 8/3·d rounded up to 256


def test_llama_with_rounded_ffn_fits_exactly(llama_target: str) -> None:
    """F = 256·ceil(8d/3/256) is not a multiple of d: L·d·F is its own term, and the form
    is exact (the fit used to be approximate without it)."""
    target = llama_target + "_rounded"
    r = sweep(target, {"hidden": [256, 384, 512, 640], "layers": [1, 2, 3]})
    fit = r.fit
    assert fit is not None and fit.max_relative_residual == 0
    assert fit.terms == [("L·d²", 4), ("L·d·F", 3), ("L·d", 2), ("d", 1)]
    assert fit.exact == [("V·d", 2)]
    assert fit.formula() == "params = 4·L·d² + 3·L·d·F + 2·L·d + d + 2·V·d"
    for row in r.rows:
        d, n = row["args"]["hidden"], row["args"]["layers"]
        assert row["params"] == _llama_hf(d, n, 4, 4, _ffn(d), 1000)
    for d, n, v in ((1024, 6, 1000), (4096, 32, 32000)):  # Llama-2-7B's own shape last
        assert fit.predict(n, d, v, ffn=_ffn(d)) == _llama_hf(d, n, 4, 4, _ffn(d), v)
    with pytest.raises(ArgumentError, match="ffn="):
        fit.predict(6, 1024)  # F varied over the grid: it must be given
    d = fit.to_dict()
    assert set(d) >= {"family", "formula", "terms", "max_relative_residual", "points"}
    assert d["exact"] == {"V·d": 2} and d["terms"]["L·d·F"] == 3 and d["sizes"] == {"V": 1000}


def test_grouped_query_attention_uses_the_kv_width(llama_target: str) -> None:
    """k/v projections are d × K (K = kv heads × head width): separable when the kv heads
    are swept, folded (and said so) when K is a fixed share of d."""
    target = llama_target + "_rounded"
    grid = {"hidden": [256, 384, 512], "layers": [1, 2, 3], "kv_heads": [1, 2, 4]}
    fit = sweep(target, grid).fit
    assert fit is not None and fit.max_relative_residual == 0
    assert dict(fit.terms) == {"L·d²": 2, "L·d·F": 3, "L·d·K": 2, "L·d": 2, "d": 1}
    for d, n, kv in ((768, 5, 2), (1024, 3, 1)):
        want = _llama_hf(d, n, 4, kv, _ffn(d), 1000)
        assert fit.predict(n, d, ffn=_ffn(d), kv_width=kv * d // 4) == want
    fixed = sweep(target, {**grid, "kv_heads": [2]}).fit
    assert fixed is not None and fixed.max_relative_residual == 0
    assert fixed.note is not None and "L·d·K = 0.5·L·d²" in fixed.note
    assert dict(fixed.terms)["L·d²"] == 2 + 2 * 0.5  # q, o and k, v at half the width


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
    grid = {"num_hidden_layers": [1, 2, 3], "hidden_size": [32, 64]}
    r = sweep(tmp_path / "config.json", grid)
    for row in r.rows:
        c2 = transformers.LlamaConfig(**{**cfg.to_dict(), **row["args"]})
        with torch.device("meta"):
            hf = transformers.LlamaForCausalLM(c2)
        assert row["params"] == _hf_params(hf)
    fit = r.fit
    assert fit is not None and fit.family == "llama" and fit.max_relative_residual == 0
    assert fit.exact == [("V·d", 2)]  # read from the analytic manifest's entries
    assert fit.note is not None and "F (intermediate size) is 100 at every point" in fit.note
    c2 = transformers.LlamaConfig(**{**cfg.to_dict(), "hidden_size": 128, "num_hidden_layers": 5})
    with torch.device("meta"):
        assert fit.predict(5, 128) == _hf_params(transformers.LlamaForCausalLM(c2))
    # the same grid built as modules (flops needs them) gives the same form; a tied head
    # is one V·d
    built = sweep(tmp_path / "config.json", grid, flops=True, seq=4).fit
    assert built is not None and built.to_dict() == fit.to_dict()
    cfg.tie_word_embeddings = True
    cfg.save_pretrained(tmp_path)
    for flops in (False, True):
        tied = sweep(tmp_path / "config.json", grid, flops=flops, seq=4).fit
        assert tied is not None and tied.exact == [("V·d", 1)]
        assert tied.max_relative_residual == 0


def test_an_embedding_table_of_other_rows_is_left_to_the_fit(tmp_path: Path) -> None:
    """OPT's learned positions have P + 2 rows: not an exact term, and the note says so."""
    import transformers

    def opt(n: int, h: int) -> Any:
        return {"num_hidden_layers": n, "hidden_size": h, "word_embed_proj_dim": h}

    cfg = transformers.OPTConfig(
        num_attention_heads=4, ffn_dim=100, vocab_size=300, max_position_embeddings=64
    )
    cfg.architectures = ["OPTForCausalLM"]
    cfg.save_pretrained(tmp_path)
    r = sweep(tmp_path / "config.json", [opt(n, h) for n in (1, 2, 3) for h in (32, 64, 128)])
    fit = r.fit
    assert fit is not None and fit.max_relative_residual == 0 and fit.exact == [("V·d", 1)]
    assert fit.note is not None and "embed_positions (66 rows)" in fit.note
    with torch.device("meta"):
        hf = transformers.OPTForCausalLM(transformers.OPTConfig(**{**cfg.to_dict(), **opt(5, 96)}))
    assert fit.predict(5, 96) == _hf_params(hf)


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
