"""TARGET resolution: zoo:, package.module:callable with --arg, HF config.json, paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope import ParamscopeError, SourceNotFoundError
from paramscope._targets import parse_args, resolve_target

MODULE = '''
import torch
from torch import nn

def make(width=4, depth=2, bias=True):
    return nn.Sequential(*[nn.Linear(width, width, bias=bias) for _ in range(depth)])

INSTANCE = nn.Linear(3, 3)
NOT_A_MODEL = 42

def returns_int():
    return 3
'''


@pytest.fixture
def userpkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "psuser_models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "psuser_models"
    sys.modules.pop("psuser_models", None)


def test_parse_args_json_and_strings() -> None:
    assert parse_args(["a=1", "b=[1, 2]", "c=hello", "d=1.5", "e=null"]) == {
        "a": 1, "b": [1, 2], "c": "hello", "d": 1.5, "e": None}
    with pytest.raises(ParamscopeError, match="key=value"):
        parse_args(["novalue"])


def test_callable_target_built_on_meta_with_args(userpkg: str) -> None:
    m = resolve_target(f"{userpkg}:make", {"width": 16, "depth": 3, "bias": False})
    assert all(p.device.type == "meta" for p in m.parameters())
    assert paramscope.count(m).params == 3 * 16 * 16


def test_module_instance_target_and_errors(userpkg: str) -> None:
    assert paramscope.count(resolve_target(f"{userpkg}:INSTANCE")).params == 12
    with pytest.raises(ParamscopeError, match="no attribute"):
        resolve_target(f"{userpkg}:missing")
    with pytest.raises(ParamscopeError, match="expected a callable"):
        resolve_target(f"{userpkg}:NOT_A_MODEL")
    with pytest.raises(ParamscopeError, match="returned int"):
        resolve_target(f"{userpkg}:returns_int")
    with pytest.raises(ParamscopeError, match=r"unexpected keyword|failed"):
        resolve_target(f"{userpkg}:make", {"colour": "red"})
    with pytest.raises(ParamscopeError, match="cannot import"):
        resolve_target("no_such_pkg_xyz.mod:make")


def test_missing_path_and_args_on_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        resolve_target(str(tmp_path / "nope.safetensors"))
    p = tmp_path / "w.safetensors"
    paramscope.save(paramscope.ParamDict({"w": torch.zeros(2)}), p)
    assert resolve_target(str(p)) == str(p)
    with pytest.raises(ParamscopeError, match="--arg"):
        resolve_target(str(p), {"x": 1})


def test_zoo_target() -> None:
    m = resolve_target("zoo:mlp-3-5-2")
    assert paramscope.count(m).params == 32
    assert next(m.parameters()).device.type == "meta"


GPT2_CONFIG = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "n_embd": 64,
    "n_head": 4,
    "n_layer": 2,
    "n_positions": 128,
    "vocab_size": 1000,
}


def test_hf_config_needs_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(GPT2_CONFIG))
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(ParamscopeError, match=r"paramscope\[transformers\]"):
        resolve_target(str(cfg))


def test_hf_config_builds_on_meta(tmp_path: Path) -> None:
    import transformers  # the optional extra; CI installs it (README's test command)

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(GPT2_CONFIG))
    m = resolve_target(str(cfg))
    assert type(m).__name__ == "GPT2LMHeadModel"
    with torch.device("meta"):
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_embd=64, n_head=4, n_layer=2, n_positions=128, vocab_size=1000))
    expected = sum(p.numel() for p in ref.parameters())  # tied lm_head once
    c = paramscope.count(m)
    assert c.params == expected
    assert ["transformer.wte.weight", "lm_head.weight"] in c.ties
    # a folder holding only a config is a config target too; --arg overrides fields
    m2 = resolve_target(str(tmp_path), {"n_layer": 1})
    assert paramscope.count(m2).params < c.params
