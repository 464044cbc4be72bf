"""Scoring the performance model against measured end-to-end rows (``gpuyield validate``).

Rows follow the measurement CSV schema
``gpu,num_gpus,model,engine,precision,layout,tp,isl,osl,concurrency,num_requests,ttft_ms,tpot_ms,e2e_ms,
throughput_tok_s,source`` (already parsed into dicts of strings by the edge). ``layout`` is ``agg tpT ppP
adpA moe_tpM epE`` or AIConfigurator's disaggregated form ``disagg Nx prefill(tpT adpA epE) + Mx
decode(tpT adpA epE)`` (``0x`` = worker count not recorded). Every row is either predicted or listed in
``unsupported`` with its reason; nothing is dropped.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gpuyield.core.catalog.model import WEIGHT_PRECISIONS
from gpuyield.core.perf.bounds import ClosedLoopFloor, closed_loop_floor
from gpuyield.core.perf.calibration import Calibration, coefficients_fingerprint, model_rules_note
from gpuyield.core.perf.closed_loop import ClosedLoopResult, estimate_closed_loop, estimate_disaggregated
from gpuyield.core.perf.corrections import (
    Correction,
    CorrectionSettings,
    DeploymentKey,
    MeasuredCorrections,
    MeasuredPoint,
    apply_correction,
    architecture_id,
    measurement_id,
)
from gpuyield.core.perf.model import PerfModel, normalise_engine, normalise_precision
from gpuyield.core.perf.residual import ENGINE_CODES, FEATURES, LIMITED_CODES
from gpuyield.errors import ConfigError, GpuyieldError

__all__ = [
    "CSV_COLUMNS",
    "LAYOUT_KINDS",
    "METRICS",
    "Layout",
    "MeasurementRow",
    "PoolLayout",
    "ServingSettings",
    "VALIDATION_METHODS",
    "build_corrections",
    "correct_row",
    "deployment_key",
    "error_summary",
    "implausible_reason",
    "kv_dtype_for",
    "measurement_content",
    "measurement_copies",
    "measurement_floor",
    "layout_kind",
    "parse_layout",
    "predict_row",
    "prediction_cache_key",
    "repeat_floor",
    "residual_features",
    "row_from_mapping",
    "row_measurement_id",
    "sweep_key",
    "validate_rows",
]

CSV_COLUMNS = (
    "gpu",
    "num_gpus",
    "model",
    "engine",
    "precision",
    "layout",
    "tp",
    "isl",
    "osl",
    "concurrency",
    "num_requests",
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "throughput_tok_s",
    "source",
)
METRICS = ("ttft_ms", "tpot_ms", "e2e_ms", "throughput_tok_s")


@dataclass(frozen=True, slots=True)
class PoolLayout:
    """Parallelism of one replica: attention ``tp`` × ``adp`` ranks, experts ``ep`` ways."""

    count: int | None  # replicas of this pool (None = not recorded)
    tp: int
    pp: int = 1
    adp: int = 1
    ep: int = 1
    moe_tp: int | None = None  # tensor parallelism inside each expert, when the layout states it

    @property
    def gpus(self) -> int:
        return self.pp * max(self.tp * self.adp, (self.moe_tp or 0) * self.ep)


@dataclass(frozen=True, slots=True)
class Layout:
    kind: str  # "agg" | "disagg"
    replica: PoolLayout | None = None  # agg
    prefill: PoolLayout | None = None  # disagg
    decode: PoolLayout | None = None

    @property
    def worker_counts_known(self) -> bool:
        """A disaggregated layout that records both worker counts (``2x prefill(...) + 1x decode(...)``)."""
        return bool(self.kind == "disagg" and self.prefill and self.prefill.count and self.decode and self.decode.count)


_TOKEN = re.compile(r"^(moe_tp|tp|pp|adp|ep)(\d+)$")
_POOL = re.compile(r"^(\d+)x\s*(prefill|decode)\s*\(([^)]*)\)$")
_LAYOUT_HELP = (
    "expected 'agg tpT ppP adpA moe_tpM epE' (any order, a missing one is 1) or "
    "'disagg Nx prefill(tpT adpA epE) + Mx decode(tpT adpA epE)'"
)


def _parallelism(tokens: list[str], text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for tok in tokens:
        m = _TOKEN.match(tok)
        if m is None:
            raise ConfigError(f"layout '{text}': '{tok}' not understood; {_LAYOUT_HELP}")
        key = m.group(1)
        if key in out:
            raise ConfigError(f"layout '{text}': {key} given twice")
        out[key] = int(m.group(2))
    if min(out.get("tp", 1), out.get("pp", 1), out.get("adp", 1)) < 1:
        raise ConfigError(f"layout '{text}': tp, pp and adp must be >= 1")
    return out


def parse_layout(text: str, tp_hint: int | None = None) -> Layout:
    """Parse AIConfigurator's layouts: ``agg tp8 pp1 adp1 moe_tp8 ep1`` (tokens in any order, a missing one is
    1; a bare ``agg`` takes ``tp_hint``) or ``disagg Nx prefill(tp4 adp1 ep4) + Mx decode(tp8 adp1 ep8)``
    (``0x`` = count not recorded; pools may also give ``pp``)."""
    s = " ".join(text.strip().lower().split())
    head, _, rest = s.partition(" ")
    if head == "agg":
        par = _parallelism(rest.split(), text)
        tp, pp, adp, ep = par.get("tp", tp_hint or 1), par.get("pp", 1), par.get("adp", 1), par.get("ep", 1)
        return Layout("agg", replica=PoolLayout(1, tp, pp, adp, max(ep, 1), par.get("moe_tp") or None))
    if head == "disagg":
        pools: dict[str, PoolLayout] = {}
        for part in rest.split("+"):
            m = _POOL.match(part.strip())
            if m is None or m.group(2) in pools:
                raise ConfigError(f"layout '{text}' not understood; {_LAYOUT_HELP}")
            par = _parallelism(m.group(3).split(), text)
            tp, pp, adp, ep = par.get("tp", 1), par.get("pp", 1), par.get("adp", 1), par.get("ep", 1)
            pools[m.group(2)] = PoolLayout(int(m.group(1)) or None, tp, pp, adp, max(ep, 1))
        if set(pools) == {"prefill", "decode"}:
            return Layout("disagg", prefill=pools["prefill"], decode=pools["decode"])
    raise ConfigError(f"layout '{text}' not understood; {_LAYOUT_HELP}")


@dataclass(frozen=True, slots=True)
class MeasurementRow:
    index: int
    gpu: str
    num_gpus: int | None
    model: str
    engine: str
    precision: str
    layout: str
    tp: int | None
    isl: int
    osl: int
    concurrency: int | None  # None = offline
    num_requests: int | None
    measured: dict[str, float | None]
    source: str


def _opt_int(v: str | None, field: str, index: int) -> int | None:
    if v is None or str(v).strip() == "":
        return None
    try:
        f = float(v)
    except ValueError:
        raise ConfigError(f"row {index}: {field}='{v}' is not a number") from None
    if not f.is_integer() or f < 0:
        raise ConfigError(f"row {index}: {field}='{v}' is not a non-negative integer")
    return int(f)


def _opt_float(v: str | None, field: str, index: int, zero_is_blank: bool = False) -> float | None:
    """A measured value: blank (or NaN, as some exporters write a missing value) is not measured; anything else
    must be a positive finite number (``zero_is_blank``: 0 also means not measured, e.g. the TPOT of a one-token
    output)."""
    if v is None or str(v).strip() == "":
        return None
    try:
        f = float(v)
    except ValueError:
        raise ConfigError(f"row {index}: {field}='{v}' is not a number") from None
    if math.isnan(f) or (f == 0 and zero_is_blank):
        return None
    if not math.isfinite(f) or f <= 0:
        raise ConfigError(f"row {index}: {field}='{v}' is not a positive measurement (leave it blank if not measured)")
    return f


def row_from_mapping(d: Mapping[str, str], index: int) -> MeasurementRow:
    """Validate one CSV row (strings) into a :class:`MeasurementRow`; raises ConfigError naming the field."""
    isl = _opt_int(d.get("isl"), "isl", index)
    osl = _opt_int(d.get("osl"), "osl", index)
    if not isl or not osl:
        raise ConfigError(
            f"row {index}: isl and osl must be positive integers (got isl={d.get('isl')!r}, osl={d.get('osl')!r})"
        )
    conc_raw = str(d.get("concurrency") or "").strip().lower()
    conc = None if conc_raw in ("offline", "") else _opt_int(conc_raw, "concurrency", index)
    return MeasurementRow(
        index=index,
        gpu=str(d.get("gpu") or "").strip(),
        num_gpus=_opt_int(d.get("num_gpus"), "num_gpus", index),
        model=str(d.get("model") or "").strip(),
        engine=normalise_engine(str(d.get("engine") or "")),
        precision=normalise_precision(str(d.get("precision") or "")),
        layout=str(d.get("layout") or "").strip(),
        tp=_opt_int(d.get("tp"), "tp", index),
        isl=isl,
        osl=osl,
        concurrency=conc,
        num_requests=_opt_int(d.get("num_requests"), "num_requests", index),
        measured={k: _opt_float(d.get(k), k, index, zero_is_blank=k == "tpot_ms" and osl <= 1) for k in METRICS},
        source=str(d.get("source") or ""),
    )


def kv_dtype_for(precision: str) -> str:
    """KV-cache dtype engines use by default with quantised checkpoints: fp8 with fp8/fp4 weights."""
    return "fp8" if normalise_precision(precision) in ("fp8", "fp4", "nvfp4", "mxfp4") else "bf16"


ModelLookup = Callable[[str], Any]
GpuLookup = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class ServingSettings:
    """Engine settings a measurement row does not record but ``estimate --layout`` takes: the KV-cache dtype
    (None: :func:`kv_dtype_for` the weight precision), the memory fraction the engine sizes its KV cache from,
    and the scheduler's sequence and per-step token limits (None: the engine family's calibrated ones). They
    reach every pool of the layout, aggregated or disaggregated, as ``estimate``'s own options reach its replica.
    Each value is checked here; the budget against the sequence limit is checked where the engine's own
    limits are known (:func:`gpuyield.core.perf.closed_loop.scheduler_limits`)."""

    kv_dtype: str | None = None
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")


def _pool_model(
    model: Any,
    gpu: Any,
    pool: PoolLayout,
    row: MeasurementRow,
    cal: Calibration,
    role: str = "mixed",
    kv_dtype: str | None = None,
    worker_counts_known: bool = True,
) -> PerfModel:
    moe = bool(getattr(model, "num_experts", 0))
    ep = pool.ep if moe else 1
    tp, adp, moe_tp = pool.tp, pool.adp, pool.moe_tp if moe else None
    # A tensor-parallel degree that does not divide the attention heads cannot shard attention, and one wider
    # than a node (``gpus_per_node``: 8, or a GB200 tray's 4 though NVLink spans 72) would all-reduce every
    # layer beyond it. The model reads such wide deployments ("tp48" of a 128-head model, "tp64" on 8-GPU nodes,
    # "tp8" on GB200) as attention-data-parallel, the experts expert-parallel over all the GPUs, each rank
    # keeping the widest tensor parallelism that divides both the heads and the degree within a node (tp64 on
    # 8-GPU nodes: 8 ranks of tp8; tp48 on GB200: 12 ranks of tp4). The rows record no attention DP: this
    # reading is kept because it fits them, better than one rank per GPU (TensorRT-LLM's only attention-DP form)
    # once a prompt's prefill runs on its own rank (refit loss TensorRT-LLM 0.234 -> 0.228, against 0.232 with
    # one rank per GPU; SGLang 0.215 -> 0.213).
    heads = int(getattr(model, "num_attention_heads", 0) or 0)
    per_node = int(getattr(gpu, "gpus_per_node", 0) or 8)
    if tp > 1 and adp == 1 and heads and (heads % tp or tp > per_node):
        att = max(d for d in range(1, min(tp, per_node) + 1) if tp % d == 0 and heads % d == 0)
        adp, tp = tp // att, att
        if moe:
            inter = int(getattr(model, "moe_intermediate_size", 0) or 0)
            if moe_tp and moe_tp > 1 and inter and inter % moe_tp:
                ep, moe_tp = moe_tp * ep, 1
    return PerfModel.build_pool(
        model,
        gpu,
        role,
        worker_counts_known=worker_counts_known,
        tp=tp,
        pp=pool.pp,
        ep=ep,
        attention_dp=adp,
        weight_precision=row.precision,
        kv_dtype=kv_dtype or kv_dtype_for(row.precision),
        engine=row.engine,
        calibration=cal,
        moe_tp=moe_tp,
    )


VALIDATION_METHODS = ("analytic", "sim")

# A measurement file of which at least this fraction of the predicted rows with a measurement is already held,
# measurement for measurement, by the calibration's operating points is taken to be (a part of) the
# calibration's own data, and ``validate`` scores it leave-one-out. A file of new measurements shares far
# fewer: a random fifth of e2e_train.csv held out shares 29-34 % with the other four fifths (verbatim repeats in
# AIConfigurator's sample).
OWN_DATA_FRACTION = 0.9
# Between this and OWN_DATA_FRACTION the file is scored as new data, with a note that it may be mostly the
# calibration's own (a file mixing the two cannot tell which of its rows are which).
OWN_DATA_MIXED_FRACTION = 0.5
# --leave-own-out (``gpuyield validate``, the cross-validation script) -> validate_rows' ``leave_own_out``
LEAVE_OWN_OUT_MODES: dict[str, bool | None] = {"auto": None, "yes": True, "no": False}


def _smallest_fitting_replica(
    model: Any, gpu: Any, row: MeasurementRow, cal: Calibration, settings: ServingSettings
) -> tuple[PoolLayout, PerfModel]:
    """A bare ``agg`` row with no ``tp``: the smallest power-of-two TP (up to ``num_gpus``, or a node) whose
    replica holds the model and one request of the row's length (its engine started with ``--max-model-len`` at
    ``isl + osl``, as every prediction assumes), as a deployment would be sized; the row's GPUs are then that many
    replicas."""
    limit = row.num_gpus or int(getattr(gpu, "gpus_per_node", 0) or 8)
    tp = 1
    while True:
        pool = PoolLayout(1, tp, ep=tp if getattr(model, "num_experts", 0) else 1)
        perf = _pool_model(model, gpu, pool, row, cal, kv_dtype=settings.kv_dtype)
        if perf.memory(settings.gpu_memory_utilization, max_model_len=row.isl + row.osl).fits or tp * 2 > limit:
            return pool, perf
        tp *= 2


def predict_row(
    row: MeasurementRow,
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    cal: Calibration,
    method: str = "analytic",
    speculative: Any = None,
    settings: ServingSettings | None = None,
) -> ClosedLoopResult:
    """Predict one row; raises a :class:`GpuyieldError` whose message is the 'unsupported' reason.

    ``method="sim"`` predicts aggregated rows with the engine model, exactly as ``gpuyield estimate`` does
    (:func:`gpuyield.core.sim.estimate_with_engine_model`), and disaggregated rows with the engine model's P/D
    cluster (:func:`gpuyield.core.sim.closed_loop.estimate_disaggregated_with_engine_model`) at the worker counts
    the analytic solver reads or, for ``0x``, assumes.
    ``speculative`` (a :class:`~gpuyield.core.perf.speculative.SpeculativeDecoding`, for ``estimate --layout``;
    measurement rows record none) times the decoding pools' steps with it; ``settings`` (:class:`ServingSettings`,
    also for ``estimate --layout``) the engine settings every pool runs with, where not the defaults.
    """
    if method not in VALIDATION_METHODS:
        raise ConfigError(f"validation method must be one of {', '.join(VALIDATION_METHODS)}, got '{method}'")
    model = model_of(row.model)
    gpu = gpu_of(row.gpu)
    layout = parse_layout(row.layout, row.tp)
    if row.concurrency is None and not row.num_requests:
        raise ConfigError("offline row without num_requests")
    st = settings or ServingSettings()
    mem_f, seqs, budget = st.gpu_memory_utilization, st.max_num_seqs, st.max_num_batched_tokens
    if layout.kind == "agg":
        replica = layout.replica
        assert replica is not None
        if row.layout.strip().lower() == "agg" and row.tp is None:
            replica, perf = _smallest_fitting_replica(model, gpu, row, cal, st)
        else:
            perf = _pool_model(model, gpu, replica, row, cal, kv_dtype=st.kv_dtype)
        if speculative is not None:
            perf = perf.with_speculative(speculative)
        replicas = 1
        if row.num_gpus and row.num_gpus > replica.gpus and row.num_gpus % replica.gpus == 0:
            replicas = row.num_gpus // replica.gpus
        n_req = row.num_requests
        analytic = estimate_closed_loop(
            perf, row.isl, row.osl, row.concurrency, num_requests=n_req, num_replicas=replicas,
            gpu_memory_utilization=mem_f, max_num_seqs=seqs, max_num_batched_tokens=budget,
        )  # fmt: skip
        if method == "analytic":
            return analytic
        from gpuyield.core.sim.closed_loop import estimate_with_engine_model  # the simulator imports perf

        eng = estimate_with_engine_model(
            perf, row.isl, row.osl, row.concurrency, num_requests=n_req, num_replicas=replicas,
            gpu_memory_utilization=mem_f, max_num_seqs=seqs, max_num_batched_tokens=budget,
        )  # fmt: skip
        return _engine_answer(analytic, eng)
    assert layout.prefill is not None and layout.decode is not None
    # the P/D rule of PerfModel.build_pool; a layout with a worker count unrecorded decodes as the campaign's
    pre = _pool_model(model, gpu, layout.prefill, row, cal, "prefill", kv_dtype=st.kv_dtype)
    dec = _pool_model(model, gpu, layout.decode, row, cal, "decode", st.kv_dtype, layout.worker_counts_known)
    if speculative is not None:  # the decode pool's steps; the prefill pool never decodes
        dec = dec.with_speculative(speculative)
    conc = row.concurrency if row.concurrency is not None else int(row.num_requests or 1)
    analytic = estimate_disaggregated(
        pre,
        dec,
        row.isl,
        row.osl,
        conc,
        num_prefill=layout.prefill.count,
        num_decode=layout.decode.count,
        gpu_memory_utilization=mem_f,
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
    )
    if method == "analytic":
        return analytic
    from gpuyield.core.sim.closed_loop import estimate_disaggregated_with_engine_model

    assert analytic.pd_workers is not None
    n_pre, n_dec = analytic.pd_workers  # the recorded counts, or those the analytic solver assumed for `0x`
    eng = estimate_disaggregated_with_engine_model(
        pre, dec, row.isl, row.osl, row.concurrency, num_prefill=n_pre, num_decode=n_dec,
        num_requests=row.num_requests, gpu_memory_utilization=mem_f, max_num_seqs=seqs, max_num_batched_tokens=budget,
    )  # fmt: skip
    return _engine_answer(analytic, eng)


def _engine_answer(analytic: ClosedLoopResult, eng: Any) -> ClosedLoopResult:
    """The analytic result (memory, limits, notes) with the engine model's latencies, throughput and method."""
    return dataclasses.replace(
        analytic,
        ttft_ms=eng.ttft_ms,
        tpot_ms=eng.tpot_ms,
        e2e_ms=eng.e2e_ms,
        throughput_tok_s=eng.throughput_tok_s,
        method=eng.method,
    )


