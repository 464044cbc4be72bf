"""``inspect(workload) -> WorkloadStats``: the numbers that characterise a trace.

Prefix reuse upper bound: with an unlimited cache that never evicts, a block can be served from cache iff the
same block hash was seen in an earlier request (or earlier in the same request). ``prefix_reuse_block_frac`` is
the fraction of all hashed blocks seen before; ``prefix_reuse_token_frac`` weighs the same hits by
``block_size_tokens`` over all input tokens (the "cache ratio" papers report). ``prefix_hit_token_frac`` counts
only each request's longest leading run of previously seen blocks -- what a prefix cache (vLLM, SGLang) can
actually reuse, since a block after a miss is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gpuyield.core.workload.workload import Workload

__all__ = ["LengthStats", "WorkloadStats", "inspect", "mean_p50_p90_p99"]


def mean_p50_p90_p99(values: npt.NDArray[Any]) -> tuple[float, float, float, float]:
    """Mean and 50th/90th/99th percentiles (numpy's default linear interpolation) of a non-empty array.

    The one summary used for token lengths here and for latencies in ``gpuyield.core.sim``.
    """
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return float(values.mean()), float(p50), float(p90), float(p99)


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Token-length distribution (tokens)."""

    mean: float
    p50: float
    p90: float
    p99: float
    min: int
    max: int
    total: int

    @classmethod
    def of(cls, a: npt.NDArray[np.int64]) -> LengthStats:
        if len(a) == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0, 0, 0)
        return cls(*mean_p50_p90_p99(a), int(a.min()), int(a.max()), int(a.sum()))


@dataclass(frozen=True, slots=True)
class WorkloadStats:
    name: str
    source: str
    licence: str
    num_requests: int
    duration_s: float  # first to last arrival
    mean_rate_per_s: float  # num_requests / duration_s (requests per second)
    window_s: float  # width of the rate_per_s windows (the last one may be partial, see _window_rates)
    rate_per_s: tuple[float, ...]  # request rate in consecutive windows from the first arrival
    peak_rate_per_s: float  # highest window rate
    interarrival_cv: float  # std / mean of inter-arrival gaps (1 for Poisson); NaN for < 3 requests
    input_tokens: LengthStats
    output_tokens: LengthStats
    block_size_tokens: int
    num_requests_with_hashes: int
    num_blocks: int  # hashed blocks over all requests
    num_unique_blocks: int
    prefix_reuse_block_frac: float | None  # None when the workload has no block hashes
    prefix_reuse_token_frac: float | None
    prefix_hit_token_frac: float | None
    num_sessions: int
    num_tenants: int
    num_models: int
    requests_per_model: dict[str, int]
    requests_per_tenant: dict[str, int]
    notes: tuple[str, ...]


def _seen_before(hv: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """``out[i]`` is True iff ``hv[i]`` occurs at an earlier index (one stable sort; ~17 bytes per block)."""
    order = np.argsort(hv, kind="stable")
    srt = hv[order]
    dup = np.empty(len(hv), dtype=bool)
    dup[0] = False  # dup[k]: the k-th sorted value repeats the one before it, i.e. a later occurrence
    np.equal(srt[1:], srt[:-1], out=dup[1:])
    del srt
    out = np.empty(len(hv), dtype=bool)
    out[order] = dup
    return out


def _leading_hits(w: Workload, seen_before: npt.NDArray[np.bool_]) -> int:
    """Sum over requests of the number of leading blocks that were seen before."""
    off = w.hash_offsets
    counts = np.diff(off)
    has = counts > 0
    if not np.any(has):
        return 0
    # the first miss at or after each request's first block (misses are blocks not seen before)
    miss_idx = np.flatnonzero(~seen_before)
    starts = off[:-1][has]
    ends = off[1:][has]
    k = np.searchsorted(miss_idx, starts, side="left")
    first_miss_pos = np.where(k < len(miss_idx), miss_idx[np.minimum(k, len(miss_idx) - 1)], ends)
    first_miss_pos = np.minimum(first_miss_pos, ends)
    return int((first_miss_pos - starts).sum())


def _labels(table: tuple[str | None, ...], codes: npt.NDArray[np.int32], none_label: str) -> dict[str, int]:
    counts = np.bincount(codes, minlength=len(table)) if len(codes) else np.zeros(len(table), dtype=np.int64)
    return {(none_label if t is None else t): int(c) for t, c in zip(table, counts, strict=True) if c}


_NICE_WINDOWS_S = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)


