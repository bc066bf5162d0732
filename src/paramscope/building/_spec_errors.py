"""How the messages of :class:`SpecError` (defined in ``_errors.py``) name places and values.

Every problem in a spec raises :class:`SpecError` with the place in the spec
(``layers[3].kwargs.out_features``, built with :func:`_join`), what was expected, and what was
found, shown as the spec's author wrote it (:func:`_show`), with close names suggested
(:func:`_hint`).

Example:
    >>> _join(_join("layers", 3), "kwargs")
    'layers[3].kwargs'
    >>> _hint("Linaer", ["Linear", "ReLU"])
    '; did you mean "Linear"?'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._errors import SpecError
from .._names import did_you_mean

__all__ = ["SpecError"]  # defined with the other errors in paramscope/_errors.py


# ---------------------------------------------------------------------------------- helpers


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    """A value as the spec's author wrote it (JSON), shortened."""
    if hasattr(value, "named_parameters"):
        return f"a {type(value).__name__} module"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(name: str, candidates: Sequence[str]) -> str:
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    close = list(dict.fromkeys([*same, *did_you_mean(name, candidates)]))[:3]
    return "; did you mean " + " or ".join(f'"{c}"' for c in close) + "?" if close else ""
