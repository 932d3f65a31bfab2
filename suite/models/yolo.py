"""YOLOv2 (Redmon & Farhadi, CVPR 2017) as Darknet's ``yolov2.cfg`` defines it, and its first 16 layers.

Darknet-19's convolutions (batch norm, leaky ReLU 0.1) and max pools, two more 3x3 convs, and the
passthrough: layer 16's 512-channel map at stride 16 goes through a 1x1 conv to 64 channels and a
reorg (space-to-depth by 2, to 256 channels at stride 32) and is concatenated with layer 24's map
before the detection head (5 anchors x (80 classes + 5) = 425 channels, linear). The region layer
that decodes boxes is post-processing and not part of the network here. The input is any
multiple of 32 (PICO: 448; DeepThings: 608).

`yolov2_16` is layers 0-15 (12 convs, 4 max pools): what DeepThings fuses and partitions.
"""

import torch
from torch import Tensor, nn

# Darknet layers 0-16: (filters, kernel) convs and "M" 2x2/2 max pools.
_LAYERS_0_16 = ((32, 3), "M", (64, 3), "M", (128, 3), (64, 1), (128, 3), "M", (256, 3), (128, 1),
                (256, 3), "M", (512, 3), (256, 1), (512, 3), (256, 1), (512, 3))  # fmt: skip
# Layers 17-24: a pool, Darknet-19's last five convs, and YOLOv2's two 3x3 convs.
_LAYERS_17_24 = ("M", (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3), (1024, 3), (1024, 3))


def _darknet(layers, in_channels: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer in layers:
        if layer == "M":
            modules.append(nn.MaxPool2d(2, 2))
            continue
        filters, kernel = layer
        modules += [nn.Conv2d(in_channels, filters, kernel, 1, kernel // 2, bias=False),
                    nn.BatchNorm2d(filters), nn.LeakyReLU(0.1)]  # fmt: skip
        in_channels = filters
    return nn.Sequential(*modules)


class Reorg(nn.Module):
    """Space-to-depth by `stride`, in ONNX SpaceToDepth's channel order (offset-major)."""

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        s = self.stride
        x = x.reshape(n, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(n, s * s * c, h // s, w // s)


class YOLOv2(nn.Module):
    def __init__(self, num_classes: int = 80, num_anchors: int = 5) -> None:
        super().__init__()
        self.layers_0_16 = _darknet(_LAYERS_0_16, 3)
        self.layers_17_24 = _darknet(_LAYERS_17_24, 512)
        self.passthrough = nn.Sequential(_darknet(((64, 1),), 512), Reorg(2))  # layers 26-27
        self.head = nn.Sequential(_darknet(((1024, 3),), 256 + 1024),  # layer 29, after route 27 24
                                  nn.Conv2d(1024, num_anchors * (5 + num_classes), 1))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        route = self.layers_0_16(x)
        x = self.layers_17_24(route)
        return self.head(torch.cat((self.passthrough(route), x), dim=1))


def yolov2() -> YOLOv2:
    """YOLOv2 (COCO, 425 output channels) for 3x448x448 inputs (50,962,889 parameters; with its batch-norm
    statistics, the 50,983,561 floats of Darknet's yolov2.weights)."""
    return YOLOv2()


def yolov2_16() -> nn.Sequential:
    """YOLOv2's layers 0-15 (12 convs, 4 max pools) for 3x608x608 inputs (3,424,160 parameters)."""
    return _darknet(_LAYERS_0_16[:16], 3)
