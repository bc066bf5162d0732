"""The other way round from :func:`build`: a spec describing a model made of ``torch.nn`` layers.

Each layer's constructor arguments are read back from the attributes of the same name (as
``torch.nn`` stores them: ``Linear.in_features``, ``Conv2d.kernel_size``, ``BatchNorm2d.eps``
…); ``bias`` becomes whether the layer has one; arguments equal to their default are left out.
Containers become ``Sequential`` / ``ModuleList`` / ``ModuleDict`` objects. A layer that is not
a ``torch.nn`` class, or whose arguments cannot be read back, is refused by name: a spec is
exact or it is not written. Weights are not part of a spec (save them beside it).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from .._errors import TargetError

if TYPE_CHECKING:
    import torch

__all__ = ["model_spec"]

#: Constructor arguments that are not architecture: where the tensors live.
_SKIP = frozenset({"self", "device", "dtype", "_weight", "_freeze"})


def model_spec(model: torch.nn.Module) -> dict[str, Any]:
    """A build spec (JSON-able dict) of a model made of ``torch.nn`` layers and containers.

    Args:
        model: an ``nn.Sequential`` / ``nn.ModuleList`` / ``nn.ModuleDict`` tree of
            ``torch.nn`` layers (or one such layer).

    Returns:
        The spec: ``paramscope.build(spec)`` makes a model of the same structure, whose
        ``state_dict`` has the same names and shapes.

    Raises:
        TargetError: a module that is not a ``torch.nn`` class, or an argument that cannot be
            read back; the message names the module.

    Example:
        >>> import torch, paramscope
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
        ...                           torch.nn.Linear(3, 2, bias=False))
        >>> spec = model_spec(net)
        >>> spec["layers"][2]
        {'type': 'Linear', 'in_features': 3, 'out_features': 2, 'bias': False}
        >>> rebuilt = paramscope.build(spec)
        >>> [tuple(t.shape) for t in rebuilt.state_dict().values()]
        [(3, 4), (3,), (2, 3)]
    """
    return _spec(model, "")


def _spec(m: Any, path: str) -> dict[str, Any]:
    import torch

    where = path or "the model"
    cls = type(m)
    if cls in (torch.nn.Sequential, torch.nn.ModuleList):
        children = list(m.named_children())
        numbered = [n for n, _ in children] == [str(i) for i in range(len(children))]
        kind = cls.__name__
        if kind == "Sequential" and not numbered:
            return {
                "type": kind,
                "layers": {n: _spec(c, f"{path}.{n}".lstrip(".")) for n, c in children},
            }
        if not numbered:
            raise TargetError(f"model_spec: {where}: a {kind} with non-numbered children")
        return {
            "type": kind,
            "layers": [_spec(c, f"{path}.{n}".lstrip(".")) for n, c in children],
        }
    if cls is torch.nn.ModuleDict:
        return {
            "type": "ModuleDict",
            "children": {n: _spec(c, f"{path}.{n}".lstrip(".")) for n, c in m.named_children()},
        }
    if not cls.__module__.startswith("torch.nn.modules") or cls.__name__.startswith("_"):
        raise TargetError(
            f"model_spec: {where} is a {cls.__module__}.{cls.__name__}, not a torch.nn layer; "
            "a build spec names torch.nn classes only (save the weights, keep the code)"
        )
    if any(True for _ in m.children()):
        raise TargetError(
            f"model_spec: {where} ({cls.__name__}) holds submodules; only plain torch.nn "
            "layers and containers can be written as a spec"
        )
    out: dict[str, Any] = {"type": cls.__name__}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in _SKIP or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name == "bias" and isinstance(getattr(m, "bias", None), (torch.Tensor, type(None))):
            value: Any = getattr(m, "bias", None) is not None
        elif hasattr(m, name):
            value = getattr(m, name)
        elif p.default is not p.empty:
            continue  # not stored: the default is all a spec can say (said by its absence)
        else:
            raise TargetError(
                f"model_spec: {where} ({cls.__name__}): argument {name!r} is not stored on "
                "the module, so it cannot be read back"
            )
        value = _plain(value, where, name)
        if p.default is not p.empty and _plain_or_none(p.default) == value:
            continue
        out[name] = value
    return out


def _plain(value: Any, where: str, name: str) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v, where, name) for v in value]
    raise TargetError(
        f"model_spec: {where}: argument {name!r} is a {type(value).__name__}, which a JSON "
        "spec cannot hold"
    )


def _plain_or_none(value: Any) -> Any:
    try:
        return _plain(value, "", "")
    except TargetError:
        return object()
