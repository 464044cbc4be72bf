"""One replica's scheduler, with vLLM v1 semantics and an aggregate fast path for decoding requests.

vLLM's algorithm (``vllm/v1/core/sched/scheduler.py``): there is no separate prefill or decode phase. Each
step has a token budget (``max_num_batched_tokens``). Running requests are served first, in admission order:
each gets ``min(num_tokens - num_computed_tokens, budget)`` tokens (1 for a decoding request, or K + 1 with
speculative decoding; a chunk for a partially prefilled one). When KV blocks run out, the most recently
admitted running request is preempted (its blocks are freed, it goes back to the front of the waiting queue
and will recompute). Only if nothing was preempted, waiting requests are admitted FCFS while the budget,
``max_num_seqs`` and free blocks allow; the head of the queue blocks the rest (strict FCFS). Without chunked
prefill a prompt that does not fit in the remaining budget waits.

Speed: decoding requests live in an aggregate *decode set*. A decode-step counter ``G`` advances for all of
them at once; a request's computed tokens are ``c0 + (G - g0)``, its finish is a heap entry keyed by the
counter value at which its output is complete, and block needs are computed from a histogram of
``(tokens mod block_size)`` phases. When no prefill is scheduled, ``schedule()`` returns a *run* of
``num_steps`` decode steps that ends exactly at the next completion or when blocks would run out; the replica
may truncate it when a request arrives (the step in flight completes first, as in a real engine). With
``max_decode_run_steps=1`` the same code steps one iteration at a time, which the tests use as the reference.
"""

from __future__ import annotations

import heapq
from collections import deque

from gpuyield.core.sim.engine.config import EngineConfig
from gpuyield.core.sim.engine.kv_cache import KVCacheManager
from gpuyield.core.sim.engine.output import SchedulerOutput
from gpuyield.core.sim.engine.request import EngineRequest, RequestStatus

__all__ = ["Scheduler"]

_RUNNING = RequestStatus.RUNNING


