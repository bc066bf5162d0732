"""optimum-quanto: ``weight._data`` (+ ``._scale``, ``._shift``) stand for ``weight``.

The layout, as ``quantize(model, weights=...)``, ``freeze(model)`` and
``model.state_dict()`` write it (optimum-quanto ``tensor/weights/qbytes.py``,
``qbits.py``, ``tensor/packed.py``, ``tensor/grouped.py``; ``nn/qmodule.py``):

* 8-bit (``qint8``, ``qfloat8*``): ``x.weight._data`` I8 / F8 at the weight's shape,
  ``x.weight._scale`` (``[out, 1]``);
* 4- and 2-bit (``qint4``, ``qint2``): ``x.weight._data._data`` U8, ``8/bits`` values a byte
  packed along dimension 0, of the weight grouped into ``[n_groups, group_size]`` (groups of
  128 when ``in`` allows it, else one row an output channel); ``x.weight._scale`` and
  ``x.weight._shift`` ``[n_groups, 1]``;
* every quantised module also holds scalar ``x.input_scale`` and ``x.output_scale``
  (activation scales), which are metadata, not parameters.

The logical element count is exact from the header: ``n_groups × data.shape[1:]`` (the scale
has one row a group). The logical shape is the weight's for 8-bit; for packed weights it is
``[n_groups, *data.shape[1:]]``, which is the float shape when quanto did not group, and the
grouped view ``[n_groups, group_size]`` when it did (then, with a ``bias`` next to it, the
shape is ``[out, numel / out]``). Evidence: the ``quantization_map`` (safetensors metadata,
``quanto_qmap.json``: ``{module: {"weights": "qint4", ...}}``) or transformers'
``quantization_config`` ``{"quant_method": "quanto", "weights": "int8"}``: a weight whose
stored dtype or packing contradicts its qtype is a :class:`~paramscope.QuantConfigError`.
Without them the qtype is read off the dtypes and shapes.

Core: imports only core modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._dtypes import DType
from .._manifest import Manifest
from ._base import EVIDENCE_FILE, EVIDENCE_NAMES, QuantConfig, QuantWeight, Recognised
from ._common import cdiv, config_error, free, siblings

__all__ = ["recognise"]

_FP8 = frozenset({DType.F8_E4M3, DType.F8_E5M2, DType.F8_E4M3FNUZ, DType.F8_E5M2FNUZ})

#: qtype name (quanto's and transformers' spelling) → (bits, kind)
_QTYPES: dict[str, tuple[int, str]] = {
    "qint8": (8, "int"),
    "int8": (8, "int"),
    "qint4": (4, "int"),
    "int4": (4, "int"),
    "qint2": (2, "int"),
    "int2": (2, "int"),
    "qfloat8": (8, "float"),
    "float8": (8, "float"),
    "qfloat8_e4m3fn": (8, "float"),
    "qfloat8_e4m3fnuz": (8, "float"),
    "qfloat8_e5m2": (8, "float"),
}


def _qmap(m: Manifest, config: QuantConfig | None) -> tuple[Mapping[str, Any], str | None, str]:
    """(per-module map, global qtype, evidence) from the config or the file's metadata."""
    if config is not None and config.method == "quanto":
        raw = config.raw
        glob = raw.get("weights") if isinstance(raw.get("weights"), str) else None
        return raw, glob, config.source
    text = m.metadata.get("quantization_map")
    if isinstance(text, str):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, Mapping):
            return parsed, None, EVIDENCE_FILE
    return {}, None, EVIDENCE_NAMES


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """Find optimum-quanto weights (``weight._data`` / ``weight._data._data``).

    Args:
        m: the manifest (names, dtypes, shapes, metadata only).
        config: the checkpoint's quantisation config; ``quanto`` (the quantization map, or
            transformers' ``QuantoConfig``) makes it authoritative.
        claimed: names earlier recognisers took.

    Returns:
        One weight per quantised ``weight`` (bits from the map or the dtypes; the scales,
        shifts and the module's activation scales as its metadata).

    Raises:
        QuantConfigError: a weight whose stored dtype or packing contradicts its qtype.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("fc.weight._data._data", (16, 128), DType.U8),
        ...               Entry("fc.weight._scale", (64, 1), DType.F32),
        ...               Entry("fc.weight._shift", (64, 1), DType.F32)])
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.name, w.bits, w.shape
        ('fc.weight', 2, (64, 128))
    """
    out = Recognised()
    qmap, glob, evidence = _qmap(m, config)
    for name in m:
        if name in claimed:
            continue
        if name.endswith(".weight._data._data"):
            packed = True
            wname = name[: -len("._data._data")]
        elif name.endswith(".weight._data"):
            packed = False
            wname = name[: -len("._data")]
        else:
            continue
        module = wname[: -len(".weight")]
        data = m[name]
        scale = free(m, claimed, wname + "._scale")
        if scale is None or not data.shape:
            out.unknown.append(name)
            continue
        own = qmap.get(module)
        qtype = own.get("weights") if isinstance(own, Mapping) else glob
        said = _QTYPES.get(str(qtype)) if qtype is not None else None
        if qtype is not None and said is None and qtype != "none":
            out.unknown.append(name)
            out.notes.append(f"quanto: {module}: weights qtype {qtype!r} is not known here")
            continue
        rows = scale.shape[0] if scale.shape else 1
        if packed:
            # 8/bits values a byte along dimension 0: ceil(rows·bits/8) stored rows
            fits = [b for b in (4, 2) if cdiv(rows * b, 8) == data.shape[0]]
            ok_dtype = data.dtype == DType.U8
        else:
            fits = [8]
            ok_dtype = data.dtype == DType.I8 or data.dtype in _FP8
        if said is not None:
            bits, kind = said
            stored = f"{data.dtype.value} {list(data.shape)} with {rows} scale rows"
            if not ok_dtype or bits not in fits or (kind == "float") != (data.dtype in _FP8):
                raise config_error(
                    m,
                    f"{name}: {evidence} says {module} weights are {qtype} ({bits}-bit "
                    f"{kind}), but it is stored as {stored}",
                )
        elif ok_dtype and len(fits) == 1:
            bits = fits[0]
            kind = "float" if data.dtype in _FP8 else "int"
        else:
            out.unknown.append(name)
            continue
        detail: dict[str, Any] = {"qtype": str(qtype) if qtype else f"q{kind}{bits}"}
        group: int | None = -1
        if packed:
            shape: tuple[int, ...] = (rows, *data.shape[1:])
            bias = free(m, claimed, module + ".bias")
            numel = rows * (shape[1] if len(shape) == 2 else 1)
            if len(shape) == 2 and bias is not None and bias.numel not in (0, rows):
                if numel % bias.numel == 0:
                    shape = (bias.numel, numel // bias.numel)
                group = data.shape[1]
                detail["grouped"] = True
            elif len(shape) == 2 and bias is None:
                group = None  # per channel, or groups of data.shape[1]: not told by the header
                detail["shape"] = "[rows, cols], or the grouped view [n_groups, group_size]"
        else:
            shape = tuple(data.shape)
        meta = siblings(m, claimed, wname, ("._scale", "._shift")) + siblings(
            m, claimed, module + ".", ("input_scale", "output_scale")
        )
        out.weights.append(
            QuantWeight(
                name=wname,
                method="quanto",
                bits=bits,
                group_size=group,
                shape=tuple(int(d) for d in shape),
                data=(name,),
                meta=meta,
                evidence=evidence,
                logical_dtype=scale.dtype.value,
                detail=detail,
            )
        )
    return out
