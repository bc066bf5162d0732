"""spectral_stats against the weightwatcher package (the oracle): same layers, same α."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import paramscope
from paramscope.reporting._spectral import (
    ALPHA_HIGH,
    ALPHA_LOW,
    fit_power_law,
    spectral_stats,
)

#: weightwatcher reports no tolerance of its own; ours (it computes singular values in float32).
ALPHA_TOL = 0.05


def _heavy(n: int, m: int, a: float, g: torch.Generator) -> torch.Tensor:
    """A trained-looking heavy-tailed matrix: randn @ diag(Pareto(a))."""
    p = (1 - torch.rand(m, generator=g, dtype=torch.float64)) ** (-1 / a)
    return (torch.randn(n, m, generator=g, dtype=torch.float64) @ torch.diag(p)).float()


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(300, 200),  # random
        torch.nn.ReLU(),
        torch.nn.Linear(200, 500),  # heavy
        torch.nn.Linear(500, 100),  # heavy
        torch.nn.Linear(100, 16),  # 16 eigenvalues: weightwatcher's small-sample fit
        torch.nn.Linear(16, 4),  # 4 eigenvalues: skipped by weightwatcher
        torch.nn.Conv2d(3, 32, 3),  # pooled 3x3 slices, 27 eigenvalues
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.Linear(64, 64),  # heavy, square
        torch.nn.Linear(1024, 768),  # heavy
    )
    with torch.no_grad():
        model[2].weight.copy_(_heavy(500, 200, 1.5, g))
        model[3].weight.copy_(_heavy(100, 500, 1.0, g))
        model[8].weight.copy_(_heavy(64, 64, 0.8, g))
        model[9].weight.copy_(_heavy(768, 1024, 2.0, g))
    return model


def _ww(model: torch.nn.Module):
    logging.disable(logging.WARNING)
    try:
        import weightwatcher as ww

        return ww.WeightWatcher(model=model).analyze()
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("seed", [0, 1])
def test_alpha_matches_weightwatcher(seed: int) -> None:
    model = _model(seed)
    details = _ww(model)
    ours = spectral_stats(model)
    # the same layers: weightwatcher's names are the module names
    assert [m["name"] for m in ours.matrices] == [f"{n}.weight" for n in details["name"]]
    for m, (_, row) in zip(ours.matrices, details.iterrows(), strict=True):
        assert (m["N"], m["M"]) == (row["N"], row["M"])
        assert abs(m["alpha"] - row["alpha"]) <= ALPHA_TOL, (m["name"], m["alpha"], row["alpha"])
        assert m["xmin"] == pytest.approx(row["xmin"], rel=1e-3)
        assert abs(m["D"] - row["D"]) <= 0.01
        assert m["n_tail"] == row["num_pl_spikes"]
        assert m["flagged"] == (not ALPHA_LOW <= row["alpha"] <= ALPHA_HIGH)
    assert "4.weight" in [m["name"] for m in ours.matrices]
    assert "5.weight" not in [m["name"] for m in ours.matrices]
    assert any("outside weightwatcher's limits" in n for n in ours.notes)
    assert {m["name"] for m in ours.flagged} == {m["name"] for m in ours.matrices if m["flagged"]}


@pytest.mark.parametrize("n", [9, 15, 40, 500])
def test_fit_matches_weightwatcher_fit(n: int) -> None:
    from weightwatcher.WW_powerlaw import WWFit

    rng = np.random.default_rng(n)
    for _ in range(5):
        x = (1 - rng.random(n)) ** (-1 / rng.uniform(0.5, 4)) * rng.uniform(0.1, 10)
        want = WWFit(x)
        got = fit_power_law(x)
        assert got is not None
        assert got["alpha"] == pytest.approx(want.alpha, rel=1e-9)
        assert got["xmin"] == want.xmin
        assert got["D"] == pytest.approx(want.D, rel=1e-9)


def test_streamed_file_equals_memory(tmp_path) -> None:
    model = _model(3)
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    mem = spectral_stats(model)
    disk = spectral_stats(path)
    assert disk.source == str(path)
    assert [m["name"] for m in disk.matrices] == [m["name"] for m in mem.matrices]
    for a, b in zip(disk.matrices, mem.matrices, strict=True):
        for key in ("alpha", "xmin", "D", "n_tail", "shape", "flagged"):
            assert a[key] == b[key], (a["name"], key)


def test_lowrank_equals_exact_when_tail_is_shorter_than_k() -> None:
    g = torch.Generator().manual_seed(5)
    sd = {"w": _heavy(600, 400, 1.5, g)}
    exact = spectral_stats(sd, method="eigh").matrices[0]
    low = spectral_stats(sd, method="lowrank", k=300).matrices[0]
    assert exact["n_tail"] < 300
    assert low["method"].startswith("randomised SVD, 300")
    assert exact["method"].startswith("eigh")
    assert low["alpha"] == pytest.approx(exact["alpha"], abs=1e-3)
    assert low["n_tail"] == exact["n_tail"]


def test_select_text_dict_and_errors() -> None:
    model = _model(0)
    r = spectral_stats(model, select="*2.weight")
    assert [m["name"] for m in r.matrices] == ["2.weight"]
    assert r.matrices[0]["alpha"] < ALPHA_LOW and r.flagged
    text = r.to_text(60)
    assert "2.weight" in text and all(len(s) <= 60 for s in text.splitlines())
    d = r.to_dict()
    assert d["flagged"] == ["2.weight"] and d["alpha_range"] == [ALPHA_LOW, ALPHA_HIGH]
    with pytest.raises(ValueError, match="method must be one of"):
        spectral_stats(model, method="svd")
    with pytest.raises(TypeError, match="expected a checkpoint path"):
        spectral_stats(3)


def test_public_api_and_cli_inspect_spectral(tmp_path: Path) -> None:
    import json as json_

    from _helpers import run_cli

    g = torch.Generator().manual_seed(0)
    sd = {f"l{i}.weight": torch.randn(48, 32, generator=g) for i in range(3)}
    path = paramscope.save(sd, tmp_path / "m.safetensors")
    rep = paramscope.spectral_stats(path)
    assert isinstance(rep, paramscope.SpectralReport) and len(rep.matrices) == 3
    r = run_cli("inspect", path, "--spectral", "--json")
    assert r.returncode == 0, r.stderr
    assert json_.loads(r.stdout)["matrices"] == json_.loads(json_.dumps(rep.to_dict()))["matrices"]
    r = run_cli("inspect", "zoo:mlp-3-5-2", "--spectral")
    assert r.returncode == 2 and "give a checkpoint" in r.stderr


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((300, 40), torch.float32), ((40, 300), torch.float32), ((517, 517), torch.float16),
     ((1000, 700), torch.bfloat16), ((3, 200), torch.float64)],
)  # fmt: skip
def test_gram_upper_triangle_equals_float64_product(monkeypatch, shape, dtype) -> None:
    from paramscope.reporting import _spectral

    monkeypatch.setattr(_spectral, "GRAM_CHUNK", 4096)  # several chunks along the long side
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(*shape, generator=g).to(dtype)
    w64 = w.to(torch.float64)
    want = w64.T @ w64 if shape[0] >= shape[1] else w64 @ w64.T
    got = _spectral._gram(w)
    assert got.dtype == torch.float64 and got.shape == want.shape
    upper = torch.ones_like(want, dtype=torch.bool).triu()
    assert torch.allclose(got[upper], want[upper], rtol=1e-12, atol=1e-12 * want.abs().max())
    # what lies below the diagonal is not read: eigvalsh(UPLO="U") gives WᵀW's eigenvalues
    want_ev = torch.linalg.eigvalsh(want)
    got_ev = torch.linalg.eigvalsh(got, UPLO="U")
    assert torch.allclose(got_ev, want_ev, rtol=0, atol=1e-12 * float(want_ev.max()))


def _mixed(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i, (n, m, a) in enumerate([(300, 120, 1.5), (90, 260, 2.5), (64, 64, 0.9), (400, 50, 3)]):
        sd[f"layers.{i}.weight"] = _heavy(n, m, a, g)
        sd[f"layers.{i}.bias"] = torch.zeros(n)
    sd["conv.weight"] = torch.randn(32, 16, 3, 3, generator=g)
    sd["low.weight"] = _heavy(500, 300, 2.0, g)
    return sd


def test_matrices_side_by_side_equal_one_at_a_time() -> None:
    sd = _mixed(7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one worker: the matrices one after the other
        seq = spectral_stats(sd)
        seq_low = spectral_stats(sd, select="low.*", method="lowrank", k=100)
        torch.set_num_threads(2)  # two workers, one torch thread each
        par = spectral_stats(sd)
        par_low = spectral_stats(sd, select="low.*", method="lowrank", k=100)
        assert torch.get_num_threads() == 2  # the caller's setting is given back
    finally:
        torch.set_num_threads(before)
    assert [m["name"] for m in par.matrices] == [m["name"] for m in seq.matrices]
    assert len(par.matrices) == 6 and par.notes == seq.notes
    for a, b in zip(par.matrices, seq.matrices, strict=True):
        assert a["n_tail"] == b["n_tail"] and a["num_evals"] == b["num_evals"], a["name"]
        for key in ("alpha", "xmin", "D"):
            assert a[key] == pytest.approx(b[key], rel=1e-9), (a["name"], key)
    # the randomised SVD draws from the global generator: still the same values side by side
    assert par_low.matrices[0]["alpha"] == pytest.approx(seq_low.matrices[0]["alpha"], rel=1e-9)


def test_file_entries_outside_limits_are_counted_not_read(tmp_path, monkeypatch) -> None:
    from paramscope.io._reader import SourceReader

    g = torch.Generator().manual_seed(2)
    sd = {
        "wide.weight": torch.randn(50001, 8, generator=g),  # larger dimension above MAX_N
        "tiny.weight": torch.randn(30, 4, generator=g),  # 4 eigenvalues
        "ok.weight": _heavy(200, 80, 2.0, g),
        "ok.bias": torch.zeros(200),
    }
    path = paramscope.save(sd, tmp_path / "m.safetensors")
    read: list[str] = []
    stream = SourceReader.stream

    def spy(self, entries=None, **kw):
        read.extend(e.name for e in (entries if entries is not None else self.entries))
        return stream(self, entries, **kw)

    monkeypatch.setattr(SourceReader, "stream", spy)
    disk = spectral_stats(path)
    mem = spectral_stats(sd)
    assert read == ["ok.weight"]
    assert [m["name"] for m in disk.matrices] == ["ok.weight"]
    assert disk.notes == mem.notes
    assert any(n.startswith("2 matrices outside weightwatcher's limits") for n in disk.notes)
    assert any(n.startswith("1 entries that are not 2-D/4-D") for n in disk.notes)
    assert disk.matrices[0]["alpha"] == mem.matrices[0]["alpha"]
