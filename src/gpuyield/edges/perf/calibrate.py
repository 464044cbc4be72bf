"""``gpuyield calibrate``: kernel tables (+ optional end-to-end measurements) → calibration YAML.

Two stages:

1. **Kernel stage** (:func:`kernel_calibration`): every device found under the ``--from`` roots becomes a
   :class:`~gpuyield.core.perf.calibration.GpuCoefficients` (see :mod:`gpuyield.edges.perf.kernel_tables`).
   Devices unknown to the catalogue are added to ``devices`` with their system YAML's datasheet numbers,
   so ``estimate --gpu <device> --calibration FILE`` works for them (e.g. ``cpu`` from ``gpuyield profile``).
2. **End-to-end stage** (:func:`fit_engines`, with ``--measurements``): per engine family, a handful of
   physically meaningful constants (per-step and per-layer overhead, per-sequence overhead, the TTFT
   share of a synchronised start, runtime memory reserve, multipliers on decode and prefill work) are fitted
   by coordinate descent on the mean of TTFT and TPOT absolute percentage errors over every row of that
   engine. Nothing is per model, per GPU or per row.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gpuyield.core.perf.calibration import Calibration, EngineCoefficients, GpuCoefficients
from gpuyield.core.perf.validation import VALIDATION_METHODS, MeasurementRow, predict_row, row_from_mapping
from gpuyield.edges.perf.kernel_tables import discover_devices, gpu_coefficients_from_tables, read_system_yaml
from gpuyield.errors import CatalogError, ConfigError, GpuyieldError

__all__ = [
    "FIT_PARAMETERS",
    "ENGINE_DEFAULTS",
    "fit_engines",
    "kernel_calibration",
    "load_measurements",
    "lookups",
]

# Starting points (block sizes 16/1/32 tokens; the scheduler limits are not pinned: every row is estimated with
# its engine's defaults on its GPU, sim/data/engine_families.yaml, as estimate and simulate take them). KV memory:
# vLLM's --gpu-memory-utilization is a fraction of total memory; TRT-LLM's free_gpu_memory_fraction (default
# 0.9) a fraction of what is free after the weights; SGLang sizes its static pool from what is left after
# weights and a reserve for activations and CUDA graphs. MXFP4 experts (gpt-oss): TensorRT-LLM runs them W4A8
# (MXFP4 x MXFP8) on Blackwell, as AIConfigurator 0.12.0 models its measurements (sdk/task_v2.py promotes gpt-oss
# on Blackwell to w4a8_mxfp4_mxfp8); vLLM's and SGLang's MXFP4 MoE kernels take bf16 activations unless told
# otherwise (vLLM's mxfp4_w4a16 quant config; the MXFP8-activation path is opt-in), and AIConfigurator's
# default for gpt-oss is w4a16_mxfp4 ("native data format for gpt oss", sdk/common.py).
ENGINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "vllm": {"block_size_tokens": 16},
    "sglang": {
        "block_size_tokens": 1,
        "kv_memory_basis": "free",
    },
    "trtllm": {
        "block_size_tokens": 32,
        "kv_memory_basis": "free",
        "mxfp4_activation_dtype": "fp8",
    },
}

# name -> (min, max, log-scale?)
FIT_PARAMETERS: dict[str, tuple[float, float, bool]] = {
    "step_overhead_s": (1e-4, 2e-2, True),
    "per_layer_overhead_s": (1e-7, 1e-4, True),
    "moe_layer_overhead_s": (1e-7, 2e-4, True),
    "per_seq_overhead_s": (1e-7, 2e-4, True),
    "decode_scale": (0.25, 3.0, True),
    "decode_attn_scale": (0.25, 4.0, True),
    "prefill_scale": (0.25, 4.0, True),
    "ttft_sync_weight": (0.01, 1.0, True),
    "ttft_per_layer_s": (1e-6, 2e-2, True),
    "ttft_per_seq_s": (1e-7, 1e-2, True),
    "allreduce_overhead_s": (1e-7, 1e-4, True),
}


def lookups(catalog: Any, cal: Calibration) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """(model_of, gpu_of) resolving ids through the catalogue, then the calibration's own devices."""

    def model_of(name: str) -> Any:
        return catalog.model(name)

    def gpu_of(name: str) -> Any:
        return cal.accelerator(catalog, name)

    return model_of, gpu_of


