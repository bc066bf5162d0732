"""Output sinks of the CLI: JSON, plain text, and rich tables (rich imported only here)."""

from __future__ import annotations

import json
import sys
from typing import Any

from .._units import format_bytes, format_count

__all__ = ["emit_json", "print_count", "print_inspect", "print_verify"]


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout.

    Args:
        obj: a JSON-able object.
    """
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _short(n: int) -> str:
    for div, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


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
        lines.append(f"  {label:<10} {format_count(n):>18}  ({_short(n)})")
    lines.append(f"  {'bytes':<10} {format_count(d['bytes']):>18}  ({format_bytes(d['bytes'])})")
    lines.append(f"  {'entries':<10} {format_count(d['entries']):>18}")
    for dtype, v in d["by_dtype"].items():
        lines.append(
            f"  {dtype:<10} {format_count(v['elements']):>18}  elements, {format_bytes(v['bytes'])}"
        )
    for group in d["ties"]:
        lines.append(f"  tied       {' = '.join(group)}")
    if d["roles"] == "inferred":
        lines.append("  note: roles inferred from names and dtypes (no paramscope metadata)")
    for note in d["notes"]:
        lines.append(f"  note: {note}")
    sys.stdout.write("\n".join(lines) + "\n")


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


def print_inspect(d: dict[str, Any]) -> None:
    """Print the grouped entry table of ``inspect`` with rich.

    Args:
        d: the inspect dict (``source``, ``format``, ``roles``, ``total``, ``groups``).
    """
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
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
