"""ONNX models as checkpoints (``io/_onnx.py``): initializers read from the protobuf framing,
checked against the ``onnx`` package as the oracle.

The torch → ONNX name mapping these tests pin (``torch.onnx.export(..., dynamo=False)``, the
TorchScript exporter, with its defaults ``export_params=True``, constant folding on):

* a module's parameters and buffers keep their state-dict names (``fc.weight``, and in
  training mode ``bn1.running_mean``), with equal values;
* ``num_batches_tracked`` is not exported (no ONNX operator reads it);
* in eval mode (the default) each Conv followed by a BatchNorm is folded into one Conv: its
  weight ``W * g / sqrt(v + eps)`` and bias ``b - m * g / sqrt(v + eps)`` become
  initializers named ``onnx::Conv_<n>``; the BatchNorm's entries and the Conv's weight are
  gone by name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import paramscope
from _helpers import run_cli, run_python
from paramscope import ParamscopeError
from paramscope._errors import FormatError
from paramscope.io import _onnx, _source

# ------------------------------------------------------------------------------ fixtures


def _resnet() -> torch.nn.Module:
    from paramscope.building import zoo

    torch.manual_seed(0)
    model = zoo.build("resnet18")
    with torch.no_grad():  # non-trivial statistics: folding is visible, nothing deduplicated
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(3)
    return model.eval()


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="paramscope-onnx-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def resnet(work: Path) -> tuple[dict[str, torch.Tensor], Path, Path, torch.nn.Module]:
    """resnet18 exported twice: eval mode (the default: Conv+BN folded), with its state dict,
    and training mode (from a copy: tracing BatchNorm in training mode updates its running
    statistics, so that copy's state dict after the export is what the file holds)."""
    import copy
    import warnings

    model = _resnet()
    x = torch.randn(1, 3, 64, 64)
    folded, kept = work / "resnet18.onnx", work / "resnet18-train.onnx"
    trained = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on in-place BatchNorm updates
        torch.onnx.export(model, (x,), str(folded), dynamo=False)
        torch.onnx.export(
            trained, (x,), str(kept), dynamo=False, training=torch.onnx.TrainingMode.TRAINING
        )
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return sd, folded, kept, trained


def _inits(path: Path) -> list[TensorProto]:
    return list(onnx.load(str(path)).graph.initializer)


def _graph_model(
    inits: list[TensorProto], path: Path, nodes: list[onnx.NodeProto] | None = None
) -> Path:
    outs = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits if not nodes
    ]
    if nodes:
        outs = [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes or [], "g", [], outs, inits)
    onnx.save(helper.make_model(g), str(path))
    return path


def _assert_like_onnx(path: Path, model_path: Path | None = None) -> None:
    """Names, order, shapes, dtypes and values equal what ``onnx`` reads."""
    oracle = onnx.load(str(model_path or path))
    inits = list(oracle.graph.initializer)
    m = paramscope.read_manifest(path)
    assert list(m) == [t.name for t in inits]
    pd = paramscope.load(path)
    assert list(pd) == list(m)
    for t in inits:
        want = numpy_helper.to_array(t)
        e = m[t.name]
        assert e.shape == want.shape
        if e.dtype.value.startswith(("BF", "F8")):  # numpy has none: ml_dtypes', by bits
            tensor = pd[t.name]
            assert want.dtype.name == str(tensor.dtype).removeprefix("torch."), t.name
            two = tensor.element_size() == 2
            got = tensor.view(torch.int16 if two else torch.uint8).numpy()
            want = want.view(np.int16 if two else np.uint8)
            assert np.array_equal(got, want), t.name
            continue
        assert e.dtype.to_numpy() == want.dtype.str, t.name
        got = pd[t.name].numpy()
        assert got.dtype == want.dtype
        assert np.array_equal(got, want, equal_nan=True), t.name


# ------------------------------------------------------------------------------ torch exports


