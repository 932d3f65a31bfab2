"""The onnxruntime backend: each segment tile runs as one ONNX graph in one session.

A tile's graph is the model's own nodes for that segment, with each windowed node's padding set to
what lies outside the map and Slice nodes where a node reads less than its producer made. Running
the segment as one graph lets onnxruntime apply the same layout transform and fusions (NCHWc
convolution, Conv+Add+Relu) as in the monolithic session. Both run at ORT_ENABLE_ALL: there MLAS's
NCHWc convolution accumulates in an order that does not depend on the map size, while at the basic
level its im2col GEMM regroups the reduction by output size and small tiles drift in the last bits.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from suite.backends.base import BackendError, Prepared, Tile, region_of
from suite.graph import Graph, Node
from suite.graph.from_onnx import from_onnx
from suite.regions import WHOLE, NodeRegion, Region, as_part, full_box

if TYPE_CHECKING:
    from suite.models.load import LoadedModel


@dataclass
class OrtBackend:
    """onnxruntime's CPU execution provider, one cached session per segment and tile geometry of the
    graph last run (node names and boxes repeat across models and input sizes)."""

    name: str = "onnxruntime"
    threads: int | None = None
    observes_all_nodes = False  # a segment's inner nodes stay inside its session
    _graph: Graph | None = field(default=None, repr=False)
    _sessions: dict = field(default_factory=dict, repr=False)
    _nchwc: frozenset[str] = field(default=frozenset(), repr=False)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.inference_mode():
            yield

    def flags(self) -> dict[str, object]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "graph_optimization": "all",
                "threads": self.threads or 0}  # fmt: skip

    def session(self, model_bytes: bytes, level: str = "all"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])

    def prepare(self, loaded: LoadedModel) -> Prepared:
        """The model with ORT's portable basic optimisations applied once (BN folded into convs),
        as the graph tiles run and as the monolithic session."""
        model_bytes = loaded.onnx_bytes or export_onnx(loaded.module, loaded.input_shape)
        optimised = self._basic_optimised(model_bytes)
        graph = from_onnx(onnx.ModelProto.FromString(optimised), loaded.name)
        session = self.session(optimised)
        feed = session.get_inputs()[0].name
        return Prepared(graph, lambda x: torch.from_numpy(session.run(None, {feed: x.numpy()})[0]))

    def _basic_optimised(self, model_bytes: bytes) -> bytes:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
            ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
            return Path(opts.optimized_model_filepath).read_bytes()

    def run(self, graph: Graph, names: Sequence[str], values: dict[str, Tile],
            regions: Mapping[str, NodeRegion], outputs: Sequence[str]) -> dict[str, Tile]:  # fmt: skip
        node_regions = {n: region_of(graph, graph[n], regions) for n in names}
        inside = set(names)
        sources = list(dict.fromkeys(s for n in names for s in graph[n].inputs if s not in inside))
        held = {s: values[s][0] for s in sources}
        if graph is not self._graph:
            self._graph, self._sessions, self._nchwc = graph, {}, self._nchwc_maps(graph)
        key = (tuple(names), tuple(node_regions.values()), tuple(held.items()), tuple(outputs))
        if key not in self._sessions:
            model = segment_model(graph, names, node_regions, held, outputs, self._nchwc)
            self._sessions[key] = self.session(model)
        session = self._sessions[key]
        feeds = {s: values[s][1].contiguous().numpy() for s in sources}
        results = session.run(list(outputs), feeds)
        for name, array in zip(outputs, results):
            region = node_regions.get(name)
            values[name] = (region.out if region is not None else WHOLE, torch.from_numpy(array))
        return values

    def _nchwc_maps(self, graph: Graph) -> frozenset[str]:
        """The maps the whole graph holds in NCHWc layout, as onnxruntime decides: its optimised
        graph renames them, or gives them their name back only through a ReorderOutput."""
        import onnxruntime as ort

        names = [n for n in graph.nodes if n != graph.input]
        whole = {n: region_of(graph, graph[n], {}) for n in names}
        model = segment_model(graph, names, whole, {graph.input: WHOLE}, graph.outputs)
        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
            opts.log_severity_level = 3
            ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            optimised = onnx.load(opts.optimized_model_filepath)
        plain = {o for n in optimised.graph.node if n.op_type != "ReorderOutput" for o in n.output}
        return frozenset(n for n in names if n not in plain)


def export_onnx(module: torch.nn.Module, input_shape: Sequence[int]) -> bytes:
    """The module as ONNX bytes (TorchScript exporter: fast, and folds BN like deployment does)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), _stdout_to_devnull():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (torch.zeros(1, *input_shape),), buf, dynamo=False,
                              input_names=["input"], output_names=["output"], opset_version=17)
        except Exception as exc:  # the exporter raises many kinds, each a model it cannot map
            detail = str(exc).splitlines()[0][:300]
            raise BackendError(f"cannot export the model to ONNX for onnxruntime: {detail}; "
                               "try another --input-size or --backend torch") from None
    return buf.getvalue()


