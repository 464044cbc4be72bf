"""The planner's search space: deployment *shapes* and their enumeration.

A :class:`Candidate` is a deployment shape without its size: one pool (aggregated) or a prefill pool and a
decode pool (disaggregated, xPyD), each with a GPU type, parallelism and engine knobs, plus a router policy.
The size is an integer *level* ``m``: an aggregated candidate runs ``m`` replicas, a disaggregated ``xPyD``
candidate runs ``x*m`` prefill and ``y*m`` decode replicas. The screen picks a first level, the simulator
verification searches it.

Enumeration (:func:`enumerate_candidates`) is the cross product of the :class:`SearchSpace` axes, minus what
the flags forbid (lower precision only with ``allow_lower_precision``; PP only when the model does not fit
in one node's TP; EP only for MoE models) and minus shapes whose weights do not fit (each recorded as a
rejection with its reason).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Candidate",
    "FitCheck",
    "PoolShape",
    "Rejection",
    "SearchSpace",
    "enumerate_candidates",
]


@dataclass(frozen=True, slots=True)
class PoolShape:
    """One pool's replica shape: GPU type, parallelism and engine knobs (no replica count)."""

    role: str  # "mixed" (aggregated) | "prefill" | "decode"
    gpu_id: str  # catalogue accelerator id
    tp: int = 1  # tensor parallel degree
    pp: int = 1  # pipeline parallel degree
    ep: int = 1  # expert parallel degree (MoE only): experts spread over a pipeline stage's tp GPUs
    max_num_seqs: int = 256  # engine cap on concurrently running sequences
    max_num_batched_tokens: int = 8192  # engine token budget per step (= chunked-prefill chunk size)
    enable_prefix_caching: bool = True
    kv_offload: str = "none"  # "none" | "cpu": second KV tier in host memory
    weight_precision: str = "bf16"
    kv_dtype: str = "bf16"

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    def label(self) -> str:
        par = f"tp{self.tp}" + (f"pp{self.pp}" if self.pp > 1 else "") + (f"ep{self.ep}" if self.ep > 1 else "")
        knobs = f"seqs{self.max_num_seqs}/tok{self.max_num_batched_tokens}"
        pc = "pc" if self.enable_prefix_caching else "nopc"
        off = "" if self.kv_offload == "none" else f"+{self.kv_offload}"
        prec = "" if (self.weight_precision, self.kv_dtype) == ("bf16", "bf16") else f" w{self.weight_precision}/kv{self.kv_dtype}"
        return f"{self.gpu_id} {par} {knobs} {pc}{off}{prec}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A deployment shape. ``pools`` is ``(mixed,)`` or ``(prefill, decode)``; ``pd_ratio`` is ``(x, y)``."""

    pools: tuple[PoolShape, ...]
    router: str
    pd_ratio: tuple[int, int] | None = None

    @property
    def disaggregated(self) -> bool:
        return self.pd_ratio is not None

    def replicas_at(self, level: int) -> tuple[int, ...]:
        """Replica count of each pool at size ``level``."""
        if self.pd_ratio is None:
            return (level,)
        x, y = self.pd_ratio
        return (x * level, y * level)

    def num_gpus_at(self, level: int) -> int:
        return sum(n * p.gpus_per_replica for n, p in zip(self.replicas_at(level), self.pools, strict=True))

    def key(self) -> str:
        """A stable, unique, human-readable id."""
        if self.pd_ratio is None:
            return f"agg[{self.pools[0].label()}] router={self.router}"
        x, y = self.pd_ratio
        return f"{x}P{y}D[P: {self.pools[0].label()} | D: {self.pools[1].label()}] router={self.router}"

    def structure(self) -> tuple[object, ...]:
        """Coarse identity used to keep the verified set diverse (GPU types, parallelism, layout)."""
        return (self.pd_ratio is not None,) + tuple((p.gpu_id, p.tp, p.pp, p.weight_precision) for p in self.pools)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a candidate (at some size) was not chosen. ``kind`` is "memory" | "slo" | "cost" | "screen"."""

    candidate: str  # Candidate.key()
    kind: str
    reason: str  # one line, with the metric/value/limit or the memory shortfall
    stage: str = "screen"  # "enumerate" | "screen" | "simulate"
    num_gpus: int | None = None


# checkpoint weight dtypes (ModelSpec.native_dtype) -> the precision the planner and the performance model use
_PLANNER_PRECISION = {
    "bf16": "bf16", "fp16": "bf16", "fp32": "bf16", "fp8": "fp8", "int8": "fp8",
    "nvfp4": "fp4", "fp4": "fp4", "mxfp4": "mxfp4", "int4": "int4",
}  # fmt: skip


def planner_precision(native_dtype: str) -> str:
    """The weight precision a checkpoint of ``native_dtype`` (``ModelSpec.native_dtype``) is planned and run at."""
    return _PLANNER_PRECISION.get(native_dtype.strip().lower(), "bf16")


def checkpoint_weight_precision(spec: Any, name: str) -> str:
    """The weight precision the checkpoint ``name`` asks for (``catalog.resolve_checkpoint``: nvidia/DeepSeek-R1-NVFP4
    is fp4, deepseek-ai/DeepSeek-R1 fp8) is planned and run at."""
    from gpuyield.core.catalog import resolve_checkpoint

    return planner_precision(resolve_checkpoint(spec, name)[1])


def default_kv_dtype(model: object) -> str:
    """The KV-cache dtype a plan starts from: bf16, or fp8 where the model's engines accept no other
    (DeepSeek-V4's compressed cache)."""
    return "fp8" if getattr(model, "uses_compressed_attention", False) else "bf16"


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """The axes searched. Defaults are what ``gpuyield plan`` uses."""

    gpu_ids: tuple[str, ...]
    tp_options: tuple[int, ...] = (1, 2, 4, 8)
    pp_options: tuple[int, ...] = (1, 2)  # PP > 1 only tried when the model does not fit in max TP
    max_num_seqs_options: tuple[int, ...] = (64, 128, 256, 512)
    max_num_batched_tokens_options: tuple[int, ...] = (2048, 8192, 16384)
    prefix_caching_options: tuple[bool, ...] = (True, False)
    kv_offload_options: tuple[str, ...] = ("none", "cpu")
    routers: tuple[str, ...] = ("round_robin", "least_outstanding", "prefix_affinity", "cost")
    weight_precisions: tuple[str, ...] = ("bf16",)
    kv_dtypes: tuple[str, ...] = ("bf16",)
    # the checkpoint's own weight precision: engines run it wherever they load the checkpoint (weight-only kernels
    # where the GPU lacks the format's tensor cores), so it is not checked against the GPU as a planner's choice is
    native_precision: str = "bf16"
    allow_disaggregated: bool = True
    pd_ratios: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (1, 3), (2, 1), (2, 3))
    # Disaggregated pools use a smaller knob set: prefill pools batch by tokens, decode pools by sequences.
    prefill_max_num_batched_tokens: int = 16384
    pd_routers: tuple[str, ...] = ("least_outstanding",)
    max_gpus_per_node: int = 8
    is_moe: bool = False
    # step-budget tokens a decoding sequence takes (K + 1 with speculative decoding): a token budget must hold
    # max_num_seqs of them, as vLLM requires
    decode_budget_tokens: int = 1

    @classmethod
    def for_request(
        cls,
        gpu_ids: tuple[str, ...],
        *,
        allow_lower_precision: bool,
        allow_disaggregated: bool,
        is_moe: bool,
        routers: tuple[str, ...] | None = None,
        decode_budget_tokens: int = 1,
        native_precision: str = "bf16",
        kv_dtypes: tuple[str, ...] | None = None,
    ) -> SearchSpace:
        """The default space for a plan request: the checkpoint as shipped (``native_precision``: a natively fp8,
        fp4 or int4 checkpoint is planned at that precision, not upcast to bf16); a bf16 checkpoint may also be
        quantised to fp8, and the KV cache kept in fp8, only with the quality flag. ``kv_dtypes`` pins the KV
        cache's dtypes where the model allows no other (DeepSeek-V4: fp8)."""
        native = planner_precision(native_precision)
        kw: dict[str, object] = {"decode_budget_tokens": decode_budget_tokens, "native_precision": native}
        if routers:
            kw["routers"] = routers
        kw["weight_precisions"] = (native,)
        if allow_lower_precision:
            if native == "bf16":
                kw["weight_precisions"] = ("bf16", "fp8")
            kw["kv_dtypes"] = ("bf16", "fp8")
        if kv_dtypes:
            kw["kv_dtypes"] = kv_dtypes
        return cls(gpu_ids=gpu_ids, allow_disaggregated=allow_disaggregated, is_moe=is_moe, **kw)  # type: ignore[arg-type]


