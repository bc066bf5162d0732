"""The globals a torch checkpoint's pickle may name, as frozen stand-ins (no torch).

:data:`ALLOWED` maps each admitted ``(module, name)`` to a stand-in: a typed storage names a
dtype, a marker stands for a type (``nn.Parameter``, a dtype), and a callable
(``_rebuild_tensor_v2``, ``OrderedDict``, ``torch.Size`` ...) checks every argument's type and
range before it builds a fresh, frozen result (:class:`TensorStub`, :class:`Storage`) or a
fresh container. Everything here is immutable (frozen, slotted dataclasses in a read-only
mapping), so no opcode of one file can change how a later file reads. The pickle machine that
uses them is :mod:`paramscope.io._torch_pickle`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from .._dtypes import DType
from .._errors import UnsafePickleError

__all__ = [
    "ALLOWED",
    "LIMIT",
    "TENSOR_ATTRS",
    "Bad",
    "CallableGlobal",
    "Loader",
    "Storage",
    "StorageType",
    "TensorStub",
    "describe",
]

LIMIT = 2**63  # sizes, strides, offsets and element counts stay below this (int64)
LAZY_BITS = ("conj", "neg")  # tensor metadata torch applies on load (values != stored bytes)

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
_DTYPE_NAMES = (
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
)
# Attributes a tensor's python state must not set: torch.Tensor / Parameter data descriptors
# (``data``, ``requires_grad``, ``__class__`` ...) whose setting changes values, shape, dtype
# or role. tests/test_torch_hostile.py checks this covers every data descriptor torch has.
_ATTR_WORDS = (
    "H T __class__ __cuda_array_interface__ __dict__ __weakref__ _backward_hooks _base _cdata "
    "_grad _grad_fn _has_symbolic_sizes_strides _post_accumulate_grad_hooks _python_dispatch "
    "_version data device dtype grad grad_dtype grad_fn imag is_cpu is_cuda is_ipu is_leaf "
    "is_maia is_meta is_mkldnn is_mps is_mtia is_nested is_quantized is_sparse is_sparse_csr "
    "is_vulkan is_xla is_xpu itemsize layout mH mT name names nbytes ndim output_nr real "
    "requires_grad retains_grad shape volatile"
)
TENSOR_ATTRS = frozenset(_ATTR_WORDS.split(" "))


class Bad(Exception):
    """A rule of the format is broken (becomes a :class:`FormatError` naming the byte)."""


class Loader(Protocol):
    """What a stand-in's call needs from the pickle machine: where to register hooks."""

    hooks: list[Any]


# ------------------------------------------------------------------------------ stand-ins


@dataclass(frozen=True, slots=True)
class StorageType:
    """Stand-in for ``torch.FloatStorage`` and its kin: names a dtype, cannot be called.

    Attributes:
        name: the torch class name.
        dtype: its element type.
    """

    name: str
    dtype: DType


@dataclass(frozen=True, slots=True, eq=False)
class Storage:
    """One storage of the checkpoint, as its persistent id declares it.

    Attributes:
        key: the storage key (its member name in a zip, its key in a legacy file).
        dtype: element type.
        numel: element count.
    """

    key: str
    dtype: DType
    numel: int


@dataclass(frozen=True, slots=True, eq=False)
class TensorStub:
    """Stand-in for a tensor: where its elements lie in which storage.

    Attributes:
        storage: the storage.
        offset: first element, in elements.
        shape: dimensions.
        stride: strides, in elements.
        requires_grad: its ``requires_grad`` flag.
        is_param: rebuilt as an ``nn.Parameter``.
        lazy: a conj / neg bit torch applies on load (its values are not its stored bytes).
    """

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool = False
    is_param: bool = False
    lazy: str | None = None


