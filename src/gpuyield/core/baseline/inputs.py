"""Plain inputs of the baseline computation: telemetry already grouped per GPU, engine and tenant.

The edges (``gpuyield.edges.telemetry``) turn raw series with vendor names into these records with
*canonical* metric names, listed here. Units are in the names.

GPU gauges (per GPU or MIG instance): ``gpu_util_pct`` (0–100, DCGM_FI_DEV_GPU_UTIL), ``gr_engine_active``,
``sm_active``, ``tensor_active``, ``dram_active`` (ratios 0–1, DCGM_FI_PROF_*), ``fb_used_mib``, ``power_w``.
GPU counters: ``energy_mj`` (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, millijoules since boot).

Engine counters: ``prompt_tokens``, ``cached_prompt_tokens``, ``output_tokens``, ``requests`` (finished
successfully), ``preemptions``, ``decode_seconds`` (time spent generating, summed over sequences). Engine gauges: ``running``, ``waiting``, ``kv_usage`` (0–1).
Engine histograms: ``ttft_s``, ``tpot_s`` (inter-token latency), ``e2e_s``, ``queue_s``,
``request_prompt_tokens``, ``request_output_tokens``, ``iteration_tokens`` (tokens per engine step).

Tenant counters (gpuyield gateway): ``prompt_tokens``, ``cached_prompt_tokens``, ``output_tokens``,
``requests``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuyield.core.baseline.series import Histogram, TimeSeries

__all__ = [
    "BaselineInputs",
    "Deployment",
    "EngineTelemetry",
    "GpuTelemetry",
    "Price",
    "TenantTelemetry",
]

GPU_GAUGES = ("gpu_util_pct", "gr_engine_active", "sm_active", "tensor_active", "dram_active", "fb_used_mib", "power_w")


@dataclass(frozen=True)
class GpuTelemetry:
    """One physical GPU or MIG instance.

    ``gpu_id`` is stable and human-readable: ``<host>/gpu<index>`` (plus ``/mig<GPU_I_ID>``), or the UUID
    when there is no host. ``device_name`` is DCGM's ``modelName`` (e.g. "NVIDIA H100 80GB HBM3").
    ``pod``/``namespace``/``container`` are the workload DCGM reports on this GPU (None when none).
    """

    gpu_id: str
    host: str | None = None
    index: str | None = None
    uuid: str | None = None
    device_name: str | None = None
    mig_profile: str | None = None
    pod: str | None = None
    namespace: str | None = None
    container: str | None = None
    gauges: dict[str, TimeSeries] = field(default_factory=dict)
    counters: dict[str, TimeSeries] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineTelemetry:
    """One engine process (vLLM, SGLang, llama.cpp server). Counters and gauges may have several label
    variants (e.g. ``finished_reason``): their increases are summed, their gauge values summed per scrape."""

    engine_id: str
    kind: str  # "vllm" | "sglang" | "llamacpp"
    model_name: str | None = None
    pod: str | None = None
    namespace: str | None = None
    host: str | None = None
    counters: dict[str, list[TimeSeries]] = field(default_factory=dict)
    gauges: dict[str, list[TimeSeries]] = field(default_factory=dict)
    histograms: dict[str, list[Histogram]] = field(default_factory=dict)
    prefix_caching_enabled: bool | None = None  # from vllm:cache_config_info, None when unknown
    legacy_names: tuple[str, ...] = ()  # removed metric names seen (e.g. vllm:gpu_cache_usage_perc)
    prompt_excludes_cached: bool = False  # llama.cpp: prompt_tokens counts only uncached prompt tokens


@dataclass(frozen=True)
class TenantTelemetry:
    """Per-tenant token counters from gpuyield's gateway (``gpuyield_*`` metrics)."""

    tenant: str
    model_name: str | None
    counters: dict[str, list[TimeSeries]] = field(default_factory=dict)


@dataclass(frozen=True)
class Deployment:
    """Engines serving one model on a set of GPUs. ``joined_by`` says how: "map file" or "pod label"."""

    name: str
    model_name: str | None
    engine_ids: tuple[str, ...]
    gpu_ids: tuple[str, ...]
    joined_by: str


@dataclass(frozen=True)
class Price:
    """What one GPU-hour costs, with provenance."""

    usd_per_gpu_hour: float
    source: str
    as_of: str


@dataclass(frozen=True)
class BaselineInputs:
    """Everything the computation needs. ``single_scrape_s`` is how long one scrape is taken to cover when a
    series has only one sample (the exporter's scrape interval)."""

    gpus: tuple[GpuTelemetry, ...]
    engines: tuple[EngineTelemetry, ...]
    deployments: tuple[Deployment, ...]
    tenants: tuple[TenantTelemetry, ...] = ()
    prices: dict[str, Price | None] = field(default_factory=dict)  # gpu_id → price (None: unknown)
    single_scrape_s: float = 15.0
    notes: tuple[str, ...] = ()
