"""factorize: replace Linear layers by two thin Linears from a truncated SVD, model or file.

A weight ``W`` (``out × in``) with singular values ``s`` becomes ``W ≈ B @ A`` with
``A = sqrt(S_r) V_rᵀ`` (``r × in``, the first Linear) and ``B = U_r sqrt(S_r)`` (``out × r``,
the second Linear, which keeps the bias): the singular values are split as square roots on
both sides, so both factors have the same scale. A layer is worth factorising only while
``r·(in+out) < in·out``; the others are left as they are and listed, with the reason, in the
report.

Two targets:

* an ``nn.Module``: a deep copy is made (the caller's model is never changed) and every chosen
  ``nn.Linear`` (and transformers' GPT-2 ``Conv1D``, whose weight is stored ``in × out``)
  becomes ``nn.Sequential(nn.Linear(in, r, bias=False), nn.Linear(r, out))``: state-dict names
  ``M.0.weight``, ``M.1.weight``, ``M.1.bias``.
* a checkpoint path: entries are streamed (one tensor at a time) into ``dst``, with the same
  names as the factorised model's state dict, so the file loads into it strictly.

The SVD is computed in float32 (float64 stays float64) and the factors are cast back to the
weight's dtype; errors and kept energy are those of the float computation, before that cast.
The SVD, the choice of ``torch.svd_lowrank`` (a fixed rank far below the side of a large
matrix) and the way its numbers are measured are :mod:`._lowrank`'s, shared with
``lora_extract``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, EntryError, TargetError
from .._names import Pattern, compile_pattern
from .._outputs import output_deviation
from ._lowrank import (
    LowRank,
    conv1d_model,
    conv1d_name,
    rank_for_energy,
    singular_squares,
    truncated_svd,
)

if TYPE_CHECKING:
    import torch

__all__ = ["FactorizeReport", "factorize"]

#: Name fragments of embedding tables, left alone by the default selection of a checkpoint.
_EMBEDDING_HINTS = ("embed", "wte", "wpe")


@dataclass
class FactorizeReport:
    """What :func:`factorize` did, per layer and in total.

    Attributes:
        source: the checkpoint read, or ``None`` for a module.
        output: the file or folder written, or ``None``.
        rank: the rank asked for (``None`` when chosen by energy).
        energy: the energy fraction asked for (``None`` when a rank was given).
        layers: one dict per factorised layer: ``name, kind, in, out, rank, params_before,
            params_after, rel_error, energy_kept, method`` (``kind``: ``Linear``, ``Conv1D``
            or ``entry`` for a checkpoint; ``method``: ``svd`` or ``svd_lowrank``).
        skipped: ``{"name", "reason"}`` for every chosen layer left as it was.
        totals: ``params_before, params_after, saved, saved_fraction, layers, skipped``
            over the whole model or checkpoint.
        deviation: with ``example_inputs``: ``{"max_abs", "relative"}`` of the new model's
            output against the old one's; else ``None``.
        notes: what else there is to know.
        model: the factorised model (``None`` for a checkpoint); not part of :meth:`to_dict`.

    Example:
        >>> r = FactorizeReport(rank=2)
        >>> r.totals["saved"], r.layers
        (0, [])
    """

    source: str | None = None
    output: str | None = None
    rank: int | None = None
    energy: float | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=lambda: _totals(0, 0, 0, 0))
    deviation: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``paramscope factorize --json`` prints).

        Returns:
            Plain dicts and lists: ``source, output, rank, energy, layers, skipped, totals,
            deviation, notes`` (the model is left out).

        Example:
            >>> list(FactorizeReport(energy=0.9).to_dict())[:4]
            ['source', 'output', 'rank', 'energy']
        """
        return {
            "source": self.source,
            "output": self.output,
            "rank": self.rank,
            "energy": self.energy,
            "layers": [dict(x) for x in self.layers],
            "skipped": [dict(x) for x in self.skipped],
            "totals": dict(self.totals),
            "deviation": None if self.deviation is None else dict(self.deviation),
            "notes": list(self.notes),
        }

    def to_text(self, width: int | None = None, *, limit: int = 40) -> str:
        """The human form ``paramscope factorize`` prints: one row per layer, the skipped
        layers with their reasons, the totals, the output deviation, the notes.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.
            limit: at most this many layer rows and skipped lines (the rest are counted).

        Returns:
            The text, without a final newline; names are escaped for a terminal.

        Example:
            >>> r = FactorizeReport(rank=2)
            >>> r.layers.append({"name": "fc", "kind": "Linear", "in": 8, "out": 8, "rank": 2,
            ...     "params_before": 72, "params_after": 40, "rel_error": 0.5,
            ...     "energy_kept": 0.75, "method": "svd"})
            >>> r.totals = _totals(72, 40, 1, 0)
            >>> print(r.to_text())
            layer  in  out  rank  before  after  rel error  energy
            fc      8    8     2      72     40    0.50000   75.0%
            total: 72 -> 40 parameters, 32 saved (44.4%), 1 layer(s) factorised, 0 skipped
        """
        from .._tables import aligned
        from .._text import printable_tree
        from .._units import format_count, format_percent

        d = printable_tree(self.to_dict())
        lines: list[str] = []
        if d["source"] is not None:
            lines.append(f"{d['source']} -> {d['output']}")
        rows = [
            [
                x["name"],
                str(x["in"]),
                str(x["out"]),
                str(x["rank"]),
                format_count(x["params_before"]),
                format_count(x["params_after"]),
                f"{x['rel_error']:.5f}",
                format_percent(x["energy_kept"]),
            ]
            for x in d["layers"][:limit]
        ]
        if rows:
            header = ["layer", "in", "out", "rank", "before", "after", "rel error", "energy"]
            lines += aligned(header, rows)
        if len(d["layers"]) > limit:
            lines.append(f"… {len(d['layers']) - limit} more layer(s)")
        for x in d["skipped"][:limit]:
            lines.append(f"skipped {x['name']}: {x['reason']}")
        if len(d["skipped"]) > limit:
            lines.append(f"… {len(d['skipped']) - limit} more skipped")
        t = d["totals"]
        lines.append(
            f"total: {format_count(t['params_before'])} -> {format_count(t['params_after'])} "
            f"parameters, {format_count(t['saved'])} saved "
            f"({format_percent(t['saved'], t['params_before'])}), {t['layers']} layer(s) "
            f"factorised, {t['skipped']} skipped"
        )
        if d["deviation"] is not None:
            dev = d["deviation"]
            lines.append(
                f"output deviation: max abs {dev['max_abs']:.3g}, relative {dev['relative']:.3g}"
            )
        lines += [f"note: {n}" for n in d["notes"]]
        return "\n".join(lines)


