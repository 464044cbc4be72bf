"""``gpuyield workload``: inspect, convert and synthesise request workloads."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from gpuyield.edges.cli.common import JSON_OPTION_HELP, console, emit_json, err_console, progress, run_command
from gpuyield.errors import WorkloadError

if TYPE_CHECKING:
    from gpuyield.core.workload import PrefixSpec, Workload, WorkloadStats

__all__ = ["register"]

workload_app = typer.Typer(
    name="workload",
    help="Inspect, convert and synthesise workloads (traces, request logs, built-in data).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

SPEC_HELP = "A trace file, a ServeGen client directory, a request log, or builtin:NAME (azure-conv, mooncake-synthetic, sharegpt)."
FORMAT_HELP = "Force the input format: azure, mooncake, servegen, lengths, request-log (default: detected)."
ARRIVAL_HELP = "Arrivals for length-only tables: poisson, gamma (with --cv) or curve:FILE\\[#SERIES] (a rate-curve CSV)."


def _load(
    spec: str,
    *,
    fmt: str | None,
    block_size: int | None,
    seed: int,
    arrival: str | None,
    rate: float | None,
    cv: float | None,
    num_requests: int | None,
    start_s: float,
    duration_s: float | None,
    lenient: bool,
    prefix: PrefixSpec | None = None,
) -> Workload:
    from gpuyield.edges.io.traces import load_workload, resolve_spec

    path, _ = resolve_spec(spec)
    total = (
        sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size
    )
    enabled = total > 5_000_000
    with progress(f"reading {path.name}", total, enabled=enabled) as advance:
        return load_workload(
            spec, format=fmt, block_size_tokens=block_size, seed=seed, arrival=arrival, rate=rate, cv=cv,
            num_requests=num_requests, start_s=start_s, duration_s=duration_s, prefix=prefix, lenient=lenient,
            progress=advance if enabled else None,
        )  # fmt: skip


_SPARK = " ▁▂▃▄▅▆▇█"


def _sparkline(values: tuple[float, ...], width: int = 40) -> str:
    if not values:
        return ""
    if len(values) > width:  # average into `width` buckets
        k = math.ceil(len(values) / width)
        values = tuple(sum(values[i : i + k]) / len(values[i : i + k]) for i in range(0, len(values), k))
    top = max(values) or 1.0
    return "".join(_SPARK[min(8, int(round(v / top * 8)))] for v in values)


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _print_stats(s: WorkloadStats) -> None:
    from rich.table import Table

    t = Table(title=f"workload {s.name}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("source", s.source + (f"  [dim]({s.licence})[/dim]" if s.licence else ""))
    t.add_row("requests", f"{s.num_requests:,}")
    t.add_row("duration", f"{s.duration_s:,.1f} s ({s.duration_s / 3600:.2f} h)")
    t.add_row("mean rate", f"{_fmt(s.mean_rate_per_s)} req/s  (peak {_fmt(s.peak_rate_per_s)} req/s per {s.window_s:g} s window)")
    t.add_row("inter-arrival CV", _fmt(s.interarrival_cv, 3) + "  [dim](1 = Poisson)[/dim]")
    t.add_row(f"rate / {s.window_s:g} s", _sparkline(s.rate_per_s))
    if s.prefix_reuse_block_frac is None:
        t.add_row("prefix reuse", "no block hashes in this workload")
    else:
        t.add_row(
            "prefix reuse (unlimited cache)",
            f"{s.prefix_reuse_block_frac:.1%} of {s.num_blocks:,} blocks seen before; "
            f"{s.prefix_reuse_token_frac:.1%} of input tokens; leading-prefix hits {s.prefix_hit_token_frac:.1%} "
            f"[dim](blocks of {s.block_size_tokens} tokens)[/dim]",
        )
    t.add_row("sessions / tenants / models", f"{s.num_sessions:,} / {s.num_tenants:,} / {s.num_models:,}")
    console.print(t)
    lt = Table(title="token lengths", title_justify="left")
    for c in ("", "mean", "p50", "p90", "p99", "min", "max", "total"):
        lt.add_column(c, justify="right" if c else "left")
    for label, ls in (("input (ISL)", s.input_tokens), ("output (OSL)", s.output_tokens)):
        lt.add_row(label, _fmt(ls.mean), _fmt(ls.p50), _fmt(ls.p90), _fmt(ls.p99), f"{ls.min:,}", f"{ls.max:,}", f"{ls.total:,}")
    console.print(lt)
    if s.num_models > 1 or s.num_tenants > 1:
        mt = Table(title="requests by model / tenant (top 10)", title_justify="left")
        mt.add_column("kind")
        mt.add_column("name")
        mt.add_column("requests", justify="right")
        for kind, d in (("model", s.requests_per_model), ("tenant", s.requests_per_tenant)):
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:10]:
                mt.add_row(kind, k, f"{v:,}")
        console.print(mt)
    for note in s.notes:
        console.print(f"[dim]note: {note}[/dim]", highlight=False)


def _stats_json(s: WorkloadStats) -> dict[str, Any]:
    from gpuyield.edges.cli.common import to_jsonable

    d: dict[str, Any] = to_jsonable(s)
    return d


def _parse_range(text: str, what: str, cast: type) -> tuple[Any, Any]:
    a, sep, b = text.partition(":")
    if not sep:
        raise WorkloadError(f"{what} {text!r}: expected START:END (either side may be empty)")
    try:
        return (cast(a) if a.strip() else None, cast(b) if b.strip() else None)
    except ValueError:
        raise WorkloadError(f"{what} {text!r}: START and END must be numbers") from None


def _prefix_spec(
    *,
    system_prompts: int,
    system_prompt_tokens: int,
    system_prompt_share: float,
    sessions_mean_turns: float | None,
    think_s: float,
    max_context_tokens: int | None,
    rag_docs: int,
    rag_doc_tokens: int,
    rag_share: float,
    zipf_s: float,
    preserve_input_tokens: bool,
    block_size: int | None,
) -> PrefixSpec | None:
    from pydantic import ValidationError

    from gpuyield.core.workload import PrefixSpec, RagSpec, SessionSpec, SystemPromptSpec

    if not system_prompts and sessions_mean_turns is None and not rag_docs:
        return None

    def build(cls: Any, flags: dict[str, str], **kw: Any) -> Any:
        try:
            return cls(**kw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            raise WorkloadError(f"{flags.get(field, field)} {kw.get(field)!r}: {err['msg']}") from None

    return PrefixSpec(
        system_prompts=build(
            SystemPromptSpec,
            {"count": "--system-prompts", "tokens": "--system-prompt-tokens", "zipf_s": "--zipf",
             "fraction": "--system-prompt-share"},
            count=system_prompts, tokens=system_prompt_tokens, zipf_s=zipf_s, fraction=system_prompt_share,
        ) if system_prompts else None,
        sessions=build(
            SessionSpec,
            {"mean_turns": "--sessions", "min_think_s": "--think-s", "max_context_tokens": "--max-context-tokens"},
            mean_turns=sessions_mean_turns, min_think_s=think_s, max_context_tokens=max_context_tokens,
        ) if sessions_mean_turns is not None else None,
        rag=build(
            RagSpec,
            {"num_docs": "--rag-docs", "doc_tokens": "--rag-doc-tokens", "zipf_s": "--zipf", "fraction": "--rag-share"},
            num_docs=rag_docs, doc_tokens=rag_doc_tokens, zipf_s=zipf_s, fraction=rag_share,
        ) if rag_docs else None,
        preserve_input_tokens=preserve_input_tokens,
        block_size_tokens=block_size or 512,
    )  # fmt: skip


def _check_out(out: Path) -> None:
    if not out.name.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson", ".parquet")):
        raise WorkloadError(f"{out}: unknown request-log extension; expected .jsonl, .jsonl.gz or .parquet")


def register(app: typer.Typer) -> None:
    app.add_typer(workload_app, name="workload")


@workload_app.command("inspect")
def inspect_cmd(
    spec: str = typer.Argument(..., help=SPEC_HELP, metavar="FILE_OR_BUILTIN"),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    window_s: float | None = typer.Option(None, "--window-s", help="Window for the rate-over-time series, seconds (default ~duration/60)."),
    block_size: int | None = typer.Option(None, "--block-size", help="Tokens per hash block (Mooncake hash_ids: 512)."),
    arrival: str | None = typer.Option(None, "--arrival", help=ARRIVAL_HELP),
    rate: float | None = typer.Option(None, "--rate", help="Mean request rate, req/s, for synthetic arrivals (default 1)."),
    cv: float | None = typer.Option(None, "--cv", help="Inter-arrival coefficient of variation for gamma/curve arrivals."),
    start_s: float = typer.Option(0.0, "--start-s", help="ServeGen: start of the span to sample, seconds from the start of the data."),
    duration_s: float | None = typer.Option(None, "--duration-s", help="ServeGen: length of the span to sample, seconds."),
    seed: int = typer.Option(0, "--seed", help="Seed for anything sampled."),
    lenient: bool = typer.Option(False, "--lenient", help="Skip bad rows (counted and reported) instead of failing."),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Characterise a workload: rate over time, inter-arrival CV, ISL/OSL percentiles, prefix reuse bound.

    [bold]Examples[/bold]

      gpuyield workload inspect builtin:azure-conv
      gpuyield workload inspect builtin:mooncake-synthetic --json stats.json
      gpuyield workload inspect requests.jsonl --window-s 60
      gpuyield workload inspect ../shared/data/traces/servegen/deepseek-r1 --start-s 36000 --duration-s 3600
      gpuyield workload inspect builtin:sharegpt --arrival gamma --rate 20 --cv 2
    """

    def body() -> None:
        from gpuyield.core.workload import inspect

        if window_s is not None and window_s <= 0:
            raise WorkloadError(f"--window-s must be > 0, got {window_s}")
        w = _load(
            spec, fmt=fmt, block_size=block_size, seed=seed, arrival=arrival, rate=rate, cv=cv,
            num_requests=None, start_s=start_s, duration_s=duration_s, lenient=lenient,
        )  # fmt: skip
        stats = inspect(w, window_s=window_s)
        if json_out is not None:
            emit_json(_stats_json(stats), json_out)
            if json_out == "-":
                return
        _print_stats(stats)

    run_command(body)


