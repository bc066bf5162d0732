"""compressed-tensors (vLLM / llm-compressor): ``pack-quantized``, ``naive``/``int``/
``float-quantized``, ``nvfp4``/``mxfp4-pack-quantized`` and ``mxfp8-quantized``.

The layouts, as compressed-tensors' compressors write them
(``compressors/pack_quantized/base.py``, ``naive_quantized/base.py``, ``nvfp4/base.py``,
``mxfp4/base.py``), for a module ``x`` whose float weight is ``[..., out, in]``:

* ``pack-quantized`` (int, 1–8 bits): ``x.weight_packed`` I32 ``[..., out, ceil(in·bits/32)]``
  (32 values in ``bits`` words; releases before 0.15 packed ``32 // bits`` values a word,
  the same for 2, 4 and 8 bits), ``x.weight_shape`` I64 ``[rank]`` (the true shape, as
  *values*), ``x.weight_scale`` ``[..., out, in/group]`` (``[out, 1]`` per channel),
  ``x.weight_zero_point`` (asymmetric: packed along dimension 0), ``x.weight_g_idx``;
* ``naive-quantized`` / ``int-quantized`` / ``float-quantized``: ``x.weight`` I8 or FP8 at
  the logical shape + ``x.weight_scale`` (tensor, channel, group or block) (+ zero point);
* ``nvfp4-pack-quantized``: ``x.weight_packed`` U8 ``[out, in/2]`` + ``x.weight_scale`` FP8
  ``[out, in/16]`` + ``x.weight_global_scale``; ``mxfp4-pack-quantized``: the same with U8
  (E8M0) scales ``[out, in/32]``; ``mxfp8-quantized``: ``x.weight`` FP8 + U8 scales;
* activation and output scales (``input_scale``, ``input_zero_point``,
  ``input_global_scale``, ``output_scale``) belong to the module's weight as metadata.

**The true shape.** ``weight_shape`` holds it as *values* (two or three ints). io reads
the values of such small entries (at most 4 KiB each, through the same positioned reads as
the header, only when the checkpoint may be quantised:
:func:`paramscope.io._quantconfig.with_small_values`), and then the shape is exact and is
checked against the config (bits, group size) and the packed tensor. When the values are not
there (a manifest built without file locations), the shape is derived the way
compressed-tensors itself does on the meta device (``PackedQuantizationCompressor.decompress``):
the leading dimensions are the packed tensor's; ``in`` is ``scale columns × group_size`` for
the ``group`` / ``tensor_group`` strategies (exact: compressed-tensors refuses a group size
that does not divide ``in``), and ``packed columns × 32 / bits`` for ``channel`` / ``tensor``
(exact when ``in`` is a multiple of ``32 / bits``, as it is for every real model; a note says
so whenever this rule is used).

Evidence: ``config.json`` ``quantization_config`` (``quant_method: compressed-tensors``,
``config_groups`` with ``weights.num_bits``, ``type``, ``strategy``, ``group_size``,
``block_structure``, and ``format``); a module's group is chosen by its ``targets``
(``re:`` patterns, module names, or class names, which a header cannot check and so match
any module), then by which group's layout its shapes fit. A weight that fits none of the
groups that target it is a :class:`~paramscope.QuantConfigError`. Without a config, only the
FP4 layouts (``weight_packed`` U8) are recognised from names; an I32 ``weight_packed`` is
``unknown`` (its bits cannot be told).

Core: imports only core modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._dtypes import DType
from .._manifest import Entry, Manifest
from ._base import EVIDENCE_NAMES, QuantConfig, QuantWeight, Recognised
from ._common import cdiv, config_error, free, siblings

__all__ = ["recognise"]

_FP8 = frozenset({DType.F8_E4M3, DType.F8_E5M2, DType.F8_E4M3FNUZ, DType.F8_E5M2FNUZ})
_FLOATS = frozenset({DType.F16, DType.BF16, DType.F32, DType.F64})
_META = (
    "weight_scale",
    "weight_zero_point",
    "weight_g_idx",
    "weight_shape",
    "weight_global_scale",
    "input_scale",
    "input_zero_point",
    "input_global_scale",
    "output_scale",
    "output_zero_point",
)
_PACKED_FORMATS = ("pack-quantized",)
_FP4_FORMATS = ("nvfp4-pack-quantized", "mxfp4-pack-quantized")
_PLAIN_FORMATS = ("naive-quantized", "int-quantized", "float-quantized", "mxfp8-quantized")


@dataclass(frozen=True)
class _Group:
    name: str
    targets: tuple[str, ...]
    fmt: str
    bits: int
    kind: str  # "int" | "float"
    strategy: str
    group_size: int | None
    block: tuple[int, int] | None

    def says(self) -> str:
        g = f" g{self.group_size}" if self.group_size else ""
        return f"{self.fmt} {self.kind}{self.bits}{g} ({self.strategy})"


def _groups(m: Manifest, config: QuantConfig) -> list[_Group]:
    raw = config.raw
    top_fmt = raw.get("format")
    out = []
    groups = raw.get("config_groups")
    if not isinstance(groups, Mapping):
        return out
    for gname, g in groups.items():
        if not isinstance(g, Mapping) or not isinstance(g.get("weights"), Mapping):
            continue
        w = g["weights"]
        fmt = g.get("format") or top_fmt or "naive-quantized"
        bits = w.get("num_bits")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
            raise config_error(
                m,
                f"{config.source}: config_groups.{gname}.weights.num_bits: expected a "
                f"positive int, found {bits!r}",
            )
        gs = w.get("group_size")
        block = w.get("block_structure")
        targets = g.get("targets") or []
        out.append(
            _Group(
                name=str(gname),
                targets=tuple(str(t) for t in targets) if isinstance(targets, list) else (),
                fmt=str(fmt),
                bits=bits,
                kind=str(w.get("type", "int")),
                strategy=str(w.get("strategy") or ("group" if gs else "tensor")),
                group_size=int(gs) if isinstance(gs, int) and gs > 0 else None,
                block=(int(block[0]), int(block[1]))
                if isinstance(block, list) and len(block) == 2
                else None,
            )
        )
    return out


def _matches(module: str, target: str) -> bool:
    if target.startswith("re:"):
        try:
            return re.match(target[3:], module) is not None
        except re.error:
            return False
    if target == module:
        return True
    # a class name ("Linear"): a header cannot check the class, so it may match any module
    return "." not in target and target[:1].isupper()


def _ignored(module: str, ignore: Any) -> bool:
    if not isinstance(ignore, list):
        return False
    return any(
        isinstance(t, str) and not (t[:1].isupper() and "." not in t) and _matches(module, t)
        for t in ignore
    )


def _fit(
    g: _Group, data: Entry, scale: Entry | None, packed: bool, exact: tuple[int, ...] | None
) -> tuple[Any, bool] | str:
    """(logical shape, shape was derived by the channel rule) or what does not fit."""
    shape = data.shape
    if not shape:
        return "a scalar"
    lead, cols = tuple(shape[:-1]), shape[-1]
    if packed and g.fmt in _PACKED_FORMATS:
        if data.dtype != DType.I32:
            return f"{data.dtype.value}, expected I32"
        if exact is not None:
            inn = exact[-1]
            legacy = cdiv(inn, 32 // g.bits) if g.bits <= 32 else -1
            grouped = g.strategy in ("group", "tensor_group") and g.group_size
            if (
                exact[:-1] != lead
                or cols not in (cdiv(inn * g.bits, 32), legacy)
                or (grouped and scale is not None and scale.shape[-1] != cdiv(inn, g.group_size))
            ):
                return (
                    f"its weight_shape is {list(exact)}: {g.bits}-bit needs "
                    f"{cdiv(inn * g.bits, 32)} I32 columns"
                    + (f" and {cdiv(inn, g.group_size)} scale columns" if grouped else "")
                    + f"; found {cols}"
                    + (f" and {scale.shape[-1]}" if grouped and scale is not None else "")
                )
            return exact, False
        if g.strategy in ("group", "tensor_group") and g.group_size and scale is not None:
            inn = scale.shape[-1] * g.group_size
            legacy = cdiv(inn, 32 // g.bits) if g.bits <= 32 else -1
            if cols not in (cdiv(inn * g.bits, 32), legacy):
                return (
                    f"{cols} I32 columns; {g.bits}-bit g{g.group_size} with "
                    f"{scale.shape[-1]} scale columns (in={inn}) needs {cdiv(inn * g.bits, 32)}"
                )
            if tuple(scale.shape[:-1]) != lead:
                return f"scale shape {list(scale.shape)} for packed {list(shape)}"
            return (*lead, inn), False
        return (*lead, cols * 32 // g.bits), True
    if packed and g.fmt in _FP4_FORMATS:
        if data.dtype != DType.U8:
            return f"{data.dtype.value}, expected U8 (two FP4 values a byte)"
        inn = cols * 2
        gs = g.group_size or (16 if g.fmt.startswith("nv") else 32)
        if scale is not None and tuple(scale.shape) != (*lead, cdiv(inn, gs)):
            return (
                f"scale shape {list(scale.shape)}; in={inn} in groups of {gs} needs "
                f"{[*lead, cdiv(inn, gs)]}"
            )
        return (*lead, inn), False
    if not packed and g.fmt in _PLAIN_FORMATS:
        want = _FP8 if g.kind == "float" else frozenset({DType.I8, DType.U8})
        if data.dtype not in want or g.bits > 8:
            return f"{data.dtype.value}, expected {g.kind} of {g.bits} bits"
        if scale is not None and len(shape) >= 2:
            o, i = shape[-2], shape[-1]
            ok = {
                "tensor": scale.numel == 1,
                "channel": tuple(scale.shape) in ((*lead, 1), lead),
                "group": bool(g.group_size)
                and tuple(scale.shape) == (*lead, cdiv(i, g.group_size or 1)),
                "block": g.block is not None
                and tuple(scale.shape) == (*shape[:-2], cdiv(o, g.block[0]), cdiv(i, g.block[1])),
            }.get(g.strategy, True)
            if not ok:
                return f"scale shape {list(scale.shape)} does not fit a {g.strategy} scale"
        return tuple(shape), False
    return f"a {g.fmt} group does not store {'weight_packed' if packed else 'weight'}"


def _weight_shape(
    m: Manifest, claimed: frozenset[str], prefix: str, rank: int
) -> tuple[int, ...] | None:
    """The true shape from ``weight_shape``'s values, when io read them (small entries only:
    :data:`paramscope._quantlayouts.SMALL_VALUES_KEY`), else ``None``."""
    e = free(m, claimed, prefix + "weight_shape")
    values = e.extra.get("values") if e is not None and e.extra else None
    if (
        isinstance(values, list)
        and len(values) == rank
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    ):
        return tuple(values)
    return None


def _inferred_fp4(data: Entry, scale: Entry | None) -> tuple[str, int] | None:
    if data.dtype != DType.U8 or scale is None or not data.shape:
        return None
    inn = data.shape[-1] * 2
    lead = tuple(data.shape[:-1])
    if scale.dtype in _FP8 and tuple(scale.shape) == (*lead, cdiv(inn, 16)):
        return "nvfp4-pack-quantized", 16
    if scale.dtype in (DType.U8, DType.F8_E8M0) and tuple(scale.shape) == (*lead, cdiv(inn, 32)):
        return "mxfp4-pack-quantized", 32
    return None


def recognise(m: Manifest, config: QuantConfig | None, claimed: frozenset[str]) -> Recognised:
    """Find compressed-tensors weights.

    Args:
        m: the manifest (names, dtypes, shapes only).
        config: the checkpoint's quantisation config; ``compressed-tensors`` makes it
            authoritative (and is needed for anything but the FP4 layouts).
        claimed: names earlier recognisers took.

    Returns:
        One weight per quantised module (method ``compressed-tensors``, the format, type
        and strategy in ``detail``); packed weights it cannot place are ``unknown``.

    Raises:
        QuantConfigError: a weight that fits none of the config groups targeting it.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> m = Manifest([Entry("l.weight_packed", (64, 64), DType.U8),
        ...               Entry("l.weight_scale", (64, 8), DType.F8_E4M3),
        ...               Entry("l.weight_global_scale", (1,), DType.F32)])
        >>> w = recognise(m, None, frozenset()).weights[0]
        >>> w.name, w.shape, w.detail["format"]
        ('l.weight', (64, 128), 'nvfp4-pack-quantized')
    """
    out = Recognised()
    authoritative = config is not None and config.method == "compressed-tensors"
    groups = _groups(m, config) if authoritative and config is not None else []
    ignore = config.raw.get("ignore") if authoritative and config is not None else None
    derived: list[str] = []
    undecided: list[str] = []
    for name in m:
        if name in claimed:
            continue
        if name.endswith("weight_packed"):
            packed, prefix = True, name[: -len("weight_packed")]
        elif name.endswith("weight") and authoritative:
            packed, prefix = False, name[: -len("weight")]
            e = m[name]
            if e.dtype in _FLOATS or e.dtype == DType.BOOL:
                continue
            if free(m, claimed, prefix + "weight_scale") is None:
                continue
        else:
            continue
        data = m[name]
        scale = free(m, claimed, prefix + "weight_scale")
        module = prefix[:-1]
        logical = prefix + "weight"
        meta = siblings(m, claimed, prefix, _META)
        if not authoritative or config is None:
            fp4 = _inferred_fp4(data, scale)
            if fp4 is None:
                out.unknown.append(name)
                undecided.append(name)
                continue
            fmt, gs = fp4
            out.weights.append(
                QuantWeight(
                    name=logical,
                    method="compressed-tensors",
                    bits=4,
                    group_size=gs,
                    shape=(*data.shape[:-1], data.shape[-1] * 2),
                    data=(name,),
                    meta=meta,
                    evidence=EVIDENCE_NAMES,
                    detail={"format": fmt, "type": "float", "strategy": "group"},
                )
            )
            continue
        if _ignored(module, ignore):
            raise config_error(
                m,
                f"{name}: {config.source} lists {module} in 'ignore' (not quantised), "
                f"but it is stored quantised ({data.dtype.value} {list(data.shape)})",
            )
        exact = _weight_shape(m, claimed, prefix, len(data.shape))
        targeting = [g for g in groups if any(_matches(module, t) for t in g.targets)]
        fits: list[tuple[_Group, Any, bool]] = []
        problems: list[str] = []
        for g in targeting:
            r = _fit(g, data, scale, packed, exact if packed else None)
            if isinstance(r, str):
                problems.append(f"{g.name} ({g.says()}): {r}")
            else:
                fits.append((g, r[0], r[1]))
        if not fits:
            if not targeting:
                out.unknown.append(name)
                undecided.append(name)
                continue
            raise config_error(
                m,
                f"{name} ({data.dtype.value} {list(data.shape)}): {config.source} config "
                f"group {problems[0]}",
            )
        if len({(g.bits, g.group_size, g.fmt, shape) for g, shape, _ in fits}) > 1:
            out.unknown.append(name)
            undecided.append(name)
            continue
        g, shape, by_channel_rule = fits[0]
        if by_channel_rule:
            derived.append(name)
        out.weights.append(
            QuantWeight(
                name=logical,
                method="compressed-tensors",
                bits=g.bits,
                group_size=g.group_size
                if g.strategy in ("group", "tensor_group")
                else (-1 if g.strategy == "channel" else None),
                shape=tuple(int(d) for d in shape),
                data=(name,),
                meta=meta,
                evidence=config.source,
                logical_dtype=scale.dtype.value
                if scale is not None and scale.dtype in _FLOATS
                else None,
                detail={"format": g.fmt, "type": g.kind, "strategy": g.strategy}
                | ({"block": list(g.block)} if g.block else {})
                | ({"shape_from": "weight_shape values"} if exact and packed else {}),
            )
        )
    if derived:
        out.notes.append(
            f"compressed-tensors: in_features of {len(derived)} channel/tensor-strategy "
            f"packed weight(s) (first {derived[0]}) read as packed columns × 32/bits, exact "
            "when in_features is a multiple of 32/bits; weight_shape holds it as values, "
            "which a header-only count does not read"
        )
    if undecided:
        why = (
            "no config group targeting them fits, or several do"
            if authoritative
            else "there is no compressed-tensors quantization_config to give their bits"
        )
        out.notes.append(
            f"compressed-tensors: {len(undecided)} packed weight(s) (first {undecided[0]}) "
            f"counted at their stored size: {why}; the total may be wrong"
        )
    return out
