"""Calibration coefficients of the performance model, with provenance.

A :class:`Calibration` holds, per accelerator, the efficiencies measured on real kernels (fraction of the
datasheet roofline achieved by GEMMs as a function of the token count, by attention, by collectives) and,
per engine family, the fitted end-to-end constants (per-step and per-sequence overheads, scheduler limits).
The shipped one lives in ``core/perf/data/calibration.yaml``; ``gpuyield calibrate`` rebuilds it from raw
kernel tables (AIConfigurator layout or the table format ``gpuyield profile`` writes) and, optionally,
end-to-end measurements. Every number carries the source it was derived from.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from gpuyield.core.perf.corrections import MeasuredCorrections
from gpuyield.errors import CatalogError, ConfigError

__all__ = [
    "ALLREDUCE_FAMILIES",
    "KV_MEMORY_BASES",
    "MXFP4_ACTIVATION_DTYPES",
    "NCCL_OPS",
    "Calibration",
    "CollectiveTable",
    "EngineCoefficients",
    "GpuCoefficients",
    "LogCurve",
    "MODEL_RULES",
    "calibration_from_dict",
    "calibration_to_dict",
    "coefficients_fingerprint",
    "default_calibration",
    "model_rules_note",
]

SCHEMA = "gpuyield.perf.calibration/1"
# The version of the rules that give the coefficients their meaning: how the step model times each op and which
# constants a pool runs. Raise it with any change after which a calibration fitted before it predicts otherwise
# than a refit would, and list the change below. A file records the version its engine constants were fitted
# under (`model_rules`; none: 0, before versions were kept); an older one still loads, with a note to refit.
MODEL_RULES = 2
MODEL_RULES_CHANGES = {
    1: "P/D pools with worker counts decode at the family's decode_scale; NCCL's tables read in bytes; the expert "
    "exchange under attention DP as all-gather + reduce-scatter (docs/benchmarks.md, twenty-third pass)",
    2: "the engine model gives every attention-DP rank its own max_num_seqs and runs P/D rows through its P/D "
    "cluster, so stored engine-model residuals differ; the decode workers assumed for a P/D layout without counts "
    "admit every client under the family's KV admission (TensorRT-LLM reserves the whole output) "
    "(docs/benchmarks.md, twenty-fourth pass)",
}
KV_MEMORY_BASES = ("total", "free")
MXFP4_ACTIVATION_DTYPES = ("bf16", "fp8")


@dataclass(frozen=True, slots=True)
class LogCurve:
    """A piecewise-linear curve in ``log2(x)``, clamped (and flagged) outside ``[xs[0], xs[-1]]``."""

    xs: tuple[float, ...]  # ascending, > 0
    ys: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.xs) != len(self.ys) or not self.xs:
            raise ConfigError("LogCurve: xs and ys must be non-empty and of equal length")
        if any(x <= 0 for x in self.xs) or any(b <= a for a, b in zip(self.xs, self.xs[1:], strict=False)):
            raise ConfigError("LogCurve: xs must be positive and strictly ascending")

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return ys[-1]
        i = bisect.bisect_right(xs, x)
        x0, x1 = xs[i - 1], xs[i]
        w = (math.log2(x) - math.log2(x0)) / (math.log2(x1) - math.log2(x0))
        return ys[i - 1] + w * (ys[i] - ys[i - 1])

    def in_range(self, x: float) -> bool:
        return self.xs[0] <= x <= self.xs[-1]


def _const_curve(y: float) -> LogCurve:
    return LogCurve((1.0, 1e9), (y, y))


@dataclass(frozen=True, slots=True)
class CollectiveTable:
    """Measured seconds of one collective vs its message size in bytes, interpolated in log-log space.

    Below the smallest size it is the smallest size's time (a latency floor); above the largest it grows in
    proportion to the bytes (bandwidth-bound), and :meth:`in_range` says so. The seconds never decrease with the
    size (``calibrate`` takes the lower envelope of a measured table), so a step never gets faster as it grows."""

    sizes_bytes: tuple[float, ...]  # ascending, > 0
    seconds: tuple[float, ...]  # > 0, non-decreasing
    _log_x: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _log_y: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        xs, ys = self.sizes_bytes, self.seconds
        if len(xs) != len(ys) or not xs:
            raise ConfigError("CollectiveTable: sizes_bytes and seconds must be non-empty and of equal length")
        if any(not (math.isfinite(x) and x > 0) for x in xs) or any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
            raise ConfigError("CollectiveTable: sizes_bytes must be finite, positive and strictly ascending")
        if any(not (math.isfinite(y) and y > 0) for y in ys):
            raise ConfigError("CollectiveTable: seconds must be finite and positive")
        if any(b < a for a, b in zip(ys, ys[1:], strict=False)):
            raise ConfigError(
                "CollectiveTable: seconds must not decrease as the message grows (take the lower envelope of a "
                "measured table, as calibrate does)"
            )
        object.__setattr__(self, "_log_x", tuple(math.log(x) for x in xs))
        object.__setattr__(self, "_log_y", tuple(math.log(y) for y in ys))

    def __call__(self, nbytes: float) -> float:
        xs, ys = self.sizes_bytes, self.seconds
        if nbytes <= xs[0]:
            return ys[0]
        if nbytes >= xs[-1]:
            return ys[-1] * nbytes / xs[-1]
        i = bisect.bisect_right(xs, nbytes)
        lx, ly = self._log_x, self._log_y
        w = (math.log(nbytes) - lx[i - 1]) / (lx[i] - lx[i - 1])
        return math.exp(ly[i - 1] + w * (ly[i] - ly[i - 1]))

    def in_range(self, nbytes: float) -> bool:
        return nbytes <= self.sizes_bytes[-1]

    @staticmethod
    def lower_envelope(sizes_bytes: tuple[float, ...], seconds: tuple[float, ...]) -> CollectiveTable:
        """A table from measured times that may dip as the message grows (timing noise, a kernel switch): each
        size takes the least time measured at it or any larger size."""
        out = list(seconds)
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1])
        return CollectiveTable(tuple(sizes_bytes), tuple(out))

    def blend(self, other: CollectiveTable, w: float) -> CollectiveTable:
        """The table ``self^(1-w) x other^w`` (log-space interpolation between two group sizes) on the union of
        both tables' sizes, up to the smaller largest size."""
        top = min(self.sizes_bytes[-1], other.sizes_bytes[-1])
        xs = sorted({x for x in (*self.sizes_bytes, *other.sizes_bytes) if x <= top})
        ys = [math.exp((1.0 - w) * math.log(self(x)) + w * math.log(other(x))) for x in xs]
        return CollectiveTable.lower_envelope(tuple(xs), tuple(ys))


