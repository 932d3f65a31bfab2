"""Build the IR from an ONNX model.

Every IR node keeps its ONNX node, so onnxruntime runs exactly the op the model names; the torch
backend runs the same node from its kind, attributes and weights.

Shapes come from ONNX shape inference, except a windowed node's: there `Window.out_length` rules,
since ONNX counts a ceil-mode window that starts past the input and its leading padding, which
onnxruntime and PyTorch drop. Nodes reading a corrected shape are inferred again from it.

The input size is fixed, so a node that reads only constants is a constant: evaluated here (ONNX's
reference implementation) and no IR node. That covers weights an exporter shares through `Identity`
nodes and shapes computed at run time (`Shape` -> ... -> a `Pad`'s border or a `Reshape`'s target).
Chains of data movement (Reshape, Transpose, Split, Slice, Gather) are traced on indices
(`suite.graph.movement`) and become the channel selections, reorgs and reshapes they amount to,
each with an ONNX node of its own for onnxruntime.

A weight whose bytes lie in an external data file that was not loaded (`onnx.load(...,
load_external_data=False)`) is imported as a meta tensor: its shape and type, no values. That is
all the import reads of a weight, so an onnxruntime worker imports the coordinator's folded model
without its weights and reads only those of its own nodes (`suite.backends.folded`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import external_data_helper, helper, numpy_helper

from suite.graph import importing, movement, resampling
from suite.graph.importing import GraphImportError, Importer
from suite.graph.ir import Graph, Node, Window

_POINTWISE: dict[str, Callable[..., torch.Tensor] | None] = {
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Exp": torch.exp,
    "Sqrt": torch.sqrt,
    "Softplus": F.softplus,
    "HardSwish": F.hardswish,
    "Erf": torch.erf,
    "LeakyRelu": None,  # built per node from its attributes
    "HardSigmoid": None,
    "Elu": None,
}
_BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
# Ops that only move the data of their one data input: traced on indices.
_MOVEMENT = {
    "Reshape",
    "Transpose",
    "Split",
    "Slice",
    "Gather",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "SpaceToDepth",
    "DepthToSpace",
    "Identity",
}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ints(values, default: tuple[int, int]) -> tuple[int, int]:
    return (int(values[0]), int(values[1])) if values else default


def _window(node: onnx.NodeProto, a: dict, kernel: tuple[int, int], in_hw: tuple[int, int]) -> Window:
    stride = _ints(a.get("strides"), (1, 1))
    dilation = _ints(a.get("dilations"), (1, 1))
    auto_pad = a.get("auto_pad", b"NOTSET").decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
                 for n, s, d, k in zip(in_hw, stride, dilation, kernel)]  # fmt: skip
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad == "VALID":
        begin, end = [0, 0], [0, 0]
    else:
        pads = a.get("pads") or [0, 0, 0, 0]
        if len(pads) != 4:
            raise GraphImportError(f"node '{node.name}' ({node.op_type}) is not 2-D")
        begin, end = pads[:2], pads[2:]
    return Window(kernel, stride, dilation, _ints(begin, (0, 0)), _ints(end, (0, 0)),
                  bool(a.get("ceil_mode", 0)))  # fmt: skip


def _window_of(node: onnx.NodeProto, a: dict, params: dict[str, torch.Tensor],
               in_shape: tuple[int, ...]) -> Window | None:  # fmt: skip
    """The window of a 2-D Conv, MaxPool or AveragePool over a 4-D input, else None."""
    if len(in_shape) != 4:
        return None
    if node.op_type == "Conv":
        w = params.get(node.input[1])
        if w is None or w.dim() != 4:
            return None
        return _window(node, a, (w.shape[2], w.shape[3]), in_shape[2:])
    if node.op_type in ("MaxPool", "AveragePool") and len(a.get("kernel_shape", ())) == 2:
        return _window(node, a, _ints(a["kernel_shape"], (1, 1)), in_shape[2:])
    return None


def _reinfer(node: onnx.NodeProto, types: dict[str, onnx.TypeProto],
             shapes: dict[str, tuple[int, ...]], params: dict[str, torch.Tensor],
             model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Output shapes of `node` inferred by ONNX from the (corrected) shapes of its inputs; their
    types are added to `types`."""
    in_types, data = {}, {}
    for name in node.input:
        if not name:
            continue
        if name in params and params[name].is_meta:  # a weight left in its file: its type is enough
            elem = helper.np_dtype_to_tensor_dtype(torch.empty(0, dtype=params[name].dtype).numpy().dtype)
            in_types[name] = helper.make_tensor_type_proto(elem, list(params[name].shape))
        elif name in params:
            data[name] = numpy_helper.from_array(params[name].numpy(), name)
            in_types[name] = helper.make_tensor_type_proto(data[name].data_type, data[name].dims)
        elif name in shapes:
            elem = types[name].tensor_type.elem_type if name in types else onnx.TensorProto.FLOAT
            in_types[name] = helper.make_tensor_type_proto(elem, list(shapes[name]))
    try:
        schema = onnx.defs.get_schema(node.op_type, _opset(model, node.domain), node.domain)
        out = onnx.shape_inference.infer_node_outputs(
            schema, node, in_types, data, opset_imports=list(model.opset_import)
        )
    except Exception as exc:  # onnx raises its own error types per version
        raise GraphImportError(f"ONNX node '{node.name or node.output[0]}' ({node.op_type}) fails "
                               f"shape inference: {str(exc).splitlines()[0]}") from exc  # fmt: skip
    types.update(out)
    return {name: tuple(d.dim_value for d in t.tensor_type.shape.dim) for name, t in out.items()}


