"""Building on the meta device without the cost of random initialisation.

On a meta tensor every ``normal_`` (``nn.init.normal_``, ``kaiming_normal_``, the default init
of ``nn.Embedding``, ...) is a no-op, yet in torch 2.x its first call imports
``torch._dynamo`` (1-3 s). :class:`SkipNormalOnMeta` returns meta tensors from those calls
untouched, so building even a 70B model on meta takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SkipNormalOnMeta"]


class SkipNormalOnMeta(TorchFunctionMode):
    """Inside this mode, ``*normal_`` initialisers leave meta tensors as they are.

    Example:
        >>> with torch.device("meta"), SkipNormalOnMeta():
        ...     emb = torch.nn.Embedding(10, 4)
        >>> emb.weight.is_meta
        True
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Skip ``func`` when it is an in-place normal initialiser of a meta tensor."""
        kwargs = kwargs or {}
        if getattr(func, "__name__", "").endswith("normal_"):
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)
