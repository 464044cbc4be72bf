"""Cross-validation of the measured-operating-point corrections (``gpuyield.core.perf.corrections``).

The rows are split into ``--folds`` groups; for each fold the correction table is built from the other folds
only (``build_corrections``) and the fold's rows are predicted with it (``validate``'s scorer). ``--group``
chooses what a fold holds out as a whole:

- ``config``: a deployment at one ISL/OSL/concurrency (every repeated measurement of it together): new
  operating points of measured deployments, the case the corrections are for;
- ``sweep``: a deployment at one ISL/OSL, every concurrency together (a whole concurrency sweep): new
  request shapes on measured deployments. The training file's repeat groups and concurrency ladders are
  complete (``benchmarks/perf_holdout_structure.py``), so a held-out file drawn from the same study holds
  whole sweeps or coarser units, not single rows or operating points;
- ``deployment``: a model/engine/GPU/precision/layout as a whole: new layouts of measured models;
- ``model-gpu``: every row of a model on one GPU: a measured model on a GPU it was not measured on;
- ``model``: every row of a model: unseen models, which the corrections leave alone (the step-time model);
- ``row``: single rows at random, as a random held-out split of a measurement file would fall. A row the
  file holds twice (AIConfigurator's sample repeats about a fifth of its rows verbatim) can then be on both
  sides, and the training copy is used: the table really holds it. Each fold is scored as ``gpuyield validate``
  scores a file (``--leave-own-out auto``: a fold is not the table's own data, so nothing is left out);
  ``--leave-own-out yes`` scores it as ``validate`` did before 2026-12-06 (a held repeat thrown away).

``--set name=value`` overrides a ``CorrectionSettings`` field (repeatable; ``null`` for an optional one, e.g.
``slope_ridge=null`` for the local-constant interpolation), to compare kernel settings.

With ``--learned`` the learned residual model (``gpuyield.edges.perf.learned``) is also fitted on each training
split (about a minute a fold) and the fold is scored with it too ("with learned residuals"), so the figure is a
nested cross-validation: the trees never see the held-out groups.

``--rows-out FILE`` also writes every held-out row's record (``validate``'s row format plus ``variant`` and
``fold``), one JSON object a line, to see where a variant's error lies.

With ``--refit`` the engine constants are also refitted on the training folds (``fit_engines``, slow: about
two minutes a fold here); without it the shipped constants are used, which saw every row (the correction is
the only thing held out).

    python benchmarks/perf_corrections_cv.py --measurements ../shared/data/measurements/e2e_train.csv --group config
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.corrections import CorrectionSettings, settings_with
from gpuyield.core.perf.validation import (
    LEAVE_OWN_OUT_MODES,
    build_corrections,
    deployment_key,
    error_summary,
    row_measurement_id,
    validate_rows,
)
from gpuyield.edges.perf.calibrate import fit_engines, load_measurements, lookups
from gpuyield.errors import GpuyieldError


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measurements", required=True)
    ap.add_argument("--group", choices=("config", "sweep", "deployment", "model-gpu", "model", "row"), default="config")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refit", action="store_true", help="refit the engine constants on each training split")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--learned", action="store_true", help="also fit and score the learned residual model per fold")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rows-out", default=None, help="also write every held-out row's predictions (JSON lines)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a correction setting")
    ap.add_argument("--leave-own-out", choices=tuple(LEAVE_OWN_OUT_MODES), default="auto", help="as gpuyield validate's")
    args = ap.parse_args()
    t0 = time.time()
    cat = default_catalog()
    shipped = default_calibration()
    base = dataclasses.replace(shipped, corrections=None)
    rows = load_measurements(Path(args.measurements))
    model_of, gpu_of = lookups(cat, base)

    settings = shipped.corrections.settings if shipped.corrections else CorrectionSettings()
    try:
        settings = settings_with(settings, args.set)
    except GpuyieldError as exc:
        ap.error(str(exc))

    def group_of(r):  # type: ignore[no-untyped-def]
        if args.group == "row":
            return str(r.index)
        if args.group in ("model", "model-gpu"):
            try:
                name = model_of(r.model).id
            except GpuyieldError:
                name = r.model
            return name if args.group == "model" else f"{name}|{r.gpu}"
        try:
            # under its architecture, not its model name: a run filed under two names of one architecture
            # (DeepSeek-R1 and -V3) is held out with its copy
            k = deployment_key(r, model_of, gpu_of)
            key = "|".join((k.engine, k.architecture, k.gpu, k.precision, k.layout, str(k.num_gpus)))
        except GpuyieldError:
            key = f"{r.model}|{r.gpu}|{r.layout}"
        if args.group == "deployment":
            return key
        if args.group == "sweep":
            return f"{key}|{r.isl}|{r.osl}"
        return f"{key}|{r.isl}|{r.osl}|{r.concurrency}"

    import random

    # groups holding copies of one measurement (one run filed under two model names or layout spellings) are held
    # out together, as the learned stage's folds tie them, except with --group row (whose point is what a copy on
    # the training side buys)
    from gpuyield.edges.perf.learned import fold_aliases

    tied = fold_aliases(rows, {r.index: group_of(r) for r in rows}) if args.group != "row" else {}

    def find(g: str) -> str:
        return tied.get(g, g)

    groups = sorted({find(group_of(r)) for r in rows})
    random.Random(args.seed).shuffle(groups)
    fold_of = {g: i % args.folds for i, g in enumerate(groups)}
    fold_of = {g: fold_of[find(g)] for g in {group_of(r) for r in rows}}
    pairs: dict[str, dict[str, list[tuple[float, float]]]] = {
        name: {"ttft_ms": [], "tpot_ms": []}
        for name in ("model only", "with corrections", "model only, plausible rows", "with corrections, plausible rows")
        + (("with learned residuals", "with learned residuals, plausible rows") if args.learned else ())
    }
    if args.group == "row":  # where a random split's gain comes from: a verbatim copy on the training side or not
        for name in ("with corrections, plausible, copy in training", "with corrections, plausible, no copy"):
            pairs[name] = {"ttft_ms": [], "tpot_ms": []}
    corrected = 0
    row_records: list[dict[str, object]] = []
    for f in range(args.folds):
        train = [r for r in rows if fold_of[group_of(r)] != f]
        test = [r for r in rows if fold_of[group_of(r)] == f]
        cal = base
        if args.refit:
            cal = fit_engines(base, train, cat, rounds=args.rounds)
        table = build_corrections(train, model_of, gpu_of, cal, settings)
        train_ids = {row_measurement_id(r) for r in train}
        id_of = {r.index: row_measurement_id(r) for r in test}
        variants = [("model only", cal), ("with corrections", dataclasses.replace(cal, corrections=table))]
        if args.learned:
            from gpuyield.edges.perf.learned import fit_learned_residuals

            learned = fit_learned_residuals(train, model_of, gpu_of, variants[1][1])
            variants.append(
                ("with learned residuals", dataclasses.replace(cal, corrections=dataclasses.replace(table, learned=learned)))
            )
        for name, c in variants:
            res = validate_rows(test, model_of, gpu_of, c, leave_own_out=LEAVE_OWN_OUT_MODES[args.leave_own_out])
            if name == "with corrections":
                corrected += res["corrected_rows"]
            if args.rows_out:
                row_records.extend({"variant": name, "fold": f, **rec} for rec in res["rows"])
            for rec in res["rows"]:
                for m in ("ttft_ms", "tpot_ms"):
                    meas = rec.get(f"measured_{m}")
                    if meas:
                        pairs[name][m].append((rec[f"predicted_{m}"], meas))
                        if "implausible" not in rec:  # physically impossible as recorded (validate's floor)
                            pairs[f"{name}, plausible rows"][m].append((rec[f"predicted_{m}"], meas))
                            if args.group == "row" and name == "with corrections":
                                copy = "copy in training" if id_of[rec["row"]] in train_ids else "no copy"
                                pairs[f"{name}, plausible, {copy}"][m].append((rec[f"predicted_{m}"], meas))
        print(f"fold {f + 1}/{args.folds}: {len(test)} rows held out ({time.time() - t0:.0f} s)", flush=True)
    out = {
        "group": args.group,
        "folds": args.folds,
        "refit": args.refit,
        "learned": args.learned,
        "settings": dataclasses.asdict(settings),
        "leave_own_out": args.leave_own_out,
        "rows": len(rows),
        "corrected_rows": corrected,
        "summary": {name: {m: error_summary(v) for m, v in p.items()} for name, p in pairs.items()},
        "seconds": round(time.time() - t0, 1),
    }
    for name, s in out["summary"].items():
        print(
            f"{name:>47}: TTFT MAPE {100 * s['ttft_ms']['mape']:.1f} % (median {100 * s['ttft_ms']['median_ape']:.1f} %)"
            f"  TPOT MAPE {100 * s['tpot_ms']['mape']:.1f} % (median {100 * s['tpot_ms']['median_ape']:.1f} %)"
        )
    print(f"corrected rows: {corrected}; {out['seconds']} s")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    if args.rows_out:
        Path(args.rows_out).write_text("".join(json.dumps(r) + "\n" for r in row_records))


if __name__ == "__main__":
    main()
