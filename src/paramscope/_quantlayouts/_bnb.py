"""bitsandbytes layouts, as ``transformers`` + ``bitsandbytes`` save them (``save_pretrained``).

4-bit (``Params4bit``; bitsandbytes ``functional.QuantState.as_dict(packed=True)``):

* ``X.weight``: the packed values, two 4-bit codes a byte, flattened: U8 ``[ceil(n/2), 1]``
  (another ``bnb_4bit_quant_storage`` dtype holds the same bytes);
* ``X.weight.absmax``: one scale per block of ``blocksize`` values (F32; U8 when double
  quantised), ``X.weight.quant_map``: the 16-value code (F32);
* double quant: ``X.weight.nested_absmax`` and ``X.weight.nested_quant_map``;
* ``X.weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``): a U8 tensor holding the JSON
  of the non-tensor state: ``quant_type``, ``blocksize``, ``dtype``, ``shape`` (the logical
  shape) and the nested fields.

The logical shape is in that JSON blob: a value, not a header. io reads these small blobs
(≤ 4 KiB each, :func:`paramscope.io._quantconfig.with_small_values`) into
``extra["values"]``; without them (a manifest built in memory) the count is ``2 × stored
bytes`` (exact for an even element count) and the shape one-dimensional, and a note says so.

8-bit (``Int8Params``, LLM.int8()): ``X.weight`` I8 ``[out, in]`` (the logical shape) with
``X.SCB`` F32 ``[out]`` (the per-row absmax) and ``X.weight_format`` (U8 scalar, newer
versions).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .._errors import QuantConfigError
from .._manifest import Manifest
from ._base import EVIDENCE_FILE, EVIDENCE_NAMES, QuantConfig, QuantWeight, Recognised

__all__ = ["recognise"]

_BLOB = ".quant_state.bitsandbytes__"
_META_4BIT = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")
_TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def _blob(values: Any) -> dict[str, Any] | None:
    """The quant-state JSON from a blob entry's values (a list of byte values), if valid."""
    if not isinstance(values, list):
        return None
    try:
        obj = json.loads(bytes(values).decode("utf-8"))
    except (ValueError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def _bnb_config(config: QuantConfig | None) -> QuantConfig | None:
    return config if config is not None and config.method == "bitsandbytes" else None


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """bitsandbytes 4-bit (nf4/fp4, double quant) and 8-bit weights.

    Args:
        m: the manifest (``extra["values"]`` of the quant-state blobs when io read them).
        config: the checkpoint's config; a ``bitsandbytes`` one is checked against the tensors.
        claimed: names already taken.

    Returns:
        One weight per packed ``weight`` (methods ``bnb-nf4``, ``bnb-fp4``, ``bnb-int8``).

    Raises:
        QuantConfigError: the config says 4-bit and the file holds 8-bit weights (or the
            other way round), or another quant type; a blob's shape does not fit the
            packed bytes.

    Example:
        >>> import json
        >>> from paramscope import DType, Entry, Manifest
        >>> state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16",
        ...                     "shape": [8, 16]}).encode()
        >>> m = Manifest([Entry("fc.weight", (64, 1), DType.U8),
        ...               Entry("fc.weight.absmax", (2,), DType.F32),
        ...               Entry("fc.weight.quant_map", (16,), DType.F32),
        ...               Entry("fc.weight.quant_state.bitsandbytes__nf4", (len(state),),
        ...                     DType.U8, extra={"values": list(state)})])
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.method, w.shape, w.group_size, len(w.meta)
        ('bnb-nf4', (8, 16), 64, 3)
    """
    out = Recognised()
    cfg = _bnb_config(config)
    where = m.source or "(in memory)"
    no_values = 0
    for name in m:
        i = name.find(_BLOB)
        if i < 0 or name in claimed:
            continue
        base = name[:i]
        qtype = name[i + len(_BLOB) :]
        data = m.get(base)
        if data is None or base in claimed or data.tie is not None:
            out.unknown.append(name)
            continue
        meta = tuple(base + s for s in _META_4BIT if base + s in m and base + s not in claimed)
        meta += (name,)
        stored_bytes = data.nbytes
        state = _blob(m[name].extra.get("values") if m[name].extra else None)
        if state is not None:
            shape_raw = state.get("shape")
            if not isinstance(shape_raw, list) or not all(
                isinstance(d, int) and d >= 0 for d in shape_raw
            ):
                raise QuantConfigError(
                    where, f"{name}: the quant state's shape is {shape_raw!r}, not a list of sizes"
                )
            shape = tuple(shape_raw)
            n = math.prod(shape)
            if (n + 1) // 2 != stored_bytes:
                raise QuantConfigError(
                    where,
                    f"{base}: the quant state says shape {list(shape)} ({n:,} 4-bit values, "
                    f"{(n + 1) // 2:,} bytes), the tensor stores {stored_bytes:,} bytes",
                )
            blocksize = state.get("blocksize")
            group = blocksize if isinstance(blocksize, int) else None
            dtype = _TORCH_DTYPES.get(str(state.get("dtype")))
            kind = str(state.get("quant_type") or qtype)
            evidence = EVIDENCE_FILE
        else:
            no_values += 1
            shape, group, dtype, kind = (2 * stored_bytes,), None, None, qtype
            evidence = EVIDENCE_NAMES
        if cfg is not None:
            evidence = cfg.source
            raw: Mapping[str, Any] = cfg.raw
            if cfg.bits is not None and cfg.bits != 4:
                raise QuantConfigError(
                    where, f"{base}: {cfg.source} says bits={cfg.bits:g}, the tensors are 4-bit"
                )
            said = raw.get("bnb_4bit_quant_type")
            if isinstance(said, str) and said.lower() != kind:
                raise QuantConfigError(
                    where,
                    f"{base}: {cfg.source} says bnb_4bit_quant_type={said!r}, the quant state "
                    f"is {kind!r}",
                )
        out.weights.append(
            QuantWeight(
                name=base,
                method=f"bnb-{kind}",
                bits=4,
                group_size=group,
                shape=shape,
                data=(base,),
                meta=meta,
                evidence=evidence,
                logical_dtype=dtype,
                detail={"double_quant": base + ".nested_absmax" in meta},
            )
        )
    taken = {n for w in out.weights for n in (*w.data, *w.meta)}
    for name in m:
        if not name.endswith(".SCB") or name in claimed or name in taken:
            continue
        prefix = name[: -len("SCB")]
        wname = prefix + "weight"
        w = m.get(wname)
        if w is None or wname in claimed or wname in taken or w.tie is not None:
            out.unknown.append(name)
            continue
        scb = m[name]
        if w.dtype.value != "I8" or len(w.shape) != 2 or scb.shape != (w.shape[0],):
            out.unknown.append(wname)
            continue
        if cfg is not None and cfg.bits is not None and cfg.bits != 8:
            raise QuantConfigError(
                where, f"{wname}: {cfg.source} says bits={cfg.bits:g}, the tensors are 8-bit"
            )
        fmt = prefix + "weight_format"
        meta8 = (name, fmt) if fmt in m and fmt not in claimed else (name,)
        out.weights.append(
            QuantWeight(
                name=wname,
                method="bnb-int8",
                bits=8,
                group_size=-1,
                shape=w.shape,
                data=(wname,),
                meta=meta8,
                evidence=cfg.source if cfg is not None else EVIDENCE_NAMES,
            )
        )
    if no_values:
        out.notes.append(
            f"bitsandbytes: {no_values} 4-bit weights without their quant state's values "
            "(not read from a file): counted as 2 values per stored byte, shapes unknown"
        )
    return out
