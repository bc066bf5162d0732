"""The report's charts in a real browser: statistics across depth, spectral health, the change
of A against B (chart and treemap), quantisation error, compute and memory.

Every page is a report of a small GPT-2 (the zoo's, 4 blocks) saved as safetensors, opened in
Debian's headless Chromium (``/usr/bin/chromium``) through Playwright with every non-``file:``
request blocked and console errors collected. The numbers a chart draws are compared with what
paramscope itself prints (``inspect --stats --json``, ``inspect --spectral --json``) and with
the change computed here with torch, never with constants.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import paramscope
from _browser import Browser
from paramscope.reporting._html import build_report_data, render_html

N_LAYER = 4
#: the one tensor the modified copy changes
MODIFIED = "transformer.h.2.mlp.c_fc.weight"


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small GPT-2 checkpoint ``a``, and ``b``: a copy with one tensor changed."""
    from paramscope.building import zoo

    torch.manual_seed(0)
    model = zoo.build("gpt2", n_layer=N_LAYER, n_embd=32, n_head=2, vocab_size=96, n_positions=16)
    tmp = tmp_path_factory.mktemp("charts")
    sd = paramscope.ParamDict.from_module(model)
    a = paramscope.save(sd, tmp / "a.safetensors")
    tensors = {k: v.detach().clone() for k, v in sd.items()}
    g = torch.Generator().manual_seed(1)
    w = tensors[MODIFIED]
    tensors[MODIFIED] = w + 0.05 * torch.randn(w.shape, generator=g)
    b = paramscope.save(paramscope.ParamDict(tensors), tmp / "b.safetensors")
    return {"a": Path(a), "b": Path(b), "dir": tmp, "model": model}


def _page_file(data: dict[str, Any], path: Path) -> Path:
    path.write_text(render_html(data), encoding="utf-8")
    return path


def _blob(page: Any) -> dict[str, Any]:
    return json.loads(page.inner_text("#paramscope-data"))


# ------------------------------------------------------------------------------------ helpers


def _chart(page: Any, name: str) -> dict[str, Any]:
    """What the uPlot chart ``name`` draws: its labels, x values and y columns, and the
    container's data-points."""
    return page.evaluate(
        """name => { const u = window.paramscopeCharts[name];
          const el = document.querySelector('[data-chart="' + name + '"]');
          return { points: +el.dataset.points, x: Array.from(u.data[0]),
            labels: u.series.slice(1).map(s => s.label),
            y: u.data.slice(1).map(c => Array.from(c, v => v === undefined ? null : v)) }; }""",
        name,
    )


def _isolated_points(page: Any, name: str) -> list[tuple[str, int, float, float]]:
    """Points of chart ``name`` at least 6 px from every other line's point at that block:
    ``(series, block, page x, page y)``, after scrolling the chart into view."""
    return [
        (s, int(b), x, y)
        for s, b, x, y in page.evaluate(
            """name => { const u = window.paramscopeCharts[name];
              u.over.scrollIntoView({block: "center"});
              const r = u.over.getBoundingClientRect(); const out = [];
              for (let j = 0; j < u.data[0].length; j++) {
                const ys = u.series.map((s, i) => i === 0 || !s.show || u.data[i][j] === null
                  ? null
                  : u.valToPos(u.data[i][j], s.scale));
                for (let i = 1; i < ys.length; i++) {
                  if (ys[i] === null) continue;
                  if (ys.every((y, k) => k === i || y === null || Math.abs(y - ys[i]) >= 6))
                    out.push([u.series[i].label, u.data[0][j],
                      r.left + u.valToPos(u.data[0][j], "x"), r.top + ys[i]]);
                } }
              return out; }""",
            name,
        )
    ]


def _hover(page: Any, name: str, x: float, y: float) -> dict[str, str]:
    """Move the mouse to (x, y) on chart ``name``: the tooltip's text and data."""
    page.mouse.move(x - 3, y)
    page.mouse.move(x, y)
    tip = page.locator(f'[data-chart="{name}"] .chart-tip')
    tip.wait_for(state="visible")
    return tip.evaluate("e => ({text: e.innerText, ...e.dataset})")


def _by_series_block(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["series"], r["block"]): r for r in rows if r.get("series") is not None}


