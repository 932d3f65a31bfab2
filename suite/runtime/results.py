"""A run's results: the tables, trace and provenance saved beside its summary
(`suite.runtime.outcome`), from what the coordinator measured (`suite.runtime.measurement`).

Everything is relative to the run's start, in seconds. The frames table is tidy (one row per frame
per run and repeat, the single-device baseline included) so any figure can be drawn from it
directly.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from suite.fleet import Fleet
from suite.runtime.energy import energy_table
from suite.runtime.measurement import RunOptions, Runs
from suite.runtime.metrics import chrome_trace, device_table, host_state, run_metadata, save_results
from suite.runtime.outcome import RunSummary, summary_json

# What each worker reports of its start-up and memory (devices.csv): seconds from its start until it
# was ready, of which building the backend's executables (onnxruntime's sessions) took `compile_s`,
# how many it built, its resident memory when ready, and its peak resident memory over the run.
WORKER_STARTUP = {"startup_s": "Float64", "compile_s": "Float64", "executables": "Int64",
                  "rss_bytes": "Int64", "peak_rss_bytes": "Int64"}  # fmt: skip


def frames_table(runs: Runs) -> pd.DataFrame:
    origin = runs.repeats[0].plan.start_s
    rows = []
    for repeat, label, run in runs.each():
        for f in sorted(run.frames, key=lambda f: f.frame):
            rows.append({"run": label, "repeat": repeat, "scheme": run.plan.scheme, "frame": f.frame,
                         "image": f.image, "warmup": f.warmup, "start_s": f.start_s - origin,
                         "end_s": f.end_s - origin, "latency_s": f.latency_s,
                         "bit_exact": f.bit_exact})  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "repeat", "scheme", "frame", "image", "warmup", "start_s",
                                       "end_s", "latency_s", "bit_exact"])  # fmt: skip


def devices_table(runs: Runs) -> pd.DataFrame:
    tables = []
    for repeat, label, run in runs.each():
        workers = list(run.workers.values())
        table = device_table(run.events, ["coordinator", *run.workers], run.start_s, run.end_s)
        table.insert(0, "run", label)
        table.insert(1, "repeat", repeat)
        table["cpu_cores"] = [None, *(w.cpu_cores for w in workers)]
        table["weights_bytes"] = [0, *(w.weights_bytes for w in workers)]
        # the device's `suite doctor` verdict on the backend: equal fingerprints, equal arithmetic
        table["doctor_fingerprint"] = [None, *(w.doctor_fingerprint for w in workers)]
        for column, dtype in WORKER_STARTUP.items():
            table[column] = pd.array([None, *(getattr(w, column) for w in workers)], dtype=dtype)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def statistics_table(summary: RunSummary) -> pd.DataFrame:
    """stats.csv: per run (plan, single, and their ratios as "speedup") each figure, with its
    bootstrap interval where it has one, and for a speedup why it is inconclusive, if it is."""
    columns = ["run", "metric", "value", "ci_low", "ci_high", "level", "repeats", "inconclusive"]
    figures = summary.statistics
    if figures is None:
        return pd.DataFrame(columns=columns)
    rows = []
    for run, latency, throughput in [
        ("plan", figures.latency_s, figures.throughput_fps),
        ("single", figures.single_latency_s, figures.single_throughput_fps),
    ]:
        if latency is not None:
            rows += [(run, f"latency_{name}_s", getattr(latency, name), None, None, None)
                     for name in ("p50", "p90", "p99", "mean")]  # fmt: skip
            rows.append((run, "throughput_fps", throughput.value, throughput.low, throughput.high,
                         throughput.level))  # fmt: skip
    for metric in ("speedup_vs_single", "latency_speedup_vs_single"):
        estimate = getattr(figures, metric)
        if estimate is not None:
            rows.append(("speedup", metric, estimate.value, estimate.low, estimate.high, estimate.level))
    return pd.DataFrame([(*row, figures.repeats, figures.inconclusive.get(row[1])) for row in rows],
                        columns=columns)  # fmt: skip


def save(directory: Path, runs: Runs, summary: RunSummary, fleet: Fleet, options: RunOptions,
         host_before: dict | None = None) -> Path:  # fmt: skip
    """Write frames.csv, devices.csv, stats.csv, energy.csv (`suite.runtime.energy.energy_table`, the first
    repeat's), summary.json (with provenance, and what else the host was doing before the run and
    after it: `metrics.host_state`), plan.json and trace.json (every run on one clock, each party of
    each run a process of its own)."""
    first = runs.repeats[0].plan
    shifted, devices = [], []
    for repeat, label, run in runs.each():
        prefix = "" if (repeat, label) == (1, "plan") else f"{label}{'' if repeat == 1 else f' {repeat}'}: "
        shifted += [replace(e.shifted(first.start_s), device=prefix + e.device) for e in run.events]
        devices += [prefix + d for d in ["coordinator", *run.workers]]
    inventory = options.inventory
    hosts = None if inventory is None else {h.name: h.address for h in inventory.hosts}
    where = None if inventory is None else str(inventory.path)
    meta = run_metadata(fleet=fleet.name, fleet_source=fleet.source, plan_hash=first.plan.digest,
                        backend=options.backend, threads_per_worker=options.threads,
                        emulate=options.emulate and inventory is None, timeout_s=options.timeout_s,
                        model=options.model, seed=options.seed,
                        workers={d: asdict(w) for d, w in first.workers.items()}, inventory=where,
                        hosts=hosts,
                        host_state={"before": host_before, "after": host_state()})  # fmt: skip
    documents = {"summary": {**summary_json(summary), "metadata": meta},
                 "plan": first.plan.to_dict(),
                 "trace": chrome_trace(shifted, devices)}  # fmt: skip
    folders = {"logs": options.log_dir} if options.log_dir is not None and options.log_dir.is_dir() else {}
    single = runs.repeats[0].single
    measured = {"plan": first} | ({"single": single} if single is not None and single is not first else {})
    energy = pd.DataFrame(energy_table(measured, fleet, summary.network.dilation),
                          columns=["run", "device", "profile", "busy_s", "window_s", "idle_w", "busy_w",
                                   "energy_per_frame_j"])  # fmt: skip
    tables = {"frames": frames_table(runs), "devices": devices_table(runs),
              "stats": statistics_table(summary), "energy": energy}  # fmt: skip
    return save_results(directory, tables, documents, folders)
