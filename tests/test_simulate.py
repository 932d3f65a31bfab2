"""The discrete-event simulator against the cost model on cases where they must agree, and against
what a pipeline and a queue do by hand or by theory."""

from __future__ import annotations

import functools
import gc
import os
import signal
import threading
import time
import tracemalloc
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from toys import conv_chain, conv_graph, fleet

from suite.arguments import MAX_SIMULATED_FRAMES
from suite.errors import UserError
from suite.fleet import Link
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


FRAMES_M_D_1 = 20_000  # 0.26 CPU-s here
M_D_1_TOLERANCE = 0.10  # over 12 seeds the mean wait of 20,000 frames is off by 1.4% +- 2.2% (sd): 4.5 sd
CONV_S = 576 / 1000.0  # one 3x3 conv on an 8x8 map (576 MACs) at 1000 MACs per second
MAP_BYTES = 8 * 8 * 4  # its 1x1x8x8 float32 input or output


@functools.cache
def _pipeline():
    """Two equal convs pipelined on two equal devices over a fast switched link, one conv each
    (tests/test_plan.py): every transfer passes through the hub and takes 2.6e-10 s here."""
    toy = fleet(1000.0, 1000.0, bandwidth_bps=8e12, shared=False)
    plan = make_plan("pico", conv_chain(2), toy)
    assert [s.devices for s in plan.stages] == [["d0"], ["d1"]]
    return plan, toy


@settings(max_examples=10, deadline=None)
@given(frames=st.integers(2, 40))
def test_a_pipeline_streams_one_frame_per_period_once_full(frames):
    """Frames admitted as fast as the pipeline takes them: the first leaves after both stages, each
    next one a period (one conv) later, so the last at (stages + frames - 1) periods."""
    plan, toy = _pipeline()
    result = simulate(plan, toy, SimWorkload(frames=frames))
    assert result.latencies_s[0] == pytest.approx(2 * CONV_S)
    assert [b - a for a, b in zip(result.finish_s, result.finish_s[1:])] == pytest.approx(
        [CONV_S] * (frames - 1)
    )
    assert result.finish_s[-1] == pytest.approx((2 + frames - 1) * CONV_S)
    assert result.throughput_fps == pytest.approx(1 / CONV_S)


@settings(max_examples=25, deadline=None)
@example(bandwidth_bps=1000.0, shared=True, frames=1, poisson=1.0, seed=0)  # alone: exactly the path
@example(bandwidth_bps=1000.0, shared=True, frames=2, poisson=1.0, seed=0)  # the next frame shares the link
@given(
    bandwidth_bps=st.floats(1e3, 1e6),
    shared=st.booleans(),
    frames=st.integers(1, 12),
    poisson=st.floats(0.05, 5.0),
    seed=st.integers(0, 2**16),
)
def test_no_frame_starts_a_stage_before_the_previous_stage_output_arrives(
    bandwidth_bps, shared, frames, poisson, seed
):
    """The pipeline planned on a fast link, played on a slow one: a frame's path is input to d0, conv,
    its output to the hub and on to d1, conv, the output to the hub (four maps sent, two convs one
    after another). No frame is faster than that path; the first takes exactly it when it has the link
    to itself until it is done (the next frame's transfers would share the link with its own)."""
    plan, fast = _pipeline()
    slow = replace(fast, link=Link(bandwidth_bps, 0.0, shared))
    path_s = 4 * 8 * MAP_BYTES / bandwidth_bps + 2 * CONV_S
    result = simulate(plan, slow, SimWorkload(frames=frames, poisson=poisson, seed=seed))
    arrivals = [finish - latency for finish, latency in zip(result.finish_s, result.latencies_s)]
    if frames == 1 or arrivals[1] >= arrivals[0] + path_s:
        assert result.latencies_s[0] == pytest.approx(path_s)
    assert min(result.latencies_s) >= path_s * (1 - 1e-9)


def test_poisson_arrivals_wait_as_long_as_the_m_d_1_queue_says():
    """One device serves every frame in a fixed D = 144 ms; Poisson arrivals at load rho = 0.5 wait
    rho D / (2 (1 - rho)) = 72 ms on average before service (Pollaczek-Khinchine for M/D/1)."""
    toy = fleet(1000.0, bandwidth_bps=8e12, shared=False)
    plan = make_plan("single", conv_graph(), toy)
    service_s, rho = 144 / 1000.0, 0.5
    result = simulate(plan, toy, SimWorkload(frames=FRAMES_M_D_1, poisson=rho / service_s, seed=1))
    mean_wait_s = sum(result.latencies_s) / len(result.latencies_s) - service_s
    assert mean_wait_s == pytest.approx(rho * service_s / (2 * (1 - rho)), rel=M_D_1_TOLERANCE)


def test_a_seeded_run_repeats_exactly():
    """Poisson arrivals and Rayleigh fading on a slow shared link: the same seed, the same run."""
    plan, fast = _pipeline()
    slow = replace(fast, link=Link(2048.0, 0.0, True))
    workload = SimWorkload(frames=30, poisson=0.3, channel="rayleigh", seed=7)
    first = simulate(plan, slow, workload)
    assert simulate(plan, slow, workload) == first
    assert simulate(plan, slow, replace(workload, seed=8)).latencies_s != first.latencies_s


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"frames": 0}, "--frames 0 must be between 1 and"),
        ({"frames": MAX_SIMULATED_FRAMES + 1}, f"--frames {MAX_SIMULATED_FRAMES + 1} must be between 1 and"),
        ({"rate": -2.0}, "--rate -2.0 must be positive"),
        ({"poisson": 0.0}, "--poisson 0.0 must be positive"),
        ({"rate": 1.0, "poisson": 1.0}, "give --rate or --poisson, not both"),
        ({"tasks_per_batch": 0}, "--tasks 0 must be at least 1"),
        ({"channel": "awgn"}, "--channel 'awgn' is not one of fixed, rayleigh"),
    ],
)
def test_a_bad_workload_is_one_line_naming_the_field(bad, says):
    plan, toy = _pipeline()
    with pytest.raises(UserError) as error:
        simulate(plan, toy, SimWorkload(**bad))
    assert says in str(error.value) and "\n" not in str(error.value)
