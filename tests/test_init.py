"""init(): rules, schemes, determinism, ties, meta models, ParamDict targets, errors."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import paramscope
from _helpers import without_torch
from paramscope import ParamDict, ParamscopeError
from paramscope.lifecycle import (
    InitReport,
    _init,
    _init_plan,
    _init_rules,
    _init_schemes,
    init,
    init_schemes,
    register_scheme,
)

INIT_MODULES = (_init, _init_schemes, _init_rules, _init_plan)


class Block(nn.Module):
    """A custom module: its own parameter and a buffer, no reset methods."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((4,), 7.0))
        self.register_buffer("inv_freq", torch.full((2,), 3.0))
        self.fc = nn.Linear(4, 4)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 4)
        self.ln = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.block = Block()
        self.head = nn.Linear(4, 12, bias=False)
        self.head.weight = self.emb.weight


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def d2l(t: torch.Tensor, g: torch.Generator) -> None:
    t.uniform_(-10, 10, generator=g)
    t.mul_(t.abs() >= 5)


MANY_RULES = [
    ("*.bias", "zeros"),
    ("0.weight", "orthogonal(gain=2)"),
    ("2.weight", "kaiming_normal(mode='fan_out', nonlinearity='tanh')"),
    ("4.weight", "trunc_normal(std=0.02, sigmas=2)"),
]


# ------------------------------------------------------------------------------ D2L example
def test_d2l_callable_scheme() -> None:
    net = mlp()
    report = init(net, [(nn.Linear, d2l)], seed=0)
    for i in (0, 2, 4):
        w = net[i].weight.detach()
        assert bool(((w == 0) | (w.abs() >= 5)).all())
        assert bool((w.abs() <= 10).all())
        assert bool((w == 0).any()) and bool((w != 0).any())
        assert report.assigned[f"{i}.weight"] == "type:Linear -> d2l"
    assert report.untouched == [] and report.unused_rules == []


# ------------------------------------------------------------------------------ determinism
def test_same_seed_same_values_whatever_the_global_rng() -> None:
    rules = [*MANY_RULES, ("*", "default")]
    torch.manual_seed(1)
    a = mlp()
    init(a, rules, seed=1234)
    torch.manual_seed(2)
    b = mlp()
    torch.rand(100)  # move the global RNG on
    init(b, rules, seed=1234)
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)

    c = mlp()
    init(c, rules, seed=1235)
    pc = params(c)
    assert not torch.equal(pa["0.weight"], pc["0.weight"])
    assert not torch.equal(pa["4.weight"], pc["4.weight"])


def test_global_rng_state_untouched() -> None:
    net = mlp()
    state = torch.get_rng_state()
    init(net, [*MANY_RULES, ("*", "default")], seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_rule_order_does_not_change_values() -> None:
    a, b = mlp(), mlp()
    init(a, MANY_RULES, seed=9)
    init(b, list(reversed(MANY_RULES)), seed=9)
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)


def test_seed_none_is_drawn_and_reproduces() -> None:
    a, b = mlp(), mlp()
    report = init(a, [("*", "normal")])
    assert isinstance(report.seed, int) and report.seed >= 0
    init(b, [("*", "normal")], seed=report.seed)
    assert torch.equal(a[0].weight, b[0].weight)


# ------------------------------------------------------------------------------ selectors
def test_first_match_wins_and_report() -> None:
    net = mlp()
    report = init(net, [("*.bias", "zeros"), ("0.*", "ones"), ("*.bias", "constant(3)")], seed=0)
    assert bool((net[0].bias == 0).all()) and bool((net[0].weight == 1).all())
    assert report.assigned == {
        "0.weight": "0.* -> ones",
        "0.bias": "*.bias -> zeros",
        "2.bias": "*.bias -> zeros",
        "4.bias": "*.bias -> zeros",
    }
    assert report.untouched == ["2.weight", "4.weight"]
    assert report.unused_rules == ["*.bias -> constant(3)"]
    d = report.to_dict()
    assert list(d) == ["assigned", "untouched", "unused_rules", "seed", "materialized"]
    assert json.loads(json.dumps(d)) == d
    assert set(d) == set(InitReport.__dataclass_fields__)


