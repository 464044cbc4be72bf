"""The one seam between measured telemetry and gpuyield's models: how many output tokens the same GPUs
could have delivered for the observed workload mix at the observed latency.

:func:`compute_baseline` calls an :data:`AchievableFn` once per deployment with a :class:`WorkloadMix`
describing what was observed. The function answers an :class:`Achievable` (capacity in output tokens per
GPU-hour, and how it was obtained) or a string saying why it cannot (then productivity is "not measured").
Nothing here guesses: :func:`default_achievable` uses ``gpuyield.core.perf`` when the performance model
can answer and otherwise says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Achievable", "AchievableFn", "WorkloadMix", "default_achievable", "not_measured_achievable"]


@dataclass(frozen=True, slots=True)
class WorkloadMix:
    """What a deployment was observed doing over its window (None = not measured)."""

    model_name: str | None
    device_name: str | None  # DCGM modelName of its GPUs, e.g. "NVIDIA H100 80GB HBM3"
    num_gpus: int  # GPUs of the deployment (all replicas)
    num_engines: int  # engine processes (replicas, or DP ranks)
    window_s: float
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    cached_input_fraction: float | None
    request_rate_per_s: float | None
    observed_tpot_s: float | None  # mean inter-token latency
    observed_ttft_s: float | None  # mean time to first token
    mean_running: float | None  # mean number of running requests (batch size) per engine


@dataclass(frozen=True, slots=True)
class Achievable:
    """Capacity of the deployment's GPUs for the observed mix at the observed TPOT.

    ``output_tokens_per_gpu_hour``: tokens/GPU-hour at the best concurrency whose TPOT ≤ the observed one.
    ``concurrency``: that concurrency per engine (None if the method has none). ``method`` names the model
    used (e.g. "perf model: decode step time at batch 48, TP1").
    """

    output_tokens_per_gpu_hour: float
    method: str
    concurrency: int | None = None


AchievableFn = Callable[[WorkloadMix], "Achievable | str"]


def not_measured_achievable(mix: WorkloadMix) -> Achievable | str:
    """An estimator that never answers (used when the caller disables the model, e.g. ``--no-achievable``)."""
    return "achievable throughput not requested"


def default_achievable(mix: WorkloadMix) -> Achievable | str:
    """Capacity from ``gpuyield.core.perf`` when it can answer for this model, GPU and mix; else the reason.

    The performance model is built concurrently with this module; everything it needs is checked here so a
    missing piece yields a clear "not measured" reason rather than a number.
    """
    if mix.model_name is None:
        return "model name not reported by the engine"
    if mix.device_name is None:
        return "GPU type not reported (no DCGM modelName joined to this deployment)"
    if mix.mean_input_tokens is None or mix.mean_output_tokens is None:
        return "input/output lengths not measured (need request counts or per-request token histograms)"
    if mix.observed_tpot_s is None:
        return "observed TPOT not measured (no inter-token latency histogram)"
    try:
        from gpuyield.core import perf
    except ImportError:  # pragma: no cover - the package always exists
        return "gpuyield.core.perf is not available"
    estimator = getattr(perf, "achievable_decode_throughput", None)
    if estimator is None:
        return "gpuyield.core.perf has no throughput estimator yet (achievable not modelled)"
    result = estimator(  # pragma: no cover - wired when the perf model lands
        model=mix.model_name,
        gpu=mix.device_name,
        mean_input_tokens=mix.mean_input_tokens,
        mean_output_tokens=mix.mean_output_tokens,
        max_tpot_s=mix.observed_tpot_s,
        num_gpus=mix.num_gpus,
    )
    return result  # pragma: no cover
