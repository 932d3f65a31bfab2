"""Core benchmarks: region planning, the cost of running a model as one tile, and of exactness.

Skipped by normal test runs (`--benchmark-skip` in addopts); `nox -s bench` runs them. The machine
may be shared, so the comparisons run on one thread and time CPU seconds (`CLOCK`): another process
can neither stall a multi-threaded op's barrier (2 threads: VGG-16 at parts 1 measured 1.2 % over
monolithic on a lightly loaded machine, 21 % under load) nor count its time slices against us. The two
sides alternate round by round and medians are compared.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable

import pytest
import torch

from suite.backends import make_backend, run_segment
from suite.cost import predict
from suite.fleet import uniform_fleet
from suite.graph.cuts import spatial_front
from suite.models.load import load_model
from suite.profile import priced_here
from suite.regions import WHOLE, plan_regions, tile_boxes
from suite.schemes import make_plan

INPUT = (3, 224, 224)  # the zoo size; VGG-16 takes ~0.5 CPU-s a forward
ROUNDS = 21
THREADS = 1
CLOCK = time.process_time


def _input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))


def _alternating(benchmark, sides: dict[str, Callable[[], object]], rounds: int = ROUNDS) -> dict[str, float]:
    """Each side once per round, in turn, for `rounds` rounds after a warm-up; the median CPU seconds
    of each. The benchmark's own statistics are a whole round's."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}

    def one_round() -> None:
        for name, side in sides.items():
            start = CLOCK()
            side()
            seconds[name].append(CLOCK() - start)

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=1)
    return {name: statistics.median(times[-rounds:]) for name, times in seconds.items()}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _interleaved(benchmark, timed: Callable[[], object], other: Callable[[], object]) -> float:
    """Benchmark `timed` with `other` run (and timed here) before each round, so both see the same
    load; returns `other`'s median seconds, warm-up round excluded. Each side's median minor page
    faults go to extra_info: fresh pages, not arithmetic, are where a side's extra CPU time hides."""
    seconds: list[float] = []
    faults: dict[str, list[int]] = {"timed": [], "other": []}

    def run_other() -> None:
        start, first = CLOCK(), _faults()
        other()
        seconds.append(CLOCK() - start)
        faults["other"].append(_faults() - first)

    def run_timed() -> None:
        first = _faults()
        timed()
        faults["timed"].append(_faults() - first)

    benchmark.pedantic(run_timed, setup=run_other, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info.update({f"page_faults_{side}": statistics.median(n[-ROUNDS:])
                                 for side, n in faults.items()})  # fmt: skip
    return statistics.median(seconds[-ROUNDS:])


@pytest.fixture(scope="module")
def exact():
    return make_backend("torch", threads=THREADS)


@pytest.fixture(scope="module")
def vgg16(exact):
    return exact.prepare(load_model("vgg16", INPUT))


def test_regions_inception_v3_8_strips(benchmark, exact):
    """Planning must stay cheap next to running a tile: all 8 strips' regions under 50 ms."""
    graph = exact.prepare(load_model("inception_v3")).graph

    def plan_all():
        front = spatial_front(graph)
        outputs = graph.boundary(front)
        boxes = {o: tile_boxes(graph[o], 8) for o in outputs}
        return [plan_regions(graph, front, {o: boxes[o][i] for o in outputs}) for i in range(8)]

    assert len(benchmark(plan_all)) == 8
    assert benchmark.stats.stats.median < 0.050


@pytest.mark.benchmark(timer=CLOCK)
@pytest.mark.parametrize("observes_all_nodes", [False, True], ids=["dead-tiles-freed", "all-tiles-kept"])
def test_parts_1_vgg16_matches_monolithic_speed(benchmark, exact, vgg16, observes_all_nodes):
    """`--parts 1` is the whole spatial front as one fused tile (per-node regions and border padding)
    plus the unpartitioned tail; run as a runtime runs it, dropping each tile after its last reader,
    it should cost no more than 3 % over the model's own forward. Keeping every node's tile, as
    `verify` does to name the first mismatching node, is recorded, not asserted: the held maps
    (~115 MB) make new ones take fresh pages, 7-20k more page faults a forward in most runs (README).
    Planned once outside the timing; with one tile, stitching is the identity."""
    backend = dataclasses.replace(exact, observes_all_nodes=observes_all_nodes)
    graph, x = vgg16.graph, _input(INPUT)
    front = spatial_front(graph)
    outputs = graph.boundary(front)
    tail = [n for n in graph.nodes if n not in set(front) | {graph.input}]
    regions = plan_regions(graph, front, {o: tile_boxes(graph[o], 1)[0] for o in outputs})

    def tiled() -> torch.Tensor:
        done = run_segment(graph, front, {graph.input: (WHOLE, x)}, backend, regions, outputs)
        values = {graph.input: (WHOLE, x)} | {o: (WHOLE, done[o][1]) for o in outputs}
        return run_segment(graph, tail, values, backend, outputs=graph.outputs)[graph.outputs[0]][1]

    with backend.active():
        assert torch.equal(tiled(), vgg16.monolithic(x))
        monolithic = _interleaved(benchmark, tiled, lambda: vgg16.monolithic(x))
    ratio = benchmark.stats.stats.median / monolithic
    benchmark.extra_info.update(input=list(INPUT), monolithic_median_s=monolithic,
                                tiled_over_monolithic=ratio)  # fmt: skip
    if not observes_all_nodes:
        assert ratio <= 1.03, f"parts 1 is {ratio - 1:.1%} slower than the monolithic forward"


@pytest.mark.benchmark(timer=CLOCK)
@pytest.mark.parametrize("model", ["vgg16", "resnet18"])
def test_exact_torch_over_torch_fast(benchmark, exact, model):
    """What exactness costs: the monolithic forward with oneDNN and NNPACK off (`torch`) against
    oneDNN on (`torch-fast`). A finding, recorded in extra_info, not a target."""
    fast = make_backend("torch-fast", threads=THREADS)
    module, x = load_model(model, INPUT).module, _input(INPUT)

    def forward(backend) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with backend.active():
                return module(x)

        return run

    fast_median = _interleaved(benchmark, forward(exact), forward(fast))
    ratio = benchmark.stats.stats.median / fast_median
    benchmark.extra_info.update(input=list(INPUT), torch_fast_median_s=fast_median,
                                torch_over_torch_fast=ratio)  # fmt: skip


@pytest.mark.benchmark(timer=CLOCK)
@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
@pytest.mark.parametrize("model", ["mobilenet_v2", "efficientnet_b0", "resnet18", "googlenet", "resnet50"])
def test_single_device_prediction_of_the_monolithic_forward(benchmark, backend_name, model):
    """The cost model's single-device time on this host's own profile on the backend (measured the
    first time, as a user's first prediction measures it, on synthetic layers only) against the
    measured monolithic forward (one thread, CPU time), within 15 %: convs are priced by class
    (kxk, 1x1, depthwise, strided depthwise, grouped) and, on the exact kernels, by the values they
    copy around their matrix products and the products' calls (`suite.cost.node_work`); with one
    rate for every dense conv ResNet-50 was 0.76 of its time, GoogLeNet 1.19. On onnxruntime the
    profile times whole blocks, one session each, as the model's session fuses a conv's activation
    and residual add into it and keeps maps in its blocked layout: timed a node per session, it
    predicted 1.3-2.7x the time (the mobile nets the most)."""
    backend = make_backend(backend_name, threads=THREADS)
    prepared = backend.prepare(load_model(model))
    graph, x = prepared.graph, _input(prepared.graph.input_shape[1:])
    with pytest.MonkeyPatch.context() as env:
        env.delenv("SUITE_HOST_PROFILE")
        fleet = priced_here(uniform_fleet(1), backend_name)
    predicted = predict(make_plan("single", graph, fleet), graph, fleet).latency_s
    with backend.active(), torch.no_grad():
        benchmark.pedantic(lambda: prepared.monolithic(x), rounds=ROUNDS // 2, warmup_rounds=1)
    ratio = predicted / benchmark.stats.stats.median
    benchmark.extra_info.update(predicted_s=predicted, predicted_over_measured=ratio)
    assert 0.85 <= ratio <= 1.15, f"{model}: predicted {predicted:.3f} s, {ratio:.2f}x the measured time"