def _table_for_group(tables: dict[int, CollectiveTable] | None, num_gpus: int) -> CollectiveTable | None:
    """The table of a group of ``num_gpus`` GPUs: measured, or blended in log space between the two measured
    sizes around it; None below or above every measured size."""
    if not tables or num_gpus < 2:
        return None
    if num_gpus in tables:
        return tables[num_gpus]
    lo = max((n for n in tables if n < num_gpus), default=None)
    hi = min((n for n in tables if n > num_gpus), default=None)
    if lo is None or hi is None:
        return None
    return tables[lo].blend(tables[hi], math.log(num_gpus / lo) / math.log(hi / lo))


@dataclass(frozen=True, slots=True)
class GpuCoefficients:
    """Measured efficiencies of one accelerator (fractions of its datasheet peaks)."""

    mem_bw_eff: float = 0.80  # weight/KV streaming: achieved / datasheet HBM bandwidth
    # GEMM compute efficiency vs tokens in the GEMM (M), per compute dtype (bf16, fp8, fp4)
    gemm_eff: dict[str, LogCurve] = field(default_factory=dict)
    attn_prefill_eff: float = 0.45  # prefill (context) attention FLOPs: achieved / bf16 dense peak
    attn_decode_bw_eff: float = 0.60  # decode attention KV reads: achieved / HBM bandwidth
    allreduce_latency_s: float = 10e-6  # per all-reduce call at small sizes
    allreduce_bw_eff: float = 0.55  # bus bandwidth achieved / interconnect_gb_s at large sizes
    # The engines' own all-reduce kernels (vLLM's and SGLang's custom all-reduce in CUDA graphs, TensorRT-LLM's),
    # measured per engine family and group size: family -> GPUs in the group -> seconds vs message bytes. Where
    # a family and group size have one, a tensor-parallel all-reduce takes its time (the two fields above, fitted
    # on NCCL's tables, serve the rest).
    allreduce_tables: dict[str, dict[int, CollectiveTable]] = field(default_factory=dict)
    # NCCL's own collectives (nccl-tests through AIConfigurator's collector, 16-bit elements), per operation
    # (NCCL_OPS) and group size: op -> GPUs -> seconds vs message bytes (the whole buffer: the gathered output of
    # an all-gather, the input of a reduce-scatter). The expert token exchange under attention DP is an
    # all-gather before the experts and a reduce-scatter after them; an all-reduce without an engine table
    # takes NCCL's.
    nccl_tables: dict[str, dict[int, CollectiveTable]] = field(default_factory=dict)
    source: str = "generic defaults (no measured tables for this accelerator)"

    def allreduce_time(self, family: str, num_gpus: int) -> CollectiveTable | None:
        """Seconds vs bytes of one all-reduce over ``num_gpus`` GPUs in ``family``'s own kernel (``family`` may
        carry a deployment mode, ``trtllm:disagg``): the measured group size's table, or the log-space blend of
        the two measured sizes around ``num_gpus``; None where ``num_gpus`` is below or above every measured size
        or the family has no table (the NCCL fit then applies)."""
        return _table_for_group(self.allreduce_tables.get(family.split(":", 1)[0].strip().lower()), num_gpus)

    def nccl_time(self, op: str, num_gpus: int) -> CollectiveTable | None:
        """Seconds vs bytes of NCCL's ``op`` (one of NCCL_OPS) over ``num_gpus`` GPUs: the measured group size's
        table or the log-space blend of the two around it; None outside the measured sizes."""
        return _table_for_group(self.nccl_tables.get(op), num_gpus)

    def gemm_curve(self, dtype: str) -> LogCurve:
        if dtype in self.gemm_eff:
            return self.gemm_eff[dtype]
        for alt in ("fp8", "bf16"):
            if alt in self.gemm_eff:
                return self.gemm_eff[alt]
        return LogCurve((1.0, 64.0, 512.0, 4096.0), (0.01, 0.35, 0.65, 0.70))


