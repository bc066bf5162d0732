"""Build a torch model from a declarative spec: a dict, a JSON or YAML file, or a JSON string.

A spec describes one root layer, plus optional top-level keys that tie, initialise, load and
freeze its parameters. Building runs, in this order: construct the layers, apply ``tie``,
apply ``init`` (with ``seed``), ``load`` a parameter file, apply ``freeze``.

**Layers.** A layer is an object with a ``"type"``: the name of a class in ``torch.nn``
(``"Linear"``, ``"Conv2d"``, ``"ReLU"``; ``"nn.Linear"`` and ``"torch.nn.Linear"`` are accepted
too). Constructor arguments go in ``"args"`` (a list), ``"kwargs"`` (an object), or inline as
extra keys (``{"type": "Linear", "in_features": 784, "out_features": 256}``). JSON arrays
become tuples (``"kernel_size": [3, 3]``), ``"dtype": "float16"`` becomes ``torch.float16``,
and an argument that is itself a layer object is built first
(``{"type": "TransformerEncoder", "encoder_layer": {"type": "TransformerEncoderLayer", ...}}``).
Arguments are checked against the constructor's signature and annotations before it runs.

Only classes defined in ``torch.nn.modules`` can be named, never an import path: a spec is
data, so reading one must never import or run code the spec's author chose (a YAML file is
read with ``yaml.safe_load`` for the same reason).

**Containers.**

- ``{"type": "Sequential", "layers": [...]}``: an ``nn.Sequential``; ``"layers"`` may also be
  an object ``{"fc1": {...}, "act": {...}}`` for named children.
- ``{"type": "ModuleList", "layers": [...]}`` and ``{"type": "ModuleDict", "children": {...}}``.
- ``{"type": "Module", "children": {"encoder": {...}, "head": {...}}, "forward": ["encoder",
  "head"]}``: a plain container (:class:`SpecModule`) with those attributes; its ``forward``
  runs the listed children in order, and without ``"forward"`` calling it raises
  :class:`SpecError`.

**Repeat.** Inside a ``"layers"`` list, ``{"repeat": 3, "layer": {...}}`` expands into 3 fresh
copies (distinct parameters), and ``{"repeat": 2, "layers": [a, b]}`` into ``a, b, a, b``.

**Reuse.** A layer may carry ``"name": "shared"``; a later ``{"ref": "shared"}`` anywhere a
layer may stand is the *same* instance (shared parameters, counted once). Names are global to
the spec and defined in reading order; a layer inside a repeat cannot carry a name.

**Top-level keys.**

- ``"tie": [["head.weight", "embed.weight"], ...]``: the first parameter becomes the same
  ``nn.Parameter`` object as the second (shapes and dtypes must match).
- ``"init": [rules]`` and ``"seed": 0``: rules ``{"select": "*.weight", "init":
  "normal(std=0.02)"}`` or ``["*.bias", "zeros"]``, passed to
  :func:`paramscope.lifecycle._init.init`. ``seed`` also makes the layers' own default
  initialisation deterministic (the global RNG is left as it was).
- ``"load": "params.safetensors"`` or ``{"path": ..., "strict": false}``: a parameter file,
  relative to the spec file's folder (or ``base_dir``), loaded with
  :func:`paramscope.lifecycle._load.load_into`; strict by default.
- ``"freeze": ["embed.*"]`` or ``{"patterns": [...], "bn_eval": true}``: passed to
  :func:`paramscope.lifecycle._freeze.freeze` (``"*"`` freezes all; ``[]`` nothing).
- ``"description"``: free text, ignored.

**Errors.** Every problem raises :class:`SpecError` naming the place in the spec, what was
expected and what was found: ``layers[3].kwargs.out_features: expected int, got "ten"``.

Example (the D2L shared-layer network, written as YAML)::

    type: Sequential
    layers:
      - {type: Linear, args: [4, 8]}
      - {type: ReLU}
      - {type: Linear, args: [8, 8], name: shared}
      - {type: ReLU}
      - {ref: shared}
      - {type: ReLU}
      - {repeat: 2, layer: {type: Linear, in_features: 8, out_features: 8}}
      - {type: Linear, args: [8, 1]}
    seed: 0
    init:
      - {select: "*.weight", init: "normal(std=0.02)"}
      - ["*.bias", zeros]
    freeze: ["0.*"]
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import types
import typing
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ParamscopeError, SourceNotFoundError
from .._names import did_you_mean

if TYPE_CHECKING:
    import torch

    from ..lifecycle._freeze import FreezeCounts
    from ..lifecycle._init import InitReport
    from ..lifecycle._load import LoadReport

__all__ = [
    "BuildResult",
    "SpecError",
    "SpecModule",  # noqa: F822 - defined on first use by the module __getattr__
    "build",
    "build_with_report",
    "nn_class",
    "read_spec",
]

SpecSource = Mapping[str, Any] | str | os.PathLike[str]
"""What :func:`build` accepts: a dict, a JSON / YAML file path, or a JSON string."""

_TOP_KEYS = ("tie", "init", "seed", "load", "freeze", "description")
_CONTAINERS: dict[str, tuple[str, ...]] = {
    "Sequential": ("layers",),
    "ModuleList": ("layers",),
    "ModuleDict": ("children",),
    "Module": ("children", "forward"),
}
_STRUCT_KEYS = ("layers", "children", "forward", "repeat", "layer", "ref")
_LEAF_KEYS = ("type", "name", "args", "kwargs")


class SpecError(ParamscopeError, ValueError):
    """A model spec is invalid; the message starts with the place in the spec.

    Args:
        path: where in the spec, e.g. ``layers[3].kwargs.out_features`` (``""``: the root).
        problem: what was expected and what was found.

    Example:
        >>> str(SpecError("layers[3].args[1]", 'expected int, got "ten"'))
        'layers[3].args[1]: expected int, got "ten"'
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path or 'spec'}: {problem}")


