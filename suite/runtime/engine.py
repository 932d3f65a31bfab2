"""What one party (a device or the coordinator) does with a plan, frame after frame.

`compile_program` resolves a plan once into each party's steps: per stage, the messages it sends
and receives before computing (the stage's inputs), the tiles it computes with their regions, and
the messages after (the stage's outputs, gathered at the hub). `Runner.frame` plays those steps
for one frame over a `Transport`: every send and receive is posted before anything waits, so a
device computes while its inputs to others are still on the wire (HALP's overlap), and a party
never blocks a peer that is ready.

When the hub is a device (HALP's host, MoDNN's owner, DeepThings' gateway, a single device), the
frame still starts and ends at the coordinator: an entry step sends it the input and an exit step
returns the model's outputs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from suite.backends import Backend, SegmentCall, Tile, run_segment
from suite.backends.exact import linear_share
from suite.graph import Graph
from suite.plan import COORDINATOR, Plan, PlanError, Transfer, Work, work_regions
from suite.regions import (
    WHOLE,
    Box,
    FeatureRange,
    NodeRegion,
    Region,
    RegionError,
    feature_region,
    hull_of,
    index_in,
    part_of,
)  # fmt: skip
from suite.runtime.metrics import Event
from suite.runtime.transport import failure_reason


class TransferError(RuntimeError):
    """A message that did not arrive or could not leave (names the peer, stage and frame)."""

    def __init__(self, message: str, peer: str, stage: int, frame: int):
        super().__init__(message)
        self.peer, self.stage, self.frame = peer, stage, frame


class Handle(Protocol):
    def wait(self, timeout_s: float) -> None: ...


class Transport(Protocol):
    """Point-to-point messages between named parties; `tag` tells a frame's messages apart."""

    def send(self, tensor: torch.Tensor, peer: str, tag: int) -> Handle: ...

    def recv(self, tensor: torch.Tensor, peer: str, tag: int) -> Handle: ...


@dataclass(frozen=True)
class Message:
    index: int  # the transfer's place in the run's transfer list: its tag within a frame
    peer: str
    tensor: str
    region: Region
    shape: tuple[int, ...]


@dataclass
class Task:
    """One `Work` of the plan: the nodes to run and the region of each that computes a part of its
    output (tiles of a map, a share of a linear layer's features); other nodes run whole."""

    nodes: list[str]
    regions: dict[str, NodeRegion]
    outputs: dict[str, Region]


@dataclass
class ProgramStep:
    """What one party does at one stage of every frame: send and receive around its tiles."""

    stage: int  # -1: the frame enters the hub; len(plan.stages): the outputs return
    send_before: list[Message] = field(default_factory=list)
    recv_before: list[Message] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    send_after: list[Message] = field(default_factory=list)
    recv_after: list[Message] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.send_before or self.recv_before or self.tasks or self.send_after
                    or self.recv_after)  # fmt: skip


@dataclass
class Program:
    party: str
    steps: list[ProgramStep]
    canvases: dict[str, Region]  # what the party holds of each tensor it receives or computes
    messages: int  # transfers per frame in the whole run (the tag stride)
    stages: int

    @property
    def nodes(self) -> set[str]:
        """The nodes this party computes (the only weights it needs)."""
        return {n for step in self.steps for task in step.tasks for n in task.nodes}


# -- compiling a plan -------------------------------------------------------------------------


def run_transfers(plan: Plan, graph: Graph) -> list[tuple[int, Transfer]]:
    """Every message of one frame as (stage, transfer), in order; entry and exit when the hub is a
    device."""
    moves: list[tuple[int, Transfer]] = []
    if plan.hub != COORDINATOR:
        moves.append((-1, Transfer(COORDINATOR, plan.hub, graph.input, WHOLE,
                                   graph[graph.input].act_bytes)))  # fmt: skip
    moves += [(stage.index, t) for stage in plan.stages for t in stage.transfers]
    if plan.hub != COORDINATOR:
        last = len(plan.stages)
        moves += [(last, Transfer(plan.hub, COORDINATOR, o, WHOLE, graph[o].act_bytes))
                  for o in graph.outputs]  # fmt: skip
    return moves


