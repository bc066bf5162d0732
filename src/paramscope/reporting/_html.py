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

Running the browser test locally (tests/test_report_html.py): it needs Playwright for Python
(``pip install playwright``; do not run ``playwright install``) and Debian's Chromium at
``/usr/bin/chromium`` (``apt-get install chromium``), which Playwright launches directly with
every non-``file:`` request blocked::

    pip install playwright && sudo apt-get install chromium
    pytest tests/test_report_html.py
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._enums import Role
from .._errors import ParamscopeError

if TYPE_CHECKING:
    import torch

    from .._manifest import Entry

__all__ = ["SAMPLE_LIMIT", "build_report_data", "render_html", "report"]

SAMPLE_LIMIT = 1_000_000
"""The most elements of one tensor a histogram is computed from."""

_BINS = 32
_DEFAULT_DEPTH = 2


def report(
    source: Any,
    path: str | os.PathLike[str],
    *,
    depth: int | None = None,
    values: bool = True,
    title: str | None = None,
) -> Path:
    """Write a self-contained offline HTML report of a model or checkpoint.

    Args:
        source: a ``torch.nn.Module``, a checkpoint path, a ParamDict, a dict of tensors, or a
            TARGET string (``zoo:NAME``, ``package.module:callable``, a config.json; see
            :func:`paramscope.resolve_target`).
        path: the HTML file to write (atomically).
        depth: treemap levels shown at once (default 2).
        values: read values for histograms and zero counts where they are available.
        title: the page title (default: the source's name).

    Returns:
        The path written.

    Raises:
        ParamscopeError: a depth below 1, or a source that cannot be resolved.

    Example:
        >>> import tempfile, os, torch
        >>> out = report(torch.nn.Linear(4, 2), os.path.join(tempfile.mkdtemp(), "r.html"))
        >>> out.read_text().count('id="paramscope-data"')
        1
    """
    from .._atomic import atomic_write

    data = build_report_data(source, depth=depth, values=values, title=title)
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
    raise ParamscopeError(
        f"report: expected a module, checkpoint path, ParamDict or TARGET, "
        f"found {type(source).__name__}"
    )


def build_report_data(
    source: Any, *, depth: int | None = None, values: bool = True, title: str | None = None
) -> dict[str, Any]:
    """The JSON data a report embeds (what :func:`report` writes, before rendering).

    Args:
        source: as for :func:`report`.
        depth: treemap levels shown at once (default 2).
        values: read values where available.
        title: the page title.

    Returns:
        ``title, source, kind, depth, counts, memory, tree, tensors, ties, shared, values,
        notes``.

    Example:
        >>> import torch
        >>> d = build_report_data(torch.nn.Linear(4, 2))
        >>> d["counts"]["params"], d["tree"]["v"]
        (10, 10)
    """
    from .._paramdict import ParamDict
    from ..counting import count, estimate_memory

    if depth is None:
        depth = _DEFAULT_DEPTH
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ParamscopeError(f"report: depth {depth!r}: expected an integer >= 1")
    obj, default_title = _resolve(source)
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
            from ..compress._stream import SourceReader

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
        tensors = _tensor_rows(manifest.values(), getter)
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
    return {
        "title": title or default_title,
        "source": c.source or default_title,
        "kind": kind,
        "format": c.format,
        "depth": depth,
        "counts": {
            "params": c.params,
            "trainable": c.trainable,
            "frozen": c.frozen,
            "buffers": c.buffers,
            "bytes": c.bytes,
            "entries": c.entries,
            "ties": len(c.ties),
            "by_dtype": c.by_dtype,
        },
        "memory": [
            {
                "label": label,
                "weights": m.weights,
                "buffers": m.buffers,
                "gradients": m.gradients,
                "optimizer_states": m.optimizer_states,
                "master_weights": m.master_weights,
                "total": m.per_gpu_bytes,
            }
            for label, m in memory
        ],
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
    entries: Iterable[Entry], getter: Callable[[Entry], Any] | None
) -> list[dict[str, Any]]:
    """One row per entry: name, shape, dtype, params, bytes, role, trainable, tie, quant,
    and with ``getter`` zeros and a histogram."""
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
        quant = e.extra.get("quant") if hasattr(e.extra, "get") else None
        if isinstance(quant, dict):
            row["quant"] = {
                k: quant.get(k)
                for k in ("bits", "scheme", "granularity", "group_size", "shape", "dtype")
                if k in quant
            }
        if getter is not None and e.tie is None and "packed" not in e.tags and not quant:
            t = getter(e)
            if t is not None:
                row.update(_value_stats(t))
        rows.append(row)
    return rows


