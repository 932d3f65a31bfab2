"""Upsampling (ONNX `Resize`, torch `F.interpolate` / `nn.Upsample`) as a spatial op: which input
rows and columns each output row and column reads, and with what weights.

Both importers describe a resize by one `Resampling`; the region math and the exact torch kernel
read its taps (`taps`), computed once for the whole map in onnxruntime's arithmetic (its CPU
`Resize` kernel: float32 coordinates, clamped to the map, truncated), so a tile uses the whole
map's coordinates, never its own size's.

A resize is tiled where a tile on onnxruntime can compute it with the model's own node on a slice
of the input: an integer scale k, so that moving the input by r rows moves the output by k r; and
for linear modes a power of two, so that the moved coordinates `(o + 0.5) / k - 0.5 - r` are the
same float32 numbers. Anything else (align_corners, a scale of 3 in a linear mode, a fractional
scale) is recognised and runs whole, with the reason as its tiling stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

# Coordinate transforms per mode that the tiled form supports (the modes the exporters emit for
# `F.interpolate`: nearest as asymmetric + floor, bilinear as half_pixel or pytorch_half_pixel).
_TILED = {"nearest": {"asymmetric"}, "linear": {"half_pixel", "pytorch_half_pixel", "asymmetric"}}


@dataclass(frozen=True)
class Resampling:
    """A 2-D resize by integer `scale` (rows, columns): `mode` "nearest" (floor of the asymmetric
    coordinate) or "linear" (bilinear), with ONNX's `transform` (coordinate_transformation_mode)."""

    mode: str
    transform: str
    scale: tuple[int, int]

    def taps(self, axis: int, in_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per output position along `axis`: the two input positions it reads (the same one twice for
        nearest) and their weights (float32; the first weighs `d2`, the second `d1`, as onnxruntime
        names them)."""
        return _taps(self.mode, self.transform, self.scale[axis], in_length)

    def reads(self, axis: int, in_length: int, start, stop):
        """The input range [first, last) that output range [start, stop) reads; bounds may be arrays."""
        first, second = self.taps(axis, in_length)[:2]
        lo, hi = first[start], second[np.asarray(stop) - 1] + 1
        return (int(lo), int(hi)) if np.ndim(lo) == 0 else (lo, hi)


@cache
def _taps(mode: str, transform: str, scale: int, in_length: int):
    out = np.arange(in_length * scale, dtype=np.float32)
    k = np.float32(scale)
    if transform == "asymmetric":
        x = out / k
    else:  # half_pixel; pytorch_half_pixel is the same for an output longer than 1
        x = (out + np.float32(0.5)) / k - np.float32(0.5)
    if mode == "nearest":
        index = np.minimum(np.floor(x).astype(np.int64), in_length - 1)
        ones = np.ones_like(x)
        return index, index, ones, ones
    x = np.clip(x, np.float32(0), np.float32(in_length - 1))
    first = np.minimum(x.astype(np.int64), in_length - 1)
    second = np.minimum(first + 1, in_length - 1)
    d1 = np.abs(x - first.astype(np.float32))
    d2 = np.abs(x - second.astype(np.float32))
    same = first == second
    d1[same], d2[same] = np.float32(0.5), np.float32(0.5)
    for a in (first, second, d1, d2):
        a.setflags(write=False)
    return first, second, d1, d2


def classify(mode: str, transform: str, nearest_mode: str, in_hw: Sequence[int], out_hw: Sequence[int],
             scales: Sequence[float] | None = None) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The IR kind of a 2-D resize from `in_hw` to `out_hw` (by `scales` where the model gives them
    rather than sizes): "resize" with its `Resampling`, or "opaque" with the reason it runs whole."""
    what = f"Resize ({mode}, {transform})"
    if mode not in _TILED or transform not in _TILED[mode] or (mode == "nearest" and nearest_mode != "floor"):
        return "opaque", {"reason": f"{what}: only nearest (asymmetric, floor) and bilinear (half_pixel) "
                                    "upsampling is tiled"}  # fmt: skip
    scale = tuple(o // i for i, o in zip(in_hw, out_hw))
    if any(o != s * i for i, o, s in zip(in_hw, out_hw, scale)) or min(scale) < 1 \
            or (scales is not None and tuple(float(s) for s in scales) != tuple(map(float, scale))):
        return "opaque", {"reason": f"{what} from {in_hw[0]}x{in_hw[1]} to {out_hw[0]}x{out_hw[1]}"
                                    f"{'' if scales is None else f' by {tuple(scales)}'}: only "
                                    "integer scale factors are tiled"}  # fmt: skip
    if mode == "linear" and any(s & (s - 1) for s in scale):
        return "opaque", {"reason": f"{what} by {scale[0]}x{scale[1]}: a linear resize is tiled only by "
                                    "powers of two, where a tile's coordinates are the whole "
                                    "map's"}  # fmt: skip
    return "resize", {"resampling": Resampling(mode, transform, scale)}
