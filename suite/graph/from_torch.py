"""Build the IR from an `nn.Module` with torch.fx and shape propagation."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from suite.errors import UserError
from suite.graph.ir import Graph, Node, Window, node_flops

# Modules and functions whose output at a position depends only on the input at that position.
_POINTWISE_MODULES = (
    nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU,
    nn.ELU, nn.Mish,
)  # fmt: skip
_POINTWISE_FUNCTIONS = {
    F.relu6, F.leaky_relu, F.silu, F.hardswish, F.hardsigmoid, F.gelu, F.elu, F.mish,
    torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
}  # fmt: skip
_RELU = {F.relu, torch.relu}
_ADD = {operator.add, torch.add}
_MUL = {operator.mul, torch.mul}


class GraphImportError(UserError):
    """The model cannot be turned into an IR graph (names the node and why)."""


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(kernel, stride, padding, dilation=1, ceil_mode=False) -> Window:
    if isinstance(padding, str):
        raise GraphImportError(f"string padding '{padding}' is not supported; use integers")
    stride = kernel if stride in (None, ()) else stride
    pad = _pair(padding)
    return Window(_pair(kernel), _pair(stride), _pair(dilation), pad, pad, bool(ceil_mode))


def _bind(names: Sequence[str], defaults: dict, args: tuple, kwargs: dict) -> dict:
    """Map a call's positional and keyword arguments onto parameter names."""
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _classify_module(mod: nn.Module) -> tuple[str, dict]:
    """Op kind and attributes of a call_module node."""
    if isinstance(mod, nn.Conv2d):
        window = _window(mod.kernel_size, mod.stride, mod.padding, mod.dilation)
        if mod.padding_mode != "zeros":
            return "opaque", {"reason": f"padding_mode={mod.padding_mode}"}
        params = {"weight": mod.weight}
        if mod.bias is not None:
            params["bias"] = mod.bias
        return "conv", {"window": window, "groups": mod.groups, "params": params}
    if isinstance(mod, nn.MaxPool2d):
        if mod.return_indices:
            return "opaque", {"reason": "return_indices=True"}
        window = _window(mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)
        return "maxpool", {"window": window}
    if isinstance(mod, nn.AvgPool2d):
        window = _window(mod.kernel_size, mod.stride, mod.padding, 1, mod.ceil_mode)
        if mod.divisor_override is not None:
            return "opaque", {"reason": "divisor_override"}
        return "avgpool", {"window": window, "count_include_pad": mod.count_include_pad}
    if isinstance(mod, nn.BatchNorm2d):
        params = {"running_mean": mod.running_mean, "running_var": mod.running_var}
        if mod.weight is not None:
            params.update(weight=mod.weight, bias=mod.bias)
        return "batchnorm", {"eps": mod.eps, "params": params}
    if isinstance(mod, nn.ReLU):
        return "relu", {}
    if isinstance(mod, (nn.Dropout, nn.Dropout2d)):
        return "dropout", {}
    if isinstance(mod, nn.Identity):
        return "identity", {}
    if isinstance(mod, nn.Flatten):
        if mod.end_dim != -1:
            return "opaque", {"reason": "flatten with end_dim"}
        return "flatten", {"start_dim": mod.start_dim}
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return "adaptive_avgpool", {"output_size": _pair(mod.output_size)}
    if isinstance(mod, nn.Linear):
        params = {"weight": mod.weight}
        if mod.bias is not None:
            params["bias"] = mod.bias
        return "linear", {"params": params}
    if isinstance(mod, _POINTWISE_MODULES):
        return "elementwise", {}
    return "opaque", {"reason": f"module {type(mod).__name__}"}


