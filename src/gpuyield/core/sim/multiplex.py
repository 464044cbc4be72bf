"""Several models on shared GPUs in the simulator: groups, transition costs, residency and co-residence.

A deployment's ``multiplex`` section lists *GPU groups*. Each group (``tp`` GPUs of one type, ``replicas``
identical copies) hosts several models. Every (group copy, model) pair is one engine replica in the cluster,
named ``<group>-<k>/<model>``; the group's :class:`~gpuyield.core.policy.residency.ResidencyPolicy` decides
which of its models are awake:

- a request for a model that is asleep waits for its wake (level 1: weights back over the host link; level 2:
  reload from storage; never started: cold load); concurrent requests share one wake;
- when memory is short, the awake model least likely to be needed (decayed-rate forecast, then LRU) and with
  nothing in flight is put to sleep; if the models that must make room are busy, they are *drained* (finish
  their work, take no new work) and the request is held until they are idle (retried after every completion);
- idle models are put to sleep after ``idle_sleep_s`` (evaluated lazily at the next event of the group);
- co-residence: the engines of one group share its GPUs; a run that starts while ``n`` other engines of the
  group are running is slowed by ``1 + interference * n`` (``co_residence_interference`` in
  ``sim/data/multiplex.yaml``; 1.0 = full time slicing).

Memory of a group = GPU memory x ``gpu_memory_utilization`` x GPUs. A model's footprint = its weights and
runtime reserve (from the performance model's memory plan) + its KV budget (``kv_budget_gb`` per GPU).
Known simplification: a sleeping model's prefix cache is kept in the simulator (vLLM drops it), a small
optimistic bias for the first requests after a wake.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpuyield.core.policy.base import ReplicaSnapshot, RequestView, RoutingPolicy
from gpuyield.core.policy.residency import ModelFootprint, ResidencyPolicy, ResidencyStats
from gpuyield.errors import ConfigError, DoesNotFitError

__all__ = [
    "ModelRef",
    "MultiplexGroupSpec",
    "MultiplexSpec",
    "MultiplexState",
    "build_multiplex",
    "multiplex_costs",
    "multiplex_summary",
    "ResidencyTrackingPolicy",
    "transition_footprint",
]


class ModelRef(BaseModel):
    """A named deployment of a catalogue architecture (e.g. one of several fine-tunes of the same base)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="the name requests use")
    model: str = Field(min_length=1, description="catalogue model id or alias (the architecture)")
    weight_precision: str | None = Field(
        default=None, min_length=1, description="this model's weight precision (its checkpoint's); None: the group's"
    )


class MultiplexGroupSpec(BaseModel):
    """One group of GPUs shared by several models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    gpu: str = Field(min_length=1, description="catalogue GPU id or alias")
    tp: int = Field(default=1, ge=1, description="GPUs per group copy; every model runs with this TP")
    replicas: int = Field(default=1, ge=1, le=10_000, description="identical copies of the group")
    models: list[str | ModelRef] = Field(min_length=1, description="catalogue model ids, or {name, model} refs")
    weight_precision: str = "bf16"
    kv_dtype: str = "bf16"
    kv_budget_gb: float | None = Field(default=None, gt=0, description="KV GB per GPU reserved by an awake model")
    initially_awake: list[str] = Field(default_factory=list)
    prewarm: bool = Field(default=True, description="load every model once at start-up and put it to sleep")
    idle_sleep_s: float | None = Field(default=None, gt=0)
    host_memory_gb: float | None = Field(default=None, ge=0, description="host RAM for level-1 sleep, whole group")
    wake_l1_s: float | None = Field(default=None, gt=0, description="override: measured level-1 wake time")
    wake_l2_s: float | None = Field(default=None, gt=0, description="override: measured level-2 wake time")
    cold_load_s: float | None = Field(default=None, gt=0, description="override: measured cold-load time")
    engine: dict[str, Any] = Field(default_factory=dict, description="engine knobs, as a pool's 'engine'")

    @model_validator(mode="after")
    def _check(self) -> MultiplexGroupSpec:
        names = self.model_names
        unknown = [m for m in self.initially_awake if m not in names]
        if unknown:
            raise ValueError(f"initially_awake names models not in 'models': {unknown}")
        if len(set(names)) != len(names):
            raise ValueError("models must be unique within a group")
        return self

    @property
    def model_names(self) -> list[str]:
        return [m if isinstance(m, str) else m.name for m in self.models]

    @property
    def model_archs(self) -> list[str]:
        return [m if isinstance(m, str) else m.model for m in self.models]


class MultiplexSpec(BaseModel):
    """The ``multiplex`` section of a deployment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[MultiplexGroupSpec] = Field(min_length=1)
    forecast_halflife_s: float = Field(default=60.0, gt=0)
    co_residence_interference: float | None = Field(default=None, ge=0)


