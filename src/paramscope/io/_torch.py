"""torch ``.pt`` / ``.bin`` checkpoints, read without running any code from the file.

Manifests come from paramscope's own pickle machine (:mod:`paramscope.io._torch_pickle`),
which needs no torch: it reads only what torch's weights-only loader reads, admits only the
globals a plain tensor checkpoint uses and builds frozen stand-ins for them, so shapes, dtypes
and ties are known without reading tensor bytes. Anything else is refused with
:class:`UnsafePickleError` before it is called, and every value taken from the pickle (sizes,
strides, offsets, flags) is checked for type and range.

The container is checked the way torch's own reader sees it: a zip is a file that starts with
a zip member (torch's rule, not "has a zip directory somewhere"), members are found by the
folder of the archive's first member and matched without regard to case (as torch's miniz
reader matches them), so a name that two members share, encrypted members, compression other
than deflate and data before the archive are refused. A ``byteorder`` record other than the
machine's, a deflate-compressed storage or a lazy conj/neg bit means the stored bytes are not
the values: such entries get no byte location (no positioned reads; streaming operations load
them through torch, which swaps, inflates or applies the bit). A legacy (pre-1.6) file's
storage table is checked against the file before torch reads it, so no storage is left
uninitialised.

Values are loaded by ``torch.load(weights_only=True)`` (memory-mapped where every storage is
stored uncompressed) only after this pass has accepted the file, and what torch returns is
checked against what the pass saw: names, shapes, dtypes and parameter flags must agree.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from .._enums import Format, Role, RoleSource
from .._errors import FormatError, ParamscopeError, UnsafePickleError
from .._manifest import Entry, Location, Manifest, infer_role
from ._source import as_file, opened
from ._torch_pickle import PickleMachine, PickleSource, Storage, TensorStub

if TYPE_CHECKING:
    import torch

__all__ = ["LEGACY_MAGIC", "flatten", "load_torch", "read_torch_manifest", "scan_pickle"]

LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
LEGACY_PROTOCOL = 1001
ZIP_MAGIC = b"PK\x03\x04"  # torch.load's test for the zip format: the first four bytes
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights", "params")
MAX_PICKLE = 1 << 30


@dataclass(frozen=True)
class _Member:
    """A storage's zip member: where its bytes start and whether they are stored as is."""

    name: str
    offset: int
    size: int
    compressed: bool


@dataclass(frozen=True)
class _Scan:
    """What the restricted pass learnt about a checkpoint."""

    obj: Any
    storages: dict[str, Storage]
    prefix: str | None  # the zip folder ("archive/"), None for the legacy format
    members: dict[str, _Member]
    order: str  # the byteorder record ("little" when absent, as torch assumes)
    blocked: str | None = None  # why torch.load refuses the values (a record it needs)

    @property
    def swapped(self) -> bool:
        """The stored byte order is not this machine's: torch swaps the values on load."""
        return self.order != sys.byteorder


def scan_pickle(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Storage], str | None]:
    """Unpickle a torch checkpoint's object tree with inert stand-ins for tensors.

    Args:
        path: a torch zip (``torch.save`` default) or legacy pickle checkpoint.

    Returns:
        ``(object tree, storages by key, zip folder or None for the legacy format)``.

    Raises:
        UnsafePickleError: the pickle asks for any global, call or state change outside the
            rules of :mod:`paramscope.io._torch_pickle`.
        FormatError: the file is not a readable torch checkpoint.

    Example:
        >>> import os, tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> w = torch.ones(3, 4)
        >>> torch.save({"fc.weight": w, "lm_head.weight": w}, f"{d}/model.pt")
        >>> obj, storages, prefix = scan_pickle(f"{d}/model.pt")
        >>> obj["fc.weight"].shape, obj["lm_head.weight"].storage is obj["fc.weight"].storage
        ((3, 4), True)
        >>> storages, prefix
        ({'0': Storage(key='0', dtype=<DType.F32: 'F32'>, numel=12)}, 'model/')
        >>> class Evil:
        ...     def __reduce__(self) -> tuple[object, ...]:
        ...         return (os.system, ("echo owned",))
        >>> torch.save({"w": w, "x": Evil()}, f"{d}/evil.pt")
        >>> scan_pickle(f"{d}/evil.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.UnsafePickleError: ...: refused: the pickle asks for ....system, ...
    """
    s = _scan(os.fspath(path))
    return s.obj, s.storages, s.prefix


