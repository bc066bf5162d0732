"""Sizes and numbers: parse ``"5GB"``, print ``1.2 GB``, ``124,439,808`` and ``50.0%``.

Every number a report prints as text is written here (the reports' ``to_text``), so one count
reads the same everywhere and a count never borrows a byte unit.
"""

from __future__ import annotations

import re

from ._errors import ArgumentError

__all__ = [
    "format_bytes",
    "format_count",
    "format_percent",
    "format_short_count",
    "parse_size",
]

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """Parse a byte size the way Hugging Face does: decimal units (``5GB`` = 5·10⁹).

    Binary units (``KiB``, ``MiB``, ``GiB``) are accepted too.

    Args:
        size: an int (bytes) or a string such as ``"5GB"``, ``"500MB"``, ``"2GiB"``.

    Returns:
        The size in bytes (> 0).

    Raises:
        ArgumentError: for an unreadable or non-positive size.

    Example:
        >>> parse_size("5GB"), parse_size("1KiB"), parse_size(10)
        (5000000000, 1024, 10)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise ArgumentError(
                f"size {size!r}: expected a number with an optional unit "
                "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. '5GB'"
            )
        value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ArgumentError(f"size {size!r}: expected a positive size")
    return value


def format_bytes(n: int) -> str:
    """Human byte count in decimal units.

    Args:
        n: bytes.

    Returns:
        E.g. ``"498.0 MB"``; exact bytes below 1 kB.

    Example:
        >>> format_bytes(497759232), format_bytes(12)
        ('497.8 MB', '12 B')
    """
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 1000 or unit == "PB":
            return f"{value:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def format_count(n: int) -> str:
    """A count with thousands separators.

    Args:
        n: the count.

    Returns:
        E.g. ``"124,439,808"``.

    Example:
        >>> format_count(7850)
        '7,850'
    """
    return f"{n:,}"


def format_short_count(n: int) -> str:
    """A count in words of magnitude, never a unit letter that reads as bytes.

    Args:
        n: the count.

    Returns:
        E.g. ``"6.74 billion"``, ``"124.4 million"``, ``"7.9 thousand"``; the number itself
        below 1,000.

    Example:
        >>> format_short_count(6738415616), format_short_count(124439808), format_short_count(7)
        ('6.74 billion', '124.4 million', '7')
    """
    for div, word, digits in (
        (10**12, "trillion", 2),
        (10**9, "billion", 2),
        (10**6, "million", 1),
        (10**3, "thousand", 1),
    ):
        if n >= div:
            return f"{n / div:.{digits}f} {word}"
    return str(n)


def format_percent(part: float, whole: float = 1, digits: int = 1) -> str:
    """A share as a percentage: ``part`` of ``whole``.

    Args:
        part: the part, or a fraction when ``whole`` is 1.
        whole: what the part is of (``0``: the share is 0).
        digits: digits after the decimal point.

    Returns:
        E.g. ``"50.0%"``.

    Example:
        >>> format_percent(0.5), format_percent(85_017_600, 124_439_808), format_percent(1, 3, 2)
        ('50.0%', '68.3%', '33.33%')
    """
    share = 100 * part / whole if whole else 0.0
    return f"{share:.{digits}f}%"
