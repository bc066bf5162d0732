"""The streaming safetensors header parser: chunk by chunk, one top-level member at a time.

Reading is built for hostile headers too (up to the 100 MB limit): the header is read and
decoded in chunks and parsed member by member (a regular expression for the form every writer
uses, ``json``'s scanner for any other), straight into one compact tuple per entry; shapes
are shared between entries, a shape of more than ``MAX_RANK`` dimensions is refused without
being built, and anything outside the JSON grammar raises :class:`_Anomaly`, on which
:func:`paramscope.io._safetensors_header.parse_header` replays the text through ``json`` so
errors read as they always did. Entries are checked by the rules of
:mod:`._safetensors_rules`.
"""

from __future__ import annotations

import codecs
import json
import re
import zlib
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from .._dtypes import DType
from .._errors import HeaderError
from ._safetensors_rules import (
    _MAX_NUMEL,
    MAX_RANK,
    Header,
    _check_entry,
    _check_metadata,
    _entry_error,
    _finish,
    _LongList,
    _no_duplicates,
)
from ._source import ByteSource

__all__ = ["_Anomaly", "_Stream"]


class _Anomaly(Exception):
    """The streaming parser met something outside the JSON grammar, a repeated key, or bytes
    that are not UTF-8: the exact error comes from replaying the text through ``json``."""


_SEEN: Any = ()  # a name already taken, once an error is known (only repeats matter then)


# The streaming parser. JSON whitespace only (``\s`` would also take Unicode spaces), digits
# as ASCII, at most 19 of them (anything longer goes the general way and is checked there).
_WS = "[ \t\n\r]*"
_NUM = "(?:0|[1-9][0-9]{0,18})"
_WS_RE = re.compile(_WS)
#: One top-level member in the form every writer uses: ``"name": {"dtype": "X", "shape":
#: [..], "data_offsets": [b, e]}`` and the ``,`` or ``}`` after it. Groups: name, dtype,
#: shape text, begin, end, separator. Shapes of more than MAX_RANK dims go the general way.
_MEMBER = re.compile(
    _WS + '"([^"\\\\\x00-\x1f]+)"' + _WS + ":" + _WS + r"\{" + _WS
    + '"dtype"' + _WS + ":" + _WS + '"([^"\\\\\x00-\x1f]*)"' + _WS + "," + _WS
    + '"shape"' + _WS + ":" + _WS + r"\[" + _WS
    + f"((?:{_NUM}{_WS},{_WS}){{0,{MAX_RANK - 1}}}{_NUM})?" + _WS + r"\]" + _WS + "," + _WS
    + '"data_offsets"' + _WS + ":" + _WS + r"\[" + _WS + f"({_NUM}){_WS},{_WS}({_NUM})"
    + _WS + r"\]" + _WS + r"\}" + _WS + "([,}])"
)  # fmt: skip
#: The opening of a list of integers, seen as characters only (one character class: no
#: backtracking, no per-item state), to count the items of a huge one without building it.
_INT_RUN = re.compile(r"\[[0-9, \t\n\r]*")
_PIECE = 1 << 20  # characters of such a list checked at a time
_LEADING_ZERO = re.compile(r"[\[,]0[0-9]")
_DTYPES = {d.value: d for d in DType}
_CHUNK_TEXT = 8 << 20  # bytes decoded at a time
_AHEAD = 1 << 20  # characters kept ahead of the parser (an entry longer goes the slow way)
_SHAPES_CACHED = 1 << 16  # distinct short shape texts remembered (each shares one tuple)


