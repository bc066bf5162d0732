"""The safetensors format's rules: the :class:`Header` a parse yields and every check on it.

Layout of the format: 8 bytes little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
(an object: entry name → ``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an
optional ``"__metadata__"`` object of str → str), then the data section. Offsets are relative
to the data section, start at 0 and tile it with no hole or overlap, and each entry's byte
count equals its element count times its item size.

paramscope keeps its own metadata as one JSON string under ``__metadata__["paramscope"]``:
``{"version": 1, "hash": "xxh3-128", "entries": {name: {"role", "trainable", "tags", "extra",
"digest"}}, "aliases": {alias: target}}``. Tied entries are stored once; aliases live only in
that map. Files without it are read with inferred roles.

Both parsers (the streaming one, :mod:`._safetensors_scan`, and the plain ``json`` one of
:mod:`._safetensors_header`) check entries with the functions here, so an error reads the
same whichever parser met it. Messages name the file, the entry, what was expected and what
was found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._dtypes import DType
from .._errors import HeaderError

__all__ = [
    "DEFAULT_HASH",
    "DIGEST_KEY",
    "HASH_ALGOS",
    "MAX_HEADER",
    "MAX_RANK",
    "META_KEY",
    "META_VERSION",
    "Header",
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
