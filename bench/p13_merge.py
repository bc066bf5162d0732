"""P13: TIES merge of 3 x 1 GiB fp32 checkpoints: peak RSS <= 5x largest + 300 MB, wall <= mergekit.

Writes three Llama-shaped fp32 checkpoints (``config.json`` by ``transformers.LlamaConfig``
+ ``model.safetensors`` by ``safetensors.torch.save_file``): hidden 2048, ffn 5632, 16 heads /
4 KV heads, 3 layers, vocabulary 32,000, untied head: 30 tensors, ~0.99 GiB each, the largest
(embeddings, lm_head) 250 MiB. ``base`` is seeded N(0, 0.02) (norms 1), ``a`` and ``b`` are
base + seeded N(0, 0.01) noise. Then, in a fresh process each, alternating run by run:

* ours: ``paramscope merge --method ties --base base a b --weights 0.5,0.5 --density 0.5
  -o out.safetensors --json``;
* peer: mergekit's CLI, ``mergekit-yaml cfg.yml outdir --device cpu --lazy-unpickle
  --no-copy-tokenizer --no-write-model-card --quiet`` with ``out_dtype: float32`` and the same
  weights / density;

each under a small probe that reads the child's wall time and peak RSS (``ru_maxrss``). The
two outputs are compared tensor by tensor (TIES at density 0.5 is deterministic: the same
values within float tolerance).

Goal: ours peak RSS <= 5 x largest tensor + 300 MB, and ours median wall <= mergekit's.

Run: ``.venv/bin/python bench/p13_merge.py [--quick] [--runs N]`` (needs ~5 GiB free under
``--data-dir``, default the system temp folder; ``--quick``: a ~1/4-size model).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from _common import header, human, med, parse_args, probe, scratch, table

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB, LAYERS = 2048, 5632, 16, 4, 32000, 3
QUICK = dict(HIDDEN=1024, FFN=2816, HEADS=8, KV_HEADS=2, VOCAB=32000, LAYERS=2)

MERGEKIT_YAML = """merge_method: ties
base_model: {base}
models:
  - model: {a}
    parameters: {{weight: 0.5, density: 0.5}}
  - model: {b}
    parameters: {{weight: 0.5, density: 0.5}}
