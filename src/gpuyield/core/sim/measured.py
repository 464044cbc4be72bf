"""Solve a deployment's measured step scales: the step model's prefill and decode times, per batch size, made
to reproduce what its measured operating points say (``gpuyield.core.perf.measured_steps``).

At each grid concurrency ``c`` (1, 2, 4, ... up to the engine's sequence cap):

1. the engine model's closed-loop answer at the operating point (ISL, OSL, ``c`` clients on one replica),
   exactly what ``gpuyield estimate`` computes before its correction;
2. the calibration's measured points near it correct that answer (``correct_row``, learned stage included):
   TTFT and TPOT factors, as ``estimate`` reports them;
3. a decode multiplier of the step times such that the closed-loop TPOT with the scaled steps moves by the
   TPOT factor (a few multiplicative fixed-point rounds of the analytic solver, whose TPOT responds to step
   times as the engine model's does).

The prefill multiplier is one number, solved with the decode one at the lowest concurrency the points reach
if that is one or two clients (TTFT is then a prefill plus fixed costs and nothing queues; else 1), and kept
within [1/2, 2]. Unreached grid points take their nearest reached neighbour's decode multiplier, and the
multipliers are raised where needed so that a bigger batch never steps faster than a smaller one. At higher concurrency a measured
TTFT's residual is mostly the benchmark's queueing (every client sends at t = 0, and the first wave queues
behind itself), which the simulator models on its own arrivals: read as a step-time error it would speed
prefill up by 3–5× (Qwen3-32B on H100 with vLLM), which no kernel does.

A grid point the corrections do not reach keeps multipliers of 1 there; a deployment they reach nowhere gets
None (the step model alone). The targets are those of an aggregated replica of the shape: a prefill or decode
pool of a disaggregated deployment runs the same kernels, so its multipliers are solved, against its own step
model (the P/D constants, ``PerfModel.build_pool``), to the same targets (measured disaggregated rows are keyed by
the whole deployment's worker counts, which one pool does not know, and are not used here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpuyield.core.perf import PerfModel, estimate_closed_loop
from gpuyield.core.perf.measured_steps import MeasuredStepScales
from gpuyield.errors import GpuyieldError

__all__ = [
    "MIN_MEASURED_SUPPORT",
    "MeasuredAt",
    "WorkloadLengths",
    "measured_step_scales",
    "measured_step_scales_cached",
    "routed_points",
    "with_measured_scales",
]


@dataclass(frozen=True, slots=True)
class WorkloadLengths:
    """Prompt and output token sums and request counts of a workload per model name its requests use (None:
    requests naming no model): where each replica's measured step scales are solved (:func:`routed_points`)."""

    by_name: Mapping[str | None, tuple[float, float, int]]

    @classmethod
    def of(cls, input_tokens: Any, output_tokens: Any, model_codes: Any, models: Sequence[str | None]) -> WorkloadLengths:
        import numpy as np

        inp, out, codes = np.asarray(input_tokens), np.asarray(output_tokens), np.asarray(model_codes)
        by: dict[str | None, tuple[float, float, int]] = {}
        for code, name in enumerate(models):
            mask = codes == code
            n = int(mask.sum())
            if n:
                si, so, k = by.get(name, (0.0, 0.0, 0))
                by[name] = (si + float(inp[mask].sum()), so + float(out[mask].sum()), k + n)
        return cls(by)

    def mean(self, names: Iterable[str | None] | None = None) -> tuple[int, int] | None:
        """Mean (prompt, output) tokens over the requests naming ``names`` (None: all), or None if there are none."""
        keys = list(self.by_name) if names is None else list(names)
        si = so = 0.0
        n = 0
        for k in keys:
            a, b, c = self.by_name.get(k, (0.0, 0.0, 0))
            si, so, n = si + a, so + b, n + c
        return (max(1, round(si / n)), max(1, round(so / n))) if n else None


# Where measured step scales are solved: one (mean prompt tokens, mean output tokens) for every replica, or the
# workload's lengths per model name, routed to replicas as the cluster routes requests (routed_points).
MeasuredAt = tuple[int, int] | WorkloadLengths


