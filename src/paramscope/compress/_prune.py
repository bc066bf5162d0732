"""Magnitude pruning: exact counts, bounded memory, modules, ParamDicts and plain dicts.

Pruning sets the chosen elements of a tensor to zero (or, with ``as_masks=True``, attaches a
``weight_mask`` the way ``torch.nn.utils.prune`` does). Which elements:

* **unstructured** (``structure=None``) — the ``round(amount · numel)`` elements with the
  smallest ``|w|`` (``method="l1"``) or a uniformly random subset of that size
  (``method="random"``). Ties are broken deterministically: among equal magnitudes the element
  that comes first in flat (row-major) order is pruned first. Exactly that many elements are
  pruned; the tensor then has ``max(zeros before, k)`` zeros, since zeros are the smallest
  magnitudes and get pruned first;
* ``structure="rows"`` — whole slices along dim 0 (output features / output channels), ranked
  by the L1 norm of the slice; ``structure="channels"`` — whole slices along dim 1 (input
  features / input channels). Ties: the lower index goes first;
* ``structure="n:m"`` — in every group of ``m`` consecutive elements along the last dim the
  ``n`` largest ``|w|`` are kept (the lower index wins a tie); the amount is ``1 − n/m``.

**Global scope** (``scope="global"``, the default) uses one magnitude threshold over all
selected tensors and prunes exactly ``round(amount · total)`` elements: everything below the
threshold plus the first elements equal to it, in iteration order (tensor order, then flat
order). :func:`global_threshold` finds it in a few passes with memory that does not grow with
the total (see there). Structured ``rows`` / ``channels`` pruning with global scope is refused
(slices of different tensors have different sizes, so no single ranking gives an exact
amount); use ``scope="layer"``. ``n:m`` ignores the scope.

**What is pruned by default** — parameters with two or more dimensions (weights of linear,
conv and embedding layers). Biases, norm weights and other 1-D tensors, non-floating tensors
and every buffer are skipped: they hold a tiny share of the elements, so pruning them saves
almost nothing, and zeroing a norm scale or a running variance often breaks the model.

Magnitudes are computed in float32 (float64 for float64 tensors) in chunks of
:data:`CHUNK` elements, so float16 and bfloat16 tensors are handled exactly and the working
memory for one tensor stays a bool mask plus one chunk.

torch and numpy are imported inside the functions that need them, never at module import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._enums import Role, StrEnum
from .._errors import ArgumentError, ArgumentTypeError, EntryError, TargetError
from .._names import Pattern, compile_pattern
from ._notes import left_note

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = [
    "BINS",
    "CHUNK",
    "GATHER_LIMIT",
    "Method",
    "Scope",
    "SparsityReport",
    "Structure",
    "global_threshold",
    "keep_mask",
    "prune",
    "random_counts",
    "should_prune",
    "threshold_mask",
]

CHUNK = 1 << 20
"""Elements per chunk when magnitudes are computed (1 Mi: 4 MiB of float32; the histogram
of one chunk needs about a dozen temporaries of that size, float64 ones twice it)."""

BINS = 65536
"""Histogram bins per pass of :func:`global_threshold`."""

GATHER_LIMIT = 1 << 22
"""At most this many values are gathered and sorted in the last pass of
:func:`global_threshold`; a fuller bin is refined by another histogram pass instead."""

_MAX_REFINE = 64


class Method(StrEnum):
    """How elements are ranked: by magnitude or at random."""

    L1 = "l1"
    RANDOM = "random"


class Scope(StrEnum):
    """One threshold over all tensors (``global``) or the amount per tensor (``layer``)."""

    GLOBAL = "global"
    LAYER = "layer"


class Structure(StrEnum):
    """What is pruned as one unit: rows (dim 0), channels (dim 1) or n of every m elements."""

    ROWS = "rows"
    CHANNELS = "channels"
    NM = "n:m"


# ---------------------------------------------------------------------------------- validation
def _option(enum: type[StrEnum], option: str, value: object) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(e.value) for e in enum)
        raise ArgumentError(f"prune: {option}={value!r}: expected one of {allowed}") from None


def _structure(value: object) -> Structure | None:
    return None if value is None else _option(Structure, "structure", value)


def _check_nm(n: object, m: object) -> tuple[int, int]:
    for opt, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ArgumentTypeError(f"prune: {opt}={v!r}: expected a positive int")
        if v < 1:
            raise ArgumentError(f"prune: {opt}={v!r}: expected a positive int")
    assert isinstance(n, int) and isinstance(m, int)
    if n >= m:
        raise ArgumentError(
            f"prune: n={n}, m={m}: structure 'n:m' keeps n of every m elements, so it needs "
            "n < m (e.g. n=2, m=4)"
        )
    return n, m


def _check_amount(amount: object, structure: Structure | None, n: int, m: int) -> float:
    if structure is Structure.NM:
        implied = 1 - n / m
        if amount is not None and (
            not isinstance(amount, (int, float)) or abs(float(amount) - implied) > 1e-9
        ):
            raise ArgumentError(
                f"prune: amount={amount!r}: structure 'n:m' implies amount 1 - n/m = "
                f"{implied:g} (n={n}, m={m}); pass amount=None (or {implied:g})"
            )
        return implied
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ArgumentTypeError(
            f"prune: amount={amount!r}: expected a number in [0, 1), the fraction to prune"
        )
    a = float(amount)
    if not (0.0 <= a < 1.0) or math.isnan(a):
        raise ArgumentError(
            f"prune: amount={amount!r}: expected 0 <= amount < 1, the fraction to prune "
            "(e.g. 0.5 for half)"
            + ("; amount 1 would zero every selected weight" if a >= 1.0 else "")
        )
    return a


def _count(amount: float, numel: int) -> int:
    return round(amount * numel)


# ---------------------------------------------------------------------------------- magnitudes
def _mag_dtype(t: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _chunks(t: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, |chunk|)`` over the flattened tensor, magnitudes in float32/float64."""
    flat = t.detach().reshape(-1)
    dtype = _mag_dtype(t)
    for start in range(0, flat.numel(), CHUNK):
        yield start, flat[start : start + CHUNK].to(dtype).abs()


