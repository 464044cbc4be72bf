"""Our plan vs AIConfigurator's recommendation, both evaluated by our simulator on the trace (issue 5).

AIConfigurator (``pip install aiconfigurator``, run offline with ``HF_HUB_OFFLINE=1``) searches analytically
at a fixed ISL/OSL and a total GPU count and ranks configurations by tokens/s/GPU under the TTFT/TPOT targets;
it never sees arrival times or bursts. This script:

1. runs ``aiconfigurator cli default`` for the model on one GPU type at the trace's mean ISL/OSL and the SLO;
2. takes its best aggregated configuration (TP, batch size) and its per-GPU request rate, and sizes it for the
   trace's mean rate as AIConfigurator would (replicas = ceil(rate / per-replica req/s));
3. simulates that deployment on the trace (round-robin routing, engine defaults otherwise) and then searches the
   smallest replica count that meets the SLO in simulation;
4. prints both next to ``plan.json`` from a gpuyield plan run on the same trace and GPU type.

Usage: python benchmarks/plan_vs_aiconfigurator.py --plan-json /tmp/gpuyield-bench-azure30-h100/plan.json \
           [--workload builtin:azure-conv --rate-scale 30 --gpu h100_sxm --total-gpus 16]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import time

SLO_TTFT, SLO_TPOT = 2000.0, 100.0
AIC_MODEL = "meta-llama/Meta-Llama-3.1-8B"
MODEL = "meta-llama/Llama-3.1-8B"


def run_aic(gpu: str, isl: int, osl: int, total_gpus: int) -> tuple[dict[str, float], float, str]:
    cmd = ["aiconfigurator", "cli", "default", "--model", AIC_MODEL, "--system", gpu, "--backend", "vllm",
           "--isl", str(isl), "--osl", str(osl), "--ttft", str(SLO_TTFT), "--tpot", str(SLO_TPOT),
           "--total-gpus", str(total_gpus), "--save-dir", "/tmp/aic-bench"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    wall = time.perf_counter() - t0
    text = out.stdout + out.stderr
    block = text.split("agg Top Configurations")[1].split("disagg Top Configurations")[0]
    row = next(line for line in block.splitlines() if re.match(r"^\|\s+1\s+\|", line))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # | Rank | backend | tokens/s/gpu | tokens/s/user | req/s | TTFT | request_latency | concurrency | total_gpus | replicas | gpus/replica | gpus/worker | parallel | bs |
    par = re.match(r"tp(\d+)pp(\d+)", cells[12])
    assert par is not None, cells
    best = {"tokens_per_s_per_gpu": float(cells[2]), "req_per_s": float(cells[4]), "ttft_ms": float(cells[5]),
            "replicas": int(cells[9]), "gpus_per_replica": int(cells[10]), "tp": int(par.group(1)),
            "pp": int(par.group(2)), "bs": int(cells[13])}
    return best, wall, " ".join(cmd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan-json", required=True)
    ap.add_argument("--workload", default="builtin:azure-conv")
    ap.add_argument("--rate-scale", type=float, default=30.0)
    ap.add_argument("--gpu", default="h100_sxm")
    ap.add_argument("--total-gpus", type=int, default=16)
    a = ap.parse_args()

    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.plan.context import PlanContext
    from gpuyield.core.plan.simulator import SimulatorBinding
    from gpuyield.core.plan.space import Candidate, PoolShape
    from gpuyield.core.plan.spec import Slo
    from gpuyield.core.plan.verify import VerifyTask, verify_candidate
    from gpuyield.core.workload.transforms import rate_scale
    from gpuyield.edges.io.traces import load_workload

    w = rate_scale(load_workload(a.workload), a.rate_scale)
    isl, osl = int(round(float(w.input_tokens.mean()))), int(round(float(w.output_tokens.mean())))
    rate = len(w) / float(w.arrival_s[-1] - w.arrival_s[0])
    aic, aic_wall, cmd = run_aic(a.gpu, isl, osl, a.total_gpus)
    per_replica = aic["req_per_s"] / aic["replicas"]
    aic_replicas = math.ceil(rate / per_replica)
    cat = default_catalog()
    ctx = PlanContext(cat, cat.model(MODEL))
    slo = Slo(ttft_p99_ms=SLO_TTFT, tpot_p99_ms=SLO_TPOT)
    sim = SimulatorBinding(ctx, w, 0, slo)
    bs = aic["bs"]
    cand = Candidate((PoolShape("mixed", a.gpu, aic["tp"], aic["pp"], 1, bs, max(8192, bs), True, "none"),), "round_robin")
    price = ctx.price_for(a.gpu).usd_per_gpu_hour
    at_aic = sim(cand, aic_replicas, 1.0)
    verified = verify_candidate(VerifyTask(cand, aic_replicas, slo, (price * aic["gpus_per_replica"],), max_sims=8), sim)
    with open(a.plan_json) as f:
        plan = json.load(f)
    res = {
        "workload": a.workload, "rate_scale": a.rate_scale, "isl": isl, "osl": osl, "rate_req_s": round(rate, 2),
        "aic_command": cmd, "aic_wall_s": round(aic_wall, 1), "aic_best_agg": aic,
        "aic_sized_replicas": aic_replicas, "aic_sized_gpus": aic_replicas * aic["gpus_per_replica"],
        "aic_sized_sim": {k: round(at_aic.summary.get(k, math.nan), 1) for k in ("ttft_p99_ms", "tpot_p99_ms")},
        "aic_sized_meets_slo": not slo.violations(at_aic.summary),
        "aic_config_min_gpus_in_sim": verified.best.num_gpus if verified.best else None,
        "aic_config_min_usd_h_in_sim": round(verified.best.usd_per_hour, 2) if verified.best else None,
        "plan": plan["best"]["candidate"], "plan_gpus": plan["best"]["num_gpus"],
        "plan_usd_h": plan["best"]["usd_per_hour"], "plan_wall_s": plan["search"]["wall_time_s"],
        "plan_sim": {k: plan["best"]["verified"][k] for k in ("ttft_p99_ms", "tpot_p99_ms")},
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
