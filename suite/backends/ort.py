"""The onnxruntime backend: each segment tile runs as one ONNX graph in one session.

A tile's graph is the model's own nodes for that segment, with each windowed node's padding set to
what lies outside the map and Slice nodes where a node reads less than its producer made. Running
the segment as one graph lets onnxruntime apply the same layout transform and fusions (NCHWc
convolution, Conv+Add+Relu) as in the monolithic session. Both run at ORT_ENABLE_ALL: there MLAS's
NCHWc convolution accumulates in an order that does not depend on the map size, while at the basic
level its im2col GEMM regroups the reduction by output size and small tiles drift in the last bits.
A convolution onnxruntime keeps in plain layout even there (16 or more input channels, not a multiple
of 4) runs that GEMM: where its sum is long enough to be regrouped (`regrouped_convs`, asked of
onnxruntime per convolution shape), the graph this backend gives, and the model graph `suite plan`
plans on, mark it untiled (`mark_untiled`), so plans and the verifier run it whole, and a plan made
elsewhere that tiles it is refused in one line.

Plans name the nodes of the *model graph* (`suite.graph.from_model`: torch.fx node names for a
module, tensor names for an ONNX file), whatever backend runs them. This backend's graph keeps those
names: a module is exported with every traced node's value as a graph output of that node's name
(the TorchScript exporter names a graph output as asked), then those outputs are dropped again
(`suite.backends.export`), and onnxruntime's basic optimisations fold the model. A fused node keeps
the name of the last node it absorbs (a convolution and its batch norm: the batch norm's); a node
the exporter leaves out (dropout) is gone. So the graph here is the model graph less the nodes folded
into others, under the same names, and `suite.runtime.lowering` rewrites a plan onto it. Matching
nodes afterwards instead (by the exporter's scope names, by position, or by comparing values) was
rejected: functional ops carry no scope, and a freshly built batch norm is so close to the identity
that a convolution's output cannot be told from its batch norm's by value.

`prepare` writes the folded model as files (`suite.backends.folded`), which live as long as the
graph, and a run's workers load those (`load_folded`) instead of exporting the module themselves:
a worker's graph holds no weights (meta tensors), and its sessions reference the weights of its own
nodes in the data file, which onnxruntime maps itself; a weight it never runs is never read.

A worker builds its sessions before the first frame (`compile`): one per stage it computes, with
all its tiles of that stage side by side in one ONNX graph, so it holds one copy of the weights
however many tiles it computes. Once built, the sessions hold the weights, and the graph `compile`
returns holds none. Run without `compile` (verify, a replay), a session is built per segment and
tile at its first call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from suite.backends.base import BackendError, Compiled, Prepared, SegmentCall, Tile, region_of
from suite.backends.export import export_onnx
from suite.backends.folded import DATA, MODEL, External, WeightFile, read_folded
from suite.graph import Graph, Node
from suite.graph.from_onnx import from_onnx
from suite.processes import process_alive
from suite.regions import WHOLE, FeatureRange, NodeRegion, Region, as_part, full_box, hull_of, part_of

if TYPE_CHECKING:
    from suite.models.load import LoadedModel


@dataclass
class OrtBackend:
    """onnxruntime's CPU execution provider, with the sessions it built for the graph it last ran
    (node names and boxes repeat across models and input sizes, so they belong to one graph)."""

    name: str = "onnxruntime"
    threads: int | None = None
    observes_all_nodes: bool = False  # never: a segment's inner nodes stay inside its session
    _graph: Graph | None = field(default=None, init=False, repr=False)
    _sessions: dict = field(default_factory=dict, init=False, repr=False)  # segment, tile -> (_Session, tile)
    _nchwc: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _regrouped: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # `regrouped_convs`
    _layout_of: tuple = field(default=(), init=False, repr=False)  # `_shapes` of the graph `_layout` asked of
    _weights: WeightFile | None = field(default=None, init=False, repr=False)  # a worker's: load_folded

    def __post_init__(self) -> None:
        if self.observes_all_nodes:
            raise ValueError("onnxruntime returns a segment's outputs only; its inner nodes are fused")

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.inference_mode():
            yield

    def flags(self) -> dict[str, object]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "graph_optimization": "all",
                "threads": self.threads or 0}  # fmt: skip

    def session(self, model_bytes: bytes, level: str = "all", threads: int | None = None):
        """A session of the model, loaded from a file: a session made from bytes keeps them (for a
        reset), a second copy of its weights for as long as it lives. A worker's file lies beside
        its weight file, the one folder onnxruntime reads the weights the model references from."""
        folder = self._weights.path.parent if self._weights is not None else None
        with tempfile.NamedTemporaryFile(suffix=".onnx", dir=folder) as file:
            file.write(model_bytes)
            file.flush()
            return self._load(Path(file.name), level, threads)

    def _load(self, model_file: Path, level: str, threads: int | None = None):
        """A session at `level`, on `threads` threads (else the backend's own count), taking its
        buffers from the process's one arena (`_share_one_arena`)."""
        import onnxruntime as ort

        _share_one_arena()
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.use_env_allocators", "1")
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if level == "all"
            else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        )
        opts.log_severity_level = 3
        if threads or self.threads:
            opts.intra_op_num_threads = threads or self.threads
            opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])

    def prepare(self, loaded: LoadedModel) -> Prepared:
        """The model with ORT's portable basic optimisations applied once (BN folded into convs),
        as the graph tiles run and as the monolithic session, and as the folded model's files a
        run's workers load (`folded_model`); the session is built on the first call, so a process
        that never makes one does not hold a second copy of the weights."""
        model_bytes = loaded.onnx_bytes or export_onnx(loaded.module, loaded.input_shape, loaded.name)
        folder = _fold(model_bytes, loaded.name)
        del model_bytes
        graph = replace(from_onnx(onnx.load(str(folder / MODEL)), loaded.name), source="onnxruntime")
        self._use(graph)
        mark_untiled(graph)
        threads = REGROUPED_THREADS if self._regrouped else None
        _FOLDED[id(graph)] = folder
        weakref.finalize(graph, _forget, id(graph), folder)

        @cache
        def monolithic_session():
            return self._load(folder / MODEL, "all", threads)

        def monolithic(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(monolithic_session().run(None, {graph.input: x.numpy()})[0])

        return Prepared(graph, monolithic, "onnxruntime's session of the whole model", loaded.module)

    def load_folded(self, model_file: Path) -> Graph:
        """A worker's graph: the folded model `prepare` wrote, imported without its weights (meta
        tensors), which stay in the data file until this backend's sessions read those of the nodes
        they run there. No module is built and nothing is exported."""
        skeleton, self._weights = read_folded(model_file)
        graph = replace(from_onnx(skeleton, skeleton.graph.name), source="onnxruntime")
        self._use(graph)
        return mark_untiled(graph)

    def weight_bytes(self, name: str, tensor: torch.Tensor) -> Iterator[bytes | memoryview]:
        """A weight's bytes for its digest (`Node.param_digest`) after `load_folded`: read from
        the weight file where it was left there."""
        return self._weights.chunks(name, tensor)

    def run(self, graph: Graph, names: Sequence[str], values: dict[str, Tile],
            regions: Mapping[str, NodeRegion], outputs: Sequence[str]) -> dict[str, Tile]:  # fmt: skip
        self._use(graph)
        held = {s: values[s][0] for s in _sources(graph, names)}
        node_regions = {n: region_of(graph, graph[n], regions) for n in names}
        key = _key(names, node_regions, held, outputs)
        if key not in self._sessions:
            self._build(graph, names, held, [node_regions], outputs)
        session, tile = self._sessions[key]
        for name, array in zip(outputs, session.results(tile, graph, values)):
            region = node_regions.get(name)
            values[name] = (region.out if region is not None else WHOLE, torch.from_numpy(array))
        return values

    def compile(self, graph: Graph, segments: Sequence[SegmentCall]) -> Compiled:
        """Every segment's session, built now so that no frame waits for one; the tiles of one
        stage on this device (consecutive calls of one segment, differing only in their regions)
        share one session, and so one copy of the weights. Such a session computes them all at the
        first one's call (`_Session`), so only consecutive calls (`segments` come in the order a
        frame makes them) may share one: a segment reads nothing it writes, but a call between two
        may write what the later one reads (a DeepThings B tile's next run reads the map its
        previous run made, beside the bands it reuses). The sessions then hold the weights: the
        graph returned, which runs them on this backend, holds none (and cannot build a session
        for another segment)."""
        start = time.perf_counter()
        self._use(graph)
        stages = groupby(segments, key=lambda s: (s.names, tuple(s.held.items()), s.outputs))
        for (names, held, outputs), calls in stages:
            tiles = list(calls)
            regions = [{n: region_of(graph, graph[n], t.regions) for n in names} for t in tiles]
            self._build(graph, names, dict(held), regions, outputs)
        light = replace(graph, nodes={n: _weightless(node) for n, node in graph.nodes.items()})
        self._graph = light  # the sessions built for `graph` serve it without its weights
        built = {id(session) for session, _ in self._sessions.values()}
        return Compiled(light, len(built), time.perf_counter() - start)

    def _use(self, graph: Graph) -> None:
        """Sessions belong to the graph they were built for: another graph starts anew."""
        if graph is not self._graph:
            self._graph, self._sessions = graph, {}
            if _shapes(graph) != self._layout_of:  # a weight-pruned copy keeps its graph's layout
                self._layout_of = _shapes(graph)
                self._nchwc, self._regrouped = self._layout(graph), regrouped_convs(graph)

    def _build(
        self,
        graph: Graph,
        names: Sequence[str],
        held: Mapping[str, Region],
        tiles: Sequence[Mapping[str, NodeRegion | None]],
        outputs: Sequence[str],
    ) -> None:
        """One session computing the tiles (node regions) `tiles` of segment `names`, each fed only
        the part of each source it reads (offsets within the tile in its model, not positions)."""
        for name in names:
            if name in self._regrouped and any(_is_tile(graph, name, regions) for regions in tiles):
                raise BackendError(
                    f"node '{name}' (a convolution summing {self._regrouped[name]} products for each "
                    f"output, which onnxruntime runs in plain layout): MLAS sums it in runs of "
                    f"{MLAS_SUM_RUN} or in one by the size of the output it computes, so its tiles are "
                    "not bit-exact with the whole map; use --backend torch")  # fmt: skip
        fed = [_read(graph, names, regions, held) for regions in tiles]
        if len(tiles) == 1:
            model = segment_model(graph, names, tiles[0], fed[0], outputs, self._nchwc, self._weights)
        else:
            model = tiles_model(graph, names, list(zip(tiles, fed)), outputs, self._nchwc, self._weights)
        threads = REGROUPED_THREADS if any(name in self._regrouped for name in names) else None
        session = _Session(self.session(model, threads=threads), fed, list(outputs))
        for index, regions in enumerate(tiles):
            self._sessions[_key(names, regions, held, outputs)] = (session, index)

    def _layout(self, graph: Graph) -> frozenset[str]:
        """The maps the whole graph holds in NCHWc layout, as onnxruntime decides: its optimised
        graph renames them, or gives them their name back only through a ReorderOutput.

        Only the maps are asked about, so only the nodes computing maps from maps are built: the
        layout is decided per node and reordered back where a node needs plain NCHW (a flatten, a
        graph output) alike, and the classifier's weights (VGG-16's: 0.5 GB) stay out of memory.
        A worker asks with zeros for the weights it left in its weight file (layout follows shapes,
        not values), as it reads no weight of a node it does not run. The optimised model is
        written with its weights beside it, and read without them."""
        maps = {graph.input}
        for name, node in graph.nodes.items():
            if name != graph.input and node.is_map and all(s in maps for s in node.inputs):
                maps.add(name)
        names = [n for n in graph.nodes if n in maps and n != graph.input]
        whole = {n: region_of(graph, graph[n], {}) for n in names}
        with tempfile.TemporaryDirectory() as tmp:
            zeros = self._weights.zeros(Path(tmp) / DATA) if self._weights is not None else None
            model = Path(tmp) / MODEL
            model.write_bytes(segment_model(graph, names, whole, {graph.input: WHOLE}, graph.boundary(names),
                                            weight_file=zeros))  # fmt: skip
            optimised = optimised_model(model)
        plain = {o for n in optimised.graph.node if n.op_type != "ReorderOutput" for o in n.output}
        nchwc = {n for n in names if n not in plain and graph[n].is_map}  # NCHWc holds maps only
        for name in names:  # ORT removes an Identity, and its name with it: the map is its input's
            if graph[name].onnx is not None and graph[name].onnx[0].op_type == "Identity":
                nchwc.discard(name)
                if graph[name].inputs[0] in nchwc:
                    nchwc.add(name)
        return frozenset(nchwc)


@dataclass
class _Session:
    """A session computing one or more tiles of a segment (`fed`: the part of each source tile i
    is fed), with tile i's tensors suffixed `__tile<i>` when there are several.

    All its tiles are computed at the first tile's call, as onnxruntime runs the whole graph
    whatever outputs are asked for, and handed out at the other tiles' calls, which come next
    (`OrtBackend.compile`): the runtime asks for each tile once a frame, so a device's compute time
    for the stage lands on its first tile."""

    session: Any
    fed: list[dict[str, Region]]
    outputs: list[str]
    pending: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def results(self, tile: int, graph: Graph, values: Mapping[str, Tile]) -> list[np.ndarray]:
        if tile not in self.pending:
            name = (lambda t, i: t) if len(self.fed) == 1 else (lambda t, i: f"{t}__tile{i}")
            feeds = {name(s, i): part_of(values[s], region, graph[s]).contiguous().numpy()
                     for i, fed in enumerate(self.fed) for s, region in fed.items()}  # fmt: skip
            fetches = [name(o, i) for i in range(len(self.fed)) for o in self.outputs]
            arrays = self.session.run(fetches, feeds)
            n = len(self.outputs)
            self.pending = {i: arrays[i * n : (i + 1) * n] for i in range(len(self.fed))}
        return self.pending.pop(tile)


@cache
def _share_one_arena() -> None:
    """Registers one CPU arena with onnxruntime's environment, for every session of this process.

    Each session would otherwise grow an arena of its own to its largest maps and keep it: a worker
    of a per-layer plan (LW, MoDNN) holds a session per layer, so one arena per layer. YOLOv2 at
    608x608 on one MoDNN worker peaked at 1.25 GB so, 0.68 GB with the shared arena (the single
    plan's one session: 0.46 GB), at the same latency; the arena changes where buffers live, not
    the kernels or their order, so not a bit of any result."""
    import onnxruntime as ort

    cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))  # onnxruntime's defaults


