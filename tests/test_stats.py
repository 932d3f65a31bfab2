"""The statistics of repeated runs: percentiles and seeded two-level bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suite.runtime import stats

values = st.floats(min_value=1e-3, max_value=10.0, allow_nan=False)
repeat = st.lists(values, min_size=1, max_size=12)
repeats = st.lists(repeat, min_size=1, max_size=4)
statistics = st.sampled_from([stats.MEAN, stats.MEDIAN])
FAST = 400  # resamples: enough for the properties, quick under hypothesis


@settings(max_examples=60, deadline=None)
@given(repeats, repeats, statistics, st.integers(0, 2**32 - 1))
def test_an_interval_contains_its_estimate_and_is_the_same_for_a_seed(top, bottom, statistic, seed):
    ratio = stats.ratio_interval(top, bottom, statistic, seed, FAST)
    assert ratio.low <= ratio.value <= ratio.high
    assert ratio == stats.ratio_interval(top, bottom, statistic, seed, FAST)
    single = stats.interval(top, statistic, seed, FAST)
    assert single.low <= single.value <= single.high
    pooled = np.concatenate([np.asarray(r, dtype=float) for r in top])
    assert single.value == pytest.approx(float(statistic(pooled)))


@settings(max_examples=40, deadline=None)
@given(st.lists(values, min_size=3, max_size=10, unique=True))
def test_an_interval_shrinks_with_more_samples(sample):
    """The same values observed four times as often: the interval of their mean narrows (about
    halves). (A median's interval of a few distinct values can stay between the same two.)"""
    few = stats.interval([sample], stats.MEAN, seed=1, resamples=2000)
    many = stats.interval([sample * 4], stats.MEAN, seed=1, resamples=2000)
    assert many.high - many.low < few.high - few.low


@settings(max_examples=30, deadline=None)
@given(st.lists(values, min_size=5, max_size=10, unique=True))
def test_repeats_that_disagree_widen_the_interval(sample):
    """Two repeats, the second at twice the first's values (the host's load drifted): resampling
    repeats as well as frames gives a wider interval than pooling their frames into one repeat."""
    drifted = [sample, [2 * v for v in sample]]
    by_repeat = stats.interval(drifted, stats.MEAN, seed=3, resamples=2000)
    pooled = stats.interval([[v for r in drifted for v in r]], stats.MEAN, seed=3, resamples=2000)
    assert by_repeat.value == pytest.approx(pooled.value)
    assert by_repeat.high - by_repeat.low > pooled.high - pooled.low


def test_constant_samples_have_a_point_interval_and_another_seed_moves_a_noisy_one():
    assert stats.ratio_interval([[2.0] * 5], [[1.0] * 5], stats.MEAN) == stats.Estimate(2.0, 2.0, 2.0)
    noisy = [list(np.random.default_rng(0).exponential(1.0, 30))]
    assert stats.interval(noisy, stats.MEAN, seed=1) != stats.interval(noisy, stats.MEAN, seed=2)


def test_spread_is_numpys_percentiles_and_mean():
    data = list(range(1, 101))
    found = stats.spread(data)
    assert (found.p50, found.p90, found.p99, found.mean) == pytest.approx((50.5, 90.1, 99.01, 50.5))
    assert found.count == 100
    with pytest.raises(ValueError, match="no values"):
        stats.spread([])


def test_a_throughput_is_the_reciprocal_of_the_mean_period_with_its_interval():
    period = stats.Estimate(0.5, 0.25, 1.0)
    assert stats.reciprocal(period) == stats.Estimate(2.0, 1.0, 4.0)


@pytest.mark.parametrize("estimate,said", [
    (stats.Estimate(1.2, 0.9, 1.5), "spans 1x"),
    (stats.Estimate(0.8, 0.7, 1.1), "spans 1x"),
    (stats.Estimate(3.0, 2.0, 4.0), "67% of its value (over 50%)"),
    (stats.Estimate(1.8, 1.6, 2.0), None),
    (stats.Estimate(0.5, 0.45, 0.55), None),
])  # fmt: skip
def test_a_speedup_is_inconclusive_when_its_interval_spans_1_or_is_wide(estimate, said):
    reason = stats.inconclusive(estimate)
    assert reason is None if said is None else said in reason


def test_a_repeat_without_values_is_refused():
    with pytest.raises(ValueError, match="at least one value"):
        stats.interval([[1.0], []], stats.MEAN)


def test_replicates_drawn_in_batches_give_the_same_kind_of_interval(monkeypatch):
    sample = [list(np.random.default_rng(5).exponential(1.0, 40)) for _ in range(3)]
    whole = stats.interval(sample, stats.MEAN, seed=4)
    monkeypatch.setattr(stats, "CELLS_PER_BATCH", 500)  # 4 replicates at a time
    batched = stats.interval(sample, stats.MEAN, seed=4)
    assert batched == stats.interval(sample, stats.MEAN, seed=4) and batched.value == whole.value
    assert (batched.low, batched.high) == pytest.approx((whole.low, whole.high), rel=0.05)
