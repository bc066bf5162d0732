"""MLX quantisation (``mx.quantize``, mlx-lm's ``convert -q``): ``weight`` U32 + ``scales``
(+ ``biases``).

The layout (MLX docs, ``mlx.core.quantize``; what ``nn.QuantizedLinear``,
``nn.QuantizedEmbedding`` and ``QuantizedSwitchLinear`` hold and ``mx.save_safetensors``
writes), for a float weight ``[..., out, in]`` quantised with ``bits`` and ``group_size``:

* ``x.weight``: U32 ``[..., out, in · bits / 32]`` (values packed into 32-bit words);
* ``x.scales``: ``[..., out, in / group_size]`` (the float dtype for ``affine``; U8 for the
  ``mxfp4`` / ``mxfp8`` (E8M0) and ``nvfp4`` (E4M3) modes);
* ``x.biases``: same shape as ``scales``, ``affine`` mode only.

Modes: ``affine`` (bits 1–8, groups of 32/64/128), ``mxfp4`` (4 bits, 32), ``mxfp8`` (8, 32),
``nvfp4`` (4, 16). Evidence: ``config.json`` ``quantization`` (mlx-lm writes it, and the same
dict as ``quantization_config`` without a ``quant_method``): ``{"group_size", "bits",
"mode"}``, plus per-layer entries under the module's path (a dict of its own, or ``false``
for a layer left in float). A weight whose shapes contradict it is a
:class:`~paramscope.QuantConfigError`. Without the config the bits and group size are solved
from the shapes; an affine weight whose shapes fit more than one (bits, group size) is
``unknown`` (its count is then not exact, and the note says so).

Core: imports only core modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._dtypes import DType
from .._manifest import Entry, Manifest
from ._base import EVIDENCE_NAMES, QuantConfig, QuantWeight, Recognised
from ._common import config_error, free

__all__ = ["recognise"]

#: mode → (default bits, default group size, allowed bits, allowed group sizes)
_MODES: dict[str, tuple[int, int, tuple[int, ...], tuple[int, ...]]] = {
    "affine": (4, 64, (1, 2, 3, 4, 5, 6, 8), (32, 64, 128)),
    "mxfp4": (4, 32, (4,), (32,)),
    "mxfp8": (8, 32, (8,), (32,)),
    "nvfp4": (4, 16, (4,), (16,)),
}


def _layer_params(raw: Mapping[str, Any], module: str) -> tuple[str, int, int] | None:
    """(mode, bits, group_size) the config gives ``module``; ``None``: left in float."""
    base_mode = str(raw.get("mode", "affine"))
    own = raw.get(module)
    if own is False:
        return None
    src: Mapping[str, Any] = own if isinstance(own, Mapping) else raw
    mode = str(src.get("mode", base_mode))
    d_bits, d_group = _MODES.get(mode, _MODES["affine"])[:2]
    bits = src.get("bits", raw.get("bits", d_bits))
    group = src.get("group_size", raw.get("group_size", d_group))
    return mode, int(bits), int(group)


def _solve(weight: Entry, scales: Entry, affine: bool) -> list[tuple[str, int, int]]:
    """Every (mode, bits, group) whose layout the shapes fit."""
    cols, groups = weight.shape[-1], scales.shape[-1]
    found = []
    for mode, (_, _, bits_ok, groups_ok) in _MODES.items():
        if (mode == "affine") != affine:
            continue
        for g in groups_ok:
            for b in bits_ok:
                if cols * 32 == groups * g * b:
                    found.append((mode, b, g))
    return found


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """Find MLX-quantised weights (U32 ``weight`` + ``scales`` (+ ``biases``)).

    Args:
        m: the manifest (names, dtypes, shapes only).
        config: the checkpoint's quantisation config; ``mlx`` (config.json ``quantization``)
            makes it authoritative.
        claimed: names earlier recognisers took.

    Returns:
        One weight per U32 ``weight`` with ``scales`` (logical ``[..., out, in]``); those
        whose bits and group size cannot be told are ``unknown``.

    Raises:
        QuantConfigError: with an ``mlx`` config, a weight whose shapes contradict it.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> from paramscope._quantlayouts import QuantConfig
        >>> m = Manifest([Entry("l.weight", (8, 8), DType.U32),
        ...               Entry("l.scales", (8, 1), DType.F16),
        ...               Entry("l.biases", (8, 1), DType.F16)])
        >>> cfg = QuantConfig("mlx", 4, 64, raw={"group_size": 64, "bits": 4})
        >>> recognise(m, cfg, frozenset()).weights[0].shape
        (8, 64)
    """
    out = Recognised()
    authoritative = config is not None and config.method == "mlx"
    ambiguous: list[str] = []
    for name in m:
        if not name.endswith("weight") or name in claimed:
            continue
        w = m[name]
        if w.dtype != DType.U32 or not w.shape:
            continue
        prefix = name[: -len("weight")]
        scales = free(m, claimed, prefix + "scales")
        if scales is None:
            continue
        biases = free(m, claimed, prefix + "biases")
        module = prefix[:-1]
        if authoritative and config is not None:
            params = _layer_params(config.raw, module)
            if params is None:
                raise config_error(
                    m,
                    f"{name}: {config.source} says {module} is not quantised (false), "
                    f"but it is stored packed (U32 {list(w.shape)}) with {scales.name}",
                )
            mode, bits, group = params
            evidence = config.source
            cols, n_groups = w.shape[-1], scales.shape[-1]
            inn = cols * 32 // bits if bits else 0
            said = f"{config.source} says {mode} {bits}-bit g{group}"
            if bits <= 0 or group <= 0 or cols * 32 % bits:
                raise config_error(
                    m, f"{name}: {said}, but its {cols} U32 columns do not hold whole values"
                )
            if tuple(scales.shape) != (*w.shape[:-1], inn // group) or inn % group:
                raise config_error(
                    m,
                    f"{scales.name}: {said}, so {name} {list(w.shape)} stands for in={inn} "
                    f"and needs scales {[*w.shape[:-1], inn // group]}; found "
                    f"{list(scales.shape)} ({n_groups * group * bits // 32} U32 columns fit)",
                )
            if (mode == "affine") != (biases is not None):
                what = "has no" if biases is None else "has"
                raise config_error(m, f"{name}: {said}, but it {what} {prefix}biases")
        else:
            if tuple(scales.shape[:-1]) != tuple(w.shape[:-1]) or (
                biases is not None and biases.shape != scales.shape
            ):
                continue
            solutions = _solve(w, scales, affine=biases is not None)
            if len(solutions) != 1:
                out.unknown.append(name)
                ambiguous.append(name)
                continue
            mode, bits, group = solutions[0]
            evidence = EVIDENCE_NAMES
        shape = (*w.shape[:-1], w.shape[-1] * 32 // bits)
        meta = (scales.name,) if biases is None else (scales.name, biases.name)
        out.weights.append(
            QuantWeight(
                name=name,
                method="mlx",
                bits=bits,
                group_size=group,
                shape=tuple(int(d) for d in shape),
                data=(name,),
                meta=meta,
                evidence=evidence,
                logical_dtype=scales.dtype.value if mode == "affine" else None,
                detail={"mode": mode},
            )
        )
    if ambiguous:
        out.notes.append(
            f"mlx: {len(ambiguous)} packed U32 weight(s) (first {ambiguous[0]}) fit more than "
            "one (bits, group size) and there is no config.json 'quantization' to say which: "
            "counted at their stored size, the total may be wrong"
        )
    return out
