"""Config sweeps: build every point of a grid of arguments on meta and count it.

:func:`sweep` builds each grid point of a model TARGET (``zoo:NAME``,
``package.module:callable``, an HF ``config.json``) with :func:`paramscope.resolve_target`'s
rules, and counts it with the functions the single-point commands use: parameters from
:func:`paramscope.count`, FLOPs from :func:`paramscope.flops`, memory from
:func:`paramscope.estimate_memory` (never a second implementation). A point that cannot be
built (a width the heads do not divide) is a row with its error. For transformer families
(a config with layers and width) the parameter counts are fitted by least squares to the
closed form ``a·L·d² + b·L·d + c·V·d + …`` so the scaling law of *this* model is printed with
its largest relative residual.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ArgumentError, ParamscopeError

__all__ = ["SweepFit", "SweepReport", "parse_grid", "sweep"]

#: config keys read for the closed form (the same keys :func:`paramscope.flops`'s analytic
#: count reads)
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
_WIDTH = ("hidden_size", "n_embd", "d_model")
_VOCAB = ("vocab_size",)

#: the closed form's terms in the order they are kept (a term that the grid cannot tell apart
#: from the ones before it is dropped): L layers, d width, V vocabulary
_TERMS: tuple[tuple[str, Any], ...] = (
    ("L·d²", lambda L, d, V: L * d * d),
    ("L·d", lambda L, d, V: L * d),
    ("V·d", lambda L, d, V: V * d),
    ("d", lambda L, d, V: d),
)


@dataclass
class SweepFit:
    """The closed form fitted to a sweep's parameter counts.

    Attributes:
        family: the model family the form is for (the config's ``model_type``, or the zoo
            config's name), e.g. ``"gpt2"``, ``"llama"``.
        terms: ``[(term, coefficient), ...]``, e.g. ``[("L·d²", 12.0), ("L·d", 13.0), ...]``;
            ``L`` layers, ``d`` width, ``V`` vocabulary.
        max_relative_residual: ``max |fit - params| / params`` over the grid points.
        points: the points fitted.
    """

    family: str
    terms: list[tuple[str, float]]
    max_relative_residual: float
    points: int

    def predict(self, layers: int, width: int, vocab: int) -> float:
        """The fitted parameter count of one configuration.

        Args:
            layers: ``L``.
            width: ``d``.
            vocab: ``V``.

        Returns:
            The fitted count.
        """
        funcs = dict(_TERMS)
        return sum(c * funcs[t](layers, width, vocab) for t, c in self.terms)

    def formula(self) -> str:
        """The form as text, e.g. ``params ≈ 12·L·d² + 13·L·d + 1.02·V·d``.

        Returns:
            The formula.
        """
        parts = []
        for i, (t, c) in enumerate(self.terms):
            num = f"{abs(c):.6g}"
            body = num if t == "1" else f"{num}·{t}"
            parts.append(
                ("-" if c < 0 else "") + body if i == 0 else ("- " if c < 0 else "+ ") + body
            )
        return "params ≈ " + " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form.

        Returns:
            ``family, formula, terms, max_relative_residual, points``.
        """
        return {
            "family": self.family,
            "formula": self.formula(),
            "terms": {t: c for t, c in self.terms},
            "max_relative_residual": self.max_relative_residual,
            "points": self.points,
        }


@dataclass
class SweepReport:
    """The result of :func:`sweep`: one row per grid point.

    Attributes:
        target: the TARGET swept.
        swept: the argument names that take several values, in grid order.
        fixed: arguments every point shares.
        rows: one dict per point: ``args`` (that point's swept values), ``params``,
            ``trainable``, ``active_params`` (MoE, else ``None``), ``flops_per_token`` and
            ``flops`` (with ``flops=True``), ``memory_bytes`` (with ``memory=True``), and
            ``error`` (``None``, or the one-line error of a point that could not be built).
        settings: the options used (``flops``, ``seq``, ``batch``, ``analytic``, ``memory``,
            ``train``, ``dtype``, ``workers``).
        fit: the closed form fitted to the parameters, or ``None``.
        fit_note: why there is no closed form (``None`` when there is one).
    """

    target: str
    swept: list[str]
    fixed: dict[str, Any]
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    fit: SweepFit | None = None
    fit_note: str | None = None

    @property
    def errors(self) -> int:
        """Points that could not be built or counted."""
        return sum(r["error"] is not None for r in self.rows)

    def columns(self) -> list[str]:
        """The measure columns present, in table order.

        Returns:
            E.g. ``["params", "trainable", "flops_per_token"]``.
        """
        cols = ["params", "trainable"]
        if any(r.get("active_params") is not None for r in self.rows):
            cols.append("active_params")
        if self.settings.get("flops"):
            cols.append("flops_per_token")
        if self.settings.get("memory"):
            cols.append("memory_bytes")
        return cols

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``paramscope sweep --json``).

        Returns:
            ``target, swept, fixed, settings, rows, errors, fit, fit_note``.
        """
        return {
            "target": self.target,
            "swept": self.swept,
            "fixed": self.fixed,
            "settings": self.settings,
            "rows": self.rows,
            "errors": self.errors,
            "fit": None if self.fit is None else self.fit.to_dict(),
            "fit_note": self.fit_note,
        }

    def to_csv(self) -> str:
        """The table as CSV: one column per swept argument, then the measures and ``error``.

        Returns:
            The CSV text (header line first, ``\\n`` line ends).

        Example:
            >>> r = sweep("zoo:mlp-3-5-2", {})
            >>> r.to_csv().splitlines()[0]
            'params,trainable,error'
        """
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = self.columns()
        w.writerow([*self.swept, *cols, "error"])
        for r in self.rows:
            w.writerow(
                [
                    *(_cell(r["args"].get(k)) for k in self.swept),
                    *("" if r.get(c) is None else r[c] for c in cols),
                    r["error"] or "",
                ]
            )
        return buf.getvalue()

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope sweep`` prints: the table, then the closed form.

        Args:
            width: unused (lines are as wide as their content).

        Returns:
            The text, without a final newline; strings are escaped for a terminal.
        """
        from .._tables import aligned
        from .._text import printable
        from .._units import format_bytes, format_count

        s = self.settings
        head = (
            f"sweep {printable(self.target)}: {len(self.rows)} point(s)"
            + (f" over {' × '.join(self.swept)}" if self.swept else "")
            + (f", {self.errors} failed" if self.errors else "")
        )
        lines = [head]
        if self.fixed:
            lines.append(
                "fixed: " + ", ".join(f"{k}={printable(_cell(v))}" for k, v in self.fixed.items())
            )
        cols = self.columns()
        titles = {
            "params": "params",
            "trainable": "trainable",
            "active_params": "active",
            "flops_per_token": f"FLOPs/token (seq {s.get('seq')}"
            + (", analytic)" if s.get("analytic") else ")"),
            "memory_bytes": "memory (" + ("training" if s.get("train") else "inference") + ")",
        }
        header = [*self.swept, *(titles[c] for c in cols)]
        table = []
        for r in self.rows:
            cells = [printable(_cell(r["args"].get(k))) for k in self.swept]
            if True:  # a failed point shows what was counted before its error
                for c in cols:
                    v = r.get(c)
                    if v is None:
                        cells.append("-")
                    elif c == "memory_bytes":
                        cells.append(format_bytes(v))
                    elif c == "flops_per_token":
                        cells.append(format_count(round(v)) if v == round(v) else f"{v:,.1f}")
                    else:
                        cells.append(format_count(v))
            table.append(cells)
        if not header:
            header, table = ["point"], [["1"] for _ in self.rows]
        lines += aligned(["#", *header], [[str(i + 1), *c] for i, c in enumerate(table)])
        for i, r in enumerate(self.rows):
            if r["error"] is not None:
                lines.append(f"point {i + 1}: {printable(r['error'])}")
        if self.fit is not None:
            f = self.fit
            lines.append(
                f"closed form for the {printable(f.family)} family (least squares over "
                f"{f.points} points; L layers, d width, V vocabulary): {f.formula()}; max "
                f"relative residual {f.max_relative_residual:.3g}"
            )
        elif self.fit_note:
            lines.append(printable(self.fit_note))
        return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    import json

    return json.dumps(v)


