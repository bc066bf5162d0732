"""PEP 562 lazy exports: one helper for every package's export list."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str,
    namespace: dict[str, Any],
    names: Mapping[str, str],
    modules: Mapping[str, str] | None = None,
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports exported names on first use and caches them.

    Args:
        package: the package's ``__name__`` (relative module paths resolve against it).
        namespace: the package's ``globals()``, where loaded values are cached.
        names: exported name → the module (relative) that defines it.
        modules: exported name → a submodule exported as a whole.

    Returns:
        The ``__getattr__`` function.

    Example:
        >>> g = {}
        >>> get = lazy_getattr("json", g, {"dumps": "json"})
        >>> get("dumps") is __import__("json").dumps
        True
    """
    whole = dict(modules or {})

    def __getattr__(name: str) -> Any:
        if name in whole:
            value = importlib.import_module(whole[name], package)
        elif name in names:
            value = getattr(importlib.import_module(names[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    return __getattr__
