"""The header-only path stays light: no torch (nor numpy, rich, typer) gets imported."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

import paramscope
from paramscope import ParamDict

HEAVY = ("torch", "numpy", "rich", "typer", "safetensors")


def run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_light():
    code = "import json, sys, paramscope\nprint(json.dumps({m: m in sys.modules for m in HEAVY}))"
    got = run(code.replace("HEAVY", repr(HEAVY)))
    assert got == dict.fromkeys(HEAVY, False)


def test_public_names_resolve_lazily():
    code = (
        "import json, sys, paramscope\n"
        "names = [n for n in paramscope.__all__ if n != '__version__']\n"
        "missing = [n for n in names if getattr(paramscope, n, None) is None]\n"
        "print(json.dumps({'missing': missing, 'torch': 'torch' in sys.modules,"
        " 'n': len(names)}))"
    )
    got = run(code)
    assert got["missing"] == []
    assert got["torch"] is False
    assert got["n"] > 30


HEADER_ONLY = r"""
import json, sys
import paramscope
single, folder = sys.argv[1], sys.argv[2]
c = paramscope.count(single)
r = paramscope.verify(single)
m = paramscope.read_manifest(folder)
cs = paramscope.count(folder)
rs = paramscope.verify(folder)
d = paramscope.detect_format(single).value
print(json.dumps({
    "params": c.params, "ok": r.ok, "hashed": r.hashed, "sharded": m.format.value,
    "entries": len(m), "sharded_params": cs.params, "sharded_ok": rs.ok, "fmt": d,
    "loaded": {k: k in sys.modules for k in ("torch", "numpy", "rich", "typer")},
}))
"""


def test_header_only_calls_stay_torch_free(tmp_path):
    pd = ParamDict()
    pd.add("a.weight", torch.randn(10, 10))
    pd.add("a.bias", torch.randn(10))
    pd.add("b.weight", torch.randn(10, 10).to(torch.bfloat16))
    pd.add("b.steps", torch.tensor([4]), role="buffer")
    pd.tie("c.weight", "a.weight")
    single = paramscope.save(pd, tmp_path / "m.safetensors")
    index = paramscope.save(pd, tmp_path / "sharded", max_shard_size=250)
    assert index.name == "model.safetensors.index.json"

    got = run(HEADER_ONLY, str(single), str(index.parent))
    assert got["loaded"] == {"torch": False, "numpy": False, "rich": False, "typer": False}
    assert got["params"] == 100 + 10 + 100
    assert got["ok"] is True and got["hashed"] == 4
    assert got["sharded"] == "sharded"
    assert got["entries"] == 5
    assert got["sharded_params"] == 210
    assert got["sharded_ok"] is True
    assert got["fmt"] == "safetensors"
