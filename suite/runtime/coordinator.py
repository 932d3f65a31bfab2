"""The coordinator: starts a plan's workers, feeds them frames, gathers and checks every output.

It serves the rendezvous store (the run's configuration travels through it), starts one worker
process per device of the plan on this host, waits until each has built its share of the model,
joins the gloo group as rank 0, lines up the workers' clocks with its own, and streams frames, as
many in flight as the plan keeps (one per PICO pipeline group, HALP's tasks per batch). Every
output is compared bit for bit with the monolithic model's; a mismatch stops the run and a
one-process replay of that frame (`replay.py`) names the first node that differs.

On onnxruntime, each worker is handed the folded model `OrtBackend.prepare` wrote (its path on the
device: `Workers.place` copies it to a fleet's device once per content) and loads only its own
nodes' weights from it, instead of building and exporting the module itself.

A worker that dies or stops answering ends the run within the timeout with an error naming the
device and stage; every worker is killed on the way out and the frames done so far are kept,
marked incomplete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from suite.backends import Backend
from suite.datasets import Frame
from suite.errors import RunFailed, UserError
from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import COORDINATOR, Plan
from suite.profile import host_profile
from suite.runtime import transport
from suite.runtime.emulate import cores_for, cpu_quota_available
from suite.runtime.engine import Runner, TransferError, compile_program, parties, stage_name
from suite.runtime.lowering import lower_plan
from suite.runtime.measurement import FrameRecord, Measurement, Repeat, RunOptions, Runs, WorkerReport
from suite.runtime.metrics import Event
from suite.runtime.rendezvous import SECRET_ENV, RendezvousServer, RendezvousStore, new_secret
from suite.runtime.replay import locate_mismatch
from suite.runtime.worker import FIRST_SIGN_S, STARTUP_TIMEOUT_S, WorkerConfig
from suite.runtime.worker import command as worker_command
from suite.runtime.worker_processes import LocalWorkers, Workers
from suite.verify import compare_tensors

Progress = Callable[[int, int], None]  # (frames done, frames in all)
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM): the workers were stopped"


@dataclass
class Coordinator:
    """Runs plans for one model on worker processes, checking every output against `references`
    (the monolithic model's output for each frame, on the same backend).

    `graph` is the backend's graph; `model_graph` the graph plans name (`suite.runtime.lowering`),
    when that is another one (onnxruntime folds batch norms into convolutions)."""

    graph: Graph
    backend: Backend
    fleet: Fleet
    frames: list[Frame]
    references: dict[str, torch.Tensor]
    options: RunOptions
    model_graph: Graph | None = None

    def run(self, plan: Plan, progress: Progress | None = None, label: str = "plan") -> Measurement:
        """Run `options.warmup + options.frames` frames of `plan` on its workers: local processes,
        or over SSH on the devices of `options.inventory` (started by `options.remote_workers`).
        Worker logs go to `<log_dir>/<label>/`.

        Ctrl-C or SIGTERM (raised as KeyboardInterrupt in this thread) stops the run at once: the
        workers are killed and the frames done so far come back, marked incomplete."""
        options, inventory = self.options, self.options.inventory
        if inventory is not None and options.remote_workers is None:
            raise ValueError("RunOptions.inventory needs remote_workers to start its devices' workers")
        executable = lower_plan(plan, self.model_graph or self.graph, self.graph, self.fleet)
        names = parties(executable)
        ranks = {name: rank for rank, name in enumerate(names)}
        bind = inventory.coordinator.host if inventory is not None else options.host
        secret = new_secret()
        server = _serve(bind, options.port, secret)
        scratch = None if options.log_dir is not None else Path(tempfile.mkdtemp(prefix="suite-logs-"))
        log_dir = (options.log_dir or scratch) / label
        workers: Workers | None = None
        try:
            store = RendezvousStore(_reachable(bind), server.port, secret, options.timeout_s)
            config = WorkerConfig(executable.to_dict(), ranks, options.backend,
                                  options.warmup + options.frames, options.timeout_s,
                                  {d: options.threads for d in names[1:]})  # fmt: skip
            store.set("config", config.to_json())
            if inventory is None:
                # this host's speed, to cap each worker at its device's: measured now, not while they wait
                host_macs = host_profile(options.backend, say=_say).macs_per_s
                workers = LocalWorkers(log_dir)
            else:
                workers = options.remote_workers(inventory, log_dir)
            host = _reachable(bind)
            master = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
            folded = self._folded_model()
            model_files = {name: workers.place(name, folded) for name in names[1:]} if folded else {}
            for name in names[1:]:
                python, env = options.python, {SECRET_ENV: secret}
                if inventory is not None:
                    device = inventory.host(name)
                    python = device.launcher
                    env |= {"GLOO_SOCKET_IFNAME": device.interface} if device.interface else {}
                argv = worker_command(python, ranks[name], len(names), master, options.model,
                                      options.input_size, options.seed, model_files.get(name))  # fmt: skip
                workers.start(ranks[name], name, argv, env)
            ready = _await_ready(store, workers, options.timeout_s)
            self._check_weights({name: said["weights"] for name, said in ready.items()}, model_files)
            if inventory is None:
                cores = self._emulate(workers, names[1:], ranks, host_macs)
            else:  # a lab's devices are capped by their cgroups; real devices run at their own speed
                lab = inventory.lab
                cores = {name: lab.cpu_cores.get(name) if lab else None for name in names[1:]}
            reports = {name: replace(WorkerReport(**ready[name]["report"]), cpu_cores=cores[name])
                       for name in names[1:]}  # fmt: skip
            if inventory is not None and inventory.coordinator.interface:
                os.environ["GLOO_SOCKET_IFNAME"] = inventory.coordinator.interface
            else:
                transport.pin_gloo(host)
            gloo = transport.GlooTransport(ranks, COORDINATOR, transport.data_key(secret))
            offsets = _join(store, gloo, workers, options.timeout_s)
            measurement = self._stream(executable, gloo, workers, store, progress)
            # the results keep the plan as made, on the model graph
            measurement = replace(measurement, plan=plan, workers=reports,
                                  refused_peers=tuple(server.refused),
                                  refused_count=server.refused_count)  # fmt: skip
            if measurement.complete:  # one --timeout for the workers' reports and their exit
                deadline = time.monotonic() + options.timeout_s
                try:
                    events = _worker_events(store, names[1:], ranks, offsets, options.timeout_s)
                    peaks = {name: json.loads(store.get(f"usage/{ranks[name]}"))["peak_rss_bytes"]
                             for name in names[1:]}  # fmt: skip
                    reports = {name: replace(r, peak_rss_bytes=peaks[name]) for name, r in reports.items()}
                    measurement = replace(measurement, events=(*measurement.events, *events), workers=reports)
                except Exception as exc:  # every frame is done and checked: the run stands without them
                    why = transport.failure_reason(exc, options.timeout_s)
                    _say(
                        f"warning: the workers' timelines and memory could not be collected (a worker "
                        f"stopped after its last frame?): {why}"
                    )
                store.set("finished", "1")
                workers.finish(max(0.0, deadline - time.monotonic()))
                dist.destroy_process_group()
            return measurement
        finally:
            if workers is not None:
                workers.stop()
            server.close()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def run_repeats(self, plan: Plan, baseline: bool, progress: Callable[[str], Progress | None]) -> Runs:
        """`options.repeats` times: the plan's run, then (when it completed and `baseline` asks for
        it) the single-device run that its speedup is measured against; a single-device plan is its
        own baseline. The repeats stop at the first run that fails; the ones before it stand, and
        a run after the first that fails to start, or is interrupted while starting, is named in
        `Runs.failure`. `progress(label)` gives each run's progress callback."""
        from suite.schemes import make_plan

        count, done = self.options.repeats, []
        single = make_plan("single", self.model_graph or self.graph, self.fleet) if baseline else None
        for number in range(1, count + 1):
            of = "" if count == 1 else f" (repeat {number} of {count})"
            suffix = "" if number == 1 else f"-{number}"
            try:
                label = f"{plan.scheme} on {len(plan.devices)} devices{of}"
                run = self.run(plan, progress(label), f"plan{suffix}")
            except (RunFailed, KeyboardInterrupt) as exc:
                if number == 1:
                    raise
                said = str(exc) if isinstance(exc, RunFailed) else INTERRUPTED
                _say(f"warning: repeat {number} of {count} failed; the {number - 1} before it are kept: "
                     f"{said}")  # fmt: skip
                return Runs(tuple(done), f"repeat {number} of {count}: {said}")
            if not (run.complete and single is not None):
                done.append(Repeat(number, run))
            elif plan.scheme == "single":
                done.append(Repeat(number, run, run))
            else:
                try:
                    done.append(Repeat(number, run, self.run(single, progress(f"single device{of}"),
                                                             f"single{suffix}")))  # fmt: skip
                except RunFailed as exc:  # the plan's frames are kept; only this repeat's speedup is lost
                    _say(f"warning: the single-device run{of} failed, so the repeats stop there and its "
                         f"speedup is not reported: {exc}")  # fmt: skip
                    return Runs((*done, Repeat(number, run)))
                except KeyboardInterrupt:  # while its workers started: the runs so far are kept
                    return Runs((*done, Repeat(number, run)), f"repeat {number} of {count}: {INTERRUPTED}")
            if not done[-1].complete:
                break
        return Runs(tuple(done))

    def _folded_model(self) -> Path | None:
        """The folded model onnxruntime workers load (None: workers build the model themselves)."""
        if self.options.backend != "onnxruntime":
            return None
        from suite.backends.ort import folded_model

        return folded_model(self.graph)

    def _check_weights(self, digests: dict[str, dict[str, str]], model_files: dict[str, str]) -> None:
        """Every worker holds the same weights as this process: a factory that draws random weights
        without `--seed`, another version of a model file on a device, or a damaged copy of the
        folded model is named here, not reported later as outputs that differ."""
        mine: dict[str, str] = {}
        for device, theirs in digests.items():
            for node, digest in theirs.items():
                if node in self.graph.nodes and node not in mine:
                    mine[node] = self.graph[node].param_digest()
                if node in mine and digest != mine[node] and device in model_files:
                    raise UserError(
                        f"device {device} read other weights for node '{node}' from "
                        f"{model_files[device]} than the coordinator's: that copy of the folded "
                        "model is damaged or was changed; remove its folder and run again"
                    )
                if node in mine and digest != mine[node]:
                    raise UserError(f"device {device} holds other weights for node '{node}' than the "
                                    "coordinator: build the model the same way everywhere (a factory must "
                                    "draw its weights from --seed; deploy the same model file)")  # fmt: skip

    def _emulate(self, workers: LocalWorkers, devices: list[str], ranks: dict[str, int], host: float
                 ) -> dict[str, float | None]:  # fmt: skip
        """Cap each worker at its device's speed relative to this host's (`host` MAC/s on the run's
        backend: `suite.profile.host_profile`): the cores each device got (None: not capped)."""
        given: dict[str, float | None] = dict.fromkeys(devices)
        for name in devices:
            cores = cores_for(self.fleet.device(name).profile.macs_per_s, host, self.options.threads)
            if cores is None or not self.options.emulate:
                continue
            if not cpu_quota_available():
                print(f"warning: device {name} should run at {cores:.2f} cores but cpu quotas need root and "
                      "cgroup v1; it runs at full speed", file=sys.stderr)  # fmt: skip
                continue
            workers.limit(ranks[name], cores)
            given[name] = round(cores, 3)
        return given

    def _stream(self, plan: Plan, gloo: transport.GlooTransport, workers: Workers, store: RendezvousStore,
                progress: Progress | None) -> Measurement:  # fmt: skip
        """Frames in order, `plan.frames_in_flight` at a time, each checked against its reference.

        Frames run on daemon threads that stop between messages once `stop` is set, so a fault, a
        mismatch or Ctrl-C ends the stream at once and never holds up this process's exit."""
        graph, options = self.graph, self.options
        stop = threading.Event()
        program = compile_program(plan, graph, COORDINATOR)
        runner = Runner(graph, program, self.backend, gloo, options.timeout_s, stop=stop)
        total = options.warmup + options.frames
        records: list[FrameRecord] = []
        out = graph.outputs[0]
        failures: list[Exception] = []  # in the order they happened: the first is the cause
        queue = iter(range(total))
        lock = threading.Lock()

        def one(index: int) -> None:
            frame = self.frames[index % len(self.frames)]
            start = time.perf_counter()
            try:
                y = runner.frame(index, frame.tensor)[out]
            except Exception as exc:
                if not stop.is_set():  # the first failure is the cause; later ones follow from it
                    failures.append(exc)
                stop.set()
                return
            exact = compare_tensors(y, self.references[frame.name]).bit_exact
            records.append(FrameRecord(index, frame.name, index < options.warmup, start, time.perf_counter(),
                                       exact))  # fmt: skip
            if not exact:
                failures.append(_Mismatch(index, frame))
                stop.set()
            elif progress is not None:
                progress(len(records), total)

        def play() -> None:
            with self.backend.active():
                while not stop.is_set():
                    with lock:
                        index = next(queue, None)
                    if index is None:
                        return
                    one(index)

        flight = plan.frames_in_flight
        if progress is not None:
            progress(0, total)  # the workers are up
        start = time.perf_counter()
        error = mismatch = None
        threads = [threading.Thread(target=play, name=f"frame-{k}", daemon=True) for k in range(flight)]
        try:
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads) and error is None and mismatch is None:
                threads[0].join(timeout=0.2)
                failed = failures[0] if failures else None
                dead = workers.dead()
                if isinstance(failed, _Mismatch):
                    mismatch = failed
                elif failed is not None or dead:
                    error = _fault(failed, dead, workers, store, plan)
        except KeyboardInterrupt:
            error = INTERRUPTED
        stop.set()
        if any(t.is_alive() for t in threads):
            workers.stop()  # unblocks frames waiting on a worker
            if error != INTERRUPTED:
                for thread in threads:
                    thread.join(timeout=options.timeout_s)
        end, found = time.perf_counter(), None
        if mismatch is not None:
            frame = mismatch.frame
            reference = self.references[frame.name]
            try:
                found = locate_mismatch(plan, graph, self.backend, frame.tensor, reference, options.timeout_s)
            except Exception as exc:  # the replay is a diagnosis: its own failure must not hide the finding
                said = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                found = ("its output differs from the monolithic model; replaying the frame here to find the "
                         f"first node failed too ({said})")  # fmt: skip
            error = f"frame {mismatch.index} ({frame.name}): {found}"
        return Measurement(plan, tuple(sorted(records, key=lambda r: r.frame)), tuple(runner.events), {},
                           flight, start, end, error, found)  # fmt: skip


