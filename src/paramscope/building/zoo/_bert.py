"""BERT base in the HF transformers ``BertModel`` layout (encoder and pooler, no task head).

Entries: ``embeddings.word_embeddings`` / ``position_embeddings`` / ``token_type_embeddings``
/ ``LayerNorm``, ``encoder.layer.{i}.attention.self.query`` / ``key`` / ``value``,
``attention.output.dense`` / ``LayerNorm``, ``intermediate.dense``, ``output.dense`` /
``LayerNorm`` and ``pooler.dense``. transformers 5 also has the non-persistent buffers
``embeddings.position_ids`` and ``embeddings.token_type_ids``; they are not in its
``state_dict``, and here positions and segment 0 are made in ``forward`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import ArgumentError

__all__ = ["PRESETS", "BertConfig", "BertLayer", "BertModel", "build"]


@dataclass(frozen=True)
class BertConfig:
    """BERT shape (HF ``BertConfig`` field names and defaults: bert-base-uncased).

    Args:
        vocab_size: token vocabulary.
        hidden_size: model width.
        num_hidden_layers: encoder layers.
        num_attention_heads: attention heads; must divide ``hidden_size``.
        intermediate_size: hidden width of each layer's MLP.
        max_position_embeddings: longest sequence.
        type_vocab_size: segment (token type) vocabulary.
        layer_norm_eps: LayerNorm epsilon.
        hidden_dropout_prob: dropout on embeddings and residual branches.
        attention_probs_dropout_prob: dropout on the attention weights.
        pad_token_id: row of ``word_embeddings`` kept at zero by the initialisation.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ArgumentError(
                f"BertConfig: num_attention_heads={self.num_attention_heads} must divide "
                f"hidden_size={self.hidden_size}; choose a divisor of {self.hidden_size}"
            )


class BertEmbeddings(nn.Module):
    """Sum of word, position and token-type embeddings, then LayerNorm and dropout.

    Args:
        config: the shape.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed ``(B, T)`` token ids (segment 0 unless ``token_type_ids`` says otherwise)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids)
        x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Bidirectional multi-head attention with separate ``query``, ``key``, ``value``.

    Args:
        config: the shape.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.dropout_prob = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over ``(B, T, hidden)``; ``mask`` is a boolean ``(B, 1, 1, T)`` keep-mask."""
        b, t, d = x.shape
        q, k, v = (
            proj(x).view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        dropout = self.dropout_prob if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return y.transpose(1, 2).reshape(b, t, d)


class BertSublayerOutput(nn.Module):
    """``LayerNorm(residual + dropout(dense(x)))``: HF ``BertSelfOutput`` and ``BertOutput``.

    Args:
        n_in: input features of ``dense``.
        config: the shape.
    """

    def __init__(self, n_in: int, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Project ``x``, add ``residual`` and normalise."""
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertAttention(nn.Module):
    """Self-attention followed by its output projection (``self`` and ``output``).

    Args:
        config: the shape.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSublayerOutput(config.hidden_size, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply attention and the post-norm residual."""
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    """``gelu(dense(x))``, widening to ``intermediate_size``.

    Args:
        config: the shape.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Widen and activate."""
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Post-norm encoder layer: attention, then MLP (``intermediate`` and ``output``).

    Args:
        config: the shape.

    Example:
        >>> cfg = BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32)
        >>> BertLayer(cfg)(torch.zeros(1, 4, 16)).shape
        torch.Size([1, 4, 16])
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSublayerOutput(config.intermediate_size, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layer to ``(B, T, hidden)``."""
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    """The stack of layers (``encoder.layer.{i}``).

    Args:
        config: the shape.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply every layer."""
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    """``tanh(dense(first token))``: the sentence representation.

    Args:
        config: the shape.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, T, hidden)`` to ``(B, hidden)``."""
        return self.activation(self.dense(x[:, 0]))


class BertModel(nn.Module):
    """BERT encoder with pooler.

    Args:
        config: the shape.

    Example:
        >>> cfg = BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32,
        ...                  num_hidden_layers=1, vocab_size=50)
        >>> hidden, pooled = BertModel(cfg)(torch.zeros(1, 8, dtype=torch.long))
        >>> hidden.shape, pooled.shape
        (torch.Size([1, 8, 16]), torch.Size([1, 16]))
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        # transformers' initialisation: N(0, 0.02) weights, zero biases and padding row
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.embeddings.word_embeddings.weight[config.pad_token_id].zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``(B, T)`` token ids.

        Args:
            input_ids: token ids.
            attention_mask: ``(B, T)``, 1 for tokens to attend to and 0 for padding.
            token_type_ids: ``(B, T)`` segment ids; all 0 when ``None``.

        Returns:
            ``(last_hidden_state (B, T, hidden), pooler_output (B, hidden))``.
        """
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, None, None, :].bool()
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        return x, self.pooler(x)


PRESETS: dict[str, BertConfig] = {"bert-base": BertConfig()}


def build(config: BertConfig) -> BertModel:
    """Build BERT.

    Args:
        config: the shape.

    Returns:
        The model.

    Example:
        >>> with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        ...     model = build(PRESETS["bert-base"])
        >>> sum(p.numel() for p in model.parameters())
        109482240
    """
    return BertModel(config)
