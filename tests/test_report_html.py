"""The offline HTML report: static checks of the file, and a real browser with the network off.

The browser test drives Debian's Chromium (``/usr/bin/chromium``) through Playwright for Python
(``pip install playwright``; ``playwright install`` is not needed and not used), with every
non-``file:`` request blocked and recorded. Run locally::

    pip install playwright && sudo apt-get install chromium
    pytest tests/test_report_html.py
"""

from __future__ import annotations

import html
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

import paramscope
from paramscope._units import format_short_count
from paramscope.reporting._html import SAMPLE_LIMIT, report

CHROMIUM = Path("/usr/bin/chromium")


def _blob(text: str) -> dict[str, Any]:
    m = re.search(
        r'<script type="application/json" id="paramscope-data">(.*?)</script>', text, re.S
    )
    assert m is not None, "the JSON blob is missing"
    assert "</" not in m.group(1)
    return json.loads(m.group(1))


def _assert_offline(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    for bad in ("<link", "@import", "url(", "fetch(", "XMLHttpRequest", " src=", "<iframe"):
        assert bad not in text, bad


def _frontier(node: Any, depth: int) -> tuple[set[str], set[str]]:
    """What a treemap view of ``node`` shows: cells (data-path) and own-parameter cells."""
    cells: set[str] = set()
    own: set[str] = set()

    def walk(n: Any, level: int) -> None:
        kids = [c for c in n.children if c.params > 0]
        if level >= depth or not kids:
            cells.add(n.path)
            return
        if n.own_params > 0:
            own.add(n.path)
        for c in kids:
            walk(c, level + 1)

    walk(node, 0)
    return cells, own


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32))
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight  # a tie
        self.scale = torch.nn.Parameter(torch.ones(3))


def _net() -> _Net:
    torch.manual_seed(0)
    net = _Net()
    net.body[0].weight.requires_grad_(False)
    with torch.no_grad():
        net.body[0].bias.zero_()
    return net


def test_llama_meta_is_small_offline_and_counts_match(tmp_path: Path) -> None:
    out = report("zoo:llama-2-7b", tmp_path / "llama.html")
    text = out.read_text("utf-8")
    assert out.stat().st_size < 2_000_000
    _assert_offline(text)
    data = _blob(text)
    c = paramscope.count(paramscope.resolve_target("zoo:llama-2-7b"))
    for k in ("params", "trainable", "frozen", "buffers", "bytes", "entries"):
        assert data["counts"][k] == getattr(c, k), k
    assert data["counts"]["ties"] == len(c.ties)
    assert data["tree"]["v"] == c.params
    assert not data["values"]["available"]
    assert "meta" in data["values"]["note"]
    assert not any("hist" in t or "zeros" in t for t in data["tensors"])
    assert sum(t["params"] for t in data["tensors"] if t["role"] == "param") == c.params
    assert (
        data["memory"][0]["weights"]
        == paramscope.estimate_memory(
            paramscope.resolve_target("zoo:llama-2-7b"), dtype="fp32"
        ).weights
    )


def test_real_model_histograms_zeros_ties(tmp_path: Path) -> None:
    net = _net()
    data = _blob(report(net, tmp_path / "net.html", depth=1).read_text("utf-8"))
    c = paramscope.count(net)
    assert (data["counts"]["params"], data["counts"]["trainable"]) == (c.params, c.trainable)
    assert data["counts"]["frozen"] == 16 * 32
    assert data["ties"] == c.ties and data["counts"]["ties"] == 1
    rows = {t["name"]: t for t in data["tensors"]}
    assert rows["head.weight"]["tie"] == "emb.weight" and "hist" not in rows["head.weight"]
    assert rows["body.0.bias"]["zeros"] == 32
    w = net.emb.weight.detach()
    h = rows["emb.weight"]["hist"]
    assert sum(h["counts"]) == w.numel() == h["sampled"]
    expect = torch.histc(w, bins=len(h["counts"]), min=h["min"], max=h["max"])
    assert h["counts"] == expect.to(torch.int64).tolist()
    assert (h["min"], h["max"]) == (float(w.min()), float(w.max()))
    assert data["values"]["available"] and data["values"]["note"] is None
    assert data["tree"]["o"] == 3  # the root's own "scale"


