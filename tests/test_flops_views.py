"""FLOPs next to parameters: ``summary(model, flops=...)`` and ``inspect TARGET --flops``.

The oracle is :func:`paramscope.flops` itself (tested against fvcore in test_flops.py): the
per-module values shown must be the report's, matched by module path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from paramscope.counting import flops, summary


def _by_path(node: dict, key: str = "flops") -> dict[str, int | None]:
    out = {node["path"]: node[key]}
    for c in node.get("children", []):
        out.update(_by_path(c, key))
    return out


def _flops_tree(report) -> dict[str, int]:
    return _by_path(report.root.to_dict(), "flops")


def test_summary_flops_per_module_equal_the_report() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    report = flops(model, input_shape=(2, 8))
    d = summary(model, flops=report).to_dict()
    assert _by_path(d["tree"]) == {"": 768, "0": 2 * 2 * 8 * 16, "1": 0, "2": 2 * 2 * 16 * 4}
    assert _by_path(d["tree"]) == _flops_tree(report)
    assert d["flops"]["flops"] == report.flops == 768 and d["flops"]["macs"] == 384
    assert d["flops"]["uncounted"] == {"aten.relu": 1}
    text = summary(model, flops=report).to_text()
    assert "FLOPs" in text.splitlines()[2] and "FLOPs 768 (MACs 384)" in text
    assert "uncounted" in text and "aten.relu ×1" in text


def test_summary_without_flops_is_unchanged() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16))
    d = summary(model).to_dict()
    assert "flops" not in d and "flops" not in d["tree"]
    assert "FLOPs" not in summary(model).to_text()


def test_summary_rejects_an_analytic_report() -> None:
    from paramscope._errors import ArgumentError

    report = flops("zoo:gpt2", seq=8, analytic=True)
    with pytest.raises(ArgumentError, match="analytic"):
        summary(torch.nn.Linear(2, 2), flops=report)


def test_inspect_flops_json_equals_flops(cli) -> None:
    r = cli("inspect", "zoo:gpt2", "--flops", "--seq", "16", "--batch", "2", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    report = flops("zoo:gpt2", seq=16, batch=2)
    want = _flops_tree(report)
    got = _by_path(d["tree"])
    assert got and all(got[p] == want[p] for p in got), got
    assert d["flops"]["flops"] == report.flops > 0 and d["flops"]["inputs"] == report.inputs
    assert got["transformer"] + got["lm_head"] == report.flops


def test_inspect_flops_text_has_the_column(cli) -> None:
    r = cli("inspect", "zoo:mlp-3-5-2", "--flops", "--input-shape", "4,3")
    assert r.code == 0, r.err
    report = flops("zoo:mlp-3-5-2", input_shape=(4, 3))
    assert "FLOPs" in r.out and f"FLOPs {report.flops:,} (MACs {report.macs:,})" in r.out


def test_inspect_without_flops_has_no_column(cli) -> None:
    r = cli("inspect", "zoo:mlp-3-5-2")
    assert r.code == 0, r.err
    assert "FLOPs" not in r.out


def test_inspect_flops_on_a_checkpoint_exits_2(cli, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(path))
    r = cli("inspect", str(path), "--flops", "--seq", "4")
    assert r.code == 2
    assert "--flops needs a model TARGET" in r.err and str(path) in r.err


def test_inspect_seq_without_flops_exits_2(cli) -> None:
    r = cli("inspect", "zoo:mlp-3-5-2", "--seq", "4")
    assert r.code == 2 and "need --flops" in r.err


def test_inspect_flops_without_inputs_exits_2(cli) -> None:
    r = cli("inspect", "zoo:mlp-3-5-2", "--flops")
    assert r.code == 2 and r.err.strip()


# ---- the HTML report: FLOPs per module, activation and KV cache rows ------------------------


def _blob(path: Path) -> dict:
    import re

    text = path.read_text("utf-8")
    m = re.search(
        r'<script type="application/json" id="paramscope-data">(.*?)</script>', text, re.S
    )
    assert m is not None
    return json.loads(m.group(1))


def _report_paths(node: dict) -> dict[str, int | None]:
    out = {node["p"]: node.get("f")}
    for c in node["c"]:
        out.update(_report_paths(c))
    return out


def test_report_flops_and_token_rows_equal_the_library(tmp_path: Path) -> None:
    from paramscope import estimate_memory, resolve_target
    from paramscope.reporting._html import report

    out = report("zoo:gpt2", tmp_path / "g.html", flops=True, seq=64, batch=2, values=False)
    d = _blob(out)
    fr = flops("zoo:gpt2", seq=64, batch=2)
    want = _flops_tree(fr)
    got = _report_paths(d["tree"])
    assert got[""] == fr.flops and all(got[p] == want[p] for p in got if got[p] is not None)
    assert d["flops"]["flops"] == fr.flops and d["flops"]["macs"] == fr.macs
    model = resolve_target("zoo:gpt2")
    train = estimate_memory(model, training=True, mixed_precision=True, batch=2, seq=64)
    infer = estimate_memory(model, dtype="bf16", batch=2, context=64)
    rows = {m["label"]: m for m in d["memory"]}
    assert len(d["memory"]) == 5
    t = rows["training bf16 mixed precision, AdamW, 2 × 64 tokens"]
    assert t["activations"] == train.activations > 0 and t["total"] == train.per_gpu_bytes
    k = rows["inference bf16, KV cache for 2 × 64 tokens"]
    assert k["kv_cache"] == infer.kv_cache > 0 and k["total"] == infer.per_gpu_bytes
    assert all(m["activations"] == m["kv_cache"] == 0 for m in d["memory"][:3])


def test_report_without_options_has_no_flops_or_token_rows(tmp_path: Path) -> None:
    from paramscope.reporting._html import report

    d = _blob(report(torch.nn.Linear(4, 2), tmp_path / "l.html"))
    assert d["flops"] is None and len(d["memory"]) == 3 and "f" not in d["tree"]


def test_report_seq_without_a_config_is_a_note(tmp_path: Path) -> None:
    from paramscope.reporting._html import report

    out = report(torch.nn.Linear(4, 2), tmp_path / "l.html", flops=True, input_shape=(3, 4), seq=5)
    d = _blob(out)
    assert d["tree"]["f"] == 2 * 3 * 4 * 2 == d["flops"]["flops"]
    assert len(d["memory"]) == 3
    assert any("no activation / KV cache rows" in n and "config" in n for n in d["notes"])


def test_report_cli_flops_and_errors(cli, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    out = tmp_path / "m.html"
    r = cli("report", "zoo:mlp-3-5-2", "-o", str(out), "--flops", "--input-shape", "4,3")
    assert r.code == 0, r.err
    d = _blob(out)
    assert d["flops"]["flops"] == flops("zoo:mlp-3-5-2", input_shape=(4, 3)).flops > 0
    ckpt = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(ckpt))
    r = cli("report", str(ckpt), "-o", str(tmp_path / "c.html"), "--flops", "--seq", "4")
    assert r.code == 2 and "flops needs a model TARGET" in r.err
    assert not (tmp_path / "c.html").exists()
    r = cli("report", "zoo:mlp-3-5-2", "-o", str(out), "--input-shape", "4,3")
    assert r.code == 2 and "needs flops" in r.err


def test_report_browser_shows_flops_and_token_columns(tmp_path: Path) -> None:
    """Chromium (as in test_report_html.py), network blocked: the FLOPs card, the tooltip's
    FLOPs of a module, and the memory table's activation and KV cache columns."""
    from playwright.sync_api import sync_playwright

    from paramscope.reporting._html import report

    out = report("zoo:gpt2", tmp_path / "g.html", flops=True, seq=32, values=False)
    d = _blob(out)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route(
                "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
            )
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.as_uri())
            page.wait_for_selector("#treemap [data-path]")
            card = page.inner_text('[data-count="flops"] b').replace(",", "")
            assert int(card) == d["flops"]["flops"]
            heads = page.eval_on_selector_all("#memory th", "els => els.map(e => e.textContent)")
            assert "activations" in heads and "KV cache" in heads
            path = page.eval_on_selector("#treemap [data-path]", "e => e.dataset.path")
            page.hover(f'#treemap [data-path="{path}"]', force=True)
            node = _by_path_report(d["tree"], path)
            assert f"{node['f']:,} FLOPs (forward)" in page.inner_text("#tooltip")
        finally:
            browser.close()
    assert not errors, errors


def _by_path_report(node: dict, path: str) -> dict:
    if node["p"] == path:
        return node
    for c in node["c"]:
        if path == c["p"] or path.startswith(c["p"] + "."):
            return _by_path_report(c, path)
    raise KeyError(path)
