"""The ``paramscope`` command line: a thin shell over the library.

Each command calls one library function and hands the result to one output sink; ``--json``
prints the same result as JSON. Data goes to stdout; errors go to stderr as one line, with
exit code 2 for bad input and 3 for internal errors (traceback with ``PARAMSCOPE_DEBUG=1``);
1 is a negative verdict (``match``, ``diff``, ``verify``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from . import _output

__all__ = ["app"]


class _Group(TyperGroup):
    """The command group: an ``EOFError`` escaping a command is a file that ended early (bad
    input, exit 2), not click's ``Aborted!`` (exit 1), which is for an interrupted terminal."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the command, turning a stray ``EOFError`` into a :class:`ParamscopeError`.

        Args:
            ctx: click's context.

        Returns:
            What the command returns.
        """
        given = [a for a in ctx.args if not a.startswith("-")][:1] or ["input"]
        try:
            return super().invoke(ctx)
        except EOFError as exc:
            from .._errors import FormatError

            raise FormatError(
                given[0], f"the data ends before the format says it should ({exc or 'EOF'})"
            ) from None


app = typer.Typer(
    cls=_Group,
    name="paramscope",
    help="See, store, change and shrink deep-learning parameters.\n\nExit codes: 0 ok; "
    "1 a negative verdict (match: would not load cleanly, diff: differ, verify: not sound); "
    "2 bad input; 3 internal error.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.callback()
def _global_options(
    allow_download: Annotated[
        bool,
        typer.Option(
            "--allow-download",
            help="Sources given as URLs: let a server without range requests send whole files "
            "(else that is an error). Also anywhere after the command, or "
            "PARAMSCOPE_ALLOW_DOWNLOAD=1.",
        ),
    ] = False,
) -> None:
    """Options for every command (``paramscope.cli.main`` applies them before dispatch)."""
    if allow_download:  # (main() takes the flag out of argv first; kept for direct app use)
        from ..io._remote import allow_download as allow

        allow(True)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
PathArg = Annotated[
    str,
    typer.Argument(
        metavar="PATH",
        help="A checkpoint: safetensors file, HF sharded folder or "
        "*.index.json, torch .pt/.bin, or .npz.",
    ),
]
TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="A checkpoint (file or folder), zoo:NAME, package.module:callable, or an HF "
        "config.json. Models are built on the meta device: no memory, no download.",
    ),
]
ArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arg",
        "-a",
        help="key=value for a callable, zoo model or config (value parsed as JSON). Repeatable.",
    ),
]


def _target(target: str, args: list[str] | None) -> object:
    from .._targets import parse_args, resolve_target

    return resolve_target(target, parse_args(args or []))


def _countable(target: str, args: list[str] | None) -> object:
    """Like :func:`_target`, but a config.json of a family paramscope counts analytically
    becomes a Manifest (no torch, no transformers)."""
    from .._targets import parse_args, resolve_source

    return resolve_source(target, parse_args(args or []))


LoraOpt = Annotated[
    str | None,
    typer.Option(
        "--lora",
        metavar="r=R,alpha=A,targets=NAME[,NAME...]",
        help="Count a LoRA run: the base frozen, the adapters peft would add trainable "
        "(targets: module-name suffixes; or regex=RE matched against whole names).",
    ),
]


def _lora(spec: str | None) -> Any:
    if spec is None:
        return None
    from ..counting import LoraSpec

    return LoraSpec.parse(spec)


NonzeroOpt = Annotated[
    bool,
    typer.Option(
        "--nonzero",
        help="Also read the values and count the nonzeros of every parameter with zeros.",
    ),
]


def _shape(input_shape: str | None) -> tuple[int, ...] | None:
    """``--input-shape 1,3,224,224`` (or ``1x3x224x224``) as a tuple."""
    if input_shape is None:
        return None
    from .._errors import ArgumentError

    try:
        return tuple(int(s) for s in input_shape.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise ArgumentError(
            f"--input-shape {input_shape!r}: expected comma-separated sizes, e.g. 1,3,224,224"
        ) from None


@app.command()
def count(
    target: TargetArg,
    arg: ArgOpt = None,
    nonzero: NonzeroOpt = False,
    values: Annotated[
        bool,
        typer.Option(
            "--values",
            help="Also read the values and count parameters with the same shape, dtype and "
            "bytes once, as ties (DCP stores every name of a tie apart; an equal copy is "
            "merged too).",
        ),
    ] = False,
    lora: LoraOpt = None,
    json: JsonOpt = False,
) -> None:
    """Count parameters, trainable/frozen, buffers and bytes by dtype (ties once)."""
    from . import _count  # the same code `count TARGET [--json]` runs without typer

    extra = {"lora": _lora(lora)} if lora is not None else {}
    _count(target, json, arg, nonzero=nonzero, values=values, **extra)


@app.command()
def inspect(
    target: TargetArg,
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth",
            "-d",
            min=0,
            help="Checkpoints: group names by this many "
            "leading segments (default 1). Models: tree depth (default 2).",
        ),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            "-f",
            help="Only names (models: module paths) matching this glob (or re:REGEX).",
        ),
    ] = None,
    flops: Annotated[
        bool,
        typer.Option(
            "--flops",
            help="Models: a FLOPs column per module, measured on the meta device "
            "(with --seq or --input-shape).",
        ),
    ] = False,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape", help="With --flops: one float input, comma-separated: 1,3,224,224."
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="With --flops and --seq: batch of token ids.")
    ] = 1,
    seq: Annotated[
        int | None,
        typer.Option("--seq", min=1, help="With --flops: token ids of batch × seq."),
    ] = None,
    arg: ArgOpt = None,
    stats: Annotated[
        bool,
        typer.Option(
            "--stats",
            help="Checkpoints: weight statistics across depth (L2, std, max |w|, 6σ "
            "outliers, kurtosis, sparsity per tensor, streamed), a sparkline per tensor kind "
            "over the blocks, and the tensors that stand out.",
        ),
    ] = False,
    stat: Annotated[
        str,
        typer.Option("--stat", help="With --stats: the statistic the sparklines draw."),
    ] = "l2",
    spectral: Annotated[
        bool,
        typer.Option(
            "--spectral",
            help="Checkpoints: the power-law exponent alpha of each 2-D/conv weight's "
            "eigenvalue spectrum (as weightwatcher fits it), layers outside 2..6 flagged.",
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Checkpoints: entries grouped by prefix with subtotals (with --stats, weight statistics
    across depth). Models: the module tree, the by-type table, ties and shared modules, and
    each layer's formula (with --flops, the FLOPs of each module)."""
    from .._errors import ArgumentError
    from ..counting import inspect as inspect_
    from ..counting import summary

    if not flops and (input_shape is not None or seq is not None or batch != 1):
        raise ArgumentError("inspect: --seq, --input-shape and --batch need --flops")
    obj = _target(target, arg)
    if spectral:
        from ..reporting._spectral import spectral_stats

        if not isinstance(obj, str):
            raise ArgumentError(
                f"inspect {target}: --spectral reads weight values, and a model TARGET is "
                "built on the meta device without any: give a checkpoint"
            )
        _output.emit(spectral_stats(obj, select=filter), json=json)
        return
    if stats:
        from ..reporting._stats import STATS, weight_stats

        if not isinstance(obj, str):
            raise ArgumentError(
                f"inspect {target}: --stats reads weight values, and a model TARGET is built "
                "on the meta device without any: give a checkpoint"
            )
        if stat not in STATS:
            raise ArgumentError(f"inspect: --stat {stat!r}: expected one of {', '.join(STATS)}")
        _output.emit(_StatsView(weight_stats(obj, select=filter), stat), json=json)
        return
    if isinstance(obj, str):
        if flops:
            raise ArgumentError(
                f"inspect {target}: --flops needs a model TARGET (zoo:NAME, "
                "package.module:callable or a config.json); a checkpoint has no forward to run"
            )
        ins = inspect_(obj, depth=1 if depth is None else depth, pattern=filter)
        _output.emit(ins, json=json, stream=True)  # entries made as they are written
        return
    report = None
    if flops:
        from ..counting import flops as flops_

        report = flops_(obj, input_shape=_shape(input_shape), batch=batch, seq=seq)
    s = summary(obj, depth=2 if depth is None else depth, pattern=filter, flops=report)  # type: ignore[arg-type]
    s.total.source = target
    _output.emit(s, json=json)


