"""The step-time interface the engine model programs against.

:class:`gpuyield.core.perf.PerfModel` satisfies :class:`StepTimeModel`; the simulator never imports the
performance model's internals. ``step_time_s`` takes one engine iteration in aggregate form:

- ``num_prefill_tokens``: new prompt tokens computed this step (sum of all prefill chunks);
- ``prefill_attn_tokens_sq``: prefill attention work, ``sum(new * (context_before + new / 2))`` over chunks;
- ``num_decode_seqs``: sequences generating one token this step;
- ``decode_ctx_tokens``: sum of those sequences' context lengths (tokens attended, including the new one).

A model with attention-DP ranks (an ``attention_dp`` attribute above 1, as a ``PerfModel`` has) also takes
``prefill_seqs``, each prompt's chunk in the step: a prompt sits on one rank and the step lasts as long as the
busiest one; the replica passes it for every step with prefill chunks.

Analytic decode runs assume ``step_time_s`` is affine in ``decode_ctx_tokens`` for a fixed batch over the
span of one run (true of every roofline/linear-fit model: decode attention reads KV bytes proportional to the
context). The run time is then exact from two evaluations (first and last step); for a model that is only
approximately affine the secant error is bounded by its curvature over the run. ``tests/core/sim`` checks the
agreement against step-by-step evaluation.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["StepTimeModel"]


@runtime_checkable
class StepTimeModel(Protocol):
    """Anything that can time one engine iteration (seconds)."""

    def step_time_s(
        self,
        num_prefill_tokens: int,
        prefill_attn_tokens_sq: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> float: ...
