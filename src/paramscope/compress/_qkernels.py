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

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import ArgumentError, EntryError
from ._int4 import pack_int4, unpack_int4

if TYPE_CHECKING:
    import torch

__all__ = ["QuantConfig", "QuantizedTensor", "dequantize_tensor", "quantize_tensor"]


_SCHEMES = ("symmetric", "asymmetric")


# Elements per working chunk: 1 Mi float32 = 4 MiB, small enough to stay in cache so that
# the divide / round / clamp / convert passes do not each go to main memory.
_CHUNK = 1 << 20


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

    One min/max reduction per row (channel, group or the whole tensor), then a single pass in
    cache-sized float32 chunks: divide by the scale, round half to even, add the zero point,
    clamp, convert. Deterministic: the same input gives the same bytes.

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
    x2 = x.reshape(rows, length)
    if numel:
        # two reductions beat torch.aminmax by ~4x on CPU (torch 2.x); both propagate NaN
        mn = torch.amin(x2, dim=1, keepdim=True)
        mx = torch.amax(x2, dim=1, keepdim=True)
        if not bool(torch.isfinite(mn).all() and torch.isfinite(mx).all()):
            raise EntryError(
                f"entry {label!r}: contains NaN or Inf values; cannot quantise "
                "(fix the weights or skip= the entry)"
            )
        scale_rows, zero_rows = _scales(mn, mx, cfg)
    else:
        scale_rows = torch.ones(rows, 1, dtype=torch.float32, device=x.device)
        zero_rows = None if cfg.symmetric else torch.zeros_like(scale_rows)
    packed = cfg.bits == 4
    if packed:
        out_dtype, offset = torch.uint8, (8 if cfg.symmetric else 0)
    else:
        out_dtype, offset = (torch.int8 if cfg.symmetric else torch.uint8), 0
    out = torch.empty(shape, dtype=out_dtype, device=x.device)
    _quantize_rows(x2, scale_rows, zero_rows, out.view(rows, length), cfg.qmin, cfg.qmax, offset)
    if packed:
        # values already carry the +8 offset, so pack them as unsigned nibbles
        out = pack_int4(out, signed=False)
    sshape = _scale_shape(cfg, shape)
    scale = scale_rows.reshape(sshape)
    zero = None if zero_rows is None else zero_rows.to(torch.uint8).reshape(sshape)
    return QuantizedTensor(out, scale, zero, shape, t.dtype, cfg)


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