def parties(plan: Plan) -> list[str]:
    """The coordinator first, then the devices the plan gives work or messages, in plan order."""
    used = {w.device for s in plan.stages for w in s.work}
    used |= {p for s in plan.stages for t in s.transfers for p in (t.src, t.dst)}
    used.add(plan.hub)
    return [COORDINATOR] + [d for d in plan.devices if d in used]


def compile_program(plan: Plan, graph: Graph, party: str) -> Program:
    moves = run_transfers(plan, graph)
    steps = {s: ProgramStep(s) for s in range(-1, len(plan.stages) + 1)}
    held: dict[str, list[Region]] = {}
    for index, (s, t) in enumerate(moves):
        when = "before" if not 0 <= s < len(plan.stages) or plan.stages[s].brings(t) else "after"
        if party in (t.src, t.dst):
            mine = t.src == party
            message = Message(index, t.dst if mine else t.src, t.tensor, t.region,
                              t.region.shape(graph[t.tensor].shape))  # fmt: skip
            getattr(steps[s], f"{'send' if mine else 'recv'}_{when}").append(message)
            if not mine:
                held.setdefault(t.tensor, []).append(t.region)
    for k, stage in enumerate(plan.stages):
        after = plan.stages[k + 1] if k + 1 < len(plan.stages) else None
        keep = {t for w in after.work for t in w.reused} if after is not None and after.continues else set()
        works = [_tasks(graph, stage.nodes, w, stage.index, keep) for w in stage.work if w.device == party]
        for task in _by_segment(graph, works):
            steps[stage.index].tasks.append(task)
            for tensor, region in task.outputs.items():
                held.setdefault(tensor, []).append(region)
    if party == COORDINATOR:
        held[graph.input] = [WHOLE]
    canvases = {tensor: hull_of(regions, graph[tensor]) for tensor, regions in held.items()}
    return Program(party, [s for s in steps.values() if not s.empty], canvases, len(moves), len(plan.stages))


def _by_segment(graph: Graph, works: list[list[Task]]) -> list[Task]:
    """The tasks of a party's works in one stage, those of one segment one after the other: of the
    works' next tasks, the segment that ends first in the graph, for every work whose next task it is,
    then again. A backend may compute the tiles of one segment together at the first one's call
    (onnxruntime's compiled sessions), and a tile that reuses bands reads in a run what its previous
    run wrote, so every tile of a segment must have its previous runs done by the first one's call.
    Taking the earliest-ending segment first brings every work that runs a segment to it before it
    runs, so a device needs one session per segment of the stage. The works of a stage read only
    what came before it, so any order that keeps each work's own gives the same values."""
    position = {name: i for i, name in enumerate(graph.nodes)}
    ends = lambda nodes: position[nodes[-1]] if nodes else -1  # noqa: E731
    pending, order = [list(tasks) for tasks in works], []
    while any(pending):
        nodes = min((tasks[0].nodes for tasks in pending if tasks), key=ends)
        order += [tasks.pop(0) for tasks in pending if tasks and tasks[0].nodes == nodes]
    return order


def _tasks(graph: Graph, nodes: list[str], work: Work, stage: int, keep: set[str]) -> list[Task]:
    """The tasks of one `Work`: one backend call, or for a tile that reuses bands, one per run of
    nodes up to each reused map, so the bands lie in its canvas beside what it computed there
    before the next run reads it. A tile also keeps its regions of the maps in `keep` (the next
    stage reuses them)."""
    outputs = work.outputs
    regions = list(outputs.values())
    if regions and all(isinstance(r, Box) for r in regions):
        tiles = work_regions(graph, nodes, outputs, work.reused)
        made = {**outputs, **{t: tiles[t].out for t in keep if t in tiles}}
        runs: list[list[str]] = [[]]
        for name in tiles:
            runs[-1].append(name)
            if name in work.reused:
                runs.append([])
        users = graph.consumers()
        tasks, later = [], set(tiles)
        for run in filter(None, runs):
            later -= set(run)
            read_later = {n: tiles[n].out for n in run if any(u in later for u in users[n])}
            mine = {t: made[t] for t in run if t in made}
            tasks.append(Task(run, {n: tiles[n] for n in run}, read_later | mine))
        return tasks
    if any(isinstance(r, FeatureRange) for r in regions):
        try:
            ((name, features),) = outputs.items()
            region = feature_region(graph[name], features)
        except (ValueError, RegionError):
            raise PlanError(f"stage {stage}: feature ranges are only supported for a stage of one "
                            "linear node") from None  # fmt: skip
        return [Task([name], {name: region}, dict(outputs))]
    return [Task(list(nodes), {}, dict(outputs))]


