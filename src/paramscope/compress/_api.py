"""The public prune / quantize entry points: a model or ParamDict in memory, or a file."""

from __future__ import annotations

import os
from typing import Any

from .._errors import ParamscopeError

__all__ = ["prune", "quantize"]


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
        ParamscopeError: a path without ``dst``, or ``dst`` for an in-memory target.

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
            raise ParamscopeError(f"{target}: pruning a checkpoint writes a new file: give dst=")
        from ._stream import prune_file

        return prune_file(target, dst, amount, **options)
    if dst is not None:
        raise ParamscopeError("prune: dst= is for checkpoint paths; models are pruned in place")
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
        ParamscopeError: a path without ``dst``, or ``dst`` for an in-memory target.

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
            raise ParamscopeError(f"{target}: quantising a checkpoint writes a new file: give dst=")
        from ._stream import quantize_file

        return quantize_file(target, dst, **options)
    if dst is not None:
        raise ParamscopeError("quantize: dst= is for checkpoint paths")
    from ._quantize import quantize as quantize_

    return quantize_(target, **options)
