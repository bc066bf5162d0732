"""safetensors: a strict stdlib header parser, lazy mmap loading, and an atomic hashed writer.

Layout of the format: 8 bytes little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
(an object: entry name → ``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an
optional ``"__metadata__"`` object of str → str), then the data section. Offsets are relative
to the data section, start at 0 and tile it with no hole or overlap, and each entry's byte
count equals its element count times its item size.

Reading is built for hostile headers too (up to the 100 MB limit): the header is read and
decoded in chunks and parsed member by member (a regular expression for the form every writer
uses, ``json``'s scanner for any other), straight into one compact tuple per entry; shapes
are shared between entries, a shape of more than ``MAX_RANK`` dimensions is refused without
being built, and anything outside the JSON grammar is replayed through ``json`` so errors
read as they always did. Manifests build their entries from those tuples when read
(:class:`~paramscope._manifest.EntryRows`), :func:`paramscope.load` makes tensors when read
(:class:`LazyTensors`), and the writer makes its header entry by entry into one buffer, so a
header of 1.4 M entries costs a few times its size and time linear in it.

paramscope keeps its own metadata as one JSON string under ``__metadata__["paramscope"]``:
``{"version": 1, "hash": "xxh3-128", "entries": {name: {"role", "trainable", "tags", "extra",
"digest"}}, "aliases": {alias: target}}``. Tied entries are stored once; aliases live only in
that map. Files without it are read with inferred roles.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import struct
import sys
import weakref
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, BinaryIO

from .._dtypes import DType
from .._enums import Format, Role, RoleSource
from .._errors import HeaderError, IntegrityError, UnsupportedDTypeError
from .._manifest import NO_EXTRA, Entry, EntryRows, Location, Manifest, infer_role

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_HEADER",
    "META_KEY",
    "Header",
    "LazyTensors",
    "Planned",
    "StoredEntry",
    "hash_bytes",
    "load_tensors",
    "parse_header",
    "read_manifest",
    "verify_hashes",
    "write_file",
    "write_stream",
]

MAX_HEADER = 100_000_000
_MAX_NUMEL = 2**63 - 1  # element counts (and dimensions) must fit a signed 64-bit integer
#: Most dimensions an entry may have. The format sets no limit and safetensors reads any
#: (a 49 M-dimension shape of ones costs it 2 GB); numpy holds 64, real tensors a handful.
#: Refusing more bounds the cost of a shape by the header text it takes.
MAX_RANK = 1024
_SHOWN_ITEMS = 64  # items of a list a message shows
META_KEY = "paramscope"
META_VERSION = 1
DIGEST_KEY = "digest"
# The digest lives in the same file as the data, so it can detect corruption (a flipped byte,
# a truncated copy), never tampering: whoever can change the bytes can change the header.
# A fast 128-bit non-cryptographic hash is therefore the right tool (XXH3 runs at ~16 GB/s
# here, SHA-256 at 1.5 GB/s, which would halve save throughput); verify also reads SHA-256.
DEFAULT_HASH = "xxh3-128"
HASH_ALGOS = (DEFAULT_HASH, "sha256")
_CHUNK = 64 << 20
_HASH_INLINE = 1 << 20  # buffers smaller than this are hashed in the writing thread


@dataclass
class Header:
    """A parsed, validated safetensors header.

    Attributes:
        path: the file.
        header_len: ``N``, the JSON length.
        data_start: ``8 + N``, where the data section begins.
        file_size: the file's size in bytes.
        tensors: per name, ``(dtype, shape, begin, end)`` with offsets relative to the data.
        metadata: ``__metadata__`` without paramscope's key.
        ps_meta: paramscope's metadata object, when present.
        fingerprint: CRC-32 of the header bytes (a parse is reused only for the same bytes,
            with the same path, inode, size and modification time).
    """

    path: str
    header_len: int
    data_start: int
    file_size: int
    tensors: dict[str, tuple[DType, tuple[int, ...], int, int]]
    metadata: dict[str, str] = field(default_factory=dict)
    ps_meta: dict[str, Any] | None = None
    fingerprint: int = field(default=-1, repr=False, compare=False)


def _no_duplicates(path: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise HeaderError(path, f"duplicate key {k!r} in the header JSON")
            out[k] = v
        return out

    return hook


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _shown(value: object) -> str:
    """``repr(value)`` for a message, cut short when long (a header may hold a 90 MB list)."""
    if isinstance(value, list) and len(value) > _SHOWN_ITEMS:
        return repr(value[:_SHOWN_ITEMS])[:-1] + f", … ({len(value)} items)]"
    if isinstance(value, dict) and len(value) > _SHOWN_ITEMS:
        return f"{{… {len(value)} keys}}"
    if isinstance(value, str) and len(value) > 4 * _SHOWN_ITEMS:
        return repr(value[: 4 * _SHOWN_ITEMS]) + f"… ({len(value)} characters)"
    return repr(value)


class _LongList:
    """A JSON list of integers too long to materialise: only its length is kept."""

    __slots__ = ("items",)

    def __init__(self, items: int) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"[… {self.items} integers]"


class _Anomaly(Exception):
    """The streaming parser met something outside the JSON grammar, a repeated key, or bytes
    that are not UTF-8: the exact error comes from replaying the text through ``json``."""


def parse_header(path: str | os.PathLike[str], f: BinaryIO | None = None) -> Header:
    """Read and validate a safetensors header without touching tensor data.

    Every rule of the format is enforced; the length is checked against the file before
    anything is allocated, so a header claiming a huge size fails fast. The header is read and
    decoded in chunks and parsed entry by entry into compact tuples (shapes shared between
    entries), so memory stays a small multiple of the header's size and time linear in it,
    however many entries it holds.

    Args:
        path: the file.
        f: an already open binary file for ``path`` (optional).

    Returns:
        The :class:`Header`.

    Raises:
        HeaderError: naming the file, the entry, what was expected and what was found.

    Example:
        >>> # parse_header("model.safetensors").tensors["wte.weight"]
    """
    spath = os.fspath(path)
    own = f is None
    if f is None:
        f = open(spath, "rb")  # noqa: SIM115 - closed in finally
    try:
        st = os.fstat(f.fileno())
        size = st.st_size
        key = (spath, st.st_dev, st.st_ino, size, st.st_mtime_ns)
        known = _PARSED.get(key)
        if known is not None and _fingerprint(f, known.header_len) == known.fingerprint:
            return known  # a manifest of these very bytes is alive: reuse its parse
        if size < 8:
            raise HeaderError(
                spath, f"expected at least 8 bytes (the header length), found {size} bytes"
            )
        f.seek(0)
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER:
            raise HeaderError(spath, f"header length {n} bytes exceeds the 100 MB limit")
        if 8 + n > size:
            raise HeaderError(
                spath, f"header length {n} bytes runs past the end of the {size}-byte file"
            )
        try:
            h = _Stream(spath, f, n, size).parse()
        except _Anomaly:
            pass
        else:
            _PARSED[key] = h
            return h
        # The text breaks the JSON grammar, repeats a key or is not UTF-8: replay it through
        # the json module, as a whole, so the message is exactly the one json gives.
        _replay(spath, f, n)
        f.seek(8)  # the replay found nothing wrong: parse it the plain way (never seen)
        raw = f.read(n)
    finally:
        if own:
            f.close()
    return _parse_json(spath, raw, n, size)


#: Headers still in use (a manifest keeps its own alive), by path and file identity, so the
#: callers that read a manifest and then the header again (load, verify) parse it once.
_PARSED: weakref.WeakValueDictionary[tuple[Any, ...], Header] = weakref.WeakValueDictionary()
_OBJECT = object()


def _fingerprint(f: BinaryIO, n: int) -> int:
    """CRC-32 of the ``n`` header bytes after the length (read in chunks)."""
    crc = 0
    f.seek(8)
    left = n
    while left:
        chunk = f.read(min(left, _CHUNK_TEXT))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    return crc


_SEEN: Any = ()  # a name already taken, once an error is known (only repeats matter then)


def _replay(spath: str, f: BinaryIO, n: int) -> None:
    """Raise the error the plain parse gives on this header's UTF-8 or JSON, if any.

    Objects are checked for repeated keys and then dropped (each becomes one shared marker),
    so even a 100 MB header costs about its text and one list of its top-level keys.
    """

    def hook(pairs: list[tuple[str, Any]]) -> object:
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise HeaderError(spath, f"duplicate key {k!r} in the header JSON")
            seen.add(k)
        return _OBJECT

    f.seek(8)
    raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(spath, f"header is not valid UTF-8 (byte {exc.start})") from None
    del raw
    try:
        obj = json.loads(text, object_pairs_hook=hook)
    except HeaderError:
        raise
    except (ValueError, RecursionError) as exc:  # ValueError: also ints over 4300 digits
        raise HeaderError(spath, f"header is not valid JSON: {exc}") from None
    if obj is not _OBJECT:
        raise HeaderError(spath, f"header: expected a JSON object, found {type(obj).__name__}")


def _parse_json(spath: str, raw: bytes, n: int, size: int) -> Header:
    """The plain parse: the whole header through ``json.loads`` (the reference behaviour)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(spath, f"header is not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates(spath))
    except HeaderError:
        raise
    except (ValueError, RecursionError) as exc:  # ValueError: also ints over 4300 digits
        raise HeaderError(spath, f"header is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HeaderError(spath, f"header: expected a JSON object, found {type(obj).__name__}")
    meta_raw = obj.pop("__metadata__", None)
    data_len = size - 8 - n
    tensors: dict[str, tuple[DType, tuple[int, ...], int, int]] = {}
    metadata = _check_metadata(spath, meta_raw)
    for name, info in obj.items():
        tensors[name] = _check_entry(spath, name, info, data_len)
    return _finish(spath, n, size, tensors, metadata)


def _check_metadata(spath: str, meta_raw: object) -> dict[str, str]:
    if meta_raw is None:
        return {}
    if not isinstance(meta_raw, dict) or not all(isinstance(v, str) for v in meta_raw.values()):
        raise HeaderError(spath, "__metadata__: expected an object of string → string")
    return dict(meta_raw)


def _finish(
    spath: str,
    n: int,
    size: int,
    tensors: dict[str, tuple[DType, tuple[int, ...], int, int]],
    metadata: dict[str, str],
) -> Header:
    _check_tiling(spath, tensors, size - 8 - n)
    ps_meta = None
    if META_KEY in metadata:
        ps_meta = _parse_ps_meta(spath, metadata.pop(META_KEY))
    return Header(spath, n, 8 + n, size, tensors, metadata, ps_meta)


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
    """Parses a header from the file, decoding it in chunks, one top-level member at a time.

    Semantic errors (a bad entry, bad ``__metadata__``) are kept and raised once the whole
    text has parsed, in the order the plain parse raises them; anything else wrong raises
    :class:`_Anomaly` at once.
    """

    def __init__(self, spath: str, f: BinaryIO, n: int, size: int) -> None:
        self.spath = spath
        self.f = f
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
        chunk = self.f.read(take)
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


def _entry_error(spath: str, name: str, info: dict[str, Any], data_len: int) -> HeaderError:
    """The error :func:`_check_entry` raises for an entry the fast path found wrong."""
    try:
        _check_entry(spath, name, info, data_len)
    except HeaderError as exc:
        return exc
    raise AssertionError(f"{spath}: entry {name!r} passed the full check")  # pragma: no cover


def _check_entry(
    spath: str, name: str, info: object, data_len: int
) -> tuple[DType, tuple[int, ...], int, int]:
    where = f"entry {name!r}"
    if not name:
        raise HeaderError(spath, "entry '': expected a non-empty name")
    if not isinstance(info, dict):
        raise HeaderError(spath, f"{where}: expected an object, found {type(info).__name__}")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise HeaderError(spath, f"{where}: missing {key!r}")
    try:
        dtype = DType(info["dtype"])
    except ValueError:
        raise HeaderError(
            spath,
            f"{where}: dtype {_shown(info['dtype'])} is not a safetensors dtype "
            f"(expected one of {', '.join(d.value for d in DType)})",
        ) from None
    shape = info["shape"]
    if not isinstance(shape, _LongList) and (
        not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape)
    ):
        raise HeaderError(
            spath, f"{where}: shape must be a list of non-negative integers, found {_shown(shape)}"
        )
    rank = shape.items if isinstance(shape, _LongList) else len(shape)
    if rank > MAX_RANK:
        raise HeaderError(
            spath,
            f"{where}: shape has {rank} dimensions; paramscope reads at most {MAX_RANK} "
            "(numpy holds 64; the format sets no limit, but no real tensor comes near)",
        )
    offsets = info["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
    ):
        raise HeaderError(
            spath, f"{where}: data_offsets must be [begin, end] integers, found {_shown(offsets)}"
        )
    begin, end = offsets
    if begin > end:
        raise HeaderError(spath, f"{where}: data_offsets begin {begin} is after end {end}")
    if end > data_len:
        raise HeaderError(
            spath, f"{where}: data_offsets end {end} is past the {data_len}-byte data section"
        )
    # Multiply step by step and stop once the claim exceeds what the file could hold.
    numel = 1
    limit = max(data_len, 1) * 8
    has_zero = 0 in shape
    for d in shape:
        numel *= d
        if numel > _MAX_NUMEL or d > _MAX_NUMEL:
            # As the safetensors package (checked multiplication) and torch (int64 sizes) do,
            # refuse a running product past 64 bits even when a later dimension is 0.
            raise HeaderError(spath, f"{where}: shape {shape} overflows a 64-bit element count")
        if numel > limit and not has_zero:
            raise HeaderError(
                spath,
                f"{where}: shape {shape} claims more elements than the {data_len}-byte "
                "data section can hold",
            )
    if numel * dtype.bits % 8:
        raise HeaderError(
            spath, f"{where}: {numel} elements of {dtype.value} do not fill whole bytes"
        )
    expected = numel * dtype.bits // 8
    if end - begin != expected:
        raise HeaderError(
            spath,
            f"{where}: shape {shape} of {dtype.value} needs {expected} bytes, "
            f"data_offsets give {end - begin}",
        )
    return dtype, tuple(shape), begin, end


def _check_tiling(
    spath: str, tensors: Mapping[str, tuple[DType, tuple[int, ...], int, int]], data_len: int
) -> None:
    pos = 0
    for _, _, begin, end in tensors.values():  # header order: where writers put the data
        if begin != pos:
            break
        pos = end
    else:
        if pos == data_len:
            return
    # Out of order, or wrong: walk in data order, (begin, end) as the key (two stable sorts,
    # so no key tuple is built per entry).
    names = sorted(tensors, key=lambda k: tensors[k][3])
    names.sort(key=lambda k: tensors[k][2])
    pos = 0
    last = None
    for name in names:
        _, _, begin, end = tensors[name]
        if begin != pos:
            if begin > pos:
                raise HeaderError(
                    spath,
                    f"entry {name!r}: data_offsets begin at {begin}, expected {pos} "
                    f"(a {begin - pos}-byte hole after {last!r})",
                )
            raise HeaderError(
                spath, f"entry {name!r}: data_offsets begin at {begin}, overlapping {last!r}"
            )
        pos = end
        last = name
    if pos != data_len:
        raise HeaderError(
            spath,
            f"data section: entries cover {pos} bytes, the file holds {data_len} "
            f"({data_len - pos} trailing bytes)",
        )


#: Values repeated in every entry of paramscope's metadata, kept once (json makes a new
#: string per value: 54 bytes an entry for "param").
_COMMON_VALUES = {v: v for v in ("param", "buffer")}


def _shared_values(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    common = _COMMON_VALUES
    return {k: (common.get(v, v) if type(v) is str else v) for k, v in pairs}


def _parse_ps_meta(spath: str, raw: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw, object_pairs_hook=_shared_values)
    except (ValueError, RecursionError) as exc:  # also too deep, or ints over 4300 digits
        raise HeaderError(spath, f"__metadata__['paramscope'] is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not _is_int(meta.get("version")):
        raise HeaderError(spath, "__metadata__['paramscope']: expected an object with 'version'")
    if meta["version"] > META_VERSION:
        raise HeaderError(
            spath,
            f"__metadata__['paramscope']: version {meta['version']} is newer than this "
            f"paramscope reads ({META_VERSION}); upgrade paramscope",
        )
    entries = meta.get("entries", {})
    aliases = meta.get("aliases", {})
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise HeaderError(spath, "__metadata__['paramscope'].entries: expected name → object")
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise HeaderError(spath, "__metadata__['paramscope'].aliases: expected name → name")
    algo = meta.get("hash", "sha256")
    if algo not in HASH_ALGOS:
        raise HeaderError(
            spath,
            f"__metadata__['paramscope'].hash: expected one of {', '.join(HASH_ALGOS)}, "
            f"found {algo!r}",
        )
    for name, e in entries.items():
        role = e.get("role", "param")
        if role not in ("param", "buffer"):
            raise HeaderError(
                spath, f"entry {name!r}: role must be 'param' or 'buffer', found {role!r}"
            )
        _check_entry_meta(spath, name, e)
    return {"version": meta["version"], "hash": algo, "entries": entries, "aliases": aliases}


def _check_entry_meta(spath: str, name: str, e: Mapping[str, Any]) -> None:
    """Every per-entry field of paramscope's metadata has its type, or one clear error."""
    checks = (
        ("trainable", lambda v: isinstance(v, bool), "true or false"),
        (
            "tags",
            lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
            "a list of strings",
        ),
        ("extra", lambda v: isinstance(v, dict), "an object"),
        (DIGEST_KEY, lambda v: isinstance(v, str), "a hex string"),
    )
    for key, ok, want in checks:
        if key in e and not ok(e[key]):
            raise HeaderError(
                spath, f"entry {name!r}: {key} expected {want}, found {_short_repr(e[key])}"
            )


def _short_repr(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def manifest_entries(h: Header, external: Mapping[str, Entry] | None = None) -> list[Entry]:
    """Entries of one parsed file, aliases included, with roles exact or inferred.

    Args:
        h: the parsed header.
        external: entries of sibling shards, for aliases whose target lives elsewhere.

    Returns:
        The entries, stored ones in header order, then aliases.

    Raises:
        HeaderError: an alias points at a name no file holds.
    """
    return list(manifest_rows(h, external).values())


def manifest_rows(h: Header, external: Mapping[str, Entry] | None = None) -> EntryRows:
    """The entries of one parsed file as compact rows, each :class:`Entry` built on access.

    Nothing is kept per entry beyond the header's own tuples, so a manifest of a header
    with 1.4 M entries costs what the header does.

    Args:
        h: the parsed header.
        external: entries of sibling shards, for aliases whose target lives elsewhere.

    Returns:
        The rows: stored entries in header order, then aliases.

    Raises:
        HeaderError: an alias points at a name no file holds, or is also stored.

    Example:
        >>> # rows = manifest_rows(parse_header("model.safetensors")); rows["wte.weight"].shape
    """
    ps_meta = h.ps_meta
    ps_entries = (ps_meta or {}).get("entries", {})
    aliases: dict[str, str] = (ps_meta or {}).get("aliases", {})
    outside = external or {}
    for alias, target in aliases.items():
        if target not in h.tensors and target not in outside:
            raise HeaderError(h.path, f"alias {alias!r}: its target {target!r} is not stored")
        if alias in h.tensors:
            raise HeaderError(h.path, f"alias {alias!r}: the name is also stored as a tensor")
    path, start = h.path, h.data_start
    tensors = h.tensors
    param = Role.PARAM  # a local: read per entry

    if ps_meta is None:

        def stored(name: str, row: tuple[DType, tuple[int, ...], int, int]) -> Entry:
            dtype, shape, begin, end = row
            role = infer_role(name, dtype, shape)
            loc = Location(path, start + begin, end - begin)
            return Entry(name, shape, dtype, role, role is param, None, (), NO_EXTRA, loc)

    else:

        def stored(name: str, row: tuple[DType, tuple[int, ...], int, int]) -> Entry:
            dtype, shape, begin, end = row
            loc = Location(path, start + begin, end - begin)
            return _entry(name, dtype, shape, ps_entries.get(name), ps_meta, loc)

    def alias_entry(alias: str, target: str) -> Entry:
        row = tensors.get(target)
        dtype, shape = (
            (row[0], row[1]) if row is not None else (outside[target].dtype, outside[target].shape)
        )
        return _entry(alias, dtype, shape, ps_entries.get(alias), ps_meta, None, target)

    return EntryRows((tensors, stored), (aliases, alias_entry), ties=aliases, owner=h)


def _entry(
    name: str,
    dtype: DType,
    shape: tuple[int, ...],
    meta: Mapping[str, Any] | None,
    ps_meta: Mapping[str, Any] | None,
    loc: Location | None,
    tie: str | None = None,
) -> Entry:
    if ps_meta is not None and meta is not None:
        role = Role(meta.get("role", "param"))
        digest = meta.get(DIGEST_KEY)
        return Entry(
            name,
            shape,
            dtype,
            role=role,
            trainable=bool(meta.get("trainable", role is Role.PARAM)),
            tie=tie,
            tags=tuple(str(t) for t in meta.get("tags", ())),
            extra=dict(extra) if (extra := meta.get("extra")) else NO_EXTRA,
            location=loc,
            hash=f"{ps_meta['hash']}:{digest}" if isinstance(digest, str) else None,
        )
    role = infer_role(name, dtype, shape)
    return Entry(name, shape, dtype, role=role, trainable=role is Role.PARAM, tie=tie, location=loc)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of one safetensors file, from its header alone.

    Args:
        path: the file.

    Returns:
        A :class:`Manifest`; roles are ``exact`` when paramscope wrote the file.

    Raises:
        HeaderError: the header breaks a rule of the format.

    Example:
        >>> # read_manifest("model.safetensors").roles
    """
    h = parse_header(path)
    exact = h.ps_meta is not None
    return Manifest(
        manifest_rows(h),
        format=Format.SAFETENSORS,
        source=h.path,
        roles=RoleSource.EXACT if exact else RoleSource.INFERRED,
        metadata=h.metadata,
    )


# ---------------------------------------------------------------------------- values (torch)


def _torch_shape(dtype: DType, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    if dtype is DType.F4:
        if not shape or shape[-1] % 2:
            raise UnsupportedDTypeError(
                f"entry {name!r}: F4 with an odd last dimension {shape} has no torch layout"
            )
        return (*shape[:-1], shape[-1] // 2)
    return shape


def tensor_from_buffer(
    buf: Any, offset: int, dtype: DType, shape: tuple[int, ...], name: str
) -> torch.Tensor:
    """A tensor viewing ``buf`` (no copy when aligned), for one stored entry.

    Args:
        buf: a writable buffer (a copy-on-write mmap).
        offset: byte offset of the entry in ``buf``.
        dtype: its dtype.
        shape: its logical shape.
        name: for errors.

    Returns:
        The tensor.
    """
    import torch

    tdt = dtype.to_torch()
    tshape = _torch_shape(dtype, shape, name)
    nbytes = dtype.nbytes(_prod(shape))
    if nbytes == 0:
        return torch.empty(tshape, dtype=tdt)
    itemsize = tdt.itemsize
    if offset % itemsize == 0:
        t = torch.frombuffer(buf, dtype=tdt, count=nbytes // itemsize, offset=offset)
    else:  # unaligned: copy into an aligned allocation
        raw = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=offset)
        t = raw.clone().view(tdt)
    return t.reshape(tshape)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def open_mmap(path: str) -> Any:
    """Map a file copy-on-write (writes stay private); empty files give ``b""``.

    Args:
        path: the file.

    Returns:
        The mapping.
    """
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


def load_tensors(h: Header, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Tensors of the stored entries ``names``, viewing a private mmap of the file (lazy).

    Args:
        h: the parsed header of the file.
        names: stored names to load.

    Returns:
        name → tensor.

    Raises:
        UnsupportedDTypeError: for dtypes torch lacks, or on big-endian machines.
    """
    if sys.byteorder != "little":  # pragma: no cover
        raise UnsupportedDTypeError("safetensors data is little-endian; this machine is not")
    names = list(names)
    if not names:
        return {}
    mm = open_mmap(h.path)
    out = {}
    for name in names:
        dtype, shape, begin, _ = h.tensors[name]
        out[name] = tensor_from_buffer(mm, h.data_start + begin, dtype, shape, name)
    return out


class _Row:
    """A lazy entry of a file other than a :class:`LazyTensors`' first."""

    __slots__ = ("file", "row")

    def __init__(self, file: int, row: tuple[DType, tuple[int, ...], int, int]) -> None:
        self.file = file
        self.row = row


class LazyTensors(dict):  # type: ignore[type-arg]
    """name → tensor of stored safetensors entries, each made when first read.

    Until then an entry's value is its header row, the very tuple the parsed header holds (so
    a lazy entry costs one dict slot); reading it through ``[]`` makes a tensor viewing a
    private copy-on-write mmap of its file (no copy when aligned) and keeps it, so a name
    gives the same tensor each time and changes to it stay. :meth:`values` and :meth:`items`
    make the tensors they yield without keeping them, so a sum over 1.4 M entries stays small.
    Real tensors may be stored too (``d[name] = t``).

    Example:
        >>> # pd = paramscope.load("model.safetensors"); pd._values  # a LazyTensors
    """

    __slots__ = ("_files",)

    def __init__(self) -> None:
        super().__init__()
        self._files: list[list[Any]] = []  # [header, mmap or None] per file

    def add_file(self, h: Header) -> int:
        """Register a file whose entries will be put; returns its number for :meth:`put`.

        Args:
            h: the file's parsed header.

        Returns:
            The file's number.
        """
        if sys.byteorder != "little":  # pragma: no cover
            raise UnsupportedDTypeError("safetensors data is little-endian; this machine is not")
        self._files.append([h, None])
        return len(self._files) - 1

    def put(self, name: str, file: int, stored: str) -> None:
        """Make ``name`` the lazy value of entry ``stored`` of file ``file``.

        Args:
            name: the key.
            file: a number from :meth:`add_file`.
            stored: the entry's name in that file's header.

        Raises:
            UnsupportedDTypeError: torch cannot hold the entry (checked now, not on first use).
        """
        row = self._files[file][0].tensors[stored]
        dtype, shape = row[0], row[1]
        if dtype not in _LOADABLE:
            _loadable(dtype)
        if dtype is DType.F4:
            _torch_shape(dtype, shape, name)
        dict.__setitem__(self, name, row if file == 0 else _Row(file, row))

    def is_made(self, name: str) -> bool:
        """Whether ``name``'s tensor exists already (read before, or stored as a tensor).

        Args:
            name: the key.

        Returns:
            True once it is a tensor.
        """
        v = dict.__getitem__(self, name)
        return type(v) is not tuple and type(v) is not _Row

    def _make(self, name: str, v: Any) -> Any:
        if type(v) is tuple:
            file, row = 0, v
        elif type(v) is _Row:
            file, row = v.file, v.row
        else:
            return v
        slot = self._files[file]
        if slot[1] is None:
            slot[1] = open_mmap(slot[0].path)
        dtype, shape, begin, _ = row
        return tensor_from_buffer(slot[1], slot[0].data_start + begin, dtype, shape, name)

    def __getitem__(self, name: str) -> Any:
        v = dict.__getitem__(self, name)
        t = self._make(name, v)
        if t is not v:
            dict.__setitem__(self, name, t)
        return t

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if dict.__contains__(self, name) else default

    def pop(self, name: str, *default: Any) -> Any:  # type: ignore[override]
        if not dict.__contains__(self, name):
            return dict.pop(self, name, *default)
        return self._make(name, dict.pop(self, name))

    def values(self) -> Any:  # type: ignore[override]
        return (self._make(k, v) for k, v in dict.items(self))

    def items(self) -> Any:  # type: ignore[override]
        return ((k, self._make(k, v)) for k, v in dict.items(self))

    def copy(self) -> LazyTensors:
        out = LazyTensors()
        out._files = self._files
        dict.update(out, self)
        return out

    def __reduce__(self) -> Any:
        return (dict, (dict(self.items()),))

    def __repr__(self) -> str:
        made = sum(1 for k in self if self.is_made(k))
        return f"LazyTensors({len(self)} entries, {made} read)"


_LOADABLE: dict[DType, bool] = {}


def _loadable(dtype: DType) -> bool:
    dtype.to_torch()  # raises UnsupportedDTypeError when torch lacks it
    _LOADABLE[dtype] = True
    return True


# ------------------------------------------------------------------------------------ hashes


def hash_bytes(buf: Any, algo: str = DEFAULT_HASH) -> str:
    """The hex digest of a buffer (128-bit XXH3 by default; SHA-256 on request).

    Args:
        buf: bytes or any buffer.
        algo: ``"xxh3-128"`` or ``"sha256"``.

    Returns:
        32 hex characters for XXH3-128, 64 for SHA-256.

    Example:
        >>> hash_bytes(b"", "sha256")[:8], hash_bytes(b"")
        ('e3b0c442', '99aa06d3014798d86001c324468d497f')
    """
    if algo == "sha256":
        import hashlib

        return hashlib.sha256(buf).hexdigest()
    import xxhash

    return xxhash.xxh3_128(buf).hexdigest()


def verify_hashes(h: Header) -> tuple[int, list[str]]:
    """Recompute each stored entry's hash from the file and compare.

    Args:
        h: the parsed header.

    Returns:
        ``(number of hashed entries checked, problems)``; each problem names the entry.
    """
    entries = (h.ps_meta or {}).get("entries", {})
    algo = (h.ps_meta or {}).get("hash", "sha256")
    problems: list[str] = []
    checked = 0
    if not entries:
        return 0, problems
    mm = open_mmap(h.path)
    view = memoryview(mm) if not isinstance(mm, bytes) else memoryview(b"")
    try:
        for name, (_, _, begin, end) in h.tensors.items():
            want = entries.get(name, {}).get(DIGEST_KEY)
            if not isinstance(want, str):
                continue
            checked += 1
            got = hash_bytes(view[h.data_start + begin : h.data_start + end], algo)
            if got != want:
                problems.append(
                    str(
                        IntegrityError(
                            h.path,
                            f"entry {name!r}: {algo} is {got[:16]}…, the header records "
                            f"{want[:16]}… (the bytes changed after saving)",
                        )
                    )
                )
    finally:
        view.release()
        if not isinstance(mm, bytes):
            mm.close()
    return checked, problems


# ------------------------------------------------------------------------------------ writing


@dataclass
class StoredEntry:
    """One tensor to write, with its paramscope metadata.

    Attributes:
        name: the entry name.
        tensor: its value (any device; copied to CPU if needed).
        meta: role / trainable / tags / extra, JSON-able.
    """

    name: str
    tensor: torch.Tensor
    meta: dict[str, Any]


def _as_bytes(name: str, t: torch.Tensor) -> tuple[DType, list[int], Any]:
    """``(dtype, logical shape, a byte buffer viewing the data)`` for a tensor."""
    import torch

    if t.device.type == "meta":
        raise UnsupportedDTypeError(
            f"entry {name!r}: tensor is on the meta device and has no values to save; "
            "materialise it first (e.g. model.to_empty(device='cpu') and initialise)"
        )
    if getattr(t, "is_sparse", False) or t.layout != torch.strided:
        raise UnsupportedDTypeError(f"entry {name!r}: only dense (strided) tensors can be saved")
    dtype = DType.from_torch(t.dtype)
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    shape = list(t.shape)
    if dtype is DType.F4:
        shape = [*shape[:-1], shape[-1] * 2] if shape else [2]
    if t.numel() == 0:
        return dtype, shape, b""
    flat = t.reshape(-1).view(torch.uint8)
    return dtype, shape, memoryview(flat.numpy())


@dataclass(slots=True)
class Planned:
    """One entry of a streamed write: what the header says before the bytes exist.

    Attributes:
        name: the entry name.
        dtype: its safetensors dtype.
        shape: its (logical) shape.
        nbytes: its byte count.
        meta: its paramscope metadata (role, trainable, tags, extra).
    """

    name: str
    dtype: DType
    shape: Sequence[int]
    nbytes: int
    meta: Mapping[str, Any]


def write_file(
    path: str | os.PathLike[str],
    entries: Sequence[StoredEntry],
    *,
    aliases: Mapping[str, str] | None = None,
    alias_meta: Mapping[str, dict[str, Any]] | None = None,
    metadata: Mapping[str, str] | None = None,
    fsync: bool = True,
) -> int:
    """Write one safetensors file atomically, with a digest per entry in its metadata.

    The data is laid out by item size (larger first) so every tensor is aligned; the header
    keeps the callers' order. See :func:`write_stream` for how the bytes are written.

    Args:
        path: destination file.
        entries: the tensors to store, in order.
        aliases: alias name → stored name, for ties.
        alias_meta: paramscope metadata of the aliases.
        metadata: free str → str metadata.
        fsync: flush the file and its folder to disk before returning (durable against power
            loss). ``False`` still renames into place atomically (readers and a killed
            process never see a torn file) but leaves the flush to the OS.

    Returns:
        Bytes of tensor data written.

    Raises:
        UnsupportedDTypeError: a tensor's dtype or layout cannot be stored.
    """
    prepared = [(e, *_as_bytes(e.name, e.tensor)) for e in entries]
    plan = [
        Planned(e.name, dtype, shape, len(buf) if isinstance(buf, bytes) else buf.nbytes, e.meta)
        for e, dtype, shape, buf in prepared
    ]
    order = sorted(range(len(plan)), key=lambda i: -plan[i].dtype.bits)
    return write_stream(
        path,
        plan,
        ((plan[i].name, prepared[i][3]) for i in order),
        data_order=[plan[i].name for i in order],
        aliases=aliases,
        alias_meta=alias_meta,
        metadata=metadata,
        fsync=fsync,
    )


def write_stream(
    path: str | os.PathLike[str],
    plan: Sequence[Planned],
    chunks: Iterable[tuple[str, Any]],
    *,
    data_order: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
    alias_meta: Mapping[str, dict[str, Any]] | None = None,
    metadata: Mapping[str, str] | None = None,
    fsync: bool = True,
    late_meta: Mapping[str, Mapping[str, Any]] | None = None,
    reserve: int = 0,
) -> int:
    """Write a safetensors file whose tensors are produced one at a time (bounded memory).

    The header is computed from ``plan`` (with fixed-length placeholder digests) and written
    first; ``chunks`` then yields ``(name, bytes-like)`` in data order, each written straight
    to the file and hashed (XXH3-128) in a second thread while the next one is produced; at
    most two buffers are alive at once. The real header is written last over the placeholder
    and the file is renamed into place atomically (fsync'd unless ``fsync=False``).

    Args:
        path: destination file.
        plan: every entry, in header order.
        chunks: ``(name, buffer)`` pairs in data order.
        data_order: the names in data order (default: plan order).
        aliases: alias name → stored name.
        alias_meta: paramscope metadata of the aliases.
        metadata: free str → str metadata.
        fsync: as for :func:`write_file`.
        late_meta: name → metadata fields known only once the bytes are produced (e.g. a
            nonzero count); read after the last chunk and merged into the entries' metadata.
        reserve: header bytes kept free for ``late_meta`` (the final header is padded with
            spaces, which JSON and every safetensors reader allow, to the reserved length).

    Returns:
        Bytes of tensor data written.

    Raises:
        ParamscopeError: a produced buffer does not match the plan (name or size), or the
            late metadata does not fit the reserved header space.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from .._atomic import Flusher, atomic_write

    algo = DEFAULT_HASH
    by_name = {p.name: p for p in plan}
    order = list(data_order) if data_order is not None else [p.name for p in plan]
    begins: dict[str, int] = {}
    pos = 0
    for name in order:
        begins[name] = pos
        pos += by_name[name].nbytes
    placeholder = "0" * len(hash_bytes(b"", algo))
    alias_names = dict(aliases or {})
    alias_metas = alias_meta or {}

    def entry_meta(k: str, hashes: Mapping[str, str], late: Mapping[str, Any]) -> Any:
        v = (
            dict(alias_metas.get(k, {}))
            if k in alias_names
            else {**by_name[k].meta, DIGEST_KEY: placeholder}
        )
        return {**v, **late.get(k, {}), DIGEST_KEY: hashes[k]} if k in hashes else v

    memo: dict[int, tuple[Any, str | None]] = {}  # id(meta) → (meta, its text sans braces)

    def too_big() -> Exception:
        from .._errors import ParamscopeError

        return ParamscopeError(
            f"{path}: the header would pass {MAX_HEADER:,} bytes ({len(plan):,} entries with "
            "their metadata), the limit every safetensors reader enforces (over the 100 MB "
            "limit); write fewer entries per file (select some, or shard: max_shard_size / "
            "--shard-size)"
        )

    def meta_text(k: str, hashes: Mapping[str, str], late: Mapping[str, Any]) -> str:
        """``json.dumps(entry_meta(k, …), sort_keys=True)``; a meta many entries share is
        encoded once, the digest (first when sorted) put in front of it."""
        p = by_name.get(k)
        if p is None or k in alias_names or (k in hashes and late.get(k)):
            return _sorted_json(entry_meta(k, hashes, late))
        known = memo.get(id(p.meta))
        if known is None or known[0] is not p.meta:
            body = None
            if all(isinstance(x, str) and x > DIGEST_KEY for x in p.meta):
                body = _sorted_json(p.meta)[1:-1]
            known = (p.meta, body)
            if len(memo) < 4096:
                memo[id(p.meta)] = known
        if known[1] is None:
            return _sorted_json(entry_meta(k, hashes, late))
        digest = _esc(hashes.get(k, placeholder))
        return '{"' + DIGEST_KEY + '":' + digest + ("," + known[1] if known[1] else "") + "}"

    def header_bytes(
        hashes: Mapping[str, str], late: Mapping[str, Mapping[str, Any]], pad_to: int = 0
    ) -> bytearray:
        # The bytes of json.dumps({"__metadata__": meta, name: {"dtype", "shape",
        # "data_offsets"}, ...}) with paramscope's metadata (itself JSON, sorted) as a string
        # in meta, made entry by entry straight into one buffer: no dict and no text per
        # entry kept, so a plan of a million entries costs about its header's size.
        out = bytearray(8)  # the length, filled in at the end
        mark = "\x00"  # where paramscope's metadata goes (escaped below)
        meta = {"format": "pt", **dict(metadata or {}), META_KEY: mark}
        slot = _esc(META_KEY) + ":" + _esc(mark)  # unique: quotes inside values are escaped
        before, after = json.dumps(meta, separators=(",", ":")).split(slot, 1)
        out += ('{"__metadata__":' + before + _esc(META_KEY) + ':"').encode()
        # the metadata string, escaped piece by piece (escaping works character by character)
        out += _esc('{"aliases":' + _sorted_json(alias_names) + ',"entries":{')[1:-1].encode()
        for i, k in enumerate(sorted(by_name.keys() | alias_names.keys())):
            piece = ("," if i else "") + _esc(k) + ":" + meta_text(k, hashes, late)
            out += _esc(piece)[1:-1].encode()
            if len(out) > MAX_HEADER + 8:
                raise too_big()
        tail = '},"hash":' + json.dumps(algo) + ',"version":' + json.dumps(META_VERSION) + "}"
        out += _esc(tail)[1:-1].encode()
        out += ('"' + after).encode()
        for p in plan:
            b = begins[p.name]
            out += (
                f',{_esc(p.name)}:{{"dtype":"{p.dtype.value}","shape":'
                f'[{",".join(map(str, p.shape))}],"data_offsets":[{b},{b + p.nbytes}]}}'
            ).encode()
            if len(out) > MAX_HEADER + 8:
                raise too_big()
        out += b"}"
        n = len(out) - 8
        n += max(0, pad_to - n)
        n += -(8 + n) % 8  # data section starts 8-byte aligned
        out += b" " * (8 + n - len(out))
        struct.pack_into("<Q", out, 0, n)
        return out

    first = header_bytes({}, {})
    if reserve:
        first = header_bytes({}, {}, pad_to=len(first) - 8 + reserve)
    if len(first) - 8 > MAX_HEADER:
        raise too_big()
    digests: dict[str, str] = {}
    with atomic_write(path, fsync=fsync) as f, ThreadPoolExecutor(1) as pool:
        _preallocate(f, len(first) + pos)
        f.write(first)
        flusher = Flusher(f, every=(256 << 20) if fsync else None)
        pending: tuple[str, Future[str]] | None = None
        expected = iter(order)
        for name, buf in chunks:
            want = next(expected, None)
            mv = memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)
            if name != want or len(mv) != by_name[name].nbytes:
                from .._errors import ParamscopeError

                raise ParamscopeError(
                    f"{path}: produced {name!r} ({len(mv)} bytes), the plan expects {want!r} "
                    f"({by_name[want].nbytes if want in by_name else '?'} bytes)"
                )
            if len(mv) < _HASH_INLINE:  # small: a thread hand-off costs more than the hash
                digests[name] = hash_bytes(mv, algo)
            else:
                if pending is not None:  # bound memory: one buffer at most waits for its digest
                    digests[pending[0]] = pending[1].result()
                pending = (name, pool.submit(hash_bytes, buf, algo))
            for start in range(0, len(mv), _CHUNK):
                f.write(mv[start : start + _CHUNK])
                flusher.wrote(min(_CHUNK, len(mv) - start))
        if pending is not None:
            digests[pending[0]] = pending[1].result()
        missing = [n for n in order if n not in digests]
        if missing:
            from .._errors import ParamscopeError

            raise ParamscopeError(f"{path}: the producer stopped before {missing[0]!r}")
        final = header_bytes(digests, late_meta or {}, pad_to=len(first) - 8)
        if len(final) != len(first):
            from .._errors import ParamscopeError

            raise ParamscopeError(
                f"{path}: late metadata needs {len(final) - len(first)} more header bytes "
                f"than the {reserve} reserved"
            )
        f.seek(0)
        f.write(final)
        flusher.close()
    return pos


_esc = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # json.dumps(str)
_sorted_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def _preallocate(f: BinaryIO, size: int) -> None:
    """Reserve the file's blocks up front (Linux): ~30% faster writes, less to journal."""
    if size > (64 << 20) and hasattr(os, "posix_fallocate") and sys.platform == "linux":
        with contextlib.suppress(OSError):  # no fallocate on this filesystem: write without
            os.posix_fallocate(f.fileno(), 0, size)
