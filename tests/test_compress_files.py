"""Streaming prune / quantize over checkpoint files, their CLI, and what count/load see after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope import ParamDict, ParamscopeError
from paramscope.building import zoo
from paramscope.compress import prune_file, quantize_file

KW = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 100, "n_positions": 32}


@pytest.fixture
def gpt(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    m = zoo.build("gpt2", **KW)
    return m, paramscope.save(m, tmp_path / "g.safetensors")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("PARAMSCOPE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "paramscope", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_quantize_file_is_self_describing_and_restores(gpt, tmp_path: Path) -> None:
    m, src = gpt
    dst = tmp_path / "q.safetensors"
    report = quantize_file(src, dst, bits=8)
    assert paramscope.verify(dst).ok
    c_src, c_dst = paramscope.count(src), paramscope.count(dst)
    assert c_dst.params == c_src.params  # logical parameters, not packed elements
    assert any("quantised" in n for n in c_dst.notes)
    names = {r["name"] for r in report.tensors}
    assert "transformer.h.0.mlp.c_fc.weight" in names and "transformer.h.0.ln_1.weight" not in names
    restored = paramscope.load(dst, dequantize=True)
    assert restored["lm_head.weight"] is restored["transformer.wte.weight"]  # tie kept
    quantised = names | {"lm_head.weight"}  # the tied alias shares wte's quantised data
    for name, p in m.state_dict().items():
        r = restored[name]
        assert r.shape == p.shape and r.dtype == p.dtype
        if name in quantised:
            err = (r - p).abs().max().item()
            row_max = p.abs().amax(dim=1, keepdim=True)
            assert (r - p).abs().le(row_max / 127 / 2 + 1e-6).all(), (name, err)
        else:
            assert torch.equal(r, p), name
    assert report.total["sqnr_db"] > 38
    assert report.total["bytes_after"] < report.total["bytes_before"] / 3.5
    one = paramscope.load(dst, select="transformer.h.1.mlp.c_proj.weight", dequantize=True)
    assert list(one) == ["transformer.h.1.mlp.c_proj.weight"]


def test_quantize_file_is_bitwise_stable_and_int4_packs(gpt, tmp_path: Path) -> None:
    _, src = gpt
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    quantize_file(src, a, bits=4, group_size=32, scheme="asymmetric")
    quantize_file(src, b, bits=4, group_size=32, scheme="asymmetric")
    assert a.read_bytes() == b.read_bytes()
    m = paramscope.read_manifest(a)
    w = m["transformer.h.0.mlp.c_fc.weight"]
    assert w.shape == (64, 128) and w.dtype.value == "U8"  # 64×256 packed two per byte
    assert w.extra["quant"]["shape"] == [64, 256]
    assert m["transformer.h.0.mlp.c_fc.weight__qscale"].shape == (64, 8)
    assert m["transformer.h.0.mlp.c_fc.weight__qzero"].dtype.value == "U8"
    assert paramscope.count(a).params == paramscope.count(src).params


def test_prune_file_global_exact_and_nonzero_in_header(gpt, tmp_path: Path) -> None:
    m, src = gpt
    dst = tmp_path / "p.safetensors"
    report = prune_file(src, dst, 0.6)
    selected = [n for n, p in m.state_dict().items() if p.dim() >= 2 and n != "lm_head.weight"]
    total = sum(m.state_dict()[n].numel() for n in selected)
    assert report.total["elements"] == total
    assert report.total["zeros"] == round(0.6 * total)
    pd = paramscope.load(dst)
    # the kept weights are the globally largest magnitudes
    flat = torch.cat([m.state_dict()[n].abs().reshape(-1) for n in selected])
    kth = flat.kthvalue(round(0.6 * total)).values
    for n in selected:
        orig = m.state_dict()[n]
        kept = pd[n] != 0
        assert torch.all((pd[n] == 0) | (pd[n] == orig))
        assert (orig.abs()[kept] >= kth).all() and (orig.abs()[~kept] <= kth).all()
    c = paramscope.count(dst)
    assert set(c.pruned) == set(selected)
    for n in selected:
        assert c.pruned[n]["nonzero"] == int((pd[n] != 0).sum())
    assert c.params == paramscope.count(src).params
    assert paramscope.verify(dst).ok


def test_prune_file_layer_and_two_four(gpt, tmp_path: Path) -> None:
    _, src = gpt
    rep = prune_file(src, tmp_path / "l.safetensors", 0.25, scope="layer")
    for t in rep.tensors:
        assert t["zeros"] == round(0.25 * t["elements"])
    prune_file(src, tmp_path / "nm.safetensors", None, structure="n:m", n=2, m=4)
    pd = paramscope.load(tmp_path / "nm.safetensors")
    w = pd["transformer.h.0.attn.c_attn.weight"]
    assert (w.reshape(-1, 4) != 0).sum(dim=1).le(2).all()


def test_streaming_from_a_torch_zip_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = {"a.weight": torch.randn(32, 16), "a.bias": torch.randn(32),
          "b.weight": torch.randn(8, 32)}
    torch.save(sd, tmp_path / "m.pt")
    quantize_file(tmp_path / "m.pt", tmp_path / "q.safetensors")
    back = paramscope.load(tmp_path / "q.safetensors", dequantize=True)
    assert torch.equal(back["a.bias"], sd["a.bias"])
    assert torch.allclose(back["b.weight"], sd["b.weight"], atol=sd["b.weight"].abs().max() / 100)


def test_in_memory_api_dispatch(gpt, tmp_path: Path) -> None:
    m, src = gpt
    with pytest.raises(ParamscopeError, match="give dst="):
        paramscope.prune(src, 0.5)
    with pytest.raises(ParamscopeError, match="dst="):
        paramscope.quantize(m, dst=tmp_path / "x.safetensors")
    pd, rep = paramscope.quantize(ParamDict.from_module(m))
    assert rep.total["sqnr_db"] > 38 and isinstance(pd, ParamDict)
    r = paramscope.quantize(src, dst=tmp_path / "y.safetensors")
    assert r.total["bytes_after"] > 0
    rep = paramscope.prune(m, 0.5)
    assert rep.total["sparsity"] == pytest.approx(0.5, abs=1e-6)


def test_cli_prune_and_quantize(gpt, tmp_path: Path) -> None:
    _, src = gpt
    r = run_cli("prune", str(src), "p.safetensors", "--amount", "0.5", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d["total"]) == {"name", "elements", "zeros", "sparsity", "kept"}
    assert r.stderr == ""  # no progress bar with --json
    r = run_cli("quantize", str(src), "q.safetensors", "--bits", "4", "--group-size", "32",
                "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d["tensors"][0]) == {"name", "sqnr_db", "max_abs_error", "rel_l2", "cosine",
                                    "bytes_before", "bytes_after"}
    r = run_cli("quantize", str(src), "q8.safetensors", cwd=tmp_path)
    assert r.returncode == 0 and "SQNR dB" in r.stdout and "total" in r.stdout
    r = run_cli("prune", str(src), "x.safetensors", cwd=tmp_path)
    assert r.returncode == 2 and "--amount" in r.stderr
    r = run_cli("quantize", str(src), "x.safetensors", "--bits", "3", cwd=tmp_path)
    assert r.returncode == 2 and "bits" in r.stderr
    assert not (tmp_path / "x.safetensors").exists()
    r = run_cli("count", "p.safetensors", cwd=tmp_path)
    assert "nonzero" in r.stdout and "pruned tensors" in r.stdout


def test_header_only_count_of_compressed_files_stays_torch_free(gpt, tmp_path: Path) -> None:
    _, src = gpt
    prune_file(src, tmp_path / "p.safetensors", 0.5)
    quantize_file(src, tmp_path / "q.safetensors")
    code = ("import sys, paramscope\n"
            "a = paramscope.count(sys.argv[1]); b = paramscope.count(sys.argv[2])\n"
            "print(len(a.pruned), b.params, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.safetensors"),
                        str(tmp_path / "q.safetensors")], capture_output=True, text=True)
    n, params, torch_loaded = r.stdout.split()
    assert int(n) > 0 and int(params) == paramscope.count(src).params
    assert torch_loaded == "False"


def test_count_nonzero_reads_values_on_request(tmp_path: Path) -> None:
    m = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
    with torch.no_grad():
        m[0].weight[:3] = 0
    assert paramscope.count(m).pruned == {}  # header-only / cheap by default
    expect = {"0.weight": {"params": 100, "nonzero": 70}}
    assert paramscope.count(m, nonzero=True).pruned == expect
    path = paramscope.save(m, tmp_path / "z.safetensors")
    assert paramscope.count(path).pruned == {}
    assert paramscope.count(path, nonzero=True).pruned == expect
    assert paramscope.count(ParamDict.from_module(m), nonzero=True).pruned == expect
    r = run_cli("count", str(path), "--nonzero", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["pruned"] == expect
