"""Benchmarks through the emulated lab (root, sshd, tc): measured against predicted on shaped links.

Run with `nox -s bench` (plain test runs skip benchmarks). Each brings a dilated lab up, deploys,
runs plans through it with `suite run --inventory` exactly as a user would, and tears it down. The
figures (real-time equivalents, times x dilation) go to the benchmark's extra_info and the README.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/sshd").is_file(),
                                reason="the lab needs root and openssh-server")  # fmt: skip


def _suite(*args: str, timeout: float = 1800) -> str:
    done = subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _lab(fleet: str, name: str) -> dict:
    """A dilated lab of `fleet`, deployed: `suite lab up --json`'s object."""
    return json.loads(_suite("lab", "up", "--fleet", fleet, "--dilate", "auto", "--name", name, "--deploy",
                             "--json"))  # fmt: skip


def _run(inventory: str, folder: Path, scheme: str, frames: int) -> dict:
    """`suite run --json` of VGG-16 224 through the lab: its summary."""
    return json.loads(_suite("run", "--inventory", inventory, "--model", "vgg16", "--scheme", scheme,
                             "--frames", str(frames), "--warmup", "1", "--no-baseline", "--json",
                             "-o", str(folder / scheme)))  # fmt: skip


@needs_root
def test_predicted_vs_measured_per_scheme_on_a_dilated_pico_homo_4_lab(benchmark, tmp_path):
    """VGG-16 224 on four emulated Pi 4B on 50 Mbit/s WiFi (one medium), every scheme: the cost
    model's latency and throughput, the simulator's throughput, and the measured real-time ones."""
    name = f"bench4p{os.getpid() % 1000}"
    rows = {}

    def measure() -> None:
        up = _lab("pico-homo-4", name)
        try:
            for scheme in ("single", "modnn", "deepthings", "halp", "pico"):
                run = _run(up["inventory"], tmp_path, scheme, 3 if scheme == "modnn" else 6)
                assert run["bit_exact"] and run["complete"], scheme
                rows[scheme] = {"dilation": up["dilation"], **run["real_time"],
                                "predicted_latency_s": run["predicted"]["latency_s"],
                                "predicted_throughput_fps": run["predicted"]["throughput_fps"],
                                "latency_error": run["predicted"]["latency_error"],
                                "throughput_error": run["predicted"]["throughput_error"],
                                "simulated_throughput_fps": run["simulated"]["throughput_fps"],
                                "simulated_error": run["simulated"]["throughput_error"]}  # fmt: skip
        finally:
            _suite("lab", "down", "--name", name)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info["schemes"] = rows
    for key in ("latency_error", "throughput_error", "simulated_error"):
        benchmark.extra_info[f"median_abs_{key}"] = statistics.median(abs(r[key]) for r in rows.values())


@needs_root
def test_pico_on_eight_dilated_pis_against_one_in_the_same_lab(benchmark, tmp_path):
    """VGG-16 224, PICO on eight emulated Pi 4B (`pico-homo-8`) against the single device measured in
    the same lab, beside the cost model's prediction for the real fleet."""
    name = f"bench8p{os.getpid() % 1000}"
    found = {}

    def measure() -> None:
        up = _lab("pico-homo-8", name)
        try:
            single = _run(up["inventory"], tmp_path, "single", 4)
            pico = _run(up["inventory"], tmp_path, "pico", 8)
            assert single["bit_exact"] and pico["bit_exact"]
            ratio = lambda key: pico[key]["throughput_fps"] / single[key]["throughput_fps"]  # noqa: E731
            found.update(dilation=up["dilation"], measured_speedup=ratio("real_time"),
                         predicted_speedup=ratio("predicted"), simulated_speedup=ratio("simulated"),
                         pico_real_fps=pico["real_time"]["throughput_fps"],
                         single_real_fps=single["real_time"]["throughput_fps"])  # fmt: skip
        finally:
            _suite("lab", "down", "--name", name)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(found)
