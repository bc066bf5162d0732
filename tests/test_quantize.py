"""Tests of weight quantisation (paramscope.compress._quantize)."""

from __future__ import annotations

import math
import re

import pytest
import torch

import paramscope
from _helpers import without_torch
from paramscope import ArgumentError, ParamDict, ParamscopeError
from paramscope._quantstore import is_quantized_entry
from paramscope.compress import _qerrors, _qkernels
from paramscope.compress._int4 import pack_int4, unpack_int4
from paramscope.compress._qerrors import ErrorSums, error_stats, error_sums
from paramscope.compress._qkernels import QuantConfig, dequantize_tensor, quantize_tensor
from paramscope.compress._qreport import QuantReport
from paramscope.compress._quantize import dequantize, quantize, should_quantize


def _gauss(rows: int = 256, cols: int = 1024, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g)


def _sqnr(w: torch.Tensor, cfg: QuantConfig) -> float:
    return error_stats(w, dequantize_tensor(quantize_tensor(w, cfg)))["sqnr_db"]


def _predicted_sqnr(w: torch.Tensor, step: torch.Tensor) -> float:
    """Uniform-noise model: each element's rounding error is uniform on ±Δ/2, variance Δ²/12.

    ``step`` is Δ per element (broadcastable to ``w``). Predicted SQNR =
    10·log10(Σw² / Σ Δ²/12), valid while Δ is small next to σ (no clipping).
    """
    w64 = w.double()
    noise = (step.double().expand_as(w64) ** 2 / 12.0).sum()
    return float(10.0 * torch.log10((w64 * w64).sum() / noise))


# --------------------------------------------------------------------------- SQNR bounds
def test_per_channel_int8_sqnr_matches_derived_bound():
    # Derivation: per channel, symmetric int8 has step Δ_c = max_c|w| / 127 and (no clipping)
    # the rounding error is ~uniform on ±Δ_c/2, variance Δ_c²/12. For N(0, σ²) weights the
    # signal power is σ², so SQNR_c = 10·log10(12·127² σ² / max_c²). With 1024 samples per
    # channel max_c ≈ 3.3–4 σ, giving ≈ 40–42 dB. We compute the prediction from the actual
    # per-channel maxima and require the measurement within 1.5 dB of it, and ≥ 38 dB.
    w = _gauss()
    measured = _sqnr(w, QuantConfig(8, "symmetric", "channel"))
    step = w.abs().amax(dim=1, keepdim=True) / 127
    predicted = _predicted_sqnr(w, step)
    assert 39.0 <= predicted <= 43.0
    assert measured >= 38.0
    assert abs(measured - predicted) <= 1.5


def test_per_tensor_int8_is_lower_than_per_channel_and_matches_model():
    # Same model with one step Δ = max|w| / 127 over all 256·1024 samples (max ≈ 4.5–5 σ):
    # SQNR ≈ 10·log10(12·127² / (max/σ)²) ≈ 38–40 dB, below the per-channel value.
    w = _gauss()
    measured = _sqnr(w, QuantConfig(8, "symmetric", "tensor"))
    predicted = _predicted_sqnr(w, w.abs().max() / 127)
    assert abs(measured - predicted) <= 1.5
    assert measured < _sqnr(w, QuantConfig(8, "symmetric", "channel"))


def test_asymmetric_int8_matches_model():
    # Asymmetric: Δ_c = (max_c − min_c) / 255 with min_c ≤ 0 ≤ max_c; for a symmetric
    # distribution max − min ≈ 2·max|w|, so Δ is close to the symmetric step and the SQNR
    # about the same (~40–42 dB).
    w = _gauss()
    measured = _sqnr(w, QuantConfig(8, "asymmetric", "channel"))
    mx = w.amax(dim=1, keepdim=True).clamp(min=0)
    mn = w.amin(dim=1, keepdim=True).clamp(max=0)
    predicted = _predicted_sqnr(w, (mx - mn) / 255)
    assert measured >= 38.0
    assert abs(measured - predicted) <= 1.5


def test_int4_group128_matches_model():
    # int4 symmetric, groups of 128 along the last dim: Δ_g = max_g|w| / 7; with 128 samples
    # max_g ≈ 2.5–3 σ, so SQNR ≈ 10·log10(12·7² / (max_g/σ)²) ≈ 18–20 dB.
    w = _gauss()
    measured = _sqnr(w, QuantConfig(4, "symmetric", 128))
    groups = w.reshape(256, 8, 128)
    step = (groups.abs().amax(dim=-1, keepdim=True) / 7).expand_as(groups).reshape(256, 1024)
    predicted = _predicted_sqnr(w, step)
    assert 17.0 <= predicted <= 21.0
    assert abs(measured - predicted) <= 1.5


