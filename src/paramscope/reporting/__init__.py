"""Reports: parameter-structure diagrams (mermaid, dot), the offline HTML report, and weight
statistics across depth (:func:`weight_stats`), spectral health (:func:`spectral_stats`) and
the per-layer change between two checkpoints (:func:`layer_changes`).

Names load on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._change import ChangeReport as ChangeReport
    from ._change import layer_changes as layer_changes
    from ._diagram import FORMATS as FORMATS
    from ._diagram import diagram as diagram
    from ._html import report as report
    from ._spectral import SpectralReport as SpectralReport
    from ._spectral import spectral_stats as spectral_stats
    from ._stats import StatsReport as StatsReport
    from ._stats import weight_stats as weight_stats

_LAZY: dict[str, str] = {
    "ChangeReport": "._change",
    "layer_changes": "._change",
    "FORMATS": "._diagram",
    "diagram": "._diagram",
    "report": "._html",
    "SpectralReport": "._spectral",
    "spectral_stats": "._spectral",
    "StatsReport": "._stats",
    "weight_stats": "._stats",
}


__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


__all__ = [
    "FORMATS",
    "ChangeReport",
    "SpectralReport",
    "StatsReport",
    "diagram",
    "layer_changes",
    "report",
    "spectral_stats",
    "weight_stats",
]
