"""The model zoo: the CNNs the suite benchmarks, with deterministic random weights.

No pretrained weights are downloaded. Partitioning and latency depend on the architecture,
not on what the weights have learnt, so a seeded torchvision-style initialisation is enough
and keeps every run reproducible offline.
"""

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from suite.models.efficientnet import efficientnet_b0
from suite.models.googlenet import googlenet
from suite.models.inception import inception_v3
from suite.models.mobilenetv2 import mobilenet_v2
from suite.models.mobilenetv3 import mobilenet_v3_large
from suite.models.resnet import resnet18, resnet34, resnet50
from suite.models.shufflenet import shufflenet_v2_x1_0
from suite.models.vgg import vgg16
from suite.models.yolo import yolov2, yolov2_16

__all__ = ["ZOO", "ZooEntry", "build_zoo_model", "seeded"]


@dataclass(frozen=True)
class ZooEntry:
    """A model name, how to build it, and its default input size (C, H, W)."""

    name: str
    factory: Callable[[], nn.Module]
    input_size: tuple[int, int, int]


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry("vgg16", vgg16, (3, 224, 224)),
        ZooEntry("resnet18", resnet18, (3, 224, 224)),
        ZooEntry("resnet34", resnet34, (3, 224, 224)),
        ZooEntry("resnet50", resnet50, (3, 224, 224)),
        ZooEntry("inception_v3", inception_v3, (3, 299, 299)),
        ZooEntry("googlenet", googlenet, (3, 224, 224)),
        ZooEntry("mobilenet_v2", mobilenet_v2, (3, 224, 224)),
        ZooEntry("mobilenet_v3_large", mobilenet_v3_large, (3, 224, 224)),
        ZooEntry("efficientnet_b0", efficientnet_b0, (3, 224, 224)),
        ZooEntry("shufflenet_v2_x1_0", shufflenet_v2_x1_0, (3, 224, 224)),
        ZooEntry("yolov2", yolov2, (3, 448, 448)),  # PICO's size; any multiple of 32
        ZooEntry("yolov2_16", yolov2_16, (3, 608, 608)),  # DeepThings' first 16 layers
    )
}


def _init_weights(model: nn.Module) -> None:
    """Initialise like torchvision, but give BatchNorm non-trivial eval statistics.

    Freshly initialised BN (mean 0, var 1, weight 1, bias 0) is the identity in eval mode,
    which would hide it from any analysis that folds or measures it. Random statistics make
    every BN do real work; activations still stay finite through the deepest model.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
            nn.init.normal_(m.running_mean, 0.0, 0.1)
            nn.init.uniform_(m.running_var, 0.5, 1.5)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a model factory with torch's, numpy's and Python's global RNGs seeded by `seed`, and
    restore them afterwards: every process that builds the model gets the same weights, and the
    caller's randomness is left as it was."""
    state = (random.getstate(), np.random.get_state())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


def build_zoo_model(name: str, seed: int = 0, weights: bool = True) -> nn.Module:
    """Build zoo model ``name`` with weights determined by ``seed``, ready for inference.

    The global RNG state is restored afterwards, so building a model never perturbs the
    caller's randomness. The model is in eval mode with gradients disabled. Without `weights`
    it is built on the meta device: shapes and parameter sizes only, which is all planning needs
    (VGG-16's 138M random weights take seconds to draw).
    """
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(ZOO))}")
    if not weights:
        with torch.device("meta"):
            return ZOO[name].factory().eval().requires_grad_(False)
    with seeded(seed):
        model = ZOO[name].factory()
        _init_weights(model)
    return model.eval().requires_grad_(False)
