"""The exact per-replica block index fed by KV-cache events, and prefix routing that uses it."""

from __future__ import annotations

from gpuyield.core.policy.base import ReplicaSnapshot, RequestView
from gpuyield.core.policy.kv_events import KVEventIndex
from gpuyield.core.policy.routing import PrefixAffinityPolicy
from gpuyield.core.workload.hashing import hash_token_blocks

BS = 4
TOKENS = list(range(100, 124))  # 6 blocks of 4
OURS = hash_token_blocks(TOKENS, BS)


def _store(idx: KVEventIndex, rep: str, first: int, last: int, parent: object | None) -> None:
    engine = [f"{rep}-e{k}" for k in range(first, last)]
    idx.stored(rep, engine, parent, TOKENS[first * BS : last * BS], BS)


def test_blocks_are_rekeyed_to_our_chained_hashes_across_events() -> None:
    idx = KVEventIndex(BS)
    _store(idx, "r0", 0, 2, None)
    _store(idx, "r0", 2, 4, "r0-e1")  # parent: the engine hash of block 1
    assert idx.match("r0", OURS) == 4 and idx.num_blocks("r0") == 4
    assert idx.removed("r0", ["r0-e2"]) == 1
    assert idx.match("r0", OURS) == 2  # a hole ends the prefix
    idx.cleared("r0")
    assert idx.match("r0", OURS) == 0 and idx.tracks("r0")


def test_unknown_parents_and_other_block_sizes_are_counted_not_guessed() -> None:
    idx = KVEventIndex(BS)
    _store(idx, "r0", 2, 4, "never-seen")
    assert idx.unchained == 2 and idx.match("r0", OURS) == 0
    idx.stored("r0", ["x"], None, TOKENS[:16], 16)
    assert idx.wrong_block_size == 1
    assert idx.removed("r9", ["x"]) == 0 and not idx.tracks("r9")


def test_duplicate_prefix_on_two_engine_blocks_survives_one_removal() -> None:
    idx = KVEventIndex(BS)
    idx.stored("r0", ["a"], None, TOKENS[:4], BS)
    idx.stored("r0", ["b"], None, TOKENS[:4], BS)  # same content, another engine block
    idx.removed("r0", ["a"])
    assert idx.match("r0", OURS) == 1


def test_prefix_routing_follows_the_engines_view_over_its_guess() -> None:
    pol = PrefixAffinityPolicy(rate_halflife_s=0)
    reps = [ReplicaSnapshot("r0"), ReplicaSnapshot("r1"), ReplicaSnapshot("r2")]
    req = RequestView("q", "m", 24, block_hashes=OURS, block_size_tokens=BS)
    pol.on_dispatch(req, "r0", 0.0)  # the guess: r0 holds the prefix
    assert pol.choose(req, reps, 1.0) == "r0"
    exact = KVEventIndex(BS)
    pol.exact = exact
    exact.track("r0")  # r0's events say it evicted everything
    _store(exact, "r2", 0, 6, None)  # and r2 really holds all six blocks
    assert pol.choose(req, reps, 2.0) == "r2"
    exact.forget("r2")  # r2's stream is gone; r0's events still say evicted
    assert pol.index.match(OURS) == {"r0": 6}  # the guess alone would still say r0
    exact.forget("r0")
    assert pol.choose(req, reps, 4.0) == "r0"  # no streams at all: the guess again


def test_data_parallel_ranks_hold_blocks_separately() -> None:
    idx = KVEventIndex(BS)
    # both ranks computed the same prompt: same engine hashes, two caches
    idx.stored("r", ["e0", "e1"], None, TOKENS[:8], BS, rank=0)
    idx.stored("r", ["e0", "e1"], None, TOKENS[:8], BS, rank=1)
    idx.stored("r", ["e2"], "e1", TOKENS[8:12], BS, rank=1)  # the parent is rank 1's own block
    assert idx.match("r", OURS) == 3
    assert idx.removed("r", ["e0", "e1"], rank=0) == 2  # rank 0 evicts: rank 1 still holds them
    assert idx.match("r", OURS) == 3
    idx.cleared("r", rank=1)  # rank 1's engine restarted: nothing is held any more
    assert idx.match("r", OURS) == 0 and idx.num_blocks("r") == 0 and idx.tracks("r")


def test_a_suspended_replica_is_routed_by_the_guess_while_its_events_still_apply() -> None:
    pol = PrefixAffinityPolicy(rate_halflife_s=0)
    reps = [ReplicaSnapshot("r0"), ReplicaSnapshot("r1")]
    req = RequestView("q", "m", 24, block_hashes=OURS, block_size_tokens=BS)
    pol.on_dispatch(req, "r0", 0.0)  # the guess: r0
    exact = KVEventIndex(BS)
    pol.exact = exact
    exact.track("r0")  # r0's events: nothing held
    _store(exact, "r1", 0, 6, None)
    assert pol.choose(req, reps, 1.0) == "r1"
    exact.suspend("r0")
    exact.suspend("r1")  # both views incomplete (events lost): the guess decides
    assert not exact.tracks("r1") and pol.choose(req, reps, 2.0) == "r0"
    _store(exact, "r0", 0, 6, None)  # events keep arriving while suspended
    exact.resume("r0")
    exact.resume("r1")
    assert exact.match("r0", OURS) == 6 and exact.tracks("r0")


def test_cost_routing_uses_the_engines_view_too() -> None:
    from gpuyield.core.policy.routing import CostPolicy

    pol = CostPolicy()
    reps = [ReplicaSnapshot("r0", prefill_s_per_token=1e-3), ReplicaSnapshot("r1", prefill_s_per_token=1e-3)]
    req = RequestView("q", "m", 24, block_hashes=OURS, block_size_tokens=BS)
    pol.on_dispatch(req, "r0", 0.0)  # the guess: r0 has the prefix, so it predicts the lower TTFT
    assert pol.choose(req, reps, 1.0) == "r0"
    exact = KVEventIndex(BS)
    pol.exact = exact
    exact.track("r0")
    _store(exact, "r1", 0, 6, None)  # the engines say r1 holds it and r0 evicted it
    assert pol.choose(req, reps, 2.0) == "r1"
