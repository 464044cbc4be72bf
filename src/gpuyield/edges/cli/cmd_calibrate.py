"""``gpuyield calibrate``: rebuild the performance model's calibration from raw kernel tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from gpuyield.edges.cli.common import (
    CATALOG_OPTION_HELP,
    JSON_OPTION_HELP,
    console,
    emit_json,
    load_catalog,
    run_command,
)

__all__ = ["calibrate", "register"]

HELP = """Reduce raw kernel timing tables to a compact calibration YAML (and optionally fit end-to-end constants).

--from takes AIConfigurator's systems/ tree (<device>.yaml + data/<device>/{gemm,attention,comm}/...) or the
directory `gpuyield profile` writes (same layout, CSV tables). Repeat --from to merge several roots; later
roots win for the same device. With --measurements, the engine-family constants (overheads, TTFT share of a
synchronised start, decode/prefill efficiency) are fitted on that CSV (schema of `gpuyield validate`).
With --measurements it also stores every measured operating point's residual (log measured / predicted TTFT
and TPOT under the fitted constants): estimate and validate then correct queries near measured points of
the same architecture (model shape), engine and precision (interpolated in log ISL/OSL/concurrency; --no-corrections to skip).
It then fits the learned residual model on what those points leave (boosted trees, cross-fitted by concurrency
sweep; needs scikit-learn: pip install 'gpuyield\\[fit]', and is skipped with a note without it; about 100 s
for 4,500 rows; --no-learned to skip).
A calibration rebuilt from --from or refitted carries only the new rows' points (old residuals would be
stale). To add your measurements to a calibration without changing its coefficients (the shipped one, say),
use --base FILE|shipped --measurements CSV --no-fit (no --from): the points are merged.
Use the result with --calibration FILE on estimate/validate.

Examples:

  gpuyield calibrate --from ../shared/data/calibration/aiconfigurator --out calib.yaml

  gpuyield calibrate --from ../shared/data/calibration/aiconfigurator --measurements ../shared/data/measurements/e2e_train.csv --out calib.yaml

  gpuyield profile --device cpu --model tiny-llama --out prof/ && gpuyield calibrate --from prof/ --base shipped --out cpu_calib.yaml

  gpuyield calibrate --base shipped --measurements my_fleet.csv --no-fit --out mine.yaml
