"""Hugging Face ``config.json`` files, read the way transformers reads them, without torch.

* special floats: transformers writes ``inf``/``nan`` as ``{"__float__": "Infinity"}`` (and
  plain JSON ``Infinity`` may appear too); both become Python floats;
* the class: ``architectures[0]``, or, when the config names none (what
  ``GPT2Config(...).save_pretrained`` writes), the ``model_type``'s base model class — the one
  ``AutoModel`` would build; the note says which class was used and why;
* the dtype: ``dtype`` (transformers 5) or ``torch_dtype`` (older); the note says which key
  it came from, or that the config gives none and float32 (transformers' default) is used;
* a config without ``model_type`` is refused with a message saying so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._dtypes import DType
from ._errors import FormatError, UnsupportedDTypeError

__all__ = ["HFConfig", "decode_special_floats", "looks_like_config", "read_hf_config"]

_FLOAT_TAG = "__float__"
_FLOATS = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}
_MAX_CONFIG_BYTES = 10_000_000


def decode_special_floats(obj: Any) -> Any:
    """Turn transformers' ``{"__float__": "Infinity"}`` tags back into floats, recursively.

    Args:
        obj: parsed JSON.

    Returns:
        The same structure with the tags replaced.

    Example:
        >>> decode_special_floats({"limit": [0.0, {"__float__": "Infinity"}]})
        {'limit': [0.0, inf]}
    """
    if isinstance(obj, dict):
        if len(obj) == 1 and _FLOAT_TAG in obj and obj[_FLOAT_TAG] in _FLOATS:
            return _FLOATS[obj[_FLOAT_TAG]]
        return {k: decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_special_floats(v) for v in obj]
    return obj


def _load_json(path: Path) -> Any:
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise FormatError(path, f"a config of {path.stat().st_size:,} bytes is too large")
    try:
        return json.loads(path.read_text("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, huge integers, deep nesting
        raise FormatError(path, f"not valid JSON: {exc}") from None


def looks_like_config(path: str | os.PathLike[str]) -> bool:
    """Whether a path is a JSON model config rather than a checkpoint or a shard index.

    A ``.json`` file holding an object with ``model_type`` or ``architectures``, or named
    ``config.json`` and holding an object that is not a shard index (no ``weight_map``).

    Args:
        path: a file.

    Returns:
        True for a config-like file.

    Example:
        >>> looks_like_config("does/not/exist.json")
        False
    """
    p = Path(path)
    if p.suffix != ".json" or p.name.endswith(".index.json"):
        return False
    try:
        if not p.is_file() or p.stat().st_size > _MAX_CONFIG_BYTES:
            return False
        obj = json.loads(p.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):  # unreadable: not a config, let readers say
        return False
    if not isinstance(obj, dict) or "weight_map" in obj:
        return False
    return "model_type" in obj or "architectures" in obj or p.name == "config.json"


@dataclass
class HFConfig:
    """A config.json as transformers reads it.

    Attributes:
        path: the file.
        data: the config, special floats decoded, ``--arg`` overrides applied.
        model_type: its ``model_type``.
        architecture: ``architectures[0]``, or ``None`` when the config names none.
        dtype: the parameters' dtype (``F32`` when the config gives none).
        notes: where the class and dtype came from, in words.
    """

    path: Path
    data: dict[str, Any]
    model_type: str
    architecture: str | None
    dtype: DType
    notes: list[str] = field(default_factory=list)


def read_hf_config(
    path: str | os.PathLike[str], overrides: dict[str, Any] | None = None
) -> HFConfig:
    """Read a Hugging Face ``config.json`` (see the module doc for the rules).

    Args:
        path: the file.
        overrides: keys to set (``--arg``) before anything is read from the config.

    Returns:
        An :class:`HFConfig`.

    Raises:
        FormatError: not JSON, not an object, no ``model_type``, or an unknown dtype.

    Example:
        >>> import json, tempfile, os
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "config.json")
        >>> _ = Path(p).write_text(json.dumps({"model_type": "gpt2", "torch_dtype": "float16"}))
        >>> c = read_hf_config(p)
        >>> c.model_type, c.architecture, c.dtype.value
        ('gpt2', None, 'F16')
    """
    p = Path(path)
    data = decode_special_floats(_load_json(p))
    if not isinstance(data, dict):
        raise FormatError(
            p, f"expected a JSON object (a model config), found {type(data).__name__}"
        )
    data.update(overrides or {})
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        archs = data.get("architectures")
        hint = f" (it names architectures {archs})" if archs else ""
        raise FormatError(
            p,
            "no 'model_type': expected a Hugging Face model config as save_pretrained writes it, "
            f'with a "model_type" such as "llama" or "bert"{hint}',
        )
    archs = data.get("architectures")
    if archs is not None and not (
        isinstance(archs, list) and all(isinstance(a, str) and a for a in archs)
    ):
        raise FormatError(p, f"'architectures': expected a list of class names, found {archs!r}")
    notes: list[str] = []
    architecture = archs[0] if archs else None
    if archs and len(archs) > 1:
        notes.append(f"config.json names {len(archs)} architectures; counted the first, {archs[0]}")
    dtype, dtype_note = _dtype_of(p, data)
    notes.append(dtype_note)
    return HFConfig(p, data, model_type, architecture, dtype, notes)


def _dtype_of(path: Path, data: dict[str, Any]) -> tuple[DType, str]:
    for key in ("dtype", "torch_dtype"):
        value = data.get(key)
        if value is None or value == "auto":
            continue
        name = str(value).removeprefix("torch.")
        try:
            dtype = DType.from_torch(name)
        except UnsupportedDTypeError:
            raise FormatError(
                path, f"{key!r}: expected a torch dtype name such as 'bfloat16', found {value!r}"
            ) from None
        return dtype, f"parameter dtype {dtype.value} from config.json {key!r}"
    return (
        DType.F32,
        "config.json gives no dtype: parameters counted as F32 (transformers' default)",
    )
