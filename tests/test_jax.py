"""JAX pytrees, Flax msgpack files and Orbax checkpoints (jax on CPU), with jax, flax, orbax
and equinox themselves as the oracles."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx
import flax.linen as nn
import flax.serialization as fser
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramscope
from _helpers import without_torch
from paramscope import ParamscopeError
from paramscope._enums import Format
from paramscope._errors import FormatError
from paramscope._pytree import (
    from_pytree,
    is_pytree,
    pytree_manifest,
    to_pytree,
)
from paramscope.io import _flax
from test_fuzz import mutations, only_paramscope_errors

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# ------------------------------------------------------------------------------ models


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        x = nn.relu(nn.Dense(16)(x))
        x = nn.LayerNorm()(x)
        return nn.Dense(3)(x)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.BatchNorm(use_running_average=True)(x)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(5)(x)


def mlp_params() -> Any:
    return MLP().init(jax.random.PRNGKey(0), jnp.ones((1, 7)))["params"]


def cnn_variables() -> Any:
    return CNN().init(jax.random.PRNGKey(1), jnp.ones((1, 6, 6, 2)))


def leaves_by_name(tree: Any) -> dict[str, Any]:
    """jax's own flattening, names joined with '.': the oracle for names."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        out[".".join(parts)] = leaf
    return out


def torch_of(a: Any) -> torch.Tensor:
    """The oracle's conversion: numpy bytes reinterpreted (bf16 bit for bit)."""
    a = np.asarray(a)
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def write_msgpack(path: Path, tree: Any) -> Path:
    path.write_bytes(fser.to_bytes(tree))
    return path


# ------------------------------------------------------------------------------ msgpack


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_msgpack_manifest_matches_the_tree(tmp_path: Path, which: str) -> None:
    tree = {"params": mlp_params()} if which == "mlp" else cnn_variables()
    path = write_msgpack(tmp_path / f"{which}.msgpack", tree)
    want = leaves_by_name(tree)
    m = paramscope.read_manifest(path)
    assert m.format is Format.FLAX
    assert sorted(m) == sorted(want)  # file order is the dicts' order; jax sorts keys
    for name, leaf in want.items():
        e = m[name]
        assert e.shape == leaf.shape
        assert e.dtype.to_torch() == torch_of(leaf).dtype
        assert e.location is not None and e.location.length == leaf.nbytes
    total = sum(x.size for x in jax.tree_util.tree_leaves(tree))
    c = paramscope.count(path)
    assert c.params + c.buffers == total
    # batch_stats (BatchNorm's running mean / var) are buffers, the params collection params
    params = sum(x.size for x in jax.tree_util.tree_leaves(tree["params"]))
    assert (c.params, c.buffers) == (params, total - params)
    if which == "cnn":
        assert c.buffers == sum(x.size for x in jax.tree_util.tree_leaves(tree["batch_stats"]))
        assert c.buffers > 0


def test_msgpack_values_and_convert_bitwise(tmp_path: Path) -> None:
    tree = cnn_variables()
    path = write_msgpack(tmp_path / "cnn.msgpack", tree)
    oracle = leaves_by_name(fser.msgpack_restore(path.read_bytes()))
    pd = paramscope.load(path)
    assert sorted(pd) == sorted(oracle)
    for name, a in oracle.items():
        assert torch.equal(pd[name], torch_of(a)), name
    out = tmp_path / "cnn.safetensors"
    paramscope.convert(path, out)
    from safetensors.numpy import load_file

    back = load_file(str(out))
    assert sorted(back) == sorted(oracle)
    for name, a in oracle.items():
        assert back[name].tobytes() == np.asarray(a).tobytes(), name
        assert back[name].dtype == np.asarray(a).dtype


