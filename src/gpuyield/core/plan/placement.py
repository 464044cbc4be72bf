"""Many models on few GPUs: placement of models onto shared GPU groups, verified by the simulator.

``plan --multi-model`` answers: how many GPUs do these models need at the SLO when they share GPUs (sleeping
and waking by demand), against one dedicated deployment per model?

1. **Dedicated baseline.** For each model alone (its own requests), the smallest number of replicas whose
   simulated requests meet the SLO (per-model attainment >= ``attainment_target``, i.e. the p99 when the
   target is 0.99). Each replica runs at the smallest TP that fits the model on the GPU.
2. **Load.** The dedicated run gives each model's busy GPU fraction ``L``; a model gets
   ``ceil(L / copy_utilisation)`` copies (a hot model is placed on several groups and routed across them).
3. **Placement.** For ``G`` groups, copies are packed largest-load first onto the least-loaded group that
   does not already host that model (LPT), then verified by simulating the whole workload on the multiplexed
   fleet (residency: wake on demand, eviction by demand forecast + LRU, draining, idle sleep). ``G`` grows
   from the load bound until every model meets the SLO, or until it reaches the dedicated GPU count.

Every simulation is reproducible for a seed; the simulator is passed in (``simulate_fn``), so this module has
no I/O and runs unchanged under any executor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuyield.core.sim.deployment import Deployment, parse_deployment
from gpuyield.core.workload.workload import Workload
from gpuyield.errors import ConfigError, DoesNotFitError, InfeasiblePlanError

__all__ = ["ModelDemand", "MultiModelPlan", "lpt_placement", "plan_multi_model"]

SimulateFn = Callable[[Deployment, Workload], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ModelDemand:
    name: str  # the label requests use
    arch: str  # catalogue model id (architecture)
    requests: int
    rate_per_s: float
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class MultiModelPlan:
    gpu: str
    tp: int
    weight_precision: str  # the models' common precision, or "per model: a fp8, b mxfp4"
    weight_precisions: dict[str, str]  # model -> its weight precision
    demands: list[ModelDemand]
    dedicated_replicas: dict[str, int]  # model -> replicas (each tp GPUs)
    dedicated_summary: dict[str, dict[str, Any]]  # model -> its dedicated simulation summary (trimmed)
    loads: dict[str, float]  # model -> busy GPU-replica fraction in its dedicated run
    placement: list[list[str]]  # group -> models
    deployment: Deployment  # the multiplexed fleet (a file `simulate` accepts)
    summary: dict[str, Any]  # its simulation summary
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every G tried and why it failed

    @property
    def gpus_dedicated(self) -> int:
        return sum(self.dedicated_replicas.values()) * self.tp

    @property
    def gpus_multiplexed(self) -> int:
        return len(self.placement) * self.tp


def lpt_placement(loads: dict[str, float], num_groups: int, copy_utilisation: float) -> list[list[str]]:
    """Pack model copies onto ``num_groups`` groups: largest load first, least-loaded group without that model."""
    if num_groups < 1:
        raise ConfigError("placement needs at least one group")
    copies: list[tuple[float, str]] = []
    for name, load in loads.items():
        n = max(1, math.ceil(load / copy_utilisation)) if load > 0 else 1
        n = min(n, num_groups)
        copies.extend((load / n, name) for _ in range(n))
    copies.sort(key=lambda c: (-c[0], c[1]))
    groups: list[list[str]] = [[] for _ in range(num_groups)]
    group_load = [0.0] * num_groups
    for load, name in copies:
        best = min(
            (g for g in range(num_groups) if name not in groups[g]),
            key=lambda g: (group_load[g], len(groups[g]), g),
        )
        groups[best].append(name)
        group_load[best] += load
    return [g for g in groups if g]


def _meets(summary: dict[str, Any], model: str | None, target: float) -> tuple[bool, float]:
    if model is None:
        per = summary["multiplex"]["per_model"]
        worst = min((d["slo_attainment"] or 0.0) for d in per.values())
        return worst >= target, worst
    att = float(summary["slo_attainment"])
    return att >= target, att


def _trim(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("requests", "completed", "rejected", "slo_attainment", "ttft_ms", "tpot_ms", "gpu_count",
            "cost_usd_per_hour", "throughput_output_tok_s")  # fmt: skip
    return {k: summary.get(k) for k in keep}


def checkpoint_precisions(catalog: Any, demands: list[ModelDemand], lower: bool = False) -> dict[str, str]:
    """Each model's weight precision as its checkpoint ships (gpt-oss mxfp4, DeepSeek fp8, Llama bf16): models
    sharing GPUs each keep their own (an engine process per model). ``lower`` (the quality flag): 16-bit
    checkpoints are quantised to fp8, as ``plan`` does; 8- and 4-bit ones keep theirs."""
    from gpuyield.core.plan.space import checkpoint_weight_precision

    # the checkpoint a model's label names where it names one (nvidia/DeepSeek-R1-NVFP4), else the architecture's
    out = {d.name: checkpoint_weight_precision(catalog.model(d.arch), d.name) for d in demands}
    return {k: "fp8" if lower and v == "bf16" else v for k, v in out.items()}


def plan_multi_model(
    workload: Workload,
    catalog: Any,
    gpu: str,
    simulate_fn: SimulateFn,
    *,
    weight_precision: str | None = None,
    attainment_target: float = 0.99,
    copy_utilisation: float = 0.6,
    idle_sleep_s: float | None = 120.0,
    max_replicas_per_model: int = 64,
    engine: dict[str, Any] | None = None,
    archs_by_label: dict[str, str] | None = None,
    calibration: Any = None,
    allow_lower_precision: bool = False,
) -> MultiModelPlan:
    """Dedicated baseline, then the fewest shared groups that meet the SLO (see the module docstring).

    ``weight_precision`` None: each model at its checkpoint's precision as shipped (gpt-oss mxfp4, DeepSeek fp8,
    Llama bf16), also where they share GPUs (each runs its own engine process), 16-bit ones at fp8 with
    ``allow_lower_precision``; else every model at ``weight_precision``."""
    from gpuyield.core.perf import PerfModel

    g = catalog.gpu(gpu)
    labels = list(workload.models)
    if any(m is None for m in labels):
        raise ConfigError("--multi-model needs a workload whose requests name their model (model column)")
    codes = workload.model_codes
    demands: list[ModelDemand] = []
    archs: dict[str, str] = {}
    duration = float(workload.arrival_s[-1] - workload.arrival_s[0]) if len(workload) > 1 else 1.0
    for code, label in enumerate(labels):
        assert label is not None
        idx = (codes == code).nonzero()[0]
        if idx.size == 0:
            continue
        arch = (archs_by_label or {}).get(label, label)  # a label may name a deployment of an architecture
        spec = catalog.model(arch)  # raises CatalogError naming an unknown model
        archs[label] = spec.id
        demands.append(ModelDemand(label, spec.id, int(idx.size), idx.size / max(duration, 1e-9),
                                   int(workload.input_tokens[idx].sum()), int(workload.output_tokens[idx].sum())))  # fmt: skip
    if not demands:
        raise ConfigError("the workload has no requests")
    if weight_precision is None:
        precisions = checkpoint_precisions(catalog, demands, lower=allow_lower_precision)
    else:
        precisions = {d.name: weight_precision for d in demands}
    kinds = sorted(set(precisions.values()))
    precision_label = kinds[0] if len(kinds) == 1 else "per model: " + ", ".join(f"{k} {v}" for k, v in precisions.items())
    # smallest TP that fits every model (one TP for all groups keeps groups interchangeable)
    tp = 1
    while True:
        ok = all(PerfModel.build(catalog.model(d.arch), g, tp=tp, weight_precision=precisions[d.name],
                                 calibration=calibration).memory().fits for d in demands)  # fmt: skip
        if ok:
            break
        tp *= 2
        if tp > g.gpus_per_node:
            raise DoesNotFitError(f"the models do not all fit on {g.gpus_per_node} x {g.id} with {precision_label} weights")
    eng = dict(engine or {})

    def dedicated(d: ModelDemand, replicas: int) -> Deployment:
        return parse_deployment({"name": f"dedicated-{d.name}", "pools": [{
            "name": "dedicated", "replicas": replicas, "gpu": g.id, "model": d.arch, "served_model_names": [d.name],
            "tp": tp, "weight_precision": precisions[d.name], "engine": eng}],
            "router": {"policy": "least_outstanding"}})  # fmt: skip

    dedicated_replicas: dict[str, int] = {}
    dedicated_summary: dict[str, dict[str, Any]] = {}
    loads: dict[str, float] = {}
    by_name = {d.name: d for d in demands}
    for code, label in enumerate(labels):
        d = by_name.get(label) if label is not None else None
        if d is None:  # a label with no requests
            continue
        sub = workload.take((codes == code).nonzero()[0])
        r = 1
        while True:
            s = simulate_fn(dedicated(d, r), sub)
            met, _ = _meets(s, d.name, attainment_target)
            if met:
                break
            if r >= max_replicas_per_model:
                raise InfeasiblePlanError(f"{d.name}: even {r} dedicated replicas miss the SLO")
            r = r * 2 if s["slo_attainment"] < 0.5 else r + 1
        dedicated_replicas[d.name] = r
        dedicated_summary[d.name] = _trim(s)
        loads[d.name] = sum(p["busy_frac"] for p in s["per_replica"])
    n_dedicated = sum(dedicated_replicas.values())
    attempts: list[dict[str, Any]] = []
    lower = max(1, math.ceil(sum(loads.values()) / 0.85))
    best: tuple[list[list[str]], Deployment, dict[str, Any]] | None = None
    for n_groups in range(lower, n_dedicated + 1):
        placement = lpt_placement(loads, n_groups, copy_utilisation)
        dep = _multiplex_deployment(placement, archs, g.id, tp, precisions, idle_sleep_s, eng, loads)
        try:
            s = simulate_fn(dep, workload)
        except DoesNotFitError as exc:
            attempts.append({"groups": n_groups, "placement": placement, "met": False, "reason": f"memory: {exc}"})
            continue
        met, worst = _meets(s, None, attainment_target)
        attempts.append({"groups": n_groups, "placement": placement, "met": met, "worst_model_attainment": worst,
                         "reason": None if met else f"SLO: worst model attainment {worst:.3f} < {attainment_target}"})  # fmt: skip
        if met:
            best = (placement, dep, s)
            break
    if best is None:  # sharing never beats dedicated GPUs at this SLO: the dedicated fleet is the plan
        placement = [[d.name] for d in demands for _ in range(dedicated_replicas[d.name])]
        dep = _multiplex_deployment(placement, archs, g.id, tp, precisions, None, eng, loads, all_awake=True)
        best = (placement, dep, simulate_fn(dep, workload))
    return MultiModelPlan(
        gpu=g.id, tp=tp, weight_precision=precision_label, weight_precisions=precisions, demands=demands,
        dedicated_replicas=dedicated_replicas,
        dedicated_summary=dedicated_summary, loads=loads, placement=best[0], deployment=best[1], summary=best[2],
        attempts=attempts,
    )


def _multiplex_deployment(
    placement: list[list[str]],
    archs: dict[str, str],
    gpu: str,
    tp: int,
    precisions: dict[str, str],
    idle_sleep_s: float | None,
    engine: dict[str, Any],
    loads: dict[str, float],
    *,
    all_awake: bool = False,
) -> Deployment:
    groups = []
    for k, models in enumerate(placement):
        hottest = max(models, key=lambda m: loads.get(m, 0.0))
        # the group's precision is its models' most common one; each model states its own
        kinds = [precisions[m] for m in models]
        groups.append({
            "name": f"group{k}", "gpu": gpu, "tp": tp, "replicas": 1,
            "weight_precision": max(sorted(set(kinds)), key=kinds.count),
            "models": [{"name": m, "model": archs[m], "weight_precision": precisions[m]} for m in models],
            "initially_awake": list(models) if all_awake else [hottest], "idle_sleep_s": idle_sleep_s,
            "engine": engine,
        })  # fmt: skip
    return parse_deployment({"name": "multi-model", "description": "models sharing GPUs (gpuyield plan --multi-model)",
                             "multiplex": {"groups": groups}, "router": {"policy": "least_outstanding"}})  # fmt: skip
