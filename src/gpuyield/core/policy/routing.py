"""Routing policies: the same classes run in the simulator (``gpuyield simulate``/``plan``) and the gateway.

Each policy only *decides* (``choose``) from a :class:`RequestView` and the eligible replicas'
:class:`ReplicaSnapshot` s; its own bookkeeping (a round-robin cursor, an approximate prefix index) changes
only in ``choose``/``on_dispatch``/``on_complete``. Nothing here knows about the simulator.

- ``round_robin``: rotate over the eligible replicas.
- ``least_outstanding``: fewest dispatched-and-unfinished requests (ties: fewer waiting, then lower KV use).
- ``least_kv``: lowest KV-cache utilisation (ties: fewest outstanding requests).
- ``prefix_affinity``: send a request where its longest prefix was sent before (an approximate prefix index
  kept by the router, like SGLang's cache-aware router and llm-d's prefix scorer), and otherwise to a
  consistent-hash home of its first prefix block. A *load guard* (consistent hashing with bounded loads,
  Mirrokni et al. 2018) refuses any replica whose outstanding requests exceed ``load_factor`` × the mean
  (+1): the request then goes to the next replica on the hash ring that is under the bound, so one hot prefix
  can never pull all traffic to one replica. Requests without prefix hashes go to the least-outstanding replica.
- ``cost``: predicted TTFT = queueing (outstanding prefill tokens × prefill time per token, plus one decode
  step if the replica is busy) + uncached prefill (prompt minus the prefix the router expects cached there) +
  transfer/wake time; the replica with the lowest prediction wins (llm-d's and Dynamo's KV-aware routers
  score variants of this).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from gpuyield.core.policy.base import ReplicaSnapshot, RequestView, RoutingPolicy
from gpuyield.core.policy.kv_events import PrefixCacheView
from gpuyield.core.workload.hashing import mix64
from gpuyield.errors import ConfigError

__all__ = [
    "POLICY_NAMES",
    "CostPolicy",
    "LeastKvPolicy",
    "LeastOutstandingPolicy",
    "PrefixAffinityPolicy",
    "PrefixIndex",
    "RoundRobinPolicy",
    "make_policy",
    "routes_by_prefix",
]


class RoundRobinPolicy(RoutingPolicy):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, req: RequestView, replicas: Sequence[ReplicaSnapshot], now_s: float) -> str:
        i = self._next % len(replicas)
        self._next += 1
        return replicas[i].replica_id


class LeastOutstandingPolicy(RoutingPolicy):
    name = "least_outstanding"

    def choose(self, req: RequestView, replicas: Sequence[ReplicaSnapshot], now_s: float) -> str:
        best = replicas[0]
        bo = best.outstanding_requests
        for r in replicas:
            o = r.outstanding_requests
            if o < bo or (
                o == bo and r is not best and (r.num_waiting, r.kv_util) < (best.num_waiting, best.kv_util)
            ):
                best, bo = r, o
        return best.replica_id


class LeastKvPolicy(RoutingPolicy):
    name = "least_kv"

    def choose(self, req: RequestView, replicas: Sequence[ReplicaSnapshot], now_s: float) -> str:
        best = replicas[0]
        bkey = (best.kv_util, best.outstanding_requests)
        for r in replicas[1:]:
            key = (r.kv_util, r.outstanding_requests)
            if key < bkey:
                best, bkey = r, key
        return best.replica_id


class PrefixIndex:
    """The router's approximate view of which replica holds which prefix block (bounded LRU).

    ``record`` remembers the replica a request's blocks were sent to; ``match`` returns, per replica, how many
    leading blocks of a request it is believed to hold. Like SGLang's router tree it is a guess (the engine may
    have evicted the blocks), bounded by ``max_entries`` so memory stays flat on long traces.
    """

    __slots__ = ("max_entries", "_where")

    def __init__(self, max_entries: int = 1 << 20) -> None:
        if max_entries < 1:
            raise ConfigError(f"prefix index max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._where: OrderedDict[int, set[str]] = OrderedDict()  # block hash -> replicas, LRU first

    def __len__(self) -> int:
        return len(self._where)

    def match(self, block_hashes: Sequence[int]) -> dict[str, int]:
        """Replica -> number of leading blocks of ``block_hashes`` it is believed to hold."""
        out: dict[str, int] = {}
        where = self._where
        alive: set[str] | None = None
        for i, h in enumerate(block_hashes):
            reps = where.get(h)
            if not reps:
                break
            alive = set(reps) if alive is None else alive & reps
            if not alive:
                break
            for r in alive:
                out[r] = i + 1
        return out

    def record(self, block_hashes: Sequence[int], replica_id: str) -> None:
        where = self._where
        for h in block_hashes:
            reps = where.get(h)
            if reps is None:
                where[h] = {replica_id}
                if len(where) > self.max_entries:
                    where.popitem(last=False)
            else:
                reps.add(replica_id)
                where.move_to_end(h)

    def forget_replica(self, replica_id: str) -> None:
        for reps in self._where.values():
            reps.discard(replica_id)


def _ring_point(key: str | int) -> int:
    if isinstance(key, int):
        return mix64(key & 0xFFFFFFFFFFFFFFFF)
    acc = 0xCBF29CE484222325
    for ch in key.encode():
        acc = ((acc ^ ch) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return mix64(acc)


def _with_exact_view(
    guess: dict[str, int],
    exact: PrefixCacheView | None,
    replicas: Sequence[ReplicaSnapshot],
    block_hashes: Sequence[int],
) -> dict[str, int]:
    """``guess`` (replica -> leading blocks believed cached) with what the replicas that publish KV-cache
    events really hold in place of the guess (``exact``: the engines' view, None when no stream is followed)."""
    if exact is None:
        return guess
    for r in replicas:
        rid = r.replica_id
        if exact.tracks(rid):
            n = exact.match(rid, block_hashes)
            if n:
                guess[rid] = n
            else:
                guess.pop(rid, None)
    return guess


class PrefixAffinityPolicy(RoutingPolicy):
    """Longest believed prefix match, else consistent hashing, always under a bounded-load guard."""

    name = "prefix_affinity"

    def __init__(
        self,
        load_factor: float = 1.25,
        virtual_nodes: int = 64,
        max_index_entries: int = 1 << 20,
        rate_halflife_s: float = 30.0,
    ) -> None:
        if load_factor < 1.0:
            raise ConfigError(f"prefix_affinity.load_factor must be >= 1.0, got {load_factor}")
        if rate_halflife_s < 0:
            raise ConfigError(f"prefix_affinity.rate_halflife_s must be >= 0 (0 = off), got {rate_halflife_s}")
        # Second guard: recent dispatches per replica (exponentially decayed counts). The outstanding-request
        # bound only binds under load; at light load requests finish before the next arrives, so without this
        # a hot prefix would stay on one replica forever (cumulative imbalance).
        self.rate_halflife_s = rate_halflife_s
        self._recent: dict[str, tuple[float, float]] = {}  # replica id -> (decayed count, at time)
        if virtual_nodes < 1:
            raise ConfigError(f"prefix_affinity.virtual_nodes must be >= 1, got {virtual_nodes}")
        self.load_factor = load_factor
        self.virtual_nodes = virtual_nodes
        self.index = PrefixIndex(max_index_entries)
        # the engines' own view from KV-cache events, for the replicas it tracks (None: guess only)
        self.exact: PrefixCacheView | None = None
        self._ring_ids: tuple[str, ...] = ()
        self._ring: list[tuple[int, str]] = []
        self._points: list[int] = []
        self._fallback = LeastOutstandingPolicy()

    def _ensure_ring(self, replicas: Sequence[ReplicaSnapshot]) -> None:
        ids = tuple(sorted(r.replica_id for r in replicas))
        if ids == self._ring_ids:
            return
        ring = sorted((_ring_point(f"{rid}#{v}"), rid) for rid in ids for v in range(self.virtual_nodes))
        self._ring = ring
        self._points = [p for p, _ in ring]
        self._ring_ids = ids

    def choose(self, req: RequestView, replicas: Sequence[ReplicaSnapshot], now_s: float) -> str:
        if len(replicas) == 1:
            return replicas[0].replica_id
        total = 0
        for r in replicas:
            total += r.outstanding_requests
        bound = self.load_factor * (total + 1) / len(replicas) + 1.0
        by_id = {r.replica_id: r for r in replicas}
        recent: dict[str, float] = {}
        r_bound = math.inf
        if self.rate_halflife_s > 0 and self._recent:
            for r in replicas:
                c, t = self._recent.get(r.replica_id, (0.0, now_s))
                recent[r.replica_id] = c * 0.5 ** (max(0.0, now_s - t) / self.rate_halflife_s)
            r_bound = self.load_factor * (sum(recent.values()) + 1.0) / len(replicas) + 1.0

        def over(snap: ReplicaSnapshot) -> bool:
            return snap.outstanding_requests >= bound or recent.get(snap.replica_id, 0.0) >= r_bound

        if req.block_hashes:
            matches = _with_exact_view(self.index.match(req.block_hashes), self.exact, replicas, req.block_hashes)
            if matches:
                best_id = None
                best_key: tuple[int, int, float] | None = None
                for rid, n in matches.items():
                    snap = by_id.get(rid)
                    if snap is None or over(snap):
                        continue
                    key = (-n, snap.outstanding_requests, recent.get(rid, 0.0))
                    if best_key is None or key < best_key:
                        best_id, best_key = rid, key
                if best_id is not None:
                    return best_id
                # every replica holding this prefix is over a bound: copy the prefix to the least-loaded one
                spare = [r for r in replicas if not over(r)]
                if spare:
                    return min(spare, key=lambda r: (recent.get(r.replica_id, 0.0), r.outstanding_requests,
                                                     r.replica_id)).replica_id  # fmt: skip
            self._ensure_ring(replicas)
            ring = self._ring
            i = bisect.bisect_left(self._points, _ring_point(req.block_hashes[0]))
            n_ring = len(ring)
            for step in range(n_ring):
                rid = ring[(i + step) % n_ring][1]
                if not over(by_id[rid]):
                    return rid
        return self._fallback.choose(req, replicas, now_s)

    def on_dispatch(self, req: RequestView, replica_id: str, now_s: float) -> None:
        if req.block_hashes:
            self.index.record(req.block_hashes, replica_id)
        if self.rate_halflife_s > 0:
            c, t = self._recent.get(replica_id, (0.0, now_s))
            self._recent[replica_id] = (c * 0.5 ** (max(0.0, now_s - t) / self.rate_halflife_s) + 1.0, now_s)

    def on_replica_removed(self, replica_id: str) -> None:
        self.index.forget_replica(replica_id)
        self._recent.pop(replica_id, None)


class CostPolicy(RoutingPolicy):
    """Lowest predicted time to first token."""

    name = "cost"

    def __init__(self, max_index_entries: int = 1 << 20, default_prefill_s_per_token: float = 1e-4) -> None:
        if default_prefill_s_per_token <= 0:
            raise ConfigError(f"cost.default_prefill_s_per_token must be > 0, got {default_prefill_s_per_token}")
        self.index = PrefixIndex(max_index_entries)
        self.default_prefill_s_per_token = default_prefill_s_per_token
        # the engines' own view from KV-cache events, for the replicas it tracks (None: guess only)
        self.exact: PrefixCacheView | None = None

    def predict_ttft_s(self, req: RequestView, r: ReplicaSnapshot, cached_blocks: int) -> float:
        per_tok = r.prefill_s_per_token or self.default_prefill_s_per_token
        uncached = max(req.input_tokens - cached_blocks * req.block_size_tokens, 1)
        queue = r.outstanding_prefill_tokens * per_tok
        if r.outstanding_requests > 0:
            queue += r.decode_step_s
        wake = r.wake_s if r.asleep else 0.0
        return queue + uncached * per_tok + r.transfer_s + wake

    def choose(self, req: RequestView, replicas: Sequence[ReplicaSnapshot], now_s: float) -> str:
        matches = (
            _with_exact_view(self.index.match(req.block_hashes), self.exact, replicas, req.block_hashes)
            if req.block_hashes
            else {}
        )
        best = replicas[0]
        best_t = self.predict_ttft_s(req, best, matches.get(best.replica_id, 0))
        for r in replicas[1:]:
            t = self.predict_ttft_s(req, r, matches.get(r.replica_id, 0))
            if t < best_t or (t == best_t and r.outstanding_requests < best.outstanding_requests):
                best, best_t = r, t
        return best.replica_id

    def on_dispatch(self, req: RequestView, replica_id: str, now_s: float) -> None:
        if req.block_hashes:
            self.index.record(req.block_hashes, replica_id)

    def on_replica_removed(self, replica_id: str) -> None:
        self.index.forget_replica(replica_id)


_POLICIES: dict[str, type[RoutingPolicy]] = {
    "round_robin": RoundRobinPolicy,
    "least_outstanding": LeastOutstandingPolicy,
    "least_kv": LeastKvPolicy,
    "prefix_affinity": PrefixAffinityPolicy,
    "cost": CostPolicy,
}
POLICY_NAMES: tuple[str, ...] = tuple(_POLICIES)
# policies that read the engines' own prefix-cache view (``exact``) when KV-cache events are followed
_PREFIX_VIEW_POLICIES = (PrefixAffinityPolicy, CostPolicy)


def routes_by_prefix(name: str) -> bool:
    """Whether policy ``name`` routes by prefix and so can use the engines' KV-cache events."""
    return _POLICIES.get(name.replace("-", "_")) in _PREFIX_VIEW_POLICIES


def make_policy(name: str, **kwargs: Any) -> RoutingPolicy:
    """A routing policy by name (``round_robin``, ``least_outstanding``, ``least_kv``, ``prefix_affinity``,
    ``cost``) with its keyword arguments; unknown names or arguments raise :class:`ConfigError`."""
    cls = _POLICIES.get(name.replace("-", "_"))
    if cls is None:
        raise ConfigError(f"router.policy: unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"router.policy {name!r}: bad arguments {sorted(kwargs)}: {exc}") from None
