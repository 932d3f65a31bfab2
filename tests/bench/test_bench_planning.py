"""Planning benchmarks: every scheme's planning time on every bundled fleet, `suite plan` end to end,
PICO's planning time as devices grow, and its DP's optimality gap against exhaustive search.

Run with `nox -s bench`; plain test runs skip them (`--benchmark-skip`). Planning times are CPU
seconds (the process's), so other jobs on a shared machine count less against them; each stated goal
is asserted on the benchmark's own median.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from suite.fleet import Device, Fleet, bundled_fleets, load_fleet
from suite.graph import from_model
from suite.models.load import load_model
from suite.schemes import SCHEMES, make_plan
from suite.schemes.chain import pieces
from suite.schemes.pico import StageTimer, dp_search, exhaustive


def _graph(model: str):
    return from_model(load_model(model, weights=False))


PLANNING_GOAL_S = 0.1  # CPU seconds, on the bundled fleet where planning takes longest
END_TO_END_GOAL_S = 1.0  # wall seconds of `suite plan` over `python -c "import torch"`


@pytest.mark.benchmark(timer=time.process_time)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("model", ["vgg16", "resnet34", "inception_v3"])
def test_planning_time_on_every_bundled_fleet(benchmark, model, scheme):
    """Planning time on the bundled fleet where it is longest (goal: under `PLANNING_GOAL_S` for
    every scheme and fleet); the fleet is found by one untimed pass, by CPU time.

    Missed on 2026-12-05 (Intel Xeon 2-core host, shared), vgg16: deepthings-reuse 665 CPU-ms on
    pico-homo-8 and ofl 111 CPU-ms on pico-libtorch-hetero; the goal stands, these fail until fixed."""
    graph = _graph(model)

    def cpu_seconds(fleet) -> float:
        start = time.process_time()
        make_plan(scheme, graph, fleet)
        return time.process_time() - start

    slowest = max((load_fleet(name) for name in bundled_fleets()), key=cpu_seconds)
    benchmark.group = "planning time on the slowest bundled fleet"
    benchmark.extra_info["fleet"] = slowest.name
    benchmark.pedantic(make_plan, args=(scheme, graph, slowest), rounds=5, iterations=1)
    median = benchmark.stats.stats.median
    assert median < PLANNING_GOAL_S, (
        f"{scheme} plans {model} on fleet {slowest.name} in {median * 1e3:.0f} CPU-ms "
        f"(goal: under {PLANNING_GOAL_S * 1e3:.0f} ms)"
    )


def test_suite_plan_end_to_end_against_importing_torch(benchmark):
    """`suite plan` wall time beside `python -c "import torch"` (goal: within `END_TO_END_GOAL_S` of
    it); wall time, as a user waits it, both sides alternating round by round on the same host."""
    run = lambda *args: subprocess.run([sys.executable, *args], check=True, capture_output=True)
    plan = ("-m", "suite", "plan", "--model", "vgg16", "--scheme", "single", "--devices", "1")
    torch_s = []

    def import_torch() -> None:
        start = time.perf_counter()
        run("-c", "import torch")
        torch_s.append(time.perf_counter() - start)

    benchmark.pedantic(run, args=plan, setup=import_torch, rounds=5, iterations=1)
    torch_median = sorted(torch_s)[len(torch_s) // 2]
    over = benchmark.stats.stats.median - torch_median
    benchmark.extra_info.update({"import_torch_s": torch_median, "over_import_torch_s": over})
    assert over < END_TO_END_GOAL_S, (
        f"`suite plan --model vgg16 --scheme single` takes {benchmark.stats.stats.median:.2f} s, "
        f"{over:.2f} s over `import torch` ({torch_median:.2f} s; goal: within {END_TO_END_GOAL_S:g} s)"
    )


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
