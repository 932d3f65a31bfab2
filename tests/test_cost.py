"""The cost model by hand: transfer times, overlap, stage times, work priced by op kind."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn
from toys import MB, conv_graph, fleet, profile

from suite.cost import (
    KIND_INDEX,
    OpWork,
    comm_time,
    node_time,
    node_work,
    overlapped_time,
    predict,
    stage_time,
    work_time,
    work_times,
)
from suite.errors import UserError
from suite.fleet import Device, Fleet, Link, OpCost, Profile
from suite.graph import from_torch
from suite.plan import Transfer
from suite.regions import WHOLE
from suite.schemes import make_plan


def test_comm_time_serializes_on_a_shared_medium_and_not_on_a_switch():
    t = [Transfer("a", "b", "x", WHOLE, 1000), Transfer("a", "c", "x", WHOLE, 1000),
         Transfer("c", "d", "x", WHOLE, 500)]  # fmt: skip
    # 8 Mbit/s = 1 byte per microsecond
    assert comm_time(Link(8 * MB, 0.0, True), t) == pytest.approx(2500e-6)
    # switched: a's uplink carries 2000 bytes, the busiest
    assert comm_time(Link(8 * MB, 0.0, False), t) == pytest.approx(2000e-6)
    assert comm_time(Link(8 * MB, 0.001, True), t[:1]) == pytest.approx(1000e-6 + 0.001)


def test_overlapped_stage_starts_each_device_when_its_input_arrives():
    link = Link(8 * MB, 0.0, True)
    sends = [Transfer("h", "a", "in", WHOLE, 1000), Transfer("h", "b", "in", WHOLE, 1000),
             Transfer("a", "h", "out", WHOLE, 100), Transfer("b", "h", "out", WHOLE, 100)]  # fmt: skip
    compute = {"h": 0.0030, "a": 0.0010, "b": 0.0010}
    # a: in at 1 ms, done 2 ms, sent 2.1 ms; b: in at 2 ms, done 3.1 ms; the host computes 3 ms
    assert overlapped_time(link, sends, compute, ["out"]) == pytest.approx(0.0031)


def test_stage_time_is_slowest_device_plus_communication():
    link = Link(8 * MB, 0.0, True)
    sends = [Transfer("h", "a", "in", WHOLE, 1000), Transfer("a", "h", "out", WHOLE, 500)]
    assert stage_time(link, {"a": 0.002, "b": 0.005}, sends) == pytest.approx(0.005 + 1500e-6)
    assert stage_time(link, {}, []) == 0.0
    assert stage_time(link, {"a": 0.002}, sends, overlap=True, outputs=["out"]) == pytest.approx(0.0035)


def _layers():
    """One node of each conv class, a pointwise op, a merge and the mixing tail."""
    return from_torch(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 1),
                                    nn.Conv2d(16, 16, 3, padding=1, groups=16),
                                    nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16),
                                    nn.Conv2d(16, 32, 3, padding=1, groups=4), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(32 * 16, 10)), (8, 8, 8))  # fmt: skip


def test_a_conv_is_priced_by_its_class_its_copies_and_its_matrix_products():
    """A conv run as matrix products does its MACs, copies an im2col column in and a result out per
    output position, and calls one product per block of its grid; a tile does its share of each."""
    g = _layers()
    conv, pointwise, depthwise, strided, grouped = (g[n] for n in list(g.nodes)[1:6])
    assert [n.cost_kind for n in (conv, pointwise, depthwise, strided, grouped)] == [
        "conv",
        "pointwise_conv",
        "depthwise_conv",
        "strided_depthwise_conv",
        "grouped_conv",
    ]
    positions = 8 * 8
    assert node_work(conv) == {"conv": 9 * 8 * 16 * positions, "conv_copy": positions * (8 * 9 + 16),
                               "gemm_call": 1.0}  # fmt: skip
    assert node_work(pointwise)["conv_copy"] == positions * (16 + 16)
    assert node_work(grouped)["conv_copy"] == 4 * 4 * (16 * 9 + 32)  # every group's column, after stride 2
    assert node_work(depthwise) == {"depthwise_conv": 9 * 16 * positions}  # shifted sums: no products
    half = OpWork.of([(conv, conv.flops / 2)])
    assert half.units[KIND_INDEX["conv_copy"]] == positions * (8 * 9 + 16) / 2
    assert half.calls[KIND_INDEX["conv"]] == 1


def test_work_by_op_kind_prices_like_node_by_node():
    """Summing units by cost kind first and pricing the sums gives the per-node time."""
    p = Profile("p", "test", 2e9, {"conv": OpCost(1.0, 1e-5), "pointwise_conv": OpCost(2.0, 0.0),
                                   "conv_copy": OpCost(40.0, 0.0), "gemm_call": OpCost(1e5, 0.0),
                                   "relu": OpCost(8.0, 2e-6), "default": OpCost(3.0, 5e-6)})  # fmt: skip
    g = _layers()
    nodes = [(g[n], g[n].flops) for n in g.nodes if n != g.input]
    by_node = sum(node_time(p, node) for node, _ in nodes)
    assert work_time(p, OpWork.of(nodes)) == pytest.approx(by_node, rel=1e-12)
    assert OpWork.of(nodes).calls.sum() == 5 + 16 + 16 + 4  # a grouped conv pays its fixed cost per group
    both = OpWork.of(nodes[:2]) + OpWork.of(nodes[2:])
    assert work_time(p, both) == pytest.approx(by_node, rel=1e-12)
    slow = Profile("slow", "test", 1e9, p.ops)
    work = OpWork.of(nodes)
    rows = work_times([p, slow], np.stack([work.units] * 2), np.stack([work.calls] * 2))
    assert rows == pytest.approx([by_node, sum(node_time(slow, node) for node, _ in nodes)], rel=1e-12)
    conv = nodes[0][0]
    copies = node_work(conv)["conv_copy"] * 40.0 / 2e9 + 1e5 / 2e9
    assert node_time(p, conv) == pytest.approx(conv.flops / 2e9 + 1e-5 + copies, rel=1e-12)


def test_a_profile_without_the_finer_kinds_prices_them_as_before():
    """Profiles measured before convs were split by class and their copies priced: a 1x1 or grouped
    conv is a conv, a strided depthwise one a depthwise one, the copies and products are free (the
    conv's own rate has them), a depthwise conv unlisted is `default`."""
    p = Profile("old", "test", 2e9, {"conv": OpCost(1.0, 1e-5), "depthwise_conv": OpCost(9.0, 0.0),
                                     "default": OpCost(3.0, 5e-6)})  # fmt: skip
    assert p.cost("pointwise_conv") == p.cost("grouped_conv") == p.ops["conv"]
    assert p.cost("strided_depthwise_conv") == p.ops["depthwise_conv"]
    assert p.cost("conv_copy") == p.cost("gemm_call") == OpCost(0.0, 0.0)
    assert Profile("bare", "test", 2e9, {"conv": OpCost(1.0, 0.0), "default": OpCost(3.0, 0.0)}
                   ).cost("depthwise_conv") == OpCost(3.0, 0.0)  # fmt: skip
    conv = _layers()["_0"]
    assert node_time(p, conv) == pytest.approx(conv.flops / 2e9 + 1e-5, rel=1e-12)


def test_a_clamp_is_its_own_kind_and_old_profiles_price_it_as_an_elementwise_op():
    """ReLU6 and clamps (torch's modules, functions and methods; ONNX's Clip) are `clamp`, priced
    apart from other elementwise ops (a sigmoid) as onnxruntime fuses them into a conv; a profile
    measured before prices them as it priced every elementwise op."""
    import onnx
    from onnx import helper

    from suite.graph.from_onnx import from_onnx

    class Clamps(nn.Module):
        def forward(self, x):
            return nn.functional.relu6(x).clamp(0, 1).sigmoid()

    kinds = [n.cost_kind for n in from_torch(nn.Sequential(nn.ReLU6(), Clamps()), (2, 4, 4)).nodes.values()]
    assert kinds == ["input", "clamp", "clamp", "clamp", "elementwise"]
    value = lambda name: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 2, 4, 4])  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x"], ["c"], min=0.0, max=6.0), helper.make_node("Sigmoid", ["c"], ["s"])],
        "g",
        [value("x")],
        [value("s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    assert [n.cost_kind for n in from_onnx(model).nodes.values()] == ["input", "clamp", "elementwise"]
    old = Profile("old", "test", 2e9, {"conv": OpCost(1.0, 0.0), "elementwise": OpCost(4.0, 1e-6),
                                       "default": OpCost(3.0, 0.0)})  # fmt: skip
    assert old.cost("clamp") == old.ops["elementwise"]


def test_a_profile_that_cannot_price_an_op_kind_is_named():
    bare = Profile("bare", "test", 1e9, {"conv": OpCost(1.0, 0.0)})
    with pytest.raises(UserError, match="'bare' has no cost for op '.*' and no 'default'"):
        work_time(bare, OpWork.of([(_layers()["_5"], 10.0)]))


def test_a_model_that_does_not_fit_names_the_device():
    graph = from_torch(nn.Sequential(nn.Conv2d(1, 64, 3), nn.Flatten(), nn.Linear(64 * 14 * 14, 4096)),
                       (1, 16, 16), "big")  # fmt: skip
    pi = Device("pi", "test", profile("p", 1e9), 1, 1.0, 2**20)
    small = Fleet("tiny", (pi,), Link(1e9, 0, False), "t")
    with pytest.raises(UserError, match="does not fit device 'pi'"):
        make_plan("single", graph, small)


def test_prediction_is_reproducible_from_the_plan():
    graph = conv_graph()
    toy = fleet(1000.0, 2000.0)
    plan = make_plan("halp", graph, toy)
    assert predict(plan, graph, toy) == plan.predicted