def test_selector_kinds() -> None:
    model = Tied()
    report = init(
        model,
        [
            ("re:ln\\..*", "constant(0.5)"),
            (["bn.weight", "bn.bias"], "constant(0.25)"),
            ("type:Block", "constant(2)"),  # a custom class, by name
            (lambda name, t: t.dim() == 1, "constant(-1)"),  # block.fc.bias
            ("type:nn.Linear", "constant(4)"),  # block.fc.weight, and the tied emb/head weight
        ],
        seed=0,
    )
    assert bool((model.ln.weight == 0.5).all()) and bool((model.bn.bias == 0.25).all())
    assert bool((model.block.scale == 2).all())
    assert bool((model.block.fc.bias == -1).all()) and bool((model.block.fc.weight == 4).all())
    # the tie matches Linear through its alias head.weight; set once, under its first name
    assert model.head.weight is model.emb.weight
    assert bool((model.emb.weight == 4).all())
    assert report.assigned["emb.weight"] == "type:nn.Linear -> constant(4)"
    assert report.assigned["head.weight"] == "tied to emb.weight"
    assert report.untouched == []


def test_type_selector_class_matches_owner_only() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    report = init(net, [(nn.LayerNorm, "zeros"), (nn.Conv2d, "ones")], seed=0)
    assert set(report.assigned) == {"1.weight", "1.bias"}
    assert report.unused_rules == ["type:Conv2d -> ones"]


def test_dict_and_mapping_rules() -> None:
    a, b = mlp(), mlp()
    spec = [{"select": "*.bias", "init": "zeros"}, {"select": "*", "init": "normal(0, 0.5)"}]
    ra = init(a, spec, seed=3)
    rb = init(b, {"*.bias": "zeros", "*": "normal(0, 0.5)"}, seed=3)
    assert ra.assigned == rb.assigned
    assert torch.equal(a[2].weight, b[2].weight)
    assert bool((a[2].bias == 0).all())


# ------------------------------------------------------------------------------ schemes
def test_builtin_schemes() -> None:
    lin = nn.Linear(200, 100)
    conv = nn.Conv2d(4, 4, 3)
    init(lin, [("weight", "orthogonal"), ("bias", "constant(0.5)")], seed=0)
    w = lin.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(100), atol=1e-4)
    assert bool((lin.bias == 0.5).all())

    init(lin, [("weight", "eye"), ("bias", "ones")], seed=0)
    assert torch.equal(lin.weight.detach(), torch.eye(100, 200))
    assert bool((lin.bias == 1).all())

    init(conv, [("weight", "dirac"), ("bias", "zeros")], seed=0)
    x = torch.randn(1, 4, 5, 5)
    assert torch.allclose(conv(x), x[:, :, 1:-1, 1:-1])

    init(lin, [("weight", "uniform(-10, 10)"), ("bias", "normal(mean=3, std=0.01)")], seed=0)
    assert float(lin.weight.detach().min()) >= -10 and float(lin.weight.detach().max()) <= 10
    assert float(lin.weight.detach().max()) > 9 and abs(float(lin.bias.detach().mean()) - 3) < 0.01

    init(lin, [("weight", "xavier_uniform(gain=1)"), ("bias", "zeros")], seed=0)
    bound = (6 / (200 + 100)) ** 0.5
    assert (
        float(lin.weight.detach().abs().max()) <= bound
        and float(lin.weight.detach().abs().max()) > 0.9 * bound
    )

    init(lin, [("weight", "xavier_normal_"), ("bias", "zeros_")], seed=0)  # torch spelling
    assert abs(float(lin.weight.detach().std()) - (2 / 300) ** 0.5) < 0.01

    init(lin, [("weight", "kaiming_uniform(a=0, nonlinearity='relu')")], seed=0)
    assert float(lin.weight.detach().abs().max()) <= (6 / 200) ** 0.5

    init(lin, [("weight", "kaiming_normal(nonlinearity='relu')")], seed=0)
    assert abs(float(lin.weight.detach().std()) - (2 / 200) ** 0.5) < 0.01


