"""A self-contained, offline HTML report of a model or checkpoint.

:func:`report` writes one HTML file with all CSS and JavaScript inline and the data embedded as
one JSON blob (``<script type="application/json" id="paramscope-data">``). It makes no request
of any kind (no CDN, no web font, no ``fetch``) and works opened from ``file://``. It shows:

* headline counts (parameters, trainable, frozen, buffers, tie groups) equal to
  :func:`paramscope.count`, and a memory table from :func:`paramscope.estimate_memory`
  (inference fp32 and bf16, training with mixed-precision AdamW);
* a zoomable, squarified treemap of the module tree (the prefix tree for checkpoints), area
  proportional to parameters, with a colour mode switch (trainable/frozen, dtype, layer type),
  a hover tooltip and a breadcrumb. A view of node ``X`` shows the *frontier* ``depth`` levels
  below ``X``: every descendant exactly ``depth`` levels down with parameters, plus shallower
  nodes with parameters and no child with parameters (each a rectangle with ``data-path``);
  parameters registered on an inner node itself get one extra rectangle with ``data-own``;
* tie groups and shared modules;
* a sortable, filterable per-tensor table; when values can be read (tensors in memory that
  are not on the meta device, or a checkpoint read one tensor at a time) and ``values=True``,
  zero counts and a value histogram per tensor (``torch.histc`` of a sample of at most
  1,000,000 elements, stored as bin counts, drawn as inline SVG on demand), and for quantised
  entries their bits, scheme and granularity.

The page's template, style sheet and script are package data, ``reporting/assets/report.html``,
``report.css`` and ``report.js``, read with :mod:`importlib.resources`; :func:`render_html`
fills the template's slots in one pass.

Running the browser test locally (tests/test_report_html.py): it needs Playwright for Python
(``pip install playwright``; do not run ``playwright install``) and Debian's Chromium at
``/usr/bin/chromium`` (``apt-get install chromium``), which Playwright launches directly with
every non-``file:`` request blocked::

    pip install playwright && sudo apt-get install chromium
    pytest tests/test_report_html.py
"""

from __future__ import annotations

import contextlib
import functools
import html
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._enums import Role
from .._errors import ArgumentError, ArgumentTypeError
from .._quantstore import quant_record
from ._stats import BINS as _BINS
from ._stats import SAMPLE_LIMIT
from ._stats import value_histogram as _value_stats

if TYPE_CHECKING:
    import torch

    from .._manifest import Entry

__all__ = ["SAMPLE_LIMIT", "build_report_data", "display_name", "render_html", "report"]

_DEFAULT_DEPTH = 2


