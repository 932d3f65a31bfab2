"""MobileNetV3-Large, laid out like torchvision's ``mobilenet_v3_large``.

Inverted residuals with hard-swish in the later stages and squeeze-and-excite (hard-sigmoid gate)
in eight of the fifteen blocks: each SE global-pools the whole map, so it is where tiling stops
until the SE gather is planned.
"""

from functools import partial

from torch import Tensor, nn

from suite.models.layers import ConvNormActivation, SqueezeExcitation, classifier_head, make_divisible

_norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, kernel: int, expanded: int, out: int, use_se: bool, use_hs: bool,
                 stride: int) -> None:  # fmt: skip
        super().__init__()
        self.use_res_connect = stride == 1 and inp == out
        activation = nn.Hardswish if use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inp:
            layers.append(ConvNormActivation(inp, expanded, 1, activation=activation, norm=_norm))
        layers.append(ConvNormActivation(expanded, expanded, kernel, stride, groups=expanded,
                                         activation=activation, norm=_norm))  # fmt: skip
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4), nn.ReLU, nn.Hardsigmoid))
        layers.append(ConvNormActivation(expanded, out, 1, activation=None, norm=_norm))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3Large(nn.Module):
    # in, kernel, expanded, out, SE, hard-swish, stride (the paper's Table 1)
    SETTING = (
        (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2),
        (24, 3, 72, 24, False, False, 1), (24, 5, 72, 40, True, False, 2),
        (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
        (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1),
        (80, 3, 184, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
        (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
        (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1),
        (160, 5, 960, 160, True, True, 1),
    )  # fmt: skip

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormActivation(3, 16, 3, 2, activation=nn.Hardswish, norm=_norm)]
        layers += [InvertedResidual(*setting) for setting in self.SETTING]
        layers.append(ConvNormActivation(160, 960, 1, activation=nn.Hardswish, norm=_norm))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1280, num_classes))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return classifier_head(self.features(x), self.classifier)


def mobilenet_v3_large() -> MobileNetV3Large:
    """MobileNetV3-Large for 3x224x224 inputs (5,483,032 parameters)."""
    return MobileNetV3Large()
