"""Produce the Show page's images at build time (never committed binaries).

- ``assets/show/report-gpt2.html``: ``paramscope report zoo:gpt2`` (the CLI, as a user runs it);
- ``assets/show/report-gpt2*.png``: that report in Debian's headless Chromium
  (``/usr/bin/chromium``) driven by Playwright, every non-``file:`` request blocked, as
  ``tests/test_report_html.py`` does it: the top of the page; the treemap coloured by layer
  type after a click on ``transformer.h.0`` (zoom into one block); the tensor table filtered
  to ``h.0.``;
- ``assets/show/report-change.html`` and its views ``report-depth.png``, ``report-spectral.png``,
  ``report-change.png``, ``report-change-treemap.png``: a small GPT-2 (the zoo's, 12 blocks of
  width 128, seeded) saved as safetensors, and a copy of it changed more the deeper the block
  (a stand-in for a fine-tune; block 7's MLP input weight tripled in both, a layer that stands
  out), reported as ``paramscope report B --against A --stats
  --spectral``; ``report-memory.png``: the compute and memory section of ``paramscope report
  zoo:gpt2 --flops --seq 1024 --batch 8 --no-values``;
- ``assets/show/gpt2.svg``: ``paramscope.diagram("zoo:gpt2", format="dot", depth=4)`` through
  Graphviz (``dot -Tsvg``), and its source ``assets/show/gpt2.dot``.

Nothing here uses the network. A missing Chromium, Playwright or Graphviz is a warning, so
``mkdocs build --strict`` fails while a plain ``mkdocs serve`` still shows the rest.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mkdocs_gen_files

log = logging.getLogger("mkdocs.plugins.paramscope.screenshots")
CHROMIUM = Path("/usr/bin/chromium")
OUT = "assets/show"
# A 1×1 transparent PNG, written in place of an image that could not be made.
BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
SHOTS = ("report-gpt2.png", "report-gpt2-zoom.png", "report-gpt2-table.png")
VIEWS = (
    "report-depth.png",
    "report-spectral.png",
    "report-change.png",
    "report-change-treemap.png",
    "report-memory.png",
)
BLANK_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>\n'


def _write(name: str, data: bytes | str) -> None:
    mode = "wb" if isinstance(data, bytes) else "w"
    with mkdocs_gen_files.open(f"{OUT}/{name}", mode) as f:
        f.write(data)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paramscope", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def _small_gpt2_pair(tmp: Path) -> tuple[Path, Path]:
    """A small seeded GPT-2 checkpoint ``A``, and ``B``: ``A`` with every block's weights moved
    by noise that grows with depth (the later blocks change most, as a fine-tune's often do).
    Block 7's MLP input weight is three times as large in both, a layer that stands out."""
    import torch

    import paramscope
    from paramscope.building import zoo

    torch.manual_seed(0)
    model = zoo.build("gpt2", n_layer=12, n_embd=128, n_head=4, vocab_size=2048, n_positions=256)
    a = {k: v.detach().clone() for k, v in paramscope.ParamDict.from_module(model).items()}
    a["transformer.h.7.mlp.c_fc.weight"] *= 3
    g = torch.Generator().manual_seed(1)
    b = {}
    for name, t in a.items():
        parts = name.split(".")
        block = int(parts[2]) if parts[1] == "h" else None
        if block is not None and t.ndim == 2:
            t = t + 2e-4 * (1 + block) * torch.randn(t.shape, generator=g)
        b[name] = t
    pa = Path(paramscope.save(paramscope.ParamDict(a), tmp / "gpt2-small.safetensors"))
    pb = Path(paramscope.save(paramscope.ParamDict(b), tmp / "gpt2-small-tuned.safetensors"))
    return pa, pb


def _browser(p: Any, blocked: list[str]) -> tuple[Any, Any]:
    """Headless Chromium with every non-``file:`` request blocked (recorded in ``blocked``)."""

    def route(r: Any) -> None:
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

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
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.route("**/*", route)
    return browser, context.new_page()


def _hover_top_point(page: Any, chart: str, block: int) -> None:
    """Hover the highest point of ``chart`` at ``block`` (its tooltip shows in the picture)."""
    x, y = page.evaluate(
        """([name, j]) => { const u = window.paramscopeCharts[name];
          u.over.scrollIntoView({block: "center"});
          const r = u.over.getBoundingClientRect(); let best = null;
          for (let i = 1; i < u.series.length; i++) {
            const v = u.data[i][j];
            if (v !== null && (best === null || v > best[1])) best = [i, v];
          }
          const y = u.valToPos(best[1], u.series[best[0]].scale);
          return [r.left + u.valToPos(j, "x"), r.top + y];
        }""",
        [chart, block],
    )
    page.mouse.move(x - 2, y)
    page.mouse.move(x, y)
    page.wait_for_timeout(150)


def _views(change_html: Path, memory_html: Path) -> dict[str, bytes]:
    """The pictures of each chart view: across depth, spectral, change (chart and treemap),
    compute and memory."""
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    shots: dict[str, bytes] = {}
    with sync_playwright() as p:
        browser, page = _browser(p, blocked)
        try:
            page.goto(change_html.as_uri())
            page.wait_for_selector("#treemap [data-path]")
            shots["report-change-treemap.png"] = page.locator(
                "section", has=page.locator("#treemap")
            ).screenshot()
            page.select_option("#depth-stat", "std")
            _hover_top_point(page, "depth", 7)
            shots["report-depth.png"] = page.locator("#depth-section").screenshot()
            _hover_top_point(page, "spectral", 4)
            shots["report-spectral.png"] = page.locator("#spectral-section").screenshot()
            _hover_top_point(page, "change", 11)
            shots["report-change.png"] = page.locator("#change-section").screenshot()
            page.goto(memory_html.as_uri())
            page.wait_for_selector('[data-chart="blocks"] canvas')
            shots["report-memory.png"] = page.locator("#compute-section").screenshot()
        finally:
            browser.close()
    if blocked:
        log.warning("the report asked for the network: %s", blocked)
    return shots


def _screenshots(html: Path) -> dict[str, bytes]:
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    with sync_playwright() as p:
        browser, page = _browser(p, blocked)
        try:
            page.goto(html.as_uri())
            page.wait_for_selector("#treemap [data-path]")
            shots = {"report-gpt2.png": page.screenshot(full_page=False)}
            page.select_option("#color-mode", "kind")
            page.click('#treemap [data-path="transformer.h.0"]')
            page.mouse.move(0, 0)
            page.wait_for_timeout(200)
            treemap = page.locator("section", has=page.locator("#treemap"))
            shots["report-gpt2-zoom.png"] = treemap.screenshot()
            page.fill("#filter", "h.0.")
            page.wait_for_timeout(200)
            table = page.locator("section", has=page.locator("#tensors"))
            shots["report-gpt2-table.png"] = table.screenshot()
        finally:
            browser.close()
    if blocked:
        log.warning("the report asked for the network: %s", blocked)
    return shots


def main() -> None:
    """Write the report, its screenshots and the Graphviz diagram under assets/show/."""
    with tempfile.TemporaryDirectory(prefix="paramscope-docs-") as tmp:
        html = Path(tmp) / "report-gpt2.html"
        _cli("report", "zoo:gpt2", "-o", str(html))
        _write("report-gpt2.html", html.read_bytes())
        try:
            if not CHROMIUM.exists():
                raise RuntimeError(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
            shots = _screenshots(html)
        except Exception as exc:  # a docs build without a browser: say so, keep building
            log.warning("report screenshots not made: %s", exc)
            shots = dict.fromkeys(SHOTS, BLANK_PNG)
        for name in SHOTS:
            _write(name, shots[name])

        a, b = _small_gpt2_pair(Path(tmp))
        change = Path(tmp) / "report-change.html"
        _cli(
            "report",
            str(b),
            "--against",
            str(a),
            "--stats",
            "--spectral",
            "-o",
            str(change),
            "--title",
            "a tuned GPT-2 (small config) against its original",
        )
        _write("report-change.html", change.read_bytes())
        memory = Path(tmp) / "report-memory.html"
        _cli(
            "report",
            "zoo:gpt2",
            "--flops",
            "--seq",
            "1024",
            "--batch",
            "8",
            "--no-values",
            "-o",
            str(memory),
        )
        try:
            if not CHROMIUM.exists():
                raise RuntimeError(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
            views = _views(change, memory)
        except Exception as exc:  # a docs build without a browser: say so, keep building
            log.warning("report view screenshots not made: %s", exc)
            views = dict.fromkeys(VIEWS, BLANK_PNG)
        for name in VIEWS:
            _write(name, views[name])

    import paramscope

    dot_text = paramscope.diagram("zoo:gpt2", format="dot", depth=4)
    dot = shutil.which("dot")
    if dot is None:
        log.warning("Graphviz diagram not drawn: no `dot` (apt-get install graphviz)")
        _write("gpt2.svg", BLANK_SVG)
    else:
        svg = subprocess.run(
            [dot, "-Tsvg"], input=dot_text, capture_output=True, text=True, check=True, timeout=60
        ).stdout
        _write("gpt2.svg", svg)
    _write("gpt2.dot", dot_text)


main()
