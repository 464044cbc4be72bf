"""A replica in simulated time: its scheduler, its step-time model and the run in flight.

The replica asks the scheduler for the next output, times it with the step-time model and exposes
``run_end_s``. A pure-decode run of ``k`` steps has step times ``a + b*j`` (``j = 0..k-1``): the decode
context sum grows by ``num_decode_seqs`` per step and the step time is affine in it (see ``steptime.py``), so
``a`` and ``b`` come from two model evaluations and the end of step ``m`` is
``start + m*a + b*m*(m-1)/2``. A request arriving mid-run truncates the run at the end of the step in flight.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gpuyield.core.sim.engine.config import EngineConfig
from gpuyield.core.sim.engine.kv_cache import KVCacheManager, OffloadTier
from gpuyield.core.sim.engine.output import SchedulerOutput
from gpuyield.core.sim.engine.request import EngineRequest, RequestStatus
from gpuyield.core.sim.engine.scheduler import Scheduler
from gpuyield.core.sim.steptime import StepTimeModel

__all__ = ["ReplicaEngine"]

_INF = float("inf")


class ReplicaEngine:
    """One engine replica (one model instance on ``tp*pp`` GPUs) advancing in simulated time."""

    def __init__(
        self,
        config: EngineConfig,
        step_model: StepTimeModel,
        num_gpu_blocks: int,
        kv_bytes_per_token: float = 0.0,
        fixed_blocks_per_seq: int = 0,
        fixed_blocks_of: Callable[[int], int] | None = None,
    ) -> None:
        self.config = config
        self.step_model = step_model
        self.kv_bytes_per_token = kv_bytes_per_token
        offload = None
        if config.offload is not None and kv_bytes_per_token > 0:
            cap_blocks = int(config.offload.capacity_bytes // (kv_bytes_per_token * config.block_size))
            offload = OffloadTier(cap_blocks, kv_bytes_per_token / config.offload.read_bytes_per_s)
        self.kv = KVCacheManager(
            num_gpu_blocks, config.block_size, config.enable_prefix_caching, offload, fixed_blocks_per_seq,
            fixed_blocks_of, config.prefix_hit_tokens,
        )
        # a PerfModel says what a decoding request takes of the budget (K + 1 with speculative decoding)
        self.scheduler = Scheduler(config, self.kv, int(getattr(step_model, "decode_budget_tokens", 1)))
        # a PerfModel with attention-DP ranks times a step by its busiest rank, which needs each prompt's chunk
        # (whole prompts sit on one rank); other step models take the aggregate form
        self._per_rank_prefill = int(getattr(step_model, "attention_dp", 1) or 1) > 1
        self.num_gpu_blocks = num_gpu_blocks
        # num_decode_seqs -> (step time at zero context, seconds per context token) of a pure-decode step,
        # or None when the model is not affine in the context for that batch (then each run asks it twice)
        self._decode_lines: dict[int, tuple[float, float] | None] = {}
        # the run in flight
        self.run: SchedulerOutput | None = None
        self.run_start_s = 0.0
        self.run_end_s = _INF
        self._a = 0.0  # first step time of the run (s)
        self._b = 0.0  # step-time increase per step (s)
        self.version = 0  # bumped whenever run_end_s changes (event invalidation)
        self.new_transfers: list[EngineRequest] = []  # P/D: KV transfers admitted; the caller drains this
        self._aborts: list[EngineRequest] = []  # aborted while a run was in flight: applied when it ends
        # statistics
        self.busy_s = 0.0
        self.kv_used_block_s = 0.0  # integral of used blocks over busy time
        self.num_steps = 0
        self.num_runs = 0
        self.last_step_s = 0.0

    @property
    def kv_usage(self) -> float:
        """Used KV blocks / total as of the last applied step (during an analytic decode run: its first step)."""
        pool = self.kv.pool
        return (pool.num_blocks - pool.num_free_uncached - pool.num_free_cached) / pool.num_blocks

    # ------------------------------------------------------------------ admission
    def can_ever_fit(self, num_prompt_tokens: int, num_output_tokens: int) -> str | None:
        """``None`` if a request of this size can run alone; else the reason it never can."""
        total = num_prompt_tokens + num_output_tokens
        mml = self.config.max_model_len
        if mml is not None and total > mml:
            return f"prompt+output {total} tokens > max_model_len {mml}"
        cfg = self.config
        step = min(cfg.max_num_batched_tokens, cfg.max_prefill_chunk_tokens or cfg.max_num_batched_tokens)
        if not cfg.enable_chunked_prefill and total > step:
            # a preempted request is recomputed whole (prompt and the output so far) in one step, so without
            # chunking vLLM limits sequences to the budget (max_model_len <= max_num_batched_tokens); under
            # attention DP, to one rank's
            name = "max_num_batched_tokens" if step == cfg.max_num_batched_tokens else "a rank's budget"
            return f"prompt+output {total} tokens > {name} {step} with chunked prefill off"
        need = -(-total // self.config.block_size) + self.kv.fixed_for(num_prompt_tokens, num_output_tokens)
        if need > self.num_gpu_blocks:
            return f"needs {need} KV blocks, replica has {self.num_gpu_blocks}"
        return None

    def add_request(self, req: EngineRequest, now_s: float) -> float | None:
        """Queue ``req``; returns the new ``run_end_s`` if it changed (a run started or was truncated)."""
        self.scheduler.add_request(req)
        return self.poke(now_s)

    def poke(self, now_s: float) -> float | None:
        """Something arrived at ``now_s``: start a run if idle, else end the current run after the step in flight."""
        if self.run is None:
            return self._start(now_s)
        if self.run.num_steps > 1 and now_s < self.run_end_s:
            m = self._steps_done_by(now_s)
            if m < self.run.num_steps:
                self.run.num_steps = m
                self.run_end_s = self.run_start_s + m * self._a + self._b * m * (m - 1) / 2.0
                self.version += 1
                return self.run_end_s
        return None

    def abort(self, req: EngineRequest, now_s: float) -> float | None:
        """The client of ``req`` went away at ``now_s``: free its slot and KV. Between runs at once; during a
        run, when the step in flight ends (the run is cut there, as for an arrival), so ``req`` produces no
        token after that step. Returns the new ``run_end_s`` if it changed."""
        if self.run is None:
            self.scheduler.abort(req)
            return self._start(now_s)
        self._aborts.append(req)
        return self.poke(now_s)

    # ------------------------------------------------------------------ runs
    def _start(self, now_s: float) -> float | None:
        out = self.scheduler.schedule()
        if out is None:
            self.run = None
            self.run_end_s = _INF
            return None
        self.run = out
        self.run_start_s = now_s
        if out.remote_started:
            self.new_transfers.extend(out.remote_started)
        n = out.num_decode_seqs
        k = out.num_steps
        b = 0.0
        if out.num_prefill_tokens == 0:
            if n == 0:  # only P/D transfers were admitted; nothing computes
                a = 0.0
            else:
                line = self._decode_lines[n] if n in self._decode_lines else self._fit_decode_line(n)
                if line is not None:
                    a = line[0] + line[1] * out.decode_ctx_tokens
                    b = line[1] * n
                else:
                    a = self.step_model.step_time_s(0, 0.0, n, out.decode_ctx_tokens)
                    if k > 1:
                        last = self.step_model.step_time_s(0, 0.0, n, out.decode_ctx_tokens + (k - 1) * n)
                        b = (last - a) / (k - 1)
        else:
            args = (out.num_prefill_tokens, out.prefill_attn_tokens_sq, n, out.decode_ctx_tokens)
            if self._per_rank_prefill:
                chunks = tuple(out.prefill_num_new_tokens)
                a = self.step_model.step_time_s(*args, prefill_seqs=chunks)  # type: ignore[call-arg]
            else:
                a = self.step_model.step_time_s(*args)
        if out.load_tokens and self.kv.offload is not None:
            a += out.load_tokens * self.kv.offload.s_per_token
        self._a = a
        self._b = b
        self.run_end_s = now_s + k * a + b * k * (k - 1) / 2.0
        self.version += 1
        self.num_runs += 1
        return self.run_end_s

    def _fit_decode_line(self, n: int) -> tuple[float, float] | None:
        """Fit ``T(ctx) = t0 + slope * ctx`` for ``n`` decode sequences; ``None`` if not affine (checked)."""
        m = self.step_model
        x1, x2 = n * 2048, n * 65536
        t0 = m.step_time_s(0, 0.0, n, 0)
        t1 = m.step_time_s(0, 0.0, n, x1)
        t2 = m.step_time_s(0, 0.0, n, x2)
        slope = (t2 - t0) / x2
        line: tuple[float, float] | None = (t0, slope)
        if abs(t0 + slope * x1 - t1) > 1e-9 * max(t1, 1e-12):
            line = None
        self._decode_lines[n] = line
        return line

    def _steps_done_by(self, t_s: float) -> int:
        """Steps of the current run that have ended at or after ``t_s`` (the step in flight counts)."""
        assert self.run is not None
        dt = t_s - self.run_start_s
        a, b, k = self._a, self._b, self.run.num_steps
        if dt <= 0:
            return 1
        if abs(b) < 1e-15 * max(a, 1e-300):
            m = math.ceil(dt / a) if a > 0 else 1
        else:
            # smallest m with m*a + b*m*(m-1)/2 >= dt
            qa, qb = b / 2.0, a - b / 2.0
            disc = qb * qb + 4.0 * qa * dt
            m = math.ceil((-qb + math.sqrt(disc)) / (2.0 * qa)) if disc >= 0 else k
            while m > 1 and (m - 1) * a + b * (m - 1) * (m - 2) / 2.0 >= dt:
                m -= 1
            while m < k and m * a + b * m * (m - 1) / 2.0 < dt:
                m += 1
        return max(1, min(k, m))

    def complete_run(self) -> tuple[list[EngineRequest], list[EngineRequest]]:
        """The run ended at ``run_end_s``: apply it, then start the next one. Returns (finished, first_tokens)."""
        out = self.run
        assert out is not None
        end_s = self.run_end_s
        dur = end_s - self.run_start_s
        self.busy_s += dur
        self.kv_used_block_s += self.kv.pool.num_used_blocks * dur
        self.num_steps += out.num_steps
        if out.num_steps:
            self.last_step_s = dur / out.num_steps
        finished, first = self.scheduler.update_from_output(out, out.num_steps)
        if out.remote_joined:
            # P/D: a request whose KV arrived gets its first token from its first decode step, the first of this
            # run; one preempted before it stepped recomputes and gets its first token then
            gone = {id(r) for r in out.preempted}
            for r in out.remote_joined:
                if r.first_token_s < 0 and id(r) not in gone and r.status != RequestStatus.FINISHED_ABORTED:
                    r.first_token_s = self.run_start_s + self._a
                    first.append(r)
        if self._aborts:
            gone = {id(r) for r in self._aborts if self.scheduler.abort(r)}
            self._aborts.clear()
            finished = [r for r in finished if id(r) not in gone]
            first = [r for r in first if id(r) not in gone]
        self.run = None
        self._start(end_s)
        return finished, first

    # ------------------------------------------------------------------ P/D
    def finish_transfer(self, req: EngineRequest, now_s: float) -> float | None:
        was_aborted = req.status == RequestStatus.FINISHED_ABORTED
        self.scheduler.finish_transfer(req)
        if was_aborted:
            return None
        return self.poke(now_s)  # also when it finished on arrival: its seat and blocks are free for the queue
