"""Small models written the way users and public packages write them, one idiom each.

Tests import them directly, and the CLI loads them as `user_models:<factory>` (with this folder on
PYTHONPATH), as a user's own `package.module:factory` would be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShapeQueries(nn.Module):
    """`x.size(0)`, `x.shape[1]` and a `x.view(x.size(0), -1)` classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = F.relu(self.a(x)) * (x.shape[1] / 3)
        y = F.adaptive_avg_pool2d(self.b(y), 4)
        return self.fc(y.view(y.size(0), -1))


class ActivationsWrittenOut(nn.Module):
    """Hard-swish and SiLU written as arithmetic, scalar arithmetic, a GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.a(x)
        y = y * F.relu6(y + 3) / 6  # hard-swish
        y = self.b(y)
        y = y * torch.sigmoid(y)  # SiLU
        y = (F.gelu(y) - 0.5) * 2
        return self.c(y)


def channel_shuffle(x, groups: int):
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    return torch.transpose(x, 1, 2).contiguous().view(batch, -1, height, width)


class ChannelShuffle(nn.Module):
    """ShuffleNet's unit: `chunk` into halves, convolve one, concatenate, shuffle; a `mean` head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=1, groups=8))  # fmt: skip
        self.out = nn.Conv2d(12, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = F.relu(self.stem(x))
        left, right = y.chunk(2, dim=1)
        y = channel_shuffle(torch.cat((left, self.branch(right)), dim=1), 2)
        y = y[:, 4:] + y[:, :12]  # channel slices
        return self.fc(self.out(y).mean([2, 3]))


class FunctionalConv(nn.Module):
    """Convolutions written with `F.conv2d` on the module's own weights, one with "same" padding."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 3, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(16) * 0.1)
        self.depthwise = nn.Parameter(torch.randn(16, 1, 4, 4) * 0.3)

    def forward(self, x):
        y = F.relu(F.conv2d(x, self.weight, self.bias, 1, 1))
        return F.conv2d(y, self.depthwise, None, 1, "same", 1, 16)


class SqueezeExcite(nn.Module):
    """A stem, then squeeze-and-excite (global pool, two 1x1 convs, the map scaled per channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.tail = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

    @staticmethod
    def pool(y):
        return F.adaptive_avg_pool2d(y, 1)

    def forward(self, x):
        y = F.silu(self.stem(x))
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(y)))))
        return self.tail(y * scale)


class FusedNormAct(nn.Module):
    """Convs with a fused batch norm + activation layer that calls `F.batch_norm` itself (the model
    zoos' norm-act layers), and one with no affine parameters."""

    class NormAct(nn.BatchNorm2d):
        def forward(self, x):
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             self.training, self.momentum, self.eps)  # fmt: skip
            return F.silu(y)

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.norm_a, self.norm_b = self.NormAct(16), self.NormAct(8, affine=False)
        with torch.no_grad():  # statistics a trained model would have, not the identity
            for norm in (self.norm_a, self.norm_b):
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.norm_b(self.b(self.norm_a(self.a(x))))


class MeanSqueezeExcite(SqueezeExcite):
    """Squeeze-and-excite whose pool is `x.mean((2, 3), keepdim=True)` (a ReduceMean in ONNX)."""

    @staticmethod
    def pool(y):
        return y.mean((2, 3), keepdim=True)


class LayerNorm2d(nn.LayerNorm):
    """A layer norm over the channels at each position, through channels-last permutes."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelNormBlocks(nn.Module):
    """ConvNeXt-style blocks: a depthwise 7x7 conv, a `LayerNorm2d`, pointwise convs with GELU, and a
    residual; a stem normed by an `nn.LayerNorm` module on the permuted map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 16, 4, stride=2), nn.LayerNorm(16)
        self.dw, self.norm = nn.Conv2d(16, 16, 7, padding=3, groups=16), LayerNorm2d(16)
        self.up, self.down = nn.Conv2d(16, 32, 1), nn.Conv2d(32, 16, 1)
        with torch.no_grad():
            for norm in (self.stem_norm, self.norm):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.down(F.gelu(self.up(self.norm(self.dw(x)))))


