"""MXFP4 as gpt-oss ships its experts: ``X_blocks`` + ``X_scales`` stand for the float ``X``.

The layout (transformers ``integrations/mxfp4.py``, ``_convert_moe_packed_tensors``, copied
there from OpenAI's gpt-oss): for a float expert tensor ``X`` (``...experts.gate_up_proj``,
``...experts.down_proj``), the checkpoint holds

* ``X_blocks``: U8 ``[..., rows, G, 16]``: two FP4 (E2M1) values a byte, low nibble first,
  32 values a block;
* ``X_scales``: U8 (E8M0, an exponent biased by 127) ``[..., rows, G]``, one per block:
  its shape is the blocks' shape without the last dimension (transformers asserts it).

The logical shape is ``[..., rows, G * 32]`` (transformers dequantises to that and then
transposes the last two dimensions into its ``[experts, in, out]`` parameter; the count is
the same). 4 bits, groups of 32. Evidence: ``quantization_config`` ``{"quant_method":
"mxfp4"}``; without it the ``_blocks``/``_scales`` pair is recognised from names.

Core: imports only core modules.
"""

from __future__ import annotations

from .._dtypes import DType
from .._manifest import Manifest
from ._base import EVIDENCE_NAMES, QuantConfig, QuantWeight, Recognised
from ._common import config_error, free

__all__ = ["recognise"]

_BLOCK_BYTES = 16  # 32 FP4 values
_GROUP = 32
_SCALE_DTYPES = (DType.U8, DType.F8_E8M0)


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """Find gpt-oss MXFP4 ``*_blocks`` / ``*_scales`` pairs.

    Args:
        m: the manifest (names, dtypes, shapes only).
        config: the checkpoint's quantisation config; ``mxfp4`` makes it authoritative.
        claimed: names earlier recognisers took.

    Returns:
        One weight per pair (logical ``[..., rows, G·32]``); a ``*_blocks`` U8 entry whose
        scales are missing or do not fit is ``unknown``.

    Raises:
        QuantConfigError: with an ``mxfp4`` config, a pair whose shapes contradict it.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("e.down_proj_blocks", (4, 8, 2, 16), DType.U8),
        ...               Entry("e.down_proj_scales", (4, 8, 2), DType.U8)])
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.name, w.shape, w.bits
        ('e.down_proj', (4, 8, 64), 4)
    """
    out = Recognised()
    authoritative = config is not None and config.method == "mxfp4"
    evidence = config.source if authoritative and config is not None else EVIDENCE_NAMES
    for name in m:
        if not name.endswith("_blocks") or name in claimed:
            continue
        blocks = m[name]
        if blocks.dtype != DType.U8 or len(blocks.shape) < 3:
            continue
        base = name[: -len("_blocks")]
        scales = free(m, claimed, base + "_scales")
        if scales is None:
            if authoritative:
                out.unknown.append(name)
            continue
        problem = None
        if scales.dtype not in _SCALE_DTYPES:
            problem = f"{scales.name} is {scales.dtype.value}, expected U8 (E8M0 exponents)"
        elif blocks.shape[-1] != _BLOCK_BYTES:
            problem = (
                f"{name} has {blocks.shape[-1]} bytes a block (shape {list(blocks.shape)}), "
                f"MXFP4 has {_BLOCK_BYTES} (32 FP4 values)"
            )
        elif tuple(scales.shape) != tuple(blocks.shape[:-1]):
            problem = (
                f"{scales.name} has shape {list(scales.shape)}, MXFP4 expects the blocks' "
                f"shape without its last dimension {list(blocks.shape[:-1])}"
            )
        if problem is not None:
            if authoritative:
                raise config_error(m, f"{config.source} says mxfp4, but {problem}")  # type: ignore[union-attr]
            out.unknown.append(name)
            continue
        shape = (*blocks.shape[:-2], blocks.shape[-2] * _GROUP)
        out.weights.append(
            QuantWeight(
                name=base,
                method="mxfp4",
                bits=4,
                group_size=_GROUP,
                shape=tuple(int(d) for d in shape),
                data=(name,),
                meta=(scales.name,),
                evidence=evidence,
                detail={"values": "E2M1", "scales": "E8M0"},
            )
        )
    return out
