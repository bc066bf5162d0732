"""The text of the counting reports (``to_text`` of :class:`Count`, :class:`Inspection`,
:class:`Summary`, :class:`MemoryEstimate`), rendered from their JSON dicts.

Every function takes the dict its report's ``to_dict`` gives, with every string already made
printable (:func:`paramscope._text.printable_tree`: a file's names cannot drive the
terminal), and returns the text without its final newline. Numbers are written by
:mod:`paramscope._units`; rich tables are rendered to a string by
:func:`paramscope._tables.render_rich` (rich is imported only then).
"""

from __future__ import annotations

import itertools
from typing import Any

from .._tables import render_rich
from .._units import format_bytes, format_count, format_percent, format_short_count
from ._flops_render import short_flops

__all__ = [
    "INSPECT_ROWS",
    "count_text",
    "inspect_text",
    "limit_rows",
    "memory_text",
    "moe_line",
    "summary_text",
]

#: Entry rows the ``inspect`` table shows at most (``to_dict`` always lists every entry).
INSPECT_ROWS = 1000


def count_text(d: dict[str, Any]) -> str:
    """The text of a count (``Count.to_dict``): totals, bytes, dtypes, ties, notes.

    Args:
        d: the count dict, strings printable.

    Returns:
        Aligned lines, one total per line with its short form.
    """
    lines = [f"{d['source'] or '(in memory)'}  [{d['format']}, roles {d['roles']}]"]
    rows = [
        ("params", d["params"]),
        ("trainable", d["trainable"]),
        ("frozen", d["frozen"]),
        ("buffers", d["buffers"]),
    ]
    for label, n in rows:
        lines.append(f"  {label:<10} {format_count(n):>18}  ({format_short_count(n)})")
        if label == "params" and d.get("moe"):
            lines.append(moe_line(d["moe"]))
    lines.append(f"  {'bytes':<10} {format_count(d['bytes']):>18}  ({format_bytes(d['bytes'])})")
    lines.append(f"  {'entries':<10} {format_count(d['entries']):>18}")
    lines += _quant_lines(d)
    for dtype, v in d["by_dtype"].items():
        lines.append(
            f"  {dtype:<10} {format_count(v['elements']):>18}  elements, {format_bytes(v['bytes'])}"
        )
    for group in d["ties"]:
        lines.append(f"  tied       {' = '.join(group)}")
    if d.get("pruned"):
        total = sum(p["params"] for p in d["pruned"].values())
        known = [p["nonzero"] for p in d["pruned"].values() if p["nonzero"] is not None]
        if known and total:
            nnz = sum(known)
            lines.append(
                f"  nonzero    {format_count(nnz):>18}  of {format_count(total)} in "
                f"{len(d['pruned'])} pruned tensors ({format_percent(1 - nnz / total)} zeros)"
            )
    if d["roles"] == "inferred":
        lines.append("  note: roles inferred from names and dtypes (no paramscope metadata)")
    for note in d["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def moe_line(moe: dict[str, Any]) -> str:
    """The ``active`` line of a mixture-of-experts count (``Count.to_dict()["moe"]``).

    Args:
        moe: the ``moe`` dict.

    Returns:
        One line: active parameters per token and the top-k, or why they are unknown.

    Example:
        >>> print(moe_line({"active_params": 1200, "top_k": 2, "experts": 8, "source": "GGUF"}))
          active                  1,200  (1.2 thousand)  per token: top-2 of 8 experts (GGUF)
    """
    n = moe.get("active_params")
    if n is None:
        return f"  {'active':<10} {'unknown':>18}  ({moe.get('experts')} experts, top-k not known)"
    return (
        f"  {'active':<10} {format_count(n):>18}  ({format_short_count(n)})  per token: "
        f"top-{moe['top_k']} of {moe['experts']} experts ({moe['source']})"
    )


def _quant_lines(d: dict[str, Any]) -> list[str]:
    """The count's quantisation lines (none for a checkpoint with nothing quantised)."""
    q = d.get("quantization")
    if not q:
        return []
    from ._quant import describe

    out = [
        f"  {'metadata':<10} {format_count(d['quant_meta']):>18}  "
        f"({format_short_count(d['quant_meta'])})  quantisation scales, zeros, ...: not params",
        f"  {'stored':<10} {format_count(d['stored_elements']):>18}  elements as stored",
    ]
    if d.get("bits_per_weight") is not None:
        out.append(
            f"  {'bits/wt':<10} {d['bits_per_weight']:>18.2f}  over "
            f"{format_count(q['params'])} quantised params (data and metadata bytes)"
        )
    for r in q["methods"]:
        where = r["evidence"] if r["evidence"] == "inferred from names" else f"from {r['evidence']}"
        out.append(
            f"  {'quantized':<10} {format_count(r['params']):>18}  "
            f"{describe(r['method'], r['bits'], r['group_size'], r['type'])} ({where}), "
            f"{format_count(r['weights'])} weights"
        )
    if q["unknown_packing"]:
        out.append(
            f"  {'unknown':<10} {format_count(q['unknown_packing']):>18}  entries of unknown "
            "packing, counted at their stored size: the total may be wrong"
        )
    return out


def _layout_role(role: str, layout: dict[str, Any]) -> str:
    """The role cell of an entry with a quantised layout record."""
    from ._quant import describe

    part = layout.get("part")
    if part == "meta":
        return f"quant meta of {layout.get('weight')}"
    if part == "unknown":
        return f"{role}, unknown packing"
    detail = layout.get("detail")
    kind = detail.get("type") if isinstance(detail, dict) else None
    said = describe(
        str(layout.get("method")),
        layout.get("bits"),
        layout.get("group_size"),
        kind if isinstance(kind, str) else None,
    )
    shape = layout.get("shape")
    if layout.get("primary", True) and isinstance(shape, list):
        said += ", logical " + ("×".join(map(str, shape)) or "()")
    else:
        said += f", part of {layout.get('weight')}"
    return f"{role}, {said}"


def limit_rows(d: dict[str, Any], rows: int = INSPECT_ROWS) -> dict[str, Any]:
    """The ``inspect`` dict cut to at most ``rows`` table rows (groups and entries), with
    ``d["hidden"] = {"groups", "entries"}`` saying what was left out.

    Reads each group's entries only as far as shown, so lazy lists
    (``Inspection.to_dict(stream=True)``) stay unread past the cut.

    Args:
        d: the inspect dict (``Inspection.to_dict``).
        rows: the most rows to keep.

    Returns:
        A shallow copy with the groups (and their entries) cut, as plain lists.

    Example:
        >>> d = {"groups": [{"prefix": "", "entries": [{"name": "a"}, {"name": "b"}]}]}
        >>> limit_rows(d, 2)["hidden"]
        {'groups': 0, 'entries': 1}
    """
    kept: list[dict[str, Any]] = []
    hidden_groups = hidden_entries = 0
    left = rows
    for g in d["groups"]:
        n = len(g["entries"])
        if left <= 0:
            hidden_groups += 1
            hidden_entries += n
            continue
        left -= 1
        shown = list(itertools.islice(g["entries"], max(0, left)))
        left -= len(shown)
        hidden_entries += n - len(shown)
        kept.append({**g, "entries": shown})
    return {**d, "groups": kept, "hidden": {"groups": hidden_groups, "entries": hidden_entries}}


def inspect_text(d: dict[str, Any], width: int | None = None) -> str:
    """The grouped entry table of ``inspect`` (a :func:`limit_rows` dict), with its totals.

    Args:
        d: the cut inspect dict, strings printable.
        width: the table width (``None``: nothing is cut).

    Returns:
        The table, a line on the rows left out, the totals line and the notes.
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    title = f"{d['source']}  [{d['format']}, roles {d['roles']}]"
    if d.get("filter"):
        title += f"  filter {d['filter']!r}"
    # The title is a line of its own, not the table's title: rich wraps a table title at the
    # table's width, which would cut a long source path even off a terminal.
    heading = Text(title, overflow="fold")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("params", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("role")
    for g in d["groups"]:
        label = g["prefix"] or "(root)"
        n = g["params"] + g["buffers"] + g.get("quant_meta", 0)
        table.add_row(
            f"[bold]{escape(label)}[/bold]",
            "",
            "",
            f"[bold]{format_count(n)}[/bold]",
            f"[bold]{format_bytes(g['bytes'])}[/bold]",
            "",
        )
        for e in g["entries"]:
            name = e["name"][len(g["prefix"]) + 1 :] if g["prefix"] else e["name"]
            role = e["role"] + ("" if e["trainable"] or e["role"] == "buffer" else " (frozen)")
            if e["tie"]:
                params, size = f"= {e['tie']}", "0 B"
            else:
                params, size = format_count(e["params"]), format_bytes(e["bytes"])
                nnz = e.get("extra", {}).get("nonzero")
                if isinstance(nnz, int):
                    params += f" (nnz {format_count(nnz)})"
                quant = e.get("extra", {}).get("quant")
                layout = e.get("extra", {}).get("quant_layout")
                if isinstance(layout, dict):
                    role = _layout_role(role, layout)
                elif isinstance(quant, dict):
                    role = f"{role}, int{quant.get('bits')}"
            table.add_row(
                f"  {escape(name)}",
                "×".join(map(str, e["shape"])) or "()",
                e["dtype"],
                escape(params),
                size,
                role,
            )
    t = d["total"]
    table.add_section()
    table.add_row(
        "[bold]total[/bold]",
        "",
        "",
        f"[bold]{format_count(t['params'] + t['buffers'] + t.get('quant_meta', 0))}[/bold]",
        f"[bold]{format_bytes(t['bytes'])}[/bold]",
        "",
    )
    out: list[Any] = [heading, table]
    hidden = d.get("hidden") or {}
    if hidden.get("entries") or hidden.get("groups"):
        out.append(
            f"… {format_count(hidden['entries'])} more entries"
            + (f" in {format_count(hidden['groups'])} more groups" if hidden["groups"] else "")
            + " not shown (the total counts them); inspect --json lists every entry, "
            "--filter or --depth narrow the table"
        )
    out.append(
        escape(
            f"params {format_count(t['params'])} (trainable {format_count(t['trainable'])}, "
            f"frozen {format_count(t['frozen'])}), "
            + _active_words(t)
            + f"buffers {format_count(t['buffers'])}, "
            + (f"quant meta {format_count(t['quant_meta'])}, " if t.get("quant_meta") else "")
            + f"{format_bytes(t['bytes'])}"
        )
    )
    if d["roles"] == "inferred":
        out.append("note: roles inferred from names and dtypes (no paramscope metadata)")
    out += [escape(f"note: {note}") for note in d.get("notes", [])]
    return render_rich(*out, width=width)


def _active_words(t: dict[str, Any]) -> str:
    """``"active N, "`` for a mixture of experts' totals (``"active unknown, "`` without a
    top-k), else ``""``."""
    if "active_params" not in t:
        return ""
    n = t["active_params"]
    return f"active {'unknown' if n is None else format_count(n)}, "


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two sibling rows that can be shown as one: same type and counts, nothing below shown."""
    keys = ("kind", "params", "own_params", "trainable", "buffers", "formula", "tied")
    return (
        not a.get("children")
        and not b.get("children")
        and not a["shared_with"]
        and not b["shared_with"]
        and all(a[k] == b[k] for k in keys)
        and a.get("flops") == b.get("flops")
    )


