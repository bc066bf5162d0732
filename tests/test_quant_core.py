"""Quantised checkpoints counted at their logical size (issue 14): the orchestration, the
counting keys, bitsandbytes (files written by transformers + bitsandbytes), GPTQ and AWQ
(written byte for byte from their documented layouts) and paramscope's own int8/int4.

GPTQ layout: AutoGPTQ ``auto_gptq/nn_modules/qlinear/qlinear_cuda.py`` (``QuantLinear.__init__``
registers ``qweight`` I32 ``[in // 32 * bits, out]``, ``qzeros`` I32 ``[ceil(in / g),
out // 32 * bits]``, ``scales`` F16 ``[ceil(in / g), out]``, ``g_idx`` I32 ``[in]``; ``pack``
puts ``32 // bits`` consecutive inputs of one column into one word, the lowest first).
AWQ layout: AutoAWQ ``awq/modules/linear/gemm.py`` (``WQLinear_GEMM``: ``qweight`` I32
``[in, out // (32 // bits)]``, ``qzeros`` I32 ``[in // g, out // (32 // bits)]``, ``scales``
F16 ``[in // g, out]``; packing order 0 2 4 6 1 3 5 7).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import paramscope
from _helpers import run_cli
from paramscope import QuantConfigError
from paramscope._quantlayouts import LAYOUT_KEY, annotate

# ----------------------------------------------------------------------------- GPTQ / AWQ


def gptq_pack(intweight: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ ``QuantLinear.pack`` for 2/4/8 bits: ``intweight`` ``[in, out]`` (uint32
    codes) → ``qweight`` ``[in // 32 * bits, out]`` int32, value ``j`` of a word at bit
    ``bits * j``."""
    per = 32 // bits
    n_in, n_out = intweight.shape
    q = np.zeros((n_in // per, n_out), dtype=np.uint32)
    for j in range(per):
        q |= intweight[j::per].astype(np.uint32) << np.uint32(bits * j)
    return q.astype(np.int32)


def gptq_layer(n_in: int, n_out: int, bits: int, group: int, *, values: bool = True) -> dict:
    """The four tensors of a GPTQ ``Linear(n_in, n_out)`` (zeros when ``values`` is False)."""
    groups = 1 if group == -1 else -(-n_in // group)
    rows = n_in // 32 * bits
    if values and bits in (2, 4, 8):
        rng = np.random.default_rng(0)
        qweight = gptq_pack(rng.integers(0, 2**bits, (n_in, n_out), dtype=np.uint32), bits)
        zeros = gptq_pack(rng.integers(0, 2**bits, (n_out, groups), dtype=np.uint32), bits).T
        qzeros = np.ascontiguousarray(zeros)
        scales = rng.random((groups, n_out), dtype=np.float32).astype(np.float16)
    else:
        qweight = np.zeros((rows, n_out), np.int32)
        qzeros = np.zeros((groups, n_out // 32 * bits), np.int32)
        scales = np.zeros((groups, n_out), np.float16)
    g = n_in if group == -1 else group
    g_idx = (np.arange(n_in) // g).astype(np.int32)
    return {"qweight": qweight, "qzeros": qzeros, "scales": scales, "g_idx": g_idx}


def write_gptq(folder: Path, layers: dict[str, dict], config: dict | None, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"{p}.{k}": v for p, layer in layers.items() for k, v in layer.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        (folder / name).write_text(json.dumps(config))
    return folder


def test_gptq_reference_4096() -> None:
    """The issue's reference: GPTQ Linear(4096, 4096) 4-bit g128 → 16,777,216 params and
    (8,388,608 + 262,144 + 65,536 + 16,384) B × 8 / 16,777,216 ≈ 4.164 bits per weight."""
    import tempfile

    d = Path(tempfile.mkdtemp())
    layer = gptq_layer(4096, 4096, 4, 128, values=False)
    assert [v.nbytes for v in layer.values()] == [8_388_608, 65_536, 262_144, 16_384]
    cfg = {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128,
                                   "desc_act": False, "sym": True}}  # fmt: skip
    write_gptq(d, {"proj": layer}, cfg, "config.json")
    c = paramscope.count(d)
    assert c.params == 16_777_216 == 4096 * 4096
    assert c.buffers == 0 and c.quant_meta == 32 * 512 + 32 * 4096 + 4096
    assert c.bits_per_weight == pytest.approx(8_732_672 * 8 / 16_777_216, abs=1e-4)
    assert c.bits_per_weight == pytest.approx(4.164, abs=1e-3)
    q = c.quantization
    assert q is not None
    assert (q["method"], q["bits"], q["group_size"], q["evidence"]) == (
        "gptq",
        4,
        128,
        "config.json",
    )
    assert "quantization: gptq 4-bit g128 (from config.json)" in c.notes
    m = paramscope.read_manifest(d)
    rec = m["proj.qweight"].extra[LAYOUT_KEY]
    assert rec["weight"] == "proj.weight" and rec["shape"] == [4096, 4096]
    assert rec["detail"] == {"act_order": False, "sym": True}
    assert m["proj.scales"].extra[LAYOUT_KEY] == {
        "part": "meta",
        "weight": "proj.weight",
        "of": "proj.qweight",
    }


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("source", ["config.json", "quantize_config.json", None])
def test_gptq_bits_and_evidence(tmp_path: Path, bits: int, source: str | None) -> None:
    """2/3/4/8 bits (3-bit: 32 values in 3 words), act-order; from config.json,
    AutoGPTQ's quantize_config.json, or the shapes alone."""
    layers = {"a": gptq_layer(256, 64, bits, 64), "b": gptq_layer(128, 96, bits, -1)}
    raw = {"bits": bits, "group_size": 64, "desc_act": True, "sym": False}
    if source == "config.json":
        cfg: Any = {"model_type": "x", "quantization_config": {"quant_method": "gptq", **raw}}
    else:
        cfg = raw
    # b has one group over its inputs: a group size of 64 in the config would contradict it
    if source is not None:
        layers.pop("b")
    write_gptq(tmp_path, layers, cfg if source else None, source or "")
    c = paramscope.count(tmp_path)
    expect = 256 * 64 + (0 if source else 128 * 96)
    assert c.params == expect and c.buffers == 0
    q = c.quantization
    assert q is not None and q["bits"] == bits and q["method"] == "gptq"
    if source:
        assert q["evidence"] == source and q["group_size"] == 64
        assert f"quantization: gptq {bits}-bit g64 (from {source})" in c.notes
        rec = paramscope.read_manifest(tmp_path)["a.qweight"].extra[LAYOUT_KEY]
        assert rec["detail"]["act_order"] is True
    else:
        assert q["evidence"] == "inferred from names"
        groups = {r["group_size"] for r in q["methods"]}
        assert groups == {64, -1}
        assert any(
            n.startswith(f"quantization: gptq {bits}-bit g64 (inferred from names)")
            for n in c.notes
        )


def test_awq_gemm(tmp_path: Path) -> None:
    n_in, n_out, g = 256, 128, 64
    pack = 32 // 4
    t = {
        "l.qweight": np.zeros((n_in, n_out // pack), np.int32),
        "l.qzeros": np.zeros((n_in // g, n_out // pack), np.int32),
        "l.scales": np.zeros((n_in // g, n_out), np.float16),
        "l.bias": np.zeros((n_out,), np.float16),
    }
    save_file(t, str(tmp_path / "model.safetensors"))
    c = paramscope.count(tmp_path)  # from the shapes
    assert c.params == n_in * n_out + n_out
    q = c.quantization
    assert q is not None and (q["method"], q["bits"], q["group_size"]) == ("awq", 4, 64)
    (tmp_path / "quant_config.json").write_text(
        json.dumps({"zero_point": True, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})
    )
    c = paramscope.count(tmp_path)
    assert c.params == n_in * n_out + n_out
    assert "quantization: awq 4-bit g64 (from quant_config.json)" in c.notes
    m = paramscope.read_manifest(tmp_path)
    assert m["l.qweight"].extra[LAYOUT_KEY]["shape"] == [n_out, n_in]
    (tmp_path / "quant_config.json").write_text(json.dumps({"q_group_size": 64, "w_bit": 8}))
    with pytest.raises(
        QuantConfigError, match=r"l\.qweight: quant_config\.json says bits=8.* fits 4-bit"
    ):
        paramscope.count(tmp_path)


def test_gptq_config_contradicts(tmp_path: Path) -> None:
    """bits=8 in the config while qweight fits 4; a group size that does not divide; exit 2."""
    write_gptq(tmp_path, {"p": gptq_layer(256, 64, 4, 128)},
               {"quantization_config": {"quant_method": "gptq", "bits": 8, "group_size": 128}},
               "config.json")  # fmt: skip
    with pytest.raises(QuantConfigError) as err:
        paramscope.count(tmp_path)
    msg = str(err.value)
    assert "p.qweight" in msg and "bits=8" in msg and "fits 4-bit" in msg and "[32, 64]" in msg
    r = run_cli("count", str(tmp_path))
    assert r.returncode == 2 and "bits=8" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "config.json").write_text(
        json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 100}})
    )
    with pytest.raises(
        QuantConfigError,
        match=r"p\.scales: config\.json says group_size=100, which does not divide the 256 inputs",
    ):
        paramscope.count(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"quantization_config": {"quant_method": "gptq", "bits": "four"}})
    )
    with pytest.raises(QuantConfigError, match="bits: expected a number, found 'four'"):
        paramscope.count(tmp_path)


def test_unknown_packing(tmp_path: Path) -> None:
    """A qweight that fits no layout: counted at its stored size, and said."""
    save_file(
        {"x.qweight": np.zeros((3, 5), np.int32), "x.scales": np.zeros((2, 7), np.float16),
         "y.weight": np.zeros((4, 4), np.float32)},
        str(tmp_path / "m.safetensors"),
    )  # fmt: skip
    c = paramscope.count(tmp_path / "m.safetensors")
    assert c.params == 15 + 14 + 16  # the unknown entry at its stored size; its scales as read
    q = c.quantization
    assert q is not None and q["unknown_packing"] == 1 and q["unknown"] == ["x.qweight"]
    assert q["weights"] == 0 and c.bits_per_weight is None
    assert any(n.startswith("unknown packing: 1 entries") and "may be wrong" in n for n in c.notes)
    r = run_cli("count", str(tmp_path / "m.safetensors"))
    assert "unknown" in r.stdout and "the total may be wrong" in r.stdout


def test_sharded_gptq_and_cli_json(tmp_path: Path) -> None:
    """An HF sharded folder (index + shards + config.json): the CLI's keys, in one line each."""
    from safetensors.numpy import save_file as save

    a, b = gptq_layer(256, 64, 4, 128), gptq_layer(256, 64, 4, 128)
    save({f"l0.{k}": v for k, v in a.items()}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save({f"l1.{k}": v for k, v in b.items()} | {"norm.weight": np.ones(64, np.float16)},
         str(tmp_path / "model-00002-of-00002.safetensors"))  # fmt: skip
    wm = {f"l0.{k}": "model-00001-of-00002.safetensors" for k in a}
    wm |= {f"l1.{k}": "model-00002-of-00002.safetensors" for k in b}
    wm["norm.weight"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": wm})
    )
    (tmp_path / "config.json").write_text(
        json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}})
    )
    r = run_cli("count", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["params"] == d["params_logical"] == 2 * 256 * 64 + 64
    assert d["buffers"] == 0 and d["quant_meta"] == 2 * (2 * 8 + 2 * 64 + 256)
    assert d["stored_elements"] == 2 * (32 * 64) + 64 + d["quant_meta"]
    assert d["quantization"]["method"] == "gptq" and d["quantization"]["weights"] == 2
    assert d["bits_per_weight"] == pytest.approx(
        d["quantization"]["bytes"] * 8 / (2 * 256 * 64), abs=1e-4
    )
    text = run_cli("count", str(tmp_path)).stdout
    assert "gptq 4-bit g128 (from config.json), 2 weights" in text
    assert "bits/wt" in text and "metadata" in text
    r = run_cli("inspect", str(tmp_path), "--json")
    entries = {e["name"]: e for g in json.loads(r.stdout)["groups"] for e in g["entries"]}
    assert entries["l0.qweight"]["params"] == 256 * 64
    assert entries["l0.qweight"]["extra"][LAYOUT_KEY]["method"] == "gptq"
    text = run_cli("inspect", str(tmp_path)).stdout
    assert "gptq 4-bit g128, logical 64×256" in text and "quant meta of l0.weight" in text
    est = paramscope.estimate_memory(tmp_path)  # quantised weights at their stored bytes
    breakdown = est.to_dict()["breakdown"]
    assert breakdown["weights"] == d["bytes"] and breakdown["buffers"] == 0
    assert est.params == d["params"]


# ------------------------------------------------------------------------- bitsandbytes


TINY = dict(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)  # fmt: skip


@pytest.fixture(scope="module")
def bnb_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny Llama saved float, then loaded with bitsandbytes 4-bit (nf4 double quant,
    fp4) and 8-bit and saved by ``save_pretrained`` (the real writers, on CPU)."""
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("bnb")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    model.save_pretrained(root / "fp")
    out: dict[str, Any] = {"fp": root / "fp", "n": model.num_parameters()}
    configs = {
        "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True),
        "fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
        "int8": BitsAndBytesConfig(load_in_8bit=True),
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, q in configs.items():
            qm = LlamaForCausalLM.from_pretrained(root / "fp", quantization_config=q)
            assert qm.num_parameters() == out["n"]
            qm.save_pretrained(root / name)
            out[name] = root / name
    return out


@pytest.mark.parametrize("kind", ["nf4", "fp4", "int8"])
def test_bnb_counts_equal_the_float_model(bnb_folders: dict[str, Any], kind: str) -> None:
    n = bnb_folders["n"]
    assert n == 1_692_928  # the issue's tiny Llama
    c = paramscope.count(bnb_folders[kind])
    assert c.params == n and c.buffers == 0
    assert paramscope.count(bnb_folders["fp"]).params == n
    q = c.quantization
    assert q is not None and q["evidence"] == "config.json" and q["weights"] == 14
    method = {"nf4": "bnb-nf4", "fp4": "bnb-fp4", "int8": "bnb-int8"}[kind]
    assert q["method"] == method and q["bits"] == (8 if kind == "int8" else 4)
    m = paramscope.read_manifest(bnb_folders[kind])
    rec = m["model.layers.0.mlp.down_proj.weight"].extra[LAYOUT_KEY]
    assert rec["shape"] == [256, 512]  # from the quant state blob (4-bit), the tensor (8-bit)
    if kind != "int8":
        assert rec["group_size"] == 64 and rec["logical_dtype"] == "F32"
        assert rec["detail"]["double_quant"] is (kind == "nf4")
        meta = set(rec["meta"])
        base = "model.layers.0.mlp.down_proj.weight"
        assert f"{base}.absmax" in meta and f"{base}.quant_state.bitsandbytes__{kind}" in meta
        assert (f"{base}.nested_absmax" in meta) is (kind == "nf4")
    else:
        assert rec["meta"] == [
            "model.layers.0.mlp.down_proj.SCB",
            "model.layers.0.mlp.down_proj.weight_format",
        ]
    # bits per weight: every stored byte of the quantised weights and their metadata
    total = sum(e.nbytes for e in m.values() if LAYOUT_KEY in e.extra)
    assert c.bits_per_weight == pytest.approx(total * 8 / q["params"], abs=1e-4)


def test_bnb_issue_reference() -> None:
    """A bnb nf4 U8 weight [8,388,608, 1] stands for 16,777,216 parameters (from the header
    alone when no quant state values are at hand: 2 per byte, and a note says so)."""
    from paramscope import DType, Entry, Manifest

    base = "w"
    m = Manifest([
        Entry(base, (8_388_608, 1), DType.U8),
        Entry(f"{base}.absmax", (262_144,), DType.F32),
        Entry(f"{base}.quant_map", (16,), DType.F32),
        Entry(f"{base}.quant_state.bitsandbytes__nf4", (80,), DType.U8),
    ], roles=paramscope.RoleSource.INFERRED).with_inferred_roles()  # fmt: skip
    c = paramscope.count(annotate(m))
    assert c.params == 16_777_216 and c.buffers == 0
    assert any("counted as 2 values per stored byte" in n for n in c.notes)


def test_bnb_blob_contradicts(tmp_path: Path, bnb_folders: dict[str, Any]) -> None:
    """The config says nf4 where the quant state says fp4: refused, naming both."""
    import shutil

    d = tmp_path / "fp4"
    shutil.copytree(bnb_folders["fp4"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["bnb_4bit_quant_type"] = "nf4"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        QuantConfigError, match="says bnb_4bit_quant_type='nf4', the quant state is 'fp4'"
    ):
        paramscope.count(d)
    cfg["quantization_config"].update(
        bnb_4bit_quant_type="fp4", load_in_4bit=False, load_in_8bit=True
    )
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QuantConfigError, match="says bits=8, the tensors are 4-bit"):
        paramscope.count(d)


def test_bnb_load_keeps_no_derived_records(bnb_folders: dict[str, Any], tmp_path: Path) -> None:
    """The layout record and the blob values are the reader's: never in a ParamDict or a
    written file; the values loaded are the file's."""
    pd = paramscope.load(bnb_folders["nf4"])
    for n in pd:
        extra = pd.meta(n).extra
        assert LAYOUT_KEY not in extra and "values" not in extra
    from safetensors.torch import load_file

    ref = load_file(str(bnb_folders["nf4"] / "model.safetensors"))
    k = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(pd[k], ref[k])
    out = paramscope.save(pd, tmp_path / "copy.safetensors")
    assert "quant_layout" not in Path(out).read_bytes()[:200_000].decode("latin-1")
    assert paramscope.count(out).params == 1_692_928 - 0  # still recognised from names


# --------------------------------------------------------------------- own format, cost


def test_own_format_metadata_is_not_buffers(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    src = paramscope.save(model.state_dict(), tmp_path / "m.safetensors")
    paramscope.quantize(src, dst=tmp_path / "q.safetensors", bits=4, group_size=4)
    c = paramscope.count(tmp_path / "q.safetensors")
    n = sum(p.numel() for p in model.parameters())
    assert c.params == n and c.buffers == 0 and c.quant_meta == 16 * 2 + 4 * 4
    q = c.quantization
    assert q is not None and (q["method"], q["bits"], q["group_size"]) == ("paramscope", 4, 4)
    assert q["evidence"] == "file metadata"
    pd = paramscope.load(tmp_path / "q.safetensors", dequantize=True)
    assert sorted(pd) == sorted(model.state_dict())


def test_unquantised_stays_lazy(tmp_path: Path) -> None:
    """Nothing quantised: the reader's manifest comes back as it is (its entries never
    built), and the count's keys say so."""
    from paramscope.io import read_resolved, resolve

    path = paramscope.save(
        {"a.weight": torch.ones(3, 4), "b.bias": torch.ones(2)}, tmp_path / "m.safetensors"
    )
    raw = read_resolved(*resolve(path))
    assert annotate(raw) is raw
    c = paramscope.count(path)
    d = c.to_dict()
    assert d["quantization"] is None and d["bits_per_weight"] is None
    assert d["params_logical"] == d["params"] == 14 and d["stored_elements"] == 14
    assert "quant_meta" not in d["tree"]


# ------------------------------------------------------------- symmetric kernel fast path


def _torch_symmetric(w: torch.Tensor, bits: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle: per-row symmetric quantisation with plain torch ops (float64 scale steps as
    documented, float32 division for float32 / 16-bit input, round half to even, clamp)."""
    x2 = w.reshape(rows, -1)
    qmax = (1 << (bits - 1)) - 1
    span = torch.maximum(x2.amax(1, keepdim=True), -x2.amin(1, keepdim=True)).double()
    scale = torch.where(span > 0, span / qmax, torch.ones_like(span)).float()
    scale.clamp_(min=torch.finfo(torch.float32).tiny)
    xf = x2.double() if w.dtype == torch.float64 else x2.float()
    q = torch.round((xf / scale).float()).clamp_(-qmax, qmax)
    return q.to(torch.int8), scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [8, 4])
def test_symmetric_fast_path_matches_torch_and_the_error_path(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, bits: int
) -> None:
    from paramscope.compress import _qkernels
    from paramscope.compress._int4 import unpack_int4
    from paramscope.compress._qkernels import QuantConfig, quantize_with_errors

    g = torch.Generator().manual_seed(11)
    w = torch.randn(41, 96, generator=g) * torch.logspace(-3, 3, 41).unsqueeze(1)
    w[3] = 0.0  # all-zero row: scale 1
    w[5] = torch.arange(96) - 47.5  # exact halves after / scale 1 (max |w| = 127 / 2.67)
    w[5, 0] = 127.0
    w[7] = w[7] * 1e-40  # subnormal float32: scale raised to the smallest normal
    w = w.to(dtype)
    cfg = QuantConfig(bits, "symmetric", "channel")
    for chunk in (96 * 4, 96 * 41, 1 << 19):
        monkeypatch.setattr(_qkernels, "_CHUNK", chunk)
        q, _ = quantize_with_errors(w, cfg, errors=False)
        ref, _ = quantize_with_errors(w, cfg, errors=True)  # the general block code
        assert torch.equal(q.data, ref.data) and torch.equal(q.scale, ref.scale)
        want, scale = _torch_symmetric(w, bits, 41)
        assert torch.equal(q.scale.reshape(41, 1), scale)
        got = q.data if bits == 8 else unpack_int4(q.data, 96, signed=True)
        assert torch.equal(got.reshape(41, 96).to(torch.int8), want)
