"""Counting quantised checkpoints: the tally behind ``Count.quantization`` and its notes.

Entries carry the layout records of :mod:`paramscope._quantlayouts` (``extra["quant_layout"]``):
a weight's data entries (counted at the logical shape), its metadata (scales, zero points,
absmax, ...: counted apart as ``quant_meta``) and entries of unknown packing (counted at their
stored size, with a note). :class:`QuantTally` adds them up in the one pass of
:func:`~paramscope.counting._count.count_manifest`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._manifest import Entry
from .._quantlayouts import EVIDENCE_NAMES

__all__ = ["QuantTally", "describe"]

_MAX_NAMED = 5  # unknown entries named in the note (all are in the JSON, up to _MAX_LISTED)
_MAX_LISTED = 100


def describe(method: str, bits: float | None, group: int | None, kind: str | None = None) -> str:
    """A layout in a few words: ``gptq 4-bit g128``, ``bnb-int8 8-bit per-channel``.

    Args:
        method: the method.
        bits: bits per stored value, if known.
        group: the group size (``-1``: per channel; ``None``: not grouped).
        kind: a family's own type name (GGUF: ``Q4_K``), if any.

    Returns:
        The words.

    Example:
        >>> describe("gptq", 4, 128), describe("gguf", 4.5, None, "Q4_K")
        ('gptq 4-bit g128', 'gguf Q4_K 4.5-bit')
    """
    out = method
    if kind:
        out += f" {kind}"
    if bits is not None:
        out += f" {bits:g}-bit"
    if group is not None and group > 0:
        out += f" g{group}"
    elif group == -1:
        out += " per-channel"
    return out


def _evidence(ev: str) -> str:
    return f"({ev})" if ev == EVIDENCE_NAMES else f"(from {ev})"


def _bpw(nbytes: int, params: int) -> float | None:
    return round(nbytes * 8 / params, 4) if params else None


class QuantTally:
    """Sums over the entries of a quantised checkpoint, by layout.

    Example:
        >>> from paramscope import DType, Entry
        >>> t = QuantTally()
        >>> rec = {"part": "data", "weight": "w", "method": "gptq", "bits": 4,
        ...        "group_size": 128, "shape": [4096, 4096], "evidence": "config.json"}
        >>> t.add(Entry("q", (512, 4096), DType.I32, extra={"quant_layout": rec}), rec)
        >>> notes = []
        >>> t.summary(notes)["bits_per_weight"], notes[0]
        (4.0, 'quantization: gptq 4-bit g128 (from config.json)')
    """

    def __init__(self) -> None:
        self.methods: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.weight_key: dict[str, tuple[Any, ...]] = {}
        self.meta_bytes: dict[str, int] = {}
        self.meta_elements = 0
        self.unknown: list[str] = []
        self.unknown_count = 0
        self.unknown_elements = 0

    def add(self, e: Entry, rec: Mapping[str, Any]) -> None:
        """Add one entry with a layout record.

        Args:
            e: the stored entry (not an alias).
            rec: its ``extra["quant_layout"]``.
        """
        part = rec.get("part")
        if part == "data":
            detail = rec.get("detail")
            kind = detail.get("type") if isinstance(detail, Mapping) else None
            key = (
                rec.get("method"),
                rec.get("bits"),
                rec.get("group_size"),
                kind if isinstance(kind, str) else None,
                rec.get("evidence"),
            )
            d = self.methods.get(key)
            if d is None:
                d = self.methods[key] = {"weights": 0, "params": 0, "bytes": 0}
            d["bytes"] += e.nbytes
            if rec.get("primary", True):
                d["weights"] += 1
                d["params"] += e.logical_numel
            self.weight_key[str(rec.get("weight"))] = key
        elif part == "meta":
            w = str(rec.get("weight"))
            self.meta_bytes[w] = self.meta_bytes.get(w, 0) + e.nbytes
            self.meta_elements += e.numel
        elif part == "unknown":
            self.unknown_count += 1
            self.unknown_elements += e.numel
            if len(self.unknown) < _MAX_LISTED:
                self.unknown.append(e.name)

    def summary(self, notes: list[str]) -> dict[str, Any] | None:
        """The ``quantization`` dict of a count, and its notes appended to ``notes``.

        Args:
            notes: the count's notes (appended to).

        Returns:
            ``None`` when nothing is quantised; else ``{"method", "bits", "group_size",
            "evidence", "weights", "params", "bytes", "bits_per_weight", "meta_elements",
            "methods": [per layout: the same keys and "type"], "unknown_packing",
            "unknown"}`` (``method`` is ``"mixed"`` and bits/group ``None`` when the
            layouts differ; ``bytes`` are the stored bytes of the data and metadata).
        """
        if not self.methods and not self.unknown_count:
            return None
        for w, nbytes in self.meta_bytes.items():
            key = self.weight_key.get(w)
            if key is not None:
                self.methods[key]["bytes"] += nbytes
        rows = []
        for (method, bits, group, kind, ev), d in self.methods.items():
            row = {
                "method": method,
                "type": kind,
                "bits": bits,
                "group_size": group,
                "evidence": ev,
                **d,
                "bits_per_weight": _bpw(d["bytes"], d["params"]),
            }
            rows.append(row)
        params = sum(r["params"] for r in rows)
        nbytes = sum(r["bytes"] for r in rows)

        def same(key: str) -> Any:
            values = {r[key] for r in rows}
            return values.pop() if len(values) == 1 else None

        out = {
            "method": (same("method") or "mixed") if rows else None,
            "bits": same("bits"),
            "group_size": same("group_size"),
            "evidence": same("evidence"),
            "weights": sum(r["weights"] for r in rows),
            "params": params,
            "bytes": nbytes,
            "bits_per_weight": _bpw(nbytes, params),
            "meta_elements": self.meta_elements,
            "methods": rows,
            "unknown_packing": self.unknown_count,
            "unknown": self.unknown,
        }
        if rows:
            said = [
                describe(r["method"], r["bits"], r["group_size"], r["type"])
                + f" {_evidence(r['evidence'])}"
                + (f": {r['weights']:,} weights" if len(rows) > 1 else "")
                for r in rows
            ]
            notes.append("quantization: " + "; ".join(said))
            notes.append(
                f"{out['weights']:,} quantised weights counted at their logical size "
                f"({params:,} params); their metadata (scales, zero points, ...: "
                f"{self.meta_elements:,} elements) is counted apart as quant meta, neither "
                "parameters nor buffers"
            )
        if self.unknown_count:
            named = ", ".join(self.unknown[:_MAX_NAMED])
            more = self.unknown_count - min(_MAX_NAMED, len(self.unknown))
            notes.append(
                f"unknown packing: {self.unknown_count:,} entries look quantised but fit no "
                f"known layout ({named}{f' and {more:,} more' if more else ''}); counted as "
                f"parameters at their stored size ({self.unknown_elements:,} elements), so "
                "the total may be wrong"
            )
        return out
