"""Regions of tensors, and the receptive-field math: which region of every node a tile must compute,
and what it reads.

A region is one of three types: a `Box` of a feature map (half-open over its H and W axes; channels
are always whole), a `FeatureRange` of a vector's last axis (a linear layer's output features), or
`WHOLE`, the whole tensor. Plans store them as JSON (`[h0, h1, w0, w1]`, `[f0, f1]`, `null`);
`region_from_json` is the one place that reads that form.

Going backwards from the requested output boxes, every node's box is the hull of what its
consumers read. For a windowed op (conv, pool) the input rows are
`[o0 * s - pad, (o1 - 1) * s - pad + d * (k - 1) + 1)`: PICO's `h_in = (h_out - 1) * s + k` with
padding and dilation. The part of that range outside the map is padding (`NodeRegion.pad`), the
part inside is real data (`NodeRegion.reads`), of which rows beyond the tile's own are its halo.
A resize reads from the first input row its first output row's coordinate falls at to the last
one its last output row's falls before (`suite.graph.resampling`), on the whole map's coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from suite.errors import UserError
from suite.graph import Graph, Node

T = TypeVar("T")  # a tensor, or anything indexed like one
P = TypeVar("P")  # a part of a tensor the receptive-field walk needs: a box, or a range along one axis


class RegionError(UserError):
    """A partition the model cannot take (names the node and the reason)."""


@dataclass(frozen=True, order=True)
class Box:
    """Half-open box [h0, h1) x [w0, w1) of a feature map, all channels."""

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

    def shape(self, full: Sequence[int]) -> tuple[int, ...]:
        """Shape of this box of a tensor whose whole shape is `full` (NCHW)."""
        return (*full[:2], self.height, self.width)

    def hull(self, other: Box) -> Box:
        return Box(min(self.h0, other.h0), max(self.h1, other.h1),
                   min(self.w0, other.w0), max(self.w1, other.w1))  # fmt: skip

    def contains(self, other: Box) -> bool:
        return (self.h0 <= other.h0 and other.h1 <= self.h1
                and self.w0 <= other.w0 and other.w1 <= self.w1)  # fmt: skip

    def intersects(self, other: Box) -> bool:
        return self.h0 < other.h1 and other.h0 < self.h1 and self.w0 < other.w1 and other.w0 < self.w1

    @property
    def index(self) -> tuple:
        """Index that cuts this box out of an NCHW tensor of the whole map: `t[box.index]`."""
        return (..., slice(self.h0, self.h1), slice(self.w0, self.w1))

    def within(self, outer: Box) -> tuple:
        """Index that cuts this box out of an NCHW tensor covering only `outer`."""
        return (..., slice(self.h0 - outer.h0, self.h1 - outer.h0),
                slice(self.w0 - outer.w0, self.w1 - outer.w0))  # fmt: skip

    def to_json(self) -> list[int]:
        return [self.h0, self.h1, self.w0, self.w1]

    def __str__(self) -> str:
        return f"rows {self.h0}-{self.h1} cols {self.w0}-{self.w1}"


@dataclass(frozen=True, order=True)
class FeatureRange:
    """Half-open range [start, stop) of a tensor's last axis: a share of a linear layer's outputs."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def shape(self, full: Sequence[int]) -> tuple[int, ...]:
        return (*full[:-1], self.size)

    def hull(self, other: FeatureRange) -> FeatureRange:
        return FeatureRange(min(self.start, other.start), max(self.stop, other.stop))

    def contains(self, other: FeatureRange) -> bool:
        return self.start <= other.start and other.stop <= self.stop

    def intersects(self, other: FeatureRange) -> bool:
        return self.start < other.stop and other.start < self.stop

    @property
    def rows(self) -> slice:
        """The rows of a linear layer's weight that compute these features."""
        return slice(self.start, self.stop)

    def within(self, outer: FeatureRange) -> tuple:
        """Index that cuts this range out of a tensor covering only `outer`."""
        return (..., slice(self.start - outer.start, self.stop - outer.start))

    def to_json(self) -> list[int]:
        return [self.start, self.stop]

    def __str__(self) -> str:
        return f"features {self.start}-{self.stop}"


@dataclass(frozen=True)
class Whole:
    """The whole tensor."""

    def shape(self, full: Sequence[int]) -> tuple[int, ...]:
        return tuple(full)

    def to_json(self) -> None:
        return None

    def __str__(self) -> str:
        return "whole"


