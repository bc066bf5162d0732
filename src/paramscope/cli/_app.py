"""The ``paramscope`` command line: a thin shell over the library.

Each command calls one library function and hands the result to one output sink; ``--json``
prints the same result as JSON. Data goes to stdout; errors go to stderr as one line, with
exit code 2 for bad input and 1 for internal errors (traceback with ``PARAMSCOPE_DEBUG=1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _output

__all__ = ["app"]

app = typer.Typer(
    name="paramscope",
    help="See, store, change and shrink deep-learning parameters.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
PathArg = Annotated[
    str,
    typer.Argument(
        metavar="PATH",
        help="A checkpoint: safetensors file, HF sharded folder or "
        "*.index.json, torch .pt/.bin, or .npz.",
    ),
]


@app.command()
def count(path: PathArg, json: JsonOpt = False) -> None:
    """Count parameters, trainable/frozen, buffers and bytes by dtype (ties once)."""
    from ..counting import count as count_

    result = count_(path).to_dict(depth=1)
    _output.emit_json(result) if json else _output.print_count(result)


@app.command()
def inspect(
    path: PathArg,
    depth: Annotated[
        int, typer.Option("--depth", "-d", min=0, help="Group names by this many leading segments.")
    ] = 1,
    filter: Annotated[
        str | None,
        typer.Option("--filter", "-f", help="Only names matching this glob (or re:REGEX)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Table of entries grouped by name prefix, with subtotals that add up to the total."""
    from ..counting import inspect as inspect_

    result = inspect_(path, depth=depth, pattern=filter).to_dict()
    _output.emit_json(result) if json else _output.print_inspect(result)


@app.command()
def verify(path: PathArg, json: JsonOpt = False) -> None:
    """Check header rules, index/shard agreement and stored hashes; exit 0 when sound, 2 if not."""
    from .._verify import verify as verify_

    report = verify_(path)
    result = report.to_dict()
    _output.emit_json(result) if json else _output.print_verify(result)
    if not report.ok:
        raise typer.Exit(2)


@app.command()
def example(
    path: Annotated[Path, typer.Argument(help="Where to write the example checkpoint.")] = Path(
        "paramscope-example.safetensors"
    ),
    json: JsonOpt = False,
) -> None:
    """Write an example checkpoint: the seed MLP 784→256→128→10, a BatchNorm, layer 0 frozen."""
    from .._example import write_example

    written = write_example(path)
    if json:
        _output.emit_json({"path": str(written)})
    else:
        print(f"wrote {written}")
