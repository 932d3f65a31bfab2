"""A device's process: `python -m suite.runtime.worker --rank R --world W --master HOST:PORT --model
SPEC --input-size CxHxW --seed S [--model-file PATH]`, with the run's secret in its environment
(`SUITE_RUN_SECRET`).

It joins the coordinator's authenticated rendezvous, builds the model its own command line names
(the store never names code to import: a forged plan can at most fail to match the model), keeps
only the weights its share of the plan needs, joins the gloo group and plays its program frame by
frame. An onnxruntime worker builds no module: it loads the folded model the coordinator wrote
(`--model-file`, `suite.backends.folded`) and reads only its own nodes' weights from it. Whatever
goes wrong is written to the store as one line (`error/R`) for the coordinator to report, and the
process exits non-zero. Fabric starts the same command on real devices.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from pathlib import Path

from suite.errors import UserError
from suite.runtime import faults

STARTUP_TIMEOUT_S = 300.0  # building a large model on a slow device takes a while
HEARTBEAT_S = 1.0  # how often a starting worker shows it is alive
FIRST_SIGN_S = 60.0  # an interpreter's start and torch's import, on a slow device, before the first sign


@dataclass(frozen=True)
class WorkerConfig:
    """What the coordinator tells every worker of the run, through the store's `config` key."""

    plan: dict  # the plan as the workers execute it (`Plan.to_dict`)
    ranks: dict[str, int]  # by party, the coordinator's included
    backend: str
    frames: int  # warm-up and measured
    timeout_s: float
    threads: dict[str, int]  # per device

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: bytes | str) -> WorkerConfig:
        """The config in the store; keys it does not know (a newer coordinator's) are left alone."""
        values = json.loads(text)
        return cls(**{f.name: values[f.name] for f in fields(cls)})


