"""``paramscope shrink``: physical structured pruning of a model TARGET into a smaller
checkpoint (and, for plain ``torch.nn`` stacks, the smaller architecture as a build spec).
Registered on the one app of :mod:`._app` (imported there)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import _output
from ._app import ArgOpt, JsonOpt, _shape, app

__all__: list[str] = []


WeightsOpt = Annotated[
    str | None,
    typer.Option(help="A checkpoint to load into the TARGET first (strict)."),
]
InputShapeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        help="Example input (seeded noise) for shapes and the output deviation: 1,3,224,224.",
    ),
]
SeqOpt = Annotated[
    int | None, typer.Option("--seq", min=1, help="Example token ids of 1 × seq instead.")
]
SpecOpt = Annotated[
    str | None,
    typer.Option(
        "--spec",
        help="Also write the smaller model's architecture as a build spec (JSON; plain "
        "torch.nn layers only).",
    ),
]


def _write_spec(model: Any, spec: str, notes: list[str]) -> None:
    """Write ``model``'s architecture as a build spec to ``spec`` (atomically), and say so."""
    import json

    from .._atomic import atomic_write
    from ..building import model_spec

    text = json.dumps(model_spec(model), indent=2)
    with atomic_write(spec) as f:
        f.write(text.encode("utf-8"))
    notes.append(f"wrote the architecture to {spec} (paramscope.build({spec!r}))")


def _model(target: str, args: list[str] | None, weights: str | None) -> Any:
    """The TARGET built with values: zoo / callable / config.json on the CPU with their own
    initialisation (then ``weights`` loaded strictly), or an MLP/CNN checkpoint rebuilt by
    ``infer_model``."""
    from .._errors import TargetError
    from .._targets import parse_args, resolve_target

    model = resolve_target(target, parse_args(args or []), meta=False)
    if isinstance(model, str):
        from ..building import infer_model

        if weights is not None:
            raise TargetError(
                f"{target}: is a checkpoint already; --weights loads values into a model "
                "TARGET (zoo:, package.module:callable, config.json)"
            )
        return infer_model(model)
    if weights is not None:
        from ..lifecycle import load_into

        load_into(model, weights, strict=True)
    return model


def _inputs(model: Any, input_shape: str | None, seq: int | None) -> Any:
    """Example inputs for the deviation and for shapes: a seeded float tensor, or token ids."""
    import torch

    g = torch.Generator().manual_seed(0)
    shape = _shape(input_shape)
    if shape is not None:
        return torch.randn(shape, generator=g)
    if seq is not None:
        vocab = next(
            (m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)), 2
        )
        return torch.randint(0, vocab, (1, seq), generator=g)
    return None


@app.command()
def shrink(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="A model: zoo:NAME, package.module:callable or an HF config.json (built with "
            "values), or an MLP/CNN checkpoint (rebuilt by infer_model).",
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The .safetensors file of the smaller model.")
    ],
    amount: Annotated[
        float | None,
        typer.Option(help="Fraction of the units of each selected group to remove."),
    ] = None,
    target_params: Annotated[
        int | None,
        typer.Option(
            "--target-params", min=1, help="Remove units until at most this many parameters."
        ),
    ] = None,
    unit: Annotated[
        str, typer.Option(help="channels (conv), neurons (linear), heads or layers.")
    ] = "channels",
    importance: Annotated[str, typer.Option(help="l1 or l2 norm of each unit.")] = "l1",
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select",
            help="Only layers (module names) matching this glob (or re:REGEX): the producing "
            "conv / linear, the attention module, or the block. Repeatable.",
        ),
    ] = None,
    weights: WeightsOpt = None,
    input_shape: InputShapeOpt = None,
    seq: SeqOpt = None,
    spec: SpecOpt = None,
    arg: ArgOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove channels, neurons, attention heads or whole layers (traced dependencies: every
    consumer follows), write the smaller model to OUTPUT and report exact counts."""
    from .._errors import ArgumentError
    from ..compress import shrink as shrink_
    from ..io import save

    if (amount is None) == (target_params is None):
        raise ArgumentError("shrink: give exactly one of --amount and --target-params")
    model = _model(target, arg, weights)
    report = shrink_(
        model,
        amount,
        target_params=target_params,
        unit=unit,
        importance=importance,
        select=select or None,
        example_inputs=_inputs(model, input_shape, seq),
    )
    if spec is not None:
        _write_spec(report.model, spec, report.notes)
    save(report.model, output)
    report.notes.append(f"wrote {output}")
    _output.emit(report, json=json)