out_dtype: float32
"""


def shapes(q: bool) -> dict[str, tuple[int, ...]]:
    h, f, heads, kvh, vocab, layers = (
        (QUICK[k] for k in ("HIDDEN", "FFN", "HEADS", "KV_HEADS", "VOCAB", "LAYERS"))
        if q
        else (HIDDEN, FFN, HEADS, KV_HEADS, VOCAB, LAYERS)
    )
    kv = h // heads * kvh
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "self_attn.q_proj.weight"] = (h, h)
        out[p + "self_attn.k_proj.weight"] = (kv, h)
        out[p + "self_attn.v_proj.weight"] = (kv, h)
        out[p + "self_attn.o_proj.weight"] = (h, h)
        out[p + "post_attention_layernorm.weight"] = (h,)
        out[p + "mlp.gate_proj.weight"] = (f, h)
        out[p + "mlp.up_proj.weight"] = (f, h)
        out[p + "mlp.down_proj.weight"] = (h, f)
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (vocab, h)
    return out


def write_models(d: Path, q: bool) -> tuple[dict[str, Path], int, int]:
    """base, a, b folders; returns (paths, bytes of one checkpoint, largest tensor bytes)."""
    import zlib

    import torch
    import transformers
    from safetensors.torch import save_file

    h, f, heads, kvh, vocab, layers = (
        (QUICK[k] for k in ("HIDDEN", "FFN", "HEADS", "KV_HEADS", "VOCAB", "LAYERS"))
        if q
        else (HIDDEN, FFN, HEADS, KV_HEADS, VOCAB, LAYERS)
    )
    cfg = transformers.LlamaConfig(
        hidden_size=h,
        intermediate_size=f,
        num_attention_heads=heads,
        num_key_value_heads=kvh,
        vocab_size=vocab,
        num_hidden_layers=layers,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
        torch_dtype="float32",
    )
    sh = shapes(q)
    paths = {}
    for label, noise_seed in (("base", None), ("a", 1), ("b", 2)):
        tensors = {}
        for name, shape in sh.items():
            key = zlib.crc32(name.encode())
            g = torch.Generator().manual_seed(key)
            norm = len(shape) == 1
            t = torch.ones(shape) if norm else torch.randn(shape, generator=g).mul_(0.02)
            if noise_seed is not None:
                gn = torch.Generator().manual_seed(key * 7 + noise_seed)
                t.add_(torch.randn(shape, generator=gn), alpha=0.01)
            tensors[name] = t
        p = d / label
        p.mkdir()
        cfg.save_pretrained(p)
        save_file(tensors, str(p / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        paths[label] = p
    one = (paths["base"] / "model.safetensors").stat().st_size
    largest = max(4 * _numel(s) for s in sh.values())
    return paths, one, largest


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def ours_cmd(paths: dict[str, Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "paramscope", "merge", "--method", "ties",
            "--base", str(paths["base"]), str(paths["a"]), str(paths["b"]),
            "--weights", "0.5,0.5", "--density", "0.5", "-o", str(out), "--json"]  # fmt: skip


def mergekit_cmd(cfg: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).parent / "mergekit-yaml"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "mergekit.scripts.run_yaml"]
    return [*head, str(cfg), str(out), "--device", "cpu", "--lazy-unpickle",
            "--no-copy-tokenizer", "--no-write-model-card", "--quiet"]  # fmt: skip


def compare(ours: Path, peer: Path) -> tuple[int, int, int, float]:
    """``(tensors, elements, elements differing, max |ours - peer|)``; asserts the same names,
    shapes and dtypes, and that at most one element in a million differs: TIES keeps the
    ``k`` largest ``|delta|``, and among fp32 deltas of equal magnitude at the k-th place
    (a few in a 32 M-element tensor) mergekit's unstable ``argsort`` and paramscope pick
    different ones (an unspecified tie-break; both keep exactly ``k``)."""
    import torch
    from safetensors import safe_open

    worst, elements, differ = 0.0, 0, 0
    with safe_open(str(ours), "pt") as fo, safe_open(str(peer), "pt") as fp:
        keys = sorted(fo.keys())
        assert keys == sorted(fp.keys()), "different tensor names"
        for name in keys:
            x, y = fo.get_tensor(name), fp.get_tensor(name)
            assert x.shape == y.shape and x.dtype == y.dtype, name
            worst = max(worst, (x - y).abs().max().item())
            differ += int((~torch.isclose(x, y, rtol=1e-5, atol=1e-6)).sum())
            elements += x.numel()
            del x, y
    assert differ <= elements // 10**6, (differ, elements, worst)
    return len(keys), elements, differ, worst


def main() -> None:
    def extra(p):
        p.set_defaults(data_dir=Path(tempfile.gettempdir()))

    args = parse_args(__doc__.splitlines()[0], default_runs=3, quick_runs=1, extra=extra)
    header("P13: ties merge of 3 x ~1 GiB fp32 checkpoints vs mergekit-yaml", args)
    free = shutil.disk_usage(args.data_dir).free
    need = (2 if args.quick else 6) * 2**30
    if free < need:
        raise SystemExit(f"{args.data_dir}: {human(free)} free, need {human(need)}")
    import mergekit  # noqa: F401  (fail early: the peer must be installed)

    with scratch(args, "p13-") as d:
        paths, one, largest = write_models(d, args.quick)
        print(f"   3 checkpoints of {human(one)}, largest tensor {human(largest)}")
        cfg = d / "ties.yml"
        cfg.write_text(MERGEKIT_YAML.format(**{k: str(v) for k, v in paths.items()}))
        ours_out, peer_out = d / "ours.safetensors", d / "peer"
        variants = {
            "ours: paramscope merge --method ties": ours_cmd(paths, ours_out),
            "peer: mergekit-yaml (cpu, lazy unpickle)": mergekit_cmd(cfg, peer_out),
        }
        if variants["ours: paramscope merge --method ties"][1] == "-c":
            print("   (the CLI has no `merge` yet: ours runs paramscope.merging.merge via -c)")
        names = list(variants)
        res: dict[str, list[dict]] = {n: [] for n in names}
        own = {names[0]: ours_out, names[1]: peer_out}
        for r in range(args.runs):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                if own[n].is_dir():
                    shutil.rmtree(own[n])
                elif own[n].is_file():
                    own[n].unlink()
                res[n].append(probe(variants[n]))
        count, elements, differ, worst = compare(ours_out, peer_out / "model.safetensors")
        print(
            f"   outputs agree: {count} tensors, {differ} of {elements:,} elements differ "
            f"(top-k tie-breaks), max |ours - mergekit| = {worst:.3e}"
        )
        if res[names[0]][-1]["out"].strip().startswith("{"):
            rep = json.loads(res[names[0]][-1]["out"])
            print(f"   ours reports {rep.get('entries')} entries, {rep.get('bytes')} bytes")

    wall = {n: [x["s"] for x in res[n]] for n in names}
    rss = {n: [x["kib"] * 1024 for x in res[n]] for n in names}
    ours, peer = names
    limit = 5 * largest + 300 * 10**6
    rows = [
        [n, f"{med(wall[n]):7.2f} s", f"{min(wall[n]):7.2f} s", f"{max(wall[n]):7.2f} s",
         human(max(rss[n])), f"{med(wall[peer]) / med(wall[n]):5.2f}x",
         f"{max(rss[peer]) / max(rss[n]):5.2f}x"]
        for n in names
    ]  # fmt: skip
    print()
    print(table(["variant", "median", "min", "max", "peak RSS", "peer/this wall",
                 "peer/this RSS"], rows))  # fmt: skip
    print(f"\n   limit: 5 x largest + 300 MB = {human(limit)}; total input {human(3 * one)}")
    ok_rss = max(rss[ours]) <= limit
    ok_wall = med(wall[ours]) <= med(wall[peer])
    print()
    print(
        f"VERDICT P13: {'PASS' if ok_rss and ok_wall else 'FAIL'} - ours peak RSS "
        f"{max(rss[ours]) / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB, "
        f"{'ok' if ok_rss else 'OVER'}), mergekit {max(rss[peer]) / 2**20:.0f} MiB; wall ours "
        f"{med(wall[ours]):.2f} s vs mergekit {med(wall[peer]):.2f} s "
        f"({med(wall[peer]) / med(wall[ours]):.2f}x, {'ok' if ok_wall else 'SLOWER'}), "
        f"n={args.runs}"
    )


if __name__ == "__main__":
    main()
