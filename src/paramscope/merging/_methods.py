"""The merge methods on one tensor, element-wise in chunks, with the report's statistics.

Every method is split into what needs the whole tensor (slerp's norms and angle, the
magnitude threshold of a TIES trim, DARE's L1 rescale factor), computed first in a streaming
pass, and an element-wise rule applied chunk by chunk (:data:`CHUNK` elements). The chunk's
result is written over the first input's memory once its statistics are taken, so a tensor
costs its inputs and a few chunks of scratch, never a stack of all inputs (mergekit's way).

Conventions are mergekit's (``merge_methods/linear.py``, ``slerp.py``,
``generalized_task_arithmetic.py``, ``sparsify.py``), with one deliberate difference, named
where it is made: DARE rescales kept deltas by ``1 / density`` (the DARE paper, Yu et al.
2023), where mergekit matches the L1 norm of the dropped delta (``rescale="l1"`` here).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHUNK",
    "DELTA_METHODS",
    "METHODS",
    "Stats",
    "merge_tensor",
    "slerp_coefficients",
]

#: Elements per chunk of the element-wise pass (4 MiB of float32 per temporary).
CHUNK = 1 << 20

#: The methods, and those that work on deltas from a base.
METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties")
DELTA_METHODS = frozenset({"task_arithmetic", "ties", "dare_linear", "dare_ties"})


@dataclass
class Stats:
    """Sums over one tensor from which the report's numbers are exact ratios.

    Attributes:
        dot: per input model, ``<x_i, r>`` (``r`` the result).
        sq: per input model, ``‖x_i‖²``.
        rr: ``‖r‖²``.
        ddot: per delta source, ``<d_i, m>`` (``m = r − base``).
        dsq: per delta source, ``‖d_i‖²``.
        mm: ``‖m‖²``.
        nonzero: nonzero delta elements before trimming / dropping (all sources).
        kept: nonzero delta elements kept.
        conflict: elements whose kept deltas have both signs.
        active: elements with at least one nonzero kept delta.
        lerp: slerp fell back to linear interpolation (near-parallel inputs).
    """

    dot: list[float] = field(default_factory=list)
    sq: list[float] = field(default_factory=list)
    rr: float = 0.0
    ddot: list[float] = field(default_factory=list)
    dsq: list[float] = field(default_factory=list)
    mm: float = 0.0
    nonzero: int = 0
    kept: int = 0
    conflict: int = 0
    active: int = 0
    lerp: bool = False

    def add(self, other: Stats) -> None:
        """Add another tensor's sums to these (for the totals).

        Args:
            other: the sums of one more tensor.
        """
        if not self.dot:
            self.dot, self.sq = [0.0] * len(other.dot), [0.0] * len(other.sq)
        if not self.ddot and other.ddot:
            self.ddot, self.dsq = [0.0] * len(other.ddot), [0.0] * len(other.dsq)
        for i, v in enumerate(other.dot):
            self.dot[i] += v
            self.sq[i] += other.sq[i]
        for i, v in enumerate(other.ddot):
            self.ddot[i] += v
            self.dsq[i] += other.dsq[i]
        self.rr += other.rr
        self.mm += other.mm
        self.nonzero += other.nonzero
        self.kept += other.kept
        self.conflict += other.conflict
        self.active += other.active


def _cos(dot: float, a: float, b: float) -> float | None:
    return dot / math.sqrt(a * b) if a > 0 and b > 0 else None


def numbers(s: Stats, *, deltas: bool, consensus: bool) -> dict[str, object]:
    """The report's numbers from a :class:`Stats` (one tensor's or the totals).

    Args:
        s: the sums.
        deltas: the method works on deltas from a base (delta cosines, density kept).
        consensus: the method elects signs (sign-conflict fraction).

    Returns:
        ``cosine`` (per input), ``delta_cosine`` (per delta source, or ``None``),
        ``sign_conflict``, ``density_kept`` and ``norm_ratio`` (``‖r‖`` over the mean of the
        inputs' norms).

    Example:
        >>> d = numbers(Stats(dot=[1.0, 0.0], sq=[1.0, 1.0], rr=1.0), deltas=False, consensus=False)
        >>> d["cosine"], d["delta_cosine"], d["norm_ratio"]
        ([1.0, 0.0], None, 1.0)
    """
    norms = [math.sqrt(v) for v in s.sq]
    mean = sum(norms) / len(norms) if norms else 0.0
    return {
        "cosine": [_cos(d, q, s.rr) for d, q in zip(s.dot, s.sq, strict=True)],
        "delta_cosine": (
            [_cos(d, q, s.mm) for d, q in zip(s.ddot, s.dsq, strict=True)] if deltas else None
        ),
        "sign_conflict": (s.conflict / s.active if s.active else 0.0) if consensus else None,
        "density_kept": (s.kept / s.nonzero if s.nonzero else 1.0) if deltas else None,
        "norm_ratio": math.sqrt(s.rr) / mean if mean > 0 else None,
    }


def _spans(n: int) -> range:
    return range(0, n, CHUNK)


def slerp_coefficients(
    v0: torch.Tensor, v1: torch.Tensor, t: float, dot_threshold: float = 0.9995, eps: float = 1e-8
) -> tuple[float, float, bool]:
    """Spherical interpolation's two coefficients for whole tensors (mergekit's ``slerp``).

    The cosine of the angle between the flattened tensors is summed chunk by chunk from the
    normalised values; when ``|cos| > dot_threshold`` (near-parallel or antipodal) the
    coefficients are linear interpolation's ``(1 − t, t)``.

    Args:
        v0: the tensor at ``t = 0``.
        v1: the tensor at ``t = 1``.
        t: the interpolation factor.
        dot_threshold: the linear fallback's threshold.
        eps: norms below this count as 1 (zero tensors).

    Returns:
        ``(c0, c1, linear)``: ``result = c0·v0 + c1·v1``, and whether the fallback was taken.

    Example:
        >>> import torch
        >>> x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
        >>> c0, c1, lin = slerp_coefficients(x, y, 0.5)
        >>> round(c0, 6), round(c1, 6), lin
        (0.707107, 0.707107, False)
    """
    import torch

    a, b = v0.reshape(-1), v1.reshape(-1)
    na = math.sqrt(
        sum(float(torch.dot(a[i : i + CHUNK], a[i : i + CHUNK])) for i in _spans(a.numel()))
    )
    nb = math.sqrt(
        sum(float(torch.dot(b[i : i + CHUNK], b[i : i + CHUNK])) for i in _spans(b.numel()))
    )
    na = na if na > eps else 1.0
    nb = nb if nb > eps else 1.0
    dot = 0.0
    for i in _spans(a.numel()):
        dot += float(torch.dot(a[i : i + CHUNK] / na, b[i : i + CHUNK] / nb))
    dot = min(1.0, max(-1.0, dot))
    if abs(dot) > dot_threshold:
        return 1.0 - t, t, True
    theta = math.acos(dot)
    s = math.sin(theta)
    return math.sin((1.0 - t) * theta) / s, math.sin(t * theta) / s, False


def _generator(seed: int, name: str, index: int) -> torch.Generator:
    """DARE's drop mask generator for one (tensor, source): independent of merge order."""
    import torch

    key = zlib.crc32(f"{index}:{name}".encode())
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + key) % (1 << 63))


