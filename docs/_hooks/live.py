"""mkdocs hook: live paramscope output in pages, computed at build time.

A line ``<!-- paramscope-mermaid TARGET [depth=N] -->`` in a page becomes a ``mermaid`` fence
holding ``paramscope.diagram(TARGET, format="mermaid", depth=N)``, so the diagrams on the site
are what today's code draws (mkdocs-material renders mermaid fences in the browser). A marker
with a bad target or option fails the build.
"""

from __future__ import annotations

import re
from typing import Any

_MARKER = re.compile(r"^<!-- paramscope-mermaid (\S+)((?: \w+=\S+)*) -->$", re.M)


def _diagram(match: re.Match[str]) -> str:
    import paramscope

    target, options = match.group(1), match.group(2).split()
    kwargs: dict[str, Any] = {}
    for option in options:
        key, value = option.split("=", 1)
        if key != "depth":
            raise ValueError(f"paramscope-mermaid: unknown option {key!r} (only depth=N)")
        kwargs[key] = int(value)
    text = paramscope.diagram(target, format="mermaid", **kwargs)
    return f"```mermaid\n{text.rstrip()}\n```"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace every paramscope-mermaid marker of a page with the diagram it names.

    Args:
        markdown: the page's Markdown.
        **kwargs: the other hook arguments (unused).

    Returns:
        The Markdown with the diagrams in place.
    """
    if "paramscope-mermaid" not in markdown:
        return markdown
    return _MARKER.sub(_diagram, markdown)