@dataclass(frozen=True, slots=True)
class EngineCoefficients:
    """Per-engine-family constants: scheduler defaults and fitted overheads."""

    step_overhead_s: float = 2.0e-3  # fixed per forward step (scheduling, launch, sampling setup)
    per_seq_overhead_s: float = 10e-6  # per sequence in the batch (sampling, detokenise, bookkeeping)
    per_layer_overhead_s: float = 10e-6  # per decoder layer per step (launch gaps not hidden by graphs)
    moe_layer_overhead_s: float = 1e-6  # per MoE layer per step on top (routing, permute/unpermute kernels)
    # The scheduler limits the measurements ran with, when a calibration pins them; None (the shipped file): the
    # engine family's defaults on the GPU (sim/data/engine_families.yaml; core.sim.engine.scheduler_defaults)
    max_num_batched_tokens: int | None = None  # token budget per step (chunked prefill)
    max_num_seqs: int | None = None
    block_size_tokens: int = 16
    runtime_reserve_gb: float = 4.0  # activations, CUDA graphs, NCCL buffers, allocator slack per GPU
    # What ``gpu_memory_utilization`` is a fraction of when sizing the KV cache: "total" (vLLM's
    # --gpu-memory-utilization: KV = f x capacity - weights - reserve) or "free" (TensorRT-LLM's
    # KvCacheConfig.free_gpu_memory_fraction, and SGLang, which sizes its static pool from the memory left
    # after weights and a reserve: KV = f x (capacity - weights - reserve)).
    kv_memory_basis: str = "total"
    # What an MXFP4 checkpoint's routed experts (gpt-oss) multiply their activations in on GPUs with FP4 tensor
    # cores: "bf16" (weight-only W4A16, vLLM's and SGLang's default MXFP4 MoE kernels) or "fp8" (TensorRT-LLM's
    # W4A8 MXFP4 x MXFP8 on Blackwell). GPUs without FP4 tensor cores dequantise to bf16 in every engine.
    mxfp4_activation_dtype: str = "bf16"
    ttft_sync_weight: float = 0.5  # share of the synchronized-start prefill queue the mean TTFT sees
    ttft_per_seq_s: float = 1e-5  # extra first-token latency per other running stream (frontend/detokeniser
    # work on every active stream's outputs delays a new request's admission and first token)
    ttft_overhead_s: float = 0.02  # fixed first-token latency outside the forward steps (API server,
    # tokenisation, scheduling of a new request, first detokenise/stream flush)
    ttft_per_layer_s: float = 0.0  # first-token latency per decoder layer on top: prefill runs eagerly (no CUDA
    # graphs) in the engines, so a prompt's fixed cost grows with the model's depth; what `calibrate` fits
    # (it moves ttft_overhead_s into this term when it starts from a calibration without it)
    prefill_scale: float = 1.0  # fitted multiplier on prefill-token work
    decode_scale: float = 1.0  # fitted multiplier on every op's device time (kernel efficiency vs tables)
    decode_attn_scale: float = (
        1.0  # fitted multiplier on decode attention (KV reads grow with batch x context)
    )
    # seconds a tensor-parallel all-reduce takes in a real step on top of its kernel's measured time: the
    # microbenchmarks time back-to-back calls on ranks already in step; in a forward step every rank waits for
    # the slowest one to arrive (fitted; 0 in a file written before the term)
    allreduce_overhead_s: float = 0.0
    source: str = "generic defaults"

    def first_token_overhead_s(self, num_layers: float) -> float:
        """A request's fixed first-token latency outside its share of the forward steps, for a model of
        ``num_layers`` decoder layers."""
        return self.ttft_overhead_s + self.ttft_per_layer_s * num_layers


