"""A griffe extension: paramscope's docstrings as mkdocstrings should read them.

Docstrings in ``src/`` stay as they are; before rendering, this rewrites three things:

- Sphinx roles (``:func:`count```), which mkdocstrings would print literally: a public name
  (``paramscope.NAME`` with NAME in ``paramscope.__all__``) becomes a link to its API entry,
  anything else (private modules, attributes, local helpers) plain code;
- ``Example:`` headings become ``Examples:``, the Google section griffe reads as doctest code
  (griffe takes the singular for an admonition of Markdown text, where ``[1, 2]`` output
  lines look like links);
- a ``Raises:`` item that is not ``Name: description`` (a list of names wrapped over two lines,
  or a sentence) is made one: the names joined on one line, a sentence put under
  ``ParamscopeError``. Such docstrings are worth fixing at the source; this keeps the strict
  build useful until then.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

import paramscope

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_PUBLIC = set(paramscope.__all__)


def _rewrite(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2).strip()
    shown = target.rsplit(".", 1)[-1] if short else target
    parts = target.split(".")
    if len(parts) == 2 and parts[0] == "paramscope" and parts[1] in _PUBLIC:
        return f"[`{shown}`][{target}]"
    return f"`{shown}`"


_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


def _fix_raises(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip() != "Raises:":
            continue
        base = len(line) - len(line.lstrip())
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base
        ):
            item = lines[i]
            indent = len(item) - len(item.lstrip())
            body = item.strip()
            while body.endswith(",") and i + 1 < len(lines) and lines[i + 1].strip():
                i += 1
                body = f"{body} {lines[i].strip()}"
            if body and indent == base + 4 and ":" not in body:
                body = f"ParamscopeError: {body}"
            out.append(" " * indent + body if body else item)
            i += 1
    return "\n".join(out)


class DocstringFixes(griffe.Extension):
    """Rewrite every docstring griffe loads, as the module docstring says."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place.

        Args:
            obj: the object griffe just loaded.
            **kwargs: the other hook arguments (unused).
        """
        if obj.docstring is None:
            return
        text = _ROLE.sub(_rewrite, obj.docstring.value)
        text = _EXAMPLE.sub(r"\1Examples:", text)
        if "Raises:" in text:
            text = _fix_raises(text)
        obj.docstring.value = text
