"""Layer classes a spec may name: :func:`nn_class`, and :class:`SpecModule`, the plain container.

:func:`nn_class` looks a ``"type"`` up in ``torch.nn`` and nowhere else (a spec is data: reading
one never imports what its author chose). ``"Module"`` names :class:`SpecModule`, a container
whose ``forward`` runs the children listed in its spec; it is defined on first use, so
importing this module never imports torch.

Example:
    >>> nn_class("nn.Conv2d").__name__
    'Conv2d'
    >>> nn_class("Module").__name__
    'SpecModule'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._spec_errors import SpecError, _hint, _show

if TYPE_CHECKING:
    import torch

__all__ = [
    "SpecModule",  # noqa: F822 - defined on first use by the module __getattr__
    "nn_class",
]


_CONTAINERS: dict[str, tuple[str, ...]] = {
    "Sequential": ("layers",),
    "ModuleList": ("layers",),
    "ModuleDict": ("children",),
    "Module": ("children", "forward"),
}


def _is_layer_class(obj: Any) -> bool:
    import torch

    return (
        isinstance(obj, type)
        and issubclass(obj, torch.nn.Module)
        and obj.__module__.startswith("torch.nn.modules.")
        and not obj.__name__.startswith("_")
    )


def _layer_names() -> list[str]:
    import torch

    names = {n for n in dir(torch.nn) if _is_layer_class(getattr(torch.nn, n, None))}
    return sorted(names | set(_CONTAINERS))


def nn_class(name: object, path: str = "type") -> type[torch.nn.Module]:
    """The ``torch.nn`` layer class called ``name``; never anything outside ``torch.nn``.

    Args:
        name: a class name such as ``"Linear"`` (``"nn.Linear"`` / ``"torch.nn.Linear"`` too).
        path: where the name stands in the spec, for the error message.

    Returns:
        The class.

    Raises:
        SpecError: not a string, an import path, or no such layer class (with suggestions).

    Example:
        >>> nn_class("Linear").__name__
        'Linear'
    """
    import torch

    if not isinstance(name, str) or not name:
        raise SpecError(path, f"expected a torch.nn class name, got {_show(name)}")
    short = name
    for prefix in ("torch.nn.", "nn."):
        if short.startswith(prefix):
            short = short[len(prefix) :]
            break
    if "." in short:
        raise SpecError(
            path,
            f'"{name}" is an import path; a spec may only name torch.nn classes (e.g. "Linear"),'
            " so that reading a spec never imports or runs other code",
        )
    if short == "Module":
        return _spec_module_class()
    cls = getattr(torch.nn, short, None)
    if not _is_layer_class(cls):
        raise SpecError(path, f'unknown layer type "{name}"{_hint(short, _layer_names())}')
    return cls  # type: ignore[no-any-return]


# -------------------------------------------------------------------------- SpecModule


_SPEC_MODULE: type | None = None


def _spec_module_class() -> type[torch.nn.Module]:
    """Define :class:`SpecModule` on first use, so importing this module never imports torch."""
    global _SPEC_MODULE
    if _SPEC_MODULE is None:
        import torch

        class SpecModule(torch.nn.Module):
            """A plain container built from ``{"type": "Module", "children": {...}}``.

            Args:
                children: child name → module, set as attributes in this order.
                forward: child names to run in sequence; ``None``: calling raises.

            Example:
                >>> import torch
                >>> from paramscope.building import SpecModule
                >>> m = SpecModule({"a": torch.nn.Linear(2, 3)}, forward=["a"])
                >>> m(torch.zeros(1, 2)).shape
                torch.Size([1, 3])
            """

            def __init__(
                self,
                children: Mapping[str, torch.nn.Module] | None = None,
                forward: Sequence[str] | None = None,
            ) -> None:
                super().__init__()
                self.forward_order: tuple[str, ...] | None = (
                    None if forward is None else tuple(forward)
                )
                for child_name, child in (children or {}).items():
                    self.add_module(child_name, child)

            def forward(self, x: Any) -> Any:
                """Run the children named in ``forward_order`` in sequence."""
                if self.forward_order is None:
                    raise SpecError(
                        "forward",
                        f"this Module (children {list(self._modules)}) has no forward order; "
                        'add "forward": [child names] to its spec to make it callable',
                    )
                for child_name in self.forward_order:
                    x = self._modules[child_name](x)  # type: ignore[misc]
                return x

            def extra_repr(self) -> str:
                order = None if self.forward_order is None else list(self.forward_order)
                return f"forward={order}"

        SpecModule.__module__ = __name__
        SpecModule.__qualname__ = "SpecModule"
        _SPEC_MODULE = SpecModule
    return _SPEC_MODULE


def __getattr__(name: str) -> Any:
    if name == "SpecModule":
        return _spec_module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
