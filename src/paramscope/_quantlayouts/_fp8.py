"""FP8 weights with their scales: per tensor, per channel (FBGEMM) and 128×128 blocks
(DeepSeek-V3 / transformers ``finegrained_fp8``).

An FP8 weight (F8_E4M3, also E5M2 and the FNUZ variants) is stored at its logical shape, one
byte a value; what makes it a quantised weight, rather than a float weight that happens to be
FP8, is its scale. The layouts (transformers ``integrations/finegrained_fp8.py``:
``FP8Linear``, ``Fp8Quantize._quantize_one``; ``integrations/fbgemm_fp8.py``:
``FbgemmFp8Linear``):

* ``x.weight`` F8 ``[..., out, in]`` + ``x.weight_scale_inv`` F32 or E8M0: blocks
  ``[..., ceil(out/bm), ceil(in/bn)]`` for ``weight_block_size = [bm, bn]`` (DeepSeek-V3:
  ``[128, 128]``), or one value a tensor; optional ``x.activation_scale`` (static activations);
* fused experts ``e.gate_up_proj`` F8 ``[E, out, in]`` + ``e.gate_up_proj_scale_inv``
  (+ ``e.gate_up_proj_activation_scale``);
* FBGEMM: ``x.weight`` F8 + ``x.weight_scale`` F32 ``[out, 1]``;
* per-tensor (compressed-tensors style, when no compressed-tensors config claims it):
  ``x.weight`` + ``x.weight_scale`` ``[]``/``[1]`` and ``x.input_scale``.

Evidence: ``quantization_config`` with ``quant_method`` ``fp8`` (``weight_block_size``) or
``fbgemm_fp8`` is authoritative: a block-scale shape that is not
``ceil(out/bm) × ceil(in/bn)`` is a :class:`~paramscope.QuantConfigError`. Without a config,
an FP8 entry with a scale sibling is recognised from names (its block size read off the
shapes); an FP8 entry without any scale is a plain float weight and is left alone.

Core: imports only core modules.
"""

from __future__ import annotations

from typing import Any

from .._dtypes import DType
from .._manifest import Entry, Manifest
from ._base import EVIDENCE_NAMES, QuantConfig, QuantWeight, Recognised
from ._common import cdiv, config_error, free, siblings

__all__ = ["recognise"]

FP8_DTYPES = frozenset({DType.F8_E4M3, DType.F8_E5M2, DType.F8_E4M3FNUZ, DType.F8_E5M2FNUZ})
_METHODS = ("fp8", "fbgemm_fp8")


def _scale_names(name: str) -> tuple[str, tuple[str, ...]]:
    """(the block/tensor scale's name, the other metadata endings) of an FP8 entry."""
    if name.endswith(".weight"):
        p = name[: -len("weight")]
        return p + "weight_scale_inv", (
            p + "weight_scale",
            p + "input_scale",
            p + "activation_scale",
            p + "input_scale_ub",
        )
    return name + "_scale_inv", (name + "_scale", name + "_activation_scale", name + "_input_scale")


def _block_size(m: Manifest, config: QuantConfig) -> tuple[int, int] | None:
    raw = config.raw.get("weight_block_size")
    if raw is None:
        return None
    if (
        not isinstance(raw, (list, tuple))
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw)
    ):
        raise config_error(
            m, f"{config.source}: weight_block_size: expected two positive ints, found {raw!r}"
        )
    return int(raw[0]), int(raw[1])


def _fits(scale: Entry, weight: Entry, block: tuple[int, int]) -> bool:
    *lead, out, inn = weight.shape
    want = (*lead, cdiv(out, block[0]), cdiv(inn, block[1]))
    return tuple(scale.shape) == want


def _per_tensor(scale: Entry, weight: Entry) -> bool:
    # one value for the tensor (or one per expert of a stacked tensor)
    return scale.numel == 1 or (len(weight.shape) == 3 and scale.numel == weight.shape[0])


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """Find FP8 weights with block, channel or tensor scales.

    Args:
        m: the manifest (names, dtypes, shapes only).
        config: the checkpoint's quantisation config; ``fp8`` / ``fbgemm_fp8`` make it
            authoritative.
        claimed: names earlier recognisers took (compressed-tensors' FP8 comes first).

    Returns:
        One weight per FP8 entry that has a scale (8 bits; ``group_size`` ``-1`` per
        channel, ``None`` per tensor or per block, the block in ``detail``).

    Raises:
        QuantConfigError: with an ``fp8`` config, block scales whose shape is not
            ``ceil(out/bm) × ceil(in/bn)`` (naming the entry and both shapes).

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("l.weight", (256, 300), DType.F8_E4M3),
        ...               Entry("l.weight_scale_inv", (2, 3), DType.F32)])
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.shape, w.bits, w.detail["block"]
        ((256, 300), 8, [128, 128])
    """
    out = Recognised()
    authoritative = config is not None and config.method in _METHODS
    block: tuple[int, int] | None = None
    if authoritative and config is not None:
        block = _block_size(m, config)
    evidence = config.source if authoritative and config is not None else EVIDENCE_NAMES
    for name in m:
        if name in claimed:
            continue
        e = m[name]
        if e.dtype not in FP8_DTYPES:
            continue
        inv_name, others = _scale_names(name)
        inv = free(m, claimed, inv_name)
        meta = siblings(m, claimed, "", (inv_name, *others))
        if not meta:
            if authoritative and len(e.shape) >= 2:
                # the config says these are FP8-quantised; a missing scale is worth a word
                out.notes.append(
                    f"fp8: {name} has no scale entry ({inv_name} or {others[0]}); "
                    "counted at its own shape"
                )
            continue
        detail: dict[str, Any] = {"format": e.dtype.value}
        group: int | None = None
        # the weight's own scale; an activation scale alone still marks it quantised
        scale = inv if inv is not None else free(m, claimed, others[0])
        if scale is not None and len(e.shape) >= 2:
            if block is not None and inv is not None:
                if not _fits(inv, e, block):
                    *lead, o, i = e.shape
                    want = [*lead, cdiv(o, block[0]), cdiv(i, block[1])]
                    raise config_error(
                        m,
                        f"{inv.name}: {evidence} says weight_block_size {list(block)}, so "
                        f"{name} {list(e.shape)} needs block scales {want}; found "
                        f"{list(inv.shape)}",
                    )
                detail["block"] = list(block)
            elif _per_tensor(scale, e):
                detail["scale"] = "per tensor"
            elif tuple(scale.shape) in ((*e.shape[:-1], 1), tuple(e.shape[:-1])):
                group = -1
                detail["scale"] = "per channel"
            elif len(scale.shape) == len(e.shape):
                *lead, o, i = e.shape
                so, si = scale.shape[-2], scale.shape[-1]
                # DeepSeek-V3's 128×128 when it fits, else the smallest block that does
                fitting = [
                    b for b in ((128, 128), (cdiv(o, so), cdiv(i, si))) if _fits(scale, e, b)
                ]
                if fitting:
                    detail["block"] = list(fitting[0])
                else:
                    out.unknown.append(name)
                    continue
            else:
                out.unknown.append(name)
                continue
        out.weights.append(
            QuantWeight(
                name=name,
                method="fp8",
                bits=8,
                group_size=group,
                shape=tuple(int(d) for d in e.shape),
                data=(name,),
                meta=meta,
                evidence=evidence,
                detail=detail,
            )
        )
    return out
