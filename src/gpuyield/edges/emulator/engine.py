"""The emulated engine: gpuyield's engine model (``gpuyield.core.sim.engine``) driven by the wall clock.

The scheduling -- continuous batching under a token budget, paged KV blocks, prefix caching, chunked prefill,
preemption by recompute -- is the simulator's own :class:`~gpuyield.core.sim.engine.Scheduler` and
:class:`~gpuyield.core.sim.engine.KVCacheManager` (vLLM v1 semantics), one step at a time
(``max_decode_run_steps=1``). Only the clock differs from ``gpuyield simulate``: each step's duration comes from
the same step-time model (gpuyield's ``PerfModel`` for the model/GPU/TP, or :class:`FixedStepTime` for router
benchmarks), and the loop sleeps until the step's end on the event loop's monotonic clock -- anchored to the
previous step's end so time does not drift -- like SimPy's real-time environment. Tokens are delivered to the
waiting HTTP handlers at the end of the step that produced them, plus the engine family's first-token overhead
(``EngineConfig.first_token_overhead_s``: prefill launches, sampling and detokenisation set-up per request,
``EngineCoefficients.first_token_overhead_s``). As in ``gpuyield simulate`` it delays each request's first token
and, since its stream is shifted as a whole, every later token and its end, and the schedule never waits for it;
so the emulator's TTFT is the simulator's and ``estimate``'s, not the engine-side TTFT alone.

A request whose client went away is aborted in the core scheduler (``Scheduler.abort``, vLLM's
``FINISHED_ABORTED``): its slot and KV blocks are freed at once between steps, or at the end of the step in
flight, so the running/waiting and KV-usage gauges drop as they do in vLLM.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gpuyield.core.sim.engine import EngineConfig as CoreEngineConfig
from gpuyield.core.sim.engine import EngineRequest, KVCacheManager, RequestStatus, Scheduler

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
    # added to every request's token stream (the engine family's per-request first-token overhead; 0 for the
    # fixed-step router-benchmark modes)
    first_token_overhead_s: float = 0.0
    # blocks each sequence holds for its bounded cache (sliding windows, linear state; fleet-model mode), or as a
    # function of its length (windows filled to min(length, window)) when given
    fixed_blocks_per_seq: int = 0
    fixed_blocks_of: Callable[[int], int] | None = None
    # prefix-cache hits in whole multiples of this many tokens (vLLM's hybrid models' raised block); 0 = any block
    prefix_hit_tokens: int = 0


@dataclass(slots=True)
class EmuRequest:
    req_id: str
    prompt_tokens: int
    block_hashes: tuple[int, ...]  # chained hashes of the prompt's full KV blocks
    max_tokens: int  # tokens to generate (after EOS/ignore_eos resolution)
    arrival_s: float  # loop time
    core: EngineRequest | None = None
    num_output: int = 0  # tokens delivered so far
    first_token_s: float | None = None
    last_token_s: float | None = None
    finished: bool = False  # the client has its last token (or the end marker); abort() is a no-op after it
    aborted: bool = False
    engine_done: bool = False  # the engine produced its last token (its delivery may still be pending)
    queue: asyncio.Queue[int] | None = None  # new tokens per step; -1 = finished

    @property
    def num_cached(self) -> int:
        return max(0, self.core.num_cached_tokens) if self.core is not None else 0


@dataclass(slots=True)
class EngineStats:
    """Counters and histogram samples read by the ``/metrics`` endpoint (scheduler counters are read live)."""

    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    request_success_total: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0, "abort": 0})
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    queue_s: list[float] = field(default_factory=list)
    steps_total: int = 0


class EmulatedEngine:
    """One emulated engine replica. Use from a single asyncio event loop."""

    def __init__(self, step_model: StepTimeModel, config: EngineConfig | None = None, family: str = "vllm") -> None:
        self.step_model = step_model
        self.config = config or EngineConfig()
        c = self.config
        if not (c.first_token_overhead_s >= 0.0):  # also refuses NaN
            raise ValueError(f"first_token_overhead_s must be >= 0, got {c.first_token_overhead_s}")
        # the limits as given: build_emulator resolved a lone one; the core config refuses a budget below the limit
        core_cfg = CoreEngineConfig(family=family, block_size=c.block_size_tokens, max_num_seqs=c.max_num_seqs,
                                    max_num_batched_tokens=c.max_num_batched_tokens,
                                    enable_prefix_caching=c.enable_prefix_caching, max_model_len=c.max_model_len,
                                    max_decode_run_steps=1)
        self.kv = KVCacheManager(
            c.num_kv_blocks, c.block_size_tokens, c.enable_prefix_caching, fixed_blocks_per_seq=c.fixed_blocks_per_seq,
            fixed_blocks_of=c.fixed_blocks_of, prefix_hit_tokens=c.prefix_hit_tokens,
        )
        # fleet-model timing says what a decoding request takes of the budget (K + 1 with speculative decoding)
        self.scheduler = Scheduler(core_cfg, self.kv, int(getattr(step_model, "decode_budget_tokens", 1)))
        self.stats = EngineStats()
        self.sleep_level = 0  # 0 awake, 1 weights offloaded, 2 discarded
        self._live: dict[int, EmuRequest] = {}
        self._next_idx = 0
        self._wake = asyncio.Event()
        self._awake = asyncio.Event()
        self._awake.set()
        self._task: asyncio.Task[None] | None = None
        self._in_step = False  # a scheduled step is being timed (aborts wait for its end)
        self._pending_aborts: list[EmuRequest] = []
        # steps' tokens waiting out the first-token overhead: (due time, [(request, tokens, last?)]), oldest first
        self._in_flight: collections.deque[tuple[float, list[tuple[EmuRequest, int, bool]]]] = collections.deque()

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

    # ---- observation ---------------------------------------------------------------------------------
    @property
    def kv_usage(self) -> float:
        return float(self.kv.pool.usage)

    @property
    def num_running(self) -> int:
        return int(self.scheduler.num_running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_unfinished(self) -> int:
        return len(self._live)

    @property
    def prefix_cache_queries_total(self) -> int:
        return int(self.scheduler.prefix_query_tokens)

    @property
    def prefix_cache_hits_total(self) -> int:
        return int(self.scheduler.prefix_hit_tokens)

    @property
    def num_preemptions_total(self) -> int:
        return int(self.scheduler.num_preemptions)

    # ---- requests ------------------------------------------------------------------------------------
    def add_request(self, req: EmuRequest) -> None:
        c = self.config
        if req.prompt_tokens + req.max_tokens > c.max_model_len:
            raise ValueError(
                f"prompt ({req.prompt_tokens} tokens) + max_tokens ({req.max_tokens}) exceeds "
                f"max_model_len {c.max_model_len}"
            )
        # its own tokens' blocks plus the bounded cache every sequence holds (sliding windows, linear state)
        need_blocks = -(-(req.prompt_tokens + req.max_tokens) // c.block_size_tokens) + self.kv.fixed_for(
            req.prompt_tokens, req.max_tokens
        )
        if need_blocks > c.num_kv_blocks:
            raise ValueError(f"request needs {need_blocks} KV blocks, the engine has {c.num_kv_blocks}")
        self._next_idx += 1
        req.core = EngineRequest(self._next_idx, req.arrival_s, req.prompt_tokens, req.max_tokens,
                                 unit_hashes=req.block_hashes if c.enable_prefix_caching else (), unit_blocks=1)
        req.queue = asyncio.Queue()
        self._live[self._next_idx] = req
        self.scheduler.add_request(req.core)
        self._wake.set()

    def abort(self, req: EmuRequest) -> None:
        """The client went away: stop delivering and free the request's slot and KV (now, or when the step in
        flight ends)."""
        if req.finished or req.aborted:
            return
        req.aborted = True
        self.stats.request_success_total["abort"] += 1
        if self._in_step:
            self._pending_aborts.append(req)
        else:
            self._apply_abort(req)

    def _apply_abort(self, req: EmuRequest) -> None:
        if req.finished:
            return
        if req.core is not None and not req.engine_done:  # else the engine already let it go
            self.scheduler.abort(req.core)
            self._live.pop(req.core.idx, None)
        req.finished = True
        if req.queue is not None:
            req.queue.put_nowait(-1)
        self._wake.set()  # freed KV may let a waiting request in

    # ---- the step loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sched = self.scheduler
        next_end = loop.time()
        while True:
            if not self._live:
                self._wake.clear()
                await self._wake.wait()
            await self._awake.wait()
            now = loop.time()
            out = sched.schedule()
            if out is None:  # nothing schedulable now: wait for a new request
                self._wake.clear()
                await self._wake.wait()
                continue
            self._in_step = True
            for r in out.prefill_reqs:
                emu = self._live.get(r.idx)
                if emu is not None and r.num_computed_tokens == 0 and r.num_preemptions == 0:
                    self.stats.queue_s.append(now - emu.arrival_s)
            dt = max(0.0, float(self.step_model.step_time_s(out.num_prefill_tokens, out.prefill_attn_tokens_sq,
                                                             out.num_decode_seqs, out.decode_ctx_tokens)))
            next_end = max(next_end, now) + dt
            delay = next_end - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sched.update_from_output(out, 1)
            self._in_step = False
            if self._pending_aborts:
                for req in self._pending_aborts:
                    self._apply_abort(req)
                self._pending_aborts.clear()
            self._deliver(loop.time())
            self.stats.steps_total += 1

    def _outputs(self, r: EngineRequest) -> int:
        if r.status == RequestStatus.RUNNING and r.idx in self.scheduler.decoding:
            return int(self.scheduler.computed_tokens(r) - r.num_prompt_tokens + 1)
        return int(r.num_output_tokens)

    def _deliver(self, now: float) -> None:
        """Hand the step's new tokens to their requests: at once, or ``first_token_overhead_s`` later. Delayed
        steps queue in order and are drained oldest first, so a stream keeps its order even if two steps fall
        due at the same clock reading."""
        st = self.stats
        lag = self.config.first_token_overhead_s
        at = now + lag  # when the client sees this step's tokens
        batch: list[tuple[EmuRequest, int, bool]] = []
        done: list[int] = []
        for idx, emu in self._live.items():
            core = emu.core
            assert core is not None and emu.queue is not None
            new = self._outputs(core) - emu.num_output
            if new <= 0:
                continue
            if emu.first_token_s is None:
                emu.first_token_s = at
                st.ttft_s.append(at - emu.arrival_s)
                st.prompt_tokens_total += emu.prompt_tokens
            elif emu.last_token_s is not None:
                st.itl_s.append(at - emu.last_token_s)
            emu.last_token_s = at
            emu.num_output += new
            st.generation_tokens_total += new
            last = RequestStatus.is_finished(core.status) or emu.num_output >= emu.max_tokens
            if last:
                done.append(idx)
            batch.append((emu, new, last))
        for idx in done:
            emu = self._live.pop(idx)
            emu.engine_done = True
            st.e2e_s.append(at - emu.arrival_s)
        if batch:
            if lag > 0:
                self._in_flight.append((at, batch))
                asyncio.get_running_loop().call_at(at, self._drain)
            else:
                _hand_over(batch)
        _trim(st)

    def _drain(self) -> None:
        """Deliver every delayed step that is due (each step's own timer calls this; any call drains in order)."""
        now = asyncio.get_running_loop().time()
        while self._in_flight and self._in_flight[0][0] <= now + 1e-9:
            _hand_over(self._in_flight.popleft()[1])


def _hand_over(batch: list[tuple[EmuRequest, int, bool]]) -> None:
    """Put each request's new tokens (and the end marker, -1, after its last) on its stream. An aborted
    request's client is gone: it gets no more tokens (its abort already sent the end marker)."""
    for emu, new, last in batch:
        assert emu.queue is not None
        if emu.aborted:
            continue
        for _ in range(new):
            emu.queue.put_nowait(1)
        if last:
            emu.finished = True
            emu.queue.put_nowait(-1)


def _trim(st: EngineStats, keep: int = 200_000) -> None:
    """Histogram samples are folded into buckets by the metrics endpoint; cap memory if nobody scrapes."""
    for lst in (st.ttft_s, st.itl_s, st.e2e_s, st.queue_s):
        if len(lst) > keep:
            del lst[: len(lst) - keep]


def monotonic_to_epoch(loop_time_s: float, loop: asyncio.AbstractEventLoop) -> float:
    """Convert an event-loop time to Unix epoch seconds."""
    return time.time() - (loop.time() - loop_time_s)
