"""Live gateway wake overhead: time to first token of a request for a *sleeping* model through the gateway
(which holds it, wakes the model through the engine API and then forwards it), compared with a client that
wakes the engine itself (``POST /wake_up``) and then sends the request directly.

Setup (all on 127.0.0.1, each server its own process): one multi-model ``engine-emulator`` hosting ``managed``
(in the gateway's residency group, ``idle_sleep_s`` puts it back to sleep between runs) and ``direct`` (not
managed; put to sleep by this script), both with the same configured wake time (``--wake-ms``) and a fixed
1 ms time to first token. Reported: median and p90 of ``TTFT - wake_ms`` for both paths, and the gateway's
overhead = the difference of the medians. Goal (issue 8): <= 10 ms on top of the engine's own wake time.

    python benchmarks/gateway_wake_overhead.py [--runs 20] [--wake-ms 200] [--json out.json]

Bounded: ``--runs`` x (wake + idle_sleep_s + a few ms); ~15 s with the defaults.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout_s}s")


def post(port: int, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", path, body=body, headers=headers or {})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def ttft_s(port: int, model: str, auth: bool) -> float:
    """Time from sending a streaming chat request to its first SSE data line."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                       "stream": True}).encode()
    headers = {"content-type": "application/json"}
    if auth:
        headers["authorization"] = f"Bearer {KEY}"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body=body, headers=headers)
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    while True:
        line = r.readline()
        if not line:
            raise RuntimeError("stream ended before the first token")
        if line.startswith(b"data: {"):
            t = time.perf_counter() - t0
            break
    r.read()
    c.close()
    return t


def sleeping(port: int, model: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/is_sleeping?model={model}", timeout=5) as r:
        return bool(json.loads(r.read())["is_sleeping"])


def gateway_state(port: int, model: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'gpuyield_model_residency_state{{group="g0",model="{model}"}}'):
                return float(line.rsplit(" ", 1)[1])
    raise RuntimeError("no residency state in the gateway's metrics")


def wait_for(cond: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise TimeoutError("state not reached")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--wake-ms", type=float, default=200.0)
    ap.add_argument("--json", dest="json_out", default=None)
    a = ap.parse_args()
    if not 1 <= a.runs <= 500:
        ap.error("--runs must be in 1..500")
    import hashlib

    import yaml

    emu_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="gy-wake-bench-"))
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gpuyield.edges.cli.main", "engine-emulator", "--models", "managed,direct",
             "--fixed-delay-ms", "1", "--wake-ms", str(a.wake_ms), "--sleep-ms", "0", "--port", str(emu_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{emu_port}/health")
        cfg = {
            "listen": {"host": "127.0.0.1", "port": gw_port},
            "backends": [{"name": "r0", "url": f"http://127.0.0.1:{emu_port}", "kind": "vllm",
                          "models": ["managed"]}],
            "tenants": [{"name": "t", "api_key_sha256": [hashlib.sha256(KEY.encode()).hexdigest()]}],
            "residency_groups": [{"name": "g0", "backends": ["r0"], "memory_gb": 80, "host_memory_gb": 200,
                                  "models": [{"model": "managed", "weight_gb": 16, "kv_budget_gb": 8,
                                              "wake_l1_s": a.wake_ms / 1e3}],
                                  "idle_sleep_s": 0.2, "wake_timeout_s": 30}],
        }
        (tmp / "gw.yaml").write_text(yaml.safe_dump(cfg))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gpuyield.edges.cli.main", "serve", "--config", str(tmp / "gw.yaml")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        ttft_s(emu_port, "direct", False)  # warm both paths' connections and code
        wake_s = a.wake_ms / 1e3
        gw: list[float] = []
        direct: list[float] = []
        for _ in range(a.runs):
            wait_for(lambda: sleeping(emu_port, "managed") and gateway_state(gw_port, "managed") <= 2)
            gw.append(ttft_s(gw_port, "managed", True) - wake_s)
            post(emu_port, "/sleep?level=1&model=direct")
            t0 = time.perf_counter()
            post(emu_port, "/wake_up?model=direct")
            direct.append(time.perf_counter() - t0 + ttft_s(emu_port, "direct", False) - wake_s)
        res = {
            "runs": a.runs, "wake_ms": a.wake_ms,
            "gateway_ttft_minus_wake_ms": {"p50": 1e3 * statistics.median(gw),
                                           "p90": 1e3 * sorted(gw)[int(0.9 * (len(gw) - 1))]},
            "direct_ttft_minus_wake_ms": {"p50": 1e3 * statistics.median(direct),
                                          "p90": 1e3 * sorted(direct)[int(0.9 * (len(direct) - 1))]},
        }
        res["gateway_wake_overhead_ms_p50"] = (res["gateway_ttft_minus_wake_ms"]["p50"]  # type: ignore[index]
                                               - res["direct_ttft_minus_wake_ms"]["p50"])  # type: ignore[index]
        print(json.dumps(res, indent=2))
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(res, indent=2) + "\n")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    sys.exit(main())
