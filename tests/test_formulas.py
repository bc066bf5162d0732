"""Analytic layer formulas checked against the real torch layers (the framework as oracle)."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from paramscope._errors import ParamscopeError
from paramscope.counting import _formulas as F

FAST = settings(max_examples=50, deadline=None)

bools = st.booleans()
small = st.integers(1, 12)


def n_params(layer: nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def n_buffers(layer: nn.Module) -> int:
    return sum(b.numel() for b in layer.buffers())


def check(formula: F.Formula, layer: nn.Module) -> None:
    """The formula, and formula_for on the real layer, both match the layer's parameters."""
    assert formula.params == n_params(layer), formula.expression
    assert f" = {formula.params:,}" in formula.expression
    found = F.formula_for(layer)
    assert found is not None, type(layer).__name__
    assert found.params == formula.params
    assert found.buffers == formula.buffers
    assert found.expression == formula.expression
    assert found.layer == type(layer).__name__


def kernels(dims: int) -> st.SearchStrategy[int | tuple[int, ...]]:
    return st.one_of(st.integers(1, 4), st.tuples(*[st.integers(1, 4)] * dims))


# --------------------------------------------------------------------------- property tests


@FAST
@given(i=st.integers(1, 64), o=st.integers(1, 64), bias=bools)
def test_linear(i: int, o: int, bias: bool) -> None:
    with torch.device("meta"):
        layer = nn.Linear(i, o, bias=bias)
    check(F.linear(in_features=i, out_features=o, bias=bias), layer)


@FAST
@given(i1=small, i2=small, o=small, bias=bools)
def test_bilinear(i1: int, i2: int, o: int, bias: bool) -> None:
    with torch.device("meta"):
        layer = nn.Bilinear(i1, i2, o, bias=bias)
    check(F.bilinear(in1_features=i1, in2_features=i2, out_features=o, bias=bias), layer)


@st.composite
def conv_configs(draw: st.DrawFn) -> tuple[int, int, int, int | tuple[int, ...], int, bool]:
    dims = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 4))
    i = groups * draw(st.integers(1, 4))
    o = groups * draw(st.integers(1, 4))
    return dims, i, o, draw(kernels(dims)), groups, draw(bools)


CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
TCONVS = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TCONV_FNS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@settings(max_examples=60, deadline=None)
@given(cfg=conv_configs())
def test_conv(cfg: tuple[int, int, int, int | tuple[int, ...], int, bool]) -> None:
    dims, i, o, k, groups, bias = cfg
    with torch.device("meta"):
        layer = CONVS[dims](i, o, k, groups=groups, bias=bias)
    kw = {"in_channels": i, "out_channels": o, "kernel_size": k, "groups": groups, "bias": bias}
    f = F.conv(dims, **kw)
    assert f == CONV_FNS[dims](**kw)
    check(f, layer)


@settings(max_examples=60, deadline=None)
@given(cfg=conv_configs())
def test_conv_transpose(cfg: tuple[int, int, int, int | tuple[int, ...], int, bool]) -> None:
    dims, i, o, k, groups, bias = cfg
    with torch.device("meta"):
        layer = TCONVS[dims](i, o, k, groups=groups, bias=bias)
    kw = {"in_channels": i, "out_channels": o, "kernel_size": k, "groups": groups, "bias": bias}
    f = F.conv_transpose(dims, **kw)
    assert f == TCONV_FNS[dims](**kw)
    check(f, layer)


@FAST
@given(n=st.integers(1, 300), d=st.integers(1, 32), bag=bools)
def test_embedding(n: int, d: int, bag: bool) -> None:
    with torch.device("meta"):
        layer = (nn.EmbeddingBag if bag else nn.Embedding)(n, d)
    fn = F.embedding_bag if bag else F.embedding
    check(fn(num_embeddings=n, embedding_dim=d), layer)


shapes = st.one_of(small, st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple))


@FAST
@given(shape=shapes, affine=bools, bias=bools)
def test_layer_norm(shape: int | tuple[int, ...], affine: bool, bias: bool) -> None:
    with torch.device("meta"):
        layer = nn.LayerNorm(shape, elementwise_affine=affine, bias=bias)
    check(F.layer_norm(normalized_shape=shape, elementwise_affine=affine, bias=bias), layer)


@FAST
@given(shape=shapes, affine=bools)
def test_rms_norm(shape: int | tuple[int, ...], affine: bool) -> None:
    with torch.device("meta"):
        layer = nn.RMSNorm(shape, elementwise_affine=affine)
    check(F.rms_norm(normalized_shape=shape, elementwise_affine=affine), layer)


@FAST
@given(groups=st.integers(1, 6), per=st.integers(1, 6), affine=bools)
def test_group_norm(groups: int, per: int, affine: bool) -> None:
    with torch.device("meta"):
        layer = nn.GroupNorm(groups, groups * per, affine=affine)
    check(F.group_norm(num_groups=groups, num_channels=groups * per, affine=affine), layer)


