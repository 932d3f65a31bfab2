"""The DAG IR and the importers that build it from torch and ONNX models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from suite.graph.from_torch import from_torch
from suite.graph.importing import GraphImportError
from suite.graph.ir import BROADCAST, MERGE, MIXING, POINTWISE, SPATIAL, WINDOWED, Graph, Node, Window

if TYPE_CHECKING:
    from suite.models.load import LoadedModel

__all__ = [
    "BROADCAST", "MERGE", "MIXING", "POINTWISE", "SPATIAL", "WINDOWED",
    "Graph", "GraphImportError", "Node", "Window", "from_model", "from_torch",
]  # fmt: skip


def from_model(loaded: LoadedModel) -> Graph:
    """The graph of a loaded model: traced from its module, or imported from its ONNX bytes."""
    if loaded.module is not None:
        return from_torch(loaded.module, loaded.input_shape, loaded.name)
    import onnx

    from suite.graph.from_onnx import from_onnx

    return from_onnx(onnx.ModelProto.FromString(loaded.onnx_bytes), loaded.name)
