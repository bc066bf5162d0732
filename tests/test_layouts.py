"""Named layout presets of ``convert`` (``flax-to-torch``, ``keras-to-torch``), each checked by
running the same small network in both frameworks on the converted weights.

Flax and Keras themselves write the files (a ``flax.serialization.to_bytes`` msgpack, a Keras 3
``.keras`` archive written with the torch backend), paramscope converts them with the preset
plus the user's module renames, and the equivalent torch module, loaded from the result, must
give the same outputs as the network that wrote the weights. Every weight, bias and running
statistic is random (non-trivial), the epsilons are set equal on both sides, and the spatial
sizes and kernels are not square, so a swapped axis or a wrong statistic shows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import flax.linen as fnn
import flax.serialization as fser
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
import torch

import paramscope
from _helpers import run_cli
from paramscope import ParamscopeError

#: Kernel sizes per number of spatial dimensions (odd, so "same" pads alike everywhere; not
#: square, so a swapped spatial axis changes the output).
KERNELS = {1: (3,), 2: (3, 5), 3: (3, 1, 5)}
#: Input sizes (spatial dims) per number of spatial dimensions; not square either.
SPATIAL = {1: (7,), 2: (6, 5), 3: (4, 5, 3)}
CIN, COUT, HIDDEN, NOUT = 3, 8, 16, 4
BN_EPS, LN_EPS = 1e-3, 1e-4  # set explicitly on both sides (the defaults all differ)

#: Flax module names → the torch module's (applied after the preset).
FLAX_RENAMES = [
    ("^Conv_0", "conv"),
    ("^BatchNorm_0", "bn"),
    ("^Dense_0", "fc1"),
    ("^LayerNorm_0", "ln"),
    ("^Dense_1", "fc2"),
]
#: Keras layer names (given explicitly: Keras numbers its defaults per process) → torch's.
KERAS_RENAMES = [
    ("^k_conv", "conv"),
    ("^k_bn", "bn"),
    ("^k_fc1", "fc1"),
    ("^k_ln", "ln"),
    ("^k_fc2", "fc2"),
    ("^k_tok", "tok"),
    ("^k_out", "out"),
]


# ------------------------------------------------------------------------------ torch side


class TorchCNN(torch.nn.Module):
    """Conv → BatchNorm → ReLU → global average pool → Linear → LayerNorm → Linear."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dims]
        bn = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[dims]
        self.conv = conv(CIN, COUT, KERNELS[dims], padding="same")
        self.bn = bn(COUT, eps=BN_EPS)
        self.fc1 = torch.nn.Linear(COUT, HIDDEN)
        self.ln = torch.nn.LayerNorm(HIDDEN, eps=LN_EPS)
        self.fc2 = torch.nn.Linear(HIDDEN, NOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = x.mean(dim=tuple(range(2, x.ndim)))
        return self.fc2(self.ln(self.fc1(x)))


class TorchEmbed(torch.nn.Module):
    """Embedding → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(11, 6)
        self.out = torch.nn.Linear(6, NOUT)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.tok(ids))


def channels_first(x: np.ndarray) -> torch.Tensor:
    """NHWC (N, *spatial, C) → torch's NCHW (N, C, *spatial)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)).contiguous()


def run_torch(model: torch.nn.Module, source: Any, x: torch.Tensor) -> np.ndarray:
    """Load ``source`` into ``model`` (every tensor but ``num_batches_tracked``, which neither
    framework has) and run it in eval mode."""
    report = paramscope.load_into(model, source)
    assert report.unexpected == [] and report.mismatched == [], report
    wanted = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(report.loaded) == wanted, report
    assert set(report.missing) <= {k for k in model.state_dict() if k not in wanted}
    model.eval()
    with torch.no_grad():
        return model(x).numpy()


def assert_same(expected: Any, got: np.ndarray) -> None:
    e = torch.from_numpy(np.asarray(expected, dtype=np.float32))
    g = torch.from_numpy(np.asarray(got, dtype=np.float32))
    assert e.shape == g.shape
    assert e.abs().max() > 0.1  # a non-trivial output (the weights are random)
    assert torch.allclose(e, g, atol=1e-5), (e - g).abs().max()


# ------------------------------------------------------------------------------ flax side


class FlaxCNN(fnn.Module):
    dims: int

    @fnn.compact
    def __call__(self, x: Any) -> Any:
        x = fnn.Conv(COUT, KERNELS[self.dims], padding="SAME")(x)
        x = fnn.BatchNorm(use_running_average=True, epsilon=BN_EPS)(x)
        x = fnn.relu(x)
        x = x.mean(axis=tuple(range(1, 1 + self.dims)))
        x = fnn.Dense(HIDDEN)(x)
        x = fnn.LayerNorm(epsilon=LN_EPS)(x)
        return fnn.Dense(NOUT)(x)


class FlaxEmbed(fnn.Module):
    @fnn.compact
    def __call__(self, ids: Any) -> Any:
        return fnn.Dense(NOUT)(fnn.Embed(11, 6)(ids))


def randomized(variables: Any, seed: int) -> Any:
    """Every leaf random (variances positive): nothing is left at its trivial init."""
    rng = np.random.default_rng(seed)

    def fill(path: Any, leaf: Any) -> Any:
        if getattr(path[-1], "key", None) == "var":
            return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(0.0, 0.5, leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, variables)


def flax_cnn(tmp_path: Path, dims: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Flax CNN's variables saved as msgpack: (path, NHWC input, Flax's output)."""
    x = np.random.default_rng(dims).normal(size=(2, *SPATIAL[dims], CIN)).astype(np.float32)
    model = FlaxCNN(dims)
    variables = randomized(dict(model.init(jax.random.PRNGKey(0), jnp.asarray(x))), dims)
    assert set(variables) == {"params", "batch_stats"}
    path = tmp_path / "m.msgpack"
    path.write_bytes(fser.to_bytes(variables))
    return path, x, np.asarray(model.apply(variables, jnp.asarray(x)))


# ------------------------------------------------------------------------------ keras side


def keras_cnn(tmp_path: Path, dims: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Keras CNN saved as ``.keras``: (path, NHWC input, Keras's output)."""
    layers = keras.layers
    conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[dims]
    pool = {
        1: layers.GlobalAveragePooling1D,
        2: layers.GlobalAveragePooling2D,
        3: layers.GlobalAveragePooling3D,
    }[dims]
    model = keras.Sequential(
        [
            keras.Input((*SPATIAL[dims], CIN)),
            conv(COUT, KERNELS[dims], padding="same", name="k_conv"),
            layers.BatchNormalization(epsilon=BN_EPS, name="k_bn"),
            layers.ReLU(),
            pool(),
            layers.Dense(HIDDEN, name="k_fc1"),
            layers.LayerNormalization(epsilon=LN_EPS, name="k_ln"),
            layers.Dense(NOUT, name="k_fc2"),
        ]
    )
    randomize_keras(model, dims)
    x = np.random.default_rng(dims).normal(size=(2, *SPATIAL[dims], CIN)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    return path, x, keras.ops.convert_to_numpy(model(x, training=False))


def randomize_keras(model: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign(rng.normal(0.0, 0.5, w.shape).astype(np.float32))


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_flax_cnn_runs_in_torch(tmp_path: Path, dims: int) -> None:
    """3-D (W, I, O), 4-D (H, W, I, O) and 5-D conv kernels, BatchNorm with running stats,
    Dense and LayerNorm: torch's outputs on the converted weights are Flax's."""
    src, x, expected = flax_cnn(tmp_path, dims)
    dst = tmp_path / "t.safetensors"
    report = paramscope.convert(src, dst, layout="flax-to-torch", rename=FLAX_RENAMES)
    got = run_torch(TorchCNN(dims), dst, channels_first(x))
    assert_same(expected, got)
    # The report lists every rename, old name → final name (preset, then the user's rules).
    assert set(report.renamed) == set(paramscope.load(src))
    assert report.renamed["params.Conv_0.kernel"] == "conv.weight"
    assert report.renamed["params.BatchNorm_0.scale"] == "bn.weight"
    assert report.renamed["params.BatchNorm_0.bias"] == "bn.bias"
    assert report.renamed["batch_stats.BatchNorm_0.mean"] == "bn.running_mean"
    assert report.renamed["batch_stats.BatchNorm_0.var"] == "bn.running_var"
    assert report.renamed["params.LayerNorm_0.scale"] == "ln.weight"
    assert report.renamed["params.Dense_1.kernel"] == "fc2.weight"
    assert report.entries == len(report.renamed)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_keras_cnn_runs_in_torch(tmp_path: Path, dims: int) -> None:
    """The same network written by Keras 3 (gamma/beta, moving_mean/moving_variance, kernels
    (*spatial, in, out)): torch's outputs on the converted weights are Keras's."""
    src, x, expected = keras_cnn(tmp_path, dims)
    dst = tmp_path / "t.safetensors"
    report = paramscope.convert(src, dst, layout="keras-to-torch", rename=KERAS_RENAMES)
    got = run_torch(TorchCNN(dims), dst, channels_first(x))
    assert_same(expected, got)
    assert set(report.renamed) == set(paramscope.load(src))
    assert report.renamed["k_conv.kernel"] == "conv.weight"
    assert report.renamed["k_bn.gamma"] == "bn.weight"
    assert report.renamed["k_bn.beta"] == "bn.bias"
    assert report.renamed["k_bn.moving_mean"] == "bn.running_mean"
    assert report.renamed["k_bn.moving_variance"] == "bn.running_var"
    assert report.renamed["k_ln.gamma"] == "ln.weight"


def test_flax_embed_runs_in_torch(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 11, size=(2, 5)).astype(np.int32)
    model = FlaxEmbed()
    variables = randomized(dict(model.init(jax.random.PRNGKey(0), jnp.asarray(ids))), 7)
    expected = np.asarray(model.apply(variables, jnp.asarray(ids)))
    src, dst = tmp_path / "e.msgpack", tmp_path / "t.safetensors"
    src.write_bytes(fser.to_bytes(variables))
    renames = [("^Embed_0", "tok"), ("^Dense_0", "out")]
    report = paramscope.convert(src, dst, layout="flax-to-torch", rename=renames)
    assert report.renamed["params.Embed_0.embedding"] == "tok.weight"
    got = run_torch(TorchEmbed(), dst, torch.from_numpy(ids.astype(np.int64)))
    assert_same(expected, got)


def test_keras_embedding_runs_in_torch(tmp_path: Path) -> None:
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(11, 6, name="k_tok"),
            keras.layers.Dense(NOUT, name="k_out"),
        ]
    )
    randomize_keras(model, 8)
    ids = np.random.default_rng(1).integers(0, 11, size=(2, 5)).astype(np.int32)
    expected = keras.ops.convert_to_numpy(model(ids, training=False))
    src, dst = tmp_path / "e.keras", tmp_path / "t.safetensors"
    model.save(src)
    report = paramscope.convert(src, dst, layout="keras-to-torch", rename=KERAS_RENAMES)
    assert report.renamed["k_tok.embeddings"] == "tok.weight"
    got = run_torch(TorchEmbed(), dst, torch.from_numpy(ids.astype(np.int64)))
    assert_same(expected, got)


def test_user_renames_see_the_layouts_names(tmp_path: Path) -> None:
    """The user's rules run after the preset: they match ``weight``, never ``kernel``, and no
    longer see the ``params.`` prefix."""
    src, _, _ = flax_cnn(tmp_path, 2)
    dst = tmp_path / "t.safetensors"
    rules = [(r"\.weight$", ".w"), (r"\.kernel$", ".never"), (r"^params\.", "never.")]
    report = paramscope.convert(src, dst, layout="flax-to-torch", rename=rules)
    names = set(paramscope.load(dst))
    assert "Dense_0.w" in names and "Conv_0.w" in names and "BatchNorm_0.w" in names
    assert not any("never" in n or "kernel" in n for n in names)
    assert report.renamed["params.Dense_0.kernel"] == "Dense_0.w"


def test_layout_with_shards(tmp_path: Path) -> None:
    """Kernels keep torch's axis order when the output is HF shards."""
    src, x, expected = flax_cnn(tmp_path, 2)
    out = tmp_path / "shards"
    report = paramscope.convert(
        src, out, layout="flax-to-torch", rename=FLAX_RENAMES, max_shard_size="1KB"
    )
    assert report.shards > 1
    assert_same(expected, run_torch(TorchCNN(2), out, channels_first(x)))


def test_cli_layout(tmp_path: Path) -> None:
    """``paramscope convert SRC DST --layout flax-to-torch --rename REGEX=REPL …`` in a fresh
    process; the torch network then gives Flax's outputs."""
    src, x, expected = flax_cnn(tmp_path, 2)
    dst = tmp_path / "t.safetensors"
    renames = [a for regex, repl in FLAX_RENAMES for a in ("--rename", f"{regex}={repl}")]
    r = run_cli("convert", src, dst, "--layout", "flax-to-torch", *renames, "--json")
    assert r.returncode == 0, r.stderr
    assert_same(expected, run_torch(TorchCNN(2), dst, channels_first(x)))


def test_unknown_layout(tmp_path: Path, cli: Callable[..., Any]) -> None:
    """An unknown preset is one clear line listing the known ones (exit 2), and nothing is
    written."""
    src = tmp_path / "m.safetensors"
    paramscope.save({"fc.weight": torch.ones(2, 3)}, src)
    dst = tmp_path / "t.safetensors"
    with pytest.raises(ParamscopeError) as info:
        paramscope.convert(src, dst, layout="jax-to-torch")
    msg = str(info.value)
    assert "jax-to-torch" in msg and "flax-to-torch" in msg and "keras-to-torch" in msg
    assert "\n" not in msg
    r = cli("convert", src, dst, "--layout", "torch-to-flax")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "torch-to-flax" in lines[0] and "flax-to-torch" in lines[0]
    assert "keras-to-torch" in lines[0]
    assert not dst.exists()


@pytest.mark.parametrize("layout", ["flax-to-torch", "keras-to-torch"])
def test_layout_on_torch_names_changes_nothing(tmp_path: Path, layout: str) -> None:
    """A torch checkpoint has none of the frameworks' names: converted with a preset, every
    name and every bit is as it was."""
    torch.manual_seed(0)
    net = TorchCNN(2)
    net.bn.running_mean.normal_()
    src, dst = tmp_path / "m.safetensors", tmp_path / "t.safetensors"
    paramscope.save(dict(net.state_dict()), src)
    report = paramscope.convert(src, dst, layout=layout)
    assert report.renamed == {}
    before, after = paramscope.load(src), paramscope.load(dst)
    assert sorted(before) == sorted(after)  # convert writes in its own order
    for name in before:
        a, b = before[name], after[name]
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name


def keras_lstm_file(tmp_path: Path) -> tuple[Path, str]:
    """A Keras LSTM → Dense model (``.keras``) and the prefix of its untranslated entries."""
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.LSTM(4, name="k_rnn"),
            keras.layers.Dense(NOUT, name="k_out"),
        ]
    )
    path = tmp_path / "m.keras"
    model.save(path)
    return path, "k_rnn."


