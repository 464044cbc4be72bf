"""``gpuyield simulate``: replay a workload on a deployment with the fleet simulator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from gpuyield.edges.cli.common import (
    CATALOG_OPTION_HELP,
    JSON_OPTION_HELP,
    console,
    emit_json,
    err_console,
    load_catalog,
    progress,
    run_command,
)
from gpuyield.errors import ConfigError

__all__ = ["parse_slo", "register", "write_records"]

_SLO_KEYS = ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms")

HELP = """Replay a workload on a deployment and report latency, throughput, goodput and cost.

[bold]Examples[/bold]

  gpuyield simulate --deployment examples/deployments/llama8b-h100-x8.yaml --workload builtin:azure-conv

  gpuyield simulate --deployment examples/deployments/llama8b-h100-x8.yaml --workload builtin:azure-conv \\
      --rate-scale 14 --slo ttft_p99_ms=2000,tpot_p99_ms=50 --json out.json --records out.parquet

  gpuyield simulate --deployment examples/deployments/llama8b-h100-pd.yaml --workload trace.jsonl --duration 600

The workload is a trace file (Azure CSV, Mooncake JSONL, length tables, ServeGen, gpuyield request logs) or
builtin:NAME. --records writes one row per request (Parquet needs pyarrow; .csv and .jsonl always work).
"""


def parse_slo(text: str | None) -> Any:
    """``ttft_p99_ms=2000,tpot_p99_ms=50`` -> SloTarget (None for None)."""
    from gpuyield.core.sim.simulate import SloTarget

    if text is None:
        return None
    vals: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _SLO_KEYS:
            raise ConfigError(f"--slo {part!r}: expected KEY=VALUE with KEY one of {', '.join(_SLO_KEYS)}")
        try:
            vals[key] = float(value)
        except ValueError:
            raise ConfigError(f"--slo {key}: {value!r} is not a number of milliseconds") from None
    if not vals:
        raise ConfigError(f"--slo: give at least one target, e.g. ttft_p99_ms=2000 (keys: {', '.join(_SLO_KEYS)})")
    return SloTarget(**vals)


def write_records(columns: dict[str, list[Any]], path: str) -> int:
    """Write per-request records as Parquet, CSV or JSONL (by extension); returns the row count."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(columns.values()))) if columns else 0
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                f"--records {p}: Parquet needs pyarrow (pip install 'gpuyield[parquet]'); or use .csv / .jsonl"
            ) from None
        pq.write_table(pa.table(columns), p)
    elif suffix == ".csv":
        import csv

        with p.open("w", newline="") as f:
            wr = csv.writer(f)
            keys = list(columns)
            wr.writerow(keys)
            for row in zip(*(columns[k] for k in keys), strict=True):
                wr.writerow(["" if v is None else v for v in row])
    elif suffix in (".jsonl", ".ndjson"):
        import json

        keys = list(columns)
        with p.open("w") as f:
            for row in zip(*(columns[k] for k in keys), strict=True):
                f.write(json.dumps(dict(zip(keys, row, strict=True))) + "\n")
    else:
        raise ConfigError(f"--records {p}: unknown extension; expected .parquet, .csv or .jsonl")
    return n


