"""Per-tensor weight statistics across depth: the numbers behind ``inspect --stats``.

:func:`weight_stats` reads a checkpoint one tensor at a time (or takes tensors in memory) and
computes, for each floating-point tensor, its L2 norm, standard deviation, largest magnitude,
mean, the fraction of elements beyond 6σ, excess kurtosis and sparsity. Every sum is taken in
float64, chunk by chunk (:data:`CHUNK` elements), so a large tensor never needs a float64 copy
of itself: the first pass merges per-chunk means and centred sums of squares (Chan et al.'s
parallel form of Welford's update), the second takes fourth moments and counts outliers about
the exact mean.

Each name is classified into a *block* (the first integer path segment: ``model.layers.3.…`` →
3, ``h.11.…`` → 11, GGUF ``blk.5.…`` → 5; none → ``None``) and a *kind* (see :func:`classify`),
so one line per kind can be drawn over the block index and a layer that stands out from its
kind is flagged (:attr:`StatsReport.flagged`).

Conventions:

* ``std`` is the population standard deviation (``ddof=0``, as ``numpy.std``).
* ``kurtosis`` is Fisher's excess kurtosis ``m4 / m2**2 - 3`` (``scipy.stats.kurtosis`` with
  its defaults); ``None`` where the tensor is constant (``std == 0``, including one element).
* ``outliers_6sigma`` is the fraction of elements with ``|w - mean| > 6 * std`` (0 when
  ``std == 0``).
* ``sparsity`` is the fraction of elements exactly equal to zero.
* A tensor with NaN or infinite values gets NaN statistics (``None`` in :meth:`to_dict`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import ArgumentTypeError

if TYPE_CHECKING:
    import torch

    from .._names import Pattern

#: The most elements of one tensor a value histogram is computed from.
SAMPLE_LIMIT = 1_000_000

#: Bins of a value histogram.
BINS = 32

#: Consecutive elements per run of a value histogram's sample.
SAMPLE_RUN = 500

#: Elements per float64 chunk (1 Mi elements: 8 MiB of float64 per temporary).
CHUNK = 1 << 20

#: The statistics computed per tensor, in the order they are listed.
STATS: tuple[str, ...] = (
    "l2",
    "std",
    "max_abs",
    "mean",
    "outliers_6sigma",
    "kurtosis",
    "sparsity",
)

#: Statistics compared across blocks for :attr:`StatsReport.flagged`, each with the least
#: deviation from the median that counts: ``(relative to |median|, absolute)``; a value must
#: exceed *both* these floors *and* :data:`FLAG_MADS` scaled MADs to be flagged.
FLAG_FLOORS: dict[str, tuple[float, float]] = {
    "l2": (0.5, 0.0),
    "std": (0.5, 0.0),
    "max_abs": (1.0, 0.0),
    "kurtosis": (0.5, 3.0),
    "outliers_6sigma": (0.5, 1e-4),
    "sparsity": (0.0, 0.05),
}

#: Deviations from the kind's median, in scaled MADs (1.4826 · median absolute deviation, the
#: standard deviation for normal data), beyond which a tensor stands out.
FLAG_MADS = 3.0

#: Blocks a series needs before its tensors are compared with each other.
FLAG_MIN_BLOCKS = 5

#: Elements a tensor needs before its kurtosis and outlier fraction are compared (the sample
#: values of small tensors, a norm of 32 weights, vary too much to mean anything).
FLAG_MIN_NUMEL = 1024
_SHAPE_STATS = ("kurtosis", "outliers_6sigma")

_SPARK = "▁▂▃▄▅▆▇█"

_INT = re.compile(r"\d+")

# Kind rules, tried in order on the lower-case module path (the name without its last
# segment, ``in_proj_weight`` split into ``in_proj``): each is a set of exact segments and
# of dotted suffixes of the module path.
_EMBED_SUBSTR = ("embed", "word_embeddings", "position_embeddings", "token_type_embeddings")
_EMBED_SEGS = {"wte", "wpe", "token_embd", "tok_embeddings", "embeddings", "embedding"}
_NORM_SEGS = {"ln_f", "ln_1", "ln_2", "ln_attn", "ln_mlp", "ln", "norm", "attn_norm", "ffn_norm"}
_RULES: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "qkv",
        frozenset(
            {
                "c_attn",
                "qkv",
                "qkv_proj",
                "query_key_value",
                "wqkv",
                "in_proj",
                "attn_qkv",
                "w_pack",
            }
        ),
    ),
    ("q", frozenset({"q_proj", "query", "q", "wq", "attn_q", "q_lin"})),
    ("k", frozenset({"k_proj", "key", "k", "wk", "attn_k", "k_lin"})),
    ("v", frozenset({"v_proj", "value", "v", "wv", "attn_v", "v_lin"})),
    (
        "o",
        frozenset(
            {
                "o_proj",
                "out_proj",
                "wo",
                "attn_output",
                "out_lin",
                "attn.c_proj",
                "attention.output.dense",
                "attention.dense",
                "self_attention.dense",
                "attn.out_proj",
                "attn.proj",
                "attn.dense",
            }
        ),
    ),
    ("router", frozenset({"router", "gate", "ffn_gate_inp", "block_sparse_moe.gate"})),
    ("gate", frozenset({"gate_proj", "w1", "ffn_gate", "ffn_gate_exps", "gate_up_proj"})),
    ("up", frozenset({"up_proj", "w3", "ffn_up", "ffn_up_exps"})),
    ("down", frozenset({"down_proj", "w2", "ffn_down", "ffn_down_exps"})),
    (
        "fc1",
        frozenset(
            {
                "c_fc",
                "fc1",
                "intermediate.dense",
                "dense_h_to_4h",
                "lin1",
                "fc_in",
                "mlp.fc1",
                "linear1",
            }
        ),
    ),
    (
        "fc2",
        frozenset(
            {
                "mlp.c_proj",
                "fc2",
                "output.dense",
                "dense_4h_to_h",
                "lin2",
                "fc_out",
                "mlp.fc2",
                "linear2",
            }
        ),
    ),
)


def block_of(name: str) -> int | None:
    """The block index of an entry name: its first integer path segment.

    Args:
        name: a dotted entry name.

    Returns:
        The integer, or ``None`` when no segment is an integer.

    Example:
        >>> block_of("model.layers.3.self_attn.q_proj.weight"), block_of("h.11.attn.c_attn.weight")
        (3, 11)
        >>> print(block_of("lm_head.weight"))
        None
    """
    for seg in name.split("."):
        if _INT.fullmatch(seg):
            return int(seg)
    return None


def _split(name: str) -> tuple[list[str], bool]:
    """Lower-case module segments of ``name`` and whether it is a bias."""
    segs = name.lower().split(".")
    leaf = segs[-1]
    is_bias = leaf.endswith("bias")
    if leaf in ("weight", "bias", "scale", "g", "b", "gamma", "beta", "kernel"):
        mod = segs[:-1]
    elif leaf.endswith(("_weight", "_bias")):  # nn.MultiheadAttention in_proj_weight
        mod = [*segs[:-1], leaf.rsplit("_", 1)[0]]
    else:
        mod = segs[:-1] if len(segs) > 1 else segs
    return mod, is_bias


def classify(name: str) -> str:
    """The kind of an entry, from its name: which line of the depth plot it belongs to.

    Kinds: ``q``, ``k``, ``v``, ``o`` (attention output), ``qkv`` (fused), ``gate``, ``up``,
    ``down`` (gated MLP), ``fc1`` / ``fc2`` (plain MLP: GPT-2 ``mlp.c_fc`` / ``mlp.c_proj``,
    BERT ``intermediate.dense`` / ``output.dense``), ``router`` (MoE gate), ``rotary`` (a
    rotary-embedding buffer), ``norm`` (any layer / RMS norm), ``embedding``, ``lm_head`` and
    ``other``. A bias gets its parent's kind
    with ``.bias`` appended (``q.bias``, ``norm.bias``): biases and weights differ in scale, so
    they are separate lines.

    Args:
        name: a dotted entry name.

    Returns:
        The kind.

    Example:
        >>> classify("model.layers.0.mlp.gate_proj.weight"), classify("h.0.attn.c_attn.bias")
        ('gate', 'qkv.bias')
        >>> classify("encoder.layer.2.attention.output.LayerNorm.weight")
        'norm'
    """
    mod, is_bias = _split(name)
    kind = _kind(mod)
    return f"{kind}.bias" if is_bias else kind


def _kind(mod: list[str]) -> str:
    path = ".".join(mod)
    last = mod[-1] if mod else ""
    if last == "lm_head" or path in ("output", "head", "classifier") or path.endswith(".lm_head"):
        return "lm_head"
    if any(s in _NORM_SEGS or "norm" in s or s.startswith("ln_") for s in mod[-1:]):
        return "norm"
    if "rotary" in path or path.endswith("inv_freq"):
        return "rotary"
    if last in _EMBED_SEGS or any(s in last for s in _EMBED_SUBSTR):
        return "embedding"
    for kind, keys in _RULES:
        for key in keys:
            if "." in key:
                if path == key or path.endswith("." + key):
                    return kind
            elif last == key:
                return kind
    # experts stored per expert: ``experts.3.w1`` is caught above; ``mlp.experts.gate_up_proj``
    if last.startswith("ln") and last[2:].strip("_0123456789") == "":
        return "norm"
    return "other"


def _stack_of(name: str) -> tuple[str, str]:
    """``(stack prefix, path inside the block)`` for a name with a block index."""
    segs = name.split(".")
    for i, seg in enumerate(segs):
        if _INT.fullmatch(seg):
            return ".".join(segs[:i]), ".".join(segs[i + 1 :])
    return "", name


def tensor_stats(t: torch.Tensor, chunk: int | None = None) -> dict[str, Any]:
    """The statistics of one floating-point tensor, summed in float64 chunk by chunk.

    Args:
        t: a floating-point tensor (any float dtype torch has; float8 / FP4 are widened).
        chunk: elements per float64 chunk (default :data:`CHUNK`).

    Returns:
        A dict with keys ``numel, l2, std, max_abs, mean, outliers_6sigma, kurtosis,
        sparsity, zeros`` (see the module doc for the conventions; ``zeros`` the count of
        elements equal to zero).

    Example:
        >>> import torch
        >>> s = tensor_stats(torch.tensor([0.0, 3.0, 4.0, 0.0]))
        >>> s["l2"], s["sparsity"], s["max_abs"]
        (5.0, 0.5, 4.0)
    """
    import torch

    from .._values import widen

    chunk = CHUNK if chunk is None else chunk
    flat = widen(t.detach()).reshape(-1)
    n = flat.numel()
    if n == 0:
        return {
            "numel": 0,
            "l2": 0.0,
            "std": None,
            "max_abs": None,
            "mean": None,
            "outliers_6sigma": None,
            "kurtosis": None,
            "sparsity": None,
            "zeros": 0,
        }
    mean = 0.0
    m2 = 0.0
    seen = 0
    sumsq = 0.0
    lo = math.inf
    hi = -math.inf
    zeros = 0
    for start in range(0, n, chunk):  # pass 1: mean, centred sum of squares (merged), extremes
        c = flat[start : start + chunk].to(torch.float64, copy=True)  # one float64 chunk, reused
        k = c.numel()
        lo_c, hi_c = c.aminmax()
        lo = min(lo, float(lo_c))
        hi = max(hi, float(hi_c))
        zeros += k - int(torch.count_nonzero(c))
        sumsq += float(torch.dot(c, c))
        cm = float(c.sum()) / k
        c.sub_(cm)
        cm2 = float(torch.dot(c, c))
        tot = seen + k
        delta = cm - mean
        mean += delta * k / tot
        m2 += cm2 + delta * delta * seen * k / tot
        seen = tot
        del c
    var = m2 / n
    std = math.sqrt(var) if var == var and var >= 0 else math.nan
    m4 = 0.0
    out = 0
    limit2 = (6.0 * std) ** 2
    for start in range(0, n, chunk):  # pass 2: fourth moment and outliers about the exact mean
        d = flat[start : start + chunk].to(torch.float64, copy=True)  # never the input itself
        d.sub_(mean).square_()
        m4 += float(torch.dot(d, d))
        if std > 0:
            out += int(torch.count_nonzero(d > limit2))
        del d
    finite = math.isfinite(mean) and math.isfinite(var)
    kurt = m4 / n / (var * var) - 3.0 if finite and var > 0 else None
    if not finite:
        kurt = math.nan
    return {
        "numel": n,
        "l2": math.sqrt(sumsq),
        "std": std,
        "max_abs": max(abs(lo), abs(hi)) if finite or math.isinf(mean) else math.nan,
        "mean": mean,
        "outliers_6sigma": out / n if finite else math.nan,
        "kurtosis": kurt,
        "sparsity": zeros / n,
        "zeros": zeros,
    }


def value_histogram(t: torch.Tensor, zeros: int | None = None) -> dict[str, Any]:
    """Zero count over the whole tensor and a histogram of a sample of it.

    A tensor of more than :data:`SAMPLE_LIMIT` elements is sampled in runs of
    :data:`SAMPLE_RUN` consecutive elements at seeded random offsets (runs read memory in
    order: 4x faster than as many single random elements on a large tensor).

    Args:
        t: the tensor.
        zeros: its zero count when the caller has it already (not counted again).

    Returns:
        ``{}`` for meta or empty tensors, else ``zeros`` and (for finite values) ``hist`` =
        ``{"min", "max", "counts", "sampled", "nonfinite"}`` (:data:`BINS` counts over
        ``[min, max]`` of a seeded sample of at most :data:`SAMPLE_LIMIT` elements).

    Example:
        >>> import torch
        >>> h = value_histogram(torch.tensor([0.0, 1.0, 1.0, 2.0]))
        >>> h["zeros"], h["hist"]["min"], h["hist"]["max"], sum(h["hist"]["counts"])
        (1, 0.0, 2.0, 4)
    """
    import torch

    if t.is_meta or t.numel() == 0 or t.is_complex():
        return {}
    from .._values import widen

    with torch.no_grad():
        flat = widen(t.detach()).reshape(-1)  # F8, U64, FP4: the same values, computable
        n = flat.numel()
        out: dict[str, Any] = {
            "zeros": n - int(torch.count_nonzero(flat)) if zeros is None else zeros
        }
        if n > SAMPLE_LIMIT:
            g = torch.Generator().manual_seed(0)
            runs = SAMPLE_LIMIT // SAMPLE_RUN
            starts = torch.randint(n - SAMPLE_RUN + 1, (runs, 1), generator=g)
            idx = (starts + torch.arange(SAMPLE_RUN)).reshape(-1).to(flat.device)
            sample = flat[idx]
        else:
            sample = flat
        sample = sample.to("cpu", torch.float32)
        finite = sample[torch.isfinite(sample)]
        nonfinite = sample.numel() - finite.numel()
        if finite.numel() == 0:
            return out
        lo, hi = float(finite.min()), float(finite.max())
        if lo == hi:
            counts = [finite.numel()]
        else:
            counts = torch.histc(finite, bins=BINS, min=lo, max=hi).to(torch.int64).tolist()
        out["hist"] = {
            "min": lo,
            "max": hi,
            "counts": counts,
            "sampled": int(sample.numel()),
            "nonfinite": nonfinite,
        }
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


class DepthReport:
    """What every depth report shares: per-tensor rows labelled with a depth line (series)
    and a block index, drawn one line per series over the blocks.

    A subclass is a dataclass with the attributes ``tensors`` (one dict per tensor with at
    least ``name, kind, block, series`` and every statistic of :attr:`stat_names`) and
    ``blocks`` (the number of block indices), and names its statistics in the class-level
    :attr:`stat_names`. :class:`StatsReport` and
    :class:`~paramscope.reporting._change.ChangeReport` are the two.

    Attributes:
        stat_names: the statistics of a row, in the order they are listed.
    """

    stat_names: ClassVar[tuple[str, ...]] = ()
    #: Statistics whose sparklines are scaled from 0 (a change of 0 draws ``▁``, not the
    #: ``▄`` of a flat series).
    zero_floor: ClassVar[tuple[str, ...]] = ()
    tensors: list[dict[str, Any]]
    blocks: int

    def series(self) -> list[str]:
        """The depth lines' labels, in first-seen order.

        Returns:
            The distinct ``series`` of the tensors in blocks.

        Example:
            >>> import torch
            >>> r = weight_stats({f"h.{i}.mlp.c_fc.weight": torch.ones(2) for i in range(3)})
            >>> r.series()
            ['fc1']
        """
        seen: dict[str, None] = {}
        for t in self.tensors:
            if t["series"] is not None:
                seen.setdefault(t["series"], None)
        return list(seen)

    def by_kind(self, stat: str = "l2") -> dict[str, list[tuple[int, float | None]]]:
        """One statistic per depth line: ``{series: [(block, value), ...]}`` in block order.

        Args:
            stat: one of :attr:`stat_names` (:data:`STATS` for a :class:`StatsReport`).

        Returns:
            For each series (a kind, or ``kind [path]`` where a block holds several tensors of
            that kind), its blocks and values (``None`` for NaN / inf).

        Raises:
            ArgumentError: ``stat`` is not a statistic.

        Example:
            >>> import torch
            >>> sd = {f"h.{i}.attn.q_proj.weight": torch.full((4,), float(i)) for i in range(3)}
            >>> weight_stats(sd).by_kind("max_abs")
            {'q': [(0, 0.0), (1, 1.0), (2, 2.0)]}
        """
        if stat not in self.stat_names:
            from .._errors import ArgumentError

            raise ArgumentError(
                f"by_kind: expected a statistic {', '.join(self.stat_names)}, found {stat!r}"
            )
        out: dict[str, list[tuple[int, float | None]]] = {}
        for t in self.tensors:
            if t["series"] is not None:
                out.setdefault(t["series"], []).append((t["block"], _num(t[stat])))
        for rows in out.values():
            rows.sort(key=lambda r: r[0])
        return out

    def series_dict(self) -> dict[str, dict[str, list[list[Any]]]]:
        """Every statistic per depth line, JSON-able: the ``series`` part of ``to_dict``.

        Returns:
            ``{series: {stat: [[block, value], ...]}}`` for every series and every statistic
            of :attr:`stat_names` (``None`` for NaN / inf).

        Example:
            >>> import torch
            >>> sd = {f"h.{i}.attn.q_proj.weight": torch.full((4,), float(i)) for i in range(2)}
            >>> weight_stats(sd).series_dict()["q"]["max_abs"]
            [[0, 0.0], [1, 1.0]]
        """
        per = self._all_series()
        return {
            s: {st: [[b, v] for b, v in rows] for st, rows in per.get(s, {}).items()}
            for s in self.series()
        }

    def _all_series(self) -> dict[str, dict[str, list[tuple[int, float | None]]]]:
        per: dict[str, dict[str, list[tuple[int, float | None]]]] = {}
        for st in self.stat_names:
            for s, rows in self.by_kind(st).items():
                per.setdefault(s, {})[st] = rows
        return per

    def sparkline(self, series: str, stat: str = "l2") -> str:
        """One character per block index (0 … :attr:`blocks` − 1) for a series: ``▁``…``█``
        scaled from the series' smallest to its largest value, ``·`` where the series has no
        tensor in that block or the value is NaN / inf, ``▄`` throughout for a flat series.

        Args:
            series: a label from :meth:`series`.
            stat: one of :attr:`stat_names`.

        Returns:
            The sparkline, :attr:`blocks` characters long.

        Example:
            >>> import torch
            >>> sd = {f"h.{i}.attn.q_proj.weight": torch.full((4,), float(i)) for i in range(8)}
            >>> weight_stats(sd).sparkline("q", "max_abs")
            '▁▂▃▄▅▆▇█'
        """
        rows = dict(self.by_kind(stat).get(series, []))
        return _spark([rows.get(b) for b in range(self.blocks)])

    def depth_phrase(self, stat: str) -> str:
        """What the sparklines span, for a header: ``12 blocks; l2 over block 0..11``, or
        ``no repeated blocks`` (nothing is drawn over depth then).

        Args:
            stat: the statistic drawn.

        Returns:
            The phrase.

        Example:
            >>> import torch
            >>> weight_stats({"w": torch.ones(2)}).depth_phrase("l2")
            'no repeated blocks'
        """
        if not self.blocks:
            return "no repeated blocks"
        return f"{self.blocks} blocks; {stat} over block 0..{self.blocks - 1}"

    def spark_rows(
        self, stat: str, width: int | None = None, *, only: list[str] | None = None
    ) -> list[str]:
        """The sparkline rows of ``to_text``: one per series, its label, the sparkline of
        ``stat`` over the block index and the range of its values.

        Args:
            stat: one of :attr:`stat_names`.
            width: the line width; longer sparklines are binned (each character the largest
                value of its blocks) and labels shortened to fit, every row the same room.
                ``None`` (piped output): nothing is cut, one character per block.
            only: the series to draw (default: all of :meth:`series`).

        Returns:
            The rows, each led by two spaces; labels escaped for a terminal.

        Example:
            >>> import torch
            >>> sd = {f"h.{i}.attn.q_proj.weight": torch.full((4,), float(i)) for i in range(4)}
            >>> weight_stats(sd).spark_rows("max_abs")
            ['  q  ▁▃▆█  max_abs 0..3']
        """
        from .._text import printable

        by = self.by_kind(stat)
        names = self.series() if only is None else only
        labels = [printable(s) for s in names]
        lw = max((len(s) for s in labels), default=0)
        floor = 0.0 if stat in self.zero_floor else None
        tails = {}
        for s in names:
            got = [v for _, v in by[s] if v is not None]
            tails[s] = f"  {stat} {_fmt(min(got))}..{_fmt(max(got))}" if got else f"  {stat} -"
        tw = max((len(t) for t in tails.values()), default=0)
        lines = []
        for label, s in zip(labels, names, strict=True):
            vals = dict(by[s])
            line_vals = [vals.get(b) for b in range(self.blocks)]
            tail = tails[s]
            lab = label
            spark_vals: list[float | None] = line_vals
            if width is not None:  # the same room for every sparkline, so the rows align
                labw = min(lw, max(8, width // 3))
                lab = _cut(label, labw).ljust(labw)
                spark_vals = _bin(line_vals, max(1, width - labw - 4 - tw))
            else:
                lab = lab.ljust(lw)
            lines.append(f"  {lab}  {_spark(spark_vals, floor)}{tail}")
        return lines


@dataclass
class StatsReport(DepthReport):
    """Weight statistics of every floating-point tensor of a source, by kind and block.

    Attributes:
        source: what was read (a path, or ``"(in memory)"``).
        tensors: one dict per tensor, in source order, with keys ``name, kind, block, series,
            shape, numel, dtype, l2, std, max_abs, mean, outliers_6sigma, kurtosis,
            sparsity`` (``block`` ``None`` outside repeated blocks; ``series`` the label of
            the depth line the tensor belongs to, ``None`` outside blocks).
        flagged: one dict per (tensor, statistic) that stands out from its series across
            blocks, keys ``name, kind, block, series, stat, value, median, factor, mads``
            (``factor`` = value / median, ``None`` for a zero median; ``mads`` = the
            deviation in scaled MADs, ``None`` when the MAD is 0).
        notes: what was skipped or approximated.
        blocks: the number of block indices (largest + 1; 0 without blocks).
    """

    stat_names: ClassVar[tuple[str, ...]] = STATS

    source: str
    tensors: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN and inf as ``None``): the tensors, every statistic per series,
        the flagged tensors and the notes.

        Returns:
            Keys ``source, blocks, stats, tensors, series, flagged, notes``; ``series`` maps
            each label to ``{stat: [[block, value], ...]}`` for every statistic.

        Example:
            >>> import json, torch
            >>> json.dumps(weight_stats({"w": torch.zeros(3)}).to_dict()["tensors"][0]["kurtosis"])
            'null'
        """
        return {
            "source": self.source,
            "blocks": self.blocks,
            "stats": list(STATS),
            "tensors": [{k: _clean(v) for k, v in t.items()} for t in self.tensors],
            "series": self.series_dict(),
            "flagged": [{k: _clean(v) for k, v in f.items()} for f in self.flagged],
            "notes": list(self.notes),
        }

    def to_text(self, width: int | None = None, *, stat: str = "l2") -> str:
        """The human form ``inspect --stats`` prints: one row per depth line (series) with a
        sparkline of ``stat`` over the block index and its range, the tensors outside blocks,
        then the flagged tensors and the notes.

        Args:
            width: the line width; longer sparklines are binned (each character the largest
                value of its blocks) and labels shortened to fit. ``None`` (piped output):
                nothing is cut, one character per block.
            stat: the statistic drawn (one of :data:`STATS`; ``--json`` has all of them).

        Returns:
            The text, without a final newline; names from files are escaped.

        Example:
            >>> import torch
            >>> sd = {f"h.{i}.attn.q_proj.weight": torch.full((4,), float(i)) for i in range(4)}
            >>> print(weight_stats(sd).to_text().splitlines()[1])
              q  ▁▃▆█  l2 0..6
        """
        from .._text import printable

        head = (
            f"weight statistics of {printable(self.source)}: {len(self.tensors)} tensors, "
            f"{self.depth_phrase(stat)}"
        )
        lines = [_cut(head, width), *self.spark_rows(stat, width)]
        outside = [t for t in self.tensors if t["series"] is None]
        if outside:
            lines.append("outside blocks:")
            for t in outside:
                row = f"  {printable(t['name'])} ({t['kind']})  {stat} {_fmt(_num(t[stat]))}"
                lines.append(_cut(row, width) if width is not None else row)
        if self.flagged:
            per: dict[str, list[str]] = {}
            for f in self.flagged:  # one line per tensor, its statistics in STATS order
                how = f"{_fmt(f['factor'])}x median" if f["factor"] is not None else "median 0"
                mads = f", {_fmt(f['mads'])} MADs" if f["mads"] is not None else ""
                per.setdefault(f["name"], []).append(
                    f"{f['stat']} {_fmt(f['value'])} ({how} {_fmt(f['median'])}{mads})"
                )
            lines.append(f"flagged tensors ({len(per)}):")
            for name, parts in per.items():
                lines.append(_cut(f"  {printable(name)}: {'; '.join(parts)}", width))
        else:
            lines.append("flagged: none")
        for n in self.notes:
            lines.append(_cut(f"note: {printable(n)}", width))
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def _cut(s: str, width: int | None) -> str:
    if width is None or len(s) <= width:
        return s
    return s[: max(1, width - 1)] + "…"