@dataclass(frozen=True, slots=True)
class _Global:
    """A global the pickle may name; frozen, so no opcode can change it for a later load."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True, slots=True)
class CallableGlobal(_Global):
    """A global the pickle may call (``REDUCE``); ``call`` checks and builds a fresh result."""

    call: Callable[[Loader, tuple[Any, ...]], Any]
    newobj: bool = False  # also callable through NEWOBJ (``complex``)


@dataclass(frozen=True, slots=True)
class _Marker(_Global):
    """A global used only as a value (a dtype, ``nn.Parameter`` as a type argument)."""


@dataclass(frozen=True, slots=True)
class _Inert:
    """A fresh, frozen value torch would build (a ``torch.device``, a layout): kept as text."""

    what: str
    args: tuple[Any, ...]


def describe(x: Any) -> str:
    """A short description of a pickled object for messages.

    Args:
        x: anything on the pickle machine's stack.

    Returns:
        ``"torch.FloatStorage"``, ``"a tensor"``, ``"a dict"`` ...

    Example:
        >>> describe({})
        'a dict'
    """
    if isinstance(x, _Global):
        return str(x)
    if isinstance(x, StorageType):
        return f"torch.{x.name}"
    if isinstance(x, TensorStub):
        return "a tensor"
    if isinstance(x, Storage):
        return f"storage {x.key!r}"
    return f"a {type(x).__name__}"


# --------------------------------------------------------------------- argument checks


def _arity(what: str, args: tuple[Any, ...], *counts: int) -> None:
    if len(args) not in counts:
        want = " or ".join(map(str, counts))
        raise Bad(f"{what} takes {want} arguments, the pickle gives {len(args)}")


def _index(x: Any, what: str) -> int:
    """An int in [0, 2**63): no bool, float, inf or huge value where torch wants an int64."""
    if type(x) is not int:
        raise Bad(f"{what}: expected an integer, found {describe(x)} ({x!r:.40})")
    if not 0 <= x < LIMIT:
        raise Bad(f"{what}: expected 0 <= value < 2**63, found {x}")
    return x


def _dims(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)):
        raise Bad(f"{what}: expected a tuple of integers, found {describe(x)}")
    if len(x) > 64:
        raise Bad(f"{what}: {len(x)} dimensions, torch allows at most 64")
    return tuple(_index(d, what) for d in x)


def _flag(x: Any, what: str) -> bool:
    if type(x) is not bool:
        raise Bad(f"{what}: expected True or False, found {describe(x)}")
    return x


def _hooks(m: Loader, x: Any) -> None:
    """``backward_hooks``: None or an empty dict (checked again when the pickle ends)."""
    if x is None:
        return
    if type(x) not in (dict, OrderedDict):
        raise Bad(f"backward_hooks: expected an empty OrderedDict, found {describe(x)}")
    m.hooks.append(x)


def _check_state(state: Any, what: str) -> None:
    """A tensor's python attributes: plain values under names that touch no tensor field."""
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for part in parts:
        if part is None:
            continue
        if type(part) is not dict:
            raise Bad(f"{what}: state must be a dict of attributes, found {describe(part)}")
        for k, v in part.items():
            if type(k) is not str or not k.isidentifier() or k.startswith("__"):
                raise Bad(f"{what}: attribute name {k!r:.60} is not allowed")
            if k in TENSOR_ATTRS:
                raise UnsafePickleError(
                    "", f"refused: the pickle sets the tensor field {k!r} through its state"
                )
            if v is not None and type(v) not in (bool, int, float, str, bytes):
                raise Bad(f"{what}: attribute {k!r} holds {describe(v)}, not a plain value")


# --------------------------------------------------------------------------- callables


def _rebuild_tensor_v2(m: Loader, args: tuple[Any, ...]) -> TensorStub:
    _arity("_rebuild_tensor_v2", args, 6, 7)
    stub = _rebuild_tensor(m, args[:4])
    requires_grad = _flag(args[4], "requires_grad")
    _hooks(m, args[5])
    lazy = None
    metadata = args[6] if len(args) == 7 else None
    if metadata is not None:
        if type(metadata) is not dict or not set(metadata) <= set(LAZY_BITS):
            raise Bad(
                f"tensor metadata: expected a dict of {', '.join(LAZY_BITS)} flags, "
                f"found {metadata!r:.80}"
            )
        bits = [k for k in LAZY_BITS if k in metadata and _flag(metadata[k], k)]
        dtype = stub.storage.dtype
        complex_ = dtype.value.startswith("C")
        floats = (DType.F16, DType.BF16, DType.F32, DType.F64)
        if ("conj" in bits and not complex_) or (
            "neg" in bits and not (complex_ or dtype in floats)
        ):
            raise Bad(f"a {'/'.join(bits)} bit on a {dtype.value} tensor (torch cannot apply it)")
        lazy = ",".join(bits) or None
    _grad_ok(stub.storage.dtype, requires_grad)
    return dataclasses.replace(stub, requires_grad=requires_grad, lazy=lazy)


