"""VGG-16 in the torchvision layout (``torchvision.models.vgg``).

Entries: ``features.{i}`` (3×3 convolutions, numbered with their ReLU and max-pool modules, so
the convolutions of VGG-16 are ``features.0, 2, 5, 7, 10, ...``) and ``classifier.{0,3,6}``
(the three Linear layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..._errors import ArgumentError

__all__ = ["PRESETS", "VGG", "VGGConfig", "build"]

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


@dataclass(frozen=True)
class VGGConfig:
    """VGG shape.

    Args:
        layers: output channels of each 3×3 convolution, ``"M"`` for a 2×2 max-pool.
        num_classes: outputs of the last Linear layer.
        hidden: width of the two hidden Linear layers.
        dropout: dropout before the second and third Linear layer.
        batch_norm: put a BatchNorm2d after each convolution (``vgg16_bn``).
        in_channels: image channels.
    """

    layers: tuple[int | str, ...] = _VGG16
    num_classes: int = 1000
    hidden: int = 4096
    dropout: float = 0.5
    batch_norm: bool = False
    in_channels: int = 3

    def __post_init__(self) -> None:
        bad = [v for v in self.layers if v != "M" and not (isinstance(v, int) and v > 0)]
        if bad or not any(isinstance(v, int) for v in self.layers):
            raise ArgumentError(
                f"VGGConfig: layers={self.layers!r}: expected positive channel counts and "
                "'M' (max-pool), e.g. [64, 'M', 128, 'M']"
            )


class VGG(nn.Module):
    """Convolution stack, 7×7 adaptive average pool, three-layer classifier.

    Args:
        config: the shape.

    Example:
        >>> cfg = VGGConfig(layers=(8, "M", 16, "M"), hidden=32, num_classes=3)
        >>> VGG(cfg)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 3])
    """

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        features: list[nn.Module] = []
        n_in = config.in_channels
        for v in config.layers:
            if v == "M":
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            assert isinstance(v, int)
            features.append(nn.Conv2d(n_in, v, kernel_size=3, padding=1))
            if config.batch_norm:
                features.append(nn.BatchNorm2d(v))
            features.append(nn.ReLU(inplace=True))
            n_in = v
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(n_in * 7 * 7, config.hidden),
            nn.ReLU(True),
            nn.Dropout(p=config.dropout),
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(True),
            nn.Dropout(p=config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to ``(N, num_classes)`` logits."""
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


PRESETS: dict[str, VGGConfig] = {"vgg16": VGGConfig()}


def build(config: VGGConfig) -> VGG:
    """Build a VGG.

    Args:
        config: the shape.

    Returns:
        The model.

    Example:
        >>> with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        ...     model = build(PRESETS["vgg16"])
        >>> sum(p.numel() for p in model.parameters())
        138357544
    """
    return VGG(config)
