"""Per-model capacity pools in the AdmissionController: a flood on one model never holds back another's."""

from __future__ import annotations

from gpuyield.core.policy.admission import AdmissionController, AdmissionLimits, TenantLimits, Verdict


def _ctl(**limits: int) -> AdmissionController:
    ctl = AdmissionController([TenantLimits("a"), TenantLimits("b", tokens_per_min=1000)],
                              AdmissionLimits(max_inflight=limits.pop("total", 4), max_queued=100))  # fmt: skip
    ctl.set_pool_limits(limits)
    return ctl


def _submit(ctl: AdmissionController, tenant: str, pool: str, t: float = 0.0, tokens: int = 10):  # type: ignore[no-untyped-def]
    ticket = ctl.make_ticket(tenant, tokens, 0, t, pool=pool)
    return ticket, ctl.submit(ticket, t).verdict


def test_a_flooded_model_does_not_block_another_model_of_the_same_tenant() -> None:
    ctl = _ctl(total=4, A=2, B=2)
    flood = [_submit(ctl, "a", "A") for _ in range(6)]
    assert [v for _, v in flood] == [Verdict.DISPATCH] * 2 + [Verdict.QUEUED] * 4
    b1, vb = _submit(ctl, "a", "B")
    assert vb is Verdict.DISPATCH  # the queued A requests wait for A's slots, not for B's
    assert ctl.next_ready(0.0) is None  # A is full; B's one free slot has nothing queued for it
    b2, _ = _submit(ctl, "a", "B")
    b3, vb3 = _submit(ctl, "a", "B")
    assert vb3 is Verdict.QUEUED  # B is full now too (limit 2)
    ctl.complete(flood[0][0], 10, 1.0)
    assert ctl.next_ready(1.0) is flood[2][0]  # FIFO within the tenant and pool
    ctl.complete(b1, 10, 1.0)
    assert ctl.next_ready(1.0) is b3
    assert ctl.pool_counts() == {"A": (3, 2, 2), "B": (0, 2, 2)}


def test_the_gateway_wide_limit_and_the_tenant_budget_still_hold_across_models() -> None:
    ctl = _ctl(total=3, A=2, B=2)
    _submit(ctl, "a", "A")
    _submit(ctl, "a", "A")
    _, v = _submit(ctl, "a", "B")
    assert v is Verdict.DISPATCH
    _, v = _submit(ctl, "a", "B")
    assert v is Verdict.QUEUED  # B has room, the gateway does not (3 in flight)
    # tenant b's tokens-per-minute budget is one bucket for all models
    _, v1 = _submit(ctl, "b", "A", tokens=600)
    _, v2 = _submit(ctl, "b", "B", tokens=600)
    assert v1 is Verdict.QUEUED and v2 is Verdict.REJECTED


def test_pools_without_a_limit_and_requests_without_a_pool_use_only_the_gateway_limit() -> None:
    ctl = _ctl(total=2, A=1)
    _, v1 = _submit(ctl, "a", "C")
    _, v2 = _submit(ctl, "a", "")
    _, v3 = _submit(ctl, "a", "A")
    assert (v1, v2, v3) == (Verdict.DISPATCH, Verdict.DISPATCH, Verdict.QUEUED)
    ctl.set_pool_limits({})
    assert ctl.pool_counts()["A"] == (1, 0, None)


def test_an_older_blocked_request_of_another_tenant_does_not_stop_a_free_pool() -> None:
    ctl = _ctl(total=8, A=1, B=1)
    _submit(ctl, "a", "A")
    waiting, v = _submit(ctl, "a", "A", t=0.5)
    assert v is Verdict.QUEUED
    _, vb = _submit(ctl, "b", "B", t=1.0)
    assert vb is Verdict.DISPATCH  # the older queued A request cannot run, so it does not hold B back
    assert waiting.state == "queued"


def test_fair_share_burst_is_judged_per_pool() -> None:
    ctl = AdmissionController([TenantLimits("flood"), TenantLimits("quiet")],
                              AdmissionLimits(max_inflight=8, max_queued=100, fair_share_burst=2))  # fmt: skip
    ctl.set_pool_limits({"A": 2, "B": 2})
    verdicts = [_submit(ctl, "flood", "A")[1] for _ in range(4)]
    # alone on A, the flood tenant is at its share (2 of 2): no burst slot, the rest queues
    assert verdicts == [Verdict.DISPATCH, Verdict.DISPATCH, Verdict.QUEUED, Verdict.QUEUED]
    # a quiet tenant below its share of A gets one of A's burst slots at once
    _, v = _submit(ctl, "quiet", "A")
    assert v is Verdict.DISPATCH
    assert ctl.pool_counts()["A"] == (2, 3, 2)


