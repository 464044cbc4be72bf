"""The planner's search: enumerate -> analytic screen -> simulate the top K (plus the naive baseline) ->
choose, and the economics of the choice.

Modes (:class:`~gpuyield.core.plan.spec.PlanMode`):

- ``min-cost``: every screened candidate gets the smallest size its estimates allow; the ``top_k`` cheapest
  (kept diverse) and the naive baseline are verified by :func:`~gpuyield.core.plan.verify.verify_candidate`.
  The plan is the cheapest verified point; the naive deployment is verified with the candidates and chosen when
  it is the cheapest (its engine defaults may lie outside the knobs searched), so the plan is never dearer than
  naive.
- ``max-goodput`` (``--budget-usd-per-hour``) and ``capacity`` (``--max-gpus``, the fleet): each of the top
  candidates is sized to the largest level the budget / fleet allows, and
  :func:`~gpuyield.core.plan.verify.capacity_of` finds the largest traffic multiple it carries at the SLO.
  The plan is the candidate carrying the most.

The naive baseline (issue 5): one TP1 replica per GPU on the cheapest allowed GPU type whose weights fit at
TP1, the engine's defaults (vLLM v1: prefix caching and chunked prefill on), round-robin routing, and just
enough replicas to meet the SLO in simulation. When that GPU type cannot meet the SLO at any size (a screen
lower bound such as the p99 prompt's prefill alone exceeding the TTFT target, or no passing size in
simulation), the next cheapest type is used, then TP2, TP4, TP8 (what a user would try next); the plan's
notes name every step. If TP1 fits on no allowed GPU, naive starts at the smallest TP that fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gpuyield.core.plan.economics import FleetEconomics, GpuPrice, PoolCost, api_economics, fleet_economics
from gpuyield.core.plan.executor import Executor
from gpuyield.core.plan.profile import WorkloadProfile
from gpuyield.core.plan.screen import PerfFor, ScreenEstimate, screen_candidate, select_for_verification
from gpuyield.core.plan.space import Candidate, PoolShape, Rejection, SearchSpace, enumerate_candidates
from gpuyield.core.plan.spec import ApiPrice, PlanMode, PlanRequest, Slo
from gpuyield.core.plan.verify import (
    SimPoint,
    SimulateFn,
    VerifyOutcome,
    VerifyTask,
    capacity_of,
    pareto_front,
    verify_candidate,
)
from gpuyield.errors import InfeasiblePlanError

__all__ = [
    "CapacityOutcome",
    "CapacityTask",
    "PlanInputs",
    "PlanProgress",
    "PlanResult",
    "naive_candidate",
    "naive_candidates",
    "run_plan",
]


class PlanProgress(Protocol):
    """Progress reporting hooks (the CLI draws a bar; tests pass nothing)."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """Everything the search needs besides the executor, as plain callables and data."""

    request: PlanRequest
    profile: WorkloadProfile
    space: SearchSpace
    perf_for: PerfFor  # pool shape -> ReplicaPerf or a reason it does not fit
    price_for: Callable[[str], GpuPrice]  # gpu id -> price of one GPU-hour with source and as_of
    naive_pool: Callable[[str, int], PoolShape]  # (gpu id, tp) -> pool with the engine's default knobs
    fits: Callable[[str, int, int, str, str], str | None]  # see space.FitCheck
    supports_precision: Callable[[str, str], bool] | None = None
    api_price: ApiPrice | None = None


@dataclass(frozen=True, slots=True)
class CapacityTask:
    """Find the traffic multiple one sized candidate carries (capacity / max-goodput). Picklable."""

    candidate: Candidate
    level: int
    slo: Slo
    usd_per_hour: float
    max_sims: int = 7


@dataclass(frozen=True, slots=True)
class CapacityOutcome:
    candidate: Candidate
    level: int
    rate_scale: float  # largest traffic multiple meeting the SLO (0 = not even the smallest tried)
    points: tuple[SimPoint, ...]


@dataclass(slots=True)
class PlanResult:
    """Everything ``plan.json`` and ``report.html`` show."""

    mode: PlanMode
    best_candidate: Candidate
    best: SimPoint
    naive_candidate: Candidate | None
    naive: SimPoint | None
    pareto: list[SimPoint]
    simulated: list[SimPoint]
    screened_top: list[ScreenEstimate]
    rejections: list[Rejection]
    economics: dict[str, FleetEconomics]  # "plan", "naive", "api"
    stats: dict[str, float]
    capacity_rate_scale: float | None = None  # capacity / max-goodput modes
    notes: list[str] = field(default_factory=list)


def _verify_item(task: VerifyTask, simulate: SimulateFn) -> VerifyOutcome:
    return verify_candidate(task, simulate)


def _capacity_item(task: CapacityTask, simulate: SimulateFn) -> CapacityOutcome:
    scale, pts = capacity_of(task.candidate, task.level, task.slo, simulate,
                             usd_per_hour=task.usd_per_hour, max_sims=task.max_sims)
    return CapacityOutcome(task.candidate, task.level, scale, tuple(pts))


def naive_candidates(inp: PlanInputs) -> tuple[list[Candidate], str]:
    """Naive deployment shapes in the order a user would try them, and a note (or why none fits).

    TP1 on each allowed GPU type, cheapest first; then (only used when no TP1 shape can meet the SLO at any
    size, e.g. a prompt too long to prefill within the TTFT target on one GPU) TP2, TP4, TP8, cheapest per
    replica first. The first shape is the naive baseline; later ones are used in order when an earlier one
    cannot meet the SLO at any size (see :func:`run_plan`), and the plan's notes say so.
    """
    reasons: list[str] = []
    out: list[Candidate] = []
    first_tp = 0
    for tp in (1, 2, 4, 8):
        fitting: list[tuple[float, str, PoolShape]] = []
        for gpu in inp.request.gpu_ids:
            pool = inp.naive_pool(gpu, tp)
            perf = inp.perf_for(pool)
            if isinstance(perf, str):
                reasons.append(f"{gpu} tp{tp}: {perf}")
                continue
            fitting.append((inp.price_for(gpu).usd_per_gpu_hour * tp, gpu, pool))
        fitting.sort(key=lambda t: (t[0], t[1]))
        if fitting and not first_tp:
            first_tp = tp
        out.extend(Candidate((f[2],), "round_robin") for f in fitting)
    if not out:
        return [], "; ".join(reasons[:3])
    return out, ("" if first_tp == 1 else f"TP1 fits on no allowed GPU; naive starts at TP{first_tp}")


def naive_candidate(inp: PlanInputs) -> tuple[Candidate | None, str]:
    """The naive baseline's shape on the cheapest GPU type (first of :func:`naive_candidates`)."""
    cands, note = naive_candidates(inp)
    return (cands[0] if cands else None), note


