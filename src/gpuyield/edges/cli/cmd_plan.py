"""``gpuyield plan``: the cheapest deployment that meets the SLO on a real workload, with its economics and
deployable files."""

from __future__ import annotations

import datetime as _dt
import math
import time
from pathlib import Path
from typing import Any

import typer

from gpuyield.core.catalog import resolve_checkpoint
from gpuyield.edges.cli.common import (
    CATALOG_OPTION_HELP,
    JSON_OPTION_HELP,
    SPEC_ACCEPTANCE_HELP,
    SPEC_METHOD_HELP,
    SPEC_TOKENS_HELP,
    console,
    emit_json,
    err_console,
    load_catalog,
    parse_speculative,
    run_command,
)

__all__ = ["register", "run_plan_command"]

HELP = """Find the cheapest deployment that meets your latency SLO on your workload, and write it out.

Screens hundreds of configurations analytically (GPU type, TP/PP/EP, aggregated or prefill/decode disaggregated, max_num_seqs, token budget, prefix caching, KV offload, router), verifies the best ones with the discrete-event simulator on the actual trace (bursts included), and compares the result with the naive deployment and with buying tokens from an API.

Writes DIR/plan.yaml (a deployment `gpuyield simulate` accepts), DIR/plan.json, DIR/report.html and DIR/deploy/ (vLLM/SGLang/llama.cpp launch scripts, Kubernetes manifests, Ray configs, the `gpuyield serve` config). Exit code 2 when no deployment meets the SLO, with the main reasons.

[bold]Examples[/bold]

[dim]# the cheapest fleet for 30x the Azure conversation trace[/dim]
gpuyield plan -w builtin:azure-conv --rate-scale 30 -m meta-llama/Llama-3.1-8B --slo ttft_p99_ms=2000,tpot_p99_ms=100 --gpus h100_sxm,a100_sxm,l40s --out plan-out

[dim]# long shared prefixes, simulations as Ray tasks[/dim]
gpuyield plan -w builtin:mooncake-synthetic --rate-scale 3 -m meta-llama/Llama-3.1-8B --slo ttft_p99_ms=2000,tpot_p99_ms=100 --out moon --executor ray

[dim]# most traffic for $40/hour, owned GPUs at TCO, against an API price[/dim]
gpuyield plan -w requests.jsonl -m meta-llama/Llama-3.1-8B --slo ttft_p99_ms=1000 --mode max-goodput --budget-usd-per-hour 40 --owned owned.yaml --api-price 0.10,0.40 --out goodput

[dim]# six models sharing H100s (sleep/wake by demand): the busiest ServeGen clients name the models[/dim]
gpuyield plan --multi-model -w ../shared/data/traces/servegen/deepseek-r1 --start-s 36000 --duration-s 1800 --rate-scale 0.15 --models-from-tenants meta-llama/Llama-3.1-8B,Qwen/Qwen3-8B,Qwen/Qwen3-1.7B,Qwen/Qwen3-0.6B,Qwen/Qwen3-30B-A3B,mistralai/Mistral-Small-24B-Instruct-2501 --gpus h100_sxm --allow-lower-precision --slo ttft_p99_ms=2000,tpot_p99_ms=100 --out mm

[dim]# how much of this traffic 8 H100s carry at the SLO[/dim]
gpuyield plan -w builtin:azure-conv -m meta-llama/Llama-3.1-8B --slo ttft_p99_ms=2000 --mode capacity --gpus h100_sxm --max-gpus 8 --out capacity
"""


