"""P10: ``paramscope count DIR --json`` of a sparse 405B-shaped GPTQ folder vs transformers on meta.

Writes a Llama-3.1-405B-shaped GPTQ checkpoint (126 layers, hidden 16384, intermediate 53248,
128 heads, 8 kv heads, vocab 128256; every linear of the decoder 4-bit g128: ``qweight`` I32
``[in / 8, out]``, ``qzeros`` I32 ``[in / 128, out / 8]``, ``scales`` F16 ``[in / 128, out]``,
``g_idx`` I32 ``[in]``, as AutoGPTQ's ``QuantLinear`` registers them; embeddings, norms and
``lm_head`` in F16) as 64 safetensors shards + ``model.safetensors.index.json`` +
``config.json`` with its ``quantization_config``. The shards are sparse (a header, then a
hole up to the size the header describes), so ~230 GB of tensors cost no disk. Then times,
in alternating order, a fresh process of:

* ours: ``python -m paramscope count DIR --json`` (headers and config.json only);
* peer: ``transformers`` building ``LlamaForCausalLM`` on meta from the same config and
  ``num_parameters()``. transformers cannot build the GPTQ model on CPU without GPTQModel /
  optimum (not installable here), so the peer builds the float model (``quantization_config``
  dropped): the corrected count a user would reach for.

and checks both print the same parameter count (405,853,388,800).

Goal: ours <= 200 ms median and >= 10x faster than the peer.

Run: ``.venv/bin/python bench/p10_quant_count.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from _common import (
    alternating_runs,
    du_bytes,
    header,
    human,
    parse_args,
    require_cli,
    scratch,
    speed_verdict,
    timed_run,
)

GOAL_SPEEDUP = 10.0
GOAL_MS = 200.0
EXPECTED = 405_853_388_800
BITS, GROUP = 4, 128
SHARDS = 64

LLAMA_31_405B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 16384,
    "intermediate_size": 53248,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 128,
    "num_hidden_layers": 126,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "vocab_size": 128256,
}
QUANT = {"quant_method": "gptq", "bits": BITS, "group_size": GROUP, "desc_act": False,
         "sym": True, "checkpoint_format": "gptq"}  # fmt: skip

PEER_CODE = """
import json, sys, torch, transformers as T
raw = json.load(open(sys.argv[1] + "/config.json"))
raw.pop("quantization_config")  # GPTQ needs GPTQModel/optimum to build; the float model instead
cfg = T.LlamaConfig(**{k: v for k, v in raw.items() if k != "model_type"})
with torch.device("meta"):
    model = T.LlamaForCausalLM(cfg)
print(model.num_parameters())
"""

SIZES = {"F16": 2, "I32": 4}


def tensors(cfg: dict) -> list[tuple[str, str, list[int]]]:
    """(name, dtype, shape) of every stored tensor, in file order."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    out: list[tuple[str, str, list[int]]] = [("model.embed_tokens.weight", "F16", [v, h])]
    linears = [("self_attn.q_proj", h, h), ("self_attn.k_proj", h, kv), ("self_attn.v_proj", h, kv),
               ("self_attn.o_proj", h, h), ("mlp.gate_proj", h, f), ("mlp.up_proj", h, f),
               ("mlp.down_proj", f, h)]  # fmt: skip
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        for name, n_in, n_out in linears:
            out += [
                (f"{p}.{name}.qweight", "I32", [n_in // 32 * BITS, n_out]),
                (f"{p}.{name}.qzeros", "I32", [n_in // GROUP, n_out // 32 * BITS]),
                (f"{p}.{name}.scales", "F16", [n_in // GROUP, n_out]),
                (f"{p}.{name}.g_idx", "I32", [n_in]),
            ]
        out += [(f"{p}.input_layernorm.weight", "F16", [h]),
                (f"{p}.post_attention_layernorm.weight", "F16", [h])]  # fmt: skip
    out += [("model.norm.weight", "F16", [h]), ("lm_head.weight", "F16", [v, h])]
    return out


def write_sparse(path: Path, items: list[tuple[str, str, list[int]]]) -> int:
    """A safetensors file whose data section is a hole; returns the data bytes it describes."""
    head: dict = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, dtype, shape in items:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        head[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(head, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + pos)
    return pos


def build(d: Path) -> int:
    items = tensors(LLAMA_31_405B)
    per = -(-len(items) // SHARDS)
    weight_map: dict[str, str] = {}
    total = 0
    for k in range(SHARDS):
        part = items[k * per : (k + 1) * per]
        name = f"model-{k + 1:05d}-of-{SHARDS:05d}.safetensors"
        total += write_sparse(d / name, part)
        weight_map.update({n: name for n, _, _ in part})
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    (d / "config.json").write_text(json.dumps({**LLAMA_31_405B, "quantization_config": QUANT}))
    return total


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=7, quick_runs=3)
    header("P10: paramscope count of a sparse 405B GPTQ folder vs transformers on meta", args)
    require_cli()
    with scratch(args, "p10-") as d:
        total = build(d)
        print(
            f"   {SHARDS} shards + index + config.json: {human(total)} of tensors described, "
            f"{human(du_bytes(d))} on disk"
        )
        variants = {
            "ours: python -m paramscope count DIR --json": [
                sys.executable, "-m", "paramscope", "count", str(d), "--json"
            ],
            "peer: python -c 'LlamaForCausalLM on meta; num_parameters()'": [
                sys.executable, "-c", PEER_CODE, str(d)
            ],
            "floor: python -c 'import paramscope'": [sys.executable, "-c", "import paramscope"],
        }  # fmt: skip
        names = list(variants)
        _, out_ours = timed_run(variants[names[0]])  # warm-up and the correctness check
        _, out_peer = timed_run(variants[names[1]])
        ours = json.loads(out_ours)
        peer_count = int(out_peer.strip().splitlines()[-1])
        assert ours["params"] == peer_count == EXPECTED, (ours["params"], peer_count)
        q = ours["quantization"]
        assert (q["method"], q["bits"], q["group_size"], q["evidence"]) == (
            "gptq", BITS, GROUP, "config.json"
        ), q  # fmt: skip
        print(
            f"   counts agree: ours {ours['params']:,} == peer {peer_count:,}; "
            f"{q['weights']:,} GPTQ weights, {ours['bits_per_weight']:.3f} bits per weight, "
            f"{human(ours['bytes'])} stored"
        )
        times = alternating_runs(variants, args.runs, EXPECTED)
    speed_verdict("P10", times, names[0], names[1], GOAL_MS, GOAL_SPEEDUP, args.runs)


if __name__ == "__main__":
    main()
