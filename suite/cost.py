"""The analytical cost model: a plan's latency, period, throughput and redundancy on a fleet.

PICO's formulas, applied to every scheme alike:
- a device's time for a node over a region is its profile's `alpha * MACs / capability + overhead`
  for the node's cost kind (its op kind, a conv by class: dense kxk, 1x1, depthwise or grouped),
  plus, for a conv run as matrix products, its copies and calls around them (`node_work`);
  its time for a stage is the sum over the nodes it computes; so the work is summed by cost kind
  first (`OpWork`) and priced with the profile's vectors;
- a stage takes its slowest device's compute plus its communication. On a shared medium (WiFi)
  transfers serialize, so communication is their sum; on a switched network each device's link
  works in parallel, so it is the busiest link's sum per direction;
- in an `overlap` stage (HALP) a device starts as soon as its own inputs arrived, so the stage
  ends when the last device has received, computed and sent its results;
- latency is the sum of stage times; stages of one pipeline `group` run back to back, groups run
  concurrently on different frames, so the period is the slowest group's total; a plan that keeps
  more frames in flight than it has groups is paced by its busiest device or medium.
`stage_time` is the one rule that turns compute and transfers into a stage's time: the schemes'
searches and `predict` both use it. The simulator (suite/simulate.py) adds what this model leaves
out: contention for a shared medium between pipeline stages, arrival processes, channels that vary
per frame.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from suite.backends.exact import gemm_grid
from suite.errors import UserError
from suite.fleet import Fleet, Link, Profile
from suite.graph import Graph
from suite.graph.ir import COST_KINDS, GEMM_CONVS, Node
from suite.plan import Plan, Predicted, Region, Stage, StageCost, Transfer, work_regions
from suite.regions import Box, FeatureRange

KIND_INDEX = {kind: i for i, kind in enumerate(COST_KINDS)}


# Kinds counted in MACs: all but the values copied around a conv's matrix products and their calls.
IS_MAC = np.array([kind not in ("conv_copy", "gemm_call") for kind in COST_KINDS], float)


def node_work(node: Node) -> dict[str, float]:
    """What the cost model prices a node by, per cost kind: its MACs in its own kind; for a conv run
    as matrix products (dense or grouped), also the values it copies to and from them (`conv_copy`:
    per output position its im2col column in, input channels x kernel, and its result out, output
    channels) and the products' calls (`gemm_call`: a block of the exact kernels' `gemm_grid` each).
    Per MAC the copies are 1/output channels + 1/(inputs per output): little for a wide 3x3 conv, most
    of a thin 1x1 one's time; a tile's share of each is its share of the MACs."""
    units = {node.cost_kind: float(node.flops)}
    if node.cost_kind in GEMM_CONVS and node.flops:
        outputs, channels, groups = math.prod(node.shape), node.shape[1], node.attrs.get("groups", 1)
        column = groups * node.flops / outputs  # input channels x kernel
        grid = gemm_grid(node)
        units["conv_copy"] = outputs / channels * (column + channels)
        units["gemm_call"] = float(-(-node.shape[2] // grid.rows) * -(-node.shape[3] // grid.cols))
    return units


@dataclass(frozen=True)
class OpWork:
    """What a device computes, summed by cost kind (indexed like `COST_KINDS`): units (`node_work`:
    MACs, values copied, matrix products), and the calls that pay a profile's fixed cost
    (`Node.calls`: one a node, one a group for a grouped conv)."""

    units: np.ndarray
    calls: np.ndarray

    @staticmethod
    def of(nodes: Iterable[tuple[Node, float]]) -> OpWork:
        """The work of nodes given as (node, MACs it computes): a part of a node's MACs does that
        part of each of its units."""
        units, calls = np.zeros(len(COST_KINDS)), np.zeros(len(COST_KINDS))
        for node, m in nodes:
            share = m / node.flops if node.flops else 0.0
            for kind, amount in node_work(node).items():
                units[KIND_INDEX[kind]] += amount * share
            calls[KIND_INDEX[node.cost_kind]] += node.calls
        return OpWork(units, calls)

    def __add__(self, other: OpWork) -> OpWork:
        return OpWork(self.units + other.units, self.calls + other.calls)


def work_time(profile: Profile, work: OpWork) -> float:
    return float(work_times([profile], work.units[None], work.calls[None])[0])


def node_time(profile: Profile, node: Node) -> float:
    """Seconds for the whole of `node` on `profile`."""
    return work_time(profile, OpWork.of([(node, node.flops)]))


def work_times(profiles: Sequence[Profile], units: np.ndarray, calls: np.ndarray) -> np.ndarray:
    """Seconds of each row of work (`units`, `calls`: rows x cost kinds) on the profile of that row."""
    per_unit = np.array([p.prices[0] for p in profiles])
    per_call = np.array([p.prices[1] for p in profiles])
    return (units * per_unit).sum(axis=1) + (calls * per_call).sum(axis=1)


def work_macs(graph: Graph, nodes: Sequence[str], outputs: Mapping[str, Region],
              reused: Mapping[str, list[Box]] | None = None) -> dict[str, float]:  # fmt: skip
    """MACs per node that one device spends to produce `outputs` of a stage, taking the `reused`
    bands instead of computing them."""
    regions = list(outputs.values())
    if all(isinstance(r, Box) for r in regions):
        tiles = work_regions(graph, nodes, dict(outputs), dict(reused or {}))
        return {n: graph[n].flops_per_position * r.out.area for n, r in tiles.items()}
    if all(isinstance(r, FeatureRange) for r in regions):
        tensor, features = next(iter(outputs.items()))
        share = features.size / graph[tensor].shape[-1]
        return {n: graph[n].flops * share for n in nodes}
    return {n: float(graph[n].flops) for n in nodes}


def comm_time(link: Link, transfers: Sequence[Transfer]) -> float:
    if not transfers:
        return 0.0
    if link.shared:
        return sum(link.transfer_time(t.bytes) for t in transfers)
    busy: dict[tuple[str, str], float] = defaultdict(float)
    for t in transfers:
        busy[(t.src, "out")] += link.transfer_time(t.bytes)
        busy[(t.dst, "in")] += link.transfer_time(t.bytes)
    return max(busy.values())


def overlapped_time(link: Link, transfers: Sequence[Transfer], compute: Mapping[str, float],
                    outputs: Iterable[str]) -> float:  # fmt: skip
    """Inputs are sent in the listed order; each device computes once its own have arrived,
    then sends its `outputs`."""
    outputs = set(outputs)
    medium_free = 0.0
    ready: dict[str, float] = defaultdict(float)
    sends: dict[str, float] = defaultdict(float)
    for t in transfers:
        if t.tensor in outputs:
            sends[t.src] += link.transfer_time(t.bytes)
            continue
        start = medium_free if link.shared else ready[t.dst]
        ready[t.dst] = start + link.transfer_time(t.bytes)
        medium_free = ready[t.dst]
    return max(ready[d] + compute[d] + sends[d] for d in compute)


def stage_time(link: Link, compute: Mapping[str, float], transfers: Sequence[Transfer],
               overlap: bool = False, outputs: Iterable[str] = ()) -> float:  # fmt: skip
    """A stage's time from each device's compute seconds and the stage's transfers."""
    if overlap:
        return overlapped_time(link, transfers, compute, outputs)
    return max(compute.values(), default=0.0) + comm_time(link, transfers)


