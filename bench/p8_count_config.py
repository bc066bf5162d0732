"""P8: ``paramscope count config.json`` of Llama-2-7B against ``from_config`` on meta.

Writes the published ``meta-llama/Llama-2-7b-hf`` config.json, then times, in alternating
order, a fresh process of:

* ours: ``python -m paramscope count config.json --json`` (counted analytically from the
  config: no torch, no transformers);
* peer: the usual one-liner ``AutoConfig.from_pretrained`` + ``AutoModelForCausalLM.from_config``
  inside ``torch.device("meta")`` + ``sum(p.numel() for p in model.parameters())``;

and checks both print the same parameter count (which also equals the published
6,738,415,616).

Goal: ours <= 300 ms median and >= 10x faster than the peer.

Run: ``.venv/bin/python bench/p8_count_config.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import sys

from _common import (
    alternating_runs,
    header,
    parse_args,
    require_cli,
    scratch,
    speed_verdict,
    timed_run,
)

GOAL_SPEEDUP = 10.0
GOAL_MS = 300.0
PUBLISHED = 6_738_415_616

LLAMA_2_7B = {
    "_name_or_path": "meta-llama/Llama-2-7b-hf",
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.31.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}

PEER_CODE = """
import sys, torch, transformers as T
cfg = T.AutoConfig.from_pretrained(sys.argv[1])
with torch.device("meta"):
    model = T.AutoModelForCausalLM.from_config(cfg)
print(sum(p.numel() for p in model.parameters()))
"""


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_runs=7, quick_runs=3)
    header("P8: paramscope count config.json vs from_config on meta (Llama-2-7B)", args)
    require_cli()
    with scratch(args, "p8-") as d:
        (d / "config.json").write_text(json.dumps(LLAMA_2_7B, indent=2))
        variants = {
            "ours: python -m paramscope count config.json --json": [
                sys.executable, "-m", "paramscope", "count", str(d / "config.json"), "--json"
            ],
            "peer: python -c 'from_config on meta; sum numel'": [
                sys.executable, "-c", PEER_CODE, str(d)
            ],
            "floor: python -c 'import paramscope'": [sys.executable, "-c", "import paramscope"],
        }
        names = list(variants)
        _, out_ours = timed_run(variants[names[0]])  # warm-up and the correctness check
        _, out_peer = timed_run(variants[names[1]])
        ours_json = json.loads(out_ours)
        ours_count, peer_count = ours_json["params"], int(out_peer.strip().splitlines()[-1])
        assert ours_json["format"] == "config", ours_json["format"]
        assert ours_count == peer_count == PUBLISHED, (ours_count, peer_count)
        print(f"   counts agree: ours {ours_count:,} == peer {peer_count:,} == published")
        times = alternating_runs(variants, args.runs, PUBLISHED)
    speed_verdict("P8", times, names[0], names[1], GOAL_MS, GOAL_SPEEDUP, args.runs)


if __name__ == "__main__":
    main()
