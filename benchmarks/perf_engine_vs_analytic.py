"""Engine-model path vs analytic closed-loop solver on the aggregated rows of a measurement CSV.

For every ``agg`` closed-loop row (deduplicated), predicts TTFT/TPOT two ways with the shipped calibration:
the analytic fixed point (``gpuyield.core.perf.closed_loop``, what ``validate`` uses by default) and the
engine model exactly as ``gpuyield estimate`` reports it (``gpuyield.core.sim.estimate_with_engine_model``,
also ``validate --method sim``), and prints the MAPE/median/bias of both.

    python benchmarks/perf_engine_vs_analytic.py --measurements ../shared/data/measurements/e2e_train.csv \
        [--limit 400] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.validation import validate_rows
from gpuyield.edges.perf.calibrate import load_measurements, lookups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measurements", required=True)
    ap.add_argument("--limit", type=int, default=0, help="every k-th row so that about this many are used")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cat = default_catalog()
    cal = default_calibration()
    mo, go = lookups(cat, cal)
    rows = [r for r in load_measurements(Path(args.measurements)) if r.layout.startswith("agg") and r.concurrency]
    seen: set[tuple] = set()
    uniq = []
    for r in rows:
        key = (r.gpu, r.num_gpus, r.model, r.engine, r.precision, r.layout, r.isl, r.osl, r.concurrency)
        if key not in seen:
            seen.add(key)
            uniq.append(r)
    if args.limit and len(uniq) > args.limit:
        step = len(uniq) / args.limit
        uniq = [uniq[int(i * step)] for i in range(args.limit)]
    out: dict[str, object] = {"rows": len(uniq)}
    for prefix, method in (("a", "analytic"), ("s", "sim")):
        t0 = time.time()
        # the step-time model through both paths (measured operating points would blur the comparison)
        res = validate_rows(uniq, mo, go, cal, method=method, corrections=False)
        out[f"{method}_elapsed_s"] = round(time.time() - t0, 1)
        out[f"{method}_unsupported"] = len(res["unsupported"])
        for metric in ("ttft", "tpot"):
            summ = res["summary"][f"{metric}_ms"]
            out[f"{prefix}_{metric}"] = {k: summ[k] for k in ("n", "mape", "median_ape", "bias")}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