"""


def calibrate(
    from_: list[Path] = typer.Option(
        [], "--from", help="Kernel-table root (repeatable; may be left out with --base)."
    ),
    out: Path = typer.Option(..., "--out", help="Calibration YAML to write."),
    measurements: Path | None = typer.Option(
        None, "--measurements", help="End-to-end CSV to fit engine constants on."
    ),
    base: str | None = typer.Option(
        None,
        "--base",
        help="Start from this calibration YAML ('shipped' = the built-in one) and add/override devices.",
    ),
    rounds: int = typer.Option(3, "--rounds", help="Coordinate-descent rounds of the end-to-end fit."),
    refine: bool = typer.Option(
        False,
        "--refine/--no-refine",
        help="Also fit efficiencies per (engine, precision) and (engine, GPU, precision) groups (tighter in "
        "sample, worse on held-out models in our cross-validation).",
    ),
    fit_method: str = typer.Option(
        "analytic",
        "--fit-method",
        help="Fit the aggregated engine families through the analytic solver (what `validate` scores; fast) or "
        "through the engine model ('sim': what estimate, simulate and plan run; about 10 ms a row), the analytic "
        "solver then fitting only its share of the synchronised burst.",
    ),
    corrections: bool = typer.Option(
        True,
        "--corrections/--no-corrections",
        help="With --measurements, store the measured operating points' residuals (see above).",
    ),
    learned: bool | None = typer.Option(
        None,
        "--learned/--no-learned",
        help="With --measurements and corrections (and the constants refitted), fit the learned residual model "
        "(see above). Default: fit it when scikit-learn is installed; --learned requires it. With --no-fit the "
        "base's learned model is kept as it is.",
    ),
    fit: bool = typer.Option(
        True,
        "--fit/--no-fit",
        help="With --measurements, refit the engine constants on them. --no-fit keeps the coefficients and only "
        "adds the rows as measured operating points (merged with the base's, which stay valid).",
    ),
    catalog: list[str] | None = typer.Option(None, "--catalog", help=CATALOG_OPTION_HELP, metavar="FILE"),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    def body() -> None:
        import dataclasses

        from rich.markup import escape

        from gpuyield.core.perf.calibration import (
            MODEL_RULES,
            Calibration,
            EngineCoefficients,
            calibration_to_dict,
            model_rules_note,
        )
        from gpuyield.core.perf.corrections import CorrectionSettings
        from gpuyield.core.perf.validation import VALIDATION_METHODS, build_corrections, implausible_reason
        from gpuyield.edges.perf.calibrate import (
            ENGINE_DEFAULTS,
            fit_engines,
            kernel_calibration,
            load_measurements,
            lookups,
        )
        from gpuyield.edges.perf.io import load_calibration, write_calibration
        from gpuyield.edges.perf.learned import TooFewRows, fit_learned_residuals, sklearn_available
        from gpuyield.errors import ConfigError

        if rounds < 1:
            raise ConfigError(f"--rounds: expected >= 1, got {rounds}")
        cat = load_catalog(catalog)
        start = Calibration()
        if base is not None:
            start = load_calibration(None if base == "shipped" else base)
        if not start.engines:  # this build's starting constants: its rules
            start = dataclasses.replace(
                start,
                engines={e: EngineCoefficients(**v) for e, v in ENGINE_DEFAULTS.items()},
                model_rules=MODEL_RULES,
            )
        logs: list[str] = []

        def log(msg: str) -> None:
            logs.append(msg)
            if json_out is None:
                console.print(f"[dim]{escape(msg)}[/dim]")

        if not from_ and base is None:
            raise ConfigError("give kernel tables (--from DIR) or a calibration to start from (--base FILE|shipped)")
        if not fit and (measurements is None or not corrections):
            raise ConfigError("--no-fit adds --measurements as measured operating points: give --measurements")
        if fit_method not in VALIDATION_METHODS:
            raise ConfigError(f"--fit-method: expected one of {', '.join(VALIDATION_METHODS)}, got {fit_method!r}")
        if fit_method != "analytic" and measurements is None:
            raise ConfigError("--fit-method sim chooses how --measurements are fitted: give --measurements")
        if fit_method != "analytic" and not fit:
            raise ConfigError("--fit-method sim fits the engine constants, which --no-fit keeps: drop one of them")
        settings = start.corrections.settings if start.corrections is not None else CorrectionSettings()
        cal = start
        if from_:
            # new kernel efficiencies make any stored residuals stale
            cal = dataclasses.replace(kernel_calibration(from_, cat, start, log=log), corrections=None)
        if measurements is not None:
            invalid: list[dict[str, Any]] = []
            rows = load_measurements(measurements, invalid=invalid)
            for bad in invalid:
                log(f"skipped measurement {bad['reason']}")
            model_of, gpu_of = lookups(cat, cal)
            impossible = [r.index for r in rows if implausible_reason(r, model_of, gpu_of) is not None]
            if impossible:
                log(
                    f"{len(impossible)} measurement(s) are physically impossible as recorded (rows "
                    f"{', '.join(map(str, impossible[:10]))}{' ...' if len(impossible) > 10 else ''}): kept, since "
                    "a study's recording convention predicts its other rows; `gpuyield validate` gives the reasons"
                )
            if fit:
                before = cal
                cal = fit_engines(cal, rows, cat, rounds=rounds, log=log, refine=refine, method=fit_method)
                # this build's rules only if no entry kept a base's constants fitted under older ones (fit_engines
                # refits the families the CSV has rows of, a P/D family with enough of them)
                kept = sorted(k for k, e in cal.engines.items() if before.engines.get(k) == e)
                if kept and before.model_rules < MODEL_RULES:
                    log(f"engine constants kept from the base (no or too few rows to refit them): {', '.join(kept)}; "
                        f"the file keeps the base's model_rules v{before.model_rules}")  # fmt: skip
                cal = dataclasses.replace(
                    cal,
                    sources=(*cal.sources, f"end-to-end fit: {measurements}"),
                    corrections=None,
                    model_rules=before.model_rules if kept else MODEL_RULES,
                )
            if corrections:
                model_of, gpu_of = lookups(cat, cal)
                table = build_corrections(
                    rows,
                    model_of,
                    gpu_of,
                    cal,
                    settings,
                    source=f"log(measured / predicted) of {measurements} under this file's coefficients",
                    with_sim=True,
                )
                if cal.corrections is not None:  # --no-fit: same coefficients, the base's points stay valid
                    if cal.model_rules < MODEL_RULES:
                        log(f"the base's measured points were computed under model rules v{cal.model_rules}, the new "
                            f"ones under v{MODEL_RULES}: refit (without --no-fit) to make them agree")  # fmt: skip
                    table = cal.corrections.merged(table)
                    if table.learned is not None:
                        log("learned residual model: the base's, kept (not refitted on the merged points)")
                elif learned is None and not sklearn_available():
                    log("learned residual model: skipped, scikit-learn is not installed (pip install 'gpuyield[fit]')")
                elif learned is not False:
                    try:
                        table = dataclasses.replace(
                            table,
                            learned=fit_learned_residuals(
                                rows,
                                model_of,
                                gpu_of,
                                dataclasses.replace(cal, corrections=table),
                                log=log,
                                source=f"fitted on {measurements} under this file's coefficients and measured points",
                            ),
                        )
                    except TooFewRows as exc:
                        log(f"{exc}; written without it")
                cal = dataclasses.replace(cal, corrections=table)
                log(f"measured operating points: {len(table)} in {len(table.deployments)} deployment(s)")
        if (stale := model_rules_note(cal)) is not None:  # the base's constants, kept as they were fitted
            log(stale)
        header = (
            "# gpuyield performance-model calibration (written by `gpuyield calibrate`).\n"
            "# Derived from: " + "; ".join(cal.sources)
        )
        write_calibration(cal, out, header)
        summary = {
            "out": str(out),
            "devices": sorted(cal.gpus),
            "engines": sorted(cal.engines),
            "log": logs,
            "calibration": calibration_to_dict(cal),
        }
        if json_out is not None:
            emit_json(summary, json_out)
        else:
            console.print(f"wrote {out}: {len(cal.gpus)} device(s), {len(cal.engines)} engine entr(ies)")

    run_command(body)


def register(app: typer.Typer) -> None:
    app.command("calibrate", help=HELP)(calibrate)