def _bin(vals: list[float | None], room: int) -> list[float | None]:
    if len(vals) <= room:
        return vals
    out: list[float | None] = []
    for i in range(room):
        part = [
            v for v in vals[i * len(vals) // room : (i + 1) * len(vals) // room] if v is not None
        ]
        out.append(max(part) if part else None)
    return out


def _spark(vals: list[float | None], floor: float | None = None) -> str:
    """``▁``…``█`` from the smallest value (or ``floor``, when lower) to the largest; ``·``
    for ``None``; a flat series is ``▄`` throughout, or ``▁`` when it sits on ``floor``."""
    got = [v for v in vals if v is not None]
    if not got:
        return "·" * len(vals)
    lo, hi = min(got), max(got)
    if floor is not None:
        lo = min(lo, floor)
    out = []
    for v in vals:
        if v is None:
            out.append("·")
        elif hi == lo:
            out.append(_SPARK[0] if lo == floor else _SPARK[3])
        else:
            out.append(_SPARK[min(7, int((v - lo) / (hi - lo) * 8))])
    return "".join(out)


#: The label of tensors given in memory (not a file).
IN_MEMORY = "(in memory)"


def _items(
    source: Any, notes: list[str], what: str, entry_ok: Callable[[Any], bool]
) -> tuple[str, Iterator[tuple[str, Any]]]:
    """``(label, iterator of (name, tensor or None))`` for a path (streamed; entries that
    ``entry_ok`` refuses are never read: ``None``) or for tensors in memory."""
    if isinstance(source, (str, os.PathLike)):
        from ..io._reader import SourceReader

        reader = SourceReader(source)
        notes.extend(reader.notes)

        def from_file() -> Iterator[tuple[str, Any]]:
            with reader:
                wanted = []
                for e in reader.entries:
                    if entry_ok(e):
                        wanted.append(e)
                    else:
                        yield e.name, None  # counted as skipped, never read
                for e, t in reader.stream(wanted):
                    yield e.name, t

        return os.fspath(source), from_file()
    mapping: Mapping[str, Any] | None = None
    if isinstance(source, Mapping):
        mapping = source
    else:
        import torch

        if isinstance(source, torch.nn.Module):
            mapping = source.state_dict(keep_vars=True)
    if mapping is None:
        raise ArgumentTypeError(
            f"{what}: expected a checkpoint path, a ParamDict, a dict of tensors or an "
            f"nn.Module, found {type(source).__name__}"
        )
    return IN_MEMORY, iter(list(mapping.items()))


@dataclass
class Walk:
    """The tensors of a source that a measure takes, and what it left out (for the notes):
    see :func:`walk_tensors`."""

    label: str
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    novalue: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)

    def novalue_note(self) -> list[str]:
        """The note on tensors without values, if any."""
        if not self.novalue:
            return []
        return [f"{len(self.novalue)} entries without values (meta) skipped"]

    def tied_note(self) -> list[str]:
        """The note on tied duplicates, if any."""
        if not self.tied:
            return []
        return [f"{len(self.tied)} tied duplicates skipped: {', '.join(self.tied[:3])}"]