def test_msgpack_bfloat16_bit_exact(tmp_path: Path) -> None:
    tree = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), {"params": mlp_params()})
    path = write_msgpack(tmp_path / "bf16.msgpack", tree)
    m = paramscope.read_manifest(path)
    assert {e.dtype.value for e in m.values()} == {"BF16"}
    pd = paramscope.load(path)
    for name, a in leaves_by_name(tree).items():
        t = pd[name]
        assert t.dtype == torch.bfloat16
        assert t.view(torch.int16).numpy().tobytes() == np.asarray(a).tobytes(), name
    out = tmp_path / "bf16.safetensors"
    paramscope.convert(path, out)
    back = paramscope.load(out)
    assert all(torch.equal(back[n].view(torch.int16), pd[n].view(torch.int16)) for n in pd)


def test_msgpack_scalars_lists_and_other_leaves(tmp_path: Path) -> None:
    tree = {
        "layers": [np.arange(3, dtype=np.int64), np.ones((2, 2), np.float16)],
        "step": np.int32(7),  # a numpy scalar: ext type 3
        "lr": 0.5,  # a Python float: not an array, left out
        "name": "x",
        "z": 1 + 2j,  # ext type 2: left out
    }
    path = write_msgpack(tmp_path / "mixed.msgpack", tree)
    m = paramscope.read_manifest(path)
    assert [(e.name, e.shape) for e in m.values()] == [
        ("layers.0", (3,)),
        ("layers.1", (2, 2)),
        ("step", ()),
    ]
    assert m.notes == ["3 leaves that are not arrays left out"]
    pd = paramscope.load(path)
    assert pd["step"].item() == 7 and pd["layers.0"].tolist() == [0, 1, 2]


def test_msgpack_chunked_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # flax splits arrays over MAX_CHUNK_SIZE (1 GiB) into flat chunks: make it 40 bytes
    monkeypatch.setattr(fser, "MAX_CHUNK_SIZE", 40)
    w = np.arange(60, dtype=np.float32).reshape(6, 10)
    tree = {"big": {"w": w}, "small": np.ones(3, np.float32)}
    raw = fser.to_bytes(tree)
    assert b"__msgpack_chunked_array__" in raw
    path = tmp_path / "chunked.msgpack"
    path.write_bytes(raw)
    m = paramscope.read_manifest(path)
    assert m["big.w"].shape == (6, 10) and m["big.w"].location is None
    assert m["small"].location is not None
    pd = paramscope.load(path)
    assert torch.equal(pd["big.w"], torch.from_numpy(w))
    back = fser.msgpack_restore(raw)  # the oracle reads it the same
    assert np.array_equal(back["big"]["w"], pd["big.w"].numpy())


def test_msgpack_manifest_needs_no_jax(tmp_path: Path) -> None:
    path = write_msgpack(tmp_path / "m.msgpack", {"params": mlp_params()})
    got = without_torch(
        "import paramscope\n"
        "m = paramscope.read_manifest(sys.argv[1])\n"
        "result = [[e.name, list(e.shape), e.dtype.value] for e in m.values()]\n",
        path,
        absent=("torch", "jax", "flax", "msgpack", "numpy"),
    )
    want = [[n, list(a.shape), "F32"] for n, a in leaves_by_name({"params": mlp_params()}).items()]
    assert sorted(got) == sorted(want)


# ------------------------------------------------------------------------------ msgpack: bad input


def _ndarray_ext(shape: list[int], dtype: str, buf: bytes) -> bytes:
    import msgpack

    return msgpack.packb(
        {"w": msgpack.ExtType(1, msgpack.packb((shape, dtype, buf), use_bin_type=True))},
        use_bin_type=True,
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "ends first"),
        (b"\x93\x01\x02\x03", "expected a msgpack map"),
        (b"\xc1", "is no msgpack type"),
        (b"\xdf\xff\xff\xff\xff", "cannot fit"),
        (b"\x81\xa1w" + b"\x81\xa1a" * 100 + b"\xc0", "nested deeper"),
        (b"\x82\xa1w\xc0\xa1w\xc0", "appears twice"),
        (b"\x81\xa3a.b\xc0", "without '.'"),
        (b"\x81\xc0\xc0", "map key of type nil"),
        (_ndarray_ext([2, 3], "float32", bytes(20)), "needs 24 bytes, the buffer holds 20"),
        (_ndarray_ext([-1], "float32", b""), "not a size"),
        (b"\x81\xa1w\xc0\xc0", "bytes before the end"),
    ],
)
def test_msgpack_refusals(tmp_path: Path, raw: bytes, fragment: str) -> None:
    path = tmp_path / "bad.msgpack"
    path.write_bytes(raw)
    with pytest.raises(FormatError) as info:
        _flax.read_msgpack_manifest(path)
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_msgpack_unsupported_dtype(tmp_path: Path) -> None:
    path = tmp_path / "c128.msgpack"
    path.write_bytes(_ndarray_ext([1], "complex128", bytes(16)))
    with pytest.raises(ParamscopeError, match="complex128"):
        paramscope.read_manifest(path)