def flax_attention_file(tmp_path: Path) -> tuple[Path, str]:
    """A Flax attention → Dense model (msgpack; per-head 3-D kernels) and the prefix of its
    untranslated entries."""

    class Attention(fnn.Module):
        @fnn.compact
        def __call__(self, x: Any) -> Any:
            x = fnn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(x)
            return fnn.Dense(NOUT)(x)

    variables = Attention().init(jax.random.PRNGKey(0), jnp.ones((1, 3, 6)))
    path = tmp_path / "a.msgpack"
    path.write_bytes(fser.to_bytes(variables))
    return path, "params.MultiHeadDotProductAttention_0."


@pytest.mark.parametrize(
    ("layout", "make"),
    [("keras-to-torch", keras_lstm_file), ("flax-to-torch", flax_attention_file)],
)
def test_untranslated_kinds_are_kept_and_noted(
    tmp_path: Path, layout: str, make: Callable[[Path], tuple[Path, str]]
) -> None:
    """Kinds a preset does not translate (recurrent cells, per-head attention kernels) keep
    their axes and their ``kernel`` name, and a note names them; the model's plain Dense
    layer is still translated."""
    src, prefix = make(tmp_path)
    dst = tmp_path / "t.safetensors"
    report = paramscope.convert(src, dst, layout=layout)
    before, after = paramscope.load(src), paramscope.load(dst)
    kept = [n for n in before if n.startswith(prefix)]
    assert kept and any(n.endswith("kernel") for n in kept)
    for name in kept:
        new = report.renamed.get(name, name)
        assert new.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1], (name, new)
        assert torch.equal(after[new], before[name]), (name, new)
    # one note: how many, and the first of them by name (a long list is cut: "+N more")
    notes = [n for n in report.notes if "does not translate" in n]
    assert len(notes) == 1 and f"{len(kept)} entries" in notes[0], report.notes
    assert sorted(kept)[0] in notes[0], notes
    dense = [n for n in before if not n.startswith(prefix) and n.endswith(".kernel")]
    assert len(dense) == 1
    assert torch.equal(after[report.renamed[dense[0]]], before[dense[0]].T)


