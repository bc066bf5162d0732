"""Shared test options: ``--update-golden`` rewrites tests/golden/*.txt from current output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from _browser import browser, chromium  # noqa: F401  (fixtures for every module)
from _servers import http_files, s3, s3_server  # noqa: F401  (fixtures for every module)

GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files in tests/golden from the current output",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with tests/golden/NAME (or rewrite it with --update-golden)."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--update-golden"):
            path.write_text(text)
            return
        assert path.exists(), f"missing golden file {path}; run pytest --update-golden"
        expected = path.read_text()
        assert text == expected, f"output differs from {path} (pytest --update-golden to accept)"

    return check


class CliResult:
    """What one in-process ``paramscope`` run returned: ``code``, ``out`` (stdout), ``err``."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __iter__(self):  # ``code, out, err = cli(...)``
        return iter((self.code, self.out, self.err))

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``paramscope ARGS...`` in this process through :func:`paramscope.cli.main` (the
    console script's own entry point) and return a :class:`CliResult`. Tests that need a fresh
    process (torch not imported, a signal, an environment) use a subprocess instead
    (``_helpers.run_cli``).

    As in a subprocess of the tests: no ``PARAMSCOPE_DEBUG`` (errors are one line), no colour;
    ``sys.path`` (which a ``module:callable`` TARGET extends with the current folder) is
    restored after the test. Run in another folder with ``monkeypatch.chdir``."""
    from paramscope.cli import main

    for name in ("PARAMSCOPE_DEBUG", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(sys, "path", list(sys.path))

    def run(*args: object) -> CliResult:
        capsys.readouterr()  # drop what came before
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
