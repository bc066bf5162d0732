"""The ``sweep`` command: a grid of arguments of a model TARGET, every point built on meta and
counted. Registered on the one app of :mod:`._app` (imported there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from . import _output
from ._app import JsonOpt, TargetArg, app

__all__ = ["sweep"]


@dataclass
class _Csv:
    """The sweep's table as CSV (``--csv``); ``--json`` still prints the report's JSON."""

    report: Any

    def to_dict(self) -> Any:
        """The report's JSON.

        Returns:
            ``report.to_dict()``.
        """
        return self.report.to_dict()

    def to_text(self, width: int | None = None) -> str:
        """The CSV text.

        Args:
            width: unused.

        Returns:
            The CSV, without a final newline.
        """
        return self.report.to_csv().rstrip("\n")


@app.command()
def sweep(
    target: TargetArg,
    arg: Annotated[
        list[str] | None,
        typer.Option(
            "--arg",
            "-a",
            metavar="KEY=V1,V2,...",
            help="An argument and its values, comma-separated (each parsed as JSON, else a "
            "string); every combination is a point. One value: the same for every point. "
            "Repeatable.",
        ),
    ] = None,
    flops: Annotated[
        bool,
        typer.Option("--flops", help="Also FLOPs per token of one forward on meta (with --seq)."),
    ] = False,
    seq: Annotated[
        int | None,
        typer.Option(
            "--seq",
            min=1,
            help="Sequence length: token ids of batch × seq for --flops; training "
            "activations (--memory --train) or the KV cache of a seq-token context (--memory).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Sequences per forward.")] = 1,
    analytic: Annotated[
        bool,
        typer.Option("--analytic", help="--flops by Kaplan's formula from the config, no forward."),
    ] = False,
    memory: Annotated[
        bool, typer.Option("--memory", help="Also the memory estimate per GPU.")
    ] = False,
    train: Annotated[
        bool,
        typer.Option("--train", help="--memory for training (gradients, AdamW states)."),
    ] = False,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="--memory in this dtype: bf16, fp16, fp32…")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes building the points (default: one per CPU for measured FLOPs of "
            "16 points or more, else one).",
        ),
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Also write an offline HTML page with charts."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Build every point of a grid of arguments on meta and count it: parameters (total,
    trainable, active), FLOPs per token and memory when asked, and the closed form fitted
    for transformer families. A point that cannot be built is a row with its error."""
    from .._errors import ArgumentError
    from ..counting._sweep import parse_grid
    from ..counting._sweep import sweep as sweep_

    if csv and json:
        raise ArgumentError("sweep: --csv and --json both given: choose one")
    if analytic and not flops:
        raise ArgumentError("sweep: --analytic is a way of counting --flops: give --flops too")
    if train and not memory:
        raise ArgumentError("sweep: --train is for --memory: give --memory too")
    report = sweep_(
        target,
        parse_grid(arg or []),
        flops=flops,
        seq=seq,
        batch=batch,
        analytic=analytic,
        memory=memory,
        train=train,
        dtype=dtype,
        workers=workers,
    )
    result: Any = _Csv(report) if csv else report
    if output is not None:
        from ..reporting._sweep_html import write_sweep_html

        written = write_sweep_html(report, output)
        result = _output.Also(result, {"html": str(written)})
    _output.emit(result, json=json)
