"""The discrete-event simulator against the cost model on cases where they must agree."""

from __future__ import annotations

import pytest
from torch import nn
from toys import conv_graph, fleet

from suite.graph import from_torch
from suite.schemes import make_plan
from suite.simulate import Workload, simulate


def test_simulated_single_device_stream_matches_the_cost_model():
    graph = conv_graph()
    toy = fleet(1000.0)
    plan = make_plan("single", graph, toy)
    result = simulate(plan, toy, Workload(frames=10))
    assert result.throughput_fps == pytest.approx(plan.predicted.throughput_fps)
    assert min(result.latencies_s) == pytest.approx(plan.predicted.latency_s)
    slow = simulate(plan, toy, Workload(frames=10, rate=1.0))  # arrivals slower than service
    assert max(slow.latencies_s) == pytest.approx(plan.predicted.latency_s)
    assert slow.throughput_fps == pytest.approx(1.0)


def test_simulated_pipeline_overlaps_frames():
    chain = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    graph = from_torch(chain, (1, 8, 8), "two")
    toy = fleet(1000.0, 1000.0, bandwidth_bps=8e12, shared=False)
    plan = make_plan("pico", graph, toy)
    result = simulate(plan, toy, Workload(frames=30))
    assert result.throughput_fps == pytest.approx(plan.predicted.throughput_fps, rel=0.02)
