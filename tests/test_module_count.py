"""Counting live modules: every hard case against the framework (or a hand count) as oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import paramscope
from paramscope import DType
from paramscope.counting import scan_module


def oracle(model: nn.Module) -> int:
    """Unique parameters as torch sees them (``parameters()`` dedups by identity)."""
    return sum(p.numel() for p in model.parameters())


def assert_tree_adds_up(node) -> None:
    """Every node = its own params + its children's; recursively."""
    kids = sum(c.params for c in node.children)
    assert node.params == node.own_params + kids, node.path
    assert node.trainable <= node.params
    for c in node.children:
        assert_tree_adds_up(c)


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 8) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.block = nn.Linear(dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied


def test_tied_lm_head_counted_once() -> None:
    m = TinyLM()
    c = paramscope.count(m)
    assert c.params == oracle(m) == 50 * 8 + 8 * 8 + 8
    assert c.ties == [["wte.weight", "lm_head.weight"]]
    s = paramscope.summary(m)
    head = next(n for n in s.root.children if n.path == "lm_head")
    assert head.params == 0 and s.root.params == c.params
    assert_tree_adds_up(s.root)


def test_shared_module_instance_counted_once_and_named() -> None:
    shared = nn.Linear(8, 8)
    m = nn.Sequential(nn.Linear(4, 8), shared, nn.ReLU(), shared)
    c = paramscope.count(m)
    assert c.params == oracle(m) == 4 * 8 + 8 + 8 * 8 + 8
    assert c.shared == {"3": "1"}
    s = paramscope.summary(m)
    third = s.root.children[3]
    assert third.shared_with == "1" and third.params == 0
    assert s.root.children[1].params == 72
    assert_tree_adds_up(s.root)
    assert s.by_type["Linear"] == {"modules": 2, "params": 32 + 8 + 72}


def test_parameters_on_containers_and_parameter_lists() -> None:
    seq = nn.Sequential(nn.Linear(3, 3))
    seq.register_parameter("scale", nn.Parameter(torch.ones(5)))
    holder = nn.Module()
    holder.seq = seq
    holder.plist = nn.ParameterList([nn.Parameter(torch.zeros(2, 2)) for _ in range(3)])
    holder.pdict = nn.ParameterDict({"a": nn.Parameter(torch.zeros(7)), "b": nn.Parameter(
        torch.zeros(1, 4))})
    c = paramscope.count(holder)
    assert c.params == oracle(holder) == 12 + 5 + 12 + 11
    s = paramscope.summary(holder)
    assert s.root.children[0].own_params == 5
    assert_tree_adds_up(s.root)


def test_lazy_modules_do_not_crash_and_are_reported() -> None:
    m = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    c = paramscope.count(m)
    assert c.uninitialized == ["0.weight", "0.bias"]
    assert c.params == 4 * 2 + 2
    assert any("uninitialised" in n for n in c.notes)
    m(torch.zeros(1, 6))  # materialise
    c2 = paramscope.count(m)
    assert c2.uninitialized == [] and c2.params == oracle(m) == 6 * 4 + 4 + 10


def test_pruned_module_logical_and_nonzero_counts() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(10, 6)
    prune.l1_unstructured(lin, "weight", amount=0.5)
    c = paramscope.count(lin)
    assert c.params == 60 + 6  # weight_orig (logical) + bias
    assert c.buffers == 60  # weight_mask
    assert c.pruned == {"weight_orig": {"params": 60, "nonzero": 30}}
    assert int(torch.count_nonzero(lin.weight)) == 30
    with torch.device("meta"):
        lm = nn.Linear(10, 6)
    prune.identity(lm, "weight")
    assert paramscope.count(lm).pruned == {"weight_orig": {"params": 60, "nonzero": None}}


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_dynamic_quantized_linear_counts_logical_params() -> None:
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    expected = oracle(model)
    q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    assert oracle(q) == 0  # torch itself sees no parameters: the weights are packed
    c = paramscope.count(q)
    assert c.params == expected == 16 * 8 + 8 + 8 * 4 + 4
    assert c.trainable == 0
    scan = scan_module(q)
    assert scan.packed == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert {e.name: e.dtype for e in scan.entries}["0.weight"] is DType.I8


def test_register_packed_hook() -> None:
    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("blob", torch.zeros(10, dtype=torch.uint8))  # 20 int4 values

    paramscope.register_packed(Packed, lambda m: [("weight", (4, 5), DType.F4)])
    c = paramscope.count(nn.Sequential(Packed()))
    assert c.params == 20 and c.buffers == 10
    assert c.by_dtype["F4"] == {"elements": 20, "bytes": 10}


def test_fast_path_layers_counted_without_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("forward must not run")

    monkeypatch.setattr(nn.TransformerEncoderLayer, "forward", boom)
    monkeypatch.setattr(nn.MultiheadAttention, "forward", boom)
    c = paramscope.count(enc)
    assert c.params == oracle(enc)
    s = paramscope.summary(enc)
    assert_tree_adds_up(s.root)


def test_meta_device_ties_by_identity_not_data_ptr() -> None:
    with torch.device("meta"):
        m = TinyLM()
        other = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    assert all(p.data_ptr() == 0 for p in other.parameters())
    assert paramscope.count(m).params == oracle(m)
    c = paramscope.count(other)
    assert c.ties == [] and c.params == oracle(other) == 144


def test_persistent_and_non_persistent_buffers_apart() -> None:
    m = nn.Module()
    m.register_buffer("a", torch.zeros(3))
    m.register_buffer("b", torch.zeros(5), persistent=False)
    m.bn = nn.BatchNorm1d(4)
    c = paramscope.count(m)
    assert c.buffers == sum(b.numel() for b in m.buffers()) == 3 + 5 + 4 + 4 + 1
    assert c.nonpersistent_buffers == 5
    assert c.params == 8


def test_frozen_counts() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    m[0].requires_grad_(False)
    c = paramscope.count(m)
    assert c.frozen == 20 and c.trainable == 10
    s = paramscope.summary(m)
    assert s.root.children[0].trainable == 0 and s.root.children[1].trainable == 10


def test_summary_formulas_and_json() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    s = paramscope.summary(m, depth=1)
    d = s.to_dict()
    assert d["formulas"]["0"]["params"] == 3 * 8 * 9 + 8
    assert d["formulas"]["2"]["expression"] == "8×2 + 2 = 18"
    assert "1" not in d["formulas"]  # Flatten has no formula
    assert d["total"]["params"] == oracle(m)
    assert sum(r["params"] for r in d["by_type"].values()) == oracle(m)
    assert len(s.rows()) == 4 and len(s.rows(0)) == 1


LAYERS = st.sampled_from(["linear", "conv", "bn", "emb", "lstm", "shared", "frozen"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(LAYERS, st.integers(1, 6), st.integers(1, 6)), min_size=1,
                max_size=6), st.booleans())
def test_random_models_match_the_framework(spec, on_meta: bool) -> None:
    def build() -> nn.Module:
        mods: list[nn.Module] = []
        for kind, a, b in spec:
            if kind == "linear":
                mods.append(nn.Linear(a, b, bias=a % 2 == 0))
            elif kind == "conv":
                mods.append(nn.Conv2d(a, b, 3, groups=1))
            elif kind == "bn":
                mods.append(nn.BatchNorm2d(a))
            elif kind == "emb":
                mods.append(nn.Embedding(a + 3, b))
            elif kind == "lstm":
                mods.append(nn.LSTM(a, b, num_layers=1 + a % 2, bidirectional=b % 2 == 0))
            elif kind == "shared" and mods:
                mods.append(mods[0])
            elif kind == "frozen":
                mods.append(nn.Linear(a, b).requires_grad_(False))
        return nn.Sequential(*mods)

    if on_meta:
        with torch.device("meta"):
            m = build()
    else:
        m = build()
    c = paramscope.count(m)
    assert c.params == oracle(m)
    assert c.trainable == sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert c.buffers == sum(b.numel() for b in m.buffers())
    s = paramscope.summary(m)
    assert s.root.params == c.params
    assert_tree_adds_up(s.root)
    assert sum(r["params"] for r in s.by_type.values()) == c.params
