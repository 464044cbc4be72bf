"""Which prompt blocks each replica really holds, from the engines' KV-cache events (pure core, no I/O).

vLLM publishes ``BlockStored`` (block hashes, the parent block's hash, the blocks' token ids, the block size),
``BlockRemoved`` (block hashes) and ``AllBlocksCleared`` events when started with ``--kv-events-config``.
The engine's block hashes are its own (they depend on its hash function and seed), so, like llm-d's KV-cache
manager, this index re-keys every stored block by gpuyield's chained token-block hash
(:func:`gpuyield.core.workload.hashing.hash_token_blocks`: the hashes the gateway computes for each request)
from the event's token ids and the parent's already re-keyed hash, and keeps ``engine hash -> our hash`` so
removals apply. A block whose parent it never saw (events missed) cannot be re-keyed and is counted in
``unchained``; blocks of another block size are counted in ``wrong_block_size``; neither is guessed.

A replica run with data parallelism has one engine (and one cache) per rank, each publishing its own stream;
events carry the ``rank``, blocks are kept per rank, and a prompt block counts as held when any rank holds it.
When the view cannot be vouched for (events lost, or a stream joined while running) the edge ``suspend`` s the
replica: it is then routed by the guess until ``resume``, while its events keep being applied.

:class:`~gpuyield.core.policy.routing.PrefixAffinityPolicy` and :class:`~gpuyield.core.policy.routing.CostPolicy`
use this exact view for the replicas it covers (``tracks``) and their own guess for the others. The edge
(``gpuyield.edges.gateway.kv_events``) decodes the engines' ZeroMQ streams into the calls below.
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gpuyield.core.workload.hashing import ROOT_HASH, hash_token_blocks

__all__ = ["KVEventIndex", "PrefixCacheView", "ReplicaBlocks", "leading_hits"]


def leading_hits(block_hashes: Sequence[int], held: Container[int]) -> int:
    """How many leading blocks of ``block_hashes`` are in ``held`` (a prefix ends at the first miss)."""
    n = 0
    for h in block_hashes:
        if h not in held:
            break
        n += 1
    return n


class PrefixCacheView(Protocol):
    """What prefix routing asks of the engines' own view (a :class:`KVEventIndex`, or the simulator's engines)."""

    def tracks(self, replica: str) -> bool: ...

    def match(self, replica: str, block_hashes: Sequence[int]) -> int: ...


@dataclass(slots=True)
class ReplicaBlocks:
    """One replica's blocks: our hash -> copies (several engine blocks, or ranks, may hold one prefix block),
    and (rank, engine hash) -> ours."""

    ours: dict[int, int] = field(default_factory=dict)
    engine_to_ours: dict[tuple[int, Hashable], int] = field(default_factory=dict)

    def drop(self, key: tuple[int, Hashable]) -> bool:
        o = self.engine_to_ours.pop(key, None)
        if o is None:
            return False
        left = self.ours.get(o, 0) - 1
        if left > 0:
            self.ours[o] = left
        else:
            self.ours.pop(o, None)
        return True


class KVEventIndex:
    """Exact per-replica prefix-block index fed by KV-cache events. ``block_size_tokens`` must be the one the
    gateway hashes prompts with (and the engines' KV block size)."""

    def __init__(self, block_size_tokens: int = 16) -> None:
        if block_size_tokens < 1:
            raise ValueError(f"block_size_tokens must be >= 1, got {block_size_tokens}")
        self.block_size_tokens = block_size_tokens
        self._replicas: dict[str, ReplicaBlocks] = {}
        self._suspended: set[str] = set()
        self.unchained = 0  # stored blocks whose parent was unknown (events missed)
        self.wrong_block_size = 0  # stored blocks of another block size (not comparable with our hashes)

    # ---- coverage -----------------------------------------------------------------------------------
    def tracks(self, replica: str) -> bool:
        """True when ``replica``'s events are being followed and its view is exact (possibly empty)."""
        return replica in self._replicas and replica not in self._suspended

    def suspend(self, replica: str) -> None:
        """The view of ``replica`` is incomplete (events lost): route it by the guess until :meth:`resume`."""
        self._suspended.add(replica)

    def resume(self, replica: str) -> None:
        self._suspended.discard(replica)

    def track(self, replica: str) -> None:
        """Start following ``replica`` with an empty view (e.g. its event stream connected)."""
        self._replicas.setdefault(replica, ReplicaBlocks())

    def forget(self, replica: str) -> None:
        """Stop following ``replica`` (stream gone): routing falls back to the guess for it."""
        self._replicas.pop(replica, None)
        self._suspended.discard(replica)

    def num_blocks(self, replica: str | None = None) -> int:
        if replica is not None:
            rb = self._replicas.get(replica)
            return len(rb.ours) if rb is not None else 0
        return sum(len(rb.ours) for rb in self._replicas.values())

    # ---- events -------------------------------------------------------------------------------------
    def stored(
        self,
        replica: str,
        engine_hashes: Sequence[Hashable],
        parent_engine_hash: Hashable | None,
        token_ids: Sequence[int],
        block_size: int,
        rank: int = 0,
    ) -> int:
        """Apply a BlockStored event (of data-parallel ``rank``); returns the number of blocks indexed."""
        rb = self._replicas.setdefault(replica, ReplicaBlocks())
        n = len(engine_hashes)
        if block_size != self.block_size_tokens or len(token_ids) != n * block_size:
            self.wrong_block_size += n
            return 0
        if parent_engine_hash is None:
            parent = ROOT_HASH
        else:
            known = rb.engine_to_ours.get((rank, parent_engine_hash))
            if known is None:
                self.unchained += n
                return 0
            parent = known
        ours = hash_token_blocks(token_ids, block_size, parent)
        for e, o in zip(engine_hashes, ours, strict=True):
            if (rank, e) in rb.engine_to_ours:  # re-announced: keep one copy per engine block
                continue
            rb.engine_to_ours[(rank, e)] = o
            rb.ours[o] = rb.ours.get(o, 0) + 1
        return n

    def removed(self, replica: str, engine_hashes: Sequence[Hashable], rank: int = 0) -> int:
        """Apply a BlockRemoved event (of ``rank``); returns the number of known blocks removed."""
        rb = self._replicas.get(replica)
        if rb is None:
            return 0
        return sum(rb.drop((rank, e)) for e in engine_hashes)

    def cleared(self, replica: str, rank: int | None = None) -> None:
        """AllBlocksCleared of ``rank`` (None: every rank), or a gap in its stream: that part of the view
        restarts empty and refills from new events."""
        rb = self._replicas.get(replica)
        if rb is None or rank is None:
            self._replicas[replica] = ReplicaBlocks()
            return
        for key in [k for k in rb.engine_to_ours if k[0] == rank]:
            rb.drop(key)

    # ---- queries ------------------------------------------------------------------------------------
    def match(self, replica: str, block_hashes: Sequence[int]) -> int:
        """Leading blocks of ``block_hashes`` that ``replica`` holds (0 if not tracked)."""
        rb = self._replicas.get(replica)
        return leading_hits(block_hashes, rb.ours) if rb is not None else 0
