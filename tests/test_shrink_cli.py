"""``paramscope shrink``: a model TARGET (zoo, or an MLP/CNN checkpoint rebuilt by
infer_model) shrunk into a smaller checkpoint, with the architecture as a build spec; exact
counts in ``--json``; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import paramscope


@pytest.fixture
def mlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    paramscope.save(model, "mlp.safetensors")
    return model


def test_resnet18_half_of_layer1_0_conv1(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli(
        "shrink",
        "zoo:resnet18",
        "--amount",
        "0.5",
        "--select",
        "layer1.0.conv1",
        "--input-shape",
        "1,3,32,32",
        "-o",
        "small.safetensors",
        "--json",
    )
    assert r.code == 0, r
    d = json.loads(r.out)
    # conv1: 32 out channels x 64 in x 3 x 3 = 18,432; bn1: 32 weight + 32 bias = 64;
    # conv2: 64 out x 32 in x 3 x 3 = 18,432 -> 36,928; buffers: bn1 running mean/var 2 x 32
    assert d["params_removed"] == 18_432 + 64 + 18_432 == 36_928
    assert d["buffers_removed"] == 64
    counted = paramscope.count("small.safetensors")
    assert counted.total == d["params_after"] + d["buffers_after"]


def test_checkpoint_target_with_spec_rebuilds(cli, mlp, tmp_path: Path) -> None:
    r = cli(
        "shrink",
        "mlp.safetensors",
        "--amount",
        "0.5",
        "--unit",
        "neurons",
        "--input-shape",
        "4,8",
        "-o",
        "small.safetensors",
        "--spec",
        "small.json",
        "--json",
    )
    assert r.code == 0, r
    d = json.loads(r.out)
    # both hidden layers keep 8 of 16 neurons: Linear(8, 16) -> (8, 8), Linear(16, 16) ->
    # (8, 8), Linear(16, 3) -> (8, 3); each Linear has in x out weights + out biases
    before = 8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
    after = 8 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3
    assert (d["params_before"], d["params_after"]) == (before, after)
    rebuilt = paramscope.build(tmp_path / "small.json")
    report = paramscope.load_into(rebuilt, tmp_path / "small.safetensors", strict=True)
    assert not report.missing and not report.unexpected
    lib = paramscope.shrink(paramscope.infer_model("mlp.safetensors"), 0.5, unit="neurons")
    x = torch.randn(5, 8)
    assert torch.allclose(rebuilt(x), lib.model(x), atol=1e-6)
    assert sum(p.numel() for p in rebuilt.parameters()) == after


def test_bad_input_exits_2_and_writes_nothing(cli, mlp, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, needle in [
        (("mlp.safetensors", "--amount", "0.5", "--target-params", "10"), "exactly one"),
        (("mlp.safetensors", "--amount", "0.5", "--unit", "rows"), "rows"),
        (
            ("zoo:mlp-3-5-2", "--amount", "0.5", "--unit", "neurons", "--spec", "s.json"),
            "not a torch.nn layer",
        ),
        (("nope.safetensors", "--amount", "0.5"), "nope.safetensors"),
    ]:
        r = cli("shrink", *args, "-o", "out.safetensors")
        assert r.code == 2, (args, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, r.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_shrunk_cnn_is_rebuilt_from_its_file_alone(tmp_path: Path) -> None:
    """Channels through a flatten into the Linear: the file of the smaller CNN is enough for
    infer_model to rebuild it (same outputs), and its counts follow the formula."""
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )  # fmt: skip
    r = paramscope.shrink(cnn, 0.5, unit="channels", example_inputs=torch.randn(1, 1, 8, 8))
    # conv 1->4 (4*9+4), conv 4->8 (8*4*9+8), Linear over 8 channels x 4 x 4 (10*128+10)
    assert r.params_after == (4 * 9 + 4) + (8 * 4 * 9 + 8) + (10 * 8 * 4 * 4 + 10) == 1626
    paramscope.save(r.model, tmp_path / "small.safetensors")
    rebuilt = paramscope.infer_model(tmp_path / "small.safetensors", input_shape=(1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(rebuilt(x), r.model(x), atol=1e-6)


def test_vit_mlp_neurons_run_and_count() -> None:
    """A pruned ViT runs: half of every block's MLP neurons go (mlp.0 rows and bias, mlp.3
    columns), the classifier made non-zero so the deviation is a real number."""
    from paramscope.building import zoo

    torch.manual_seed(0)
    vit = zoo.build("vit-b-16", image_size=32, patch_size=8, num_layers=2, num_heads=2,
                    hidden_dim=16, mlp_dim=32, num_classes=5)  # fmt: skip
    with torch.no_grad():
        vit.heads.head.weight.normal_()
    x = torch.randn(2, 3, 32, 32)
    r = paramscope.shrink(vit.eval(), 0.5, unit="neurons", select="*.mlp.0", example_inputs=x)
    # per block: mlp.0 loses 16 rows of 16 + 16 biases, mlp.3 loses 16 columns of 16
    assert r.params_before - r.params_after == 2 * (16 * 16 + 16 + 16 * 16)
    assert r.params_after == sum(p.numel() for p in r.model.parameters())
    assert r.model(x).shape == (2, 5)
    assert r.deviation is not None and r.deviation["max_abs"] > 0