class Scheduler:
    """Token scheduling and KV bookkeeping for one replica. No clock: the replica times the outputs."""

    def __init__(self, config: EngineConfig, kv: KVCacheManager, decode_budget_tokens: int = 1) -> None:
        self.config = config
        self.kv = kv
        self.pool = kv.pool
        self.block_size = kv.block_size
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.chunked = config.enable_chunked_prefill
        # most tokens one prompt computes a step (an attention-DP rank's budget; EngineConfig): with chunked
        # prefill off, a prompt above it waits as one above the step budget does
        cap = config.max_prefill_chunk_tokens
        self.chunk_cap = cap if cap is not None else 1 << 60
        self.max_run = config.max_decode_run_steps or (1 << 60)
        self.reserve_output = config.kv_admission == "max_output"
        # step-budget tokens one decoding request takes: 1, or K + 1 when the step model verifies K draft tokens
        # (speculative decoding; vLLM counts the draft tokens against max_num_batched_tokens)
        if decode_budget_tokens < 1:
            raise ValueError(f"decode_budget_tokens must be >= 1, got {decode_budget_tokens}")
        self.decode_budget_tokens = decode_budget_tokens
        self.waiting: deque[EngineRequest] = deque()
        self.prefilling: list[EngineRequest] = []  # running, still computing their prompt (admission order)
        self.decoding: dict[int, EngineRequest] = {}  # running, one token per step (admission order)
        self.transferring: dict[int, EngineRequest] = {}  # P/D decode side: waiting for remote KV
        self.ready: list[EngineRequest] = []  # P/D decode side: KV arrived; joins the decode set at the next step
        self.G = 0  # decode steps taken by this replica's decode set
        self._dec_s0 = 0  # sum over the decode set of (decode_c0 - decode_g0)
        self._phase_cnt = [0] * self.block_size  # decode set: count per decode_phase
        self._finish_heap: list[tuple[int, int, EngineRequest]] = []  # (g_finish, idx, req), lazy deletion
        self._step_blocks_allocated = False  # the decode set's blocks for the current step are taken
        self._dec_alloc = 0  # blocks taken in this schedule() for the decode set (minus preempted shares)
        self._head_needs_blocks = False  # the waiting head was refused for lack of KV blocks this step
        self._run_need = 0  # blocks the decode set needs for the run _run_length chose
        self._final_blocks = 0  # kv_admission=max_output: sum of admitted requests' final block counts
        # statistics
        self.num_preemptions = 0
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0

    # ------------------------------------------------------------------ state queries
    @property
    def num_running(self) -> int:
        return len(self.prefilling) + len(self.decoding) + len(self.transferring) + len(self.ready)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + self.num_running

    def decode_ctx_sum(self) -> int:
        """Sum of computed tokens over the decode set."""
        return self._dec_s0 + len(self.decoding) * self.G

    def computed_tokens(self, req: EngineRequest) -> int:
        """``num_computed_tokens`` of any request (materialised for decode-set members)."""
        if req.status == _RUNNING and req.idx in self.decoding:
            return req.decode_c0 + self.G - req.decode_g0
        return req.num_computed_tokens

    def decode_extra_blocks(self, k: int) -> int:
        """Blocks the decode set needs on top of what it holds to run ``k`` more steps.

        A request with ``c`` computed tokens (phase ``p = c mod bs``) needs ``ceil((c+k)/bs) - ceil(c/bs)``
        more blocks. With ``k = q*bs + r`` that is ``q`` plus one if ``p`` is among the ``r`` phases
        ``0, bs-1, ..., bs-r+1`` (the ones that cross one more block boundary), so the total is
        ``n*q`` plus the counts of ``r`` phase buckets: O(min(k, bs)) instead of O(n).
        """
        bs = self.block_size
        if k == 1:  # only requests whose computed tokens fill their last block need one
            return self._phase_cnt[-self.G % bs]
        q, r = divmod(k, bs)
        tot = q * len(self.decoding)
        if r:
            cnt = self._phase_cnt
            base = -self.G
            for j in range(r):
                tot += cnt[(base - j) % bs]
        return tot

    # ------------------------------------------------------------------ queue operations
    def add_request(self, req: EngineRequest) -> None:
        req.status = RequestStatus.WAITING
        self.waiting.append(req)

    def final_blocks(self, req: EngineRequest) -> int:
        n = req.num_prompt_tokens + req.max_output_tokens
        return -(-n // self.block_size) + self.kv.fixed_for(req.num_prompt_tokens, req.max_output_tokens)

    # ------------------------------------------------------------------ schedule
    def schedule(self) -> SchedulerOutput | None:
        """Decide the next step (or pure-decode run). ``None`` when there is nothing to run."""
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        pool = self.pool
        decoding = self.decoding
        preempted = out.preempted
        self._step_blocks_allocated = False
        self._dec_alloc = 0
        self._head_needs_blocks = False
        if self.ready:  # remote KV arrived while the previous step ran: these decode from this step on
            for req in self.ready:
                self._join_decode_set(req)
            out.remote_joined.extend(self.ready)
            self.ready.clear()

        # 1. Decoding requests: one token each. Take this step's blocks first; preempt from the tail if short.
        step_blocks = 0
        if decoding:
            step_blocks = self.decode_extra_blocks(1)
            while step_blocks > pool.num_free_uncached + pool.num_free_cached:
                self._preempt(self._pick_victim(), preempted)
                if not decoding:
                    step_blocks = 0
                    break
                step_blocks = self.decode_extra_blocks(1)
            if step_blocks:
                pool.allocate(step_blocks)
            self._dec_alloc = step_blocks
            self._step_blocks_allocated = bool(decoding)  # preempting the last decoder leaves no step
            budget -= len(decoding) * self.decode_budget_tokens

        # 2. Running requests still prefilling, in admission order.
        chunks_req = out.prefill_reqs
        chunks_new = out.prefill_num_new_tokens
        if self.prefilling:
            for req in list(self.prefilling):
                if budget <= 0:
                    break
                if req.status != _RUNNING:  # preempted earlier in this loop
                    continue
                num_new = min(req.num_tokens - req.num_computed_tokens, budget, self.chunk_cap)
                ok = True
                while not self.kv.allocate_running(req, num_new):
                    victim = self._pick_victim()
                    was_decoding = victim.idx in decoding
                    self._preempt(victim, preempted)
                    if was_decoding:
                        budget += self.decode_budget_tokens
                    if victim is req:
                        ok = False
                        break
                if ok:
                    chunks_req.append(req)
                    chunks_new.append(num_new)
                    budget -= num_new

        # 3. Waiting requests, FCFS, only if nothing was preempted this step.
        if not preempted and self.waiting:
            self._schedule_waiting(out, budget)

        # 4. Shape the output.
        n = len(decoding)
        if not chunks_req and n == 0:
            # nothing runs; give back nothing (no decode blocks were taken)
            return None if not out.remote_started else out
        num_prefill = 0
        attn = 0.0
        load = 0
        for i, req in enumerate(chunks_req):
            new = chunks_new[i]
            num_prefill += new
            attn += new * (req.num_computed_tokens + new / 2.0)
            load += req.load_tokens
        out.num_prefill_tokens = num_prefill
        out.prefill_attn_tokens_sq = attn
        out.num_decode_seqs = n
        out.decode_ctx_tokens = self._dec_s0 + n * self.G + n
        out.num_scheduled_tokens = num_prefill + n
        out.load_tokens = load
        k = 1
        # A run may only skip steps in which nothing else could be scheduled. A waiting request blocked by
        # seats, budget or blocks stays blocked until a completion (blocks only shrink during a decode run),
        # but after a preemption the waiting queue was not even considered: step once, then look again.
        if not chunks_req and n and not (preempted and self.waiting):
            # Blocks for steps after the first are taken when the run is applied (update_from_output), so
            # cached entries are evicted only as late as a step-by-step engine would evict them.
            k = self._run_length(self._dec_alloc)
        out.num_steps = k
        out.num_steps_planned = k
        out.decode_blocks_allocated = self._dec_alloc
        out.decode_blocks_run = self._run_need if k > 1 else self._dec_alloc
        return out

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> None:
        kv = self.kv
        waiting = self.waiting
        seats = self.max_num_seqs - (len(self.prefilling) + len(self.decoding) + len(self.transferring) + len(self.ready))
        while waiting and budget > 0:
            if seats <= 0:
                break
            req = waiting[0]
            if self.reserve_output:
                fb = self.final_blocks(req)
                if self._final_blocks + fb > self.pool.num_blocks:
                    break
            if req.remote_kv:  # P/D decode side: allocate for the prompt's KV, then it is pulled in
                if not kv.allocate_blocks(req, req.num_prompt_tokens):
                    break
                waiting.popleft()
                req.status = RequestStatus.WAITING_FOR_REMOTE_KVS
                req.num_computed_tokens = req.num_prompt_tokens
                self.transferring[req.idx] = req
                out.remote_started.append(req)
                seats -= 1
                if self.reserve_output:
                    self._final_blocks += self.final_blocks(req)
                continue
            hits, num_load = kv.get_computed(req)
            unit_tokens = req.unit_blocks * self.block_size
            num_hit_tokens = (len(hits) + num_load) * unit_tokens
            num_new = req.num_tokens - num_hit_tokens
            if not self.chunked and num_new > min(budget, self.chunk_cap):
                break
            num_new = min(num_new, budget, self.chunk_cap)
            if not kv.allocate_admit(req, hits, num_load, num_new):
                self._head_needs_blocks = True
                break
            waiting.popleft()
            req.status = _RUNNING
            if req.num_cached_tokens < 0:
                req.num_cached_tokens = num_hit_tokens
                self.prefix_query_tokens += req.num_tokens
                self.prefix_hit_tokens += num_hit_tokens
            if self.reserve_output:
                self._final_blocks += self.final_blocks(req)
            self.prefilling.append(req)
            seats -= 1
            out.prefill_reqs.append(req)
            out.prefill_num_new_tokens.append(num_new)
            budget -= num_new

    def _run_length(self, step_blocks: int) -> int:
        """Pure-decode steps until the next completion, capped by free blocks and ``max_decode_run_steps``."""
        heap = self._finish_heap
        decoding = self.decoding
        while heap and (decoding.get(heap[0][1]) is not heap[0][2] or heap[0][2].decode_g_finish != heap[0][0]):
            heapq.heappop(heap)  # stale: left the decode set (finished or preempted, maybe rejoined since)
        k = heap[0][0] - self.G if heap else 1
        if k > self.max_run:
            k = self.max_run
        if k <= 1:
            return 1
        pool = self.pool
        free = pool.num_free_uncached + pool.num_free_cached + step_blocks
        if self._head_needs_blocks and pool.num_free_cached:
            # Evicting a cached entry can make the refused head admissible (its hit no longer pins free
            # blocks), so the run stops before the first eviction and the next step looks again.
            free = pool.num_free_uncached + step_blocks
        need = self.decode_extra_blocks(k)
        if need <= free:
            self._run_need = need
            return k
        lo, hi = 1, k  # extra(lo) fits, extra(hi) does not
        need_lo = step_blocks
        while hi - lo > 1:
            mid = (lo + hi) // 2
            need = self.decode_extra_blocks(mid)
            if need <= free:
                lo, need_lo = mid, need
            else:
                hi = mid
        self._run_need = need_lo
        return lo

    # ------------------------------------------------------------------ preemption
    def _pick_victim(self) -> EngineRequest:
        """The most recently admitted running request (vLLM FCFS: ``self.running.pop()``)."""
        if self.prefilling:
            return self.prefilling[-1]
        return self.decoding[next(reversed(self.decoding))]

    def _preempt(self, req: EngineRequest, preempted: list[EngineRequest]) -> None:
        if req.idx in self.decoding and req.status == _RUNNING:
            c = self._leave_decode_set(req)
            held = -(-c // self.block_size)
            if self._step_blocks_allocated and (c % self.block_size) == 0:
                held += 1  # the block taken for this step's token
                self._dec_alloc -= 1
            req.num_anon_blocks = held - req.num_entry_blocks + req.num_fixed_blocks
        else:
            self.prefilling.remove(req)
        self.kv.free(req)
        if self.reserve_output:
            self._final_blocks -= self.final_blocks(req)
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        req.lookup_done = False
        req.load_tokens = 0
        req.remote_kv = False  # a preempted P/D request recomputes locally
        self.num_preemptions += 1
        self.waiting.appendleft(req)
        preempted.append(req)

    # ------------------------------------------------------------------ decode set
    def _join_decode_set(self, req: EngineRequest) -> None:
        g = self.G
        c0 = req.num_computed_tokens
        req.decode_c0 = c0
        req.decode_g0 = g
        req.decode_g_finish = g + (req.max_output_tokens - req.num_output_tokens)
        phase = (c0 - g) % self.block_size
        req.decode_phase = phase
        self._phase_cnt[phase] += 1
        self._dec_s0 += c0 - g
        self.decoding[req.idx] = req
        heapq.heappush(self._finish_heap, (req.decode_g_finish, req.idx, req))

    def _leave_decode_set(self, req: EngineRequest) -> int:
        """Remove ``req`` from the decode set; returns (and stores) its computed tokens."""
        del self.decoding[req.idx]
        self._phase_cnt[req.decode_phase] -= 1
        self._dec_s0 -= req.decode_c0 - req.decode_g0
        c = req.decode_c0 + self.G - req.decode_g0
        req.num_computed_tokens = c
        # one token a step since it joined (a P/D request joins with none, a local one with its prefill's)
        req.num_output_tokens += self.G - req.decode_g0
        return c

    # ------------------------------------------------------------------ update
    def update_from_output(self, out: SchedulerOutput, num_steps_done: int) -> tuple[list[EngineRequest], list[EngineRequest]]:
        """Apply ``num_steps_done`` (<= out.num_steps) steps of ``out``.

        Returns ``(finished, first_tokens)``: requests that generated their last token, and requests that
        produced their first output token, at the end of the last applied step.
        """
        finished: list[EngineRequest] = []
        first: list[EngineRequest] = []
        if out.num_decode_seqs:
            # blocks reserved for steps that were cut off (a request arrived mid-run)
            if num_steps_done > 1:  # the first step's blocks were taken in schedule(); take the rest now
                if num_steps_done == out.num_steps_planned:
                    more = out.decode_blocks_run - out.decode_blocks_allocated
                else:
                    more = self.decode_extra_blocks(num_steps_done) - out.decode_blocks_allocated
                if more > 0:
                    ok = self.pool.allocate(more)
                    assert ok, "run length was sized to the free blocks"
            self.G += num_steps_done
            g = self.G
            heap = self._finish_heap
            decoding = self.decoding
            while heap and heap[0][0] <= g:
                gf, idx, req = heapq.heappop(heap)
                if decoding.get(idx) is not req or req.decode_g_finish != gf:
                    continue
                c = self._leave_decode_set(req)
                req.num_anon_blocks = -(-c // self.block_size) - req.num_entry_blocks + req.num_fixed_blocks
                self._finish(req)
                finished.append(req)
        self._step_blocks_allocated = False
        for req, new in zip(out.prefill_reqs, out.prefill_num_new_tokens, strict=True):
            if req.status != _RUNNING:
                continue
            req.num_computed_tokens += new
            req.load_tokens = 0
            if req.num_computed_tokens >= req.num_tokens:
                self.prefilling.remove(req)
                req.num_output_tokens += 1
                if req.first_token_s < 0:
                    first.append(req)
                if req.num_output_tokens >= req.max_output_tokens:
                    self._finish(req)
                    finished.append(req)
                else:
                    self._join_decode_set(req)
        return finished, first

    def finish_transfer(self, req: EngineRequest) -> None:
        """P/D decode side: the prompt's KV has arrived; the request decodes from the next step on."""
        if req.status == RequestStatus.FINISHED_ABORTED:  # aborted while its KV was in flight: nothing to do
            return
        del self.transferring[req.idx]
        req.status = _RUNNING
        if req.num_output_tokens >= req.max_output_tokens:
            self._finish(req)  # frees its KV and its output reserve
            return
        self.ready.append(req)

    def abort(self, req: EngineRequest) -> bool:
        """The client went away: drop ``req`` wherever it is and free its KV (vLLM's ``finish_requests`` with
        ``FINISHED_ABORTED``). Call between runs (the replica defers an abort that arrives mid-run). Returns
        False (a no-op) when ``req`` had already finished -- its tokens so far stay counted -- or was never
        submitted to this scheduler."""
        if RequestStatus.is_finished(req.status):
            return False
        assert not self._step_blocks_allocated, "abort between runs only"
        idx = req.idx
        if req.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED):
            if req not in self.waiting:  # never submitted here
                return False
            self.waiting.remove(req)
        elif idx in self.transferring and self.transferring[idx] is req:
            del self.transferring[idx]
        elif req in self.ready:
            self.ready.remove(req)
        elif self.decoding.get(idx) is req:
            c = self._leave_decode_set(req)  # its finish-heap entry is skipped lazily
            req.num_anon_blocks = -(-c // self.block_size) - req.num_entry_blocks + req.num_fixed_blocks
        elif req in self.prefilling:
            self.prefilling.remove(req)
        else:  # not this scheduler's request: nothing to free
            return False
        self.kv.free(req)
        # admitted requests hold an output reserve, those whose remote KV is still arriving too
        if self.reserve_output and req.status in (_RUNNING, RequestStatus.WAITING_FOR_REMOTE_KVS):
            self._final_blocks -= self.final_blocks(req)
        req.status = RequestStatus.FINISHED_ABORTED
        return True

    def _finish(self, req: EngineRequest) -> None:
        self.kv.free(req)
        if self.reserve_output:
            self._final_blocks -= self.final_blocks(req)
        req.status = RequestStatus.FINISHED_STOPPED
