"""The torch backends: PyTorch on the CPU, node by node, each node on exactly its tile.

Every node runs on the real data it reads plus the padding its region says lies outside the map;
the kernels apply that padding themselves, so a tile at the border and the whole map see the same
numbers.

- `torch`: oneDNN (mkldnn) and NNPACK off, so a conv is im2col + GEMM whose result for one output
  element does not depend on the map's size: tiles are bit-exact (with the kernels below).
- `torch-fast`: oneDNN on, the fastest CPU path; tiles may differ from the whole map in the last bits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from suite.backends.base import BackendError, Compiled, Prepared, Segment, Tile, region_of, run_whole
from suite.graph import Graph, Node, Window, from_model
from suite.graph.movement import space_to_depth
from suite.regions import WHOLE, FeatureRange, NodeRegion, Region, index_in

if TYPE_CHECKING:
    from suite.models.load import LoadedModel

# ----------------------------------------------------------------------------- torch kernels


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    top, bottom, left, right = pad
    return F.pad(x, (left, right, top, bottom), value=value) if any(pad) else x


def _implicit_pad(pad: tuple[int, int, int, int], w: Window, most: tuple[int, int] | None = None
                  ) -> tuple[tuple[int, int], tuple[int, int]] | None:  # fmt: skip
    """The symmetric padding a kernel can apply itself in place of the tile's `pad`, and how many
    output rows and columns it adds before the tile's own; None where that offset falls between
    strides or the padding exceeds `most`.

    A padded copy of every map costs a copy and an allocation the size of the map (VGG-16: 36 MB,
    ~7 CPU-ms, 1.3 % of a forward); the kernels pad in their own im2col or window loop with the same
    zeros (-inf for max), so the numbers are the same."""
    top, bottom, left, right = pad
    padding, skip = [], []
    for axis, (begin, end) in enumerate(((top, bottom), (left, right))):
        both = max(begin, end)
        if (both - begin) % w.stride[axis] or (most is not None and both > most[axis]):
            return None
        padding.append(both)
        skip.append((both - begin) // w.stride[axis])
    return (padding[0], padding[1]), (skip[0], skip[1])


# Measured on x86 MKL: a conv with fewer than ~12 output positions takes a different GEMM path
# whose rounding depends on the position count. Tiles are computed with at least this many.
GEMM_MIN_POSITIONS = 64


def _conv(node: Node, xs: list[torch.Tensor], region: NodeRegion) -> torch.Tensor:
    """Conv over the padded tile; a tile too small for the map-size-independent GEMM path is
    widened with zero columns, or placed at its offset in a zero map the whole map's size when the
    whole map is itself that small, and the surplus cropped."""
    w, out = node.window, region.out
    whole_positions = node.shape[2] * node.shape[3]
    implicit = _implicit_pad(region.pad, w)
    if implicit is not None and not (out.area < whole_positions and out.area < GEMM_MIN_POSITIONS):
        (top, left) = implicit[1]
        y = F.conv2d(xs[0], node.params["weight"], node.params.get("bias"), w.stride, implicit[0],
                     w.dilation, node.attrs["groups"])  # fmt: skip
        return y[..., top : top + out.height, left : left + out.width]
    x = _pad(xs[0], region.pad)
    if out.area < whole_positions and out.area < GEMM_MIN_POSITIONS:
        if whole_positions >= GEMM_MIN_POSITIONS:
            extra_cols = -(-GEMM_MIN_POSITIONS // out.height) - out.width
            x = F.pad(x, (0, extra_cols * w.stride[1]))
        else:
            canvas = x.new_zeros(*x.shape[:2], (node.shape[2] - 1) * w.stride[0] + w.span(0),
                                 (node.shape[3] - 1) * w.stride[1] + w.span(1))  # fmt: skip
            h0, w0 = out.h0 * w.stride[0], out.w0 * w.stride[1]
            canvas[..., h0:h0 + x.shape[2], w0:w0 + x.shape[3]] = x
            y = F.conv2d(canvas, node.params["weight"], node.params.get("bias"), w.stride, 0,
                         w.dilation, node.attrs["groups"])  # fmt: skip
            return y[out.index]
    y = F.conv2d(x, node.params["weight"], node.params.get("bias"), w.stride, 0, w.dilation,
                 node.attrs["groups"])  # fmt: skip
    return y[..., : out.height, : out.width]


def _maxpool(node: Node, xs: list[torch.Tensor], region: NodeRegion) -> torch.Tensor:
    w, out = node.window, region.out
    implicit = _implicit_pad(region.pad, w, (w.span(0) // 2, w.span(1) // 2))  # torch's limit
    if implicit is not None:
        (top, left) = implicit[1]
        y = F.max_pool2d(xs[0], w.kernel, w.stride, implicit[0], w.dilation, ceil_mode=False)
        return y[..., top : top + out.height, left : left + out.width]
    x = _pad(xs[0], region.pad, float("-inf"))
    return F.max_pool2d(x, w.kernel, w.stride, 0, w.dilation, ceil_mode=False)


def _avg_divisors(node: Node, in_length: int, axis: int, start: int, stop: int) -> torch.Tensor:
    """Per-output window sizes along one axis, counted the way PyTorch's avg_pool2d counts them."""
    w = node.window
    counts = []
    for o in range(start, stop):
        first = o * w.stride[axis] - w.pad_begin[axis]
        last = min(first + w.kernel[axis], in_length + w.pad_end[axis])
        if not node.attrs["count_include_pad"]:
            first, last = max(first, 0), min(last, in_length)
        counts.append(last - first)
    return torch.tensor(counts, dtype=torch.float32)


