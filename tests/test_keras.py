"""Keras 3 weights (``.weights.h5``, ``.keras``) read by paramscope, checked against Keras.

Every file is written by Keras itself (torch backend: no TensorFlow), and what paramscope
reads is compared with the model that wrote it: ``variable.path``, ``shape``, ``trainable``,
``numpy()``, ``count_params()``, ``get_weights()``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import h5py
import keras
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramscope
from _helpers import run_cli
from _servers import http_server
from paramscope import ParamscopeError
from paramscope._enums import Format, Role, RoleSource
from paramscope._errors import FormatError
from paramscope.io import _keras
from paramscope.io._reader import SourceReader


def keras_name(model: Any, w: Any) -> str:
    """paramscope's name of a Keras variable: its path without the top model's name."""
    path = w.path
    if path.startswith(f"{model.name}/"):
        path = path[len(model.name) + 1 :]
    return path.replace("/", ".")


def as_torch(a: np.ndarray) -> torch.Tensor:
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    )


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="paramscope-keras-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def small(work: Path) -> tuple[Any, dict[str, Path]]:
    """A Sequential of Embedding, Conv2D, BatchNormalization, Dense, LayerNormalization,
    trained one step (moving statistics move), saved both ways."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.Reshape((6, 4, 1)),
            keras.layers.Conv2D(3, 2),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(2, use_bias=False),
        ]
    )
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 20, (8, 6)), rng.random((8, 2)), verbose=0)
    files = {"h5": work / "small.weights.h5", "keras": work / "small.keras"}
    model.save_weights(files["h5"])
    model.save(files["keras"])
    return model, files


