"""`suite plan --backend onnxruntime` runs whole the convolutions onnxruntime cannot tile exactly,
asking onnxruntime about each convolution shape alone (`regrouped_convs`): the answer equals the one
read from the optimised whole model that the monolithic session runs, and plan and run mark alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn
from user_models import BilinearUpsample

from suite.backends import mark_untiled_for
from suite.backends.export import export_onnx
from suite.backends.folded import MODEL
from suite.backends.ort import (
    MLAS_SUM_RUN,
    OrtBackend,
    folded_model,
    optimised_model,
    plain_conv_weights,
    regrouped_convs,
)
from suite.graph import Graph, from_model
from suite.graph.cuts import coverage, spatial_front
from suite.models.load import LoadedModel, load_model
from suite.runtime.lowering import model_graph

TESTS = Path(__file__).parent


class _Widths(nn.Module):
    """Convolutions of many widths in the contexts onnxruntime fuses them in: alternately 1x1 and
    3x3, a batch norm folded into every third, ReLU, a residual Add where the width repeats, a
    strided one, and a grouped one every fourth where the width repeats."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.convs, self.norms, self.residual, c = nn.ModuleList(), nn.ModuleList(), [], 3
        for i, w in enumerate(widths):
            groups = 2 if i % 4 == 1 and c == w and c % 2 == 0 else 1
            size, stride = (3 if i % 2 else 1), (2 if i == 3 else 1)
            self.convs.append(nn.Conv2d(c, w, size, stride=stride, padding=size // 2, groups=groups))
            self.norms.append(nn.BatchNorm2d(w) if i % 3 == 0 else nn.Identity())
            self.residual.append(c == w and i % 2 == 0)
            c = w

    def forward(self, x):
        for conv, norm, residual in zip(self.convs, self.norms, self.residual):
            y = norm(conv(x)).relu()
            x = y + x if residual else y
        return x


WIDTHS = {
    "odd": [16, 21, 21, 32, 20, 20, 48, 18, 64, 24, 24, 40, 17, 33, 12, 96],
    "wide": [8, 15, 15, 64, 60, 60, 30, 30, 36, 36, 100, 100, 7, 200, 19, 19, 128, 52],
}


def _whole_model_answer(graph: Graph) -> dict[str, int]:
    """The oracle: the convolutions of the optimised folded model, the one the monolithic session
    runs, that onnxruntime keeps in plain layout and that sum more than MLAS_SUM_RUN products."""
    with tempfile.TemporaryDirectory() as tmp:  # the folded files linked, for the optimised one beside them
        for file in folded_model(graph).iterdir():
            (Path(tmp) / file.name).symlink_to(file)
        plain = plain_conv_weights(optimised_model(Path(tmp) / MODEL))
    convs = {name: node for name, node in graph.nodes.items() if node.op == "conv"}
    products = {name: node.params["weight"][0].numel() for name, node in convs.items()}
    return {name: products[name] for name, node in convs.items()
            if node.onnx[0].input[1] in plain and products[name] > MLAS_SUM_RUN}  # fmt: skip


def _loaded(name: str, tmp_path: Path, weights: bool = True) -> LoadedModel:
    """A model by test name: `<net>` from its module (the torch importer; on the meta device without
    `weights`, as `suite plan` builds a zoo model), `<net>.onnx` from its exported ONNX file (the
    ONNX importer)."""
    net, _, suffix = name.partition(".")
    torch.manual_seed(0)
    module = (BilinearUpsample() if net == "bilinear" else _Widths(WIDTHS[net])).eval()
    shape = (3, 32, 32)
    if not suffix:
        return LoadedModel(net, shape, module=module if weights else module.to("meta"))
    path = tmp_path / f"{net}.onnx"
    path.write_bytes(export_onnx(module, shape, net))
    return load_model(str(path))


@pytest.mark.parametrize("name", ["bilinear", "bilinear.onnx", "odd", "odd.onnx", "wide", "wide.onnx"])
def test_onnxruntime_answers_per_conv_shape_as_for_the_whole_model(name, tmp_path):
    """Each distinct conv shape asked alone (zero weights, its own input) gives the convolutions the
    optimised whole model runs in plain layout with long sums: with batch norms folded, residual
    Adds fused and grouped convs, from a module and from its ONNX file."""
    prepared = OrtBackend(threads=1).prepare(_loaded(name, tmp_path))
    whole = _whole_model_answer(prepared.graph)
    assert whole, "the model has a convolution onnxruntime keeps plain, so the comparison can fail"
    assert regrouped_convs(prepared.graph) == whole
    assert {n for n, node in prepared.graph.nodes.items() if "untiled" in node.attrs} == set(whole)


@pytest.mark.parametrize("name", ["odd", "bilinear.onnx"])
def test_plan_and_run_mark_the_same_nodes_of_the_model_graph(name, tmp_path):
    """`suite plan` marks the model graph it builds without weights as `suite run` marks the one it
    plans on, so both report the same coverage; a conv with a batch norm is marked itself (the model
    graph's conv, which onnxruntime's graph folds into the batch norm's name)."""
    loaded = _loaded(name, tmp_path)
    ran = model_graph(loaded, OrtBackend(threads=1).prepare(loaded).graph)
    planned = mark_untiled_for(from_model(_loaded(name, tmp_path, weights=False)), "onnxruntime")
    marks = [{n for n, node in g.nodes.items() if "untiled" in node.attrs} for g in (ran, planned)]
    assert marks[0] == marks[1] and marks[0]
    assert all(ran[n].op == "conv" for n in marks[0])
    shares = [coverage(g, spatial_front(g)).tiled_share for g in (ran, planned)]
    assert shares[0] == shares[1] < 1


def _plan(backend: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = ["plan", "--model", "user_models:BilinearUpsample", "--input-size", "3x128x128", "--scheme",
            "deepthings", "--fleet", "aofl-pi3bplus-500mhz-4", "--backend", backend]  # fmt: skip
    text, plan = (subprocess.run([sys.executable, "-m", "suite", *args, *extra], capture_output=True,
                                 text=True, env=env, timeout=300) for extra in ([], ["--json"]))  # fmt: skip
    assert text.returncode == 0 and plan.returncode == 0, text.stderr + plan.stderr
    return {"text": text.stdout, **json.loads(plan.stdout)}


def _refine_tiled(plan: dict) -> bool:
    (stage,) = [s for s in plan["stages"] if "refine" in s["nodes"]]
    return any(w["outputs"].get("refine") is not None for w in stage["work"])


def test_suite_plan_on_onnxruntime_runs_the_21_channel_conv_whole_and_says_why():
    """BilinearUpsample's `refine` (21 -> 21 channels, 3x3: 189 products an output) is tiled by a
    plan for `torch` on four slow Pis, and run whole by one for onnxruntime, whose plan says why and
    whose coverage line gives what `suite run` gives."""
    assert _refine_tiled(_plan("torch"))
    plan = _plan("onnxruntime")
    assert not _refine_tiled(plan)
    (line,) = [s for s in plan["text"].splitlines() if "of the model's MACs" in s]
    assert "tiling stops at refine (onnxruntime runs this convolution in plain layout, summing 189" in line
    assert "the model can be tiled up to 11.7%" in line


# CI (`slow`) asks the two models with the most channel counts off the NCHWc block (24, 116, 232); the
# nightly (`zoo`) every one
IN_SLOW = ("mobilenet_v2", "shufflenet_v2_x1_0")
ZOO_MODELS = ("vgg16", "resnet50", "inception_v3", "googlenet", "mobilenet_v2", "yolov2",
              "mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0")  # fmt: skip


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow if n in IN_SLOW else pytest.mark.zoo)
                                  for n in ZOO_MODELS])  # fmt: skip
def test_onnxruntime_answers_per_conv_shape_as_for_each_zoo_model(name):
    prepared = OrtBackend(threads=1).prepare(load_model(name, None, 0))
    assert regrouped_convs(prepared.graph) == _whole_model_answer(prepared.graph)
