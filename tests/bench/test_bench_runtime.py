"""Runtime benchmarks: gloo over loopback, the coordinator's overhead per frame, and how far the cost
model's predictions are from what the workers measure, per scheme.

`nox -s bench` runs them; the numbers go to .benchmarks/bench.json (`extra_info`) and are printed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from suite.fleet import uniform_fleet
from suite.models.load import load_model
from suite.runtime.measurement import RunOptions
from suite.runtime.setup import set_up_run
from suite.schemes import SCHEMES, make_plan

MB = 1 << 20


def test_gloo_loopback_throughput_1mb(benchmark):
    """Round trips of a 1 MB float32 tensor between two processes; MB/s counts both directions."""
    rounds, iterations = 30, 10
    store = dist.TCPStore("127.0.0.1", 0, 2, True, timeout=timedelta(seconds=60), wait_for_workers=False)
    peer = subprocess.Popen([sys.executable, "-c", ECHO, "127.0.0.1", str(store.port), str(MB), "raw"])
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
    print(
        f"\ngloo loopback, 1 MB tensors: {mb_per_s:.0f} MB/s (median round trip "
        f"{benchmark.stats.stats.median * 1e3:.2f} ms)"
    )


# the peer of every round trip here: echoes each tensor back over gloo as it is ("raw") or through the
# suite's authenticated transport ("mac"); argv: host, store port, bytes, raw|mac
ECHO = textwrap.dedent("""
    import sys, datetime, torch, torch.distributed as dist
    from suite.runtime.transport import GlooTransport
    store = dist.TCPStore(sys.argv[1], int(sys.argv[2]), 2, False, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=1, world_size=2)
    raw, buf = sys.argv[4] == "raw", torch.empty(int(sys.argv[3]) // 4)
    gloo = GlooTransport({"a": 0, "b": 1}, "b", b"k" * 32)
    try:
        while True:  # until rank 0 leaves
            if raw:
                dist.recv(buf, src=0)
                dist.send(buf, dst=0)
            else:
                gloo.recv(buf, "a", 7).wait(60)
                gloo.send(buf, "a", 7).wait(60)
    except RuntimeError:
        pass
""")
SHAPED_MBIT = 100  # a lab link's rate (the PICO and HALP fleets' WiFi is 50-300 Mbit/s)


@pytest.fixture
def shaped_link():
    """A veth pair to a namespace of its own, shaped to SHAPED_MBIT each way (tc tbf; root), so the
    transfers cross a lab-like link without touching loopback; removed however the test ends."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("needs root, ip and tc for a shaped link")
    tag = f"sb{os.getpid() % 100000}"
    here, there, ns = f"{tag}h", f"{tag}p", f"suite-bench-{tag}"
    rate = f"rate {SHAPED_MBIT}mbit burst 64kb latency 100ms"
    commands = [f"ip netns add {ns}", f"ip link add {here} type veth peer name {there} netns {ns}",
                f"ip addr add 10.231.7.1/30 dev {here}", f"ip link set {here} up",
                f"ip -n {ns} addr add 10.231.7.2/30 dev {there}", f"ip -n {ns} link set {there} up",
                f"ip -n {ns} link set lo up", f"tc qdisc add dev {here} root tbf {rate}",
                f"ip netns exec {ns} tc qdisc add dev {there} root tbf {rate}"]  # fmt: skip
    try:
        for command in commands:
            subprocess.run(command.split(), check=True, capture_output=True)
        yield {"ns": ns, "here": here, "there": there, "host": "10.231.7.1"}
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _round_trips(size: int, rounds: int, raw: bool, link: dict | None) -> float:
    """Median seconds of one round trip of a `size`-byte tensor to an echoing process, over gloo as it
    is (`raw`) or through the suite's authenticated transport (a MAC after each message)."""
    from suite.runtime.transport import GlooTransport

    host = link["host"] if link else "127.0.0.1"
    os.environ["GLOO_SOCKET_IFNAME"] = link["here"] if link else "lo"
    store = dist.TCPStore(host, 0, 2, True, timeout=timedelta(seconds=60), wait_for_workers=False)
    argv = [sys.executable, "-c", ECHO, host, str(store.port), str(size),
            "raw" if raw else "mac"]  # fmt: skip
    if link:
        argv = ["ip", "netns", "exec", link["ns"], "env", f"GLOO_SOCKET_IFNAME={link['there']}", *argv]
    peer = subprocess.Popen(argv)
    x, reply = torch.ones(size // 4), torch.empty(size // 4)
    gloo = GlooTransport({"a": 0, "b": 1}, "a", b"k" * 32)
    times = []
    try:
        dist.init_process_group("gloo", store=store, rank=0, world_size=2)
        for _ in range(rounds + 1):
            start = time.perf_counter()
            if raw:
                dist.send(x, dst=1)
                dist.recv(reply, src=1)
            else:
                gloo.send(x, "b", 7).wait(60)
                gloo.recv(reply, "b", 7).wait(60)
            times.append(time.perf_counter() - start)
    finally:
        dist.destroy_process_group()
        peer.wait(60)
        del os.environ["GLOO_SOCKET_IFNAME"]
    assert torch.equal(reply, x)
    return statistics.median(times[1:])  # the first pays for the connection


@pytest.mark.parametrize("where", ["loopback", "shaped"])
def test_authenticated_transport_against_raw_gloo(benchmark, request, where):
    """The MAC's cost per transfer: round trips of a 4 MB tensor (a VGG-16 tile's size) through the
    suite's transport against gloo's own send/recv, alternating, on loopback and on a link shaped
    like the lab's (goal: within 5%)."""
    link = request.getfixturevalue("shaped_link") if where == "shaped" else None
    size, rounds = 4 * MB, (20 if link is None else 6)
    pairs = []

    def both() -> None:
        pairs.append((_round_trips(size, rounds, True, link), _round_trips(size, rounds, False, link)))

    benchmark.pedantic(both, rounds=3, iterations=1)
    raw = statistics.median(r for r, _ in pairs)
    mac = statistics.median(m for _, m in pairs)
    benchmark.extra_info |= {"raw_round_trip_s": raw, "authenticated_round_trip_s": mac, "ratio": mac / raw}
    print(
        f"\n{where}: 4 MB round trip {raw * 1e3:.1f} ms on gloo, {mac * 1e3:.1f} ms authenticated "
        f"({mac / raw:.3f}x)"
    )


def _run(scheme: str, model: str, size: tuple[int, int, int], devices: int, frames: int):
    setup = set_up_run(load_model(model, size, 0), "torch")
    fleet = uniform_fleet(devices)
    plan = make_plan(scheme, setup.model, fleet)
    options = RunOptions(model=model, input_size=size, frames=frames, warmup=2)
    run = setup.coordinator(fleet, options).run(plan)
    assert run.complete and run.bit_exact, run.error
    return run, setup


def test_coordinator_overhead_per_frame(benchmark):
    """A single-device run of a small model: the runtime's latency minus the model's own compute is
    what the coordinator, the transport and the worker loop add to every frame."""
    run, setup = benchmark.pedantic(
        _run, args=("single", "resnet18", (3, 64, 64), 1, 30), rounds=1, iterations=1
    )
    torch.set_num_threads(1)
    with setup.backend.active():
        compute = []
        for _ in range(30):
            start = time.perf_counter()
            setup.prepared.monolithic(setup.frames[0].tensor)
            compute.append(time.perf_counter() - start)
    overhead = run.latency_s - statistics.median(compute)
    benchmark.extra_info.update(latency_s=run.latency_s, compute_s=statistics.median(compute),
                                overhead_s=overhead)  # fmt: skip
    print(
        f"\ncoordinator overhead per frame (resnet18 3x64x64, single device): {overhead * 1e3:.2f} ms "
        f"(latency {run.latency_s * 1e3:.2f} ms, compute {statistics.median(compute) * 1e3:.2f} ms)"
    )


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
    print(
        f"\n{scheme}: latency {run.latency_s:.3f} s (predicted {predicted.latency_s:.3f}, "
        f"{info['latency_error']:+.0%}), throughput {run.throughput_fps:.2f} fps (predicted "
        f"{predicted.throughput_fps:.2f}, {info['throughput_error']:+.0%})"
    )