def _deployment_gpus(row: MeasurementRow, layout: Layout) -> int | None:
    """GPUs of the whole measured deployment, or None when the row does not say."""
    if layout.kind == "agg":
        assert layout.replica is not None
        return max(row.num_gpus, layout.replica.gpus) if row.num_gpus else None
    assert layout.prefill is not None and layout.decode is not None
    counted = 0
    if layout.prefill.count and layout.decode.count:
        counted = layout.prefill.count * layout.prefill.gpus + layout.decode.count * layout.decode.gpus
    return max(row.num_gpus or 0, counted) or None  # the larger reading: the floor must stay a floor


# Speculative decoding (MTP heads, EAGLE drafts) verifies several tokens per read of the cache; accepted tokens
# per verification step stay below this in published results (e.g. DeepSeek-V3's MTP: about 1.85 with one
# draft token), so the memory floor divides by it (or by the model's MTP layers + 1 when that is larger).
SPECULATIVE_TOKENS_PER_STEP = 4.0


def measurement_floor(
    row: MeasurementRow, model_of: ModelLookup, gpu_of: GpuLookup
) -> tuple[ClosedLoopFloor, float] | None:
    """(floor, measured mean end-to-end ms) of a closed-loop row (:mod:`gpuyield.core.perf.bounds`), or None
    when the row lacks what the check needs (offline, deployment size not recorded, latency not measured)."""
    if row.concurrency is None or row.concurrency < 1:
        return None
    e2e = row.measured.get("e2e_ms")
    ttft, tpot = row.measured.get("ttft_ms"), row.measured.get("tpot_ms")
    if not e2e and ttft and tpot is not None:
        e2e = ttft + (row.osl - 1) * tpot
    if not e2e:
        return None
    try:
        model, gpu = model_of(row.model), gpu_of(row.gpu)
        g = _deployment_gpus(row, parse_layout(row.layout, row.tp))
    except GpuyieldError:
        return None
    rates = [r for r in (gpu.bf16_dense_tflops, gpu.fp8_dense_tflops, gpu.fp4_dense_tflops, gpu.int8_dense_tops) if r]
    if g is None or not rates:
        return None
    try:
        floor = closed_loop_floor(
            concurrency=row.concurrency,
            isl=row.isl,
            osl=row.osl,
            num_gpus=g,
            params_active=float(sum(s.params_active for s in model.gemm_shapes if s.group != "lm_head")),
            # sparse (indexed) attention reads a top-k subset of the cache: no memory floor for those models
            kv_bytes_at_isl=0.0 if model.index_head_dim else model.kv_bytes_for_context(row.isl, "fp4", state_dtype="fp4"),
            peak_flops_per_gpu=max(rates) * 1e12,
            memory_bytes_per_s_per_gpu=gpu.memory_bandwidth_bytes_per_s,
            tokens_per_cache_read=max(SPECULATIVE_TOKENS_PER_STEP, model.num_mtp_layers + 1.0),
        )
    except GpuyieldError:
        return None
    return floor, e2e


