"""VGG-16 (configuration "D", no batch norm), laid out like torchvision's ``vgg16``.

The heaviest model in the zoo: its three fully connected layers hold ~124M of the 138M
parameters, which makes it the classic case for splitting a network between devices.
"""

import torch
from torch import Tensor, nn

# Output channels of each 3x3 conv; "M" is a 2x2 max pool that halves the resolution.
_CFG_D: list[int | str] = [
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
]  # fmt: skip


def _make_features(cfg: list[int | str]) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if isinstance(v, int):
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = v
        else:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Conv feature extractor, a fixed 7x7 pool so any input size fits, then the classifier."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg16() -> VGG:
    """VGG-16 for 3x224x224 inputs (138,357,544 parameters)."""
    return VGG(_make_features(_CFG_D))