# ---------------------------------------------------------------------------------- helpers
def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    """A value as the spec's author wrote it (JSON), shortened."""
    if hasattr(value, "named_parameters"):
        return f"a {type(value).__name__} module"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(name: str, candidates: Sequence[str]) -> str:
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    close = list(dict.fromkeys([*same, *did_you_mean(name, candidates)]))[:3]
    return "; did you mean " + " or ".join(f'"{c}"' for c in close) + "?" if close else ""


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


# ---------------------------------------------------------------------- argument checking
def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


def _type_name(ann: Any) -> str:
    """A readable name for an annotation: ``int or tuple[int, int]``."""
    origin = typing.get_origin(ann)
    if _is_union(ann):
        parts = [_type_name(a) for a in typing.get_args(ann)]
        ordered = [p for p in parts if p != "None"] + [p for p in parts if p == "None"]
        return " or ".join(dict.fromkeys(ordered))
    if ann is None or ann is type(None):
        return "None"
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in typing.get_args(ann))
    if origin is not None:
        args = typing.get_args(ann)
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else str(origin)
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def _matches(value: Any, ann: Any) -> bool | None:
    """Whether ``value`` fits annotation ``ann``: True, False, or None (cannot tell)."""
    import torch

    if (
        ann is inspect.Parameter.empty
        or ann is typing.Any
        or isinstance(ann, (str, typing.TypeVar))
    ):
        return None
    if _is_union(ann):
        results = [_matches(value, a) for a in typing.get_args(ann)]
        if True in results:
            return True
        return None if None in results else False
    if ann is None or ann is type(None):
        return value is None
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return value in typing.get_args(ann)
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if ann is torch.Size:
        ann = tuple[int, ...]
        origin = tuple
    if origin in (tuple, list, Sequence) or ann in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(ann)
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                return False
            results = [_matches(v, a) for v, a in zip(value, args, strict=True)]
        else:
            results = [_matches(v, args[0]) for v in value]
        if False in results:
            return False
        return None if None in results else True
    if isinstance(ann, type):
        return isinstance(value, ann)
    return None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable forward references: fall back to raw annotations
        return {}


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


