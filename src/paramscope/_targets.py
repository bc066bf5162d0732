"""Resolving a TARGET: building the model it names, or computing its manifest from a config.

What the CLI's TARGET (and :func:`paramscope.resolve_target`) can name:

* a checkpoint file or folder — read from headers, nothing built;
* ``zoo:NAME`` — a built-in model (``paramscope zoo`` lists them), built on the meta device;
* ``package.module:callable`` — imported and called with ``--arg key=value`` keyword
  arguments (values parsed as JSON, else kept as strings) inside ``torch.device("meta")``, so
  a 70B model costs no memory; a module-level ``nn.Module`` instance is used as it is;
* a Hugging Face ``config.json`` (or a folder holding one and no weights) — counted
  analytically for the families paramscope knows, else (with the optional ``transformers``
  extra) the class named by ``architectures`` is built on the meta device.

Telling these apart is :mod:`paramscope._target_kind` (a core module io uses to refuse model
TARGETs where a checkpoint is needed). This module is a floor above io and building: it
builds (``building``) and reads (``io``), and the rooms that take any TARGET (counting, diff,
the public :func:`read_manifest`) call it.
"""

from __future__ import annotations

import importlib
import json
import os
import reprlib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._dtypes import DType
from ._errors import ArgumentError, ParamscopeError, SourceNotFoundError, TargetError
from ._files import is_url
from ._target_kind import CALLABLE_RE as _CALLABLE_RE
from ._target_kind import MODEL_KINDS, is_hf_config, model_target_error, target_kind
from ._target_kind import config_path as _config_path

if TYPE_CHECKING:
    from ._manifest import Manifest

__all__ = [
    "is_hf_config",
    "model_target_error",
    "parse_args",
    "read_manifest",
    "resolve_source",
    "resolve_target",
    "target_kind",
    "target_manifest",
]


