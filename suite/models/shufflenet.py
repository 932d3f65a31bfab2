"""ShuffleNetV2 x1.0, laid out like torchvision's ``shufflenet_v2_x1_0``.

Each unit splits its channels in two (`chunk`), convolves one half, concatenates and shuffles the
channels (view, transpose, view): data movement the importers turn into channel selections, which
tiles run like any pointwise op.
"""

import torch
from torch import Tensor, nn


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, channels, height, width)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


def _pointwise(inp: int, out: int) -> list[nn.Module]:
    return [nn.Conv2d(inp, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_depthwise(inp, stride), nn.BatchNorm2d(inp),
                                         *_pointwise(inp, branch))  # fmt: skip
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(*_pointwise(inp if stride > 1 else branch, branch),
                                     _depthwise(branch, stride), nn.BatchNorm2d(branch),
                                     *_pointwise(branch, branch))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, repeats: tuple[int, ...] = (4, 8, 4),
                 channels: tuple[int, ...] = (24, 116, 232, 464, 1024),
                 num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU())  # fmt: skip
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        for n, inp, out in zip(repeats, channels[:3], channels[1:4]):
            stages.append(nn.Sequential(InvertedResidual(inp, out, 2),
                                        *(InvertedResidual(out, out, 1) for _ in range(n - 1))))  # fmt: skip
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(*_pointwise(channels[3], channels[4]))
        self.fc = nn.Linear(channels[4], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))  # global pool


def shufflenet_v2_x1_0() -> ShuffleNetV2:
    """ShuffleNetV2 x1.0 for 3x224x224 inputs (2,278,604 parameters)."""
    return ShuffleNetV2()