def _check_call(
    cls: type,
    args: list[tuple[Any, str]],
    kwargs: dict[str, tuple[Any, str]],
    path: str,
    extra: Sequence[str] = (),
) -> None:
    """Check arguments against ``cls``'s constructor signature; raise with the exact path."""
    name = cls.__name__
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # pragma: no cover - builtin signatures are all known
        return
    hints = _hints(cls)
    kind = inspect.Parameter
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    var_pos = next((p for p in params if p.kind is kind.VAR_POSITIONAL), None)
    var_kw = any(p.kind is kind.VAR_KEYWORD for p in params)
    by_name = {
        p.name: p for p in params if p.kind in (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)
    }

    def check(value: Any, param: inspect.Parameter, where: str) -> None:
        ann = hints.get(param.name, param.annotation)
        if _matches(value, ann) is False:
            raise SpecError(where, f"expected {_type_name(ann)}, got {_show(value)}")

    bound: dict[str, str] = {}
    for i, (value, where) in enumerate(args):
        if i < len(positional):
            bound[positional[i].name] = where
            check(value, positional[i], where)
        elif var_pos is not None:
            check(value, var_pos, where)
        else:
            names = ", ".join(p.name for p in positional)
            raise SpecError(
                where,
                f"{name} takes at most {len(positional)} positional arguments ({names}), "
                f"got {len(args)}",
            )
    for key, (value, where) in kwargs.items():
        param = by_name.get(key)
        if param is None:
            if var_kw:
                continue
            hint = _hint(key, [*by_name, *extra])
            raise SpecError(where, f'{name} has no argument "{key}"{hint}')
        if key in bound:
            raise SpecError(where, f'"{key}" is given twice (also as {bound[key]})')
        bound[key] = where
        check(value, param, where)
    missing = [
        p.name
        for p in params
        if p.kind not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
        and p.default is inspect.Parameter.empty
        and p.name not in bound
    ]
    if missing:
        listed = ", ".join(f'"{m}"' for m in missing)
        raise SpecError(path, f"{name} needs {listed}: missing from args / kwargs")


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


# ------------------------------------------------------------------------------ builder
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


# ------------------------------------------------------------------------- reading specs
def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError("", f'duplicate key "{key}" in a JSON object')
        out[key] = value
    return out


