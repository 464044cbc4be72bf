"""Issue 8 benchmark: GPUs needed at the SLO, models sharing GPUs vs one dedicated deployment per model.

Scenarios (bursty per-model demand from real ServeGen client traffic, ../shared/data/traces/servegen):
- 6 models (Llama-3.1-8B, Qwen3-8B/1.7B/0.6B, Qwen3-30B-A3B, Mistral-Small-24B) on H100, fp8 weights;
- 20 models: the 20 busiest clients, each a separately deployed fine-tune of an 8B-class or smaller base.
Each: the dedicated baseline and the shared placement are both verified by the simulator at
TTFT p99 <= 2 s and TPOT p99 <= 100 ms (per model). Prints one JSON line per scenario.

    python benchmarks/multimodel_placement.py [--duration-s 1800] [--rate-scale 0.05]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gpuyield.core.catalog import default_catalog
from gpuyield.core.plan.placement import plan_multi_model
from gpuyield.core.sim.simulate import SloTarget, simulate
from gpuyield.core.workload.multimodel import models_from_tenants
from gpuyield.core.workload.transforms import rate_scale
from gpuyield.edges.io.traces import load_workload

SERVEGEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "servegen" / "deepseek-r1"
SIX = ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-30B-A3B",
       "mistralai/Mistral-Small-24B-Instruct-2501"]  # fmt: skip
BASES = ["meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-0.6B"]


def run(name: str, labels: list[str], archs: dict[str, str], args: argparse.Namespace) -> dict[str, object]:
    cat = default_catalog()
    w = load_workload(str(SERVEGEN), start_s=args.start_s, duration_s=args.duration_s, seed=args.seed)
    w = rate_scale(models_from_tenants(w, labels, max_input_tokens=8000, max_output_tokens=2000), args.rate_scale)
    slo = SloTarget(ttft_p99_ms=2000, tpot_p99_ms=100)
    sims = 0

    def sim(dep, wl):  # type: ignore[no-untyped-def]
        nonlocal sims
        sims += 1
        return simulate(dep, wl, cat, seed=args.seed, slo=slo).summary  # as plan --multi-model

    t0 = time.perf_counter()
    plan = plan_multi_model(w, cat, "h100_sxm", sim, weight_precision="fp8", archs_by_label=archs)
    mux = plan.summary["multiplex"]
    return {
        "scenario": name, "requests": len(w), "models": len(labels),
        "gpus_dedicated": plan.gpus_dedicated, "gpus_shared": plan.gpus_multiplexed,
        "gpu_reduction": 1 - plan.gpus_multiplexed / plan.gpus_dedicated,
        "swaps_per_hour": mux["swaps_per_hour"], "cold_start_ttft_ms": mux["cold_start_ttft_ms"],
        "worst_model_attainment": min(d["slo_attainment"] for d in mux["per_model"].values()),
        "ttft_p99_ms": plan.summary["ttft_ms"]["p99"], "simulations": sims, "wall_s": time.perf_counter() - t0,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start-s", type=float, default=36000.0)
    ap.add_argument("--duration-s", type=float, default=1800.0)
    ap.add_argument("--rate-scale", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(run("6 models", SIX, {m: m for m in SIX}, args)))
    twenty = [f"ft{k:02d}" for k in range(20)]
    print(json.dumps(run("20 models", twenty, {n: BASES[k % len(BASES)] for k, n in enumerate(twenty)}, args)))


if __name__ == "__main__":
    main()