def kernel_calibration(
    roots: Sequence[Path],
    catalog: Any,
    base: Calibration | None = None,
    log: Callable[[str], None] | None = None,
) -> Calibration:
    """Per-device coefficients from every kernel-table root (later roots override earlier ones)."""
    base = base or Calibration()
    gpus = dict(base.gpus)
    devices = dict(base.devices)
    sources = list(base.sources)
    for root in roots:
        for dev in discover_devices(Path(root)):
            spec: dict[str, float] | None = None
            try:
                a = catalog.gpu(dev.device)
                spec = {
                    "memory_bandwidth_tb_s": a.memory_bandwidth_tb_s,
                    "bf16_dense_tflops": a.bf16_dense_tflops or 0.0,
                    "fp8_dense_tflops": a.fp8_dense_tflops or 0.0,
                    "fp4_dense_tflops": a.fp4_dense_tflops or 0.0,
                    "interconnect_gb_s": a.interconnect_gb_s,
                    "memory_gb": a.memory_gb,
                }
            except CatalogError:
                if dev.system_yaml is None:
                    if log:
                        log(f"skip {dev.data_dir}: not in the catalogue and no {dev.device}.yaml system spec")
                    continue
                spec = read_system_yaml(dev.system_yaml)
                devices[dev.device] = spec
            if not spec.get("bf16_dense_tflops"):
                if log:
                    log(f"skip {dev.device}: no bf16 peak known")
                continue
            try:
                gc, counts = gpu_coefficients_from_tables(dev, spec)
            except ConfigError as exc:
                if log:
                    log(f"skip {dev.device}: {exc}")
                continue
            gpus[dev.device] = gc
            if log:
                log(f"{dev.device}: {counts}")
        sources.append(f"kernel tables: {Path(root)}")
    if "generic" not in gpus and gpus:
        gpus["generic"] = _generic(list(gpus.values()))
    return dataclasses.replace(base, gpus=gpus, devices=devices, sources=tuple(dict.fromkeys(sources)))


def _generic(coeffs: list[GpuCoefficients]) -> GpuCoefficients:
    """Median efficiencies over measured devices: used for accelerators without tables."""
    import statistics

    from gpuyield.core.perf.calibration import LogCurve

    def med(attr: str) -> float:
        return statistics.median(getattr(c, attr) for c in coeffs)

    curves: dict[str, LogCurve] = {}
    for dt in ("bf16", "fp8", "fp4"):
        cs = [c.gemm_eff[dt] for c in coeffs if dt in c.gemm_eff]
        if not cs:
            continue
        xs = sorted({x for c in cs for x in c.xs})
        curves[dt] = LogCurve(tuple(xs), tuple(statistics.median(c(x) for c in cs) for x in xs))
    return GpuCoefficients(
        mem_bw_eff=med("mem_bw_eff"),
        gemm_eff=curves,
        attn_prefill_eff=med("attn_prefill_eff"),
        attn_decode_bw_eff=med("attn_decode_bw_eff"),
        allreduce_latency_s=med("allreduce_latency_s"),
        allreduce_bw_eff=med("allreduce_bw_eff"),
        source=f"median of {len(coeffs)} measured accelerators (used when an accelerator has no tables)",
    )


def load_measurements(path: Path, invalid: list[dict[str, Any]] | None = None) -> list[MeasurementRow]:
    """Rows of a measurement CSV (schema in docs/formats.md).

    A missing file or column is always an error. A row with bad values raises ConfigError naming the row,
    unless ``invalid`` is given: then the row is left out and ``{"row", "reason"}`` is appended to it, so one
    bad row does not cost the others (``validate`` lists these rows as unsupported).
    """
    from gpuyield.core.perf.validation import CSV_COLUMNS

    if not Path(path).exists():
        raise ConfigError(f"--measurements {path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None:
            reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(
                f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}"
            )
        rows: list[MeasurementRow] = []
        for i, r in enumerate(reader):
            try:
                rows.append(row_from_mapping(r, i))
            except ConfigError as exc:
                if invalid is None:
                    raise
                # the record names its row; the message's own "row i: " would say it twice (text, JSON, report)
                invalid.append({"row": i, "reason": str(exc).removeprefix(f"row {i}: ")})
        return rows

# (a, b): try a × f together with b / f (keeps the prefill work, resp. the attention time, unchanged while
# the other ops move).
COUPLED_MOVES: tuple[tuple[str, str], ...] = (
    ("decode_scale", "prefill_scale"),
    ("decode_scale", "decode_attn_scale"),
)


