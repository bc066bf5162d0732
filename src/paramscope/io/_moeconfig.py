"""The mixture-of-experts facts of a checkpoint (top-k, experts), found next to it or in it.

* GGUF: the file's own metadata (``{arch}.expert_count``, ``{arch}.expert_used_count``);
* every other format: ``config.json`` in the checkpoint's folder (a file's folder, a sharded
  checkpoint's index folder, a DCP folder), its ``num_experts_per_tok`` and the like (see
  :func:`paramscope._moe.moe_config_from_hf`).

Counting reads only names and shapes to find the experts; these facts give the top-k a
token uses. A config that cannot be read is no evidence: the count then notes that the
active parameters cannot be computed and why.
"""

from __future__ import annotations

from pathlib import Path

from .._manifest import Manifest
from .._moe import MoEConfig, moe_config_from_gguf, moe_config_from_hf
from ._quantconfig import ConfigTooLarge, read_config_json

__all__ = ["find_moe_config"]


def find_moe_config(file: Path, m: Manifest) -> MoEConfig | None:
    """What the checkpoint's metadata or its folder's ``config.json`` says about experts.

    Args:
        file: the resolved checkpoint (a file, an index, or a DCP folder).
        m: its manifest (GGUF metadata is read from it).

    Returns:
        A :class:`~paramscope._moe.MoEConfig`, or ``None`` when nothing names experts.

    Example:
        >>> from paramscope import Manifest
        >>> find_moe_config(Path("no/such/model.safetensors"), Manifest([])) is None
        True
    """
    if m.format.value == "gguf":
        return moe_config_from_gguf(_gguf_metadata(m))
    folder = file if file.is_dir() else file.parent
    try:
        data = read_config_json(folder / "config.json")
    except ConfigTooLarge as exc:
        return _unreadable(f"config.json is {exc.args[0]:,} bytes, too large to be a config")
    except (OSError, ValueError, RecursionError) as exc:
        return _unreadable(f"config.json is not readable as JSON ({exc})")
    if not isinstance(data, dict):  # also None: no config.json
        return None
    return moe_config_from_hf(data, "config.json")


def _unreadable(why: str) -> MoEConfig:
    return MoEConfig(top_k=None, source="config.json", problem=why)


def _gguf_metadata(m: Manifest) -> dict[str, object]:
    return dict(getattr(m, "gguf_metadata", None) or m.metadata)
