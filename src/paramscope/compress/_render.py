"""The text of the compression reports (``to_text`` of :class:`SparsityReport` and
:class:`QuantReport`), rendered from their JSON dicts.

Each function takes the dict its report's ``to_dict`` gives, with every string already made
printable (:func:`paramscope._text.printable_tree`), and returns the text without its final
newline: a line naming the source and the output (for a file's report), one row per tensor,
the total, the notes. Numbers are written by :mod:`paramscope._units`.
"""

from __future__ import annotations

from typing import Any

from .._tables import aligned
from .._units import format_bytes, format_count, format_percent

__all__ = ["quant_text", "sparsity_text"]


def _heading(d: dict[str, Any]) -> list[str]:
    """``SOURCE -> OUTPUT`` for the report of a file, nothing for one made in memory."""
    if d.get("source") is None and d.get("output") is None:
        return []
    return [f"{d.get('source')} -> {d.get('output')}"]


def sparsity_text(d: dict[str, Any], limit: int = 40) -> str:
    """The text of a sparsity report: elements, zeros and sparsity per tensor, then the total.

    Args:
        d: the ``SparsityReport.to_dict`` dict, strings printable.
        limit: at most this many tensor rows (the rest are counted in one line).

    Returns:
        The text.
    """
    rows = [
        [
            t["name"],
            format_count(t["elements"]),
            format_count(t["zeros"]),
            format_percent(t["sparsity"]),
        ]
        for t in d["tensors"][:limit]
    ]
    t = d["total"]
    lines = _heading(d)
    lines += aligned(["tensor", "elements", "zeros", "sparsity"], rows) if rows else []
    if len(d["tensors"]) > limit:
        lines.append(f"… {len(d['tensors']) - limit} more tensors")
    lines.append(
        f"total: {format_count(t['elements'])} elements, {format_count(t['zeros'])} "
        f"zeros ({format_percent(t['sparsity'])}), {format_count(t['kept'])} kept"
    )
    lines += [f"note: {n}" for n in d.get("notes", [])]
    return "\n".join(lines)


def quant_text(d: dict[str, Any], limit: int = 40) -> str:
    """The text of a quantisation report: SQNR, errors and bytes per tensor, then the total.

    Args:
        d: the ``QuantReport.to_dict`` dict, strings printable.
        limit: at most this many tensor rows (the total row is over all of them).

    Returns:
        The text.
    """

    def row(t: dict[str, Any]) -> list[str]:
        return [
            t["name"],
            f"{t['sqnr_db']:.1f}",
            f"{t['max_abs_error']:.3g}",
            f"{t['rel_l2']:.3g}",
            f"{t['cosine']:.6f}",
            format_bytes(t["bytes_before"]),
            format_bytes(t["bytes_after"]),
        ]

    lines = _heading(d)
    header = ["tensor", "SQNR dB", "max |err|", "rel L2", "cosine", "before", "after"]
    rows = [row(t) for t in d["tensors"][:limit]]
    lines += aligned(header, [*rows, row(d["total"])]) if d["tensors"] else []
    if len(d["tensors"]) > limit:
        lines.append(f"… {len(d['tensors']) - limit} more tensors (total is over all)")
    if not d["tensors"]:
        lines.append("no tensor was selected for quantisation")
    lines += [f"note: {n}" for n in d.get("notes", [])]
    return "\n".join(lines)
