"""The DAG IR and the importers that build it from torch and ONNX models."""

from suite.graph.from_torch import GraphImportError, from_torch
from suite.graph.ir import MERGE, MIXING, POINTWISE, SPATIAL, WINDOWED, Graph, Node, Window

__all__ = [
    "MERGE", "MIXING", "POINTWISE", "SPATIAL", "WINDOWED",
    "Graph", "GraphImportError", "Node", "Window", "from_torch",
]  # fmt: skip
