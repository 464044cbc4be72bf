"""Verification by simulation: the replica-count search for one candidate, and the Pareto set.

:func:`verify_candidate` finds the smallest size (level) at which the simulator, on the actual workload,
meets the SLO: it starts at the screen's level; if that passes it tries one level less (the screen is
usually close) and then bisects down; if it fails it doubles until a pass or a cap
(``max_level``, ``--max-gpus``, budget), then bisects between the last failure and the first pass. At most
``max_sims`` simulations per candidate. Every simulated point is kept (the Pareto set and the report use them).

:func:`capacity_of` bisects the traffic multiple a fixed fleet carries at the SLO (capacity and max-goodput
modes).

The simulation itself is a callable (:data:`SimulateFn`) so the executor (local loop, Ray tasks) and the
simulator adapter live outside this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from gpuyield.core.plan.space import Candidate, Rejection
from gpuyield.core.plan.spec import Slo

__all__ = [
    "SimOutcome",
    "SimPoint",
    "SimulateFn",
    "VerifyOutcome",
    "VerifyTask",
    "capacity_of",
    "pareto_front",
    "verify_candidate",
]


@dataclass(frozen=True, slots=True)
class SimOutcome:
    """What one simulation of a sized candidate returns (plain numbers; picklable)."""

    summary: dict[str, float]  # the simulator's summary keys (ttft_p99_ms, tpot_p99_ms, ...)
    replica_utilisation: dict[str, float] = field(default_factory=dict)  # replica id -> busy fraction 0..1
    ttft_quantiles_ms: tuple[float, ...] = ()  # TTFT at quantiles 0, 0.01, ..., 1 (101 points)
    tpot_quantiles_ms: tuple[float, ...] = ()
    prefill_time_share: float = math.nan  # share of busy engine time spent on prefill, if known
    error: str = ""  # the simulator failed on this point (counts as missing the SLO)


# simulate(candidate, level, rate_scale) -> SimOutcome. ``rate_scale`` multiplies the workload's rate.
SimulateFn = Callable[[Candidate, int, float], SimOutcome]


@dataclass(frozen=True, slots=True)
class SimPoint:
    """One simulated (candidate, size, traffic) point."""

    candidate: str  # Candidate.key()
    level: int
    replicas: tuple[int, ...]
    num_gpus: int
    usd_per_hour: float
    rate_scale: float
    meets_slo: bool
    violations: tuple[tuple[str, float, float], ...]  # (metric, measured, limit)
    outcome: SimOutcome

    @property
    def ttft_p99_ms(self) -> float:
        return float(self.outcome.summary.get("ttft_p99_ms", math.nan))

    @property
    def tpot_p99_ms(self) -> float:
        return float(self.outcome.summary.get("tpot_p99_ms", math.nan))


@dataclass(frozen=True, slots=True)
class VerifyTask:
    """A unit of work for an executor: search the size of one candidate. Picklable."""

    candidate: Candidate
    start_level: int
    slo: Slo
    usd_per_hour_per_level: tuple[float, ...]  # usd_per_hour of each pool at level 1 (cost is linear in level)
    max_level: int = 64
    max_gpus: int | None = None
    budget_usd_per_hour: float | None = None
    max_sims: int = 7
    rate_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """Result of :func:`verify_candidate`: the best passing point (if any), every point, and why not."""

    candidate: Candidate
    best: SimPoint | None
    points: tuple[SimPoint, ...]
    rejection: Rejection | None


def _violations(slo: Slo, out: SimOutcome) -> tuple[tuple[str, float, float], ...]:
    if out.error:
        return (("simulator_error", math.nan, math.nan),)
    return tuple(slo.violations(out.summary))


def _cap_level(task: VerifyTask) -> int:
    cap = task.max_level
    if task.max_gpus is not None:
        per = task.candidate.num_gpus_at(1)
        cap = min(cap, task.max_gpus // per)
    if task.budget_usd_per_hour is not None:
        per_usd = sum(task.usd_per_hour_per_level)
        if per_usd > 0:
            cap = min(cap, int(task.budget_usd_per_hour / per_usd + 1e-9))
    return cap


def verify_candidate(task: VerifyTask, simulate: SimulateFn) -> VerifyOutcome:
    """Smallest level meeting ``task.slo`` in simulation (see module docstring for the search)."""
    cand = task.candidate
    points: dict[int, SimPoint] = {}

    def run(level: int) -> SimPoint:
        if level not in points:
            out = simulate(cand, level, task.rate_scale)
            viol = _violations(task.slo, out)
            points[level] = SimPoint(
                cand.key(), level, cand.replicas_at(level), cand.num_gpus_at(level),
                level * sum(task.usd_per_hour_per_level), task.rate_scale, not viol, viol, out,
            )
        return points[level]

    cap = _cap_level(task)
    if cap < 1:
        rej = Rejection(cand.key(), "cost", "one replica set already exceeds --max-gpus or the budget", "simulate")
        return VerifyOutcome(cand, None, (), rej)
    level = max(1, min(task.start_level, cap))
    lo, hi = 0, 0  # largest known failing level, smallest known passing level (0 = unknown)
    p = run(level)
    if p.meets_slo:
        hi = level
        if level > 1 and len(points) < task.max_sims:
            if run(level - 1).meets_slo:
                hi = level - 1
            else:
                lo = level - 1
    else:
        lo = level
        while len(points) < task.max_sims:
            nxt = min(cap, max(lo + 1, 2 * lo))
            if nxt <= lo:
                break
            if run(nxt).meets_slo:
                hi = nxt
                break
            lo = nxt
            if nxt >= cap:
                break
    while hi and hi - lo > 1 and len(points) < task.max_sims:
        mid = (lo + hi) // 2
        if run(mid).meets_slo:
            hi = mid
        else:
            lo = mid
    ordered = tuple(points[k] for k in sorted(points))
    if hi:
        return VerifyOutcome(cand, points[hi], ordered, None)
    worst = points[lo] if lo in points else ordered[-1]
    metric, measured, limit = worst.violations[0] if worst.violations else ("slo", math.nan, math.nan)
    at_cap = lo >= cap
    what = f"simulator error: {worst.outcome.error}" if worst.outcome.error else f"{metric} {measured:.0f} > {limit:g}"
    why = (
        f"{what} at {worst.num_gpus} GPUs"
        + (" (largest size allowed by --max-gpus/budget)" if at_cap and cap < task.max_level else "")
        + ("" if at_cap else f" (stopped after {len(points)} simulations)")
    )
    kind = "cost" if at_cap and cap < task.max_level else "slo"
    return VerifyOutcome(cand, None, ordered, Rejection(cand.key(), kind, why, "simulate", worst.num_gpus))


def capacity_of(
    cand: Candidate,
    level: int,
    slo: Slo,
    simulate: SimulateFn,
    *,
    usd_per_hour: float,
    lo: float = 0.05,
    hi: float = 64.0,
    max_sims: int = 8,
) -> tuple[float, list[SimPoint]]:
    """Largest traffic multiple (of the workload's rate) this sized fleet carries at ``slo`` (0 if none).

    Geometric bisection on ``[lo, hi]`` starting at 1x; ``max_sims`` simulations at most.
    """
    pts: list[SimPoint] = []

    def ok(scale: float) -> bool:
        out = simulate(cand, level, scale)
        viol = _violations(slo, out)
        pts.append(SimPoint(cand.key(), level, cand.replicas_at(level), cand.num_gpus_at(level), usd_per_hour,
                            scale, not viol, viol, out))
        return not viol

    good, bad = 0.0, math.inf
    scale = 1.0
    for _ in range(max_sims):
        if ok(scale):
            good = scale
            scale = min(hi, scale * 2.0) if math.isinf(bad) else math.sqrt(scale * bad)
        else:
            bad = scale
            scale = max(lo, scale / 2.0) if good == 0.0 else math.sqrt(good * scale)
        if good and not math.isinf(bad) and bad / good < 1.1:
            break
        if scale in (lo, hi) and any(abs(p.rate_scale - scale) < 1e-12 for p in pts):
            break
    return good, pts


def pareto_front(points: list[SimPoint]) -> list[SimPoint]:
    """Points not dominated in (usd_per_hour, ttft_p99_ms, tpot_p99_ms), cheapest first (only SLO passers)."""
    cands = [p for p in points if p.meets_slo and math.isfinite(p.ttft_p99_ms) and math.isfinite(p.tpot_p99_ms)]

    def dominated(a: SimPoint) -> bool:
        for b in cands:
            if b is a:
                continue
            le = b.usd_per_hour <= a.usd_per_hour and b.ttft_p99_ms <= a.ttft_p99_ms and b.tpot_p99_ms <= a.tpot_p99_ms
            lt = b.usd_per_hour < a.usd_per_hour or b.ttft_p99_ms < a.ttft_p99_ms or b.tpot_p99_ms < a.tpot_p99_ms
            if le and lt:
                return True
        return False

    front = [p for p in cands if not dominated(p)]
    seen: set[tuple[float, float, float]] = set()
    out: list[SimPoint] = []
    for p in sorted(front, key=lambda p: (p.usd_per_hour, p.ttft_p99_ms, p.tpot_p99_ms, p.candidate)):
        k = (p.usd_per_hour, p.ttft_p99_ms, p.tpot_p99_ms)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out
