"""GPTQ and AWQ layouts: ``X.qweight`` (I32, packed), ``X.qzeros``, ``X.scales`` (``X.g_idx``).

GPTQ (AutoGPTQ ``nn_modules/qlinear/qlinear_cuda.py`` ``QuantLinear.__init__``/``pack``, the
layout GPTQModel and transformers' GPTQ integration load), for a ``Linear(in, out)`` at
``bits`` ∈ {2, 3, 4, 8} and group size ``g`` (``-1``: one group over ``in``):

* ``qweight`` I32 ``[in // 32 * bits, out]``: 32 values of one column in ``bits`` words along
  dim 0 (3-bit: 32 values in 3 words, values straddling word boundaries);
* ``qzeros`` I32 ``[ceil(in / g), out // 32 * bits]``, ``scales`` F16 ``[ceil(in / g), out]``;
* ``g_idx`` I32 ``[in]``: each input's group (act-order, ``desc_act``, permutes it).

AWQ (AutoAWQ ``WQLinear_GEMM``): ``qweight`` I32 ``[in, out // (32 // bits)]`` (packed along
dim 1, in the order 0 2 4 6 1 3 5 7), ``qzeros`` I32 ``[in // g, out // (32 // bits)]``,
``scales`` F16 ``[in // g, out]``; ``WQLinear_GEMV`` (``"version": "gemv"``):
``qweight`` ``[out, in // (32 // bits)]``.

The logical weight is ``X.weight`` of shape ``[out, in]`` (``nn.Linear``'s). With a config
(``quantization_config`` ``{bits, group_size, desc_act, sym}``, ``quantize_config.json``,
AWQ's ``quant_config.json`` ``{w_bit, q_group_size, version}``) its bits and group size are
checked against the shapes; without one they are read from the shapes (``qzeros`` and
``scales`` give the bits and the groups).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import QuantConfigError
from .._manifest import Entry, Manifest
from ._base import EVIDENCE_NAMES, QuantConfig, QuantWeight, Recognised

__all__ = ["recognise"]

_BITS = (2, 3, 4, 8)


class _Misfit(Exception):
    """The tensors fit no GPTQ/AWQ layout (the message says why)."""


def _g(m: Manifest, claimed: frozenset[str], name: str) -> Entry | None:
    if name in claimed or name not in m:
        return None
    e = m[name]
    return e if e.tie is None else None


def _groups(
    where: str, name: str, n_in: int, n_groups: int, cfg_group: int | None, source: str | None
) -> int:
    """The group size from ``n_groups`` scale rows over ``n_in`` inputs (checked)."""
    if cfg_group is not None and source is not None:
        if cfg_group == -1 or cfg_group >= n_in:
            if n_groups != 1:
                raise QuantConfigError(
                    where,
                    f"{name}: {source} says group_size={cfg_group}, the scales hold "
                    f"{n_groups} groups (1 expected)",
                )
            return -1 if cfg_group == -1 else cfg_group
        if cfg_group <= 0 or n_in % cfg_group:
            raise QuantConfigError(
                where,
                f"{name}: {source} says group_size={cfg_group}, which does not divide the "
                f"{n_in} inputs",
            )
        if n_groups != n_in // cfg_group:
            raise QuantConfigError(
                where,
                f"{name}: {source} says group_size={cfg_group} ({n_in // cfg_group} groups of "
                f"{n_in} inputs), the scales hold {n_groups} groups",
            )
        return cfg_group
    if n_groups == 1:
        return -1
    if n_groups <= 0 or n_in % n_groups:
        raise _Misfit(f"{n_groups} scale groups do not divide {n_in} inputs")
    return n_in // n_groups


def _gptq(
    where: str,
    base: str,
    q: Entry,
    scales: Entry,
    zeros: Entry | None,
    g_idx: Entry | None,
    bits_cfg: float | None,
    source: str | None,
) -> tuple[int, int, int]:
    """``(bits, in, out)`` of a GPTQ layout, checked."""
    rows, out = q.shape
    if scales.shape[1] != out:
        raise _Misfit(f"scales {list(scales.shape)} do not have {out} columns")
    found: int | None = None  # bits the tensors say
    n_in: int | None = None
    if g_idx is not None:
        if len(g_idx.shape) != 1 or (rows * 32) % g_idx.shape[0]:
            raise _Misfit(f"g_idx {list(g_idx.shape)} does not fit qweight {list(q.shape)}")
        n_in = g_idx.shape[0]
        found = rows * 32 // n_in
    elif zeros is not None and (zeros.shape[1] * 32) % out == 0:
        found = zeros.shape[1] * 32 // out
    if zeros is not None and found is not None and zeros.shape[1] * 32 != out * found:
        raise _Misfit(f"qzeros {list(zeros.shape)} do not fit {found}-bit")
    if bits_cfg is not None and source is not None:
        if found is not None and found != bits_cfg:
            raise QuantConfigError(
                where,
                f"{base}.qweight: {source} says bits={bits_cfg:g}, its shape {list(q.shape)} "
                f"(with {'g_idx' if g_idx is not None else 'qzeros'}) fits {found}-bit",
            )
        found = int(bits_cfg)
    if found not in _BITS:
        raise _Misfit(f"the shapes give {found} bits (2, 3, 4 or 8 expected)")
    if n_in is None:
        if (rows * 32) % found:
            raise _Misfit(f"{rows} qweight rows do not hold whole {found}-bit inputs")
        n_in = rows * 32 // found
    if n_in * found != rows * 32:
        raise _Misfit(f"{rows} qweight rows do not hold {n_in} {found}-bit inputs")
    return found, n_in, out


def _awq(
    where: str,
    base: str,
    q: Entry,
    scales: Entry,
    zeros: Entry | None,
    bits_cfg: float | None,
    source: str | None,
    gemv: bool,
) -> tuple[int, int, int]:
    """``(bits, in, out)`` of an AWQ layout, checked."""
    if gemv:
        if bits_cfg is None:
            raise _Misfit("AWQ GEMV needs the bits from its config")
        bits = int(bits_cfg)
        out, n_in = q.shape[0], q.shape[1] * 32 // bits
        return bits, n_in, out
    n_in, packed = q.shape
    out = scales.shape[1]
    if packed <= 0 or out % packed or (32 * packed) % out:
        raise _Misfit(f"scales {list(scales.shape)} do not fit qweight {list(q.shape)}")
    bits = 32 * packed // out
    if zeros is not None and zeros.shape[1] != packed:
        raise _Misfit(f"qzeros {list(zeros.shape)} do not fit qweight {list(q.shape)}")
    if bits_cfg is not None and source is not None and bits != bits_cfg:
        raise QuantConfigError(
            where,
            f"{base}.qweight: {source} says bits={bits_cfg:g}, its shape {list(q.shape)} "
            f"(with scales {list(scales.shape)}) fits {bits}-bit",
        )
    if bits not in _BITS:
        raise _Misfit(f"the shapes give {bits} bits")
    return bits, n_in, out


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """GPTQ and AWQ weights (``*.qweight`` with ``*.scales``).

    Args:
        m: the manifest.
        config: the checkpoint's config; a ``gptq`` or ``awq`` one decides the family and is
            checked against the shapes.
        claimed: names already taken.

    Returns:
        One weight ``X.weight`` (shape ``[out, in]``) per ``X.qweight``; packed entries that fit
        no layout are unknown.

    Raises:
        QuantConfigError: the config's bits or group size contradict the shapes.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("fc.qweight", (32, 64), DType.I32),
        ...               Entry("fc.qzeros", (2, 8), DType.I32),
        ...               Entry("fc.scales", (2, 64), DType.F16),
        ...               Entry("fc.g_idx", (256,), DType.I32)])
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.name, w.method, w.bits, w.group_size, w.shape
        ('fc.weight', 'gptq', 4, 128, (64, 256))
    """
    out = Recognised()
    method_cfg = config.method if config is not None else None
    cfg = config if method_cfg in ("gptq", "awq") else None
    raw: Mapping[str, Any] = cfg.raw if cfg is not None else {}
    source = cfg.source if cfg is not None else None
    where = m.source or "(in memory)"
    gemv = str(raw.get("version", "")).lower() == "gemv"
    for name in m:
        if not name.endswith(".qweight") and name != "qweight":
            continue
        q = _g(m, claimed, name)
        if q is None:
            continue
        base = name[: -len(".qweight")] if name != "qweight" else ""
        dot = f"{base}." if base else ""
        scales = _g(m, claimed, dot + "scales")
        zeros = _g(m, claimed, dot + "qzeros")
        g_idx = _g(m, claimed, dot + "g_idx")
        if scales is None or q.dtype.value != "I32" or len(q.shape) != 2 or len(scales.shape) != 2:
            out.unknown.append(name)
            continue
        if zeros is not None and (zeros.dtype.value != "I32" or len(zeros.shape) != 2):
            out.unknown.append(name)
            continue
        if cfg is not None:
            awq = cfg.method == "awq"
        else:  # GPTQ's scales have qweight's columns; AWQ's have 32 / bits times more
            awq = scales.shape[1] != q.shape[1] and g_idx is None
        try:
            if awq:
                bits, n_in, n_out = _awq(
                    where, base, q, scales, zeros, cfg and cfg.bits, source, gemv
                )
                n_groups = scales.shape[0] if not gemv else None
            else:
                bits, n_in, n_out = _gptq(
                    where, base, q, scales, zeros, g_idx, cfg and cfg.bits, source
                )
                n_groups = scales.shape[0]
            cfg_group = cfg.group_size if cfg is not None else None
            if n_groups is None:
                group = cfg_group if cfg_group is not None else -1
            else:
                group = _groups(where, f"{dot}scales", n_in, n_groups, cfg_group, source)
        except _Misfit as exc:
            if cfg is not None:
                raise QuantConfigError(
                    where, f"{name}: {source} says {cfg.method}, but {exc}"
                ) from None
            out.unknown.append(name)
            continue
        meta = tuple(e.name for e in (zeros, scales, g_idx) if e is not None)
        detail: dict[str, Any] = {}
        if not awq:
            desc = raw.get("desc_act")
            if isinstance(desc, bool):
                detail["act_order"] = desc
            if isinstance(raw.get("sym"), bool):
                detail["sym"] = raw["sym"]
            if isinstance(raw.get("checkpoint_format"), str):
                detail["checkpoint_format"] = raw["checkpoint_format"]
        else:
            detail["version"] = "gemv" if gemv else "gemm"
            if isinstance(raw.get("zero_point"), bool):
                detail["zero_point"] = raw["zero_point"]
        out.weights.append(
            QuantWeight(
                name=f"{dot}weight",
                method="awq" if awq else "gptq",
                bits=bits,
                group_size=group,
                shape=(n_out, n_in),
                data=(name,),
                meta=meta,
                evidence=source or EVIDENCE_NAMES,
                logical_dtype=scales.dtype.value if scales.dtype.is_float else None,
                detail=detail,
            )
        )
    return out