class _StatsView:
    """A :class:`~paramscope.reporting._stats.StatsReport` whose text draws ``stat``."""

    def __init__(self, report: Any, stat: str) -> None:
        self.report, self.stat = report, stat

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict()  # type: ignore[no-any-return]

    def to_text(self, width: int | None = None) -> str:
        return self.report.to_text(width, stat=self.stat)  # type: ignore[no-any-return]


@app.command()
def memory(
    target: TargetArg,
    dtype: Annotated[
        str | None,
        typer.Option(help="Run dtype: bf16, fp16, fp32, fp8, int8, fp4 (default: as stored)."),
    ] = None,
    train: Annotated[
        bool, typer.Option("--train", help="Training: gradients and optimizer states.")
    ] = False,
    optimizer: Annotated[
        str, typer.Option(help="adamw, adam, sgd, sgd-momentum, adafactor.")
    ] = "adamw",
    mixed_precision: Annotated[
        bool,
        typer.Option("--mixed-precision", help="16-bit weights and grads, fp32 master and states."),
    ] = False,
    zero: Annotated[int, typer.Option("--zero", min=0, max=3, help="ZeRO stage 0-3.")] = 0,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs to shard over.")] = 1,
    lora: LoraOpt = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="Micro-batch (training) or sequences.")
    ] = 1,
    seq: Annotated[
        int | None,
        typer.Option("--seq", min=1, help="With --train: sequence length; adds activations."),
    ] = None,
    tp: Annotated[int, typer.Option("--tp", min=1, help="Tensor-parallel size.")] = 1,
    sp: Annotated[bool, typer.Option("--sp", help="Sequence parallelism (with --tp).")] = False,
    pp: Annotated[int, typer.Option("--pp", min=1, help="Pipeline stages.")] = 1,
    recompute: Annotated[
        str, typer.Option("--recompute", help="Activation recompute: none, selective, full.")
    ] = "none",
    flash: Annotated[
        bool, typer.Option("--flash", help="Flash attention (no s×s matrix kept).")
    ] = False,
    inference: Annotated[
        bool, typer.Option("--inference", help="Inference (the default without --train).")
    ] = False,
    context: Annotated[
        int | None,
        typer.Option("--context", min=1, help="Inference tokens per sequence: adds the KV cache."),
    ] = None,
    fit: Annotated[
        str | None,
        typer.Option(
            "--fit",
            help="Budget such as 80GB: longest context (or with --context the largest batch) "
            "whose KV cache fits next to the weights.",
        ),
    ] = None,
    measured: Annotated[
        bool,
        typer.Option(
            "--measured",
            help="Also run the model once on the meta device (forward, + backward with "
            "--train): the measured activation peak, its phase and the module holding the "
            "most (with --seq or --input-shape).",
        ),
    ] = False,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape", help="With --measured: one float input, comma-separated: 1,3,224,224."
        ),
    ] = None,
    arg: ArgOpt = None,
    json: JsonOpt = False,
) -> None:
    """Memory for weights, gradients, optimizer states and master weights, per GPU."""
    from ..counting import estimate_memory

    if not measured and input_shape is not None:
        from .._errors import ArgumentError

        raise ArgumentError("memory: --input-shape needs --measured")
    if measured and seq is None and input_shape is None:
        from .._errors import ArgumentError

        raise ArgumentError(
            "memory --measured: give --seq S (token ids of --batch × S) or --input-shape "
            "(one float input, e.g. 1,3,224,224)"
        )

    if inference and train:
        from .._errors import ArgumentError

        raise ArgumentError("memory: --inference and --train both given: choose one")
    est = estimate_memory(
        _countable(target, arg),
        dtype=dtype,
        training=train,
        optimizer=optimizer,
        mixed_precision=mixed_precision,
        zero_stage=zero,
        num_gpus=gpus,
        **({"lora": _lora(lora)} if lora is not None else {}),
        batch=batch,
        seq=None if measured and not train else seq,  # --measured alone: forward inputs
        tp=tp,
        sp=sp,
        pp=pp,
        recompute=recompute,
        flash=flash,
        context=context,
        fit=fit,
    )
    est.source = target
    if measured:
        from .._units import format_bytes
        from ..counting._memory_measured import measured_memory

        m = measured_memory(
            _target(target, arg),
            source=target,
            input_shape=_shape(input_shape),
            batch=batch,
            seq=seq,
            backward=train,
        )
        est.details["measured"] = m
        est.notes.append(
            f"measured activations, {m['method']}, inputs {', '.join(m['inputs'])}: peak "
            f"{format_bytes(m['peak'])} ({m['peak']:,} bytes) in {m['peak_phase']}; at the end "
            f"of forward {format_bytes(m['saved'])} alive, the most in module "
            f"{m['top_module'] or '(root)'!r} ({format_bytes(m['top_module_bytes'])})"
        )
        est.notes.extend(f"measured activations: {n}" for n in m["notes"])
    _output.emit(est, json=json)