def _loss(
    rows: Sequence[MeasurementRow], model_of: Any, gpu_of: Any, cal: Calibration, method: str = "analytic"
) -> tuple[float, int]:
    tot = 0.0
    n = 0
    for r in rows:
        try:
            res = predict_row(r, model_of, gpu_of, cal, method)
        except GpuyieldError:
            continue
        for key, pred in (("ttft_ms", res.ttft_ms), ("tpot_ms", res.tpot_ms)):
            meas = r.measured.get(key)
            if meas:
                tot += min(abs(pred - meas) / meas, 3.0) * (1.0 if key == "tpot_ms" else 0.6)
                n += 1
    return (tot / n if n else math.inf), n


def _fit_group(
    cal: Calibration,
    engines: dict[str, EngineCoefficients],
    key: str,
    start: EngineCoefficients,
    sub: Sequence[MeasurementRow],
    lookups_: tuple[Any, Any],
    names: Sequence[str],
    rounds: int,
    log: Callable[[str], None] | None,
    method: str = "analytic",
) -> EngineCoefficients:
    model_of, gpu_of = lookups_

    def loss_of(ec: EngineCoefficients) -> float:
        trial = dataclasses.replace(cal, engines={**engines, key: ec})
        return _loss(sub, model_of, gpu_of, trial, method)[0]

    cur = start
    best = loss_of(cur)
    first = best
    for rnd in range(rounds):
        step = (2.0, 1.4, 1.15, 1.05)[min(rnd, 3)]
        for name in names:
            lo, hi, _ = FIT_PARAMETERS[name]
            for factor in (step, 1.0 / step):
                while True:
                    v = min(hi, max(lo, getattr(cur, name) * factor))
                    if v == getattr(cur, name):
                        break
                    trial = dataclasses.replace(cur, **{name: v})
                    loss = loss_of(trial)
                    if loss >= best - 1e-5:
                        break
                    best, cur = loss, trial
        # coupled moves along valleys the single-parameter sweep cannot leave (decode_scale multiplies
        # every op, so a prefill or attention error is otherwise traded against all the others)
        for a, b in COUPLED_MOVES:
            if a not in names or b not in names:
                continue
            for factor in (step, 1.0 / step):
                while True:
                    va = min(FIT_PARAMETERS[a][1], max(FIT_PARAMETERS[a][0], getattr(cur, a) * factor))
                    vb = min(FIT_PARAMETERS[b][1], max(FIT_PARAMETERS[b][0], getattr(cur, b) / factor))
                    if va == getattr(cur, a) or vb == getattr(cur, b):
                        break
                    trial = dataclasses.replace(cur, **{a: va, b: vb})
                    loss = loss_of(trial)
                    if loss >= best - 1e-5:
                        break
                    best, cur = loss, trial
    if log:
        log(f"{key}: {len(sub)} rows, {method} loss {first:.4f} -> {best:.4f}")
    how = "" if method == "analytic" else f", {method}"
    return dataclasses.replace(cur, source=f"fitted on {len(sub)} end-to-end rows (loss {best:.4f}{how})")


# Refined per (engine, precision) and (engine, gpu, precision): only the efficiencies, never scheduler limits.
REFINE_PARAMETERS = (
    "decode_scale",
    "decode_attn_scale",
    "prefill_scale",
    "ttft_per_layer_s",
    "ttft_per_seq_s",
    "ttft_sync_weight",
)
MIN_GROUP_ROWS = 20


# Depth at which a fit that starts from a calibration without a per-layer first-token term converts its
# constant one (ttft_overhead_s) into the per-layer term: DeepSeek-V3/R1's 61 layers, rounded (most rows of the
# shipped training set). Only the descent's starting point; the fit moves it.
FIRST_TOKEN_REFERENCE_LAYERS = 60


# Where the all-reduce overhead starts when the starting constants have none (a file written before the term, or
# the families' defaults); only the descent's starting point, the fit moves it.
ALLREDUCE_OVERHEAD_START_S = 10e-6


def _per_layer_first_token(ec: EngineCoefficients) -> EngineCoefficients:
    """``ec`` with its constant first-token overhead moved into the per-layer term (the fitted one)."""
    if ec.ttft_per_layer_s > 0:
        return ec
    return dataclasses.replace(
        ec,
        ttft_per_layer_s=max(ec.ttft_overhead_s, 1e-3) / FIRST_TOKEN_REFERENCE_LAYERS,
        ttft_overhead_s=0.0,
    )


