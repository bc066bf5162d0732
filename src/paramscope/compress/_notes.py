"""Notes shared by the transforms (prune, quantise): what they left out and why."""

from __future__ import annotations

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
    shown = ", ".join(left[:5]) + (f" … (+{len(left) - 5})" if len(left) > 5 else "")
    return (
        f"{len(left)} entries left as stored (not {verb}): {shown}; their dtype is not F16, "
        "BF16, F32 or F64, which torch computes with"
    )
