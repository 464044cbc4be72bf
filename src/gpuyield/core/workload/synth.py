"""Length-only tables + an arrival process -> a :class:`Workload` (seeded)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gpuyield.core.workload.arrivals import ArrivalSpec, generate_arrivals
from gpuyield.core.workload.workload import Workload, WorkloadMeta
from gpuyield.errors import WorkloadError

__all__ = ["synthesize"]


def synthesize(
    input_tokens: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    arrival: ArrivalSpec,
    meta: WorkloadMeta,
    *,
    num_requests: int | None = None,
    seed: int = 0,
    block_size_tokens: int = 512,
) -> Workload:
    """Pair rows of a length table with synthetic arrival times.

    Rows are drawn at random (seeded): without replacement while the table has enough rows, with replacement
    beyond that. Poisson/Gamma arrivals make ``num_requests`` requests (default: one per table row); a rate
    curve makes as many as the curve implies (capped at ``num_requests`` when given).
    """
    isl = np.asarray(input_tokens, dtype=np.int64)
    osl = np.asarray(output_tokens, dtype=np.int64)
    if isl.shape != osl.shape or isl.ndim != 1 or len(isl) == 0:
        raise WorkloadError(f"{meta.name}: length table needs equal, non-empty input and output columns")
    rng = np.random.default_rng(seed)
    n = num_requests if num_requests is not None else (None if arrival.kind == "curve" else len(isl))
    arrivals = generate_arrivals(arrival, n, rng)
    m = len(arrivals)
    replace = m > len(isl)
    rows = rng.integers(0, len(isl), size=m) if replace else rng.choice(len(isl), size=m, replace=False)
    note = (
        f"{m} requests: lengths drawn from {len(isl)} table rows "
        f"({'without' if m <= len(isl) else 'with'} replacement), {arrival.describe()}, seed {seed}"
    )
    return Workload(
        arrival_s=arrivals,
        input_tokens=isl[rows],
        output_tokens=osl[rows],
        block_size_tokens=block_size_tokens,
        meta=meta.with_note(note),
    )