def _check_hover(page: Any, name: str, rows: list[dict[str, Any]], stat: str) -> None:
    """Hovering isolated points of chart ``name`` names the tensor (by series and block in
    ``rows``, the --json output) and shows its ``stat`` value exactly."""
    index = _by_series_block(rows)
    points = _isolated_points(page, name)
    assert points, f"{name}: no point far enough from the others to hover"
    for series, block, x, y in points[:: max(1, len(points) // 4)][:4]:
        tip = _hover(page, name, x, y)
        want = index[(series, block)]
        assert tip["series"] == series and int(tip["block"]) == block
        assert tip["name"] == want["name"] and want["name"] in tip["text"]
        assert float(tip["value"]) == want[stat], (name, series, block)


# -------------------------------------------------------------------------------------- tests


def test_depth_and_spectral_charts_equal_the_json(
    ckpts: dict[str, Any], browser: Browser, cli: Any
) -> None:
    a = ckpts["a"]
    code, out, _ = cli("inspect", str(a), "--stats", "--json")
    assert code == 0
    stats = json.loads(out)
    code, out, _ = cli("inspect", str(a), "--spectral", "--json")
    assert code == 0
    spectral = json.loads(out)
    assert stats["blocks"] == N_LAYER
    data = build_report_data(a, stats=True, spectral=True)
    page = browser.open(_page_file(data, ckpts["dir"] / "stats.html"))
    assert page.is_visible("#depth-section") and page.is_visible("#spectral-section")
    assert not page.is_visible("#change-section")
    assert page.input_value("#color-mode") == "kind"  # layer type by default

    # every statistic: one point per block, one line per series, the --json numbers
    options = page.eval_on_selector_all("#depth-stat option", "os => os.map(o => o.value)")
    assert options == stats["stats"]
    for stat in stats["stats"]:
        page.select_option("#depth-stat", stat)
        chart = _chart(page, "depth")
        assert chart["points"] == N_LAYER and chart["x"] == list(range(N_LAYER))
        assert chart["labels"] == list(stats["series"])
        for label, col in zip(chart["labels"], chart["y"], strict=True):
            want = [None] * N_LAYER
            for block, value in stats["series"][label][stat]:
                want[block] = value
            assert col == want, (stat, label)
            # GPT-2: each kind in each block (a value is null where undefined: the kurtosis
            # of a constant LayerNorm weight)
            assert len(stats["series"][label][stat]) == N_LAYER
    page.select_option("#depth-stat", "l2")
    _check_hover(page, "depth", stats["tensors"], "l2")
    flagged = page.eval_on_selector_all(
        "#depth-flags [data-flag]", "els => els.map(e => e.dataset.flag)"
    )
    assert sorted(flagged) == sorted({f["name"] for f in stats["flagged"]})

    # spectral: alpha per series across depth, the flagged matrices named
    chart = _chart(page, "spectral")
    assert chart["points"] == N_LAYER
    in_blocks = [m for m in spectral["matrices"] if m["block"] is not None]
    assert sorted(chart["labels"]) == sorted({m["series"] for m in in_blocks})
    for label, col in zip(chart["labels"], chart["y"], strict=True):
        want = [None] * N_LAYER
        for m in in_blocks:
            if m["series"] == label:
                want[m["block"]] = m["alpha"]
        assert col == want and None not in col, label
    _check_hover(page, "spectral", in_blocks, "alpha")
    named = page.eval_on_selector_all(
        "#spectral-flags [data-flag]", "els => els.map(e => e.dataset.flag)"
    )
    assert sorted(named) == sorted(spectral["flagged"])
    assert data["spectral"]["alpha_range"] == [2, 6]
    band = page.evaluate(
        """() => { const u = window.paramscopeCharts.spectral;
          return [u.scales.y.min, u.scales.y.max]; }"""
    )
    assert band[0] <= 2 and band[1] >= 6  # the healthy band is on the chart


def _treemap(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#treemap [data-path], #treemap [data-own]",
        """els => els.map(e => ({path: e.dataset.path ?? e.dataset.own,
          change: e.dataset.change, bg: getComputedStyle(e).backgroundColor}))""",
    )


def _swatch(page: Any, key: str) -> str:
    return page.eval_on_selector(
        f'#legend [data-key="{key}"] i', "e => getComputedStyle(e).backgroundColor"
    )


def test_change_against_itself_is_zero_everywhere(ckpts: dict[str, Any], browser: Browser) -> None:
    a = ckpts["a"]
    data = build_report_data(a, against=a)
    page = browser.open(_page_file(data, ckpts["dir"] / "self.html"))
    assert page.is_visible("#change-section") and not page.is_visible("#quant")
    assert page.input_value("#color-mode") == "change"  # the default with change data
    assert page.input_value("#change-stat") == "rel_change"
    for stat, zero, tol in (("rel_change", 0.0, 0), ("sign_flips", 0.0, 0), ("cosine", 1.0, 1e-12)):
        page.select_option("#change-stat", stat)
        chart = _chart(page, "change")
        assert chart["points"] == N_LAYER and chart["labels"]
        for col in chart["y"]:
            # cosine: undefined (null) for an all-zero bias, else 1 up to float64 rounding
            assert all(abs(v - zero) <= tol for v in col if v is not None), (stat, col)
            assert col.count(None) < N_LAYER
    assert page.eval_on_selector_all("#change-worst [data-worst]", "e => e.length") == 0
    cells = _treemap(page)
    assert cells and all(c["change"] == "0" for c in cells), cells
    none = _swatch(page, "no change")
    assert all(c["bg"] == none for c in cells)


def test_change_of_one_layer_shows_that_layer_alone(
    ckpts: dict[str, Any], browser: Browser
) -> None:
    from safetensors.torch import load_file

    a, b = ckpts["a"], ckpts["b"]
    data = build_report_data(b, against=a)  # the modified copy against the original
    page = browser.open(_page_file(data, ckpts["dir"] / "one.html"))
    ta, tb = load_file(str(a)), load_file(str(b))
    diff = (tb[MODIFIED].double() - ta[MODIFIED].double()).norm()
    rel = float(diff / ta[MODIFIED].double().norm())  # the oracle: ‖A−B‖/‖B‖ by torch
    assert rel > 0
    row = next(t for t in _blob(page)["change"]["tensors"] if t["name"] == MODIFIED)
    assert row["rel_change"] == pytest.approx(rel, rel=1e-9)

    chart = _chart(page, "change")
    nonzero = [
        (label, block, v)
        for label, col in zip(chart["labels"], chart["y"], strict=True)
        for block, v in enumerate(col)
        if v not in (None, 0.0)
    ]
    assert nonzero == [(row["series"], row["block"], row["rel_change"])]
    index = _by_series_block(data["change"]["tensors"])
    points = [p for p in _isolated_points(page, "change") if p[:2] == (row["series"], 2)]
    assert points, "the changed point should stand alone"
    tip = _hover(page, "change", *points[0][2:])
    assert tip["name"] == MODIFIED == index[(row["series"], 2)]["name"]
    assert float(tip["value"]) == row["rel_change"] and MODIFIED in tip["text"]
    worst = page.eval_on_selector_all(
        "#change-worst [data-worst]", "els => els.map(e => e.dataset.worst)"
    )
    assert worst and worst[0] == MODIFIED

    # the treemap: the modules holding the changed tensor coloured, every other one not
    cells = _treemap(page)
    none = _swatch(page, "no change")
    owner = MODIFIED.rsplit(".", 1)[0]
    holding = [c for c in cells if owner == c["path"] or owner.startswith(c["path"] + ".")]
    assert len(holding) == 1, cells
    assert holding[0]["bg"] != none and float(holding[0]["change"]) > 0
    assert all(c["bg"] == none and c["change"] == "0" for c in cells if c not in holding)
    # its module's change aggregates its tensors: sqrt(Σ‖a−b‖²) / sqrt(Σ‖b‖²)
    under = [n for n in ta if n == holding[0]["path"] or n.startswith(holding[0]["path"] + ".")]
    ref = math.sqrt(sum(float(ta[n].double().norm()) ** 2 for n in under))
    assert float(holding[0]["change"]) == pytest.approx(float(diff) / ref, rel=1e-9)
    page.hover(f'#treemap [data-path="{holding[0]["path"]}"]', force=True)
    assert re.search(r"change ‖A−B‖/‖B‖: [0-9.e-]+", page.inner_text("#tooltip"))


def test_quantised_against_its_source(ckpts: dict[str, Any], browser: Browser) -> None:
    from paramscope.compress import quantize_file

    a = ckpts["a"]
    q = ckpts["dir"] / "q8.safetensors"
    quantize_file(a, q, bits=8, show_progress=False)
    data = build_report_data(q, against=a)
    rows = data["change"]["tensors"]
    assert any(t["quantized"] for t in rows)
    page = browser.open(_page_file(data, ckpts["dir"] / "q.html"))
    assert page.is_visible("#quant")
    for name, stat in (("quant-sqnr", "sqnr_db"), ("quant-bits", "bits_per_weight")):
        chart = _chart(page, name)
        assert chart["points"] == N_LAYER
        for label, col in zip(chart["labels"], chart["y"], strict=True):
            want = [None] * N_LAYER
            for block, value in data["change"]["series"][label][stat]:
                want[block] = value
            assert col == want, (name, label)
    quantized = [t for t in rows if t["quantized"] and t["series"] is not None]
    _check_hover(page, "quant-sqnr", quantized, "sqnr_db")
    named = page.eval_on_selector_all(
        "#quant-worst [data-worst-sqnr]", "els => els.map(e => e.dataset.worstSqnr)"
    )
    low = sorted(
        (t for t in rows if t["quantized"] and t["sqnr_db"] is not None),
        key=lambda t: t["sqnr_db"],
    )
    assert named and named == [t["name"] for t in low[: len(named)]]


def test_blocks_chart_and_memory_bars(ckpts: dict[str, Any], browser: Browser) -> None:
    a = ckpts["a"]
    # the model: a training row with activations and a KV cache row (its config is known)
    data = build_report_data(ckpts["model"], seq=8)
    page = browser.open(_page_file(data, ckpts["dir"] / "mem.html"))
    assert not page.is_visible("#depth-section") and not page.is_visible("#change-section")
    chart = _chart(page, "blocks")
    assert chart["points"] == N_LAYER and chart["labels"] == ["params", "activations"]
    from safetensors.torch import load_file

    tensors = load_file(str(a))
    want = [
        sum(t.numel() for n, t in tensors.items() if n.startswith(f"transformer.h.{i}."))
        for i in range(N_LAYER)
    ]
    # the training row's activation bytes of one layer (estimate_memory's formula), per block
    m = paramscope.estimate_memory(
        ckpts["model"], training=True, mixed_precision=True, optimizer="adamw", seq=8
    )
    per_layer = m.details["activations"]["per_layer"]
    assert per_layer > 0
    assert chart["y"] == [want, [per_layer] * N_LAYER]
    rows = [
        {"series": "params", "block": i, "name": f"transformer.h.{i}", "params": want[i]}
        for i in range(N_LAYER)
    ]
    # the activation line (on its own axis) lies over the bars' tops: hide it in the legend,
    # as a reader would, and the tooltip names the blocks under the bars
    page.locator('[data-chart="blocks"] .u-legend .u-series', has_text="activations").click()
    _check_hover(page, "blocks", rows, "params")
    page.locator('[data-chart="blocks"]').scroll_into_view_if_needed()
    # one stacked bar per memory row, each part as wide as its share of the largest total
    bars = page.eval_on_selector_all(
        "#memory-bars [data-memory]",
        """rows => rows.map(r => ({label: r.dataset.memory,
          width: r.querySelector('.mbar').getBoundingClientRect().width,
          parts: Array.from(r.querySelectorAll('[data-part]'), p =>
            [p.dataset.part, p.getBoundingClientRect().width])}))""",
    )
    assert [b["label"] for b in bars] == [m["label"] for m in data["memory"]]
    parts = (
        "weights",
        "gradients",
        "optimizer_states",
        "master_weights",
        "activations",
        "kv_cache",
        "buffers",
    )
    scale = max(max(m["total"], sum(m[k] for k in parts)) for m in data["memory"])
    for bar, m in zip(bars, data["memory"], strict=True):
        assert [p for p, _ in bar["parts"]] == [k for k in parts if m[k]]
        for part, width in bar["parts"]:
            assert width == pytest.approx(bar["width"] * m[part] / scale, abs=1.0), part
    assert any(p == "activations" for b in bars for p, _ in b["parts"])
    assert page.eval_on_selector_all("#memory tbody tr", "r => r.length") == len(data["memory"])


def test_large_model_page_stays_small(tmp_path: Path) -> None:
    """Llama-2-7B's 291 names with stats, spectral and change data: the page ≤ 2 MB (the size
    of the data does not depend on the tensors' sizes, so small tensors stand in)."""
    names = [e.name for e in paramscope.inspect("zoo:llama-2-7b", depth=0).groups[0].entries]
    assert len(names) > 250
    g = torch.Generator().manual_seed(0)
    a = {n: torch.randn(8, 8, generator=g) for n in names}
    b = {n: t + 0.01 * torch.randn(8, 8, generator=g) for n, t in a.items()}
    data = build_report_data(a, stats=True, spectral=True, against=b)
    size = len(render_html(data).encode("utf-8"))
    assert size <= 2_000_000, size
