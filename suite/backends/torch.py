"""The torch backends: PyTorch on the CPU, node by node, each node on exactly its tile.

Every node runs on the real data it reads plus the padding its region says lies outside the map.

- `torch`: exact by construction (`suite/backends/exact.py`): every output element is computed the
  same way in a tile as in the whole map on any CPU, BLAS and thread count, and the reference a tile
  is checked against is this backend's own whole-map run.
- `torch-fast`: PyTorch's own kernels with oneDNN on, the fastest CPU path; tiles may differ from
  the whole map in the last bits, and its reference is the module's own forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from suite.backends import exact
from suite.backends.base import BackendError, Compiled, Prepared, SegmentCall, Tile, region_of, run_whole
from suite.backends.exact import padded
from suite.graph import Graph, Node, Window, from_model
from suite.graph.movement import space_to_depth
from suite.regions import WHOLE, FeatureRange, NodeRegion, Region, index_in

if TYPE_CHECKING:
    from suite.models.load import LoadedModel

Kernel = Callable[[Node, list[torch.Tensor], NodeRegion | None], torch.Tensor]

# ----------------------------------------------------------------------------- kernels both share


def _implicit_pad(pad: tuple[int, int, int, int], w: Window, most: tuple[int, int] | None = None
                  ) -> tuple[tuple[int, int], tuple[int, int]] | None:  # fmt: skip
    """The symmetric padding a kernel can apply itself in place of the tile's `pad`, and how many
    output rows and columns it adds before the tile's own; None where that offset falls between
    strides or the padding exceeds `most`.

    A padded copy of every map costs a copy and an allocation the size of the map (VGG-16: 36 MB,
    ~7 CPU-ms, 1.3 % of a forward); the kernels pad in their own window loop with the same values
    (-inf for max), so the numbers are the same."""
    top, bottom, left, right = pad
    padding, skip = [], []
    for axis, (begin, end) in enumerate(((top, bottom), (left, right))):
        both = max(begin, end)
        if (both - begin) % w.stride[axis] or (most is not None and both > most[axis]):
            return None
        padding.append(both)
        skip.append((both - begin) // w.stride[axis])
    return (padding[0], padding[1]), (skip[0], skip[1])


def _maxpool(node: Node, xs: list[torch.Tensor], region: NodeRegion) -> torch.Tensor:
    """A maximum is exact in any order: PyTorch's pool on the padded tile."""
    w, out = node.window, region.out
    implicit = _implicit_pad(region.pad, w, (w.span(0) // 2, w.span(1) // 2))  # torch's limit
    if implicit is not None:
        (top, left) = implicit[1]
        y = F.max_pool2d(xs[0], w.kernel, w.stride, implicit[0], w.dilation, ceil_mode=False)
        return y[..., top : top + out.height, left : left + out.width]
    x = padded(xs[0], region.pad, float("-inf"))
    return F.max_pool2d(x, w.kernel, w.stride, 0, w.dilation, ceil_mode=False)


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


def _channel_select(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    return xs[0][:, list(node.attrs["channels"])]


def _call(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    if node.fn is None:
        raise BackendError(f"node '{node.name}' ({node.attrs.get('onnx_op', node.op)}) has no torch "
                           "implementation; run it on --backend onnxruntime")  # fmt: skip
    return node.fn(*xs)


# Data movement, maxima and single correctly rounded adds and multiplies: the same bits in any tile.
_SHARED: dict[str, Kernel] = {
    "maxpool": _maxpool,
    "relu": lambda node, xs, region: F.relu(xs[0]),
    "dropout": lambda node, xs, region: xs[0],
    "identity": lambda node, xs, region: xs[0],
    "add": lambda node, xs, region: _sum(xs),
    "mul": lambda node, xs, region: _product(xs),
    "concat": lambda node, xs, region: torch.cat(xs, 1),
    "pad": lambda node, xs, region: padded(xs[0], region.pad, node.attrs["value"]),
    "reorg": lambda node, xs, region: space_to_depth(xs[0], node.attrs["block"]),
    "channel_select": _channel_select,
    "scale": lambda node, xs, region: xs[0] * xs[1],
    "flatten": lambda node, xs, region: torch.flatten(xs[0], node.attrs["start_dim"]),
    "reshape": lambda node, xs, region: xs[0].reshape(node.attrs["shape"]),
    "adaptive_avgpool": lambda node, xs, region: F.adaptive_avg_pool2d(xs[0], node.attrs["output_size"]),
    "opaque": _call,
}

# ----------------------------------------------------------------------------- torch-fast's own


def _fast_conv(node: Node, xs: list[torch.Tensor], region: NodeRegion) -> torch.Tensor:
    w, out = node.window, region.out
    weight, bias, groups = node.params["weight"], node.params.get("bias"), node.attrs["groups"]
    implicit = _implicit_pad(region.pad, w)
    if implicit is not None:
        (top, left) = implicit[1]
        y = F.conv2d(xs[0], weight, bias, w.stride, implicit[0], w.dilation, groups)
        return y[..., top : top + out.height, left : left + out.width]
    return F.conv2d(padded(xs[0], region.pad), weight, bias, w.stride, 0, w.dilation, groups)


def _fast_batchnorm(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    p = node.params
    return F.batch_norm(xs[0], p["running_mean"], p["running_var"], p.get("weight"), p.get("bias"),
                        False, 0.0, node.attrs["eps"])  # fmt: skip


def _fast_linear(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    weight, bias = node.params["weight"], node.params.get("bias")
    if region is not None:
        rows = region.out.within(node.attrs.get("weight_rows", FeatureRange(0, node.shape[-1])))[-1]
        weight, bias = weight[rows], None if bias is None else bias[rows]
    return F.linear(xs[0], weight, bias)


EXACT_KERNELS: dict[str, Kernel] = {**_SHARED, **exact.KERNELS}
FAST_KERNELS: dict[str, Kernel] = {
    **_SHARED,
    "conv": _fast_conv,
    "avgpool": exact.avgpool,
    "batchnorm": _fast_batchnorm,
    "elementwise": lambda node, xs, region: _call(node, xs, region),
    "linear": _fast_linear,
    "resize": exact.resize,
}


@dataclass
class TorchBackend:
    """PyTorch on the CPU: `exact` runs `EXACT_KERNELS` (oneDNN and NNPACK off as well), otherwise
    `FAST_KERNELS` with oneDNN on.

    `threads`: compute threads (default: torch's). Exact, each torch op runs on one and independent
    GEMM calls run side by side on `threads` (`exact.threads`), so the count never changes a result.

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
        count = self.threads or saved[0]
        torch.backends.mkldnn.enabled = not self.exact
        torch._C._set_nnpack_enabled(not self.exact)
        try:
            with contextlib.ExitStack() as stack:
                if self.exact:
                    stack.enter_context(exact.threads(count))
                else:
                    torch.set_num_threads(count)
                stack.enter_context(torch.inference_mode())
                yield
        finally:
            torch.set_num_threads(saved[0])
            torch.backends.mkldnn.enabled = saved[1]
            torch._C._set_nnpack_enabled(saved[2])

    @property
    def kernels(self) -> dict[str, Kernel]:
        return EXACT_KERNELS if self.exact else FAST_KERNELS

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
            result = self.kernels[node.op](node, xs, region)
            values[name] = (region.out if region is not None else WHOLE, result)
            del xs  # so a dead input's memory is free for the next node, as in the module's forward
            for src in node.inputs:
                if last_reader.get(src) == name:
                    values.pop(src, None)
        return values

    def compile(self, graph: Graph, segments: Sequence[SegmentCall]) -> Compiled:
        """Nothing to build: torch runs each node from its kernel."""
        return Compiled(graph, 0, 0.0)

    def prepare(self, loaded: LoadedModel) -> Prepared:
        """The graph, and the reference tiles meet: exact, this backend's own run of the whole map,
        node by node (as onnxruntime's reference is its own session); fast, a module's own forward."""
        graph = from_model(loaded)
        if self.exact:
            graph = exact.fold_batch_norms(graph)
        if loaded.module is not None and not self.exact:
            return Prepared(graph, loaded.module, "the module's forward on PyTorch's kernels", loaded.module)
        lean = replace(self, observes_all_nodes=False)  # each map freed after its last reader
        return Prepared(
            graph,
            lambda x: run_whole(graph, x, lean, graph.outputs)[graph.outputs[0]],
            f"the whole model, node by node, on {self.name}'s kernels",
            loaded.module,
            node_by_node=True,
        )


def _slice(graph: Graph, tile: Tile, read: Region, src: str) -> torch.Tensor:
    """The part `read` of a tile of node `src`'s output."""
    have, tensor = tile
    if read == have:
        return tensor
    return tensor[index_in(read, have, graph[src])].contiguous()
