"""Produce the Show page's images at build time (never committed binaries).

- ``assets/show/report-gpt2.html``: ``paramscope report zoo:gpt2`` (the CLI, as a user runs it);
- ``assets/show/report-gpt2*.png``: that report in Debian's headless Chromium
  (``/usr/bin/chromium``) driven by Playwright, every non-``file:`` request blocked, as
  ``tests/test_report_html.py`` does it: the top of the page; the treemap coloured by layer
  type after a click on ``transformer.h.0`` (zoom into one block); the tensor table filtered
  to ``h.0.``;
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


def _screenshots(html: Path) -> dict[str, bytes]:
    from playwright.sync_api import sync_playwright

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
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            context.route("**/*", route)
            page = context.new_page()
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
