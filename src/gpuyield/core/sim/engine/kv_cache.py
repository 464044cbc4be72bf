"""KV-cache manager: prefix-cache lookup, slot allocation and freeing for one request.

Semantics follow vLLM v1's ``kv_cache_manager.py``:

- ``get_computed`` finds the longest run of cached prefix units (at most ``num_tokens - 1`` tokens, so at
  least one token is always computed and produces logits). With an offload tier, the match continues into
  units held there; those are reloaded (their blocks are allocated and the reload time is charged to the step).
- ``allocate_admit`` / ``allocate_running`` return ``False`` (taking nothing) when the blocks needed for
  ``num_computed_tokens + num_new_tokens`` are not free; the scheduler then preempts or stops admitting.
- Full units become cached as soon as the step that computes them is scheduled, so a later request can share
  them; blocks are released tail-first so the LRU evicts a prefix's tail before its head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from gpuyield.core.sim.engine.block_pool import BlockPool, CacheEntry
from gpuyield.core.sim.engine.request import EngineRequest

__all__ = ["KVCacheManager", "OffloadTier"]


class OffloadTier:
    """Prefix units evicted from GPU memory, kept in CPU DRAM or NVMe (LRU, bounded by ``capacity_blocks``)."""

    __slots__ = ("capacity_blocks", "num_blocks", "units", "s_per_token", "num_stored", "num_loaded_tokens")

    def __init__(self, capacity_blocks: int, s_per_token: float) -> None:
        self.capacity_blocks = capacity_blocks  # tier capacity in KV blocks
        self.num_blocks = 0  # blocks held now (<= capacity_blocks)
        self.units: OrderedDict[int, int] = OrderedDict()  # block_hash -> num_blocks, LRU first
        self.s_per_token = s_per_token  # reload time per token (kv bytes per token / read bandwidth)
        self.num_stored = 0
        self.num_loaded_tokens = 0

    def store(self, entry: CacheEntry) -> None:
        if entry.num_blocks > self.capacity_blocks:
            return
        if entry.block_hash in self.units:
            self.units.move_to_end(entry.block_hash)
            return
        while self.num_blocks + entry.num_blocks > self.capacity_blocks:
            _h, nb = self.units.popitem(last=False)
            self.num_blocks -= nb
        self.units[entry.block_hash] = entry.num_blocks
        self.num_blocks += entry.num_blocks
        self.num_stored += 1

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self.units


class KVCacheManager:
    """Allocation on top of a :class:`BlockPool` for requests of one replica."""

    __slots__ = ("pool", "block_size", "enable_prefix_caching", "offload", "fixed_blocks", "fixed_blocks_of", "prefix_hit_tokens")

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        offload: OffloadTier | None = None,
        fixed_blocks_per_seq: int = 0,
        fixed_blocks_of: Callable[[int], int] | None = None,
        prefix_hit_tokens: int = 0,
    ) -> None:
        self.pool = BlockPool(num_blocks, on_evict=offload.store if offload is not None else None)
        # hits count in whole multiples of this many tokens (vLLM's hybrid models: the raised block); 0 = any unit
        self.prefix_hit_tokens = prefix_hit_tokens
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.offload = offload
        # the bounded cache of a sequence's sliding-window and linear-attention layers, in blocks of the growing
        # layers' size, held among its private blocks from admission to release: ``fixed_blocks_of(prompt +
        # output tokens)`` when given (MemoryPlan.fixed_blocks_for: a window holds min(length, window) tokens),
        # else ``fixed_blocks_per_seq`` for every sequence (MemoryPlan.fixed_blocks_per_seq: the full window)
        if fixed_blocks_per_seq < 0:
            raise ValueError(f"fixed_blocks_per_seq must be >= 0, got {fixed_blocks_per_seq}")
        self.fixed_blocks = fixed_blocks_per_seq
        self.fixed_blocks_of = fixed_blocks_of

    def fixed_for(self, num_prompt_tokens: int, max_output_tokens: int) -> int:
        """Blocks of bounded cache a sequence of this size holds."""
        if self.fixed_blocks_of is None:
            return self.fixed_blocks
        return max(0, int(self.fixed_blocks_of(num_prompt_tokens + max_output_tokens)))

    def get_computed(self, req: EngineRequest) -> tuple[list[CacheEntry], int]:
        """Longest cached prefix of ``req``: (GPU entries hit, number of further units in the offload tier)."""
        hashes = req.unit_hashes
        if not self.enable_prefix_caching or not hashes:
            return [], 0
        max_units = (req.num_tokens - 1) // (req.unit_blocks * self.block_size)
        if max_units > len(hashes):
            max_units = len(hashes)
        cached = self.pool.cached
        hits: list[CacheEntry] = []
        i = 0
        while i < max_units:
            e = cached.get(hashes[i])
            if e is None:
                break
            hits.append(e)
            i += 1
        num_load = 0
        off = self.offload
        if off is not None:
            while i < max_units and hashes[i] in off.units:
                num_load += 1
                i += 1
        if self.prefix_hit_tokens > 0:  # keep the units inside whole hit granules (offloaded ones go first)
            unit_tokens = req.unit_blocks * self.block_size
            keep = (i * unit_tokens // self.prefix_hit_tokens) * self.prefix_hit_tokens // unit_tokens
            drop = i - keep
            cut = min(drop, num_load)
            num_load -= cut
            if drop > cut:
                del hits[len(hits) - (drop - cut) :]
        return hits, num_load

    def allocate_admit(
        self, req: EngineRequest, hits: list[CacheEntry], num_load_units: int, num_new_tokens: int, reserve: int = 0
    ) -> bool:
        """Admit a waiting request: reference ``hits``, allocate the rest, cache newly full units."""
        bs = self.block_size
        pool = self.pool
        unit_tokens = req.unit_blocks * bs
        num_hit_units = len(hits)
        hit_blocks = num_hit_units * req.unit_blocks
        num_computed = (num_hit_units + num_load_units) * unit_tokens
        required = -(-(num_computed + num_new_tokens) // bs)
        fixed = self.fixed_for(req.num_prompt_tokens, req.max_output_tokens)
        to_alloc = required - hit_blocks + fixed
        free_eff = pool.num_free_uncached + pool.num_free_cached - reserve
        for e in hits:
            if e.ref_cnt == 0:
                free_eff -= e.num_blocks
        if to_alloc > free_eff:
            return False
        for e in hits:
            pool.touch(e)
        off = self.offload
        if num_load_units and off is not None:
            # Mark the units being reloaded as recently used *before* allocating: the allocation may evict GPU
            # entries into the tier, which pushes the tier's LRU units out. A unit pushed out even so has
            # already been read (the reload is charged below); its copy now lives in GPU memory.
            units = off.units
            for h in req.unit_hashes[num_hit_units : num_hit_units + num_load_units]:
                if h in units:
                    units.move_to_end(h)
        pool.allocate(to_alloc)
        req.entries = hits
        req.num_entry_blocks = hit_blocks
        req.num_anon_blocks = to_alloc
        req.num_fixed_blocks = fixed
        req.num_computed_tokens = num_computed
        req.load_tokens = num_load_units * unit_tokens
        if num_load_units and off is not None:
            off.num_loaded_tokens += req.load_tokens
        self.cache_full_units(req, num_computed + num_new_tokens)
        return True

    def allocate_running(self, req: EngineRequest, num_new_tokens: int, reserve: int = 0) -> bool:
        """Slots for the next chunk of a request already running."""
        bs = self.block_size
        required = -(-(req.num_computed_tokens + num_new_tokens) // bs)
        to_alloc = required - req.num_entry_blocks - (req.num_anon_blocks - req.num_fixed_blocks)
        if to_alloc > 0:
            pool = self.pool
            if to_alloc > pool.num_free_uncached + pool.num_free_cached - reserve:
                return False
            pool.allocate(to_alloc)
            req.num_anon_blocks += to_alloc
        self.cache_full_units(req, req.num_computed_tokens + num_new_tokens)
        return True

    def allocate_blocks(self, req: EngineRequest, num_tokens: int, reserve: int = 0) -> bool:
        """Private blocks for ``num_tokens`` tokens of KV arriving from elsewhere (P/D decode side)."""
        fixed = self.fixed_for(req.num_prompt_tokens, req.max_output_tokens)
        n = -(-num_tokens // self.block_size) + fixed
        pool = self.pool
        if n > pool.num_free_uncached + pool.num_free_cached - reserve:
            return False
        pool.allocate(n)
        req.num_anon_blocks = n
        req.num_fixed_blocks = fixed
        return True

    def cache_full_units(self, req: EngineRequest, num_tokens_computed: int) -> None:
        """Turn the request's private blocks of now-complete prefix units into shared cache entries."""
        if not self.enable_prefix_caching:
            return
        hashes = req.unit_hashes
        ub = req.unit_blocks
        n_units = num_tokens_computed // (ub * self.block_size)
        if n_units > len(hashes):
            n_units = len(hashes)
        i = len(req.entries)
        if i >= n_units:
            return
        pool = self.pool
        cached = pool.cached
        entries = req.entries
        while i < n_units:
            h = hashes[i]
            e = cached.get(h)
            if e is None:
                e = pool.insert(h, ub)
            else:  # computed concurrently by another request: share it, drop our copy
                pool.touch(e)
                pool.free(ub)
            entries.append(e)
            i += 1
        num_new = n_units * ub - req.num_entry_blocks
        req.num_anon_blocks -= num_new
        req.num_entry_blocks = n_units * ub

    def free(self, req: EngineRequest) -> None:
        """Release everything ``req`` holds (entries tail-first, then private blocks)."""
        pool = self.pool
        for e in reversed(req.entries):
            pool.release(e)
        pool.free(req.num_anon_blocks)
        req.entries = []
        req.num_entry_blocks = 0
        req.num_anon_blocks = 0
        req.num_fixed_blocks = 0