def walk_tensors(
    source: Any,
    *,
    what: str,
    entry_ok: Callable[[Any], bool],
    tensor_ok: Callable[[Any], bool],
    select: Pattern | None,
    notes: list[str],
) -> tuple[Walk, Iterator[tuple[str, Any]]]:
    """The ``(name, tensor)`` pairs of a source a measure takes, one at a time: those
    ``select`` matches, that ``tensor_ok`` accepts (files: whose entry ``entry_ok`` accepts,
    the others never read), with values (not meta), and in memory each storage once (a tied
    duplicate is named in :attr:`Walk.tied`). When the iterator ends, a ``select`` that matched
    nothing raises the usual :func:`~paramscope._names.no_match` error.

    Args:
        source: a checkpoint path, a ParamDict, a dict of tensors or a ``torch.nn.Module``.
        what: the calling function's name, for errors.
        entry_ok: which manifest entries of a file to read.
        tensor_ok: which tensors to measure.
        select: optional glob / ``re:`` pattern (or list) on names.
        notes: the caller's notes (the reader's are added).

    Returns:
        ``(the walk's record, the iterator)``.
    """
    label, items = _items(source, notes, what, entry_ok)
    walk = Walk(label)
    match = None
    if select is not None:
        from .._names import compile_pattern

        match = compile_pattern(select)

    def taken() -> Iterator[tuple[str, Any]]:
        seen: dict[tuple[Any, ...], str] = {}
        for name, t in items:
            walk.names.append(name)
            if match is not None and not match(name):
                continue
            if t is None or not tensor_ok(t):
                walk.skipped.append(name)
                continue
            if t.device.type == "meta":
                walk.novalue.append(name)
                continue
            if label == IN_MEMORY and t.numel():
                key = (
                    t.untyped_storage().data_ptr(),
                    t.storage_offset(),
                    tuple(t.shape),
                    tuple(t.stride()),
                    t.dtype,
                )
                if key in seen:
                    walk.tied.append(f"{name} = {seen[key]}")
                    continue
                seen[key] = name
            yield name, t
        if match is not None and not any(match(n) for n in walk.names):
            from .._names import no_match

            raise no_match(select, walk.names, where=label)  # type: ignore[arg-type]

    return walk, taken()