def summary_text(d: dict[str, Any], width: int | None = None) -> str:
    """The module tree of a summary (``Summary.to_dict``), the by-type table, ties, notes.

    Runs of three or more identical sibling leaves are one row (``0–11 (×12, each)``).

    Args:
        d: the summary dict, strings printable.
        width: the table width (``None``: nothing is cut).

    Returns:
        The text.
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    t = d["total"]
    title = f"{t['source'] or '(in memory)'}  [module, depth {d['depth']}]"
    if d.get("filter"):
        title += f"  filter {d['filter']!r}"
    # The title is a line of its own, not the table's title: rich wraps a table title at the
    # table's width, which would cut a long source path even off a terminal.
    heading = Text(title, overflow="fold")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("module", overflow="fold")
    table.add_column("type")
    table.add_column("params", justify="right")
    table.add_column("own", justify="right")
    table.add_column("buffers", justify="right")
    fl = d.get("flops")  # only with --flops / summary(flops=...): otherwise unchanged
    if fl is not None:
        table.add_column("FLOPs", justify="right")
    table.add_column("formula / note", overflow="fold")

    def row(node: dict[str, Any], level: int, name: str) -> None:
        if node["shared_with"]:
            note = f"shared with {node['shared_with']}"
        elif node["tied"]:
            note = "tied: " + ", ".join(f"{k} = {v}" for k, v in node["tied"].items())
        elif node["formula"]:
            note = node["formula"]["expression"]
        else:
            note = ""
        frozen = node["params"] and node["trainable"] == 0
        cells = [
            escape("  " * level + name),
            escape(node["kind"]),
            format_count(node["params"]) + (" ❄" if frozen else ""),
            format_count(node["own_params"]) if node["own_params"] else "",
            format_count(node["buffers"]) if node["buffers"] else "",
        ]
        if fl is not None:
            f = node.get("flops")
            cells.append("" if f is None or node["shared_with"] else short_flops(f))
        table.add_row(*cells, escape(note))

    def walk(node: dict[str, Any], level: int) -> None:
        row(node, level, node["path"].rsplit(".", 1)[-1] if node["path"] else "(root)")
        kids = node.get("children", [])
        i = 0
        while i < len(kids):
            j = i
            while j + 1 < len(kids) and _same(kids[i], kids[j + 1]):
                j += 1
            if j - i >= 2:  # a run of 3+ identical leaves at this depth: one row, "×N"
                first, last = (k["path"].rsplit(".", 1)[-1] for k in (kids[i], kids[j]))
                row(kids[i], level + 1, f"{first}–{last} (×{j - i + 1}, each)")
                i = j + 1
                continue
            walk(kids[i], level + 1)
            i += 1

    walk(d["tree"], 0)
    out: list[Any] = [heading, table]
    out.append(
        f"params {format_count(t['params'])} (trainable {format_count(t['trainable'])}, "
        f"frozen {format_count(t['frozen'])}), buffers {format_count(t['buffers'])}"
        + (
            f" ({format_count(t['nonpersistent_buffers'])} non-persistent)"
            if t["nonpersistent_buffers"]
            else ""
        )
        + f", {format_bytes(t['bytes'])}"
    )
    if fl is not None:
        line = f"FLOPs {fl['flops']:,} (MACs {fl['macs']:,}), forward {fl['forward_flops']:,}"
        if fl["backward_flops"]:
            line += f", backward {fl['backward_flops']:,}"
        out.append(escape(f"{line}; inputs: {'; '.join(fl['inputs'])}"))
        if fl["uncounted"]:
            ops = ", ".join(f"{op} ×{n}" for op, n in fl["uncounted"].items())
            out.append(escape(f"FLOPs uncounted (no formula, not in the totals): {ops}"))
        out += [escape(f"note (FLOPs): {n}") for n in fl["notes"]]
    types = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="by layer type", title_justify="left")
    types.add_column("type")
    types.add_column("modules", justify="right")
    types.add_column("params", justify="right")
    types.add_column("share", justify="right")
    for kind, r in d["by_type"].items():
        if not r["params"]:
            continue
        types.add_row(
            escape(kind),
            format_count(r["modules"]),
            format_count(r["params"]),
            format_percent(r["params"], t["params"]),
        )
    out.append(types)
    out += [escape(f"tied: {' = '.join(group)}") for group in d["ties"]]
    out += [escape(f"shared module: {path} is {first}") for path, first in d["shared"].items()]
    for name, p in t["pruned"].items():
        nz = "unknown (meta)" if p["nonzero"] is None else format_count(p["nonzero"])
        out.append(escape(f"pruned: {name} {format_count(p['params'])} params, nonzero {nz}"))
    out += [escape(f"note: {note}") for note in t["notes"]]
    return render_rich(*out, width=width)


def memory_text(d: dict[str, Any]) -> str:
    """The text of a memory estimate (``MemoryEstimate.to_dict``): one row per part.

    Args:
        d: the estimate dict, strings printable.

    Returns:
        The settings line, the parts for the whole model and per GPU, the totals, the notes.
    """
    s = d["settings"]
    mode = "training" if s["training"] else "inference"
    opts = [mode, f"dtype {s['dtype'] or 'as stored'}"]
    if s["training"]:
        opts.append(f"optimizer {s['optimizer']}")
        if s["mixed_precision"]:
            opts.append("mixed precision")
    if s["zero_stage"] or s["num_gpus"] > 1:
        opts.append(f"ZeRO-{s['zero_stage']} over {s['num_gpus']} GPUs")
    lines = [
        f"{d['source']}  [{', '.join(opts)}]",
        f"  params {format_count(d['params'])}, trainable {format_count(d['trainable'])}",
        f"  {'part':<18} {'whole model':>14} {'per GPU':>14}",
    ]
    for key, label in (
        ("weights", "weights"),
        ("buffers", "buffers"),
        ("gradients", "gradients"),
        ("optimizer_states", "optimizer states"),
        ("master_weights", "fp32 master"),
    ):
        lines.append(
            f"  {label:<18} {format_bytes(d['breakdown'][key]):>14} "
            f"{format_bytes(d['per_gpu'][key]):>14}"
        )
    for key, label in (("activations", "activations"), ("kv_cache", "KV cache")):
        if d["breakdown"].get(key):  # rows only when estimated (goldens of old runs unchanged)
            n = format_bytes(d["breakdown"][key])
            lines.append(f"  {label:<18} {n:>14} {format_bytes(d['per_gpu'][key]):>14}")
    lines.append(f"  {'total per GPU':<18} {'':>14} {format_bytes(d['per_gpu_bytes']):>14}")
    lines.append(f"  {'total, all GPUs':<18} {format_bytes(d['total_bytes']):>14}")
    lines += [f"  note: {n}" for n in d["notes"]]
    return "\n".join(lines)
