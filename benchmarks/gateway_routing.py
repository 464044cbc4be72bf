"""Routing quality through the live gateway: prefix affinity vs round-robin on emulated replicas.

Replays ``--requests`` requests of ``builtin:mooncake-synthetic`` from ``--offset`` on (open loop, at their
trace arrival times divided by ``--speedup``) through ``gpuyield serve`` onto 4 ``engine-emulator`` replicas timed by the
fleet model (``--model``/``--gpu``), once per routing policy, and reports from the gateway's request log: TTFT
p50/p99, prefix-cache hit rate (engine-reported cached tokens / prompt tokens) and requests per replica.

Prompts are built so the trace's prefix structure survives: each 512-token block id of the trace becomes
2,048 bytes of text unique to that id (= 512 tokens under the gateway's and emulator's bytes/4 count), so
requests sharing leading block ids share their leading text -- and their block hashes at any block size.
Output lengths are capped at ``--max-output`` to bound the run time.

A second scenario (``hot``) sends a trace where 80 % of requests share one of two very hot prefixes and checks
the load guard: max/min requests per replica under prefix affinity.

Usage: python benchmarks/gateway_routing.py [--requests 300] [--offset 3000] [--speedup 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import free_port, stop, wait_up  # noqa: E402

MODEL = "llama-3.1-8b"


def block_text(block_id: int) -> str:
    return (f"{block_id & 0xFFFFFFFFFFFFFFFF:016x}" * 128)[:2048]


def mooncake_prompts(n: int, max_output: int, offset: int = 0) -> list[tuple[float, str, int]]:
    from gpuyield.edges.io.traces import load_workload

    wl = load_workload("builtin:mooncake-synthetic")
    out = []
    for i, r in enumerate(wl):
        if i < offset:
            continue
        if i >= offset + n:
            break
        text = "".join(block_text(h) for h in r.block_hashes)
        rest = r.input_tokens * 4 - len(text)
        if rest > 0:
            text += (f"[req {i}]" * (rest // 8 + 1))[:rest]
        out.append((r.arrival_s, text[: r.input_tokens * 4], min(r.output_tokens, max_output)))
    return out


def hot_prompts(n: int, rate_per_s: float, output_tokens: int = 32, seed: int = 7) -> list[tuple[float, str, int]]:
    rng = random.Random(seed)
    hot = [block_text(0xA11CE) * 4, block_text(0xB0B) * 4]  # two 2,048-token system prompts
    out = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(rate_per_s)
        u = rng.random()
        prefix = hot[0] if u < 0.5 else hot[1] if u < 0.8 else block_text(rng.getrandbits(63)) * 4
        out.append((t, prefix + f" question {i} " * 20, output_tokens))
    return out


async def replay(url: str, reqs: list[tuple[float, str, int]], speedup: float, timeout_s: float,
                 ttfts_ms: list[float] | None = None) -> int:
    import aiohttp

    ok = 0

    async def one(s: aiohttp.ClientSession, at: float, text: str, max_tokens: int) -> None:
        nonlocal ok
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - t0)))
        body = {"model": MODEL, "prompt": text, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        t_send = time.perf_counter()
        first: float | None = None
        async with s.post(url + "/v1/completions", json=body) as r:
            async for chunk in r.content.iter_any():
                if first is None and b'"text"' in chunk:
                    first = time.perf_counter()
            ok += r.status == 200
        if r.status == 200 and first is not None and ttfts_ms is not None:
            ttfts_ms.append((first - t_send) * 1e3)

    t0 = time.perf_counter()
    start = reqs[0][0]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
        await asyncio.gather(*(one(s, (a - start) / speedup, t, m) for a, t, m in reqs), return_exceptions=True)
    return ok


def _engine_counts(url: str) -> tuple[float, float, float]:
    """(requests finished, prefix-cache hit tokens, prefix-cache query tokens) from an emulator's /metrics."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    vals = {"vllm:request_success_total": 0.0, "vllm:prefix_cache_hits_total": 0.0,
            "vllm:prefix_cache_queries_total": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in vals:
            vals[name] += float(line.rsplit(" ", 1)[1])
    return (vals["vllm:request_success_total"], vals["vllm:prefix_cache_hits_total"],
            vals["vllm:prefix_cache_queries_total"])


