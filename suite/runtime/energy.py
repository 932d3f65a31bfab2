"""Energy per frame: what a run costs in joules, from its devices' busy and idle seconds and their
profiles' power, and, where the host has Intel RAPL, the package energy this host measured.

A device's energy over a window is `busy_s x busy_w + (window_s - busy_s) x idle_w` (its `Power`,
published typical figures), busy being the union of its compute intervals: sending and receiving
are priced as idle, and devices the plan leaves out are taken to be off. Per frame it is the
device's mean power over the timed frames times the run's seconds per frame (1 / throughput, in
real time: a dilated lab's seconds count `dilation` times). The cost model's side is the same sum
with its own busy seconds per frame (the stages' compute) over its period.

RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`, one counter per CPU package, readable by root)
measures the whole host: every process on it, not only the run's. It is sampled while the workers
run and read over the same timed window.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from suite.fleet import Fleet, Power

if TYPE_CHECKING:
    from suite.plan import Predicted
    from suite.runtime.measurement import Measurement

POWERCAP = Path("/sys/class/powercap")
RAPL_PERIOD_S = 0.05  # a counter sample every 50 ms: well inside the shortest wrap of a 32-bit counter


def joules(power: Power, busy_s: float, window_s: float) -> float:
    """A device's energy over `window_s` seconds of which it computed `busy_s` (at most the window)."""
    busy = min(max(busy_s, 0.0), window_s)
    return busy * power.busy_w + (window_s - busy) * power.idle_w


def per_frame(busy_s: Mapping[str, float], window_s: float, seconds_per_frame: float,
              fleet: Fleet) -> dict[str, float | None]:  # fmt: skip
    """Joules per frame of each device that was busy `busy_s[device]` over `window_s`, at
    `seconds_per_frame`: its mean power times the seconds a frame takes. None where its profile has
    no power figures."""
    out: dict[str, float | None] = {}
    for device, busy in busy_s.items():
        power = fleet.device(device).profile.power
        out[device] = None if power is None else joules(power, busy, window_s) / window_s * seconds_per_frame
    return out


def total(devices: Mapping[str, float | None]) -> float | None:
    """The devices' sum, or None when any of them has no figure (a partial sum would flatter a plan)."""
    values = list(devices.values())
    return None if not values or any(v is None for v in values) else sum(values)


def timed_window(run: Measurement) -> tuple[float, float] | None:
    """The timed frames' span on the run's clock: from the last warm-up frame's end (the first timed
    frame's start without warm-up) to the last timed frame's end, as the throughput counts it."""
    measured = run.measured
    if not measured:
        return None
    warm = [f.end_s for f in run.frames if f.warmup]
    start = max(warm) if warm else min(f.start_s for f in measured)
    end = max(f.end_s for f in measured)
    return (start, end) if end > start else None


def busy_seconds(run: Measurement, window: tuple[float, float]) -> dict[str, float]:
    """Each worker's compute seconds inside `window` (the union of its compute intervals)."""
    from suite.runtime.metrics import device_table

    table = device_table(run.events, ["coordinator", *run.workers], *window)
    return {row.device: float(row.compute_s) for row in table.itertuples() if row.device != "coordinator"}


@dataclass(frozen=True)
class RunEnergy:
    """A run's energy per frame by device (None: no power figures for its profile)."""

    devices: dict[str, float | None]
    busy_s: dict[str, float]
    window_s: float

    @property
    def per_frame_j(self) -> float | None:
        return total(self.devices)


def run_energy(run: Measurement, fleet: Fleet, dilation: float = 1.0) -> RunEnergy | None:
    """Energy per frame of a measured run in real time (None: no timed window or throughput)."""
    window = timed_window(run)
    if window is None or not run.throughput_fps:
        return None
    busy = busy_seconds(run, window)
    window_s = window[1] - window[0]
    return RunEnergy(per_frame(busy, window_s, dilation / run.throughput_fps, fleet), busy, window_s)


def predicted_energy(predicted: Predicted, fleet: Fleet) -> dict[str, float | None]:
    """The cost model's joules per frame by device: its compute seconds per frame (summed over the
    stages) busy, the rest of the period idle."""
    busy: dict[str, float] = {}
    for stage in predicted.stages:
        for device, seconds in stage.device_compute_s.items():
            busy[device] = busy.get(device, 0.0) + seconds
    period = max(predicted.period_s, max(busy.values(), default=0.0))
    if period <= 0:
        return {device: None for device in busy}
    return per_frame(busy, period, period, fleet)


# ---- RAPL: this host's measured package energy -----------------------------------------------------


@dataclass(frozen=True)
class RaplDomain:
    """One package counter: its folder and the value at which it wraps to zero."""

    path: Path
    name: str
    max_uj: int


