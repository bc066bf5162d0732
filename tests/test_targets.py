"""TARGET resolution: zoo:, package.module:callable with --arg, HF config.json, paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import paramscope
from _helpers import SMALL_GPT2, small_gpt2_config, without_torch
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


GPT2_CONFIG = small_gpt2_config()


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
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(**SMALL_GPT2))
    expected = sum(p.numel() for p in ref.parameters())  # tied lm_head once
    c = paramscope.count(m)
    assert c.params == expected
    assert ["transformer.wte.weight", "lm_head.weight"] in c.ties
    # a folder holding only a config is a config target too; --arg overrides fields
    m2 = resolve_target(str(tmp_path), {"n_layer": 1})
    with torch.device("meta"):
        ref1 = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**SMALL_GPT2, "n_layer": 1}))
    assert paramscope.count(m2).params == sum(p.numel() for p in ref1.parameters())


# ---- HF config.json targets, read the way transformers reads them -------------------------


def _save_config(cfg: object, folder: Path) -> Path:
    cfg.save_pretrained(folder)  # the real writer
    return folder / "config.json"


def _meta_count(cls: type, cfg: object, dtype: torch.dtype = torch.float32) -> int:
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(saved)
    return sum(p.numel() for p in model.parameters())


def test_config_with_special_floats_counts(tmp_path: Path) -> None:
    """mamba2's time_step_limit holds {"__float__": "Infinity"} as transformers writes it."""
    import transformers as T

    cfg = T.Mamba2Config(
        num_heads=4, head_dim=8, hidden_size=16, state_size=8, num_hidden_layers=2,
        vocab_size=100, n_groups=1, expand=2,
    )
    path = _save_config(cfg, tmp_path)
    assert '"__float__": "Infinity"' in path.read_text()
    c = paramscope.count(str(path))
    assert c.params == _meta_count(T.Mamba2Model, cfg)


def test_config_without_architectures_counts_the_base_model(tmp_path: Path) -> None:
    import transformers as T

    cfg = T.GPT2Config(**SMALL_GPT2)
    path = _save_config(cfg, tmp_path)
    assert "architectures" not in json.loads(path.read_text())
    m = resolve_target(str(path))
    assert type(m).__name__ == "GPT2Model"
    c = paramscope.count(m)
    assert c.params == _meta_count(T.GPT2Model, cfg)
    assert any("names no architectures: built GPT2Model" in n for n in c.notes)


def test_config_without_model_type_says_so(cli, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 2}))
    for call in (paramscope.count, resolve_target, paramscope.read_manifest):
        with pytest.raises(ParamscopeError, match="no 'model_type'"):
            call(str(path))
    r = cli("count", path)
    assert r.code == 2 and "no 'model_type'" in r.err and "weight_map" not in r.err


def test_config_dtype_is_used_and_said(tmp_path: Path) -> None:
    import transformers as T

    cfg = T.GPT2Config(**SMALL_GPT2, dtype="bfloat16")
    path = _save_config(cfg, tmp_path)
    m = resolve_target(str(path))
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    c = paramscope.count(m)
    assert set(c.by_dtype) == {"BF16"} and c.bytes == 2 * c.params
    assert "parameter dtype BF16 from config.json 'dtype'" in c.notes
    est = paramscope.estimate_memory(str(path))
    assert est.weights == 2 * c.params
    # older configs say torch_dtype
    data = json.loads(path.read_text())
    data["torch_dtype"] = data.pop("dtype")
    data["torch_dtype"] = "float16"
    path.write_text(json.dumps(data))
    c = paramscope.count(str(path))
    assert set(c.by_dtype) == {"F16"}
    assert "parameter dtype F16 from config.json 'torch_dtype'" in c.notes


def test_an_analytic_config_count_says_so_and_imports_no_torch(tmp_path: Path) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100, "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    code = (
        "import paramscope\n"
        "c = paramscope.count(sys.argv[1])\n"
        "result = {'params': c.params, 'format': c.format, 'notes': c.notes}"
    )
    d = without_torch(code, tmp_path / "config.json")
    assert d["format"] == "config"
    import transformers as T

    want = _meta_count(T.LlamaForCausalLM, T.LlamaConfig(**{
        k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")
    }))
    assert d["params"] == want
    assert any("counted analytically" in n for n in d["notes"])


