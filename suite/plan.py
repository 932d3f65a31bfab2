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
`graph` says whose names the nodes are (`Graph.source`): schemes plan on the model graph ("torch"
for a module, "onnx" for an ONNX file); `suite.runtime.lowering` moves a plan onto the graph a
backend executes ("onnxruntime").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from suite.errors import UserError
from suite.fleet import MAX_DEVICES
from suite.graph import Graph, Node
from suite.regions import (
    WHOLE,
    Box,
    FeatureRange,
    NodeRegion,
    Region,
    RegionError,
    Whole,
    as_part,
    full_part,
    hull_of,
    normalized,
    plan_regions,
    region_from_json,
    region_size,
    reuse_regions,
    segment_inputs,
)  # fmt: skip
from suite.schema import Strict, read_json, shown, validate, write_atomically

if TYPE_CHECKING:
    from suite.fleet import Fleet


SCHEMA_VERSION = 4  # 2: frames_in_flight; 3: graph; 4: continues, reused
COORDINATOR = "coordinator"


class PlanError(UserError):
    """A plan file or plan that cannot be used (names the field, stage or device)."""


@dataclass
class Work:
    """The part of a stage one device computes: the regions of the stage's outputs it produces,
    and the regions of tensors from outside the stage it reads to do so. `reused`: in a stage that
    continues the previous one (DeepThings' data reuse), per map inside the stage, the bands of it
    that others computed there and this device takes instead of computing them (`regions.reuse_bands`)."""

    device: str
    outputs: dict[str, Region]
    inputs: dict[str, Region] = field(default_factory=dict)
    reused: dict[str, list[Box]] = field(default_factory=dict)


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
    continues: bool = False  # it computes the rest of the previous stage's outputs, the same nodes
    keeps: bool = False  # its outputs stay on the devices that computed them (MoDNN's BODP), not gathered

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(w.device for w in self.work))

    @property
    def outputs(self) -> list[str]:
        return list(self.work[0].outputs)

    def brings(self, transfer: Transfer) -> bool:
        """Whether `transfer` brings a device what it reads before it computes (tensors from before
        the stage; in a continuing stage, the bands it reuses too), rather than carrying what a
        device computed here on to the hub (the outputs; bands others will reuse)."""
        inside = transfer.tensor in self.nodes
        return not inside or (self.continues and transfer.tensor not in self.outputs)


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
    tiled_share: float = 0.0  # of the model's MACs, computed in tiles (stages that cut a map)


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
    graph: str  # whose names its nodes are (`Graph.source`); `suite.runtime.lowering` moves it to another
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


def work_regions(
    graph: Graph, nodes: Sequence[str], outputs: dict[str, Region], reused: dict[str, list[Box]] | None = None
) -> dict[str, NodeRegion]:
    """What a device computes of each node to produce `outputs` (boxes), taking the `reused` bands
    instead of computing them."""
    if not reused:
        return plan_regions(graph, nodes, outputs)
    regions, taken = reuse_regions(graph, nodes, outputs, reused)
    for tensor, bands in reused.items():
        if tensor not in regions:
            raise PlanError(f"it reuses bands of '{tensor}', which its outputs do not need")
        used = {k for k, _ in taken.get(tensor, ())}
        wasted = next((band for k, band in enumerate(bands) if k not in used), None)
        if wasted is not None:
            need = hull_of([regions[tensor].out, *bands], graph[tensor])
            raise PlanError(f"its reused {wasted} of '{tensor}' is not an edge band of the {need} it needs "
                            "there")  # fmt: skip
    return regions


def work_inputs(
    graph: Graph, nodes: Sequence[str], outputs: dict[str, Region], reused: dict[str, list[Box]] | None = None
) -> dict[str, Region]:
    """Regions of tensors from outside the stage that a device needs to produce `outputs`: tiles
    read boxes of their inputs; anything else reads its inputs whole."""
    if all(isinstance(r, Box) for r in outputs.values()):
        regions = work_regions(graph, nodes, outputs, reused)
        boxes = segment_inputs(graph, nodes, regions)
        return {t: normalized(b, graph[t]) for t, b in boxes.items()}
    inside = set(nodes)
    return {src: WHOLE for n in nodes for src in graph[n].inputs if src not in inside}