@pytest.mark.parametrize("which", ["folded", "kept"])
def test_export_manifest_and_values_equal_onnx(resnet, which: str) -> None:
    _, folded, kept, _ = resnet
    path = folded if which == "folded" else kept
    _assert_like_onnx(path)
    m = paramscope.read_manifest(path)
    assert m.format is paramscope.Format.ONNX
    assert m.metadata["onnx.producer_name"] == "pytorch"
    # raw_data is little-endian and contiguous: every entry streams from a byte location
    raw = path.read_bytes()
    for t in _inits(path):
        loc = m[t.name].location
        assert loc is not None and loc.file == str(path)
        assert raw[loc.offset : loc.offset + loc.length] == t.raw_data


def test_count_equals_onnx_sizes(resnet) -> None:
    _, folded, kept, _ = resnet
    total = sum(math.prod(t.dims) for t in _inits(folded))
    c = paramscope.count(folded)
    assert c.params == total and c.buffers == 0 and c.entries == len(_inits(folded))
    # training mode keeps BatchNorm's running statistics: buffers by name, as for torch
    inits = _inits(kept)
    stats = sum(
        math.prod(t.dims) for t in inits if t.name.endswith(("running_mean", "running_var"))
    )
    c = paramscope.count(kept)
    assert stats > 0
    assert (c.params, c.buffers) == (sum(math.prod(t.dims) for t in inits) - stats, stats)
    assert paramscope.read_manifest(kept)["bn1.running_var"].role.value == "buffer"


def test_training_export_keeps_state_dict_names(resnet) -> None:
    _, _, kept, trained = resnet
    pd = paramscope.load(kept)
    sd = trained.state_dict()
    dropped = [n for n in sd if n not in pd]
    assert dropped and all(n.endswith("num_batches_tracked") for n in dropped)
    for name, value in sd.items():
        if name in pd:
            assert torch.equal(pd[name], value), name
    assert set(pd) <= set(sd)  # nothing made up in training mode


def _conv_bn_pairs(model: torch.nn.Module) -> list[tuple[str, str]]:
    mods = dict(model.named_modules())
    pairs = []
    for name, mod in mods.items():
        if isinstance(mod, torch.nn.BatchNorm2d):
            parent, _, last = name.rpartition(".")
            if last.startswith("bn"):
                conv = f"{parent}.conv{last[2:]}" if parent else f"conv{last[2:]}"
            else:  # downsample.1 follows downsample.0
                conv = f"{parent}.{int(last) - 1}"
            assert isinstance(mods[conv], torch.nn.Conv2d)
            pairs.append((conv, name))
    return pairs


def test_eval_export_folds_batchnorm_into_conv(resnet) -> None:
    sd, folded, _, _ = resnet
    pd = paramscope.load(folded)
    made_up = {n: t for n, t in pd.items() if n.startswith("onnx::")}
    kept = [n for n in pd if n not in made_up]
    for n in kept:  # kept names are state-dict names, with equal values
        assert torch.equal(pd[n], sd[n]), n
    pairs = _conv_bn_pairs(_resnet())
    assert len(made_up) == 2 * len(pairs)
    unmatched = dict(made_up)
    for conv, bn in pairs:
        w, b = sd[f"{conv}.weight"], sd[f"{bn}.bias"]
        scale = sd[f"{bn}.weight"] / torch.sqrt(sd[f"{bn}.running_var"] + 1e-5)
        fused_w = w * scale[:, None, None, None]
        fused_b = b - sd[f"{bn}.running_mean"] * scale
        for want in (fused_w, fused_b):
            hit = [
                n
                for n, t in unmatched.items()
                if t.shape == want.shape and torch.allclose(t, want, rtol=1e-5, atol=1e-6)
            ]
            assert len(hit) == 1, (conv, bn)
            del unmatched[hit[0]]
        for gone in (f"{conv}.weight", f"{bn}.weight", f"{bn}.running_mean", f"{bn}.bias"):
            assert gone not in pd
    assert not unmatched
    m = paramscope.read_manifest(folded)
    assert any("onnx::" in note for note in m.notes)


