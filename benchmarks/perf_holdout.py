"""Held-out-model cross-validation of the performance model's end-to-end fit.

Fits the engine constants (``gpuyield.edges.perf.calibrate.fit_engines``) on every training row except
those of the held-out models, then scores in-sample rows and held-out rows separately with ``validate``'s
scorer. Kernel efficiencies come from the AIConfigurator tables either way (they contain no e2e rows).

    python benchmarks/perf_holdout.py --measurements ../shared/data/measurements/e2e_train.csv \
        --kernels ../shared/data/calibration/aiconfigurator --holdout Qwen/Qwen3-32B,zhipuai/GLM-5 --rounds 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import Calibration, EngineCoefficients
from gpuyield.core.perf.validation import build_corrections, validate_rows
from gpuyield.edges.perf.calibrate import (
    ENGINE_DEFAULTS,
    fit_engines,
    kernel_calibration,
    load_measurements,
    lookups,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measurements", required=True)
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--holdout", required=True, help="comma-separated model ids held out of the fit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--refine", action="store_true", help="also fit per (engine, precision[, gpu]) groups")
    args = ap.parse_args()
    t0 = time.time()
    cat = default_catalog()
    held = {m.strip() for m in args.holdout.split(",") if m.strip()}
    rows = load_measurements(Path(args.measurements))
    train = [r for r in rows if r.model not in held]
    test = [r for r in rows if r.model in held]
    base = Calibration(engines={e: EngineCoefficients(**v) for e, v in ENGINE_DEFAULTS.items()})
    cal = kernel_calibration([Path(args.kernels)], cat, base)
    cal = fit_engines(cal, train, cat, rounds=args.rounds, log=print, refine=args.refine)
    mo, go = lookups(cat, cal)
    out = {
        "holdout_models": sorted(held),
        "num_train": len(train),
        "num_test": len(test),
        "refine": args.refine,
    }
    for name, sub in (("in_sample", train), ("held_out", test)):
        res = validate_rows(sub, mo, go, cal)
        out[name] = {"coverage": res["coverage"], **{k: res["summary"][k] for k in ("ttft_ms", "tpot_ms")}}
    # measured operating points from the training rows only: held-out models are corrected only through
    # architecture twins (e.g. DeepSeek-R1's points for DeepSeek-V3); in-sample rows leave their own out
    with_points = dataclasses.replace(cal, corrections=build_corrections(train, mo, go, cal))
    for name, sub in (("in_sample_corrected", train), ("held_out_corrected", test)):
        res = validate_rows(sub, mo, go, with_points)
        out[name] = {
            "coverage": res["coverage"],
            "corrected_rows": res["corrected_rows"],
            **{k: res["summary"][k] for k in ("ttft_ms", "tpot_ms")},
        }
    out["elapsed_s"] = time.time() - t0
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
