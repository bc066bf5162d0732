"""P16: ``paramscope sweep`` of 100 grid points of a Llama-shaped callable against a loop that
builds each point with transformers on meta and counts it.

The callable (``p16_models:llama``, written to the scratch folder) builds the zoo's Llama with
``hidden_size = hidden``, ``num_hidden_layers = layers``, heads of width 64, SwiGLU width
``256·ceil(8·hidden/3/256)`` and a 32,000-token vocabulary; the grid is 10 widths × 10 depths.
Each variant runs end to end in a fresh process (imports included), alternating run by run:

* measured FLOPs: ours ``python -m paramscope sweep p16_models:llama --arg hidden=… --arg
  layers=… --flops --seq S --csv`` (``paramscope.count`` and ``paramscope.flops``, one forward
  on meta per point, in which a block identical to one measured before, at this point or an
  earlier one, is counted with that measurement; ``--workers 1`` and ``--workers 2`` too);
  the peer builds
  ``transformers.LlamaForCausalLM(LlamaConfig(...))`` inside ``torch.device("meta")`` per
  point, ``sum(p.numel())`` and one forward of ``(1, S)`` token ids under torch's
  ``FlopCounterMode``;
* analytic FLOPs: ours the same with ``--analytic`` (Kaplan's ``2·N + 2·L·S·d`` per token,
  ``paramscope.flops(analytic=True)``); the peer the same transformers build and
  ``num_parameters`` with the formula written out.

Both print params and FLOPs per token of every point; they must be equal (asserted).
Goal: ours ≥ 5× faster than the peer with the same numbers, end to end. Each variant also runs
its first point alone, to split its time into start-up (the interpreter, torch, and the
``torch._dynamo`` import that torch's dispatch modes trigger on their first op: ~2.5 s of
the ~3.7 s of ours here) and the time per point after it.

Run: ``.venv/bin/python bench/p16_sweep.py [--quick] [--runs N] [--seq S]``
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

from _common import med, ms, parse_args, require_cli, scratch, table, timed_run

GOAL_SPEEDUP = 5.0
HIDDEN = [256, 384, 512, 640, 768, 896, 1024, 1280, 1536, 2048]
LAYERS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16]

MODELS = '''
from paramscope.building import zoo


def ffn(hidden):
    return 256 * -(-8 * hidden // 3 // 256)


def llama(hidden, layers):
    """A Llama-shaped model: heads of width 64, SwiGLU, 32,000 tokens."""
    return zoo.build("llama-2-7b", hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                     intermediate_size=ffn(hidden), vocab_size=32000)
'''

PEER = """
import sys
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

HIDDEN, LAYERS, SEQ, ANALYTIC = {hidden}, {layers}, {seq}, {analytic}
print("hidden,layers,params,flops_per_token")
for hidden in HIDDEN:
    for layers in LAYERS:
        cfg = transformers.LlamaConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
            num_key_value_heads=hidden // 64, intermediate_size=256 * -(-8 * hidden // 3 // 256),
            vocab_size=32000)
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(cfg)
        params = sum(p.numel() for p in model.parameters())
        if ANALYTIC:  # Kaplan et al. 2020: 2·N + 2·n_layer·n_ctx·d_model, N non-embedding
            n = params - model.model.embed_tokens.weight.numel() - model.lm_head.weight.numel()
            per_token = 2 * n + 2 * layers * SEQ * hidden
        else:
            with FlopCounterMode(display=False) as counter:
                model(torch.zeros(1, SEQ, dtype=torch.long, device="meta"))
            per_token = counter.get_total_flops() / SEQ
        print(f"{{hidden}},{{layers}},{{params}},{{per_token}}")
