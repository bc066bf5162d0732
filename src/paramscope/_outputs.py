"""Running a model on example inputs and comparing two models' outputs.

One place for what ``shrink`` and ``factorize`` report as the output deviation (and what
``shrink``'s layer checks run): call a model with a tensor, a tuple / list of positional
arguments or a dict of keyword arguments, and find the tensor an output stands for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["call_model", "first_tensor", "output_deviation"]


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping, ``model(*inputs)`` for a tuple or list, else
    ``model(inputs)``.

    Args:
        model: the model.
        inputs: the example inputs.

    Returns:
        What the model returns.

    Example:
        >>> import torch
        >>> call_model(torch.nn.Identity(), (torch.ones(2),)).tolist()
        [1.0, 1.0]
    """
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def first_tensor(out: Any) -> torch.Tensor | None:
    """The tensor an output stands for: itself, its ``logits`` (transformers), else the first
    tensor found in its values or items, depth first; ``None`` when it holds none.

    Args:
        out: a model's output (or any nest of tuples, lists and mappings).

    Returns:
        The tensor, or ``None``.

    Example:
        >>> import torch
        >>> first_tensor(("text", {"h": torch.zeros(2)})).shape
        torch.Size([2])
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    values: Any = out.values() if isinstance(out, Mapping) else out
    if isinstance(values, (Sequence, type({}.values()))) and not isinstance(out, str):
        for v in values:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def output_deviation(
    old: torch.nn.Module, new: torch.nn.Module, inputs: Any
) -> dict[str, float] | None:
    """How far ``new``'s output is from ``old``'s on the same inputs.

    Both models run in eval mode without gradients; every module's training flag is put back
    afterwards.

    Args:
        old: the reference model.
        new: the changed model.
        inputs: example inputs (see :func:`call_model`).

    Returns:
        ``{"max_abs", "relative"}`` (``‖new − old‖ / ‖old‖`` in float64), or ``None`` when an
        output holds no tensor or the two differ in shape.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> output_deviation(a, b, torch.ones(1, 2))
        {'max_abs': 0.0, 'relative': 0.0}
    """
    import torch

    modes = [(m, m.training) for m in (*old.modules(), *new.modules())]
    try:
        old.eval()
        new.eval()
        with torch.no_grad():
            a = first_tensor(call_model(old, inputs))
            b = first_tensor(call_model(new, inputs))
    finally:
        for m, training in modes:
            m.training = training
    if a is None or b is None or a.shape != b.shape:
        return None
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    diff = b - a
    norm = float(torch.linalg.vector_norm(a))
    dn = float(torch.linalg.vector_norm(diff))
    return {
        "max_abs": float(diff.abs().max()) if diff.numel() else 0.0,
        "relative": dn / norm if norm else (0.0 if dn == 0.0 else math.inf),
    }