WHOLE = Whole()
Region = Box | FeatureRange | Whole
Part = Box | FeatureRange  # a region as coordinates
Bound = int | np.ndarray  # a range's bound along one axis, or the bounds of many ranges at once


def full_box(node: Node) -> Box:
    return Box(0, node.shape[2], 0, node.shape[3])


def full_part(node: Node) -> Part:
    """The whole of a node's output as coordinates: its map's box, or its vector's feature range."""
    return full_box(node) if node.is_map else FeatureRange(0, node.shape[-1])


def as_part(region: Region, node: Node) -> Part:
    """`region` of `node`'s output as coordinates (WHOLE becomes the full box or range)."""
    return full_part(node) if isinstance(region, Whole) else region


def normalized(region: Region, node: Node) -> Region:
    """WHOLE where `region` covers all of `node`'s output, so equal regions compare equal."""
    return WHOLE if region == full_part(node) else region


def hull_of(regions: Iterable[Region], node: Node) -> Region:
    """The smallest region of `node`'s output holding all of `regions`."""
    parts = [as_part(r, node) for r in regions]
    if not parts:
        raise ValueError(f"no regions of '{node.name}' to take the hull of")
    hull = parts[0]
    for part in parts[1:]:
        if type(part) is not type(hull):
            raise RegionError(f"regions of '{node.name}' mix a box and a feature range")
        hull = hull.hull(part)
    return normalized(hull, node)


def index_in(region: Region, held: Region, node: Node) -> tuple:
    """Index that cuts `region` of `node`'s output out of a tensor holding `held` of it."""
    inner, outer = as_part(region, node), as_part(held, node)
    if type(inner) is not type(outer) or not outer.contains(inner):
        raise RegionError(f"'{node.name}': {region} is not inside the {held} held")
    return inner.within(outer)


def part_of(tile: tuple[Region, T], region: Region, node: Node) -> T:
    """`region` of `node`'s output out of a tile (the part held, a tensor holding it): the tensor
    itself when they are the same part."""
    held, value = tile
    return value if as_part(region, node) == as_part(held, node) else value[index_in(region, held, node)]


def region_size(region: Region, node: Node) -> int:
    """Elements of `region` of `node`'s output."""
    return math.prod(region.shape(node.shape))


def region_from_json(value: object) -> Region:
    """A region from its JSON form: null, [f0, f1] or [h0, h1, w0, w1] (non-negative, increasing)."""
    if value is None:
        return WHOLE
    if (isinstance(value, list) and len(value) in (2, 4)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
            and all(a < b for a, b in zip(value[::2], value[1::2]))):  # fmt: skip
        return FeatureRange(*value) if len(value) == 2 else Box(*value)
    raise RegionError(f"{value!r} is not a region: null (whole), [f0, f1] or [h0, h1, w0, w1] with "
                      "non-negative, increasing bounds")  # fmt: skip


@dataclass(frozen=True)
class NodeRegion:
    """What one tile computes of one node.

    `out`: the part of the node's output it produces (a box of a map; a feature range of a split
    linear layer). `reads`: per input, the region of real data it reads. `pad`: for windowed ops,
    (top, bottom, left, right) rows and columns of the window that fall outside the input map (the
    op's zero padding, or the ceil-mode overhang).
    """

    out: Part
    reads: tuple[Region, ...]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)


def _window_input(node: Node, axis: int, start: Bound, stop: Bound) -> tuple[Bound, Bound]:
    w = node.window
    first = start * w.stride[axis] - w.pad_begin[axis]
    return first, (stop - 1) * w.stride[axis] - w.pad_begin[axis] + w.span(axis)


def node_region(graph: Graph, node: Node, out: Box) -> NodeRegion:
    """The inputs a spatial node reads to produce `out`."""
    if node.op == "scale":  # the map where the tile is, its per-channel vector whole
        return NodeRegion(out, (out, WHOLE))
    if node.op == "resize":
        rows = _reads_along(graph, node, 0, out.h0, out.h1)
        cols = _reads_along(graph, node, 1, out.w0, out.w1)
        return NodeRegion(out, (Box(*rows, *cols),))
    if node.window is None:
        return NodeRegion(out, tuple(out for _ in node.inputs))
    in_h, in_w = graph[node.inputs[0]].shape[2:]
    h0, h1 = _window_input(node, 0, out.h0, out.h1)
    w0, w1 = _window_input(node, 1, out.w0, out.w1)
    real = Box(max(h0, 0), min(h1, in_h), max(w0, 0), min(w1, in_w))
    pad = (real.h0 - h0, h1 - real.h1, real.w0 - w0, w1 - real.w1)
    return NodeRegion(out, (real,), pad)


