"""Resolve `--model`: a zoo name, a path to an `.onnx` file, or `package.module:factory`."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from suite.errors import UserError
from suite.models import ZOO, build_zoo_model, seeded


class ModelError(UserError):
    """The model or its input size cannot be used (one line, names what to fix)."""


@dataclass
class LoadedModel:
    """A model ready to be turned into a graph: a torch module or ONNX bytes, and its input size."""

    name: str
    input_shape: tuple[int, int, int]
    module: nn.Module | None = None
    onnx_bytes: bytes | None = None


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'3x224x224' -> (3, 224, 224)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not match or any(int(v) <= 0 for v in match.groups()):
        raise ModelError(f"--input-size '{text}' is not CxHxW with positive integers, e.g. 3x224x224")
    c, h, w = (int(v) for v in match.groups())
    return c, h, w


def load_model(spec: str, input_size: tuple[int, int, int] | None = None, seed: int = 0,
               weights: bool = True) -> LoadedModel:  # fmt: skip
    """The model `spec` names; `seed` draws a zoo model's weights and seeds a user's factory.
    `weights=False` is for planning: a zoo model is then built on the meta device (shapes, no
    values); ONNX files and a user's factory are loaded as they are."""
    if spec in ZOO:
        module = build_zoo_model(spec, seed, weights)
        return LoadedModel(spec, input_size or ZOO[spec].input_size, module=module)
    if spec.endswith(".onnx"):
        return _load_onnx(Path(spec), input_size)
    if ":" in spec:
        return _load_factory(spec, input_size, seed)
    raise ModelError(f"unknown model '{spec}'; choose one of: {', '.join(sorted(ZOO))}, "
                     "or give path/to/model.onnx or package.module:factory")  # fmt: skip


def _load_onnx(path: Path, input_size: tuple[int, int, int] | None) -> LoadedModel:
    import onnx

    if not path.is_file():
        raise ModelError(f"ONNX model file '{path}' does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"'{path}' is not a readable ONNX model: {exc}") from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"ONNX model '{path}' has {len(inputs)} inputs; one image input is supported")
    dims = inputs[0].type.tensor_type.shape.dim
    declared = tuple(d.dim_value for d in dims[1:])
    if len(dims) != 4:
        raise ModelError(f"ONNX model '{path}' input '{inputs[0].name}' is not NCHW")
    if input_size is None:
        if not all(declared):
            raise ModelError(f"ONNX model '{path}' has symbolic input dimensions; give --input-size")
        input_size = declared
    elif all(declared) and declared != tuple(input_size):
        raise ModelError(f"--input-size {'x'.join(map(str, input_size))} does not match the ONNX "
                         f"model's input {'x'.join(map(str, declared))}")  # fmt: skip
    for d, v in zip(dims[1:], input_size):
        d.ClearField("dim_param")
        d.dim_value = v
    return LoadedModel(path.stem, tuple(input_size), onnx_bytes=model.SerializeToString())


def _load_factory(spec: str, input_size: tuple[int, int, int] | None, seed: int) -> LoadedModel:
    """The module a user's factory returns, built under `seed` (workers build it too, and must get
    the same random weights as the coordinator)."""
    module_name, _, attr = spec.partition(":")
    if input_size is None:
        raise ModelError(f"model '{spec}' needs --input-size CxHxW")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import '{module_name}' for --model {spec}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"'{module_name}' has no callable '{attr}' for --model {spec}")
    try:
        with seeded(seed):
            model = factory()
    except Exception as exc:  # the user's code: report it, don't crash on it
        raise ModelError(f"--model {spec}: calling {attr}() failed: {type(exc).__name__}: {exc}"
                         ) from exc  # fmt: skip
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec} returned {type(model).__name__}, not a torch nn.Module")
    return LoadedModel(attr, input_size, module=model.eval().requires_grad_(False))
