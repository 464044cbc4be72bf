"""Workload transforms: time scale, rate scale, slice, sample, merge. Each returns a new :class:`Workload` and
appends a note to its metadata so a result always says how it was made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpuyield.core.workload.workload import Workload, WorkloadMeta
from gpuyield.errors import WorkloadError

__all__ = [
    "merge",
    "rate_scale",
    "rebase",
    "sample",
    "slice_index",
    "slice_time",
    "time_scale",
]


def _noted(w: Workload, note: str) -> Workload:
    w.meta = w.meta.with_note(note)
    return w


def rebase(w: Workload) -> Workload:
    """Shift arrivals so the first request arrives at t = 0."""
    if len(w) == 0 or w.arrival_s[0] == 0.0:
        return w
    return w.replace(arrival_s=w.arrival_s - w.arrival_s[0])


def time_scale(w: Workload, factor: float) -> Workload:
    """Multiply every arrival time by ``factor`` (2.0 = the same requests spread over twice the time)."""
    if not (factor > 0 and np.isfinite(factor)):
        raise WorkloadError(f"time scale must be a positive number, got {factor}")
    return _noted(w.replace(arrival_s=w.arrival_s * float(factor)), f"time scaled x{factor:g}")


def rate_scale(w: Workload, factor: float) -> Workload:
    """Multiply the request rate by ``factor`` by compressing inter-arrival times (2.0 halves the duration)."""
    if not (factor > 0 and np.isfinite(factor)):
        raise WorkloadError(f"rate scale must be a positive number, got {factor}")
    return _noted(w.replace(arrival_s=w.arrival_s / float(factor)), f"rate scaled x{factor:g}")


def slice_index(w: Workload, start: int | None = None, stop: int | None = None) -> Workload:
    """Requests ``start`` (inclusive) to ``stop`` (exclusive) in arrival order, Python slice semantics."""
    idx = np.arange(len(w))[slice(start, stop)]
    out = w.take(idx)
    return _noted(out, f"requests [{'' if start is None else start}:{'' if stop is None else stop}]")


def slice_time(w: Workload, start_s: float = 0.0, end_s: float | None = None, *, rebase_time: bool = True) -> Workload:
    """Requests arriving in ``[start_s, end_s)``; by default arrivals are shifted so ``start_s`` becomes 0."""
    if end_s is not None and end_s <= start_s:
        raise WorkloadError(f"time slice end ({end_s} s) must be after its start ({start_s} s)")
    lo = int(np.searchsorted(w.arrival_s, start_s, side="left"))
    hi = len(w) if end_s is None else int(np.searchsorted(w.arrival_s, end_s, side="left"))
    out = w.take(np.arange(lo, hi))
    if rebase_time and start_s != 0.0:
        out = out.replace(arrival_s=out.arrival_s - float(start_s))
    return _noted(out, f"time window [{start_s:g} s, {'end' if end_s is None else f'{end_s:g} s'})")


def sample(w: Workload, n: int | None = None, *, fraction: float | None = None, seed: int = 0) -> Workload:
    """A seeded uniform random subset of ``n`` requests (or ``fraction`` of them), kept in arrival order.

    Thinning keeps the time span, so the rate drops by the sampled fraction.
    """
    if (n is None) == (fraction is None):
        raise WorkloadError("sample: give exactly one of n or fraction")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise WorkloadError(f"sample fraction must be in (0, 1], got {fraction}")
        n = int(round(fraction * len(w)))
    assert n is not None
    if n < 0 or n > len(w):
        raise WorkloadError(f"sample size must be between 0 and {len(w)} requests, got {n}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(w), size=n, replace=False))
    return _noted(w.take(idx), f"sampled {n} of {len(w)} requests (seed {seed})")


def merge(workloads: Sequence[Workload], *, name: str | None = None, offsets_s: Sequence[float] | None = None) -> Workload:
    """Interleave several workloads by arrival time (e.g. different models or tenants into one fleet).

    Every request keeps its model, tenant, priority, session and hashes; ties keep the input order. Session ids
    are prefixed by their workload's name when two inputs use the same id, so sessions never merge by accident.
    ``offsets_s`` shifts each input's arrivals before merging.
    """
    if not workloads:
        raise WorkloadError("merge: no workloads given")
    with_hashes = [w for w in workloads if w.has_hashes]
    bs = {w.block_size_tokens for w in with_hashes}
    if len(bs) > 1:
        raise WorkloadError(f"merge: workloads use different block sizes {sorted(bs)}; use one block size")
    block_size = bs.pop() if bs else workloads[0].block_size_tokens
    if offsets_s is not None and len(offsets_s) != len(workloads):
        raise WorkloadError(f"merge: {len(offsets_s)} offsets given for {len(workloads)} workloads")

    def unify(tables: list[tuple[str | None, ...]], codes: list[np.ndarray]) -> tuple[np.ndarray, tuple[str | None, ...]]:
        table: dict[str | None, int] = {}
        out = []
        for t, c in zip(tables, codes, strict=True):
            remap = np.array([table.setdefault(lbl, len(table)) for lbl in t] or [0], dtype=np.int32)
            out.append(remap[c] if len(c) else c)
        return np.concatenate(out), tuple(table)

    models_codes, models = unify([w.models for w in workloads], [w.model_codes for w in workloads])
    tenant_codes, tenants = unify([w.tenants for w in workloads], [w.tenant_codes for w in workloads])
    # sessions: -1 stays -1; names qualified by workload when they clash
    all_names: dict[str | None, int] = {}
    for w in workloads:
        for s in w.sessions:
            all_names[s] = all_names.get(s, 0) + 1
    sess_table: dict[str | None, int] = {}
    sess_codes = []
    for k, w in enumerate(workloads):
        labels = [s if all_names[s] == 1 else f"{w.meta.name or k}:{s}" for s in w.sessions]
        if len(set(labels)) != len(labels) or any(lbl in sess_table for lbl in labels):
            labels = [f"{k}:{s}" for s in w.sessions]
        remap = np.array([sess_table.setdefault(lbl, len(sess_table)) for lbl in labels] + [-1], dtype=np.int32)
        sess_codes.append(remap[w.session_codes])  # code -1 indexes the trailing -1
    arrivals = np.concatenate(
        [w.arrival_s + (0.0 if offsets_s is None else float(offsets_s[k])) for k, w in enumerate(workloads)]
    )
    lens = np.concatenate([np.diff(w.hash_offsets) for w in workloads])
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    meta = WorkloadMeta(
        name=name or "+".join(w.meta.name for w in workloads),
        source="merge(" + ", ".join(w.meta.source or w.meta.name for w in workloads) + ")",
        licence=", ".join(sorted({w.meta.licence for w in workloads if w.meta.licence})),
        notes=(f"merged {len(workloads)} workloads: " + ", ".join(f"{w.meta.name} ({len(w)})" for w in workloads),),
    )
    merged = Workload(
        arrival_s=arrivals,
        input_tokens=np.concatenate([w.input_tokens for w in workloads]),
        output_tokens=np.concatenate([w.output_tokens for w in workloads]),
        priority=np.concatenate([w.priority for w in workloads]),
        model_codes=models_codes,
        models=models,
        tenant_codes=tenant_codes,
        tenants=tenants,
        session_codes=np.concatenate(sess_codes),
        sessions=tuple(sess_table),
        hash_offsets=offsets,
        hash_values=np.concatenate([w.hash_values for w in workloads]),
        block_size_tokens=block_size,
        meta=meta,
        validate=False,
    )
    order = np.argsort(merged.arrival_s, kind="stable")
    out = merged.take(order)
    if len(out) and out.arrival_s[0] < 0:
        raise WorkloadError("merge: offsets made some arrival times negative")
    return out
