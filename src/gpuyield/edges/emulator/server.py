"""Build and run an engine emulator: choose the step-time model, size the KV cache, start uvicorn."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpuyield.core.sim.engine.config import resolve_scheduler_limits, scheduler_defaults
from gpuyield.edges.emulator.app import EmulatorApp, EmulatorSettings
from gpuyield.edges.emulator.engine import EmulatedEngine, EngineConfig, FixedStepTime, StepTimeModel
from gpuyield.edges.gateway.tokens import TokenCounter
from gpuyield.errors import ConfigError

__all__ = ["EmulatorSpec", "build_emulator", "run_uvicorn"]


@dataclass(frozen=True, slots=True)
class EmulatorSpec:
    model: str  # catalogue model id (engine timing) or any name (fixed modes)
    gpu: str | None = None
    tp: int = 1
    engine: str = "vllm"
    served_model_name: str | None = None
    # None: the engine's own on --gpu (sim/data/engine_families.yaml or the calibration's, as estimate and simulate
    # take them); one given alone is checked against the other (resolve_scheduler_limits), as they check it
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size_tokens: int = 16
    num_kv_blocks: int | None = None  # default: from the memory model (engine timing) or 4096
    max_model_len: int = 32768
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = 0.9
    mean_output_tokens: int = 128
    tokenizer: str | None = None
    fixed_step_ms: float | None = None  # engine loop with a fixed per-step time instead of the fleet model
    fixed_delay_ms: float | None = None  # no engine: fixed time to first token per request
    fixed_itl_ms: float = 0.0
    # fleet-model timing with speculative decoding (a gpuyield.core.perf.SpeculativeDecoding), None: plain
    speculative: Any = None
    weight_precision: str | None = None  # None: the checkpoint's own (an FP8 release runs at FP8), as plan does
    kv_dtype: str | None = None  # None: the plan's default for the model (bf16, fp8 where only fp8 exists)
    calibration: Any = None  # a gpuyield.core.perf.Calibration; None: the shipped one
    # (mean prompt tokens, mean output tokens): step times adjusted to the calibration's measured operating
    # points there, as `simulate` times the same replica (None: the step model alone)
    measured_at: tuple[int, int] | None = None


def _perf_step_model(
    spec: EmulatorSpec,
) -> tuple[StepTimeModel, int | None, tuple[int, Callable[[int], int] | None, int], float, str]:
    """The fleet model's step time, KV capacity in blocks (when it says), the blocks each sequence's bounded
    cache takes (at full windows, and as a function of its length) with the prefix-hit granule in tokens (vLLM's
    hybrid models), and the engine family's first-token overhead in seconds for the spec's model/GPU/TP."""
    from gpuyield.core.catalog import default_catalog

    cat = default_catalog()
    pm, scales = perf_model_for(spec, cat)
    blocks: int | None = None
    try:
        plan = pm.memory(
            gpu_memory_utilization=spec.gpu_memory_utilization,
            max_model_len=spec.max_model_len,
            prefix_caching=spec.enable_prefix_caching,
        )
    except TypeError:
        plan = pm.memory(gpu_memory_utilization=spec.gpu_memory_utilization)
    if getattr(plan, "fits", True) is False:
        raise ConfigError(f"model {spec.model} does not fit on {spec.tp} x {spec.gpu}: {getattr(plan, 'reason', '')}")
    for attr in ("kv_capacity_tokens", "kv_tokens", "kv_cache_tokens"):
        tokens = getattr(plan, attr, None)
        if isinstance(tokens, (int, float)) and tokens > 0:
            blocks = int(tokens) // spec.block_size_tokens
            break
    fixed = getattr(plan, "fixed_blocks_per_seq", None)
    fixed_blocks = int(fixed(spec.block_size_tokens)) if callable(fixed) else 0
    fixed_for = getattr(plan, "fixed_blocks_for", None)
    fixed_of = functools.partial(fixed_for, block_size=spec.block_size_tokens) if callable(fixed_for) else None
    hit_tokens = int(getattr(plan, "hybrid_block_tokens", 0) or 0)  # vLLM's hybrid models: prefixes in raised blocks
    overhead_s = float(pm.first_token_overhead_s)
    desc = f"fleet model: {spec.model} on {spec.tp} x {spec.gpu} ({spec.engine}, {pm.weight_precision} weights)"
    if overhead_s > 0:
        desc += f"; first-token overhead {overhead_s * 1000:.3g} ms"
    if spec.speculative is not None:
        desc += "; " + spec.speculative.describe()
    if scales is not None:
        desc += "; " + scales.describe()
    elif spec.measured_at is not None and spec.speculative is None:
        desc += f"; no measured point reaches it at ISL {spec.measured_at[0]} / OSL {spec.measured_at[1]}"
    return pm, blocks, (fixed_blocks, fixed_of, hit_tokens), overhead_s, desc


def perf_model_for(spec: EmulatorSpec, cat: Any) -> tuple[Any, Any]:
    """The replica's PerfModel as ``simulate`` builds the pool ``plan`` writes for the checkpoint (its weight
    precision unless ``spec`` says, KV dtype, calibration, speculative decoding, measured step scales at
    ``spec.measured_at``) and its measured step scales (or None)."""
    from gpuyield.core.perf import PerfModel, default_calibration
    from gpuyield.core.plan.space import checkpoint_weight_precision, default_kv_dtype
    from gpuyield.core.sim.measured import with_measured_scales

    if spec.gpu is None:
        raise ConfigError("--gpu is required for engine timing (e.g. --gpu h100-sxm), or give --fixed-step-ms")
    cal = spec.calibration if spec.calibration is not None else default_calibration()
    model_spec = cat.model(spec.model)
    gpu = cal.accelerator(cat, spec.gpu)
    precision = spec.weight_precision or checkpoint_weight_precision(model_spec, spec.model)
    pm = PerfModel.build(model_spec, gpu, tp=spec.tp, engine=spec.engine, weight_precision=precision,
                         kv_dtype=spec.kv_dtype or default_kv_dtype(model_spec), calibration=cal)  # fmt: skip
    if spec.speculative is not None:  # before the memory plan: vLLM holds hybrid models' state per draft token too
        if spec.measured_at is not None:
            raise ConfigError("--measured-at: the measured points record no speculative setting, so their step "
                              "scales are plain decoding's; not with --spec-method (as simulate and plan)")
        return pm.with_speculative(spec.speculative), None
    if spec.measured_at is not None and min(spec.measured_at) < 1:
        raise ConfigError(f"--measured-at: expected two positive token counts, got {spec.measured_at}")
    return with_measured_scales(pm, model_id=model_spec.id, gpu_id=gpu.id, engine=pm.engine, at=spec.measured_at,
                                calibration=cal, catalog=cat, max_num_seqs=spec.max_num_seqs)  # fmt: skip


def _own_limits(spec: EmulatorSpec) -> tuple[int, int]:
    """The engine's own (max_num_seqs, max_num_batched_tokens) on ``spec.gpu``, as ``estimate`` and ``simulate``
    take them: those of the replica's PerfModel (the calibration's pinned limits for its engine, GPU and weight
    precision, else the family's defaults on that GPU, engine_families.yaml). A model the catalogue does not know
    (the fixed modes take any name) gets the GPU's defaults and the calibration's family-level pins; no --gpu, the
    family's defaults for a large data-centre GPU. An unknown --gpu is an error, as it is for engine timing."""
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import default_calibration
    from gpuyield.core.perf.closed_loop import own_scheduler_limits

    if spec.gpu is None:
        return scheduler_defaults(spec.engine)
    cat = default_catalog()
    cal = spec.calibration if spec.calibration is not None else default_calibration()
    gpu = cal.accelerator(cat, spec.gpu)
    if cat.find_model(spec.model) is not None:
        return own_scheduler_limits(perf_model_for(dataclasses.replace(spec, measured_at=None, speculative=None), cat)[0])
    ec = cal.engine(spec.engine)
    return scheduler_defaults(spec.engine, gpu, ec.max_num_seqs, ec.max_num_batched_tokens)


