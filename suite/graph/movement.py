"""Pure data movement (reshape, permute, slice, split, shuffle chains), recognised by tracing indices.

An importer runs a chain of data-movement ops on the flat indices of the tensor the chain starts
from (its root) instead of on its values. The result says, for each output element, which root
element it copies, and that map alone (no pattern-matching of op sequences, which every exporter
and author writes differently) tells what the chain is:

- `channel_select`: some of the root's channels, every row and column in place (a channel slice, one
  piece of a `chunk`/`split`, ShuffleNet's view-transpose-view shuffle). Tiles run it.
- `reorg`: space-to-depth by a block (YOLOv2's passthrough), in ONNX `SpaceToDepth`'s channel order,
  followed by a `channel_select` where the chain orders channels differently (`pixel_unshuffle`).
- `flatten` (a map to one vector per image) or `reshape` (any other reshape that keeps the order).

Anything else (a transpose to channels-last, a gather that mixes positions) is left to the importer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from suite.graph.ir import Window


@dataclass(frozen=True)
class MovementOp:
    """One IR node of a recognised chain: its op kind, output shape, attributes and window."""

    op: str
    shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    window: Window | None = None


def root_indices(shape: tuple[int, ...]) -> torch.Tensor:
    """The flat index of every element of a tensor of `shape`: what a chain is traced on."""
    return torch.arange(math.prod(shape), dtype=torch.int64).reshape(shape)


def channels_last(shape: tuple[int, ...]) -> torch.Tensor:
    """The indices of an NCHW map of `shape` moved to NHWC (`x.permute(0, 2, 3, 1)`): what a
    channels-last norm's input traces to (`LayerNorm2d`), in both importers."""
    return root_indices(shape).permute(0, 2, 3, 1)


def space_to_depth(x: torch.Tensor, block: int) -> torch.Tensor:
    """ONNX `SpaceToDepth` (output channel (i * block + j) * C + c holds input channel c at row
    offset i and column offset j of each block): the IR's `reorg`."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // block, block, w // block, block)
    return blocks.permute(0, 3, 5, 1, 2, 4).reshape(n, block * block * c, h // block, w // block)


def classify(root_shape: tuple[int, ...], index: torch.Tensor) -> list[MovementOp] | None:
    """The IR nodes that compute `index` (a traced chain's output) from its root; None when the chain
    is none of the kinds above."""
    shape = tuple(index.shape)
    root = root_indices(root_shape)
    if shape == tuple(root_shape) and torch.equal(index, root):
        return [MovementOp("identity", shape)]
    if len(root_shape) == 4 and len(shape) == 4 and root_shape[0] == shape[0] == 1:
        if shape[2:] == tuple(root_shape[2:]):
            channels = _channels(root, index)
            if channels is not None:
                return [MovementOp("channel_select", shape, {"channels": channels})]
        block = root_shape[2] // shape[2]
        if block > 1 and tuple(root_shape[2:]) == (shape[2] * block, shape[3] * block):
            blocks = space_to_depth(root, block)
            channels = _channels(blocks, index)
            if channels is not None:
                steps = [
                    MovementOp(
                        "reorg", tuple(blocks.shape), {"block": block}, Window((block, block), (block, block))
                    )
                ]
                if channels != tuple(range(blocks.shape[1])):
                    steps.append(MovementOp("channel_select", shape, {"channels": channels}))
                return steps
    if torch.equal(index.reshape(-1), root.reshape(-1)):
        if len(root_shape) == 4 and shape == (root_shape[0], math.prod(root_shape[1:])):
            return [MovementOp("flatten", shape, {"start_dim": 1})]
        return [MovementOp("reshape", shape, {"shape": shape})]
    return None


def classify_chain(root_shape: tuple[int, ...], history: list) -> list[MovementOp] | None:
    """`classify` for a chain traced op by op (`history`: each op's traced output, the chain's
    output last; tuples from splits are skipped): where the whole chain is none of the kinds, it may
    still be a map's movement then a flatten (exporters merge the two reshapes), or two kinds one
    after the other, split at an op in between."""
    steps = classify(root_shape, history[-1])
    if steps is not None:
        return steps
    final = history[-1]
    if len(root_shape) == 4 and final.dim() == 2 and final.shape[0] == 1:  # a map moved, then flattened
        _, c, h, w = root_shape
        for block in (b for b in range(1, 9) if h % b == 0 and w % b == 0):
            steps = classify(root_shape, final.reshape(1, c * block * block, h // block, w // block))
            if steps is not None and steps[-1].op != "reshape":
                return [*steps, MovementOp("flatten", tuple(final.shape), {"start_dim": 1})]
    for middle in reversed([h for h in history[:-1] if isinstance(h, torch.Tensor)]):
        first = classify(root_shape, middle)
        if first is None:
            continue
        position = torch.full((math.prod(root_shape),), -1, dtype=torch.int64)
        position[middle.reshape(-1)] = torch.arange(middle.numel())
        relative = position[history[-1]]
        second = None if (relative < 0).any() else classify(tuple(middle.shape), relative)
        if second is not None:
            return first + second
    return None


def _channels(source: torch.Tensor, index: torch.Tensor) -> tuple[int, ...] | None:
    """The channels of `source` that `index` copies, one per output channel with rows and columns in
    place; None if `index` does anything else."""
    first = {int(v): c for c, v in enumerate(source[0, :, 0, 0])}
    channels = tuple(first.get(int(v), -1) for v in index[0, :, 0, 0])
    if -1 in channels or not torch.equal(index, source[:, list(channels)]):
        return None
    return channels
