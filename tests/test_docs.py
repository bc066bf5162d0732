"""The documentation: the site builds strictly, and every Python block in it runs.

Two checks:

- ``mkdocs build --strict`` into a temp folder, failing on any warning: a broken link or
  cross-reference, a page missing from the nav, a docstring griffe cannot parse, a missing
  browser or Graphviz for the generated images. The generated pages are then checked for
  completeness (every CLI command and option, every public name).
- Every fenced code block of ``README.md`` and ``docs/**/*.md``, page by page:

  - ```` ```python ```` blocks run in order in one namespace per page, in a fresh temp
    working folder; a block whose lines start with ``>>>`` (or a ```` ```pycon ```` block) is
    a doctest in that same namespace, so output shown on a page is output checked (``...``
    matches anything; blank lines and trailing spaces are not compared, since a doctest
    cannot show them);
  - ```` ```console ```` and ```` ```bash ```` blocks are shown, not run; a ``console`` block
    holds commands only (``$ ...`` lines and ``#`` comments: output shown in the docs must come
    from a checked block), and every ``paramscope`` command in one must name a real command
    and real options;
  - a block whose info string has the word ``skip`` (```` ```python skip ````) is not run:
    the page must say why, next to it. None is today.

Run one page: ``pytest tests/test_docs.py -k guide/store``.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in DOCS.rglob("*.md") if not p.relative_to(DOCS).parts[0].startswith("_")),
]
RUN = {"python", "py", "pycon"}
SHOWN = {"console", "bash", "sh", "shell", "text", "json", "yaml", "mermaid", "dot", ""}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the first code line
    lang: str
    words: list[str]
    code: str

    @property
    def where(self) -> str:
        return f"{_rel(self.page)}:{self.line}"


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order (indented fences too, dedented)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        words = info.split()
        lang = words[0].lstrip(".{").rstrip("}") if words else ""
        body: list[str] = []
        j = i + 1
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        assert j < len(lines), f"{_rel(page)}:{i + 1}: unclosed code fence"
        found.append(Block(page, i + 2, lang, words[1:], "\n".join(body) + "\n"))
        i = j + 1
    return found


def _is_doctest(block: Block) -> bool:
    return block.lang == "pycon" or block.code.lstrip().startswith(">>>")


class _Checker(doctest.OutputChecker):
    """doctest's checker, blind to blank lines and trailing spaces (a page cannot show them)."""

    @staticmethod
    def _lines(text: str) -> str:
        kept = [line.rstrip() for line in text.splitlines() if line.strip()]
        return "\n".join(kept) + "\n" if kept else ""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return super().check_output(self._lines(want), self._lines(got), optionflags)


def _run_doctest(block: Block, ns: dict[str, object]) -> None:
    test = doctest.DocTestParser().get_doctest(
        block.code, ns, block.where, str(block.page), block.line - 1
    )
    test.globs = ns  # DocTest copies its globals: share the page's namespace instead
    out: list[str] = []
    runner = doctest.DocTestRunner(_Checker(), optionflags=doctest.ELLIPSIS, verbose=False)
    runner.run(test, out=out.append, clear_globs=False)
    if runner.failures:
        pytest.fail(f"doctest block at {block.where} failed:\n{''.join(out)}", pytrace=False)


def _run_python(block: Block, ns: dict[str, object]) -> None:
    # Pad with newlines so a traceback names the page's own line numbers.
    code = compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
    exec(code, ns)


#: Options of every command (the CLI takes them anywhere: ``paramscope.cli.main``).
GLOBAL_OPTIONS = {"--allow-download"}


def _cli_commands(arguments: bool = False) -> dict[str, set[str]]:
    import click
    import typer.main

    try:
        from paramscope.cli import app  # type: ignore[attr-defined]
    except ImportError:
        from paramscope.cli._app import app
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    ctx = click.Context(group)
    commands: dict[str, set[str]] = {}
    flat: list[tuple[str, click.Command]] = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        if isinstance(cmd, click.Group):  # a command group (``lora``): its commands by full name
            sub = click.Context(cmd, info_name=name, parent=ctx)
            flat += [(f"{name} {s}", cmd.get_command(sub, s)) for s in cmd.list_commands(sub)]
        else:
            flat.append((name, cmd))
    for name, cmd in flat:
        assert cmd is not None
        opts = {"--help"}
        for p in cmd.params:
            if isinstance(p, click.Option):
                opts.update(p.opts)
                opts.update(p.secondary_opts)
            elif arguments:
                opts.add(p.make_metavar(click.Context(cmd)))
        commands[name] = opts
    return commands


