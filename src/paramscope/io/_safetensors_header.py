"""Reading a safetensors header: length, limits, the streaming parse, the replay on errors.

:func:`parse_header` reads through a :class:`~paramscope.io._source.ByteSource` (never a path
of its own), checks the length against the source before anything is allocated, runs the
streaming parser (:mod:`._safetensors_scan`) and, when that meets anything outside the JSON
grammar, replays the text through ``json`` so the message is exactly the one ``json`` gives.
A parse is kept while a manifest uses it and reused for the same bytes of the same file.
"""

from __future__ import annotations

import json
import os
import struct
import weakref
import zlib
from typing import Any

from .._dtypes import DType
from .._errors import HeaderError
from ._safetensors_rules import (
    MAX_HEADER,
    Header,
    _check_entry,
    _check_metadata,
    _finish,
    _no_duplicates,
)
from ._safetensors_scan import _CHUNK_TEXT, _Anomaly, _Stream
from ._source import ByteSource, opened

__all__ = ["parse_header"]


def parse_header(source: str | os.PathLike[str] | ByteSource) -> Header:
    """Read and validate a safetensors header without touching tensor data.

    Every rule of the format is enforced; the length is checked against the file before
    anything is allocated, so a header claiming a huge size fails fast. The header is read and
    decoded in chunks and parsed entry by entry into compact tuples (shapes shared between
    entries), so memory stays a small multiple of the header's size and time linear in it,
    however many entries it holds.

    Args:
        source: the file, or a :class:`~paramscope.io._source.ByteSource` open on it (left
            open).

    Returns:
        The :class:`Header`.

    Raises:
        HeaderError: naming the file, the entry, what was expected and what was found.

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> path = paramscope.save({"wte.weight": torch.zeros(50, 8)}, f"{d}/model.safetensors")
        >>> parse_header(path).tensors["wte.weight"]  # dtype, shape, data start and end
        (<DType.F32: 'F32'>, (50, 8), 0, 1600)
        >>> with open(f"{d}/bad.safetensors", "wb") as f:
        ...     _ = f.write((1 << 40).to_bytes(8, "little") + b"{}")
        >>> parse_header(f"{d}/bad.safetensors")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.HeaderError: ...: header length 1099511627776 bytes exceeds the 100 MB...
    """
    with opened(source) as src:
        spath = src.name
        size = src.size
        key = None if src.identity is None else (spath, *src.identity)
        known = _PARSED.get(key) if key is not None else None
        if known is not None and (
            getattr(src, "strong_identity", False)  # (a remote ETag: no header re-read)
            or _fingerprint(src, known.header_len) == known.fingerprint
        ):
            return known  # a manifest of these very bytes is alive: reuse its parse
        if size < 8:
            raise HeaderError(
                spath, f"expected at least 8 bytes (the header length), found {size} bytes"
            )
        (n,) = struct.unpack("<Q", src.read_at(0, 8))
        if n > MAX_HEADER:
            raise HeaderError(spath, f"header length {n} bytes exceeds the 100 MB limit")
        if 8 + n > size:
            raise HeaderError(
                spath, f"header length {n} bytes runs past the end of the {size}-byte file"
            )
        try:
            h = _Stream(spath, src, n, size).parse()
        except _Anomaly:
            pass
        else:
            if key is not None:
                _PARSED[key] = h
            return h
        # The text breaks the JSON grammar, repeats a key or is not UTF-8: replay it through
        # the json module, as a whole, so the message is exactly the one json gives.
        _replay(spath, src, n)
        raw = src.read_at(8, n)  # the replay found nothing wrong: parse it the plain way
    return _parse_json(spath, raw, n, size)


#: Headers still in use (a manifest keeps its own alive), by path and file identity, so the
#: callers that read a manifest and then the header again (load, verify) parse it once.
_PARSED: weakref.WeakValueDictionary[tuple[Any, ...], Header] = weakref.WeakValueDictionary()
_OBJECT = object()


def _fingerprint(src: ByteSource, n: int) -> int:
    """CRC-32 of the ``n`` header bytes after the length (read in chunks)."""
    crc = 0
    pos = 8
    left = n
    while left:
        chunk = src.read_at(pos, min(left, _CHUNK_TEXT))
        pos += len(chunk)
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    return crc


def _replay(spath: str, src: ByteSource, n: int) -> None:
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

    raw = src.read_at(8, n)
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
