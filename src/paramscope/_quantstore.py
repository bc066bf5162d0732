"""How quantised entries are stored: the one owner of the ``"quant"`` record in ``extra``.

Storage convention (one quantised entry ``NAME`` becomes up to three entries):

- ``NAME``: the integers. 8-bit symmetric: ``int8`` in [-127, 127]; 8-bit asymmetric:
  ``uint8`` in [0, 255]. 4-bit symmetric values lie in [-7, 7], asymmetric in [0, 15]; they
  are packed two per byte into ``uint8`` along the last dimension (element ``2i`` in the low
  nibble, ``2i+1`` in the high nibble; a signed value ``v`` is stored as ``v + 8``; an odd
  last dimension is padded with one zero nibble), so the stored shape is
  ``(*shape[:-1], ceil(shape[-1] / 2))``. 8-bit data keeps the original shape.
- ``NAME__qscale``: ``float32`` scales. ``tensor``: shape ``()``; ``channel``: one per output
  channel (dim 0), shape ``(shape[0], 1, ..., 1)``; group size ``g``: groups of ``g`` along the
  last dimension, shape ``(*shape[:-1], shape[-1] // g)``.
- ``NAME__qzero``: asymmetric only, the zero points, same shape as the scales, ``uint8``.
- ``NAME`` keeps its role, gets ``trainable=False`` and
  ``extra["quant"] = {"bits", "scheme", "granularity", "shape", "dtype", "scale", "zero",
  "packed"}``; the scale and zero entries are buffers, not trainable, tagged ``quant-aux``.

Dequantisation is ``q * scale`` (symmetric) or ``(q - zero) * scale`` (asymmetric), cast back
to the original dtype (:mod:`paramscope.compress._quantize`).

This module is the one place that knows the record's key, its fields and the auxiliary
names: every reader (manifest, io, counting, reporting, the CLI) and both writers (in-memory
and streaming quantisation) go through these small functions. It imports neither torch nor
numpy, and sits on the core floor so that io and the manifest can use it.

Example:
    >>> record = make_record("fc.weight", bits=8, scheme="symmetric", granularity="channel",
    ...                      shape=(4, 8), dtype="F32")
    >>> extra = with_record({"note": 1}, record)
    >>> is_quantized_entry(extra), aux_names(quant_record(extra))
    (True, ['fc.weight__qscale'])
    >>> logical_shape(quant_record(extra)), without_record(extra)
    ((4, 8), {'note': 1})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AUX_TAG",
    "QUANT_KEY",
    "SCALE_SUFFIX",
    "ZERO_SUFFIX",
    "aux_meta",
    "aux_names",
    "is_quantized_entry",
    "logical_shape",
    "make_record",
    "quant_record",
    "scale_name",
    "with_record",
    "without_record",
    "zero_name",
]

QUANT_KEY = "quant"
"""The key of the quantisation record in an entry's ``extra`` metadata."""

SCALE_SUFFIX = "__qscale"
"""Appended to a data entry's name to name its scale entry."""

ZERO_SUFFIX = "__qzero"
"""Appended to a data entry's name to name its zero-point entry (asymmetric only)."""

AUX_TAG = "quant-aux"
"""The tag of scale and zero-point entries."""


def scale_name(name: str) -> str:
    """The name of a quantised entry's scale entry.

    Args:
        name: the data entry's name.

    Returns:
        ``name + "__qscale"``.

    Example:
        >>> scale_name("fc.weight")
        'fc.weight__qscale'
    """
    return name + SCALE_SUFFIX


def zero_name(name: str) -> str:
    """The name of a quantised entry's zero-point entry (asymmetric schemes).

    Args:
        name: the data entry's name.

    Returns:
        ``name + "__qzero"``.

    Example:
        >>> zero_name("fc.weight")
        'fc.weight__qzero'
    """
    return name + ZERO_SUFFIX


