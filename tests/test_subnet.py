"""Sub-networks of a supernet (issue 21): paramscope.compress._subnet.

Oracles: torch (``sum(p.numel())`` of the built sub-network, the supernet run block by block or
with the dropped channels' consumer weights zeroed), transformers (GPT-2 of the kept depth).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from paramscope._errors import ArgumentError, ArgumentTypeError
from paramscope.building import zoo
from paramscope.compress._subnet import count_subnet, subnet, trace_supernet


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 3)
    ).eval()


def _gpt2(layers: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return zoo.build(
        "gpt2", n_layer=layers, n_embd=64, n_head=4, vocab_size=101, n_positions=32
    ).eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    m = zoo.build("resnet50").eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def resnet_graph(resnet: nn.Module):
    return trace_supernet(resnet)


# ------------------------------------------------------------------------ identity
def test_every_block_full_width_is_exact_resnet(resnet: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    small, report = subnet(resnet, example_inputs=x)
    with torch.no_grad():
        assert torch.equal(small(x), resnet(x))
    assert report.params_after == report.params_before == _numel(resnet)
    assert report.deviation == {"max_abs": 0.0, "relative": 0.0}


def test_every_block_full_width_is_exact_gpt2_and_mlp() -> None:
    g = _gpt2()
    ids = torch.randint(0, 101, (2, 9))
    small, _ = subnet(g, depth=[0, 1, 2, 3], width=None)
    with torch.no_grad():
        assert torch.equal(small(ids), g(ids))
    m = _mlp()
    x = torch.randn(5, 12)
    small, _ = subnet(m, width={"0": 1.0, "2": 16}, share=False)
    with torch.no_grad():
        assert torch.equal(small(x), m(x))


# ------------------------------------------------------------------------ depth
def test_gpt2_depth_runs_the_kept_blocks() -> None:
    g = _gpt2()
    ids = torch.randint(0, 101, (2, 9))
    small, report = subnet(g, depth=[0, 2], example_inputs=ids)
    assert len(small.transformer.h) == 2 and small.config.n_layer == 2
    assert g.config.n_layer == 4 and len(g.transformer.h) == 4  # supernet unchanged
    with torch.no_grad():
        t = g.transformer
        h = t.wte(ids) + t.wpe(torch.arange(9))
        for i in (0, 2):
            h = t.h[i](h)
        want = g.lm_head(t.ln_f(h))
        assert torch.equal(small(ids), want)
    assert report.blocks == [{"name": "transformer.h", "kept": [0, 2], "total": 4}]
    assert report.deviation is not None and report.deviation["relative"] > 0


def test_gpt2_depth_count_matches_transformers() -> None:
    import transformers

    g = _gpt2(6)
    for kept in ([0], [1, 4], [0, 2, 3, 5]):
        cfg = transformers.GPT2Config(
            n_layer=len(kept), n_embd=64, n_head=4, vocab_size=101, n_positions=32
        )
        with torch.device("meta"):
            hf = transformers.GPT2LMHeadModel(cfg)
        want = _numel(hf)
        small, report = subnet(g, depth=kept)
        assert report.params_after == _numel(small) == want == count_subnet(g, depth=kept)


def test_resnet_depth_keeps_the_first_block_of_a_stage(resnet, resnet_graph) -> None:
    assert [s[:3] for s in resnet_graph.stacks] == [
        ("layer1", 3, [0]),
        ("layer2", 4, [0]),
        ("layer3", 6, [0]),
        ("layer4", 3, [0]),
    ]
    with pytest.raises(ArgumentError, match="block 0 cannot be left out") as e:
        subnet(resnet, depth={"layer2": [1, 2]})
    assert "\n" not in str(e.value)
    small, _ = subnet(resnet, depth={"layer2": 2, "layer3": [0, 5]})
    assert len(small.layer2) == 2 and len(small.layer3) == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        h = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        h = resnet.layer1(h)
        h = resnet.layer2[1](resnet.layer2[0](h))
        h = resnet.layer3[5](resnet.layer3[0](h))
        h = resnet.layer4(h)
        want = resnet.fc(torch.flatten(resnet.avgpool(h), 1))
        assert torch.allclose(small(x), want, rtol=0, atol=1e-6)


def test_keep_ratio_and_l1_blocks(resnet) -> None:
    small, report = subnet(resnet, keep_ratio=0.5)
    assert [len(s) for s in (small.layer1, small.layer2, small.layer3, small.layer4)] == [
        2,
        2,
        3,
        2,
    ]
    assert report.params_after == _numel(small) == count_subnet(resnet, keep_ratio=0.5)
    g = _gpt2()
    norms = [sum(float(p.detach().abs().sum()) for p in b.parameters()) for b in g.transformer.h]
    best = sorted(sorted(range(4), key=lambda i: -norms[i])[:2])
    _, report = subnet(g, depth=2, importance="l1")
    assert report.blocks[0]["kept"] == best


# ------------------------------------------------------------------------ width
def test_mlp_width_equals_zeroed_consumer_columns() -> None:
    m = _mlp()
    x = torch.randn(7, 12)
    small, report = subnet(m, width={"0": 20, "2": 0.25}, share=False)
    assert (small[0].out_features, small[2].in_features, small[2].out_features) == (20, 20, 4)
    ref = _mlp()
    with torch.no_grad():
        ref[2].weight[:, 20:] = 0
        ref[4].weight[:, 4:] = 0
        assert torch.allclose(small(x), ref(x), atol=1e-6)
    assert report.params_after == _numel(small) == count_subnet(m, width={"0": 20, "2": 0.25})


def test_resnet_width_and_depth_counts_and_runs(resnet, resnet_graph) -> None:
    opts = {
        "depth": {"layer1": 2, "layer3": [0, 2, 4]},
        "width": {"layer*.conv1": 0.5, "layer*.conv2": 0.25, "layer4.*": 0.5},
    }
    small, report = subnet(resnet, **opts)
    assert report.params_after == _numel(small) == count_subnet(resnet_graph, **opts)
    assert small.layer1[0].conv1.out_channels == 32 and small.layer1[0].bn1.num_features == 32
    assert small.layer4[0].conv3.out_channels == 1024 and small.fc.in_features == 1024
    assert small(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_resnet_width_equals_zeroed_inputs(resnet) -> None:
    small, _ = subnet(resnet, width={"layer2.1.conv1": 40})
    ref = zoo.build("resnet50").eval()
    ref.load_state_dict(resnet.state_dict())
    with torch.no_grad():
        ref.layer2[1].conv2.weight[:, 40:] = 0
        x = torch.randn(2, 3, 64, 64)
        assert torch.allclose(small(x), ref(x), rtol=1e-4, atol=1e-5)


def test_l1_width_keeps_the_largest_units() -> None:
    m = _mlp()
    norms = m[0].weight.abs().sum(1)
    keep = sorted(torch.argsort(norms, descending=True)[:8].tolist())
    small, _ = subnet(m, width={"0": 8}, importance="l1", share=False)
    assert torch.equal(small[0].weight, m[0].weight[keep])
    assert torch.equal(small[2].weight, m[2].weight[:, keep])


def test_llama_mlp_width_follows_the_swiglu_join() -> None:
    torch.manual_seed(0)
    m = zoo.build(
        "llama-2-7b",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    ).eval()
    opts = {"depth": [0, 2], "width": {"*.mlp.gate_proj": 48}}
    small, report = subnet(m, **opts)
    mlp = small.model.layers[1].mlp
    assert (mlp.gate_proj.out_features, mlp.up_proj.out_features, mlp.down_proj.in_features) == (
        48,
        48,
        48,
    )
    assert report.params_after == _numel(small) == count_subnet(m, **opts)
    assert small(torch.randint(0, 100, (1, 5))).shape[-1] == 100


@settings(max_examples=25, deadline=None)
@given(
    keep=st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True),
    w1=st.integers(1, 64),
    ratio=st.floats(0.01, 1.0),
)
def test_counts_equal_built_counts_generated(keep, w1, ratio) -> None:
    torch.manual_seed(0)
    g = zoo.build(
        "llama-2-7b",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
    )
    opts = {"depth": keep, "width": {"*.layers.[024].mlp.up_proj": w1, "*.1.*": ratio}}
    small, report = subnet(g, **opts)
    assert report.params_after == _numel(small) == count_subnet(g, **opts)
    assert small(torch.randint(0, 50, (1, 4))).shape == (1, 4, 50)


# ------------------------------------------------------------------------ sharing
def test_sharing_is_real_with_share_true_only(resnet) -> None:
    opts = {"depth": {"layer3": 3}, "width": {"layer3.*.conv1": 0.5}}
    shared, r1 = subnet(resnet, **opts)
    copied, r2 = subnet(resnet, share=False, **opts)
    assert r1.shared and not r2.shared
    a, b = shared.layer3[1].conv1.weight, copied.layer3[1].conv1.weight
    assert torch.equal(a, b)
    before = b.clone()
    with torch.no_grad():
        resnet.layer3[1].conv1.weight.mul_(2)
        resnet.layer3[1].bn1.running_mean.add_(1)
    try:
        assert torch.equal(a, resnet.layer3[1].conv1.weight[:128])
        assert torch.equal(
            shared.layer3[1].bn1.running_mean, resnet.layer3[1].bn1.running_mean[:128]
        )
        assert torch.equal(b, before)
        ptrs = {p.untyped_storage().data_ptr() for p in resnet.parameters()}
        assert all(p.untyped_storage().data_ptr() in ptrs for p in shared.parameters())
        assert not any(p.untyped_storage().data_ptr() in ptrs for p in copied.parameters())
    finally:
        with torch.no_grad():
            resnet.layer3[1].conv1.weight.div_(2)
            resnet.layer3[1].bn1.running_mean.sub_(1)


def test_sharing_gpt2_keeps_the_tie() -> None:
    g = _gpt2()
    small, _ = subnet(g, depth=[1, 3])
    assert small.lm_head.weight is small.transformer.wte.weight
    with torch.no_grad():
        g.transformer.h[3].mlp.c_fc.weight.zero_()
    assert not small.transformer.h[1].mlp.c_fc.weight.any()


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": {"nope*": 0.5}}, "matches no layer whose outputs can be narrowed"),
        ({"width": {"4": 0.5}}, "4 cannot narrow: reaches the model output"),
        ({"width": {"0": 1.5}}, "expected a ratio in \\(0, 1\\] or a unit count"),
        ({"width": {"0": 0.0}}, "expected a ratio"),
        ({"width": {"0": 33}}, "has 32 units; expected 1..32"),
        ({"width": {"0": True}}, "expected a ratio"),
        ({"width": {"0": 0.5}, "importance": "l1"}, "share=True with width needs"),
        ({"importance": "max"}, "importance='max'"),
        ({"keep_ratio": 0.5}, "has no stack of blocks"),
        ({"depth": [0]}, "needs one block stack; the model has 0"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(ArgumentError, match=message) as e:
        subnet(_mlp(), **kwargs)
    assert "\n" not in str(e.value)


def test_bad_depth_and_types(resnet_graph) -> None:
    cases = [
        ({"depth": [0, 1]}, "needs one block stack; the model has 4"),
        ({"depth": {"layer9": 1}}, "matches no block stack; expected one of 'layer1'"),
        ({"depth": {"layer1": [0, 3]}}, "distinct block indices in 0..2"),
        ({"depth": {"layer1": [0, 0]}}, "distinct block indices"),
        ({"depth": {"layer1": 0}}, "expected 1..3"),
        ({"depth": {"layer1": 1}, "keep_ratio": 0.5}, "not both"),
        ({"keep_ratio": 2}, "0 < keep_ratio <= 1"),
        ({"width": {"layer1.0.conv3": 100, "layer1.1.conv3": 50}}, "write one joined space"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ArgumentError, match=message) as e:
            count_subnet(resnet_graph, **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(ArgumentTypeError, match=r"expected a torch\.nn\.Module"):
        subnet("resnet50")  # type: ignore[arg-type]


def test_concatenated_channels_cannot_be_views() -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)
            self.out = nn.Linear(12, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.cat([self.a(x), self.b(x)], dim=-1))

    m = Cat()
    with pytest.raises(ArgumentError, match=r"out\.weight keeps entries that are not one run"):
        subnet(m, width={"a": 3})
    small, report = subnet(m, width={"a": 3}, share=False)
    x = torch.randn(3, 4)
    with torch.no_grad():
        m.out.weight[:, 3:6] = 0
        assert torch.allclose(small(x), m(x), atol=1e-6)
    assert report.params_after == _numel(small) == count_subnet(m, width={"a": 3})


def test_report_text_and_dict(resnet) -> None:
    _, report = subnet(resnet, depth={"layer1": 2}, width={"layer1.*.conv2": 16})
    text = report.to_text()
    assert text.startswith("subnet [order, views]: 25,557,032 -> ")
    assert "blocks layer1: 2/3 kept [0, 1]" in text
    assert "width layer1.0.conv2: 16/64" in text and "layer1.2.conv2" not in text
    d = report.to_dict()
    assert "model" not in d and d["params_removed"] == d["params_before"] - d["params_after"]


# ------------------------------------------------------------------------ CLI
def test_cli_writes_checkpoint_and_spec(cli, tmp_path, monkeypatch) -> None:
    import json

    import paramscope
    from paramscope.lifecycle import load_into

    monkeypatch.chdir(tmp_path)
    code, out, err = cli(
        "subnet",
        "zoo:mlp",
        "--width",
        "0=0.5",
        "--width",
        "2=32",
        "-o",
        "s.safetensors",
        "--spec",
        "s.json",
        "--input-shape",
        "2,784",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    torch.manual_seed(0)
    sup = zoo.build("mlp").eval()
    small = paramscope.build("s.json")
    load_into(small, "s.safetensors", strict=True)
    assert d["params_after"] == _numel(small) == count_subnet(sup, width={"0": 0.5, "2": 32})
    assert [w["kept"] for w in d["widths"]] == [128, 32]
    assert (small[0].out_features, small[2].out_features) == (128, 32)


def test_cli_depth_forms_and_errors(cli) -> None:
    code, out, _ = cli("subnet", "zoo:resnet50", "--depth", "layer1=0,2", "--depth", "layer3=2")
    assert code == 0 and "blocks layer1: 2/3 kept [0, 2]" in out
    assert "blocks layer3: 2/6 kept [0, 1]" in out
    code, out, _ = cli("subnet", "zoo:gpt2", "--arg", "n_layer=4", "--depth", "1,3", "--json")
    assert code == 0
    import json

    assert json.loads(out)["blocks"] == [{"name": "transformer.h", "kept": [1, 3], "total": 4}]
    for args, needle in [
        (("--depth", "layer1=0"), "subnet: depth layer1: 0 blocks: expected 1..3"),
        (("--width", "layer*.conv1=x"), "--width layer*.conv1: 'x': expected a count"),
        (("--width", "nothing"), "--width 'nothing': expected GLOB=RATIO"),
        (("--depth", "layer1=a,b"), "expected block indices such as layer1=0,2,4"),
    ]:
        code, out, err = cli("subnet", "zoo:resnet50", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_callable_importance_for_units_and_blocks() -> None:
    m = _mlp()
    seen: list[str] = []

    def last_units(name: str, w: torch.Tensor) -> float:  # f(name, weight_slice)
        seen.append(name)
        return float(w.sum())

    sums = m[0].weight.sum(1)
    keep = sorted(torch.argsort(sums, descending=True)[:5].tolist())
    small, report = subnet(m, width={"0": 5}, importance=last_units, share=False)
    assert torch.equal(small[0].bias, m[0].bias[keep]) and set(seen) == {"0"}
    assert report.importance == "last_units"
    g = _gpt2()
    _, report = subnet(g, depth=2, importance=lambda stack, i, tensors: float(i))
    assert report.blocks[0]["kept"] == [2, 3]
