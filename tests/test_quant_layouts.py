"""Quantised safetensors layouts: compressed-tensors, FP8, MLX, MXFP4 and optimum-quanto.

Every fixture is written by the library that defines the layout where it installs here
(compressed-tensors' ``ModelCompressor``, transformers' own ``Fp8Quantize``, MLX's
``mx.quantize`` + ``mx.save_safetensors``, optimum-quanto's ``quantize``/``freeze``); the
gpt-oss MXFP4 bytes are built from transformers' ``integrations/mxfp4.py`` and checked by
its own dequantiser. The oracle of every count is the float model's ``sum(p.numel())``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import paramscope
from paramscope import QuantConfigError
from paramscope._quantlayouts import QuantConfig, _compressed, _fp8, _mlx, _mxfp4, _quanto
from paramscope.io._quantconfig import parse_quant_config


def _tiny_llama(**kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        **kw,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layout(folder: Path, name: str) -> dict:
    return dict(paramscope.read_manifest(folder)[name].extra["quant_layout"])


# ---------------------------------------------------------------- compressed-tensors


def _ct_folder(tmp_path: Path, scheme, fmt: str, first_in: int = 256) -> tuple[Path, int, dict]:
    """A model compressed by compressed-tensors' ModelCompressor (its config.json written by
    ``update_config``), saved with safetensors."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
        preset_name_to_scheme,
    )

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(first_in, 128), nn.ReLU(), nn.Linear(128, 64, bias=False))
    n = _numel(model)
    if isinstance(scheme, str):
        scheme = preset_name_to_scheme(scheme, ["Linear"])
    else:
        scheme = QuantizationScheme(targets=["Linear"], **scheme)
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}))
    for mod in model.modules():
        if hasattr(mod, "weight_scale"):
            mod.weight_scale.data.fill_(0.01)
    mc = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    mc.compress_model(model)
    folder = tmp_path / fmt
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
    )
    mc.update_config(str(folder))
    cfg = json.loads((folder / "config.json").read_text())["quantization_config"]
    return folder, n, cfg


@pytest.mark.parametrize(
    ("preset", "fmt", "bits", "group", "dtype"),
    [
        ("W4A16", "pack-quantized", 4, 128, "I32"),
        ("W4A16_ASYM", "pack-quantized", 4, 128, "I32"),  # packed zero points
        ("W3A16", "pack-quantized", 3, 128, "I32"),  # 32 values in 3 words
        ("W8A8", "int-quantized", 8, -1, "I8"),
        ("FP8", "float-quantized", 8, None, "F8_E4M3"),
        ("NVFP4A16", "nvfp4-pack-quantized", 4, 16, "U8"),
        ("MXFP4A16", "mxfp4-pack-quantized", 4, 32, "U8"),
    ],
)
def test_compressed_tensors_counts_equal_the_float_model(tmp_path, preset, fmt, bits, group, dtype):
    folder, n, raw = _ct_folder(tmp_path, preset, fmt)
    m = paramscope.read_manifest(folder)
    data = "0.weight_packed" if "pack" in fmt else "0.weight"
    assert m[data].dtype.value == dtype
    found = _compressed.recognise(m, parse_quant_config(raw, "config.json"), frozenset())
    assert not found.unknown
    by_name = {w.name: w for w in found.weights}
    assert by_name["0.weight"].shape == (128, 256)
    assert by_name["2.weight"].shape == (64, 128)
    assert (by_name["0.weight"].bits, by_name["0.weight"].group_size) == (bits, group)
    assert by_name["0.weight"].evidence == "config.json"
    assert by_name["0.weight"].detail["format"] == fmt
    # every stored entry but the float bias belongs to a weight
    owned = {x for w in found.weights for x in (*w.data, *w.meta)}
    assert owned | {"0.bias"} == set(m)
    c = paramscope.count(folder)
    assert c.params == n == 256 * 128 + 128 + 128 * 64
    assert c.buffers == 0


