"""``gpuyield validate``: score the performance model against a CSV of real end-to-end measurements."""

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
    progress,
    run_command,
)

__all__ = ["register", "validate"]

HELP = """Predict every row of a measurement CSV and report the errors (MAPE, median, p90, bias).

The CSV columns are exactly gpu,num_gpus,model,engine,precision,layout,tp,isl,osl,concurrency,num_requests,
ttft_ms,tpot_ms,e2e_ms,throughput_tok_s,source (measured columns may be blank; concurrency may be 'offline';
layout is 'agg tpT ppP adpA moe_tpM epE' or 'disagg Nx prefill(tpT adpA epE) + Mx decode(tpT adpA epE)').
Each row is predicted with the analytic closed-loop solver (fast: thousands of rows in seconds; the default)
or, with --method sim, aggregated rows through the engine model exactly as `estimate` reports them (about
10 ms a row); a row that cannot be predicted is listed in 'unsupported' with its reason. A row whose
measured latency is below the physical floor of its recorded deployment (Little's law with the GPUs' peak
FLOPs or HBM bandwidth) is still scored, and listed in 'implausible' with the floor ('summary_plausible'
scores the rest). Also writes a self-contained HTML report with predicted-vs-measured plots.

When the calibration holds measured operating points (the shipped one does: e2e_train.csv), predictions
near measured points of the same architecture (model shape), engine and precision are corrected by them.
On the calibration's own data (a file of which at least 90% of the predicted rows are already in the table,
measurement for measurement) each row's own measurement is left out (with its copies filed under another
name of the same architecture or layout spelling), so the errors are leave-one-out errors, never a lookup. On any other file, a row whose identical measurement (same inputs, same TTFT and TPOT) the
table holds keeps it: it is a repeat the calibration really has. --leave-own-out yes|no overrides the
choice; the output says which was used. --no-corrections scores the step-time model alone.

Examples:

  gpuyield validate --measurements ../shared/data/measurements/e2e_train.csv

  gpuyield validate --measurements e2e.csv --json results.json --report validate.html

  gpuyield validate --measurements my_runs.csv --calibration my_calib.yaml --json

  gpuyield validate --measurements e2e.csv --method sim
"""