def _show(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from gpuyield.core.perf.measured_steps import MeasuredStepScales

    def f(x: Any, d: int = 1) -> str:
        return "-" if x is None else f"{x:,.{d}f}"

    t = Table(title=f"simulate: {summary['workload']['name']}", show_header=False)
    t.add_row("requests", f"{summary['requests']:,} ({summary['completed']:,} completed, {summary['rejected']:,} rejected)")
    t.add_row("duration", f"{f(summary['duration_s'])} s simulated")
    t.add_row("throughput", f"{f(summary['throughput_output_tok_s'])} output tok/s, {f(summary['throughput_req_s'], 2)} req/s")
    t.add_row("goodput", f"{f(summary['goodput_req_s'], 2)} req/s (SLO attainment {summary['slo_attainment']:.1%})")
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        s = summary[key]
        t.add_row(key, f"mean {f(s['mean'])}  p50 {f(s['p50'])}  p90 {f(s['p90'])}  p99 {f(s['p99'])}")
    t.add_row("prefix cache hit rate", f"{summary['prefix_cache_hit_rate']:.1%}")
    t.add_row("preemptions", f"{summary['preemptions']:,}")
    t.add_row("GPUs", str(summary["gpu_count"]))
    cost = summary["cost_usd_per_hour"]
    as_of = ", ".join(f"{p['gpu']} {p['source']} as of {p['as_of']}" for p in summary["prices"] if p["as_of"])
    t.add_row("cost", "-" if cost is None else f"${cost:,.2f}/h ({as_of or 'deployment override'})")
    t.add_row("$ per 1M output tokens", f(summary["usd_per_1m_output_tokens"], 3))
    for pool in summary.get("pools", []):
        sc = pool.get("measured_step_scales")
        if sc and "pool" in pool:
            t.add_row(f"measured ({pool['pool']})", MeasuredStepScales.from_dict(sc).describe())
        elif sc:  # a multiplexed group: one entry per model
            for name, one in sc.items():
                if one:
                    t.add_row(f"measured ({pool['group']}: {name})", MeasuredStepScales.from_dict(one).describe())
    t.add_row("simulator", f"{f(summary['sim_wall_s'], 2)} s wall ({f(summary.get('sim_cpu_s'), 2)} s CPU), "
              f"{f(summary['sim_requests_per_s'], 0)} simulated req/s")  # fmt: skip
    console.print(t)
    rt = Table(title="replicas")
    for c in ("id", "gpu", "model", "busy", "requests", "output tokens", "kv util"):
        rt.add_column(c)
    rows = summary["per_replica"]
    for r in rows[:32]:
        rt.add_row(r["id"], r["gpu"], r["model"], f"{r['busy_frac']:.0%}", f"{r['requests']:,}", f"{r['output_tokens']:,}",
                   f"{r['kv_util_mean']:.0%}")  # fmt: skip
    console.print(rt)
    if len(rows) > 32:
        console.print(f"... and {len(rows) - 32} more replicas (see --json)")
    for reason, count in summary["reject_reasons"].items():
        err_console.print(f"[yellow]rejected {count:,}:[/yellow] {reason}")


def register(app: typer.Typer) -> None:
    @app.command("simulate", help=HELP)
    def simulate_cmd(
        deployment: str = typer.Option(..., "--deployment", "-d", help="Deployment YAML (docs/formats.md)."),
        workload: str = typer.Option(..., "--workload", "-w", help="Trace file or builtin:NAME."),
        rate_scale: float = typer.Option(1.0, "--rate-scale", help="Multiply the arrival rate (2 = twice as fast)."),
        duration: float | None = typer.Option(None, "--duration", help="Keep arrivals of the first S seconds."),
        slo: str | None = typer.Option(None, "--slo", help="Targets, e.g. ttft_p99_ms=2000,tpot_p99_ms=50."),
        seed: int = typer.Option(0, "--seed", help="Seed for every random choice."),
        json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
        records: str | None = typer.Option(None, "--records", help="Per-request records (.parquet, .csv, .jsonl)."),
        catalog: list[str] = typer.Option([], "--catalog", help=CATALOG_OPTION_HELP),
        calibration: str | None = typer.Option(
            None, "--calibration", help="Calibration YAML from `gpuyield calibrate` (default: shipped)."
        ),
        measured: bool = typer.Option(
            True, "--measured/--no-measured",
            help="Adjust pools' step times to the calibration's measured operating points near their replica shape.",
        ),
    ) -> None:
        def body() -> None:
            from gpuyield.core.sim.simulate import simulate
            from gpuyield.edges.io.deployment import load_deployment
            from gpuyield.edges.io.traces import load_workload

            slo_t = parse_slo(slo)
            dep = load_deployment(deployment)
            cat = load_catalog(catalog)
            from gpuyield.edges.perf.io import load_calibration

            cal = load_calibration(calibration)
            w = load_workload(workload, seed=seed)
            quiet = json_out == "-"
            cpu0 = time.process_time()
            with progress("simulating", len(w), enabled=not quiet) as advance:
                res = simulate(
                    dep, w, cat, seed=seed, slo=slo_t, rate_scale=rate_scale, duration_s=duration,
                    progress=advance, wall_clock=time.perf_counter, calibration=cal, measured=measured,
                )  # fmt: skip
            cpu_s = time.process_time() - cpu0
            from gpuyield.core.perf.calibration import model_rules_note

            if (stale := model_rules_note(cal)) is not None:  # constants fitted under older rules
                res.summary["calibration_notes"] = [stale]
                err_console.print(f"[yellow]note:[/yellow] {stale}")
            res.summary["sim_cpu_s"] = cpu_s  # on a busy machine wall time overstates the simulator's cost
            res.summary["sim_requests_per_cpu_s"] = len(w) / cpu_s if cpu_s > 0 else None
            if records is not None:
                nrows = write_records(res.record_rows(), records)
                err_console.print(f"[dim]wrote {nrows:,} records to {records}[/dim]")
            if json_out is not None:
                emit_json(res.summary, json_out)
            if json_out != "-":
                _show(res.summary)

        run_command(body)
