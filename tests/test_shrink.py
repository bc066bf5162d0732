"""Physical structured shrinking (issue 17): channels and neurons through the traced graph.

Every count is exact, with its formula; ``sum(p.numel())`` of the rebuilt model is the oracle.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import paramscope
from paramscope._errors import ArgumentError, TargetError
from paramscope.building import zoo
from paramscope.compress._depgraph import trace_graph
from paramscope.compress._shrink import shrink
from paramscope.compress._shrink_report import ShrinkReport


def _n(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _nb(model: nn.Module) -> int:
    return sum(b.numel() for b in model.buffers())


def _consistent(r: ShrinkReport) -> None:
    assert r.params_after == _n(r.model)
    assert r.buffers_after == _nb(r.model)
    assert sum(g["params_removed"] for g in r.groups) == r.params_before - r.params_after
    assert sum(g["buffers_removed"] for g in r.groups) == r.buffers_before - r.buffers_after


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return zoo.build("resnet18")


# ------------------------------------------------------------------------------ ResNet-18
def test_resnet18_layer1_conv1_halved(resnet18: nn.Module) -> None:
    before = _n(resnet18)
    x = torch.randn(2, 3, 32, 32)
    r = shrink(resnet18, 0.5, select="layer1.0.conv1", example_inputs=x)
    # conv1: 32 filters x 64 in x 3x3 = 18,432; bn1 weight + bias: 2 x 32 = 64;
    # conv2 inputs: 64 out x 32 in x 3x3 = 18,432
    assert r.params_before - r.params_after == 32 * 64 * 9 + 2 * 32 + 64 * 32 * 9 == 36_928
    # bn1 running_mean + running_var: 2 x 32; num_batches_tracked stays
    assert r.buffers_before - r.buffers_after == 64
    assert _n(resnet18) == before  # the caller's model is untouched
    _consistent(r)
    m = r.model
    assert m.layer1[0].conv1.out_channels == 32 and m.layer1[0].conv2.in_channels == 32
    assert m.layer1[0].bn1.running_mean.shape == (32,) and m.layer1[0].bn1.num_features == 32
    assert m.layer1[0].bn1.num_batches_tracked.shape == ()
    assert [g["name"] for g in r.groups] == ["layer1.0.conv1"]
    assert "layer1.0.bn1.running_var[0]" in r.groups[0]["members"]
    assert "layer1.0.conv2.weight[1]" in r.groups[0]["members"]
    assert m(x).shape == (2, 1000)
    assert r.deviation is not None and r.deviation["max_abs"] > 0


def test_resnet18_residual_join_prunes_the_whole_stream(resnet18: nn.Module) -> None:
    r = shrink(resnet18, 0.5, select="layer1.0.conv2")
    # layer1.0.conv2 writes the 64-channel residual stream of layer1, joined with the stem
    # (conv1 -> bn1 -> maxpool) and layer1.1.conv2; 32 of its 64 channels go everywhere:
    written = 32 * 3 * 7 * 7 + 2 * 32 * 64 * 9  # stem conv1; layer1.{0,1}.conv2 outputs
    norms = 3 * 2 * 32  # bn1, layer1.0.bn2, layer1.1.bn2: weight + bias
    read = 2 * 64 * 32 * 9 + 128 * 32 * 9 + 128 * 32  # layer1.{0,1}.conv1, layer2.0.conv1, ds
    assert r.params_before - r.params_after == written + norms + read == 119_584
    assert r.buffers_before - r.buffers_after == 3 * 2 * 32 == 192
    _consistent(r)
    assert sorted(r.groups[0]["producers"]) == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert r.model.conv1.out_channels == 32 and r.model.layer2[0].downsample[0].in_channels == 32
    assert r.model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


def test_resnet18_target_params(resnet18: nn.Module) -> None:
    r = shrink(resnet18, target_params=8_000_000, importance="l2")
    assert r.params_after <= 8_000_000 < r.params_before
    _consistent(r)
    assert r.model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    assert all(g["kept"] >= 1 for g in r.groups)
    # the classifier's 1000 outputs reach the model output: never a unit
    assert r.model.fc.out_features == 1000


# ------------------------------------------------------------------------------ small graphs
class _Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        return self.head(torch.relu(self.bn(y))).mean((2, 3))


def test_concat_offsets() -> None:
    torch.manual_seed(0)
    m = _Cat().eval()
    r = shrink(m, 0.5, select="b")
    # b: 3 of 6 filters (3 x 3 x 1 x 1 = 9) + 3 biases; bn weight + bias: 2 x 3;
    # head reads channels 4..9 of the concatenation: 5 x 3 x 1 x 1 = 15
    assert r.params_before - r.params_after == 9 + 3 + 6 + 15 == 33
    assert r.buffers_before - r.buffers_after == 2 * 3
    _consistent(r)
    assert "head.weight[1]" in r.groups[0]["members"]
    # the kept channels of b are the ones the new head reads, at offsets 4.. (a is whole)
    assert torch.equal(r.model.head.weight[:, :4], m.head.weight[:, :4])
    kept = [i for i in range(6) if any(torch.equal(m.b.weight[i], w) for w in r.model.b.weight)]
    assert len(kept) == 3 and r.model.head.in_channels == 7
    assert torch.equal(r.model.head.weight[:, 4:], m.head.weight[:, [4 + i for i in kept]])
    assert torch.equal(r.model.bn.running_var[4:], m.bn.running_var[[4 + i for i in kept]])
    assert r.model(torch.randn(2, 3, 5, 5)).shape == (2, 5)
    r2 = shrink(m, 0.5, select="a")
    # a: 2 x 3 x 3 x 3 = 54 + 2 biases; bn 2 x 2; head 5 x 2 = 10
    assert r2.params_before - r2.params_after == 54 + 2 + 4 + 10 == 70
    assert r2.refused == []


class _Depthwise(nn.Module):
    def __init__(self, groups: int = 8) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.bn = nn.BatchNorm2d(8)
        self.pw2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(torch.relu(self.bn(self.dw(torch.relu(self.pw1(x))))))


def test_depthwise_passes_through_grouped_refused() -> None:
    torch.manual_seed(0)
    r = shrink(_Depthwise(), 0.5, select=["pw1", "dw"])
    # pw1: 4 x 3 + 4; dw: 4 x 1 x 3 x 3 + 4; bn: 2 x 4; pw2 inputs: 4 x 4
    assert r.params_before - r.params_after == 12 + 4 + 36 + 4 + 8 + 16 == 80
    assert r.buffers_before - r.buffers_after == 8
    _consistent(r)
    assert r.model.dw.groups == r.model.dw.in_channels == r.model.dw.out_channels == 4
    assert [x["name"] for x in r.refused] == ["dw"]  # its channels follow pw1's
    assert r.model(torch.randn(1, 3, 6, 6)).shape == (1, 4, 6, 6)
    g = shrink(_Depthwise(groups=2), 0.5, select="pw1")
    assert g.params_after == g.params_before and g.groups == []
    assert "grouped convolution (groups=2)" in g.refused[0]["reason"]


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 10), nn.ReLU(), nn.Linear(10, 3),
    )  # fmt: skip


def test_flatten_to_linear_blocks() -> None:
    m = _cnn()
    x = torch.randn(2, 1, 8, 8)  # conv -> 6x6, pool -> 3x3: each channel is 9 features
    r = shrink(m, 0.5, select="0", example_inputs=x)
    # conv: 2 filters x 1 x 3 x 3 + 2 biases; Linear inputs: 10 x (2 channels x 9)
    assert r.params_before - r.params_after == 18 + 2 + 10 * 2 * 9 == 200
    _consistent(r)
    assert r.model[4].in_features == 18 and r.model(x).shape == (2, 3)
    # without the shapes the block size is unknown: refused, model unchanged
    r0 = shrink(m, 0.5, select="0")
    assert r0.params_after == r0.params_before
    assert "flatten needs the spatial size" in r0.refused[0]["reason"]


def test_zero_units_removed_exactly() -> None:
    m = _cnn()
    with torch.no_grad():  # filters 0 and 2 write zeros: relu(0) = 0, pool 0, Linear reads 0
        m[0].weight[[0, 2]] = 0
        m[0].bias[[0, 2]] = 0
    x = torch.randn(3, 1, 8, 8)
    r = shrink(m, 0.5, select="0", example_inputs=x)
    assert r.model[0].out_channels == 2
    assert torch.allclose(r.model(x), m(x), atol=1e-6)
    assert r.deviation is not None and r.deviation["max_abs"] < 1e-6
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        mlp[0].weight[:4] = 0
        mlp[0].bias[:4] = 0
    y = torch.randn(5, 4)
    r2 = shrink(mlp, 0.5, unit="neurons", select="0")
    assert torch.allclose(r2.model(y), mlp(y), atol=1e-6)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)
    )


def test_mlp_neurons() -> None:
    m = _mlp()
    r = shrink(m, 0.5, unit="neurons")
    # before: (6*16+16) + (16*12+12) + (12*3+3) = 112 + 204 + 39 = 355
    # after:  (6*8+8) + (8*6+6) + (6*3+3) = 56 + 54 + 21 = 131; the output layer is whole
    assert (r.params_before, r.params_after) == (355, 131)
    _consistent(r)
    assert [g["name"] for g in r.groups] == ["0", "2"]
    assert [(g["kept"], g["total"]) for g in r.groups] == [(8, 16), (6, 12)]
    assert r.refused == []  # "4" writes the model output: left whole, silently
    x = torch.randn(2, 6)
    assert r.model(x).shape == (2, 3)
    with pytest.raises(ArgumentError, match="select"):
        shrink(m, 0.5, unit="neurons", select="nothing*")
    r3 = shrink(m, 0.5, unit="channels", select="0")
    assert "unit='neurons'" in r3.refused[0]["reason"]


def test_tiny_llama_swiglu_neurons() -> None:
    torch.manual_seed(0)
    m = zoo.build(
        "llama-2-7b", vocab_size=50, hidden_size=16, intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    ids = torch.randint(0, 50, (1, 6))
    r = shrink(m, 0.5, unit="neurons", select="*.mlp.gate_proj", example_inputs=ids)
    # per layer: 16 of 32 neurons; gate rows 16 x 16, up rows 16 x 16, down columns 16 x 16
    assert r.params_before - r.params_after == 2 * 3 * 16 * 16 == 1_536
    _consistent(r)
    assert len(r.groups) == 2 and r.groups[0]["members"] == [
        "model.layers.0.mlp.gate_proj.weight[0]",
        "model.layers.0.mlp.up_proj.weight[0]",
        "model.layers.0.mlp.down_proj.weight[1]",
    ]
    assert r.model(ids).shape == (1, 6, 50)
    # the hidden size is the embedding's: o_proj / down_proj outputs are refused
    h = shrink(m, 0.5, unit="neurons", select="*.mlp.down_proj")
    assert h.params_after == h.params_before and len(h.refused) == 2
    assert "fixed width" in h.refused[0]["reason"]


# ------------------------------------------------------------------------------ refusals
class _Viewed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


def test_untraceable_view_refused() -> None:
    m = _Viewed()
    r = shrink(m, 0.5, select="conv", example_inputs=torch.randn(1, 1, 6, 6))
    assert r.params_after == r.params_before == _n(m) and r.groups == []
    assert r.refused[0]["name"] == "conv" and "view" in r.refused[0]["reason"]
    assert r.model(torch.randn(1, 1, 6, 6)).shape == (1, 2)


def test_tied_weights_refused() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    m[2].weight = m[0].weight
    r = shrink(m, 0.5, unit="neurons", select="0")
    assert "tied weight" in r.refused[0]["reason"] and r.params_after == r.params_before


def test_untraceable_model_is_a_target_error() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(TargetError, match=r"torch\.fx cannot trace"):
        shrink(Branchy(), 0.5, unit="neurons")


def test_opaque_submodule_becomes_a_leaf() -> None:
    class Gate(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    m = nn.Sequential(nn.Linear(3, 6), Gate(), nn.Linear(6, 2))
    g = trace_graph(m)
    assert g.leaves == {"1"}
    r = shrink(m, 0.5, unit="neurons", select="0")
    assert "Gate" in r.refused[0]["reason"] and r.params_after == r.params_before


def test_bad_options() -> None:
    m = _mlp()
    with pytest.raises(ArgumentError):
        shrink(m, 1.0, unit="neurons")
    with pytest.raises(ArgumentError):
        shrink(m, 0.5, target_params=10)
    with pytest.raises(ArgumentError):
        shrink(m, 0.5, unit="rows")


# ------------------------------------------------------------------------------ files
def test_saved_shrunk_models_load_and_infer(tmp_path: object) -> None:
    import pathlib

    folder = pathlib.Path(str(tmp_path))
    r = shrink(_mlp(), 0.5, unit="neurons", importance=lambda n, w: float(w.abs().max()))
    path = folder / "mlp.safetensors"
    paramscope.save(r.model, path)
    fresh = shrink(_mlp(), 0.5, unit="neurons").model  # same shapes, other values
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    rep = paramscope.load_into(fresh, path, strict=True)
    assert rep.missing == [] and rep.unexpected == [] and rep.mismatched == []
    x = torch.randn(4, 6)
    assert torch.equal(fresh(x), r.model(x))
    again = paramscope.infer_model(path)
    assert (
        [tuple(p.shape) for p in again.parameters()]
        == [tuple(p.shape) for p in r.model.parameters()]
        == [(8, 6), (8,), (6, 8), (6,), (3, 6), (3,)]
    )
    assert torch.equal(again(x), r.model(x))
    c = shrink(_cnn(), 0.5, select="0", example_inputs=torch.randn(1, 1, 8, 8))
    cpath = folder / "cnn.safetensors"
    paramscope.save(c.model, cpath)
    target = shrink(_cnn(), 0.5, select="0", example_inputs=torch.randn(1, 1, 8, 8)).model
    rep2 = paramscope.load_into(target, cpath, strict=True)
    assert rep2.mismatched == []
    y = torch.randn(2, 1, 8, 8)
    assert torch.equal(target(y), c.model(y))