def validate(
    measurements: Path = typer.Option(..., "--measurements", help="Measurement CSV (schema above)."),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Calibration YAML (default: shipped)."
    ),
    report: Path = typer.Option(
        Path("validate_report.html"), "--report", help="HTML report path ('-' for none)."
    ),
    catalog: list[str] | None = typer.Option(None, "--catalog", help=CATALOG_OPTION_HELP, metavar="FILE"),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
    method: str = typer.Option(
        "analytic", "--method", help="analytic (fast solver) or sim (engine model for aggregated rows, as estimate)."
    ),
    corrections: bool = typer.Option(
        True, "--corrections/--no-corrections", help="Apply the calibration's measured operating points."
    ),
    leave_own_out: str = typer.Option(
        "auto",
        "--leave-own-out",
        help="auto (leave-one-out on the calibration's own data only), yes (always) or no (never).",
    ),
) -> None:
    def body() -> None:
        from gpuyield.core.perf.validation import LEAVE_OWN_OUT_MODES, VALIDATION_METHODS, validate_rows
        from gpuyield.edges.perf.calibrate import load_measurements, lookups
        from gpuyield.edges.perf.io import load_calibration
        from gpuyield.edges.report.validation import render_validation_html
        from gpuyield.errors import ConfigError

        if method not in VALIDATION_METHODS:
            raise ConfigError(f"--method: expected one of {', '.join(VALIDATION_METHODS)}, got '{method}'")
        if leave_own_out not in LEAVE_OWN_OUT_MODES:
            raise ConfigError(f"--leave-own-out: expected one of auto, yes, no, got '{leave_own_out}'")
        cal = load_calibration(calibration)
        cat = load_catalog(catalog)
        invalid: list[dict[str, Any]] = []
        rows = load_measurements(measurements, invalid=invalid)
        model_of, gpu_of = lookups(cat, cal)
        with progress("validating", 2 * len(rows), enabled=json_out is None) as advance:
            result = validate_rows(
                rows,
                model_of,
                gpu_of,
                cal,
                progress=advance,
                method=method,
                invalid=invalid,
                corrections=corrections,
                leave_own_out=LEAVE_OWN_OUT_MODES[leave_own_out],
            )
        if str(report) != "-":
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(render_validation_html(result, f"gpuyield validate: {measurements.name}"))
            result["report"] = str(report)
        if json_out is not None:
            emit_json(result, json_out)
            return
        from rich.table import Table

        t = Table(
            title=f"{measurements.name}: {result['num_rows']} rows, coverage {100 * result['coverage']:.1f}%",
            title_justify="left",
            box=None,
        )
        for col in ("metric", "n", "MAPE", "median APE", "p90 APE", "bias"):
            t.add_column(col, justify="right")
        for m, s in result["summary"].items():
            if not s["n"]:
                t.add_row(m, "0", "—", "—", "—", "—")
                continue
            t.add_row(
                m,
                str(s["n"]),
                f"{100 * s['mape']:.1f}%",
                f"{100 * s['median_ape']:.1f}%",
                f"{100 * s['p90_ape']:.1f}%",
                f"{100 * s['bias']:+.1f}%",
            )
        console.print(t)
        for note in result.get("calibration_notes") or ():
            console.print(f"[yellow]note:[/yellow] {note}")
        kinds = result.get("summary_by_layout_kind") or {}
        if len(kinds) > 1:
            console.print("per layout kind: " + "; ".join(f"{k} {_mapes(s)}" for k, s in kinds.items()))
        if result["unsupported"]:
            console.print(
                f"{len(result['unsupported'])} unsupported rows (first: row {result['unsupported'][0]['row']}: "
                f"{result['unsupported'][0]['reason']})"
            )
        if result["implausible"]:
            first = result["implausible"][0]
            console.print(
                f"{len(result['implausible'])} rows are physically impossible as recorded (scored above; "
                f"without them: {_mapes(result['summary_plausible'])}); first: row {first['row']}: {first['reason']}"
            )
        rep = result.get("repeat_floor") or {}
        if rep.get("rows"):
            t_, d_ = rep["ttft_ms"], rep["tpot_ms"]

            def pct(v: float | None) -> str:
                return "—" if v is None else f"{100 * v:.1f}"

            console.print(
                f"{rep['rows']} rows repeat another row's inputs with other measured values ({rep['groups']} groups: "
                "settings the columns do not record): no model of the inputs scores below TTFT "
                f"{pct(t_['oracle_floor'])}% / TPOT {pct(d_['oracle_floor'])}% MAPE on this file; each predicted by "
                f"its repeats' median scores {pct(t_['twin_mape'])}% / {pct(d_['twin_mape'])}% "
                f"({pct(t_['twin_points'])} / {pct(d_['twin_points'])} points of the file's MAPE)"
            )
        if result["corrected_rows"]:
            own = result["own_rows"]
            how = (
                "each without its own measurement"
                if own["left_out"]
                else "a measurement the table holds is used, this is not a leave-one-out error"
            )
            console.print(
                f"{result['corrected_rows']} rows corrected by measured operating points ({how}; "
                f"{own['in_table']} of {own['measured_rows']} measured rows are in the table); "
                f"the step-time model alone: {_mapes(result['summary_step_model'])}"
            )
            if result.get("learned_rows"):
                which = (
                    "each by the cross-fitted ensemble that never saw the row's concurrency sweep"
                    if own["left_out"]
                    else "the mean of its cross-fitted ensembles"
                )
                console.print(
                    f"{result['learned_rows']} of them also by the calibration's learned residual model ({which})"
                )
            if "note" in own:
                console.print(f"[yellow]note:[/yellow] {own['note']}")
        if "report" in result:
            console.print(f"[dim]report: {result['report']}[/dim]")

    run_command(body)


def _mapes(summary: dict[str, Any]) -> str:
    """'ttft_ms MAPE 12.3%, tpot_ms MAPE 4.5%' of an error summary (metrics it has rows for)."""
    return (
        ", ".join(f"{m} MAPE {100 * summary[m]['mape']:.1f}%" for m in ("ttft_ms", "tpot_ms") if summary[m]["n"])
        or "no rows left"
    )


def register(app: typer.Typer) -> None:
    app.command("validate", help=HELP)(validate)