def parse_grid(pairs: Iterable[str]) -> dict[str, list[Any]]:
    """Parse the CLI's ``--arg key=v1,v2,...`` into a grid.

    A value that is JSON as a whole (``4``, ``[4, 8]``, ``"a,b"``) is one value; otherwise it
    is split on commas and each piece is read as :func:`paramscope._targets.parse_args` reads a
    value (JSON when it parses, else a string).

    Args:
        pairs: e.g. ``["hidden_size=512,1024", "num_hidden_layers=2"]``.

    Returns:
        ``{key: [values]}`` in the order given; a key given twice has its values appended.

    Raises:
        ArgumentError: a pair without ``=`` or an empty value in a list.

    Example:
        >>> parse_grid(["n_embd=64,128", "n_layer=2", "name=a,b"])
        {'n_embd': [64, 128], 'n_layer': [2], 'name': ['a', 'b']}
    """
    import json

    from .._targets import parse_args

    out: dict[str, list[Any]] = {}
    for pair in pairs:
        key = next(iter(parse_args([pair])))  # checks the key=value form
        raw = pair.partition("=")[2]
        try:
            json.loads(raw)
            pieces = [raw]
        except json.JSONDecodeError:
            pieces = raw.split(",")
        if any(not p.strip() for p in pieces):
            raise ArgumentError(
                f"--arg {pair!r}: an empty value in the list; expected key=v1,v2,..., e.g. "
                "--arg hidden_size=512,1024"
            )
        out.setdefault(key, []).extend(parse_args([f"{key}={p}"])[key] for p in pieces)
    return out


