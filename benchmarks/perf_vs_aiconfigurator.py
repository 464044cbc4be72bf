"""Side by side: gpuyield's performance model vs AIConfigurator's ``cli estimate`` on the same measured rows.

Samples aggregated-layout rows of the training CSV on GPUs and precisions AIConfigurator supports
(seeded), runs AIConfigurator's in-process ``cli_estimate`` (same as ``aiconfigurator cli estimate``, its
database loaded once per system/backend) and gpuyield's validate scorer on the same rows, and prints both
error summaries. Bounded: stops starting new AIConfigurator runs after ``--budget-s``.

    HF_HUB_OFFLINE=1 python benchmarks/perf_vs_aiconfigurator.py \
        --measurements ../shared/data/measurements/e2e_train.csv --n 60 --budget-s 900 --out aic_compare.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from pathlib import Path

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.validation import error_summary, parse_layout, validate_rows
from gpuyield.edges.perf.calibrate import load_measurements, lookups
from gpuyield.edges.perf.io import load_calibration

# checkpoints whose native precision the row uses, so AIConfigurator's automatic quant resolution matches
NATIVE = {
    ("Qwen/Qwen3-32B", "bf16"),
    ("deepseek-ai/DeepSeek-R1", "fp8"),
    ("deepseek-ai/DeepSeek-V3", "fp8"),
    ("Qwen/Qwen3-235B-A22B-FP8", "fp8"),
    ("openai/gpt-oss-120b", "fp4"),
    ("MiniMaxAI/MiniMax-M2.5", "fp8"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measurements", required=True)
    ap.add_argument("--calibration", default=None)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=900.0)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--no-corrections",
        action="store_true",
        help="score gpuyield's step-time model alone (no measured points, no learned stage)",
    )
    ap.add_argument(
        "--reuse-aic",
        default=None,
        help="JSON from an earlier run: reuse its AIConfigurator predictions, rescore gpuyield",
    )
    args = ap.parse_args()
    if args.reuse_aic:
        rescore(args)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)
    from aiconfigurator.cli.api import cli_estimate

    rows = load_measurements(Path(args.measurements))
    cands = [
        r
        for r in rows
        if r.gpu in ("h100_sxm", "h200_sxm")
        and r.layout.startswith("agg")
        and (r.model, r.precision) in NATIVE
        and r.concurrency is not None
    ]
    rng = random.Random(args.seed)
    sample = sorted(rng.sample(cands, min(args.n, len(cands))), key=lambda r: (r.model, r.gpu, r.engine))
    cat = default_catalog()
    cal = load_calibration(args.calibration)
    mo, go = lookups(cat, cal)
    t0 = time.time()
    aic_pairs: dict[str, list[tuple[float, float]]] = {"ttft_ms": [], "tpot_ms": []}
    ours_rows = []
    failed: list[dict[str, object]] = []
    per_row = []
    for r in sample:
        if time.time() - t0 > args.budget_s:
            break
        lay = parse_layout(r.layout, r.tp)
        assert lay.replica is not None
        rep = lay.replica
        moe = cat.model(r.model).num_experts > 0
        stage = rep.tp * rep.adp
        try:
            est = cli_estimate(
                r.model,
                r.gpu,
                backend_name=r.engine,
                isl=r.isl,
                osl=r.osl,
                batch_size=max(1, math.ceil((r.concurrency or 1) / rep.adp)),
                tp_size=rep.tp,
                pp_size=rep.pp,
                attention_dp_size=rep.adp,
                moe_tp_size=(stage // rep.ep) if moe else None,
                moe_ep_size=rep.ep if moe else None,
            )
            pred = {"ttft_ms": float(est.ttft), "tpot_ms": float(est.tpot)}
        except Exception as exc:  # noqa: BLE001 - a peer failure is recorded, not fatal
            failed.append({"row": r.index, "reason": f"{type(exc).__name__}: {str(exc)[:160]}"})
            continue
        ours_rows.append(r)
        for k in aic_pairs:
            meas = r.measured[k]
            if meas:
                aic_pairs[k].append((pred[k], meas))
        per_row.append(
            {
                "row": r.index,
                "model": r.model,
                "gpu": r.gpu,
                "engine": r.engine,
                "layout": r.layout,
                "isl": r.isl,
                "osl": r.osl,
                "concurrency": r.concurrency,
                "measured": {k: r.measured[k] for k in aic_pairs},
                "aiconfigurator": pred,
            }
        )
    ours = validate_rows(ours_rows, mo, go, cal, corrections=not args.no_corrections)
    by_row = {x["row"]: x for x in ours["rows"]}
    for pr in per_row:
        o = by_row.get(pr["row"])
        pr["gpuyield"] = {k: o[f"predicted_{k}"] for k in aic_pairs} if o else None
    out = {
        "rows_compared": len(ours_rows),
        "aiconfigurator_failed": failed,
        "aiconfigurator": {k: error_summary(v) for k, v in aic_pairs.items()},
        "gpuyield": {k: ours["summary"][k] for k in aic_pairs},
        "gpuyield_coverage": ours["coverage"],
        "elapsed_s": time.time() - t0,
        "rows": per_row,
    }
    text = json.dumps(out, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=2))
    if args.out:
        Path(args.out).write_text(text + "\n")


def rescore(args: argparse.Namespace) -> None:
    """Score gpuyield (e.g. with a new calibration) on the rows of an earlier run, AIConfigurator's kept."""
    prev = json.loads(Path(args.reuse_aic).read_text())
    rows = {r.index: r for r in load_measurements(Path(args.measurements))}
    chosen = [rows[x["row"]] for x in prev["rows"]]
    cat = default_catalog()
    cal = load_calibration(args.calibration)
    mo, go = lookups(cat, cal)
    ours = validate_rows(chosen, mo, go, cal, corrections=not args.no_corrections)
    out = {k: prev[k] for k in ("rows_compared", "aiconfigurator_failed", "aiconfigurator")}
    out["gpuyield"] = {k: ours["summary"][k] for k in ("ttft_ms", "tpot_ms")}
    out["gpuyield_coverage"] = ours["coverage"]
    print(json.dumps({k: v for k, v in out.items() if k != "aiconfigurator_failed"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