def hub_transfers(graph: Graph, work: Sequence[Work], hub: str, have: dict[str, set[str]], gather: bool = True
                  ) -> list[Transfer]:  # fmt: skip
    """Transfers through the hub: each device's inputs from the hub, its outputs back to it
    (unless not `gather`).

    `have` maps a device to the tensors it already holds whole (the hub holds every tensor
    a stage gathered); a device reads those locally. Inputs the hub does not hold are left out
    (`kept_transfers` brings them).
    """
    transfers = []
    for w in work:
        for tensor, region in w.inputs.items():
            if tensor not in have.get(w.device, set()) and tensor in have[hub]:
                transfers.append(Transfer(hub, w.device, tensor, region,
                                          tensor_bytes(graph, tensor, region)))  # fmt: skip
    for w in work if gather else ():
        for tensor, region in w.outputs.items():
            if w.device != hub:
                transfers.append(Transfer(w.device, hub, tensor, region,
                                          tensor_bytes(graph, tensor, region)))  # fmt: skip
    return [t for t in transfers if t.src != t.dst]


def kept_transfers(graph: Graph, work: Sequence[Work], hub: str, kept: dict[str, list[tuple[Stage, Work]]]
                   ) -> list[Transfer]:  # fmt: skip
    """The rows each device reads of maps that earlier stages kept on their devices (MoDNN's BODP),
    and lacks: from the device that computed them to the hub after that stage (appended to its
    transfers, once per region), then from the hub to the reader before this one. Returns the
    transfers from the hub. A device whose rows read only padding takes the empty box from the
    device whose strip ends there, so that it holds the tensor it reads."""
    relayed: dict[str, list[Box]] = {}  # what this stage's makers already send the hub
    from_hub = []
    for w in work:
        for tensor, region in w.inputs.items():
            makers = kept.get(tensor, [])
            wanted = as_part(region, graph[tensor])
            if makers and wanted.area == 0:
                makers = [next((s, m) for s, m in makers if m.outputs[tensor].contains(wanted))]
            for stage, maker in makers:
                part = wanted if wanted.area == 0 else _overlap(wanted, maker.outputs[tensor])
                if part is None or maker.device == w.device:
                    continue
                size = tensor_bytes(graph, tensor, part)
                if maker.device != hub:
                    sent = relayed.setdefault(tensor, [])
                    if not any(r.contains(part) for r in sent):
                        stage.transfers.append(Transfer(maker.device, hub, tensor, part, size))
                        sent.append(part)
                if w.device != hub:
                    from_hub.append(Transfer(hub, w.device, tensor, part, size))
    return from_hub


def _overlap(a: Region, b: Region) -> Box | None:
    """The box two boxes share (None: nothing, or not boxes)."""
    if not (isinstance(a, Box) and isinstance(b, Box) and a.intersects(b)):
        return None
    return Box(max(a.h0, b.h0), min(a.h1, b.h1), max(a.w0, b.w0), min(a.w1, b.w1))


def build_stages(graph: Graph, hub: str, steps: Sequence[tuple], keep: bool = False) -> list[Stage]:
    """Stages from (group, nodes, [(device, outputs), ...]) steps, with inputs and hub transfers.

    A device may appear more than once in a step (several tiles). The frame starts at the hub;
    every stage's outputs are gathered there. A step (group, nodes, [(device, outputs, reused),
    ...], True) continues the one before it (`Stage.continues`): its devices take the `reused`
    bands from what they computed in that step, or else through the hub (`band_transfers`).
    With `keep` (MoDNN's BODP), a step of boxes, one per device, that does not make the model's
    output keeps its outputs where they were computed (`Stage.keeps`); later devices take the rows
    of them they lack through the hub (`kept_transfers`).
    """
    have = {hub: {graph.input}}
    kept: dict[str, list[tuple[Stage, Work]]] = {}
    stages: list[Stage] = []
    for index, (group, nodes, assignment, *continues) in enumerate(steps):
        work = []
        for device, outputs, *reused in assignment:
            bands = dict(reused[0]) if reused else {}
            work.append(Work(device, outputs, work_inputs(graph, nodes, outputs, bands), bands))
        keeps = (keep and not continues and len({w.device for w in work}) == len(work)
                 and all(isinstance(r, Box) for w in work for r in w.outputs.values())
                 and not set(work[0].outputs) & set(graph.outputs))  # fmt: skip
        transfers = kept_transfers(graph, work, hub, kept) + hub_transfers(graph, work, hub, have, not keeps)
        stage = Stage(
            index,
            group,
            list(nodes),
            work,
            transfers,
            continues=bool(continues and continues[0]),
            keeps=keeps,
        )
        if stage.continues:
            last = stages[-1]
            to_hub, from_hub = band_transfers(graph, last.work, work, nodes, hub)
            last.transfers = _between(last, to_hub)
            stage.transfers = _between(stage, from_hub)
        stages.append(stage)
        if keeps:
            kept.update({t: [(stage, w) for w in work] for t in work[0].outputs})
        else:
            have.setdefault(hub, set()).update(work[0].outputs)
    return stages