def _opset(model: onnx.ModelProto, domain: str) -> int:
    domains = (domain,) if domain not in ("", "ai.onnx") else ("", "ai.onnx")
    return next((o.version for o in model.opset_import if o.domain in domains), 17)


def _pointwise_fn(op_type: str, a: dict) -> Callable[..., torch.Tensor] | None:
    if op_type == "LeakyRelu":
        return lambda x: F.leaky_relu(x, a.get("alpha", 0.01))
    if op_type == "Elu":
        return lambda x: F.elu(x, a.get("alpha", 1.0))
    if op_type == "HardSigmoid":
        alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
        return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)
    return _POINTWISE.get(op_type)


def _binary(node: onnx.NodeProto, params: dict[str, torch.Tensor], data: list[str],
            in_shapes: list[tuple[int, ...]], shape: tuple[int, ...]) -> tuple[str, dict]:  # fmt: skip
    """Add, Sub, Mul or Div: a merge of equal maps, a map scaled by a channel vector (`scale`), or
    arithmetic with a constant that is the same at every position (pointwise)."""
    op, f = node.op_type, _BINARY[node.op_type]
    if len(data) == 2 and all(s == shape for s in in_shapes):
        if op in ("Add", "Mul"):
            return op.lower(), {}
        return "elementwise", {"fn": f}
    scaled = importing.scale_inputs(data, in_shapes, shape) if op == "Mul" else None
    if scaled is not None:
        return "scale", {"inputs": scaled}
    if len(data) == 1 and len(node.input) == 2:
        const = params[next(i for i in node.input if i in params)]
        if not importing.spatially_uniform(const):
            return "opaque", {"reason": f"ONNX {op} with {importing.VARYING_CONSTANT}"}
        unary = const.numel() == 1
        if node.input[0] in params:  # const - x, const / x
            return "elementwise", {"fn": lambda x: f(const, x), "unary": unary}
        return "elementwise", {"fn": lambda x: f(x, const), "unary": unary}
    return "opaque", {"reason": f"ONNX {op} {importing.BROADCASTING}"}


