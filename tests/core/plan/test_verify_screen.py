"""Replica-count search, capacity bisection, Pareto set, and the analytic screen on a toy step model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.plan.profile import profile_workload
from gpuyield.core.plan.screen import ReplicaPerf, erlang_c, screen_candidate, select_for_verification
from gpuyield.core.plan.space import Candidate, PoolShape
from gpuyield.core.plan.spec import Slo
from gpuyield.core.plan.verify import (
    SimOutcome,
    SimPoint,
    VerifyTask,
    capacity_of,
    pareto_front,
    verify_candidate,
)
from gpuyield.core.workload.workload import Workload, WorkloadMeta

CAND = Candidate((PoolShape("mixed", "g"),), "round_robin")
SLO = Slo(ttft_p99_ms=1000, tpot_p99_ms=100)


def threshold_sim(need: int, calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    def sim(cand: Candidate, level: int, scale: float) -> SimOutcome:
        if calls is not None:
            calls.append(level)
        ttft = 500.0 if level * 1.0 / scale >= need else 5000.0
        return SimOutcome({"ttft_p99_ms": ttft, "tpot_p99_ms": 50.0})

    return sim


@settings(max_examples=60, deadline=None)
@given(need=st.integers(1, 40), start=st.integers(1, 40))
def test_verify_finds_the_smallest_passing_level(need: int, start: int) -> None:
    calls: list[int] = []
    task = VerifyTask(CAND, start, SLO, (2.0,), max_level=64, max_sims=12)
    out = verify_candidate(task, threshold_sim(need, calls))
    assert out.best is not None and out.best.level >= need
    if len(calls) < 12:  # within the simulation budget the search is exact
        assert out.best.level == need
    assert out.best.usd_per_hour == pytest.approx(2.0 * need)
    assert len(calls) == len(set(calls)) <= 12  # never simulates a level twice


def test_verify_rejection_names_metric_and_cap() -> None:
    task = VerifyTask(CAND, 2, SLO, (2.0,), max_level=64, max_gpus=5, max_sims=10)
    out = verify_candidate(task, threshold_sim(9))
    assert out.best is None and out.rejection is not None
    assert out.rejection.kind == "cost" and "ttft_p99_ms 5000 > 1000 at 5 GPUs" in out.rejection.reason
    assert max(p.level for p in out.points) == 5


def test_capacity_bisection() -> None:
    scale, pts = capacity_of(CAND, 6, SLO, threshold_sim(2), usd_per_hour=12.0, max_sims=12)
    # passes while 6 / scale >= 2, i.e. scale <= 3
    assert 2.7 <= scale <= 3.0
    assert all(p.meets_slo == (p.rate_scale <= 3.0) for p in pts)


def _pt(usd: float, ttft: float, tpot: float, ok: bool = True) -> SimPoint:
    return SimPoint("c", 1, (1,), 1, usd, 1.0, ok, (), SimOutcome({"ttft_p99_ms": ttft, "tpot_p99_ms": tpot}))


def test_pareto_front() -> None:
    pts = [_pt(1, 900, 90), _pt(2, 500, 50), _pt(2, 600, 60), _pt(3, 100, 95), _pt(0.5, 100, 10, ok=False)]
    front = pareto_front(pts)
    assert [(p.usd_per_hour, p.ttft_p99_ms) for p in front] == [(1, 900), (2, 500), (3, 100)]


class ToyStep:
    """10 ms + 0.05 ms per decode seq + 0.02 ms per prefill token."""

    def step_time_s(self, num_prefill_tokens: int, prefill_attn_tokens_sq: float, num_decode_seqs: int,
                    decode_ctx_tokens: int) -> float:
        return 0.010 + 5e-5 * num_decode_seqs + 2e-5 * num_prefill_tokens + 1e-9 * decode_ctx_tokens


def _workload(rate: float, n: int = 2000, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1 / rate, n))
    return Workload(arrival_s=arr, input_tokens=rng.integers(200, 1500, n), output_tokens=rng.integers(50, 300, n),
                    meta=WorkloadMeta("toy"))


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 5.0) == 1.0 and erlang_c(4, 0.0) == 0.0


def test_screen_sizes_grow_with_rate_and_reject_reasons() -> None:
    perf = ReplicaPerf(ToyStep(), kv_capacity_tokens=200_000, kv_bytes_per_token=131072, kv_transfer_bytes_per_s=50e9)
    levels = []
    for rate in (5.0, 20.0, 80.0):
        prof = profile_workload(_workload(rate))
        est = screen_candidate(CAND, prof, SLO, lambda p: perf, lambda g: 2.0)
        assert est.feasible, est.rejection
        assert est.ttft_p99_ms <= 1000 and est.tpot_p99_ms <= 100
        levels.append(est.level)
    assert levels == sorted(levels) and levels[-1] > levels[0]
    prof = profile_workload(_workload(80.0))
    capped = screen_candidate(CAND, prof, SLO, lambda p: perf, lambda g: 2.0, max_gpus=1)
    assert not capped.feasible and capped.rejection is not None and capped.rejection.kind == "cost"
    nofit = screen_candidate(CAND, prof, SLO, lambda p: "weights 16 GB > 8 GB", lambda g: 2.0)
    assert nofit.rejection is not None and nofit.rejection.kind == "memory" and "16 GB" in nofit.rejection.reason
    tight = screen_candidate(CAND, prof, Slo(tpot_p99_ms=5), lambda p: perf, lambda g: 2.0)
    assert tight.rejection is not None and tight.rejection.kind == "slo" and "tpot" in tight.rejection.reason


def test_screen_counts_the_first_token_overhead_like_the_simulator() -> None:
    import dataclasses

    perf = ReplicaPerf(ToyStep(), kv_capacity_tokens=200_000, kv_bytes_per_token=131072, kv_transfer_bytes_per_s=50e9)
    slow = dataclasses.replace(perf, first_token_overhead_s=0.2)
    prof = profile_workload(_workload(5.0))
    a = screen_candidate(CAND, prof, SLO, lambda p: perf, lambda g: 2.0)
    b = screen_candidate(CAND, prof, SLO, lambda p: slow, lambda g: 2.0)
    assert a.feasible and b.feasible and b.level == a.level
    assert b.ttft_p99_ms == pytest.approx(a.ttft_p99_ms + 200.0) and b.tpot_p99_ms == a.tpot_p99_ms
    # an overhead beyond the TTFT limit cannot be bought off with more replicas
    hopeless = dataclasses.replace(perf, first_token_overhead_s=1.5)
    r = screen_candidate(CAND, prof, SLO, lambda p: hopeless, lambda g: 2.0)
    assert r.rejection is not None and r.rejection.kind == "slo" and "ttft" in r.rejection.reason


def test_select_for_verification_is_diverse_and_cheapest_first() -> None:
    perf = ReplicaPerf(ToyStep(), 200_000, 131072, 50e9)
    prof = profile_workload(_workload(20.0))
    cands = [Candidate((PoolShape("mixed", g, tp=tp, max_num_seqs=s),), r)
             for g in ("a", "b") for tp in (1, 2) for s in (64, 256) for r in ("round_robin", "least_loaded")]
    prices = {"a": 1.0, "b": 3.0}
    ests = [screen_candidate(c, prof, SLO, lambda p: perf, lambda g: prices[g]) for c in cands]
    top = select_for_verification(ests, 4)
    assert len(top) == 4
    assert len({e.candidate.structure() for e in top}) == 4  # one per (gpu, tp) first
    assert top[0].usd_per_hour == min(e.usd_per_hour for e in ests)
    assert all(math.isfinite(e.usd_per_hour) for e in top)


def test_profile_prefix_hits() -> None:
    # two requests share their first block; round-robin over 2 caches loses the hit, affinity keeps it
    w = Workload(arrival_s=[0.0, 1.0, 2.0], input_tokens=[1024, 1024, 1024], output_tokens=[10, 10, 10],
                 meta=WorkloadMeta("p"), block_size_tokens=512, hash_offsets=[0, 2, 4, 6],
                 hash_values=[1, 2, 1, 3, 1, 2])
    prof = profile_workload(w)
    assert prof.shared_hit_fraction == pytest.approx((512 + 1023) / 3072)
    assert prof.hit_fraction(2, affinity=False) == pytest.approx(1023 / 3072)
    assert prof.hit_fraction(2, affinity=True) == prof.shared_hit_fraction


def test_screen_charges_each_sequence_its_bounded_cache() -> None:
    """Sliding-window layers: a sequence holds its window's cache whatever its length, so the KV cap on the
    batch counts it (MemoryPlan.fixed_tokens_per_seq), as the engine model does."""
    import dataclasses

    perf = ReplicaPerf(ToyStep(), kv_capacity_tokens=60_000, kv_bytes_per_token=131072, kv_transfer_bytes_per_s=50e9)
    windowed = dataclasses.replace(perf, kv_fixed_tokens_per_seq=4_000.0)
    prof = profile_workload(_workload(20.0))
    a = screen_candidate(CAND, prof, SLO, lambda p: perf, lambda g: 2.0)
    b = screen_candidate(CAND, prof, SLO, lambda p: windowed, lambda g: 2.0)
    assert a.feasible and b.feasible
    assert b.level > a.level  # fewer sequences a replica: more replicas for the same load
    # windows of 8,000 tokens that a ~1,000-token request fills only to its length
    partial = dataclasses.replace(windowed, kv_fixed_tokens_for=lambda n: 4_000.0 * min(n, 8_000) / 8_000)
    c = screen_candidate(CAND, prof, SLO, lambda p: partial, lambda g: 2.0)
    assert c.feasible and a.level <= c.level < b.level


def test_plan_inputs_search_the_checkpoint_asked_for() -> None:
    """build_plan_inputs feeds the checkpoint's precision to the search space and the naive baseline: DeepSeek-R1's
    own checkpoint is fp8, its NVFP4 release fp4; gpt-oss is mxfp4; DeepSeek-V4's cache is fp8 only."""
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.plan.context import build_plan_inputs
    from gpuyield.core.plan.profile import profile_workload
    from gpuyield.core.plan.spec import PlanRequest, parse_slo

    cat = default_catalog()
    prof = profile_workload(_workload(5.0, n=200))

    def space_of(model: str, **kw: object) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        req = PlanRequest(model_id=model, slo=parse_slo("ttft_p99_ms=2000"), gpu_ids=("b200_sxm",), **kw)  # type: ignore[arg-type]
        inputs, _ = build_plan_inputs(cat, req, prof)
        return inputs.space.weight_precisions, inputs.space.kv_dtypes, inputs.naive_pool("b200_sxm", 8).weight_precision

    assert space_of("deepseek-ai/DeepSeek-R1") == (("fp8",), ("bf16",), "fp8")
    assert space_of("deepseek-ai/DeepSeek-R1", checkpoint_dtype="nvfp4") == (("fp4",), ("bf16",), "fp4")
    assert space_of("nvidia/DeepSeek-R1-NVFP4")[0] == ("fp4",)  # the alias's own precision without cmd_plan's help
    assert space_of("openai/gpt-oss-120b")[0] == ("mxfp4",)
    assert space_of("deepseek-ai/DeepSeek-V4-Flash")[1] == ("fp8",)
    assert space_of("meta-llama/Llama-3.1-8B", allow_lower_precision=True)[:2] == (("bf16", "fp8"), ("bf16", "fp8"))