@pytest.fixture(scope="module")
def rich(work: Path) -> tuple[Any, dict[str, Path]]:
    """A Functional model with attention, an LSTM, a nested Sequential, a frozen
    BatchNormalization and a bfloat16 Dense, compiled and fitted (optimizer state saved)."""
    keras.utils.set_random_seed(1)
    inner = keras.Sequential(
        [keras.layers.Dense(3, use_bias=False), keras.layers.Dense(3, name="head")], name="inner"
    )
    inp = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 4)(inp)
    x = keras.layers.MultiHeadAttention(2, 2)(x, x)
    x = keras.layers.LSTM(3, return_sequences=True)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = inner(x)
    bn = keras.layers.BatchNormalization()
    x = bn(x)
    x = keras.layers.Dense(3, dtype="bfloat16", name="half")(x)
    model = keras.Model(inp, x, name="rich")
    model.compile("adam", "mse")
    rng = np.random.default_rng(1)
    model.fit(rng.integers(0, 20, (8, 6)), rng.random((8, 3)), verbose=0)
    bn.trainable = False
    files = {"h5": work / "rich.weights.h5", "keras": work / "rich.keras"}
    model.save_weights(files["h5"])
    model.save(files["keras"])
    return model, files


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_names_shapes_dtypes_match_keras(small: tuple[Any, dict[str, Path]], kind: str) -> None:
    model, files = small
    m = paramscope.read_manifest(files[kind])
    assert m.format is Format.KERAS
    want = {keras_name(model, w): (tuple(w.shape), w.dtype) for w in model.weights}
    got = {n: (e.shape, e.dtype.value) for n, e in m.items()}
    assert got == {n: (s, {"float32": "F32"}[d]) for n, (s, d) in want.items()}
    last, bn = model.layers[-1].name, model.layers[3].name
    assert f"{last}.kernel" in m and f"{last}.bias" not in m  # use_bias=False: one variable
    assert m[f"{bn}.moving_mean"].role is Role.BUFFER and not m[f"{bn}.moving_mean"].trainable
    assert m[f"{bn}.gamma"].role is Role.PARAM and m[f"{bn}.gamma"].trainable
    if kind == "keras":
        assert m.roles is RoleSource.EXACT
        assert m.notes == ["the optimizer state (22 variables under optimizer/) is not listed"]
        assert m.metadata["keras_keras_version"] == keras.__version__
    else:
        assert m.roles is RoleSource.INFERRED
        assert any("names inferred" in n and "trainable flags inferred" in n for n in m.notes)


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_count_matches_keras(small: tuple[Any, dict[str, Path]], kind: str) -> None:
    model, files = small
    c = paramscope.count(files[kind])
    assert c.params + c.buffers == model.count_params()
    assert c.trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert c.buffers == sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_values_equal_keras(small: tuple[Any, dict[str, Path]], kind: str) -> None:
    model, files = small
    pd = paramscope.load(files[kind])
    assert len(pd) == len(model.weights)
    for w in model.weights:
        assert same_bits(pd[keras_name(model, w)], as_torch(w.numpy())), w.path
    assert dict(_keras.load_keras(files[kind])).keys() == pd.keys()


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_locations_point_at_the_values(small: tuple[Any, dict[str, Path]], kind: str) -> None:
    """Each byte location (in the .keras zip: member offset + dataset offset) holds the
    variable's raw bytes, so the format streams."""
    model, files = small
    m = _keras.read_keras_manifest(files[kind])
    raw = files[kind].read_bytes()
    for w in model.weights:
        loc = m[keras_name(model, w)].location
        assert loc is not None and loc.file == str(files[kind])
        assert raw[loc.offset : loc.offset + loc.length] == w.numpy().tobytes(), w.path
    with SourceReader(files[kind]) as r:
        assert r.streaming and not r.notes


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_convert_to_safetensors_bitwise(
    small: tuple[Any, dict[str, Path]], kind: str, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    model, files = small
    out = tmp_path / "out.safetensors"
    paramscope.convert(files[kind], out)
    sd = load_file(out)
    assert sd.keys() == {keras_name(model, w) for w in model.weights}
    for w in model.weights:
        assert same_bits(sd[keras_name(model, w)], as_torch(w.numpy())), w.path


def test_d2l_parameter_access(small: tuple[Any, dict[str, Path]]) -> None:
    """The D2L example ``net.layers[2].get_weights()``: the same arrays by name."""
    model, files = small
    pd = paramscope.load(files["keras"])
    for i, layer in enumerate(model.layers):
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
            kernel, *rest = layer.get_weights()
            assert np.array_equal(pd[f"{layer.name}.kernel"].numpy(), kernel), i
            if rest:
                assert np.array_equal(pd[f"{layer.name}.bias"].numpy(), rest[0]), i
    dense = model.layers[5]  # Sequential.layers has no InputLayer: 5 is the first Dense
    assert isinstance(dense, keras.layers.Dense)
    assert np.array_equal(pd[f"{dense.name}.kernel"].numpy(), dense.get_weights()[0])


def test_rich_model_names_trainable_and_values(rich: tuple[Any, dict[str, Path]]) -> None:
    model, files = rich
    m = paramscope.read_manifest(files["keras"])
    want = {keras_name(model, w): w for w in model.weights}
    assert set(m) == set(want)  # multi_head_attention.query.kernel, lstm.lstm_cell.kernel ...
    first = model.get_layer("inner").layers[0].name  # Dense(use_bias=False)
    assert (
        "inner.head.bias" in m and f"inner.{first}.kernel" in m and f"inner.{first}.bias" not in m
    )
    for name, w in want.items():
        assert m[name].shape == tuple(w.shape), name
        assert m[name].trainable == w.trainable, name  # the frozen BatchNormalization too
    assert m["half.kernel"].dtype.value == "BF16"
    assert any("optimizer state" in n for n in m.notes)
    c = paramscope.count(files["keras"])
    assert c.trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert c.params + c.buffers == model.count_params()
    for kind in ("h5", "keras"):
        pd = paramscope.load(files[kind])
        for name, w in want.items():
            assert same_bits(pd[name], as_torch(w.numpy())), (kind, name)
    bare = paramscope.read_manifest(files["h5"])  # no config: the freeze is not recorded
    bn = next(x for x in model.layers if isinstance(x, keras.layers.BatchNormalization))
    assert not m[f"{bn.name}.gamma"].trainable and m[f"{bn.name}.gamma"].role is Role.PARAM
    assert set(bare) == set(want) and bare[f"{bn.name}.gamma"].trainable


def test_legacy_h5(small: tuple[Any, dict[str, Path]], work: Path) -> None:
    """``model.save("m.h5")`` (Keras 2's format, which stores variable names): read too."""
    model, _ = small
    path = work / "legacy.h5"
    model.save(path)
    m = paramscope.read_manifest(path)
    assert m.format is Format.KERAS and any("legacy Keras HDF5" in n for n in m.notes)
    assert set(m) == {keras_name(model, w) for w in model.weights}
    pd = paramscope.load(path)
    for w in model.weights:
        assert same_bits(pd[keras_name(model, w)], as_torch(w.numpy())), w.path
        assert m[keras_name(model, w)].trainable == w.trainable, w.path


def test_unknown_layer_keeps_indices(work: Path) -> None:
    class Scale(keras.layers.Layer):
        def build(self, shape: Any) -> None:
            self.s = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x: Any) -> Any:
            return x * self.s

    model = keras.Sequential([keras.Input((3,)), Scale(name="sc"), keras.layers.Dense(2)])
    path = work / "custom.weights.h5"
    model.save_weights(path)
    m = paramscope.read_manifest(path)
    dense = model.layers[1].name
    assert set(m) == {"sc.vars.0", f"{dense}.kernel", f"{dense}.bias"}
    assert any("sc" in n and "stored index" in n for n in m.notes)
    assert np.array_equal(paramscope.load(path)["sc.vars.0"].numpy(), model.layers[0].s.numpy())


