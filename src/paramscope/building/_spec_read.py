"""Reading a spec: a dict, a JSON or YAML file, or a JSON string, into a dict.

JSON is read with duplicate keys refused; YAML with ``yaml.safe_load`` (PyYAML, optional), so
reading a spec never constructs arbitrary objects. Files are opened as regular files only
(never a FIFO or a device) and read up to :data:`_MAX_SPEC_BYTES`.

Example:
    >>> read_spec('{"type": "ReLU"}')
    {'type': 'ReLU'}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import SourceNotFoundError
from ._spec_errors import SpecError, _show

__all__ = ["SpecSource", "read_spec"]


SpecSource = Mapping[str, Any] | str | os.PathLike[str]
"""What :func:`build` accepts: a dict, a JSON / YAML file path, or a JSON string."""


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
