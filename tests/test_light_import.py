"""The header-only path stays light: no torch (nor numpy, rich, typer) gets imported."""

from __future__ import annotations

import torch

import paramscope
from _helpers import HEAVY, without_torch
from paramscope import ParamDict


def test_import_is_light():
    assert without_torch("import paramscope\nresult = paramscope.__name__", absent=HEAVY) == (
        "paramscope"
    )


def test_public_names_resolve_lazily():
    code = (
        "import paramscope\n"
        "names = [n for n in paramscope.__all__ if n != '__version__']\n"
        "missing = [n for n in names if getattr(paramscope, n, None) is None]\n"
        "result = {'missing': missing, 'names': names}"
    )
    got = without_torch(code)
    assert got["missing"] == []
    assert got["names"] == [n for n in paramscope.__all__ if n != "__version__"]


HEADER_ONLY = r"""
import paramscope
single, folder = sys.argv[1], sys.argv[2]
c = paramscope.count(single)
r = paramscope.verify(single)
m = paramscope.read_manifest(folder)
cs = paramscope.count(folder)
rs = paramscope.verify(folder)
d = paramscope.detect_format(single).value
result = {
    "params": c.params, "ok": r.ok, "hashed": r.hashed, "sharded": m.format.value,
    "entries": len(m), "sharded_params": cs.params, "sharded_ok": rs.ok, "fmt": d,
}
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

    got = without_torch(HEADER_ONLY, single, index.parent, absent=HEAVY)
    assert got["params"] == 100 + 10 + 100
    assert got["ok"] is True and got["hashed"] == 4
    assert got["sharded"] == "sharded"
    assert got["entries"] == 5
    assert got["sharded_params"] == 210
    assert got["sharded_ok"] is True
    assert got["fmt"] == "safetensors"