@dataclass(frozen=True, slots=True)
class Calibration:
    """All coefficients, keyed by accelerator id and engine family."""

    gpus: dict[str, GpuCoefficients] = field(default_factory=dict)
    engines: dict[str, EngineCoefficients] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    # Extra accelerators described by the calibration itself (e.g. ``cpu`` from ``gpuyield profile``):
    # id -> {memory_gb, memory_bandwidth_tb_s, bf16_dense_tflops, ...}
    devices: dict[str, dict[str, float]] = field(default_factory=dict)
    # Residuals of measured deployments (``gpuyield calibrate --measurements``); see core/perf/corrections.py
    corrections: MeasuredCorrections | None = None
    # the MODEL_RULES version the engine constants were fitted under
    model_rules: int = MODEL_RULES

    def gpu(self, gpu_id: str) -> GpuCoefficients:
        key = _norm(gpu_id)
        for k, v in self.gpus.items():
            if _norm(k) == key:
                return v
        return self.gpus.get("generic", GpuCoefficients())

    def has_gpu(self, gpu_id: str) -> bool:
        key = _norm(gpu_id)
        return any(_norm(k) == key for k in self.gpus)

    def engine_for(self, name: str, gpu_id: str, precision: str) -> EngineCoefficients:
        """Most specific constants first: ``engine[:mode]/gpu/precision``, ``engine[:mode]/precision``,
        ``engine[:mode]``, then the same without the mode. ``name`` may carry a deployment mode after a
        colon (``trtllm:disagg``): disaggregated pools run with different engine settings."""
        e = name.strip().lower()
        fam = e.split(":", 1)[0]
        g, p = _norm(gpu_id), precision.lower()
        for base in dict.fromkeys((e, fam)):
            for key in (f"{base}/{g}/{p}", f"{base}/{p}", base):
                if key in self.engines:
                    return self.engines[key]
        return self.engine(fam)

    def accelerator(self, catalog: Any, gpu_id: str) -> Any:
        """The catalogue accelerator ``gpu_id``, or one described only by this calibration's ``devices``
        (e.g. ``cpu`` from ``gpuyield profile``); the catalogue's error when neither knows it."""
        try:
            return catalog.gpu(gpu_id)
        except CatalogError:
            spec = self.devices.get(gpu_id)
            if spec is None:
                raise
            return device_accelerator(gpu_id, spec)

    def engine(self, name: str) -> EngineCoefficients:
        key = name.strip().lower()
        if key in self.engines:
            return self.engines[key]
        if "generic" in self.engines:
            return self.engines["generic"]
        return EngineCoefficients()