class _Bar:
    """PlanProgress over a Rich progress bar on stderr (silent when stderr is not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and err_console.is_terminal
        self._prog: Any = None
        self._task: Any = None

    def stage(self, name: str, total: int) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.close()
        self._prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              console=err_console, transient=True)
        self._prog.start()
        self._task = self._prog.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        if self._prog is not None:
            self._prog.advance(self._task, n)

    def close(self) -> None:
        if self._prog is not None:
            self._prog.stop()
            self._prog = None


class _TimedProgress:
    """Wraps a progress sink and records when the simulation stage starts (for the search statistics)."""

    def __init__(self, inner: _Bar) -> None:
        self.inner = inner
        self.sim_started: float | None = None

    def stage(self, name: str, total: int) -> None:
        if name == "simulating" and self.sim_started is None:
            self.sim_started = time.perf_counter()
        self.inner.stage(name, total)

    def advance(self, n: int = 1) -> None:
        self.inner.advance(n)


def _usd(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"${x:,.2f}"


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def measured_cross_check(result: Any, ctx: Any, catalog: Any, cal: Any, profile: Any) -> list[str]:
    """Notes when the calibration holds measured operating points near the chosen deployment: the step-time
    adjustment each pool was simulated with (if any) and, for an aggregated one, how far the engine model it
    was simulated with still is from what the points say at the plan's operating point."""
    from gpuyield.core.perf.validation import METRICS, MeasurementRow, correct_row
    from gpuyield.core.sim.closed_loop import estimate_with_engine_model
    from gpuyield.edges.perf.calibrate import lookups

    cand, best = result.best_candidate, result.best
    if cal.corrections is None or best is None:
        return []
    notes: list[str] = []
    for p in cand.pools:
        sc = ctx.measured_scales(p)
        if sc is not None:
            notes.append(f"{'' if p.role == 'mixed' else p.role + ' pool '}{p.gpu_id} tp{p.tp}: {sc.describe()}")
    if cand.disaggregated:
        return notes
    (pool,) = cand.pools
    s = best.outcome.summary
    isl = max(1, round(profile.input_mean_tokens))
    osl = max(1, round(profile.output_mean_tokens))
    try:
        rate = float(s["completed"]) / float(s["duration_s"])
        e2e_s = (float(s["ttft_p50_ms"]) + (osl - 1) * float(s["tpot_p50_ms"])) / 1e3
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return notes
    replicas = max(1, best.replicas[0])
    conc = max(1, round(rate * e2e_s / replicas))  # requests in flight per replica (Little's law)
    row = MeasurementRow(
        index=0, gpu=pool.gpu_id, num_gpus=pool.gpus_per_replica, model=ctx.model.id, engine=ctx.engine,
        precision=pool.weight_precision, layout=f"agg tp{pool.tp} pp{pool.pp} adp1 ep{pool.ep}", tp=pool.tp,
        isl=isl, osl=osl, concurrency=conc, num_requests=None, measured=dict.fromkeys(METRICS), source="plan",
    )  # fmt: skip
    model_of, gpu_of = lookups(catalog, cal)
    plain = ctx.perf_model(pool.gpu_id, pool.tp, pool.pp, pool.ep, pool.weight_precision, pool.kv_dtype)
    scales = ctx.measured_scales(pool)
    used = plain.with_measured(scales)
    base = estimate_with_engine_model(plain, isl, osl, conc)
    target, corr = correct_row(base, row, model_of, gpu_of, cal, method="sim")
    if corr is None or corr.support < 0.05:
        return notes
    sim = estimate_with_engine_model(used, isl, osl, conc) if scales is not None else base
    ft, fd = target.ttft_ms / sim.ttft_ms, target.tpot_ms / sim.tpot_ms
    notes.append(
        f"measured operating points of {ctx.model.id} ({ctx.engine}, {pool.weight_precision}) near this deployment "
        f"(ISL {isl}, OSL {osl}, {conc} requests in flight per replica; kernel support {corr.support:.2g}"
        f"{'' if corr.same_deployment else ', other layouts or GPUs'}) put TTFT at ×{ft:.2f} and TPOT "
        f"at ×{fd:.2f} of the engine model the plan was simulated with"
        + (" (its step times adjusted as above)" if scales is not None else "")
        + ("; the plan may be optimistic" if max(ft, fd) > 1.1 else "")
        + f" (check: gpuyield estimate --model {ctx.model.id} --gpu {pool.gpu_id} --tp {pool.tp} --isl {isl} "
        f"--osl {osl} --concurrency {conc} --engine {ctx.engine} --precision {pool.weight_precision})"
    )
    return notes


