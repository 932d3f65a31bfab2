"""HALP (Li, Iosifidis, Zhang, ICC 2022, arXiv 2207.11294): a host edge server and secondaries.

The first L layers are fused and their output rows are cut into segments: one per secondary, and
between neighbouring secondaries a zone that the host computes. Those zones are where the
neighbours' receptive fields would overlap; the host, which holds the frame, computes them itself
and the secondaries only compute their own rows, starting as soon as their input rows arrive
(communication overlaps computation: the stage is an `overlap` stage). The host gathers the
segments and runs the rest of the model. Segment ratios, the host's share and L are optimised for
the lowest latency from each device's compute speed and the bandwidth.

The paper body was not available to us; these are our choices where the abstract is silent:
- the host is the fleet's first device; secondaries' rows are proportional to their capability,
  and the host's share is searched in steps of 5% of the rows, split evenly over its zones;
- with one secondary the host's zone is the bottom of the map;
- L ends on a piece boundary (suite/schemes/chain.py), as in the other fused schemes;
- inputs are sent to secondaries one after another, in row order;
- multi-task mode (`tasks_per_batch` K): K frames are planned alike and kept in flight together,
  so one frame's transfers overlap another's compute; the cost model's period is then the busiest
  device's or the medium's time per frame, and a batch ends K - 1 periods after the first frame.
"""

from __future__ import annotations

from suite.cost import overlapped_time
from suite.errors import UserError
from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import Transfer, build_stages, tensor_bytes
from suite.regions import RegionError, split_range
from suite.schemes.chain import StripCosts, pieces, work_time

HOST_SHARES = [k / 20 for k in range(0, 11)]


def segments(height: int, capabilities: list[float], host_share: float
             ) -> list[tuple[int | None, tuple[int, int]]]:  # fmt: skip
    """Row segments top to bottom as (secondary index or None for the host, rows)."""
    n = len(capabilities)
    host_rows = round(host_share * height)
    zones = max(n - 1, 1)
    host_parts = [host_rows // zones + (1 if k < host_rows % zones else 0) for k in range(zones)]
    sec_rows = split_range(height - host_rows, n, capabilities)
    sizes = []
    for k, (a, b) in enumerate(sec_rows):
        sizes.append((k, b - a))
        if k < n - 1 or n == 1:
            sizes.append((None, host_parts[min(k, zones - 1)]))
    out, start = [], 0
    for who, size in sizes:
        if size > 0:
            out.append((who, (start, start + size)))
            start += size
    return out


def plan(graph: Graph, fleet: Fleet, tasks_per_batch: int = 1) -> tuple[str, list, dict]:
    if tasks_per_batch < 1:
        raise UserError(f"tasks_per_batch {tasks_per_batch} must be at least 1")
    host, secondaries = fleet.devices[0], list(fleet.devices[1:])
    chain = pieces(graph)
    costs = StripCosts(graph, chain)
    every = [n for n in graph.nodes if n != graph.input]
    if not secondaries or not chain[0].spatial:
        steps = [(0, every, [(host.name, {o: None for o in graph.outputs})])]
        return host.name, build_stages(graph, host.name, steps), {"host": host.name}
    best = None
    for last in range(len(chain)):
        if not chain[last].spatial:
            break
        out = graph[chain[last].output]
        rest = work_time(host.profile, costs.whole(last + 1, len(chain) - 1))
        for share in HOST_SHARES:
            try:
                segs = segments(out.shape[2], [d.capability for d in secondaries], share)
            except RegionError:  # too few rows for this many secondaries
                continue
            compute = {host.name: 0.0}
            transfers = []
            for who, rows in segs:
                in_rows, work = costs.strip(0, last, rows)
                device = host if who is None else secondaries[who]
                compute[device.name] = compute.get(device.name, 0.0) + work_time(device.profile, work)
                if who is not None:
                    read = [*in_rows, 0, graph.input_shape[3]]
                    transfers.insert(0, Transfer(host.name, device.name, graph.input, None,
                                                 tensor_bytes(graph, graph.input, read)))  # fmt: skip
                    made = [*rows, 0, out.shape[3]]
                    transfers.append(Transfer(device.name, host.name, out.name, None,
                                              tensor_bytes(graph, out.name, made)))  # fmt: skip
            latency = overlapped_time(fleet.link, transfers, compute, [out.name]) + rest
            if best is None or latency < best[0]:
                best = (latency, last, share, segs)
    _, last, share, segs = best
    out = graph[chain[last].output]
    fused = [n for p in chain[:last + 1] for n in p.nodes]
    assignment = [((host if who is None else secondaries[who]).name, {out.name: [r0, r1, 0, out.shape[3]]})
                  for who, (r0, r1) in segs]  # fmt: skip
    # secondaries first, so their inputs are sent before anything else
    assignment.sort(key=lambda a: a[0] == host.name)
    steps = [(0, fused, assignment)]
    rest_nodes = [n for p in chain[last + 1:] for n in p.nodes]
    if rest_nodes:
        steps.append((0, rest_nodes, [(host.name, {o: None for o in graph.boundary(rest_nodes)})]))
    stages = build_stages(graph, host.name, steps)
    stages[0].overlap = True
    options = {"host": host.name, "fused_pieces": last + 1, "host_share": share,
               "tasks_per_batch": tasks_per_batch}
    return host.name, stages, options