def _join(store: RendezvousStore, gloo: transport.GlooTransport, workers: Workers, timeout_s: float
          ) -> dict[str, float]:  # fmt: skip
    """Form the gloo group with every worker, then each worker's clock offset (authenticated like
    every message); a worker that does not come to the join, join or answer in `timeout_s` ends the
    run in one line that names it where it can be told. The workers wait for this call's word to join
    (`join`), given once every one is built, so gloo's join timer starts alike for all."""
    store.set("join", "1")
    _await_arrivals(store, workers, timeout_s)
    taken = "(a worker stopped, or a party outside the run took its connection)"
    try:
        transport.join(store, 0, len(workers.names) + 1, timeout_s)
    except Exception as exc:  # gloo's timeout or a broken pairing, as a RuntimeError
        why = transport.failure_reason(exc, timeout_s)
        dead = min(workers.dead(), default=None)
        who = f"device {workers.names[dead]} (rank {dead}) {workers.exit_text(dead)}: " if dead else ""
        raise RunFailed(f"{who}the workers did not all join the run's gloo group: {why} {taken}") from None
    offsets = {}
    for rank, name in sorted(workers.names.items()):
        try:
            offsets[name] = transport.clock_offset(gloo, name, timeout_s)
        except Exception as exc:
            why = transport.failure_reason(exc, timeout_s)
            raise RunFailed(f"device {name} (rank {rank}): no authentic answer to the clock sync: {why} "
                            f"{taken}") from None  # fmt: skip
    return offsets