@app.command()
def flops(
    target: TargetArg,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape", help="Shape of one float input, comma-separated: 1,3,224,224."
        ),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch of token ids.")] = 1,
    seq: Annotated[
        int | None,
        typer.Option("--seq", min=1, help="Sequence length: token ids of batch × seq."),
    ] = None,
    backward: Annotated[
        bool, typer.Option("--backward", help="Count forward + backward (measured).")
    ] = False,
    analytic: Annotated[
        bool,
        typer.Option("--analytic", help="No forward: Kaplan's formula from the config."),
    ] = False,
    train: Annotated[
        bool,
        typer.Option("--train", help="Analytic training FLOPs (3 × forward, ≈ 6·N·D)."),
    ] = False,
    tokens: Annotated[
        str | None,
        typer.Option("--tokens", help="Tokens D of a run for the analytic count, e.g. 2T."),
    ] = None,
    depth: Annotated[
        int | None, typer.Option("--depth", "-d", min=0, help="Tree depth shown (default 2).")
    ] = None,
    lora: LoraOpt = None,
    arg: ArgOpt = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse/--no-reuse",
            help="Count a repeated block identical to one already measured with its FLOPs "
            "(the default) or run every block.",
        ),
    ] = True,
    json: JsonOpt = False,
) -> None:
    """FLOPs and MACs (FLOPs = 2 × MACs) of a forward (and backward) run on the meta device,
    per module and per op, with every op that has no formula listed; or, with --analytic,
    --train or --tokens, Kaplan's transformer formula from the config."""
    from ..counting import flops as flops_

    report = flops_(
        _target(target, arg) if arg else target,
        input_shape=_shape(input_shape),
        batch=batch,
        seq=seq,
        backward=backward or train,
        depth=2 if depth is None else depth,
        analytic=analytic or train or tokens is not None,
        tokens=tokens,
        lora=_lora(lora),
        reuse=reuse,
    )
    report.source = target
    _output.emit(report, json=json)