def test_compressed_tensors_channel_strategy_shape_from_weight_shape_values(tmp_path):
    """in_features 100 is not a multiple of 32/4: the packed width alone says 104. The true
    shape is in ``weight_shape``'s values, which io reads (a tiny entry); without them the
    derived shape is used and a note says how it was derived."""
    from dataclasses import replace

    from compressed_tensors.quantization import QuantizationArgs

    scheme = {"weights": QuantizationArgs(num_bits=4, strategy="channel", symmetric=True)}
    folder, n, raw = _ct_folder(tmp_path, scheme, "pack-quantized", first_in=100)
    m = paramscope.read_manifest(folder)
    assert m["0.weight_packed"].shape == (128, 13)  # ceil(100 · 4 / 32)
    cfg = parse_quant_config(raw, "config.json")
    found = _compressed.recognise(m, cfg, frozenset())
    shapes = {w.name: w.shape for w in found.weights}
    assert shapes == {"0.weight": (128, 100), "2.weight": (64, 128)}
    assert found.weights[0].group_size == -1
    assert found.weights[0].detail["shape_from"] == "weight_shape values"
    assert found.notes == []
    assert paramscope.count(folder).params == n == 100 * 128 + 128 + 128 * 64
    # no values (a manifest without them): derived from the packed width, and said
    bare = paramscope.Manifest([replace(e, extra={}) for e in m.values()])
    found = _compressed.recognise(bare, cfg, frozenset())
    assert {w.name: w.shape for w in found.weights}["0.weight"] == (128, 104)
    assert any("weight_shape holds it as values" in x for x in found.notes)


def test_compressed_tensors_weight_shape_contradicting_the_config(tmp_path):
    folder, _, raw = _ct_folder(tmp_path, "W4A16", "pack-quantized")
    m = paramscope.read_manifest(folder)
    raw["config_groups"]["group_0"]["weights"]["group_size"] = 64
    with pytest.raises(QuantConfigError, match=r"0\.weight_packed .*weight_shape is \[128, 256\]"):
        _compressed.recognise(m, parse_quant_config(raw, "config.json"), frozenset())


def test_compressed_tensors_config_contradicting_the_tensors_is_an_error(tmp_path, cli):
    folder, _, _ = _ct_folder(tmp_path, "W4A16", "pack-quantized")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 8
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QuantConfigError, match=r"weight_packed .*I32 \[128, 32\].*needs 64"):
        paramscope.count(folder)
    r = cli("count", folder)
    assert r.code == 2 and "weight_packed" in r.err and len(r.err.strip().splitlines()) == 1


def test_compressed_tensors_without_config_int_packing_is_unknown(tmp_path):
    folder, _, _ = _ct_folder(tmp_path, "W4A16", "pack-quantized")
    found = _compressed.recognise(paramscope.read_manifest(folder), None, frozenset())
    assert found.weights == []
    assert set(found.unknown) == {"0.weight_packed", "2.weight_packed"}
    assert "the total may be wrong" in found.notes[0]


# ---------------------------------------------------------------- FP8


