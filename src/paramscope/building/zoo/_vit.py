"""ViT-B/16 in the torchvision layout (``torchvision.models.vision_transformer``).

Entries: ``class_token``, ``conv_proj`` (the patch embedding), ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_{i}.ln_1`` / ``self_attention`` (an ``nn.MultiheadAttention``:
``in_proj_weight``, ``in_proj_bias``, ``out_proj``) / ``ln_2`` / ``mlp.0`` / ``mlp.3``,
``encoder.ln`` and ``heads.head``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..._errors import ArgumentError

__all__ = ["PRESETS", "Encoder", "EncoderBlock", "ViTConfig", "VisionTransformer", "build"]


@dataclass(frozen=True)
class ViTConfig:
    """Vision Transformer shape (torchvision argument names).

    Args:
        image_size: side of the square input image.
        patch_size: side of a square patch; must divide ``image_size``.
        num_layers: encoder blocks.
        num_heads: attention heads; must divide ``hidden_dim``.
        hidden_dim: token width.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout after attention, in the MLP and on the embeddings.
        attention_dropout: dropout on the attention weights.
        num_classes: outputs of ``heads.head``.
        in_channels: image channels.
    """

    image_size: int = 224
    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    dropout: float = 0.0
    attention_dropout: float = 0.0
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ArgumentError(
                f"ViTConfig: patch_size={self.patch_size} must divide "
                f"image_size={self.image_size}; choose a divisor of {self.image_size}"
            )
        if self.hidden_dim % self.num_heads:
            raise ArgumentError(
                f"ViTConfig: num_heads={self.num_heads} must divide "
                f"hidden_dim={self.hidden_dim}; choose a divisor of {self.hidden_dim}"
            )


def _mlp_block(config: ViTConfig) -> nn.Sequential:
    """Linear → GELU → Dropout → Linear → Dropout: torchvision's ``MLPBlock`` (``mlp.0/3``)."""
    block = nn.Sequential(
        nn.Linear(config.hidden_dim, config.mlp_dim),
        nn.GELU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.mlp_dim, config.hidden_dim),
        nn.Dropout(config.dropout),
    )
    for m in block:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.normal_(m.bias, std=1e-6)
    return block


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(x))``.

    Args:
        config: the shape.

    Example:
        >>> cfg = ViTConfig(hidden_dim=16, num_heads=2, mlp_dim=32)
        >>> EncoderBlock(cfg)(torch.zeros(1, 5, 16)).shape
        torch.Size([1, 5, 16])
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(
            config.hidden_dim, config.num_heads, dropout=config.attention_dropout, batch_first=True
        )
        self.dropout = nn.Dropout(config.dropout)
        self.ln_2 = nn.LayerNorm(config.hidden_dim, eps=1e-6)
        self.mlp = _mlp_block(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(N, tokens, hidden_dim)``."""
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Learned position embedding, the blocks, a final LayerNorm.

    Args:
        config: the shape.
        seq_length: tokens per image, class token included.

    Example:
        >>> cfg = ViTConfig(hidden_dim=16, num_heads=2, mlp_dim=32, num_layers=1)
        >>> Encoder(cfg, 5)(torch.zeros(1, 5, 16)).shape
        torch.Size([1, 5, 16])
    """

    def __init__(self, config: ViTConfig, seq_length: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.zeros(1, seq_length, config.hidden_dim))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.Sequential(
            OrderedDict(
                (f"encoder_layer_{i}", EncoderBlock(config)) for i in range(config.num_layers)
            )
        )
        self.ln = nn.LayerNorm(config.hidden_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, seq_length, hidden_dim)`` tokens."""
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """Patchify with a strided convolution, prepend a class token, encode, classify it.

    Args:
        config: the shape.

    Example:
        >>> cfg = ViTConfig(image_size=32, hidden_dim=16, num_heads=2, mlp_dim=32, num_layers=1)
        >>> VisionTransformer(cfg)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 1000])
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        d, p = config.hidden_dim, config.patch_size
        self.conv_proj = nn.Conv2d(config.in_channels, d, kernel_size=p, stride=p)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = Encoder(config, (config.image_size // p) ** 2 + 1)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(d, config.num_classes)))
        # torchvision's initialisation: LeCun-normal patch embedding, zero classifier
        fan_in = config.in_channels * p * p
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, image_size, image_size)`` images to ``(N, num_classes)`` logits."""
        x = self.conv_proj(x)  # (N, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (N, patches, D)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.encoder(x)
        return self.heads(x[:, 0])


PRESETS: dict[str, ViTConfig] = {"vit-b-16": ViTConfig()}


def build(config: ViTConfig) -> VisionTransformer:
    """Build a Vision Transformer.

    Args:
        config: the shape.

    Returns:
        The model.

    Example:
        >>> with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        ...     model = build(PRESETS["vit-b-16"])
        >>> sum(p.numel() for p in model.parameters())
        86567656
    """
    return VisionTransformer(config)