def test_trunc_normal_cutoffs_absolute_and_in_sigmas() -> None:
    t = nn.Linear(100, 100)
    # torch semantics: a, b absolute; std=0.02 with the default ±2 cuts at ±100 std: no cut
    init(t, [("weight", "trunc_normal(std=0.02)")], seed=0)
    assert float(t.weight.detach().abs().max()) > 0.05
    # sigmas=2 cuts at mean ± 2 std
    init(t, [("weight", "trunc_normal(std=0.02, sigmas=2)")], seed=0)
    assert float(t.weight.detach().abs().max()) <= 0.04
    assert float(t.weight.detach().abs().max()) > 0.035
    # explicit absolute cut-offs
    init(t, [("weight", "trunc_normal(mean=0, std=1, a=-0.01, b=0.01)")], seed=0)
    assert float(t.weight.detach().abs().max()) <= 0.01
    with pytest.raises(ParamscopeError, match=r"rule 0 .*either absolute cut-offs a=, b="):
        init(t, [("*", "trunc_normal(std=0.02, a=-2, sigmas=2)")], seed=0)


def test_half_precision_and_generator_free_path() -> None:
    lin = nn.Linear(8, 8).to(torch.bfloat16)
    init(lin, [("weight", "orthogonal"), ("bias", "normal")], seed=0)  # qr has no bf16 kernel
    w = lin.weight.detach().float()
    assert torch.allclose(w @ w.T, torch.eye(8), atol=0.05)
    assert lin.weight.dtype == torch.bfloat16


def test_default_scheme_keeps_other_rules_and_untouched() -> None:
    torch.manual_seed(0)
    net = mlp()
    before = params(net)
    report = init(net, [("0.bias", "ones"), ("0.*", "default")], seed=4)
    assert bool((net[0].bias == 1).all())  # reset_parameters() ran after, but bias is restored
    assert not torch.equal(net[0].weight.detach(), before["0.weight"])
    assert torch.equal(net[2].weight.detach(), before["2.weight"])  # untouched
    assert report.assigned["0.weight"] == "0.* -> default"
    # the same seed gives the same default values
    other = mlp()
    init(other, [("0.bias", "ones"), ("0.*", "default")], seed=4)
    assert torch.equal(other[0].weight, net[0].weight)


def test_default_restores_params_it_does_not_own() -> None:
    net = mlp()
    before = params(net)
    init(net, [("0.weight", "default")], seed=0)  # reset_parameters() redraws the bias too
    assert torch.equal(net[0].bias.detach(), before["0.bias"])
    init(net, [("0.weight", "ones"), ("0.bias", "default")], seed=0)  # weight set first
    assert bool((net[0].weight == 1).all())
    assert not torch.equal(net[0].bias.detach(), before["0.bias"])


def test_register_scheme() -> None:
    def fill_with(t: torch.Tensor, g: torch.Generator, value: float = 1.0) -> None:
        t.fill_(value)

    register_scheme("test_fill_with", fill_with)
    assert "test_fill_with" in init_schemes()
    net = nn.Linear(2, 2)
    report = init(net, [("*", "test_fill_with(value=6)")], seed=0)
    assert (
        bool((net.weight == 6).all()) and report.assigned["bias"] == "* -> test_fill_with(value=6)"
    )
    with pytest.raises(ParamscopeError, match="exists; pass replace=True"):
        register_scheme("test_fill_with", fill_with)
    register_scheme("test_fill_with", fill_with, replace=True)
    with pytest.raises(ParamscopeError, match="reserved"):
        register_scheme("default", fill_with)
    with pytest.raises(ParamscopeError, match="identifier"):
        register_scheme("bad name", fill_with)
    with pytest.raises(ParamscopeError, match=r"accept \(tensor, generator\)"):
        register_scheme("test_one_arg", lambda t: None)
    with pytest.raises(
        ParamscopeError, match=r"bad arguments .*expected test_fill_with\(value=1.0\)"
    ):
        init(net, [("*", "test_fill_with(v=6)")], seed=0)


