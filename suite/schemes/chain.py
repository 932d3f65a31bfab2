"""PICO's step 1, shared by the fused schemes: the model as a chain of pieces, and fast tile costs.

A *piece* ends wherever the graph narrows to a single tensor: every later node reads only that
tensor or its successors. A chain model (VGG) gives one piece per layer; a residual or inception
block becomes one piece, since its branches must be cut together. Pointwise pieces (a lone ReLU)
join the piece before them, and everything after the last spatial piece (flatten, linear, ...)
is one *tail* piece that runs whole on one device.

A squeeze-and-excite branch (`graph.cuts.Branch`) does not end the tiled part: a piece holding one
is tiled in *segments* cut at the branch's map, where the tiles are gathered at the hub, the branch
is computed whole on one device, and its vector goes with the map's rows to the next segment.

`TileCosts` prices tiles of runs of pieces for the schemes' searches, thousands of times a plan.
Rows and columns propagate independently through the region math (`regions.plan_ranges`), so it
walks each axis back one piece at a time, memoised per (piece, axis, range), and keeps each run's
per-node lengths: the n x m tiles of a grid share n + m walks, and runs ending on the same rows
share theirs. A grid's units (`cost.node_work`: MACs, values copied) are then per-node products of row
and column lengths, summed by cost kind (`cost.OpWork`) in one array product, which a profile prices
as two dot products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from suite.cost import KIND_INDEX, OpWork, node_work
from suite.fleet import Device
from suite.graph import POINTWISE, Graph
from suite.graph.cuts import Branch, branches
from suite.graph.ir import COST_KINDS
from suite.plan import Region, Transfer, tensor_bytes
from suite.regions import WHOLE, Box, RegionError, plan_ranges

# a stage as plan.build_stages takes it, before its inputs and transfers: (group, nodes, work)
StageDraft = tuple[int, list[str], list[tuple[str, dict[str, Region]]]]


@dataclass(frozen=True)
class Piece:
    nodes: tuple[str, ...]
    input: str  # the one tensor from before the piece it reads
    output: str  # the one tensor it hands on
    spatial: bool  # it can be tiled (in segments, around its branches)
    branches: tuple[Branch, ...] = ()  # the squeeze-and-excite branches inside it


@dataclass(frozen=True)
class Segment:
    """Tiled nodes of a run between two gathers at the hub: each tile reads its part of the run's
    input and of maps gathered before, and the whole vectors of `branches`, which are computed
    whole (on one device) just before the segment; `outputs` are what is read after it."""

    nodes: tuple[str, ...]
    outputs: tuple[str, ...]
    branches: tuple[Branch, ...]
    run: tuple[int, int] | None = None  # (i, j) when it is all of pieces i..j (no branch cuts them)


def pieces(graph: Graph) -> list[Piece]:
    order = list(graph.nodes)
    position = {n: i for i, n in enumerate(order)}
    last_use = {n: i for i, n in enumerate(order)}
    for name, node in graph.nodes.items():
        for src in node.inputs:
            last_use[src] = max(last_use[src], position[name])
    cuts = []  # indices k where only order[k] is still needed after position k
    reach = 0  # the furthest position any node before k is read at
    for k, name in enumerate(order[:-1]):
        if reach <= k and last_use[name] > k:
            cuts.append(k)
        reach = max(reach, last_use[name])
    cuts.append(len(order) - 1)
    se = branches(graph)
    in_branch = {n for branch in se.values() for n in branch.nodes}
    chain: list[Piece] = []
    start = 1  # order[0] is the input
    for k in cuts[1:] if cuts[0] == 0 else cuts:
        nodes = tuple(order[start : k + 1])
        start = k + 1
        piece = Piece(nodes, chain[-1].output if chain else graph.input, nodes[-1],
                      all(graph[n].spatial or n in in_branch for n in nodes),
                      tuple(dict.fromkeys(se[n] for n in nodes if n in se)))  # fmt: skip
        pointwise = all(graph[n].op in POINTWISE for n in nodes)
        # a lone border (a dynamic "same" pad) joins the window that reads it: alone, a strip of
        # it could lie all in the border and read no row of the map before it
        border = chain and all(graph[n].op == "pad" for n in chain[-1].nodes)
        if chain and (pointwise or border or not piece.spatial and not chain[-1].spatial):
            prev = chain.pop()
            piece = Piece(prev.nodes + nodes, prev.input, piece.output, prev.spatial and piece.spatial,
                          prev.branches + piece.branches)  # fmt: skip
        chain.append(piece)
    return chain


def chain_nodes(chain: Sequence[Piece], i: int, j: int) -> list[str]:
    """The nodes of pieces i..j, in order."""
    return [n for piece in chain[i : j + 1] for n in piece.nodes]


def spatial_prefix(chain: Sequence[Piece]) -> int:
    """How many pieces from the first are spatial: the fused schemes cut those."""
    count = 0
    while count < len(chain) and chain[count].spatial:
        count += 1
    return count


def whole_on(graph: Graph, device: str, nodes: list[str], group: int = 0) -> StageDraft:
    """A step where one device runs `nodes` whole (the tail after the tiled part, a single device)."""
    return group, nodes, [(device, {o: WHOLE for o in graph.boundary(nodes)})]


def tile_transfers(graph: Graph, hub: str, doers: Sequence[str], reads: Sequence[dict[str, Region]],
                   made: Sequence[dict[str, Region]]) -> list[Transfer]:  # fmt: skip
    """Transfers through the hub for tiles done by `doers`: every tile's reads from the hub, in tile
    order, then its outputs back; none for the tiles the hub does itself."""
    ins = [Transfer(hub, d, t, r, tensor_bytes(graph, t, r)) for d, tile in zip(doers, reads)
           for t, r in tile.items() if d != hub]  # fmt: skip
    outs = [Transfer(d, hub, t, r, tensor_bytes(graph, t, r)) for d, tile in zip(doers, made)
            for t, r in tile.items() if d != hub]  # fmt: skip
    return ins + outs


def branch_transfers(graph: Graph, hub: str, device: str, branch: Branch) -> list[Transfer]:
    """A branch computed on `device`: its whole map in from the hub, its vector back."""
    if device == hub:
        return []
    return [Transfer(hub, device, branch.map, WHOLE, graph[branch.map].act_bytes),
            Transfer(device, hub, branch.vector, WHOLE, graph[branch.vector].act_bytes)]  # fmt: skip


def by_capability(devices: Sequence[Device]) -> list[Device]:
    """Most capable first; the first listed wins a tie (as `Fleet.by_capability`)."""
    return sorted(devices, key=lambda d: -d.capability)


class TileCosts:
    """Work and input regions of tiles of runs of pieces, for one model."""

    def __init__(self, graph: Graph, chain: list[Piece]):
        self.graph = graph
        self.chain = chain
        nodes = [graph[n] for piece in chain for n in piece.nodes]
        self.offsets = np.cumsum([0] + [len(p.nodes) for p in chain])  # piece k: offsets[k]..offsets[k+1]
        self.units = np.array([[node_work(n).get(kind, 0.0) for kind in COST_KINDS] for n in nodes])
        positions = np.array([n.shape[2] * n.shape[3] if n.is_map else 1 for n in nodes])
        self.per_position = self.units / positions[:, None]
        self.calls = np.zeros((len(nodes), len(COST_KINDS)))  # `Node.calls` in its cost kind
        self.calls[np.arange(len(nodes)), [KIND_INDEX[n.cost_kind] for n in nodes]] = [n.calls for n in nodes]
        self.position = {n.name: k for k, n in enumerate(nodes)}
        self.users = graph.consumers()
        self._segments: dict[tuple[int, int], list[Segment]] = {}
        self._segment_grids: dict[tuple, tuple[list[dict[str, Box]], np.ndarray, np.ndarray]] = {}
        self._tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._runs: dict[tuple, list[tuple[tuple[int, int], np.ndarray]]] = {}

    def _table(self, k: int, axis: int) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
        """Piece k's ranges along `axis` for every output position p, in one vectorised walk:
        its nodes' starts when the output starts at p and their stops when it stops at p + 1
        (positions x nodes; 0 for a node the output does not need), then its input's."""
        if (k, axis) not in self._tables:
            piece = self.chain[k]
            positions = np.arange(self.graph[piece.output].shape[2 + axis])
            ranges = plan_ranges(self.graph, piece.nodes, {piece.output: (positions, positions + 1)}, axis)
            unused = (np.zeros_like(positions), np.zeros_like(positions))
            starts, stops = zip(*(np.broadcast_arrays(*ranges.get(n, unused)) for n in piece.nodes))
            first, last = np.broadcast_arrays(*ranges[piece.input])
            self._tables[(k, axis)] = (
                np.stack(starts, axis=1).astype(float),
                np.stack(stops, axis=1).astype(float),
                first.tolist(),
                last.tolist(),
            )
        return self._tables[(k, axis)]

    def _walk(self, k: int, axis: int, span: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray]:
        """The range of its input piece k reads along `axis` to produce `span` of its output, and
        each of its nodes' length along the axis (0: not needed)."""
        starts, stops, first, last = self._table(k, axis)
        start, stop = span
        return (first[start], last[stop - 1]), stops[stop - 1] - starts[start]

    def _walk_down(self, i: int, j: int, axis: int, span: tuple[int, int]
                   ) -> list[tuple[tuple[int, int], np.ndarray]]:  # fmt: skip
        """For `span` of piece j's output, each piece's (input range, node lengths) from j down to
        at least i (index 0 is piece j), extended lazily and kept for every run ending at j."""
        walked = self._runs.setdefault((j, axis, span), [])
        while len(walked) <= j - i:
            out = walked[-1][0] if walked else span
            walked.append(self._walk(j - len(walked), axis, out))
        return walked

    def _lengths(self, i: int, j: int, axis: int, span: tuple[int, int]
                 ) -> tuple[tuple[int, int], np.ndarray]:  # fmt: skip
        """Piece i's input range along `axis` and the lengths of every node of pieces i..j, for
        `span` of piece j's output."""
        walked = self._walk_down(i, j, axis, span)[: j - i + 1]
        return walked[-1][0], np.concatenate([lengths for _, lengths in reversed(walked)])

    def grid(self, i: int, j: int, rows: Sequence[tuple[int, int]], cols: Sequence[tuple[int, int]]
             ) -> tuple[list[Box], np.ndarray, np.ndarray]:  # fmt: skip
        """For each tile rows[a] x cols[b] of piece j's output (row-major): the box of piece i's
        input it reads, and its units (`cost.node_work`) and calls by cost kind (arrays of shape
        tiles x kinds), in one product over its nodes."""
        walked_rows = [self._lengths(i, j, 0, r) for r in rows]
        walked_cols = [self._lengths(i, j, 1, c) for c in cols]
        heights = np.stack([lengths for _, lengths in walked_rows])
        widths = np.stack([lengths for _, lengths in walked_cols])
        macs, calls = self._tiles_work(heights, widths, slice(self.offsets[i], self.offsets[j + 1]))
        return [Box(*r, *c) for r, _ in walked_rows for c, _ in walked_cols], macs, calls

    def _tiles_work(self, heights: np.ndarray, widths: np.ndarray, at: slice | list[int]
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Units and calls by cost kind (tiles x kinds, row-major) of the tiles whose nodes `at` have
        `heights` (rows x nodes) and `widths` (cols x nodes); a node of length 0 is not computed."""
        area = heights[:, None, :] * widths[None, :, :]  # rows x cols x nodes
        units = area @ self.per_position[at]
        calls = (area > 0) @ self.calls[at]
        return units.reshape(-1, len(COST_KINDS)), calls.reshape(-1, len(COST_KINDS))

    def whole(self, i: int, j: int) -> OpWork:
        """Pieces i..j computed whole."""
        return self._whole_work(slice(self.offsets[i], self.offsets[j + 1]))

    def nodes_work(self, names: Sequence[str]) -> OpWork:
        """`names` computed whole."""
        return self._whole_work([self.position[n] for n in names])

    def _whole_work(self, at: slice | list[int]) -> OpWork:
        return OpWork(self.units[at].sum(axis=0), self.calls[at].sum(axis=0))

    def branched(self, i: int, j: int) -> bool:
        """Whether pieces i..j hold a squeeze-and-excite branch: then they are tiled in segments."""
        return any(piece.branches for piece in self.chain[i : j + 1])

    def segments(self, i: int, j: int) -> list[Segment]:
        """Pieces i..j cut where their squeeze-and-excite branches need a whole map."""
        if (i, j) not in self._segments:
            found = list(dict.fromkeys(b for piece in self.chain[i : j + 1] for b in piece.branches))
            skip = {n for branch in found for n in branch.nodes}
            maps = {branch.map for branch in found}
            cut: list[list[str]] = [[]]
            for name in chain_nodes(self.chain, i, j):
                if name not in skip:
                    cut[-1].append(name)
                    if name in maps:
                        cut.append([])
            if not found:
                nodes = tuple(cut[0])
                self._segments[(i, j)] = [Segment(nodes, (self.chain[j].output,), (), (i, j))]
                return self._segments[(i, j)]
            segments, pending = [], found
            for nodes in filter(None, cut):
                inside = set(nodes)
                outputs = tuple(n for n in nodes if n in self.graph.outputs
                                or any(u not in inside for u in self.users[n]))  # fmt: skip
                reads = {src for n in nodes for src in self.graph[n].inputs}
                first = tuple(b for b in pending if b.vector in reads)  # computed just before it
                segments.append(Segment(tuple(nodes), outputs, first))
                pending = [b for b in pending if b.vector not in reads]
            self._segments[(i, j)] = segments
        return self._segments[(i, j)]

    def segment_grid(self, segment: Segment, rows: dict[str, Sequence[tuple[int, int]]],
                     cols: dict[str, Sequence[tuple[int, int]]]
                     ) -> tuple[list[dict[str, Box]], np.ndarray, np.ndarray]:  # fmt: skip
        """`grid` for a segment, whose outputs are cut alike: tile (a, b) is rows[o][a] x cols[o][b] of
        every output o. For each tile (row-major): the boxes it reads of tensors from before the
        segment, and its units and calls by cost kind."""
        if segment.run is not None:  # one output, one input: the memoised walks of `grid`
            (output,), (i, j) = segment.outputs, segment.run
            boxes, macs, calls = self.grid(i, j, rows[output], cols[output])
            return [{self.chain[i].input: box} for box in boxes], macs, calls
        key = (segment.nodes[0], segment.nodes[-1], tuple(tuple(rows[o]) for o in segment.outputs),
               tuple(tuple(cols[o]) for o in segment.outputs))  # fmt: skip
        if key not in self._segment_grids:
            walks = [self._segment_walk(segment, axis, spans) for axis, spans in enumerate((rows, cols))]
            (row_reads, heights), (col_reads, widths) = walks
            macs, calls = self._tiles_work(heights, widths, [self.position[n] for n in segment.nodes])
            reads = [{t: Box(*r[t], *c[t]) for t in r} for r in row_reads for c in col_reads]
            self._segment_grids[key] = (reads, macs, calls)
        return self._segment_grids[key]

    def _segment_walk(self, segment: Segment, axis: int, spans: dict[str, Sequence[tuple[int, int]]]
                      ) -> tuple[list[dict[str, tuple[int, int]]], np.ndarray]:  # fmt: skip
        """Along `axis`, for the k-th span of every output: the ranges read of each tensor from before
        the segment, and the lengths of its nodes (k x nodes; 0 where a node is not needed)."""
        tiles = len(next(iter(spans.values())))
        requested = {o: (np.array([a for a, _ in s]), np.array([b for _, b in s])) for o, s in spans.items()}
        ranges = plan_ranges(self.graph, segment.nodes, requested, axis)
        spans = {t: np.broadcast_arrays(*span, np.zeros(tiles, dtype=int))[:2] for t, span in ranges.items()}
        unused = np.zeros(tiles)
        lengths = np.stack([spans[n][1] - spans[n][0] if n in spans else unused for n in segment.nodes],
                           axis=1)  # fmt: skip
        inside = set(segment.nodes)
        outside = {t: span for t, span in spans.items() if t not in inside}
        return ([{t: (int(a[k]), int(b[k])) for t, (a, b) in outside.items()} for k in range(tiles)],
                lengths.astype(float))  # fmt: skip

    def output_splits(self, segment: Segment, parts: Callable[[int], list[tuple[int, int]]], axis: int
                      ) -> dict[str, list[tuple[int, int]]] | None:  # fmt: skip
        """Each output of the segment cut along `axis` by `parts` (a length's ranges); None where an
        output is too small for them, or they give outputs different numbers of ranges."""
        try:
            cut = {o: parts(self.graph[o].shape[2 + axis]) for o in segment.outputs}
        except RegionError:
            return None
        return cut if len({len(c) for c in cut.values()}) == 1 else None
