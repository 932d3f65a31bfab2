"""The discrete-event simulator against the cost model on cases where they must agree."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
import tracemalloc

import pytest
from torch import nn
from toys import conv_graph, fleet

from suite.arguments import MAX_SIMULATED_FRAMES
from suite.graph import from_torch
from suite.schemes import make_plan
from suite.simulate import SimWorkload, simulate


def test_simulated_single_device_stream_matches_the_cost_model():
    graph = conv_graph()
    toy = fleet(1000.0)
    plan = make_plan("single", graph, toy)
    result = simulate(plan, toy, SimWorkload(frames=10))
    assert result.throughput_fps == pytest.approx(plan.predicted.throughput_fps)
    assert min(result.latencies_s) == pytest.approx(plan.predicted.latency_s)
    slow = simulate(plan, toy, SimWorkload(frames=10, rate=1.0))  # arrivals slower than service
    assert max(slow.latencies_s) == pytest.approx(plan.predicted.latency_s)
    assert slow.throughput_fps == pytest.approx(1.0)


def test_a_long_stream_keeps_memory_flat_and_stops_at_once():
    """A process per frame held every frame not yet admitted (6.4 GB at 10^8 frames) and took
    minutes to unwind after Ctrl-C; one process per frame in flight does neither."""
    graph = conv_graph()
    toy = fleet(1000.0)
    plan = make_plan("single", graph, toy)
    tracemalloc.start()
    try:
        simulate(plan, toy, SimWorkload(frames=20_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4e6  # each frame's latency and finish (21 MB with a process per frame)
    stop = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored if run from `cmd &`
    stop_started = time.monotonic()
    stop.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            simulate(plan, toy, SimWorkload(frames=MAX_SIMULATED_FRAMES))  # about 10 s here
        gc.collect()
        assert time.monotonic() - 1.0 - stop_started < 3
    finally:
        stop.cancel()
        signal.signal(signal.SIGINT, before)


def test_simulated_pipeline_overlaps_frames():
    chain = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    graph = from_torch(chain, (1, 8, 8), "two")
    toy = fleet(1000.0, 1000.0, bandwidth_bps=8e12, shared=False)
    plan = make_plan("pico", graph, toy)
    result = simulate(plan, toy, SimWorkload(frames=30))
    assert result.throughput_fps == pytest.approx(plan.predicted.throughput_fps, rel=0.02)
