"""The IR's shapes: propagated from op geometry, equal to a real forward pass, with or without weights."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from suite.graph import GraphImportError, from_model, from_torch
from suite.models import ZOO
from suite.models.load import load_model


@pytest.mark.parametrize("name", sorted(ZOO))
def test_shapes_match_a_real_forward_and_need_no_weights(name):
    loaded = load_model(name, (3, 128, 128) if name != "inception_v3" else (3, 160, 160))
    graph = from_model(loaded)
    traced = fx.symbolic_trace(loaded.module)
    ShapeProp(traced).propagate(torch.zeros(1, *loaded.input_shape))
    real = {
        n.name: tuple(n.meta["tensor_meta"].shape)
        for n in traced.graph.nodes
        if hasattr(n.meta.get("tensor_meta"), "shape")
    }  # (a chunk's is a tuple of metas)
    assert {n: node.shape for n, node in graph.nodes.items()} == {n: real[n] for n in graph.nodes}
    planning = from_model(load_model(name, loaded.input_shape, weights=False))  # built on the meta device
    assert all(t.device.type == "meta" for n in planning.nodes.values() for t in n.params.values())
    for n, node in graph.nodes.items():
        other = planning[n]
        assert (other.op, other.shape, other.window, other.flops, other.param_bytes) == \
               (node.op, node.shape, node.window, node.flops, node.param_bytes), n  # fmt: skip


class _Transposed(nn.Module):
    """An op the IR does not know (a transpose) still gets its shape, by running it on zeros."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).transpose(2, 3)


def test_an_unknown_op_runs_to_find_its_shape():
    graph = from_torch(_Transposed(), (3, 10, 6), "t")
    transpose = next(n for n in graph.nodes.values() if n.op == "opaque")
    assert transpose.shape == (1, 4, 4, 8)


def test_shape_errors_name_the_node():
    with pytest.raises(GraphImportError, match="node '_1': conv expects 8 input channels but gets 4"):
        from_torch(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(8, 2, 3)), (3, 16, 16), "bad")
    with pytest.raises(GraphImportError, match="too small .* vanishes at node '_1'"):
        from_torch(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(8)), (3, 8, 8), "tiny")


def test_convs_are_priced_by_class_and_grouped_ones_pay_per_group():
    """Dense kxk and 1x1, depthwise (strided or not) and grouped convs are cost kinds of their own; a
    grouped conv's fixed cost is paid once per group (`Node.calls`)."""
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.Conv2d(16, 32, 3, padding=1, groups=4), nn.Conv2d(32, 32, 1, groups=32),
                          nn.Conv2d(32, 32, 1), nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32),
                          nn.ReLU())  # fmt: skip
    g = from_torch(model, (8, 8, 8))
    kinds = [(g[n].cost_kind, g[n].calls) for n in g.nodes if n != g.input]
    assert kinds == [("conv", 1), ("depthwise_conv", 16), ("grouped_conv", 4), ("depthwise_conv", 32),
                     ("pointwise_conv", 1), ("strided_depthwise_conv", 32), ("relu", 1)]  # fmt: skip
    # a depthwise multiplier (two outputs per input channel) is still one input channel per group
    assert from_torch(nn.Conv2d(8, 16, 3, groups=8), (8, 8, 8))["conv2d"].cost_kind == "depthwise_conv"
