"""Rebuild the ``corrections:`` section of the shipped calibration (``core/perf/data/calibration.yaml``).

The rest of the file (kernel efficiencies, engine constants, their provenance) is kept byte for byte; the
measured operating points are recomputed under those coefficients from the measurement CSV, with the
settings the file already holds (or the defaults). Run it after changing the coefficients or the model:

    python scripts/refresh_shipped_corrections.py ../shared/data/measurements/e2e_train.csv

It also refits the learned residual model on the same rows (``gpuyield.edges.perf.learned``; needs scikit-learn,
about a minute); ``--no-learned`` leaves it out.

To change the interpolation settings too, give them with ``--set name=value`` (repeatable; ``null`` for None)
and say why with ``--why TEXT`` (appended, dated, to the settings' ``source``):

    python scripts/refresh_shipped_corrections.py ../shared/data/measurements/e2e_train.csv \
        --set slope_ridge=1 --why "local-linear: ..."
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path

import yaml

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import calibration_from_dict
from gpuyield.core.perf.corrections import CorrectionSettings, MeasuredCorrections, settings_with
from gpuyield.core.perf.validation import build_corrections
from gpuyield.edges.perf.calibrate import load_measurements, lookups
from gpuyield.errors import GpuyieldError

SHIPPED = Path(__file__).resolve().parents[1] / "src/gpuyield/core/perf/data/calibration.yaml"
MARK = "# Measured operating points"
SETTINGS_SOURCE = (
    "chosen by 5-fold configuration-grouped cross-validation on shared/data/measurements/e2e_train.csv "
    "(benchmarks/perf_corrections_cv.py; length scales 0.35-1.0 and prior weights 0.05-0.2 give a flat optimum; "
    "estimators log_mean vs mape_median compared per metric; other-model penalty 0-4 compared on held-out "
    "DeepSeek-V3 and -R1), 2026-11-22; same_point_weight 0-100 compared by 5-fold random-row cross-validation "
    "and by leave-one-out on the same rows (3: random-row TTFT/TPOT MAPE 25.0/13.9 to 22.9/12.6 %, "
    "leave-one-out 28.5/15.6 to 28.7/15.9 %), 2026-12-06; layout-distance penalty (near 0-4, per log2 step "
    "0.5-2, cap 6-12) by deployment-, configuration- and random-row-grouped cross-validation on the physically "
    "possible rows (whole deployments TTFT/TPOT 36.1/23.9 to 32.1/22.6 %), 2026-12-06; same_point_weight 3 -> 1 "
    "after splitting random-row folds by whether a verbatim copy of the held-out row is in training: 0 / 1 / 3 "
    "give copies 15.2/12.1, 10.9/9.7, 7.6/7.5 % and the other rows 24.0/14.0, 24.2/14.1, 24.7/14.2 % "
    "(leave-one-out, possible rows: 23.4/15.0, 23.1/15.2, 23.4/15.3 %), 2026-12-06"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change a correction setting")
    ap.add_argument("--why", default="", help="why the settings changed (appended to their source)")
    ap.add_argument("--no-learned", action="store_true", help="do not fit the learned residual model")
    args = ap.parse_args()
    if bool(args.set) != bool(args.why):
        ap.error("--set and --why go together: the settings' source says how each was chosen")
    csv = args.csv
    # read the file itself, not default_calibration(): after a refit of the coefficients above the stored points
    # are stale (and refused on load); only their settings carry over
    data = yaml.load(SHIPPED.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    stored = data.pop("corrections", None)
    cal = calibration_from_dict(data, str(SHIPPED))
    settings = (
        MeasuredCorrections.from_dict(stored, str(SHIPPED)).settings
        if stored
        else CorrectionSettings(source=SETTINGS_SOURCE)
    )
    if args.set:
        try:
            changed = settings_with(settings, args.set)
        except GpuyieldError as exc:
            ap.error(str(exc))
        today = datetime.date.today().isoformat()
        settings = dataclasses.replace(changed, source=f"{settings.source}; {args.why}, {today}")
    base = dataclasses.replace(cal, corrections=None)
    model_of, gpu_of = lookups(default_catalog(), base)
    table = build_corrections(
        load_measurements(csv),
        model_of,
        gpu_of,
        base,
        settings,
        source=f"log(measured / predicted) TTFT and TPOT of shared/data/measurements/{csv.name} (AIConfigurator "
        f"silicon_sample.csv, Apache-2.0) under this file's coefficients, {datetime.date.today().isoformat()}",
        with_sim=True,
    )
    if not args.no_learned:
        from gpuyield.edges.perf.learned import fit_learned_residuals

        learned = fit_learned_residuals(
            load_measurements(csv),
            model_of,
            gpu_of,
            dataclasses.replace(base, corrections=table),
            log=print,
            source=f"fitted on shared/data/measurements/{csv.name} (AIConfigurator silicon_sample.csv, Apache-2.0) "
            f"under this file's coefficients and measured points, {datetime.date.today().isoformat()}",
        )
        table = dataclasses.replace(table, learned=learned)
    text = SHIPPED.read_text()
    head = text.split(MARK)[0].rstrip("\n") + "\n"
    body = yaml.safe_dump({"corrections": table.to_dict()}, sort_keys=False, width=200, default_flow_style=None)
    SHIPPED.write_text(
        head + f"{MARK}: the residual of every closed-loop training row (see core/perf/corrections.py).\n"
        "# Rebuilt by scripts/refresh_shipped_corrections.py; stale if the coefficients above change.\n" + body
    )
    print(f"{SHIPPED}: {len(table)} points in {len(table.deployments)} deployments")


if __name__ == "__main__":
    main()
