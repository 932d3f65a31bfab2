"""Build the IR from an `nn.Module` with torch.fx and shape propagation.

The input size is fixed, so everything that does not depend on the image's values is a constant:
shape queries (`x.size(0)`, `x.shape[1]`, the `h, w` a channel shuffle reshapes with), tensor
attributes (`F.conv2d(x, self.weight)`) and arithmetic on them. Constants are no IR nodes; the ops
that read them get their values. Chains of pure data movement (view, transpose, chunk, slicing,
pixel_unshuffle) are traced on indices (`suite.graph.movement`) and become the channel selections,
reorgs and reshapes they amount to.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from suite.graph import importing, movement, resampling
from suite.graph.importing import GraphImportError, Importer
from suite.graph.ir import Graph, Node, Window

# Modules and functions whose output at a position depends only on the input at that position.
_POINTWISE_MODULES = (
    nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU,
    nn.ELU, nn.Mish,
)  # fmt: skip
_POINTWISE_FUNCTIONS = {
    F.relu6, F.leaky_relu, F.silu, F.hardswish, F.hardsigmoid, F.gelu, F.elu, F.mish, F.hardtanh,
    F.softplus, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, torch.clamp, torch.clip, torch.exp,
    torch.sqrt, torch.rsqrt, torch.abs, torch.erf, torch.neg, torch.pow, torch.sub, torch.div,
    operator.sub, operator.truediv, operator.neg, operator.pow,
}  # fmt: skip
_POINTWISE_METHODS = {
    "sigmoid",
    "tanh",
    "clamp",
    "clip",
    "exp",
    "sqrt",
    "rsqrt",
    "abs",
    "neg",
    "pow",
    "sub",
    "div",
    "relu6",
    "hardswish",
    "hardsigmoid",
}
_CLAMPS = {F.relu6, F.hardtanh, torch.clamp, torch.clip, "clamp", "clip", "relu6"}  # elementwise: "clamp"
_RELU = {F.relu, torch.relu}
_ADD = {operator.add, torch.add}
_MUL = {operator.mul, torch.mul}
# Calls that only ask for a shape: constants, since the input size is fixed.
_SHAPE_METHODS = {"size", "dim", "numel"}
# Calls that only move data: traced on indices into the IR kinds they amount to.
_MOVEMENT_METHODS = {
    "view",
    "reshape",
    "permute",
    "transpose",
    "contiguous",
    "flatten",
    "unflatten",
    "chunk",
    "split",
    "squeeze",
    "unsqueeze",
    "narrow",
    "swapaxes",
    "movedim",
}
_MOVEMENT_FUNCTIONS = {
    torch.reshape, torch.permute, torch.transpose, torch.flatten, torch.unflatten, torch.chunk,
    torch.split, torch.squeeze, torch.unsqueeze, torch.narrow, torch.swapaxes, torch.movedim,
    torch.pixel_unshuffle, torch.pixel_shuffle, torch.channel_shuffle, operator.getitem,
}  # fmt: skip
_MOVEMENT_MODULES = (nn.Flatten, nn.Unflatten, nn.PixelUnshuffle, nn.PixelShuffle, nn.ChannelShuffle)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(kernel, stride, padding, dilation=1, ceil_mode=False) -> Window:
    kernel, dilation = _pair(kernel), _pair(dilation)
    stride = kernel if stride in (None, ()) else _pair(stride)
    if padding == "valid":
        padding = 0
    if padding == "same":  # PyTorch's rule: the odd pixel of an even span goes after
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        begin = (total[0] // 2, total[1] // 2)
        end = (total[0] - begin[0], total[1] - begin[1])
        return Window(kernel, stride, dilation, begin, end, bool(ceil_mode))
    if isinstance(padding, str):
        raise GraphImportError(f"padding '{padding}' is not supported; use integers, 'same' or 'valid'")
    pad = _pair(padding)
    return Window(kernel, stride, dilation, pad, pad, bool(ceil_mode))


def _conv(weight, bias, stride, padding, dilation, groups) -> tuple[str, dict]:
    """A 2-D convolution on constant weights (a module's own, or `F.conv2d(x, self.weight, ...)`)."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        return "opaque", {"reason": "convolution with a computed or non-2-D weight"}
    if bias is not None and not isinstance(bias, torch.Tensor):
        return "opaque", {"reason": "convolution with a computed bias"}
    window = _window(weight.shape[2:], stride, padding, dilation)
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    return "conv", {"window": window, "groups": groups, "params": params}


def _batchnorm(mean, var, weight, bias, uses_running_stats: bool, eps: float) -> tuple[str, dict]:
    """Batch norm on constant running statistics (`nn.BatchNorm2d` or `F.batch_norm`, as the fused
    norm + activation layers of model zoos call it): an affine map per channel."""
    stats = (mean, var) + ((weight, bias) if weight is not None else ())
    if not uses_running_stats or not all(isinstance(t, torch.Tensor) for t in stats):
        return "opaque", {"reason": "batch norm on the batch's own statistics or computed parameters"}
    params = {"running_mean": mean, "running_var": var}
    if weight is not None:
        params.update(weight=weight, bias=bias)
    return "batchnorm", {"eps": float(eps), "params": params}


def _pad_window(pad: Sequence[int]) -> Window | None:
    """F.pad's (left, right, top, bottom) as a window of 1 with that border; None for other forms."""
    if len(pad) != 4 or any(p < 0 for p in pad):
        return None
    left, right, top, bottom = (int(p) for p in pad)
    return Window((1, 1), pad_begin=(top, left), pad_end=(bottom, right))


def _resize(mode: str, align_corners: bool | None, scale_factor, in_shape: tuple[int, ...],
            shape: tuple[int, ...]) -> tuple[str, dict]:  # fmt: skip
    """`F.interpolate` / `nn.Upsample` of a map in ONNX's terms (as the exporters write it), as
    `suite.graph.resampling` classifies it."""
    if len(in_shape) != 4 or shape[:2] != in_shape[:2]:
        return "opaque", {"reason": f"interpolate ({mode}) of a {len(in_shape)}-D tensor"}
    transform = "align_corners" if align_corners else "half_pixel"
    onnx_mode = {"nearest": "nearest", "bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    scales = None if scale_factor is None else _pair_of_floats(scale_factor)
    return resampling.classify(
        onnx_mode, "asymmetric" if mode == "nearest" else transform, "floor", in_shape[2:], shape[2:], scales
    )


def _pair_of_floats(v: float | Sequence[float]) -> tuple[float, float]:
    return (float(v), float(v)) if isinstance(v, (int, float)) else (float(v[0]), float(v[1]))


def _bind(names: Sequence[str], defaults: dict, args: tuple, kwargs: dict) -> dict:
    """Map a call's positional and keyword arguments onto parameter names."""
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _classify_module(mod: nn.Module) -> tuple[str, dict]:
    """Op kind and attributes of a call_module node."""
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros":
            return "opaque", {"reason": f"padding_mode={mod.padding_mode}"}
        return _conv(mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation, mod.groups)
    if isinstance(mod, (nn.ZeroPad2d, nn.ConstantPad2d)):
        window = _pad_window(mod.padding)
        if window is None:
            return "opaque", {"reason": f"padding {mod.padding}"}
        return "pad", {"window": window, "value": float(mod.value)}
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
        return _batchnorm(mod.running_mean, mod.running_var, mod.weight, mod.bias, True, mod.eps)
    if isinstance(mod, nn.ReLU):
        return "relu", {}
    if isinstance(mod, (nn.Dropout, nn.Dropout2d)):
        return "dropout", {}
    if isinstance(mod, nn.Identity):
        return "identity", {}
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return "adaptive_avgpool", {"output_size": _pair(mod.output_size)}
    if isinstance(mod, nn.Linear):
        params = {"weight": mod.weight}
        if mod.bias is not None:
            params["bias"] = mod.bias
        return "linear", {"params": params}
    if isinstance(mod, nn.Upsample):
        return "resize", {"interpolate": (mod.mode, mod.align_corners, mod.scale_factor)}
    if isinstance(mod, _POINTWISE_MODULES):
        return "elementwise", {"clamp": True} if isinstance(mod, nn.ReLU6) else {}
    return "opaque", {"reason": f"module {type(mod).__name__}"}


def _classify_function(target: Callable | str, args: tuple, kwargs: dict) -> tuple[str, dict]:
    """Op kind and attributes of a call_function or call_method node, whose arguments hold the values
    of constants (tensor attributes, shape queries)."""
    if target is torch.conv2d:
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        b = _bind(names, {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}, args, kwargs)
        return _conv(b["weight"], b["bias"], b["stride"], b["padding"], b["dilation"], b["groups"])
    if target is F.pad:
        b = _bind(("input", "pad", "mode", "value"), {"mode": "constant", "value": None}, args, kwargs)
        window = _pad_window(b["pad"]) if b["mode"] == "constant" else None
        if window is None:
            return "opaque", {"reason": f"{b['mode']} padding {b['pad']}"}
        return "pad", {"window": window, "value": float(b["value"] or 0.0)}
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
    if target is F.interpolate:  # F.upsample and its variants trace to it too
        names = ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                 "antialias")  # fmt: skip
        b = _bind(names, {"scale_factor": None, "mode": "nearest", "align_corners": None}, args, kwargs)
        if b.get("antialias"):
            return "opaque", {"reason": f"interpolate ({b['mode']}) with antialias"}
        # recomputed, the scale is the sizes' (as the exporter writes it); else the one given
        scale = None if b.get("recompute_scale_factor") else b["scale_factor"]
        return "resize", {"interpolate": (b["mode"], b["align_corners"], scale)}
    if target is F.dropout:
        return "dropout", {}
    if target is F.batch_norm:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        b = _bind(names, {"weight": None, "bias": None, "training": False, "eps": 1e-5}, args, kwargs)
        return _batchnorm(b["running_mean"], b["running_var"], b["weight"], b["bias"], not b["training"],
                          b["eps"])  # fmt: skip
    if target in (torch.mean, "mean"):  # x.mean((2, 3), keepdim=True): a squeeze-and-excite's pool
        b = _bind(("input", "dim", "keepdim"), {"dim": None, "keepdim": False}, args, kwargs)
        dims = b["dim"] if isinstance(b["dim"], (tuple, list)) else ()
        if sorted(d % 4 for d in dims) == [2, 3] and b["keepdim"]:
            return "adaptive_avgpool", {"output_size": (1, 1)}
    if target in _POINTWISE_FUNCTIONS or target in _POINTWISE_METHODS:
        return "elementwise", {"clamp": True} if target in _CLAMPS else {}
    name = getattr(target, "__name__", str(target))
    return "opaque", {"reason": f"function {name}"}


def _data_inputs(fx_node: fx.Node) -> list[fx.Node]:
    """The inputs that carry the image's data (the others are constants)."""
    return [a for a in fx_node.all_input_nodes if "constant" not in a.meta]


def _with_constants(fx_node: fx.Node, env: dict[fx.Node, Any] | None = None):
    """The node's args and kwargs with constants replaced by their values (and data by `env`'s)."""
    env = env or {}
    return fx.node.map_arg((fx_node.args, fx_node.kwargs),
                           lambda a: env[a] if a in env else a.meta.get("constant", a))  # fmt: skip


def _runner(gm: fx.GraphModule, fx_node: fx.Node) -> Callable[..., Any]:
    """A callable that replays one fx node, taking its data inputs positionally."""
    data = _data_inputs(fx_node)
    target = gm.get_submodule(fx_node.target) if fx_node.op == "call_module" else fx_node.target

    def run(*tensors):
        args, kwargs = _with_constants(fx_node, dict(zip(data, tensors)))
        if fx_node.op == "call_method":
            self_arg, *rest = args
            return getattr(self_arg, target)(*rest, **kwargs)
        return target(*args, **kwargs)

    return run


@dataclass(frozen=True)
class _Shape:
    """A tensor known by its shape alone, standing in for values during shape propagation."""

    shape: tuple[int, ...]


def _classify(gm: fx.GraphModule, fx_node: fx.Node) -> tuple[str, dict]:
    if fx_node.op == "call_module":
        return _classify_module(gm.get_submodule(fx_node.target))
    args, kwargs = _with_constants(fx_node)
    return _classify_function(fx_node.target, args, kwargs)


def _is_constant(fx_node: fx.Node) -> bool:
    """True when the node's value does not depend on the image: a tensor attribute, a shape query,
    or a function of constants alone."""
    if fx_node.op == "get_attr":
        return True
    if fx_node.op == "call_method" and fx_node.target in _SHAPE_METHODS:
        return True
    if fx_node.op == "call_function" and fx_node.target is builtins.getattr:
        return fx_node.args[1] in ("shape", "ndim", "dtype", "device")
    return fx_node.op in ("call_function", "call_method") and all(
        "constant" in a.meta for a in fx_node.all_input_nodes
    )


def _is_movement(gm: fx.GraphModule, fx_node: fx.Node) -> bool:
    """True for a call that only moves the data of its one data input."""
    if fx_node.op == "call_method":
        hit = fx_node.target in _MOVEMENT_METHODS
    elif fx_node.op == "call_function":
        hit = fx_node.target in _MOVEMENT_FUNCTIONS
    else:
        hit = fx_node.op == "call_module" and isinstance(gm.get_submodule(fx_node.target), _MOVEMENT_MODULES)
    return hit and len(_data_inputs(fx_node)) == 1


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
    if op in ("maxpool", "avgpool", "pad") and len(x) == 4:
        w = attrs["window"]
        return (*x[:2], w.out_length(x[2], 0), w.out_length(x[3], 1))
    if op in ("batchnorm", "relu", "elementwise", "dropout", "identity") and len(ins) == 1:
        return x
    if op in ("add", "mul", "elementwise") and len(ins) >= 2:
        return tuple(torch.broadcast_shapes(*ins))
    if op == "concat" and all(len(s) == 4 and s[:1] + s[2:] == x[:1] + x[2:] for s in ins):
        return (x[0], sum(s[1] for s in ins), *x[2:])
    if op == "linear" and x[-1] == weight.shape[1]:
        return (*x[:-1], weight.shape[0])
    if op == "adaptive_avgpool" and len(x) == 4:
        return (*x[:2], *(o if o is not None else i for o, i in zip(attrs["output_size"], x[2:])))
    return None


class _ShapeRecorder(fx.Interpreter):
    """Propagates shapes through the traced model, recording each node's output shape and dtype in
    its meta, or its value where it is a constant. Ops the IR knows are computed from their inputs'
    shapes; any other node runs, on zeros in place of the tensors it reads. An error names the node
    where the model fails."""

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
        if _is_constant(n):
            n.meta["constant"] = result
            return result
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
        if n.op in ("call_module", "call_function", "call_method") and not _is_constant(n):
            data = [self.env[a] for a in _data_inputs(n)]
            # a node that ran (a flatten) hands on a tensor: its shape is as good, and running a
            # linear layer on the meta device pulls in torch's decompositions (1.4 s for VGG-16's head)
            if data and all(isinstance(v, _Shape | torch.Tensor) for v in data):
                op, attrs = _classify(self.module, n)
                shape = _known_shape(op, attrs, n.name, [tuple(v.shape) for v in data])
                if shape is not None:
                    return _Shape(shape)
        return super().run_node(n)

    def _materialize(self, value):
        return torch.zeros(value.shape, device=self.device) if isinstance(value, _Shape) else value

    def fetch_args_kwargs_from_env(self, n: fx.Node):
        args, kwargs = super().fetch_args_kwargs_from_env(n)
        materialize = lambda v: fx.node.map_aggregate(v, self._materialize)
        return materialize(args), materialize(kwargs)


def _spatially_uniform(fx_node: fx.Node) -> bool:
    """True when no constant tensor the node reads varies along rows or columns."""
    constants = (a.meta.get("constant") for a in fx_node.all_input_nodes)
    return all(importing.spatially_uniform(c) for c in constants if isinstance(c, torch.Tensor))


def _is_channel_norm(gm: fx.GraphModule, fx_node: fx.Node) -> bool:
    """True for a layer norm over the last axis alone (`nn.LayerNorm(C)` or `F.layer_norm`)."""
    if fx_node.op == "call_module":
        mod = gm.get_submodule(fx_node.target)
        return isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1
    if fx_node.op == "call_function" and fx_node.target is F.layer_norm:
        args, kwargs = _with_constants(fx_node)
        shape = _bind(("input", "normalized_shape"), {}, args, kwargs)["normalized_shape"]
        return len(shape) == 1
    return False


def _reads_no_tensor(fx_node: fx.Node) -> bool:
    """True when no constant the node reads is a tensor of more than one value."""
    return not any(isinstance(a.meta.get("constant"), torch.Tensor) and a.meta["constant"].numel() > 1
                   for a in fx_node.all_input_nodes)  # fmt: skip


class _Builder(Importer):
    """Turns traced fx nodes into IR nodes: constants are dropped, data movement is traced on
    indices and becomes a node only where something else reads it. A chain is keyed by the name of
    its fx node, as IR nodes are."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.gm = gm
        self.input: str | None = None
        self.outputs: tuple[str, ...] = ()

    def add(self, fx_node: fx.Node) -> None:
        if fx_node.op == "output":
            result = fx_node.args[0]
            results = result if isinstance(result, (tuple, list)) else [result]
            for r in results:
                self._settle(r)
            self.outputs = tuple(r.name for r in results)
            return
        if "constant" in fx_node.meta:
            return
        if fx_node.op == "placeholder":
            if self.input is not None:
                raise GraphImportError("the model takes more than one input; one image is supported")
            self.input = fx_node.name
            self.nodes[fx_node.name] = Node(fx_node.name, "input", (), fx_node.meta["shape"])
            return
        if _is_movement(self.gm, fx_node) and self._trace(fx_node):
            return
        if self._channels_last_norm(fx_node):
            return
        data = _data_inputs(fx_node)
        for src in data:
            self._settle(src)
        self._add_node(fx_node, data)

    def _trace(self, fx_node: fx.Node) -> bool:
        """Trace a data-movement node on the indices of its root; False if it cannot be."""
        (src,) = _data_inputs(fx_node)
        chain = self.chain_from(src.name)
        if chain is None:
            return False
        root, history = chain
        try:
            self.moved[fx_node.name] = (root, (*history, _runner(self.gm, fx_node)(history[-1])))
        except Exception:  # an op that will not run on integers: it becomes a node of its own
            return False
        return True

    def _channels_last_norm(self, fx_node: fx.Node) -> bool:
        """A layer norm over the channels of a map moved channels-last (a `LayerNorm2d`: permute,
        layer norm over C, permute back) becomes one per-position node on the map itself, named
        `<node>__nchw`, and its channels-last view is traced on from there (the permute back is
        then an identity). False for anything else."""
        data = _data_inputs(fx_node)
        root = self.channels_last_root(data[0].name) if len(data) == 1 else None
        if root is None or not _is_channel_norm(self.gm, fx_node):
            return False
        norm = _runner(self.gm, fx_node)
        nchw = lambda x: norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        self.add_channels_last_norm(fx_node.name, root, nchw, itemsize=self.nodes[root].itemsize)
        return True

    def _settle(self, fx_node: fx.Node) -> None:
        """Give traced data movement that something reads its IR nodes."""
        if fx_node.name not in self.moved:
            return
        root, history = self.moved.pop(fx_node.name)
        index = history[-1]
        if not isinstance(index, torch.Tensor):
            raise GraphImportError(f"node '{fx_node.name}' does not produce a single tensor; "
                                   "only single-tensor dataflow is supported")  # fmt: skip
        itemsize = self.nodes[root].itemsize
        steps = movement.classify_chain(self.nodes[root].shape, list(history[1:]))
        if steps is None:  # any other data movement: a gather of the whole map, exact, not tiled
            flat, shape = index.reshape(-1), tuple(index.shape)
            self.nodes[fx_node.name] = Node(
                fx_node.name, "opaque", (root,), shape, itemsize=itemsize,
                attrs={"reason": "data movement across rows and columns"},
                fn=lambda x: x.reshape(-1)[flat].reshape(shape))  # fmt: skip
            return
        self.add_chain(fx_node.name, root, steps)

    def step_fields(self, step: movement.Step, src: str, name: str) -> dict:
        return {"itemsize": self.nodes[src].itemsize}

    def _add_node(self, fx_node: fx.Node, data: list[fx.Node]) -> None:
        if "shape" not in fx_node.meta:
            raise GraphImportError(f"node '{fx_node.name}' does not produce a single tensor; "
                                   "only single-tensor dataflow is supported")  # fmt: skip
        shape = fx_node.meta["shape"]
        inputs = tuple(a.name for a in data)
        op, attrs = _classify(self.gm, fx_node)
        in_shapes = [self.nodes[i].shape for i in inputs]
        if op in ("add", "mul", "concat") and len(inputs) < 2:
            op, attrs = "elementwise", {}  # x + constant: pointwise in x
        if op in ("add", "mul", "elementwise") and any(s != shape for s in in_shapes):
            scaled = importing.scale_inputs(inputs, in_shapes, shape) if op == "mul" else None
            if scaled is not None:
                op, attrs, inputs = "scale", {}, scaled
            else:
                op, attrs = "opaque", {"reason": importing.BROADCASTING}
        if op == "resize":
            op, attrs = _resize(*attrs["interpolate"], in_shapes[0], shape)
        if op == "adaptive_avgpool" and len(in_shapes[0]) != 4:
            op, attrs = "opaque", {"reason": f"a mean over the last axes of a {len(in_shapes[0])}-D tensor"}
        if op in ("add", "mul", "elementwise") and not _spatially_uniform(fx_node):
            op, attrs = "opaque", {"reason": importing.VARYING_CONSTANT}
        if op == "elementwise" and len(inputs) == 1 and _reads_no_tensor(fx_node):
            attrs["unary"] = True  # each output element from its own input element alone
        if op == "avgpool":
            attrs["in_hw"] = in_shapes[0][2:]
        attrs["params"] = {k: v.detach() for k, v in attrs.get("params", {}).items()}
        self.add_op(fx_node.name, op, inputs, shape, attrs, itemsize=fx_node.meta["dtype"].itemsize,
                    fn=_runner(self.gm, fx_node) if op in ("elementwise", "opaque") else None)  # fmt: skip


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
    builder = _Builder(gm)
    for fx_node in gm.graph.nodes:
        builder.add(fx_node)
    if builder.input is None:
        raise GraphImportError(f"model '{name}' takes no input")
    return Graph(name, builder.nodes, builder.input, builder.outputs, source="torch")