def test_large_tensor_is_sampled() -> None:
    from paramscope.reporting._stats import value_histogram as _value_stats

    t = torch.zeros(SAMPLE_LIMIT + 10)
    t[:5] = 1.0
    stats = _value_stats(t)
    assert stats["zeros"] == SAMPLE_LIMIT + 5  # zeros over the whole tensor
    assert stats["hist"]["sampled"] == SAMPLE_LIMIT == sum(stats["hist"]["counts"])


def test_checkpoint_values_and_quantised(tmp_path: Path) -> None:
    from paramscope.compress import quantize_file

    src = tmp_path / "m.safetensors"
    paramscope.save(paramscope.ParamDict.from_module(_net()), src)
    data = _blob(report(src, tmp_path / "ck.html").read_text("utf-8"))
    assert data["kind"] == "checkpoint" and data["values"]["available"]
    assert data["counts"]["params"] == paramscope.count(src).params
    assert "hist" in {t["name"]: t for t in data["tensors"]}["body.0.weight"]
    dst = tmp_path / "q.safetensors"
    quantize_file(src, dst, bits=8, show_progress=False)
    q = _blob(report(dst, tmp_path / "q.html").read_text("utf-8"))
    quant = [t for t in q["tensors"] if "quant" in t]
    assert quant and all(t["quant"]["bits"] == 8 for t in quant)
    assert all("scheme" in t["quant"] and "granularity" in t["quant"] for t in quant)
    assert q["counts"]["params"] == paramscope.count(dst).params
    nov = _blob(report(src, tmp_path / "nv.html", values=False).read_text("utf-8"))
    assert not any("hist" in t for t in nov["tensors"]) and "values=False" in nov["values"]["note"]


def test_bad_input_and_cli(cli, tmp_path: Path) -> None:
    with pytest.raises(paramscope.ArgumentError, match=r"^report: depth 0: expected an integer"):
        report(torch.nn.Linear(2, 2), tmp_path / "x.html", depth=0)
    with pytest.raises(paramscope.ArgumentTypeError, match=r"^report: expected a module, .*int"):
        report(42, tmp_path / "x.html")
    out = tmp_path / "cli.html"
    r = cli("report", "zoo:mlp-3-5-2", "-o", out, "--depth", "1")
    assert r.code == 0 and r.out.strip() == str(out) and r.err == ""
    assert _blob(out.read_text("utf-8"))["depth"] == 1
    for argv, said in (
        (["report", "zoo:nope", "-o", out], "zoo model 'nope'"),
        (["report", "zoo:mlp", "-o", out, "--depth", "0"], "0 is not in the range x>=1"),
    ):
        r = cli(*argv)
        assert r.code == 2 and r.out == "" and said in r.err, r
    assert not list(tmp_path.glob(".*paramscope-tmp-*"))