def _magnitudes(make_iter: Callable[[], Iterable[torch.Tensor]]) -> Iterator[torch.Tensor]:
    """The ``|chunk|`` of every tensor of one fresh pass, holding no tensor while the next is
    fetched (a loop variable would: with a read-ahead source, two tensors at once)."""
    it = iter(make_iter())
    while True:
        t = next(it, None)
        if t is None:
            return
        chunks = _chunks(t)
        del t
        for _, mags in chunks:
            yield mags


def _exact_cut(values: torch.Tensor, k: int) -> tuple[float, int]:
    """The k-th smallest of a 1-D tensor and how many equal to it are among the k smallest."""
    import torch

    v = torch.kthvalue(values.cpu() if values.device.type == "mps" else values, k).values
    less = int((values < v).sum())
    return float(v), k - less


def threshold_mask(t: torch.Tensor, threshold: float, ties: int = 0) -> tuple[torch.Tensor, int]:
    """Keep mask for a magnitude threshold: prune ``|w| < threshold`` and the first ``ties``
    elements with ``|w| == threshold`` (flat order).

    This is the per-tensor step of global pruning: the caller carries ``ties`` from one
    tensor to the next (``ties -= used``) so that the total pruned count is exact.

    Args:
        t: the tensor (any floating dtype, any device).
        threshold: the magnitude threshold (from :func:`global_threshold`).
        ties: how many elements equal to the threshold may still be pruned.

    Returns:
        ``(keep, used)``: a bool tensor of ``t``'s shape (True = keep) and how many elements
        equal to the threshold it prunes.

    Example:
        >>> import torch
        >>> keep, used = threshold_mask(torch.tensor([0.1, -0.5, 0.5, 2.0]), 0.5, ties=1)
        >>> keep.tolist(), used
        ([False, False, True, True], 1)
    """
    import torch

    keep = torch.empty(t.numel(), dtype=torch.bool, device=t.device)
    used = 0
    for start, mags in _chunks(t):
        thr = threshold
        if mags.dtype == torch.float32 and float(torch.tensor(thr, dtype=torch.float32)) != thr:
            mags = mags.double()  # a float64 threshold must not be rounded to float32
        k = mags >= thr  # equal to the threshold: kept unless taken as a tie below
        if ties - used > 0:
            take = torch.nonzero(mags == thr).flatten()[: ties - used]
            k[take] = False
            used += int(take.numel())
        keep[start : start + mags.numel()] = k
    return keep.reshape(t.shape), used


