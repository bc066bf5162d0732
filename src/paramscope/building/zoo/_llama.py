"""Llama 2 7B and Llama 3 8B in the HF transformers ``LlamaForCausalLM`` layout.

Entries: ``model.embed_tokens``, ``model.layers.{i}.self_attn.q_proj`` / ``k_proj`` /
``v_proj`` / ``o_proj``, ``mlp.gate_proj`` / ``up_proj`` / ``down_proj``,
``input_layernorm``, ``post_attention_layernorm`` (RMSNorm), ``model.norm`` and an untied
``lm_head``; no biases. The rotary ``inv_freq`` is a non-persistent buffer of
``model.rotary_emb``, so it is not in the ``state_dict``, as in transformers. Llama 3 uses
grouped-query attention: 8 key/value heads shared by 32 query heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import ArgumentError

__all__ = ["PRESETS", "LlamaConfig", "LlamaDecoderLayer", "LlamaForCausalLM", "RMSNorm", "build"]


@dataclass(frozen=True)
class LlamaConfig:
    """Llama shape (HF ``LlamaConfig`` field names; defaults are Llama 2 7B).

    Args:
        vocab_size: token vocabulary.
        hidden_size: model width.
        intermediate_size: hidden width of the SwiGLU MLP.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads; must divide ``num_attention_heads``.
        head_dim: width of one head; ``None`` means ``hidden_size // num_attention_heads``.
        max_position_embeddings: context length the model was trained for.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: base of the rotary frequencies.
        attention_dropout: dropout on the attention weights.
        tie_word_embeddings: make ``lm_head.weight`` the same Parameter as ``embed_tokens``.
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    attention_dropout: float = 0.0
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ArgumentError(
                f"LlamaConfig: num_key_value_heads={self.num_key_value_heads} must divide "
                f"num_attention_heads={self.num_attention_heads}; choose a divisor of "
                f"{self.num_attention_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ArgumentError(
                f"LlamaConfig: num_attention_heads={self.num_attention_heads} must divide "
                f"hidden_size={self.hidden_size}; choose a divisor of {self.hidden_size}, "
                "or set head_dim"
            )

    @property
    def dim_per_head(self) -> int:
        """The width of one attention head."""
        return self.head_dim or self.hidden_size // self.num_attention_heads


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x²) + eps)``, computed in float32.

    Args:
        size: features.
        eps: added to the mean square.

    Example:
        >>> RMSNorm(4)(torch.ones(2, 4))
        tensor([[1.0000, 1.0000, 1.0000, 1.0000],
                [1.0000, 1.0000, 1.0000, 1.0000]], grad_fn=<MulBackward0>)
    """

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x``."""
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding: the cos/sin tables for given positions.

    Args:
        config: the shape.
    """

    inv_freq: torch.Tensor

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config  # kept so that a meta build can recompute inv_freq on load
        dim = config.dim_per_head
        inv_freq = torch.empty(dim // 2)
        if not inv_freq.is_meta:  # arithmetic on meta costs a second of imports; skip it
            exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
            inv_freq = 1.0 / (config.rope_theta**exponents)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)``, each ``(T, head_dim)``, for ``(T,)`` positions."""
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x[i], x[i + d/2])`` of the last dimension by the position's angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


class LlamaAttention(nn.Module):
    """Causal attention with rotary positions and grouped key/value heads.

    Args:
        config: the shape.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.dim_per_head
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = hd
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Attend over ``(B, T, hidden)`` with rotary tables ``cos``, ``sin`` of ``(T, hd)``."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        group = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class LlamaMLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``.

    Args:
        config: the shape.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        d, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, inner, bias=False)
        self.up_proj = nn.Linear(d, inner, bias=False)
        self.down_proj = nn.Linear(inner, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to ``(..., hidden)``."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm layer: ``x + attn(norm(x))``, then ``+ mlp(norm(x))``.

    Args:
        config: the shape.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``(B, T, hidden)``."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Token embedding, the decoder layers, a final RMSNorm (HF ``LlamaModel``).

    Args:
        config: the shape.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T)`` token ids to ``(B, T, hidden)`` hidden states."""
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        cos, sin = self.rotary_emb(positions)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """Llama with a language-model head.

    Args:
        config: the shape.

    Example:
        >>> cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        ...                   num_attention_heads=4, num_key_value_heads=2, vocab_size=50)
        >>> LlamaForCausalLM(cfg)(torch.zeros(1, 8, dtype=torch.long)).shape
        torch.Size([1, 8, 50])
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # transformers' initialisation: N(0, 0.02) for every matrix
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T)`` token ids to ``(B, T, vocab_size)`` next-token logits."""
        return self.lm_head(self.model(input_ids))


PRESETS: dict[str, LlamaConfig] = {
    "llama-2-7b": LlamaConfig(),
    "llama-3-8b": LlamaConfig(
        vocab_size=128256,
        intermediate_size=14336,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
}


def build(config: LlamaConfig) -> LlamaForCausalLM:
    """Build Llama.

    Args:
        config: the shape.

    Returns:
        The model.

    Example:
        >>> with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        ...     model = build(PRESETS["llama-3-8b"])
        >>> sum(p.numel() for p in model.parameters())
        8030261248
    """
    return LlamaForCausalLM(config)
