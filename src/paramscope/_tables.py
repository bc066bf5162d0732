"""Text tables for the reports' ``to_text``: aligned plain columns, and rich tables rendered
to a string (rich is imported only when one is rendered, never at package import).

Numbers inside the cells are written by :mod:`paramscope._units`; this module only lays the
cells out.
"""

from __future__ import annotations

import io
from typing import Any

__all__ = ["WIDE", "aligned", "render_rich"]

#: The width rich tables are rendered at when no width is asked for (off a terminal: a pipe,
#: a file, a test): wide enough that no number or name is ever cut or wrapped.
WIDE = 100_000


def aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lay out a table as plain text: the first column left-aligned, the others right.

    Args:
        header: the column titles.
        rows: the cells, one list per row, as many as ``header``.

    Returns:
        The header line and one line per row, columns two spaces apart.

    Example:
        >>> print("\\n".join(aligned(["tensor", "zeros"], [["w", "5"], ["bias", "10"]])))
        tensor  zeros
        w           5
        bias       10
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


def render_rich(*renderables: Any, width: int | None = None) -> str:
    """Render rich objects (tables, markup strings) to plain text, as ``console.print`` would.

    Args:
        *renderables: what to print, in order (each as one ``console.print``).
        width: the console width; ``None`` renders at :data:`WIDE`, so that nothing is cut.

    Returns:
        The text without colours or styles, trailing spaces stripped from every line, without
        the final newline.

    Example:
        >>> render_rich("[bold]total[/bold] 7,850", "second line")
        'total 7,850\\nsecond line'
    """
    from rich.console import Console

    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width or WIDE,
        highlight=False,
        soft_wrap=False,
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
    )
    for r in renderables:
        console.print(r)
    text = "\n".join(line.rstrip(" ") for line in buf.getvalue().split("\n"))
    return text[:-1] if text.endswith("\n") else text