@contextlib.contextmanager
def _stdout_to_devnull() -> Iterator[None]:
    """Discard what is written to this process's stdout meanwhile, at the file descriptor: when the
    TorchScript exporter fails it prints the whole graph there from C++ (116 KB for a MobileNet),
    which would corrupt `--json` output."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def segment_model(graph: Graph, names: Sequence[str], regions: Mapping[str, NodeRegion | None],
                  held: Mapping[str, Region], outputs: Sequence[str],
                  nchwc: frozenset[str] = frozenset()) -> bytes:  # fmt: skip
    """An ONNX model computing `outputs` of segment `names` from the tiles `held` of its sources;
    a sliced or fed-in map that the whole graph holds in NCHWc layout (`nchwc`) is relaid out so."""
    protos: list[onnx.NodeProto] = []
    inits: dict[str, torch.Tensor] = {}
    boxes: dict[str, Region] = dict(held)
    opset = 17
    for name in names:
        node = graph[name]
        if node.onnx is None:
            raise ValueError(f"node '{name}' has no ONNX form")
        proto, consts = node.onnx
        inits.update(consts)
        opset = node.attrs.get("opset", opset)
        region = regions.get(name)
        reads = region.reads if region is not None else (WHOLE,) * len(node.inputs)
        renamed = {src: _cut(graph, src, boxes[src], read, name, protos, inits, src in held, src in nchwc)
                   for src, read in zip(node.inputs, reads)}  # fmt: skip
        proto = onnx.NodeProto.FromString(proto.SerializeToString())
        proto.input[:] = [renamed.get(i, i) for i in proto.input]
        pads, crop = _geometry(graph, node, region)
        if pads is not None and node.op == "pad":  # Pad takes its border as an input
            top, left, bottom, right = pads
            inits[f"{name}__pads"] = torch.tensor([0, 0, top, left, 0, 0, bottom, right])
            proto.input[1] = f"{name}__pads"
            del proto.input[3:]  # the axes, where given, are all four now
        elif pads is not None:
            attrs = [a for a in proto.attribute if a.name not in ("pads", "auto_pad")]
            del proto.attribute[:]
            proto.attribute.extend([*attrs, helper.make_attribute("pads", list(pads))])
        protos.append(proto)
        if crop is not None:
            proto.output[0] = f"{name}__uncropped"
            _add_slice(proto.output[0], name, (0, 0), crop, protos, inits)
        boxes[name] = region.out if region is not None else WHOLE
    inputs = [helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, list(graph[s].shape[:2])
                                            + _hw(graph[s], box))
              for s, box in held.items()]  # fmt: skip
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs]
    initializers = [numpy_helper.from_array(np.ascontiguousarray(t.numpy()), n)
                    for n, t in inits.items()]  # fmt: skip
    g = helper.make_graph(protos, "segment", inputs, outs, initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _hw(node: Node, region: Region) -> list[int]:
    if not node.is_map:
        return list(node.shape[2:])
    box = as_part(region, node)
    return [box.height, box.width]


def _cut(graph: Graph, src: str, have: Region, read: Region, reader: str,
         protos: list, inits: dict, external: bool, nchwc: bool) -> str:  # fmt: skip
    """The tensor name `reader` reads for `src`: `src` itself, or a Slice of it down to `read`.

    A sliced or fed-in map read by a non-windowed node is in plain layout, so it is relaid out in
    NCHWc where the whole graph holds it so (`nchwc`): an Add reading it then fuses into its
    convolution just as in the monolithic graph, and rounds the same (see `_nchwc_identity`).
    Where the whole graph holds it in plain layout, a global pool reading it stays plain there,
    but onnxruntime lays out a global pool of a graph input in NCHWc, which sums in another order:
    a fed-in map a global pool reads is first copied by a plain Gather of all its channels.
    """
    name = src
    node = graph[src]
    if node.is_map and as_part(read, node) != as_part(have, node):
        have, read = as_part(have, node), as_part(read, node)
        start = (read.h0 - have.h0, read.w0 - have.w0)
        name = f"{src}__to__{reader}"
        _add_slice(src, name, start, (start[0] + read.height, start[1] + read.width), protos, inits)
    if (name == src and not external) or graph[reader].window is not None:
        return name
    channels = graph[src].shape[1]
    if nchwc:
        return _nchwc_identity(name, f"{name}__nchwc__{reader}", channels, protos, inits)
    if name == src and graph[reader].attrs.get("onnx_op") in ("GlobalAveragePool", "GlobalMaxPool"):
        dst = f"{name}__plain__{reader}"
        inits[f"{dst}__channels"] = torch.arange(channels)
        protos.append(helper.make_node("Gather", [name, f"{dst}__channels"], [dst], axis=1, name=dst))
        return dst
    return name


def _nchwc_identity(src: str, dst: str, channels: int, protos: list, inits: dict) -> str:
    """Append `dst = src` through an exact identity that onnxruntime runs in NCHWc layout.

    onnxruntime lays out a max pool in NCHWc only when its channels are a multiple of the NCHWc
    block (16 with AVX-512), so a 1x1 max pool serves there. Other channel counts are zero-padded
    to whole blocks and taken through a 1x1 convolution with an identity matrix (1 * x plus zeros
    is x; -0 becomes +0): onnxruntime runs a convolution in NCHWc only where its input channels
    are whole blocks or very few (a 21-class map fed unpadded to a bilinear Resize stayed in plain
    layout and rounded 1024-16384 ULP away from the whole graph's NCHWc Upsample). Its
    LeakyRelu(alpha=1), the identity too, is fused into it and keeps onnxruntime from fusing an Add
    into this convolution instead of the real one.
    """
    if channels % 16 == 0:
        protos.append(helper.make_node("MaxPool", [src], [dst], kernel_shape=[1, 1], name=dst))
        return dst
    blocks = -(-channels // 16) * 16
    inits[f"{dst}__pads"] = torch.tensor([0, 0, 0, 0, 0, blocks - channels, 0, 0])
    protos.append(helper.make_node("Pad", [src, f"{dst}__pads"], [f"{dst}__padded"], name=f"{dst}__padded"))
    inits[f"{dst}__eye"] = torch.eye(channels, blocks).reshape(channels, blocks, 1, 1)
    protos.append(helper.make_node("Conv", [f"{dst}__padded", f"{dst}__eye"], [f"{dst}__conv"],
                                   kernel_shape=[1, 1], name=f"{dst}__conv"))  # fmt: skip
    protos.append(helper.make_node("LeakyRelu", [f"{dst}__conv"], [dst], alpha=1.0, name=dst))
    return dst


def _add_slice(src: str, dst: str, start: tuple[int, int], stop: tuple[int, int],
               protos: list, inits: dict) -> None:  # fmt: skip
    """Append `dst = src[:, :, start[0]:stop[0], start[1]:stop[1]]`."""
    for part, value in (("starts", start), ("ends", stop), ("axes", (2, 3))):
        inits[f"{dst}__{part}"] = torch.tensor(value, dtype=torch.int64)
    protos.append(helper.make_node("Slice", [src, f"{dst}__starts", f"{dst}__ends", f"{dst}__axes"],
                                   [dst], name=dst))  # fmt: skip


def _geometry(graph: Graph, node: Node, region: NodeRegion | None
              ) -> tuple[tuple[int, int, int, int] | None, tuple[int, int] | None]:  # fmt: skip
    """ONNX pads (top, left, bottom, right) for a windowed node's tile, and the output to keep.

    Pooling keeps the op's own padding and ceil mode and crops the surplus windows, so averaging
    divisors and the ceil-mode overhang match the whole map exactly. A pool in plain layout (its
    channels not a multiple of the NCHWc block) runs MLAS's NCHW kernels, which sum a window in
    an order that depends on the shapes: a global kernel when the input is exactly one unpadded
    stride-1 window, else a row-vector one. A tile whose input is that one window while the whole
    map's is larger gets an extra padded column, computed and cropped, to take the whole map's kernel.
    """
    if node.window is None or region is None or node.op == "reorg":  # a reorg reads whole blocks
        return None, None
    top, bottom, left, right = region.pad
    if node.op in ("conv", "pad"):
        return (top, left, bottom, right), None
    w = node.window
    pads = (min(top, w.pad_begin[0]), min(left, w.pad_begin[1]),
            min(bottom, w.pad_end[0]), min(right, w.pad_end[1]))  # fmt: skip
    source = graph[node.inputs[0]]
    read = region.reads[0]
    if (source.shape[1] % 16 and w.stride == (1, 1) and not any(pads)
            and (read.height, read.width) == w.kernel != tuple(source.shape[2:])):  # fmt: skip
        return (0, 0, 0, 1), (region.out.height, region.out.width)
    if region.out == full_box(node):
        return pads, None
    return pads, (region.out.height, region.out.width)
