"""Measured on local worker processes: each scheme's throughput against the single device's, the
cost model's error, exactness, and what the coordinator adds to every frame.

VGG-16 at 3x112x112 on 2 local workers emulating Raspberry Pi 4B (ncnn speed): each worker is
capped at its profile's share of this host's core (0.38 cores here) by a cgroup that weighs 8
busy processes, so the two devices and the coordinator fit 2 cores and a busy machine does not
starve them (uncapped, with other jobs running, the same plan measured 0.5x to 1.9x). Loopback
stands for the fleet's switched Gigabit. Every scheme and the single device run once in
`setup_cache` and the tracks read that one measurement.
"""

import statistics
import time

from suite.fleet import uniform_fleet
from suite.runtime.outcome import RunSummary
from suite.schemes import SCHEMES
from suite.tracking.measure import Workload, measure_schemes

PARTITIONED = [s for s in SCHEMES if s != "single"]
WORKLOAD = Workload("vgg16", (3, 112, 112), frames=60, warmup=4)
FLEET = (2, "rpi4b-1500mhz")  # devices, profile


def _completed(summary: RunSummary) -> RunSummary:
    """The summary of a run that completed; a run that failed fails the benchmark with its error."""
    if not summary.complete or summary.speedup_vs_single is None:
        raise RuntimeError(f"{summary.scheme}: {summary.error or 'no single-device run to compare'}")
    return summary


class Schemes:
    params = PARTITIONED
    param_names = ["scheme"]

    def setup_cache(self):
        return measure_schemes(WORKLOAD, uniform_fleet(*FLEET), PARTITIONED)

    setup_cache.timeout = 1200

    def track_period_over_single(self, runs, scheme):
        """The scheme's frame period over the single device's: 1 / measured throughput speedup."""
        return 1 / _completed(runs[scheme]).speedup_vs_single

    track_period_over_single.unit = "period / single device's"

    def track_throughput_prediction_error(self, runs, scheme):
        """|measured / predicted throughput - 1|: how far the cost model is from the workers."""
        return abs(_completed(runs[scheme]).predicted.throughput_error)

    track_throughput_prediction_error.unit = "|measured / predicted - 1|"

    def track_latency_prediction_error(self, runs, scheme):
        """|measured / predicted latency - 1|."""
        return abs(_completed(runs[scheme]).predicted.latency_error)

    track_latency_prediction_error.unit = "|measured / predicted - 1|"

    def track_bit_exact(self, runs, scheme):
        """1 when every frame of the scheme and of the single device equalled the monolithic model
        bit for bit, else 0. A run that did not complete counts as not exact."""
        return int(runs[scheme].bit_exact and runs[scheme].complete)

    track_bit_exact.unit = "1 = every output bit-exact"


class Coordinator:
    """A single-device run of a small model: its latency minus the model's own compute is what the
    coordinator, the transport and the worker loop add to every frame."""

    workload = Workload("resnet18", (3, 64, 64), frames=30, warmup=2)

    def setup_cache(self):
        import torch

        from suite.models.load import load_model
        from suite.runtime.setup import set_up_run

        run = measure_schemes(self.workload, uniform_fleet(1), [])["single"]
        setup = set_up_run(load_model(self.workload.model, self.workload.input_size), "torch")
        x = setup.frames[0].tensor
        torch.set_num_threads(1)
        seconds = []
        with setup.backend.active():
            for _ in range(self.workload.frames):
                start = time.perf_counter()
                setup.prepared.monolithic(x)
                seconds.append(time.perf_counter() - start)
        return {"latency_s": _completed(run).latency_s, "compute_s": statistics.median(seconds)}

    setup_cache.timeout = 600

    def track_overhead_per_frame(self, measured):
        return measured["latency_s"] - measured["compute_s"]

    track_overhead_per_frame.unit = "seconds"
