"""model_spec: a torch.nn model written as a build spec; build(spec) is the same structure
(names, shapes, module arguments), so the weights saved beside it load strictly and give the
same outputs. Anything that is not a torch.nn layer is refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import paramscope
from paramscope import TargetError


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8, eps=1e-3),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, groups=8, padding=1),  # depthwise
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(8 * 4 * 4, 10),
        nn.LayerNorm(10, elementwise_affine=False),
    )


@pytest.mark.parametrize(
    "make",
    [
        _cnn,
        lambda: nn.Sequential(nn.Linear(5, 7), nn.GELU(approximate="tanh"), nn.Linear(7, 2)),
        lambda: nn.Sequential(
            nn.Embedding(11, 6, padding_idx=0),
            nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 6, bias=False)]),
        ),
        lambda: nn.ModuleDict({"enc": nn.Linear(3, 4), "dec": nn.Sequential(nn.Linear(4, 3))}),
    ],
)
def test_round_trip_same_structure_and_modules(make) -> None:
    torch.manual_seed(0)
    model = make()
    spec = paramscope.model_spec(model)
    assert json.loads(json.dumps(spec)) == spec  # plain JSON
    rebuilt = paramscope.build(spec)
    sd, rd = model.state_dict(), rebuilt.state_dict()
    assert list(sd) == list(rd)
    assert [t.shape for t in sd.values()] == [t.shape for t in rd.values()]
    for (n, a), (_, b) in zip(model.named_modules(), rebuilt.named_modules(), strict=True):
        assert type(a) is type(b), n
        assert a.extra_repr() == b.extra_repr(), n  # every constructor argument read back


def test_weights_beside_the_spec_give_the_same_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    model = _cnn().eval()
    (tmp_path / "spec.json").write_text(json.dumps(paramscope.model_spec(model)))
    paramscope.save(model, tmp_path / "w.safetensors")
    rebuilt = paramscope.build(tmp_path / "spec.json").eval()
    report = paramscope.load_into(rebuilt, tmp_path / "w.safetensors", strict=True)
    assert not report.missing and not report.unexpected
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), rebuilt(x))


def test_defaults_left_out() -> None:
    spec = paramscope.model_spec(nn.Linear(2, 3))
    assert spec == {"type": "Linear", "in_features": 2, "out_features": 3}


def test_non_torch_nn_modules_are_refused_by_name() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

    with pytest.raises(TargetError, match=r"1 is a .*Block, not a torch.nn layer"):
        paramscope.model_spec(nn.Sequential(nn.Linear(2, 2), Block()))
    with pytest.raises(TargetError, match="holds submodules"):
        paramscope.model_spec(nn.TransformerEncoderLayer(8, 2))