class _Stream:
    """Parses a header from its source, decoding it in chunks, one top-level member at a time.

    Semantic errors (a bad entry, bad ``__metadata__``) are kept and raised once the whole
    text has parsed, in the order the plain parse raises them; anything else wrong raises
    :class:`_Anomaly` at once.
    """

    def __init__(self, spath: str, src: ByteSource, n: int, size: int) -> None:
        self.spath = spath
        self.src = src
        self.at = 8  # where the next chunk is read from
        self.n = n
        self.size = size
        self.left = n  # header bytes not read yet
        self.pending = b""  # read, not yet decoded (a split UTF-8 sequence)
        self.decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates(spath))
        self.crc = 0  # of the bytes read: a parse is reused only for the same bytes

    # ------------------------------------------------------------------------ the text
    def _more(self) -> str:
        """The next piece of decoded text ('' at the end)."""
        if not self.left and not self.pending:
            return ""
        take = min(self.left, _CHUNK_TEXT)
        chunk = self.src.read_at(self.at, take)
        self.at += len(chunk)
        self.crc = zlib.crc32(chunk, self.crc)
        data = self.pending + chunk
        self.left -= take
        if self.left and len(data) < take:  # the file shrank under us
            raise _Anomaly
        try:
            text, used = codecs.utf_8_decode(data, "strict", not self.left)
        except UnicodeDecodeError:
            raise _Anomaly from None
        self.pending = data[used:]
        if not self.left and self.pending:  # pragma: no cover - final=True decodes all
            raise _Anomaly
        return text

    def _ahead(self, buf: str, pos: int, need: int) -> tuple[str, int]:
        """``buf`` from ``pos`` on with at least ``need`` characters, or all that is left."""
        parts = [buf[pos:]]
        have = len(parts[0])
        while have < need:
            more = self._more()
            if not more:
                break
            parts.append(more)
            have += len(more)
        return "".join(parts), 0

    @property
    def _exhausted(self) -> bool:
        return not self.left and not self.pending

    # ------------------------------------------------------------------------ parsing
    def parse(self) -> Header:
        spath, data_len = self.spath, self.size - 8 - self.n
        limit = max(data_len, 1) * 8
        buf, pos = self._ahead("", 0, _AHEAD)
        pos = _WS_RE.match(buf, pos).end()  # type: ignore[union-attr]
        if pos >= len(buf) or buf[pos] != "{":
            raise _Anomaly
        pos = _WS_RE.match(buf, pos + 1).end()  # type: ignore[union-attr]
        tensors: dict[str, tuple[DType, tuple[int, ...], int, int]] = {}
        shapes: dict[str, tuple[tuple[int, ...], int, bool]] = {}
        meta_raw: Any = None
        meta_seen = False
        error: HeaderError | None = None
        prev_end_text, prev_end = "0", 0
        match = _MEMBER.match
        dtypes = _DTYPES
        closed = pos < len(buf) and buf[pos] == "}"
        if closed:
            pos += 1
        while not closed:
            if len(buf) - pos < _AHEAD and not self._exhausted:
                buf, pos = self._ahead(buf, pos, _AHEAD)
            m = match(buf, pos)
            if m is not None and m.group(1) != "__metadata__":
                name, dt, shape_text, b_text, e_text, sep = m.groups()
                pos = m.end()
                if name in tensors:
                    raise _Anomaly  # a repeated key: the replay names it
                if error is not None:
                    tensors[name] = _SEEN  # only to find a repeated key later
                else:
                    dtype = dtypes.get(dt)
                    if shape_text is None:
                        shape_text = ""
                    known = shapes.get(shape_text)
                    if known is None:
                        known = _shape_of(shape_text)
                        if len(shape_text) <= 64 and len(shapes) < _SHAPES_CACHED:
                            shapes[shape_text] = known
                    shape, numel, ok = known
                    begin = prev_end if b_text == prev_end_text else int(b_text)
                    end = int(e_text)
                    if (
                        dtype is None
                        or not ok
                        or begin > end
                        or end > data_len
                        or (numel > limit and 0 not in shape)
                        or numel * dtype.bits % 8
                        or end - begin != numel * dtype.bits // 8
                    ):
                        info = {"dtype": dt, "shape": list(shape), "data_offsets": [begin, end]}
                        error = _entry_error(spath, name, info, data_len)
                        tensors[name] = _SEEN
                    else:
                        tensors[name] = (dtype, shape, begin, end)
                        prev_end_text, prev_end = e_text, end
                closed = sep == "}"
                continue
            buf, pos, name, value = self._member(buf, pos)
            if name in tensors or (name == "__metadata__" and meta_seen):
                raise _Anomaly
            if name == "__metadata__":
                meta_seen, meta_raw = True, value
            elif error is not None:
                tensors[name] = _SEEN
            else:
                try:
                    row = _check_entry(spath, name, value, data_len)
                except HeaderError as exc:
                    error = exc
                    tensors[name] = _SEEN
                else:
                    tensors[name] = row
                    prev_end_text, prev_end = str(row[3]), row[3]
            del value
            if len(buf) - pos < 2 and not self._exhausted:
                buf, pos = self._ahead(buf, pos, 2)
            if pos >= len(buf):
                raise _Anomaly
            sep = buf[pos]
            pos = _WS_RE.match(buf, pos + 1).end()  # type: ignore[union-attr]
            if sep == "}":
                break
            if sep != ",":
                raise _Anomaly
        # only whitespace may follow, to the last byte
        while True:
            pos = _WS_RE.match(buf, pos).end()  # type: ignore[union-attr]
            if pos < len(buf):
                raise _Anomaly
            if self._exhausted:
                break
            buf, pos = self._more(), 0
        metadata = _check_metadata(spath, meta_raw)
        if error is not None:
            raise error
        h = _finish(spath, self.n, self.size, tensors, metadata)
        h.fingerprint = self.crc
        return h

    def _member(self, buf: str, pos: int) -> tuple[str, int, str, Any]:
        """One top-level member the general way: ``(buf, pos after its value, name, value)``.

        The window grows (doubling) while the member runs past it.
        """
        need = max(_AHEAD, 2 * (len(buf) - pos))
        while True:
            try:
                name, end, value = self._member_at(buf, pos)
                pos = _WS_RE.match(buf, end).end()  # type: ignore[union-attr]
                if pos < len(buf) or self._exhausted:
                    return buf, pos, name, value
            except (_Anomaly, ValueError, StopIteration, IndexError):  # ValueError: JSON
                if self._exhausted:
                    raise _Anomaly from None
            except RecursionError:
                raise _Anomaly from None
            except HeaderError:  # a repeated key inside (json's hook): the replay says it
                raise _Anomaly from None
            buf, pos = self._ahead(buf, pos, need)
            need *= 2

    def _member_at(self, buf: str, pos: int) -> tuple[str, int, Any]:
        pos = _WS_RE.match(buf, pos).end()  # type: ignore[union-attr]
        if buf[pos] != '"':
            raise _Anomaly
        name, pos = scanstring(buf, pos + 1, True)
        pos = _WS_RE.match(buf, pos).end()  # type: ignore[union-attr]
        if buf[pos] != ":":
            raise _Anomaly
        pos = _WS_RE.match(buf, pos + 1).end()  # type: ignore[union-attr]
        if name != "__metadata__" and buf[pos] == "{":
            value, pos = self._entry_object(buf, pos)
        else:
            value, pos = self.decoder.scan_once(buf, pos)
        return name, pos, value

    def _entry_object(self, buf: str, pos: int) -> tuple[dict[str, Any], int]:
        """An entry's object, keys in any order; a huge integer list is counted, not built."""
        pos = _WS_RE.match(buf, pos + 1).end()  # type: ignore[union-attr]
        info: dict[str, Any] = {}
        if buf[pos] == "}":
            return info, pos + 1
        while True:
            if buf[pos] != '"':
                raise _Anomaly
            key, pos = scanstring(buf, pos + 1, True)
            pos = _WS_RE.match(buf, pos).end()  # type: ignore[union-attr]
            if buf[pos] != ":":
                raise _Anomaly
            pos = _WS_RE.match(buf, pos + 1).end()  # type: ignore[union-attr]
            value: Any = None
            if key in ("shape", "data_offsets") and buf[pos] == "[":
                stop = _INT_RUN.match(buf, pos).end()  # type: ignore[union-attr]
                if stop == len(buf) and not self._exhausted:
                    raise _Anomaly  # runs past the window: grow it
                commas = buf.count(",", pos, stop)
                if commas >= MAX_RANK and buf.startswith("]", stop):
                    if not _int_list_ok(buf, pos, stop):
                        raise _Anomaly
                    value, pos = _LongList(commas + 1), stop + 1
            if value is None:
                value, pos = self.decoder.scan_once(buf, pos)
            if key in info:
                raise _Anomaly
            info[key] = value
            pos = _WS_RE.match(buf, pos).end()  # type: ignore[union-attr]
            if buf[pos] == "}":
                return info, pos + 1
            if buf[pos] != ",":
                raise _Anomaly
            pos = _WS_RE.match(buf, pos + 1).end()  # type: ignore[union-attr]


