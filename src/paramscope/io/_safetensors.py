"""safetensors: a strict stdlib header parser, lazy mmap loading, and an atomic hashed writer.

Layout of the format: 8 bytes little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
(an object: entry name → ``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an
optional ``"__metadata__"`` object of str → str), then the data section. Offsets are relative
to the data section, start at 0 and tile it with no hole or overlap, and each entry's byte
count equals its element count times its item size.

paramscope keeps its own metadata as one JSON string under ``__metadata__["paramscope"]``:
``{"version": 1, "hash": "xxh3-128", "entries": {name: {"role", "trainable", "tags", "extra",
"digest"}}, "aliases": {alias: target}}``. Tied entries are stored once; aliases live only in
that map. Files without it are read with inferred roles.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from .._dtypes import DType
from .._enums import Format, Role, RoleSource
from .._errors import HeaderError, IntegrityError, UnsupportedDTypeError
from .._manifest import Entry, Location, Manifest, infer_role

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_HEADER",
    "META_KEY",
    "Header",
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
    """

    path: str
    header_len: int
    data_start: int
    file_size: int
    tensors: dict[str, tuple[DType, tuple[int, ...], int, int]]
    metadata: dict[str, str] = field(default_factory=dict)
    ps_meta: dict[str, Any] | None = None


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


def parse_header(path: str | os.PathLike[str], f: BinaryIO | None = None) -> Header:
    """Read and validate a safetensors header without touching tensor data.

    Every rule of the format is enforced; the length is checked against the file before
    anything is allocated, so a header claiming a huge size fails fast.

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
        size = os.fstat(f.fileno()).st_size
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
        raw = f.read(n)
    finally:
        if own:
            f.close()
    return _parse_json(spath, raw, n, size)


def _parse_json(spath: str, raw: bytes, n: int, size: int) -> Header:
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
    metadata: dict[str, str] = {}
    if meta_raw is not None:
        if not isinstance(meta_raw, dict) or not all(isinstance(v, str) for v in meta_raw.values()):
            raise HeaderError(spath, "__metadata__: expected an object of string → string")
        metadata = dict(meta_raw)
    data_len = size - 8 - n
    tensors: dict[str, tuple[DType, tuple[int, ...], int, int]] = {}
    for name, info in obj.items():
        tensors[name] = _check_entry(spath, name, info, data_len)
    _check_tiling(spath, tensors, data_len)
    ps_meta = None
    if META_KEY in metadata:
        ps_meta = _parse_ps_meta(spath, metadata.pop(META_KEY))
    return Header(spath, n, 8 + n, size, tensors, metadata, ps_meta)


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
            f"{where}: dtype {info['dtype']!r} is not a safetensors dtype "
            f"(expected one of {', '.join(d.value for d in DType)})",
        ) from None
    shape = info["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise HeaderError(
            spath, f"{where}: shape must be a list of non-negative integers, found {shape!r}"
        )
    offsets = info["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
    ):
        raise HeaderError(
            spath, f"{where}: data_offsets must be [begin, end] integers, found {offsets!r}"
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
    for d in shape:
        numel *= d
        if numel > _MAX_NUMEL or d > _MAX_NUMEL:
            # As the safetensors package (checked multiplication) and torch (int64 sizes) do,
            # refuse a running product past 64 bits even when a later dimension is 0.
            raise HeaderError(spath, f"{where}: shape {shape} overflows a 64-bit element count")
        if numel > limit and 0 not in shape:
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
    last = None
    for name, (_, _, begin, end) in sorted(tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])):
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


def _parse_ps_meta(spath: str, raw: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
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
    return {"version": meta["version"], "hash": algo, "entries": entries, "aliases": aliases}


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
    ps_entries = (h.ps_meta or {}).get("entries", {})
    out: list[Entry] = []
    by_name: dict[str, Entry] = {}
    for name, (dtype, shape, begin, end) in h.tensors.items():  # header order
        loc = Location(h.path, h.data_start + begin, end - begin)
        e = _entry(name, dtype, shape, ps_entries.get(name), h.ps_meta, loc)
        out.append(e)
        by_name[name] = e
    for alias, target in (h.ps_meta or {}).get("aliases", {}).items():
        t = by_name.get(target) or (external or {}).get(target)
        if t is None:
            raise HeaderError(h.path, f"alias {alias!r}: its target {target!r} is not stored")
        if alias in by_name:
            raise HeaderError(h.path, f"alias {alias!r}: the name is also stored as a tensor")
        out.append(_entry(alias, t.dtype, t.shape, ps_entries.get(alias), h.ps_meta, None, target))
    return out


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
            extra=dict(meta.get("extra", {})),
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
        manifest_entries(h),
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


@dataclass
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
    shape: list[int]
    nbytes: int
    meta: dict[str, Any]


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
    offsets: dict[str, list[int]] = {}
    pos = 0
    for name in order:
        offsets[name] = [pos, pos + by_name[name].nbytes]
        pos += by_name[name].nbytes
    header: dict[str, Any] = {}
    placeholder = "0" * len(hash_bytes(b"", algo))
    ps_entries: dict[str, Any] = {}
    for p in plan:
        header[p.name] = {"dtype": p.dtype.value, "shape": p.shape, "data_offsets": offsets[p.name]}
        ps_entries[p.name] = {**p.meta, DIGEST_KEY: placeholder}
    for alias in aliases or {}:
        ps_entries[alias] = dict((alias_meta or {}).get(alias, {}))

    def header_bytes(
        hashes: Mapping[str, str], late: Mapping[str, Mapping[str, Any]], pad_to: int = 0
    ) -> bytes:
        ents = {
            k: ({**v, **late.get(k, {}), DIGEST_KEY: hashes[k]} if k in hashes else v)
            for k, v in ps_entries.items()
        }
        ps = {
            "version": META_VERSION,
            "hash": algo,
            "entries": ents,
            "aliases": dict(aliases or {}),
        }
        meta = {
            "format": "pt",
            **dict(metadata or {}),
            META_KEY: json.dumps(ps, separators=(",", ":"), sort_keys=True),
        }
        obj = {"__metadata__": meta, **header}
        raw = json.dumps(obj, separators=(",", ":")).encode()
        raw += b" " * max(0, pad_to - len(raw))
        raw += b" " * (-(8 + len(raw)) % 8)  # data section starts 8-byte aligned
        return struct.pack("<Q", len(raw)) + raw

    first = header_bytes({}, {})
    if reserve:
        first = header_bytes({}, {}, pad_to=len(first) - 8 + reserve)
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
            if pending is not None:  # bound memory: at most one buffer waits for its digest
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


def _preallocate(f: BinaryIO, size: int) -> None:
    """Reserve the file's blocks up front (Linux): ~30% faster writes, less to journal."""
    if size > (64 << 20) and hasattr(os, "posix_fallocate") and sys.platform == "linux":
        with contextlib.suppress(OSError):  # no fallocate on this filesystem: write without
            os.posix_fallocate(f.fileno(), 0, size)