def quant_record(extra: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The quantisation record of an entry, read from its ``extra`` metadata.

    Args:
        extra: the entry's ``extra`` (``Entry.extra``, ``EntryMeta.extra``, or the ``"extra"``
            of an entry's JSON form), or ``None``.

    Returns:
        ``extra["quant"]`` when it is a dict, else ``None`` (not quantised).

    Example:
        >>> quant_record({"quant": {"bits": 4}}), quant_record({}), quant_record(None)
        ({'bits': 4}, None, None)
    """
    if not extra or not isinstance(extra, Mapping):
        return None
    record = extra.get(QUANT_KEY)
    return record if isinstance(record, dict) else None


def is_quantized_entry(meta_extra: Mapping[str, Any] | None) -> bool:
    """Whether an entry's ``extra`` metadata marks it as quantised data.

    Args:
        meta_extra: the entry's ``EntryMeta.extra`` (or ``None``).

    Returns:
        True when ``extra["quant"]`` is a dict.

    Example:
        >>> is_quantized_entry({"quant": {"bits": 8}}), is_quantized_entry({})
        (True, False)
    """
    return quant_record(meta_extra) is not None


def make_record(
    name: str,
    *,
    bits: int,
    scheme: str,
    granularity: str | int,
    shape: Sequence[int],
    dtype: str,
) -> dict[str, Any]:
    """The ``extra["quant"]`` record of a data entry ``name``.

    Args:
        name: the data entry's name (the scale and zero entries are named after it).
        bits: 8 or 4 (4-bit data is packed two per byte).
        scheme: ``"symmetric"`` or ``"asymmetric"`` (only asymmetric has zero points).
        granularity: the effective granularity: ``"tensor"``, ``"channel"`` or a group size.
        shape: the original (logical) shape.
        dtype: the original dtype, as a :class:`~paramscope.DType` value (``"F32"``).

    Returns:
        ``{"bits", "scheme", "granularity", "shape", "dtype", "scale", "zero", "packed"}``.

    Example:
        >>> make_record("w", bits=4, scheme="asymmetric", granularity=32, shape=(2, 64),
        ...             dtype="BF16")["zero"]
        'w__qzero'
    """
    return {
        "bits": bits,
        "scheme": scheme,
        "granularity": granularity,
        "shape": list(shape),
        "dtype": dtype,
        "scale": scale_name(name),
        "zero": None if scheme == "symmetric" else zero_name(name),
        "packed": bits == 4,
    }


def with_record(extra: Mapping[str, Any] | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``extra`` that carries ``record`` as its quantisation record.

    Args:
        extra: the entry's ``extra`` before quantisation (kept), or ``None``.
        record: from :func:`make_record`.

    Returns:
        The new ``extra``.

    Example:
        >>> with_record({"note": 1}, {"bits": 8})
        {'note': 1, 'quant': {'bits': 8}}
    """
    return {**dict(extra or {}), QUANT_KEY: record}


def without_record(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``extra`` without its quantisation record (after dequantising).

    Args:
        extra: the entry's ``extra``, or ``None``.

    Returns:
        The other keys.

    Example:
        >>> without_record({"note": 1, "quant": {"bits": 8}})
        {'note': 1}
    """
    return {k: v for k, v in (extra or {}).items() if k != QUANT_KEY}


def aux_names(record: Mapping[str, Any]) -> list[str]:
    """The scale and zero-point entry names a record refers to, in that order.

    Args:
        record: a quantisation record (:func:`quant_record`).

    Returns:
        The names that are strings (no zero-point name for a symmetric scheme).

    Example:
        >>> aux_names({"scale": "w__qscale", "zero": None})
        ['w__qscale']
    """
    return [a for a in (record.get("scale"), record.get("zero")) if isinstance(a, str)]


def logical_shape(record: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The shape a quantised entry stands for (before packing), from its record.

    Args:
        record: a quantisation record (:func:`quant_record`).

    Returns:
        The original shape, or ``None`` when the record does not hold one as a list.

    Example:
        >>> logical_shape({"shape": [4, 8]}), logical_shape({})
        ((4, 8), None)
    """
    shape = record.get("shape")
    if not isinstance(shape, list):
        return None
    return tuple(int(d) for d in shape)


def aux_meta() -> dict[str, Any]:
    """The metadata of a scale or zero-point entry, as ``ParamDict.add`` keyword arguments.

    Returns:
        ``{"role": "buffer", "trainable": False, "tags": ("quant-aux",), "extra": {}}`` (a new
        dict each call).

    Example:
        >>> aux_meta()["tags"]
        ('quant-aux',)
    """
    return {"role": "buffer", "trainable": False, "tags": (AUX_TAG,), "extra": {}}