def _nice_window(target_s: float) -> float:
    """The round window length (1 s, 5 s, 1 min, 10 min, 1 h, ...) closest to ``target_s`` (in log scale)."""
    if not target_s > 0:
        return 1.0
    return min(_NICE_WINDOWS_S, key=lambda x: abs(np.log(x / target_s)))


def _window_rates(arrival_s: npt.NDArray[np.float64], duration: float, window_s: float) -> tuple[float, ...]:
    """Request rate in consecutive windows from the first arrival. The last window is partial: its rate is
    over its real width, and a last window shorter than a quarter window is folded into the one before."""
    rel = arrival_s - arrival_s[0]
    num_windows = max(1, int(np.ceil(duration / window_s))) if duration > 0 else 1
    idx = np.minimum((rel // window_s).astype(np.int64), num_windows - 1)
    counts = np.bincount(idx, minlength=num_windows).astype(np.float64)
    widths = np.full(num_windows, window_s)
    last = duration - (num_windows - 1) * window_s
    if num_windows > 1 and last < 0.25 * window_s:
        counts[-2] += counts[-1]
        widths[-2] += last
        counts, widths = counts[:-1], widths[:-1]
    elif duration > 0:
        widths[-1] = max(last, 1e-9)
    return tuple(float(c / wd) for c, wd in zip(counts, widths, strict=True))


def inspect(w: Workload, *, window_s: float | None = None) -> WorkloadStats:
    """Characterise ``w``. ``window_s`` defaults to the round length (1 s, 5 s, 1 min, ...) nearest 1/60 of the duration."""
    n = len(w)
    duration = w.duration_s
    if window_s is None:
        window_s = _nice_window(duration / 60.0)
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    rates = _window_rates(w.arrival_s, duration, window_s) if n else ()
    gaps = np.diff(w.arrival_s)
    cv = float(gaps.std() / gaps.mean()) if len(gaps) >= 2 and gaps.mean() > 0 else float("nan")

    hv = w.hash_values
    num_blocks = len(hv)
    if num_blocks:
        seen_before = _seen_before(hv)
        reused = int(np.count_nonzero(seen_before))
        block_frac: float | None = reused / num_blocks
        tok_total = int(w.input_tokens.sum())
        token_frac: float | None = reused * w.block_size_tokens / tok_total if tok_total else 0.0
        hit_frac: float | None = (
            _leading_hits(w, seen_before) * w.block_size_tokens / tok_total if tok_total else 0.0
        )
        num_unique = num_blocks - reused
    else:
        block_frac = token_frac = hit_frac = None
        num_unique = 0
    return WorkloadStats(
        name=w.meta.name,
        source=w.meta.source,
        licence=w.meta.licence,
        num_requests=n,
        duration_s=duration,
        mean_rate_per_s=(n / duration) if duration > 0 else float("nan"),
        window_s=float(window_s),
        rate_per_s=rates,
        peak_rate_per_s=max(rates) if rates else 0.0,
        interarrival_cv=cv,
        input_tokens=LengthStats.of(w.input_tokens),
        output_tokens=LengthStats.of(w.output_tokens),
        block_size_tokens=w.block_size_tokens,
        num_requests_with_hashes=int(np.count_nonzero(np.diff(w.hash_offsets))),
        num_blocks=num_blocks,
        num_unique_blocks=num_unique,
        prefix_reuse_block_frac=block_frac,
        prefix_reuse_token_frac=token_frac,
        prefix_hit_token_frac=hit_frac,
        num_sessions=int(len(np.unique(w.session_codes[w.session_codes >= 0]))),
        num_tenants=int(len(np.unique(w.tenant_codes))) if n else 0,
        num_models=int(len(np.unique(w.model_codes))) if n else 0,
        requests_per_model=_labels(w.models, w.model_codes, "(default)"),
        requests_per_tenant=_labels(w.tenants, w.tenant_codes, "default"),
        notes=w.meta.notes,
    )
