"""What every backend is: the `Backend` protocol, the tiles it passes around, and the two ways to
run a graph on it (a segment of tiles, or the whole model node by node)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from suite.errors import UserError
from suite.graph import Graph, Node
from suite.regions import WHOLE, NodeRegion, Region, full_box, node_region

if TYPE_CHECKING:
    from suite.models.load import LoadedModel

Tile = tuple[Region, torch.Tensor]  # a tensor and the region of the node's output it covers


class BackendError(UserError):
    """A backend cannot run a node (names the node and why)."""


@dataclass
class Prepared:
    """A model's graph on one backend and its monolithic run on that backend (the reference every
    tile meets, described by `reference`), and, when the model is a module, its forward on PyTorch's
    own kernels (`native`): how far the backend's arithmetic lies from the model as its author runs it."""

    graph: Graph
    monolithic: Callable[[torch.Tensor], torch.Tensor]
    reference: str = "the backend's own run of the whole model"
    native: Callable[[torch.Tensor], torch.Tensor] | None = None
    node_by_node: bool = False  # `monolithic` is `run_whole` of `graph` on the backend: verify's whole run


@dataclass(frozen=True)
class SegmentCall:
    """A call a runtime makes every frame: `names` run on tiles `held` of the tensors they read
    from outside (the region of each that the caller holds), computing `regions`, returning `outputs`."""

    names: tuple[str, ...]
    held: Mapping[str, Region]
    regions: Mapping[str, NodeRegion]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Compiled:
    """What `Backend.compile` built: the graph to run the segments with, the executables it made
    (onnxruntime's sessions; none on torch) and the seconds that took."""

    graph: Graph
    executables: int
    seconds: float


class Backend(Protocol):
    """Runs segments of a graph on tiles and the monolithic model, on one numeric library.

    `observes_all_nodes`: `run` hands back every node's tile (for `verify` to name the first node
    that differs), not only the requested outputs.
    """

    name: str
    threads: int | None
    observes_all_nodes: bool

    def active(self) -> AbstractContextManager[None]:
        """Process-wide settings (flags, threads) for the frames run inside it."""

    def flags(self) -> dict[str, object]:
        """The settings results record, so a figure can be traced to them."""

    def prepare(self, loaded: LoadedModel) -> Prepared:
        """The graph this backend executes, and the monolithic model on the same backend."""

    def run(self, graph: Graph, names: Sequence[str], values: dict[str, Tile],
            regions: Mapping[str, NodeRegion], outputs: Sequence[str]) -> dict[str, Tile]:  # fmt: skip
        """Run `names` in order over `values`; returns at least the tiles of `outputs`."""

    def compile(self, graph: Graph, segments: Sequence[SegmentCall]) -> Compiled:
        """Build what running `segments` needs before the first frame (a worker's start-up), and
        return the graph to run them with from then on."""


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """PyTorch on one thread, for what runs outside a backend's own settings (a module's forward, the
    ONNX export): torch 2.13's aarch64 wheel dies of SIGILL on a Pi 3 or 4 (ARMv8.0) whenever its
    BLAS multiplies on several threads (hardware/aarch64/README.md)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def region_of(graph: Graph, node: Node, regions: Mapping[str, NodeRegion]) -> NodeRegion | None:
    """The node's region in this run; a spatial node without one computes its whole map."""
    region = regions.get(node.name)
    if region is None and node.spatial:
        region = node_region(graph, node, full_box(node))
    return region


def run_segment(graph: Graph, names: Sequence[str], values: Mapping[str, Tile], backend: Backend,
                regions: Mapping[str, NodeRegion] | None = None,
                outputs: Sequence[str] | None = None) -> dict[str, Tile]:  # fmt: skip
    """Run `names` (in order) over `values` (tiles of the nodes they read), one backend call.

    A node with a region computes just that region; one without computes its whole output.
    Returns at least the tiles of `outputs` (default: the nodes whose results leave `names`).
    """
    outputs = list(outputs) if outputs is not None else graph.boundary(names)
    return backend.run(graph, list(names), dict(values), regions or {}, outputs)


def run_whole(graph: Graph, x: torch.Tensor, backend: Backend, outputs: Sequence[str] | None = None
              ) -> dict[str, torch.Tensor]:  # fmt: skip
    """Whole outputs of `outputs` (default: every node) for input `x`: the untiled run."""
    names = [n for n in graph.nodes if n != graph.input]
    tiles = run_segment(graph, names, {graph.input: (WHOLE, x)}, backend,
                        outputs=names if outputs is None else outputs)  # fmt: skip
    return {name: tensor for name, (_, tensor) in tiles.items()}