def device_accelerator(device_id: str, spec: dict[str, float]) -> Any:
    """An :class:`~gpuyield.core.catalog.Accelerator` for a device described only by a calibration."""
    import datetime as _dt

    from gpuyield.core.catalog import Accelerator

    return Accelerator(
        id=device_id,
        name=device_id,
        vendor="unknown",
        form_factor="measured",
        memory_gb=spec.get("memory_gb", 0.0) or 1.0,
        memory_bytes=None,
        memory_bandwidth_tb_s=spec["memory_bandwidth_tb_s"],
        bf16_dense_tflops=spec["bf16_dense_tflops"],
        fp8_dense_tflops=spec.get("fp8_dense_tflops") or None,
        fp4_dense_tflops=spec.get("fp4_dense_tflops") or None,
        int8_dense_tops=None,
        tdp_w=None,
        interconnect_kind="measured",
        interconnect_gb_s=spec.get("interconnect_gb_s") or 32.0,
        inter_node_gb_s=spec.get("inter_node_gb_s") or None,
        gpus_per_node=int(spec.get("gpus_per_node", 8) or 8),
        source="gpuyield calibration devices entry (system YAML of the kernel tables)",
        as_of=_dt.date(2026, 1, 1),
    )


def _norm(s: str) -> str:
    return s.strip().lower().replace("-", "_")


# --------------------------------------------------------------------------- (de)serialisation
ALLREDUCE_FAMILIES = ("sglang", "trtllm", "vllm")  # engine families a GPU's allreduce_tables may list
NCCL_OPS = ("all_gather", "all_reduce", "reduce_scatter")  # the NCCL collectives a GPU's nccl_tables may list


