"""paramscope.merge (issue 16): the arithmetic of every method checked against formulas done by
hand in torch, the report's numbers against torch, overrides, entries only some sources hold,
refused inputs (nothing written), every kind of source and output, and streaming.

mergekit itself as the oracle is in tests/test_merge_mergekit.py; the CLI in
tests/test_merge_cli.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope import ParamDict
from paramscope._errors import (
    ArgumentError,
    DTypeMismatchError,
    ParamscopeError,
    ShapeMismatchError,
)

REPORT_KEYS = {
    "method",
    "sources",
    "base",
    "output",
    "options",
    "entries",
    "bytes",
    "shards",
    "copied",
    "skipped",
    "totals",
    "tensors",
    "notes",
}
TENSOR_KEYS = {
    "name",
    "shape",
    "method",
    "cosine",
    "delta_cosine",
    "sign_conflict",
    "density_kept",
    "norm_ratio",
}


def _rand(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def _models(n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[dict]:
    """``n`` small state dicts with the same names and shapes, different values."""
    return [
        {
            "emb.weight": _rand(16, 8, seed=seed + 10 * i, dtype=dtype),
            "layer.weight": _rand(8, 8, seed=seed + 10 * i + 1, dtype=dtype),
            "layer.bias": _rand(8, seed=seed + 10 * i + 2, dtype=dtype),
            "lm_head.weight": _rand(16, 8, seed=seed + 10 * i + 3, dtype=dtype),
        }
        for i in range(n)
    ]


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6, rtol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(
        a.reshape(-1).double(), b.reshape(-1).double(), dim=0
    ).item()


def _tensor_rows(report) -> dict[str, dict]:
    return {row["name"]: row for row in report.to_dict()["tensors"]}


# --------------------------------------------------------------------------------- linear
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_linear_half_half_is_the_mean_bitwise(dtype: torch.dtype) -> None:
    a, b = _models(2, dtype=dtype)
    r = paramscope.merge([a, b], method="linear", weights=[0.5, 0.5])
    assert isinstance(r.result, ParamDict)
    assert sorted(r.result) == sorted(a)
    for k in a:
        out = r.result[k]
        assert out.dtype == dtype, k
        assert torch.equal(out, (a[k] + b[k]) / 2), k
    # no weights: the same (1.0 each, normalised)
    r2 = paramscope.merge([a, b], method="linear")
    for k in a:
        assert torch.equal(r2.result[k], (a[k] + b[k]) / 2), k


def test_linear_weights_normalised_or_not() -> None:
    a, b = _models(2)
    norm = paramscope.merge([a, b], method="linear", weights=[1.0, 3.0])  # default: normalise
    raw = paramscope.merge([a, b], method="linear", weights=[1.0, 3.0], normalize=False)
    for k in a:
        assert _close(norm.result[k], (a[k] + 3 * b[k]) / 4), k
        assert _close(raw.result[k], a[k] + 3 * b[k]), k
        assert not _close(norm.result[k], raw.result[k]), k


def test_linear_weighted_mean_of_three() -> None:
    a, b, c = _models(3)
    r = paramscope.merge([a, b, c], method="linear", weights=[2.0, 3.0, 5.0])
    for k in a:
        assert _close(r.result[k], (2 * a[k] + 3 * b[k] + 5 * c[k]) / 10), k
    r = paramscope.merge([a, b, c], method="linear")
    for k in a:
        assert _close(r.result[k], (a[k] + b[k] + c[k]) / 3), k


def test_float64_math_stays_float64() -> None:
    a, b, c = _models(3, dtype=torch.float64)
    r = paramscope.merge([a, b, c], method="linear", weights=[0.1, 0.2, 0.7])
    for k in a:
        assert r.result[k].dtype == torch.float64
        want = (0.1 * a[k] + 0.2 * b[k] + 0.7 * c[k]) / (0.1 + 0.2 + 0.7)
        assert torch.allclose(r.result[k], want, atol=1e-12, rtol=1e-12), k


def test_tied_entries_stay_tied(tmp_path: Path) -> None:
    models = _models(2)
    for m in models:
        m["tied.weight"] = m["emb.weight"]  # the same tensor object: a tie
    r = paramscope.merge(models, method="linear")
    assert torch.equal(r.result["tied.weight"], r.result["emb.weight"])
    assert r.result.alias_of("tied.weight") == "emb.weight"
    dst = tmp_path / "out.safetensors"
    paramscope.merge(models, method="linear", dst=dst)
    out = paramscope.load(dst)
    assert out["tied.weight"] is out["emb.weight"]
    assert torch.equal(out["emb.weight"], (models[0]["emb.weight"] + models[1]["emb.weight"]) / 2)


# --------------------------------------------------------------------------------- slerp
def test_slerp_endpoints() -> None:
    a, b = _models(2)
    r0 = paramscope.merge([a, b], method="slerp", t=0.0)
    r1 = paramscope.merge([a, b], method="slerp", t=1.0)
    for k in a:
        assert _close(r0.result[k], a[k], atol=1e-6, rtol=0), k
        assert _close(r1.result[k], b[k], atol=1e-6, rtol=0), k
    # with a base: t=0 is the base, t=1 the (one) other model
    r0 = paramscope.merge([b], base=a, method="slerp", t=0.0)
    r1 = paramscope.merge([b], base=a, method="slerp", t=1.0)
    for k in a:
        assert _close(r0.result[k], a[k], atol=1e-6, rtol=0), k
        assert _close(r1.result[k], b[k], atol=1e-6, rtol=0), k


def test_slerp_of_orthogonal_unit_vectors_keeps_the_norm() -> None:
    # one row of two values: slerp over the whole tensor and per output row agree here
    a = {"v": torch.tensor([[1.0, 0.0]])}
    b = {"v": torch.tensor([[0.0, 1.0]])}
    s = paramscope.merge([a, b], method="slerp", t=0.5).result["v"]
    lin = paramscope.merge([a, b], method="linear").result["v"]
    half = 1 / math.sqrt(2)
    assert _close(s, torch.tensor([[half, half]]), atol=1e-6, rtol=0), s
    assert abs(s.norm().item() - 1.0) < 1e-6
    assert abs(lin.norm().item() - half) < 1e-6
    # t=0.25: the angle is a quarter of the way from a to b
    s = paramscope.merge([a, b], method="slerp", t=0.25).result["v"]
    want = torch.tensor([[math.cos(math.pi / 8), math.sin(math.pi / 8)]])
    assert _close(s, want, atol=1e-6, rtol=0), s


def test_slerp_of_near_parallel_tensors_is_linear() -> None:
    a = _rand(4, 16, seed=1)
    b = a * 1.5 + 1e-4 * _rand(4, 16, seed=2)  # cosine > 0.9995 overall and per row
    assert _cos(a, b) > 0.9995
    for t in (0.3, 0.7):
        s = paramscope.merge([{"w": a}, {"w": b}], method="slerp", t=t).result["w"]
        assert _close(s, (1 - t) * a + t * b, atol=1e-6, rtol=1e-6), t
        # not a slerp of the directions: its norm is the lerp's, between the two norms
        assert a.norm() < s.norm() < b.norm()


# ----------------------------------------------------------------------- task arithmetic
def test_task_arithmetic_is_base_plus_weighted_deltas() -> None:
    base, a, b = _models(3)
    r = paramscope.merge([a, b], base=base, method="task_arithmetic", weights=[0.3, 0.7])
    for k in base:
        want = base[k] + 0.3 * (a[k] - base[k]) + 0.7 * (b[k] - base[k])
        assert _close(r.result[k], want), k
    r = paramscope.merge([a, b], base=base, method="task_arithmetic", weights=[0.3, 0.7], scale=0.5)
    for k in base:
        want = base[k] + 0.5 * (0.3 * (a[k] - base[k]) + 0.7 * (b[k] - base[k]))
        assert _close(r.result[k], want), k
    r = paramscope.merge(
        [a, b], base=base, method="task_arithmetic", weights=[1.0, 3.0], normalize=True
    )
    for k in base:
        want = base[k] + ((a[k] - base[k]) + 3 * (b[k] - base[k])) / 4
        assert _close(r.result[k], want), k


def test_task_arithmetic_needs_a_base() -> None:
    a, b = _models(2)
    for method in ("task_arithmetic", "ties", "dare_linear", "dare_ties"):
        with pytest.raises(ArgumentError, match="base"):
            paramscope.merge([a, b], method=method)


def test_unknown_method_and_bad_weights_are_refused() -> None:
    a, b = _models(2)
    with pytest.raises(ArgumentError, match="bogus"):
        paramscope.merge([a, b], method="bogus")
    with pytest.raises(ArgumentError, match="weights"):
        paramscope.merge([a, b], method="linear", weights=[1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------------- ties
def _agreeing(base: dict, seed: int) -> tuple[dict, dict]:
    """Two fine-tunes whose deltas have the same sign at every element."""
    out = []
    for i in range(2):
        ft = {}
        for k, v in base.items():
            sign = torch.sign(_rand(*v.shape, seed=seed + 1000))  # shared by both
            sign[sign == 0] = 1
            mag = _rand(*v.shape, seed=seed + i).abs() + 0.01
            ft[k] = v + sign * mag
        out.append(ft)
    return out[0], out[1]


def test_ties_at_density_1_with_agreeing_signs_is_task_arithmetic() -> None:
    (base,) = _models(1, seed=5)
    a, b = _agreeing(base, seed=7)
    ties = paramscope.merge([a, b], base=base, method="ties", density=1.0, weights=[0.4, 0.6])
    ta = paramscope.merge(
        [a, b], base=base, method="task_arithmetic", weights=[0.4, 0.6], normalize=True
    )
    for k in base:
        assert _close(ties.result[k], ta.result[k]), k
        assert not _close(ties.result[k], base[k]), k
    rows = _tensor_rows(ties)
    for k in base:
        assert rows[k]["sign_conflict"] == 0.0, (k, rows[k])


def test_ties_by_hand() -> None:
    base = torch.arange(8, dtype=torch.float32) * 0.1
    d1 = torch.tensor([4.0, -3.0, 0.5, 2.0, -1.0, 0.2, 5.0, -0.1])
    d2 = torch.tensor([-5.0, -6.0, 3.0, -3.5, 2.0, -4.0, 0.1, 0.2])
    # trim to density 0.5 (4 of 8 by magnitude):
    #   d1 -> [4, -3, 0, 2, 0, 0, 5, 0]      d2 -> [-5, -6, 0, -3.5, 0, -4, 0, 0]
    # weighted (1, 2):  [4, -3, 0, 2, 0, 0, 5, 0] and [-10, -12, 0, -7, 0, -8, 0, 0]
    # elected sign of the sum [-6, -15, 0, -5, 0, -8, 5, 0] (0 -> +): - - + - + - + +
    # disjoint weighted mean: sum of agreeing / sum of their weights
    #   [-10/2, -15/3, 0, -7/2, 0, -8/2, 5/1, 0]
    want = base + torch.tensor([-5.0, -5.0, 0.0, -3.5, 0.0, -4.0, 5.0, 0.0])
    r = paramscope.merge(
        [{"w": base + d1}, {"w": base + d2}],
        base={"w": base},
        method="ties",
        density=0.5,
        weights=[1.0, 2.0],
    )
    got = r.result["w"]
    for i in range(8):
        assert abs(got[i].item() - want[i].item()) < 1e-6, (i, got.tolist(), want.tolist())
    # without normalize: the sum of the agreeing weighted deltas
    r = paramscope.merge(
        [{"w": base + d1}, {"w": base + d2}],
        base={"w": base},
        method="ties",
        density=0.5,
        weights=[1.0, 2.0],
        normalize=False,
    )
    want = base + torch.tensor([-10.0, -15.0, 0.0, -7.0, 0.0, -8.0, 5.0, 0.0])
    assert _close(r.result["w"], want), r.result["w"].tolist()


def test_ties_density_per_source() -> None:
    base = torch.zeros(10)
    d1 = torch.arange(1.0, 11.0)  # keep the top 2 (density 0.2) -> 9, 10
    d2 = torch.arange(1.0, 11.0) * 0.5  # keep all (density 1.0)
    r = paramscope.merge(
        [{"w": d1}, {"w": d2}], base={"w": base}, method="ties", density=[0.2, 1.0]
    )
    want = d2.clone()
    want[8:] = (d1[8:] + d2[8:]) / 2
    assert _close(r.result["w"], want), r.result["w"].tolist()


def test_sign_conflict_fraction_by_hand() -> None:
    base = torch.zeros(8)
    d1 = torch.tensor([1.0, -1.0, 2.0, -2.0, 3.0, 1.0, 1.0, 1.0])
    d2 = torch.tensor([1.0, 1.0, -1.0, -2.0, -3.0, 2.0, 2.0, -0.5])
    # every element has a nonzero delta in both: signs differ at 1, 2, 4, 7 -> 4 of 8
    for method in ("ties", "dare_ties"):
        r = paramscope.merge([{"w": d1}, {"w": d2}], base={"w": base}, method=method, density=1.0)
        row = _tensor_rows(r)["w"]
        assert row["sign_conflict"] == pytest.approx(0.5), (method, row)
    r = paramscope.merge([{"w": d1}, {"w": d2}], base={"w": base}, method="task_arithmetic")
    assert _tensor_rows(r)["w"]["sign_conflict"] is None


# ----------------------------------------------------------------------------------- dare
N = 100_000


def _dare_case() -> tuple[dict, dict, torch.Tensor]:
    base = _rand(100, N // 100, seed=3)
    delta = 1.0 + 0.1 * _rand(100, N // 100, seed=4)  # no zero, mean 1
    return {"w": base}, {"w": base + delta}, delta


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_keeps_density_and_the_mean_delta(method: str) -> None:
    base, ft, delta = _dare_case()
    p = 0.3
    r = paramscope.merge([ft], base=base, method=method, density=p, seed=0)
    merged = r.result["w"] - base["w"]
    kept = (merged != 0).double().mean().item()
    band = 5 * math.sqrt(p * (1 - p) / N)
    assert abs(kept - p) < band, (kept, p, band)
    # the kept deltas are rescaled (1/density): the mean delta stays about the same
    assert abs(merged.mean().item() - delta.mean().item()) < 0.03 * delta.mean().item()
    # and the kept ones are the original deltas times ~1/density
    ratio = (merged[merged != 0] / delta[merged != 0]).mean().item()
    assert abs(ratio - 1 / p) < 0.05 / p, ratio
    row = _tensor_rows(r)["w"]
    assert row["density_kept"] == pytest.approx(kept, abs=band), row


def test_dare_seed() -> None:
    base, ft, _ = _dare_case()
    runs = [
        paramscope.merge([ft], base=base, method="dare_linear", density=0.5, seed=s).result["w"]
        for s in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    # the global torch generator neither decides nor is moved by the mask
    torch.manual_seed(123)
    x = paramscope.merge([ft], base=base, method="dare_linear", density=0.5, seed=0).result["w"]
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)
    assert torch.equal(x, runs[0])


def test_dare_masks_differ_per_source_and_per_tensor() -> None:
    # the mask is seeded by (seed, tensor name, source index): two sources with the same
    # delta, and two tensors with the same values, are dropped independently
    base, ft, delta = _dare_case()
    p = 0.5
    b2 = {"w": base["w"], "w2": base["w"].clone()}
    f2 = {"w": ft["w"], "w2": ft["w"].clone()}
    r = paramscope.merge(
        [f2, {k: v.clone() for k, v in f2.items()}],
        base=b2,
        method="dare_linear",
        density=p,
        weights=[1.0, 1.0],
        normalize=False,
        seed=0,
    )
    m = r.result["w"] - b2["w"]
    # kept by one source only: the single rescaled delta (~ delta/p), by both ~2 delta/p
    one = ((m / delta - 1 / p).abs() < 0.25 / p).double().mean().item()
    band = 5 * math.sqrt(0.5 * 0.5 / N)
    assert abs(one - 2 * p * (1 - p)) < band, one
    assert not torch.equal(r.result["w"], r.result["w2"])


def test_dare_ties_two_sources() -> None:
    base, ft, delta = _dare_case()
    ft2 = {"w": base["w"] + 2 * delta}
    p = 0.4
    r = paramscope.merge([ft, ft2], base=base, method="dare_ties", density=p, seed=0)
    merged = r.result["w"] - base["w"]
    untouched = (merged == 0).double().mean().item()
    q = (1 - p) ** 2  # dropped by both
    assert abs(untouched - q) < 5 * math.sqrt(q * (1 - q) / N), untouched
    # normalize is off by default for dare_ties: the sum of the rescaled deltas, mean ~3
    assert abs(merged.mean().item() - 3 * delta.mean().item()) < 0.03 * 3


# --------------------------------------------------------------------------------- report
def test_report_numbers_match_torch() -> None:
    base, a, b = _models(3, seed=11)
    r = paramscope.merge([a, b], base=base, method="ties", density=0.5, weights=[0.5, 0.5])
    d = r.to_dict()
    assert set(d) >= REPORT_KEYS, REPORT_KEYS - set(d)
    assert d["method"] == "ties"
    assert len(d["sources"]) == 2 and d["output"] is None and d["base"] is not None
    # the cosines are listed per model: the base's first (documented in MergeReport)
    assert d["models"] == [d["base"], *d["sources"]]
    assert d["entries"] == len(base)
    assert json.loads(json.dumps(d)) == d
    rows = _tensor_rows(r)
    assert set(rows) == set(base)
    for k, row in rows.items():
        assert set(row) >= TENSOR_KEYS, TENSOR_KEYS - set(row)
        assert row["method"] == "ties"
        assert tuple(row["shape"]) == tuple(base[k].shape)
        res = r.result[k]
        want = [_cos(base[k], res), _cos(a[k], res), _cos(b[k], res)]
        assert row["cosine"] == pytest.approx(want, abs=1e-5), k
        md = res - base[k]
        want_dc = [_cos(a[k] - base[k], md), _cos(b[k] - base[k], md)]
        assert row["delta_cosine"] == pytest.approx(want_dc, abs=1e-5), k
        assert 0.0 <= row["density_kept"] <= 1.0
        assert 0.0 <= row["sign_conflict"] <= 1.0
        assert row["norm_ratio"] > 0
    text = r.to_text()
    assert "ties" in text and not text.endswith("\n")
    for k in base:
        assert k in text, k


def test_report_linear_has_no_deltas() -> None:
    a, b = _models(2)
    r = paramscope.merge([a, b], method="linear")
    d = r.to_dict()
    assert d["base"] is None and d["models"] == d["sources"] and len(d["sources"]) == 2
    for k, row in _tensor_rows(r).items():
        assert row["delta_cosine"] is None and row["sign_conflict"] is None, row
        assert row["cosine"] == pytest.approx(
            [_cos(a[k], r.result[k]), _cos(b[k], r.result[k])], abs=1e-5
        )
        # the mean of two random tensors is shorter than either: the ratio says so
        assert 0 < row["norm_ratio"] < 1, row
    assert "linear" in r.to_text()


def test_report_norm_ratio_of_identical_sources_is_1() -> None:
    (a,) = _models(1)
    r = paramscope.merge([a, {k: v.clone() for k, v in a.items()}], method="linear")
    for row in _tensor_rows(r).values():
        assert row["norm_ratio"] == pytest.approx(1.0, abs=1e-6), row
        assert row["cosine"] == pytest.approx([1.0, 1.0], abs=1e-6), row


# ------------------------------------------------------------------------------ overrides
def test_overrides_change_only_matching_tensors() -> None:
    base, a, b = _models(3)
    plain = paramscope.merge([a, b], base=base, method="task_arithmetic")
    r = paramscope.merge(
        [a, b], base=base, method="task_arithmetic", overrides=["lm_head.*:weight=0"]
    )
    assert torch.equal(r.result["lm_head.weight"], base["lm_head.weight"])
    for k in ("emb.weight", "layer.weight", "layer.bias"):
        assert torch.equal(r.result[k], plain.result[k]), k
    assert _tensor_rows(r)["lm_head.weight"]["method"] == "task_arithmetic"

    r = paramscope.merge([a, b], method="slerp", t=0.5, overrides=["layer.*:t=1"])
    assert _close(r.result["layer.weight"], b["layer.weight"], atol=1e-6, rtol=0)
    assert _close(r.result["layer.bias"], b["layer.bias"], atol=1e-6, rtol=0)
    s = paramscope.merge([a, b], method="slerp", t=0.5)
    assert torch.equal(r.result["emb.weight"], s.result["emb.weight"])

    r = paramscope.merge(
        [a, b], base=base, method="task_arithmetic", overrides=["emb.*:scale=2,weight=0.5"]
    )
    want = base["emb.weight"] + 2 * 0.5 * (
        a["emb.weight"] - base["emb.weight"] + b["emb.weight"] - base["emb.weight"]
    )
    assert _close(r.result["emb.weight"], want)
    assert torch.equal(r.result["layer.weight"], plain.result["layer.weight"])

    r = paramscope.merge(
        [a, b], base=base, method="task_arithmetic", overrides=["emb.*:method=linear"]
    )
    assert _close(r.result["emb.weight"], (a["emb.weight"] + b["emb.weight"]) / 2)
    assert _tensor_rows(r)["emb.weight"]["method"] == "linear"
    assert torch.equal(r.result["layer.weight"], plain.result["layer.weight"])


@pytest.mark.parametrize(
    "bad", ["lm_head.weight", "lm_head.*:weight", "lm_head.*:colour=1", "lm_head.*:weight=x"]
)
def test_bad_override_is_refused(bad: str) -> None:
    a, b = _models(2)
    with pytest.raises(ArgumentError) as exc:
        paramscope.merge([a, b], method="linear", overrides=[bad])
    assert bad.split(":")[-1].split("=")[0] in str(exc.value)


# ------------------------------------------------------------------------ missing entries
def _uneven(tmp_path: Path) -> tuple[Path, Path, Path, dict, dict, dict]:
    """base, a, b files (and their dicts): base and a hold 'extra', b does not."""
    base, a, b = _models(3)
    base["extra"] = _rand(4, seed=99)
    a["extra"] = base["extra"] + 1.0
    pb = paramscope.save(base, tmp_path / "base.safetensors")
    pa = paramscope.save(a, tmp_path / "a.safetensors")
    pbb = paramscope.save(b, tmp_path / "b.safetensors")
    return pb, pa, pbb, base, a, b


def test_missing_entry_is_an_error_naming_it_and_the_sources(tmp_path: Path) -> None:
    _, pa, pb, *_ = _uneven(tmp_path)
    dst = tmp_path / "out.safetensors"
    with pytest.raises(ParamscopeError) as exc:
        paramscope.merge([pa, pb], method="linear", dst=dst)
    msg = str(exc.value)
    assert "extra" in msg and "b.safetensors" in msg and "\n" not in msg, msg
    assert not dst.exists()


def test_missing_rules(tmp_path: Path) -> None:
    pbase, pa, pb, base, a, b = _uneven(tmp_path)
    common = ("emb.weight", "layer.weight", "layer.bias", "lm_head.weight")
    # base: the base's value
    r = paramscope.merge([pa, pb], base=pbase, method="task_arithmetic", missing="base")
    assert torch.equal(r.result["extra"], base["extra"])
    # first: the value of the first source that holds it
    r = paramscope.merge([pb, pa], method="linear", missing="first")
    assert torch.equal(r.result["extra"], a["extra"])
    # skip: left out
    r = paramscope.merge([pa, pb], method="linear", missing="skip")
    assert "extra" not in r.result and set(r.result) == set(common)
    skipped = r.to_dict()["skipped"]
    assert skipped == 1 or skipped == ["extra"], skipped
    # present: merged over the sources that hold it (here only a: linear over a alone)
    r = paramscope.merge([pa, pb], method="linear", missing="present")
    assert _close(r.result["extra"], a["extra"])
    # a third source that holds it too: the mean of the two that hold it
    c = {**a, "extra": a["extra"] + 2.0}
    r = paramscope.merge([pa, pb, c], method="linear", missing="present")
    assert _close(r.result["extra"], a["extra"] + 1.0)
    for k in common:
        assert _close(r.result[k], (a[k] + b[k] + c[k]) / 3), k
    with pytest.raises(ArgumentError, match="missing"):
        paramscope.merge([pa, pb], method="linear", missing="sometimes")


# ------------------------------------------------------------------- refusals write nothing
def test_shape_mismatch_names_the_tensor_and_every_shape(tmp_path: Path) -> None:
    a, b, c = _models(3)
    b["layer.weight"] = _rand(8, 4, seed=1)
    c["layer.weight"] = _rand(4, 8, seed=2)
    pa = paramscope.save(a, tmp_path / "a.safetensors")
    pb = paramscope.save(b, tmp_path / "b.safetensors")
    pc = paramscope.save(c, tmp_path / "c.safetensors")
    (tmp_path / "keep.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    for dst, shard in ((tmp_path / "out.safetensors", None), (tmp_path / "outdir", "1KB")):
        with pytest.raises(ShapeMismatchError) as exc:
            paramscope.merge([pa, pb, pc], method="linear", dst=dst, max_shard_size=shard)
        msg = str(exc.value)
        assert "layer.weight" in msg and "\n" not in msg, msg
        for shape in ((8, 8), (8, 4), (4, 8)):  # as a tuple or a list
            assert str(shape) in msg or str(list(shape)) in msg, (shape, msg)
        for name in ("a.safetensors", "b.safetensors", "c.safetensors"):
            assert name in msg, (name, msg)
        assert not dst.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_dtype_mismatch_unless_dtype_given(tmp_path: Path) -> None:
    a, b = _models(2)
    b16 = {k: v.to(torch.float16) for k, v in b.items()}
    pa = paramscope.save(a, tmp_path / "a.safetensors")
    pb = paramscope.save(b16, tmp_path / "b.safetensors")
    dst = tmp_path / "out.safetensors"
    with pytest.raises(DTypeMismatchError) as exc:
        paramscope.merge([pa, pb], method="linear", dst=dst)
    assert "emb.weight" in str(exc.value) or "layer" in str(exc.value), str(exc.value)
    assert not dst.exists()
    r = paramscope.merge([pa, pb], method="linear", dst=dst, dtype="fp32")
    assert r.to_dict()["output"] == str(dst)
    out = paramscope.load(dst)
    for k in a:
        assert out[k].dtype == torch.float32
        assert _close(out[k], (a[k] + b16[k].float()) / 2, atol=1e-3), k
    r = paramscope.merge([a, b], method="linear", dtype="bf16")
    assert all(v.dtype == torch.bfloat16 for v in r.result.values())
    for k in a:
        assert torch.equal(r.result[k], ((a[k] + b[k]) / 2).to(torch.bfloat16)), k


def test_an_existing_folder_at_a_file_dst_is_refused(tmp_path: Path) -> None:
    a, b = _models(2)
    (tmp_path / "out.safetensors").mkdir()
    with pytest.raises(ParamscopeError):
        paramscope.merge([a, b], method="linear", dst=tmp_path / "out.safetensors")
    assert list((tmp_path / "out.safetensors").iterdir()) == []


# -------------------------------------------------------------------- sources and outputs
class _Net(torch.nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = torch.nn.Linear(12, 24)
        self.fc2 = torch.nn.Linear(24, 6)


def test_every_kind_of_source(tmp_path: Path) -> None:
    nets = [_Net(s) for s in range(6)]
    sds = [{k: v.detach().clone() for k, v in n.state_dict().items()} for n in nets]
    f = paramscope.save(sds[0], tmp_path / "one.safetensors")
    full = paramscope.save(sds[1], tmp_path / "tmp.safetensors")
    paramscope.convert(full, tmp_path / "sharded", max_shard_size=600)
    full.unlink()
    shards = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert "model.safetensors.index.json" in shards and len(shards) >= 3, shards
    torch.save(sds[2], tmp_path / "pytorch_model.bin")
    sources = [
        f,
        tmp_path / "sharded",
        tmp_path / "pytorch_model.bin",
        ParamDict(sds[3]),
        sds[4],
        nets[5],
    ]
    r = paramscope.merge(sources, method="linear")
    assert sorted(r.result) == sorted(sds[0])
    for k in sds[0]:
        want = sum(sd[k] for sd in sds) / 6
        assert _close(r.result[k], want), k
    assert len(r.to_dict()["sources"]) == 6
    # the models in memory are not changed by the merge
    for net, sd in zip(nets[3:], sds[3:], strict=True):
        for k, v in net.state_dict().items():
            assert torch.equal(v, sd[k]), k
    assert torch.equal(nets[5].fc1.weight.detach(), sds[5]["fc1.weight"])


def test_output_file_and_shards_with_metadata(tmp_path: Path) -> None:
    base, a, b = _models(3)
    kw = dict(base=base, method="ties", density=0.5, weights=[0.3, 0.7])
    mem = paramscope.merge([a, b], **kw)
    dst = tmp_path / "merged.safetensors"
    r = paramscope.merge([a, b], dst=dst, **kw)
    assert r.result is None or isinstance(r.result, ParamDict)
    d = r.to_dict()
    assert d["output"] == str(dst) and d["shards"] in (0, 1)
    assert d["bytes"] == sum(v.numel() * v.element_size() for v in mem.result.values())
    out = paramscope.load(dst)
    assert sorted(out) == sorted(base)
    for k in base:
        assert torch.equal(out[k], mem.result[k]), k
    meta = paramscope.read_manifest(dst).metadata
    text = json.dumps(meta)
    assert "ties" in text and "0.5" in text and "0.3" in text and "0.7" in text, meta
    assert paramscope.verify(dst).ok

    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    r = paramscope.merge([a, b], dst=folder, max_shard_size="1KB", **kw)
    names = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors.index.json" in names and "config.json" in names, names
    n_shards = len([n for n in names if n.endswith(".safetensors")])
    assert n_shards >= 2 and r.to_dict()["shards"] == n_shards
    assert (folder / "config.json").read_text() == "{}"
    out = paramscope.load(folder)
    for k in base:
        assert torch.equal(out[k], mem.result[k]), k
    assert "ties" in json.dumps(paramscope.read_manifest(folder).metadata)


def test_in_memory_result_is_a_param_dict() -> None:
    base, a = _models(2)
    r = paramscope.merge([a], base=base, method="task_arithmetic", weights=[2.0])
    assert isinstance(r.result, ParamDict)
    assert sorted(r.result) == sorted(base)
    for k in base:
        assert _close(r.result[k], base[k] + 2 * (a[k] - base[k])), k
    assert r.to_dict()["output"] is None


def test_non_float_entries_are_copied() -> None:
    a, b = _models(2)
    a["steps"] = torch.tensor([3, 4], dtype=torch.int64)
    b["steps"] = torch.tensor([3, 4], dtype=torch.int64)
    r = paramscope.merge([a, b], method="linear")
    assert torch.equal(r.result["steps"], a["steps"])
    assert r.result["steps"].dtype == torch.int64
    assert r.to_dict()["copied"] in (1, ["steps"])


# ------------------------------------------------------------------------------- streaming
def test_file_merge_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from paramscope.io._reader import SourceReader

    n_tensors, n_sources = 24, 3
    paths = []
    for s in range(n_sources):
        sd = {f"t{i:02d}": _rand(64, 64, seed=100 * s + i) for i in range(n_tensors)}
        paths.append(paramscope.save(sd, tmp_path / f"m{s}.safetensors"))
    base_sd = {f"t{i:02d}": _rand(64, 64, seed=999 + i) for i in range(n_tensors)}
    base = paramscope.save(base_sd, tmp_path / "base.safetensors")

    live: list[weakref.ref] = []
    peak = [0, 0]  # most tensors read and alive at once, reads
    original = SourceReader.read

    def read(self, entry, *args, **kwargs):
        t = original(self, entry, *args, **kwargs)
        live[:] = [w for w in live if w() is not None]
        live.append(weakref.ref(t))
        peak[0] = max(peak[0], len(live))
        peak[1] += 1
        return t

    monkeypatch.setattr(SourceReader, "read", read)
    r = paramscope.merge(
        paths, base=base, method="ties", density=0.5, dst=tmp_path / "out.safetensors"
    )
    assert peak[1] >= (n_sources + 1) * n_tensors, peak  # every tensor was read from files
    assert peak[0] <= n_sources + 1 + 2, peak  # one per source (and base), plus a few
    assert r.to_dict()["entries"] == n_tensors


def test_file_merge_peak_rss_follows_the_largest_tensor(tmp_path: Path) -> None:
    # base + 3 sources of 32 MiB each (64 tensors of 512 KiB), merged in a fresh process:
    # holding the inputs would raise the peak RSS by > 128 MiB; streaming costs a few tensors
    # plus allocator slack (measured here: 18-40 MiB)
    # (the bound: (sources + 2) x largest tensor + scratch)
    paths = []
    for s in range(4):
        sd = {f"t{i:02d}": _rand(128, 1024, seed=100 * s + i) for i in range(64)}
        paths.append(str(paramscope.save(sd, tmp_path / f"m{s}.safetensors", fsync=False)))
        del sd
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from paramscope.merging._merge import merge
        tiny = {{"w": torch.ones(4)}}
        merge([tiny, tiny], base=tiny, method="ties", density=0.5)  # imports, warm-up
        import os
        with open("/proc/self/statm") as f:  # resident now (the peak so far may be higher)
            before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
        merge({paths[1:]!r}, base={paths[0]!r}, method="ties", density=0.5,
              dst={str(tmp_path / "out.safetensors")!r}, fsync=False)
        # VmHWM, not ru_maxrss: Linux carries the forked parent's peak (pytest's, hundreds of
        # MiB in a full run) into the child's ru_maxrss across exec; VmHWM is this image's own
        with open("/proc/self/status") as f:
            after = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        print((after - before) / 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    grew_mib = float(out.stdout.strip().splitlines()[-1])
    assert (tmp_path / "out.safetensors").stat().st_size > 32 * 2**20
    assert grew_mib < 80, f"peak RSS grew by {grew_mib:.0f} MiB merging 4 x 32 MiB"