def test_convert_to_safetensors_is_bitwise(resnet, work: Path) -> None:
    from safetensors.torch import load_file

    _, folded, _, _ = resnet
    out = work / "resnet18.safetensors"
    paramscope.convert(folded, out)
    got = load_file(str(out))
    inits = _inits(folded)
    assert sorted(got) == sorted(t.name for t in inits)
    for t in inits:
        assert got[t.name].numpy().tobytes() == t.raw_data, t.name


# ------------------------------------------------------------------------------ external data


def _external_copy(src: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    model = onnx.load(str(src))
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


def test_external_data(resnet, work: Path) -> None:
    _, folded, _, _ = resnet
    path = _external_copy(folded, work / "ext")
    assert path.stat().st_size < 64 * 1024  # the weights are elsewhere
    _assert_like_onnx(path)
    m = paramscope.read_manifest(path)
    weights = str(work / "ext" / "weights.bin")
    assert {e.location.file for e in m.values()} == {weights}
    assert m.files == [str(path), weights]
    assert paramscope.count(path).params == sum(math.prod(t.dims) for t in _inits(folded))
    out = work / "ext.safetensors"
    paramscope.convert(path, out)
    want = paramscope.load(folded)
    got = paramscope.load(out)
    assert all(torch.equal(got[n], want[n]) for n in want) and set(got) == set(want)


def _with_location(src: Path, dst: Path, location: str, **extra: str) -> Path:
    model = onnx.load(str(src), load_external_data=False)
    t = model.graph.initializer[0]
    entries = {e.key: e.value for e in t.external_data}
    entries.update(location=location, **extra)
    del t.external_data[:]
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "a/../../secret.bin"])
def test_external_location_outside_the_folder_is_refused(resnet, work: Path, location, cli):
    _, folded, _, _ = resnet
    path = _external_copy(folded, work / "ext2")
    (work / "secret.bin").write_bytes(b"\0" * 4096)
    bad = _with_location(path, work / "ext2" / "bad.onnx", location)
    name = onnx.load(str(bad), load_external_data=False).graph.initializer[0].name
    with pytest.raises(FormatError, match=f"initializer {name!r}: external data location"):
        paramscope.read_manifest(bad)
    code, _, err = cli("count", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "external data" in err


def test_external_link_leading_out_is_refused(resnet, work: Path) -> None:
    _, folded, _, _ = resnet
    path = _external_copy(folded, work / "ext3")
    (work / "outside.bin").write_bytes((work / "ext3" / "weights.bin").read_bytes())
    os.symlink(work / "outside.bin", work / "ext3" / "link.bin")
    bad = _with_location(path, work / "ext3" / "bad.onnx", "link.bin")
    with pytest.raises(FormatError, match="link leading out"):
        paramscope.read_manifest(bad)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"length": "3"}, "external data of 3 bytes"),
        ({"offset": "999999999"}, "external data"),
        ({"offset": "-4"}, "expected a non-negative integer"),
    ],
)
def test_external_sizes_are_checked(resnet, work: Path, extra, match) -> None:
    _, folded, _, _ = resnet
    path = _external_copy(folded, work / "ext4")
    bad = _with_location(path, work / "ext4" / "bad.onnx", "weights.bin", **extra)
    with pytest.raises(FormatError, match=match):
        paramscope.read_manifest(bad)


def test_external_file_missing(resnet, work: Path) -> None:
    _, folded, _, _ = resnet
    path = _external_copy(folded, work / "ext5")
    bad = _with_location(path, work / "ext5" / "bad.onnx", "nowhere.bin")
    with pytest.raises(FormatError, match=r"'nowhere\.bin' does not exist"):
        paramscope.count(bad)