def _check_console(block: Block, commands: dict[str, set[str]]) -> None:
    continued = False
    for n, raw in enumerate(block.code.splitlines()):
        line = raw.strip()
        where = f"{_rel(block.page)}:{block.line + n}"
        if not line or line.startswith("#") or continued:
            continued = line.endswith("\\")
            continue
        assert line.startswith("$ "), (
            f"{where}: a console block holds commands only ('$ ...'); show output in a "
            f"checked python block instead: {raw!r}"
        )
        continued = line.endswith("\\")
        command = line[2:].split(" #", 1)[0].replace("\\", " ")
        for part in re.split(r"\s*(?:\||&&|;)\s*", command):
            try:
                argv = shlex.split(part)
            except ValueError:
                continue
            argv = [a for a in argv if a not in GLOBAL_OPTIONS]
            if not argv or argv[0] != "paramscope" or len(argv) < 2 or argv[1] == "--help":
                continue
            key, rest = argv[1], argv[2:]
            if key not in commands and len(argv) > 2 and f"{key} {argv[2]}" in commands:
                key, rest = f"{key} {argv[2]}", argv[3:]
            assert key in commands, f"{where}: no command `paramscope {key}`"
            for token in rest:
                if token.startswith("-") and not re.fullmatch(r"-?\d+(\.\d+)?", token):
                    option = token.split("=", 1)[0]
                    assert option in commands[key], (
                        f"{where}: `paramscope {key}` has no option {option}"
                    )


@pytest.fixture
def docs_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working folder, and the environment the CLI tests use."""
    monkeypatch.chdir(tmp_path)
    for key, value in {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PARAMSCOPE_DEBUG", raising=False)
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_page_code_blocks_run(page: Path, docs_env: Path) -> None:
    """Every python block of the page runs, in order, in one namespace; doctests match."""
    ns: dict[str, object] = {"__name__": "__docs__"}
    commands: dict[str, set[str]] | None = None
    for block in blocks(page):
        if "skip" in block.words:
            continue
        if block.lang in RUN:
            if _is_doctest(block):
                _run_doctest(block, ns)
            else:
                _run_python(block, ns)
        elif block.lang == "console":
            commands = commands or _cli_commands()
            _check_console(block, commands)
        else:
            assert block.lang in SHOWN, f"{block.where}: unknown code block language {block.lang!r}"


def test_collector_finds_blocks(tmp_path: Path) -> None:
    """The collector sees fences as superfences does: indented ones too, and skips nothing."""
    text = textwrap.dedent(
        """\
        ```python
        x = 1
        ```
        !!! note
            ```pycon
            >>> x + 1
            2
            ```
        ````console
        $ paramscope zoo
        ````
        """
    )
    page = tmp_path / "selftest.md"
    page.write_text(text, encoding="utf-8")
    found = blocks(page)
    assert [(b.lang, b.code) for b in found] == [
        ("python", "x = 1\n"),
        ("pycon", ">>> x + 1\n2\n"),
        ("console", "$ paramscope zoo\n"),
    ]
    assert not any("skip" in b.words for p in PAGES for b in blocks(p)), (
        "a skipped block: make it run, or keep it and say why on the page (then relax this)"
    )


def test_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` passes: no warning at all; the generated pages are complete."""
    site = tmp_path / "site"
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
    env.pop("PARAMSCOPE_DEBUG", None)
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    warnings = [line for line in log.splitlines() if re.match(r"^\s*(WARNING|ERROR)\b", line)]
    assert not warnings, "\n".join(warnings)

    # The CLI reference: every command and every option, with its help text.
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for name, opts in _cli_commands(arguments=True).items():
        anchor = name.replace(" ", "-")
        assert f'id="{anchor}"' in cli, f"CLI reference lacks `paramscope {name}`"
        for opt in opts:
            assert f"<code>{opt}</code>" in cli, f"CLI reference lacks `paramscope {name} {opt}`"

    # Getting started shows the README's install commands (included from README.md).
    import html

    index = html.unescape(re.sub(r"<[^>]+>", "", (site / "index.html").read_text("utf-8")))
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = readme.index("```bash")
    for command in readme[start + 1 : readme.index("```", start)]:
        assert command in index, f"Getting started lacks the README command {command!r}"

    # The API reference: every public name has its entry, under its public name.
    import types

    import paramscope

    api = (site / "api" / "paramscope" / "index.html").read_text(encoding="utf-8")
    for name in paramscope.__all__:
        value = getattr(paramscope, name)
        if name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            assert (site / "api" / name / "index.html").exists(), f"no API page for {name}"
        else:
            assert f'id="paramscope.{name}"' in api, f"API reference lacks paramscope.{name}"

    # Security is SECURITY.md; the images were made, not left blank.
    security = (site / "security" / "index.html").read_text(encoding="utf-8")
    assert "What paramscope trusts" in security
    for shot in (
        "report-gpt2.png",
        "report-gpt2-zoom.png",
        "report-gpt2-table.png",
        "report-depth.png",
        "report-spectral.png",
        "report-change.png",
        "report-change-treemap.png",
        "report-memory.png",
    ):
        assert (site / "assets" / "show" / shot).stat().st_size > 10_000, shot
    assert "<svg" in (site / "assets" / "show" / "gpt2.svg").read_text(encoding="utf-8")