def parse_args(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are JSON when they parse, else strings.

    Args:
        pairs: e.g. ``["n_layer=2", "name=tiny", "dims=[4, 8]"]``.

    Returns:
        The keyword arguments.

    Raises:
        ArgumentError: a pair without ``=`` or with an empty key.

    Example:
        >>> parse_args(["n=2", "name=tiny", "flag=true"])
        {'n': 2, 'name': 'tiny', 'flag': True}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ArgumentError(f"--arg {pair!r}: expected key=value, e.g. --arg n_layer=2")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def resolve_source(target: str | os.PathLike[str], args: Mapping[str, Any] | None = None) -> Any:
    """A TARGET as the cheapest thing that can be counted: a checkpoint path, a Manifest or a
    module.

    Like :func:`resolve_target`, except that an HF ``config.json`` of a family paramscope
    counts analytically (``llama``, ``mistral``, ``qwen2``, ``bert`` … checked against
    transformers) becomes a :class:`Manifest` computed from the config alone: no torch, no
    transformers, milliseconds. Other configs are built on meta through transformers.

    Args:
        target: a path, ``zoo:NAME``, ``package.module:callable`` or an HF ``config.json``.
        args: as for :func:`resolve_target`.

    Returns:
        A path string, a :class:`Manifest` (configs counted analytically) or a module.

    Example:
        >>> resolve_source("zoo:mlp-3-5-2").__class__.__name__
        'SimpleNN'
    """
    spec = os.fspath(target)
    remote = is_url(spec)
    config = _config_path(Path(spec)) if not spec.startswith("zoo:") and not remote else None
    if config is not None:
        m = _analytic(config, dict(args or {}))
        if m is not None:
            return m
    return resolve_target(spec, args)


def target_manifest(target: str | os.PathLike[str], args: Mapping[str, Any] | None = None) -> Any:
    """The :class:`Manifest` of any TARGET: a checkpoint's headers, a config counted
    analytically, or a model built on meta.

    Args:
        target: a path, ``zoo:NAME``, ``package.module:callable`` or an HF ``config.json``.
        args: as for :func:`resolve_target`.

    Returns:
        The manifest.

    Example:
        >>> sorted(target_manifest("zoo:mlp-3-5-2"))[:2]
        ['hidden.bias', 'hidden.weight']
    """
    from ._manifest import Manifest

    obj = resolve_source(target, args)
    if isinstance(obj, Manifest):
        return obj
    if isinstance(obj, str):
        from .io import read_manifest

        return read_manifest(obj)
    from ._modtree import scan_module

    m = scan_module(obj).manifest()
    m.source = os.fspath(target)
    return m


def read_manifest(target: str | os.PathLike[str]) -> Manifest:
    """The :class:`Manifest` of a checkpoint, from headers only and without torch, or of a
    model TARGET.

    A model TARGET gives the manifest of the model: ``zoo:NAME`` and
    ``package.module:callable`` are built on the meta device; an HF ``config.json`` is counted
    analytically where paramscope can (no torch), else built on meta through transformers.
    Checkpoints are read by :func:`paramscope.io.read_manifest`.

    Args:
        target: a safetensors file, an HF sharded folder or ``*.index.json``, a torch
            ``.pt``/``.bin`` (zip or legacy), an ``.npz``, a DCP folder, or a model TARGET.

    Returns:
        The manifest; ``manifest.roles`` says whether roles were stored or inferred.

    Raises:
        SourceNotFoundError, UnknownFormatError, HeaderError, ShardIndexError,
        UnsafePickleError, FormatError: see their docs.

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> path = paramscope.save({"wte.weight": torch.zeros(50, 8)}, f"{d}/model.safetensors")
        >>> read_manifest(path)["wte.weight"].shape
        (50, 8)
        >>> sorted(read_manifest("zoo:mlp-3-5-2"))[:2]
        ['hidden.bias', 'hidden.weight']
    """
    if target_kind(target) in MODEL_KINDS:
        return target_manifest(target)
    from . import io

    return io.read_manifest(target)


def _analytic(config_path: Path, overrides: dict[str, Any]) -> Any:
    from ._hfconfig import read_hf_config

    cfg = read_hf_config(config_path, overrides)
    from .building._hf_analytic import VERIFIED_MODEL_TYPES, analytic_manifest

    if cfg.model_type not in VERIFIED_MODEL_TYPES:
        return None
    m = analytic_manifest(
        cfg.data, architecture=cfg.architecture, dtype=cfg.dtype, source=os.fspath(config_path)
    )
    if m is not None:
        m.notes[:0] = cfg.notes
        if cfg.architecture is None:
            m.notes.insert(
                0,
                "config.json names no architectures: counted the base model, the one "
                f"transformers' AutoModel builds for model_type {cfg.model_type!r}",
            )
    return m


def resolve_target(
    target: str | os.PathLike[str], args: Mapping[str, Any] | None = None, *, meta: bool = True
) -> Any:
    """Turn a TARGET into a checkpoint path (``str``) or a ``torch.nn.Module`` (on meta).

    Args:
        target: a path, ``zoo:NAME``, ``package.module:callable`` or an HF ``config.json``.
        args: keyword arguments for a callable, overrides for a zoo model or an HF config.
        meta: build models on the meta device (no memory, no values: what counting needs);
            ``False`` builds them on the CPU with their own initialisation (what an operation
            on values, such as ``shrink``, needs).

    Returns:
        A path string for checkpoints, else the built module.

    Raises:
        SourceNotFoundError: nothing of that name exists.
        TargetError: an import that fails, a callable that does not return a module,
            arguments given to a checkpoint, or ``transformers`` missing for a config.
        ArgumentError: a zoo override the model's config refuses.

    Example:
        >>> m = resolve_target("zoo:mlp-3-5-2")
        >>> sum(p.numel() for p in m.parameters())
        32
    """
    spec = os.fspath(target)
    args = dict(args or {})
    if spec.startswith("zoo:"):
        from .building import zoo

        return _on_meta(lambda: zoo.build(spec[4:], **args), skip_init=False, meta=meta)
    remote = is_url(spec)  # a URL names a checkpoint, read with range requests
    p = Path(spec)
    if remote or p.exists():
        config = None if remote else _config_path(p)
        if config is not None:
            return _hf_model(config, args, meta)
        if args:
            raise TargetError(
                f"{spec}: --arg {', '.join(args)} given, but this is a checkpoint, whose "
                "shapes are fixed; --arg applies to zoo:, module:callable and config.json "
                "targets: drop it"
            )
        return spec
    if _CALLABLE_RE.match(spec):
        return _call(spec, args, meta)
    raise SourceNotFoundError(spec)


def _on_meta(build: Any, skip_init: bool = True, meta: bool = True) -> Any:
    import contextlib

    import torch

    if not meta:
        return build()

    from .building.zoo._meta import SkipNormalOnMeta  # random init of meta tensors is a no-op

    with torch.device("meta"), SkipNormalOnMeta() if skip_init else contextlib.nullcontext():
        return build()


def _call(spec: str, args: dict[str, Any], meta: bool = True) -> Any:
    import torch

    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current folder
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise TargetError(
            f"{spec}: cannot import {mod_name!r}: {exc}; a package.module:callable TARGET "
            "needs the module importable (installed, or under the current folder)"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{spec}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, torch.nn.Module):
        if args:
            raise TargetError(
                f"{spec}: is a module instance, so --arg {', '.join(args)} cannot apply; "
                "drop --arg, or name a callable that builds the module"
            )
        return obj
    if not callable(obj):
        raise TargetError(
            f"{spec}: names {type(obj).__name__} {reprlib.repr(obj)}, not a callable; expected "
            "a callable returning a torch.nn.Module (a function or class)"
        )
    try:
        model = _on_meta(lambda: obj(**args), meta=meta)
    except ParamscopeError:  # a paramscope factory (a zoo build): its message says it all
        raise
    except TypeError as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in args.items()) or "no arguments"
        raise TargetError(
            f"{spec}: calling it with {given} failed: {exc}; pass its arguments with --arg "
            "key=value (Python: args={...})"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise TargetError(
            f"{spec}: returned {type(model).__name__} {reprlib.repr(model)}, expected a "
            "torch.nn.Module; name a callable that builds the model"
        )
    return model


def _hf_model(config_path: Path, overrides: dict[str, Any], meta: bool = True) -> Any:
    from ._hfconfig import read_hf_config

    cfg = read_hf_config(config_path, overrides)
    try:
        import transformers
    except ImportError:
        raise TargetError(
            f"{config_path}: building a {cfg.model_type!r} model from a Hugging Face "
            "config.json needs the optional extra: pip install 'paramscope[transformers]'"
        ) from None
    data = dict(cfg.data)
    model_type = data.pop("model_type")
    for key in ("dtype", "torch_dtype", "architectures", "transformers_version"):
        data.pop(key, None)
    try:
        config = transformers.AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetError(f"{config_path}: model_type {model_type!r}: {exc}") from None
    notes = list(cfg.notes)
    if cfg.architecture is None:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        name = MODEL_MAPPING_NAMES.get(model_type)
        if isinstance(name, (tuple, list)):
            name = name[0]
        cls = getattr(transformers, name, None) if isinstance(name, str) else None
        if cls is None:
            raise TargetError(
                f"{config_path}: names no architectures and transformers "
                f"{transformers.__version__} has no base model class for model_type "
                f'{model_type!r}; add "architectures": ["<ClassName>"] to the config'
            )
        notes.insert(
            0,
            f"config.json names no architectures: built {name}, the base model transformers' "
            f"AutoModel builds for model_type {model_type!r}",
        )
    else:
        cls = getattr(transformers, cfg.architecture, None)
        if cls is None:
            raise TargetError(
                f"{config_path}: architectures names {cfg.architecture}; expected a class "
                f"transformers {transformers.__version__} has"
            )
    dtype = cfg.dtype
    if dtype.value not in ("F16", "BF16", "F32", "F64"):
        notes.append(
            f"torch cannot build a model in {dtype.value}: built in F32 instead (the config's "
            "dtype is shown in this note only)"
        )
        dtype = DType.F32
    model = _on_meta(lambda: _build_in_dtype(cls, config, dtype.to_torch()), meta=meta)
    notes.append(
        f"built {type(model).__name__} on meta with transformers {transformers.__version__}"
    )
    model._paramscope_notes = notes  # scan_module puts them in every count's notes
    return model


def _build_in_dtype(cls: Any, config: Any, dtype: Any) -> Any:
    """``cls(config)`` with ``dtype`` as the default floating dtype, as ``from_config`` does."""
    import torch

    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cls(config)
    finally:
        torch.set_default_dtype(saved)
