"""A run's results: what the coordinator measured (`Measurement`), the summary people read, and the
tables, trace and provenance saved beside it.

Everything is relative to the run's start, in seconds. The frames table is tidy (one row per frame
per plan run, the single-device baseline included) so any figure can be drawn from it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

import pandas as pd

from suite.energy import RaplTrace, energy_summary, energy_table
from suite.fleet import Fleet
from suite.plan import Plan
from suite.runtime.metrics import Event, chrome_trace, device_table, host_state, run_metadata, save_results
from suite.simulate import Workload, simulate

if TYPE_CHECKING:
    from suite.runtime.coordinator import RunOptions


# What each worker reports of its start-up and memory (devices.csv): seconds from its start until it
# was ready, of which building the backend's executables (onnxruntime's sessions) took `compile_s`,
# how many it built, its resident memory when ready, and its peak resident memory over the run.
WORKER_STARTUP = {"startup_s": "Float64", "compile_s": "Float64", "executables": "Int64",
                  "rss_bytes": "Int64", "peak_rss_bytes": "Int64"}  # fmt: skip


@dataclass
class FrameRecord:
    frame: int
    image: str
    warmup: bool
    start_s: float
    end_s: float
    bit_exact: bool

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Measurement:
    """What one plan did on the workers, on the coordinator's clock."""

    plan: Plan
    frames: list[FrameRecord]
    events: list[Event]
    workers: dict[str, dict]  # per device: pid, rank, weights kept, cpu cores allowed, WORKER_STARTUP
    window: int  # frames in flight
    start_s: float
    end_s: float
    error: str | None = None
    mismatch: str | None = None
    refused_peers: list[str] = field(default_factory=list)  # the first addresses that failed the handshake
    refused_count: int = 0  # every connection that failed it

    @property
    def complete(self) -> bool:
        return self.error is None and self.mismatch is None

    @property
    def measured(self) -> list[FrameRecord]:
        return sorted((f for f in self.frames if not f.warmup), key=lambda f: f.frame)

    @property
    def bit_exact(self) -> bool:
        return bool(self.frames) and self.mismatch is None and all(f.bit_exact for f in self.frames)

    @property
    def latency_s(self) -> float | None:
        frames = self.measured
        return median(f.latency_s for f in frames) if frames else None

    @property
    def throughput_fps(self) -> float | None:
        """Steady state: measured frames per second of completions after the last warm-up frame
        (after the first measured one when there is no warm-up)."""
        ends = sorted(f.end_s for f in self.measured)
        warm = [f.end_s for f in self.frames if f.warmup]
        if warm and ends:
            return len(ends) / (ends[-1] - max(warm))
        if len(ends) < 2:
            return 1 / self.latency_s if ends else None
        return (len(ends) - 1) / (ends[-1] - ends[0])


def network(options: RunOptions) -> dict:
    """How the run's network stands to the plan's link model (a summary's `network`)."""
    inventory = options.inventory
    if inventory is None:
        return {"kind": "loopback", "shaped": False, "dilation": 1.0,
                "description": "loopback, not shaped: the plan's link model is not emulated"}  # fmt: skip
    if inventory.lab is None:
        return {"kind": "fleet", "shaped": False, "dilation": 1.0, "inventory": inventory.name,
                "description": f"the devices of inventory '{inventory.name}' over their own network"}
    lab = inventory.lab
    return {"kind": "lab", "shaped": True, "dilation": lab.dilation, "inventory": inventory.name,
            "lab": lab.name, "rate_mbps": lab.rate_mbps, "shared": lab.shared, "shaping": lab.shaping,
            "latency": lab.latency, "cpu_cores": dict(lab.cpu_cores),
            "description": f"emulated lab '{lab.name}', {lab.shaping}; {lab.latency}; time dilated "
                           f"{lab.dilation:g}x (real-time figures are measured times x {lab.dilation:g})"}


def summary(run: Measurement, baseline: Measurement | None, fleet: Fleet, options: RunOptions,
            rapl: RaplTrace | None = None) -> dict:  # fmt: skip
    """The keys `suite run --json` prints; `rapl`: this host's energy counters sampled during the run."""
    plan = run.plan
    predicted = plan.predicted
    net = network(options)
    dilation = net["dilation"]  # a dilated lab runs this many times faster than the fleet it emulates
    real = {"latency_s": run.latency_s and run.latency_s * dilation,
            "throughput_fps": run.throughput_fps and run.throughput_fps / dilation}  # fmt: skip
    single = _separate(run, baseline)
    speedup = latency_speedup = None
    if single is not None and run.throughput_fps and single.throughput_fps:
        speedup = run.throughput_fps / single.throughput_fps
        latency_speedup = single.latency_s / run.latency_s
    elif baseline is run:
        speedup = latency_speedup = 1.0
    return {
        "scheme": plan.scheme,
        "model": plan.model,
        "input_shape": plan.input_shape,
        "fleet": fleet.name,
        "devices": len(run.workers),
        "backend": options.backend,
        "frames": len(run.measured),
        "warmup": options.warmup,
        "in_flight": run.window,
        "latency_s": run.latency_s,
        "throughput_fps": run.throughput_fps,
        "speedup_vs_single": speedup,
        "latency_speedup_vs_single": latency_speedup,
        "single": None if single is None else {"device": single.plan.hub, "latency_s": single.latency_s,
                                               "throughput_fps": single.throughput_fps},  # fmt: skip
        "bit_exact": run.bit_exact and (single is None or single.bit_exact),
        "complete": run.complete and (single is None or single.complete),
        "error": run.error or (single.error if single is not None else None),
        "real_time": real,  # the measured figures as the real fleet would show them (x dilation)
        "predicted": None if predicted is None else {
            "latency_s": predicted.latency_s,
            "throughput_fps": predicted.throughput_fps,
            "latency_error": _error(real["latency_s"], predicted.latency_s),
            "throughput_error": _error(real["throughput_fps"], predicted.throughput_fps),
        },
        "simulated": None if predicted is None else _simulated(plan, fleet, options, real["throughput_fps"]),
        "tiled_share": None if predicted is None else predicted.tiled_share,  # of the model's MACs
        "bytes_moved": sum(e.bytes for e in run.events if e.kind == "send"),
        "plan_hash": plan.digest,
        "network": net,
        "refused_peers": run.refused_peers,
        "refused_count": run.refused_count,
        "energy": energy_summary(run, baseline, fleet, dilation, rapl),
    }


