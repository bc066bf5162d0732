"""Quantise and dequantise whole ParamDicts, and one tensor to and from its stored entries.

:func:`quantize` turns the weights of a ParamDict, dict of tensors or module into the storage
convention of :mod:`paramscope._quantstore` (data, scale and zero-point entries, the record in
``extra["quant"]``); :func:`dequantize` restores float entries. :func:`storage_entries` and
:func:`from_storage` convert one :class:`~paramscope.compress._qkernels.QuantizedTensor` to its
entries and back; :func:`should_quantize` is the default choice of entries, shared with the
streaming :func:`paramscope.compress.quantize_file`.

The pieces live apart: 4-bit packing in :mod:`._int4`, the kernels and
:class:`QuantConfig` in :mod:`._qkernels`, error metrics in :mod:`._qerrors`, the report in
:mod:`._qreport`.

Example:
    >>> import torch
    >>> pd, report = quantize({"fc.weight": torch.randn(4, 8)}, bits=4)
    >>> sorted(pd), pd.meta("fc.weight").extra["quant"]["packed"]
    (['fc.weight', 'fc.weight__qscale'], True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentTypeError, DuplicateNameError, EntryError, MissingNameError
from .._quantstore import (
    AUX_TAG,
    aux_meta,
    is_quantized_entry,
    make_record,
    quant_record,
    scale_name,
    with_record,
    without_record,
    zero_name,
)
from .._quantstore import SCALE_SUFFIX as SCALE_SUFFIX  # re-export
from .._quantstore import ZERO_SUFFIX as ZERO_SUFFIX  # re-export
from .._values import computes
from ._notes import left_note
from ._qerrors import ErrorSums as ErrorSums  # re-export
from ._qerrors import error_sums as error_sums  # re-export
from ._qkernels import (
    QuantConfig,
    QuantizedTensor,
    _scale_shape,
    dequantize_tensor,
    quantize_with_errors,
)
from ._qkernels import _effective as _effective  # re-export
from ._qkernels import quantize_tensor as quantize_tensor  # re-export
from ._qreport import QuantReport

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = [
    "dequantize",
    "from_storage",
    "quant_meta",
    "quantize",
    "should_quantize",
    "storage_entries",
]

# Other modules still read these names from here: compress/__init__.py's lazy table
# (QuantConfig, QuantizedTensor, QuantReport, quantize_tensor, dequantize_tensor) and
# compress/_stream.py (``from . import _quantize as Q``: the ``# re-export`` imports above,
# AUX_TAG, QuantConfig, QuantizedTensor, QuantReport, quantize_tensor, dequantize_tensor,
# error_sums). Once they import from _quantstore, _qkernels, _qerrors and _qreport, the
# ``# re-export`` imports can go.


# ---------------------------------------------------------------------------------- storage


def quant_meta(name: str, q: QuantizedTensor) -> dict[str, Any]:
    """The ``extra["quant"]`` record of a quantised entry.

    Args:
        name: the data entry's name.
        q: its quantised tensor.

    Returns:
        ``{"bits", "scheme", "granularity", "shape", "dtype", "scale", "zero", "packed"}``.

    Example:
        >>> import torch
        >>> quant_meta("w", quantize_tensor(torch.ones(2, 2), QuantConfig()))["scale"]
        'w__qscale'
    """
    from .._dtypes import DType

    return make_record(
        name,
        bits=q.cfg.bits,
        scheme=q.cfg.scheme,
        granularity=q.cfg.granularity,
        shape=q.shape,
        dtype=DType.from_torch(q.dtype).value,
    )


def storage_entries(
    name: str,
    q: QuantizedTensor,
    *,
    role: str = "param",
    extra: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
) -> list[tuple[str, torch.Tensor, dict[str, Any]]]:
    """The entries one quantised tensor becomes, as ``(name, tensor, ParamDict.add kwargs)``.

    Args:
        name: the data entry's name.
        q: its quantised tensor.
        role: the original entry's role (kept on the data entry).
        extra: the original entry's extra (kept; ``"quant"`` is added).
        tags: the original entry's tags (kept on the data entry).

    Returns:
        Data, scale and (asymmetric) zero entries, in that order.

    Example:
        >>> import torch
        >>> q = quantize_tensor(torch.ones(2, 2), QuantConfig())
        >>> [n for n, _, _ in storage_entries("w", q)]
        ['w', 'w__qscale']
    """
    qm = quant_meta(name, q)
    out: list[tuple[str, torch.Tensor, dict[str, Any]]] = [
        (
            name,
            q.data,
            {
                "role": role,
                "trainable": False,
                "tags": tuple(tags),
                "extra": with_record(extra, qm),
            },
        )
    ]
    out.append((qm["scale"], q.scale, aux_meta()))
    if q.zero is not None:
        out.append((qm["zero"], q.zero, aux_meta()))
    return out


def from_storage(
    name: str,
    data: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    meta: Mapping[str, Any],
) -> QuantizedTensor:
    """Rebuild a :class:`QuantizedTensor` from stored entries and their ``extra["quant"]``.

    Args:
        name: the data entry's name, for error messages.
        data: the stored integers.
        scale: the stored scales.
        zero: the stored zero points (asymmetric) or ``None``.
        meta: the ``extra["quant"]`` record.

    Returns:
        The quantised tensor, ready for :func:`dequantize_tensor`.

    Raises:
        EntryError: the record is malformed or disagrees with the stored shapes.

    Example:
        >>> import torch
        >>> q = quantize_tensor(torch.ones(2, 2), QuantConfig())
        >>> r = from_storage("w", q.data, q.scale, None, quant_meta("w", q))
        >>> dequantize_tensor(r).tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    from .._dtypes import DType

    try:
        cfg = QuantConfig(int(meta["bits"]), str(meta["scheme"]), meta["granularity"])
        shape = tuple(int(s) for s in meta["shape"])
        dtype = DType(meta["dtype"]).to_torch()
    except (KeyError, TypeError, ValueError) as exc:
        raise EntryError(
            f"entry {name!r}: malformed extra['quant'] record {dict(meta)!r} ({exc})"
        ) from None
    expect = (*shape[:-1], (shape[-1] + 1) // 2) if cfg.bits == 4 and shape else shape
    if cfg.bits == 4 and not shape:
        expect = (1,)
    if tuple(data.shape) != tuple(expect):
        raise EntryError(
            f"entry {name!r}: quantised data should have shape {expect}, found {tuple(data.shape)}"
        )
    sshape = _scale_shape(cfg, shape)
    if tuple(scale.shape) != sshape:
        raise EntryError(
            f"entry {name!r}: scale entry {meta.get('scale')!r} should have shape {sshape}, "
            f"found {tuple(scale.shape)}"
        )
    if cfg.symmetric == (zero is not None):
        raise EntryError(
            f"entry {name!r}: scheme {cfg.scheme!r} "
            f"{'takes no' if cfg.symmetric else 'needs a'} zero-point entry"
        )
    return QuantizedTensor(data, scale, zero, shape, dtype, cfg)


# ---------------------------------------------------------------------------------- dicts


def should_quantize(
    name: str,
    shape: Sequence[int],
    dtype_is_float: bool,
    role: str,
    select: str | Sequence[str] | None = None,
    skip: str | Sequence[str] | None = None,
) -> bool:
    """Whether an entry is quantised.

    By default only floating-point *parameters* with at least 2 dimensions are: biases,
    norm weights, other 1-D scales, scalars, integer tensors and buffers stay in float (or
    as they are). ``select`` further restricts to matching names; ``skip`` excludes matches.

    Args:
        name: the entry name.
        shape: its shape.
        dtype_is_float: whether its dtype is floating point.
        role: ``"param"`` or ``"buffer"``.
        select: glob / ``re:`` pattern(s) a name must match (``None``: all).
        skip: glob / ``re:`` pattern(s) of names to leave alone.

    Returns:
        The decision.

    Example:
        >>> should_quantize("fc.weight", (4, 4), True, "param")
        True
        >>> should_quantize("fc.bias", (4,), True, "param")
        False
    """
    from .._names import compile_pattern

    if not dtype_is_float or len(shape) < 2 or str(getattr(role, "value", role)) != "param":
        return False
    if select is not None and not compile_pattern(select)(name):
        return False
    return not (skip is not None and compile_pattern(skip)(name))


def _as_paramdict(target: Any) -> ParamDict:
    import torch

    from .._paramdict import ParamDict

    if isinstance(target, ParamDict):
        return target
    if isinstance(target, torch.nn.Module):
        return ParamDict.from_module(target)
    if isinstance(target, Mapping):
        return ParamDict(target)
    raise ArgumentTypeError(
        "quantize: expected a ParamDict, a dict of tensors or a torch.nn.Module, "
        f"found {type(target).__name__}"
    )


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def quantize(
    target: Any,
    *,
    bits: int = 8,
    scheme: str = "symmetric",
    granularity: str | int = "channel",
    group_size: int | None = None,
    select: str | Sequence[str] | None = None,
    skip: str | Sequence[str] | None = None,
) -> tuple[ParamDict, QuantReport]:
    """Quantise the weights of a ParamDict, dict of tensors or module into a new ParamDict.

    Entries chosen by :func:`should_quantize` follow the storage convention of this module;
    the others are carried over as the same tensor objects with their metadata. A tie group
    follows the decision for its stored entry: the stored entry is quantised once and its
    aliases stay aliases of the quantised data entry (they share its metadata, so they
    dequantise through the same scale entries). Entries already quantised are left as they are.

    Args:
        target: a ParamDict, a ``dict`` of tensors or an ``nn.Module``.
        bits: 8 or 4.
        scheme: ``"symmetric"`` or ``"asymmetric"``.
        granularity: ``"tensor"``, ``"channel"`` or a group size.
        group_size: a group size along the last dimension; overrides ``granularity``.
        select: only names matching these patterns are quantised.
        skip: names matching these patterns are not quantised.

    Returns:
        ``(new ParamDict, QuantReport)``.

    Raises:
        ArgumentError: invalid options.
        ArgumentTypeError: a target of a type it does not take.
        EntryError: NaN/Inf values, a group size that does not divide a last dimension.
        DuplicateNameError: a name that collides with an auxiliary entry.

    Example:
        >>> import torch
        >>> pd, report = quantize({"fc.weight": torch.randn(8, 16), "fc.bias": torch.zeros(8)})
        >>> list(pd), report.tensors[0]["name"]
        (['fc.weight', 'fc.weight__qscale', 'fc.bias'], 'fc.weight')
    """
    from .._paramdict import ParamDict

    cfg = QuantConfig(bits, scheme, group_size if group_size is not None else granularity)
    src = _as_paramdict(target)
    out = ParamDict(metadata=src.metadata)
    report = QuantReport()
    left: list[str] = []
    names = list(src)
    taken = set(names)
    pending: dict[str, list[str]] = {}
    done: set[str] = set()

    def add_alias(alias: str, root: str) -> None:
        out.tie(alias, root)
        if out.meta(alias) != src.meta(alias) and not is_quantized_entry(out.meta(root).extra):
            m = src.meta(alias)
            out.set_meta(alias, role=m.role, trainable=m.trainable, tags=m.tags, extra=m.extra)

    for name in names:
        root = src.alias_of(name)
        if root is not None:
            if root in done:
                add_alias(name, root)
            else:
                pending.setdefault(root, []).append(name)
            continue
        t = src[name]
        m = src.meta(name)
        quant = (
            AUX_TAG not in m.tags
            and not is_quantized_entry(m.extra)
            and should_quantize(
                name, tuple(t.shape), t.is_floating_point(), m.role.value, select, skip
            )
        )
        if quant and not computes(t):  # F8, FP4 …: left as stored, with a note
            left.append(name)
            quant = False
        if not quant:
            out.add(name, t, role=m.role, trainable=m.trainable, tags=m.tags, extra=m.extra)
        else:
            for aux in (scale_name(name), zero_name(name)):
                if aux in taken:
                    raise DuplicateNameError(
                        f"entry {name!r}: its auxiliary name {aux!r} is already an entry; "
                        "rename or skip one of them"
                    )
            q, sums = quantize_with_errors(t, cfg, name)  # the error sums in the same pass
            for n, v, kw in storage_entries(name, q, role=m.role.value, extra=m.extra, tags=m.tags):
                out.add(n, v, **kw)
            assert sums is not None
            report.add(name, sums, _nbytes(t), q.nbytes)
        done.add(name)
        for alias in pending.pop(name, []):
            add_alias(alias, name)
    if left:
        report.notes.append(left_note("quantised", left))
    return out, report


def dequantize(pd: ParamDict) -> ParamDict:
    """Restore float entries from the storage convention into a new ParamDict.

    Quantised data entries become float tensors of their original shape and dtype (their
    other metadata kept, ``extra["quant"]`` removed, ``trainable`` back to the role's default:
    ``True`` for params); the scale and zero entries they name are dropped; every other entry
    is carried over as the same tensor object. Ties to quantised entries are kept.

    Args:
        pd: a ParamDict, e.g. from :func:`quantize` or :func:`paramscope.load`.

    Returns:
        The new ParamDict.

    Raises:
        MissingNameError: a scale or zero entry named by a quantised entry is missing.
        EntryError: a quantisation record is malformed or disagrees with the shapes.

    Example:
        >>> import torch
        >>> qpd, _ = quantize({"w": torch.ones(2, 2)})
        >>> dequantize(qpd)["w"].tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    from .._enums import Role
    from .._paramdict import ParamDict

    aux: set[str] = set()
    for name in pd.stored():
        qm = quant_record(pd.meta(name).extra)
        if qm is not None:
            for key in ("scale", "zero"):
                ref = qm.get(key)
                if ref is None:
                    continue
                if ref not in pd:
                    raise MissingNameError(
                        f"entry {name!r}: its quantisation {key} entry {ref!r} is missing; "
                        "load it too (or do not select the quantised entry)"
                    )
                if ref == name or is_quantized_entry(pd.meta(ref).extra):
                    # never drop data: a scale that is the entry itself (or another
                    # quantised entry) would remove that entry from the result
                    raise EntryError(
                        f"entry {name!r}: expected its quantisation {key} to name a separate "
                        f"scale/zero entry, found {ref!r}, which is "
                        + ("the entry itself" if ref == name else "quantised data itself")
                    )
                aux.add(ref)
            if qm.get("zero") is not None and qm.get("zero") == qm.get("scale"):
                raise EntryError(
                    f"entry {name!r}: its quantisation scale and zero both name "
                    f"{qm['scale']!r}; expected two entries"
                )
    out = ParamDict(metadata=pd.metadata)
    for name in pd:
        if name in aux:
            continue
        m = pd.meta(name)
        root = pd.alias_of(name)
        if root is not None and root in out:
            out.tie(name, root)
            if not is_quantized_entry(pd.meta(root).extra):
                out.set_meta(name, role=m.role, trainable=m.trainable, tags=m.tags, extra=m.extra)
            continue
        t = pd[name]
        qm = quant_record(m.extra)
        if qm is None:
            out.add(name, t, role=m.role, trainable=m.trainable, tags=m.tags, extra=m.extra)
            continue
        zero = pd[qm["zero"]] if qm.get("zero") is not None else None
        q = from_storage(name, t, pd[qm["scale"]], zero, qm)
        out.add(
            name,
            dequantize_tensor(q),
            role=m.role,
            trainable=m.role is Role.PARAM,
            tags=m.tags,
            extra=without_record(m.extra),
        )
    return out