def run_plan_command(
    *,
    workload: str,
    model: str,
    slo: str,
    out: str,
    rate_scale: float = 1.0,
    gpus: str = "h100_sxm,a100_sxm,l40s",
    max_gpus: int | None = None,
    budget_usd_per_hour: float | None = None,
    prices: str | None = None,
    owned: str | None = None,
    api_price: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    seed: int = 0,
    mode: str = "min-cost",
    top_k: int = 12,
    allow_lower_precision: bool = False,
    disaggregated: bool = True,
    routers: str | None = None,
    catalog_files: list[str] | None = None,
    calibration: str | None = None,
    report: bool = True,
    show_progress: bool = True,
    head: int | None = None,
    jobs: int = 1,
    speculative: Any = None,
    measured: bool = True,
) -> dict[str, Any]:
    """The whole command as a function (tests and benchmarks call it); returns the plan.json document.
    ``speculative``: a :class:`gpuyield.core.perf.SpeculativeDecoding` every decoding replica runs (None: off).
    ``measured``: every pool's step times adjusted to the calibration's measured points near its replica shape."""
    from gpuyield import __version__
    from gpuyield.core.plan.context import build_plan_inputs
    from gpuyield.core.plan.executor import LocalExecutor
    from gpuyield.core.plan.profile import profile_workload
    from gpuyield.core.plan.search import run_plan
    from gpuyield.core.plan.simulator import SimulatorBinding
    from gpuyield.core.plan.spec import PlanMode, PlanRequest, parse_api_price, parse_slo
    from gpuyield.core.workload.transforms import rate_scale as scale_rate
    from gpuyield.edges.io.traces import load_workload
    from gpuyield.edges.plan.files import load_owned_file, load_prices_file
    from gpuyield.edges.plan.outputs import PlanRunInfo, write_outputs
    from gpuyield.errors import ConfigError

    t0 = time.perf_counter()
    if not (rate_scale > 0 and math.isfinite(rate_scale)):
        raise ConfigError(f"--rate-scale {rate_scale}: expected a positive number")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor {executor!r}: expected local or ray")
    try:
        plan_mode = PlanMode(mode)
    except ValueError:
        raise ConfigError(f"--mode {mode!r}: expected one of {', '.join(m.value for m in PlanMode)}") from None
    catalog = load_catalog(catalog_files)
    model_spec = catalog.model(model)
    # the checkpoint asked for: an alias such as nvidia/DeepSeek-R1-NVFP4 is its own repository and precision
    checkpoint = (model_spec.id, model_spec.native_dtype) if Path(model).exists() else resolve_checkpoint(model_spec, model)
    gpu_list = tuple(g.strip() for g in gpus.split(",") if g.strip())
    request = PlanRequest(
        model_id=model_spec.id, slo=parse_slo(slo), gpu_ids=tuple(catalog.gpu(g).id for g in gpu_list), mode=plan_mode,
        max_gpus=max_gpus, budget_usd_per_hour=budget_usd_per_hour, allow_lower_precision=allow_lower_precision,
        allow_disaggregated=disaggregated, top_k=top_k, seed=seed, speculative=speculative,
        checkpoint_dtype=checkpoint[1],
    )
    if speculative is not None:
        speculative.vllm_config()  # the deployment files need everything (an EAGLE head): fail before searching
    today = _dt.date.today().isoformat()
    api = parse_api_price(api_price, as_of=today) if api_price else None
    resolve = lambda g: catalog.gpu(g).id  # noqa: E731
    price_overrides = load_prices_file(Path(prices), resolve) if prices else {}
    owned_hw = load_owned_file(Path(owned), resolve) if owned else {}
    w = load_workload(workload, seed=seed)
    if head is not None:
        if head < 1:
            raise ConfigError(f"--head {head}: expected a positive number of requests")
        from gpuyield.core.workload.transforms import slice_index

        w = slice_index(w, 0, head)
    if rate_scale != 1.0:
        w = scale_rate(w, rate_scale)
    profile = profile_workload(w)
    router_list = tuple(r.strip() for r in routers.split(",") if r.strip()) if routers else None
    from gpuyield.edges.perf.io import load_calibration

    cal = load_calibration(calibration)
    inputs, ctx = build_plan_inputs(catalog, request, profile, price_overrides=price_overrides, owned=owned_hw,
                                    api_price=api, routers=router_list, calibration=cal, measured=measured)
    binding = SimulatorBinding(ctx, w, seed, request.slo)
    bar = _Bar(show_progress)
    prog = _TimedProgress(bar)
    ex: Any
    if executor == "ray":
        from gpuyield.edges.plan.ray_executor import RayExecutor

        ex = RayExecutor(binding, address=ray_address)
    else:
        if jobs < 1:
            raise ConfigError(f"--jobs {jobs}: expected a positive number of worker processes")
        ex = LocalExecutor(binding, jobs=jobs)
    t_screen0 = time.perf_counter()
    try:
        result = run_plan(inputs, ex, prog)
    finally:
        bar.close()
        if executor == "ray":
            ex.shutdown()
    from gpuyield.core.perf.calibration import model_rules_note

    if (stale := model_rules_note(cal)) is not None:  # constants fitted under older rules: every candidate's timing
        result.notes.append(stale)
    if speculative is None:  # the measured points record no speculative setting
        result.notes.extend(measured_cross_check(result, ctx, catalog, cal, profile))
    else:
        result.notes.append("planned with " + speculative.describe() + "; the vLLM, SGLang and Ray Serve files in deploy/"
                            " set it up (llama.cpp's do not)")
    t_end = time.perf_counter()
    sim_start = prog.sim_started or t_end
    info = PlanRunInfo(
        workload_spec=workload, rate_scale=rate_scale, executor=executor, wall_time_s=t_end - t0,
        screen_wall_time_s=sim_start - t_screen0, simulate_wall_time_s=t_end - sim_start,
        gpuyield_version=__version__, head=head, calibration=calibration or "shipped",
    )
    html = None
    if report:
        from gpuyield.edges.report.plan_html import render_plan_report

        html = render_plan_report(result, request, profile, info)
    gpu_names = {g.id: g.name for g in catalog.gpus}
    write_outputs(Path(out), result, request, profile, info, model_hf_id=checkpoint[0], gpu_names=gpu_names,
                  report_html=html, native_precision=checkpoint[1])
    from gpuyield.edges.plan.outputs import plan_document

    return plan_document(result, request, profile, info)