# --------------------------------------------------------------------------- error bounds
@pytest.mark.parametrize(
    "cfg",
    [
        QuantConfig(8, "symmetric", "channel"),
        QuantConfig(8, "symmetric", "tensor"),
        QuantConfig(8, "symmetric", 64),
        QuantConfig(4, "symmetric", "channel"),
        QuantConfig(4, "symmetric", 32),
        QuantConfig(8, "asymmetric", "channel"),
        QuantConfig(4, "asymmetric", 32),
    ],
    ids=str,
)
def test_error_is_at_most_half_a_step(cfg: QuantConfig):
    w = _gauss(64, 256, seed=1) * 0.02
    q = quantize_tensor(w, cfg)
    err = (dequantize_tensor(q) - w).abs()
    scale = q.scale
    if isinstance(cfg.granularity, int):
        err = err.reshape(64, 256 // cfg.granularity, cfg.granularity)
        scale = scale.unsqueeze(-1)
    bound = scale / 2 * (1 + 1e-5) + 1e-12
    assert bool((err <= bound).all()), float((err - bound).max())


def test_storage_convention_shapes_dtypes_and_ranges():
    w = torch.randn(6, 4, 3, 5)  # conv-like, odd last dim
    q8 = quantize_tensor(w, QuantConfig(8, "symmetric", "channel"))
    assert q8.data.dtype == torch.int8 and q8.data.shape == w.shape
    assert q8.scale.dtype == torch.float32 and q8.scale.shape == (6, 1, 1, 1)
    assert q8.zero is None and int(q8.data.abs().max()) == 127
    assert int(q8.data.min()) >= -127

    a8 = quantize_tensor(w, QuantConfig(8, "asymmetric", "tensor"))
    assert a8.data.dtype == torch.uint8 and a8.scale.shape == ()
    assert a8.zero is not None and a8.zero.dtype == torch.uint8 and a8.zero.shape == ()

    q4 = quantize_tensor(w, QuantConfig(4, "symmetric", "channel"))
    assert q4.data.dtype == torch.uint8 and q4.data.shape == (6, 4, 3, 3)
    vals = unpack_int4(q4.data, 5, signed=True)
    assert int(vals.min()) >= -7 and int(vals.max()) <= 7 and int(vals.abs().max()) == 7

    a4 = quantize_tensor(torch.randn(4, 64), QuantConfig(4, "asymmetric", 16))
    assert a4.data.shape == (4, 32) and a4.scale.shape == (4, 4) and a4.zero.shape == (4, 4)
    assert int(a4.zero.max()) <= 15
    assert int(unpack_int4(a4.data, 64, signed=False).max()) <= 15


def test_channel_on_1d_falls_back_to_tensor():
    q = quantize_tensor(torch.randn(10), QuantConfig(8, "symmetric", "channel"))
    assert q.cfg.granularity == "tensor" and q.scale.shape == ()


def test_bf16_input_comes_back_bf16():
    w = torch.randn(16, 32).to(torch.bfloat16)
    q = quantize_tensor(w, QuantConfig())
    r = dequantize_tensor(q)
    assert r.dtype == torch.bfloat16 and r.shape == w.shape
    assert error_stats(w, r)["sqnr_db"] > 35


def test_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch):
    w = _gauss(33, 100, seed=3)
    cfgs = [QuantConfig(8, "symmetric", "channel"), QuantConfig(8, "asymmetric", "tensor")]
    ref = [quantize_tensor(w, c) for c in cfgs]
    monkeypatch.setattr(_qkernels, "_CHUNK", 64)  # rows of 100 > chunk: the split-row path
    for c, r in zip(cfgs, ref, strict=True):
        q = quantize_tensor(w, c)
        assert torch.equal(q.data, r.data) and torch.equal(q.scale, r.scale)
    monkeypatch.setattr(_qkernels, "_CHUNK", 250)  # two rows per chunk
    q = quantize_tensor(w, cfgs[0])
    assert torch.equal(q.data, ref[0].data)


