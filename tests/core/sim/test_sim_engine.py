"""Engine model: vLLM v1 scheduling semantics, invariants under random workloads, analytic decode runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_helpers import LinearStepModel, drive, make_engine, make_requests

from gpuyield.core.sim.engine import EngineConfig, EngineRequest, ReplicaEngine, RequestStatus
from gpuyield.errors import ConfigError


def test_single_request_timing_matches_step_model() -> None:
    eng = make_engine()
    (req,) = make_requests(1, prompt=100, output=5)
    fin = drive(eng, [(0.0, req)])
    m = LinearStepModel()
    t_prefill = m.step_time_s(100, 100 * 50.0, 0, 0)
    assert req.first_token_s == pytest.approx(t_prefill)
    decode = sum(m.step_time_s(0, 0.0, 1, 100 + j + 1) for j in range(4))
    assert fin[0] == pytest.approx(t_prefill + decode)
    assert req.status == RequestStatus.FINISHED_STOPPED and req.num_output_tokens == 5


def test_chunked_prefill_respects_budget_and_running_first() -> None:
    eng = make_engine(max_num_batched_tokens=64, max_num_seqs=8)
    a, b = make_requests(2, prompt=100, output=3)
    eng.add_request(a, 0.0)
    out = eng.run
    assert out is not None and out.prefill_num_new_tokens == [64]
    eng.add_request(b, 0.0)
    eng.complete_run()  # a: 64/100 computed; next step: a gets 36 (running first), b the remaining 28
    out = eng.run
    assert out is not None
    assert [r.idx for r in out.prefill_reqs] == [0, 1] and out.prefill_num_new_tokens == [36, 28]
    assert out.num_scheduled_tokens <= 64


def test_a_prompt_takes_at_most_its_chunk_cap_a_step_and_the_budget_goes_to_the_next() -> None:
    """An attention-DP replica's rank budget: one prompt takes at most ``max_prefill_chunk_tokens`` a step, the
    rest of the replica's budget goes to other prompts (on other ranks); without chunking the cap does nothing."""
    eng = make_engine(max_num_batched_tokens=128, max_num_seqs=8, max_prefill_chunk_tokens=48)
    a, b, c = make_requests(3, prompt=100, output=3)
    eng.add_request(a, 0.0)
    out = eng.run
    assert out is not None and out.prefill_num_new_tokens == [48]  # alone: its cap, not the budget
    eng.add_request(b, 0.0)
    eng.add_request(c, 0.0)
    eng.complete_run()  # a (running first) 48 of its 52, b 48, c the budget's last 32
    out = eng.run
    assert out is not None and out.prefill_num_new_tokens == [48, 48, 32]
    eng.complete_run()  # a 4, b 48 of its 52, c 48 of its 68
    out = eng.run
    assert out is not None and out.prefill_num_new_tokens == [4, 48, 48]
    with pytest.raises(ConfigError, match="max_prefill_chunk_tokens"):
        EngineConfig(max_prefill_chunk_tokens=0)
    # without chunking a prompt above one rank's budget never runs (and the replica says why up front)
    unchunked = {"max_num_batched_tokens": 256, "max_prefill_chunk_tokens": 128, "enable_chunked_prefill": False}
    eng = make_engine(max_num_seqs=8, **unchunked)
    (r,) = make_requests(1, prompt=200, output=3)
    assert "a rank's budget 128" in (eng.can_ever_fit(200, 3) or "")
    eng.add_request(r, 0.0)
    assert eng.run is None
    (r,) = make_requests(1, prompt=100, output=3, start=1)
    eng = make_engine(max_num_seqs=8, **unchunked)
    eng.add_request(r, 0.0)
    assert eng.run is not None and eng.run.prefill_num_new_tokens == [100]  # whole, unchunked