def _pad(node: onnx.NodeProto, a: dict, params: dict[str, torch.Tensor], rank: int) -> tuple[str, dict]:
    """A constant-mode Pad of a map's rows and columns: a window of 1 with that border."""
    pads = params.get(node.input[1]) if len(node.input) > 1 else None
    value = params[node.input[2]].item() if len(node.input) > 2 and node.input[2] else 0.0
    if a.get("mode", b"constant") != b"constant" or pads is None or rank != 4:
        return "opaque", {"reason": "Pad other than a constant border"}
    axes = params[node.input[3]].tolist() if len(node.input) > 3 and node.input[3] else list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begin[axis % rank], end[axis % rank] = int(pads[k]), int(pads[k + len(axes)])
    if any(begin[:2]) or any(end[:2]) or min(begin + end) < 0:
        return "opaque", {"reason": "Pad of the batch or channel axis, or a negative pad"}
    window = Window((1, 1), pad_begin=(begin[2], begin[3]), pad_end=(end[2], end[3]))
    return "pad", {"window": window, "value": float(value)}


def _resize(node: onnx.NodeProto, a: dict, params: dict[str, torch.Tensor], in_shape: tuple[int, ...],
            shape: tuple[int, ...], opset: int) -> tuple[str, dict]:  # fmt: skip
    """A Resize (or an opset 9 Upsample) of a map's rows and columns (`suite.graph.resampling`); one
    that also scales the batch or channels, crops by a ROI or antialiases runs whole. Before opset 11
    a Resize takes (X, scales) and, as Upsample, uses asymmetric coordinates and floors for nearest."""
    legacy = node.op_type == "Upsample" or opset < 11
    at = 1 if legacy else 2
    scales = params.get(node.input[at]) if len(node.input) > at and node.input[at] else None
    if scales is None and "scales" in a:  # Upsample-7's attribute
        scales = torch.tensor(a["scales"])
    text = lambda key, default: a[key].decode() if isinstance(a.get(key), bytes) else default
    transform = "asymmetric" if legacy else text("coordinate_transformation_mode", "half_pixel")
    if shape[:2] != in_shape[:2] or a.get("antialias", 0) or transform == "tf_crop_and_resize" \
            or a.get("axes") is not None or (scales is not None and scales.numel() != 4):  # fmt: skip
        return "opaque", {"reason": f"ONNX {node.op_type} of other than a map's rows and columns"}
    nearest_mode = "floor" if legacy else text("nearest_mode", "round_prefer_floor")
    return resampling.classify(text("mode", "nearest"), transform, nearest_mode, in_shape[2:], shape[2:],
                               None if scales is None else scales.tolist()[2:])  # fmt: skip