@app.command()
def match(
    target: TargetArg,
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT", help="The checkpoint to check (read from its headers only)."
        ),
    ],
    remap: Annotated[
        list[str] | None,
        typer.Option(
            "--remap", help="REGEX=REPLACEMENT rename rule for checkpoint names. Repeatable."
        ),
    ] = None,
    fix_prefix: Annotated[
        bool,
        typer.Option("--fix-prefix", help="Consider an unambiguous module./model. prefix fix."),
    ] = False,
    arg: ArgOpt = None,
    json: JsonOpt = False,
) -> None:
    """Will CHECKPOINT load into TARGET? Missing, unexpected (with suggestions), shape
    mismatches and casts, changing nothing. Exit 0 when it would load cleanly, 1 if not."""
    from ..lifecycle import match as match_

    model = _target(target, arg)
    if isinstance(model, str):
        from .._errors import TargetError

        raise TargetError(
            f"{target}: match needs a model TARGET (zoo:, module:callable or "
            "config.json), found a checkpoint"
        )
    from .._names import parse_rules

    rules = parse_rules(remap, "--remap")  # the library's rule reading, one meaning
    report = match_(model, checkpoint, remap=rules or None, fix_prefix=fix_prefix)
    _output.emit(report, json=json)
    if not report.ok:
        raise typer.Exit(1)


