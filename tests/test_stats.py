"""Weight statistics across depth: every number against numpy / scipy, kinds and blocks of
real layouts, flagging of the one layer that stands out, streaming equal to in-memory, the
terminal rows, and peak memory that does not follow the size of the tensor."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

import paramscope
from paramscope._errors import ArgumentTypeError, MissingNameError
from paramscope.counting._count import to_manifest
from paramscope.reporting._stats import (
    STATS,
    block_of,
    classify,
    tensor_stats,
    weight_stats,
)


def _oracle(t: torch.Tensor) -> dict[str, float | None]:
    """The statistics by numpy / scipy on a float64 copy."""
    x = t.detach().to(torch.float64).numpy().reshape(-1)
    std = float(np.std(x))
    mean = float(np.mean(x))
    return {
        "l2": float(np.linalg.norm(x)),
        "std": std,
        "max_abs": float(np.max(np.abs(x))),
        "mean": mean,
        "outliers_6sigma": float(np.mean(np.abs(x - mean) > 6 * std)) if std > 0 else 0.0,
        "kurtosis": float(scipy.stats.kurtosis(x)) if std > 0 else None,
        "sparsity": float(np.mean(x == 0)),
    }


def _heavy(n: int, seed: int) -> torch.Tensor:
    """Student-t values (heavy tails: some beyond 6 sigma, kurtosis well above 0)."""
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.standard_t(3, size=n))


CASES = {
    "normal_f32": lambda: torch.randn(300, 70, generator=torch.Generator().manual_seed(1)),
    "shifted_f64": lambda: torch.randn(5000, dtype=torch.float64) * 1e-3 + 7.0,
    "heavy_f32": lambda: _heavy(40_000, 2).to(torch.float32),
    "f16": lambda: (torch.randn(257, 33) * 3).to(torch.float16),
    "bf16": lambda: (torch.randn(64, 129) + 0.5).to(torch.bfloat16),
    "sparse": lambda: torch.randn(1000) * (torch.rand(1000) > 0.7),
    "noncontiguous": lambda: torch.randn(40, 60).t()[::2],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_numbers_equal_numpy_and_scipy(case: str, chunk: int) -> None:
    torch.manual_seed(0)
    t = CASES[case]()
    got = tensor_stats(t, chunk=chunk)  # chunk 7: many chunks, the merge is exercised
    want = _oracle(t)
    assert got["numel"] == t.numel()
    for k in STATS:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), (case, k)
    if case == "heavy_f32":
        assert got["outliers_6sigma"] > 0 and got["kurtosis"] > 1  # the test can see them
    if case == "sparse":
        assert 0.5 < got["sparsity"] < 0.9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_the_input_tensor_is_left_unchanged(dtype: torch.dtype) -> None:
    t = (torch.randn(3000, dtype=torch.float64) + 2).to(dtype)
    keep = t.clone()
    tensor_stats(t, chunk=1000)
    assert torch.equal(t, keep)


def test_all_zero_and_one_element_and_constant() -> None:
    z = tensor_stats(torch.zeros(10, 10, dtype=torch.bfloat16))
    assert z["std"] == 0 and z["outliers_6sigma"] == 0 and z["kurtosis"] is None
    assert z["sparsity"] == 1.0 and z["l2"] == 0 and z["max_abs"] == 0
    one = tensor_stats(torch.tensor([-2.5]))
    assert one["l2"] == 2.5 and one["mean"] == -2.5 and one["max_abs"] == 2.5
    assert one["std"] == 0 and one["kurtosis"] is None and one["sparsity"] == 0
    c = tensor_stats(torch.full((5,), 3.0))
    assert c["kurtosis"] is None and c["outliers_6sigma"] == 0


def test_nonfinite_values_give_none_in_to_dict() -> None:
    r = weight_stats({"w": torch.tensor([1.0, float("nan"), 2.0])})
    row = r.to_dict()["tensors"][0]
    assert row["mean"] is None and row["std"] is None and row["kurtosis"] is None
    json.dumps(r.to_dict(), allow_nan=False)


def test_blocks_and_kinds_of_named_layouts() -> None:
    assert block_of("model.layers.3.self_attn.q_proj.weight") == 3
    assert block_of("h.11.attn.c_attn.weight") == 11
    assert block_of("blk.5.attn_q.weight") == 5
    assert block_of("model.norm.weight") is None
    want = {
        "model.layers.0.self_attn.q_proj.weight": "q",
        "model.layers.0.self_attn.k_proj.weight": "k",
        "model.layers.0.self_attn.v_proj.weight": "v",
        "model.layers.0.self_attn.o_proj.weight": "o",
        "model.layers.0.mlp.gate_proj.weight": "gate",
        "model.layers.0.mlp.up_proj.weight": "up",
        "model.layers.0.mlp.down_proj.weight": "down",
        "model.layers.0.input_layernorm.weight": "norm",
        "model.embed_tokens.weight": "embedding",
        "lm_head.weight": "lm_head",
        "transformer.h.0.attn.c_attn.weight": "qkv",
        "transformer.h.0.attn.c_attn.bias": "qkv.bias",
        "transformer.h.0.attn.c_proj.weight": "o",
        "transformer.h.0.mlp.c_fc.weight": "fc1",
        "transformer.h.0.mlp.c_proj.weight": "fc2",
        "transformer.h.0.ln_1.bias": "norm.bias",
        "transformer.wpe.weight": "embedding",
        "encoder.layer.1.attention.self.query.weight": "q",
        "encoder.layer.1.attention.output.dense.weight": "o",
        "encoder.layer.1.attention.output.LayerNorm.weight": "norm",
        "encoder.layer.1.intermediate.dense.weight": "fc1",
        "encoder.layer.1.output.dense.weight": "fc2",
        "embeddings.word_embeddings.weight": "embedding",
        "layers.2.self_attn.in_proj_weight": "qkv",
        "layers.2.self_attn.in_proj_bias": "qkv.bias",
        "model.layers.1.block_sparse_moe.gate.weight": "router",
        "model.layers.1.block_sparse_moe.experts.3.w1.weight": "gate",
        "blk.0.attn_q.weight": "q",
        "blk.0.ffn_down.weight": "down",
        "blk.0.attn_norm.weight": "norm",
        "token_embd.weight": "embedding",
        "output.weight": "lm_head",
        "fc.weight": "other",
    }
    assert {n: classify(n) for n in want} == want


@pytest.mark.parametrize("target", ["zoo:gpt2", "zoo:llama-3-8b", "zoo:bert-base"])
def test_every_block_weight_of_zoo_models_has_a_kind(target: str) -> None:
    names = list(to_manifest(target))
    in_blocks = [n for n in names if block_of(n) is not None]
    assert len(in_blocks) >= 12 * 6
    assert [n for n in in_blocks if classify(n).startswith("other")] == []
    if target != "zoo:bert-base":  # BERT's pooler is "other"; GPT-2 and Llama have none
        assert [n for n in names if classify(n).startswith("other")] == []


def _llama_like(blocks: int, scale_block: int | None = None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.randn(50, 32, generator=g)}
    for i in range(blocks):
        p = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[f"{p}.self_attn.{proj}.weight"] = torch.randn(32, 32, generator=g) * 0.02
        for proj, shape in (
            ("gate_proj", (64, 32)),
            ("up_proj", (64, 32)),
            ("down_proj", (32, 64)),
        ):
            sd[f"{p}.mlp.{proj}.weight"] = torch.randn(*shape, generator=g) * 0.02
        sd[f"{p}.input_layernorm.weight"] = 1 + 0.01 * torch.randn(32, generator=g)
        sd[f"{p}.post_attention_layernorm.weight"] = 1 + 0.01 * torch.randn(32, generator=g)
    sd["model.norm.weight"] = torch.ones(32)
    sd["lm_head.weight"] = torch.randn(50, 32, generator=g) * 0.02
    if scale_block is not None:
        sd[f"model.layers.{scale_block}.self_attn.q_proj.weight"] *= 20
    return sd


def test_one_scaled_layer_is_flagged_and_no_other() -> None:
    clean = weight_stats(_llama_like(10))
    assert clean.flagged == []
    r = weight_stats(_llama_like(10, scale_block=6))
    assert {f["name"] for f in r.flagged} == {"model.layers.6.self_attn.q_proj.weight"}
    stats = {f["stat"]: f for f in r.flagged}
    assert {"l2", "std", "max_abs"} <= set(stats)
    assert stats["l2"]["factor"] == pytest.approx(20, rel=0.1)
    assert stats["l2"]["mads"] > 3 and stats["l2"]["series"] == "q"
    flagged_rows = r.to_text().split("flagged tensors (1):\n")[1].splitlines()
    assert flagged_rows[0].startswith("  model.layers.6.self_attn.q_proj.weight: l2 ")


def test_series_one_value_per_block_and_sparklines(tmp_path: Path) -> None:
    r = weight_stats(_llama_like(9, scale_block=4))
    assert r.blocks == 9
    series = r.series()
    assert {"q", "k", "v", "o", "gate", "up", "down"} <= set(series)
    assert "norm [input_layernorm]" in series and "norm [post_attention_layernorm]" in series
    by = r.by_kind("l2")
    for s in series:
        assert [b for b, _ in by[s]] == list(range(9))
    assert [v for _, v in by["q"]] == [
        pytest.approx(torch.linalg.vector_norm(t.double()).item(), rel=1e-12)
        for t in (
            _llama_like(9, scale_block=4)[f"model.layers.{i}.self_attn.q_proj.weight"]
            for i in range(9)
        )
    ]
    spark = r.sparkline("q")
    assert len(spark) == 9 and spark[4] == "█" and set(spark) - {"█"} == {"▁"}
    text = r.to_text()
    rows = [line for line in text.splitlines() if line.startswith("  ")]
    for s in series:
        row = next(line for line in rows if line.split("  ")[1].strip() == s)
        assert r.sparkline(s) in row
    assert "\x1b" not in text  # plain
    # a narrow terminal: labels and sparklines shortened to the width
    narrow = weight_stats(_llama_like(40)).to_text(width=40)
    assert max(len(line) for line in narrow.splitlines()) <= 40, narrow
    cut = [line for line in narrow.splitlines() if line.startswith("  norm [")]
    assert len(cut) == 2 and all("…" in line for line in cut)  # labels cut to a third
    assert len({line.index("  l2 ") for line in narrow.splitlines()[1:8]}) == 1  # aligned
    whole = weight_stats(_llama_like(40)).to_text()
    assert any(len(line) > 40 for line in whole.splitlines())  # piped: nothing cut


def test_to_dict_is_json_and_has_every_statistic() -> None:
    r = weight_stats(_llama_like(6, scale_block=2))
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert set(d) == {"source", "blocks", "stats", "tensors", "series", "flagged", "notes"}
    t = d["tensors"][1]
    assert set(t) == {"name", "kind", "block", "series", "shape", "numel", "dtype", *STATS}
    assert d["series"]["q"]["kurtosis"][0][0] == 0 and len(d["series"]["q"]["l2"]) == 6
    assert d["flagged"][0]["name"] == "model.layers.2.self_attn.q_proj.weight"


def test_streaming_a_file_equals_in_memory(tmp_path: Path) -> None:
    sd = _llama_like(6, scale_block=3)
    sd["model.layers.0.mlp.down_proj.weight"] = sd["model.layers.0.mlp.down_proj.weight"].half()
    sd["model.layers.1.mlp.down_proj.weight"] = sd["model.layers.1.mlp.down_proj.weight"].to(
        torch.bfloat16
    )
    sd["position_ids"] = torch.arange(8)
    path = paramscope.save(sd, tmp_path / "m.safetensors")
    mem = weight_stats(sd).to_dict()
    disk = weight_stats(path).to_dict()
    assert disk["source"] == str(path) and mem["source"] == "(in memory)"

    def by_name(rows: list[dict]) -> list[dict]:  # the file keeps its own order
        return sorted(rows, key=lambda r: (r["name"], r.get("stat", "")))

    assert by_name(disk["tensors"]) == by_name(mem["tensors"])
    assert by_name(disk["flagged"]) == by_name(mem["flagged"])
    assert disk["series"] == mem["series"] and disk["blocks"] == mem["blocks"] == 6
    assert {f["name"] for f in disk["flagged"]} == {"model.layers.3.self_attn.q_proj.weight"}
    assert any("non-float" in n for n in disk["notes"])
    sel = weight_stats(path, select="model.layers.*.self_attn.q_proj.weight")
    assert len(sel.tensors) == 6 and sel.series() == ["q"]
    with pytest.raises(MissingNameError):
        weight_stats(path, select="nothing.*")


def test_modules_ties_meta_and_wrong_types() -> None:
    lin = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    lin[1].weight = lin[0].weight  # tied
    r = weight_stats(lin)
    assert [t["name"] for t in r.tensors] == ["0.weight"]
    assert any("tied" in n for n in r.notes)
    with torch.device("meta"):
        meta = torch.nn.Linear(3, 3)
    assert weight_stats(meta).tensors == [] and any("meta" in n for n in weight_stats(meta).notes)
    with pytest.raises(ArgumentTypeError, match="found int"):
        weight_stats(3)


def test_peak_memory_does_not_follow_the_tensor(tmp_path: Path) -> None:
    # a 64 MiB fp32 tensor read from a file: the float64 chunks are 8 MiB each, so the peak
    # grows by the tensor (the read) plus a few chunks, never by its 128 MiB float64 copy
    n = 16 * 2**20
    path = paramscope.save(
        {"big.weight": torch.randn(n // 1024, 1024), "small": torch.ones(3)},
        tmp_path / "big.safetensors",
        fsync=False,
    )
    script = textwrap.dedent(
        f"""
        import os, torch
        torch.set_num_threads(1)
        from paramscope.reporting._stats import weight_stats
        weight_stats({{"w": torch.randn(1000)}})  # imports, warm-up
        with open("/proc/self/statm") as f:
            before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
        r = weight_stats({str(path)!r})
        # VmHWM, not ru_maxrss (see test_merge: ru_maxrss carries the forked parent's peak)
        with open("/proc/self/status") as f:
            after = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        print(r.tensors[0]["numel"], (after - before) / 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    numel, grew_mib = out.stdout.split()
    assert int(numel) == n
    assert float(grew_mib) < 2 * 64 + 64, f"peak RSS grew by {float(grew_mib):.0f} MiB"
    assert not math.isnan(float(grew_mib))


def test_public_api_and_cli_inspect_stats(tmp_path: Path) -> None:
    from _helpers import run_cli

    g = torch.Generator().manual_seed(0)
    sd = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(16, 8, generator=g) for i in range(6)}
    sd["model.layers.4.mlp.up_proj.weight"] *= 30
    path = paramscope.save(sd, tmp_path / "m.safetensors")
    report = paramscope.weight_stats(path)
    assert isinstance(report, paramscope.StatsReport)
    assert [f["name"] for f in report.flagged] == ["model.layers.4.mlp.up_proj.weight"] * len(
        report.flagged
    )
    r = run_cli("inspect", path, "--stats", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(json.dumps(report.to_dict()))
    r = run_cli("inspect", path, "--stats", "--stat", "max_abs")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith("up"))
    spark = row.split()[1]
    assert len(spark) == 6 and spark[4] == "█" and "max_abs" in row
    for bad in (["zoo:gpt2", "--stats"], [str(path), "--stats", "--stat", "nope"]):
        r = run_cli("inspect", *bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_histograms_in_the_same_pass() -> None:
    """histograms=True adds each tensor's value histogram and zero count, as the report's
    table makes them (value_histogram), and changes nothing else."""
    import torch

    from paramscope.reporting._stats import value_histogram

    g = torch.Generator().manual_seed(3)
    sd = {f"h.{i}.mlp.c_fc.weight": torch.randn(40, 30, generator=g) for i in range(3)}
    sd["h.1.mlp.c_fc.weight"][:5] = 0
    plain = weight_stats(sd)
    with_h = weight_stats(sd, histograms=True)
    for p_row, h_row in zip(plain.tensors, with_h.tensors, strict=True):
        extra = {k: h_row[k] for k in h_row if k not in p_row}
        assert extra == value_histogram(sd[h_row["name"]])
        assert {k: h_row[k] for k in p_row} == p_row
    assert with_h.tensors[1]["zeros"] == 5 * 30
