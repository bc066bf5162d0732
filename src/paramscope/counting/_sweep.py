"""Config sweeps: build every point of a grid of arguments on meta and count it.

:func:`sweep` builds each grid point of a model TARGET (``zoo:NAME``,
``package.module:callable``, an HF ``config.json``) with :func:`paramscope.resolve_target`'s
rules, and counts it with the functions the single-point commands use: parameters from
:func:`paramscope.count`, FLOPs from :func:`paramscope.flops`, memory from
:func:`paramscope.estimate_memory` (never a second implementation). A point that cannot be
built (a width the heads do not divide) is a row with its error. For transformer families
(a config with layers and width) the parameter counts get a closed form, so the scaling law
of *this* model is printed with its largest relative residual: the embedding tables and an
untied LM head are counted from every built point as exact terms (``V·d + P·d`` for GPT-2,
``2·V·d`` for an untied Llama), and the rest is fitted by least squares over ``L·d², L·d·F,
L·d, d, …`` (see :class:`SweepFit`), e.g. ``params = 4·L·d² + 3·L·d·F + 2·L·d + d + 2·V·d``.
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
_POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx")
_TYPES = ("type_vocab_size",)
_FFN = ("intermediate_size", "n_inner", "ffn_dim", "d_ff")
_HEADS = ("num_attention_heads", "n_head", "num_heads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")

#: what each size symbol stands for (the legend printed with the form), in legend order
_SYMBOLS: dict[str, str] = {
    "L": "layers",
    "d": "width",
    "F": "intermediate size",
    "K": "key/value width",
    "V": "vocabulary",
    "P": "positions",
    "T": "token types",
}

#: the fitted terms, as the size symbols multiplied, in the order they are kept: a term the
#: grid cannot tell apart from the ones before it is dropped (and the fit's note says so); a
#: term whose symbol the config does not name (no intermediate size: no F) is not tried
_TERMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("L·d²", ("L", "d", "d")),
    ("L·d·F", ("L", "d", "F")),
    ("L·d", ("L", "d")),
    ("d", ("d",)),
    ("L·d·K", ("L", "d", "K")),
    ("L·F", ("L", "F")),
    ("L·K", ("L", "K")),
    ("L", ("L",)),
    ("d²", ("d", "d")),
    ("1", ()),
)

#: the order the fitted terms are shown in (the blocks' terms first, the rest after)
_SHOWN = ("L·d²", "L·d·F", "L·d·K", "L·d", "L·F", "L·K", "L", "d²", "d", "1")

#: the exact terms: matrices counted from each built point, never fitted (embeddings of the
#: vocabulary, positions and token types, an untied LM head and its bias)
_EXACT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("V·d", ("V", "d")),
    ("P·d", ("P", "d")),
    ("T·d", ("T", "d")),
    ("V", ("V",)),
)

#: a fit is exact when every point is within this relative error (then the coefficients are
#: rounded to integers and the residual recomputed in integers)
_EXACT_TOL = 1e-9


def _value(symbols: tuple[str, ...], sizes: Mapping[str, int | None]) -> int | None:
    """The product of the sizes a term names (``None`` when one is unknown)."""
    v = 1
    for s in symbols:
        x = sizes.get(s)
        if x is None:
            return None
        v *= x
    return v


@dataclass
class SweepFit:
    """The closed form of a sweep's parameter counts: exact terms counted from each built
    point, plus terms fitted by least squares.

    The embedding matrices (vocabulary ``V·d``, positions ``P·d``, token types ``T·d``) and an
    untied LM head (a linear layer with ``V`` outputs, ``V·d`` and its bias ``V``) are counted
    from every built model and kept as exact terms whose coefficient is how many such matrices
    there are. The rest is fitted over ``L·d², L·d·F, L·d, d, L·d·K, L·F, L·K, L, d², 1``
    (those whose sizes the config names and the grid moves; as few, in this order, as give
    every point, and fewer than the points); a term the grid cannot tell apart from the ones
    kept is dropped and :attr:`note` says which and why.

    Attributes:
        family: the model family the form is for (the config's ``model_type``, or the zoo
            config's name), e.g. ``"gpt2"``, ``"llama"``.
        terms: the fitted terms ``[(term, coefficient), ...]``, e.g. ``[("L·d²", 12.0),
            ("L·d", 13.0), ("d", 2.0)]``; integers when the fit is exact. ``L`` layers, ``d``
            width, ``F`` intermediate size, ``K`` key/value width (``kv heads × head
            width``).
        max_relative_residual: ``max |form - params| / params`` over the grid points (``0.0``
            when the form gives every point exactly).
        points: the points fitted.
        exact: the exact terms ``[(term, matrices), ...]``, e.g. ``[("V·d", 1), ("P·d", 1)]``
            for GPT-2, ``[("V·d", 2)]`` for an untied Llama; ``V`` vocabulary, ``P``
            positions, ``T`` token types, as the config names them.
        note: the terms dropped and why (a term that is a multiple or a combination of kept
            terms over this grid), or ``None``.
        sizes: the sizes of the form's symbols that were the same at every point, e.g.
            ``{"V": 50257, "P": 1024}``; :meth:`predict` uses them for the sizes it is not
            given.
    """

    family: str
    terms: list[tuple[str, float]]
    max_relative_residual: float
    points: int
    exact: list[tuple[str, int]] = field(default_factory=list)
    note: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    def predict(
        self,
        layers: int,
        width: int,
        vocab: int | None = None,
        *,
        positions: int | None = None,
        ffn: int | None = None,
        kv_width: int | None = None,
        token_types: int | None = None,
    ) -> float:
        """The parameter count the form gives for one configuration.

        Args:
            layers: ``L``.
            width: ``d``.
            vocab: ``V`` (``None``: the grid's, when it was the same at every point).
            positions: ``P`` (``None``: the grid's).
            ffn: ``F``, the intermediate size (``None``: the grid's).
            kv_width: ``K``, key/value heads × head width (``None``: the grid's).
            token_types: ``T`` (``None``: the grid's).

        Returns:
            The count: an ``int`` when every coefficient is an integer, else a float.

        Raises:
            ArgumentError: the form has a term whose size was not given and varied over the
                grid.

        Example:
            >>> r = sweep("zoo:gpt2", {"n_layer": [2, 4, 6], "n_embd": [64, 128], "n_head": [4]})
            >>> r.fit.predict(12, 768, 50257)
            124439808
        """
        given = {
            "V": vocab,
            "P": positions,
            "F": ffn,
            "K": kv_width,
            "T": token_types,
        }
        sizes: dict[str, int | None] = {
            **self.sizes,
            **{k: v for k, v in given.items() if v is not None},
            "L": layers,
            "d": width,
        }
        names = {"V": "vocab", "P": "positions", "F": "ffn", "K": "kv_width", "T": "token_types"}
        funcs = dict(_TERMS + _EXACT)
        total: float = 0
        for t, c in [*self.terms, *self.exact]:
            v = _value(funcs[t], sizes)
            if v is None:
                s = next(s for s in funcs[t] if sizes.get(s) is None)
                raise ArgumentError(
                    f"SweepFit.predict: the form has {t} and {s} ({_SYMBOLS[s]}) varied over "
                    f"the grid; expected {names[s]}= to be given"
                )
            total += (int(c) if c == int(c) else c) * v
        return total

    def formula(self) -> str:
        """The form as text: the fitted terms, then the exact ones, e.g. ``params = 12·L·d² +
        13·L·d + 2·d + V·d + P·d`` (``=`` when it gives every point exactly, else ``≈``).

        Returns:
            The formula.

        Example:
            >>> SweepFit("gpt2", [("L·d²", 12.0), ("d", 2.0)], 0.0, 6, [("V·d", 1)]).formula()
            'params = 12·L·d² + 2·d + V·d'
        """
        parts = []
        for i, (t, c) in enumerate([*self.terms, *self.exact]):
            num = f"{abs(c):.6g}"
            body = num if t == "1" else t if abs(c) == 1 else f"{num}·{t}"
            parts.append(
                ("-" if c < 0 else "") + body if i == 0 else ("- " if c < 0 else "+ ") + body
            )
        sign = "=" if self.max_relative_residual == 0 else "≈"
        return f"params {sign} " + (" ".join(parts) or "0")

    def legend(self) -> str:
        """What the form's symbols stand for, with the sizes fixed over the grid.

        Returns:
            The symbols the form uses (always ``L`` and ``d``), each with its size when the
            grid kept it fixed.

        Example:
            >>> fit = SweepFit("gpt2", [("L·d²", 12.0)], 0.0, 6, [("V·d", 1)], sizes={"V": 50257})
            >>> fit.legend()
            'L layers, d width, V vocabulary (50257)'
        """
        used = {s for t, _ in [*self.terms, *self.exact] for s in dict(_TERMS + _EXACT)[t]}
        return ", ".join(
            f"{s} {name}" + (f" ({self.sizes[s]})" if s in self.sizes and s not in "Ld" else "")
            for s, name in _SYMBOLS.items()
            if s in used or s in "Ld"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form.

        Returns:
            ``family, formula, terms`` (the fitted ``{term: coefficient}``),
            ``max_relative_residual, points``, and ``exact`` (``{term: matrices}``), ``note``,
            ``sizes`` (the sizes fixed over the grid).
        """
        return {
            "family": self.family,
            "formula": self.formula(),
            "terms": {t: c for t, c in self.terms},
            "max_relative_residual": self.max_relative_residual,
            "points": self.points,
            "exact": {t: n for t, n in self.exact},
            "note": self.note,
            "sizes": dict(self.sizes),
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
        fit: the closed form of the parameters (exact terms and fitted ones), or ``None``.
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
                f"{f.points} points; {f.legend()}): {f.formula()}; max "
                f"relative residual {f.max_relative_residual:.3g}"
            )
            if f.note:
                lines.append(f"note: {printable(f.note)}")
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
    """``{layers, width, vocab, family, sizes, exact}`` from the point's config and model (the
    size of every symbol the config names, the exact terms counted by :func:`_exact_of`), or
    ``None``."""
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
    sizes: dict[str, int | None] = {
        "L": layers,
        "d": width,
        "V": _config_int(config, _VOCAB),
        "P": _config_int(config, _POSITIONS),
        "T": _config_int(config, _TYPES),
        "F": _config_int(config, _FFN),
        "K": None,
    }
    kv, heads = _config_int(config, _KV_HEADS), _config_int(config, _HEADS)
    if kv is not None and heads is not None:
        head = _config_int(config, ("head_dim",)) or width // heads
        sizes["K"] = kv * head
    return {
        "layers": layers,
        "width": width,
        "vocab": sizes["V"] or 0,
        "family": _family(obj, config),
        "sizes": sizes,
        **_exact_of(obj, sizes),
    }


def _in_block(name: str) -> bool:
    """Whether a dotted name lies inside a repeated block (a numbered segment: ``h.3.mlp``)."""
    return any(part.isdigit() for part in name.split("."))


def _embedding_term(name: str, rows: int, sizes: Mapping[str, int | None]) -> str | None:
    """The exact term of an embedding table of ``rows`` rows called ``name``: positions and
    token types by name first (a vocabulary may equal the positions), then by size."""
    low = name.lower()
    if rows == sizes["P"] and ("pos" in low or "wpe" in low):
        return "P·d"
    if rows == sizes["T"] and "type" in low:
        return "T·d"
    for term, s in (("V·d", "V"), ("P·d", "P"), ("T·d", "T")):
        if rows == sizes[s]:
            return term
    return None


def _exact_of(obj: Any, sizes: Mapping[str, int | None]) -> dict[str, Any]:
    """``{"exact": {term: matrices}, "unmatched": [table, ...]}`` of one built point: the
    embedding tables outside the blocks whose rows are the vocabulary, positions or token
    types and whose width is ``d``, and an untied LM head (``V`` outputs from ``d``: ``V·d``,
    its bias ``V``); a table of width ``d`` whose rows are none of those is named in
    ``unmatched`` (``"name (rows)"``, left to the fit). Parameters shared with one already
    counted (a tied head) are not counted again. A module is read through its layers, a
    :class:`Manifest` (a config counted analytically) through its entries."""
    d = sizes["d"]
    out: dict[str, int] = {}
    unmatched: list[str] = []
    result = {"exact": out, "unmatched": unmatched}

    def add(term: str | None, name: str = "", rows: int = 0) -> None:
        if term is not None:
            out[term] = out.get(term, 0) + 1
        else:
            unmatched.append(f"{name} ({rows} rows)")

    if hasattr(obj, "named_modules"):
        import torch

        seen: set[int] = set()
        heads: list[tuple[str, Any]] = []
        for name, mod in obj.named_modules():
            if _in_block(name):
                continue
            if isinstance(mod, torch.nn.Embedding) and mod.embedding_dim == d:
                if id(mod.weight) not in seen:
                    seen.add(id(mod.weight))
                    rows = mod.num_embeddings
                    add(_embedding_term(name, rows, sizes), name, rows)
            elif isinstance(mod, torch.nn.Linear) and (mod.out_features, mod.in_features) == (
                sizes["V"],
                d,
            ):
                heads.append((name, mod))
        for _, mod in heads:  # after the embeddings, so a tied head is seen as one
            if id(mod.weight) not in seen:
                seen.add(id(mod.weight))
                add("V·d")
            if mod.bias is not None and id(mod.bias) not in seen:
                seen.add(id(mod.bias))
                add("V")
        return result
    entries = getattr(obj, "values", None)
    if entries is None:
        return result
    from .._enums import Role

    for e in entries():
        if e.tie is not None or e.role is not Role.PARAM or _in_block(e.name):
            continue
        module, _, leaf = e.name.rpartition(".")
        last = module.rpartition(".")[2].lower()
        if leaf == "weight" and len(e.shape) == 2 and e.shape[1] == d:
            if "emb" in last or last in ("wte", "wpe"):
                add(_embedding_term(module, e.shape[0], sizes), module, e.shape[0])
            elif e.shape[0] == sizes["V"]:
                add("V·d")
        elif leaf == "bias" and e.shape == (sizes["V"],) and "emb" not in last:
            head = obj.get(f"{module}.weight")
            if head is not None and head.tie is None and head.shape == (sizes["V"], d):
                add("V")
    return result


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
            r = flops(obj, seq=seq, batch=batch, analytic=opts["analytic"], _cache=_block_cache())
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
    from 16 points on (bench/p16_sweep.py, 100 points on two shared vCPUs: two processes
    ≈ 1.3× faster than one when every block ran; ≈ 1.1× since repeated blocks reuse their
    measured FLOPs, which the processes forked after the first point inherit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not opts["flops"] or opts["analytic"] or n < 16 or not cpus or cpus < 2:
        return 1
    return min(cpus, n // 8)


#: The blocks this process has measured during the current sweep: a block measured at one
#: point is reused at the others where it is identical (same class, shapes, attributes and
#: inputs; see counting/_flops_reuse.py). Emptied when a sweep starts and ends.
_BLOCKS: list[Any] = []


def _block_cache() -> Any:
    """The current sweep's :class:`~paramscope.counting._flops_reuse.BlockCache`."""
    if not _BLOCKS:
        from ._flops_reuse import BlockCache

        _BLOCKS.append(BlockCache())
    return _BLOCKS[0]


def _run(
    jobs: list[tuple[str, dict[str, Any], dict[str, Any]]], workers: int
) -> list[dict[str, Any]]:
    """Every job's row, in order. With several workers the first point runs here first, so
    the one-time costs of a first forward (lazy imports, the flop counter's tables) are paid
    once, before the processes fork, not once per process (and the blocks it measured are
    known to every process)."""
    _BLOCKS.clear()
    try:
        return _run_points(jobs, workers)
    finally:
        _BLOCKS.clear()


def _run_points(
    jobs: list[tuple[str, dict[str, Any], dict[str, Any]]], workers: int
) -> list[dict[str, Any]]:
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
    """The closed form of the parameters: the exact terms counted at every point, then least
    squares of the rest over the terms the grid can tell apart, as few as give every point
    (in :data:`_TERMS`' order, always fewer than the points, so the points check the form)."""
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

    n = len(ok)
    params = [int(r["params"]) for r in ok]
    sizes = [s["sizes"] for s in shapes]
    notes: list[str] = []
    exact: list[tuple[str, int]] = []
    for term, _ in _EXACT:
        counts = sorted({s["exact"].get(term, 0) for s in shapes})
        if counts == [0]:
            continue
        if len(counts) > 1:
            notes.append(
                f"{term} is {counts[0]} to {counts[-1]} matrices over the grid (a table or a "
                "head present, or tied, at some points only), so it is left to the fit"
            )
            continue
        exact.append((term, counts[0]))
    unmatched = sorted({u for s in shapes for u in s["unmatched"]})
    if unmatched:
        notes.append(
            "embedding tables whose rows are not the vocabulary, positions or token types are "
            "left to the fit: " + ", ".join(unmatched[:3]) + (" …" if len(unmatched) > 3 else "")
        )
    funcs = dict(_TERMS + _EXACT)
    rest = [
        p - sum(c * (_value(funcs[t], sz) or 0) for t, c in exact)
        for p, sz in zip(params, sizes, strict=True)
    ]
    fixed = {
        k: sizes[0][k]
        for k in _SYMBOLS
        if k not in "Ld" and sizes[0][k] is not None and all(sz[k] == sizes[0][k] for sz in sizes)
    }
    cand = [(t, syms) for t, syms in _TERMS if all(_value(syms, sz) for sz in sizes)]
    for s, v in fixed.items():  # a size the same at every point is part of the coefficients
        named = [t for t, syms in cand if s in syms and s in "FK"]
        if named:
            cand = [(t, syms) for t, syms in cand if t not in named]
            notes.append(
                f"{s} ({_SYMBOLS[s]}) is {v} at every point, so {', '.join(named)} are "
                f"counted in {', '.join(t.replace('·' + s, '') or '1' for t in named)}"
            )
    x = np.array([[_value(syms, sz) for _, syms in cand] for sz in sizes], dtype=float)
    x = x.reshape(n, len(cand))
    y = np.array(rest, dtype=float)
    scale = np.abs(x).max(axis=0) if cand else np.ones(0)
    scale[scale == 0] = 1.0
    xs = x / scale
    keep: list[int] = []
    dropped: list[str] = []
    for j in range(len(cand)):
        trial = [*keep, j]
        if np.linalg.matrix_rank(xs[:, trial], tol=1e-9) == len(trial):
            keep = trial
        else:
            dropped.append(_relation(xs, scale, keep, j, [t for t, _ in cand]))
    if dropped:
        notes.append(
            "dropped, as the grid cannot tell them apart from the terms kept (whose "
            "coefficients include their share): " + "; ".join(dropped)
        )
    denom = np.maximum(np.array(params, dtype=float), 1.0)
    cols: list[int] = []
    coef = np.zeros(0)
    err = float(np.max(np.abs(y) / denom))
    for k in range(1, min(len(keep), n - 1) + 1):
        if err <= _EXACT_TOL:
            break
        cols = keep[:k]
        sol, *_ = np.linalg.lstsq(xs[:, cols], y, rcond=None)
        coef = sol / scale[cols]
        err = float(np.max(np.abs(x[:, cols] @ coef - y) / denom))
    if err > _EXACT_TOL and len(cols) < len(keep):
        return None, (
            f"no closed form: {n} point(s) for {len(keep)} term(s); sweep more values of "
            "the layers and width to fit one"
        )
    terms = sorted(
        (
            (cand[j][0], c)
            for j, c in zip(cols, (_round(float(c)) for c in coef), strict=True)
            if c != 0
        ),
        key=lambda tc: _SHOWN.index(tc[0]),
    )
    resid = 0.0
    for p, sz in zip(params, sizes, strict=True):
        form = sum(
            (int(c) if c == int(c) else c) * (_value(funcs[t], sz) or 0)
            for t, c in [*terms, *exact]
        )
        resid = max(resid, float(abs(form - p)) / max(p, 1))
    used = {s for t, _ in [*terms, *exact] for s in funcs[t]}
    fixed = {s: v for s, v in fixed.items() if s in used}
    return (
        SweepFit(" / ".join(families), terms, resid, n, exact, "; ".join(notes) or None, fixed),
        None,
    )


def _relation(xs: Any, scale: Any, keep: list[int], j: int, names: list[str]) -> str:
    """How the dropped term ``j`` follows from the kept ones over the grid, e.g.
    ``"L·d·F = 4·L·d²"`` or ``"L = a combination of L·d², L·d"``."""
    import numpy as np

    if not keep:
        return f"{names[j]} (zero at every point)"
    a, *_ = np.linalg.lstsq(xs[:, keep], xs[:, j], rcond=None)
    big = [(k, float(c)) for k, c in zip(keep, a, strict=True) if abs(c) > 1e-9 * np.abs(a).max()]
    if len(big) == 1:
        k, c = big[0]
        r = _round(c * scale[j] / scale[k])
        return f"{names[j]} = " + (names[k] if r == 1 else f"{r:.6g}·{names[k]}")
    return f"{names[j]} = a combination of {', '.join(names[k] for k, _ in big)}"


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
        >>> r.fit.formula()
        'params = 12·L·d² + 13·L·d + 2·d + V·d + P·d'
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
