"""GPT-2 (small, medium, large, XL) in the HF transformers ``GPT2LMHeadModel`` layout.

Entries: ``transformer.wte``, ``transformer.wpe``, ``transformer.h.{i}.ln_1`` /
``attn.c_attn`` / ``attn.c_proj`` / ``ln_2`` / ``mlp.c_fc`` / ``mlp.c_proj``,
``transformer.ln_f`` and ``lm_head``. The projections are GPT-2's ``Conv1D``: a linear layer
whose weight is stored transposed, ``(in, out)``. ``lm_head.weight`` is the same Parameter as
``transformer.wte.weight`` (tied), so it is one parameter but two ``state_dict`` entries, as in
transformers. No ``attn.bias`` causal-mask buffer: transformers 5 no longer has one either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import ArgumentError

__all__ = ["PRESETS", "Block", "CausalSelfAttention", "Conv1D", "GPT2Config", "GPT2LMHeadModel"]


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2 shape (HF ``GPT2Config`` field names and defaults).

    Args:
        vocab_size: token vocabulary.
        n_positions: longest sequence (rows of ``wpe``).
        n_embd: model width.
        n_layer: transformer blocks.
        n_head: attention heads; must divide ``n_embd``.
        n_inner: MLP hidden width; ``None`` means ``4 * n_embd``.
        layer_norm_epsilon: LayerNorm epsilon.
        embd_pdrop: dropout on the embeddings.
        attn_pdrop: dropout on the attention weights.
        resid_pdrop: dropout on each residual branch.
        tie_word_embeddings: make ``lm_head.weight`` the same Parameter as ``wte.weight``.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    layer_norm_epsilon: float = 1e-5
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ArgumentError(
                f"GPT2Config: n_head={self.n_head} must divide n_embd={self.n_embd}; "
                f"choose a divisor of {self.n_embd}"
            )


class Conv1D(nn.Module):
    """GPT-2's linear layer: ``y = x @ weight + bias`` with ``weight`` of shape ``(n_in, n_out)``.

    Args:
        n_out: output features.
        n_in: input features.

    Example:
        >>> Conv1D(6, 4).weight.shape
        torch.Size([4, 6])
    """

    def __init__(self, n_out: int, n_in: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``(..., n_in)``."""
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], -1
        )


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused ``c_attn`` q/k/v projection.

    Args:
        config: the shape.

    Example:
        >>> cfg = GPT2Config(n_embd=16, n_head=2)
        >>> CausalSelfAttention(cfg)(torch.zeros(1, 3, 16)).shape
        torch.Size([1, 3, 16])
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.attn_pdrop = config.attn_pdrop
        self.c_attn = Conv1D(3 * config.n_embd, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over ``(B, T, n_embd)``, each position to itself and the ones before."""
        b, t, c = x.shape
        q, k, v = (
            z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
            for z in self.c_attn(x).split(c, dim=2)
        )
        dropout = self.attn_pdrop if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


class MLP(nn.Module):
    """``c_fc`` → tanh-approximated GELU (GPT-2's ``gelu_new``) → ``c_proj`` → dropout.

    Args:
        config: the shape.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(inner, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, inner)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to ``(..., n_embd)``."""
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(x))``.

    Args:
        config: the shape.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(B, T, n_embd)``."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    """Token and position embeddings, the blocks, a final LayerNorm (HF ``GPT2Model``).

    Args:
        config: the shape.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T)`` token ids to ``(B, T, n_embd)`` hidden states."""
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class GPT2LMHeadModel(nn.Module):
    """GPT-2 with a language-model head tied to the token embedding.

    Args:
        config: the shape.

    Example:
        >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
        >>> model(torch.zeros(1, 8, dtype=torch.long)).shape
        torch.Size([1, 8, 50])
        >>> model.lm_head.weight is model.transformer.wte.weight
        True
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # transformers' initialisation: N(0, 0.02), residual projections scaled by depth
        for module in self.modules():
            if isinstance(module, nn.Embedding | nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T)`` token ids to ``(B, T, vocab_size)`` next-token logits."""
        return self.lm_head(self.transformer(input_ids))


PRESETS: dict[str, GPT2Config] = {
    "gpt2": GPT2Config(),
    "gpt2-medium": GPT2Config(n_embd=1024, n_layer=24, n_head=16),
    "gpt2-large": GPT2Config(n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25),
}


def build(config: GPT2Config) -> GPT2LMHeadModel:
    """Build GPT-2.

    Args:
        config: the shape.

    Returns:
        The model, ``lm_head`` tied unless ``config.tie_word_embeddings`` is false.

    Example:
        >>> with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        ...     model = build(PRESETS["gpt2"])
        >>> sum(p.numel() for p in model.parameters())
        124439808
    """
    return GPT2LMHeadModel(config)
