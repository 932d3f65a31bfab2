"""Statistics of repeated runs, as benchmark tools keep them: percentiles of per-frame values, and a
bootstrap confidence interval on every figure derived from them (a throughput, a speedup).

A run's frames come in repeats (`suite run --repeat N`), and load on a shared host drifts between
repeats more than between the frames of one, so the bootstrap resamples at two levels: repeats
with replacement, then each chosen repeat's frames with replacement. With one repeat it resamples
frames. Everything is seeded: the same samples and seed give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
MAX_RELATIVE_WIDTH = 0.5  # a speedup whose interval is wider than half its value is not a finding
CELLS_PER_BATCH = 2_000_000  # resampled values held at once (tens of MB)

Statistic = Callable[..., np.ndarray]  # numpy's nan-aware reduction, called with axis=-1
MEAN: Statistic = np.nanmean
MEDIAN: Statistic = np.nanmedian


@dataclass(frozen=True)
class Spread:
    """Percentiles and mean of per-frame values (seconds of latency, say)."""

    p50: float
    p90: float
    p99: float
    mean: float
    count: int
    p10: float | None = None  # the low end of a figure's p10-p90 error bar (None: read from an older file)


@dataclass(frozen=True)
class Estimate:
    """A figure from all samples (`value`) and its bootstrap interval at `level`."""

    value: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def relative_width(self) -> float:
        return (self.high - self.low) / self.value if self.value else float("inf")


def spread(values: Sequence[float]) -> Spread:
    """The 10th, 50th, 90th and 99th percentiles (linear interpolation) and the mean of `values`."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to summarise")
    p10, p50, p90, p99 = np.percentile(data, [10, 50, 90, 99])
    return Spread(float(p50), float(p90), float(p99), float(data.mean()), int(data.size), float(p10))


def interval(repeats: Sequence[Sequence[float]], statistic: Statistic, seed: int = 0,
             resamples: int = RESAMPLES, level: float = LEVEL) -> Estimate:  # fmt: skip
    """`statistic` of every value of every repeat, with its two-level bootstrap interval."""
    rng = np.random.default_rng(seed)
    return _estimate(_pooled(repeats, statistic), _replicates(repeats, statistic, rng, resamples), level)


def ratio_interval(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]],
                   statistic: Statistic, seed: int = 0, resamples: int = RESAMPLES,
                   level: float = LEVEL) -> Estimate:  # fmt: skip
    """`statistic(numerator) / statistic(denominator)`, the two resampled independently (a speedup:
    the single device's mean period over the plan's, or its median latency over the plan's)."""
    rng = np.random.default_rng(seed)
    top, bottom = _replicates(numerator, statistic, rng, resamples), _replicates(denominator, statistic, rng,
                                                                                resamples)  # fmt: skip
    return _estimate(_pooled(numerator, statistic) / _pooled(denominator, statistic), top / bottom, level)


def inconclusive(speedup: Estimate, name: str = "speedup") -> str | None:
    """Why a speedup's interval is too wide to conclude from (None: it is not): it spans 1, so the
    plan may be slower or faster than the single device, or it is wider than `MAX_RELATIVE_WIDTH`
    of the speedup."""
    shown = f"{speedup.level:.0%} CI {speedup.low:.2f}-{speedup.high:.2f}x"
    if speedup.low < 1 < speedup.high:
        return f"the {name}'s {shown} spans 1x: the runs cannot tell faster from slower; run more --repeat"
    if speedup.relative_width > MAX_RELATIVE_WIDTH:
        return (f"the {name}'s {shown} is {speedup.relative_width:.0%} of its value (over "
                f"{MAX_RELATIVE_WIDTH:.0%}): too wide to conclude; run more --repeat or "
                "--frames")  # fmt: skip
    return None


def _pooled(repeats: Sequence[Sequence[float]], statistic: Statistic) -> float:
    values = np.concatenate([np.asarray(r, dtype=float) for r in repeats]) if repeats else np.array([])
    if values.size == 0:
        raise ValueError("no values to estimate from")
    return float(statistic(values, axis=-1))


def _replicates(repeats: Sequence[Sequence[float]], statistic: Statistic, rng: np.random.Generator,
                resamples: int) -> np.ndarray:  # fmt: skip
    """`resamples` bootstrap values of `statistic`: per replicate, as many repeats as there are drawn
    with replacement, and from each as many of its values as it has, drawn with replacement."""
    lengths = np.array([len(r) for r in repeats])
    if lengths.size == 0 or not lengths.all():
        raise ValueError("every repeat needs at least one value")
    table = np.full((len(repeats), lengths.max()), np.nan)
    for row, values in enumerate(repeats):
        table[row, : len(values)] = values
    batch = max(1, CELLS_PER_BATCH // table.size)  # replicates drawn at once: bounded memory
    found = []
    for start in range(0, resamples, batch):
        count = min(batch, resamples - start)
        chosen = rng.integers(len(repeats), size=(count, len(repeats)))
        drawn = np.floor(rng.random((count, *table.shape)) * lengths[chosen][..., None]).astype(int)
        values = table[chosen[..., None], drawn]
        values[np.arange(table.shape[1]) >= lengths[chosen][..., None]] = np.nan  # past a shorter repeat
        found.append(statistic(values.reshape(count, -1), axis=-1))
    return np.concatenate(found)


def _estimate(value: float, replicates: np.ndarray, level: float) -> Estimate:
    """The percentile interval of `replicates`, widened to hold `value` where it misses it (tiny,
    skewed samples), so an interval always contains its own estimate."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Estimate(value, float(min(low, value)), float(max(high, value)), level)


def reciprocal(estimate: Estimate) -> Estimate:
    """1 / the figure, with its interval (a throughput from a mean period): the percentile interval
    of a monotonic function's replicates is the function of the interval."""
    return Estimate(1 / estimate.value, 1 / estimate.high, 1 / estimate.low, estimate.level)