def _grad_ok(dtype: DType, requires_grad: bool) -> None:
    if requires_grad and not dtype.is_float:
        raise Bad(f"a {dtype.value} tensor with requires_grad=True (torch allows it on floats)")


def _rebuild_tensor(m: Loader, args: tuple[Any, ...]) -> TensorStub:
    _arity("_rebuild_tensor", args, 4)
    storage, offset, size, stride = args
    if not isinstance(storage, Storage):
        raise Bad(f"tensor without a storage: found {describe(storage)}")
    where = f"tensor of storage {storage.key!r}"
    try:
        shape = _dims(size, f"{where}: size")
        strides = _dims(stride, f"{where}: stride")
        start = _index(offset, f"{where}: storage offset")
    except Bad as exc:
        raise Bad(
            f"{exc} (size {size!r:.60}, stride {stride!r:.60}, offset {offset!r:.30})"
        ) from None
    if len(shape) != len(strides):
        raise Bad(f"{where}: bad size {shape}, stride {strides}: not one stride per dimension")
    numel = math.prod(shape)
    if numel >= LIMIT:
        raise Bad(f"{where}: size {shape} holds {numel} elements, over 2**63")
    if numel:
        span = start + sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 1
        if span > storage.numel:
            raise Bad(
                f"{where}: the view (size {shape}, stride {strides}, offset {start}) reaches "
                f"element {span} of a {storage.numel}-element storage"
            )
    return TensorStub(storage, start, shape, strides)


def _as_param(data: Any, requires_grad: Any) -> TensorStub:
    if not isinstance(data, TensorStub):
        raise Bad(f"a parameter of {describe(data)}, not of a tensor")
    flag = _flag(requires_grad, "requires_grad")
    _grad_ok(data.storage.dtype, flag)
    return dataclasses.replace(data, requires_grad=flag, is_param=True)  # a new object


def _rebuild_parameter(m: Loader, args: tuple[Any, ...]) -> TensorStub:
    _arity("_rebuild_parameter", args, 3)
    _hooks(m, args[2])
    return _as_param(args[0], args[1])


def _rebuild_parameter_with_state(m: Loader, args: tuple[Any, ...]) -> TensorStub:
    _arity("_rebuild_parameter_with_state", args, 4)
    _hooks(m, args[2])
    _check_state(args[3], "parameter")
    return _as_param(args[0], args[1])


def _rebuild_from_type_v2(m: Loader, args: tuple[Any, ...]) -> TensorStub:
    _arity("_rebuild_from_type_v2", args, 4)
    func, new_type, fargs, state = args
    if func not in (ALLOWED[("torch._utils", "_rebuild_tensor_v2")], _REBUILD_TENSOR):
        raise UnsafePickleError(
            "", f"refused: _rebuild_from_type_v2 asked to call {describe(func)}"
        )
    if new_type not in (_PARAMETER, _TENSOR):
        raise UnsafePickleError(
            "", f"refused: _rebuild_from_type_v2 asked for the type {describe(new_type)}"
        )
    if type(fargs) is not tuple:
        raise Bad(f"_rebuild_from_type_v2: arguments must be a tuple, found {describe(fargs)}")
    _check_state(state, "tensor")
    out = func.call(m, fargs)
    return dataclasses.replace(out, is_param=True) if new_type is _PARAMETER else out


def _ordered_dict(m: Loader, args: tuple[Any, ...]) -> OrderedDict[Any, Any]:
    _arity("OrderedDict", args, 0, 1)
    if args and type(args[0]) not in (dict, OrderedDict, list, tuple):
        raise Bad(f"OrderedDict of {describe(args[0])}")
    return OrderedDict(*args)


