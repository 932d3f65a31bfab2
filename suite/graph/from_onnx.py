"""Build the IR from an ONNX model.

Every IR node keeps its ONNX node, so onnxruntime runs exactly the op the model names; the torch
backend runs the same node from its kind, attributes and weights.

Shapes come from ONNX shape inference, except a windowed node's: there `Window.out_length` rules,
since ONNX counts a ceil-mode window that starts past the input and its leading padding, which
onnxruntime and PyTorch drop. Nodes reading a corrected shape are inferred again from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from suite.graph.from_torch import GraphImportError
from suite.graph.ir import Graph, Node, Window, node_flops

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
        if name in params:
            data[name] = numpy_helper.from_array(params[name].numpy(), name)
            in_types[name] = helper.make_tensor_type_proto(data[name].data_type, data[name].dims)
        elif name in shapes:
            elem = types[name].tensor_type.elem_type if name in types else onnx.TensorProto.FLOAT
            in_types[name] = helper.make_tensor_type_proto(elem, list(shapes[name]))
    try:
        schema = onnx.defs.get_schema(node.op_type, _opset(model, node.domain), node.domain)
        out = onnx.shape_inference.infer_node_outputs(schema, node, in_types, data,
                                                      opset_imports=list(model.opset_import))
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


def _classify(node: onnx.NodeProto, a: dict, params: dict[str, torch.Tensor],
              in_shapes: list[tuple[int, ...]], shape: tuple[int, ...]) -> tuple[str, dict]:  # fmt: skip
    """Op kind and attributes (with "window", "params", "fn" where they apply) of an ONNX node."""
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
    if op == "BatchNormalization" and len(data) == 1:
        scale, bias, mean, var = (params[n] for n in node.input[1:5])
        return "batchnorm", {"eps": a.get("epsilon", 1e-5), "params": {
            "weight": scale, "bias": bias, "running_mean": mean, "running_var": var}}  # fmt: skip
    if op == "Relu":
        return "relu", {}
    if op == "Dropout":
        return "dropout", {}
    if op == "Identity":
        return "identity", {}
    if op in _POINTWISE:
        return "elementwise", {"fn": _pointwise_fn(op, a)}
    if op == "Clip" and len(data) == 1:
        bounds = [params[n].item() if n else None for n in list(node.input[1:3]) + ["", ""]]
        lo, hi = a.get("min", bounds[0]), a.get("max", bounds[1])
        return "elementwise", {"fn": lambda x: torch.clamp(x, lo, hi)}
    if op in ("Add", "Sum", "Mul") and len(data) >= 2 and all(s == shape for s in in_shapes):
        return ("mul" if op == "Mul" else "add"), {}
    if op in ("Add", "Mul") and len(data) == 1 and is_map:
        const = params[next(i for i in node.input if i in params)]
        if const.dim() <= 3 and all(d == 1 for d in const.shape[-2:]):  # per channel or scalar
            fn = (lambda x: x + const) if op == "Add" else (lambda x: x * const)
            return "elementwise", {"fn": fn}
    if op == "Concat" and a.get("axis") in (1, -3) and is_map:
        return "concat", {}
    if op == "Flatten" and a.get("axis", 1) == 1:
        return "flatten", {"start_dim": 1}
    if op == "GlobalAveragePool":
        return "adaptive_avgpool", {"output_size": (1, 1)}
    if op == "Gemm" and a.get("transA", 0) == 0 and a.get("alpha", 1.0) == 1.0 \
            and a.get("beta", 1.0) == 1.0 and node.input[1] in params:  # fmt: skip
        weight = params[node.input[1]]
        weight = weight if a.get("transB", 0) else weight.t().contiguous()
        lin = {"weight": weight}
        if len(node.input) > 2 and node.input[2]:
            lin["bias"] = params[node.input[2]]
        return "linear", {"params": lin}
    return "opaque", {"reason": f"ONNX op {op}"}


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the values of its large initializers left out (their types and shapes kept).

    Shape inference copies the model it is given several times over, and reads no weight's values,
    only small constants' (a Reshape's shape): VGG-16's 0.5 GB took 11 s and 2 GB of memory, its
    skeleton 0.01 s."""
    graph = model.graph
    light = [i if math.prod(i.dims) < 1024 else onnx.TensorProto(name=i.name, dims=i.dims,
                                                                  data_type=i.data_type)
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
    graph = model.graph
    types = {v.name: v.type for v in list(inferred.value_info) + list(inferred.output) + list(inferred.input)}
    shapes = {n: tuple(d.dim_value for d in t.tensor_type.shape.dim) for n, t in types.items()}
    params = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    opset = _opset(model, "")
    corrected: set[str] = set()  # tensors whose shape differs from ONNX's inference

    input_name = inputs[0].name
    nodes: dict[str, Node] = {input_name: Node(input_name, "input", (), shapes[input_name])}
    for proto in graph.node:
        if proto.op_type == "Constant":
            params[proto.output[0]] = torch.from_numpy(
                numpy_helper.to_array(proto.attribute[0].t).copy())
            continue
        out = proto.output[0]
        a = _attrs(proto)
        data = tuple(i for i in proto.input if i and i not in params)
        window = _window_of(proto, a, params, shapes.get(data[0], ())) if data else None
        if window is not None:
            n, c, *in_hw = shapes[data[0]]
            c = params[proto.input[1]].shape[0] if proto.op_type == "Conv" else c
            fixed = (n, c, *(window.out_length(length, axis) for axis, length in enumerate(in_hw)))
            changed = {o: fixed for o in proto.output if o}  # MaxPool's indices too
        elif corrected.intersection(data) or not shapes.get(out):
            changed = _reinfer(proto, types, shapes, params, model)
        else:
            changed = {}
        for tensor, fixed in changed.items():  # not `name`: that is the graph's
            if fixed != shapes.get(tensor):
                shapes[tensor] = fixed
                corrected.add(tensor)
        shape = shapes.get(out)
        if not shape or any(d <= 0 for d in shape):
            raise GraphImportError(f"ONNX node '{proto.name or out}' ({proto.op_type}) has no "
                                   "static output shape")  # fmt: skip
        missing = [i for i in data if i not in nodes]
        if missing:
            raise GraphImportError(f"ONNX node '{proto.name or out}' reads '{missing[0]}', which no "
                                   "earlier node produces")  # fmt: skip
        in_shapes = [nodes[i].shape for i in data]
        op, attrs = _classify(proto, a, params, in_shapes, shape)
        attrs["opset"] = opset
        attrs["onnx_op"] = proto.op_type
        node_params = attrs.pop("params", {})
        window = attrs.pop("window", None)
        fn = attrs.pop("fn", None)
        nodes[out] = Node(
            name=out,
            op=op,
            inputs=data,
            shape=shape,
            window=window,
            attrs=attrs,
            params=node_params,
            fn=fn,
            # a copy: a NodeProto of the model would keep the whole model, weights and all, alive
            onnx=(onnx.NodeProto.FromString(proto.SerializeToString()),
                  {i: params[i] for i in proto.input if i in params}),
            flops=node_flops(op, shape, in_shapes, window=window, groups=attrs.get("groups", 1)),
        )
    outputs = tuple(o.name for o in graph.output)
    return Graph(name, nodes, input_name, outputs, source="onnx")