def fit_engines(
    cal: Calibration,
    rows: Sequence[MeasurementRow],
    catalog: Any,
    *,
    rounds: int = 3,
    log: Callable[[str], None] | None = None,
    params: Sequence[str] | None = None,
    refine: bool = True,
    method: str = "analytic",
) -> Calibration:
    """Coordinate-descent fit: engine-family constants, then efficiencies per (engine, precision) and per
    (engine, gpu, precision) groups with at least ``MIN_GROUP_ROWS`` rows (see the module docstring).

    ``method="sim"`` fits the aggregated families' constants through the engine model (what ``estimate``,
    ``simulate`` and ``plan`` run; about 10 ms a row), then only the analytic solver's own term, the share of the
    synchronised burst its mean TTFT sees (``ttft_sync_weight``, which the engine model simulates instead), through
    the analytic solver; the disaggregated pools' own constants and the ``refine`` groups are fitted through the
    analytic solver as before. (A family with fewer than ``MIN_GROUP_ROWS`` aggregated rows is fitted on all its
    rows, its P/D rows then through the engine model's P/D cluster, which is much slower.)"""
    if method not in VALIDATION_METHODS:
        raise ConfigError(f"fit method: expected one of {', '.join(VALIDATION_METHODS)}, got {method!r}")
    engines = dict(cal.engines)
    names = list(params or FIT_PARAMETERS)
    lk = lookups(catalog, cal)
    def mode_of(r: MeasurementRow) -> str:
        return "disagg" if r.layout.strip().lower().startswith("disagg") else "agg"

    def fam(r: MeasurementRow) -> str:
        return r.engine if mode_of(r) == "agg" else f"{r.engine}:disagg"

    for eng in sorted({r.engine for r in rows}):
        sub = [r for r in rows if r.engine == eng]
        # the family's constants are what aggregated replicas use; disaggregated pools get their own below,
        # so fit on the aggregated rows when there are enough of them (else on all the family's rows)
        agg_rows = [r for r in sub if mode_of(r) == "agg"]
        if len(agg_rows) >= MIN_GROUP_ROWS:
            sub = agg_rows
        start = engines.get(eng) or EngineCoefficients(**ENGINE_DEFAULTS.get(eng, {}))
        if "ttft_per_layer_s" in names:
            start = _per_layer_first_token(start)
        if "allreduce_overhead_s" in names and start.allreduce_overhead_s <= 0:
            # a multiplicative descent cannot leave 0: start from a few kernel launches' worth
            start = dataclasses.replace(start, allreduce_overhead_s=ALLREDUCE_OVERHEAD_START_S)
        if method == "sim":
            sim_names = [n for n in names if n != "ttft_sync_weight"]
            engines[eng] = _fit_group(cal, engines, eng, start, sub, lk, sim_names, rounds, log, "sim")
            if "ttft_sync_weight" in names:
                through_sim = engines[eng].source
                share = _fit_group(cal, engines, eng, engines[eng], sub, lk, ["ttft_sync_weight"], rounds, log)
                engines[eng] = dataclasses.replace(
                    share, source=f"{through_sim}; ttft_sync_weight {share.source.removeprefix('fitted on ')}"
                )
        else:
            engines[eng] = _fit_group(cal, engines, eng, start, sub, lk, names, rounds, log)
    # disaggregated pools: their own efficiencies and TTFT constants, starting from the family's
    for eng in sorted({fam(r) for r in rows if mode_of(r) == "disagg"}):
        sub = [r for r in rows if fam(r) == eng]
        if len(sub) < MIN_GROUP_ROWS:
            continue
        start = _per_layer_first_token(engines.get(eng) or engines[eng.split(":", 1)[0]])
        if start.allreduce_overhead_s <= 0:  # not refitted per pool: the family's (an older file's pools have none)
            family_ec = engines.get(eng.split(":", 1)[0])
            if family_ec is not None:
                start = dataclasses.replace(start, allreduce_overhead_s=family_ec.allreduce_overhead_s)
        engines[eng] = _fit_group(cal, engines, eng, start, sub, lk, REFINE_PARAMETERS, rounds, log)
    if refine:
        for level in ("precision", "gpu"):
            groups: dict[str, list[MeasurementRow]] = {}
            for r in rows:
                key = f"{fam(r)}/{r.precision}" if level == "precision" else f"{fam(r)}/{r.gpu}/{r.precision}"
                groups.setdefault(key, []).append(r)
            for key, sub in sorted(groups.items()):
                if len(sub) < MIN_GROUP_ROWS:
                    continue
                family = key.split("/", 1)[0]
                start = _per_layer_first_token(
                    engines.get(key)
                    or engines.get(f"{family}/{sub[0].precision}")
                    or engines.get(family)
                    or engines[family.split(":", 1)[0]]
                )
                engines[key] = _fit_group(cal, engines, key, start, sub, lk, REFINE_PARAMETERS, max(1, rounds - 1), log)
    return dataclasses.replace(cal, engines=engines)
