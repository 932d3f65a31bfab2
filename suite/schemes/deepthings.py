"""DeepThings' Fused Tile Partitioning (Zhao et al., TCAD 2018).

The first L layers are fused and cut into an N x M grid of tiles that are computed independently,
each from its own slice of the input (the receptive-field overlap is recomputed); the gateway
gathers the tiles and runs the rest of the model. L, N and M are chosen by the cost model for the
lowest latency per frame.

Choices the paper leaves to us, written down:
- L ends on a piece boundary (suite/schemes/chain.py): in a residual or inception block the fused
  region must hold whole blocks; a squeeze-and-excite branch cuts the fused layers into segments,
  each cut into the same grid and gathered, and the gateway computes the branch between them;
- the gateway is the fastest device, and it computes tiles too;
- DeepThings balances tiles at run time by work stealing; here tiles are dealt out statically,
  longest first to the device that would finish it first, which is where stealing converges;
- grids up to 5 x 5 (more tiles than devices balance better; fewer may communicate less);
- one frame at a time, as in the paper's latency experiments: no pipelining across frames.
"""

from __future__ import annotations

import numpy as np

from suite.cost import IS_MAC, stage_time, work_time
from suite.errors import UserError
from suite.fleet import Device, Fleet
from suite.graph import Graph
from suite.plan import Layout, build_stages
from suite.regions import Box, split_range
from suite.schemes.chain import (
    Step,
    TileCosts,
    chain_nodes,
    pieces,
    spatial_prefix,
    tile_transfers,
    whole_on,
)  # fmt: skip

MAX_GRID = 5


def deal(macs: np.ndarray, times: np.ndarray, devices: list[Device]
         ) -> tuple[list[tuple[int, int]], np.ndarray]:  # fmt: skip
    """Longest tile first (by MACs), to the device that would finish it first (a tie: by name).

    `times[t, d]` is device d's seconds for tile t. Returns (tile, device) index pairs in the order
    dealt, and each device's busy time.
    """
    busy = [0.0] * len(devices)
    names = [d.name for d in devices]
    seconds = times.tolist()
    dealt = []
    for t in sorted(range(len(macs)), key=lambda t: -macs[t]):
        _, _, d = min((b + s, name, d) for d, (b, s, name) in enumerate(zip(busy, seconds[t], names)))
        busy[d] += seconds[t][d]
        dealt.append((t, d))
    return dealt, np.array(busy)


def plan(graph: Graph, fleet: Fleet, grid: tuple[int, int] | None = None, fused_pieces: int | None = None
         ) -> Layout:  # fmt: skip
    """`grid` (N, M) and `fused_pieces` (L) fix a paper's configuration, e.g. DeepThings' FTP 5x5 over
    16 layers, instead of searching them."""
    devices = fleet.by_capability()
    gateway = devices[0]
    chain = pieces(graph)
    costs = TileCosts(graph, chain)
    prefix = spatial_prefix(chain)
    if fused_pieces is not None and not 1 <= fused_pieces <= prefix:
        raise UserError(f"fused_pieces {fused_pieces}: model {graph.name} has {prefix} fusable pieces; "
                        f"choose 1..{prefix}")  # fmt: skip
    prices = (np.array([d.profile.prices[0] for d in devices]).T,  # kinds x devices: per unit, per call
              np.array([d.profile.prices[1] for d in devices]).T)  # fmt: skip
    best = None
    for last in range(prefix) if fused_pieces is None else [fused_pieces - 1]:
        height, width = graph[chain[last].output].shape[2:]
        rest = work_time(gateway.profile, costs.whole(last + 1, len(chain) - 1))
        grids = [grid] if grid else [(n, m) for n in range(1, min(MAX_GRID, height) + 1)
                                     for m in range(1, min(MAX_GRID, width) + 1)
                                     if n * m > 1 or len(devices) == 1]  # fmt: skip
        for n, m in grids:
            bound = None if best is None else best[0] - rest
            fused_part = _fused(graph, fleet, costs, devices, prices, last, (n, m), bound)
            if fused_part is not None and (best is None or fused_part[0] + rest < best[0]):
                best = (fused_part[0] + rest, last, n, m, fused_part[1])
    if best is None:
        if grid:
            raise UserError(f"grid {grid[0]}x{grid[1]} is finer than every fusable map of model "
                            f"{graph.name}; choose a coarser grid")  # fmt: skip
        raise UserError(f"model {graph.name} has no spatial layers to fuse")
    _, last, n, m, steps = best
    out = chain[last].output
    rest_nodes = chain_nodes(chain, last + 1, len(chain) - 1)
    if rest_nodes:
        steps.append(whole_on(graph, gateway.name, rest_nodes))
    options = {"fused_pieces": last + 1, "fused_until": out, "grid": f"{n}x{m}", "gateway": gateway.name}
    return Layout(gateway.name, build_stages(graph, gateway.name, steps), options)


def _fused(graph: Graph, fleet: Fleet, costs: TileCosts, devices: list[Device],
           prices: tuple[np.ndarray, np.ndarray], last: int, grid: tuple[int, int], bound: float | None
           ) -> tuple[float, list[Step]] | None:  # fmt: skip
    """The latency and steps of pieces 0..last cut into a `grid` of tiles dealt to `devices`, whose
    `prices` per unit and per call are kinds x devices (None: a map too small for the grid, or not
    under `bound`). A squeeze-and-excite branch cuts the fused part into segments
    (`TileCosts.segments`), each tiled alike; the gateway computes the branch."""
    gateway = devices[0]
    per_mac, per_call = prices
    n, m = grid
    time, steps = 0.0, []
    for segment in costs.segments(0, last):
        for branch in segment.branches:
            time += work_time(gateway.profile, costs.nodes_work(branch.nodes))
            steps.append(whole_on(graph, gateway.name, list(branch.nodes)))
        rows = costs.output_splits(segment, lambda height: split_range(height, n), 0)
        cols = costs.output_splits(segment, lambda width: split_range(width, m), 1)
        if rows is None or cols is None:
            return None
        reads, units, calls = costs.segment_grid(segment, rows, cols)
        dealt, busy = deal(units @ IS_MAC, units @ per_mac + calls @ per_call, devices)
        if bound is not None and time + busy.max() >= bound:
            return None  # communication only adds: this grid cannot beat the best
        made = [{o: Box(*rows[o][a], *cols[o][b]) for o in segment.outputs}
                for a in range(n) for b in range(m)]  # fmt: skip
        doers = [devices[d].name for _, d in dealt]
        transfers = tile_transfers(graph, gateway.name, doers, [reads[k] for k, _ in dealt],
                                   [made[k] for k, _ in dealt])  # fmt: skip
        time += stage_time(fleet.link, {d.name: seconds for d, seconds in zip(devices, busy)}, transfers)
        steps.append((0, list(segment.nodes), [(name, made[k]) for name, (k, _) in zip(doers, dealt)]))
    return time, steps
