"""Reports: parameter-structure diagrams (mermaid, dot) and the offline HTML report.

Names load on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._diagram import FORMATS as FORMATS
    from ._diagram import diagram as diagram
    from ._html import report as report

_LAZY: dict[str, str] = {
    "FORMATS": "._diagram",
    "diagram": "._diagram",
    "report": "._html",
}


__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


__all__ = ["FORMATS", "diagram", "report"]