def test_msgpack_cli_error_exit_2(tmp_path: Path, cli: Any) -> None:
    path = tmp_path / "bad.msgpack"
    path.write_bytes(b"\x81\xa1w\xc7\xff\x01")
    r = cli("count", path)
    assert r.code == 2
    assert "bad.msgpack" in r.err and len(r.err.strip().splitlines()) == 1


@FUZZ
@given(data=st.data())
def test_fuzz_msgpack(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    raw = fser.to_bytes(
        {
            "params": {
                "Dense_0": {"kernel": np.ones((2, 3), np.float32), "bias": np.zeros(3)},
                "layers": [np.arange(4, dtype=np.int16), np.int32(3)],
            },
            "lr": 0.1,
        }
    )
    how = data.draw(st.sampled_from(["truncate", "mutate"]))
    if how == "truncate":
        bad = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        bad = data.draw(mutations(raw, 40))
    path = tmp_path_factory.mktemp("fz") / "f.msgpack"
    path.write_bytes(bad)
    only_paramscope_errors(lambda: paramscope.read_manifest(path))
    only_paramscope_errors(lambda: dict(paramscope.load(path)))


# ------------------------------------------------------------------------------ Orbax


def _orbax_tree() -> Any:
    p = mlp_params()
    return {
        "params": p,
        "extra": [jnp.arange(5, dtype=jnp.int32), np.ones((2, 2), np.float16)],
        "half": jnp.ones((4,), jnp.bfloat16),
    }


def _manifest_without_jax(path: Path) -> list[list[Any]]:
    return without_torch(
        "import paramscope\n"
        "m = paramscope.read_manifest(sys.argv[1])\n"
        "result = [str(m.format), [[e.name, list(e.shape), e.dtype.value] for e in m.values()]]\n",
        path,
        absent=("jax", "flax", "orbax", "torch"),
    )


def _want(tree: Any) -> list[list[Any]]:
    from paramscope._pytree import dtype_of

    rows = [
        [n, list(a.shape), dtype_of(np.asarray(a).dtype).value]
        for n, a in leaves_by_name(tree).items()
    ]
    return sorted(rows)


@pytest.mark.parametrize("kind", ["standard", "no-ocdbt", "manager"])
def test_orbax_manifest_without_jax_and_load(tmp_path: Path, kind: str) -> None:
    tree = _orbax_tree()
    path = tmp_path / "ckpt"
    if kind == "standard":  # orbax 0.12: OCDBT
        ck = ocp.StandardCheckpointer()
        ck.save(path, tree)
        ck.wait_until_finished()
        assert (path / "manifest.ocdbt").exists()
    elif kind == "no-ocdbt":  # one folder per array, .zarray files
        ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)).save(path, tree)
        assert (path / "params.Dense_0.kernel" / ".zarray").exists()
    else:  # a CheckpointManager step: the tree is in step/default
        with ocp.CheckpointManager(tmp_path / "mgr") as mgr:
            mgr.save(3, args=ocp.args.StandardSave(tree))
            mgr.wait_until_finished()
        path = tmp_path / "mgr" / "3"
    fmt, rows = _manifest_without_jax(path)
    assert fmt == "orbax"
    assert sorted(rows) == _want(tree)
    pd = paramscope.load(path)
    for name, a in leaves_by_name(tree).items():
        assert torch.equal(pd[name], torch_of(a)), name
    c = paramscope.count(path)
    assert c.params + c.buffers == sum(x.size for x in jax.tree_util.tree_leaves(tree))
    out = tmp_path / "o.safetensors"
    paramscope.convert(path, out)
    back = paramscope.load(out)
    assert all(torch.equal(back[n], pd[n]) for n in pd)


