"""Shrinking parameters: magnitude pruning, weight quantisation and physical structured
shrinking (channels, neurons, heads, layers removed), with numeric reports.

In-memory functions work on a model or a ParamDict; the ``*_file`` functions stream a
checkpoint of any size tensor by tensor into a new file. Names load on first use (PEP 562):
importing this package never imports torch. Importing it registers paramscope's quantised
storage convention as an io codec (:mod:`._codec`), which ``load(..., dequantize=True)`` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from . import _codec  # noqa: F401 - registers the "paramscope" codec with io

if TYPE_CHECKING:
    from ._api import prune as prune
    from ._api import quantize as quantize
    from ._prune import SparsityReport as SparsityReport
    from ._prune import keep_mask as keep_mask
    from ._quantize import QuantConfig as QuantConfig
    from ._quantize import QuantizedTensor as QuantizedTensor
    from ._quantize import QuantReport as QuantReport
    from ._quantize import dequantize as dequantize
    from ._quantize import dequantize_tensor as dequantize_tensor
    from ._quantize import quantize_tensor as quantize_tensor
    from ._shrink import shrink as shrink
    from ._shrink_report import ShrinkReport as ShrinkReport
    from ._stream import prune_file as prune_file
    from ._stream import quantize_file as quantize_file
    from ._subnet import SubnetReport as SubnetReport
    from ._subnet import Supernet as Supernet
    from ._subnet import count_subnet as count_subnet
    from ._subnet import subnet as subnet
    from ._subnet import trace_supernet as trace_supernet

_LAZY: dict[str, str] = {
    "SparsityReport": "._prune",
    "keep_mask": "._prune",
    "prune": "._api",
    "QuantConfig": "._quantize",
    "QuantReport": "._quantize",
    "QuantizedTensor": "._quantize",
    "dequantize": "._quantize",
    "dequantize_tensor": "._quantize",
    "quantize": "._api",
    "quantize_tensor": "._quantize",
    "ShrinkReport": "._shrink_report",
    "shrink": "._shrink",
    "prune_file": "._stream",
    "quantize_file": "._stream",
    "SubnetReport": "._subnet",
    "Supernet": "._subnet",
    "count_subnet": "._subnet",
    "subnet": "._subnet",
    "trace_supernet": "._subnet",
}

__getattr__ = lazy_getattr(__name__, globals(), _LAZY)

__all__ = [
    "QuantConfig",
    "QuantReport",
    "QuantizedTensor",
    "ShrinkReport",
    "SparsityReport",
    "SubnetReport",
    "Supernet",
    "count_subnet",
    "dequantize",
    "dequantize_tensor",
    "keep_mask",
    "prune",
    "prune_file",
    "quantize",
    "quantize_file",
    "quantize_tensor",
    "shrink",
    "subnet",
    "trace_supernet",
]