def _scan(spath: str) -> _Scan:
    try:
        with opened(spath) as src:
            f = as_file(src)
            size = src.size
            head = src.read_at(0, 512)
            if head[:4] == ZIP_MAGIC:
                return _scan_zip(f, size, spath)
            return _scan_legacy(f, size, head, spath)
    except ParamscopeError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,  # a zip feature Python lacks
        EOFError,
        ValueError,
        struct.error,
        OverflowError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise FormatError(
            spath, f"not a readable torch checkpoint: {type(exc).__name__}: {_line(exc)}"
        ) from None


def _line(exc: BaseException) -> str:
    """An exception's message as one short line (torch's run over several)."""
    text = " ".join(str(exc).split())
    return (text[:300] + " …") if len(text) > 300 else text or type(exc).__name__


# ------------------------------------------------------------------------------- zip format


def _scan_zip(f: IO[bytes], size: int, spath: str) -> _Scan:
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        by_name = _index_members(infos, spath)
        first = infos[0].filename
        if "/" not in first:
            raise FormatError(
                spath,
                f"torch zip: the first member {first!r} is in no folder (torch reads "
                "'<folder>/data.pkl' from the folder of the first member)",
            )
        prefix = first.split("/", 1)[0] + "/"
        if any(i.filename == f"{prefix}constants.pkl" for i in infos):
            raise UnsafePickleError(
                spath,
                "refused: a TorchScript archive (it holds constants.pkl), whose code only "
                "torch.jit.load runs; save the model's state_dict instead",
            )
        stray = next((i.filename for i in infos if not i.filename.startswith(prefix)), None)
        if stray is not None:
            raise FormatError(
                spath,
                f"torch zip: member {stray!r} is outside the folder {prefix!r} of the first "
                "member (torch's reader refuses such archives)",
            )
        pkl = by_name.get(f"{prefix}data.pkl".lower())
        if pkl is None:
            raise FormatError(
                spath,
                f"torch zip: expected '{prefix}data.pkl' (torch reads the folder of the first "
                f"member, {first!r})",
            )
        if pkl.file_size > MAX_PICKLE:
            raise FormatError(spath, f"torch zip: data.pkl is {pkl.file_size} bytes, over 1 GiB")
        m = PickleMachine(PickleSource(z.read(pkl)), spath, legacy=False)
        obj = m.load()
        m.finish()
        order = _byteorder(z, by_name, prefix, spath)
        members = {
            key: _storage_member(z, f, size, by_name, prefix, s, spath)
            for key, s in m.storages.items()
        }
        blocked = _records_blocking(z, by_name, prefix)
    return _Scan(obj, m.storages, prefix, members, order, blocked)


def _records_blocking(
    z: zipfile.ZipFile, by_name: dict[str, zipfile.ZipInfo], prefix: str
) -> str | None:
    """Why torch.load would refuse the archive's records, if it would: its version record
    (required, an integer format version from 1) or a storage alignment that is no number."""
    info = by_name.get(f"{prefix}.data/version") or by_name.get(f"{prefix}version")
    if info is None:
        return f"no '{prefix}version' record, which torch.load requires"
    raw = z.read(info) if info.file_size <= 32 else b"(long)"
    if not raw.strip().isdigit() or not 1 <= int(raw) < 1 << 63:
        return f"version record {raw!r:.40}: expected a format version (an integer from 1)"
    align = by_name.get(f"{prefix}.storage_alignment")
    if align is not None:
        raw = z.read(align) if align.file_size <= 32 else b"(long)"
        if not raw.strip().isdigit():
            return f"storage alignment record {raw!r:.40}: expected an integer"
    return None


