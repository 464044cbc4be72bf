"""The baseline arithmetic: from grouped telemetry and prices to per-GPU, per-model, per-tenant and fleet
figures, idle cost, and productivity = delivered ÷ achievable output tokens.

Windows. Each GPU's window is ``[first, last]`` sample time of its DCGM series. A GPU seen in one scrape
only covers ``single_scrape_s`` (the scrape interval). Engine counters need ≥ 2 scrapes to give a
window increase; from a single scrape they give lifetime totals (since the engine started), reported as
``lifetime_*`` and never mixed into window figures. Ratios of lifetime histograms (mean TTFT, TPOT, ISL,
OSL) are still valid descriptions of the mix and are used, with ``basis = "lifetime"``.

Idle. A GPU is idle while it has no engine (no pod on it and no mapping), or while its deployment's engines
have no traffic: an interval between two scrapes in which no engine's prompt or output token counter
moved; with a single scrape, when no request is running or waiting at the scrape.

Productivity. ``achievable = capacity (output tokens per GPU-hour, from the AchievableFn) × GPU-hours of
the deployment``; ``productivity = output_tokens / achievable``. Fleet productivity also charges idle GPUs
without an engine at the capacity of the same GPU type (the observed mix served on them); it is "not
measured" when any part is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from gpuyield.core.baseline.achievable import Achievable, AchievableFn, WorkloadMix, default_achievable
from gpuyield.core.baseline.inputs import BaselineInputs, Deployment, EngineTelemetry, GpuTelemetry, Price
from gpuyield.core.baseline.result import (
    BaselineResult,
    FleetResult,
    GapCause,
    GpuResult,
    ModelResult,
    TenantResult,
    TimelinePoint,
)
from gpuyield.core.baseline.series import (
    Histogram,
    TimeSeries,
    counter_increase,
    counter_increments,
    gauge_integral,
    gauge_mean,
    histogram_quantile,
)

__all__ = ["MAX_TIMELINE_BINS", "compute_baseline", "plan_command"]

MAX_TIMELINE_BINS = 48
_MJ_PER_KWH = 3.6e9
_J_PER_KWH = 3.6e6

Interval = tuple[float, float]


def plan_command(model: str | None, device_name: str | None, ttft_s: float | None, tpot_s: float | None,
                 gpus: str | None = None) -> str:
    """The ``gpuyield plan`` invocation that searches deployments for this model at the observed latency.

    The workload is the traffic itself: the gateway's request log, or a trace of it (``REQUEST_LOG`` is a
    placeholder; telemetry has only aggregate lengths). The SLO is the observed p99 TTFT/TPOT, so the plan
    keeps today's latency; ``gpus`` widens the search to other GPU types.
    """
    slo = []
    if ttft_s is not None:
        slo.append(f"ttft_p99_ms={ttft_s * 1000:.0f}")
    if tpot_s is not None:
        slo.append(f"tpot_p99_ms={tpot_s * 1000:.0f}")
    parts = ["gpuyield plan --workload REQUEST_LOG.jsonl"]
    parts.append(f"--model '{model}'" if model else "--model MODEL")
    if slo:
        parts.append("--slo " + ",".join(slo))
    target = gpus or (f"'{device_name}'" if device_name else None)
    if target:
        parts.append(f"--gpus {target}")
    parts.append("--out plan-out")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------- helpers


def _sum_increase(series: Sequence[TimeSeries]) -> float | None:
    """Summed window increase over label variants; None if absent or any variant has one sample."""
    if not series:
        return None
    total = 0.0
    for s in series:
        inc = counter_increase(s)
        if inc is None:
            return None
        total += inc
    return total


def _sum_last(series: Sequence[TimeSeries]) -> float | None:
    return float(sum(s.last for s in series)) if series else None


def _is_single(series: Iterable[TimeSeries]) -> bool:
    return all(s.num_samples < 2 for s in series)


def _merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _complement(window: Interval, active: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    cur = window[0]
    for a, b in active:
        a, b = max(a, window[0]), min(b, window[1])
        if b <= a:
            continue
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
    if cur < window[1]:
        out.append((cur, window[1]))
    return out


def _mean(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w > 0]
    if not pairs:
        return None
    total_w = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total_w


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


class _HistStats:
    """Mean and quantiles of a set of histograms (label variants), over the window or lifetime."""

    def __init__(self, hists: Sequence[Histogram], window: bool) -> None:
        self.sum: float | None = None
        self.count: float | None = None
        self.bucket_counts: dict[float, float] = {}

        def amount(s: TimeSeries) -> float | None:
            return counter_increase(s) if window else s.last

        sums = [amount(h.sum) for h in hists if h.sum is not None]
        counts = [amount(h.count) for h in hists if h.count is not None]
        if sums and all(v is not None for v in sums):
            self.sum = float(sum(v for v in sums if v is not None))
        if counts and all(v is not None for v in counts):
            self.count = float(sum(v for v in counts if v is not None))
        for h in hists:
            for bound, s in zip(h.bounds, h.buckets, strict=True):
                v = amount(s)
                if v is not None:
                    self.bucket_counts[bound] = self.bucket_counts.get(bound, 0.0) + v
        if self.count is None and float("inf") in self.bucket_counts:
            self.count = self.bucket_counts[float("inf")]
        if self.bucket_counts and float("inf") not in self.bucket_counts and self.count is not None:
            self.bucket_counts[float("inf")] = self.count  # captures that dropped the +Inf bucket keep _count

    @property
    def mean(self) -> float | None:
        return _div(self.sum, self.count)

    def quantile(self, q: float) -> float | None:
        if not self.bucket_counts:
            return None
        bounds = sorted(self.bucket_counts)
        return histogram_quantile(q, bounds, [self.bucket_counts[b] for b in bounds])


# ---------------------------------------------------------------------------------------------- per GPU


_LARGE_GAP_S = 3600.0  # a GPU with no sample for longer than this gets a note (scrapes are seconds apart)


class _GpuWindow:
    def __init__(self, gpu: GpuTelemetry, single_scrape_s: float) -> None:
        series = list(gpu.gauges.values()) + list(gpu.counters.values())
        if not series:
            raise ValueError(f"GPU {gpu.gpu_id} has no series")
        first = min(s.first_s for s in series)
        last = max(s.last_s for s in series)
        self.single = last <= first
        self.start_s = first
        self.end_s = first + single_scrape_s if self.single else last
        self.window_s = self.end_s - self.start_s
        # Longest stretch without any sample of this GPU: the window counts it as allocated all the same.
        ts = np.unique(np.concatenate([s.ts_s for s in series]))
        self.max_gap_s = float(np.max(np.diff(ts))) if len(ts) > 1 else 0.0


def _gpu_energy(gpu: GpuTelemetry, win: _GpuWindow) -> tuple[float | None, str | None]:
    energy = gpu.counters.get("energy_mj")
    if energy is not None and energy.num_samples >= 2:
        inc = counter_increase(energy)
        return (None if inc is None else inc / _MJ_PER_KWH), "energy counter"
    power = gpu.gauges.get("power_w")
    if power is not None:
        return gauge_integral(power, single_sample_s=win.window_s) / _J_PER_KWH, "integrated power"
    return None, None


def _gauge_mean_opt(gpu: GpuTelemetry, name: str, scale: float = 1.0) -> float | None:
    s = gpu.gauges.get(name)
    return None if s is None else gauge_mean(s) * scale


# ---------------------------------------------------------------------------------------------- engines


def _engine_active_intervals(engines: Sequence[EngineTelemetry], window: Interval) -> list[Interval] | None:
    """Intervals with traffic on any of the engines; None when traffic cannot be told."""
    intervals: list[Interval] = []
    told = False
    for eng in engines:
        token_series = eng.counters.get("output_tokens", []) + eng.counters.get("prompt_tokens", [])
        multi = [s for s in token_series if s.num_samples >= 2]
        if multi:
            told = True
            for s in multi:
                inc = counter_increments(s.values)
                for i in np.nonzero(inc > 0)[0]:
                    intervals.append((float(s.ts_s[i]), float(s.ts_s[i + 1])))
            continue
        load = eng.gauges.get("running", []) + eng.gauges.get("waiting", [])
        if load:
            told = True
            for s in load:
                if s.num_samples == 1:
                    if s.last > 0:
                        intervals.append(window)
                    continue
                for i in np.nonzero(s.values[:-1] > 0)[0]:
                    intervals.append((float(s.ts_s[i]), float(s.ts_s[i + 1])))
    return _merge_intervals(intervals) if told else None


def _engine_gauge_mean(engines: Sequence[EngineTelemetry], name: str) -> float | None:
    """Mean over engines of each engine's time-weighted mean of the summed variants."""
    means = []
    for eng in engines:
        series = eng.gauges.get(name, [])
        if series:
            means.append(sum(gauge_mean(s) for s in series))
    return float(np.mean(means)) if means else None