def _set(m: Loader, args: tuple[Any, ...]) -> set[Any]:
    _arity("set", args, 0, 1)
    if args and type(args[0]) not in (list, tuple, set, frozenset):
        raise Bad(f"set of {describe(args[0])}")
    return set(*args)


def _complex(m: Loader, args: tuple[Any, ...]) -> complex:
    _arity("complex", args, 0, 1, 2)
    if not all(type(a) in (int, float) for a in args):
        raise Bad(f"complex of {', '.join(describe(a) for a in args)}: expected numbers")
    return complex(*args)


def _size(m: Loader, args: tuple[Any, ...]) -> tuple[int, ...]:
    _arity("torch.Size", args, 1)
    if type(args[0]) not in (tuple, list) or not all(type(d) is int for d in args[0]):
        raise Bad(f"torch.Size of {describe(args[0])}: expected integers")
    return tuple(args[0])


def _device(m: Loader, args: tuple[Any, ...]) -> _Inert:
    _arity("torch.device", args, 1, 2)
    if type(args[0]) not in (str, int) or not all(type(a) is int for a in args[1:]):
        raise Bad(f"torch.device{args!r:.60}: expected a name and an index")
    return _Inert("torch.device", args)


def _get_layout(m: Loader, args: tuple[Any, ...]) -> _Inert:
    _arity("_get_layout", args, 1)
    if type(args[0]) is not str:
        raise Bad(f"_get_layout of {describe(args[0])}: expected a name")
    return _Inert("torch layout", args)


def _encode(m: Loader, args: tuple[Any, ...]) -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocol 2 pickles ``bytes``."""
    if len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1"):
        raise Bad(f"_codecs.encode{args!r:.60}: only (text, 'latin1') encodes bytes")
    return args[0].encode("latin1")


def _callable(module: str, name: str, fn: Any, newobj: bool = False) -> CallableGlobal:
    return CallableGlobal(module, name, fn, newobj)


_PARAMETER = _Marker("torch.nn.parameter", "Parameter")
_TENSOR = _Marker("torch", "Tensor")
_REBUILD_TENSOR = _callable("torch._utils", "_rebuild_tensor", _rebuild_tensor)

_table: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _callable("collections", "OrderedDict", _ordered_dict),
    ("torch._utils", "_rebuild_tensor_v2"): _callable(
        "torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2
    ),
    ("torch._utils", "_rebuild_tensor"): _REBUILD_TENSOR,
    ("torch._utils", "_rebuild_parameter"): _callable(
        "torch._utils", "_rebuild_parameter", _rebuild_parameter
    ),
    ("torch._utils", "_rebuild_parameter_with_state"): _callable(
        "torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter_with_state
    ),
    ("torch._tensor", "_rebuild_from_type_v2"): _callable(
        "torch._tensor", "_rebuild_from_type_v2", _rebuild_from_type_v2
    ),
    ("torch.nn.parameter", "Parameter"): _PARAMETER,
    ("torch", "Tensor"): _TENSOR,
    ("torch", "Size"): _callable("torch", "Size", _size),
    ("torch", "device"): _callable("torch", "device", _device),
    ("torch.serialization", "_get_layout"): _callable(
        "torch.serialization", "_get_layout", _get_layout
    ),
    ("builtins", "set"): _callable("builtins", "set", _set),
    ("builtins", "complex"): _callable("builtins", "complex", _complex, newobj=True),
    ("_codecs", "encode"): _callable("_codecs", "encode", _encode),
}
for _name, _dt in _STORAGE_DTYPES.items():
    _table[("torch", _name)] = StorageType(_name, _dt)
for _dt_name in _DTYPE_NAMES:
    _table[("torch", _dt_name)] = _Marker("torch", _dt_name)
# Read-only, and every value frozen: a pickle can neither add a global nor change one.
ALLOWED: MappingProxyType[tuple[str, str], Any] = MappingProxyType(_table)
del _table
