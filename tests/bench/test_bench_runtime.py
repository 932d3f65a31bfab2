"""Runtime benchmarks: gloo over loopback, the coordinator's overhead per frame, and how far the cost
model's predictions are from what the workers measure, per scheme.

`nox -s bench` runs them; the numbers go to .benchmarks/bench.json (`extra_info`) and are printed.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from suite.backends import make_backend
from suite.datasets import load_frames
from suite.fleet import uniform_fleet
from suite.models.load import load_model
from suite.runtime.coordinator import Coordinator, RunOptions
from suite.schemes import SCHEMES, make_plan

MB = 1 << 20

ECHO = textwrap.dedent("""
    import sys, datetime, torch, torch.distributed as dist
    store = dist.TCPStore("127.0.0.1", int(sys.argv[1]), 2, False, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=1, world_size=2)
    buf = torch.empty(int(sys.argv[2]) // 4)
    try:
        while True:  # until rank 0 leaves
            dist.recv(buf, src=0)
            dist.send(buf, dst=0)
    except RuntimeError:
        pass
""")


def test_gloo_loopback_throughput_1mb(benchmark):
    """Round trips of a 1 MB float32 tensor between two processes; MB/s counts both directions."""
    rounds, iterations = 30, 10
    store = dist.TCPStore("127.0.0.1", 0, 2, True, timeout=timedelta(seconds=60), wait_for_workers=False)
    peer = subprocess.Popen([sys.executable, "-c", ECHO, str(store.port), str(MB)])
    dist.init_process_group("gloo", store=store, rank=0, world_size=2)
    x = torch.ones(MB // 4)
    reply = torch.empty_like(x)

    def round_trip() -> None:
        dist.send(x, dst=1)
        dist.recv(reply, src=1)

    try:
        benchmark.pedantic(round_trip, rounds=rounds, iterations=iterations, warmup_rounds=1)
    finally:
        dist.destroy_process_group()
        peer.wait(60)
    mb_per_s = 2 * MB / 1e6 / benchmark.stats.stats.median
    benchmark.extra_info["mb_per_s"] = mb_per_s
    print(f"\ngloo loopback, 1 MB tensors: {mb_per_s:.0f} MB/s (median round trip "
          f"{benchmark.stats.stats.median * 1e3:.2f} ms)")


def _run(scheme: str, model: str, size: tuple[int, int, int], devices: int, frames: int):
    backend = make_backend("torch")
    prepared = backend.prepare(load_model(model, size, 0))
    plan = make_plan(scheme, prepared.graph, uniform_fleet(devices))
    inputs = load_frames(size)[:2]
    with backend.active():
        references = {f.name: prepared.monolithic(f.tensor) for f in inputs}
    options = RunOptions(model=model, input_size=size, frames=frames, warmup=2)
    run = Coordinator(prepared.graph, backend, uniform_fleet(devices), inputs, references, options).run(plan)
    assert run.complete and run.bit_exact, run.error
    return run, prepared, inputs, backend


def test_coordinator_overhead_per_frame(benchmark):
    """A single-device run of a small model: the runtime's latency minus the model's own compute is
    what the coordinator, the transport and the worker loop add to every frame."""
    run, prepared, inputs, backend = benchmark.pedantic(
        _run, args=("single", "resnet18", (3, 64, 64), 1, 30), rounds=1, iterations=1)
    torch.set_num_threads(1)
    with backend.active():
        compute = []
        for _ in range(30):
            start = time.perf_counter()
            prepared.monolithic(inputs[0].tensor)
            compute.append(time.perf_counter() - start)
    overhead = run.latency_s - statistics.median(compute)
    benchmark.extra_info.update(latency_s=run.latency_s, compute_s=statistics.median(compute),
                                overhead_s=overhead)  # fmt: skip
    print(f"\ncoordinator overhead per frame (resnet18 3x64x64, single device): {overhead * 1e3:.2f} ms "
          f"(latency {run.latency_s * 1e3:.2f} ms, compute {statistics.median(compute) * 1e3:.2f} ms)")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_predicted_vs_measured(benchmark, scheme):
    """VGG-16 3x112x112 on 2 local workers (one per core of a 2-core host): the cost model's latency
    and throughput beside the measured ones (the `local` profile, loopback standing for switched
    Gigabit). More workers than cores would share CPUs, which the cost model does not know."""
    run, *_ = benchmark.pedantic(_run, args=(scheme, "vgg16", (3, 112, 112), 2, 10), rounds=1, iterations=1)
    predicted = run.plan.predicted
    info = {"latency_s": run.latency_s, "predicted_latency_s": predicted.latency_s,
            "latency_error": run.latency_s / predicted.latency_s - 1,
            "throughput_fps": run.throughput_fps, "predicted_throughput_fps": predicted.throughput_fps,
            "throughput_error": run.throughput_fps / predicted.throughput_fps - 1}  # fmt: skip
    benchmark.extra_info.update(info)
    print(f"\n{scheme}: latency {run.latency_s:.3f} s (predicted {predicted.latency_s:.3f}, "
          f"{info['latency_error']:+.0%}), throughput {run.throughput_fps:.2f} fps (predicted "
          f"{predicted.throughput_fps:.2f}, {info['throughput_error']:+.0%})")
