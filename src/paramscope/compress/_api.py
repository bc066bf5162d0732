"""The public prune / quantize entry points: a model or ParamDict in memory, or a file."""

from __future__ import annotations

import os
from typing import Any

from .._errors import ArgumentError, TargetError

__all__ = ["prune", "quantize"]


def _kind(target: Any) -> str:
    """What an in-memory target is, for a message: ``a torch module (Sequential)``."""
    if hasattr(target, "named_parameters") and hasattr(target, "state_dict"):
        return f"a torch module ({type(target).__name__})"
    return f"a {type(target).__name__}"


def _beside(path: str | os.PathLike[str], tag: str) -> str:
    """An output name beside a checkpoint: ``model.safetensors`` → ``model-int8.safetensors``."""
    p = os.fspath(path).rstrip("/\\")
    base, ext = os.path.splitext(p)
    return (
        f"{base}-{tag}.safetensors"
        if ext in (".safetensors", ".pt", ".bin", ".pth", ".npz")
        else f"{p}-{tag}.safetensors"
    )


def prune(
    target: Any,
    amount: float | None = None,
    *,
    dst: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Any:
    """Magnitude (or random) pruning with a sparsity report.

    On a model, a ParamDict or a dict of tensors it works in place (see
    :func:`paramscope.compress._prune.prune`); on a checkpoint path it streams into ``dst``
    (see :func:`paramscope.compress.prune_file`), recording nonzero counts in the header.

    Args:
        target: a module, ParamDict, dict of tensors, or a checkpoint path.
        amount: fraction of the selected elements to prune (``None`` for ``n:m``).
        dst: the output file, required for (and only for) a checkpoint path.
        **options: ``scope``, ``method``, ``structure``, ``n``, ``m``, ``select``, ``skip``,
            ``seed`` (and ``as_masks`` for modules, ``fsync`` for files).

    Returns:
        The :class:`~paramscope.compress.SparsityReport`.

    Raises:
        ArgumentError: a checkpoint path without ``dst``, or a bad option.
        TargetError: ``dst`` for an in-memory target, or a model TARGET (no values).

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(8, 8)
        >>> prune(lin, 0.5, scope="layer").total["sparsity"]
        0.5
    """
    if isinstance(target, (str, os.PathLike)):
        from .._target_kind import model_target_error

        err = model_target_error(target, "prune")
        if err is not None:
            raise err
        if dst is None:
            raise ArgumentError(
                f"prune: {os.fspath(target)!r} is a checkpoint, which is pruned into a new "
                f"file: pass dst= (e.g. dst={_beside(target, 'pruned')!r})"
            )
        from ._stream import prune_file

        return prune_file(target, dst, amount, **options)
    if dst is not None:
        raise TargetError(
            f"prune: dst={os.fspath(dst)!r} is where a pruned copy of a checkpoint file goes, "
            f"but the target is {_kind(target)}, which prune changes in place; omit dst= "
            "(then save it with paramscope.save), or pass a checkpoint path as the target"
        )
    from ._prune import prune as prune_

    return prune_(target, amount, **options)


def quantize(target: Any, *, dst: str | os.PathLike[str] | None = None, **options: Any) -> Any:
    """Weight quantisation (int8 / int4) with a per-tensor error report.

    In memory it returns ``(quantised ParamDict, QuantReport)`` (see
    :func:`paramscope.compress._quantize.quantize`); on a checkpoint path it streams into
    ``dst`` and returns the QuantReport (see :func:`paramscope.compress.quantize_file`).

    Args:
        target: a module, ParamDict, dict of tensors, or a checkpoint path.
        dst: the output file, required for (and only for) a checkpoint path.
        **options: ``bits``, ``scheme``, ``granularity``, ``group_size``, ``select``, ``skip``
            (and ``fsync`` for files).

    Returns:
        ``(ParamDict, QuantReport)`` in memory; the ``QuantReport`` for a file.

    Raises:
        ArgumentError: a checkpoint path without ``dst``, or a bad option.
        TargetError: ``dst`` for an in-memory target, or a model TARGET (no values).

    Example:
        >>> import torch
        >>> pd, report = quantize(torch.nn.Linear(64, 64), bits=8)
        >>> report.total["sqnr_db"] > 35
        True
    """
    if isinstance(target, (str, os.PathLike)):
        from .._target_kind import model_target_error

        err = model_target_error(target, "quantize")
        if err is not None:
            raise err
        if dst is None:
            raise ArgumentError(
                f"quantize: {os.fspath(target)!r} is a checkpoint, which is quantised into a "
                f"new file: pass dst= (e.g. dst={_beside(target, 'int8')!r})"
            )
        from ._stream import quantize_file

        return quantize_file(target, dst, **options)
    if dst is not None:
        raise TargetError(
            f"quantize: dst={os.fspath(dst)!r} is where a quantised copy of a checkpoint file "
            f"goes, but the target is {_kind(target)}; omit dst= to get (ParamDict, "
            f"QuantReport) back and write it with paramscope.save(pd, {os.fspath(dst)!r}), or "
            "pass a checkpoint path as the target"
        )
    from ._quantize import quantize as quantize_

    return quantize_(target, **options)