def routed_points(
    lengths: WorkloadLengths,
    replicas: Sequence[tuple[Hashable, str, Sequence[str], str]],
    default_model: str | None,
    resolver: Callable[[str], str | None] | None,
) -> dict[Hashable, tuple[int, int] | None]:
    """Mean (prompt, output) tokens of the requests each replica kind receives: ``replicas`` are (key, model,
    served names, role); a request's name (``default_model`` when it names none, else the first replica's
    model) goes to the kinds whose model or served names equal it, else to those whose model is the name's
    catalogue id (``resolver``), as :meth:`Cluster._targets` routes it, and nowhere when the cluster would reject
    it (only decode replicas match, or prefill ones without decode ones). A name several kinds serve counts for
    each. A kind that receives no request is solved at the whole workload's means."""
    default = default_model or (replicas[0][1] if replicas else None)
    got: dict[Hashable, list[str | None]] = {k: [] for k, _, _, _ in replicas}
    for name in lengths.by_name:
        target = default if name is None else name
        if target is None:
            continue
        match = [(k, role) for k, m, served, role in replicas if target == m or target in served]
        if not match and resolver is not None:
            canon = resolver(target)
            match = [(k, role) for k, m, _, role in replicas if canon is not None and m == canon]
        entry = [role for _, role in match if role != "decode"]
        if not entry or ("prefill" in entry and not any(role == "decode" for _, role in match)):
            continue  # rejected: no replica serves it
        for k, _ in match:
            got[k].append(name)
    overall = lengths.mean()
    return {k: (lengths.mean(names) if names else overall) for k, names in got.items()}


MIN_MEASURED_SUPPORT = 0.05  # kernel support below which a grid point is left at the step model
_MULT_RANGE = (0.2, 5.0)
_PREFILL_RANGE = (0.5, 2.0)  # the prefill multiplier's bounds (one client: the TTFT residual is prefill + fixed costs)
_PREFILL_MAX_CONCURRENCY = 2  # solved at the lowest reached grid point if it is this or smaller; else 1
_ROUNDS = 8


def _grid(max_seqs: int) -> tuple[int, ...]:
    out = [1]
    while out[-1] * 2 <= max_seqs:
        out.append(out[-1] * 2)
    if out[-1] < max_seqs:
        out.append(max_seqs)
    return tuple(out)


def _solve(
    perf: PerfModel, isl: int, osl: int, c: int, f_ttft: float | None, f_tpot: float, prefill: float = 1.0
) -> tuple[float, float]:
    """(prefill, decode) multipliers moving the analytic closed-loop TPOT at ``c`` by ``f_tpot`` and, when
    ``f_ttft`` is given, its TTFT by ``f_ttft`` (else the prefill multiplier stays ``prefill``)."""
    base = estimate_closed_loop(perf, isl, osl, c)
    want_t = base.ttft_ms * f_ttft if f_ttft is not None else None
    want_d = base.tpot_ms * f_tpot
    lo, hi = _MULT_RANGE
    mp, md = prefill, 1.0
    for _ in range(_ROUNDS):
        flat = MeasuredStepScales((1,), (mp,), (md,), isl, osl, 0.0, 0, False)
        got = estimate_closed_loop(perf.with_measured(flat), isl, osl, c)
        rt = want_t / got.ttft_ms if want_t is not None else 1.0
        rd = want_d / got.tpot_ms
        if abs(math.log(rt)) < 0.005 and abs(math.log(rd)) < 0.005:
            break
        mp = min(hi, max(lo, mp * rt))
        md = min(hi, max(lo, md * rd))
    return mp, md


