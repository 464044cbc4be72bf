"""Time-series arithmetic for telemetry: counters with resets, step-held gauges, histogram quantiles.

Conventions (the same as Prometheus'):

- A **gauge** sample holds its value until the next sample (step interpolation). Over a window
  ``[t0, tn]`` of ``n+1`` samples the time-weighted mean is ``sum(v[i] * (t[i+1]-t[i])) / (tn-t0)``; the last
  sample only closes the window. A single sample is its own mean.
- A **counter** only goes up; a drop means the process restarted and the counter began again at 0, so the
  increase over that interval is the new value itself (``increase()`` in PromQL, without extrapolation).
- A **histogram** is a set of cumulative ``_bucket{le=...}`` counters; quantiles interpolate linearly inside
  the bucket that holds the rank, and answer the upper bound of the last finite bucket when the rank falls
  in ``+Inf`` (``histogram_quantile()`` in PromQL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Histogram",
    "TimeSeries",
    "counter_increase",
    "counter_increments",
    "gauge_integral",
    "gauge_mean",
    "histogram_quantile",
]


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """One series: sample times (epoch seconds, strictly increasing) and values, same length ≥ 1."""

    ts_s: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if len(self.ts_s) != len(self.values) or len(self.ts_s) == 0:
            raise ValueError("TimeSeries needs ts_s and values of the same non-zero length")

    @classmethod
    def of(cls, ts_s: Sequence[float], values: Sequence[float]) -> TimeSeries:
        ts = np.asarray(ts_s, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64)
        order = np.argsort(ts, kind="stable")
        ts, vals = ts[order], vals[order]
        if len(ts) > 1:  # keep the last sample of equal timestamps
            keep = np.append(ts[1:] != ts[:-1], True)
            ts, vals = ts[keep], vals[keep]
        return cls(ts, vals)

    @property
    def num_samples(self) -> int:
        return len(self.ts_s)

    @property
    def first_s(self) -> float:
        return float(self.ts_s[0])

    @property
    def last_s(self) -> float:
        return float(self.ts_s[-1])

    @property
    def last(self) -> float:
        return float(self.values[-1])


def counter_increments(values: np.ndarray) -> np.ndarray:
    """Per-interval increases of a counter (length ``n-1``), treating any drop as a reset to 0."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return np.zeros(0)
    delta = np.diff(v)
    reset = delta < 0
    return np.where(reset, v[1:], delta)


def counter_increase(series: TimeSeries) -> float | None:
    """Total increase over the series' window; ``None`` for a single sample (no window)."""
    if series.num_samples < 2:
        return None
    return float(counter_increments(series.values).sum())


def gauge_integral(series: TimeSeries, *, single_sample_s: float) -> float:
    """∫ value dt with step-held samples over ``[t0, tn]``; a single sample holds for ``single_sample_s``."""
    if series.num_samples == 1:
        return float(series.values[0]) * single_sample_s
    dt = np.diff(series.ts_s)
    return float(np.sum(series.values[:-1] * dt))


def gauge_mean(series: TimeSeries) -> float:
    """Time-weighted mean over ``[t0, tn]`` (step-held); a single sample is its own mean."""
    if series.num_samples == 1:
        return float(series.values[0])
    span = series.last_s - series.first_s
    return gauge_integral(series, single_sample_s=0.0) / span


@dataclass(frozen=True, slots=True)
class Histogram:
    """A Prometheus histogram: cumulative bucket counters per upper bound (``+Inf`` last), ``_sum``, ``_count``.

    ``buckets[i]`` is the time series of ``_bucket{le=bounds[i]}``; bounds are sorted ascending.
    Any of the parts may be missing in real captures (authors often drop buckets): then empty/None.
    """

    bounds: tuple[float, ...]
    buckets: tuple[TimeSeries, ...]
    sum: TimeSeries | None
    count: TimeSeries | None


def histogram_quantile(q: float, bounds: Sequence[float], cumulative_counts: Sequence[float]) -> float | None:
    """Quantile ``q`` (0..1) from cumulative bucket counts; ``None`` when there are no observations.

    Linear interpolation inside the bucket holding rank ``q * total``; the lowest bucket starts at 0 (or at
    its bound if that is negative); a rank in the ``+Inf`` bucket answers the largest finite bound.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    pairs = sorted(zip(bounds, cumulative_counts, strict=True))
    if not pairs or not math.isinf(pairs[-1][0]):
        return None
    total = pairs[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(pairs):
        if count >= rank and count > prev_count:
            if math.isinf(bound):
                return pairs[i - 1][0] if i > 0 else None
            if i == 0 and bound <= 0:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return pairs[-2][0] if len(pairs) > 1 else None
