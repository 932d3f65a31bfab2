"""A plan: what every device computes, in which order, and what moves between devices.

Schemes produce plans, the cost model and the simulator predict them, the runtime executes them.
A plan is a list of *stages*. A stage is one step of the data flow: a run of graph nodes, the
devices that share it, the region of the stage's output tensors each device produces (`Work`),
and the transfers that bring inputs to those devices and outputs back to the *hub* (the device or
coordinator that holds the frames and gathers results). Stages with the same `group` run one after
the other on the same frame; different groups form a pipeline and work on different frames at once.

Regions are JSON lists: `[h0, h1, w0, w1]` (a box of a feature map), `[f0, f1]` (a range of a
linear layer's output features), or `null` (the whole tensor).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from suite.errors import UserError
from suite.graph import Graph
from suite.regions import Box, full_box, plan_regions, segment_inputs

SCHEMA_VERSION = 1
COORDINATOR = "coordinator"

Region = list[int] | None


class PlanError(UserError):
    """A plan file or plan that cannot be used (names the field, stage or device)."""


@dataclass
class Work:
    """The part of a stage one device computes: the regions of the stage's outputs it produces,
    and the regions of tensors from outside the stage it reads to do so."""

    device: str
    outputs: dict[str, Region]
    inputs: dict[str, Region] = field(default_factory=dict)


@dataclass
class Transfer:
    src: str
    dst: str
    tensor: str
    region: Region
    bytes: int


@dataclass
class Stage:
    index: int
    group: int
    nodes: list[str]
    work: list[Work]
    transfers: list[Transfer] = field(default_factory=list)
    overlap: bool = False  # a device starts as soon as its own inputs arrive (HALP)

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(w.device for w in self.work))

    @property
    def outputs(self) -> list[str]:
        return list(self.work[0].outputs)


@dataclass
class StageCost:
    compute_s: float  # the slowest device's compute
    comm_s: float
    time_s: float
    bytes: int
    device_compute_s: dict[str, float]


@dataclass
class Predicted:
    latency_s: float
    period_s: float
    throughput_fps: float
    redundancy: float
    stages: list[StageCost]


@dataclass
class Plan:
    scheme: str
    model: str
    input_shape: list[int]
    fleet: str
    devices: list[str]
    hub: str
    stages: list[Stage]
    predicted: Predicted | None = None
    options: dict = field(default_factory=dict)
    planning_time_s: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @property
    def digest(self) -> str:
        """Hash of what is executed (not of predictions), to trace results back to their plan."""
        what = {k: v for k, v in self.to_dict().items() if k not in ("predicted", "planning_time_s")}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


# -- building blocks the schemes share ---------------------------------------------------------


def box_region(box: Box) -> Region:
    return [box.h0, box.h1, box.w0, box.w1]


def region_box(region: Region, graph: Graph, tensor: str) -> Box:
    return full_box(graph[tensor]) if region is None else Box(*region)


def region_shape(graph: Graph, tensor: str, region: Region) -> tuple[int, ...]:
    """Shape of `region` of a tensor (all channels, the batch dimension included)."""
    shape = graph[tensor].shape
    if region is None:
        return tuple(shape)
    if len(region) == 2:
        return (*shape[:-1], region[1] - region[0])
    return (*shape[:2], region[1] - region[0], region[3] - region[2])


def tensor_bytes(graph: Graph, tensor: str, region: Region) -> int:
    """Bytes of `region` of a tensor (all channels)."""
    return math.prod(region_shape(graph, tensor, region)) * graph[tensor].itemsize


def work_inputs(graph: Graph, nodes: Sequence[str], outputs: dict[str, Region]) -> dict[str, Region]:
    """Regions of tensors from outside the stage that a device needs to produce `outputs`."""
    if all(r is not None and len(r) == 4 for r in outputs.values()):
        requested = {t: Box(*r) for t, r in outputs.items()}
        regions = plan_regions(graph, nodes, requested)
        boxes = segment_inputs(graph, nodes, regions)
        return {t: None if b == full_box(graph[t]) else box_region(b) for t, b in boxes.items()}
    inside = set(nodes)
    return {src: None for n in nodes for src in graph[n].inputs if src not in inside}


def hub_transfers(graph: Graph, work: Sequence[Work], hub: str, have: dict[str, set[str]]
                  ) -> list[Transfer]:  # fmt: skip
    """Transfers through the hub: each device's inputs from the hub, its outputs back to it.

    `have` maps a device to the tensors it already holds whole (the hub holds every tensor
    a stage gathered); a device reads those locally.
    """
    transfers = []
    for w in work:
        for tensor, region in w.inputs.items():
            if tensor not in have.get(w.device, set()):
                transfers.append(Transfer(hub, w.device, tensor, region,
                                          tensor_bytes(graph, tensor, region)))  # fmt: skip
    for w in work:
        for tensor, region in w.outputs.items():
            if w.device != hub:
                transfers.append(Transfer(w.device, hub, tensor, region,
                                          tensor_bytes(graph, tensor, region)))  # fmt: skip
    return [t for t in transfers if t.src != t.dst]


def build_stages(graph: Graph, hub: str,
                 steps: Sequence[tuple[int, Sequence[str], Sequence[tuple[str, dict[str, Region]]]]]
                 ) -> list[Stage]:  # fmt: skip
    """Stages from (group, nodes, [(device, outputs), ...]) steps, with inputs and hub transfers.

    A device may appear more than once in a step (several tiles). The frame starts at the hub;
    every stage's outputs are gathered there.
    """
    have = {hub: {graph.input}}
    stages = []
    for index, (group, nodes, assignment) in enumerate(steps):
        work = [Work(device, outputs, work_inputs(graph, nodes, outputs)) for device, outputs in assignment]
        stages.append(Stage(index, group, list(nodes), work, hub_transfers(graph, work, hub, have)))
        have.setdefault(hub, set()).update(work[0].outputs)
    return stages


# -- validation and files ---------------------------------------------------------------------


def check_plan(plan: Plan, graph: Graph) -> None:
    """Every stage's devices cover each of its output tensors exactly once; every node is computed."""
    computed = {graph.input}
    for stage in plan.stages:
        unknown = [n for n in stage.nodes if n not in graph.nodes]
        if unknown:
            raise PlanError(f"stage {stage.index}: node '{unknown[0]}' is not in model {graph.name}")
        for tensor in stage.outputs:
            if tensor not in stage.nodes:
                raise PlanError(f"stage {stage.index}: output '{tensor}' is not one of its nodes")
            _check_cover(stage, graph, tensor, [w.outputs.get(tensor, False) for w in stage.work])
        computed.update(stage.nodes)
    missing = [o for o in graph.outputs if o not in computed]
    if missing:
        raise PlanError(f"plan never computes the model output '{missing[0]}'")


