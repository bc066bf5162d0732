"""Magnitude pruning: exact counts against brute-force oracles, structures, modules, ties."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import paramscope
from _helpers import without_torch
from paramscope import ParamDict, ParamscopeError
from paramscope.compress import _prune
from paramscope.compress._prune import (
    SparsityReport,
    global_threshold,
    keep_mask,
    prune,
    should_prune,
    threshold_mask,
)

FIELDS = ["name", "elements", "zeros", "sparsity", "kept"]


def _tensors(seed: int, shapes, kind: str = "normal", dtype=torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, shape in enumerate(shapes):
        if kind == "ties":  # few distinct magnitudes, zeros included: many ties at the cut
            t = torch.randint(-3, 4, shape, generator=g).float()
        else:
            t = torch.randn(shape, generator=g)
        out[f"l{i}.weight"] = t.to(dtype)
    return out


def _oracle_keep(tensors: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Brute force: stable sort of the concatenation, the first k are pruned."""
    flat = torch.cat([t.float().abs().reshape(-1) for t in tensors])
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    out, start = [], 0
    for t in tensors:
        out.append(keep[start : start + t.numel()].reshape(t.shape))
        start += t.numel()
    return out


def _zeros(t: torch.Tensor) -> int:
    return t.numel() - int(torch.count_nonzero(t))


# ------------------------------------------------------------------------------- exact counts
def test_layer_scope_prunes_exactly_half_of_every_tensor():
    d = _tensors(0, [(7, 9), (16, 3, 3, 3), (5, 5)])
    report = prune(d, 0.5, scope="layer")
    assert [r["name"] for r in report.tensors] == list(d)
    for row, t in zip(report.tensors, d.values(), strict=True):
        assert _zeros(t) == round(0.5 * t.numel()) == row["zeros"]
        assert row["kept"] == row["elements"] - row["zeros"]
        assert list(row) == FIELDS
    assert report.total["zeros"] == sum(r["zeros"] for r in report.tensors)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("amount", [0.3, 0.77])
def test_global_scope_keeps_exactly_the_largest_magnitudes(kind, amount):
    d = _tensors(1, [(13, 11), (4, 6, 3), (40, 2)], kind)
    before = [t.clone() for t in d.values()]
    total = sum(t.numel() for t in before)
    k = round(amount * total)
    report = prune(d, amount)  # scope="global" is the default
    for got, orig, keep in zip(d.values(), before, _oracle_keep(before, k), strict=True):
        assert torch.equal(got, orig * keep)
    pruned = total - sum(int(keep.sum()) for keep in _oracle_keep(before, k))
    assert pruned == k
    zeros_before_kept = sum(
        int(((o == 0) & kp).sum()) for o, kp in zip(before, _oracle_keep(before, k), strict=True)
    )
    assert report.total["zeros"] == k + zeros_before_kept
    assert report.total["elements"] == total


def test_global_scope_on_bf16_and_f16_matches_oracle():
    d = {"a": torch.randn(30, 10).bfloat16(), "b": torch.randn(12, 12).half()}
    before = [t.clone() for t in d.values()]
    k = round(0.6 * sum(t.numel() for t in before))
    prune(d, 0.6)
    for got, orig, keep in zip(d.values(), before, _oracle_keep(before, k), strict=True):
        assert got.dtype == orig.dtype
        assert torch.equal(got, orig * keep)


# ------------------------------------------------------------------------------- global threshold
class Source:
    """Makes its tensors afresh on every pass (nothing kept), and counts the passes."""

    def __init__(self, shapes, kind: str = "normal") -> None:
        self.shapes, self.kind, self.calls = shapes, kind, 0

    def __call__(self):
        self.calls += 1
        return iter(_tensors(7, self.shapes, self.kind).values())

    def all(self) -> list[torch.Tensor]:
        return list(_tensors(7, self.shapes, self.kind).values())


def _brute(tensors, amount):
    flat = torch.cat([t.float().abs().reshape(-1) for t in tensors])
    k = round(amount * flat.numel())
    v = float(torch.sort(flat).values[k - 1])
    return v, k - int((flat < v).sum())


@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_global_threshold_equals_brute_force_kth_value(kind):
    src = Source([(50, 40), (33,), (8, 8, 8)], kind)
    total = sum(t.numel() for t in src.all())
    got = global_threshold(src, 0.42, total)
    assert got == _brute(src.all(), 0.42)
    assert src.calls >= 2


