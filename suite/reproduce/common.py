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
from suite.graph import POINTWISE, Graph, from_model
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
    fallback: str = ""  # the column a point uses where `ours` has no value (a scheme it does not cover)


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
    """Bytes each device holds, counted as DeepThings counts memory (TCAD 2018, Sec. III: a layer's
    execution needs its input and output; buffers are reused from layer to layer): the weights of
    every layer the device computes, plus its largest single layer's input and output regions.

    A layer is Darknet's: a pointwise op on one input (batch norm, activation) runs in place on its
    producer's output and adds no buffer. A tile's output buffer holds the bands it reuses too.
    """
    weights: dict[str, set[str]] = {}
    largest: dict[str, int] = {}
    for stage in p.stages:
        layers = [n for n in stage.nodes if not (g[n].op in POINTWISE and len(g[n].inputs) == 1)]
        for w in stage.work:
            weights.setdefault(w.device, set()).update(stage.nodes)
            if all(isinstance(r, Box) for r in w.outputs.values()):
                regions = work_regions(g, stage.nodes, w.outputs, w.reused)
                sizes = [tensor_bytes(g, n, hull_of([regions[n].out, *w.reused.get(n, [])], g[n]))
                         + sum(tensor_bytes(g, t, r) for t, r in zip(g[n].inputs, regions[n].reads))
                         for n in layers]  # fmt: skip
            else:
                sizes = [g[n].act_bytes + sum(g[t].act_bytes for t in g[n].inputs) for n in layers]
            largest[w.device] = max([largest.get(w.device, 0), *sizes])
    return {d: largest[d] + sum(g[n].param_bytes for n in names) for d, names in weights.items()}


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
    return (
        f"{where}{len(nodes)} nodes ({nodes[0]}..{nodes[-1]}) on {len(devices)} device(s): "
        f"{compute:.2f} s of compute and {comm:.2f} s of transfers"
    )