def _collective_tables_from(
    obj: Any, where: str, keys: tuple[str, ...] = ALLREDUCE_FAMILIES, what: str = "engine family"
) -> dict[str, dict[int, CollectiveTable]]:
    """``{key: {num_gpus: {bytes: [...], seconds: [...]}}}`` -> tables, every entry checked (``keys``: the
    engine families of ``allreduce_tables`` or the NCCL operations of ``nccl_tables``)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping of {what} -> group size -> {{bytes, seconds}}")
    out: dict[str, dict[int, CollectiveTable]] = {}
    for fam, by_n in obj.items():
        family = str(fam).strip().lower()
        if family not in keys:
            raise ConfigError(f"{where}.{fam}: expected an {what}, one of {', '.join(keys)}")
        if family in out:
            raise ConfigError(f"{where}.{fam}: {family} is listed twice")
        if not isinstance(by_n, dict):
            raise ConfigError(f"{where}.{fam}: expected a mapping of group size -> {{bytes, seconds}}")
        tables: dict[int, CollectiveTable] = {}
        for n, t in by_n.items():
            w = f"{where}.{fam}.{n}"
            text = str(n).strip()
            if not text.isdigit():
                raise ConfigError(f"{w}: the group size must be a whole number of GPUs")
            num = int(text)
            if num < 2:
                raise ConfigError(f"{w}: the group size must be at least 2")
            if num in tables:
                raise ConfigError(f"{w}: group size {num} is listed twice")
            if not isinstance(t, dict) or "bytes" not in t or "seconds" not in t:
                raise ConfigError(f"{w}: expected {{bytes: [...], seconds: [...]}}")
            try:
                tables[num] = CollectiveTable(
                    tuple(float(x) for x in t["bytes"]), tuple(float(y) for y in t["seconds"])
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{w}: {exc}") from None
        out[family] = tables
    return out


def _curve_from(obj: Any, where: str) -> LogCurve:
    if isinstance(obj, (int, float)):
        return _const_curve(float(obj))
    if not isinstance(obj, dict) or "tokens" not in obj or "eff" not in obj:
        raise ConfigError(f"{where}: expected a number or {{tokens: [...], eff: [...]}}")
    return LogCurve(tuple(float(x) for x in obj["tokens"]), tuple(float(y) for y in obj["eff"]))


# terms that may be exactly zero (the fit uses one first-token term or the other; an all-reduce overhead of 0 is
# the kernel tables' own time); every other float is > 0
ZERO_ALLOWED_ENGINE_FIELDS = frozenset({"ttft_overhead_s", "ttft_per_layer_s", "allreduce_overhead_s"})
# engine fields a calibration may leave out (or null): the engine family's defaults on the GPU then apply
PINNED_LIMIT_FIELDS = frozenset({"max_num_seqs", "max_num_batched_tokens"})


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def _check_fraction(value: Any, where: str, hi: float = 1.5) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not 0.0 < v <= hi:
        raise ConfigError(f"{where}: expected a value in (0, {hi}], got {v}")
    return v


def calibration_from_dict(data: dict[str, Any], where: str = "calibration") -> Calibration:
    """Build a :class:`Calibration` from its YAML/JSON form, validating every field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise ConfigError(f"{where}: schema '{schema}' is not supported; expected '{SCHEMA}'")
    rules = data.get("model_rules", 0)
    if isinstance(rules, bool) or not isinstance(rules, int) or rules < 0:
        raise ConfigError(f"{where}: model_rules: expected a non-negative integer, got {rules!r}")
    if rules > MODEL_RULES:
        raise ConfigError(
            f"{where}: model_rules {rules} is newer than this gpuyield's ({MODEL_RULES}): the file was written by a "
            "newer version, whose step model gives its coefficients another meaning; upgrade gpuyield"
        )
    gpus: dict[str, GpuCoefficients] = {}
    base = GpuCoefficients()
    for gid, g in (data.get("gpus") or {}).items():
        w = f"{where}: gpus.{gid}"
        if not isinstance(g, dict):
            raise ConfigError(f"{w}: expected a mapping")
        unknown = set(g) - set(GpuCoefficients.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{w}: unknown field(s) {sorted(unknown)}")
        curves = {str(k): _curve_from(v, f"{w}.gemm_eff.{k}") for k, v in (g.get("gemm_eff") or {}).items()}
        gpus[str(gid)] = GpuCoefficients(
            mem_bw_eff=_check_fraction(g.get("mem_bw_eff", base.mem_bw_eff), f"{w}.mem_bw_eff"),
            gemm_eff=curves,
            attn_prefill_eff=_check_fraction(
                g.get("attn_prefill_eff", base.attn_prefill_eff), f"{w}.attn_prefill_eff"
            ),
            attn_decode_bw_eff=_check_fraction(
                g.get("attn_decode_bw_eff", base.attn_decode_bw_eff), f"{w}.attn_decode_bw_eff"
            ),
            allreduce_latency_s=_check_fraction(
                g.get("allreduce_latency_s", base.allreduce_latency_s), f"{w}.allreduce_latency_s", 1.0
            ),
            allreduce_bw_eff=_check_fraction(
                g.get("allreduce_bw_eff", base.allreduce_bw_eff), f"{w}.allreduce_bw_eff"
            ),
            allreduce_tables=_collective_tables_from(g.get("allreduce_tables"), f"{w}.allreduce_tables"),
            nccl_tables=_collective_tables_from(
                g.get("nccl_tables"), f"{w}.nccl_tables", NCCL_OPS, "NCCL operation"
            ),
            source=str(g.get("source", base.source)),
        )
    engines: dict[str, EngineCoefficients] = {}
    ebase = EngineCoefficients()
    for name, e in (data.get("engines") or {}).items():
        w = f"{where}: engines.{name}"
        if not isinstance(e, dict):
            raise ConfigError(f"{w}: expected a mapping")
        unknown = set(e) - set(EngineCoefficients.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{w}: unknown field(s) {sorted(unknown)}")
        kw: dict[str, Any] = {}
        for fname in EngineCoefficients.__dataclass_fields__:
            if fname not in e:
                continue
            default = getattr(ebase, fname)
            if fname in PINNED_LIMIT_FIELDS and e[fname] is None:
                continue  # null: the family's defaults on the GPU, as when the key is absent
            if isinstance(default, str):
                kw[fname] = str(e[fname])
                if fname == "kv_memory_basis" and kw[fname] not in KV_MEMORY_BASES:
                    raise ConfigError(
                        f"{w}.{fname}: expected one of {', '.join(KV_MEMORY_BASES)}, got {kw[fname]!r}"
                    )
                if fname == "mxfp4_activation_dtype" and kw[fname] not in MXFP4_ACTIVATION_DTYPES:
                    raise ConfigError(
                        f"{w}.{fname}: expected one of {', '.join(MXFP4_ACTIVATION_DTYPES)}, got {kw[fname]!r}"
                    )
            elif isinstance(default, int) or fname in PINNED_LIMIT_FIELDS:
                try:
                    kw[fname] = int(e[fname])
                except (TypeError, ValueError):
                    raise ConfigError(f"{w}.{fname}: expected an integer, got {e[fname]!r}") from None
                if kw[fname] <= 0:
                    raise ConfigError(f"{w}.{fname}: expected a positive integer, got {kw[fname]}")
            elif fname in ZERO_ALLOWED_ENGINE_FIELDS and _is_zero(e[fname]):
                kw[fname] = 0.0
            else:
                kw[fname] = _check_fraction(e[fname], f"{w}.{fname}", hi=1e3)
        pins = [f for f in sorted(PINNED_LIMIT_FIELDS) if f in kw]
        if len(pins) == 1:
            other = next(iter(PINNED_LIMIT_FIELDS - {pins[0]}))
            raise ConfigError(
                f"{w}: {pins[0]} is pinned without {other}: pin both (the limits the measurements ran with) or "
                "neither (the engine family's defaults on each GPU, sim/data/engine_families.yaml)"
            )
        if kw.get("max_num_batched_tokens", math.inf) < kw.get("max_num_seqs", 0):
            raise ConfigError(
                f"{w}: max_num_batched_tokens ({kw['max_num_batched_tokens']}) is below max_num_seqs "
                f"({kw['max_num_seqs']}): every running sequence decodes a token in each step, so the budget must "
                "hold the limit"
            )
        engines[str(name).lower()] = EngineCoefficients(**kw)
    devices: dict[str, dict[str, float]] = {}
    for did, d in (data.get("devices") or {}).items():
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: devices.{did}: expected a mapping")
        devices[str(did)] = {str(k): float(v) for k, v in d.items() if isinstance(v, (int, float))}
    corrections = None
    if data.get("corrections") is not None:
        corrections = MeasuredCorrections.from_dict(data["corrections"], f"{where}: corrections")
    cal = Calibration(
        gpus=gpus,
        engines=engines,
        sources=tuple(str(s) for s in data.get("sources") or ()),
        devices=devices,
        model_rules=rules,
    )
    if corrections is not None:
        have = coefficients_fingerprint(cal)
        if corrections.coefficients and corrections.coefficients != have:
            raise ConfigError(
                f"{where}: corrections were measured under other coefficients (fingerprint "
                f"{corrections.coefficients}, this file's {have}): they are stale. Rebuild them (gpuyield calibrate "
                "--measurements CSV, or scripts/refresh_shipped_corrections.py for the shipped file) or delete the "
                "corrections section"
            )
        cal = dataclasses.replace(cal, corrections=corrections)
    return cal


def model_rules_note(cal: Calibration) -> str | None:
    """A note when ``cal``'s engine constants were fitted under older model rules than this build's (None:
    current)."""
    if cal.model_rules >= MODEL_RULES:
        return None
    since = "; ".join(MODEL_RULES_CHANGES[v] for v in range(cal.model_rules + 1, MODEL_RULES + 1))
    return (
        f"this calibration's engine constants were fitted under the model's rules v{cal.model_rules} (this "
        f"gpuyield: v{MODEL_RULES}; since: {since}); predictions may be off until they are refitted: gpuyield "
        "calibrate --base FILE --measurements CSV"
    )


def coefficients_fingerprint(cal: Calibration) -> str:
    """A short hash of everything a prediction depends on in ``cal`` (GPU, engine and device coefficients, and the
    engine families' scheduler-limit defaults where an engine leaves its limits unpinned; not the sources or the
    corrections), to tell whether stored residuals still belong to it."""
    import hashlib
    import json

    d = calibration_to_dict(dataclasses.replace(cal, corrections=None))
    body = {k: d.get(k) for k in ("gpus", "engines", "devices")}
    for e in (body["engines"] or {}).values():
        e.pop("source", None)
        if not e.get("ttft_per_layer_s"):  # a file written before the term existed keeps its fingerprint
            e.pop("ttft_per_layer_s", None)
        if e.get("mxfp4_activation_dtype") == "bf16":  # likewise a file written before this setting
            e.pop("mxfp4_activation_dtype", None)
        if not e.get("allreduce_overhead_s"):  # and before the all-reduce overhead
            e.pop("allreduce_overhead_s", None)
    for g in (body["gpus"] or {}).values():
        g.pop("source", None)
    from gpuyield.core.sim.engine.config import ENGINE_FAMILIES, scheduler_limit_rules

    if any(e.max_num_seqs is None for e in cal.engines.values()) or any(
        cal.engine(f).max_num_seqs is None for f in ENGINE_FAMILIES  # a family without an entry: the defaults
    ):
        # unpinned limits come from the engine families' defaults on each GPU: residuals belong to those too (a
        # file that pins every limit, as `calibrate` wrote them before, keeps its fingerprint)
        body["scheduler_limits"] = scheduler_limit_rules()
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def _size(x: float) -> float | int:
    """A message size as written: whole bytes exactly (rounding could merge two close sizes)."""
    return int(x) if float(x).is_integer() else x


def calibration_to_dict(cal: Calibration) -> dict[str, Any]:
    """The YAML/JSON form of a calibration (inverse of :func:`calibration_from_dict`)."""
    gpus: dict[str, Any] = {}
    for gid, g in sorted(cal.gpus.items()):
        gpus[gid] = {
            "mem_bw_eff": _r(g.mem_bw_eff),
            "gemm_eff": {
                k: {"tokens": [_r(x) for x in c.xs], "eff": [_r(y) for y in c.ys]}
                for k, c in sorted(g.gemm_eff.items())
            },
            "attn_prefill_eff": _r(g.attn_prefill_eff),
            "attn_decode_bw_eff": _r(g.attn_decode_bw_eff),
            "allreduce_latency_s": _r(g.allreduce_latency_s),
            "allreduce_bw_eff": _r(g.allreduce_bw_eff),
            "source": g.source,
        }
        # a file without measured collectives is written (and fingerprinted) as before
        for key, tables in (("allreduce_tables", g.allreduce_tables), ("nccl_tables", g.nccl_tables)):
            if tables:
                gpus[gid][key] = {
                    fam: {  # group sizes as strings: the same keys in YAML and JSON
                        str(n): {"bytes": [_size(x) for x in t.sizes_bytes], "seconds": [_r(y) for y in t.seconds]}
                        for n, t in sorted(by_n.items())
                    }
                    for fam, by_n in sorted(tables.items())
                }
    engines: dict[str, Any] = {}
    for name, e in sorted(cal.engines.items()):
        engines[name] = {
            f: (_r(getattr(e, f)) if isinstance(getattr(e, f), float) else getattr(e, f))
            for f in EngineCoefficients.__dataclass_fields__
            if not (f in PINNED_LIMIT_FIELDS and getattr(e, f) is None)  # unpinned: the family's defaults
        }
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "model_rules": cal.model_rules,
        "sources": list(cal.sources),
        "gpus": gpus,
        "engines": engines,
    }
    if cal.devices:
        out["devices"] = {k: dict(sorted(v.items())) for k, v in sorted(cal.devices.items())}
    if cal.corrections is not None:
        out["corrections"] = cal.corrections.to_dict()
    return out


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    """The calibration shipped with the package (``core/perf/data/calibration.yaml``)."""
    try:
        text = resources.files("gpuyield.core.perf").joinpath("data/calibration.yaml").read_text()
    except FileNotFoundError:  # pragma: no cover - packaging error
        return Calibration()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the measured-points table is large
    return calibration_from_dict(yaml.load(text, Loader=loader) or {}, "gpuyield/core/perf/data/calibration.yaml")