def _classify(node: onnx.NodeProto, a: dict, params: dict[str, torch.Tensor],
              in_shapes: list[tuple[int, ...]], shape: tuple[int, ...], opset: int
              ) -> tuple[str, dict]:  # fmt: skip
    """Op kind and attributes (with "window", "params", "fn" where they apply) of an ONNX node of a
    model of `opset`."""
    op = node.op_type
    data = [i for i in node.input if i and i not in params]
    is_map = len(shape) == 4
    if op == "Conv" and is_map:
        w = params.get(node.input[1])
        if w is None or w.dim() != 4:
            return "opaque", {"reason": "Conv with non-constant or non-2-D weight"}
        window = _window(node, a, (w.shape[2], w.shape[3]), in_shapes[0][2:])
        conv_params = {"weight": w}
        if len(node.input) > 2 and node.input[2]:
            conv_params["bias"] = params[node.input[2]]
        return "conv", {"window": window, "groups": a.get("group", 1), "params": conv_params}
    if op in ("MaxPool", "AveragePool") and is_map and len(node.output) == 1:
        window = _window(node, a, _ints(a["kernel_shape"], (1, 1)), in_shapes[0][2:])
        if op == "MaxPool":
            return "maxpool", {"window": window}
        if window.dilation != (1, 1):
            return "opaque", {"reason": "dilated AveragePool"}
        return "avgpool", {"window": window, "count_include_pad": bool(a.get("count_include_pad", 0)),
                           "in_hw": in_shapes[0][2:]}  # fmt: skip
    if op == "Pad" and len(data) == 1:
        return _pad(node, a, params, len(shape))
    if op == "BatchNormalization" and len(data) == 1:
        scale, bias, mean, var = (params[n] for n in node.input[1:5])
        return "batchnorm", {"eps": a.get("epsilon", 1e-5), "params": {
            "weight": scale, "bias": bias, "running_mean": mean, "running_var": var}}  # fmt: skip
    if op == "Relu":
        return "relu", {}
    if op == "Dropout":
        return "dropout", {}
    if op in _POINTWISE:
        return "elementwise", {"fn": _pointwise_fn(op, a), "unary": True}
    if op == "Clip" and len(data) == 1:
        bounds = [params[n].item() if n else None for n in list(node.input[1:3]) + ["", ""]]
        lo, hi = a.get("min", bounds[0]), a.get("max", bounds[1])
        return "elementwise", {"fn": lambda x: torch.clamp(x, lo, hi), "unary": True, "clamp": True}
    if op == "Sum" and len(data) >= 2 and all(s == shape for s in in_shapes):
        return "add", {}
    if op in _BINARY:
        return _binary(node, params, data, in_shapes, shape)
    if op == "Concat" and a.get("axis") in (1, -3) and is_map:
        return "concat", {}
    if op == "GlobalAveragePool":
        return "adaptive_avgpool", {"output_size": (1, 1)}
    if op == "ReduceMean" and len(data) == 1:
        axes = a.get("axes") or (params[node.input[1]].tolist() if len(node.input) > 1 else None)
        keep = bool(a.get("keepdims", 1))
        if is_map and keep and sorted(d % 4 for d in axes or ()) == [2, 3]:  # a squeeze-and-excite's pool
            return "adaptive_avgpool", {"output_size": (1, 1)}
        return "opaque", {"reason": "ONNX op ReduceMean",
                          "fn": lambda x: x.mean(axes, keepdim=keep) if axes else x.mean()}  # fmt: skip
    if op in ("Resize", "Upsample") and is_map and len(data) == 1:
        return _resize(node, a, params, in_shapes[0], shape, opset)
    if op == "Gemm" and a.get("transA", 0) == 0 and a.get("alpha", 1.0) == 1.0 \
            and a.get("beta", 1.0) == 1.0 and node.input[1] in params:  # fmt: skip
        weight = params[node.input[1]]
        weight = weight if a.get("transB", 0) else weight.t().contiguous()
        lin = {"weight": weight}
        if len(node.input) > 2 and node.input[2]:
            lin["bias"] = params[node.input[2]]
        return "linear", {"params": lin}
    return "opaque", {"reason": f"ONNX op {op}"}


def _movement_proto(step: movement.MovementOp, src: str, out: str
                    ) -> tuple[onnx.NodeProto, dict[str, torch.Tensor]]:  # fmt: skip
    """The ONNX node (and its constants) that computes one step of a traced chain."""
    if step.op == "channel_select":
        consts = {f"{out}__channels": torch.tensor(step.attrs["channels"], dtype=torch.int64)}
        return helper.make_node("Gather", [src, *consts], [out], axis=1, name=out), consts
    if step.op == "reorg":
        return helper.make_node("SpaceToDepth", [src], [out], blocksize=step.attrs["block"], name=out), {}
    if step.op == "flatten":
        return helper.make_node("Flatten", [src], [out], axis=1, name=out), {}
    if step.op == "reshape":
        consts = {f"{out}__shape": torch.tensor(step.shape, dtype=torch.int64)}
        return helper.make_node("Reshape", [src, *consts], [out], name=out), consts
    return helper.make_node("Identity", [src], [out], name=out), {}