class ZooStyleNet(nn.Module):
    """The idioms together, as a modern zoo writes a network: convs with fused norm + activation, a
    squeeze-and-excite pooled by a mean, a ConvNeXt block with its `LayerNorm2d`, a dynamic "same"
    strided conv, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 16, 3, padding=1, bias=False), FusedNormAct.NormAct(16)
        self.reduce, self.expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.dw, self.norm = nn.Conv2d(16, 16, 7, padding=3, groups=16), LayerNorm2d(16)
        self.up, self.back = nn.Conv2d(16, 32, 1), nn.Conv2d(32, 16, 1)
        self.down, self.down_norm = nn.Conv2d(16, 32, 3, stride=2, bias=False), FusedNormAct.NormAct(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem_norm(self.stem(x))
        x = x * torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        x = x + self.back(F.gelu(self.up(self.norm(self.dw(x)))))
        x = self.down_norm(self.down(DynamicSamePad.same(x, 3, 2)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class NearestUpsample(nn.Module):
    """An FPN's top-down step: a strided body with fused norm + act, its coarse map upsampled by
    `nn.Upsample` (nearest, by 2) and added to the lateral one, then a 3x3 head on the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 16, 3, padding=1, bias=False), FusedNormAct.NormAct(16)
        self.down, self.down_norm = nn.Conv2d(16, 32, 3, stride=2, padding=1), FusedNormAct.NormAct(32)
        self.lateral, self.top = nn.Conv2d(16, 16, 1), nn.Conv2d(32, 16, 1)
        self.up, self.head = nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        x = self.stem_norm(self.stem(x))
        return self.head(self.lateral(x) + self.up(self.top(self.down_norm(self.down(x)))))


class BilinearUpsample(nn.Module):
    """A segmentation head: two strided convs, class maps, `F.interpolate` (bilinear) by 4 back to the
    input size, and a 3x3 refinement of the upsampled maps."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.classes, self.refine = nn.Conv2d(32, 21, 1), nn.Conv2d(21, 21, 3, padding=1)

    def forward(self, x):
        y = self.classes(F.relu(self.b(F.relu(self.a(x)))))
        return self.refine(F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False))


class ResizeVariants(nn.Module):
    """Resizes whose coordinates do not move with a tile: `nn.UpsamplingBilinear2d` (align_corners),
    bilinear to a size 1.25 times the map's, nearest by 3 after a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        self.c, self.d = nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.c(self.up(F.relu(self.b(F.relu(self.a(x))))))
        y = F.interpolate(y, size=(40, 40), mode="bilinear", align_corners=False)
        return F.interpolate(self.d(y), scale_factor=3, mode="nearest")


class ZooSegmentationNet(ZooStyleNet):
    """`ZooStyleNet`'s body (fused norm + act, a mean-pooled squeeze-and-excite, a `LayerNorm2d`
    block, a dynamic "same" strided conv) under a segmentation head: class maps upsampled
    bilinearly to the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.classes = nn.Conv2d(32, 21, 1)

    def forward(self, x):
        size = x.shape[2:]
        x = self.stem_norm(self.stem(x))
        x = x * torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        x = x + self.back(F.gelu(self.up(self.norm(self.dw(x)))))
        x = self.down_norm(self.down(DynamicSamePad.same(x, 3, 2)))
        return F.interpolate(self.classes(x), size=size, mode="bilinear", align_corners=False)


class RunningSum(nn.Module):
    """A stem, then a running sum down the rows (no tile computes it alone), then the heavy convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))

    def forward(self, x):
        return self.body(torch.cumsum(self.stem(x), dim=2))


