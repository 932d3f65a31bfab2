"""The folded model as files: what an onnxruntime run's coordinator hands its workers.

`OrtBackend.prepare` has onnxruntime fold the model once and write it as `model.onnx` (the graph
and the constants under 1 KiB) beside `model.onnx.data` (every larger tensor, as ONNX external
data). A worker loads the graph alone (`read_folded`), imports it with its weights left in the file
(meta tensors: shapes and types) and reads only the weights of the nodes its plan gives it: the
digests it reports stream them from the file (`WeightFile.chunks`), and the sessions it builds
reference them there (`External`), so onnxruntime maps them itself and no Python copy is made.
Exporting the module on every worker instead took 27-43 s and 3.1-4.2 GB for VGG-16.

A folder is never changed once written: the coordinator writes its own for each run, and a device
keeps its copies under the content's digest (`content_digest`), renamed into place once complete.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import external_data_helper, helper

from suite.errors import UserError
from suite.graph.ir import tensor_bytes

MODEL, DATA = "model.onnx", "model.onnx.data"
CHUNK_BYTES = 8 << 20  # a digest reads a weight this much at a time


class FoldedModelError(UserError):
    """A folded model's files cannot be used (names the file and the fix)."""


@dataclass(frozen=True)
class External:
    """A tensor's bytes in the data file: its ONNX type, shape, and where they lie."""

    data_type: int
    dims: tuple[int, ...]
    offset: int
    length: int

    def rows(self, start: int, stop: int) -> External:
        """Rows [start, stop) of the first axis, one run of bytes (a share of a linear layer)."""
        row = self.length // self.dims[0]
        return External(self.data_type, (stop - start, *self.dims[1:]), self.offset + start * row,
                        (stop - start) * row)  # fmt: skip

    def proto(self, name: str) -> onnx.TensorProto:
        """The initializer referencing these bytes, for a model in the data file's folder."""
        tensor = onnx.TensorProto(
            name=name, data_type=self.data_type, dims=self.dims, data_location=onnx.TensorProto.EXTERNAL
        )
        for key, value in (("location", DATA), ("offset", self.offset), ("length", self.length)):
            tensor.external_data.add(key=key, value=str(value))
        return tensor


@dataclass(frozen=True)
class WeightFile:
    """The tensors a folded model keeps in its data file, by name."""

    path: Path
    tensors: dict[str, External]

    def chunks(self, name: str, tensor: torch.Tensor) -> Iterator[bytes | memoryview]:
        """The bytes of `tensor`: read from the file a chunk at a time where it was left there (a
        meta tensor), so a digest of a 400 MB weight never holds it whole."""
        if not tensor.is_meta:
            yield from tensor_bytes(name, tensor)
            return
        where = self.tensors[name]
        with self.path.open("rb") as file:
            file.seek(where.offset)
            for start in range(0, where.length, CHUNK_BYTES):
                chunk = file.read(min(CHUNK_BYTES, where.length - start))
                if not chunk:  # shortened since it was checked
                    raise FoldedModelError(f"{self.path} ends inside tensor '{name}'; remove "
                                           f"{self.path.parent} and run again")  # fmt: skip
                yield chunk

    def zeros(self, path: Path) -> WeightFile:
        """The same tensors, all reading zeros from one sparse file written at `path`, as long as
        the largest: it takes no disk and, mapped, the memory of that one tensor."""
        tensors = {name: replace(where, offset=0) for name, where in self.tensors.items()}
        with path.open("wb") as file:
            file.truncate(max((where.length for where in tensors.values()), default=0))
        return WeightFile(path, tensors)

    def read(self, name: str) -> torch.Tensor:
        """One tensor, whole, in memory."""
        where = self.tensors[name]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(where.data_type))
        array = np.fromfile(self.path, dtype, where.length // dtype.itemsize, offset=where.offset)
        return torch.from_numpy(array.reshape(where.dims))


def read_folded(model_file: Path) -> tuple[onnx.ModelProto, WeightFile]:
    """The folded model's graph without its large weights, and where those lie; every tensor the
    graph names in the data file is checked to lie inside it, so a truncated file is one line here
    rather than a crash in onnxruntime."""
    folder = model_file.parent
    if not model_file.is_file():
        raise FoldedModelError(f"folded model '{model_file}' does not exist; the coordinator writes it "
                               "for each run (or ships it to a device): run again")  # fmt: skip
    try:
        model = onnx.load(str(model_file), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FoldedModelError(f"'{model_file}' is not a readable ONNX model ({said}); remove {folder} "
                               "and run again") from None  # fmt: skip
    data = folder / DATA
    size = data.stat().st_size if data.is_file() else None
    tensors = {}
    for tensor in model.graph.initializer:
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        where = External(tensor.data_type, tuple(tensor.dims), int(info.get("offset", 0)),
                         int(info.get("length", itemsize * math.prod(tensor.dims))))  # fmt: skip
        if info.get("location") != DATA or where.length != itemsize * math.prod(tensor.dims):
            raise FoldedModelError(f"'{model_file}' keeps tensor '{tensor.name}' in '{info.get('location')}' "
                                   f"({where.length} bytes), not in {DATA} beside it as the suite writes "
                                   f"it; remove {folder} and run again")  # fmt: skip
        if size is None:
            raise FoldedModelError(f"'{data}', the weights of '{model_file}', does not exist; remove "
                                   f"{folder} and run again")  # fmt: skip
        if where.offset + where.length > size:
            raise FoldedModelError(
                f"'{data}' is truncated: {size} bytes, but tensor '{tensor.name}' ends at "
                f"byte {where.offset + where.length}; remove {folder} and run again"
            )
        tensors[tensor.name] = where
    return model, WeightFile(data, tensors)


def content_digest(folder: Path) -> str:
    """A digest of a folded model's files: a device keeps one copy of each content."""
    digest = hashlib.sha256()
    for name in (MODEL, DATA):
        path = folder / name
        if path.is_file():
            with path.open("rb") as file:
                while chunk := file.read(CHUNK_BYTES):
                    digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:32]
