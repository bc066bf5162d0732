"""Pruning and quantising a checkpoint into a new file, tensor by tensor (bounded memory).

Both stand on io: :meth:`~paramscope.io._reader.SourceReader.stream` reads each stored tensor
into fresh memory with one positioned read, in a thread that reads ahead within a byte budget,
and :func:`~paramscope.io._writer.write_stream` writes it in another thread (keeping at most
two large output buffers alive) while the next one is computed. Peak memory is about twice
the largest tensor (its input and its output) plus a constant. Sources
whose tensors have a byte location (safetensors, sharded folders, torch zip checkpoints)
stream; legacy torch pickles and .npz archives are loaded whole first (said in a note).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from .._manifest import Entry
from .._progress import progress
from .._values import count_nonzero
from ..io._reader import SourceReader
from ..io._writer import Planned, alias_meta, plan_meta, tensor_bytes, write_stream
from ._notes import left_note

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

    Global magnitude pruning finds its exact threshold before it writes: for float32, float16
    and bfloat16 sources stored raw from a sample and one streaming pass over the stored bits
    (no torch; see :mod:`paramscope.compress._select`), otherwise in a few streaming passes
    through torch (:func:`paramscope.compress._prune.global_threshold`). Every pruned
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
    from . import _prune as P
    from . import _select as S

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
        plan = [
            Planned(e.name, e.dtype, list(e.shape), e.nbytes, plan_meta(e)) for e in reader.entries
        ]
        extra_of = {p.name: p.meta.get("extra", {}) for p in plan}
        late: dict[str, dict[str, Any]] = {}
        largest = max((e.nbytes for e in reader.entries), default=0)

        def done(e: Entry, nonzero: int) -> None:
            late[e.name] = {"extra": {**extra_of[e.name], "nonzero": nonzero}}
            report.add(e.name, (e.numel, e.numel - nonzero))

        # Magnitude pruning of float32 / float16 / bfloat16 stored raw: the numpy selection of
        # _select on the stored bytes (one exact pass for a global cut, no torch at all).
        raw = (
            reader.raw_ok
            and structure_ is None
            and method_ is P.Method.L1
            and all(e.dtype.value in S.KINDS for e in targets)
        )
        if raw:
            chunks = _prune_raw(reader, targets, a, scope_ is P.Scope.GLOBAL, largest, done)
        else:
            chunks = _prune_tensors(
                reader, targets, a, structure, scope_, method_, n, m, seed, done
            )
        write_stream(
            dst,
            plan,
            _progressed(chunks, reader, show_progress),
            aliases=reader.aliases,
            alias_meta=alias_meta(reader.manifest, reader.aliases),
            metadata=reader.manifest.metadata,
            fsync=fsync,
            late_meta=late,
            reserve=40 * len(chosen) + 64,
        )
    return report


def _progressed(
    chunks: Iterator[tuple[Entry, Any]], reader: SourceReader, show: bool | None
) -> Iterator[tuple[str, Any]]:
    """``(name, buffer)`` for the writer, with the progress bar advanced per entry."""
    with progress(reader.total_bytes, "prune", enabled=show) as advance:
        for e, buf in chunks:
            yield e.name, buf
            del buf  # the writer alone holds it now
            advance(e.nbytes)


def _prune_raw(
    reader: SourceReader,
    targets: list[Entry],
    amount: float,
    whole: bool,
    largest: int,
    done: Callable[[Entry, int], None],
) -> Iterator[tuple[Entry, Any]]:
    """The entries' stored bytes, the targets pruned in place by magnitude (numpy only).

    Every cut is found before anything is written: with ``whole`` one over all targets (a
    sample, then one pass; see :mod:`._select`), else one per target (a sample of it and one
    pass over it), both over the mapped file where it can be (:meth:`SourceReader.scan_raw`:
    no copies). The write pass then only zeroes what each cut says.
    """
    from . import _select as S

    chosen = {e.name for e in targets}
    cuts: dict[str, list[int]] = {}  # name → [key, ties still to take]; one shared if whole
    if whole and targets:
        k = round(amount * sum(e.numel for e in targets))
        if k:

            def sampler(e: Entry) -> Callable[[int, int], Any]:
                size = e.dtype.bits // 8
                return lambda s, c: S.typed(
                    reader.read_raw_part(e, s * size, c * size), e.dtype.value
                )

            def scan() -> Iterator[tuple[str, Any]]:
                for e, buf in reader.scan_raw(targets):  # mapped where it can: no copies
                    yield e.name, S.typed(buf, e.dtype.value, e.numel)

            parts = [S.Part(e.name, e.numel, sampler(e)) for e in targets]
            shared = list(S.kth_key(parts, k, scan))
            cuts = dict.fromkeys(chosen, shared)
    elif targets:
        for e, buf in reader.scan_raw(targets):
            k = round(amount * e.numel)
            if k:
                arr = S.typed(buf, e.dtype.value, e.numel)
                part = S.Part(e.name, e.numel, lambda s, c, arr=arr: arr[s : s + c])
                cuts[e.name] = list(S.kth_key([part], k, lambda n=e.name, a=arr: iter([(n, a)])))
                del arr
            del buf
    for e, buf in reader.stream(budget=2 * largest, raw=True):
        if e.name in chosen:
            arr = S.typed(buf, e.dtype.value, e.numel)
            cut = cuts.get(e.name, [0, 0])  # (0, 0): nothing to prune, the nonzeros counted
            nonzero, used = S.prune_below(arr, cut[0], cut[1])
            cut[1] -= used
            del arr
            done(e, nonzero)
        yield e, buf
        del buf


def _prune_tensors(
    reader: SourceReader,
    targets: list[Entry],
    a: float,
    structure: str | None,
    scope_: Any,
    method_: Any,
    n: int,
    m: int,
    seed: int | None,
    done: Callable[[Entry, int], None],
) -> Iterator[tuple[Entry, Any]]:
    """The entries as bytes, the targets pruned through torch (random, structured, or a
    stored type the numpy path does not take)."""
    import torch

    from . import _prune as P

    structure_ = P._structure(structure)
    chosen = {e.name for e in targets}
    thr = ties = None
    counts: dict[str, int] = {}
    if structure_ is None and scope_ is P.Scope.GLOBAL and targets:
        total = sum(e.numel for e in targets)
        if method_ is P.Method.L1:
            thr, ties = P.global_threshold(  # map holds no tensor between two reads
                lambda: map(itemgetter(1), reader.stream(targets)), a, total
            )
        else:
            counts = dict(
                zip(
                    [e.name for e in targets],
                    P.random_counts([e.numel for e in targets], a, seed),
                    strict=True,
                )
            )
    gen = torch.Generator().manual_seed(seed if seed is not None else 0)
    for e, t in reader.stream():
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
            t.masked_fill_(torch.logical_not(keep, out=keep), 0)  # no 2nd mask
            del keep
            done(e, count_nonzero(t))
        yield e, tensor_bytes(t)
        del t


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


#: dtypes the streaming quantiser reads as raw bytes (numpy kernel; bf16 as its uint16 bits)
_RAW_KINDS = {"F32": "f32", "F64": "f64", "F16": "f16", "BF16": "bf16"}


def _nbytes(a: Any) -> int:
    """Bytes of a numpy array or a torch tensor."""
    n = getattr(a, "nbytes", None)
    return int(n) if isinstance(n, int) else a.numel() * a.element_size()


def _quantize_raw(buf: Any, e: Entry, cfg: Any) -> tuple[Any, Any, Any, Any]:
    """Quantise one entry from its stored bytes with the numpy kernel (no torch).

    Returns:
        ``(data, scale, zero or None, ErrorSums)`` as numpy arrays in storage form, the same
        bytes :func:`~paramscope.compress._qkernels.quantize_tensor` gives.
    """
    import numpy as np

    from ._qkernels import (
        NP_DTYPES,
        _effective,
        _rows,
        _scale_shape,
        empty_array,
        pack_int4_array,
        quantize_array,
    )

    kind = _RAW_KINDS[e.dtype.value]
    shape = tuple(int(d) for d in e.shape)
    eff = _effective(cfg, shape, e.name)
    numel = 1
    for d in shape:
        numel *= d
    rows, length = _rows(eff, shape, numel)
    x = np.frombuffer(buf, dtype=NP_DTYPES[kind], count=numel).reshape(rows, length)
    signed8 = eff.bits == 8 and eff.symmetric
    out = empty_array(numel, "int8" if signed8 else "uint8").reshape(rows, length)
    scale, zero, sums = quantize_array(x, eff, out, e.name, kind=kind, errors=True)
    del x
    data = out.reshape(shape)
    if eff.bits == 4:
        data = pack_int4_array(data)
    sshape = _scale_shape(eff, shape)
    return (
        data,
        scale.reshape(sshape),
        None if zero is None else zero.astype(np.uint8).reshape(sshape),
        sums,
    )


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

    Peak memory is about twice the largest tensor plus a constant. Reading (a thread reading
    ahead within a byte budget), quantising (all cores, the error sums made in the same pass)
    and writing (a thread, hashing in another) overlap; the output is the same bytes as one
    tensor at a time would give.
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
    from ._qkernels import QuantConfig, quantize_with_errors
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

        # Read ahead while a tensor is quantised, within a budget over the read buffers
        # alive: the quantised outputs (a quarter of fp32 inputs in int8) of the tensor at
        # hand and of the one being written come on top, so that all together stay within
        # about twice the largest tensor.
        largest = max((e.nbytes for e in reader.entries), default=0)
        largest_out = max((p.nbytes for p in plan), default=0)
        budget = max(0, 2 * largest - 2 * largest_out)

        # float32/64, float16 and bfloat16 sources are quantised from their raw bytes by the
        # numpy kernel: no torch at all (its import is a second of start-up).
        raw = reader.raw_ok and all(
            e.dtype.value in _RAW_KINDS for e in reader.entries if e.name in chosen
        )

        def chunks() -> Iterator[tuple[str, Any]]:
            with progress(reader.total_bytes, "quantize", enabled=show_progress) as advance:
                for e, t in reader.stream(budget=budget, raw=raw):
                    if e.name not in chosen:
                        yield e.name, t if raw else tensor_bytes(t)
                        del t
                        advance(e.nbytes)
                        continue
                    if raw:
                        data, scale, zero, sums = _quantize_raw(t, e, cfg)
                    else:
                        q, sums = quantize_with_errors(t, cfg, e.name)
                        data, scale, zero = q.data, q.scale, q.zero
                    del t  # the read buffer goes: the reader may fill another
                    nbytes = sum(_nbytes(a) for a in (data, scale, zero) if a is not None)
                    report.add(e.name, sums, e.nbytes, nbytes)
                    yield e.name, data if raw else tensor_bytes(data)
                    del data
                    yield scale_name(e.name), scale if raw else tensor_bytes(scale)
                    if zero is not None:
                        yield zero_name(e.name), zero if raw else tensor_bytes(zero)
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