def test_orbax_bad_metadata(tmp_path: Path, cli: Any) -> None:
    (tmp_path / "_METADATA").write_text("{not json")
    with pytest.raises(FormatError, match="not JSON"):
        paramscope.read_manifest(tmp_path)
    (tmp_path / "_METADATA").write_text(json.dumps({"tree_metadata": {"k": 3}}))
    with pytest.raises(FormatError, match="expected an object"):
        paramscope.read_manifest(tmp_path)
    leaf = {
        "key_metadata": [{"key": "w", "key_type": 2}],
        "value_metadata": {"value_type": "np.ndarray"},
    }
    meta = {"tree_metadata": {"w": leaf}, "use_ocdbt": False}
    (tmp_path / "_METADATA").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="missing"):
        paramscope.read_manifest(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / ".zarray").write_text(json.dumps({"shape": [-2], "dtype": "<f4"}))
    with pytest.raises(FormatError, match="not a list of sizes"):
        paramscope.read_manifest(tmp_path)
    r = cli("count", tmp_path)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ pytrees


def _assert_same_tree(a: Any, b: Any) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        assert np.asarray(x).shape == np.asarray(y).shape
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_pytree_flax_params_round_trip() -> None:
    tree = {"params": mlp_params(), "half": jnp.ones((2, 3), jnp.bfloat16)}
    tree["params"]["stack"] = (jnp.zeros(2), [jnp.ones(1, jnp.int8)])
    pd = from_pytree(tree)
    want = leaves_by_name(tree)
    assert sorted(pd) == sorted(want)
    for n, a in want.items():
        assert torch.equal(pd[n], torch_of(a)), n
    assert pd["half"].dtype == torch.bfloat16
    back = to_pytree(pd)  # numpy arrays, tuples and lists as they were
    assert isinstance(back["params"]["stack"], tuple)
    assert isinstance(back["params"]["stack"][1], list)
    assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(back))
    _assert_same_tree(back, tree)
    # without the recorded structure (e.g. a ParamDict saved and loaded): nested dicts
    plain = to_pytree(paramscope.ParamDict(dict(pd)))
    assert list(plain["params"]["stack"]) == ["0", "1"]


def test_pytree_separator_and_haiku_style() -> None:
    hk = {"mlp/~/linear_0": {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}}
    pd = from_pytree(hk)
    assert list(pd) == ["mlp/~/linear_0.w", "mlp/~/linear_0.b"]
    _assert_same_tree(to_pytree(pd), hk)
    pd = from_pytree(hk, sep=":")
    assert list(pd) == ["mlp/~/linear_0:w", "mlp/~/linear_0:b"]
    _assert_same_tree(to_pytree(pd, sep=":"), hk)