class Reorg(nn.Module):
    """YOLOv2's passthrough: space-to-depth as `pixel_unshuffle` and as a view-permute chain; a
    global pool of a last reorg's 64 channels (plain layout on onnxruntime)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.c = nn.Conv2d(16 + 32 + 32, 16, 3, padding=1)

    def forward(self, x):
        y = F.leaky_relu(self.a(x), 0.1)
        n, c, h, w = y.shape
        blocks = y.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
        blocks = blocks.reshape(n, 4 * c, h // 2, w // 2)
        y = self.c(torch.cat((self.b(y), F.pixel_unshuffle(y, 2), blocks), dim=1))
        return F.adaptive_avg_pool2d(F.pixel_unshuffle(y, 2), 1)


class ChannelsLastHead(nn.Module):
    """A head that transposes the map to channels-last before flattening: data movement across rows
    and columns, which runs whole (a gather by index) after the tiled convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return self.fc(y.permute(0, 2, 3, 1).reshape(1, -1))


class DynamicSamePad(nn.Module):
    """EfficientNet-PyTorch's dynamic "same" padding: the border computed from `x.size()`."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, stride=2), nn.Conv2d(16, 8, 3)

    @staticmethod
    def same(x, kernel: int, stride: int):
        ih, iw = x.size()[-2:]
        ph = ((ih + stride - 1) // stride - 1) * stride + kernel - ih
        pw = ((iw + stride - 1) // stride - 1) * stride + kernel - iw
        return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])

    def forward(self, x):
        return self.b(self.same(F.relu(self.a(self.same(x, 3, 2))), 3, 1))


class SameStridedStack(nn.Module):
    """Dynamic "same" convs halving the map down to a few rows (EfficientNet-PyTorch's blocks): a
    strided conv's border lies after the map's last row."""

    def __init__(self) -> None:
        super().__init__()
        chans = [3, 8, 16, 16, 32, 32]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2 - k % 2)
                                   for k, (a, b) in enumerate(zip(chans, chans[1:])))  # fmt: skip

    def forward(self, x):
        for conv in self.convs:
            x = F.silu(conv(DynamicSamePad.same(x, 3, conv.stride[0])))
        return x


class SharedNorms(nn.Module):
    """Untrained batch norms outside convs: identical weights, which the TorchScript exporter shares
    through `Identity` nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.norm_in, self.conv = nn.BatchNorm2d(3), nn.Conv2d(3, 16, 3, padding=1)
        self.norm_mid, self.norm_out = nn.BatchNorm2d(16), nn.BatchNorm2d(16)

    def forward(self, x):
        return self.norm_out(self.norm_mid(F.relu(self.conv(self.norm_in(x)))) * 2)


class FixedPoolHead(nn.Module):
    """A classifier ending in a fixed 7x7 pool (as some MobileNetV2 ports do): 1x1 at 56x56 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU6(), nn.Conv2d(16, 16, 3, 2, 1),
                                      nn.ReLU6(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU6(),
                                      nn.AvgPool2d(7))  # fmt: skip
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class SegmentationHead(nn.Module):
    """Convs, then 21 class maps upsampled bilinearly to the input size (a segmentation head)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Conv2d(32, 21, 1)

    def forward(self, x):
        y = self.head(F.relu(self.b(F.relu(self.a(x)))))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


class AdaptiveMaxPoolHead(nn.Module):
    """A classifier behind `nn.AdaptiveMaxPool2d(4)`: the ONNX exporter maps it only where 4 divides
    the map's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(3, 8, 3), nn.AdaptiveMaxPool2d(4), nn.Linear(8 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


class Unexportable(nn.Module):
    """An FFT, which the TorchScript ONNX exporter cannot map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.fft.rfft2(self.conv(x)).abs()


def random_net() -> nn.Module:
    """A factory that draws its weights from the global RNG, as most factories do."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))  # fmt: skip


def unexportable() -> nn.Module:
    return Unexportable()


def squeeze_excite() -> nn.Module:
    return SqueezeExcite()


def running_sum() -> nn.Module:
    return RunningSum()


def zoo_segmentation_net() -> nn.Module:
    return ZooSegmentationNet()
