"""Diffing two checkpoints: structure from headers, values tensor by tensor.

:func:`diff` compares any two sources (checkpoint files, sharded folders, ParamDicts, modules,
dicts of tensors). The structural part comes from the manifests alone: names added and
removed, probable renames (same shape, dtype and content), shape, dtype and tie changes. The
value part reads at most one tensor per side at a time (files through
:class:`~paramscope.io._reader.SourceReader`), and skips reading altogether when both
sides carry equal content digests written by :func:`paramscope.save`.

Differences are measured in float64, a chunk at a time: the largest absolute difference, the
relative L2 error ``‖a − b‖ / ‖b‖`` and the count of differing elements. With ``atol`` /
``rtol``, an entry whose every element satisfies ``|a − b| <= atol + rtol·|b|`` is *close*
rather than changed (the ``numpy.isclose`` rule, ``b`` as the reference).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import ArgumentError, ArgumentTypeError, EntryError, ParamscopeError, TargetError
from ._manifest import Entry, Manifest

if TYPE_CHECKING:
    import torch

    from ._paramdict import ParamDict
    from .io._reader import SourceReader

__all__ = ["DiffReport", "Side", "diff", "sides"]

XXH3 = "xxh3-128"
_CHUNK = 1 << 22  # elements compared at a time (32 MiB per float64 side)
_SHOW = 20  # rows shown per category by DiffReport.format


@dataclass
class DiffReport:
    """What differs between two sources ``a`` and ``b``.

    Attributes:
        added: names only in ``b`` (renames excluded).
        removed: names only in ``a`` (renames excluded).
        renamed: ``{"from", "to"}``: a name only in ``a`` and one only in ``b`` with the same
            shape, dtype and content.
        shape_changed: ``{"name", "a", "b"}`` with the two shapes.
        dtype_changed: ``{"name", "a", "b"}`` with the two dtypes.
        value_changed: ``{"name", "max_abs_diff", "rel_l2", "changed"}`` for entries of the
            same shape whose values differ beyond the tolerance.
        close: the same rows for entries that differ but within ``atol`` / ``rtol``.
        identical: entries in both with the same shape, dtype and values (without values:
            the same shape and dtype).
        ties_changed: ``{"name", "a", "b"}``: an entry in both that is an alias (of the
            named target) on one side and not the same alias on the other.
        notes: things worth knowing (e.g. values skipped).
        a: the first source as given, when it is a path or TARGET (``None`` for an object).
        b: the second source, likewise.

    Example:
        >>> DiffReport().same
        True
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: list[dict[str, str]] = field(default_factory=list)
    shape_changed: list[dict[str, Any]] = field(default_factory=list)
    dtype_changed: list[dict[str, Any]] = field(default_factory=list)
    value_changed: list[dict[str, Any]] = field(default_factory=list)
    close: list[dict[str, Any]] = field(default_factory=list)
    identical: int = 0
    ties_changed: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    a: str | None = None
    b: str | None = None

    @property
    def same(self) -> bool:
        """Nothing differs (entries within the tolerance, listed in :attr:`close`, count as
        the same)."""
        return not (
            self.added
            or self.removed
            or self.renamed
            or self.shape_changed
            or self.dtype_changed
            or self.value_changed
            or self.ties_changed
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the report.

        Returns:
            Keys ``added, removed, renamed, shape_changed, dtype_changed, value_changed,
            close, identical, ties_changed, notes, same``, led by ``a, b`` when the sources
            are named (what ``paramscope diff --json`` prints).

        Example:
            >>> DiffReport(added=["x"]).to_dict()["same"]
            False
            >>> list(DiffReport(a="a.safetensors", b="b.safetensors").to_dict())[:3]
            ['a', 'b', 'added']
        """
        named = {} if self.a is None and self.b is None else {"a": self.a, "b": self.b}
        return {
            **named,
            "added": list(self.added),
            "removed": list(self.removed),
            "renamed": [dict(r) for r in self.renamed],
            "shape_changed": [dict(r) for r in self.shape_changed],
            "dtype_changed": [dict(r) for r in self.dtype_changed],
            "value_changed": [dict(r) for r in self.value_changed],
            "close": [dict(r) for r in self.close],
            "identical": self.identical,
            "ties_changed": [dict(r) for r in self.ties_changed],
            "notes": list(self.notes),
            "same": self.same,
        }

    def format(self, limit: int = _SHOW) -> str:
        """Human-readable text: a verdict, the counts, then one line per difference (at most
        ``limit`` per category, then ``… N more``).

        Args:
            limit: rows shown per category.

        Returns:
            The text, without a trailing newline.

        Example:
            >>> DiffReport(added=["head.bias"]).format().splitlines()[::2]
            ['differ', '  added: head.bias']
        """
        return "\n".join(format_lines(self.to_dict(), limit))

    def to_text(self, width: int | None = None, *, limit: int = _SHOW) -> str:
        """The human form ``paramscope diff`` prints: :meth:`format` with the two sources
        named after the verdict, names escaped for a terminal.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.
            limit: rows shown per category.

        Returns:
            The text, without a final newline.

        Example:
            >>> r = DiffReport(added=["head.bias"], a="a.pt", b="b.pt")
            >>> print(r.to_text())  # doctest: +NORMALIZE_WHITESPACE
            differ: a.pt vs b.pt
              1 added, 0 removed, 0 renamed, 0 shape, 0 dtype, 0 values, 0 close, 0 ties;
              0 identical
              added: head.bias
        """
        from ._text import printable_tree

        d = printable_tree(self.to_dict())
        title = f"{d['a'] or '(in memory)'} vs {d['b'] or '(in memory)'}" if "a" in d else ""
        return "\n".join(format_lines(d, limit, title))


def format_lines(d: dict[str, Any], limit: int = _SHOW, title: str = "") -> list[str]:
    """The lines of :meth:`DiffReport.format` from its dict (shared with the CLI).

    Args:
        d: a :meth:`DiffReport.to_dict` result.
        limit: rows shown per category.
        title: text after the verdict on the first line (e.g. the two sources).

    Returns:
        The lines.

    Example:
        >>> format_lines(DiffReport().to_dict())[0]
        'same'
    """

    def shape(s: list[int]) -> str:
        return "×".join(map(str, s)) or "()"

    def stats(r: dict[str, Any]) -> str:
        return (
            f"{r['name']}  max|Δ| {r['max_abs_diff']:.4g}, rel L2 {r['rel_l2']:.4g}, "
            f"{r['changed']} changed"
        )

    def tie(t: str | None) -> str:
        return t or "(own storage)"

    lines = [
        ("same" if d["same"] else "differ") + (f": {title}" if title else ""),
        f"  {len(d['added'])} added, {len(d['removed'])} removed, {len(d['renamed'])} renamed, "
        f"{len(d['shape_changed'])} shape, {len(d['dtype_changed'])} dtype, "
        f"{len(d['value_changed'])} values, {len(d['close'])} close, "
        f"{len(d['ties_changed'])} ties; {d['identical']} identical",
    ]
    sections: list[tuple[str, list[str]]] = [
        ("added", list(d["added"])),
        ("removed", list(d["removed"])),
        ("renamed", [f"{r['from']} -> {r['to']}" for r in d["renamed"]]),
        ("shape", [f"{r['name']}  {shape(r['a'])} -> {shape(r['b'])}" for r in d["shape_changed"]]),
        ("dtype", [f"{r['name']}  {r['a']} -> {r['b']}" for r in d["dtype_changed"]]),
        ("values", [stats(r) for r in d["value_changed"]]),
        ("close", [stats(r) for r in d["close"]]),
        ("ties", [f"{r['name']}  {tie(r['a'])} -> {tie(r['b'])}" for r in d["ties_changed"]]),
    ]
    for label, rows in sections:
        lines += [f"  {label}: {r}" for r in rows[:limit]]
        if len(rows) > limit:
            lines.append(f"  … {len(rows) - limit} more {label}")
    lines += [f"  note: {n}" for n in d.get("notes", [])]
    return lines


class Side:
    """One side of a comparison (:func:`paramscope.diff`, :func:`paramscope.layer_changes`):
    its manifest, and its tensors on demand, one at a time.

    Args:
        source: a checkpoint path or URL, a model TARGET (structure only, built on meta), a
            :class:`~paramscope.Manifest`, a ``ParamDict``, a dict of tensors or an
            ``nn.Module``.
        label: the side's name in messages (``"a"``, ``"b"``).

    Example:
        >>> import torch
        >>> s = Side({"w": torch.ones(2)}, "a")
        >>> s.manifest["w"].shape, s.read("w").sum().item()
        ((2,), 2.0)
        >>> s.close()
    """

    def __init__(self, source: Any, label: str) -> None:
        self.label = label
        self.what = "a Manifest"
        self.reader: SourceReader | None = None
        self.pd: ParamDict | None = None
        if isinstance(source, (str, os.PathLike)):
            from ._target_kind import MODEL_KINDS, target_kind

            if target_kind(source) in MODEL_KINDS:  # a model: structure only
                from ._targets import target_manifest

                self.manifest: Manifest = target_manifest(source)
                self.what = f"{os.fspath(source)} (a model TARGET, built on meta)"
                return
            from .io._reader import SourceReader

            self.reader = SourceReader(source)
            self.manifest = self.reader.manifest
        elif isinstance(source, Manifest):
            self.manifest = source
        else:
            from .io import _as_paramdict

            try:
                self.pd = _as_paramdict(source)
            except ParamscopeError:
                raise ArgumentTypeError(
                    f"diff: {label}: expected a checkpoint path, ParamDict, dict of tensors or "
                    f"nn.Module, found {type(source).__name__}"
                ) from None
            self.manifest = self.pd.manifest()

    def close(self) -> None:
        """Close the file reader, if the side has one."""
        if self.reader is not None:
            self.reader.close()

    def stored(self, name: str) -> Entry:
        """The entry holding ``name``'s bytes (its tie target for an alias)."""
        e = self.manifest[name]
        return self.manifest[e.tie] if e.tie is not None and e.tie in self.manifest else e

    def read(self, name: str) -> torch.Tensor:
        """``name``'s tensor (an alias reads its target)."""
        if self.pd is not None:
            t = self.pd[name]
            if t.device.type == "meta":
                raise EntryError(
                    f"diff: {self.label}: entry {name!r} is on the meta device and has no "
                    "values; compare with values=False (--no-values)"
                )
            return t.detach()
        if self.reader is not None:
            return self.reader.read(self.stored(name))
        raise TargetError(
            f"diff: {self.label} is {self.what} without values; compare with values=False "
            "(--no-values)"
        )

    def content_key(self, name: str) -> str | None:
        """An XXH3-128 digest of ``name``'s bytes: the stored one when there is one, else
        computed; ``None`` when the values cannot be had."""
        e = self.stored(name)
        if e.hash is not None and e.hash.startswith(XXH3 + ":"):
            return e.hash
        try:
            return _xxh3(self.read(name))
        except ParamscopeError:
            return None


def _xxh3(t: torch.Tensor) -> str:
    import xxhash

    from .io._writer import tensor_bytes

    return f"{XXH3}:{xxhash.xxh3_128(tensor_bytes(t)).hexdigest()}"


def _chunks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    flat = t.reshape(-1)
    for i in range(0, flat.numel(), _CHUNK):
        yield flat[i : i + _CHUNK]


def _bitwise_equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    import torch

    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.numel() == 0:
        return True
    bx = x.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    by = y.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return bool(torch.equal(bx, by))


def _compare(
    name: str, x: torch.Tensor, y: torch.Tensor, atol: float, rtol: float
) -> tuple[dict[str, Any], bool]:
    """Difference statistics of two same-shape tensors in float64 chunks.

    Returns:
        ``(row, within_tolerance)``; ``row["changed"] == 0`` when they are equal as numbers.
    """
    import torch

    from ._values import widen

    wide = torch.complex128 if (x.is_complex() or y.is_complex()) else torch.float64
    max_abs, sq_diff, sq_ref, changed, within = 0.0, 0.0, 0.0, 0, True
    for cx, cy in zip(_chunks(x.detach().cpu()), _chunks(y.detach().cpu()), strict=True):
        # FP4 pairs are decoded to values (both sides alike, so positions still match)
        fx, fy = widen(cx).to(wide), widen(cy).to(wide)
        both_nan = torch.isnan(fx) & torch.isnan(fy)
        d = (fx - fy).abs().masked_fill(both_nan, 0)
        nan_d = torch.isnan(d)  # exactly one side NaN: a difference of NaN
        if cx.is_floating_point() or cx.is_complex():
            differ = ((fx != fy) & ~both_nan) | nan_d
        else:  # integers: exact, even past float64's 2**53
            differ = (cx != cy).reshape(-1)
        changed += int(differ.sum())
        if nan_d.any():
            max_abs = math.nan
        elif d.numel() and not math.isnan(max_abs):
            max_abs = max(max_abs, float(d.max()))
        sq_diff += float(d.nan_to_num(nan=0.0).square().sum())
        sq_ref += float(fy.abs().nan_to_num(nan=0.0).square().sum())
        if within and changed:
            bound = atol + rtol * fy.abs()
            within = bool(((d <= bound) | ~differ).all())
    rel = math.sqrt(sq_diff) / math.sqrt(sq_ref) if sq_ref else (math.inf if sq_diff else 0.0)
    row = {"name": name, "max_abs_diff": max_abs, "rel_l2": rel, "changed": changed}
    return row, within


def diff(
    a: Any,
    b: Any,
    *,
    values: bool = True,
    atol: float = 0.0,
    rtol: float = 0.0,
) -> DiffReport:
    """Compare two sources: structure from their manifests, then values tensor by tensor.

    Structure: names only in ``b`` are *added*, only in ``a`` *removed*, except pairs with the
    same shape, dtype and content, which are *renamed* (content compared by the digests
    stored by :func:`paramscope.save` where both sides have one, else by hashing the bytes
    with XXH3-128). Names in both are checked for shape, dtype and tie changes.

    Values (``values=True``): every name in both with the same shape is compared with at most
    one tensor per side in memory; aliases compare their targets' values. Equal stored digests
    mean identical without reading anything; bitwise-equal tensors are identical; otherwise
    the float64 statistics go to ``value_changed``, or to ``close`` when every element is
    within ``|a − b| <= atol + rtol·|b|``. Entries whose dtype changed are compared after the
    cast to float64 and stay listed in ``dtype_changed``.

    Args:
        a: the first source: a checkpoint path (file or sharded folder), a ParamDict, an
            ``nn.Module``, a dict of tensors, or a Manifest or model TARGET (``zoo:NAME``,
            ``package.module:callable``, an HF ``config.json``: structure only).
        b: the second source, any of the same.
        values: compare values; ``False`` compares structure only (headers, nothing read).
        atol: absolute tolerance for *close*.
        rtol: relative tolerance for *close* (relative to ``b``).

    Returns:
        The :class:`DiffReport`.

    Raises:
        ArgumentError: a tolerance is negative.
        ArgumentTypeError: a source of a type it does not take.
        TargetError: values are asked of a Manifest; EntryError: of a meta-device tensor.
        ParamscopeError: a source cannot be read (see :func:`paramscope.read_manifest`).

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> w = torch.ones(2, 2)
        >>> before = paramscope.save({"w": w, "b": torch.zeros(2)}, f"{d}/before.safetensors")
        >>> after = paramscope.save({"w": w + 1e-7, "b": torch.ones(2)}, f"{d}/after.safetensors")
        >>> r = diff(before, after, atol=1e-6)
        >>> r.same, [row["name"] for row in r.value_changed], [row["name"] for row in r.close]
        (False, ['b'], ['w'])
    """
    if not (atol >= 0 and rtol >= 0):
        raise ArgumentError(f"diff: atol={atol}, rtol={rtol}: expected non-negative numbers")
    with sides(a, b) as (sa, sb):
        report = _diff(sa, sb, values=values, atol=atol, rtol=rtol)
    report.a, report.b = (
        os.fspath(s) if isinstance(s, (str, os.PathLike)) else None for s in (a, b)
    )
    return report


@contextlib.contextmanager
def sides(
    a: Any, b: Any, make: Callable[[Any, str], Side] | None = None
) -> Iterator[tuple[Side, Side]]:
    """Both sides of a comparison, opened as ``"a"`` and ``"b"`` and closed on the way out
    (``a`` too when opening ``b`` fails).

    Args:
        a: the first source.
        b: the second source.
        make: opens one side from ``(source, label)`` (default :class:`Side`).

    Yields:
        ``(side a, side b)``.
    """
    opener = Side if make is None else make
    with contextlib.ExitStack() as stack:
        sa = opener(a, "a")
        stack.callback(sa.close)
        sb = opener(b, "b")
        stack.callback(sb.close)
        yield sa, sb


def _diff(sa: Side, sb: Side, *, values: bool, atol: float, rtol: float) -> DiffReport:
    ma, mb = sa.manifest, sb.manifest
    report = DiffReport()
    only_a = [n for n in ma if n not in mb]
    only_b = [n for n in mb if n not in ma]
    renamed = _renames(sa, sb, only_a, only_b)
    report.renamed = [{"from": f, "to": t} for f, t in renamed]
    gone = {f for f, _ in renamed}
    came = {t for _, t in renamed}
    report.removed = [n for n in only_a if n not in gone]
    report.added = [n for n in only_b if n not in came]
    done: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {}
    for name in (n for n in ma if n in mb):
        ea, eb = ma[name], mb[name]
        if ea.tie != eb.tie:
            report.ties_changed.append({"name": name, "a": ea.tie, "b": eb.tie})
        if ea.shape != eb.shape:
            report.shape_changed.append({"name": name, "a": list(ea.shape), "b": list(eb.shape)})
        if ea.dtype != eb.dtype:
            report.dtype_changed.append({"name": name, "a": ea.dtype.value, "b": eb.dtype.value})
        if ea.shape != eb.shape:
            continue
        if not values:
            if ea.dtype == eb.dtype:
                report.identical += 1
            continue
        # Aliases compare their targets; a pair of targets already compared is not reread.
        key = (sa.stored(name).name, sb.stored(name).name)
        if key not in done:
            done[key] = _compare_values(sa, sb, name, atol, rtol)
        verdict, row = done[key]
        if verdict == "identical":
            if ea.dtype == eb.dtype:
                report.identical += 1
        elif verdict == "close":
            report.close.append({**(row or {}), "name": name})
        else:
            report.value_changed.append({**(row or {}), "name": name})
    if not values:
        report.notes.append("values not compared (structure only)")
    return report


def _compare_values(
    sa: Side, sb: Side, name: str, atol: float, rtol: float
) -> tuple[str, dict[str, Any] | None]:
    """``("identical" | "close" | "changed", row)`` for one name in both sides."""
    ha, hb = sa.stored(name).hash, sb.stored(name).hash
    same_dtype = sa.manifest[name].dtype == sb.manifest[name].dtype
    if same_dtype and ha is not None and ha == hb:
        return "identical", None
    x = sa.read(name)
    y = sb.read(name)
    if _bitwise_equal(x, y):
        return "identical", None
    row, within = _compare(name, x, y, atol, rtol)
    del x, y
    if row["changed"] == 0:
        return "identical", None  # equal as numbers (e.g. -0.0 and 0.0, or an exact cast)
    return ("close" if within and (atol or rtol) else "changed"), row


def _renames(sa: Side, sb: Side, only_a: list[str], only_b: list[str]) -> list[tuple[str, str]]:
    """Pairs ``(name in a, name in b)`` with the same shape, dtype and content."""
    ma, mb = sa.manifest, sb.manifest

    def sig(e: Entry) -> tuple[Any, ...]:
        return (e.shape, e.dtype)

    wanted = {sig(mb[n]) for n in only_b}
    cand_a = [n for n in only_a if sig(ma[n]) in wanted]
    if not cand_a:
        return []
    have = {sig(ma[n]) for n in cand_a}
    cand_b = [n for n in only_b if sig(mb[n]) in have]
    keys_b: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    for n in cand_b:
        k = sb.content_key(n)
        if k is not None:
            keys_b.setdefault((sig(mb[n]), k), []).append((n, k))
    out = []
    for n in cand_a:
        k = sa.content_key(n)
        pool = keys_b.get((sig(ma[n]), k)) if k is not None else None
        if pool:
            out.append((n, pool.pop(0)[0]))
    return out