def report(
    source: Any,
    path: str | os.PathLike[str],
    *,
    depth: int | None = None,
    values: bool = True,
    title: str | None = None,
    flops: bool = False,
    input_shape: Sequence[int] | None = None,
    seq: int | None = None,
    batch: int = 1,
    context: int | None = None,
    stats: bool = False,
    spectral: bool = False,
    against: Any = None,
) -> Path:
    """Write a self-contained offline HTML report of a model or checkpoint.

    Args:
        source: a ``torch.nn.Module``, a checkpoint path, a ParamDict, a dict of tensors, or a
            TARGET string (``zoo:NAME``, ``package.module:callable``, a config.json; see
            :func:`paramscope.resolve_target`).
        path: the HTML file to write (atomically).
        depth: treemap levels shown at once (default: automatic, the shallowest level with
            at least 8 rectangles, where repeated blocks become visible).
        values: read values for histograms and zero counts where they are available.
        title: the page title (default: the model's name: a GGUF ``general.name``, the
            ``_name_or_path`` of a ``config.json`` beside the checkpoint, the file's name or its
            folder's when the file name is generic; the full source is the subtitle).
        flops: measure a forward (:func:`paramscope.flops`, on the meta device or under fake
            tensors) and show each module's FLOPs in the treemap tooltip and the total in a
            card; needs a model and ``input_shape`` or ``seq``.
        input_shape: with ``flops``: the shape of one float input.
        seq: token ids of ``batch × seq`` for ``flops``; also adds a training row with the
            activations (Korthikanti et al. 2022) to the memory table, when the
            transformer's config is known (else a note says why not).
        batch: micro-batch for ``seq`` and sequences for the KV cache.
        context: tokens per sequence of an inference row with the KV cache (default:
            ``seq``).
        stats: add weight statistics across depth (:func:`paramscope.weight_stats`: L2, std,
            max |w|, outliers beyond 6σ, kurtosis, sparsity per tensor, drawn per tensor kind
            over the block index); needs values (a checkpoint, tensors or a model with
            weights).
        spectral: add the power-law α of every weight matrix
            (:func:`paramscope.spectral_stats`), drawn across depth with 2 ≤ α ≤ 6 marked.
        against: a second source ``B`` (same kinds as ``source``): add the per-layer change
            of ``source`` against ``B`` (:func:`paramscope.layer_changes`: ‖A−B‖/‖B‖,
            cosine, sign flips; SQNR and bits per weight when ``source`` is quantised),
            drawn across depth and as a treemap coloured by change.

    Returns:
        The path written.

    Raises:
        ArgumentError: a depth below 1; ``flops`` for a checkpoint or without inputs;
            ``input_shape`` without ``flops``; ``stats``, ``spectral`` or ``against`` for a
            model without values (built on the meta device).
        ArgumentTypeError: a source of a type it does not take.
        ParamscopeError: a source that cannot be resolved (a subclass naming why).

    Example:
        >>> import tempfile, os, torch
        >>> out = report(torch.nn.Linear(4, 2), os.path.join(tempfile.mkdtemp(), "r.html"))
        >>> out.read_text().count('id="paramscope-data"')
        1
    """
    from .._atomic import atomic_write

    data = build_report_data(
        source,
        depth=depth,
        values=values,
        title=title,
        flops=flops,
        input_shape=input_shape,
        seq=seq,
        batch=batch,
        context=context,
        stats=stats,
        spectral=spectral,
        against=against,
    )
    text = render_html(data)
    dest = Path(path)
    with atomic_write(dest) as f:
        f.write(text.encode("utf-8"))
    return dest


def _resolve(source: Any) -> tuple[Any, str]:
    """The source as a module, checkpoint path (str) or ParamDict, and a default title."""
    from .._paramdict import ParamDict

    if isinstance(source, (str, os.PathLike)):
        from .._targets import resolve_target

        spec = os.fspath(source)
        return resolve_target(spec), spec
    if isinstance(source, ParamDict):
        return source, "ParamDict"
    if isinstance(source, dict):
        return ParamDict(source), "dict of tensors"
    if hasattr(source, "named_parameters"):
        return source, type(source).__name__
    raise ArgumentTypeError(
        f"report: expected a module, checkpoint path, ParamDict or TARGET, "
        f"found {type(source).__name__}"
    )


#: The automatic treemap depth opens at the first level with at least this many rectangles.
AUTO_CELLS = 8
#: … looking no deeper than this.
AUTO_MAX_DEPTH = 6


def _frontier_size(node: dict[str, Any], depth: int) -> int:
    """Rectangles a treemap view ``depth`` levels deep shows (cells with parameters)."""
    kids = [c for c in node.get("c", ()) if c.get("v", 0) > 0]
    if depth == 0 or not kids:
        return 1
    own = 1 if node.get("o", 0) > 0 else 0
    return own + sum(_frontier_size(c, depth - 1) for c in kids)


def _auto_depth(tree: dict[str, Any]) -> int:
    """The treemap's opening depth: the shallowest level showing :data:`AUTO_CELLS` or more
    rectangles (where a transformer's repeated blocks become visible: GPT-2's ``h.0`` …
    ``h.11`` at 3), else the level where the picture stops changing.

    Example:
        >>> leaf = {"v": 1}
        >>> _auto_depth({"v": 9, "c": [{"v": 9, "c": [leaf] * 9}]})
        2
    """
    best, seen = 1, 0
    for d in range(1, AUTO_MAX_DEPTH + 1):
        n = _frontier_size(tree, d)
        if n >= AUTO_CELLS:
            return d
        if n > seen:
            best, seen = d, n
    return best


