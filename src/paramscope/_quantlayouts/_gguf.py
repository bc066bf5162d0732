"""GGUF (llama.cpp) tensors stored in ggml block types: the file says each tensor's type.

The GGUF reader (:mod:`paramscope.io._gguf`) keeps a tensor whose ggml type has no plain
dtype (``Q4_K``, ``Q6_K``, ``IQ2_XS`` …) as one stored entry of ``U8`` bytes, shape
``[bytes]`` (so :attr:`~paramscope.Entry.nbytes` is the true stored size), with the record
``extra["gguf"] = {"type": "Q4_K", "shape": [4096, 4096], "bytes": 9437184}``: the logical
shape in numpy order and the type. This recogniser turns each such entry into one
:class:`~paramscope._quantlayouts.QuantWeight`: evidence the file itself
(:data:`~paramscope._quantlayouts.EVIDENCE_FILE`), bits the type's stored bits per value,
scales included (``Q4_K``: 4.5, ``Q6_K``: 6.5625, ``Q8_0``: 8.5). GGUF keeps a block's scales
inside the block, so a weight has no metadata entries. Plain ``F32``/``F16``/``BF16`` (and
integer) tensors are plain entries, not claimed here.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._enums import Format
from .._ggml import ggml_type
from .._manifest import Manifest
from ._base import EVIDENCE_FILE, QuantConfig, QuantWeight, Recognised

__all__ = ["recognise"]


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """The GGUF block-typed tensors of a GGUF manifest, one weight each.

    Args:
        m: the manifest (anything but a GGUF file's is left alone).
        config: unused (GGUF files carry their own types).
        claimed: names an earlier recogniser took.

    Returns:
        One weight per quantised tensor (``method="gguf"``, ``detail={"type": ...}``).

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> from paramscope._enums import Format
        >>> rec = {"gguf": {"type": "Q4_K", "shape": [256, 256], "bytes": 36864}}
        >>> m = Manifest([Entry("blk.0.ffn_up.weight", (36864,), DType.U8, extra=rec)],
        ...              format=Format.GGUF)
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.shape, w.bits, w.detail
        ((256, 256), 4.5, {'type': 'Q4_K'})
    """
    found = Recognised()
    if m.format is not Format.GGUF:
        return found
    for e in m.values():
        extra = e.extra
        rec = extra.get("gguf") if extra else None
        if not isinstance(rec, Mapping) or e.name in claimed:
            continue
        t = ggml_type(str(rec["type"]))
        found.weights.append(
            QuantWeight(
                name=e.name,
                method="gguf",
                bits=t.bits,
                group_size=None,  # a block's scales live in the block (block_size in detail)
                shape=tuple(int(d) for d in rec["shape"]),
                data=(e.name,),
                evidence=EVIDENCE_FILE,
                detail={"type": t.name},
            )
        )
    return found
