#!/usr/bin/env python3
"""Record real vLLM ``/metrics`` scrapes while a bounded load runs, as test fixtures.

Against a vLLM server on loopback (start one with ``scripts/start_vllm_cpu.sh``) this sends a fixed,
seeded load and scrapes ``/metrics`` several times: once before the load, evenly during it, and
once after it has drained. Each scrape is saved byte-for-byte as
``OUT/scrape-NN-YYYYMMDDTHHMMSSZ.prom`` and ``OUT/manifest.json`` lists them with their scrape
times, the engine version, the model and the load.

The load: ``--requests`` completions (half ``/v1/completions``, half ``/v1/chat/completions``) with
at most ``--concurrency`` in flight, arrivals spread over ``--duration-s`` (seeded exponential
gaps), ``max_tokens`` fixed and ``ignore_eos`` on (random weights rarely emit EOS), and a fraction
``--shared-fraction`` of prompts starting with one of two shared prefixes of several hundred tokens
(vLLM's CPU KV block is 128 tokens, so these produce prefix-cache hits).

``--restart-after K`` restarts the engine after the K-th scrape (``scripts/stop_engines.sh`` then
``scripts/start_vllm_cpu.sh MODEL_DIR PORT``) and runs a second load phase, so the series shows a
counter reset and a new ``process_start_time_seconds``.

Examples::

    python scripts/capture_vllm_metrics.py --url http://127.0.0.1:8001 \\
        --out tests/fixtures/telemetry/vllm_cpu/load_tiny_llama
    python scripts/capture_vllm_metrics.py --url http://127.0.0.1:8001 --scrapes 6 --restart-after 3 \\
        --model-dir /tmp/gpuyield-models/tiny-llama --out tests/fixtures/telemetry/vllm_cpu/restart_tiny_llama

``--engine llama.cpp`` does the same against llama.cpp's ``llama-server`` (started with ``--metrics``
by ``scripts/start_llama_server.sh``; ``--model-dir`` is then the GGUF file).

Needs httpx (in gpuyield's ``[serve]``/``[test]`` extras). Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

__all__ = ["LoadResult", "make_prompts", "main"]

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

# A small fixed word list: prompts are readable, seeded and tokenise to ~1-2 tokens per word.
WORDS = ["request", "token", "cache", "prefix", "block", "decode", "prefill", "batch", "engine", "replica", "router", "queue", "latency", "throughput", "memory", "model", "layer", "attention", "kernel", "tensor", "shard", "scheduler", "budget", "window", "stream", "client", "server", "metric", "counter", "gauge", "histogram", "sample", "scrape", "fleet", "capacity", "demand", "python", "def", "return", "class", "import", "self", "value", "list", "dict", "index", "range", "yield", "async", "await", "lambda", "string", "bytes"]


@dataclass(slots=True)
class LoadResult:
    """What the load phase did, summed over its requests."""

    num_requests: int = 0
    num_ok: int = 0
    num_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_prompts(num: int, shared_fraction: float, prefix_words: int, seed: int) -> list[str]:
    """``num`` prompts; a ``shared_fraction`` of them start with one of two fixed long prefixes."""
    rng = random.Random(seed)
    prefixes = [_words(rng, prefix_words), _words(rng, prefix_words)]
    prompts = []
    for i in range(num):
        tail = f"question {i}: " + _words(rng, rng.randint(20, 60))
        if rng.random() < shared_fraction:
            prompts.append(prefixes[i % 2] + "\n" + tail)
        else:
            prompts.append(_words(rng, rng.randint(40, 200)) + "\n" + tail)
    return prompts


async def _one(client: httpx.AsyncClient, model: str, prompt: str, i: int, max_tokens: int, res: LoadResult) -> None:
    common = {"model": model, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0}
    if i % 2:
        path, body = "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}]}
    else:
        path, body = "/v1/completions", {**common, "prompt": prompt}
    res.num_requests += 1
    try:
        r = await client.post(path, json=body)
        r.raise_for_status()
        usage = r.json()["usage"]
        res.prompt_tokens += int(usage["prompt_tokens"])
        res.completion_tokens += int(usage["completion_tokens"])
        res.num_ok += 1
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        res.num_failed += 1
        res.errors.append(f"request {i}: {exc!r}"[:300])


async def run_load(
    url: str, model: str, prompts: list[str], concurrency: int, duration_s: float, max_tokens: int, seed: int
) -> LoadResult:
    """Send every prompt once: seeded exponential arrival gaps over ``duration_s``, ``concurrency`` in flight."""
    res = LoadResult()
    rng = random.Random(seed + 1)
    mean_gap_s = duration_s / max(len(prompts), 1)
    sem = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(120.0, connect=5.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:

        async def guarded(i: int, p: str) -> None:
            async with sem:
                await _one(client, model, p, i, max_tokens, res)

        tasks = []
        for i, p in enumerate(prompts):
            tasks.append(asyncio.create_task(guarded(i, p)))
            await asyncio.sleep(rng.expovariate(1.0 / mean_gap_s) if mean_gap_s > 0 else 0.0)
        await asyncio.gather(*tasks)
    return res


async def scrape(url: str, out: Path, index: int, phase: str) -> dict[str, object]:
    """One GET /metrics saved verbatim; returns its manifest entry."""
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        t = time.time()
        r = await client.get("/metrics")
        r.raise_for_status()
    stamp = datetime.fromtimestamp(t, UTC)
    name = f"scrape-{index:02d}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.prom"
    (out / name).write_bytes(r.content)
    return {
        "file": name,
        "scraped_at_unix_s": round(t, 3),
        "scraped_at": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "phase": phase,
        "num_bytes": len(r.content),
    }


async def _get_json(url: str, path: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        r = await client.get(path)
        r.raise_for_status()
        return dict(r.json())


async def load_with_scrapes(
    args: argparse.Namespace, model: str, prompts: list[str], out: Path, first_index: int, num_scrapes: int,
    phase: str, seed: int,
) -> tuple[list[dict[str, object]], LoadResult]:
    """Scrape once before, ``num_scrapes - 2`` times during and once after one load phase."""
    entries = [await scrape(args.url, out, first_index, f"{phase}:before-load")]
    load = asyncio.create_task(
        run_load(args.url, model, prompts, args.concurrency, args.duration_s, args.max_tokens, seed)
    )
    during = max(num_scrapes - 2, 0)
    gap_s = args.duration_s / (during + 1)
    for k in range(during):
        await asyncio.sleep(gap_s)
        entries.append(await scrape(args.url, out, first_index + 1 + k, f"{phase}:under-load"))
    result = await load
    await asyncio.sleep(args.settle_s)  # let the engine publish its last stats
    if num_scrapes >= 2:
        entries.append(await scrape(args.url, out, first_index + num_scrapes - 1, f"{phase}:after-load"))
    return entries, result


def restart_engine(args: argparse.Namespace, port: int) -> float:
    """Stop and start the engine with the project's scripts; returns seconds to healthy."""
    t0 = time.monotonic()
    subprocess.run([str(ROOT / "scripts" / "stop_engines.sh"), str(port)], check=True)
    start = "start_vllm_cpu.sh" if args.engine == "vllm" else "start_llama_server.sh"
    subprocess.run([str(ROOT / "scripts" / start), str(args.model_dir), str(port), *args.engine_args.split()],
                   check=True)
    return time.monotonic() - t0


