"""Backends run a graph's segments on tiles, exactly as the monolithic model would compute them.

- `torch` (exact: oneDNN and NNPACK off) and `torch-fast` (oneDNN on): `suite/backends/torch.py`;
- `onnxruntime` (CPU execution provider; each segment tile runs as one ONNX graph):
  `suite/backends/ort.py`, its workers loading the folded model's files (`folded.py`), a torch
  module exported to ONNX under the model graph's names (`export.py`).

`make_backend` is the registry; `base.py` holds the protocol every backend meets.
"""

from __future__ import annotations

from suite.backends.base import (
    Backend,
    BackendError,
    Compiled,
    Prepared,
    SegmentCall,
    Tile,
    one_thread,
    region_of,
    run_segment,
    run_whole,
)
from suite.backends.torch import TorchBackend
from suite.graph import Graph

BACKENDS = ("torch", "torch-fast", "onnxruntime")

__all__ = [
    "BACKENDS", "Backend", "BackendError", "Compiled", "Prepared", "SegmentCall", "Tile", "TorchBackend",
    "check_backend", "make_backend", "mark_untiled_for", "one_thread", "region_of", "run_segment",
    "run_whole",
]  # fmt: skip


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")


def make_backend(name: str, threads: int | None = None) -> Backend:
    """A backend by name."""
    check_backend(name)
    if name == "torch":
        return TorchBackend("torch", exact=True, threads=threads)
    if name == "torch-fast":
        return TorchBackend("torch-fast", exact=False, threads=threads)
    if name == "onnxruntime":
        from suite.backends.ort import OrtBackend  # imports onnxruntime only when asked for

        return OrtBackend(threads=threads)


def mark_untiled_for(graph: Graph, backend: str) -> Graph:
    """`graph` with the nodes `backend` cannot tile bit-exactly on this host marked so
    (`Node.spatial`), for plans made on it to run them whole: onnxruntime's convolutions in plain
    layout with long sums, asked of onnxruntime per convolution shape (`suite.backends.ort`), with
    no weights and no export of the model. The torch backends tile every node."""
    if backend == "onnxruntime":
        from suite.backends.ort import mark_untiled

        return mark_untiled(graph)
    return graph