def _key(names: Sequence[str], regions: Mapping[str, NodeRegion | None], held: Mapping[str, Region],
         outputs: Sequence[str]) -> tuple:  # fmt: skip
    return tuple(names), tuple(regions.values()), tuple(held.items()), tuple(outputs)


MLAS_SUM_RUN = 128  # MLAS_SGEMM_STRIDEK: the shortest run of products MLAS's GEMM sums before adding
# A session holding a regrouped conv runs on one thread: MLAS's runs follow the outputs per thread, so
# the whole map's sum would otherwise change with the thread count of the device that computes it
# (a 21-channel conv on a 16x16 map: 4 threads differ from 1 and 2), and the monolithic reference
# is computed on another device than the one that runs the conv whole.
REGROUPED_THREADS = 1


@dataclass(frozen=True)
class ConvShape:
    """What onnxruntime's choice of layout for a convolution follows: its input's shape, its
    weight's, its groups and its window; not its weights' values, nor the graph around it."""

    input: tuple[int, int, int]  # channels, height, width
    weight: tuple[int, int, int, int]  # output channels, input channels per group, kernel height, width
    groups: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # ONNX's order: top, left, bottom, right

    @property
    def products(self) -> int:
        """The products summed for each output."""
        return int(np.prod(self.weight[1:]))