def stage_cost(graph: Graph, fleet: Fleet, stage: Stage) -> tuple[StageCost, float]:
    """The stage's cost and the MACs it spends."""
    work: dict[str, OpWork] = {}
    total_macs = 0.0
    for w in stage.work:
        macs = work_macs(graph, stage.nodes, w.outputs, w.reused)
        total_macs += sum(macs.values())
        mine = OpWork.of((graph[n], m) for n, m in macs.items())
        work[w.device] = work[w.device] + mine if w.device in work else mine
    per_device = {d: work_time(fleet.device(d).profile, w) for d, w in work.items()}
    time = stage_time(fleet.link, per_device, stage.transfers, stage.overlap, stage.outputs)
    cost = StageCost(max(per_device.values()), comm_time(fleet.link, stage.transfers), time,
                     sum(t.bytes for t in stage.transfers), per_device)  # fmt: skip
    return cost, total_macs


def predict(plan: Plan, graph: Graph, fleet: Fleet) -> Predicted:
    costs, macs = zip(*(stage_cost(graph, fleet, s) for s in plan.stages))
    group_time: dict[int, float] = defaultdict(float)
    for stage, cost in zip(plan.stages, costs):
        group_time[stage.group] += cost.time_s
    latency = sum(c.time_s for c in costs)
    period = max(group_time.values())
    if plan.frames_in_flight > len(group_time):
        # More frames in flight than pipeline groups (HALP's K per batch): each device and the
        # medium work on one frame while others wait on another, so the busiest resource sets the
        # pace; the batch ends K - 1 periods after its first frame.
        period = _busiest_resource(fleet.link, plan.stages, costs)
        latency += (plan.frames_in_flight - 1) * period
    total = graph.total_flops()
    return Predicted(
        latency_s=latency,
        period_s=period,
        throughput_fps=1.0 / period if period > 0 else float("inf"),
        redundancy=sum(macs) / total - 1.0 if total else 0.0,
        stages=list(costs),
        tiled_share=tiled_macs(plan, graph) / total if total else 0.0,
    )


