"""Streaming a checkpoint tensor by tensor: bounded memory whatever the checkpoint's size.

Each stored tensor is read into fresh memory with one positioned read (not a memory map, whose
touched pages would count against the process until it ends), transformed, written and freed
before the next one is read; :func:`paramscope.io._safetensors.write_stream` keeps at most two
output buffers alive. Peak memory is therefore about twice the largest tensor (its input and
its output) plus a constant. Sources whose tensors have a byte location in the file
(safetensors, sharded folders, torch zip checkpoints) stream; legacy torch pickles and .npz
archives are loaded whole first (said in a note).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from .._errors import FormatError
from .._manifest import Entry, Manifest
from .._values import count_nonzero
from ._notes import left_note

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_OPEN", "SourceReader", "progress"]

#: Source files a :class:`SourceReader` keeps open at once (entries are read file by file, so
#: a few suffice); a checkpoint of thousands of shards stays far below ``ulimit -n``.
MAX_OPEN = 16


class SourceReader:
    """Reads the stored tensors of a checkpoint one at a time, in file order.

    Args:
        path: any checkpoint source.

    Example:
        >>> # with SourceReader("model.safetensors") as r:
        >>> #     for entry in r.entries: t = r.read(entry)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from .._targets import model_target_error
        from ..io import read_manifest

        err = model_target_error(path, "reading tensor values")
        if err is not None:
            raise err
        self.path = os.fspath(path)
        self.manifest: Manifest = read_manifest(path)
        stored = [e for e in self.manifest.values() if e.tie is None]
        self.streaming = all(e.location is not None for e in stored)
        key: Callable[[Entry], Any] = (
            (lambda e: (e.location.file, e.location.offset))  # type: ignore[union-attr]
            if self.streaming
            else (lambda e: 0)
        )
        self.entries: list[Entry] = sorted(stored, key=key)
        self.aliases = {e.name: e.tie for e in self.manifest.values() if e.tie is not None}
        self._files: OrderedDict[str, IO[bytes]] = OrderedDict()  # most recently used last
        self._whole: Any = None
        self.notes: list[str] = []
        if not self.streaming:
            self.notes.append(
                f"{self.manifest.format.value} source without byte locations: loaded whole, "
                "memory not bounded by the largest tensor"
            )

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the files opened for reading."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._whole = None

    def _file(self, path: str) -> IO[bytes]:
        """The open file ``path``, opened on first use; at most :data:`MAX_OPEN` stay open."""
        f = self._files.get(path)
        if f is not None:
            self._files.move_to_end(path)
            return f
        while len(self._files) >= MAX_OPEN:  # a source of thousands of shards: close the oldest
            self._files.popitem(last=False)[1].close()
        f = self._files[path] = open(path, "rb")  # noqa: SIM115 - closed in close()
        return f

    @property
    def total_bytes(self) -> int:
        """Bytes of all stored tensors."""
        return sum(e.nbytes for e in self.entries)

    def read(self, e: Entry) -> torch.Tensor:
        """The tensor of one stored entry, in fresh memory the caller owns.

        Args:
            e: a stored entry of :attr:`entries`.

        Returns:
            The tensor (its storage dtype and shape).

        Raises:
            FormatError: the file ends before the entry's bytes.
        """
        import torch

        from ..io._safetensors import _torch_shape

        if not self.streaming:
            if self._whole is None:
                from ..io import load

                self._whole = load(self.path)
            return self._whole[e.name]
        loc = e.location
        assert loc is not None
        f = self._file(loc.file)
        buf = torch.empty(loc.length, dtype=torch.uint8)
        if loc.length:
            try:
                f.seek(loc.offset)
                got = f.readinto(memoryview(buf.numpy()))
            except OSError as exc:  # EIO and the like name no file: name the source
                if exc.filename is None and exc.errno is not None:
                    raise OSError(exc.errno, exc.strerror, loc.file) from exc
                raise
            if got != loc.length:
                raise FormatError(
                    loc.file,
                    f"entry {e.name!r}: expected {loc.length} bytes at "
                    f"offset {loc.offset}, the file ends after {got}",
                )
        shape = _torch_shape(e.dtype, e.shape, e.name)
        return buf.view(e.dtype.to_torch()).reshape(shape)