def _totals(before: int, after: int, layers: int, skipped: int) -> dict[str, Any]:
    return {
        "params_before": before,
        "params_after": after,
        "saved": before - after,
        "saved_fraction": (before - after) / before if before else 0.0,
        "layers": layers,
        "skipped": skipped,
    }


# ------------------------------------------------------------------------------------- SVD
def _no_saving(r: int, n_in: int, n_out: int) -> str | None:
    """The skip reason when rank ``r`` saves no parameters, else ``None``."""
    if r * (n_in + n_out) < n_in * n_out:
        return None
    return (
        f"rank {r}: r*(in+out) = {r * (n_in + n_out)} >= in*out = {n_in * n_out}, no "
        f"parameters saved (needs rank < {n_in * n_out / (n_in + n_out):.1f})"
    )


# ---------------------------------------------------------------------------------- options
def _check_options(rank: object, energy: object) -> tuple[int | None, float | None]:
    if (rank is None) == (energy is None):
        raise ArgumentError(
            f"factorize: rank={rank!r}, energy={energy!r}: expected exactly one of them "
            "(a rank for every layer, or the fraction of squared singular values to keep)"
        )
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ArgumentError(f"factorize: rank={rank!r}: expected an integer >= 1")
        return rank, None
    if isinstance(energy, bool) or not isinstance(energy, (int, float)):
        raise ArgumentError(f"factorize: energy={energy!r}: expected a number in (0, 1]")
    e = float(energy)
    if not 0.0 < e <= 1.0:
        raise ArgumentError(f"factorize: energy={energy!r}: expected 0 < energy <= 1")
    return None, e


