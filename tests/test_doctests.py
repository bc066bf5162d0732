"""Every docstring example of the package runs as a doctest: one test per module.

Every module under ``src/paramscope`` is imported (an import that fails is a failure, never a
skip) and the examples of everything it defines are run, including functions behind
decorators whose wrapper lives elsewhere (``contextlib.contextmanager``) and classes defined
on first use (reached through a package's ``__all__``). A last test reads the source files
and checks that every ``>>>`` line there is one of the examples run, and that none is a
commented-out example or skipped with ``+SKIP``.

Each module runs with warnings as errors (a file left open too; not the deprecations other
packages raise in their own imports), its temp files under pytest's ``tmp_path`` and an empty
current folder that must stay empty: examples write into temp folders, never the cwd.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import linecache
import os
import pkgutil
import re
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import pytest

import paramscope

SRC = Path(paramscope.__file__).parent
MODULES = [
    "paramscope",
    *sorted(info.name for info in pkgutil.walk_packages(paramscope.__path__, "paramscope.")),
]


class _Finder(doctest.DocTestFinder):
    """doctest's finder that also sees a decorated function whose wrapper was made in another
    module (``contextlib.contextmanager``): the stock finder drops it as not "from" its module."""

    def _from_module(self, module: ModuleType, obj: object) -> bool:
        return super()._from_module(module, inspect.unwrap(obj))  # type: ignore[misc, arg-type]

    def _find_lineno(self, obj: object, source_lines: list[str] | None) -> int | None:
        return super()._find_lineno(inspect.unwrap(obj), source_lines)  # type: ignore[misc]


def _defined_on_first_use() -> dict[str, list[object]]:
    """Module name → classes and functions that module makes on first use (not in its
    namespace, e.g. a torch subclass built lazily), found through every module's ``__all__``."""
    found: dict[str, list[object]] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            home = getattr(obj, "__module__", None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or home not in MODULES:
                continue
            owner = importlib.import_module(home)
            if not any(v is obj for v in vars(owner).values()) and obj not in found.get(home, []):
                found.setdefault(home, []).append(obj)
    return found


def _doctests(name: str) -> list[doctest.DocTest]:
    """The doctests of one module, with examples, in a stable order."""
    module = importlib.import_module(name)
    finder = _Finder()
    tests = finder.find(module, name)
    for obj in _defined_on_first_use().get(name, []):
        qualname = getattr(obj, "__qualname__", "?").split("<locals>.")[-1]
        tests += finder.find(obj, f"{name}.{qualname}", module=module, globs=vars(module))
    unique = {t.name: t for t in tests if t.examples}
    return sorted(unique.values(), key=lambda t: t.name)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # a file left open
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an example that warns shows a misuse, or a bug
        # what a third-party package deprecates in its own imports (click, under typer)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="(?!paramscope)")
        for test in _doctests(name):
            runner.run(test, out=report.append)
    if runner.failures:
        pytest.fail(
            f"{runner.failures} of {runner.tries} examples of {name} failed:\n{''.join(report)}",
            pytrace=False,
        )
    assert os.listdir(cwd) == [], f"examples of {name} wrote into the current folder"


_EXAMPLE_LINE = re.compile(r"^\s*>>>(.*)$")


def test_every_example_in_the_source_runs() -> None:
    """Every ``>>>`` line of the source starts an example that the tests above run; none is a
    commented-out example (``>>> # f(x)``) and none is skipped."""
    run: set[tuple[str, int]] = set()
    skipped: list[str] = []
    for name in MODULES:
        for test in _doctests(name):
            assert test.filename is not None and test.lineno is not None, test.name
            for ex in test.examples:
                run.add((str(Path(test.filename).resolve()), test.lineno + ex.lineno + 1))
                if ex.options.get(doctest.SKIP):
                    skipped.append(f"{test.name}: {ex.source.strip()}")
    commented, missed, total = [], [], 0
    for path in sorted(SRC.rglob("*.py")):
        # the lines the finder saw (linecache), not the file now: the two agree unless it is
        # being edited while the tests run
        for i, line in enumerate(linecache.getlines(str(path)), start=1):
            m = _EXAMPLE_LINE.match(line)
            if not m:
                continue
            total += 1
            where = f"{path.relative_to(SRC.parent)}:{i}: {line.strip()}"
            if m.group(1).strip().startswith("#"):
                commented.append(where)
            elif (str(path.resolve()), i) not in run:
                missed.append(where)
    assert commented == [], "commented-out examples:\n" + "\n".join(commented)
    assert skipped == [], "skipped examples:\n" + "\n".join(skipped)
    assert missed == [], "examples no doctest runs:\n" + "\n".join(missed)
    assert total == len(run) > 800
