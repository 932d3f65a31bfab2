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
- with more secondaries than the fused maps have rows, the least capable ones stay idle;
- L ends on a piece boundary (suite/schemes/chain.py), as in the other fused schemes; a
  squeeze-and-excite branch inside the fused layers cuts them into segments, each its own overlap
  stage, and the host computes the branch between them (it holds the gathered map);
- inputs are sent to secondaries one after another, in row order;
- multi-task mode (`tasks_per_batch` K): K frames are planned alike and kept in flight together,
  so one frame's transfers overlap another's compute; the cost model's period is then the busiest
  device's or the medium's time per frame, and a batch ends K - 1 periods after the first frame.
"""

from __future__ import annotations

from suite.cost import stage_time, work_time, work_times
from suite.errors import UserError
from suite.fleet import Device, Fleet
from suite.graph import Graph
from suite.plan import Layout, build_stages
from suite.regions import Box, RegionError, split_range
from suite.schemes.chain import (
    Piece,
    StageDraft,
    TileCosts,
    by_capability,
    chain_nodes,
    pieces,
    spatial_prefix,
    tile_transfers,
    whole_on,
)  # fmt: skip

HOST_SHARES = [k / 20 for k in range(0, 11)]


def row_segments(height: int, capabilities: list[float], host_share: float
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
    # More secondaries than a fused map has rows leave the least capable ones idle.
    rows = max(graph[chain[k].output].shape[2] for k in range(fused))
    used = min(len(secondaries), rows)
    best = None
    while best is None and used >= 1:
        best = _search(graph, fleet, chain, costs, fused, by_capability(secondaries)[:used])
        used -= 1
    if best is None:
        raise UserError(
            f"HALP cannot cut model {graph.name} for even one secondary: every fused map is "
            "too small; use a larger input"
        )
    _, last, share, steps, chosen = best
    rest_nodes = chain_nodes(chain, last + 1, len(chain) - 1)
    if rest_nodes:
        steps.append(whole_on(graph, host.name, rest_nodes))
    stages = build_stages(graph, host.name, steps)
    for stage in stages:
        stage.overlap = len(stage.work) > 1
    options = {
        "host": host.name,
        "fused_pieces": last + 1,
        "host_share": share,
        "tasks_per_batch": tasks_per_batch,
    }
    if len(chosen) < len(secondaries):
        options["secondaries_used"] = len(chosen)
    return Layout(host.name, stages, options, frames_in_flight=tasks_per_batch)


def _search(graph: Graph, fleet: Fleet, chain: list[Piece], costs: TileCosts, fused: int,
            secondaries: list[Device]) -> tuple | None:  # fmt: skip
    """The lowest latency over L and the host's share with these secondaries, as (latency, last
    fused piece, share, steps, secondaries); None where every fused map is too small for them."""
    host, best = fleet.devices[0], None
    for last in range(fused):
        rest = work_time(host.profile, costs.whole(last + 1, len(chain) - 1))
        for share in HOST_SHARES:
            bound = None if best is None else best[0] - rest
            fused_part = _fused(graph, fleet, costs, last, share, bound, secondaries)
            if fused_part is not None and (best is None or fused_part[0] + rest < best[0]):
                best = (fused_part[0] + rest, last, share, fused_part[1], secondaries)
    return best


def _fused(graph: Graph, fleet: Fleet, costs: TileCosts, last: int, share: float, bound: float | None,
           secondaries: list[Device]) -> tuple[float, list[StageDraft]] | None:  # fmt: skip
    """The latency and steps of pieces 0..last fused with the host's `share` of the rows (None: too
    few rows, or not under `bound`). A squeeze-and-excite branch cuts the fused part into
    segments (`TileCosts.segments`): each is an overlap stage, each branch runs on the host."""
    host = fleet.devices[0]
    capabilities = [d.capability for d in secondaries]
    time, steps = 0.0, []
    for segment in costs.segments(0, last):
        for branch in segment.branches:
            time += work_time(host.profile, costs.nodes_work(branch.nodes))
            steps.append(whole_on(graph, host.name, list(branch.nodes)))
        try:
            cut = {o: row_segments(graph[o].shape[2], capabilities, share) for o in segment.outputs}
        except RegionError:
            return None  # too few rows for the secondaries
        doers = {tuple(who for who, _ in c) for c in cut.values()}
        if len(doers) != 1:
            return None  # outputs of different heights would be cut unlike
        (who,) = doers
        # secondaries first, so their inputs are sent before anything else
        order = sorted(range(len(who)), key=lambda k: who[k] is None)
        devices = [host if who[k] is None else secondaries[who[k]] for k in order]
        rows = {o: [c[k][1] for k in order] for o, c in cut.items()}
        cols = {o: [(0, graph[o].shape[3])] for o in segment.outputs}
        reads, macs, calls = costs.segment_grid(segment, rows, cols)
        compute = {host.name: 0.0}
        for device, seconds in zip(devices, work_times([d.profile for d in devices], macs, calls)):
            compute[device.name] = compute.get(device.name, 0.0) + seconds
        if bound is not None and time + max(compute.values()) >= bound:
            return None  # waiting for inputs and sending results only add: it cannot beat the best
        made = [{o: Box(*rows[o][k], *cols[o][0]) for o in segment.outputs} for k in range(len(devices))]
        transfers = tile_transfers(graph, host.name, [d.name for d in devices], reads, made)
        time += stage_time(fleet.link, compute, transfers, overlap=True, outputs=segment.outputs)
        steps.append((0, list(segment.nodes), [(d.name, tile) for d, tile in zip(devices, made)]))
    return time, steps