def feature_region(node: Node, out: FeatureRange) -> NodeRegion:
    """A share of a linear layer's output features: it reads its whole input."""
    if node.op != "linear":
        raise RegionError(f"node '{node.name}' ({node.op}) cannot compute a feature range; only a "
                          "linear layer splits by output features")  # fmt: skip
    return NodeRegion(out, (WHOLE,))


def _reads_along(graph: Graph, node: Node, axis: int, start: Bound, stop: Bound, lo=min, hi=max
                 ) -> tuple[Bound, Bound]:  # fmt: skip
    """The real input range along `axis` (0: rows, 1: columns) a spatial node reads to produce
    [start, stop) of its output; every map input of a non-windowed node is read alike. `lo` and
    `hi` are min and max, or numpy's elementwise ones for array bounds."""
    if node.op == "resize":  # the input positions the whole map's coordinates fall between
        return node.attrs["resampling"].reads(axis, start, stop)
    if node.window is None:
        return start, stop
    first, last = _window_input(node, axis, start, stop)
    return hi(first, 0), lo(last, graph[node.inputs[0]].shape[2 + axis])


def plan_ranges(graph: Graph, nodes: Sequence[str], requested: Mapping[str, tuple[Bound, Bound]], axis: int
                ) -> dict[str, tuple[Bound, Bound]]:  # fmt: skip
    """`plan_regions` along one axis: the range each node of the segment must produce, and the range
    it reads of each tensor from outside the segment.

    Rows and columns propagate independently (a window's input rows depend only on its output
    rows, and the hull of boxes is the hull of their ranges), so a box's regions are the product of
    two such walks. Better still, a range's start propagates from the output's start alone and its
    stop from the output's stop alone, so bounds may be arrays: one walk then answers many ranges
    at once, elementwise (`schemes.chain.TileCosts` tabulates every output position this way).
    """
    arrays = any(isinstance(b, np.ndarray) for span in requested.values() for b in span)
    lo, hi = (np.minimum, np.maximum) if arrays else (min, max)

    def reads(node: Node, span: tuple[Bound, Bound]) -> list[tuple[Bound, Bound]]:
        start, stop = span
        if (stop <= start).any() if arrays else stop <= start:
            what = "rows" if axis == 0 else "columns"
            raise RegionError(f"node '{node.name}' would compute an empty region ({what} {start}-{stop})")
        first, last = _reads_along(graph, node, axis, start, stop, lo, hi)
        # a scale's per-channel vector is read whole
        return [(0, graph[src].shape[2 + axis]) if node.op == "scale" and k == 1 else (first, last)
                for k, src in enumerate(node.inputs)]  # fmt: skip

    need = _walk_back(graph, nodes, requested, reads, lambda a, b: (lo(a[0], b[0]), hi(a[1], b[1])))
    in_segment = set(nodes)
    return {n: need[n] for n in need if n in in_segment or n not in requested}


def _walk_back(
    graph: Graph,
    nodes: Sequence[str],
    requested: Mapping[str, P],
    reads: Callable[[Node, P], Sequence[P]],
    hull: Callable[[P, P], P],
) -> dict[str, P]:
    """The one backward walk of the receptive-field math: from the parts `requested` of a segment's
    outputs, each node of `nodes` (spatial, in topological order) that they depend on, last first.
    `reads(node, part)` gives the part of each of its inputs the node reads to produce `part` of
    its own; a tensor read by several nodes is needed as the `hull` of their reads. Returns the
    part needed of every node reached, and of every tensor from outside the segment read."""
    need = dict(requested)
    for name in reversed(nodes):
        if name not in need:
            continue
        node = graph[name]
        if not node.spatial:
            raise RegionError(f"node '{name}' ({node.op}) mixes the whole map and cannot be tiled")
        for src, read in zip(node.inputs, reads(node, need[name])):
            need[src] = read if src not in need else hull(need[src], read)
    return need


def plan_regions(graph: Graph, nodes: Sequence[str], requested: Mapping[str, Box]
                 ) -> dict[str, NodeRegion]:  # fmt: skip
    """Regions of `nodes` (a spatial segment, in topological order) for the requested outputs.

    Nodes that no requested output depends on are left out.
    """
    rows = plan_ranges(graph, nodes, {t: (b.h0, b.h1) for t, b in requested.items()}, 0)
    cols = plan_ranges(graph, nodes, {t: (b.w0, b.w1) for t, b in requested.items()}, 1)
    return {n: node_region(graph, graph[n], Box(*rows[n], *cols[n])) for n in nodes if n in rows}


