"""``paramscope student``: a student with fewer blocks, initialised from a teacher's blocks,
embeddings and head (DistilBERT from BERT), written as a checkpoint and a spec that rebuilds
it. Registered on the one app of :mod:`._app` (imported there)."""

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
    blocks, embeddings and head), write it to OUTPUT with a spec beside it, and report the
    counts."""
    from .._targets import parse_args, resolve_target
    from ..merging._student import save_student, student_with_report

    kept = None if layers is None else _ints(layers)
    teacher = resolve_target(target, parse_args(arg or []), meta=False)
    if weights is not None and not isinstance(teacher, str):
        from ..lifecycle import load_into

        load_into(teacher, weights, strict=True)
    drops: list[str] = []
    for d in drop or []:
        drops += ["pooler", "token_type_embeddings"] if d == "distilbert" else [d]
    result = student_with_report(
        target if isinstance(teacher, str) else teacher, layers=kept, every=every, drop=drops
    )
    result.teacher, result.args, result.from_target = target, parse_args(arg or []), True
    if weights is not None:
        result.notes.append(
            f"the spec rebuilds the student from its own weights; {weights} is not needed"
        )
    written, spec_path = save_student(result, output, spec)
    result.notes.append(f"wrote {written} and {spec_path} (build_student({str(spec_path)!r}))")
    _output.emit(result, json=json)