def _print_summary(doc: dict[str, Any], out: str) -> None:
    from rich.table import Table

    best = doc["best"]
    econ = doc["economics"]
    t = Table(title=f"gpuyield plan: {doc['model']} on {doc['workload']['name']} x{doc['workload']['rate_scale']:g} "
                    f"({', '.join(f'{k}<={v:g}' for k, v in doc['slo'].items())})")
    t.add_column("")
    cols = [k for k in ("plan", "naive", "api") if k in econ]
    for k in cols:
        t.add_column(k, justify="right")
    deployments = {"plan": best, "naive": doc.get("naive")}

    def row(label: str, fn: Any) -> None:
        t.add_row(label, *[fn(k) for k in cols])

    def dep_text(k: str) -> str:
        d = deployments.get(k)
        if not d:
            return "hosted API"
        pools = " + ".join(
            f"{p['replicas']}x {p['gpu']} tp{p['tp']}" + (f"pp{p['pp']}" if p["pp"] > 1 else "")
            + ("" if (p["weight_precision"], p["kv_dtype"]) == ("bf16", "bf16") else f" w{p['weight_precision']}/kv{p['kv_dtype']}")
            for p in d["pools"]
        )
        return f"{pools} ({d['router']})"

    row("deployment", dep_text)
    row("GPUs", lambda k: str(econ[k]["num_gpus"]) if k != "api" else "-")
    row("$/hour", lambda k: _usd(econ[k]["usd_per_hour"]))
    row("$ / 1M input tok", lambda k: _usd(econ[k]["usd_per_1m_input_tokens"]))
    row("$ / 1M output tok", lambda k: _usd(econ[k]["usd_per_1m_output_tokens"]))
    row("utilisation", lambda k: "-" if econ[k]["utilisation"] is None else f"{econ[k]['utilisation']:.0%}")

    def lat(k: str, key: str) -> str:
        d = deployments.get(k)
        return _num(d["verified"][key], ",.0f") if d else "-"

    row("TTFT p99 ms (sim)", lambda k: lat(k, "ttft_p99_ms"))
    row("TPOT p99 ms (sim)", lambda k: lat(k, "tpot_p99_ms"))
    def break_even(k: str) -> str:
        if k == "api":
            return "-"
        be, cap = econ[k]["break_even_tokens_per_month"], econ[k].get("capacity_tokens_per_month")
        text = _num(be, ".3g")
        if be is not None and cap is not None and math.isfinite(cap) and be > cap:
            text += " (> verified capacity)"
        return text

    row("break-even tok/month", break_even)
    console.print(t)
    s = doc["search"]
    cmp_ = doc.get("comparison", {})
    ratio = cmp_.get("plan_vs_naive_cost_ratio")
    console.print(
        f"screened {s.get('candidates_screened', 0)} candidates, simulated {s.get('candidates_simulated', 0)} "
        f"({s.get('simulations', 0)} runs) in {s['wall_time_s']:.1f} s"
        + (f"; plan costs {ratio:.2f}x naive" if ratio is not None else "")
    )
    cap = doc.get("capacity_rate_scale")
    if cap is not None:
        rate = doc["workload"]["rate_per_s"] or 0.0
        console.print(f"[bold]capacity:[/bold] the plan carries x{cap:.2f} of this workload's rate "
                      f"({cap * rate:.2f} req/s) at the SLO" + (
                          f"; naive x{doc['naive']['verified']['rate_scale']:.2f}" if doc.get("naive") else ""))
    for p in econ["plan"]["prices"]:
        console.print(f"[dim]price {p['item']}: ${p['usd_per_gpu_hour']}/GPU-h, {p['source']} (as of {p['as_of']})[/dim]")
    if "api" in econ:
        ap = econ["api"]["prices"][0]
        console.print(f"[dim]API price: {ap['source']} (as of {ap['as_of']})[/dim]")
    for n in doc.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {n}")
    console.print(f"wrote {out}/plan.yaml, plan.json, report.html, deploy/")