def _engine_counter(engines: Sequence[EngineTelemetry], name: str, *, window: bool) -> float | None:
    total = 0.0
    found = False
    for eng in engines:
        series = eng.counters.get(name, [])
        if not series:
            continue
        value = _sum_increase(series) if window else _sum_last(series)
        if value is None:
            return None
        total += value
        found = True
    return total if found else None


def _engine_input(engines: Sequence[EngineTelemetry], *, window: bool) -> float | None:
    """All prompt tokens: engines whose prompt counter leaves out cached tokens get them added back."""
    total = 0.0
    found = False
    for eng in engines:
        value = _engine_counter([eng], "prompt_tokens", window=window)
        if value is None:
            if eng.counters.get("prompt_tokens"):
                return None
            continue
        if eng.prompt_excludes_cached:
            cached = _engine_counter([eng], "cached_prompt_tokens", window=window)
            if cached is None:
                return None
            value += cached
        total += value
        found = True
    return total if found else None


def _engine_hist(engines: Sequence[EngineTelemetry], name: str, *, window: bool) -> _HistStats | None:
    hists = [h for eng in engines for h in eng.histograms.get(name, [])]
    return _HistStats(hists, window) if hists else None


# ---------------------------------------------------------------------------------------------- main


def compute_baseline(inputs: BaselineInputs, achievable_fn: AchievableFn = default_achievable) -> BaselineResult:
    """Compute everything in :mod:`gpuyield.core.baseline.result` from ``inputs``. Pure and deterministic."""
    notes: list[str] = list(inputs.notes)
    engines_by_id = {e.engine_id: e for e in inputs.engines}
    gpu_deployment: dict[str, Deployment] = {}
    for dep in inputs.deployments:
        for gid in dep.gpu_ids:
            gpu_deployment[gid] = dep

    windows = {g.gpu_id: _GpuWindow(g, inputs.single_scrape_s) for g in inputs.gpus}
    if any(w.single for w in windows.values()):
        notes.append(
            f"some GPUs were seen in one scrape only: each such scrape is taken to cover {inputs.single_scrape_s:g} s "
            "(the scrape interval; set --interval), so their GPU-hours and $ cover that span only"
        )

    gappy = sorted((gid, w.max_gap_s) for gid, w in windows.items() if w.max_gap_s > _LARGE_GAP_S)
    if gappy:
        worst = max(gap for _, gap in gappy)
        notes.append(
            f"{len(gappy)} GPU(s) have a gap of up to {worst / 3600:.1f} h between samples (e.g. {gappy[0][0]}); "
            "a GPU's window runs from its first to its last sample, so its GPU-hours, $ and idle time count the "
            "gap as allocated -- check that the inputs are from one period"
        )

    # ---- per deployment (per model) -------------------------------------------------------------
    gpu_by_id = {g.gpu_id: g for g in inputs.gpus}
    per_model: list[ModelResult] = []
    dep_active: dict[str, list[Interval] | None] = {}
    dep_capacity: dict[str, Achievable | None] = {}
    for dep in inputs.deployments:
        engs = [engines_by_id[e] for e in dep.engine_ids if e in engines_by_id]
        gpus = [gpu_by_id[g] for g in dep.gpu_ids if g in gpu_by_id]
        counters_all = [s for e in engs for v in e.counters.values() for s in v]
        single = _is_single(counters_all) if counters_all else True
        if gpus:
            start = min(windows[g.gpu_id].start_s for g in gpus)
            end = max(windows[g.gpu_id].end_s for g in gpus)
        else:
            stamps = [t for e in engs for v in e.counters.values() for s in v for t in (s.first_s, s.last_s)]
            start = min(stamps) if stamps else 0.0
            end = max(stamps) if stamps and max(stamps) > start else start + inputs.single_scrape_s
        active = _engine_active_intervals(engs, (start, end))
        dep_active[dep.name] = active
        window = not single
        basis = "window" if window else "lifetime"
        out_tok = _engine_counter(engs, "output_tokens", window=True) if window else None
        in_tok = _engine_input(engs, window=True) if window else None
        cached = _engine_counter(engs, "cached_prompt_tokens", window=True) if window else None
        requests = _engine_counter(engs, "requests", window=window)
        life_out = _engine_counter(engs, "output_tokens", window=False)
        life_in = _engine_input(engs, window=False)
        life_cached = _engine_counter(engs, "cached_prompt_tokens", window=False)
        ttft = _engine_hist(engs, "ttft_s", window=window)
        tpot = _engine_hist(engs, "tpot_s", window=window)
        isl_h = _engine_hist(engs, "request_prompt_tokens", window=window)
        osl_h = _engine_hist(engs, "request_output_tokens", window=window)
        step_h = _engine_hist(engs, "iteration_tokens", window=window)
        decode_s = _engine_counter(engs, "decode_seconds", window=window)
        tpot_mean = tpot.mean if tpot else _div(decode_s, out_tok if window else life_out)
        ref_in = in_tok if window else life_in
        ref_out = out_tok if window else life_out
        mean_in = (isl_h.mean if isl_h else None) or _div(ref_in, requests)
        mean_out = (osl_h.mean if osl_h else None) or _div(ref_out, requests)
        cached_ref = cached if window else life_cached
        cached_frac = _div(cached_ref, ref_in)
        window_s = end - start
        rate = _div(requests, window_s) if window else None
        gpu_hours = sum(windows[g.gpu_id].window_s for g in gpus) / 3600.0
        prices = [inputs.prices.get(g.gpu_id) for g in gpus]
        usd = (
            sum(windows[g.gpu_id].window_s / 3600.0 * p.usd_per_gpu_hour for g, p in zip(gpus, prices, strict=True) if p)
            if gpus and all(p is not None for p in prices)
            else None
        )
        energies = [_gpu_energy(g, windows[g.gpu_id])[0] for g in gpus]
        energy = sum(e for e in energies if e is not None) if gpus and all(e is not None for e in energies) else None
        idle_h = 0.0 if gpus else None
        idle_usd: float | None = 0.0 if gpus else None
        for g, p in zip(gpus, prices, strict=True):
            w = windows[g.gpu_id]
            if active is None:
                idle_h = idle_usd = None
                break
            idle_s = sum(b - a for a, b in _complement((w.start_s, w.end_s), active))
            assert idle_h is not None
            idle_h += idle_s / 3600.0
            if idle_usd is not None:
                idle_usd = idle_usd + idle_s / 3600.0 * p.usd_per_gpu_hour if p else None
        device = next((g.device_name for g in gpus if g.device_name), None)
        model = dep.model_name or next((e.model_name for e in engs if e.model_name), None)
        mean_running = _engine_gauge_mean(engs, "running")
        kinds = {e.kind for e in engs}
        mix = WorkloadMix(
            model_name=model,
            device_name=device,
            num_gpus=len(gpus),
            num_engines=len(engs),
            window_s=window_s,
            mean_input_tokens=mean_in,
            mean_output_tokens=mean_out,
            cached_input_fraction=cached_frac,
            request_rate_per_s=rate,
            observed_tpot_s=tpot_mean,
            observed_ttft_s=ttft.mean if ttft else None,
            mean_running=mean_running,
            engine_kind=(next(iter(kinds)) if len(kinds) == 1 else "mixed") if kinds else None,
        )
        capacity: Achievable | None = None
        achievable_tokens = productivity = None
        method: str | None = None
        if not window:
            notes.append(
                f"deployment {dep.name}: one scrape only, so window token counts are not measured "
                "(lifetime totals since engine start are in lifetime_*); productivity needs ≥ 2 scrapes"
            )
        if not gpus:
            notes.append(f"deployment {dep.name}: no GPU joined to its engines; GPU-hours, $ and productivity not measured")
        elif window:
            answer = achievable_fn(mix)
            if isinstance(answer, Achievable):
                capacity = answer
                method = answer.method
                achievable_tokens = answer.output_tokens_per_gpu_hour * gpu_hours
                productivity = _div(out_tok, achievable_tokens)
            else:
                method = None
                notes.append(f"deployment {dep.name}: productivity not measured: {answer}")
        dep_capacity[dep.name] = capacity
        if out_tok is None and window and engs:
            notes.append(f"deployment {dep.name}: output token counter not found; tokens not measured")
        mr = ModelResult(
            deployment=dep.name,
            model=model,
            engine_kind=engs[0].kind if engs else None,
            engines=[e.engine_id for e in engs],
            gpus=[g.gpu_id for g in gpus],
            device_name=device,
            joined_by=dep.joined_by,
            window_s=window_s,
            basis=basis,
            gpu_hours=gpu_hours,
            usd=usd,
            energy_kwh=energy,
            requests=requests,
            input_tokens=in_tok,
            cached_input_tokens=cached,
            uncached_input_tokens=None if in_tok is None or cached is None else in_tok - cached,
            output_tokens=out_tok,
            lifetime_input_tokens=life_in,
            lifetime_output_tokens=life_out,
            mean_input_tokens=mean_in,
            mean_output_tokens=mean_out,
            request_rate_per_s=rate,
            ttft_mean_s=ttft.mean if ttft else None,
            ttft_p50_s=ttft.quantile(0.5) if ttft else None,
            ttft_p90_s=ttft.quantile(0.9) if ttft else None,
            ttft_p99_s=ttft.quantile(0.99) if ttft else None,
            tpot_mean_s=tpot_mean,
            tpot_p50_s=tpot.quantile(0.5) if tpot else None,
            tpot_p90_s=tpot.quantile(0.9) if tpot else None,
            tpot_p99_s=tpot.quantile(0.99) if tpot else None,
            mean_running=mean_running,
            mean_kv_usage=_engine_gauge_mean(engs, "kv_usage"),
            mean_tokens_per_step=step_h.mean if step_h else None,
            output_tokens_per_gpu_hour=_div(out_tok, gpu_hours),
            output_tokens_per_kwh=_div(out_tok, energy),
            usd_per_1m_output_tokens=None if out_tok is None else _div(usd, out_tok / 1e6),
            idle_gpu_hours=idle_h,
            idle_usd=idle_usd,
            achievable_output_tokens=achievable_tokens,
            achievable_method=method,
            productivity=productivity,
        )
        mr.gap = _explain_gap(mr, capacity, engs)
        per_model.append(mr)

    # ---- per GPU --------------------------------------------------------------------------------
    dep_by_name = {m.deployment: m for m in per_model}
    # A GPU with no engine delivered nothing of what its type can deliver: productivity 0 when that is known.
    typed_capacity = {m.device_name for m in per_model if dep_capacity.get(m.deployment) is not None}
    per_gpu: list[GpuResult] = []
    idle_spans: list[tuple[float, float, Price | None]] = []
    for g in inputs.gpus:
        w = windows[g.gpu_id]
        gdep = gpu_deployment.get(g.gpu_id)
        price = inputs.prices.get(g.gpu_id)
        hours = w.window_s / 3600.0
        energy_kwh, energy_src = _gpu_energy(g, w)
        idle_reason: str | None
        if gdep is None and g.pod:
            spans, idle_known, idle_reason = [], False, None
            notes.append(
                f"GPU {g.gpu_id} runs pod {g.pod} but no engine metrics were joined to it: its idle time and "
                "tokens are not measured; pass the engine's /metrics (with a pod label) or a --map file"
            )
        elif gdep is None:
            spans, idle_known, idle_reason = [(w.start_s, w.end_s)], True, "no engine"
        else:
            active = dep_active.get(gdep.name)
            idle_known = active is not None
            spans = [] if active is None else _complement((w.start_s, w.end_s), active)
            idle_reason = None if active is None else ("engine without traffic" if spans else None)
        idle_h = sum(b - a for a, b in spans) / 3600.0 if idle_known else None
        for a, b in spans:
            idle_spans.append((a, b, price))
        gmr = dep_by_name.get(gdep.name) if gdep else None
        share = None
        if gmr is not None and gmr.output_tokens is not None and gmr.gpus:
            share = gmr.output_tokens / len(gmr.gpus)
        util = _gauge_mean_opt(g, "gpu_util_pct", 0.01)
        per_gpu.append(
            GpuResult(
                gpu_id=g.gpu_id,
                host=g.host,
                index=g.index,
                uuid=g.uuid,
                device_name=g.device_name,
                mig_profile=g.mig_profile,
                pod=g.pod,
                deployment=gdep.name if gdep else None,
                window_s=w.window_s,
                gpu_hours=hours,
                mean_gpu_util=util,
                mean_gr_engine_active=_gauge_mean_opt(g, "gr_engine_active"),
                mean_sm_active=_gauge_mean_opt(g, "sm_active"),
                mean_tensor_active=_gauge_mean_opt(g, "tensor_active"),
                mean_dram_active=_gauge_mean_opt(g, "dram_active"),
                mean_fb_used_mib=_gauge_mean_opt(g, "fb_used_mib"),
                mean_power_w=_gauge_mean_opt(g, "power_w"),
                energy_kwh=energy_kwh,
                energy_source=energy_src,
                usd_per_gpu_hour=price.usd_per_gpu_hour if price else None,
                price_source=price.source if price else None,
                usd=hours * price.usd_per_gpu_hour if price else None,
                idle_gpu_hours=idle_h,
                idle_usd=None if idle_h is None or price is None else idle_h * price.usd_per_gpu_hour,
                idle_reason=idle_reason,
                output_tokens=share,
                productivity=gmr.productivity if gmr else (
                    0.0 if idle_reason == "no engine" and g.device_name in typed_capacity else None),
            )
        )
        if price is None:
            notes.append(f"GPU {g.gpu_id} ({g.device_name or 'unknown type'}): no price; $ not measured")
    for name, label in (("gr_engine_active", "GR_ENGINE_ACTIVE"), ("sm_active", "SM_ACTIVE"),
                        ("tensor_active", "PIPE_TENSOR_ACTIVE"), ("dram_active", "DRAM_ACTIVE")):
        missing = [g.gpu_id for g in inputs.gpus if name not in g.gauges]
        if missing:
            notes.append(
                f"DCGM_FI_PROF_{label} not measured on {len(missing)} GPU(s) ({', '.join(missing[:4])}"
                f"{', …' if len(missing) > 4 else ''}): profiling metrics are off in the exporter"
            )
    energy_missing = [r.gpu_id for r in per_gpu if r.energy_kwh is None]
    if energy_missing:
        notes.append(f"energy not measured on {len(energy_missing)} GPU(s): no energy counter and no power gauge")
    integrated = [r.gpu_id for r in per_gpu if r.energy_source == "integrated power"]
    if integrated:
        notes.append(
            f"energy of {len(integrated)} GPU(s) integrates DCGM_FI_DEV_POWER_USAGE (step-held samples), "
            "not the energy counter (absent or a single sample)"
        )

    fleet = _fleet(per_gpu, per_model, dep_capacity, inputs, notes)
    return BaselineResult(
        fleet=fleet,
        per_gpu=per_gpu,
        per_model=per_model,
        per_tenant=_tenants(inputs, per_model, notes),
        idle_timeline=_timeline(idle_spans, per_gpu, windows),
        notes=notes,
        gap=_fleet_gap(fleet, per_gpu, per_model),
    )