def _index_members(infos: list[zipfile.ZipInfo], spath: str) -> dict[str, zipfile.ZipInfo]:
    """Members by lower-case name, refusing what torch's reader would see differently."""
    if not infos:
        raise FormatError(spath, "torch zip: the archive has no members")
    if min(i.header_offset for i in infos) != 0:
        raise FormatError(
            spath,
            "torch zip: the archive does not start with its first member (bytes before it, "
            "which torch's reader does not skip)",
        )
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        low = info.filename.lower()
        if low in by_name:
            other = by_name[low].filename
            raise FormatError(
                spath,
                f"torch zip: two members are named {other!r}"
                if other == info.filename
                else f"torch zip: members {other!r} and {info.filename!r} share a name "
                "(torch's reader matches names without regard to case)",
            )
        if info.flag_bits & 1:
            raise FormatError(spath, f"torch zip: member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(
                spath,
                f"torch zip: member {info.filename!r} uses compression method "
                f"{info.compress_type}; torch reads stored or deflate members only",
            )
        by_name[low] = info
    return by_name


def _byteorder(
    z: zipfile.ZipFile, by_name: dict[str, zipfile.ZipInfo], prefix: str, spath: str
) -> str:
    """The archive's ``byteorder`` record: ``"little"`` (also when absent, as torch assumes)."""
    info = by_name.get(f"{prefix}byteorder".lower())
    if info is None:
        return "little"
    value = z.read(info) if info.file_size <= 16 else b"(long)"
    if value not in (b"little", b"big"):
        raise FormatError(
            spath, f"torch zip: byteorder record {value!r:.40}: expected 'little' or 'big'"
        )
    return value.decode()


def _storage_member(
    z: zipfile.ZipFile,
    f: IO[bytes],
    size: int,
    by_name: dict[str, zipfile.ZipInfo],
    prefix: str,
    s: Storage,
    spath: str,
) -> _Member:
    name = f"{prefix}data/{s.key}"
    info = by_name.get(name.lower())
    if info is None:
        raise FormatError(spath, f"storage {s.key!r}: member {name!r} is not in the archive")
    need = s.dtype.nbytes(s.numel)
    if info.file_size != need:  # torch.load checks the same (unless it memory-maps)
        raise FormatError(
            spath, f"storage {s.key!r}: expected {need} bytes, the archive has {info.file_size}"
        )
    compressed = info.compress_type != zipfile.ZIP_STORED
    start = _member_offset(f, info, spath)
    if not compressed and (info.compress_size != info.file_size or start + need > size):
        raise FormatError(
            spath,
            f"storage {s.key!r}: member {info.filename!r} claims {info.file_size} bytes at "
            f"offset {start}; the file holds {max(size - start, 0)} there",
        )
    return _Member(info.filename, start, info.file_size, compressed)


def _member_offset(f: IO[bytes], info: zipfile.ZipInfo, spath: str) -> int:
    """The first data byte of a member, from its local header (as torch's reader finds it)."""
    f.seek(info.header_offset)
    head = f.read(30)
    if len(head) < 30 or head[:4] != ZIP_MAGIC:
        raise FormatError(spath, f"torch zip: member {info.filename!r} has no local header")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    raw = f.read(name_len)
    local = raw.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
    if local != info.orig_filename:
        raise FormatError(
            spath,
            f"torch zip: member {info.filename!r} is named {local!r} in its local header",
        )
    return info.header_offset + 30 + name_len + extra_len


# ---------------------------------------------------------------------------- legacy format