def run_peer(router: str, policy: str, reqs: list[tuple[float, str, int]], speedup: float, tmp: Path, gpu: str,
             timeout_s: float, venvs: Path) -> dict[str, Any]:
    """The same replay through a peer router; per-replica counts and hit rate from the emulators' metrics,
    TTFT measured by the client (time to the first streamed text)."""
    from gateway_overhead import start_router

    emus, urls = _start_emulators(gpu)
    proc = None
    try:
        for p, u in zip(emus, urls, strict=True):
            wait_up(u + "/health", 60, p)
        proc, url, _headers = start_router(router, urls, tmp, venvs, policy=policy)
        time.sleep(1.0)
        ttfts: list[float] = []
        ok = asyncio.run(replay(url, reqs, speedup, timeout_s, ttfts))
        time.sleep(0.5)
        counts = [_engine_counts(u) for u in urls]
    finally:
        if proc is not None:
            stop(proc)
        for p in emus:
            stop(p)
    ttfts.sort()
    per = {f"r{i}": int(c[0]) for i, c in enumerate(counts)}
    hit = sum(c[1] for c in counts) / max(1.0, sum(c[2] for c in counts))

    def pct(p: float) -> float:
        return ttfts[min(len(ttfts) - 1, int(p * (len(ttfts) - 1)))] if ttfts else float("nan")

    return {"policy": f"{router}:{policy}", "sent": len(reqs), "ok": ok, "logged_ok": ok, "ttft_p50_ms": pct(0.5),
            "ttft_p99_ms": pct(0.99), "cache_hit_rate": hit, "requests_per_replica": per,
            "max_min_load": max(per.values()) / max(1, min(per.values())), "ttft_source": "client"}