def test_deflated_archive_is_loaded_whole(
    small: tuple[Any, dict[str, Path]], tmp_path: Path
) -> None:
    model, files = small
    out = tmp_path / "deflated.keras"
    with zipfile.ZipFile(files["keras"]) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    m = paramscope.read_manifest(out)
    assert all(e.location is None for e in m.values())
    with SourceReader(out) as r:
        assert not r.streaming
    conv = tmp_path / "out.safetensors"
    paramscope.convert(out, conv)
    from safetensors.torch import load_file

    sd = load_file(conv)
    for w in model.weights:
        assert same_bits(sd[keras_name(model, w)], as_torch(w.numpy())), w.path


def test_over_http(small: tuple[Any, dict[str, Path]]) -> None:
    """h5py reads through paramscope's ByteSource (as_file), so URLs work."""
    model, files = small
    with http_server(files["keras"].parent) as (base, _log):
        for kind in ("h5", "keras"):
            url = f"{base}/{files[kind].name}"
            assert paramscope.count(url).params == paramscope.count(files[kind]).params
            pd = paramscope.load(url)
            for w in model.weights:
                assert same_bits(pd[keras_name(model, w)], as_torch(w.numpy())), (url, w.path)


def test_cli_count_json(small: tuple[Any, dict[str, Path]]) -> None:
    model, files = small
    r = run_cli("count", files["keras"], "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["format"] == "keras"
    assert out["params"] + out["buffers"] == model.count_params()


def test_links_and_external_storage_are_refused(
    small: tuple[Any, dict[str, Path]], tmp_path: Path
) -> None:
    _, files = small
    for kind, make in {
        "external": lambda f: f["layers/dense/vars"].__setitem__(
            "9", h5py.ExternalLink("o.h5", "/x")
        ),
        "soft": lambda f: f["layers/dense/vars"].__setitem__("9", h5py.SoftLink("/layers")),
        "raw": lambda f: f.create_dataset(
            "layers/dense/vars/9", (4,), "f4", external=[("o.bin", 0, 16)]
        ),
    }.items():
        path = tmp_path / f"{kind}.weights.h5"
        shutil.copy(files["h5"], path)
        with h5py.File(path, "r+") as f:
            make(f)
        with pytest.raises(FormatError, match=r"refused|expected only hard links") as e:
            paramscope.read_manifest(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_big_endian_and_compressed_datasets_load_whole(
    small: tuple[Any, dict[str, Path]], tmp_path: Path
) -> None:
    """Keras writes neither, h5py can: such a dataset has no byte location (read through
    h5py), and its values still equal Keras's."""
    model, files = small
    path = tmp_path / "edited.weights.h5"
    shutil.copy(files["h5"], path)
    conv, dense = model.layers[2], model.layers[5]
    with h5py.File(path, "r+") as f:
        g = f["layers/conv2d/vars"]  # a Sequential names its groups by class, not layer
        a = g["0"][()]
        del g["0"]
        g.create_dataset("0", data=a.astype(">f4"))
        g = f["layers/dense/vars"]  # the first Dense of the list
        a = g["0"][()]
        del g["0"]
        g.create_dataset("0", data=a, compression="gzip", chunks=True)
    m = paramscope.read_manifest(path)
    assert m[f"{conv.name}.kernel"].location is None and m[f"{dense.name}.kernel"].location is None
    assert m[f"{conv.name}.kernel"].dtype.value == "F32"
    pd = paramscope.load(path)
    for w in model.weights:
        assert same_bits(pd[keras_name(model, w)], as_torch(w.numpy())), w.path


def zero_free_space(raw: bytes) -> bytes:
    """The file with its global heap's free-space object made 0 bytes long (on which
    libhdf5 loops forever while reading a variable-length string)."""
    out = bytearray(raw)
    at = raw.index(b"GCOL")
    end, p = at + int.from_bytes(raw[at + 8 : at + 16], "little"), at + 16
    while int.from_bytes(raw[p : p + 2], "little") != 0:  # skip the strings to the free space
        p += 16 + ((int.from_bytes(raw[p + 8 : p + 16], "little") + 7) & ~7)
        assert p + 16 <= end
    out[p + 8 : p + 16] = bytes(8)
    return bytes(out)


def test_malformed_global_heap_does_not_hang(
    small: tuple[Any, dict[str, Path]], work: Path, tmp_path: Path
) -> None:
    """A one-bit flip found by fuzzing: layer names are then not read (group names used), a
    legacy file (whose names all live there) is refused; in a fresh process, bounded."""
    model, files = small
    legacy = work / "legacy_heap.h5"
    model.save(legacy)
    for src, code in ((files["h5"], 0), (legacy, 2)):
        path = tmp_path / src.name
        path.write_bytes(zero_free_space(src.read_bytes()))
        r = run_cli("count", path, "--json", timeout=120)
        assert r.returncode == code, r.stderr
        if code:
            assert "malformed HDF5 global heap" in r.stderr and str(path) in r.stderr
        else:
            assert json.loads(r.stdout)["params"] == paramscope.count(src).params


def test_archive_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "empty.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(FormatError, match=r"without model\.weights\.h5"):
        _keras.read_keras_manifest(path)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=st.data())
def test_fuzz_truncated_and_flipped(
    small: tuple[Any, dict[str, Path]], data: st.DataObject
) -> None:
    """Whatever the bytes, reading and loading a .weights.h5 / .keras raises only a
    ParamscopeError (one line naming the file), or succeeds."""
    _, files = small
    kind = data.draw(st.sampled_from(["h5", "keras"]))
    raw = bytearray(files[kind].read_bytes())
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"fuzz.{'weights.h5' if kind == 'h5' else 'keras'}"
        path.write_bytes(bytes(raw))
        try:
            _keras.read_keras_manifest(path)
            list(_keras.load_keras(path))
        except ParamscopeError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        except Exception as exc:  # the point: nothing but ParamscopeError
            raise AssertionError(f"{type(exc).__name__} escaped: {exc!r:.300}") from exc
