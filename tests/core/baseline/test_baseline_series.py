"""Counters with resets, step-held gauges and histogram quantiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuyield.core.baseline import (
    TimeSeries,
    counter_increase,
    counter_increments,
    gauge_integral,
    gauge_mean,
    histogram_quantile,
)


def test_counter_increase_counts_a_reset_as_restart_from_zero() -> None:
    # 10 → 25 (+15) → 25 (+0) → 4 (reset: +4) → 9 (+5)  = 24
    s = TimeSeries.of([0, 15, 30, 45, 60], [10, 25, 25, 4, 9])
    assert counter_increase(s) == 24
    assert list(counter_increments(s.values)) == [15, 0, 4, 5]


def test_counter_from_one_scrape_has_no_window_increase() -> None:
    assert counter_increase(TimeSeries.of([0], [123.0])) is None


def test_gauge_mean_is_step_held_and_time_weighted() -> None:
    # 100 W for 10 s, then 50 W for 30 s; the last sample (0 W) only closes the window: 2500 J / 40 s
    s = TimeSeries.of([0, 10, 40], [100, 50, 0])
    assert gauge_integral(s, single_sample_s=15) == 2500
    assert gauge_mean(s) == pytest.approx(62.5)
    single = TimeSeries.of([7], [68.347])
    assert gauge_mean(single) == 68.347
    assert gauge_integral(single, single_sample_s=15) == pytest.approx(68.347 * 15)


def test_timeseries_sorts_and_keeps_last_of_equal_timestamps() -> None:
    s = TimeSeries.of([30, 0, 30], [3, 1, 4])
    assert list(s.ts_s) == [0, 30] and list(s.values) == [1, 4]


def test_histogram_quantile_matches_the_vllm_docs_ttft_example() -> None:
    # vllm_metrics_sample_ttft_histogram_docs.prom: le 0.02 → 13, 0.04 → 97, 0.06 → 123, 0.08 → 138,
    # 0.1 → 140 = count. p50: rank 70 falls in (0.02, 0.04]: 0.02 + 0.02 × (70 − 13) / (97 − 13) = 0.0335714
    bounds = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, math.inf]
    counts = [0, 0, 0, 13, 97, 123, 138, 140, 140]
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.02 + 0.02 * 57 / 84)
    # p99: rank 138.6 in (0.08, 0.1]: 0.08 + 0.02 × 0.6 / 2 = 0.086
    assert histogram_quantile(0.99, bounds, counts) == pytest.approx(0.086)


def test_histogram_quantile_in_inf_bucket_answers_largest_finite_bound() -> None:
    assert histogram_quantile(0.9, [1.0, 2.0, math.inf], [1, 2, 10]) == 2.0
    assert histogram_quantile(0.5, [1.0, math.inf], [0, 0]) is None
    with pytest.raises(ValueError):
        histogram_quantile(1.5, [1.0, math.inf], [1, 1])


@given(st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=2, max_size=40))
def test_counter_increase_is_never_negative_and_exact_when_monotone(values: list[float]) -> None:
    s = TimeSeries.of(list(range(len(values))), values)
    inc = counter_increase(s)
    assert inc is not None and inc >= 0
    mono = np.maximum.accumulate(np.asarray(values))
    inc_mono = counter_increase(TimeSeries.of(list(range(len(values))), mono))
    assert inc_mono == pytest.approx(mono[-1] - mono[0], rel=1e-9, abs=1e-6)
