"""build(spec): layers, containers, repeat, reuse, ties, init/load/freeze, files, errors.

The oracles are torch itself (the same modules built by hand from the same seed give the same
tensors), ``sum(p.numel() for p in model.parameters())`` for counts, and exact error texts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import paramscope
from _helpers import without_torch
from paramscope import ParamscopeError, SourceNotFoundError
from paramscope.building import (
    BuildResult,
    SpecError,
    SpecModule,
    build,
    build_with_report,
    read_spec,
)

DATA = Path(__file__).parent / "data" / "specs"


def lin(i: int, o: int, **extra) -> dict:
    return {"type": "Linear", "args": [i, o], **extra}


D2L = {
    "type": "Sequential",
    "layers": [
        lin(4, 8),
        {"type": "ReLU"},
        lin(8, 8, name="shared"),
        {"type": "ReLU"},
        {"ref": "shared"},
        {"type": "ReLU"},
        lin(8, 1),
    ],
}


def unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------ layers
def test_d2l_shared_layer_is_one_instance_counted_once():
    model = build({**D2L, "seed": 0})
    assert isinstance(model, nn.Sequential) and len(model) == 7
    assert model[2] is model[4]
    assert model[2].weight is model[4].weight and model[2].bias is model[4].bias
    assert unique_params(model) == (4 * 8 + 8) + (8 * 8 + 8) + (8 + 1) == 121
    assert paramscope.count(model).params == 121
    assert model(torch.randn(2, 4)).shape == (2, 1)


def test_seeded_build_equals_the_same_modules_built_by_hand():
    torch.manual_seed(0)
    first, shared, last = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 1)
    ref = nn.Sequential(first, nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), last)
    model = build({**D2L, "seed": 0})
    x = torch.randn(3, 4)
    assert model.state_dict().keys() == ref.state_dict().keys()
    for name, t in ref.state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name
    assert torch.equal(model(x), ref(x))


def test_seed_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build({**D2L, "seed": 7})
    assert torch.equal(torch.rand(3), expected)


def test_inline_kwargs_and_kwargs_object_and_tuples():
    model = build(
        {
            "type": "Sequential",
            "layers": [
                {"type": "Conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": [3, 5]},
                {"type": "BatchNorm2d", "kwargs": {"num_features": 8, "momentum": None}},
                {"type": "nn.ReLU", "inplace": True},
                {"type": "torch.nn.AdaptiveAvgPool2d", "args": [[1, 1]]},
                {"type": "Flatten"},
                {"type": "Linear", "in_features": 8, "out_features": 4, "bias": False},
            ],
        }
    )
    assert model[0].kernel_size == (3, 5)
    assert model[1].momentum is None
    assert model[5].bias is None
    assert model(torch.randn(2, 3, 9, 9)).shape == (2, 4)


def test_dtype_string_becomes_torch_dtype():
    model = build({"type": "Linear", "args": [3, 2], "dtype": "float16"})
    assert model.weight.dtype is torch.float16


def test_layer_valued_argument_is_built():
    model = build(
        {
            "type": "TransformerEncoder",
            "encoder_layer": {
                "type": "TransformerEncoderLayer",
                "d_model": 8,
                "nhead": 2,
                "dim_feedforward": 16,
                "batch_first": True,
            },
            "num_layers": 2,
            "enable_nested_tensor": False,
        }
    )
    assert len(model.layers) == 2
    assert model.layers[0] is not model.layers[1]  # torch deep-copies the template
    assert model(torch.randn(2, 5, 8)).shape == (2, 5, 8)


# ------------------------------------------------------------------------------ repeat
def test_repeat_makes_fresh_copies():
    model = build(
        {
            "type": "Sequential",
            "seed": 0,
            "layers": [
                lin(4, 8),
                {"repeat": 3, "layer": lin(8, 8)},
                {"repeat": 2, "layers": [{"type": "ReLU"}, lin(8, 8)]},
                lin(8, 2),
            ],
        }
    )
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear"] * 4 + ["ReLU", "Linear", "ReLU", "Linear", "Linear"]
    copies = [model[1], model[2], model[3], model[5], model[7]]
    assert len({id(m) for m in copies}) == 5
    assert len({id(m.weight) for m in copies}) == 5
    assert not torch.equal(model[1].weight, model[2].weight)
    assert unique_params(model) == 40 + 5 * 72 + 18
    assert model(torch.randn(1, 4)).shape == (1, 2)


def test_ref_inside_repeat_reuses_the_named_layer():
    model = build(
        {
            "type": "Sequential",
            "layers": [lin(8, 8, name="w"), {"repeat": 3, "layer": {"ref": "w"}}],
        }
    )
    assert model[0] is model[1] is model[2] is model[3]
    assert paramscope.count(model).params == 72


# --------------------------------------------------------------------------- containers
def test_named_children_with_forward_order():
    spec = {
        "type": "Module",
        "children": {
            "encoder": {"type": "Sequential", "layers": [lin(6, 16), {"type": "Tanh"}]},
            "head": lin(16, 3),
        },
        "forward": ["encoder", "head"],
    }
    model = build(spec)
    assert isinstance(model, SpecModule)
    assert [n for n, _ in model.named_children()] == ["encoder", "head"]
    assert set(model.state_dict()) == {
        "encoder.0.weight",
        "encoder.0.bias",
        "head.weight",
        "head.bias",
    }
    x = torch.randn(5, 6)
    assert torch.equal(model(x), model.head(model.encoder(x)))
    assert "forward=['encoder', 'head']" in repr(model)


def test_module_without_forward_order_raises_when_called():
    model = build({"type": "Module", "children": {"a": lin(2, 2)}})
    with pytest.raises(SpecError) as err:
        model(torch.zeros(1, 2))
    assert str(err.value) == (
        "forward: this Module (children ['a']) has no forward order; "
        'add "forward": [child names] to its spec to make it callable'
    )


def test_named_sequential_moduledict_modulelist():
    model = build(
        {
            "type": "Module",
            "children": {
                "seq": {
                    "type": "Sequential",
                    "layers": {"fc1": lin(2, 3), "act": {"type": "ReLU"}},
                },
                "dict": {"type": "ModuleDict", "children": {"a": lin(3, 3)}},
                "list": {"type": "ModuleList", "layers": [{"repeat": 2, "layer": lin(3, 3)}]},
            },
        }
    )
    assert list(model.seq.state_dict()) == ["fc1.weight", "fc1.bias"]
    assert isinstance(model.dict, nn.ModuleDict) and isinstance(model.list, nn.ModuleList)
    assert len(model.list) == 2


def test_spec_module_pickles():
    import pickle

    model = build({"type": "Module", "children": {"a": lin(2, 2)}, "forward": ["a"]})
    again = pickle.loads(pickle.dumps(model))
    assert type(again) is type(model)
    assert torch.equal(again(torch.ones(1, 2)), model(torch.ones(1, 2)))


# --------------------------------------------------------------------------------- ties
TIED = {
    "type": "Module",
    "children": {
        "embed": {"type": "Embedding", "args": [10, 8]},
        "head": {"type": "Linear", "args": [8, 10], "bias": False},
    },
    "forward": ["embed", "head"],
    "tie": [["head.weight", "embed.weight"]],
    "seed": 3,
}


def test_tie_makes_one_parameter_counted_once_with_summed_gradient():
    model = build(TIED)
    assert model.head.weight is model.embed.weight
    assert unique_params(model) == 80
    assert paramscope.count(model).params == 80

    # Oracle: the same computation with two separate copies; the tied gradient is their sum.
    w_embed = model.embed.weight.detach().clone().requires_grad_()
    w_head = model.embed.weight.detach().clone().requires_grad_()
    idx = torch.tensor([[1, 2, 3], [4, 5, 9]])
    target = torch.randn(2, 3, 10)
    ((model(idx) - target) ** 2).sum().backward()
    ((torch.nn.functional.embedding(idx, w_embed) @ w_head.T - target) ** 2).sum().backward()
    assert model.embed.weight.grad is not None
    assert torch.allclose(model.embed.weight.grad, w_embed.grad + w_head.grad, atol=1e-5)
    assert w_head.grad.abs().sum() > 0


# ---------------------------------------------------------------------- init / freeze / load
INIT_SPEC = {
    **D2L,
    "init": [{"select": "*.weight", "init": "normal(std=0.02)"}, ["*.bias", "zeros"]],
}


def test_init_rules_are_deterministic_for_a_seed():
    a = build_with_report({**INIT_SPEC, "seed": 5})
    b = build({**INIT_SPEC, "seed": 5})
    c = build({**INIT_SPEC, "seed": 6})
    for name, t in a.model.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name
    assert not torch.equal(a.model[0].weight, c[0].weight)
    assert all(not m.bias.detach().any() for m in a.model if isinstance(m, nn.Linear))
    assert float(a.model[0].weight.detach().std()) < 0.05  # normal(std=0.02), not the default init
    assert a.init_report is not None and a.init_report.seed == 5
    assert a.init_report.assigned["0.weight"] == "*.weight -> normal(std=0.02)"
    assert a.init_report.assigned["0.bias"] == "*.bias -> zeros"


def test_freeze_patterns():
    result = build_with_report({**D2L, "freeze": ["0.*", "6.bias"]})
    model = result.model
    assert not model[0].weight.requires_grad and not model[0].bias.requires_grad
    assert not model[6].bias.requires_grad
    assert model[2].weight.requires_grad and model[6].weight.requires_grad
    assert result.freeze_counts is not None
    assert (result.freeze_counts.frozen, result.freeze_counts.total) == (40 + 1, 121)


def test_empty_freeze_list_freezes_nothing():
    result = build_with_report({**D2L, "freeze": []})
    assert all(p.requires_grad for p in result.model.parameters())
    assert result.freeze_counts is None


def test_load_from_a_saved_param_file_gives_equal_tensors(tmp_path):
    source = build({**D2L, "seed": 1})
    paramscope.save(source, tmp_path / "params.safetensors")
    spec_file = tmp_path / "model.json"
    spec_file.write_text(json.dumps({**D2L, "seed": 2, "load": "params.safetensors"}))
    result = build_with_report(spec_file)
    for name, t in source.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], t), name
    assert result.model[2] is result.model[4]  # the shared layer is still one instance
    assert result.load_report is not None and result.load_report.ok
    # a dict spec resolves against base_dir
    model = build({**D2L, "load": {"path": "params.safetensors"}}, base_dir=tmp_path)
    assert torch.equal(model[6].weight, source[6].weight)
    json.dumps(result.to_dict())  # the whole report is JSON-able
    assert result.to_dict()["params"] == 121


def test_load_strict_and_lenient(tmp_path):
    paramscope.save(nn.Sequential(nn.Linear(4, 8)), tmp_path / "part.safetensors")
    with pytest.raises(SpecError) as err:
        build({**D2L, "load": "part.safetensors"}, base_dir=tmp_path)
    assert str(err.value).startswith(f"load: {tmp_path / 'part.safetensors'}: ")
    result = build_with_report(
        {**D2L, "load": {"path": "part.safetensors", "strict": False}}, base_dir=tmp_path
    )
    assert result.load_report is not None
    names = list(result.model.state_dict())  # oracle: torch's keys; the file holds layer 0's
    assert result.load_report.loaded == ["0.weight", "0.bias"]
    assert result.load_report.missing == [n for n in names if not n.startswith("0.")]
    assert result.load_report.unexpected == [] and not result.load_report.ok


# -------------------------------------------------------------------------------- files
def test_json_file_yaml_file_and_json_string_specs():
    from_json = build(DATA / "d2l.json")
    from_yaml = build_with_report(DATA / "d2l.yaml")
    from_string = build(json.dumps({**D2L, "seed": 0}))
    for model in (from_json, from_yaml.model, from_string):
        assert model[2] is model[4]
        assert model(torch.randn(2, 4)).shape == (2, 1)
    assert torch.equal(from_json[0].weight, from_yaml.model[0].weight)  # both seed 0
    assert torch.equal(from_json[0].weight, from_string[0].weight)
    assert not from_yaml.model[0].weight.requires_grad  # the YAML freezes "0.*"
    assert from_yaml.init_report is None and from_yaml.freeze_counts is not None
    assert read_spec(DATA / "d2l.json")["layers"][4] == {"ref": "shared"}


def test_yaml_without_pyyaml_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(SpecError) as err:
        build(DATA / "d2l.yaml")
    assert str(err.value) == (
        f"spec: {DATA / 'd2l.yaml'}: reading a YAML spec needs PyYAML (pip install pyyaml), "
        "or use JSON"
    )


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(SourceNotFoundError):
        build(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "Linear",\n "args": [1, 2,]}')
    with pytest.raises(SpecError) as err:
        build(bad)
    assert str(err.value).startswith(f"spec: {bad}: invalid JSON at line 2 column ")
    with pytest.raises(SpecError, match='duplicate key "type"'):
        build('{"type": "Linear", "type": "ReLU"}')
    with pytest.raises(SpecError) as err:
        build(DATA / "not_an_object.yaml")
    assert str(err.value) == 'spec: expected an object at the top level, got ["Linear", 2, 3]'


# --------------------------------------------------------------------------------- meta
def test_meta_device_build_allocates_nothing():
    spec = {
        "type": "Sequential",
        "layers": [lin(100_000, 100_000), {"type": "GELU"}, lin(100_000, 10, name="out")],
        "tie": [],
    }
    start = time.perf_counter()
    model = build(spec, device="meta")
    assert time.perf_counter() - start < 2.0
    assert all(p.is_meta for p in model.parameters())
    assert paramscope.count(model).params == 100_000 * 100_000 + 100_000 + 1_000_010
    assert model(torch.empty(3, 100_000, device="meta")).shape == (3, 10)


def test_meta_build_then_load_assigns_real_tensors(tmp_path):
    source = build({**D2L, "seed": 4})
    paramscope.save(source, tmp_path / "p.safetensors")
    model = build({**D2L, "load": "p.safetensors"}, base_dir=tmp_path, device="meta")
    assert not any(p.is_meta for p in model.parameters())
    assert torch.equal(model[2].weight, source[2].weight)
    assert torch.equal(model(torch.ones(1, 4)), source(torch.ones(1, 4)))


# ------------------------------------------------------------------------------- errors
PREFIX = "..."  # a message ending in it is checked as a prefix


def seq(*layers) -> dict:
    return {"type": "Sequential", "layers": list(layers)}


ERRORS = [
    (
        seq(
            lin(4, 8),
            {"type": "ReLU"},
            lin(8, 8),
            {"type": "Linear", "kwargs": {"in_features": 8, "out_features": "ten"}},
        ),
        'layers[3].kwargs.out_features: expected int, got "ten"',
    ),
    (seq({"type": "ReLU"}, lin(4, "x")), 'layers[1].args[1]: expected int, got "x"'),
    (
        seq({"type": "Linear", "in_features": 4.0, "out_features": 2}),
        "layers[0].in_features: expected int, got 4.0",
    ),
    (seq(lin(4, 2, bias="yes")), 'layers[0].bias: expected bool, got "yes"'),
    (
        seq({"type": "Conv2d", "args": [3, 8], "kernel_size": "x"}),
        'layers[0].kernel_size: expected int or tuple[int, int], got "x"',
    ),
    (
        seq({"type": "Conv2d", "args": [3, 8, [3, 3, 3]]}),
        "layers[0].args[2]: expected int or tuple[int, int], got [3, 3, 3]",
    ),
    (
        seq({"type": "Conv2d", "args": [3, 8, 3], "padding_mode": "zero"}),
        'layers[0].padding_mode: expected "zeros" or "reflect" or "replicate" or "circular", '
        'got "zero"',
    ),
    (
        seq({"type": "Linear", "args": [3]}),
        'layers[0]: Linear needs "out_features": missing from args / kwargs',
    ),
    (
        seq(lin(3, 2, kwargs={"in_features": 3})),
        'layers[0].kwargs.in_features: "in_features" is given twice (also as layers[0].args[0])',
    ),
    (
        seq({"type": "Linear", "args": [3, 2, True, None, None, 1]}),
        "layers[0].args[5]: Linear takes at most 5 positional arguments "
        "(in_features, out_features, bias, device, dtype), got 6",
    ),
    (
        seq({"type": "MultiheadAttention", "args": [10, 3]}),
        "layers[0]: MultiheadAttention rejected its arguments: embed_dim must be divisible by "
        "num_heads",
    ),
    (
        seq(lin(2, 2, dtype="flaot16")),
        'layers[0].dtype: unknown dtype "flaot16"; did you mean "float16"...',
    ),
    (
        {"type": "Sequential", "layers": [], "intt": []},
        'spec: unknown top-level key "intt"; did you mean "init"?',
    ),
    (
        {"type": "Sequential", "lyers": []},
        'spec: unknown top-level key "lyers"; did you mean "layers"?',
    ),
    (
        seq({"type": "Sequential", "layer": []}),
        'layers[0]: unknown key "layer" for Sequential; did you mean "layers"?',
    ),
    (
        seq({"type": "Linaer", "args": [2, 2]}),
        'layers[0].type: unknown layer type "Linaer"; did you mean "Linear"...',
    ),
    (
        seq({"type": "os.system"}),
        'layers[0].type: "os.system" is an import path; a spec may only name torch.nn classes '
        '(e.g. "Linear"), so that reading a spec never imports or runs other code',
    ),
    (seq({"type": "functional"}), 'layers[0].type: unknown layer type "functional"...'),
    (seq({"type": 3}), "layers[0].type: expected a torch.nn class name, got 3"),
    (seq({"args": [1, 2]}), 'layers[0]: expected a layer with "type" or "ref", found keys "args"'),
    (seq("Linear"), 'layers[0]: expected a layer (an object with "type"), got "Linear"'),
    (
        seq(lin(8, 8, name="shared"), {"ref": "shard"}),
        'layers[1].ref: unknown name "shard"; did you mean "shared"? '
        '(names defined before this point: "shared")',
    ),
    (
        seq({"ref": "later"}, lin(8, 8, name="later")),
        'layers[0].ref: unknown name "later" (names defined before this point: none)',
    ),
    (seq({"ref": "x", "args": []}), 'layers[0]: a ref takes no other keys, found "args"'),
    (
        seq(lin(2, 2, name="a"), lin(2, 2, name="a")),
        'layers[1].name: name "a" is already defined at layers[0]',
    ),
    (seq({"repeat": 0, "layer": lin(2, 2)}), "layers[0].repeat: expected a positive int, got 0"),
    (
        seq({"repeat": "3", "layer": lin(2, 2)}),
        'layers[0].repeat: expected a positive int, got "3"',
    ),
    (
        seq({"repeat": True, "layer": lin(2, 2)}),
        "layers[0].repeat: expected a positive int, got true",
    ),
    (
        seq({"repeat": 2}),
        'layers[0]: a repeat takes "repeat" and one of "layer" or "layers", found nothing',
    ),
    (
        seq({"repeat": 2, "layer": lin(2, 2, name="x")}),
        "layers[0].layer.name: a layer inside a repeat cannot carry a name (each copy is a new "
        'instance); name a layer outside the repeat and use {"ref": name} inside it',
    ),
    (
        {"type": "Module", "children": {"a": {"repeat": 2, "layer": lin(2, 2)}}},
        'children.a: a repeat expands into several layers: it may only stand in a "layers" list',
    ),
    (
        {
            "type": "Module",
            "children": {"a": lin(2, 2), "head": lin(2, 2)},
            "forward": ["a", "haed"],
        },
        'forward[1]: no child "haed"; did you mean "head"?',
    ),
    (
        {"type": "Module", "children": {"forward": lin(2, 2)}},
        'children.forward: "forward" is an attribute of every module; choose another child name',
    ),
    (
        seq({"type": "ReLU", "layers": []}),
        'layers[0].layers: "layers" belongs to containers, refs and repeats, not ReLU',
    ),
    (seq({"type": "Linear", "args": 5}), "layers[0].args: expected a list, got 5"),
    (
        {**D2L, "tie": [["6.weigth", "0.weight"]]},
        'tie[0][0]: no parameter "6.weigth"; did you mean "6.weight"...',
    ),
    ({**D2L, "tie": [["6.bias", "1.bias"]]}, 'tie[0][1]: no parameter "1.bias"...'),
    (
        {**D2L, "tie": [["6.weight", "0.weight"]]},
        'tie[0]: "6.weight" is (1, 8) torch.float32 but "0.weight" is (8, 4) torch.float32; '
        "a tie needs equal shapes and dtypes",
    ),
    (
        {**D2L, "tie": ["6.weight"]},
        'tie[0]: expected a pair ["name", "target"] of names, got "6.weight"',
    ),
    (
        {**D2L, "tie": {"a": "b"}},
        'tie: expected a list of ["name", "target"] pairs, got {"a": "b"}',
    ),
    ({**D2L, "seed": "x"}, 'seed: expected a non-negative int, got "x"'),
    (
        {**D2L, "init": [["*.weight"]]},
        'init[0]: expected {"select": ..., "init": ...} or ["selector", "scheme"], '
        'got ["*.weight"]',
    ),
    (
        {**D2L, "init": [["*.weight", "nromal"]]},
        "init: init rule 0 ('*.weight -> nromal'): unknown init scheme 'nromal'...",
    ),
    ({**D2L, "freeze": ["9.*"]}, "freeze: no parameter matching '9.*'..."),
    ({**D2L, "freeze": [3]}, "freeze[0]: expected a name pattern, got 3"),
    (
        {**D2L, "freeze": {"patterns": ["0.*"], "bn_evl": True}},
        'freeze: unknown key "bn_evl"; did you mean "bn_eval"?',
    ),
    (
        {**D2L, "load": "missing.safetensors"},
        'load: "missing.safetensors": no such file (looked for ...',
    ),
    ({**D2L, "load": {"path": "p", "strict": "yes"}}, 'load.strict: expected a bool, got "yes"'),
]


@pytest.mark.parametrize(("spec", "message"), ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_validation_errors_name_the_place(spec, message, tmp_path):
    with pytest.raises(SpecError) as err:
        build(spec, base_dir=tmp_path)
    text = str(err.value)
    if message.endswith(PREFIX):  # the rest comes from torch / lifecycle / difflib
        assert text.startswith(message[: -len(PREFIX)]), text
    else:
        assert text == message
    assert isinstance(err.value, ParamscopeError) and isinstance(err.value, ValueError)


def test_errors_are_raised_before_anything_is_built_on_meta():
    with pytest.raises(SpecError, match=r"^layers\[1\]\.args\[1\]: expected int"):
        build(seq(lin(10**6, 10**6), lin(10**6, "x")), device="meta")


def test_import_stays_torch_free():
    code = (
        "import paramscope.building as b\n"
        "names = [b.SpecError, b.InferError, b.build, b.build_with_report, b.infer_model,"
        " b.read_spec, b.BuildResult]\n"
        "result = b.read_spec('{\"type\": \"ReLU\"}')"
    )
    assert without_torch(code) == {"type": "ReLU"}


def test_build_result_defaults():
    result = build_with_report(seq({"type": "ReLU"}))
    assert isinstance(result, BuildResult)
    assert (result.init_report, result.freeze_counts, result.load_report) == (None, None, None)
    assert result.to_dict() == {
        "model": "Sequential",
        "params": 0,
        "named": {},
        "init": None,
        "freeze": None,
        "load": None,
    }


def test_module_docstring_example_builds():
    import textwrap

    import yaml

    from paramscope.building import _spec

    marker = "Example (the D2L shared-layer network, written as YAML)::"
    spec = yaml.safe_load(textwrap.dedent(_spec.__doc__.split(marker)[1]))
    result = build_with_report(spec)
    model = result.model
    assert model[2] is model[4] and model[6] is not model[7]
    assert paramscope.count(model).params == 40 + 3 * 72 + 9
    assert result.init_report is not None and result.init_report.assigned["4.weight"] == (
        "tied to 2.weight"
    )
    assert result.freeze_counts is not None and result.freeze_counts.frozen == 40
    assert model(torch.zeros(2, 4)).shape == (2, 1)

