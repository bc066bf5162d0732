"""The text of :class:`~paramscope.counting._flops.FlopsReport`, rendered from its JSON dict."""

from __future__ import annotations

from typing import Any

__all__ = ["flops_text", "short_flops"]


def short_flops(n: int | float) -> str:
    """A FLOP count with a decimal prefix.

    Args:
        n: the count.

    Returns:
        E.g. ``"8.18 G"``; the number itself below 1,000.

    Example:
        >>> short_flops(8178368512), short_flops(48)
        ('8.18 G', '48')
    """
    for div, unit in (
        (1e21, "Z"),
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)}"


def _tree_rows(node: dict[str, Any], level: int, out: list[str]) -> None:
    name = node["path"].rsplit(".", 1)[-1] if node["path"] else "(root)"
    label = f"{'  ' * level}{name}"
    if node.get("shared_with") is not None:
        tail = f"same module as {node['shared_with']} (its calls are counted there)"
    else:
        tail = f"{node['flops']:>20,}  {node['macs']:>20,}  {short_flops(node['flops'])}"
    out.append(f"  {label:<36} {node['kind']:<22} {tail}")
    for child in node.get("children", []):
        _tree_rows(child, level + 1, out)


def flops_text(d: dict[str, Any]) -> str:
    """The human form of a FLOPs report.

    Args:
        d: the report's ``to_dict()``, strings made printable.

    Returns:
        The text without a final newline.
    """
    lines = [f"FLOPs {d['flops']:,} (MACs {d['macs']:,}), forward {d['forward_flops']:,}"]
    if d["backward_flops"]:
        lines[0] += f", backward {d['backward_flops']:,}"
    lines.append(
        f"  = {short_flops(d['flops'])}FLOPs, {short_flops(d['macs'])}MACs ({d['method']})"
    )
    if d.get("source"):
        lines.append(f"source: {d['source']}")
    if d["inputs"]:
        lines.append(f"inputs: {'; '.join(d['inputs'])}")
    if d["details"] and d["method"] == "analytic":
        for k, v in d["details"].items():
            shown = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
            lines.append(f"  {k:<28} {shown}")
    if d["tree"] is not None:
        lines += ["", f"  {'module':<36} {'type':<22} {'FLOPs':>20}  {'MACs':>20}"]
        _tree_rows(d["tree"], 0, lines)
    if d["by_op"]:
        lines += ["", f"  {'op':<48} {'calls':>7} {'FLOPs':>20}  {'MACs':>20}"]
        for op, row in d["by_op"].items():
            lines.append(f"  {op:<48} {row['calls']:>7,} {row['flops']:>20,}  {row['macs']:>20,}")
    if d["uncounted"]:
        ops = ", ".join(f"{op} ×{n}" for op, n in d["uncounted"].items())
        lines += ["", f"uncounted (no formula, not in the totals): {ops}"]
    if d["no_arithmetic"]:
        lines.append(f"no arithmetic (views, copies, creation): {len(d['no_arithmetic'])} op types")
    lines += ["", "notes:"] + [f"  - {n}" for n in d["notes"]]
    return "\n".join(lines)
