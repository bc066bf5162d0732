"""The dtypes of the safetensors format and their counterparts in torch and numpy.

Kept torch-free: torch dtypes are looked up by name only when torch is already needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._enums import StrEnum
from ._errors import ArgumentError, UnsupportedDTypeError

if TYPE_CHECKING:
    import torch

__all__ = ["DType", "parse_dtype"]


class DType(StrEnum):
    """A tensor element type, spelled as in safetensors headers.

    Example:
        >>> DType("BF16").bits
        16
        >>> DType.F4.nbytes(8)
        4
    """

    BOOL = "BOOL"
    F4 = "F4"
    F6_E2M3 = "F6_E2M3"
    F6_E3M2 = "F6_E3M2"
    U8 = "U8"
    I8 = "I8"
    F8_E5M2 = "F8_E5M2"
    F8_E4M3 = "F8_E4M3"
    F8_E4M3FNUZ = "F8_E4M3FNUZ"
    F8_E5M2FNUZ = "F8_E5M2FNUZ"
    F8_E8M0 = "F8_E8M0"
    I16 = "I16"
    U16 = "U16"
    F16 = "F16"
    BF16 = "BF16"
    I32 = "I32"
    U32 = "U32"
    F32 = "F32"
    F64 = "F64"
    I64 = "I64"
    U64 = "U64"
    C64 = "C64"

    @property
    def bits(self) -> int:
        """Bits per element."""
        return _BITS[self]

    @property
    def computes(self) -> bool:
        """True for F16, BF16, F32 and F64: the floats torch computes with everywhere (what
        prune, quantise and casts work on; F8 kinds and FP4 are storage formats)."""
        return self in (DType.F16, DType.BF16, DType.F32, DType.F64)

    @property
    def is_float(self) -> bool:
        """True for floating-point and complex types (candidates for learned parameters)."""
        return not (self is DType.BOOL or self.value[0] in "IU")

    def nbytes(self, numel: int) -> int:
        """Bytes that ``numel`` elements take (sub-byte types are packed).

        Args:
            numel: element count.

        Returns:
            The byte count, rounded up to whole bytes.

        Example:
            >>> DType.F32.nbytes(10)
            40
        """
        return (numel * _BITS[self] + 7) // 8

    def to_torch(self) -> torch.dtype:
        """The torch dtype holding this type (``F4`` maps to ``float4_e2m1fn_x2``, two per byte).

        Returns:
            A ``torch.dtype``.

        Raises:
            UnsupportedDTypeError: when the installed torch has no such dtype.

        Example:
            >>> DType.BF16.to_torch()
            torch.bfloat16
        """
        import torch

        found = getattr(torch, _TORCH_NAMES.get(self, ""), None)
        if not isinstance(found, torch.dtype):
            raise UnsupportedDTypeError(
                f"dtype {self.value}: torch {torch.__version__} has no matching dtype"
            )
        return found

    @classmethod
    def from_torch(cls, dtype: Any) -> DType:
        """The safetensors dtype of a ``torch.dtype``.

        Args:
            dtype: a ``torch.dtype``.

        Returns:
            The matching :class:`DType`.

        Raises:
            UnsupportedDTypeError: for dtypes safetensors cannot hold (complex128, quantised).

        Example:
            >>> import torch
            >>> DType.from_torch(torch.float16)
            <DType.F16: 'F16'>
        """
        name = str(dtype).removeprefix("torch.")
        try:
            return _FROM_TORCH[name]
        except KeyError:
            raise UnsupportedDTypeError(
                f"torch dtype {name}: safetensors has no such dtype "
                f"(supported: {', '.join(sorted(_FROM_TORCH))})"
            ) from None

    @classmethod
    def from_numpy(cls, descr: str) -> DType:
        """The dtype of a numpy type string such as ``'<f4'`` or ``'|b1'``.

        Args:
            descr: a numpy ``dtype.str`` (byte order, kind, item size).

        Returns:
            The matching :class:`DType`.

        Raises:
            UnsupportedDTypeError: for big-endian, structured or object arrays.

        Example:
            >>> DType.from_numpy("<f2")
            <DType.F16: 'F16'>
        """
        key = descr[1:] if descr[:1] in "<|=" else None
        if key is None or key not in _FROM_NUMPY:
            raise UnsupportedDTypeError(
                f"numpy dtype {descr!r}: expected a little-endian bool, int, uint, float or "
                "complex64 type"
            )
        return _FROM_NUMPY[key]

    def to_numpy(self) -> str:
        """The numpy type string of this dtype (``'<f4'`` …).

        Returns:
            A string numpy accepts as a dtype.

        Raises:
            UnsupportedDTypeError: for types numpy lacks (bf16, fp8, fp4, fp6).

        Example:
            >>> DType.I64.to_numpy()
            '<i8'
        """
        for key, value in _FROM_NUMPY.items():
            if value is self:
                return ("|" if key in ("b1", "u1", "i1") else "<") + key
        raise UnsupportedDTypeError(f"dtype {self.value}: numpy has no such dtype")


_BITS: dict[DType, int] = {
    DType.BOOL: 8,
    DType.F4: 4,
    DType.F6_E2M3: 6,
    DType.F6_E3M2: 6,
    DType.U8: 8,
    DType.I8: 8,
    DType.F8_E5M2: 8,
    DType.F8_E4M3: 8,
    DType.F8_E4M3FNUZ: 8,
    DType.F8_E5M2FNUZ: 8,
    DType.F8_E8M0: 8,
    DType.I16: 16,
    DType.U16: 16,
    DType.F16: 16,
    DType.BF16: 16,
    DType.I32: 32,
    DType.U32: 32,
    DType.F32: 32,
    DType.F64: 64,
    DType.I64: 64,
    DType.U64: 64,
    DType.C64: 64,
}

_TORCH_NAMES: dict[DType, str] = {
    DType.BOOL: "bool",
    DType.F4: "float4_e2m1fn_x2",
    DType.U8: "uint8",
    DType.I8: "int8",
    DType.F8_E5M2: "float8_e5m2",
    DType.F8_E4M3: "float8_e4m3fn",
    DType.F8_E4M3FNUZ: "float8_e4m3fnuz",
    DType.F8_E5M2FNUZ: "float8_e5m2fnuz",
    DType.F8_E8M0: "float8_e8m0fnu",
    DType.I16: "int16",
    DType.U16: "uint16",
    DType.F16: "float16",
    DType.BF16: "bfloat16",
    DType.I32: "int32",
    DType.U32: "uint32",
    DType.F32: "float32",
    DType.F64: "float64",
    DType.I64: "int64",
    DType.U64: "uint64",
    DType.C64: "complex64",
}

_FROM_TORCH: dict[str, DType] = {name: dt for dt, name in _TORCH_NAMES.items()}
_FROM_TORCH.update({"float": DType.F32, "half": DType.F16, "double": DType.F64})

_FROM_NUMPY: dict[str, DType] = {
    "b1": DType.BOOL,
    "u1": DType.U8,
    "i1": DType.I8,
    "i2": DType.I16,
    "u2": DType.U16,
    "f2": DType.F16,
    "i4": DType.I32,
    "u4": DType.U32,
    "f4": DType.F32,
    "f8": DType.F64,
    "i8": DType.I64,
    "u8": DType.U64,
    "c8": DType.C64,
}

#: Spellings of dtypes users write (``bf16``, ``float16``, ``fp8``, ``int4`` …).
_DTYPE_ALIASES = {
    "fp32": DType.F32,
    "float32": DType.F32,
    "float": DType.F32,
    "f32": DType.F32,
    "fp16": DType.F16,
    "float16": DType.F16,
    "half": DType.F16,
    "f16": DType.F16,
    "bf16": DType.BF16,
    "bfloat16": DType.BF16,
    "fp64": DType.F64,
    "float64": DType.F64,
    "double": DType.F64,
    "f64": DType.F64,
    "fp8": DType.F8_E4M3,
    "float8": DType.F8_E4M3,
    "f8": DType.F8_E4M3,
    "float8_e4m3fn": DType.F8_E4M3,
    "float8_e5m2": DType.F8_E5M2,
    "int8": DType.I8,
    "i8": DType.I8,
    "fp4": DType.F4,
    "int4": DType.F4,
    "nf4": DType.F4,
}


def parse_dtype(value: str | DType) -> DType:
    """Read a dtype written the usual ways (``bf16``, ``float16``, ``BF16``, ``fp32`` …).

    Args:
        value: the spelling.

    Returns:
        The :class:`DType`.

    Raises:
        ArgumentError: an unknown spelling.

    Example:
        >>> parse_dtype("bf16"), parse_dtype("F32")
        (<DType.BF16: 'BF16'>, <DType.F32: 'F32'>)
    """
    if isinstance(value, DType):
        return value
    key = str(value).strip().removeprefix("torch.")
    if key.lower() in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[key.lower()]
    try:
        return DType(key.upper())
    except ValueError:
        raise ArgumentError(
            f"dtype {value!r}: expected one of bf16, fp16, fp32, fp64, fp8, int8, fp4 "
            "(or a safetensors name such as F32)"
        ) from None