# ------------------------------------------------------------------------------------ API
def factorize(
    target: Any,
    *,
    rank: int | None = None,
    energy: float | None = None,
    select: Pattern | None = None,
    dst: str | os.PathLike[str] | None = None,
    example_inputs: Any = None,
    max_shard_size: int | str | None = None,
    fsync: bool = True,
    show_progress: bool | None = None,
) -> FactorizeReport:
    """Replace Linear layers by two thin Linears from their truncated SVD.

    Each chosen weight ``W`` (``out × in``) becomes ``B @ A`` with ``A = sqrt(S_r) V_rᵀ``
    (``r × in``) and ``B = U_r sqrt(S_r)`` (``out × r``): the square roots of the singular
    values go to both factors. A layer where ``r·(in+out) >= in·out`` (no parameters saved),
    whose weight is shared with another layer (a tie), or in a dtype torch does not compute
    with is left as it is and listed in ``report.skipped`` with the reason.

    Args:
        target: an ``nn.Module`` (a deep copy is factorised: ``report.model``; ``nn.Linear``
            and transformers' ``Conv1D``; subclasses of ``nn.Linear`` are skipped, their owner
            may read ``.weight``), or a checkpoint path (needs ``dst``): its 2-D ``*.weight``
            entries are taken for Linear weights (``out × in``; GPT-2-family ``c_attn`` /
            ``c_proj`` / ``c_fc`` entries as ``in × out`` when the folder's ``config.json``
            says so).
        rank: the rank of every factorised layer.
        energy: instead of ``rank``: per layer, the smallest rank keeping this fraction
            (``0 < energy <= 1``) of the sum of squared singular values.
        select: glob / ``re:`` pattern(s) over module names (``model.layers.*.mlp.*``);
            default every Linear (for a checkpoint: every 2-D ``*.weight`` entry whose name
            does not contain ``embed``, ``wte`` or ``wpe``).
        dst: checkpoints only: the ``.safetensors`` file (or, with ``max_shard_size``, the
            folder) to write.
        example_inputs: modules only: inputs (a tensor, a tuple of positional arguments or a
            dict of keyword arguments) run through the old and the new model (both in eval
            mode, without gradients) to report the output deviation.
        max_shard_size: write HF shards of at most this size (``"5GB"``) into ``dst``.
        fsync: flush the output to disk before returning.
        show_progress: progress bar on stderr (default: only on a terminal).

    Returns:
        A :class:`FactorizeReport` (``.model``: the new model, for a module).

    Raises:
        ArgumentError: neither or both of ``rank`` / ``energy``, a value out of range,
            ``select`` matching no Linear (the pattern is named), ``dst`` missing for a
            checkpoint, ``example_inputs`` for a checkpoint.
        ArgumentTypeError: a target that is neither a module nor a path.
        TargetError: ``dst`` for a module, or a model TARGET path (``zoo:``…: no values).
        EntryError: a chosen weight on the meta device (no values).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
        ...                             torch.nn.Linear(64, 4))
        >>> report = factorize(model, rank=8)
        >>> report.model[0]
        Sequential(
          (0): Linear(in_features=64, out_features=8, bias=False)
          (1): Linear(in_features=8, out_features=64, bias=True)
        )
        >>> report.totals["params_before"], report.totals["params_after"]
        (4420, 1348)
        >>> report.skipped[0]["name"]  # 4 * (64 + 4) >= 64 * 4: nothing to save
        '2'
    """
    import torch

    r, e = _check_options(rank, energy)
    report = FactorizeReport(rank=r, energy=e)
    if isinstance(target, torch.nn.Module):
        if dst is not None:
            raise TargetError(
                f"factorize: dst={os.fspath(dst)!r} is where a factorised copy of a checkpoint "
                f"file goes, but the target is a torch module ({type(target).__name__}); omit "
                "dst= to get report.model back and write its state dict with paramscope.save, "
                "or pass a checkpoint path as the target"
            )
        _factorize_module(target, r, e, select, example_inputs, show_progress, report)
        return report
    if isinstance(target, (str, os.PathLike)):
        if dst is None:
            raise ArgumentError(
                f"factorize: {os.fspath(target)!r} is a checkpoint, which is factorised into a "
                f"new file: pass dst= (e.g. dst={_beside(target)!r})"
            )
        if example_inputs is not None:
            raise ArgumentError(
                f"factorize: example_inputs with checkpoint {os.fspath(target)!r}: there is no "
                "model to run; factorise the module instead"
            )
        _factorize_file(target, dst, r, e, select, max_shard_size, fsync, show_progress, report)
        return report
    raise ArgumentTypeError(
        "factorize: target: expected a torch.nn.Module or a checkpoint path, found "
        f"{type(target).__name__}"
    )


def _beside(path: str | os.PathLike[str]) -> str:
    """An output name beside a checkpoint: ``model.safetensors`` → ``model-lowrank.safetensors``."""
    p = os.fspath(path).rstrip("/\\")
    base, ext = os.path.splitext(p)
    keep = ext in (".safetensors", ".pt", ".bin", ".pth", ".npz")
    return f"{base if keep else p}-lowrank.safetensors"


