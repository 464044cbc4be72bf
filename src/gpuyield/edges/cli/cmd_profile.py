"""``gpuyield profile``: microbenchmarks of a model's GEMM and attention shapes on the local device."""

from __future__ import annotations

from pathlib import Path

import typer

from gpuyield.edges.cli.common import (
    CATALOG_OPTION_HELP,
    JSON_OPTION_HELP,
    console,
    emit_json,
    load_catalog,
    run_command,
)

__all__ = ["profile", "register"]

HELP = """Microbenchmark the GEMM and attention shapes a model needs with torch on this machine's CPU or GPU.

Writes the table layout `gpuyield calibrate --from` reads (<device>.yaml with measured peaks, and
data/<device>/{gemm,attention}/<backend>/<version>/*.csv, latencies in ms), within a time budget. The torch
backend (the default) needs the [profile] extra; --backend numpy times numpy's matmul and a numpy attention
on the CPU in fp32 (no extra: this CPU's plain BLAS, not an engine's kernels). Without --model, a generic
square/rectangular shape set is measured. Profiling several models into one --out adds their shapes to the
same tables (a re-measured shape replaces its old timing), so one `calibrate --from` root covers them all; a
different --dtype or --backend into the same --out is refused.

With several devices it also times the collectives a parallel step runs (all-reduce, all-gather, reduce-scatter of
bf16 buffers over groups of 2, 4, ... ranks, through torch.distributed: NCCL on CUDA, one rank a GPU; gloo on the
CPU, one rank a process), written as data/<device>/comm/nccl/<version>/nccl_perf.csv in what the kernels leave
of the budget (at least its last fifth). --collectives N sets the largest group (default: every visible CUDA
device when there are several, none on the CPU; 0 for none).

Examples:

  gpuyield profile --device cpu --model tiny-llama --out prof/

  gpuyield profile --device cpu --out prof/ --budget-s 30 --json

  gpuyield profile --device cpu --backend numpy --model tiny-llama --out prof-np/

  gpuyield profile --device cuda --model meta-llama/Llama-3.1-8B --out prof-h100/ && gpuyield calibrate --from prof-h100/ --base shipped --out calib.yaml

  gpuyield profile --device cpu --model tiny-llama --collectives 2 --out prof/ --budget-s 90
"""


def profile(
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: Path = typer.Option(..., "--out", help="Directory to write the tables to."),
    model: str | None = typer.Option(None, "--model", help="Catalogue model whose shapes to measure."),
    dtype: str = typer.Option(
        "auto", "--dtype", help="auto (bf16 on cuda, fp32 on cpu), bf16, fp16 or fp32."
    ),
    backend: str = typer.Option("torch", "--backend", help="torch (the [profile] extra) or numpy (CPU, fp32)."),
    budget_s: float = typer.Option(120.0, "--budget-s", help="Stop measuring after this many seconds."),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="Largest token count (GEMM M) measured."),
    collectives: int | None = typer.Option(
        None,
        "--collectives",
        help="Largest group (ranks) whose all-reduce, all-gather and reduce-scatter are timed; 0 for none "
        "(default: every CUDA device when there are several, none on the CPU).",
    ),
    catalog: list[str] | None = typer.Option(None, "--catalog", help=CATALOG_OPTION_HELP, metavar="FILE"),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    def body() -> None:
        from gpuyield.edges.perf.profiler import DEFAULT_TOKENS, run_profile
        from gpuyield.errors import ConfigError

        if budget_s <= 0:
            raise ConfigError(f"--budget-s: expected > 0, got {budget_s}")
        spec = load_catalog(catalog).model(model) if model else None
        tokens = tuple(t for t in DEFAULT_TOKENS if t <= max_tokens) or (1,)

        def log(msg: str) -> None:
            if json_out is None:
                console.print(f"[dim]{msg}[/dim]")

        summary = run_profile(
            out, device=device, model=spec, dtype=dtype, tokens=tokens, budget_s=budget_s, log=log, backend=backend,
            collectives=collectives,
        )
        if json_out is not None:
            emit_json(summary, json_out)
        else:
            console.print(
                f"wrote {out}: {summary['gemm_rows']} GEMM, {summary['context_attention_rows']} prefill-attention, "
                f"{summary['generation_attention_rows']} decode-attention"
                + (f", {summary['collective_rows']} collective" if summary["collective_rows"] else "")
                + f" timings on {summary['device']} "
                f"({summary['backend']}) "
                f"in {summary['elapsed_s']:.1f} s"
                + (" (stopped by --budget-s)" if summary["stopped_by_budget"] else "")
                + (f"; kept {summary['kept_rows']} rows of the earlier profile there" if summary["kept_rows"] else "")
            )

    run_command(body)


def register(app: typer.Typer) -> None:
    app.command("profile", help=HELP)(profile)
