"""The annotation type checker: a layer's arguments against its constructor, before it runs.

:func:`_check_call` binds a spec's positional and keyword arguments to the constructor's
signature and checks each value against its annotation (:func:`_matches`: ``int``, ``float``,
``bool``, ``str``, ``None``, unions, ``Literal``, tuples and lists of those, ``torch.Size``);
what the annotations cannot tell is left to the constructor. Errors name the exact place and
the expected type in words (:func:`_type_name`: ``int or tuple[int, int]``).

Example:
    >>> _matches((3, 3), tuple[int, int]), _matches("ten", int)
    (True, False)
    >>> _type_name(int | tuple[int, int])
    'int or tuple[int, int]'
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

from ._spec_errors import SpecError, _hint, _show


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
