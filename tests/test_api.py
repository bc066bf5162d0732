"""The public contract: one export list, lazily loaded, every name resolvable; style clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import paramscope

ROOT = Path(__file__).resolve().parents[1]


def test_every_exported_name_resolves() -> None:
    import types

    for name in paramscope.__all__:
        value = getattr(paramscope, name)
        assert value is not None, name
        is_module = isinstance(value, types.ModuleType)
        assert is_module == (name in ("formulas", "zoo")), name


def test_function_names_survive_subpackage_imports() -> None:
    import paramscope.counting
    import paramscope.io

    assert callable(paramscope.count) and callable(paramscope.inspect)
    assert paramscope.count.__module__ == "paramscope.counting._count"


def test_unknown_attribute_raises() -> None:
    try:
        paramscope.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    r = subprocess.run([ruff, "check", "src", "tests", "bench"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_py_typed_marker_ships() -> None:
    assert (ROOT / "src" / "paramscope" / "py.typed").exists()


def test_readme_test_command_is_what_ci_runs() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "# paramscope"  # the title, one short paragraph, then the two commands
    start = lines.index("```bash")
    assert start <= 8 and all(line for line in lines[2 : start - 1])
    readme = lines[start:]
    assert readme[0] == "```bash" and readme[3] == "```"
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == readme[2]
    assert "paramscope inspect zoo:" in readme[1] and readme[1].startswith("python3 -m venv")