def conv_shape(graph: Graph, node: Node) -> ConvShape:
    """From the graph's shapes, not the weight: a weight-pruned graph keeps only a device's weights."""
    w, groups, fed = node.window, node.attrs.get("groups", 1), tuple(graph[node.inputs[0]].shape[1:])
    weight = (node.shape[1], fed[0] // groups, *w.kernel)
    return ConvShape(fed, weight, groups, w.stride, w.dilation, (*w.pad_begin, *w.pad_end))


_PLAIN: dict[ConvShape, bool] = {}  # this process's answers of `_plain_layout`


def regrouped_convs(graph: Graph) -> dict[str, int]:
    """The convolutions of `graph` that onnxruntime runs in plain layout (not NCHWc: 16 or more
    input channels, not a multiple of 4, on AVX-512; every one where MLAS has no NCHWc kernels)
    and that sum more than `MLAS_SUM_RUN` products an output, with that number. MLAS computes them
    as im2col and GEMM, summing each output's products in runs of `MLAS_SUM_RUN`, 256, 512 or 1024
    by the number of outputs a thread is given (`MlasConvOperation`), and adding the runs' sums: a
    tile's few outputs are summed in one run where the whole map's are in several, and the whole
    map's own runs change with the thread count. A sum no longer than `MLAS_SUM_RUN` is one run
    whatever the sizes, as is every sum of the NCHWc kernels.

    onnxruntime is asked about each distinct convolution shape alone (`_plain_layout`), once per
    process: its layout follows the shapes, so this holds for the model graph (`suite plan`, no
    weights) as for onnxruntime's own, and costs a fraction of a second, not an export of the model."""
    shapes = {name: conv_shape(graph, node) for name, node in graph.nodes.items()
              if node.op == "conv" and node.is_map and graph[node.inputs[0]].is_map}  # fmt: skip
    long = {s for s in shapes.values() if s.products > MLAS_SUM_RUN}
    _PLAIN.update(_plain_layout([s for s in long if s not in _PLAIN]))
    return {name: s.products for name, s in shapes.items() if s in long and _PLAIN[s]}


def mark_untiled(graph: Graph) -> Graph:
    """`graph` with the convolutions whose tiles this host's onnxruntime would not sum as the whole
    map (`regrouped_convs`) marked not spatial, so that plans and the verifier end the tiles before
    them and run them whole, the plan saying why (`suite.graph.cuts`)."""
    for name, products in regrouped_convs(graph).items():
        graph[name].attrs["untiled"] = (
            f"onnxruntime runs this convolution in plain layout, summing {products} products an "
            f"output in runs set by the size of the output: a tile would not be bit-exact with the "
            "whole map (--backend torch tiles it)")  # fmt: skip
    return graph


def _plain_layout(shapes: Sequence[ConvShape]) -> dict[ConvShape, bool]:
    """Whether onnxruntime runs each convolution of `shapes` in plain layout at ORT_ENABLE_ALL: one
    graph holding each alone (its own input, zero weights and bias, its own output), optimised
    and read back. A plain one stays an ONNX Conv (or a FusedConv); an NCHWc one becomes a Conv of
    the com.microsoft.nchwc domain."""
    if not shapes:
        return {}
    nodes, inits, inputs, outputs = [], [], [], []
    for i, s in enumerate(shapes):
        inputs.append(helper.make_tensor_value_info(f"x{i}", onnx.TensorProto.FLOAT, [1, *s.input]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None))
        inits += [numpy_helper.from_array(np.zeros(s.weight, np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(s.weight[0], np.float32), f"b{i}")]  # fmt: skip
        nodes.append(helper.make_node("Conv", [f"x{i}", f"w{i}", f"b{i}"], [f"y{i}"], name=f"conv{i}",
                                      kernel_shape=list(s.weight[2:]), strides=list(s.stride), group=s.groups,
                                      dilations=list(s.dilation), pads=list(s.pads)))  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "convs", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MODEL).write_bytes(model.SerializeToString())
        plain = plain_conv_weights(optimised_model(Path(tmp) / MODEL))
    return {s: f"w{i}" in plain for i, s in enumerate(shapes)}


def plain_conv_weights(optimised: onnx.ModelProto) -> set[str]:
    """The weights of the convolutions an optimised model runs in plain layout: an ONNX Conv or a
    FusedConv, where an NCHWc one is a Conv of the com.microsoft.nchwc domain."""
    convs, plain = ("Conv", "FusedConv"), ("", "ai.onnx", "com.microsoft")
    return {n.input[1] for n in optimised.graph.node if n.op_type in convs and n.domain in plain}


def optimised_model(model: Path) -> onnx.ModelProto:
    """The graph onnxruntime runs for the model file `model` at ORT_ENABLE_ALL, written beside it
    (its weights in a file of their own) and read back without its weights."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(model.with_name("optimised.onnx"))
    opts.add_session_config_entry(f"{_EXTERNAL}_file_name", "optimised.onnx.data")
    opts.log_severity_level = 3
    ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return onnx.load(opts.optimized_model_filepath, load_external_data=False)


def _shapes(graph: Graph) -> tuple:
    """What onnxruntime's layout follows (`OrtBackend._layout`): the nodes, what they read, their
    windows, shapes and products (so their channels per group); not their weights."""
    nodes = graph.nodes.items()
    return graph.name, tuple(
        (n, node.op, node.inputs, node.shape, node.window, node.flops) for n, node in nodes
    )


def _is_tile(graph: Graph, name: str, regions: Mapping[str, NodeRegion | None]) -> bool:
    region = regions.get(name)
    return region is not None and region.out != full_box(graph[name])


def _sources(graph: Graph, names: Sequence[str]) -> list[str]:
    """The tensors a segment reads from outside itself, in the order it first reads them."""
    inside = set(names)
    return list(dict.fromkeys(s for n in names for s in graph[n].inputs if s not in inside))


def _read(graph: Graph, names: Sequence[str], regions: Mapping[str, NodeRegion | None],
          held: Mapping[str, Region]) -> dict[str, Region]:  # fmt: skip
    """The part of each source the segment's nodes read (the hull of their reads)."""
    reads: dict[str, list[Region]] = {s: [] for s in held}
    for name in names:
        node, region = graph[name], regions[name]
        for src, read in zip(node.inputs, region.reads if region else (WHOLE,) * len(node.inputs)):
            if src in reads:
                reads[src].append(read)
    return {s: hull_of(r, graph[s]) for s, r in reads.items()}


def _weightless(node: Node) -> Node:
    if not node.params and (node.onnx is None or not node.onnx[1]):
        return node
    return replace(node, params={}, onnx=None if node.onnx is None else (node.onnx[0], {}))


# -- the model as ONNX, under the model graph's names --------------------------------------------

_FOLDED: dict[int, Path] = {}  # id of a graph `prepare` made -> the folder of its folded model
_EXTERNAL = "session.optimized_model_external_initializers"  # an optimised model's weights beside it
PREPACK_BYTES = 64 << 20  # the most of a linear layer's weight read from the file into one Gemm


def folded_model(graph: Graph) -> Path:
    """The folder of the folded model `graph` was imported from (`prepare`), which a run's workers
    load; it is removed once the graph is gone."""
    return _FOLDED[id(graph)]


def _forget(key: int, folder: Path) -> None:
    _FOLDED.pop(key, None)
    shutil.rmtree(folder, ignore_errors=True)


def _folded_prefix(pid: int) -> str:
    return f"suite-folded-{pid}-"


def _remove_orphaned_folds(scratch: Path) -> None:
    """Remove the folded models of processes that are gone: one killed outright (SIGKILL, or a
    SIGTERM without a handler, as `timeout` sends) never runs its finaliser, and each folder holds
    a whole model's weights. A folder whose process lives, or whose name carries no process id, stays."""
    for folder in scratch.glob(_folded_prefix("*") + "*"):
        pid = folder.name.removeprefix("suite-folded-").split("-", 1)[0]
        if pid.isdigit() and folder.stat().st_uid == os.getuid() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _fold(model_bytes: bytes, name: str) -> Path:
    """A new folder holding the model as onnxruntime folds it (basic optimisations), written by
    onnxruntime with its tensors from 1 KiB up in the data file; the graph is named `name`, the
    name a worker gives the model it loads. Its name carries this process's id, so that a later
    process can tell it was left behind (`_remove_orphaned_folds`)."""
    import onnxruntime as ort

    _remove_orphaned_folds(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=_folded_prefix(os.getpid())))
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folder / MODEL)
        opts.add_session_config_entry(f"{_EXTERNAL}_file_name", DATA)
        opts.add_session_config_entry(f"{_EXTERNAL}_min_size_in_bytes", "1024")
        ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        skeleton = onnx.load(str(folder / MODEL), load_external_data=False)
        skeleton.graph.name = name
        (folder / MODEL).write_bytes(skeleton.SerializeToString())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


