"""P11: ``paramscope count X.gguf`` of a sparse Llama-2-70B-shaped Q4_K_M GGUF vs GGUFReader.

Writes, with the ``gguf`` package's own writer (``gguf.GGUFWriter``: header, metadata and
tensor infos), a GGUF shaped like a Q4_K_M Llama-2-70B: 80 layers, hidden 8192, ffn 28672,
64 heads, 8 KV heads, vocabulary 32,000 (the tokenizer's 32,000 tokens, scores and token types
in the metadata, as llama.cpp's converter writes them). Types as llama.cpp's Q4_K_M recipe
gives them: Q4_K for most weights, Q6_K for ``output.weight`` and for ``attn_v`` /
``ffn_down`` in the layers ``use_more_bits`` picks (the first and last eighth and every third
in between), F32 norms. The data section is a hole (the file is truncated to its full
length, ~38.5 GiB, without writing it), so no disk is used.

Then times, in alternating order, a fresh process of:

* ours: ``python -m paramscope count X.gguf --json`` (the header only; no torch, no numpy);
* peer: ``gguf.GGUFReader(path)`` and the sum of its tensors' ``n_elements``;

and checks both print the same count (= Llama-2-70B's published 68,976,648,192).

Goal: ours <= 200 ms median and >= 10x faster than the peer.

Run: ``.venv/bin/python bench/p11_gguf_count.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
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
PUBLISHED = 68_976_648_192  # Llama-2-70B

LAYERS, HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 80, 8192, 28672, 64, 8, 32000

PEER_CODE = """
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
print(sum(int(t.n_elements) for t in r.tensors))
"""


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's ``use_more_bits`` (src/llama-quant.cpp): Q4_K_M's Q6_K layers."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def write_70b(path: Path) -> int:
    """The sparse Q4_K_M GGUF; returns its size in bytes."""
    import gguf
    import numpy as np

    T = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("Llama 2 70B (P11 benchmark, sparse)")
    w.add_context_length(4096)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(15)  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<tok{i}>" for i in range(VOCAB)])
    w.add_token_scores([float(-i) for i in range(VOCAB)])
    w.add_token_types([1] * VOCAB)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_quantization_version(2)

    def info(name: str, shape: tuple[int, ...], t: T) -> None:  # shape: numpy order
        block, size = gguf.GGML_QUANT_SIZES[t]
        n = int(np.prod(shape))
        nbytes = n // block * size
        byte_shape = (*shape[:-1], shape[-1] // block * size)
        w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=t)

    info("token_embd.weight", (VOCAB, HIDDEN), T.Q4_K)
    kv = HIDDEN // HEADS * KV_HEADS
    for i in range(LAYERS):
        more = T.Q6_K if use_more_bits(i, LAYERS) else T.Q4_K
        info(f"blk.{i}.attn_norm.weight", (HIDDEN,), T.F32)
        info(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), T.Q4_K)
        info(f"blk.{i}.attn_k.weight", (kv, HIDDEN), T.Q4_K)
        info(f"blk.{i}.attn_v.weight", (kv, HIDDEN), more)
        info(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), T.Q4_K)
        info(f"blk.{i}.ffn_norm.weight", (HIDDEN,), T.F32)
        info(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), T.Q4_K)
        info(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), T.Q4_K)
        info(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), more)
    info("output_norm.weight", (HIDDEN,), T.F32)
    info("output.weight", (VOCAB, HIDDEN), T.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    data = sum(w.ggml_pad(ti.nbytes, w.data_alignment) for ti in w.tensors[0].values())
    size = w.ggml_pad(path.stat().st_size, w.data_alignment) + data  # the data section's start
    with open(path, "r+b") as f:
        f.truncate(size)  # the data section: a hole
    return size


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=7, quick_runs=3)
    header("P11: paramscope count X.gguf vs gguf.GGUFReader (sparse Llama-2-70B Q4_K_M)", args)
    require_cli()
    with scratch(args, "p11-") as d:
        path = d / "llama-2-70b.Q4_K_M.gguf"
        size = write_70b(path)
        print(f"   file {human(size)} logical, {human(du_bytes(d))} on disk")
        variants = {
            "ours: python -m paramscope count X.gguf --json": [
                sys.executable, "-m", "paramscope", "count", str(path), "--json"
            ],
            "peer: python -c 'GGUFReader(path); sum n_elements'": [
                sys.executable, "-c", PEER_CODE, str(path)
            ],
            "floor: python -c 'import paramscope'": [sys.executable, "-c", "import paramscope"],
        }  # fmt: skip
        names = list(variants)
        _, out_ours = timed_run(variants[names[0]])  # warm-up and the correctness check
        _, out_peer = timed_run(variants[names[1]])
        ours_json = json.loads(out_ours)
        ours_count, peer_count = ours_json["params"], int(out_peer.strip().splitlines()[-1])
        assert ours_json["format"] == "gguf", ours_json["format"]
        assert ours_count == peer_count == PUBLISHED, (ours_count, peer_count)
        print(f"   counts agree: ours {ours_count:,} == peer {peer_count:,} == published")
        print(f"   bytes {ours_json['bytes']:,}, bits/weight {ours_json.get('bits_per_weight')}")
        times = alternating_runs(variants, args.runs, PUBLISHED)
    speed_verdict("P11", times, names[0], names[1], GOAL_MS, GOAL_SPEEDUP, args.runs)


if __name__ == "__main__":
    main()
