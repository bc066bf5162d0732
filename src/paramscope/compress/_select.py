"""The exact k-th smallest magnitude of float tensors from their bit patterns (numpy, no torch).

The magnitude order of IEEE floats is the integer order of their bits with the sign cleared,
so ``|w|`` ranks as ``key = bits & 0x7fffffff``. float16 and bfloat16 values are widened to
float32 exactly, so tensors of the three types share one key space (a global cut over a mixed
checkpoint is exact). Selecting the k-th smallest key needs no sort of the data and no float
arithmetic:

1. **bracket**: a proportional sample (evenly spaced runs of every tensor, the same
   fraction of each, at most :data:`SAMPLE_MAX` elements; sorted, not the data) gives keys
   ``lo <= hi`` between which the k-th smallest lies with overwhelming probability (a margin
   of many standard errors of the sample quantile);
2. **one exact pass**: every element is compared once — how many keys fall below ``lo``, and a
   histogram of the keys inside ``[lo, hi]`` (at most :data:`MAX_WIDTH` distinct keys). If the
   k-th smallest is inside, it is read off the histogram with the count of its equals (the
   ties). The pass is a few vectorised integer operations per 1 Mi-element chunk, spread over
   all cores (numpy releases the GIL), about 0.3–0.5 ns per element;
3. **a miss** (the sample misled): one histogram pass of the top 16 bits of every key finds the
   64 Ki-key bin holding the k-th smallest, and step 2 runs again on that bin. Always exact.

Peak memory beyond the tensors being read: one chunk of keys per worker (4 MiB each), the
histogram (``8 × width`` bytes, at most 32 MiB) and the sample (~1/256 of the elements).

A NaN (key above ``0x7f800000``) has no magnitude to rank: it raises
:class:`~paramscope._errors.EntryError` naming the tensor. Infinities rank above every finite
value.

:func:`prune_below` applies the cut to one tensor in place: elements with ``key < cut`` and the
first ``ties`` elements with ``key == cut`` (flat order) become ``+0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import EntryError

__all__ = [
    "CHUNK",
    "KINDS",
    "MAX_WIDTH",
    "SAMPLE_MAX",
    "SAMPLE_ONE",
    "SAMPLE_RATE",
    "SAMPLE_RUNS",
    "Part",
    "key_value",
    "kth_key",
    "prune_below",
    "typed",
]

#: Elements per chunk of a pass (4 MiB of float32 keys per worker).
CHUNK = 1 << 20
#: Stored dtypes handled (their name in safetensors): float32, float16, bfloat16.
KINDS = ("F32", "F16", "BF16")
#: At most this many distinct keys in a bracket (its histogram: 8 bytes each).
MAX_WIDTH = 1 << 22
#: Fraction of the elements of every tensor that a bracket's sample reads …
SAMPLE_RATE = 1 / 256
#: … and at most this many elements in all (sorting the sample must stay cheap); one tensor
#: alone is sampled up to :data:`SAMPLE_ONE` elements whatever the rate.
SAMPLE_MAX = 1 << 21
SAMPLE_ONE = 1 << 18
#: Runs a part's sample is read in at most (contiguous runs: one request each from a file).
SAMPLE_RUNS = 256
#: Below this many elements in all, the keys are gathered and partitioned instead.
SMALL = 1 << 16

_ABS = np.uint32(0x7FFFFFFF)
_NAN_ABOVE = 0x7F800000
_NP = {"F32": np.uint32, "F16": np.float16, "BF16": np.uint16}


def typed(buf: Any, kind: str, count: int | None = None) -> np.ndarray:
    """The flat numpy view of a tensor's stored bytes used by this module (no copy).

    Args:
        buf: a bytes-like object (or a numpy array) holding the little-endian values.
        kind: ``"F32"``, ``"F16"`` or ``"BF16"``.
        count: elements (default: all the bytes hold).

    Returns:
        ``uint32`` (float32 bits), ``float16``, or ``uint16`` (bfloat16 bits), 1-D.

    Example:
        >>> typed(np.array([1.0, -2.0], np.float32).tobytes(), "F32").tolist()
        [1065353216, 3221225472]
    """
    dt = _NP[kind]
    if isinstance(buf, np.ndarray):
        return buf.reshape(-1).view(dt)
    return np.frombuffer(buf, dtype=dt, count=-1 if count is None else count)


def _keys(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The magnitude keys of one chunk (``a`` from :func:`typed`) written into ``out``."""
    k = out[: a.size]
    if a.dtype == np.uint32:
        np.bitwise_and(a, _ABS, out=k)
    elif a.dtype == np.float16:
        np.copyto(k.view(np.float32), a)  # exact widening
        np.bitwise_and(k, _ABS, out=k)
    else:  # bfloat16: the top half of a float32
        np.copyto(k, a)
        np.left_shift(k, 16, out=k)
        np.bitwise_and(k, _ABS, out=k)
    return k