# fits(gpu_id, tp, pp, weight_precision, kv_dtype) -> None if the weights + a minimum KV fit, else a reason.
FitCheck = Callable[[str, int, int, str, str], "str | None"]
# supports(gpu_id, precision) -> whether the accelerator runs this precision natively.
PrecisionCheck = Callable[[str, str], bool]


def _parallel_shapes(
    space: SearchSpace, gpu_id: str, wp: str, kvd: str, fits: FitCheck, rejections: list[Rejection]
) -> Iterator[tuple[int, int]]:
    """(tp, pp) pairs that fit; PP only when no single-node TP fits."""
    single_node_fit = False
    for tp in space.tp_options:
        if tp > space.max_gpus_per_node:
            continue
        why = fits(gpu_id, tp, 1, wp, kvd)
        if why is None:
            single_node_fit = True
            yield tp, 1
        else:
            rejections.append(
                Rejection(f"{gpu_id} tp{tp} w{wp}/kv{kvd}", "memory", why, stage="enumerate", num_gpus=tp)
            )
    if single_node_fit:
        return
    for pp in space.pp_options:
        if pp <= 1:
            continue
        tp = space.max_gpus_per_node
        why = fits(gpu_id, tp, pp, wp, kvd)
        if why is None:
            yield tp, pp
        else:
            rejections.append(
                Rejection(f"{gpu_id} tp{tp}pp{pp} w{wp}/kv{kvd}", "memory", why, stage="enumerate", num_gpus=tp * pp)
            )