#: File names that say nothing about the model: the folder's name says more.
_GENERIC = re.compile(
    r"^(model|pytorch_model|consolidated|params|weights|checkpoint|adapter_model)"
    r"([.-].*)?\.(safetensors|bin|pt|pth|gguf|npz|onnx|msgpack|keras|h5|json)$"
)


def display_name(source: Any, fallback: str) -> str:
    """The model's name for a report title: ``zoo:NAME``'s NAME; for a checkpoint the name
    its metadata gives (GGUF ``general.name``, ``_name_or_path`` of the ``config.json``
    beside it), else the file's name, or its folder's when the file name is generic
    (``model.safetensors``). The full source stays in the page's subtitle.

    Args:
        source: the report's source (a TARGET, a path or URL, or an object).
        fallback: the name when none can be found (an object, a model TARGET).

    Returns:
        The name.

    Example:
        >>> display_name("zoo:gpt2", "?"), display_name(object(), "my model")
        ('gpt2', 'my model')
    """
    if not isinstance(source, (str, os.PathLike)):
        return fallback
    spec = os.fspath(source)
    if spec.startswith("zoo:"):
        return spec[4:]
    from .._files import is_url
    from .._target_kind import target_kind

    if target_kind(spec) != "checkpoint":
        return fallback
    with contextlib.suppress(Exception):  # a name is a nicety: never fail a report for it
        from ..io import read_manifest

        name = read_manifest(spec).metadata.get("general.name")
        if isinstance(name, str) and name.strip():
            return name.strip()
    p = spec.rstrip("/")
    folder, _, base = p.rpartition("/")
    if not is_url(spec) and os.path.isdir(spec):
        folder, base = p, ""
    with contextlib.suppress(Exception):
        from ..io._quantconfig import read_config_json
        from ..io._remote import as_path

        cfg = read_config_json(as_path(folder or ".") / "config.json")
        name = cfg.get("_name_or_path") if isinstance(cfg, dict) else None
        if isinstance(name, str) and name.strip():
            return name.strip()
    if base and not _GENERIC.match(base):
        return base
    return folder.rpartition("/")[2] or base or fallback


