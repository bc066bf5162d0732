"""Codecs: how :func:`paramscope.io.load` restores quantised entries, without knowing any.

io knows no compression (every arrow points down). A room that defines a quantised storage
convention registers a codec for it here, by name; ``load(..., dequantize=True)`` applies the
registered codecs in turn, each restoring the entries it recognises and carrying every other
entry over untouched. ``paramscope.compress`` registers paramscope's own int8 / int4
convention when it is imported (:mod:`paramscope.compress._codec`), and the public
:func:`paramscope.load` imports it first, so ``paramscope.load(path, dequantize=True)``
always has it. Codecs for other layouts (GPTQ, AWQ, bitsandbytes, GGUF types) register the
same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errors import ArgumentError

if TYPE_CHECKING:
    from .._paramdict import ParamDict

__all__ = ["Codec", "codecs", "dequantize", "register_codec"]

#: A codec: a ParamDict in, a ParamDict out with the entries it recognises restored to floats
#: (their auxiliary entries, scales and zero points, dropped) and every other entry as it was.
Codec = Callable[["ParamDict"], "ParamDict"]

_CODECS: dict[str, Codec] = {}


def register_codec(name: str, fn: Codec) -> None:
    """Register (or replace) the codec ``name``.

    Args:
        name: the storage convention, e.g. ``"paramscope"`` (int8 / int4 with scale entries).
        fn: the codec (see :data:`Codec`).

    Example:
        >>> register_codec("identity", lambda pd: pd)
        >>> "identity" in codecs()
        True
        >>> _ = _CODECS.pop("identity")
    """
    _CODECS[name] = fn


def codecs() -> dict[str, Codec]:
    """The registered codecs, by name, in registration order.

    Returns:
        A copy of the registry.

    Example:
        >>> isinstance(codecs(), dict)
        True
    """
    return dict(_CODECS)


def dequantize(pd: ParamDict) -> ParamDict:
    """``pd`` through every registered codec.

    Args:
        pd: a loaded ParamDict.

    Returns:
        The ParamDict with quantised entries restored.

    Raises:
        ArgumentError: no codec is registered.

    Example:
        >>> import tempfile, torch, paramscope
        >>> import paramscope.compress  # registers paramscope's int8 / int4 codec
        >>> w = torch.arange(8.0).reshape(2, 4)
        >>> qpd, _ = paramscope.quantize({"w": w})
        >>> path = paramscope.save(qpd, f"{tempfile.mkdtemp()}/model-int8.safetensors")
        >>> pd = paramscope.io.load(path)
        >>> sorted(pd), pd["w"].dtype
        (['w', 'w__qscale'], torch.int8)
        >>> back = dequantize(pd)
        >>> sorted(back), back["w"].dtype, bool((back["w"] - w).abs().max() < 0.03)
        (['w'], torch.float32, True)
    """
    if not _CODECS:
        raise ArgumentError(
            "load(dequantize=True): no codec is registered; use paramscope.load, or import "
            "paramscope.compress first (it registers paramscope's int8 / int4 codec)"
        )
    for fn in _CODECS.values():
        pd = fn(pd)
    return pd