SrcArg = Annotated[str, typer.Argument(metavar="SRC", help="The checkpoint to read.")]
DstArg = Annotated[str, typer.Argument(metavar="DST", help="The safetensors file to write.")]
SelectOpt = Annotated[
    list[str] | None,
    typer.Option("--select", help="Only entries matching this glob (or re:REGEX). Repeatable."),
]
SkipOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--skip", help="Leave entries matching this glob (or re:REGEX) alone. Repeatable."
    ),
]


@app.command()
def prune(
    src: SrcArg,
    dst: DstArg,
    amount: Annotated[
        float | None,
        typer.Option(help="Fraction of the selected weights to zero (not with --structure n:m)."),
    ] = None,
    scope: Annotated[str, typer.Option(help="global (one threshold) or layer.")] = "global",
    method: Annotated[str, typer.Option(help="l1 (smallest |w|) or random.")] = "l1",
    structure: Annotated[str | None, typer.Option(help="rows, channels or n:m.")] = None,
    n: Annotated[int, typer.Option("--n", help="Kept per group for n:m.")] = 2,
    m: Annotated[int, typer.Option("--m", help="Group size for n:m.")] = 4,
    select: SelectOpt = None,
    skip: SkipOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed for --method random.")] = None,
    json: JsonOpt = False,
) -> None:
    """Prune SRC into DST (streaming) and report per-tensor and total sparsity."""
    from ..compress import prune_file

    if amount is None and structure != "n:m":
        from .._errors import ArgumentError

        raise ArgumentError("prune: give --amount (e.g. --amount 0.5), or --structure n:m")
    report = prune_file(
        src,
        dst,
        amount,
        scope=scope,
        method=method,
        structure=structure,
        n=n,
        m=m,
        select=select or None,
        skip=skip or None,
        seed=seed,
        show_progress=False if json else None,
    )
    _output.emit(report, json=json)


