"""Counting: totals, trees, module summaries, formulas and memory estimates.

Names load on first use (PEP 562), so the header-only ``count`` path imports only
:mod:`._count`, not the module walker, formulas or memory code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._activations import measure_activations as measure_activations
    from ._count import Count as Count
    from ._count import Group as Group
    from ._count import Inspection as Inspection
    from ._count import Node as Node
    from ._count import count as count
    from ._count import count_manifest as count_manifest
    from ._count import group as group
    from ._count import inspect as inspect
    from ._count import to_manifest as to_manifest
    from ._flops import FlopsNode as FlopsNode
    from ._flops import FlopsReport as FlopsReport
    from ._flops import analytic_flops as analytic_flops
    from ._flops import flops as flops
    from ._formulas import Formula as Formula
    from ._formulas import formula_for as formula_for
    from ._lora import LoraSpec as LoraSpec
    from ._memory import MemoryEstimate as MemoryEstimate
    from ._memory import Optimizer as Optimizer
    from ._memory import estimate_memory as estimate_memory
    from ._memory import parse_dtype as parse_dtype
    from ._module import register_packed as register_packed
    from ._module import scan_module as scan_module
    from ._summary import ModuleNode as ModuleNode
    from ._summary import Summary as Summary
    from ._summary import summary as summary
    from ._sweep import SweepFit as SweepFit
    from ._sweep import SweepReport as SweepReport
    from ._sweep import sweep as sweep

_LAZY: dict[str, str] = {
    "SweepFit": "._sweep",
    "SweepReport": "._sweep",
    "sweep": "._sweep",
    "Count": "._count",
    "Group": "._count",
    "Inspection": "._count",
    "Node": "._count",
    "count": "._count",
    "count_manifest": "._count",
    "group": "._count",
    "inspect": "._count",
    "to_manifest": "._count",
    "FlopsNode": "._flops",
    "measure_activations": "._activations",
    "FlopsReport": "._flops",
    "analytic_flops": "._flops",
    "flops": "._flops",
    "Formula": "._formulas",
    "formula_for": "._formulas",
    "LoraSpec": "._lora",
    "MemoryEstimate": "._memory",
    "Optimizer": "._memory",
    "estimate_memory": "._memory",
    "parse_dtype": "._memory",
    "register_packed": "._module",
    "scan_module": "._module",
    "ModuleNode": "._summary",
    "Summary": "._summary",
    "summary": "._summary",
}


__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


__all__ = [
    "Count",
    "FlopsNode",
    "FlopsReport",
    "Formula",
    "Group",
    "Inspection",
    "LoraSpec",
    "MemoryEstimate",
    "ModuleNode",
    "Node",
    "Optimizer",
    "Summary",
    "SweepFit",
    "SweepReport",
    "analytic_flops",
    "count",
    "count_manifest",
    "estimate_memory",
    "flops",
    "formula_for",
    "group",
    "inspect",
    "measure_activations",
    "parse_dtype",
    "register_packed",
    "scan_module",
    "summary",
    "sweep",
    "to_manifest",
]