async def amain(args: argparse.Namespace) -> int:
    parsed = urlparse(args.url)
    if parsed.hostname not in LOOPBACK_HOSTS or parsed.port is None:
        print(f"error: --url must be a loopback URL with a port, got {args.url!r}", file=sys.stderr)
        return 2
    if args.restart_after is not None and not (2 <= args.restart_after <= args.scrapes - 2):
        print(f"error: --restart-after must be in 2..{args.scrapes - 2}, got {args.restart_after}", file=sys.stderr)
        return 2
    if args.restart_after is not None and args.model_dir is None:
        print("error: --restart-after needs --model-dir (the engine is restarted with it)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("scrape-*.prom"):
        old.unlink()

    models = await _get_json(args.url, "/v1/models")
    model = args.model or str(models["data"][0]["id"])  # type: ignore[index]
    if args.engine == "vllm":
        version = (await _get_json(args.url, "/version")).get("version")
    else:
        version = (await _get_json(args.url, "/props")).get("build_info")
    prompts = make_prompts(args.requests, args.shared_fraction, args.prefix_words, args.seed)

    started = datetime.now(UTC)
    phases: list[dict[str, object]] = []
    entries: list[dict[str, object]] = []
    if args.restart_after is None:
        e, r = await load_with_scrapes(args, model, prompts, out, 1, args.scrapes, "load", args.seed)
        entries += e
        phases.append({"phase": "load", **asdict(r)})
    else:
        half = len(prompts) // 2
        e, r = await load_with_scrapes(args, model, prompts[:half], out, 1, args.restart_after, "before-restart",
                                       args.seed)
        entries += e
        phases.append({"phase": "before-restart", **asdict(r)})
        restart_s = restart_engine(args, parsed.port)
        phases.append({"phase": "restart", "seconds_to_healthy": round(restart_s, 1)})
        e, r = await load_with_scrapes(args, model, prompts[half:], out, args.restart_after + 1,
                                       args.scrapes - args.restart_after, "after-restart", args.seed + 7)
        entries += e
        phases.append({"phase": "after-restart", **asdict(r)})

    manifest = {
        "what": "real vLLM /metrics scrapes, saved byte-for-byte",
        "engine": "vllm-cpu" if args.engine == "vllm" else "llama.cpp llama-server",
        "engine_version": version,
        "model": model,
        "model_builder": "scripts/make_tiny_llama.py (random weights, local BPE tokenizer)",
        "engine_args": args.engine_args,
        "machine": "2 cores, 24 GiB, no GPU, Python 3.11 (shared with other jobs)",
        "captured_by": "scripts/capture_vllm_metrics.py " + " ".join(sys.argv[1:]),
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "load": {
            "num_requests": args.requests,
            "concurrency": args.concurrency,
            "duration_s": args.duration_s,
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "shared_prefix_fraction": args.shared_fraction,
            "shared_prefix_words": args.prefix_words,
            "seed": args.seed,
        },
        "phases": phases,
        "scrapes": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    failed = sum(int(p.get("num_failed", 0)) for p in phases)  # type: ignore[call-overload]
    print(f"{len(entries)} scrapes in {out}; {failed} failed requests; phases: {json.dumps(phases)}")
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--url", default="http://127.0.0.1:8001", help="vLLM server on loopback")
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/telemetry/vllm_cpu/load_tiny_llama"))
    ap.add_argument("--engine", choices=["vllm", "llama.cpp"], default="vllm",
                    help="vllm (default) or llama.cpp (llama-server: version from /props, restart with a GGUF)")
    ap.add_argument("--model", help="served model name (default: the first of /v1/models)")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--duration-s", type=float, default=20.0, help="arrivals spread over this long (20)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--shared-fraction", type=float, default=0.5, help="prompts with a shared long prefix (0.5)")
    ap.add_argument("--prefix-words", type=int, default=300, help="words in each shared prefix (300, > 128 tokens)")
    ap.add_argument("--scrapes", type=int, default=6)
    ap.add_argument("--settle-s", type=float, default=2.0, help="wait after the load before the last scrape")
    ap.add_argument("--restart-after", type=int, help="restart the engine after this many scrapes")
    ap.add_argument("--model-dir", help="model directory (vllm) or .gguf file (llama.cpp), for --restart-after")
    ap.add_argument("--engine-args", default="",
                    help="the extra arguments the engine was started with (recorded; reused on --restart-after)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.scrapes < 2 or args.requests < 1 or args.concurrency < 1:
        ap.error("--scrapes must be >= 2 and --requests, --concurrency >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