def _png_colours(png: bytes) -> int:
    """Distinct RGB(A) pixel values of an 8-bit RGB/RGBA, non-interlaced PNG (stdlib only)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        ihdr = body if kind == b"IHDR" else ihdr
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    w, h, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert bit_depth == 8 and colour_type in (2, 6) and interlace == 0
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), w * bpp
    prev, colours = bytearray(stride), set()
    for y in range(h):
        f, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        colours.update(bytes(line[i : i + bpp]) for i in range(0, stride, bpp * 7))
        prev = line
    return len(colours)


def test_browser_offline(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), (
        "the browser test needs Chromium at /usr/bin/chromium: CI must install the Debian "
        "`chromium` package (apt-get install chromium)"
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a missing test dependency must fail, not skip
        pytest.fail("the browser test needs Playwright for Python: pip install playwright")
    from paramscope.building import zoo
    from paramscope.counting import summary

    torch.manual_seed(0)
    model = zoo.build("resnet18")  # real (CPU) tensors: histograms present
    out = report(model, tmp_path / "resnet18.html", title="zoo:resnet18")
    tree = summary(model).root
    cells, own = _frontier(tree, 2)
    at_depth = {n.path for lvl, n in summary(model).rows(2) if lvl == 2 and n.params > 0}
    assert at_depth <= cells

    errors: list[str] = []
    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.as_uri())
            page.wait_for_selector("#treemap [data-path]")

            def shown() -> list[str]:
                return page.eval_on_selector_all(
                    "#treemap [data-path]", "els => els.map(e => e.dataset.path)"
                )

            paths = shown()
            assert len(paths) == len(set(paths)) and set(paths) == cells
            depths = page.eval_on_selector_all(
                "#treemap [data-path]", "els => els.map(e => +e.dataset.depth)"
            )
            assert sum(d == 2 for d in depths) == len(at_depth)
            owns = page.eval_on_selector_all("#treemap [data-own]", "e => e.length")
            assert owns == len(own)
            headline = page.inner_text('[data-count="params"] b').replace(",", "")
            assert int(headline) == paramscope.count(model).params
            short = page.locator('[data-count="params"] span').last.inner_text()  # as the CLI
            assert short == format_short_count(paramscope.count(model).params)  # "11.7 million"

            shot = tmp_path / "treemap.png"
            page.locator("#treemap").screenshot(path=str(shot))
            assert _png_colours(shot.read_bytes()) > 3

            def colours() -> list[str]:
                return page.eval_on_selector_all(
                    "#treemap [data-path]", "els => els.map(e => e.style.background)"
                )

            assert page.eval_on_selector("#color-mode", "s => s.value") == "kind"  # default
            by_kind = colours()
            assert len(set(by_kind)) > 1  # conv, batch norm, linear
            page.select_option("#color-mode", "trainable")
            assert colours() != by_kind and len(set(colours())) == 1  # all trainable
            page.select_option("#color-mode", "kind")
            assert colours() == by_kind
            # labels carry the count and its share of the model where the cell has room
            labels = page.eval_on_selector_all(
                "#treemap [data-path]",
                "els => els.map(e => [e.dataset.path, e.querySelector('.share')?.textContent])",
            )
            nodes, todo = {}, [tree]
            while todo:
                n_ = todo.pop()
                nodes[n_.path] = n_
                todo.extend(n_.children)
            labelled = [(p_, t) for p_, t in labels if t is not None]
            assert len(labelled) >= 4, labels
            total = paramscope.count(model).params
            for p_, text in labelled:
                count_, pct = text.split(" · ")
                v = nodes[p_].params
                assert abs(float(pct.rstrip("%")) - 100 * v / total) <= 0.051 * max(
                    1, 100 * v / total
                )
                unit = {"K": 1e3, "M": 1e6, "B": 1e9}.get(count_[-1], 1)
                num = float(count_.rstrip("KMB"))
                assert abs(num * unit - v) <= 0.005 * v, (p_, text, v)

            page.click('#treemap [data-path="layer1.0"]', force=True)
            layer1 = next(c for c in tree.children if c.path == "layer1")
            node = layer1.children[0]
            assert set(shown()) == {c.path for c in node.children if c.params > 0}
            page.click("#up")  # one level up: layer1, two levels of it shown
            assert set(shown()) == _frontier(layer1, 2)[0]
            page.click('#crumbs [data-zoom=""]')  # the breadcrumb back to the root
            assert set(shown()) == cells

            names = page.eval_on_selector_all("#tensors tbody tr", "r => r.length")
            assert names == len(paramscope.inspect(model, depth=0).groups[0].entries)
            page.click('#tensors th[data-key="params"]')
            page.click('#tensors th[data-key="params"]')  # descending
            col = page.eval_on_selector_all(
                "#tensors tbody tr td:nth-child(4)",
                "tds => tds.map(t => +t.textContent.replace(/,/g, ''))",
            )
            assert col == sorted(col, reverse=True) and col[0] > col[-1]
            page.fill("#filter", "layer3.1")
            rows = page.eval_on_selector_all(
                "#tensors tbody tr", "rs => rs.map(r => r.dataset.name)"
            )
            expect = [n for n, _ in model.state_dict().items() if "layer3.1" in n]
            assert rows and sorted(rows) == sorted(expect)
            page.click("#tensors tbody tr button.hist")
            assert page.eval_on_selector_all("#tensors svg.hist rect", "r => r.length") > 1
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert not blocked, blocked


# --------------------------------------------------------------------------- user text in the page

#: every slot name of the template, plus a tag-closer and HTML specials
TRICKY = [
    "__DATA__",
    "__TITLE__",
    "__CSS__",
    "__JS__",
    "__UPLOTJS__",
    "__UPLOTCSS__",
    "</script><b>x",
    "a&b\"c'<!--",
]
TRICKY_TITLE = "__DATA__ x " + " ".join(TRICKY)


def _tricky_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Module()
    for name in TRICKY:
        model.add_module(name, torch.nn.Linear(2, 3))
    return model


def _assert_page_intact(text: str, title: str, names: set[str]) -> dict[str, Any]:
    """One CSS, one JS, one JSON blob; the title and names come back exactly as given."""
    from paramscope.reporting import _html

    for asset in ("report.css", "report.js", "uplot.min.css", "uplot.min.js"):
        assert text.count(_html._asset(asset)) == 1, asset
    # the chart library, the page's script and the JSON blob; two style sheets
    assert text.count("<script") == 3 and text.count("</script>") == 3
    assert text.count("<style>") == 2 and text.count("</style>") == 2
    m = re.search(r"<title>(.*?)</title>", text, re.S)
    assert m is not None
    assert html.unescape(m.group(1)) == f"{title} · paramscope report"
    data = _blob(text)
    assert data["title"] == title
    assert {t["name"] for t in data["tensors"]} == names
    return data


def test_placeholders_in_title_and_names_model(tmp_path: Path) -> None:
    model = _tricky_model()
    text = report(model, tmp_path / "t.html", title=TRICKY_TITLE).read_text("utf-8")
    names = {f"{n}.{w}" for n in TRICKY for w in ("weight", "bias")}
    data = _assert_page_intact(text, TRICKY_TITLE, names)
    assert data["counts"]["params"] == sum(p.numel() for p in model.parameters())


def test_placeholders_in_names_checkpoint(tmp_path: Path) -> None:
    tensors = {f"{n}.w": torch.arange(4.0) for n in TRICKY}
    src = tmp_path / "tricky.safetensors"
    paramscope.save(paramscope.ParamDict(tensors), src)
    for title in TRICKY:  # each placeholder alone, as the whole title
        text = report(src, tmp_path / "c.html", title=title).read_text("utf-8")
        _assert_page_intact(text, title, set(tensors))
    text = report(tensors, tmp_path / "d.html").read_text("utf-8")  # a dict, default title
    _assert_page_intact(text, "dict of tensors", set(tensors))


def test_script_closer_in_json_is_escaped() -> None:
    from paramscope.reporting._html import _json_for_script

    text = _json_for_script({"name": "</script><script>alert(1)</script>", "t": "<!-- & -->"})
    assert "</" not in text and "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "t": "<!-- & -->"}


def test_browser_tricky_names(tmp_path: Path) -> None:
    """The page with every placeholder and a ``</script>`` in its title and names still runs."""
    assert CHROMIUM.exists(), "the browser test needs Chromium at /usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a missing test dependency must fail, not skip
        pytest.fail("the browser test needs Playwright for Python: pip install playwright")

    out = report(_tricky_model(), tmp_path / "tricky.html", title=TRICKY_TITLE)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context()
            context.route(
                "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
            )
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(out.as_uri())
            page.wait_for_selector("#tensors tbody tr")
            assert page.title() == f"{TRICKY_TITLE} · paramscope report"
            assert page.inner_text("#title") == TRICKY_TITLE
            rows = page.eval_on_selector_all(
                "#tensors tbody tr", "rs => rs.map(r => r.dataset.name)"
            )
            assert set(rows) == {f"{n}.{w}" for n in TRICKY for w in ("weight", "bias")}
            cells = page.eval_on_selector_all(
                "#tensors tbody tr td:first-child", "tds => tds.map(t => t.textContent)"
            )
            assert set(cells) == set(rows)
            assert page.eval_on_selector_all("script", "s => s.length") == 3  # uPlot, page, blob
            assert page.eval_on_selector_all("#tensors b", "b => b.length") == 0  # no injection
        finally:
            browser.close()
    assert not errors, errors


def test_title_is_the_models_name_and_the_subtitle_its_source(tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    run = tmp_path / "runs" / "exp1"
    run.mkdir(parents=True)
    ckpt = paramscope.save({"w": torch.ones(2, 2)}, run / "model.safetensors")
    cases = [(ckpt, "exp1")]  # a generic file name: its folder's
    named = paramscope.save({"w": torch.ones(2, 2)}, tmp_path / "step-1000.safetensors")
    cases.append((named, "step-1000.safetensors"))  # a telling file name: itself
    w = GGUFWriter(str(tmp_path / "model-q4.gguf"), "llama")
    w.add_name("TinyLlama Chat")  # general.name
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    cases.append((tmp_path / "model-q4.gguf", "TinyLlama Chat"))
    for src, want in cases:
        data = _blob(report(src, tmp_path / "r.html").read_text("utf-8"))
        assert data["title"] == want, (src, data["title"])
        assert data["source"].endswith(Path(src).name)  # the full source, shown below it
    (run / "config.json").write_text(json.dumps({"_name_or_path": "org/tiny", "n_layer": 1}))
    assert _blob(report(ckpt, tmp_path / "r.html").read_text("utf-8"))["title"] == "org/tiny"
    assert _blob(report("zoo:mlp-3-5-2", tmp_path / "r.html").read_text("utf-8"))["title"] == (
        "mlp-3-5-2"
    )


def test_treemap_opens_where_repeated_blocks_become_visible() -> None:
    from paramscope.building import zoo
    from paramscope.counting import summary
    from paramscope.reporting._html import AUTO_CELLS, build_report_data

    gpt2 = build_report_data("zoo:gpt2")
    assert gpt2["depth"] == 3  # transformer.h.0 … h.11 beside wte, wpe, ln_f, lm_head
    cells, _ = _frontier(summary(zoo.build("gpt2")).root, 3)
    assert {f"transformer.h.{i}" for i in range(12)} <= cells
    assert len(_frontier(summary(zoo.build("gpt2")).root, 2)[0]) < AUTO_CELLS <= len(cells)
    assert build_report_data("zoo:gpt2", depth=1)["depth"] == 1  # asked for: kept
    assert build_report_data("zoo:mlp-3-5-2")["depth"] == 1  # never deeper than it changes


def _tiny_gpt2(tmp_path: Path) -> tuple[Any, Path]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=97, n_positions=16)
    model = GPT2LMHeadModel(cfg)
    path = tmp_path / "gpt2-tiny.safetensors"
    paramscope.save(model.state_dict(), path)
    return model, path


def test_measures_are_the_public_functions(tmp_path: Path) -> None:
    """--stats / --spectral put exactly weight_stats / spectral_stats in the page; the blocks
    are transformers' own blocks with their parameter counts."""
    from paramscope.reporting._html import build_report_data

    model, path = _tiny_gpt2(tmp_path)
    d = build_report_data(path, stats=True, spectral=True)
    assert d["stats"] == json.loads(json.dumps(paramscope.weight_stats(path).to_dict()))
    assert d["spectral"] == json.loads(json.dumps(paramscope.spectral_stats(path).to_dict()))
    assert d["change"] is None and d["against"] is None
    blocks = [(b["path"], b["index"], b["params"]) for b in d["blocks"]]
    assert blocks == [
        (f"transformer.h.{i}", i, sum(p.numel() for p in h.parameters()))
        for i, h in enumerate(model.transformer.h)
    ]
    plain = build_report_data(path)
    assert plain["stats"] is None and plain["spectral"] is None and plain["change"] is None
    # the same from the module in memory
    m = build_report_data(model, stats=True)
    assert {t["name"] for t in m["stats"]["tensors"]} >= {
        n for n, p in model.named_parameters() if n != "lm_head.weight"
    }


