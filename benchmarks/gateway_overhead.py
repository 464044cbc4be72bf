"""Gateway overhead and throughput vs going direct, with peer routers in the same run and harness.

Starts two fixed-delay engine emulators (``gpuyield engine-emulator --fixed-delay-ms``), then for each router
(direct = the client round-robins over the replicas itself; gpuyield serve; vllm-router; sglang-router;
LiteLLM proxy) measures, with one asyncio/aiohttp load generator process:

* **overhead**: 64 concurrent streaming clients (``stream: true``, 16 tokens, ``ignore_eos``), end-to-end
  latency percentiles; added latency = router percentile − direct percentile (same percentile);
* **throughput**: non-streamed requests/s at 128 concurrent clients (1 output token) against the same
  backends (whose fixed delay is ``--delay-ms``).

Peers are looked up as executables in ``--peer-venv-dir`` (``/tmp/peer-vllm-router/bin/vllm-router``,
``/tmp/peer-sglang-router/bin/python -m sglang_router.launch_router``, ``/tmp/peer-litellm/bin/litellm``);
install each into its own venv (see /work/shared/recipes/README.md). Missing peers are skipped and reported.
Everything binds 127.0.0.1; every load phase is bounded in time and stops by itself.

``--baseline-src DIR`` adds a router ``gpuyield-baseline``: ``gpuyield serve`` run from another checkout's
``DIR/src`` (e.g. ``git archive <commit> src | tar -x -C DIR``), for a same-run before/after comparison.
Besides each router's CPU per request, the load generator's and the emulators' CPU per request are recorded
(they share the 2 cores with the router), with the load average before and after each router's run.

Usage::

    python benchmarks/gateway_overhead.py [--routers direct,gpuyield,vllm-router,sglang-router,litellm]
        [--duration-s 8] [--delay-ms 5] [--itl-ms 2] [--baseline-src DIR] [--json out.json]
    python benchmarks/gateway_overhead.py --asgi-micro     # raw ASGI vs Starlette per-request cost
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "emu-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def proc_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(rest[1]), []).append(int(d))
        stats[int(d)] = (int(rest[11]) + int(rest[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def _self_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ---- load generator -------------------------------------------------------------------------------------
async def _load(urls: list[str], concurrency: int, duration_s: float, stream: bool, max_tokens: int,
                headers: dict[str, str]) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s
    conn = aiohttp.TCPConnector(limit=0)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "benchmark prompt"}],
                       "max_tokens": max_tokens, "stream": stream, "ignore_eos": True}).encode()
    hdrs = {"content-type": "application/json", **headers}
    async with aiohttp.ClientSession(connector=conn) as s:
        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop_at:
                url = urls[i % len(urls)]
                i += 1
                t0 = time.perf_counter()
                try:
                    async with s.post(url, data=body, headers=hdrs) as r:
                        if stream:
                            async for _chunk in r.content.iter_any():
                                pass
                        else:
                            await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1
                    await asyncio.sleep(0.01)

        t_start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - t_start
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * (len(lat) - 1)))] * 1e3 if lat else float("nan")

    return {"requests": len(lat), "errors": errors, "req_per_s": len(lat) / wall,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99)}


def run_load(urls: list[str], concurrency: int, duration_s: float, stream: bool, max_tokens: int,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(_load(urls, concurrency, duration_s, stream, max_tokens, headers or {}))
    except ImportError:
        return asyncio.run(_load(urls, concurrency, duration_s, stream, max_tokens, headers or {}))


# ---- routers --------------------------------------------------------------------------------------------
def start_emulators(n: int, delay_ms: float, itl_ms: float) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    procs, urls = [], []
    for _ in range(n):
        port = free_port()
        p = subprocess.Popen([sys.executable, "-m", "gpuyield.edges.cli.main", "engine-emulator", "--model", MODEL,
                              "--fixed-delay-ms", str(delay_ms), "--fixed-itl-ms", str(itl_ms), "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        urls.append(f"http://127.0.0.1:{port}")
    for p, u in zip(procs, urls, strict=True):
        wait_up(u + "/health", 60, p)
    return procs, urls


def start_router(name: str, backends: list[str], tmp: Path, venvs: Path,
                 policy: str = "round_robin",
                 baseline_src: str | None = None) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers: dict[str, str] = {}
    env = {**os.environ, "LITELLM_TELEMETRY": "False", "DO_NOT_TRACK": "1"}
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    if name == "gpuyield-baseline":
        if not baseline_src or not (Path(baseline_src) / "src" / "gpuyield").is_dir():
            raise FileNotFoundError(f"--baseline-src {baseline_src!r} has no src/gpuyield")
        env["PYTHONPATH"] = str(Path(baseline_src) / "src")
    if name in ("gpuyield", "gpuyield-baseline"):
        import yaml

        cfg = {"listen": {"host": "127.0.0.1", "port": port},
               "backends": [{"name": f"r{i}", "url": u, "kind": "vllm", "models": [MODEL], "max_inflight": 512}
                            for i, u in enumerate(backends)],
               "auth": {"allow_anonymous": True},
               "router": {"policy": policy},
               "request_log": {"path": str(tmp / "gpuyield-requests.jsonl")}}
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "gpuyield.edges.cli.main", "serve", "--config", str(tmp / f"{name}.yaml")]
        health = url + "/readyz"
    elif name == "vllm-router":
        exe = venvs / "peer-vllm-router" / "bin" / "vllm-router"
        cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *backends,
               "--policy", policy, "--log-level", "error"]
        health = url + "/health"
    elif name == "sglang-router":
        exe = venvs / "peer-sglang-router" / "bin" / "python"
        cmd = [str(exe), "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
               "--worker-urls", *backends, "--policy", policy, "--log-level", "error"]
        health = url + "/health"
    elif name == "litellm":
        import yaml

        exe = venvs / "peer-litellm" / "bin" / "litellm"
        cfg = {"model_list": [{"model_name": MODEL, "litellm_params": {"model": f"openai/{MODEL}", "api_base": u + "/v1",
                                                                        "api_key": "none"}} for u in backends],
               "router_settings": {"routing_strategy": "simple-shuffle"},
               "general_settings": {"master_key": "sk-bench"},
               "litellm_settings": {"drop_params": True, "telemetry": False}}
        (tmp / "litellm.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [str(exe), "--config", str(tmp / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(port)]
        headers = {"authorization": "Bearer sk-bench"}
        health = url + "/health/liveliness"
    else:
        raise ValueError(name)
    if not Path(cmd[0]).exists():
        raise FileNotFoundError(cmd[0])
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    wait_up(health, 120, proc)
    return proc, url, headers


def asgi_micro(n: int = 20000) -> dict[str, float]:
    """Per-request CPU of a raw ASGI JSON endpoint vs the same endpoint in Starlette (in-process, no sockets)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gpuyield.edges.gateway.asgi import loads, read_body, send_json

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/v1/completions":
            body = loads(await read_body(receive, 1 << 20, scope))
            await send_json(send, 200, {"ok": body["model"]})

    async def handler(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"ok": body["model"]})

    star = Starlette(routes=[Route("/v1/completions", handler, methods=["POST"])])
    payload = json.dumps({"model": MODEL}).encode()

    async def drive(app: Any) -> float:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 2)}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(_msg: Any) -> None:
            return None

        t0 = time.process_time()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return (time.process_time() - t0) / n * 1e6

    out = {}
    for name, app in (("raw_asgi_us", raw), ("starlette_us", star), ("raw_asgi_us_2", raw), ("starlette_us_2", star)):
        out[name] = asyncio.run(drive(app))
    return {"raw_asgi_us_per_request": min(out["raw_asgi_us"], out["raw_asgi_us_2"]),
            "starlette_us_per_request": min(out["starlette_us"], out["starlette_us_2"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routers", default="direct,gpuyield,vllm-router,sglang-router,litellm")
    ap.add_argument("--duration-s", type=float, default=8.0)
    ap.add_argument("--delay-ms", type=float, default=5.0, help="emulator time to first token")
    ap.add_argument("--itl-ms", type=float, default=10.0, help="emulator time between streamed tokens")
    ap.add_argument("--stream-concurrency", type=int, default=64)
    ap.add_argument("--throughput-concurrency", type=int, default=128)
    ap.add_argument("--peer-venv-dir", default="/tmp")
    ap.add_argument("--baseline-src", default=None,
                    help="a checkout whose src/gpuyield runs as router 'gpuyield-baseline'")
    ap.add_argument("--json", default=None)
    ap.add_argument("--asgi-micro", action="store_true")
    args = ap.parse_args()
    if args.asgi_micro:
        print(json.dumps(asgi_micro(), indent=2))
        return
    tmp = Path(tempfile.mkdtemp(prefix="gy-bench-"))
    emus, backends = start_emulators(2, args.delay_ms, args.itl_ms)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except OSError:
        commit = ""
    results: dict[str, Any] = {"machine": "2 cores, 24 GiB, no GPU, Python 3.11", "date": time.strftime("%Y-%m-%d"),
                               "time_utc": time.strftime("%H:%M", time.gmtime()), "commit": commit,
                               "baseline_src": args.baseline_src,
                               "load_average_at_start": os.getloadavg()[0], "delay_ms": args.delay_ms,
                               "itl_ms": args.itl_ms, "routers": {}}
    try:
        for name in args.routers.split(","):
            proc = None
            try:
                if name == "direct":
                    urls, headers = [b + "/v1/chat/completions" for b in backends], {}
                else:
                    proc, url, headers = start_router(name, backends, tmp, Path(args.peer_venv_dir),
                                                      baseline_src=args.baseline_src)
                    urls = [url + "/v1/chat/completions"]
                run_load(urls, 8, 1.0, True, 16, headers)  # warm-up
                load0 = os.getloadavg()[0]
                c0 = proc_tree_cpu_s(proc.pid) if proc is not None else 0.0
                e0, g0 = sum(proc_tree_cpu_s(p.pid) for p in emus), _self_cpu_s()
                streams = run_load(urls, args.stream_concurrency, args.duration_s, True, 16, headers)
                c1 = proc_tree_cpu_s(proc.pid) if proc is not None else 0.0
                e1, g1 = sum(proc_tree_cpu_s(p.pid) for p in emus), _self_cpu_s()
                unary = run_load(urls, args.throughput_concurrency, args.duration_s, False, 1, headers)
                c2 = proc_tree_cpu_s(proc.pid) if proc is not None else 0.0
                e2, g2 = sum(proc_tree_cpu_s(p.pid) for p in emus), _self_cpu_s()
                for res, (ca, cb, ea, eb, ga, gb) in ((streams, (c0, c1, e0, e1, g0, g1)),
                                                      (unary, (c1, c2, e1, e2, g1, g2))):
                    n = max(1, res["requests"])
                    if proc is not None:  # the router's own CPU per request: comparable even on a busy machine
                        res["router_cpu_us_per_request"] = (cb - ca) / n * 1e6
                    res["emulators_cpu_us_per_request"] = (eb - ea) / n * 1e6
                    res["loadgen_cpu_us_per_request"] = (gb - ga) / n * 1e6
                results["routers"][name] = {"stream64": streams, "unary128": unary,
                                            "load_average_before": load0, "load_average_after": os.getloadavg()[0]}
                print(f"{name:14s} stream@{args.stream_concurrency}: p50 {streams['p50_ms']:7.2f} ms  "
                      f"p99 {streams['p99_ms']:7.2f} ms  ({streams['requests']} ok, {streams['errors']} err)   "
                      f"unary@{args.throughput_concurrency}: {unary['req_per_s']:7.0f} req/s  "
                      f"p50 {unary['p50_ms']:7.2f} ms ({unary['errors']} err)   router CPU/request: stream "
                      f"{streams.get('router_cpu_us_per_request', 0):.0f} us, unary "
                      f"{unary.get('router_cpu_us_per_request', 0):.0f} us   load "
                      f"{load0:.1f}->{results['routers'][name]['load_average_after']:.1f}", flush=True)
            except (FileNotFoundError, TimeoutError, RuntimeError) as exc:
                results["routers"][name] = {"skipped": f"{type(exc).__name__}: {exc}"}
                print(f"{name:14s} skipped: {exc}", flush=True)
            finally:
                if proc is not None:
                    stop(proc)
    finally:
        for p in emus:
            stop(p)
    d = results["routers"].get("direct", {}).get("stream64")
    if d:
        for name, r in results["routers"].items():
            s = r.get("stream64")
            if s and name != "direct":
                r["added_p50_ms"] = s["p50_ms"] - d["p50_ms"]
                r["added_p99_ms"] = s["p99_ms"] - d["p99_ms"]
                print(f"{name:14s} added latency at {args.stream_concurrency} streams: "
                      f"p50 {r['added_p50_ms']:+.2f} ms  p99 {r['added_p99_ms']:+.2f} ms")
    results["load_average_at_end"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