def parse_master(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--master '{text}' is not HOST:PORT, e.g. 127.0.0.1:29500")
    return host.strip("[]"), int(port)


def command(python: str, rank: int, world: int, master: str, model: str, input_size: tuple[int, ...],
            seed: int, model_file: str | None = None) -> list[str]:  # fmt: skip
    """The command line that starts a worker (locally, or on a device over SSH); `model_file`: the
    folded model an onnxruntime worker loads, as the device sees it."""
    return [python, "-m", "suite.runtime.worker", "--rank", str(rank), "--world", str(world),
            "--master", master, "--model", model, "--input-size", "x".join(map(str, input_size)),
            "--seed", str(seed), *(["--model-file", model_file] if model_file else [])]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="suite.runtime.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--master", required=True, help="the coordinator's HOST:PORT")
    parser.add_argument("--model", required=True, help="zoo name, path/to/model.onnx or module:factory")
    parser.add_argument("--input-size", required=True, metavar="CxHxW")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-file", help="the coordinator's folded model.onnx (onnxruntime workers)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from suite.runtime import transport
    from suite.runtime.rendezvous import RendezvousError, RendezvousStore, secret_from_environment

    try:
        host, port = parse_master(args.master)
        secret = secret_from_environment()
        store = RendezvousStore(host, port, secret, STARTUP_TIMEOUT_S)
        building = _signs_of_life(host, port, secret, args.rank)
    except (UserError, RendezvousError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        faults.at("start-up", args.rank)
        faults.delay("start-up", args.rank)
        config = WorkerConfig.from_json(store.get("config"))
        runner, report, weights = _build(config, args, transport.data_key(secret))
        report = replace(report, startup_s=time.perf_counter() - started, rss_bytes=_give_back_freed_memory())
    except Exception as exc:  # any failure to start is reported, never a silent hang
        store.set(f"error/{args.rank}", _one_line(exc))
        return 2
    finally:
        building.set()
    store.set(f"ready/{args.rank}", json.dumps({"report": asdict(report), "weights": weights}))
    if "GLOO_SOCKET_IFNAME" not in os.environ:  # the inventory may name the device's interface
        transport.pin_gloo(transport.route_to(host, port))
    from suite.plan import COORDINATOR  # after the build: a worker without the suite's packages says so there

    try:
        # Every worker enters gloo's join when the coordinator says all are built, so gloo's timer for
        # its peers runs from then: a slow device's build (a heterogeneous fleet's slowest, a per-layer
        # plan's many sessions) would otherwise run out a fast device's time to connect to it.
        store.wait(["join"], timedelta(seconds=STARTUP_TIMEOUT_S + config.timeout_s))
        faults.at("join", args.rank)
        store.set(f"joining/{args.rank}", "1")  # so that one which never comes can be named
        transport.join(store, args.rank, args.world, config.timeout_s)
        faults.at("clock", args.rank)
        transport.answer_clock(runner.transport, COORDINATOR, config.timeout_s)
        with runner.backend.active():
            for frame in range(config.frames):
                faults.at("frame", args.rank, frame)
                runner.frame(frame)
    except Exception as exc:
        store.set(f"error/{args.rank}", _one_line(exc))
        return 1
    faults.at("report", args.rank)
    store.set(f"usage/{args.rank}", json.dumps({"peak_rss_bytes": memory()["VmHWM"]}))
    store.set(f"events/{args.rank}", json.dumps([asdict(e) for e in runner.events]))  # read after usage
    store.wait(["finished"])  # the coordinator has every message: closing now loses nothing
    return 0


def _signs_of_life(host: str, port: int, secret: str, rank: int) -> threading.Event:
    """Count `alive/RANK` up now and then every HEARTBEAT_S, on a connection of its own, until the
    returned event is set: the coordinator gives up on a worker silent for its --timeout (stopped,
    frozen, its device gone) however long the model takes to build."""
    from suite.runtime.rendezvous import RendezvousStore

    store = RendezvousStore(host, port, secret, STARTUP_TIMEOUT_S)
    store.add(f"alive/{rank}", 1)
    built = threading.Event()

    def beat() -> None:
        try:
            while not built.wait(HEARTBEAT_S):
                store.add(f"alive/{rank}", 1)
        except Exception:  # the coordinator is gone: the main thread finds out and says so
            pass

    threading.Thread(target=beat, name="signs-of-life", daemon=True).start()
    return built


def _build(config: WorkerConfig, args: argparse.Namespace, key: bytes):
    """The runner for this rank's party (its messages authenticated with `key`), its report (start-up
    time and memory still to fill in) and the digests of the weights it holds, by node."""
    import torch

    from suite.backends import BackendError, make_backend
    from suite.doctor import recorded, refusal
    from suite.models.load import load_model, parse_input_size
    from suite.plan import PlanError, load_plan_dict
    from suite.runtime.engine import Runner, compile_program, prune_weights, segments
    from suite.runtime.measurement import WorkerReport
    from suite.runtime.transport import GlooTransport

    party = next(p for p, r in config.ranks.items() if r == args.rank)
    # tiles a task no longer needs are freed as it runs, as the module's own forward frees them
    backend = make_backend(config.backend, config.threads.get(party, 1))
    backend = replace(backend, observes_all_nodes=False)
    verdict = recorded(config.backend)  # as `suite doctor` (or `suite deploy`) left it on this device
    if verdict is not None and not verdict.exact:
        raise BackendError(refusal(verdict, f"device {party}"))
    torch.set_num_interop_threads(1)
    if config.backend == "onnxruntime":  # its weights stay in the file until its sessions read them
        if args.model_file is None:
            raise UserError("an onnxruntime worker loads the coordinator's folded model: pass --model-file")
        graph, weight_bytes = backend.load_folded(Path(args.model_file)), backend.weight_bytes
    else:
        loaded = load_model(args.model, parse_input_size(args.input_size), args.seed)
        graph, weight_bytes = backend.prepare(loaded).graph, None
        del loaded  # the module's own copy of the weights
    plan = load_plan_dict(config.plan)
    if plan.model != graph.name or tuple(plan.input_shape) != tuple(graph.input_shape[1:]):
        raise PlanError(f"the plan is for {plan.model} {plan.input_shape}, but this worker was started "
                        f"with {graph.name} {list(graph.input_shape[1:])}")  # fmt: skip
    if plan.graph != graph.source:
        raise PlanError(f"the plan names the {plan.graph} graph's nodes, but this worker runs "
                        f"{backend.name} on the {graph.source} graph")  # fmt: skip
    program = compile_program(plan, graph, party)
    digests = {n: graph[n].param_digest(weight_bytes) for n in sorted(program.nodes)
               if graph[n].params or graph[n].onnx}  # fmt: skip
    graph = prune_weights(graph, program)
    weights = sum(graph[n].param_bytes for n in graph.nodes)
    compiled = backend.compile(graph, segments(program, graph))
    gloo = GlooTransport(config.ranks, party, key)
    runner = Runner(compiled.graph, program, backend, gloo, config.timeout_s, args.rank)
    report = WorkerReport(party, args.rank, os.getpid(), len(program.nodes), weights,
                          None if verdict is None else verdict.fingerprint, startup_s=0.0,
                          compile_s=compiled.seconds, executables=compiled.executables,
                          rss_bytes=0)  # fmt: skip
    return runner, report, digests


def _give_back_freed_memory() -> int:
    """Return the heap freed during start-up to the system, and the resident memory left (bytes).

    Building the model leaves freed heap behind (the module's copy of the weights; onnxruntime's
    layout query and session protobufs); glibc keeps such pages mapped, so the worker's resident
    memory would count memory it no longer uses."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return memory()["VmRSS"]


def memory() -> dict[str, int]:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in bytes (Linux)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{at}"


if __name__ == "__main__":
    sys.exit(main())
