"""Run nodes of a graph on tiles, on one backend, returning exactly the requested regions.

Every node runs on the real data it reads plus the padding its region says lies outside the map;
the backend applies that padding itself, so a tile at the border and the whole map see the same
numbers. Backends:

- `torch`: oneDNN (mkldnn) and NNPACK off, so a conv is im2col + GEMM whose result for one output
  element does not depend on the map's size: tiles are bit-exact.
- `torch-fast`: oneDNN on, the fastest CPU path; tiles may differ from the whole map in the last bits.
- `onnxruntime`: the CPU execution provider, each node as its own one-node session, graphs
  optimised at ORT's basic level (the same level the monolithic session uses).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from suite.errors import UserError
from suite.graph import SPATIAL, Graph, Node
from suite.regions import Box, NodeRegion, RegionError, full_box, node_region

Tile = tuple[Box | None, torch.Tensor]  # a tensor and the box of the map it covers (None: whole)


class BackendError(UserError):
    """A backend cannot run a node (names the node and why)."""


# ----------------------------------------------------------------------------- torch kernels


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    top, bottom, left, right = pad
    return F.pad(x, (left, right, top, bottom), value=value) if any(pad) else x


def _conv(node: Node, xs: list[torch.Tensor], region: NodeRegion) -> torch.Tensor:
    w = node.window
    return F.conv2d(_pad(xs[0], region.pad), node.params["weight"], node.params.get("bias"),
                    w.stride, 0, w.dilation, node.attrs["groups"])  # fmt: skip


def _maxpool(node: Node, xs: list[torch.Tensor], region: NodeRegion) -> torch.Tensor:
    w = node.window
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


def _batchnorm(node: Node, xs: list[torch.Tensor], region: NodeRegion | None) -> torch.Tensor:
    p = node.params
    return F.batch_norm(xs[0], p["running_mean"], p["running_var"], p.get("weight"), p.get("bias"),
                        False, 0.0, node.attrs["eps"])  # fmt: skip


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
    "flatten": lambda node, xs, region: torch.flatten(xs[0], node.attrs["start_dim"]),
    "linear": lambda node, xs, region: F.linear(xs[0], node.params["weight"],
                                                node.params.get("bias")),  # fmt: skip
    "adaptive_avgpool": lambda node, xs, region: F.adaptive_avg_pool2d(xs[0],
                                                                       node.attrs["output_size"]),
    "elementwise": _call,
    "opaque": _call,
}


@dataclass
class TorchBackend:
    """PyTorch on the CPU; `exact` turns oneDNN and NNPACK off."""

    name: str
    exact: bool
    threads: int | None = None

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

    def run_node(self, node: Node, xs: list[torch.Tensor], region: NodeRegion | None
                 ) -> torch.Tensor:  # fmt: skip
        return _TORCH_KERNELS[node.op](node, xs, region)


# ----------------------------------------------------------------------------- onnxruntime


@dataclass
class OrtBackend:
    """onnxruntime's CPU execution provider, one cached session per node and padding."""

    name: str = "onnxruntime"
    threads: int | None = None
    level: object = None

    def __post_init__(self) -> None:
        self._sessions: dict[tuple, object] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.inference_mode():
            yield

    def flags(self) -> dict[str, object]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "graph_optimization": "basic",
                "threads": self.threads or 0}  # fmt: skip

    def session_options(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = self.level or ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        return opts

    def session(self, model_bytes: bytes):
        import onnxruntime as ort

        return ort.InferenceSession(model_bytes, self.session_options(),
                                    providers=["CPUExecutionProvider"])  # fmt: skip

    def run_node(self, node: Node, xs: list[torch.Tensor], region: NodeRegion | None
                 ) -> torch.Tensor:  # fmt: skip
        if node.onnx is None:
            raise BackendError(f"node '{node.name}' has no ONNX form; load the model from ONNX")
        pads, crop = _ort_geometry(node, region)
        key = (node.name, pads, len(xs))
        if key not in self._sessions:
            from suite.graph.from_onnx import single_node_model

            self._sessions[key] = self.session(single_node_model(node, pads, len(xs)))
        sess = self._sessions[key]
        feeds = {i.name: x.contiguous().numpy() for i, x in zip(sess.get_inputs(), xs)}
        out = torch.from_numpy(np.ascontiguousarray(sess.run(None, feeds)[0]))
        if crop is not None:
            out = out[:, :, : crop[0], : crop[1]]
        return out


def _ort_geometry(node: Node, region: NodeRegion | None
                  ) -> tuple[tuple[int, int, int, int] | None, tuple[int, int] | None]:  # fmt: skip
    """ONNX pads (top, left, bottom, right) for a windowed node's tile, and the output to keep.

    Pooling keeps the op's own padding and ceil mode and crops the surplus windows, so that
    averaging divisors and ceil-mode overhang match the whole map exactly.
    """
    if node.window is None or region is None:
        return None, None
    top, bottom, left, right = region.pad
    if node.op == "conv":
        return (top, left, bottom, right), None
    w = node.window
    pads = (min(top, w.pad_begin[0]), min(left, w.pad_begin[1]),
            min(bottom, w.pad_end[0]), min(right, w.pad_end[1]))  # fmt: skip
    return pads, (region.out.height, region.out.width)


# ----------------------------------------------------------------------------- execution

Backend = TorchBackend | OrtBackend
BACKENDS = ("torch", "torch-fast", "onnxruntime")


def make_backend(name: str, threads: int | None = None) -> Backend:
    if name == "torch":
        return TorchBackend("torch", exact=True, threads=threads)
    if name == "torch-fast":
        return TorchBackend("torch-fast", exact=False, threads=threads)
    if name == "onnxruntime":
        return OrtBackend(threads=threads)
    raise ValueError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")


def _slice(tile: Tile, read: Box, node: str, src: str) -> torch.Tensor:
    have, tensor = tile
    if have is None:  # a whole map
        have = Box(0, tensor.shape[2], 0, tensor.shape[3])
    if not have.contains(read):
        raise RegionError(f"node '{node}' reads {read} of '{src}' but the tile holds only {have}")
    if have == read:
        return tensor
    return tensor[read.within(have)].contiguous()


def run_nodes(graph: Graph, names: Sequence[str], values: Mapping[str, Tile],
              backend: Backend, regions: Mapping[str, NodeRegion] | None = None
              ) -> dict[str, Tile]:  # fmt: skip
    """Run `names` in order over `values` (inputs by node name), returning every node's tile.

    A node with a region computes just that region; a node without one computes its whole output.
    """
    regions = regions or {}
    out: dict[str, Tile] = dict(values)
    for name in names:
        node = graph[name]
        region = regions.get(name)
        if region is None and node.spatial:
            region = node_region(graph, node, full_box(node))
        reads = region.reads if region is not None else (None,) * len(node.inputs)
        xs = [
            out[src][1] if read is None else _slice(out[src], read, name, src)
            for src, read in zip(node.inputs, reads)
        ]
        result = backend.run_node(node, xs, region)
        out[name] = (region.out if region is not None else None, result)
    return out


def run_whole(graph: Graph, x: torch.Tensor, backend: Backend) -> dict[str, torch.Tensor]:
    """Every node's whole output for input `x`: the node-by-node monolithic run."""
    names = [n for n in graph.nodes if n != graph.input]
    tiles = run_nodes(graph, names, {graph.input: (None, x)}, backend)
    return {name: tensor for name, (_, tensor) in tiles.items()}


def is_spatial(node: Node) -> bool:
    return node.op in SPATIAL and node.is_map


def export_onnx(module: torch.nn.Module, input_shape: Sequence[int]) -> bytes:
    """The module as ONNX bytes (TorchScript exporter: fast, and folds BN like deployment does)."""
    buf = io.BytesIO()
    with warnings_silenced():
        torch.onnx.export(module, (torch.zeros(1, *input_shape),), buf, dynamo=False,
                          input_names=["input"], output_names=["output"], opset_version=17)  # fmt: skip
    return buf.getvalue()


@contextlib.contextmanager
def warnings_silenced() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- models on backends


@dataclass
class Prepared:
    """A model's graph on one backend and its monolithic run (the reference every tile meets)."""

    graph: Graph
    monolithic: Callable[[torch.Tensor], torch.Tensor]


def prepare(loaded, backend: Backend) -> Prepared:
    """Build the graph `backend` executes and the monolithic model on the same backend.

    torch backends trace the module (`module(x)` is the reference); onnxruntime runs the ONNX
    model (exported from torch where needed) optimised once at the basic level, and tiles run the
    nodes of that same optimised model.
    """
    from suite.graph import from_torch
    from suite.graph.from_onnx import from_onnx

    if isinstance(backend, TorchBackend):
        if loaded.module is not None:
            graph = from_torch(loaded.module, loaded.input_shape, loaded.name)
            return Prepared(graph, loaded.module)
        graph = from_onnx(_onnx_model(loaded.onnx_bytes), loaded.name)
        return Prepared(graph, lambda x: run_whole(graph, x, backend)[graph.outputs[0]])
    model_bytes = loaded.onnx_bytes or export_onnx(loaded.module, loaded.input_shape)
    optimised = _ort_optimise(backend, model_bytes)
    graph = from_onnx(_onnx_model(optimised), loaded.name)
    session = backend.session(optimised)
    feed = session.get_inputs()[0].name
    return Prepared(graph, lambda x: torch.from_numpy(session.run(None, {feed: x.numpy()})[0]))


def _onnx_model(model_bytes: bytes):
    import onnx

    return onnx.ModelProto.FromString(model_bytes)


def _ort_optimise(backend: OrtBackend, model_bytes: bytes) -> bytes:
    """The model after onnxruntime's basic graph optimisations (standard ONNX ops only)."""
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = backend.session_options()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        return Path(opts.optimized_model_filepath).read_bytes()