def _pool_costs(cand: Candidate, level: int, price_for: Callable[[str], GpuPrice]) -> list[PoolCost]:
    return [
        PoolCost(pool.role, pool.gpu_id, n * pool.gpus_per_replica, price_for(pool.gpu_id))
        for n, pool in zip(cand.replicas_at(level), cand.pools, strict=True)
    ]


def _economics(
    label: str, cand: Candidate, point: SimPoint, est: ScreenEstimate | None, inp: PlanInputs, rate_scale: float
) -> FleetEconomics:
    out = point.outcome
    share = out.prefill_time_share
    if not math.isfinite(share):
        share = est.prefill_time_share if est is not None else 0.5
    utils = list(out.replica_utilisation.values())
    util = sum(utils) / len(utils) if utils else (est.utilisation if est is not None else math.nan)
    prof = inp.profile
    return fleet_economics(
        label,
        _pool_costs(cand, point.level, inp.price_for),
        input_tokens_per_s=prof.input_tokens_per_s * rate_scale,
        output_tokens_per_s=prof.output_tokens_per_s * rate_scale,
        prefill_time_share=min(1.0, max(0.0, share)),
        utilisation=util,
        capacity_scale=1.0,
        api=inp.api_price,
    )


def _top_reasons(rejections: Sequence[Rejection], n: int = 5) -> str:
    order = {"simulate": 0, "screen": 1, "enumerate": 2}
    seen: set[str] = set()
    out: list[str] = []
    for r in sorted(rejections, key=lambda r: (order.get(r.stage, 3), r.num_gpus or 0)):
        line = f"{r.kind}: {r.reason} [{r.candidate}]"
        short = f"{r.kind}:{r.reason}"
        if short in seen:
            continue
        seen.add(short)
        out.append(line)
        if len(out) >= n:
            break
    return "; ".join(out)


