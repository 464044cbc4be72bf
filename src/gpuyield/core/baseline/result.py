"""Results of the baseline computation. ``None`` always means "not measured"; ``notes`` says why.

Ratios (``mean_gpu_util``, ``mean_sm_active``, ``productivity``...) are fractions 0–1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BaselineResult", "FleetResult", "GapCause", "GpuResult", "ModelResult", "TenantResult", "TimelinePoint"]


@dataclass(slots=True)
class GapCause:
    """One reason delivered < achievable. ``lost_fraction`` is the share of achievable tokens it explains
    (None when it cannot be quantified from telemetry); ``command`` closes it."""

    cause: str  # "idle" | "over-provisioning" | "small batches" | "no prefix caching" | "TP or GPU choice"
    detail: str
    lost_fraction: float | None = None
    command: str | None = None


@dataclass(slots=True)
class GpuResult:
    gpu_id: str
    host: str | None
    index: str | None
    uuid: str | None
    device_name: str | None
    mig_profile: str | None
    pod: str | None
    deployment: str | None
    window_s: float
    gpu_hours: float
    mean_gpu_util: float | None  # "busy": DCGM_FI_DEV_GPU_UTIL / 100
    mean_gr_engine_active: float | None
    mean_sm_active: float | None
    mean_tensor_active: float | None
    mean_dram_active: float | None
    mean_fb_used_mib: float | None
    mean_power_w: float | None
    energy_kwh: float | None
    energy_source: str | None  # "energy counter" | "integrated power"
    usd_per_gpu_hour: float | None
    price_source: str | None
    usd: float | None
    idle_gpu_hours: float | None
    idle_usd: float | None
    idle_reason: str | None  # "no engine" | "engine without traffic" | None
    output_tokens: float | None  # this GPU's share of its deployment's tokens (deployment tokens / its GPUs)
    productivity: float | None  # its deployment's productivity


@dataclass(slots=True)
class ModelResult:
    deployment: str
    model: str | None
    engine_kind: str | None
    engines: list[str]
    gpus: list[str]
    device_name: str | None
    joined_by: str
    window_s: float
    basis: str  # "window" (≥2 scrapes) | "lifetime" (one scrape: counters since engine start)
    gpu_hours: float
    usd: float | None
    energy_kwh: float | None
    requests: float | None
    input_tokens: float | None
    cached_input_tokens: float | None
    uncached_input_tokens: float | None
    output_tokens: float | None
    lifetime_input_tokens: float | None
    lifetime_output_tokens: float | None
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    request_rate_per_s: float | None
    ttft_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_mean_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    mean_running: float | None
    mean_kv_usage: float | None
    mean_tokens_per_step: float | None
    output_tokens_per_gpu_hour: float | None
    output_tokens_per_kwh: float | None
    usd_per_1m_output_tokens: float | None
    idle_gpu_hours: float | None
    idle_usd: float | None
    achievable_output_tokens: float | None
    achievable_method: str | None
    productivity: float | None
    gap: list[GapCause] = field(default_factory=list)


@dataclass(slots=True)
class TenantResult:
    tenant: str
    model: str | None
    requests: float | None
    input_tokens: float | None
    cached_input_tokens: float | None
    output_tokens: float | None
    output_share: float | None  # of its model's output tokens
    usd: float | None  # its model's cost × output_share


@dataclass(slots=True)
class FleetResult:
    gpus: int
    window_s: float
    gpu_hours: float
    usd: float | None
    usd_per_hour: float | None
    output_tokens: float | None
    input_tokens: float | None
    cached_input_tokens: float | None
    usd_per_1m_output_tokens: float | None
    output_tokens_per_gpu_hour: float | None
    output_tokens_per_kwh: float | None
    idle_gpus: int
    idle_gpu_hours: float | None
    idle_usd: float | None
    idle_usd_per_hour: float | None
    mean_gpu_util: float | None
    mean_gr_engine_active: float | None
    mean_sm_active: float | None
    mean_tensor_active: float | None
    mean_dram_active: float | None
    mean_power_w: float | None
    energy_kwh: float | None
    achievable_output_tokens: float | None
    productivity: float | None


@dataclass(slots=True)
class TimelinePoint:
    """Fleet idle cost in one time bin ``[start_s, end_s)`` (epoch seconds)."""

    start_s: float
    end_s: float
    idle_gpu_hours: float
    idle_usd: float | None


@dataclass(slots=True)
class BaselineResult:
    fleet: FleetResult
    per_gpu: list[GpuResult]
    per_model: list[ModelResult]
    per_tenant: list[TenantResult]
    idle_timeline: list[TimelinePoint]
    notes: list[str]
    gap: list[GapCause] = field(default_factory=list)  # fleet-level causes (GPUs without an engine, ...)