# ---------------------------------------------------------------------------------- one tensor
def _random_scores(
    shape: Sequence[int] | torch.Size, t: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    import torch

    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(tuple(shape), generator=generator, device=device).to(t.device)


def _unstructured(
    t: torch.Tensor, k: int, method: Method, generator: torch.Generator | None
) -> torch.Tensor:
    import torch

    if k == 0:
        return torch.ones(t.shape, dtype=torch.bool, device=t.device)
    if method is Method.RANDOM:
        scores = _random_scores(t.shape, t, generator)
        thr, ties = _exact_cut(scores.reshape(-1), k)
        return threshold_mask(scores, thr, ties)[0]
    if t.numel() <= GATHER_LIMIT:
        mags = t.detach().reshape(-1).to(_mag_dtype(t)).abs()
        thr, ties = _exact_cut(mags, k)
    else:  # bounded memory for big tensors: the multi-pass search over this one tensor
        thr, ties = _threshold_for_k(lambda: iter([t]), k)
    return threshold_mask(t, thr, ties)[0]


def _slice_scores(t: torch.Tensor, dim: int) -> torch.Tensor:
    """L1 norm of every slice along ``dim`` (0 or 1), accumulated over chunks of dim 0."""
    import torch

    dtype = _mag_dtype(t)
    size0 = t.shape[0]
    inner = max(1, t.numel() // max(1, size0))
    step = max(1, CHUNK // inner)
    out = torch.zeros(t.shape[dim], dtype=dtype, device=t.device)
    other = [d for d in range(1, t.ndim) if d != dim]
    for i in range(0, size0, step):
        part = t.detach()[i : i + step].to(dtype).abs()
        if dim == 0:
            out[i : i + step] = part.reshape(part.shape[0], -1).sum(1)
        else:
            out += part.sum(dim=[0, *other]) if other else part.sum(0)
    return out


def _structured(
    t: torch.Tensor, amount: float, dim: int, method: Method, generator: torch.Generator | None
) -> torch.Tensor:
    import torch

    size = t.shape[dim]
    k = _count(amount, size)
    if method is Method.RANDOM:
        scores = _random_scores((size,), t, generator)
    else:
        scores = _slice_scores(t, dim)
    slice_keep = torch.ones(size, dtype=torch.bool, device=t.device)
    if k:
        order = torch.sort(scores, stable=True).indices[:k]
        slice_keep[order] = False
    view = [1] * t.ndim
    view[dim] = size
    return slice_keep.reshape(view).expand(t.shape).clone()


def _n_of_m(
    t: torch.Tensor, n: int, m: int, method: Method, generator: torch.Generator | None
) -> torch.Tensor:
    import torch

    if t.ndim == 0 or t.shape[-1] % m != 0:
        raise EntryError(
            f"prune: structure 'n:m' needs the last dimension divisible by m={m}, found a "
            f"tensor of shape {tuple(t.shape)}; choose another m, or skip= the tensor"
        )
    groups = t.numel() // m
    keep = torch.zeros((groups, m), dtype=torch.bool, device=t.device)
    flat = t.detach().reshape(groups, m)
    step = max(1, CHUNK // m)
    for g in range(0, groups, step):
        part = flat[g : g + step]
        if method is Method.RANDOM:
            scores = _random_scores(part.shape, t, generator)
        else:
            scores = part.to(_mag_dtype(t)).abs()
        top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :n]
        keep[g : g + step].scatter_(1, top, True)
    return keep.reshape(t.shape)


def keep_mask(
    t: torch.Tensor,
    amount: float | None,
    *,
    method: str = "l1",
    structure: str | None = None,
    n: int = 2,
    m: int = 4,
    threshold: float | None = None,
    ties: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which elements of ONE tensor survive pruning (True = keep).

    Args:
        t: the tensor (float32, float16, bfloat16, float64; any device). It is only read.
        amount: fraction to prune, ``0 <= amount < 1``; for ``n:m`` give ``None`` (or exactly
            ``1 - n/m``). Ignored when ``threshold`` is given.
        method: ``"l1"`` (smallest ``|w|`` first) or ``"random"`` (uniform, from
            ``generator``).
        structure: ``None`` (elements), ``"rows"`` (dim 0 slices), ``"channels"`` (dim 1
            slices) or ``"n:m"`` (keep ``n`` of every ``m`` along the last dim).
        n: kept per group, for ``n:m``.
        m: group size, for ``n:m``.
        threshold: a global magnitude threshold (from :func:`global_threshold`): keep
            ``|w| > threshold``; unstructured ``l1`` only.
        ties: with ``threshold``, also prune the first ``ties`` elements equal to it (flat
            order). Use :func:`threshold_mask` to learn how many were used.
        generator: the random source for ``method="random"`` (deterministic for a seed).

    Returns:
        A bool tensor with ``t``'s shape and device.

    Raises:
        ArgumentError: a bad option (named, with the value given and the values accepted).
        EntryError: ``rows`` / ``channels`` on a tensor with fewer than 2 dims, ``n:m`` on a
            last dim not divisible by ``m``.

    Example:
        >>> import torch
        >>> keep_mask(torch.tensor([[0.1, -3.0], [2.0, 0.2]]), 0.5).tolist()
        [[False, True], [True, False]]
        >>> keep_mask(torch.tensor([[1.0, 4.0, 3.0, 2.0]]), None, structure="n:m").tolist()
        [[False, True, True, False]]
    """
    meth: Method = _option(Method, "method", method)
    struct = _structure(structure)
    if struct is Structure.NM:
        n, m = _check_nm(n, m)
        _check_amount(amount, struct, n, m)
        return _n_of_m(t, n, m, meth, generator)
    if threshold is not None:
        if struct is not None or meth is not Method.L1:
            raise ArgumentError(
                f"prune: threshold={threshold!r} applies to unstructured 'l1' pruning, found "
                f"method={meth.value!r}, structure={structure!r}; drop threshold= or use "
                "method='l1', structure=None"
            )
        return threshold_mask(t, float(threshold), ties)[0]
    a = _check_amount(amount, struct, n, m)
    if struct is None:
        return _unstructured(t, _count(a, t.numel()), meth, generator)
    if t.ndim < 2:
        raise EntryError(
            f"prune: structure {struct.value!r} removes slices of a tensor with at least 2 "
            f"dimensions, found shape {tuple(t.shape)}; skip= the tensor"
        )
    return _structured(t, a, 0 if struct is Structure.ROWS else 1, meth, generator)


# ---------------------------------------------------------------------------------- global cut
def global_threshold(
    make_iter: Callable[[], Iterable[torch.Tensor]], amount: float, total: int
) -> tuple[float, int]:
    """The exact global magnitude threshold over many tensors, with bounded memory.

    Pruning every ``|w| < threshold`` plus the first ``ties`` elements with ``|w| ==
    threshold`` (in iteration order: tensor by tensor, flat order inside) prunes exactly
    ``round(amount · total)`` elements — see :func:`threshold_mask`.

    Algorithm (each pass calls ``make_iter()`` once and streams the tensors):

    1. min and max of ``|w|``, the element count (checked against ``total``) and a NaN check;
    2. a histogram of :data:`BINS` equal-width bins over the current range, with the smallest
       and largest value in every bin; the bin that holds the k-th smallest value becomes the
       new range (exactly its members: the bin index is monotone in ``|w|``);
    3. repeat 2 while that bin holds more than :data:`GATHER_LIMIT` values of more than one
       magnitude (each pass shrinks the range 65536-fold; float32 needs a handful of passes
       even in the worst case); then gather the bin's values, sort them (``kthvalue``) and read
       off the k-th smallest. A bin of one repeated magnitude needs no gathering.

    Usually three passes. Peak memory: one tensor from the iterator, one chunk of magnitudes
    and bin indices (:data:`CHUNK` elements, ~48 MiB), the histogram (``BINS`` counts, mins,
    maxes) and at most :data:`GATHER_LIMIT` gathered values (16 MiB float32) — never anything
    proportional to ``total``.

    Args:
        make_iter: returns a fresh iterator over the tensors (signed values, ``abs`` not yet
            taken); called once per pass, so at least twice unless nothing is pruned.
        amount: fraction to prune, ``0 <= amount < 1``.
        total: the number of elements the iterator yields in all.

    Returns:
        ``(threshold, ties)``. ``(0.0, 0)`` when nothing is to be pruned.

    Raises:
        ArgumentError: a bad amount, a count that does not match ``total``.
        EntryError: NaN values.

    Example:
        >>> import torch
        >>> ts = [torch.tensor([0.3, -0.1]), torch.tensor([0.2, 5.0, -0.2])]
        >>> global_threshold(lambda: iter(ts), 0.6, 5)
        (0.20000000298023224, 2)
    """
    a = _check_amount(amount, None, 2, 4)
    return _threshold_for_k(make_iter, _count(a, total), total)


def _threshold_for_k(
    make_iter: Callable[[], Iterable[torch.Tensor]], k: int, total: int | None = None
) -> tuple[float, int]:
    import torch

    if k == 0:
        return 0.0, 0
    # pass 1: range, count, NaN check
    lo, hi, seen = math.inf, -math.inf, 0
    for mags in _magnitudes(make_iter):
        if mags.numel() == 0:
            continue
        if bool(torch.isnan(mags).any()):
            raise EntryError(
                "prune: found NaN values, which have no magnitude to rank; fix the "
                "weights, or skip= the tensors that hold them"
            )
        lo = min(lo, float(mags.min()))
        hi = max(hi, float(mags.max()))
        seen += mags.numel()
    if total is not None and seen != total:
        raise ArgumentError(
            f"prune: total={total}, but the tensors hold {seen} elements; pass their count"
        )
    if k > seen:
        raise ArgumentError(f"prune: cannot prune {k} of {seen} elements")
    below = 0  # elements with |w| < lo: all of them are among the k smallest
    for _ in range(_MAX_REFINE):
        if lo == hi:  # one magnitude left in range: the rest of the cut are ties
            return lo, k - below
        counts, bmin, bmax, below = _histogram(make_iter, lo, hi)
        cum = torch.cumsum(counts, 0)
        b = int(torch.searchsorted(cum, torch.tensor([k - below], dtype=cum.dtype)).item())
        below += int(cum[b - 1]) if b > 0 else 0
        lo_b, hi_b = float(bmin[b]), float(bmax[b])
        if lo_b != hi_b and (int(counts[b]) <= GATHER_LIMIT or (lo_b, hi_b) == (lo, hi)):
            return _exact_cut(_gather(make_iter, lo_b, hi_b), k - below)
        lo, hi = lo_b, hi_b
    return _exact_cut(_gather(make_iter, lo, hi), k - below)  # pragma: no cover


def _histogram(
    make_iter: Callable[[], Iterable[torch.Tensor]], lo: float, hi: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Counts, per-bin min and max of the values in ``[lo, hi]``; and the count below ``lo``."""
    import torch

    scale = BINS / (hi - lo)
    counts = torch.zeros(BINS, dtype=torch.int64)
    bmin = torch.full((BINS,), math.inf, dtype=torch.float64)
    bmax = torch.full((BINS,), -math.inf, dtype=torch.float64)
    under = 0
    for mags in _magnitudes(make_iter):
        under += int((mags < lo).sum())
        inside = mags[(mags >= lo) & (mags <= hi)].double()
        if inside.numel() == 0:
            continue
        idx = ((inside - lo) * scale).floor().long().clamp_(0, BINS - 1)
        counts += torch.bincount(idx, minlength=BINS).cpu()
        idx, inside = idx.cpu(), inside.cpu()
        bmin.scatter_reduce_(0, idx, inside, "amin")
        bmax.scatter_reduce_(0, idx, inside, "amax")
    return counts, bmin, bmax, under


def _gather(make_iter: Callable[[], Iterable[torch.Tensor]], lo: float, hi: float) -> torch.Tensor:
    import torch

    parts = []
    for mags in _magnitudes(make_iter):
        sel = mags[(mags >= lo) & (mags <= hi)]
        if sel.numel():
            parts.append(sel.double().cpu())
    return torch.cat(parts)


def random_counts(sizes: Sequence[int], amount: float, seed: int | None = None) -> list[int]:
    """How many elements of each tensor a uniformly random global subset prunes.

    The counts follow the multivariate hypergeometric distribution, so pruning that many
    uniformly random elements in each tensor is a uniformly random subset of
    ``round(amount · sum(sizes))`` elements over all of them.

    Args:
        sizes: element counts of the tensors.
        amount: fraction to prune, ``0 <= amount < 1``.
        seed: seed of the draw (``None``: fresh entropy).

    Returns:
        One count per tensor; they add up to ``round(amount · sum(sizes))``.

    Example:
        >>> sum(random_counts([100, 50, 10], 0.5, seed=0))
        80
    """
    import numpy as np

    a = _check_amount(amount, None, 2, 4)
    k = _count(a, sum(sizes))
    if not sizes:
        return []
    rng = np.random.default_rng(seed)
    drawn = rng.multivariate_hypergeometric(
        np.asarray(sizes, dtype=np.int64), k, method="marginals"
    )
    return [int(x) for x in drawn]


# ---------------------------------------------------------------------------------- selection
def should_prune(
    name: str,
    shape: Sequence[int],
    role: Role | str,
    select: Pattern | None = None,
    skip: Pattern | None = None,
) -> bool:
    """Whether an entry is pruned: parameters with ``ndim >= 2``, narrowed by patterns.

    Biases, norm weights and other 1-D tensors and all buffers are never pruned (they hold
    few elements, and zeroing a norm scale or running statistic often breaks the model).

    Args:
        name: the entry name.
        shape: its shape.
        role: ``param`` or ``buffer``.
        select: glob / ``re:`` pattern(s); when given, only matching entries (among the
            defaults) are pruned.
        skip: glob / ``re:`` pattern(s) of entries never pruned.

    Returns:
        True when the entry is pruned.

    Example:
        >>> should_prune("fc.weight", (10, 20), "param"), should_prune("fc.bias", (10,), "param")
        (True, False)
        >>> should_prune("head.weight", (10, 20), "param", skip="head.*")
        False
    """
    if Role(role) is not Role.PARAM or len(tuple(shape)) < 2:
        return False
    if select is not None and not compile_pattern(select)(name):
        return False
    return not (skip is not None and compile_pattern(skip)(name))


# ---------------------------------------------------------------------------------- report
def _row(name: str, elements: int, zeros: int) -> dict[str, Any]:
    return {
        "name": name,
        "elements": elements,
        "zeros": zeros,
        "sparsity": zeros / elements if elements else 0.0,
        "kept": elements - zeros,
    }


@dataclass
class SparsityReport:
    """Zeros per pruned tensor and in total, counted after pruning.

    Attributes:
        tensors: one dict per tensor with exactly ``name, elements, zeros, sparsity, kept``
            (``kept = elements - zeros``; zeros that were there before count too).
        total: the same keys over all tensors, with name ``"total"``.
        notes: what was left out and why (entries in dtypes torch cannot compute with).
        source: the file read, for a file's report (:func:`~paramscope.compress.prune_file`).
        output: the file written, likewise.

    Example:
        >>> import torch
        >>> r = SparsityReport()
        >>> r.add("w", torch.tensor([0.0, 1.0, 0.0, 2.0]))
        >>> r.add("v", (10, 5))
        >>> r.total
        {'name': 'total', 'elements': 14, 'zeros': 7, 'sparsity': 0.5, 'kept': 7}
    """

    tensors: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] = field(default_factory=lambda: _row("total", 0, 0))
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    output: str | None = None

    def add(self, name: str, tensor_or_counts: Any) -> None:
        """Add one tensor's row and update the total.

        Args:
            name: the tensor name.
            tensor_or_counts: the (pruned) tensor, whose zeros are counted, or its counts as
                ``(elements, zeros)`` or a mapping with ``elements`` and ``zeros``.
        """
        if isinstance(tensor_or_counts, Mapping):
            elements = int(tensor_or_counts["elements"])
            zeros = int(tensor_or_counts["zeros"])
        elif isinstance(tensor_or_counts, tuple):
            elements, zeros = (int(x) for x in tensor_or_counts)
        else:
            import torch

            from .._values import widen

            values = widen(tensor_or_counts)
            elements = values.numel()
            zeros = elements - int(torch.count_nonzero(values))
        if not 0 <= zeros <= elements:
            raise ArgumentError(
                f"SparsityReport.add: {name!r}: zeros={zeros}: expected 0 <= zeros <= "
                f"elements={elements}"
            )
        self.tensors.append(_row(name, elements, zeros))
        self.total = _row("total", self.total["elements"] + elements, self.total["zeros"] + zeros)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``paramscope prune --json`` prints).

        Returns:
            Plain dicts and lists, keys equal to the attribute names: ``tensors, total,
            notes``, led by ``source, output`` for a file's report.

        Example:
            >>> r = SparsityReport(source="a.safetensors", output="b.safetensors")
            >>> list(r.to_dict()), list(SparsityReport().to_dict())
            (['source', 'output', 'tensors', 'total', 'notes'], ['tensors', 'total', 'notes'])
        """
        files = (
            {}
            if self.source is None and self.output is None
            else {"source": self.source, "output": self.output}
        )
        return {
            **files,
            "tensors": [dict(t) for t in self.tensors],
            "total": dict(self.total),
            "notes": list(self.notes),
        }

    def to_text(self, width: int | None = None, *, limit: int = 40) -> str:
        """The human form ``paramscope prune`` prints: one row per tensor, then the total.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.
            limit: at most this many tensor rows (the rest are counted in one line).

        Returns:
            The text, without a final newline; names are escaped for a terminal.

        Example:
            >>> r = SparsityReport()
            >>> r.add("fc.weight", (8, 6))
            >>> print(r.to_text())
            tensor     elements  zeros  sparsity
            fc.weight         8      6     75.0%
            total: 8 elements, 6 zeros (75.0%), 2 kept
        """
        from .._text import printable_tree
        from ._render import sparsity_text

        return sparsity_text(printable_tree(self.to_dict()), limit)


# ---------------------------------------------------------------------------------- prune
@dataclass
class _Target:
    name: str
    tensor: torch.Tensor
    holders: list[tuple[Any, str]]  # (module, local name) for every path, modules only


def _targets_of(
    target: Any, select: Pattern | None, skip: Pattern | None, left: list[str]
) -> list[_Target]:
    import torch

    from .._paramdict import ParamDict

    out: list[_Target] = []
    if isinstance(target, torch.nn.Module):
        from torch.nn.parameter import UninitializedParameter

        by_id: dict[int, _Target] = {}
        for mod_name, mod in target.named_modules(remove_duplicate=False):
            pre = f"{mod_name}." if mod_name else ""
            for local, p in mod._parameters.items():
                if p is None or isinstance(p, UninitializedParameter):
                    continue
                if id(p) in by_id:  # a tie or a shared module: pruned once, listed once
                    holders = by_id[id(p)].holders
                    if all(h[0] is not mod or h[1] != local for h in holders):
                        holders.append((mod, local))
                    continue
                entry = _Target(pre + local, p, [(mod, local)])
                by_id[id(p)] = entry
                if _selected(entry.name, p, Role.PARAM, select, skip, left):
                    out.append(entry)
        return out
    if isinstance(target, ParamDict):
        for name in target.stored():
            t = target[name]
            if _selected(name, t, target.meta(name).role, select, skip, left):
                out.append(_Target(name, t, []))
        return out
    if isinstance(target, Mapping):
        seen: set[int] = set()
        for name, t in target.items():
            if not isinstance(t, torch.Tensor):
                raise ArgumentTypeError(
                    f"prune: entry {name!r}: expected a torch.Tensor, found {type(t).__name__}"
                )
            if id(t) in seen:
                continue
            seen.add(id(t))
            if _selected(name, t, Role.PARAM, select, skip, left):
                out.append(_Target(name, t, []))
        return out
    raise ArgumentTypeError(
        "prune: expected a torch.nn.Module, a ParamDict, a dict of tensors or a checkpoint "
        f"path (with dst=), found {type(target).__name__}"
    )


def _selected(
    name: str,
    t: torch.Tensor,
    role: Role,
    select: Pattern | None,
    skip: Pattern | None,
    left: list[str],
) -> bool:
    """Whether ``t`` is pruned; a float the rules choose in a dtype torch cannot compute with
    (F8, FP4 …) is added to ``left`` instead (left as stored, with a note)."""
    from .._values import computes

    if not t.is_floating_point() or not should_prune(name, tuple(t.shape), role, select, skip):
        return False
    if not computes(t):
        left.append(name)
        return False
    return True


def prune(
    target: torch.nn.Module | ParamDict | Mapping[str, torch.Tensor],
    amount: float | None,
    *,
    scope: str = "global",
    method: str = "l1",
    structure: str | None = None,
    n: int = 2,
    m: int = 4,
    select: Pattern | None = None,
    skip: Pattern | None = None,
    seed: int | None = None,
    as_masks: bool = False,
) -> SparsityReport:
    """Prune a model, a ParamDict or a dict of tensors in place and report the sparsity.

    Which tensors: floating-point parameters with ``ndim >= 2`` (see :func:`should_prune`),
    narrowed by ``select`` / ``skip``. Tied tensors (one object under several names, shared
    modules) are pruned once and reported once, under their first name.

    Args:
        target: an ``nn.Module`` (its weights get zeros, or masks with ``as_masks``), a
            :class:`~paramscope.ParamDict` or a ``dict`` of tensors (changed in place).
        amount: fraction to prune, ``0 <= amount < 1`` (of elements, or of slices for
            ``rows`` / ``channels``); ``None`` for ``n:m``, which implies ``1 - n/m``.
        scope: ``"global"`` (one threshold over all selected tensors, exact total count) or
            ``"layer"`` (``amount`` of every tensor). ``rows`` / ``channels`` need
            ``"layer"``; ``n:m`` ignores it.
        method: ``"l1"`` (smallest magnitudes) or ``"random"`` (uniform; global random draws a
            uniformly random subset over all tensors).
        structure: ``None``, ``"rows"``, ``"channels"`` or ``"n:m"`` (see :func:`keep_mask`).
        n: kept per group, for ``n:m``.
        m: group size, for ``n:m``.
        select: glob / ``re:`` pattern(s) restricting the pruned tensors.
        skip: glob / ``re:`` pattern(s) of tensors left alone.
        seed: seed for ``method="random"`` (same seed, same result).
        as_masks: modules only: attach ``weight_orig`` + ``weight_mask`` with
            ``torch.nn.utils.prune.custom_from_mask`` instead of writing zeros.

    Returns:
        A :class:`SparsityReport` of every selected tensor (zeros after pruning).

    Raises:
        ArgumentError: a bad option (named, with the value given and the values accepted).
        ArgumentTypeError: a target or an option of the wrong type.
        EntryError: a tensor that does not fit the structure, or a meta-device tensor.
        TargetError: ``as_masks`` on a target that is not a module.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(),
        ...                             torch.nn.Linear(8, 2))
        >>> report = prune(model, 0.5)
        >>> report.total["zeros"], report.total["elements"]
        (40, 80)
    """
    import torch

    sc: Scope = _option(Scope, "scope", scope)
    meth: Method = _option(Method, "method", method)
    struct = _structure(structure)
    if struct is Structure.NM:
        n, m = _check_nm(n, m)
    a = _check_amount(amount, struct, n, m)
    if sc is Scope.GLOBAL and struct in (Structure.ROWS, Structure.CHANNELS):
        raise ArgumentError(
            f"prune: structure={structure!r} with scope='global': slices of different tensors "
            "differ in size, so a global ranking cannot give an exact amount; pass "
            "scope='layer' (--scope layer)"
        )
    is_module = isinstance(target, torch.nn.Module)
    if as_masks and not is_module:
        raise TargetError(
            "prune: as_masks=True attaches masks to a module's parameters, but the target is "
            f"a {type(target).__name__}; pass a torch.nn.Module, or drop as_masks= to write "
            "zeros"
        )
    left: list[str] = []
    items = _targets_of(target, select, skip, left)
    for it in items:  # refuse before changing anything
        if it.tensor.device.type == "meta":
            raise EntryError(
                f"prune: {it.name!r} is on the meta device and has no values to prune; load "
                "the weights first (paramscope.load_into), or skip= it"
            )
        if struct is Structure.NM and (it.tensor.ndim == 0 or it.tensor.shape[-1] % m):
            raise EntryError(
                f"prune: {it.name!r} has shape {tuple(it.tensor.shape)}; structure 'n:m' "
                f"needs the last dimension divisible by m={m}: choose another m, or skip= it"
            )
        if struct in (Structure.ROWS, Structure.CHANNELS) and it.tensor.ndim < 2:
            raise EntryError(
                f"prune: {it.name!r} has shape {tuple(it.tensor.shape)}; structure "
                f"{structure!r} removes slices of tensors with at least 2 dimensions: skip= it"
            )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    masks: Iterator[torch.Tensor]
    if struct is None and sc is Scope.GLOBAL and meth is Method.L1:
        thr, ties = global_threshold(
            lambda: (it.tensor for it in items), a, sum(it.tensor.numel() for it in items)
        )

        def by_threshold() -> Iterator[torch.Tensor]:
            left = ties
            for it in items:
                keep, used = threshold_mask(it.tensor, thr, left)
                left -= used
                yield keep

        masks = by_threshold()
    elif struct is None and sc is Scope.GLOBAL:  # global random
        counts = random_counts([it.tensor.numel() for it in items], a, seed)
        masks = (
            _unstructured(it.tensor, c, meth, generator)
            for it, c in zip(items, counts, strict=True)
        )
    else:
        masks = (
            keep_mask(
                it.tensor,
                amount if struct is not Structure.NM else None,
                method=meth.value,
                structure=structure,
                n=n,
                m=m,
                generator=generator,
            )
            for it in items
        )

    report = SparsityReport()
    if left:
        report.notes.append(left_note("pruned", left))
    with torch.no_grad():
        for it, keep in zip(items, masks, strict=True):
            if as_masks:
                _attach_mask(it, keep)
                mod, local = it.holders[0]
                report.add(it.name, getattr(mod, local))
            else:
                it.tensor.masked_fill_(~keep, 0)
                report.add(it.name, it.tensor)
    return report


def _attach_mask(it: _Target, keep: torch.Tensor) -> None:
    from torch.nn.utils import prune as tprune

    for mod, local in it.holders:
        tprune.custom_from_mask(mod, local, mask=keep.to(it.tensor.dtype))
