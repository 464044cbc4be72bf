"""Abort in the engine model: a request whose client went away frees its slot and KV wherever it is."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_helpers import LinearStepModel, make_engine, make_requests
from test_sim_engine import _scenario

from gpuyield.core.sim.engine import EngineConfig, EngineRequest, ReplicaEngine, RequestStatus


def _run_until(eng: ReplicaEngine, t_end: float) -> float:
    now = 0.0
    while eng.run_end_s <= t_end:
        now = eng.run_end_s
        done, first = eng.complete_run()
        for r in first:
            r.first_token_s = now
    return now


def test_abort_waiting_prefilling_and_decoding_requests_frees_their_kv() -> None:
    eng = make_engine(num_blocks=400, block_size=16, max_num_seqs=2, max_num_batched_tokens=256)
    a, b, c = make_requests(3, prompt=1000, output=50)
    for r in (a, b, c):
        eng.add_request(r, 0.0)
    pool = eng.kv.pool
    _run_until(eng, 0.02)  # a and b prefilling (chunked), c waiting (max_num_seqs=2)
    assert c.status == RequestStatus.WAITING and a.idx not in eng.scheduler.decoding
    used = pool.num_used_blocks
    eng.abort(c, eng.run_start_s)  # waiting: nothing held
    t = eng.run_end_s
    eng.complete_run()
    assert c.status == RequestStatus.FINISHED_ABORTED and pool.num_used_blocks >= used
    eng.abort(a, t)  # prefilling, mid-run: applied when the run ends
    _run_until(eng, eng.run_end_s)
    assert a.status == RequestStatus.FINISHED_ABORTED and a.num_anon_blocks == 0 and a.entries == []
    # b finishes its prompt, decodes; abort it while decoding
    while eng.scheduler.decoding.get(b.idx) is not b:
        eng.complete_run()
    eng.abort(b, eng.run_start_s)
    _run_until(eng, 100.0)
    assert b.status == RequestStatus.FINISHED_ABORTED
    assert pool.num_used_blocks == 0 and eng.scheduler.num_unfinished == 0 and eng.run is None
    assert eng.abort(b, 100.0) is None  # already gone: no-op


def test_abort_cuts_a_multi_step_decode_run_at_the_step_in_flight() -> None:
    eng = ReplicaEngine(EngineConfig(block_size=16, max_num_seqs=8), LinearStepModel(), 1000)
    reqs = make_requests(2, prompt=64, output=400)
    for r in reqs:
        eng.add_request(r, 0.0)
    while eng.run is not None and eng.run.num_steps == 1:  # prefills; then a long pure-decode run
        eng.complete_run()
    assert eng.run is not None and eng.run.num_steps > 10
    end_before = eng.run_end_s
    t = eng.run_start_s + 3.5 * (end_before - eng.run_start_s) / eng.run.num_steps
    new_end = eng.abort(reqs[0], t)
    assert new_end is not None and new_end < end_before  # the run ends after the step in flight
    _run_until(eng, new_end)
    assert reqs[0].status == RequestStatus.FINISHED_ABORTED and reqs[0].num_output_tokens < 400
    _run_until(eng, 1e9)
    assert reqs[1].status == RequestStatus.FINISHED_STOPPED and reqs[1].num_output_tokens == 400
    assert eng.kv.pool.num_used_blocks == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario(), st.lists(st.tuples(st.integers(0, 24), st.floats(0, 6.0, allow_nan=False)), max_size=8))
def test_random_aborts_never_leak_kv_or_finish_an_aborted_request(scn, aborts) -> None:  # type: ignore[no-untyped-def]
    cfg, num_blocks, reqs = scn
    eng = ReplicaEngine(EngineConfig(**cfg), LinearStepModel(), num_blocks)  # type: ignore[arg-type]
    bs = int(cfg["block_size"])  # type: ignore[call-overload]
    unit = max(16, bs)
    objs = [EngineRequest(i, t, p, o, tuple(1000 * g + k for k in range(p // unit)) if g else (), unit // bs)
            for i, (t, p, o, g) in enumerate(reqs)]  # fmt: skip
    events = sorted([(r.arrival_s, 0, r.idx, r) for r in objs]
                    + [(max(t, objs[i % len(objs)].arrival_s), 1, i % len(objs), objs[i % len(objs)])
                       for i, t in aborts], key=lambda e: e[:3])  # fmt: skip
    finished: set[int] = set()
    k = 0
    now = 0.0
    while True:
        t_ev = events[k][0] if k < len(events) else float("inf")
        if t_ev == float("inf") and eng.run_end_s == float("inf"):
            break
        if t_ev <= eng.run_end_s:
            now = t_ev
            _, kind, _i, r = events[k]
            k += 1
            if kind == 0:
                eng.add_request(r, now)
            else:
                eng.abort(r, now)
        else:
            now = eng.run_end_s
            done, _first = eng.complete_run()
            for r in done:
                assert r.idx not in finished and r.status == RequestStatus.FINISHED_STOPPED
                finished.add(r.idx)
    aborted = {r.idx for r in objs if r.status == RequestStatus.FINISHED_ABORTED}
    assert finished.isdisjoint(aborted) and finished | aborted == set(range(len(objs)))
    for r in objs:
        if r.idx in finished:
            assert r.num_output_tokens == r.max_output_tokens
    assert eng.kv.pool.num_used_blocks == 0  # nothing leaked
    assert eng.scheduler.num_unfinished == 0


def test_abort_during_a_pd_kv_transfer_frees_the_blocks_and_ignores_the_arrival() -> None:
    eng = ReplicaEngine(EngineConfig(block_size=16, max_num_seqs=8), LinearStepModel(), 1000)
    req = EngineRequest(0, 0.0, 512, 10)
    req.remote_kv = True  # P/D decode side: the prompt's KV comes from a prefill replica
    eng.add_request(req, 0.0)
    while eng.run is not None and req.idx not in eng.scheduler.transferring:
        eng.complete_run()
    assert req.idx in eng.scheduler.transferring and eng.kv.pool.num_used_blocks > 0
    t = eng.run_end_s if eng.run is not None else 0.0
    eng.abort(req, t if t != float("inf") else 0.0)
    while eng.run is not None:
        eng.complete_run()
    assert req.status == RequestStatus.FINISHED_ABORTED and eng.kv.pool.num_used_blocks == 0
    assert eng.finish_transfer(req, 1.0) is None  # the KV arriving later is ignored
    assert eng.scheduler.num_unfinished == 0


def test_abort_of_a_request_this_engine_never_saw_is_a_no_op() -> None:
    eng = make_engine(num_blocks=100, block_size=16)
    (mine,) = make_requests(1, prompt=64, output=4)
    stranger = EngineRequest(99, 0.0, 64, 4)
    eng.add_request(mine, 0.0)
    while eng.run is not None:
        eng.complete_run()
    assert eng.scheduler.abort(stranger) is False and stranger.status != RequestStatus.FINISHED_ABORTED
    assert mine.status == RequestStatus.FINISHED_STOPPED and eng.kv.pool.num_used_blocks == 0
