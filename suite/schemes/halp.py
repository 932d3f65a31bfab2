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

from suite.cost import stage_time, work_time, work_times
from suite.errors import UserError
from suite.fleet import Fleet
from suite.graph import Graph
from suite.plan import Layout, Transfer, build_stages, tensor_bytes
from suite.regions import Box, RegionError, split_range
from suite.schemes.chain import TileCosts, chain_nodes, pieces, spatial_prefix, whole_on

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


def plan(graph: Graph, fleet: Fleet, tasks_per_batch: int = 1) -> Layout:
    if tasks_per_batch < 1:
        raise UserError(f"tasks_per_batch {tasks_per_batch} must be at least 1")
    host, secondaries = fleet.devices[0], list(fleet.devices[1:])
    chain = pieces(graph)
    costs = TileCosts(graph, chain)
    fused = spatial_prefix(chain)
    if not secondaries or not fused:
        every = [n for n in graph.nodes if n != graph.input]
        return Layout(host.name, build_stages(graph, host.name, [whole_on(graph, host.name, every)]),
                      {"host": host.name})  # fmt: skip
    best = None
    for last in range(fused):
        out = graph[chain[last].output]
        rest = work_time(host.profile, costs.whole(last + 1, len(chain) - 1))
        for share in HOST_SHARES:
            try:
                segs = segments(out.shape[2], [d.capability for d in secondaries], share)
            except RegionError:  # too few rows for this many secondaries
                continue
            doers = [host if who is None else secondaries[who] for who, _ in segs]
            reads, macs, counts = costs.strips(0, last, [rows for _, rows in segs])
            compute = {host.name: 0.0}
            for device, seconds in zip(doers, work_times([d.profile for d in doers], macs, counts)):
                compute[device.name] = compute.get(device.name, 0.0) + seconds
            if best is not None and max(compute.values()) + rest >= best[0]:
                continue  # waiting for inputs and sending results only add: it cannot beat the best
            transfers = []
            for (who, rows), in_rows, device in zip(segs, reads, doers):
                if who is not None:
                    read = Box(*in_rows, 0, graph.input_shape[3])
                    transfers.insert(0, Transfer(host.name, device.name, graph.input, read,
                                                 tensor_bytes(graph, graph.input, read)))  # fmt: skip
                    made = Box(*rows, 0, out.shape[3])
                    transfers.append(Transfer(device.name, host.name, out.name, made,
                                              tensor_bytes(graph, out.name, made)))  # fmt: skip
            latency = stage_time(fleet.link, compute, transfers, overlap=True, outputs=[out.name]) + rest
            if best is None or latency < best[0]:
                best = (latency, last, share, segs)
    if best is None:
        raise UserError(f"HALP cannot cut model {graph.name} for {len(secondaries)} secondaries: every fused "
                        "map has fewer rows than the segments need; use fewer devices or a larger input")
    _, last, share, segs = best
    out = graph[chain[last].output]
    assignment = [((host if who is None else secondaries[who]).name, {out.name: Box(r0, r1, 0, out.shape[3])})
                  for who, (r0, r1) in segs]  # fmt: skip
    # secondaries first, so their inputs are sent before anything else
    assignment.sort(key=lambda a: a[0] == host.name)
    steps = [(0, chain_nodes(chain, 0, last), assignment)]
    rest_nodes = chain_nodes(chain, last + 1, len(chain) - 1)
    if rest_nodes:
        steps.append(whole_on(graph, host.name, rest_nodes))
    stages = build_stages(graph, host.name, steps)
    stages[0].overlap = True
    options = {"host": host.name, "fused_pieces": last + 1, "host_share": share,
               "tasks_per_batch": tasks_per_batch}
    return Layout(host.name, stages, options, frames_in_flight=tasks_per_batch)