"""


def _rows(out: str) -> list[tuple[int, int, int, float]]:
    """``(hidden, layers, params, flops per token)`` from either variant's CSV."""
    return [
        (int(r["hidden"]), int(r["layers"]), int(r["params"]), float(r["flops_per_token"]))
        for r in csv.DictReader(io.StringIO(out))
    ]


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        default_runs=5,
        quick_runs=2,
        extra=lambda p: p.add_argument("--seq", type=int, default=256, help="tokens (256)"),
    )
    require_cli()
    hidden = HIDDEN[:4] if args.quick else HIDDEN
    layers = LAYERS[:5] if args.quick else LAYERS
    with scratch(args, "p16-") as d:
        (d / "p16_models.py").write_text(MODELS)
        os.chdir(d)  # the callable's module is in the scratch folder (python -m adds cwd)
        points = len(hidden) * len(layers)
        full = _variants(d, hidden, layers, args.seq, "")
        one = _variants(d, hidden[:1], layers[:1], args.seq, "_one")
        print(f"P16: {points} grid points, seq {args.seq}, {args.runs} runs per variant")
        print("(each variant also runs its first point alone: its start-up, imports included)")
        verdicts = []
        for kind, vs in full.items():
            times: dict[str, list[float]] = {n: [] for n in vs}
            starts: dict[str, list[float]] = {n: [] for n in vs}
            names = list(vs)
            for r in range(args.runs):
                order = names if r % 2 == 0 else names[::-1]
                outs = {}
                for n in order:
                    dt, out = timed_run(vs[n])
                    times[n].append(dt)
                    outs[n] = _rows(out)
                    starts[n].append(timed_run(one[kind][n])[0])
                peer_rows = outs[PEER_NAME]
                assert len(peer_rows) == points
                for n, rows in outs.items():
                    assert rows == peer_rows, f"{kind}: {n} differs from the peer"
            peer_t = med(times[PEER_NAME])
            peer_pt = _per_point(times[PEER_NAME], starts[PEER_NAME], points)
            print(f"\n{kind} FLOPs (same numbers at all {points} points, asserted)")
            rows_out = []
            for n, t in times.items():
                pt = _per_point(t, starts[n], points)
                rows_out.append(
                    [
                        n,
                        ms(med(t)),
                        ms(min(t)),
                        ms(max(t)),
                        f"{peer_t / med(t):6.2f}x",
                        ms(med(starts[n])),
                        f"{pt * 1e3:7.1f} ms",
                        f"{peer_pt / pt:6.2f}x",
                    ]
                )
            print(
                table(
                    [
                        "variant",
                        "median",
                        "min",
                        "max",
                        "peer/this",
                        "1 point",
                        "per point after",
                        "peer/this",
                    ],
                    rows_out,
                )
            )
            ours_pt = _per_point(times["ours"], starts["ours"], points)
            verdicts.append((kind, peer_t / med(times["ours"]), peer_pt / ours_pt))
        print()
        for kind, ratio, per_point in verdicts:
            ok = ratio >= GOAL_SPEEDUP
            print(
                f"VERDICT P16 {kind}: {'PASS' if ok else 'FAIL'} - ours {ratio:.2f}x faster than "
                f"the transformers loop end to end (goal >= {GOAL_SPEEDUP:.0f}x), same numbers, "
                f"n={args.runs}; {per_point:.2f}x per point after start-up"
            )


PEER_NAME = "peer (transformers loop)"


def _per_point(full: list[float], one: list[float], points: int) -> float:
    """Median seconds per grid point once the process has started: (all − one) / (n − 1)."""
    return max(med(full) - med(one), 1e-6) / max(points - 1, 1)


def _variants(
    d: Path, hidden: list[int], layers: list[int], seq: int, tag: str
) -> dict[str, dict[str, list[str]]]:
    """The commands of every variant for one grid, measured and analytic."""
    grid = ["--arg", f"hidden={','.join(map(str, hidden))}"]
    grid += ["--arg", f"layers={','.join(map(str, layers))}"]
    ours = [sys.executable, "-m", "paramscope", "sweep", "p16_models:llama", *grid]
    ours += ["--flops", "--seq", str(seq), "--csv"]
    variants: dict[str, dict[str, list[str]]] = {"measured": {}, "analytic": {}}
    for kind, analytic in (("measured", False), ("analytic", True)):
        peer = d / f"peer_{kind}{tag}.py"
        peer.write_text(PEER.format(hidden=hidden, layers=layers, seq=seq, analytic=analytic))
        extra = ["--analytic"] if analytic else []
        variants[kind]["ours"] = [*ours, *extra]
        if not analytic:
            variants[kind]["ours --workers 1"] = [*ours, "--workers", "1"]
            variants[kind]["ours --workers 2"] = [*ours, "--workers", "2"]
        variants[kind][PEER_NAME] = [sys.executable, str(peer)]
    return variants


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
