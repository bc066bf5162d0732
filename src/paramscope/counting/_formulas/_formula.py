"""The :class:`Formula` type, and the helpers that write a formula's arithmetic.

A formula is a layer's parameter count with the expression it comes from, e.g.
``784×10 + 10 = 7,850``. The layer families (:mod:`._dense`, :mod:`._conv`, :mod:`._norm`,
:mod:`._recurrent`, :mod:`._attention`) build their expressions with :func:`_done`, and nest
one formula in another with :func:`_lhs` and :func:`_times`.

Example:
    >>> Formula(10, "4×2 + 2 = 10", layer="Linear").params
    10
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Formula"]


@dataclass(frozen=True)
class Formula:
    """A layer's parameter count and the arithmetic behind it.

    Attributes:
        params: learnable parameter elements.
        expression: the arithmetic with its result, e.g. ``"784×10 + 10 = 7,850"``.
        buffers: buffer elements (BatchNorm running statistics), not part of ``params``.
        layer: the layer kind, e.g. ``"Linear"``.
    """

    params: int
    expression: str
    buffers: int = 0
    layer: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of this formula.

        Returns:
            ``{"layer", "params", "buffers", "expression"}``.

        Example:
            >>> Formula(10, "4×2 + 2 = 10", layer="Linear").to_dict()
            {'layer': 'Linear', 'params': 10, 'buffers': 0, 'expression': '4×2 + 2 = 10'}
        """
        return {
            "layer": self.layer,
            "params": self.params,
            "buffers": self.buffers,
            "expression": self.expression,
        }


# --------------------------------------------------------------------------- expression helpers


def _done(layer: str, params: int, struct: str, buffers: int = 0, suffix: str = "") -> Formula:
    return Formula(params, f"{struct} = {params:,}{suffix}", buffers, layer)


def _lhs(formula: Formula) -> str:
    """The structure of ``formula.expression`` without its ``= result`` part."""
    return formula.expression.rsplit(" = ", 1)[0]


def _times(n: int, struct: str) -> str:
    """``n×struct``, with parentheses when ``struct`` is more than one number."""
    return f"{n}×{struct}" if struct.isdigit() else f"{n}×({struct})"


def _shape_str(shape: tuple[int, ...]) -> str:
    return str(shape[0]) if len(shape) == 1 else "(" + "×".join(map(str, shape)) + ")"
