"""Which vendor metric means what: DCGM exporter, vLLM (current and removed names), SGLang, llama.cpp
server and gpuyield's gateway, mapped to the canonical names of :mod:`gpuyield.core.baseline.inputs`.

Each canonical quantity lists its source names in order of preference: the first one an engine exposes
wins (so vLLM's ``vllm:inter_token_latency_seconds`` is used over the deprecated
``vllm:time_per_output_token_seconds`` when both are present). Label spellings are normalised by
:func:`normalise_labels`.
"""

from __future__ import annotations

__all__ = [
    "ENGINE_COUNTERS",
    "ENGINE_GAUGES",
    "ENGINE_HISTOGRAMS",
    "ENGINE_KIND_PREFIXES",
    "GATEWAY_COUNTERS",
    "GATEWAY_TOKEN_KINDS",
    "GPU_COUNTERS",
    "GPU_GAUGES",
    "LEGACY_NAMES",
    "PROMPT_EXCLUDES_CACHED",
    "engine_kind",
    "normalise_labels",
    "variant_labels",
]

# DCGM exporter field → canonical GPU gauge (all per GPU / MIG instance).
GPU_GAUGES: dict[str, str] = {
    "DCGM_FI_DEV_GPU_UTIL": "gpu_util_pct",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "gr_engine_active",
    "DCGM_FI_PROF_SM_ACTIVE": "sm_active",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "tensor_active",
    "DCGM_FI_PROF_DRAM_ACTIVE": "dram_active",
    "DCGM_FI_DEV_FB_USED": "fb_used_mib",
    "DCGM_FI_DEV_POWER_USAGE": "power_w",
}
GPU_COUNTERS: dict[str, str] = {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "energy_mj"}

ENGINE_KIND_PREFIXES = {"vllm:": "vllm", "sglang:": "sglang", "llamacpp:": "llamacpp"}

# canonical → source names in order of preference
ENGINE_COUNTERS: dict[str, tuple[str, ...]] = {
    "prompt_tokens": ("vllm:prompt_tokens_total", "sglang:prompt_tokens_total", "llamacpp:prompt_tokens_total"),
    "output_tokens": (
        "vllm:generation_tokens_total",
        "sglang:generation_tokens_total",
        "llamacpp:tokens_predicted_total",
    ),
    "cached_prompt_tokens": (
        "vllm:prompt_tokens_cached_total",
        "vllm:prefix_cache_hits_total",  # vLLM v1: hits counted in tokens
        "sglang:cached_tokens_total",
        "llamacpp:prompt_tokens_cached_total",
    ),
    "requests": ("vllm:request_success_total", "sglang:num_requests_total"),
    "preemptions": ("vllm:num_preemptions_total",),
    # llama.cpp: seconds spent generating, summed over slots; ÷ output tokens = mean time per output token
    "decode_seconds": ("llamacpp:tokens_predicted_seconds_total",),
}
# Engines whose prompt-token counter leaves out prompt tokens served from the cache (counted separately):
# llama.cpp's prompt_tokens_total + prompt_tokens_cached_total = all prompt tokens. vLLM's includes them.
PROMPT_EXCLUDES_CACHED = frozenset({"llamacpp"})
ENGINE_GAUGES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs", "llamacpp:requests_processing"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred"),
    "kv_usage": (
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",  # removed in vLLM v1 (0.10+)
        "sglang:token_usage",
        "llamacpp:kv_cache_usage_ratio",
    ),
}
ENGINE_HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft_s": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
    "tpot_s": (
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",  # deprecated name of the same histogram
        "sglang:inter_token_latency_seconds",
        "sglang:time_per_output_token_seconds",
    ),
    "e2e_s": ("vllm:e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds"),
    "queue_s": ("vllm:request_queue_time_seconds",),
    "request_prompt_tokens": ("vllm:request_prompt_tokens",),
    "request_output_tokens": ("vllm:request_generation_tokens",),
    "iteration_tokens": ("vllm:iteration_tokens_total",),
}
LEGACY_NAMES = frozenset({"vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"})

# gpuyield's gateway (gpuyield serve, edges/gateway/metrics.py): per-tenant counters with labels
# model, backend, tenant, and kind (tokens) or status (requests). prometheus_client adds "_total".
GATEWAY_COUNTERS: dict[str, str] = {
    "gpuyield_tokens_total": "tokens",  # kind = prompt | completion | cached
    "gpuyield_requests_total": "requests",  # status = HTTP status; 2xx counted
}
GATEWAY_TOKEN_KINDS: dict[str, str] = {
    "prompt": "prompt_tokens",
    "completion": "output_tokens",
    "cached": "cached_prompt_tokens",
}

# Labels that never identify an engine (variants of one engine's series).
_VARIANT_LABELS = frozenset({"le", "quantile", "finished_reason", "__name__"})

_LABEL_ALIASES = {
    "Hostname": "host",
    "hostname": "host",
    "kubernetes_node": "host",
    "node": "host",
    "GPU_I_ID": "mig_instance",
    "GPU_I_PROFILE": "mig_profile",
    "modelName": "device_name",
    "UUID": "uuid",
    "model": "model_name",
}


def normalise_labels(labels: dict[str, str]) -> dict[str, str]:
    """One spelling for every label: ``Hostname``/``hostname`` → ``host``; ``exported_pod`` (the workload,
    after Prometheus renamed a clash with its own ``pod`` target label) → ``pod``, likewise ``namespace``
    and ``container``; MIG ``GPU_I_ID``/``GPU_I_PROFILE`` → ``mig_instance``/``mig_profile``;
    ``modelName`` → ``device_name``; ``UUID`` → ``uuid``. Empty values are dropped."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        if value == "" or key.startswith("exported_"):
            continue
        out[_LABEL_ALIASES.get(key, key)] = value
    for key, value in labels.items():
        if key.startswith("exported_") and value != "":
            out[key[len("exported_") :]] = value
    return out


def engine_kind(metric: str) -> str | None:
    for prefix, kind in ENGINE_KIND_PREFIXES.items():
        if metric.startswith(prefix):
            return kind
    return None


def variant_labels() -> frozenset[str]:
    return _VARIANT_LABELS
