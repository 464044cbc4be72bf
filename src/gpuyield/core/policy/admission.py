"""Admission control and fairness: who may send what, how much, and in which order.

Pure decisions over plain data, like the routing policies: the caller owns time (``now_s``, seconds on any
monotonic clock — simulated seconds in the simulator, ``time.monotonic()`` in the gateway) and the actual
dispatching. The same :class:`AdmissionController` runs in ``simulate`` and in ``serve``.

What it decides, in order, when a request arrives (:meth:`AdmissionController.submit`):

1. **Token budgets** per tenant: a tokens-per-minute and a tokens-per-day token bucket. A request is charged
   its *estimated* tokens (prompt + ``max_tokens``, or prompt + ``default_output_tokens`` when the client set
   none) at admission; :meth:`complete` reconciles the charge with the tokens the engine actually reported.
   A request bigger than a whole bucket is admitted when the bucket is full (the tenant goes into debt)
   rather than never. Empty bucket → ``429`` with ``Retry-After`` = time until the bucket refills enough.
2. **Queue limits**: a tenant's own queue (``max_queued`` per tenant) full → ``429``; the queue of the
   request's capacity pool (``AdmissionLimits.max_queued`` per pool: per model in the gateway, one shared
   queue when requests name no pool) full → ``503``, so a flood on one model cannot fill the queue another
   model's requests need. Both carry a ``Retry-After`` estimated from the observed completion rate.
3. **Dispatch order** (:meth:`next_ready`): strict **priority classes** first (larger ``priority`` wins), then
   **start-time fair queueing by tokens** across tenants inside a class (Goyal, Vin, Cheng, SIGCOMM'96): each
   request gets a virtual start tag ``S = max(V, F_tenant)`` and finish tag ``F = S + cost_tokens / weight``;
   the queued head with the smallest ``S`` goes next and the virtual time ``V`` moves to its ``S``. A tenant
   flooding long prompts therefore waits behind a quiet tenant's short ones, in proportion to *tokens*, not
   request counts, and an idle tenant accrues no credit.
4. **Concurrency**: at most ``AdmissionLimits.max_inflight`` requests dispatched at once (the caller sets it,
   e.g. ``max_inflight_per_replica × healthy replicas``, via :meth:`set_max_inflight`), and at most
   ``TenantLimits.max_concurrency`` per tenant; requests beyond either wait in the queue, they are not refused.
   **Capacity pools**: a request may also name the pool of replicas that can serve it (``Ticket.pool``, the
   model name in the gateway) and each pool may have its own in-flight limit (:meth:`set_pool_limits`: in the
   gateway, ``max_inflight`` of the healthy replicas that serve the model; a replica serving several models
   counts for each). A request waits only for its own pool: the queue is scanned per tenant for the oldest
   request whose pool has room, so a flood on one model never holds back another model's requests
   (head-of-line blocking across models), while order within a tenant and pool stays FIFO.
   The fair-share burst below applies per pool too, judged by the tenant's share of that pool.
   **Fair-share burst**: up to ``fair_share_burst`` further slots are open only to a tenant whose in-flight
   count is below its weighted fair share of ``max_inflight`` (``max_inflight × weight / Σ weights`` of the
   tenants with work in flight or queued). A quiet tenant arriving while a flood holds every regular slot is
   therefore dispatched at once instead of waiting for the flood's next completion -- the flood's backlog
   still queues. (Set it to the headroom the engines have beyond ``max_inflight``.)

Work-conserving: when capacity is free and nothing of equal or higher priority is queued, a request dispatches
at once (:attr:`Verdict.DISPATCH`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "AdmissionController",
    "AdmissionLimits",
    "Decision",
    "TenantLimits",
    "Ticket",
    "TokenBucket",
    "Verdict",
]

_SECONDS_PER_MINUTE = 60.0
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """One tenant's admission parameters. ``None`` means unlimited."""

    name: str
    priority: int = 0  # larger = more important; strict across classes
    weight: float = 1.0  # share of tokens within a priority class, > 0
    tokens_per_min: int | None = None  # token-bucket capacity, refilled over a minute
    tokens_per_day: int | None = None  # token-bucket capacity, refilled over a day
    max_concurrency: int | None = None  # requests of this tenant dispatched at once
    max_queued: int | None = None  # requests of this tenant waiting in the gateway

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("tenant name must be non-empty")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"tenant {self.name!r}: weight must be a positive number, got {self.weight}")
        for label, value in (
            ("tokens_per_min", self.tokens_per_min),
            ("tokens_per_day", self.tokens_per_day),
            ("max_concurrency", self.max_concurrency),
            ("max_queued", self.max_queued),
        ):
            if value is not None and value < 1:
                raise ValueError(f"tenant {self.name!r}: {label} must be >= 1 or unset, got {value}")


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Gateway-wide limits."""

    max_inflight: int = 256  # requests dispatched to engines at once (>= 1)
    max_queued: int = 1024  # requests waiting in the gateway (>= 0)
    max_queue_wait_s: float = 30.0  # a queued request older than this is expired by :meth:`expire`
    default_output_tokens: int = 256  # output estimate charged when a request has no max_tokens
    fair_share_burst: int = 0  # extra slots beyond max_inflight, only for tenants below their fair share

    def __post_init__(self) -> None:
        if self.fair_share_burst < 0:
            raise ValueError(f"fair_share_burst must be >= 0, got {self.fair_share_burst}")
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {self.max_inflight}")
        if self.max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {self.max_queued}")
        if not self.max_queue_wait_s > 0:
            raise ValueError(f"max_queue_wait_s must be > 0, got {self.max_queue_wait_s}")
        if self.default_output_tokens < 1:
            raise ValueError(f"default_output_tokens must be >= 1, got {self.default_output_tokens}")


class Verdict(StrEnum):
    DISPATCH = "dispatch"  # send it now
    QUEUED = "queued"  # wait; it comes out of :meth:`AdmissionController.next_ready`
    REJECTED = "rejected"  # refuse with ``http_status`` and ``retry_after_s``


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str = ""  # one line, e.g. "tenant 'a' tokens_per_min exhausted"
    http_status: int = 200  # 429 (the tenant's limit) or 503 (the gateway's)
    error_code: str = ""  # OpenAI-style error code, e.g. "rate_limit_exceeded"
    retry_after_s: float | None = None  # seconds, when a retry can succeed


@dataclass(slots=True)
class Ticket:
    """One request inside the controller. Create through :meth:`AdmissionController.make_ticket`."""

    ticket_id: int
    tenant: str
    cost_tokens: int  # estimated tokens charged at admission (prompt + expected output)
    priority: int
    arrival_s: float
    start_tag: float = 0.0  # SFQ virtual start tag
    finish_tag: float = 0.0  # SFQ virtual finish tag
    charged_tokens: int = 0  # what the budgets were charged so far
    state: str = "new"  # new | queued | inflight | done
    pool: str = ""  # capacity pool it needs (the model, in the gateway); "" = only the gateway-wide limit


@dataclass(slots=True)
class TokenBucket:
    """A token bucket holding up to ``capacity`` tokens, refilled at ``rate_per_s``. May go into debt."""

    capacity: float
    rate_per_s: float
    level: float = field(default=-1.0)
    last_s: float | None = None

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = self.capacity

    def refill(self, now_s: float) -> None:
        if self.last_s is not None and now_s > self.last_s:
            self.level = min(self.capacity, self.level + (now_s - self.last_s) * self.rate_per_s)
        if self.last_s is None or now_s > self.last_s:
            self.last_s = now_s

    def need(self, tokens: int) -> float:
        """The level required to admit ``tokens`` (a request bigger than the bucket needs a full bucket)."""
        return min(float(tokens), self.capacity)

    def retry_after_s(self, tokens: int, now_s: float) -> float:
        self.refill(now_s)
        deficit = self.need(tokens) - self.level
        return 0.0 if deficit <= 0 else deficit / self.rate_per_s

    def take(self, tokens: float) -> None:
        self.level -= tokens


@dataclass(slots=True)
class _TenantState:
    limits: TenantLimits
    queue: deque[Ticket] = field(default_factory=deque)
    queued_by_pool: dict[str, int] = field(default_factory=dict)  # pool -> tickets of it in ``queue``
    inflight: int = 0
    inflight_by_pool: dict[str, int] = field(default_factory=dict)
    last_finish_tag: float = 0.0
    minute: TokenBucket | None = None
    day: TokenBucket | None = None


class AdmissionController:
    """Priority classes, token-fair queueing, budgets and concurrency limits. See the module docstring.

    Call sequence: ``t = make_ticket(...)``; ``d = submit(t, now)``; if ``d.verdict is DISPATCH`` send it;
    if ``QUEUED`` wait until :meth:`next_ready` returns it (call ``next_ready`` after every :meth:`complete`
    or :meth:`set_max_inflight`); when it ends call ``complete(t, actual_tokens, now)``; if it is given up
    while queued (client gone, timeout) call :meth:`cancel`. A ticket dispatched but never sent to an engine
    is completed with ``actual_tokens=0`` to refund its charge.
    """

    def __init__(
        self,
        tenants: list[TenantLimits] | tuple[TenantLimits, ...] = (),
        limits: AdmissionLimits | None = None,
        default_tenant: TenantLimits | None = None,
    ) -> None:
        self.limits = limits or AdmissionLimits()
        self._default = default_tenant or TenantLimits(name="default")
        self._tenants: dict[str, _TenantState] = {}
        for t in tenants:
            self._add_tenant(t)
        self._max_inflight = self.limits.max_inflight
        self._inflight = 0
        self._pool_limit: dict[str, int] = {}  # pool -> in-flight limit (pools not listed: no own limit)
        self._pool_inflight: dict[str, int] = {}
        self._pool_queued: dict[str, int] = {}
        self._queued = 0
        self._virtual_time = 0.0
        self._next_id = 0
        # completion-rate estimate (EWMA of requests/s) for Retry-After on full queues
        self._rate_req_per_s = 0.0
        self._last_complete_s: float | None = None

    # ---- configuration -------------------------------------------------------------------------------
    def _add_tenant(self, t: TenantLimits) -> _TenantState:
        st = _TenantState(limits=t)
        if t.tokens_per_min is not None:
            st.minute = TokenBucket(t.tokens_per_min, t.tokens_per_min / _SECONDS_PER_MINUTE)
        if t.tokens_per_day is not None:
            st.day = TokenBucket(t.tokens_per_day, t.tokens_per_day / _SECONDS_PER_DAY)
        self._tenants[t.name] = st
        return st

    def update_tenants(self, tenants: list[TenantLimits] | tuple[TenantLimits, ...]) -> None:
        """Apply new tenant limits (config reload); queues, in-flight counts and bucket levels are kept."""
        new = {t.name: t for t in tenants}
        for name, t in new.items():
            old = self._tenants.get(name)
            if old is None:
                self._add_tenant(t)
                continue
            fresh = _TenantState(limits=t)
            if t.tokens_per_min is not None:
                fresh.minute = TokenBucket(t.tokens_per_min, t.tokens_per_min / _SECONDS_PER_MINUTE)
                if old.minute is not None:
                    fresh.minute.level = min(old.minute.level, fresh.minute.capacity)
                    fresh.minute.last_s = old.minute.last_s
            if t.tokens_per_day is not None:
                fresh.day = TokenBucket(t.tokens_per_day, t.tokens_per_day / _SECONDS_PER_DAY)
                if old.day is not None:
                    fresh.day.level = min(old.day.level, fresh.day.capacity)
                    fresh.day.last_s = old.day.last_s
            old.limits, old.minute, old.day = t, fresh.minute, fresh.day
        # tenants removed from the config keep their state until drained; new requests for them use defaults

    def set_max_inflight(self, max_inflight: int) -> None:
        """Change the gateway-wide dispatch limit (e.g. when replicas become healthy or die). Min 1."""
        self._max_inflight = max(1, int(max_inflight))

    def set_pool_limits(self, limits: dict[str, int]) -> None:
        """Replace the per-pool in-flight limits (``pool -> limit``, min 1); pools not named have none."""
        self._pool_limit = {str(k): max(1, int(v)) for k, v in limits.items()}

    def _pool_free(self, pool: str, st: _TenantState) -> bool:
        """Room in ``pool`` for a ticket of ``st`` (the fair-share burst applies per pool as gateway-wide)."""
        cap = self._pool_limit.get(pool)
        if cap is None:
            return True
        n = self._pool_inflight.get(pool, 0)
        if n < cap:
            return True
        # burst slot: only for a tenant below its weighted share of this pool
        return n < cap + self.limits.fair_share_burst and self._under_fair_share(st, pool)

    def _runnable(self, st: _TenantState) -> Ticket | None:
        """The tenant's oldest queued ticket whose pool has room (None if none, or the tenant cannot run)."""
        if not st.queue or not self._tenant_can_run(st) or not self._slot_free(st):
            return None
        head = st.queue[0]
        if not self._pool_limit or self._pool_free(head.pool, st):
            return head
        # cheap check first (a flood's backlog is long): is any pool with queued tickets free at all?
        free = {p for p, n in st.queued_by_pool.items() if n and self._pool_free(p, st)}
        if not free:
            return None
        # the oldest ticket of a free pool (FIFO per tenant and pool)
        return next(t for t in st.queue if t.pool in free)

    def tenant_limits(self, tenant: str) -> TenantLimits:
        st = self._tenants.get(tenant)
        return st.limits if st is not None else self._default

    def _state(self, tenant: str) -> _TenantState:
        st = self._tenants.get(tenant)
        if st is None:
            st = self._add_tenant(
                TenantLimits(
                    name=tenant,
                    priority=self._default.priority,
                    weight=self._default.weight,
                    tokens_per_min=self._default.tokens_per_min,
                    tokens_per_day=self._default.tokens_per_day,
                    max_concurrency=self._default.max_concurrency,
                    max_queued=self._default.max_queued,
                )
            )
        return st

    # ---- the decisions -------------------------------------------------------------------------------
    def estimate_cost(self, input_tokens: int, max_output_tokens: int | None) -> int:
        """Tokens charged at admission: prompt + max_tokens (or the default output estimate)."""
        out = self.limits.default_output_tokens if max_output_tokens is None else max_output_tokens
        return max(1, int(input_tokens) + max(0, int(out)))

    def make_ticket(
        self,
        tenant: str,
        input_tokens: int,
        max_output_tokens: int | None,
        now_s: float,
        priority: int | None = None,
        pool: str = "",
    ) -> Ticket:
        st = self._state(tenant)
        self._next_id += 1
        return Ticket(
            ticket_id=self._next_id,
            tenant=tenant,
            cost_tokens=self.estimate_cost(input_tokens, max_output_tokens),
            priority=st.limits.priority if priority is None else int(priority),
            arrival_s=now_s,
            pool=pool,
        )

    def submit(self, ticket: Ticket, now_s: float) -> Decision:
        """Admit, queue or reject ``ticket``. On DISPATCH/QUEUED the budgets have been charged."""
        if ticket.state != "new":
            raise ValueError(f"ticket {ticket.ticket_id} was already submitted")
        st = self._state(ticket.tenant)
        lim = st.limits
        # 1. budgets
        for label, bucket in (("tokens_per_min", st.minute), ("tokens_per_day", st.day)):
            if bucket is None:
                continue
            wait_s = bucket.retry_after_s(ticket.cost_tokens, now_s)
            if wait_s > 0:
                ticket.state = "done"
                return Decision(
                    Verdict.REJECTED,
                    f"tenant {ticket.tenant!r} {label} budget exhausted "
                    f"(request needs ~{ticket.cost_tokens} tokens)",
                    429,
                    "rate_limit_exceeded" if label == "tokens_per_min" else "insufficient_quota",
                    wait_s,
                )
        # 2. queue limits (only when it would have to queue)
        must_queue = not self._can_dispatch_now(st, ticket)
        if must_queue:
            if lim.max_queued is not None and len(st.queue) >= lim.max_queued:
                ticket.state = "done"
                return Decision(
                    Verdict.REJECTED,
                    f"tenant {ticket.tenant!r} queue full ({lim.max_queued} waiting)",
                    429,
                    "rate_limit_exceeded",
                    self._queue_retry_after_s(len(st.queue)),
                )
            waiting = self._pool_queued.get(ticket.pool, 0)
            if waiting >= self.limits.max_queued:
                ticket.state = "done"
                where = f"model {ticket.pool!r}" if ticket.pool else "gateway"
                return Decision(
                    Verdict.REJECTED,
                    f"{where} queue full ({self.limits.max_queued} waiting)",
                    503,
                    "server_overloaded",
                    self._queue_retry_after_s(waiting),
                )
        # charge budgets
        for bucket in (st.minute, st.day):
            if bucket is not None:
                bucket.take(ticket.cost_tokens)
        ticket.charged_tokens = ticket.cost_tokens
        # 3. fair-queueing tags
        ticket.start_tag = max(self._virtual_time, st.last_finish_tag)
        ticket.finish_tag = ticket.start_tag + ticket.cost_tokens / lim.weight
        st.last_finish_tag = ticket.finish_tag
        if not must_queue:
            self._start(st, ticket)
            return Decision(Verdict.DISPATCH)
        ticket.state = "queued"
        st.queue.append(ticket)
        st.queued_by_pool[ticket.pool] = st.queued_by_pool.get(ticket.pool, 0) + 1
        self._pool_queued[ticket.pool] = self._pool_queued.get(ticket.pool, 0) + 1
        self._queued += 1
        return Decision(Verdict.QUEUED)

    def _under_fair_share(self, st: _TenantState, pool: str | None = None) -> bool:
        """``st`` holds less than its weighted share of the gateway's slots (or of ``pool``'s), among the
        tenants with work in flight or queued there."""
        if pool is None:
            total_w = sum(o.limits.weight for o in self._tenants.values() if o.inflight or o.queue or o is st)
            return st.inflight < self._max_inflight * st.limits.weight / total_w
        total_w = sum(o.limits.weight for o in self._tenants.values()
                      if o.inflight_by_pool.get(pool) or o.queued_by_pool.get(pool) or o is st)  # fmt: skip
        return st.inflight_by_pool.get(pool, 0) < self._pool_limit[pool] * st.limits.weight / total_w

    def _slot_free(self, st: _TenantState) -> bool:
        if self._inflight < self._max_inflight:
            return True
        return (self._inflight < self._max_inflight + self.limits.fair_share_burst
                and self._under_fair_share(st))

    def _can_dispatch_now(self, st: _TenantState, ticket: Ticket) -> bool:
        if not self._slot_free(st) or not self._pool_free(ticket.pool, st):
            return False
        if st.limits.max_concurrency is not None and st.inflight >= st.limits.max_concurrency:
            return False
        # do not overtake queued requests of equal or higher priority that could run (the tenant's own too)
        for other in self._tenants.values():
            head = self._runnable(other)
            if head is not None and head.priority >= ticket.priority:
                return False
        return True

    @staticmethod
    def _tenant_can_run(st: _TenantState) -> bool:
        return st.limits.max_concurrency is None or st.inflight < st.limits.max_concurrency

    def _start(self, st: _TenantState, ticket: Ticket) -> None:
        ticket.state = "inflight"
        st.inflight += 1
        self._inflight += 1
        self._pool_inflight[ticket.pool] = self._pool_inflight.get(ticket.pool, 0) + 1
        st.inflight_by_pool[ticket.pool] = st.inflight_by_pool.get(ticket.pool, 0) + 1
        self._virtual_time = max(self._virtual_time, ticket.start_tag)

    def next_ready(self, now_s: float) -> Ticket | None:
        """Pop the next queued ticket that may be dispatched now (or None), and count it in flight."""
        if self._queued == 0 or self._inflight >= self._max_inflight + self.limits.fair_share_burst:
            return None
        best: _TenantState | None = None
        best_key: tuple[int, float, int] | None = None
        best_ticket: Ticket | None = None
        for st in self._tenants.values():
            head = self._runnable(st)
            if head is None:
                continue
            key = (-head.priority, head.start_tag, head.ticket_id)
            if best_key is None or key < best_key:
                best, best_key, best_ticket = st, key, head
        if best is None or best_ticket is None:
            return None
        ticket = best_ticket
        if best.queue[0] is ticket:
            best.queue.popleft()
        else:
            best.queue.remove(ticket)
        best.queued_by_pool[ticket.pool] -= 1
        self._pool_queued[ticket.pool] -= 1
        self._queued -= 1
        self._start(best, ticket)
        return ticket

    def complete(self, ticket: Ticket, actual_tokens: int, now_s: float) -> None:
        """``ticket`` finished (or failed after dispatch): free its slot, reconcile budgets with actual usage."""
        if ticket.state != "inflight":
            raise ValueError(f"ticket {ticket.ticket_id} is not in flight (state {ticket.state})")
        st = self._state(ticket.tenant)
        ticket.state = "done"
        st.inflight -= 1
        self._inflight -= 1
        self._pool_inflight[ticket.pool] -= 1
        st.inflight_by_pool[ticket.pool] -= 1
        self._reconcile(st, ticket, max(0, int(actual_tokens)))
        if self._last_complete_s is not None:
            dt = max(now_s - self._last_complete_s, 1e-6)
            inst = 1.0 / dt
            self._rate_req_per_s = inst if self._rate_req_per_s == 0 else 0.9 * self._rate_req_per_s + 0.1 * inst
        self._last_complete_s = now_s

    def cancel(self, ticket: Ticket, now_s: float) -> bool:
        """Withdraw a queued ticket (client gone, timeout); refunds its charge. False if not queued."""
        if ticket.state != "queued":
            return False
        st = self._state(ticket.tenant)
        try:
            st.queue.remove(ticket)
        except ValueError:  # pragma: no cover - state says queued, so it is there
            return False
        st.queued_by_pool[ticket.pool] -= 1
        self._pool_queued[ticket.pool] -= 1
        self._queued -= 1
        ticket.state = "done"
        self._reconcile(st, ticket, 0)
        return True

    def expire(self, now_s: float) -> list[Ticket]:
        """Remove and return queued tickets that waited longer than ``max_queue_wait_s`` (charges refunded)."""
        out: list[Ticket] = []
        deadline = now_s - self.limits.max_queue_wait_s
        for st in self._tenants.values():
            while st.queue and st.queue[0].arrival_s <= deadline:
                t = st.queue[0]
                self.cancel(t, now_s)
                out.append(t)
        return out

    def _reconcile(self, st: _TenantState, ticket: Ticket, actual_tokens: int) -> None:
        delta = ticket.charged_tokens - actual_tokens  # > 0: refund
        for bucket in (st.minute, st.day):
            if bucket is not None and delta != 0:
                bucket.level = min(bucket.capacity, bucket.level + delta)
        ticket.charged_tokens = actual_tokens

    def _queue_retry_after_s(self, ahead: int) -> float:
        if self._rate_req_per_s <= 0:
            return 1.0
        return float(min(60.0, max(1.0, ahead / self._rate_req_per_s)))

    # ---- observation ---------------------------------------------------------------------------------
    @property
    def num_inflight(self) -> int:
        return self._inflight

    @property
    def num_queued(self) -> int:
        return self._queued

    @property
    def max_inflight(self) -> int:
        return self._max_inflight

    def pool_counts(self) -> dict[str, tuple[int, int, int | None]]:
        """``pool -> (queued, inflight, limit)`` for every pool with a limit or with work."""
        queued = self._pool_queued
        pools = set(self._pool_limit) | {k for k, v in queued.items() if v} | {
            k for k, v in self._pool_inflight.items() if v
        }
        return {p: (queued.get(p, 0), self._pool_inflight.get(p, 0), self._pool_limit.get(p)) for p in sorted(pools)}

    def has_pool_limit(self, pool: str) -> bool:
        """Whether ``pool`` has its own in-flight limit (set by :meth:`set_pool_limits`)."""
        return pool in self._pool_limit

    def tenant_counts(self) -> dict[str, tuple[int, int]]:
        """``tenant -> (queued, inflight)``."""
        return {name: (len(st.queue), st.inflight) for name, st in self._tenants.items()}

    def budget_levels(self, tenant: str, now_s: float) -> tuple[float | None, float | None]:
        """Remaining tokens in the minute and day buckets (None = unlimited)."""
        st = self._state(tenant)
        out: list[float | None] = []
        for bucket in (st.minute, st.day):
            if bucket is None:
                out.append(None)
            else:
                bucket.refill(now_s)
                out.append(bucket.level)
        return out[0], out[1]