def run_plan(inp: PlanInputs, executor: Executor, progress: PlanProgress | None = None) -> PlanResult:
    """Run the whole search. Raises :class:`InfeasiblePlanError` (with the top reasons) when nothing fits."""
    prog = progress or _NoProgress()
    req = inp.request
    candidates, rejections = enumerate_candidates(inp.space, inp.fits, inp.supports_precision)
    usd = lambda g: inp.price_for(g).usd_per_gpu_hour  # noqa: E731
    capped = req.mode is PlanMode.MIN_COST
    prog.stage("screening", len(candidates))
    estimates: list[ScreenEstimate] = []
    for cand in candidates:
        est = screen_candidate(
            cand, inp.profile, req.slo, inp.perf_for, usd,
            max_level=req.max_replicas_per_candidate,
            max_gpus=req.max_gpus if capped else None,
            budget_usd_per_hour=req.budget_usd_per_hour if capped else None,
        )
        estimates.append(est)
        if est.rejection is not None:
            rejections.append(est.rejection)
        prog.advance(1)
    top = select_for_verification(estimates, req.top_k)
    if not top and req.mode is PlanMode.MIN_COST:
        # The screen errs towards optimism: when even it finds nothing, simulating cannot help.
        raise InfeasiblePlanError(
            f"no deployment meets --slo {req.slo.describe()} for {req.model_id} on {','.join(req.gpu_ids)} "
            f"(screened {len(estimates)} candidates): {_top_reasons(rejections)}"
        )
    naive_list, naive_note = naive_candidates(inp)
    notes = [naive_note] if naive_note and naive_list else []
    # Skip GPU types the screen proves cannot meet the SLO at any size (e.g. the p99 prompt's prefill alone
    # exceeds the TTFT target); the simulator decides for the rest.
    naive_ests = [screen_candidate(c, inp.profile, req.slo, inp.perf_for, usd, max_level=req.max_replicas_per_candidate)
                  for c in naive_list]
    while len(naive_list) > 1 and not naive_ests[0].feasible:
        why = naive_ests[0].rejection.reason if naive_ests[0].rejection else "infeasible"
        cur, nxt = naive_list[0].pools[0], naive_list[1].pools[0]
        notes.append(f"naive: {cur.gpu_id} tp{cur.tp} cannot meet the SLO ({why}); trying {nxt.gpu_id} tp{nxt.tp}")
        naive_list, naive_ests = naive_list[1:], naive_ests[1:]
    naive = naive_list[0] if naive_list else None
    naive_est = naive_ests[0] if naive_ests else None
    stats: dict[str, float] = {
        "candidates_enumerated": float(len(candidates)),
        "candidates_screened": float(len(estimates)),
        "candidates_feasible_after_screen": float(sum(e.feasible for e in estimates)),
    }
    if req.mode is PlanMode.MIN_COST:
        return _min_cost(inp, executor, prog, top, naive_list, naive_ests, rejections, stats, notes)
    return _max_goodput(inp, executor, prog, estimates, top, naive, naive_est, rejections, stats, notes)


def _verify_task(inp: PlanInputs, est: ScreenEstimate, start_level: int, max_sims: int) -> VerifyTask:
    cand = est.candidate
    per_level = tuple(pool.gpus_per_replica * n * inp.price_for(pool.gpu_id).usd_per_gpu_hour
                      for n, pool in zip(cand.replicas_at(1), cand.pools, strict=True))
    req = inp.request
    return VerifyTask(cand, max(1, start_level), req.slo, per_level, req.max_replicas_per_candidate,
                      req.max_gpus, req.budget_usd_per_hour, max_sims)