def enumerate_candidates(
    space: SearchSpace,
    fits: FitCheck,
    supports_precision: PrecisionCheck | None = None,
) -> tuple[list[Candidate], list[Rejection]]:
    """All candidate shapes of ``space`` whose weights fit, plus a rejection for each that does not."""
    rejections: list[Rejection] = []
    out: list[Candidate] = []
    parallel: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    precisions = list(itertools.product(space.weight_precisions, space.kv_dtypes))
    for gpu_id in space.gpu_ids:
        for wp, kvd in precisions:
            if supports_precision is not None:
                chosen = [kvd] if wp == space.native_precision else [wp, kvd]  # the checkpoint's own runs anywhere
                missing = [p for p in chosen if not supports_precision(gpu_id, p)]
                if missing:
                    reason = f"{gpu_id} has no native {missing[0]} support"
                    rejections.append(Rejection(f"{gpu_id} w{wp}/kv{kvd}", "precision", reason, stage="enumerate"))
                    continue
            parallel[(gpu_id, wp, kvd)] = list(_parallel_shapes(space, gpu_id, wp, kvd, fits, rejections))

    for (gpu_id, wp, kvd), shapes in parallel.items():
        for (tp, pp), mns, mbt, pc, off, router in itertools.product(
            shapes,
            space.max_num_seqs_options,
            space.max_num_batched_tokens_options,
            space.prefix_caching_options,
            space.kv_offload_options,
            space.routers,
        ):
            if off != "none" and not pc:
                continue  # an offload tier only holds prefix-cache blocks: meaningless without caching
            if mbt < mns * space.decode_budget_tokens:
                continue  # the budget cannot hold a full batch of decodes (K + 1 tokens each when speculating)
            if router == "prefix_affinity" and not pc:
                continue  # routing for cache hits with no cache is round-robin with extra steps
            ep = tp if space.is_moe else 1  # per pipeline stage: each stage holds its own layers' experts
            pool = PoolShape("mixed", gpu_id, tp, pp, ep, mns, mbt, pc, off, wp, kvd)
            out.append(Candidate((pool,), router))

    if space.allow_disaggregated:
        for (pkey, pshapes), (dkey, dshapes) in itertools.product(parallel.items(), repeat=2):
            (pg, pwp, pkv), (dg, dwp, dkv) = pkey, dkey
            if (pwp, pkv) != (dwp, dkv):
                continue  # KV handed from prefill to decode must keep its dtype
            for (ptp, ppp), (dtp, dpp), mns, ratio, router in itertools.product(
                pshapes, dshapes, space.max_num_seqs_options, space.pd_ratios, space.pd_routers
            ):
                if ptp > 2 or dtp > 2:
                    continue  # P/D pays off for small-TP replicas of models that fit; keep the space tractable
                pep = ptp if space.is_moe else 1
                dep = dtp if space.is_moe else 1
                prefill = PoolShape(
                    "prefill", pg, ptp, ppp, pep, max(mns, 64), space.prefill_max_num_batched_tokens, True, "none", pwp, pkv
                )
                decode = PoolShape("decode", dg, dtp, dpp, dep, mns, max(2048, mns * space.decode_budget_tokens), True,
                                   "none", dwp, dkv)  # fmt: skip
                out.append(Candidate((prefill, decode), router, ratio))
    return out, rejections
