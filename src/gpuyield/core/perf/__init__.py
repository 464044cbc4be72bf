"""The performance model: step time and memory of one engine replica, calibrated on measured data.

Interface (the contract the simulator, planner and baseline program against)
==========================================================================

``PerfModel.build(model, gpu, tp=1, pp=1, ep=1, attention_dp=1, weight_precision="bf16", kv_dtype="bf16",
engine="vllm", calibration=None) -> PerfModel``

    ``model`` is a :class:`gpuyield.core.catalog.ModelSpec`, ``gpu`` an ``Accelerator`` (or any object with
    ``memory_gb``, ``memory_bandwidth_tb_s``, ``bf16_dense_tflops``, ``fp8_dense_tflops``,
    ``fp4_dense_tflops``, ``interconnect_gb_s``). One *replica* spans ``tp * pp * attention_dp`` GPUs:
    attention is sharded ``tp`` ways and replicated ``attention_dp`` times; routed experts are spread over
    all ``tp * attention_dp`` GPUs of a stage (``ep`` ways expert-parallel, ``tp * attention_dp / ep`` ways
    tensor-parallel inside an expert). ``calibration`` is a :class:`Calibration` (default: the one shipped in
    ``core/perf/data/calibration.yaml``, rebuilt by ``gpuyield calibrate``).

``PerfModel.step_time_s(num_prefill_tokens, prefill_attn_tokens_sq, num_decode_seqs, decode_ctx_tokens)``

    Seconds of one forward step of the whole replica, batch in aggregate form:

    - ``num_prefill_tokens``: new prompt tokens computed this step (all prefill chunks);
    - ``prefill_attn_tokens_sq``: ``sum(new * (context_before + new / 2))`` over the chunks;
    - ``num_decode_seqs``: sequences generating one token this step;
    - ``decode_ctx_tokens``: the sum of those sequences' context lengths.

    Plain float math on coefficients precomputed in ``__init__``; never decreases when any argument grows;
    affine in ``decode_ctx_tokens`` for a fixed batch (decode attention reads KV bytes ∝ context).

``PerfModel.with_speculative(SpeculativeDecoding(method, num_draft_tokens, acceptance_rate)) -> PerfModel``

    A copy whose decode steps are speculative (MTP, EAGLE, n-gram): ``step_time_s`` then charges a step's
    decode part per output token (verification plus drafting over the tokens a step yields, the prefill
    chunks keeping their own cost); the closed-loop solver and the engine model follow. See
    ``gpuyield.core.perf.speculative``.

``PerfModel.step_breakdown(...)`` (same arguments) -> :class:`StepBreakdown`: seconds per op (``gemm``,
``moe``, ``attn_prefill``, ``attn_decode``, ``comm_tp``, ``comm_ep``, ``lm_head``, ``overhead``), summing
to ``total_s``, plus ``out_of_range`` naming every lookup outside the measured ranges (clamped, never
silently extrapolated).

``PerfModel.memory(gpu_memory_utilization=0.9, max_model_len=None) -> MemoryPlan`` (per GPU): weights,
runtime reserve, KV capacity in tokens and blocks, ``max_concurrent_seqs(context_tokens)``, ``fits`` and
``reason``.

The closed-loop estimator (:func:`estimate_closed_loop`) turns step times into TTFT/TPOT/throughput at a
fixed concurrency; :mod:`gpuyield.core.perf.validation` scores predictions against measured rows.
"""

from gpuyield.core.perf.calibration import (
    Calibration,
    EngineCoefficients,
    GpuCoefficients,
    default_calibration,
)
from gpuyield.core.perf.closed_loop import ClosedLoopResult, estimate_closed_loop
from gpuyield.core.perf.model import MemoryPlan, PerfModel, StepBreakdown
from gpuyield.core.perf.speculative import SpeculativeDecoding

__all__ = [
    "Calibration",
    "ClosedLoopResult",
    "EngineCoefficients",
    "GpuCoefficients",
    "MemoryPlan",
    "PerfModel",
    "SpeculativeDecoding",
    "StepBreakdown",
    "default_calibration",
    "estimate_closed_loop",
]
