"""The quantisation report: per-tensor and total error and size (:class:`QuantReport`).

Both quantisers fill it, in memory (:func:`paramscope.compress._quantize.quantize`) and
streaming (:func:`paramscope.compress.quantize_file`), one tensor at a time with
:meth:`QuantReport.add`.

Example:
    >>> r = QuantReport()
    >>> r.add("w", ErrorSums(4.0, 0.0, 4.0, 4.0, 0.0, 4), 16, 8)
    >>> r.total["sqnr_db"], r.total["bytes_after"]
    (inf, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._qerrors import ErrorSums

__all__ = ["QuantReport"]


@dataclass
class QuantReport:
    """Per-tensor and total quantisation error and size.

    Each row of ``tensors`` and ``total`` has exactly the keys ``name``, ``sqnr_db``,
    ``max_abs_error``, ``rel_l2``, ``cosine``, ``bytes_before`` and ``bytes_after`` (data +
    scales + zero points). The total treats all quantised tensors as one vector: its SQNR comes
    from summed signal and noise energies. An exact restoration gives ``sqnr_db = inf``
    (``json.dumps`` writes ``Infinity``).

    Attributes:
        tensors: one row per quantised tensor, in order.
        total: the row named ``"total"``.
        notes: what was left out and why (entries in dtypes torch cannot compute with).
        source: the file read, for a file's report (:func:`~paramscope.compress.quantize_file`).
        output: the file written, likewise.

    Example:
        >>> r = QuantReport()
        >>> r.add("w", ErrorSums(100.0, 1.0, 100.0, 100.0, 0.1, 10), 40, 12)
        >>> r.total["bytes_after"], r.total["sqnr_db"]
        (12, 20.0)
    """

    tensors: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    output: str | None = None
    _sums: ErrorSums = field(default_factory=ErrorSums, repr=False, compare=False)
    _before: int = field(default=0, repr=False, compare=False)
    _after: int = field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.total:
            self.total = self._row("total", self._sums, 0, 0)

    @staticmethod
    def _row(name: str, sums: ErrorSums, before: int, after: int) -> dict[str, Any]:
        return {"name": name, **sums.stats(), "bytes_before": before, "bytes_after": after}

    def add(self, name: str, sums: ErrorSums, bytes_before: int, bytes_after: int) -> None:
        """Add one tensor's row and update the total (for streaming, tensor by tensor).

        Args:
            name: the entry.
            sums: its :func:`error_sums`.
            bytes_before: bytes of the original tensor.
            bytes_after: bytes of data + scales + zero points.
        """
        self.tensors.append(self._row(name, sums, int(bytes_before), int(bytes_after)))
        self._sums = self._sums + sums
        self._before += int(bytes_before)
        self._after += int(bytes_after)
        self.total = self._row("total", self._sums, self._before, self._after)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``paramscope quantize --json`` prints; copies).

        Returns:
            ``tensors, total, notes``, led by ``source, output`` for a file's report (SQNR may
            be ``inf``).

        Example:
            >>> list(QuantReport(source="a.safetensors", output="b.safetensors").to_dict())
            ['source', 'output', 'tensors', 'total', 'notes']
        """
        files = (
            {}
            if self.source is None and self.output is None
            else {"source": self.source, "output": self.output}
        )
        return {
            **files,
            "tensors": [dict(r) for r in self.tensors],
            "total": dict(self.total),
            "notes": list(self.notes),
        }

    def to_text(self, width: int | None = None, *, limit: int = 40) -> str:
        """The human form ``paramscope quantize`` prints: SQNR, largest error, relative L2
        error, cosine and bytes before and after per tensor, then the total.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.
            limit: at most this many tensor rows (the total row is over all of them).

        Returns:
            The text, without a final newline; names are escaped for a terminal.

        Example:
            >>> r = QuantReport()
            >>> r.add("w", ErrorSums(100.0, 1.0, 100.0, 100.0, 0.1, 10), 40, 12)
            >>> print(r.to_text())
            tensor  SQNR dB  max |err|  rel L2    cosine  before  after
            w          20.0        0.1     0.1  1.000000    40 B   12 B
            total      20.0        0.1     0.1  1.000000    40 B   12 B
        """
        from .._text import printable_tree
        from ._render import quant_text

        return quant_text(printable_tree(self.to_dict()), limit)