def test_bitwise_stable():
    w = _gauss(128, 384, seed=7)
    for cfg in (QuantConfig(8, "asymmetric", "channel"), QuantConfig(4, "symmetric", 128)):
        a, b = quantize_tensor(w, cfg), quantize_tensor(w.clone(), cfg)
        assert a.data.numpy().tobytes() == b.data.numpy().tobytes()
        assert a.scale.numpy().tobytes() == b.scale.numpy().tobytes()
        za = a.zero.numpy().tobytes() if a.zero is not None else None
        zb = b.zero.numpy().tobytes() if b.zero is not None else None
        assert za == zb


def test_round_half_to_even_and_exact_values():
    # scale = 127/127 = 1: values on the half steps round to even.
    w = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5]])
    q = quantize_tensor(w, QuantConfig(8, "symmetric", "tensor"))
    assert float(q.scale) == 1.0
    assert q.data.tolist() == [[127, 0, 2, 2, 0, -2]]


# --------------------------------------------------------------------------- int4 packing
@pytest.mark.parametrize("last", [1, 2, 7, 16, 33])
def test_pack_unpack_round_trip(last: int):
    g = torch.Generator().manual_seed(last)
    u = torch.randint(0, 16, (3, last), generator=g, dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(u, signed=False), last, signed=False), u)
    s = torch.randint(-8, 8, (3, last), generator=g, dtype=torch.int8)
    packed = pack_int4(s, signed=True)
    assert packed.shape == (3, (last + 1) // 2) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, last, signed=True), s)


def test_pack_layout_all_nibbles():
    u = torch.arange(16, dtype=torch.uint8)
    packed = pack_int4(u, signed=False)
    assert packed.tolist() == [
        lo | (hi << 4) for lo, hi in zip(range(0, 16, 2), range(1, 16, 2), strict=True)
    ]
    assert torch.equal(unpack_int4(packed, 16, signed=False), u)
    s = torch.arange(-8, 8, dtype=torch.int8)
    assert torch.equal(pack_int4(s, signed=True), packed)  # v + 8 in the nibble
    odd = pack_int4(torch.tensor([5, 6, 7], dtype=torch.uint8), signed=False)
    assert odd.tolist() == [0x65, 0x07]  # padded with a zero high nibble
    with pytest.raises(ParamscopeError, match="last dimension"):
        unpack_int4(odd, 5, signed=False)


# --------------------------------------------------------------------------- dicts
def _model_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {
        "emb.weight": torch.randn(50, 32, generator=g),
        "fc1.weight": torch.randn(64, 32, generator=g),
        "fc1.bias": torch.randn(64, generator=g),
        "norm.weight": torch.ones(64),
        "conv.weight": torch.randn(8, 4, 3, 3, generator=g),
        "steps": torch.tensor([3, 4]),
    }


def test_quantize_defaults_and_metadata():
    src = _model_dict()
    pd, report = quantize(src)
    assert [r["name"] for r in report.tensors] == ["emb.weight", "fc1.weight", "conv.weight"]
    for n in ("fc1.bias", "norm.weight", "steps"):
        assert pd[n] is src[n] and not is_quantized_entry(pd.meta(n).extra)
    m = pd.meta("fc1.weight")
    assert m.role.value == "param" and m.trainable is False
    assert m.extra["quant"] == {
        "bits": 8,
        "scheme": "symmetric",
        "granularity": "channel",
        "shape": [64, 32],
        "dtype": "F32",
        "scale": "fc1.weight__qscale",
        "zero": None,
        "packed": False,
    }
    aux = pd.meta("fc1.weight__qscale")
    assert (aux.role.value, aux.trainable, aux.tags) == ("buffer", False, ("quant-aux",))
    assert "fc1.weight__qzero" not in pd
    assert list(pd).index("fc1.weight__qscale") == list(pd).index("fc1.weight") + 1


def test_should_quantize_rules():
    assert should_quantize("a.weight", (4, 4), True, "param")
    assert not should_quantize("a.bias", (4,), True, "param")
    assert not should_quantize("a.idx", (4, 4), False, "param")
    assert not should_quantize("bn.running_mean", (4, 4), True, "buffer")
    assert not should_quantize("a.weight", (4, 4), True, "param", select="b.*")
    assert not should_quantize("a.weight", (4, 4), True, "param", skip=["re:a\\..*"])


def test_select_and_skip_patterns():
    pd, report = quantize(_model_dict(), select="*.weight", skip=["emb.*"])
    assert [r["name"] for r in report.tensors] == ["fc1.weight", "conv.weight"]
    assert not is_quantized_entry(pd.meta("emb.weight").extra)


def test_group_size_overrides_and_errors_name_entry():
    pd, _ = quantize({"w": torch.randn(4, 64)}, bits=4, group_size=32, granularity="tensor")
    assert pd.meta("w").extra["quant"]["granularity"] == 32
    assert pd["w__qscale"].shape == (4, 2)
    with pytest.raises(ParamscopeError, match=r"'odd\.weight'.*divisible by 32"):
        quantize({"odd.weight": torch.randn(4, 48)}, group_size=32)


def test_all_zero_channel():
    w = torch.randn(4, 16)
    w[2] = 0
    for scheme in ("symmetric", "asymmetric"):
        q = quantize_tensor(w, QuantConfig(8, scheme, "channel"))
        assert bool(torch.isfinite(q.scale).all()) and bool((q.scale > 0).all())
        r = dequantize_tensor(q)
        assert torch.equal(r[2], torch.zeros(16))
        assert error_stats(w, r)["sqnr_db"] > 35
    zero = quantize_tensor(torch.zeros(3, 3), QuantConfig())
    assert float(zero.scale.max()) == 1.0
    assert error_stats(torch.zeros(3, 3), dequantize_tensor(zero))["sqnr_db"] == math.inf


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_names_entry(bad: float):
    w = torch.randn(4, 8)
    w[1, 3] = bad
    with pytest.raises(ParamscopeError, match=r"'enc\.w'.*NaN or Inf"):
        quantize({"enc.w": w})


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"bits": 3}, "bits"),
        ({"bits": True}, "bits"),
        ({"scheme": "affine"}, "scheme"),
        ({"granularity": "row"}, "granularity"),
        ({"granularity": 0}, "granularity"),
        ({"granularity": -4}, "granularity"),
    ],
)
def test_invalid_options(kwargs: dict[str, object], option: str):
    given = re.escape(f"{option}={next(iter(kwargs.values()))!r}")
    with pytest.raises(ArgumentError, match=rf"^quantize: {given}: expected "):
        QuantConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=option):
        quantize({"w": torch.randn(2, 2)}, **kwargs)  # type: ignore[arg-type]


