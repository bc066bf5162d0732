"""Checkpoint diffing: structure, values, the digest shortcut, sources of every kind, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope import ParamDict
from paramscope._diff import DiffReport, diff
from paramscope.io._reader import SourceReader

KEYS = {
    "added",
    "removed",
    "renamed",
    "shape_changed",
    "dtype_changed",
    "value_changed",
    "close",
    "identical",
    "ties_changed",
    "notes",
    "same",
}


def _pd(seed: int = 0) -> ParamDict:
    g = torch.Generator().manual_seed(seed)
    return ParamDict(
        {
            "enc.weight": torch.randn(8, 4, generator=g),
            "enc.bias": torch.randn(8, generator=g),
            "head.weight": torch.randn(3, 8, generator=g),
            "steps": torch.tensor([7], dtype=torch.int64),
        }
    )


def _save(pd: ParamDict | dict[str, torch.Tensor], path: Path) -> Path:
    return paramscope.save(pd, path, fsync=False)


def test_identical_files_are_the_same(cli, tmp_path: Path) -> None:
    a = _save(_pd(), tmp_path / "a.safetensors")
    b = _save(_pd(), tmp_path / "b.safetensors")
    r = diff(a, b)
    assert r.same and r.identical == 4
    assert r.to_dict() == DiffReport(identical=4, a=str(a), b=str(b)).to_dict()
    code, out, _ = cli("diff", str(a), str(b))
    assert code == 0 and out.startswith("same")


def test_rename_is_not_added_and_removed(tmp_path: Path) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    pd.rename("head.weight", "classifier.weight")
    b = _save(pd, tmp_path / "b.safetensors")
    r = diff(a, b)
    assert r.renamed == [{"from": "head.weight", "to": "classifier.weight"}]
    assert r.added == [] and r.removed == [] and not r.same
    # stored digest on one side, hashed bytes on the other
    assert diff(a, pd).renamed == [{"from": "head.weight", "to": "classifier.weight"}]
    # same name change, other values: no longer a rename
    pd["classifier.weight"] = pd["classifier.weight"] + 1
    r = diff(a, pd)
    assert r.renamed == [] and r.added == ["classifier.weight"] and r.removed == ["head.weight"]


def test_shape_change(tmp_path: Path) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    pd.remove("enc.bias")
    pd.add("enc.bias", torch.zeros(9))
    r = diff(a, _save(pd, tmp_path / "b.safetensors"))
    assert r.shape_changed == [{"name": "enc.bias", "a": [8], "b": [9]}]
    assert r.value_changed == [] and r.identical == 3 and not r.same


def test_dtype_change_reports_value_stats(tmp_path: Path) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    w = pd["enc.weight"]
    pd.update("enc.weight", w.to(torch.bfloat16), allow_dtype_change=True)
    r = diff(a, _save(pd, tmp_path / "b.safetensors"))
    assert r.dtype_changed == [{"name": "enc.weight", "a": "F32", "b": "BF16"}]
    (row,) = r.value_changed
    err = (w.double() - w.to(torch.bfloat16).double()).abs()
    assert row["name"] == "enc.weight"
    assert row["max_abs_diff"] == float(err.max())
    assert row["changed"] == int((err > 0).sum()) > 0
    assert 0 < row["rel_l2"] < 1e-2
    assert r.identical == 3


def test_one_changed_element(tmp_path: Path) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    pd["enc.weight"][2, 3] = 0.5
    b = _save(pd, tmp_path / "b.safetensors")
    before = paramscope.load(a)["enc.weight"][2, 3].item()
    r = diff(a, b)
    (row,) = r.value_changed
    assert row["name"] == "enc.weight" and row["changed"] == 1
    assert row["max_abs_diff"] == abs(float(before) - 0.5)
    assert r.identical == 3 and r.close == []


def test_atol_makes_a_tiny_perturbation_close(tmp_path: Path) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    pd["enc.bias"] = pd["enc.bias"] + 1e-6
    b = _save(pd, tmp_path / "b.safetensors")
    assert [x["name"] for x in diff(a, b).value_changed] == ["enc.bias"]
    r = diff(a, b, atol=1e-5)
    assert r.value_changed == [] and [x["name"] for x in r.close] == ["enc.bias"] and r.same
    r = diff(a, b, rtol=1e-9)  # too tight: still changed
    assert [x["name"] for x in r.value_changed] == ["enc.bias"]


def test_no_values_reports_structure_only(tmp_path: Path) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    pd["enc.weight"] = pd["enc.weight"] * 2
    pd.add("extra", torch.zeros(2))
    b = _save(pd, tmp_path / "b.safetensors")
    r = diff(a, b, values=False)
    assert r.added == ["extra"] and r.value_changed == [] and r.identical == 4
    assert r.notes
    assert [x["name"] for x in diff(a, b).value_changed] == ["enc.weight"]


def test_equal_digests_skip_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    b = _save(pd, tmp_path / "b.safetensors")
    pd["head.weight"] = pd["head.weight"] + 1
    c = _save(pd, tmp_path / "c.safetensors")

    def refuse(self: SourceReader, e: object) -> torch.Tensor:
        raise AssertionError("values were read")

    monkeypatch.setattr(SourceReader, "read", refuse)
    assert diff(a, b).same
    with pytest.raises(AssertionError, match="values were read"):  # the patch is live
        diff(a, c)


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.norm = torch.nn.BatchNorm1d(4)
        self.out = torch.nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight


def test_module_vs_its_saved_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = _Tied()
    f = _save(m, tmp_path / "m.safetensors")
    r = diff(m, f)
    assert r.same, r.format()
    assert r.identical == len(paramscope.read_manifest(f))
    with torch.no_grad():
        m.emb.weight[0, 0] += 1
    r = diff(m, f)
    assert sorted(x["name"] for x in r.value_changed) == ["emb.weight", "out.weight"]
    assert all(x["changed"] == 1 for x in r.value_changed)


def test_sharded_folder_vs_single_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    m = _Tied()
    single = _save(m, tmp_path / "one.safetensors")
    paramscope.save(m, tmp_path / "shards", max_shard_size="200B", fsync=False)
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) > 1
    r = diff(tmp_path / "shards", single)
    assert r.same, r.format()
    assert r.identical == len(paramscope.read_manifest(single))


def test_tie_on_one_side_only(tmp_path: Path) -> None:
    w = torch.randn(4, 4)
    tied = ParamDict({"a": w})
    tied.tie("b", "a")
    untied = ParamDict({"a": w.clone(), "b": w.clone()})
    r = diff(_save(tied, tmp_path / "t.safetensors"), untied)
    assert r.ties_changed == [{"name": "b", "a": "a", "b": None}]
    assert r.value_changed == [] and r.identical == 2 and not r.same


def test_format_collapses_long_lists() -> None:
    a = {"x": torch.zeros(1)}
    b = {"x": torch.zeros(1), **{f"n{i}": torch.full((i + 1,), float(i)) for i in range(25)}}
    r = diff(a, b)
    assert len(r.added) == 25
    text = r.format()
    assert text.splitlines()[0] == "differ"
    assert "  added: n19" in text and "n20" not in text and "… 5 more added" in text


def test_cli_exit_codes_and_json(cli, tmp_path: Path) -> None:
    pd = _pd()
    a = _save(pd, tmp_path / "a.safetensors")
    pd["enc.bias"][0] += 1
    b = _save(pd, tmp_path / "b.safetensors")
    code, out, _ = cli("diff", str(a), str(a), "--json")
    assert code == 0 and json.loads(out)["same"] is True
    code, out, err = cli("diff", str(a), str(b), "--json")
    d = json.loads(out)
    assert code == 1 and err == ""
    assert set(d) == KEYS | {"a", "b", "layers", "html"} and d["same"] is False
    layers, html = d.pop("layers"), d.pop("html")
    assert d == json.loads(json.dumps(diff(str(a), str(b)).to_dict()))  # the library's report
    # the per-layer change across depth: the library's layer_changes, no page unless asked
    assert layers == json.loads(json.dumps(paramscope.layer_changes(str(a), str(b)).to_dict()))
    assert html is None
    assert [t["name"] for t in layers["tensors"] if t["diff_l2"] != 0] == ["enc.bias"]
    (row,) = d["value_changed"]
    assert row["name"] == "enc.bias" and row["changed"] == 1 and row["max_abs_diff"] == 1.0
    ref = paramscope.load(b)["enc.bias"].double()  # relative to b: |a - b| / |b|
    assert row["rel_l2"] == pytest.approx(1.0 / float(ref.norm()))
    code, out, _ = cli("diff", str(a), str(b))
    assert code == 1 and "values: enc.bias" in out
    assert cli("diff", str(a), str(b), "--no-values").code == 0
    assert cli("diff", str(a), str(b), "--atol", "2").code == 0
    r = cli("diff", str(a), str(b), "--atol", "-1")
    assert r.code == 2 and r.out == "" and "'--atol': -1.0 is not in the range x>=0.0" in r.err


def test_cli_missing_file_is_one_stderr_line(cli, tmp_path: Path) -> None:
    a = _save(_pd(), tmp_path / "a.safetensors")
    code, out, err = cli("diff", str(a), str(tmp_path / "nope.safetensors"))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nope.safetensors" in lines[0] and "no such" in lines[0]


def test_cli_layers_sparklines_and_html(cli, tmp_path: Path) -> None:
    """`diff` prints the per-layer change over depth (one modified block stands out) and with
    --html writes the visual diff, the same page as `report A --against B`."""
    import re

    g = torch.Generator().manual_seed(0)
    base = {
        f"model.layers.{i}.{k}.weight": torch.randn(8, 8, generator=g)
        for i in range(6)
        for k in ("self_attn.q_proj", "mlp.up_proj")
    }
    b = _save(paramscope.ParamDict(base), tmp_path / "b.safetensors")
    mod = dict(base)
    mod["model.layers.3.mlp.up_proj.weight"] = base["model.layers.3.mlp.up_proj.weight"] * 2
    a = _save(paramscope.ParamDict(mod), tmp_path / "a.safetensors")
    page = tmp_path / "d.html"
    r = cli("diff", str(a), str(b), "--html", str(page))
    assert r.code == 1 and r.err == "", r
    lines = r.out.splitlines()
    assert "  up  ▁▁▁█▁▁  rel_change 0..1" in lines  # |2w - w| / |w| = 1 at block 3 only
    assert "  unchanged: q" in lines
    assert lines[-1] == f"wrote {page}"
    blob = re.search(r'id="paramscope-data">(.*?)</script>', page.read_text("utf-8"), re.S)
    assert blob is not None
    data = json.loads(blob.group(1))
    assert data["against"] == str(b)
    assert data["change"] == json.loads(
        json.dumps(paramscope.layer_changes(str(a), str(b)).to_dict())
    )
    code, out, _ = cli("diff", str(a), str(a))
    assert code == 0 and "rel_change" not in out  # the same: no per-layer view
