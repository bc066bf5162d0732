"""ResNet-18 and ResNet-50 in the torchvision layout (``torchvision.models.resnet``).

Entries: ``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2[,3]}`` / ``bn*`` /
``downsample.{0,1}``, ``fc``. Batch norms carry the buffers ``running_mean``,
``running_var`` and ``num_batches_tracked``. ResNet-50 uses the v1.5 bottleneck (stride on the
3×3 convolution), as torchvision does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..._errors import ArgumentError

__all__ = ["PRESETS", "BasicBlock", "Bottleneck", "ResNet", "ResNetConfig", "build"]


@dataclass(frozen=True)
class ResNetConfig:
    """ResNet shape.

    Args:
        block: ``"basic"`` (two 3×3 convolutions) or ``"bottleneck"`` (1×1, 3×3, 1×1, ×4).
        layers: blocks in each of the four stages.
        num_classes: outputs of ``fc``.
        in_channels: image channels.
    """

    block: str = "basic"
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.block not in ("basic", "bottleneck"):
            raise ArgumentError(
                f"ResNetConfig: block={self.block!r}: expected 'basic' or 'bottleneck'"
            )
        if len(self.layers) != 4:
            raise ArgumentError(
                f"ResNetConfig: layers={self.layers!r}: expected four stage depths, "
                "e.g. [2, 2, 2, 2]"
            )


def _conv3x3(n_in: int, n_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(n_in: int, n_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34).

    Args:
        n_in: input channels.
        width: output channels.
        stride: stride of the first convolution.
        downsample: projection of the residual when shape changes, else ``None``.

    Example:
        >>> BasicBlock(64, 64)(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    expansion = 1

    def __init__(
        self, n_in: int, width: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(n_in, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided, v1.5), 1×1 expand ×4, with a residual (ResNet-50/101/152).

    Args:
        n_in: input channels.
        width: channels of the 3×3 convolution; the block outputs ``4 * width``.
        stride: stride of the 3×3 convolution.
        downsample: projection of the residual when shape changes, else ``None``.

    Example:
        >>> Bottleneck(256, 64)(torch.zeros(1, 256, 8, 8)).shape
        torch.Size([1, 256, 8, 8])
    """

    expansion = 4

    def __init__(
        self, n_in: int, width: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(n_in, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem, four residual stages, global average pool and a linear classifier.

    Args:
        config: the shape.

    Example:
        >>> ResNet(ResNetConfig(num_classes=5)).eval()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 5])
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        block = BasicBlock if config.block == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        n_in = 64
        widths = (64, 128, 256, 512)
        for stage, (depth, width) in enumerate(zip(config.layers, widths, strict=True), 1):
            stride = 1 if stage == 1 else 2
            n_out = width * block.expansion
            downsample = None
            if stride != 1 or n_in != n_out:
                downsample = nn.Sequential(_conv1x1(n_in, n_out, stride), nn.BatchNorm2d(n_out))
            blocks = [block(n_in, width, stride, downsample)]
            blocks += [block(n_out, width) for _ in range(depth - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            n_in = n_out
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(n_in, config.num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to ``(N, num_classes)`` logits."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


PRESETS: dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig(block="basic", layers=(2, 2, 2, 2)),
    "resnet50": ResNetConfig(block="bottleneck", layers=(3, 4, 6, 3)),
}


def build(config: ResNetConfig) -> ResNet:
    """Build a ResNet.

    Args:
        config: the shape.

    Returns:
        The model.

    Example:
        >>> sum(p.numel() for p in build(PRESETS["resnet18"]).parameters())
        11689512
    """
    return ResNet(config)
