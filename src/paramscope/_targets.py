"""Targets: what the CLI's TARGET (and :func:`paramscope.resolve_target`) can name.

* a checkpoint file or folder — read from headers, nothing built;
* ``zoo:NAME`` — a built-in model (``paramscope zoo`` lists them), built on the meta device;
* ``package.module:callable`` — imported and called with ``--arg key=value`` keyword
  arguments (values parsed as JSON, else kept as strings) inside ``torch.device("meta")``, so
  a 70B model costs no memory; a module-level ``nn.Module`` instance is used as it is;
* a Hugging Face ``config.json`` (or a folder holding one and no weights) — with the optional
  ``transformers`` extra, the class named by ``architectures`` is built on the meta device.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._errors import ParamscopeError, SourceNotFoundError

__all__ = ["is_hf_config", "parse_args", "resolve_target"]

_CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.npz", "*.index.json")


def parse_args(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are JSON when they parse, else strings.

    Args:
        pairs: e.g. ``["n_layer=2", "name=tiny", "dims=[4, 8]"]``.

    Returns:
        The keyword arguments.

    Raises:
        ParamscopeError: a pair without ``=`` or with an empty key.

    Example:
        >>> parse_args(["n=2", "name=tiny", "flag=true"])
        {'n': 2, 'name': 'tiny', 'flag': True}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ParamscopeError(f"--arg {pair!r}: expected key=value")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def is_hf_config(path: Path) -> bool:
    """Whether ``path`` is a Hugging Face model config (a JSON object with ``model_type``).

    Args:
        path: a file.

    Returns:
        True for a config.json-like file.
    """
    if not path.is_file() or path.suffix != ".json" or path.stat().st_size > 10_000_000:
        return False
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and "model_type" in obj and "weight_map" not in obj


def _config_in_folder(p: Path) -> Path | None:
    has_config = p.is_dir() and (p / "config.json").is_file()
    if has_config and not any(any(p.glob(g)) for g in _WEIGHTS):
        return p / "config.json"
    return None


def resolve_target(target: str | os.PathLike[str], args: Mapping[str, Any] | None = None) -> Any:
    """Turn a TARGET into a checkpoint path (``str``) or a ``torch.nn.Module`` (on meta).

    Args:
        target: a path, ``zoo:NAME``, ``package.module:callable`` or an HF ``config.json``.
        args: keyword arguments for a callable, overrides for a zoo model or an HF config.

    Returns:
        A path string for checkpoints, else the built module.

    Raises:
        SourceNotFoundError: nothing of that name exists.
        ParamscopeError: an import that fails, a callable that does not return a module,
            arguments given to a checkpoint, or ``transformers`` missing for a config.

    Example:
        >>> m = resolve_target("zoo:mlp-3-5-2")
        >>> sum(p.numel() for p in m.parameters())
        32
    """
    spec = os.fspath(target)
    args = dict(args or {})
    if spec.startswith("zoo:"):
        from .building import zoo

        return _on_meta(lambda: zoo.build(spec[4:], **args), skip_init=False)  # zoo skips it
    p = Path(spec)
    if p.exists():
        config = p if is_hf_config(p) else _config_in_folder(p)
        if config is not None:
            return _hf_model(config, args)
        if args:
            raise ParamscopeError(
                f"{spec}: --arg applies to zoo:, module:callable and "
                "config.json targets, not to a checkpoint"
            )
        return spec
    if _CALLABLE_RE.match(spec):
        return _call(spec, args)
    raise SourceNotFoundError(spec)


def _on_meta(build: Any, skip_init: bool = True) -> Any:
    import contextlib

    import torch

    from .building.zoo._meta import SkipNormalOnMeta  # random init of meta tensors is a no-op

    with torch.device("meta"), SkipNormalOnMeta() if skip_init else contextlib.nullcontext():
        return build()


def _call(spec: str, args: dict[str, Any]) -> Any:
    import torch

    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current folder
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ParamscopeError(f"{spec}: cannot import {mod_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ParamscopeError(f"{spec}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, torch.nn.Module):
        if args:
            raise ParamscopeError(f"{spec}: is a module instance; --arg needs a callable")
        return obj
    if not callable(obj):
        raise ParamscopeError(f"{spec}: expected a callable returning an nn.Module")
    try:
        model = _on_meta(lambda: obj(**args))
    except TypeError as exc:
        raise ParamscopeError(f"{spec}: calling it with {args} failed: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise ParamscopeError(
            f"{spec}: returned {type(model).__name__}, expected a torch.nn.Module"
        )
    return model


def _hf_model(config_path: Path, overrides: dict[str, Any]) -> Any:
    try:
        import transformers
    except ImportError:
        raise ParamscopeError(
            f"{config_path}: reading a Hugging Face config.json needs the optional extra: "
            "pip install 'paramscope[transformers]'"
        ) from None
    cfg = json.loads(config_path.read_text("utf-8"))
    cfg.update(overrides)
    model_type = cfg.pop("model_type")
    try:
        config = transformers.AutoConfig.for_model(model_type, **cfg)
    except (ValueError, KeyError) as exc:
        raise ParamscopeError(f"{config_path}: model_type {model_type!r}: {exc}") from None
    archs = cfg.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        names = ", ".join(archs) or "none"
        raise ParamscopeError(
            f"{config_path}: architectures names {names}; expected a class transformers "
            f"{transformers.__version__} has"
        )
    return _on_meta(lambda: cls(config))