def _classify_function(target: Callable, args: tuple, kwargs: dict) -> tuple[str, dict]:
    """Op kind and attributes of a call_function or call_method node."""
    if target in _RELU or target == "relu":
        return "relu", {}
    if target in _ADD or target == "add":
        return "add", {}
    if target in _MUL or target == "mul":
        return "mul", {}
    if target is torch.cat:
        b = _bind(("tensors", "dim"), {"dim": 0}, args, kwargs)
        if b["dim"] in (1, -3):
            return "concat", {}
        return "opaque", {"reason": f"concat along dim {b['dim']}"}
    if target is torch.flatten or target == "flatten":
        b = _bind(("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1}, args, kwargs)
        if b["end_dim"] != -1:
            return "opaque", {"reason": "flatten with end_dim"}
        return "flatten", {"start_dim": b["start_dim"]}
    if target is F.max_pool2d:
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        b = _bind(names, {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}, args, kwargs)
        if b.get("return_indices"):
            return "opaque", {"reason": "return_indices=True"}
        window = _window(b["kernel_size"], b["stride"], b["padding"], b["dilation"], b["ceil_mode"])
        return "maxpool", {"window": window}
    if target is F.avg_pool2d:
        names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override")  # fmt: skip
        defaults = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True}
        b = _bind(names, defaults, args, kwargs)
        if b.get("divisor_override") is not None:
            return "opaque", {"reason": "divisor_override"}
        window = _window(b["kernel_size"], b["stride"], b["padding"], 1, b["ceil_mode"])
        return "avgpool", {"window": window, "count_include_pad": b["count_include_pad"]}
    if target is F.adaptive_avg_pool2d:
        b = _bind(("input", "output_size"), {}, args, kwargs)
        return "adaptive_avgpool", {"output_size": _pair(b["output_size"])}
    if target is F.dropout:
        return "dropout", {}
    if target in _POINTWISE_FUNCTIONS or target in ("sigmoid", "tanh"):
        return "elementwise", {}
    name = getattr(target, "__name__", str(target))
    return "opaque", {"reason": f"function {name}"}


def _runner(gm: fx.GraphModule, fx_node: fx.Node) -> Callable[..., torch.Tensor]:
    """A callable that replays one fx node, taking its tensor inputs positionally."""
    tensor_inputs = [a for a in fx_node.all_input_nodes]

    def substitute(tensors: tuple[torch.Tensor, ...]):
        env = dict(zip(tensor_inputs, tensors))
        return fx.node.map_arg((fx_node.args, fx_node.kwargs), lambda n: env[n])

    if fx_node.op == "call_module":
        mod = gm.get_submodule(fx_node.target)

        def run(*tensors):
            args, kwargs = substitute(tensors)
            return mod(*args, **kwargs)
    elif fx_node.op == "call_method":

        def run(*tensors):
            (self_arg, *args), kwargs = substitute(tensors)
            return getattr(self_arg, fx_node.target)(*args, **kwargs)
    else:

        def run(*tensors):
            args, kwargs = substitute(tensors)
            return fx_node.target(*args, **kwargs)

    return run


@dataclass(frozen=True)
class _Shape:
    """A tensor known by its shape alone, standing in for values during shape propagation."""

    shape: tuple[int, ...]


def _classify(gm: fx.GraphModule, fx_node: fx.Node) -> tuple[str, dict]:
    if fx_node.op == "call_module":
        return _classify_module(gm.get_submodule(fx_node.target))
    return _classify_function(fx_node.target, fx_node.args, fx_node.kwargs)


def _known_shape(op: str, attrs: dict, node: str, ins: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The output shape of an op kind the IR knows, from its inputs' shapes (None: run it to see).

    The same geometry the region math uses, so planning needs neither weights nor a forward pass.
    """
    x = ins[0] if ins else None
    weight = attrs.get("params", {}).get("weight")
    if op == "conv" and len(x) == 4:
        if x[1] != weight.shape[1] * attrs["groups"]:
            raise GraphImportError(f"node '{node}': conv expects {weight.shape[1] * attrs['groups']} "
                                   f"input channels but gets {x[1]}")  # fmt: skip
        w = attrs["window"]
        return (x[0], weight.shape[0], w.out_length(x[2], 0), w.out_length(x[3], 1))
    if op in ("maxpool", "avgpool") and len(x) == 4:
        w = attrs["window"]
        return (*x[:2], w.out_length(x[2], 0), w.out_length(x[3], 1))
    if op in ("batchnorm", "relu", "elementwise", "dropout", "identity") and len(ins) == 1:
        return x
    if op in ("add", "mul") and len(ins) >= 2:
        return tuple(torch.broadcast_shapes(*ins))
    if op == "concat" and all(len(s) == 4 and s[:1] + s[2:] == x[:1] + x[2:] for s in ins):
        return (x[0], sum(s[1] for s in ins), *x[2:])
    if op == "flatten":
        start = attrs["start_dim"] % len(x)
        return (*x[:start], math.prod(x[start:]))
    if op == "linear" and x[-1] == weight.shape[1]:
        return (*x[:-1], weight.shape[0])
    if op == "adaptive_avgpool" and len(x) == 4:
        return (*x[:2], *(o if o is not None else i for o, i in zip(attrs["output_size"], x[2:])))
    return None


class _ShapeRecorder(fx.Interpreter):
    """Propagates shapes through the traced model, recording each node's output shape and dtype in
    its meta. Ops the IR knows are computed from their inputs' shapes; any other node runs, on
    zeros in place of the tensors it reads. An error names the node where the model fails."""

    def __init__(self, gm: fx.GraphModule, model: str, input_shape: Sequence[int], device: torch.device):
        super().__init__(gm)
        self.extra_traceback = False
        self.device = device
        self.model, self.input_shape = model, "x".join(map(str, input_shape))

    def run_node(self, n: fx.Node):
        try:
            result = self._propagate(n)
        except GraphImportError:
            raise
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise GraphImportError(f"model '{self.model}' fails at node '{n.name}' on input "
                                   f"{self.input_shape}: {detail}") from None  # fmt: skip
        shape = result.shape if isinstance(result, _Shape | torch.Tensor) else None
        if shape is not None:
            if any(d <= 0 for d in shape):
                raise GraphImportError(f"input {self.input_shape} is too small for model '{self.model}': "
                                       f"the feature map vanishes at node '{n.name}' (output "
                                       f"{tuple(shape)}); use a larger --input-size")  # fmt: skip
            n.meta["shape"] = tuple(shape)
            n.meta["dtype"] = result.dtype if isinstance(result, torch.Tensor) else torch.float32
        return result

    def _propagate(self, n: fx.Node):
        if n.op == "placeholder":
            return _Shape(tuple(next(self.args_iter).shape))
        if n.op in ("call_module", "call_function", "call_method"):
            ins = [self.env[a] for a in n.all_input_nodes]
            if ins and all(isinstance(v, _Shape) for v in ins):
                op, attrs = _classify(self.module, n)
                shape = _known_shape(op, attrs, n.name, [v.shape for v in ins])
                if shape is not None:
                    return _Shape(shape)
        return super().run_node(n)

    def _materialize(self, value):
        return torch.zeros(value.shape, device=self.device) if isinstance(value, _Shape) else value

    def fetch_args_kwargs_from_env(self, n: fx.Node):
        args, kwargs = super().fetch_args_kwargs_from_env(n)
        materialize = lambda v: fx.node.map_aggregate(v, self._materialize)
        return materialize(args), materialize(kwargs)


def from_torch(module: nn.Module, input_shape: Sequence[int], name: str = "model") -> Graph:
    """Trace `module` on a batch-1 input of `input_shape` (C, H, W) into a Graph."""
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many kinds; the user needs the reason in one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GraphImportError(f"torch.fx cannot trace model '{name}': {reason}") from exc
    # A module built on the meta device (for planning) has no values to run unknown ops on.
    device = next((t.device for t in module.parameters()), torch.device("cpu"))
    with torch.no_grad():
        _ShapeRecorder(gm, name, input_shape, device).run(_Shape((1, *input_shape)))

    nodes: dict[str, Node] = {}
    graph_input = None
    outputs: tuple[str, ...] = ()
    for fx_node in gm.graph.nodes:
        if fx_node.op == "output":
            result = fx_node.args[0]
            outputs = tuple(r.name for r in (result if isinstance(result, (tuple, list)) else [result]))
            continue
        if "shape" not in fx_node.meta:
            raise GraphImportError(f"node '{fx_node.name}' does not produce a single tensor; "
                                   "only single-tensor dataflow is supported")  # fmt: skip
        shape = fx_node.meta["shape"]
        inputs = tuple(a.name for a in fx_node.all_input_nodes)
        if fx_node.op == "placeholder":
            if graph_input is not None:
                raise GraphImportError("the model takes more than one input; one image is supported")
            graph_input = fx_node.name
            nodes[fx_node.name] = Node(fx_node.name, "input", (), shape)
            continue
        if fx_node.op == "get_attr":
            raise GraphImportError(f"node '{fx_node.name}' reads a tensor attribute directly; "
                                   "register it in a module instead")  # fmt: skip
        op, attrs = _classify(gm, fx_node)
        if op in ("add", "mul", "concat") and len(inputs) < 2:
            op, attrs = "elementwise", {}  # x + constant: pointwise in x
        if op in ("add", "mul") and any(nodes[i].shape != shape for i in inputs):
            op, attrs = "opaque", {"reason": "broadcasting between different shapes"}
        params = attrs.pop("params", {})
        window = attrs.pop("window", None)
        in_shapes = [nodes[i].shape for i in inputs]
        if op == "avgpool":
            attrs["in_hw"] = in_shapes[0][2:]
        node = Node(
            name=fx_node.name,
            op=op,
            inputs=inputs,
            shape=shape,
            window=window,
            attrs=attrs,
            params={k: v.detach() for k, v in params.items()},
            fn=_runner(gm, fx_node) if op in ("elementwise", "opaque") else None,
            flops=node_flops(op, shape, in_shapes, window=window, groups=attrs.get("groups", 1)),
            itemsize=fx_node.meta["dtype"].itemsize,
        )
        nodes[node.name] = node
    if graph_input is None:
        raise GraphImportError(f"model '{name}' takes no input")
    return Graph(name, nodes, graph_input, outputs, source="torch")
