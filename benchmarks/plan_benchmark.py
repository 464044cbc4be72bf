"""Planner benchmarks (issue 5): speed on the 1-hour Azure conversation trace, and plan vs naive cost on
Mooncake (long shared prefixes) and on Azure conversation at 30x rate.

Usage:
  python benchmarks/plan_benchmark.py speed   [--jobs 2] [--executor local|ray]
  python benchmarks/plan_benchmark.py quality-mooncake [--rate-scale 4] [--jobs 2]
  python benchmarks/plan_benchmark.py quality-azure    [--rate-scale 30] [--jobs 2]

Each run writes its outputs under /tmp/gpuyield-bench-<name>/ and prints one JSON line with the numbers
recorded in docs/benchmarks.md. Every plan is verified by the simulator on the whole trace; the script then
re-simulates plan.yaml independently and checks the SLO.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

SLO = "ttft_p99_ms=2000,tpot_p99_ms=100"
MODEL = "meta-llama/Llama-3.1-8B"
GPUS = "h100_sxm,a100_sxm,l40s"


def _resimulate(out: Path, workload: str, rate_scale: float) -> dict[str, float]:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.plan.simulator import outcome_from_result
    from gpuyield.core.sim.deployment import parse_deployment
    from gpuyield.core.sim.simulate import SloTarget, simulate
    from gpuyield.edges.io.traces import load_workload

    dep = parse_deployment(yaml.safe_load((out / "plan.yaml").read_text()), "plan.yaml")
    res = simulate(dep, load_workload(workload), default_catalog(), 0, SloTarget(2000, 100), rate_scale=rate_scale)
    o = outcome_from_result(res)
    return {"ttft_p99_ms": o.summary["ttft_p99_ms"], "tpot_p99_ms": o.summary["tpot_p99_ms"]}


def run(name: str, workload: str, rate_scale: float, jobs: int, executor: str, top_k: int) -> dict[str, object]:
    from gpuyield.edges.cli.cmd_plan import run_plan_command

    out = Path(f"/tmp/gpuyield-bench-{name}")
    t0 = time.perf_counter()
    doc = run_plan_command(workload=workload, model=MODEL, slo=SLO, out=str(out), rate_scale=rate_scale, gpus=GPUS,
                           executor=executor, jobs=jobs, top_k=top_k, show_progress=False)
    wall = time.perf_counter() - t0
    econ = doc["economics"]
    check = _resimulate(out, workload, rate_scale)
    return {
        "benchmark": name, "workload": workload, "rate_scale": rate_scale, "executor": executor, "jobs": jobs,
        "wall_s": round(wall, 1), "screened": doc["search"]["candidates_screened"],
        "simulated_candidates": doc["search"]["candidates_simulated"], "simulations": doc["search"]["simulations"],
        "plan": doc["best"]["candidate"], "plan_gpus": econ["plan"]["num_gpus"], "plan_usd_h": econ["plan"]["usd_per_hour"],
        "naive": doc["naive"]["candidate"] if doc["naive"] else None,
        "naive_gpus": econ.get("naive", {}).get("num_gpus"), "naive_usd_h": econ.get("naive", {}).get("usd_per_hour"),
        "plan_vs_naive": doc["comparison"].get("plan_vs_naive_cost_ratio"),
        "plan_ttft_p99_ms": doc["best"]["verified"]["ttft_p99_ms"], "plan_tpot_p99_ms": doc["best"]["verified"]["tpot_p99_ms"],
        "resimulated": check, "resimulated_meets_slo": check["ttft_p99_ms"] <= 2000 and check["tpot_p99_ms"] <= 100,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["speed", "quality-mooncake", "quality-azure"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--executor", default="local")
    ap.add_argument("--rate-scale", type=float, default=None)
    ap.add_argument("--top-k", type=int, default=12)
    a = ap.parse_args()
    if a.which == "speed":
        r = run("speed", "builtin:azure-conv", a.rate_scale or 1.0, a.jobs, a.executor, a.top_k)
    elif a.which == "quality-mooncake":
        r = run("mooncake", "builtin:mooncake-synthetic", a.rate_scale or 4.0, a.jobs, a.executor, a.top_k)
    else:
        r = run("azure30", "builtin:azure-conv", a.rate_scale or 30.0, a.jobs, a.executor, a.top_k)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