def _value_stats(t: torch.Tensor) -> dict[str, Any]:
    """Zero count over the whole tensor and a histogram of a sample of it.

    Args:
        t: the tensor.

    Returns:
        ``{}`` for meta or empty tensors, else ``zeros`` and (for finite values) ``hist`` =
        ``{"min", "max", "counts", "sampled", "nonfinite"}``.
    """
    import torch

    if t.is_meta or t.numel() == 0 or t.is_complex():
        return {}
    from .._values import widen

    with torch.no_grad():
        flat = widen(t.detach()).reshape(-1)  # F8, U64, FP4: the same values, computable
        n = flat.numel()
        out: dict[str, Any] = {"zeros": n - int(torch.count_nonzero(flat))}
        if n > SAMPLE_LIMIT:
            g = torch.Generator().manual_seed(0)
            idx = torch.randint(n, (SAMPLE_LIMIT,), generator=g).to(flat.device)
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
            counts = torch.histc(finite, bins=_BINS, min=lo, max=hi).to(torch.int64).tolist()
        out["hist"] = {
            "min": lo,
            "max": hi,
            "counts": counts,
            "sampled": int(sample.numel()),
            "nonfinite": nonfinite,
        }
    return out


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
        "CSS": _CSS,
        "JS": _JS,
        "DATA": _json_for_script(data),
    }
    # one pass over the template only: text put in (a title or tensor name that reads
    # "__DATA__") is never scanned again, so it cannot be taken for a placeholder
    return _PLACEHOLDER.sub(lambda m: pieces[m.group(1)], _PAGE)


