"""The command line of LoRA adapters and factorisation: ``paramscope lora count | merge |
extract`` and ``paramscope factorize`` give the library's results, ``--json`` parses, and bad
input is one line with exit code 2 and nothing written. peft writes the adapter."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import peft
import pytest
import torch
import transformers

import paramscope

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _llama() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A base checkpoint, a peft adapter of it (random B), and peft's merged weights."""
    monkeypatch.chdir(tmp_path)
    model = _llama()
    paramscope.save({k: v.clone() for k, v in model.state_dict().items()}, "base.safetensors")
    pm = peft.get_peft_model(
        copy.deepcopy(model),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pm.save_pretrained("adapter")
    count = sum(t.numel() for t in peft.get_peft_model_state_dict(pm).values())
    merged = {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}
    return {"count": count, "merged": merged, "model": model}


def _one_error_line(r, *needles: str) -> str:
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paramscope: error: "), r.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_lora_count_json_is_peft_count(cli, work) -> None:
    r = cli("lora", "count", "adapter", "--json")
    assert r.code == 0, r
    d = json.loads(r.out)
    assert d == paramscope.read_adapter("adapter").to_dict()
    assert d["params"] == work["count"]
    mods = d["modules"]
    assert len(mods) == 4  # q_proj and v_proj of 2 layers
    assert all(m.endswith(("q_proj", "v_proj")) for m in mods)
    text = cli("lora", "count", "adapter")
    assert text.code == 0 and f"{work['count']:,}" in text.out, text


def test_lora_merge_cli_equals_peft(cli, work) -> None:
    r = cli("lora", "merge", "base.safetensors", "adapter", "-o", "merged.safetensors", "--json")
    assert r.code == 0, r
    json.loads(r.out)
    got = paramscope.load("merged.safetensors")
    want = work["merged"]
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6), k


def test_lora_extract_cli_loads_in_peft(cli, work, tmp_path: Path) -> None:
    r = cli("lora", "merge", "base.safetensors", "adapter", "-o", "ft.safetensors")
    assert r.code == 0, r
    r = cli("lora", "extract", "base.safetensors", "ft.safetensors", "-o", "out", "--rank", "4",
            "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    assert report  # the report's JSON form
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    model = copy.deepcopy(work["model"])
    merged = peft.PeftModel.from_pretrained(model, tmp_path / "out").merge_and_unload()
    ft = paramscope.load("ft.safetensors")
    for k, v in merged.state_dict().items():
        assert torch.allclose(v, ft[k], atol=1e-5), k


def test_factorize_cli_matches_library(cli, work, tmp_path: Path) -> None:
    r = cli("factorize", "base.safetensors", "-o", "low.safetensors", "--rank", "4",
            "--select", "*.mlp.*", "--json")
    assert r.code == 0, r
    d = json.loads(r.out)
    lib = paramscope.factorize(
        "base.safetensors", rank=4, select="*.mlp.*", dst=tmp_path / "lib.safetensors"
    ).to_dict()
    assert d["totals"] == lib["totals"]
    assert d["totals"]["params_after"] == sum(
        t.numel() for t in paramscope.load("low.safetensors").values()
    )
    low = paramscope.load("low.safetensors")
    assert tuple(low["model.layers.0.mlp.up_proj.0.weight"].shape) == (4, 32)
    assert tuple(low["model.layers.0.mlp.up_proj.1.weight"].shape) == (64, 4)
    assert "model.layers.0.mlp.up_proj.weight" not in low


def test_bad_input_exits_2_and_writes_nothing(cli, work, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    _one_error_line(cli("lora", "count", "nope"), "nope")
    _one_error_line(cli("lora", "merge", "nope.safetensors", "adapter", "-o", "m.safetensors"),
                    "nope.safetensors")
    _one_error_line(cli("factorize", "base.safetensors", "-o", "f.safetensors"), "rank")
    _one_error_line(
        cli("factorize", "base.safetensors", "-o", "f.safetensors", "--rank", "2",
            "--select", "nothing.*"),
        "nothing.*",
    )
    _one_error_line(
        cli("lora", "extract", "base.safetensors", "base.safetensors", "-o", "x",
            "--rank", "2", "--energy", "0.5"),
        "energy",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_merge_of_hf_folders_loads_with_transformers(cli, tmp_path: Path, monkeypatch) -> None:
    """Merged shards in a folder get the base's config.json (only when the folder has none),
    so transformers loads the merge; the weights are the mean."""
    monkeypatch.chdir(tmp_path)
    a, b = _llama(), _llama()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01)
    a.save_pretrained("a")
    b.save_pretrained("b")
    r = cli("merge", "a", "b", "-o", "out", "--shard-size", "100KB")
    assert r.code == 0, r
    assert "copied config.json" in r.out
    out = transformers.AutoModelForCausalLM.from_pretrained("out")
    want = {k: (v + b.state_dict()[k]) / 2 for k, v in a.state_dict().items()}
    for k, v in out.state_dict().items():
        assert torch.allclose(v, want[k], atol=1e-6), k
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    r = cli("merge", "a", "b", "-o", "mine", "--shard-size", "100KB")
    assert r.code == 0 and "left as it is" in r.out, r
    assert (tmp_path / "mine" / "config.json").read_text() == "{}"