@FAST
@given(dims=st.integers(1, 3), c=st.integers(1, 64), affine=bools, track=bools)
def test_batch_norm(dims: int, c: int, affine: bool, track: bool) -> None:
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    with torch.device("meta"):
        layer = cls(c, affine=affine, track_running_stats=track)
    f = F.batch_norm(num_features=c, affine=affine, track_running_stats=track)
    assert f.buffers == n_buffers(layer)
    check(f, layer)


@st.composite
def rnn_configs(draw: st.DrawFn) -> dict[str, object]:
    mode = draw(st.sampled_from(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]))
    hidden = draw(st.integers(1, 12))
    proj = draw(st.integers(0, hidden - 1)) if mode == "LSTM" else 0
    return {
        "mode": mode,
        "input_size": draw(st.integers(1, 12)),
        "hidden_size": hidden,
        "num_layers": draw(st.integers(1, 4)),
        "bias": draw(bools),
        "bidirectional": draw(bools),
        "proj_size": proj,
    }


@settings(max_examples=80, deadline=None)
@given(cfg=rnn_configs())
def test_rnn(cfg: dict[str, object]) -> None:
    kw = {k: v for k, v in cfg.items() if k not in ("mode", "proj_size")}
    mode = cfg["mode"]
    with torch.device("meta"):
        if mode == "LSTM":
            layer = nn.LSTM(**kw, proj_size=cfg["proj_size"])
            wrapped = F.lstm(**kw, proj_size=cfg["proj_size"])
        elif mode == "GRU":
            layer, wrapped = nn.GRU(**kw), F.gru(**kw)
        else:
            nonlinearity = "tanh" if mode == "RNN_TANH" else "relu"
            layer, wrapped = nn.RNN(**kw, nonlinearity=nonlinearity), F.rnn_tanh(**kw)
    f = F.rnn(**cfg)
    assert wrapped.params == f.params
    check(f, layer)


@st.composite
def mha_configs(draw: st.DrawFn) -> dict[str, object]:
    heads = draw(st.integers(1, 4))
    return {
        "embed_dim": heads * draw(st.integers(1, 6)),
        "num_heads": heads,
        "bias": draw(bools),
        "add_bias_kv": draw(bools),
        "kdim": draw(st.one_of(st.none(), st.integers(1, 16))),
        "vdim": draw(st.one_of(st.none(), st.integers(1, 16))),
    }


@settings(max_examples=60, deadline=None)
@given(cfg=mha_configs())
def test_multihead_attention(cfg: dict[str, object]) -> None:
    with torch.device("meta"):
        layer = nn.MultiheadAttention(**cfg)
    check(F.multihead_attention(**cfg), layer)


@settings(max_examples=40, deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 6),
    ff=st.integers(1, 32),
    bias=bools,
    decoder=bools,
)
def test_transformer_layers(heads: int, head_dim: int, ff: int, bias: bool, decoder: bool) -> None:
    d = heads * head_dim
    cls = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    fn = F.transformer_decoder_layer if decoder else F.transformer_encoder_layer
    with torch.device("meta"):
        layer = cls(d, heads, dim_feedforward=ff, bias=bias)
    check(fn(d_model=d, nhead=heads, dim_feedforward=ff, bias=bias), layer)


# --------------------------------------------------------------------------- pinned expressions


def test_seed_example() -> None:
    f = F.linear(784, 10)
    assert f.params == 7850
    assert f.expression == "784×10 + 10 = 7,850"
    assert f.to_dict() == {
        "layer": "Linear",
        "params": 7850,
        "buffers": 0,
        "expression": "784×10 + 10 = 7,850",
    }


@pytest.mark.parametrize(
    ("formula", "expression"),
    [
        (F.linear(784, 10, bias=False), "784×10 = 7,840"),
        (F.conv2d(3, 64, 7), "(3/1)×64×7×7 + 64 = 9,472"),
        (F.conv_transpose2d(64, 32, 4), "64×(32/1)×4×4 + 32 = 32,800"),
        (F.batch_norm(64), "2×64 = 128 (+ buffers 2×64 + 1)"),
        (F.batch_norm(64, track_running_stats=False), "2×64 = 128"),
        (F.layer_norm(768), "2×768 = 1,536"),
        (F.layer_norm(8, elementwise_affine=False), "no elementwise affine = 0"),
        (F.lstm(10, 32), "layer 0: 4×(32×(10+32) + 2×32) = 5,632"),
        (
            F.lstm(10, 32, num_layers=3, bidirectional=True, proj_size=8),
            "2 directions×(layer 0: 4×(32×(10+8) + 2×32) + 8×32 + "
            "layers 1–2: 2×(4×(32×(16+8) + 2×32) + 8×32)) = 19,968",
        ),
        (F.gru(4, 8, bias=False), "layer 0: 3×8×(4+8) = 288"),
        (
            F.multihead_attention(8, 2, kdim=4, vdim=3, add_bias_kv=True),
            "q/k/v_proj 8×(8+4+3) + in_proj_bias 3×8 + out_proj 8×8 + 8 + bias_k/bias_v 2×8 = 232",
        ),
        (
            F.transformer_encoder_layer(8, 2, 16, bias=False),
            "self_attn [in_proj 3×8×8 + out_proj 8×8] + linear1 [8×16] + linear2 [16×8] "
            "+ 2 norms [2×8] = 528",
        ),
    ],
)
def test_expressions(formula: F.Formula, expression: str) -> None:
    assert formula.expression == expression


