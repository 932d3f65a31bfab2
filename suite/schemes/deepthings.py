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

from suite.cost import comm_time
from suite.errors import UserError
from suite.fleet import Device, Fleet
from suite.graph import Graph
from suite.plan import Transfer, box_region, build_stages, tensor_bytes
from suite.regions import Box, tile_boxes
from suite.schemes.chain import StripCosts, pieces, work_time

MAX_GRID = 5


def deal(tiles: list[tuple[Box, tuple[Box, list]]], devices: list[Device]
         ) -> tuple[list[tuple[Device, Box, Box]], dict[str, float]]:  # fmt: skip
    """Longest tile first, to the device that would finish it first.

    Returns (device, output box, input box) per tile and each device's busy time.
    """
    busy = {d.name: 0.0 for d in devices}
    dealt = []
    for out, (inp, work) in sorted(tiles, key=lambda t: -sum(m for _, m in t[1][1])):
        device = min(devices, key=lambda d: (busy[d.name] + work_time(d.profile, work), d.name))
        busy[device.name] += work_time(device.profile, work)
        dealt.append((device, out, inp))
    return dealt, busy


def plan(graph: Graph, fleet: Fleet, grid: tuple[int, int] | None = None, fused_pieces: int | None = None
         ) -> tuple[str, list, dict]:  # fmt: skip
    """`grid` (N, M) and `fused_pieces` (L) fix a paper's configuration, e.g. DeepThings' FTP 5x5 over
    16 layers, instead of searching them."""
    devices = sorted(fleet.devices, key=lambda d: (-d.capability, d.name))
    gateway = devices[0]
    chain = pieces(graph)
    costs = StripCosts(graph, chain)
    prefix = 0
    while prefix < len(chain) and chain[prefix].spatial:
        prefix += 1
    if fused_pieces is not None and not 1 <= fused_pieces <= prefix:
        raise UserError(f"fused_pieces {fused_pieces}: model {graph.name} has {prefix} fusable pieces; "
                        f"choose 1..{prefix}")  # fmt: skip
    best = None
    for last in range(prefix) if fused_pieces is None else [fused_pieces - 1]:
        out = graph[chain[last].output]
        height, width = out.shape[2], out.shape[3]
        rest = costs.whole(last + 1, len(chain) - 1)
        grids = [grid] if grid else [(n, m) for n in range(1, min(MAX_GRID, height) + 1)
                                     for m in range(1, min(MAX_GRID, width) + 1)
                                     if n * m > 1 or len(devices) == 1]  # fmt: skip
        for n, m in grids:
            if n <= height and m <= width:
                tiles = [(box, costs.tile(0, last, box)) for box in tile_boxes(out, n, m)]
                dealt, busy = deal(tiles, devices)
                transfers = [t for device, box, inp in dealt if device is not gateway for t in (
                    Transfer(gateway.name, device.name, graph.input, None,
                             tensor_bytes(graph, graph.input, box_region(inp))),
                    Transfer(device.name, gateway.name, out.name, None,
                             tensor_bytes(graph, out.name, box_region(box))))]  # fmt: skip
                latency = (max(busy.values()) + comm_time(fleet.link, transfers)
                           + work_time(gateway.profile, rest))  # fmt: skip
                if best is None or latency < best[0]:
                    best = (latency, last, n, m, dealt)
    if best is None:
        if grid:
            raise UserError(f"grid {grid[0]}x{grid[1]} is finer than every fusable map of model "
                            f"{graph.name}; choose a coarser grid")  # fmt: skip
        raise UserError(f"model {graph.name} has no spatial layers to fuse")
    _, last, n, m, dealt = best
    out = chain[last].output
    fused = [node for p in chain[:last + 1] for node in p.nodes]
    steps = [(0, fused, [(device.name, {out: box_region(box)}) for device, box, _ in dealt])]
    rest_nodes = [node for p in chain[last + 1:] for node in p.nodes]
    if rest_nodes:
        steps.append((0, rest_nodes, [(gateway.name, {o: None for o in graph.boundary(rest_nodes)})]))
    options = {"fused_pieces": last + 1, "fused_until": out, "grid": f"{n}x{m}", "gateway": gateway.name}
    return gateway.name, build_stages(graph, gateway.name, steps), options

