"""Step time and memory of one engine replica: roofline per op × measured efficiencies + fitted overheads.

One *replica* is ``tp * pp * attention_dp`` GPUs. Per pipeline stage, attention and dense MLPs are split
``tp`` ways and replicated over ``attention_dp`` ranks (each rank runs its share of the sequences); routed
experts are spread over the ``tp * attention_dp`` GPUs of the stage, ``ep`` ways expert-parallel and
``tp * attention_dp / ep`` ways tensor-parallel inside each expert. Attention DP places whole requests on
ranks and a step lasts as long as its busiest rank: decodes spread evenly, but a prompt's prefill chunk runs on
its own rank (``step_time_s(..., prefill_seqs=...)``, the prompts' count or chunk sizes: see
:func:`busiest_rank_share`; None spreads the tokens evenly, a full replica's prefill throughput), and the
collectives pad to that rank.

Each op is timed as ``max(FLOPs / (peak × eff_compute(M)), bytes / (bandwidth × eff_memory))`` where the
efficiencies come from measured kernel tables (see :mod:`gpuyield.core.perf.calibration`) and ``M`` is the
number of tokens the GEMM sees. Collectives are ``latency + bytes / (link bandwidth × eff)``. A fixed
per-step, per-layer and per-sequence overhead (scheduler, launch gaps, sampling) is added.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuyield.core.catalog.model import WEIGHT_PRECISIONS
from gpuyield.core.perf.calibration import (
    Calibration,
    CollectiveTable,
    EngineCoefficients,
    GpuCoefficients,
    LogCurve,
    model_rules_note,
)
from gpuyield.core.perf.measured_steps import MeasuredStepScales
from gpuyield.core.perf.speculative import SpeculativeDecoding
from gpuyield.errors import ConfigError

_SPEC_NOTE = "speculative decoding:"  # how SpeculativeDecoding.describe() starts
_MEASURED_NOTE = "step times adjusted to "  # how MeasuredStepScales.describe() starts

__all__ = [
    "MemoryPlan",
    "PerfModel",
    "StepBreakdown",
    "compute_dtype_for",
    "matrix_compute_dtype",
    "normalise_engine",
    "normalise_precision",
    "OPS",
    "POOL_ROLES",
]

OPS = ("gemm", "moe", "attn_prefill", "attn_decode", "comm_tp", "comm_ep", "lm_head", "overhead")

# prompts a step's prefill tokens belong to: a count of equal chunks, or each chunk's tokens (None: spread evenly)
PrefillSeqs = int | Sequence[int] | None


def busiest_rank_share(prefill_seqs: int | Sequence[int], ranks: int) -> float:
    """The share of a step's prefill tokens on its busiest attention-DP rank: whole prompts go to ranks, each
    to the least loaded (largest first), so ``k`` equal chunks put ``ceil(k / ranks)`` on one rank and a large
    chunk beside small ones loads its rank with all of its tokens. The prompts' attention work is taken to
    split in the same proportion."""
    if ranks <= 1:
        return 1.0
    if isinstance(prefill_seqs, int):
        k = max(1, prefill_seqs)
        return math.ceil(k / ranks) / k
    chunks = sorted((max(0, int(n)) for n in prefill_seqs), reverse=True)
    total = sum(chunks)
    if total <= 0:
        return 1.0 / ranks
    loads = [0] * ranks
    for n in chunks:
        i = loads.index(min(loads))
        loads[i] += n
    return max(loads) / total


_GB = 1e9
_GIB = 1024.0**3

# weight precisions a deployment may run at (bytes per weight: ModelSpec.bytes_per_weight_of); fp32 is a catalogue
# size only, no engine serves it
_WEIGHT_PRECISIONS = tuple(p for p in WEIGHT_PRECISIONS if p != "fp32")
_KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "auto": 2.0, "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0, "fp4": 0.5}
ENGINES = ("vllm", "sglang", "trtllm")
# what a serving pool does: "mixed" (an aggregated replica: prefill and decode), or one side of a P/D deployment
POOL_ROLES = ("mixed", "prefill", "decode")
# Other spellings of weight precisions found in checkpoint names, engine flags and benchmark tables. W4A8
# (int4 weights, fp8 activations) has no entry: no precision above has both, so it is refused, not guessed.
_PRECISION_ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "w4a16": "int4",
    "awq": "int4",
    "gptq": "int4",
    "int4_awq": "int4",
    "int4_gptq": "int4",
    "w4a16_awq": "int4",
    "w4a16_gptq": "int4",
    "int4_weight_only": "int4",
    "fp8_block": "fp8",
    "fp8_blockwise": "fp8",
    "fp8_e4m3": "fp8",
    "fp8_dynamic": "fp8",
    "fp8_static": "fp8",
    "fp8_per_tensor": "fp8",
    "w8a8_fp8": "fp8",
    "w8a8": "int8",
    "w8a8_int8": "int8",
    "int8_sq": "int8",
    "w4a4_nvfp4": "nvfp4",
    "w4a16_mxfp4": "mxfp4",
}
# TensorRT-LLM's other names; a version or build suffix ("vllm-0.11", "sglang 0.5.3", "trtllm==1.1") is dropped
_ENGINE_ALIASES = {"tensorrt_llm": "trtllm", "tensorrtllm": "trtllm", "trt_llm": "trtllm"}


def normalise_precision(text: str) -> str:
    """Canonical weight-precision name: ``FP8-Block`` → ``fp8``, ``W4A16``/``AWQ`` → ``int4``, ...; unknown
    names are returned lower-cased (the caller rejects them)."""
    key = "_".join(text.strip().lower().replace("-", " ").split())
    return _PRECISION_ALIASES.get(key, key)


def normalise_engine(text: str) -> str:
    """Canonical engine family (``vllm``, ``sglang``, ``trtllm``), keeping a ``:mode`` suffix
    (``trtllm:disagg``); ``TensorRT-LLM``, ``trt-llm`` and version suffixes are accepted."""
    name, sep, mode = text.strip().lower().partition(":")
    name = "_".join(name.replace("-", " ").split())
    for alias, family in (*_ENGINE_ALIASES.items(), *((e, e) for e in ENGINES)):
        if name == alias or (name.startswith(alias) and not name[len(alias)].isalpha()):
            return family + sep + mode
        if name.startswith(alias + "_v") and name[len(alias) + 2 : len(alias) + 3].isdigit():
            return family + sep + mode
    return name + sep + mode


def compute_dtype_for(weight_precision: str, gpu: Any) -> str:
    """The tensor-core dtype a GEMM on weights held at ``weight_precision`` runs in: fp8 (and int8) → fp8 where
    the GPU has it; a 4-bit float → fp4 where the GPU has FP4 tensor cores, else the weights are dequantised to
    bf16 (weight-only, as AIConfigurator 0.12.0 models NVFP4 off Blackwell: ``nvfp4_wo``); int4 is weight-only
    (bf16); 16-bit weights run bf16. For an MXFP4 checkpoint's experts see :func:`matrix_compute_dtype`."""
    p = weight_precision.lower()
    if p in ("fp4", "nvfp4", "mxfp4"):
        return "fp4" if _peak(gpu, "fp4") > 0 else "bf16"
    if p in ("fp8", "int8"):
        return "fp8" if _peak(gpu, "fp8") > 0 else "bf16"
    return "bf16"


def matrix_compute_dtype(stored: str, gpu: Any, *, mxfp4: bool = False, mxfp4_activation: str = "bf16") -> str:
    """The tensor-core dtype of one matrix's GEMM, from the dtype it is held in (``ModelSpec.weight_dtype_of``).

    A matrix held in MXFP4 (``mxfp4``: the routed experts of an MXFP4 checkpoint such as gpt-oss, Kimi-K3 or
    DeepSeek-V4, or any matrix deployed at ``mxfp4``) is a weight-only format: on GPUs with
    FP4 tensor cores it multiplies activations in the engine's ``mxfp4_activation_dtype`` (bf16: vLLM's and
    SGLang's W4A16 kernels; fp8: TensorRT-LLM's W4A8 MXFP4 x MXFP8 on Blackwell), elsewhere in bf16
    (AIConfigurator 0.12.0: ``w4a16_mxfp4``, "native data format for gpt oss"). Any other matrix:
    :func:`compute_dtype_for`."""
    if mxfp4:
        if _peak(gpu, "fp4") > 0 and mxfp4_activation == "fp8" and _peak(gpu, "fp8") > 0:
            return "fp8"
        return "bf16"
    return compute_dtype_for(stored, gpu)


