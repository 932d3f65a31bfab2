"""The coordinator: starts a plan's workers, feeds them frames, gathers and checks every output.

It serves the rendezvous store (the run's configuration travels through it), starts one worker
process per device of the plan on this host, waits until each has built its share of the model,
joins the gloo group as rank 0, lines up the workers' clocks with its own, and streams frames:
as many in flight as the plan has pipeline groups (PICO) or tasks per batch (HALP). Every output
is compared bit for bit with the monolithic model's; a mismatch stops the run and a one-process
replay of that frame names the first node that differs.

A worker that dies or stops answering ends the run within the timeout with an error naming the
device and stage; every worker is killed on the way out and the frames done so far are kept,
marked incomplete.
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import torch
import torch.distributed as dist

from suite.backends import run_whole
from suite.datasets import Frame
from suite.errors import UserError
from suite.fleet import Fleet, load_profile
from suite.graph import Graph
from suite.plan import COORDINATOR, Plan
from suite.runtime import transport
from suite.runtime.emulate import CpuLimit, cores_for, cpu_quota_available
from suite.runtime.engine import Runner, TransferError, compile_program, parties, stage_name
from suite.runtime.metrics import Event
from suite.runtime.worker import STARTUP_TIMEOUT_S
from suite.verify import compare


class RunError(RuntimeError):
    """The run could not finish (a worker failed, or an output differs); the message says where."""


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
    workers: dict[str, dict]  # per device: pid, rank, weights kept, cpu cores allowed
    window: int  # frames in flight
    start_s: float
    end_s: float
    error: str | None = None
    mismatch: str | None = None

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


def window(plan: Plan) -> int:
    """Frames in flight: one per pipeline group, or the tasks HALP batches together."""
    groups = len({s.group for s in plan.stages})
    return max(groups, int(plan.options.get("tasks_per_batch", 1)))


def execute(plan: Plan, graph: Graph, fleet: Fleet, frames: list[Frame], references: dict[str, torch.Tensor],
            backend, options: RunOptions, progress: Callable[[int, int], None] | None = None
            ) -> Measurement:  # fmt: skip
    """Run `options.warmup + options.frames` frames of `plan` on local worker processes."""
    names = parties(plan)
    ranks = {name: rank for rank, name in enumerate(names)}
    total = options.warmup + options.frames
    store = _serve(options.host, options.port, len(names))
    config = {"plan": plan.to_dict(), "ranks": ranks, "backend": options.backend, "frames": total,
              "timeout_s": options.timeout_s, "threads": {d: options.threads for d in names[1:]},
              "model": {"spec": options.model, "input_size": list(options.input_size), "seed": options.seed}}
    store.set("config", json.dumps(config))
    workers = LocalWorkers(options.python, options.host, store, len(names))
    try:
        for name in names[1:]:
            workers.start(ranks[name], name)
        info = workers.await_ready(STARTUP_TIMEOUT_S)
        _emulate(workers, fleet, names[1:], ranks, info, options)
        transport.join(store, 0, len(names), options.timeout_s)
        offsets = {name: transport.clock_offset(ranks[name]) for name in names[1:]}
        measurement = _stream(plan, graph, frames, references, backend, options, ranks, workers, progress)
        measurement.workers = info
        if measurement.complete:
            measurement.events += _worker_events(store, names[1:], ranks, offsets, options.timeout_s)
            store.set("finished", "1")
            workers.finish(options.timeout_s)
            dist.destroy_process_group()
        return measurement
    finally:
        workers.stop()


def _serve(host: str, port: int, world: int):
    try:
        return transport.connect(host, port, 0, world, STARTUP_TIMEOUT_S, master=True)
    except (RuntimeError, OSError) as exc:  # DistNetworkError is a RuntimeError
        reason = "is in use" if "in use" in str(exc).lower() else f"cannot be opened ({str(exc)[:120]})"
        raise UserError(f"--port {port} on {host} {reason}; pick another --port or leave it out to use a "
                        "free one") from None


def _emulate(workers: LocalWorkers, fleet: Fleet, devices: list[str], ranks: dict[str, int],
             info: dict[str, dict], options: RunOptions) -> None:  # fmt: skip
    """Cap each worker at its device's speed relative to this host (`hardware/profiles/local.yaml`)."""
    host = load_profile("local").macs_per_s
    for name in devices:
        cores = cores_for(fleet.device(name).profile.macs_per_s, host, options.threads)
        info[name]["cpu_cores"] = None
        if cores is None or not options.emulate:
            continue
        if not cpu_quota_available():
            print(f"warning: device {name} should run at {cores:.2f} cores but cpu quotas need root and "
                  "cgroup v1; it runs at full speed", file=sys.stderr)  # fmt: skip
            continue
        workers.limit(ranks[name], cores)
        info[name]["cpu_cores"] = round(cores, 3)


