"""What a run came to, as typed values: the network it ran over, and the
`RunSummary` that `suite run` prints, saves as summary.json and hands to tracking.

A summary is built once (`summarize`: the simulator runs there, once) from the run's repeats, and
read by fields; `summary_json` is its one JSON form (the keys `suite run --json` has always printed,
plus `repeats` and `statistics`), `RunSummary.from_json` reads that form back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from functools import cache
from typing import TYPE_CHECKING, get_args, get_type_hints

from suite.runtime import stats

if TYPE_CHECKING:
    from suite.fleet import Fleet
    from suite.inventory import Inventory
    from suite.runtime.energy import RaplTrace
    from suite.runtime.measurement import Measurement, Repeat, RunOptions, Runs


@dataclass(frozen=True)
class Network:
    """How the run's network stands to the plan's link model."""

    kind: str  # "loopback", "fleet" (an inventory's own network) or "lab" (emulated)
    description: str
    dilation: float = 1.0  # a dilated lab runs this many times faster than the fleet it emulates
    inventory: str | None = None
    lab: str | None = None
    rate_mbps: float | None = None
    shared: bool | None = None
    shaping: str | None = None
    latency: str | None = None
    cpu_cores: Mapping[str, float] | None = None

    @property
    def shaped(self) -> bool:
        return self.kind == "lab"


def network(inventory: Inventory | None) -> Network:
    """The network of a run on `inventory`'s devices (None: local workers over loopback)."""
    if inventory is None:
        return Network("loopback", "loopback, not shaped: the plan's link model is not emulated")
    if inventory.lab is None:
        return Network("fleet", f"the devices of inventory '{inventory.name}' over their own network",
                       inventory=inventory.name)  # fmt: skip
    lab = inventory.lab
    return Network("lab", f"emulated lab '{lab.name}', {lab.shaping}; {lab.latency}; time dilated "
                          f"{lab.dilation:g}x (real-time figures are measured times x {lab.dilation:g})",
                   lab.dilation, inventory.name, lab.name, lab.rate_mbps, lab.shared, lab.shaping,
                   lab.latency, dict(lab.cpu_cores))  # fmt: skip


@dataclass(frozen=True)
class Figures:
    latency_s: float | None
    throughput_fps: float | None


@dataclass(frozen=True)
class SingleDevice:
    device: str
    latency_s: float | None
    throughput_fps: float | None


@dataclass(frozen=True)
class Predicted:
    """The cost model's figures, and how far the measured (real-time) ones are from them."""

    latency_s: float
    throughput_fps: float
    latency_error: float | None
    throughput_error: float | None


@dataclass(frozen=True)
class Simulated:
    throughput_fps: float
    throughput_error: float | None


@dataclass(frozen=True)
class RepeatFigures:
    """One repeat of the plan and of its single-device run."""

    repeat: int  # 1-based
    complete: bool
    error: str | None
    latency_s: float | None
    throughput_fps: float | None
    single_latency_s: float | None
    single_throughput_fps: float | None


@dataclass(frozen=True)
class Statistics:
    """Over the complete repeats' measured frames: latency percentiles, and a bootstrap interval
    on the throughput and on each speedup (`suite.runtime.stats`)."""

    repeats: int  # complete repeats pooled
    latency_s: stats.Spread
    throughput_fps: stats.Estimate
    single_latency_s: stats.Spread | None
    single_throughput_fps: stats.Estimate | None
    speedup_vs_single: stats.Estimate | None
    latency_speedup_vs_single: stats.Estimate | None
    inconclusive: Mapping[str, str]  # by speedup: why its interval is too wide to conclude from


