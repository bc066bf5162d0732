"""LeNet-5 for 32×32 single-channel input, in the PyTorch "Neural Networks" tutorial layout.

Entries: ``conv1`` Conv2d(1, 6, 5), ``conv2`` Conv2d(6, 16, 5), ``fc1`` Linear(400, 120),
``fc2`` Linear(120, 84), ``fc3`` Linear(84, 10): 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706
parameters. ReLU and 2×2 max-pooling replace the original tanh and subsampling (no parameters
change).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PRESETS", "LeNet5", "LeNetConfig", "build"]


@dataclass(frozen=True)
class LeNetConfig:
    """LeNet-5 sizes.

    Args:
        in_channels: input channels (1 for grey images).
        num_classes: outputs of ``fc3``.
    """

    in_channels: int = 1
    num_classes: int = 10


class LeNet5(nn.Module):
    """conv(5×5) → pool → conv(5×5) → pool → three Linear layers; input ``(N, C, 32, 32)``.

    Args:
        config: the sizes.

    Example:
        >>> LeNet5(LeNetConfig())(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: LeNetConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(config.in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, 32, 32)`` images to ``(N, num_classes)`` logits."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 6, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 16, 5, 5)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


PRESETS: dict[str, LeNetConfig] = {"lenet5": LeNetConfig()}


def build(config: LeNetConfig) -> LeNet5:
    """Build LeNet-5.

    Args:
        config: the sizes.

    Returns:
        The model.

    Example:
        >>> sum(p.numel() for p in build(LeNetConfig()).parameters())
        61706
    """
    return LeNet5(config)