def _min_cost(
    inp: PlanInputs,
    executor: Executor,
    prog: PlanProgress,
    top: list[ScreenEstimate],
    naive_list: list[Candidate],
    naive_ests: list[ScreenEstimate],
    rejections: list[Rejection],
    stats: dict[str, float],
    notes: list[str],
) -> PlanResult:
    naive = naive_list[0] if naive_list else None
    naive_est = naive_ests[0] if naive_ests else None
    tasks = [_verify_task(inp, e, e.level, 6) for e in top]
    by_key = {e.candidate.key(): e for e in top}
    naive_idx: int | None = None
    if naive is not None:
        start = naive_est.level if naive_est is not None and naive_est.feasible else 1
        est = naive_est or ScreenEstimate(naive, False, 1, 0, math.inf, math.inf, math.inf, 0, 0, 0)
        naive_task = VerifyTask(naive, start, inp.request.slo, _verify_task(inp, est, start, 10).usd_per_hour_per_level,
                                inp.request.max_replicas_per_candidate, None, None, 10)
        naive_idx = len(tasks)
        tasks.append(naive_task)
    prog.stage("simulating", len(tasks))
    outcomes = executor.map(_verify_item, tasks, prog.advance)
    simulated = [p for o in outcomes for p in o.points]
    for o in outcomes:
        if o.rejection is not None:
            rejections.append(o.rejection)
    naive_out = outcomes[naive_idx] if naive_idx is not None else None
    # A naive GPU type that cannot meet the SLO at any size: the user would move to the next cheapest type.
    k = 1
    while naive_out is not None and naive_out.best is None and k < len(naive_list) and k <= 3:
        why = naive_out.rejection.reason if naive_out.rejection else "no passing size"
        prev, nxt = naive_list[k - 1].pools[0], naive_list[k].pools[0]
        notes.append(f"naive: {prev.gpu_id} tp{prev.tp} did not meet the SLO in simulation ({why}); "
                     f"trying {nxt.gpu_id} tp{nxt.tp}")
        naive, naive_est = naive_list[k], naive_ests[k]
        start = naive_est.level if naive_est.feasible else 1
        t = VerifyTask(naive, start, inp.request.slo, _verify_task(inp, naive_est, start, 8).usd_per_hour_per_level,
                       inp.request.max_replicas_per_candidate, None, None, 8)
        naive_out = executor.map(_verify_item, [t])[0]
        outcomes.append(naive_out)
        simulated.extend(naive_out.points)
        k += 1
    # The plan obeys --max-gpus/--budget; the naive baseline is reported as the user would get it.
    eligible = [o for o in outcomes if o.best is not None and _within_caps(inp, o.best)]
    stats["candidates_simulated"] = float(len(outcomes))
    stats["simulations"] = float(len(simulated))
    if not eligible:
        raise InfeasiblePlanError(
            f"no deployment meets --slo {inp.request.slo.describe()} for {inp.request.model_id} on "
            f"{','.join(inp.request.gpu_ids)}: {_top_reasons(rejections)}"
        )
    best_o = min(eligible, key=lambda o: (o.best.usd_per_hour, o.best.ttft_p99_ms, o.candidate.key()))  # type: ignore[union-attr]
    best = best_o.best
    assert best is not None
    economics = {"plan": _economics("plan", best_o.candidate, best, by_key.get(best_o.candidate.key(), naive_est), inp, 1.0)}
    naive_point = naive_out.best if naive_out is not None else None
    if naive is not None and naive_point is not None:
        economics["naive"] = _economics("naive", naive, naive_point, naive_est, inp, 1.0)
    elif naive is not None:
        notes.append(f"naive baseline found no passing size: {naive_out.rejection.reason if naive_out and naive_out.rejection else '?'}")
    if inp.api_price is not None:
        economics["api"] = api_economics(inp.api_price, input_tokens_per_s=inp.profile.input_tokens_per_s,
                                         output_tokens_per_s=inp.profile.output_tokens_per_s)
    return PlanResult(
        mode=inp.request.mode,
        best_candidate=best_o.candidate,
        best=best,
        naive_candidate=naive,
        naive=naive_point,
        pareto=pareto_front(simulated),
        simulated=simulated,
        screened_top=top,
        rejections=rejections,
        economics=economics,
        stats=stats,
        notes=notes,
    )


