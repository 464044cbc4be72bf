"""The emulated engine: continuous batching with paged KV, prefix caching and preemption, run in real time.

Each loop iteration is one engine step, as in vLLM v1: running requests first (decodes take one token, a
partially prefilled prompt takes its next chunk), then waiting requests in FCFS order while there are free
sequence slots, token budget (``max_num_batched_tokens``) and KV blocks. A waiting request first looks up its
prompt's block hashes in the prefix cache; hit blocks are not recomputed. When a running request needs a block
and none is free (after evicting unreferenced cached blocks, LRU), the most recently admitted running request
is preempted and recomputed later, like vLLM's recompute preemption.

The step's duration comes from a :class:`StepTimeModel` -- gpuyield's ``PerfModel`` for the model/GPU/TP
(the same step-time function the simulator uses) or, for router benchmarks, :class:`FixedStepTime`. The loop
sleeps until the step's end on the event loop's monotonic clock, anchored to the previous step's end so time
does not drift; tokens are delivered to the waiting HTTP handlers at the end of the step that produced them.

Simplification (documented): a prompt block's hash is registered in the cache when the block is allocated,
not when it has been computed, so two identical prompts admitted in the same step share blocks one step early.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["EmulatedEngine", "EngineConfig", "EngineStats", "FixedStepTime", "EmuRequest", "StepTimeModel"]


class StepTimeModel(Protocol):
    def step_time_s(
        self, num_prefill_tokens: int, prefill_attn_tokens_sq: float, num_decode_seqs: int, decode_ctx_tokens: int
    ) -> float: ...


@dataclass(frozen=True, slots=True)
class FixedStepTime:
    """A fixed-cost step model for router benchmarks (llm-d-inference-sim style, not the fleet model):
    ``base_s + prefill_s_per_token × prefill tokens`` per step."""

    base_s: float = 0.005
    prefill_s_per_token: float = 0.0

    def step_time_s(
        self, num_prefill_tokens: int, prefill_attn_tokens_sq: float, num_decode_seqs: int, decode_ctx_tokens: int
    ) -> float:
        return self.base_s + self.prefill_s_per_token * num_prefill_tokens


@dataclass(frozen=True, slots=True)
class EngineConfig:
    num_kv_blocks: int = 4096  # KV capacity in blocks
    block_size_tokens: int = 16  # tokens per KV block (vLLM GPU default)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 32768
    enable_prefix_caching: bool = True


@dataclass(slots=True)
class EmuRequest:
    req_id: str
    prompt_tokens: int
    block_hashes: tuple[int, ...]
    max_tokens: int  # tokens to generate (after EOS/ignore_eos resolution)
    arrival_s: float  # loop time
    # state
    num_computed: int = 0  # tokens whose KV is computed (prompt + generated)
    num_output: int = 0
    num_cached: int = 0  # prompt tokens served from the prefix cache (first admission)
    blocks: list[int] = field(default_factory=list)  # block keys held
    scheduled_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    finished: bool = False
    aborted: bool = False
    preemptions: int = 0
    queue: asyncio.Queue[int] | None = None  # number of new tokens per step; -1 = finished

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_output


@dataclass(slots=True)
class EngineStats:
    """Counters and histogram samples, read by the ``/metrics`` endpoint."""

    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    prefix_cache_queries_total: int = 0  # prompt tokens looked up
    prefix_cache_hits_total: int = 0  # prompt tokens found
    prompt_tokens_cached_total: int = 0
    num_preemptions_total: int = 0
    request_success_total: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0, "abort": 0})
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    queue_s: list[float] = field(default_factory=list)
    steps_total: int = 0


class _BlockPool:
    """Paged KV blocks: ``ref`` holds blocks in use (key → ref count); ``lru`` unreferenced cached blocks."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.ref: dict[int, int] = {}
        self.lru: OrderedDict[int, None] = OrderedDict()
        self._ids = itertools.count(-1, -1)  # private blocks get negative keys; hashes are >= 0

    @property
    def num_used(self) -> int:
        return len(self.ref)

    def num_free(self) -> int:
        return self.num_blocks - len(self.ref)  # cached-unreferenced blocks are evictable, so free

    def lookup(self, key: int) -> bool:
        return key in self.ref or key in self.lru

    def acquire(self, key: int | None) -> int | None:
        """Reference a block: an existing cached one (key given and present) or a new one. None = full."""
        if key is not None and key in self.ref:
            self.ref[key] += 1
            return key
        if key is not None and key in self.lru:
            del self.lru[key]
            self.ref[key] = 1
            return key
        if len(self.ref) + len(self.lru) >= self.num_blocks:
            if not self.lru:
                return None
            self.lru.popitem(last=False)
        k = next(self._ids) if key is None else key
        self.ref[k] = 1
        return k

    def release(self, keys: list[int]) -> None:
        for k in reversed(keys):  # tail blocks become LRU-older than prefix blocks
            n = self.ref[k] - 1
            if n:
                self.ref[k] = n
            else:
                del self.ref[k]
                if k >= 0:
                    self.lru[k] = None


