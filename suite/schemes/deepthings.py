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

With `reuse` (scheme `deepthings-reuse`), tiles share their overlaps as DeepThings' own code does
(zoranzhao/DeepThings, `src/ftp.c`, `DATA_REUSE`): the grid is scheduled as a checkerboard; the
"A" tiles (row + column even) compute their whole fused region, as without reuse, and keep what
they computed of every piece's output; then each "B" tile walks back from its output and, at each
piece output it needs, takes the bands its A neighbours (above, below, left, right) computed
there instead of computing them (`regions.reuse_bands`), so it computes only the rest. The bands
go through the gateway (the hub), as DeepThings' do; a band whose A tile ran on the B tile's own
device stays there. Our choices: B tiles start once every A tile is done (two stages, the second
`continues` the first; DeepThings starts a B tile as soon as its neighbours are done, and computes
it whole when they are not), and we send only the bands a B tile on another device reads
(DeepThings sends every A tile's overlaps to the gateway).

`grid_rounding`: `up` cuts the grid as DeepThings' `grid()` does (every part ceil(length / parts),
the last the rest: 19 in 5 is 4, 4, 4, 4, 3), `nearest` as the suite cuts strips (`split_range`:
4, 4, 3, 4, 4). The regions are the peer's for the same grid either way. `up` is the default: its
tiles are DeepThings' own, and it reproduces the paper's Fig. 13 closer (`suite reproduce
deepthings-fig13`: FTP 5x5 on 1-6 devices, mean |log(ours / paper)| 0.124 with reuse and 0.443
without, against 0.139 and 0.457 with `nearest`); `nearest` balances uneven cuts better (7 rows in
4 parts: 2, 2, 2, 1 against 2, 2, 1, 2) and fits grids `up` cannot (9 in 4: 3, 3, 3 and nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from suite.cost import IS_MAC, OpWork, stage_time, work_time
from suite.errors import UserError
from suite.fleet import Device, Fleet
from suite.graph import Graph
from suite.plan import Layout, Work, band_transfers, build_stages
from suite.regions import Box, plan_regions, reuse_regions, segment_inputs, split_range, split_range_up
from suite.schemes.chain import (
    Segment,
    StageDraft,
    TileCosts,
    chain_nodes,
    pieces,
    spatial_prefix,
    tile_transfers,
    whole_on,
)  # fmt: skip

MAX_GRID = 5
ROUNDINGS = {"up": split_range_up, "nearest": split_range}


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


def plan(graph: Graph, fleet: Fleet, grid: tuple[int, int] | None = None, fused_pieces: int | None = None,
         reuse: bool = False, grid_rounding: str = "up") -> Layout:  # fmt: skip
    """`grid` (N, M) and `fused_pieces` (L) fix a paper's configuration, e.g. DeepThings' FTP 5x5 over
    16 layers, instead of searching them; `reuse`: tiles share their overlaps (module docstring);
    `grid_rounding`: `up` (DeepThings' own) or `nearest`."""
    if grid_rounding not in ROUNDINGS:
        raise UserError(f"grid rounding '{grid_rounding}' is not one of {', '.join(ROUNDINGS)}")
    cut = ROUNDINGS[grid_rounding]
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
    maps = {piece.output for piece in chain} if reuse else set()
    best = None
    for last in range(prefix) if fused_pieces is None else [fused_pieces - 1]:
        height, width = graph[chain[last].output].shape[2:]
        rest = work_time(gateway.profile, costs.whole(last + 1, len(chain) - 1))
        grids = [grid] if grid else [(n, m) for n in range(1, min(MAX_GRID, height) + 1)
                                     for m in range(1, min(MAX_GRID, width) + 1)
                                     if n * m > 1 or len(devices) == 1]  # fmt: skip
        for n, m in grids:
            bound = None if best is None else best[0] - rest
            fused_part = _fused(graph, fleet, costs, devices, prices, last, (n, m), bound, cut, maps)
            if fused_part is not None and (best is None or fused_part[0] + rest < best[0]):
                best = (fused_part[0] + rest, last, n, m, fused_part[1])
    if best is None:
        if grid:
            raise UserError(f"grid {grid[0]}x{grid[1]} is finer than every fusable map of model "
                            f"{graph.name} (cut with --grid-rounding {grid_rounding}); choose a coarser "
                            "grid")  # fmt: skip
        raise UserError(f"model {graph.name} has no spatial layers to fuse")
    _, last, n, m, steps = best
    out = chain[last].output
    rest_nodes = chain_nodes(chain, last + 1, len(chain) - 1)
    if rest_nodes:
        steps.append(whole_on(graph, gateway.name, rest_nodes))
    options = {
        "fused_pieces": last + 1,
        "fused_until": out,
        "grid": f"{n}x{m}",
        "gateway": gateway.name,
        "reuse": reuse,
        "grid_rounding": grid_rounding,
    }
    return Layout(gateway.name, build_stages(graph, gateway.name, steps), options)


def _fused(graph: Graph, fleet: Fleet, costs: TileCosts, devices: list[Device],
           prices: tuple[np.ndarray, np.ndarray], last: int, grid: tuple[int, int], bound: float | None,
           cut: Callable[[int, int], list[tuple[int, int]]], maps: set[str]
           ) -> tuple[float, list[StageDraft]] | None:  # fmt: skip
    """The latency and steps of pieces 0..last cut into a `grid` of tiles dealt to `devices`, whose
    `prices` per unit and per call are kinds x devices (None: a map too small for the grid, or not
    under `bound`). `cut` splits a length into the grid's parts. A squeeze-and-excite branch cuts the
    fused part into segments (`TileCosts.segments`), each tiled alike; the gateway computes the
    branch. Where `maps` (piece outputs) are given, tiles reuse their overlaps there
    (`_reusing`)."""
    gateway = devices[0]
    per_mac, per_call = prices
    n, m = grid
    time, steps = 0.0, []
    for segment in costs.segments(0, last):
        for branch in segment.branches:
            time += work_time(gateway.profile, costs.nodes_work(branch.nodes))
            steps.append(whole_on(graph, gateway.name, list(branch.nodes)))
        rows = costs.output_splits(segment, lambda height: cut(height, n), 0)
        cols = costs.output_splits(segment, lambda width: cut(width, m), 1)
        if rows is None or cols is None:
            return None
        reads, units, calls = costs.segment_grid(segment, rows, cols)
        made = [{o: Box(*rows[o][a], *cols[o][b]) for o in segment.outputs}
                for a in range(n) for b in range(m)]  # fmt: skip
        reused = set(segment.nodes) & maps - set(segment.outputs)
        if reused and n * m > 1:
            phases = _reusing(graph, segment, made, reused, (n, m), reads, units, calls)
        else:
            phases = [(list(range(n * m)), reads, units, calls, [{}] * (n * m))]
        done: list[Work] = []  # the A tiles, as the B tiles' bands come from them
        for phase, (tiles, tile_reads, tile_units, tile_calls, bands) in enumerate(phases):
            dealt, busy = deal(tile_units @ IS_MAC, tile_units @ per_mac + tile_calls @ per_call, devices)
            if bound is not None and time + busy.max() >= bound:
                return None  # communication only adds: this grid cannot beat the best
            doers = [devices[d].name for _, d in dealt]
            transfers = tile_transfers(graph, gateway.name, doers, [tile_reads[k] for k, _ in dealt],
                                       [made[tiles[k]] for k, _ in dealt])  # fmt: skip
            work = [Work(name, made[tiles[k]], reused=bands[k]) for name, (k, _) in zip(doers, dealt)]
            if phase:
                transfers += [t for moves in band_transfers(graph, done, work, segment.nodes, gateway.name)
                              for t in moves]  # fmt: skip
            done = work
            time += stage_time(fleet.link, {d.name: seconds for d, seconds in zip(devices, busy)}, transfers)
            assignment = [(w.device, w.outputs, w.reused) for w in work]
            steps.append((0, list(segment.nodes), assignment, bool(phase)))
    return time, steps


def _reusing(graph: Graph, segment: Segment, made: list[dict[str, Box]], maps: set[str],
             grid: tuple[int, int], reads: list, units: np.ndarray, calls: np.ndarray
             ) -> list[tuple]:  # fmt: skip
    """The two phases of a grid whose tiles reuse their overlaps at `maps`: the A tiles of the
    checkerboard as they are, then the B tiles, each taking the bands its A neighbours computed.
    Each phase is (its tiles' indices in `made`, their reads, units (`cost.node_work`) and calls by
    cost kind, and per tile the bands it reuses, {map: [band, ...]})."""
    n, m = grid
    nodes = list(segment.nodes)
    first = [k for k in range(n * m) if (k // m + k % m) % 2 == 0]
    then = [k for k in range(n * m) if (k // m + k % m) % 2 == 1]
    computed = {k: plan_regions(graph, nodes, made[k]) for k in first}
    b_reads, b_units, b_calls, b_bands = [], [], [], []
    for k in then:
        a, b = divmod(k, m)
        beside = [(a + da) * m + b + db for da, db in ((-1, 0), (1, 0), (0, -1), (0, 1))
                  if 0 <= a + da < n and 0 <= b + db < m]  # fmt: skip
        near = {t: [computed[q][t].out for q in beside if t in computed[q]] for t in maps}
        regions, taken = reuse_regions(graph, nodes, made[k], near)
        work = OpWork.of((graph[name], graph[name].flops_per_position * r.out.area)
                         for name, r in regions.items())  # fmt: skip
        b_units.append(work.units)
        b_calls.append(work.calls)
        b_reads.append(segment_inputs(graph, nodes, regions))
        b_bands.append({t: [band for _, band in bands] for t, bands in taken.items() if bands})
    return [
        (first, [reads[k] for k in first], units[first], calls[first], [{}] * len(first)),
        (then, b_reads, np.array(b_units), np.array(b_calls), b_bands),
    ]
