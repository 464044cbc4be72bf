"""ResidencyPolicy hooks the live gateway needs: abandon a held request, a failed wake, a wake seen to finish."""

from __future__ import annotations

import pytest

from gpuyield.core.policy.residency import ModelFootprint, ModelState, ResidencyPolicy


def _fp(name: str) -> ModelFootprint:
    return ModelFootprint(name, weight_bytes=8e9, kv_budget_bytes=2e9, wake_l1_s=0.5, wake_l2_s=2.0,
                          cold_load_s=30.0, sleep_s=0.2)


def _policy() -> ResidencyPolicy:
    return ResidencyPolicy("g", 20e9, [_fp("a"), _fp("b"), _fp("c")], host_memory_bytes=100e9,
                           initially_awake=("a", "b"), prewarmed=True)


def test_abandoned_hold_clears_draining() -> None:
    p = _policy()
    assert p.acquire("a", 0.0) == 0.0 and p.acquire("b", 0.0) == 0.0  # both busy
    assert p.acquire("c", 1.0) is None  # held: a and b drain
    assert p.acquire("a", 1.5) is None  # draining a takes no new work while c waits
    p.abandon("a", 1.6)
    p.abandon("c", 2.0)  # c's client gave up: nobody waits, so a is not draining any more
    assert p.waiting("c") == 0
    assert p.acquire("a", 2.1) == 2.1
    with pytest.raises(ValueError):
        p.abandon("c", 2.2)


def test_wake_failed_makes_the_model_not_resident_and_frees_its_memory() -> None:
    p = _policy()
    ready = p.acquire("c", 0.0)  # a and b idle: one is evicted, c wakes from level 1
    assert ready is not None and p.state("c", 0.1) == ModelState.WAKING
    used = p.used_bytes()
    p.wake_failed("c", 0.2)
    p.release("c", 0.2)
    assert p.state("c", 0.3) == ModelState.ASLEEP_L2 and p.used_bytes() == used - 10e9
    assert p.log[-1][1:] == ("c", "wake_failed")
    assert p.acquire("c", 1.0) == pytest.approx(1.0 + 2.0)  # the next request tries again (level-2 wake)


def test_mark_awake_ends_the_wake_when_the_engine_says_so() -> None:
    p = _policy()
    ready = p.acquire("c", 0.0)
    assert ready is not None and ready > 0.1
    p.mark_awake("c", 0.1)
    assert p.state("c", 0.1) == ModelState.AWAKE
    assert p.log[-1][1:] == ("c", "ready") and p.log[-1][0] == 0.1
    p.mark_awake("c", 0.2)  # already awake: no change
    assert p.log[-1][0] == 0.1