def segments(program: Program, graph: Graph) -> list[SegmentCall]:
    """Every backend call the party's tasks make each frame, with the region of each tensor they
    read as the party holds it (its canvas), so a backend can build them before the first frame."""
    calls = []
    for step in program.steps:
        for task in step.tasks:
            inside = set(task.nodes)
            sources = {s: program.canvases[s] for n in task.nodes for s in graph[n].inputs if s not in inside}
            calls.append(SegmentCall(tuple(task.nodes), sources, task.regions, tuple(task.outputs)))
    return calls


def stage_name(stage: int, stages: int) -> str:
    if stage < 0:
        return "sending the frame's input"
    return "returning the model's output" if stage >= stages else f"stage {stage}"


def prune_weights(graph: Graph, program: Program) -> Graph:
    """The graph with only the weights this party's program needs: no parameters for nodes it
    never runs, and of a split linear layer only the rows of its features, in whole chunks of the
    exact kernel's calls (`weight_rows` says which, for the linear kernels)."""
    nodes = {}
    for name, node in graph.nodes.items():
        if name not in program.nodes:
            node = replace(node, params={})
        elif isinstance(features := program.canvases.get(name), FeatureRange):
            node = linear_share(node, features)
        nodes[name] = node
    return replace(graph, nodes=nodes)


# -- running a frame ---------------------------------------------------------------------------

Observer = Callable[[int, dict[str, Tile]], None]  # (stage, every tile a task computed)


