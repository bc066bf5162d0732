"""convert (streaming, atomic, ties, casts, renames, shards) and verify --values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import paramscope
from _helpers import small_gpt2
from paramscope import ParamscopeError
from paramscope._convert import convert


@pytest.fixture
def model() -> torch.nn.Module:
    return small_gpt2()


def no_temps(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".paramscope-tmp-" in p.name]


@pytest.mark.parametrize("kind", ["pt", "safetensors", "sharded", "npz"])
def test_every_source_converts_bitwise_with_ties(model, tmp_path: Path, kind: str) -> None:
    sd = model.state_dict()
    if kind == "pt":
        src = tmp_path / "m.pt"
        torch.save(sd, src)
    elif kind == "safetensors":
        src = paramscope.save(model, tmp_path / "m.safetensors")
    elif kind == "sharded":
        src = paramscope.save(model, tmp_path / "shards", max_shard_size="50KB").parent
    else:
        src = tmp_path / "m.npz"
        np.savez(src, **{k: v.numpy() for k, v in sd.items()})
    dst = tmp_path / "out.safetensors"
    report = convert(src, dst)
    assert report.entries + report.aliases == len(sd)
    out = paramscope.load(dst)
    for k, v in sd.items():
        assert torch.equal(out[k], v), k
    if kind != "npz":  # npz cannot hold a tie
        assert out["lm_head.weight"] is out["transformer.wte.weight"]
    assert paramscope.verify(dst).ok and no_temps(tmp_path)


def test_cast_select_rename_and_shards(model, tmp_path: Path) -> None:
    src = paramscope.save(model, tmp_path / "m.safetensors")
    dst = tmp_path / "out"
    r = convert(src, dst, dtype="bf16", select="transformer.h.0.*",
                rename=[r"^transformer\.h\.0\.=block."], max_shard_size="10KB")
    assert r.format == "sharded" and r.shards > 1 and r.casts == r.entries
    out = paramscope.load(dst)
    assert all(k.startswith("block.") for k in out)
    w = out["block.attn.c_attn.weight"]
    assert w.dtype == torch.bfloat16
    assert torch.equal(w, model.transformer.h[0].attn.c_attn.weight.detach().bfloat16())
    idx = json.loads((dst / "model.safetensors.index.json").read_text())
    assert set(idx["weight_map"]) == set(out)
    with pytest.raises(paramscope.DuplicateNameError):
        convert(src, tmp_path / "x.safetensors", rename=[(r"\.weight$", ".w"), (r"\.bias$", ".w")])
    assert not (tmp_path / "x.safetensors").exists()


def test_existing_folder_checkpoint_is_replaced_other_files_kept(model, tmp_path: Path) -> None:
    src = paramscope.save(model, tmp_path / "m.safetensors")
    dst = tmp_path / "out"
    convert(src, dst, max_shard_size="20KB")
    first = sorted(p.name for p in dst.iterdir())
    (dst / "config.json").write_text("{}")  # a user's file: never touched
    ino = (dst / "config.json").stat().st_ino
    convert(src, dst, max_shard_size="1MB")  # fits one file: no index, no stale shards
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]
    assert (dst / "config.json").stat().st_ino == ino and "model.safetensors" not in first
    assert no_temps(tmp_path) and no_temps(dst)


def test_int_entries_are_not_cast(tmp_path: Path) -> None:
    sd = {"w": torch.randn(4, 4), "steps": torch.tensor([3], dtype=torch.int64)}
    src = paramscope.save(sd, tmp_path / "m.safetensors")
    convert(src, tmp_path / "o.safetensors", dtype="fp16")
    out = paramscope.load(tmp_path / "o.safetensors")
    assert out["steps"].dtype == torch.int64 and out["w"].dtype == torch.float16


def test_bad_options(model, tmp_path: Path) -> None:
    src = paramscope.save(model, tmp_path / "m.safetensors")
    with pytest.raises(ParamscopeError, match="REGEX=REPLACEMENT"):
        convert(src, tmp_path / "o.safetensors", rename=["nope"])
    with pytest.raises(ParamscopeError, match="format"):
        convert(src, tmp_path / "o.onnx", format="onnx")
    with pytest.raises(ParamscopeError, match="dtype"):
        convert(src, tmp_path / "o.safetensors", dtype="float7")


def test_verify_values_counts_nan_and_inf(tmp_path: Path) -> None:
    w = torch.randn(10, 10)
    w[0, 0] = float("nan")
    w[1, :3] = float("inf")
    p = paramscope.save({"w": w, "ok": torch.ones(3)}, tmp_path / "m.safetensors")
    assert paramscope.verify(p).ok  # structure and digests are fine
    r = paramscope.verify(p, values=True)
    assert not r.ok and r.values == [{"name": "w", "nan": 1, "inf": 3}]
    assert "'w'" in r.problems[0] and "1 NaN and 3 Inf" in r.problems[0]


def test_cli_convert_and_verify_values(
    cli, model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sd = model.state_dict()
    torch.save(sd, tmp_path / "m.pt")
    r = cli("convert", "m.pt", "out", "--shard-size", "30KB", "--dtype", "fp16", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["format"] == "sharded" and d["aliases"] == 1 and r.err == ""
    stored = {k: v for k, v in sd.items() if k != "lm_head.weight"}  # tied to wte: an alias
    assert d["entries"] == len(stored) and d["casts"] == len(stored)
    assert d["bytes"] == sum(2 * v.numel() for v in stored.values())  # fp16: 2 bytes each
    assert d["shards"] == len(list((tmp_path / "out").glob("model-*-of-*.safetensors"))) > 1
    back = paramscope.load(tmp_path / "out")
    assert all(torch.equal(back[k], v.half()) for k, v in sd.items())
    r = cli("verify", "out", "--values", "--json")
    assert r.code == 0 and json.loads(r.out)["problems"] == []
    bad = {"w": torch.tensor([1.0, float("nan")])}
    paramscope.save(bad, tmp_path / "bad.safetensors")
    r = cli("verify", "bad.safetensors", "--values", "--json")
    assert r.code == 1 and json.loads(r.out)["values"] == [{"name": "w", "nan": 1, "inf": 0}]
    r = cli("convert", "missing.pt", "x.safetensors")
    assert r.code == 2 and "missing.pt" in r.err


def test_dcp_wired_into_read_load_save_convert_and_cli(cli, model, tmp_path: Path) -> None:
    sd = model.state_dict()
    dcp_dir = paramscope.save(paramscope.ParamDict.from_module(model), tmp_path / "dcp",
                              format="dcp")
    assert paramscope.read_manifest(dcp_dir).format.value == "dcp"
    assert paramscope.count(dcp_dir).params == paramscope.count(model).params
    back = paramscope.load(dcp_dir)
    assert back["lm_head.weight"] is back["transformer.wte.weight"]
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    convert(dcp_dir, tmp_path / "from_dcp.safetensors")
    st = paramscope.load(tmp_path / "from_dcp.safetensors")
    assert all(torch.equal(st[k], v) for k, v in sd.items())
    assert st["lm_head.weight"] is st["transformer.wte.weight"]
    convert(tmp_path / "from_dcp.safetensors", tmp_path / "dcp2", format="dcp")
    again = paramscope.load(tmp_path / "dcp2")
    assert all(torch.equal(again[k], v) for k, v in sd.items())
    r = cli("inspect", dcp_dir, "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["format"] == "dcp"
    assert d["total"]["params"] == sum(p.numel() for p in model.parameters())
