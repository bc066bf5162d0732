"""``merge``: combine models tensor by tensor, architecture-free, streaming, with a report.

Tensors are matched by name; shapes must agree and dtypes too (unless an output ``dtype`` is
given). Each output tensor is made from one tensor per input, read when it is needed and
released once written, so memory follows the largest tensor, not the model: peak ≈ (inputs +
1) × the largest tensor in float32, plus a few 16 MiB chunks of scratch (see
:mod:`._methods`). Nothing is written until every name, shape and dtype has been checked, and
the output appears atomically (one file, or HF shards and an index).

Methods and their conventions (mergekit's, see :mod:`._methods`): ``linear``, ``slerp``,
``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``.

Names only some inputs hold follow ``missing``:

* ``"error"`` (default): refuse, naming the entries and which inputs lack them;
* ``"base"``: copy the base's value (an error where the base lacks it too);
* ``"first"``: copy the value of the first input that holds it (base first);
* ``"skip"``: leave the entry out of the output;
* ``"present"``: merge among the inputs that hold it (weights of the others dropped; the
  base must hold it for delta methods; a name one input holds is copied).

Entries that are not floating point (integer buffers, masks) are copied from the reference
model (the base, else the first source); a note names those whose values differ between inputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._errors import (
    ArgumentError,
    DTypeMismatchError,
    EntryError,
    ShapeMismatchError,
)
from .._text import listed
from ._methods import DELTA_METHODS, METHODS, Stats, merge_tensor, numbers

__all__ = ["MergeReport", "merge", "read_merge_spec"]

#: mergekit's ``normalize`` default per method (``merge_methods/registry.py``).
DEFAULT_NORMALIZE = {
    "linear": True,
    "slerp": False,
    "task_arithmetic": False,
    "ties": True,
    "dare_linear": False,
    "dare_ties": False,
}
MISSING = ("error", "base", "first", "skip", "present")
OVERRIDE_KEYS = ("method", "t", "density", "weight", "weights", "scale", "normalize")


@dataclass(frozen=True)
class _Settings:
    method: str
    weights: tuple[float, ...]
    t: float
    density: tuple[float, ...]
    normalize: bool | None  # None: the method's default (DEFAULT_NORMALIZE)
    scale: float

    def resolved(self) -> _Settings:
        """These settings with ``normalize`` decided by the method when not given."""
        if self.normalize is not None:
            return self
        return replace(self, normalize=DEFAULT_NORMALIZE.get(self.method, False))


@dataclass
class MergeReport:
    """What :func:`merge` did, per tensor and in total.

    Attributes:
        method: the merge method.
        models: the inputs' labels, the base first when there is one.
        sources: the labels of the sources (the models but the base).
        base: the base's label (or ``None``).
        output: the file or folder written (``None``: in memory, see :attr:`result`).
        options: the options the merge ran with.
        entries: entries in the output.
        bytes: tensor bytes of the output.
        shards: files written.
        copied: entries copied from one input rather than merged (non-floating, or by the
            ``missing`` rule).
        skipped: entries left out (``missing="skip"``).
        tensors: per merged tensor: ``name, shape, method, cosine`` (of each model to the
            result, in :attr:`models` order), ``delta_cosine`` (of each source's delta to the
            merged delta; delta methods), ``sign_conflict`` (fraction of elements whose kept
            deltas disagree in sign), ``density_kept`` (kept nonzero delta elements over those
            before trimming / dropping), ``norm_ratio`` (‖result‖ over the mean of the
            models' norms), and ``overrides`` when a ``--set`` rule changed its settings.
        totals: the same numbers over the whole model (flattened: exact, not averaged).
        notes: what the reader should know.
        result: the merged :class:`~paramscope.ParamDict` when no ``dst`` was given.
    """

    method: str
    models: list[str]
    base: str | None
    output: str | None
    options: dict[str, Any]
    sources: list[str] = field(default_factory=list)
    entries: int = 0
    bytes: int = 0
    shards: int = 0
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    tensors: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    result: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``paramscope merge --json``): every attribute but :attr:`result`.

        Returns:
            The dict.

        Example:
            >>> sorted(MergeReport("linear", ["a", "b"], None, "o.safetensors", {}).to_dict())[:4]
            ['base', 'bytes', 'copied', 'entries']
        """
        d = {k: v for k, v in self.__dict__.items() if k != "result"}
        d["tensors"] = [dict(t) for t in self.tensors]
        return d

    def to_text(self, width: int | None = None) -> str:
        """The human form: what was merged into what, the totals, then the tensors that moved
        most (lowest cosine to the result) and the notes.

        Args:
            width: the terminal width (``None``: no limit).

        Returns:
            The text, without a final newline.

        Example:
            >>> r = MergeReport("linear", ["a", "b"], None, "o.safetensors", {}, entries=2)
            >>> print(r.to_text())
            merge [linear] a + b -> o.safetensors: 2 entries, 0 B in 0 file(s)
        """
        from .._tables import aligned
        from .._text import printable
        from .._units import format_bytes

        out = self.output if self.output is not None else "(in memory)"
        lines = [
            f"merge [{self.method}] {' + '.join(printable(m) for m in self.models)} -> "
            f"{printable(out)}: {self.entries:,} entries, {format_bytes(self.bytes)} in "
            f"{self.shards} file(s)"
        ]
        t = self.totals
        if t:
            cos = ", ".join(
                f"{printable(m)} {_f(c)}" for m, c in zip(self.models, t["cosine"], strict=True)
            )
            lines.append(f"cosine to the result: {cos}")
            extra = [f"norm ratio {_f(t['norm_ratio'])}"]
            if t.get("delta_cosine") is not None:
                srcs = self.models[1:] if self.base is not None else self.models
                extra.append(
                    "delta cosine "
                    + ", ".join(
                        f"{printable(m)} {_f(c)}"
                        for m, c in zip(srcs, t["delta_cosine"], strict=True)
                    )
                )
            if t.get("sign_conflict") is not None:
                extra.append(f"sign conflicts {_pct(t['sign_conflict'])}")
            if t.get("density_kept") is not None:
                extra.append(f"density kept {_pct(t['density_kept'])}")
            lines.append("; ".join(extra))
        if self.tensors:
            worst = sorted(self.tensors, key=lambda r: min(c or 0.0 for c in r["cosine"]))[:10]
            rows = [
                [
                    printable(r["name"]),
                    r["method"],
                    " ".join(_f(c) for c in r["cosine"]),
                    _pct(r["sign_conflict"]) if r["sign_conflict"] is not None else "-",
                    _pct(r["density_kept"]) if r["density_kept"] is not None else "-",
                    _f(r["norm_ratio"]),
                ]
                for r in worst
            ]
            lines.append(f"tensors furthest from a model ({len(worst)} of {len(self.tensors)}):")
            lines += aligned(
                ["tensor", "method", "cosine", "sign conflict", "density kept", "norm ratio"],
                rows,
            )
        if self.copied:
            lines.append(f"copied unmerged: {len(self.copied)} ({_some(self.copied)})")
        if self.skipped:
            lines.append(f"left out: {len(self.skipped)} ({_some(self.skipped)})")
        lines += [f"note: {printable(n)}" for n in self.notes]
        return "\n".join(lines)


def _some(names: Sequence[str]) -> str:
    """Up to five names, escaped, then how many more (:func:`paramscope._text.listed`)."""
    return listed(names, quote=False, limit=5)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


# ---------------------------------------------------------------------------------- options
def _floats(what: str, value: Any, n: int) -> tuple[float, ...]:
    """One float per source from a float or a sequence of ``n`` floats."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * n
    if isinstance(value, str):
        parts = [p for p in value.replace(";", ",").split(",") if p.strip()]
        value = parts
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"merge: {what}={value!r}: expected a number or one number per source"
        ) from None
    if len(out) != n:
        raise ArgumentError(
            f"merge: {what}: {len(out)} value(s) given for {n} source(s); give one per source "
            "(the base takes none)"
        )
    return out


def _check(s: _Settings, n_sources: int, has_base: bool, where: str) -> None:
    if s.method not in METHODS:
        raise ArgumentError(
            f"merge: {where}method={s.method!r}: expected one of {', '.join(METHODS)}"
        )
    if s.method in DELTA_METHODS and not has_base:
        raise ArgumentError(
            f"merge: {where}method={s.method!r} merges deltas from a base: give base= (--base)"
        )
    if s.method == "slerp" and n_sources + has_base != 2:
        raise ArgumentError(
            f"merge: {where}slerp interpolates exactly two models (a base and one source, or "
            f"two sources); got {n_sources + has_base}"
        )
    if not 0.0 <= s.t <= 1.0:
        raise ArgumentError(f"merge: {where}t={s.t}: expected 0 <= t <= 1")
    for d in s.density:
        if not 0.0 < d <= 1.0:
            raise ArgumentError(f"merge: {where}density={d}: expected 0 < density <= 1")
    if s.method in ("linear",) and s.normalize and abs(sum(s.weights)) < 1e-8:
        raise ArgumentError(
            f"merge: {where}linear with normalize: the weights sum to 0; nothing to divide by "
            "(set normalize=False, or other weights)"
        )


def _parse_override(text: str) -> tuple[str, dict[str, Any]]:
    """``"PATTERN:key=value,key=value"`` → ``(pattern, settings)``; values read as JSON."""
    pattern, sep, body = text.rpartition(":")
    if not sep or not pattern or "=" not in body:
        raise ArgumentError(
            f"merge: --set {text!r}: expected PATTERN:key=value[,key=value…], e.g. "
            "'lm_head.*:weight=0' or 're:.*norm.*:method=linear'"
        )
    settings: dict[str, Any] = {}
    for part in _split_top(body):
        key, eq, raw = part.partition("=")
        key = key.strip()
        if not eq or key not in OVERRIDE_KEYS:
            raise ArgumentError(
                f"merge: --set {text!r}: unknown setting {key!r}; expected one of "
                f"{', '.join(OVERRIDE_KEYS)}"
            )
        try:
            settings[key] = json.loads(raw)
        except ValueError:
            settings[key] = raw.strip()
    return pattern, settings


def _split_top(body: str) -> list[str]:
    """Split at commas outside brackets (``weights=[0.3,0.7],t=0.5``)."""
    parts, depth, cur = [], 0, ""
    for ch in body:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in [*parts, cur] if p.strip()]


def _apply(s: _Settings, changes: Mapping[str, Any], n: int, where: str) -> _Settings:
    kw: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "method":
            kw["method"] = str(value)
        elif key in ("t", "scale"):
            try:
                kw[key] = float(value)
            except (TypeError, ValueError):
                raise ArgumentError(f"merge: {where}{key}={value!r}: expected a number") from None
        elif key == "normalize":
            if not isinstance(value, bool):
                raise ArgumentError(f"merge: {where}normalize={value!r}: expected true or false")
            kw["normalize"] = value
        elif key in ("weight", "weights"):
            kw["weights"] = _floats(where + key, value, n)
        elif key == "density":
            kw["density"] = _floats(where + key, value, n)
    return replace(s, **kw)


# ------------------------------------------------------------------------------------ merge
def merge(
    sources: Sequence[Any],
    *,
    method: str = "linear",
    base: Any = None,
    weights: Sequence[float] | str | None = None,
    dst: str | os.PathLike[str] | None = None,
    t: float = 0.5,
    density: float | Sequence[float] = 1.0,
    normalize: bool | None = None,
    scale: float = 1.0,
    seed: int = 0,
    rescale: str | None = "density",
    overrides: Sequence[str] | None = None,
    missing: str = "error",
    dtype: Any = None,
    max_shard_size: int | str | None = None,
    fsync: bool = True,
    show_progress: bool | None = None,
) -> MergeReport:
    """Merge models tensor by tensor into a new checkpoint (or a ParamDict), with a report.

    Args:
        sources: the models to merge: checkpoint paths (any format paramscope reads),
            :class:`~paramscope.ParamDict` s, dicts of tensors or ``nn.Module`` s.
        method: ``linear`` (weighted mean), ``slerp`` (two models), ``task_arithmetic``
            (base + Σ wᵢ·(xᵢ − base)), ``ties`` (trim each delta to ``density`` by magnitude,
            elect the sign, disjoint mean), ``dare_linear`` / ``dare_ties`` (drop each delta's
            elements at random, keeping ``density``, rescale; then sum / elect as TIES).
        base: the base model, same kinds as a source; required by the delta methods; for
            slerp it is the model at ``t = 0``.
        weights: one per source (not the base); default 1 each. A string ``"0.3,0.7"`` too.
        dst: a ``.safetensors`` file, or a folder with ``max_shard_size`` (HF shards and an
            index); ``None``: merge in memory into :attr:`MergeReport.result`.
        t: slerp's factor: 0 is the first model (the base when given), 1 the second.
        density: TIES / DARE: the fraction of each delta kept (one value, or one per source).
        normalize: divide by the sum of the weights (TIES: of the sources agreeing with the
            elected sign); ``None``: mergekit's default (``linear`` and ``ties`` yes, others no).
        scale: multiplies the merged delta (mergekit's ``lambda``).
        seed: DARE's seed: each (tensor, source) mask comes from its own generator seeded by
            ``seed``, the tensor's name and the source's index, so results do not depend on
            the order tensors are processed in.
        rescale: DARE's rescaling of kept deltas: ``"density"`` (divide by density, the DARE
            paper's rule and the default), ``"l1"`` (mergekit's: match the L1 norm of the
            delta before dropping) or ``None``.
        overrides: per-tensor settings, ``"PATTERN:key=value[,key=value…]"`` (glob or
            ``re:`` pattern; keys ``method, t, density, weight, weights, scale, normalize``;
            values JSON, lists as ``[0.3,0.7]``); later rules win.
        missing: entries only some inputs hold: ``error`` (default), ``base``, ``first``,
            ``skip`` or ``present`` (see the module's text).
        dtype: the output dtype of floating entries (``"bf16"`` …); default each entry's
            dtype in the reference model (the base, else the first source). With it, inputs of
            different dtypes are accepted.
        max_shard_size: write HF shards of at most this size into the folder ``dst``.
        fsync: flush to disk before returning.
        show_progress: a progress bar on stderr (default: only on a terminal).

    Returns:
        A :class:`MergeReport` (``.result`` holds the merged ParamDict when ``dst`` is None).

    Raises:
        ArgumentError: bad options, an unknown method, a missing base.
        EntryError: entries only some inputs hold (``missing="error"``), quantised entries.
        ShapeMismatchError: a name whose shapes differ (each input's shape named).
        DTypeMismatchError: a name whose dtypes differ and no ``dtype`` was given.

    Example:
        >>> import torch
        >>> a = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([2.0])}
        >>> b = {"w": torch.tensor([0.0, 1.0]), "b": torch.tensor([4.0])}
        >>> merge([a, b]).result["b"].tolist()
        [3.0]
        >>> r = merge([{"w": a["w"]}, {"w": b["w"]}], method="slerp", t=0.5)
        >>> [round(v, 4) for v in r.result["w"].tolist()], round(r.totals["norm_ratio"], 4)
        ([0.7071, 0.7071], 1.0)
    """
    from ._sources import open_source

    if not sources:
        raise ArgumentError("merge: no sources given")
    if missing not in MISSING:
        raise ArgumentError(f"merge: missing={missing!r}: expected one of {', '.join(MISSING)}")
    if rescale not in ("density", "l1", None):
        raise ArgumentError(f"merge: rescale={rescale!r}: expected 'density', 'l1' or None")
    n = len(sources)
    default = _Settings(
        method=str(method),
        weights=_floats("weights", 1.0 if weights is None else weights, n),
        t=float(t),
        density=_floats("density", density, n),
        normalize=normalize,
        scale=float(scale),
    )
    has_base = base is not None
    if has_base and default.method == "linear":
        raise ArgumentError(
            "merge: method='linear' averages the sources and takes no base; list the base "
            "among the sources to include it"
        )
    _check(default.resolved(), n, has_base, "")
    rules = []
    for text in overrides or ():
        from .._names import compile_pattern

        pattern, changes = _parse_override(text)
        rules.append((compile_pattern(pattern), changes, text))
    opened = []
    try:
        if has_base:
            opened.append(open_source(base, "base"))
        for k, s in enumerate(sources):
            opened.append(open_source(s, f"source {k + 1}"))
        return _run(
            opened,
            has_base,
            default,
            rules,
            missing=missing,
            seed=seed,
            rescale=rescale,
            dtype=dtype,
            dst=dst,
            max_shard_size=max_shard_size,
            fsync=fsync,
            show_progress=show_progress,
        )
    finally:
        for s in opened:
            s.close()


@dataclass
class _Item:
    """One output entry: how it is made."""

    name: str
    kind: str  # "merge" | "copy"
    holders: list[int]  # indices into the inputs
    settings: _Settings | None = None
    overrides: list[str] = field(default_factory=list)


def _run(
    models: list[Any],
    has_base: bool,
    default: _Settings,
    rules: list[tuple[Any, dict[str, Any], str]],
    *,
    missing: str,
    seed: int,
    rescale: str | None,
    dtype: Any,
    dst: Any,
    max_shard_size: Any,
    fsync: bool,
    show_progress: bool | None,
) -> MergeReport:
    import torch

    from .._dtypes import parse_dtype
    from .._progress import progress
    from ..io._writer import Planned, tensor_bytes

    labels = [m.label for m in models]
    n_src = len(models) - has_base
    cast = parse_dtype(dtype) if dtype is not None else None
    if cast is not None and (not cast.is_float or not cast.computes):
        raise ArgumentError(
            f"merge: dtype={dtype!r}: expected a floating dtype torch computes with "
            "(bf16, fp16, fp32, fp64)"
        )
    report = MergeReport(
        method=default.method,
        models=labels,
        base=labels[0] if has_base else None,
        sources=labels[1:] if has_base else list(labels),
        output=None if dst is None else os.fspath(dst),
        options={
            "weights": list(default.weights),
            "t": default.t,
            "density": list(default.density),
            "normalize": default.resolved().normalize,
            "scale": default.scale,
            "seed": seed,
            "rescale": rescale,
            "missing": missing,
            "dtype": None if cast is None else cast.value,
            "overrides": [r[2] for r in rules],
        },
    )
    for m in models:
        report.notes += [f"{m.label}: {x}" for x in m.notes]
    _refuse_quantised(models)
    ref = models[0]
    order = dict.fromkeys(ref.shapes)  # the reference's order, then names only others hold
    for m in models[1:]:
        order.update(dict.fromkeys(x for x in m.shapes if x not in order))
    # ---- plan every entry before anything is read or written
    items: list[_Item] = []
    lacking: dict[str, list[str]] = {}
    for name in order:
        holders = [k for k, m in enumerate(models) if name in m]
        if len(holders) < len(models):
            if missing == "error":
                lacking[name] = [labels[k] for k in range(len(models)) if k not in holders]
                continue
            if missing == "skip":
                report.skipped.append(name)
                continue
            if missing == "base":
                if not has_base or 0 not in holders:
                    raise EntryError(
                        f"merge: entry {name!r} is missing from "
                        f"{', '.join(labels[k] for k in range(len(models)) if k not in holders)}"
                        " and missing='base', but there is no base value to copy"
                    )
                items.append(_Item(name, "copy", [0]))
                continue
            if missing == "first":
                items.append(_Item(name, "copy", [holders[0]]))
                continue
        items.append(_Item(name, "merge", holders))
    if lacking:
        names = list(lacking)
        first = names[0]
        raise EntryError(
            f"merge: {len(names)} entr{'y is' if len(names) == 1 else 'ies are'} not in every "
            f"model ({_some(names)}); e.g. {first!r} is missing from "
            f"{', '.join(lacking[first])}; choose a rule with missing= (--missing base, first, "
            "skip or present)"
        )
    for it in items:
        _check_entry(it, models, cast)
        if it.kind == "copy":
            continue
        if not models[it.holders[0]].dtypes[it.name].is_float:
            it.kind = "copy"
            it.holders = [it.holders[0]]
            continue
        s = default
        for match, changes, text in rules:
            if match(it.name):
                s = _apply(s, changes, n_src, f"--set {text!r}: ")
                it.overrides.append(text)
        if has_base and 0 not in it.holders and s.method in DELTA_METHODS:
            raise EntryError(
                f"merge: entry {it.name!r} is not in the base ({labels[0]}), so "
                f"{s.method} has no delta to take; use missing='first' or 'skip'"
            )
        srcs = [k - has_base for k in it.holders if k >= has_base]
        if len(it.holders) == 1 or (s.method == "slerp" and len(it.holders) != 2):
            it.kind = "copy"
            it.holders = it.holders[:1]
            continue
        s = replace(
            s,
            weights=tuple(s.weights[k] for k in srcs),
            density=tuple(s.density[k] for k in srcs),
        ).resolved()
        _check(s, len(srcs), has_base and 0 in it.holders, f"entry {it.name!r}: ")
        it.settings = s
    # ---- aliases: kept where every input ties the name to the same target
    aliases: dict[str, str] = {}
    written = {it.name for it in items}
    for name, target in ref.aliases.items():
        if (
            name in written
            and target in written
            and all(m.aliases.get(name) == target for m in models if name in m)
        ):
            aliases[name] = target
    stored = [it for it in items if it.name not in aliases]

    def out_dtype(it: _Item) -> Any:
        d = models[it.holders[0]].dtypes[it.name]
        return cast if cast is not None and d.is_float and it.kind == "merge" else d

    plan = []
    for it in stored:
        shape = models[it.holders[0]].shapes[it.name]
        dt = out_dtype(it)
        numel = 1
        for s in shape:
            numel *= s
        meta = _meta_of(models[it.holders[0]], it.name)
        plan.append(Planned(it.name, dt, list(shape), dt.nbytes(numel), meta))
    report.entries = len(plan) + len(aliases)
    report.bytes = sum(p.nbytes for p in plan)
    report.copied = [it.name for it in items if it.kind == "copy"]
    totals = Stats()
    any_delta = any_consensus = False
    by_name = {it.name: it for it in stored}
    differing: list[str] = []

    def produce(it: _Item) -> torch.Tensor:
        nonlocal any_delta, any_consensus
        if it.kind == "copy":
            t = models[it.holders[0]].read(it.name)
            if not models[it.holders[0]].dtypes[it.name].is_float and len(models) > 1:
                for k, m in enumerate(models):
                    if k != it.holders[0] and it.name in m and not torch.equal(m.read(it.name), t):
                        differing.append(it.name)
                        break
            return t
        s = it.settings
        assert s is not None
        cd = (
            torch.float64
            if any(models[k].dtypes[it.name].value == "F64" for k in it.holders)
            else torch.float32
        )
        xs = [models[k].read(it.name, cd) for k in it.holders]
        base_t = xs.pop(0) if (has_base and it.holders[0] == 0) else None
        if s.method == "slerp" and base_t is not None:  # the base is slerp's first model
            xs.insert(0, base_t)
            base_t = None
        result, st = merge_tensor(
            s.method,
            it.name,
            xs,
            base_t,  # linear (an override in a delta merge): the base is only reported on
            weights=s.weights,
            t=s.t,
            density=s.density,
            normalize=s.normalize,
            scale=s.scale,
            seed=seed,
            rescale=rescale,
        )
        deltas = s.method in DELTA_METHODS
        consensus = s.method in ("ties", "dare_ties")
        any_delta |= deltas
        any_consensus |= consensus
        row = {
            "name": it.name,
            "shape": list(result.shape),
            "method": s.method,
            **numbers(st, deltas=deltas, consensus=consensus),
        }
        if len(it.holders) == len(models):
            totals.add(st)
        if it.overrides:
            row["overrides"] = it.overrides
        if len(it.holders) < len(models):
            row["models"] = [labels[k] for k in it.holders]
        report.tensors.append(row)
        want = out_dtype(it).to_torch()
        return result if result.dtype == want else result.to(want)

    def chunks_of(names: list[str]) -> Iterator[tuple[str, Any]]:
        for name in names:
            it = by_name[name]
            t = produce(it)
            yield name, tensor_bytes(t)
            advance(t.numel() * t.element_size())
            del t

    metadata = dict(ref.metadata)
    metadata["paramscope.merge"] = json.dumps(
        {"method": default.method, "models": labels, "base": report.base, **report.options},
        sort_keys=True,
    )
    if dst is None:
        from .._paramdict import ParamDict

        pd = ParamDict(metadata=metadata)
        with progress(report.bytes, "merge", enabled=show_progress) as advance:
            for name, _ in ((p.name, None) for p in plan):
                t = produce(by_name[name])
                pd.add(name, t)
                advance(t.numel() * t.element_size())
        for a, target in aliases.items():
            pd.tie(a, target)
        report.result = pd
    else:
        from .._units import parse_size
        from ..io._sharded import write_planned

        with progress(report.bytes, "merge", enabled=show_progress) as advance:
            report.shards = write_planned(
                dst,
                plan,
                chunks_of,
                aliases=aliases,
                alias_meta={a: _meta_of(ref, a) for a in aliases},
                metadata=metadata,
                max_shard_size=None if max_shard_size is None else parse_size(max_shard_size),
                fsync=fsync,
                what="merge",
            )
        if max_shard_size is not None:
            _copy_config(ref.label, dst, report, fsync)
    if report.tensors:
        report.totals = numbers(totals, deltas=any_delta, consensus=any_consensus)
    if differing:
        report.notes.append(
            f"{len(differing)} non-floating entries differ between the models and were copied "
            f"from {labels[0]}: {_some(differing)}"
        )
    lerped = [r["name"] for r in report.tensors if r["method"] == "slerp" and _lerped(r)]
    if lerped:
        report.notes.append(
            f"slerp fell back to linear interpolation for {len(lerped)} near-parallel tensor(s) "
            f"(|cos| > 0.9995): {_some(lerped)}"
        )
    return report


def _copy_config(ref: str, dst: Any, report: MergeReport, fsync: bool) -> None:
    """An HF folder's ``config.json`` beside merged shards, so ``from_pretrained`` loads them;
    only when the destination has none (a writer never replaces a file it did not make)."""
    src = os.path.join(ref, "config.json")
    out = os.path.join(os.fspath(dst), "config.json")
    if not os.path.isdir(ref) or not os.path.isfile(src):
        return
    if os.path.exists(out):
        report.notes.append(f"{out} exists and was left as it is (not replaced by {src})")
        return
    from .._atomic import atomic_write
    from .._files import open_regular

    with open_regular(src) as f:
        data = f.read(16_000_000)
    with atomic_write(out, fsync=fsync) as f:
        f.write(data)
    report.notes.append(f"copied config.json from {ref}")


def _lerped(row: Mapping[str, Any]) -> bool:
    c = row["cosine"]
    return len(c) == 2 and c[0] is not None and c[1] is not None and abs(c[0] * c[1]) > 0.999


def _meta_of(m: Any, name: str) -> dict[str, Any]:
    """The paramscope metadata (role, trainable, tags) of ``name`` in a checkpoint source."""
    if m.manifest is None:
        return {}
    from ..io._writer import plan_meta

    e = m.manifest.get(name)
    return plan_meta(e) if e is not None else {}


def _check_entry(it: _Item, models: list[Any], cast: Any) -> None:
    shapes = {models[k].label: models[k].shapes[it.name] for k in it.holders}
    if len(set(shapes.values())) > 1:
        shown = "; ".join(f"{lab} {list(s)}" for lab, s in shapes.items())
        raise ShapeMismatchError(f"merge: entry {it.name!r} has different shapes: {shown}")
    dtypes = {models[k].label: models[k].dtypes[it.name] for k in it.holders}
    kinds = set(dtypes.values())
    if len(kinds) > 1 and (cast is None or not all(d.is_float for d in kinds)):
        shown = "; ".join(f"{lab} {d.value}" for lab, d in dtypes.items())
        raise DTypeMismatchError(
            f"merge: entry {it.name!r} has different dtypes: {shown}; give dtype= (--dtype) "
            "to merge floating entries in one output dtype"
        )
    for k in it.holders:
        d = models[k].dtypes[it.name]
        if d.is_float and not d.computes and d.value not in ("F8_E4M3", "F8_E5M2"):
            raise EntryError(
                f"merge: entry {it.name!r} of {models[k].label} is {d.value}, which torch cannot "
                "compute with; convert it to a wider float first"
            )


def _refuse_quantised(models: list[Any]) -> None:
    """Packed quantised values are not numbers to average: refuse them by name."""
    from .._quantlayouts import LAYOUT_KEY
    from .._quantstore import QUANT_KEY

    for m in models:
        if m.manifest is None:
            continue
        q = [e.name for e in m.manifest.values() if LAYOUT_KEY in e.extra or QUANT_KEY in e.extra]
        if q:
            raise EntryError(
                f"merge: {m.label} holds {len(q)} quantised entries ({_some(q)}); merging "
                "packed quantised values would be wrong: merge the unquantised checkpoints, or "
                "dequantise first (paramscope.load(path, dequantize=True))"
            )


# ------------------------------------------------------------------------------------ spec
def read_merge_spec(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Read a merge spec (YAML or JSON): paramscope's keys, or a mergekit configuration.

    paramscope's keys are :func:`merge`'s arguments (``method``, ``base``, ``sources``,
    ``weights``, ``density``, ``t``, ``normalize``, ``scale``, ``seed``, ``rescale``,
    ``overrides``, ``missing``, ``dtype``, ``max_shard_size``) and ``output`` for ``dst``.
    A mergekit configuration (``merge_method``, ``base_model``, ``models: [{model,
    parameters: {weight, density}}]``, ``parameters``, ``dtype``) is translated; its
    ``slices`` (layer ranges from several models) and per-layer gradients (a list for ``t``)
    are refused with a clear error, as paramscope merges whole tensors by name. Relative
    paths are taken relative to the spec file's folder.

    Args:
        source: a path to a ``.yaml`` / ``.yml`` / ``.json`` file, or a mapping.

    Returns:
        Keyword arguments for :func:`merge` (``dst`` from ``output`` when present).

    Raises:
        SpecError: invalid YAML / JSON, unknown keys, or unsupported mergekit features.

    Example:
        >>> p = {"weight": 0.5, "density": 0.4}
        >>> spec = read_merge_spec({"merge_method": "ties", "base_model": "base",
        ...     "models": [{"model": "a", "parameters": p}, {"model": "b", "parameters": p}]})
        >>> spec["method"], spec["base"], spec["sources"], spec["weights"], spec["density"]
        ('ties', 'base', ['a', 'b'], [0.5, 0.5], [0.4, 0.4])
    """
    from ..building._spec_errors import SpecError

    try:
        return _read_merge_spec(source)
    except SpecError as exc:
        if isinstance(source, Mapping) or str(source) in exc.path:
            raise
        where = f"{os.fspath(source)}: {exc.path}" if exc.path else os.fspath(source)
        raise SpecError(where, exc.problem) from None


def _read_merge_spec(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    from ..building._spec_errors import SpecError
    from ..building._spec_read import _read

    spec, folder = _read(source)

    def path(p: Any, key: str) -> str:
        if not isinstance(p, str):
            raise SpecError(key, f"expected a path string, got {type(p).__name__}")
        if folder is not None and not os.path.isabs(p) and "://" not in p:
            return os.path.join(folder, p)
        return p

    if "merge_method" in spec or "models" in spec or "slices" in spec:
        return _from_mergekit(spec, path, SpecError)
    allowed = {
        "method", "base", "sources", "weights", "density", "t", "normalize", "scale", "seed",
        "rescale", "overrides", "missing", "dtype", "max_shard_size", "output",
    }  # fmt: skip
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SpecError(unknown[0], f"unknown key; expected one of {', '.join(sorted(allowed))}")
    out = {k: v for k, v in spec.items() if k != "output"}
    if not isinstance(spec.get("sources"), list) or not spec["sources"]:
        raise SpecError("sources", "expected a non-empty list of checkpoint paths")
    out["sources"] = [path(p, f"sources[{i}]") for i, p in enumerate(spec["sources"])]
    if spec.get("base") is not None:
        out["base"] = path(spec["base"], "base")
    if spec.get("output") is not None:
        out["dst"] = path(spec["output"], "output")
    return out


def _from_mergekit(spec: Mapping[str, Any], path: Any, SpecError: Any) -> dict[str, Any]:
    if "slices" in spec:
        raise SpecError(
            "slices",
            "mergekit slices (layer ranges stitched from several models) are not supported: "
            "paramscope merges whole tensors by name; use 'models'",
        )
    known = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
             "tokenizer_source", "tokenizer", "chat_template", "name"}  # fmt: skip
    unknown = sorted(set(spec) - known)
    if unknown:
        raise SpecError(unknown[0], "a mergekit key paramscope does not support")
    out: dict[str, Any] = {"method": spec.get("merge_method", "linear")}
    if spec.get("base_model") is not None:
        out["base"] = path(spec["base_model"], "base_model")
    models = spec.get("models") or []
    if not isinstance(models, list):
        raise SpecError("models", "expected a list of {model: PATH, parameters: {...}}")
    sources, weights, density = [], [], []
    for i, m in enumerate(models):
        if isinstance(m, str):
            m = {"model": m}
        if not isinstance(m, Mapping) or "model" not in m:
            raise SpecError(f"models[{i}]", "expected {model: PATH, parameters: {...}}")
        p = path(m["model"], f"models[{i}].model")
        params = dict(m.get("parameters") or {})
        if out.get("base") is not None and os.path.normpath(p) == os.path.normpath(out["base"]):
            continue  # mergekit lists the base among the models too
        sources.append(p)
        weights.append(
            _scalar(params.get("weight", 1.0), f"models[{i}].parameters.weight", SpecError)
        )
        density.append(
            _scalar(params.get("density", 1.0), f"models[{i}].parameters.density", SpecError)
        )
    out["sources"] = sources
    if any(w != 1.0 for w in weights):
        out["weights"] = weights
    if any(d != 1.0 for d in density):
        out["density"] = density
    params = dict(spec.get("parameters") or {})
    for key, arg in (("t", "t"), ("normalize", "normalize"), ("lambda", "scale"),
                     ("weight", "weights"), ("density", "density")):  # fmt: skip
        if key in params:
            value = params.pop(key)
            if key in ("weight", "density"):
                value = [_scalar(value, f"parameters.{key}", SpecError)] * len(sources)
            else:
                value = (
                    _scalar(value, f"parameters.{key}", SpecError) if key != "normalize" else value
                )
            out[arg] = value
    params.pop("int8_mask", None)
    if "rescale" in params:
        out["rescale"] = "l1" if params.pop("rescale") else None
    elif str(out["method"]).startswith("dare"):
        out["rescale"] = "l1"  # mergekit's default for DARE: match the L1 norm
    if params:
        raise SpecError(
            f"parameters.{sorted(params)[0]}", "a mergekit parameter paramscope does not support"
        )
    dt = spec.get("out_dtype") or spec.get("dtype")
    if dt is not None:
        out["dtype"] = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dt, dt)
    return out


def _scalar(value: Any, key: str, SpecError: Any) -> float:
    if isinstance(value, (list, Mapping)):
        raise SpecError(
            key,
            "per-layer gradients and filters are not supported: paramscope merges whole tensors "
            "by name; use overrides ('PATTERN:key=value') for per-tensor settings",
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(key, f"expected a number, got {value!r}") from None