def _between(stage: Stage, transfers: list[Transfer]) -> list[Transfer]:
    """The stage's transfers with `transfers` after those it brings and before the rest."""
    return ([t for t in stage.transfers if stage.brings(t)] + transfers
            + [t for t in stage.transfers if not stage.brings(t)])  # fmt: skip


def band_transfers(graph: Graph, first: Sequence[Work], then: Sequence[Work], nodes: Sequence[str], hub: str
                   ) -> tuple[list[Transfer], list[Transfer]]:  # fmt: skip
    """The transfers that bring each device of a continuing stage (`then`) the bands it reuses,
    from the device of the previous stage (`first`) that computed each: none where its own device
    did, else to the hub after that stage and from the hub before this one (as DeepThings'
    gateway relays them). Returns (to the hub, from the hub)."""
    computed = [(w.device, work_regions(graph, nodes, w.outputs, w.reused)) for w in first]
    to_hub, from_hub = [], []
    for w in then:
        for tensor, bands in w.reused.items():
            for band in bands:
                makers = [d for d, regions in computed
                          if tensor in regions and regions[tensor].out.contains(band)]  # fmt: skip
                if not makers:
                    raise PlanError(f"device {w.device} reuses {band} of '{tensor}', which no device of the "
                                    "stage before computes")  # fmt: skip
                if w.device in makers:
                    continue
                size = tensor_bytes(graph, tensor, band)
                if hub not in makers:
                    to_hub.append(Transfer(makers[0], hub, tensor, band, size))
                if w.device != hub:
                    from_hub.append(Transfer(hub, w.device, tensor, band, size))
    return to_hub, from_hub


# -- validation and files ---------------------------------------------------------------------


def check_plan(plan: Plan, graph: Graph, fleet: Fleet) -> None:
    """A plan the runtime, the cost model and the simulator can trust, or one line saying what is
    wrong and where (stage, device, tensor).

    Checked: its devices are the fleet's; each stage's nodes are the model's, in order, computed
    once; each stage's outputs are covered exactly once by regions inside them; every tensor a
    stage reads was gathered at the hub by an earlier stage, or kept on its devices (`Stage.keeps`);
    each device's inputs follow from its outputs' regions; every transfer moves a region its sender
    holds, of the size it declares, and delivers what the receiving device reads; every output of a
    stage that does not keep it reaches the hub; the model's outputs are computed.
    """
    if not plan.stages:
        raise PlanError("the plan has no stages")
    known = {d.name for d in fleet.devices}
    for device in plan.devices:
        if device not in known:
            raise PlanError(f"the plan uses device '{device}', which fleet '{fleet.name}' does not have")
    parties = {COORDINATOR, *plan.devices}
    if plan.hub not in parties:
        raise PlanError(f"the plan's hub '{plan.hub}' is neither the coordinator nor one of its devices")
    order = {n: i for i, n in enumerate(graph.nodes)}
    gathered = {graph.input}  # whole tensors the hub holds
    kept: set[str] = set()  # tensors left on the devices that computed them
    computed: set[str] = set()
    held: dict[str, dict[str, list[Region]]] = {p: {} for p in parties}
    held[plan.hub][graph.input] = [WHOLE]
    for k, stage in enumerate(plan.stages):
        at = f"stage {k}"
        if stage.index != k:
            raise PlanError(f"{at}: its index says {stage.index}; stages are numbered in order from 0")
        unknown = [n for n in stage.nodes if n not in graph.nodes]
        if unknown:
            raise PlanError(f"{at}: node '{unknown[0]}' is not in model {graph.name}")
        if [order[n] for n in stage.nodes] != sorted(order[n] for n in set(stage.nodes)):
            raise PlanError(f"{at}: its nodes are not in the model's order, or repeat one")
        continued = k + 1 < len(plan.stages) and plan.stages[k + 1].continues
        if stage.continues:
            before = plan.stages[k - 1] if k else None
            if before is None or before.nodes != stage.nodes or before.outputs != stage.outputs:
                raise PlanError(f"{at}: it continues the stage before it, so it must follow one with the "
                                "same nodes and outputs")  # fmt: skip
            if continued:
                raise PlanError(f"{at}: a continuing stage cannot be continued again")
        else:
            again = sorted(computed & set(stage.nodes), key=order.get)
            if again:
                raise PlanError(f"{at}: node '{again[0]}' is computed by an earlier stage too")
        computed.update(stage.nodes)
        inside = set(stage.nodes)
        for node in stage.nodes:
            for src in graph[node].inputs:
                if src not in inside and src not in gathered and src not in kept:
                    raise PlanError(f"{at}: node '{node}' reads '{src}', which no earlier stage gathers at "
                                    "the hub (is a stage missing?)")  # fmt: skip
        outputs = list(stage.work[0].outputs)
        for w in stage.work:
            if w.device not in plan.devices:
                raise PlanError(f"{at}: device '{w.device}' is not one of the plan's devices")
            if list(w.outputs) != outputs:
                raise PlanError(f"{at}, device {w.device}: its outputs {list(w.outputs)} differ from the "
                                f"stage's {outputs}")  # fmt: skip
            if w.reused and not stage.continues:
                raise PlanError(f"{at}, device {w.device}: it reuses bands, which only a stage that "
                                "continues the one before it can")  # fmt: skip
        work = stage.work + (plan.stages[k - 1].work if stage.continues else [])
        for tensor in outputs:
            if tensor not in inside:
                raise PlanError(f"{at}: output '{tensor}' is not one of its nodes")
            if not continued:
                _check_cover(stage, graph, tensor, [w.outputs[tensor] for w in work])
        if stage.keeps and (continued or stage.continues):
            raise PlanError(f"{at}: a stage that keeps its outputs on its devices cannot continue or be "
                            "continued")  # fmt: skip
        _check_transfers(stage, graph, plan.hub, parties, held, gathers=not continued and not stage.keeps)
        if stage.keeps:
            kept.update(outputs)
        elif not continued:
            gathered.update(outputs)
    missing = [o for o in graph.outputs if o not in gathered]
    if missing:
        raise PlanError(f"the plan never gathers the model output '{missing[0]}'")