@cache
def multiplex_costs() -> dict[str, Any]:
    """The sourced constants in ``sim/data/multiplex.yaml``."""
    text = resources.files("gpuyield.core.sim").joinpath("data/multiplex.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def transition_footprint(
    model_id: str,
    gpu_id: str,
    num_gpus: int,
    weights_gb_per_gpu: float,
    reserve_gb_per_gpu: float,
    kv_budget_gb_per_gpu: float,
    spec: MultiplexGroupSpec | None = None,
) -> ModelFootprint:
    """Memory and wake/sleep costs of one model on one group, from the sourced constants."""
    c = multiplex_costs()
    host = float(c["host_link_gb_s"]["by_gpu"].get(gpu_id, c["host_link_gb_s"]["default"]))
    storage = float(c["storage_read_gb_s"]["value"])
    w = weights_gb_per_gpu  # every GPU of the group copies its shard in parallel
    wake_l1 = float(c["wake_fixed_s"]["value"]) + w / host
    wake_l2 = float(c["wake_l2_fixed_s"]["value"]) + w * num_gpus / storage
    cold = float(c["engine_start_s"]["value"]) + w * num_gpus / storage
    if spec is not None:
        wake_l1 = spec.wake_l1_s or wake_l1
        wake_l2 = spec.wake_l2_s or wake_l2
        cold = spec.cold_load_s or cold
    return ModelFootprint(
        model=model_id,
        weight_bytes=(weights_gb_per_gpu + reserve_gb_per_gpu) * 1e9 * num_gpus,
        kv_budget_bytes=kv_budget_gb_per_gpu * 1e9 * num_gpus,
        wake_l1_s=wake_l1,
        wake_l2_s=wake_l2,
        cold_load_s=cold,
        sleep_s=w / host,
    )


class _SharedGpuStepTime:
    """A model's step time on a GPU group shared with other engines (co-residence slowdown)."""

    __slots__ = ("inner", "interference", "engines", "me")

    def __init__(self, inner: Any, interference: float) -> None:
        self.inner = inner
        self.interference = interference
        self.engines: list[Any] = []  # the group copy's engines, filled once the cluster exists
        self.me: Any = None

    def step_time_s(
        self, num_prefill_tokens: int, prefill_attn_tokens_sq: float, num_decode_seqs: int, decode_ctx_tokens: int
    ) -> float:
        t: float = self.inner.step_time_s(num_prefill_tokens, prefill_attn_tokens_sq, num_decode_seqs, decode_ctx_tokens)
        if self.interference > 0.0:
            others = sum(1 for e in self.engines if e is not self.me and e.run is not None)
            if others:
                t *= 1.0 + self.interference * others
        return t