# ---- ported from the per-model-admission branch (helper-16), on main's pool API --------------------------
def _two(cap_a: int = 2, cap_b: int = 2, **limits: float) -> AdmissionController:
    ctl = AdmissionController([TenantLimits("t")], AdmissionLimits(max_inflight=8, **limits))  # type: ignore[arg-type]
    ctl.set_pool_limits({"a": cap_a, "b": cap_b})
    return ctl


def test_a_full_model_queue_rejects_503_only_for_that_model() -> None:
    ctl = _two(max_queued=1)
    verdicts = [_submit(ctl, "t", "a")[1] for _ in range(3)]
    assert verdicts == [Verdict.DISPATCH, Verdict.DISPATCH, Verdict.QUEUED]
    t = ctl.make_ticket("t", 10, 0, 0.0, pool="a")
    d = ctl.submit(t, 0.0)
    assert (d.verdict, d.http_status, d.error_code) == (Verdict.REJECTED, 503, "server_overloaded")
    assert "model 'a' queue full" in d.reason and d.retry_after_s is not None
    # b's queue is its own: a's full queue does not turn b's requests away
    assert [_submit(ctl, "t", "b")[1] for _ in range(3)] == [Verdict.DISPATCH, Verdict.DISPATCH, Verdict.QUEUED]
    assert ctl.pool_counts() == {"a": (1, 2, 2), "b": (1, 2, 2)}


def test_requests_without_a_pool_share_one_gateway_queue() -> None:
    ctl = AdmissionController([TenantLimits("t")], AdmissionLimits(max_inflight=1, max_queued=2))
    assert [_submit(ctl, "t", "")[1] for _ in range(4)] == [Verdict.DISPATCH, Verdict.QUEUED, Verdict.QUEUED,
                                                             Verdict.REJECTED]  # fmt: skip
    d = ctl.submit(ctl.make_ticket("t", 1, 0, 0.0), 0.0)
    assert "gateway queue full" in d.reason


def test_completion_on_one_model_frees_only_that_models_slot() -> None:
    ctl = _two(cap_a=1, cap_b=1)
    a1, _ = _submit(ctl, "t", "a")
    a2, va2 = _submit(ctl, "t", "a")
    b1, _ = _submit(ctl, "t", "b")
    b2, vb2 = _submit(ctl, "t", "b")
    assert va2 is vb2 is Verdict.QUEUED
    ctl.complete(b1, 20, 1.0)
    assert ctl.next_ready(1.0) is b2
    assert ctl.next_ready(1.0) is None  # a's slot is still taken
    ctl.complete(a1, 20, 2.0)
    assert ctl.next_ready(2.0) is a2


def test_tenant_concurrency_is_global_across_models() -> None:
    ctl = AdmissionController([TenantLimits("t", max_concurrency=1)], AdmissionLimits(max_inflight=8))
    ctl.set_pool_limits({"a": 4, "b": 4})
    assert _submit(ctl, "t", "a")[1] is Verdict.DISPATCH
    assert _submit(ctl, "t", "b")[1] is Verdict.QUEUED


def test_token_fair_order_holds_within_one_model_queue() -> None:
    ctl = AdmissionController([TenantLimits("flood"), TenantLimits("quiet")], AdmissionLimits(max_inflight=8))
    ctl.set_pool_limits({"a": 1})
    first, _ = _submit(ctl, "flood", "a", tokens=1000)
    for _ in range(3):
        _submit(ctl, "flood", "a", tokens=1000)
    quiet, v = _submit(ctl, "quiet", "a", t=0.1, tokens=10)
    assert v is Verdict.QUEUED
    ctl.complete(first, 1000, 1.0)
    assert ctl.next_ready(1.0) is quiet  # the quiet tenant's small request goes before the flood's backlog


def test_queue_wait_expiry_is_per_request_whatever_its_model() -> None:
    ctl = _two(cap_a=1, cap_b=1, max_queue_wait_s=5.0)
    _submit(ctl, "t", "a")
    old_a, _ = _submit(ctl, "t", "a")
    _submit(ctl, "t", "b", t=3.0)
    young_b, _ = _submit(ctl, "t", "b", t=3.0)
    assert ctl.expire(6.0) == [old_a]
    assert young_b.state == "queued"
    assert ctl.pool_counts()["a"][0] == 0 and ctl.pool_counts()["b"][0] == 1


def test_a_model_with_no_live_replica_still_queues_one_at_a_time() -> None:
    ctl = _two()
    ctl.set_pool_limits({"a": 0, "b": 2})  # asleep or down: a pool of one, so requests queue (and wake it)
    assert ctl.has_pool_limit("a") and not ctl.has_pool_limit("c")
    assert _submit(ctl, "t", "a")[1] is Verdict.DISPATCH
    assert _submit(ctl, "t", "a")[1] is Verdict.QUEUED