def test_an_attention_dp_replica_has_every_ranks_budget_and_passes_each_steps_prompts() -> None:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel
    from gpuyield.core.perf.closed_loop import scheduler_limits
    from gpuyield.core.sim.closed_loop import _engine_config

    cat = default_catalog()
    m, g = cat.model("deepseek-ai/DeepSeek-R1"), cat.gpu("h200_sxm")
    adp = PerfModel.build(m, g, tp=1, attention_dp=8, ep=8, weight_precision="fp8", kv_dtype="fp8", engine="sglang")
    seqs, budget = scheduler_limits(adp, None, None)
    cfg = _engine_config(adp, None, None, 0.9)
    assert cfg.max_num_batched_tokens == 8 * budget and cfg.max_prefill_chunk_tokens == budget
    assert cfg.max_num_seqs == 8 * seqs
    tp = PerfModel.build(m, g, tp=8, ep=8, weight_precision="fp8", kv_dtype="fp8", engine="sglang")
    cfg = _engine_config(tp, None, None, 0.9)
    assert cfg.max_prefill_chunk_tokens is None and cfg.max_num_batched_tokens == scheduler_limits(tp, None, None)[1]
    # the replica times a step with prefill chunks by its busiest rank
    seen: list[object] = []

    class Spy:
        attention_dp = 8

        def step_time_s(self, p: int, a: float, d: int, s: int, prefill_seqs: int | None = None) -> float:
            seen.append(prefill_seqs)
            return adp.step_time_s(p, a, d, s, prefill_seqs=prefill_seqs)

    eng = ReplicaEngine(
        EngineConfig(max_num_batched_tokens=4096, max_num_seqs=8, max_prefill_chunk_tokens=1500), Spy(), 4096
    )
    a, b = make_requests(2, prompt=2000, output=2)
    eng.add_request(a, 0.0)
    assert seen == [(1500,)]  # each step's chunks, one per prompt: the busiest rank holds the largest
    eng.add_request(b, 0.0)
    eng.complete_run()
    assert seen[-1] == (500, 1500)
    assert eng.run is not None
    want = adp.step_time_s(2000, eng.run.prefill_attn_tokens_sq, 0, 0, prefill_seqs=(500, 1500))
    assert eng._a == pytest.approx(want)


def test_no_chunked_prefill_waits_for_budget() -> None:
    eng = make_engine(max_num_batched_tokens=64, max_num_seqs=8, enable_chunked_prefill=False)
    (r,) = make_requests(1, prompt=100, output=3)
    eng.add_request(r, 0.0)
    assert eng.run is None  # never fits the budget (the cluster rejects such requests up front)


def test_preemption_when_kv_is_undersized() -> None:
    eng = make_engine(num_blocks=40, block_size=16, max_num_seqs=16)
    reqs = make_requests(8, prompt=64, output=60)
    fin = drive(eng, [(0.0, r) for r in reqs])
    assert len(fin) == 8
    assert eng.scheduler.num_preemptions > 0
    assert all(r.num_output_tokens == 60 for r in reqs)
    assert eng.kv.pool.num_used_blocks == 0


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        EngineConfig(max_num_seqs=512, max_num_batched_tokens=256)
    with pytest.raises(ConfigError, match="family"):
        EngineConfig(family="tgi")
    assert EngineConfig.for_family("trtllm").kv_admission == "max_output"
    assert EngineConfig.for_family("sglang").block_size == 1


def test_max_output_admission_never_preempts() -> None:
    eng = make_engine(num_blocks=40, block_size=16, max_num_seqs=16, kv_admission="max_output")
    reqs = make_requests(8, prompt=64, output=60)
    fin = drive(eng, [(0.0, r) for r in reqs])
    assert len(fin) == 8 and eng.scheduler.num_preemptions == 0


# ---------------------------------------------------------------------- properties

