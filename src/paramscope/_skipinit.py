"""Skipping ``torch.nn.init`` for chosen tensors: one helper for every room that builds models.

Building on the meta device (the zoo, specs, inferred models) skips initialisers on meta
tensors, whose first ``normal_`` would import ``torch._dynamo`` for nothing; rebuilding a
module only for its buffers (:mod:`paramscope.lifecycle._buffers`) skips them on Parameters,
whose values are never used. torch is imported when the context is entered, not before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["INIT_FUNCTIONS", "skip_init"]

#: The in-place initialisers of ``torch.nn.init`` that :func:`skip_init` wraps.
INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


@contextlib.contextmanager
def skip_init(skip: Callable[[Any], bool]) -> Iterator[None]:
    """Make ``torch.nn.init``'s initialisers return a tensor untouched when ``skip(tensor)``.

    Only calls made through ``torch.nn.init`` are seen (what ``nn.Linear``, ``nn.Conv*``,
    ``nn.Embedding`` and most model code use). Not thread-safe: it swaps module attributes
    while active.

    Args:
        skip: called with the initialiser's first argument; True leaves it as it is.

    Example:
        >>> import torch
        >>> with skip_init(lambda t: isinstance(t, torch.nn.Parameter)):
        ...     lin = torch.nn.Linear(2, 2)  # weight and bias keep whatever memory held
        >>> lin.weight.shape
        torch.Size([2, 2])
    """
    import torch.nn.init as init

    saved = {name: getattr(init, name) for name in INIT_FUNCTIONS if hasattr(init, name)}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def maybe(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            return tensor if skip(tensor) else fn(tensor, *args, **kwargs)

        return maybe

    for name, fn in saved.items():
        setattr(init, name, wrap(fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)
