"""Text from files, made safe to show on a terminal.

Entry names, metadata and paths come from files, and a file can put anything in them: an ESC
sequence that recolours, moves the cursor or retitles the terminal, a carriage return or a
newline that forges an output line, a bidirectional override that shows text in another order.
Human output passes every such string through :func:`printable`, which writes control and
format characters as visible escapes (``\\x1b``, ``\\n``, ``\\u202e``); JSON output needs no
such step (the JSON encoder escapes control characters itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["listed", "printable", "printable_tree"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: str) -> str:
    """``text`` with control and format characters written as visible escapes.

    Args:
        text: any string (an entry name, a note, a path).

    Returns:
        The same string where every character Python does not call printable (controls,
        format characters such as bidirectional overrides and zero-width marks, separators
        other than the space, unassigned code points) is escaped; plain text, including
        non-ASCII letters, is unchanged.

    Example:
        >>> printable("h.0.attn\\x1b[31m\\nOK: fake line")
        'h.0.attn\\\\x1b[31m\\\\nOK: fake line'
        >>> printable("wte.weight")
        'wte.weight'
    """
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def printable_tree(obj: Any) -> Any:
    """:func:`printable` applied to every string in a JSON-like tree (keys too).

    Args:
        obj: dicts, lists, tuples, strings and scalars.

    Returns:
        A copy with every string made printable (other values as they are).

    Example:
        >>> printable_tree({"names": ["a\\rb"], "n": 2})
        {'names': ['a\\\\rb'], 'n': 2}
    """
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable_tree(k): printable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(printable_tree(v) for v in obj)
    return obj


def listed(names: Sequence[str], *, quote: bool = True, limit: int = 3) -> str:
    """``'a', 'b', 'c' … (+2 more)``: the first ``limit`` names, then how many are left.

    Args:
        names: the names (from files or models: shown escaped).
        quote: ``repr`` each name; else :func:`printable` it.
        limit: how many to show.

    Returns:
        The text (``""`` for no names).

    Example:
        >>> listed(["a", "b", "c", "d"], limit=2)
        "'a', 'b' … (+2 more)"
        >>> listed(["a.weight", "b"], quote=False)
        'a.weight, b'
    """
    shown = ", ".join(repr(n) if quote else printable(n) for n in names[:limit])
    return shown + (f" … (+{len(names) - limit} more)" if len(names) > limit else "")