def test_global_threshold_refines_full_bins_without_gathering_everything(monkeypatch):
    gathered: list[int] = []
    real_gather = _prune._gather

    def spy(make_iter, lo, hi):
        out = real_gather(make_iter, lo, hi)
        gathered.append(out.numel())
        return out

    monkeypatch.setattr(_prune, "BINS", 8)
    monkeypatch.setattr(_prune, "GATHER_LIMIT", 50)
    monkeypatch.setattr(_prune, "_gather", spy)
    src = Source([(60, 50), (70, 30)])
    total = 60 * 50 + 70 * 30
    assert global_threshold(src, 0.55, total) == _brute(src.all(), 0.55)
    assert src.calls >= 4  # range, at least two histograms, the gather
    assert gathered and max(gathered) <= 50


def test_global_threshold_single_magnitude_and_nothing_to_prune():
    ts = [torch.tensor([1.0, -1.0, 1.0]), torch.tensor([[-1.0, 1.0]])]
    assert global_threshold(lambda: iter(ts), 0.6, 5) == (1.0, 3)
    assert global_threshold(lambda: iter(ts), 0.0, 5) == (0.0, 0)
    keep, used = threshold_mask(ts[0], 1.0, 3)
    assert keep.tolist() == [False, False, False] and used == 3
    with pytest.raises(ParamscopeError, match="total"):
        global_threshold(lambda: iter(ts), 0.5, 6)


# ------------------------------------------------------------------------------- structures
def test_rows_prunes_whole_rows_with_smallest_l1_norm():
    t = torch.randn(8, 6)
    keep = keep_mask(t, 0.25, structure="rows")
    dropped = torch.argsort(t.abs().sum(1))[:2]
    expect = torch.ones(8, dtype=torch.bool)
    expect[dropped] = False
    assert torch.equal(keep, expect[:, None].expand(8, 6))


def test_channels_prunes_whole_input_channels_of_a_conv():
    conv = nn.Conv2d(6, 4, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.linspace(1, 2, 6)[None, :, None, None] * torch.rand(1, 6, 1, 1))
    w = conv.weight.detach().clone()
    prune(conv, 0.5, scope="layer", structure="channels")
    dropped = torch.argsort(w.abs().sum(dim=(0, 2, 3)))[:3]
    for c in range(6):
        assert bool((conv.weight[:, c] == 0).all()) == (c in dropped.tolist())


def test_two_of_four_keeps_the_two_largest_of_every_group():
    t = torch.randn(6, 16)
    d = {"w": t.clone()}
    report = prune(d, None, structure="n:m", n=2, m=4)
    groups = d["w"].reshape(-1, 4)
    assert ((groups != 0).sum(1) == 2).all()
    top = t.abs().reshape(-1, 4).topk(2, dim=1).indices
    assert torch.equal((groups != 0), torch.zeros_like(groups, dtype=torch.bool).scatter(1, top, 1))
    assert report.total["sparsity"] == 0.5


def test_random_is_deterministic_per_seed_and_exact():
    def run(seed, scope="global"):
        d = _tensors(3, [(20, 20), (10, 7)])
        report = prune(d, 0.4, method="random", seed=seed, scope=scope)
        return [t != 0 for t in d.values()], report

    a, ra = run(5)
    b, _ = run(5)
    c, _ = run(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert ra.total["zeros"] == round(0.4 * 470)
    _, rla = run(5, "layer")
    assert [r["zeros"] for r in rla.tensors] == [160, 28]


# ------------------------------------------------------------------------------- selection
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(self.bn(self.fc(self.emb(x)))))


def test_defaults_skip_biases_norms_and_buffers():
    model = Net()
    bias = model.fc.bias.detach().clone()
    report = prune(model, 0.5)
    assert [r["name"] for r in report.tensors] == ["emb.weight", "fc.weight", "head.weight"]
    assert torch.equal(model.fc.bias, bias)
    assert bool((model.bn.weight != 0).all()) and bool((model.ln.weight != 0).all())
    assert not should_prune("bn.running_mean", (8,), "buffer")
    assert not should_prune("x.weight", (8, 8), "buffer")


def test_select_and_skip_patterns():
    assert [r["name"] for r in prune(Net(), 0.5, select="re:(fc|head)\\..*").tensors] == [
        "fc.weight",
        "head.weight",
    ]
    assert [r["name"] for r in prune(Net(), 0.5, skip=["emb.*", "head.*"]).tensors] == ["fc.weight"]
    assert should_prune("a.weight", (2, 2), "param", select="a.*", skip="b.*")
    assert not should_prune("a.bias", (2,), "param", select="a.*")


# ------------------------------------------------------------------------------- modules
def test_module_in_place_keeps_counts_and_runs():
    model = Net().eval()
    params = paramscope.count(model).params
    report = prune(model, 0.6)
    assert paramscope.count(model).params == params
    sd = model.state_dict()
    for row in report.tensors:
        assert _zeros(sd[row["name"]]) == row["zeros"]
    assert report.total["zeros"] == round(0.6 * report.total["elements"])
    assert model(torch.tensor([1, 2, 3])).shape == (3, 3)