def _within_caps(inp: PlanInputs, p: SimPoint) -> bool:
    req = inp.request
    if req.max_gpus is not None and p.num_gpus > req.max_gpus:
        return False
    return not (req.budget_usd_per_hour is not None and p.usd_per_hour > req.budget_usd_per_hour + 1e-9)


def _max_goodput(
    inp: PlanInputs,
    executor: Executor,
    prog: PlanProgress,
    estimates: list[ScreenEstimate],
    top: list[ScreenEstimate],
    naive: Candidate | None,
    naive_est: ScreenEstimate | None,
    rejections: list[Rejection],
    stats: dict[str, float],
    notes: list[str],
) -> PlanResult:
    req = inp.request
    tasks: list[CapacityTask] = []
    shapes = [e.candidate for e in top] + ([naive] if naive is not None else [])
    for cand in shapes:
        per_level_usd = sum(n * p.gpus_per_replica * inp.price_for(p.gpu_id).usd_per_gpu_hour
                            for n, p in zip(cand.replicas_at(1), cand.pools, strict=True))
        cap = req.max_replicas_per_candidate
        if req.max_gpus is not None:
            cap = min(cap, req.max_gpus // cand.num_gpus_at(1))
        if req.budget_usd_per_hour is not None:
            cap = min(cap, int(req.budget_usd_per_hour / per_level_usd + 1e-9))
        if cap < 1:
            rejections.append(Rejection(cand.key(), "cost", "one replica set exceeds the fleet/budget", "simulate"))
            continue
        tasks.append(CapacityTask(cand, cap, req.slo, cap * per_level_usd))
    if not tasks:
        raise InfeasiblePlanError(f"no candidate fits the fleet/budget: {_top_reasons(rejections)}")
    prog.stage("simulating", len(tasks))
    outcomes = executor.map(_capacity_item, tasks, prog.advance)
    simulated = [p for o in outcomes for p in o.points]
    stats["candidates_simulated"] = float(len(tasks))
    stats["simulations"] = float(len(simulated))
    for o in outcomes:
        if o.rate_scale <= 0:
            worst = o.points[-1] if o.points else None
            why = f"{worst.violations[0][0]} {worst.violations[0][1]:.0f} > {worst.violations[0][2]:g}" if worst and worst.violations else "fails"
            rejections.append(Rejection(o.candidate.key(), "slo", f"{why} even at x{worst.rate_scale if worst else 0:g} traffic", "simulate"))
    good = [o for o in outcomes if o.rate_scale > 0]
    if not good:
        raise InfeasiblePlanError(f"no candidate carries any of the traffic at the SLO: {_top_reasons(rejections)}")
    best_o = max(good, key=lambda o: (o.rate_scale, -o.points[0].usd_per_hour, o.candidate.key()))
    best = max((p for p in best_o.points if p.meets_slo), key=lambda p: p.rate_scale)
    by_key = {e.candidate.key(): e for e in estimates}
    economics = {"plan": _economics("plan", best_o.candidate, best, by_key.get(best_o.candidate.key()), inp, best.rate_scale)}
    naive_point = None
    if naive is not None:
        n_out = next((o for o in outcomes if o.candidate == naive), None)
        if n_out is not None and n_out.rate_scale > 0:
            naive_point = max((p for p in n_out.points if p.meets_slo), key=lambda p: p.rate_scale)
            economics["naive"] = _economics("naive", naive, naive_point, naive_est, inp, naive_point.rate_scale)
    if inp.api_price is not None:
        economics["api"] = api_economics(inp.api_price, input_tokens_per_s=inp.profile.input_tokens_per_s * best.rate_scale,
                                         output_tokens_per_s=inp.profile.output_tokens_per_s * best.rate_scale)
    stats["capacity_rate_scale"] = best.rate_scale
    return PlanResult(
        mode=req.mode,
        best_candidate=best_o.candidate,
        best=best,
        naive_candidate=naive,
        naive=naive_point,
        pareto=pareto_front(simulated),
        simulated=simulated,
        screened_top=top,
        rejections=rejections,
        economics=economics,
        stats=stats,
        capacity_rate_scale=best.rate_scale,
        notes=notes,
    )
