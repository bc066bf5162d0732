"""The built wheel carries the report's package data, and an installed copy renders a report.

The HTML report's template, style sheet and script are files in ``reporting/assets/`` read with
:mod:`importlib.resources`, so a wheel without them would import fine and fail at the first
``report``. This builds the wheel from a copy of the project (the working tree is left
untouched), checks the files are inside, unpacks it, and renders a report in a fresh process
that imports paramscope from the unpacked wheel only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ("report.html", "report.css", "report.js")

RENDER = """
import json, sys
from pathlib import Path
import torch
import paramscope
from paramscope.reporting import _html

site, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
for module in (paramscope, _html):
    assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
paramscope.report(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)), out)
print(json.dumps({"css": _html._asset("report.css"), "js": _html._asset("report.js")}))
"""


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the project (pyproject, README, src) into ``tmp_path/dist``."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, proj / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", proj / "src", ignore=ignore)
    dist = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--quiet", str(proj), "-w", str(dist)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(dist.glob("paramscope-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_carries_the_report_assets_and_renders(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for asset in ASSETS:
            member = f"paramscope/reporting/assets/{asset}"
            assert member in names, sorted(n for n in names if "reporting" in n)
            source = ROOT / "src" / "paramscope" / "reporting" / "assets" / asset
            assert z.read(member) == source.read_bytes(), asset
        assert "paramscope/py.typed" in names
        site = tmp_path / "site"
        z.extractall(site)

    out = tmp_path / "report.html"
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PARAMSCOPE_DEBUG", None)
    r = subprocess.run(
        [sys.executable, "-c", RENDER, str(site), str(out)],
        cwd=tmp_path,  # not the project root: only the unpacked wheel is importable as source
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assets = json.loads(r.stdout)
    page = out.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count(assets["css"]) == 1 and page.count(assets["js"]) == 1
    assert "__CSS__" not in page and "__JS__" not in page and "__DATA__" not in page
    start = page.index('<script type="application/json" id="paramscope-data">')
    blob = page[start:].split(">", 1)[1].split("</script>", 1)[0]
    assert json.loads(blob)["counts"]["params"] == 4 * 3 + 3 + 3 * 2 + 2
