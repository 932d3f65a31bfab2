"""Planning benchmarks: PICO's planning time and its DP's optimality gap against exhaustive search.

Run with `nox -s bench`; plain test runs skip them (`--benchmark-skip`).
"""

from __future__ import annotations

import pytest

from suite.backends import make_backend
from suite.fleet import Device, Fleet, load_fleet
from suite.models.load import load_model
from suite.schemes import make_plan
from suite.schemes.chain import pieces
from suite.schemes.pico import StageTimer, dp_search, exhaustive


def _graph(model: str):
    return make_backend("torch").prepare(load_model(model)).graph


def test_pico_plans_inception_v3_on_pico_hetero_under_a_second(benchmark):
    graph = _graph("inception_v3")
    fleet = load_fleet("pico-hetero")
    benchmark.pedantic(make_plan, args=("pico", graph, fleet), rounds=5, iterations=1)
    assert benchmark.stats.stats.median < 1.0


@pytest.mark.parametrize("devices", [2, 4, 8, 16, 32])
def test_pico_planning_time_curve(benchmark, devices):
    """Planning time of VGG-16 on 2..32 Pi 4B of mixed clocks (the curve is the group's medians)."""
    hetero = load_fleet("pico-hetero")
    fleet = Fleet(f"hetero-{devices}", tuple(
        Device(f"{d.name}-{k}", d.kind, d.profile, d.cores, d.freq_ghz, d.memory_bytes)
        for k in range(-(-devices // len(hetero.devices))) for d in hetero.devices)[:devices],
        hetero.link, hetero.source)  # fmt: skip
    graph = _graph("vgg16")
    benchmark.group = "pico planning time vs devices (vgg16)"
    plan = benchmark.pedantic(make_plan, args=("pico", graph, fleet), rounds=3, iterations=1)
    benchmark.extra_info["stages"] = len({s.group for s in plan.stages})
    benchmark.extra_info["throughput_fps"] = plan.predicted.throughput_fps


@pytest.mark.parametrize("model", ["vgg16", "resnet34", "inception_v3"])
def test_dp_gap_to_exhaustive_on_8_pieces_and_6_devices(benchmark, model):
    """The paper's DP (proxy + greedy) against exhaustive search over every grouping and device split,
    on the first 8 pieces of the model and 6 devices of pico-hetero (2 x 1.2 GHz, 2 x 800, 2 x 600 MHz)."""
    graph = _graph(model)
    fleet = load_fleet("pico-hetero")
    slowest = [d for d in fleet.devices if d.freq_ghz <= 0.6][:2]
    devices = [d for d in fleet.devices if d.freq_ghz > 0.6] + slowest
    fresh = lambda: ((StageTimer(graph, pieces(graph), fleet.link), 8, devices), {})  # no warm memo
    dp = benchmark.pedantic(dp_search, setup=fresh, rounds=3, iterations=1)
    best = exhaustive(StageTimer(graph, pieces(graph), fleet.link), 8, devices)
    gap = dp.period / best.period - 1
    benchmark.extra_info["dp_period_s"] = dp.period
    benchmark.extra_info["exhaustive_period_s"] = best.period
    benchmark.extra_info["gap"] = gap
    assert gap < 0.05
