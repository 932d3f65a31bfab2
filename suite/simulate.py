"""Discrete-event simulation of a stream of frames through a plan (simpy).

What the analytical cost model leaves out, the simulator plays out: each device is a resource that
computes one thing at a time, the link is one shared medium (WiFi: every transfer queues for it)
or one resource per device and direction (switched), frames arrive at a fixed rate, as a Poisson
process, or as fast as the pipeline admits them, and the channel may change per frame. A device
starts its part of a stage as soon as its own inputs have arrived; the stage ends when every part
is back at the hub. Compute times come from the plan's prediction (the same device profiles).

Time-variant channel (HALP's reliability experiment): per frame, the link bandwidth is scaled by
`log2(1 + snr * g) / log2(1 + snr)` with Rayleigh fading power gain `g ~ Exp(1)`, i.e. Shannon
capacity relative to the mean SNR; the share of frames that meet a deadline is reported.
`rayleigh_trace` draws the same fading over time instead (a new draw every coherence time), for
the emulated lab's links.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from dataclasses import dataclass, replace

import simpy

from suite.arguments import MAX_SIMULATED_FRAMES
from suite.errors import UserError
from suite.fleet import Fleet, Link
from suite.plan import Plan, Transfer


@dataclass(frozen=True)
class SimWorkload:
    """The frames a simulation feeds a plan: how they arrive, the channel they cross, their deadline."""

    frames: int = 50
    rate: float | None = None  # frames per second at fixed intervals
    poisson: float | None = None  # mean frames per second, Poisson arrivals
    tasks_per_batch: int = 1  # frames that arrive together
    channel: str = "fixed"  # or "rayleigh"
    snr_db: float = 20.0
    deadline_s: float | None = None
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.frames <= MAX_SIMULATED_FRAMES:
            raise UserError(f"--frames {self.frames} must be between 1 and {MAX_SIMULATED_FRAMES}")
        if self.rate is not None and self.poisson is not None:
            raise UserError("give --rate or --poisson, not both")
        for name, value in (("--rate", self.rate), ("--poisson", self.poisson)):
            if value is not None and value <= 0:
                raise UserError(f"{name} {value} must be positive (frames per second)")
        if self.tasks_per_batch < 1:
            raise UserError(
                f"--tasks {self.tasks_per_batch} must be at least 1 (frames that arrive together)"
            )
        if self.channel not in ("fixed", "rayleigh"):
            raise UserError(f"--channel '{self.channel}' is not one of fixed, rayleigh")


@dataclass
class SimResult:
    latencies_s: list[float]
    finish_s: list[float]
    throughput_fps: float
    latency_median_s: float
    latency_p95_s: float
    deadline_met: float | None
    medium_busy: float  # share of the run the shared medium carried data (0 on a switched link)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("latencies_s", "finish_s")}


def fading_scale(snr_db: float, rng: random.Random) -> float:
    """One Rayleigh draw: the capacity at a faded SNR (power gain `g ~ Exp(1)`) over the capacity at
    the mean SNR, so the link's rate is taken as the rate at the mean SNR."""
    snr = 10 ** (snr_db / 10)
    gain = rng.expovariate(1.0)
    return max(math.log2(1 + snr * gain) / math.log2(1 + snr), 1e-6)


def fading(link: Link, snr_db: float, rng: random.Random) -> Link:
    return replace(link, bandwidth_bps=link.bandwidth_bps * fading_scale(snr_db, rng))


def rayleigh_trace(rate_bps: float, coherence_s: float, duration_s: float, snr_db: float,
                   seed: int) -> tuple[tuple[float, float], ...]:  # fmt: skip
    """Block fading over time, the same draw as `fading`'s: (start time, rate) every `coherence_s`
    from 0 until `duration_s`, the rate held constant within a block and drawn anew for the next.
    `rate_bps` is the rate at the mean SNR; the lab's channel player (suite/orchestrate/channel.py)
    plays it on a lab's links."""
    if not coherence_s > 0 or not duration_s > 0 or math.isinf(coherence_s) or math.isinf(duration_s):
        raise UserError(f"a fading trace needs a positive coherence time and duration, not "
                        f"{coherence_s:g} s and {duration_s:g} s")  # fmt: skip
    rng = random.Random(seed)
    blocks = math.ceil(duration_s / coherence_s)
    return tuple((i * coherence_s, rate_bps * fading_scale(snr_db, rng)) for i in range(blocks))