@dataclass
class _Parts:
    """An ONNX graph in parts: nodes, constants, inputs, outputs and opset."""

    nodes: list[onnx.NodeProto]
    inits: dict[str, torch.Tensor]
    inputs: list[onnx.ValueInfoProto]
    outputs: list[onnx.ValueInfoProto]
    opset: int


def segment_model(graph: Graph, names: Sequence[str], regions: Mapping[str, NodeRegion | None],
                  held: Mapping[str, Region], outputs: Sequence[str], nchwc: frozenset[str] = frozenset(),
                  weight_file: WeightFile | None = None) -> bytes:  # fmt: skip
    """An ONNX model computing `outputs` of segment `names` from the tiles `held` of its sources;
    a sliced or fed-in map that the whole graph holds in NCHWc layout (`nchwc`) is relaid out so.
    A weight left in `weight_file` (a meta tensor) is referenced there, so the model must be
    loaded from that file's folder."""
    return _serialize(_segment_parts(graph, names, regions, held, outputs, nchwc, weight_file))


def tiles_model(graph: Graph, names: Sequence[str], tiles: Sequence[tuple[Mapping[str, NodeRegion | None],
                Mapping[str, Region]]], outputs: Sequence[str], nchwc: frozenset[str] = frozenset(),
                weight_file: WeightFile | None = None) -> bytes:  # fmt: skip
    """One ONNX model computing several tiles of segment `names` side by side, tile i from the
    regions and fed parts `tiles[i]`, its tensors suffixed `__tile<i>`; the model's weights are
    shared, so the session holds one copy of them whatever the number of tiles."""
    weights = {c for n in names if graph[n].onnx is not None for c in graph[n].onnx[1]}
    merged = _Parts([], {}, [], [], 17)
    for i, (regions, fed) in enumerate(tiles):
        parts = _segment_parts(graph, names, regions, fed, outputs, nchwc, weight_file)
        named = lambda t, i=i: t if t in weights or not t else f"{t}__tile{i}"  # noqa: E731
        for proto in parts.nodes:
            proto.input[:] = [named(t) for t in proto.input]
            proto.output[:] = [named(t) for t in proto.output]
            proto.name = named(proto.name)
        for value in parts.inputs + parts.outputs:
            value.name = named(value.name)
        merged.nodes += parts.nodes
        merged.inits |= {named(t): v for t, v in parts.inits.items()}
        merged.inputs += parts.inputs
        merged.outputs += parts.outputs
        merged.opset = parts.opset
    return _serialize(merged)


