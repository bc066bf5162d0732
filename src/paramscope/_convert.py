"""convert: any readable checkpoint → safetensors (one file or HF shards) or DCP, streaming.

Tensors are read one at a time (see :meth:`paramscope.io._reader.SourceReader.stream`: a
thread reads ahead within a byte budget), cast when a dtype is asked for (floating entries
only; everything else is copied bitwise, as raw bytes without importing torch), renamed, and
written by a writer thread while the next is read, so peak memory is about twice the largest
tensor plus a constant.
Ties are stored once and recorded as aliases. The output appears atomically: a file through a
temp file and a rename; shards are built in a temp folder and committed into the destination
folder with the index as the commit point, touching none of the folder's other files (see
:func:`paramscope.io._sharded.write_shards`); DCP output likewise (see
:func:`paramscope.io._dcp.save_dcp`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import ArgumentError
from ._names import Pattern, apply_renames, compile_pattern, parse_rules
from ._text import listed

__all__ = ["ConvertReport", "convert"]


@dataclass
class ConvertReport:
    """What :func:`convert` wrote.

    Attributes:
        source: the source path.
        output: the file or folder written.
        format: ``safetensors``, ``sharded`` or ``dcp``.
        entries: stored entries written.
        aliases: ties recorded as aliases.
        bytes: tensor bytes written.
        casts: entries whose dtype was converted.
        renamed: old name → new name for renamed entries.
        shards: files written (1 for a single file).
        notes: what the reader or writer wants said.
    """

    source: str
    output: str
    format: str
    entries: int = 0
    aliases: int = 0
    bytes: int = 0
    casts: int = 0
    renamed: dict[str, str] = field(default_factory=dict)
    shards: int = 1
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (keys = attribute names; what ``paramscope convert --json`` prints).

        Returns:
            The dict.

        Example:
            >>> list(ConvertReport("a.bin", "a.safetensors", "safetensors").to_dict())[:3]
            ['source', 'output', 'format']
        """
        return dict(self.__dict__)

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope convert`` prints: what was written, in one line, then
        the notes.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.

        Returns:
            The text, without a final newline; strings from files are escaped.

        Example:
            >>> r = ConvertReport("a.bin", "a.st", "safetensors", 4, 1, 4096, 2)
            >>> print(r.to_text())
            a.bin -> a.st [safetensors]: 4 entries, 1 aliases, 4,096 bytes, 2 cast, 1 file(s)
        """
        from ._text import printable_tree
        from ._units import format_count

        d = printable_tree(self.to_dict())
        lines = [
            f"{d['source']} -> {d['output']} [{d['format']}]: {d['entries']} entries, "
            f"{d['aliases']} aliases, {format_count(d['bytes'])} bytes, {d['casts']} cast, "
            f"{d['shards']} file(s)"
        ]
        lines += [f"  note: {note}" for note in d["notes"]]
        return "\n".join(lines)


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: Any = None,
    select: Pattern | None = None,
    rename: Sequence[tuple[str, str]] | Sequence[str] | None = None,
    max_shard_size: int | str | None = None,
    format: str | None = None,
    fsync: bool = True,
    show_progress: bool | None = None,
    layout: str | None = None,
) -> ConvertReport:
    """Convert a checkpoint, streaming, with optional cast, selection, renames and sharding.

    Args:
        src: safetensors file, sharded folder or index, torch ``.pt``/``.bin``, ``.npz``, DCP.
        dst: a ``.safetensors`` file, or a folder (with ``max_shard_size``, or for DCP).
        dtype: cast floating entries to this dtype (``"bf16"``, ``torch.float16``…); others
            are copied bitwise.
        select: only entries matching this glob / ``re:`` pattern (or list).
        rename: ``(regex, replacement)`` rules or ``"REGEX=REPLACEMENT"`` strings, applied in
            order to every name; collisions are refused.
        max_shard_size: write HF shards of at most this size (``"5GB"``) and an index.
        format: ``"safetensors"`` (default) or ``"dcp"``.
        fsync: flush to disk before returning.
        show_progress: progress bar on stderr (default: only on a terminal).
        layout: a framework preset (``"flax-to-torch"``, ``"keras-to-torch"``; see
            :mod:`paramscope._layouts`): its renames come before ``rename``'s, and kernels
            get torch's axis order (``(in, out)`` → ``(out, in)``, ``(H, W, in, out)`` →
            ``(out, in, H, W)``).

    Returns:
        A :class:`ConvertReport`.

    Raises:
        ArgumentError: bad options.
        WriteError: ``dst`` is a folder.
        ParamscopeError: a rename collision, or an unreadable source (a subclass naming why).

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> torch.save({"w": torch.ones(2, 3), "b": torch.zeros(3)}, f"{d}/pytorch_model.bin")
        >>> report = convert(f"{d}/pytorch_model.bin", f"{d}/model.safetensors", dtype="bf16")
        >>> report.format, report.entries, report.casts, report.bytes  # 9 bf16 values
        ('safetensors', 2, 2, 18)
        >>> paramscope.load(f"{d}/model.safetensors")["w"].dtype
        torch.bfloat16
    """
    from ._dtypes import parse_dtype
    from ._progress import progress
    from ._units import parse_size
    from .io._reader import SourceReader
    from .io._sharded import write_planned
    from .io._writer import Planned, plan_meta, tensor_bytes

    fmt = (format or "safetensors").lower()
    if fmt not in ("safetensors", "dcp"):
        raise ArgumentError(
            f"convert: format={format!r}: expected 'safetensors' or 'dcp' (paramscope reads "
            ".pt/.bin/.npz but writes only these two)"
        )
    cast = parse_dtype(dtype) if dtype is not None else None
    preset = None
    if layout is not None:
        from ._layouts import get_layout

        preset = get_layout(layout)
    rules = parse_rules(rename)
    match = compile_pattern(select) if select is not None else (lambda _n: True)
    report = ConvertReport(os.fspath(src), os.fspath(dst), fmt)
    with SourceReader(src) as reader:
        report.notes += reader.notes
        m = reader.manifest
        keep_alias = {a: t for a, t in reader.aliases.items() if match(a) and match(t)}
        stored = [e for e in reader.entries if match(e.name)]
        # An alias selected without its target is written as a stored entry of its own.
        orphans = [a for a, t in reader.aliases.items() if match(a) and not match(t)]
        names = [e.name for e in stored] + orphans + list(keep_alias)
        odd = set(preset.uncovered_names(names)) if preset is not None else set()
        first = {n: n for n in names}  # the preset's renames, then the user's, in order
        if preset is not None:
            if preset.always:  # (file prefixes: every name)
                first = apply_renames(names, preset.always)
            covered = [n for n in names if n not in odd]
            done = apply_renames([first[n] for n in covered], preset.renames)
            first.update({n: done[first[n]] for n in covered})
        then = apply_renames(list(first.values()), rules) if rules else {}
        mapping = {n: then.get(first[n], first[n]) for n in names}
        report.renamed = {k: v for k, v in mapping.items() if k != v}
        if cast is not None:  # complex and sub-byte floats keep their dtype, said in a note
            kept = [e.name for e in stored if e.dtype.is_float and not _castable(e.dtype)]
            if kept:
                shown = listed(kept, quote=False, limit=5)
                report.notes.append(
                    f"{len(kept)} floating entries kept their dtype, not cast to {cast.value}: "
                    f"{shown} (complex values would lose their imaginary part; FP4/FP6 cannot "
                    "be cast by torch)"
                )
        items = [(e.name, e) for e in stored] + [(a, m[reader.aliases[a]]) for a in orphans]
        perms: dict[str, tuple[int, ...]] = {}  # name → axis order (a layout's kernels)
        if preset is not None:
            for name, e in items:
                perm = None if name in odd else preset.permutation(name, tuple(e.shape))
                if perm is not None:
                    perms[name] = perm
            if odd:
                report.notes.append(
                    f"layout {preset.name}: {len(odd)} entries are of a kind it does not "
                    "translate (recurrent cells, attention, depthwise or transposed "
                    f"convolutions) and kept their names and axes: "
                    f"{listed(sorted(odd), quote=False)}"
                )
        if fmt == "dcp":
            return _to_dcp(reader, stored, orphans, keep_alias, mapping, cast, dst, report, perms)

        def target_dtype(e: Any) -> Any:
            return cast if (cast is not None and _castable(e.dtype)) else e.dtype

        plan = []
        for name, e in items:
            dt = target_dtype(e)
            meta = plan_meta(m.get(name, e))
            shape = list(e.shape)
            if name in perms:
                shape = [shape[i] for i in perms[name]]
            plan.append(Planned(mapping[name], dt, shape, dt.nbytes(e.numel), meta))
            report.casts += dt is not e.dtype
        aliases = {mapping[a]: mapping[t] for a, t in keep_alias.items()}
        alias_meta = {mapping[a]: plan_meta(m[a]) for a in keep_alias}
        report.entries, report.aliases = len(plan), len(aliases)
        report.bytes = sum(p.nbytes for p in plan)

        # Without a cast the stored bytes are copied as they are: no torch at all (its
        # import is a second of start-up), read ahead in a thread while the writer writes.
        raw = reader.raw_ok and not perms and all(target_dtype(e) is e.dtype for _, e in items)
        by_new = {p.name: (p, item) for p, item in zip(plan, items, strict=True)}

        def chunks_of(names: list[str]) -> Iterator[tuple[str, Any]]:
            todo = [by_new[new][1][1] for new in names]
            for new, (e, t) in zip(names, reader.stream(todo, raw=raw), strict=True):
                p = by_new[new][0]
                dt = target_dtype(e)
                if not raw and dt is not e.dtype:
                    t = t.to(dt.to_torch())
                perm = perms.get(by_new[new][1][0])
                if perm is not None:  # a layout's kernel: torch's axis order
                    t = t.permute(perm).contiguous()
                yield new, t if raw else tensor_bytes(t)
                del t
                advance(p.nbytes)

        with progress(report.bytes, "convert", enabled=show_progress) as advance:
            report.shards = write_planned(
                dst,
                plan,
                chunks_of,
                aliases=aliases,
                alias_meta=alias_meta,
                metadata=m.metadata,
                max_shard_size=None if max_shard_size is None else parse_size(max_shard_size),
                fsync=fsync,
                what="convert",
            )
        if max_shard_size is None:
            return report
        report.format = "sharded" if report.shards > 1 else "safetensors"
        return report


def _castable(dtype: Any) -> bool:
    """Whether ``--dtype`` casts entries of this dtype: real floats torch can cast (F8 kinds
    included); never complex (the imaginary part would be dropped) or FP4/FP6."""
    return dtype.is_float and dtype.value not in ("C64", "F4", "F6_E2M3", "F6_E3M2")


def _to_dcp(
    reader: Any,
    stored: list[Any],
    orphans: list[str],
    keep_alias: dict[str, str],
    mapping: dict[str, str],
    cast: Any,
    dst: Any,
    report: ConvertReport,
    perms: dict[str, tuple[int, ...]],
) -> ConvertReport:
    """DCP output: DCP writes whole state dicts, so values are gathered (not streamed)."""
    from ._paramdict import EntryMeta, ParamDict
    from ._quantlayouts import without_layout
    from .io import save

    pd = ParamDict(metadata=reader.manifest.metadata)
    m = reader.manifest
    for e in stored:
        t = reader.read(e)
        if cast is not None and _castable(e.dtype) and e.dtype is not cast:
            t = t.to(cast.to_torch())
            report.casts += 1
        if e.name in perms:
            t = t.permute(perms[e.name]).contiguous()
        pd.add(mapping[e.name], t)
        extra = dict(without_layout(e.extra))  # derived by the reader, never stored
        pd._meta[mapping[e.name]] = EntryMeta(e.role, e.trainable, e.tags, extra)
    for a in orphans:
        pd.add(mapping[a], reader.read(m[reader.aliases[a]]))
    for a, t in keep_alias.items():
        pd.tie(mapping[a], mapping[t])
    report.entries, report.aliases = len(pd.stored()), len(keep_alias)
    report.bytes = sum(pd[n].numel() * pd[n].element_size() for n in pd.stored())
    report.notes.append("DCP output holds the whole state dict in memory while writing")
    save(pd, dst, format="dcp")
    return report
