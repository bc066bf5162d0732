"""Quantised-checkpoint layouts: the logical float weights behind packed entries.

:func:`annotate` runs the recognisers (one module per family, in :data:`ORDER`) over a
:class:`~paramscope.Manifest` and returns a manifest whose entries say what they are. The
record lives in ``Entry.extra["quant_layout"]`` (:data:`LAYOUT_KEY`), apart from
paramscope's own ``extra["quant"]`` (owned by :mod:`paramscope._quantstore`, stored in
files): the layout record is *derived* from the header and the config each time a
checkpoint is read, never written to a file (the writers and ``load`` drop it). Three kinds:

* a **data** entry (the packed values of one logical weight)::

      {"part": "data", "weight": "x.weight", "primary": True, "method": "gptq",
       "bits": 4, "group_size": 128, "shape": [4096, 4096], "evidence": "config.json",
       "data": ["x.qweight"], "meta": ["x.scales", "x.qzeros", "x.g_idx"],
       "logical_dtype": "F16", "detail": {...}}

  Its role is ``param``, not trainable (packed weights are frozen), and
  :attr:`~paramscope.Entry.logical_numel` is the logical shape's product (``0`` for the
  further data entries of a weight stored in several, ``"primary": False``).
* a **meta** entry (scales, zero points, absmax, g_idx, maps, state blobs)::

      {"part": "meta", "weight": "x.weight", "of": "x.qweight"}

  Its role is ``buffer``, not trainable; counting reports its elements as ``quant_meta``,
  neither parameters nor the model's buffers.
* an **unknown** entry (looks packed, fits no layout): ``{"part": "unknown"}``: a parameter
  at its stored element count, and a note says the total may be wrong.

Cost: one pass over the names decides whether anything may be quantised (a config, a GGUF
file, or a name with a scale-like word); only then do the recognisers run, each one pass.
A huge unquantised header is returned as it is, its entries never built.

This package is core: it imports only core modules (no io, no torch, no numpy).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import ModuleType
from typing import Any

from .._enums import Role, RoleSource
from .._manifest import Entry, Manifest
from ._base import (
    EVIDENCE_CONFIG,
    EVIDENCE_FILE,
    EVIDENCE_NAMES,
    QuantConfig,
    QuantWeight,
    Recognised,
    Recogniser,
)

__all__ = [
    "EVIDENCE_CONFIG",
    "EVIDENCE_FILE",
    "EVIDENCE_NAMES",
    "LAYOUT_KEY",
    "ORDER",
    "SMALL_VALUES_KEY",
    "QuantConfig",
    "QuantWeight",
    "Recognised",
    "Recogniser",
    "annotate",
    "layout_record",
    "logical_numel",
    "may_be_quantized",
    "recognise_all",
    "without_layout",
]

#: The key of the derived layout record in ``Entry.extra``.
LAYOUT_KEY = "quant_layout"

#: The key under which io puts the values of the few small entries a layout needs
#: (bitsandbytes' ``quant_state`` JSON blob, compressed-tensors' ``weight_shape``): a list of
#: ints, read by :func:`paramscope.io._quantconfig.with_small_values` (≤ 4 KiB each, only
#: when the manifest may be quantised). Derived like the layout record: never written.
SMALL_VALUES_KEY = "values"

#: The recognisers, in the order they run (each module has ``recognise``); an earlier one
#: claims its entries first: paramscope's own, GGUF, bitsandbytes, GPTQ/AWQ,
#: compressed-tensors, FP8, MLX, MXFP4, optimum-quanto.
ORDER: tuple[str, ...] = (
    "_own",
    "_gguf",
    "_bnb",
    "_gptq",
    "_compressed",
    "_fp8",
    "_mlx",
    "_mxfp4",
    "_quanto",
)

#: A name that may belong to a quantised layout: a scale-like word anywhere in it.
_HINT = re.compile(
    r"scale|zero|absmax|quant|SCB|g_idx|qweight|packed|_blocks|biases|_data|_shift|"
    r"weight_shape|weight_format|__q"
)


def _modules() -> list[ModuleType]:
    """The recogniser modules in :data:`ORDER` (imported when first needed)."""
    from . import _bnb, _compressed, _fp8, _gguf, _gptq, _mlx, _mxfp4, _own, _quanto

    return [_own, _gguf, _bnb, _gptq, _compressed, _fp8, _mlx, _mxfp4, _quanto]


def may_be_quantized(m: Manifest, config: QuantConfig | None) -> bool:
    """Whether any recogniser may find something: one pass over the names only.

    Args:
        m: the manifest.
        config: the checkpoint's quantisation config, if any.

    Returns:
        True when there is a config, the file is GGUF, or a name has a scale-like word.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> may_be_quantized(Manifest([Entry("x.qweight", (2,), DType.I32)]), None)
        True
    """
    if config is not None or m.format.value == "gguf":
        return True
    hint = _HINT.search
    return any(hint(name) for name in m)


def layout_record(extra: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """An entry's derived layout record (see the module docstring), or ``None``.

    Args:
        extra: the entry's ``extra``.

    Returns:
        ``extra["quant_layout"]`` when it is a mapping, else ``None``.

    Example:
        >>> layout_record({"quant_layout": {"part": "meta"}}), layout_record({})
        ({'part': 'meta'}, None)
    """
    if not extra:
        return None
    rec = extra.get(LAYOUT_KEY)
    return rec if isinstance(rec, Mapping) else None


def without_layout(extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """``extra`` without the derived records (layout, small values): what a writer or a
    ParamDict keeps.

    Args:
        extra: an entry's ``extra``.

    Returns:
        ``extra`` itself when it has no record, else a copy without it.

    Example:
        >>> without_layout({"quant_layout": {"part": "meta"}, "values": [1], "note": 1})
        {'note': 1}
    """
    if not extra or (LAYOUT_KEY not in extra and SMALL_VALUES_KEY not in extra):
        return extra
    return {k: v for k, v in extra.items() if k not in (LAYOUT_KEY, SMALL_VALUES_KEY)}


def recognise_all(m: Manifest, config: QuantConfig | None = None) -> Recognised:
    """Run every recogniser, in :data:`ORDER`, each seeing the names the earlier ones took.

    Args:
        m: the manifest.
        config: the checkpoint's quantisation config, if one was found.

    Returns:
        Every weight found, the unknown entries no recogniser claimed, and the notes.

    Raises:
        QuantConfigError: a recogniser found the config contradicting the tensors.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> recognise_all(Manifest([Entry("w", (2,), DType.F32)])).weights
        []
    """
    out = Recognised()
    claimed: set[str] = set()
    unknown: dict[str, None] = {}
    for mod in _modules():
        found: Recognised = mod.recognise(m, config, frozenset(claimed))
        for w in found.weights:
            names = (*w.data, *w.meta)
            taken = [n for n in names if n in claimed or n not in m]
            if taken or not w.data:
                raise RuntimeError(
                    f"{mod.__name__}: weight {w.name!r} claims {taken or 'no data'} "
                    "(taken by an earlier recogniser, or not in the manifest)"
                )
            claimed.update(names)
            out.weights.append(w)
        unknown.update(dict.fromkeys(found.unknown))
        out.notes.extend(found.notes)
    out.unknown = [n for n in unknown if n not in claimed and n in m]
    return out


def annotate(m: Manifest, config: QuantConfig | None = None, notes: Iterable[str] = ()) -> Manifest:
    """The manifest with each quantised weight's entries marked (see the module docstring).

    Args:
        m: the manifest, as a reader made it.
        config: the checkpoint's quantisation config (found by io next to the checkpoint),
            or ``None``: layouts are then recognised from the file's metadata and names.
        notes: notes on the evidence (a config that could not be read), added to the
            manifest's notes.

    Returns:
        ``m`` itself when nothing is quantised (its entries never built), else a new
        manifest with the records in ``extra["quant_layout"]``, roles set as described,
        and the recognisers' notes.

    Raises:
        QuantConfigError: the config contradicts the tensors (the entry and both values).

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("fc.weight", (4, 8), DType.F32)])
        >>> annotate(m) is m
        True
    """
    extra_notes = list(notes)
    if not may_be_quantized(m, config):
        return _with_notes(m, extra_notes)
    found = recognise_all(m, config)
    if not found.weights and not found.unknown:
        return _with_notes(m, [*extra_notes, *found.notes])
    records: dict[str, dict[str, Any]] = {}
    for w in found.weights:
        base: dict[str, Any] = {
            "weight": w.name,
            "method": w.method,
            "bits": w.bits,
            "group_size": w.group_size,
            "shape": [int(d) for d in w.shape],
            "evidence": w.evidence,
            "data": list(w.data),
            "meta": list(w.meta),
            "logical_dtype": w.logical_dtype,
            "detail": dict(w.detail),
        }
        for i, n in enumerate(w.data):
            records[n] = {"part": "data", "primary": i == 0, **base}
        for n in w.meta:
            records[n] = {"part": "meta", "weight": w.name, "of": w.data[0]}
    for n in found.unknown:
        records[n] = {"part": "unknown"}
    exact = m.roles is RoleSource.EXACT
    entries: list[Entry] = []
    for e in m.values():
        rec = records.get(e.name)
        if rec is None:
            entries.append(e)
            continue
        extra = {**e.extra, LAYOUT_KEY: rec}
        if rec["part"] == "meta":
            role, trainable = Role.BUFFER, False
        else:
            role, trainable = Role.PARAM, e.trainable if exact and e.role is Role.PARAM else False
        # (Entry(...) directly: dataclasses.replace costs ~4x more, per entry)
        entry = Entry(e.name, e.shape, e.dtype, role, trainable, e.tie, e.tags, extra, e.location)
        entries.append(entry if e.hash is None else replace(entry, hash=e.hash))
    out = m._with(entries)
    out.notes = [*m.notes, *extra_notes, *found.notes]
    return out


def _with_notes(m: Manifest, notes: list[str]) -> Manifest:
    """``m`` (a shallow copy sharing its entries) with ``notes`` added; ``m`` if none."""
    if not notes:
        return m
    out = copy.copy(m)
    out.notes = [*m.notes, *notes]
    return out


def logical_numel(rec: Mapping[str, Any], stored: int) -> int:
    """Elements an entry with layout record ``rec`` stands for.

    Args:
        rec: the record.
        stored: the entry's stored element count.

    Returns:
        The logical shape's product for a weight's first data entry, ``0`` for its further
        data entries, ``stored`` otherwise (metadata, unknown packing).

    Example:
        >>> logical_numel({"part": "data", "primary": True, "shape": [4096, 4096]}, 1)
        16777216
    """
    if rec.get("part") == "data":
        shape = rec.get("shape")
        if not rec.get("primary", True) or not isinstance(shape, list):
            return 0
        return math.prod(int(d) for d in shape)
    return stored
