"""``gpuyield estimate``: closed-loop TTFT/TPOT/throughput of one deployment at fixed ISL/OSL and concurrency."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from gpuyield.edges.cli.common import (
    CATALOG_OPTION_HELP,
    JSON_OPTION_HELP,
    SPEC_ACCEPTANCE_HELP,
    SPEC_METHOD_HELP,
    SPEC_TOKENS_HELP,
    console,
    emit_json,
    load_catalog,
    parse_speculative,
    run_command,
)

__all__ = ["estimate", "estimate_record", "layout_record", "parse_concurrency", "register"]

HELP = """Closed-loop TTFT, TPOT and output throughput of one replica (or N replicas) at fixed ISL/OSL.

By default (--method auto) it runs the engine model (gpuyield.core.sim: continuous batching, chunked prefill,
KV-block admission and preemption) with the calibrated step-time model; a disaggregated --layout gets the analytic
P/D solver, which is closer to the measured P/D rows (--method sim runs the engine model's P/D cluster instead).
--method analytic uses the fast fixed-point solver that `validate` uses. Also reports memory (weights, KV capacity) and the step-time breakdown.

Examples:

  gpuyield estimate --model Qwen/Qwen3-32B --gpu h100_sxm --tp 2 --isl 1024 --osl 1024 --concurrency 32

  gpuyield estimate --model deepseek-ai/DeepSeek-R1 --gpu b200_sxm --tp 8 --ep 8 --precision fp4 --engine trtllm --isl 8192 --osl 1024 --concurrency 64 --json

  gpuyield estimate --model Qwen/Qwen3-8B --gpu h100 --isl 2000 --osl 500 --concurrency offline --num-requests 200

  gpuyield estimate --model tiny-llama --gpu cpu --calibration cpu_calib.yaml --isl 128 --osl 64 --concurrency 4

  gpuyield estimate --model deepseek-ai/DeepSeek-R1 --gpu gb200 --precision fp4 --engine trtllm --isl 8192 --osl 1024 --concurrency 512 --layout "disagg 2x prefill(tp4 adp1 ep4) + 1x decode(tp16 adp1 ep16)"

When the calibration holds measured operating points of the same architecture (model shape), engine and precision (the shipped
one holds those of e2e_train.csv; `calibrate --measurements` writes your own), TTFT and TPOT are corrected
by the measured residuals interpolated in log ISL/OSL/concurrency, and then by the calibration's learned
residual model where it has one ('measured_correction' in --json, and a note); --no-corrections gives the
step-time model alone.

--spec-method mtp|eagle|eagle3|ngram [--spec-tokens K] [--spec-acceptance A] models speculative decoding: each decode
step verifies K draft tokens per sequence and keeps on average (1 - A^(K+1)) / (1 - A) tokens (see
docs/cli.md); measured operating points are then not applied (they record no speculative setting).

--layout takes the layout syntax of `validate`'s CSV (AIConfigurator's form) instead of --tp/--pp/--ep/
--attention-dp, including prefill/decode-disaggregated deployments (those use the analytic solver).
"""


_SPEC_POINTS_NOTE = ("measured operating points not applied: they record no speculative-decoding setting "
                     "(their residuals are against plain decoding)")


def parse_concurrency(value: str) -> int | None:
    """An integer >= 1, or 'offline' (None)."""
    from gpuyield.errors import ConfigError

    v = value.strip().lower()
    if v == "offline":
        return None
    try:
        c = int(v)
    except ValueError:
        raise ConfigError(f"--concurrency: expected a positive integer or 'offline', got '{value}'") from None
    if c < 1:
        raise ConfigError(f"--concurrency: expected a positive integer or 'offline', got '{value}'")
    return c


def estimate_record(
    *,
    catalog: Any,
    calibration: Any,
    model: str,
    gpu: str,
    tp: int,
    pp: int,
    ep: int,
    attention_dp: int,
    precision: str,
    kv_dtype: str | None,
    engine: str,
    isl: int,
    osl: int,
    concurrency: int | None,
    num_requests: int | None,
    replicas: int,
    gpu_memory_utilization: float,
    max_num_seqs: int | None,
    max_num_batched_tokens: int | None,
    method: str,
    corrections: bool = True,
    speculative: Any = None,
) -> dict[str, Any]:
    """Everything `estimate` reports, as plain data (also used by tests and benchmarks). ``speculative``: a
    :class:`gpuyield.core.perf.SpeculativeDecoding` (MTP/EAGLE/n-gram decode steps) or None."""
    from gpuyield.core.perf import PerfModel, estimate_closed_loop
    from gpuyield.core.perf.closed_loop import scheduler_limits
    from gpuyield.core.perf.validation import (
        METRICS,
        MeasurementRow,
        ServingSettings,
        correct_row,
        kv_dtype_for,
    )
    from gpuyield.edges.perf.calibrate import lookups
    from gpuyield.edges.perf.io import resolve_gpu
    from gpuyield.errors import ConfigError

    _check_engine_family(engine)
    spec = catalog.model(model)
    acc = resolve_gpu(catalog, calibration, gpu)
    if method not in _METHODS:
        raise ConfigError(f"--method: expected 'auto', 'sim' or 'analytic', got '{method}'")
    method = "sim" if method == "auto" else method  # auto: the engine model for an aggregated replica
    if replicas < 1:
        raise ConfigError(f"--replicas: expected >= 1, got {replicas}")
    ServingSettings(kv_dtype, gpu_memory_utilization, max_num_seqs, max_num_batched_tokens)  # the same checks as --layout
    perf = PerfModel.build(
        spec,
        acc,
        tp=tp,
        pp=pp,
        ep=ep if spec.num_experts else 1,
        attention_dp=attention_dp,
        weight_precision=precision,
        kv_dtype=kv_dtype or kv_dtype_for(precision),
        engine=engine,
        calibration=calibration,
    )
    # the scheduler limits are checked before memory: a refused setting is the answer even where the model does not fit
    seqs, budget = scheduler_limits(perf, max_num_seqs, max_num_batched_tokens)
    spec_note = None
    if speculative is not None:
        perf = perf.with_speculative(speculative)
        if corrections:
            # the measured points record no speculative setting: their residuals belong to plain decoding
            corrections = False
            spec_note = _SPEC_POINTS_NOTE
    mem = perf.memory(gpu_memory_utilization, max_model_len=isl + osl)
    out: dict[str, Any] = {
        "model": spec.id,
        "gpu": acc.id,
        "engine": perf.engine,  # normalised ("TensorRT-LLM" -> "trtllm")
        "precision": precision,
        "kv_dtype": perf.kv_dtype,
        "parallelism": {
            "tp": tp,
            "pp": pp,
            "ep": perf.ep,
            "attention_dp": attention_dp,
            "replicas": replicas,
        },
        "num_gpus": perf.num_gpus * replicas,
        "isl": isl,
        "osl": osl,
        "concurrency": concurrency if concurrency is not None else "offline",
        "memory": mem,
        "speculative": None
        if speculative is None
        else {**speculative.to_dict(), "tokens_per_step": speculative.tokens_per_step},
        "notes": list(perf.notes) + ([spec_note] if spec_note else []),
    }
    if not mem.fits:
        out.update({"fits": False, "reason": mem.reason})
        return out
    analytic = estimate_closed_loop(
        perf,
        isl,
        osl,
        concurrency,
        num_requests=num_requests,
        gpu_memory_utilization=gpu_memory_utilization,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        num_replicas=replicas,
    )
    # measured operating points of this deployment (if the calibration holds any) correct the estimate
    model_of, gpu_of = lookups(catalog, calibration)
    row = MeasurementRow(
        index=0, gpu=gpu, num_gpus=perf.num_gpus * replicas, model=model, engine=engine, precision=precision,
        layout=f"agg tp{tp} pp{pp} adp{attention_dp} ep{perf.ep}", tp=tp, isl=isl, osl=osl,
        concurrency=concurrency, num_requests=num_requests, measured=dict.fromkeys(METRICS),
        source="gpuyield estimate",
    )  # fmt: skip
    corr = sim_corr = None
    if corrections:
        analytic, corr = correct_row(analytic, row, model_of, gpu_of, calibration)
    ec = perf.engine_coeffs
    result: dict[str, Any]
    if method == "sim":
        from gpuyield.core.sim import estimate_with_engine_model

        eng = estimate_with_engine_model(
            perf,
            isl,
            osl,
            concurrency,
            num_requests=num_requests,
            num_replicas=replicas,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
        )
        if corrections:  # the engine model has its own residuals (the analytic ones where none were stored)
            eng, sim_corr = correct_row(eng, row, model_of, gpu_of, calibration, method="sim")
        result = dataclasses.asdict(eng)
        result["analytic"] = {
            "ttft_ms": analytic.ttft_ms,
            "tpot_ms": analytic.tpot_ms,
            "throughput_tok_s": analytic.throughput_tok_s,
        }
    else:
        result = {
            "method": analytic.method,
            "ttft_ms": analytic.ttft_ms,
            "tpot_ms": analytic.tpot_ms,
            "e2e_ms": analytic.e2e_ms,
            "throughput_tok_s": analytic.throughput_tok_s,
            "queue_wait_ms": analytic.queue_wait_ms,
        }
    n = max(1, int(analytic.running_seqs))
    ctx = isl + osl // 2
    bd = perf.step_breakdown(0, 0.0, n, n * ctx)
    # one prompt's first chunk alone: on its own rank under attention DP, as its TTFT counts it
    pre = perf.step_breakdown(min(isl, budget), min(isl, budget) ** 2 / 2.0, 0, 0, prefill_seqs=1)
    out.update(result)
    out.update(
        {
            "fits": True,
            "running_seqs_per_replica": analytic.running_seqs,
            "limited_by": analytic.limited_by,
            # what the replica's scheduler runs with: the values given, else the engine's own on this GPU
            "scheduler_limits": _limits_record((seqs, budget)),
            "decode_step": {
                "num_decode_seqs": n,
                "context_tokens": ctx,
                "total_ms": bd.total_s * 1e3,
                "ops_ms": {k: v * 1e3 for k, v in bd.ops.items()},
            },
            "prefill_step": {
                "num_prefill_tokens": min(isl, budget),
                "total_ms": pre.total_s * 1e3,
                "ops_ms": {k: v * 1e3 for k, v in pre.ops.items()},
            },
            "out_of_range": sorted(set(bd.out_of_range) | set(pre.out_of_range)),
            "calibration": {"gpu": perf.gpu_coeffs.source, "engine": ec.source},
            "measured_correction": _correction_record(sim_corr if method == "sim" else corr),
        }
    )
    chosen = sim_corr if method == "sim" else corr
    solver_notes = [n for n in analytic.notes if corr is None or n != corr.note()]  # the chosen note goes last
    extra = [chosen.note()] if chosen is not None else []
    out["notes"] = list(dict.fromkeys(list(out["notes"]) + solver_notes + extra))
    return out


def _correction_record(corr: Any) -> dict[str, Any] | None:
    if corr is None:
        return None
    return {
        "ttft_factor": corr.ttft_factor,
        "tpot_factor": corr.tpot_factor,
        "throughput_factor": corr.throughput_factor,
        "support": corr.support,
        "num_points": corr.num_points,
        "same_deployment": corr.same_deployment,
        # the learned residual model's share of the factors ([TTFT, TPOT]), or null when the calibration has none
        "learned_factors": None if corr.learned_factors is None else list(corr.learned_factors),
    }


_METHODS = ("auto", "sim", "analytic")
# why `--method auto` answers a P/D layout with the analytic solver (docs/benchmarks.md, twenty-fourth pass)
_PD_AUTO_NOTE = (
    "disaggregated layout: the analytic P/D solver, which is closer to the measured P/D rows than the engine "
    "model's P/D cluster (docs/benchmarks.md, twenty-fourth pass); --method sim runs the engine model"
)


def _check_engine_family(engine: str) -> None:
    """``--engine`` names a family; the constants each pool runs follow its role (``PerfModel.build_pool``)."""
    from gpuyield.errors import ConfigError

    if ":" in engine:
        raise ConfigError(
            f"--engine: expected an engine family (vllm, sglang, trtllm), got {engine!r}; for a disaggregated "
            "deployment give --layout 'disagg Nx prefill(...) + Mx decode(...)'"
        )


def layout_record(
    *,
    catalog: Any,
    calibration: Any,
    model: str,
    gpu: str,
    layout: str,
    precision: str,
    engine: str,
    isl: int,
    osl: int,
    concurrency: int | None,
    num_requests: int | None,
    method: str,
    corrections: bool = True,
    speculative: Any = None,
    kv_dtype: str | None = None,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
) -> dict[str, Any]:
    """`estimate --layout`: one deployment in validate's layout syntax, predicted exactly as validate predicts a row
    (``speculative``: the decoding pools' speculative decoding, which measurement rows never record; the KV dtype,
    memory fraction and scheduler limits reach every pool, as ``estimate``'s options reach its replica)."""
    from gpuyield.core.perf.validation import (
        METRICS,
        MeasurementRow,
        ServingSettings,
        correct_row,
        kv_dtype_for,
        parse_layout,
        predict_row,
    )
    from gpuyield.edges.perf.calibrate import lookups
    from gpuyield.errors import ConfigError, DoesNotFitError

    if method not in _METHODS:
        raise ConfigError(f"--method: expected 'auto', 'sim' or 'analytic', got '{method}'")
    _check_engine_family(engine)
    lay = parse_layout(layout)  # a clear error for a malformed layout
    auto_pd = method == "auto" and lay.kind == "disagg"  # auto: the analytic P/D solver, with a note saying why
    if method == "auto":
        method = "analytic" if auto_pd else "sim"
    if concurrency is None and not num_requests:
        raise ConfigError("--concurrency offline needs --num-requests")
    model_of, gpu_of = lookups(catalog, calibration)
    row = MeasurementRow(
        index=0, gpu=gpu, num_gpus=None, model=model, engine=engine, precision=precision, layout=layout, tp=None,
        isl=isl, osl=osl, concurrency=concurrency, num_requests=num_requests, measured=dict.fromkeys(METRICS),
        source="gpuyield estimate",
    )  # fmt: skip
    out: dict[str, Any] = {
        "model": model_of(model).id,
        "gpu": gpu_of(gpu).id,
        "engine": engine,
        "precision": precision,
        "kv_dtype": kv_dtype or kv_dtype_for(precision),
        "layout": layout,
        "isl": isl,
        "osl": osl,
        "concurrency": concurrency if concurrency is not None else "offline",
        "speculative": None
        if speculative is None
        else {**speculative.to_dict(), "tokens_per_step": speculative.tokens_per_step},
    }
    if lay.kind == "disagg":
        assert lay.prefill is not None and lay.decode is not None
        out["num_gpus"] = (
            lay.prefill.count * lay.prefill.gpus + lay.decode.count * lay.decode.gpus
            if lay.prefill.count and lay.decode.count
            else None
        )
    else:
        assert lay.replica is not None
        out["num_gpus"] = lay.replica.gpus
    settings = ServingSettings(kv_dtype, gpu_memory_utilization, max_num_seqs, max_num_batched_tokens)
    try:
        res = predict_row(row, model_of, gpu_of, calibration, method, speculative, settings)
    except DoesNotFitError as exc:
        out.update({"fits": False, "reason": str(exc), "notes": [_PD_AUTO_NOTE] if auto_pd else []})
        return out
    apply = corrections and speculative is None  # the measured points record no speculative setting
    res, corr = correct_row(res, row, model_of, gpu_of, calibration, method=method) if apply else (res, None)
    sized: list[str] = []
    if lay.kind == "agg":
        out["num_gpus"] = res.memory.num_gpus  # a bare `agg` is sized to the smallest TP that holds the model
        if layout.strip().lower() == "agg":
            sized.append(f"bare 'agg': sized to the smallest power-of-two TP that holds the model, {res.memory.num_gpus} GPU(s)")
    out.update(
        {
            "fits": True,
            "method": res.method,
            "ttft_ms": res.ttft_ms,
            "tpot_ms": res.tpot_ms,
            "e2e_ms": res.e2e_ms,
            "throughput_tok_s": res.throughput_tok_s,
            "running_seqs_per_replica": res.running_seqs,
            "limited_by": res.limited_by,
            "scheduler_limits": _limits_record(res.scheduler_limits),
            "memory": res.memory,
            "notes": sized + list(res.notes) + ([_SPEC_POINTS_NOTE] if corrections and speculative is not None else []),
            "measured_correction": _correction_record(corr),
        }
    )
    if lay.kind == "disagg":
        note = _pd_decode_note(calibration, engine, out["gpu"], precision, lay.worker_counts_known)
        if note:
            out["notes"].append(note)
    if auto_pd:
        out["notes"].append(_PD_AUTO_NOTE)
    return out


def _limits_record(limits: tuple[int, int] | None) -> dict[str, int] | None:
    """The scheduler limits a prediction ran with, as `estimate --json` reports them."""
    return None if limits is None else {"max_num_seqs": limits[0], "max_num_batched_tokens": limits[1]}


# A P/D family whose decode constant is this far below its aggregated family's gets a note (see _pd_decode_note).
_PD_DECODE_NOTE_RATIO = 0.8


def _pd_decode_note(calibration: Any, engine: str, gpu: str, precision: str, counted: bool) -> str | None:
    """A note when the calibration's P/D constants (``<engine>:disagg``) time decode steps well below its aggregated
    ones: the shipped ones are fitted on P/D rows most of which decode about twice as fast as the kernel tables.
    ``counted``: the layout gives both worker counts, so its decode pool runs with the aggregated family's
    decode_scale (``Layout.worker_counts_known``)."""
    from gpuyield.core.perf.model import normalise_engine

    fam = normalise_engine(engine).partition(":")[0]
    pd = calibration.engine_for(f"{fam}:disagg", gpu, precision)
    agg = calibration.engine_for(fam, gpu, precision)
    if pd is agg or pd.decode_scale >= _PD_DECODE_NOTE_RATIO * agg.decode_scale:  # scales are checked > 0
        return None
    if counted:
        return (
            f"the decode pool runs with the aggregated family's decode_scale (x{agg.decode_scale:.2g}), as the measured "
            f"P/D deployments that record their worker counts do; the '{fam}:disagg' constants' x{pd.decode_scale:.2g} "
            "is that of a campaign that did not record them (probably with speculative decoding): give --speculative "
            "if yours runs it (docs/benchmarks.md, twenty-third pass)"
        )
    return (
        f"P/D pools use the '{fam}:disagg' constants, whose decode steps run at x{pd.decode_scale:.2g} of the aggregated "
        f"family's (x{agg.decode_scale:.2g}): in the shipped calibration most of the P/D rows they were fitted on "
        "(AIConfigurator's, worker counts unrecorded, as in this layout) decode 2-2.5x as fast as the kernel "
        "tables, probably with speculative decoding the rows do not record, while P/D rows with recorded worker "
        "counts fit x1.0 (docs/benchmarks.md, eighteenth pass); without speculative decoding TPOT may be up to "
        f"{agg.decode_scale / pd.decode_scale:.2g}x this; give both worker counts to decode with the family's decode_scale"
    )


def _print_results(rec: dict[str, Any]) -> bool:
    """The does-not-fit reason, or the latency/throughput table; True when the deployment fits."""
    from rich.table import Table

    if not rec["fits"]:
        console.print(f"[bold red]does not fit:[/bold red] {rec['reason']}")
        return False
    t = Table(box=None, pad_edge=False)
    for col in ("TTFT ms", "TPOT ms", "E2E ms", "output tok/s", "running/replica", "limited by"):
        t.add_column(col, justify="right")
    t.add_row(
        f"{rec['ttft_ms']:,.1f}",
        f"{rec['tpot_ms']:,.2f}",
        f"{rec['e2e_ms']:,.0f}",
        f"{rec['throughput_tok_s']:,.0f}",
        f"{rec['running_seqs_per_replica']:,.0f}",
        rec["limited_by"],
    )
    console.print(t)
    return True


def _print_layout(rec: dict[str, Any]) -> None:
    console.print(
        f"[bold]{rec['model']}[/bold] on {rec['gpu']} ({rec['engine']}, {rec['precision']} weights) — "
        f"{rec['layout']} — isl {rec['isl']}, osl {rec['osl']}, concurrency {rec['concurrency']}"
    )
    if not _print_results(rec):
        return
    console.print(f"[dim]method: {rec['method']}[/dim]")
    for n in rec["notes"]:
        console.print(f"[yellow]note:[/yellow] {n}")


def _print(rec: dict[str, Any]) -> None:
    par = rec["parallelism"]
    console.print(
        f"[bold]{rec['model']}[/bold] on {rec['num_gpus']}× {rec['gpu']} ({rec['engine']}, {rec['precision']} weights, "
        f"{rec['kv_dtype']} KV; tp={par['tp']} pp={par['pp']} ep={par['ep']} attention_dp={par['attention_dp']} "
        f"replicas={par['replicas']}) — isl {rec['isl']}, osl {rec['osl']}, concurrency {rec['concurrency']}"
    )
    mem = rec["memory"]
    console.print(
        f"memory per GPU: weights {mem.weights_gb:.1f} GB, reserve {mem.runtime_reserve_gb:.1f} GB, KV {mem.kv_gb:.1f} GB "
        f"→ {mem.kv_capacity_tokens:,} tokens per replica"
    )
    if not _print_results(rec):
        return
    ops = rec["decode_step"]["ops_ms"]
    per_token = ", per output token with speculative decoding" if rec.get("speculative") else ""
    console.print(
        "decode step ({} seqs{}): {:.2f} ms = ".format(
            rec["decode_step"]["num_decode_seqs"], per_token, rec["decode_step"]["total_ms"]
        )
        + ", ".join(f"{k} {v:.2f}" for k, v in ops.items() if v > 0)
    )
    console.print(f"[dim]method: {rec['method']}[/dim]")
    if "analytic" in rec:
        a = rec["analytic"]
        console.print(
            f"[dim]analytic solver (what `validate` scores): TTFT {a['ttft_ms']:,.1f} ms, TPOT {a['tpot_ms']:,.2f} ms, "
            f"{a['throughput_tok_s']:,.0f} tok/s — both follow benchmark clients that start together; the engine "
            "model simulates the first burst and the waves after it step by step, the analytic solver carries it "
            "in a fitted share[/dim]"
        )
    for n in rec["notes"] + rec["out_of_range"]:
        console.print(f"[yellow]note:[/yellow] {n}")


def estimate(
    model: str = typer.Option(..., "--model", help="Catalogue model id or alias."),
    gpu: str = typer.Option(
        ..., "--gpu", help="Catalogue accelerator id/alias, or a device in --calibration (e.g. cpu)."
    ),
    isl: int = typer.Option(..., "--isl", help="Input (prompt) tokens per request."),
    osl: int = typer.Option(..., "--osl", help="Output tokens per request."),
    concurrency: str = typer.Option(..., "--concurrency", help="Clients in the closed loop, or 'offline'."),
    num_requests: int | None = typer.Option(
        None,
        "--num-requests",
        min=1,
        help="Requests to run (required with offline; closed loop: default 3 per client, at most 4096, "
        "src/gpuyield/core/sim/data/closed_loop.yaml).",
    ),
    tp: int = typer.Option(1, "--tp", help="Tensor parallelism of attention (and dense MLP)."),
    pp: int = typer.Option(1, "--pp", help="Pipeline stages."),
    ep: int = typer.Option(
        1, "--ep", help="Expert parallelism (MoE): experts spread over tp*attention_dp GPUs."
    ),
    attention_dp: int = typer.Option(1, "--attention-dp", help="Attention data-parallel ranks (MoE)."),
    replicas: int = typer.Option(1, "--replicas", help="Identical replicas sharing the concurrency."),
    engine: str = typer.Option("vllm", "--engine", help="Engine family: vllm, sglang or trtllm."),
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="Weight precision: bf16, fp8, fp4, mxfp4, int4 (default: the checkpoint's as shipped, e.g. fp8 for "
        "DeepSeek-R1, fp4 for nvidia/DeepSeek-R1-NVFP4, mxfp4 for gpt-oss).",
    ),
    kv_dtype: str | None = typer.Option(
        None, "--kv-dtype", help="KV-cache dtype (default: fp8 with fp8/fp4 weights)."
    ),
    gpu_memory_utilization: float = typer.Option(
        0.9, "--gpu-memory-utilization", help="Fraction of GPU memory the engine uses."
    ),
    max_num_seqs: int | None = typer.Option(
        None, "--max-num-seqs", min=1, help="Engine limit on running sequences."
    ),
    max_num_batched_tokens: int | None = typer.Option(
        None, "--max-num-batched-tokens", min=1, help="Token budget per step."
    ),
    method: str = typer.Option(
        "auto",
        "--method",
        help="auto (the engine model; a disaggregated --layout the analytic P/D solver), sim (the engine model) or "
        "analytic (validate's fast solver).",
    ),
    layout: str | None = typer.Option(
        None,
        "--layout",
        help="Deployment in validate's layout syntax, e.g. 'agg tp8 pp1 adp1 moe_tp8 ep1' or "
        "'disagg 2x prefill(tp4 adp1 ep4) + 1x decode(tp8 adp1 ep8)' (instead of --tp/--pp/--ep/--attention-dp).",
    ),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Calibration YAML from `gpuyield calibrate`."
    ),
    corrections: bool = typer.Option(
        True,
        "--corrections/--no-corrections",
        help="Correct by the calibration's measured operating points of this architecture/engine/precision.",
    ),
    spec_method: str | None = typer.Option(None, "--spec-method", help=SPEC_METHOD_HELP),
    spec_tokens: int | None = typer.Option(None, "--spec-tokens", help=SPEC_TOKENS_HELP),
    spec_acceptance: float | None = typer.Option(None, "--spec-acceptance", help=SPEC_ACCEPTANCE_HELP),
    catalog: list[str] | None = typer.Option(None, "--catalog", help=CATALOG_OPTION_HELP, metavar="FILE"),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    def body() -> None:
        from gpuyield.core.plan.space import checkpoint_weight_precision
        from gpuyield.edges.perf.io import load_calibration
        from gpuyield.errors import ConfigError

        speculative = parse_speculative(spec_method, spec_tokens, spec_acceptance)
        cat = load_catalog(catalog)
        weights = precision
        if weights is None:  # the checkpoint the model name asks for, as shipped
            weights = checkpoint_weight_precision(cat.model(model), model)

        common: dict[str, Any] = {
            "catalog": cat,
            "calibration": load_calibration(calibration),
            "model": model,
            "gpu": gpu,
            "precision": weights.lower(),
            "engine": engine.lower(),
            "isl": isl,
            "osl": osl,
            "concurrency": parse_concurrency(concurrency),
            "num_requests": num_requests,
            "method": method,
            "corrections": corrections,
            # engine settings: the --tp replica's and every pool of a --layout alike
            "speculative": speculative,
            "kv_dtype": kv_dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens,
        }
        if layout is not None:
            if (tp, pp, ep, attention_dp, replicas) != (1, 1, 1, 1, 1):
                raise ConfigError("--layout replaces --tp/--pp/--ep/--attention-dp/--replicas: give one or the other")
            rec = layout_record(layout=layout, **common)
        else:
            rec = estimate_record(
                tp=tp,
                pp=pp,
                ep=ep,
                attention_dp=attention_dp,
                replicas=replicas,
                **common,
            )
        if json_out is not None:
            emit_json(rec, json_out)
        elif layout is not None:
            _print_layout(rec)
        else:
            _print(rec)
        if not rec["fits"]:
            raise typer.Exit(2)

    run_command(body)


def register(app: typer.Typer) -> None:
    app.command("estimate", help=HELP)(estimate)