def _check_transfers(stage: Stage, graph: Graph, hub: str, parties: set[str],
                     held: dict[str, dict[str, list[Region]]], gathers: bool) -> None:  # fmt: skip
    """Play the stage's transfers over what each party holds; see `check_plan`. `gathers`: the hub
    holds the stage's outputs whole after it (unless the next stage continues it)."""
    at = f"stage {stage.index}"

    def move(t: Transfer) -> None:
        where = f"{at}, transfer {t.src} -> {t.dst} of '{t.tensor}'"
        if t.src not in parties or t.dst not in parties or t.src == t.dst:
            raise PlanError(f"{where}: its ends must be two different parties of the plan")
        if t.tensor not in graph.nodes:
            raise PlanError(f"{where}: '{t.tensor}' is not a tensor of model {graph.name}")
        node = graph[t.tensor]
        if not _inside(t.region, node):
            raise PlanError(f"{where}: {t.region} is not a region of its {_dims(node)} tensor")
        if t.bytes != tensor_bytes(graph, t.tensor, t.region):
            raise PlanError(f"{where}: declares {t.bytes} bytes, but {t.region} holds "
                            f"{tensor_bytes(graph, t.tensor, t.region)}")  # fmt: skip
        if not _holds(held[t.src].get(t.tensor, []), t.region, node):
            raise PlanError(f"{where}: {t.src} does not hold {t.region} of it at this point")
        held[t.dst].setdefault(t.tensor, []).append(t.region)

    for t in stage.transfers:
        if stage.brings(t):
            move(t)
    for w in stage.work:
        where = f"{at}, device {w.device}"
        try:
            expected = work_inputs(graph, stage.nodes, w.outputs, w.reused)
        except PlanError as exc:
            raise PlanError(f"{where}: {exc}") from None
        if w.inputs != expected:
            raise PlanError(f"{where}: its inputs {_show(w.inputs)} do not follow from its outputs' regions "
                            f"(they need {_show(expected)})")  # fmt: skip
        reads = list(expected.items()) + [(t, band) for t, bands in w.reused.items() for band in bands]
        for tensor, region in reads:
            if not _holds(held[w.device].get(tensor, []), region, graph[tensor]):
                raise PlanError(f"{where}: reads {region} of '{tensor}', which no transfer brings it")
        for tensor, region in w.outputs.items():
            held[w.device].setdefault(tensor, []).append(region)
        if all(isinstance(r, Box) for r in w.outputs.values()):  # what it computed, for others to reuse
            for name, region in work_regions(graph, stage.nodes, w.outputs, w.reused).items():
                held[w.device].setdefault(name, []).append(region.out)
    for t in stage.transfers:
        if not stage.brings(t):
            move(t)
    for w in stage.work if not stage.keeps else ():
        for tensor, region in w.outputs.items():
            if w.device != hub and region not in held[hub].get(tensor, []):
                raise PlanError(f"{at}, device {w.device}: its {region} of '{tensor}' never reaches the "
                                f"hub ({hub})")  # fmt: skip
    for tensor in stage.outputs if gathers else ():
        held[hub][tensor] = [WHOLE]  # the hub gathers the stage's outputs whole


