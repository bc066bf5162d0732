"""Spectral health of weight matrices: the power-law exponent α of each layer's eigenvalue spectrum.

Heavy-tailed self-regularisation (Martin & Mahoney, Nature Communications 2021): the empirical
spectral density (ESD) of a trained layer's correlation matrix has a power-law tail
``p(λ) ∝ λ^-α``; well-trained layers mostly have ``2 ≤ α ≤ 6``. :func:`spectral_stats` computes
the numbers the way the ``weightwatcher`` package (0.7.x, ``WeightWatcher.analyze()`` with its
defaults) does, so the two can be compared layer by layer:

* **Which tensors**: 2-D tensors (linear, embedding) and 4-D conv weights; a layer is skipped,
  as weightwatcher skips it, when it has fewer than :data:`MIN_EVALS` or more than
  :data:`MAX_EVALS` eigenvalues, or when its larger dimension exceeds :data:`MAX_N`.
* **The matrices**: a 2-D ``W`` (``N × M``, ``N ≥ M``) as is; a conv weight ``(out, in, kh, kw)``
  pooled the way weightwatcher's ``conv2D_Wmats`` does: the ``kh·kw`` slices ``W[:, :, i, j]``
  (each transposed so ``N ≥ M``), their eigenvalues combined into one spectrum of ``kh·kw·M``
  values, each slice scaled by ``√½`` (its ``conv2d_norm``, so the eigenvalues by ½).
* **Normalisation**: the eigenvalues are those of ``WᵀW`` (the squared singular values), *not*
  divided by ``N``: weightwatcher 0.7.x computes ``evals = sv**2`` (its ``/ N`` is commented
  out). α and D do not depend on that scale; ``xmin`` is reported in the same units as
  weightwatcher's. Eigenvalues ≤ :data:`EVALS_THRESH` are dropped before the fit, as there.
* **The fit** (weightwatcher's default ``pl_package='ww'``, which reproduces the ``powerlaw``
  package's continuous power-law fit): every eigenvalue but the largest is tried as ``xmin``; for
  each the MLE ``α = 1 + n / Σ ln(λ_i / xmin)`` over the ``n`` eigenvalues ``≥ xmin`` and the
  Kolmogorov–Smirnov distance ``D`` between the fitted and the empirical tail CDF; the ``xmin``
  with the least ``D`` wins. With fewer than :data:`SMALL_N` eigenvalues weightwatcher switches
  to a small-sample fit (bias-corrected ``α = 1 + (n-1)/Σ``, tails of at least 8, ``xmin`` by the
  then, as its ``WWFit`` does, the least ``D`` again); that is reproduced too.
* **Method**: ``"eigh"`` computes every eigenvalue of the smaller Gram matrix (``WᵀW``, ``M × M``)
  in float64 with ``torch.linalg.eigvalsh`` (the Gram matrix's upper triangle only, built from
  float64 chunks of ``W``: see :func:`_gram`); ``"lowrank"`` takes the ``k`` largest singular
  values with ``torch.svd_lowrank`` (randomised SVD, float64). ``"auto"`` uses ``eigh`` up to
  ``min(dim) ≤`` :data:`EXACT_MAX` and ``lowrank`` above. Each candidate ``xmin``'s α and D
  depend only on the eigenvalues ``≥ xmin``, so the randomised fit equals the exact one whenever
  the best tail has fewer than ``k`` eigenvalues; a tail that reaches ``k`` is noted.
* **Flagged**: α outside ``[ALPHA_LOW, ALPHA_HIGH]`` (2 … 6).
* **Threads**: with torch allowed ``T ≥ 2`` threads, :data:`WORKERS` matrices are worked on at
  once, each with ``T // WORKERS`` torch threads (restored afterwards): one matrix's eigenvalues
  use two cores poorly, and on a shared machine a multi-threaded LAPACK call that loses a core
  to another process slows down many times; independent matrices side by side do not.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError
from ._stats import _assign_series, block_of, classify, walk_tensors

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .._names import Pattern

#: Healthy range of α (Martin & Mahoney); layers outside are flagged.
ALPHA_LOW = 2.0
ALPHA_HIGH = 6.0
#: weightwatcher's layer filters (``DEFAULT_MIN_EVALS``, ``DEFAULT_MAX_EVALS``, ``DEFAULT_MAX_N``).
MIN_EVALS = 8
MAX_EVALS = 15000
MAX_N = 50000
#: Eigenvalues at or below this are left out of the fit (weightwatcher's ``EVALS_THRESH``).
EVALS_THRESH = 1e-5
#: Below this many eigenvalues the small-sample fit is used (weightwatcher's ``SMALL_N_CUTOFF``).
SMALL_N = 20
#: ``method="auto"`` computes every eigenvalue up to this smaller dimension, randomised SVD above.
EXACT_MAX = 4096
#: Default number of singular values the randomised SVD keeps.
LOWRANK_K = 1024

METHODS = ("auto", "eigh", "lowrank")
#: Matrices worked on at once (each with its share of torch's threads).
WORKERS = 2
#: float64 elements per chunk of ``W`` that :func:`_gram` converts at a time (32 MiB).
GRAM_CHUNK = 1 << 22
#: :func:`_gram` splits the Gram matrix into this many row blocks (5/8 of the full product).
GRAM_BLOCKS = 4

#: ``torch.svd_lowrank`` draws from the global generator: one randomised SVD at a time.
_RNG_LOCK = threading.Lock()


def fit_power_law(evals: Any) -> dict[str, Any] | None:
    """Fit a power law to the tail of a spectrum the way weightwatcher (and ``powerlaw``) does.

    Args:
        evals: eigenvalues (any order, all > 0); at least 2.

    Returns:
        ``{"alpha", "xmin", "D", "sigma"}`` for the ``xmin`` with the least KS distance, or
        ``None`` when fewer than 2 eigenvalues are given.

    Example:
        >>> import numpy as np
        >>> x = (1 - np.random.default_rng(0).random(2000)) ** (-1 / 2.5)  # Pareto, α = 3.5
        >>> round(fit_power_law(x)["alpha"], 1)
        3.5
    """
    import numpy as np

    data = np.sort(np.asarray(evals, dtype=np.float64))
    n_all = len(data)
    if n_all < 2:
        return None
    logs = np.log(data)
    # suffix sums: tail[i] = Σ_{j ≥ i} ln x_j
    tail = np.cumsum(logs[::-1])[::-1]
    alphas = np.zeros(n_all - 1)
    ds = np.ones(n_all - 1)
    small = n_all < SMALL_N
    js = np.full(n_all - 1, np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(n_all - 1):
            n = n_all - i
            s = tail[i] - n * logs[i]
            if small:
                if n < 8 or s <= 1e-12:
                    continue
                alpha = 1.0 + (n - 1.0) / s
            else:
                alpha = 1.0 + n / s
            alphas[i] = alpha
            if alpha > 1:
                ds[i] = np.max(np.abs(1 - (data[i:] / data[i]) ** (1 - alpha) - np.arange(n) / n))
                if small:
                    js[i] = ds[i] - 0.868 / math.sqrt(n)
    if small and not np.isfinite(js).any():
        # no tail of 8 or more: weightwatcher fits all the data (bias-corrected)
        s = tail[0] - n_all * logs[0]
        if s <= 1e-12:
            return None
        alphas[0] = 1.0 + (n_all - 1.0) / s
        ds[0] = float(
            np.max(np.abs(1 - (data / data[0]) ** (1 - alphas[0]) - np.arange(n_all) / n_all))
        )
    # weightwatcher's WWFit keeps the xmin of least D, also after its small-sample fit
    best = int(np.argmin(ds))
    if not alphas[best] > 1:
        return None
    alpha = float(alphas[best])
    return {
        "alpha": alpha,
        "xmin": float(data[best]),
        "D": float(ds[best]),
        "sigma": (alpha - 1) / math.sqrt(n_all - best),
    }


def _dims(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``(N, M, rf)`` of the matrices :func:`_matrices` makes of a weight of this shape."""
    if len(shape) == 2:
        return max(shape), min(shape), 1
    if len(shape) != 4:
        return None
    a, b, ih, jw = shape
    if a + b >= ih + jw:
        return max(a, b), min(a, b), ih * jw
    return max(ih, jw), min(ih, jw), a * b