@app.command()
def quantize(
    src: SrcArg,
    dst: DstArg,
    bits: Annotated[int, typer.Option(help="8 or 4 (4-bit values are packed two per byte).")] = 8,
    scheme: Annotated[str, typer.Option(help="symmetric or asymmetric.")] = "symmetric",
    granularity: Annotated[str, typer.Option(help="tensor or channel.")] = "channel",
    group_size: Annotated[
        int | None,
        typer.Option(help="Groups of this size along the last dim (overrides --granularity)."),
    ] = None,
    select: SelectOpt = None,
    skip: SkipOpt = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Also write the report of DST against SRC: SQNR and bits per weight across "
            "depth, the worst layers named (as `report DST --against SRC -o FILE`).",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Quantise SRC into a self-describing DST (streaming) with SQNR and error per tensor."""
    from ..compress import quantize_file

    report = quantize_file(
        src,
        dst,
        bits=bits,
        scheme=scheme,
        granularity=granularity,
        group_size=group_size,
        select=select or None,
        skip=skip or None,
        show_progress=False if json else None,
    )
    if html is not None:
        from ..reporting._html import display_name
        from ..reporting._html import report as report_

        page = report_(dst, html, title=display_name(dst, dst), against=src)
        _output.emit(_output.Also(report, {"html": str(page)}), json=json)
        return
    _output.emit(report, json=json)


@app.command()
def convert(
    src: SrcArg,
    dst: DstArg,
    dtype: Annotated[
        str | None, typer.Option(help="Cast floating entries: bf16, fp16, fp32…")
    ] = None,
    select: SelectOpt = None,
    rename: Annotated[
        list[str] | None,
        typer.Option("--rename", help="REGEX=REPLACEMENT rename rule. Repeatable, in order."),
    ] = None,
    shard_size: Annotated[
        str | None,
        typer.Option("--shard-size", help="Write HF shards of at most this size (e.g. 5GB)."),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="safetensors or dcp.")] = "safetensors",
    layout: Annotated[
        str | None,
        typer.Option(
            "--layout",
            help="Framework preset: flax-to-torch or keras-to-torch (kernel -> weight with "
            "torch's axis order, norm and embedding names); --rename rules apply after it.",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Convert SRC (safetensors, shards, .pt/.bin, .npz, DCP, ONNX, Keras, Flax, Orbax)
    into DST, streaming, atomically."""
    from .._convert import convert as convert_

    report = convert_(
        src,
        dst,
        dtype=dtype,
        select=select or None,
        rename=rename or None,
        max_shard_size=shard_size,
        format=format,
        show_progress=False if json else None,
        layout=layout,
    )
    _output.emit(report, json=json)


@app.command()
def zoo(json: JsonOpt = False) -> None:
    """List the built-in models with their parameter counts (built on the meta device)."""
    from ..building import zoo as zoo_

    _output.emit(zoo_.listing(), json=json)


@app.command()
def verify(
    path: PathArg,
    values: Annotated[
        bool,
        typer.Option(
            "--values", help="Also read every tensor and count NaN/Inf values (streaming)."
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Check header rules, index/shard agreement and stored hashes; exit 0 when sound, 1 if not."""
    from .._verify import verify as verify_

    report = verify_(path, values=values)
    _output.emit(report, json=json)
    if not report.ok:
        raise typer.Exit(1)  # a negative verdict: the checkpoint is not sound


@app.command()
def example(
    path: Annotated[Path, typer.Argument(help="Where to write the example checkpoint.")] = Path(
        "paramscope-example.safetensors"
    ),
    json: JsonOpt = False,
) -> None:
    """Write an example checkpoint: an MNIST MLP 784→256→128→10, a BatchNorm, layer 0 frozen."""
    from .._example import write_example

    _output.emit(_output.Wrote(str(write_example(path))), json=json)


@app.command()
def diff(
    a: Annotated[str, typer.Argument(metavar="A", help="The first checkpoint (file or folder).")],
    b: Annotated[str, typer.Argument(metavar="B", help="The second checkpoint (file or folder).")],
    values: Annotated[
        bool,
        typer.Option(
            "--values/--no-values",
            help="Compare values tensor by tensor (default), or the headers' structure only.",
        ),
    ] = True,
    atol: Annotated[
        float, typer.Option(min=0.0, help="Absolute tolerance: within it an entry is 'close'.")
    ] = 0.0,
    rtol: Annotated[
        float, typer.Option(min=0.0, help="Relative tolerance (to B): |a-b| <= atol + rtol*|b|.")
    ] = 0.0,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Also write the visual diff: the report of A against B (change across depth, "
            "treemap coloured by change), as `report A --against B -o FILE`.",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Compare two checkpoints: added, removed, renamed, shape/dtype/tie changes, and value
    differences (max |a-b|, relative L2, changed elements), with the per-layer change across
    depth as sparklines. Exit 0 when they are the same (entries within --atol/--rtol count as
    the same), 1 when they differ, 2 on bad input."""
    from .._diff import diff as diff_

    report = diff_(a, b, values=values, atol=atol, rtol=rtol)
    view = _output.Also(report, {"layers": None, "html": None})
    if values and not report.same:  # also a quantised A against its source: SQNR by layer
        from ..reporting._change import layer_changes

        layers = layer_changes(a, b)
        view.extra["layers"] = layers if layers.tensors else None
    if html is not None:
        from ..reporting._html import display_name
        from ..reporting._html import report as report_

        view.extra["html"] = str(report_(a, html, title=display_name(a, a), against=b))
    _output.emit(view, json=json)
    if not report.same:
        raise typer.Exit(1)


@app.command()
def diagram(
    target: TargetArg,
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="mermaid (stateDiagram-v2) or dot (Graphviz)."),
    ] = "mermaid",
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth", "-d", min=0, help="Module levels drawn nested; deeper ones as one state."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the diagram to FILE (atomically)."),
    ] = None,
    arg: ArgOpt = None,
) -> None:
    """Draw the parameter structure as a Mermaid or Graphviz diagram: modules nested, tensors
    with shape and count, ties and shared modules as edges, repeated blocks drawn once."""
    from .._atomic import atomic_write
    from ..reporting._diagram import diagram as diagram_

    text = diagram_(_target(target, arg), format=format, depth=depth)  # type: ignore[arg-type]
    if output is None:
        _output.emit(_output.Text(text))
        return
    with atomic_write(output) as f:
        f.write(text.encode("utf-8"))
    _output.emit(_output.Wrote(str(output)))


