"""What physical shrinking did: one report for every unit (channels, neurons, heads, layers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ShrinkReport"]


@dataclass
class ShrinkReport:
    """What :func:`paramscope.shrink` removed, group by group, with exact counts.

    Attributes:
        unit: ``channels``, ``neurons``, ``heads`` or ``layers``.
        amount: the fraction of each selected group's units asked to go (or ``None``).
        target_params: the parameter count asked for (or ``None``).
        importance: how units were ranked (``l1``, ``l2``, or the callable's name).
        params_before: parameters of the model before (ties once).
        params_after: parameters after (equal to the new model's ``sum(p.numel())``).
        buffers_before: buffer elements before.
        buffers_after: buffer elements after.
        groups: one dict per shrunk group: ``name`` (the producing layer, or the block),
            ``kept``, ``removed``, ``total`` (units), ``params_removed``,
            ``buffers_removed``, ``members`` (every parameter or buffer that lost a slice,
            with the dimension: ``"layer1.0.bn1.weight[0]"``).
        refused: ``{"name", "reason"}`` for every selected layer left whole because a
            dependency could not be traced or the unit does not apply.
        deviation: with example inputs: ``{"max_abs", "relative"}`` of the new model's
            output against the old one's (``None`` without).
        notes: what else there is to know.
        model: the smaller model (not part of :meth:`to_dict`).

    Example:
        >>> r = ShrinkReport("channels", 0.5, None, "l1", 100, 60, 8, 4)
        >>> r.to_dict()["params_removed"]
        40
    """

    unit: str
    amount: float | None
    target_params: int | None
    importance: str
    params_before: int = 0
    params_after: int = 0
    buffers_before: int = 0
    buffers_after: int = 0
    groups: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    deviation: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    model: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``paramscope shrink --json``): the attributes but :attr:`model`, and
        ``params_removed`` / ``buffers_removed``.

        Returns:
            The dict.

        Example:
            >>> sorted(ShrinkReport("heads", None, 10, "l2").to_dict())[:3]
            ['amount', 'buffers_after', 'buffers_before']
        """
        d = {k: v for k, v in self.__dict__.items() if k != "model"}
        d["params_removed"] = self.params_before - self.params_after
        d["buffers_removed"] = self.buffers_before - self.buffers_after
        return d

    def to_text(self, width: int | None = None) -> str:
        """The human form: the totals, one line per group, the refusals and the notes.

        Args:
            width: unused (lines are as wide as their content); every report's signature.

        Returns:
            The text, without a final newline.

        Example:
            >>> r = ShrinkReport("channels", 0.5, None, "l1", 100, 60, 8, 4)
            >>> print(r.to_text())
            shrink [channels, l1]: 100 -> 60 parameters (40 removed, 40.0%); buffers 8 -> 4
        """
        from .._tables import aligned
        from .._text import printable
        from .._units import format_count

        removed = self.params_before - self.params_after
        share = 100 * removed / self.params_before if self.params_before else 0.0
        lines = [
            f"shrink [{self.unit}, {printable(self.importance)}]: "
            f"{format_count(self.params_before)} -> {format_count(self.params_after)} "
            f"parameters ({format_count(removed)} removed, {share:.1f}%); buffers "
            f"{format_count(self.buffers_before)} -> {format_count(self.buffers_after)}"
        ]
        if self.groups:
            rows = [
                [
                    printable(g["name"]),
                    f"{g['kept']}/{g['total']}",
                    format_count(g["params_removed"]),
                    format_count(g.get("buffers_removed", 0)),
                ]
                for g in self.groups
            ]
            lines += aligned(["group", "kept", "params removed", "buffers removed"], rows)
        for r in self.refused:
            lines.append(f"refused {printable(r['name'])}: {printable(r['reason'])}")
        if self.deviation is not None:
            lines.append(deviation_line(self.deviation))
        lines += [f"note: {printable(n)}" for n in self.notes]
        return "\n".join(lines)


def deviation_line(deviation: dict[str, float]) -> str:
    """The report line of an output deviation (:func:`paramscope._outputs.output_deviation`).

    Args:
        deviation: ``{"max_abs", "relative"}``.

    Returns:
        The line.

    Example:
        >>> deviation_line({"max_abs": 0.5, "relative": 0.01})
        'output deviation on the example inputs: max |Δ| 0.5, relative 0.01'
    """
    return (
        f"output deviation on the example inputs: max |Δ| {deviation['max_abs']:.3g}"
        f", relative {deviation['relative']:.3g}"
    )