def build_emulator(spec: EmulatorSpec) -> EmulatorApp:
    if spec.tp < 1:
        raise ConfigError(f"--tp must be >= 1, got {spec.tp}")
    if spec.engine not in ("vllm", "sglang", "trtllm"):
        raise ConfigError(f"--engine must be one of vllm, sglang, trtllm; got {spec.engine!r}")
    for label, v in (("--max-num-seqs", spec.max_num_seqs), ("--max-num-batched-tokens", spec.max_num_batched_tokens),
                     ("--block-size", spec.block_size_tokens), ("--max-model-len", spec.max_model_len),
                     ("--mean-output-tokens", spec.mean_output_tokens)):
        if v is not None and v < 1:
            raise ConfigError(f"{label} must be >= 1, got {v}")
    own_seqs, own_budget = _own_limits(spec)
    seqs, budget = resolve_scheduler_limits(spec.engine, own_seqs, own_budget, spec.max_num_seqs,
                                            spec.max_num_batched_tokens)  # fmt: skip
    spec = dataclasses.replace(spec, max_num_seqs=seqs, max_num_batched_tokens=budget)
    if spec.speculative is not None and (spec.fixed_step_ms is not None or spec.fixed_delay_ms is not None):
        raise ConfigError("--spec-method times steps with the fleet model: not with --fixed-step-ms/--fixed-delay-ms")
    tokens = TokenCounter(spec.tokenizer, spec.block_size_tokens)
    name = spec.served_model_name or spec.model
    engine: EmulatedEngine | None = None
    if spec.fixed_delay_ms is not None:
        if spec.fixed_delay_ms < 0 or spec.fixed_itl_ms < 0:
            raise ConfigError("--fixed-delay-ms and --fixed-itl-ms must be >= 0")
        desc = f"fixed delay: ttft {spec.fixed_delay_ms} ms, itl {spec.fixed_itl_ms} ms (not a model)"
    else:
        step: StepTimeModel
        blocks: int | None
        overhead_s = 0.0
        fixed: tuple[int, Callable[[int], int] | None, int] = (0, None, 0)
        if spec.fixed_step_ms is not None:
            if spec.fixed_step_ms <= 0:
                raise ConfigError(f"--fixed-step-ms must be > 0, got {spec.fixed_step_ms}")
            step, blocks = FixedStepTime(spec.fixed_step_ms / 1000.0), None
            desc = f"engine loop, fixed step {spec.fixed_step_ms} ms (not the fleet model)"
        else:
            step, blocks, fixed, overhead_s, desc = _perf_step_model(spec)
        num_blocks = spec.num_kv_blocks or blocks or 4096
        engine = EmulatedEngine(step, EngineConfig(
            num_kv_blocks=num_blocks, block_size_tokens=spec.block_size_tokens, max_num_seqs=spec.max_num_seqs,
            max_num_batched_tokens=spec.max_num_batched_tokens, max_model_len=spec.max_model_len,
            enable_prefix_caching=spec.enable_prefix_caching, first_token_overhead_s=overhead_s,
            fixed_blocks_per_seq=fixed[0], fixed_blocks_of=fixed[1], prefix_hit_tokens=fixed[2]), family=spec.engine)
        desc += f"; {num_blocks} KV blocks of {spec.block_size_tokens} tokens"
    settings = EmulatorSettings(
        served_model_name=name, mean_output_tokens=spec.mean_output_tokens, max_model_len=spec.max_model_len,
        fixed_delay_s=None if spec.fixed_delay_ms is None else spec.fixed_delay_ms / 1000.0,
        fixed_itl_s=spec.fixed_itl_ms / 1000.0, description=desc)
    return EmulatorApp(settings, engine, tokens)


def run_uvicorn(app: Any, host: str, port: int, log_level: str = "warning") -> None:
    """Serve ``app`` with uvicorn on uvloop + httptools when installed (the fastest stack measured here)."""
    import uvicorn

    loop = "uvloop"
    http = "httptools"
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover
        loop = "asyncio"
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover
        http = "h11"
    uvicorn.run(app, host=host, port=port, loop=loop, http=http, log_level=log_level, access_log=False,
                lifespan="on", timeout_keep_alive=75, backlog=4096)