def build_report_data(
    source: Any,
    *,
    depth: int | None = None,
    values: bool = True,
    title: str | None = None,
    flops: bool = False,
    input_shape: Sequence[int] | None = None,
    seq: int | None = None,
    batch: int = 1,
    context: int | None = None,
    stats: bool = False,
    spectral: bool = False,
    against: Any = None,
) -> dict[str, Any]:
    """The JSON data a report embeds (what :func:`report` writes, before rendering).

    Args:
        source: as for :func:`report`.
        depth: treemap levels shown at once (default: automatic, the shallowest level with
            at least 8 rectangles, where repeated blocks become visible).
        values: read values where available.
        title: the page title.
        flops: measure the FLOPs per module (``"f"`` on each tree node, ``flops`` totals).
        input_shape: with ``flops``: one float input's shape.
        seq: token ids for ``flops``; adds a training row with activations to ``memory``.
        batch: micro-batch / sequences.
        context: adds an inference row with the KV cache (default: ``seq``).
        stats: add ``stats`` (:meth:`StatsReport.to_dict`).
        spectral: add ``spectral`` (:meth:`SpectralReport.to_dict`).
        against: add ``change`` (:meth:`ChangeReport.to_dict` of the source against it) and
            ``against`` (its label).

    Returns:
        ``title, source, kind, depth, counts, memory, tree, tensors, ties, shared, values,
        notes, blocks`` (one ``{"path", "index", "params", "flops", "activations"}`` per
        repeated block),
        and ``flops``, ``stats``, ``spectral``, ``change`` and ``against`` (``None`` unless
        asked).

    Example:
        >>> import torch
        >>> d = build_report_data(torch.nn.Linear(4, 2))
        >>> d["counts"]["params"], d["tree"]["v"]
        (10, 10)
    """
    from .._paramdict import ParamDict
    from ..counting import count, estimate_memory

    auto = depth is None
    if auto:
        depth = _DEFAULT_DEPTH
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ArgumentError(f"report: depth {depth!r}: expected an integer >= 1")
    if input_shape is not None and not flops:
        raise ArgumentError("report: input_shape needs flops=True (--flops)")
    obj, default_title = _resolve(source)
    if flops and isinstance(obj, (str, ParamDict)):
        raise ArgumentError(
            f"report {default_title}: flops needs a model TARGET (zoo:NAME, "
            "package.module:callable or a config.json); a checkpoint has no forward to run"
        )
    c = count(obj)
    notes = list(c.notes)
    values_note: str | None = None
    reader_ctx: Any = None
    if isinstance(obj, str):
        kind = "checkpoint"
        from ..io import read_manifest

        manifest = read_manifest(obj)
        tree = _prefix_tree(c.tree)
        getter: Callable[[Entry], Any] | None = None
        if values:
            from ..io._reader import SourceReader

            reader_ctx = SourceReader(obj)
            getter = reader_ctx.read
            notes.extend(reader_ctx.notes)
    elif isinstance(obj, ParamDict):
        kind = "paramdict"
        manifest = obj.manifest()
        tree = _prefix_tree(c.tree)
        pd = obj
        getter = (lambda e: pd[e.name]) if values else None
    else:
        kind = "module"
        from ..counting import summary
        from ..counting._count import _module_tensor
        from ..counting._module import scan_module

        manifest = scan_module(obj).manifest()
        tree = _module_tree(summary(obj).root)
        model = obj
        on_meta = any(t.is_meta for t in _module_tensors(obj))
        getter = None
        if values and on_meta:
            values_note = "meta-device model: no values, so no histograms or zero counts"
        elif values:
            getter = lambda e: _module_tensor(model, e.name)  # noqa: E731
    if not values:
        values_note = "values not read (values=False / --no-values)"
    try:
        # the measures first: --stats also makes the table's histograms in its one pass
        extras, done = _measures(
            obj,
            title or default_title,
            stats=stats,
            spectral=spectral,
            against=against,
            histograms=getter is not None,
        )
        tensors = _tensor_rows(manifest.values(), getter, done)
    finally:
        if reader_ctx is not None:
            reader_ctx.close()
    _add_dtypes(tree, tensors)
    have_hist = any("hist" in t for t in tensors)
    if getter is not None and not have_hist and values_note is None:
        values_note = "no readable floating values"
    memory = [
        ("inference fp32", estimate_memory(obj, dtype="fp32")),
        ("inference bf16", estimate_memory(obj, dtype="bf16")),
        (
            "training bf16 mixed precision, AdamW",
            estimate_memory(obj, training=True, mixed_precision=True, optimizer="adamw"),
        ),
    ]
    memory += _token_rows(obj, seq, batch, context, notes)
    flops_data: dict[str, Any] | None = None
    if flops:
        from ..counting import flops as flops_

        fr = flops_(obj, input_shape=input_shape, batch=batch, seq=seq)
        flops_data = _add_flops(tree, fr)
        notes.extend(f"FLOPs: {n}" for n in fr.notes)
    return {
        "title": title or display_name(source, default_title),
        "source": c.source or default_title,
        "kind": kind,
        "format": c.format,
        "depth": _auto_depth(tree) if auto else depth,
        "counts": {
            "params": c.params,
            "trainable": c.trainable,
            "frozen": c.frozen,
            "buffers": c.buffers,
            "bytes": c.bytes,
            "entries": c.entries,
            "ties": len(c.ties),
            "by_dtype": c.by_dtype,
            "active_params": c.active_params,  # mixture of experts: per token (else null)
            "moe": None if c.moe is None else c.moe.to_dict(),
        },
        "memory": [
            {
                "label": label,
                "weights": m.weights,
                "buffers": m.buffers,
                "gradients": m.gradients,
                "optimizer_states": m.optimizer_states,
                "master_weights": m.master_weights,
                "activations": m.activations,
                "kv_cache": m.kv_cache,
                "total": m.per_gpu_bytes,
            }
            for label, m in memory
        ],
        "blocks": _block_activations(_blocks(tree), memory, notes),
        "tree": tree,
        "tensors": tensors,
        "ties": c.ties,
        "shared": c.shared,
        "values": {
            "available": have_hist,
            "note": values_note,
            "sample_limit": SAMPLE_LIMIT,
            "bins": _BINS,
        },
        "notes": notes,
        "flops": flops_data,
        **extras,
    }


