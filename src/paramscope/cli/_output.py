"""The CLI's one output sink: a result object, written as text or as JSON.

Every command hands its result to :func:`emit`. A result is a library report (``Count``,
``Inspection``, ``Summary``, ``MemoryEstimate``, ``LoadReport``, ``SparsityReport``,
``QuantReport``, ``ConvertReport``, ``DiffReport``, ``VerifyReport``, the zoo ``Listing``) or
one of the small results of this module (:class:`Wrote`, :class:`Text`): anything with
``to_dict()`` (the JSON, ``--json``) and ``to_text(width)`` (the human form). How a report
reads is the report's business, in the library next to its data; this module only decides
where it goes, how wide, and writes JSON (strictly valid, streamed).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Also", "Result", "Text", "Wrote", "emit", "emit_json"]


class Result(Protocol):
    """What :func:`emit` writes: a JSON form and a human form of one result."""

    def to_dict(self) -> Any:
        """The JSON-able form (``--json``)."""
        ...  # pragma: no cover

    def to_text(self, width: int | None = None) -> str:
        """The human form, without a final newline."""
        ...  # pragma: no cover


@dataclass
class Also:
    """A command's result and what it also made: keys added to its JSON (a value with
    ``to_dict`` as that dict), a value with ``to_text`` printed below its text, and ``html``,
    a page written (``wrote FILE``).

    Attributes:
        result: the command's own result.
        extra: ``{key: value}``, in order; ``None`` values stay in the JSON (a stable schema)
            and print nothing.
    """

    result: Any
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The result's JSON with the extra keys.

        Returns:
            ``result.to_dict()`` plus one key per extra.
        """
        out = self.result.to_dict()
        for k, v in self.extra.items():
            out[k] = v.to_dict() if hasattr(v, "to_dict") else v
        return out

    def to_text(self, width: int | None = None) -> str:
        """The result's text, each extra's text below it, and ``wrote FILE`` for ``html``.

        Args:
            width: the terminal width (``None``: piped).

        Returns:
            The text, without a final newline.
        """
        from .._text import printable

        parts = [self.result.to_text(width)]
        for k, v in self.extra.items():
            if hasattr(v, "to_text"):
                parts.append(v.to_text(width))
            elif k == "html" and v is not None:
                parts.append(f"wrote {printable(v)}")
        return "\n".join(parts)


def emit(result: Result, *, json: bool = False, stream: bool = False) -> None:
    """Write ``result`` on stdout: its JSON with ``json``, else its text and a newline.

    Off a terminal (a pipe, a file, a test) the text has no width limit, so no number or
    name is ever cut; on a terminal, tables fit the terminal's width.

    Args:
        result: the result of a command.
        json: write ``result.to_dict()`` as JSON (:func:`emit_json`) instead of the text.
        stream: ask for ``to_dict(stream=True)``, whose long lists are made as they are
            written (``inspect``'s entries of a header with millions).

    Example:
        >>> emit(Wrote("demo.safetensors"))
        wrote demo.safetensors
        >>> emit(Wrote("demo.safetensors"), json=True)
        {
          "path": "demo.safetensors"
        }
    """
    if json:
        emit_json(result.to_dict(stream=True) if stream else result.to_dict())  # type: ignore[call-arg]
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    sys.stdout.write(result.to_text(width) + "\n")