def test_aux_name_collision_is_refused():
    src = {"w": torch.randn(2, 2), "w__qscale": torch.randn(2, 2)}
    with pytest.raises(ParamscopeError, match="w__qscale"):
        quantize(src, skip="w__qscale")


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"scheme": "asymmetric"},
        {"bits": 4, "group_size": 16},
        {"bits": 4, "scheme": "asymmetric", "granularity": "channel"},
    ],
    ids=str,
)
def test_save_load_round_trip(tmp_path, kw: dict[str, object]):
    from safetensors import safe_open

    src = {k: v for k, v in _model_dict().items() if k != "conv.weight"}
    src["conv.weight"] = torch.randn(8, 4, 3, 16)
    src["half.weight"] = torch.randn(8, 16).to(torch.bfloat16)
    pd, _ = quantize(src, **kw)  # type: ignore[arg-type]
    before = dequantize(pd)
    path = tmp_path / "q.safetensors"
    paramscope.save(pd, path)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        assert "fc1.weight__qscale" in keys
        assert f.get_tensor("fc1.weight").dtype == pd["fc1.weight"].dtype
    loaded = paramscope.load(path)
    assert loaded.meta("fc1.weight").extra["quant"] == pd.meta("fc1.weight").extra["quant"]
    after = dequantize(loaded)
    assert list(after) == list(before) == list(src)
    for n in before:
        assert before[n].dtype == src[n].dtype and before[n].shape == src[n].shape
        assert torch.equal(
            before[n].view(-1).view(torch.uint8), after[n].view(-1).view(torch.uint8)
        )
        assert "quant" not in after.meta(n).extra


def test_ties_are_kept_through_quantize_and_dequantize():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10, bias=False))
    model[1].weight = model[0].weight
    pd, report = quantize(model)
    assert [r["name"] for r in report.tensors] == ["0.weight"]
    assert pd.alias_of("1.weight") == "0.weight" and pd["1.weight"].dtype == torch.int8
    back = dequantize(pd)
    assert back.alias_of("1.weight") == "0.weight"
    assert back["1.weight"] is back["0.weight"] and back["0.weight"].dtype == torch.float32


