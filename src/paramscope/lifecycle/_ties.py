"""Ties on a live model: make two names one Parameter, give one back its own copy, find them.

Identity is object identity (never ``data_ptr``, which is 0 for every tensor on the meta
device), so all three work on meta models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import DTypeMismatchError, InvalidNameError, ShapeMismatchError
from .._names import missing

if TYPE_CHECKING:
    import torch

__all__ = ["find_ties", "owner", "set_tensor", "tie", "untie"]


def owner(model: torch.nn.Module, name: str) -> tuple[Any, str]:
    """The module that registers ``name`` and the local attribute name.

    Args:
        model: the root module.
        name: a dotted parameter or buffer name.

    Returns:
        ``(module, local name)``.

    Raises:
        MissingNameError: no parameter or buffer of that name.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> owner(m, "0.weight")[1]
        'weight'
    """
    prefix, _, local = name.rpartition(".")
    try:
        mod = model.get_submodule(prefix) if prefix else model
    except AttributeError:
        mod = None
    if mod is None or (local not in mod._parameters and local not in mod._buffers):
        names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
        names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
        raise missing(name, names, what="parameter or buffer")
    return mod, local


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


def find_ties(model: torch.nn.Module) -> list[list[str]]:
    """Groups of names that reach the same parameter or buffer object, first path first.

    Args:
        model: any module (meta included).

    Returns:
        One list per tie group.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(3, 3)
        >>> find_ties(torch.nn.Sequential(lin, lin))
        [['0.weight', '1.weight'], ['0.bias', '1.bias']]
    """
    groups: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        pre = f"{mod_name}." if mod_name else ""
        for table in (mod._parameters, mod._buffers):
            for local, t in table.items():
                if t is not None:
                    group = groups.setdefault(id(t), [])
                    if pre + local not in group:
                        group.append(pre + local)
    return [g for g in groups.values() if len(g) > 1]


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