# ------------------------------------------------------------------------------ ties, meta
def test_meta_model_materialised_tied_and_reset() -> None:
    with torch.device("meta"):
        model = Tied()
    assert model.head.weight is model.emb.weight
    with pytest.warns(UserWarning, match=r"zeroed: block\.inv_freq, block\.scale"):
        report = init(model, [("*.weight", "normal(std=0.02)")], seed=11)
    assert report.materialized is True
    assert model.head.weight is model.emb.weight  # to_empty breaks ties: re-tied
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    assert torch.equal(model.bn.running_var, torch.ones(4))
    assert torch.equal(model.bn.running_mean, torch.zeros(4))
    assert int(model.bn.num_batches_tracked) == 0
    assert torch.equal(model.ln.bias.detach(), torch.zeros(4))  # LayerNorm.reset_parameters
    assert torch.equal(model.block.scale.detach(), torch.zeros(4))  # no rule, no reset
    assert torch.equal(model.block.inv_freq, torch.zeros(2))
    assert report.untouched == ["ln.bias", "bn.bias", "block.scale", "block.fc.bias"]
    assert report.assigned["head.weight"] == "tied to emb.weight"
    assert float(model.emb.weight.detach().std()) < 0.05

    with torch.device("meta"):
        again = Tied()
    with pytest.warns(UserWarning):
        init(again, [("*.weight", "normal(std=0.02)")], seed=11)
    pa, pb = params(model), params(again)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)


def test_meta_buffers_reset_when_rules_cover_every_param() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left at zero: no warning
        report = init(model, [("*", "constant(0.5)")], seed=0)
    assert report.materialized and report.untouched == []
    assert bool((model[1].weight == 0.5).all()) and bool((model[0].weight == 0.5).all())
    assert torch.equal(model[1].running_var, torch.ones(4))  # reset_running_stats()


def test_real_model_is_not_materialised() -> None:
    report = init(Tied(), [("*", "zeros")], seed=0)
    assert report.materialized is False


def test_under_no_grad_and_outside() -> None:
    net = mlp()
    with torch.no_grad():
        init(net, [("*", "ones")], seed=0)
    init(net, [("*.bias", "zeros")], seed=0)
    assert net[0].weight.requires_grad and net[0].weight.is_leaf
    assert net[0].weight.grad_fn is None and bool((net[0].weight == 1).all())


