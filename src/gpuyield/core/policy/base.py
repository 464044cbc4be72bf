"""The routing-policy contract shared by the simulator and the live gateway.

A policy *decides*; it never performs I/O or reads a clock. The caller (simulator cluster or gateway)
builds a :class:`RequestView` for the incoming request and a :class:`ReplicaSnapshot` for every eligible
replica, calls :meth:`RoutingPolicy.choose`, then reports what happened through :meth:`on_dispatch` and
:meth:`on_complete`. Time, when a policy needs it, arrives as ``now_s`` from the caller's clock
(simulated seconds in the simulator, monotonic seconds in the gateway).

The same class, with the same constructor arguments, runs in ``simulate``, ``plan`` and ``serve``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ReplicaSnapshot", "RequestView", "RoutingPolicy"]


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a router may know about a request before it is sent."""

    req_id: str
    model: str  # catalogue model id or served model name
    input_tokens: int  # prompt length in tokens (exact or approximate)
    max_output_tokens: int | None = None  # the request's max_tokens, when given
    block_hashes: tuple[int, ...] = ()  # chained hashes of full prompt blocks, prefix order
    block_size_tokens: int = 16  # tokens per hashed block in ``block_hashes``
    tenant: str = "default"
    priority: int = 0  # larger = more important
    session_id: str | None = None


@dataclass(slots=True)
class ReplicaSnapshot:
    """A replica's state as the router sees it at decision time. All fields are plain numbers."""

    replica_id: str
    pool: str = "mixed"  # "mixed" | "prefill" | "decode"
    models: tuple[str, ...] = ()  # models this replica can serve now or after a wake
    healthy: bool = True
    outstanding_requests: int = 0  # dispatched and not finished (running + waiting at the engine)
    outstanding_prefill_tokens: int = 0  # prompt tokens not yet prefilled at the engine
    num_waiting: int = 0  # requests queued at the engine (not yet scheduled)
    kv_util: float = 0.0  # fraction of KV blocks in use, 0..1
    max_num_seqs: int = 256
    # Performance hints used by the ``cost`` policy (seconds); 0 means "unknown".
    prefill_s_per_token: float = 0.0  # marginal prefill time per uncached prompt token
    decode_step_s: float = 0.0  # current decode step time
    transfer_s: float = 0.0  # extra time to reach this replica (e.g. KV transfer), seconds
    asleep: bool = False  # model weights offloaded; serving needs a wake
    wake_s: float = 0.0  # estimated time to wake
    extra: dict[str, float] = field(default_factory=dict)


class RoutingPolicy(ABC):
    """Chooses a replica for a request. Subclasses keep only their own bookkeeping state."""

    name: str = "base"

    @abstractmethod
    def choose(self, req: RequestView, replicas: Sequence[ReplicaSnapshot], now_s: float) -> str:
        """Return the ``replica_id`` of one of ``replicas`` (never empty, all eligible and healthy)."""

    def on_dispatch(self, req: RequestView, replica_id: str, now_s: float) -> None:  # noqa: B027
        """Called after ``req`` was sent to ``replica_id``."""

    def on_complete(self, req: RequestView, replica_id: str, now_s: float) -> None:  # noqa: B027
        """Called when ``req`` finished (or failed) on ``replica_id``."""

    def on_replica_removed(self, replica_id: str) -> None:  # noqa: B027
        """Called when a replica leaves the fleet; forget its state."""