# ------------------------------------------------------------------------------ typed values


def _typed_inits() -> list[TensorProto]:
    rng = np.random.default_rng(0)
    f16 = rng.standard_normal(6).astype(np.float16)
    return [
        helper.make_tensor("w.f32", TensorProto.FLOAT, [2, 3], rng.standard_normal(6).tolist()),
        helper.make_tensor("w.f64", TensorProto.DOUBLE, [3], [1.5, -2.25, 1e300]),
        helper.make_tensor("w.f16", TensorProto.FLOAT16, [2, 3], f16),
        helper.make_tensor("w.bf16", TensorProto.BFLOAT16, [2], [1.0, -3.5]),
        helper.make_tensor("w.c64", TensorProto.COMPLEX64, [2], [1 + 2j, -3 - 4j]),
        helper.make_tensor("steps", TensorProto.INT64, [3], [1, -(2**62), 2**62]),
        helper.make_tensor("i32", TensorProto.INT32, [2, 2], [1, -2, 2**31 - 1, -(2**31)]),
        helper.make_tensor("i8", TensorProto.INT8, [3], [-128, 0, 127]),
        helper.make_tensor("u8", TensorProto.UINT8, [2], [0, 255]),
        helper.make_tensor("i16", TensorProto.INT16, [2], [-32768, 32767]),
        helper.make_tensor("u16", TensorProto.UINT16, [2], [0, 65535]),
        helper.make_tensor("u32", TensorProto.UINT32, [2], [0, 2**32 - 1]),
        helper.make_tensor("u64", TensorProto.UINT64, [2], [0, 2**64 - 1]),
        helper.make_tensor("mask", TensorProto.BOOL, [3], [True, False, True]),
        helper.make_tensor("f8.e4m3", TensorProto.FLOAT8E4M3FN, [3], [1.0, -2.0, 0.5]),
        helper.make_tensor("f8.e5m2", TensorProto.FLOAT8E5M2, [2], [1.0, -448.0]),
        helper.make_tensor("f8.e8m0", TensorProto.FLOAT8E8M0, [2], [1.0, 4.0]),
        helper.make_tensor("scalar", TensorProto.FLOAT, [], [4.0]),
        helper.make_tensor("empty", TensorProto.FLOAT, [0, 3], []),
    ]


def test_typed_initializers(work: Path) -> None:
    inits = _typed_inits()
    assert all(not t.HasField("raw_data") for t in inits)
    path = _graph_model(inits, work / "typed.onnx")
    _assert_like_onnx(path)
    m = paramscope.read_manifest(path)
    assert all(e.location is None for e in m.values())  # not raw: read whole by load_onnx
    c = paramscope.count(path)
    assert c.params + c.buffers == sum(math.prod(t.dims) for t in inits)
    assert m["steps"].role.value == "buffer" and m["w.f32"].role.value == "param"
    out = work / "typed.safetensors"
    paramscope.convert(path, out)
    got, want = paramscope.load(out), paramscope.load(path)  # ``want`` checked above
    assert list(got) == list(want)
    for n, t in want.items():  # bitwise
        assert got[n].dtype == t.dtype and got[n].shape == t.shape, n
        assert torch.equal(got[n].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))


def test_string_and_sparse_initializers_are_skipped_with_notes(work: Path) -> None:
    s = helper.make_tensor("vocab", TensorProto.STRING, [2], [b"a", b"bc"])
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    vals = numpy_helper.from_array(np.array([1.0], np.float32), "sp")
    idx = numpy_helper.from_array(np.array([0], np.int64), "sp_idx")
    g = helper.make_graph(
        [],
        "g",
        [],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2])],
        [s, w],
        sparse_initializer=[helper.make_sparse_tensor(vals, idx, [4])],
    )
    path = work / "strings.onnx"
    onnx.save(helper.make_model(g), str(path))
    m = paramscope.read_manifest(path)
    assert list(m) == ["w"]
    assert any("STRING" in n and "'vocab'" in n for n in m.notes)
    assert any("sparse" in n for n in m.notes)
    assert paramscope.count(path).params == 4


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    def varint(v: int) -> bytes:
        v &= (1 << 64) - 1
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    tag = varint(number << 3 | wire)
    if wire == 0:
        return tag + varint(int(payload))
    assert isinstance(payload, bytes)
    if wire == 2:
        return tag + varint(len(payload)) + payload
    return tag + payload