# ------------------------------------------------------------------------------ ParamDict
def test_paramdict_target() -> None:
    pd = ParamDict({"fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3)})
    pd.add("bn.running_mean", torch.full((3,), 9.0), role="buffer")
    pd.add("bn.running_var", torch.full((3,), 9.0), role="buffer")
    pd.tie("head.weight", "fc.weight")
    report = init(
        pd,
        [(nn.Linear, "ones"), ("bn.running_var", "ones"), ("*", "constant(2)")],
        seed=0,
    )
    assert torch.equal(pd["fc.weight"], torch.full((3, 2), 2.0))
    assert pd["head.weight"] is pd["fc.weight"]
    assert torch.equal(pd["bn.running_mean"], torch.full((3,), 9.0))  # buffer: glob skips it
    assert torch.equal(pd["bn.running_var"], torch.ones(3))  # named exactly
    assert report.unused_rules == ["type:Linear -> ones"]
    assert report.assigned["head.weight"] == "tied to fc.weight"


def test_paramdict_shares_storage_with_model() -> None:
    net = mlp()
    pd = ParamDict.from_module(net)
    init(pd, [("*", "constant(0.125)")], seed=0)
    assert bool((net[4].weight == 0.125).all())


def test_paramdict_default_names_entry() -> None:
    pd = ParamDict({"fc.weight": torch.zeros(3, 2)})
    with pytest.raises(ParamscopeError, match=r"rule 0 .*entry 'fc\.weight' is in a ParamDict"):
        init(pd, [("*", "default")], seed=0)


def test_paramdict_meta_entries_materialised() -> None:
    pd = ParamDict({"w": torch.empty(2, 2, device="meta"), "b": torch.empty(2, device="meta")})
    with pytest.warns(UserWarning, match="zeroed: b"):
        report = init(pd, [("w", "ones")], seed=0)
    assert report.materialized and torch.equal(pd["w"], torch.ones(2, 2))
    assert torch.equal(pd["b"], torch.zeros(2))


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [("*", "zeros"), ("*", "nrmal(std=1)")],
            r"rule 1 \('\* -> nrmal\(std=1\)'\).*"
            r"unknown init scheme 'nrmal'.*did you mean 'normal'",
        ),
        (
            [("*", "normal(stdd=1)")],
            r"unexpected keyword argument 'stdd'; "
            r"expected normal\(mean=0\.0, std=1\.0\)",
        ),
        ([("*", "normal(std='a')")], r"bad argument std='a' for 'normal': expected float"),
        ([("*", "normal(std=__import__('os').getpid())")], r"arguments must be literals"),
        ([("*", "os.system('true')")], r"expected a scheme name"),
        ([("*", "normal(std=-1)")], r"std must be > 0"),
        ([("*", "kaiming_normal(mode='fan')")], r"mode='fan': expected 'fan_in' or 'fan_out'"),
        ([("*", "uniform(3, 1)")], r"expected a <= b"),
        ([("*", 3)], r"expected a scheme name"),
        ([("*",)], r"expected a \(selector, scheme\) pair"),
        ([{"select": "*", "scheme": "zeros"}], r"expected keys 'select' and 'init'"),
        ([(3, "zeros")], r"selector 3: expected a glob"),
        ([(int, "zeros")], r"must be a torch\.nn\.Module type"),
        ([("re:(", "zeros")], r"invalid regular expression"),
        ({"select": "*", "init": "zeros"}, r"pass a list of rules"),
    ],
)
def test_rule_errors(rules: object, message: str) -> None:
    with pytest.raises(ParamscopeError, match=message):
        init(mlp(), rules, seed=0)  # type: ignore[arg-type]


def test_shape_errors_before_any_write() -> None:
    net = mlp()
    before = params(net)
    with pytest.raises(
        ParamscopeError, match=r"rule 1 .*cannot initialise '0\.bias' of shape \(8,\)"
    ):
        init(net, [("*.weight", "zeros"), ("*", "orthogonal")], seed=0)
    after = params(net)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_default_without_reset_parameters() -> None:
    with pytest.raises(ParamscopeError, match=r"Block has none"):
        init(Block(), [("scale", "default")], seed=0)


def test_bad_target_seed_and_strict() -> None:
    with pytest.raises(ParamscopeError, match=r"expected a torch\.nn\.Module or a ParamDict"):
        init({"w": torch.zeros(1)}, [("*", "zeros")], seed=0)  # type: ignore[arg-type]
    with pytest.raises(ParamscopeError, match="seed=-1"):
        init(mlp(), [("*", "zeros")], seed=-1)
    with pytest.raises(ParamscopeError, match=r"set nothing: \['enc\.\* -> zeros'\]"):
        init(mlp(), [("enc.*", "zeros")], seed=0, strict=True)


def test_scheme_failure_names_rule_and_param() -> None:
    def broken(t: torch.Tensor, g: torch.Generator) -> None:
        raise RuntimeError("boom")

    with pytest.raises(ParamscopeError, match=r"rule 0 \('0\.weight -> broken'\): failed on "):
        init(mlp(), [("0.weight", broken)], seed=0)


# ------------------------------------------------------------------------------ package
def test_lazy_package_does_not_import_torch() -> None:
    code = "import paramscope.lifecycle as L\nresult = sorted(L.__all__)"
    assert without_torch(code) == sorted(paramscope.lifecycle.__all__)
    assert {"init", "freeze"} <= set(paramscope.lifecycle.__all__)
    assert paramscope.lifecycle.init is init