def _measures(
    obj: Any, what: str, *, stats: bool, spectral: bool, against: Any, histograms: bool
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The value measures a report adds: ``stats``, ``spectral``, ``change`` and
    ``against`` (each ``None`` unless asked), each from the public function that defines it;
    and with ``stats`` and ``histograms`` the zero counts and histograms of the tensors that
    pass measured, by name (so the table does not read them again)."""
    out: dict[str, Any] = {"stats": None, "spectral": None, "change": None, "against": None}
    done: dict[str, dict[str, Any]] = {}
    if not (stats or spectral or against is not None):
        return out, done
    if not isinstance(obj, str) and any(t.is_meta for t in _source_tensors(obj)):
        asked = ", ".join(
            n
            for n, on in (("stats", stats), ("spectral", spectral), ("against", against))
            if on is not None and on is not False
        )
        raise ArgumentError(
            f"report {what}: {asked} read weight values, and this model is on the meta "
            "device (a model TARGET is built without weights): give a checkpoint, or a model "
            "with weights"
        )
    if stats:
        from ._stats import weight_stats

        d = weight_stats(obj, histograms=histograms).to_dict()
        for row in d["tensors"]:  # the table shows them: not twice in the page
            got = {k: row.pop(k) for k in ("zeros", "hist") if k in row}
            if got:
                done[row["name"]] = got
        out["stats"] = d
    if spectral:
        from ._spectral import spectral_stats

        out["spectral"] = spectral_stats(obj).to_dict()
    if against is not None:
        from ._change import layer_changes

        other = os.fspath(against) if isinstance(against, os.PathLike) else against
        if isinstance(other, str):
            from .._targets import resolve_target

            other = resolve_target(other)
        out["change"] = layer_changes(obj, other).to_dict()
        out["against"] = (
            os.fspath(against)
            if isinstance(against, (str, os.PathLike))
            else (type(against).__name__)
        )
    return out, done


def _source_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors of a module or ParamDict (a checkpoint path has none in memory)."""
    if hasattr(obj, "named_parameters"):
        yield from _module_tensors(obj)
    elif hasattr(obj, "values"):
        yield from obj.values()


def _blocks(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The repeated blocks of a report's tree: the children named ``0``, ``1``, … of a node
    with at least two of them (``transformer.h.0`` … ``h.11``), each
    ``{"path", "index", "params", "flops"}`` (``flops`` ``None`` unless measured), in tree
    order.

    Example:
        >>> kid = lambda p, v: {"p": p, "n": p.rsplit(".", 1)[-1], "v": v, "c": []}
        >>> t = {"p": "", "n": "", "v": 3, "c": [{"p": "h", "n": "h", "v": 3,
        ...      "c": [kid("h.0", 1), kid("h.1", 2)]}]}
        >>> [(b["path"], b["index"], b["params"]) for b in _blocks(t)]
        [('h.0', 0, 1), ('h.1', 1, 2)]
    """
    out: list[dict[str, Any]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        kids = node.get("c", [])
        digits = [c for c in kids if str(c.get("n", "")).isdigit()]
        if len(digits) >= 2:
            out.extend(
                {"path": c["p"], "index": int(c["n"]), "params": c["v"], "flops": c.get("f")}
                for c in sorted(digits, key=lambda c: int(c["n"]))
            )
        stack.extend(reversed([c for c in kids if c not in digits]))
    return out


def _block_activations(
    blocks: list[dict[str, Any]], memory: list[tuple[str, Any]], notes: list[str]
) -> list[dict[str, Any]]:
    """Put the training activation bytes of one layer (the memory row's formula, named in
    its details) on each block as ``"activations"`` (``None`` without a training row with
    ``seq``, or when the blocks are not the formula's layers: a note says so)."""
    act = next((m.details["activations"] for _, m in memory if "activations" in m.details), None)
    per = act.get("per_layer") if act else None
    layers = act["layers"] // per if act and per else 0
    for b in blocks:
        b["activations"] = per if per and len(blocks) == layers else None
    if per and blocks and len(blocks) != layers:
        notes.append(
            f"activations per block not shown: the formula counts {layers} layers, the tree "
            f"has {len(blocks)} repeated blocks"
        )
    elif per and blocks:
        notes.append(
            f"activations per block: {act['formula']} per layer ({act['source']}), the same "
            "for every block"
        )
    return blocks


def _token_rows(
    obj: Any, seq: int | None, batch: int, context: int | None, notes: list[str]
) -> list[tuple[str, Any]]:
    """The memory rows that depend on tokens: training with activations (``seq``) and
    inference with the KV cache (``context``, default ``seq``); a note when the transformer's
    config is unknown."""
    from ..counting import estimate_memory

    kv = context if context is not None else seq
    rows: list[tuple[str, Any]] = []
    try:
        if seq is not None:
            m = estimate_memory(
                obj, training=True, mixed_precision=True, optimizer="adamw", batch=batch, seq=seq
            )
            rows.append((f"training bf16 mixed precision, AdamW, {batch} × {seq} tokens", m))
        if kv is not None:
            m = estimate_memory(obj, dtype="bf16", batch=batch, context=kv)
            rows.append((f"inference bf16, KV cache for {batch} × {kv} tokens", m))
    except ArgumentError as e:
        notes.append(f"memory: no activation / KV cache rows: {e}")
        return []
    for label, m in rows:
        notes.extend(f"memory ({label}): {n}" for n in m.notes[1:])
    return rows


def _add_flops(tree: dict[str, Any], report: Any) -> dict[str, Any]:
    """Put each module's FLOPs on the report's tree (``"f"``, by path) and return the totals."""
    from ..counting._flops import CONVENTION

    by_path: dict[str, int] = {}
    stack = [report.root]
    while stack:
        node = stack.pop()
        by_path[node.path] = node.flops
        stack.extend(node.children)

    def put(n: dict[str, Any]) -> None:
        if n["p"] in by_path and "sh" not in n:
            n["f"] = by_path[n["p"]]
        for ch in n["c"]:
            put(ch)

    put(tree)
    return {
        "flops": report.flops,
        "macs": report.macs,
        "inputs": report.inputs,
        "convention": CONVENTION,
        "uncounted": report.uncounted,
    }


def _module_tensors(model: Any) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()


def _module_tree(node: Any) -> dict[str, Any]:
    """A :class:`ModuleNode` as the report's compact node JSON."""
    out: dict[str, Any] = {
        "p": node.path,
        "n": node.name,
        "k": node.kind,
        "v": node.params,
        "t": node.trainable,
        "u": node.buffers,
        "b": node.bytes,
        "o": node.own_params,
        "c": [_module_tree(ch) for ch in node.children],
    }
    if node.shared_with is not None:
        out["sh"] = node.shared_with
    return out


def _prefix_tree(node: Any) -> dict[str, Any]:
    """A prefix :class:`Node` as the report's node JSON; the kind is the last name segment."""
    children = [_prefix_tree(ch) for ch in node.children.values()]
    name = node.path.rsplit(".", 1)[-1] if node.path else "(root)"
    kind = node.kind or ("[n]" if name.isdigit() else name)
    return {
        "p": node.path,
        "n": name,
        "k": kind,
        "v": node.params,
        "t": node.trainable,
        "u": node.buffers,
        "b": node.bytes,
        "o": node.params - sum(ch["v"] for ch in children),
        "c": children,
    }


def _add_dtypes(tree: dict[str, Any], tensors: list[dict[str, Any]]) -> None:
    """Set ``dt`` on every node: the dtype holding most of its parameters."""
    per: dict[str, dict[str, int]] = {}
    for t in tensors:
        if t["role"] != "param" or t.get("tie"):
            continue
        parts = t["name"].split(".")[:-1]
        for i in range(len(parts) + 1):
            d = per.setdefault(".".join(parts[:i]), {})
            d[t["dtype"]] = d.get(t["dtype"], 0) + t["params"]

    def walk(n: dict[str, Any]) -> None:
        d = per.get(n["p"])
        n["dt"] = max(d, key=lambda k: d[k]) if d else "none"
        for ch in n["c"]:
            walk(ch)

    walk(tree)


def _tensor_rows(
    entries: Iterable[Entry],
    getter: Callable[[Entry], Any] | None,
    done: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per entry: name, shape, dtype, params, bytes, role, trainable, tie, quant,
    and with ``getter`` zeros and a histogram (taken from ``done`` where a pass over the
    values already made them, else read with ``getter``)."""
    rows = []
    for e in entries:
        row: dict[str, Any] = {
            "name": e.name,
            "shape": list(e.shape),
            "dtype": e.dtype.value,
            "params": e.logical_numel if e.role is Role.PARAM else e.numel,
            "bytes": e.nbytes,
            "role": e.role.value,
            "trainable": bool(e.trainable),
        }
        if e.tie is not None:
            row["tie"] = e.tie
        quant = quant_record(e.extra)
        if quant is not None:
            row["quant"] = {
                k: quant.get(k)
                for k in ("bits", "scheme", "granularity", "group_size", "shape", "dtype")
                if k in quant
            }
        if getter is not None and e.tie is None and "packed" not in e.tags and not quant:
            if done and e.name in done:
                row.update(done[e.name])
            elif (t := getter(e)) is not None:
                row.update(_value_stats(t))
        rows.append(row)
    return rows


def _json_for_script(data: dict[str, Any]) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` as ``\\u`` escapes (so no ``</``)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: dict[str, Any]) -> str:
    """The report page for :func:`build_report_data`'s data.

    The template's slots are filled in one pass, so user text (a title or tensor name that
    contains ``__DATA__``) is never read as a slot; the data is embedded as JSON with ``<``,
    ``>`` and ``&`` escaped, so a name containing ``</script>`` cannot close its tag.

    Args:
        data: the report data.

    Returns:
        The HTML text, self-contained.

    Example:
        >>> import torch
        >>> page = render_html(build_report_data(torch.nn.Linear(4, 2)))
        >>> page.startswith("<!DOCTYPE html>"), "http" in page
        (True, False)
    """
    pieces = {
        "TITLE": html.escape(str(data["title"])),
        "CSS": _asset("report.css"),
        "JS": _asset("report.js"),
        "UPLOTCSS": _asset("uplot.min.css"),
        "UPLOTJS": _asset("uplot.min.js"),
        "DATA": _json_for_script(data),
    }
    # one pass over the template only: text put in (a title or tensor name that reads
    # "__DATA__") is never scanned again, so it cannot be taken for a placeholder
    return _PLACEHOLDER.sub(lambda m: pieces[m.group(1)], _asset("report.html"))


_PLACEHOLDER = re.compile(r"__([A-Z]+)__")
"""A slot of the page template (``__TITLE__``, ``__CSS__``, ``__JS__``, ``__DATA__``,
``__UPLOTCSS__``, ``__UPLOTJS__``)."""

_ASSETS = ("report.html", "report.css", "report.js", "uplot.min.css", "uplot.min.js")
"""The page template, its style sheet and its script, and the chart library the page inlines
(uPlot 1.6.32, MIT, ``uplot.LICENSE.txt``; 53 KB, canvas line charts with a cursor API):
package data in ``reporting/assets/``."""


@functools.cache
def _asset(name: str) -> str:
    """The text of one of :data:`_ASSETS`, read once from the installed package.

    Args:
        name: one of :data:`_ASSETS` (``"report.html"`` is the page, with its slots).

    Returns:
        The file's text (UTF-8).

    Raises:
        FileNotFoundError: the file is missing from the installation (a broken install, not
            bad input).

    Example:
        >>> _asset("report.html").startswith("<!DOCTYPE html>")
        True
    """
    from importlib.resources import files

    try:
        asset = files("paramscope.reporting").joinpath("assets").joinpath(name)
        return asset.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"report: the asset {name!r} is missing from the paramscope installation "
            "(paramscope/reporting/assets/); reinstall paramscope"
        ) from None
