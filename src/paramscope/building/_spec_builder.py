"""The builder: layer specs into modules (containers, repeats, refs and leaves).

:class:`_Builder` walks a spec's root layer: a container (``Sequential``, ``ModuleList``,
``ModuleDict``, ``Module``) builds its children, ``{"repeat": n, ...}`` expands into fresh
copies, ``{"ref": name}`` is the instance named earlier, and a leaf's arguments (``args``,
``kwargs`` or inline keys; JSON arrays as tuples, dtype names as ``torch.dtype``, layer
objects built first) are type-checked against its constructor before it is called.

Example:
    >>> b = _Builder()
    >>> model = b.node({"type": "Sequential", "layers": [
    ...     {"type": "Linear", "args": [2, 3], "name": "fc"}, {"ref": "fc"}]}, "")
    >>> model[0] is model[1], list(b.named)
    (True, ['fc'])
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._spec_errors import SpecError, _hint, _join, _show
from ._spec_module import _CONTAINERS, _spec_module_class, nn_class
from ._spec_types import _check_call

if TYPE_CHECKING:
    import torch


_STRUCT_KEYS = ("layers", "children", "forward", "repeat", "layer", "ref")


_LEAF_KEYS = ("type", "name", "args", "kwargs")


def _convert(value: Any, name: str, path: str) -> Any:
    """JSON arrays → tuples, ``dtype`` strings → ``torch.dtype``."""
    import torch

    if name == "dtype" and isinstance(value, str):
        dtype = getattr(torch, value.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            known = [n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)]
            raise SpecError(path, f'unknown dtype "{value}"{_hint(value, known)}')
        return dtype
    return value


class _Builder:
    """Turns layer specs into modules, keeping the names defined for ``ref``."""

    def __init__(self) -> None:
        self.named: dict[str, tuple[torch.nn.Module, str]] = {}
        self.repeat_depth = 0

    def node(self, spec: Any, path: str, extra: Sequence[str] = ()) -> torch.nn.Module:
        if not isinstance(spec, Mapping):
            raise SpecError(path, f'expected a layer (an object with "type"), got {_show(spec)}')
        if "ref" in spec:
            return self.ref(spec, path)
        if "repeat" in spec:
            raise SpecError(
                path, 'a repeat expands into several layers: it may only stand in a "layers" list'
            )
        if "type" not in spec:
            keys = ", ".join(f'"{k}"' for k in spec) or "none"
            raise SpecError(path, f'expected a layer with "type" or "ref", found keys {keys}')
        name = spec.get("name")
        if name is not None:
            self.check_name(name, _join(path, "name"))
        cls = nn_class(spec["type"], _join(path, "type"))
        kind = "Module" if cls is _spec_module_class() else cls.__name__
        if kind in _CONTAINERS:
            module = self.container(kind, spec, path, extra)
        else:
            module = self.leaf(cls, spec, path, extra)
        if name is not None:
            self.named[name] = (module, path)
        return module

    def check_name(self, name: Any, where: str) -> None:
        if not isinstance(name, str) or not name:
            raise SpecError(where, f"expected a non-empty string, got {_show(name)}")
        if self.repeat_depth:
            raise SpecError(
                where,
                "a layer inside a repeat cannot carry a name (each copy is a new instance); "
                'name a layer outside the repeat and use {"ref": name} inside it',
            )
        if name in self.named:
            raise SpecError(where, f'name "{name}" is already defined at {self.named[name][1]}')

    def ref(self, spec: Mapping[str, Any], path: str) -> torch.nn.Module:
        others = [k for k in spec if k != "ref"]
        if others:
            raise SpecError(path, f'a ref takes no other keys, found "{others[0]}"')
        name = spec["ref"]
        if not isinstance(name, str) or name not in self.named:
            defined = ", ".join(f'"{n}"' for n in self.named) or "none"
            raise SpecError(
                _join(path, "ref"),
                f"unknown name {_show(name)}{_hint(str(name), list(self.named))} "
                f"(names defined before this point: {defined})",
            )
        return self.named[name][0]

    def layer_list(self, items: Any, path: str) -> list[torch.nn.Module]:
        if not isinstance(items, list):
            raise SpecError(path, f"expected a list of layers, got {_show(items)}")
        out: list[torch.nn.Module] = []
        for i, item in enumerate(items):
            where = _join(path, i)
            if isinstance(item, Mapping) and "repeat" in item:
                out.extend(self.repeat(item, where))
            else:
                out.append(self.node(item, where))
        return out

    def repeat(self, spec: Mapping[str, Any], path: str) -> list[torch.nn.Module]:
        n = spec["repeat"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise SpecError(_join(path, "repeat"), f"expected a positive int, got {_show(n)}")
        rest = sorted(k for k in spec if k != "repeat")
        if rest not in (["layer"], ["layers"]):
            found = ", ".join(f'"{k}"' for k in rest) or "nothing"
            raise SpecError(
                path, f'a repeat takes "repeat" and one of "layer" or "layers", found {found}'
            )
        self.repeat_depth += 1
        try:
            out: list[torch.nn.Module] = []
            for _ in range(n):
                if rest == ["layer"]:
                    out.append(self.node(spec["layer"], _join(path, "layer")))
                else:
                    out.extend(self.layer_list(spec["layers"], _join(path, "layers")))
            return out
        finally:
            self.repeat_depth -= 1

    def children(self, spec: Any, path: str) -> dict[str, torch.nn.Module]:
        import torch

        if not isinstance(spec, Mapping):
            raise SpecError(path, f"expected an object of named layers, got {_show(spec)}")
        out: dict[str, torch.nn.Module] = {}
        for key, child in spec.items():
            where = _join(path, key)
            if not isinstance(key, str) or not key or "." in key:
                raise SpecError(where, f"a child name must be non-empty without dots, got {key!r}")
            if hasattr(torch.nn.Module, key) or key == "forward_order":
                raise SpecError(
                    where, f'"{key}" is an attribute of every module; choose another child name'
                )
            out[key] = self.node(child, where)
        return out

    def container(
        self, kind: str, spec: Mapping[str, Any], path: str, extra: Sequence[str]
    ) -> torch.nn.Module:
        import torch

        allowed = ("type", "name", *_CONTAINERS[kind])
        for key in spec:
            if key not in allowed:
                what = f'top-level key "{key}"' if not path else f'key "{key}" for {kind}'
                raise SpecError(path, f"unknown {what}{_hint(key, [*allowed, *extra])}")
        module: torch.nn.Module
        if kind in ("Sequential", "ModuleList"):
            layers = spec.get("layers", [])
            where = _join(path, "layers")
            if kind == "Sequential" and isinstance(layers, Mapping):
                return torch.nn.Sequential(OrderedDict(self.children(layers, where)))
            built = self.layer_list(layers, where)
            return (
                torch.nn.Sequential(*built) if kind == "Sequential" else torch.nn.ModuleList(built)
            )
        children = self.children(spec.get("children", {}), _join(path, "children"))
        if kind == "ModuleDict":
            return torch.nn.ModuleDict(children)
        order = spec.get("forward")
        if order is not None:
            where = _join(path, "forward")
            if not isinstance(order, list):
                raise SpecError(where, f"expected a list of child names, got {_show(order)}")
            for i, step in enumerate(order):
                if step not in children:
                    raise SpecError(
                        _join(where, i),
                        f"no child {_show(step)}{_hint(str(step), list(children))}",
                    )
        try:
            module = _spec_module_class()(children, order)
        except (KeyError, TypeError) as exc:
            raise SpecError(_join(path, "children"), f"invalid child name: {exc}") from None
        return module

    def leaf(
        self, cls: type, spec: Mapping[str, Any], path: str, extra: Sequence[str]
    ) -> torch.nn.Module:
        name = cls.__name__
        args_spec = spec.get("args", [])
        kwargs_spec = spec.get("kwargs", {})
        if not isinstance(args_spec, list):
            raise SpecError(_join(path, "args"), f"expected a list, got {_show(args_spec)}")
        if not isinstance(kwargs_spec, Mapping):
            raise SpecError(_join(path, "kwargs"), f"expected an object, got {_show(kwargs_spec)}")
        try:
            params = set(inspect.signature(cls).parameters)
        except (TypeError, ValueError):  # pragma: no cover
            params = set()
        args = [
            (self.value(v, "", _join(_join(path, "args"), i)), _join(_join(path, "args"), i))
            for i, v in enumerate(args_spec)
        ]
        kwargs: dict[str, tuple[Any, str]] = {}
        for key, v in kwargs_spec.items():
            where = _join(_join(path, "kwargs"), key)
            kwargs[key] = (self.value(v, key, where), where)
        for key, v in spec.items():
            if key in _LEAF_KEYS:
                continue
            where = _join(path, key)
            if key in _STRUCT_KEYS and key not in params:
                raise SpecError(
                    where, f'"{key}" belongs to containers, refs and repeats, not {name}'
                )
            if key in kwargs:
                raise SpecError(where, f'"{key}" is given twice (also in kwargs)')
            kwargs[key] = (self.value(v, key, where), where)
        _check_call(cls, args, kwargs, path, extra)
        try:
            return cls(*(a for a, _ in args), **{k: v for k, (v, _) in kwargs.items()})  # type: ignore[no-any-return]
        except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
            raise SpecError(path, f"{name} rejected its arguments: {exc}") from None

    def value(self, value: Any, key: str, path: str) -> Any:
        """An argument value: layer objects are built, arrays become tuples."""
        if isinstance(value, Mapping) and ("type" in value or "ref" in value):
            return self.node(value, path)
        if isinstance(value, list):
            return tuple(self.value(v, "", _join(path, i)) for i, v in enumerate(value))
        return _convert(value, key, path)
