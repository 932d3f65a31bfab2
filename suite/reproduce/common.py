"""What every figure shares: the outcome it hands to the report, cached graphs and plans, and the
quantities derived from a plan (simulated period, utilisation, bytes, memory).

Graphs are traced on the meta device (shapes only) and plans are cached per (model, scheme, fleet,
options), so a plan that two figures need (Fig. 8's 8-device plans feed Fig. 10b) is made once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

import pandas as pd

from suite.fleet import Fleet, load_fleet
from suite.graph import Graph, from_model
from suite.models import ZOO
from suite.models.load import load_model
from suite.plan import Plan, tensor_bytes, work_regions
from suite.regions import Box, hull_of
from suite.schemes import make_plan
from suite.simulate import SimWorkload, simulate

# PICO's names for the schemes it compares, and ours (suite/reproduce/pico.py says why LW gathers).
SCHEME_OF = {"lw": "modnn-gather", "efl": "efl", "ofl": "ofl", "pico": "pico"}
CLOCKS_MHZ = (1000, 750, 500)
SIM_FRAMES = 40  # frames streamed through a plan to read its simulated period
OFF = 0.25  # a point whose ours/published ratio is further than this from 1 gets an explanation


@dataclass(frozen=True)
class Comparison:
    """One published quantity beside ours: the report's per-point table and its ratio column."""

    quantity: str  # published_<quantity>, predicted_<quantity>, simulated_<quantity>
    ours: str = "predicted"  # the column the ratio uses
    group: str = "scheme"  # the column whose value picks the explanation (else the quantity does)


@dataclass(frozen=True)
class Outcome:
    """A reproduced figure: its tidy table (the CSV), what the report says about it, and any part
    that could not be reproduced here."""

    name: str
    title: str
    source: str  # the paper and its figure
    setup: str  # fleets, schemes and choices, one paragraph
    table: pd.DataFrame
    keys: tuple[str, ...]  # the columns that name a point
    comparisons: tuple[Comparison, ...]
    headline: str
    findings: tuple[str, ...] = ()
    causes: Mapping[str, str] = field(default_factory=dict)  # group value -> why ours differs there
    missing: str = ""  # what is left out (e.g. a model not in the zoo yet)


class Skipped(Exception):
    """The figure cannot be reproduced here (a model it needs is not in the zoo)."""


def require_models(*models: str) -> None:
    absent = [m for m in models if m not in ZOO]
    if absent:
        raise Skipped(f"model {', '.join(absent)} is not in the zoo yet (suite/models); this figure is "
                      "reproduced once it is")  # fmt: skip


@cache
def graph(model: str) -> Graph:
    return from_model(load_model(model, weights=False))


@cache
def fleet(name: str) -> Fleet:
    return load_fleet(name)


@cache
def plan(model: str, scheme: str, fleet_name: str, **options) -> Plan:
    return make_plan(scheme, graph(model), fleet(fleet_name), **options)


def simulated(p: Plan, **workload) -> pd.Series:
    """The simulator's throughput (fps) and median latency (s) for a stream of frames."""
    result = simulate(p, fleet(p.fleet), SimWorkload(**{"frames": SIM_FRAMES, **workload}))
    return pd.Series({"throughput_fps": result.throughput_fps, "latency_s": result.latency_median_s})


def device_compute(p: Plan) -> dict[str, float]:
    """Seconds each device of the fleet computes per frame (0 for a device the plan leaves idle)."""
    busy = {d.name: 0.0 for d in fleet(p.fleet).devices}
    for cost in p.predicted.stages:
        for device, seconds in cost.device_compute_s.items():
            busy[device] += seconds
    return busy


def utilisation(p: Plan) -> float:
    """Mean over the fleet's devices of the share of the period each one computes."""
    busy = device_compute(p)
    return sum(busy.values()) / len(busy) / p.predicted.period_s


def bytes_per_frame(p: Plan) -> int:
    return sum(t.bytes for s in p.stages for t in s.transfers)


def footprint(p: Plan, g: Graph) -> dict[str, int]:
    """Bytes each device holds when, as in Darknet, every layer's output has its own buffer.

    A device keeps the weights of every node it computes and, per stage, the buffers of its largest
    piece of work there (its input regions and every node's output region, with the bands a tile
    reuses); tiles of one stage, and of the stage continuing it, run one after another and reuse the
    buffers. A whole-model run on one device holds every map.
    """
    weights: dict[str, set[str]] = {}
    buffers: dict[str, int] = {}
    largest: dict[str, int] = {}
    for k, stage in enumerate(p.stages):
        if not stage.continues:
            largest = {}
        for w in stage.work:
            weights.setdefault(w.device, set()).update(stage.nodes)
            size = sum(tensor_bytes(g, t, r) for t, r in w.inputs.items())
            if all(isinstance(r, Box) for r in w.outputs.values()):
                regions = work_regions(g, stage.nodes, w.outputs, w.reused)
                size += sum(tensor_bytes(g, n, hull_of([r.out, *w.reused.get(n, [])], g[n]))
                            for n, r in regions.items())  # fmt: skip
            else:
                size += sum(g[n].act_bytes for n in stage.nodes)
            largest[w.device] = max(largest.get(w.device, 0), size)
        if k + 1 == len(p.stages) or not p.stages[k + 1].continues:
            for device, size in largest.items():
                buffers[device] = buffers.get(device, 0) + size
    return {d: buffers[d] + sum(g[n].param_bytes for n in names) for d, names in weights.items()}


def bottleneck(p: Plan) -> str:
    """Where a plan's period goes, in words: the slowest pipeline stage's compute and transfers."""
    groups: dict[int, list] = {}
    for stage, cost in zip(p.stages, p.predicted.stages):
        entry = groups.setdefault(stage.group, [0.0, 0.0, [], set()])
        entry[0] += cost.compute_s
        entry[1] += cost.comm_s
        entry[2] += stage.nodes
        entry[3] |= set(stage.devices)
    group, (compute, comm, nodes, devices) = max(groups.items(), key=lambda kv: kv[1][0] + kv[1][1])
    where = f"pipeline stage {group + 1} of {len(groups)}, " if len(groups) > 1 else ""
    return (f"{where}{len(nodes)} nodes ({nodes[0]}..{nodes[-1]}) on {len(devices)} device(s): "
            f"{compute:.2f} s of compute and {comm:.2f} s of transfers")
