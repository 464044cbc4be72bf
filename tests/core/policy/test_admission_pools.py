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
