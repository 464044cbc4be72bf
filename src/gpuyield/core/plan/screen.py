"""The analytic screen: estimate every candidate's size, cost and p99 latencies without simulating.

For an aggregated candidate with ``N`` replicas and the workload's sizing rate ``lam`` (requests/s):

1. Per replica, steady-state continuous batching at concurrency ``B``: each step decodes ``B`` sequences
   and prefills ``p(B) = B * isl_uncached / osl`` prompt tokens (each request needs ``isl_uncached`` prefill
   tokens per ``osl`` decode steps). The step time ``T(B)`` comes from the performance model.
2. ``B`` is capped by ``max_num_seqs``, by KV capacity (``B * (isl + osl/2 + fixed) <= kv_capacity_tokens``,
   ``fixed`` being the bounded sliding-window / linear-attention cache of a sequence in tokens) and by
   the token budget (``B x d + p(B) <= max_num_batched_tokens``, ``d`` = 1, or K + 1 with speculative
   decoding).
3. The operating concurrency solves Little's law ``B = (lam / N) * osl * T(B)``; no solution under the cap
   means overload. TPOT ~ ``T(B_op)``.
4. TTFT p99 = queueing wait + own prefill. Wait for a free sequence slot: Erlang C (M/M/c with ``c`` = the
   concurrency cap, service time ``osl * T``) with an exponential tail and Kingman's burst factor
   ``(1 + c_a^2) / 2``. Wait behind other prefills: Kingman's G/G/1 on the prefill work. Own prefill: the
   p99 prompt in chunks of the free token budget, each chunk a mixed step.

Disaggregated ``xPyD`` candidates: the prefill pool is a token-throughput server (step time at the full
token budget); the decode pool runs steps 1-3 without prefill. TTFT adds the KV transfer of the prompt, the
wait for a decode seat (Erlang C on the decode pool's sequence slots, as in step 4) and one decode step: the
first token streams from the decode engine.

The screen only ranks; the simulator verifies. Estimates err towards optimism by design (a candidate the
screen wrongly discards is lost; one it wrongly keeps only costs a simulation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gpuyield.core.plan.profile import WorkloadProfile
from gpuyield.core.plan.space import Candidate, PoolShape, Rejection
from gpuyield.core.plan.spec import Slo

__all__ = [
    "PerfFor",
    "ReplicaPerf",
    "ScreenEstimate",
    "StepModel",
    "UsdPerGpuHour",
    "erlang_c",
    "screen_candidate",
    "select_for_verification",
]

_P99_TAIL = math.log(100.0)  # exponential tail: P(W > t) = P_wait * exp(-t / mean) -> p99 at ln(100/P_wait)
_TPOT_P99_FACTOR = 1.15
# Among candidates the screen cannot tell apart (equal estimated cost), which router to simulate first:
# load- and cache-aware routers before blind ones (the screen does not model load imbalance).
_ROUTER_PREFERENCE = {"prefix_affinity": 0, "cost": 1, "least_outstanding": 2, "least_kv": 3, "round_robin": 4}  # p99 of per-request mean step time over the mean step time at the sizing rate


class StepModel(Protocol):
    """The one call the screen makes on the performance model (seconds per engine step); a model may also say
    ``decode_budget_tokens`` (step-budget tokens per decoding sequence, 1 when absent)."""

    def step_time_s(
        self, num_prefill_tokens: int, prefill_attn_tokens_sq: int, num_decode_seqs: int, decode_ctx_tokens: int
    ) -> float: ...


@dataclass(frozen=True, slots=True)
class ReplicaPerf:
    """What the screen needs about one replica shape."""

    step: StepModel
    kv_capacity_tokens: int  # KV cache capacity of one replica, tokens
    kv_bytes_per_token: float  # for the P/D transfer time
    kv_transfer_bytes_per_s: float  # prefill -> decode link bandwidth per replica
    first_token_overhead_s: float = 0.0  # the engine family's, as the simulator adds it to every first token
    # the bounded cache each sequence also holds (sliding windows, linear-attention state), in tokens of the
    # growing cache (MemoryPlan.fixed_tokens_per_seq): added to every sequence's context for the KV cap
    kv_fixed_tokens_per_seq: float = 0.0
    # the same for a sequence of a given length (windows filled to min(length, window); MemoryPlan.fixed_tokens_for);
    # None: kv_fixed_tokens_per_seq whatever the length
    kv_fixed_tokens_for: Callable[[int], float] | None = None

    def fixed_tokens_at(self, context_tokens: float) -> float:
        """Bounded cache of a sequence of ``context_tokens`` tokens, in tokens of the growing cache."""
        if self.kv_fixed_tokens_for is None:
            return self.kv_fixed_tokens_per_seq
        return float(self.kv_fixed_tokens_for(int(math.ceil(context_tokens))))
    # bytes of one prompt's cache, all layer kinds (ModelSpec.kv_bytes_for_context at the pool's KV dtype), for
    # the P/D transfer; None: prompt tokens x kv_bytes_per_token
    kv_bytes_for_prompt: Callable[[int], float] | None = None
    # prefix-cache hits count in whole multiples of this many tokens (vLLM's hybrid models: MemoryPlan.
    # hybrid_block_tokens); 0 = any block
    prefix_hit_tokens: int = 0


# perf_for(pool) -> ReplicaPerf, or a one-line reason it does not fit.
PerfFor = Callable[[PoolShape], "ReplicaPerf | str"]
# price_for(gpu_id) -> USD per GPU-hour.
UsdPerGpuHour = Callable[[str], float]


@dataclass(frozen=True, slots=True)
class ScreenEstimate:
    """The screen's verdict on one candidate."""

    candidate: Candidate
    feasible: bool
    level: int  # first size to simulate (0 when infeasible)
    num_gpus: int
    usd_per_hour: float
    ttft_p99_ms: float  # estimates at that size
    tpot_p99_ms: float
    batch_per_replica: float  # operating concurrency
    utilisation: float  # estimated busy fraction of the limiting pool
    prefill_time_share: float  # share of engine time spent on prefill
    rejection: Rejection | None = None


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability of waiting in M/M/c with ``servers`` servers and ``offered_load`` = lam * S (Erlangs)."""
    if offered_load <= 0:
        return 0.0
    if offered_load >= servers:
        return 1.0
    # Erlang B by the stable recursion, then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    rho = offered_load / servers
    return b / (1 - rho + rho * b)


def _attn_sq(new_tokens: float, ctx_tokens: float) -> int:
    """Prefill attention work: new tokens attend to the context before them plus themselves (causal)."""
    return int(new_tokens * (ctx_tokens - new_tokens) + new_tokens * new_tokens / 2.0)


@dataclass(frozen=True, slots=True)
class _Agg:
    ok: bool
    why: str
    ttft_ms: float
    tpot_ms: float
    b_op: float
    util: float
    prefill_share: float


def _operating_batch(lam: float, osl: float, t_step: Callable[[float], float], b_max: float) -> float | None:
    """Running batch B at the Little's-law fixed point B = lam * osl * T(B), or None when even ``b_max`` is too few.

    The right-hand side is monotone in B, so bisection on [0, b_max] (30 halvings) finds it; B is at least 1.
    """
    if lam * osl * t_step(b_max) > b_max:
        return None
    lo, hi = 0.0, b_max
    for _ in range(30):
        mid = (lo + hi) / 2
        if lam * osl * t_step(max(mid, 1.0)) > mid:
            lo = mid
        else:
            hi = mid
    return max(1.0, hi)


def _aggregated_at(pool: PoolShape, perf: ReplicaPerf, prof: WorkloadProfile, hit: float, replicas: int) -> _Agg:
    lam = prof.sizing_rate_per_s / replicas
    isl, osl = prof.input_mean_tokens, max(1.0, prof.output_mean_tokens)
    isl_u = max(1.0, isl * (1.0 - hit))
    ctx = isl + osl / 2.0
    step = perf.step

    def t_step(b: float) -> float:
        p = b * isl_u / osl
        # p prefill tokens per step are chunks of prompts of mean length isl with (1-hit) uncached.
        num_chunks = max(1.0, p / max(1.0, isl_u))
        attn = int(num_chunks * _attn_sq(min(p, isl_u), isl))
        return step.step_time_s(int(round(p)), attn, max(1, int(round(b))), int(round(b * ctx)))

    fixed = perf.fixed_tokens_at(isl + osl)  # held for the request's whole life, at its final length
    b_mem = perf.kv_capacity_tokens / (ctx + fixed)
    # a decoding request takes decode_budget_tokens of the budget (K + 1 with speculative decoding)
    b_budget = pool.max_num_batched_tokens / (float(getattr(step, "decode_budget_tokens", 1)) + isl_u / osl)
    b_max = max(1.0, min(float(pool.max_num_seqs), b_mem, b_budget))
    if b_mem < 1.0:
        held = f" + {fixed:.0f} bounded" if fixed else ""
        return _Agg(False, f"memory: KV capacity {perf.kv_capacity_tokens} tokens < one mean request ({ctx:.0f}{held})",
                    math.inf, math.inf, 0, 0, 0)
    b_op_or_none = _operating_batch(lam, osl, t_step, b_max)
    if b_op_or_none is None:
        return _Agg(False, f"overload: {replicas} replicas carry < {prof.sizing_rate_per_s:.2f} req/s", math.inf,
                    math.inf, b_max, 1.0, 0)
    b_op = b_op_or_none
    t_op = t_step(b_op)
    tpot_ms = t_op * 1000.0 * _TPOT_P99_FACTOR
    wait_slot = _slot_wait_p99_s(lam, b_max, osl * t_step(b_max), prof.arrival_scv)
    if math.isinf(wait_slot):
        return _Agg(False, f"overload: {replicas} replicas' {int(b_max)} whole sequence slots each carry < "
                           f"{prof.sizing_rate_per_s:.2f} req/s", math.inf, math.inf, b_op, 1.0, 0)
    burst = (1.0 + prof.arrival_scv) / 2.0
    # Wait behind other prefills: G/G/1 on prefill work (Kingman), p99 by an exponential tail.
    free_budget = max(1.0, pool.max_num_batched_tokens - b_op)
    t_decode_only = step.step_time_s(0, 0, max(1, int(round(b_op))), int(round(b_op * ctx)))
    prefill_s_per_token = max(0.0, (t_op - t_decode_only)) / max(1.0, b_op * isl_u / osl)
    rho_p = lam * isl_u * prefill_s_per_token
    if rho_p >= 1.0:
        return _Agg(False, "overload: prefill saturates", math.inf, math.inf, b_op, 1.0, 1.0)
    mean_prefill_s = isl_u * prefill_s_per_token
    wait_prefill = burst * rho_p / (1.0 - rho_p) * mean_prefill_s * _P99_TAIL
    # Own prefill of the p99 prompt, in chunks of the free budget, each a mixed step.
    isl99_u = max(1.0, prof.input_p99_tokens * (1.0 - hit))
    chunk = min(isl99_u, free_budget)
    n_chunks = math.ceil(isl99_u / chunk)
    t_chunk = step.step_time_s(int(chunk), _attn_sq(chunk, prof.input_p99_tokens), max(1, int(round(b_op))),
                               int(round(b_op * ctx)))
    ttft_ms = (wait_slot + wait_prefill + n_chunks * t_chunk + perf.first_token_overhead_s) * 1000.0
    util = min(1.0, b_op / b_max) if b_max > 0 else 1.0
    share = (t_op - t_decode_only) / t_op if t_op > 0 else 0.0
    return _Agg(True, "", ttft_ms, tpot_ms, b_op, util, min(1.0, max(0.0, share)))


def _slot_wait_p99_s(lam: float, b_max: float, s_slot: float, arrival_scv: float) -> float:
    """p99 wait for a free sequence slot (seconds): M/M/c on ``int(b_max)`` slots with service time ``s_slot``
    (a request's time in its slot when the slots are full) by Erlang C, an exponential tail and Kingman's burst
    factor ``(1 + c_a^2) / 2``. An aggregated replica's slots and a decode pool's seats queue alike. A load the
    whole slots cannot carry (a fractional ``b_max``, set by KV memory, lets the batch fixed point pass just below
    it) waits without bound: ``inf``."""
    slots = max(1, int(b_max))
    if lam * s_slot >= slots:
        return math.inf
    pw = erlang_c(slots, lam * s_slot)
    if pw <= 0.01:
        return 0.0
    return (1.0 + arrival_scv) / 2.0 * s_slot / (slots - lam * s_slot) * math.log(pw / 0.01)


def _decode_pool_at(
    pool: PoolShape, perf: ReplicaPerf, prof: WorkloadProfile, replicas: int
) -> tuple[bool, float, float, float, float]:
    """(ok, tpot_ms, b_op, util, seat_wait_ms) of a decode-only pool. ``seat_wait_ms``: the p99 wait for a decode
    seat (a prefilled request whose pool is full waits before its first decode step, so in its TTFT)."""
    lam = prof.sizing_rate_per_s / replicas
    isl, osl = prof.input_mean_tokens, max(1.0, prof.output_mean_tokens)
    ctx = isl + osl / 2.0

    def t_step(b: float) -> float:
        return perf.step.step_time_s(0, 0, max(1, int(round(b))), int(round(b * ctx)))

    b_mem = perf.kv_capacity_tokens / (ctx + perf.fixed_tokens_at(isl + osl))
    if b_mem < 1.0:  # the decode pool's KV cannot hold one mean request: more replicas will not help
        return False, math.inf, 0.0, math.inf, math.inf
    b_max = max(1.0, min(float(pool.max_num_seqs), b_mem))
    b_op = _operating_batch(lam, osl, t_step, b_max)
    if b_op is None:
        return False, math.inf, b_max, 1.0, math.inf
    wait_seat = _slot_wait_p99_s(lam, b_max, osl * t_step(b_max), prof.arrival_scv)
    if math.isinf(wait_seat):  # whole seats cannot carry the load: overloaded like a too-small batch cap
        return False, math.inf, b_max, 1.0, math.inf
    return True, t_step(b_op) * 1000.0 * _TPOT_P99_FACTOR, b_op, b_op / b_max, wait_seat * 1000.0


def _prefill_pool_at(
    pool: PoolShape, perf: ReplicaPerf, prof: WorkloadProfile, hit: float, replicas: int
) -> tuple[bool, float, float]:
    """(ok, ttft_ms without transfer, utilisation) of a prefill-only pool."""
    lam = prof.sizing_rate_per_s / replicas
    isl_u = max(1.0, prof.input_mean_tokens * (1.0 - hit))
    budget = pool.max_num_batched_tokens
    t_full = perf.step.step_time_s(budget, int(budget / max(1.0, isl_u)) * _attn_sq(min(isl_u, budget), prof.input_mean_tokens), 0, 0)
    tokens_per_s = budget / t_full
    s = isl_u / tokens_per_s
    rho = lam * s
    if rho >= 0.95:
        return False, math.inf, 1.0
    burst = (1.0 + prof.arrival_scv) / 2.0
    wait = burst * rho / (1.0 - rho) * s * _P99_TAIL
    isl99_u = max(1.0, prof.input_p99_tokens * (1.0 - hit))
    chunk = min(isl99_u, float(budget))
    n_chunks = math.ceil(isl99_u / chunk)
    own = n_chunks * perf.step.step_time_s(int(chunk), _attn_sq(chunk, prof.input_p99_tokens), 0, 0)
    return True, (wait + own + perf.first_token_overhead_s) * 1000.0, rho


def _hit_for(
    cand: Candidate, pool: PoolShape, prof: WorkloadProfile, replicas: int, perf: ReplicaPerf | None = None
) -> float:
    if not pool.enable_prefix_caching:
        return 0.0
    hit = prof.hit_fraction(replicas, affinity=cand.router == "prefix_affinity")
    if perf is not None and perf.prefix_hit_tokens > 0 and hit > 0:
        # hits in whole granules: a request's hit loses half a granule on average (at most all of it)
        isl = max(1.0, prof.input_mean_tokens)
        hit = max(0.0, hit - min(hit, perf.prefix_hit_tokens / 2.0 / isl))
    return hit


def screen_candidate(
    cand: Candidate,
    prof: WorkloadProfile,
    slo: Slo,
    perf_for: PerfFor,
    price_for: UsdPerGpuHour,
    *,
    max_level: int = 64,
    max_gpus: int | None = None,
    budget_usd_per_hour: float | None = None,
) -> ScreenEstimate:
    """Smallest size at which the estimates meet ``slo``, with its cost; or why there is none."""
    perfs: list[ReplicaPerf] = []
    for pool in cand.pools:
        p = perf_for(pool)
        if isinstance(p, str):
            return _reject(cand, "memory", p)
        perfs.append(p)
    ttft_lim = slo.ttft_p99_ms if slo.ttft_p99_ms is not None else math.inf
    tpot_lim = slo.tpot_p99_ms if slo.tpot_p99_ms is not None else math.inf
    # Lower bounds that no size can beat: one decode step of one sequence, the p99 prompt's prefill alone.
    isl, osl = prof.input_mean_tokens, max(1.0, prof.output_mean_tokens)
    decode_pool = cand.pools[-1]
    min_tpot_ms = perfs[-1].step.step_time_s(0, 0, 1, int(isl + osl / 2)) * 1000.0
    if min_tpot_ms > tpot_lim:
        return _reject(cand, "slo", f"tpot_p99_ms >= {min_tpot_ms:.1f} (one sequence alone on {decode_pool.gpu_id} "
                                    f"tp{decode_pool.tp}) > {tpot_lim:g}")
    first = cand.pools[0]
    isl99 = max(1.0, prof.input_p99_tokens * (1.0 - _hit_for(cand, first, prof, 1, perfs[0])))
    chunk = min(isl99, float(first.max_num_batched_tokens))
    min_ttft_ms = (
        math.ceil(isl99 / chunk) * perfs[0].step.step_time_s(int(chunk), _attn_sq(chunk, prof.input_p99_tokens), 0, 0)
        + perfs[0].first_token_overhead_s
    ) * 1000.0
    if min_ttft_ms > ttft_lim:
        return _reject(cand, "slo", f"ttft_p99_ms >= {min_ttft_ms:.0f} (p99 prompt prefilled alone on {first.gpu_id} "
                                    f"tp{first.tp}) > {ttft_lim:g}")
    memo: dict[int, ScreenEstimate | str] = {}

    def at(level: int) -> ScreenEstimate | str:
        """The estimate at ``level`` if it meets the SLO, else why not."""
        if level not in memo:
            memo[level] = _at_level(cand, prof, perfs, price_for, level, ttft_lim, tpot_lim)
        return memo[level]

    # Meeting the SLO is (near) monotone in the size: double until a pass, then bisect down.
    lo, hi, level = 0, 0, 1
    while level <= max_level:
        if isinstance(at(level), ScreenEstimate):
            hi = level
            break
        lo, level = level, level * 2
    if not hi and lo < max_level:
        if isinstance(at(max_level), ScreenEstimate):
            hi = max_level
        else:
            lo = max_level
    if not hi:
        why = at(lo)
        if isinstance(why, str) and why.startswith("memory"):
            return _reject(cand, "memory", why)
        return _reject(cand, "slo", f"{why} (screen, up to {cand.num_gpus_at(max_level)} GPUs)")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if isinstance(at(mid), ScreenEstimate):
            hi = mid
        else:
            lo = mid
    est = at(hi)
    assert isinstance(est, ScreenEstimate)
    if max_gpus is not None and est.num_gpus > max_gpus:
        return _reject(cand, "cost", f"needs {est.num_gpus} GPUs (estimated) > --max-gpus {max_gpus}", est.num_gpus)
    if budget_usd_per_hour is not None and est.usd_per_hour > budget_usd_per_hour:
        return _reject(cand, "cost", f"over budget: ${est.usd_per_hour:.2f}/h (estimated) > ${budget_usd_per_hour:.2f}/h",
                       est.num_gpus)
    return est


def _at_level(
    cand: Candidate,
    prof: WorkloadProfile,
    perfs: list[ReplicaPerf],
    price_for: UsdPerGpuHour,
    level: int,
    ttft_lim: float,
    tpot_lim: float,
) -> ScreenEstimate | str:
    gpus = cand.num_gpus_at(level)
    usd = sum(
        n * pool.gpus_per_replica * price_for(pool.gpu_id)
        for n, pool in zip(cand.replicas_at(level), cand.pools, strict=True)
    )
    if not cand.disaggregated:
        pool = cand.pools[0]
        n = cand.replicas_at(level)[0]
        a = _aggregated_at(pool, perfs[0], prof, _hit_for(cand, pool, prof, n, perfs[0]), n)
        if not a.ok:
            return a.why
        if a.ttft_ms <= ttft_lim and a.tpot_ms <= tpot_lim:
            return ScreenEstimate(cand, True, level, gpus, usd, a.ttft_ms, a.tpot_ms, a.b_op, a.util, a.prefill_share)
        return f"estimated ttft_p99_ms {a.ttft_ms:.0f} / tpot_p99_ms {a.tpot_ms:.0f} at {gpus} GPUs"
    pp, dp = cand.pools
    n_p, n_d = cand.replicas_at(level)
    ok_p, ttft_ms, util_p = _prefill_pool_at(pp, perfs[0], prof, _hit_for(cand, pp, prof, n_p, perfs[0]), n_p)
    ok_d, tpot_ms, b_op, util_d, seat_wait_ms = _decode_pool_at(dp, perfs[1], prof, n_d)
    if not ok_p:
        return f"prefill pool overloaded at {gpus} GPUs"
    if not ok_d:
        if math.isinf(util_d):
            return f"memory: decode pool KV capacity {perfs[1].kv_capacity_tokens} tokens < one mean request"
        return f"decode pool overloaded at {gpus} GPUs"
    dperf = perfs[1]
    prompt_bytes = (
        dperf.kv_bytes_for_prompt(int(math.ceil(prof.input_p99_tokens)))
        if dperf.kv_bytes_for_prompt is not None
        else prof.input_p99_tokens * dperf.kv_bytes_per_token
    )
    transfer_ms = prompt_bytes / dperf.kv_transfer_bytes_per_s * 1000.0
    # the first token streams from the decode engine: prefill, transfer, a wait for a decode seat, one decode step
    ttft_total = ttft_ms + transfer_ms + seat_wait_ms + tpot_ms / _TPOT_P99_FACTOR
    if ttft_total <= ttft_lim and tpot_ms <= tpot_lim:
        usd_p = n_p * pp.gpus_per_replica * price_for(pp.gpu_id)
        return ScreenEstimate(cand, True, level, gpus, usd, ttft_total, tpot_ms, b_op, max(util_p, util_d),
                              usd_p / usd if usd > 0 else 0.5)
    return f"estimated ttft_p99_ms {ttft_total:.0f} / tpot_p99_ms {tpot_ms:.0f} at {gpus} GPUs"


def _reject(cand: Candidate, kind: str, why: str, gpus: int | None = None) -> ScreenEstimate:
    rej = Rejection(cand.key(), kind, why, stage="screen", num_gpus=gpus)
    return ScreenEstimate(cand, False, 0, gpus or 0, math.inf, math.inf, math.inf, 0.0, 0.0, 0.0, rej)


def select_for_verification(estimates: list[ScreenEstimate], k: int) -> list[ScreenEstimate]:
    """The ``k`` cheapest feasible estimates, kept diverse: at most one per structure (GPU types, parallelism,
    layout) in a first pass, then two, and so on. Ties break on latency headroom, then on the key."""
    feasible = sorted(
        (e for e in estimates if e.feasible),
        key=lambda e: (
            round(e.usd_per_hour, 6),
            _ROUTER_PREFERENCE.get(e.candidate.router, 9),
            # engine defaults first among equals: prefix caching on, no offload tier
            sum((not p.enable_prefix_caching) + (p.kv_offload != "none") for p in e.candidate.pools),
            e.ttft_p99_ms + 20.0 * e.tpot_p99_ms,
            e.candidate.key(),
        ),
    )
    chosen: list[ScreenEstimate] = []
    taken: set[str] = set()
    per_structure: dict[tuple[object, ...], int] = {}
    cap = 1
    while len(chosen) < k and len(taken) < len(feasible):
        before = len(chosen)
        for e in feasible:
            if len(chosen) >= k:
                break
            key = e.candidate.key()
            s = e.candidate.structure()
            if key in taken or per_structure.get(s, 0) >= cap:
                continue
            chosen.append(e)
            taken.add(key)
            per_structure[s] = per_structure.get(s, 0) + 1
        cap += 1
        if len(chosen) == before and cap > len(feasible) + 1:
            break
    return chosen
