"""``paramscope subnet``: one sub-network of a supernet TARGET (fewer blocks, narrower layers)
written as a checkpoint (and, for plain ``torch.nn`` stacks, a build spec), or only counted.
Registered on the one app of :mod:`._app` (imported there)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import _output
from ._app import ArgOpt, JsonOpt, app
from ._shrinking import InputShapeOpt, SeqOpt, SpecOpt, WeightsOpt

__all__: list[str] = []


def _number(text: str, what: str) -> int | float:
    """``"32"`` → 32 (a count), ``"0.5"`` → 0.5 (a ratio)."""
    from .._errors import ArgumentError

    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ArgumentError(f"{what}: {text!r}: expected a count (32) or a ratio (0.5)") from None


def _depth(items: list[str] | None) -> Any:
    """``--depth 0,2,4`` (one stack) or ``--depth layer1=2 --depth layer3=0,2,4``."""
    from .._errors import ArgumentError

    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        parts = [p for p in items[0].split(",") if p.strip()]
        if len(parts) == 1 and not items[0].strip().endswith(","):
            return _number(parts[0].strip(), "--depth")
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ArgumentError(
                f"--depth {items[0]!r}: expected block indices (0,2,4), a count or STACK=VALUE"
            ) from None
    out: dict[str, Any] = {}
    for item in items:
        stack, eq, value = item.partition("=")
        if not eq or not stack.strip() or not value.strip():
            raise ArgumentError(
                f"--depth {item!r}: expected STACK=INDICES (layer3=0,2,4), STACK=COUNT or "
                "STACK=RATIO; several stacks need one --depth each"
            )
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if len(parts) == 1 and not value.strip().endswith(","):
            out[stack.strip()] = _number(parts[0], f"--depth {stack.strip()}")
        else:
            try:
                out[stack.strip()] = [int(p) for p in parts]
            except ValueError:
                raise ArgumentError(
                    f"--depth {item!r}: expected block indices such as {stack.strip()}=0,2,4"
                ) from None
    return out


def _width(items: list[str] | None) -> dict[str, int | float] | None:
    """``--width 'layer*.conv1=0.5' --width fc1=64``."""
    from .._errors import ArgumentError

    if not items:
        return None
    out: dict[str, int | float] = {}
    for item in items:
        glob, eq, value = item.rpartition("=")
        if not eq or not glob.strip():
            raise ArgumentError(
                f"--width {item!r}: expected GLOB=RATIO ('layer*.conv1=0.5') or GLOB=COUNT"
            )
        out[glob.strip()] = _number(value.strip(), f"--width {glob.strip()}")
    return out


@app.command()
def subnet(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="The supernet: zoo:NAME, package.module:callable or an HF config.json (built "
            "with values), or an MLP/CNN checkpoint (rebuilt by infer_model).",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="The .safetensors file of the sub-network (else: count only)."
        ),
    ] = None,
    depth: Annotated[
        list[str] | None,
        typer.Option(
            "--depth",
            help="Kept blocks: 0,2,4 (one stack) or a count; or STACK=0,2,4 / STACK=COUNT / "
            "STACK=RATIO, repeatable.",
        ),
    ] = None,
    keep_ratio: Annotated[
        float | None,
        typer.Option("--keep-ratio", help="Instead of --depth: the fraction of every stack kept."),
    ] = None,
    width: Annotated[
        list[str] | None,
        typer.Option(
            "--width",
            help="GLOB=RATIO or GLOB=COUNT: the outputs a layer keeps (consumers follow). "
            "Repeatable.",
        ),
    ] = None,
    importance: Annotated[
        str, typer.Option(help="order (the first units and blocks), l1 or l2.")
    ] = "order",
    weights: WeightsOpt = None,
    input_shape: InputShapeOpt = None,
    seq: SeqOpt = None,
    spec: SpecOpt = None,
    arg: ArgOpt = None,
    json: JsonOpt = False,
) -> None:
    """Build one sub-network of a supernet (kept blocks, narrower layers; traced dependencies:
    every consumer follows), write it to OUTPUT and report the counts before and after."""
    from ..compress._subnet import subnet as subnet_
    from ..io import save
    from ._shrinking import _inputs, _model, _write_spec

    model = _model(target, arg, weights)
    small, report = subnet_(
        model,
        depth=_depth(depth),
        keep_ratio=keep_ratio,
        width=_width(width),
        importance=importance,
        share=False,
        example_inputs=_inputs(model, input_shape, seq),
    )
    if spec is not None:
        _write_spec(small, spec, report.notes)
    if output is not None:
        save(small, output)
        report.notes.append(f"wrote {output}")
    _output.emit(report, json=json)
