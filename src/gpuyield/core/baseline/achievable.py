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
from typing import Any

__all__ = [
    "Achievable",
    "AchievableFn",
    "WorkloadMix",
    "default_achievable",
    "not_measured_achievable",
    "perf_model_achievable",
]


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


_CONCURRENCY_LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_TP_DEGREES = (1, 2, 4, 8)


def perf_model_achievable(catalog: Any | None = None) -> AchievableFn:
    """:func:`default_achievable` resolving names in ``catalog`` (e.g. with the user's ``--catalog`` files)."""

    def achievable(mix: WorkloadMix) -> Achievable | str:
        return _perf_achievable(mix, catalog)

    return achievable


def default_achievable(mix: WorkloadMix) -> Achievable | str:
    """Capacity from gpuyield's performance model for this model, GPU and mix, or the reason it cannot
    (names resolved in the built-in catalogue; see :func:`perf_model_achievable` for another one).

    Method: the catalogue resolves the engine's model name and DCGM's GPU name; one replica spans
    ``num_gpus / num_engines`` GPUs (its TP degree); :func:`gpuyield.core.perf.estimate_closed_loop` gives
    the steady-state TPOT and throughput at each concurrency of a ladder (1 … 512, within ``max_num_seqs``
    and the KV cache); achievable is the highest throughput whose TPOT is within the observed mean TPOT
    (the same latency), per GPU-hour. Prompts are taken at their full observed mean length (prefix-cache hits
    are not credited, so capacity is not overstated by cache luck).
    """
    return _perf_achievable(mix, None)


def _perf_achievable(mix: WorkloadMix, catalog: Any | None) -> Achievable | str:
    if mix.model_name is None:
        return "model name not reported by the engine"
    if mix.device_name is None:
        return "GPU type not reported (no DCGM modelName joined to this deployment)"
    if mix.mean_input_tokens is None or mix.mean_output_tokens is None:
        return "input/output lengths not measured (need request counts or per-request token histograms)"
    if mix.observed_tpot_s is None:
        return "observed TPOT not measured (no inter-token latency histogram)"
    if mix.num_gpus < 1 or mix.num_engines < 1:
        return "no GPU or engine in the deployment"
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel, estimate_closed_loop
    from gpuyield.errors import GpuyieldError

    cat = catalog if catalog is not None else default_catalog()
    model = cat.find_model(mix.model_name)
    if model is None:
        return f"model '{mix.model_name}' is not in the catalogue (add it with --catalog to model capacity)"
    gpu = cat.find_gpu(mix.device_name)
    if gpu is None:
        return f"GPU '{mix.device_name}' is not in the catalogue (add it with --catalog to model capacity)"
    tp = mix.num_gpus // mix.num_engines
    if tp not in _TP_DEGREES or tp * mix.num_engines != mix.num_gpus:
        return f"{mix.num_gpus} GPUs for {mix.num_engines} engine(s) is not a TP degree the model covers (1, 2, 4, 8)"
    isl = max(1, round(mix.mean_input_tokens))
    osl = max(1, round(mix.mean_output_tokens))
    target_ms = mix.observed_tpot_s * 1000.0
    try:
        perf = PerfModel.build(model, gpu, tp=tp)
    except GpuyieldError as exc:
        return f"performance model cannot build {model.id} on {gpu.id} TP{tp}: {exc}"
    best = None
    fastest = None
    for c in _CONCURRENCY_LADDER:
        try:
            r = estimate_closed_loop(perf, isl, osl, c)
        except GpuyieldError as exc:
            if best is None and fastest is None:
                return f"performance model: {exc}"
            break
        if fastest is None:
            fastest = r
        if r.tpot_ms <= target_ms and (best is None or r.throughput_tok_s > best.throughput_tok_s):
            best = r
        if r.limited_by != "concurrency":
            break  # more clients only queue
    if best is None:
        assert fastest is not None
        return (f"the performance model's TPOT for {model.id} on {gpu.id} TP{tp} at concurrency 1 "
                f"({fastest.tpot_ms:.1f} ms) is already above the observed {target_ms:.1f} ms: capacity at the "
                "observed latency not modelled")
    return Achievable(
        output_tokens_per_gpu_hour=best.throughput_tok_s * 3600.0 / tp,
        method=(f"perf model closed loop: {model.id} on {gpu.id} TP{tp}, ISL {isl} / OSL {osl}, concurrency "
                f"{best.concurrency} → TPOT {best.tpot_ms:.1f} ms ≤ observed {target_ms:.1f} ms, "
                f"{best.throughput_tok_s:,.0f} tok/s per replica"),
        concurrency=best.concurrency,
    )
