"""String enums shared by the library and the CLI: one definition for both spellings."""

from __future__ import annotations

import enum
import sys

__all__ = ["Format", "Role", "RoleSource", "StrEnum"]

if sys.version_info >= (3, 11):
    StrEnum = enum.StrEnum
else:  # pragma: no cover - exercised on Python 3.10 only

    class StrEnum(str, enum.Enum):
        """`enum.StrEnum` for Python 3.10."""

        def __str__(self) -> str:
            return str(self.value)


class Role(StrEnum):
    """What an entry is to a model: a learnable parameter or a buffer (state, not learned)."""

    PARAM = "param"
    BUFFER = "buffer"


class RoleSource(StrEnum):
    """How the roles of a manifest were found: stored by paramscope, or inferred by rule."""

    EXACT = "exact"
    INFERRED = "inferred"


class Format(StrEnum):
    """Where a manifest came from."""

    SAFETENSORS = "safetensors"
    SHARDED = "sharded"
    TORCH = "torch"
    NUMPY = "npz"
    DCP = "dcp"
    GGUF = "gguf"  # llama.cpp
    ONNX = "onnx"  # a model's initializers (io/_onnx.py)
    KERAS = "keras"  # Keras 3 .weights.h5 / .keras (io/_keras.py)
    FLAX = "flax-msgpack"  # flax.serialization.to_bytes (io/_flax.py)
    ORBAX = "orbax"  # an Orbax checkpoint folder (io/_flax.py)
    PARAMDICT = "paramdict"
    MODULE = "module"
    CONFIG = "config"  # counted analytically from a Hugging Face config.json, nothing built
