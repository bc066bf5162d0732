"""numpy .npz / .npy: manifests from headers, values, and refused object arrays."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import paramscope
from paramscope import DType, Format, Role, RoleSource


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "fc.bias": rng.standard_normal(3).astype(np.float16),
        "bn.running_var": np.ones(4, dtype=np.float64),
        "ids": np.arange(5, dtype=np.int64),
        "mask": np.array([True, False]),
        "u": np.arange(4, dtype=np.uint16),
        "c": (rng.standard_normal(2) + 1j).astype(np.complex64),
        "scalar": np.array(2.5, dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((2, 3)).astype(np.float32)),
    }


DTYPES = {
    "fc.weight": DType.F32,
    "fc.bias": DType.F16,
    "bn.running_var": DType.F64,
    "ids": DType.I64,
    "mask": DType.BOOL,
    "u": DType.U16,
    "c": DType.C64,
    "scalar": DType.F32,
    "fortran": DType.F32,
}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["savez", "compressed"])
def test_npz_manifest_and_values(tmp_path, save):
    data = arrays()
    path = tmp_path / "w.npz"
    save(path, **data)
    assert paramscope.detect_format(path) is Format.NUMPY

    m = paramscope.read_manifest(path)
    assert m.format is Format.NUMPY
    assert m.roles is RoleSource.INFERRED
    assert list(m) == list(data)
    for name, a in data.items():
        e = m[name]
        assert e.shape == a.shape, name
        assert e.dtype is DTYPES[name], name
        assert e.nbytes == a.nbytes, name
    assert m["ids"].role is Role.BUFFER
    assert m["bn.running_var"].role is Role.BUFFER
    assert m["fc.weight"].role is Role.PARAM

    pd = paramscope.load(path)
    assert list(pd) == list(data)
    for name, a in data.items():
        t = pd[name]
        assert tuple(t.shape) == a.shape, name
        assert np.array_equal(t.numpy(), a), name
    assert pd.meta("ids").role is Role.BUFFER

    sel = paramscope.load(path, select="fc.*")
    assert list(sel) == ["fc.weight", "fc.bias"]

    c = paramscope.count(path)
    assert c.params == 12 + 3 + 2 + 1 + 6
    assert c.buffers == 4 + 5 + 2 + 4
    r = paramscope.verify(path)
    assert r.ok and r.hashed == 0


def test_single_npy(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    path = tmp_path / "table.npy"
    np.save(path, a)
    m = paramscope.read_manifest(path)
    assert list(m) == ["table"]
    assert m["table"].shape == (2, 3) and m["table"].dtype is DType.I32
    pd = paramscope.load(path)
    assert torch.equal(pd["table"], torch.from_numpy(a))


def test_npz_round_trip_to_safetensors(tmp_path):
    data = arrays()
    np.savez(tmp_path / "w.npz", **data)
    pd = paramscope.load(tmp_path / "w.npz")
    out = paramscope.save(pd, tmp_path / "w.safetensors")
    back = paramscope.load(out)
    for name, a in data.items():
        assert np.array_equal(back[name].numpy(), a), name


class Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_array_in_npz_refused(tmp_path):
    marker = tmp_path / "pwned"
    obj = np.empty(2, dtype=object)
    obj[0] = Boom(str(marker))
    obj[1] = 3
    path = tmp_path / "evil.npz"
    np.savez(path, good=np.ones(3, dtype=np.float32), bad=obj)
    assert not marker.exists()

    for fn in (paramscope.read_manifest, paramscope.load, paramscope.count):
        with pytest.raises(paramscope.UnsupportedDTypeError, match="bad") as info:
            fn(path)
        assert "bad" in str(info.value)
        assert str(path) in str(info.value)
    r = paramscope.verify(path)
    assert not r.ok and r.problems == [str(info.value)]  # the reader's own message, once
    assert not marker.exists()


def test_object_npy_refused(tmp_path):
    marker = tmp_path / "pwned"
    obj = np.array([Boom(str(marker)), None], dtype=object)
    path = tmp_path / "evil.npy"
    np.save(path, obj, allow_pickle=True)
    assert not marker.exists()
    with pytest.raises(paramscope.UnsupportedDTypeError):
        paramscope.read_manifest(path)
    with pytest.raises(paramscope.UnsupportedDTypeError):
        paramscope.load(path)
    assert not marker.exists()


def test_big_endian_and_structured_refused(tmp_path):
    np.savez(tmp_path / "be.npz", w=np.arange(3, dtype=">f4"))
    with pytest.raises(paramscope.UnsupportedDTypeError, match="little-endian"):
        paramscope.read_manifest(tmp_path / "be.npz")
    rec = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])
    np.savez(tmp_path / "rec.npz", r=rec)
    with pytest.raises(paramscope.UnsupportedDTypeError, match="structured"):
        paramscope.read_manifest(tmp_path / "rec.npz")


def test_broken_npy_header(tmp_path):
    path = tmp_path / "bad.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': os.sy}  \n")
    with pytest.raises(paramscope.FormatError):
        paramscope.read_manifest(path)
    assert os.path.exists(path)