def _avgpool(node: Node, xs: list[torch.Tensor], region: NodeRegion) -> torch.Tensor:
    # Window sums over the explicitly padded tile, then the whole map's per-position divisor:
    # the same float sum and the same division as the monolithic kernel.
    w = node.window
    sums = F.avg_pool2d(_pad(xs[0], region.pad), w.kernel, w.stride, 0, divisor_override=1)
    in_h, in_w = node.attrs["in_hw"]
    rows = _avg_divisors(node, in_h, 0, region.out.h0, region.out.h1)
    cols = _avg_divisors(node, in_w, 1, region.out.w0, region.out.w1)
    return sums / (rows[:, None] * cols[None, :])


def _vector_width() -> int:
    """float32 lanes of the SIMD code PyTorch dispatches to on this CPU."""
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def _batchnorm(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    """PyTorch's inference BN runs each channel plane through SIMD code and its last
    `plane % lanes` elements through a tail whose rounding differs. A tile keeps that split: its
    own plane, padded to whole vectors, takes the SIMD path, and the positions that are the whole
    map's tail are recomputed through the tail path."""
    p = node.params

    def bn(x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, p["running_mean"], p["running_var"], p.get("weight"), p.get("bias"),
                            False, 0.0, node.attrs["eps"])  # fmt: skip

    x = xs[0]
    if region is None or x.dim() != 4:
        return bn(x)
    lanes = _vector_width()
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    y = bn(F.pad(flat, (0, -(h * w) % lanes)))[..., : h * w].reshape(n, c, h, w)
    whole_h, whole_w = node.shape[2], node.shape[3]
    tail = (whole_h * whole_w) % lanes
    if tail:  # the whole map's last `tail` positions, row-major
        positions = range(whole_h * whole_w - tail, whole_h * whole_w)
        out = region.out
        inside = [(q // whole_w - out.h0, q % whole_w - out.w0) for q in positions
                  if out.h0 <= q // whole_w < out.h1 and out.w0 <= q % whole_w < out.w1]  # fmt: skip
        if inside:
            rows, cols = zip(*inside)
            y[:, :, rows, cols] = bn(x[:, :, rows, cols])
    return y


# PyTorch's elementwise CPU loop (TensorIterator under at::parallel_for, grain 32768) cuts a
# contiguous map into one flat chunk per thread and computes each chunk two SIMD vectors at a
# time; the last `chunk % (2 * lanes)` elements of a chunk take a scalar loop. Sigmoid, SiLU, GELU,
# ELU, Mish and Softplus round differently there (Sleef's vector exp against libm's).
ELEMENTWISE_GRAIN = 32768


def _scalar_ranges(n: int) -> list[tuple[int, int]]:
    """The flat positions of an n-element map that PyTorch's elementwise loop computes in scalar code."""
    unit = 2 * _vector_width()
    threads = min(torch.get_num_threads(), -(-n // ELEMENTWISE_GRAIN)) if n > ELEMENTWISE_GRAIN else 1
    chunk = -(-n // threads)
    ends = [min(begin + chunk, n) for begin in range(0, n, chunk)]
    return [(end - (end - begin) % unit, end) for begin, end in zip(range(0, n, chunk), ends)
            if (end - begin) % unit]  # fmt: skip


def _elementwise(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    """A pointwise op on a tile, each element on the code path the whole map's call takes it: the
    vector path (the tile, flat and padded to whole vectors, in calls of one chunk each), and the
    scalar path where the whole map's loop ends a chunk (recomputed in a call shorter than a vector
    pair, which is all scalar). Ops that read more than their one element (a per-channel constant)
    run as they are: their arithmetic rounds the same on both paths. The chunks depend on the
    thread count, so the reference must run with this process's (as `verify` and `suite run` do)."""
    if not node.attrs.get("unary") or region is None or not node.is_map:
        return _call(node, xs, region)
    flat = xs[0].reshape(-1)
    padded = F.pad(flat, (0, -flat.numel() % (2 * _vector_width())))
    y = torch.cat([node.fn(padded[i : i + ELEMENTWISE_GRAIN]).reshape(-1)
                   for i in range(0, padded.numel(), ELEMENTWISE_GRAIN)])[: flat.numel()]  # fmt: skip
    _, _, h, w = node.shape
    out = region.out
    for begin, end in _scalar_ranges(node.shape[1] * h * w):
        where = [(q // (h * w), q % (h * w) // w - out.h0, q % w - out.w0) for q in range(begin, end)]
        inside = [(c * out.height + r) * out.width + col for c, r, col in where
                  if 0 <= r < out.height and 0 <= col < out.width]  # fmt: skip
        if inside:
            y[inside] = node.fn(flat[inside]).reshape(-1)
    return y.reshape(xs[0].shape)


def _sum(xs: list[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _product(xs: list[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def _linear(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    """A linear layer, or the share of its output features `region` asks for (MoDNN's FC split).

    A device that computes only a share may hold only those rows of the weight: the node's
    `weight_rows` attribute says which (see `suite.runtime.engine.prune_weights`).
    """
    weight, bias = node.params["weight"], node.params.get("bias")
    if region is not None:
        rows = region.out.within(node.attrs.get("weight_rows", FeatureRange(0, node.shape[-1])))[-1]
        weight, bias = weight[rows], None if bias is None else bias[rows]
    return F.linear(xs[0], weight, bias)


def _channel_select(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    return xs[0][:, list(node.attrs["channels"])]


def _call(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    if node.fn is None:
        raise BackendError(f"node '{node.name}' ({node.attrs.get('onnx_op', node.op)}) has no torch "
                           "implementation; run it on --backend onnxruntime")  # fmt: skip
    return node.fn(*xs)


_TORCH_KERNELS: dict[str, Callable[[Node, list[torch.Tensor], NodeRegion | None], torch.Tensor]] = {
    "conv": _conv,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "batchnorm": _batchnorm,
    "relu": lambda node, xs, region: F.relu(xs[0]),
    "dropout": lambda node, xs, region: xs[0],
    "identity": lambda node, xs, region: xs[0],
    "add": lambda node, xs, region: _sum(xs),
    "mul": lambda node, xs, region: _product(xs),
    "concat": lambda node, xs, region: torch.cat(xs, 1),
    "pad": lambda node, xs, region: _pad(xs[0], region.pad, node.attrs["value"]),
    "reorg": lambda node, xs, region: space_to_depth(xs[0], node.attrs["block"]),
    "channel_select": _channel_select,
    "scale": lambda node, xs, region: xs[0] * xs[1],
    "flatten": lambda node, xs, region: torch.flatten(xs[0], node.attrs["start_dim"]),
    "reshape": lambda node, xs, region: xs[0].reshape(node.attrs["shape"]),
    "linear": _linear,
    "adaptive_avgpool": lambda node, xs, region: F.adaptive_avg_pool2d(xs[0],
                                                                       node.attrs["output_size"]),
    "elementwise": _elementwise,
    "opaque": _call,
}


@dataclass
class TorchBackend:
    """PyTorch on the CPU; `exact` turns oneDNN and NNPACK off.

    `observes_all_nodes` keeps every node's tile for `verify` to compare node by node. Off, a run
    keeps only `outputs` and what it was given, and drops each other tile after its last reader,
    as the module's own forward does: holding all of VGG-16's maps (~115 MB) makes each new map take
    fresh pages, 10-20k page faults a forward, 2-6 % over the module at `--parts 1`.
    """

    name: str
    exact: bool
    threads: int | None = None
    observes_all_nodes: bool = True

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        saved = (torch.get_num_threads(), torch.backends.mkldnn.enabled,
                 torch._C._get_nnpack_enabled())  # fmt: skip
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.backends.mkldnn.enabled = not self.exact
        torch._C._set_nnpack_enabled(not self.exact)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(saved[0])
            torch.backends.mkldnn.enabled = saved[1]
            torch._C._set_nnpack_enabled(saved[2])

    def flags(self) -> dict[str, object]:
        return {"mkldnn": not self.exact, "nnpack": not self.exact,
                "threads": self.threads or torch.get_num_threads()}  # fmt: skip

    def run(self, graph: Graph, names: Sequence[str], values: dict[str, Tile],
            regions: Mapping[str, NodeRegion], outputs: Sequence[str]) -> dict[str, Tile]:  # fmt: skip
        """Node by node; returns every node's tile, or with `observes_all_nodes` off, the tiles of
        `outputs` and `values`."""
        last_reader: dict[str, str] = {}
        if not self.observes_all_nodes:
            keep = set(outputs) | set(values)
            last_reader = {src: n for n in names for src in graph[n].inputs if src not in keep}
        for name in names:
            node = graph[name]
            region = region_of(graph, node, regions)
            reads = region.reads if region is not None else (WHOLE,) * len(node.inputs)
            xs = [_slice(graph, values[src], read, src) for src, read in zip(node.inputs, reads)]
            result = _TORCH_KERNELS[node.op](node, xs, region)
            values[name] = (region.out if region is not None else WHOLE, result)
            del xs  # so a dead input's memory is free for the next node, as in the module's forward
            for src in node.inputs:
                if last_reader.get(src) == name:
                    values.pop(src, None)
        return values

    def compile(self, graph: Graph, segments: Sequence[Segment]) -> Compiled:
        """Nothing to build: torch runs each node from its kernel."""
        return Compiled(graph, 0, 0.0)

    def prepare(self, loaded: LoadedModel) -> Prepared:
        """A module is traced and is itself the reference; an ONNX model runs node by node."""
        graph = from_model(loaded)
        if loaded.module is not None:
            return Prepared(graph, loaded.module)
        return Prepared(graph, lambda x: run_whole(graph, x, self, graph.outputs)[graph.outputs[0]])


def _slice(graph: Graph, tile: Tile, read: Region, src: str) -> torch.Tensor:
    """The part `read` of a tile of node `src`'s output."""
    have, tensor = tile
    if read == have:
        return tensor
    return tensor[index_in(read, have, graph[src])].contiguous()
