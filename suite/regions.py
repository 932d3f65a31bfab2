"""Receptive-field math: which region of every node a tile must compute, and what it reads.

Coordinates are half-open boxes over the (H, W) axes of a node's output map; channels are always
whole. Going backwards from the requested output boxes, every node's box is the hull of what its
consumers read. For a windowed op (conv, pool) the input rows are
`[o0 * s - pad, (o1 - 1) * s - pad + d * (k - 1) + 1)`: PICO's `h_in = (h_out - 1) * s + k` with
padding and dilation. The part of that range outside the map is padding (`NodeRegion.pad`), the
part inside is real data (`NodeRegion.reads`), of which rows beyond the tile's own are its halo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from suite.errors import UserError
from suite.graph import Graph, Node


class RegionError(UserError):
    """A partition the model cannot take (names the node and the reason)."""


@dataclass(frozen=True)
class Box:
    """Half-open box [h0, h1) x [w0, w1) of a feature map."""

    h0: int
    h1: int
    w0: int
    w1: int

    @property
    def height(self) -> int:
        return self.h1 - self.h0

    @property
    def width(self) -> int:
        return self.w1 - self.w0

    @property
    def area(self) -> int:
        return max(self.height, 0) * max(self.width, 0)

    def hull(self, other: Box) -> Box:
        return Box(min(self.h0, other.h0), max(self.h1, other.h1),
                   min(self.w0, other.w0), max(self.w1, other.w1))  # fmt: skip

    def contains(self, other: Box) -> bool:
        return (self.h0 <= other.h0 and other.h1 <= self.h1
                and self.w0 <= other.w0 and other.w1 <= self.w1)  # fmt: skip

    @property
    def index(self) -> tuple:
        """Index that cuts this box out of an NCHW tensor of the whole map: `t[box.index]`."""
        return (..., slice(self.h0, self.h1), slice(self.w0, self.w1))

    def within(self, outer: Box) -> tuple:
        """Index that cuts this box out of an NCHW tensor covering only `outer`."""
        return (..., slice(self.h0 - outer.h0, self.h1 - outer.h0),
                slice(self.w0 - outer.w0, self.w1 - outer.w0))  # fmt: skip


def full_box(node: Node) -> Box:
    return Box(0, node.shape[2], 0, node.shape[3])


@dataclass(frozen=True)
class NodeRegion:
    """What one tile computes of one node.

    `out`: the box of the node's output it produces. `reads`: per input, the box of real data it
    reads. `pad`: for windowed ops, (top, bottom, left, right) rows and columns of the window that
    fall outside the input map (the op's zero padding, or the ceil-mode overhang).
    """

    out: Box
    reads: tuple[Box, ...]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)


def _window_input(node: Node, axis: int, start: int, stop: int) -> tuple[int, int]:
    w = node.window
    first = start * w.stride[axis] - w.pad_begin[axis]
    return first, (stop - 1) * w.stride[axis] - w.pad_begin[axis] + w.span(axis)


def node_region(graph: Graph, node: Node, out: Box) -> NodeRegion:
    """The inputs a spatial node reads to produce `out`."""
    if node.op == "scale":  # the map where the tile is, its per-channel vector whole
        return NodeRegion(out, (out, full_box(graph[node.inputs[1]])))
    if node.window is None:
        return NodeRegion(out, tuple(out for _ in node.inputs))
    in_h, in_w = graph[node.inputs[0]].shape[2:]
    h0, h1 = _window_input(node, 0, out.h0, out.h1)
    w0, w1 = _window_input(node, 1, out.w0, out.w1)
    real = Box(max(h0, 0), min(h1, in_h), max(w0, 0), min(w1, in_w))
    pad = (real.h0 - h0, h1 - real.h1, real.w0 - w0, w1 - real.w1)
    return NodeRegion(out, (real,), pad)


def plan_regions(graph: Graph, nodes: Sequence[str], requested: Mapping[str, Box]
                 ) -> dict[str, NodeRegion]:  # fmt: skip
    """Regions of `nodes` (a spatial segment, in topological order) for the requested outputs.

    Nodes that no requested output depends on are left out.
    """
    in_segment = set(nodes)
    need: dict[str, Box] = dict(requested)
    regions: dict[str, NodeRegion] = {}
    for name in reversed(nodes):
        if name not in need:
            continue
        node = graph[name]
        if not node.spatial:
            raise RegionError(f"node '{name}' ({node.op}) mixes the whole map and cannot be tiled")
        region = node_region(graph, node, need[name])
        if region.out.area <= 0:
            raise RegionError(f"node '{name}' would compute an empty region {region.out}")
        regions[name] = region
        for src, box in zip(node.inputs, region.reads):
            if src in in_segment:
                need[src] = need[src].hull(box) if src in need else box
    return {n: regions[n] for n in nodes if n in regions}


def segment_inputs(graph: Graph, nodes: Iterable[str], regions: Mapping[str, NodeRegion]
                   ) -> dict[str, Box]:  # fmt: skip
    """Boxes a segment's tile reads from nodes outside the segment."""
    inside = set(nodes)
    boxes: dict[str, Box] = {}
    for name, region in regions.items():
        for src, box in zip(graph[name].inputs, region.reads):
            if src not in inside:
                boxes[src] = boxes[src].hull(box) if src in boxes else box
    return boxes


def split_range(length: int, parts: int, weights: Sequence[float] | None = None
                ) -> list[tuple[int, int]]:  # fmt: skip
    """Cut [0, length) into `parts` contiguous non-empty ranges, proportional to `weights`."""
    weights = list(weights) if weights is not None else [1.0] * parts
    if parts < 1 or len(weights) != parts:
        raise RegionError(f"cannot cut into {parts} parts with {len(weights)} weights")
    if parts > length:
        raise RegionError(f"{parts} parts but only {length} rows/columns to share")
    total = sum(weights)
    cuts = [0]
    acc = 0.0
    for i, w in enumerate(weights[:-1]):
        acc += w
        cut = round(length * acc / total)
        # keep every part at least one row, leaving room for the parts still to come
        cut = min(max(cut, cuts[-1] + 1), length - (parts - 1 - i))
        cuts.append(cut)
    cuts.append(length)
    return list(zip(cuts[:-1], cuts[1:]))


def tile_boxes(node: Node, rows: int, cols: int = 1) -> list[Box]:
    """An even `rows` x `cols` grid of boxes over a node's output map, row-major."""
    height, width = node.shape[2], node.shape[3]
    try:
        hs = split_range(height, rows)
        ws = split_range(width, cols)
    except RegionError:
        raise RegionError(
            f"a {rows}x{cols} split needs at least {rows} rows and {cols} columns, "
            f"but node '{node.name}' outputs {height}x{width}; use fewer parts or a larger input"
        ) from None
    return [Box(h0, h1, w0, w1) for h0, h1 in hs for w0, w1 in ws]


def region_flops(graph: Graph, regions: Mapping[str, NodeRegion]) -> float:
    """FLOPs a tile spends to compute its regions."""
    return sum(graph[n].flops_per_position * r.out.area for n, r in regions.items())


def redundancy(graph: Graph, nodes: Iterable[str], tiles: Sequence[Mapping[str, NodeRegion]]
               ) -> float:  # fmt: skip
    """Extra FLOPs of the tiles over computing `nodes` once, as a fraction (0.055 = 5.5 %)."""
    whole = sum(graph[n].flops for n in nodes)
    if whole == 0:
        return 0.0
    return sum(region_flops(graph, t) for t in tiles) / whole - 1.0
