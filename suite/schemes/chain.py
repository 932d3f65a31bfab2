"""PICO's step 1, shared by the fused schemes: the model as a chain of pieces, and fast tile costs.

A *piece* ends wherever the graph narrows to a single tensor: every later node reads only that
tensor or its successors. A chain model (VGG) gives one piece per layer; a residual or inception
block becomes one piece, since its branches must be cut together. Pointwise pieces (a lone ReLU)
join the piece before them, and everything after the last spatial piece (flatten, linear, ...)
is one *tail* piece that runs whole on one device.

`TileCosts` prices tiles of runs of pieces for the schemes' searches, thousands of times a plan.
Rows and columns propagate independently through the region math (`regions.plan_ranges`), so it
walks each axis back one piece at a time, memoised per (piece, axis, range), and keeps each run's
per-node lengths: the n x m tiles of a grid share n + m walks, and runs ending on the same rows
share theirs. A grid's MACs are then per-node products of row and column lengths, summed by op
kind (`cost.OpWork`) in one array product, which a profile prices as two dot products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from suite.cost import OP_INDEX, OpWork
from suite.fleet import Device
from suite.graph import POINTWISE, Graph
from suite.graph.ir import OP_KINDS
from suite.plan import Region
from suite.regions import WHOLE, Box, RegionError, plan_ranges, split_range

Step = tuple[int, list[str], list[tuple[str, dict[str, Region]]]]  # plan.build_stages' (group, nodes, work)


@dataclass(frozen=True)
class Piece:
    nodes: tuple[str, ...]
    input: str  # the one tensor from before the piece it reads
    output: str  # the one tensor it hands on
    spatial: bool


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
    chain: list[Piece] = []
    start = 1  # order[0] is the input
    for k in cuts[1:] if cuts[0] == 0 else cuts:
        nodes = tuple(order[start:k + 1])
        start = k + 1
        piece = Piece(nodes, chain[-1].output if chain else graph.input, nodes[-1],
                      all(graph[n].spatial for n in nodes))  # fmt: skip
        pointwise = all(graph[n].op in POINTWISE for n in nodes)
        if chain and (pointwise or not piece.spatial and not chain[-1].spatial):
            prev = chain.pop()
            piece = Piece(prev.nodes + nodes, prev.input, piece.output, prev.spatial and piece.spatial)
        chain.append(piece)
    return chain


def chain_nodes(chain: Sequence[Piece], i: int, j: int) -> list[str]:
    """The nodes of pieces i..j, in order."""
    return [n for piece in chain[i:j + 1] for n in piece.nodes]


def spatial_prefix(chain: Sequence[Piece]) -> int:
    """How many pieces from the first are spatial: the fused schemes cut those."""
    count = 0
    while count < len(chain) and chain[count].spatial:
        count += 1
    return count


def whole_on(graph: Graph, device: str, nodes: list[str], group: int = 0) -> Step:
    """A step where one device runs `nodes` whole (the tail after the tiled part, a single device)."""
    return group, nodes, [(device, {o: WHOLE for o in graph.boundary(nodes)})]


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
        self.per_position = np.array([n.flops_per_position for n in nodes])
        self.kind = np.zeros((len(nodes), len(OP_KINDS)))  # one-hot op kind per node
        self.kind[np.arange(len(nodes)), [OP_INDEX[n.op] for n in nodes]] = 1
        self.flops = np.array([float(n.flops) for n in nodes])
        self._tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._runs: dict[tuple, list[tuple[tuple[int, int], np.ndarray]]] = {}

    def height(self, k: int) -> int:
        return self.graph[self.chain[k].output].shape[2]

    def width(self, k: int) -> int:
        return self.graph[self.chain[k].output].shape[3]

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
            self._tables[(k, axis)] = (np.stack(starts, axis=1).astype(float),
                                       np.stack(stops, axis=1).astype(float), first.tolist(), last.tolist())
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
        walked = self._walk_down(i, j, axis, span)[:j - i + 1]
        return walked[-1][0], np.concatenate([lengths for _, lengths in reversed(walked)])

    def grid(self, i: int, j: int, rows: Sequence[tuple[int, int]], cols: Sequence[tuple[int, int]]
             ) -> tuple[list[Box], np.ndarray, np.ndarray]:  # fmt: skip
        """For each tile rows[a] x cols[b] of piece j's output (row-major): the box of piece i's
        input it reads, and its MACs and node counts by op kind (arrays of shape tiles x kinds).
        The same sums as `tile`, for a whole grid in one product over its nodes."""
        walked_rows = [self._lengths(i, j, 0, r) for r in rows]
        walked_cols = [self._lengths(i, j, 1, c) for c in cols]
        heights = np.stack([lengths for _, lengths in walked_rows])
        widths = np.stack([lengths for _, lengths in walked_cols])
        nodes = slice(self.offsets[i], self.offsets[j + 1])
        area = heights[:, None, :] * widths[None, :, :]  # rows x cols x nodes
        macs = (area * self.per_position[nodes]) @ self.kind[nodes]
        counts = (area > 0) @ self.kind[nodes]
        boxes = [Box(*r, *c) for r, _ in walked_rows for c, _ in walked_cols]
        kinds = len(OP_KINDS)
        return boxes, macs.reshape(-1, kinds), counts.reshape(-1, kinds)

    def tile(self, i: int, j: int, box: Box) -> tuple[Box, OpWork]:
        """The box of piece i's input and the work for `box` of piece j's output."""
        boxes, macs, counts = self.grid(i, j, [(box.h0, box.h1)], [(box.w0, box.w1)])
        return boxes[0], OpWork(macs[0], counts[0])

    def strips(self, i: int, j: int, rows: Sequence[tuple[int, int]]
               ) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:  # fmt: skip
        """`grid` for full-width row strips: the rows of piece i's input each reads, and their MACs
        and node counts by op kind."""
        boxes, macs, counts = self.grid(i, j, rows, [(0, self.width(j))])
        return [(b.h0, b.h1) for b in boxes], macs, counts

    def row_bytes(self, tensor: str) -> int:
        """Bytes of one full-width row of a map (all channels)."""
        node = self.graph[tensor]
        return node.shape[1] * node.shape[3] * node.itemsize

    def whole(self, i: int, j: int) -> OpWork:
        """Pieces i..j computed whole."""
        nodes = slice(self.offsets[i], self.offsets[j + 1])
        return OpWork(self.flops[nodes] @ self.kind[nodes], self.kind[nodes].sum(axis=0))

    def splits(self, j: int, weights: list[float]) -> list[tuple[int, int]] | None:
        """Row ranges of piece j's output in proportion to `weights`; None if there are too few rows."""
        try:
            return split_range(self.height(j), len(weights), weights)
        except RegionError:
            return None
