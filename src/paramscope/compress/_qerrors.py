"""Quantisation error metrics: SQNR, max abs error, relative L2 and cosine similarity.

:func:`error_sums` accumulates the sums the metrics follow from (in bounded memory, chunk by
chunk); :class:`ErrorSums` adds up across tensors, so a streaming quantiser can report a total
over all tensors as one vector; :func:`error_stats` gives the four metrics of one tensor.

Example:
    >>> import torch
    >>> error_stats(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0]))["cosine"]
    1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import ShapeMismatchError

if TYPE_CHECKING:
    import torch

__all__ = ["ErrorSums", "error_stats", "error_sums"]


# Elements per float64 chunk in error statistics (bounded memory).
_STATS_CHUNK = 1 << 22  # elements per working chunk (16 MiB of float32)


@dataclass
class ErrorSums:
    """Sums from which error statistics follow; adding two gives the stats of both together.

    Attributes:
        signal: Σ w².
        noise: Σ (w − ŵ)².
        dot: Σ w·ŵ.
        restored: Σ ŵ².
        max_abs_error: max |w − ŵ|.
        count: elements.
    """

    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    restored: float = 0.0
    max_abs_error: float = 0.0
    count: int = 0

    def __add__(self, other: ErrorSums) -> ErrorSums:
        return ErrorSums(
            self.signal + other.signal,
            self.noise + other.noise,
            self.dot + other.dot,
            self.restored + other.restored,
            max(self.max_abs_error, other.max_abs_error),
            self.count + other.count,
        )

    def stats(self) -> dict[str, float]:
        """``sqnr_db``, ``max_abs_error``, ``rel_l2`` and ``cosine`` from the sums.

        ``sqnr_db`` is +inf when the restoration is exact; ``cosine`` of two zero vectors is 1.

        Returns:
            The four statistics.

        Example:
            >>> ErrorSums(signal=100.0, noise=1.0, dot=100.0, restored=100.0).stats()["sqnr_db"]
            20.0
        """
        if self.noise == 0.0:
            sqnr = math.inf
        elif self.signal == 0.0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(self.signal / self.noise)
        if self.signal > 0.0:
            rel = math.sqrt(self.noise / self.signal)
        else:
            rel = 0.0 if self.noise == 0.0 else math.inf
        denom = math.sqrt(self.signal * self.restored)
        if denom > 0.0:
            cos = self.dot / denom
        else:
            cos = 1.0 if self.signal == self.restored == 0.0 else 0.0
        return {
            "sqnr_db": sqnr,
            "max_abs_error": float(self.max_abs_error),
            "rel_l2": rel,
            "cosine": cos,
        }


def error_sums(original: torch.Tensor, restored: torch.Tensor) -> ErrorSums:
    """Accumulate :class:`ErrorSums` in float64, 16 Mi elements at a time (bounded memory).

    Args:
        original: the float tensor before quantisation.
        restored: the dequantised tensor, same number of elements.

    Returns:
        The sums.

    Raises:
        ShapeMismatchError: the element counts differ.

    Example:
        >>> import torch
        >>> error_sums(torch.ones(3), torch.ones(3)).noise
        0.0
    """
    import torch

    if original.numel() != restored.numel():
        raise ShapeMismatchError(
            f"error statistics: original has {original.numel()} elements, "
            f"restored has {restored.numel()}"
        )
    # float32 products summed in 64Ki-element blocks, the block sums accumulated in float64:
    # 2x faster than float64 throughout, relative error ~1e-5 (a 1e-4 dB change in SQNR).
    a = original.detach().reshape(-1)
    b = restored.detach().reshape(-1).to(device=a.device)
    acc = ErrorSums(count=a.numel())
    block = 1 << 16
    for s in range(0, a.numel(), _STATS_CHUNK):
        o = a[s : s + _STATS_CHUNK].to(torch.float32)
        r = b[s : s + _STATS_CHUNK].to(torch.float32)
        m = o.numel() // block * block
        parts = [(o[:m].view(-1, block), r[:m].view(-1, block))] if m else []
        if m < o.numel():
            parts.append((o[m:].view(1, -1), r[m:].view(1, -1)))
        for oo, rr in parts:
            acc.signal += float(torch.einsum("ij,ij->i", oo, oo).double().sum())
            acc.dot += float(torch.einsum("ij,ij->i", oo, rr).double().sum())
            acc.restored += float(torch.einsum("ij,ij->i", rr, rr).double().sum())
            d = oo - rr
            acc.noise += float(torch.einsum("ij,ij->i", d, d).double().sum())
            acc.max_abs_error = max(acc.max_abs_error, float(d.abs_().max()))
    return acc


def error_stats(original: torch.Tensor, restored: torch.Tensor) -> dict[str, float]:
    """Quantisation error statistics of one tensor.

    ``sqnr_db = 10·log10(Σw² / Σ(w−ŵ)²)`` (+inf when exact), ``max_abs_error = max|w−ŵ|``,
    ``rel_l2 = ‖w−ŵ‖ / ‖w‖``, ``cosine = w·ŵ / (‖w‖‖ŵ‖)``, all in float64, chunked.

    Args:
        original: the tensor before quantisation.
        restored: the dequantised tensor.

    Returns:
        ``{"sqnr_db", "max_abs_error", "rel_l2", "cosine"}``.

    Example:
        >>> import torch
        >>> error_stats(torch.ones(4), torch.ones(4))["sqnr_db"]
        inf
    """
    return error_sums(original, restored).stats()
