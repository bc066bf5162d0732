"""Analytic counters of the BERT and RoBERTa encoders of transformers.

Read from transformers 5.x ``models/bert/modeling_bert.py`` and
``models/roberta/modeling_roberta.py``: the embeddings own two non-persistent int64 buffers
(``position_ids`` and ``token_type_ids``, shape ``(1, max_position_embeddings)``) which the
module walk meets before the embedding tables; RoBERTa registers ``position_embeddings``
last. The masked-LM heads tie ``decoder.weight`` to the word embeddings and ``decoder.bias``
to the head's own ``bias`` when ``tie_word_embeddings`` (the default).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._dtypes import DType
from ._hf_common import Cfg, Entries, Unsupported

__all__ = ["ENCODER_FAMILIES", "EncoderFamily", "build_encoder"]


@dataclass(frozen=True)
class EncoderFamily:
    """One encoder ``model_type``: class names, the attribute prefix and defaults.

    Attributes:
        model_type: ``bert`` or ``roberta``.
        stem: class-name stem (``Bert``).
        prefix: the base model's attribute in the heads (``bert.``).
        pad_token_id: the config default.
        vocab_size: the config default.
    """

    model_type: str
    stem: str
    prefix: str
    pad_token_id: int
    vocab_size: int

    @property
    def classes(self) -> dict[str, str]:
        """Class name → kind (``base``, ``mlm``, ``seqcls``)."""
        return {
            f"{self.stem}Model": "base",
            f"{self.stem}ForMaskedLM": "mlm",
            f"{self.stem}ForSequenceClassification": "seqcls",
        }


ENCODER_FAMILIES: dict[str, EncoderFamily] = {
    "bert": EncoderFamily("bert", "Bert", "bert", pad_token_id=0, vocab_size=30522),
    "roberta": EncoderFamily("roberta", "Roberta", "roberta", pad_token_id=1, vocab_size=50265),
}


def _attention(e: Entries, prefix: str, hidden: int) -> None:
    for n in ("query", "key", "value"):
        e.linear(f"{prefix}.self.{n}", hidden, hidden, bias=True)
    e.linear(f"{prefix}.output.dense", hidden, hidden, bias=True)
    e.layernorm(f"{prefix}.output.LayerNorm", hidden)


def _base(e: Entries, fam: EncoderFamily, cfg: Cfg, p: str, *, pooler: bool) -> None:
    vocab = cfg.int("vocab_size", minimum=1)
    hidden = cfg.int("hidden_size", minimum=1)
    heads = cfg.int("num_attention_heads", minimum=1)
    if hidden % heads:
        raise Unsupported("hidden_size is not a multiple of num_attention_heads")
    inter = cfg.int("intermediate_size")
    layers = cfg.int("num_hidden_layers")
    positions = cfg.int("max_position_embeddings")
    types = cfg.int("type_vocab_size")
    pad = cfg.get("pad_token_id")
    cross = cfg.bool("add_cross_attention")
    if cross and not cfg.bool("is_decoder"):
        raise Unsupported("add_cross_attention without is_decoder (transformers refuses it)")
    emb = f"{p}embeddings"
    e.buffer(f"{emb}.position_ids", (1, positions), DType.I64, persistent=False)
    e.buffer(f"{emb}.token_type_ids", (1, positions), DType.I64, persistent=False)
    e.embedding(f"{emb}.word_embeddings", vocab, hidden, pad)
    if fam.model_type == "bert":
        e.embedding(f"{emb}.position_embeddings", positions, hidden)
        e.embedding(f"{emb}.token_type_embeddings", types, hidden)
        e.layernorm(f"{emb}.LayerNorm", hidden)
    else:
        e.embedding(f"{emb}.token_type_embeddings", types, hidden)
        e.layernorm(f"{emb}.LayerNorm", hidden)
        e.embedding(f"{emb}.position_embeddings", positions, hidden, pad)
    for i in range(layers):
        layer = f"{p}encoder.layer.{i}"
        _attention(e, f"{layer}.attention", hidden)
        if cross:
            _attention(e, f"{layer}.crossattention", hidden)
        e.linear(f"{layer}.intermediate.dense", hidden, inter, bias=True)
        e.linear(f"{layer}.output.dense", inter, hidden, bias=True)
        e.layernorm(f"{layer}.output.LayerNorm", hidden)
    if pooler:
        e.linear(f"{p}pooler.dense", hidden, hidden, bias=True)


def _mlm_head(e: Entries, cfg: Cfg, head: str, transform: str, norm: str, word: str) -> None:
    vocab = cfg.int("vocab_size", minimum=1)
    hidden = cfg.int("hidden_size", minimum=1)
    e.param(f"{head}.bias", (vocab,))  # the head's own parameter comes before its children
    e.linear(f"{head}.{transform}", hidden, hidden, bias=True)
    e.layernorm(f"{head}.{norm}", hidden)
    if cfg.bool("tie_word_embeddings"):
        e.tie(f"{head}.decoder.weight", word)
        e.tie(f"{head}.decoder.bias", f"{head}.bias")
    else:
        e.linear(f"{head}.decoder", hidden, vocab, bias=True)


def build_encoder(fam: EncoderFamily, cfg: Cfg, kind: str, dtype: DType) -> Entries:
    """Write the entries of a BERT / RoBERTa ``base`` / ``mlm`` / ``seqcls`` model.

    Args:
        fam: the family.
        cfg: the config.
        kind: ``"base"`` (with pooler), ``"mlm"`` or ``"seqcls"``.
        dtype: the build dtype.

    Returns:
        The entries in ``scan_module`` order.

    Raises:
        Unsupported: for configs not modelled.

    Example:
        >>> cfg = Cfg({"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 0},
        ...           {"vocab_size": 10, "intermediate_size": 4, "max_position_embeddings": 6,
        ...            "type_vocab_size": 2, "pad_token_id": 0, "tie_word_embeddings": True})
        >>> e = build_encoder(ENCODER_FAMILIES["bert"], cfg, "mlm", DType.F32)
        >>> for x in e.items[-2:]:
        ...     print(x.name, "->", x.tie)
        cls.predictions.decoder.weight -> bert.embeddings.word_embeddings.weight
        cls.predictions.decoder.bias -> cls.predictions.bias
    """
    e = Entries(dtype)
    if kind == "base":
        _base(e, fam, cfg, "", pooler=True)
        return e
    p = f"{fam.prefix}."
    word = f"{p}embeddings.word_embeddings.weight"
    hidden = cfg.int("hidden_size", minimum=1)
    if kind == "mlm":
        _base(e, fam, cfg, p, pooler=False)
        if fam.model_type == "bert":
            _mlm_head(e, cfg, "cls.predictions", "transform.dense", "transform.LayerNorm", word)
        else:
            _mlm_head(e, cfg, "lm_head", "dense", "layer_norm", word)
    elif fam.model_type == "bert":
        _base(e, fam, cfg, p, pooler=True)
        e.linear("classifier", hidden, cfg.num_labels(), bias=True)
    else:
        _base(e, fam, cfg, p, pooler=False)
        e.linear("classifier.dense", hidden, hidden, bias=True)
        e.linear("classifier.out_proj", hidden, cfg.num_labels(), bias=True)
    return e
