"""``gpuyield plan --multi-model``: place many models on shared GPUs, write the fleet and the savings."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from gpuyield.core.plan.placement import MultiModelPlan, plan_multi_model
from gpuyield.edges.cli.common import console, load_catalog, to_jsonable
from gpuyield.errors import CatalogError, ConfigError

__all__ = ["multi_model_document", "print_multi_model_summary", "run_multi_model_plan"]


def run_multi_model_plan(
    *,
    workload: str,
    slo: str,
    out: str,
    gpu: str,
    rate_scale: float = 1.0,
    models_from_tenants: str | None = None,
    weight_precision: str | None = None,
    allow_lower_precision: bool = False,
    idle_sleep_s: float | None = 120.0,
    seed: int = 0,
    start_s: float = 0.0,
    duration_s: float | None = None,
    catalog_files: list[str] | None = None,
    calibration: str | None = None,
    measured: bool = True,
) -> dict[str, Any]:
    """Load the workload, plan the placement, write DIR/plan.yaml and DIR/plan.json; return plan.json.
    ``measured``: every simulation times each model whose shape the calibration's measured points reach with
    its measured step scales, at its own requests' mean lengths (as ``simulate`` does); False: the step model."""
    from gpuyield.core.plan.spec import parse_slo
    from gpuyield.core.sim.simulate import SloTarget, simulate
    from gpuyield.core.workload.multimodel import models_from_tenants as by_tenant
    from gpuyield.core.workload.transforms import rate_scale as scale_rate
    from gpuyield.core.workload.transforms import slice_time
    from gpuyield.edges.io.traces import load_workload

    t0 = time.perf_counter()
    catalog = load_catalog(catalog_files)
    from gpuyield.edges.perf.io import load_calibration

    cal = load_calibration(calibration)
    target = parse_slo(slo)
    sim_slo = SloTarget(
        ttft_p99_ms=getattr(target, "ttft_p99_ms", None),
        tpot_p99_ms=getattr(target, "tpot_p99_ms", None),
        e2e_p99_ms=getattr(target, "e2e_p99_ms", None),
    )
    is_servegen = Path(workload).is_dir()
    if is_servegen:
        w = load_workload(workload, seed=seed, start_s=start_s, duration_s=duration_s)
    else:
        w = load_workload(workload, seed=seed)
        if duration_s is not None:
            w = slice_time(w, start_s, start_s + duration_s)
    archs: dict[str, str] = {}
    if models_from_tenants:
        names = []
        for item in (m.strip() for m in models_from_tenants.split(",")):
            if not item:
                continue
            name, _, arch = item.partition("=")  # NAME=ARCH: a named deployment (e.g. a fine-tune) of ARCH
            archs[name] = catalog.model(arch or name).id  # unknown model -> exit 2 naming it
            names.append(name)
        w = by_tenant(w, names)
    if rate_scale != 1.0:
        if not (rate_scale > 0 and math.isfinite(rate_scale)):
            raise ConfigError(f"--rate-scale {rate_scale}: expected a positive number")
        w = scale_rate(w, rate_scale)
    num_sims = 0

    def sim(dep: Any, wl: Any) -> dict[str, Any]:
        nonlocal num_sims
        num_sims += 1
        # each model at its own requests' mean lengths (simulate's per-model operating points)
        return simulate(dep, wl, catalog, seed=seed, slo=sim_slo, calibration=cal, measured=measured).summary

    plan = plan_multi_model(w, catalog, gpu, sim, weight_precision=weight_precision, idle_sleep_s=idle_sleep_s,
                            archs_by_label=archs, calibration=cal, allow_lower_precision=allow_lower_precision)
    try:
        price = catalog.gpu_price(plan.gpu)
        price_info = {"usd_per_gpu_hour": float(price.usd_per_gpu_hour), "source": f"{price.provider} {price.tier}",
                      "as_of": str(price.as_of)}  # fmt: skip
    except CatalogError as exc:
        price_info = {"usd_per_gpu_hour": None, "source": str(exc), "as_of": None}
    doc = multi_model_document(plan, price_info, workload=workload, rate_scale=rate_scale, slo=slo,
                               simulations=num_sims, wall_s=time.perf_counter() - t0)  # fmt: skip
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    dep_doc = plan.deployment.model_dump(mode="json", exclude_defaults=True)
    (d / "plan.yaml").write_text(
        "# gpuyield plan --multi-model: models sharing GPUs; `gpuyield simulate --deployment` accepts this file\n"
        + yaml.safe_dump(dep_doc, sort_keys=False)
    )
    from gpuyield.edges.io.request_log import write_request_log

    write_request_log(w, d / "workload.jsonl")  # the exact multi-model trace planned on, for `simulate`
    doc["workload_file"] = str(d / "workload.jsonl")
    (d / "plan.json").write_text(json.dumps(to_jsonable(doc), indent=2) + "\n")
    return doc


