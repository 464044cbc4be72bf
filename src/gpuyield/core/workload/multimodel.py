"""Multi-model workloads from per-tenant traces: each tenant's (client's) requests name one model.

ServeGen describes traffic per client; giving each of the busiest clients its own model turns real, bursty
per-client demand into per-model demand (the multiplexing scenarios of ``plan --multi-model``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpuyield.core.workload.workload import Workload
from gpuyield.errors import WorkloadError

__all__ = ["models_from_tenants"]


def models_from_tenants(w: Workload, models: Sequence[str], *, max_input_tokens: int | None = None,
                        max_output_tokens: int | None = None) -> Workload:  # fmt: skip
    """Keep the ``len(models)`` busiest tenants of ``w`` and let the k-th busiest name ``models[k]``.

    Lengths may be capped (``max_*_tokens``) so every request fits the chosen models' context.
    """
    if not models:
        raise WorkloadError("models_from_tenants: need at least one model")
    counts = np.bincount(w.tenant_codes, minlength=len(w.tenants))
    busiest = [int(c) for c in np.argsort(-counts, kind="stable")[: len(models)] if counts[c] > 0]
    if len(busiest) < len(models):
        raise WorkloadError(f"the workload has {len(busiest)} tenants with requests; {len(models)} models asked")
    keep = np.nonzero(np.isin(w.tenant_codes, busiest))[0]
    sub = w.take(keep)
    code_of = np.full(len(w.tenants), -1, dtype=np.int32)
    for k, c in enumerate(busiest):
        code_of[c] = k
    isl = sub.input_tokens if max_input_tokens is None else np.minimum(sub.input_tokens, max_input_tokens)
    osl = sub.output_tokens if max_output_tokens is None else np.minimum(sub.output_tokens, max_output_tokens)
    return Workload(
        arrival_s=sub.arrival_s,
        input_tokens=isl,
        output_tokens=osl,
        model_codes=code_of[sub.tenant_codes],
        models=tuple(models),
        tenant_codes=sub.tenant_codes,
        tenants=sub.tenants,
        priority=sub.priority,
        session_codes=sub.session_codes,
        sessions=sub.sessions,
        hash_offsets=sub.hash_offsets,
        hash_values=sub.hash_values,
        block_size_tokens=sub.block_size_tokens,
        meta=sub.meta.with_note(f"tenants {[w.tenants[c] for c in busiest]} name models {list(models)}"),
    )