def test_decode_special_floats_like_transformers() -> None:
    from transformers.configuration_utils import PretrainedConfig

    from paramscope._hfconfig import decode_special_floats

    raw = {"a": {"__float__": "Infinity"}, "b": [{"__float__": "-Infinity"}, 1.0], "c": {"x": 1}}
    ours = decode_special_floats(raw)
    theirs = PretrainedConfig._decode_special_floats(raw)
    assert ours == theirs and ours["a"] == float("inf")


# ---- one meaning of TARGET everywhere in Python -------------------------------------------


@pytest.fixture
def every_target(tmp_path: Path, userpkg: str) -> dict[str, tuple[str, int]]:
    """Each TARGET form → (spec, the true parameter count from torch)."""
    cfg = tmp_path / "cfg" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(GPT2_CONFIG))
    import transformers as T

    gpt2 = _meta_count(T.GPT2LMHeadModel, T.GPT2Config(
        **{k: v for k, v in GPT2_CONFIG.items() if k not in ("architectures", "model_type")}))
    mlp = paramscope.resolve_target("zoo:mlp")
    ckpt = paramscope.save(paramscope.ParamDict.from_module(torch.nn.Linear(3, 2)),
                           tmp_path / "lin.safetensors")
    return {
        "zoo": ("zoo:mlp", sum(p.numel() for p in mlp.parameters())),
        "callable": (f"{userpkg}:make", 2 * (4 * 4 + 4)),
        "config": (str(cfg), gpt2),
        "checkpoint": (str(ckpt), 8),
    }


def test_every_source_function_takes_every_target_form(every_target) -> None:
    for kind, (spec, params) in every_target.items():
        assert paramscope.count(spec).params == params, kind
        m = paramscope.read_manifest(spec)
        assert sum(e.logical_numel for e in m.values() if e.tie is None and e.role == "param") \
            == params, kind
        assert paramscope.estimate_memory(spec).params == params, kind
        assert sum(g.params for g in paramscope.inspect(spec).groups) == params, kind
        if kind != "checkpoint":
            assert paramscope.summary(spec).root.params == params, kind
        assert paramscope.diff(spec, spec, values=False).same, kind


def test_functions_that_need_values_name_what_they_take(
    cli, every_target, tmp_path: Path
) -> None:
    with pytest.raises(ParamscopeError, match="a checkpoint has no module tree: use"):
        paramscope.summary(every_target["checkpoint"][0])
    for kind in ("zoo", "callable", "config"):
        spec = every_target[kind][0]
        calls = {
            "load": lambda s: paramscope.load(s),
            "verify": lambda s: paramscope.verify(s),
            "convert": lambda s: paramscope.convert(s, tmp_path / "out.safetensors"),
            "prune": lambda s: paramscope.prune(s, 0.5, dst=tmp_path / "p.safetensors"),
            "quantize": lambda s: paramscope.quantize(s, dst=tmp_path / "q.safetensors"),
            "load_into": lambda s: paramscope.load_into(torch.nn.Linear(3, 2), s),
        }
        for name, call in calls.items():
            with pytest.raises(ParamscopeError, match="needs a checkpoint") as exc:
                call(spec)
            assert "has no values" in str(exc.value), (kind, name)
        with pytest.raises(ParamscopeError, match="compare with values=False"):
            paramscope.diff(spec, spec)
    assert not (tmp_path / "out.safetensors").exists()
    r = cli("verify", "zoo:mlp")
    assert r.code == 2 and "needs a checkpoint" in r.err


def test_a_dcp_folder_beside_its_config_is_a_checkpoint(tmp_path: Path) -> None:
    from paramscope._targets import target_kind

    paramscope.save({"w": torch.ones(2, 2)}, tmp_path / "ckpt", format="dcp")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(GPT2_CONFIG))
    assert target_kind(tmp_path / "ckpt") == "checkpoint"
    assert paramscope.count(str(tmp_path / "ckpt")).params == 4


def test_resolve_target_with_values_builds_on_the_cpu() -> None:
    """meta=False: the model has values (what shrink needs); the default stays on meta."""
    import paramscope

    real = paramscope.resolve_target("zoo:mlp-3-5-2", meta=False)
    assert {p.device.type for p in real.parameters()} == {"cpu"}
    assert any(bool(p.abs().sum() > 0) for p in real.parameters())
    meta = paramscope.resolve_target("zoo:mlp-3-5-2")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
