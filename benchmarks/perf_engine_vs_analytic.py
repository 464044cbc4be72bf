"""Engine-model path vs analytic closed-loop solver on the aggregated rows of a measurement CSV.

For every ``agg`` closed-loop row (deduplicated), predicts TTFT/TPOT two ways with the shipped calibration:
the analytic fixed point (``gpuyield.core.perf.closed_loop``, what ``validate`` uses) and the simulator's
engine model (``gpuyield.core.sim.run_closed_loop``, what ``estimate`` reports, plus the fitted first-token
overhead, exactly as ``gpuyield estimate`` does), and prints the MAPE/median of both.

    python benchmarks/perf_engine_vs_analytic.py --measurements ../shared/data/measurements/e2e_train.csv \
        [--limit 600] [--driver old_closed_loop.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.closed_loop import estimate_closed_loop
from gpuyield.core.perf.validation import _pool_model, error_summary, parse_layout
from gpuyield.core.sim import EngineConfig, run_closed_loop
from gpuyield.edges.perf.calibrate import load_measurements, lookups
from gpuyield.errors import GpuyieldError


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measurements", required=True)
    ap.add_argument("--limit", type=int, default=0, help="every k-th row so that about this many are used")
    ap.add_argument("--driver", default=None, help="a .py file with an alternative run_closed_loop")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rcl = run_closed_loop
    if args.driver:
        spec = importlib.util.spec_from_file_location("alt_driver", args.driver)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["alt_driver"] = mod
        spec.loader.exec_module(mod)
        rcl = mod.run_closed_loop
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
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("a_ttft", "a_tpot", "s_ttft", "s_tpot")}
    t0 = time.time()
    skipped = 0
    for r in uniq:
        try:
            layout = parse_layout(r.layout, r.tp)
            assert layout.replica is not None
            perf = _pool_model(mo(r.model), go(r.gpu), layout.replica, r, cal)
            reps = 1
            if r.num_gpus and r.num_gpus > layout.replica.gpus and r.num_gpus % layout.replica.gpus == 0:
                reps = r.num_gpus // layout.replica.gpus
            a = estimate_closed_loop(perf, r.isl, r.osl, r.concurrency, num_replicas=reps)
            ec = perf.engine_coeffs
            cfg = EngineConfig.for_family(
                r.engine, max_num_seqs=min(ec.max_num_seqs, 1 << 16), max_num_batched_tokens=ec.max_num_batched_tokens
            )
            c_rep = max(1, math.ceil(r.concurrency / reps))
            s = rcl(perf, cfg, r.isl, r.osl, c_rep)
        except GpuyieldError:
            skipped += 1
            continue
        m_ttft, m_tpot = r.measured["ttft_ms"], r.measured["tpot_ms"]
        if m_ttft:
            pairs["a_ttft"].append((a.ttft_ms, m_ttft))
            pairs["s_ttft"].append((s.ttft_ms.mean + ec.ttft_overhead_s * 1e3, m_ttft))
        if m_tpot and r.osl > 1:
            pairs["a_tpot"].append((a.tpot_ms, m_tpot))
            pairs["s_tpot"].append((s.tpot_ms.mean, m_tpot))
    out = {
        "rows": len(uniq),
        "skipped": skipped,
        "elapsed_s": round(time.time() - t0, 1),
        **{k: {kk: v[kk] for kk in ("n", "mape", "median_ape", "bias")} for k, v in
           ((k, error_summary(p)) for k, p in pairs.items())},
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
