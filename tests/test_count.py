"""count(): exact totals from any source, ties once, a consistent tree; property-tested."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import paramscope
from paramscope import Count, DType, Entry, Manifest, Node, ParamDict, Role, RoleSource


def persistent_buffer_numel(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for mod in model.modules():
        for name, b in mod._buffers.items():
            if b is None or name in mod._non_persistent_buffers_set or id(b) in seen:
                continue
            seen.add(id(b))
            total += b.numel()
    return total


def param_oracle(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())  # the framework dedupes shared parameters
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def check_tree(c: Count, m: Manifest) -> None:
    """Every node's counts are its children's plus the entries directly under it."""
    stored = [e for e in m.values() if e.tie is None]

    def direct(path: str) -> list[Entry]:
        return [e for e in stored if e.name.rpartition(".")[0] == path]

    def visit(node: Node, depth: int) -> int:
        leaves = direct(node.path)
        kids = list(node.children.values())
        for field in ("params", "trainable", "buffers", "bytes", "entries"):
            own = {
                "params": sum(e.numel for e in leaves if e.role is Role.PARAM),
                "trainable": sum(e.numel for e in leaves if e.role is Role.PARAM and e.trainable),
                "buffers": sum(e.numel for e in leaves if e.role is Role.BUFFER),
                "bytes": sum(e.nbytes for e in leaves),
                "entries": len(leaves),
            }[field]
            assert getattr(node, field) == own + sum(getattr(k, field) for k in kids), (
                node.path,
                field,
            )
        for seg, kid in node.children.items():
            expected = f"{node.path}.{seg}" if node.path else seg
            assert kid.path == expected
            assert kid.entries > 0
            visit(kid, depth + 1)
        return node.entries

    root = c.tree
    assert root.path == ""
    assert (root.params, root.trainable, root.buffers, root.bytes, root.entries) == (
        c.params,
        c.trainable,
        c.buffers,
        c.bytes,
        c.entries,
    )
    visit(root, 0)


def check_totals(c: Count) -> None:
    assert c.frozen == c.params - c.trainable
    assert c.total == c.params + c.buffers
    assert sum(d["bytes"] for d in c.by_dtype.values()) == c.bytes
    assert sum(d["elements"] for d in c.by_dtype.values()) == c.total


def test_seed_example():
    torch.manual_seed(0)
    lin = nn.Linear(784, 10)
    c = paramscope.count(lin)
    assert c.params == 7850 == 784 * 10 + 10
    assert c.trainable == 7850 and c.frozen == 0 and c.buffers == 0
    assert c.bytes == 7850 * 4
    assert c.by_dtype == {"F32": {"elements": 7850, "bytes": 31400}}
    assert c.entries == 2
    assert c.format == "module"
    check_tree(c, ParamDict.from_module(lin).manifest())


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6)) for _ in range(2)]
        )
        self.head = nn.Linear(6, 20, bias=False)
        self.head.weight = self.embed.weight
        self.blocks[0].requires_grad_(False)
        self.register_buffer("scratch", torch.zeros(9), persistent=False)
        self.half = nn.Linear(3, 3).to(torch.float16)


def test_all_sources_agree(tmp_path):
    model = Net()
    pd = ParamDict.from_module(model)
    path = paramscope.save(pd, tmp_path / "net.safetensors")
    sharded = paramscope.save(pd, tmp_path / "sh", max_shard_size=200)
    m = paramscope.read_manifest(path)

    counts = {
        "module": paramscope.count(model),
        "paramdict": paramscope.count(pd),
        "path": paramscope.count(path),
        "str": paramscope.count(str(path)),
        "manifest": paramscope.count(m),
        "sharded": paramscope.count(sharded.parent),
    }
    params, trainable = param_oracle(model)
    for src, c in counts.items():
        assert c.params == params, src
        assert c.trainable == trainable, src
        # a module's count also holds its non-persistent buffers, reported apart
        assert c.buffers - c.nonpersistent_buffers == persistent_buffer_numel(model), src
        if src == "module":
            assert c.nonpersistent_buffers == 9
            continue
        assert c.by_dtype == counts["paramdict"].by_dtype, src
        assert c.bytes == counts["paramdict"].bytes, src
        assert c.entries == counts["paramdict"].entries, src
        assert sorted(map(sorted, c.ties)) == [["embed.weight", "head.weight"]], src
        check_totals(c)
    assert counts["path"].source == str(path)
    assert counts["path"].roles is RoleSource.EXACT
    check_tree(counts["path"], m)
    check_tree(counts["module"], ParamDict.from_module(model, buffers="all").manifest())
    assert counts["module"].frozen == 6 * 6 + 6 + 6 + 6  # blocks.0: linear + bn affine
    assert counts["path"].by_dtype["F16"] == {"elements": 12, "bytes": 24}
    assert counts["path"].by_dtype["I64"] == {"elements": 2, "bytes": 16}  # num_batches_tracked
    # the non-persistent buffer is out by default
    assert "scratch" not in m
    assert paramscope.count(ParamDict.from_module(model, buffers="all")).buffers == (
        persistent_buffer_numel(model) + 9
    )


def test_ties_counted_once():
    t = torch.randn(5, 5)
    pd = ParamDict({"a.w": t, "b.w": t, "c.w": t, "d.b": torch.randn(5)})
    c = paramscope.count(pd)
    assert c.params == 30
    assert c.entries == 2
    assert c.ties == [["a.w", "b.w", "c.w"]]
    assert set(c.tree.children) == {"a", "d"}  # aliases add no node
    check_tree(c, pd.manifest())


def test_count_manifest_by_hand():
    m = Manifest(
        [
            Entry("enc.layers.0.w", (4, 4), DType.BF16),
            Entry("enc.layers.0.b", (4,), DType.BF16, trainable=False),
            Entry("enc.layers.1.w", (4, 4), DType.BF16),
            Entry("enc.norm.running_mean", (4,), DType.F32, role=Role.BUFFER, trainable=False),
            Entry("enc.tied", (4, 4), DType.BF16, tie="enc.layers.0.w"),
            Entry("packed", (3, 8), DType.F4),
            Entry("top", (), DType.F64),
        ]
    )
    c = paramscope.count(m)
    assert c.params == 16 + 4 + 16 + 24 + 1
    assert c.trainable == c.params - 4
    assert c.buffers == 4
    assert c.bytes == 2 * 36 + 16 + 12 + 8
    assert c.by_dtype == {
        "BF16": {"elements": 36, "bytes": 72},
        "F32": {"elements": 4, "bytes": 16},
        "F4": {"elements": 24, "bytes": 12},
        "F64": {"elements": 1, "bytes": 8},
    }
    assert c.tree.children["enc"].children["layers"].params == 36
    assert c.tree.children["enc"].children["layers"].children["0"].trainable == 16
    check_tree(c, m)
    check_totals(c)
    d = c.to_dict(depth=None)
    assert d["params"] == c.params and d["tree"]["children"][0]["path"] == "enc"


def test_group_subtotals_add_up():
    model = Net()
    m = ParamDict.from_module(model).manifest()
    c = paramscope.count(m)
    for depth in range(4):
        groups = paramscope.group(m, depth)
        assert sum(g.params for g in groups) == c.params
        assert sum(g.buffers for g in groups) == c.buffers
        assert sum(g.bytes for g in groups) == c.bytes
        assert sum(len(g.entries) for g in groups) == len(m)
    g1 = {g.prefix: g for g in paramscope.group(m, 1)}
    assert g1["head"].params == 0  # the alias adds nothing
    assert g1["embed"].params == 120
    filtered = paramscope.group(m, 1, "*.bias")
    assert all(e.name.endswith(".bias") for g in filtered for e in g.entries)


# --------------------------------------------------------------------------- property tests

layer = st.one_of(
    st.tuples(st.just("linear"), st.integers(1, 9), st.integers(1, 9), st.booleans()),
    st.tuples(st.just("conv"), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)),
    st.tuples(st.just("bn"), st.integers(1, 8), st.booleans(), st.booleans()),
    st.tuples(st.just("emb"), st.integers(1, 12), st.integers(1, 6), st.booleans()),
)


def build(spec: tuple) -> nn.Module:
    kind = spec[0]
    if kind == "linear":
        return nn.Linear(spec[1], spec[2], bias=spec[3])
    if kind == "conv":
        return nn.Conv2d(spec[1], spec[2], spec[3])
    if kind == "bn":
        return nn.BatchNorm2d(spec[1], affine=spec[2], track_running_stats=spec[3])
    return nn.Embedding(spec[1], spec[2])


@settings(max_examples=25, deadline=None)
@given(
    specs=st.lists(layer, min_size=1, max_size=6),
    frozen=st.lists(st.booleans(), min_size=6, max_size=6),
    share=st.booleans(),
    tie=st.booleans(),
    extra_buffer=st.booleans(),
)
def test_random_nets(specs, frozen, share, tie, extra_buffer):
    layers = [build(s) for s in specs]
    for mod, f in zip(layers, frozen, strict=False):
        if f:
            mod.requires_grad_(False)
    if share:
        layers.append(layers[0])  # a shared module: its parameters are ties
    model = nn.Sequential(*layers)
    if tie:
        model.add_module("emb", nn.Embedding(7, 3))
        model.add_module("out", nn.Linear(3, 7, bias=False))
        model.out.weight = model.emb.weight
    if extra_buffer:
        model.register_buffer("tmp", torch.zeros(4), persistent=False)

    params, trainable = param_oracle(model)
    c = paramscope.count(model)
    assert c.params == params
    assert c.trainable == trainable
    assert c.buffers - c.nonpersistent_buffers == persistent_buffer_numel(model)
    assert c.buffers == sum(b.numel() for b in model.buffers())
    check_totals(c)
    pd = ParamDict.from_module(model)
    check_tree(c, ParamDict.from_module(model, buffers="all").manifest())
    if share and any(True for _ in layers[0].parameters()):
        assert c.ties

    with tempfile.TemporaryDirectory() as d:
        path = paramscope.save(model, Path(d) / "m.safetensors")
        cp = paramscope.count(path)
        cs = paramscope.count(pd)  # what a save holds: persistent buffers only
        assert (cp.params, cp.trainable, cp.buffers, cp.bytes, cp.entries) == (
            cs.params,
            cs.trainable,
            cs.buffers,
            cs.bytes,
            cs.entries,
        )
        assert (cs.params, cs.trainable) == (c.params, c.trainable)
        assert cp.by_dtype == cs.by_dtype
        assert sorted(map(sorted, cp.ties)) == sorted(map(sorted, c.ties))
        check_tree(cp, paramscope.read_manifest(path))


def test_inspect_filter_matching_nothing_raises_with_suggestions(tmp_path: Path) -> None:
    from paramscope._errors import MissingNameError

    src = tmp_path / "m.safetensors"
    paramscope.save(
        ParamDict(
            {
                "encoder.0.weight": torch.ones(2, 2),
                "encoder.1.weight": torch.ones(2, 2),
                "lm_head.weight": torch.ones(3, 2),
            }
        ),
        src,
    )
    assert paramscope.inspect(src, pattern="encoder.*").total.params == 8
    for source in (src, paramscope.read_manifest(src)):
        try:
            paramscope.inspect(source, pattern="encodr.*")
        except MissingNameError as exc:
            message = str(exc)
        else:
            raise AssertionError("a filter that matches nothing must raise")
        assert "\n" not in message
        assert "'encodr.*' matches no entry" in message
        assert "did you mean 'encoder.*'" in message
        assert message.endswith("names start with 'encoder', 'lm_head'")
    assert isinstance(MissingNameError("x"), paramscope.ParamscopeError)