def test_measures_refuse_meta_models(cli, tmp_path: Path) -> None:
    out = tmp_path / "z.html"
    for flag in ("--stats", "--spectral"):
        r = cli("report", "zoo:mlp-3-5-2", "-o", out, flag)
        assert r.code == 2 and r.out == "", r
        assert "meta device" in r.err and flag.removeprefix("--") in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_report_title_is_the_models_name(cli, tmp_path: Path) -> None:
    _, path = _tiny_gpt2(tmp_path)
    out = tmp_path / "r.html"
    r = cli("report", str(path), "-o", out, "--stats")
    assert r.code == 0, r
    d = _blob(out.read_text("utf-8"))
    assert d["title"] == "gpt2-tiny.safetensors" and d["source"] == str(path)
    assert d["stats"]["blocks"] == 4
    r = cli("report", str(path), "-o", out, "--title", "mine")
    assert r.code == 0 and _blob(out.read_text("utf-8"))["title"] == "mine"


def test_blocks_carry_flops_and_activations() -> None:
    """Per block: parameters from the model, FLOPs from paramscope.flops' own module tree,
    activations from estimate_memory's formula (one layer's worth)."""
    from paramscope.reporting._html import build_report_data

    d = build_report_data("zoo:gpt2", flops=True, seq=64)
    fr = paramscope.flops("zoo:gpt2", seq=64)
    by_path = {}
    stack = [fr.root]
    while stack:
        n = stack.pop()
        by_path[n.path] = n.flops
        stack.extend(n.children)
    mem = paramscope.estimate_memory(
        "zoo:gpt2", training=True, mixed_precision=True, optimizer="adamw", seq=64
    )
    per_layer = mem.details["activations"]["per_layer"]
    assert len(d["blocks"]) == 12
    for b in d["blocks"]:
        assert b["flops"] == by_path[b["path"]] > 0
        assert b["activations"] == per_layer
    assert any(n.startswith("activations per block: ") for n in d["notes"])
    plain = build_report_data("zoo:gpt2")
    assert all(b["flops"] is None and b["activations"] is None for b in plain["blocks"])


