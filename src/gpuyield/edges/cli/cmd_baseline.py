"""``gpuyield baseline``: measure a fleet's real GPU productivity from the telemetry it already has.

``gpuyield baseline --metrics FILES_OR_URLS... | --prometheus URL --window 24h | --db FILE --out DIR`` writes
a terminal summary, ``DIR/baseline.json`` and ``DIR/report.html``; ``gpuyield baseline watch`` scrapes
endpoints into a DuckDB file for users without Prometheus.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from gpuyield.edges.cli.common import (
    CATALOG_OPTION_HELP,
    JSON_OPTION_HELP,
    console,
    emit_json,
    err_console,
    run_command,
    to_jsonable,
)

__all__ = ["BASELINE_SCHEMA", "baseline_app", "build_baseline", "register"]

BASELINE_SCHEMA = "gpuyield.baseline/1"
_MULTI_VALUE_OPTIONS = ("--metrics", "-m")


class _BaselineGroup(TyperGroup):
    """Lets ``--metrics a.prom b.prom URL`` take several values (rewritten to repeated ``--metrics``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            tok = args[i]
            if tok in _MULTI_VALUE_OPTIONS:
                i += 1
                took = False
                while i < len(args) and not args[i].startswith("-") and args[i] not in self.commands:
                    out.extend(["--metrics", args[i]])
                    took = True
                    i += 1
                if not took:
                    out.append("--metrics")
                continue
            out.append(tok)
            i += 1
        return super().parse_args(ctx, out)


baseline_app = typer.Typer(
    cls=_BaselineGroup,
    help=(
        "Measure real GPU productivity from telemetry: GPU-hours, busy vs really active, energy, tokens, $ per 1M "
        "tokens, idle $, and productivity (delivered ÷ achievable output tokens).\n\n"
        "Examples:\n\n"
        "  gpuyield baseline --metrics dcgm.prom vllm.prom --prices prices.yaml --out out/\n\n"
        "  gpuyield baseline --metrics captures/ http://10.0.0.5:9400/metrics --map map.yaml --out out/\n\n"
        "  gpuyield baseline --prometheus http://prometheus:9090 --window 24h --out out/\n\n"
        "  gpuyield baseline --db fleet.duckdb --window 6h --out out/\n\n"
        "  gpuyield baseline watch --targets targets.yaml --every 15s --db fleet.duckdb --duration 1h"
    ),
    invoke_without_command=True,
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def build_baseline(
    *,
    metrics: list[str],
    prometheus: str | None,
    window: str | None,
    end: str | None,
    prices: str | None,
    map_file: str | None,
    db: str | None,
    interval: str,
    catalog: list[str] | None,
    calibration: str | None = None,
    corrections: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Read, store, join and compute. Returns (BaselineResult, the 'inputs' section of baseline.json).
    ``calibration`` (a file from ``gpuyield calibrate``; None: the shipped one) times the achievable capacity,
    corrected by its measured operating points unless ``corrections`` is False."""
    from gpuyield.core.baseline import compute_baseline
    from gpuyield.edges.telemetry import (
        SampleBuffer,
        assemble_inputs,
        group_samples,
        load_map_file,
        load_prices_file,
        parse_duration_s,
        query_prometheus,
        read_metrics,
    )
    from gpuyield.edges.telemetry.exposition import parse_timestamp_s
    from gpuyield.edges.telemetry.pricing import make_price_fn
    from gpuyield.errors import ConfigError

    if not metrics and not prometheus and not db:
        raise ConfigError("nothing to read: give --metrics FILES_OR_URLS..., --prometheus URL or --db FILE")
    if prometheus and metrics:
        raise ConfigError("--prometheus reads from a Prometheus server: do not combine it with --metrics")
    single_scrape_s = parse_duration_s(interval, "--interval")
    window_s = parse_duration_s(window, "--window") if window else None
    end_s = None
    if end is not None:
        end_s = parse_timestamp_s(end)
        if end_s is None:
            raise ConfigError(f"--end '{end}': expected epoch seconds or ISO 8601 (2026-03-10T12:00:00Z)")
    mapping = load_map_file(map_file) if map_file else None
    prices_file = load_prices_file(prices) if prices else None
    from gpuyield.core.baseline import perf_model_achievable
    from gpuyield.edges.cli.common import load_catalog
    from gpuyield.edges.perf.io import load_calibration

    cat = load_catalog(catalog)
    cal = load_calibration(calibration)  # read before the telemetry: a bad file fails fast
    price_fn, notes = make_price_fn(prices_file, catalog=cat)

    buffer = SampleBuffer()
    source_stats = []
    if prometheus:
        if window_s is None:
            raise ConfigError("--prometheus needs --window (e.g. --window 24h)")
        source_stats.append(query_prometheus(prometheus, window_s=window_s, end_s=end_s or time.time(), buffer=buffer))
    elif metrics:
        source_stats.extend(read_metrics(metrics, buffer))

    if db:
        from gpuyield.edges.storage import TelemetryStore

        with TelemetryStore(db) as store:
            if len(buffer):
                store.ingest(buffer, sources=[(s.origin, s.stats) for s in source_stats])
            last_row = store.con.execute("SELECT max(ts_ms) FROM samples").fetchone()
            last_ms = last_row[0] if last_row else None
            stop_ms = int(end_s * 1000) if end_s is not None else last_ms
            start_ms = None if window_s is None or stop_ms is None else stop_ms - int(window_s * 1000)
            keys, sources, sid, ts_ms, values = store.load(start_ms=start_ms, end_ms=stop_ms)
            raw = group_samples(keys, sources, sid, ts_ms, values)
            inputs = assemble_inputs(raw, mapping=mapping, price_fn=price_fn, single_scrape_s=single_scrape_s,
                                     notes=notes)
            store.record_entities(inputs)
            num_stored = store.num_samples()
    else:
        sid, ts_ms, values = buffer.arrays()
        if window_s is not None and len(ts_ms) and not prometheus:
            stop_ms = int(end_s * 1000) if end_s is not None else int(ts_ms.max())
            keep = (ts_ms >= stop_ms - int(window_s * 1000)) & (ts_ms <= stop_ms)
            sid, ts_ms, values = sid[keep], ts_ms[keep], values[keep]
        raw = group_samples(buffer.series, buffer.series_source, sid, ts_ms, values)
        inputs = assemble_inputs(raw, mapping=mapping, price_fn=price_fn, single_scrape_s=single_scrape_s, notes=notes)
        num_stored = None

    malformed = sum(s.stats.num_malformed for s in source_stats)
    extra_notes = []
    if malformed:
        first = next(e for s in source_stats for e in s.stats.malformed_examples)
        extra_notes.append(f"{malformed} malformed exposition line(s) skipped; first: {first}")
    inputs = type(inputs)(**{**inputs.__dict__, "notes": tuple(extra_notes) + inputs.notes})
    if not inputs.gpus and not inputs.engines and not inputs.tenants:
        raise ConfigError("no DCGM, vLLM, SGLang, llama.cpp or gpuyield metrics found in the input")
    result = compute_baseline(inputs, perf_model_achievable(cat, cal, corrections))
    section = {
        "sources": [
            {"origin": s.origin, "samples": s.stats.num_samples, "malformed_lines": s.stats.num_malformed,
             "scrapes": s.stats.num_scrapes, "malformed_examples": s.stats.malformed_examples}
            for s in source_stats
        ],
        "malformed_lines": malformed,
        "db": db,
        "db_samples": num_stored,
        "single_scrape_s": single_scrape_s,
        "deployments": [
            {"name": d.name, "model": d.model_name, "joined_by": d.joined_by, "engines": list(d.engine_ids),
             "gpus": list(d.gpu_ids)}
            for d in inputs.deployments
        ],
    }
    return result, section


def _print_summary(result: Any, out_dir: Path) -> None:
    from rich.table import Table

    f = result.fleet

    def fmt(v: float | None, spec: str = ",.2f", suffix: str = "") -> str:
        return "[dim]not measured[/dim]" if v is None else f"{v:{spec}}{suffix}"

    def pct(v: float | None) -> str:
        return fmt(None if v is None else v * 100, ".1f", "%")

    t = Table(title="Fleet baseline", show_header=False)
    for k, v in [
        ("GPUs", str(f.gpus)), ("GPU-hours", fmt(f.gpu_hours, ",.4f")), ("cost $", fmt(f.usd, ",.4f")),
        ("output tokens", fmt(f.output_tokens, ",.0f")), ("input tokens", fmt(f.input_tokens, ",.0f")),
        ("$ per 1M output tokens", fmt(f.usd_per_1m_output_tokens)),
        ("idle GPUs / GPU-hours", f"{f.idle_gpus} / {fmt(f.idle_gpu_hours, ',.4f')}"),
        ("idle $ (idle $/hour)", f"{fmt(f.idle_usd, ',.4f')} ({fmt(f.idle_usd_per_hour, ',.2f')})"),
        ("mean GPU util (busy)", pct(f.mean_gpu_util)), ("mean SM active", pct(f.mean_sm_active)),
        ("energy kWh", fmt(f.energy_kwh, ",.4f")), ("productivity", pct(f.productivity)),
    ]:
        t.add_row(k, v)
    console.print(t)
    g = Table(title="Per GPU")
    for col in ("GPU", "type", "deployment / state", "busy", "SM act.", "power W", "$", "idle $"):
        g.add_column(col)
    for r in result.per_gpu:
        g.add_row(r.gpu_id, r.device_name or "?", r.deployment or r.idle_reason or (f"pod {r.pod}" if r.pod else ""),
                  pct(r.mean_gpu_util), pct(r.mean_sm_active), fmt(r.mean_power_w, ",.1f"), fmt(r.usd, ",.4f"),
                  fmt(r.idle_usd, ",.4f"))
    console.print(g)
    if result.per_model:
        m = Table(title="Per model")
        for col in ("deployment", "basis", "output tok", "input tok (cached)", "TPOT ms", "$/1M out", "productivity"):
            m.add_column(col)
        for x in result.per_model:
            out_tok = x.output_tokens if x.basis == "window" else x.lifetime_output_tokens
            in_tok = x.input_tokens if x.basis == "window" else x.lifetime_input_tokens
            m.add_row(x.deployment[:48], x.basis, fmt(out_tok, ",.0f"),
                      f"{fmt(in_tok, ',.0f')} ({fmt(x.cached_input_tokens, ',.0f')})",
                      fmt(None if x.tpot_mean_s is None else x.tpot_mean_s * 1000, ",.1f"),
                      fmt(x.usd_per_1m_output_tokens), pct(x.productivity))
        console.print(m)
    gaps = list(result.gap) + [g for m in result.per_model for g in m.gap if g.lost_fraction]
    if gaps:
        console.print("[bold]Where the gap comes from[/bold]:")
        for g in gaps[:6]:
            share = f" ({g.lost_fraction:.0%} of achievable)" if g.lost_fraction is not None else ""
            console.print(f"  • {g.cause}: {g.detail}{share}", highlight=False)
            if g.command:
                console.print(f"    [dim]{g.command}[/dim]", highlight=False)
    if result.notes:
        console.print(f"[bold]{len(result.notes)} note(s)[/bold] (full list in baseline.json):")
        for n in result.notes[:8]:
            console.print(f"  • {n}", highlight=False)
    console.print(f"wrote {out_dir / 'baseline.json'} and {out_dir / 'report.html'}")


def _write_measurements(result: Any, catalog: list[str], path: str) -> None:
    """The deployments as measurement rows (``gpuyield.core.baseline.measurements``), CSV with the header."""
    import csv

    from gpuyield.core.baseline.measurements import measurement_rows
    from gpuyield.core.perf.validation import CSV_COLUMNS
    from gpuyield.edges.cli.common import load_catalog
    from gpuyield.errors import ConfigError

    rows, skipped = measurement_rows(result.per_model, load_catalog(catalog))
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
            w.writeheader()
            w.writerows(rows)
    except OSError as exc:
        raise ConfigError(f"--measurements-out {path}: cannot write ({exc.strerror or exc})") from None
    result.notes.extend(skipped)
    result.notes.append(f"wrote {len(rows)} measurement row(s) to {path}")


@baseline_app.callback()
def baseline(
    ctx: typer.Context,
    metrics: list[str] = typer.Option(
        [], "--metrics", "-m", help="Exposition files, directories of scrape files, or http(s) /metrics URLs (several)."
    ),
    prometheus: str | None = typer.Option(None, "--prometheus", help="Prometheus base URL (reads query_range)."),
    window: str | None = typer.Option(None, "--window", help="Time window, e.g. 24h: the Prometheus range, or the last part of the samples read."),
    end: str | None = typer.Option(None, "--end", help="End of the window (epoch s or ISO 8601); default now / last sample."),
    prices: str | None = typer.Option(None, "--prices", help="YAML prices file (prices: - gpu, usd_per_gpu_hour, source, as_of), as for gpuyield plan."),
    map_file: str | None = typer.Option(None, "--map", help="YAML mapping of engines to GPUs (deployments: ...)."),
    db: str | None = typer.Option(None, "--db", help="DuckDB file: store the samples read, and compute from it."),
    out: str | None = typer.Option(None, "--out", help="Output directory for baseline.json and report.html."),
    interval: str = typer.Option("15s", "--interval", help="Span one scrape covers when a GPU was scraped once."),
    catalog: list[str] = typer.Option([], "--catalog", help=CATALOG_OPTION_HELP),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Calibration YAML from `gpuyield calibrate` (default: the shipped one)."
    ),
    corrections: bool = typer.Option(
        True,
        "--corrections/--no-corrections",
        help="Correct the achievable capacity by the calibration's measured operating points, as estimate does.",
    ),
    measurements_out: str | None = typer.Option(
        None,
        "--measurements-out",
        help="Also write each measured deployment as a row of the measurement CSV (for calibrate --no-fit / validate).",
    ),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Measure a fleet's real GPU productivity from its telemetry (see examples above)."""
    if ctx.invoked_subcommand is not None:
        return

    def body() -> None:
        from gpuyield.edges.report.baseline_html import render_baseline_html
        from gpuyield.errors import ConfigError

        if out is None:
            raise ConfigError("--out DIR is required (baseline.json and report.html are written there)")
        result, section = build_baseline(metrics=metrics, prometheus=prometheus, window=window, end=end,
                                         prices=prices, map_file=map_file, db=db, interval=interval, catalog=catalog,
                                         calibration=calibration, corrections=corrections)
        out_dir = Path(out)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot create directory ({exc.strerror})") from None
        if measurements_out is not None:
            _write_measurements(result, catalog, measurements_out)
        doc = {"schema": BASELINE_SCHEMA, "inputs": section, **to_jsonable(result)}
        import json

        (out_dir / "baseline.json").write_text(json.dumps(to_jsonable(doc), indent=2) + "\n")
        (out_dir / "report.html").write_text(render_baseline_html(result))
        if json_out is not None:
            emit_json(doc, json_out)
            if json_out == "-":
                return
        _print_summary(result, out_dir)

    run_command(body)


@baseline_app.command("watch")
def watch_cmd(
    targets: str = typer.Option(..., "--targets", help="YAML targets file (targets: - url: ..., labels: {...})."),
    every: str = typer.Option("15s", "--every", help="Scrape interval, e.g. 15s."),
    db: str = typer.Option(..., "--db", help="DuckDB file to append samples to (created if absent)."),
    duration: str | None = typer.Option(None, "--duration", help="Stop after this long (e.g. 90s, 1h); default: until Ctrl-C."),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Scrape /metrics endpoints into a DuckDB file (for fleets without Prometheus).

    Examples:

      gpuyield baseline watch --targets targets.yaml --every 15s --db fleet.duckdb

      gpuyield baseline watch --targets targets.yaml --every 5s --db fleet.duckdb --duration 10m
    """

    def body() -> None:
        from gpuyield.edges.storage import TelemetryStore
        from gpuyield.edges.telemetry import parse_duration_s
        from gpuyield.edges.telemetry.watch import load_targets, watch

        every_s = parse_duration_s(every, "--every")
        duration_s = parse_duration_s(duration, "--duration") if duration else None
        tf = load_targets(targets)

        def on_tick(tick: int, n: int, errors: list[str]) -> None:
            err_console.print(f"[dim]scrape {tick + 1}: {n} samples{'' if not errors else ', ' + '; '.join(errors)}[/dim]",
                              highlight=False)

        with TelemetryStore(db) as store:
            try:
                report = watch(tf, store, every_s=every_s, duration_s=duration_s, on_tick=on_tick)
            except KeyboardInterrupt:
                err_console.print("stopped")
                return
            total = store.num_samples()
        summary = {"db": db, "scrapes": report.num_ticks, "samples": report.num_samples,
                   "malformed_lines": report.num_malformed, "errors": report.errors, "db_samples": total}
        if json_out is not None:
            emit_json(summary, json_out)
        else:
            console.print(f"{report.num_ticks} scrapes, {report.num_samples:,} samples into {db} "
                          f"({total:,} in total); {len(report.errors)} failed fetches")

    run_command(body)


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