def _peak(gpu: Any, dtype: str) -> float:
    """Dense peak in FLOP/s for ``dtype`` (0 when the accelerator has none)."""
    v = getattr(gpu, f"{dtype}_dense_tflops", None)
    return float(v) * 1e12 if v else 0.0


@dataclass(frozen=True, slots=True)
class StepBreakdown:
    """Seconds per op of one step; ``sum(ops.values()) == total_s`` (within float rounding)."""

    total_s: float
    ops: dict[str, float]  # op name (see OPS) -> seconds
    out_of_range: tuple[str, ...] = ()  # lookups outside measured ranges (value clamped to the edge)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Memory of one replica, per GPU unless stated. ``fits`` False comes with the reason."""

    num_gpus: int  # GPUs in the replica (tp * pp * attention_dp)
    gpu_memory_gb: float  # capacity per GPU as the device reports it (1e9 bytes)
    gpu_memory_utilization: float  # fraction the engine may use
    weights_gb: float  # weights resident per GPU
    runtime_reserve_gb: float  # activations, CUDA graphs, NCCL buffers per GPU
    kv_gb: float  # left for the KV cache per GPU (may be negative when it does not fit)
    kv_bytes_per_token: float  # per GPU, per token of context (growing layers only)
    kv_bytes_fixed_per_seq: float  # per GPU, per sequence (sliding windows, linear-attention state)
    kv_capacity_tokens: int  # whole replica (all attention-DP ranks)
    kv_capacity_blocks: int
    block_size_tokens: int
    max_model_len: int
    fits: bool
    reason: str
    attention_dp: int = 1
    # of kv_bytes_fixed_per_seq, the sliding-window layers' part at a full window of ``sliding_window_tokens``
    # (a sequence holds min(its length, window) of it; the rest is linear-attention state, held whole)
    kv_bytes_window_per_seq: float = 0.0
    sliding_window_tokens: int = 0
    # vLLM with linear-attention layers allocates the growing cache in blocks of this many tokens (raised so that a
    # page holds a layer's state; PerfModel._vllm_hybrid_pages): a sequence holds its length rounded up to them.
    # 0: the engine's small blocks (``block_size_tokens``)
    hybrid_block_tokens: int = 0

    @property
    def fixed_tokens_per_seq(self) -> float:
        """The bounded cache one sequence holds (sliding windows, linear-attention state) in tokens of the
        growing layers' cache: what the engine model and the planner add to each sequence's context (0 when no
        layer's cache grows, i.e. every layer is bounded)."""
        if self.kv_bytes_fixed_per_seq <= 0 or self.kv_bytes_per_token <= 0:
            return 0.0
        return self.kv_bytes_fixed_per_seq / self.kv_bytes_per_token

    def fixed_blocks_per_seq(self, block_size: int | None = None) -> int:
        """:attr:`fixed_tokens_per_seq` in whole blocks of ``block_size`` tokens (default: this plan's)."""
        return math.ceil(self.fixed_tokens_per_seq / (block_size or self.block_size_tokens))

    def fixed_tokens_for(self, length_tokens: int) -> float:
        """The bounded cache a sequence of ``length_tokens`` tokens holds, in tokens of the growing cache: its
        sliding windows filled to min(length, window), plus the linear-attention state whole; with
        ``hybrid_block_tokens``, also the rest of its last block."""
        if self.kv_bytes_per_token <= 0 or self.kv_bytes_fixed_per_seq <= 0:
            return 0.0
        window = self.kv_bytes_window_per_seq
        if window > 0 and self.sliding_window_tokens > 0:
            window *= min(1.0, max(0, length_tokens) / self.sliding_window_tokens)
        linear = self.kv_bytes_fixed_per_seq - self.kv_bytes_window_per_seq
        round_up = 0.0
        if self.hybrid_block_tokens > 0 and length_tokens > 0:
            round_up = float(-length_tokens % self.hybrid_block_tokens)
        return (window + linear) / self.kv_bytes_per_token + round_up

    def fixed_blocks_for(self, length_tokens: int, block_size: int | None = None) -> int:
        """:meth:`fixed_tokens_for` in whole blocks (what the engine model holds for one sequence)."""
        return math.ceil(self.fixed_tokens_for(length_tokens) / (block_size or self.block_size_tokens))

    def max_concurrent_seqs(self, context_tokens: int, bounded_tokens: int | None = None) -> int:
        """Sequences of ``context_tokens`` tokens the replica's KV cache holds at once, each with its bounded cache
        (windows filled to min(``bounded_tokens``, window), default ``context_tokens``; linear state whole)."""
        if not self.fits or context_tokens <= 0:
            return 0
        block = self.hybrid_block_tokens or self.block_size_tokens
        blocks_per_seq = math.ceil(context_tokens / block)
        fixed = self.kv_bytes_fixed_per_seq
        filled = context_tokens if bounded_tokens is None else bounded_tokens
        if self.kv_bytes_window_per_seq > 0 and self.sliding_window_tokens > 0:  # windows filled that far
            fixed -= self.kv_bytes_window_per_seq * (1.0 - min(1.0, filled / self.sliding_window_tokens))
        per_seq = blocks_per_seq * block * self.kv_bytes_per_token + fixed
        if per_seq <= 0:
            return 1 << 30
        per_rank = int(self.kv_gb * _GB // per_seq)
        return max(0, per_rank * self.attention_dp)


@dataclass(slots=True)
class _Coeffs:
    """Precomputed per-step constants (per GPU of one pipeline stage, times pp)."""

    tp: int
    pp: int
    adp: int
    ep: int
    moe_tp: int
    peak_attn: float
    bw: float
    mem_eff: float
    # dense linear (attention projections, dense MLP, shared experts, router): (FLOPs per token, peak FLOP/s,
    # efficiency curve) per compute dtype (a 4-bit release keeps some matrices 16-bit: they run bf16 GEMMs)
    dense_groups: tuple[tuple[float, float, LogCurve], ...]
    dense_bytes: float
    # routed experts
    num_experts: int
    experts_per_tok: int
    peak_e: float
    expert_curve: LogCurve
    expert_flops_per_assign: float  # per token-expert assignment, per GPU (all MoE layers)
    expert_bytes_per_expert: float  # weights of one expert on one GPU (all MoE layers)
    experts_local: float
    # attention
    attn_prefill_flops_per_sq: float  # per unit of prefill_attn_tokens_sq, per GPU
    sliding_prefill_flops_per_tok: float
    linear_attn_flops_per_tok: float
    attn_prefill_eff: float
    attn_decode_s_per_seq: float  # bounded layers (sliding windows, linear state) per decode sequence
    attn_decode_flops_s_per_seq: float  # compute of the entries every decode query reads whatever its context
    # per decode context token, per GPU: the KV read and the compute of one query (the step takes the larger;
    # speculative verification runs K + 1 queries over one read of the KV)
    attn_decode_bytes_s_per_ctx: float
    attn_decode_flops_s_per_ctx: float
    # LM head
    lm_flops_per_tok: float
    lm_bytes: float
    peak_lm: float
    lm_curve: LogCurve
    # comm
    n_allreduce: int
    ar_lat: float
    ar_s_per_byte: float
    ar_bytes_per_tok: float
    # the engine's own all-reduce kernel over the tp group (seconds vs bytes; None: the NCCL fit above), and what
    # a real step adds to each call
    ar_table: CollectiveTable | None
    ar_overhead_s: float
    n_a2a: int  # expert token exchanges a step (two a MoE layer: dispatch and combine)
    a2a_s_per_byte: float
    a2a_bytes_per_tok: float
    # NCCL's measured all-gather (dispatch) and reduce-scatter (combine) over the stage, where the exchange is
    # one (attention DP inside a measured group); None: the all-to-all bandwidth model above
    ep_gather: CollectiveTable | None
    ep_scatter: CollectiveTable | None
    ep_bytes_per_tok: float  # bytes a token adds to the gathered buffer
    # overheads
    overhead_fixed_s: float
    overhead_per_seq_s: float
    prefill_scale: float
    decode_scale: float
    decode_attn_scale: float


def _sublayers(model: Any) -> int:
    """Mixers plus MLPs (``ModelSpec.num_sublayers``); 2 x layers for models that do not say."""
    return int(getattr(model, "num_sublayers", 2 * model.num_layers))


def _layer_equivalents(model: Any) -> float:
    """Depth in standard decoder layers, for the per-layer overheads (``ModelSpec.layer_equivalents``)."""
    return float(getattr(model, "layer_equivalents", model.num_layers))


def _dispatch_width(model: Any) -> int:
    """Width of the vectors sent to the experts (``ModelSpec.moe_dispatch_width``)."""
    return int(getattr(model, "moe_dispatch_width", 0) or model.hidden_size)


def _kind_counts(model: Any, *kinds: str) -> tuple[int, ...]:
    """How many of the model's layers are of each of ``kinds`` (``ModelSpec.layer_kinds``)."""
    counts = Counter(model.layer_kinds)
    return tuple(counts[k] for k in kinds)


def _layer_counts(model: Any) -> tuple[int, ...]:
    """Full, sliding-window and linear-attention layers."""
    return _kind_counts(model, "full_attention", "sliding_attention", "linear_attention")


def _compressed_counts(model: Any) -> tuple[int, ...]:
    """DeepSeek-V4's CSA and HCA layers (0, 0 for every other model)."""
    return _kind_counts(model, "compressed_sparse_attention", "heavily_compressed_attention")


class PerfModel:
    """Step time (with per-op breakdown) and memory of one replica. Build with :meth:`build`."""

    __slots__ = (
        "model",
        "gpu",
        "tp",
        "pp",
        "ep",
        "attention_dp",
        "moe_tp",
        "weight_precision",
        "kv_dtype",
        "engine",
        "calibration",
        "gpu_coeffs",
        "engine_coeffs",
        "compute_dtype",
        "_c",
        "_weights_bytes_per_gpu",
        "_kv_per_tok_gpu",
        "_kv_fixed_per_seq_gpu",
        "gpu_id",
        "notes",
        "speculative",
        "measured",
    )

    def __init__(
        self,
        model: Any,
        gpu: Any,
        *,
        tp: int,
        pp: int,
        ep: int,
        attention_dp: int,
        weight_precision: str,
        kv_dtype: str,
        engine: str,
        calibration: Calibration,
        moe_tp: int | None = None,
    ) -> None:
        for name, v in (("tp", tp), ("pp", pp), ("ep", ep), ("attention_dp", attention_dp)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        wp = normalise_precision(weight_precision)
        if wp not in _WEIGHT_PRECISIONS:
            raise ConfigError(
                f"weight precision '{weight_precision}' is not supported; expected one of {', '.join(_WEIGHT_PRECISIONS)}"
            )
        kd = kv_dtype.strip().lower()
        if kd not in _KV_BYTES:
            raise ConfigError(
                f"kv_dtype '{kv_dtype}' is not supported; expected one of {', '.join(_KV_BYTES)}"
            )
        eng = normalise_engine(engine)
        if eng.split(":", 1)[0] not in ENGINES:
            raise ConfigError(f"engine '{engine}' is not supported; expected one of {', '.join(ENGINES)}")
        if pp > model.num_layers:
            raise ConfigError(f"pp={pp} exceeds the model's {model.num_layers} layers")
        if moe_tp is not None and (not isinstance(moe_tp, int) or moe_tp < 1):
            raise ConfigError(f"moe_tp must be a positive integer, got {moe_tp!r}")
        stage = tp * attention_dp
        if model.num_experts:
            if moe_tp is None and (ep > stage or stage % ep):
                raise ConfigError(
                    f"ep={ep} must divide tp*attention_dp={stage} (experts spread over the stage's GPUs)"
                )
            if ep > model.num_experts:
                raise ConfigError(f"ep={ep} exceeds the model's {model.num_experts} experts")
        self.model = model
        self.gpu = gpu
        self.gpu_id = str(getattr(gpu, "id", "gpu"))
        self.tp, self.pp, self.ep, self.attention_dp = tp, pp, ep, attention_dp
        self.moe_tp = moe_tp if model.num_experts else None
        self.weight_precision, self.kv_dtype, self.engine = wp, kd, eng
        self.calibration = calibration
        self.gpu_coeffs: GpuCoefficients = calibration.gpu(self.gpu_id)
        self.engine_coeffs: EngineCoefficients = calibration.engine_for(eng, self.gpu_id, wp)
        self.compute_dtype = compute_dtype_for(wp, gpu)
        self.notes: list[str] = []
        self.speculative: SpeculativeDecoding | None = None
        self.measured: MeasuredStepScales | None = None  # step-level form of measured points (with_measured)
        if not calibration.has_gpu(self.gpu_id):
            self.notes.append(f"no measured kernel tables for '{self.gpu_id}': generic efficiencies used")
        if (stale := model_rules_note(calibration)) is not None:
            self.notes.append(stale)
        release = dict(getattr(model, "nvfp4_kept", ()))
        head = release.pop("lm_head", None)
        kept = [f"{k} {v}" for k, v in sorted(release.items())]
        if wp in ("fp4", "nvfp4") and (kept or head):
            what = ([f"keeps {', '.join(kept)} (not 4-bit)"] if kept else []) + (
                [f"quantises its LM head to {head}"] if head else []
            )
            self.notes.append(f"{model.id}'s NVFP4 release {' and '.join(what)}; counted so")
        self._c = self._precompute()

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        model: Any,
        gpu: Any,
        tp: int = 1,
        pp: int = 1,
        ep: int = 1,
        attention_dp: int = 1,
        weight_precision: str = "bf16",
        kv_dtype: str = "bf16",
        engine: str = "vllm",
        calibration: Calibration | None = None,
        moe_tp: int | None = None,
    ) -> PerfModel:
        """The performance model of ``model`` on ``tp*pp*attention_dp`` GPUs of type ``gpu``.

        ``moe_tp`` (optional) sets the tensor parallelism inside each expert explicitly; routed experts are
        then spread over ``moe_tp * ep`` GPUs per stage, which may exceed ``tp * attention_dp`` (the stage
        then has ``max(tp * attention_dp, moe_tp * ep)`` GPUs)."""
        from gpuyield.core.perf.calibration import default_calibration

        return cls(
            model,
            gpu,
            tp=tp,
            pp=pp,
            ep=ep,
            attention_dp=attention_dp,
            weight_precision=weight_precision,
            kv_dtype=kv_dtype,
            engine=engine,
            calibration=calibration if calibration is not None else default_calibration(),
            moe_tp=moe_tp,
        )

    @classmethod
    def build_pool(
        cls,
        model: Any,
        gpu: Any,
        role: str,
        *,
        engine: str = "vllm",
        calibration: Calibration | None = None,
        worker_counts_known: bool = True,
        **kwargs: Any,
    ) -> PerfModel:
        """The performance model of one pool of ``role`` (:data:`POOL_ROLES`), the one rule ``estimate --layout``,
        ``validate``, ``simulate`` and ``plan`` share. Other arguments as :meth:`build`.

        - A ``mixed`` (aggregated) pool runs its engine family's constants.
        - A ``prefill`` or ``decode`` pool of a P/D deployment runs the family's ``:disagg`` constants
          (``Calibration.engine_for`` falls back to the family's where none were fitted).
        - A ``decode`` pool whose deployment records both worker counts (``worker_counts_known``; always, in a
          deployment that is simulated or planned) decodes at the family's aggregated ``decode_scale``. The
          fitted P/D one (about 0.5) is the speed of the measured campaign that recorded neither count (and,
          most likely, ran speculative decoding); the P/D rows with counts sit at the kernels' speed
          (docs/benchmarks.md, eighteenth and twenty-third passes). Its other constants stay the P/D ones."""
        from gpuyield.core.perf.calibration import default_calibration

        if role not in POOL_ROLES:
            raise ConfigError(f"pool role must be one of {', '.join(POOL_ROLES)}, got {role!r}")
        cal = calibration if calibration is not None else default_calibration()
        family = normalise_engine(engine).partition(":")[0]
        mode = family if role == "mixed" else f"{family}:disagg"
        perf = cls.build(model, gpu, engine=mode, calibration=cal, **kwargs)
        if role == "decode" and worker_counts_known:
            perf = perf.with_decode_scale(cal.engine_for(family, perf.gpu_id, perf.weight_precision).decode_scale)
        return perf

    @property
    def family(self) -> str:
        """The engine family (``vllm``, ``sglang``, ``trtllm``) without a deployment mode (``trtllm:disagg``)."""
        return self.engine.partition(":")[0]

    @property
    def expert_gpus(self) -> int:
        """GPUs per stage the routed experts are spread over."""
        if self.moe_tp is not None:
            return self.moe_tp * self.ep
        return self.tp * self.attention_dp

    @property
    def num_gpus(self) -> int:
        return self.pp * max(self.tp * self.attention_dp, self.expert_gpus if self.model.num_experts else 0)

    def _precompute(self) -> _Coeffs:
        m, g = self.model, self.gpu
        tp, pp, adp, ep = self.tp, self.pp, self.attention_dp, self.ep
        stage = tp * adp
        moe_tp = (self.moe_tp or max(1, stage // ep)) if m.num_experts else 1
        stage = max(stage, moe_tp * ep) if m.num_experts else stage
        gc, ec = self.gpu_coeffs, self.engine_coeffs
        peak_attn = _peak(g, "bf16")  # attention, and every GEMM whose dtype the accelerator lacks
        if peak_attn <= 0:
            raise ConfigError(
                f"accelerator '{self.gpu_id}' has no bf16_dense_tflops (the catalogue has no published figure for "
                "it), so prompts and GEMMs cannot be timed; give the figure in a catalogue overlay (--catalog FILE "
                f"with an entry of id {self.gpu_id}, bf16_dense_tflops: N and its own source and as_of) or measure "
                "the device (gpuyield profile --device cuda, then gpuyield calibrate --from that table, then "
                "--calibration)"
            )
        bw = float(g.memory_bandwidth_tb_s) * 1e12
        if bw <= 0:
            raise ConfigError(f"accelerator '{self.gpu_id}' has no memory_bandwidth_tb_s")

        dense_flops: dict[str, float] = {}  # per compute dtype
        dense_bytes = 0.0
        expert_params_per_expert = 0.0
        expert_weight_bytes_per_expert = 0.0  # at the deployment's precision (ModelSpec.bytes_per_weight_of)
        expert_dtype = lm_dtype = self.compute_dtype
        lm_params = 0.0
        lm_bytes = 0.0
        for s in m.gemm_shapes:
            if s.group == "lm_head":
                lm_params += s.n * s.k
                lm_bytes += s.n * s.k * self._weight_elem_bytes(s) / tp
                lm_dtype = self._matrix_compute_dtype(s)
                continue
            if s.group == "moe_expert":
                expert_params_per_expert += s.n * s.k * s.num_layers
                expert_weight_bytes_per_expert += s.n * s.k * s.num_layers * self._weight_elem_bytes(s)
                expert_dtype = self._matrix_compute_dtype(s)  # routed experts share one: the deployment's precision
                continue
            elem = self._weight_elem_bytes(s)
            p = s.n * s.k * s.num_layers
            # replicated matrices (engines' ReplicatedLinear): every GPU holds and runs them whole
            split = 1 if s.replicated else tp
            dt = self._matrix_compute_dtype(s)
            dense_flops[dt] = dense_flops.get(dt, 0.0) + 2.0 * p / split
            dense_bytes += p * elem / split
        full, sliding, linear = _layer_counts(m)
        # --- attention prefill FLOPs per unit of sum(new*(ctx+new/2)) on one GPU
        # full and sliding layers may differ in head width and KV heads (Gemma 4), values may be narrower than
        # keys (MiMo-V2); MLA has one shape of its own
        mla = bool(getattr(m, "uses_mla", False))
        hd_full, vd_full, kvh_full = m.attention_dims("full_attention")
        hd_win, vd_win, kvh_win = m.attention_dims("sliding_attention")
        if mla:
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            per_layer = per_layer_win = 2.0 * m.num_attention_heads * (qk + m.v_head_dim)
        else:
            per_layer = 2.0 * m.num_attention_heads * (hd_full + vd_full)
            per_layer_win = 2.0 * m.num_attention_heads * (hd_win + vd_win)
        heads_shard = min(tp, m.num_attention_heads)
        attn_prefill_flops_per_sq = per_layer * full / heads_shard / adp
        window = float(getattr(m, "sliding_window", 0) or 0)
        sliding_prefill_flops_per_tok = per_layer_win * sliding * window / heads_shard / adp
        # DeepSeek-V4: a compressed layer attends its window like a sliding layer; a CSA query also attends the
        # index_topk entries its indexer picks (counted whole), and the indexer scores every compressed entry (one
        # per ratio tokens); an HCA query attends every compressed entry. Per entry per query: FLOPs as below.
        csa, hca = _compressed_counts(m)
        fixed_entries = sliding * window  # entries every query attends whatever its context (per layer, summed)
        cmp_flops_per_ctx = 0.0  # FLOPs per query per context token in the compressed part, split by heads
        idx_flops_per_ctx = 0.0
        if csa or hca:
            fixed_entries += (csa + hca) * window + csa * float(m.index_topk or 0)
            sliding_prefill_flops_per_tok = per_layer_win * fixed_entries / heads_shard / adp
            # the indexer's scoring: SGLang duplicates the indexer on every TP rank
            if csa:
                idx_flops_per_ctx = 2.0 * m.index_num_heads * m.index_head_dim / m.csa_compress_ratio * csa
            if hca:
                cmp_flops_per_ctx += per_layer_win / m.hca_compress_ratio * hca
            attn_prefill_flops_per_sq += (cmp_flops_per_ctx / heads_shard + idx_flops_per_ctx) / adp
        linear_attn_flops_per_tok = 0.0
        if linear:
            dk, dv, hv = m.linear_key_head_dim, m.linear_value_head_dim, m.linear_num_value_heads
            linear_attn_flops_per_tok = 6.0 * hv * dk * dv * linear / min(tp, hv) / adp
        # --- decode attention: KV bytes per context token on one GPU (and compute, for MLA)
        # one layer's cache bytes a token (MLA: latent + rope key, and the sparse-attention indexer's key)
        kv_per_tok_layer = m.kv_bytes_per_token_per_layer(self.kv_dtype, "full_attention")
        if mla:
            kv_shard = 1
            dec_flops_per_ctx = (
                2.0 * m.num_attention_heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim) * full / heads_shard
            )
        else:
            kv_shard = min(tp, kvh_full)
            dec_flops_per_ctx = 2.0 * m.num_attention_heads * (hd_full + vd_full) * full / heads_shard
        kv_per_tok_gpu = kv_per_tok_layer * full / kv_shard / pp
        kv_fixed_gpu = 0.0
        win_shard = kv_shard if mla else min(tp, kvh_win)
        kv_win_layer = kv_per_tok_layer if mla else m.kv_bytes_per_token_per_layer(self.kv_dtype, "sliding_attention")
        if sliding or csa or hca:
            kv_fixed_gpu += kv_win_layer * (sliding + csa + hca) * window / win_shard / pp
        read_per_seq_gpu = kv_fixed_gpu  # bytes a decode query reads whatever its context
        if csa or hca:
            # a decode query reads its CSA layers' indexer keys and HCA entries per context token, and a fixed
            # top-k of CSA entries (counted whole) besides its windows
            kv_per_tok_gpu += m.compressed_read_bytes_per_token(self.kv_dtype) / win_shard / pp
            dec_flops_per_ctx += cmp_flops_per_ctx / heads_shard + idx_flops_per_ctx
            read_per_seq_gpu += kv_win_layer * csa * float(m.index_topk or 0) / win_shard / pp
        if linear:
            read_per_seq_gpu += (
                float(m.linear_state_bytes_per_sequence()) / min(tp, m.linear_num_value_heads) / pp
            )
        attn_bw = bw * gc.attn_decode_bw_eff
        # decode attention is memory- or compute-bound; both terms are proportional to context (affine)
        s_bytes_per_ctx = kv_per_tok_gpu * pp / attn_bw / adp
        s_flops_per_ctx = dec_flops_per_ctx / (peak_attn * gc.attn_prefill_eff) / adp
        s_per_seq = read_per_seq_gpu * pp / attn_bw / adp
        # compute of the entries read whatever the context: DeepSeek-V4's one shared KV head (512 wide, 64 or 128
        # query heads on it) can make it outweigh the bytes where few GPUs split the heads; GQA windows stay
        # memory-bound, so it is charged for compressed models only
        s_flops_per_seq = (
            per_layer_win * fixed_entries / heads_shard / (peak_attn * gc.attn_prefill_eff) / adp
            if (csa or hca)
            else 0.0
        )
        # --- experts
        E = int(m.num_experts or 0)
        k = int(m.num_experts_per_tok or 0)
        experts_local = E / ep if E else 0.0
        # per assignment the work lands on one expert's GPUs: moe_tp GPUs share it; spread over ep ranks
        expert_flops_per_assign = 2.0 * expert_params_per_expert / moe_tp
        expert_bytes_per_expert = expert_weight_bytes_per_expert / moe_tp
        # --- LM head
        lm_flops_per_tok = 2.0 * lm_params / tp
        # --- communication
        hidden = m.hidden_size
        per_node = int(getattr(g, "gpus_per_node", 0) or 8)
        ic = float(getattr(g, "interconnect_gb_s", 0) or 0) * 1e9
        inter = float(getattr(g, "inter_node_gb_s", 0) or 0) * 1e9
        def link_for(group: int) -> float:
            """Per-GPU bandwidth of a collective over ``group`` GPUs: scale-up inside a node (NVLink
            domain), the scale-out network once the group spans nodes."""
            if group <= per_node or not inter:
                return ic
            return min(ic, inter) if ic else inter

        if (ic if ic else inter) <= 0:
            ic = 32e9  # PCIe-class fallback; noted below
            if stage > 1:
                self.notes.append(
                    "accelerator has no interconnect_gb_s: PCIe-class 32 GB/s assumed for collectives"
                )
        # one all-reduce a sublayer (mixer or MLP): 2 a layer for a plain decoder, 1 a Nemotron-H block
        n_ar = _sublayers(m) // pp if tp > 1 else 0
        # the all-reduce runs inside one attention tensor-parallel group (tp GPUs), not the whole stage
        ar_s_per_byte = 2.0 * (tp - 1) / tp / (link_for(tp) * gc.allreduce_bw_eff) if tp > 1 else 0.0
        ar_bytes_per_tok = hidden * 2.0 / adp  # bf16 activations, tokens split over attention-DP ranks
        # the engine's own all-reduce kernel where it was measured for a group this size, else NCCL's measured
        # all-reduce, else the NCCL fit above
        ar_table = (gc.allreduce_time(self.engine, tp) or gc.nccl_time("all_reduce", tp)) if tp > 1 else None
        n_moe = int(getattr(m, "num_moe_layers", 0) or 0)
        n_a2a = 2 * n_moe // pp if (E and (ep > 1 or adp > 1)) else 0
        link = link_for(stage)
        a2a_s_per_byte = (stage - 1) / stage / (link * gc.allreduce_bw_eff) if stage > 1 else 0.0
        # fp8 dispatch + bf16 combine, averaged; every GPU of the stage sends its share of the tokens (the
        # tp ranks of one attention group split their replicated tokens before dispatch)
        a2a_bytes_per_tok = k * _dispatch_width(m) * 1.5 / stage  # latent MoE dispatches the latent vector
        if n_a2a and adp == 1:
            n_a2a = 0  # tokens replicated over the TP group: the MLP all-reduce above combines the experts' outputs
        # Under attention DP without attention TP, over a group within NCCL's measured sizes, the engines exchange
        # the tokens as vLLM's default all2all backend (allgather_reducescatter), TensorRT-LLM's and SGLang's DP
        # attention do (and AIConfigurator's MoEDispatch models): an all-gather of every rank's tokens before the
        # experts and a reduce-scatter of their outputs after, bf16 vectors of the dispatch width, the whole
        # gathered buffer being the message. Elsewhere (attention TP inside DP ranks, or groups wider than NCCL
        # measured) the all-to-all bandwidth model above stays.
        gather_path = bool(n_a2a) and tp == 1
        ep_gather = gc.nccl_time("all_gather", stage) if gather_path else None
        ep_scatter = gc.nccl_time("reduce_scatter", stage) if gather_path else None
        if ep_gather is None or ep_scatter is None:
            ep_gather = ep_scatter = None
        ep_bytes_per_tok = _dispatch_width(m) * 2.0
        overhead_fixed = ec.step_overhead_s + ec.per_layer_overhead_s * _layer_equivalents(m)
        if E:
            overhead_fixed += ec.moe_layer_overhead_s * int(getattr(m, "num_moe_layers", 0) or 0)

        def gemm_rate(dtype: str) -> tuple[float, LogCurve]:
            # (peak FLOP/s, efficiency curve) of GEMMs in ``dtype``; bf16's peak where the accelerator lacks it
            return _peak(g, dtype) or peak_attn, _sanitise(gc.gemm_curve(dtype))

        expert_rate, lm_rate = gemm_rate(expert_dtype), gemm_rate(lm_dtype)
        return _Coeffs(
            tp=tp,
            pp=pp,
            adp=adp,
            ep=ep,
            moe_tp=moe_tp,
            peak_attn=peak_attn,
            bw=bw,
            mem_eff=gc.mem_bw_eff,
            dense_groups=tuple(
                (f / pp, *gemm_rate(dt)) for dt, f in sorted(dense_flops.items())
            ),
            dense_bytes=dense_bytes / pp,
            num_experts=E,
            experts_per_tok=k,
            peak_e=expert_rate[0],
            expert_curve=expert_rate[1],
            expert_flops_per_assign=expert_flops_per_assign / pp,
            expert_bytes_per_expert=expert_bytes_per_expert / pp,
            experts_local=experts_local,
            attn_prefill_flops_per_sq=attn_prefill_flops_per_sq / pp,
            sliding_prefill_flops_per_tok=sliding_prefill_flops_per_tok / pp,
            linear_attn_flops_per_tok=linear_attn_flops_per_tok / pp,
            attn_prefill_eff=gc.attn_prefill_eff,
            attn_decode_s_per_seq=s_per_seq / pp,
            attn_decode_flops_s_per_seq=s_flops_per_seq / pp,
            attn_decode_bytes_s_per_ctx=s_bytes_per_ctx / pp,
            attn_decode_flops_s_per_ctx=s_flops_per_ctx / pp,
            lm_flops_per_tok=lm_flops_per_tok,
            lm_bytes=lm_bytes,
            peak_lm=lm_rate[0],
            lm_curve=lm_rate[1],
            n_allreduce=n_ar,
            ar_lat=gc.allreduce_latency_s,
            ar_s_per_byte=ar_s_per_byte,
            ar_bytes_per_tok=ar_bytes_per_tok,
            ar_table=ar_table,
            ar_overhead_s=ec.allreduce_overhead_s,
            n_a2a=n_a2a,
            a2a_s_per_byte=a2a_s_per_byte,
            a2a_bytes_per_tok=a2a_bytes_per_tok,
            ep_gather=ep_gather,
            ep_scatter=ep_scatter,
            ep_bytes_per_tok=ep_bytes_per_tok,
            overhead_fixed_s=overhead_fixed,
            overhead_per_seq_s=ec.per_seq_overhead_s,
            prefill_scale=ec.prefill_scale,
            decode_scale=ec.decode_scale,
            decode_attn_scale=ec.decode_attn_scale,
        )

    # ------------------------------------------------------------------ step time
    def _ops(
        self,
        num_prefill_tokens: int,
        prefill_attn_tokens_sq: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
        queries_per_seq: float = 1.0,
        prefill_seqs: PrefillSeqs = None,
    ) -> tuple[float, float, float, float, float, float, float, float]:
        """Per-op seconds of one forward step; ``queries_per_seq`` > 1: each decoding sequence runs that many
        positions (speculative verification), over one read of its KV. ``prefill_seqs``: the prompts the
        prefill tokens belong to (see :func:`busiest_rank_share`; None spreads them evenly over the attention-DP
        ranks)."""
        c = self._c
        P = float(num_prefill_tokens)
        D = float(num_decode_seqs)
        Dq = D * queries_per_seq  # decode positions through the GEMMs
        T = P + Dq
        if T <= 0:
            return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, c.overhead_fixed_s * 0.0)
        pp = c.pp
        # Attention DP places whole requests on ranks, and a step lasts as long as its busiest rank: its share of
        # the prompts' tokens (one prompt: all of them, through one rank's attention and dense layers); decodes
        # are spread evenly.
        share = self._prefill_share(num_prefill_tokens, prefill_seqs)
        Tr = P * share + Dq / c.adp  # tokens on the busiest attention-DP rank
        work = P * c.prefill_scale * share + Dq / c.adp  # prefill tokens weighted by the engine's fitted factor
        t_pad = Tr * c.adp  # collectives pad every rank to the busiest one (T itself when spread evenly)
        # dense linear layers
        gemm = pp * max(
            sum(f * work / (pk * cv(Tr)) for f, pk, cv in c.dense_groups),
            c.dense_bytes / (c.bw * c.mem_eff),
        )
        # routed experts: expected distinct experts hit on one GPU; tokens per expert sets the efficiency
        moe = 0.0
        if c.num_experts:
            assigns = T * c.experts_per_tok
            hit = c.experts_local * (1.0 - (1.0 - c.experts_per_tok / c.num_experts) ** T)
            per_expert = assigns / c.num_experts
            eff_e = c.expert_curve(max(per_expert, 1.0))
            flops = c.expert_flops_per_assign * (P * c.prefill_scale + Dq) * c.experts_per_tok / c.ep
            moe = pp * max(flops / (c.peak_e * eff_e), hit * c.expert_bytes_per_expert / (c.bw * c.mem_eff))
        # attention
        attn_p = 0.0
        if P > 0:
            attn_p = (
                pp
                * share
                * c.adp  # the per-token constants are spread over the attention-DP ranks
                * c.prefill_scale
                * (
                    c.attn_prefill_flops_per_sq * prefill_attn_tokens_sq
                    + (c.sliding_prefill_flops_per_tok + c.linear_attn_flops_per_tok) * P
                )
                / (c.peak_attn * c.attn_prefill_eff)
            )
        attn_d = (
            pp
            * c.decode_attn_scale
            * (
                self._attn_per_ctx(queries_per_seq) * decode_ctx_tokens
                + max(c.attn_decode_s_per_seq, c.attn_decode_flops_s_per_seq * queries_per_seq) * D
            )
        )
        # LM head: decode sequences plus (at most) one last prompt token per prefill step
        lm_tok = (Dq + (1.0 if P > 0 else 0.0)) / c.adp
        lm = max(
            c.lm_flops_per_tok * lm_tok / (c.peak_lm * c.lm_curve(max(lm_tok, 1.0))),
            c.lm_bytes / (c.bw * c.mem_eff),
        )
        comm_tp = 0.0
        if c.n_allreduce:
            if c.ar_table is not None:
                one = c.ar_table(c.ar_bytes_per_tok * t_pad)
            else:
                one = c.ar_lat + c.ar_s_per_byte * c.ar_bytes_per_tok * t_pad
            comm_tp = c.n_allreduce * (one + c.ar_overhead_s) * pp
        comm_ep = 0.0
        if c.n_a2a:
            if c.ep_gather is not None and c.ep_scatter is not None:
                nbytes = c.ep_bytes_per_tok * t_pad
                pair = c.ep_gather(nbytes) + c.ep_scatter(nbytes) + 2.0 * c.ar_overhead_s
                comm_ep = c.n_a2a / 2.0 * pair * pp
            else:
                comm_ep = c.n_a2a * (c.ar_lat + c.a2a_s_per_byte * c.a2a_bytes_per_tok * t_pad) * pp
        s = c.decode_scale
        overhead = c.overhead_fixed_s + c.overhead_per_seq_s * D
        return (gemm * s, moe * s, attn_p * s, attn_d * s, comm_tp * s, comm_ep * s, lm * s, overhead)

    def step_time_s(
        self,
        num_prefill_tokens: int,
        prefill_attn_tokens_sq: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
        prefill_seqs: PrefillSeqs = None,
    ) -> float:
        """Seconds of one forward step (see the package docstring for the argument meanings). With
        speculative decoding (:meth:`with_speculative`) a step's decode part is charged per output token: its
        verification and drafting divided by the tokens a step yields (``gpuyield.core.perf.speculative``).
        ``prefill_seqs``: the prompts the prefill tokens belong to, a count of equal chunks or each chunk's tokens,
        which matters under attention DP (whole prompts sit on one rank; :func:`busiest_rank_share`); None
        spreads them evenly over the ranks (a full replica's throughput)."""
        args = (num_prefill_tokens, prefill_attn_tokens_sq, num_decode_seqs, decode_ctx_tokens, prefill_seqs)
        if self.measured is None:
            return sum(self._step_ops(*args))
        return sum(self._measured_ops(*args))

    def _measured_ops(
        self,
        num_prefill_tokens: int,
        prefill_attn_tokens_sq: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
        prefill_seqs: PrefillSeqs = None,
    ) -> tuple[float, ...]:
        """Per-op seconds with the measured step scales: the decoding sequences' part of the step (what the
        step would take without its prefill chunks; at least one sequence's, the fixed costs) times the decode
        multiplier, the rest times the prefill multiplier (``gpuyield.core.perf.measured_steps``)."""
        assert self.measured is not None
        full = self._step_ops(num_prefill_tokens, prefill_attn_tokens_sq, num_decode_seqs, decode_ctx_tokens, prefill_seqs)
        mp, md = self.measured.at(num_decode_seqs)
        if num_prefill_tokens <= 0:
            return tuple(v * md for v in full)
        # the decode part of a step with prefill chunks: its decoding sequences alone or, with none, what one
        # sequence at no context costs (the weight read and per-step overhead every step pays), so those fixed
        # costs carry the decode multiplier whether or not anything decodes (no jump at the first sequence)
        dec = self._step_ops(0, 0.0, max(1, num_decode_seqs), decode_ctx_tokens if num_decode_seqs > 0 else 0)
        return tuple(md * d + mp * max(0.0, f - d) for f, d in zip(full, dec, strict=True))

    def with_decode_scale(self, decode_scale: float) -> PerfModel:
        """This model with its engine's ``decode_scale`` (the multiplier on every op's device time) replaced. A copy;
        a P/D deployment that records its worker counts decodes at its aggregated family's scale
        (:meth:`build_pool`)."""
        import copy

        if not (math.isfinite(decode_scale) and decode_scale > 0):
            raise ConfigError(f"decode_scale must be a positive number, got {decode_scale!r}")
        if self.measured is not None:  # its step scales were solved under the old decode_scale
            raise ConfigError("with_decode_scale: set the decode scale before the measured step scales")
        out = copy.copy(self)
        out.notes = list(self.notes)
        out.engine_coeffs = dataclasses.replace(self.engine_coeffs, decode_scale=decode_scale)
        out._c = dataclasses.replace(self._c, decode_scale=decode_scale)
        return out

    def with_measured(self, scales: MeasuredStepScales | None) -> PerfModel:
        """This model with its step times scaled to measured operating points (``None``: the step model
        alone). A copy; memory, overheads and notes otherwise unchanged (a note says so)."""
        import copy

        out = copy.copy(self)
        out.measured = scales
        out.notes = [n for n in self.notes if not n.startswith(_MEASURED_NOTE)]
        if scales is not None:
            out.notes.append(scales.describe())
        return out

    def _prefill_share(self, num_prefill_tokens: float, prefill_seqs: PrefillSeqs) -> float:
        """The share of a step's prefill tokens on its busiest attention-DP rank (1/adp: spread evenly)."""
        adp = self._c.adp
        if prefill_seqs is None or num_prefill_tokens <= 0 or adp <= 1:
            return 1.0 / adp
        return busiest_rank_share(prefill_seqs, adp)

    def _attn_per_ctx(self, queries_per_seq: float) -> float:
        c = self._c
        return max(c.attn_decode_bytes_s_per_ctx, c.attn_decode_flops_s_per_ctx * queries_per_seq)

    def _step_ops(
        self,
        num_prefill_tokens: int,
        prefill_attn_tokens_sq: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
        prefill_seqs: PrefillSeqs = None,
    ) -> tuple[float, ...]:
        spec = self.speculative
        if spec is None or num_decode_seqs <= 0:
            return self._ops(
                num_prefill_tokens, prefill_attn_tokens_sq, num_decode_seqs, decode_ctx_tokens, 1.0, prefill_seqs
            )
        q = float(spec.positions_per_seq)
        # the real step: the prefill chunks and every decoding sequence's K + 1 positions in one forward pass ...
        full = self._ops(num_prefill_tokens, prefill_attn_tokens_sq, num_decode_seqs, decode_ctx_tokens, q, prefill_seqs)
        # ... after K drafter passes over the decoding sequences: draft_layers of the target's layers (GEMMs,
        # experts, attention, collectives) and an LM head each; the fixed step overhead is the real step's
        k = spec.num_draft_tokens
        # in layer equivalents: a Nemotron-H MTP module (attention + MoE block) is one of its 44, not one of 88 blocks
        frac = spec.draft_layers(self.model) / _layer_equivalents(self.model)
        draft = [0.0] * len(OPS)  # n-gram lookup runs no model
        if frac > 0:
            plain = self._ops(0, 0.0, num_decode_seqs, decode_ctx_tokens)
            lm_i = OPS.index("lm_head")
            oh_i = OPS.index("overhead")
            draft = [0.0 if i == oh_i else (k * v if i == lm_i else k * frac * v) for i, v in enumerate(plain)]
        # The engine model advances a decoding sequence one token per step, so the decodes' share of the real
        # step (all of it but what the prefill chunks alone would take) is charged per token (/ E); the chunks
        # keep their own step's cost, shared weight reads and overhead included. Monotone in every argument
        # and affine in the decode context, like a plain step.
        pre = (
            self._ops(num_prefill_tokens, prefill_attn_tokens_sq, 0, 0, 1.0, prefill_seqs)
            if num_prefill_tokens > 0
            else (0.0,) * len(OPS)
        )
        e = spec.tokens_per_step
        return tuple(p + (f + d - p) / e for p, f, d in zip(pre, full, draft, strict=True))

    @property
    def decode_budget_tokens(self) -> int:
        """Step-budget tokens one decoding sequence takes: 1, or K + 1 with speculative decoding."""
        return self.speculative.positions_per_seq if self.speculative is not None else 1

    @property
    def first_token_overhead_s(self) -> float:
        """The engine family's fixed first-token latency for this model (``EngineCoefficients``), which every
        closed-loop estimate, simulation and the emulator add to each request's first token."""
        return self.engine_coeffs.first_token_overhead_s(_layer_equivalents(self.model))

    def with_speculative(self, spec: SpeculativeDecoding | None) -> PerfModel:
        """This model with speculative decoding on (``None``: off). A copy; checks the method against the model
        (MTP needs MTP layers)."""
        import copy

        if spec is not None:
            spec.draft_layers(self.model)  # a clear error now rather than at the first decode step
        out = copy.copy(self)
        out.speculative = spec
        out.notes = [n for n in self.notes if not n.startswith(_SPEC_NOTE)]  # a previous setting's note goes
        if spec is not None:
            out.notes.append(
                spec.describe() + " (drafter weights and KV not counted in memory: about "
                f"{spec.draft_layers(self.model)} of {_layer_equivalents(self.model):g} layers)"
            )
        return out

    def step_breakdown(
        self,
        num_prefill_tokens: int,
        prefill_attn_tokens_sq: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
        prefill_seqs: PrefillSeqs = None,
    ) -> StepBreakdown:
        """Seconds per op for one step (``prefill_seqs`` as in :meth:`step_time_s`), and which lookups fell
        outside the measured ranges."""
        step_ops = self._step_ops if self.measured is None else self._measured_ops
        vals = step_ops(num_prefill_tokens, prefill_attn_tokens_sq, num_decode_seqs, decode_ctx_tokens, prefill_seqs)
        ops = dict(zip(OPS, vals, strict=True))
        out: list[str] = []
        c = self._c
        share = self._prefill_share(num_prefill_tokens, prefill_seqs)
        # tokens through the GEMMs on the busiest rank (verification: K + 1 per decoding sequence)
        tr = num_prefill_tokens * share + num_decode_seqs * self.decode_budget_tokens / c.adp
        # Below the first knot the tables hold no compute-bound GEMMs: that is only an extrapolation when
        # the compute term (at the clamped efficiency) would bind rather than the weight-streaming term. Each
        # compute dtype of the dense matrices is looked up in its own table.
        compute_binds = sum(f * tr / (pk * cv(tr)) for f, pk, cv in c.dense_groups) >= c.dense_bytes / (
            c.bw * c.mem_eff
        )
        for _f, _pk, cv in c.dense_groups:
            lo, hi = cv.xs[0], cv.xs[-1]
            msg = f"gemm tokens {tr:g} outside measured [{lo:g}, {hi:g}]"
            if (tr > hi or (0 < tr < lo and compute_binds)) and msg not in out:
                out.append(msg)
        step_tokens = tr * c.adp  # collectives pad every rank to the busiest one
        ar_bytes = c.ar_bytes_per_tok * step_tokens
        if c.n_allreduce and c.ar_table is not None and not c.ar_table.in_range(ar_bytes):
            out.append(
                f"all-reduce message {ar_bytes / 1e6:.0f} MB above the measured "
                f"{c.ar_table.sizes_bytes[-1] / 1e6:.0f} MB (time scaled with the bytes)"
            )
        if c.n_a2a and c.ep_gather is not None and c.ep_scatter is not None:
            ep_bytes = c.ep_bytes_per_tok * step_tokens
            top = min(c.ep_gather.sizes_bytes[-1], c.ep_scatter.sizes_bytes[-1])
            if ep_bytes > top:
                out.append(
                    f"expert all-gather / reduce-scatter message {ep_bytes / 1e6:.0f} MB above NCCL's measured "
                    f"{top / 1e6:.0f} MB (time scaled with the bytes)"
                )
        return StepBreakdown(total_s=sum(vals), ops=ops, out_of_range=tuple(out))

    # ------------------------------------------------------------------ memory
    def weights_bytes_per_gpu(self) -> float:
        m = self.model
        stage = self.expert_gpus
        total = 0.0
        for s in m.gemm_shapes:
            p = float(s.n * s.k * s.num_layers * s.num_experts)
            if s.group == "moe_expert":
                total += p * self._weight_elem_bytes(s) / stage
            elif not (s.group == "lm_head" and m.tie_word_embeddings):
                total += p * self._weight_elem_bytes(s) / (1 if s.replicated else self.tp)
        total += m.vocab_size * m.hidden_size * 2.0 / self.tp  # embeddings (vocab-parallel)
        return total / self.pp

    def memory(
        self,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        *,
        prefix_caching: bool | None = None,
    ) -> MemoryPlan:
        """Weights, runtime reserve and KV capacity; ``fits`` False names the reason.

        ``prefix_caching`` (None: the engine's default, on for vLLM) matters for vLLM's hybrid models, whose
        linear-attention state it holds twice (see :meth:`_vllm_hybrid_pages`)."""
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        m = self.model
        c = self._c
        # the device's real capacity when the catalogue records it (B200: 180 GiB = 193 GB, sold as "180 GB")
        cap_bytes = getattr(self.gpu, "memory_capacity_bytes", None)
        mem_gb = float(cap_bytes) / _GB if cap_bytes else float(self.gpu.memory_gb)
        weights_gb = self.weights_bytes_per_gpu() / _GB
        reserve_gb = self.engine_coeffs.runtime_reserve_gb
        # vLLM ("total"): the fraction caps all memory; TensorRT-LLM / SGLang ("free"): it applies to what is
        # left after weights and the reserve
        free_basis = self.engine_coeffs.kv_memory_basis == "free"
        usable_gb = mem_gb if free_basis else mem_gb * gpu_memory_utilization
        kv_gb = usable_gb - weights_gb - reserve_gb
        if free_basis:
            kv_gb *= gpu_memory_utilization
        full, sliding, linear = _layer_counts(m)
        # one layer's cache bytes a token, split over the GPUs its KV heads allow (MLA's latent is not split)
        per_layer = m.kv_bytes_per_token_per_layer(self.kv_dtype, "full_attention")
        per_layer_win = m.kv_bytes_per_token_per_layer(self.kv_dtype, "sliding_attention")
        if getattr(m, "uses_mla", False):
            shard = shard_win = 1
        else:
            shard = min(self.tp, m.attention_dims("full_attention")[2])
            shard_win = min(self.tp, m.attention_dims("sliding_attention")[2])
        csa, hca = _compressed_counts(m)
        kv_per_tok = per_layer * full / shard / self.pp
        if csa or hca:  # DeepSeek-V4: one compressed entry per ratio tokens grows with the context
            kv_per_tok += m.compressed_kv_bytes_per_token(self.kv_dtype) / shard_win / self.pp
        window = float(getattr(m, "sliding_window", 0) or 0)
        fixed = per_layer_win * (sliding + csa + hca) * window / shard_win / self.pp
        window_part = fixed
        if linear:
            fixed += (
                float(m.linear_state_bytes_per_sequence())
                / min(self.tp, m.linear_num_value_heads)
                / self.pp
            )
        if csa or hca:  # the compressors' partial windows, held whole like a linear state
            spec = self.speculative is not None and self.speculative.method != "ngram"
            fixed += m.compressor_state_bytes_per_sequence(speculative=spec) / shard_win / self.pp
        hybrid_block = 0
        if linear and full and self.family == "vllm":
            mla = bool(getattr(m, "uses_mla", False))
            pages = self._vllm_hybrid_pages(per_layer / shard, full, sliding, linear, prefix_caching, mla=mla)
            hybrid_block, state_bytes, kv_scale = pages
            fixed = window_part * kv_scale[1] + state_bytes / self.pp
            window_part *= kv_scale[1]
            kv_per_tok *= kv_scale[0]
        mml = int(max_model_len or m.max_position_embeddings)
        bs = self.engine_coeffs.block_size_tokens
        fits, reason = True, "ok"
        cap_tokens = 0
        if kv_gb <= 0:
            fits = False
            reason = (
                f"weights {weights_gb:.1f} GB + runtime reserve {reserve_gb:.1f} GB per GPU exceed "
                f"{usable_gb:.0f} GB usable of {mem_gb:.0f} GB on {self.gpu_id} (tp={self.tp}, pp={self.pp}, "
                f"attention_dp={self.attention_dp}); use more GPUs or a lower precision"
            )
        else:
            per_rank = int(kv_gb * _GB // kv_per_tok) if kv_per_tok > 0 else 1 << 40
            cap_tokens = per_rank * c.adp
            held_tokens = math.ceil(mml / hybrid_block) * hybrid_block if hybrid_block else mml
            need = held_tokens * kv_per_tok + fixed
            if kv_gb * _GB < need:
                fits = False
                reason = (
                    f"KV cache of {kv_gb:.2f} GB per GPU cannot hold one sequence of max_model_len={mml} "
                    f"({need / _GB:.2f} GB); lower max_model_len or use more GPUs"
                )
        return MemoryPlan(
            num_gpus=self.num_gpus,
            gpu_memory_gb=mem_gb,
            gpu_memory_utilization=gpu_memory_utilization,
            weights_gb=weights_gb,
            runtime_reserve_gb=reserve_gb,
            kv_gb=kv_gb,
            kv_bytes_per_token=kv_per_tok,
            kv_bytes_fixed_per_seq=fixed,
            kv_capacity_tokens=cap_tokens,
            kv_capacity_blocks=cap_tokens // bs,
            block_size_tokens=bs,
            max_model_len=mml,
            fits=fits,
            reason=reason,
            attention_dp=self.attention_dp,
            kv_bytes_window_per_seq=window_part,
            sliding_window_tokens=int(window) if (sliding or csa or hca) else 0,
            hybrid_block_tokens=hybrid_block,
        )

    def _matrix_compute_dtype(self, s: Any) -> str:
        """The tensor-core dtype the matrix ``s`` multiplies in (:func:`matrix_compute_dtype` of the dtype
        ``ModelSpec.weight_dtype_of`` holds it in): an MXFP4 checkpoint's 4-bit matrices run weight-only."""
        stored = str(self.model.weight_dtype_of(s, self.weight_precision))
        mx = stored == "mxfp4" or (stored == "fp4" and getattr(self.model, "native_dtype", None) == "mxfp4")
        return matrix_compute_dtype(
            stored, self.gpu, mxfp4=mx, mxfp4_activation=self.engine_coeffs.mxfp4_activation_dtype
        )

    def _weight_elem_bytes(self, s: Any) -> float:
        """Bytes per weight of the matrix ``s`` in this deployment (``ModelSpec.bytes_per_weight_of``, the rule
        the catalogue's weight sizes use too)."""
        return float(self.model.bytes_per_weight_of(s, self.weight_precision))

    def _vllm_hybrid_pages(
        self,
        attn_bytes_per_token: float,
        full: int,
        sliding: int,
        linear: int,
        prefix_caching: bool | None,
        *,
        mla: bool = False,
    ) -> tuple[int, float, tuple[float, float]]:
        """How vLLM's hybrid KV-cache manager holds a model with linear-attention (Mamba2, Gated DeltaNet) layers:
        (attention block size in tokens, linear-state bytes per sequence per GPU, padding factors of the full and
        the sliding layers' cache).

        vLLM (0.32: ``platforms/interface.py``, ``v1/core/kv_cache_utils.py``, ``v1/kv_cache_interface.py``) pages
        every layer alike: it raises the attention block size to the smallest multiple of 16 tokens whose page (one
        layer's KV for that many tokens) holds one layer's state, pads the state to that page, groups the layers
        into groups of the smallest kind's count (the largest when within 1.5x of it), padding the other kinds to
        whole groups, and holds a sequence's state in one page per layer, two with prefix caching (``mamba_cache_mode
        align``, its default once prefix caching is on) and one more per speculative token."""
        m = self.model
        state_per_layer = float(m.linear_state_bytes_per_sequence()) / linear / min(self.tp, m.linear_num_value_heads)
        # the attention backends' smallest kernel block; MLA decode kernels need blocks of 128 (vLLM aligns hybrid
        # MLA models' block to it: Kimi-K3)
        align = 128 if mla else 16
        block = align * max(1, math.ceil(state_per_layer / (align * attn_bytes_per_token)))
        page = block * attn_bytes_per_token
        counts = [n for n in (full, sliding, linear) if n]
        group = min(counts)
        if max(counts) < 1.5 * group:
            group = max(counts)

        def padded(n: int) -> int:
            return math.ceil(n / group) * group if n else 0

        held = 2 if (prefix_caching is None or prefix_caching) else 1
        spec = self.speculative
        if spec is not None and spec.method != "ngram":
            held += spec.num_draft_tokens
        state = padded(linear) * held * page
        return block, state, (padded(full) / full, (padded(sliding) / sliding) if sliding else 1.0)


def _sanitise(curve: LogCurve) -> LogCurve:
    """Make ``tokens / eff(tokens)`` non-decreasing under log-linear interpolation, so GEMM time never
    decreases when tokens grow: between knots ``eff`` may grow at most by ``1 + ln(x2/x1)``."""
    ys = list(curve.ys)
    for i in range(1, len(ys)):
        cap = ys[i - 1] * (1.0 + math.log(curve.xs[i] / curve.xs[i - 1]))
        ys[i] = min(max(ys[i], 1e-6), cap)
    ys[0] = max(ys[0], 1e-6)
    return LogCurve(curve.xs, tuple(ys))
