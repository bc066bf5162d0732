"""torch .pt/.bin checkpoints: torch-free manifests, refused pickles, unwrapping, loading."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import paramscope
from _helpers import without_torch
from paramscope import DType, Format, FormatError, Role, RoleSource, UnsafePickleError


def state_dict_with_tie() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(10, 4, generator=g)
    return OrderedDict(
        [
            ("emb.weight", emb),
            ("fc.weight", torch.randn(3, 4, generator=g)),
            ("fc.bias", torch.randn(3, generator=g).to(torch.float16)),
            ("bn.running_mean", torch.zeros(4)),
            ("bn.num_batches_tracked", torch.tensor(12)),
            ("mask", torch.tensor([True, False, True])),
            ("half.bf", torch.randn(2, 3, generator=g).to(torch.bfloat16)),
            ("head.weight", emb),  # the same tensor under a second name
        ]
    )


EXPECTED = {
    "emb.weight": ([10, 4], "F32"),
    "fc.weight": ([3, 4], "F32"),
    "fc.bias": ([3], "F16"),
    "bn.running_mean": ([4], "F32"),
    "bn.num_batches_tracked": ([], "I64"),
    "mask": ([3], "BOOL"),
    "half.bf": ([2, 3], "BF16"),
    "head.weight": ([10, 4], "F32"),
}

PROBE = r"""
import paramscope
m = paramscope.read_manifest(sys.argv[1])
c = paramscope.count(sys.argv[1])
r = paramscope.verify(sys.argv[1])
result = {
    "entries": {n: [list(e.shape), e.dtype.value, e.role.value, e.tie] for n, e in m.items()},
    "ties": m.ties(), "format": m.format.value, "params": c.params, "ok": r.ok,
}
"""


def probe(path: Path) -> dict:
    """The manifest, count and verdict of a torch file, read in a process without torch."""
    return without_torch(PROBE, path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_manifest_without_torch(tmp_path, legacy):
    path = tmp_path / "sd.pt"
    sd = state_dict_with_tie()
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    if legacy:
        assert path.read_bytes()[:2] == b"\x80\x02"
    else:
        assert path.read_bytes()[:2] == b"PK"

    got = probe(path)
    assert got["format"] == "torch"
    assert {n: v[:2] for n, v in got["entries"].items()} == {
        n: list(v) for n, v in EXPECTED.items()
    }
    assert got["entries"]["head.weight"][3] == "emb.weight"
    assert got["entries"]["fc.weight"][3] is None
    assert got["ties"] == [["emb.weight", "head.weight"]]
    assert got["entries"]["bn.running_mean"][2] == "buffer"
    assert got["entries"]["bn.num_batches_tracked"][2] == "buffer"
    assert got["entries"]["mask"][2] == "buffer"
    assert got["entries"]["fc.weight"][2] == "param"
    # ties counted once: emb + fc.weight + fc.bias + half.bf
    assert got["params"] == 40 + 12 + 3 + 6
    assert got["ok"] is True

    m = paramscope.read_manifest(path)
    assert m.roles is RoleSource.INFERRED
    assert m.format is Format.TORCH
    assert m["bn.num_batches_tracked"].dtype is DType.I64


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_load_values_and_ties(tmp_path, legacy):
    path = tmp_path / "sd.bin"
    sd = state_dict_with_tie()
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    pd = paramscope.load(path)
    assert list(pd) == list(sd)
    for n, t in sd.items():
        assert pd[n].dtype == t.dtype, n
        assert torch.equal(pd[n], t), n
    assert pd["head.weight"] is pd["emb.weight"]
    assert pd.ties() == [["emb.weight", "head.weight"]]
    assert pd.meta("bn.running_mean").role is Role.BUFFER

    # resaved as safetensors the tie is stored once
    out = paramscope.save(pd, tmp_path / "re.safetensors")
    again = paramscope.load(out)
    assert again["head.weight"] is again["emb.weight"]


def test_view_sharing_storage_is_not_a_tie(tmp_path):
    base = torch.arange(12.0)
    sd = {"a": base[:6], "b": base[6:], "c": base.view(3, 4)}
    path = tmp_path / "views.pt"
    torch.save(sd, path)
    m = paramscope.read_manifest(path)
    assert all(e.tie is None for e in m.values())
    assert m["a"].shape == (6,) and m["c"].shape == (3, 4)
    assert m["b"].location is not None and m["a"].location is not None
    assert m["b"].location.offset - m["a"].location.offset == 24
    pd = paramscope.load(path)
    assert pd["b"].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert pd.ties() == []


def test_zip_locations_point_at_the_bytes(tmp_path):
    sd = {"w": torch.arange(5, dtype=torch.int32) * 7, "v": torch.arange(3, dtype=torch.float64)}
    path = tmp_path / "loc.pt"
    torch.save(sd, path)
    raw = path.read_bytes()
    m = paramscope.read_manifest(path)
    for name, t in sd.items():
        loc = m[name].location
        assert loc is not None and loc.member is not None
        assert raw[loc.offset : loc.offset + loc.length] == t.numpy().tobytes()


# --------------------------------------------------------------------------- refused pickles


class OpenMarker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SystemMarker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def all_refuse(path: Path, marker: Path, cls: type[Exception]) -> None:
    with pytest.raises(cls) as info:
        paramscope.read_manifest(path)
    assert type(info.value) is cls
    assert str(path) in str(info.value)
    with pytest.raises(cls):
        paramscope.load(path)
    report = paramscope.verify(path)  # verify reports, it does not raise
    assert not report.ok and report.problems == [str(info.value)]
    with pytest.raises(cls):
        paramscope.count(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [OpenMarker, SystemMarker])
def test_malicious_torch_zip_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(payload(str(marker)), path)
    assert not marker.exists()
    all_refuse(path, marker, UnsafePickleError)
    with pytest.raises(UnsafePickleError) as info:
        paramscope.read_manifest(path)
    msg = str(info.value)
    assert "refused" in msg
    assert ("open" in msg) if payload is OpenMarker else ("system" in msg)


@pytest.mark.parametrize("payload", [OpenMarker, SystemMarker])
def test_malicious_payload_nested_among_tensors(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    sd = {"w": torch.randn(3), "inner": {"b": torch.ones(2), "x": payload(str(marker))}}
    torch.save(sd, path)
    all_refuse(path, marker, UnsafePickleError)
    legacy = tmp_path / "evil_legacy.bin"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    all_refuse(legacy, marker, UnsafePickleError)


@pytest.mark.parametrize("payload", [OpenMarker, SystemMarker])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_plain_pickle_refused(tmp_path, payload, protocol):
    # The global is refused while reading the very first object, before the torch
    # magic-number check could call it a non-torch pickle.
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(payload(str(marker)), f, protocol=protocol)
    all_refuse(path, marker, UnsafePickleError)


def test_plain_pickle_without_globals_is_format_error(tmp_path):
    path = tmp_path / "plain.pt"
    with open(path, "wb") as f:
        pickle.dump({"a": [1, 2, 3]}, f, protocol=2)
    with pytest.raises(FormatError) as info:
        paramscope.read_manifest(path)
    assert type(info.value) is FormatError
    assert "magic" in str(info.value)


def test_module_object_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(UnsafePickleError, match=r"torch\.nn"):
        paramscope.read_manifest(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.randn(100)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    path.write_bytes(raw[:40])
    with pytest.raises(FormatError):
        paramscope.read_manifest(path)


# --------------------------------------------------------------------------- shapes of files


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_wrapped_state_dict_is_unwrapped(tmp_path, key):
    sd = {"fc.weight": torch.randn(2, 3), "fc.bias": torch.randn(2)}
    path = tmp_path / "ckpt.pt"
    torch.save({key: sd, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    m = paramscope.read_manifest(path)
    assert list(m) == ["fc.weight", "fc.bias"]
    assert any(repr(key) in n for n in m.notes)
    pd = paramscope.load(path)
    assert list(pd) == ["fc.weight", "fc.bias"]
    assert torch.equal(pd["fc.weight"], sd["fc.weight"])


def test_non_tensor_items_are_skipped_and_noted(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(2), "step": 10, "name": "x"}, path)
    m = paramscope.read_manifest(path)
    assert list(m) == ["w"]
    assert any("skipped 2" in n for n in m.notes)


def test_parameters_keep_trainable_flag(tmp_path):
    frozen = nn.Parameter(torch.randn(3, 2), requires_grad=False)
    live = nn.Parameter(torch.randn(3))
    path = tmp_path / "params.pt"
    torch.save({"frozen.weight": frozen, "live.bias": live, "idx": torch.arange(3)}, path)
    m = paramscope.read_manifest(path)
    assert m["frozen.weight"].role is Role.PARAM
    assert m["frozen.weight"].trainable is False
    assert m["live.bias"].trainable is True
    assert m["idx"].role is Role.BUFFER
    c = paramscope.count(path)
    assert c.params == 9 and c.trainable == 3 and c.frozen == 6 and c.buffers == 3

    pd = paramscope.load(path)
    assert pd.meta("frozen.weight").trainable is False
    assert pd.meta("live.bias").trainable is True
    assert torch.equal(pd["frozen.weight"], frozen.detach())


def test_module_state_dict_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    path = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), path)
    m = paramscope.read_manifest(tmp_path)  # folder with pytorch_model.bin
    assert m.format is Format.TORCH
    assert set(m) == set(model.state_dict())
    c = paramscope.count(path)
    assert c.params == sum(p.numel() for p in model.parameters())
    assert c.buffers == sum(b.numel() for b in model.buffers())
    pd = paramscope.load(path, select="0.*")
    assert list(pd) == ["0.weight", "0.bias"]
    assert torch.equal(pd["0.weight"], model[0].weight.detach())
