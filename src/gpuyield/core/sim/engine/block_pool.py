"""Paged KV blocks with a prefix cache: hashed entries, reference counts, LRU eviction of free entries.

Mirrors the roles of vLLM v1's ``block_pool.py`` at the granularity the simulator needs:

- Blocks that can never be shared (a prompt's partial tail, generated tokens, prompts without hashes) are only
  *counted*: a request holds ``num_anon_blocks`` of them.
- A full prefix unit (one or more blocks identified by a chained hash) is a :class:`CacheEntry`. Entries with
  ``ref_cnt > 0`` are in use; entries with ``ref_cnt == 0`` stay cached and sit in an LRU queue, evicted
  oldest-first when an allocation needs their blocks (vLLM frees a request's blocks tail-first, so the tail of
  a prefix is evicted before its head; callers release in that order).

All operations are O(1) (the LRU is an ``OrderedDict``, a C doubly linked list). Invariant, checked by tests:
``num_free_blocks + num_used_blocks == num_blocks`` and ``0 <= num_free_blocks <= num_blocks``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BlockPool", "CacheEntry"]


@dataclass(slots=True, eq=False)
class CacheEntry:
    """A cached prefix unit: ``num_blocks`` KV blocks identified by ``block_hash``."""

    block_hash: int  # chained hash of the unit (equal hashes <=> equal prefixes)
    num_blocks: int  # KV blocks the unit occupies (> 0)
    ref_cnt: int = 0  # requests currently using it


class BlockPool:
    """Counts of free/used KV blocks plus the prefix cache."""

    __slots__ = (
        "num_blocks",
        "num_free_uncached",
        "num_free_cached",
        "cached",
        "free_lru",
        "num_evicted_entries",
        "on_evict",
    )

    def __init__(self, num_blocks: int, on_evict: Callable[[CacheEntry], None] | None = None) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be > 0, got {num_blocks}")
        self.num_blocks = num_blocks  # total KV blocks on the replica
        self.num_free_uncached = num_blocks  # free blocks holding nothing reusable
        self.num_free_cached = 0  # blocks of cached entries with ref_cnt == 0 (free but reusable)
        self.cached: dict[int, CacheEntry] = {}  # block_hash -> entry (used or free)
        self.free_lru: OrderedDict[int, CacheEntry] = OrderedDict()  # ref_cnt == 0 entries, LRU first
        self.num_evicted_entries = 0
        self.on_evict = on_evict  # called with each evicted entry (the offload tier keeps a copy)

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation may take (free uncached + evictable cached)."""
        return self.num_free_uncached + self.num_free_cached

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_uncached - self.num_free_cached

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, 0..1 (what vLLM reports as ``kv_cache_usage_perc``)."""
        return (self.num_blocks - self.num_free_uncached - self.num_free_cached) / self.num_blocks

    def allocate(self, n: int) -> bool:
        """Take ``n`` blocks, evicting LRU free entries if needed. ``False`` (nothing taken) if too few."""
        if n > self.num_free_uncached + self.num_free_cached:
            return False
        while self.num_free_uncached < n:
            self._evict_one()
        self.num_free_uncached -= n
        return True

    def free(self, n: int) -> None:
        """Return ``n`` private blocks."""
        self.num_free_uncached += n

    def lookup(self, block_hash: int) -> CacheEntry | None:
        return self.cached.get(block_hash)

    def touch(self, entry: CacheEntry) -> None:
        """Take a reference on ``entry`` (removing it from the LRU if it was free)."""
        if entry.ref_cnt == 0:
            del self.free_lru[entry.block_hash]
            self.num_free_cached -= entry.num_blocks
        entry.ref_cnt += 1

    def release(self, entry: CacheEntry) -> None:
        """Drop a reference; at zero the entry stays cached and becomes the most recently used free entry."""
        entry.ref_cnt -= 1
        if entry.ref_cnt == 0:
            self.free_lru[entry.block_hash] = entry
            self.num_free_cached += entry.num_blocks

    def insert(self, block_hash: int, num_blocks: int) -> CacheEntry:
        """Turn ``num_blocks`` private blocks the caller already holds into a cached entry (ref 1)."""
        entry = CacheEntry(block_hash, num_blocks, 1)
        self.cached[block_hash] = entry
        return entry

    def _evict_one(self) -> None:
        _h, entry = self.free_lru.popitem(last=False)
        del self.cached[entry.block_hash]
        self.num_free_cached -= entry.num_blocks
        self.num_free_uncached += entry.num_blocks
        self.num_evicted_entries += 1
        if self.on_evict is not None:
            self.on_evict(entry)

    def reset_prefix_cache(self) -> None:
        """Drop every free cached entry (used entries stay)."""
        while self.free_lru:
            self._evict_one()