class EmulatedEngine:
    """One emulated engine replica. Use from a single asyncio event loop."""

    def __init__(self, step_model: StepTimeModel, config: EngineConfig | None = None) -> None:
        self.step_model = step_model
        self.config = config or EngineConfig()
        self.pool = _BlockPool(self.config.num_kv_blocks)
        self.waiting: deque[EmuRequest] = deque()
        self.running: list[EmuRequest] = []
        self.stats = EngineStats()
        self.sleep_level = 0  # 0 awake, 1 weights offloaded, 2 discarded
        self._wake = asyncio.Event()
        self._awake = asyncio.Event()
        self._awake.set()
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def sleep(self, level: int) -> None:
        self.sleep_level = level
        self._awake.clear()

    def wake_up(self) -> None:
        self.sleep_level = 0
        self._awake.set()
        self._wake.set()

    @property
    def kv_usage(self) -> float:
        return self.pool.num_used / self.pool.num_blocks

    # ---- requests ------------------------------------------------------------------------------------
    def add_request(self, req: EmuRequest) -> None:
        if req.prompt_tokens + req.max_tokens > self.config.max_model_len:
            raise ValueError(
                f"prompt ({req.prompt_tokens} tokens) + max_tokens ({req.max_tokens}) exceeds "
                f"max_model_len {self.config.max_model_len}"
            )
        need_blocks = -(-(req.prompt_tokens + req.max_tokens) // self.config.block_size_tokens)
        if need_blocks > self.config.num_kv_blocks:
            raise ValueError(f"request needs {need_blocks} KV blocks, the engine has {self.config.num_kv_blocks}")
        req.queue = asyncio.Queue()
        self.waiting.append(req)
        self._wake.set()

    def abort(self, req: EmuRequest) -> None:
        if req.finished:
            return
        req.aborted = True
        if req in self.running:
            self.running.remove(req)
            self.pool.release(req.blocks)
            req.blocks = []
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(req)
        req.finished = True
        self.stats.request_success_total["abort"] += 1

    # ---- the step loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_end = loop.time()
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            await self._awake.wait()
            now = loop.time()
            plan = self._schedule(now)
            if plan is None:  # nothing schedulable (e.g. KV full of waiting requests' needs): wait for work
                self._wake.clear()
                await self._wake.wait()
                continue
            num_prefill, attn_sq, num_decode, decode_ctx, emits = plan
            dt = max(0.0, float(self.step_model.step_time_s(num_prefill, attn_sq, num_decode, decode_ctx)))
            next_end = max(next_end, now) + dt
            delay = next_end - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._finish_step(loop.time(), emits)
            self.stats.steps_total += 1

    def _grow(self, req: EmuRequest, new_tokens: int) -> bool:
        """Allocate blocks so ``req`` can hold ``num_computed + new_tokens`` tokens. False when KV is full."""
        bs = self.config.block_size_tokens
        need = -(-(req.num_computed + new_tokens) // bs)
        while len(req.blocks) < need:
            idx = len(req.blocks)
            key = None
            if self.config.enable_prefix_caching and idx < len(req.block_hashes) and req.num_output == 0:
                key = req.block_hashes[idx]
            got = self.pool.acquire(key)
            if got is None:
                return False
            req.blocks.append(got)
        return True

    def _preempt(self, victim: EmuRequest) -> None:
        self.running.remove(victim)
        self.pool.release(victim.blocks)
        victim.blocks = []
        victim.num_computed = 0
        victim.preemptions += 1
        self.stats.num_preemptions_total += 1
        self.waiting.appendleft(victim)

    def _schedule(self, now: float) -> tuple[int, float, int, int, list[tuple[EmuRequest, bool]]] | None:
        budget = self.config.max_num_batched_tokens
        num_prefill = 0
        attn_sq = 0.0
        num_decode = 0
        decode_ctx = 0
        emits: list[tuple[EmuRequest, bool]] = []  # (request, produces a token at the end of this step)
        scheduled: set[int] = set()
        # 1. running requests, oldest first; preempt the newest when blocks run out
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            remaining = req.num_tokens - req.num_computed
            n = min(remaining, budget) if remaining > 1 else 1
            while not self._grow(req, n):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is req:
                    break
            else:
                if remaining > 1:  # (re)prefill chunk
                    num_prefill += n
                    attn_sq += n * (req.num_computed + n / 2)
                else:
                    num_decode += 1
                    decode_ctx += req.num_computed
                req.num_computed += n
                budget -= n
                emits.append((req, req.num_computed >= req.num_tokens))
                scheduled.add(id(req))
                i += 1
                continue
            # req itself was preempted; do not advance i
        # 2. waiting requests, FCFS
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting[0]
            if req.num_computed == 0 and self.config.enable_prefix_caching and req.num_output == 0:
                hits = 0
                for h in req.block_hashes:
                    if not self.pool.lookup(h):
                        break
                    hits += 1
                cached = min(hits * self.config.block_size_tokens, req.prompt_tokens - 1)
                if req.preemptions == 0:
                    self.stats.prefix_cache_queries_total += req.prompt_tokens
                    self.stats.prefix_cache_hits_total += cached
                    self.stats.prompt_tokens_cached_total += cached
                    req.num_cached = cached
                # reference the hit blocks
                for b in range(cached // self.config.block_size_tokens):
                    got = self.pool.acquire(req.block_hashes[b])
                    assert got is not None
                    req.blocks.append(got)
                req.num_computed = len(req.blocks) * self.config.block_size_tokens
            remaining = req.num_tokens - req.num_computed
            n = min(remaining, budget)
            if not self._grow(req, n):
                self.pool.release(req.blocks)
                req.blocks = []
                req.num_computed = 0
                break
            self.waiting.popleft()
            self.running.append(req)
            if req.scheduled_s is None:
                req.scheduled_s = now
                self.stats.queue_s.append(now - req.arrival_s)
            num_prefill += n
            attn_sq += n * (req.num_computed + n / 2)
            req.num_computed += n
            budget -= n
            emits.append((req, req.num_computed >= req.num_tokens))
        if not emits:
            return None
        return num_prefill, attn_sq, num_decode, decode_ctx, emits

    def _finish_step(self, now: float, emits: list[tuple[EmuRequest, bool]]) -> None:
        st = self.stats
        done: list[EmuRequest] = []
        for req, produces in emits:
            if req.finished or not produces:
                continue
            if req.first_token_s is None:
                st.prompt_tokens_total += req.prompt_tokens
            req.num_output += 1
            st.generation_tokens_total += 1
            if req.first_token_s is None:
                req.first_token_s = now
                st.ttft_s.append(now - req.arrival_s)
            else:
                assert req.last_token_s is not None
                st.itl_s.append(now - req.last_token_s)
            req.last_token_s = now
            assert req.queue is not None
            req.queue.put_nowait(1)
            if req.num_output >= req.max_tokens:
                done.append(req)
        for req in done:
            req.finished = True
            self.running.remove(req)
            self.pool.release(req.blocks)
            req.blocks = []
            st.e2e_s.append(now - req.arrival_s)
            assert req.queue is not None
            req.queue.put_nowait(-1)
        _trim(st)


def _trim(st: EngineStats, keep: int = 200_000) -> None:
    """Histogram samples are folded into buckets by the metrics endpoint; cap memory if nobody scrapes."""
    for lst in (st.ttft_s, st.itl_s, st.e2e_s, st.queue_s):
        if len(lst) > keep:
            del lst[: len(lst) - keep]


def monotonic_to_epoch(loop_time_s: float, loop: asyncio.AbstractEventLoop) -> float:
    """Convert an event-loop time to Unix epoch seconds."""
    return time.time() - (loop.time() - loop_time_s)