def _check_cover(stage: Stage, graph: Graph, tensor: str, regions: list) -> None:
    where = f"stage {stage.index}, tensor '{tensor}'"
    if any(r is False for r in regions):
        raise PlanError(f"{where}: not every device's work lists it")
    if any(r is None for r in regions):
        if len(regions) != 1:
            raise PlanError(f"{where}: a device computes it whole while others share it")
        return
    node = graph[tensor]
    if all(len(r) == 2 for r in regions):
        spans = sorted(regions)
        cover = spans[0][0] == 0 and spans[-1][1] == node.shape[-1]
        if not cover or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
            raise PlanError(f"{where}: feature ranges {spans} do not cover 0..{node.shape[-1]} once")
        return
    boxes = [Box(*r) for r in regions]
    whole = full_box(node)
    overlap = any(_intersects(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    if overlap or any(not whole.contains(b) for b in boxes) or sum(b.area for b in boxes) != whole.area:
        raise PlanError(f"{where}: device boxes do not cover the {whole.height}x{whole.width} map "
                        "exactly once")  # fmt: skip


def _intersects(a: Box, b: Box) -> bool:
    return a.h0 < b.h1 and b.h0 < a.h1 and a.w0 < b.w1 and b.w0 < a.w1


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write atomically, so an interrupted run never leaves half a plan behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(plan.to_json())
    tmp.replace(path)


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"plan file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable JSON plan ({exc})") from None
    return load_plan_dict(data, str(path))


def load_plan_dict(data: object, path: str = "plan") -> Plan:
    """A plan from its JSON object (a file's content, or what the coordinator sends workers)."""
    if not isinstance(data, dict):
        raise PlanError(f"{path}: a plan is a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PlanError(f"{path}: schema_version {version!r}, but this suite reads version "
                        f"{SCHEMA_VERSION}; re-create it with `suite plan`")  # fmt: skip
    try:
        stages = [Stage(index=s["index"], group=s["group"], nodes=s["nodes"],
                        work=[Work(**w) for w in s["work"]],
                        transfers=[Transfer(**t) for t in s["transfers"]], overlap=s["overlap"])
                  for s in data["stages"]]  # fmt: skip
        predicted = data.get("predicted")
        if predicted is not None:
            predicted = Predicted(**{**predicted,
                                     "stages": [StageCost(**c) for c in predicted["stages"]]})  # fmt: skip
        return Plan(**{**data, "stages": stages, "predicted": predicted})
    except (KeyError, TypeError) as exc:
        raise PlanError(f"{path}: malformed plan ({exc}); re-create it with `suite plan`") from None
