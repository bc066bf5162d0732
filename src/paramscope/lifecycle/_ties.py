"""Ties on a live model: make two names one Parameter, give one back its own copy, find them.

Identity is object identity (never ``data_ptr``, which is 0 for every tensor on the meta
device), so all three work on meta models. Finding a name's owner and the ties of a module
(:func:`owner`, :func:`find_ties`) is :mod:`paramscope._modtree`'s, shared with counting;
they are re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import DTypeMismatchError, InvalidNameError, ShapeMismatchError
from .._modtree import find_ties, owner

if TYPE_CHECKING:
    import torch

__all__ = ["find_ties", "owner", "set_tensor", "tie", "untie"]


def set_tensor(model: torch.nn.Module, name: str, value: Any) -> None:
    """Register ``value`` under ``name`` (as a parameter or buffer, like the current one).

    Args:
        model: the root module.
        name: the dotted name.
        value: a ``Parameter`` for parameters, a tensor for buffers.
    """
    mod, local = owner(model, name)
    if local in mod._parameters:
        mod._parameters[local] = value
    else:
        mod._buffers[local] = value


def tie(model: torch.nn.Module, target: str, source: str) -> None:
    """Make ``target`` the same Parameter object as ``source`` (the GPT-2 LM-head tie).

    Gradients of the shared parameter are then the sum over both uses.

    Args:
        model: the root module.
        target: the name that will point at ``source``'s parameter.
        source: the name whose parameter is kept.

    Raises:
        MissingNameError: either name does not exist.
        ShapeMismatchError / DTypeMismatchError: the two differ in shape or dtype.

    Example:
        >>> import torch
        >>> m = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3),
        ...                          "head": torch.nn.Linear(3, 5, bias=False)})
        >>> tie(m, "head.weight", "emb.weight")
        >>> m["head"].weight is m["emb"].weight
        True
    """
    src_mod, src_local = owner(model, source)
    dst_mod, dst_local = owner(model, target)
    src = (src_mod._parameters | src_mod._buffers)[src_local]
    dst = (dst_mod._parameters | dst_mod._buffers)[dst_local]
    if tuple(src.shape) != tuple(dst.shape):
        raise ShapeMismatchError(
            f"tie {target!r} → {source!r}: shapes {tuple(dst.shape)} and {tuple(src.shape)}"
        )
    if src.dtype != dst.dtype:
        raise DTypeMismatchError(f"tie {target!r} → {source!r}: dtypes {dst.dtype} and {src.dtype}")
    set_tensor(model, target, src)


def untie(model: torch.nn.Module, name: str) -> None:
    """Give ``name`` its own copy of a tied parameter (values and ``requires_grad`` kept).

    Args:
        model: the root module.
        name: a name that shares its parameter with another name.

    Raises:
        InvalidNameError: ``name`` is not tied to anything, or it is tied because its whole
            module is one instance reached by several paths (untie the module instead).

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> tie(m, "1.weight", "0.weight"); untie(m, "1.weight")
        >>> m[0].weight is m[1].weight
        False
    """
    import torch

    if not any(name in g for g in find_ties(model)):
        raise InvalidNameError(f"untie: {name!r} is not tied to another name")
    mod, local = owner(model, name)
    paths = [p for p, m in model.named_modules(remove_duplicate=False) if m is mod]
    if len(paths) > 1:
        raise InvalidNameError(
            f"untie: {name!r} is shared because module {paths[1]!r} is the same instance as "
            f"{paths[0]!r}; replace that module with a copy (copy.deepcopy) instead"
        )
    if local in mod._parameters:
        p = mod._parameters[local]
        mod._parameters[local] = torch.nn.Parameter(
            p.detach().clone(), requires_grad=p.requires_grad
        )
    else:
        mod._buffers[local] = mod._buffers[local].clone()
