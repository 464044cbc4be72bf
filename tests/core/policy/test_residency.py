"""ResidencyPolicy: wake coalescing, eviction order, draining, idle sleep and its invariants."""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.policy.residency import ModelFootprint, ModelState, ResidencyPolicy
from gpuyield.errors import ConfigError

GB = 1e9


def fp(name: str, gb: float = 30.0, wake: float = 0.5) -> ModelFootprint:
    return ModelFootprint(name, weight_bytes=gb * GB * 0.6, kv_budget_bytes=gb * GB * 0.4, wake_l1_s=wake,
                          wake_l2_s=3.0, cold_load_s=30.0, sleep_s=0.2)  # fmt: skip


def test_cold_load_then_shared_wake() -> None:
    p = ResidencyPolicy("g", 80 * GB, [fp("a"), fp("b")], host_memory_bytes=100 * GB)
    assert p.acquire("a", 0.0) == pytest.approx(30.0)  # never started: cold load
    assert p.acquire("a", 1.0) == pytest.approx(30.0)  # a second request shares the same load
    assert p.stats.wakes == 1 and p.stats.cold_loads == 1
    assert p.state("a", 29.0) == ModelState.WAKING
    assert p.state("a", 30.0) == ModelState.AWAKE
    assert p.acquire("a", 31.0) == 31.0


def test_eviction_prefers_idle_and_least_demanded_models() -> None:
    p = ResidencyPolicy("g", 65 * GB, [fp("a"), fp("b"), fp("c")], host_memory_bytes=100 * GB,
                        initially_awake=("a", "b"))  # fmt: skip
    for t in range(5):  # a is popular, b is not
        p.acquire("a", float(t))
        p.release("a", float(t) + 0.1)
    p.acquire("b", 5.0)
    p.release("b", 5.1)
    ready = p.acquire("c", 10.0)
    assert ready == pytest.approx(10.0 + 0.2 + 3.0 * 0 + 30.0)  # b sleeps (0.2 s), then c's cold load
    assert p.state("b", 10.0) == ModelState.ASLEEP_L1
    assert p.state("a", 10.0) == ModelState.AWAKE


def test_busy_models_drain_instead_of_starving_the_waiting_one() -> None:
    p = ResidencyPolicy("g", 40 * GB, [fp("a"), fp("b")], initially_awake=("a",))
    assert p.acquire("a", 0.0) == 0.0  # a is running a request
    assert p.acquire("b", 1.0) is None  # b must wait: a is busy
    assert p.acquire("a", 2.0) is None  # a is draining: new work for a is held too
    assert p.retry("b", 2.5) is None
    p.release("a", 3.0)  # a is idle now: b can evict it
    assert p.retry("b", 3.0) == pytest.approx(3.0 + 0.2 + 30.0)
    assert p.state("a", 3.0) in (ModelState.ASLEEP_L1, ModelState.ASLEEP_L2)
    assert p.in_flight("b") == 1 and p.waiting("b") == 0
    assert p.waiting("a") == 1  # a's held request waits for the next swap


def test_idle_sleep_respects_forecast_and_in_flight() -> None:
    p = ResidencyPolicy("g", 80 * GB, [fp("a")], initially_awake=("a",), idle_sleep_s=60.0,
                        forecast_halflife_s=30.0)  # fmt: skip
    p.acquire("a", 0.0)
    assert p.due_sleeps(100.0) == []  # a request is in flight
    with pytest.raises(ValueError):
        p.mark_asleep("a", 100.0)
    p.release("a", 100.0)
    assert p.due_sleeps(130.0) == []  # idle for only 30 s
    assert p.due_sleeps(400.0) == ["a"]
    p.mark_asleep("a", 400.0)
    assert p.state("a", 400.0) == ModelState.ASLEEP_L2  # no host memory given: level 2
    assert p.stats.awake_time_s["a"] == pytest.approx(400.0)


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="needs"):
        ResidencyPolicy("g", 10 * GB, [fp("a", gb=30)])
    with pytest.raises(ConfigError, match="twice"):
        ResidencyPolicy("g", 80 * GB, [fp("a"), fp("a")])
    with pytest.raises(ConfigError, match="not placed"):
        ResidencyPolicy("g", 80 * GB, [fp("a")]).acquire("zzz", 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 5.0), st.floats(0.05, 20.0)), min_size=1, max_size=40))
def test_invariants_under_random_traffic(reqs: list[tuple[int, float, float]]) -> None:
    """Random arrivals and durations: memory never overcommitted, no sleep with work in flight (the policy
    raises if it would), at most one wake in progress per model, every held request eventually served."""
    models = ["m0", "m1", "m2", "m3"]
    p = ResidencyPolicy("g", 70 * GB, [fp(m) for m in models], host_memory_bytes=60 * GB, idle_sleep_s=10.0)
    t = 0.0
    events: list[tuple[float, int, str]] = []  # (time, kind 0=finish 1=arrive, model)
    for k, gap, dur in reqs:
        t += gap
        events.append((t, 1, models[k] + f"|{dur}"))
    held: list[tuple[str, float]] = []
    served = 0
    heap: list[tuple[float, int, str]] = list(events)
    heapq.heapify(heap)
    while heap:
        now, kind, what = heapq.heappop(heap)
        if kind == 1:
            model, dur_s = what.split("|")
            ready = p.acquire(model, now)
            if ready is None:
                held.append((model, float(dur_s)))
            else:
                heapq.heappush(heap, (max(ready, now) + float(dur_s), 0, model))
        else:
            p.release(what, now)
            served += 1
            still = []
            for model, dur in held:
                ready = p.retry(model, now)
                if ready is None:
                    still.append((model, dur))
                else:
                    heapq.heappush(heap, (max(ready, now) + dur, 0, model))
            held = still
        assert p.used_bytes() <= p.memory_bytes + 1.0
        for m in p.due_sleeps(now):
            p.mark_asleep(m, now)
    assert not held and served == len(reqs)
    # wakes never overlap for one model
    for m in models:
        ready_at = [t for t, mm, k in p.log if mm == m and k == "ready"]
        wake_at = [t for t, mm, k in p.log if mm == m and k == "wake"]
        for w_next, r_prev in zip(wake_at[1:], ready_at, strict=False):
            assert w_next >= r_prev - 1e-9
    assert math.isfinite(p.stats.wake_time_s)