def _await_arrivals(store: RendezvousStore, workers: Workers, timeout_s: float) -> None:
    """Wait until every worker says it is joining (`joining/RANK`): one that exits or stays away for
    `timeout_s` is named before gloo's own join, which cannot tell who is missing."""
    deadline = time.monotonic() + timeout_s
    waiting = set(workers.names)
    while waiting:
        waiting = {rank for rank in waiting if not store.check([f"joining/{rank}"])}
        dead = workers.dead()
        for rank in sorted(waiting & set(dead)):
            raise RunFailed(f"device {workers.names[rank]} (rank {rank}) {workers.exit_text(rank)} before "
                            "joining the run's gloo group")  # fmt: skip
        if waiting and time.monotonic() > deadline:
            rank = min(waiting)
            raise RunFailed(
                f"device {workers.names[rank]} (rank {rank}) did not come to join the run's gloo "
                f"group within {timeout_s:g} s (it stopped, or its host is overloaded)"
            )
        time.sleep(0.02)


def _serve(host: str, port: int, secret: str) -> RendezvousServer:
    """The run's rendezvous, bound to `host` only; a host or port that cannot be bound is one line."""
    try:
        return RendezvousServer(host, port, secret).start()
    except (OSError, OverflowError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port} on {host} is in use; pick another --port or leave it out to "
                            "use a free one") from None  # fmt: skip
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"--host {host} --port {port} cannot be bound ({reason}); give an address of this "
                        "machine, e.g. 127.0.0.1 for local workers") from None  # fmt: skip