def test_an_attention_block_of_any_name_is_kept_whole(tmp_path: Path) -> None:
    # a user-named attention module (query/key/value/out DenseGeneral kernels, 3-D: a conv
    # kernel's axis move would scramble them) is left as stored, its out projection too; the
    # file prefix still goes, and the plain Dense beside it is translated
    g = torch.Generator().manual_seed(0)
    sd = {
        "params.attn.query.kernel": torch.randn(4, 2, 3, generator=g),
        "params.attn.key.kernel": torch.randn(4, 2, 3, generator=g),
        "params.attn.value.kernel": torch.randn(4, 2, 3, generator=g),
        "params.attn.out.kernel": torch.randn(2, 3, 4, generator=g),
        "params.attn.out.bias": torch.randn(4, generator=g),
        "params.fc.kernel": torch.randn(4, 5, generator=g),
    }
    src = paramscope.save(sd, tmp_path / "flax.safetensors")
    report = paramscope.convert(src, tmp_path / "t.safetensors", layout="flax-to-torch")
    got = paramscope.load(tmp_path / "t.safetensors")
    for name, t in sd.items():
        new = name.removeprefix("params.")
        if new.startswith("attn."):
            assert torch.equal(got[new], t), name
    assert torch.equal(got["fc.weight"], sd["params.fc.kernel"].T)
    assert any("5 entries" in n and "attn.key.kernel" in n for n in report.notes), report.notes
