"""PICO's step 1, shared by the fused schemes: the model as a chain of pieces, and fast strip costs.

A *piece* ends wherever the graph narrows to a single tensor: every later node reads only that
tensor or its successors. A chain model (VGG) gives one piece per layer; a residual or inception
block becomes one piece, since its branches must be cut together. Pointwise pieces (a lone ReLU)
join the piece before them, and everything after the last spatial piece (flatten, linear, ...)
is one *tail* piece that runs whole on one device.

`StripCosts` and the schemes treat the pieces from the first non-spatial one onwards as a tail,
computed whole by one device.

`StripCosts` walks row strips backwards through pieces, one piece at a time, with memoised row
ranges; a stage of pieces i..j cut into strips costs only dictionary lookups once piece j's strips
have been seen, which keeps PICO's dynamic programme and DeepThings' search fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from suite.graph import POINTWISE, Graph
from suite.regions import Box, RegionError, plan_regions, segment_inputs, split_range

if TYPE_CHECKING:
    from suite.fleet import Profile


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


class StripCosts:
    """Costs of row strips of runs of pieces, for one model and one device profile."""

    def __init__(self, graph: Graph, chain: list[Piece]):
        self.graph = graph
        self.chain = chain
        self.back = cache(self._back)

    def height(self, k: int) -> int:
        return self.graph[self.chain[k].output].shape[2]

    def _back(self, k: int, box: Box) -> tuple[Box, tuple[tuple[str, float], ...]]:
        """The box of its input piece k reads to produce `box` of its output, and (op, MACs) per node."""
        piece = self.chain[k]
        regions = plan_regions(self.graph, piece.nodes, {piece.output: box})
        macs = tuple((self.graph[n].op, self.graph[n].flops_per_position * r.out.area)
                     for n, r in regions.items())  # fmt: skip
        return segment_inputs(self.graph, piece.nodes, regions)[piece.input], macs

    def tile(self, i: int, j: int, box: Box) -> tuple[Box, list[tuple[str, float]]]:
        """The box of piece i's input and the (op, MACs) of every node for `box` of piece j's output."""
        work: list[tuple[str, float]] = []
        for k in range(j, i - 1, -1):
            box, macs = self.back(k, box)
            work.extend(macs)
        return box, work

    def strip(self, i: int, j: int, rows: tuple[int, int]) -> tuple[tuple[int, int], list[tuple[str, float]]]:
        """`tile` for full-width rows."""
        box, work = self.tile(i, j, Box(*rows, 0, self.graph[self.chain[j].output].shape[3]))
        return (box.h0, box.h1), work

    def whole(self, i: int, j: int) -> list[tuple[str, float]]:
        return [(self.graph[n].op, float(self.graph[n].flops))
                for k in range(i, j + 1) for n in self.chain[k].nodes]  # fmt: skip

    def splits(self, j: int, weights: list[float]) -> list[tuple[int, int]] | None:
        """Row ranges of piece j's output in proportion to `weights`; None if there are too few rows."""
        try:
            return split_range(self.height(j), len(weights), weights)
        except RegionError:
            return None


def work_time(profile: Profile, work: list[tuple[str, float]]) -> float:
    return sum(profile.node_time(op, macs) for op, macs in work)