def tiled_macs(plan: Plan, graph: Graph) -> int:
    """The model's MACs that the plan computes in tiles: in stages that cut maps among devices (a
    stage and the one continuing it count once)."""
    stages = plan.stages
    tiled = [s for k, s in enumerate(stages) if not s.continues
             and len(set(s.devices).union(*(c.devices for c in stages[k + 1:k + 2] if c.continues))) > 1
             and all(isinstance(r, Box) for w in s.work for r in w.outputs.values())]  # fmt: skip
    return sum(graph[n].flops for s in tiled for n in s.nodes)


def _busiest_resource(link: Link, stages: Sequence[Stage], costs: Sequence[StageCost]) -> float:
    busy: dict[str, float] = defaultdict(float)
    for cost in costs:
        for device, seconds in cost.device_compute_s.items():
            busy[device] += seconds
    transfers = [t for s in stages for t in s.transfers]
    return max(max(busy.values()), comm_time(link, transfers))


def memory_needed(plan: Plan, graph: Graph) -> dict[str, int]:
    """Bytes each device holds: the weights of every node it computes, plus the largest input and
    output maps among them (a tile never needs more than the whole map)."""
    nodes: dict[str, set[str]] = defaultdict(set)
    for stage in plan.stages:
        for w in stage.work:
            nodes[w.device].update(stage.nodes)
    need = {}
    for device, names in nodes.items():
        weights = sum(graph[n].param_bytes for n in names)
        maps = max(graph[n].act_bytes + sum(graph[s].act_bytes for s in graph[n].inputs) for n in names)
        need[device] = weights + maps
    return need


def check_memory(plan: Plan, graph: Graph, fleet: Fleet) -> None:
    for device, need in memory_needed(plan, graph).items():
        have = fleet.device(device).memory_bytes
        if need > have:
            fix = ("a device with more memory or a scheme that spreads the layers (pico)"
                   if plan.scheme != "pico" else "devices with more memory")  # fmt: skip
            if fleet.name.endswith("xlocal"):  # --devices N: N processes share this host's memory
                fix = "fewer --devices (they share this host's memory)"
            raise UserError(f"model {graph.name} does not fit device '{device}' in the {plan.scheme} plan: "
                            f"it needs {need / 2**30:.2f} GiB for weights and maps but has "
                            f"{have / 2**30:.2f} GiB; use {fix}")  # fmt: skip