def measured_step_scales(
    perf: PerfModel,
    *,
    model_id: str,
    gpu_id: str,
    engine: str,
    isl: int,
    osl: int,
    calibration: Any,
    model_of: Callable[[str], Any],
    gpu_of: Callable[[str], Any],
    max_num_seqs: int = 256,
) -> MeasuredStepScales | None:
    """The measured step scales of ``perf`` (an aggregated replica, or a P/D pool timed to the targets of an
    aggregated replica of its shape) at mean prompt ``isl`` and output ``osl`` tokens, or None when no measured
    point of its architecture, engine and precision reaches it."""
    from gpuyield.core.perf.validation import METRICS, MeasurementRow, correct_row, deployment_key
    from gpuyield.core.sim.closed_loop import estimate_with_engine_model

    if calibration is None or calibration.corrections is None or perf.speculative is not None:
        return None  # measured rows record no speculative decoding: their residuals are not this engine's
    isl, osl = max(1, int(isl)), max(1, int(osl))
    grid = _grid(max(1, int(max_num_seqs)))
    layout = f"agg tp{perf.tp} pp{perf.pp} adp{perf.attention_dp} ep{perf.ep}"
    prefill_mult = 1.0
    decode: list[float | None] = []  # None: a grid point the measured points do not reach
    best: tuple[float, int, bool] | None = None
    first = True  # the lowest reached grid point sets the prefill multiplier (if it is a small concurrency)
    for c in grid:
        row = MeasurementRow(
            index=0, gpu=gpu_id, num_gpus=perf.num_gpus, model=model_id, engine=engine,
            precision=perf.weight_precision, layout=layout, tp=perf.tp, isl=isl, osl=osl, concurrency=c,
            num_requests=None, measured=dict.fromkeys(METRICS), source="measured step scales",
        )  # fmt: skip
        try:
            # cheap first: no measured point within reach, no engine-model run (an unmeasured model costs nothing)
            reach = calibration.corrections.correct(deployment_key(row, model_of, gpu_of), isl, osl, c, method="sim")
            if reach is None or reach.support < MIN_MEASURED_SUPPORT:
                decode.append(None)
                continue
            eng = estimate_with_engine_model(perf, isl, osl, c)
            corrected, corr = correct_row(eng, row, model_of, gpu_of, calibration, method="sim")
        except GpuyieldError:
            corr = None
        if corr is None or corr.support < MIN_MEASURED_SUPPORT or not (eng.ttft_ms > 0 and eng.tpot_ms > 0):
            decode.append(None)
            continue
        if best is None or corr.support > best[0]:
            best = (corr.support, corr.num_points, corr.same_deployment)
        solve_ttft = first and c <= _PREFILL_MAX_CONCURRENCY
        f_ttft = corrected.ttft_ms / eng.ttft_ms if solve_ttft else None
        mp, md = _solve(perf, isl, osl, c, f_ttft, corrected.tpot_ms / eng.tpot_ms, prefill_mult)
        if solve_ttft:
            prefill_mult = min(_PREFILL_RANGE[1], max(_PREFILL_RANGE[0], mp))
        first = False
        decode.append(md)
    if best is None:
        return None
    # an unreached grid point takes its nearest reached neighbour's multiplier (not 1: no cliff between them)
    reached = [k for k, v in enumerate(decode) if v is not None]
    filled = [float(decode[min(reached, key=lambda r: (abs(r - k), r))] or 1.0) for k in range(len(grid))]
    # a bigger batch never steps faster than a smaller one (the solved multipliers, one per concurrency, need
    # not keep it so): between grid points the multiplier is a power of the batch, m ∝ D^a, and m·T(D) does not
    # fall while a ≥ -(elasticity of the step time T in D), which is least at the interval's low end
    ctx = isl + osl / 2.0

    def step(d: int) -> float:
        return perf.step_time_s(0, 0.0, d, int(d * ctx))

    for k in range(1, len(grid)):
        lo = grid[k - 1]
        elasticity = lo * (step(lo + 1) - step(lo)) / step(lo)
        filled[k] = max(filled[k], filled[k - 1] * (grid[k] / lo) ** (-max(0.0, elasticity)))
    prefill = tuple(prefill_mult for _ in grid)
    return MeasuredStepScales(grid, prefill, tuple(filled), isl, osl, best[0], best[1], best[2])


_CACHE: dict[tuple[Any, ...], tuple[Any, Any, MeasuredStepScales | None]] = {}
_CACHE_MAX = 512


def measured_step_scales_cached(
    perf: PerfModel, *, model_id: str, gpu_id: str, engine: str, isl: int, osl: int, calibration: Any,
    catalog: Any, max_num_seqs: int = 256,
) -> MeasuredStepScales | None:  # fmt: skip
    """:func:`measured_step_scales` with the catalogue's lookups, remembered per (replica shape and pool
    constants, operating point, calibration and catalogue objects) for the life of the process: the planner's
    screen and every simulation of a candidate ask for the same replica's scales."""
    key = (
        model_id, gpu_id, engine, perf.engine_coeffs, perf.tp, perf.pp, perf.ep, perf.attention_dp,
        perf.weight_precision, perf.kv_dtype, int(isl), int(osl), int(max_num_seqs), id(calibration), id(catalog),
    )  # fmt: skip
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is calibration and hit[1] is catalog:
        return hit[2]
    out = measured_step_scales(
        perf, model_id=model_id, gpu_id=gpu_id, engine=engine, isl=isl, osl=osl, calibration=calibration,
        model_of=catalog.model, gpu_of=lambda g: calibration.accelerator(catalog, g), max_num_seqs=max_num_seqs,
    )  # fmt: skip
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = (calibration, catalog, out)
    return out


def with_measured_scales(
    perf: PerfModel, *, model_id: str, gpu_id: str, engine: str, at: tuple[int, int] | None, calibration: Any,
    catalog: Any, max_num_seqs: int,
) -> tuple[PerfModel, MeasuredStepScales | None]:  # fmt: skip
    """``perf`` with its measured step scales at ``at`` (mean prompt, output tokens; None: none asked) applied,
    and the scales, or ``perf`` unchanged and None where no measured point reaches it (``calibration`` None:
    the shipped one). What ``simulate`` does to each pool and each multiplexed model."""
    if at is None or perf.speculative is not None:
        return perf, None
    if calibration is None:
        from gpuyield.core.perf import default_calibration

        calibration = default_calibration()
    scales = measured_step_scales_cached(
        perf, model_id=model_id, gpu_id=gpu_id, engine=engine, isl=at[0], osl=at[1], calibration=calibration,
        catalog=catalog, max_num_seqs=max_num_seqs,
    )  # fmt: skip
    return (perf.with_measured(scales), scales) if scales is not None else (perf, None)
