"""MobileNetV2, laid out like torchvision's ``mobilenet_v2`` (width 1.0).

Inverted residuals: a 1x1 expansion, a 3x3 depthwise conv and a linear 1x1 projection, ReLU6
throughout. Depthwise convs have one input channel per output channel: the cheapest convs in MACs,
and the ones a cost model must not price like dense convs.
"""

from torch import Tensor, nn

from suite.models.layers import ConvNormActivation, classifier_head, make_divisible


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(inp, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvNormActivation(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    # expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        channels = make_divisible(32)
        layers: list[nn.Module] = [ConvNormActivation(3, channels, 3, 2, activation=nn.ReLU6)]
        for t, c, n, s in self.SETTING:
            out = make_divisible(c)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        layers.append(ConvNormActivation(channels, 1280, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return classifier_head(self.features(x), self.classifier)


def mobilenet_v2() -> MobileNetV2:
    """MobileNetV2 for 3x224x224 inputs (3,504,872 parameters)."""
    return MobileNetV2()