def _stream(plan, graph, frames, references, backend, options, ranks, workers, progress) -> Measurement:
    runner = Runner(graph, compile_program(plan, graph, COORDINATOR), backend,
                    transport.GlooTransport(ranks), options.timeout_s)  # fmt: skip
    total = options.warmup + options.frames
    records: list[FrameRecord] = []
    stop = threading.Event()
    out = graph.outputs[0]

    failures: list[Exception] = []  # in the order they happened: the first is the cause

    def one(index: int) -> None:
        if stop.is_set():
            return
        frame = frames[index % len(frames)]
        start = time.perf_counter()
        try:
            y = runner.frame(index, frame.tensor)[out]
        except Exception as exc:
            failures.append(exc)
            stop.set()
            raise
        exact = compare(y, references[frame.name]).bit_exact
        records.append(FrameRecord(index, frame.name, index < options.warmup, start, time.perf_counter(),
                                   exact))  # fmt: skip
        if not exact:
            failures.append(_Mismatch(index, frame))
            stop.set()
            raise failures[-1]
        if progress is not None:
            progress(len(records), total)

    flight = window(plan)
    if progress is not None:
        progress(0, total)  # the workers are up
    start = time.perf_counter()
    error = mismatch = None
    with backend.active(), ThreadPoolExecutor(flight, thread_name_prefix="frame") as pool:
        pending = {pool.submit(one, i) for i in range(total)}
        while pending and error is None and mismatch is None:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            failed = failures[0] if failures else None
            dead = workers.dead()
            if isinstance(failed, _Mismatch):
                mismatch = failed
            elif failed is not None or dead:
                error = _fault(failed, dead, workers, plan)
        if pending:
            stop.set()
            workers.stop()  # unblocks frames waiting on a worker
            pool.shutdown(cancel_futures=True)
    measurement = Measurement(plan, records, runner.events, {}, flight, start, time.perf_counter(), error)
    if mismatch is not None:
        measurement.mismatch = locate_mismatch(plan, graph, backend, mismatch.frame,
                                               references[mismatch.frame.name])  # fmt: skip
        measurement.error = f"frame {mismatch.index} ({mismatch.frame.name}): {measurement.mismatch}"
    return measurement


class _Mismatch(Exception):
    def __init__(self, index: int, frame: Frame):
        super().__init__(f"frame {index} differs")
        self.index, self.frame = index, frame


def _fault(failed: BaseException | None, dead: dict[int, int], workers: LocalWorkers, plan: Plan) -> str:
    """One line naming the device (and stage) that failed."""
    if isinstance(failed, TransferError):
        rank = workers.rank_of(failed.peer)
        said = workers.said(rank)
        detail = f"; the worker said: {said}" if said else (
            f"; its process {workers.exit_text(rank)}" if rank in dead else "")
        return (f"device {failed.peer} (rank {rank}) failed at "
                f"{stage_name(failed.stage, len(plan.stages))} of frame {failed.frame}: {failed}{detail}")
    if dead:
        rank = next(iter(dead))
        said = workers.said(rank)
        return (f"device {workers.names[rank]} (rank {rank}) {workers.exit_text(rank)}"
                + (f": {said}" if said else ""))
    return f"the coordinator failed: {type(failed).__name__}: {failed}"


def _worker_events(store, devices, ranks, offsets, timeout_s) -> list[Event]:
    """Each worker's timeline, moved onto the coordinator's clock."""
    from datetime import timedelta

    keys = [f"events/{ranks[d]}" for d in devices]
    store.wait(keys, timedelta(seconds=timeout_s))
    events = []
    for device, key in zip(devices, keys):
        events += [Event(**e).shifted(offsets[device]) for e in json.loads(store.get(key))]
    return events


def replay(plan: Plan, graph: Graph, backend, x: torch.Tensor, watch=None) -> dict[str, torch.Tensor]:
    """Play one frame of `plan` with every party in this process (one thread each, no workers);
    returns what the coordinator holds at the end. `watch(party)` may return an observer of every
    tile that party computes."""
    from suite.runtime.transport import LocalTransport

    local = LocalTransport()
    runners = {p: Runner(graph, compile_program(plan, graph, p), backend, local.party(p), 60.0,
                         observe=watch(p) if watch else None) for p in parties(plan)}  # fmt: skip
    held: dict[str, dict[str, torch.Tensor]] = {}

    def play(party: str) -> None:
        held[party] = runners[party].frame(0, x if party == COORDINATOR else None)

    threads = [threading.Thread(target=play, args=(p,)) for p in runners]
    with backend.active():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return held.get(COORDINATOR, {})