def weight_stats(
    source: Any, *, select: Pattern | None = None, histograms: bool = False
) -> StatsReport:
    """Per-tensor weight statistics, by kind and block, with the tensors that stand out.

    Values are read one tensor at a time from files (memory bounded by the largest tensor
    plus float64 chunks of :data:`CHUNK` elements). Only floating-point tensors are measured;
    the others, tensors without values (meta) and tied duplicates in memory are skipped and
    counted in :attr:`StatsReport.notes`. A tensor is flagged when one of the statistics of
    :data:`FLAG_FLOORS` lies more than :data:`FLAG_MADS` scaled MADs from the median of its
    series (same kind, same position in the block) over at least :data:`FLAG_MIN_BLOCKS`
    blocks, and also beyond that statistic's relative and absolute floors (kurtosis and
    outlier fraction only for tensors of at least :data:`FLAG_MIN_NUMEL` elements).

    Args:
        source: a checkpoint path (any format :class:`~paramscope.io._reader.SourceReader`
            reads), a ParamDict, a dict of tensors or a ``torch.nn.Module``.
        select: optional glob / ``re:`` pattern (or list) on names; only matching tensors.
        histograms: also give each tensor row ``zeros`` and ``hist``, the value histogram
            of :func:`value_histogram`, in the same pass (the HTML report's table takes them
            from here instead of reading the file again).

    Returns:
        A :class:`StatsReport`.

    Raises:
        ArgumentTypeError: ``source`` is none of those.
        TargetError: ``source`` names a model without values (``zoo:gpt2``).
        MissingNameError: ``select`` matches no entry.

    Example:
        >>> import torch
        >>> sd = {f"layers.{i}.self_attn.q_proj.weight": torch.randn(16, 16) for i in range(6)}
        >>> sd["layers.4.self_attn.q_proj.weight"] *= 20
        >>> r = weight_stats(sd)
        >>> sorted({f["name"] for f in r.flagged})
        ['layers.4.self_attn.q_proj.weight']
    """
    import torch

    notes: list[str] = []
    walk, items = walk_tensors(
        source,
        what="weight_stats",
        entry_ok=lambda e: e.dtype.is_float,
        tensor_ok=lambda t: torch.is_floating_point(t) or _is_low_float(t),
        select=select,
        notes=notes,
    )
    tensors: list[dict[str, Any]] = []
    for name, t in items:
        s = tensor_stats(t)
        block = block_of(name)
        tensors.append(
            {
                "name": name,
                "kind": classify(name),
                "block": block,
                "series": None,
                "shape": list(t.shape),
                "numel": s["numel"],
                "dtype": str(t.dtype).removeprefix("torch."),
                **{k: s[k] for k in STATS},
                **(value_histogram(t, zeros=s["zeros"]) if histograms else {}),
            }
        )
    if walk.skipped:
        notes.append(f"{len(walk.skipped)} non-float entries skipped (e.g. {walk.skipped[0]})")
    notes += walk.novalue_note() + walk.tied_note()
    _assign_series(tensors)
    blocks = [t["block"] for t in tensors if t["series"] is not None]
    report = StatsReport(walk.label, tensors, [], notes, (max(blocks) + 1) if blocks else 0)
    report.flagged = _flag(report)
    return report