def _no_match(select: Pattern, what: str) -> ArgumentError:
    return ArgumentError(f"factorize: select={select!r} matches no {what}")


# ------------------------------------------------------------------------------- modules
def _kind(mod: Any) -> str | None:
    """``Linear``, ``Conv1D``, ``subclass`` (of nn.Linear, not replaced) or ``None``."""
    import torch

    if type(mod) is torch.nn.Linear:
        return "Linear"
    cls = type(mod)
    if cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers."):
        return "Conv1D"
    if isinstance(mod, torch.nn.Linear):
        return "subclass"
    return None


def _factorize_module(
    model: torch.nn.Module,
    r: int | None,
    e: float | None,
    select: Pattern | None,
    example_inputs: Any,
    show_progress: bool | None,
    report: FactorizeReport,
) -> None:
    import copy

    import torch
    from torch.nn.utils import parametrize

    from .._progress import progress

    new = copy.deepcopy(model)
    # every candidate module (by identity), under its first name, with all its holders
    # (in the order of named_modules; a root Linear is held by None: the Sequential is the model)
    found: dict[int, tuple[str, Any, str, list[tuple[Any, str]], list[str]]] = {}
    kind = _kind(new)
    if kind is not None:
        found[id(new)] = ("", new, kind, [(None, "")], [""])
    for name, mod in new.named_modules(remove_duplicate=False):
        kind = _kind(mod)
        if kind is not None and name:
            entry = found.setdefault(id(mod), (name, mod, kind, [], []))
            entry[4].append(name)
    for _, mod in new.named_modules(remove_duplicate=False):
        for attr, child in mod._modules.items():
            if child is not None and id(child) in found:
                found[id(child)][3].append((mod, attr))
    match = compile_pattern(select) if select is not None else None
    chosen = [c for c in found.values() if match is None or match(c[0])]
    if match is not None and not chosen:
        raise _no_match(select, "Linear module")  # type: ignore[arg-type]
    names_of: dict[int, list[str]] = {}
    for pname, p in new.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(pname)
    for name, mod, kind, _, _ in chosen:
        if kind != "subclass" and mod.weight.device.type == "meta":
            raise EntryError(
                f"factorize: {name + '.weight'!r} is on the meta device and has no values; load "
                "the weights first (paramscope.load_into), or leave it out with select="
            )
    before = sum(p.numel() for p in new.parameters())
    report.model = new  # a root Linear that is factorised replaces it (see _replace)
    sizes = [c[1].weight.nbytes if c[2] != "subclass" else 0 for c in chosen]
    with torch.no_grad(), progress(sum(sizes), "factorize", enabled=show_progress) as advance:
        for (name, mod, kind, holders, paths), size in zip(chosen, sizes, strict=True):
            reason = _module_skip(mod, kind, names_of, paths, parametrize)
            if reason is None:
                reason = _replace(name, mod, kind, holders, r, e, report)
            if reason is not None:
                report.skipped.append({"name": name, "reason": reason})
            advance(size)
    after = sum(p.numel() for p in report.model.parameters())
    report.totals = _totals(before, after, len(report.layers), len(report.skipped))
    if example_inputs is not None:
        report.deviation = output_deviation(model, report.model, example_inputs)
        if report.deviation is None:
            raise ArgumentError(
                "factorize: example_inputs: the model's output holds no tensor to compare; "
                "pass inputs whose output holds a tensor"
            )


def _module_skip(
    mod: Any, kind: str, names_of: dict[int, list[str]], paths: list[str], parametrize: Any
) -> str | None:
    from .._values import computes

    if kind == "subclass":
        return (
            f"a subclass of nn.Linear ({type(mod).__name__}); its owner may read .weight "
            "directly, so it is not replaced"
        )
    if parametrize.is_parametrized(mod):
        return "parametrized weight (torch.nn.utils.parametrize); not replaced"
    w = mod.weight
    if not computes(w):
        return f"dtype {str(w.dtype).removeprefix('torch.')}: SVD needs F16, BF16, F32 or F64"
    own = {f"{path}.weight" if path else "weight" for path in paths}
    others = [n for n in names_of.get(id(w), ()) if n not in own]
    if others:
        return f"weight tied to {', '.join(others)}; factorising would untie it and add parameters"
    return None


