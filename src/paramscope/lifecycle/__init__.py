"""The parameter lifecycle: initialise, tie, freeze, load into a model, bind external params.

Names load on first use (PEP 562): importing this package never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._bind import bind as bind
    from ._freeze import FreezeCounts as FreezeCounts
    from ._freeze import eval_frozen_bn as eval_frozen_bn
    from ._freeze import freeze as freeze
    from ._freeze import trainable_only as trainable_only
    from ._freeze import unfreeze as unfreeze
    from ._init import InitReport as InitReport
    from ._init import init as init
    from ._init_schemes import init_schemes as init_schemes
    from ._init_schemes import register_scheme as register_scheme
    from ._load import LoadReport as LoadReport
    from ._load import load_into as load_into
    from ._load import match as match
    from ._ties import find_ties as find_ties
    from ._ties import tie as tie
    from ._ties import untie as untie

_LAZY: dict[str, str] = {
    "bind": "._bind",
    "FreezeCounts": "._freeze",
    "eval_frozen_bn": "._freeze",
    "freeze": "._freeze",
    "trainable_only": "._freeze",
    "unfreeze": "._freeze",
    "InitReport": "._init",
    "init": "._init",
    "init_schemes": "._init_schemes",
    "register_scheme": "._init_schemes",
    "LoadReport": "._load",
    "load_into": "._load",
    "match": "._load",
    "find_ties": "._ties",
    "tie": "._ties",
    "untie": "._ties",
}

__getattr__ = lazy_getattr(__name__, globals(), _LAZY)

__all__ = [
    "FreezeCounts",
    "InitReport",
    "LoadReport",
    "bind",
    "eval_frozen_bn",
    "find_ties",
    "freeze",
    "init",
    "init_schemes",
    "load_into",
    "match",
    "register_scheme",
    "tie",
    "trainable_only",
    "unfreeze",
    "untie",
]
