"""EfficientNet-B0, laid out like torchvision's ``efficientnet_b0``.

MBConv blocks (1x1 expansion, depthwise conv, squeeze-and-excite, 1x1 projection) with SiLU; every
block has an SE, the first one at the stem's resolution. Stochastic depth is the identity at
inference and is left out.
"""

from torch import Tensor, nn

from suite.models.layers import ConvNormActivation, SqueezeExcitation, classifier_head, make_divisible


class MBConv(nn.Module):
    def __init__(self, expand_ratio: int, kernel: int, stride: int, inp: int, out: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inp == out
        expanded = make_divisible(inp * expand_ratio)
        layers: list[nn.Module] = []
        if expanded != inp:
            layers.append(ConvNormActivation(inp, expanded, 1, activation=nn.SiLU))
        layers += [
            ConvNormActivation(expanded, expanded, kernel, stride, groups=expanded, activation=nn.SiLU),
            SqueezeExcitation(expanded, max(1, inp // 4), nn.SiLU),
            ConvNormActivation(expanded, out, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class EfficientNetB0(nn.Module):
    # expansion, kernel, stride, in, out, repeats (the paper's Table 1)
    SETTING = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
               (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))  # fmt: skip

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormActivation(3, 32, 3, 2, activation=nn.SiLU)]
        for expand, kernel, stride, inp, out, repeats in self.SETTING:
            stage = [MBConv(expand, kernel, stride if i == 0 else 1, inp if i == 0 else out, out)
                     for i in range(repeats)]  # fmt: skip
            layers.append(nn.Sequential(*stage))
        layers.append(ConvNormActivation(320, 1280, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return classifier_head(self.features(x), self.classifier)


def efficientnet_b0() -> EfficientNetB0:
    """EfficientNet-B0 for 3x224x224 inputs (5,288,548 parameters)."""
    return EfficientNetB0()