def _drop_mask(n: int, density: float, g: torch.Generator) -> torch.Tensor:
    import torch

    return torch.rand(n, generator=g) < density


def merge_tensor(
    method: str,
    name: str,
    xs: list[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weights: Sequence[float],
    t: float = 0.5,
    density: Sequence[float] = (),
    normalize: bool = False,
    scale: float = 1.0,
    seed: int = 0,
    rescale: str | None = "density",
) -> tuple[torch.Tensor, Stats]:
    """Merge one tensor; the inputs' memory is reused (they are changed in place).

    Args:
        method: one of :data:`METHODS`.
        name: the tensor's name (seeds DARE's masks).
        xs: the sources' values (not the base), float32/float64, same shape; overwritten.
        base: the base's values for delta methods, overwritten by the result; for
            ``linear``, a model that takes no part but is reported on (its cosine to the
            result); ``None`` for slerp (whose first model is ``xs[0]``).
        weights: one per source.
        t: slerp's factor.
        density: per source, the fraction of the delta kept (TIES, DARE).
        normalize: divide by the sum of weights (TIES: of the agreeing sources).
        scale: multiply the merged delta (mergekit's ``lambda``).
        seed: DARE's seed.
        rescale: DARE's rescale of kept deltas: ``"density"`` (``1/density``), ``"l1"``
            (mergekit: match the L1 norm) or ``None``.

    Returns:
        ``(result, stats)``; ``result`` is one of the inputs' buffers.

    Example:
        >>> import torch
        >>> r, s = merge_tensor("linear", "w", [torch.tensor([1.0, 3.0]), torch.tensor([3.0, 5.0])],
        ...                     None, weights=[1.0, 1.0], normalize=True)
        >>> r.tolist()
        [2.0, 4.0]
    """
    import torch

    models = ([base] if base is not None else []) + list(xs)
    st = Stats(dot=[0.0] * len(models), sq=[0.0] * len(models))
    n = models[0].numel()
    flat = [m.reshape(-1) for m in models]
    if method == "linear":
        ws = torch.tensor(list(weights), dtype=xs[0].dtype)
        denom = ws.sum() if normalize else None
        out = flat[-len(xs)]
        for i in _spans(n):
            r = torch.zeros_like(out[i : i + CHUNK])
            for x, w in zip(flat[-len(xs) :], ws, strict=True):
                r.addcmul_(x[i : i + CHUNK], w)
            if denom is not None:
                r.div_(denom)
            _model_sums(st, [f[i : i + CHUNK] for f in flat], r)
            out[i : i + CHUNK] = r
        return out.view(models[-len(xs)].shape), st
    if method == "slerp":
        v0, v1 = models
        c0, c1, st.lerp = slerp_coefficients(v0, v1, t)
        a, b = flat
        for i in _spans(n):
            r = a[i : i + CHUNK] * c0
            r.add_(b[i : i + CHUNK], alpha=c1)
            _model_sums(st, [a[i : i + CHUNK], b[i : i + CHUNK]], r)
            a[i : i + CHUNK] = r
        return a.view(v0.shape), st
    assert base is not None and method in DELTA_METHODS
    bflat = flat[0]
    ds = flat[1:]
    for d in ds:
        d.sub_(bflat)  # every source becomes its delta, in place
    st.ddot, st.dsq = [0.0] * len(ds), [0.0] * len(ds)
    consensus = method in ("ties", "dare_ties")
    trim = method == "ties"
    drop = method.startswith("dare")
    thr: list[tuple[float, int] | None] = [None] * len(ds)
    factor = [1.0] * len(ds)
    if trim:
        from ..compress._prune import _threshold_for_k, threshold_mask

        for k, d in enumerate(ds):
            if density[k] < 1:
                keep = max(1, int(density[k] * n)) if density[k] > 0 else 0
                # fed in chunks, so that its scratch (magnitudes, bin indices) stays small
                chunks = lambda d=d: (d[i : i + CHUNK] for i in _spans(n))  # noqa: E731
                thr[k] = _threshold_for_k(chunks, n - keep, n)
    if drop:
        for k, d in enumerate(ds):
            if density[k] >= 1:
                continue
            if rescale == "density":
                factor[k] = 1.0 / density[k] if density[k] > 0 else 0.0
            elif rescale == "l1":
                g = _generator(seed, name, k)
                before = after = 0.0
                for i in _spans(n):
                    c = d[i : i + CHUNK]
                    keep = _drop_mask(c.numel(), density[k], g)
                    before += float(c.abs().sum())
                    after += float((c.abs() * keep).sum())
                factor[k] = before / after if before >= 1e-7 and after >= 1e-7 else 1.0
    gens = [_generator(seed, name, k) for k in range(len(ds))] if drop else []
    ties_left = [x[1] if x is not None else 0 for x in thr]
    ws = [float(w) for w in weights]
    for i in _spans(n):
        b = bflat[i : i + CHUNK]
        kept = []
        for k, d in enumerate(ds):
            c = d[i : i + CHUNK]
            view = c
            st.nonzero += int(torch.count_nonzero(c))
            if thr[k] is not None:
                mask, used = threshold_mask(c, thr[k][0], ties_left[k])  # type: ignore[index]
                ties_left[k] -= used
                c = c * mask
            elif drop and density[k] < 1:
                c = c * _drop_mask(c.numel(), density[k], gens[k])
                if factor[k] != 1.0:
                    c.mul_(factor[k])
            st.kept += int(torch.count_nonzero(c))
            kept.append(c * ws[k] if c is view else c.mul_(ws[k]))
        pos = torch.zeros(b.shape, dtype=torch.bool)
        neg = torch.zeros(b.shape, dtype=torch.bool)
        for c in kept:
            pos |= c > 0
            neg |= c < 0
        st.conflict += int((pos & neg).sum())
        st.active += int((pos | neg).sum())
        del pos, neg
        if consensus:
            s = torch.zeros_like(b)
            for c in kept:
                s.add_(c)
            major = s >= 0
            del s
            mixed = torch.zeros_like(b)
            divisor = torch.zeros_like(b)
            for c, w in zip(kept, ws, strict=True):
                agree = torch.where(major, c > 0, c < 0)
                mixed.add_(c * agree)
                divisor.add_(agree, alpha=w)
            divisor.masked_fill_(divisor == 0, 1)
        else:
            mixed = torch.zeros_like(b)
            for c in kept:
                mixed.add_(c)
            total = sum(ws)
            divisor = torch.tensor(total if abs(total) >= 1e-8 else 1.0, dtype=b.dtype)
        del kept
        if normalize:
            mixed.div_(divisor)
        if scale != 1:
            mixed.mul_(scale)
        r = b + mixed
        _model_sums(st, [b] + [b + d[i : i + CHUNK] for d in ds], r)
        st.mm += float(torch.dot(mixed, mixed))
        for k, d in enumerate(ds):
            c = d[i : i + CHUNK]
            st.ddot[k] += float(torch.dot(c, mixed))
            st.dsq[k] += float(torch.dot(c, c))
        b.copy_(r)
    return bflat.view(base.shape), st


def _model_sums(st: Stats, xs: list[torch.Tensor], r: torch.Tensor) -> None:
    import torch

    for k, x in enumerate(xs):
        st.dot[k] += float(torch.dot(x, r))
        st.sq[k] += float(torch.dot(x, x))
    st.rr += float(torch.dot(r, r))
