"""Analytic layer formulas checked against the real torch layers (the framework as oracle)."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _helpers import without_torch
from paramscope._errors import ArgumentError, ArgumentTypeError, ParamscopeError
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
    code = "from paramscope.counting import _formulas as F\nresult = F.linear(784, 10).params"
    assert without_torch(code) == 784 * 10 + 10


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
    # a value out of range is an ArgumentError (ValueError), a value of another type
    # (3.5, True, "yes") an ArgumentTypeError (TypeError)
    with pytest.raises((ArgumentError, ArgumentTypeError), match=re.escape(needles[0])) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, message


def test_error_is_public_type() -> None:
    import paramscope

    with pytest.raises(paramscope.ArgumentError, match=r"^linear: in_features must be a positive"):
        F.linear(0, 1)
    with pytest.raises(paramscope.ArgumentTypeError, match=r"^linear: in_features .*got 3\.5$"):
        F.linear(3.5, 1)
    assert issubclass(paramscope.ArgumentError, paramscope.ParamscopeError)


# --------------------------------------------------------------------------- torch's signatures


def _overload(cls: type) -> object:
    """The typed overload of an ``__init__(*args, **kwargs)`` (nn.RNN, nn.LSTM, nn.GRU)."""
    import typing

    for candidate in typing.get_overloads(cls.__init__):
        kinds = {p.kind for p in inspect.signature(candidate).parameters.values()}
        if inspect.Parameter.VAR_POSITIONAL not in kinds:
            return candidate
    raise AssertionError(f"{cls.__name__} has no typed __init__ overload")


#: formula → (torch constructor, leading formula-only parameters)
SIGNATURES: dict[str, tuple[object, tuple[str, ...]]] = {
    "linear": (nn.Linear.__init__, ()),
    "bilinear": (nn.Bilinear.__init__, ()),
    "conv": (nn.Conv2d.__init__, ("dims",)),
    "conv1d": (nn.Conv1d.__init__, ()),
    "conv2d": (nn.Conv2d.__init__, ()),
    "conv3d": (nn.Conv3d.__init__, ()),
    "conv_transpose": (nn.ConvTranspose2d.__init__, ("dims",)),
    "conv_transpose1d": (nn.ConvTranspose1d.__init__, ()),
    "conv_transpose2d": (nn.ConvTranspose2d.__init__, ()),
    "conv_transpose3d": (nn.ConvTranspose3d.__init__, ()),
    "embedding": (nn.Embedding.__init__, ()),
    "embedding_bag": (nn.EmbeddingBag.__init__, ()),
    "layer_norm": (nn.LayerNorm.__init__, ()),
    "rms_norm": (nn.RMSNorm.__init__, ()),
    "group_norm": (nn.GroupNorm.__init__, ()),
    "batch_norm": (nn.BatchNorm2d.__init__, ()),
    "rnn": (nn.RNNBase.__init__, ()),
    "rnn_tanh": (_overload(nn.RNN), ()),
    "lstm": (_overload(nn.LSTM), ()),
    "gru": (_overload(nn.GRU), ()),
    "multihead_attention": (nn.MultiheadAttention.__init__, ()),
    "transformer_encoder_layer": (nn.TransformerEncoderLayer.__init__, ()),
    "transformer_decoder_layer": (nn.TransformerDecoderLayer.__init__, ()),
}

#: defaults that cannot be torch's object without importing torch (torch's F.relu ≡ "relu")
DEFAULT_EXCEPTIONS = {
    ("transformer_encoder_layer", "activation"),
    ("transformer_decoder_layer", "activation"),
}


def _params(fn: object, skip: int = 0) -> list[tuple[str, object, object]]:
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return [(p.name, p.kind, p.default) for p in params]


def test_every_formula_has_a_torch_signature() -> None:
    public = {name for name in F.__all__ if name not in ("Formula", "formula_for")}
    assert public == set(SIGNATURES)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_is_torchs(name: str) -> None:
    """Same names, same order, same kinds (keyword-only ``bias`` too) and same defaults."""
    torch_init, leading = SIGNATURES[name]
    ours = _params(getattr(F, name))
    theirs = _params(torch_init, skip=1)  # self
    assert [p[0] for p in ours] == [*leading, *(p[0] for p in theirs)]
    ours = ours[len(leading) :]
    assert [p[1] for p in ours] == [p[1] for p in theirs]
    for (param, _, mine), (_, _, torchs) in zip(ours, theirs, strict=True):
        if (name, param) in DEFAULT_EXCEPTIONS:
            continue
        assert mine == torchs, f"{name}({param}=...): ours {mine!r}, torch {torchs!r}"


def test_issue_example_stride_is_fourth() -> None:
    assert F.conv2d(64, 64, 3, 2).params == n_params(nn.Conv2d(64, 64, 3, 2)) == 36928
    assert F.conv2d(64, 64, 3, 2, 1, 1, 2).params == n_params(nn.Conv2d(64, 64, 3, 2, 1, 1, 2))


# --------------------------------------------------------------------------- called positionally

MAYBE_DEVICE = st.sampled_from(["meta", None])
MAYBE_DTYPE = st.sampled_from([None, torch.float32, torch.bfloat16])
EPS = st.sampled_from([1e-5, 1e-6, 0.1])


def _sizes(dims: int, low: int = 1, high: int = 3) -> st.SearchStrategy[object]:
    return st.one_of(st.integers(low, high), st.tuples(*[st.integers(low, high)] * dims))


@st.composite
def _conv_args(draw: st.DrawFn, transposed: bool) -> tuple[int, list[object]]:
    dims = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    i, o = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    stride = draw(_sizes(dims))
    if transposed:
        padding, mode = draw(_sizes(dims, 0)), "zeros"
        tail = [padding, draw(_sizes(dims, 0, 1)), groups, draw(bools), draw(_sizes(dims))]
    else:
        options = [_sizes(dims, 0), st.just("valid")]
        if stride in (1, (1,) * dims):
            options.append(st.just("same"))
        padding = draw(st.one_of(*options))
        mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
        tail = [padding, draw(_sizes(dims)), groups, draw(bools)]
    values = [i, o, draw(kernels(dims)), stride, *tail, mode, draw(MAYBE_DEVICE), draw(MAYBE_DTYPE)]
    return dims, values


@st.composite
def layer_calls(
    draw: st.DrawFn, family: str
) -> tuple[list[object], dict[str, object], object, object]:
    """(positional args, keyword args, torch class, formula) for one random torch layer."""
    kwargs: dict[str, object] = {}
    required = 2
    if family == "linear":
        cls, fn = nn.Linear, F.linear
        values = [draw(small), draw(small), draw(bools), draw(MAYBE_DEVICE), draw(MAYBE_DTYPE)]
    elif family == "bilinear":
        cls, fn, required = nn.Bilinear, F.bilinear, 3
        values = [draw(small), draw(small), draw(small), draw(bools), draw(MAYBE_DEVICE), None]
    elif family in ("conv", "conv_transpose"):
        transposed = family == "conv_transpose"
        dims, values = draw(_conv_args(transposed))
        cls = (TCONVS if transposed else CONVS)[dims]
        if draw(bools):  # the dims-generic formula: conv(dims, *torch args)
            generic = F.conv_transpose if transposed else F.conv
            fn = lambda *a, _g=generic, _d=dims, **k: _g(_d, *a, **k)  # noqa: E731
        else:
            fn = (TCONV_FNS if transposed else CONV_FNS)[dims]
        required = 3
    elif family == "embedding":
        cls, fn = nn.Embedding, F.embedding
        n, d = draw(st.integers(1, 50)), draw(small)
        weight = torch.empty(n, d, device="meta") if draw(bools) else None
        padding_idx = draw(st.one_of(st.none(), st.integers(-n, n - 1)))
        max_norm = draw(st.sampled_from([None, 1.0]))
        values = [n, d, padding_idx, max_norm, 2.0, draw(bools), draw(bools), weight]
        values += [draw(bools), draw(MAYBE_DEVICE), None]
    elif family == "embedding_bag":
        cls, fn = nn.EmbeddingBag, F.embedding_bag
        n, d = draw(st.integers(1, 50)), draw(small)
        mode = draw(st.sampled_from(["sum", "mean", "max"]))
        values = [n, d, None, 2.0, draw(bools), mode, False, None, draw(bools)]
        values += [draw(st.one_of(st.none(), st.integers(0, n - 1))), draw(MAYBE_DEVICE), None]
    elif family == "layer_norm":
        cls, fn, required = nn.LayerNorm, F.layer_norm, 1
        values = [draw(shapes), draw(EPS), draw(bools), draw(bools), draw(MAYBE_DEVICE), None]
    elif family == "rms_norm":
        cls, fn, required = nn.RMSNorm, F.rms_norm, 1
        eps = draw(st.one_of(st.none(), EPS))
        values = [draw(shapes), eps, draw(bools), draw(MAYBE_DEVICE), draw(MAYBE_DTYPE)]
    elif family == "group_norm":
        cls, fn = nn.GroupNorm, F.group_norm
        groups = draw(st.integers(1, 4))
        values = [groups, groups * draw(st.integers(1, 4)), draw(EPS), draw(bools)]
        values += [draw(MAYBE_DEVICE), None]
        if draw(bools):
            kwargs["bias"] = draw(bools)
    elif family == "batch_norm":
        cls = draw(st.sampled_from([nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d]))
        fn, required = F.batch_norm, 1
        momentum = draw(st.sampled_from([None, 0.1, 0.5]))
        values = [draw(st.integers(1, 16)), draw(EPS), momentum, draw(bools), draw(bools)]
        values += [draw(MAYBE_DEVICE), None]
        if draw(bools):
            kwargs["bias"] = draw(bools)
    elif family in ("rnn", "lstm", "gru", "rnn_base"):
        hidden = draw(st.integers(2, 8))
        head = [draw(small), hidden, draw(st.integers(1, 3))]
        common = [draw(bools), draw(bools), draw(st.sampled_from([0.0, 0.25]))]  # bias, b_f, drop
        if family == "rnn":
            cls, fn = nn.RNN, F.rnn_tanh
            values = [*head, draw(st.sampled_from(["tanh", "relu"])), *common, draw(bools)]
        elif family == "gru":
            cls, fn = nn.GRU, F.gru
            values = [*head, *common, draw(bools)]
        else:
            values = [*head, *common, draw(bools), draw(st.integers(0, hidden - 1))]
            cls, fn = nn.LSTM, F.lstm
            if family == "rnn_base":
                mode = draw(st.sampled_from(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]))
                if mode != "LSTM":
                    values[-1] = 0
                cls, fn, required = nn.RNNBase, F.rnn, 3
                values = [mode, *values]
        if family in ("rnn", "gru"):
            # torch's nn.RNN / nn.GRU hand a positional 9th / 8th argument to RNNBase's
            # proj_size, not to the documented ``device``: pass those by keyword
            kwargs = {"device": draw(MAYBE_DEVICE), "dtype": draw(MAYBE_DTYPE)}
        else:
            values += [draw(MAYBE_DEVICE), draw(MAYBE_DTYPE)]
    elif family == "multihead_attention":
        cls, fn = nn.MultiheadAttention, F.multihead_attention
        heads = draw(st.integers(1, 4))
        dim = st.one_of(st.none(), st.integers(1, 12))
        values = [heads * draw(st.integers(1, 4)), heads, draw(st.sampled_from([0.0, 0.1]))]
        values += [draw(bools), draw(bools), draw(bools), draw(dim), draw(dim), draw(bools)]
        values += [draw(MAYBE_DEVICE), None]
    elif family in ("transformer_encoder_layer", "transformer_decoder_layer"):
        decoder = family == "transformer_decoder_layer"
        cls = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
        fn = F.transformer_decoder_layer if decoder else F.transformer_encoder_layer
        heads = draw(st.integers(1, 3))
        activation = draw(st.sampled_from(["relu", "gelu", "prelu"]))
        if activation == "prelu":
            activation = nn.PReLU(device="meta")
        values = [heads * draw(st.integers(1, 4)), heads, draw(st.integers(1, 16)), 0.1]
        values += [activation, draw(EPS), draw(bools), draw(bools), draw(bools)]
        values += [draw(MAYBE_DEVICE), None]
    else:  # pragma: no cover - a typo in the parametrize list
        raise AssertionError(family)
    cut = draw(st.integers(required, len(values)))
    return values[:cut], kwargs, cls, fn


FAMILIES = [
    "linear",
    "bilinear",
    "conv",
    "conv_transpose",
    "embedding",
    "embedding_bag",
    "layer_norm",
    "rms_norm",
    "group_norm",
    "batch_norm",
    "rnn",
    "lstm",
    "gru",
    "rnn_base",
    "multihead_attention",
    "transformer_encoder_layer",
    "transformer_decoder_layer",
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # dropout with one layer, 'same' padding
@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_positional_call_matches_torch(family: str, data: st.DataObject) -> None:
    """Each formula, called with exactly the positional args a torch layer was built with."""
    args, kwargs, cls, fn = data.draw(layer_calls(family))
    with torch.device("meta"):
        layer = cls(*args, **kwargs)
    formula = fn(*args, **kwargs)
    assert formula.params == n_params(layer), (args, kwargs, formula.expression)
    if family == "batch_norm":
        assert formula.buffers == n_buffers(layer)
    found = F.formula_for(layer)
    assert found is not None
    assert found.params == formula.params


def test_formula_for_prelu_activation() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, 0.1, nn.PReLU())
    found = F.formula_for(layer)
    assert found is not None
    assert found.params == n_params(layer)
    assert found.expression.endswith("+ activation [1] = 601")


def test_rnn_tanh_nonlinearity_checked() -> None:
    with pytest.raises(ParamscopeError, match=r"nonlinearity.*'sigmoid'"):
        F.rnn_tanh(4, 8, 1, "sigmoid")
