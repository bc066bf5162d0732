"""The parameter lifecycle: initialise, tie, freeze, load into a model, bind external params.

Names load on first use (PEP 562): importing this package never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._bind import bind as bind
    from ._load import LoadReport as LoadReport
    from ._load import load_into as load_into
    from ._load import match as match
    from ._ties import find_ties as find_ties
    from ._ties import tie as tie
    from ._ties import untie as untie

_LAZY: dict[str, str] = {
    "bind": "._bind",
    "LoadReport": "._load",
    "load_into": "._load",
    "match": "._load",
    "find_ties": "._ties",
    "tie": "._ties",
    "untie": "._ties",
}

__getattr__ = lazy_getattr(__name__, globals(), _LAZY)

__all__ = [
    "LoadReport",
    "bind",
    "find_ties",
    "load_into",
    "match",
    "tie",
    "untie",
]