def _in_limits(shape: tuple[int, ...]) -> bool:
    """Whether weightwatcher analyses a weight of this shape (see the module docstring)."""
    dims = _dims(shape)
    if dims is None:
        return False
    n, m, rf = dims
    return MIN_EVALS <= m * rf <= MAX_EVALS and n <= MAX_N


def _matrices(t: torch.Tensor) -> tuple[list[torch.Tensor], int, int, int, float] | None:
    """weightwatcher's ``(Wmats, N, M, rf, eigenvalue scale)`` for a 2-D or 4-D weight."""
    if t.ndim == 2:
        n, m = max(t.shape), min(t.shape)
        return [t], n, m, 1, 1.0
    if t.ndim != 4:
        return None
    a, b, ih, jw = t.shape
    if a + b >= ih + jw:  # (out, in, kh, kw): slices over the kernel positions
        mats = [t[:, :, i, j] for i in range(ih) for j in range(jw)]
        rf = ih * jw
    else:  # (kh, kw, in, out)
        mats = [t[i, j, :, :] for i in range(a) for j in range(b)]
        rf = a * b
    n, m = max(mats[0].shape), min(mats[0].shape)
    return mats, n, m, rf, 0.5  # conv2d_norm: W · √(count/2) with count = 1


def _gram(w: torch.Tensor) -> torch.Tensor:
    """The float64 Gram matrix of ``w`` on its smaller side (``M × M``), upper triangle only.

    ``w`` is converted to float64 :data:`GRAM_CHUNK` elements at a time (no float64 copy of
    the whole matrix), and of the Gram matrix only the blocks on and above the diagonal of a
    :data:`GRAM_BLOCKS` × :data:`GRAM_BLOCKS` split are computed (5/8 of the multiply-adds of
    ``WᵀW``); what lies below the diagonal is incomplete: read it with
    ``eigvalsh(..., UPLO="U")``. The entries are the same float64 dot products as ``WᵀW``'s,
    summed chunk by chunk.

    Args:
        w: a 2-D floating-point tensor on the CPU.

    Returns:
        An ``M × M`` float64 tensor, ``M = min(w.shape)``.
    """
    import torch

    a = w.T if w.shape[0] >= w.shape[1] else w  # M × N, M ≤ N: G = a·aᵀ = WᵀW (W tall)
    m, n = a.shape
    g = torch.zeros(m, m, dtype=torch.float64)
    parts = max(1, min(GRAM_BLOCKS, m // 128))
    cuts = [m * i // parts for i in range(parts + 1)]
    step = max(64, GRAM_CHUNK // max(m, 1))
    for c0 in range(0, n, step):
        blk = a[:, c0 : c0 + step].to(torch.float64)
        for r0, r1 in itertools.pairwise(cuts):
            g[r0:r1, r0:].addmm_(blk[r0:r1], blk[r0:].T)
    return g


def _threads_each() -> tuple[int, int]:
    """``(matrices at once, torch threads for each)`` within torch's thread count."""
    import torch

    total = torch.get_num_threads()
    workers = max(1, min(WORKERS, total))
    return workers, max(1, total // workers)


def _ordered_map(fn: Callable[..., Any], items: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
    """``fn(*item)`` for each item, in order; matrices side by side when torch has several
    threads (see the module docstring), at most that many items taken ahead of the results."""
    import torch

    workers, each = _threads_each()
    if workers == 1:
        for item in items:
            yield fn(*item)
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    before = torch.get_num_threads()
    torch.set_num_threads(each)
    try:
        with ThreadPoolExecutor(
            workers,
            thread_name_prefix="paramscope-spectral",
            initializer=torch.set_num_threads,
            initargs=(each,),
        ) as pool:
            pending: deque[Future[Any]] = deque()
            try:
                for item in items:
                    pending.append(pool.submit(fn, *item))
                    if len(pending) >= workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for f in pending:
                    f.cancel()
    finally:
        torch.set_num_threads(before)


def _eigenvalues(mats: list[torch.Tensor], method: str, k: int) -> tuple[np.ndarray, str]:
    """Combined eigenvalues of ``WᵀW`` over the slices, ascending, and the method's name."""
    import numpy as np
    import torch

    out = []
    m = min(mats[0].shape)
    how = method if method != "auto" else ("eigh" if m <= EXACT_MAX else "lowrank")
    for w in mats:
        w = w.detach().to(device="cpu")
        if how == "eigh":
            ev = torch.linalg.eigvalsh(_gram(w), UPLO="U")
        else:
            w = w.to(dtype=torch.float64)
            if w.shape[0] < w.shape[1]:
                w = w.T
            q = min(m, k)
            if q >= m:
                ev = torch.linalg.svdvals(w) ** 2
            else:
                with _RNG_LOCK, torch.random.fork_rng():
                    torch.manual_seed(0)
                    _, s, _ = torch.svd_lowrank(w, q=min(m, q + 10), niter=6)
                ev = (s[:q]) ** 2
        out.append(ev.clamp_min(0).numpy())
    evals = np.sort(np.concatenate(out))
    if how == "eigh":
        name = "eigh of WᵀW (float64, all eigenvalues)"
    else:
        name = f"randomised SVD, {min(m, k)} largest values per matrix (torch.svd_lowrank, float64)"
    return evals, name


def layer_spectrum(
    name: str, t: torch.Tensor, *, method: str = "auto", k: int = LOWRANK_K
) -> dict[str, Any] | None:
    """The spectral numbers of one weight tensor, or ``None`` when weightwatcher would skip it.

    Args:
        name: the tensor's name (reported as is).
        t: a 2-D or 4-D floating-point tensor.
        method: ``"auto"``, ``"eigh"`` or ``"lowrank"`` (see the module docstring).
        k: singular values kept by ``"lowrank"``.

    Returns:
        ``{"name", "shape", "N", "M", "num_evals", "alpha", "xmin", "D", "n_tail", "method",
        "flagged"}``; ``alpha``/``xmin``/``D`` are ``None`` when no fit is possible.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> r = layer_spectrum("w", torch.randn(200, 50, generator=g))
        >>> r["M"], r["num_evals"], r["method"].split(" ")[0]
        (50, 50, 'eigh')
    """
    got = _matrices(t) if _in_limits(tuple(t.shape)) else None
    if got is None:
        return None
    mats, n, m, _rf, scale = got
    evals, how = _eigenvalues(mats, method, k)
    evals = evals * scale
    fit = fit_power_law(evals[evals > EVALS_THRESH])
    alpha = xmin = d = None
    n_tail = 0
    if fit is not None and math.isfinite(fit["alpha"]):
        alpha, xmin, d = fit["alpha"], fit["xmin"], fit["D"]
        n_tail = int((evals >= xmin).sum())
    return {
        "name": name,
        "shape": list(t.shape),
        "N": n,
        "M": m,
        "num_evals": len(evals),
        "alpha": alpha,
        "xmin": xmin,
        "D": d,
        "n_tail": n_tail,
        "method": how,
        "flagged": alpha is not None and not (ALPHA_LOW <= alpha <= ALPHA_HIGH),
    }


@dataclass
class SpectralReport:
    """Per-matrix power-law fits of a checkpoint or a model (from :func:`spectral_stats`).

    Attributes:
        source: the path, or ``"(in memory)"``.
        matrices: one dict per analysed matrix (see :func:`layer_spectrum`), in file order,
            with ``kind``, ``block`` and ``series`` as :func:`~paramscope.weight_stats` gives
            them (the depth line a report draws the matrix on).
        flagged: the entries of ``matrices`` with α outside ``[2, 6]``.
        notes: what was skipped and why, and fits to read with care.
    """

    source: str
    matrices: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN and infinities as ``None``).

        Returns:
            ``{"source", "alpha_range", "matrices", "flagged", "notes"}``.

        Example:
            >>> import json, torch
            >>> g = torch.Generator().manual_seed(0)
            >>> d = spectral_stats({"w": torch.randn(64, 32, generator=g)}).to_dict()
            >>> [m["name"] for m in json.loads(json.dumps(d))["matrices"]]
            ['w']
        """

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        rows = [{k: clean(v) for k, v in m.items()} for m in self.matrices]
        return {
            "source": self.source,
            "alpha_range": [ALPHA_LOW, ALPHA_HIGH],
            "matrices": rows,
            "flagged": [m["name"] for m in self.flagged],
            "notes": list(self.notes),
        }

    def to_text(self, width: int | None = None) -> str:
        """One line per matrix (name, shape, α, xmin, D, tail size, flag), then the notes.

        Args:
            width: cut lines to this many characters (``None``: whole lines).

        Returns:
            Plain text.

        Example:
            >>> import torch
            >>> g = torch.Generator().manual_seed(0)
            >>> r = spectral_stats({"w": torch.randn(64, 32, generator=g)})
            >>> r.to_text().splitlines()[0]
            'spectral health of (in memory): 1 matrices'
        """
        from .._text import printable

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.4g}"

        lines = [f"spectral health of {printable(self.source)}: {len(self.matrices)} matrices"]
        wide = max([len(printable(m["name"])) for m in self.matrices] + [4])
        for m in self.matrices:
            shape = "×".join(str(s) for s in m["shape"])
            flag = "  !" if m["flagged"] else ""
            lines.append(
                f"{printable(m['name']):<{wide}}  {shape:>12}  α={fmt(m['alpha']):>7}  "
                f"xmin={fmt(m['xmin']):>9}  D={fmt(m['D']):>7}  tail={m['n_tail']:>5}{flag}"
            )
        if self.flagged:
            lines.append(
                f"flagged (α outside [{ALPHA_LOW:g}, {ALPHA_HIGH:g}]): "
                + ", ".join(printable(m["name"]) for m in self.flagged)
            )
        else:
            lines.append("flagged: none")
        lines += [f"note: {printable(n)}" for n in self.notes]
        if width is not None:
            lines = [s if len(s) <= width else s[: max(1, width - 1)] + "…" for s in lines]
        return "\n".join(lines)


def spectral_stats(
    source: Any,
    *,
    select: Pattern | None = None,
    method: str = "auto",
    k: int = LOWRANK_K,
) -> SpectralReport:
    """Power-law α of every weight matrix's eigenvalue spectrum, as weightwatcher computes it.

    Files are read one tensor at a time and :data:`WORKERS` matrices worked on at once
    (memory: about two of the largest tensors, each with its float64 Gram matrix). Tensors
    other than 2-D/4-D floats, tensors without values (meta), tied duplicates in memory and
    layers weightwatcher skips (fewer than 8 or more than 15000 eigenvalues, a dimension
    above 50000; in a file never read) are left out and counted in the notes.

    Args:
        source: a checkpoint path (any format :class:`~paramscope.io._reader.SourceReader`
            reads), a ParamDict, a dict of tensors or a ``torch.nn.Module``.
        select: optional glob / ``re:`` pattern (or list) on names; only matching tensors.
        method: ``"auto"`` (exact up to ``min(dim) = 4096``, randomised above), ``"eigh"``
            (every eigenvalue of ``WᵀW``, float64) or ``"lowrank"`` (``k`` largest).
        k: singular values kept per matrix by the randomised SVD.

    Returns:
        A :class:`SpectralReport`.

    Raises:
        ArgumentError: unknown ``method`` or ``k < 1``.
        ArgumentTypeError: ``source`` is none of those.
        MissingNameError: ``select`` matches no entry.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> sd = {"a.weight": torch.randn(256, 128, generator=g), "a.bias": torch.zeros(256)}
        >>> r = spectral_stats(sd)
        >>> [m["name"] for m in r.matrices], r.matrices[0]["alpha"] > 2
        (['a.weight'], True)
    """
    import torch

    if method not in METHODS:
        raise ArgumentError(
            f"spectral_stats: method must be one of {', '.join(METHODS)}, found {method!r}"
        )
    if not isinstance(k, int) or k < 1:
        raise ArgumentError(f"spectral_stats: k must be a positive integer, found {k!r}")
    notes: list[str] = []
    outside: set[str] = set()  # file entries weightwatcher would skip: never read

    def entry_ok(e: Any) -> bool:
        if not (e.dtype.is_float and len(e.shape) in (2, 4)):
            return False
        if not _in_limits(tuple(e.shape)):
            outside.add(e.name)
            return False
        return True

    walk, items = walk_tensors(
        source,
        what="spectral_stats",
        entry_ok=entry_ok,
        tensor_ok=lambda t: t.ndim in (2, 4) and torch.is_floating_point(t),
        select=select,
        notes=notes,
    )
    rows: list[dict[str, Any]] = []
    small = 0

    def one(name: str, t: torch.Tensor) -> tuple[str, dict[str, Any] | None]:
        return name, layer_spectrum(name, t, method=method, k=k)

    for name, row in _ordered_map(one, items):
        if row is None:
            small += 1
            continue
        rows.append(row)
        if row["alpha"] is None:
            notes.append(f"{name}: no power-law fit (too few eigenvalues above {EVALS_THRESH:g})")
        elif row["method"].startswith("randomised") and row["n_tail"] >= row["num_evals"] - 1:
            notes.append(
                f"{name}: the tail reaches all {k} computed values; "
                "α may differ from the full spectrum"
            )
    skipped = [n for n in walk.skipped if n not in outside]
    small += len(walk.skipped) - len(skipped)
    if skipped:
        notes.append(f"{len(skipped)} entries that are not 2-D/4-D float weights skipped")
    notes += walk.novalue_note()
    if small:
        notes.append(
            f"{small} matrices outside weightwatcher's limits skipped "
            f"({MIN_EVALS} ≤ eigenvalues ≤ {MAX_EVALS}, larger dimension ≤ {MAX_N})"
        )
    notes += walk.tied_note()
    for row in rows:  # the depth line each matrix belongs to, as weight_stats labels it
        row["kind"], row["block"], row["series"] = (
            classify(row["name"]),
            block_of(row["name"]),
            None,
        )
    _assign_series(rows)
    return SpectralReport(walk.label, rows, [r for r in rows if r["flagged"]], notes)