def _int_list_ok(buf: str, start: int, stop: int) -> bool:
    """Whether ``buf[start:stop + 1]`` (``[`` digits, commas, whitespace ``]``) is a JSON
    list of integers, checked by ``json`` a piece at a time (cut at commas): only one piece's
    integers exist at once. Without whitespace (every writer's form) string searches decide
    it with no integer built: no empty item, no leading zero, no run of over 4300 digits
    (json refuses to convert those)."""
    if all(buf.find(c, start, stop) < 0 for c in " \t\n\r"):
        if buf.startswith(",", start + 1) or buf.startswith(",", stop - 1):
            return False
        if buf.find(",,", start, stop) >= 0 or _LEADING_ZERO.search(buf, start, stop):
            return False
        # A run of 4301+ digits holds a whole aligned block of 2150 characters without a comma.
        step = 2150
        if all(buf.find(",", i, i + step) >= 0 for i in range(start + 1, stop - step, step)):
            return True
    pos = start + 1
    while True:
        cut = buf.find(",", min(pos + _PIECE, stop), stop)
        if cut < 0:
            cut = stop
        piece = buf[pos:cut]
        try:
            items = json.loads("[" + piece + "]")
        except ValueError:  # leading zeros, a missing comma, over 4300 digits
            return False
        if len(items) != piece.count(",") + 1:  # an empty item
            return False
        if cut == stop:
            return True
        pos = cut + 1


def _shape_of(text: str) -> tuple[tuple[int, ...], int, bool]:
    """``(shape, element count, whether the count passes the 64-bit checks)`` of a shape's
    text (digits, commas and whitespace, already matched)."""
    shape = tuple(int(d) for d in text.split(",")) if text else ()
    numel = 1
    for d in shape:
        numel *= d
        if numel > _MAX_NUMEL or d > _MAX_NUMEL:
            return shape, numel, False
    return shape, numel, True
