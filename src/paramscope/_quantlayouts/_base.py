"""The shared vocabulary of quantised-checkpoint layouts: what a recogniser finds and returns.

A quantised checkpoint stores one logical float weight (``model.layers.0.mlp.down_proj.weight``,
shape ``(4096, 11008)``) as one or more *data* entries holding the packed values (GPTQ's
``qweight``, bitsandbytes' U8 ``weight``, GGUF's Q4_K blocks) and *metadata* entries
(scales, zero points, ``absmax``, ``g_idx``, quant maps, a JSON state blob). A recogniser
(one per family, in the modules of this package) reads a :class:`~paramscope.Manifest` (names,
dtypes, shapes; never values) and, when present, the folder's quantisation config, and returns
one :class:`QuantWeight` per logical weight it is sure of, plus the entries that look
quantised but fit no layout.

This module is core: it imports only core modules (no torch, no numpy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._manifest import Manifest

__all__ = [
    "EVIDENCE_CONFIG",
    "EVIDENCE_FILE",
    "EVIDENCE_NAMES",
    "QuantConfig",
    "QuantWeight",
    "Recognised",
    "Recogniser",
]

#: Where the knowledge of a layout came from, as the output says it.
EVIDENCE_CONFIG = "config.json"  # or the config file's own name (quantize_config.json, ...)
EVIDENCE_FILE = "file metadata"  # the checkpoint says it itself (GGUF types, safetensors metadata)
EVIDENCE_NAMES = "inferred from names"  # names, dtypes and shapes only


@dataclass(frozen=True)
class QuantConfig:
    """A quantisation config found next to (or inside) the checkpoint: authoritative evidence.

    Attributes:
        method: the ``quant_method`` as written (``"gptq"``, ``"awq"``, ``"bitsandbytes"``,
            ``"fp8"``, ``"compressed-tensors"``, ``"mxfp4"``, ``"quanto"``, ``"mlx"`` ...),
            lower case.
        bits: bits per weight value when the config says (``4``), else ``None``.
        group_size: the group size when the config says (``128``; ``-1``: per channel), else
            ``None``.
        source: the file it was read from (``"config.json"``, ``"quantize_config.json"``,
            ``"quant_config.json"``, ``"safetensors metadata"``), as the output names it.
        raw: the config as written (JSON), for the fields a family reads itself.
    """

    method: str
    bits: float | None = None
    group_size: int | None = None
    source: str = EVIDENCE_CONFIG
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantWeight:
    """One logical float weight, and the stored entries that hold it.

    Attributes:
        name: the logical name, as the float checkpoint would name it (for GPTQ
            ``x.qweight`` this is ``x.weight``; for bitsandbytes ``x.weight`` it is itself).
        method: the layout, lower case, as shown (``"gptq"``, ``"awq"``, ``"bnb-nf4"``,
            ``"bnb-fp4"``, ``"bnb-int8"``, ``"fp8"``, ``"compressed-tensors"``, ``"mlx"``,
            ``"mxfp4"``, ``"quanto"``, ``"paramscope"``, ``"gguf"``).
        bits: bits per stored value (``4``; GGUF types: their nominal bits, e.g. 4.5 for Q4_K).
        group_size: values per scale group (``None``: per tensor or not grouped; ``-1``:
            per output channel).
        shape: the logical shape, numpy order (outermost first), as the float weight has it.
        data: the stored entries holding the quantised values (usually one).
        meta: the stored entries holding its metadata (scales, zeros, absmax, g_idx, maps,
            state blobs); each belongs to exactly one weight.
        evidence: where the layout came from: a config file's name, :data:`EVIDENCE_FILE` or
            :data:`EVIDENCE_NAMES`.
        logical_dtype: the float dtype it stands for when known (``"F16"``), else ``None``.
        detail: family-specific facts worth showing (``{"act_order": True}``,
            ``{"type": "Q4_K"}``, ``{"double_quant": True}``), JSON-able.
    """

    name: str
    method: str
    bits: float | None
    group_size: int | None
    shape: tuple[int, ...]
    data: tuple[str, ...]
    meta: tuple[str, ...] = ()
    evidence: str = EVIDENCE_NAMES
    logical_dtype: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Recognised:
    """What one recogniser found in a manifest.

    Attributes:
        weights: the logical weights it is sure of.
        unknown: entries that look quantised (packed integer dtypes next to scales, names of
            the family) but fit none of its layouts: counted at their stored size, and the
            total says it may be wrong.
        notes: what it wants said (one line each).
    """

    weights: list[QuantWeight] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: A recogniser: ``(manifest, config or None, names already claimed) -> Recognised``. It must
#: not claim a name in ``claimed`` (an earlier recogniser took it), must read only names,
#: dtypes, shapes and ``extra`` (never values), must raise
#: :class:`~paramscope.QuantConfigError` when an authoritative config contradicts the tensors
#: (naming the entry and both values), and must cost O(entries).
Recogniser = Callable[[Manifest, "QuantConfig | None", frozenset[str]], Recognised]
