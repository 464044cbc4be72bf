"""Synthetic arrival processes, all seeded: Poisson, Gamma renewal with a given CV, and a piecewise-constant
rate curve (e.g. ServeGen's 10-minute aggregate rates) with Poisson or Gamma burstiness inside it.

The rate curve uses the time-rescaling theorem: draw a unit-rate renewal process with the wanted CV, then map
each point ``s`` through the inverse of the cumulative intensity ``Λ(t) = ∫ rate``. For CV = 1 this is an exact
non-homogeneous Poisson process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from gpuyield.errors import WorkloadError

__all__ = [
    "ArrivalSpec",
    "RateCurve",
    "gamma_arrivals",
    "generate_arrivals",
    "poisson_arrivals",
    "rate_curve_arrivals",
]

F64 = npt.NDArray[np.float64]


def _gaps(n: int, cv: float, rng: np.random.Generator) -> F64:
    """``n`` unit-mean inter-arrival gaps with coefficient of variation ``cv`` (Gamma; cv=1 is exponential)."""
    if not (cv > 0 and np.isfinite(cv)):
        raise WorkloadError(f"arrival CV must be a positive number, got {cv}")
    if cv == 1.0:
        return rng.exponential(1.0, size=n)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, 1.0 / shape, size=n)


def poisson_arrivals(n: int, rate_per_s: float, rng: np.random.Generator) -> F64:
    """``n`` Poisson arrival times (s) at ``rate_per_s``; the first arrival is at t = 0."""
    return gamma_arrivals(n, rate_per_s, 1.0, rng)


def gamma_arrivals(n: int, rate_per_s: float, cv: float, rng: np.random.Generator) -> F64:
    """``n`` arrival times of a Gamma renewal process with mean rate ``rate_per_s`` and inter-arrival CV ``cv``.

    The first arrival is at t = 0 (arrival times are relative to the workload's start).
    """
    if n < 0:
        raise WorkloadError(f"number of requests must be >= 0, got {n}")
    if not (rate_per_s > 0 and np.isfinite(rate_per_s)):
        raise WorkloadError(f"arrival rate must be a positive number of requests/s, got {rate_per_s}")
    if n == 0:
        return np.zeros(0)
    gaps = _gaps(n - 1, cv, rng) / rate_per_s
    out = np.zeros(n)
    np.cumsum(gaps, out=out[1:])
    return out


@dataclass(frozen=True, slots=True)
class RateCurve:
    """A piecewise-constant rate: window ``k`` covers ``[start_s[k], start_s[k] + window_s[k])`` at ``rate_per_s[k]``."""

    start_s: tuple[float, ...]
    window_s: tuple[float, ...]
    rate_per_s: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.start_s)
        if n == 0 or len(self.window_s) != n or len(self.rate_per_s) != n:
            raise WorkloadError("rate curve: needs at least one window and equal-length start/window/rate columns")
        for k in range(n):
            if self.window_s[k] <= 0:
                raise WorkloadError(f"rate curve: window {k} has length {self.window_s[k]} s; expected > 0")
            if self.rate_per_s[k] < 0 or not np.isfinite(self.rate_per_s[k]):
                raise WorkloadError(f"rate curve: window {k} has rate {self.rate_per_s[k]}; expected >= 0")
            if k and abs(self.start_s[k] - (self.start_s[k - 1] + self.window_s[k - 1])) > 1e-9:
                raise WorkloadError(
                    f"rate curve: window {k} starts at {self.start_s[k]} s but window {k - 1} ends at "
                    f"{self.start_s[k - 1] + self.window_s[k - 1]} s; windows must be contiguous"
                )
        if sum(self.rate_per_s) <= 0:
            raise WorkloadError("rate curve: every window has rate 0")

    @property
    def duration_s(self) -> float:
        return float(self.start_s[-1] + self.window_s[-1] - self.start_s[0])

    @property
    def expected_requests(self) -> float:
        return float(sum(r * w for r, w in zip(self.rate_per_s, self.window_s, strict=True)))

    @property
    def mean_rate_per_s(self) -> float:
        return self.expected_requests / self.duration_s

    def scaled_to_mean(self, mean_rate_per_s: float) -> RateCurve:
        f = mean_rate_per_s / self.mean_rate_per_s
        return RateCurve(self.start_s, self.window_s, tuple(r * f for r in self.rate_per_s))

    @classmethod
    def from_windows(cls, rows: Sequence[tuple[float, float, float]]) -> RateCurve:
        """From ``(start_s, window_s, rate_per_s)`` rows (any order; sorted by start)."""
        rows = sorted(rows)
        return cls(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows))


def rate_curve_arrivals(curve: RateCurve, rng: np.random.Generator, *, cv: float = 1.0) -> F64:
    """Arrival times (s, from the curve's start) following ``curve`` with inter-arrival CV ``cv`` in rescaled time."""
    rates = np.asarray(curve.rate_per_s, dtype=np.float64)
    widths = np.asarray(curve.window_s, dtype=np.float64)
    starts = np.asarray(curve.start_s, dtype=np.float64) - curve.start_s[0]
    cum_end = np.cumsum(rates * widths)  # Λ at each window's end
    total = float(cum_end[-1])
    # draw enough unit-rate points to cover Λ_total, in chunks
    pts: list[F64] = []
    s = 0.0
    chunk = max(16, int(total * 1.1) + 16)
    while s <= total:
        g = np.cumsum(_gaps(chunk, cv, rng)) + s
        pts.append(g)
        s = float(g[-1])
    u = np.concatenate(pts) if pts else np.zeros(0)
    # first point at the first positive rate: use the equilibrium start (uniform phase in the first gap)
    u = u - u[0] * rng.uniform() if len(u) else u
    u = u[u < total]
    k = np.searchsorted(cum_end, u, side="left")  # first window whose end >= u (its rate is > 0)
    k = np.minimum(k, len(rates) - 1)
    cum_start = cum_end[k] - rates[k] * widths[k]
    t = starts[k] + (u - cum_start) / rates[k]
    return np.asarray(np.sort(t), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """How to give arrival times to a length-only table.

    ``kind``: ``poisson`` (rate), ``gamma`` (rate, cv) or ``curve`` (a :class:`RateCurve`, optional cv; with
    ``rate_per_s`` the curve is rescaled to that mean rate).
    """

    kind: Literal["poisson", "gamma", "curve"] = "poisson"
    rate_per_s: float | None = None
    cv: float = 1.0
    curve: RateCurve | None = None

    def describe(self) -> str:
        if self.kind == "curve":
            assert self.curve is not None
            return (
                f"rate curve ({len(self.curve.rate_per_s)} windows, mean {self.curve.mean_rate_per_s:.4g} req/s"
                + (f", rescaled to {self.rate_per_s:g} req/s" if self.rate_per_s else "")
                + f", CV {self.cv:g})"
            )
        if self.kind == "gamma":
            return f"Gamma arrivals at {self.rate_per_s:g} req/s, CV {self.cv:g}"
        return f"Poisson arrivals at {self.rate_per_s:g} req/s"


def generate_arrivals(spec: ArrivalSpec, n: int | None, rng: np.random.Generator) -> F64:
    """Arrival times for ``spec``: ``n`` of them for poisson/gamma; for a curve, as many as the curve produces
    (truncated to ``n`` when given)."""
    if spec.kind in ("poisson", "gamma"):
        if spec.rate_per_s is None:
            raise WorkloadError(f"{spec.kind} arrivals need a rate (requests/s)")
        if n is None:
            raise WorkloadError(f"{spec.kind} arrivals need a number of requests")
        return gamma_arrivals(n, spec.rate_per_s, 1.0 if spec.kind == "poisson" else spec.cv, rng)
    if spec.kind == "curve":
        if spec.curve is None:
            raise WorkloadError("curve arrivals need a rate curve")
        curve = spec.curve if spec.rate_per_s is None else spec.curve.scaled_to_mean(spec.rate_per_s)
        t = rate_curve_arrivals(curve, rng, cv=spec.cv)
        return t if n is None else t[:n]
    raise WorkloadError(f"unknown arrival process {spec.kind!r}; expected poisson, gamma or curve")
