"""P1: ``paramscope count FILE --json`` against the usual torch + safetensors one-liner.

Builds a ~100 MB fp32 safetensors file with GPT-2-small names and layout (12 blocks, vocab
50257, context 1024; the width is narrowed to 288 so the file is ~100 MB rather than ~500 MB),
written by ``safetensors.torch.save_file`` so paramscope has to infer roles. Each run times,
in alternating order, a fresh process of:

* ours: ``python -m paramscope count FILE --json``
* peer: ``python -c "import torch; from safetensors import safe_open; ...sum of shapes..."``

and checks both print the same parameter count (which also equals the analytic count).

Goal: ours >= 10x faster than the peer and <= 150 ms median.

Run: ``.venv/bin/python bench/p1_count_cli.py [--quick] [--runs N]``
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from _common import (
    alternating_runs,
    cli_total,
    header,
    human,
    paramscope_count_cmd,
    parse_args,
    require_cli,
    scratch,
    speed_verdict,
    timed_run,
)

GOAL_SPEEDUP = 10.0
GOAL_MS = 150.0

PEER_CODE = (
    "import sys, math, torch; from safetensors import safe_open; "
    "f = safe_open(sys.argv[1], 'pt'); "
    "print(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))"
)


def gpt2_layout(n_embd: int, n_layer: int = 12, vocab: int = 50257, n_ctx: int = 1024):
    """GPT-2 (HF ``GPT2Model``) entry names and shapes; Conv1D weights are (in, out)."""
    out: list[tuple[str, tuple[int, ...]]] = [
        ("wte.weight", (vocab, n_embd)),
        ("wpe.weight", (n_ctx, n_embd)),
    ]
    for i in range(n_layer):
        p = f"h.{i}."
        out += [
            (p + "ln_1.weight", (n_embd,)),
            (p + "ln_1.bias", (n_embd,)),
            (p + "attn.c_attn.weight", (n_embd, 3 * n_embd)),
            (p + "attn.c_attn.bias", (3 * n_embd,)),
            (p + "attn.c_proj.weight", (n_embd, n_embd)),
            (p + "attn.c_proj.bias", (n_embd,)),
            (p + "ln_2.weight", (n_embd,)),
            (p + "ln_2.bias", (n_embd,)),
            (p + "mlp.c_fc.weight", (n_embd, 4 * n_embd)),
            (p + "mlp.c_fc.bias", (4 * n_embd,)),
            (p + "mlp.c_proj.weight", (4 * n_embd, n_embd)),
            (p + "mlp.c_proj.bias", (n_embd,)),
        ]
    out += [("ln_f.weight", (n_embd,)), ("ln_f.bias", (n_embd,))]
    return out


def build(path: Path, n_embd: int) -> int:
    """Write the checkpoint with safetensors.torch; return the analytic parameter count."""
    import torch
    from safetensors.torch import save_file

    layout = gpt2_layout(n_embd)
    g = torch.Generator().manual_seed(0)
    tensors = {n: torch.randn(s, generator=g, dtype=torch.float32) for n, s in layout}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sum(math.prod(s) for _, s in layout)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    header("P1: paramscope count FILE --json vs torch+safetensors one-liner", args)
    require_cli()
    n_embd = 96 if args.quick else 288
    with scratch(args, "p1-") as d:
        path = d / "model.safetensors"
        expected = build(path, n_embd)
        print(f"   file: {path.name}, {human(path.stat().st_size)}, {expected:,} params "
              f"(GPT-2-small layout, n_embd={n_embd})")

        variants = {
            "ours: python -m paramscope count --json": paramscope_count_cmd(path),
            "peer: python -c 'import torch; safe_open...'": [
                sys.executable, "-c", PEER_CODE, str(path)
            ],
        }
        script = Path(sys.executable).with_name("paramscope")
        if script.exists():
            variants["ours (console script): paramscope count --json"] = [
                str(script), "count", str(path), "--json"
            ]
        variants["floor: python -c 'import paramscope'"] = [
            sys.executable, "-c", "import paramscope"
        ]
        names = list(variants)

        # warm-up (page cache, .pyc), and the correctness check
        _, out_ours = timed_run(variants[names[0]])
        _, out_peer = timed_run(variants[names[1]])
        ours_count = cli_total(out_ours)
        peer_count = int(out_peer.strip())
        assert ours_count == peer_count == expected, (ours_count, peer_count, expected)
        print(f"   counts agree: ours {ours_count:,} == peer {peer_count:,} == analytic")

        times = alternating_runs(variants, args.runs, expected, total=cli_total)

    speed_verdict("P1", times, names[0], names[1], GOAL_MS, GOAL_SPEEDUP, args.runs)


if __name__ == "__main__":
    main()
