"""Split a model's spatial layers into tiles, run them, stitch, and compare with the monolithic model.

Two ways to cut: *fused* (every tile runs all spatial layers from its slice of the input, as
DeepThings and PICO do) and *layer-wise* (every layer is cut and gathered before the next, as MoDNN
does). Layers that mix the whole map (global pooling, flatten, linear) and everything after them
run unpartitioned on the stitched map. The verdict is bitwise: the float32 bit patterns of the
stitched output and of the monolithic model's output, on the same backend, are equal.

A backend's reference is its own arithmetic (onnxruntime's session, the exact torch kernels' whole
map), so the report also says how far that reference lies from the model as PyTorch computes it:
two wrong kernels can agree with each other bit for bit, but not with the module's own forward.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from suite.backends import Prepared, Tile, one_thread, run_segment, run_whole
from suite.graph.cuts import (
    coverage,
    first_unpartitioned,
    front_branches,
    layers,
    segments,
    spatial_front,
)  # fmt: skip
from suite.regions import (
    WHOLE,
    NodeRegion,
    RegionError,
    index_in,
    plan_regions,
    redundancy,
    region_flops,
    tile_boxes,
)  # fmt: skip

# Relative distance (max |diff| over max |output|) beyond which a backend's whole-model output is not
# the module's: summation orders alone move a float32 CNN's output by about 1e-6 of its range.
NATIVE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Comparison:
    bit_exact: bool
    max_abs_diff: float
    max_ulp: int


def _ordered(x: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns mapped to integers that count ULPs monotonically."""
    bits = x.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def compare_tensors(actual: torch.Tensor, expected: torch.Tensor) -> Comparison:
    """Bit-exact or not, and when not, by how much (absolute and in units in the last place)."""
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}")
    a, e = actual.float(), expected.float()
    exact = torch.equal(a.contiguous().view(torch.int32), e.contiguous().view(torch.int32))
    if exact:
        return Comparison(True, 0.0, 0)
    return Comparison(False, float((a - e).abs().max()), int((_ordered(a) - _ordered(e)).abs().max()))


@dataclass
class VerifyReport:
    model: str
    input_shape: tuple[int, ...]
    backend: str
    mode: str
    parts: int | None
    grid: str | None
    bit_exact: bool
    max_abs_diff: float
    max_ulp: int
    first_mismatch: str | None
    ir_matches_monolithic: bool
    tiles: int
    tiled_nodes: int
    redundancy: float
    unpartitioned_from: str | None
    tiled_share: float  # of the model's MACs, computed in tiles
    tiling_stops: list[dict]  # {"node", "op", "reason"} of each node where tiling ends
    reference: str = ""  # what the tiles were compared with (`Prepared.reference`)
    native_rel_diff: float | None = None  # the reference against the module's forward on PyTorch's kernels
    flags: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def reference_is_model(self) -> bool:
        """The reference computes the module's function, up to rounding (or there is no module)."""
        return self.native_rel_diff is None or self.native_rel_diff <= NATIVE_TOLERANCE

    def to_dict(self) -> dict:
        return asdict(self) | {"reference_is_model": self.reference_is_model}


