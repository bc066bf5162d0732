"""Output sinks of the CLI: JSON, plain text, and rich tables (rich imported only here)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._text import printable_tree
from .._units import format_bytes, format_count, format_short_count

__all__ = ["emit_json", "print_count", "print_inspect", "print_verify"]


def _shown(printer: Callable[..., None]) -> Callable[..., None]:
    """Make a printer's data safe for a terminal: every string from a file (entry names,
    notes, metadata, paths) has its control and format characters escaped (``\\x1b``,
    ``\\n``), so a file cannot recolour the terminal or forge output lines."""

    @functools.wraps(printer)
    def wrapper(d: Any, *args: Any, **kwargs: Any) -> None:
        printer(printable_tree(d), *args, **kwargs)

    return wrapper


#: Width used off a terminal (a pipe, a file, CliRunner): wide enough that no table is cut.
WIDE = 100_000


def _console() -> Any:
    """A rich console for stdout: the terminal's width on a terminal; off a terminal (piped or
    redirected) no width limit, so numbers and names are never cut or wrapped (rich would fall
    back to 80 columns)."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False, soft_wrap=False)
    return Console(highlight=False, soft_wrap=False, width=WIDE, file=_RStripped(sys.stdout))


class _RStripped:
    """A text stream that drops the spaces rich pads table lines with, line by line."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.out.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.out.write(self.pending.rstrip(" "))
            self.pending = ""
        self.out.flush()

    def isatty(self) -> bool:
        return False


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented, strictly valid JSON on stdout (inf/nan become strings).

    The text is ``json.dumps(obj, indent=2)``'s, written in pieces as it is encoded, so a lazy
    list (``inspect``'s entries of a header with millions) is never held whole.

    Args:
        obj: a JSON-able object.
    """
    out = sys.stdout
    pieces: list[str] = []
    size = 0
    for piece in _chunks(obj, 0):
        pieces.append(piece)
        size += len(piece)
        if size >= 1 << 20:
            out.write("".join(pieces))
            pieces.clear()
            size = 0
    pieces.append("\n")
    out.write("".join(pieces))


_escape = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _key(k: Any) -> str:
    """A dict key as ``json.dumps`` writes it."""
    if isinstance(k, str):
        return _escape(k)  # type: ignore[no-any-return]
    if isinstance(k, float):
        if k != k or k in (_INF, -_INF):
            raise ValueError("Out of range float values are not JSON compliant: " + repr(k))
        return _escape(float.__repr__(k))  # type: ignore[no-any-return]
    if k is True or k is False or k is None:
        return _escape(json.dumps(k))  # type: ignore[no-any-return]
    if isinstance(k, int):
        return _escape(int.__repr__(k))  # type: ignore[no-any-return]
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


_INF = float("inf")


def _pretty(o: Any, level: int) -> str:
    """``json.dumps(o, indent=2)`` for a value at nesting ``level``, as one string, with inf
    and nan written as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strictly valid JSON).
    The pure-Python encoder's nested generators cost ~30 µs per ``inspect`` entry."""
    if isinstance(o, str):
        return _escape(o)  # type: ignore[no-any-return]
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):  # inf and nan (not JSON) become strings
        if o != o:
            return '"nan"'
        if o in (_INF, -_INF):
            return '"inf"' if o > 0 else '"-inf"'
        return float.__repr__(o)
    pad = "\n" + "  " * (level + 1)
    if isinstance(o, (list, tuple)):
        if not o:
            return "[]"
        body = ("," + pad).join([_pretty(v, level + 1) for v in o])
        return "[" + pad + body + "\n" + "  " * level + "]"
    if isinstance(o, dict):
        if not o:
            return "{}"
        body = ("," + pad).join([_key(k) + ": " + _pretty(v, level + 1) for k, v in o.items()])
        return "{" + pad + body + "\n" + "  " * level + "}"
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _is_lazy(o: Any) -> bool:
    """A list made as it is iterated (``inspect``'s groups and entries)."""
    return getattr(o, "is_lazy", False) is True


def _chunks(o: Any, level: int) -> Iterator[str]:
    """:func:`_pretty`'s text in pieces: containers part by part, and each item of a lazy
    list (``inspect``'s entries) whole, so nothing is held entire."""
    lazy = _is_lazy(o)
    if isinstance(o, dict) and o:
        pad = ",\n" + "  " * (level + 1)
        sep = "{" + pad[1:]
        for k, v in o.items():
            yield sep + _key(k) + ": "
            sep = pad
            yield from _chunks(v, level + 1)
        yield "\n" + "  " * level + "}"
    elif isinstance(o, (list, tuple)) and o:
        pad = ",\n" + "  " * (level + 1)
        sep = "[" + pad[1:]
        for v in o:
            yield sep
            sep = pad
            if lazy and not (isinstance(v, dict) and any(_is_lazy(x) for x in v.values())):
                yield _pretty(v, level + 1)  # an item of a lazy list (an entry), whole
            else:
                yield from _chunks(v, level + 1)
        yield "\n" + "  " * level + "]"
    else:
        yield _pretty(o, level)


