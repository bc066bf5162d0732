"""Headless Chromium for the page tests, with the network off.

Debian's Chromium (``/usr/bin/chromium``) is driven through Playwright for Python (``pip install
playwright``; ``playwright install`` is not needed). :func:`chromium` is one browser per test
module; :class:`Browser` opens pages in it with every non-``file:`` request blocked and
recorded, and console errors and page errors collected; the :func:`browser` fixture fails the
test on any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


class Browser:
    """One headless Chromium for the module; each page records blocked requests and errors."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.errors: list[str] = []
        self.blocked: list[str] = []

    def open(self, html: Path, ready: str = "#treemap [data-path]") -> Any:
        """Open ``html`` in a fresh context and wait until ``ready`` (a CSS selector) shows."""

        def route(r: Any) -> None:
            if r.request.url.startswith("file:"):
                r.continue_()
            else:
                self.blocked.append(r.request.url)
                r.abort()

        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.goto(html.as_uri())
        page.wait_for_selector(ready)
        return page


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    assert CHROMIUM.exists(), (
        "the browser test needs Chromium at /usr/bin/chromium (apt-get install chromium)"
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a missing test dependency must fail, not skip
        pytest.fail("the browser test needs Playwright for Python: pip install playwright")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    """A fresh record of errors per test; the page must neither fail nor ask the network."""
    b = Browser(chromium)
    yield b
    assert not b.errors, b.errors
    assert not b.blocked, b.blocked