def _parse_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise SpecError(
            "", f"{origin}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def _parse_yaml(text: str, origin: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise SpecError(
            "", f"{origin}: reading a YAML spec needs PyYAML (pip install pyyaml), or use JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("", f"{origin}: invalid YAML: {exc}") from None


#: The largest spec file read (a spec is a few kB; a huge file is a mistake or an attack).
_MAX_SPEC_BYTES = 16_000_000


def _read(source: SpecSource) -> tuple[dict[str, Any], Path | None]:
    """The spec as a dict, and the folder its relative paths resolve against."""
    if isinstance(source, Mapping):
        return dict(source), None
    if isinstance(source, str) and source.lstrip().startswith("{"):
        spec, folder = _parse_json(source, "JSON string"), None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise SourceNotFoundError(path)
        from .._files import open_regular

        with open_regular(path) as f:  # never a FIFO or a device
            raw = f.read(_MAX_SPEC_BYTES + 1)
        if len(raw) > _MAX_SPEC_BYTES:
            raise SpecError("", f"{path}: a spec file over {_MAX_SPEC_BYTES:,} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError("", f"{path}: not UTF-8 text: {exc}") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            spec = _parse_yaml(text, str(path))
        elif path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            spec = _parse_json(text, str(path))
        else:
            spec = _parse_yaml(text, str(path))
        folder = path.resolve().parent
    else:
        raise SpecError(
            "", f"expected a dict, a JSON / YAML file path or a JSON string, got {_show(source)}"
        )
    if not isinstance(spec, dict):
        raise SpecError("", f"expected an object at the top level, got {_show(spec)}")
    return spec, folder


def read_spec(source: SpecSource) -> dict[str, Any]:
    """Read a spec from a dict, a JSON or YAML file, or a JSON string, without building it.

    Args:
        source: a mapping, a path (``.json``, ``.yaml`` / ``.yml``; other suffixes are read as
            JSON when they start with ``{``, else as YAML), or a string starting with ``{``.

    Returns:
        The spec as a new dict.

    Raises:
        SourceNotFoundError: the path does not exist.
        SpecError: invalid JSON / YAML, a duplicate JSON key, a non-object top level, or a
            YAML file without PyYAML installed.

    Example:
        >>> read_spec('{"type": "Linear", "args": [2, 3]}')
        {'type': 'Linear', 'args': [2, 3]}
    """
    return _read(source)[0]


# --------------------------------------------------------------------------- top level
@dataclass
class BuildResult:
    """A built model and the reports of the steps the spec asked for.

    Attributes:
        model: the built module.
        init_report: the report of ``init`` rules, or ``None`` without ``"init"``.
        freeze_counts: counts after ``freeze``, or ``None`` without ``"freeze"``.
        load_report: the report of ``load``, or ``None`` without ``"load"``.
        named: the layers that carry a ``"name"``, by name.
    """

    model: torch.nn.Module
    init_report: InitReport | None = None
    freeze_counts: FreezeCounts | None = None
    load_report: LoadReport | None = None
    named: dict[str, torch.nn.Module] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary.

        Returns:
            ``{"model": type name, "params": unique parameter elements, "named": {name: type},
            "init", "freeze", "load": the reports' ``to_dict()`` or ``None``}``.
        """
        unique = {id(p): p.numel() for p in self.model.parameters()}
        return {
            "model": type(self.model).__name__,
            "params": sum(unique.values()),
            "named": {n: type(m).__name__ for n, m in self.named.items()},
            "init": None if self.init_report is None else self.init_report.to_dict(),
            "freeze": None if self.freeze_counts is None else self.freeze_counts.to_dict(),
            "load": None if self.load_report is None else self.load_report.to_dict(),
        }


def _check_top(spec: Mapping[str, Any]) -> None:
    """Validate the shape of the top-level keys before anything is built."""
    seed = spec.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise SpecError("seed", f"expected a non-negative int, got {_show(seed)}")
    ties = spec.get("tie", [])
    if not isinstance(ties, list):
        raise SpecError("tie", f'expected a list of ["name", "target"] pairs, got {_show(ties)}')
    for i, pair in enumerate(ties):
        ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) for n in pair)
        if not ok:
            raise SpecError(
                _join("tie", i), f'expected a pair ["name", "target"] of names, got {_show(pair)}'
            )
    rules = spec.get("init", [])
    if not isinstance(rules, list):
        raise SpecError("init", f"expected a list of rules, got {_show(rules)}")
    for i, rule in enumerate(rules):
        pair = isinstance(rule, list) and len(rule) == 2 and all(isinstance(r, str) for r in rule)
        if not (pair or isinstance(rule, Mapping)):
            raise SpecError(
                _join("init", i),
                'expected {"select": ..., "init": ...} or ["selector", "scheme"], '
                f"got {_show(rule)}",
            )
    _freeze_args(spec.get("freeze"))
    _load_args(spec.get("load"))


def _freeze_args(value: Any) -> tuple[list[str], bool] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value], False
    bn_eval = False
    patterns = value
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in ("patterns", "bn_eval")]
        if unknown:
            raise SpecError(
                "freeze", f'unknown key "{unknown[0]}"{_hint(unknown[0], ["patterns", "bn_eval"])}'
            )
        patterns = value.get("patterns", [])
        bn_eval = value.get("bn_eval", False)
        if not isinstance(bn_eval, bool):
            raise SpecError("freeze.bn_eval", f"expected a bool, got {_show(bn_eval)}")
    if not isinstance(patterns, list):
        raise SpecError("freeze", f"expected a list of name patterns, got {_show(patterns)}")
    for i, p in enumerate(patterns):
        if not isinstance(p, str):
            raise SpecError(_join("freeze", i), f"expected a name pattern, got {_show(p)}")
    return list(patterns), bn_eval


def _load_args(value: Any) -> tuple[str, bool] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value, True
    if not isinstance(value, Mapping):
        raise SpecError(
            "load", f'expected a path or {{"path": ..., "strict": ...}}, got {_show(value)}'
        )
    unknown = [k for k in value if k not in ("path", "strict")]
    if unknown:
        raise SpecError(
            "load", f'unknown key "{unknown[0]}"{_hint(unknown[0], ["path", "strict"])}'
        )
    path, strict = value.get("path"), value.get("strict", True)
    if not isinstance(path, str) or not path:
        raise SpecError("load.path", f"expected a file path, got {_show(path)}")
    if not isinstance(strict, bool):
        raise SpecError("load.strict", f"expected a bool, got {_show(strict)}")
    return path, strict


def _apply_ties(model: torch.nn.Module, ties: list[list[str]]) -> None:
    for i, (name, target) in enumerate(ties):
        params = dict(model.named_parameters(remove_duplicate=False))
        for j, n in enumerate((name, target)):
            if n not in params:
                raise SpecError(
                    _join(_join("tie", i), j), f'no parameter "{n}"{_hint(n, list(params))}'
                )
        a, b = params[name], params[target]
        if a is b:
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            raise SpecError(
                _join("tie", i),
                f'"{name}" is {tuple(a.shape)} {a.dtype} but "{target}" is '
                f"{tuple(b.shape)} {b.dtype}; a tie needs equal shapes and dtypes",
            )
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, b)


@contextlib.contextmanager
def _construction(device: str | torch.device | None, seed: int | None) -> Iterator[None]:
    import torch

    with contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.manual_seed(seed)
        if device is not None:
            stack.enter_context(torch.device(device))
            if torch.device(device).type == "meta":
                from .zoo._meta import skip_init_on_meta

                stack.enter_context(skip_init_on_meta())
        yield


def build_with_report(
    spec: SpecSource,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> BuildResult:
    """Build the model a spec describes, and return it with the reports of its steps.

    Steps, in order: construct the layers (on ``device``), ``tie``, ``init`` (with ``seed``),
    ``load``, ``freeze``. The module docstring describes the spec language.

    Args:
        spec: a dict, a JSON / YAML file path, or a JSON string (see :func:`read_spec`).
        base_dir: the folder a relative ``"load"`` path resolves against; by default the spec
            file's folder, or the current folder for a dict or string spec.
        device: build under ``torch.device(device)``; ``"meta"`` allocates nothing and skips
            random initialisation, so it validates a spec of any size cheaply.

    Returns:
        A :class:`BuildResult`.

    Raises:
        SpecError: the spec is invalid; the message names the place (``layers[3].args[1]``).
        SourceNotFoundError: the spec file does not exist.

    Example:
        >>> r = build_with_report({"type": "Sequential", "layers": [
        ...     {"type": "Linear", "args": [4, 8], "name": "fc"}, {"type": "ReLU"}]})
        >>> type(r.named["fc"]).__name__, r.init_report is None
        ('Linear', True)
    """
    raw, folder = _read(spec)
    _check_top(raw)
    seed = raw.get("seed")
    root = {k: v for k, v in raw.items() if k not in _TOP_KEYS}
    builder = _Builder()
    with _construction(device, seed):
        model = builder.node(root, "", extra=_TOP_KEYS)
    _apply_ties(model, raw.get("tie", []))
    result = BuildResult(model, named={n: m for n, (m, _) in builder.named.items()})
    rules = raw.get("init")
    if rules:
        from ..lifecycle._init import init

        pairs = [tuple(r) if isinstance(r, list) else dict(r) for r in rules]
        try:
            result.init_report = init(model, pairs, seed=seed)
        except ParamscopeError as exc:
            raise SpecError("init", str(exc).removeprefix("init: ")) from exc
    load = _load_args(raw.get("load"))
    if load is not None:
        result.load_report = _load(model, load, base_dir, folder)
    freeze = _freeze_args(raw.get("freeze"))
    if freeze is not None and freeze[0]:  # no patterns freezes nothing (not everything)
        from ..lifecycle._freeze import freeze as freeze_fn

        try:
            result.freeze_counts = freeze_fn(model, *freeze[0], bn_eval=freeze[1])
        except ParamscopeError as exc:
            raise SpecError("freeze", str(exc).removeprefix("freeze: ")) from exc
    return result


def _load(
    model: torch.nn.Module,
    load: tuple[str, bool],
    base_dir: str | os.PathLike[str] | None,
    folder: Path | None,
) -> LoadReport:
    from ..lifecycle._load import load_into

    rel, strict = load
    root = Path(base_dir) if base_dir is not None else (folder or Path.cwd())
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    if not path.exists():
        raise SpecError("load", f'"{rel}": no such file (looked for {path})')
    try:
        return load_into(model, path, strict=strict)
    except ParamscopeError as exc:
        raise SpecError("load", f"{path}: {exc}") from exc


def build(
    spec: SpecSource,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """Build the model a spec describes (see :func:`build_with_report` for the reports).

    Args:
        spec: a dict, a JSON / YAML file path, or a JSON string.
        base_dir: the folder a relative ``"load"`` path resolves against.
        device: build under ``torch.device(device)`` (``"meta"``: no allocation).

    Returns:
        The model.

    Raises:
        SpecError: the spec is invalid; the message names the place in it.
        SourceNotFoundError: the spec file does not exist.

    Example:
        >>> import torch
        >>> model = build({"type": "Sequential", "layers": [
        ...     {"type": "Linear", "in_features": 4, "out_features": 8}, {"type": "ReLU"},
        ...     {"repeat": 2, "layer": {"type": "Linear", "args": [8, 8]}},
        ...     {"type": "Linear", "args": [8, 1]}]})
        >>> model(torch.zeros(2, 4)).shape
        torch.Size([2, 1])
    """
    return build_with_report(spec, base_dir=base_dir, device=device).model
