"""onnxruntime as the runtime's backend: what a frame of a plan computes on it against torch, the
monolithic model on torch-fast against onnxruntime, and the workers' start-up and memory on both.

As in `test_bench_core.py`: one thread, CPU seconds, the sides alternating round by round, medians.
A plan's frame is played as the workers play it (each party its own backend, compiled as a worker
compiles it, weights pruned), all parties in this process over the in-process transport, so its
CPU time is the frame's compute on every device together plus the runtime's own bookkeeping.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Callable

import pandas as pd
import pytest
import torch
from test_bench_core import CLOCK, INPUT, THREADS, _alternating, _input

from suite.backends import make_backend
from suite.fleet import uniform_fleet
from suite.graph import from_model
from suite.models.load import load_model
from suite.plan import COORDINATOR
from suite.profile import priced_here
from suite.runtime.engine import Runner, compile_program, parties, prune_weights, segments
from suite.runtime.lowering import lower_plan
from suite.runtime.transport import LocalTransport
from suite.schemes import make_plan
from suite.verify import compare_tensors


def _frame(backend_name: str, plan, model_graph, loaded, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One frame of `plan`, every party as a worker runs it, in this process."""

    def worker_backend():  # as workers make it: dead tiles freed, sessions of its own
        backend = make_backend(backend_name, THREADS)
        return dataclasses.replace(backend, observes_all_nodes=False)

    backend = worker_backend()
    graph = backend.prepare(loaded).graph
    fleet = priced_here(uniform_fleet(len(plan.devices)), backend_name)
    plan = lower_plan(plan, model_graph, graph, fleet)
    local, runners = LocalTransport(), {}
    for party in parties(plan):
        own, program = worker_backend(), compile_program(plan, graph, party)
        compiled = own.compile(prune_weights(graph, program), segments(program, graph))
        runners[party] = Runner(compiled.graph, program, own, local.party(party), 600.0)

    def frame() -> torch.Tensor:
        held: dict[str, dict] = {}

        def play(party: str) -> None:
            held[party] = runners[party].frame(0, x if party == COORDINATOR else None)

        threads = [threading.Thread(target=play, args=(p,)) for p in runners]
        with backend.active():  # process-wide settings, set once for every party's thread
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return held[COORDINATOR][graph.outputs[0]]

    return frame


@pytest.fixture(scope="module", params=["vgg16", "resnet18"])
def zoo(request):
    loaded = load_model(request.param, INPUT, 0)
    return loaded, from_model(loaded), _input(INPUT)


@pytest.mark.benchmark(timer=CLOCK)
def test_monolithic_torch_fast_vs_onnxruntime(benchmark, zoo):
    """Which backend is fastest on one device: the monolithic model on torch (exact), torch-fast
    (oneDNN) and onnxruntime. A finding, recorded in extra_info."""
    loaded, _, x = zoo
    sides = {}
    for name in ("torch", "torch-fast", "onnxruntime"):
        backend = make_backend(name, THREADS)
        prepared = backend.prepare(loaded)

        def run(backend=backend, prepared=prepared) -> torch.Tensor:
            with backend.active():
                return prepared.monolithic(x)

        sides[name] = run
    medians = _alternating(benchmark, sides)
    benchmark.extra_info.update(model=loaded.name, input=list(INPUT),
                                **{f"{k}_s": v for k, v in medians.items()})  # fmt: skip
    print(f"\n{loaded.name} monolithic, CPU s: " + ", ".join(f"{k} {v:.4f}" for k, v in medians.items()))


@pytest.mark.benchmark(timer=CLOCK)
@pytest.mark.parametrize("scheme,devices", [("single", 1), ("pico", 2), ("modnn", 2)])
def test_plan_compute_torch_vs_onnxruntime(benchmark, zoo, scheme, devices):
    """A frame of the same plan (made on the torch graph for two local devices) on `torch` and on
    `onnxruntime` workers, against the fastest monolithic model on one device. The target: the exact
    runtime's single-device frame within 1.1x of the fastest backend's monolithic time."""
    loaded, model_graph, x = zoo
    plan = make_plan(scheme, model_graph, priced_here(uniform_fleet(devices), "onnxruntime"))
    frames = {name: _frame(name, plan, model_graph, loaded, x) for name in ("torch", "onnxruntime")}
    fast, ort = make_backend("torch-fast", THREADS), make_backend("onnxruntime", THREADS)
    ort_monolithic = ort.prepare(loaded).monolithic
    assert compare_tensors(frames["onnxruntime"](), ort_monolithic(x)).bit_exact

    def torch_fast() -> torch.Tensor:
        with fast.active():
            return loaded.module(x)

    medians = _alternating(benchmark, {**frames, "torch-fast monolithic": torch_fast,
                                       "onnxruntime monolithic": lambda: ort_monolithic(x)})  # fmt: skip
    fastest = min(medians["torch-fast monolithic"], medians["onnxruntime monolithic"])
    ratios = {"torch_over_onnxruntime": medians["torch"] / medians["onnxruntime"],
              "onnxruntime_over_fastest_monolithic": medians["onnxruntime"] / fastest,
              "torch_over_fastest_monolithic": medians["torch"] / fastest}  # fmt: skip
    benchmark.extra_info.update(
        model=loaded.name,
        scheme=scheme,
        devices=devices,
        input=list(INPUT),
        **{f"{k.replace(' ', '_')}_s": v for k, v in medians.items()},
        **ratios,
    )
    print(
        f"\n{loaded.name} {scheme} on {devices}, CPU s a frame: "
        + ", ".join(f"{k} {v:.4f}" for k, v in medians.items())
        + "; "
        + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    )
    if scheme == "single":
        assert ratios["onnxruntime_over_fastest_monolithic"] <= 1.1


@pytest.mark.parametrize("model,scheme,devices", [("vgg16", "pico", 2), ("resnet18", "pico", 2),
                                                  ("vgg16", "modnn", 2)])  # fmt: skip
def test_worker_startup_and_memory(benchmark, tmp_path, model, scheme, devices):
    """Each worker's start-up (building the model, its sessions) and resident memory, on `torch`
    and on `onnxruntime`, from the devices.csv of a real run at the zoo size."""
    size = "x".join(map(str, INPUT))

    def run(backend: str) -> pd.DataFrame:
        out = tmp_path / backend
        done = subprocess.run([sys.executable, "-m", "suite", "run", "--model", model, "--input-size", size,
                               "--scheme", scheme, "--devices", str(devices), "--backend", backend,
                               "--frames", "3", "--warmup", "1", "--no-baseline", "--json", "-o", str(out)],
                              capture_output=True, text=True, timeout=1200)  # fmt: skip
        assert done.returncode == 0 and json.loads(done.stdout)["bit_exact"], done.stderr
        return pd.read_csv(out / "devices.csv").query("device != 'coordinator'")

    tables = benchmark.pedantic(lambda: {b: run(b) for b in ("torch", "onnxruntime")}, rounds=1, iterations=1)
    columns = ["startup_s", "compile_s", "executables", "weights_bytes", "rss_bytes", "peak_rss_bytes"]
    for backend, table in tables.items():
        for column in columns:
            benchmark.extra_info[f"{backend}_{column}"] = table[column].tolist()
        print(
            f"\n{model} {scheme} on {devices} workers, {backend}:\n{table[['device', *columns]].to_string()}"
        )