_PLACEHOLDER = re.compile(r"__([A-Z]+)__")
"""A slot of :data:`_PAGE` (``__TITLE__``, ``__CSS__``, ``__JS__``, ``__DATA__``)."""


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ · paramscope report</title>
<style>__CSS__</style>
</head>
<body>
<header><h1 id="title"></h1><div id="subtitle" class="muted"></div></header>
<section><h2>Counts</h2><div id="cards" class="cards"></div><div id="notes" class="muted"></div>
</section>
<section><h2>Memory (model states)</h2><table id="memory" class="grid"></table></section>
<section><h2>Treemap</h2>
<div class="bar"><button id="up" type="button">&#8593; up</button><span id="crumbs"></span>
<label>colour <select id="color-mode">
<option value="trainable">trainable / frozen</option>
<option value="dtype">dtype</option>
<option value="kind">layer type</option>
</select></label></div>
<div id="treemap"></div><div id="legend"></div>
</section>
<section><h2>Ties and shared modules</h2><div id="ties"></div></section>
<section><h2>Tensors</h2>
<div class="bar"><input id="filter" type="search" placeholder="filter names…">
<span id="table-info" class="muted"></span></div>
<div id="values-note" class="muted"></div>
<table id="tensors" class="grid"><thead><tr>
<th data-key="name">name</th><th data-key="shape">shape</th><th data-key="dtype">dtype</th>
<th data-key="params" class="num">params</th><th data-key="bytes" class="num">bytes</th>
<th data-key="role">role</th><th data-key="trainable">trainable</th>
<th data-key="zeros" class="num">zeros</th><th data-key="quant">quant</th>
<th>histogram</th></tr></thead><tbody></tbody></table>
</section>
<div id="tooltip"></div>
<script type="application/json" id="paramscope-data">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 24px 48px;
color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:18px 0 2px}h2{font-size:16px;margin:22px 0 8px}
.muted{color:#667085;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:18px}
table.grid{border-collapse:collapse;background:#fff;font-size:12px}
table.grid th,table.grid td{border:1px solid #e3e6ea;padding:3px 7px;text-align:left}
table.grid th[data-key]{cursor:pointer;user-select:none;background:#f0f2f5}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:flex;gap:12px;align-items:center;margin:6px 0}
#crumbs a{cursor:pointer;color:#2456a6;text-decoration:underline}
#treemap{position:relative;height:480px;background:#eef0f3;border:1px solid #cfd4db;overflow:hidden}
#treemap .cell,#treemap .own{position:absolute;box-sizing:border-box;border:1px solid #fff;
overflow:hidden;font-size:11px;padding:1px 3px;white-space:nowrap;cursor:pointer}
#treemap .own{background-image:repeating-linear-gradient(45deg,rgba(255,255,255,.35) 0 4px,
transparent 4px 8px)}
#treemap .grp{position:absolute;box-sizing:border-box;border:1px solid #5b6472;
font-size:11px;font-weight:600;padding:0 3px;overflow:hidden;white-space:nowrap;cursor:zoom-in}
#legend{display:flex;flex-wrap:wrap;gap:10px;margin-top:6px;font-size:12px}
#legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px}
#tooltip{position:fixed;display:none;pointer-events:none;background:#1d2330;color:#fff;
padding:6px 8px;border-radius:4px;font-size:12px;max-width:420px;z-index:10}
button.hist{font-size:11px}svg.hist{display:block;margin-top:3px}
"""

_JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("paramscope-data").textContent);
const DEPTH = D.depth;
const $ = (id) => document.getElementById(id);
const fmt = (n) => Number(n).toLocaleString("en-US");
function human(n) {
  const u = ["", "K", "M", "B", "T"]; let i = 0; let v = Number(n);
  while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
  return (i ? v.toFixed(v < 10 ? 2 : 1) : String(v)) + u[i];
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(2) : String(v)) + " " + u[i];
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
}
const TOTAL = Math.max(D.counts.params, 1);

// ---- header, counts, memory, ties -------------------------------------------------------
$("title").textContent = D.title;
$("subtitle").textContent =
  (D.kind === D.format ? [D.kind, D.source] : [D.kind, D.format, D.source]).join(" · ");
const C = D.counts;
$("cards").innerHTML = [["params", "total parameters"], ["trainable", "trainable"],
  ["frozen", "frozen"], ["buffers", "buffer elements"], ["ties", "tie groups"]]
  .map(([k, label]) => '<div class="card" data-count="' + k + '"><span class="muted">' +
    label + "</span><b>" + fmt(C[k]) + '</b><span class="muted">' +
    (k === "ties" ? "" : human(C[k])) + "</span></div>").join("") +
  '<div class="card"><span class="muted">stored bytes</span><b>' + bytes(C.bytes) +
  "</b></div>";
$("notes").innerHTML = D.notes.map((n) => "<div>note: " + esc(n) + "</div>").join("");
const MCOLS = [["weights", "weights"], ["buffers", "buffers"], ["gradients", "gradients"],
  ["optimizer_states", "optimizer states"], ["master_weights", "fp32 master"],
  ["total", "total"]];
$("memory").innerHTML = "<thead><tr><th>setting</th>" +
  MCOLS.map((c) => '<th class="num">' + c[1] + "</th>").join("") + "</tr></thead><tbody>" +
  D.memory.map((m) => "<tr><td>" + esc(m.label) + "</td>" +
    MCOLS.map((c) => '<td class="num" title="' + fmt(m[c[0]]) + ' bytes">' +
      bytes(m[c[0]]) + "</td>").join("") + "</tr>").join("") + "</tbody>";
(function ties() {
  let h = "";
  if (D.ties.length) {
    h += "<p>" + D.ties.length + " tie group(s): one storage, several names " +
      "(counted once, under the first).</p><ul>" + D.ties.map((g) => "<li><code>" +
      g.map(esc).join("</code> = <code>") + "</code></li>").join("") + "</ul>";
  }
  const sh = Object.entries(D.shared || {});
  if (sh.length) {
    h += "<p>" + sh.length + " shared module path(s), counted at their first path:</p><ul>" +
      sh.map(([a, b]) => "<li><code>" + esc(a) + "</code> is <code>" + esc(b) +
        "</code></li>").join("") + "</ul>";
  }
  $("ties").innerHTML = h || '<p class="muted">No ties and no shared modules.</p>';
})();

// ---- treemap --------------------------------------------------------------------------------
const byPath = new Map();
(function index(n, parent) {
  n.parent = parent; byPath.set(n.p, n); n.c.forEach((c) => index(c, n));
})(D.tree, null);
const shapes = new Map();
for (const t of D.tensors) {
  const i = t.name.lastIndexOf("."); const owner = i < 0 ? "" : t.name.slice(0, i);
  if (!shapes.has(owner)) shapes.set(owner, []);
  shapes.get(owner).push(t);
}
let view = D.tree;
const kids = (n) => n.c.filter((c) => c.v > 0);

function worst(row, side) {
  let s = 0, mx = -Infinity, mn = Infinity;
  for (const r of row) { s += r.a; mx = Math.max(mx, r.a); mn = Math.min(mn, r.a); }
  if (s <= 0 || mn <= 0) return Infinity;
  return Math.max(side * side * mx / (s * s), (s * s) / (side * side * mn));
}
function layoutRow(row, x, y, w, h, out) {
  const s = row.reduce((t, r) => t + r.a, 0);
  if (w >= h) {
    const cw = h > 0 ? s / h : 0; let cy = y;
    for (const r of row) {
      const rh = cw > 0 ? r.a / cw : 0;
      out.push({ it: r.it, x, y: cy, w: cw, h: rh }); cy += rh;
    }
    return [x + cw, y, Math.max(w - cw, 0), h];
  }
  const rh = w > 0 ? s / w : 0; let cx = x;
  for (const r of row) {
    const rw = rh > 0 ? r.a / rh : 0;
    out.push({ it: r.it, x: cx, y, w: rw, h: rh }); cx += rw;
  }
  return [x, y + rh, w, Math.max(h - rh, 0)];
}
// Squarified treemap (Bruls, Huizing, van Wijk 2000): items {v} into the rectangle.
function squarify(items, x, y, w, h) {
  const out = []; const total = items.reduce((s, i) => s + i.v, 0);
  const scale = total > 0 ? (w * h) / total : 0;
  const rest = items.slice().sort((a, b) => b.v - a.v).map((i) => ({ it: i, a: i.v * scale }));
  let row = [];
  while (rest.length) {
    const side = Math.min(w, h); const r = rest[0];
    if (!row.length || worst(row.concat([r]), side) <= worst(row, side)) {
      row.push(r); rest.shift();
    } else { [x, y, w, h] = layoutRow(row, x, y, w, h, out); row = []; }
  }
  if (row.length) layoutRow(row, x, y, w, h, out);
  return out;
}

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
  "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8", "#ffbe7d", "#8cd17d"];
const cats = { dtype: new Map(), kind: new Map() };
function catColour(mode, key) {
  const m = cats[mode];
  if (!m.has(key)) {
    const i = m.size;
    m.set(key, i < PALETTE.length ? PALETTE[i] : "hsl(" + ((i * 137.5) % 360) + ",45%,62%)");
  }
  return m.get(key);
}
const TRAIN = { trainable: "#2e9d57", frozen: "#8795a8", mixed: "#d9a21b" };
function trainClass(n, v) {
  return n.t >= v ? "trainable" : n.t === 0 ? "frozen" : "mixed";
}
function colour(n, own) {
  const mode = $("color-mode").value;
  if (mode === "dtype") return catColour("dtype", n.dt);
  if (mode === "kind") return catColour("kind", own ? n.k + " (own)" : n.k);
  return TRAIN[trainClass(n, own ? n.o : n.v)];
}
function depthOf(p) { return p === "" ? 0 : p.split(".").length; }
function box(el, r) {
  el.style.left = r.x + "px"; el.style.top = r.y + "px";
  el.style.width = Math.max(r.w, 0) + "px"; el.style.height = Math.max(r.h, 0) + "px";
}
function cell(n, r, own) {
  const el = document.createElement("div");
  el.className = own ? "own" : "cell";
  if (own) el.dataset.own = n.p; else el.dataset.path = n.p;
  el.dataset.depth = String(depthOf(n.p));
  box(el, r);
  el.style.background = colour(n, own);
  if (r.w > 36 && r.h > 14) el.textContent = own ? n.n + " (own)" : n.n;
  tm.appendChild(el);
}
function place(n, level, r) {
  const ch = kids(n);
  if (level >= DEPTH || !ch.length) { if (level > 0 || !ch.length) cell(n, r, false); return; }
  if (level > 0) {
    const g = document.createElement("div"); g.className = "grp"; g.dataset.group = n.p;
    box(g, r); if (r.w > 36) g.textContent = n.n; tm.appendChild(g);
    if (r.w > 24 && r.h > 30) r = { x: r.x + 2, y: r.y + 14, w: r.w - 4, h: r.h - 16 };
  }
  const items = ch.slice(); if (n.o > 0) items.push({ own: n, v: n.o });
  for (const q of squarify(items, r.x, r.y, r.w, r.h)) {
    if (q.it.own) cell(q.it.own, q, true); else place(q.it, level + 1, q);
  }
}
const tm = $("treemap");
function legend() {
  const mode = $("color-mode").value; let entries;
  if (mode === "trainable") entries = Object.entries(TRAIN);
  else entries = Array.from(cats[mode].entries());
  $("legend").innerHTML = entries.map(([k, c]) => '<span><i style="background:' + c + '"></i>' +
    esc(k) + "</span>").join("");
}
function render() {
  tm.innerHTML = "";
  if (view.v > 0) place(view, 0, { x: 0, y: 0, w: tm.clientWidth, h: tm.clientHeight });
  else tm.innerHTML = '<p class="muted" style="padding:8px">No parameters here.</p>';
  const chain = []; for (let n = view; n; n = n.parent) chain.unshift(n);
  $("crumbs").innerHTML = chain.map((n, i) => i === chain.length - 1 ? "<b>" + esc(n.n) + "</b>"
    : '<a data-zoom="' + esc(n.p) + '">' + esc(n.n) + "</a>").join(" / ") +
    ' <span class="muted">(' + fmt(view.v) + " params, " + DEPTH + " level(s) shown)</span>";
  $("up").disabled = !view.parent;
  legend();
}
function zoom(p) { const n = byPath.get(p); if (n && kids(n).length) { view = n; render(); } }
tm.addEventListener("click", (ev) => {
  const el = ev.target.closest("[data-path],[data-group]");
  if (el) zoom(el.dataset.path !== undefined ? el.dataset.path : el.dataset.group);
});
$("crumbs").addEventListener("click", (ev) => {
  const a = ev.target.closest("[data-zoom]");
  if (a) { view = byPath.get(a.dataset.zoom); render(); }
});
$("up").addEventListener("click", () => { if (view.parent) { view = view.parent; render(); } });
$("color-mode").addEventListener("change", render);
window.addEventListener("resize", render);
const tip = $("tooltip");
tm.addEventListener("mousemove", (ev) => {
  const el = ev.target.closest("[data-path],[data-own],[data-group]");
  if (!el) { tip.style.display = "none"; return; }
  const p = el.dataset.path !== undefined ? el.dataset.path
    : el.dataset.own !== undefined ? el.dataset.own : el.dataset.group;
  const n = byPath.get(p); const own = el.dataset.own !== undefined;
  const v = own ? n.o : n.v;
  let h = "<b>" + esc(p || "(root)") + (own ? " (own parameters)" : "") + "</b><br>" +
    esc(n.k) + " · " + n.dt + "<br>" + fmt(v) + " params · " +
    (100 * v / TOTAL).toFixed(2) + "% of total<br>" + fmt(own ? 0 : n.t) + " trainable";
  if (own || !kids(n).length) {
    const ts = (shapes.get(p) || []).slice(0, 8);
    h += ts.map((t) => "<br><code>" + esc(t.name.slice(t.name.lastIndexOf(".") + 1)) + " [" +
      t.shape.join(", ") + "] " + t.dtype + "</code>").join("");
  }
  if (n.sh) h += "<br>shared with " + esc(n.sh);
  tip.innerHTML = h; tip.style.display = "block";
  tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 430) + "px";
  tip.style.top = ev.clientY + 14 + "px";
});
tm.addEventListener("mouseleave", () => { tip.style.display = "none"; });
render();

// ---- tensor table ----------------------------------------------------------------------
const LIMIT = 2000;
let sortKey = null, sortDir = 1;
$("values-note").textContent = D.values.note ? "Values: " + D.values.note + "."
  : "Histograms: a sample of at most " + fmt(D.values.sample_limit) +
    " elements per tensor, " + D.values.bins + " bins; zeros counted over the whole tensor.";
function sortValue(t, k) {
  if (k === "shape") return t.shape.reduce((a, b) => a * b, 1);
  if (k === "quant") return t.quant ? t.quant.bits : -1;
  if (k === "zeros") return t.zeros === undefined ? -1 : t.zeros;
  if (k === "trainable") return t.trainable ? 1 : 0;
  return t[k];
}
function quantText(q) {
  if (!q) return "";
  const g = q.granularity !== undefined && q.granularity !== null ? q.granularity : "";
  return q.bits + "-bit " + (q.scheme || "") + " " + g + (q.group_size ? " g" + q.group_size : "");
}
function renderTable() {
  const f = $("filter").value.trim().toLowerCase();
  const rows = D.tensors.map((t, i) => [t, i])
    .filter(([t]) => !f || t.name.toLowerCase().includes(f));
  if (sortKey) {
    rows.sort((a, b) => {
      const x = sortValue(a[0], sortKey), y = sortValue(b[0], sortKey);
      return (x < y ? -1 : x > y ? 1 : a[1] - b[1]) * sortDir;
    });
  }
  $("table-info").textContent = rows.length + " of " + D.tensors.length + " tensors" +
    (rows.length > LIMIT ? " (first " + LIMIT + " shown; filter to narrow)" : "");
  $("tensors").tBodies[0].innerHTML = rows.slice(0, LIMIT).map(([t, i]) => {
    const zeros = t.zeros === undefined ? "" : fmt(t.zeros) + " (" +
      (100 * t.zeros / Math.max(t.shape.reduce((a, b) => a * b, 1), 1)).toFixed(1) + "%)";
    return '<tr data-name="' + esc(t.name) + '" data-index="' + i + '"><td>' + esc(t.name) +
      (t.tie ? ' <span class="muted">= ' + esc(t.tie) + "</span>" : "") + "</td><td>[" +
      t.shape.join(", ") + "]</td><td>" + t.dtype + '</td><td class="num">' + fmt(t.params) +
      '</td><td class="num">' + fmt(t.bytes) + "</td><td>" + t.role + "</td><td>" +
      (t.trainable ? "yes" : "no") + '</td><td class="num">' + zeros + "</td><td>" +
      esc(quantText(t.quant)) + "</td><td>" +
      (t.hist ? '<button class="hist" type="button">show</button>'
        : '<span class="muted">—</span>') + "</td></tr>";
  }).join("");
  document.querySelectorAll("#tensors th[data-key]").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortDir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === sortKey && sortDir === -1);
  });
}
function histSvg(hs) {
  const W = 200, H = 48, n = hs.counts.length, mx = Math.max(...hs.counts, 1), bw = W / n;
  let bars = "";
  hs.counts.forEach((c, i) => {
    const h = c > 0 ? Math.max(1, (H * c) / mx) : 0;
    bars += '<rect x="' + (i * bw).toFixed(2) + '" y="' + (H - h).toFixed(2) + '" width="' +
      Math.max(bw - 0.5, 0.5).toFixed(2) + '" height="' + h.toFixed(2) + '" fill="#4e79a7">' +
      "<title>" + fmt(c) + "</title></rect>";
  });
  return '<svg class="hist" width="' + W + '" height="' + (H + 12) + '" viewBox="0 0 ' + W + " " +
    (H + 12) + '">' + bars + '<text x="0" y="' + (H + 11) + '" font-size="9">' +
    hs.min.toPrecision(3) + '</text><text x="' + W + '" y="' + (H + 11) +
    '" font-size="9" text-anchor="end">' + hs.max.toPrecision(3) + "</text></svg>" +
    '<span class="muted">' + fmt(hs.sampled) + " sampled" +
    (hs.nonfinite ? ", " + fmt(hs.nonfinite) + " non-finite" : "") + "</span>";
}
$("tensors").addEventListener("click", (ev) => {
  const th = ev.target.closest("th[data-key]");
  if (th) {
    const k = th.dataset.key;
    if (sortKey === k) sortDir = -sortDir; else { sortKey = k; sortDir = 1; }
    renderTable(); return;
  }
  const b = ev.target.closest("button.hist");
  if (b) {
    const t = D.tensors[Number(b.closest("tr").dataset.index)];
    const cell = b.parentElement; cell.innerHTML = histSvg(t.hist);
  }
});
$("filter").addEventListener("input", renderTable);
renderTable();
"""