def _apply_transforms(
    w: Workload,
    *,
    slice_req: str | None,
    slice_s: str | None,
    sample_n: int | None,
    sample_frac: float | None,
    seed: int,
    time_scale: float | None,
    rate_scale: float | None,
) -> Workload:
    from gpuyield.core.workload import transforms as tf

    if slice_req:
        a, b = _parse_range(slice_req, "--slice", int)
        w = tf.slice_index(w, a, b)
    if slice_s:
        a, b = _parse_range(slice_s, "--slice-s", float)
        w = tf.slice_time(w, a or 0.0, b)
    if sample_n is not None or sample_frac is not None:
        w = tf.sample(w, sample_n, fraction=sample_frac, seed=seed)
    if time_scale is not None:
        w = tf.time_scale(w, time_scale)
    if rate_scale is not None:
        w = tf.rate_scale(w, rate_scale)
    if len(w) == 0:
        raise WorkloadError("the transforms left no requests")
    return w


@workload_app.command("convert")
def convert_cmd(
    src: str = typer.Argument(..., help=SPEC_HELP, metavar="IN"),
    out: Path = typer.Argument(..., help="Output request log: .jsonl, .jsonl.gz or .parquet.", metavar="OUT"),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    merge_with: list[str] = typer.Option([], "--merge", help="Interleave another workload (repeatable), e.g. another model's trace."),
    rate_scale: float | None = typer.Option(None, "--rate-scale", help="Multiply the request rate (2 = inter-arrival times halved)."),
    time_scale: float | None = typer.Option(None, "--time-scale", help="Multiply arrival times (2 = spread over twice the time)."),
    slice_req: str | None = typer.Option(None, "--slice", help="Keep requests A:B by index (Python slice; either side may be empty)."),
    slice_s: str | None = typer.Option(None, "--slice-s", help="Keep requests arriving in [A, B) seconds; times are rebased to A."),
    sample_n: int | None = typer.Option(None, "--sample", help="Keep N requests chosen at random (seeded), in arrival order."),
    sample_frac: float | None = typer.Option(None, "--sample-frac", help="Keep this fraction of requests at random (seeded)."),
    block_size: int | None = typer.Option(None, "--block-size", help="Tokens per hash block."),
    arrival: str | None = typer.Option(None, "--arrival", help=ARRIVAL_HELP),
    rate: float | None = typer.Option(None, "--rate", help="Mean request rate for synthetic arrivals, req/s."),
    cv: float | None = typer.Option(None, "--cv", help="Inter-arrival CV for synthetic arrivals."),
    start_s: float = typer.Option(0.0, "--start-s", help="ServeGen: start of the span to sample, seconds."),
    duration_s: float | None = typer.Option(None, "--duration-s", help="ServeGen: length of the span, seconds."),
    start_ts: float = typer.Option(0.0, "--start-ts", help="Epoch seconds of the first arrival in the output."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and anything synthetic."),
    lenient: bool = typer.Option(False, "--lenient", help="Skip bad input rows (counted and reported)."),
    system_prompts: int = typer.Option(0, "--system-prompts", help="Add N shared system prompts (synthetic prefix structure)."),
    system_prompt_tokens: int = typer.Option(1024, "--system-prompt-tokens", help="Tokens per system prompt."),
    system_prompt_share: float = typer.Option(1.0, "--system-prompt-share", help="Fraction of sessions/requests using one."),
    sessions_mean_turns: float | None = typer.Option(None, "--sessions", help="Group requests into multi-turn sessions with this mean number of turns."),
    think_s: float = typer.Option(5.0, "--think-s", help="Minimum time between a session's turns, seconds."),
    max_context_tokens: int | None = typer.Option(None, "--max-context-tokens", help="Start a new session when the context would exceed this."),
    rag_docs: int = typer.Option(0, "--rag-docs", help="Add RAG documents from a pool of N."),
    rag_doc_tokens: int = typer.Option(2048, "--rag-doc-tokens", help="Tokens per RAG document."),
    rag_share: float = typer.Option(1.0, "--rag-share", help="Fraction of sessions/requests with a document."),
    zipf_s: float = typer.Option(1.0, "--zipf", help="Popularity skew of system prompts and documents (0 = uniform)."),
    preserve_input_tokens: bool = typer.Option(False, "--preserve-input-tokens", help="Lay the synthetic prefixes over the existing prompts (input lengths unchanged)."),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Convert any supported trace to gpuyield's request log, applying transforms on the way.

    Transforms run in this order: slice by index, slice by time, sample, time scale, rate scale; --merge inputs
    are interleaved before the transforms. A synthetic prefix structure (--system-prompts, --sessions,
    --rag-docs; replaces any block hashes) is added last, keeping the arrival times.

    [bold]Examples[/bold]

      gpuyield workload convert builtin:azure-conv azure.jsonl
      gpuyield workload convert builtin:azure-conv fast.parquet --rate-scale 2 --slice-s 0:600
      gpuyield workload convert builtin:mooncake-synthetic small.jsonl --sample 500 --seed 7
      gpuyield workload convert a.jsonl both.jsonl --merge b.jsonl
      gpuyield workload convert builtin:azure-conv azure-sessions.jsonl --sessions 3 --system-prompts 4 --preserve-input-tokens
    """

    def body() -> None:
        from gpuyield.core.workload import inspect
        from gpuyield.core.workload.transforms import merge
        from gpuyield.edges.io.request_log import write_request_log

        _check_out(out)
        kw: dict[str, Any] = dict(
            fmt=fmt, block_size=block_size, seed=seed, arrival=arrival, rate=rate, cv=cv, num_requests=None,
            start_s=start_s, duration_s=duration_s, lenient=lenient,
        )  # fmt: skip
        w = _load(src, **kw)
        if merge_with:
            kw["fmt"] = None
            w = merge([w, *(_load(m, **kw) for m in merge_with)])
        w = _apply_transforms(
            w, slice_req=slice_req, slice_s=slice_s, sample_n=sample_n, sample_frac=sample_frac, seed=seed,
            time_scale=time_scale, rate_scale=rate_scale,
        )  # fmt: skip
        prefix = _prefix_spec(
            system_prompts=system_prompts, system_prompt_tokens=system_prompt_tokens,
            system_prompt_share=system_prompt_share, sessions_mean_turns=sessions_mean_turns, think_s=think_s,
            max_context_tokens=max_context_tokens, rag_docs=rag_docs, rag_doc_tokens=rag_doc_tokens,
            rag_share=rag_share, zipf_s=zipf_s, preserve_input_tokens=preserve_input_tokens,
            block_size=block_size,
        )  # fmt: skip
        if prefix is not None:
            from gpuyield.core.workload import apply_prefix_structure

            if w.has_hashes:
                w.meta = w.meta.with_note("existing block hashes replaced by the synthetic prefix structure")
            w = apply_prefix_structure(w, prefix, seed=seed)
        n = write_request_log(w, out, start_ts=start_ts)
        stats = inspect(w)
        summary = {"output": str(out), "requests": n, "duration_s": stats.duration_s,
                   "mean_rate_per_s": stats.mean_rate_per_s, "notes": list(w.meta.notes)}  # fmt: skip
        if json_out is not None:
            emit_json(summary, json_out)
        if json_out != "-":
            err_console.print(
                f"wrote {n:,} requests over {stats.duration_s:,.1f} s ({_fmt(stats.mean_rate_per_s)} req/s) to {out}",
                highlight=False,
            )
            for note in w.meta.notes:
                err_console.print(f"[dim]note: {note}[/dim]", highlight=False)

    run_command(body)


@workload_app.command("synth")
def synth_cmd(
    lengths: str = typer.Argument(..., help="Where lengths come from: a length table, any trace, or builtin:NAME.", metavar="LENGTHS"),
    out: Path = typer.Argument(..., help="Output request log: .jsonl, .jsonl.gz or .parquet.", metavar="OUT"),
    arrival: str = typer.Option("poisson", "--arrival", help=ARRIVAL_HELP),
    rate: float | None = typer.Option(None, "--rate", help="Mean rate, req/s (poisson/gamma: required; curve: rescales the curve)."),
    cv: float | None = typer.Option(None, "--cv", help="Inter-arrival CV (gamma, curve)."),
    num_requests: int | None = typer.Option(None, "--num-requests", "-n", help="Number of requests (default: one per table row; curve: as the curve implies)."),
    system_prompts: int = typer.Option(0, "--system-prompts", help="Number of distinct shared system prompts (0 = none)."),
    system_prompt_tokens: int = typer.Option(1024, "--system-prompt-tokens", help="Tokens per system prompt."),
    system_prompt_share: float = typer.Option(1.0, "--system-prompt-share", help="Fraction of sessions/requests using a system prompt."),
    sessions_mean_turns: float | None = typer.Option(None, "--sessions", help="Multi-turn sessions with this mean number of turns."),
    think_s: float = typer.Option(5.0, "--think-s", help="Minimum time between a session's turns, seconds."),
    max_context_tokens: int | None = typer.Option(None, "--max-context-tokens", help="Start a new session when the context would exceed this."),
    rag_docs: int = typer.Option(0, "--rag-docs", help="Number of RAG documents (0 = none)."),
    rag_doc_tokens: int = typer.Option(2048, "--rag-doc-tokens", help="Tokens per RAG document."),
    rag_share: float = typer.Option(1.0, "--rag-share", help="Fraction of sessions/requests that include a document."),
    zipf_s: float = typer.Option(1.0, "--zipf", help="Popularity skew of system prompts and documents (0 = uniform)."),
    preserve_input_tokens: bool = typer.Option(False, "--preserve-input-tokens", help="Lay shared prefixes over the existing prompts instead of adding tokens."),
    block_size: int = typer.Option(512, "--block-size", help="Tokens per hash block."),
    seed: int = typer.Option(0, "--seed", help="Seed for every random choice."),
    json_out: str | None = typer.Option(None, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Synthesise a workload: lengths from a table, an arrival process, and optional prefix structure.

    Lengths and arrival times are drawn with --seed; the same arguments give byte-identical output. Prints the
    new workload's statistics (--json for machine output).

    [bold]Examples[/bold]

      gpuyield workload synth builtin:sharegpt chat.jsonl --rate 10 -n 20000 --sessions 4 --system-prompts 8
      gpuyield workload synth arxiv.csv rag.parquet --arrival gamma --rate 5 --cv 2 --rag-docs 500 --rag-doc-tokens 4096
      gpuyield workload synth builtin:sharegpt day.jsonl --arrival curve:servegen_aggregate_rate_10min.csv#m-large --rate 3
    """

    def body() -> None:
        from gpuyield.core.workload import apply_prefix_structure, inspect, synthesize
        from gpuyield.edges.io.request_log import write_request_log
        from gpuyield.edges.io.traces import parse_arrival

        _check_out(out)
        if block_size < 1:
            raise WorkloadError(f"--block-size must be >= 1 token, got {block_size}")
        if arrival in ("poisson", "gamma") and rate is None:
            raise WorkloadError(f"--arrival {arrival} needs --rate (requests per second)")
        prefix = _prefix_spec(
            system_prompts=system_prompts, system_prompt_tokens=system_prompt_tokens,
            system_prompt_share=system_prompt_share, sessions_mean_turns=sessions_mean_turns, think_s=think_s,
            max_context_tokens=max_context_tokens, rag_docs=rag_docs, rag_doc_tokens=rag_doc_tokens,
            rag_share=rag_share, zipf_s=zipf_s, preserve_input_tokens=preserve_input_tokens, block_size=block_size,
        )  # fmt: skip
        base = _load(
            lengths, fmt=None, block_size=block_size, seed=seed, arrival=None, rate=None, cv=None,
            num_requests=None, start_s=0.0, duration_s=None, lenient=False,
        )  # fmt: skip
        from gpuyield.core.workload import WorkloadMeta

        meta = WorkloadMeta(name=out.name.split(".")[0], source=f"synth from {lengths}", licence=base.meta.licence)
        w = synthesize(
            base.input_tokens, base.output_tokens, parse_arrival(arrival, rate, cv), meta,
            num_requests=num_requests, seed=seed, block_size_tokens=block_size,
        )  # fmt: skip
        if prefix is not None:
            w = apply_prefix_structure(w, prefix, seed=seed)
        write_request_log(w, out)
        stats = inspect(w)
        if json_out is not None:
            emit_json(_stats_json(stats), json_out)
            if json_out == "-":
                return
        _print_stats(stats)
        err_console.print(f"wrote {len(w):,} requests to {out}", highlight=False)

    run_command(body)
