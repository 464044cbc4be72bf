"""KV block accounting of the engine model under random traffic: every block a sequence holds is counted
exactly (its tokens' blocks, its bounded sliding-window / linear-state blocks, whole or as long as the
sequence, its shared prefix entries), the
pool never overflows, and everything comes back when the traffic ends -- through preemptions, aborts, P/D
transfers, prefix-cache hits, an offload tier and output reservations."""

from __future__ import annotations

import heapq
import itertools
import random

import pytest
from sim_helpers import LinearStepModel

from gpuyield.core.sim.engine import EngineConfig, EngineRequest, ReplicaEngine
from gpuyield.core.sim.engine.config import OffloadTierConfig
from gpuyield.core.sim.engine.request import RequestStatus


def _expected_used(eng: ReplicaEngine) -> int:
    """Blocks the requests hold, counted from their state alone."""
    s = eng.scheduler
    total = 0
    for r in [*s.prefilling, *s.transferring.values(), *s.ready]:
        assert r.num_fixed_blocks == eng.kv.fixed_for(r.num_prompt_tokens, r.max_output_tokens)
        assert r.num_anon_blocks >= r.num_fixed_blocks
        total += r.num_anon_blocks
    for r in s.decoding.values():
        c = r.decode_c0 + s.G - r.decode_g0
        held = -(-(c + (1 if s._step_blocks_allocated else 0)) // s.block_size)
        assert held >= r.num_entry_blocks
        total += held - r.num_entry_blocks + r.num_fixed_blocks
    entries = {id(e): e for e in eng.kv.pool.cached.values() if e.ref_cnt > 0}
    return total + sum(e.num_blocks for e in entries.values())


def _check(eng: ReplicaEngine) -> None:
    pool = eng.kv.pool
    assert pool.num_free_uncached >= 0 and pool.num_free_cached >= 0
    assert pool.num_used_blocks <= pool.num_blocks
    assert pool.num_used_blocks == _expected_used(eng)


def _run(seed: int) -> int:
    rng = random.Random(seed)
    bs = rng.choice([2, 4, 16])
    fixed = rng.choice([0, 3, 9])
    # a window of `window` tokens on `fixed` blocks' worth of layers: min(length, window) of it is held
    window = rng.choice([0, 2 * bs, 5 * bs])
    fixed_of = (lambda n: -(-fixed * min(n, window) // window)) if window else None
    prefix_caching = rng.random() < 0.6
    chunked = rng.random() < 0.7
    admission = rng.choice(["on_demand", "on_demand", "max_output"])
    pd = rng.random() < 0.25
    offload = None
    if prefix_caching and rng.random() < 0.3:
        offload = OffloadTierConfig("cpu", capacity_bytes=rng.randint(1, 20) * bs * 1000, read_bytes_per_s=1e9)
    max_seqs = rng.choice([1, 3, 8, 64])
    budget = max(rng.choice([8, 32, 256]), max_seqs)
    cfg = EngineConfig(block_size=bs, max_num_seqs=max_seqs, max_num_batched_tokens=budget,
                       enable_prefix_caching=prefix_caching, enable_chunked_prefill=chunked, kv_admission=admission,
                       max_decode_run_steps=rng.choice([None, 1, 3]), offload=offload)  # fmt: skip
    eng = ReplicaEngine(cfg, LinearStepModel(), rng.randint(fixed + 4, fixed + 60),
                        kv_bytes_per_token=1000.0 if offload else 0.0, fixed_blocks_per_seq=fixed,
                        fixed_blocks_of=fixed_of)  # fmt: skip
    unit_blocks = rng.choice([1, 2])
    prefixes = [tuple(rng.getrandbits(40) for _ in range(12)) for _ in range(3)]
    events: list[tuple[float, int, str, EngineRequest]] = []
    order = itertools.count()
    reqs = []
    t = 0.0
    for i in range(rng.randint(1, 40)):
        t += rng.expovariate(100.0)
        prompt, output = rng.randint(1, 6 * bs * unit_blocks), rng.randint(1, 3 * bs)
        if eng.can_ever_fit(prompt, output) is not None:
            continue  # (chunked prefill off: prompt + output within the budget, as a recompute needs)
        hashes: tuple[int, ...] = ()
        if prefix_caching:
            units = prompt // (bs * unit_blocks)
            shared = min(rng.randint(0, units), 12)
            hashes = (rng.choice(prefixes)[:shared] + tuple(rng.getrandbits(40) for _ in range(units - shared)))[:units]
        remote = pd and output > 1 and rng.random() < 0.7  # the cluster sends only O > 1 to a decode pool
        r = EngineRequest(i, t, prompt, output, unit_hashes=hashes, unit_blocks=unit_blocks, remote_kv=remote)
        if remote:
            r.num_output_tokens = 1  # the prefill side made the first token
        reqs.append(r)
        heapq.heappush(events, (t, next(order), "arrive", r))
        if rng.random() < 0.2:
            heapq.heappush(events, (t + rng.expovariate(33.0), next(order), "abort", r))
    now = 0.0
    for _ in range(200_000):
        t_event = events[0][0] if events else float("inf")
        if t_event == float("inf") and eng.run_end_s == float("inf"):
            break
        if t_event <= eng.run_end_s:
            now, _, kind, r = heapq.heappop(events)
            if kind == "arrive":
                eng.add_request(r, now)
            elif kind == "abort":
                eng.abort(r, now)
            else:
                eng.finish_transfer(r, now)
        else:
            now = eng.run_end_s
            eng.complete_run()
        for er in eng.new_transfers:
            heapq.heappush(events, (now + rng.expovariate(200.0), next(order), "transfer", er))
        eng.new_transfers.clear()
        _check(eng)
    else:
        raise AssertionError(f"seed {seed}: no progress")
    assert all(RequestStatus.is_finished(r.status) for r in reqs), f"seed {seed}: requests left waiting"
    assert eng.kv.pool.num_used_blocks == 0
    if admission == "max_output":
        assert eng.scheduler._final_blocks == 0, f"seed {seed}: output reservations leaked"
    return int(eng.scheduler.num_preemptions)


@pytest.mark.parametrize("first", range(0, 1500, 300))
def test_every_block_is_counted_and_returned_under_random_traffic(first: int) -> None:
    preemptions = sum(_run(seed) for seed in range(first, first + 300))
    assert preemptions > 0  # the traffic does exercise preemption