def test_unpacked_repeated_fields_read_as_onnx_does(work: Path) -> None:
    """Repeated scalars written unpacked (legal protobuf): dims, float_data, int64_data."""
    import struct

    floats = b"".join(_field(4, 5, struct.pack("<f", v)) for v in (1.5, -2.0, 3.25, 0.5))
    t1 = _field(1, 0, 2) + _field(1, 0, 2) + _field(2, 0, 1) + floats + _field(8, 2, b"w")
    ints = b"".join(_field(7, 0, v) for v in (-1, 2**40, 7))
    t2 = _field(1, 0, 3) + _field(2, 0, 7) + ints + _field(8, 2, b"idx")
    graph = _field(5, 2, t1) + _field(5, 2, t2) + _field(2, 2, b"g")
    path = work / "unpacked.onnx"
    path.write_bytes(_field(1, 0, 8) + _field(7, 2, graph))
    _assert_like_onnx(path)


def test_typed_values_too_few_are_refused(work: Path) -> None:
    t = _field(1, 0, 1000) + _field(2, 0, 1) + _field(4, 2, b"\0" * 8) + _field(8, 2, b"w")
    path = work / "short.onnx"
    path.write_bytes(_field(7, 2, _field(5, 2, t)))
    with pytest.raises(FormatError, match=r"short.onnx: initializer 'w': shape \[1000\]"):
        paramscope.count(path)


# ------------------------------------------------------------------------------ header cost


def test_header_only_count_reads_a_few_kb(work: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    names = [f"layer{i}.weight" for i in range(4)]
    inits = [numpy_helper.from_array(rng.standard_normal((512, 512), np.float32), n) for n in names]
    nodes = [helper.make_node("Add", [names[0], names[1]], ["a"])]
    for i, n in enumerate(names[2:]):
        nodes.append(helper.make_node("Add", ["a" if i == 0 else f"b{i - 1}", n], [f"b{i}"]))
    path = _graph_model(inits, work / "big.onnx", nodes)
    size = path.stat().st_size
    raw = sum(len(t.raw_data) for t in inits)
    assert size > raw > 4_000_000
    read = []
    orig = _source.LocalSource.read_at
    orig_into = _source.LocalSource.readinto_at

    def read_at(self, offset, n):
        data = orig(self, offset, n)
        read.append(len(data))
        return data

    def readinto_at(self, offset, buf):
        got = orig_into(self, offset, buf)
        read.append(got)
        return got

    monkeypatch.setattr(_source.LocalSource, "read_at", read_at)
    monkeypatch.setattr(_source.LocalSource, "readinto_at", readinto_at)
    c = paramscope.count(path)
    assert c.params == 4 * 512 * 512
    non_raw = size - raw  # the framing, the nodes, names and value infos
    assert sum(read) < non_raw + 4096, (sum(read), non_raw)
    assert sum(read) < 16 * 1024


# ------------------------------------------------------------------------------ hostile input


def _small_model(work: Path) -> Path:
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32), "fc.weight"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float16), "fc.bias"),
        helper.make_tensor("steps", TensorProto.INT64, [2], [7, -1]),
        helper.make_tensor("h", TensorProto.FLOAT16, [2], np.array([1, 2], np.float16)),
    ]
    return _graph_model(inits, work / "small.onnx")