@dataclass(slots=True)
class MultiplexState:
    """Residency policies per group copy, the cluster hook, and what happened (for the summary)."""

    policies: dict[str, ResidencyPolicy]  # group copy id -> policy
    replica_group: dict[str, str]  # replica id -> group copy id
    replica_model: dict[str, str]  # replica id -> the model label it serves
    step_models: dict[str, _SharedGpuStepTime]  # replica id -> shared step model
    waited: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # model -> [(arrival, ready)]

    # ---- the cluster's ModelResidency hook
    def wake_delay_s(self, replica_id: str, model: str, now_s: float) -> float:
        """Delay before a new request can run; ``inf`` = held until :meth:`retry_delay_s` answers."""
        pol = self.policies[self.replica_group[replica_id]]
        self._idle_sleeps(pol, now_s)
        ready = pol.acquire(model, now_s)
        if ready is None:
            self.waited.setdefault(model, []).append((now_s, math.nan))
            return math.inf
        if ready > now_s:
            self.waited.setdefault(model, []).append((now_s, ready))
        return max(0.0, ready - now_s)

    def retry_delay_s(self, replica_id: str, model: str, now_s: float) -> float:
        """A held request asks again (after some request finished); ``inf`` = still held."""
        pol = self.policies[self.replica_group[replica_id]]
        ready = pol.retry(model, now_s)
        return math.inf if ready is None else max(0.0, ready - now_s)

    def release(self, replica_id: str, now_s: float) -> None:
        """A request finished on ``replica_id`` (replicas outside every group are ignored)."""
        group = self.replica_group.get(replica_id)
        if group is not None:
            pol = self.policies[group]
            pol.release(self.replica_model[replica_id], now_s)
            self._idle_sleeps(pol, now_s)

    def attach_engines(self, engines_by_replica: dict[str, Any]) -> None:
        by_group: dict[str, list[Any]] = {}
        for rid, g in self.replica_group.items():
            by_group.setdefault(g, []).append(engines_by_replica[rid])
        for rid, sm in self.step_models.items():
            sm.engines = by_group[self.replica_group[rid]]
            sm.me = engines_by_replica[rid]

    @staticmethod
    def _idle_sleeps(pol: ResidencyPolicy, now_s: float) -> None:
        if pol.idle_sleep_s is None:
            return
        for name in pol.due_sleeps(now_s):
            due = pol.next_idle_sleep_s(name)  # asleep from when it became due (lazy evaluation)
            pol.mark_asleep(name, now_s if due is None else min(due, now_s))

    def summary(self, end_s: float, duration_s: float) -> dict[str, Any]:
        stats: list[ResidencyStats] = [p.finish(end_s) for p in self.policies.values()]
        wakes = sum(s.wakes for s in stats)
        hours = duration_s / 3600.0 if duration_s > 0 else math.nan
        awake: dict[str, float] = {}
        wakes_by_model: dict[str, int] = {}
        for s in stats:
            for k, v in s.awake_time_s.items():
                awake[k] = awake.get(k, 0.0) + v
            for k, v in s.wakes_by_model.items():
                wakes_by_model[k] = wakes_by_model.get(k, 0) + v
        return {
            "groups": len(self.policies),
            "wakes": wakes,
            "cold_loads": sum(s.cold_loads for s in stats),
            "sleeps": sum(s.sleeps for s in stats),
            "evictions": sum(s.evictions for s in stats),
            "swaps_per_hour": wakes / hours if math.isfinite(hours) and hours > 0 else None,
            "wake_time_s": sum(s.wake_time_s for s in stats),
            "awake_time_s": awake,
            "wakes_by_model": wakes_by_model,
            "requests_waiting_for_wake": sum(len(v) for v in self.waited.values()),
        }


class ResidencyTrackingPolicy(RoutingPolicy):
    """Wraps the fleet's routing policy so request completions release the model's residency."""

    def __init__(self, inner: RoutingPolicy, state: MultiplexState) -> None:
        self.inner = inner
        self.state = state
        self.name = inner.name

    def choose(self, req: RequestView, replicas: Sequence[ReplicaSnapshot], now_s: float) -> str:
        return self.inner.choose(req, replicas, now_s)

    def on_dispatch(self, req: RequestView, replica_id: str, now_s: float) -> None:
        self.inner.on_dispatch(req, replica_id, now_s)

    def on_complete(self, req: RequestView, replica_id: str, now_s: float) -> None:
        self.inner.on_complete(req, replica_id, now_s)
        self.state.release(replica_id, now_s)

    def on_replica_removed(self, replica_id: str) -> None:
        self.inner.on_replica_removed(replica_id)


