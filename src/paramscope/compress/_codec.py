"""paramscope's quantised storage convention as an io codec, registered on import.

:mod:`paramscope.compress` imports this module, so importing the package (which
:func:`paramscope.load` does) lets ``load(..., dequantize=True)`` restore the entries
:func:`paramscope.quantize` wrote. Registering imports nothing heavy: the codec imports
:mod:`._quantize` (and torch) only when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..io._codecs import register_codec

if TYPE_CHECKING:
    from .._paramdict import ParamDict

__all__ = ["CODEC"]

#: The codec's name in :mod:`paramscope.io._codecs`.
CODEC = "paramscope"


def _dequantize(pd: ParamDict) -> ParamDict:
    from ._quantize import dequantize

    return dequantize(pd)


register_codec(CODEC, _dequantize)