def simulate(plan: Plan, fleet: Fleet, workload: SimWorkload) -> SimResult:
    workload.check()
    if plan.predicted is None:
        raise UserError("the plan has no prediction; re-create it with `suite plan`")
    env = simpy.Environment()
    rng = random.Random(workload.seed)
    devices = {name: simpy.Resource(env) for name in plan.devices}
    medium = simpy.Resource(env) if fleet.link.shared else None
    ports: dict[tuple[str, str], simpy.Resource] = {}
    medium_time = [0.0]
    groups = len({s.group for s in plan.stages})
    slots = max(groups, workload.tasks_per_batch)  # frames in flight at once
    waiting: deque[list] = deque()  # [arrival time, frames] not yet admitted, oldest first
    idle: deque[simpy.Event] = deque()  # slots waiting for a frame to arrive
    latencies, finishes = [], []

    def send(t: Transfer, link: Link):
        seconds = link.transfer_time(t.bytes)
        if medium is not None:
            with medium.request() as turn:
                yield turn
                yield env.timeout(seconds)
                medium_time[0] += seconds
            return
        out = ports.setdefault((t.src, "out"), simpy.Resource(env))
        inn = ports.setdefault((t.dst, "in"), simpy.Resource(env))
        with out.request() as a, inn.request() as b:
            yield a & b
            yield env.timeout(seconds)

    def part(stage, device: str, seconds: float, link: Link):
        for t in stage.transfers:
            if t.dst == device and stage.brings(t):
                yield env.process(send(t, link))
        with devices[device].request() as turn:
            yield turn
            yield env.timeout(seconds)
        for t in stage.transfers:
            if t.src == device and not stage.brings(t):
                yield env.process(send(t, link))

    def frame(arrival: float):
        link = fading(fleet.link, workload.snr_db, rng) if workload.channel == "rayleigh" else fleet.link
        for stage, cost in zip(plan.stages, plan.predicted.stages):
            parts = [env.process(part(stage, d, cost.device_compute_s.get(d, 0.0), link))
                     for d in stage.devices]  # fmt: skip
            yield simpy.AllOf(env, parts)
        latencies.append(env.now - arrival)
        finishes.append(env.now)

    def slot():
        """Plays waiting frames one after another, oldest first: one process per frame in flight,
        so memory stays flat however long the stream (a process per frame grew without bound)."""
        while True:
            if not waiting:
                wake = env.event()
                idle.append(wake)
                yield wake
                continue
            oldest = waiting[0]
            oldest[1] -= 1
            if not oldest[1]:
                waiting.popleft()
            yield from frame(oldest[0])

    def arrivals():
        batch = workload.tasks_per_batch
        for first in range(0, workload.frames, batch):
            count = min(batch, workload.frames - first)
            waiting.append([env.now, count])
            for _ in range(min(count, len(idle))):
                idle.popleft().succeed()
            if count < batch:
                return
            yield env.timeout(1 / workload.rate if workload.rate else rng.expovariate(workload.poisson))

    if workload.rate or workload.poisson:
        env.process(arrivals())
    else:
        waiting.append([0.0, workload.frames])  # all at once, admitted as fast as the pipeline allows
    for _ in range(slots):
        env.process(slot())
    env.run()
    ordered = sorted(latencies)
    span = finishes[-1] - finishes[0]
    throughput = (len(finishes) - 1) / span if span > 0 else 1 / finishes[-1]
    met = None
    if workload.deadline_s is not None:
        met = sum(lat <= workload.deadline_s for lat in latencies) / len(latencies)
    return SimResult(
        latencies_s=latencies,
        finish_s=finishes,
        throughput_fps=throughput,
        latency_median_s=statistics.median(ordered),
        latency_p95_s=ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        deadline_met=met,
        medium_busy=medium_time[0] / env.now if env.now else 0.0,
    )
