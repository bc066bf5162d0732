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

from .._errors import ArgumentError, ArgumentTypeError, StrictLoadError
from .._names import apply_renames, did_you_mean, parse_rules

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
        prefix_hint: the prefix rewrite ``fix_prefix=True`` would apply, when it was not asked.
        ignored: checkpoint name → why it was left out on purpose (a buffer the model computes
            for itself, such as GPT-2's ``attn.bias`` causal masks, ``inv_freq`` or an old
            ``position_ids`` the model no longer holds); not a problem.
        recomputed: model buffer → how it was computed (non-persistent buffers the checkpoint
            does not hold, left on meta by a meta build, computed by the model's own code).
        assigned: whether tensors were assigned (no copy) rather than copied in.
        still_meta: model tensors left on the meta device after loading, each
            ``{"name", "owner", "kind", "reason"}``: the model cannot run until they are set.
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
    prefix_hint: str | None = None
    ignored: dict[str, str] = field(default_factory=dict)
    recomputed: dict[str, str] = field(default_factory=dict)
    assigned: bool = False
    still_meta: list[dict[str, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Nothing missing, unexpected or mismatched, and nothing left on meta: ready to run."""
        return not (self.missing or self.unexpected or self.mismatched or self.still_meta)

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
            "prefix_hint": self.prefix_hint,
            "ignored": self.ignored,
            "recomputed": self.recomputed,
            "assigned": self.assigned,
            "still_meta": self.still_meta,
            "dry_run": self.dry_run,
        }

    def format(self) -> str:
        """Human text, runs of numbered names collapsed (``layers.{0..31}.attn.q.weight``).

        Returns:
            Several lines.
        """
        from dataclasses import fields, replace

        from .._text import printable_tree

        # names come from files: escape what a terminal would act on (ESC, newlines …)
        shown = {f.name: printable_tree(getattr(self, f.name)) for f in fields(self)}
        return replace(self, **shown)._format()

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope match`` prints: :meth:`format`.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.

        Returns:
            The text, without a final newline; names are escaped for a terminal.

        Example:
            >>> print(LoadReport(loaded=["w"], missing=["b"], dry_run=True).to_text())
            PROBLEMS: would load 1 tensors
              missing (1):
                b
        """
        return self.format()

    def _format(self) -> str:
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
        shown = list(self.suggestions.items())
        for n, hints in shown[:_MAX_HINTS]:
            lines.append(f"    did you mean: {n} → {' or '.join(hints)}")
        if len(shown) > _MAX_HINTS:
            lines.append(f"    … {len(shown) - _MAX_HINTS} more suggestions (--json has them all)")
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
        if self.prefix_hint:
            lines.append(
                f"  hint: fix_prefix=True (--fix-prefix) would rewrite the names: "
                f"{self.prefix_hint}"
            )
        for why, names in _by_reason(self.ignored):
            lines.append(f"  ignored ({len(names)}): {', '.join(collapse(names))}: {why}")
        for how, names in _by_reason(self.recomputed):
            lines.append(f"  recomputed ({len(names)}): {', '.join(collapse(names))} by {how}")
        for g in self.tied:
            lines.append(f"  tied: {' = '.join(g)}")
        news = [m for m in self.still_meta if m["reason"] not in _TOLD]
        if news:  # those missing or mismatched are listed above already
            lines.append(f"  still on meta ({len(news)}), the model cannot run until they are set:")
            for m in news:
                lines.append(f"    {m['name']} (owner {m['owner']}: {m['kind']}): {m['reason']}")
        return "\n".join(lines)


_MAX_HINTS = 10
_MISSING = "the checkpoint does not hold it"
_MISMATCHED = "skipped: its shape differs from the checkpoint's"
_TOLD = (_MISSING, _MISMATCHED)


def _by_reason(d: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """``name → reason`` grouped by reason, in first-seen order."""
    out: dict[str, list[str]] = {}
    for name, why in d.items():
        out.setdefault(why, []).append(name)
    return list(out.items())


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

    what = "match" if dry_run else "load_into"
    if isinstance(source, (str, os.PathLike)):
        from .._target_kind import model_target_error

        err = model_target_error(source, what)  # named here, not "this operation"
        if err is not None:
            raise err
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
        raise ArgumentTypeError(
            f"{what}: expected a checkpoint path, a ParamDict, a dict of tensors or a "
            f"module as source, found {type(source).__name__}"
        )
    info = {n: (tuple(pd[n].shape), str(pd[n].dtype).removeprefix("torch.")) for n in pd}
    return info, pd


def _torch_name(dtype: str) -> str:
    from .._dtypes import _TORCH_NAMES, DType

    return _TORCH_NAMES.get(DType(dtype), dtype.lower())


def _expected(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model names → tensors: what ``state_dict`` holds (ties under every name), and the
    non-persistent buffers (loaded when a checkpoint holds them, computed when not)."""
    expected = dict(model.state_dict(keep_vars=True))
    optional = {
        n: b
        for n, b in model.named_buffers(remove_duplicate=False)
        if n not in expected and b is not None
    }
    return expected, optional


#: Last name segments of buffers that models compute for themselves: a checkpoint entry of
#: that name which the model does not hold is left out with a note (as ``from_pretrained``
#: does), not reported as unexpected.
COMPUTED_BUFFERS: frozenset[str] = frozenset(
    {"inv_freq", "original_inv_freq", "position_ids", "token_type_ids", "masked_bias"}
)


def computed_buffer(name: str, shape: Sequence[int]) -> str | None:
    """Why a checkpoint entry the model does not hold can be left out, or ``None``.

    Args:
        name: the checkpoint's entry name.
        shape: its shape.

    Returns:
        The reason, or ``None`` when the entry matters.

    Example:
        >>> computed_buffer("h.0.attn.bias", (1, 1, 1024, 1024))
        'a causal-mask buffer (GPT-2 attn.bias) that the model computes for itself'
        >>> computed_buffer("h.0.attn.c_attn.bias", (2304,)) is None
        True
    """
    last = name.rsplit(".", 1)[-1]
    if last in COMPUTED_BUFFERS:
        return f"a {last!r} buffer that the model computes for itself"
    if (name.endswith((".attn.bias", ".crossattention.bias")) or name == "attn.bias") and len(
        shape
    ) == 4:
        return "a causal-mask buffer (GPT-2 attn.bias) that the model computes for itself"
    return None


def _prefix_fix(unexpected: list[str], missing: list[str]) -> tuple[str, str] | None:
    """The one prefix rewrite (strip or add) that maps most unexpected names onto missing ones.

    Candidates come from the names themselves (``module.``, ``_orig_mod.``, a head model's
    ``model.`` / ``transformer.`` / ``bert.`` …, either way). The best must map at least half
    of the unexpected names and beat every other candidate; otherwise there is no fix.
    """
    if not unexpected or not missing:
        return None
    want, have = set(missing), set(unexpected)
    support: dict[tuple[str, str], int] = {}
    for names, other, add in ((missing, have, True), (unexpected, want, False)):
        for n in names:
            for i, ch in enumerate(n):
                if ch == "." and n[i + 1 :] in other:
                    key = ("", n[: i + 1]) if add else (n[: i + 1], "")
                    support[key] = support.get(key, 0) + 1
    if not support:
        return None
    ranked = sorted(support.items(), key=lambda kv: -kv[1])
    (best, n_best), rest = ranked[0], ranked[1:]
    if rest and rest[0][1] == n_best:
        return None
    return best if 2 * n_best >= len(unexpected) else None


def _apply_prefix(names: Mapping[str, str], fix: tuple[str, str], want: set[str]) -> dict[str, str]:
    strip, add = fix
    out: dict[str, str] = {}
    for n, old in names.items():
        new = add + n[len(strip) :] if n.startswith(strip) else n
        out[new if new in want and new not in names else n] = old
    return out


def _plan(
    model: Any,
    info: Mapping[str, tuple[tuple[int, ...], str]],
    remap: Sequence[tuple[str, str]] | Sequence[str] | None,
    fix_prefix: bool,
    dtype: Any,
) -> tuple[LoadReport, dict[str, str]]:
    """The report, and model name → source name for everything that will load."""
    rename = apply_renames(info, parse_rules(remap, "remap")) if remap else {n: n for n in info}
    src_by_new = {new: old for old, new in rename.items()}
    expected, optional = _expected(model)
    report = LoadReport(tied=_ties_of(model))

    unexpected = [
        n
        for n, src in src_by_new.items()
        if n not in expected and n not in optional and computed_buffer(n, info[src][0]) is None
    ]
    missing = [n for n in expected if n not in src_by_new]
    fix = _prefix_fix(unexpected, missing)
    if fix is not None:
        desc = f"{fix[0] or '(none)'} → {fix[1] or '(none)'}"
        if fix_prefix:
            src_by_new = _apply_prefix(src_by_new, fix, set(missing))
            report.prefix_fix = desc
        else:
            report.prefix_hint = desc
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
        if _check(report, name, t, info[src], dtype):
            plan[name] = src
            report.loaded.append(name)
    for name, t in optional.items():
        src = src_by_new.get(name)
        if src is None:
            continue
        if tuple(t.shape) != tuple(info[src][0]):
            report.ignored[src] = (
                f"the model's non-persistent buffer has shape {tuple(t.shape)}, the "
                f"checkpoint's {tuple(info[src][0])}: the model's own value is kept"
            )
        elif _check(report, name, t, info[src], dtype):
            plan[name] = src
            report.loaded.append(name)
    for n in src_by_new:
        if n in expected or n in optional:
            continue
        why = computed_buffer(n, info[src_by_new[n]][0])
        if why is not None:
            report.ignored[src_by_new[n]] = why
            continue
        report.unexpected.append(n)
        hints = did_you_mean(n, expected)
        if hints:
            report.suggestions[n] = hints
    return report, plan


def _check(
    report: LoadReport, name: str, t: Any, src: tuple[tuple[int, ...], str], dtype: Any
) -> bool:
    """Record a shape mismatch (False) or a cast; True when ``name`` can load."""
    shape, sdt = src
    if tuple(t.shape) != tuple(shape):
        report.mismatched.append(
            {"key": name, "checkpoint_shape": list(shape), "model_shape": list(t.shape)}
        )
        return False
    want = (
        str(dtype).removeprefix("torch.")
        if dtype is not None and t.is_floating_point()
        else str(t.dtype).removeprefix("torch.")
    )
    if sdt != want:
        report.casts.append({"key": name, "from": sdt, "to": want})
    return True


def _ties_of(model: Any) -> list[list[str]]:
    from ._ties import find_ties

    return find_ties(model)


def _meta_after(model: Any, report: LoadReport, plan: Mapping[str, str]) -> list[str]:
    """Names of model tensors that are on meta and that the plan does not load."""
    expected, optional = _expected(model)
    done = set(plan)
    for group in report.tied:
        if done.intersection(group):
            done.update(group)
    return [n for n, t in (expected | optional).items() if t.is_meta and n not in done]


def _settle_meta(model: Any, report: LoadReport, plan: Mapping[str, str]) -> dict[str, Any]:
    """Compute what stays on meta after ``plan``: recompute the buffers the model makes for
    itself (filling ``report.recomputed``), list the rest in ``report.still_meta``."""
    names = _meta_after(model, report, plan)
    if not names:
        return {}
    _, optional = _expected(model)
    computable = [n for n in names if n in optional]
    from ._buffers import recompute_buffers

    rec = recompute_buffers(model, computable) if computable else None
    values: dict[str, Any] = {}
    for n in names:
        if rec is not None and n in rec.values:
            values[n] = rec.values[n]
            report.recomputed[n] = rec.how[n]
            continue
        if rec is not None and n in rec.failed:
            report.still_meta.append({"name": n, **rec.failed[n]})
            continue
        path = n.rpartition(".")[0]
        mod = model.get_submodule(path) if path else model
        if n in report.missing:
            reason = _MISSING
        elif any(m["key"] == n for m in report.mismatched):
            reason = _MISMATCHED
        else:
            reason = "not loaded"
        report.still_meta.append(
            {"name": n, "owner": path or "(root)", "kind": type(mod).__name__, "reason": reason}
        )
    return values


def load_into(
    model: torch.nn.Module,
    source: Any,
    *,
    strict: bool = False,
    remap: Sequence[tuple[str, str]] | Sequence[str] | None = None,
    assign: bool | None = None,
    dtype: Any = None,
    fix_prefix: bool = False,
) -> LoadReport:
    """Load a checkpoint into a model and report what happened.

    After loading, a model built on the meta device is **ready to run**, or the report says
    why not: buffers the model computes for itself (rotary ``inv_freq``, ``position_ids``,
    masks) that the checkpoint does not hold are computed by the model's own code (see
    :mod:`paramscope.lifecycle._buffers`) and listed in ``recomputed``; a buffer the checkpoint
    does hold is loaded even when the model marks it non-persistent; anything still on meta is
    listed in ``still_meta`` with its owner module and makes ``ok`` False.

    Args:
        model: the model (any device; a meta model is loaded by assignment).
        source: a checkpoint path, a ParamDict, a dict of tensors or a module.
        strict: raise (changing nothing) when anything is missing, unexpected, mismatched or
            would be left on meta.
        remap: ``(regex, replacement)`` rules (or ``"REGEX=REPLACEMENT"`` strings) applied to
            the checkpoint's names first.
        assign: assign the checkpoint's tensors instead of copying into the model's
            (``None``: assign when the model has meta tensors, else copy).
        dtype: the floating dtype to load as (``torch.bfloat16``…); ``None`` keeps the
            model's dtypes (checkpoint values are cast, and the casts reported).
        fix_prefix: apply the one unambiguous prefix rewrite, stripping or adding a prefix
            (``module.``, ``_orig_mod.``, a base model into a ``…ForCausalLM`` and back);
            without it the report carries the rewrite as ``prefix_hint``.

    Returns:
        A :class:`LoadReport`. Shape mismatches are skipped and reported, never raised,
        unless ``strict``.

    Raises:
        StrictLoadError: ``strict`` and the report is not clean (the message is the report,
            ``.report`` the :class:`LoadReport`).
        ArgumentTypeError: a source of a type it does not take.
        ArgumentError: ``dtype`` that needs ``assign=True``.

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
    computed = _settle_meta(model, report, plan)
    if strict and not report.ok:
        raise StrictLoadError(report, "load_into(strict=True) refused:\n" + report.format())
    expected, optional = _expected(model)
    current = expected | optional
    if assign is None:
        assign = any(t.is_meta for t in current.values())
    report.assigned = bool(assign)
    assert pd is not None
    from ._ties import owner, set_tensor

    with torch.no_grad():
        for name, src in plan.items():
            cur = current[name]
            value = pd[src]
            target_dtype = dtype if (dtype is not None and cur.is_floating_point()) else cur.dtype
            if assign or cur.is_meta:
                if value.dtype != target_dtype:
                    value = value.to(target_dtype)
                if isinstance(cur, torch.nn.Parameter):
                    value = torch.nn.Parameter(value, requires_grad=cur.requires_grad)
                set_tensor(model, name, value)
            else:
                if dtype is not None and cur.dtype != target_dtype:
                    raise ArgumentError(
                        f"load_into: dtype={dtype} needs assign=True (the model's {name!r} "
                        f"is {cur.dtype} and cannot change dtype in place)"
                    )
                cur.copy_(value)
        for name, value in computed.items():
            set_tensor(model, name, value)
        # Re-establish ties: every name of a group points at the loaded object of its root.
        for group in report.tied:
            loaded = next((n for n in group if n in plan), group[0])
            mod, local = owner(model, loaded)
            obj = mod._parameters.get(local, mod._buffers.get(local))
            for n in group:
                if n != loaded:
                    set_tensor(model, n, obj)
    left = {m["name"] for m in report.still_meta}
    expected, optional = _expected(model)
    for n, t in (expected | optional).items():
        if t.is_meta and n not in left:  # never expected: say so rather than hide it
            path = n.rpartition(".")[0]
            mod = model.get_submodule(path) if path else model
            report.still_meta.append(
                {
                    "name": n,
                    "owner": path or "(root)",
                    "kind": type(mod).__name__,
                    "reason": "left on meta",
                }
            )
    return report


def match(
    model: torch.nn.Module,
    checkpoint: Any,
    *,
    remap: Sequence[tuple[str, str]] | Sequence[str] | None = None,
    fix_prefix: bool = False,
) -> LoadReport:
    """Will this checkpoint load into this model? The report, changing nothing.

    A checkpoint path is read from its headers only (no tensor bytes). For a model on meta,
    the buffers it computes for itself are computed (on the side, not assigned) to tell
    whether the model would be ready to run.

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
    report, plan = _plan(model, info, remap, fix_prefix, None)
    _settle_meta(model, report, plan)
    report.dry_run = True
    return report
