"""Tables that put the suite's figures beside the papers' (tidy pandas frames, metadata attached)."""

from __future__ import annotations

import pandas as pd

from suite.backends import make_backend
from suite.fleet import load_fleet
from suite.models.load import load_model
from suite.schemes import SCHEMES, make_plan

# Reported speedups over one device, as DESIGN.md quotes them (throughput for PICO, latency else).
PAPER_RANGES = {
    "pico": "1.8-6.8x throughput, 2-8 Pi 4B (Yang et al., TMC 2023)",
    "halp": "1.7-2.0x VGG-16, GTX 1080 Ti + Xavier; 1.7x on 3 Pi 4 (Li et al., ICC 2022)",
    "modnn": "2.17-4.28x, 2-4 phones over WiFi (Mao et al., DATE 2017)",
    "deepthings": "1.7-3.5x YOLOv2, 2-6 Pi 3 (Zhao et al., TCAD 2018)",
    "single": "1x by definition",
}


def predicted_speedups(models: list[str], fleets: list[str]) -> pd.DataFrame:
    """One row per model x fleet x scheme: predicted latency, throughput and speedups over single."""
    rows = []
    for model in models:
        graph = make_backend("torch").prepare(load_model(model)).graph
        for name in fleets:
            fleet = load_fleet(name)
            plans = {s: make_plan(s, graph, fleet) for s in SCHEMES}
            base = plans["single"].predicted
            for scheme, plan in plans.items():
                p = plan.predicted
                rows.append({"model": model, "fleet": name, "devices": len(fleet.devices), "scheme": scheme,
                             "latency_s": p.latency_s, "throughput_fps": p.throughput_fps,
                             "throughput_speedup": p.throughput_fps / base.throughput_fps,
                             "latency_speedup": base.latency_s / p.latency_s, "redundancy": p.redundancy,
                             "planning_time_s": plan.planning_time_s, "plan": plan.digest})  # fmt: skip
    return pd.DataFrame(rows)
