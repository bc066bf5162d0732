"""Hugging Face style sharded checkpoints: writing, reading, and refusing bad indexes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

import paramscope
from paramscope import Format, ParamDict, Role, ShardIndexError

INDEX = "model.safetensors.index.json"


def make_pd() -> ParamDict:
    g = torch.Generator().manual_seed(1)
    pd = ParamDict(metadata={"run": "7"})
    pd.add("emb.weight", torch.randn(8, 4, generator=g))  # 128 bytes
    pd.add("layers.0.weight", torch.randn(4, 4, generator=g))  # 64
    pd.add("layers.0.bias", torch.randn(4, generator=g))  # 16
    pd.add("layers.1.weight", torch.randn(4, 4, generator=g).to(torch.float16))  # 32
    pd.add("norm.running_mean", torch.zeros(4), role="buffer")  # 16
    pd.add("steps", torch.tensor([5, 6]), role="buffer")  # 16 (int64)
    pd.add("frozen.w", torch.randn(3, generator=g), trainable=False, tags=("f",))  # 12
    pd.tie("head.weight", "emb.weight")  # tie to a tensor in some shard
    pd.tie("layers.1.alias", "layers.1.weight")
    return pd


def stored_bytes(pd: ParamDict) -> int:
    return sum(pd[n].numel() * pd[n].element_size() for n in pd.stored())


def shard_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors"))


def assert_same(a: ParamDict, b: ParamDict) -> None:
    assert set(a) == set(b)
    for n in a:
        assert a[n].dtype == b[n].dtype, n
        assert torch.equal(a[n], b[n]), n
        assert a.meta(n) == b.meta(n), n
    assert sorted(map(sorted, a.ties())) == sorted(map(sorted, b.ties()))


def test_sharded_save_layout(tmp_path):
    pd = make_pd()
    out = paramscope.save(pd, tmp_path / "ckpt", max_shard_size=100)
    folder = tmp_path / "ckpt"
    assert out == folder / INDEX
    index = json.loads(out.read_text())
    assert index["metadata"]["total_size"] == stored_bytes(pd) == 128 + 64 + 16 + 32 + 16 + 16 + 12
    assert set(index["weight_map"]) == set(pd.stored())
    shards = shard_names(folder)
    n = len(shards)
    assert n >= 3
    assert shards == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    assert set(index["weight_map"].values()) == set(shards)
    assert not (folder / "model.safetensors").exists()

    # each shard holds exactly what the index says, and nothing over the limit unless alone
    for shard in shards:
        with safetensors.safe_open(str(folder / shard), framework="pt") as f:
            keys = set(f.keys())
            size = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in keys)
        assert keys == {k for k, v in index["weight_map"].items() if v == shard}
        assert size <= 100 or len(keys) == 1


def test_sharded_load_folder_and_index_agree(tmp_path):
    pd = make_pd()
    index = paramscope.save(pd, tmp_path / "ckpt", max_shard_size="100B")
    by_folder = paramscope.load(tmp_path / "ckpt")
    by_index = paramscope.load(index)
    assert_same(by_folder, pd)
    assert_same(by_index, pd)
    for loaded in (by_folder, by_index):
        assert loaded["head.weight"] is loaded["emb.weight"]
        assert loaded["layers.1.alias"] is loaded["layers.1.weight"]
        assert loaded.meta("steps").role is Role.BUFFER
        assert loaded.meta("frozen.w").trainable is False
        assert loaded.metadata["run"] == "7"

    m = paramscope.read_manifest(tmp_path / "ckpt")
    assert m.format is Format.SHARDED
    assert paramscope.read_manifest(index).format is Format.SHARDED
    assert m["head.weight"].tie == "emb.weight"
    assert len(m.files) == 1 + len(shard_names(tmp_path / "ckpt"))
    assert m.notes == []

    c = paramscope.count(tmp_path / "ckpt")
    assert c.params == sum(pd[n].numel() for n in pd.stored() if pd.meta(n).role is Role.PARAM)
    assert c.bytes == stored_bytes(pd)

    sel = paramscope.load(tmp_path / "ckpt", select="layers.*")
    assert set(sel) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.alias"}
    assert sel["layers.1.alias"] is sel["layers.1.weight"]

    report = paramscope.verify(tmp_path / "ckpt")
    assert report.ok, report.problems
    assert report.hashed == len(pd.stored())
    assert report.files == len(shard_names(tmp_path / "ckpt"))


def test_sharded_tie_across_shards(tmp_path):
    # the alias comes first in order, its target lands in a later shard
    pd = ParamDict()
    pd.add("a.weight", torch.randn(30))
    pd.add("b.weight", torch.randn(30))
    pd.tie("a.alias", "b.weight")
    paramscope.save(pd, tmp_path / "c", max_shard_size=100)
    assert len(shard_names(tmp_path / "c")) == 2
    out = paramscope.load(tmp_path / "c")
    assert out["a.alias"] is out["b.weight"]
    assert torch.equal(out["a.alias"], pd["b.weight"])


def test_single_shard_writes_plain_file(tmp_path):
    pd = ParamDict({"a": torch.ones(4), "b": torch.zeros(4)})
    out = paramscope.save(pd, tmp_path / "one", max_shard_size="1KB")
    assert out == tmp_path / "one" / "model.safetensors"
    assert sorted(os.listdir(tmp_path / "one")) == ["model.safetensors"]
    assert paramscope.read_manifest(tmp_path / "one").format is Format.SAFETENSORS
    assert torch.equal(paramscope.load(tmp_path / "one")["a"], torch.ones(4))


def test_resave_with_fewer_shards_removes_stale(tmp_path):
    folder = tmp_path / "ckpt"
    pd = ParamDict({f"w{i}": torch.full((16,), float(i)) for i in range(5)})  # 64 B each
    paramscope.save(pd, folder, max_shard_size=64)
    assert len(shard_names(folder)) == 5
    paramscope.save(pd, folder, max_shard_size=130)
    names = shard_names(folder)
    assert names == [f"model-{k:05d}-of-00003.safetensors" for k in (1, 2, 3)]
    assert_same(paramscope.load(folder), pd)

    # down to a single file: the old index and shards must not shadow the new file
    small = ParamDict({"only": torch.arange(3.0)})
    paramscope.save(small, folder, max_shard_size="1KB")
    assert sorted(os.listdir(folder)) == ["model.safetensors"]
    assert list(paramscope.load(folder)) == ["only"]

    # and back to shards: the single file of the previous save goes
    paramscope.save(pd, folder, max_shard_size=64)
    assert not (folder / "model.safetensors").exists()
    assert_same(paramscope.load(folder), pd)


def test_unrelated_files_survive_resave(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "other-00001-of-00002.safetensors").write_bytes(b"x")
    pd = ParamDict({f"w{i}": torch.ones(16) for i in range(3)})
    paramscope.save(pd, folder, max_shard_size=64)
    paramscope.save(pd, folder, max_shard_size=130)
    assert (folder / "config.json").exists()
    assert (folder / "other-00001-of-00002.safetensors").exists()


# --------------------------------------------------------------------------- bad indexes


def sharded(tmp_path: Path) -> tuple[Path, dict]:
    pd = ParamDict({"a": torch.ones(16), "b": torch.ones(16), "c": torch.ones(16)})
    index = paramscope.save(pd, tmp_path / "ckpt", max_shard_size=64)
    return index, json.loads(index.read_text())


def rewrite(index: Path, body: dict) -> None:
    index.write_text(json.dumps(body))


def expect_shard_error(path: Path, *fragments: str) -> ShardIndexError:
    with pytest.raises(ShardIndexError) as info:
        paramscope.read_manifest(path)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    with pytest.raises(ShardIndexError):
        paramscope.load(path)
    report = paramscope.verify(path)
    assert not report.ok and report.problems == [msg]  # the reader's own message, once
    return info.value


def test_index_absolute_path(tmp_path):
    index, body = sharded(tmp_path)
    outside = tmp_path / "outside.safetensors"
    safetensors.torch.save_file({"a": torch.ones(16)}, str(outside))
    body["weight_map"]["a"] = str(outside)
    rewrite(index, body)
    err = expect_shard_error(index, "'a'", str(outside))
    assert err.path == str(index)


def test_index_dotdot_path(tmp_path):
    index, body = sharded(tmp_path)
    safetensors.torch.save_file({"a": torch.ones(16)}, str(tmp_path / "up.safetensors"))
    body["weight_map"]["a"] = "../up.safetensors"
    rewrite(index, body)
    expect_shard_error(index, "'a'", "..")
    body["weight_map"]["a"] = "sub/../../up.safetensors"
    rewrite(index, body)
    expect_shard_error(index, "'a'", "..")


def test_symlinked_shard_leading_outside(tmp_path):
    index, body = sharded(tmp_path)
    shard = index.parent / body["weight_map"]["a"]
    outside = tmp_path / "elsewhere.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    expect_shard_error(index, "'a'", "link")


def test_symlink_inside_folder_is_fine(tmp_path):
    index, body = sharded(tmp_path)
    shard = index.parent / body["weight_map"]["a"]
    (index.parent / "real").mkdir()
    target = index.parent / "real" / "x.safetensors"
    shard.rename(target)
    shard.symlink_to(target)
    assert set(paramscope.read_manifest(index)) == {"a", "b", "c"}


def test_index_names_entry_no_shard_holds(tmp_path):
    index, body = sharded(tmp_path)
    body["weight_map"]["ghost.weight"] = body["weight_map"]["a"]
    rewrite(index, body)
    expect_shard_error(index, "ghost.weight", "no shard holds")


def test_shard_holds_entry_index_does_not_name(tmp_path):
    pd = ParamDict({"a": torch.ones(16), "b": torch.ones(16), "c": torch.ones(16)})
    index = paramscope.save(pd, tmp_path / "ckpt", max_shard_size=130)  # a and b share a shard
    body = json.loads(index.read_text())
    assert body["weight_map"]["a"] == body["weight_map"]["b"]
    del body["weight_map"]["b"]
    rewrite(index, body)
    expect_shard_error(index, "'b'", "does not name")


def test_index_points_entry_to_wrong_shard(tmp_path):
    index, body = sharded(tmp_path)
    wm = body["weight_map"]
    wm["a"], wm["b"] = wm["b"], wm["a"]
    rewrite(index, body)
    expect_shard_error(index, "'a'")


def test_missing_shard_file(tmp_path):
    index, body = sharded(tmp_path)
    gone = body["weight_map"]["c"]
    (index.parent / gone).unlink()
    expect_shard_error(index, gone, "does not exist")


def test_same_entry_in_two_shards(tmp_path):
    index, body = sharded(tmp_path)
    dup = index.parent / "extra.safetensors"
    safetensors.torch.save_file({"a": torch.ones(16)}, str(dup))
    body["weight_map"]["x"] = "extra.safetensors"
    rewrite(index, body)
    expect_shard_error(index, "'a'", "both")


@pytest.mark.parametrize("text", ["[1, 2]", '{"weight_map": []}', "{not json", "{}"])
def test_malformed_index(tmp_path, text):
    index, _ = sharded(tmp_path)
    index.write_text(text)
    expect_shard_error(index.parent, str(index))


def test_wrong_total_size_is_noted(tmp_path):
    index, body = sharded(tmp_path)
    body["metadata"]["total_size"] = 1
    rewrite(index, body)
    m = paramscope.read_manifest(index)
    assert any("total_size is 1" in n and "192" in n for n in m.notes)


def test_hf_style_folder_without_paramscope_metadata(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    safetensors.torch.save_file({"a.weight": torch.ones(2, 2)}, str(folder / "s1.safetensors"))
    safetensors.torch.save_file(
        {"a.running_var": torch.ones(2), "b.ids": torch.arange(3)}, str(folder / "s2.safetensors")
    )
    wm = {
        "a.weight": "s1.safetensors",
        "a.running_var": "s2.safetensors",
        "b.ids": "s2.safetensors",
    }
    body = {"metadata": {"total_size": 16 + 8 + 24}, "weight_map": wm}
    (folder / INDEX).write_text(json.dumps(body))
    m = paramscope.read_manifest(folder)
    assert m.roles is paramscope.RoleSource.INFERRED
    assert m["a.running_var"].role is Role.BUFFER and m["b.ids"].role is Role.BUFFER
    assert m.notes == []
    pd = paramscope.load(folder)
    assert torch.equal(pd["b.ids"], torch.arange(3))
    assert re.fullmatch(r".*hf.*", str(m.source))
