"""Notes shared by the transforms (prune, quantise): what they left out and why."""

from __future__ import annotations

from .._text import listed

__all__ = ["left_note"]


def left_note(verb: str, left: list[str]) -> str:
    """The note for entries a transform left as stored because of their dtype.

    Args:
        verb: ``"pruned"`` or ``"quantised"``.
        left: their names.

    Returns:
        One line naming (up to five of) them.

    Example:
        >>> left_note("pruned", ["a.weight"]).split(":")[0]
        '1 entries left as stored (not pruned)'
    """
    return (
        f"{len(left)} entries left as stored (not {verb}): {listed(left, quote=False, limit=5)}; "
        "their dtype is not F16, BF16, F32 or F64, which torch computes with"
    )