def _evaluate(proto: onnx.NodeProto, values: dict[str, np.ndarray], model: onnx.ModelProto
              ) -> list[np.ndarray]:  # fmt: skip
    """The outputs of one ONNX node on `values`, by ONNX's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in values.items()]  # fmt: skip
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in proto.output]
    one = helper.make_model(helper.make_graph([proto], "one", ins, outs),
                            opset_imports=list(model.opset_import))  # fmt: skip
    one.ir_version = model.ir_version
    try:
        return ReferenceEvaluator(one).run(None, values)
    except Exception as exc:  # the reference raises whatever numpy raises
        raise GraphImportError(f"ONNX node '{proto.name or proto.output[0]}' ({proto.op_type}) cannot be "
                               f"evaluated: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                               ) from exc  # fmt: skip


class _Importer(Importer):
    """Turns ONNX nodes into IR nodes, in graph order: constants are folded, data movement is traced
    on indices and becomes nodes only where something else reads it. A chain keeps, after its root
    and indices, its last ONNX node and that node's input."""

    def __init__(self, model: onnx.ModelProto, inferred: onnx.GraphProto, name: str, input_name: str):
        """`inferred`: the graph with ONNX's inferred shapes (of the model's skeleton)."""
        super().__init__()
        self.model, self.name = model, name
        self.types = {v.name: v.type for v in [*inferred.value_info, *inferred.output, *inferred.input]}
        self.shapes = {n: tuple(d.dim_value for d in t.tensor_type.shape.dim) for n, t in self.types.items()}
        self.params = {i.name: _initializer(i) for i in model.graph.initializer}
        self.opset = _opset(model, "")
        self.corrected: set[str] = set()  # tensors whose shape differs from ONNX's inference
        self.nodes[input_name] = Node(input_name, "input", (), self.shapes[input_name])

    def add(self, proto: onnx.NodeProto) -> None:
        data = [i for i in proto.input if i and i not in self.params]
        if not data:  # Constant, a weight shared through Identity, arithmetic on shapes
            values = {i: self.params[i].numpy() for i in proto.input if i}
            self._constants(proto, _evaluate(proto, values, self.model))
        elif proto.op_type == "Shape":
            a = _attrs(proto)
            shape = self._shape(data[0])[a.get("start", 0) : a.get("end", None)]
            self._constants(proto, [np.array(shape, dtype=np.int64)])
        elif self._channels_last_norm(proto, data):
            pass
        elif not (proto.op_type in _MOVEMENT and len(data) == 1 and self._trace(proto, data[0])):
            for src in data:
                self._settle(src)
            self._add_node(proto, data)

    def graph(self) -> Graph:
        outputs = tuple(o.name for o in self.model.graph.output)
        for o in outputs:
            self._settle(o)
        input_name = next(iter(self.nodes))
        return Graph(self.name, self.nodes, input_name, outputs, source="onnx")

    def _constants(self, proto: onnx.NodeProto, values: list[np.ndarray]) -> None:
        for out, value in zip(proto.output, values):
            self.params[out] = torch.from_numpy(np.array(value))

    def _shape(self, tensor: str) -> tuple[int, ...]:
        if tensor in self.moved:
            return tuple(self.moved[tensor][1][-1].shape)
        return self.nodes[tensor].shape if tensor in self.nodes else self.shapes[tensor]

    def _trace(self, proto: onnx.NodeProto, src: str) -> bool:
        chain = self.chain_from(src)
        if chain is None:
            return False
        root, history = chain
        values = {i: history[-1].numpy() if i == src else self.params[i].numpy() for i in proto.input if i}
        for out, traced in zip(proto.output, _evaluate(proto, values, self.model)):
            self.moved[out] = (root, (*history, torch.from_numpy(np.array(traced))), proto, src)
        return True

    def _channels_last_norm(self, proto: onnx.NodeProto, data: list[str]) -> bool:
        """A LayerNormalization over the last axis of a map moved channels-last (Transpose, norm,
        Transpose back) becomes one per-position node on the map itself, named `<output>__nchw`:
        onnxruntime runs the three ONNX nodes (the two before its own in `onnx_before`), torch
        their equivalent; the norm's channels-last output is traced on from it, so the Transpose
        back is an identity. False for anything else."""
        a = _attrs(proto)
        if proto.op_type != "LayerNormalization" or len(data) != 1 or a.get("axis", -1) not in (-1, 3) \
                or proto.input[0] != data[0]:  # fmt: skip
            return False
        root = self.channels_last_root(data[0])
        if root is None:
            return False
        shape, out = self.nodes[root].shape, proto.output[0]
        name, channels_last, normed = self.norm_name(out), f"{out}__nhwc_in", f"{out}__nhwc"
        weights = [self.params[i] if i else None for i in list(proto.input[1:3]) + [""]][:2]
        eps = a.get("epsilon", 1e-5)
        norm = onnx.NodeProto.FromString(proto.SerializeToString())
        norm.input[0] = channels_last
        del norm.output[:]
        norm.output.append(normed)
        moved = helper.make_node("Transpose", [root], [channels_last], perm=[0, 2, 3, 1], name=channels_last)
        before = (moved, norm)
        back = helper.make_node("Transpose", [normed], [name], perm=[0, 3, 1, 2], name=name)
        view = helper.make_node("Transpose", [name], [out], perm=[0, 2, 3, 1], name=out)
        self.add_channels_last_norm(
            out, root,
            lambda x: F.layer_norm(x.permute(0, 2, 3, 1), shape[1:2], *weights, eps).permute(0, 3, 1, 2),
            kept=(view, name),
            attrs={"opset": self.opset, "onnx_op": "LayerNormalization",
                   "onnx_before": tuple(p.SerializeToString() for p in before)},
            onnx=(back, {i: self.params[i] for i in proto.input if i in self.params}))  # fmt: skip
        return True

    def _settle(self, tensor: str) -> None:
        """Give traced data movement that something reads its IR nodes: the kinds it amounts to, or
        else its own ONNX node, gathering by the traced indices on torch."""
        if tensor not in self.moved:
            return
        root, history, proto, src = self.moved.pop(tensor)
        steps = movement.classify_chain(self.nodes[root].shape, list(history[1:]))
        if steps is None:  # the chain is none of the kinds: this node alone, from its own input
            self._settle(src)
            root = src
            values = {i: movement.root_indices(self._shape(src)).numpy() if i == src
                      else self.params[i].numpy() for i in proto.input if i}  # fmt: skip
            traced = _evaluate(proto, values, self.model)[list(proto.output).index(tensor)]
            index = torch.from_numpy(np.array(traced))
            steps = movement.classify(self._shape(src), index)
        if steps is None:
            if proto.output[0] != tensor:
                raise GraphImportError(f"ONNX node '{proto.name or tensor}' ({proto.op_type}) moves data "
                                       f"across rows and columns into several outputs; output '{tensor}' "
                                       "is not supported")  # fmt: skip
            self._note_shape(tensor, tuple(index.shape))
            self._add_node(proto, [src], gather=index.reshape(-1))
            return
        self.add_chain(tensor, root, steps)

    def step_fields(self, step: movement.Step, src: str, name: str) -> dict:
        proto, consts = _movement_proto(step, src, name)
        self._note_shape(name, step.shape)
        return {"attrs": {"opset": self.opset, "onnx_op": proto.op_type}, "onnx": (proto, consts)}

    def _note_shape(self, tensor: str, shape: tuple[int, ...]) -> None:
        if shape != self.shapes.get(tensor):
            self.shapes[tensor] = shape
            self.corrected.add(tensor)

    def _add_node(self, proto: onnx.NodeProto, data: list[str], gather: torch.Tensor | None = None) -> None:
        out = proto.output[0]
        missing = [i for i in data if i not in self.nodes]
        if missing:
            raise GraphImportError(f"ONNX node '{proto.name or out}' reads '{missing[0]}', which no "
                                   "earlier node produces")  # fmt: skip
        a = _attrs(proto)
        params, shapes = self.params, self.shapes
        window = _window_of(proto, a, params, self.nodes[data[0]].shape)
        if window is not None:
            n, c, *in_hw = self.nodes[data[0]].shape
            c = params[proto.input[1]].shape[0] if proto.op_type == "Conv" else c
            fixed = (n, c, *(window.out_length(length, axis) for axis, length in enumerate(in_hw)))
            changed = {o: fixed for o in proto.output if o}  # MaxPool's indices too
        elif self.corrected.intersection(data) or not all(shapes.get(out, ())):  # unknown, or dims
            changed = _reinfer(proto, self.types, shapes, params, self.model)
        else:
            changed = {}
        for tensor, fixed in changed.items():
            self._note_shape(tensor, fixed)
        shape = shapes.get(out)
        if not shape or any(d <= 0 for d in shape):
            raise GraphImportError(f"ONNX node '{proto.name or out}' ({proto.op_type}) has no "
                                   "static output shape")  # fmt: skip
        in_shapes = [self.nodes[i].shape for i in data]
        if gather is None:
            op, attrs = _classify(proto, a, params, in_shapes, shape, self.opset)
        else:
            op, attrs = "opaque", {"reason": f"ONNX {proto.op_type} moving data across rows and columns",
                                   "fn": lambda x: x.reshape(-1)[gather].reshape(shape)}  # fmt: skip
        attrs["opset"] = self.opset
        attrs["onnx_op"] = proto.op_type
        fn = attrs.pop("fn", None)
        inputs = attrs.pop("inputs", tuple(data))
        # a copy: a NodeProto of the model would keep the whole model, weights and all, alive
        copy = onnx.NodeProto.FromString(proto.SerializeToString())
        consts = {i: params[i] for i in proto.input if i in params}
        self.add_op(out, op, inputs, shape, attrs, fn=fn, onnx=(copy, consts))


