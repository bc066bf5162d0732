"""bind: run a model with external parameters, leaving the model's own untouched.

A thin, checked wrapper over ``torch.func.functional_call``: names are validated against the
model (a typo is an error with suggestions, not a silently ignored tensor), ties are honoured
(giving one name of a tied group feeds every use), and gradients flow to the external
tensors — which is what hypernetworks, meta-learning and ensembling over weights need.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ShapeMismatchError
from .._names import missing

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = ["BoundModel", "bind"]


class BoundModel:
    """A model paired with external parameters; calling it runs the model with them.

    Args:
        model: the module.
        params: name → tensor replacing the model's parameters/buffers of those names.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 1)
        >>> b = BoundModel(lin, {"weight": torch.ones(1, 2), "bias": torch.zeros(1)})
        >>> b(torch.tensor([[1.0, 2.0]])).item()
        3.0
    """

    def __init__(self, model: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> None:
        self.model = model
        self.params = dict(params)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``model(*args, **kwargs)`` with the bound tensors in place of its own."""
        from torch.func import functional_call

        return functional_call(
            self.model, self.params, args, kwargs, tie_weights=True, strict=False
        )

    def __repr__(self) -> str:
        return f"BoundModel({type(self.model).__name__}, {len(self.params)} tensors)"


def bind(
    model: torch.nn.Module, params: ParamDict | Mapping[str, torch.Tensor], *, partial: bool = True
) -> BoundModel:
    """Pair a model with external parameters (a ParamDict or a dict of tensors).

    Args:
        model: the module; its own parameters are not changed.
        params: replacement tensors by name; names a tie shares may be given once.
        partial: allow replacing only some parameters (the rest are the model's own);
            ``False`` requires every parameter (a tie counts once).

    Returns:
        A callable :class:`BoundModel`.

    Raises:
        MissingNameError: a name the model does not have (with suggestions), or, with
            ``partial=False``, a parameter not given.
        ShapeMismatchError: a tensor of another shape than the model's.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 1)
        >>> w = {"weight": torch.zeros(1, 3, requires_grad=True), "bias": torch.ones(1)}
        >>> out = bind(net, w)(torch.ones(2, 3))
        >>> out.sum().backward(); w["weight"].grad.tolist()
        [[2.0, 2.0, 2.0]]
    """
    from ._ties import find_ties

    given = dict(
        params.state_dict()
        if hasattr(params, "state_dict") and not hasattr(params, "named_parameters")
        else params
    )
    own = dict(model.named_parameters(remove_duplicate=False))
    own.update(model.named_buffers(remove_duplicate=False))
    for name, t in given.items():
        if name not in own:
            raise missing(name, own, what="parameter or buffer of the model")
        if tuple(t.shape) != tuple(own[name].shape):
            raise ShapeMismatchError(
                f"bind: {name!r} has shape {tuple(t.shape)}, the model expects "
                f"{tuple(own[name].shape)}"
            )
    if not partial:
        groups = {n: g for g in find_ties(model) for n in g}
        for name, _ in model.named_parameters(remove_duplicate=False):
            if name not in given and not any(g in given for g in groups.get(name, [])):
                raise missing(name, given, what="bound tensor for parameter")
    return BoundModel(model, given)