def _inside(region: Region, node: Node) -> bool:
    whole = full_part(node)
    return isinstance(region, Whole) or (type(region) is type(whole) and whole.contains(region))


def _holds(regions: list[Region], region: Region, node: Node) -> bool:
    """Whether the held `regions` of `node`'s output contain `region`: one of them, or boxes that
    cover it together (a strip and the rows beside it that others computed)."""
    wanted = as_part(region, node)
    held = [as_part(r, node) for r in regions]
    if any(type(have) is type(wanted) and have.contains(wanted) for have in held):
        return True
    boxes = [b for b in held if isinstance(b, Box) and isinstance(wanted, Box) and b.intersects(wanted)]
    if not boxes:
        return False
    # cut `wanted` at every edge of the boxes inside it: each cell must lie in one box
    rows = sorted({wanted.h0, wanted.h1, *(h for b in boxes for h in (b.h0, b.h1)
                                           if wanted.h0 < h < wanted.h1)})  # fmt: skip
    cols = sorted({wanted.w0, wanted.w1, *(w for b in boxes for w in (b.w0, b.w1)
                                           if wanted.w0 < w < wanted.w1)})  # fmt: skip
    return all(any(b.contains(Box(h0, h1, w0, w1)) for b in boxes)
               for h0, h1 in zip(rows, rows[1:]) for w0, w1 in zip(cols, cols[1:]))  # fmt: skip


def _dims(node: Node) -> str:
    return "x".join(map(str, node.shape))


def _show(regions: dict[str, Region]) -> str:
    return "{" + ", ".join(f"{t}: {r}" for t, r in regions.items()) + "}"


def _check_cover(stage: Stage, graph: Graph, tensor: str, regions: list[Region]) -> None:
    where = f"stage {stage.index}, tensor '{tensor}'"
    if any(isinstance(r, Whole) for r in regions):
        if len(regions) != 1:
            raise PlanError(f"{where}: a device computes it whole while others share it")
        return
    node = graph[tensor]
    outside = next((r for r in regions if not _inside(r, node)), None)
    if outside is not None:
        raise PlanError(f"{where}: {outside} is not a region of its {_dims(node)} output")
    features = [r for r in regions if isinstance(r, FeatureRange)]
    if features and node.op != "linear":
        raise PlanError(f"{where}: only a linear layer splits by features ({features[0]})")
    overlap = any(a.intersects(b) for i, a in enumerate(regions) for b in regions[i + 1 :])
    if overlap or sum(region_size(r, node) for r in regions) != region_size(full_part(node), node):
        raise PlanError(f"{where}: device regions do not cover its {_dims(node)} output exactly once")


def save_plan(plan: Plan, path: str | Path) -> None:
    write_atomically(Path(path), plan.to_json())


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    return _plan_from(read_json(path, _PlanFile, PlanError), shown(path))


def plan_to_dict(plan: Plan) -> dict:
    """The plan as its JSON object: regions in their JSON form."""
    data = asdict(plan)
    for stage, out in zip(plan.stages, data["stages"]):
        for work, w in zip(stage.work, out["work"]):
            w["outputs"] = {t: r.to_json() for t, r in work.outputs.items()}
            w["inputs"] = {t: r.to_json() for t, r in work.inputs.items()}
            w["reused"] = {t: [band.to_json() for band in bands] for t, bands in work.reused.items()}
        for transfer, t in zip(stage.transfers, out["transfers"]):
            t["region"] = transfer.region.to_json()
    return data