#: Entry rows the ``inspect`` table shows at most (``--json`` always lists every entry).
INSPECT_ROWS = 1000


def limit_rows(d: dict[str, Any], rows: int = INSPECT_ROWS) -> dict[str, Any]:
    """The ``inspect`` dict cut to at most ``rows`` table rows (groups and entries), with
    ``d["hidden"] = {"groups", "entries"}`` saying what was left out.

    Reads each group's entries only as far as shown, so lazy lists stay unread past the cut.

    Args:
        d: the inspect dict (``Inspection.to_dict``).
        rows: the most rows to keep.

    Returns:
        A shallow copy with the groups (and their entries) cut.

    Example:
        >>> d = {"groups": [{"prefix": "", "entries": [{"name": "a"}, {"name": "b"}]}]}
        >>> limit_rows(d, 2)["hidden"]
        {'groups': 0, 'entries': 1}
    """
    import itertools

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


@_shown
def print_count(d: dict[str, Any]) -> None:
    """Print a count result (the dict of ``Count.to_dict``) as aligned text.

    Args:
        d: the count dict.
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
    lines.append(f"  {'bytes':<10} {format_count(d['bytes']):>18}  ({format_bytes(d['bytes'])})")
    lines.append(f"  {'entries':<10} {format_count(d['entries']):>18}")
    for dtype, v in d["by_dtype"].items():
        lines.append(
            f"  {dtype:<10} {format_count(v['elements']):>18}  elements, {format_bytes(v['bytes'])}"
        )
    for group in d["ties"]:
        lines.append(f"  tied       {' = '.join(group)}")
    if d.get("pruned"):
        total = sum(p["params"] for p in d["pruned"].values())
        known = [p["nonzero"] for p in d["pruned"].values() if p["nonzero"] is not None]
        if known:
            nnz = sum(known)
            lines.append(
                f"  nonzero    {format_count(nnz):>18}  of {format_count(total)} in "
                f"{len(d['pruned'])} pruned tensors ({100 * (1 - nnz / total):.1f}% "
                "zeros)"
                if total
                else ""
            )
    if d["roles"] == "inferred":
        lines.append("  note: roles inferred from names and dtypes (no paramscope metadata)")
    for note in d["notes"]:
        lines.append(f"  note: {note}")
    sys.stdout.write("\n".join(lines) + "\n")


@_shown
def print_verify(d: dict[str, Any]) -> None:
    """Print a verify report (``VerifyReport.to_dict``) as text.

    Args:
        d: the report dict.
    """
    verdict = "OK" if d["ok"] else "FAILED"
    lines = [
        f"{verdict}: {d['source']} [{d['format'] or 'unreadable'}] {d['entries']} entries in "
        f"{d['files']} file(s), {d['hashed']} hashes checked"
    ]
    lines += [f"  problem: {p}" for p in d["problems"]]
    lines += [f"  note: {n}" for n in d["notes"]]
    sys.stdout.write("\n".join(lines) + "\n")


@_shown
def print_inspect(d: dict[str, Any]) -> None:
    """Print the grouped entry table of ``inspect`` with rich.

    Args:
        d: the inspect dict (``source``, ``format``, ``roles``, ``total``, ``groups``).
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    title = f"{d['source']}  [{d['format']}, roles {d['roles']}]"
    if d.get("filter"):
        title += f"  filter {d['filter']!r}"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("params", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("role")
    for g in d["groups"]:
        label = g["prefix"] or "(root)"
        n = g["params"] + g["buffers"]
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
                if isinstance(quant, dict):
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
        f"[bold]{format_count(t['params'] + t['buffers'])}[/bold]",
        f"[bold]{format_bytes(t['bytes'])}[/bold]",
        "",
    )
    console.print(table)
    hidden = d.get("hidden") or {}
    if hidden.get("entries") or hidden.get("groups"):
        console.print(
            f"… {format_count(hidden['entries'])} more entries"
            + (f" in {format_count(hidden['groups'])} more groups" if hidden["groups"] else "")
            + " not shown (the total counts them); inspect --json lists every entry, "
            "--filter or --depth narrow the table"
        )
    summary = (
        f"params {format_count(t['params'])} (trainable {format_count(t['trainable'])}, frozen "
        f"{format_count(t['frozen'])}), buffers {format_count(t['buffers'])}, "
        f"{format_bytes(t['bytes'])}"
    )
    console.print(escape(summary))
    if d["roles"] == "inferred":
        console.print("note: roles inferred from names and dtypes (no paramscope metadata)")
    for note in d.get("notes", []):
        console.print(escape(f"note: {note}"))