@dataclass
class Wrote:
    """A file a command wrote: ``{"path": PATH}`` as JSON, ``wrote PATH`` as text.

    Attributes:
        path: the file written.
        verb: the words before the path in the text (``""``: the path alone).
    """

    path: str
    verb: str = "wrote"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form.

        Returns:
            ``{"path": path}``.
        """
        return {"path": self.path}

    def to_text(self, width: int | None = None) -> str:
        """The human form.

        Args:
            width: unused.

        Returns:
            ``wrote PATH`` (the path escaped for a terminal).
        """
        from .._text import printable

        return printable(f"{self.verb} {self.path}" if self.verb else self.path)


@dataclass
class Text:
    """Text made by the library to be written as it is (a diagram's Mermaid or DOT source).

    Attributes:
        text: the text; a final newline is dropped (the sink writes one).
    """

    text: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form.

        Returns:
            ``{"text": text}``.
        """
        return {"text": self.text}

    def to_text(self, width: int | None = None) -> str:
        """The human form.

        Args:
            width: unused.

        Returns:
            The text without its final newline.
        """
        return self.text[:-1] if self.text.endswith("\n") else self.text


#: Whether a command of :func:`paramscope.cli.main` is running (it resets the transfer
#: counters first, so ``bytes_transferred`` is that command's alone).
COMMAND = [False]


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented, strictly valid JSON on stdout (inf/nan become strings).

    The text is ``json.dumps(obj, indent=2)``'s, written in pieces as it is encoded, so a lazy
    list (``inspect``'s entries of a header with millions) is never held whole. When the
    command read a URL, a top-level ``bytes_transferred`` says how many payload bytes came over
    the network, both ways (:data:`paramscope.io._remote.TRANSFERS`, uploads by
    :func:`paramscope._atomic.upload`).

    Args:
        obj: a JSON-able object.
    """
    remote = sys.modules.get("paramscope.io._remote")  # not imported: no URL was read
    atomic = sys.modules.get("paramscope._atomic")
    up = atomic.UPLOADED[0] if atomic is not None else 0
    used = up or (remote is not None and remote.used())
    if COMMAND[0] and isinstance(obj, dict) and used:
        down = remote.TRANSFERS.bytes if remote is not None else 0
        obj = {**obj, "bytes_transferred": down + up}
    out = sys.stdout
    pieces: list[str] = []
    size = 0
    for piece in _chunks(obj, 0):
        pieces.append(piece)
        size += len(piece)
        if size >= 1 << 20:
            out.write("".join(pieces))
            pieces.clear()
            size = 0
    pieces.append("\n")
    out.write("".join(pieces))


_escape = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _key(k: Any) -> str:
    """A dict key as ``json.dumps`` writes it."""
    if isinstance(k, str):
        return _escape(k)  # type: ignore[no-any-return]
    if isinstance(k, float):
        if k != k or k in (_INF, -_INF):
            raise ValueError("Out of range float values are not JSON compliant: " + repr(k))
        return _escape(float.__repr__(k))  # type: ignore[no-any-return]
    if k is True or k is False or k is None:
        return _escape(json.dumps(k))  # type: ignore[no-any-return]
    if isinstance(k, int):
        return _escape(int.__repr__(k))  # type: ignore[no-any-return]
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


_INF = float("inf")


def _pretty(o: Any, level: int) -> str:
    """``json.dumps(o, indent=2)`` for a value at nesting ``level``, as one string, with inf
    and nan written as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strictly valid JSON).
    The pure-Python encoder's nested generators cost ~30 µs per ``inspect`` entry."""
    if isinstance(o, str):
        return _escape(o)  # type: ignore[no-any-return]
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):  # inf and nan (not JSON) become strings
        if o != o:
            return '"nan"'
        if o in (_INF, -_INF):
            return '"inf"' if o > 0 else '"-inf"'
        return float.__repr__(o)
    pad = "\n" + "  " * (level + 1)
    if isinstance(o, (list, tuple)):
        if not o:
            return "[]"
        body = ("," + pad).join([_pretty(v, level + 1) for v in o])
        return "[" + pad + body + "\n" + "  " * level + "]"
    if isinstance(o, dict):
        if not o:
            return "{}"
        body = ("," + pad).join([_key(k) + ": " + _pretty(v, level + 1) for k, v in o.items()])
        return "{" + pad + body + "\n" + "  " * level + "}"
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _is_lazy(o: Any) -> bool:
    """A list made as it is iterated (``inspect``'s groups and entries)."""
    return getattr(o, "is_lazy", False) is True


def _chunks(o: Any, level: int) -> Iterator[str]:
    """:func:`_pretty`'s text in pieces: containers part by part, and each item of a lazy
    list (``inspect``'s entries) whole, so nothing is held entire."""
    lazy = _is_lazy(o)
    if isinstance(o, dict) and o:
        pad = ",\n" + "  " * (level + 1)
        sep = "{" + pad[1:]
        for k, v in o.items():
            yield sep + _key(k) + ": "
            sep = pad
            yield from _chunks(v, level + 1)
        yield "\n" + "  " * level + "}"
    elif isinstance(o, (list, tuple)) and o:
        pad = ",\n" + "  " * (level + 1)
        sep = "[" + pad[1:]
        for v in o:
            yield sep
            sep = pad
            if lazy and not (isinstance(v, dict) and any(_is_lazy(x) for x in v.values())):
                yield _pretty(v, level + 1)  # an item of a lazy list (an entry), whole
            else:
                yield from _chunks(v, level + 1)
        yield "\n" + "  " * level + "]"
    else:
        yield _pretty(o, level)
