"""Counting: totals, trees and grouped subtotals (see :func:`paramscope.count`)."""

from ._count import Count as Count
from ._count import Group as Group
from ._count import Inspection as Inspection
from ._count import Node as Node
from ._count import count as count
from ._count import group as group
from ._count import inspect as inspect
from ._count import to_manifest as to_manifest

__all__ = ["Count", "Group", "Inspection", "Node", "count", "group", "inspect", "to_manifest"]
