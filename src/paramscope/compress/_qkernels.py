"""The quantise / dequantise kernels: one tensor to integers and scales, and back.

:class:`QuantConfig` says how (8 or 4 bits, symmetric or asymmetric, per tensor, per output
channel or per group along the last dimension); :func:`quantize_tensor` makes a
:class:`QuantizedTensor` in storage form (see :mod:`paramscope._quantstore`) and
:func:`dequantize_tensor` restores floats: ``q * scale`` or ``(q - zero) * scale``, in the
original dtype. Quantisation runs in float32 (bf16/f16 inputs are upcast chunk by chunk),
rounds half to even (``torch.round``) and clamps; it is deterministic.

A scale that would be 0 (an all-zero channel, group or tensor) is stored as 1.0, so the zeros
come back exactly; a positive scale below the smallest normal float32 is raised to it.

Example:
    >>> import torch
    >>> q = quantize_tensor(torch.randn(4, 8), QuantConfig(bits=8))
    >>> q.data.dtype, tuple(q.scale.shape)
    (torch.int8, (4, 1))
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, EntryError
from ._int4 import pack_int4, unpack_int4

if TYPE_CHECKING:
    import torch

    from ._qerrors import ErrorSums

__all__ = [
    "QuantConfig",
    "QuantizedTensor",
    "dequantize_tensor",
    "quantize_tensor",
    "quantize_with_errors",
]


_SCHEMES = ("symmetric", "asymmetric")


# Elements per working chunk (block): 512 Ki float32 = 2 MiB, small enough to stay in cache
# so that the min/max, divide / round / clamp / convert and error passes on it do not each go
# to main memory, large enough that the calls per block cost little (measured best between
# 128 Ki and 2 Mi on a 2-core EPYC).
_CHUNK = 1 << 19


# ---------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class QuantConfig:
    """How to quantise one tensor.

    Attributes:
        bits: 8 or 4.
        scheme: ``"symmetric"`` (zero maps to 0, range ±(2^(bits-1) - 1)) or ``"asymmetric"``
            (unsigned with a zero point, range [0, 2^bits - 1]).
        granularity: ``"tensor"`` (one scale), ``"channel"`` (one scale per output channel,
            dim 0) or a positive int ``g`` (groups of ``g`` along the last dimension).
            ``"channel"`` on a 0-D or 1-D tensor falls back to ``"tensor"``.

    Raises:
        ArgumentError: an option has a value outside those above.

    Example:
        >>> QuantConfig(bits=4, scheme="asymmetric", granularity=128).qmax
        15
    """

    bits: int = 8
    scheme: str = "symmetric"
    granularity: str | int = "channel"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in (8, 4):
            raise ArgumentError(f"quantize: bits={self.bits!r}: expected 8 or 4")
        if self.scheme not in _SCHEMES:
            raise ArgumentError(
                f"quantize: scheme={self.scheme!r}: expected 'symmetric' or 'asymmetric'"
            )
        g = self.granularity
        ok = (
            g in ("tensor", "channel")
            if isinstance(g, str)
            else (isinstance(g, int) and not isinstance(g, bool) and g > 0)
        )
        if not ok:
            raise ArgumentError(
                f"quantize: granularity={g!r}: expected 'tensor', 'channel' or a positive "
                "group size (an int, e.g. 128)"
            )

    @property
    def symmetric(self) -> bool:
        """True for the symmetric scheme."""
        return self.scheme == "symmetric"

    @property
    def qmin(self) -> int:
        """Smallest integer value (-127 / -7 symmetric, 0 asymmetric)."""
        return -self.qmax if self.symmetric else 0

    @property
    def qmax(self) -> int:
        """Largest integer value (127 / 7 symmetric, 255 / 15 asymmetric)."""
        if self.symmetric:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - 1


@dataclass
class QuantizedTensor:
    """One quantised tensor in storage form (see the module docstring).

    Attributes:
        data: the integers (int8, uint8, or uint8 with two 4-bit values per byte).
        scale: float32 scales, shaped by granularity.
        zero: uint8 zero points (asymmetric) or ``None``.
        shape: the original shape.
        dtype: the original torch dtype.
        cfg: the effective config (``channel`` on ≤1-D tensors reads ``tensor``).
    """

    data: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    shape: tuple[int, ...]
    dtype: torch.dtype
    cfg: QuantConfig

    @property
    def packed(self) -> bool:
        """True when ``data`` holds two 4-bit values per byte."""
        return self.cfg.bits == 4

    @property
    def nbytes(self) -> int:
        """Bytes of data, scales and zero points together."""
        n = self.data.numel() * self.data.element_size()
        n += self.scale.numel() * self.scale.element_size()
        if self.zero is not None:
            n += self.zero.numel() * self.zero.element_size()
        return n


# ---------------------------------------------------------------------------------- tensors


def _effective(cfg: QuantConfig, shape: tuple[int, ...], name: str) -> QuantConfig:
    g = cfg.granularity
    if g == "channel" and len(shape) <= 1:
        return QuantConfig(cfg.bits, cfg.scheme, "tensor")
    if isinstance(g, int) and (len(shape) == 0 or shape[-1] % g):
        last = shape[-1] if shape else "none (0-D)"
        raise EntryError(
            f"entry {name!r}: group size {g} needs a last dimension divisible by {g}, "
            f"found shape {shape} (last dimension {last}); choose another group size "
            "or skip= the entry"
        )
    return cfg


def _scale_shape(cfg: QuantConfig, shape: tuple[int, ...]) -> tuple[int, ...]:
    g = cfg.granularity
    if g == "tensor":
        return ()
    if g == "channel":
        return (shape[0],) + (1,) * (len(shape) - 1)
    assert isinstance(g, int)
    return (*shape[:-1], shape[-1] // g)


def _rows(cfg: QuantConfig, shape: tuple[int, ...], numel: int) -> tuple[int, int]:
    """The (rows, row length) view in which each row shares one scale."""
    g = cfg.granularity
    if g == "tensor":
        return 1, numel
    if g == "channel":
        return shape[0], (numel // shape[0] if shape[0] else 0)
    assert isinstance(g, int)
    return numel // g, g


def _scales(
    mn: torch.Tensor, mx: torch.Tensor, cfg: QuantConfig
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float32 scales and (asymmetric) float32 zero points from per-row min and max."""
    import torch

    mn = mn.to(torch.float64)
    mx = mx.to(torch.float64)
    tiny = torch.finfo(torch.float32).tiny
    if cfg.symmetric:
        span = torch.maximum(mx, -mn)
    else:
        mn = torch.clamp(mn, max=0.0)
        span = torch.clamp(mx, min=0.0) - mn
    scale = span / cfg.qmax
    scale = torch.where(span > 0, scale, torch.ones_like(scale)).to(torch.float32)
    scale.clamp_(min=tiny)
    if cfg.symmetric:
        return scale, None
    zero = torch.round(-mn / scale.to(torch.float64)).clamp_(0, cfg.qmax).to(torch.float32)
    return scale, zero