def key_value(key: int) -> float:
    """The magnitude a key stands for (exact, as a Python float).

    Example:
        >>> key_value(0x3F800000)
        1.0
    """
    return float(np.array([key], dtype=np.uint32).view(np.float32)[0])


@dataclass
class Part:
    """One tensor of a selection: its element count, and how to reach its values.

    Args:
        name: shown in errors (a NaN found).
        numel: element count.
        sample: ``sample(start, count)`` → the typed values (:func:`typed`) of elements
            ``start … start + count - 1``; used for the bracket's sample.
    """

    name: str
    numel: int
    sample: Callable[[int, int], np.ndarray]


# ------------------------------------------------------------------------------------ workers
def _workers() -> tuple[Any, int]:
    from ._qkernels import _workers as shared

    return shared()


def _scratch(n: int) -> np.ndarray:
    """Room for ``n`` keys followed by ``n`` bools (see :func:`_flags`)."""
    return np.empty(n + (n + 3) // 4, dtype=np.uint32)


def _flags(scratch: np.ndarray, n: int) -> np.ndarray:
    """The bool part of a :func:`_scratch` buffer, ``n`` long."""
    size = (scratch.size * 4) // 5
    return scratch[size:].view(np.bool_)[:n]


def _map_chunks(a: np.ndarray, fn: Callable[[int, np.ndarray, np.ndarray], Any]) -> list[Any]:
    """``fn(start, chunk, scratch)`` over the 1 Mi-element chunks of ``a``, on all cores (a
    4 MiB uint32 scratch buffer per worker); the results in order."""
    n = a.size
    starts = range(0, n, CHUNK)
    pool, _n = _workers()
    if pool is None or n <= CHUNK:
        scratch = _scratch(min(n, CHUNK))
        return [fn(s, a[s : s + CHUNK], scratch) for s in starts]
    import threading

    local = threading.local()

    def one(s: int) -> Any:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = _scratch(CHUNK)
        return fn(s, a[s : s + CHUNK], buf)

    return list(pool.map(one, starts))


# ------------------------------------------------------------------------------------ selection
def _nan(name: str) -> EntryError:
    return EntryError(
        f"prune: {name!r} holds NaN values, which have no magnitude to rank; fix the weights, "
        "or skip= the tensors that hold them"
    )


def _bracket(parts: Sequence[Part], k: int, total: int) -> tuple[int, int] | None:
    """Keys ``(lo, hi)`` that hold the k-th smallest with overwhelming probability, from a
    stratified sample; ``None`` when the sample gives no usable bracket.

    Every part gives ``round(numel · rate)`` elements (at most :data:`SAMPLE_RUNS` evenly
    spaced runs), so the sample is proportional and its plain order statistics estimate the
    ranks; each part's rounding (half an element of the sample) widens the margin."""
    rate = min(SAMPLE_RATE, SAMPLE_MAX / total) if len(parts) > 1 else min(1, SAMPLE_ONE / total)
    keys: list[np.ndarray] = []
    for p in parts:
        m = min(p.numel, round(p.numel * rate))
        if m == 0:
            continue
        runs = min(SAMPLE_RUNS, m)
        length = -(-m // runs)
        runs = -(-m // length)
        for j in range(runs):
            n = min(length, m - j * length)
            start = min(p.numel - n, (j * p.numel) // runs)
            vals = p.sample(start, n)
            keys.append(_keys(vals, np.empty(vals.size, dtype=np.uint32)))
    if not keys:
        return None
    sk = np.sort(np.concatenate(keys))
    drawn = sk.size
    if int(sk[-1]) > _NAN_ABOVE:
        return None  # the exact pass names the tensor
    q = k / total
    # a generous margin: 8 standard errors of a sample quantile, at least 0.05 %, and the
    # parts' rounding
    margin = (8 * math.sqrt(max(q * (1 - q), 1 / drawn) / drawn) + 5e-4) * total
    margin += len(parts) / (2 * rate)
    i_lo = math.floor((k - margin) * drawn / total) - 1
    i_hi = math.ceil((k + margin) * drawn / total)
    lo = int(sk[i_lo]) if i_lo >= 0 else 0
    hi = int(sk[i_hi]) if i_hi < drawn else _NAN_ABOVE
    if hi - lo + 1 > MAX_WIDTH:
        return None
    return lo, hi


def _exact_pass(
    arrays: Iterable[tuple[str, np.ndarray]], lo: int, hi: int
) -> tuple[int, np.ndarray, int]:
    """``(count below lo, histogram of keys lo … hi, elements seen)``, one pass."""
    width = hi - lo + 1
    lo_, w_ = np.uint32(lo), np.uint32(width - 1)
    hist = np.zeros(width, dtype=np.int64)
    below = seen = 0
    held: list[np.ndarray] = []  # band keys not yet counted: one bincount per ~width of them
    n_held = 0

    def one(_s: int, a: np.ndarray, scratch: np.ndarray) -> tuple[int, int, np.ndarray]:
        k = _keys(a, scratch)
        top = int(k.max()) if k.size else 0
        b = int(np.count_nonzero(k < lo_))
        np.subtract(k, lo_, out=k)  # keys below lo wrap to large values: outside the band
        return top, b, k[k <= w_]

    for name, a in arrays:
        for top, b, band in _map_chunks(a, one):
            if top > _NAN_ABOVE:
                raise _nan(name)
            below += b
            if band.size:
                held.append(band)
                n_held += band.size
            if n_held >= max(width, 1 << 22):
                hist += np.bincount(np.concatenate(held), minlength=width)
                held, n_held = [], 0
        seen += a.size
    if held:
        hist += np.bincount(np.concatenate(held), minlength=width)
    return below, hist, seen


def _top_pass(arrays: Iterable[tuple[str, np.ndarray]]) -> np.ndarray:
    """A histogram of the top 16 bits of every key (bin ``key >> 16``)."""
    hist = np.zeros(1 << 15, dtype=np.int64)

    def one(_s: int, a: np.ndarray, scratch: np.ndarray) -> tuple[int, np.ndarray]:
        k = _keys(a, scratch)
        top = int(k.max()) if k.size else 0
        np.right_shift(k, 16, out=k)
        return top, np.bincount(k, minlength=1 << 15)

    for name, a in arrays:
        for top, h in _map_chunks(a, one):
            if top > _NAN_ABOVE:
                raise _nan(name)
            hist += h
    return hist


def kth_key(
    parts: Sequence[Part],
    k: int,
    scan: Callable[[], Iterator[tuple[str, np.ndarray]]],
) -> tuple[int, int]:
    """The k-th smallest magnitude key over all parts, and how many of its equals the k
    smallest hold.

    Args:
        parts: the tensors, in iteration order.
        k: ``1 <= k <= total elements``.
        scan: returns a fresh iterator of ``(name, typed values)`` over the parts, in order;
            called once or twice (three times after a miss of the sample's bracket).

    Returns:
        ``(key, ties)``: pruning every key below ``key`` and the first ``ties`` keys equal to
        it prunes exactly ``k`` elements.

    Raises:
        EntryError: a NaN value (named by its tensor).
        ValueError: ``k`` outside ``1 … total``.

    Example:
        >>> vals = np.array([0.5, -0.1, 0.5, 2.0], np.float32)
        >>> part = Part("w", 4, lambda s, n: typed(vals[s : s + n], "F32"))
        >>> key, ties = kth_key([part], 2, lambda: iter([("w", typed(vals, "F32"))]))
        >>> key_value(key), ties
        (0.5, 1)
    """
    total = sum(p.numel for p in parts)
    if not 1 <= k <= total:
        raise ValueError(f"k={k} is outside 1 … {total}")
    if total <= SMALL:
        keys = np.concatenate(
            [_keys(a, np.empty(a.size, np.uint32)) for name, a in scan() if a.size]
        )
        if int(keys.max()) > _NAN_ABOVE:
            for name, a in scan():  # name the tensor
                if a.size and int(_keys(a, np.empty(a.size, np.uint32)).max()) > _NAN_ABOVE:
                    raise _nan(name)
        cut = int(np.partition(keys, k - 1)[k - 1])
        return cut, k - int(np.count_nonzero(keys < cut))
    bracket = _bracket(parts, k, total)
    for _attempt in range(2):
        if bracket is None:
            top = np.cumsum(_top_pass(scan()))
            b = int(np.searchsorted(top, k, side="left"))
            bracket = (b << 16, (b << 16) | 0xFFFF)
        lo, hi = bracket
        below, hist, seen = _exact_pass(scan(), lo, hi)
        if seen != total:
            raise ValueError(f"the parts hold {total} elements, the scan gave {seen}")
        cum = np.cumsum(hist)
        if below < k <= below + int(cum[-1]):
            j = int(np.searchsorted(cum, k - below, side="left"))
            before = below + (int(cum[j - 1]) if j else 0)
            return lo + j, k - before
        bracket = None  # the sample misled: the histogram of the top bits finds the bin
    # the top-bits bin always holds the k-th key
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------ applying
def prune_below(a: np.ndarray, cut: int, ties: int) -> tuple[int, int]:
    """Zero (``+0``) the elements of one tensor whose key is below ``cut``, and the first
    ``ties`` whose key equals it (flat order), in place.

    Args:
        a: the tensor's typed values (:func:`typed`), writable.
        cut: the key from :func:`kth_key`.
        ties: how many elements equal to the cut may still be pruned.

    Returns:
        ``(nonzero elements left, ties used)``.

    Example:
        >>> vals = np.array([0.5, -0.1, 0.5, 2.0], np.float32)
        >>> a = typed(vals, "F32")
        >>> prune_below(a, 0x3F000000, 1), vals.tolist()
        ((2, 1), [0.0, 0.0, 0.5, 2.0])
    """
    raw = a.view(np.uint16) if a.dtype == np.float16 else a
    cut_ = np.uint32(cut)

    def masked(s: int, chunk: np.ndarray, scratch: np.ndarray) -> tuple[int, int]:
        """Zero the keys below the cut; ``(pruned, equal to the cut)`` in this chunk."""
        k = _keys(chunk, scratch)
        equal = int(np.count_nonzero(k == cut_)) if ties > 0 else 0
        if cut == 0:  # nothing is below 0; the ties taken are zeros already
            return chunk.size - int(np.count_nonzero(k)), equal
        keep = np.greater_equal(k, cut_, out=_flags(scratch, chunk.size))
        pruned = chunk.size - int(np.count_nonzero(keep))
        if pruned:  # times 0 or 1: ten times faster than putmask, and +0 bits as it
            out = raw[s : s + chunk.size]
            np.multiply(out, keep, out=out)
        return pruned, equal

    results = _map_chunks(a, masked)
    zeros = sum(r[0] for r in results)
    left = ties
    if left > 0:  # the first `ties` equal to the cut, in flat order: revisit their chunks
        for i, (_pruned, equal) in enumerate(results):
            if left == 0:
                break
            if equal == 0:
                continue
            s = i * CHUNK
            chunk = a[s : s + CHUNK]
            k = _keys(chunk, np.empty(chunk.size, dtype=np.uint32))
            idx = np.flatnonzero(k == cut_)[:left]
            raw[s + idx] = 0
            left -= idx.size
            if cut != 0:  # (zeros taken as ties were counted as zeros already)
                zeros += idx.size
    return a.size - zeros, ties - left
