"""The cost model by hand: transfer times, overlap, stage times, work priced by op kind."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from torch import nn
from toys import MB, conv_graph, fleet, profile

from suite.cost import OpWork, comm_time, overlapped_time, predict, stage_time, work_time, work_times
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


def test_work_by_op_kind_prices_like_node_by_node():
    """Summing MACs by op kind first and pricing the sums gives the per-node formula's time."""
    p = Profile("p", "test", 2e9, {"conv": OpCost(1.0, 1e-5), "relu": OpCost(8.0, 2e-6),
                                   "default": OpCost(3.0, 5e-6)})  # fmt: skip
    kinds = [("conv", 1, 4e8), ("relu", 1, 1e6), ("conv", 1, 1e7), ("add", 1, 2e6), ("flatten", 1, 0.0),
             ("depthwise_conv", 32, 3e5), ("grouped_conv", 4, 2e7)]  # (cost kind, calls, MACs)
    nodes = [(SimpleNamespace(cost_kind=kind, calls=calls), macs) for kind, calls, macs in kinds]
    by_node = sum(p.node_time(kind, macs, calls) for kind, calls, macs in kinds)
    assert work_time(p, OpWork.of(nodes)) == pytest.approx(by_node, rel=1e-12)
    assert OpWork.of(nodes).calls.sum() == 5 + 32 + 4  # a grouped conv pays its fixed cost per group
    both = OpWork.of(nodes[:2]) + OpWork.of(nodes[2:])
    assert work_time(p, both) == pytest.approx(by_node, rel=1e-12)
    slow = Profile("slow", "test", 1e9, p.ops)
    work = OpWork.of(nodes)
    rows = work_times([p, slow], np.stack([work.macs] * 2), np.stack([work.calls] * 2))
    slow_by_node = sum(slow.node_time(kind, macs, calls) for kind, calls, macs in kinds)
    assert rows == pytest.approx([by_node, slow_by_node], rel=1e-12)
    # a grouped conv a profile does not list is priced as a dense conv, a depthwise one as `default`
    assert p.cost("grouped_conv") == p.ops["conv"] and p.cost("depthwise_conv") == p.ops["default"]


def test_a_profile_that_cannot_price_an_op_kind_is_named():
    bare = Profile("bare", "test", 1e9, {"conv": OpCost(1.0, 0.0)})
    with pytest.raises(UserError, match="'bare' has no cost for op '.*' and no 'default'"):
        work_time(bare, OpWork.of([(SimpleNamespace(cost_kind="relu", calls=1), 10.0)]))


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
