"""Upsampling (ONNX `Resize`, torch `F.interpolate` / `nn.Upsample`) as a spatial op: which input
rows and columns each output row and column reads, and with what weights.

Both importers describe a resize by one `Resampling`; the region math and the exact torch kernel
read its taps (`taps`), computed once for the whole map in onnxruntime's arithmetic (its CPU
`Resize` kernel: float32 coordinates, clamped to the map, truncated), so a tile uses the whole
map's coordinates, never its own size's. onnxruntime's NCHWc `Upsample` (what its whole graph runs
by an integer scale) reads the same taps and weighs them in its own arithmetic: each backend's
tiles meet its own whole run.

On onnxruntime a tile runs the model's own Resize node. Where the resize `shifts` (an integer scale
k, and for linear modes a power of two outside align_corners), it runs on just the rows the tile
reads: moving the input by r rows moves the output by k r on the very same float32 coordinates.
Otherwise (align_corners, whose coordinates depend on the map's length; a fractional scale; a
linear scale of 3) it runs on those rows zero-padded back to the whole map's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

# The coordinate transforms per mode that the exporters write for `F.interpolate` / `nn.Upsample`:
# nearest as asymmetric with floor; bilinear as half_pixel (pytorch_half_pixel at other opsets), or
# align_corners.
TRANSFORMS = {"nearest": ("asymmetric",),
              "linear": ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")}  # fmt: skip


@dataclass(frozen=True)
class Resampling:
    """A 2-D resize from `in_hw` to `out_hw`: `mode` "nearest" (floor of the coordinate) or "linear"
    (bilinear), with ONNX's `transform` (coordinate_transformation_mode) and `scale` per axis, the
    float32 scales onnxruntime computes with (the model's, or output over input length)."""

    mode: str
    transform: str
    scale: tuple[float, float]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def shifts(self) -> bool:
        """True when the Resize on input rows from r on computes whole-map output row o as its row
        o - k r, on the same coordinates and weights (`suite.backends.ort` then feeds a tile only
        the rows it reads)."""
        k = [int(s) for s in self.scale]
        if any(s != i or o != i * n for s, i, n, o in zip(self.scale, k, self.in_hw, self.out_hw)):
            return False
        powers_of_two = all(i & (i - 1) == 0 for i in k)
        return self.mode == "nearest" or (self.transform != "align_corners" and powers_of_two)

    def taps(self, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per output position along `axis`: the two input positions it reads (the same one twice for
        nearest) and their weights (float32; the first weighs `d2`, the second `d1`, as onnxruntime
        names them)."""
        return _taps(self.mode, self.transform, self.scale[axis], self.in_hw[axis], self.out_hw[axis])

    def reads(self, axis: int, start, stop):
        """The input range [first, last) that output range [start, stop) reads; bounds may be arrays
        (the taps only grow with the output position)."""
        first, second = self.taps(axis)[:2]
        lo, hi = first[start], second[np.asarray(stop) - 1] + 1
        return (int(lo), int(hi)) if np.ndim(lo) == 0 else (lo, hi)


def coordinates(transform: str, scale: float, in_length: int, out_length: int) -> np.ndarray:
    """Each output position's coordinate in the input, in float32 as onnxruntime computes it."""
    out = np.arange(out_length, dtype=np.float32)
    if transform == "align_corners":
        if out_length == 1:
            return np.zeros(1, np.float32)
        return out * np.float32(in_length - 1) / np.float32(out_length - 1)
    if transform == "asymmetric":
        return out / np.float32(scale)
    if transform == "pytorch_half_pixel" and out_length == 1:
        return np.zeros(1, np.float32)
    return (out + np.float32(0.5)) / np.float32(scale) - np.float32(0.5)


@cache
def _taps(mode: str, transform: str, scale: float, in_length: int, out_length: int):
    x = coordinates(transform, scale, in_length, out_length)
    if mode == "nearest":
        index = np.clip(np.floor(x).astype(np.int64), 0, in_length - 1)
        ones = np.ones_like(x)
        return index, index, ones, ones
    x = np.clip(x, np.float32(0), np.float32(in_length - 1))
    first = np.minimum(x.astype(np.int64), in_length - 1)
    second = np.minimum(first + 1, in_length - 1)
    d1 = np.abs(x - first.astype(np.float32))
    d2 = np.abs(x - second.astype(np.float32))
    same = first == second
    d1[same], d2[same] = np.float32(0.5), np.float32(0.5)
    return first, second, d1, d2


def classify(mode: str, transform: str, nearest_mode: str, in_hw: Sequence[int], out_hw: Sequence[int],
             scales: Sequence[float] | None = None) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The IR kind of a 2-D resize from `in_hw` to `out_hw` (by `scales` where the model gives them
    rather than sizes): "resize" with its `Resampling`, or "opaque" with the reason it runs whole."""
    if transform not in TRANSFORMS.get(mode, ()) or (mode == "nearest" and nearest_mode != "floor"):
        what = f"{mode}, {transform}" + (f", {nearest_mode}" if mode == "nearest" else "")
        return "opaque", {"reason": f"Resize ({what}): only nearest (asymmetric, floor) and bilinear "
                                    "resizing are tiled"}  # fmt: skip
    if scales is None:
        scales = [np.float32(o) / np.float32(i) for i, o in zip(in_hw, out_hw)]
    scale = (float(np.float32(scales[0])), float(np.float32(scales[1])))
    return "resize", {"resampling": Resampling(mode, transform, scale, tuple(in_hw), tuple(out_hw))}
