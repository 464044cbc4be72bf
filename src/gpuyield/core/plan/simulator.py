"""The verification simulator: a sized candidate -> :func:`gpuyield.core.sim.simulate` on the actual workload
-> :class:`~gpuyield.core.plan.verify.SimOutcome`.

Latency percentiles are computed over *all* requests, a request the fleet rejected counting as infinitely
late: a fleet that turns away more than 1 % of the traffic cannot meet a p99 target, whatever its completed
requests look like.

The prefill share of engine time (which splits the fleet's cost between input and output tokens) is
``sum(uncached prompt tokens x prefill seconds per token at the full token budget) / busy seconds``, per
pool, from the same performance model the simulator used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpuyield.core.plan.context import PlanContext
from gpuyield.core.plan.space import Candidate
from gpuyield.core.plan.spec import Slo
from gpuyield.core.plan.to_deployment import candidate_to_deployment
from gpuyield.core.plan.verify import SimOutcome
from gpuyield.core.sim.simulate import SimResult, SloTarget, simulate
from gpuyield.core.workload.workload import Workload
from gpuyield.errors import GpuyieldError

__all__ = ["SimulatorBinding", "outcome_from_result"]

_QUANTILES = np.linspace(0.0, 100.0, 101)


def _pct(values_ms: np.ndarray, q: float) -> float:
    if values_ms.size == 0:
        return math.nan
    return float(np.percentile(values_ms, q))


def outcome_from_result(res: SimResult, prefill_s_per_token: dict[str, float] | None = None) -> SimOutcome:
    """Summarise one simulation for the planner (see module docstring)."""
    rec = res.records
    s = res.summary
    done = np.isfinite(rec.first_token_s) & np.isfinite(rec.finish_s)
    ttft = np.where(done, (rec.first_token_s - rec.arrival_s) * 1e3, np.inf)
    out_tok = rec.output_tokens
    multi = out_tok > 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_all = np.where(done & multi, (rec.finish_s - rec.first_token_s) / np.maximum(out_tok - 1, 1) * 1e3, np.nan)
    tpot_all = np.where(~done & multi, np.inf, tpot_all)
    tpot = tpot_all[multi]
    e2e = np.where(done, (rec.finish_s - rec.arrival_s) * 1e3, np.inf)
    summary: dict[str, float] = {
        "ttft_p50_ms": _pct(ttft, 50), "ttft_p99_ms": _pct(ttft, 99),
        "tpot_p50_ms": _pct(tpot, 50), "tpot_p99_ms": _pct(tpot, 99),
        "e2e_p99_ms": _pct(e2e, 99),
        "requests": float(s["requests"]), "completed": float(s["completed"]), "rejected": float(s["rejected"]),
        "throughput_output_tok_s": float(s["throughput_output_tok_s"]),
        "goodput_req_s": float(s["goodput_req_s"]), "slo_attainment": float(s["slo_attainment"]),
        "prefix_cache_hit_rate": float(s["prefix_cache_hit_rate"]), "preemptions": float(s["preemptions"]),
        "duration_s": float(s["duration_s"]),
    }
    util = {r["id"]: float(r["busy_frac"]) for r in s["per_replica"]}
    share = math.nan
    if prefill_s_per_token:
        duration = float(s["duration_s"])
        busy = sum(float(r["busy_frac"]) * duration for r in s["per_replica"])
        ids = rec.replica_ids
        prefill_s = 0.0
        uncached = np.maximum(rec.input_tokens - rec.cached_tokens, 0)
        # The replica that did the prefill: prefill_replica for P/D, else the serving replica.
        who = np.where(rec.prefill_replica >= 0, rec.prefill_replica, rec.replica)
        pools = {r["id"]: r["pool"] for r in s["per_replica"]}
        for k in np.unique(who[who >= 0]).tolist():
            pool = pools.get(ids[k])
            per_tok = prefill_s_per_token.get(pool or "", 0.0)
            prefill_s += float(uncached[who == k].sum()) * per_tok
        if busy > 0:
            share = min(1.0, prefill_s / busy)
    fin = lambda a: tuple(float(x) if math.isfinite(x) else float("inf") for x in a)  # noqa: E731
    return SimOutcome(
        summary=summary,
        replica_utilisation=util,
        ttft_quantiles_ms=fin(np.percentile(ttft, _QUANTILES)) if ttft.size else (),
        tpot_quantiles_ms=fin(np.nanpercentile(tpot, _QUANTILES)) if tpot.size and np.isfinite(tpot).any() else (),
        prefill_time_share=share,
    )


@dataclass
class SimulatorBinding:
    """``simulate(candidate, level, rate_scale)`` bound to one workload, catalogue, model, seed and SLO.
    Picklable, so a Ray worker runs exactly what the local executor runs."""

    ctx: PlanContext
    workload: Workload
    seed: int
    slo: Slo

    def deployment(self, cand: Candidate, level: int) -> object:
        prices = {p.gpu_id: self.ctx.price_for(p.gpu_id).usd_per_gpu_hour for p in cand.pools}
        return candidate_to_deployment(cand, level, self.ctx.model.id, engine=self.ctx.engine, prices=prices,
                                       speculative=self.ctx.speculative)

    def _prefill_s_per_token(self, cand: Candidate) -> dict[str, float]:
        out: dict[str, float] = {}
        for pool in cand.pools:
            rp = self.ctx.perf_for(pool)  # the step times the screen and the simulator use (measured scales too)
            pm = rp.step if not isinstance(rp, str) else self.ctx.perf_model(
                pool.gpu_id, pool.tp, pool.pp, pool.ep, pool.weight_precision, pool.kv_dtype, pool.role
            )
            budget = pool.max_num_batched_tokens
            # A full-budget prefill step of ~1k-token prompts: seconds per prompt token.
            chunk = min(budget, 1024)
            attn = (budget // chunk) * int(chunk * chunk / 2)
            out[pool.role] = pm.step_time_s(budget, attn, 0, 0) / budget
        return out

    def __call__(self, cand: Candidate, level: int, rate_scale: float) -> SimOutcome:
        dep = self.deployment(cand, level)
        target = SloTarget(self.slo.ttft_p99_ms, self.slo.tpot_p99_ms, self.slo.e2e_p99_ms)
        try:
            res = simulate(dep, self.workload, self.ctx.catalog, self.seed, target, rate_scale=rate_scale,  # type: ignore[arg-type]
                           calibration=self.ctx.calibration, measured=self.ctx.measured_at is not None,
                           measured_at=self.ctx.measured_at)
        except (RuntimeError, AssertionError, ValueError, GpuyieldError) as exc:
            # One broken point must not sink the search: it counts as a miss, with the simulator's message
            # (recorded in the rejection reasons of plan.json).
            return SimOutcome(summary={}, error=f"{type(exc).__name__}: {exc}")
        return outcome_from_result(res, self._prefill_s_per_token(cand))