# -- the plan file's schema: types and bounds, before any meaning is checked ------------------------

MAX_STAGES = 100_000
MAX_BYTES = 2**50  # a petabyte: larger counts are corrupt
JsonRegion = list[int] | None


class _WorkSpec(Strict):
    device: str
    outputs: dict[str, JsonRegion] = Field(min_length=1)
    inputs: dict[str, JsonRegion]
    reused: dict[str, list[list[int]]] = Field(default_factory=dict)


class _TransferSpec(Strict):
    src: str
    dst: str
    tensor: str
    region: JsonRegion
    bytes: int = Field(ge=0, le=MAX_BYTES)


class _StageSpec(Strict):
    index: int = Field(ge=0)
    group: int = Field(ge=0, le=MAX_STAGES)
    nodes: list[str] = Field(min_length=1)
    work: list[_WorkSpec] = Field(min_length=1, max_length=10_000)
    transfers: list[_TransferSpec]
    overlap: bool
    continues: bool = False
    keeps: bool = False


class _StageCostSpec(Strict):
    compute_s: float = Field(allow_inf_nan=False, ge=0)
    comm_s: float = Field(allow_inf_nan=False, ge=0)
    time_s: float = Field(allow_inf_nan=False, ge=0)
    bytes: int = Field(ge=0)
    device_compute_s: dict[str, float]


class _PredictedSpec(Strict):
    latency_s: float = Field(ge=0)
    period_s: float = Field(ge=0)
    throughput_fps: float = Field(ge=0)
    redundancy: float
    stages: list[_StageCostSpec]
    tiled_share: float = Field(default=0.0, ge=0, le=1)


class _PlanFile(Strict):
    schema_version: int
    scheme: str
    model: str
    input_shape: list[int] = Field(min_length=3, max_length=3)
    fleet: str
    devices: list[str] = Field(min_length=1, max_length=MAX_DEVICES)
    hub: str
    stages: list[_StageSpec] = Field(min_length=1, max_length=MAX_STAGES)
    graph: str = Field(pattern="^(torch|onnx|onnxruntime)$")
    frames_in_flight: int = Field(ge=1, le=1024)
    predicted: _PredictedSpec | None = None
    options: dict = Field(default_factory=dict)
    planning_time_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _version_first(cls, data: object) -> object:
        """An old or newer plan says so before any field of it is judged."""
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version')!r}, but this suite reads version "
                             f"{SCHEMA_VERSION}; re-create it with `suite plan`")  # fmt: skip
        return data


def load_plan_dict(data: object, path: str = "plan") -> Plan:
    """A plan from its JSON object (a file's content, or what the coordinator sends workers)."""
    return _plan_from(validate(data, _PlanFile, PlanError, path), path)


def _plan_from(spec: _PlanFile, path: str) -> Plan:
    try:
        stages = [Stage(s.index, s.group, list(s.nodes),
                        [Work(w.device, _regions(w.outputs), _regions(w.inputs), _bands(w.reused))
                         for w in s.work],
                        [Transfer(t.src, t.dst, t.tensor, region_from_json(t.region), t.bytes)
                         for t in s.transfers], s.overlap, s.continues, s.keeps)
                  for s in spec.stages]  # fmt: skip
    except RegionError as exc:
        raise PlanError(f"{path}: {exc}") from None
    predicted = None
    if spec.predicted is not None:
        p = spec.predicted
        predicted = Predicted(p.latency_s, p.period_s, p.throughput_fps, p.redundancy,
                              [StageCost(**c.model_dump()) for c in p.stages], p.tiled_share)  # fmt: skip
    return Plan(
        spec.scheme,
        spec.model,
        list(spec.input_shape),
        spec.fleet,
        list(spec.devices),
        spec.hub,
        stages,
        spec.graph,
        spec.frames_in_flight,
        predicted,
        dict(spec.options),
        spec.planning_time_s,
    )


def _regions(data: dict) -> dict[str, Region]:
    return {tensor: region_from_json(value) for tensor, value in data.items()}


def _bands(data: dict) -> dict[str, list[Box]]:
    """Reused bands from their JSON form: each a box [h0, h1, w0, w1]."""
    bands = {tensor: [region_from_json(value) for value in values] for tensor, values in data.items()}
    for tensor, regions in bands.items():
        if not all(isinstance(r, Box) for r in regions):
            raise RegionError(f"a reused band of '{tensor}' is not a box [h0, h1, w0, w1]")
    return bands
