"""Per-layer change between two checkpoints (issue 20): every number against numpy in float64,
transformers' GPT-2 written by paramscope and by safetensors' own writer, a copy with one
layer changed, paramscope's int8 / int4 output against its QuantReport and its manifest, a
GGUF Q8_0 file written by the ``gguf`` package against its float source, ties, select, every
reason a tensor is not compared, the terminal rows, and at most one tensor per side read at a
time."""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.torch import save_file

import paramscope
from paramscope._errors import ArgumentError, ArgumentTypeError, MissingNameError, TargetError
from paramscope.reporting._change import CHANGE_STATS, ChangeReport, layer_changes, tensor_change
from paramscope.reporting._stats import _assign_series, block_of, classify

KEYS = {"a", "b", "blocks", "stats", "tensors", "series", "worst", "unmatched", "notes"}
ROW = {
    "name",
    "kind",
    "block",
    "series",
    "shape",
    "numel",
    "dtype_a",
    "dtype_b",
    "quantized",
    "rel_change",
    "cosine",
    "sign_flips",
    "max_abs_change",
    "diff_l2",
    "ref_l2",
    "sqnr_db",
    "bits_per_weight",
}


def _oracle(a: Any, b: Any) -> dict[str, float | None]:
    """The statistics by numpy on float64 copies (``None`` where undefined or infinite)."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    d = np.linalg.norm(x - y)
    nb, na = np.linalg.norm(y), np.linalg.norm(x)
    if nb > 0:
        rel: float | None = float(d / nb)
    else:
        rel = 0.0 if d == 0 else None
    if na > 0 and nb > 0:
        cos: float | None = float(np.dot(x, y) / (na * nb))
    else:
        cos = 1.0 if na == nb == 0 else None
    sq = float(10 * np.log10(nb**2 / d**2)) if d > 0 and nb > 0 else None
    return {
        "rel_change": rel,
        "cosine": cos,
        "sign_flips": float(np.mean(x * y < 0)) if x.size else 0.0,
        "max_abs_change": float(np.max(np.abs(x - y))) if x.size else 0.0,
        "diff_l2": float(d),
        "ref_l2": float(nb),
        "sqnr_db": sq,
    }


def _check(row: dict[str, Any], want: dict[str, float | None], rel: float = 1e-9) -> None:
    for k, v in want.items():
        got = row[k]
        if v is None:
            assert got is None, (row.get("name", ""), k, got)
        else:
            assert got == pytest.approx(v, rel=rel, abs=1e-12), (row.get("name"), k)


def _gpt2(seed: int = 0, layers: int = 4) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=layers, n_embd=64, n_head=4, vocab_size=128, n_positions=32)
    return GPT2LMHeadModel(cfg).eval()


def _by_name(report: ChangeReport) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in report.to_dict()["tensors"]}


# ----------------------------------------------------------------------------- the numbers

CASES = {
    "normal_f32": lambda: (torch.randn(300, 70), torch.randn(300, 70)),
    "small_change_f64": lambda: (
        (w := torch.randn(5000, dtype=torch.float64)) + 1e-6 * torch.randn(5000),
        w,
    ),
    "f16": lambda: ((torch.randn(257, 33) * 3).half(), (torch.randn(257, 33) * 3).half()),
    "bf16_vs_f32": lambda: ((w := torch.randn(64, 129)).bfloat16(), w),
    "sign_flipped": lambda: (-(w := torch.randn(1000)), w),
    "noncontiguous": lambda: (torch.randn(40, 60).t()[::2], torch.randn(40, 60).t()[::2]),
    "empty": lambda: (torch.zeros(0, 4), torch.zeros(0, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_tensor_change_equals_numpy(case: str, chunk: int) -> None:
    torch.manual_seed(0)
    a, b = CASES[case]()
    got = tensor_change(a, b, chunk=chunk)  # chunk 7: many chunks
    want = _oracle(a.double().numpy(), b.double().numpy())
    assert got["numel"] == a.numel()
    clean = {k: (v if isinstance(v, float) and math.isfinite(v) else None) for k, v in got.items()}
    _check({"name": case, **clean}, want)
    if case == "sign_flipped":
        assert got["sign_flips"] == 1.0 and got["cosine"] == -1.0


def test_tensor_change_edge_cases_and_inputs_left_unchanged() -> None:
    z = tensor_change(torch.zeros(5), torch.zeros(5))
    assert (z["rel_change"], z["cosine"], z["sign_flips"], z["sqnr_db"]) == (
        0.0,
        1.0,
        0.0,
        math.inf,
    )
    one = tensor_change(torch.ones(5), torch.zeros(5))  # reference zero, a not
    assert one["rel_change"] == math.inf and math.isnan(one["cosine"])
    assert one["sqnr_db"] == -math.inf
    nan = tensor_change(torch.tensor([1.0, float("nan")]), torch.ones(2))
    assert math.isnan(nan["rel_change"]) and math.isnan(nan["max_abs_change"])
    a, b = torch.randn(100), torch.randn(100)
    a0, b0 = a.clone(), b.clone()
    tensor_change(a, b, chunk=9)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    with pytest.raises(paramscope.ShapeMismatchError, match="as many elements"):
        tensor_change(torch.ones(3), torch.ones(4))


_floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
    chunk=st.integers(1, 50),
)
def test_hypothesis_statistics_equal_numpy(data: Any, shape: tuple[int, ...], chunk: int) -> None:
    x = data.draw(hnp.arrays(np.float32, shape, elements=_floats))
    y = data.draw(hnp.arrays(np.float32, shape, elements=_floats))
    got = tensor_change(torch.from_numpy(x), torch.from_numpy(y), chunk=chunk)
    want = _oracle(x, y)
    clean = {k: (v if isinstance(v, float) and math.isfinite(v) else None) for k, v in got.items()}
    for k, v in want.items():
        if v is None:
            assert clean[k] is None, k
        else:  # float64 sums in another order: the last bits may differ
            assert clean[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
    assert 0.0 <= got["sign_flips"] <= 1.0


# ------------------------------------------------------------------------ GPT-2 checkpoints


def test_gpt2_against_itself_is_zero_everywhere(tmp_path: Path) -> None:
    model = _gpt2()
    ours = paramscope.save(model, tmp_path / "ours.safetensors")
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    theirs = tmp_path / "theirs.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(theirs))
    for a, b in ((ours, ours), (theirs, theirs), (model, model)):
        r = layer_changes(a, b)
        assert r.same, r.to_text()
        assert isinstance(r, ChangeReport)
        assert len(r.tensors) == len(sd)  # lm_head compared once, with the embedding
        for t in r.tensors:
            assert (t["rel_change"], t["cosine"], t["sign_flips"], t["diff_l2"]) == (0, 1, 0, 0)
            assert t["sqnr_db"] == math.inf and t["quantized"] is None
        d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
        assert all(t["sqnr_db"] is None for t in d["tensors"])
        assert r.blocks == 4
    tied = layer_changes(ours, ours)
    assert any("tied aliases" in n and "lm_head.weight" in n for n in tied.notes)
    # paramscope's file against safetensors' own: the same values; lm_head is only in ours
    cross = layer_changes(ours, theirs)
    assert cross.unmatched["only_a"] == ["lm_head.weight"] and not cross.same
    assert all(t["diff_l2"] == 0 for t in cross.tensors) and len(cross.tensors) == len(sd)
    # kind, block and series exactly as weight_stats gives them
    ws = {t["name"]: t for t in paramscope.weight_stats(theirs).tensors}
    for t in cross.tensors:
        assert (t["kind"], t["block"], t["series"]) == (
            ws[t["name"]]["kind"],
            ws[t["name"]]["block"],
            ws[t["name"]]["series"],
        )
        assert t["kind"] == classify(t["name"]) and t["block"] == block_of(t["name"])


def test_a_copy_with_one_layer_modified_shows_that_layer_alone(tmp_path: Path) -> None:
    model = _gpt2()
    sd = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    target = "transformer.h.2.mlp.c_fc.weight"
    g = torch.Generator().manual_seed(3)
    changed = dict(sd)
    changed[target] = sd[target] + 0.05 * torch.randn(sd[target].shape, generator=g)
    changed[target][0, :7] *= -1  # some sign flips
    a = paramscope.save(changed, tmp_path / "a.safetensors")
    b = tmp_path / "b.safetensors"
    save_file(sd, str(b))
    r = layer_changes(a, b)
    rows = _by_name(r)
    nonzero = [n for n, t in rows.items() if t["diff_l2"] != 0]
    assert nonzero == [target]
    _check(rows[target], _oracle(changed[target].numpy(), sd[target].numpy()))
    assert rows[target]["sign_flips"] > 0
    assert r.by_kind("rel_change")["fc1"] == [
        (i, pytest.approx(rows[target]["rel_change"]) if i == 2 else 0.0) for i in range(4)
    ]
    assert r.sparkline("fc1", "rel_change") == "▁▁█▁"
    assert r.worst()["rel_change"][0]["name"] == target
    assert "sqnr_db" not in r.worst()  # a is not quantised
    # in memory (dict, module) equals the files
    mem = layer_changes(changed, model)
    assert _by_name(mem)[target] == rows[target]
    assert mem.a == mem.b == "(in memory)" and r.a == str(a) and r.b == str(b)
    # the text: the changed layer named, one character per block piped, no ANSI
    text = r.to_text()
    assert "\x1b" not in text and target in text
    fc1 = next(line for line in text.splitlines() if line.split() and line.split()[0] == "fc1")
    assert "▁▁█▁" in fc1


# ------------------------------------------------------------------------- quantised files


@pytest.mark.parametrize(
    "options",
    [
        {"bits": 8},
        {"bits": 4},
        {"bits": 4, "scheme": "asymmetric", "group_size": 32},
        {"bits": 8, "scheme": "asymmetric", "granularity": "tensor"},
    ],
    ids=["int8", "int4", "int4-asym-g32", "int8-asym-tensor"],
)
def test_quantized_output_against_its_source(tmp_path: Path, options: dict[str, Any]) -> None:
    src = paramscope.save(_gpt2(), tmp_path / "src.safetensors")
    dst = tmp_path / "q.safetensors"
    qreport = paramscope.quantize(src, dst=dst, **options)
    r = layer_changes(dst, src)
    rows = _by_name(r)
    m = paramscope.read_manifest(dst)
    quantized = {t["name"]: t for t in qreport.tensors}
    assert quantized and set(quantized) <= set(rows)
    assert not any(n.endswith(("__qscale", "__qzero")) for n in rows)  # aux: not tensors
    assert r.unmatched == {"only_a": [], "only_b": [], "not_compared": []}
    for name, t in rows.items():
        e = m[name]
        if name in quantized:
            q = quantized[name]
            assert t["sqnr_db"] == pytest.approx(q["sqnr_db"], rel=1e-6)
            rec = e.extra["quant"]
            aux = [rec["scale"]] + ([rec["zero"]] if rec["zero"] else [])
            stored = e.nbytes + sum(m[n].nbytes for n in aux)
            assert stored == q["bytes_after"]
            assert t["bits_per_weight"] == stored * 8 / t["numel"]
            assert t["quantized"].startswith(f"int{options['bits']} ")
            assert t["numel"] == math.prod(rec["shape"]) and t["shape"] == rec["shape"]
        else:  # left in float: unchanged, its own bits
            assert t["diff_l2"] == 0 and t["quantized"] is None
            assert t["bits_per_weight"] == 32.0
    # the values against numpy on the dequantised file
    deq = paramscope.compress.dequantize(paramscope.load(dst))
    ref = paramscope.load(src)
    name = "transformer.h.1.mlp.c_proj.weight"
    _check(rows[name], _oracle(deq[name].numpy(), ref[name].numpy()))
    worst = r.worst()
    lowest = sorted(quantized.values(), key=lambda q: q["sqnr_db"])[:5]
    assert [w["name"] for w in worst["sqnr_db"]] == [q["name"] for q in lowest]
    assert "lowest SQNR" in r.to_text()
    # the in-memory quantiser's ParamDict is read the same way
    pd, _ = paramscope.quantize(paramscope.load(src), **options)
    assert _by_name(layer_changes(pd, src)) == rows


def _write_gguf(path: Path, tensors: dict[str, np.ndarray], q8: set[str]) -> Path:
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_name("tiny")
    for name, x in tensors.items():
        if name in q8:
            w.add_tensor(name, gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # fmt: skip
        else:
            w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_q8_0_against_its_float_source(tmp_path: Path) -> None:
    sd = {k: v.numpy().copy() for k, v in _gpt2().state_dict().items() if k != "lm_head.weight"}
    src = tmp_path / "src.safetensors"
    save_file({k: torch.from_numpy(v) for k, v in sd.items()}, str(src))
    q8 = {k for k, v in sd.items() if v.ndim == 2 and v.shape[-1] % 32 == 0}
    path = _write_gguf(tmp_path / "m.gguf", sd, q8)
    r = layer_changes(path, src)
    rows = _by_name(r)
    assert set(rows) == set(sd) and r.unmatched["not_compared"] == []
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        if t.name not in q8:
            assert rows[t.name]["diff_l2"] == 0 and rows[t.name]["quantized"] is None
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(sd[t.name].shape)
        _check(rows[t.name], _oracle(values, sd[t.name]), rel=1e-9)
        assert rows[t.name]["quantized"] == "gguf Q8_0"
        assert rows[t.name]["bits_per_weight"] == int(t.n_bytes) * 8 / int(t.n_elements) == 8.5
        assert 0 < rows[t.name]["rel_change"] < 0.01
    assert "sqnr_db" in r.worst() and any("GGUF" in n for n in r.notes)
    # GGUF names are not mapped to HF names: unmatched, and said so
    renamed = {f"blk.{k.split('.')[2]}.ffn_up.weight": v for k, v in sd.items() if "c_fc.w" in k}
    r2 = layer_changes(_write_gguf(tmp_path / "blk.gguf", renamed, set()), src)
    assert r2.tensors == [] and sorted(r2.unmatched["only_a"]) == sorted(renamed)
    assert any("not mapped" in n for n in r2.notes)


# ----------------------------------------------------------- ties, select, what is left out


def test_ties_select_and_modules() -> None:
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied
    a = torch.nn.Sequential(emb, head)
    w2 = emb.weight.detach() * 2
    r = layer_changes(a, {"0.weight": w2, "1.weight": w2})  # tied on both sides
    assert [t["name"] for t in r.tensors] == ["0.weight"]  # the pair compared once
    assert r.tensors[0]["rel_change"] == pytest.approx(0.5)
    assert any("1.weight = 0.weight" in n for n in r.notes)
    untied = layer_changes(a, {"0.weight": w2, "1.weight": w2.clone()})  # two comparisons
    assert [t["name"] for t in untied.tensors] == ["0.weight", "1.weight"]
    sd = {f"h.{i}.attn.q_proj.weight": torch.randn(4, 4) for i in range(3)}
    sd |= {f"h.{i}.mlp.up_proj.weight": torch.randn(4, 4) for i in range(3)}
    other = {k: v + 1 for k, v in sd.items()}
    sel = layer_changes(sd, other, select="h.*.mlp.*")
    assert [t["name"] for t in sel.tensors] == [f"h.{i}.mlp.up_proj.weight" for i in range(3)]
    assert sel.series() == ["up"]
    only = layer_changes(sd, {"x": torch.ones(1)}, select="h.0.*")
    assert len(only.unmatched["only_a"]) == 2 and only.unmatched["only_b"] == []
    with pytest.raises(MissingNameError):
        layer_changes(sd, other, select="nothing.*")


def _gptq_folder(folder: Path) -> Path:
    """A GPTQ Linear(128, 64) 4-bit g32 layer (AutoGPTQ's QuantLinear tensors) and a float
    tensor beside it, with the quantization_config that says so."""
    folder.mkdir()
    n_in, n_out, group = 128, 64, 32
    tensors = {
        "proj.qweight": torch.zeros(n_in // 32 * 4, n_out, dtype=torch.int32),
        "proj.qzeros": torch.zeros(n_in // group, n_out // 32 * 4, dtype=torch.int32),
        "proj.scales": torch.ones(n_in // group, n_out, dtype=torch.float16),
        "proj.g_idx": (torch.arange(n_in) // group).to(torch.int32),
        "norm.weight": torch.ones(n_out),
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False, "sym": True}
    (folder / "config.json").write_text(json.dumps({"quantization_config": cfg}))
    return folder


def test_every_reason_for_not_comparing_is_listed(tmp_path: Path) -> None:
    gptq = _gptq_folder(tmp_path / "gptq")
    ref = {"proj.weight": torch.randn(64, 128), "norm.weight": torch.ones(64)}
    r = layer_changes(gptq, ref)
    assert [t["name"] for t in r.tensors] == ["norm.weight"]
    why = {u["name"]: u["why"] for u in r.unmatched["not_compared"]}
    assert set(why) == {"proj.weight"} and "gptq" in why["proj.weight"]
    assert "proj.qweight" in why["proj.weight"]
    assert r.unmatched["only_a"] == r.unmatched["only_b"] == []  # its parts are not "only in a"
    with torch.device("meta"):
        meta = torch.nn.Linear(3, 3)
    a = {
        "shape": torch.ones(2, 3),
        "ints": torch.arange(4),
        "mine": torch.ones(2),
        "fc.weight": torch.ones(3, 3),
        "fc.bias": torch.ones(3),
    }
    b = {
        "shape": torch.ones(3, 2),
        "ints": torch.arange(4),
        "theirs": torch.ones(2),
        "fc.weight": meta.weight,
        "fc.bias": torch.ones(3),
    }
    r = layer_changes(a, b)
    why = {u["name"]: u["why"] for u in r.unmatched["not_compared"]}
    assert why == {
        "shape": "shape 2×3 in a, 3×2 in b",
        "ints": "non-float in a (int64)",
        "fc.weight": "no values in b (meta device)",
    }
    assert r.unmatched["only_a"] == ["mine"] and r.unmatched["only_b"] == ["theirs"]
    assert [t["name"] for t in r.tensors] == ["fc.bias"] and not r.same
    text = r.to_text()
    assert "1 only in a, 1 only in b, 3 not compared" in text
    assert all(f"not compared: {n}: {w}" in text for n, w in why.items())
    # a reference of zeros: rel_change infinite, None in JSON, with a note
    z = layer_changes({"w": torch.ones(3)}, {"w": torch.zeros(3)})
    d = json.loads(json.dumps(z.to_dict(), allow_nan=False))
    assert d["tensors"][0]["rel_change"] is None and d["worst"]["rel_change"][0]["value"] is None
    assert any("zero in b" in n for n in z.notes)


def test_sources_without_values_and_wrong_types() -> None:
    sd = {"w": torch.ones(2)}
    with pytest.raises(ArgumentTypeError, match=r"layer_changes: b: .*found int"):
        layer_changes(sd, 3)
    with pytest.raises(TargetError, match="without values"):
        layer_changes("zoo:gpt2", sd)
    with pytest.raises(TargetError, match="Manifest"):
        layer_changes(sd, paramscope.ParamDict(sd).manifest())  # a Manifest has no values
    r = layer_changes(sd, sd)
    with pytest.raises(ArgumentError, match="expected a statistic rel_change"):
        r.by_kind("l2")
    with pytest.raises(ArgumentError, match="expected a statistic"):
        r.to_text(stat="nope")


# ------------------------------------------------------------------------ report and text


def _llama(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for i in range(n):
        for p in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"):
            out[f"model.layers.{i}.{p}.weight"] = torch.randn(8, 8, generator=g)
        out[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(8)
    out["model.embed_tokens.weight"] = torch.randn(16, 8, generator=g)
    return out


def test_to_dict_schema_series_and_worst() -> None:
    b = _llama(7)
    a = {k: v * (1 + 0.01 * (block_of(k) or 0)) for k, v in b.items()}
    a["model.layers.5.mlp.down_proj.weight"] = b["model.layers.5.mlp.down_proj.weight"] * 3
    r = layer_changes(a, b)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert set(d) == KEYS and d["stats"] == list(CHANGE_STATS)
    assert all(set(t) == ROW for t in d["tensors"])
    assert set(d["series"]) == set(r.series()) and d["blocks"] == 7
    assert set(d["series"]["down"]) == set(CHANGE_STATS)
    assert d["series"]["down"]["rel_change"] == [
        [i, pytest.approx(2.0 if i == 5 else 0.01 * i, rel=1e-5)] for i in range(7)
    ]
    assert d["worst"]["rel_change"][0] == {
        "name": "model.layers.5.mlp.down_proj.weight",
        "kind": "down",
        "block": 5,
        "value": pytest.approx(2.0, rel=1e-6),
    }
    assert len(d["worst"]["rel_change"]) == 5 and "sqnr_db" not in d["worst"]
    assert d["unmatched"] == {"only_a": [], "only_b": [], "not_compared": []}
    # the series labels are weight_stats' (norm has one per block here: no path)
    rows = [{"name": n, "kind": classify(n), "block": block_of(n), "series": None} for n in b]
    _assign_series(rows)
    assert {t["name"]: t["series"] for t in d["tensors"]} == {t["name"]: t["series"] for t in rows}


def test_text_piped_is_plain_and_whole_and_width_cuts() -> None:
    b = _llama(40)
    long = "model.layers.3.self_attn." + "x" * 120 + ".weight"
    b[long] = torch.ones(4)
    a = {k: v + 0.1 * (block_of(k) or 0) for k, v in b.items()}
    a[long] = b[long] * 100  # the largest change: named in full
    r = layer_changes(a, b)
    piped = r.to_text()
    assert "\x1b" not in piped and long in piped and "…" not in piped
    q = next(line for line in piped.splitlines() if line.split() and line.split()[0] == "q")
    assert r.sparkline("q", "rel_change") in q and len(r.sparkline("q", "rel_change")) == 40
    assert piped.splitlines()[0].startswith("change of (in memory) against (in memory): ")
    narrow = r.to_text(width=50)
    assert max(len(line) for line in narrow.splitlines()) <= 50, narrow
    assert "\x1b" not in narrow
    sq = r.to_text(stat="cosine")
    assert "cosine" in sq.splitlines()[1]


def test_public_api() -> None:
    assert paramscope.layer_changes is layer_changes
    assert paramscope.ChangeReport is ChangeReport
    assert paramscope.reporting.layer_changes is layer_changes
    assert {"layer_changes", "ChangeReport"} <= set(paramscope.__all__)
    assert issubclass(ChangeReport, paramscope.reporting._stats.DepthReport)
    assert issubclass(paramscope.StatsReport, paramscope.reporting._stats.DepthReport)


# -------------------------------------------------------------------------------- memory


def test_at_most_one_tensor_per_side_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tensor a reader returned is gone before that reader returns the next one (a
    quantised entry's data, scale and zero point count as one logical tensor)."""
    from paramscope.io._reader import SourceReader

    src = paramscope.save(_gpt2(), tmp_path / "src.safetensors")
    dst = tmp_path / "q.safetensors"
    paramscope.quantize(src, dst=dst, bits=4, scheme="asymmetric", group_size=32)
    alive: dict[int, list[tuple[str, weakref.ref]]] = {}
    peak: dict[int, int] = {}
    real = SourceReader.read

    def spy(self: SourceReader, e: Any) -> torch.Tensor:
        mine = alive.setdefault(id(self), [])
        mine[:] = [(n, r) for n, r in mine if r() is not None]
        logical = {n.removesuffix("__qscale").removesuffix("__qzero") for n, _ in mine}
        logical.add(e.name.removesuffix("__qscale").removesuffix("__qzero"))
        peak[id(self)] = max(peak.get(id(self), 0), len(logical))
        t = real(self, e)
        mine.append((e.name, weakref.ref(t)))
        return t

    parts: list[int] = []
    real_part = SourceReader.read_raw_part

    def spy_part(self: SourceReader, e: Any, start: int, n: int) -> bytearray:
        parts.append(n)
        return real_part(self, e, start, n)

    monkeypatch.setattr(SourceReader, "read", spy)
    monkeypatch.setattr(SourceReader, "read_raw_part", spy_part)
    r = layer_changes(dst, src)
    # the quantised side: whole logical tensors, one at a time; the float side stored raw:
    # pieces of at most CHUNK elements, never a whole large tensor
    assert len(r.tensors) > 40 and len(peak) == 1
    assert max(peak.values()) == 1, peak
    from paramscope.reporting._stats import CHUNK

    assert parts and max(parts) <= CHUNK * 4
    monkeypatch.setattr("paramscope.reporting._change.CHUNK", 100)
    parts.clear()
    small = layer_changes(dst, src)
    assert max(parts) <= 400 and len(parts) > len(small.tensors)  # large tensors in pieces
    for x, y in zip(small.tensors, r.tensors, strict=True):
        assert x["name"] == y["name"]
        assert x["diff_l2"] == pytest.approx(y["diff_l2"], rel=1e-12)
        assert x["cosine"] == pytest.approx(y["cosine"], rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_files_read_in_pieces_equal_tensors_in_memory(tmp_path: Path, dtype: torch.dtype) -> None:
    """A file side is read a piece at a time; its numbers equal those of the same tensors
    given in memory, for every float dtype a file stores."""
    g = torch.Generator().manual_seed(7)
    b = {f"h.{i}.mlp.c_fc.weight": torch.randn(300, 70, generator=g).to(dtype) for i in range(3)}
    a = {
        k: (v.double() + 0.01 * torch.randn(v.shape, generator=g, dtype=torch.float64)).to(dtype)
        for k, v in b.items()
    }
    pa = paramscope.save(a, tmp_path / "a.safetensors")
    pb = paramscope.save(b, tmp_path / "b.safetensors")
    on_disk = layer_changes(pa, pb).to_dict()["tensors"]
    in_memory = layer_changes(a, b).to_dict()["tensors"]
    assert len(on_disk) == 3
    for x, y in zip(on_disk, in_memory, strict=True):
        for k in ("rel_change", "cosine", "sign_flips", "max_abs_change", "diff_l2", "ref_l2"):
            assert x[k] == pytest.approx(y[k], rel=1e-12, abs=1e-15), (k, dtype)
        ref = b[x["name"]].double()
        assert x["diff_l2"] == pytest.approx(float((a[x["name"]].double() - ref).norm()))