def _reachable(host: str) -> str:
    """The address this host's own parties use to reach a rendezvous bound to `host`."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


class _Mismatch(Exception):
    def __init__(self, index: int, frame: Frame):
        super().__init__(f"frame {index} differs")
        self.index, self.frame = index, frame


def _await_ready(store: RendezvousStore, workers: Workers, silent_s: float) -> dict[str, dict]:
    """Every worker's ready message once it has built its model: its `report` (a `WorkerReport`'s
    fields) and the digests of the `weights` it holds, by node. A worker that exits first says why (its
    model, its backend or its interpreter: the user's to fix, exit 2); one killed by a signal, or
    without a sign of life for `silent_s` (its first within FIRST_SIGN_S), or not built within
    STARTUP_TIMEOUT_S, is a fault of the run (exit 1)."""
    started = time.monotonic()
    waiting = set(workers.names)
    info: dict[str, dict] = {}
    beats = {rank: (0, started) for rank in waiting}  # each worker's last count of signs of life, and when
    while waiting:
        exited = workers.dead()
        now = time.monotonic()
        for rank in sorted(waiting):
            name = workers.names[rank]
            if store.check([f"ready/{rank}"]):
                info[name] = json.loads(store.get(f"ready/{rank}"))
                waiting.discard(rank)
            elif rank in exited:
                if exited[rank] < 0:  # a signal: killed (or the kernel's OOM killer), not refused
                    raise RunFailed(f"device {name} (rank {rank}): the worker {workers.exit_text(rank)} "
                                    "while starting")  # fmt: skip
                said = _said(store, rank) or workers.last_line(rank) or workers.exit_text(rank)
                raise UserError(f"device {name}: the worker could not start: {said}")
            else:
                count = store.add(f"alive/{rank}", 0)
                if count != beats[rank][0]:
                    beats[rank] = (count, now)
                quiet = now - beats[rank][1]
                if quiet > (silent_s if count else max(silent_s, FIRST_SIGN_S)):
                    raise RunFailed(
                        f"device {name} (rank {rank}): the worker stopped answering while "
                        f"starting (no sign of life for {quiet:.0f} s; --timeout {silent_s:g})"
                    )
        if now - started > STARTUP_TIMEOUT_S:
            rank = min(waiting)
            raise RunFailed(f"device {workers.names[rank]} (rank {rank}): the worker did not start within "
                            f"{STARTUP_TIMEOUT_S:g} s")  # fmt: skip
        time.sleep(0.05)
    return info


def _said(store: RendezvousStore, rank: int) -> str | None:
    """The one line a worker left in the store before failing, if any."""
    try:
        key = f"error/{rank}"
        return store.get(key).decode() if store.check([key]) else None
    except Exception:  # the store itself may be gone during shutdown
        return None


def _fault(failed: BaseException | None, dead: dict[int, int], workers: Workers, store: RendezvousStore,
           plan: Plan) -> str:  # fmt: skip
    """One line naming the device (and stage) that failed."""
    if isinstance(failed, TransferError):
        rank = workers.rank_of(failed.peer)
        said = _said(store, rank)
        detail = (
            f"; the worker said: {said}"
            if said
            else (f"; its process {workers.exit_text(rank)}" if rank in dead else "")
        )
        return (
            f"device {failed.peer} (rank {rank}) failed at "
            f"{stage_name(failed.stage, len(plan.stages))} of frame {failed.frame}: {failed}{detail}"
        )
    if dead:
        rank = next(iter(dead))
        said = _said(store, rank)
        return f"device {workers.names[rank]} (rank {rank}) {workers.exit_text(rank)}" + (
            f": {said}" if said else ""
        )
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


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
