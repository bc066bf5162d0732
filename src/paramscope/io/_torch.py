"""torch ``.pt`` / ``.bin`` checkpoints, read without running any code from the file.

Manifests come from paramscope's own restricted unpickler, which needs no torch: it admits
only the globals a plain tensor checkpoint uses (tensor and parameter rebuilders, typed
storages, ``OrderedDict``, a few builtin containers) and builds inert stand-ins for them,
so shapes, dtypes and ties are known without reading tensor bytes. Any other global (``os``,
``builtins.eval``, a model class, ...) is refused with :class:`UnsafePickleError` before
anything is called. Values are loaded by ``torch.load(weights_only=True)`` (memory-mapped for
the zip format), and only after the restricted pass has accepted the file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._enums import Format, Role, RoleSource
from .._errors import FormatError, UnsafePickleError
from .._manifest import Entry, Location, Manifest, infer_role

if TYPE_CHECKING:
    import torch

__all__ = ["LEGACY_MAGIC", "load_torch", "read_torch_manifest", "scan_pickle"]

LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights", "params")

_STORAGE_DTYPES = {
    "FloatStorage": DType.F32,
    "DoubleStorage": DType.F64,
    "HalfStorage": DType.F16,
    "BFloat16Storage": DType.BF16,
    "LongStorage": DType.I64,
    "IntStorage": DType.I32,
    "ShortStorage": DType.I16,
    "CharStorage": DType.I8,
    "ByteStorage": DType.U8,
    "BoolStorage": DType.BOOL,
    "ComplexFloatStorage": DType.C64,
    "UntypedStorage": DType.U8,
    "Float8_e4m3fnStorage": DType.F8_E4M3,
    "Float8_e5m2Storage": DType.F8_E5M2,
    "Float8_e4m3fnuzStorage": DType.F8_E4M3FNUZ,
    "Float8_e5m2fnuzStorage": DType.F8_E5M2FNUZ,
    "Float8_e8m0fnuStorage": DType.F8_E8M0,
    "UInt16Storage": DType.U16,
    "UInt32Storage": DType.U32,
    "UInt64Storage": DType.U64,
}


@dataclass(eq=False)
class _StorageType:
    dtype: DType


@dataclass(eq=False)
class _Storage:
    key: str
    dtype: DType
    numel: int


@dataclass(eq=False)
class _TensorStub:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool = False
    is_param: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    def __setstate__(self, state: Any) -> None:  # BUILD on a tensor: ignore its python state
        return None


class _ParamType:
    """Stand-in for ``torch.nn.Parameter`` as a type argument."""


def _rebuild_tensor_v2(
    storage: _Storage,
    offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorStub:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    shape = tuple(int(s) for s in size)
    strides = tuple(int(s) for s in stride)
    if len(shape) != len(strides) or min((int(offset), *shape, *strides)) < 0:
        raise pickle.UnpicklingError(
            f"tensor of storage {storage.key!r}: bad size {shape}, stride {strides} or "
            f"offset {offset}"
        )
    return _TensorStub(storage, int(offset), shape, strides, bool(requires_grad))


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any) -> _TensorStub:
    return _rebuild_tensor_v2(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any, *state: Any) -> Any:
    if isinstance(data, _TensorStub):
        data.requires_grad = bool(requires_grad)
        data.is_param = True
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    out = func(*args)
    if isinstance(out, _TensorStub) and new_type is _ParamType:
        out.is_param = True
    return out


def _inert(*args: Any) -> str:
    return "<torch object>"


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): _ParamType,
    ("torch", "Size"): tuple,
    ("torch", "device"): _inert,
    ("torch.serialization", "_get_layout"): _inert,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "tuple"): tuple,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}
for _name, _dt in _STORAGE_DTYPES.items():
    _ALLOWED[("torch", _name)] = _StorageType(_dt)
for _dt_name in (
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int64",
    "int32",
    "int8",
    "uint8",
    "bool",
    "strided",
):
    _ALLOWED[("torch", _dt_name)] = _inert(_dt_name)


class _Restricted(pickle.Unpickler):
    def __init__(self, f: Any, path: str) -> None:
        super().__init__(f)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                self.path,
                f"refused: the pickle asks for {module}.{name}, which is not part of a plain "
                "tensor checkpoint (paramscope never runs code from a file; re-save the "
                "weights as a state_dict or safetensors)",
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(self.path, f"refused: unknown persistent id {pid!r:.80}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(stype, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise UnsafePickleError(
                self.path, f"refused: storage {key!r} has an unknown type or size"
            )
        if key not in self.storages:
            self.storages[key] = _Storage(key, stype.dtype, numel)
        return self.storages[key]


def _zip_pickle(z: zipfile.ZipFile, path: str) -> tuple[str, bytes]:
    pkls = [n for n in z.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise FormatError(path, f"torch zip: expected one '<archive>/data.pkl', found {len(pkls)}")
    prefix = pkls[0][: -len("data.pkl")]
    info = z.getinfo(pkls[0])
    if info.file_size > 1 << 30:
        raise FormatError(path, f"torch zip: data.pkl is {info.file_size} bytes, over 1 GiB")
    return prefix, z.read(pkls[0])


def scan_pickle(path: str | os.PathLike[str]) -> tuple[Any, dict[str, _Storage], str | None]:
    """Unpickle a torch checkpoint's object tree with inert stand-ins for tensors.

    Args:
        path: a torch zip (``torch.save`` default) or legacy pickle checkpoint.

    Returns:
        ``(object tree, storages by key, zip prefix or None for the legacy format)``.

    Raises:
        UnsafePickleError: the pickle asks for any global outside the allowlist.
        FormatError: the file is not a readable torch checkpoint.
    """
    spath = os.fspath(path)
    try:
        if zipfile.is_zipfile(spath):
            with zipfile.ZipFile(spath) as z:
                prefix, raw = _zip_pickle(z, spath)
                u = _Restricted(io.BytesIO(raw), spath)
                obj = u.load()
                _check_members(z, prefix, u.storages, spath)
                return obj, u.storages, prefix
        with open(spath, "rb") as f:
            u = _Restricted(f, spath)
            magic = u.load()
            if magic != int.from_bytes(LEGACY_MAGIC[4:14], "little"):
                raise FormatError(spath, "pickle is not a torch checkpoint (no torch magic number)")
            u.load()  # protocol version
            u.load()  # sys info
            obj = u.load()
            return obj, u.storages, None
    except (UnsafePickleError, FormatError):
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        zipfile.BadZipFile,
        RecursionError,
        struct.error,
        MemoryError,  # a counted opcode claiming more bytes than any file holds: allocated first
    ) as exc:
        raise FormatError(
            spath, f"not a readable torch checkpoint: {str(exc) or type(exc).__name__}"
        ) from None


def _check_members(
    z: zipfile.ZipFile, prefix: str, storages: dict[str, _Storage], path: str
) -> None:
    names = set(z.namelist())
    for key, s in storages.items():
        member = f"{prefix}data/{key}"
        if member not in names:
            raise FormatError(path, f"storage {key!r}: member {member!r} is not in the archive")
        have = z.getinfo(member).file_size
        need = s.dtype.nbytes(s.numel)
        if have < need:
            raise FormatError(
                path, f"storage {key!r}: expected {need} bytes, the archive has {have}"
            )


def _walk(obj: Any, prefix: str, out: list[tuple[str, Any]], skipped: list[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk(v, f"{prefix}.{k}" if prefix else str(k), out, skipped)
    elif isinstance(obj, (list, tuple)) and any(
        isinstance(x, (dict, list, tuple, _TensorStub)) or _is_tensor(x) for x in obj
    ):
        for i, v in enumerate(obj):
            _walk(v, f"{prefix}.{i}" if prefix else str(i), out, skipped)
    elif isinstance(obj, _TensorStub) or _is_tensor(obj):
        out.append((prefix, obj))
    else:
        skipped.append(prefix)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "untyped_storage")


def flatten(obj: Any) -> tuple[list[tuple[str, Any]], list[str]]:
    """Tensors of a checkpoint's object tree with dotted names, and notes.

    A top-level dict holding no tensors itself but one of the usual wrapper keys
    (``state_dict``, ``model``, ...) is unwrapped.

    Args:
        obj: the unpickled tree (stand-ins or real tensors).

    Returns:
        ``([(name, tensor), ...], notes)``.
    """
    notes: list[str] = []
    if isinstance(obj, dict) and not any(
        isinstance(v, _TensorStub) or _is_tensor(v) for v in obj.values()
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


def _member_offset(f: Any, info: zipfile.ZipInfo) -> int:
    f.seek(info.header_offset)
    head = f.read(30)
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


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
        A :class:`Manifest` with inferred roles (``Parameter`` objects are params).

    Raises:
        UnsafePickleError: the pickle would need code beyond tensors and containers.
        FormatError: not a readable torch checkpoint.
    """
    spath = os.fspath(path)
    obj, storages, prefix = scan_pickle(spath)
    try:
        items, notes = flatten(obj)
    except RecursionError:
        raise FormatError(spath, "the checkpoint's object tree is nested too deeply") from None
    offsets: dict[str, tuple[int, int, str]] = {}
    if prefix is not None:
        with zipfile.ZipFile(spath) as z, open(spath, "rb") as f:
            for key in storages:
                info = z.getinfo(f"{prefix}data/{key}")
                offsets[key] = (_member_offset(f, info), info.file_size, info.filename)
    entries: list[Entry] = []
    seen: dict[tuple[Any, ...], str] = {}
    for name, t in items:
        if not name:
            raise FormatError(spath, "the checkpoint is a bare tensor, not a mapping of names")
        st = t.storage
        numel = 1
        for d in t.shape:
            numel *= d
        span = t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride, strict=True)) + 1
        if numel and span > st.numel:
            raise FormatError(
                spath,
                f"entry {name!r}: view reaches element {span} of a {st.numel}-element storage",
            )
        key = (st.key, t.offset, t.shape, t.stride)
        tie = seen.get(key)
        loc = None
        if st.key in offsets and _contiguous(t.shape, t.stride):  # bytes are one run
            base, _size, member = offsets[st.key]
            itemsize = st.dtype.bits // 8 or 1
            loc = Location(spath, base + t.offset * itemsize, st.dtype.nbytes(numel), member)
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
    return Manifest(
        entries, format=Format.TORCH, source=spath, roles=RoleSource.INFERRED, notes=notes
    )


def load_torch(path: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of a torch checkpoint, loaded with ``weights_only=True``.

    The file first passes the restricted scan; the zip format is memory-mapped.

    Args:
        path: the checkpoint.

    Yields:
        Names and tensors, ties as the same tensor object.

    Raises:
        UnsafePickleError: refused by the scan or by torch's own weights-only unpickler.
    """
    import torch

    spath = os.fspath(path)
    _, _, prefix = scan_pickle(spath)
    try:
        obj = torch.load(spath, map_location="cpu", weights_only=True, mmap=prefix is not None)
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(spath, f"refused by torch's weights-only loader: {exc}") from None
    items, _ = flatten(obj)
    seen: dict[tuple[Any, ...], torch.Tensor] = {}
    for name, t in items:
        t = t.detach()
        key = (
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            t.stride(),
            t.dtype,
        )
        if t.numel() and key in seen:
            yield name, seen[key]
        else:
            seen[key] = t
            yield name, t