def test_screen_pd_ttft_waits_for_a_decode_seat() -> None:
    """P/D: a prefilled request whose decode pool is full waits for a seat before its first decode step, and the
    first token streams from the decode engine, so the screen's TTFT holds the seat wait (Erlang C on the decode
    seats, as the aggregated slots) and one decode step."""
    import dataclasses

    perf = ReplicaPerf(ToyStep(), kv_capacity_tokens=200_000, kv_bytes_per_token=131072, kv_transfer_bytes_per_s=50e9)
    prof = profile_workload(_workload(20.0))
    roomy, tight = (Candidate((PoolShape("prefill", "g"), PoolShape("decode", "g", max_num_seqs=s)), "round_robin",
                              pd_ratio=(1, 1)) for s in (256, 60))
    loose_slo = Slo(ttft_p99_ms=1e6, tpot_p99_ms=1e3)
    a = screen_candidate(roomy, prof, loose_slo, lambda p: perf, lambda g: 2.0)
    b = screen_candidate(tight, prof, loose_slo, lambda p: perf, lambda g: 2.0)
    assert a.feasible and b.feasible and a.level == b.level == 1
    # same prefill, transfer and decode batch (~48 running); only the 60 seats make requests queue for one
    assert b.tpot_p99_ms == pytest.approx(a.tpot_p99_ms, rel=0.02) and 40 < a.batch_per_replica < 60
    assert b.ttft_p99_ms > a.ttft_p99_ms + 100.0
    # with seats to spare there is no wait: the TTFT is the prefill pool's, the transfer and one decode step (the
    # p99 decode step over its 1.15 factor), whatever the seat count
    roomier = dataclasses.replace(roomy, pools=(roomy.pools[0], dataclasses.replace(roomy.pools[1], max_num_seqs=1024)))
    c = screen_candidate(roomier, prof, loose_slo, lambda p: perf, lambda g: 2.0)
    assert c.ttft_p99_ms == pytest.approx(a.ttft_p99_ms)


