"""Counting: totals, trees, module summaries, formulas and memory estimates."""

from ._count import Count as Count
from ._count import Group as Group
from ._count import Inspection as Inspection
from ._count import Node as Node
from ._count import count as count
from ._count import count_manifest as count_manifest
from ._count import group as group
from ._count import inspect as inspect
from ._count import to_manifest as to_manifest
from ._formulas import Formula as Formula
from ._formulas import formula_for as formula_for
from ._memory import MemoryEstimate as MemoryEstimate
from ._memory import Optimizer as Optimizer
from ._memory import estimate_memory as estimate_memory
from ._memory import parse_dtype as parse_dtype
from ._module import register_packed as register_packed
from ._module import scan_module as scan_module
from ._summary import ModuleNode as ModuleNode
from ._summary import Summary as Summary
from ._summary import summary as summary

__all__ = [
    "Count",
    "Formula",
    "Group",
    "Inspection",
    "MemoryEstimate",
    "ModuleNode",
    "Node",
    "Optimizer",
    "Summary",
    "count",
    "count_manifest",
    "estimate_memory",
    "formula_for",
    "group",
    "inspect",
    "parse_dtype",
    "register_packed",
    "scan_module",
    "summary",
    "to_manifest",
]