def reuse_bands(need: Box, beside: Sequence[Box]) -> tuple[Box, tuple[tuple[int, Box], ...]]:
    """DeepThings' data reuse at one map: of the box `need` that a tile must hold, the box it still
    computes and the bands it takes from neighbours that computed `beside` (boxes of the same map).

    A neighbour gives the band of `need` on its side: one that covers all of need's columns and its
    top (bottom) rows gives those rows, one that covers all its rows and its left (right) columns
    gives those columns; corners come twice, as in DeepThings' `ftp.c`. Where the bands along an
    axis would leave nothing to compute, the tile takes none along it and computes that axis whole.
    Returns (the box computed, ((index into `beside`, band), ...)); given its own bands as
    `beside`, it returns the same box and takes every band.
    """
    computed = [need.h0, need.h1, need.w0, need.w1]
    taken: list[tuple[int, Box]] = []
    for axis in (0, 1):
        first, last = (need.h0, need.h1) if axis == 0 else (need.w0, need.w1)
        across = (need.w0, need.w1) if axis == 0 else (need.h0, need.h1)
        start, stop, bands = first, last, []
        for k, box in enumerate(beside):
            lo, hi = (box.h0, box.h1) if axis == 0 else (box.w0, box.w1)
            a0, a1 = (box.w0, box.w1) if axis == 0 else (box.h0, box.h1)
            if not (a0 <= across[0] and across[1] <= a1):
                continue  # it does not cover the tile across this axis: no band
            if lo <= first < hi:  # covers the start
                start = max(start, min(hi, last))
                bands.append((k, first, min(hi, last)))
            elif lo < last <= hi:  # covers the end
                stop = min(stop, max(lo, first))
                bands.append((k, max(lo, first), last))
        if start < stop:
            computed[2 * axis : 2 * axis + 2] = [start, stop]
            taken += [(k, Box(a, b, *across) if axis == 0 else Box(*across, a, b)) for k, a, b in bands]
    return Box(*computed), tuple(taken)


def reuse_regions(
    graph: Graph, nodes: Sequence[str], requested: Mapping[str, Box], beside: Mapping[str, Sequence[Box]]
) -> tuple[dict[str, NodeRegion], dict[str, tuple]]:
    """`plan_regions` for a tile that, at each map t of `beside`, takes the bands of what it needs
    that neighbours computed (`beside[t]`: their boxes of t) instead of computing them
    (`reuse_bands`). Returns the regions it computes, and per map the bands it takes as ((index
    into beside[t], band), ...)."""
    regions: dict[str, NodeRegion] = {}
    taken: dict[str, tuple] = {}

    def reads(node: Node, out: Box) -> list[Part]:
        if out.height <= 0 or out.width <= 0:
            raise RegionError(f"node '{node.name}' would compute an empty region ({out})")
        if node.name in beside:
            out, taken[node.name] = reuse_bands(out, beside[node.name])
        regions[node.name] = node_region(graph, node, out)
        return [as_part(read, graph[src]) for src, read in zip(node.inputs, regions[node.name].reads)]

    _walk_back(graph, nodes, requested, reads, Box.hull)
    return {n: regions[n] for n in nodes if n in regions}, taken


def segment_inputs(graph: Graph, nodes: Iterable[str], regions: Mapping[str, NodeRegion]
                   ) -> dict[str, Region]:  # fmt: skip
    """The regions a segment's tile reads of tensors from outside the segment."""
    inside = set(nodes)
    reads: dict[str, list[Region]] = {}
    for name, region in regions.items():
        for src, read in zip(graph[name].inputs, region.reads):
            if src not in inside:
                reads.setdefault(src, []).append(read)
    return {src: hull_of(held, graph[src]) for src, held in reads.items()}


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


def split_range_up(length: int, parts: int) -> list[tuple[int, int]]:
    """DeepThings' grid (`ftp.c`): every part ceil(length / parts) long, the last one the rest
    (38 in 3: 13, 13, 12, where `split_range` gives 13, 12, 13)."""
    step = -(-length // parts) if parts >= 1 else 0
    if parts < 1 or step * (parts - 1) >= length:
        raise RegionError(f"{parts} parts of {step} leave nothing of {length} rows/columns for the last; "
                          "use fewer parts or --grid-rounding nearest")  # fmt: skip
    cuts = [min(k * step, length) for k in range(parts)] + [length]
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