def _is_low_float(t: Any) -> bool:
    name = str(t.dtype)
    return "float8" in name or "float4" in name


def _assign_series(tensors: list[dict[str, Any]]) -> None:
    """Label each tensor in a block with its depth line: its kind, with the stack prefix
    where there are several stacks (encoder / decoder) and with its path inside the block
    where a block holds several tensors of that kind (GPT-2 ``ln_1`` / ``ln_2``)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in tensors:
        if t["block"] is not None:
            stack, _ = _stack_of(t["name"])
            groups.setdefault((stack, t["kind"]), []).append(t)
    stacks = {k[0] for k in groups}
    for (stack, kind), ts in groups.items():
        per_block: dict[int, int] = {}
        for t in ts:
            per_block[t["block"]] = per_block.get(t["block"], 0) + 1
        several = any(n > 1 for n in per_block.values())
        for t in ts:
            label = kind
            if several:
                inner = _stack_of(t["name"])[1].rsplit(".", 1)[0]
                label = f"{kind} [{inner}]"
            if len(stacks) > 1:
                label = f"{stack}: {label}"
            t["series"] = label


def _flag(report: StatsReport) -> list[dict[str, Any]]:
    import statistics

    out: list[dict[str, Any]] = []
    for stat, (rel, ab) in FLAG_FLOORS.items():
        for series, rows in report.by_kind(stat).items():
            vals = [v for _, v in rows if v is not None]
            if len({b for b, _ in rows}) < FLAG_MIN_BLOCKS or len(vals) < FLAG_MIN_BLOCKS:
                continue
            med = statistics.median(vals)
            mad = 1.4826 * statistics.median(abs(v - med) for v in vals)
            floor = max(rel * abs(med), ab)
            for block, v in rows:
                if v is None:
                    continue
                dev = abs(v - med)
                if dev > FLAG_MADS * mad and dev > floor:
                    t = next(
                        t for t in report.tensors if t["series"] == series and t["block"] == block
                    )
                    if stat in _SHAPE_STATS and t["numel"] < FLAG_MIN_NUMEL:
                        continue
                    out.append(
                        {
                            "name": t["name"],
                            "kind": t["kind"],
                            "block": block,
                            "series": series,
                            "stat": stat,
                            "value": v,
                            "median": med,
                            "factor": v / med if med else None,
                            "mads": dev / mad if mad else None,
                        }
                    )
    order = {t["name"]: i for i, t in enumerate(report.tensors)}
    out.sort(key=lambda f: (order[f["name"]], STATS.index(f["stat"])))
    return out
