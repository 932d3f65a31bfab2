"""What a run is asked to do (`RunOptions`) and what the coordinator measured of it: each frame
(`FrameRecord`), each worker's report of itself (`WorkerReport`), one plan's run (`Measurement`),
and a run's repeats (`Repeat`, `Runs`). Plain data, read by the coordinator that fills it in, the
summary (`suite.runtime.outcome`), the saved tables (`suite.runtime.results`) and the energy
figures (`suite.runtime.energy`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

from suite.plan import Plan
from suite.runtime.metrics import Event

if TYPE_CHECKING:
    from suite.inventory import Inventory
    from suite.runtime.worker_processes import Workers


@dataclass
class RunOptions:
    model: str  # what the workers load: a zoo name, an ONNX path or module:factory
    input_size: tuple[int, int, int]
    seed: int = 0
    backend: str = "torch"
    frames: int = 20
    warmup: int = 2
    timeout_s: float = 30.0
    threads: int = 1  # per worker
    emulate: bool = True  # slow each worker to its device's speed with a cpu quota (root only)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    python: str = sys.executable  # the interpreter that runs the workers
    inventory: Inventory | None = None  # run on these devices over SSH instead of local processes
    # what starts the workers on the inventory's devices: `suite.orchestrate.remote.RemoteWorkers`,
    # passed in by the caller that has the inventory (the runtime does not import orchestration)
    remote_workers: Callable[[Inventory, Path], Workers] | None = None
    log_dir: Path | None = None  # where worker logs go (None: a scratch folder, removed after the run)
    repeats: int = 1  # runs of the plan, each followed by its single-device run (`run_repeats`)


@dataclass(frozen=True)
class WorkerReport:
    """What a worker reported of itself: when ready (`ready` fields), and after its last frame
    (`peak_rss_bytes`); `cpu_cores` is the quota the coordinator gave it (None: none)."""

    device: str
    rank: int
    pid: int
    nodes: int
    weights_bytes: int  # of the weights it keeps
    doctor_fingerprint: str | None  # its `suite doctor` verdict on the backend
    startup_s: float  # from its start until ready, of which building executables took `compile_s`
    compile_s: float
    executables: int
    rss_bytes: int  # resident memory when ready
    cpu_cores: float | None = None
    peak_rss_bytes: int | None = None


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Measurement:
    """What one plan did on the workers, on the coordinator's clock."""

    plan: Plan
    frames: tuple[FrameRecord, ...]
    events: tuple[Event, ...]
    workers: Mapping[str, WorkerReport]  # by device, in rank order
    window: int  # frames in flight
    start_s: float
    end_s: float
    error: str | None = None
    mismatch: str | None = None
    refused_peers: tuple[str, ...] = ()  # the first addresses that failed the handshake
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
    def periods_s(self) -> list[float]:
        """Seconds between consecutive completions of measured frames in the steady state, from the
        last warm-up frame's (from the first measured one's without warm-up; a lone frame: its
        latency). Their mean is the frame period, 1 / `throughput_fps`."""
        ends = sorted(f.end_s for f in self.measured)
        warm = [f.end_s for f in self.frames if f.warmup]
        if warm and ends:
            ends = [max(warm), *ends]
        elif len(ends) < 2:
            return [f.latency_s for f in self.measured]
        return [b - a for a, b in zip(ends, ends[1:])]

    @property
    def throughput_fps(self) -> float | None:
        """Steady state: measured frames per second of completions (`periods_s`)."""
        periods = self.periods_s
        return len(periods) / sum(periods) if periods else None


@dataclass(frozen=True)
class Repeat:
    """One repeat of a run: the plan's run, then its single-device run (the plan's own run for a
    single-device plan; None when not asked for, or when it failed to start)."""

    number: int  # 1-based
    plan: Measurement
    single: Measurement | None = None

    @property
    def measurements(self) -> list[Measurement]:
        separate = self.single is not None and self.single is not self.plan
        return [self.plan, self.single] if separate else [self.plan]

    @property
    def complete(self) -> bool:
        return all(m.complete for m in self.measurements)


@dataclass(frozen=True)
class Runs:
    """A run's repeats, interleaved (plan, single, plan, single, ...) so that drifting load on the
    host hits both alike. They stop at the first that fails; `failure` names one that failed to
    start (one that started says why in its measurement's error)."""

    repeats: tuple[Repeat, ...]
    failure: str | None = None

    def each(self) -> list[tuple[int, str, Measurement]]:
        """(repeat, "plan" or "single", measurement) for every run, in the order they ran."""
        return [(r.number, kind, m) for r in self.repeats
                for kind, m in zip(("plan", "single"), r.measurements)]  # fmt: skip