def _initializer(tensor: onnx.TensorProto) -> torch.Tensor:
    """An initializer's value; a meta tensor of its shape and type where its bytes were left in an
    external data file."""
    if external_data_helper.uses_external_data(tensor):
        dtype = torch.from_numpy(np.empty(0, helper.tensor_dtype_to_np_dtype(tensor.data_type))).dtype
        return torch.empty(tuple(tensor.dims), dtype=dtype, device="meta")
    return torch.from_numpy(numpy_helper.to_array(tensor).copy())


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the values of its large initializers left out (their types and shapes kept).

    Shape inference copies the model it is given several times over, and reads no weight's values,
    only small constants' (a Reshape's shape): VGG-16's 0.5 GB took 11 s and 2 GB of memory, its
    skeleton 0.01 s."""
    graph = model.graph
    light = [i if math.prod(i.dims) < 1024 and not external_data_helper.uses_external_data(i)
             else onnx.TensorProto(name=i.name, dims=i.dims, data_type=i.data_type)
             for i in graph.initializer]  # fmt: skip
    skeleton = helper.make_model(helper.make_graph(graph.node, graph.name, graph.input, graph.output, light,
                                                   value_info=graph.value_info),
                                 opset_imports=model.opset_import, ir_version=model.ir_version)  # fmt: skip
    skeleton.functions.extend(model.functions)
    return skeleton


def from_onnx(model: onnx.ModelProto, name: str = "model") -> Graph:
    """Import an ONNX model with one image input; the batch dimension is fixed to 1."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise GraphImportError(f"ONNX model '{name}' has {len(inputs)} inputs; one image is supported")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise GraphImportError(f"ONNX model '{name}' input '{inputs[0].name}' is not NCHW")
    for d in dims[:1]:
        d.ClearField("dim_param")
        d.dim_value = 1
    if any(not d.dim_value for d in dims[1:]):
        raise GraphImportError(f"ONNX model '{name}' input '{inputs[0].name}' has symbolic "
                               "dimensions; export it with a fixed C x H x W")  # fmt: skip
    skeleton = _skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=True).graph
    except Exception:  # onnx raises its own error types per version
        # A ceil-mode pool's extra row can contradict a later node (a Gemm sized for the real
        # map): infer what ONNX can, and let the node-by-node pass below correct or report the rest.
        try:
            inferred = onnx.shape_inference.infer_shapes(skeleton).graph
        except Exception as exc:
            raise GraphImportError(f"ONNX model '{name}' fails shape inference: "
                                   f"{str(exc).splitlines()[0]}") from exc  # fmt: skip
    importer = _Importer(model, inferred, name, inputs[0].name)
    for proto in model.graph.node:
        importer.add(proto)
    return importer.graph()