def test_slot_wait_is_unbounded_when_the_whole_slots_cannot_carry_the_load() -> None:
    """A KV-limited batch cap is fractional (48.9 sequences): a load between 48 and 48.9 slots' worth passes the
    batch fixed point but no whole number of slots carries it, so the wait is unbounded, never negative."""
    from gpuyield.core.plan.screen import _slot_wait_p99_s

    assert _slot_wait_p99_s(48.5, 48.9, 1.0, 1.0) == math.inf
    assert _slot_wait_p99_s(48.0, 48.9, 1.0, 1.0) == math.inf
    w = _slot_wait_p99_s(40.0, 48.9, 1.0, 1.0)
    assert 0.0 < w < math.inf
    assert _slot_wait_p99_s(1.0, 48.9, 1.0, 1.0) == 0.0


def test_a_load_the_whole_slots_cannot_carry_is_an_overload_even_without_a_ttft_target() -> None:
    """KV room for a fractional batch (x.95 sequences) at a load between its whole part and itself: the screen
    rejects that size as overloaded (aggregated and P/D decode pools alike), with or without a TTFT target."""
    from gpuyield.core.plan.screen import _aggregated_at, _decode_pool_at

    prof = profile_workload(_workload(20.0))
    ctx = prof.input_mean_tokens + prof.output_mean_tokens / 2
    mixed = PoolShape("mixed", "g", max_num_seqs=4096, max_num_batched_tokens=1 << 20)
    decode = PoolShape("decode", "g", max_num_seqs=4096)

    def perf_at(b: float) -> ReplicaPerf:
        return ReplicaPerf(ToyStep(), kv_capacity_tokens=int(b * ctx), kv_bytes_per_token=131072,
                           kv_transfer_bytes_per_s=50e9)

    edge = {"agg": None, "pd": None}
    for tenth in range(200, 2000):
        perf = perf_at(tenth / 10 + 0.05)
        a = _aggregated_at(mixed, perf, prof, 0.0, 1)
        if edge["agg"] is None and not a.ok and "whole sequence slots" in a.why:
            edge["agg"] = perf
        d = _decode_pool_at(decode, perf, prof, 1)
        if edge["pd"] is None and not d[0] and math.isinf(d[4]) and d[3] == 1.0:
            edge["pd"] = perf
    assert edge["agg"] is not None and edge["pd"] is not None
    big = perf_at(1e6)
    pd = Candidate((PoolShape("prefill", "g"), decode), "round_robin", pd_ratio=(1, 1))
    for slo in (Slo(ttft_p99_ms=2000, tpot_p99_ms=100), Slo(tpot_p99_ms=100)):
        agg = screen_candidate(Candidate((mixed,), "round_robin"), prof, slo, lambda p: edge["agg"], lambda g: 2.0,
                               max_level=1)
        assert not agg.feasible and agg.rejection is not None and "whole sequence slots" in agg.rejection.reason
        dis = screen_candidate(pd, prof, slo, lambda p: big if p.role == "prefill" else edge["pd"], lambda g: 2.0,
                               max_level=1)
        assert not dis.feasible and dis.rejection is not None and "decode pool overloaded" in dis.rejection.reason
        # one more replica carries it, with a finite TTFT
        ok = screen_candidate(Candidate((mixed,), "round_robin"), prof, slo, lambda p: edge["agg"], lambda g: 2.0)
        assert ok.feasible and ok.level == 2 and math.isfinite(ok.ttft_p99_ms)