def _replace(
    name: str,
    mod: Any,
    kind: str,
    holders: list[tuple[Any, str]],
    r: int | None,
    e: float | None,
    report: FactorizeReport,
) -> str | None:
    """Factor one module and put the new Sequential in its place; the skip reason if not."""
    import torch

    w = mod.weight.detach()
    mat = w.T if kind == "Conv1D" else w  # (out, in)
    n_out, n_in = mat.shape
    if r is not None:
        reason = _no_saving(r, n_in, n_out)
        if reason is not None:
            return reason
    f = truncated_svd(mat, rank=r, energy=e)
    if r is None:
        reason = _no_saving(f.rank, n_in, n_out)
        if reason is not None:
            return f"energy {e}: {reason}"
    bias = mod.bias
    first = torch.nn.Linear(n_in, f.rank, bias=False, device="meta")
    second = torch.nn.Linear(f.rank, n_out, bias=bias is not None, device="meta")
    grad = mod.weight.requires_grad
    first.weight = torch.nn.Parameter(f.a.to(w.dtype).contiguous(), requires_grad=grad)
    second.weight = torch.nn.Parameter(f.b.to(w.dtype).contiguous(), requires_grad=grad)
    if bias is not None:
        second.bias = bias
    seq = torch.nn.Sequential(first, second)
    seq.train(mod.training)
    for parent, attr in holders:
        if parent is None:  # the model itself is this Linear
            report.model = seq
        else:
            setattr(parent, attr, seq)
    b = 0 if bias is None else bias.numel()
    report.layers.append(_layer(name, kind, n_in, n_out, f, b))
    return None


def _layer(name: str, kind: str, n_in: int, n_out: int, f: LowRank, b: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "in": n_in,
        "out": n_out,
        "rank": f.rank,
        "params_before": n_in * n_out + b,
        "params_after": f.rank * (n_in + n_out) + b,
        "rel_error": f.rel_error,
        "energy_kept": f.energy_kept,
        "method": f.method,
    }


# ------------------------------------------------------------------------------ checkpoints
@dataclass
class _Plan:
    """One chosen checkpoint weight: its entry, layout and (once known) rank and numbers."""

    entry: Any
    module: str
    conv1d: bool
    n_in: int
    n_out: int
    rank: int = 0
    layer: dict[str, Any] | None = None