def _serialize(parts: _Parts) -> bytes:
    initializers = [t.proto(n) if isinstance(t, External)
                    else numpy_helper.from_array(np.ascontiguousarray(t.numpy()), n)
                    for n, t in parts.inits.items()]  # fmt: skip
    g = helper.make_graph(parts.nodes, "segment", parts.inputs, parts.outputs, initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", parts.opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _segment_parts(graph: Graph, names: Sequence[str], regions: Mapping[str, NodeRegion | None],
                   held: Mapping[str, Region], outputs: Sequence[str], nchwc: frozenset[str],
                   weight_file: WeightFile | None) -> _Parts:  # fmt: skip
    protos: list[onnx.NodeProto] = []
    inits: dict[str, torch.Tensor | External] = {}
    boxes: dict[str, Region] = dict(held)
    opset = 17
    for name in names:
        node = graph[name]
        if node.onnx is None:
            raise ValueError(f"node '{name}' has no ONNX form")
        proto, consts = node.onnx
        pieces = [*(onnx.NodeProto.FromString(p) for p in node.attrs.get("onnx_before", ())), proto]
        region = regions.get(name)
        features = region.out if region is not None and isinstance(region.out, FeatureRange) else None
        weight = node.params.get("weight")
        if features is None and node.op == "linear" and weight is not None and weight.is_meta:
            features = FeatureRange(0, node.shape[-1])  # the whole layer, from the file in runs of rows
        if features is not None:
            pieces, consts = _feature_share(node, features, weight_file)
        elif weight_file is not None:  # a weight left in the file is referenced there
            consts = {c: weight_file.tensors[c] if t.is_meta else t for c, t in consts.items()}
        inits.update(consts)
        opset = node.attrs.get("opset", opset)
        reads = region.reads if region is not None else (WHOLE,) * len(node.inputs)
        border = _resize_border(node, region)
        renamed = {src: _cut(graph, src, boxes[src], read, name, protos, inits, src in held, src in nchwc,
                             border) for src, read in zip(node.inputs, reads)}  # fmt: skip
        *rows, proto = (onnx.NodeProto.FromString(p.SerializeToString()) for p in pieces)
        for piece in (*rows, proto):
            piece.input[:] = [renamed.get(i, i) for i in piece.input]
        protos.extend(rows)
        pads, crop = _geometry(graph, node, region)
        if node.op == "resize" and region is not None:
            crop = _resize_tile(node, region, proto, inits)
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
            if node.op == "resize" and name in nchwc:  # NCHWc again after the crop, as in the whole graph
                _add_slice(proto.output[0], f"{name}__cropped", *crop, protos, inits)
                _nchwc_identity(f"{name}__cropped", name, node.shape[1], protos, inits)
            else:
                _add_slice(proto.output[0], name, *crop, protos, inits)
        boxes[name] = region.out if region is not None else WHOLE
    inputs = [helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, list(graph[s].shape[:2])
                                            + _hw(graph[s], box))
              for s, box in held.items()]  # fmt: skip
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs]
    return _Parts(protos, inits, inputs, outs, opset)


