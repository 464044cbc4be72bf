"""What one ``Scheduler.schedule()`` call decided: a plain dataclass, like vLLM's ``SchedulerOutput``.

One output covers either one mixed step (prefill chunks, plus one token for every decoding request) or a run of
``num_steps`` pure-decode steps that the replica advances analytically (see ``scheduler.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuyield.core.sim.engine.request import EngineRequest

__all__ = ["SchedulerOutput"]


@dataclass(slots=True)
class SchedulerOutput:
    prefill_reqs: list[EngineRequest] = field(default_factory=list)  # requests given a prefill chunk, in order
    prefill_num_new_tokens: list[int] = field(default_factory=list)  # parallel to prefill_reqs: chunk tokens
    num_prefill_tokens: int = 0  # == sum(prefill_num_new_tokens)
    prefill_attn_tokens_sq: float = 0.0  # sum(new * (computed_before + new / 2)) over chunks
    num_decode_seqs: int = 0  # decoding requests, one token each per step
    decode_ctx_tokens: int = 0  # sum of their context lengths at the first step (tokens, incl. the new one)
    num_steps: int = 1  # steps covered (> 1 only for pure-decode runs); each step adds num_decode_seqs to ctx
    decode_blocks_allocated: int = 0  # blocks taken in schedule() for the decode set's first step; blocks for
    # later steps of a run are taken when the run is applied (only as many as the steps actually done)
    decode_blocks_run: int = 0  # blocks the decode set needs for all num_steps_planned steps (>= allocated)
    num_steps_planned: int = 1  # num_steps as scheduled (num_steps is cut when a request arrives mid-run)
    num_scheduled_tokens: int = 0  # tokens in the first step: num_prefill_tokens + num_decode_seqs (<= budget)
    load_tokens: int = 0  # prefix tokens reloaded from the offload tier before the step
    preempted: list[EngineRequest] = field(default_factory=list)  # preempted while scheduling this output
    remote_started: list[EngineRequest] = field(default_factory=list)  # P/D: KV transfers admitted this step
    # P/D: requests whose KV arrived and that decode from this step on (their first token streams after it)
    remote_joined: list[EngineRequest] = field(default_factory=list)
