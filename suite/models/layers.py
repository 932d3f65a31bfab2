"""Building blocks the mobile architectures share, laid out like torchvision's `ops.misc`."""

from collections.abc import Callable

import torch
from torch import Tensor, nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never below 90% of `value` (as torchvision)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormActivation(nn.Sequential):
    """Conv (no bias, "same" padding) + BatchNorm + an optional activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation: Callable[[], nn.Module] | None = nn.ReLU,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:  # fmt: skip
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                            groups=groups, bias=False), norm(out_channels)]  # fmt: skip
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excite: a global pool, two 1x1 convs, and the map scaled per channel by the result."""

    def __init__(self, channels: int, squeeze_channels: int, activation: Callable[[], nn.Module] = nn.ReLU,
                 scale_activation: Callable[[], nn.Module] = nn.Sigmoid) -> None:  # fmt: skip
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def classifier_head(features: Tensor, classifier: nn.Module) -> Tensor:
    """Global average pool, flatten, classifier: the unpartitioned tail of every mobile net here."""
    return classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))
