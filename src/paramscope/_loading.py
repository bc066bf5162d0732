"""The public :func:`load`: io's loader with every compression codec registered.

io knows no compression (:mod:`paramscope.io._codecs`): ``compress`` registers the codec of
paramscope's quantised storage when it is imported. This thin wrapper, a floor above both,
imports it when ``dequantize=True`` asks for it, so ``paramscope.load(path, dequantize=True)``
works whatever was imported before.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._names import Pattern
    from ._paramdict import ParamDict

__all__ = ["load"]


def load(
    path: str | os.PathLike[str], *, select: Pattern | None = None, dequantize: bool = False
) -> ParamDict:
    """Load a checkpoint as a :class:`ParamDict`, lazily, only the selected entries.

    safetensors files (single or sharded) are memory-mapped copy-on-write: nothing is read
    from disk until a tensor is used, and changing a tensor never changes the file. Ties come
    back as the same tensor object; roles, trainable flags, tags and extra come back.

    Args:
        path: any checkpoint :func:`paramscope.read_manifest` accepts (not a model TARGET:
            it has no values).
        select: a glob / ``re:`` pattern (or list) of names to load; ``None`` loads all.
        dequantize: restore float tensors from entries quantised by
            :func:`paramscope.quantize` (their scales and zero points are read along with
            them and dropped from the result).

    Returns:
        The ParamDict (``.metadata`` holds the file's free metadata).

    Raises:
        Everything :func:`paramscope.io.read_manifest` raises; TargetError for a model
        TARGET.

    Example:
        >>> import tempfile, torch, paramscope
        >>> sd = {"encoder.w": torch.ones(2), "encoder.b": torch.zeros(2), "head.w": torch.ones(3)}
        >>> path = paramscope.save(sd, f"{tempfile.mkdtemp()}/model.safetensors")
        >>> pd = paramscope.load(path, select="encoder.*")
        >>> sorted(pd), pd["encoder.w"].tolist()
        (['encoder.b', 'encoder.w'], [1.0, 1.0])
    """
    from . import io
    from ._target_kind import model_target_error

    err = model_target_error(path, "load")  # else read_manifest's "this operation needs…"
    if err is not None:
        raise err
    if dequantize:
        from . import compress  # noqa: F401 - registers paramscope's codec with io

    return io.load(path, select=select, dequantize=dequantize)
