"""Per-layer change between two checkpoints: what a fine-tune, a merge or a quantisation did.

:func:`layer_changes` compares every tensor of ``a`` with the tensor of the same name in the
reference ``b``, reading at most one tensor per side at a time (files through
:class:`~paramscope.io._reader.SourceReader`, as :func:`paramscope.diff` does) and summing in
float64, :data:`~paramscope.reporting._stats.CHUNK` elements at a time. Per tensor
(:func:`tensor_change`):

* ``rel_change`` = ‖a − b‖₂ / ‖b‖₂ (infinite, ``None`` in :meth:`ChangeReport.to_dict`, when
  ‖b‖ = 0 and a ≠ b; 0 when both are zero),
* ``cosine`` = ⟨a, b⟩ / (‖a‖ ‖b‖) (1 when both are zero; NaN, ``None``, when only one is),
* ``sign_flips`` = the fraction of elements with a·b < 0,
* ``max_abs_change`` = max |a − b|, ``diff_l2`` = ‖a − b‖₂, ``ref_l2`` = ‖b‖₂,
* ``sqnr_db`` = 10·log10(‖b‖² / ‖a − b‖²) (+inf when equal, ``None`` in the dict),
* ``bits_per_weight`` of side ``a``: its stored bits (a quantised entry's data, scale and zero
  point entries together) over its logical elements.

Quantised sides are compared as the values they stand for: paramscope's own quantised entries
(``extra["quant"]``, :mod:`paramscope._quantstore`) are dequantised with their scale and zero
entries (which are not compared as tensors themselves, only counted in ``bits_per_weight``);
GGUF block types come dequantised from the reader (``bits_per_weight`` from the stored bytes).
Packed third-party layouts (GPTQ, AWQ, bitsandbytes, …), tensors of different shapes,
non-float tensors and tensors without values are listed in
:attr:`ChangeReport.unmatched` with the reason, never silently left out. No mapping of GGUF
names (``blk.0.attn_q.weight``) to other naming schemes exists in paramscope, so such names
only match the same names on the other side.

Each tensor gets the ``kind``, ``block`` and ``series`` that
:func:`~paramscope.reporting._stats.weight_stats` gives it, so the change can be drawn one
line per kind over the block index (:class:`ChangeReport` shares that machinery with
:class:`~paramscope.reporting._stats.StatsReport` through
:class:`~paramscope.reporting._stats.DepthReport`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import ArgumentTypeError, ParamscopeError, TargetError
from ._stats import (
    CHUNK,
    IN_MEMORY,
    DepthReport,
    _assign_series,
    _clean,
    _cut,
    _fmt,
    _num,
    block_of,
    classify,
)

if TYPE_CHECKING:
    import torch

    from .._diff import Side
    from .._manifest import Entry
    from .._names import Pattern

__all__ = ["CHANGE_STATS", "ChangeReport", "layer_changes", "tensor_change"]

#: The statistics of a compared tensor drawn across depth, in the order they are listed
#: (each row also has ``diff_l2`` and ``ref_l2``, from which a module's change is summed).
CHANGE_STATS: tuple[str, ...] = (
    "rel_change",
    "cosine",
    "sign_flips",
    "max_abs_change",
    "sqnr_db",
    "bits_per_weight",
)

#: Tensors named in :meth:`ChangeReport.worst` per statistic.
WORST = 5

#: Methods of quantised layouts whose values :func:`layer_changes` restores.
_DEQUANTISED = ("paramscope", "gguf")


def tensor_change(a: torch.Tensor, b: torch.Tensor, chunk: int | None = None) -> dict[str, Any]:
    """How much ``a`` differs from the reference ``b``, summed in float64 chunk by chunk.

    Args:
        a: a floating-point tensor (float8 / FP4 are widened).
        b: the reference, with as many elements as ``a`` (compared in flattened order).
        chunk: elements per float64 chunk (default :data:`~paramscope.reporting._stats.CHUNK`).

    Returns:
        ``{"numel", "rel_change", "cosine", "sign_flips", "max_abs_change", "diff_l2",
        "ref_l2", "sqnr_db"}`` (see the module doc for the conventions; NaN where a value is
        NaN or infinite).

    Raises:
        ShapeMismatchError: the element counts differ.

    Example:
        >>> import torch
        >>> c = tensor_change(torch.tensor([3.0, -4.0]), torch.tensor([3.0, 4.0]))
        >>> c["rel_change"], c["sign_flips"], c["max_abs_change"], round(c["cosine"], 2)
        (1.6, 0.5, 8.0, -0.28)
        >>> tensor_change(torch.ones(3), torch.ones(3))["sqnr_db"]
        inf
    """
    from .._errors import ShapeMismatchError
    from .._values import widen

    chunk = CHUNK if chunk is None else chunk
    fa = widen(a.detach()).reshape(-1)
    fb = widen(b.detach()).reshape(-1)
    n = fa.numel()
    if n != fb.numel():
        raise ShapeMismatchError(
            f"tensor_change: expected tensors with as many elements, found {n} and {fb.numel()}"
        )
    return _change_of(n, _slices(fa, chunk), _slices(fb, chunk))


def _slices(flat: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """``flat`` in pieces of ``chunk`` elements (views)."""
    for s in range(0, flat.numel(), chunk):
        yield flat[s : s + chunk]


def _change_of(
    n: int, pieces_a: Iterable[torch.Tensor], pieces_b: Iterable[torch.Tensor]
) -> dict[str, Any]:
    """:func:`tensor_change`'s numbers from two sequences of aligned pieces (the same
    element counts, in order) of ``n`` elements in all."""
    import torch

    from .._values import widen

    a2 = b2 = ab = d2 = 0.0
    flips = 0
    mx = 0.0
    for pa, pb in zip(pieces_a, pieces_b, strict=True):
        ca = widen(pa).to(torch.float64, copy=True)  # never the inputs themselves
        cb = widen(pb).to(torch.float64, copy=True)
        a2 += float(torch.dot(ca, ca))
        b2 += float(torch.dot(cb, cb))
        ab += float(torch.dot(ca, cb))
        flips += int(torch.count_nonzero(ca * cb < 0))
        ca.sub_(cb)
        d2 += float(torch.dot(ca, ca))
        m = float(ca.abs_().max())
        mx = math.nan if (m != m or mx != mx) else max(mx, m)
        del ca, cb
    finite = all(math.isfinite(v) for v in (a2, b2, ab, d2, mx))
    if not finite:
        nan = math.nan
        return {
            "numel": n,
            "rel_change": nan,
            "cosine": nan,
            "sign_flips": flips / n if n else 0.0,
            "max_abs_change": nan,
            "diff_l2": nan,
            "ref_l2": math.sqrt(b2) if math.isfinite(b2) else nan,
            "sqnr_db": nan,
        }
    diff_l2, ref_l2, a_l2 = math.sqrt(d2), math.sqrt(b2), math.sqrt(a2)
    rel = (diff_l2 / ref_l2) if ref_l2 > 0 else (math.inf if diff_l2 else 0.0)
    if d2 == 0:
        cos = 1.0  # equal (both zero included)
    elif a_l2 > 0 and ref_l2 > 0:
        prod = a2 * b2  # sqrt of the product: exactly ±1 for b = ±a (when it does not overflow)
        den = math.sqrt(prod) if 0 < prod < math.inf else a_l2 * ref_l2
        cos = min(1.0, max(-1.0, ab / den))
    else:
        cos = 1.0 if a_l2 == ref_l2 == 0 else math.nan
    if d2 == 0:
        sqnr = math.inf
    elif b2 == 0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(b2 / d2)
    return {
        "numel": n,
        "rel_change": rel,
        "cosine": cos,
        "sign_flips": flips / n if n else 0.0,
        "max_abs_change": mx,
        "diff_l2": diff_l2,
        "ref_l2": ref_l2,
        "sqnr_db": sqnr,
    }


@dataclass
class ChangeReport(DepthReport):
    """The per-tensor change of ``a`` against the reference ``b``, by kind and block.

    Attributes:
        a: the source compared (a path, or ``"(in memory)"``).
        b: the reference, likewise.
        tensors: one dict per compared tensor, in ``a``'s order, with keys ``name, kind,
            block, series, shape, numel, dtype_a, dtype_b, quantized`` (``None``, or how
            ``a`` stores it: ``"int4 symmetric channel"``, ``"gguf Q8_0"``) and the
            statistics ``rel_change, cosine, sign_flips, max_abs_change, diff_l2, ref_l2,
            sqnr_db, bits_per_weight`` (see the module doc).
        unmatched: ``{"only_a": [names], "only_b": [names], "not_compared": [{"name",
            "why"}]}``.
        notes: what was merged, approximated or is worth knowing.
        blocks: the number of block indices (largest + 1; 0 without blocks).

    Example:
        >>> r = ChangeReport("a.safetensors", "b.safetensors")
        >>> r.same, r.to_dict()["unmatched"]
        (True, {'only_a': [], 'only_b': [], 'not_compared': []})
        >>> import torch, paramscope
        >>> w = {"fc.weight": torch.randn(4, 32)}
        >>> pd, _ = paramscope.quantize(w, bits=8)
        >>> r = layer_changes(pd, w)
        >>> r.same, r.quantized, r.tensors[0]["quantized"], r.tensors[0]["bits_per_weight"]
        (False, True, 'int8 symmetric channel', 9.0)
    """

    stat_names: ClassVar[tuple[str, ...]] = CHANGE_STATS
    zero_floor: ClassVar[tuple[str, ...]] = ("rel_change", "sign_flips", "max_abs_change")

    a: str
    b: str
    tensors: list[dict[str, Any]] = field(default_factory=list)
    unmatched: dict[str, list[Any]] = field(
        default_factory=lambda: {"only_a": [], "only_b": [], "not_compared": []}
    )
    notes: list[str] = field(default_factory=list)
    blocks: int = 0

    @property
    def same(self) -> bool:
        """Every compared tensor is equal as numbers (``diff_l2 == 0``) and nothing is
        unmatched (a property: its example is the class's)."""
        return all(t["diff_l2"] == 0 for t in self.tensors) and not any(self.unmatched.values())

    @property
    def quantized(self) -> bool:
        """Whether any compared tensor of ``a`` was stored quantised (a property: its
        example is the class's)."""
        return any(t["quantized"] for t in self.tensors)

    def worst(self) -> dict[str, list[dict[str, Any]]]:
        """The tensors that changed most: the :data:`WORST` largest ``rel_change`` and, when
        ``a`` was quantised, the :data:`WORST` lowest ``sqnr_db`` (NaN values left out).

        Returns:
            ``{"rel_change": [{"name", "kind", "block", "value"}, ...]}``, with ``"sqnr_db"``
            too when ``a`` was quantised; values as they are (``inf`` for an infinite change).

        Example:
            >>> import torch
            >>> a = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([1.0, 0.0])}
            >>> b = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([1.0, 1.0])}
            >>> [(w["name"], w["value"]) for w in layer_changes(a, b).worst()["rel_change"]]
            [('y', 0.7071067811865475), ('x', 0.0)]
        """

        def top(stat: str, largest: bool) -> list[dict[str, Any]]:
            rows = [t for t in self.tensors if t[stat] == t[stat]]
            rows.sort(key=lambda t: t[stat], reverse=largest)
            return [
                {"name": t["name"], "kind": t["kind"], "block": t["block"], "value": t[stat]}
                for t in rows[:WORST]
            ]

        out = {"rel_change": top("rel_change", True)}
        if self.quantized:
            out["sqnr_db"] = top("sqnr_db", False)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN and inf as ``None``).

        Returns:
            Keys ``a, b, blocks, stats, tensors, series, worst, unmatched, notes``: ``stats``
            the statistics drawn (:data:`CHANGE_STATS`), ``series`` maps each depth line to
            ``{stat: [[block, value], ...]}`` for each of them, ``worst`` is :meth:`worst`.

        Example:
            >>> import json, torch
            >>> d = layer_changes({"w": torch.zeros(2)}, {"w": torch.zeros(2)}).to_dict()
            >>> json.dumps(d["tensors"][0]["sqnr_db"]), d["tensors"][0]["cosine"]
            ('null', 1.0)
        """
        return {
            "a": self.a,
            "b": self.b,
            "blocks": self.blocks,
            "stats": list(CHANGE_STATS),
            "tensors": [{k: _clean(v) for k, v in t.items()} for t in self.tensors],
            "series": self.series_dict(),
            "worst": {
                k: [{**w, "value": _clean(w["value"])} for w in rows]
                for k, rows in self.worst().items()
            },
            "unmatched": {
                "only_a": list(self.unmatched["only_a"]),
                "only_b": list(self.unmatched["only_b"]),
                "not_compared": [dict(r) for r in self.unmatched["not_compared"]],
            },
            "notes": list(self.notes),
        }

    def to_text(self, width: int | None = None, *, stat: str | None = None) -> str:
        """The human form ``paramscope diff`` prints below its structural diff: a header, one
        row per depth line (series) with a sparkline of ``stat`` over the block index and its
        range, the tensors outside blocks, the tensors that changed most, what was not
        compared, and the notes.

        Args:
            width: the line width; longer sparklines are binned (each character the largest
                value of its blocks) and lines cut to fit. ``None`` (piped output): plain and
                whole, one character per block.
            stat: the statistic drawn (one of :data:`CHANGE_STATS`; default ``sqnr_db``
                when ``a`` was quantised, else ``rel_change``).

        Returns:
            The text, without a final newline; names from files are escaped.

        Example:
            >>> import torch
            >>> b = {f"h.{i}.attn.q_proj.weight": torch.ones(4) for i in range(4)}
            >>> a = {k: v * (1 + i / 10) for i, (k, v) in enumerate(b.items())}
            >>> print(layer_changes(a, b).to_text().splitlines()[1])
              q  ▁▃▆█  rel_change 0..0.3
        """
        from .._text import printable

        if stat is None:
            stat = "sqnr_db" if self.quantized else "rel_change"
        if stat not in CHANGE_STATS:
            self.by_kind(stat)  # the one error for a statistic that is not one
        head = (
            f"change of {printable(self.a)} against {printable(self.b)}: "
            f"{len(self.tensors)} tensors compared, {self.depth_phrase(stat)}"
        )

        def cut(s: str) -> str:
            return _cut(s, width)

        # depth lines and tensors with no change at all are named once, not drawn flat
        still = {t["name"] for t in self.tensors if t["diff_l2"] == 0}
        moved = [
            s
            for s in self.series()
            if any(t["series"] == s and t["name"] not in still for t in self.tensors)
        ]
        lines = [_cut(head, width), *self.spark_rows(stat, width, only=moved)]
        flat = [s for s in self.series() if s not in moved]
        if flat:
            lines.append(cut(f"  unchanged: {', '.join(printable(s) for s in flat)}"))
        outside = [t for t in self.tensors if t["series"] is None]
        if outside:
            lines.append("outside blocks:")
            for t in outside:
                if t["name"] not in still:
                    lines.append(
                        cut(f"  {printable(t['name'])} ({t['kind']})  {stat} {_fmt(_num(t[stat]))}")
                    )
            same = [t for t in outside if t["name"] in still]
            if same:
                lines.append(f"  {len(same)} unchanged")
        worst = self.worst()
        big = [w for w in worst["rel_change"] if w["value"] != 0]
        if big:
            lines.append("largest change:")
            for w in big:
                t = next(t for t in self.tensors if t["name"] == w["name"])
                lines.append(
                    cut(
                        f"  {printable(w['name'])}  rel_change {_fmt(_num(w['value']))}, "
                        f"cosine {_fmt(_num(t['cosine']))}, "
                        f"sign flips {_fmt(_num(t['sign_flips']))}"
                    )
                )
        else:
            lines.append("largest change: none (every compared tensor is equal)")
        if "sqnr_db" in worst:
            lines.append("lowest SQNR (a quantised):")
            for w in worst["sqnr_db"]:
                t = next(t for t in self.tensors if t["name"] == w["name"])
                lines.append(
                    cut(
                        f"  {printable(w['name'])}  sqnr {_fmt(_num(w['value']))} dB, "
                        f"{_fmt(_num(t['bits_per_weight']))} bits/weight"
                    )
                )
        u = self.unmatched
        lines.append(
            cut(
                f"unmatched: {len(u['only_a'])} only in a, {len(u['only_b'])} only in b, "
                f"{len(u['not_compared'])} not compared"
            )
        )
        for side in ("only_a", "only_b"):
            if u[side]:
                shown = ", ".join(printable(n) for n in u[side][:3])
                more = f" … {len(u[side]) - 3} more" if len(u[side]) > 3 else ""
                lines.append(cut(f"  {side.replace('_', ' in ')}: {shown}{more}"))
        for r in u["not_compared"]:
            lines.append(cut(f"  not compared: {printable(r['name'])}: {printable(r['why'])}"))
        for n in self.notes:
            lines.append(cut(f"note: {printable(n)}"))
        return "\n".join(lines)


@dataclass
class _Item:
    """One logical tensor of a side, as the manifest describes it."""

    name: str
    key: str  # the stored entry holding its values (an alias's target)
    shape: tuple[int, ...]
    dtype: str
    is_float: bool
    quant: str | None = None  # how it is stored quantised, if it is
    record: dict[str, Any] | None = None  # paramscope's own quantisation record
    bits: int = 0  # stored bits: data, scale and zero entries together


def _dtype_name(e: Entry) -> str:
    try:
        return str(e.dtype.to_torch()).removeprefix("torch.")
    except ParamscopeError:
        return e.dtype.value


def _items(side: Side, rejected: dict[str, str]) -> dict[str, _Item]:
    """The logical tensors of a side by name; entries that cannot be compared as such go to
    ``rejected`` (name → why)."""
    from .._dtypes import DType
    from .._quantlayouts import layout_record
    from .._quantstore import AUX_TAG, aux_names, logical_shape, quant_record

    m = side.manifest
    aux: set[str] = set()
    for e in m.values():
        rec = quant_record(e.extra) if e.tie is None else None
        if rec is not None:
            aux.update(a for a in aux_names(rec) if a in m)
    third: dict[str, list[str]] = {}  # logical weight → its packed entries (third-party)
    why_third: dict[str, str] = {}
    out: dict[str, _Item] = {}
    for e in m.values():
        if e.name in aux:
            continue  # a scale / zero point: counted with its data entry
        st = side.stored(e.name)
        layout = layout_record(st.extra)
        if layout is not None and (
            layout.get("part") == "unknown" or _method(m, layout) not in _DEQUANTISED
        ):
            if layout.get("part") == "unknown":
                rejected[e.name] = "looks quantised (packed) but fits no known layout"
                continue
            weight = str(layout.get("weight") or e.name)
            third.setdefault(weight, []).append(e.name)
            if layout.get("part") == "data":
                bits = layout.get("bits")
                why_third[weight] = (
                    f"{layout.get('method')} "
                    + (f"{bits}-bit " if bits is not None else "")
                    + "quantised layout: third-party layouts are not dequantised"
                )
            continue
        if AUX_TAG in st.tags:
            rejected[e.name] = "a quantisation scale / zero-point entry without its data entry"
            continue
        rec = quant_record(st.extra)
        gguf = st.extra.get("gguf") if st.extra else None
        if rec is not None:
            shape = logical_shape(rec)
            if shape is None:
                rejected[e.name] = "quantised entry whose record has no shape"
                continue
            try:
                dtype = str(DType(rec["dtype"]).to_torch()).removeprefix("torch.")
            except (KeyError, ValueError, ParamscopeError):
                dtype = str(rec.get("dtype"))
            stored = st.nbytes + sum(m[a].nbytes for a in aux_names(rec) if a in m)
            quant = f"int{rec.get('bits')} {rec.get('scheme')} {rec.get('granularity')}"
            out[e.name] = _Item(e.name, st.name, shape, dtype, True, quant, rec, stored * 8)
        elif isinstance(gguf, Mapping):
            shape = tuple(int(d) for d in gguf.get("shape", ()))
            quant = f"gguf {gguf.get('type')}"
            out[e.name] = _Item(e.name, st.name, shape, "float32", True, quant, None, st.nbytes * 8)
        else:
            is_float = e.dtype.is_float and not e.dtype.value.startswith("C")
            out[e.name] = _Item(
                e.name, st.name, tuple(e.shape), _dtype_name(e), is_float, None, None, st.nbytes * 8
            )
    for weight, names in third.items():
        why = why_third.get(weight, "quantised layout: third-party layouts are not dequantised")
        rejected[weight] = f"{why} ({', '.join(names)})"
        for n in names:
            rejected.setdefault(n, "")  # part of the weight above: not listed again
    return out


def _method(m: Any, layout: Mapping[str, Any]) -> Any:
    """The method of a layout record (a metadata entry's: that of the data entry it serves)."""
    if layout.get("part") == "meta":
        from .._quantlayouts import layout_record

        of = layout.get("of")
        data = layout_record(m[of].extra) if isinstance(of, str) and of in m else None
        return data.get("method") if data is not None else None
    return layout.get("method")


class _Unreadable(Exception):
    """A side's values could not be read (the message says which side and why)."""


def _pieces(side: Side, item: _Item, chunk: int, label: str) -> Iterator[torch.Tensor]:
    """The values of a logical tensor in pieces of ``chunk`` elements: from a file stored
    raw, each piece read on its own (memory: one piece, however large the tensor); otherwise
    (a quantised entry, GGUF blocks, tensors in memory) slices of the whole tensor. A read
    that fails raises :class:`_Unreadable` naming the side (``label``)."""
    try:
        yield from _pieces_of(side, item, chunk)
    except ParamscopeError as exc:
        raise _Unreadable(f"{label}: {exc}") from None


def _pieces_of(side: Side, item: _Item, chunk: int) -> Iterator[torch.Tensor]:
    import torch

    reader = side.reader
    if item.record is None and reader is not None and reader.raw_ok:
        e = side.stored(item.name)
        bits = e.dtype.bits
        if bits % 8 == 0 and e.location is not None and not e.dtype.value.startswith("C"):
            dtype, size = e.dtype.to_torch(), bits // 8
            n = math.prod(e.shape)
            for s in range(0, n, chunk):
                k = min(chunk, n - s)
                yield torch.frombuffer(reader.read_raw_part(e, s * size, k * size), dtype=dtype)
            return
    yield from _slices(_values(side, item).reshape(-1), chunk)


def _values(side: Side, item: _Item) -> torch.Tensor:
    """The float values of a logical tensor (a quantised one dequantised)."""
    if item.record is None:
        return side.read(item.name)
    from .._quantstore import aux_names
    from ..compress._qkernels import dequantize_tensor
    from ..compress._quantize import from_storage

    rec = item.record
    scale_n = rec.get("scale")
    zero_n = rec.get("zero")
    for a in aux_names(rec):
        if a not in side.manifest:
            from .._errors import EntryError

            raise EntryError(f"entry {item.name!r}: its quantisation entry {a!r} is missing")
    data = side.read(item.key)
    scale = side.read(str(scale_n))
    zero = side.read(str(zero_n)) if isinstance(zero_n, str) else None
    q = from_storage(item.name, data, scale, zero, rec)
    del data, scale, zero
    return dequantize_tensor(q)


def _side(source: Any, label: str) -> Side:
    from .._diff import Side
    from .._manifest import Manifest

    ok = isinstance(source, (str, os.PathLike, Mapping)) or hasattr(source, "named_parameters")
    if not ok:
        raise ArgumentTypeError(
            f"layer_changes: {label}: expected a checkpoint path, a ParamDict, a dict of "
            f"tensors or an nn.Module, found {type(source).__name__}"
        )
    if isinstance(source, Manifest):
        raise TargetError(
            f"layer_changes: {label} is a Manifest, which has no values; expected a "
            "checkpoint path, a ParamDict, a dict of tensors or an nn.Module"
        )
    side = Side(source, label)
    if side.reader is None and side.pd is None:
        side.close()
        raise TargetError(
            f"layer_changes: {label} is {side.what} without values; expected a checkpoint "
            "(the per-layer change reads weight values)"
        )
    return side


def layer_changes(a: Any, b: Any, *, select: Pattern | None = None) -> ChangeReport:
    """Per-tensor change of ``a`` against the reference ``b``, by kind and block.

    Every name in both with the same logical shape is compared (an alias with its target,
    once), with at most one tensor per side in memory and float64 sums a chunk at a time.
    Quantised tensors are compared as the values they stand for (see the module doc).
    Names on one side only, and tensors that cannot be compared (a packed third-party
    layout, a shape mismatch, a non-float dtype, no values), are listed in
    :attr:`ChangeReport.unmatched` with the reason.

    Args:
        a: the changed checkpoint: a path (any format
            :class:`~paramscope.io._reader.SourceReader` reads), a ParamDict, a dict of
            tensors or a ``torch.nn.Module``.
        b: the reference, any of the same.
        select: optional glob / ``re:`` pattern (or list) on names; only matching names are
            compared or listed.

    Returns:
        A :class:`ChangeReport`.

    Raises:
        ArgumentTypeError: a source is none of those.
        TargetError: a source is a model TARGET (``zoo:gpt2``) or a Manifest, without values.
        MissingNameError: ``select`` matches no name of either side.

    Example:
        >>> import torch
        >>> b = {f"layers.{i}.mlp.up_proj.weight": torch.ones(4, 4) for i in range(3)}
        >>> a = dict(b, **{"layers.1.mlp.up_proj.weight": -torch.ones(4, 4)})
        >>> r = layer_changes(a, b)
        >>> r.by_kind("sign_flips")
        {'up': [(0, 0.0), (1, 1.0), (2, 0.0)]}
        >>> r.same
        False
    """
    from .._diff import sides

    with sides(a, b, _side) as (sa, sb):
        report = _changes(sa, sb, select)
    report.a, report.b = (
        os.fspath(s) if isinstance(s, (str, os.PathLike)) else IN_MEMORY for s in (a, b)
    )
    return report


def _changes(sa: Side, sb: Side, select: Pattern | None) -> ChangeReport:
    rej_a: dict[str, str] = {}
    rej_b: dict[str, str] = {}
    items_a = _items(sa, rej_a)
    items_b = _items(sb, rej_b)
    match = None
    if select is not None:
        from .._names import compile_pattern

        match = compile_pattern(select)
        every = [*sa.manifest, *sb.manifest]
        if not any(match(n) for n in every):
            from .._names import no_match

            raise no_match(select, every, where="a or b")

    def wanted(name: str) -> bool:
        return match is None or bool(match(name))

    report = ChangeReport(IN_MEMORY, IN_MEMORY)
    not_compared: list[dict[str, str]] = report.unmatched["not_compared"]
    listed: set[str] = set()

    def refuse(name: str, why: str) -> None:
        if name not in listed and wanted(name):
            listed.add(name)
            not_compared.append({"name": name, "why": why})

    for rej, label in ((rej_a, "a"), (rej_b, "b")):
        for name, why in rej.items():
            if why:
                refuse(name, f"{label}: {why}")
    names_b = set(items_b)
    gone = {n for n, w in {**rej_a, **rej_b}.items()}  # not listed as only-on-one-side
    report.unmatched["only_a"] = [
        n for n in items_a if n not in names_b and n not in gone and wanted(n)
    ]
    report.unmatched["only_b"] = [
        n for n in items_b if n not in items_a and n not in gone and wanted(n)
    ]
    done: dict[tuple[str, str], str] = {}
    aliases: list[str] = []
    nonfinite: list[str] = []
    zero_ref: list[str] = []
    for name, ia in items_a.items():
        ib = items_b.get(name)
        if ib is None or not wanted(name) or name in listed:
            continue
        why = _why_not(sa, sb, ia, ib)
        if why is not None:
            refuse(name, why)
            continue
        key = (ia.key, ib.key)
        if key in done:
            aliases.append(f"{name} = {done[key]}")
            continue
        done[key] = name
        numel = math.prod(ia.shape)
        try:
            # a piece of each side at a time: memory stays one piece per side
            c = _change_of(numel, _pieces(sa, ia, CHUNK, "a"), _pieces(sb, ib, CHUNK, "b"))
        except _Unreadable as exc:
            refuse(name, str(exc))
            continue
        except ValueError:  # zip(strict=True): the two sides' values differ in length
            refuse(name, "the two sides' values have different element counts")
            continue
        if not all(math.isfinite(c[k]) for k in ("diff_l2", "ref_l2")):
            nonfinite.append(name)
        elif c["rel_change"] == math.inf:
            zero_ref.append(name)
        report.tensors.append(
            {
                "name": name,
                "kind": classify(name),
                "block": block_of(name),
                "series": None,
                "shape": list(ia.shape),
                "numel": numel,
                "dtype_a": ia.dtype,
                "dtype_b": ib.dtype,
                "quantized": ia.quant,
                "rel_change": c["rel_change"],
                "cosine": c["cosine"],
                "sign_flips": c["sign_flips"],
                "max_abs_change": c["max_abs_change"],
                "diff_l2": c["diff_l2"],
                "ref_l2": c["ref_l2"],
                "sqnr_db": c["sqnr_db"],
                "bits_per_weight": ia.bits / numel if numel else math.nan,
            }
        )
    notes = report.notes
    if zero_ref:
        notes.append(
            f"{len(zero_ref)} tensors are zero in b but not in a: rel_change infinite (None "
            f"in JSON), e.g. {zero_ref[0]}"
        )
    if nonfinite:
        notes.append(
            f"{len(nonfinite)} tensors hold NaN or infinite values: their statistics are "
            f"None, e.g. {nonfinite[0]}"
        )
    if aliases:
        notes.append(
            f"{len(aliases)} tied aliases compared once with their targets: "
            + ", ".join(aliases[:3])
            + (" …" if len(aliases) > 3 else "")
        )
    if any(i.quant and i.quant.startswith("gguf") for i in items_a.values()) or any(
        i.quant and i.quant.startswith("gguf") for i in items_b.values()
    ):
        notes.append("GGUF block types compared as the values the reader dequantises them to")
    blk = [n for n in (*report.unmatched["only_a"], *report.unmatched["only_b"])]
    if any(n.startswith("blk.") for n in blk):
        notes.append(
            "GGUF tensor names (blk.N.…) are not mapped to other naming schemes: they match "
            "only the same names on the other side"
        )
    if sa.reader is not None:
        notes.extend(f"a: {n}" for n in sa.reader.notes)
    if sb.reader is not None:
        notes.extend(f"b: {n}" for n in sb.reader.notes)
    _assign_series(report.tensors)
    blocks = [t["block"] for t in report.tensors if t["series"] is not None]
    report.blocks = (max(blocks) + 1) if blocks else 0
    return report


def _why_not(sa: Side, sb: Side, ia: _Item, ib: _Item) -> str | None:
    """Why a name in both cannot be compared, or ``None``."""

    def shape(s: tuple[int, ...]) -> str:
        return "×".join(map(str, s)) or "()"

    if ia.shape != ib.shape:
        return f"shape {shape(ia.shape)} in a, {shape(ib.shape)} in b"
    for it, label in ((ia, "a"), (ib, "b")):
        if not it.is_float:
            return f"non-float in {label} ({it.dtype})"
    for side, it, label in ((sa, ia, "a"), (sb, ib, "b")):
        if side.pd is not None and side.pd[it.key].device.type == "meta":
            return f"no values in {label} (meta device)"
    return None