def _quantize_rows(
    x2: torch.Tensor,
    scale_rows: torch.Tensor,
    zero_rows: torch.Tensor | None,
    out2: torch.Tensor,
    qmin: int,
    qmax: int,
    offset: int,
) -> None:
    """Quantise a (rows, length) view into ``out2`` chunk by chunk with one float32 buffer."""
    import torch

    rows, length = x2.shape
    if rows == 0 or length == 0:
        return
    buf = torch.empty(min(_CHUNK, rows * length), dtype=torch.float32, device=x2.device)

    def one(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, o: torch.Tensor) -> None:
        b = buf[: x.numel()].view(x.shape)
        torch.div(x, s, out=b)
        b.round_()
        if z is not None:
            b.add_(z)
        b.clamp_(qmin, qmax)
        if offset:
            b.add_(offset)
        o.copy_(b)

    if length <= _CHUNK:
        step = max(1, _CHUNK // length)
        for r in range(0, rows, step):
            e = min(rows, r + step)
            z = None if zero_rows is None else zero_rows[r:e]
            one(x2[r:e], scale_rows[r:e], z, out2[r:e])
    else:
        for r in range(rows):
            s = scale_rows[r : r + 1]
            z = None if zero_rows is None else zero_rows[r : r + 1]
            for c in range(0, length, _CHUNK):
                e = min(length, c + _CHUNK)
                one(x2[r : r + 1, c:e], s, z, out2[r : r + 1, c:e])


def quantize_tensor(t: torch.Tensor, cfg: QuantConfig, name: str = "") -> QuantizedTensor:
    """Quantise one floating tensor following the storage convention.

    A CPU tensor (float32/64, float16, bfloat16) goes through :func:`quantize_array`: blocks
    of whole rows (channels, groups, or slices of a long row) of about 2 MiB, which one
    thread per core takes in turn; each block's min/max, scales and integers are made while
    it is in cache (rows longer than a block get their min/max in a first pass). Per
    element: divide by the scale, round half to even, add the zero point, clamp, convert.
    Deterministic: the same input gives the same bytes, whatever the number of threads.

    Args:
        t: a floating tensor (any device; bf16/f16 are upcast to float32 chunk by chunk).
        cfg: the config; ``channel`` on a ≤1-D tensor falls back to ``tensor``.
        name: the entry name, for error messages.

    Returns:
        The :class:`QuantizedTensor`.

    Raises:
        EntryError: non-floating input, NaN or Inf values, or a group size that does not
            divide the last dimension — each naming the entry.

    Example:
        >>> import torch
        >>> q = quantize_tensor(torch.tensor([[1.0, -2.0], [0.5, 0.25]]), QuantConfig())
        >>> q.data.tolist(), q.scale.flatten().tolist()
        ([[64, -127], [127, 64]], [0.015748031437397003, 0.003937007859349251])
    """
    return quantize_with_errors(t, cfg, name, errors=False)[0]


def quantize_with_errors(
    t: torch.Tensor, cfg: QuantConfig, name: str = "", *, errors: bool = True
) -> tuple[QuantizedTensor, ErrorSums | None]:
    """:func:`quantize_tensor` and the error sums of its restoration, in the same pass.

    The sums are those of :func:`~paramscope.compress._qerrors.error_sums` of ``t`` and
    ``dequantize_tensor(q)`` (float32 squares summed pairwise, float64 totals), made block
    by block while the block is in cache instead of dequantising the whole tensor afterwards.

    Args:
        t: a floating tensor.
        cfg: the config.
        name: the entry name, for error messages.
        errors: also make the error sums (else ``None``).

    Returns:
        ``(the quantised tensor, its ErrorSums or None)``.

    Raises:
        EntryError: as :func:`quantize_tensor`.

    Example:
        >>> import torch
        >>> q, sums = quantize_with_errors(torch.tensor([[1.0, -2.0]]), QuantConfig())
        >>> q.data.tolist(), sums.count, sums.max_abs_error < 0.008
        ([[64, -127]], 2, True)
    """
    import torch

    label = name or "<tensor>"
    if not t.is_floating_point():
        raise EntryError(
            f"entry {label!r}: is {t.dtype}; only floating tensors are quantised: skip= it"
        )
    shape = tuple(int(s) for s in t.shape)
    cfg = _effective(cfg, shape, label)
    x = t.detach()
    if not x.is_contiguous():
        x = x.contiguous()
    numel = x.numel()
    rows, length = _rows(cfg, shape, numel)
    packed = cfg.bits == 4
    if packed:
        out_dtype, offset = torch.uint8, (8 if cfg.symmetric else 0)
    else:
        out_dtype, offset = (torch.int8 if cfg.symmetric else torch.uint8), 0
    kind = _kind_of(x.dtype) if x.device.type == "cpu" else None
    sums = None
    if numel and kind is not None:
        out = _empty(shape, out_dtype)
        xs = x.view(torch.int16) if kind == "bf16" else x
        arr = xs.numpy().reshape(rows, length)
        sc, zr, sums = quantize_array(
            arr, cfg, out.numpy().reshape(rows, length), label, kind=kind, errors=errors
        )
        scale_rows = torch.from_numpy(sc)
        zero_rows = None if zr is None else torch.from_numpy(zr)
    else:
        x2 = x.reshape(rows, length)
        if numel:
            # two reductions beat torch.aminmax by ~4x on CPU (torch 2.x); both propagate NaN
            mn = torch.amin(x2, dim=1, keepdim=True)
            mx = torch.amax(x2, dim=1, keepdim=True)
            if not bool(torch.isfinite(mn).all() and torch.isfinite(mx).all()):
                raise _nan_error(label)
            scale_rows, zero_rows = _scales(mn, mx, cfg)
        else:
            scale_rows = torch.ones(rows, 1, dtype=torch.float32, device=x.device)
            zero_rows = None if cfg.symmetric else torch.zeros_like(scale_rows)
        out = torch.empty(shape, dtype=out_dtype, device=x.device)
        _quantize_rows(
            x2, scale_rows, zero_rows, out.view(rows, length), cfg.qmin, cfg.qmax, offset
        )
    if packed:
        # values already carry the +8 offset, so pack them as unsigned nibbles
        out = pack_int4(out, signed=False)
    sshape = _scale_shape(cfg, shape)
    scale = scale_rows.reshape(sshape)
    zero = None if zero_rows is None else zero_rows.to(torch.uint8).reshape(sshape)
    q = QuantizedTensor(out, scale, zero, shape, t.dtype, cfg)
    if errors and sums is None:
        from ._qerrors import error_sums

        sums = error_sums(t, dequantize_tensor(q))
    return q, sums


def _kind_of(dtype: Any) -> str | None:
    """The numpy kernel's name for a torch dtype it takes, else ``None``."""
    import torch

    return {
        torch.float32: "f32",
        torch.float64: "f64",
        torch.float16: "f16",
        torch.bfloat16: "bf16",
    }.get(dtype)


#: numpy dtype names of the kinds the numpy kernel takes (bf16 arrives as uint16 bits)
NP_DTYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "uint16"}


