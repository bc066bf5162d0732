"""Quantised-checkpoint layouts: the logical float weights behind packed entries.

See :mod:`paramscope._quantlayouts._base` for the vocabulary. (Being built for issue 14.)
"""

from __future__ import annotations

from ._base import (
    EVIDENCE_CONFIG,
    EVIDENCE_FILE,
    EVIDENCE_NAMES,
    QuantConfig,
    QuantWeight,
    Recognised,
    Recogniser,
)

__all__ = [
    "EVIDENCE_CONFIG",
    "EVIDENCE_FILE",
    "EVIDENCE_NAMES",
    "QuantConfig",
    "QuantWeight",
    "Recognised",
    "Recogniser",
]
