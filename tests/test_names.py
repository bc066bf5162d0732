"""Name rules: validation, patterns, rename rules, suggestions, sizes and group prefixes."""

from __future__ import annotations

import pytest

from paramscope import (
    DuplicateNameError,
    InvalidNameError,
    MissingNameError,
    ParamscopeError,
    apply_renames,
    compile_pattern,
    did_you_mean,
    parse_size,
    validate_name,
)
from paramscope._names import group_prefix, missing


@pytest.mark.parametrize("name", ["a", "encoder.0.weight", "h.0.attn.c_attn.weight", "_x.y-z"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "a..b", "a. b", "a .b", ".a", "a.", "a b", "a\nb", "\t", 1, None, ["a"]]
)
def test_invalid_names(name):
    with pytest.raises(InvalidNameError) as info:
        validate_name(name)
    assert isinstance(info.value, ParamscopeError)
    assert isinstance(info.value, ValueError)


def test_glob_crosses_dots_and_regex_full_match():
    m = compile_pattern("*.weight")
    assert m("a.weight") and m("a.b.c.weight") and not m("weight") and not m("a.weights")
    enc = compile_pattern("enc.?.bias")
    assert enc("enc.1.bias") and not enc("enc.10.bias")
    r = compile_pattern(r"re:layers\.\d+\.mlp\..*")
    assert r("layers.12.mlp.fc.weight") and not r("xlayers.1.mlp.w")
    assert not compile_pattern("re:layers")("layers.0")  # must match the whole name
    both = compile_pattern(["*.bias", "re:emb\\..*"])
    assert both("fc.bias") and both("emb.w") and not both("fc.weight")
    assert not compile_pattern([])("anything")
    with pytest.raises(InvalidNameError, match="re:\\["):
        compile_pattern("re:[")


def test_apply_renames_compose_and_identity():
    got = apply_renames(
        ["module.enc.0.w", "module.head.b", "x"],
        [(r"^module\.", ""), (r"^enc\.(\d+)", r"encoder.\1")],
    )
    assert got == {"module.enc.0.w": "encoder.0.w", "module.head.b": "head.b", "x": "x"}


def test_apply_renames_collisions_and_bad_results():
    with pytest.raises(DuplicateNameError) as info:
        apply_renames(["a.w", "b.w"], [(r"^[ab]\.", "c.")])
    assert "'a.w'" in str(info.value) and "'b.w'" in str(info.value) and "'c.w'" in str(info.value)
    with pytest.raises(DuplicateNameError):
        apply_renames(["a.w", "b.w"], [(r"^a", "b")])  # collides with an unchanged name
    with pytest.raises(InvalidNameError):
        apply_renames(["a.w"], [(r"^a\.w$", "")])
    with pytest.raises(InvalidNameError):
        apply_renames(["a.w"], [("(", "x")])


def test_did_you_mean():
    names = ["fc.weight", "fc.bias", "module.enc.weight", "model.dec.bias"]
    assert did_you_mean("module.fc.weight", names)[0] == "fc.weight"
    assert did_you_mean("enc.weight", names)[0] == "module.enc.weight"
    assert did_you_mean("dec.bias", names)[0] == "model.dec.bias"
    assert did_you_mean("fc.wieght", names)[0] == "fc.weight"
    assert did_you_mean("completely.different.thing", names) == []
    assert len(did_you_mean("fc.weigh", names, n=1)) == 1
    many = [f"layer.{i}.weight" for i in range(10)]
    assert len(did_you_mean("layer.1.weigth", many)) <= 3


def test_missing_error_message():
    err = missing("fc.weigth", ["fc.weight", "fc.bias"])
    assert isinstance(err, MissingNameError) and isinstance(err, KeyError)
    assert str(err) == "no entry 'fc.weigth'; did you mean 'fc.weight'?"
    assert str(missing("zzz", ["fc.weight"])) == "no entry 'zzz'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("5gb", 5 * 10**9),
        (" 500 MB ", 500 * 10**6),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("2GiB", 2 * 2**30),
        ("1.5GB", 1_500_000_000),
        ("100", 100),
        ("100B", 100),
        ("3TB", 3 * 10**12),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GB", "5 XB", "-1GB", "0", 0, -5, "1e3", True, "5 G B"])
def test_parse_size_refuses(bad):
    with pytest.raises(ParamscopeError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("name", "depth", "expected"),
    [
        ("h.0.attn.c_attn.weight", 2, "h.0"),
        ("h.0.attn.c_attn.weight", 1, "h"),
        ("h.0.attn.c_attn.weight", 0, ""),
        ("h.0.attn.c_attn.weight", 10, "h.0.attn.c_attn"),
        ("lm_head.weight", 2, "lm_head"),
        ("bias", 3, ""),
    ],
)
def test_group_prefix(name, depth, expected):
    assert group_prefix(name, depth) == expected
