"""The DAG IR every other module works on: small data classes and pure queries.

A `Graph` is a topologically ordered dict of `Node`s. Each node records what the region math and
the cost model need (op kind, sliding-window geometry per axis, output shape, FLOPs, bytes) and what
the executors need to run it (parameters, a torch callable, or the original ONNX node).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# Op kinds. Spatially local ops can be cut into tiles; the others see the whole map.
# `pad` (a zero border) and `reorg` (space-to-depth, YOLOv2's passthrough) are windows too: a kernel
# of 1 with padding, and a block x block window with stride block. `channel_select` copies some of
# its input's channels (slices, splits, channel shuffle) and keeps every row and column in place.
# `scale` multiplies a map by a per-channel vector (squeeze-and-excite): the map is read where the
# tile is, the vector whole. `resize` resamples a map (`suite.graph.resampling`): an output row reads
# the input rows its coordinate in the whole map falls between.
WINDOWED = frozenset({"conv", "maxpool", "avgpool", "pad", "reorg"})
POINTWISE = frozenset({"batchnorm", "relu", "elementwise", "dropout", "identity", "channel_select"})
MERGE = frozenset({"add", "mul", "concat"})
BROADCAST = frozenset({"scale"})
RESAMPLING = frozenset({"resize"})
MIXING = frozenset({"flatten", "reshape", "linear", "adaptive_avgpool", "opaque"})
SPATIAL = WINDOWED | POINTWISE | MERGE | BROADCAST | RESAMPLING
# Kinds that only move data: no multiply-accumulates.
MOVEMENT = frozenset(
    {"input", "dropout", "identity", "flatten", "reshape", "concat", "pad", "reorg", "channel_select"}
)
OP_KINDS = tuple(sorted(SPATIAL | MIXING | {"input"}))  # every node's op is one of these
# What the cost model prices separately (`suite.cost.node_work`): every op kind, convs by class
# (`Node.cost_kind`), and for a conv run as matrix products the values it copies to and from them
# (`conv_copy`) and the products' calls (`gemm_call`).
GEMM_CONVS = frozenset({"conv", "pointwise_conv", "grouped_conv"})
COST_KINDS = tuple(sorted({*OP_KINDS, *GEMM_CONVS, "depthwise_conv", "strided_depthwise_conv", "conv_copy",
                           "gemm_call", "clamp"}))  # fmt: skip


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry of a conv or pool, per axis (H, W)."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad_begin: tuple[int, int] = (0, 0)
    pad_end: tuple[int, int] = (0, 0)
    ceil_mode: bool = False

    def span(self, axis: int) -> int:
        """Input extent one output element reads along `axis`."""
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def out_length(self, in_length: int, axis: int) -> int:
        """Output length along `axis`, with PyTorch's and ONNX's ceil-mode rule."""
        padded = in_length + self.pad_begin[axis] + self.pad_end[axis] - self.span(axis)
        stride = self.stride[axis]
        if not self.ceil_mode:
            return padded // stride + 1
        n = -(-padded // stride) + 1
        # The last window must start inside the input or the leading padding.
        if (n - 1) * stride >= in_length + self.pad_begin[axis]:
            n -= 1
        return n


def tensor_bytes(name: str, tensor: torch.Tensor) -> tuple[bytes | memoryview]:
    """A tensor's bytes in memory, in one chunk (`Node.param_digest`)."""
    t = tensor.detach().contiguous().cpu()
    return (t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"",)


