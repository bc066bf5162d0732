"""verify: is a checkpoint sound? Header rules, index ↔ shard agreement, stored hashes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ._enums import Format
from ._errors import ParamscopeError, SourceNotFoundError

__all__ = ["VerifyReport", "verify"]


@dataclass
class VerifyReport:
    """The result of :func:`verify`.

    Attributes:
        source: the path checked.
        format: its format (``None`` when it could not be read at all).
        files: files checked.
        entries: entries in the manifest.
        hashed: entries whose stored hash was recomputed and compared.
        problems: one line per problem, naming file and entry.
        notes: informational lines (e.g. no stored hashes to check).
    """

    source: str
    format: str | None = None
    files: int = 0
    entries: int = 0
    hashed: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    values: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``ok, source, format, files, entries, hashed, problems, notes``.

        Returns:
            The dict.
        """
        return {
            "ok": self.ok,
            "source": self.source,
            "format": self.format,
            "files": self.files,
            "entries": self.entries,
            "hashed": self.hashed,
            "problems": self.problems,
            "notes": self.notes,
            "values": self.values,
        }

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope verify`` prints: the verdict with what was checked,
        then one line per problem and per note.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.

        Returns:
            The text, without a final newline; strings from files are escaped.

        Example:
            >>> r = VerifyReport("m.safetensors", "safetensors", 1, 3, 3)
            >>> print(r.to_text())
            OK: m.safetensors [safetensors] 3 entries in 1 file(s), 3 hashes checked
        """
        from ._text import printable_tree

        d = printable_tree(self.to_dict())
        verdict = "OK" if d["ok"] else "FAILED"
        lines = [
            f"{verdict}: {d['source']} [{d['format'] or 'unreadable'}] {d['entries']} entries "
            f"in {d['files']} file(s), {d['hashed']} hashes checked"
        ]
        lines += [f"  problem: {p}" for p in d["problems"]]
        lines += [f"  note: {n}" for n in d["notes"]]
        return "\n".join(lines)


def verify(path: str | os.PathLike[str], *, values: bool = False) -> VerifyReport:
    """Check a checkpoint's structure and, where paramscope stored them, its hashes.

    Structure: every header rule of the format, and for sharded checkpoints that the index
    and the shards name the same entries. Hashes: each entry's digest recorded at save time
    (XXH3-128, or SHA-256) is recomputed from the file, so a single flipped byte is found and
    named. Torch-free.

    Args:
        path: any checkpoint source.
        values: also read every floating tensor (streaming, one at a time) and count NaN and
            Inf values; any found is a problem (``values`` lists the counts per tensor).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is the verdict. A file that breaks its
        format's rules (or a refused pickle) is a problem in the report, not an exception.

    Raises:
        SourceNotFoundError: ``path`` does not exist.
        TargetError: ``path`` is a model TARGET (``zoo:``, ``module:callable``, a
            config.json), which has no files to verify.

    Example:
        >>> import tempfile, torch, paramscope
        >>> path = paramscope.save({"w": torch.ones(4)}, f"{tempfile.mkdtemp()}/model.safetensors")
        >>> r = verify(path)
        >>> r.ok, r.hashed, r.problems
        (True, 1, [])
    """
    from ._target_kind import model_target_error
    from .io import read_manifest
    from .io._digest import verify_hashes
    from .io._safetensors_header import parse_header

    err = model_target_error(path, "verify")
    if err is not None:
        raise err
    report = VerifyReport(os.fspath(path))
    try:
        m = read_manifest(path)
    except SourceNotFoundError:
        raise
    except ParamscopeError as exc:
        report.problems.append(str(exc))
        return report
    report.format = m.format.value
    report.entries = len(m)
    report.notes.extend(m.notes)
    done: dict[str, set[str]] = {}  # file → entries whose digest the value pass checked
    if values:
        done = _check_values(path, report, m.format in (Format.SAFETENSORS, Format.SHARDED))
    report.files = len([f for f in m.files if not f.endswith(".json")]) or 1
    if m.format not in (Format.SAFETENSORS, Format.SHARDED):
        report.notes.append(f"{m.format.value} files carry no hashes: structure checked only")
        return report
    unhashed = 0
    for f in m.files:
        if f.endswith(".json"):
            continue
        try:
            header = parse_header(f)
        except ParamscopeError as exc:  # pragma: no cover - read_manifest parsed it already
            report.problems.append(str(exc))
            continue
        checked, problems = verify_hashes(header, frozenset(done.get(f, ())))
        report.hashed += checked
        report.problems.extend(problems)
        unhashed += len(header.tensors) - checked
    if unhashed:
        report.notes.append(
            f"{unhashed} entries have no stored hash (not written by paramscope): "
            "structure checked only"
        )
    return report


def _check_values(
    path: str | os.PathLike[str], report: VerifyReport, hashed: bool
) -> dict[str, set[str]]:
    """Count NaN and Inf in every floating tensor; with ``hashed`` (safetensors) also check
    each read tensor's digest on the same bytes, so every byte is read once (a remote
    checkpoint is not downloaded twice). Returns the entries checked that way, by file."""
    from ._values import count_nan_inf
    from .io._digest import check_digest
    from .io._reader import SourceReader
    from .io._safetensors_header import parse_header
    from .io._writer import tensor_bytes

    done: dict[str, set[str]] = {}
    headers: dict[str, Any] = {}
    with SourceReader(path) as reader:
        for e in reader.entries:
            if not e.dtype.is_float or e.dtype.value.startswith(("F4", "F6")):
                continue  # FP4/FP6 have no NaN or Inf
            t = reader.read(e)
            if hashed and e.location is not None and e.tie is None:
                f = e.location.file
                if f not in headers:
                    headers[f] = parse_header(f)
                checked, problem = check_digest(headers[f], e.name, tensor_bytes(t))
                if checked:
                    report.hashed += 1
                    done.setdefault(f, set()).add(e.name)
                if problem is not None:
                    report.problems.append(problem)
            nan, inf = count_nan_inf(t)  # F8 kinds too (torch has no isinf there)
            if nan or inf:
                report.values.append({"name": e.name, "nan": nan, "inf": inf})
                report.problems.append(
                    f"{e.location.file if e.location else path}: entry {e.name!r}: "
                    f"{nan} NaN and {inf} Inf values in {e.numel} elements"
                )
    return done