@dataclass(frozen=True)
class RunSummary:
    """A run's outcome: the plan's figures pooled over its complete repeats, the single device's,
    their ratios, exactness, the cost model's and the simulator's view, and the network."""

    scheme: str
    model: str
    input_shape: tuple[int, ...]
    fleet: str
    devices: int
    backend: str
    frames: int  # measured frames per repeat
    warmup: int
    in_flight: int
    latency_s: float | None  # median
    throughput_fps: float | None  # steady state
    speedup_vs_single: float | None
    latency_speedup_vs_single: float | None
    single: SingleDevice | None
    bit_exact: bool
    complete: bool
    error: str | None
    real_time: Figures  # the measured figures as the real fleet would show them (x dilation)
    predicted: Predicted | None
    simulated: Simulated | None
    tiled_share: float | None  # of the model's MACs
    bytes_moved: int  # by the plan's first repeat
    plan_hash: str
    network: Network
    refused_peers: tuple[str, ...]
    refused_count: int
    repeats: tuple[RepeatFigures, ...] = ()
    statistics: Statistics | None = None
    energy: dict | None = None  # suite.runtime.energy.energy_summary's figures for the first repeat, as JSON

    @classmethod
    def from_json(cls, document: Mapping) -> RunSummary:
        """A summary from `summary_json`'s form (summary.json, `suite run --json`); other keys are ignored.
        A figure that may be None and that an older suite did not write reads as None (or its
        default); any other key missing is a KeyError naming it."""
        nested = {"single": SingleDevice, "real_time": Figures, "predicted": Predicted,
                  "simulated": Simulated, "network": Network}  # fmt: skip
        values = {}
        for f in fields(cls):
            if f.name in document:
                values[f.name] = document[f.name]
            elif f.default is MISSING and f.default_factory is MISSING:
                if f.name not in _may_be_none(cls):
                    raise KeyError(f.name)
                values[f.name] = None
        for name, kind in nested.items():
            if values.get(name) is not None:
                values[name] = _typed(kind, values[name])
        values["input_shape"] = tuple(values["input_shape"])
        values["refused_peers"] = tuple(values["refused_peers"])
        values["repeats"] = tuple(RepeatFigures(**r) for r in values.get("repeats") or ())
        if values.get("statistics") is not None:
            values["statistics"] = _statistics(values["statistics"])
        return cls(**values)


def summary_json(summary: RunSummary) -> dict:
    """The summary as JSON values, `network` with its `shaped` flag."""
    return asdict(summary) | {"network": asdict(summary.network) | {"shaped": summary.network.shaped}}


@cache
def _may_be_none(kind: type) -> frozenset[str]:
    """The fields of a data class whose type admits None."""
    return frozenset(name for name, hint in get_type_hints(kind).items() if type(None) in get_args(hint))


def _typed(kind: type, values: Mapping):
    return kind(**{f.name: values[f.name] for f in fields(kind) if f.name in values})


def _statistics(values: Mapping) -> Statistics:
    def typed(kind: type, value: Mapping | None):
        return None if value is None else _typed(kind, value)

    return Statistics(values["repeats"], typed(stats.Spread, values["latency_s"]),
                      typed(stats.Estimate, values["throughput_fps"]),
                      typed(stats.Spread, values["single_latency_s"]),
                      typed(stats.Estimate, values["single_throughput_fps"]),
                      typed(stats.Estimate, values["speedup_vs_single"]),
                      typed(stats.Estimate, values["latency_speedup_vs_single"]),
                      dict(values["inconclusive"]))  # fmt: skip