def _feature_share(node: Node, features: FeatureRange, weight_file: WeightFile | None
                   ) -> tuple[list[onnx.NodeProto], dict[str, torch.Tensor | External]]:  # fmt: skip
    """Gemms computing only `features` of a linear layer (MoDNN's FC split), from the rows of the
    weight for them among those the device holds (`weight_rows`, set by `prune_weights`), the last
    one's output the node's. Weights left in `weight_file` are referenced there, in runs of rows of
    at most PREPACK_BYTES, one Gemm each, joined by a Concat: onnxruntime prepacks a Gemm's weight
    while its bytes in the file are still mapped, so one Gemm of VGG-16's first 400 MB layer took
    twice that at a worker's start (4 runs: 0.27 GB less at the peak).

    Bit-exact for any cut: onnxruntime's Gemm sums each output feature over the inputs in the same
    order whichever rows it is given (measured on the zoo's heads, cuts at 1, 3, 16, 17, 40 and
    halves: 96 of 96 exact), so the split runs here rather than on torch, whose kernels would not
    match this backend's monolithic model anyway."""
    held = node.attrs.get("weight_rows", FeatureRange(0, node.shape[-1]))
    weight = node.params["weight"]
    row_bytes = weight.shape[1] * weight.element_size()
    step = max(1, PREPACK_BYTES // row_bytes) if weight.is_meta else features.size
    runs = [FeatureRange(a, min(a + step, features.stop)) for a in range(features.start, features.stop, step)]
    gemms, consts = [], {}
    for run in runs:
        out = node.name if len(runs) == 1 else f"{node.name}__rows{run.start}"
        inputs = [f"{out}__{k}" for k in node.params]
        for const, (k, v) in zip(inputs, node.params.items()):
            consts[const] = _rows_in_file(node, k, run, weight_file) if v.is_meta else v[run.within(held)[-1]]
        gemms.append(helper.make_node("Gemm", [node.inputs[0], *inputs], [out], transB=1, name=out))
    if len(runs) > 1:
        gemms.append(helper.make_node("Concat", [g.output[0] for g in gemms], [node.name], axis=1,
                                      name=node.name))  # fmt: skip
    return gemms, consts


def _rows_in_file(node: Node, param: str, features: FeatureRange, weight_file: WeightFile
                  ) -> torch.Tensor | External:  # fmt: skip
    """The rows of a linear layer's weight or bias for `features`, from the initializer it was
    imported from: a run of that one's bytes in `weight_file`, or (a Gemm weight stored
    transposed) its columns, read."""
    proto = node.onnx[0]
    initializer = proto.input[1 if param == "weight" else 2]
    if param == "weight" and not any(a.name == "transB" and a.i for a in proto.attribute):
        return weight_file.read(initializer).t()[features.rows].contiguous()
    return weight_file.tensors[initializer].rows(features.start, features.stop)


def _hw(node: Node, region: Region) -> list[int]:
    if not node.is_map:
        return list(node.shape[2:])
    box = as_part(region, node)
    return [box.height, box.width]


def _cut(graph: Graph, src: str, have: Region, read: Region, reader: str, protos: list, inits: dict,
         external: bool, nchwc: bool, border: tuple[int, int, int, int] | None = None) -> str:  # fmt: skip
    """The tensor name `reader` reads for `src`: `src` itself, or a Slice of it down to `read`, then
    zero-padded by `border` (top, bottom, left, right) where one is given.

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
    if border is not None and any(border):
        top, bottom, left, right = border
        inits[f"{name}__border"] = torch.tensor([0, 0, top, left, 0, 0, bottom, right])
        protos.append(helper.make_node("Pad", [name, f"{name}__border"], [f"{name}__bordered"],
                                       name=f"{name}__bordered"))  # fmt: skip
        name = f"{name}__bordered"
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


Crop = tuple[tuple[int, int], tuple[int, int]]  # the start and stop row and column of a node's output to keep


def _geometry(graph: Graph, node: Node, region: NodeRegion | None
              ) -> tuple[tuple[int, int, int, int] | None, Crop | None]:  # fmt: skip
    """ONNX pads (top, left, bottom, right) for a windowed node's tile, and the output to keep
    (start and stop row and column), where it computes more.

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
        return (0, 0, 0, 1), ((0, 0), (region.out.height, region.out.width))
    if region.out == full_box(node):
        return pads, None
    return pads, ((0, 0), (region.out.height, region.out.width))


def _resize_border(node: Node, region: NodeRegion | None) -> tuple[int, int, int, int] | None:
    """The zeros (top, bottom, left, right) around the rows and columns a resize's tile reads that
    give back the whole map's size, for a resize that does not shift (`Resampling.shifts`): its
    coordinates depend on that size. None for any other node or tile."""
    if node.op != "resize" or region is None or node.attrs["resampling"].shifts:
        return None
    (height, width), read = node.attrs["resampling"].in_hw, region.reads[0]
    return read.h0, height - read.h1, read.w0, width - read.w1


def _resize_tile(node: Node, region: NodeRegion, proto: onnx.NodeProto, inits: dict) -> Crop | None:
    """A resize's tile: the model's own Resize. Where it shifts (`Resampling.shifts`: an integer
    scale k) it runs on the rows and columns the tile reads and puts whole-map output row o at its
    row o - k r (r: the first row read), on the same float32 coordinates; a Resize given by sizes
    gets the tile's. Otherwise it runs on them zero-padded to the whole map (`_resize_border`), and
    output row o is its row o. Returns the output rows and columns to keep, None for all of them."""
    resampling, read, out = node.attrs["resampling"], region.reads[0], region.out
    if resampling.shifts:
        kh, kw = (int(k) for k in resampling.scale)
        made, first = (kh * read.height, kw * read.width), (kh * read.h0, kw * read.w0)
    else:
        made, first = resampling.out_hw, (0, 0)
    if resampling.shifts and len(proto.input) > 3 and proto.input[3]:
        inits[f"{node.name}__sizes"] = torch.tensor([*node.shape[:2], *made], dtype=torch.int64)
        proto.input[3] = f"{node.name}__sizes"
    start = (out.h0 - first[0], out.w0 - first[1])
    stop = (start[0] + out.height, start[1] + out.width)
    return None if start == (0, 0) and stop == tuple(made) else (start, stop)
