"""How much prefill slows decoding, measured against the step model: TPOT = a + b / (OSL - 1) per sweep.

In a closed loop of ``C`` clients every request's prompt is computed while the others decode, so a request's
mean time per output token is its decode step ``a`` plus its share of everyone else's prefills, ``b / (OSL - 1)``
(``b``: the prefill time that lands on one request's decode steps over its lifetime). Rows that measure one
deployment at one ISL and concurrency with three or more output lengths give both terms; fitting the same form
to the step model's predictions (``gpuyield validate --no-corrections``: the analytic solver without measured
points) shows whether the model's decode step (``a``) or its prefill interference (``b``) is off.

    python benchmarks/perf_interference.py --measurements ../shared/data/measurements/e2e_train.csv

Prints one line per such group (engine, model, GPU, layout, ISL, concurrency): the measured and predicted ``a``
(ms) and ``b`` (ms), their ratio, and a per-engine median of the ``b`` ratio. Groups whose measured ``b`` is not
positive (noise larger than the interference) are listed but left out of the medians. A repeated operating
point counts with its first measurement (the file's repeats of these groups are identical).

Caveat: the form lumps in how the decode step itself grows with the context a longer output brings (the mean
context is ISL + OSL/2); with three output lengths the fit has one degree of freedom left, so read ``b`` as the
interference to within that growth, the same on both sides of the ratio.
"""

from __future__ import annotations

import argparse
import collections
import statistics
from pathlib import Path

import numpy as np

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.validation import validate_rows
from gpuyield.edges.perf.calibrate import load_measurements, lookups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measurements", required=True, type=Path)
    ap.add_argument("--min-concurrency", type=int, default=32, help="groups at this many clients or more")
    args = ap.parse_args()
    rows = load_measurements(args.measurements)
    cal = default_calibration()
    model_of, gpu_of = lookups(default_catalog(), cal)
    out = validate_rows(rows, model_of, gpu_of, cal, corrections=False)
    groups: dict[tuple[object, ...], dict[int, tuple[float, float]]] = collections.defaultdict(dict)
    for r in out["rows"]:
        meas, pred = r.get("measured_tpot_ms"), r.get("predicted_tpot_ms")
        conc = r["concurrency"]
        if not meas or not pred or conc == "offline" or int(conc) < args.min_concurrency or r["osl"] < 2:
            continue
        if not str(r["layout"]).lower().startswith("agg"):
            continue  # P/D decode pools see no prefill
        key = (r["engine"], r["model"], r["gpu"], r["precision"], r["layout"], r["isl"], conc)
        groups[key].setdefault(r["osl"], (meas, pred))  # the first measurement of a repeated operating point
    ratios: dict[str, list[float]] = collections.defaultdict(list)
    print(f"{'engine':7s} {'model':28s} {'gpu':9s} {'prec':5s} {'layout':32s} {'isl':>5s} {'C':>4s}  "
          "a meas/pred (ms)   b meas/pred (ms)   b ratio")  # fmt: skip
    for key, by_osl in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if len(by_osl) < 3:
            continue
        osl = np.array(sorted(by_osl), dtype=float)
        design = np.vstack([np.ones(len(osl)), 1.0 / (osl - 1.0)]).T
        (am, bm), *_ = np.linalg.lstsq(design, np.array([by_osl[int(o)][0] for o in osl]), rcond=None)
        (ap_, bp), *_ = np.linalg.lstsq(design, np.array([by_osl[int(o)][1] for o in osl]), rcond=None)
        ratio = bm / bp if bp > 0 and bm > 0 else float("nan")
        if ratio == ratio:
            ratios[str(key[0])].append(ratio)
        engine, model, gpu, precision, layout, isl, conc = key
        print(f"{engine:7s} {str(model).split('/')[-1][:28]:28s} {gpu:9s} {precision:5s} {layout:32s} {isl:5d} {conc:>4}  "
              f"{am:6.1f} / {ap_:6.1f}   {bm:7.0f} / {bp:7.0f}   {ratio:5.2f}")  # fmt: skip
    for engine, rs in sorted(ratios.items()):
        print(f"{engine}: {len(rs)} groups, median measured/predicted interference {statistics.median(rs):.2f} "
              f"(quartiles {np.percentile(rs, 25):.2f}-{np.percentile(rs, 75):.2f})")


if __name__ == "__main__":
    main()