def _points(
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """The grid's points, the swept names and the fixed arguments."""
    if isinstance(grid, Mapping):
        values: dict[str, list[Any]] = {}
        for k, v in grid.items():
            if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
                raise ArgumentError(
                    f"sweep: grid[{k!r}] = {v!r}; expected a list of values, e.g. [512, 1024]"
                )
            values[k] = list(v)
            if not values[k]:
                raise ArgumentError(f"sweep: grid[{k!r}] is empty; expected at least one value")
        swept = [k for k, v in values.items() if len(v) > 1]
        fixed = {k: v[0] for k, v in values.items() if len(v) == 1}
        points = [
            dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())
        ]
        return points, swept, fixed
    points = [dict(p) for p in grid]
    if not points or not all(isinstance(p, Mapping) for p in grid):
        raise ArgumentError(
            "sweep: grid is a list; expected a non-empty list of {argument: value} dicts, or "
            "a dict {argument: [values]}"
        )
    keys = list(dict.fromkeys(k for p in points for k in p))
    swept = [k for k in keys if len({_cell(p.get(k)) for p in points}) > 1]
    fixed = {k: points[0][k] for k in keys if k not in swept}
    return points, swept, fixed


def _config_int(config: Any, keys: Sequence[str]) -> int | None:
    from ._flops import _config_int as read

    return read(config, keys)


def _family(obj: Any, config: Any) -> str:
    name = getattr(config, "model_type", None) or (
        config.get("model_type") if isinstance(config, dict) else None
    )
    if isinstance(name, str) and name:
        return name
    cls = type(config).__name__
    return cls[: -len("Config")].lower() if cls.endswith("Config") else type(obj).__name__