def test_dequantize_missing_aux_names_entry():
    pd, _ = quantize({"fc.weight": torch.randn(4, 4)}, scheme="asymmetric")
    pd.remove("fc.weight__qzero")
    with pytest.raises(ParamscopeError, match=r"'fc\.weight'.*'fc\.weight__qzero'"):
        dequantize(pd)


# --------------------------------------------------------------------------- statistics
def test_error_stats_values_and_chunking(monkeypatch: pytest.MonkeyPatch):
    w = torch.tensor([3.0, 4.0, 0.0])
    r = torch.tensor([3.0, 4.0, 1.0])
    s = error_stats(w, r)
    assert s["sqnr_db"] == pytest.approx(10 * math.log10(25.0))
    assert s["max_abs_error"] == 1.0 and s["rel_l2"] == pytest.approx(0.2)
    assert s["cosine"] == pytest.approx(25 / (5 * math.sqrt(26)))
    a, b = _gauss(16, 100, seed=4), _gauss(16, 100, seed=5)
    whole = error_stats(a, b)
    monkeypatch.setattr(_qerrors, "_STATS_CHUNK", 7)
    chunked = error_stats(a, b)
    for k in whole:
        assert chunked[k] == pytest.approx(whole[k], rel=1e-5)  # float32 block products


def test_report_totals_are_consistent():
    tensors = {f"l{i}.weight": _gauss(64, 256, seed=20 + i) for i in range(3)}
    _, report = quantize(tensors)
    rows = report.tensors
    assert set(rows[0]) == {
        "name",
        "sqnr_db",
        "max_abs_error",
        "rel_l2",
        "cosine",
        "bytes_before",
        "bytes_after",
    }
    total = report.total
    assert set(total) == set(rows[0]) and total["name"] == "total"
    assert total["bytes_before"] == sum(r["bytes_before"] for r in rows) == 3 * 64 * 256 * 4
    assert total["bytes_after"] == sum(r["bytes_after"] for r in rows) == 3 * (64 * 256 + 64 * 4)
    sq = [r["sqnr_db"] for r in rows]
    assert min(sq) <= total["sqnr_db"] <= max(sq)
    assert total["max_abs_error"] == max(r["max_abs_error"] for r in rows)
    assert min(r["cosine"] for r in rows) <= total["cosine"] <= max(r["cosine"] for r in rows)
    d = report.to_dict()
    assert set(d) == {"tensors", "total", "notes"} and d["total"] == total and d["tensors"] == rows
    assert d["notes"] == []


def test_report_accumulator_matches_one_vector():
    a, b = _gauss(8, 64, seed=30), _gauss(8, 64, seed=31) * 0.1
    qa, qb = (
        dequantize_tensor(quantize_tensor(t, QuantConfig(4, "symmetric", 16))) for t in (a, b)
    )
    rep = QuantReport()
    rep.add("a", error_sums(a, qa), 1, 2)
    rep.add("b", error_sums(b, qb), 3, 4)
    whole = error_stats(
        torch.cat([a.flatten(), b.flatten()]), torch.cat([qa.flatten(), qb.flatten()])
    )
    for k, v in whole.items():
        assert rep.total[k] == pytest.approx(v, rel=1e-5)  # float32 block products: ~1e-5 relative
    assert (rep.total["bytes_before"], rep.total["bytes_after"]) == (4, 6)
    assert ErrorSums().stats()["cosine"] == 1.0


def test_module_import_does_not_import_torch():
    code = (
        "import paramscope.compress._quantize as q, paramscope._quantstore as s\n"
        "result = [q.QuantConfig(bits=4).bits, s.is_quantized_entry({})]"
    )
    assert without_torch(code) == [4, False]


def test_quantize_paramdict_keeps_untouched_metadata():
    pd = ParamDict()
    pd.add("enc.weight", torch.randn(4, 8), tags=("enc",), extra={"note": 1})
    pd.add("bn.running_var", torch.ones(4), role="buffer")
    out, _ = quantize(pd)
    assert out.meta("enc.weight").tags == ("enc",)
    assert out.meta("enc.weight").extra["note"] == 1
    assert out.meta("bn.running_var") == pd.meta("bn.running_var")
    back = dequantize(out)
    assert back.meta("enc.weight").extra == {"note": 1} and back.meta("enc.weight").trainable