def _scan_legacy(f: IO[bytes], size: int, head: bytes, spath: str) -> _Scan:
    if _is_tar(head):
        raise FormatError(
            spath,
            "a torch checkpoint in the pre-0.4 .tar layout, which torch.load(weights_only=True) "
            "refuses; re-save it with a current torch",
        )
    src = PickleSource(f, size)
    m = PickleMachine(src, spath, legacy=True)
    magic = m.load(persistent=False)
    if type(magic) is not int or magic != int.from_bytes(LEGACY_MAGIC[4:14], "little"):
        raise FormatError(spath, "pickle is not a torch checkpoint (no torch magic number)")
    protocol = m.load(persistent=False)
    if type(protocol) is not int or protocol != LEGACY_PROTOCOL:
        raise FormatError(
            spath, f"legacy torch checkpoint of protocol {protocol!r:.30}: expected 1001"
        )
    m.load(persistent=False)  # sys info: torch does not use it
    obj = m.load()
    keys = m.load(persistent=False)
    m.finish()
    _check_legacy_data(f, src.pos, size, keys, m.storages, spath)
    return _Scan(obj, m.storages, None, {}, sys.byteorder)


def _is_tar(head: bytes) -> bool:
    """Whether torch.load would take the file for the old tar layout (it tries that first)."""
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _check_legacy_data(
    f: IO[bytes], pos: int, size: int, keys: Any, storages: dict[str, Storage], spath: str
) -> None:
    """Each storage's data follows the pickles, in key order: ``int64 numel`` then its bytes."""
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise FormatError(spath, "legacy torch checkpoint: the storage key list is not names")
    listed = set(keys)
    if len(listed) != len(keys):
        raise FormatError(spath, "legacy torch checkpoint: a storage key is listed twice")
    for key in storages:
        if key not in listed:
            raise FormatError(
                spath,
                f"storage {key!r} has no data in the file (torch would hand out uninitialised "
                "memory)",
            )
    for key in keys:
        s = storages.get(key)
        if s is None:
            raise FormatError(spath, f"storage key {key!r} names no storage of the checkpoint")
        f.seek(pos)
        raw = f.read(8)
        if len(raw) < 8:
            raise FormatError(spath, f"storage {key!r}: the file ends before its size field")
        numel = int.from_bytes(raw, "little", signed=True)
        if numel != s.numel:
            raise FormatError(
                spath, f"storage {key!r}: the file says {numel} elements, the pickle {s.numel}"
            )
        need = s.dtype.nbytes(numel)
        if pos + 8 + need > size:
            raise FormatError(
                spath,
                f"storage {key!r}: expected {need} bytes at offset {pos + 8}, the file ends "
                f"after {max(size - pos - 8, 0)}",
            )
        pos += 8 + need


# ---------------------------------------------------------------------------- object tree


def _walk(obj: Any, prefix: str, out: list[tuple[str, Any]], skipped: list[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):  # a tensor or tuple key has no stable name
                skipped.append(f"{prefix}[{type(k).__name__} key]")
                continue
            _walk(v, f"{prefix}.{k}" if prefix else str(k), out, skipped)
    elif isinstance(obj, (list, tuple)) and any(
        isinstance(x, (dict, list, tuple, TensorStub)) or _is_tensor(x) for x in obj
    ):
        for i, v in enumerate(obj):
            _walk(v, f"{prefix}.{i}" if prefix else str(i), out, skipped)
    elif isinstance(obj, TensorStub) or _is_tensor(obj):
        out.append((prefix, obj))
    else:
        skipped.append(prefix)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "untyped_storage")


def flatten(obj: Any) -> tuple[list[tuple[str, Any]], list[str]]:
    """Tensors of a checkpoint's object tree with dotted names, and notes.

    A top-level dict holding no tensors itself but one of the usual wrapper keys
    (``state_dict``, ``model``, ...) is unwrapped. Dict keys other than strings and integers
    are skipped (noted), the same way for stand-ins and for torch's tensors.

    Args:
        obj: the unpickled tree (stand-ins or real tensors).

    Returns:
        ``([(name, tensor), ...], notes)``.

    Example:
        >>> flatten({"epoch": 3})
        ([], ["skipped 1 non-tensor items ('epoch')"])
    """
    notes: list[str] = []
    if isinstance(obj, dict) and not any(
        isinstance(v, TensorStub) or _is_tensor(v) for v in obj.values()
    ):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                notes.append(f"tensors read from the checkpoint's {key!r} entry")
                obj = obj[key]
                break
    out: list[tuple[str, Any]] = []
    skipped: list[str] = []
    _walk(obj, "", out, skipped)
    if skipped:
        shown = ", ".join(repr(s) for s in skipped[:3])
        notes.append(
            f"skipped {len(skipped)} non-tensor items ({shown}{', …' if len(skipped) > 3 else ''})"
        )
    return out, notes