def _fleet_gap(fleet: FleetResult, per_gpu: list[GpuResult], per_model: list[ModelResult]) -> list[GapCause]:
    """Fleet-level causes: GPUs that ran no engine at all, by GPU type, with the plan that sizes the fleet."""
    out: list[GapCause] = []
    by_type: dict[str | None, list[GpuResult]] = defaultdict(list)
    for r in per_gpu:
        if r.idle_reason == "no engine":
            by_type[r.device_name].append(r)
    for device, rows in sorted(by_type.items(), key=lambda kv: kv[0] or ""):
        hours = sum(r.gpu_hours for r in rows)
        per_hour = sum(r.usd_per_gpu_hour for r in rows if r.usd_per_gpu_hour) if all(
            r.usd_per_gpu_hour for r in rows) else None
        share = _div(hours, fleet.gpu_hours)
        served = next((m for m in per_model if m.device_name == device and m.model), None)
        cmd = plan_command(served.model if served else None, device,
                           (served.ttft_p99_s or served.ttft_mean_s) if served else None,
                           (served.tpot_p99_s or served.tpot_mean_s) if served else None)
        cost = f", ${per_hour:,.2f}/hour" if per_hour is not None else ""
        out.append(GapCause(
            "over-provisioning",
            f"{len(rows)} {device or 'GPU'}(s) ran no engine ({hours:.4g} GPU-hours{cost}): size the fleet to the "
            "traffic, or give them work",
            share if fleet.productivity is not None else None,
            cmd,
        ))
    return out