def multi_model_document(plan: MultiModelPlan, price: dict[str, Any], **run: Any) -> dict[str, Any]:
    mux = plan.summary.get("multiplex", {})
    usd = price.get("usd_per_gpu_hour")
    saved_gpus = plan.gpus_dedicated - plan.gpus_multiplexed
    return {
        "kind": "multi-model",
        "gpu": plan.gpu,
        "tp": plan.tp,
        "weight_precision": plan.weight_precision,
        "weight_precisions": plan.weight_precisions,
        "run": run,
        "demand": [asdict(d) for d in plan.demands],
        "dedicated": {
            "gpus": plan.gpus_dedicated,
            "replicas": plan.dedicated_replicas,
            "busy_gpu_fraction": plan.loads,
            "per_model": plan.dedicated_summary,
        },
        "placement": [{"group": f"group{k}", "models": g} for k, g in enumerate(plan.placement)],
        "gpus": plan.gpus_multiplexed,
        "gpus_saved": saved_gpus,
        "gpu_reduction": saved_gpus / plan.gpus_dedicated if plan.gpus_dedicated else 0.0,
        "price": price,
        "usd_per_hour": None if usd is None else usd * plan.gpus_multiplexed,
        "usd_per_hour_dedicated": None if usd is None else usd * plan.gpus_dedicated,
        "usd_saved_per_hour": None if usd is None else usd * saved_gpus,
        "swaps_per_hour": mux.get("swaps_per_hour"),
        "cold_start_ttft_ms": mux.get("cold_start_ttft_ms"),
        "per_model": mux.get("per_model"),
        "transitions": {k: mux.get(k) for k in ("wakes", "cold_loads", "sleeps", "evictions", "wake_time_s")},
        "verified": {k: plan.summary.get(k) for k in ("requests", "completed", "rejected", "slo_attainment",
                                                     "ttft_ms", "tpot_ms")},  # fmt: skip
        "attempts": plan.attempts,
    }


def print_multi_model_summary(doc: dict[str, Any], out: str) -> None:
    from rich.table import Table

    t = Table(title=f"gpuyield plan --multi-model on {doc['gpu']} (tp{doc['tp']}, {doc['weight_precision']})")
    t.add_column("group")
    t.add_column("models")
    for p in doc["placement"]:
        t.add_row(p["group"], ", ".join(p["models"]))
    console.print(t)
    m = Table(title="per model")
    for c in ("model", "requests", "dedicated replicas", "SLO attainment (shared)", "cold-start requests"):
        m.add_column(c, justify="right" if c != "model" else "left")
    for name, d in (doc.get("per_model") or {}).items():
        m.add_row(name, str(d["requests"]), str(doc["dedicated"]["replicas"].get(name, "-")),
                  f"{d['slo_attainment']:.1%}" if d["slo_attainment"] is not None else "-", str(d["cold_start_requests"]))
    console.print(m)
    price = doc["price"]
    cs = doc.get("cold_start_ttft_ms") or {}
    console.print(
        f"GPUs: [bold]{doc['gpus']}[/bold] shared vs {doc['dedicated']['gpus']} dedicated "
        f"({doc['gpu_reduction']:.0%} fewer)"
        + (f"; saves ${doc['usd_saved_per_hour']:,.2f}/hour at ${price['usd_per_gpu_hour']}/GPU-h "
           f"({price['source']}, as of {price['as_of']})" if doc.get("usd_saved_per_hour") is not None else "")
    )
    swaps = doc.get("swaps_per_hour")
    console.print(f"swaps/hour: {swaps:.1f}" if swaps is not None else "swaps/hour: -",
                  f"; cold-start TTFT p99: {cs['p99']:.0f} ms (n={cs['n']})" if cs.get("p99") is not None else "")
    console.print(f"wrote {out}/plan.yaml, {out}/plan.json, {out}/workload.jsonl "
                  f"(replay: gpuyield simulate -d {out}/plan.yaml -w {out}/workload.jsonl)")
