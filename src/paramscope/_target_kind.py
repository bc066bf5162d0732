"""What a TARGET names, told without importing torch or building anything.

A TARGET (the CLI's argument, and what every source function takes) is one of:

* a checkpoint file or folder — read from headers;
* ``zoo:NAME`` — a built-in model;
* ``package.module:callable`` — a factory (or a module-level ``nn.Module``);
* a Hugging Face ``config.json`` (or a folder holding one and no weights).

This module only classifies: io refuses model TARGETs where a checkpoint is needed with
:func:`model_target_error`, and everything above io asks :func:`target_kind`. Turning a
TARGET into a model or a manifest (building, analytic config counts) is
:mod:`paramscope._targets`, a floor above io.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._errors import TargetError
from ._files import is_url

__all__ = [
    "CALLABLE_RE",
    "MODEL_KINDS",
    "WEIGHTS",
    "config_path",
    "is_hf_config",
    "model_target_error",
    "target_kind",
]

#: ``package.module:callable`` (dotted on both sides).
CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
#: Files that make a folder a checkpoint even when it holds a ``config.json``.
WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.npz", "*.index.json")
#: The kinds that name a model (no values), not a checkpoint.
MODEL_KINDS = ("zoo", "callable", "config")


def is_hf_config(path: Path) -> bool:
    """Whether ``path`` is a Hugging Face model config rather than a checkpoint or an index.

    Args:
        path: a file.

    Returns:
        True for a config.json-like file (see :func:`paramscope._hfconfig.looks_like_config`).

    Example:
        >>> is_hf_config(Path("no-such-file.json"))
        False
    """
    from ._hfconfig import looks_like_config

    return looks_like_config(path)


def _config_in_folder(p: Path) -> Path | None:
    has_config = p.is_dir() and (p / "config.json").is_file()
    has_dcp = has_config and (p / ".metadata").is_file()  # a DCP checkpoint beside its config
    if has_config and not has_dcp and not any(any(p.glob(g)) for g in WEIGHTS):
        return p / "config.json"
    return None


def config_path(p: Path) -> Path | None:
    """The config.json an existing path names: itself, or a folder's with no weights.

    Args:
        p: a path.

    Returns:
        The config file, or ``None`` when ``p`` names no model config.

    Example:
        >>> config_path(Path("no-such-folder")) is None
        True
    """
    return p if is_hf_config(p) else _config_in_folder(p)


def target_kind(target: str | os.PathLike[str]) -> str | None:
    """What a TARGET names, without importing torch or building anything.

    Args:
        target: a path, ``zoo:NAME``, ``package.module:callable`` or an HF ``config.json``.

    Returns:
        ``"checkpoint"``, ``"config"``, ``"zoo"`` or ``"callable"``; ``None`` when it names
        nothing that exists.

    Example:
        >>> target_kind("zoo:gpt2"), target_kind("mypkg.models:build")
        ('zoo', 'callable')
    """
    spec = os.fspath(target)
    if spec.startswith("zoo:"):
        return "zoo"
    if is_url(spec):  # a URL names a checkpoint (read with range requests)
        return "checkpoint"
    p = Path(spec)
    if p.exists():
        return "checkpoint" if config_path(p) is None else "config"
    if CALLABLE_RE.match(spec):
        return "callable"
    return None


def model_target_error(target: str | os.PathLike[str], what: str) -> TargetError | None:
    """The error for a model TARGET given where a checkpoint is needed, or ``None``.

    Args:
        target: what the caller was given.
        what: the function or command, for the message (``"load"``, ``"verify"`` …).

    Returns:
        A :class:`TargetError` to raise when ``target`` names a model, else ``None``.

    Example:
        >>> str(model_target_error("zoo:gpt2", "verify")).split(":")[0]
        'zoo'
    """
    kind = target_kind(target)
    if kind not in MODEL_KINDS:
        return None
    name = {"zoo": "a zoo model", "callable": "a model factory", "config": "a model config"}[kind]
    return TargetError(
        f"{os.fspath(target)}: {what} needs a checkpoint (a safetensors/.pt/.bin/.npz file, "
        f"an HF sharded folder or index, a DCP folder); this is {name}, which builds a model "
        "on the meta device and has no values: count, inspect, summary, memory, match, "
        "report and diagram take it"
    )
