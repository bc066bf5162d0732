"""infer_model: rebuild runnable stacks from bare state dicts; refuse what it cannot infer.

The oracle is the original torch model: the rebuilt one must hold the same tensors under the
same names and compute the same outputs on the same input.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import paramscope
from paramscope import ParamDict, ParamscopeError
from paramscope.building import InferError, infer_model, zoo


def same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(state)
    for name, t in state.items():
        assert got[name].dtype == t.dtype, name
        assert torch.equal(got[name], t), name


def randomise_bn_stats(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)


# ------------------------------------------------------------------------ Linear stacks
def test_seed_dynamic_model():
    torch.manual_seed(0)
    state = {"fc1.weight": torch.randn(10, 20), "fc1.bias": torch.zeros(10)}
    model = infer_model(state)
    assert isinstance(model, nn.Sequential)
    assert model(torch.randn(1, 20)).shape == (1, 10)
    same_state(model, state)
    x = torch.randn(4, 20)
    assert torch.allclose(model(x), x @ state["fc1.weight"].T + state["fc1.bias"])


def test_three_layer_mlp_round_trips_through_a_file(tmp_path):
    torch.manual_seed(1)
    original = nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    path = paramscope.save(original, tmp_path / "mlp.safetensors")
    for source in (original.state_dict(), ParamDict.from_module(original), path, str(path)):
        model = infer_model(source)
        assert [type(m).__name__ for m in model] == ["Linear", "ReLU"] * 2 + ["Linear"]
        same_state(model, original.state_dict())
        x = torch.randn(5, 12)
        assert torch.equal(model(x), original(x))


def test_zoo_mlp_round_trips():
    original = zoo.build("mlp")
    model = infer_model(original.state_dict())
    x = torch.randn(2, 784)
    assert torch.equal(model(x), original(x))


def test_module_names_get_activations_between_layers():
    torch.manual_seed(2)
    original = zoo.build("mlp-3-5-2")  # modules hidden, relu, output
    model = infer_model(original.state_dict())
    assert [n for n, _ in model.named_children()] == ["hidden", "act1", "output"]
    same_state(model, original.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(model(x), original(x))


def test_fc_names_like_the_brief():
    original = nn.Sequential(
        OrderedDict(
            [("fc1", nn.Linear(6, 4)), ("act", nn.Tanh()), ("fc2", nn.Linear(4, 2, bias=False))]
        )
    )
    model = infer_model(original.state_dict(), activation="Tanh")
    assert [n for n, _ in model.named_children()] == ["fc1", "act1", "fc2"]
    assert isinstance(model.act1, nn.Tanh) and model.fc2.bias is None
    x = torch.randn(3, 6)
    assert torch.equal(model(x), original(x))


def test_index_gaps_become_activation_then_identity():
    original = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.GELU(), nn.Dropout(0.5), nn.Linear(8, 8), nn.Linear(8, 2)
    ).eval()
    model = infer_model(original.state_dict(), activation="GELU").eval()
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "Linear", "GELU", "Identity", "Linear", "Linear"]
    x = torch.randn(2, 4, 4)
    assert torch.equal(model(x), original(x))


def test_input_shape_flattens_a_linear_stack():
    state = {"fc.weight": torch.randn(3, 784)}
    model = infer_model(state, input_shape=(1, 28, 28))
    assert [n for n, _ in model.named_children()] == ["flatten", "fc"]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_activation_none_and_callable():
    state = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).state_dict()
    assert isinstance(infer_model(state, activation=None)[1], nn.Identity)
    assert isinstance(infer_model(state, activation=lambda: nn.LeakyReLU(0.2))[1], nn.LeakyReLU)


def test_copy_or_share_storage():
    state = {"0.weight": torch.randn(3, 2), "0.bias": torch.randn(3)}
    copied = infer_model(state)
    shared = infer_model(state, copy=False)
    assert copied[0].weight.data_ptr() != state["0.weight"].data_ptr()
    assert shared[0].weight.data_ptr() == state["0.weight"].data_ptr()
    assert isinstance(shared[0].weight, nn.Parameter) and shared[0].weight.requires_grad


def test_dtype_is_kept():
    state = {"0.weight": torch.randn(3, 2, dtype=torch.float64)}
    model = infer_model(state)
    assert model[0].weight.dtype is torch.float64
    assert model(torch.randn(1, 2, dtype=torch.float64)).dtype is torch.float64


# -------------------------------------------------------------------------- Conv stacks
def conv_net() -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, (3, 2), groups=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 6 * 7, 10),
        nn.ReLU(),
        nn.Linear(10, 3),
    )
    randomise_bn_stats(net)
    return net.eval()


def test_conv_bn_relu_linear_with_input_shape():
    original = conv_net()
    model = infer_model(original.state_dict(), input_shape=(3, 10, 10)).eval()
    kinds = [type(m).__name__ for m in model]
    assert kinds == [
        "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Flatten",
        "Linear", "ReLU", "Linear",
    ]  # fmt: skip
    assert model[3].groups == 2 and model[3].kernel_size == (3, 2)
    same_state(model, original.state_dict())
    x = torch.randn(2, 3, 10, 10)
    assert torch.allclose(model(x), original(x), atol=1e-6)


def test_conv_flatten_to_a_fixed_pool_size():
    original = conv_net()
    model = infer_model(original.state_dict(), flatten=(6, 7)).eval()
    assert isinstance(model[6], nn.AdaptiveAvgPool2d) and model[6].output_size == (6, 7)
    assert isinstance(model.flatten, nn.Flatten)
    x = torch.randn(1, 3, 10, 10)  # 6 x 7 maps: the pool is the identity here
    assert torch.allclose(model(x), original(x), atol=1e-6)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)  # any size runs


def test_global_pool_when_features_equal_channels():
    torch.manual_seed(4)
    original = nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 4, 3, bias=False)),
                ("bn1", nn.BatchNorm2d(4)),
                ("relu", nn.ReLU()),
                ("conv2", nn.Conv2d(4, 8, 3)),
                ("relu2", nn.ReLU()),
                ("pool", nn.AdaptiveAvgPool2d((1, 1))),
                ("flat", nn.Flatten()),
                ("fc", nn.Linear(8, 2)),
            ]
        )
    )
    randomise_bn_stats(original)
    original.eval()
    model = infer_model(original.state_dict()).eval()
    assert [n for n, _ in model.named_children()] == [
        "conv1", "bn1", "act1", "conv2", "act2", "pool", "flatten", "fc",
    ]  # fmt: skip
    same_state(model, original.state_dict())
    x = torch.randn(3, 1, 12, 12)
    assert torch.allclose(model(x), original(x), atol=1e-6)


def test_batchnorm1d_between_linear_layers():
    original = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    randomise_bn_stats(original)
    original.eval()
    model = infer_model(original.state_dict()).eval()
    assert isinstance(model[1], nn.BatchNorm1d)
    x = torch.randn(5, 4)
    assert torch.allclose(model(x), original(x), atol=1e-6)


# ------------------------------------------------------------------------------- errors
def t(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


BN = {
    "bn.weight": t(4),
    "bn.bias": t(4),
    "bn.running_mean": t(4),
    "bn.running_var": t(4),
    "bn.num_batches_tracked": torch.tensor(0),
}

ERRORS = [
    (
        nn.Sequential(nn.MultiheadAttention(8, 2)).state_dict(),
        {},
        "'0.in_proj_weight': unknown entry kind 'in_proj_weight' (attention, embedding or "
        "custom layers are not inferred); expected weight, bias, running_mean, running_var or "
        "num_batches_tracked",
    ),
    (
        {"0.weight": t(8, 4), "2.weight": t(3, 9)},
        {},
        "'2.weight': has in_features 9 but the previous layer '0' gives 8 outputs",
    ),
    (
        nn.Sequential(nn.Conv1d(4, 8, 3)).state_dict(),
        {},
        "'0.weight': 3-D weight (8, 4, 3) (Conv1d?); infer_model rebuilds Linear (2-D weight), "
        "Conv2d (4-D weight) and BatchNorm (with running stats) layers only",
    ),
    (
        {"0.weight": t(4, 4), "0.scale": t(4)},
        {},
        "'0.scale': unknown entry kind 'scale' (attention, embedding or custom layers are not "
        "inferred); expected weight, bias, running_mean, running_var or num_batches_tracked",
    ),
    (
        {"encoder.0.weight": t(4, 4)},
        {},
        "'encoder.0.weight': is nested (module path with dots); infer_model rebuilds flat "
        "stacks whose names look like '0.weight' or 'fc1.weight'",
    ),
    (
        {"weight": t(4, 4)},
        {},
        "'weight': has no module prefix; infer_model rebuilds nn.Sequential stacks whose names "
        "look like '0.weight' or 'fc1.weight'",
    ),
    ({"fc.bias": t(4)}, {}, "'fc.bias': has no matching 'fc.weight'"),
    (
        {"fc.weight": t(4, 2), "fc.bias": t(3)},
        {},
        "'fc.bias': expected shape (4,) to match the weight, got (3,)",
    ),
    (
        {"ln.weight": t(4), "ln.bias": t(4)},
        {},
        "'ln.weight': 1-D weight (4,) (LayerNorm, GroupNorm or a BatchNorm without running stats: "
        "ambiguous); infer_model rebuilds Linear (2-D weight), Conv2d (4-D weight) and BatchNorm "
        "(with running stats) layers only",
    ),
    (
        {k: v for k, v in BN.items() if k != "bn.num_batches_tracked"},
        {},
        "'bn.weight': BatchNorm layer 'bn' lacks 'bn.num_batches_tracked'; a BatchNorm state "
        "holds running_mean, running_var and num_batches_tracked (add torch.tensor(0) for an "
        "old checkpoint without the counter)",
    ),
    (
        {"fc.weight": t(4, 2), **BN, "head.weight": t(2, 5)},
        {},
        "'head.weight': has in_features 5 but the previous layer 'bn' gives 4 outputs",
    ),
    (
        {
            "c.weight": t(8, 3, 3, 3),
            "bn.running_mean": t(4),
            "bn.running_var": t(4),
            "bn.num_batches_tracked": torch.tensor(0),
        },
        {},
        "'bn.running_mean': normalises 4 features but the previous layer 'c' gives 8",
    ),
    (
        {"fc.weight": t(4, 2), "c.weight": t(8, 4, 3, 3)},
        {},
        "'c.weight': a Conv2d after a Linear layer; infer_model rebuilds Conv2d stacks followed "
        "by Linear layers, not the reverse",
    ),
    (
        {"c1.weight": t(8, 3, 3, 3), "c2.weight": t(6, 3, 3, 3)},
        {},
        "'c2.weight': takes 3 input channels per group, which does not divide the 8 channels "
        "of the previous layer 'c1'",
    ),
    (
        {"c1.weight": t(8, 3, 3, 3)},
        {"input_shape": (4, 9, 9)},
        "'c1.weight': takes 3 input channels per group, which does not divide the 4 channels "
        "of input_shape",
    ),
    (
        {"c.weight": t(16, 3, 3, 3), "fc.weight": t(10, 256)},
        {},
        "'fc.weight': the Linear layer takes 256 features but the last Conv2d ('c') gives 16 "
        "channels: the flattened size 16 x H x W depends on the input image size, which the "
        "weights do not record. Pass input_shape=(C, H, W) to compute it, or flatten=(h, w) "
        "with h * w = 16 to insert AdaptiveAvgPool2d((h, w)) before Flatten",
    ),
    (
        {"c.weight": t(16, 3, 3, 3), "fc.weight": t(10, 250)},
        {},
        "'fc.weight': has in_features 250, not a multiple of the 16 channels of the previous "
        "layer 'c', so no flattening of its feature maps fits",
    ),
    (
        {"c.weight": t(16, 3, 3, 3), "fc.weight": t(10, 256)},
        {"input_shape": (3, 8, 8)},
        "'fc.weight': has in_features 256 but flattening the 16 x 6 x 6 feature maps of "
        "input_shape=(3, 8, 8) gives 576 (convolutions are rebuilt with stride 1, padding 0); "
        "pass flatten=(h, w) with h * w = 16 to pool to a fixed size instead",
    ),
    (
        {"c.weight": t(16, 3, 3, 3), "fc.weight": t(10, 256)},
        {"flatten": (4, 5)},
        "'fc.weight': flatten=(4, 5) gives 16 x 4 x 5 = 320 features but the Linear layer "
        "takes 256",
    ),
    (
        {"c.weight": t(16, 3, 3, 3), "fc.weight": t(10, 256)},
        {"flatten": "pool"},
        "'fc.weight': flatten='pool' gives 16 features but the Linear layer takes 256",
    ),
    (
        {"c.weight": t(4, 3, 5, 5)},
        {"input_shape": (3, 4, 4)},
        "'c.weight': a 5x5 kernel does not fit the 4x4 feature map (input_shape=(3, 4, 4); "
        "convolutions are rebuilt with stride 1, padding 0)",
    ),
    (
        {"c.weight": t(4, 3, 3, 3)},
        {"input_shape": (3, 9)},
        "'c.weight': a Conv2d stack takes input_shape=(C, H, W), got (3, 9)",
    ),
    (
        {"fc.weight": t(4, 10)},
        {"input_shape": (1, 3, 3)},
        "'fc.weight': has in_features 10 but input_shape=(1, 3, 3) has 9",
    ),
    ({"fc.weight": [[1.0]]}, {}, "'fc.weight': expected a tensor, got list"),
    ({}, {}, "the state dict is empty: nothing to infer a model from"),
    (
        {"fc.weight": t(2, 2)},
        {"flatten": "squash"},
        "flatten='squash': expected 'auto', 'flatten', 'pool' or (h, w) positive ints",
    ),
    (
        {"fc.weight": t(2, 2)},
        {"input_shape": (0, 2)},
        "input_shape=(0, 2): expected positive sizes",
    ),
    (
        {"fc.weight": t(2, 2)},
        {"activation": "Relu"},
        'activation: unknown layer type "Relu"; did you mean "ReLU"',
    ),
    (
        {"fc.weight": t(2, 2)},
        {"activation": "PReLU"},
        "activation='PReLU': expected a parameter-free torch.nn module (ReLU, GELU, Tanh ...) "
        "so the state dict keys stay the input's",
    ),
]


@pytest.mark.parametrize(("state", "kwargs", "message"), ERRORS, ids=[m[:40] for *_, m in ERRORS])
def test_errors_name_the_first_breaking_entry(state, kwargs, message):
    with pytest.raises(InferError) as err:
        infer_model(state, **kwargs)
    if message.endswith('"ReLU"'):  # difflib may add more suggestions
        assert str(err.value).startswith(message)
    else:
        assert str(err.value) == message
    assert isinstance(err.value, ParamscopeError)


def test_not_a_state_dict():
    with pytest.raises(InferError, match="expected a state dict, a ParamDict or a checkpoint"):
        infer_model(42)  # type: ignore[arg-type]