def _explain_gap(mr: ModelResult, capacity: Achievable | None, engs: Sequence[EngineTelemetry]) -> list[GapCause]:
    gaps: list[GapCause] = []
    ttft = mr.ttft_p99_s or mr.ttft_mean_s
    tpot = mr.tpot_p99_s or mr.tpot_mean_s
    cmd = plan_command(mr.model, mr.device_name, ttft, tpot)
    idle_frac = _div(mr.idle_gpu_hours, mr.gpu_hours)
    if idle_frac is not None and idle_frac > 0:
        gaps.append(GapCause(
            "idle", f"{idle_frac:.0%} of this deployment's GPU-hours had no traffic", idle_frac,
            cmd))
    if mr.achievable_output_tokens and mr.output_tokens is not None and idle_frac is not None:
        busy_capacity = mr.achievable_output_tokens * (1 - idle_frac)
        under = max(busy_capacity - mr.output_tokens, 0.0) / mr.achievable_output_tokens
        if under > 0:
            gaps.append(GapCause(
                "small batches",
                f"while serving, batches averaged {mr.mean_running or 0:.1f} running requests per engine"
                + (f" against {capacity.concurrency} achievable at the observed TPOT" if capacity and capacity.concurrency else ""),
                under, cmd))
    elif mr.mean_running is not None and mr.mean_running < 4 and mr.basis == "window":
        gaps.append(GapCause("small batches", f"mean batch {mr.mean_running:.1f} running requests per engine", None, cmd))
    if len(mr.gpus) > 1 and idle_frac is not None and idle_frac > 0.5:
        gaps.append(GapCause("over-provisioning",
                             f"{len(mr.gpus)} GPUs for a deployment idle {idle_frac:.0%} of the time", None, cmd))
    caching_off = any(e.prefix_caching_enabled is False for e in engs)
    cached_none = mr.cached_input_tokens == 0 and (mr.input_tokens or 0) > 0
    if caching_off or cached_none:
        why = "prefix caching is disabled in the engine config" if caching_off else "no prompt token was served from the prefix cache"
        gaps.append(GapCause("no prefix caching", why + " (the plan search tries prefix caching on and off)", None, cmd))
    if mr.model and mr.device_name:
        gaps.append(GapCause("TP or GPU choice",
                             f"{len(mr.gpus)}× {mr.device_name}: other TP degrees or GPU types may serve this mix cheaper",
                             None, plan_command(mr.model, mr.device_name, ttft, tpot, gpus="h100_sxm,a100_sxm,l40s")))
    return gaps


