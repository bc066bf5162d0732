"""Multi-layer perceptrons: the classic MNIST MLP (``mlp``) and SimpleNN (``mlp-3-5-2``).

``mlp`` is an ``nn.Sequential`` of Linear and ReLU, so its entries are ``0.weight``,
``2.weight``, ...; ``mlp-3-5-2`` is the tutorial ``SimpleNN`` (3 → 5 → 2) with named modules
``hidden``, ``relu`` and ``output``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from ..._errors import ArgumentError

__all__ = ["PRESETS", "MLPConfig", "SimpleNN", "SimpleNNConfig", "build"]


@dataclass(frozen=True)
class MLPConfig:
    """Sizes of a ReLU MLP built as ``nn.Sequential``.

    Args:
        sizes: layer widths from input to output; ``len(sizes) - 1`` Linear layers.
    """

    sizes: tuple[int, ...] = (784, 256, 128, 10)

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(s < 1 for s in self.sizes):
            raise ArgumentError(
                f"MLPConfig: sizes={self.sizes!r}: expected at least two positive widths "
                "(input, ..., output), e.g. [784, 256, 10]"
            )


@dataclass(frozen=True)
class SimpleNNConfig:
    """Sizes of the tutorial one-hidden-layer network (SimpleNN).

    Args:
        input_size: input features.
        hidden_size: hidden units.
        output_size: outputs.
    """

    input_size: int = 3
    hidden_size: int = 5
    output_size: int = 2


class SimpleNN(nn.Module):
    """Linear → ReLU → Linear with the tutorial's module names (hidden, relu, output).

    Args:
        config: the sizes.

    Example:
        >>> SimpleNN(SimpleNNConfig())(torch.zeros(2, 3)).shape
        torch.Size([2, 2])
    """

    def __init__(self, config: SimpleNNConfig) -> None:
        super().__init__()
        self.hidden = nn.Linear(config.input_size, config.hidden_size)
        self.relu = nn.ReLU()
        self.output = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, input_size)`` to ``(batch, output_size)``."""
        return self.output(self.relu(self.hidden(x)))


def mlp(config: MLPConfig) -> nn.Sequential:
    """Build ``Linear, ReLU, Linear, ..., Linear`` (no ReLU after the last layer).

    Args:
        config: the widths.

    Returns:
        The ``nn.Sequential``.

    Example:
        >>> mlp(MLPConfig((4, 8, 1)))
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): ReLU()
          (2): Linear(in_features=8, out_features=1, bias=True)
        )
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(config.sizes)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


PRESETS: dict[str, MLPConfig | SimpleNNConfig] = {
    "mlp": MLPConfig(),
    "mlp-3-5-2": SimpleNNConfig(),
}


def build(config: MLPConfig | SimpleNNConfig) -> nn.Module:
    """Build the model a config describes.

    Args:
        config: an :class:`MLPConfig` or a :class:`SimpleNNConfig`.

    Returns:
        The model.

    Example:
        >>> sum(p.numel() for p in build(PRESETS["mlp-3-5-2"]).parameters())
        32
    """
    if isinstance(config, SimpleNNConfig):
        return SimpleNN(config)
    return mlp(config)