def filter_tree(
    tree: dict[str, Any],
    pattern: str,
    paths: Iterable[str] | None = None,
    param_names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Keep the tree nodes whose path matches ``pattern``, with their ancestors.

    Args:
        tree: a ``ModuleNode.to_dict`` tree.
        pattern: glob or ``re:`` regex on module paths.
        paths: every module path of the model (the tree may stop at a depth); used to tell
            "matches only deeper" from "matches nothing", and for suggestions.
        param_names: the model's parameter names, to say so when the pattern matches those
            (``*.weight``) rather than module paths.

    Returns:
        The pruned tree (the root is always kept).

    Raises:
        ParamscopeError: nothing in the tree matches: the message names the ``--depth`` that
            would show a deeper match, or suggests close paths and lists the top-level ones.

    Example:
        >>> tree = {"path": "", "children": [{"path": "fc", "children": []}]}
        >>> [c["path"] for c in filter_tree(tree, "f*")["children"]]
        ['fc']
    """
    from .._errors import ParamscopeError
    from .._names import compile_pattern, no_match

    match = compile_pattern(pattern)

    def keep(node: dict[str, Any]) -> dict[str, Any] | None:
        kids = [k for k in (keep(c) for c in node.get("children", [])) if k is not None]
        if kids or (node["path"] and match(node["path"])):
            return {**node, "children": kids}
        return None

    kept = keep(tree)
    if kept is not None:
        return kept

    def walk(node: dict[str, Any]) -> Iterator[str]:
        if node["path"]:
            yield node["path"]
        for c in node.get("children", []):
            yield from walk(c)

    names = list(walk(tree)) if paths is None else [p for p in paths if p]
    deeper = sorted((p for p in names if match(p)), key=lambda p: (p.count("."), p))
    if deeper:
        more = f" and {len(deeper) - 1} more" if len(deeper) > 1 else ""
        need = deeper[0].count(".") + 1
        raise ParamscopeError(
            f"filter {pattern!r} matches no module path in the tree shown; {deeper[0]!r}{more} "
            f"{'match' if more else 'matches'} deeper: use --depth {need} or more"
        )
    error = no_match(pattern, names, what="module path")
    hits = [n for n in param_names or () if match(n)]
    if hits:
        owner = hits[0].rpartition(".")[0] or "(root)"
        raise type(error)(
            f"{error}; it matches parameter names ({hits[0]!r}…): for a model, --filter "
            f"selects module paths such as {owner!r}"
        )
    raise error


@_shown
def print_summary(d: dict[str, Any]) -> None:
    """Print a module summary (``Summary.to_dict``): tree, by-type table, ties, notes.

    Args:
        d: the summary dict.
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    t = d["total"]
    title = f"{t['source']}  [module, depth {d['depth']}]"
    if d.get("filter"):
        title += f"  filter {d['filter']!r}"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("module", overflow="fold")
    table.add_column("type")
    table.add_column("params", justify="right")
    table.add_column("own", justify="right")
    table.add_column("buffers", justify="right")
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
        table.add_row(
            escape("  " * level + name),
            escape(node["kind"]),
            format_count(node["params"]) + (" ❄" if frozen else ""),
            format_count(node["own_params"]) if node["own_params"] else "",
            format_count(node["buffers"]) if node["buffers"] else "",
            escape(note),
        )

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
    console.print(table)
    console.print(
        f"params {format_count(t['params'])} (trainable {format_count(t['trainable'])}, "
        f"frozen {format_count(t['frozen'])}), buffers {format_count(t['buffers'])}"
        + (
            f" ({format_count(t['nonpersistent_buffers'])} non-persistent)"
            if t["nonpersistent_buffers"]
            else ""
        )
        + f", {format_bytes(t['bytes'])}"
    )
    types = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="by layer type", title_justify="left")
    types.add_column("type")
    types.add_column("modules", justify="right")
    types.add_column("params", justify="right")
    types.add_column("share", justify="right")
    for kind, row in d["by_type"].items():
        if not row["params"]:
            continue
        share = 100 * row["params"] / t["params"] if t["params"] else 0.0
        types.add_row(
            escape(kind), format_count(row["modules"]), format_count(row["params"]), f"{share:.1f}%"
        )
    console.print(types)
    for group in d["ties"]:
        console.print(escape(f"tied: {' = '.join(group)}"))
    for path, first in d["shared"].items():
        console.print(escape(f"shared module: {path} is {first}"))
    for name, p in t["pruned"].items():
        nz = "unknown (meta)" if p["nonzero"] is None else format_count(p["nonzero"])
        console.print(escape(f"pruned: {name} {format_count(p['params'])} params, nonzero {nz}"))
    for note in t["notes"]:
        console.print(escape(f"note: {note}"))