def _fp8_folder(tmp_path: Path, block: list[int] | None) -> tuple[Path, int]:
    """A tiny Llama whose linear weights are quantised by transformers' own
    ``Fp8Quantize._quantize_one`` (integrations/finegrained_fp8.py), as its FP8 quantizer
    writes them: ``x.weight`` F8_E4M3 + ``x.weight_scale_inv`` F32 blocks."""
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Quantize

    model = _tiny_llama()
    n = model.num_parameters()
    qcfg = FineGrainedFP8Config(weight_block_size=block)
    op = Fp8Quantize(SimpleNamespace(quantization_config=qcfg))
    sd = {}
    for k, v in model.state_dict().items():
        sd.update(op._quantize_one(k, v.detach()) if "proj" in k else {k: v})
    folder = tmp_path / "fp8"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    config = model.config.to_dict()
    config["quantization_config"] = {
        "quant_method": "fp8",
        "activation_scheme": "dynamic",
        "weight_block_size": block,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder, n


def test_fp8_block_scales_written_by_transformers(tmp_path, cli):
    folder, n = _fp8_folder(tmp_path, [128, 128])
    m = paramscope.read_manifest(folder)
    assert m["model.layers.0.mlp.up_proj.weight"].dtype.value == "F8_E4M3"
    assert m["model.layers.0.mlp.up_proj.weight_scale_inv"].shape == (2, 1)
    rec = _layout(folder, "model.layers.0.mlp.down_proj.weight")
    assert rec["method"] == "fp8" and rec["detail"]["block"] == [128, 128]
    assert rec["evidence"] == "config.json" and rec["shape"] == [128, 256]
    assert paramscope.count(folder).params == n
    r = cli("count", folder, "--json")
    out = json.loads(r.out)
    assert out["params"] == out["params_logical"] == n
    assert out["bits_per_weight"] > 8  # the FP8 byte plus its share of the block scales


def test_fp8_block_scale_shape_contradicting_the_config(tmp_path):
    w = torch.zeros(300, 200).to(torch.float8_e4m3fn)
    save_file(
        {"l.weight": w, "l.weight_scale_inv": torch.ones(2, 2)}, tmp_path / "model.safetensors"
    )
    cfg = QuantConfig("fp8", 8, raw={"quant_method": "fp8", "weight_block_size": [128, 128]})
    m = paramscope.io.read_manifest(tmp_path / "model.safetensors")
    with pytest.raises(QuantConfigError, match=r"l\.weight_scale_inv.*\[3, 2\]; found \[2, 2\]"):
        _fp8.recognise(m, cfg, frozenset())
    # ceil, not floor: 300 rows need 3 blocks
    save_file(
        {"l.weight": w, "l.weight_scale_inv": torch.ones(3, 2)}, tmp_path / "model.safetensors"
    )
    m = paramscope.io.read_manifest(tmp_path / "model.safetensors")
    assert _fp8.recognise(m, cfg, frozenset()).weights[0].shape == (300, 200)


def test_fp8_per_channel_fbgemm_and_fused_experts_from_names(tmp_path):
    # FBGEMM (integrations/fbgemm_fp8.py FbgemmFp8Linear): weight F8 [out, in] +
    # weight_scale F32 [out, 1]; fused experts (finegrained_fp8 FP8Experts):
    # gate_up_proj F8 [E, 2I, H] + gate_up_proj_scale_inv [E, ceil(2I/128), ceil(H/128)]
    f8 = torch.float8_e4m3fn
    save_file(
        {
            "a.weight": torch.zeros(64, 32).to(f8),
            "a.weight_scale": torch.ones(64, 1),
            "e.gate_up_proj": torch.zeros(4, 256, 128).to(f8),
            "e.gate_up_proj_scale_inv": torch.ones(4, 2, 1),
            "plain.weight": torch.zeros(8, 8).to(f8),  # no scale: a float weight, left alone
        },
        tmp_path / "m.safetensors",
    )
    m = paramscope.io.read_manifest(tmp_path / "m.safetensors")
    found = {w.name: w for w in _fp8.recognise(m, None, frozenset()).weights}
    assert set(found) == {"a.weight", "e.gate_up_proj"}
    assert (
        found["a.weight"].group_size == -1 and found["a.weight"].evidence == "inferred from names"
    )
    assert found["e.gate_up_proj"].detail["block"] == [128, 128]
    assert paramscope.count(tmp_path / "m.safetensors").params == 64 * 32 + 4 * 256 * 128 + 64


# ---------------------------------------------------------------- MLX


def _mlx_folder(tmp_path: Path, quant: dict, mode: str = "affine") -> tuple[Path, int]:
    """A tiny Llama's weights quantised with MLX's own ``mx.quantize`` (every Linear and the
    embedding, as mlx-lm's ``convert -q`` does; per-layer overrides from ``quant``) and
    written by ``mx.save_safetensors``, with mlx-lm's config.json ``quantization``."""
    import mlx.core as mx

    model = _tiny_llama()
    n = model.num_parameters()
    arrays = {}
    for k, v in model.state_dict().items():
        module = k.rsplit(".", 1)[0]
        own = quant.get(module, quant)
        if v.ndim == 2 and own is not False:
            q = mx.quantize(
                mx.array(v.numpy()), group_size=own["group_size"], bits=own["bits"], mode=mode
            )
            arrays[k] = q[0]
            arrays[module + ".scales"] = q[1]
            if mode == "affine":
                arrays[module + ".biases"] = q[2]
        else:
            arrays[k] = mx.array(v.numpy())
    folder = tmp_path / "mlx"
    folder.mkdir()
    mx.save_safetensors(str(folder / "model.safetensors"), arrays, metadata={"format": "mlx"})
    config = model.config.to_dict()
    config["quantization"] = config["quantization_config"] = quant
    (folder / "config.json").write_text(json.dumps(config))
    return folder, n


def test_mlx_affine_written_by_mlx_with_a_per_layer_override(tmp_path, cli):
    quant = {
        "group_size": 64,
        "bits": 4,
        "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8},
    }
    folder, n = _mlx_folder(tmp_path, quant)
    m = paramscope.read_manifest(folder)
    assert m["model.layers.0.mlp.up_proj.weight"].dtype.value == "U32"
    assert m["model.layers.0.mlp.up_proj.weight"].shape == (256, 16)  # 128 values · 4/32
    down = _layout(folder, "model.layers.0.mlp.down_proj.weight")
    assert (down["bits"], down["group_size"], down["shape"]) == (8, 32, [128, 256])
    emb = _layout(folder, "model.embed_tokens.weight")
    assert (emb["bits"], emb["group_size"], emb["shape"]) == (4, 64, [256, 128])
    assert emb["evidence"] == "config.json"
    assert paramscope.count(folder).params == n
    out = json.loads(cli("count", folder, "--json").out)
    assert out["params_logical"] == n and out["quantization"]


def test_mlx_mxfp4_mode(tmp_path):
    folder, n = _mlx_folder(tmp_path, {"group_size": 32, "bits": 4, "mode": "mxfp4"}, mode="mxfp4")
    rec = _layout(folder, "model.layers.1.self_attn.q_proj.weight")
    assert rec["detail"] == {"mode": "mxfp4"} and rec["shape"] == [128, 128]
    assert paramscope.count(folder).params == n


def test_mlx_contradicting_config_and_ambiguous_names(tmp_path):
    folder, _ = _mlx_folder(tmp_path, {"group_size": 64, "bits": 4})
    m = paramscope.read_manifest(folder)
    wrong = QuantConfig("mlx", 8, 64, raw={"group_size": 64, "bits": 8})
    with pytest.raises(QuantConfigError, match=r"says affine 8-bit g64.*found \[256, 2\]"):
        _mlx.recognise(m, wrong, frozenset())
    # without config.json, 4-bit g64 and 8-bit g32 (and 2-bit g128) fit the same shapes
    found = _mlx.recognise(m, None, frozenset())
    assert found.weights == [] and "model.embed_tokens.weight" in found.unknown
    assert "the total may be wrong" in found.notes[0]


# ---------------------------------------------------------------- MXFP4 (gpt-oss)


def _gpt_oss():
    from transformers import GptOssConfig, GptOssForCausalLM

    cfg = GptOssConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        num_local_experts=4,
        num_experts_per_tok=2,
        layer_types=["full_attention"],
    )
    torch.manual_seed(0)
    return GptOssForCausalLM(cfg)