def test_as_masks_gives_orig_and_mask_and_count_sees_the_nonzeros():
    model = Net().eval()
    orig = model.fc.weight.detach().clone()
    report = prune(model, 0.5, scope="layer", as_masks=True)
    assert hasattr(model.fc, "weight_orig") and hasattr(model.fc, "weight_mask")
    assert torch.equal(model.fc.weight_orig.detach(), orig)  # values untouched
    pruned = paramscope.count(model).pruned
    for row in report.tensors:
        assert pruned[row["name"].replace(".weight", ".weight_orig")]["nonzero"] == row["kept"]
    assert model(torch.tensor([0, 4])).shape == (2, 3)


def test_tied_weights_are_pruned_once_and_listed_once():
    emb, lm = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    lm.weight = emb.weight  # GPT-2 style tie
    shared = nn.Linear(4, 4)
    model = nn.ModuleDict({"emb": emb, "a": shared, "b": shared, "lm": lm})
    report = prune(model, 0.5, scope="layer")
    assert [r["name"] for r in report.tensors] == ["emb.weight", "a.weight"]
    assert _zeros(lm.weight) == 20 and lm.weight is emb.weight

    t = torch.randn(6, 6)
    pd = ParamDict({"wte.weight": t, "lm_head.weight": t})
    rep = prune(pd, 0.5)
    assert [r["name"] for r in rep.tensors] == ["wte.weight"] and rep.total["zeros"] == 18


def test_paramdict_in_place():
    pd = ParamDict({"w": torch.randn(4, 5), "b": torch.randn(4)})
    report = prune(pd, 0.25, scope="layer")
    assert _zeros(pd["w"]) == 5 and _zeros(pd["b"]) == 0
    assert [r["name"] for r in report.tensors] == ["w"]


# ------------------------------------------------------------------------------- report, errors
def test_report_json_keys_equal_attributes():
    r = SparsityReport()
    r.add("w", torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    r.add("v", {"elements": 6, "zeros": 1})
    d = json.loads(json.dumps(r.to_dict()))
    assert list(d) == ["tensors", "total", "notes"] and d["notes"] == []
    assert [list(row) for row in d["tensors"]] == [FIELDS, FIELDS]
    assert d["total"] == {"name": "total", "elements": 10, "zeros": 3, "sparsity": 0.3, "kept": 7}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: prune({"w": torch.randn(4, 4)}, 1.0), "amount.*1"),
        (lambda: prune({"w": torch.randn(4, 4)}, -0.1), "amount.*-0.1"),
        (lambda: prune({"w": torch.randn(4, 4)}, None, structure="n:m", n=4, m=4), "n < m"),
        (lambda: prune({"w": torch.randn(4, 6)}, None, structure="n:m"), r"\(4, 6\)"),
        (lambda: keep_mask(torch.randn(4, 6), None, structure="n:m"), r"\(4, 6\)"),
        (lambda: keep_mask(torch.randn(5), 0.5, structure="rows"), r"\(5,\)"),
        (lambda: prune({"w": torch.randn(4, 4)}, 0.5, structure="rows"), "scope='layer'"),
        (lambda: prune({"w": torch.randn(4, 4)}, 0.5, method="l2"), "method.*'l2'"),
        (lambda: prune({"w": torch.randn(4, 4)}, 0.3, structure="n:m"), "amount.*0.5"),
        (lambda: prune({"w": torch.randn(4, 4)}, 0.5, as_masks=True), "as_masks"),
    ],
)
def test_errors_name_the_option_and_the_values(call, match):
    with pytest.raises(ParamscopeError, match=match):
        call()


def test_bad_input_changes_nothing():
    d = {"a": torch.randn(4, 8), "b": torch.randn(4, 6)}
    before = {k: v.clone() for k, v in d.items()}
    with pytest.raises(ParamscopeError, match="'b'"):
        prune(d, None, structure="n:m")
    assert all(torch.equal(d[k], before[k]) for k in d)


def test_module_import_does_not_import_torch():
    assert without_torch("import paramscope.compress._prune") is None


def test_layer_scope_on_a_tensor_above_the_gather_limit_uses_the_multipass_search(monkeypatch):
    monkeypatch.setattr(_prune, "GATHER_LIMIT", 100)
    monkeypatch.setattr(_prune, "BINS", 16)
    t = torch.randint(-50, 50, (30, 40)).float()
    k = round(0.35 * t.numel())
    keep = keep_mask(t, 0.35)
    assert torch.equal(keep, _oracle_keep([t], k)[0])
