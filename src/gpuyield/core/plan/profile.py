"""What the analytic screen needs to know about a workload, computed once from its columns.

- rates: mean request rate, and the *sizing rate*: the arrival rate of the busiest time windows that together
  hold 1 % of the requests. A fleet sized for the mean rate misses a p99 target whenever more than 1 % of the
  requests arrive in bursts above it; sizing for this rate is what the p99 needs (the simulator then checks).
- lengths: mean and percentiles of input/output tokens, the input:output token mix.
- burstiness: squared coefficient of variation of inter-arrival times (Kingman's ``c_a^2``).
- prefix reuse: the fraction of prompt tokens that a prefix cache could serve, for one shared cache (a
  prefix-affinity router) and for ``n`` caches fed round-robin (:meth:`WorkloadProfile.hit_fraction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gpuyield.core.workload.workload import Workload

__all__ = ["WorkloadProfile", "profile_workload"]


@dataclass(slots=True)
class WorkloadProfile:
    """Summary statistics of a workload, in the units their names say."""

    name: str
    num_requests: int
    duration_s: float
    rate_per_s: float  # mean arrival rate
    sizing_rate_per_s: float  # rate of the busiest windows holding 1 % of requests (>= mean)
    window_s: float  # window used for sizing_rate_per_s
    arrival_scv: float  # squared coefficient of variation of inter-arrival times
    input_mean_tokens: float
    input_p50_tokens: float
    input_p99_tokens: float
    output_mean_tokens: float
    output_p99_tokens: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    shared_hit_fraction: float  # prompt-token fraction a single shared infinite prefix cache serves
    _hashes: list[tuple[int, ...]] = field(default_factory=list, repr=False)
    _block_tokens: int = 512
    _input_tokens: list[int] = field(default_factory=list, repr=False)
    _rr_cache: dict[int, float] = field(default_factory=dict, repr=False)

    @property
    def input_fraction(self) -> float:
        total = self.input_tokens_per_s + self.output_tokens_per_s
        return self.input_tokens_per_s / total if total > 0 else 0.5

    def hit_fraction(self, num_caches: int, *, affinity: bool) -> float:
        """Prompt-token fraction served from cache with ``num_caches`` independent caches.

        ``affinity`` = requests sharing a prefix go to the same cache (as good as one shared cache);
        otherwise requests are spread round-robin. Caches are unbounded here (the simulator has the limits).
        """
        if affinity or num_caches <= 1 or not self._hashes:
            return self.shared_hit_fraction
        n = int(num_caches)
        if n not in self._rr_cache:
            self._rr_cache[n] = _hit_fraction(self._hashes, self._input_tokens, self._block_tokens, n)
        return self._rr_cache[n]


def _hit_fraction(hashes: list[tuple[int, ...]], input_tokens: list[int], block: int, num_caches: int) -> float:
    seen: list[set[int]] = [set() for _ in range(num_caches)]
    hit = 0
    total = sum(input_tokens)
    for i, hs in enumerate(hashes):
        cache = seen[i % num_caches]
        k = 0
        for h in hs:
            if h in cache:
                k += 1
            else:
                break
        # A full-prompt hit still recomputes the last token (as vLLM does).
        hit += min(k * block, input_tokens[i] - 1)
        cache.update(hs)
    return hit / total if total > 0 else 0.0


def _sizing_rate(arrival_s: np.ndarray, duration_s: float, tail_fraction: float = 0.01) -> tuple[float, float]:
    n = len(arrival_s)
    if n < 2 or duration_s <= 0:
        return float(n / max(duration_s, 1.0)), max(duration_s, 1.0)
    window = max(10.0, min(60.0, duration_s / 60.0))
    num_windows = max(1, math.ceil(duration_s / window))
    counts = np.bincount(np.minimum((arrival_s - arrival_s[0]) // window, num_windows - 1).astype(np.int64),
                         minlength=num_windows)
    order = np.sort(counts)[::-1]
    cum = np.cumsum(order)
    k = int(np.searchsorted(cum, tail_fraction * n))
    rate = float(order[min(k, len(order) - 1)]) / window
    return max(rate, n / duration_s), window


def profile_workload(w: Workload) -> WorkloadProfile:
    """Profile ``w`` (pure; O(requests + prefix blocks))."""
    n = len(w)
    if n == 0:
        raise ValueError("cannot plan for an empty workload")
    arr = w.arrival_s
    inp = w.input_tokens.astype(np.float64)
    out = w.output_tokens.astype(np.float64)
    span = float(arr[-1] - arr[0]) if n > 1 else 0.0
    # Duration: the arrival span plus one mean gap, so n requests over it give the mean rate.
    duration = span * n / (n - 1) if n > 1 and span > 0 else 1.0
    gaps = np.diff(arr)
    scv = float(gaps.var() / gaps.mean() ** 2) if n > 2 and gaps.mean() > 0 else 1.0
    sizing, window = _sizing_rate(arr, duration)
    hashes: list[tuple[int, ...]] = []
    if w.has_hashes:
        off, vals = w.hash_offsets, w.hash_values
        hashes = [tuple(int(v) for v in vals[off[i] : off[i + 1]]) for i in range(n)]
    input_list = [int(x) for x in w.input_tokens]
    prof = WorkloadProfile(
        name=w.name,
        num_requests=n,
        duration_s=duration,
        rate_per_s=n / duration,
        sizing_rate_per_s=sizing,
        window_s=window,
        arrival_scv=scv,
        input_mean_tokens=float(inp.mean()),
        input_p50_tokens=float(np.percentile(inp, 50)),
        input_p99_tokens=float(np.percentile(inp, 99)),
        output_mean_tokens=float(out.mean()),
        output_p99_tokens=float(np.percentile(out, 99)),
        input_tokens_per_s=float(inp.sum()) / duration,
        output_tokens_per_s=float(out.sum()) / duration,
        shared_hit_fraction=0.0,
        _hashes=hashes,
        _block_tokens=int(w.block_size_tokens),
        _input_tokens=input_list,
    )
    if hashes:
        prof.shared_hit_fraction = _hit_fraction(hashes, input_list, prof._block_tokens, 1)
    return prof