def summarize(runs: Runs, fleet: Fleet, options: RunOptions, rapl: RaplTrace | None = None) -> RunSummary:
    """The summary of a run's repeats. The plan's figures pool the complete repeats' frames; the
    speedups pool the complete repeats that have a single-device run, each against the plan's run
    of the same repeat; every interval is seeded with the run's `--seed`; energy is the first
    repeat's (`rapl`: this host's energy counters sampled during the runs)."""
    from suite.runtime.energy import energy_summary
    from suite.simulate import SimWorkload, simulate

    first = runs.repeats[0].plan
    plan, predicted, net = first.plan, first.plan.predicted, network(options.inventory)
    done = [r for r in runs.repeats if r.complete] or [runs.repeats[0]]
    paired = [r for r in done if r.single is not None and r.single is not r.plan]
    figures = _statistics_of([r.plan for r in done], [r.plan for r in paired], [r.single for r in paired],
                             options.seed)  # fmt: skip
    latency = throughput = speedup = latency_speedup = single = None
    if figures is not None:
        latency, throughput = figures.latency_s.p50, figures.throughput_fps.value
        if figures.speedup_vs_single is not None:
            speedup = figures.speedup_vs_single.value
            latency_speedup = figures.latency_speedup_vs_single.value
            single = SingleDevice(paired[0].single.plan.hub, figures.single_latency_s.p50,
                                  figures.single_throughput_fps.value)  # fmt: skip
        elif runs.repeats[0].single is first and first.complete:  # a single-device plan is its own baseline
            speedup = latency_speedup = 1.0
    real = Figures(latency and latency * net.dilation, throughput and throughput / net.dilation)
    measured = [m for r in runs.repeats for m in r.measurements]
    errors = [(r.number, m.error) for r in runs.repeats for m in r.measurements if m.error]
    several = options.repeats > 1
    error = next((f"repeat {k} of {options.repeats}: {e}" if several else e for k, e in errors), runs.failure)
    simulated = None
    if predicted is not None:
        result = simulate(plan, fleet, SimWorkload(frames=max(min(options.frames, 60), 2)))
        simulated = Simulated(result.throughput_fps, _error(real.throughput_fps, result.throughput_fps))
    return RunSummary(
        scheme=plan.scheme, model=plan.model, input_shape=tuple(plan.input_shape), fleet=fleet.name,
        devices=len(first.workers), backend=options.backend, frames=len(first.measured),
        warmup=options.warmup, in_flight=first.window, latency_s=latency, throughput_fps=throughput,
        speedup_vs_single=speedup, latency_speedup_vs_single=latency_speedup, single=single,
        bit_exact=first.bit_exact and all(m.bit_exact for m in measured if m.frames),
        complete=runs.failure is None and all(m.complete for m in measured), error=error, real_time=real,
        predicted=None if predicted is None else Predicted(
            predicted.latency_s, predicted.throughput_fps, _error(real.latency_s, predicted.latency_s),
            _error(real.throughput_fps, predicted.throughput_fps)),
        simulated=simulated, tiled_share=None if predicted is None else predicted.tiled_share,
        bytes_moved=sum(e.bytes for e in first.events if e.kind == "send"), plan_hash=plan.digest,
        network=net,
        refused_peers=tuple(dict.fromkeys(p for r in runs.repeats for p in r.plan.refused_peers)),
        refused_count=sum(r.plan.refused_count for r in runs.repeats),
        repeats=tuple(_repeat_figures(r) for r in runs.repeats), statistics=figures,
        energy=energy_summary(first, runs.repeats[0].single, fleet, net.dilation, rapl))  # fmt: skip


def _statistics_of(plans: list[Measurement], paired: list[Measurement], singles: list[Measurement],
                   seed: int) -> Statistics | None:  # fmt: skip
    """Latency percentiles and throughput of `plans`, and the speedups of `paired` (plan runs) over
    `singles` (their repeats' single-device runs); None when no frame was measured."""
    latencies = [[f.latency_s for f in m.measured] for m in plans if m.measured]
    if not latencies:
        return None
    periods = [m.periods_s for m in plans if m.measured]
    throughput = stats.reciprocal(stats.interval(periods, stats.MEAN, seed))
    single_latency = single_throughput = speedup = latency_speedup = None
    if singles and all(m.measured for m in [*paired, *singles]):
        single_periods, plan_periods = [m.periods_s for m in singles], [m.periods_s for m in paired]
        single_latency = stats.spread([f.latency_s for m in singles for f in m.measured])
        single_throughput = stats.reciprocal(stats.interval(single_periods, stats.MEAN, seed))
        speedup = stats.ratio_interval(single_periods, plan_periods, stats.MEAN, seed)
        latency_speedup = stats.ratio_interval([[f.latency_s for f in m.measured] for m in singles],
                                               [[f.latency_s for f in m.measured] for m in paired],
                                               stats.MEDIAN, seed)  # fmt: skip
    doubts = (
        {}
        if speedup is None
        else {
            "speedup_vs_single": stats.inconclusive(speedup, "throughput speedup"),
            "latency_speedup_vs_single": stats.inconclusive(latency_speedup, "latency speedup"),
        }
    )
    return Statistics(len(latencies), stats.spread([v for values in latencies for v in values]), throughput,
                      single_latency, single_throughput, speedup, latency_speedup,
                      {metric: why for metric, why in doubts.items() if why is not None})  # fmt: skip


def _repeat_figures(repeat: Repeat) -> RepeatFigures:
    single = repeat.single if repeat.single is not repeat.plan else None
    error = next((m.error for m in repeat.measurements if m.error), None)
    return RepeatFigures(repeat.number, repeat.complete, error,
                         repeat.plan.latency_s, repeat.plan.throughput_fps,
                         None if single is None else single.latency_s,
                         None if single is None else single.throughput_fps)  # fmt: skip


def _error(measured: float | None, predicted: float) -> float | None:
    """Measured over predicted, minus one: +0.25 means 25 % more than the cost model said."""
    return None if measured is None or not predicted else measured / predicted - 1
