"""A plan: what every device computes, in which order, and what moves between devices.

Schemes produce plans, the cost model and the simulator predict them, the runtime executes them.
A plan is a list of *stages*. A stage is one step of the data flow: a run of graph nodes, the
devices that share it, the region of the stage's output tensors each device produces (`Work`),
and the transfers that bring inputs to those devices and outputs back to the *hub* (the device or
coordinator that holds the frames and gathers results). Stages with the same `group` run one after
the other on the same frame; different groups form a pipeline and work on different frames at once.
`frames_in_flight` says how many frames the plan keeps in flight together: one per pipeline group,
or more where a scheme overlaps frames (HALP's tasks per batch).

Regions are `suite.regions` types in memory and JSON lists in the file (`[h0, h1, w0, w1]`,
`[f0, f1]`, `null`); `plan_to_dict` and `load_plan_dict` are the only places that convert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from suite.errors import UserError
from suite.graph import Graph
from suite.regions import (
    WHOLE,
    Box,
    Region,
    RegionError,
    Whole,
    full_part,
    normalized,
    plan_regions,
    region_from_json,
    region_size,
    segment_inputs,
)  # fmt: skip

SCHEMA_VERSION = 2  # 2: frames_in_flight
COORDINATOR = "coordinator"


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
class Layout:
    """What a scheme decides: the hub that holds the frames, the stages, the frames it keeps in
    flight together (None: one per pipeline group), and the choices it made, for people to read."""

    hub: str
    stages: list[Stage]
    options: dict
    frames_in_flight: int | None = None


@dataclass
class Plan:
    scheme: str
    model: str
    input_shape: list[int]
    fleet: str
    devices: list[str]
    hub: str
    stages: list[Stage]
    frames_in_flight: int = 1
    predicted: Predicted | None = None
    options: dict = field(default_factory=dict)  # the choices the scheme made, for people to read
    planning_time_s: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return plan_to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @property
    def digest(self) -> str:
        """Hash of what is executed (not of predictions), to trace results back to their plan."""
        what = {k: v for k, v in self.to_dict().items() if k not in ("predicted", "planning_time_s")}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


# -- building blocks the schemes share ---------------------------------------------------------


def tensor_bytes(graph: Graph, tensor: str, region: Region) -> int:
    """Bytes of `region` of a tensor (all channels)."""
    node = graph[tensor]
    return region_size(region, node) * node.itemsize


def work_inputs(graph: Graph, nodes: Sequence[str], outputs: dict[str, Region]) -> dict[str, Region]:
    """Regions of tensors from outside the stage that a device needs to produce `outputs`: tiles
    read boxes of their inputs; anything else reads its inputs whole."""
    if all(isinstance(r, Box) for r in outputs.values()):
        regions = plan_regions(graph, nodes, outputs)
        boxes = segment_inputs(graph, nodes, regions)
        return {t: normalized(b, graph[t]) for t, b in boxes.items()}
    inside = set(nodes)
    return {src: WHOLE for n in nodes for src in graph[n].inputs if src not in inside}


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
    if any(isinstance(r, Whole) for r in regions):
        if len(regions) != 1:
            raise PlanError(f"{where}: a device computes it whole while others share it")
        return
    node = graph[tensor]
    whole = full_part(node)
    if any(type(r) is not type(whole) or not whole.contains(r) for r in regions):
        raise PlanError(f"{where}: a region lies outside its {'x'.join(map(str, node.shape))} output")
    overlap = any(a.intersects(b) for i, a in enumerate(regions) for b in regions[i + 1:])
    if overlap or sum(region_size(r, node) for r in regions) != region_size(whole, node):
        raise PlanError(f"{where}: device regions do not cover its {'x'.join(map(str, node.shape))} "
                        "output exactly once")  # fmt: skip


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


def plan_to_dict(plan: Plan) -> dict:
    """The plan as its JSON object: regions in their JSON form."""
    data = asdict(plan)
    for stage, out in zip(plan.stages, data["stages"]):
        for work, w in zip(stage.work, out["work"]):
            w["outputs"] = {t: r.to_json() for t, r in work.outputs.items()}
            w["inputs"] = {t: r.to_json() for t, r in work.inputs.items()}
        for transfer, t in zip(stage.transfers, out["transfers"]):
            t["region"] = transfer.region.to_json()
    return data


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
                        work=[Work(w["device"], _regions(w["outputs"]), _regions(w["inputs"]))
                              for w in s["work"]],
                        transfers=[Transfer(**{**t, "region": region_from_json(t["region"])})
                                   for t in s["transfers"]],
                        overlap=s["overlap"])
                  for s in data["stages"]]  # fmt: skip
        predicted = data.get("predicted")
        if predicted is not None:
            predicted = Predicted(**{**predicted,
                                     "stages": [StageCost(**c) for c in predicted["stages"]]})  # fmt: skip
        return Plan(**{**data, "stages": stages, "predicted": predicted})
    except RegionError as exc:
        raise PlanError(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise PlanError(f"{path}: malformed plan ({exc}); re-create it with `suite plan`") from None


def _regions(data: dict) -> dict[str, Region]:
    return {tensor: region_from_json(value) for tensor, value in data.items()}