def build_multiplex(
    spec: MultiplexSpec, catalog: Any, engine_spec_cls: Any, setup_cls: Any, calibration: Any = None,
    measured_at: Callable[[str, str], tuple[int, int] | None] | None = None,
) -> tuple[
    list[Any], MultiplexState, list[dict[str, Any]]
]:  # fmt: skip
    """Replica setups for every (group copy, model), the shared residency state and per-group info.
    ``measured_at(group, label)`` (None: the step model alone) gives the (mean prompt, mean output) tokens of
    the requests a group's model receives: each model whose architecture, engine and precision the calibration
    holds measured points of has its step times adjusted to them there, as a pool's are (info's
    ``measured_step_scales``, per model)."""
    from gpuyield.core.perf import PerfModel
    from gpuyield.core.perf.closed_loop import own_scheduler_limits
    from gpuyield.core.sim.closed_loop import engine_config_for_memory_plan
    from gpuyield.core.sim.measured import with_measured_scales

    interference = spec.co_residence_interference
    if interference is None:
        interference = float(multiplex_costs()["co_residence_interference"]["value"])
    host_per_gpu = float(multiplex_costs()["host_memory_gb_per_gpu"]["value"])
    setups: list[Any] = []
    policies: dict[str, ResidencyPolicy] = {}
    replica_group: dict[str, str] = {}
    replica_model: dict[str, str] = {}
    step_models: dict[str, _SharedGpuStepTime] = {}
    info: list[dict[str, Any]] = []
    for g in spec.groups:
        where = f"multiplex.groups[{g.name}]"
        gpu = calibration.accelerator(catalog, g.gpu) if calibration is not None else catalog.gpu(g.gpu)
        try:
            eng = engine_spec_cls(**g.engine)
        except Exception as exc:
            raise ConfigError(f"{where}.engine: {exc}") from None
        models = [catalog.model(m) for m in g.model_archs]
        labels = [m.id if isinstance(ref, str) else ref.name for ref, m in zip(g.models, models, strict=True)]
        built = []
        for ref, m in zip(g.models, models, strict=True):
            prec = (ref.weight_precision if isinstance(ref, ModelRef) else None) or g.weight_precision
            try:
                built.append(PerfModel.build(m, gpu, tp=g.tp, weight_precision=prec, kv_dtype=g.kv_dtype,
                                             engine=eng.family, calibration=calibration))  # fmt: skip
            except ConfigError as exc:
                raise ConfigError(f"{where}.models[{m.id}]: {exc}") from None
        # the engine's own limits on this GPU, as `estimate` takes them (engine_families.yaml, or the calibration's
        # pins for the first model's precision): one engine configuration serves the group
        cfg = eng.to_config(model_max_len=max(m.max_position_embeddings for m in models),
                            own_limits=own_scheduler_limits(built[0]))  # fmt: skip
        perfs = []
        plans = []
        scales_of: dict[str, Any] = {}
        for perf, m, lab in zip(built, models, labels, strict=True):
            perf, sc = with_measured_scales(
                perf, model_id=m.id, gpu_id=gpu.id, engine=cfg.family,
                at=measured_at(g.name, lab) if measured_at is not None else None, calibration=calibration,
                catalog=catalog, max_num_seqs=cfg.max_num_seqs,
            )  # fmt: skip
            if sc is not None:
                scales_of[lab] = sc.to_dict()
            plan = perf.memory(cfg.gpu_memory_utilization, cfg.max_model_len, prefix_caching=cfg.enable_prefix_caching)
            perfs.append(perf)
            plans.append(plan)
        usable_gb = gpu.memory_gb * cfg.gpu_memory_utilization  # per GPU
        fixed = sorted((p.weights_gb + p.runtime_reserve_gb for p in plans), reverse=True)
        if g.kv_budget_gb is not None:
            kv_gb = g.kv_budget_gb
        else:
            # room for the two largest models side by side, else for the largest one alone
            two = (usable_gb - sum(fixed[:2])) / 2 if len(fixed) > 1 else -1.0
            kv_gb = two if two >= 2.0 else usable_gb - fixed[0]
        for m, p in zip(models, plans, strict=True):
            if p.weights_gb + p.runtime_reserve_gb + kv_gb > usable_gb + 1e-9 or kv_gb <= 0:
                raise DoesNotFitError(
                    f"{where}: {m.id} needs {p.weights_gb + p.runtime_reserve_gb:.1f} GB weights+reserve and "
                    f"{kv_gb:.1f} GB KV per GPU but {gpu.id} offers {usable_gb:.1f} GB"
                )
        label_of = dict(zip(g.model_names, labels, strict=True))
        awake_ids = tuple(label_of[a] for a in g.initially_awake)
        host_gb = g.host_memory_gb if g.host_memory_gb is not None else host_per_gpu * g.tp
        for k in range(g.replicas):
            gid = f"{g.name}-{k}"
            fps = [
                transition_footprint(lab, gpu.id, g.tp, p.weights_gb, p.runtime_reserve_gb, kv_gb, g)
                for lab, p in zip(labels, plans, strict=True)
            ]
            policies[gid] = ResidencyPolicy(
                gid, usable_gb * 1e9 * g.tp, fps, host_memory_bytes=host_gb * 1e9, initially_awake=awake_ids,
                idle_sleep_s=g.idle_sleep_s, forecast_halflife_s=spec.forecast_halflife_s, prewarmed=g.prewarm,
            )  # fmt: skip
            for j, (m, lab, perf, p) in enumerate(zip(models, labels, perfs, plans, strict=True)):
                rid = f"{gid}/{lab}"
                sm = _SharedGpuStepTime(perf, interference)
                kv_tokens = int(kv_gb * 1e9 / p.kv_bytes_per_token) if p.kv_bytes_per_token > 0 else 0
                blocks = max(1, kv_tokens // cfg.block_size)
                m_cfg = engine_config_for_memory_plan(cfg, p)
                setups.append(
                    setup_cls(
                        replica_id=rid, pool=g.name, role="mixed", gpu=gpu.id, model=lab, engine_config=m_cfg,
                        step_model=sm, num_gpu_blocks=blocks, kv_bytes_per_token=float(m.kv_bytes_per_token(g.kv_dtype)),
                        fixed_blocks_of=functools.partial(p.fixed_blocks_for, block_size=cfg.block_size),
                        num_gpus=g.tp if j == 0 else 0, tp=g.tp,
                        first_token_overhead_s=perf.first_token_overhead_s,
                    )
                )  # fmt: skip
                replica_group[rid] = gid
                replica_model[rid] = lab
                step_models[rid] = sm
        fps0 = policies[f"{g.name}-0"].footprints()
        info.append({"group": g.name, "gpu": gpu.id, "tp": g.tp, "replicas": g.replicas,
                     "models": labels, "kv_budget_gb_per_gpu": kv_gb, "memory_gb": usable_gb * g.tp,
                     "max_num_seqs": cfg.max_num_seqs, "max_num_batched_tokens": cfg.max_num_batched_tokens,
                     "measured_step_scales": {lab: scales_of.get(lab) for lab in labels},
                     "footprints": [{"model": f.model, "resident_gb": f.resident_bytes / 1e9, "wake_l1_s": f.wake_l1_s,
                                     "wake_l2_s": f.wake_l2_s, "cold_load_s": f.cold_load_s} for f in fps0]})  # fmt: skip
    return setups, MultiplexState(policies, replica_group, replica_model, step_models), info


def multiplex_summary(state: MultiplexState, rec: Any, workload: Any, duration_s: float, slo: Any) -> dict[str, Any]:
    """The ``multiplex`` block of a simulation summary: transitions, cold-start TTFT, per-model SLO attainment."""
    import numpy as np

    out = state.summary(float(rec.end_s), duration_s)
    ids = rec.replica_ids
    n = len(rec.arrival_s)
    models: list[str | None] = []
    codes = workload.model_codes.tolist()
    for i, k in enumerate(rec.replica.tolist()):
        rid = ids[k] if k >= 0 else None
        models.append(state.replica_model.get(rid) if rid is not None else workload.models[codes[i]])
    waited = {m: {a for a, _ in v} for m, v in state.waited.items()}
    ttft_ms = (rec.first_token_s - rec.arrival_s) * 1e3
    out_tok = rec.output_tokens
    tpot_ms = np.where(out_tok > 1, (rec.finish_s - rec.first_token_s) / np.maximum(out_tok - 1, 1) * 1e3, 0.0)
    cold: list[float] = []
    per_model: dict[str, dict[str, Any]] = {}
    arrivals = rec.arrival_s.tolist()
    done = (rec.status == 0).tolist()
    for i in range(n):
        m = models[i] or "default"
        d = per_model.setdefault(m, {"requests": 0, "completed": 0, "slo_met": 0, "cold_start_requests": 0})
        d["requests"] += 1
        if not done[i]:
            continue
        d["completed"] += 1
        ok = True
        if slo is not None:
            if slo.ttft_p99_ms is not None and ttft_ms[i] > slo.ttft_p99_ms:
                ok = False
            if slo.tpot_p99_ms is not None and tpot_ms[i] > slo.tpot_p99_ms:
                ok = False
        d["slo_met"] += int(ok)
        if arrivals[i] in waited.get(m, ()):
            d["cold_start_requests"] += 1
            cold.append(float(ttft_ms[i]))
    for d in per_model.values():
        d["slo_attainment"] = d["slo_met"] / d["requests"] if d["requests"] else None
    if cold:
        c = np.asarray(cold)
        p50, p90, p99 = np.percentile(c, [50, 90, 99])
        out["cold_start_ttft_ms"] = {"n": len(cold), "mean": float(c.mean()), "p50": float(p50), "p90": float(p90),
                                     "p99": float(p99), "max": float(c.max())}  # fmt: skip
    else:
        out["cold_start_ttft_ms"] = {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    out["per_model"] = per_model
    return out