def register(app: typer.Typer) -> None:
    @app.command("plan", help=HELP)
    def plan_cmd(
        workload: str = typer.Option(..., "--workload", "-w", help="Trace, request log or builtin:NAME."),
        model: str | None = typer.Option(None, "--model", "-m", help="Catalogue model id or alias (required unless --multi-model)."),
        slo: str = typer.Option(..., "--slo", help="Latency targets, e.g. ttft_p99_ms=2000,tpot_p99_ms=100."),
        out: str = typer.Option(..., "--out", "-o", help="Output directory."),
        rate_scale: float = typer.Option(1.0, "--rate-scale", help="Multiply the workload's request rate."),
        gpus: str = typer.Option("h100_sxm,a100_sxm,l40s", "--gpus", help="Allowed GPU types (comma-separated)."),
        max_gpus: int | None = typer.Option(None, "--max-gpus", help="At most this many GPUs (capacity mode: the fleet)."),
        budget_usd_per_hour: float | None = typer.Option(None, "--budget-usd-per-hour", help="Cost cap (max-goodput: the budget)."),
        prices: str | None = typer.Option(None, "--prices", help="YAML of GPU-hour prices overriding the catalogue."),
        owned: str | None = typer.Option(None, "--owned", help="YAML of owned hardware: price GPUs at TCO."),
        api_price: str | None = typer.Option(None, "--api-price", help="API price IN,OUT in USD per 1M tokens."),
        executor: str = typer.Option("local", "--executor", help="Where simulations run: local or ray."),
        ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (default: local Ray)."),
        jobs: int = typer.Option(1, "--jobs", "-j", help="Local executor: simulate in this many processes."),
        seed: int = typer.Option(0, "--seed", help="Seed for workload synthesis and simulation."),
        mode: str = typer.Option("min-cost", "--mode", help="min-cost | max-goodput | capacity."),
        top_k: int = typer.Option(12, "--top-k", help="Candidates verified by simulation."),
        allow_lower_precision: bool = typer.Option(False, "--allow-lower-precision", help="Also try fp8 weights/KV (quality trade-off)."),
        disaggregated: bool = typer.Option(True, "--disaggregated/--no-disaggregated", help="Search prefill/decode disaggregation."),
        routers: str | None = typer.Option(None, "--routers", help="Router policies to search (default: all)."),
        head: int | None = typer.Option(None, "--head", help="Plan on the first N requests only (quick look)."),
        catalog: list[str] = typer.Option([], "--catalog", help=CATALOG_OPTION_HELP),
        calibration: str | None = typer.Option(None, "--calibration", help="Calibration YAML from `gpuyield calibrate` (default: shipped): times every simulated step."),
        multi_model: bool = typer.Option(False, "--multi-model", help="Place many models (named by the requests) on shared GPUs with sleep/wake; uses the first --gpus type."),
        models_from_tenants: str | None = typer.Option(None, "--models-from-tenants", help="--multi-model: the busiest tenants name these models, in order (e.g. ServeGen clients); NAME=MODEL names a deployment (e.g. a fine-tune) of a catalogue MODEL."),
        idle_sleep_s: float = typer.Option(120.0, "--idle-sleep-s", help="--multi-model: put a model to sleep after this many idle seconds."),
        start_s: float = typer.Option(0.0, "--start-s", help="--multi-model: start of the span used (ServeGen time or trace time), seconds."),
        duration_s: float | None = typer.Option(None, "--duration-s", help="--multi-model: length of the span used, seconds."),
        spec_method: str | None = typer.Option(None, "--spec-method", help="Plan with it. " + SPEC_METHOD_HELP),
        spec_tokens: int | None = typer.Option(None, "--spec-tokens", help=SPEC_TOKENS_HELP),
        spec_acceptance: float | None = typer.Option(None, "--spec-acceptance", help=SPEC_ACCEPTANCE_HELP),
        spec_draft_model: str | None = typer.Option(None, "--spec-draft-model", help="EAGLE head the engines load (Hugging Face id); required with eagle/eagle3."),
        measured: bool = typer.Option(True, "--measured/--no-measured", help="Time each candidate's steps with measured step scales where the calibration's measured operating points reach its replica shape (default on)."),
        json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
    ) -> None:
        def body() -> None:
            import dataclasses

            from gpuyield.errors import ConfigError

            speculative = parse_speculative(spec_method, spec_tokens, spec_acceptance)
            if spec_draft_model is not None:
                if speculative is None or speculative.method not in ("eagle", "eagle3"):
                    raise ConfigError("--spec-draft-model needs --spec-method eagle or eagle3 (MTP and n-gram draft without one)")
                speculative = dataclasses.replace(speculative, draft_model=spec_draft_model)
            if multi_model and speculative is not None:
                raise ConfigError("--spec-method is not supported with --multi-model")
            if multi_model:
                from gpuyield.edges.plan.multimodel import print_multi_model_summary, run_multi_model_plan

                gpu_first = next((g.strip() for g in gpus.split(",") if g.strip()), "h100_sxm")
                mdoc = run_multi_model_plan(
                    workload=workload, slo=slo, out=out, gpu=gpu_first, rate_scale=rate_scale,
                    models_from_tenants=models_from_tenants, allow_lower_precision=allow_lower_precision,
                    idle_sleep_s=idle_sleep_s, seed=seed, start_s=start_s, duration_s=duration_s, catalog_files=catalog,
                    calibration=calibration, measured=measured,
                )
                if json_out is not None:
                    emit_json(mdoc, json_out)
                else:
                    print_multi_model_summary(mdoc, out)
                return
            if model is None:
                raise ConfigError("--model: required (or use --multi-model for a workload whose requests name models)")
            doc = run_plan_command(
                workload=workload, model=model, slo=slo, out=out, rate_scale=rate_scale, gpus=gpus, max_gpus=max_gpus,
                budget_usd_per_hour=budget_usd_per_hour, prices=prices, owned=owned, api_price=api_price,
                executor=executor, ray_address=ray_address, seed=seed, mode=mode, top_k=top_k,
                allow_lower_precision=allow_lower_precision, disaggregated=disaggregated, routers=routers,
                catalog_files=catalog, head=head, jobs=jobs, calibration=calibration, speculative=speculative,
                measured=measured,
            )
            if json_out is not None:
                emit_json(doc, json_out)
            else:
                _print_summary(doc, out)

        run_command(body)
