"""Block pool and KV manager: counts, reference counts, LRU eviction order, prefix hits."""

from __future__ import annotations

from gpuyield.core.sim.engine import BlockPool, EngineRequest, KVCacheManager, OffloadTier


def test_allocate_free_and_invariant() -> None:
    pool = BlockPool(10)
    assert pool.allocate(4)
    assert pool.num_free_blocks == 6 and pool.num_used_blocks == 4
    assert not pool.allocate(7)  # nothing taken on failure
    assert pool.num_free_blocks == 6
    pool.free(4)
    assert pool.num_free_blocks == 10


def test_lru_evicts_oldest_free_entry_first() -> None:
    pool = BlockPool(4)
    evicted: list[int] = []
    pool.on_evict = lambda e: evicted.append(e.block_hash)
    assert pool.allocate(4)
    a, b = pool.insert(1, 2), pool.insert(2, 2)
    pool.release(b)  # b freed first -> oldest in the LRU
    pool.release(a)
    assert pool.num_free_blocks == 4 and pool.num_free_cached == 4
    assert pool.allocate(2)
    assert evicted == [2] and 2 not in pool.cached and 1 in pool.cached
    pool.touch(a)  # a hit takes it out of the LRU
    assert pool.num_free_blocks == 0
    assert not pool.allocate(1)


def test_prefix_hit_shares_blocks_and_caps_at_num_tokens_minus_one() -> None:
    kv = KVCacheManager(100, 16)
    hashes = (11, 12, 13, 14)
    r1 = EngineRequest(0, 0.0, 64, 4, hashes, 1)
    assert kv.get_computed(r1) == ([], 0)
    assert kv.allocate_admit(r1, [], 0, 64)
    assert r1.num_entry_blocks == 4 and r1.num_anon_blocks == 0
    r2 = EngineRequest(1, 0.0, 64, 4, hashes, 1)
    hits, _ = kv.get_computed(r2)
    assert len(hits) == 3  # at most num_tokens - 1 = 63 tokens -> 3 full blocks
    used = kv.pool.num_used_blocks
    assert kv.allocate_admit(r2, hits, 0, 64 - 48)
    assert kv.pool.num_used_blocks == used  # the 4th block is shared too once computed
    kv.free(r1)
    kv.free(r2)
    assert kv.pool.num_used_blocks == 0 and kv.pool.num_free_cached == 4


def test_offload_tier_keeps_evicted_units_and_reloads_them() -> None:
    off = OffloadTier(capacity_blocks=100, s_per_token=1e-6)
    kv = KVCacheManager(4, 16, offload=off)
    r1 = EngineRequest(0, 0.0, 64, 1, (1, 2, 3, 4), 1)
    assert kv.allocate_admit(r1, [], 0, 64)
    kv.free(r1)
    filler = EngineRequest(1, 0.0, 64, 1)
    assert kv.allocate_admit(filler, [], 0, 64)  # evicts all four units into the tier
    assert off.num_blocks == 4
    kv.free(filler)
    r2 = EngineRequest(2, 0.0, 64, 1, (1, 2, 3, 4), 1)
    hits, num_load = kv.get_computed(r2)
    assert hits == [] and num_load == 3
    assert kv.allocate_admit(r2, hits, num_load, 16)
    assert r2.load_tokens == 48 and r2.num_computed_tokens == 48


def test_offload_reload_survives_the_tier_evicting_the_unit_during_allocation() -> None:
    # Regression: admitting a request that reloads unit 10 from a 1-block tier evicts GPU entry 20 into the
    # tier, which pushes 10 out; this used to raise KeyError (seen in `gpuyield plan` on mooncake-synthetic).
    off = OffloadTier(capacity_blocks=1, s_per_token=1e-6)
    kv = KVCacheManager(4, 16, offload=off)
    ra = EngineRequest(0, 0.0, 17, 1, (10,), 1)
    assert kv.allocate_admit(ra, [], 0, 17)
    kv.free(ra)
    filler = EngineRequest(1, 0.0, 64, 1)
    assert kv.allocate_admit(filler, [], 0, 64)  # evicts unit 10 into the tier
    kv.free(filler)
    rb = EngineRequest(2, 0.0, 17, 1, (20,), 1)
    assert kv.allocate_admit(rb, [], 0, 17)
    kv.free(rb)
    assert list(off.units) == [10] and kv.pool.num_free_cached == 1
    r2 = EngineRequest(3, 0.0, 64, 1, (10, 30, 31, 32), 1)
    hits, num_load = kv.get_computed(r2)
    assert hits == [] and num_load == 1
    assert kv.allocate_admit(r2, hits, num_load, 48)
    assert r2.load_tokens == 16 and off.num_loaded_tokens == 16
    assert list(off.units) == [20]  # 20 came in, 10 went out
    assert kv.pool.num_used_blocks == 4 and kv.pool.num_free_blocks == 0