def test_pytree_nnx_state() -> None:
    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.l1 = nnx.Linear(4, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.l2 = nnx.Linear(8, 2, rngs=rngs)

    model = Net(nnx.Rngs(0))
    state = nnx.state(model)
    pure = nnx.to_pure_dict(state)
    pd = from_pytree(state)
    want = leaves_by_name(pure)
    assert sorted(pd) == sorted(want)
    assert is_pytree(state)
    _assert_same_tree(to_pytree(pd), pure)
    # like=: back into an nnx State, then into the model
    new = jax.tree_util.tree_map(lambda x: x * 0, state)
    filled = to_pytree(pd, like=new)
    nnx.update(model, filled)
    assert np.array_equal(model.l1.kernel[...], pure["l1"]["kernel"])
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert paramscope.count(params).params == sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_pytree_equinox() -> None:
    model = eqx.nn.MLP(3, 2, width_size=5, depth=2, key=jax.random.PRNGKey(0))
    arrays = eqx.filter(model, eqx.is_array)
    pd = from_pytree(arrays)
    want = leaves_by_name(arrays)
    assert list(pd) == list(want) and "layers.0.weight" in pd
    for n, a in want.items():
        assert torch.equal(pd[n], torch_of(a))
    n = sum(x.size for x in jax.tree_util.tree_leaves(arrays))
    assert paramscope.count(arrays).params == n == paramscope.count(pd).params
    back = to_pytree(pd, like=arrays)  # an Equinox module again, jax arrays
    assert isinstance(back, eqx.nn.MLP)
    assert isinstance(back.layers[0].weight, jax.Array)
    _assert_same_tree(back, arrays)
    model2 = eqx.combine(back, eqx.filter(model, eqx.is_array, inverse=True))
    x = jnp.ones(3)
    assert np.array_equal(model2(x), model(x))


def test_shared_leaves_are_ties_counted_once() -> None:
    w = jnp.ones((10, 4))
    tree = {"wte": {"embedding": w}, "lm_head": {"kernel": w}, "b": jnp.zeros(10)}
    manual = sum(x.size for x in jax.tree_util.tree_leaves(tree))  # 90: w twice
    pd = from_pytree(tree)
    assert pd.ties() == [["wte.embedding", "lm_head.kernel"]]
    assert pd["wte.embedding"] is pd["lm_head.kernel"]
    assert paramscope.count(tree).params == manual - w.size == paramscope.count(pd).params == 50
    m = pytree_manifest(tree)
    assert m["lm_head.kernel"].tie == "wte.embedding"
    back = to_pytree(pd)
    assert back["wte"]["embedding"] is back["lm_head"]["kernel"]


def test_count_matches_flax_tabulate_with_a_shared_module() -> None:
    # flax#2930: nn.tabulate summed a shared submodule once per use (its "Total Parameters"
    # counted shared params twice). flax 0.12 lists the shared Dense once; the params tree
    # holds it once, so paramscope, tabulate and a manual sum agree here (60: the shared Dense
    # and each block's own Dense, 4x4 + 4 each).
    class Block(nn.Module):
        dense: nn.Module

        @nn.compact
        def __call__(self, x: Any) -> Any:
            return nn.Dense(4)(self.dense(x))

    class Shared(nn.Module):
        def setup(self) -> None:
            self.shared = nn.Dense(4)
            self.a = Block(self.shared)
            self.b = Block(self.shared)

        def __call__(self, x: Any) -> Any:
            return self.b(self.a(x))

    x = jnp.ones((1, 4))
    params = Shared().init(jax.random.PRNGKey(0), x)["params"]
    text = Shared().tabulate(
        jax.random.PRNGKey(0), x, compute_flops=False, console_kwargs={"no_color": True}
    )
    tab = int(re.findall(r"Total Parameters: ([\d,]+)", text)[0].replace(",", ""))
    manual = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert paramscope.count(params).params == manual == tab


def test_is_pytree() -> None:
    assert is_pytree({"a": {"b": jnp.zeros(1)}})
    assert not is_pytree({"a": torch.zeros(1)})
    assert not is_pytree("path.msgpack")
    assert is_pytree(eqx.nn.Linear(2, 2, key=jax.random.PRNGKey(0)))


def test_pytree_refusals() -> None:
    with pytest.raises(ParamscopeError, match="without the separator"):
        from_pytree({"a.b": np.zeros(1)})
    with pytest.raises(ParamscopeError, match="complex128"):
        from_pytree({"a": np.zeros(1, np.complex128)})


def test_public_entry_points_take_pytrees() -> None:
    w = jnp.ones((10, 4))
    tree = {"wte": {"embedding": w}, "lm_head": {"kernel": w}, "b": jnp.zeros(10)}
    # paramscope.count reads a pytree's shapes (a shared leaf once), with values on request
    assert paramscope.count(tree).params == 50
    got = paramscope.count(tree, nonzero=True)
    assert got.params == 50 and got.pruned == {"b": {"params": 10, "nonzero": 0}}  # zeros
    pd = paramscope.ParamDict.from_pytree(tree)
    assert pd.ties() == [["wte.embedding", "lm_head.kernel"]]
    back = pd.to_pytree()
    assert back["lm_head"]["kernel"] is back["wte"]["embedding"]
    assert np.array_equal(back["wte"]["embedding"], np.asarray(w))
