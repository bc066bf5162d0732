"""paramscope's own int8/int4 format (:mod:`paramscope._quantstore`) as quantised weights.

A data entry ``NAME`` carries ``extra["quant"] = {"bits", "scheme", "granularity", "shape",
"dtype", "scale", "zero", "packed"}`` (written by :func:`paramscope.quantize`); its scale
(``NAME__qscale``) and zero point (``NAME__qzero``, asymmetric only) are its metadata. The
file says it itself, so the evidence is the file metadata.
"""

from __future__ import annotations

from .._manifest import Manifest
from .._quantstore import aux_names, logical_shape, quant_record
from ._base import EVIDENCE_FILE, QuantConfig, QuantWeight, Recognised

__all__ = ["recognise"]


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """paramscope's own quantised entries (``extra["quant"]``) as :class:`QuantWeight` s.

    Args:
        m: the manifest.
        config: unused (the record in the file is the evidence).
        claimed: names already taken.

    Returns:
        One weight per data entry: method ``"paramscope"``, bits 8 or 4, group size
        (``-1`` per channel, ``None`` per tensor), the logical shape and dtype.

    A record the loader would refuse (no shape list, a scale naming a data entry or a
    missing one) is not trusted further here: that entry is left out or counted as stored,
    and dequantising it raises.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> rec = {"bits": 8, "scheme": "symmetric", "granularity": "channel", "shape": [4, 8],
        ...        "dtype": "F32", "scale": "w__qscale", "zero": None, "packed": False}
        >>> m = Manifest([Entry("w", (4, 8), DType.I8, extra={"quant": rec}),
        ...               Entry("w__qscale", (4, 1), DType.F32)])
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.method, w.bits, w.group_size, w.shape, w.meta
        ('paramscope', 8, -1, (4, 8), ('w__qscale',))
    """
    out = Recognised()
    records = {}
    for e in m.values():
        if e.extra and e.tie is None and e.name not in claimed:
            record = quant_record(e.extra)
            if record is not None:
                records[e.name] = (e, record)
    taken: set[str] = set(records)  # a scale naming a data entry (or two sharing one) is
    for e, record in records.values():  # left to the loader to refuse, not claimed twice
        shape = logical_shape(record)
        if shape is None:  # counted as stored; dequantising refuses it
            continue
        meta = tuple(a for a in aux_names(record) if a in m and a not in claimed and a not in taken)
        taken.update(meta)
        gran = record.get("granularity")
        group = -1 if gran == "channel" else gran if isinstance(gran, int) else None
        dtype = record.get("dtype")
        bits = record.get("bits")
        out.weights.append(
            QuantWeight(
                name=e.name,
                method="paramscope",
                bits=bits if isinstance(bits, (int, float)) else None,
                group_size=group,
                shape=shape,
                data=(e.name,),
                meta=meta,
                evidence=EVIDENCE_FILE,
                logical_dtype=dtype if isinstance(dtype, str) else None,
                detail={"scheme": record.get("scheme")},
            )
        )
    return out