def _fleet(per_gpu: list[GpuResult], per_model: list[ModelResult], capacity: dict[str, Achievable | None],
           inputs: BaselineInputs, notes: list[str]) -> FleetResult:
    hours = [r.gpu_hours for r in per_gpu]
    gpu_hours = sum(hours)
    usd = sum(r.usd for r in per_gpu if r.usd is not None) if all(r.usd is not None for r in per_gpu) and per_gpu else None
    windowed = [m for m in per_model if m.basis == "window"]
    out = sum(m.output_tokens for m in windowed if m.output_tokens is not None) if windowed else None
    if windowed and any(m.output_tokens is None for m in windowed):
        out = None
    inp = sum(m.input_tokens for m in windowed if m.input_tokens is not None) if windowed and all(
        m.input_tokens is not None for m in windowed) else None
    cached = sum(m.cached_input_tokens for m in windowed if m.cached_input_tokens is not None) if windowed and all(
        m.cached_input_tokens is not None for m in windowed) else None
    if not windowed:
        notes.append("fleet token counts not measured: no engine was scraped more than once")
    # Per-GPU-hour, per-kWh, per-$ figures and productivity divide by the GPUs' hours, energy and $, so they
    # count only the tokens of engines joined to a GPU: an unjoined engine's tokens cost nothing measured here.
    out_joined = out
    unjoined = [m for m in windowed if not m.gpus]
    if out is not None and per_gpu and unjoined:
        out_unjoined = sum(m.output_tokens or 0.0 for m in unjoined)
        out_joined = out - out_unjoined if len(unjoined) < len(windowed) else None
        notes.append(
            f"fleet $ per 1M output tokens, tokens per GPU-hour and per kWh and productivity count only engines "
            f"joined to a GPU: {out_unjoined:.0f} output tokens of {len(unjoined)} unjoined engine(s) left out")
    idle = [r for r in per_gpu if r.idle_gpu_hours]
    known = [r for r in per_gpu if r.idle_gpu_hours is not None]
    idle_h = sum(r.idle_gpu_hours for r in known if r.idle_gpu_hours is not None) if known else None
    idle_usd = sum(r.idle_usd for r in known if r.idle_usd is not None) if known and all(
        r.idle_usd is not None for r in known if r.idle_gpu_hours) else None
    if known and len(known) < len(per_gpu):
        notes.append(f"fleet idle figures cover the {len(known)} of {len(per_gpu)} GPUs whose idle time is measured")
    energies = [r.energy_kwh for r in per_gpu]
    energy = sum(e for e in energies if e is not None) if per_gpu and all(e is not None for e in energies) else None
    # Fleet-wide rates: GPUs differ in window; $/h and idle $/h are summed per GPU.
    usd_per_hour = sum(r.usd_per_gpu_hour for r in per_gpu if r.usd_per_gpu_hour) if usd is not None else None
    idle_per_hour = None
    if idle_usd is not None:
        idle_per_hour = sum(
            (r.usd_per_gpu_hour or 0.0) * (r.idle_gpu_hours or 0.0) / r.gpu_hours for r in known if r.gpu_hours > 0)
    # Productivity: every GPU-hour charged at a capacity for the observed mix on that GPU type.
    achievable = None
    productivity = None
    by_device: dict[str | None, list[float]] = defaultdict(list)
    for m in per_model:
        cap = capacity.get(m.deployment)
        if cap is not None:
            by_device[m.device_name].append(cap.output_tokens_per_gpu_hour)
    if out is not None and by_device:
        total = 0.0
        ok = True
        for r in per_gpu:
            cap = capacity.get(r.deployment) if r.deployment else None
            rate = cap.output_tokens_per_gpu_hour if cap else (
                float(np.mean(by_device[r.device_name])) if by_device.get(r.device_name) else None)
            if rate is None:
                ok = False
                break
            total += rate * r.gpu_hours
        if ok:
            achievable = total
            productivity = _div(out_joined, total)
    if productivity is None:
        notes.append("fleet productivity not measured: achievable throughput is not known for every GPU")
    return FleetResult(
        gpus=len(per_gpu),
        window_s=max((r.window_s for r in per_gpu), default=0.0),
        gpu_hours=gpu_hours,
        usd=usd,
        usd_per_hour=usd_per_hour,
        output_tokens=out,
        input_tokens=inp,
        cached_input_tokens=cached,
        usd_per_1m_output_tokens=None if out_joined is None else _div(usd, out_joined / 1e6),
        output_tokens_per_gpu_hour=_div(out_joined, gpu_hours),
        output_tokens_per_kwh=_div(out_joined, energy),
        idle_gpus=sum(1 for r in idle if r.idle_gpu_hours and abs(r.idle_gpu_hours - r.gpu_hours) < 1e-12),
        idle_gpu_hours=idle_h,
        idle_usd=idle_usd,
        idle_usd_per_hour=idle_per_hour,
        mean_gpu_util=_mean([r.mean_gpu_util for r in per_gpu], hours),
        mean_gr_engine_active=_mean([r.mean_gr_engine_active for r in per_gpu], hours),
        mean_sm_active=_mean([r.mean_sm_active for r in per_gpu], hours),
        mean_tensor_active=_mean([r.mean_tensor_active for r in per_gpu], hours),
        mean_dram_active=_mean([r.mean_dram_active for r in per_gpu], hours),
        mean_power_w=_mean([r.mean_power_w for r in per_gpu], hours),
        energy_kwh=energy,
        achievable_output_tokens=achievable,
        productivity=productivity,
    )


