"""The sweep page: an offline HTML file with a sweep's table and its charts.

One self-contained page (uPlot inlined, the same copy the report uses, no request leaves the
file): the table of :class:`paramscope.counting._sweep.SweepReport` rows, the closed form,
and one chart per measure (parameters, FLOPs per token, memory) and swept argument, with
that argument on the x axis and one line per combination of the other swept arguments.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

__all__ = ["render_sweep_html", "sweep_chart_data", "write_sweep_html"]

_MEASURES = {
    "params": "parameters",
    "active_params": "active parameters",
    "flops_per_token": "FLOPs per token",
    "memory_bytes": "memory (bytes)",
}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def sweep_chart_data(report: Any) -> list[dict[str, Any]]:
    """The charts of a sweep: one per measure and swept argument.

    Args:
        report: a :class:`~paramscope.counting._sweep.SweepReport`.

    Returns:
        ``[{name, measure, arg, title, xs, xlabels, series: [{label, ys}], points}]``: ``xs``
        the argument's values (their positions when not all numbers), one series per
        combination of the other swept arguments, ``ys`` with ``None`` where a point failed,
        ``points`` the values drawn.

    Example:
        >>> from paramscope.counting._sweep import sweep
        >>> r = sweep("zoo:gpt2", {"n_layer": [1, 2], "n_embd": [32, 64], "n_head": [2]})
        >>> [(c["name"], c["points"]) for c in sweep_chart_data(r)]
        [('params-n_layer', 4), ('params-n_embd', 4)]
    """
    import json

    charts = []
    for measure in report.columns():
        if measure == "trainable":
            continue
        for arg in report.swept:
            others = [a for a in report.swept if a != arg]
            raw = list(dict.fromkeys(json.dumps(r["args"][arg]) for r in report.rows))
            values = [json.loads(v) for v in raw]
            numeric = all(_num(v) for v in values)
            order = sorted(range(len(values)), key=lambda i: values[i]) if numeric else None
            if order is not None:
                raw, values = [raw[i] for i in order], [values[i] for i in order]
            xs = values if numeric else list(range(len(values)))
            series: dict[str, list[Any]] = {}
            for r in report.rows:
                label = ", ".join(f"{a}={json.dumps(r['args'][a])}" for a in others) or measure
                ys = series.setdefault(label, [None] * len(xs))
                v = r.get(measure)
                ys[raw.index(json.dumps(r["args"][arg]))] = v if _num(v) else None
            points = sum(v is not None for ys in series.values() for v in ys)
            charts.append(
                {
                    "name": f"{measure}-{arg}",
                    "measure": measure,
                    "arg": arg,
                    "title": f"{_MEASURES[measure]} against {arg}",
                    "xs": xs,
                    "xlabels": [v if isinstance(v, str) else json.dumps(v) for v in values],
                    "series": [{"label": k, "ys": v} for k, v in series.items()],
                    "points": points,
                }
            )
    return charts


def render_sweep_html(report: Any, *, title: str | None = None) -> str:
    """The sweep page's HTML text.

    Args:
        report: a :class:`~paramscope.counting._sweep.SweepReport`.
        title: the page title (default ``sweep TARGET``).

    Returns:
        The HTML, self-contained (no request leaves the file).

    Example:
        >>> from paramscope.counting._sweep import sweep
        >>> page = render_sweep_html(sweep("zoo:gpt2", {"n_layer": [1, 2], "n_head": [2]}))
        >>> page.startswith("<!DOCTYPE html>"), "<script src" in page, "<link" in page
        (True, False, False)
    """
    from ._html import _asset, _json_for_script

    data = {
        "title": title or f"sweep {report.target}",
        "report": report.to_dict(),
        "columns": report.columns(),
        "charts": sweep_chart_data(report),
        "fit_text": (
            None
            if report.fit is None
            else f"closed form for the {report.fit.family} family: {report.fit.formula()} "
            f"(max relative residual {report.fit.max_relative_residual:.3g}, "
            f"{report.fit.points} points; {report.fit.legend()})"
            + (f"; note: {report.fit.note}" if report.fit.note else "")
        ),
    }
    pieces = {
        "TITLE": html.escape(str(data["title"])),
        "UPLOTCSS": _asset("uplot.min.css"),
        "UPLOTJS": _asset("uplot.min.js"),
        "DATA": _json_for_script(data),
        "JS": _JS,
    }
    import re

    return re.sub(r"__([A-Z]+)__", lambda m: pieces[m.group(1)], _PAGE)


def write_sweep_html(
    report: Any, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write the sweep page to ``path``.

    Args:
        report: a :class:`~paramscope.counting._sweep.SweepReport`.
        path: the ``.html`` file to write (its folder must exist).
        title: the page title.

    Returns:
        The path written.

    Example:
        >>> import tempfile
        >>> from paramscope.counting._sweep import sweep
        >>> r = sweep("zoo:gpt2", {"n_layer": [1, 2]})
        >>> p = write_sweep_html(r, tempfile.mkdtemp() + "/s.html")
        >>> p.suffix
        '.html'
    """
    from .._atomic import atomic_write

    out = Path(path)
    text = render_sweep_html(report, title=title)
    with atomic_write(out) as f:
        f.write(text.encode("utf-8"))
    return out


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>__UPLOTCSS__</style>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 2px 10px; text-align: right; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; } td.err { text-align: left; color: #a00; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.fit { font-family: monospace; }
</style></head><body>
<h1 id="title"></h1>
<p class="fit" id="fit"></p>
<table id="sweep-table"><thead></thead><tbody></tbody></table>
<div class="charts" id="charts"></div>
<script type="application/json" id="paramscope-data">__DATA__</script>
<script>__UPLOTJS__</script>
<script>__JS__</script>
</body></html>
"""

_JS = r"""
(function () {
  const D = JSON.parse(document.getElementById("paramscope-data").textContent);
  const R = D.report;
  document.getElementById("title").textContent = D.title;
  document.getElementById("fit").textContent = D.fit_text || R.fit_note || "";
  const fmt = v => v === null || v === undefined ? "-" :
    (typeof v === "number" ? v.toLocaleString("en-US", {maximumFractionDigits: 1}) : String(v));
  const head = document.querySelector("#sweep-table thead");
  const tr = document.createElement("tr");
  for (const h of ["#"].concat(R.swept, D.columns, ["error"])) {
    const th = document.createElement("th"); th.textContent = h; tr.appendChild(th);
  }
  head.appendChild(tr);
  const body = document.querySelector("#sweep-table tbody");
  R.rows.forEach((r, i) => {
    const row = document.createElement("tr");
    const cells = [i + 1].concat(R.swept.map(a => typeof r.args[a] === "string" ? r.args[a] :
      JSON.stringify(r.args[a])), D.columns.map(c => r[c]));
    for (const c of cells) {
      const td = document.createElement("td"); td.textContent = fmt(c); row.appendChild(td);
    }
    const td = document.createElement("td"); td.className = "err";
    td.textContent = r.error || ""; row.appendChild(td);
    body.appendChild(row);
  });
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  window.paramscopeCharts = {};
  const host = document.getElementById("charts");
  for (const c of D.charts) {
    const el = document.createElement("div");
    el.dataset.chart = c.name; el.dataset.points = String(c.points);
    host.appendChild(el);
    const numeric = c.xs.every((x, i) => String(x) === c.xlabels[i]);
    const opts = {
      title: c.title, width: 560, height: 320,
      scales: { x: { time: false } },
      series: [{ label: c.arg,
                 value: (u, v) => v === null ? "-" : c.xlabels[c.xs.indexOf(v)] ?? v }]
        .concat(c.series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length],
          width: 2, points: { show: true, size: 6 }, spanGaps: false,
          value: (u, v) => fmt(v) }))),
      axes: [
        { label: c.arg,
          values: numeric ? undefined : (u, vals) => vals.map(v => c.xlabels[v] ?? "") },
        { size: 80, values: (u, vals) => vals.map(v => v >= 1e9 ? (v / 1e9) + "G" :
          v >= 1e6 ? (v / 1e6) + "M" : v >= 1e3 ? (v / 1e3) + "k" : String(v)) },
      ],
    };
    const data = [c.xs].concat(c.series.map(s => s.ys));
    window.paramscopeCharts[c.name] = new uPlot(opts, data, el);
  }
})();
"""