def verify(prepared: Prepared, backend, x: torch.Tensor, rows: int, cols: int = 1,
           layerwise: bool = False) -> VerifyReport:  # fmt: skip
    """Tile `prepared.graph` into a `rows` x `cols` grid and compare with the monolithic run."""
    graph = prepared.graph
    start = time.perf_counter()
    # Fused tiles need a row and a column each of every map they cut; layer-wise, a layer with
    # fewer rows than parts is cut into as many strips as it has rows.
    min_size = (1, 1) if layerwise else (rows, cols)
    front = spatial_front(graph, min_size)
    cover = coverage(graph, front, min_size)
    if not front:
        first = next(n for n in graph.nodes if n != graph.input)
        if spatial_front(graph):
            raise RegionError(f"a {rows}x{cols} split needs at least {rows} rows and {cols} columns, but "
                              f"node '{first}' outputs {graph[first].shape[2]}x{graph[first].shape[3]}; "
                              "use fewer parts or a larger input")  # fmt: skip
        raise RegionError(f"model '{graph.name}' has no spatial layers to partition: its first node "
                          f"'{first}' ({graph[first].op}) mixes the whole map")  # fmt: skip
    outputs = graph.boundary(front)
    # squeeze-and-excite branches are computed whole between the front's segments
    handled = {n for branch in front_branches(graph, front) for n in branch.nodes}
    tail = [n for n in graph.nodes if n not in set(front) | handled | {graph.input}]
    # The nodes compared one by one: all of them where the backend hands them back.
    observed = None if backend.observes_all_nodes else list(dict.fromkeys(outputs + list(graph.outputs)))
    with backend.active():
        whole = run_whole(graph, x, backend, observed)
        reference = whole[graph.outputs[0]] if prepared.node_by_node else prepared.monolithic(x)
        cut = _layerwise if layerwise else _fused
        front_maps, tiles, extra_flops, seen = cut(graph, backend, x, front, outputs, rows, cols)
        values: dict[str, Tile] = {graph.input: (WHOLE, x)}
        values.update({n: (WHOLE, t) for n, t in front_maps.items() if n in outputs})
        done = values if not tail else run_segment(graph, tail, values, backend, outputs=observed and
                                                   [n for n in observed if n in tail])  # fmt: skip
    result = done[graph.outputs[0]][1]
    native = None if prepared.native is None else 0.0  # the reference may be the native forward itself
    if prepared.native is not None and prepared.native is not prepared.monolithic:
        with torch.inference_mode(), one_thread():
            native = _relative(reference, prepared.native(x))
    mismatched = {
        n
        for tiles_seen in [*seen, done]
        for n, (region, t) in tiles_seen.items()
        if n in whole
        and n != graph.input
        and not compare_tensors(t, whole[n][index_in(region, WHOLE, graph[n])]).bit_exact
    }
    final = compare_tensors(result, reference)
    return VerifyReport(
        model=graph.name,
        input_shape=tuple(x.shape[1:]),
        backend=backend.name,
        mode="layerwise" if layerwise else "fused",
        parts=rows if cols == 1 else None,
        grid=f"{rows}x{cols}" if cols > 1 else None,
        bit_exact=final.bit_exact,
        max_abs_diff=final.max_abs_diff,
        max_ulp=final.max_ulp,
        first_mismatch=next((n for n in graph.nodes if n in mismatched), None),
        ir_matches_monolithic=compare_tensors(whole[graph.outputs[0]], reference).bit_exact,
        tiles=tiles,
        tiled_nodes=len(front),
        redundancy=extra_flops,
        unpartitioned_from=first_unpartitioned(graph, front),
        tiled_share=cover.tiled_share,
        tiling_stops=[asdict(stop) for stop in cover.stops],
        reference=prepared.reference,
        native_rel_diff=native,
        flags=backend.flags(),
        seconds=time.perf_counter() - start,
    )


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| over max |expected|."""
    scale = float(expected.abs().max())
    return float((actual - expected).abs().max()) / scale if scale else float((actual - expected).abs().max())


def _branches_for(graph, backend, nodes, pending: list, values: dict[str, Tile]) -> dict[str, Tile]:
    """The squeeze-and-excite branches whose vectors `nodes` read, computed whole on the gathered maps
    in `values` (as the whole model computes them); returns every tile they made."""
    reads = {src for n in nodes for src in graph[n].inputs}
    made: dict[str, Tile] = {}
    for branch in [b for b in pending if b.vector in reads]:
        pending.remove(branch)
        done = run_segment(graph, list(branch.nodes), values, backend, outputs=[branch.vector])
        values[branch.vector] = done[branch.vector]
        made.update({n: t for n, t in done.items() if n in branch.nodes})
    return made


def _fused(graph, backend, x, front, outputs, rows, cols):
    """Each tile runs a segment's nodes from its own slices of what the segment reads, in one call;
    between segments the tiles' maps are stitched and squeeze-and-excite branches computed on them."""
    values: dict[str, Tile] = {graph.input: (WHOLE, x)}
    pending = front_branches(graph, front)
    plans: list[dict[str, NodeRegion]] = []
    seen: list[dict[str, Tile]] = []
    for segment in segments(graph, front):
        seen.append(_branches_for(graph, backend, segment, pending, values))
        ends = graph.boundary(segment)
        boxes = {o: tile_boxes(graph[o], rows, cols) for o in ends}
        stitched = {o: torch.empty(graph[o].shape) for o in ends}
        for i in range(rows * cols):
            regions = plan_regions(graph, segment, {o: boxes[o][i] for o in ends})
            plans.append(regions)
            done = run_segment(graph, list(regions), values, backend, regions, ends)
            seen.append(done)
            for o in ends:
                box, tensor = done[o]
                stitched[o][boxes[o][i].index] = tensor[boxes[o][i].within(box)]
        values.update({o: (WHOLE, t) for o, t in stitched.items()})
    return {o: values[o][1] for o in outputs}, rows * cols, redundancy(graph, front, plans), seen


def _layerwise(graph, backend, x, front, outputs, rows, cols):
    """Every layer is cut into tiles computed from its gathered inputs, then gathered; a layer that
    scales by a squeeze-and-excite vector gets the branch computed on its gathered map first."""
    values: dict[str, Tile] = {graph.input: (WHOLE, x)}
    pending = front_branches(graph, front)
    tiled_flops = 0.0
    for layer in layers(graph, front):
        _branches_for(graph, backend, layer, pending, values)
        last = graph[layer[-1]]
        # A late layer with fewer rows than parts is cut into as many strips as it has rows.
        r, c = min(rows, last.shape[2]), min(cols, last.shape[3])
        gathered = torch.empty(last.shape)
        for box in tile_boxes(last, r, c):
            regions = plan_regions(graph, layer, {last.name: box})
            gathered[box.index] = run_segment(graph, layer, values, backend, regions,
                                              [last.name])[last.name][1]  # fmt: skip
            tiled_flops += region_flops(graph, regions)
        values[last.name] = (WHOLE, gathered)
    whole_flops = sum(graph[n].flops for n in front)
    extra = tiled_flops / whole_flops - 1.0 if whole_flops else 0.0
    return {o: values[o][1] for o in outputs}, rows * cols, extra, [values]