def test_truncated_and_garbage_files_give_one_line(work: Path, cli) -> None:
    raw = _small_model(work).read_bytes()
    path = work / "cut.onnx"
    path.write_bytes(raw[: len(raw) - 9])
    with pytest.raises(FormatError, match=r"cut\.onnx: "):
        paramscope.read_manifest(path)
    path.write_bytes(b"\x0f" * 32)  # wire type 7
    code, _, err = cli("count", path)
    assert code == 2 and "cut.onnx" in err and len(err.strip().splitlines()) == 1
    path.write_bytes(_field(7, 2, _field(5, 2, _field(9, 2, b"\0" * 4))))
    with pytest.raises(FormatError, match="initializer #0 has no name"):
        paramscope.read_manifest(path)
    t = _field(1, 0, 2) + _field(2, 0, 1) + _field(8, 2, b"w") + _field(9, 2, b"\0" * 4)
    path.write_bytes(_field(7, 2, _field(5, 2, t)))
    with pytest.raises(FormatError, match=r"raw_data of 4 bytes, its shape \[2\] of F32 needs 8"):
        paramscope.read_manifest(path)
    path.write_bytes(_field(7, 2, _field(5, 2, t[:-6] + _field(9, 2, b"\0" * 8)) * 2))
    with pytest.raises(FormatError, match="two initializers are named 'w'"):
        paramscope.read_manifest(path)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _only_paramscope_errors(path: Path) -> None:
    for fn in (lambda: paramscope.read_manifest(path), lambda: list(_onnx.load_onnx(path))):
        try:
            fn()
        except Exception as exc:  # the point: nothing but ParamscopeError
            assert isinstance(exc, ParamscopeError), f"{type(exc).__name__}: {exc!r:.300}"


@pytest.fixture(scope="module")
def fuzz_seeds(work: Path) -> dict[str, bytes]:
    """A small model with raw, typed and float16 initializers, inline and external."""
    inline = _small_model(work)
    folder = work / "fuzz"
    folder.mkdir()
    external = folder / "seed.onnx"
    onnx.save_model(
        onnx.load(str(inline)),
        str(external),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return {"inline": inline.read_bytes(), "external": external.read_bytes()}


@FUZZ
@given(data=st.data())
def test_fuzz_flips_and_truncations(work: Path, fuzz_seeds: dict[str, bytes], data) -> None:
    raw = fuzz_seeds[data.draw(st.sampled_from(sorted(fuzz_seeds)))]
    buf = bytearray(raw)
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    for _ in range(data.draw(st.integers(0, 4))):
        if not buf:
            break
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(("flip", "set", "insert", "delete")))
        if op == "flip":
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[pos : pos + data.draw(st.integers(1, 8))]
    path = work / "fuzz" / "fuzzed.onnx"  # beside weights.bin, for the external seed
    path.write_bytes(bytes(buf))
    _only_paramscope_errors(path)


# ------------------------------------------------------------------------------ CLI, imports


def test_cli_count_json_and_convert(resnet, work: Path) -> None:
    _, folded, _, _ = resnet
    r = run_cli("count", folded, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == sum(math.prod(t.dims) for t in _inits(folded))
    dst = work / "cli.safetensors"
    r = run_cli("convert", folded, dst)
    assert r.returncode == 0, r.stderr
    want = paramscope.load(folded)
    got = paramscope.load(dst)
    assert set(got) == set(want) and all(torch.equal(got[n], want[n]) for n in want)


def test_reading_onnx_imports_neither_onnx_nor_torch(resnet) -> None:
    _, folded, _, _ = resnet
    code = (
        "import sys, paramscope\n"
        "from paramscope.io import _onnx\n"
        "m = _onnx.read_onnx_manifest(sys.argv[1])\n"
        "print(len(m), [x for x in ('onnx', 'torch', 'numpy') if x in sys.modules])"
    )
    r = run_python(code, folded)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(len(_inits(folded))), "[]"]