@_shown
def print_memory(d: dict[str, Any]) -> None:
    """Print a memory estimate (``MemoryEstimate.to_dict``).

    Args:
        d: the estimate dict.
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
    lines.append(f"  {'total per GPU':<18} {'':>14} {format_bytes(d['per_gpu_bytes']):>14}")
    lines.append(f"  {'total, all GPUs':<18} {format_bytes(d['total_bytes']):>14}")
    lines += [f"  note: {n}" for n in d["notes"]]
    sys.stdout.write("\n".join(lines) + "\n")


@_shown
def print_zoo(rows: list[dict[str, Any]]) -> None:
    """Print the zoo listing.

    Args:
        rows: ``{"name", "params", "buffers", "ties", "description"}`` per model.
    """
    width = max(len(r["name"]) for r in rows)
    lines = [
        f"{r['name']:<{width}}  {format_count(r['params']):>15}  "
        f"{format_short_count(r['params']):>14}  {r['description']}"
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two sibling rows that can be shown as one: same type and counts, nothing below shown."""
    keys = ("kind", "params", "own_params", "trainable", "buffers", "formula", "tied")
    return (
        not a.get("children")
        and not b.get("children")
        and not a["shared_with"]
        and not b["shared_with"]
        and all(a[k] == b[k] for k in keys)
    )


def _rows_text(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


@_shown
def print_sparsity(d: dict[str, Any], limit: int = 40) -> None:
    """Print a SparsityReport dict (per tensor, then the total).

    Args:
        d: ``{"source", "output", "tensors", "total"}``.
        limit: at most this many tensor rows (the rest are summarised).
    """
    rows = [
        [
            t["name"],
            format_count(t["elements"]),
            format_count(t["zeros"]),
            f"{100 * t['sparsity']:.1f}%",
        ]
        for t in d["tensors"][:limit]
    ]
    t = d["total"]
    lines = [f"{d['source']} -> {d['output']}"]
    lines += _rows_text(["tensor", "elements", "zeros", "sparsity"], rows) if rows else []
    if len(d["tensors"]) > limit:
        lines.append(f"… {len(d['tensors']) - limit} more tensors")
    lines.append(
        f"total: {format_count(t['elements'])} elements, {format_count(t['zeros'])} "
        f"zeros ({100 * t['sparsity']:.1f}%), {format_count(t['kept'])} kept"
    )
    lines += [f"note: {n}" for n in d.get("notes", [])]
    sys.stdout.write("\n".join(lines) + "\n")


@_shown
def print_quant(d: dict[str, Any], limit: int = 40) -> None:
    """Print a QuantReport dict (per tensor, then the total).

    Args:
        d: ``{"source", "output", "tensors", "total"}``.
        limit: at most this many tensor rows.
    """

    def row(t: dict[str, Any]) -> list[str]:
        return [
            t["name"],
            f"{t['sqnr_db']:.1f}",
            f"{t['max_abs_error']:.3g}",
            f"{t['rel_l2']:.3g}",
            f"{t['cosine']:.6f}",
            format_bytes(t["bytes_before"]),
            format_bytes(t["bytes_after"]),
        ]

    lines = [f"{d['source']} -> {d['output']}"]
    header = ["tensor", "SQNR dB", "max |err|", "rel L2", "cosine", "before", "after"]
    rows = [row(t) for t in d["tensors"][:limit]]
    lines += _rows_text(header, [*rows, row(d["total"])]) if d["tensors"] else []
    if len(d["tensors"]) > limit:
        lines.append(f"… {len(d['tensors']) - limit} more tensors (total is over all)")
    if not d["tensors"]:
        lines.append("no tensor was selected for quantisation")
    lines += [f"note: {n}" for n in d.get("notes", [])]
    sys.stdout.write("\n".join(lines) + "\n")


@_shown
def print_diff(d: dict[str, Any], limit: int = 20) -> None:
    """Print a diff report (``DiffReport.to_dict``, plus ``a`` and ``b``) as text.

    Args:
        d: the report dict; ``a`` / ``b`` name the two sources when present.
        limit: at most this many rows per category (the rest are counted).
    """
    from .._diff import format_lines

    title = f"{d['a']} vs {d['b']}" if "a" in d and "b" in d else ""
    sys.stdout.write("\n".join(format_lines(d, limit, title)) + "\n")