def _named(obj: Any, spath: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """:func:`flatten`, refusing a bare tensor and two tensors that flatten to one name."""
    try:
        items, notes = flatten(obj)
    except RecursionError:
        raise FormatError(spath, "the checkpoint's object tree is nested too deeply") from None
    seen: set[str] = set()
    for name, _ in items:
        if not name:
            raise FormatError(spath, "the checkpoint is a bare tensor, not a mapping of names")
        if name in seen:
            raise FormatError(
                spath, f"two tensors flatten to the name {name!r} (keys like 'a.b' and a/b)"
            )
        seen.add(name)
    return items, notes


def _contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expect = 1
    for d, s in zip(reversed(shape), reversed(stride), strict=True):
        if d != 1 and s != expect:
            return False
        expect *= d
    return True


def read_torch_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of a torch checkpoint without importing torch or reading tensor bytes.

    Args:
        path: a ``.pt`` / ``.bin`` / ``.pth`` file (zip or legacy format).

    Returns:
        A :class:`Manifest` with inferred roles (``Parameter`` objects are params). Entries
        whose stored bytes are their values (a stored, native-order zip member, a contiguous
        view, no lazy conj/neg bit) carry a byte :class:`Location`.

    Raises:
        UnsafePickleError: the pickle would need code beyond tensors and containers.
        FormatError: not a readable torch checkpoint.

    Example:
        >>> import tempfile, torch
        >>> path = f"{tempfile.mkdtemp()}/pytorch_model.bin"
        >>> w = torch.ones(3, 4)
        >>> torch.save({"fc.weight": w, "fc.bias": torch.zeros(3), "lm_head.weight": w}, path)
        >>> m = read_torch_manifest(path)
        >>> m["lm_head.weight"].shape, m.ties(), m.roles.value
        ((3, 4), [['fc.weight', 'lm_head.weight']], 'inferred')
    """
    spath = os.fspath(path)
    scan = _scan(spath)
    items, notes = _named(scan.obj, spath)
    entries: list[Entry] = []
    seen: dict[tuple[Any, ...], str] = {}
    unplaced: dict[str, list[str]] = {}
    for name, t in items:
        st = t.storage
        key = (st.key, t.offset, t.shape, t.stride, t.lazy)
        tie = seen.get(key)
        loc = None
        member = scan.members.get(st.key)
        why = _why_unplaced(t, member, scan)
        if why:
            unplaced.setdefault(why, []).append(name)
        elif member is not None and _contiguous(t.shape, t.stride):  # bytes are one run
            itemsize = st.dtype.bits // 8 or 1
            nbytes = st.dtype.nbytes(_numel(t.shape))
            loc = Location(spath, member.offset + t.offset * itemsize, nbytes, member.name)
        role = Role.PARAM if t.is_param else infer_role(name, st.dtype, t.shape)
        trainable = t.requires_grad if t.is_param else role is Role.PARAM
        entries.append(
            Entry(
                name,
                t.shape,
                st.dtype,
                role=role,
                trainable=trainable,
                tie=tie,
                location=None if tie else loc,
            )
        )
        if tie is None:
            seen[key] = name
    for why, names in unplaced.items():
        shown = ", ".join(map(repr, names[:3])) + (", …" if len(names) > 3 else "")
        notes.append(f"{len(names)} entries ({shown}) {why}")
    return Manifest(
        entries, format=Format.TORCH, source=spath, roles=RoleSource.INFERRED, notes=notes
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _why_unplaced(t: TensorStub, member: _Member | None, scan: _Scan) -> str | None:
    """Why an entry's stored bytes are not its values (so it gets no byte location)."""
    if member is None:
        return None  # legacy format: no locations at all
    if scan.blocked:
        return f"have no readable values ({scan.blocked})"
    if member.compressed:
        return "are stored deflate-compressed: read through torch, no positioned reads"
    if scan.swapped and t.storage.dtype.bits > 8:
        return (
            f"are stored {scan.order}-endian (the archive's byteorder record) on a "
            f"{sys.byteorder}-endian machine: torch swaps them on load, no positioned reads"
        )
    if t.lazy:
        return f"carry a lazy {t.lazy} bit torch applies on load: no positioned reads"
    return None


def load_torch(path: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of a torch checkpoint, loaded with ``weights_only=True``.

    The file first passes the restricted scan; the zip format is memory-mapped unless a
    storage is compressed. What torch returns must agree with the scan (names, shapes,
    dtypes, parameters), and lazy conj / neg bits are resolved, so the values are what the
    manifest describes.

    Args:
        path: the checkpoint.

    Yields:
        Names and tensors, ties as the same tensor object.

    Raises:
        UnsafePickleError: refused by the scan or by torch's own weights-only unpickler.
        FormatError: torch cannot read the file, or reads it otherwise than the scan.

    Example:
        >>> import tempfile, torch
        >>> path = f"{tempfile.mkdtemp()}/model.pt"
        >>> w = torch.ones(3, 4)
        >>> torch.save({"fc.weight": w, "fc.bias": torch.zeros(3), "lm_head.weight": w}, path)
        >>> pairs = dict(load_torch(path))
        >>> pairs["fc.weight"].shape, pairs["lm_head.weight"] is pairs["fc.weight"]
        (torch.Size([3, 4]), True)
    """
    import torch

    spath = os.fspath(path)
    scan = _scan(spath)
    expected, _ = _named(scan.obj, spath)
    if scan.blocked:
        raise FormatError(
            spath,
            f"torch zip: {scan.blocked}; torch.load cannot read the values (the manifest is "
            "readable; re-save the file with torch.save)",
        )
    mmap = scan.prefix is not None and not any(m.compressed for m in scan.members.values())
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(spath, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(
            spath, f"refused by torch's weights-only loader: {_line(exc)}"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, ValueError, EOFError, ... on bad input
        raise FormatError(
            spath, f"torch.load cannot read it: {type(exc).__name__}: {_line(exc)}"
        ) from None
    items, _ = _named(obj, spath)
    _agree(expected, items, spath)
    seen: dict[tuple[Any, ...], torch.Tensor] = {}
    for name, t in items:
        t = t.detach()
        key = (
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            t.stride(),
            t.dtype,
            t.is_conj(),
            t.is_neg(),
        )
        if t.numel() and key in seen:
            yield name, seen[key]
            continue
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        seen[key] = t
        yield name, t


def _agree(expected: list[tuple[str, Any]], got: list[tuple[str, Any]], spath: str) -> None:
    """torch's tensors are what the scan described, entry by entry."""
    import torch

    names, theirs_names = [n for n, _ in expected], [n for n, _ in got]
    if names != theirs_names:
        i = next(
            (i for i, (a, b) in enumerate(zip(names, theirs_names, strict=False)) if a != b), None
        )
        at = min(len(names), len(theirs_names)) if i is None else i
        raise FormatError(
            spath,
            f"torch.load and paramscope's scan find different entries (entry {at}: "
            f"{names[at : at + 1]} vs {theirs_names[at : at + 1]})",
        )
    for (name, stub), (_, t) in zip(expected, got, strict=True):
        mine = (stub.shape, stub.storage.dtype.to_torch(), stub.is_param)
        theirs = (tuple(t.shape), t.dtype, isinstance(t, torch.nn.Parameter))
        if mine != theirs:
            raise FormatError(
                spath,
                f"entry {name!r}: the scan reads {mine}, torch.load {theirs}: refused (the file "
                "means different things to different readers)",
            )
