"""ParamDict: entries, names, updates, views, ties and from_module."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import paramscope
from paramscope import (
    DTypeMismatchError,
    DuplicateNameError,
    EntryMeta,
    InvalidNameError,
    MissingNameError,
    ParamDict,
    ParamscopeError,
    Role,
    ShapeMismatchError,
    TargetError,
)


def snapshot(pd: ParamDict) -> tuple:
    """Everything observable about a ParamDict, for 'nothing changed' checks."""
    return (
        list(pd),
        [id(pd[n]) for n in pd],
        [pd.meta(n) for n in pd],
        [pd.alias_of(n) for n in pd],
        pd.ties(),
    )


def three() -> ParamDict:
    pd = ParamDict()
    pd.add("enc.0.weight", torch.randn(3, 2))
    pd.add("enc.0.bias", torch.randn(3))
    pd.add("dec.weight", torch.randn(2, 3), tags=("head",))
    return pd


# --------------------------------------------------------------------------- add / remove


def test_add_and_defaults():
    pd = ParamDict()
    w = torch.randn(2)
    pd.add("a.w", w)
    pd.add("a.rm", torch.zeros(2), role="buffer")
    pd.add("a.frozen", torch.zeros(2), trainable=False, tags=["x", "y"], extra={"k": [1]})
    assert pd["a.w"] is w  # kept, not copied
    assert pd.meta("a.w") == EntryMeta(Role.PARAM, True, (), {})
    assert pd.meta("a.rm") == EntryMeta(Role.BUFFER, False, (), {})
    assert pd.meta("a.frozen") == EntryMeta(Role.PARAM, False, ("x", "y"), {"k": [1]})
    assert len(pd) == 3 and "a.w" in pd and "a" not in pd
    assert list(pd) == ["a.w", "a.rm", "a.frozen"]
    assert pd.numel() == 6


def test_add_refuses_duplicate():
    pd = three()
    before = pd["enc.0.bias"]
    with pytest.raises(DuplicateNameError, match=re.escape("enc.0.bias")) as info:
        pd.add("enc.0.bias", torch.zeros(3))
    assert isinstance(info.value, ParamscopeError)
    assert pd["enc.0.bias"] is before


@pytest.mark.parametrize("name", ["", "a..b", "a. b", ".a", "a.", " a", "a\tb", 3, None, b"a"])
def test_add_refuses_invalid_names(name):
    pd = ParamDict()
    with pytest.raises(InvalidNameError):
        pd.add(name, torch.zeros(1))
    assert len(pd) == 0


def test_add_refuses_non_tensor():
    pd = ParamDict()
    with pytest.raises(ParamscopeError, match=re.escape("torch.Tensor")):
        pd.add("a", [1.0, 2.0])
    with pytest.raises(InvalidNameError, match=r"entry 'a': expected a torch\.Tensor, found float"):
        ParamDict({"a": 1.0})


def test_constructor_ties_same_object():
    t = torch.randn(2)
    pd = ParamDict({"a": t, "b": torch.randn(2), "c": t})
    assert pd.ties() == [["a", "c"]]
    assert pd["c"] is pd["a"] is t
    assert pd.stored() == ["a", "b"]
    assert pd.numel() == 4


def test_remove_plain_and_missing():
    pd = three()
    w = pd["dec.weight"]
    assert pd.remove("dec.weight") is w
    assert "dec.weight" not in pd
    with pytest.raises(MissingNameError, match=re.escape("did you mean 'enc.0.bias'")):
        pd.remove("enc.0.bais")
    del pd["enc.0.bias"]
    assert list(pd) == ["enc.0.weight"]


def test_remove_tie_target_promotes_alias():
    t = torch.randn(4)
    pd = ParamDict()
    pd.add("a", t, tags=("orig",))
    pd.tie("b", "a")
    pd.tie("c", "a")
    pd.set_meta("b", tags=("alias",))
    removed = pd.remove("a")
    assert removed is t
    assert list(pd) == ["b", "c"]
    assert pd["b"] is t and pd["c"] is t  # value kept
    assert pd.alias_of("b") is None
    assert pd.alias_of("c") == "b"
    assert pd.ties() == [["b", "c"]]
    assert pd.stored() == ["b"]
    assert pd.meta("b").tags == ("alias",)
    assert pd.numel() == 4


def test_remove_alias_keeps_target():
    pd = ParamDict({"a": torch.ones(2)})
    pd.tie("b", "a")
    pd.remove("b")
    assert list(pd) == ["a"] and pd.ties() == []
    assert torch.equal(pd["a"], torch.ones(2))


def test_removed_target_saves_under_heir(tmp_path):
    pd = ParamDict({"a": torch.arange(3.0)})
    pd.tie("b", "a")
    pd.tie("c", "a")
    pd.remove("a")
    out = paramscope.load(paramscope.save(pd, tmp_path / "h.safetensors"))
    assert out["c"] is out["b"]
    assert out["b"].tolist() == [0.0, 1.0, 2.0]


# --------------------------------------------------------------------------- rename


def test_rename_single():
    pd = three()
    w = pd["dec.weight"]
    assert pd.rename("dec.weight", "head.weight") == {"dec.weight": "head.weight"}
    assert list(pd) == ["enc.0.weight", "enc.0.bias", "head.weight"]  # order kept
    assert pd["head.weight"] is w
    assert pd.meta("head.weight").tags == ("head",)
    with pytest.raises(MissingNameError):
        pd["dec.weight"]


def test_rename_single_collision_refused():
    pd = three()
    before = snapshot(pd)
    with pytest.raises(DuplicateNameError):
        pd.rename("dec.weight", "enc.0.bias")
    with pytest.raises(MissingNameError):
        pd.rename("nope", "x")
    with pytest.raises(InvalidNameError):
        pd.rename("dec.weight", "bad..name")
    assert snapshot(pd) == before


def test_rename_rules():
    pd = ParamDict()
    for n in ("module.enc.0.weight", "module.enc.1.weight", "module.head.bias"):
        pd.add(n, torch.zeros(1))
    pd.tie("module.head.alias", "module.enc.0.weight")
    got = pd.rename(rules=[(r"^module\.", ""), (r"^enc\.(\d+)\.", r"encoder.layer\1.")])
    assert got == {
        "module.enc.0.weight": "encoder.layer0.weight",
        "module.enc.1.weight": "encoder.layer1.weight",
        "module.head.bias": "head.bias",
        "module.head.alias": "head.alias",
    }
    assert list(pd) == ["encoder.layer0.weight", "encoder.layer1.weight", "head.bias", "head.alias"]
    assert pd.alias_of("head.alias") == "encoder.layer0.weight"
    assert pd["head.alias"] is pd["encoder.layer0.weight"]


def test_rename_rules_swap():
    pd = ParamDict({"a": torch.zeros(1), "b": torch.ones(1)})
    pd.rename(rules=[(r"^a$", "tmp"), (r"^b$", "a"), (r"^tmp$", "b")])
    assert pd["a"].item() == 1.0 and pd["b"].item() == 0.0


def test_rename_rules_collision_changes_nothing():
    pd = three()
    pd.tie("dec.alias", "enc.0.weight")
    before = snapshot(pd)
    with pytest.raises(DuplicateNameError, match=re.escape("enc.0.weight")):
        pd.rename(rules=[(r"\.bias$", ".weight")])
    with pytest.raises(DuplicateNameError, match=re.escape("dec.weight")):
        pd.rename(rules=[(r"^enc\.0\.", "dec.")])  # enc.0.weight -> dec.weight, taken
    assert snapshot(pd) == before


def test_rename_rules_invalid_regex_or_result():
    pd = three()
    before = snapshot(pd)
    with pytest.raises(InvalidNameError, match="regex"):
        pd.rename(rules=[("(", "x")])
    with pytest.raises(InvalidNameError):
        pd.rename(rules=[(r"^enc", ".")])
    with pytest.raises(InvalidNameError):
        pd.rename()
    assert snapshot(pd) == before


# --------------------------------------------------------------------------- update


def test_update_in_place_and_refusals():
    pd = three()
    w = pd["enc.0.bias"]
    pd.update("enc.0.bias", torch.ones(3))
    assert pd["enc.0.bias"] is w and torch.equal(w, torch.ones(3))

    with pytest.raises(ShapeMismatchError, match=r"\(3,\)"):
        pd.update("enc.0.bias", torch.ones(4))
    with pytest.raises(DTypeMismatchError, match="float16"):
        pd.update("enc.0.bias", torch.ones(3, dtype=torch.float16))
    with pytest.raises(MissingNameError):
        pd.update("enc.0.biass", torch.ones(3))
    assert pd["enc.0.bias"] is w

    pd.update("enc.0.bias", torch.ones(5), allow_shape_change=True)
    assert pd["enc.0.bias"].shape == (5,)
    pd.update("enc.0.bias", torch.ones(5, dtype=torch.bfloat16), allow_dtype_change=True)
    assert pd["enc.0.bias"].dtype == torch.bfloat16
    pd["enc.0.bias"] = torch.full((5,), 2.0, dtype=torch.bfloat16)  # __setitem__ updates
    assert pd["enc.0.bias"].tolist() == [2.0] * 5
    pd["new.entry"] = torch.zeros(1)  # __setitem__ adds
    assert "new.entry" in pd


def test_update_alias_changes_whole_group():
    pd = ParamDict({"a": torch.zeros(2)})
    pd.tie("b", "a")
    pd.update("b", torch.ones(2))
    assert pd["a"].tolist() == [1.0, 1.0]
    pd.update("b", torch.ones(3), allow_shape_change=True)
    assert pd["a"] is pd["b"] and pd["a"].shape == (3,)


def test_update_writes_through_to_module():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    pd = ParamDict.from_module(model)
    pd.update("0.weight", torch.full((2, 3), 7.0))
    pd.update("1.running_mean", torch.tensor([1.0, 2.0]))
    assert torch.equal(model[0].weight.detach(), torch.full((2, 3), 7.0))
    assert model[1].running_mean.tolist() == [1.0, 2.0]
    assert model[0].weight.requires_grad  # still a trainable parameter


def test_set_meta():
    pd = three()
    pd.set_meta("enc.0.bias", role="buffer", trainable=False, tags=["t"], extra={"e": 1})
    assert pd.meta("enc.0.bias") == EntryMeta(Role.BUFFER, False, ("t",), {"e": 1})
    with pytest.raises(MissingNameError):
        pd.meta("nope")
    with pytest.raises(ValueError):
        pd.set_meta("enc.0.bias", role="weights")


# --------------------------------------------------------------------------- views


def test_select_glob_regex_list():
    pd = three()
    assert list(pd.select("*.weight")) == ["enc.0.weight", "dec.weight"]
    assert list(pd.select("enc.*")) == ["enc.0.weight", "enc.0.bias"]
    assert list(pd.select(r"re:enc\.\d+\.bias")) == ["enc.0.bias"]
    assert list(pd.select("re:enc")) == []  # regex must match the whole name
    assert list(pd.select(["dec.*", "*.bias"])) == ["enc.0.bias", "dec.weight"]
    view = pd.select("dec.*")
    assert view["dec.weight"] is pd["dec.weight"]  # shares tensors
    assert view.meta("dec.weight").tags == ("head",)
    view.update("dec.weight", torch.zeros(2, 3))
    assert float(pd["dec.weight"].abs().sum()) == 0.0
    with pytest.raises(InvalidNameError):
        pd.select("re:(")


def test_select_keeps_ties_and_promotes_lone_aliases():
    t = torch.randn(2)
    pd = ParamDict({"x.a": t})
    pd.tie("y.b", "x.a")
    pd.tie("y.c", "x.a")
    both = pd.select(["x.a", "y.b"])
    assert both.ties() == [["x.a", "y.b"]]
    lone = pd.select("y.*")  # target not selected: first alias holds the storage
    assert lone["y.b"] is t and lone["y.c"] is t
    assert lone.stored() == ["y.b"]
    assert lone.ties() == [["y.b", "y.c"]]
    assert lone.numel() == 2


def test_prefix_view():
    pd = three()
    pd.tie("enc.0.alias", "enc.0.weight")
    enc = pd.prefix("enc.0")
    assert list(enc) == ["weight", "bias", "alias"]
    assert enc["weight"] is pd["enc.0.weight"]
    assert enc.ties() == [["weight", "alias"]]
    assert list(pd.prefix("enc.")) == ["0.weight", "0.bias", "0.alias"]
    assert list(pd.prefix("en")) == []  # a prefix is whole segments


def test_nested_round_trip():
    pd = three()
    pd.tie("dec.alias", "enc.0.weight")
    nested = pd.to_nested()
    assert set(nested) == {"enc", "dec"}
    assert nested["enc"]["0"]["bias"] is pd["enc.0.bias"]
    assert nested["dec"]["alias"] is nested["enc"]["0"]["weight"]
    back = ParamDict.from_nested(nested, metadata={"m": "1"})
    assert list(back) == list(pd)
    assert back.ties() == [["enc.0.weight", "dec.alias"]]
    assert all(back[n] is pd[n] for n in pd)
    assert back.metadata == {"m": "1"}


def test_to_nested_refuses_leaf_and_prefix():
    pd = ParamDict({"a": torch.zeros(1), "a.b": torch.zeros(1)})
    with pytest.raises(InvalidNameError):
        pd.to_nested()
    pd2 = ParamDict({"a.b": torch.zeros(1), "a": torch.zeros(1)})
    with pytest.raises(InvalidNameError):
        pd2.to_nested()


def test_state_dict_and_manifest():
    pd = three()
    pd.tie("dec.alias", "dec.weight")
    sd = pd.state_dict()
    assert list(sd) == list(pd)
    assert sd["dec.alias"] is sd["dec.weight"]
    m = pd.manifest()
    assert m["dec.alias"].tie == "dec.weight"
    assert m["enc.0.weight"].shape == (3, 2)
    assert m.ties() == [["dec.weight", "dec.alias"]]
    assert "ParamDict(4 entries, 15 elements: 15 trainable, 0 frozen)" in repr(pd)


# --------------------------------------------------------------------------- ties


def test_tie_untie_ties():
    pd = ParamDict({"a": torch.randn(3), "b": torch.randn(3), "c": torch.randn(2)})
    pd.tie("b", "a")  # existing same-shape entry: its value is dropped
    assert pd["b"] is pd["a"]
    pd.tie("d", "b")  # tying to an alias resolves to its target
    assert pd.alias_of("d") == "a"
    assert pd.ties() == [["a", "b", "d"]]
    with pytest.raises(ShapeMismatchError):
        pd.tie("c", "a")
    with pytest.raises(MissingNameError):
        pd.tie("e", "zzz")
    with pytest.raises(InvalidNameError):
        pd.tie("a", "a")
    with pytest.raises(InvalidNameError):
        pd.tie("bad..", "a")
    pd2 = ParamDict({"x": torch.zeros(2), "y": torch.zeros(2, dtype=torch.int32)})
    with pytest.raises(DTypeMismatchError):
        pd2.tie("y", "x")

    pd.untie("b")
    assert pd["b"] is not pd["a"] and torch.equal(pd["b"], pd["a"])
    pd["b"].add_(1)
    assert not torch.equal(pd["b"], pd["a"])
    assert pd.ties() == [["a", "d"]]
    with pytest.raises(InvalidNameError):
        pd.untie("a")


def test_tie_existing_target_moves_its_aliases():
    pd = ParamDict({"a": torch.zeros(2), "b": torch.ones(2)})
    pd.tie("c", "b")
    pd.tie("b", "a")  # b (with alias c) becomes an alias of a: c follows
    assert pd["c"] is pd["a"]
    assert sorted(pd.ties()[0]) == ["a", "b", "c"]


# --------------------------------------------------------------------------- from_module


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.proj = nn.Linear(8, 8)
        self.other = nn.Linear(8, 8)  # same shapes as proj, not tied
        self.lm_head = nn.Linear(8, 50, bias=False)
        self.lm_head.weight = self.embed.weight


def test_from_module_ties_and_roles():
    model = TiedLM()
    pd = ParamDict.from_module(model)
    assert set(pd) == set(model.state_dict())
    assert pd.ties() == [["embed.weight", "lm_head.weight"]]
    assert pd["embed.weight"].data_ptr() == model.embed.weight.data_ptr()
    assert pd.numel() == sum(p.numel() for p in model.parameters())


def test_from_module_on_meta_device():
    with torch.device("meta"):
        model = TiedLM()
    assert model.proj.weight.is_meta
    assert model.proj.weight.data_ptr() == model.other.weight.data_ptr() == 0
    pd = ParamDict.from_module(model)
    assert pd.ties() == [["embed.weight", "lm_head.weight"]]  # by identity
    assert pd.alias_of("other.weight") is None
    assert pd.alias_of("other.bias") is None
    assert pd["other.weight"] is not pd["proj.weight"]
    c = paramscope.count(pd)
    assert c.params == sum(p.numel() for p in model.parameters())
    assert paramscope.count(model).params == c.params


def test_from_module_shared_submodule():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    pd = ParamDict.from_module(model)
    assert sorted(map(sorted, pd.ties())) == [["0.bias", "2.bias"], ["0.weight", "2.weight"]]
    assert pd.numel() == 20


def test_from_module_container_parameters():
    seq = nn.Sequential(nn.Linear(2, 2))
    seq.register_parameter("scale", nn.Parameter(torch.ones(3)))
    model = nn.Module()
    model.seq = seq
    model.plist = nn.ParameterList([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(5))])
    model.pdict = nn.ParameterDict({"alpha": nn.Parameter(torch.zeros(4))})
    model.pdict["beta"] = nn.Parameter(torch.zeros(1), requires_grad=False)
    pd = ParamDict.from_module(model)
    expected = {n for n, _ in model.named_parameters()}
    assert {"seq.scale", "plist.0", "plist.1", "pdict.alpha", "pdict.beta"} <= set(pd)
    assert set(pd) == expected
    assert pd.meta("pdict.beta").trainable is False
    assert pd.meta("plist.1").role is Role.PARAM
    assert pd.numel() == sum(p.numel() for p in model.parameters())


def test_from_module_buffers_modes():
    model = nn.Module()
    model.bn = nn.BatchNorm1d(3)
    model.register_buffer("cache", torch.zeros(6), persistent=False)
    model.register_buffer("table", torch.ones(2))
    model.register_buffer("none_buf", None)

    pers = ParamDict.from_module(model)
    assert set(pers) == set(model.state_dict())
    assert "cache" not in pers and "table" in pers
    assert pers.meta("table") == EntryMeta(Role.BUFFER, False, (), {})

    everything = ParamDict.from_module(model, buffers="all")
    assert "cache" in everything
    assert everything.meta("cache").extra == {"persistent": False}
    assert everything.meta("cache").role is Role.BUFFER
    assert everything.meta("table").extra == {}

    none = ParamDict.from_module(model, buffers="none")
    assert set(none) == {"bn.weight", "bn.bias"}
    with pytest.raises(InvalidNameError):
        ParamDict.from_module(model, buffers="some")


def test_missing_name_suggests():
    pd = ParamDict({"module.fc.weight": torch.zeros(1), "fc2.bias": torch.zeros(1)})
    with pytest.raises(MissingNameError) as info:
        pd["fc.weight"]
    assert "did you mean 'module.fc.weight'" in str(info.value)
    assert isinstance(info.value, KeyError)


# --------------------------------------------------------------------------- repr, lazy, packed


def test_repr_shows_trainable_and_frozen():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)], nn.BatchNorm1d(2))
    for i in (0, 10, 11):
        model[i].requires_grad_(False)
    text = repr(ParamDict.from_module(model))
    lines = text.splitlines()
    # 12 layers × 6 params; 3 of them frozen (18); BatchNorm: 4 params, 5 buffer elements
    assert lines[0] == "ParamDict(29 entries, 81 elements: 58 trainable, 18 frozen, 5 in buffers)"
    assert lines[1] == "  0.weight: (2, 2) F32 param frozen"
    assert lines[3] == "  1.weight: (2, 2) F32 param"
    assert lines[-1] == "  … 9 more (4 frozen: 10.weight, 10.bias, 11.weight, 11.bias)"
    assert " frozen" not in "".join(line for line in lines[1:] if "buffer" in line)
    # a tie is counted once, and an alias is marked like its target
    pd = ParamDict({"a": torch.zeros(3)})
    pd.set_meta("a", trainable=False)
    pd.tie("b", "a")
    assert repr(pd).splitlines() == [
        "ParamDict(2 entries, 3 elements: 0 trainable, 3 frozen)",
        "  a: (3,) F32 param frozen",
        "  b: (3,) F32 param frozen -> a",
    ]


def test_from_module_lazy_raises_naming_the_tensors():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2), nn.LazyBatchNorm1d())
    with pytest.raises(TargetError, match=r"^ParamDict.from_module: expected initialised") as info:
        ParamDict.from_module(model)
    message = str(info.value)
    assert type(info.value) is TargetError  # not torch's ValueError
    assert "\n" not in message
    assert "6 uninitialised lazy" in message and "'0.weight', '0.bias', '3.weight'" in message
    assert "forward" in message
    with pytest.raises(ParamscopeError, match="4 uninitialised"):
        ParamDict.from_module(model, buffers="none")  # buffers left out: only the params
    model(torch.zeros(2, 3))  # one forward initialises them
    pd = ParamDict.from_module(model)
    assert pd.numel() == sum(t.numel() for t in model.state_dict().values())


def test_from_module_dynamic_quantised_raises_naming_the_modules():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2), nn.LayerNorm(2)),
            {nn.Linear},
            dtype=torch.qint8,
        )
    with pytest.raises(TargetError, match=r"packed \(quantised\) weights") as info:
        ParamDict.from_module(q)
    message = str(info.value)
    assert "\n" not in message
    assert "2 modules with packed (quantised) weights" in message
    assert "'0' (DynamicQuantizedLinear), '2' (DynamicQuantizedLinear)" in message
    assert "paramscope.count" in message
    assert paramscope.count(q).params == 8 * 4 + 4 + 4 * 2 + 2 + 2 * 2  # what count gives
    with pytest.raises(ParamscopeError, match="packed"):
        paramscope.save(q, "never-written.safetensors")  # no silently partial checkpoint
