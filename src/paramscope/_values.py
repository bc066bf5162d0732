"""Value statistics that work for every dtype a checkpoint may hold.

torch implements few operations for its storage-only dtypes: ``count_nonzero`` fails on
unsigned integers and every float8 kind, ``isinf`` on float8, and ``float4_e2m1fn_x2`` (two
FP4 values per byte) cannot even be cast. Files hold them all (FP8 and MXFP4 checkpoints,
``U64`` counters), so every statistic paramscope reads from values goes through this module:

* :func:`widen` gives a tensor with the same *multiset* of values in a dtype torch computes
  with (float8 kinds → float32, unsigned → float64, FP4 pairs decoded to float32 through the
  E2M1 table). It is exact for counting zeros, NaN, Inf and for histograms, which do not
  depend on the order of elements; it is never used where positions matter;
* :func:`count_nonzero` and :func:`count_nan_inf` use it;
* :func:`computes` says whether a dtype is one torch computes with everywhere (F16, BF16, F32,
  F64): only those are pruned, quantised or cast; other entries are kept as stored, with a note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["COMPUTED", "computes", "count_nan_inf", "count_nonzero", "widen"]

#: dtype names torch computes with everywhere (the floats transforms work on).
COMPUTED = frozenset({"float16", "bfloat16", "float32", "float64"})

# FP4 E2M1: sign bit 3, exponent bits 2-1, mantissa bit 0 (OCP MX), one value per nibble.
_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def _name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def computes(t: Any) -> bool:
    """Whether ``t``'s dtype is F16, BF16, F32 or F64 (what prune, quantise and cast take).

    Args:
        t: a tensor.

    Returns:
        True for those four floating dtypes.

    Example:
        >>> import torch
        >>> computes(torch.zeros(2)), computes(torch.zeros(2).to(torch.float8_e4m3fn))
        (True, False)
    """
    return _name(t) in COMPUTED


def widen(t: torch.Tensor) -> torch.Tensor:
    """The same values (as a multiset) in a dtype torch computes with; see the module doc.

    Args:
        t: any tensor.

    Returns:
        ``t`` itself for dtypes torch computes with, else a widened copy (flattened for FP4).

    Example:
        >>> import torch
        >>> pair = torch.tensor([0x21], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
        >>> sorted(widen(pair).tolist())
        [0.5, 1.0]
    """
    import torch

    name = _name(t)
    if name == "float4_e2m1fn_x2":
        b = t.contiguous().view(torch.uint8).reshape(-1).to(torch.int64)
        nibbles = torch.stack((b & 0xF, b >> 4), dim=-1).reshape(-1)
        return torch.tensor(_E2M1, dtype=torch.float32)[nibbles]
    if name.startswith("float8"):
        return t.to(torch.float32)
    if name in ("uint16", "uint32", "uint64"):
        return t.to(torch.float64)  # zero stays zero; histograms need no more precision
    return t


def count_nonzero(t: torch.Tensor) -> int:
    """Nonzero elements of a tensor of any dtype (FP4: values, two per byte).

    Args:
        t: any tensor.

    Returns:
        The count.

    Example:
        >>> import torch
        >>> count_nonzero(torch.tensor([0, 3, 0], dtype=torch.int64).to(torch.uint64))
        1
    """
    import torch

    return int(torch.count_nonzero(widen(t)))


def count_nan_inf(t: torch.Tensor) -> tuple[int, int]:
    """``(NaN count, ±Inf count)`` of a tensor of any dtype (0, 0 for integers and FP4).

    Args:
        t: any tensor.

    Returns:
        The two counts.

    Example:
        >>> import torch
        >>> count_nan_inf(torch.tensor([1.0, float("nan"), float("inf")]).to(torch.float8_e5m2))
        (1, 1)
    """
    import torch

    if not (t.is_floating_point() or t.is_complex()):
        return 0, 0
    w = widen(t)
    return int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