def _start_emulators(gpu: str) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    emus, urls = [], []
    for _ in range(4):
        port = free_port()
        emus.append(subprocess.Popen([sys.executable, "-m", "gpuyield.edges.cli.main", "engine-emulator", "--model",
                                      MODEL, "--gpu", gpu, "--port", str(port), "--max-model-len", "131072"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    return emus, urls


def run_policy(policy: str, reqs: list[tuple[float, str, int]], speedup: float, tmp: Path, gpu: str,
               timeout_s: float, scenario: str) -> dict[str, Any]:
    import yaml

    emus, urls = _start_emulators(gpu)
    log = tmp / f"{scenario}-{policy}.jsonl"
    log.unlink(missing_ok=True)
    port = free_port()
    cfg = {"listen": {"host": "127.0.0.1", "port": port},
           "backends": [{"name": f"r{i}", "url": u, "kind": "vllm", "models": [MODEL], "max_inflight": 256}
                        for i, u in enumerate(urls)],
           "auth": {"allow_anonymous": True}, "router": {"policy": policy},
           "limits": {"max_body_bytes": 64 * 1024 * 1024}, "request_log": {"path": str(log)}}
    (tmp / f"{policy}.yaml").write_text(yaml.safe_dump(cfg))
    gw = subprocess.Popen([sys.executable, "-m", "gpuyield.edges.cli.main", "serve", "--config",
                           str(tmp / f"{policy}.yaml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for p, u in zip(emus, urls, strict=True):
            wait_up(u + "/health", 60, p)
        wait_up(f"http://127.0.0.1:{port}/readyz", 60, gw)
        time.sleep(1.0)
        client_ttfts: list[float] = []
        ok = asyncio.run(replay(f"http://127.0.0.1:{port}", reqs, speedup, timeout_s, client_ttfts))
        time.sleep(0.5)
    finally:
        stop(gw)
        for p in emus:
            stop(p)
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    done = [r for r in recs if r["status"] == "ok"]
    ttft = sorted((r["first_token_ts"] - r["arrival_ts"]) * 1e3 for r in done if r.get("first_token_ts"))
    per = {f"r{i}": 0 for i in range(4)}
    for r in done:
        per[r["replica"]] += 1

    def pct(p: float) -> float:
        return ttft[min(len(ttft) - 1, int(p * (len(ttft) - 1)))] if ttft else float("nan")

    hit = sum(r.get("cached_tokens") or 0 for r in done) / max(1, sum(r["input_tokens"] for r in done))
    client_ttfts.sort()

    def cp(p: float) -> float:
        return client_ttfts[min(len(client_ttfts) - 1, int(p * (len(client_ttfts) - 1)))] if client_ttfts else float("nan")

    return {"policy": f"gpuyield:{policy}", "sent": len(reqs), "ok": ok, "logged_ok": len(done),
            "ttft_p50_ms": pct(0.5), "ttft_p99_ms": pct(0.99), "client_ttft_p50_ms": cp(0.5),
            "client_ttft_p99_ms": cp(0.99), "cache_hit_rate": hit, "requests_per_replica": per,
            "max_min_load": max(per.values()) / max(1, min(per.values())), "ttft_source": "gateway log"}


def run_any(router_policy: str, reqs: list[tuple[float, str, int]], speedup: float, tmp: Path,
            args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    router, _, policy = router_policy.partition(":")
    last: Exception | None = None
    for _attempt in range(2):  # a process that failed to start (e.g. a port taken meanwhile) gets one retry
        try:
            if router == "gpuyield":
                return run_policy(policy, reqs, speedup, tmp, args.gpu, args.timeout_s, scenario)
            return run_peer(router, policy, reqs, speedup, tmp, args.gpu, args.timeout_s, Path(args.peer_venv_dir))
        except (FileNotFoundError, TimeoutError, RuntimeError) as exc:
            last = exc
            if isinstance(exc, FileNotFoundError):
                break
    return {"policy": router_policy, "skipped": f"{type(last).__name__}: {last}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--speedup", type=float, default=1.0)
    ap.add_argument("--offset", type=int, default=3000, help="first trace request replayed (prefix reuse grows "
                    "along the trace: requests 3000-3299 would hit 36 %% of their prompt tokens with one infinite "
                    "cache, the first 300 only 5 %%)")
    ap.add_argument("--max-output", type=int, default=64)
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--hot-requests", type=int, default=600)
    ap.add_argument("--hot-rate", type=float, default=40.0, help="requests/s of the hot-prefix trace")
    ap.add_argument("--hot-output", type=int, default=128, help="output tokens per hot-trace request")
    ap.add_argument("--scenarios", default="mooncake,hot")
    ap.add_argument("--timeout-s", type=float, default=240.0)
    ap.add_argument("--policies", default="gpuyield:round_robin,gpuyield:prefix_affinity",
                    help="comma list of ROUTER:POLICY; peers: vllm-router:cache_aware, sglang-router:cache_aware")
    ap.add_argument("--peer-venv-dir", default="/tmp")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gy-route-"))
    results: dict[str, Any] = {"machine": "2 cores, 24 GiB, no GPU, Python 3.11", "date": time.strftime("%Y-%m-%d"),
                               "replicas": f"4 x engine-emulator {MODEL} on {args.gpu}", "scenarios": {}}
    scen = args.scenarios.split(",")
    if "mooncake" in scen:
        reqs = mooncake_prompts(args.requests, args.max_output, args.offset)
        results["scenarios"]["mooncake"] = [run_any(rp, reqs, args.speedup, tmp, args, "mooncake")
                                            for rp in args.policies.split(",")]
    if "hot" in scen:
        reqs = hot_prompts(args.hot_requests, rate_per_s=args.hot_rate, output_tokens=args.hot_output)
        results["scenarios"]["hot"] = [run_any(rp, reqs, 1.0, tmp, args, "hot") for rp in args.policies.split(",")]
    for name, rows in results["scenarios"].items():
        for r in rows:
            if "skipped" in r:
                print(f"{name:9s} {r['policy']:28s} skipped: {r['skipped']}")
                continue
            print(f"{name:9s} {r['policy']:28s} ok {r['logged_ok']}/{r['sent']}  TTFT p50 {r['ttft_p50_ms']:8.1f} ms  "
                  f"p99 {r['ttft_p99_ms']:8.1f} ms  hit rate {r['cache_hit_rate']:.3f}  per replica "
                  f"{list(r['requests_per_replica'].values())}  max/min {r['max_min_load']:.2f}"
                  + (f"  (client TTFT p50 {r['client_ttft_p50_ms']:.1f} p99 {r['client_ttft_p99_ms']:.1f})"
                     if "client_ttft_p50_ms" in r else "  (client TTFT)"), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