def test_mxfp4_gpt_oss_experts(tmp_path, cli):
    """gpt-oss ships ``experts.{gate_up,down}_proj_blocks`` U8 [E, out, in/32, 16] and
    ``_scales`` U8 (E8M0) [E, out, in/32] (transformers integrations/mxfp4.py,
    ``_convert_moe_packed_tensors``); its dequantiser turns our bytes back into the float
    model's parameter shape, so the layout we read is the one it reads."""
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    model = _gpt_oss()
    n = model.num_parameters()
    sd = {}
    g = torch.Generator().manual_seed(0)
    for k, v in model.state_dict().items():
        if k.endswith(("experts.gate_up_proj", "experts.down_proj")):
            e, inn, out = v.shape  # transformers' float layout is [E, in, out]
            blocks = torch.randint(0, 256, (e, out, inn // 32, 16), dtype=torch.uint8, generator=g)
            scales = torch.full((e, out, inn // 32), 127, dtype=torch.uint8)
            assert convert_moe_packed_tensors(blocks, scales).shape == v.shape
            sd[k + "_blocks"], sd[k + "_scales"] = blocks, scales
        else:
            sd[k] = v
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "model.safetensors")
    config = model.config.to_dict()
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": []}
    (tmp_path / "config.json").write_text(json.dumps(config))
    rec = _layout(tmp_path, "model.layers.0.mlp.experts.gate_up_proj_blocks")
    assert rec["weight"] == "model.layers.0.mlp.experts.gate_up_proj"
    assert rec["shape"] == [4, 128, 64] and (rec["bits"], rec["group_size"]) == (4, 32)
    assert paramscope.count(tmp_path).params == n
    out = json.loads(cli("count", tmp_path, "--json").out)
    assert out["params_logical"] == n
    assert 4.25 <= out["bits_per_weight"] < 4.26  # 4 bits + one E8M0 byte per 32 values


def test_mxfp4_scales_that_do_not_fit_under_an_mxfp4_config():
    from paramscope import DType, Entry, Manifest

    m = Manifest(
        [
            Entry("e.down_proj_blocks", (4, 8, 2, 16), DType.U8),
            Entry("e.down_proj_scales", (4, 8, 3), DType.U8),
        ]
    )
    with pytest.raises(QuantConfigError, match=r"e\.down_proj_scales has shape \[4, 8, 3\]"):
        _mxfp4.recognise(m, QuantConfig("mxfp4", 4, 32), frozenset())
    assert _mxfp4.recognise(m, None, frozenset()).unknown == ["e.down_proj_blocks"]


# ---------------------------------------------------------------- optimum-quanto


@pytest.mark.parametrize("qtype", ["qint8", "qint4", "qint2", "qfloat8"])
def test_quanto_written_by_quanto(tmp_path, qtype, cli):
    import optimum.quanto as oq

    model = _tiny_llama()
    n = model.num_parameters()
    oq.quantize(model, weights=getattr(oq, qtype))
    oq.freeze(model)
    qmap = oq.quantization_map(model)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, tmp_path / "model.safetensors", metadata={"quantization_map": json.dumps(qmap)})
    m = paramscope.read_manifest(tmp_path)
    found = {w.name: w for w in _quanto.recognise(m, None, frozenset()).weights}
    w = found["model.layers.0.mlp.down_proj.weight"]
    assert w.bits == {"qint8": 8, "qint4": 4, "qint2": 2, "qfloat8": 8}[qtype]
    assert w.evidence == "file metadata"
    assert w.shape[0] * (w.shape[1] if len(w.shape) > 1 else 1) == 128 * 256
    assert "model.layers.0.mlp.down_proj.input_scale" in w.meta
    assert paramscope.count(tmp_path).params == n
    out = json.loads(cli("count", tmp_path, "--json").out)
    assert out["params_logical"] == n and out["buffers"] == 0


def test_quanto_map_contradicting_the_tensors(tmp_path):
    import optimum.quanto as oq

    model = nn.Sequential(nn.Linear(256, 128))
    oq.quantize(model, weights=oq.qint4)
    oq.freeze(model)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        tmp_path / "model.safetensors",
        metadata={
            "quantization_map": json.dumps({"0": {"weights": "qint8", "activations": "none"}})
        },
    )
    with pytest.raises(
        QuantConfigError, match=r"0\.weight\._data\._data: .*says 0 weights are qint8"
    ):
        paramscope.count(tmp_path)
