"""Writing a plan's outputs: ``plan.yaml``, ``plan.json``, ``report.html`` and ``deploy/``.

``plan.json`` is documented in docs/formats.md ("plan.json"). Everything in it is a function of the inputs
and the seed except ``search.wall_time_s`` / ``search.*_wall_time_s`` and ``executor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuyield.core.plan.economics import FleetEconomics
from gpuyield.core.plan.profile import WorkloadProfile
from gpuyield.core.plan.search import PlanResult
from gpuyield.core.plan.space import Candidate, PoolShape
from gpuyield.core.plan.spec import PlanRequest
from gpuyield.core.plan.to_deployment import candidate_to_deployment, deployment_to_yaml
from gpuyield.core.plan.verify import SimPoint
from gpuyield.edges.plan.deploy import DeployModel, render_deploy_files, replica_url

__all__ = ["PlanRunInfo", "gateway_config", "plan_document", "write_outputs"]

PLAN_JSON_VERSION = 1


@dataclass(frozen=True, slots=True)
class PlanRunInfo:
    """Facts about the run that are not in the result (for plan.json and the report)."""

    workload_spec: str
    rate_scale: float
    executor: str
    wall_time_s: float
    screen_wall_time_s: float
    simulate_wall_time_s: float
    gpuyield_version: str
    head: int | None = None  # planned on the first N requests only (--head)
    calibration: str = "shipped"  # --calibration FILE, or the calibration shipped with gpuyield


def _f(x: float, nd: int = 6) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


def _pool_json(p: PoolShape, n: int) -> dict[str, Any]:
    return {
        "role": p.role, "gpu": p.gpu_id, "replicas": n, "tp": p.tp, "pp": p.pp, "ep": p.ep,
        "gpus_per_replica": p.gpus_per_replica, "max_num_seqs": p.max_num_seqs,
        "max_num_batched_tokens": p.max_num_batched_tokens, "enable_prefix_caching": p.enable_prefix_caching,
        "kv_offload": p.kv_offload, "weight_precision": p.weight_precision, "kv_dtype": p.kv_dtype,
    }


def _point_json(p: SimPoint, *, full: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "candidate": p.candidate, "level": p.level, "replicas": list(p.replicas), "num_gpus": p.num_gpus,
        "usd_per_hour": _f(p.usd_per_hour, 4), "rate_scale": _f(p.rate_scale), "meets_slo": p.meets_slo,
        "ttft_p99_ms": _f(p.ttft_p99_ms, 3), "tpot_p99_ms": _f(p.tpot_p99_ms, 3),
        "violations": [{"metric": m, "measured": _f(v, 3), "limit": _f(lim, 3)} for m, v, lim in p.violations],
    }
    if full:
        d["summary"] = {k: _f(v) if isinstance(v, float) else v for k, v in sorted(p.outcome.summary.items())}
        d["replica_utilisation"] = {k: _f(v, 4) for k, v in sorted(p.outcome.replica_utilisation.items())}
    return d


def _deployment_json(cand: Candidate, p: SimPoint) -> dict[str, Any]:
    return {
        "candidate": cand.key(),
        "layout": "disaggregated" if cand.disaggregated else "aggregated",
        "pd_ratio": list(cand.pd_ratio) if cand.pd_ratio else None,
        "router": cand.router,
        "pools": [_pool_json(pool, n) for pool, n in zip(cand.pools, p.replicas, strict=True)],
        "num_gpus": p.num_gpus,
        "usd_per_hour": _f(p.usd_per_hour, 4),
        "verified": _point_json(p, full=True),
    }


def _econ_json(e: FleetEconomics) -> dict[str, Any]:
    return {
        "num_gpus": e.num_gpus,
        "usd_per_hour": _f(e.usd_per_hour, 4),
        "usd_per_month": _f(e.usd_per_hour * 730.0, 2),
        "usd_per_1m_input_tokens": _f(e.usd_per_1m_input, 5),
        "usd_per_1m_output_tokens": _f(e.usd_per_1m_output, 5),
        "usd_per_1m_tokens_blended": _f(e.usd_per_1m_tokens, 5),
        "input_tokens_per_hour": _f(e.input_tokens_per_hour, 1),
        "output_tokens_per_hour": _f(e.output_tokens_per_hour, 1),
        "prefill_time_share": _f(e.prefill_time_share, 4),
        "utilisation": _f(e.utilisation, 4),
        "api_usd_per_hour_same_traffic": _f(e.api_usd_per_hour, 4) if e.api_usd_per_hour is not None else None,
        "break_even_tokens_per_month": _f(e.break_even_tokens_per_month, 0) if e.break_even_tokens_per_month is not None else None,
        "tokens_per_month_at_workload_rate": _f((e.input_tokens_per_hour + e.output_tokens_per_hour) * 730.0, 0),
        # tokens/month this fleet is verified to carry at the SLO (null for the API); a break-even above it
        # would need a bigger fleet
        "capacity_tokens_per_month": _f(e.capacity_tokens_per_month, 0) if math.isfinite(e.capacity_tokens_per_month) else None,
        "break_even_within_capacity": (
            None if e.break_even_tokens_per_month is None or not math.isfinite(e.capacity_tokens_per_month)
            else e.break_even_tokens_per_month <= e.capacity_tokens_per_month
        ),
        "pools": [
            {"pool": pc.pool, "gpu": pc.gpu_id, "num_gpus": pc.num_gpus, "usd_per_gpu_hour": _f(pc.price.usd_per_gpu_hour, 4),
             "usd_per_hour": _f(pc.usd_per_hour, 4), "price_kind": pc.price.kind, "source": pc.price.source,
             "as_of": pc.price.as_of,
             "tco_breakdown_usd_per_gpu_hour": {k: _f(v, 4) for k, v in pc.price.breakdown_usd_per_gpu_hour.items()}}
            for pc in e.pools
        ],
        "prices": [{"item": g, "usd_per_gpu_hour": _f(u, 4), "source": s, "as_of": a} for g, u, s, a in e.prices],
    }


def plan_document(
    result: PlanResult, request: PlanRequest, profile: WorkloadProfile, info: PlanRunInfo
) -> dict[str, Any]:
    """The ``plan.json`` document."""
    econ = {k: _econ_json(v) for k, v in result.economics.items()}
    plan_e, naive_e, api_e = (result.economics.get(k) for k in ("plan", "naive", "api"))
    comparison: dict[str, Any] = {}
    if naive_e is not None and plan_e is not None and naive_e.usd_per_hour > 0:
        comparison["plan_vs_naive_cost_ratio"] = _f(plan_e.usd_per_hour / naive_e.usd_per_hour, 4)
        comparison["plan_saves_usd_per_hour"] = _f(naive_e.usd_per_hour - plan_e.usd_per_hour, 4)
    if api_e is not None and plan_e is not None and api_e.usd_per_hour > 0:
        comparison["plan_vs_api_cost_ratio"] = _f(plan_e.usd_per_hour / api_e.usd_per_hour, 4)
    kinds: dict[str, int] = {}
    for r in result.rejections:
        kinds[f"{r.stage}/{r.kind}"] = kinds.get(f"{r.stage}/{r.kind}", 0) + 1
    stage_order = {"simulate": 0, "screen": 1, "enumerate": 2}
    top_rej = sorted(result.rejections, key=lambda r: (stage_order.get(r.stage, 3), r.kind, r.candidate))[:200]
    return {
        "format": "gpuyield.plan",
        "version": PLAN_JSON_VERSION,
        "gpuyield_version": info.gpuyield_version,
        "mode": result.mode.value,
        "model": request.model_id,
        "slo": request.slo.targets(),
        "gpus_allowed": list(request.gpu_ids),
        "constraints": {"max_gpus": request.max_gpus, "budget_usd_per_hour": request.budget_usd_per_hour,
                        "allow_lower_precision": request.allow_lower_precision},
        "seed": request.seed,
        "speculative": None if request.speculative is None else request.speculative.to_dict(),
        "executor": info.executor,
        "calibration": info.calibration,
        "workload": {
            "spec": info.workload_spec, "name": profile.name, "rate_scale": info.rate_scale, "head": info.head,
            "num_requests": profile.num_requests, "duration_s": _f(profile.duration_s, 3),
            "rate_per_s": _f(profile.rate_per_s, 4), "sizing_rate_per_s": _f(profile.sizing_rate_per_s, 4),
            "input_mean_tokens": _f(profile.input_mean_tokens, 2), "output_mean_tokens": _f(profile.output_mean_tokens, 2),
            "input_p99_tokens": _f(profile.input_p99_tokens, 1), "output_p99_tokens": _f(profile.output_p99_tokens, 1),
            "prefix_hit_fraction_shared_cache": _f(profile.shared_hit_fraction, 4),
        },
        "best": _deployment_json(result.best_candidate, result.best),
        "deployment_file": "plan.yaml",
        "naive": _deployment_json(result.naive_candidate, result.naive)
        if result.naive_candidate is not None and result.naive is not None else None,
        "naive_definition": "one TP1 replica per GPU on the cheapest allowed GPU type that fits, engine defaults "
                            "(vLLM v1: prefix caching + chunked prefill on), round-robin routing, fewest replicas "
                            "meeting the SLO in simulation; if that GPU type cannot meet the SLO at any size, the next "
                            "cheapest type, then TP2/4/8 (see notes)",
        "capacity_rate_scale": _f(result.capacity_rate_scale, 4) if result.capacity_rate_scale is not None else None,
        "economics": econ,
        "comparison": comparison,
        "pareto": [_point_json(p) for p in result.pareto],
        "simulated": [_point_json(p) for p in result.simulated],
        "screen_top": [
            {"candidate": e.candidate.key(), "level": e.level, "num_gpus": e.num_gpus, "usd_per_hour": _f(e.usd_per_hour, 4),
             "est_ttft_p99_ms": _f(e.ttft_p99_ms, 1), "est_tpot_p99_ms": _f(e.tpot_p99_ms, 2)}
            for e in result.screened_top
        ],
        "rejections": {
            "counts": dict(sorted(kinds.items())),
            "items": [{"candidate": r.candidate, "stage": r.stage, "kind": r.kind, "reason": r.reason,
                       "num_gpus": r.num_gpus} for r in top_rej],
        },
        "search": {
            **{k: int(v) if float(v).is_integer() else _f(v) for k, v in result.stats.items()},
            "wall_time_s": round(info.wall_time_s, 3),
            "screen_wall_time_s": round(info.screen_wall_time_s, 3),
            "simulate_wall_time_s": round(info.simulate_wall_time_s, 3),
        },
        "notes": list(result.notes),
    }


def gateway_config(result: PlanResult, model_served_name: str) -> dict[str, Any]:
    """The ``gpuyield serve`` config for this plan (schema: :class:`gpuyield.edges.gateway.config.GatewayConfig`).

    One backend per replica at its Kubernetes StatefulSet pod address (edit the URLs for other environments),
    the plan's router policy, ``max_inflight`` = the replica's ``max_num_seqs``. Anonymous access is on: the
    gateway Service is ClusterIP (in-cluster only); add ``tenants`` with API-key digests before exposing it.
    """
    cand = result.best_candidate
    backends = []
    for pool, n in zip(cand.pools, result.best.replicas, strict=True):
        for i in range(n):
            backends.append({
                "name": f"{pool.role}-{i}", "url": replica_url(pool.role, i), "kind": "vllm",
                "models": [model_served_name], "pool": pool.role, "max_inflight": pool.max_num_seqs,
            })
    return {
        "listen": {"host": "0.0.0.0", "port": 8000},
        "backends": backends,
        "auth": {"allow_anonymous": True, "anonymous_tenant": "default"},
        "router": {"policy": cand.router, "block_size_tokens": 16},
    }


def write_outputs(
    out_dir: Path,
    result: PlanResult,
    request: PlanRequest,
    profile: WorkloadProfile,
    info: PlanRunInfo,
    *,
    model_hf_id: str,
    gpu_names: dict[str, str],
    report_html: str | None,
    gateway: dict[str, Any] | None = None,
    native_precision: str = "bf16",
) -> dict[str, Path]:
    """Write everything into ``out_dir``; returns ``{name: path}``."""
    import json

    from gpuyield.edges.cli.common import to_jsonable

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    prices = {pc.gpu_id: pc.price.usd_per_gpu_hour for pc in result.economics["plan"].pools}
    dep = candidate_to_deployment(
        result.best_candidate, result.best.level, request.model_id, engine=request.engine, prices=prices,
        name="gpuyield-plan", speculative=request.speculative,
        description=f"gpuyield plan for {request.model_id} on {profile.name} x{info.rate_scale:g} at {request.slo.describe()}",
    )
    header = (f"Generated by gpuyield plan ({info.gpuyield_version}). Simulate it with:\n"
              f"  gpuyield simulate --deployment plan.yaml --workload {info.workload_spec}"
              + (f" --rate-scale {info.rate_scale:g}" if info.rate_scale != 1 else "") + f" --seed {request.seed}"
              + (f"\n(planned on the first {info.head} requests of the workload only: --head {info.head})" if info.head else ""))
    (out_dir / "plan.yaml").write_text(deployment_to_yaml(dep, header))
    written["plan.yaml"] = out_dir / "plan.yaml"
    doc = plan_document(result, request, profile, info)
    (out_dir / "plan.json").write_text(json.dumps(to_jsonable(doc), indent=2) + "\n")
    written["plan.json"] = out_dir / "plan.json"
    if report_html is not None:
        (out_dir / "report.html").write_text(report_html)
        written["report.html"] = out_dir / "report.html"
    served = request.model_id.split("/")[-1].lower()
    gw = gateway if gateway is not None else gateway_config(result, served)
    files = render_deploy_files(result.best_candidate, result.best.replicas, DeployModel(model_hf_id, served, speculative=request.speculative,
                                                                                             native_precision=native_precision),
                                 gpu_names, gw)
    for rel, text in files.items():
        path = out_dir / "deploy" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel.endswith(".sh"):
            path.chmod(0o755)
        written[f"deploy/{rel}"] = path
    return written
