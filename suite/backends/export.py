"""A torch module as ONNX whose tensors carry the model graph's names, for the onnxruntime backend.

Plans name the nodes of the *model graph* (`suite.graph.from_model`: torch.fx node names for a
module). The module is exported with every traced node's value as a graph output of that node's name
(the TorchScript exporter names a graph output as asked), then those outputs are dropped again, so
when onnxruntime folds the model (`suite.backends.ort`) a fused node keeps the name of the last node
it absorbs. What the exporter refuses is a `BackendError` that says which input size or backend to
try instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

import onnx
import torch
import torch.fx as fx

from suite.backends.base import BackendError, one_thread
from suite.graph import Graph
from suite.graph.from_torch import from_torch


def export_onnx(module: torch.nn.Module, input_shape: Sequence[int], name: str = "model") -> bytes:
    """The module as ONNX (TorchScript exporter, opset 17) whose tensors carry the model graph's
    names: each node of the torch.fx trace is exported as a graph output of its own name, then all
    but the model's outputs are dropped again (see the module docstring). Nothing is folded here;
    onnxruntime folds as it loads the model."""
    model_graph = from_torch(module, input_shape, name)
    gm = fx.symbolic_trace(module)
    traced = _exportable(gm, model_graph)
    # the traced nodes' values; a node the importer made of part of one (a step of a chain of data
    # movement) gets its name when onnxruntime's graph is imported, as the same chain of steps
    names = [n for n in model_graph.nodes if n != model_graph.input and n in traced]
    next(n for n in gm.graph.nodes if n.op == "output").args = (tuple(traced[n] for n in names),)
    buf = io.BytesIO()
    with warnings.catch_warnings(), _stdout_to_devnull(), _out_of_place(gm), one_thread():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                gm,
                (torch.zeros(1, *input_shape),),
                buf,
                dynamo=False,
                input_names=[model_graph.input],
                output_names=names,
                opset_version=17,
            )
        except Exception as exc:  # the exporter raises many kinds, each a model it cannot map
            detail = str(exc).splitlines()[0][:300]
            raise BackendError(
                f"cannot export the model to ONNX for onnxruntime: {detail}; "
                "try another --input-size or --backend torch"
            ) from None
    model = onnx.ModelProto()
    model.ParseFromString(buf.getbuffer())
    del buf  # VGG-16's weights are 0.5 GB: one copy at a time
    _keep_outputs(model, model_graph.outputs)
    return model.SerializeToString()


def _exportable(gm: fx.GraphModule, model_graph: Graph) -> dict[str, fx.Node]:
    """The traced nodes by name, after replacing each adaptive average pool the TorchScript exporter
    refuses (an output size that does not divide the input's, as VGG-16's 7x7 pool below 224 px)
    with `_AveragingProducts`, which computes the same averages. An adaptive max pool it would
    refuse so is a `BackendError` naming the node (the exporter's own error names none)."""
    traced = {n.name: n for n in gm.graph.nodes}
    for name, node in model_graph.nodes.items():
        in_hw = model_graph[node.inputs[0]].shape[2:] if node.inputs else ()
        if all(i % o == 0 for i, o in zip(in_hw, node.shape[2:])):
            continue
        if name in traced and _is_adaptive_max_pool(gm, traced[name]):
            (h, w), (oh, ow) = in_hw, node.shape[2:]
            raise BackendError(f"node '{name}' (adaptive max pool of a {h}x{w} map to {oh}x{ow}): the ONNX "
                               "exporter maps an adaptive pool only when its output size divides its "
                               f"input's; use an --input-size that makes the map at '{name}' a multiple of "
                               f"{oh}x{ow}, or --backend torch")  # fmt: skip
        if node.op != "adaptive_avgpool":
            continue
        old = traced[name]
        gm.add_submodule(f"{name}__averaging", _AveragingProducts(in_hw, node.shape[2:]))
        with gm.graph.inserting_before(old):
            traced[name] = gm.graph.call_module(f"{name}__averaging", (old.all_input_nodes[0],))
        old.replace_all_uses_with(traced[name])
        gm.graph.erase_node(old)
    return traced


def _is_adaptive_max_pool(gm: fx.GraphModule, fx_node: fx.Node) -> bool:
    if fx_node.op == "call_module":
        return isinstance(gm.get_submodule(fx_node.target), torch.nn.AdaptiveMaxPool2d)
    return fx_node.op == "call_function" and fx_node.target in (
        torch.nn.functional.adaptive_max_pool2d,
        torch.nn.functional.adaptive_max_pool2d_with_indices,
    )


class _AveragingProducts(torch.nn.Module):
    """Adaptive average pooling as `rows @ x @ cols`, each output's weight on every input row and
    column: the averages over PyTorch's windows `[floor(i * n / m), ceil((i + 1) * n / m))`."""

    def __init__(self, in_hw: Sequence[int], out_hw: Sequence[int]):
        super().__init__()
        rows, cols = (_averaging(n, m) for n, m in zip(in_hw, out_hw))
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols.t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.cols


def _averaging(n: int, m: int) -> torch.Tensor:
    """m x n: row i averages inputs floor(i * n / m) up to ceil((i + 1) * n / m)."""
    weights = torch.zeros(m, n)
    for i in range(m):
        first, stop = i * n // m, -(-(i + 1) * n // m)
        weights[i, first:stop] = 1.0 / (stop - first)
    return weights


@contextlib.contextmanager
def _out_of_place(gm: fx.GraphModule) -> Iterator[None]:
    """In-place ops made out of place while exporting: the tracer gives a tensor changed in place
    the name of its last value, so an in-place ReLU would lend its name to the convolution before it."""
    modules = [m for m in gm.modules() if getattr(m, "inplace", None) is True]
    for node in gm.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
    for m in modules:
        m.inplace = False
    gm.recompile()
    try:
        yield
    finally:
        for m in modules:  # the submodules are the caller's own
            m.inplace = True


def _keep_outputs(model: onnx.ModelProto, outputs: Sequence[str]) -> None:
    """Keep only `outputs` as the model's outputs, and the nodes and initializers they need."""
    kept = [o for o in model.graph.output if o.name in outputs]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    needed, live = set(outputs), []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(live))
    inits = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


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