def implausible_reason(row: MeasurementRow, model_of: ModelLookup, gpu_of: GpuLookup) -> str | None:
    """Why the row's measured latency is physically impossible as recorded, or None."""
    got = measurement_floor(row, model_of, gpu_of)
    if got is None:
        return None
    floor, e2e = got
    if e2e >= floor.e2e_ms:
        return None
    what = (
        "its prompts need more FLOPs per second than the GPUs' peak, unless they were served from a prefix cache"
        if floor.bound_by == "compute"
        else "its output tokens need more cache reads per second than the GPUs' memory bandwidth"
    )
    how = "the e2e_ms column" if row.measured.get("e2e_ms") else "TTFT + (osl-1) x TPOT"
    return (
        f"measured mean end-to-end latency {e2e:.0f} ms ({how}) is below the physical floor {floor.e2e_ms:.0f} ms "
        f"for {row.concurrency} clients on the recorded deployment: {what} (Little's law; the recorded "
        "concurrency or GPU count is probably not what ran)"
    )


_R = TypeVar("_R")  # a closed-loop result: ClosedLoopResult, or the engine model's EngineEstimate


def _canonical_pool(p: PoolLayout, moe: bool) -> tuple[int, int, int, int, int, int]:
    """(tp, pp, adp, ep, moe_tp, GPUs) of a replica as the deployment key reads it: a dense model's expert
    settings mean nothing (ep and moe_tp 0: "moe_tp0 ep0", "moe_tp2 ep2" and no mention are one layout); a MoE
    model's unstated moe_tp is PerfModel's default split of the experts."""
    if not moe:
        return p.tp, p.pp, p.adp, 0, 0, p.pp * p.tp * p.adp
    moe_tp = p.moe_tp or max(1, p.tp * p.adp // max(1, p.ep))
    return p.tp, p.pp, p.adp, p.ep, moe_tp, p.pp * max(p.tp * p.adp, moe_tp * p.ep)


def _pool_text(p: PoolLayout, moe: bool) -> str:
    tp, pp, adp, ep, moe_tp, _ = _canonical_pool(p, moe)
    return f"tp{tp} pp{pp} adp{adp}" + (f" ep{ep} moe_tp{moe_tp}" if moe else "")


_KEY_PRECISION = {"mxfp4": "fp4", "nvfp4": "fp4"}


def deployment_key(row: MeasurementRow, model_of: ModelLookup, gpu_of: GpuLookup) -> DeploymentKey:
    """The canonical deployment a row was measured on (catalogue ids, normalised engine and precision).

    Aggregated rows name one replica and count replicas (``num_gpus`` / replica GPUs, 1 when unknown);
    disaggregated rows keep their worker counts (0 = not recorded) and ``num_gpus``."""
    model = model_of(row.model)
    gpu = gpu_of(row.gpu)
    layout = parse_layout(row.layout, row.tp)
    engine, precision = normalise_engine(row.engine), normalise_precision(row.precision)
    # measured 4-bit float rows are labelled "fp4" whichever format the checkpoint has (AIConfigurator's
    # gpt-oss rows are its MXFP4 release): a query at mxfp4 or nvfp4 is the same deployment
    precision = _KEY_PRECISION.get(precision, precision)
    moe = bool(getattr(model, "num_experts", 0))
    arch = architecture_id(model)
    if layout.kind == "agg":
        rep = layout.replica
        assert rep is not None
        if row.layout.strip().lower() == "agg" and row.tp is None:
            return DeploymentKey(engine, model.id, arch, gpu.id, precision, "agg auto", row.num_gpus or 0)
        replicas = 1
        if row.num_gpus and row.num_gpus > rep.gpus and row.num_gpus % rep.gpus == 0:
            replicas = row.num_gpus // rep.gpus
        return DeploymentKey(engine, model.id, arch, gpu.id, precision, f"agg {_pool_text(rep, moe)}", replicas)
    assert layout.prefill is not None and layout.decode is not None
    text = (
        f"disagg {layout.prefill.count or 0}x prefill({_pool_text(layout.prefill, moe)})"
        f" + {layout.decode.count or 0}x decode({_pool_text(layout.decode, moe)})"
    )
    return DeploymentKey(engine, model.id, arch, gpu.id, precision, text, row.num_gpus or 0)


def _storable(row: MeasurementRow) -> bool:
    """Whether a measured operating point can be made of the row: closed loop, with a TTFT or a TPOT."""
    return row.concurrency is not None and bool(row.measured.get("ttft_ms") or row.measured.get("tpot_ms"))


def row_measurement_id(row: MeasurementRow) -> str:
    """Stable id of one measurement: its inputs and its measured TTFT/TPOT (equal rows share it)."""
    return measurement_id(
        (
            row.gpu,
            row.num_gpus,
            row.model,
            row.engine,
            row.precision,
            " ".join(row.layout.lower().split()),
            row.tp,
            row.isl,
            row.osl,
            row.concurrency,
            row.measured.get("ttft_ms"),
            row.measured.get("tpot_ms"),
        )
    )


def measurement_content(r: MeasurementRow) -> tuple[Any, ...] | None:
    """What makes two rows one measurement whatever they were filed under: GPU, engine, ISL, OSL, concurrency and
    the measured TTFT and TPOT to four significant digits (the sample also files runs under a second layout with
    their values rounded to two decimals: 14.2201 and 14.22 ms); None for a row that measured neither."""
    ttft, tpot = r.measured.get("ttft_ms"), r.measured.get("tpot_ms")
    if not ttft and not tpot:
        return None

    def sig(v: float | None) -> str:
        return "" if v is None else f"{v:.4g}"

    return (r.gpu.lower(), normalise_engine(r.engine), r.isl, r.osl, r.concurrency, sig(ttft), sig(tpot))


def measurement_copies(rows: Iterable[MeasurementRow]) -> list[tuple[str, ...]]:
    """For each row (in order), its own measurement id followed by those of every other row of ``rows`` that
    holds the same measurement (:func:`measurement_content`: the same GPU, engine, ISL, OSL and concurrency with
    the same measured TTFT and TPOT), whatever model name or layout it was filed under (a study may list one run
    under two names of one architecture, DeepSeek-R1 and -V3, or under two spellings of one layout). Leaving a
    row out leaves all of them out: a copy of a measurement is that measurement, and must not predict it."""
    rows = list(rows)
    ids = [row_measurement_id(r) for r in rows]
    contents = [measurement_content(r) for r in rows]
    by_content: dict[tuple[Any, ...], set[str]] = {}
    for mid, c in zip(ids, contents, strict=True):
        if c is not None:
            by_content.setdefault(c, set()).add(mid)
    return [
        (mid,) + tuple(sorted(by_content[c] - {mid})) if c is not None else (mid,)
        for mid, c in zip(ids, contents, strict=True)
    ]


def correct_row(
    result: _R,
    row: MeasurementRow,
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    cal: Calibration,
    exclude: Iterable[str] = (),
    method: str = "analytic",
    own_data: bool = False,
) -> tuple[_R, Correction | None]:
    """``result`` corrected by the calibration's measured operating points near ``row`` (closed-loop rows
    only; offline rows and unmeasured models are returned unchanged, with None). ``method`` says which
    prediction ``result`` is (``analytic`` or ``sim``): each has its own residuals. ``own_data``: ``row`` is
    one of the rows the calibration was fitted on (``validate`` leaving its own measurement out, ``exclude``),
    so the learned stage uses the ensemble that never saw its sweep instead of the mean of all."""
    if cal.corrections is None or row.concurrency is None:
        return result, None
    try:
        key = deployment_key(row, model_of, gpu_of)
    except GpuyieldError:
        return result, None
    exclude = tuple(exclude)
    corr = cal.corrections.correct(key, row.isl, row.osl, row.concurrency, exclude=exclude, method=method)
    if corr is None:
        return result, None
    corrected = apply_correction(result, corr)
    learned = cal.corrections.learned
    if learned is None or corr.at_query:
        # a measurement of this very query is the best evidence there is: the learned model, fitted on queries
        # without one, does not second-guess it
        return corrected, corr
    # the learned second stage: on a row whose own measurement is left out (the calibration's own data), the
    # ensemble that never saw its sweep; otherwise the mean of the folds' ensembles
    fold = learned.fold_of(sweep_key(row, model_of, gpu_of, key)) if own_data else None
    # both factors wherever the trees run, the query's own sweep measured or not (leaving TTFT's out where the sweep
    # had another measured point cost, on e2e_train.csv in 2026-12, 0.5 point of leave-one-out TTFT and 2 points with
    # operating points held out: docs/benchmarks.md, eighteenth pass)
    ft, fd = learned.factors(residual_features(row, model_of, gpu_of, corrected, corr, key), fold)
    both = dataclasses.replace(
        corr, ttft_factor=corr.ttft_factor * ft, tpot_factor=corr.tpot_factor * fd, learned_factors=(ft, fd)
    )
    return apply_correction(result, both), both


def sweep_key(row: MeasurementRow, model_of: ModelLookup, gpu_of: GpuLookup, key: DeploymentKey | None = None) -> str:
    """The concurrency sweep a row belongs to: its deployment (``key``, when the caller has it) under its
    architecture rather than its model name, ISL and OSL (the learned residuals' folds; sweeps holding copies
    of one measurement are tied together by :attr:`LearnedResiduals.fold_aliases`)."""
    k = key or deployment_key(row, model_of, gpu_of)
    return "|".join((k.engine, k.architecture, k.gpu, k.precision, k.layout, str(k.num_gpus), str(row.isl), str(row.osl)))


def residual_features(
    row: MeasurementRow,
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    corrected: Any,
    corr: Correction,
    key: DeploymentKey | None = None,
) -> list[float]:
    """The learned residual model's features (:data:`gpuyield.core.perf.residual.FEATURES`, in order) of a
    closed-loop row whose prediction ``corrected`` the measured points ``corr`` produced (``key``: the row's
    deployment key, when the caller has it). Layouts are read as the deployment key reads them, so one
    deployment has one set of features however it was written."""
    model, gpu = model_of(row.model), gpu_of(row.gpu)
    layout = parse_layout(row.layout, row.tp)
    nan = math.nan
    moe = bool(getattr(model, "num_experts", 0))
    zero = (0, 0, 0, 0, 0, 0)
    agg = _canonical_pool(layout.replica, moe) if layout.replica is not None else zero
    pre = _canonical_pool(layout.prefill, moe) if layout.prefill is not None else zero
    dec = _canonical_pool(layout.decode, moe) if layout.decode is not None else zero
    n_pre = (layout.prefill.count or 0) if layout.prefill is not None else 0
    n_dec = (layout.decode.count or 0) if layout.decode is not None else 0
    # GPUs of the deployment: an aggregated row's replicas x replica GPUs (one replica when not recorded), a
    # disaggregated row's workers x their GPUs, or its recorded total when the counts are not (0 = neither)
    key = key or deployment_key(row, model_of, gpu_of)
    if layout.kind == "agg":
        gpus_total = key.num_gpus * agg[5] if key.layout != "agg auto" else key.num_gpus
    elif n_pre and n_dec:
        gpus_total = n_pre * pre[5] + n_dec * dec[5]
    else:
        gpus_total = key.num_gpus
    precision = normalise_precision(row.precision)
    f: dict[str, float] = {
        "engine_code": float(ENGINE_CODES.get(normalise_engine(row.engine).partition(":")[0], nan)),
        "disaggregated": float(layout.kind == "disagg"),
        "worker_counts_unknown": float(layout.kind == "disagg" and not layout.worker_counts_known),
        "tp": float(agg[0]),
        "pp": float(agg[1]),
        "adp": float(agg[2]),
        "ep": float(agg[3]),
        "moe_tp": float(agg[4]),
        "prefill_tp": float(pre[0]),
        "prefill_adp": float(pre[2]),
        "prefill_ep": float(pre[3]),
        "decode_tp": float(dec[0]),
        "decode_adp": float(dec[2]),
        "decode_ep": float(dec[3]),
        "prefill_workers": float(n_pre),
        "decode_workers": float(n_dec),
        "num_gpus": float(gpus_total),
        "log_isl": math.log(row.isl),
        "log_osl": math.log(row.osl),
        "log_concurrency": math.log(row.concurrency or 1),
        # 16 bf16, 8 fp8, 4 fp4/int4 (scales left out); NaN for a name the catalogue does not know
        "weight_bits": float(math.floor(8 * WEIGHT_PRECISIONS[precision])) if precision in WEIGHT_PRECISIONS else nan,
        "log_params_active": math.log(model.params_active),
        "log_params_total": math.log(model.params_total),
        "is_moe": float(moe),
        "uses_mla": float(bool(model.uses_mla)),
        "num_layers": float(model.num_layers),
        "gpu_memory_bandwidth_tb_s": float(gpu.memory_bandwidth_tb_s),
        "gpu_fp8_dense_tflops": float(gpu.fp8_dense_tflops or 0.0),
        "gpu_memory_gb": float(gpu.memory_gb),
        "log_ttft_ms": math.log(corrected.ttft_ms) if corrected.ttft_ms > 0 else nan,
        "log_tpot_ms": math.log(corrected.tpot_ms) if corrected.tpot_ms > 0 else nan,
        "log_ttft_factor": math.log(corr.ttft_factor),
        "log_tpot_factor": math.log(corr.tpot_factor),
        "support": float(corr.support),
        "limited_code": float(LIMITED_CODES.get(getattr(corrected, "limited_by", ""), nan)),
    }
    return [f[name] for name in FEATURES]


def _log_ratio(measured: float | None, predicted: float) -> float | None:
    return math.log(measured / predicted) if measured and predicted > 0 else None


def prediction_cache_key(method: str, row: MeasurementRow) -> tuple[Any, ...]:
    """The key :func:`build_corrections` caches a row's uncorrected prediction under (its ``cache``)."""
    return (method, row.gpu, row.num_gpus, row.model, row.engine, row.precision, row.layout, row.tp, row.isl,
            row.osl, row.concurrency)  # fmt: skip


def build_corrections(
    rows: Iterable[MeasurementRow],
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    cal: Calibration,
    settings: CorrectionSettings | None = None,
    source: str = "",
    with_sim: bool = False,
    cache: dict[tuple[Any, ...], ClosedLoopResult | None] | None = None,
) -> MeasuredCorrections:
    """Residuals ``log(measured / predicted)`` of every closed-loop row the model predicts under ``cal``
    (without corrections). Offline rows and rows it cannot predict are left out (they have no residual).
    ``with_sim`` also stores the residuals against the engine model for aggregated rows (about 10 ms a row),
    which ``estimate --method sim`` and ``validate --method sim`` use. ``cache`` (a dict the caller keeps) shares
    the predictions between calls on subsets of the same rows under the same ``cal``."""
    base = dataclasses.replace(cal, corrections=None)
    deps: dict[str, list[MeasuredPoint]] = {}
    cache = {} if cache is None else cache

    def predicted(row: MeasurementRow, method: str) -> ClosedLoopResult | None:  # None: cannot be predicted
        ck = prediction_cache_key(method, row)
        if ck not in cache:
            try:
                cache[ck] = predict_row(row, model_of, gpu_of, base, method)
            except GpuyieldError:
                cache[ck] = None
        return cache[ck]

    seen: set[str] = set()  # a row repeated verbatim is one measurement, not two that agree
    for row in rows:
        if not _storable(row):
            continue
        assert row.concurrency is not None  # closed loop (_storable)
        mid = row_measurement_id(row)
        if mid in seen:
            continue
        seen.add(mid)
        mt, md = row.measured.get("ttft_ms"), row.measured.get("tpot_ms")
        res = predicted(row, "analytic")
        if res is None:
            continue
        lt = _log_ratio(mt, res.ttft_ms)
        ld = _log_ratio(md, res.tpot_ms)
        if lt is None and ld is None:
            continue
        st = sd = None
        if with_sim:  # the engine model's own residual (a P/D row's: its P/D cluster's)
            sres = predicted(row, "sim")
            if sres is not None:
                st = _log_ratio(mt, sres.ttft_ms)
                sd = _log_ratio(md, sres.tpot_ms)
        key = deployment_key(row, model_of, gpu_of)
        ltp = _log_ratio(row.measured.get("throughput_tok_s"), res.throughput_tok_s)
        deps.setdefault(key.text(), []).append(
            MeasuredPoint(row.isl, row.osl, row.concurrency, lt, ld, mid, st, sd, ltp)
        )
    return MeasuredCorrections(
        deployments={k: tuple(v) for k, v in sorted(deps.items())},
        settings=settings or CorrectionSettings(),
        source=source,
        coefficients=coefficients_fingerprint(base),
    )


def _score(into: dict[str, list[tuple[float, float]]], res: ClosedLoopResult, row: MeasurementRow) -> None:
    """Add (predicted, measured) of every metric the row measured (and the model predicted above 0)."""
    for k in METRICS:
        pred, meas = getattr(res, k), row.measured[k]
        if meas is not None and pred > 0:
            into[k].append((pred, meas))


def _ape(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas


def error_summary(pairs: Sequence[tuple[float, float]]) -> dict[str, float | int | None]:
    """n, MAPE, median and p90 absolute percentage error, and bias (mean signed relative error)."""
    n = len(pairs)
    if n == 0:
        return {"n": 0, "mape": None, "median_ape": None, "p90_ape": None, "bias": None}
    apes = sorted(_ape(p, m) for p, m in pairs)
    signed = [(p - m) / m for p, m in pairs]

    def q(frac: float) -> float:
        pos = frac * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        return apes[lo] + (apes[hi] - apes[lo]) * (pos - lo)

    return {
        "n": n,
        "mape": sum(apes) / n,
        "median_ape": q(0.5),
        "p90_ape": q(0.9),
        "bias": sum(signed) / n,
    }


LAYOUT_KINDS = ("agg", "disagg", "disagg_counts_unknown")


def layout_kind(row: MeasurementRow) -> str:
    """``agg``, ``disagg``, or ``disagg_counts_unknown`` (a P/D layout recorded without its worker counts, e.g.
    AIConfigurator's ``0x``: the counts, which set the decode batch and the queueing, are not in the row); the
    row's first layout word when the layout does not parse (it is then unsupported anyway)."""
    try:
        layout = parse_layout(row.layout, row.tp)
    except GpuyieldError:
        return (row.layout.lower().split() or ["?"])[0]
    if layout.kind == "disagg" and not layout.worker_counts_known:
        return "disagg_counts_unknown"
    return layout.kind


def repeat_floor(rows: Sequence[MeasurementRow]) -> dict[str, Any]:
    """How much of a file's error no model of its inputs can remove: rows that share every input column with a row
    measured with other values (another worker count behind a ``0x`` layout, MTP on or off, another batch limit:
    settings the columns do not record).

    Per metric, over the rows that measured it: ``oracle_floor``, the least MAPE any one answer per input group
    could give the whole file (the best single value of each group, as a share of all ``n`` rows: a lower bound on
    the file's MAPE for every model, this one included); ``twin_mape``, the MAPE of those rows when each is
    predicted by the median of its group's other measurements (what a lookup of the repeats gives, leave-one-out:
    a verbatim copy of the row, same inputs and same values, is the same measurement and left out with it), and
    ``twin_points``, the percentage points of the file's MAPE they add then. ``rows`` and ``groups`` count the
    rows (verbatim copies included, as ``validate`` scores each) and input groups where some metric was measured
    with two values; a missing value disagrees with nothing. Pure: rows in, numbers out."""
    groups: dict[tuple[Any, ...], list[MeasurementRow]] = {}
    for r in rows:
        key = (r.gpu, r.num_gpus, r.model, r.engine, r.precision, " ".join(r.layout.lower().split()), r.tp, r.isl,
               r.osl, r.concurrency, r.num_requests)  # fmt: skip
        groups.setdefault(key, []).append(r)

    def pair(m: MeasurementRow) -> tuple[float | None, float | None]:
        return m.measured.get("ttft_ms"), m.measured.get("tpot_ms")

    def disagree(members: list[MeasurementRow], k: str) -> bool:  # a missing value disagrees with nothing
        return len({v for m in members if (v := m.measured.get(k))}) > 1

    out: dict[str, Any] = {}
    for k in ("ttft_ms", "tpot_ms"):
        n = 0
        oracle = 0.0
        twin: list[float] = []
        for members in groups.values():
            measured = [m for m in members if m.measured.get(k)]
            n += len(measured)
            if not disagree(members, k):
                continue
            vals = [float(m.measured[k] or 0.0) for m in measured]
            # sum of |p / y - 1| is convex and piecewise linear in p: its least value is at one of the y
            oracle += min(sum(abs(p / y - 1.0) for y in vals) for p in set(vals))
            for m in measured:
                # the group's other measurements: a verbatim repeat of this one is the same measurement
                others = sorted(float(o.measured[k] or 0.0) for o in measured if pair(o) != pair(m))
                mid = len(others) // 2
                guess = others[mid] if len(others) % 2 else 0.5 * (others[mid - 1] + others[mid])
                y = float(m.measured[k] or 0.0)
                twin.append(abs(guess / y - 1.0))
        out[k] = {
            "n": n,
            "rows": len(twin),
            "oracle_floor": oracle / n if n else None,
            "twin_mape": sum(twin) / len(twin) if twin else None,
            "twin_points": sum(twin) / n if n else None,
        }
    split = [ms for ms in groups.values() if disagree(ms, "ttft_ms") or disagree(ms, "tpot_ms")]
    return {"rows": sum(len(ms) for ms in split), "groups": len(split)} | out


def _own_rows(
    rows: Sequence[MeasurementRow], table: MeasuredCorrections | None, leave_own_out: bool | None
) -> dict[str, Any]:
    """How many of the predicted rows the table could hold (closed-loop, with a measured TTFT or TPOT, as
    :func:`build_corrections` stores them) it does hold, and whether they are left out (``validate_rows``)."""
    measured = [r for r in rows if _storable(r)]
    held = table.measurement_ids() if table is not None else frozenset()
    in_table = sum(row_measurement_id(r) in held for r in measured)
    share = in_table / len(measured) if measured else 0.0
    if leave_own_out is None:
        left_out = bool(measured) and share >= OWN_DATA_FRACTION
        why = "auto"
    else:
        left_out = leave_own_out and table is not None  # without measured points there is nothing to leave out
        why = "asked"
    out: dict[str, Any] = {"in_table": in_table, "measured_rows": len(measured), "left_out": left_out, "decided": why}
    if why == "auto" and not left_out and share >= OWN_DATA_MIXED_FRACTION:
        out["note"] = (
            f"{in_table} of {len(measured)} rows are measurements the calibration holds, fewer than "
            f"{OWN_DATA_FRACTION:.0%}: scored as new data, so those rows use their own measurement; if this file is "
            "mostly the calibration's own data, --leave-own-out yes scores it leave-one-out"
        )
    return out


def validate_rows(
    rows: Iterable[MeasurementRow],
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    cal: Calibration,
    progress: Callable[[int], None] | None = None,
    method: str = "analytic",
    invalid: Sequence[Mapping[str, Any]] = (),
    corrections: bool = True,
    leave_own_out: bool | None = None,
) -> dict[str, Any]:
    """Predict every row and score it: ``{"summary", "coverage", "unsupported", "rows"}`` (issue 3 shape).

    With ``corrections`` (the default) and a calibration that holds measured operating points, each closed-
    loop prediction is corrected by them. ``leave_own_out=True`` leaves out each row's own measurement (the
    table point with the same inputs and the same measured TTFT/TPOT): on the calibration's own rows the
    reported error is then a leave-one-out error, never a lookup of the answer. ``False`` keeps them: for rows
    known not to be in the table (new measurements, a cross-validation fold), an identical measurement on the
    table's side is a repeat the table really holds. ``None`` (the default) decides from the rows: leave-one-out
    when at least :data:`OWN_DATA_FRACTION` of the predicted rows with a measurement are in the table (the file
    is the calibration's own data, or a part of it), otherwise keep. The decision and the count are in
    ``own_rows`` (with a ``note`` when at least half, but fewer than that, are in the table).

    ``progress`` is called with 1 twice per row: once predicted, once corrected and scored (total ``2 × rows``).

    Rows whose measured latency is below the physical floor of their recorded deployment
    (:func:`implausible_reason`) are scored like the others, listed in ``implausible`` with the reason, and
    left out of ``summary_plausible`` only.

    ``method`` is ``analytic`` (the fast fixed-point solver, the default) or ``sim`` (aggregated rows through
    the engine model, as ``gpuyield estimate`` reports them); see :func:`predict_row`. ``invalid`` are rows
    that could not be read (``{"row", "reason"}``): they count in the coverage and are listed as unsupported.
    """
    if method not in VALIDATION_METHODS:
        raise ConfigError(f"validation method must be one of {', '.join(VALIDATION_METHODS)}, got '{method}'")
    out_rows: list[dict[str, Any]] = []
    unsupported: list[dict[str, Any]] = [{"row": u["row"], "reason": u["reason"]} for u in invalid]
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in METRICS}
    total = len(unsupported)
    cache: dict[tuple[Any, ...], ClosedLoopResult | str] = {}
    table = cal.corrections if corrections else None
    rows = list(rows)
    corrected = 0
    learned_rows = 0  # of the corrected rows, those the learned residual model corrected too
    plain_pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in METRICS}  # before the corrections
    implausible: list[dict[str, Any]] = []
    plausible_pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in METRICS}
    kind_pairs: dict[str, dict[str, list[tuple[float, float]]]] = {}  # per layout_kind
    kind_rows: dict[str, list[MeasurementRow]] = {}
    predictions: list[ClosedLoopResult | str] = []
    for row in rows:
        key = (
            row.gpu,
            row.num_gpus,
            row.model,
            row.engine,
            row.precision,
            row.layout,
            row.tp,
            row.isl,
            row.osl,
            row.concurrency,
            row.num_requests,
        )
        res = cache.get(key)
        if res is None:
            try:
                res = predict_row(row, model_of, gpu_of, cal, method)
            except GpuyieldError as exc:
                res = str(exc)
            cache[key] = res
        predictions.append(res)
        if progress is not None:
            progress(1)  # first of two calls per row: predicted (the second: corrected and scored)
    own = _own_rows([r for r, p in zip(rows, predictions, strict=True) if not isinstance(p, str)], table, leave_own_out)
    held = table.measurement_ids() if table is not None else frozenset()
    copies = measurement_copies(rows) if own["left_out"] else [()] * len(rows)
    for row, res, row_copies in zip(rows, predictions, copies, strict=True):
        total += 1
        rec: dict[str, Any] = {
            "row": row.index,
            "gpu": row.gpu,
            "num_gpus": row.num_gpus,
            "model": row.model,
            "engine": row.engine,
            "precision": row.precision,
            "layout": row.layout,
            "isl": row.isl,
            "osl": row.osl,
            "concurrency": row.concurrency if row.concurrency is not None else "offline",
        }
        if isinstance(res, str):
            unsupported.append({"row": row.index, "reason": res})
        else:
            final: ClosedLoopResult = res
            corr = None
            if table is not None:
                _score(plain_pairs, res, row)
                final, corr = correct_row(
                    final,
                    row,
                    model_of,
                    gpu_of,
                    cal,
                    exclude=row_copies,
                    method=method,
                    # the held-out fold's ensemble only for a row the calibration was fitted on
                    own_data=own["left_out"] and row_measurement_id(row) in held,
                )
            if corr is not None:
                corrected += 1
                learned_rows += corr.learned_factors is not None
                rec["correction"] = {
                    "ttft_factor": corr.ttft_factor,
                    "tpot_factor": corr.tpot_factor,
                    "throughput_factor": corr.throughput_factor,
                    "support": corr.support,
                } | ({} if corr.learned_factors is None else {"learned_factors": list(corr.learned_factors)})
            for k in METRICS:
                rec[f"predicted_{k}"] = getattr(final, k)
                rec[f"measured_{k}"] = row.measured[k]
            _score(pairs, final, row)
            kind = layout_kind(row)
            kind_rows.setdefault(kind, []).append(row)
            _score(kind_pairs.setdefault(kind, {k: [] for k in METRICS}), final, row)
            why = implausible_reason(row, model_of, gpu_of)
            if why is None:
                _score(plausible_pairs, final, row)
            else:
                rec["implausible"] = why
                implausible.append({"row": row.index, "reason": why})
            rec["limited_by"] = final.limited_by
            out_rows.append(rec)
        if progress is not None:
            progress(1)
    unsupported.sort(key=lambda u: u["row"])
    return {
        "method": method,
        "summary": {k: error_summary(v) for k, v in pairs.items()},
        "coverage": (len(out_rows) / total) if total else 0.0,
        "num_rows": total,
        # what the calibration says about itself: constants fitted under older model rules
        "calibration_notes": [n for n in (model_rules_note(cal),) if n is not None],
        "corrected_rows": corrected,
        "learned_rows": learned_rows,
        "own_rows": own,
        # the same rows scored by the step-time model alone (only when measured points were available)
        "summary_step_model": {k: error_summary(v) for k, v in plain_pairs.items()} if table is not None else None,
        "unsupported": unsupported,
        # rows whose measured latency is below a physical floor (gpuyield.core.perf.bounds): still scored
        # above; summary_plausible scores the others
        "implausible": implausible,
        "summary_plausible": {k: error_summary(v) for k, v in plausible_pairs.items()},
        # rows whose inputs repeat with other measured values: the error no model of the inputs can remove
        "repeat_floor": repeat_floor([r for r, p in zip(rows, predictions, strict=True) if not isinstance(p, str)]),
        # the same errors per layout kind (layout_kind: aggregated, disaggregated, disaggregated with its worker
        # counts unrecorded), and each kind's own repeat floor
        "summary_by_layout_kind": {
            kind: {k: error_summary(v) for k, v in kp.items()} for kind, kp in sorted(kind_pairs.items())
        },
        "repeat_floor_by_layout_kind": {kind: repeat_floor(kr) for kind, kr in sorted(kind_rows.items())},
        "rows": out_rows,
    }
