"""Admission control: budgets, queue limits, priority classes, token-fair queueing, concurrency."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.policy.admission import (
    AdmissionController,
    AdmissionLimits,
    TenantLimits,
    Verdict,
)


def _ctl(max_inflight: int = 1, **kw: object) -> AdmissionController:
    tenants = kw.pop("tenants", [TenantLimits("a"), TenantLimits("b")])
    return AdmissionController(tenants, AdmissionLimits(max_inflight=max_inflight, **kw))  # type: ignore[arg-type]


def test_dispatch_when_free_then_queue() -> None:
    c = _ctl(max_inflight=1)
    t1 = c.make_ticket("a", 10, 10, 0.0)
    t2 = c.make_ticket("a", 10, 10, 0.0)
    assert c.submit(t1, 0.0).verdict is Verdict.DISPATCH
    assert c.submit(t2, 0.0).verdict is Verdict.QUEUED
    assert c.next_ready(0.0) is None
    c.complete(t1, 20, 1.0)
    assert c.next_ready(1.0) is t2
    c.complete(t2, 20, 2.0)
    assert c.num_inflight == 0 and c.num_queued == 0


def test_token_fairness_quiet_tenant_overtakes_flood() -> None:
    c = _ctl(max_inflight=1)
    blocker = c.make_ticket("a", 1, 1, 0.0)
    assert c.submit(blocker, 0.0).verdict is Verdict.DISPATCH
    flood = [c.make_ticket("a", 1000, 100, 0.0) for _ in range(10)]
    for t in flood:
        c.submit(t, 0.0)
    quiet = c.make_ticket("b", 50, 10, 0.1)
    assert c.submit(quiet, 0.1).verdict is Verdict.QUEUED
    c.complete(blocker, 2, 0.2)
    first = c.next_ready(0.2)
    # the flood's first request started at V=0 too, so one of the two goes first; the quiet one is at most second
    order = [first]
    assert first is not None
    c.complete(first, 1, 0.3)
    order.append(c.next_ready(0.3))
    assert quiet in order


def test_weights_share_tokens_not_requests() -> None:
    # tenant a sends 100-token requests, b sends 1000-token requests, equal weight: a gets ~10x the requests
    c = _ctl(max_inflight=1)
    hold = c.make_ticket("a", 1, 1, 0.0)
    c.submit(hold, 0.0)
    for _ in range(200):
        c.submit(c.make_ticket("a", 90, 10, 0.0), 0.0)
        c.submit(c.make_ticket("b", 990, 10, 0.0), 0.0)
    c.complete(hold, 2, 0.0)
    served = {"a": 0, "b": 0}
    tokens = {"a": 0, "b": 0}
    for i in range(110):
        t = c.next_ready(float(i))
        assert t is not None
        served[t.tenant] += 1
        tokens[t.tenant] += t.cost_tokens
        c.complete(t, t.cost_tokens, float(i))
    assert served["a"] > 8 * served["b"]
    assert 0.7 < tokens["a"] / tokens["b"] < 1.4


def test_priority_classes_are_strict() -> None:
    tenants = [TenantLimits("low", priority=0), TenantLimits("high", priority=5)]
    c = _ctl(max_inflight=1, tenants=tenants)
    hold = c.make_ticket("low", 1, 1, 0.0)
    c.submit(hold, 0.0)
    lows = [c.make_ticket("low", 1, 1, 0.0) for _ in range(3)]
    for t in lows:
        c.submit(t, 0.0)
    high = c.make_ticket("high", 5000, 100, 1.0)
    c.submit(high, 1.0)
    c.complete(hold, 1, 2.0)
    assert c.next_ready(2.0) is high


def test_tokens_per_minute_budget_and_retry_after() -> None:
    c = _ctl(max_inflight=10, tenants=[TenantLimits("a", tokens_per_min=600)])
    t1 = c.make_ticket("a", 400, 100, 0.0)
    assert c.submit(t1, 0.0).verdict is Verdict.DISPATCH
    t2 = c.make_ticket("a", 400, 100, 0.0)
    d = c.submit(t2, 0.0)
    assert d.verdict is Verdict.REJECTED and d.http_status == 429 and d.error_code == "rate_limit_exceeded"
    # 100 tokens left, needs 500 → 400 tokens at 10 tokens/s
    assert d.retry_after_s == pytest.approx(40.0)
    # actual usage smaller than charged: refund
    c.complete(t1, 100, 0.0)
    t3 = c.make_ticket("a", 400, 100, 0.0)
    assert c.submit(t3, 0.0).verdict is Verdict.DISPATCH
    # refill over time
    c.complete(t3, 500, 0.0)
    assert c.submit(c.make_ticket("a", 400, 100, 59.9), 59.9).verdict is Verdict.DISPATCH


def test_day_budget_uses_quota_code() -> None:
    c = _ctl(max_inflight=10, tenants=[TenantLimits("a", tokens_per_day=1000)])
    c.submit(c.make_ticket("a", 900, 100, 0.0), 0.0)
    d = c.submit(c.make_ticket("a", 10, 10, 1.0), 1.0)
    assert d.http_status == 429 and d.error_code == "insufficient_quota" and d.retry_after_s is not None


def test_request_bigger_than_bucket_admitted_when_full() -> None:
    c = _ctl(max_inflight=10, tenants=[TenantLimits("a", tokens_per_min=100)])
    assert c.submit(c.make_ticket("a", 500, 100, 0.0), 0.0).verdict is Verdict.DISPATCH
    assert c.submit(c.make_ticket("a", 1, 1, 1.0), 1.0).verdict is Verdict.REJECTED


def test_queue_limits_tenant_429_gateway_503() -> None:
    c = _ctl(max_inflight=1, max_queued=3, tenants=[TenantLimits("a", max_queued=2), TenantLimits("b")])
    c.submit(c.make_ticket("a", 1, 1, 0.0), 0.0)
    assert c.submit(c.make_ticket("a", 1, 1, 0.0), 0.0).verdict is Verdict.QUEUED
    assert c.submit(c.make_ticket("a", 1, 1, 0.0), 0.0).verdict is Verdict.QUEUED
    d = c.submit(c.make_ticket("a", 1, 1, 0.0), 0.0)
    assert d.http_status == 429 and d.retry_after_s is not None and d.retry_after_s >= 1
    assert c.submit(c.make_ticket("b", 1, 1, 0.0), 0.0).verdict is Verdict.QUEUED
    d = c.submit(c.make_ticket("b", 1, 1, 0.0), 0.0)
    assert d.http_status == 503 and d.error_code == "server_overloaded"


def test_tenant_max_concurrency_queues_and_lets_others_through() -> None:
    c = _ctl(max_inflight=4, tenants=[TenantLimits("a", max_concurrency=1), TenantLimits("b")])
    a1, a2 = c.make_ticket("a", 1, 1, 0.0), c.make_ticket("a", 1, 1, 0.0)
    assert c.submit(a1, 0.0).verdict is Verdict.DISPATCH
    assert c.submit(a2, 0.0).verdict is Verdict.QUEUED
    assert c.submit(c.make_ticket("b", 1, 1, 0.0), 0.0).verdict is Verdict.DISPATCH
    assert c.next_ready(0.0) is None
    c.complete(a1, 2, 1.0)
    assert c.next_ready(1.0) is a2


def test_cancel_and_expire_refund() -> None:
    c = _ctl(max_inflight=1, max_queue_wait_s=5.0, tenants=[TenantLimits("a", tokens_per_min=1000)])
    c.submit(c.make_ticket("a", 100, 100, 0.0), 0.0)
    q1, q2 = c.make_ticket("a", 100, 100, 0.0), c.make_ticket("a", 100, 100, 3.0)
    c.submit(q1, 0.0)
    c.submit(q2, 3.0)
    assert c.budget_levels("a", 3.0)[0] == pytest.approx(1000 - 600 + 3 * 1000 / 60)
    assert c.expire(6.0) == [q1]
    assert c.cancel(q2, 6.0)
    assert not c.cancel(q2, 6.0)
    assert c.num_queued == 0


def test_update_tenants_keeps_state() -> None:
    c = _ctl(max_inflight=1, tenants=[TenantLimits("a", tokens_per_min=1000)])
    t = c.make_ticket("a", 500, 100, 0.0)
    c.submit(t, 0.0)
    c.update_tenants([TenantLimits("a", tokens_per_min=2000, weight=2.0)])
    assert c.tenant_limits("a").weight == 2.0
    assert c.budget_levels("a", 0.0)[0] == pytest.approx(400)
    c.complete(t, 600, 0.0)
    assert c.num_inflight == 0


def test_bad_limits_rejected() -> None:
    with pytest.raises(ValueError, match="weight"):
        TenantLimits("a", weight=0)
    with pytest.raises(ValueError, match="max_inflight"):
        AdmissionLimits(max_inflight=0)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["submit", "complete", "cancel", "tick"]), st.integers(0, 2), st.integers(1, 3000)),
        max_size=80,
    ),
    max_inflight=st.integers(1, 4),
)
def test_property_counters_consistent(ops: list[tuple[str, int, int]], max_inflight: int) -> None:
    tenants = [
        TenantLimits("t0", tokens_per_min=5000, max_queued=5),
        TenantLimits("t1", priority=1, max_concurrency=2),
        TenantLimits("t2", weight=3.0, tokens_per_day=20000),
    ]
    c = AdmissionController(tenants, AdmissionLimits(max_inflight=max_inflight, max_queued=8, max_queue_wait_s=10))
    now = 0.0
    inflight: list = []
    queued: list = []
    for op, tenant_idx, n in ops:
        now += 0.5
        if op == "submit":
            t = c.make_ticket(f"t{tenant_idx}", n, n // 10 or None, now)
            d = c.submit(t, now)
            if d.verdict is Verdict.DISPATCH:
                inflight.append(t)
            elif d.verdict is Verdict.QUEUED:
                queued.append(t)
            else:
                assert d.http_status in (429, 503) and d.retry_after_s is not None and d.retry_after_s > 0
        elif op == "complete" and inflight:
            c.complete(inflight.pop(0), n, now)
        elif op == "cancel" and queued:
            t = queued.pop(0)
            assert c.cancel(t, now)
        else:
            for t in c.expire(now):
                queued.remove(t)
        while (t := c.next_ready(now)) is not None:
            queued.remove(t)
            inflight.append(t)
        assert c.num_inflight == len(inflight) <= max_inflight
        assert c.num_queued == len(queued)
        counts = c.tenant_counts()
        assert sum(q for q, _ in counts.values()) == len(queued)
        assert counts["t1"][1] <= 2
    for t in inflight:
        c.complete(t, 0, now)
    for t in queued:
        c.cancel(t, now)
    assert c.num_inflight == 0 and c.num_queued == 0


def test_fair_share_burst_admits_quiet_tenant_beside_flood() -> None:
    c = AdmissionController([TenantLimits("flood"), TenantLimits("quiet")],
                            AdmissionLimits(max_inflight=4, fair_share_burst=2))
    flood = [c.make_ticket("flood", 100, 10, 0.0) for _ in range(10)]
    verdicts = [c.submit(t, 0.0).verdict for t in flood]
    # alone, the flood gets the 4 regular slots only (it is above its fair share of 4 when alone)
    assert verdicts.count(Verdict.DISPATCH) == 4 and c.num_queued == 6
    q = c.make_ticket("quiet", 5, 5, 1.0)
    assert c.submit(q, 1.0).verdict is Verdict.DISPATCH  # below its share (2 of 4): a burst slot
    assert c.num_inflight == 5
    assert c.next_ready(1.0) is None  # the flood cannot use burst slots
    q2 = c.make_ticket("quiet", 5, 5, 1.0)
    assert c.submit(q2, 1.0).verdict is Verdict.DISPATCH
    q3 = c.make_ticket("quiet", 5, 5, 1.0)
    assert c.submit(q3, 1.0).verdict is Verdict.QUEUED  # the burst is used up (4 + 2)
