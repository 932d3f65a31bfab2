"""DeepThings' Fused Tile Partitioning (Zhao et al., TCAD 2018).

The first L layers are fused and cut into an N x M grid of tiles that are computed independently,
each from its own slice of the input (the receptive-field overlap is recomputed); the gateway
gathers the tiles and runs the rest of the model. L, N and M are chosen by the cost model for the
lowest latency per frame.

Choices the paper leaves to us, written down:
- L ends on a piece boundary (suite/schemes/chain.py): in a residual or inception block the fused
  region must hold whole blocks;
- the gateway is the fastest device, and it computes tiles too;
- DeepThings balances tiles at run time by work stealing; here tiles are dealt out statically,
  longest first to the device that would finish it first, which is where stealing converges;
- grids up to 5 x 5 (more tiles than devices balance better; fewer may communicate less);
- one frame at a time, as in the paper's latency experiments: no pipelining across frames.
"""

from __future__ import annotations

import numpy as np

from suite.cost import stage_time, work_time
from suite.errors import UserError
from suite.fleet import Device, Fleet
from suite.graph import Graph
from suite.plan import Layout, Transfer, build_stages
from suite.regions import Box, split_range
from suite.schemes.chain import TileCosts, chain_nodes, pieces, spatial_prefix, whole_on

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
    per_mac = np.array([d.profile.prices[0] for d in devices]).T  # kinds x devices
    per_node = np.array([d.profile.prices[1] for d in devices]).T
    in_bytes = graph.input_shape[1] * graph[graph.input].itemsize
    prefix = spatial_prefix(chain)
    if fused_pieces is not None and not 1 <= fused_pieces <= prefix:
        raise UserError(f"fused_pieces {fused_pieces}: model {graph.name} has {prefix} fusable pieces; "
                        f"choose 1..{prefix}")  # fmt: skip
    best = None
    for last in range(prefix) if fused_pieces is None else [fused_pieces - 1]:
        out = graph[chain[last].output]
        height, width = out.shape[2], out.shape[3]
        rest = work_time(gateway.profile, costs.whole(last + 1, len(chain) - 1))
        out_bytes = out.shape[1] * out.itemsize  # per position, all channels
        grids = [grid] if grid else [(n, m) for n in range(1, min(MAX_GRID, height) + 1)
                                     for m in range(1, min(MAX_GRID, width) + 1)
                                     if n * m > 1 or len(devices) == 1]  # fmt: skip
        for n, m in grids:
            if n > height or m > width:
                continue
            rows, cols = split_range(height, n), split_range(width, m)
            inputs, macs, counts = costs.grid(0, last, rows, cols)
            boxes = [Box(*r, *c) for r in rows for c in cols]
            dealt, busy = deal(macs.sum(axis=1), macs @ per_mac + counts @ per_node, devices)
            if best is not None and busy.max() + rest >= best[0]:
                continue  # communication only adds: this grid cannot beat the best
            transfers = [t for k, d in dealt if d != 0 for t in (
                Transfer(gateway.name, devices[d].name, graph.input, inputs[k], in_bytes * inputs[k].area),
                Transfer(devices[d].name, gateway.name, out.name, boxes[k], out_bytes * boxes[k].area))]
            compute = {d.name: seconds for d, seconds in zip(devices, busy)}
            latency = stage_time(fleet.link, compute, transfers) + rest
            if best is None or latency < best[0]:
                best = (latency, last, n, m, [(devices[d].name, boxes[k]) for k, d in dealt])
    if best is None:
        if grid:
            raise UserError(f"grid {grid[0]}x{grid[1]} is finer than every fusable map of model "
                            f"{graph.name}; choose a coarser grid")  # fmt: skip
        raise UserError(f"model {graph.name} has no spatial layers to fuse")
    _, last, n, m, dealt = best
    out = chain[last].output
    steps = [(0, chain_nodes(chain, 0, last), [(device, {out: box}) for device, box in dealt])]
    rest_nodes = chain_nodes(chain, last + 1, len(chain) - 1)
    if rest_nodes:
        steps.append(whole_on(graph, gateway.name, rest_nodes))
    options = {"fused_pieces": last + 1, "fused_until": out, "grid": f"{n}x{m}", "gateway": gateway.name}
    return Layout(gateway.name, build_stages(graph, gateway.name, steps), options)