@app.command()
def report(
    target: TargetArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The HTML file to write (atomically)."),
    ],
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth",
            "-d",
            min=1,
            help="Treemap levels shown at once (default: the first with 8+ rectangles).",
        ),
    ] = None,
    no_values: Annotated[
        bool,
        typer.Option("--no-values", help="Do not read values (no histograms or zero counts)."),
    ] = False,
    flops: Annotated[
        bool,
        typer.Option(
            "--flops", help="Models: FLOPs per module in the treemap (with --seq or --input-shape)."
        ),
    ] = False,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape", help="With --flops: one float input, comma-separated: 1,3,224,224."
        ),
    ] = None,
    seq: Annotated[
        int | None,
        typer.Option(
            "--seq",
            min=1,
            help="Token ids of batch × seq for --flops; adds a training row with activations "
            "(and, without --context, a KV cache row) to the memory table.",
        ),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Micro-batch / sequences.")] = 1,
    context: Annotated[
        int | None,
        typer.Option("--context", min=1, help="Inference tokens per sequence: a KV cache row."),
    ] = None,
    stats: Annotated[
        bool,
        typer.Option(
            "--stats",
            help="Weight statistics across depth (L2, std, max |w|, outliers, kurtosis, "
            "sparsity per tensor kind over the block index); reads every value once.",
        ),
    ] = False,
    spectral: Annotated[
        bool,
        typer.Option(
            "--spectral",
            help="Spectral health: the power-law alpha of each weight matrix across depth, "
            "alpha outside 2..6 flagged.",
        ),
    ] = False,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="B",
            help="A second checkpoint: the per-layer change of TARGET against B "
            "(|A-B|/|B|, cosine, sign flips; SQNR and bits per weight for a quantised TARGET).",
        ),
    ] = None,
    title: Annotated[
        str | None,
        typer.Option("--title", help="The page title (default: the model's name)."),
    ] = None,
    arg: ArgOpt = None,
) -> None:
    """Write a self-contained offline HTML report: counts, memory, a zoomable treemap, ties,
    and a sortable tensor table with value histograms; with --stats, --spectral and --against
    charts across depth. Prints the path written."""
    from ..reporting._html import display_name
    from ..reporting._html import report as report_

    written = report_(
        _target(target, arg),
        output,
        depth=depth,
        values=not no_values,
        title=title or display_name(target, target),
        flops=flops,
        input_shape=_shape(input_shape),
        seq=seq,
        batch=batch,
        context=context,
        stats=stats,
        spectral=spectral,
        against=against,
    )
    _output.emit(_output.Wrote(str(written), verb=""))


from . import _merging, _shrinking, _student, _subnet, _sweep  # noqa: E402, F401 - register commands