def _nan_error(label: str) -> EntryError:
    return EntryError(
        f"entry {label!r}: contains NaN or Inf values; cannot quantise "
        "(fix the weights or skip= the entry)"
    )


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor; a large one in huge-page memory (faults in ~5x faster)."""
    import torch

    from ..io._reader import HUGE_MIN, empty_bytes

    n = 1
    for d in shape:
        n *= d
    itemsize = torch.empty((), dtype=dtype).element_size()
    if n * itemsize < HUGE_MIN:
        return torch.empty(shape, dtype=dtype)
    return empty_bytes(n * itemsize).view(dtype).view(shape)


def empty_array(n: int, dtype: str) -> Any:
    """An uninitialised 1-D numpy array of ``n`` elements; a large one in huge-page memory.

    Args:
        n: elements.
        dtype: a numpy dtype name.

    Returns:
        The array (it keeps its memory alive).

    Example:
        >>> empty_array(3, "int8").shape
        (3,)
    """
    import numpy as np

    from ..io._reader import HUGE_MIN, _huge

    dt = np.dtype(dtype)
    nbytes = n * dt.itemsize
    m = _huge(nbytes) if nbytes >= HUGE_MIN and sys.platform == "linux" else None
    if m is None:
        return np.empty(n, dtype=dt)
    return np.frombuffer(m, dtype=dt)


def pack_int4_array(u: Any) -> Any:
    """:func:`~paramscope.compress._int4.pack_int4` of unsigned nibbles, in numpy.

    Args:
        u: uint8 array (at least 1-D) of values 0..15.

    Returns:
        uint8 array of shape ``(*u.shape[:-1], ceil(u.shape[-1] / 2))``.

    Example:
        >>> import numpy as np
        >>> pack_int4_array(np.array([1, 2, 3], dtype=np.uint8)).tolist()
        [33, 3]
    """
    import numpy as np

    if u.ndim == 0:
        u = u.reshape(1)
    if u.shape[-1] % 2:
        u = np.concatenate([u, np.zeros((*u.shape[:-1], 1), dtype=np.uint8)], axis=-1)
    pairs = u.reshape(*u.shape[:-1], u.shape[-1] // 2, 2)
    high = np.left_shift(pairs[..., 1], 4)
    return np.bitwise_or(high, pairs[..., 0], out=high)


def _scales_np(lo_: Any, hi_: Any, cfg: QuantConfig, scale: Any, zero: Any) -> None:
    """:func:`_scales` in numpy (the same float64 steps and roundings), for a few rows,
    written into the float32 arrays ``scale`` and ``zero``."""
    import numpy as np

    lo = lo_.astype(np.float64)
    hi = hi_.astype(np.float64)
    if cfg.symmetric:
        span = np.maximum(hi, -lo)
    else:
        lo = np.minimum(lo, 0.0)
        span = np.maximum(hi, 0.0) - lo
    s = np.where(span > 0, span / cfg.qmax, 1.0).astype(np.float32)
    np.maximum(s, _TINY, out=s)
    scale[...] = s
    if zero is not None:
        zero[...] = np.clip(np.round(-lo / s.astype(np.float64)), 0, cfg.qmax)


_TINY = 1.1754943508222875e-38  # the smallest normal float32


def quantize_array(
    x2: Any,
    cfg: QuantConfig,
    out2: Any,
    label: str,
    *,
    kind: str = "f32",
    errors: bool = False,
) -> tuple[Any, Any, ErrorSums | None]:
    """Quantise a (rows, length) numpy array, one scale per row, into ``out2`` on all cores.

    The engine of :func:`quantize_tensor` for CPU tensors, also used without torch by the
    streaming quantiser. The rows are cut into blocks of about :data:`_CHUNK` elements that
    worker threads take in turn (numpy releases the GIL in its loops); a block's min/max,
    scales, integers and error sums are all made while it is in cache. Rows longer than a
    block get their min/max in a first pass over slices. The bytes are those of the torch
    kernel: float32 division (float64 for float64 input), round half to even, zero point,
    clamp (asymmetric; symmetric values cannot leave the range), offset, convert. The
    symmetric scheme without error sums takes a shorter route with the same bytes
    (:func:`_symmetric_worker`).

    Args:
        x2: the values, (rows, length), of ``kind``: ``"f32"``, ``"f64"``, ``"f16"``, or
            ``"bf16"`` given as its uint16 bits.
        cfg: the (effective) config; 4-bit values come out unpacked with their offset.
        out2: int8 / uint8 array of the same shape, filled.
        label: the entry name for errors.
        kind: the element kind.
        errors: also make the :class:`~paramscope.compress._qerrors.ErrorSums` of the values
            restored in the original dtype.

    Returns:
        ``(scales (rows, 1) float32, zero points (rows, 1) float32 or None, sums or None)``.

    Raises:
        EntryError: NaN or Inf values.

    Example:
        >>> import numpy as np
        >>> out = np.empty((1, 2), dtype=np.int8)
        >>> s, z, _ = quantize_array(np.array([[1.0, -2.0]], np.float32), QuantConfig(), out, "w")
        >>> out.tolist(), z is None
        ([[64, -127]], True)
    """
    import numpy as np

    from ._qerrors import ErrorSums

    rows, length = x2.shape
    bf16 = kind == "bf16"
    work = np.float32 if bf16 else x2.dtype  # dtype of the min/max
    scale_rows = np.empty((rows, 1), dtype=np.float32)
    zero_rows = None if cfg.symmetric else np.empty((rows, 1), dtype=np.float32)
    mn_rows = np.empty((rows, 1), dtype=work)
    mx_rows = np.empty((rows, 1), dtype=work)
    qmin, qmax = cfg.qmin, cfg.qmax
    offset = (8 if cfg.symmetric else 0) if cfg.bits == 4 else 0
    block = _CHUNK  # read at call time (tests change it)
    if rows == 0 or length == 0:
        scale_rows.fill(1.0)
        if zero_rows is not None:
            zero_rows.fill(0.0)
        return scale_rows, zero_rows, (ErrorSums() if errors else None)
    if length <= block:
        step = max(1, block // length)
        blocks = [(r, min(rows, r + step), 0, length) for r in range(0, rows, step)]
        fused = True
    else:
        cols = -(-length // -(-length // block))  # equal slices of at most a block
        blocks = [
            (r, r + 1, c, min(length, c + cols))
            for r in range(rows)
            for c in range(0, length, cols)
        ]
        fused = False
    cap = max(d - c for _, _, c, d in blocks) * max(e - r for r, e, _, _ in blocks)
    accs: list[list[float]] = []

    def as_f32(xb: Any, scratch: Any) -> Any:
        """bfloat16 bits to float32 (exact: the bits shifted up)."""
        u = scratch.view(np.uint32)[: xb.size].reshape(xb.shape)
        np.copyto(u, xb, casting="unsafe")
        np.left_shift(u, 16, out=u)
        return u.view(np.float32)

    if not fused:
        mins = np.empty(len(blocks), dtype=work)
        maxs = np.empty(len(blocks), dtype=work)

        def minmax_worker() -> Callable[[int], None]:
            scratch = np.empty(cap, dtype=np.float32) if bf16 else None

            def one(i: int) -> None:
                r, e, c, d = blocks[i]
                xb = x2[r:e, c:d]
                if bf16:
                    xb = as_f32(xb, scratch)
                mins[i] = np.amin(xb)
                maxs[i] = np.amax(xb)

            return one

        _run(len(blocks), minmax_worker)
        per = len(blocks) // rows
        np.amin(mins.reshape(rows, per), axis=1, keepdims=True, out=mn_rows)
        np.amax(maxs.reshape(rows, per), axis=1, keepdims=True, out=mx_rows)
        with np.errstate(all="ignore"):
            _scales_np(mn_rows, mx_rows, cfg, scale_rows, zero_rows)

    if fused and cfg.symmetric and not errors:
        count, make = _symmetric_worker(
            x2, out2, blocks, cap, cfg, kind, mn_rows, mx_rows, scale_rows
        )
        _run(count, make)
        if not (np.isfinite(mn_rows).all() and np.isfinite(mx_rows).all()):
            raise _nan_error(label)
        return scale_rows, zero_rows, None

    def worker() -> Callable[[int], None]:
        b = np.empty(cap, dtype=np.float32)
        xf = np.empty(cap, dtype=np.float32) if bf16 or (errors and kind != "f32") else None
        diff = np.empty(cap, dtype=np.float32) if errors else None
        acc = [0.0, 0.0, 0.0, 0.0, 0.0]  # signal, noise, dot, restored, max |error|
        accs.append(acc)

        def sumsq(v: Any) -> float:
            # one pass, no temporary; SIMD partial sums in float32: ~1e-7 relative for a
            # block (the squares-then-pairwise-sum way is as exact and 2x slower)
            return float(np.einsum("ij,ij->", v, v))

        def one(i: int) -> None:
            r, e, c, d = blocks[i]
            xb = x2[r:e, c:d]
            if bf16:
                xb = as_f32(xb, xf)
            if fused:
                mn, mx = mn_rows[r:e], mx_rows[r:e]
                np.amin(xb, axis=1, keepdims=True, out=mn)
                np.amax(xb, axis=1, keepdims=True, out=mx)
                _scales_np(
                    mn, mx, cfg, scale_rows[r:e], None if zero_rows is None else zero_rows[r:e]
                )
            s = scale_rows[r:e]
            z = None if zero_rows is None else zero_rows[r:e]
            bb = b[: xb.size].reshape(xb.shape)
            np.divide(xb, s, out=bb)
            np.rint(bb, out=bb)  # half to even, like torch.round
            if z is not None:
                bb += z
                np.clip(bb, qmin, qmax, out=bb)
            # symmetric: |x| <= max|x| = qmax * scale up to rounding, so |x / scale| stays
            # below qmax + 1/2 and rounds into the range: no clamp needed
            if offset:
                bb += offset
            np.copyto(out2[r:e, c:d], bb, casting="unsafe")
            if not errors:
                return
            # the values dequantize_tensor restores: (q - zero) * scale, in the input dtype
            if offset:
                bb -= offset
            if z is not None:
                bb -= z
            bb *= s
            if kind == "f16":
                np.copyto(bb, bb.astype(np.float16))
            elif bf16:  # round to bfloat16, nearest even, as torch's .to(bfloat16)
                u = bb.view(np.uint32)
                lsb = np.right_shift(u, 16)
                lsb &= 1
                lsb += 0x7FFF
                u += lsb
                u &= np.uint32(0xFFFF0000)
            if kind == "f32" or bf16:
                xv = xb
            else:  # float16 exactly, float64 rounded: error_sums compares in float32
                assert xf is not None
                xv = xf[: xb.size].reshape(xb.shape)
                np.copyto(xv, xb, casting="same_kind")
            assert diff is not None
            dd = diff[: xb.size].reshape(xb.shape)
            np.subtract(xv, bb, out=dd)
            sig, res, noi = sumsq(xv), sumsq(bb), sumsq(dd)
            acc[0] += sig
            acc[1] += noi
            # 2 w.v = |w|^2 + |v|^2 - |w - v|^2: no cancellation when the error is small
            acc[2] += (sig + res - noi) / 2
            acc[3] += res
            acc[4] = max(acc[4], float(np.amax(dd)), -float(np.amin(dd)))

        def guarded(i: int) -> None:
            with np.errstate(all="ignore"):  # NaN / Inf: reported below, naming the entry
                one(i)

        return guarded

    _run(len(blocks), worker)
    if not (np.isfinite(mn_rows).all() and np.isfinite(mx_rows).all()):
        raise _nan_error(label)
    if not errors:
        return scale_rows, zero_rows, None
    sums = ErrorSums(
        sum(a[0] for a in accs),
        sum(a[1] for a in accs),
        sum(a[2] for a in accs),
        sum(a[3] for a in accs),
        max(a[4] for a in accs),
        rows * length,
    )
    return scale_rows, zero_rows, sums


# 1.5 * 2**23: a float32 y with |y| < 2**22 plus this rounds to an integer half to even (the
# float32 spacing there is 1), and the low bits of the sum's bit pattern are that integer in
# two's complement: one add instead of rint, and an int32 -> int8 narrowing instead of a
# float -> int8 conversion (both bitwise the same as rint + convert). Symmetric values
# x / scale stay within qmax + 1/2 (scale >= max|x| / qmax up to a float32 rounding).
_MAGIC = 12582912.0

#: bytes of a (transparent) huge page: the output of one task of :func:`_symmetric_worker`
_PAGE = 2 << 20


def _symmetric_worker(
    x2: Any,
    out2: Any,
    blocks: list[tuple[int, int, int, int]],
    cap: int,
    cfg: QuantConfig,
    kind: str,
    mn_rows: Any,
    mx_rows: Any,
    scale_rows: Any,
) -> tuple[int, Callable[[], Callable[[int], None]]]:
    """``(task count, make)`` for :func:`_run`: the work of :func:`quantize_array` for
    whole-row blocks of the symmetric scheme without error sums.

    Per block: min, max, scales, then divide, add :data:`_MAGIC` (plus the 4-bit offset)
    and narrow the bit patterns to the output: 5 passes over a block in cache, plus a few
    calls on its scales. A task is a run of consecutive blocks whose output fills about one
    huge page (:data:`_PAGE`), so that each output page is faulted in (zeroed by the kernel)
    by one thread rather than by both at once; the errstate is entered once per task."""
    import numpy as np

    bf16 = kind == "bf16"
    qmax = float(cfg.qmax)
    magic = np.float32(_MAGIC + (8 if cfg.bits == 4 else 0))  # 4-bit: the +8 offset too
    step = max(e - r for r, e, _, _ in blocks)
    # at least ~8 tasks where there are that many blocks, so that the threads share the work
    per = max(1, min(_PAGE // (step * x2.shape[1] * out2.itemsize), len(blocks) // 8))
    count = -(-len(blocks) // per)

    def make() -> Callable[[int], None]:
        b = np.empty(cap, dtype=np.float32)
        xf = np.empty(cap if bf16 else 0, dtype=np.float32)  # bfloat16 widened
        span = np.empty(step, dtype=np.float64)
        quot = np.empty(step, dtype=np.float64)

        def one(i: int) -> None:
            r, e, _, _ = blocks[i]
            xb = x2[r:e]
            if bf16:
                u = xf.view(np.uint32)[: xb.size].reshape(xb.shape)
                np.copyto(u, xb, casting="unsafe")
                np.left_shift(u, 16, out=u)
                xb = u.view(np.float32)
            n = e - r
            mn, mx = mn_rows[r:e, 0], mx_rows[r:e, 0]
            np.minimum.reduce(xb, axis=1, out=mn)
            np.maximum.reduce(xb, axis=1, out=mx)
            # _scales_np's steps: span = max(max, -min) in float64, / qmax, to float32,
            # at least the smallest normal; an all-zero row (span 0) gets 1.0
            sp, qt = span[:n], quot[:n]
            np.negative(mn, out=sp)
            np.maximum(sp, mx, out=sp)
            np.divide(sp, qmax, out=qt)
            s = scale_rows[r:e]
            np.copyto(s[:, 0], qt, casting="same_kind")
            np.maximum(s, _TINY, out=s)
            if not sp.all():
                np.copyto(s[:, 0], 1.0, where=sp == 0)
            bb = b[: xb.size].reshape(xb.shape)
            np.divide(xb, s, out=bb)
            np.add(bb, magic, out=bb)
            np.copyto(out2[r:e], bb.view(np.int32), casting="unsafe")

        def task(i: int) -> None:
            with np.errstate(all="ignore"):  # NaN / Inf: reported by the caller
                for j in range(i * per, min(len(blocks), (i + 1) * per)):
                    one(j)

        return task

    return count, make


_POOL: Any = None
_POOL_LOCK = threading.Lock()


def _workers() -> tuple[Any, int]:
    """``(pool, n)``: a process-wide pool of one worker thread per usable core, or
    ``(None, 1)`` on one core. numpy's loops release the GIL, so the workers run at once."""
    global _POOL
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    if n <= 1:
        return None, 1
    with _POOL_LOCK:
        if _POOL is None or _POOL[1] != n:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = (ThreadPoolExecutor(n, thread_name_prefix="paramscope-quant"), n)
        return _POOL