def _shape_of(obj: Any, target: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """``{layers, width, vocab, family}`` from the point's config, or ``None``."""
    config = getattr(obj, "config", None)
    if config is None and not hasattr(obj, "parameters"):  # a Manifest from a config.json
        from pathlib import Path

        from .._hfconfig import read_hf_config
        from .._target_kind import config_path

        path = config_path(Path(target))
        config = None if path is None else read_hf_config(path, args).data
    if config is None:
        return None
    layers, width = _config_int(config, _LAYERS), _config_int(config, _WIDTH)
    if layers is None or width is None:
        return None
    return {
        "layers": layers,
        "width": width,
        "vocab": _config_int(config, _VOCAB) or 0,
        "family": _family(obj, config),
    }


def _one(job: tuple[str, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """Build and count one point; a failure is the row's ``error``."""
    target, args, opts = job
    row: dict[str, Any] = {
        "params": None,
        "trainable": None,
        "active_params": None,
        "flops_per_token": None,
        "flops": None,
        "memory_bytes": None,
        "error": None,
        "shape": None,
    }
    try:
        from .._targets import resolve_source, resolve_target
        from ._count import count

        need_module = opts["flops"]
        obj = resolve_target(target, args) if need_module else resolve_source(target, args)
        if isinstance(obj, str):
            raise ArgumentError(
                f"sweep: {target} is a checkpoint, whose shapes are fixed; expected a model "
                "TARGET (zoo:NAME, package.module:callable or an HF config.json)"
            )
        c = count(obj)
        row.update(params=c.params, trainable=c.trainable, active_params=c.active_params)
        row["shape"] = _shape_of(obj, target, args)
        if opts["flops"]:
            from ._flops import flops

            seq, batch = opts["seq"], opts["batch"]
            r = flops(obj, seq=seq, batch=batch, analytic=opts["analytic"])
            row["flops"] = r.forward_flops
            row["flops_per_token"] = r.forward_flops / (seq * batch)
        if opts["memory"]:
            from ._memory import estimate_memory

            train = opts["train"]
            est = estimate_memory(
                obj,
                dtype=opts["dtype"],
                training=train,
                batch=opts["batch"],
                seq=opts["seq"] if train else None,
                context=None if train else opts["seq"],
            )
            row["memory_bytes"] = est.per_gpu_bytes
    except Exception as exc:  # a bad point (a bug in the callable too) is a row, not a crash
        msg = " ".join(str(exc).split()) or type(exc).__name__
        row["error"] = msg if isinstance(exc, ParamscopeError) else f"{type(exc).__name__}: {msg}"
    return row


def _auto_workers(n: int, opts: dict[str, Any]) -> int:
    """Processes worth starting. Building and counting alone take milliseconds a point, less
    than a process start (one process); a measured forward per point is spread over the CPUs
    from 16 points on (bench/p16_sweep.py: on two shared vCPUs, two processes ≈ 1.3× faster
    than one once the first point has warmed up the parent)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not opts["flops"] or opts["analytic"] or n < 16 or not cpus or cpus < 2:
        return 1
    return min(cpus, n // 8)


def _run(
    jobs: list[tuple[str, dict[str, Any], dict[str, Any]]], workers: int
) -> list[dict[str, Any]]:
    """Every job's row, in order. With several workers the first point runs here first, so
    the one-time costs of a first forward (lazy imports, the flop counter's tables) are paid
    once, before the processes fork, not once per process."""
    if workers <= 1 or len(jobs) < 3:
        return [_one(j) for j in jobs]
    import multiprocessing

    first = _one(jobs[0])
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    rest = jobs[1:]
    chunk = max(1, len(rest) // (workers * 4))
    with ctx.Pool(min(workers, len(rest))) as pool:
        return [first, *pool.map(_one, rest, chunksize=chunk)]


def _fit(rows: list[dict[str, Any]], target: str) -> tuple[SweepFit | None, str | None]:
    """Least squares of the parameters over the closed form's terms."""
    ok = [r for r in rows if r["params"] is not None]
    if not ok:
        return None, "no closed form: no point was built"
    shapes = [r["shape"] for r in ok]
    if any(s is None for s in shapes):
        return None, (
            f"no closed form: {target} has no config with layers and width (a transformer "
            "family); only the table"
        )
    families = sorted({s["family"] for s in shapes})
    import numpy as np

    x = np.array(
        [[f(s["layers"], s["width"], s["vocab"]) for _, f in _TERMS] for s in shapes], dtype=float
    )
    y = np.array([r["params"] for r in ok], dtype=float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    xs = x / scale
    keep: list[int] = []
    for j in range(len(_TERMS)):
        if not np.any(xs[:, j]):
            continue
        trial = [*keep, j]
        if np.linalg.matrix_rank(xs[:, trial], tol=1e-9) == len(trial):
            keep = trial
    if len(ok) <= len(keep):
        return None, (
            f"no closed form: {len(ok)} point(s) for {len(keep)} term(s); sweep more values of "
            "the layers and width to fit one"
        )
    coef, *_ = np.linalg.lstsq(xs[:, keep], y, rcond=None)
    coef = coef / scale[keep]
    pred = x[:, keep] @ coef
    resid = float(np.max(np.abs(pred - y) / np.maximum(y, 1.0)))
    terms = [(_TERMS[j][0], _round(float(c))) for j, c in zip(keep, coef, strict=True)]
    return SweepFit(" / ".join(families), terms, resid, len(ok)), None


def _round(c: float) -> float:
    """A coefficient within 1e-6 of an integer is that integer (float noise of the solve)."""
    r = round(c)
    return float(r) if abs(c - r) <= 1e-6 * max(1.0, abs(c)) else c


def sweep(
    target: str | os.PathLike[str],
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    flops: bool = False,
    seq: int | None = None,
    batch: int = 1,
    analytic: bool = False,
    memory: bool = False,
    train: bool = False,
    dtype: str | None = None,
    workers: int | None = None,
) -> SweepReport:
    """Build every point of a grid of arguments on meta and count it: parameters, and when
    asked FLOPs per token and memory, with the closed form fitted for transformer families.

    Args:
        target: a model TARGET: ``zoo:NAME`` (grid keys are config fields),
            ``package.module:callable`` (keyword arguments) or an HF ``config.json``
            (config overrides).
        grid: ``{argument: [values]}`` (every combination, the first key slowest), or a list
            of ``{argument: value}`` points.
        flops: also FLOPs per token of one forward (:func:`paramscope.flops` with token ids of
            ``batch × seq``; needs ``seq``).
        seq: sequence length for FLOPs, and for memory: training activations with ``train``,
            else the KV cache of a ``seq``-token context.
        batch: sequences per forward (FLOPs) and micro-batch (memory).
        analytic: FLOPs by Kaplan's formula from the config (``flops(analytic=True)``), no
            forward.
        memory: also :func:`paramscope.estimate_memory`'s per-GPU bytes.
        train: memory for training (weights, gradients, AdamW states) instead of inference.
        dtype: the dtype memory is estimated in (``None``: as built).
        workers: processes building the points (``None``: several only when each point runs
            a measured forward and there are enough points to pay for starting them).

    Returns:
        A :class:`SweepReport`; a point that cannot be built is a row with ``error``.

    Raises:
        ArgumentError: an empty grid or list of values, ``flops`` without ``seq``, or every
            point failing (the first error is named).

    Example:
        >>> r = sweep("zoo:gpt2", {"n_layer": [2, 4], "n_embd": [64, 128], "n_head": [4]})
        >>> [row["params"] for row in r.rows]
        [3382080, 6960768, 3482048, 7357312]
        >>> r.fit.terms[:2]
        [('L·d²', 12.0), ('L·d', 13.0)]
    """
    if flops and seq is None:
        raise ArgumentError("sweep: flops=True needs seq= (the tokens of one forward), e.g. 2048")
    for name, v in (("seq", seq), ("batch", batch)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ArgumentError(f"sweep: {name}={v!r}; expected a positive integer")
    points, swept, fixed = _points(grid)
    opts = {
        "flops": flops,
        "seq": seq,
        "batch": batch,
        "analytic": analytic,
        "memory": memory,
        "train": train,
        "dtype": dtype,
    }
    spec = os.fspath(target)
    n = _auto_workers(len(points), opts) if workers is None else max(1, int(workers))
    rows = _run([(spec, p, opts) for p in points], n)
    if all(r["error"] is not None for r in rows):
        raise ArgumentError(
            f"sweep {spec}: every point failed ({len(rows)}); the first "
            f"({_cell(points[0]) or 'no arguments'}): {rows[0]['error']}"
        )
    fit, note = _fit(rows, spec)
    out = []
    for p, r in zip(points, rows, strict=True):
        r.pop("shape")
        out.append({"args": {k: p.get(k) for k in swept}, **r})
    return SweepReport(
        target=spec,
        swept=swept,
        fixed=fixed,
        rows=out,
        settings={**opts, "workers": n},
        fit=fit,
        fit_note=note,
    )