_req = st.tuples(
    st.floats(0, 5.0, allow_nan=False),  # arrival
    st.integers(1, 600),  # prompt
    st.integers(1, 80),  # output
    st.integers(0, 3),  # prefix group (0 = none)
)


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[dict[str, object], int, list[tuple[float, int, int, int]]]:
    bs = draw(st.sampled_from([1, 4, 16, 32]))
    seqs = draw(st.integers(1, 16))
    cfg = {
        "block_size": bs,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": draw(st.integers(seqs, 512)),
        "enable_prefix_caching": draw(st.booleans()),
        "enable_chunked_prefill": True,
        "kv_admission": draw(st.sampled_from(["on_demand", "on_demand", "max_output"])),
        "max_decode_run_steps": draw(st.sampled_from([None, 1, 7])),
    }
    reqs = draw(st.lists(_req, min_size=1, max_size=25))
    need = max(-(-(p + o) // bs) for _, p, o, _ in reqs)
    num_blocks = need + draw(st.integers(0, 3 * need))
    return cfg, num_blocks, reqs


def _build(cfg: dict[str, object], num_blocks: int, reqs: list[tuple[float, int, int, int]]) -> tuple[ReplicaEngine, list[tuple[float, EngineRequest]]]:
    eng = ReplicaEngine(EngineConfig(**cfg), LinearStepModel(), num_blocks)  # type: ignore[arg-type]
    bs = int(cfg["block_size"])  # type: ignore[call-overload]
    unit = max(16, bs)
    arrivals = []
    for i, (t, p, o, g) in enumerate(reqs):
        hashes = tuple(1000 * g + k for k in range(p // unit)) if g else ()
        arrivals.append((t, EngineRequest(i, t, p, o, hashes, unit // bs)))
    return eng, arrivals


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_engine_invariants(scn: tuple[dict[str, object], int, list[tuple[float, int, int, int]]]) -> None:
    cfg, num_blocks, reqs = scn
    eng, arrivals = _build(cfg, num_blocks, reqs)
    sch = eng.scheduler
    pool = eng.kv.pool

    def check(e: ReplicaEngine, t: float) -> None:
        assert pool.num_free_uncached >= 0 and pool.num_free_cached >= 0
        assert pool.num_free_blocks + pool.num_used_blocks == pool.num_blocks
        assert pool.num_used_blocks <= pool.num_blocks
        if e.run is not None:
            assert e.run.num_scheduled_tokens <= sch.max_num_batched_tokens
            assert e.run.num_steps >= 1
        assert len(sch.prefilling) + len(sch.decoding) <= sch.max_num_seqs
        for r in sch.prefilling:
            assert 0 <= r.num_computed_tokens <= r.num_tokens
        for r in sch.decoding.values():
            assert sch.computed_tokens(r) <= r.num_prompt_tokens + r.max_output_tokens

    fin = drive(eng, arrivals, check)
    assert sorted(fin) == list(range(len(reqs)))  # every request finished exactly once
    for _, r in arrivals:
        assert r.status == RequestStatus.FINISHED_STOPPED
        assert r.num_output_tokens == r.max_output_tokens  # tokens conserved
        assert r.arrival_s <= r.first_token_s <= fin[r.idx]
    assert pool.num_used_blocks == 0  # nothing leaked
    if cfg["kv_admission"] == "max_output":
        assert sch.num_preemptions == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_analytic_decode_runs_match_step_by_step(scn: tuple[dict[str, object], int, list[tuple[float, int, int, int]]]) -> None:
    cfg, num_blocks, reqs = scn
    results = []
    for steps in (None, 1):
        c = dict(cfg, max_decode_run_steps=steps)
        eng, arrivals = _build(c, num_blocks, reqs)
        fin = drive(eng, arrivals)
        firsts = {r.idx: r.first_token_s for _, r in arrivals}
        results.append((fin, firsts, eng.scheduler.num_preemptions, eng.num_steps))
    (f1, t1, p1, s1), (f2, t2, p2, s2) = results
    assert p1 == p2 and s1 == s2
    for i in f1:
        assert math.isclose(f1[i], f2[i], rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(t1[i], t2[i], rel_tol=1e-9, abs_tol=1e-9)


def test_secant_run_time_matches_per_step_sum_for_affine_model() -> None:
    eng = make_engine(num_blocks=10_000)
    reqs = make_requests(10, prompt=300, output=200)
    for r in reqs:
        eng.add_request(r, 0.0)
    while eng.run is not None and eng.run.num_steps == 1:
        eng.complete_run()
    out = eng.run
    assert out is not None and out.num_steps > 50
    m = LinearStepModel()
    per_step = sum(m.step_time_s(0, 0.0, out.num_decode_seqs, out.decode_ctx_tokens + j * out.num_decode_seqs)
                   for j in range(out.num_steps))  # fmt: skip
    assert eng.run_end_s - eng.run_start_s == pytest.approx(per_step, rel=1e-12)


def test_arrival_truncates_run_after_step_in_flight() -> None:
    eng = make_engine(num_blocks=10_000)
    (a,) = make_requests(1, prompt=100, output=500)
    eng.add_request(a, 0.0)
    eng.complete_run()  # prefill done; now a long decode run
    assert eng.run is not None and eng.run.num_steps == 499
    start, step = eng.run_start_s, LinearStepModel().step_time_s(0, 0.0, 1, 101)
    (b,) = make_requests(1, prompt=50, output=2, start=1)
    new_end = eng.add_request(b, start + 2.5 * step)
    assert eng.run.num_steps == 3 and new_end == eng.run_end_s


def test_requests_that_can_never_run_are_named() -> None:
    eng = make_engine(num_blocks=10, block_size=16, max_num_seqs=8, max_num_batched_tokens=64, enable_chunked_prefill=False)
    assert eng.can_ever_fit(100, 10) is not None and "chunked prefill off" in eng.can_ever_fit(100, 10)
    # without chunking a preempted request is recomputed whole, so prompt + output must fit one step's budget
    assert "chunked prefill off" in (eng.can_ever_fit(60, 10) or "")
    assert eng.can_ever_fit(50, 14) is None
    chunked = make_engine(num_blocks=10, block_size=16, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=150)
    assert "max_model_len" in (chunked.can_ever_fit(60, 100) or "")
    assert chunked.can_ever_fit(60, 10) is None
    assert "KV blocks" in (make_engine(num_blocks=2).can_ever_fit(30, 10) or "")
    # and, as vLLM, a budget below max_model_len with chunked prefill off is refused up front
    with pytest.raises(ConfigError, match="smaller than max_model_len"):
        make_engine(max_num_batched_tokens=64, max_num_seqs=8, enable_chunked_prefill=False, max_model_len=150)


class _SpeculativeStep(LinearStepModel):
    """A step model whose decoding sequences verify 3 draft tokens (as PerfModel.decode_budget_tokens says)."""

    decode_budget_tokens = 4


def test_decodes_take_k_plus_one_budget_tokens_with_speculative_decoding() -> None:
    for step, per_decode in ((LinearStepModel(), 1), (_SpeculativeStep(), 4)):
        eng = ReplicaEngine(EngineConfig(max_num_batched_tokens=64, max_num_seqs=8), step, 1000)  # type: ignore[arg-type]
        assert eng.scheduler.decode_budget_tokens == per_decode
        (a,) = make_requests(1, prompt=10, output=50)
        eng.add_request(a, 0.0)
        eng.complete_run()  # a prefilled: it decodes from now on
        (c,) = make_requests(1, prompt=200, output=3, start=1)
        eng.add_request(c, 0.0)
        if not eng.run or not eng.run.prefill_reqs:  # a decode step was in flight: c joins the next one
            eng.complete_run()
        out = eng.run
        assert out is not None and out.num_decode_seqs == 1 and out.prefill_reqs == [c]
        # the prompt's chunk is what the decode leaves of the 64-token budget
        assert out.prefill_num_new_tokens == [64 - per_decode]


def test_bounded_cache_blocks_are_held_per_sequence_and_returned() -> None:
    """A model with sliding-window layers: each running sequence also holds ``fixed_blocks_per_seq`` blocks
    (MemoryPlan.fixed_blocks_per_seq), so fewer run at once; every block comes back when they finish, also
    through preemptions."""
    running: list[int] = []

    def check(engine: ReplicaEngine, _t: float) -> None:
        n = len(engine.scheduler.decoding) + len(engine.scheduler.prefilling)
        running.append(n)
        assert engine.kv.pool.num_used_blocks <= engine.num_gpu_blocks

    plain = ReplicaEngine(EngineConfig(max_num_seqs=64), LinearStepModel(), 100)
    held = ReplicaEngine(EngineConfig(max_num_seqs=64), LinearStepModel(), 100, fixed_blocks_per_seq=9)
    drive(plain, [(0.0, r) for r in make_requests(30, prompt=15, output=1)])
    assert plain.kv.pool.num_used_blocks == 0
    drive(held, [(0.0, r) for r in make_requests(30, prompt=15, output=1)], check)
    assert max(running) == 10  # 100 blocks / (1 for the 15-token prompt + 9 bounded)
    assert held.kv.pool.num_used_blocks == 0
    # longer decodes crossing block boundaries, with preemptions, still return every block
    tight = ReplicaEngine(EngineConfig(max_num_seqs=16), LinearStepModel(), 60, fixed_blocks_per_seq=3)
    reqs = make_requests(8, prompt=40, output=60)
    fin = drive(tight, [(0.0, r) for r in reqs], check)
    assert len(fin) == 8 and all(r.num_output_tokens == 60 for r in reqs)
    assert tight.scheduler.num_preemptions > 0 and tight.kv.pool.num_used_blocks == 0
    # a request that cannot fit alone says so, counting the bounded blocks
    assert tight.can_ever_fit(16 * 57, 16) is not None and tight.can_ever_fit(16 * 50, 16) is None


def test_a_transfer_that_arrives_finished_frees_its_seat_and_reserve() -> None:
    """P/D decode side, output reservations on: a request whose output was complete when its KV arrived
    releases its reserve and its seat, and the request waiting for that seat runs."""
    cfg = EngineConfig(block_size=4, max_num_seqs=1, max_num_batched_tokens=64, enable_prefix_caching=False,
                       max_decode_run_steps=1, kv_admission="max_output")  # fmt: skip
    eng = ReplicaEngine(cfg, LinearStepModel(), 20, fixed_blocks_per_seq=2)
    done = EngineRequest(1, 0.0, 16, 1, remote_kv=True)
    done.num_output_tokens = 1
    eng.add_request(done, 0.0)
    waiting = EngineRequest(2, 0.0, 4, 2)
    eng.add_request(waiting, 0.0)  # the only seat is taken by the transfer
    eng.finish_transfer(done, 1.0)
    assert done.status == RequestStatus.FINISHED_STOPPED
    fin = drive(eng, [])
    assert waiting.idx in fin and eng.scheduler._final_blocks == 0 and eng.kv.pool.num_used_blocks == 0


def test_an_abort_after_the_last_decoder_was_preempted_is_between_runs() -> None:
    """A transfer holds the blocks, the only local decoder is preempted for lack of them: no step is left
    running, so aborting it is allowed (the step's blocks were never taken)."""
    cfg = EngineConfig(block_size=4, max_num_seqs=8, max_num_batched_tokens=64, enable_prefix_caching=False,
                       max_decode_run_steps=1)  # fmt: skip
    eng = ReplicaEngine(cfg, LinearStepModel(), 6)
    local = EngineRequest(0, 0.0, 4, 8)
    eng.add_request(local, 0.0)
    eng.complete_run()  # its prefill: it now decodes, and will need a second block
    remote = EngineRequest(1, 0.0, 16, 4, remote_kv=True)
    remote.num_output_tokens = 1
    eng.add_request(remote, eng.run_end_s)  # takes 4 of the 6 blocks while its KV is in flight
    while eng.run is not None:
        eng.complete_run()
    assert eng.scheduler.num_preemptions > 0
    eng.abort(local, 1.0)
    assert local.status == RequestStatus.FINISHED_ABORTED


def test_hybrid_prefix_hits_count_in_whole_raised_blocks() -> None:
    """vLLM caches a hybrid (linear-attention) model's prefixes at its raised block: with 64-token granules a
    96-token shared prefix hits 64 tokens, not 96; without a granule, every cached unit hits."""
    from gpuyield.core.sim.engine.kv_cache import KVCacheManager

    def hit_tokens(granule: int) -> int:
        kv = KVCacheManager(64, 16, True, prefix_hit_tokens=granule)
        first, second = make_requests(2, prompt=128, output=4)
        shared = tuple(range(6))  # six 16-token units: 96 tokens in common
        first.unit_hashes, second.unit_hashes = shared + (100, 101), shared + (200, 201)
        hits, load = kv.get_computed(first)
        assert kv.allocate_admit(first, hits, load, first.num_prompt_tokens)
        hits, load = kv.get_computed(second)
        return (len(hits) + load) * second.unit_blocks * 16

    assert hit_tokens(0) == 96 and hit_tokens(64) == 64 and hit_tokens(128) == 0
    with pytest.raises(ConfigError, match="prefix_hit_tokens"):
        EngineConfig(prefix_hit_tokens=-1)


def test_chunked_prefill_off_raises_an_unset_budget_to_the_longest_sequence() -> None:
    """As vLLM: without chunking and without a budget of one's own, the step budget becomes max_model_len (else the
    model's context limit); a budget set below max_model_len is refused."""
    from gpuyield.core.sim.deployment import EngineSpec

    assert EngineSpec(enable_chunked_prefill=False, max_model_len=32768).to_config().max_num_batched_tokens == 32768
    assert EngineSpec(enable_chunked_prefill=False).to_config(model_max_len=131072).max_num_batched_tokens == 131072
    assert EngineSpec().to_config(model_max_len=131072).max_num_batched_tokens == 8192  # chunked: the default
    with pytest.raises(ConfigError, match="smaller than max_model_len"):
        EngineSpec(enable_chunked_prefill=False, max_model_len=32768, max_num_batched_tokens=8192).to_config()


def test_a_lone_scheduler_knob_follows_the_rule_estimate_uses() -> None:
    """simulate's engine configs resolve max_num_seqs and max_num_batched_tokens as `estimate` does
    (resolve_scheduler_limits, against the family defaults): vLLM refuses a budget below the sequence limit,
    TensorRT-LLM runs at most the budget's worth of sequences, SGLang's budget (prompt chunks only) rises to the
    limit."""
    from gpuyield.core.sim.deployment import EngineSpec

    with pytest.raises(ConfigError, match="max_num_batched_tokens 64 and the engine's own max_num_seqs 1024"):
        EngineSpec(family="vllm", max_num_batched_tokens=64).to_config()
    with pytest.raises(ConfigError, match="max_num_batched_tokens 64 and the engine's own max_num_seqs 256"):
        EngineSpec(family="vllm", max_num_batched_tokens=64).to_config(own_limits=(256, 2048))
    with pytest.raises(ConfigError, match="max_num_batched_tokens 8 and max_num_seqs 32"):
        EngineSpec(family="vllm", max_num_seqs=32, max_num_batched_tokens=8).to_config()

    def limits(**kw: object) -> tuple[int, int]:
        cfg = EngineSpec(**kw).to_config()  # type: ignore[arg-type]
        return cfg.max_num_seqs, cfg.max_num_batched_tokens

    assert limits(family="trtllm", max_num_batched_tokens=64) == (64, 64)
    assert limits(family="trtllm", max_num_seqs=10_000) == (8192, 8192)
    assert limits(family="trtllm", max_num_seqs=32, max_num_batched_tokens=8) == (8, 8)
    assert limits(family="sglang", max_num_batched_tokens=64) == (4096, 4096)
    assert limits(family="sglang", max_num_seqs=10_000) == (10_000, 10_000)
    assert limits(family="sglang", max_num_seqs=32, max_num_batched_tokens=8) == (32, 32)
    assert limits(family="vllm", max_num_seqs=128) == (128, 8192)  # within the budget: as given


def test_a_memory_plan_with_hybrid_blocks_sets_the_prefix_hit_granule() -> None:
    """simulate, shared-GPU replicas and run_closed_loop take the granule from the memory plan: vLLM's pages for
    Nemotron-3 Nano on one H100 are 2,096 tokens; SGLang's plan has none."""
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel
    from gpuyield.core.sim.closed_loop import engine_config_for_memory_plan

    cat = default_catalog()
    cfg = EngineConfig()
    for engine, granule in (("vllm", 2096), ("sglang", 0)):
        pm = PerfModel.build(cat.model("nemotron-3-nano"), cat.gpu("h100_sxm"), tp=1, engine=engine)
        assert engine_config_for_memory_plan(cfg, pm.memory(0.9, 8192)).prefix_hit_tokens == granule
