"""Closed-loop steady state of one replica at fixed concurrency: an analytic fixed point of the step model.

This is the fast path ``gpuyield validate`` uses (thousands of rows in seconds). It models what the engine
model does step by step, in expectation:

- **Admission.** At most ``N = min(C, max_num_seqs × attention_dp, KV capacity / (isl + osl/2))`` requests
  run at once (every attention-DP rank has its own scheduler); the other ``C - N`` wait in the queue (Little's
  law gives their wait).
- **Continuous batching.** Every step carries the ``D`` decoding sequences; prompts are computed in chunks
  of at most ``max_num_batched_tokens - D`` tokens mixed into those steps (chunked prefill; ``D x (K + 1)``
  with speculative decoding, ``PerfModel.decode_budget_tokens``).
- **Interference.** While one request decodes, each of the other ``N - 1`` runs one prefill per lifetime;
  that marginal prefill time lands on the decode steps: ``TPOT = t_decode + (N-1) φ Δprefill / (osl-1)``.
- **TTFT** = own prefill steps + wait behind other prompts: the steady-state M/D/1 wait on the prefill
  "server" plus, for a synchronised start (all ``C`` clients start together, as benchmarks do), a share
  ``ttft_sync_weight`` (an engine-family constant fitted on measurements) of the ``(N-1)/2`` prompts ahead.
- **Disaggregated** layouts: TTFT from the prefill pool (no decode interference), TPOT from the decode pool
  (no prefill interference); KV transfer time is added to TTFT. Clients beyond the decode pool's admission
  limit wait after their first token, so that wait is added to TPOT.

The fixed point (lifetime ↔ batch size) converges in a few iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gpuyield.core.perf.model import MemoryPlan, PerfModel
from gpuyield.errors import ConfigError, DoesNotFitError

__all__ = [
    "ClosedLoopResult",
    "estimate_closed_loop",
    "estimate_disaggregated",
    "own_scheduler_limits",
    "prefill_time_s",
    "scheduler_limits",
]


@dataclass(frozen=True, slots=True)
class ClosedLoopResult:
    """Steady-state closed-loop metrics of one deployment (replica or P/D pair of pools)."""

    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    throughput_tok_s: float  # output tokens/s of the deployment estimated
    request_rate_per_s: float
    concurrency: int  # clients (or requests, offline)
    running_seqs: float  # sequences running at once per replica (admission limit applied)
    queue_wait_ms: float
    limited_by: str  # "concurrency" | "max_num_seqs" | "kv_cache"
    memory: MemoryPlan
    method: str = "analytic closed-loop fixed point (gpuyield.core.perf.closed_loop)"
    notes: tuple[str, ...] = field(default_factory=tuple)
    # (max_num_seqs, max_num_batched_tokens) the scheduler ran with (scheduler_limits: given, else the engine's
    # own on its GPU); a P/D pair: the decode pool's sequence limit and the prefill pool's token budget
    scheduler_limits: tuple[int, int] | None = None
    # a P/D pair: the prefill and decode replicas it ran with (AIConfigurator's `0x`: the counts assumed)
    pd_workers: tuple[int, int] | None = None


# the P/D link a KV transfer takes when neither the caller nor the GPU says (GB/s per GPU)
DEFAULT_PD_LINK_GB_S = 25.0


def pd_link_gb_s(decode: PerfModel, kv_transfer_gb_s: float | None = None) -> float:
    """GB/s per GPU of the link a prompt's KV cache crosses from the prefill to the decode pool: the caller's, else
    the decode GPU's inter-node bandwidth, else :data:`DEFAULT_PD_LINK_GB_S`. Every GPU of the smaller pool sends or
    receives its shard in parallel."""
    return float(kv_transfer_gb_s or float(getattr(decode.gpu, "inter_node_gb_s", 0) or 0) or DEFAULT_PD_LINK_GB_S)


def _chunks(isl: int, budget: int) -> list[tuple[int, float]]:
    """(new_tokens, attention work) of each prefill chunk of an ``isl``-token prompt."""
    out: list[tuple[int, float]] = []
    done = 0
    budget = max(1, budget)
    while done < isl:
        n = min(budget, isl - done)
        out.append((n, n * (done + n / 2.0)))
        done += n
    return out


def prefill_time_s(
    perf: PerfModel,
    isl: int,
    num_decode_seqs: float = 0.0,
    decode_ctx_tokens: float = 0.0,
    budget_tokens: int | None = None,
    *,
    alone: bool = True,
) -> tuple[float, float]:
    """(wall time, marginal time) of one prompt's prefill, chunked, mixed with a decode batch.

    The wall time is the prompt's own latency: under attention DP its chunks run on one rank (``alone``; False
    spreads them over the ranks, a replica's prefill throughput). The marginal time is its share of the
    replica's device time (always spread), what it costs the other requests."""
    budget = budget_tokens if budget_tokens is not None else own_scheduler_limits(perf)[1]
    d = int(round(num_decode_seqs))
    s = int(round(decode_ctx_tokens))
    base = perf.step_time_s(0, 0.0, d, s) if d > 0 else 0.0
    ranks = int(getattr(perf, "attention_dp", 1) or 1)
    one_rank = alone and ranks > 1
    wall = 0.0
    marg = 0.0
    # decodes take their share of the token budget (K + 1 each when verifying K draft tokens): the budget is one
    # scheduler's, an attention-DP rank's, next to that rank's share of the decodes; prompts always progress by
    # at least 1/8 of it
    rank_decodes = d // ranks if ranks > 1 else d
    for n, a in _chunks(isl, max(budget // 8, budget - rank_decodes * perf.decode_budget_tokens, 1)):
        t = perf.step_time_s(n, a, d, s)
        wall += perf.step_time_s(n, a, d, s, prefill_seqs=1) if one_rank else t
        marg += t - base
    return wall, marg


def _context_notes(perf: PerfModel, isl: int, osl: int) -> list[str]:
    """A note when a request is longer than the model's context (engines refuse it unless extended)."""
    ctx = getattr(perf.model, "max_position_embeddings", None)
    if ctx and isl + osl > ctx:
        return [
            f"isl + osl = {isl + osl:,} tokens exceeds {perf.model.id}'s context of {ctx:,}: engines refuse such "
            "requests unless the context is extended (e.g. rope scaling); the estimate assumes it was"
        ]
    return []


def _check(isl: int, osl: int) -> None:
    if isl < 1:
        raise ConfigError(f"isl must be >= 1, got {isl}")
    if osl < 1:
        raise ConfigError(f"osl must be >= 1, got {osl}")


def scheduler_limits(
    perf: PerfModel, max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None
) -> tuple[int, int]:
    """The running-sequence limit and the per-step token budget of ``perf``'s scheduler: each one given, else the
    engine's own (:func:`own_scheduler_limits`), under the rule the engine model's configs follow too
    (:func:`gpuyield.core.sim.engine.config.resolve_scheduler_limits`), so the analytic solver, the engine model
    and ``simulate`` answer or refuse the same settings."""
    from gpuyield.core.sim.engine.config import resolve_scheduler_limits  # the simulator imports this module

    own_seqs, own_budget = own_scheduler_limits(perf)
    family = str(getattr(perf, "engine", "vllm")).split(":", 1)[0]  # "trtllm:disagg" -> "trtllm"
    return resolve_scheduler_limits(family, own_seqs, own_budget, max_num_seqs, max_num_batched_tokens)


def own_scheduler_limits(perf: PerfModel) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) ``perf``'s engine runs with when none is given: the calibration's
    pinned limits, else the engine family's defaults on its GPU (``sim/data/engine_families.yaml``), the same
    pair ``simulate``, ``plan`` and the emulator start from."""
    from gpuyield.core.sim.engine.config import scheduler_defaults  # the simulator imports this module

    ec = perf.engine_coeffs
    family = str(getattr(perf, "engine", "vllm")).split(":", 1)[0]
    return scheduler_defaults(family, getattr(perf, "gpu", None), ec.max_num_seqs, ec.max_num_batched_tokens)


def _limits_note(
    perf: PerfModel, seqs: int, budget: int, max_num_seqs: int | None, max_num_batched_tokens: int | None
) -> list[str]:
    """A note when :func:`scheduler_limits` changed a limit the caller gave or the engine's own."""
    own_seqs, own_budget = own_scheduler_limits(perf)
    if seqs != (max_num_seqs or own_seqs):
        return [f"max_num_seqs lowered to the token budget, {budget}: a TensorRT-LLM step carries at most "
                "max_num_tokens tokens, decodes included"]  # fmt: skip
    if budget != (max_num_batched_tokens or own_budget):
        return [f"token budget raised to max_num_seqs, {seqs}: SGLang's chunked-prefill size caps prompt chunks "
                "only, and the model's one budget a step must hold every decode"]  # fmt: skip
    return []


def replica_seq_limit(perf: PerfModel, max_num_seqs: int) -> int:
    """Sequences one replica runs at once under a ``max_num_seqs`` limit: the limit is per scheduler, and every
    attention-DP rank runs its own (the analytic solver's admission and the engine model's replica alike)."""
    return max_num_seqs * int(getattr(perf, "attention_dp", 1) or 1)


def _reserves_whole_output(perf: PerfModel) -> bool:
    """Whether ``perf``'s engine family admits a request only when KV for its whole output fits (TensorRT-LLM's
    GUARANTEED_NO_EVICT: ``kv_admission: max_output`` in ``sim/data/engine_families.yaml``), as the engine model's
    scheduler does."""
    from gpuyield.core.sim.engine.config import (  # the simulator imports this module
        ENGINE_FAMILIES,
        EngineConfig,
    )

    family = perf.family
    return family in ENGINE_FAMILIES and EngineConfig.for_family(family).kv_admission == "max_output"


def _admission(perf: PerfModel, c: int, isl: int, osl: int, mem: MemoryPlan, max_num_seqs: int) -> tuple[int, str]:
    if not mem.fits:
        raise DoesNotFitError(mem.reason)
    mns = replica_seq_limit(perf, max_num_seqs)
    # the growing cache at the mean context; the bounded one at the final length, as the engine model reserves it
    kv_seqs = mem.max_concurrent_seqs(isl + max(1, osl // 2), bounded_tokens=isl + osl)
    if kv_seqs < 1:
        bounded = mem.fixed_tokens_for(isl + osl)
        held = f" plus {bounded:.0f} of bounded cache" if bounded else ""
        raise DoesNotFitError(
            f"KV cache holds {mem.kv_capacity_tokens} tokens, less than one sequence of isl+osl/2="
            f"{isl + osl // 2} tokens{held}"
        )
    n = min(c, mns, kv_seqs)
    limited = "concurrency" if n == c else ("max_num_seqs" if n == mns else "kv_cache")
    return n, limited


def estimate_closed_loop(
    perf: PerfModel,
    isl: int,
    osl: int,
    concurrency: int | None,
    *,
    num_requests: int | None = None,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    num_replicas: int = 1,
) -> ClosedLoopResult:
    """TTFT/TPOT/throughput of ``num_replicas`` identical replicas at ``concurrency`` clients in total.

    ``concurrency=None`` means offline: ``num_requests`` requests all queued at time zero.
    """
    _check(isl, osl)
    offline = concurrency is None
    if offline:
        if not num_requests or num_requests < 1:
            raise ConfigError("offline estimation needs num_requests >= 1")
        c_total = num_requests
    else:
        assert concurrency is not None
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        c_total = concurrency
    if num_replicas < 1:
        raise ConfigError(f"num_replicas must be >= 1, got {num_replicas}")
    c = max(1, math.ceil(c_total / num_replicas))
    ec = perf.engine_coeffs
    seqs, budget = scheduler_limits(perf, max_num_seqs, max_num_batched_tokens)
    mem = perf.memory(gpu_memory_utilization, max_model_len=isl + osl)
    n, limited = _admission(perf, c, isl, osl, mem, seqs)
    ctx_avg = isl + osl / 2.0
    sync_w = 1.0 if offline else ec.ttft_sync_weight

    # fixed point on the fraction of running sequences that are decoding
    frac = 1.0
    tpot = ttft_active = wall = marg = t_dec = 0.0
    for _ in range(30):
        d = max(0.0, n * frac - 1.0) if n > 1 else 0.0  # decodes alongside a given request's prefill
        wall, marg = prefill_time_s(perf, isl, d, d * ctx_avg, budget)
        dd = max(1.0, n * frac)
        t_dec = perf.step_time_s(0, 0.0, int(round(dd)), int(round(dd * ctx_avg)))
        lifetime_guess = wall + (osl - 1) * max(tpot, t_dec)
        phi = ((osl - 1) * max(tpot, t_dec) / lifetime_guess) if lifetime_guess > 0 else 1.0
        tpot_new = t_dec + ((n - 1) * phi * marg / (osl - 1) if osl > 1 else 0.0)
        # prefill server utilisation and its M/D/1 wait
        lifetime = wall + (osl - 1) * tpot_new
        rho = min(0.95, n * marg / lifetime) if lifetime > 0 else 0.0
        wait_md1 = rho / (2.0 * (1.0 - rho)) * marg
        wait_sync = sync_w * (n - 1) / 2.0 * marg
        ttft_active = wall + max(wait_md1, wait_sync)
        frac_new = ((osl - 1) * tpot_new) / (ttft_active + (osl - 1) * tpot_new) if osl > 1 else 0.0
        converged = abs(tpot_new - tpot) <= 1e-9 + 1e-6 * tpot_new and abs(frac_new - frac) < 1e-6
        tpot, frac = tpot_new, frac_new
        if converged:
            break
    if osl <= 1:
        tpot = 0.0
    lifetime = ttft_active + (osl - 1) * tpot
    rate = n / lifetime if lifetime > 0 else 0.0  # requests/s per replica
    queue_wait = 0.0
    if c > n:
        # closed loop: c - n clients always waiting; Little's law. Offline: mean wait over the backlog.
        queue_wait = (c - n) / rate if not offline else (c - n) / 2.0 / rate
    ttft = ttft_active + queue_wait + perf.first_token_overhead_s + ec.ttft_per_seq_s * (n - 1)
    e2e = ttft + (osl - 1) * tpot
    notes: list[str] = list(perf.notes) + _context_notes(perf, isl, osl)
    if limited != "concurrency":
        notes.append(f"admission limited by {limited}: {n} of {c} sequences run at once per replica")
    notes += _limits_note(perf, seqs, budget, max_num_seqs, max_num_batched_tokens)
    return ClosedLoopResult(
        ttft_ms=ttft * 1e3,
        tpot_ms=tpot * 1e3,
        e2e_ms=e2e * 1e3,
        throughput_tok_s=rate * osl * num_replicas,
        request_rate_per_s=rate * num_replicas,
        concurrency=c_total,
        running_seqs=float(n),
        queue_wait_ms=queue_wait * 1e3,
        limited_by=limited,
        memory=mem,
        notes=tuple(notes),
        scheduler_limits=(seqs, budget),
    )


def estimate_disaggregated(
    prefill: PerfModel,
    decode: PerfModel,
    isl: int,
    osl: int,
    concurrency: int,
    *,
    num_prefill: int | None,
    num_decode: int | None,
    kv_transfer_gb_s: float | None = None,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
) -> ClosedLoopResult:
    """P/D-disaggregated deployment: ``num_prefill`` prefill replicas feed ``num_decode`` decode replicas.

    ``max_num_seqs`` limits each decode replica's running sequences and ``max_num_batched_tokens`` each prefill
    replica's tokens a step (None: the engine family's own, as in :func:`estimate_closed_loop`).

    Worker counts of ``None`` (unknown, e.g. AIConfigurator's ``0x``) mean: as many prefill replicas as
    keep the prefill pool's utilisation at the decode pool's request rate below one (the balanced
    deployment a planner would pick), and as many decode replicas as admit every client at once (one when
    a single replica holds them all) under the family's KV admission: at the mean context, or at the whole
    length for an engine that reserves a request's whole output before admitting it (TensorRT-LLM).
    """
    _check(isl, osl)
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    # the settings reach both pools' schedulers (as one engine flag would)
    seqs, dec_budget = scheduler_limits(decode, max_num_seqs, max_num_batched_tokens)
    pre_seqs, batch_tok = scheduler_limits(prefill, max_num_seqs, max_num_batched_tokens)
    dmem = decode.memory(gpu_memory_utilization, max_model_len=isl + osl)
    if num_decode is None:
        cap, _ = _admission(decode, concurrency, isl, osl, dmem, seqs)
        if _reserves_whole_output(decode):  # its scheduler admits a request only with KV for all of its tokens
            cap = max(1, min(cap, dmem.max_concurrent_seqs(isl + osl, bounded_tokens=isl + osl)))
        nd = max(1, math.ceil(concurrency / cap))
    else:
        nd = num_decode
    c = max(1, math.ceil(concurrency / nd))
    n, limited = _admission(decode, c, isl, osl, dmem, seqs)
    pmem = prefill.memory(gpu_memory_utilization, max_model_len=isl + osl)
    if not pmem.fits:
        raise DoesNotFitError("prefill pool: " + pmem.reason)
    ctx_avg = isl + osl / 2.0
    t_dec = decode.step_time_s(0, 0.0, n, int(round(n * ctx_avg)))
    tpot = t_dec
    wall, marg = prefill_time_s(prefill, isl, 0.0, 0.0, batch_tok)  # the prompt's own latency (its rank's)
    # the prefill pool's service time per prompt when prompts queue: spread over its attention-DP ranks
    ranks = int(getattr(prefill, "attention_dp", 1) or 1)
    served = prefill_time_s(prefill, isl, 0.0, 0.0, batch_tok, alone=False)[0] if ranks > 1 else wall
    # KV transfer of one prompt's cache from the prefill to the decode pool
    kv_bytes = float(decode.model.kv_bytes_for_context(isl, decode.kv_dtype))  # all layer kinds
    link = pd_link_gb_s(decode, kv_transfer_gb_s) * 1e9
    # every GPU of the smaller pool sends/receives its shard of the cache in parallel
    transfer = kv_bytes / (link * min(prefill.num_gpus, decode.num_gpus))
    lifetime = wall + transfer + (osl - 1) * tpot
    rate = n * nd / lifetime  # requests/s across the decode pool
    # batched prefill on the prefill pool: tokens/s capacity of one prefill replica, every attention-DP rank
    # filling its own budget with prompts of its own (as the engine model's replica does)
    bw_tok = batch_tok * ranks
    bw_wall = prefill.step_time_s(bw_tok, ranks * batch_tok * batch_tok / 2.0, 0, 0)
    tok_per_s = bw_tok / bw_wall
    np_ = num_prefill or max(1, math.ceil(rate * isl / (0.8 * tok_per_s)))
    rho = min(0.95, rate * isl / (np_ * tok_per_s))
    wait = (
        rho / (2.0 * (1.0 - rho)) * served
        + prefill.engine_coeffs.ttft_sync_weight * (c - 1) / 2.0 * isl / (np_ * tok_per_s) * nd
    )
    ttft = wall + transfer + wait
    # The client streams from the decode engine (vLLM's proxy, SGLang's router and TRT-LLM's disaggregated
    # server forward its stream), so the first token arrives with the request's first decode step, after the KV
    # transfer; requests beyond the decode pool's admission limit wait for a seat before that, so the wait is in
    # TTFT too, not TPOT (TRT-LLM sweeps measured just past workers x batch show it: TTFT jumps, TPOT stays).
    ttft += t_dec
    overhead = prefill.first_token_overhead_s + prefill.engine_coeffs.ttft_per_seq_s * (c - 1)
    # closed loop of c clients a decode replica: each holds a decode seat from its transfer to its last token (S)
    # and spends B before it (prefill, its queue, the first-token overhead). With every seat busy the replica
    # serves n / S requests a second, so by Little's law c = (n / S) (B + w + S) and the wait for a seat is
    # w = c S / n - B - S; with seats to spare (w <= 0) each client simply cycles in B + S.
    seat = transfer + t_dec + (osl - 1) * tpot
    before = ttft - transfer - t_dec + overhead
    queue_wait = max(0.0, c * seat / n - before - seat) if c > n else 0.0
    ttft += queue_wait + overhead
    e2e = ttft + (osl - 1) * tpot
    rate = nd * min(n / seat, c / e2e)
    notes = list(decode.notes) + _context_notes(decode, isl, osl)
    for pool, perf_, s_, b_ in (("decode", decode, seqs, dec_budget), ("prefill", prefill, pre_seqs, batch_tok)):
        notes += [f"{pool} pool: {n_}" for n_ in _limits_note(perf_, s_, b_, max_num_seqs, max_num_batched_tokens)]
    if num_prefill is None or num_decode is None:
        notes.append(f"worker counts unknown: assumed {np_} prefill and {nd} decode replica(s)")
    return ClosedLoopResult(
        ttft_ms=ttft * 1e3,
        tpot_ms=tpot * 1e3,
        e2e_ms=e2e * 1e3,
        throughput_tok_s=rate * osl,
        request_rate_per_s=rate,
        concurrency=concurrency,
        running_seqs=float(n),
        queue_wait_ms=queue_wait * 1e3,
        limited_by=limited,
        memory=dmem,
        method="analytic disaggregated closed loop (gpuyield.core.perf.closed_loop)",
        notes=tuple(notes),
        scheduler_limits=(seqs, batch_tok),
        pd_workers=(np_, nd),
    )