def _factorize_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    r: int | None,
    e: float | None,
    select: Pattern | None,
    max_shard_size: int | str | None,
    fsync: bool,
    show_progress: bool | None,
    report: FactorizeReport,
) -> None:
    from .._progress import progress
    from .._units import parse_size
    from ..io._reader import SourceReader
    from ..io._sharded import write_planned
    from ..io._writer import Planned, plan_meta, tensor_bytes

    report.source, report.output = os.fspath(src), os.fspath(dst)
    conv1d = conv1d_model(src) is True  # no readable config: every weight is out x in
    match = compile_pattern(select) if select is not None else None
    with SourceReader(src) as reader:
        report.notes += reader.notes
        m = reader.manifest
        stored = {x.name: x for x in reader.entries}
        tied_to: dict[str, list[str]] = {}
        for alias, tgt in reader.aliases.items():
            tied_to.setdefault(tgt, []).append(alias)
        candidates = [x for x in reader.entries if x.name.endswith(".weight") and len(x.shape) == 2]
        if match is not None:
            chosen = [x for x in candidates if match(x.name[: -len(".weight")]) or match(x.name)]
            if not chosen:
                raise _no_match(select, "2-D *.weight entry (module names are matched)")  # type: ignore[arg-type]
        else:
            chosen = [
                x
                for x in candidates
                if x.dtype.is_float and not any(h in x.name for h in _EMBEDDING_HINTS)
            ]
        report.notes.append(
            "checkpoint: 2-D *.weight entries are taken for Linear weights (out x in)"
            + (
                "; c_attn / q_attn / c_proj / c_fc as Conv1D (in x out), from config.json's "
                "model_type"
                if conv1d
                else ""
            )
            + ("" if match is not None else "; embeddings (embed, wte, wpe) are left out")
        )
        plans: dict[str, _Plan] = {}
        for x in chosen:
            module = x.name[: -len(".weight")]
            is_conv = conv1d and conv1d_name(module)
            n_out, n_in = (x.shape[1], x.shape[0]) if is_conv else (x.shape[0], x.shape[1])
            reason = None
            if not x.dtype.computes:
                reason = f"dtype {x.dtype.value}: SVD needs F16, BF16, F32 or F64"
            elif x.name in tied_to:
                reason = (
                    f"weight tied to {', '.join(tied_to[x.name])}; factorising would untie it "
                    "and add parameters"
                )
            elif r is not None:
                reason = _no_saving(r, n_in, n_out)
            if reason is not None:
                report.skipped.append({"name": module, "reason": reason})
                continue
            plans[x.name] = _Plan(x, module, is_conv, n_in, n_out, r or 0)
        if e is not None:  # ranks first: the header is written before any value
            report.notes.append(
                "energy: singular values are computed in a first pass to size the header, and "
                "the SVD runs again while writing"
            )
            with progress(
                sum(p.entry.nbytes for p in plans.values()),
                "factorize (ranks)",
                enabled=show_progress,
            ) as advance:
                for name in list(plans):
                    p = plans[name]
                    t = reader.read(p.entry)
                    s2 = singular_squares(t.T if p.conv1d else t)
                    del t
                    p.rank = rank_for_energy(s2, e)
                    reason = _no_saving(p.rank, p.n_in, p.n_out)
                    advance(p.entry.nbytes)
                    if reason is not None:
                        report.skipped.append({"name": p.module, "reason": f"energy {e}: {reason}"})
                        del plans[name]
        # names: factorised M.weight -> M.0.weight, M.1.weight; M.bias -> M.1.bias
        renamed: dict[str, str] = {}
        for p in plans.values():
            bias = f"{p.module}.bias"
            if bias in stored or bias in reader.aliases:
                renamed[bias] = f"{p.module}.1.bias"
        plan: list[Planned] = []
        source_of: dict[str, tuple[str, Any]] = {}  # new name -> (what, entry)
        for x in reader.entries:
            p = plans.get(x.name)
            if p is None:
                new = renamed.get(x.name, x.name)
                plan.append(Planned(new, x.dtype, x.shape, x.nbytes, plan_meta(m.get(x.name, x))))
                source_of[new] = ("copy", x)
                continue
            meta = plan_meta(m.get(x.name, x))
            for idx, shape in ((0, (p.rank, p.n_in)), (1, (p.n_out, p.rank))):
                new = f"{p.module}.{idx}.weight"
                plan.append(Planned(new, x.dtype, shape, x.dtype.nbytes(math.prod(shape)), meta))
                source_of[new] = (f"factor{idx}", x)
        aliases = {renamed.get(a, a): renamed.get(t, t) for a, t in reader.aliases.items()}
        alias_meta = {renamed.get(a, a): plan_meta(m[a]) for a in reader.aliases}
        cache: dict[str, Any] = {}

        def factors(p: _Plan) -> tuple[Any, Any]:
            t = reader.read(p.entry)
            mat = t.T if p.conv1d else t
            # with energy, the rank of the first pass, by the full SVD the module path uses
            f = truncated_svd(mat, rank=p.rank, method="svd" if e is not None else None)
            del t, mat
            p.layer = _layer(p.module, "entry", p.n_in, p.n_out, f, 0)
            dt = p.entry.dtype.to_torch()
            return f.a.to(dt).contiguous(), f.b.to(dt).contiguous()

        def chunks_of(names: list[str]) -> Iterator[tuple[str, Any]]:
            for new in names:
                what, x = source_of[new]
                if what == "copy":
                    yield new, tensor_bytes(reader.read(x))
                    advance(x.nbytes)
                    continue
                if new not in cache:
                    p = plans[x.name]
                    a, b = factors(p)
                    cache[f"{p.module}.0.weight"], cache[f"{p.module}.1.weight"] = a, b
                    advance(x.nbytes)
                yield new, tensor_bytes(cache.pop(new))

        total_bytes = sum(x.nbytes for x in reader.entries)
        with progress(total_bytes, "factorize", enabled=show_progress) as advance:
            write_planned(
                dst,
                plan,
                chunks_of,
                aliases=aliases,
                alias_meta=alias_meta,
                metadata=m.metadata,
                max_shard_size=None if max_shard_size is None else parse_size(max_shard_size),
                fsync=fsync,
                what="factorize",
            )
        before = sum(x.numel for x in reader.entries)
        for p in plans.values():
            assert p.layer is not None
            bias = f"{p.module}.bias"
            b = stored[bias].numel if bias in stored else 0
            p.layer["params_before"] += b
            p.layer["params_after"] += b
            report.layers.append(p.layer)
        saved = sum(x["params_before"] - x["params_after"] for x in report.layers)
        report.totals = _totals(before, before - saved, len(report.layers), len(report.skipped))