def rapl_domains(root: Path = POWERCAP) -> list[RaplDomain]:
    """This host's readable RAPL package counters (`intel-rapl:N`; their sub-domains are inside
    them); none where there is no RAPL or it is not readable (not root)."""
    domains = []
    for folder in sorted(root.glob("intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+", folder.name):
            continue
        try:
            (folder / "energy_uj").read_text()
            name = (folder / "name").read_text().strip()
            max_uj = int((folder / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        domains.append(RaplDomain(folder, name, max_uj))
    return domains


@dataclass
class RaplTrace:
    """Counter samples (time on `time.perf_counter`'s clock, microjoules per domain, unwrapped)."""

    domains: list[RaplDomain]
    times: list[float] = field(default_factory=list)
    microjoules: list[list[int]] = field(default_factory=list)

    def sample(self, now: float | None = None) -> None:
        """Read every counter once; a counter below its last value has wrapped."""
        raw = [int((d.path / "energy_uj").read_text()) for d in self.domains]
        if self.microjoules:
            last = self.microjoules[-1]
            raw = [r + (d.max_uj + 1) * _wraps(prev, r, d.max_uj)
                   for r, prev, d in zip(raw, last, self.domains)]  # fmt: skip
        self.times.append(time.perf_counter() if now is None else now)
        self.microjoules.append(raw)

    def joules_between(self, start: float, end: float) -> float | None:
        """The packages' energy over [start, end], interpolated between samples; None unless samples
        cover the window."""
        if len(self.times) < 2 or start < self.times[0] or end > self.times[-1] or end <= start:
            return None
        totals = [sum(row) for row in self.microjoules]
        return (_at(self.times, totals, end) - _at(self.times, totals, start)) / 1e6


def _wraps(previous_unwrapped: int, raw: int, max_uj: int) -> int:
    """How many times a counter has wrapped, from the last unwrapped value and a new raw reading."""
    turns, last_raw = divmod(previous_unwrapped, max_uj + 1)
    return turns + (1 if raw < last_raw else 0)


def _at(times: list[float], values: list[int], t: float) -> float:
    """Linear interpolation of a sampled counter at `t` (inside the samples)."""
    k = next(i for i in range(1, len(times)) if times[i] >= t)
    t0, t1 = times[k - 1], times[k]
    share = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
    return values[k - 1] + share * (values[k] - values[k - 1])


class RaplSampler:
    """Samples this host's RAPL counters in a thread while the `with` block runs; `trace` is None
    where the host has no readable RAPL, or the sampler is not `enabled`."""

    def __init__(self, root: Path = POWERCAP, period_s: float = RAPL_PERIOD_S, enabled: bool = True):
        domains = rapl_domains(root) if enabled else []
        self.trace = RaplTrace(domains) if domains else None
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rapl-sampler", daemon=True)

    def __enter__(self) -> RaplSampler:
        if self.trace is not None:
            self.trace.sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.trace is not None:
            self._stop.set()
            self._thread.join()
            self.trace.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            self.trace.sample()


def measured_energy(trace: RaplTrace | None, run: Measurement) -> float | None:
    """This host's package joules per timed frame of `run` (None: no RAPL, or no timed window)."""
    window = None if trace is None else timed_window(run)
    if window is None or not run.throughput_fps:
        return None
    spent = trace.joules_between(*window)
    return None if spent is None else spent / (window[1] - window[0]) / run.throughput_fps


# ---- the summary's `energy` -------------------------------------------------------------------------


def energy_summary(run: Measurement, baseline: Measurement | None, fleet: Fleet, dilation: float = 1.0,
                   rapl: RaplTrace | None = None) -> dict:  # fmt: skip
    """The summary's `energy` key: joules per frame of the plan's devices (`per_frame_j`, by device in
    `devices`), of the single-device run `baseline` (None: none; `run` itself for a single-device
    plan), their ratio, the cost model's figures and their error, and this host's RAPL measurement
    where it has one."""
    plan = run_energy(run, fleet, dilation)
    alone = plan if baseline is run else None if baseline is None else run_energy(baseline, fleet, dilation)
    mine = plan.per_frame_j if plan else None
    theirs = alone.per_frame_j if alone else None
    predicted = None if run.plan.predicted is None else total(predicted_energy(run.plan.predicted, fleet))
    single_predicted = None
    if baseline is not None and baseline.plan.predicted is not None:
        single_predicted = total(predicted_energy(baseline.plan.predicted, fleet))
    local = rapl is not None and dilation == 1.0  # RAPL measures this host, not a dilated lab's devices
    host = measured_energy(rapl, run) if local else None
    host_single = measured_energy(rapl, baseline) if local and baseline is not None else None
    missing = sorted({fleet.device(d).profile.name for d in (plan.devices if plan else {})
                      if fleet.device(d).profile.power is None})  # fmt: skip
    return {
        "per_frame_j": mine,
        "devices": plan.devices if plan else {},
        "single_per_frame_j": theirs,
        "ratio_vs_single": _ratio(mine, theirs),
        "predicted_per_frame_j": predicted,
        "predicted_single_per_frame_j": single_predicted,
        "error": None if mine is None or not predicted else mine / predicted - 1,
        "source": "profiles' published power figures (idle and busy W), not measured here",
        "no_power": missing,  # profiles without power figures: no energy for their devices
        "rapl": None if not local else {
            "per_frame_j": host, "single_per_frame_j": host_single,
            "ratio_vs_single": _ratio(host, host_single),
            "domains": [d.name for d in rapl.domains],
            "source": "measured: this host's RAPL package energy (every process on it, not only the run's)"},
    }  # fmt: skip


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def energy_table(runs: Mapping[str, Measurement], fleet: Fleet, dilation: float = 1.0) -> list[dict]:
    """energy.csv's rows: one per device per run (`plan`, `single`): busy and window seconds, its
    power figures and its joules per frame."""
    rows = []
    for label, run in runs.items():
        energy = run_energy(run, fleet, dilation)
        if energy is None:
            continue
        for device, j in energy.devices.items():
            power = fleet.device(device).profile.power
            rows.append({"run": label, "device": device, "profile": fleet.device(device).profile.name,
                         "busy_s": energy.busy_s[device], "window_s": energy.window_s,
                         "idle_w": power and power.idle_w, "busy_w": power and power.busy_w,
                         "energy_per_frame_j": j})  # fmt: skip
    return rows