@dataclass
class Node:
    """One operation. `shape` is the output shape with the batch dimension."""

    name: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    window: Window | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    fn: Callable[..., torch.Tensor] | None = field(default=None, repr=False)
    onnx: Any = field(default=None, repr=False)  # (source onnx.NodeProto, its constants by name)
    flops: int = 0  # multiply-accumulates for the whole output, as PICO counts them
    itemsize: int = 4

    @property
    def is_map(self) -> bool:
        """True when the output is an NCHW feature map."""
        return len(self.shape) == 4

    @property
    def spatial(self) -> bool:
        """True when tiles of the output can be computed from tiles of the inputs, and the backend
        computes them bit-exact with the whole map (`attrs["untiled"]` says why it does not)."""
        return self.op in SPATIAL and self.is_map and "untiled" not in self.attrs

    @property
    def act_bytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    @property
    def param_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.params.values())

    def param_digest(self, chunks: Callable[[str, torch.Tensor], Iterable[bytes]] | None = None) -> str:
        """A hash of the node's weights: its ONNX node's constants where it has one (its params are
        made of them), else its params. Two processes that built the same model agree on it, bit
        for bit. `chunks` gives a tensor's bytes (by default its memory's): a worker that left its
        weights in a file reads them from there."""
        digest = hashlib.blake2b(digest_size=16)
        tensors = self.onnx[1] if self.onnx else self.params
        for name in sorted(tensors):
            t = tensors[name]
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            for chunk in (chunks or tensor_bytes)(name, t):
                digest.update(chunk)
        return digest.hexdigest()

    @property
    def cost_kind(self) -> str:
        """The kind the cost model prices this node as: its op, but a conv by its class. Per MAC, a
        depthwise conv (one input channel per group) runs an order of magnitude slower than a dense
        one: little arithmetic per value read, and no large matrix product to hand to a GEMM; strided,
        it reads every other value (2-3x slower per MAC on the exact kernels). A 1x1 conv's product
        is short (K = its input channels), a kxk one's K is k^2 times longer. A clamp (ReLU6) is an
        elementwise op priced apart, as relu is: onnxruntime fuses it into the conv before it, as it
        does a ReLU, but not a sigmoid (SiLU's, a gate's), which costs a transcendental per value."""
        if self.op == "elementwise" and self.attrs.get("clamp"):
            return "clamp"
        if self.op != "conv":
            return self.op
        kh, kw = self.window.kernel
        if self.attrs.get("groups", 1) == 1:
            return "pointwise_conv" if (kh, kw) == (1, 1) else "conv"
        inputs_per_group = self.flops // (kh * kw * math.prod(self.shape))  # as node_flops counts them
        if inputs_per_group > 1:
            return "grouped_conv"
        return "depthwise_conv" if self.window.stride == (1, 1) else "strided_depthwise_conv"

    @property
    def calls(self) -> int:
        """How many times a profile's fixed cost (`overhead_s`) is paid for this node: once, but once
        per group for a grouped conv, as PyTorch's own conv (oneDNN off) runs one conv per group:
        about 5 us a group on this suite's host, most of MobileNetV2's depthwise convs' time there.
        (The exact kernels run a conv's products per block instead: `suite.cost.node_work`.)"""
        return self.attrs.get("groups", 1) if self.op == "conv" else 1

    @property
    def flops_per_position(self) -> float:
        """FLOPs per output (h, w) position: the cost of a region is this times its area."""
        if not self.is_map:
            return float(self.flops)
        return self.flops / (self.shape[2] * self.shape[3])


@dataclass
class Graph:
    """A model as a DAG of nodes in topological order, with one input."""

    name: str
    nodes: dict[str, Node]
    input: str
    outputs: tuple[str, ...]
    source: str  # whose names: "torch" (torch.fx), "onnx" (an ONNX file), "onnxruntime" (as ORT folds it)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[self.input].shape

    def consumers(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for src in node.inputs:
                users[src].append(node.name)
        return users

    def boundary(self, names: Sequence[str]) -> list[str]:
        """Nodes of `names` whose output is read outside `names` or is a graph output."""
        inside = set(names)
        users = self.consumers()
        return [n for n in names
                if n in self.outputs or any(u not in inside for u in users[n])]  # fmt: skip

    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes.values())


def is_channel_vector(shape: tuple[int, ...], of: tuple[int, ...]) -> bool:
    """True when `shape` holds one value per channel (or one for all) of the NCHW map shape `of`:
    the vector a `scale` multiplies a map by."""
    return len(shape) == len(of) == 4 and shape[0] == of[0] and shape[1] in (1, of[1]) and shape[2:] == (1, 1)


def node_flops(op: str, shape: tuple[int, ...], in_shapes: list[tuple[int, ...]], **attrs) -> int:
    """Multiply-accumulates of one node over its whole output (PICO's k^2 c_in w h c_out)."""
    out = math.prod(shape)
    if op == "conv":
        kh, kw = attrs["window"].kernel
        return kh * kw * (in_shapes[0][1] // attrs["groups"]) * out
    if op in ("maxpool", "avgpool"):
        kh, kw = attrs["window"].kernel
        return kh * kw * out
    if op == "linear":
        return in_shapes[0][-1] * out
    if op == "adaptive_avgpool":
        return math.prod(in_shapes[0])
    if op == "resize":  # bilinear: four weighted taps per output; nearest copies
        return 4 * out if attrs["resampling"].mode == "linear" else 0
    if op in MOVEMENT:
        return 0
    return out