def locate_mismatch(plan: Plan, graph: Graph, backend, frame: Frame, reference: torch.Tensor) -> str:
    """Replay one frame in this process and name the first node whose tile differs from the whole
    model's node-by-node run."""
    with backend.active():
        whole = run_whole(graph, frame.tensor, backend)
    if not compare(whole[graph.outputs[0]], reference).bit_exact:
        return (f"the graph run node by node already differs from the monolithic model on {backend.name} "
                "(the backend fuses or reorders ops in the whole model); run on --backend torch")
    order = {n: i for i, n in enumerate(graph.nodes)}
    bad: list[tuple[int, str, str]] = []  # (node order, node, where)

    def watch(device: str):
        def observe(stage: int, tiles) -> None:
            for name, (box, tile) in tiles.items():
                if name in whole and name != graph.input:
                    expected = whole[name] if box is None else whole[name][box.index]
                    if expected.shape == tile.shape and not compare(tile, expected).bit_exact:
                        bad.append((order[name], name, f"{device}, stage {stage}"))
        return observe

    replay(plan, graph, backend, frame.tensor, watch)
    if not bad:
        return ("its output differs from the monolithic model, but a one-process replay of the plan "
                "is exact: the difference comes from the workers' processes (threads, flags)")
    _, node, where = min(bad)
    return f"its output differs from the monolithic model; the first node that differs is '{node}' ({where})"


# -- local worker processes --------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to kill the worker if the coordinator dies, so no worker is ever orphaned."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class LocalWorkers:
    """The run's worker processes on this host, their logs and cpu limits."""

    python: str
    host: str
    store: object  # the coordinator's rendezvous store, served on its port
    world: int
    names: dict[int, str] = field(default_factory=dict)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    logs: dict[int, Path] = field(default_factory=dict)
    limits: list[CpuLimit] = field(default_factory=list)

    def start(self, rank: int, name: str) -> None:
        log = Path(tempfile.mkstemp(prefix=f"suite-worker-{rank}-", suffix=".log")[1])
        command = [self.python, "-m", "suite.runtime.worker", "--rank", str(rank), "--world",
                   str(self.world), "--master", f"{self.host}:{self.store.port}"]  # fmt: skip
        try:
            with log.open("w") as sink:
                self.procs[rank] = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink,
                                                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        except OSError as exc:
            log.unlink(missing_ok=True)
            raise UserError(f"device {name}: cannot start a worker with '{self.python}': "
                            f"{exc.strerror}; pass an interpreter that has the suite installed") from None
        self.names[rank], self.logs[rank] = name, log

    def await_ready(self, timeout_s: float) -> dict[str, dict]:
        """Every worker's report once it has built its model; a worker that exits first is an error."""
        store = self.store
        deadline = time.monotonic() + timeout_s
        waiting = set(self.procs)
        info: dict[str, dict] = {}
        while waiting:
            for rank in sorted(waiting):
                if store.check([f"ready/{rank}"]):
                    info[self.names[rank]] = {"rank": rank, **json.loads(store.get(f"ready/{rank}"))}
                    waiting.discard(rank)
                elif self.procs[rank].poll() is not None:
                    said = self.said(rank) or self._log_tail(rank)
                    raise UserError(f"device {self.names[rank]}: the worker could not start: {said}")
            if time.monotonic() > deadline:
                rank = min(waiting)
                raise UserError(f"device {self.names[rank]}: the worker did not start within {timeout_s:g} s")
            time.sleep(0.05)
        return info

    def limit(self, rank: int, cores: float) -> None:
        limit = CpuLimit(cores)
        self.limits.append(limit)
        limit.create()
        limit.add(self.procs[rank].pid)

    def dead(self) -> dict[int, int]:
        """Workers that exited before the run finished: rank -> exit code."""
        return {r: p.returncode for r, p in self.procs.items() if p.poll() is not None}

    def rank_of(self, name: str) -> int:
        return next((r for r, n in self.names.items() if n == name), -1)

    def said(self, rank: int) -> str | None:
        """The one line a worker left in the store before failing, if any."""
        try:
            key = f"error/{rank}"
            return self.store.get(key).decode() if self.store.check([key]) else None
        except Exception:  # the store itself may be gone during shutdown
            return None

    def exit_text(self, rank: int) -> str:
        code = self.procs[rank].returncode if rank in self.procs else None
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"exited with code {code}"

    def _log_tail(self, rank: int) -> str:
        lines = [ln for ln in self.logs[rank].read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else self.exit_text(rank)

    def finish(self, timeout_s: float) -> None:
        for proc in self.procs.values():
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stop(self) -> None:
        """Kill what still runs, reap it, remove logs and cpu limits; safe to call twice."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        for limit in self.limits:
            limit.close()
        for log in self.logs.values():
            log.unlink(missing_ok=True)
        self.logs.clear()
