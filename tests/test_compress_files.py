"""Streaming prune / quantize over checkpoint files, their CLI, and what count/load see after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import paramscope
from _helpers import run_cli, small_gpt2, without_torch
from paramscope import ArgumentError, ParamDict, TargetError
from paramscope.compress import prune_file, quantize_file


@pytest.fixture
def gpt(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    m = small_gpt2()
    return m, paramscope.save(m, tmp_path / "g.safetensors")


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
    model, src = gpt
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    quantize_file(src, a, bits=4, group_size=32, scheme="asymmetric")
    quantize_file(src, b, bits=4, group_size=32, scheme="asymmetric")
    assert a.read_bytes() == b.read_bytes()
    m = paramscope.read_manifest(a)
    w = m["transformer.h.0.mlp.c_fc.weight"]
    rows, cols = model.transformer.h[0].mlp.c_fc.weight.shape  # Conv1D: (n_embd, 4 n_embd)
    assert w.shape == (rows, cols // 2) and w.dtype.value == "U8"  # two int4 per byte
    assert w.extra["quant"]["shape"] == [rows, cols]
    assert m["transformer.h.0.mlp.c_fc.weight__qscale"].shape == (rows, cols // 32)
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
    with pytest.raises(ArgumentError, match=r"is a checkpoint, which is pruned into a new file"):
        paramscope.prune(src, 0.5)
    with pytest.raises(TargetError, match=r"dst='.*x.safetensors'.* the target is a torch module"):
        paramscope.quantize(m, dst=tmp_path / "x.safetensors")
    with pytest.raises(TargetError, match=r"which prune changes in place; omit dst="):
        paramscope.prune(m, 0.5, dst=tmp_path / "x.safetensors")
    pd, rep = paramscope.quantize(ParamDict.from_module(m))
    assert rep.total["sqnr_db"] > 38 and isinstance(pd, ParamDict)
    r = paramscope.quantize(src, dst=tmp_path / "y.safetensors")
    names = {t["name"] for t in r.tensors}
    before = paramscope.read_manifest(src)
    after = paramscope.read_manifest(tmp_path / "y.safetensors")
    assert r.total["bytes_before"] == sum(before[n].nbytes for n in names)
    # after: each quantised tensor's data and its scales, as stored in the file
    assert r.total["bytes_after"] == sum(
        e.nbytes for n, e in after.items() if n.split("__q")[0] in names and e.tie is None
    )
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
    assert r.returncode == 0, r.stderr
    lib = quantize_file(src, tmp_path / "q8-lib.safetensors")  # the same quantisation
    lib.output = "q8.safetensors"
    assert r.stdout == lib.to_text() + "\n"
    lines = r.stdout.splitlines()
    assert lines[0] == f"{src} -> q8.safetensors"
    assert lines[1].split() == ["tensor", "SQNR", "dB", "max", "|err|", "rel", "L2", "cosine",
                                "before", "after"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == [t["name"] for t in lib.tensors] + ["total"]
    for t in [*lib.tensors, lib.total]:  # the printed numbers are the report's
        name, sqnr, err, rel, cos, before, bunit, after, aunit = rows[t["name"]]
        assert float(sqnr) == pytest.approx(t["sqnr_db"], abs=0.05), name
        assert float(err) == pytest.approx(t["max_abs_error"], rel=5e-3), name
        assert float(rel) == pytest.approx(t["rel_l2"], rel=5e-3), name
        assert float(cos) == pytest.approx(t["cosine"], abs=5e-7), name
        for text, unit, n in ((before, bunit, t["bytes_before"]), (after, aunit, t["bytes_after"])):
            scale = {"B": 1, "kB": 1e3, "MB": 1e6}[unit]
            assert float(text) * scale == pytest.approx(n, abs=0.05 * scale), name
    assert lib.total["sqnr_db"] > 38
    r = run_cli("prune", str(src), "x.safetensors", cwd=tmp_path)
    assert r.returncode == 2 and "--amount" in r.stderr
    r = run_cli("quantize", str(src), "x.safetensors", "--bits", "3", cwd=tmp_path)
    assert r.returncode == 2 and "bits" in r.stderr
    assert not (tmp_path / "x.safetensors").exists()
    r = run_cli("count", "p.safetensors", cwd=tmp_path)
    assert "nonzero" in r.stdout and "pruned tensors" in r.stdout


def test_header_only_count_of_compressed_files_stays_torch_free(gpt, tmp_path: Path) -> None:
    model, src = gpt
    prune_file(src, tmp_path / "p.safetensors", 0.5)
    quantize_file(src, tmp_path / "q.safetensors")
    code = ("import paramscope\n"
            "a = paramscope.count(sys.argv[1]); b = paramscope.count(sys.argv[2])\n"
            "result = [a.pruned, a.params, b.params]\n")
    pruned, p_params, q_params = without_torch(
        code, tmp_path / "p.safetensors", tmp_path / "q.safetensors"
    )
    # oracle: the values themselves, counted by torch
    values = paramscope.load(tmp_path / "p.safetensors")
    stored = {n for n, e in paramscope.read_manifest(src).items() if e.tie is None}
    assert set(pruned) == {n for n in stored if values[n].dim() >= 2}
    for name, got in pruned.items():
        assert got == {"params": values[name].numel(), "nonzero": int(values[name].count_nonzero())}
    params = sum(p.numel() for p in model.parameters())
    assert p_params == q_params == params


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
