"""Memory estimates against hand-computed numbers (ZeRO paper, Adam's 16 bytes/param)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import paramscope
from paramscope import DType, Entry, Manifest, ParamscopeError
from paramscope.counting import parse_dtype


def manifest(n_matrices: int, rows: int, cols: int, *, frozen: int = 0) -> Manifest:
    entries = [
        Entry(f"layers.{i}.weight", (rows, cols), DType.F32, trainable=i >= frozen)
        for i in range(n_matrices)
    ]
    return Manifest(entries)


def test_inference_bytes_follow_the_dtype() -> None:
    m = manifest(1, 1000, 1000)  # 1 M params
    assert paramscope.estimate_memory(m).per_gpu_bytes == 4_000_000
    assert paramscope.estimate_memory(m, dtype="bf16").per_gpu_bytes == 2_000_000
    assert paramscope.estimate_memory(m, dtype="int8").per_gpu_bytes == 1_000_000
    assert paramscope.estimate_memory(m, dtype="fp4").per_gpu_bytes == 500_000


def test_mixed_precision_adam_is_16_bytes_per_param() -> None:
    m = manifest(1, 1000, 1000)
    e = paramscope.estimate_memory(m, dtype="fp16", training=True, mixed_precision=True)
    assert (e.weights, e.gradients, e.optimizer_states, e.master_weights) == (
        2_000_000, 2_000_000, 8_000_000, 4_000_000)
    assert e.per_gpu_bytes == 16_000_000 == e.total_bytes


def test_zero_paper_table_7_5b_on_64_gpus() -> None:
    # ZeRO (Rajbhandari et al. 2020), Ψ = 7.5B, N = 64, K = 12: 120 / 31.4 / 16.6 / 1.9 GB.
    m = manifest(75, 10_000, 10_000)
    assert sum(e.numel for e in m.values()) == 7_500_000_000
    got = [
        paramscope.estimate_memory(m, dtype="fp16", training=True, mixed_precision=True,
                                   zero_stage=stage, num_gpus=64).per_gpu_bytes
        for stage in (0, 1, 2, 3)
    ]
    psi = 7_500_000_000
    assert got[0] == 16 * psi == 120_000_000_000
    assert got[1] == 2 * psi + 2 * psi + 12 * psi // 64  # 31.4 GB
    assert got[2] == 2 * psi + 14 * psi // 64  # 16.6 GB
    assert got[3] == 16 * psi // 64  # 1.9 GB
    assert round(got[1] / 1e9, 1) == 31.4 and round(got[2] / 1e9, 1) == 16.6
    assert round(got[3] / 1e9, 1) == 1.9
    e = paramscope.estimate_memory(m, dtype="fp16", training=True, mixed_precision=True,
                                   zero_stage=3, num_gpus=64)
    assert e.total_bytes == 64 * e.per_gpu_bytes


@pytest.mark.parametrize(
    ("optimizer", "states_per_param"), [("adamw", 2), ("adam", 2), ("sgd", 0), ("sgd-momentum", 1)]
)
def test_plain_training_optimizers(optimizer: str, states_per_param: int) -> None:
    m = manifest(1, 100, 100)
    e = paramscope.estimate_memory(m, training=True, optimizer=optimizer)
    assert e.weights == e.gradients == 40_000
    assert e.optimizer_states == states_per_param * 40_000
    assert e.master_weights == 0


def test_adafactor_factors_matrices() -> None:
    m = Manifest([Entry("w", (300, 200), DType.F32), Entry("b", (200,), DType.F32),
                  Entry("conv", (4, 3, 5, 7), DType.F32)])
    e = paramscope.estimate_memory(m, training=True, optimizer="adafactor")
    assert e.optimizer_states == 4 * ((300 + 200) + 200 + 4 * 3 * (5 + 7))


def test_frozen_params_get_no_gradients_or_states() -> None:
    m = manifest(4, 10, 10, frozen=3)
    e = paramscope.estimate_memory(m, training=True)
    assert e.trainable == 100 and e.params == 400
    assert e.gradients == 400 and e.optimizer_states == 800 and e.weights == 1600


def test_buffers_replicated_and_cast_when_float() -> None:
    model = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10))
    e = paramscope.estimate_memory(model, dtype="bf16", training=True, zero_stage=3, num_gpus=2)
    assert e.buffers == 10 * 2 + 10 * 2 + 8  # running stats in bf16, num_batches_tracked int64
    assert e.per_gpu["buffers"] == e.buffers
    assert e.per_gpu["weights"] == e.weights // 2


def test_tied_weights_counted_once() -> None:
    lin = nn.Linear(4, 4, bias=False)
    m = nn.Sequential(lin, lin)
    assert paramscope.estimate_memory(m).weights == 16 * 4


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"zero_stage": 4}, "zero_stage"),
        ({"num_gpus": 0}, "num_gpus"),
        ({"optimizer": "lion"}, "lion"),
        ({"dtype": "fp32", "mixed_precision": True}, "16-bit"),
        ({"dtype": "float7"}, "float7"),
    ],
)
def test_invalid_options(kwargs: dict, needle: str) -> None:
    with pytest.raises(ParamscopeError, match=needle):
        paramscope.estimate_memory(manifest(1, 2, 2), **kwargs)


def test_parse_dtype_spellings() -> None:
    assert parse_dtype("bfloat16") is DType.BF16
    assert parse_dtype("torch.float16") is DType.F16
    assert parse_dtype("F8_E5M2") is DType.F8_E5M2


def test_memory_of_a_meta_model_matches_its_parameters() -> None:
    with torch.device("meta"):
        m = nn.Linear(1024, 1024)
    e = paramscope.estimate_memory(m, dtype="bf16", training=True, mixed_precision=True)
    assert e.per_gpu_bytes == 16 * (1024 * 1024 + 1024)


def test_lazy_model_notes_reach_the_estimate() -> None:
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    e = paramscope.estimate_memory(model)
    assert e.params == 4 * 2 + 2  # the lazy layer is not counted ...
    lazy = [n for n in e.notes if "uninitialised lazy" in n]
    assert len(lazy) == 1 and "0.weight" in lazy[0]  # ... and the estimate says so
    assert e.to_dict()["notes"] == e.notes
    assert all(n in e.notes for n in paramscope.count(model).notes)
    assert e.notes[0].startswith("model states only")  # its own note stays first
    assert len(e.notes) == len(set(e.notes))


def test_quantised_model_notes_reach_the_estimate() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(nn.Linear(8, 4)), {nn.Linear}, dtype=torch.qint8
        )
    e = paramscope.estimate_memory(q)
    assert e.params == 8 * 4 + 4
    assert any("packed (quantised)" in n for n in e.notes)


def test_cli_memory_prints_the_lazy_note(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a module of the current folder, as `python -m` finds it
    (tmp_path / "lazymod.py").write_text(
        "import torch\n"
        "def make():\n"
        "    return torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.Linear(4, 2))\n"
    )
    try:
        r = cli("memory", "lazymod:make", "--json")
    finally:
        sys.modules.pop("lazymod", None)
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["params"] == 4 * 2 + 2  # the Linear(4, 2); the lazy layer has no shape yet
    assert any("uninitialised lazy" in n for n in d["notes"])
