"""The analytical cost model: a plan's latency, period, throughput and redundancy on a fleet.

PICO's formulas, applied to every scheme alike:
- a device's time for a node over a region is its profile's `alpha * MACs / capability + overhead`
  for the node's op kind, and its time for a stage is the sum over the nodes it computes;
- a stage takes its slowest device's compute plus its communication. On a shared medium (WiFi)
  transfers serialize, so communication is their sum; on a switched network each device's link
  works in parallel, so it is the busiest link's sum per direction;
- in an `overlap` stage (HALP) a device starts as soon as its own inputs arrived, so the stage
  ends when the last device has received, computed and sent its results;
- latency is the sum of stage times; stages of one pipeline `group` run back to back, groups run
  concurrently on different frames, so the period is the slowest group's total.
The simulator (suite/simulate.py) adds what this model leaves out: contention for a shared medium
between pipeline stages, arrival processes, channels that vary per frame.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from suite.errors import UserError
from suite.fleet import Device, Fleet, Link
from suite.graph import Graph
from suite.plan import Plan, Predicted, Region, Stage, StageCost, Transfer
from suite.regions import Box, plan_regions


def work_macs(graph: Graph, nodes: Sequence[str], outputs: Mapping[str, Region]) -> dict[str, float]:
    """MACs per node that one device spends to produce `outputs` of a stage."""
    regions = list(outputs.values())
    if all(r is not None and len(r) == 4 for r in regions):
        boxes = plan_regions(graph, nodes, {t: Box(*r) for t, r in outputs.items()})
        return {n: graph[n].flops_per_position * r.out.area for n, r in boxes.items()}
    if all(r is not None and len(r) == 2 for r in regions):
        tensor, (f0, f1) = next(iter(outputs.items()))
        share = (f1 - f0) / graph[tensor].shape[-1]
        return {n: graph[n].flops * share for n in nodes}
    return {n: float(graph[n].flops) for n in nodes}


def compute_time(graph: Graph, device: Device, macs: Mapping[str, float]) -> float:
    return sum(device.profile.node_time(graph[n].op, m) for n, m in macs.items())


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


def stage_cost(graph: Graph, fleet: Fleet, stage: Stage) -> tuple[StageCost, float]:
    """The stage's cost and the MACs it spends."""
    per_device: dict[str, float] = defaultdict(float)
    total_macs = 0.0
    for w in stage.work:
        macs = work_macs(graph, stage.nodes, w.outputs)
        total_macs += sum(macs.values())
        per_device[w.device] += compute_time(graph, fleet.device(w.device), macs)
    compute = max(per_device.values())
    comm = comm_time(fleet.link, stage.transfers)
    nbytes = sum(t.bytes for t in stage.transfers)
    if stage.overlap:
        time = overlapped_time(fleet.link, stage.transfers, per_device, stage.outputs)
    else:
        time = compute + comm
    return StageCost(compute, comm, time, nbytes, dict(per_device)), total_macs


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


def predict(plan: Plan, graph: Graph, fleet: Fleet) -> Predicted:
    costs, macs = zip(*(stage_cost(graph, fleet, s) for s in plan.stages))
    group_time: dict[int, float] = defaultdict(float)
    for stage, cost in zip(plan.stages, costs):
        group_time[stage.group] += cost.time_s
    latency = sum(c.time_s for c in costs)
    period = max(group_time.values())
    tasks = plan.options.get("tasks_per_batch", 1)
    if tasks > 1:
        # K frames in flight: each device and the medium work on one frame while others wait
        # on another, so the busiest resource sets the pace; the batch ends K - 1 periods later.
        period = _busiest_resource(fleet.link, plan.stages, costs)
        latency += (tasks - 1) * period
    total = graph.total_flops()
    return Predicted(
        latency_s=latency,
        period_s=period,
        throughput_fps=1.0 / period if period > 0 else float("inf"),
        redundancy=sum(macs) / total - 1.0 if total else 0.0,
        stages=list(costs),
    )


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
            raise UserError(f"model {graph.name} does not fit device '{device}' in the {plan.scheme} plan: "
                            f"it needs {need / 2**30:.2f} GiB for weights and maps but has "
                            f"{have / 2**30:.2f} GiB; use a device with more memory or a scheme that "
                            "spreads the layers (pico)")  # fmt: skip
