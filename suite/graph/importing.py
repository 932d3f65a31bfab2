"""What the two importers (`from_torch`, `from_onnx`) do alike, whatever their source: the IR nodes
made so far, data movement traced on indices (`suite.graph.movement`) until something reads it, the
nodes a traced chain becomes, a layer norm on a map moved channels-last, and the rules for a merge
of two maps. Each importer adds only what its source needs: how to read a node, how to run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from suite.errors import UserError
from suite.graph import movement
from suite.graph.ir import Node, is_channel_vector, node_flops

# Why a node is opaque, where both importers find the same; the ONNX one names its op first.
BROADCASTING = "broadcasting between different shapes"
VARYING_CONSTANT = "a constant that varies along rows or columns"


class GraphImportError(UserError):
    """The model cannot be turned into an IR graph (names the node and why)."""


def spatially_uniform(const: torch.Tensor) -> bool:
    """True when a constant broadcast against an NCHW map does not vary along rows or columns, so
    a node reading it computes a tile of the map as it computes the whole."""
    padded = (1,) * max(4 - const.dim(), 0) + tuple(const.shape)
    return padded[-2:] == (1, 1)


def scale_inputs(inputs: Sequence[str], in_shapes: Sequence[tuple[int, ...]], shape: tuple[int, ...]
                 ) -> tuple[str, str] | None:  # fmt: skip
    """(the map, its channel scales) where a product of two inputs multiplies a map of `shape` by one
    value per channel (a squeeze-and-excite), else None."""
    if len(inputs) != 2 or shape not in in_shapes:
        return None
    at = in_shapes.index(shape)
    if not is_channel_vector(in_shapes[1 - at], shape):
        return None
    return inputs[at], inputs[1 - at]


class Importer:
    """The IR nodes an importer has made, in graph order, and the chains of data movement it has
    traced but not yet made nodes of (`moved`: tensor -> (root IR node, the indices traced after
    each op from the root to it, and what else the importer keeps of the chain)).

    An importer settles a chain where something reads it (`add_chain`), adding to each step's node
    what its source needs (`step_fields`)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.moved: dict[str, tuple] = {}

    def chain_from(self, src: str) -> tuple[str, tuple] | None:
        """The root and traced indices a chain continuing from `src` starts with: its own chain, or a
        new one at its node; None where `src` is neither (an op of its own reads it then)."""
        if src in self.moved:
            return self.moved[src][:2]
        if src in self.nodes:
            return src, (movement.root_indices(self.nodes[src].shape),)
        return None

    def channels_last_root(self, src: str) -> str | None:
        """The map of which `src` is the traced channels-last view (a `LayerNorm2d`'s permute), else
        None."""
        if src not in self.moved:
            return None
        root, history = self.moved[src][:2]
        shape = self.nodes[root].shape
        if len(shape) != 4 or not torch.equal(history[-1], movement.channels_last(shape)):
            return None
        return root

    @staticmethod
    def norm_name(out: str) -> str:
        """The name of the per-position node a channels-last layer norm with output `out` becomes."""
        return f"{out}__nchw"

    def add_channels_last_norm(self, out: str, root: str, fn: Callable[..., torch.Tensor], kept: tuple = (),
                               **fields: Any) -> None:  # fmt: skip
        """A layer norm over the channels of `root` moved channels-last becomes one per-position node
        on the map itself (`norm_name(out)`), and its channels-last view `out` is traced on from there
        (the permute back is then an identity); `kept`: what the importer keeps of that chain."""
        shape, name = self.nodes[root].shape, self.norm_name(out)
        self.nodes[name] = Node(name, "elementwise", (root,), shape, fn=fn,
                                flops=node_flops("elementwise", shape, [shape]), **fields)  # fmt: skip
        self.moved[out] = (name, (movement.root_indices(shape), movement.channels_last(shape)), *kept)

    def add_chain(self, tensor: str, root: str, steps: Sequence[movement.Step]) -> None:
        """The nodes of a traced chain's steps from `root`, the last one named `tensor`."""
        src = root
        for i, step in enumerate(steps):
            name = tensor if i == len(steps) - 1 else f"{tensor}__{i}_{step.op}"
            fields = self.step_fields(step, src, name)
            attrs = {**step.attrs, **fields.pop("attrs", {})}
            self.nodes[name] = Node(name, step.op, (src,), step.shape, step.window, attrs, **fields)
            src = name

    def step_fields(self, step: movement.Step, src: str, name: str) -> dict[str, Any]:
        """What the importer adds to the node `name` of one step of a chain, reading `src` (its
        `attrs` are added to the step's own)."""
        return {}

    def add_op(self, name: str, op: str, inputs: tuple[str, ...], shape: tuple[int, ...], attrs: dict,
               **fields: Any) -> None:  # fmt: skip
        """A node of kind `op` as an importer classified it: `attrs` with its "params" and "window"
        taken out into the node's own fields, and its FLOPs counted."""
        params = attrs.pop("params", {})
        window = attrs.pop("window", None)
        in_shapes = [self.nodes[i].shape for i in inputs]
        self.nodes[name] = Node(
            name=name, op=op, inputs=inputs, shape=shape, window=window, attrs=attrs, params=params,
            flops=node_flops(op, shape, in_shapes, window=window, groups=attrs.get("groups", 1),
                             resampling=attrs.get("resampling")),
            **fields,
        )  # fmt: skip
