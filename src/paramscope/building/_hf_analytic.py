"""Counting a Hugging Face model from its config.json alone: no torch, no transformers.

:func:`analytic_manifest` gives the :class:`~paramscope.Manifest` that
``scan_module(model).manifest()`` gives for the model transformers builds from the same
config (``cls._from_config(config, dtype=...)`` on the meta device): every entry name, shape,
dtype, role, trainable flag, non-persistent buffer flag and tie, in the module-walk order. It
knows the families below exactly, applying each config class's defaults for keys the JSON
leaves out; for any other model type, class or option it returns ``None`` so that the caller
builds the model with transformers instead. It never guesses.

Supported (``model_type``: classes):

* ``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``gemma``, ``gemma2``, ``gemma3_text``,
  ``phi3``, ``mixtral``, ``qwen2_moe``, ``qwen3_moe``, ``deepseek_v2``, ``deepseek_v3``,
  ``gpt_oss``: the base model (``LlamaModel`` …), ``*ForCausalLM`` and
  ``*ForSequenceClassification``;
* ``bert``, ``roberta``: ``BertModel`` (with its pooler), ``BertForMaskedLM``,
  ``BertForSequenceClassification`` and the RoBERTa counterparts.

Checked against transformers 5.x by ``tests/test_hf_analytic.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._dtypes import DType
from .._enums import Format, RoleSource
from .._manifest import Manifest
from .._moe import moe_config_from_hf
from ._hf_common import Cfg, Unsupported
from ._hf_decoders import DecoderFamily, build_decoder
from ._hf_dense import DENSE_FAMILIES
from ._hf_encoders import ENCODER_FAMILIES, build_encoder
from ._hf_moe import MOE_FAMILIES

__all__ = ["VERIFIED_MODEL_TYPES", "analytic_manifest"]

_DECODERS: dict[str, DecoderFamily] = {**DENSE_FAMILIES, **MOE_FAMILIES}

VERIFIED_MODEL_TYPES: frozenset[str] = frozenset({*_DECODERS, *ENCODER_FAMILIES})
"""The ``model_type`` values :func:`analytic_manifest` counts (each checked in the tests)."""

_BUILD_DTYPES = frozenset({DType.F16, DType.BF16, DType.F32, DType.F64})


def _encoder_defaults(model_type: str) -> dict[str, Any]:
    fam = ENCODER_FAMILIES[model_type]
    return {
        "vocab_size": fam.vocab_size,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "pad_token_id": fam.pad_token_id,
        "is_decoder": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    }


def analytic_manifest(
    config: Mapping[str, Any],
    *,
    architecture: str | None,
    dtype: DType,
    source: str | None = None,
) -> Manifest | None:
    """The manifest of the model transformers would build from ``config``, counted from the
    config alone, or ``None`` where that is not modelled exactly.

    Args:
        config: the parsed config.json (with ``model_type``); it is not modified.
        architecture: the class to count (``config["architectures"][0]``), or ``None`` for
            the base model of the family.
        dtype: the floating dtype parameters are built in (``F16``, ``BF16``, ``F32`` or
            ``F64``). Buffers keep the dtype transformers gives them: rotary ``inv_freq`` is
            float32, BERT's ``position_ids`` int64, DeepSeek routers float32.
        source: the config path, recorded on the manifest.

    Returns:
        A manifest (format ``config``, exact roles) whose notes say how it was counted, or
        ``None`` for a model type, class, dtype or option not modelled (build the model with
        transformers then).

    Example:
        >>> cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        ...        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}
        >>> m = analytic_manifest(cfg, architecture="LlamaForCausalLM", dtype=DType.BF16)
        >>> sum(e.numel for e in m.values() if e.role.value == "param")
        95040
        >>> analytic_manifest(cfg, architecture="LlamaForTokenClassification",
        ...                   dtype=DType.BF16) is None
        True
    """
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or dtype not in _BUILD_DTYPES:
        return None
    try:
        if model_type in _DECODERS:
            fam = _DECODERS[model_type]
            kinds = {fam.base: "base", fam.causal: "causal", fam.seqcls: "seqcls"}
            kind = "base" if architecture is None else kinds.get(architecture)
            if kind is None:
                return None
            entries = build_decoder(fam, Cfg(config, fam.defaults), kind, dtype)
            cls = architecture or fam.base
        elif model_type in ENCODER_FAMILIES:
            enc = ENCODER_FAMILIES[model_type]
            kind = "base" if architecture is None else enc.classes.get(architecture)
            if kind is None:
                return None
            cfg = Cfg(config, _encoder_defaults(model_type))
            entries = build_encoder(enc, cfg, kind, dtype)
            cls = architecture or f"{enc.stem}Model"
        else:
            return None
    except Unsupported:
        return None
    notes = [
        f"counted analytically from config.json (model_type {model_type}, class {cls}), "
        f"parameters in {dtype.value}; nothing was built"
    ]
    freq = config.get("moe_layer_freq")
    if model_type.startswith("deepseek") and freq not in (None, 1):
        notes.append(
            f"moe_layer_freq={freq} is ignored, as transformers ignores it: every layer from "
            "first_k_dense_replace on is a MoE layer"
        )
    return Manifest(
        entries.items,
        format=Format.CONFIG,
        roles=RoleSource.EXACT,
        source=source,
        notes=notes,
        moe=moe_config_from_hf(config) if model_type in MOE_FAMILIES else None,
    )