def _tenants(inputs: BaselineInputs, per_model: list[ModelResult], notes: list[str]) -> list[TenantResult]:
    out: list[TenantResult] = []
    model_out: dict[str | None, float] = defaultdict(float)
    for t in inputs.tenants:
        v = _sum_increase(t.counters.get("output_tokens", []))
        if v is not None:
            model_out[t.model_name] += v
    for t in inputs.tenants:
        outp = _sum_increase(t.counters.get("output_tokens", []))
        share = _div(outp, model_out.get(t.model_name))
        model_usd = next((m.usd for m in per_model if m.model == t.model_name and m.usd is not None), None)
        out.append(TenantResult(
            tenant=t.tenant,
            model=t.model_name,
            requests=_sum_increase(t.counters.get("requests", [])),
            input_tokens=_sum_increase(t.counters.get("prompt_tokens", [])),
            cached_input_tokens=_sum_increase(t.counters.get("cached_prompt_tokens", [])),
            output_tokens=outp,
            output_share=share,
            usd=None if share is None or model_usd is None else share * model_usd,
        ))
    if inputs.tenants and any(t.output_tokens is None for t in out):
        notes.append("some tenants were scraped once only: per-tenant window tokens not measured")
    return out


def _timeline(spans: list[tuple[float, float, Price | None]], per_gpu: list[GpuResult],
              windows: dict[str, _GpuWindow]) -> list[TimelinePoint]:
    """Idle GPU-hours and $ per time bin. Bins cover only the observed windows: windows that overlap form a
    cluster (sources captured at different times stay apart), and the bins are shared among clusters in
    proportion to their length (at least one each)."""
    clusters = _merge_intervals((w.start_s, w.end_s) for w in windows.values())
    if not clusters:
        return []
    total = sum(b - a for a, b in clusters)
    counts = [max(1, round(MAX_TIMELINE_BINS * (b - a) / total)) for a, b in clusters]
    priced = all(p is not None for _, _, p in spans)
    points = []
    for (c0, c1), n in zip(clusters, counts, strict=True):
        edges = np.linspace(c0, c1, n + 1)
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            hours = 0.0
            usd = 0.0
            for s, e, price in spans:
                overlap = max(0.0, min(e, b) - max(s, a))
                hours += overlap / 3600.0
                if price is not None:
                    usd += overlap / 3600.0 * price.usd_per_gpu_hour
            points.append(TimelinePoint(float(a), float(b), hours, usd if priced else None))
    return points
