"""Pruning and quantising a checkpoint into a new file, tensor by tensor (bounded memory).

Both stand on io: :class:`~paramscope.io._reader.SourceReader` reads each stored tensor into
fresh memory with one positioned read, and :func:`~paramscope.io._writer.write_stream` writes
it (keeping at most two output buffers alive) before the next one is read. Peak memory is
therefore about twice the largest tensor (its input and its output) plus a constant. Sources
whose tensors have a byte location (safetensors, sharded folders, torch zip checkpoints)
stream; legacy torch pickles and .npz archives are loaded whole first (said in a note).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._manifest import Entry
from .._progress import progress
from .._values import count_nonzero
from ..io._reader import SourceReader
from ..io._writer import Planned, alias_meta, plan_meta, tensor_bytes, write_stream
from ._notes import left_note

if TYPE_CHECKING:
    import torch

__all__ = ["prune_file", "quantize_file"]


def prune_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    amount: float | None,
    *,
    scope: str = "global",
    method: str = "l1",
    structure: str | None = None,
    n: int = 2,
    m: int = 4,
    select: Any = None,
    skip: Any = None,
    seed: int | None = None,
    fsync: bool = True,
    show_progress: bool | None = None,
) -> Any:
    """Prune a checkpoint into a new safetensors file, tensor by tensor (bounded memory).

    Global magnitude pruning finds its exact threshold in a few streaming passes over the
    source (see :func:`paramscope.compress._prune.global_threshold`), then writes. Every pruned
    entry records its nonzero count in the file's metadata, so ``count`` and ``inspect`` show
    it from the header alone.

    Args:
        src: any checkpoint source.
        dst: the safetensors file to write (atomically).
        amount: fraction of the selected elements to prune (``None`` for ``n:m``).
        scope: ``"global"`` or ``"layer"``.
        method: ``"l1"`` or ``"random"``.
        structure: ``None``, ``"rows"``, ``"channels"`` or ``"n:m"``.
        n: kept per group for ``n:m``.
        m: group size for ``n:m``.
        select: patterns of entries to prune (default: parameters with ndim >= 2).
        skip: patterns of entries to leave alone.
        seed: for ``method="random"``.
        fsync: flush to disk before returning.
        show_progress: progress bar on stderr (default: only on a terminal).

    Returns:
        The :class:`~paramscope.compress._prune.SparsityReport`.

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> w = torch.arange(1.0, 9.0).reshape(2, 4)
        >>> src = paramscope.save({"w": w, "b": torch.ones(2)}, f"{d}/model.safetensors")
        >>> report = prune_file(src, f"{d}/pruned.safetensors", 0.5)  # "b" (1-D) is left
        >>> [(t["name"], t["elements"], t["zeros"]) for t in report.tensors]
        [('w', 8, 4)]
        >>> paramscope.load(f"{d}/pruned.safetensors")["w"].tolist()
        [[0.0, 0.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0]]
    """
    import torch

    from . import _prune as P

    structure_ = P._structure(structure)
    n, m = P._check_nm(n, m) if structure_ is P.Structure.NM else (n, m)
    a = P._check_amount(amount, structure_, n, m)
    scope_ = P._option(P.Scope, "scope", scope)
    method_ = P._option(P.Method, "method", method)
    if structure_ in (P.Structure.ROWS, P.Structure.CHANNELS) and scope_ is P.Scope.GLOBAL:
        raise P.ArgumentError(
            f"prune: structure={structure!r} with scope='global': slices of different tensors "
            "differ in size, so a global ranking cannot give an exact amount; pass "
            "scope='layer' (--scope layer)"
        )
    report = P.SparsityReport(source=os.fspath(src), output=os.fspath(dst))
    with SourceReader(src) as reader:
        ruled = [
            e
            for e in reader.entries
            if e.dtype.is_float and P.should_prune(e.name, e.shape, e.role, select, skip)
        ]
        chosen = {e.name for e in ruled if e.dtype.computes}
        if len(chosen) < len(ruled):  # F8, FP4 …: left as stored, with a note
            left = [e.name for e in ruled if not e.dtype.computes]
            report.notes.append(left_note("pruned", left))
        targets = [e for e in reader.entries if e.name in chosen]
        thr = ties = None
        counts: dict[str, int] = {}
        if structure_ is None and scope_ is P.Scope.GLOBAL and targets:
            total = sum(e.numel for e in targets)
            if method_ is P.Method.L1:
                thr, ties = P.global_threshold(lambda: (reader.read(e) for e in targets), a, total)
            else:
                counts = dict(
                    zip(
                        [e.name for e in targets],
                        P.random_counts([e.numel for e in targets], a, seed),
                        strict=True,
                    )
                )
        gen = torch.Generator().manual_seed(seed if seed is not None else 0)
        plan = [
            Planned(e.name, e.dtype, list(e.shape), e.nbytes, plan_meta(e)) for e in reader.entries
        ]
        extra_of = {p.name: p.meta.get("extra", {}) for p in plan}
        late: dict[str, dict[str, Any]] = {}

        def chunks() -> Iterator[tuple[str, Any]]:
            nonlocal ties
            with progress(reader.total_bytes, "prune", enabled=show_progress) as advance:
                for e in reader.entries:
                    t = reader.read(e)
                    if e.name in chosen:
                        if thr is not None:
                            keep, used = P.threshold_mask(t, thr, ties or 0)
                            ties = (ties or 0) - used
                        elif counts:
                            keep = P._unstructured(t, counts[e.name], method_, gen)
                        else:
                            keep = P.keep_mask(
                                t,
                                None if structure_ is P.Structure.NM else a,
                                method=method_.value,
                                structure=structure,
                                n=n,
                                m=m,
                                generator=gen,
                            )
                        t.masked_fill_(~keep, 0)
                        nnz = count_nonzero(t)
                        late[e.name] = {"extra": {**extra_of[e.name], "nonzero": nnz}}
                        report.add(e.name, (t.numel(), t.numel() - nnz))
                    yield e.name, tensor_bytes(t)
                    advance(e.nbytes)

        write_stream(
            dst,
            plan,
            chunks(),
            aliases=reader.aliases,
            alias_meta=alias_meta(reader.manifest, reader.aliases),
            metadata=reader.manifest.metadata,
            fsync=fsync,
            late_meta=late,
            reserve=40 * len(chosen) + 64,
        )
    return report


def _quant_plan(e: Entry, cfg: Any) -> list[Any]:
    """The entries a quantised tensor becomes, known before its values are read."""
    from .._dtypes import DType
    from .._quantstore import AUX_TAG, QUANT_KEY, make_record
    from ._qkernels import _effective, _scale_shape

    shape = tuple(e.shape)
    eff = _effective(cfg, shape, e.name)
    if cfg.bits == 8:
        data_shape, data_dtype = list(shape), DType.I8 if cfg.symmetric else DType.U8
    else:
        last = shape[-1] if shape else 1
        data_shape, data_dtype = [*shape[:-1], (last + 1) // 2], DType.U8
    sshape = list(_scale_shape(eff, shape))
    qmeta = make_record(
        e.name,
        bits=eff.bits,
        scheme=eff.scheme,
        granularity=eff.granularity,
        shape=shape,
        dtype=e.dtype.value,
    )
    base = plan_meta(e, trainable=False)
    base["extra"] = {**base.get("extra", {}), QUANT_KEY: qmeta}
    aux = {"role": "buffer", "trainable": False, "tags": [AUX_TAG]}

    def nbytes(dt: DType, shp: list[int]) -> int:
        k = 1
        for d in shp:
            k *= d
        return dt.nbytes(k)

    out = [
        Planned(e.name, data_dtype, data_shape, nbytes(data_dtype, data_shape), base),
        Planned(qmeta["scale"], DType.F32, sshape, nbytes(DType.F32, sshape), dict(aux)),
    ]
    if not cfg.symmetric:
        out.append(Planned(qmeta["zero"], DType.U8, sshape, nbytes(DType.U8, sshape), dict(aux)))
    return out


def _error_sums_chunked(t: torch.Tensor, q: Any, rows_per_chunk: int = 0) -> Any:
    """Error sums of one quantised tensor, dequantising ~16M elements at a time."""
    from ._qerrors import ErrorSums, error_sums
    from ._qkernels import QuantizedTensor, dequantize_tensor

    if t.dim() <= 1 or t.shape[0] <= 1:
        return error_sums(t, dequantize_tensor(q))
    per_row = max(1, t.numel() // t.shape[0])
    step = rows_per_chunk or max(1, (4 << 20) // per_row)
    total = ErrorSums()
    for i in range(0, t.shape[0], step):
        j = min(i + step, t.shape[0])
        scale = q.scale[i:j] if q.scale.dim() else q.scale
        zero = None if q.zero is None else (q.zero[i:j] if q.zero.dim() else q.zero)
        part = QuantizedTensor(q.data[i:j], scale, zero, (j - i, *q.shape[1:]), q.dtype, q.cfg)
        total = total + error_sums(t[i:j], dequantize_tensor(part))
    return total


def quantize_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    bits: int = 8,
    scheme: str = "symmetric",
    granularity: str | int = "channel",
    group_size: int | None = None,
    select: Any = None,
    skip: Any = None,
    fsync: bool = True,
    show_progress: bool | None = None,
) -> Any:
    """Quantise a checkpoint into a new self-describing safetensors file, tensor by tensor.

    Peak memory is about twice the largest tensor plus a constant: each tensor is read,
    quantised, its error measured (in float64 chunks) and written before the next is read.
    The output follows the storage convention of :mod:`paramscope._quantstore`, so
    ``paramscope.load(dst, dequantize=True)`` restores float tensors and ``count`` reports
    logical parameters.

    Args:
        src: any checkpoint source.
        dst: the safetensors file to write (atomically).
        bits: 8 or 4.
        scheme: ``"symmetric"`` or ``"asymmetric"``.
        granularity: ``"tensor"``, ``"channel"`` or a group size.
        group_size: overrides ``granularity`` with groups of this size along the last dim.
        select: patterns of entries to quantise (default: float parameters with ndim >= 2).
        skip: patterns of entries to keep in float.
        fsync: flush to disk before returning.
        show_progress: progress bar on stderr (default: only on a terminal).

    Returns:
        The :class:`~paramscope.compress._qreport.QuantReport`.

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> w = torch.arange(1.0, 9.0).reshape(2, 4)
        >>> src = paramscope.save({"w": w, "b": torch.ones(2)}, f"{d}/model.safetensors")
        >>> report = quantize_file(src, f"{d}/model-int8.safetensors", bits=8)
        >>> [(t["name"], t["bytes_before"], t["bytes_after"]) for t in report.tensors]
        [('w', 32, 16)]
        >>> back = paramscope.load(f"{d}/model-int8.safetensors", dequantize=True)
        >>> (back["w"] - w).abs().max() <= w.abs().amax(1).max() / 127  # one int8 step
        tensor(True)
    """
    from .._quantstore import scale_name, zero_name
    from ._qkernels import QuantConfig, quantize_tensor
    from ._qreport import QuantReport
    from ._quantize import should_quantize

    cfg = QuantConfig(bits, scheme, group_size if group_size is not None else granularity)
    report = QuantReport(source=os.fspath(src), output=os.fspath(dst))
    with SourceReader(src) as reader:
        ruled = [
            e
            for e in reader.entries
            if should_quantize(e.name, e.shape, e.dtype.is_float, e.role.value, select, skip)
        ]
        chosen = {e.name for e in ruled if e.dtype.computes}
        if len(chosen) < len(ruled):  # F8, FP4 …: left as stored, with a note
            left = [e.name for e in ruled if not e.dtype.computes]
            report.notes.append(left_note("quantised", left))
        plan: list[Any] = []
        for e in reader.entries:
            if e.name in chosen:
                plan.extend(_quant_plan(e, cfg))
            else:
                plan.append(Planned(e.name, e.dtype, list(e.shape), e.nbytes, plan_meta(e)))

        def chunks() -> Iterator[tuple[str, Any]]:
            with progress(reader.total_bytes, "quantize", enabled=show_progress) as advance:
                for e in reader.entries:
                    t = reader.read(e)
                    if e.name not in chosen:
                        yield e.name, tensor_bytes(t)
                        advance(e.nbytes)
                        continue
                    q = quantize_tensor(t, cfg, e.name)
                    sums = _error_sums_chunked(t, q)
                    report.add(e.name, sums, e.nbytes, q.nbytes)
                    del t
                    yield e.name, tensor_bytes(q.data)
                    yield scale_name(e.name), tensor_bytes(q.scale)
                    if q.zero is not None:
                        yield zero_name(e.name), tensor_bytes(q.zero)
                    advance(e.nbytes)

        write_stream(
            dst,
            plan,
            chunks(),
            aliases=reader.aliases,
            alias_meta=alias_meta(reader.manifest, reader.aliases),
            metadata=reader.manifest.metadata,
            fsync=fsync,
        )
    return report
