"""load_into: write a checkpoint into a model and say exactly what happened.

The report lists what was loaded, what the model expects and the checkpoint lacks
(``missing``), what the checkpoint has and the model does not (``unexpected``, each with "did
you mean" suggestions), shape mismatches as ``(key, checkpoint_shape, model_shape)`` and dtype
casts. Everything is checked before anything is written, so ``strict=True`` refuses without
changing the model, and ``match`` gives the report without loading at all.

A model built on the meta device is loaded by **assignment**: its parameters become the
checkpoint's tensors, which for safetensors are views of a copy-on-write memory map (no copy,
no random initialisation, pages read when first used). Ties are found on the model before
loading and re-established afterwards, so names that were one object stay one object
(``load_state_dict(assign=True)`` breaks them; this does not).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ParamscopeError
from .._names import apply_renames, did_you_mean

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = ["LoadReport", "collapse", "load_into", "match"]


@dataclass
class LoadReport:
    """What :func:`load_into` (or :func:`match`) found and did.

    Attributes:
        loaded: model names that received a value.
        missing: model names the checkpoint does not provide (ties satisfied count as loaded).
        unexpected: checkpoint names the model does not have.
        mismatched: ``{"key", "checkpoint_shape", "model_shape"}`` per shape mismatch (skipped).
        casts: ``{"key", "from", "to"}`` per dtype conversion.
        suggestions: unexpected name → close model names ("did you mean").
        tied: tie groups of the model, re-established after loading.
        prefix_fix: the prefix rewrite applied (``fix_prefix=True``), e.g. ``"module. → "``.
        assigned: whether tensors were assigned (no copy) rather than copied in.
        still_meta: model tensors left on the meta device after loading (not runnable yet).
        dry_run: True for :func:`match` (nothing was changed).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[dict[str, Any]] = field(default_factory=list)
    casts: list[dict[str, str]] = field(default_factory=list)
    suggestions: dict[str, list[str]] = field(default_factory=dict)
    tied: list[list[str]] = field(default_factory=list)
    prefix_fix: str | None = None
    assigned: bool = False
    still_meta: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Nothing missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (keys equal the attribute names, plus ``ok``).

        Returns:
            The dict.
        """
        return {
            "ok": self.ok,
            "loaded": self.loaded,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": self.mismatched,
            "casts": self.casts,
            "suggestions": self.suggestions,
            "tied": self.tied,
            "prefix_fix": self.prefix_fix,
            "assigned": self.assigned,
            "still_meta": self.still_meta,
            "dry_run": self.dry_run,
        }

    def format(self) -> str:
        """Human text, runs of numbered names collapsed (``layers.{0..31}.attn.q.weight``).

        Returns:
            Several lines.
        """
        verdict = "OK" if self.ok else "PROBLEMS"
        what = "would load" if self.dry_run else "loaded"
        lines = [
            f"{verdict}: {what} {len(self.loaded)} tensors"
            + (" by assignment (no copy)" if self.assigned and not self.dry_run else "")
        ]
        for title, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                lines.append(f"  {title} ({len(names)}):")
                lines += [f"    {n}" for n in collapse(names)]
        for n, hints in self.suggestions.items():
            lines.append(f"    did you mean: {n} → {' or '.join(hints)}")
        if self.mismatched:
            lines.append(f"  shape mismatch ({len(self.mismatched)}):")
            for m in self.mismatched:
                lines.append(
                    f"    {m['key']}: checkpoint {tuple(m['checkpoint_shape'])}, "
                    f"model {tuple(m['model_shape'])}"
                )
        if self.casts:
            pairs = sorted({(c["from"], c["to"]) for c in self.casts})
            lines.append(
                f"  dtype casts ({len(self.casts)}): " + ", ".join(f"{a} → {b}" for a, b in pairs)
            )
        if self.prefix_fix:
            lines.append(f"  prefix fixed: {self.prefix_fix}")
        for g in self.tied:
            lines.append(f"  tied: {' = '.join(g)}")
        if self.still_meta:
            lines.append(
                f"  still on meta ({len(self.still_meta)}): " + ", ".join(collapse(self.still_meta))
            )
        return "\n".join(lines)


_NUM = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)")


def _ranges(nums: list[int]) -> str:
    nums = sorted(set(nums))
    parts: list[str] = []
    start = prev = nums[0]
    for n in [*nums[1:], None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}..{prev}" if prev > start else str(start))
        if n is not None:
            start = prev = n
    return ",".join(parts)


def collapse(names: Iterable[str]) -> list[str]:
    """Collapse names that differ only in their first number: ``layers.{0..31}.q.weight``.

    Args:
        names: dotted names.

    Returns:
        Collapsed lines, in first-seen order.

    Example:
        >>> collapse(["h.0.w", "h.1.w", "h.2.w", "h.5.w", "emb"])
        ['h.{0..2,5}.w', 'emb']
    """
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for n in names:
        m = _NUM.search(n)
        key = n if m is None else n[: m.start()] + "{}" + n[m.end() :]
        if key not in groups:
            groups[key] = []
            order.append(key)
        if m is not None:
            groups[key].append(int(m.group()))
    out = []
    for key in order:
        nums = groups[key]
        if not nums:
            out.append(key)
        elif len(nums) == 1:
            out.append(key.replace("{}", str(nums[0])))
        else:
            out.append(key.replace("{}", "{" + _ranges(nums) + "}"))
    return out


def _source(
    source: Any, dry_run: bool
) -> tuple[dict[str, tuple[tuple[int, ...], str]], ParamDict | None]:
    """Shapes/dtypes of the source (and its values unless ``dry_run`` with a path)."""
    from .._paramdict import ParamDict

    if isinstance(source, (str, os.PathLike)):
        if dry_run:
            from ..io import read_manifest

            m = read_manifest(source)
            info = {n: (e.shape, _torch_name(e.dtype.value)) for n, e in m.items()}
            return info, None
        from ..io import load

        pd = load(source)
    elif isinstance(source, ParamDict):
        pd = source
    elif isinstance(source, Mapping):
        pd = ParamDict(source)
    elif hasattr(source, "named_parameters"):
        pd = ParamDict.from_module(source)
    else:
        raise ParamscopeError(
            f"load_into: expected a checkpoint path, a ParamDict, a dict of tensors or a "
            f"module as source, found {type(source).__name__}"
        )
    info = {n: (tuple(pd[n].shape), str(pd[n].dtype).removeprefix("torch.")) for n in pd}
    return info, pd


def _torch_name(dtype: str) -> str:
    from .._dtypes import _TORCH_NAMES, DType

    return _TORCH_NAMES.get(DType(dtype), dtype.lower())


def _expected(model: Any) -> dict[str, Any]:
    """Model names → tensors, as ``state_dict`` names them (ties under every name)."""
    return dict(model.state_dict(keep_vars=True))


def _prefix_fix(unexpected: list[str], missing: list[str]) -> tuple[str, str] | None:
    """An unambiguous prefix rewrite mapping every unexpected name onto a missing one."""
    if not unexpected or not missing:
        return None
    want = set(missing)
    candidates = []
    for pre in ("module.", "model.", "_orig_mod.", "transformer.", "backbone."):
        if all(n.startswith(pre) and n[len(pre) :] in want for n in unexpected):
            candidates.append((pre, ""))
        if all(pre + n in want for n in unexpected):
            candidates.append(("", pre))
    return candidates[0] if len(candidates) == 1 else None


def _plan(
    model: Any,
    info: Mapping[str, tuple[tuple[int, ...], str]],
    remap: Sequence[tuple[str, str]] | None,
    fix_prefix: bool,
    dtype: Any,
) -> tuple[LoadReport, dict[str, str]]:
    """The report, and model name → source name for everything that will load."""
    rename = apply_renames(info, remap) if remap else {n: n for n in info}
    src_by_new = {new: old for old, new in rename.items()}
    expected = _expected(model)
    report = LoadReport(tied=_ties_of(model))
    unexpected = [n for n in src_by_new if n not in expected]
    missing = [n for n in expected if n not in src_by_new]
    fix = _prefix_fix(unexpected, missing) if fix_prefix else None
    if fix is not None:
        strip, add = fix
        src_by_new = {
            (add + n[len(strip) :] if n in unexpected else n): old for n, old in src_by_new.items()
        }
        report.prefix_fix = f"{strip or '(none)'} → {add or '(none)'}"
        unexpected = [n for n in src_by_new if n not in expected]
    tie_of = {n: g[0] for g in report.tied for n in g}
    plan: dict[str, str] = {}
    for name, t in expected.items():
        src = src_by_new.get(name)
        if src is None:
            root = tie_of.get(name)
            group = next((g for g in report.tied if name in g), [])
            if root is not None and any(g in src_by_new for g in group):
                continue  # satisfied by its tie
            report.missing.append(name)
            continue
        shape, sdt = info[src]
        if tuple(t.shape) != tuple(shape):
            report.mismatched.append(
                {"key": name, "checkpoint_shape": list(shape), "model_shape": list(t.shape)}
            )
            continue
        want = (
            str(dtype).removeprefix("torch.")
            if dtype is not None and t.is_floating_point()
            else str(t.dtype).removeprefix("torch.")
        )
        if sdt != want:
            report.casts.append({"key": name, "from": sdt, "to": want})
        plan[name] = src
        report.loaded.append(name)
    report.unexpected = [n for n in src_by_new if n not in expected]
    for n in report.unexpected:
        hints = did_you_mean(n, expected)
        if hints:
            report.suggestions[n] = hints
    return report, plan


def _ties_of(model: Any) -> list[list[str]]:
    from ._ties import find_ties

    return find_ties(model)


def load_into(
    model: torch.nn.Module,
    source: Any,
    *,
    strict: bool = False,
    remap: Sequence[tuple[str, str]] | None = None,
    assign: bool | None = None,
    dtype: Any = None,
    fix_prefix: bool = False,
) -> LoadReport:
    """Load a checkpoint into a model and report what happened.

    Args:
        model: the model (any device; a meta model is loaded by assignment).
        source: a checkpoint path, a ParamDict, a dict of tensors or a module.
        strict: raise (changing nothing) when anything is missing, unexpected or mismatched.
        remap: ``(regex, replacement)`` rules applied to the checkpoint's names first.
        assign: assign the checkpoint's tensors instead of copying into the model's
            (``None``: assign when the model has meta tensors, else copy).
        dtype: the floating dtype to load as (``torch.bfloat16``…); ``None`` keeps the
            model's dtypes (checkpoint values are cast, and the casts reported).
        fix_prefix: apply an unambiguous ``module.``/``model.``-style prefix fix.

    Returns:
        A :class:`LoadReport`. Shape mismatches are skipped and reported, never raised,
        unless ``strict``.

    Raises:
        ParamscopeError: ``strict`` and the report is not clean (the message is the report).

    Example:
        >>> import torch
        >>> src = torch.nn.Linear(4, 2)
        >>> dst = torch.nn.Linear(4, 2)
        >>> r = load_into(dst, src.state_dict())
        >>> r.ok, torch.equal(dst.weight, src.weight)
        (True, True)
    """
    import torch

    info, pd = _source(source, dry_run=False)
    report, plan = _plan(model, info, remap, fix_prefix, dtype)
    if strict and not report.ok:
        raise ParamscopeError("load_into(strict=True) refused:\n" + report.format())
    expected = _expected(model)
    if assign is None:
        assign = any(t.is_meta for t in expected.values())
    report.assigned = bool(assign)
    assert pd is not None
    from ._ties import set_tensor

    with torch.no_grad():
        for name, src in plan.items():
            cur = expected[name]
            value = pd[src]
            target_dtype = dtype if (dtype is not None and cur.is_floating_point()) else cur.dtype
            if assign:
                if value.dtype != target_dtype:
                    value = value.to(target_dtype)
                if isinstance(cur, torch.nn.Parameter):
                    value = torch.nn.Parameter(value, requires_grad=cur.requires_grad)
                set_tensor(model, name, value)
            else:
                if dtype is not None and cur.dtype != target_dtype:
                    raise ParamscopeError(
                        f"load_into: dtype={dtype} needs assign=True (the model's {name!r} "
                        f"is {cur.dtype} and cannot change dtype in place)"
                    )
                cur.copy_(value)
        # Re-establish ties: every name of a group points at the loaded object of its root.
        for group in report.tied:
            from ._ties import owner

            loaded = next((n for n in group if n in plan), group[0])
            mod, local = owner(model, loaded)
            obj = mod._parameters.get(local, mod._buffers.get(local))
            for n in group:
                if n != loaded:
                    set_tensor(model, n, obj)
    report.still_meta = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    report.still_meta += [
        n for n, t in model.named_buffers() if t.is_meta and n not in report.still_meta
    ]
    return report


def match(
    model: torch.nn.Module,
    checkpoint: Any,
    *,
    remap: Sequence[tuple[str, str]] | None = None,
    fix_prefix: bool = False,
) -> LoadReport:
    """Will this checkpoint load into this model? The report, changing nothing.

    A checkpoint path is read from its headers only (no tensor bytes).

    Args:
        model: the model (a meta-device build is enough).
        checkpoint: a path, ParamDict, dict of tensors or module.
        remap: rename rules, as for :func:`load_into`.
        fix_prefix: consider the prefix fix, as for :func:`load_into`.

    Returns:
        A :class:`LoadReport` with ``dry_run=True``.

    Example:
        >>> import torch
        >>> match(torch.nn.Linear(4, 2), {"weight": torch.zeros(2, 3)}).mismatched[0]["key"]
        'weight'
    """
    info, _ = _source(checkpoint, dry_run=True)
    report, _ = _plan(model, info, remap, fix_prefix, None)
    report.dry_run = True
    return report