def test_quantize_html_is_sqnr_by_layer(cli, tmp_path: Path) -> None:
    """`quantize --html` writes DST's report against SRC: per layer the SQNR the quantize run
    itself measured, bits per weight from the stored bytes, the worst layers named."""
    _, src = _tiny_gpt2(tmp_path)
    dst, page = tmp_path / "q.safetensors", tmp_path / "q.html"
    r = cli("quantize", str(src), str(dst), "--bits", "4", "--html", str(page), "--json")
    assert r.code == 0, r
    run = json.loads(r.out)
    assert run["html"] == str(page)
    change = _blob(page.read_text("utf-8"))["change"]
    rows = {t["name"]: t for t in change["tensors"]}
    measured = {t["name"]: t for t in run["tensors"]}
    assert measured and set(measured) <= set(rows)
    for name, m in measured.items():
        assert rows[name]["quantized"]
        assert rows[name]["sqnr_db"] == pytest.approx(m["sqnr_db"], rel=1e-6)
    manifest = paramscope.read_manifest(dst)
    for name, row in rows.items():
        if not row["quantized"]:
            continue
        rec = manifest[name].extra["quant"]
        stored = sum(manifest[n].nbytes for n in (name, rec["scale"], rec.get("zero")) if n)
        assert row["bits_per_weight"] == pytest.approx(stored * 8 / row["numel"])
    lowest = min(measured.values(), key=lambda m: m["sqnr_db"])["name"]
    assert change["worst"]["sqnr_db"][0]["name"] == lowest
    r = cli("quantize", str(src), str(dst), "--bits", "8", "--html", str(page))
    assert r.code == 0 and r.out.splitlines()[-1] == f"wrote {page}"


def test_stats_report_reads_each_tensor_once(tmp_path: Path, monkeypatch) -> None:
    """With --stats the table's histograms and zero counts come from the statistics' pass:
    every tensor is read once, and the page's numbers are those of a plain report."""
    from paramscope.io._reader import SourceReader
    from paramscope.reporting._html import build_report_data

    _, path = _tiny_gpt2(tmp_path)
    plain = build_report_data(path)
    reads: list[str] = []
    real = SourceReader.read

    def spy(self, e):  # type: ignore[no-untyped-def]
        reads.append(e.name)
        return real(self, e)

    monkeypatch.setattr(SourceReader, "read", spy)
    both = build_report_data(path, stats=True)
    assert sorted(reads) == sorted(set(reads)) == sorted(t["name"] for t in plain["tensors"])
    assert both["tensors"] == plain["tensors"]  # the same histograms, zeros, everything
    assert sum("hist" in t for t in both["tensors"]) == len(both["stats"]["tensors"]) > 0
    assert all("hist" not in t and "zeros" not in t for t in both["stats"]["tensors"])