def test_batch_norm_buffers_apart() -> None:
    f = F.batch_norm(64)
    assert (f.params, f.buffers) == (128, 129)


def test_doctests() -> None:
    result = doctest.testmod(F)
    assert result.attempted > 20
    assert result.failed == 0


# --------------------------------------------------------------------------- formula_for


def test_formula_for_none() -> None:
    assert F.formula_for(nn.ReLU()) is None
    assert F.formula_for(nn.Sequential(nn.Linear(2, 2))) is None
    assert F.formula_for(object()) is None
    assert F.formula_for(nn.LazyLinear(4)) is None


def test_formula_for_initialised_lazy() -> None:
    layer = nn.LazyLinear(4)
    layer(torch.zeros(1, 3))
    found = F.formula_for(layer)
    assert found is not None
    assert found.params == 16


def test_formula_for_subclass_with_extra_param() -> None:
    class Scaled(nn.Linear):
        def __init__(self) -> None:
            super().__init__(4, 4)
            self.scale = nn.Parameter(torch.ones(4))

    with torch.device("meta"):
        layer = Scaled()
    assert F.formula_for(layer) is None  # the guard: formula and held shapes disagree


def test_formula_for_hf_conv1d() -> None:
    class Conv1D(nn.Module):  # the shape of transformers.pytorch_utils.Conv1D
        def __init__(self, nf: int, nx: int) -> None:
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.empty(nx, nf, device="meta"))
            self.bias = nn.Parameter(torch.empty(nf, device="meta"))

    found = F.formula_for(Conv1D(nf=2304, nx=768))
    assert found is not None
    assert found.params == 768 * 2304 + 2304
    assert found.expression == "768×2304 + 2304 = 1,771,776"
    assert found.layer == "Conv1D"


def test_formula_for_batch_norm_untracked_after_build() -> None:
    layer = nn.BatchNorm2d(8)
    layer.track_running_stats = False  # buffers stay: counted from what the module holds
    found = F.formula_for(layer)
    assert found is not None
    assert found.buffers == n_buffers(layer) == 17


def test_formula_module_does_not_import_torch() -> None:
    code = "import sys, paramscope.counting._formulas; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "needles"),
    [
        (lambda: F.linear(0, 10), ["in_features", "positive", "0"]),
        (lambda: F.linear(10, -1), ["out_features", "-1"]),
        (lambda: F.linear(3.5, 10), ["in_features", "3.5"]),
        (lambda: F.linear(True, 10), ["in_features", "True"]),
        (lambda: F.linear(4, 4, bias="yes"), ["bias", "True or False", "'yes'"]),
        (lambda: F.conv2d(6, 8, 3, groups=4), ["in_channels", "groups=4", "in_channels=6"]),
        (lambda: F.conv2d(8, 6, 3, groups=4), ["out_channels", "groups=4", "out_channels=6"]),
        (lambda: F.conv2d(8, 8, (3, 3, 3)), ["kernel_size", "2 ints", "(3, 3, 3)"]),
        (lambda: F.conv(4, 8, 8, 3), ["dims", "1, 2 or 3", "4"]),
        (lambda: F.conv_transpose1d(4, 4, 0), ["kernel_size", "0"]),
        (lambda: F.embedding(0, 4), ["num_embeddings", "0"]),
        (lambda: F.layer_norm(()), ["normalized_shape", "()"]),
        (lambda: F.group_norm(3, 8), ["num_channels", "num_groups=3", "num_channels=8"]),
        (lambda: F.batch_norm(0), ["num_features", "0"]),
        (lambda: F.rnn("BILSTM", 4, 4), ["mode", "'LSTM'", "'BILSTM'"]),
        (lambda: F.lstm(4, 8, proj_size=8), ["proj_size", "hidden_size=8", "proj_size=8"]),
        (lambda: F.lstm(4, 8, proj_size=-1), ["proj_size", "-1"]),
        (lambda: F.rnn("GRU", 4, 8, proj_size=2), ["proj_size", "LSTM only", "2"]),
        (lambda: F.gru(4, 8, num_layers=0), ["num_layers", "0"]),
        (lambda: F.multihead_attention(10, 3), ["embed_dim", "num_heads=3", "embed_dim=10"]),
        (lambda: F.multihead_attention(8, 2, kdim=0), ["kdim", "0"]),
        (lambda: F.transformer_encoder_layer(10, 4), ["d_model", "nhead=4", "d_model=10"]),
        (lambda: F.transformer_decoder_layer(8, 2, 0), ["dim_feedforward", "0"]),
    ],
)
def test_errors(call, needles: list[str]) -> None:
    with pytest.raises(ParamscopeError) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, message


def test_error_is_public_type() -> None:
    import paramscope

    with pytest.raises(paramscope.ParamscopeError):
        F.linear(0, 1)
