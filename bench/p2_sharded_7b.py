"""P2: counting a 7B sharded checkpoint costs the same as counting a tiny one.

Builds Llama-2-7B-shaped Hugging Face sharded checkpoints (32 layers, ``model.layers.{i}...``
names, bf16, untied ``lm_head``, two shards split as HF's 10 GB limit would, and a
``model.safetensors.index.json``) from SPARSE files: each shard gets its real safetensors
header, then ``truncate`` to its full size, so the tensor data is a hole and uses no disk.
The same structure (same names, entry count and shard split) is built at ~1/8 and 1/64 of
the tensor bytes by narrowing every width (hidden, intermediate, vocab) by sqrt(8) and 8.

For each size it times, round-robin over the sizes:

* ours (CLI): ``python -m paramscope count DIR --json`` (fresh process, wall time)
* ours (in-process): ``paramscope.count(DIR)``
* peer (once per size): ``python -c "import torch; from safetensors import safe_open; ..."``
  summing the shapes of every shard

and asserts every count equals the analytic one (Llama-2-7B: 6,738,415,616 parameters).

Goal: time roughly flat in tensor bytes, largest/smallest median ratio <= 1.5.

Run: ``.venv/bin/python bench/p2_sharded_7b.py [--quick] [--runs N]``
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

from _common import (
    cli_total,
    du_bytes,
    header,
    human,
    med,
    ms,
    paramscope_count_cmd,
    parse_args,
    require_cli,
    scratch,
    table,
    timed_call,
    timed_run,
)

GOAL_RATIO = 1.5
LLAMA2_7B_PARAMS = 6_738_415_616
HF_SHARD_LIMIT = 10 * 10**9  # bytes, as used for the published Llama-2-7b-hf shards
DU_LIMIT = 1 << 20  # the sparse folders must stay tiny on disk

PEER_CODE = (
    "import sys, math, glob, os, torch; from safetensors import safe_open; "
    "n = 0\n"
    "for p in sorted(glob.glob(os.path.join(sys.argv[1], '*.safetensors'))):\n"
    "    f = safe_open(p, 'pt')\n"
    "    n += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())\n"
    "print(n)"
)


def llama_layout(hidden: int, inter: int, vocab: int, layers: int = 32):
    """(name, shape) of a LlamaForCausalLM state dict, in HF order."""
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (hidden, hidden)),
            (p + "self_attn.v_proj.weight", (hidden, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


def analytic_params(hidden: int, inter: int, vocab: int, layers: int = 32) -> int:
    """Embedding + untied head + per layer (4 attention, 3 MLP matrices, 2 norms) + final norm."""
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    return 2 * vocab * hidden + layers * per_layer + hidden


def shard_plan(layout, limit: int) -> list[list[str]]:
    """Split names in order into shards of at most ``limit`` bf16 bytes (as HF does)."""
    shards: list[list[str]] = [[]]
    cur = 0
    for name, shape in layout:
        n = 2 * math.prod(shape)
        if shards[-1] and cur + n > limit:
            shards.append([])
            cur = 0
        shards[-1].append(name)
        cur += n
    return shards


def write_sparse_shard(path: Path, entries: list[tuple[str, tuple[int, ...]]]) -> int:
    """A real safetensors header, then a hole for the data; returns the data bytes."""
    hdr: dict[str, object] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, shape in entries:
        n = 2 * math.prod(shape)
        hdr[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(hdr, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + pos)
    return pos


def build(folder: Path, hidden: int, inter: int, vocab: int, plan: list[list[str]]) -> int:
    """Write the shards and index into ``folder``; return the tensor bytes."""
    folder.mkdir(parents=True)
    layout = dict(llama_layout(hidden, inter, vocab))
    weight_map: dict[str, str] = {}
    total = 0
    for k, names in enumerate(plan, 1):
        fname = f"model-{k:05d}-of-{len(plan):05d}.safetensors"
        total += write_sparse_shard(folder / fname, [(n, layout[n]) for n in names])
        weight_map.update(dict.fromkeys(names, fname))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    header("P2: count a sparse Llama-2-7B-shaped sharded checkpoint at 3 sizes", args)
    require_cli()
    import paramscope

    full = (4096, 11008, 32000)
    s8 = math.sqrt(8)
    sizes = {  # label -> (hidden, intermediate, vocab)
        "7B (full)": full,
        "~1/8": (round(4096 / s8 / 8) * 8, round(11008 / s8 / 8) * 8, round(32000 / s8)),
        "1/64": (4096 // 8, 11008 // 8, 32000 // 8),
    }
    assert analytic_params(*full) == LLAMA2_7B_PARAMS
    plan = shard_plan(llama_layout(*full), HF_SHARD_LIMIT)
    labels = list(sizes)

    with scratch(args, "p2-") as root:
        folders: dict[str, Path] = {}
        expected: dict[str, int] = {}
        nbytes: dict[str, int] = {}
        for i, (label, dims) in enumerate(sizes.items()):
            folders[label] = root / f"size{i}"
            nbytes[label] = build(folders[label], *dims, plan)
            expected[label] = analytic_params(*dims)
        used = du_bytes(root)
        logical = sum(p.stat().st_size for f in folders.values() for p in f.iterdir())
        print(f"   {len(plan)} shards x 3 sizes, {len(llama_layout(*full))} entries each; "
              f"logical {human(logical)}, on disk (du) {human(used)}")
        assert used <= DU_LIMIT, f"sparse files use {used} bytes on disk"

        # correctness + warm-up; peer measured once per size
        peer_t: dict[str, float] = {}
        for label in labels:
            _, out = timed_run(paramscope_count_cmd(folders[label]))
            got_cli = cli_total(out)
            got_lib = paramscope.count(folders[label])
            dt, out = timed_run([sys.executable, "-c", PEER_CODE, str(folders[label])])
            peer_t[label] = dt
            got_peer = int(out.strip())
            assert got_cli == got_lib.total == got_peer == expected[label], (
                label, got_cli, got_lib.total, got_peer, expected[label]
            )
        print(f"   counts agree with the analytic count for every size "
              f"(7B: {expected[labels[0]]:,})")

        cli_t: dict[str, list[float]] = {k: [] for k in labels}
        lib_t: dict[str, list[float]] = {k: [] for k in labels}
        for r in range(args.runs):
            order = labels if r % 2 == 0 else labels[::-1]
            for label in order:
                dt, out = timed_run(paramscope_count_cmd(folders[label]))
                assert cli_total(out) == expected[label]
                cli_t[label].append(dt)
            for label in order:
                dt, c = timed_call(lambda f=folders[label]: paramscope.count(f))
                assert c.params == expected[label]
                lib_t[label].append(dt)

    rows = [
        [label, f"{expected[label] / 1e9:.3f} B", human(nbytes[label]),
         ms(med(cli_t[label])), ms(med(lib_t[label])), ms(peer_t[label]),
         f"{peer_t[label] / med(cli_t[label]):5.1f}x"]
        for label in labels
    ]
    print()
    print(table(
        ["size", "params", "tensor bytes", "ours CLI", "ours in-proc", "peer (1 run)",
         "peer/ours CLI"],
        rows,
    ))
    big, small = labels[0], labels[-1]
    r_cli = med(cli_t[big]) / med(cli_t[small])
    r_lib = med(lib_t[big]) / med(lib_t[small])
    ok = r_cli <= GOAL_RATIO and r_lib <= GOAL_RATIO
    print()
    print(
        f"VERDICT P2: {'PASS' if ok else 'FAIL'} - largest/smallest median time: CLI "
        f"{r_cli:.2f} ({med(cli_t[big]) * 1e3:.1f} / {med(cli_t[small]) * 1e3:.1f} ms), "
        f"in-process {r_lib:.2f} ({med(lib_t[big]) * 1e3:.2f} / {med(lib_t[small]) * 1e3:.2f} ms) "
        f"(goal <= {GOAL_RATIO}); 7B CLI {med(cli_t[big]) * 1e3:.1f} ms vs peer "
        f"{peer_t[big] * 1e3:.0f} ms; du {human(used)}; n={args.runs}"
    )


if __name__ == "__main__":
    main()
