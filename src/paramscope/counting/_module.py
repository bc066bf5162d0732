"""Counting a live ``torch.nn.Module``: the walk itself lives one floor down.

:func:`scan_module` (every path, ties and shared modules by object identity, lazy, pruned and
packed tensors) and :func:`register_packed` are :mod:`paramscope._modtree`'s, shared with
lifecycle and TARGET resolution; this module keeps their counting names importable.
"""

from __future__ import annotations

from .._modtree import ModuleScan, PackedEntry, register_packed, scan_module

__all__ = ["ModuleScan", "PackedEntry", "register_packed", "scan_module"]
