"""The one seam between measured telemetry and gpuyield's models: how many output tokens the same GPUs
could have delivered for the observed workload mix at the observed latency.

:func:`compute_baseline` calls an :data:`AchievableFn` once per deployment with a :class:`WorkloadMix`
describing what was observed. The function answers an :class:`Achievable` (capacity in output tokens per
GPU-hour, and how it was obtained) or a string saying why it cannot (then productivity is "not measured").
Nothing here guesses: :func:`default_achievable` uses ``gpuyield.core.perf`` when the performance model
can answer and otherwise says so.
"""

from __future__ import annotations

import dataclasses
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
    # the engines' family ("vllm", "sglang", "llamacpp"; "mixed" when they differ), None when unknown
    engine_kind: str | None = None


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


# the engine families the performance model has constants for, by the telemetry's engine kind; llama.cpp's
# server is not one of them, so its capacity is vLLM's on the same GPUs (the method string says so)
_ENGINE_FAMILY = {"vllm": "vllm", "sglang": "sglang"}


def perf_model_achievable(
    catalog: Any | None = None, calibration: Any | None = None, corrections: bool = True
) -> AchievableFn:
    """:func:`default_achievable` resolving names in ``catalog`` (e.g. with the user's ``--catalog`` files),
    under ``calibration`` (None: the shipped one); ``corrections=False`` leaves its measured points out."""

    def achievable(mix: WorkloadMix) -> Achievable | str:
        return _perf_achievable(mix, catalog, calibration, corrections)

    return achievable


def default_achievable(mix: WorkloadMix) -> Achievable | str:
    """Capacity from gpuyield's performance model for this model, GPU and mix, or the reason it cannot
    (names resolved in the built-in catalogue; see :func:`perf_model_achievable` for another one).

    Method: the catalogue resolves the engine's model name and DCGM's GPU name; one replica spans
    ``num_gpus / num_engines`` GPUs (its TP degree); :func:`gpuyield.core.perf.estimate_closed_loop` gives
    the steady-state TPOT and throughput at each concurrency of a ladder (1 … 512, within ``max_num_seqs``
    and the KV cache); achievable is the highest throughput whose TPOT is within the observed mean TPOT
    (the same latency), per GPU-hour. Prompts are taken at their full observed mean length (prefix-cache hits
    are not credited, so capacity is not overstated by cache luck). The step times are those of the engines'
    family (vLLM or SGLang; vLLM's for llama.cpp and for engines of several kinds) at the checkpoint's weight
    precision with a BF16 KV cache (vLLM's default; FP8 where the model's engines accept no other), and each
    point of the ladder is corrected by the calibration's measured operating points where they reach this
    model, GPU, engine and precision, as ``gpuyield estimate --method analytic --kv-dtype bf16`` reports it; a
    corrected TPOT is never below the one at fewer clients.
    """
    return _perf_achievable(mix, None, None, True)


def _perf_achievable(mix: WorkloadMix, catalog: Any | None, calibration: Any | None, corrections: bool) -> Achievable | str:
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
    from gpuyield.core.perf.calibration import default_calibration
    from gpuyield.core.perf.corrections import apply_correction
    from gpuyield.core.perf.validation import METRICS, MeasurementRow, correct_row
    from gpuyield.core.plan.space import checkpoint_weight_precision, default_kv_dtype
    from gpuyield.errors import GpuyieldError

    cat = catalog if catalog is not None else default_catalog()
    cal = calibration if calibration is not None else default_calibration()
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
    engine = _ENGINE_FAMILY.get(mix.engine_kind or "vllm", "vllm")
    try:
        precision = checkpoint_weight_precision(model, mix.model_name)
        perf = PerfModel.build(model, gpu, tp=tp, weight_precision=precision, kv_dtype=default_kv_dtype(model),
                               engine=engine, calibration=cal)  # fmt: skip
    except GpuyieldError as exc:
        return f"performance model cannot build {model.id} on {gpu.id} TP{tp}: {exc}"
    model_of = cat.model

    def gpu_of(name: str) -> Any:
        return cal.accelerator(cat, name)

    best = None
    fastest = None
    least_tpot_ms = 0.0  # the corrected TPOT at the ladder's previous concurrency
    for c in _CONCURRENCY_LADDER:
        try:
            r = estimate_closed_loop(perf, isl, osl, c)
        except GpuyieldError as exc:
            if best is None and fastest is None:
                return f"performance model: {exc}"
            break
        limited = r.limited_by
        corr = None
        if corrections:
            # the measured operating points of this deployment, as `gpuyield estimate` applies them
            row = MeasurementRow(
                index=0, gpu=gpu.id, num_gpus=tp, model=model.id, engine=engine, precision=precision,
                layout=f"agg tp{tp} pp1 adp1 ep1", tp=tp, isl=isl, osl=osl, concurrency=c, num_requests=None,
                measured=dict.fromkeys(METRICS), source="gpuyield baseline",
            )  # fmt: skip
            raw = r
            r, corr = correct_row(raw, row, model_of, gpu_of, cal)
            if corr is not None and r.tpot_ms < least_tpot_ms and raw.tpot_ms > 0:
                # more clients never decode faster: a measured point whose TPOT drops with load ran fewer
                # sequences than its clients (an unrecorded cap) and says nothing of a bigger batch
                corr = dataclasses.replace(corr, tpot_factor=least_tpot_ms / raw.tpot_ms)
                r = apply_correction(raw, corr)
            least_tpot_ms = max(least_tpot_ms, r.tpot_ms)
        if fastest is None:
            fastest = r
        if r.tpot_ms <= target_ms and (best is None or r.throughput_tok_s > best[0].throughput_tok_s):
            best = (r, corr)
        if limited != "concurrency":
            break  # more clients only queue
    if mix.engine_kind in _ENGINE_FAMILY:
        family = engine
    elif mix.engine_kind == "mixed":
        family = f"{engine} constants (engines of several kinds)"
    elif mix.engine_kind:
        family = f"{engine} constants (none for {mix.engine_kind})"
    else:
        family = f"{engine} constants (engine not reported)"
    if best is None:
        assert fastest is not None
        return (f"the performance model's TPOT for {model.id} on {gpu.id} TP{tp} ({family}, {precision}) at "
                f"concurrency 1 ({fastest.tpot_ms:.1f} ms) is already above the observed {target_ms:.1f} ms: "
                "capacity at the observed latency not modelled")
    r, corr = best
    measured = "" if corr is None else (
        f"; measured {engine} points of this model, GPU and precision correct it (TTFT ×{corr.ttft_factor:.2f}, "
        f"TPOT ×{corr.tpot_factor:.2f})")
    return Achievable(
        output_tokens_per_gpu_hour=r.throughput_tok_s * 3600.0 / tp,
        method=(f"perf model closed loop: {model.id} on {gpu.id} TP{tp}, {family}, {precision} weights, ISL {isl} / "
                f"OSL {osl}, concurrency {r.concurrency} → TPOT {r.tpot_ms:.1f} ms ≤ observed {target_ms:.1f} ms, "
                f"{r.throughput_tok_s:,.0f} tok/s per replica{measured}"),
        concurrency=r.concurrency,
    )