def _simulated(plan: Plan, fleet: Fleet, options: RunOptions, measured_fps: float | None) -> dict:
    """The simulator's throughput for the same stream (frames back to back, as the run feeds them):
    unlike the cost model it plays transfers of different pipeline stages contending for a shared
    medium, which is where a WiFi pipeline's time goes."""
    result = simulate(plan, fleet, Workload(frames=max(min(options.frames, 60), 2)))
    return {"throughput_fps": result.throughput_fps,
            "throughput_error": _error(measured_fps, result.throughput_fps)}  # fmt: skip


def _separate(run: Measurement, baseline: Measurement | None) -> Measurement | None:
    """The single-device run, unless there is none or the run itself was the single device."""
    return baseline if baseline is not run else None


def _error(measured: float | None, predicted: float) -> float | None:
    """Measured over predicted, minus one: +0.25 means 25 % more than the cost model said."""
    return None if measured is None or not predicted else measured / predicted - 1


def frames_table(runs: dict[str, Measurement]) -> pd.DataFrame:
    rows = []
    for label, run in runs.items():
        for f in sorted(run.frames, key=lambda f: f.frame):
            rows.append({"run": label, "scheme": run.plan.scheme, "frame": f.frame, "image": f.image,
                         "warmup": f.warmup, "start_s": f.start_s - run.start_s,
                         "end_s": f.end_s - run.start_s, "latency_s": f.latency_s,
                         "bit_exact": f.bit_exact})  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "scheme", "frame", "image", "warmup", "start_s", "end_s",
                                       "latency_s", "bit_exact"])  # fmt: skip


def devices_table(runs: dict[str, Measurement]) -> pd.DataFrame:
    tables = []
    for label, run in runs.items():
        devices = ["coordinator", *run.workers]
        table = device_table(run.events, devices, run.start_s, run.end_s)
        table.insert(0, "run", label)
        table["cpu_cores"] = [None, *(w.get("cpu_cores") for w in run.workers.values())]
        table["weights_bytes"] = [0, *(w["weights_bytes"] for w in run.workers.values())]
        # the device's `suite doctor` verdict on the backend: equal fingerprints, equal arithmetic
        table["doctor_fingerprint"] = [None, *(w.get("doctor_fingerprint") for w in run.workers.values())]
        for column, dtype in WORKER_STARTUP.items():
            table[column] = pd.array([None, *(w.get(column) for w in run.workers.values())], dtype=dtype)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def save(directory: Path, run: Measurement, baseline: Measurement | None, fleet: Fleet,
         options: RunOptions, host_before: dict | None = None,
         rapl: RaplTrace | None = None) -> Path:  # fmt: skip
    """Write frames.csv, devices.csv, energy.csv (`suite.energy.energy_table`), summary.json (with
    provenance, and what else the host was doing before the run and after it: `metrics.host_state`),
    plan.json and trace.json (the plan's run, then the single-device run's); `rapl`: this host's
    energy counters sampled during the run."""
    single = _separate(run, baseline)
    runs = {"plan": run} | ({"single": single} if single is not None else {})
    shifted = [e.shifted(run.start_s) for e in run.events]
    devices = ["coordinator", *run.workers]
    if single is not None:  # after the plan's run on the same clock, each party a process of its own
        shifted += [replace(e.shifted(run.start_s), device=f"single: {e.device}") for e in single.events]
        devices += [f"single: {d}" for d in ["coordinator", *single.workers]]
    inventory = options.inventory
    hosts = None if inventory is None else {h.name: h.address for h in inventory.hosts}
    where = None if inventory is None else str(inventory.path)
    meta = run_metadata(fleet=fleet.name, fleet_source=fleet.source, plan_hash=run.plan.digest,
                        backend=options.backend, threads_per_worker=options.threads,
                        emulate=options.emulate and inventory is None, timeout_s=options.timeout_s,
                        model=options.model, seed=options.seed, workers=run.workers,
                        inventory=where, hosts=hosts,
                        host_state={"before": host_before, "after": host_state()})  # fmt: skip
    documents = {"summary": {**summary(run, baseline, fleet, options, rapl), "metadata": meta},
                 "plan": run.plan.to_dict(),
                 "trace": chrome_trace(shifted, devices)}  # fmt: skip
    folders = {"logs": options.log_dir} if options.log_dir is not None and options.log_dir.is_dir() else {}
    energy = pd.DataFrame(energy_table(runs, fleet, network(options)["dilation"]),
                          columns=["run", "device", "profile", "busy_s", "window_s", "idle_w", "busy_w",
                                   "energy_per_frame_j"])  # fmt: skip
    return save_results(directory, {"frames": frames_table(runs), "devices": devices_table(runs),
                                    "energy": energy}, documents, folders)  # fmt: skip