def _forget_pool() -> None:  # a forked child has the pool object but not its threads
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _run(count: int, make: Callable[[], Callable[[int], None]]) -> None:
    """Run ``one(i)`` for ``i`` in ``range(count)``, the workers taking the next index in turn
    (a worker slowed by the machine takes fewer); ``make()`` gives each worker its ``one``."""
    pool, n = _workers() if count > 1 else (None, 1)
    if pool is None:
        one = make()
        for i in range(count):
            one(i)
        return
    taken = itertools.count()

    def loop() -> None:
        one = make()
        while (i := next(taken)) < count:
            one(i)

    futures = [pool.submit(loop) for _ in range(min(count, n))]
    for f in futures:
        f.result()


def dequantize_tensor(q: QuantizedTensor) -> torch.Tensor:
    """Restore a float tensor: ``q * scale`` or ``(q - zero) * scale``, in the original dtype.

    Args:
        q: a :class:`QuantizedTensor`.

    Returns:
        A new tensor of ``q.shape`` and ``q.dtype``.

    Example:
        >>> import torch
        >>> w = torch.tensor([[127.0, -2.0]])
        >>> dequantize_tensor(quantize_tensor(w, QuantConfig())).tolist()
        [[127.0, -2.0]]
    """
    import torch

    shape = q.shape
    if q.packed:
        last = shape[-1] if shape else 1
        vals = unpack_int4(q.data, last, signed=q.cfg.symmetric).reshape(shape)
    else:
        vals = q.data
    w = vals.to(torch.float32)
    g = q.cfg.granularity
    scale = q.scale.to(torch.float32)
    zero = None if q.zero is None else q.zero.to(torch.float32)
    if isinstance(g, int):
        w = w.reshape(*shape[:-1], shape[-1] // g, g)
        scale = scale.unsqueeze(-1)
        zero = None if zero is None else zero.unsqueeze(-1)
    if zero is not None:
        w.sub_(zero)
    w.mul_(scale)
    return w.reshape(shape).to(q.dtype)