@contextlib.contextmanager
def progress(
    total: int, label: str, *, enabled: bool | None = None
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for work that lasts over a second.

    Silent when ``enabled`` is False, or (by default) when stderr is not a terminal.

    Args:
        total: units of work (bytes).
        label: what is being done.
        enabled: force on or off; ``None`` shows it only on a terminal.

    Yields:
        ``advance(n)``.
    """
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.monotonic()
    bar: Any = None
    task: Any = None
    done = 0

    def advance(n: int) -> None:
        nonlocal bar, task, done
        done += n
        if bar is None and time.monotonic() - start > 1.0:
            from rich.console import Console

            bar = Progress(
                TextColumn(label),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            bar.start()
            task = bar.add_task(label, total=total, completed=done)
        elif bar is not None:
            bar.update(task, completed=done)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.stop()


def _alias_meta(reader: SourceReader) -> dict[str, dict[str, Any]]:
    out = {}
    for alias in reader.aliases:
        e = reader.manifest[alias]
        out[alias] = {
            "role": e.role.value,
            "trainable": e.trainable,
            "tags": list(e.tags),
            "extra": dict(e.extra),
        }
    return out


#: The metadata entries without tags or extra share (one read-only dict per role/trainable,
#: not one per entry: a plan of a million entries stays small).
_PLAIN_META: dict[tuple[str, bool], dict[str, Any]] = {}


def _meta_of(e: Entry, **changes: Any) -> dict[str, Any]:
    if not changes and not e.tags and (not e.extra or set(e.extra) == {"nonzero"}):
        key = (e.role.value, e.trainable)
        shared = _PLAIN_META.get(key)
        if shared is None:
            from .._manifest import FrozenDict

            shared = _PLAIN_META[key] = FrozenDict(role=key[0], trainable=key[1])
        return shared
    meta: dict[str, Any] = {"role": e.role.value, "trainable": e.trainable}
    if e.tags:
        meta["tags"] = list(e.tags)
    extra = {k: v for k, v in dict(e.extra).items() if k != "nonzero"}
    if extra:
        meta["extra"] = extra
    meta.update(changes)
    return meta


def _bytes_of(t: torch.Tensor) -> Any:
    from ..io._safetensors import _as_bytes

    return _as_bytes("", t)[2]


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
        >>> # prune_file("model.safetensors", "pruned.safetensors", 0.5)
    """
    import torch

    from ..io._safetensors import Planned, write_stream
    from . import _prune as P

    structure_ = P._structure(structure)
    n, m = P._check_nm(n, m) if structure_ is P.Structure.NM else (n, m)
    a = P._check_amount(amount, structure_, n, m)
    scope_ = P._option(P.Scope, "scope", scope)
    method_ = P._option(P.Method, "method", method)
    if structure_ in (P.Structure.ROWS, P.Structure.CHANNELS) and scope_ is P.Scope.GLOBAL:
        raise P.ParamscopeError(
            f"structure {structure!r}: pruning whole slices needs "
            "scope='layer' (global ranking of rows is ambiguous)"
        )
    report = P.SparsityReport()
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
            Planned(e.name, e.dtype, list(e.shape), e.nbytes, _meta_of(e)) for e in reader.entries
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
                    yield e.name, _bytes_of(t)
                    advance(e.nbytes)

        write_stream(
            dst,
            plan,
            chunks(),
            aliases=reader.aliases,
            alias_meta=_alias_meta(reader),
            metadata=reader.manifest.metadata,
            fsync=fsync,
            late_meta=late,
            reserve=40 * len(chosen) + 64,
        )
    return report


def _quant_plan(e: Entry, cfg: Any) -> list[Any]:
    """The entries a quantised tensor becomes, known before its values are read."""
    from .._dtypes import DType
    from ..io._safetensors import Planned
    from . import _quantize as Q

    shape = tuple(e.shape)
    eff = Q._effective(cfg, shape, e.name)
    if cfg.bits == 8:
        data_shape, data_dtype = list(shape), DType.I8 if cfg.symmetric else DType.U8
    else:
        last = shape[-1] if shape else 1
        data_shape, data_dtype = [*shape[:-1], (last + 1) // 2], DType.U8
    sshape = list(Q._scale_shape(eff, shape))
    qmeta = {
        "bits": eff.bits,
        "scheme": eff.scheme,
        "granularity": eff.granularity,
        "shape": list(shape),
        "dtype": e.dtype.value,
        "scale": e.name + Q.SCALE_SUFFIX,
        "zero": None if cfg.symmetric else e.name + Q.ZERO_SUFFIX,
        "packed": cfg.bits == 4,
    }
    base = _meta_of(e, trainable=False)
    base["extra"] = {**base.get("extra", {}), "quant": qmeta}
    aux = {"role": "buffer", "trainable": False, "tags": [Q.AUX_TAG]}

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
    from . import _quantize as Q

    if t.dim() <= 1 or t.shape[0] <= 1:
        return Q.error_sums(t, Q.dequantize_tensor(q))
    per_row = max(1, t.numel() // t.shape[0])
    step = rows_per_chunk or max(1, (4 << 20) // per_row)
    total = Q.ErrorSums()
    for i in range(0, t.shape[0], step):
        j = min(i + step, t.shape[0])
        scale = q.scale[i:j] if q.scale.dim() else q.scale
        zero = None if q.zero is None else (q.zero[i:j] if q.zero.dim() else q.zero)
        part = Q.QuantizedTensor(q.data[i:j], scale, zero, (j - i, *q.shape[1:]), q.dtype, q.cfg)
        total = total + Q.error_sums(t[i:j], Q.dequantize_tensor(part))
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
    The output follows :mod:`paramscope.compress._quantize`'s storage convention, so
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
        The :class:`~paramscope.compress._quantize.QuantReport`.

    Example:
        >>> # quantize_file("model.safetensors", "model-int8.safetensors", bits=8)
    """
    from ..io._safetensors import Planned, write_stream
    from . import _quantize as Q

    cfg = Q.QuantConfig(bits, scheme, group_size if group_size is not None else granularity)
    report = Q.QuantReport()
    with SourceReader(src) as reader:
        ruled = [
            e
            for e in reader.entries
            if Q.should_quantize(e.name, e.shape, e.dtype.is_float, e.role.value, select, skip)
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
                plan.append(Planned(e.name, e.dtype, list(e.shape), e.nbytes, _meta_of(e)))

        def chunks() -> Iterator[tuple[str, Any]]:
            with progress(reader.total_bytes, "quantize", enabled=show_progress) as advance:
                for e in reader.entries:
                    t = reader.read(e)
                    if e.name not in chosen:
                        yield e.name, _bytes_of(t)
                        advance(e.nbytes)
                        continue
                    q = Q.quantize_tensor(t, cfg, e.name)
                    sums = _error_sums_chunked(t, q)
                    report.add(e.name, sums, e.nbytes, q.nbytes)
                    del t
                    yield e.name, _bytes_of(q.data)
                    yield e.name + Q.SCALE_SUFFIX, _bytes_of(q.scale)
                    if q.zero is not None:
                        yield e.name + Q.ZERO_SUFFIX, _bytes_of(q.zero)
                    advance(e.nbytes)

        write_stream(
            dst,
            plan,
            chunks(),
            aliases=reader.aliases,
            alias_meta=_alias_meta(reader),
            metadata=reader.manifest.metadata,
            fsync=fsync,
        )
    return report
