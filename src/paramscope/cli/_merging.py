"""The commands that make new parameters from several models: ``merge``, ``lora count | merge
| extract`` and ``factorize``. Registered on the one app of :mod:`._app` (imported there)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import _output
from ._app import JsonOpt, SelectOpt, _Group, app

__all__ = ["lora_app"]

OutOpt = Annotated[
    str | None,
    typer.Option(
        "--output", "-o", help="The .safetensors file to write (a folder with --shard-size)."
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard-size", help="Write HF shards of at most this size (e.g. 5GB)."),
]
DTypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="Output dtype of floating entries: bf16, fp16, fp32…")
]


def _is_spec(path: str) -> bool:
    p = path.lower()
    return p.endswith((".yaml", ".yml")) or (p.endswith(".json") and not p.endswith("index.json"))


@app.command()
def merge(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCES...",
            help="The checkpoints to merge (files or HF folders), or one YAML/JSON spec "
            "(paramscope's keys or a mergekit configuration).",
        ),
    ],
    output: OutOpt = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="linear, slerp, task_arithmetic, ties, dare_linear or dare_ties (default linear)."
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(help="The base model (delta methods; slerp's model at t=0)."),
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="One weight per source, comma-separated: 0.5,0.5.")
    ] = None,
    density: Annotated[
        str | None,
        typer.Option(help="ties / dare: fraction of each delta kept (one, or one per source)."),
    ] = None,
    t: Annotated[
        float | None, typer.Option("--t", help="slerp: 0 = first model, 1 = second.")
    ] = None,
    scale: Annotated[
        float | None, typer.Option(help="Multiply the merged delta (mergekit's lambda).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="dare: seed of the drop masks.")] = None,
    normalize: Annotated[
        bool | None,
        typer.Option(
            "--normalize/--no-normalize",
            help="Divide by the sum of weights (default: linear and ties yes, others no).",
        ),
    ] = None,
    rescale: Annotated[
        str | None,
        typer.Option(help="dare: density (1/density, default), l1 (mergekit's) or none."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="PATTERN:KEY=VALUE[,KEY=VALUE]",
            help="Per-tensor settings for names matching a glob or re:REGEX, e.g. "
            "'lm_head.*:weight=0'; keys method, t, density, weight, weights, scale, normalize. "
            "Repeatable; later rules win.",
        ),
    ] = None,
    missing: Annotated[
        str | None,
        typer.Option(help="Entries only some models hold: error, base, first, skip or present."),
    ] = None,
    dtype: DTypeOpt = None,
    shard_size: ShardOpt = None,
    json: JsonOpt = False,
) -> None:
    """Merge checkpoints tensor by tensor (streaming, architecture-free) into OUTPUT, with a
    report: cosine of each model to the result, sign conflicts, density kept, norm ratio."""
    from .._errors import ArgumentError
    from ..merging import merge as merge_
    from ..merging import read_merge_spec

    kwargs: dict[str, Any] = {}
    if len(sources) == 1 and _is_spec(sources[0]):
        kwargs = read_merge_spec(sources[0])
    else:
        kwargs["sources"] = list(sources)
    given = {
        "method": method,
        "base": base,
        "weights": weights,
        "density": density,
        "t": t,
        "scale": scale,
        "seed": seed,
        "normalize": normalize,
        "missing": missing,
        "dtype": dtype,
        "max_shard_size": shard_size,
        "dst": output,
    }
    kwargs.update({k: v for k, v in given.items() if v is not None})
    if set_:
        kwargs["overrides"] = [*kwargs.get("overrides", []), *set_]
    if rescale is not None:
        kwargs["rescale"] = None if rescale.lower() == "none" else rescale
    if isinstance(kwargs.get("density"), str):
        parts = [p for p in kwargs["density"].split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ArgumentError(
                f"merge: --density {kwargs['density']!r}: expected a number or one per source"
            ) from None
        kwargs["density"] = values[0] if len(values) == 1 else values
    if kwargs.get("dst") is None:
        raise ArgumentError("merge: give the output with -o/--output (or 'output:' in the spec)")
    report = merge_(**kwargs, show_progress=False if json else None)
    _output.emit(report, json=json)


lora_app = typer.Typer(
    cls=_Group,
    help="LoRA adapters (peft folders): count, merge into the base, extract from a fine-tune.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(lora_app, name="lora")


@lora_app.command("count")
def lora_count(
    adapter: Annotated[
        str,
        typer.Argument(metavar="ADAPTER", help="A peft adapter folder (or its tensor file)."),
    ],
    json: JsonOpt = False,
) -> None:
    """Count an adapter's parameters and list the base modules it adapts."""
    from ..merging import read_adapter

    _output.emit(read_adapter(adapter), json=json)


@lora_app.command("merge")
def lora_merge(
    base: Annotated[str, typer.Argument(metavar="BASE", help="The base checkpoint.")],
    adapter: Annotated[str, typer.Argument(metavar="ADAPTER", help="The peft adapter folder.")],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="The .safetensors file to write (a folder with --shard-size)."
        ),
    ],
    dtype: DTypeOpt = None,
    shard_size: ShardOpt = None,
    json: JsonOpt = False,
) -> None:
    """Fold ADAPTER into BASE (W + scaling·B·A, peft's conventions), streaming, into OUTPUT."""
    from ..merging import lora_merge as lora_merge_

    report = lora_merge_(
        base,
        adapter,
        output,
        dtype=dtype,
        max_shard_size=shard_size,
        show_progress=False if json else None,
    )
    _output.emit(report, json=json)


@lora_app.command("extract")
def lora_extract(
    base: Annotated[str, typer.Argument(metavar="BASE", help="The base checkpoint.")],
    finetuned: Annotated[str, typer.Argument(metavar="FINETUNED", help="The fine-tuned one.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The adapter folder to write (peft layout).")
    ],
    rank: Annotated[int | None, typer.Option(min=1, help="The rank of every adapter.")] = None,
    energy: Annotated[
        float | None,
        typer.Option(help="Per layer, the smallest rank keeping this fraction of Σσ² (0-1]."),
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="lora_alpha (default: the rank, scaling 1).")
    ] = None,
    select: SelectOpt = None,
    json: JsonOpt = False,
) -> None:
    """Extract a peft-loadable LoRA adapter from FINETUNED − BASE by truncated SVD per weight,
    with the relative error of each."""
    from ..merging import lora_extract as lora_extract_

    report = lora_extract_(
        base,
        finetuned,
        output,
        rank=rank,
        energy=energy,
        alpha=alpha,
        select=select or None,
        show_progress=False if json else None,
    )
    _output.emit(report, json=json)


@app.command()
def factorize(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The checkpoint to read.")],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="The .safetensors file to write (a folder with --shard-size)."
        ),
    ],
    rank: Annotated[
        int | None, typer.Option(min=1, help="The rank of every factorised layer.")
    ] = None,
    energy: Annotated[
        float | None,
        typer.Option(help="Per layer, the smallest rank keeping this fraction of Σσ² (0-1]."),
    ] = None,
    select: SelectOpt = None,
    shard_size: ShardOpt = None,
    json: JsonOpt = False,
) -> None:
    """Replace Linear weights by two low-rank factors (truncated SVD): M.weight becomes
    M.0.weight and M.1.weight; layers where that saves nothing are skipped and listed."""
    from ..merging import factorize as factorize_

    report = factorize_(
        src,
        rank=rank,
        energy=energy,
        select=select or None,
        dst=output,
        max_shard_size=shard_size,
        show_progress=False if json else None,
    )
    _output.emit(report, json=json)