@dataclass
class Runner:
    """Plays one party's program frame by frame, recording what it does on one clock."""

    graph: Graph
    program: Program
    backend: Backend
    transport: Transport
    timeout_s: float
    rank: int = 0
    clock: Callable[[], float] = time.perf_counter
    events: list[Event] = field(default_factory=list)
    observe: Observer | None = None
    stop: threading.Event | None = None  # set: wait for nothing more (the run is ending)

    def frame(self, index: int, x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Run frame `index` (the coordinator passes its input); returns the whole tensors held.

        Call it inside `backend.active()`: the backend's flags are process-wide, so the caller sets
        them once for all the frames (and threads) it runs.
        """
        store: dict[str, Tile] = {}
        if x is not None:
            store[self.graph.input] = (WHOLE, x)
        with torch.inference_mode():
            for step in self.program.steps:
                self._step(index, step, store)
        return {t: v for t, (r, v) in store.items() if r == WHOLE}

    def _step(self, frame: int, step: ProgramStep, store: dict) -> None:
        sends = [self._send(frame, step.stage, m, store) for m in step.send_before]
        before = [self._recv(frame, step.stage, m) for m in step.recv_before]
        after = [self._recv(frame, step.stage, m) for m in step.recv_after]
        for pending in before:
            self._arrive(frame, step.stage, pending, store)
        for task in step.tasks:
            start = self.clock()
            done = self._compute(task, store)
            self._record("compute", frame, step.stage, start)
            if self.observe is not None:  # what it computed, not the canvases it read
                self.observe(step.stage, {n: done[n] for n in task.nodes if n in done})
            for tensor, region in task.outputs.items():
                value = part_of(done[tensor], region, self.graph[tensor])  # it may have made more
                _put(store, tensor, region, value, self.program.canvases[tensor], self.graph)
        sends += [self._send(frame, step.stage, m, store) for m in step.send_after]
        for pending in after:
            self._arrive(frame, step.stage, pending, store)
        for message, handle, start, nbytes in sends:
            self._wait(handle, frame, step.stage, message, "send to")
            self._record("send", frame, step.stage, start, nbytes, message.peer)

    def _tag(self, frame: int, message: Message) -> int:
        return (frame * self.program.messages + message.index) % (2**31 - 1)

    def _send(self, frame: int, stage: int, message: Message, store: dict):
        tensor = _cut(store, message.tensor, message.region, self.graph)
        start = self.clock()
        handle = self._post(self.transport.send, tensor, frame, stage, message, "send to")
        return message, handle, start, tensor.numel() * tensor.element_size()

    def _recv(self, frame: int, stage: int, message: Message):
        buffer = torch.empty(message.shape)
        handle = self._post(self.transport.recv, buffer, frame, stage, message, "receive from")
        return message, buffer, handle

    def _post(self, post, tensor: torch.Tensor, frame: int, stage: int, message: Message, verb: str
              ) -> Handle:  # fmt: skip
        try:
            return post(tensor, message.peer, self._tag(frame, message))
        except Exception as exc:  # the pair to that peer is already closed
            raise self._failure(exc, frame, stage, message, verb) from None

    def _arrive(self, frame: int, stage: int, pending, store: dict) -> None:
        message, buffer, handle = pending
        start = self.clock()
        self._wait(handle, frame, stage, message, "receive from")
        self._record("recv", frame, stage, start, buffer.numel() * buffer.element_size(), message.peer)
        _put(store, message.tensor, message.region, buffer, self.program.canvases[message.tensor],
             self.graph)  # fmt: skip

    def _wait(self, handle: Handle, frame: int, stage: int, message: Message, verb: str) -> None:
        if self.stop is not None and self.stop.is_set():
            said = f"{self.program.party} stopped before it could {verb} {message.peer} '{message.tensor}'"
            raise TransferError(f"{said}: the run is ending", message.peer, stage, frame)
        try:
            handle.wait(self.timeout_s)
        except Exception as exc:  # gloo raises RuntimeError for a closed pair or a timeout
            raise self._failure(exc, frame, stage, message, verb) from None

    def _failure(self, exc: Exception, frame: int, stage: int, message: Message, verb: str) -> TransferError:
        why = failure_reason(exc, self.timeout_s)
        return TransferError(f"{self.program.party} could not {verb} {message.peer} '{message.tensor}' "
                             f"({stage_name(stage, self.program.stages)}, frame {frame}): {why}",
                             message.peer, stage, frame)  # fmt: skip

    def _record(self, kind: str, frame: int, stage: int, start: float, nbytes: int = 0,
                peer: str | None = None) -> None:  # fmt: skip
        self.events.append(Event(self.program.party, self.rank, kind, frame, stage, start, self.clock(),
                                 nbytes, peer))  # fmt: skip

    def _compute(self, task: Task, store: dict[str, Tile]) -> dict[str, Tile]:
        return run_segment(self.graph, task.nodes, store, self.backend, task.regions, list(task.outputs))


def _cut(store: Mapping[str, Tile], tensor: str, region: Region, graph: Graph) -> torch.Tensor:
    """The part `region` of a held tensor, contiguous for the wire."""
    try:
        return part_of(store[tensor], region, graph[tensor]).contiguous()
    except RegionError:
        have = store[tensor][0]
        raise PlanError(f"'{tensor}': {region} is sent from a party that holds only {have}") from None


def _put(store: dict[str, Tile], tensor: str, region: Region, value: torch.Tensor, canvas: Region,
         graph: Graph) -> None:  # fmt: skip
    """Place a received or computed part of `tensor` in the party's canvas for it."""
    if region == canvas:
        store[tensor] = (region, value)
        return
    if tensor not in store:
        store[tensor] = (canvas, torch.empty(canvas.shape(graph[tensor].shape)))
    whole = store[tensor][1]
    whole[index_in(region, canvas, graph[tensor])] = value
