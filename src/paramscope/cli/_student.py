"""``paramscope student``: a student with fewer blocks (and optionally narrower), initialised
from a teacher's blocks, embeddings and head (DistilBERT from BERT), written as a checkpoint
and a spec that rebuilds it. Registered on the one app of :mod:`._app` (imported there)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import _output
from ._app import ArgOpt, JsonOpt, app

__all__: list[str] = []


def _ints(text: str) -> list[int]:
    from .._errors import ArgumentError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ArgumentError(
            f"student: --layers {text!r}: expected comma-separated block indices, e.g. 0,2,4"
        ) from None


def _width(text: str) -> dict[str, int] | float:
    """``--width``: ``0.5`` (a ratio) or ``hidden_size=384,num_attention_heads=6``."""
    from .._errors import ArgumentError

    text = text.strip()
    if "=" not in text:
        try:
            return float(text)
        except ValueError:
            raise ArgumentError(
                f"student: --width {text!r}: expected a ratio such as 0.5 or sizes such as "
                "hidden_size=384,intermediate_size=1536,num_attention_heads=6"
            ) from None
    out: dict[str, int] = {}
    for pair in text.split(","):
        key, sep, raw = pair.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = int(raw)
        except ValueError:
            raise ArgumentError(
                f"student: --width {text!r}: {pair.strip()!r}: expected key=int, e.g. "
                "hidden_size=384"
            ) from None
    return out


@app.command()
def student(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="The teacher: zoo:NAME, package.module:callable or an HF config.json (built "
            "with values; --weights loads its checkpoint).",
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The .safetensors file of the student.")
    ],
    layers: Annotated[
        str | None,
        typer.Option(help="The teacher's blocks to keep, comma-separated: 0,2,4,6,8,10."),
    ] = None,
    every: Annotated[
        int | None, typer.Option(help="Instead of --layers: keep blocks 0, k, 2k, …")
    ] = None,
    width: Annotated[
        str | None,
        typer.Option(
            help="A narrower student too: config sizes, e.g. hidden_size=384,"
            "intermediate_size=1536,num_attention_heads=6 (GPT-2: n_embd, n_inner, n_head), "
            "or a ratio in (0, 1] such as 0.5 (hidden, intermediate and head counts; heads "
            "keep their width). Weights by consistent selection: the first indices of each "
            "narrowed dimension, the same in every tensor.",
        ),
    ] = None,
    select: Annotated[
        str,
        typer.Option(
            help="With --width: 'first' (the first k of each narrowed dimension) or 'l1' (the "
            "MLP units with the largest L1 norm, chosen in each block; needs the teacher's "
            "values).",
        ),
    ] = "first",
    drop: Annotated[
        list[str] | None,
        typer.Option(
            "--drop",
            help="A submodule to remove (full name or last part), e.g. pooler; 'distilbert' "
            "drops pooler and token_type_embeddings. Repeatable.",
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="The teacher's checkpoint, loaded into the TARGET first (strict)."),
    ] = None,
    spec: Annotated[
        str | None,
        typer.Option(
            "--spec",
            help="Where to write the spec that rebuilds the student (default: "
            "OUTPUT with the suffix .json).",
        ),
    ] = None,
    arg: ArgOpt = None,
    json: JsonOpt = False,
) -> None:
    """Make a student of TARGET with fewer blocks (initialised from the teacher's chosen
    blocks, embeddings and head), optionally narrower (--width), write it to OUTPUT with a
    spec beside it, and report the counts."""
    from .._targets import parse_args, resolve_target
    from ..merging._student import save_student, student_with_report

    kept = None if layers is None else _ints(layers)
    widths = None if width is None else _width(width)
    teacher = resolve_target(target, parse_args(arg or []), meta=False)
    if weights is not None and not isinstance(teacher, str):
        from ..lifecycle import load_into

        load_into(teacher, weights, strict=True)
    drops: list[str] = []
    for d in drop or []:
        drops += ["pooler", "token_type_embeddings"] if d == "distilbert" else [d]
    result = student_with_report(
        target if isinstance(teacher, str) else teacher,
        layers=kept,
        every=every,
        width=widths,
        select=select,
        drop=drops,
    )
    result.teacher, result.args, result.from_target = target, parse_args(arg or []), True
    if weights is not None:
        result.notes.append(
            f"the spec rebuilds the student from its own weights; {weights} is not needed"
        )
    written, spec_path = save_student(result, output, spec)
    result.notes.append(f"wrote {written} and {spec_path} (paramscope.build({str(spec_path)!r}))")
    _output.emit(result, json=json)
