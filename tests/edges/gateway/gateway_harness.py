"""Test harness for gateway tests: emulators and gateways on random 127.0.0.1 ports, in threads or subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("uvicorn")

from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator  # noqa: E402
from gpuyield.edges.gateway.app import Gateway  # noqa: E402
from gpuyield.edges.gateway.config import hash_key, load_config  # noqa: E402

KEY_A, KEY_B, KEY_LIMITED = "sk-test-a", "sk-test-b", "sk-test-limited"
MODEL = "emu-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout_s}s")


class ServerThread:
    """uvicorn serving ``app`` in a daemon thread (its own event loop)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="uvloop", http="httptools",
                             log_level="error", access_log=False, lifespan="on")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    def call(self, fn: Any) -> None:
        """Run ``fn()`` on the server's event loop thread."""
        done = threading.Event()

        def wrapper() -> None:
            fn()
            done.set()

        self.loop.call_soon_threadsafe(wrapper)
        done.wait(5)

    @property
    def loop(self) -> Any:
        for s in self.server.servers:
            return s.get_loop()
        raise RuntimeError("no server loop")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_emulator(fixed_step_ms: float | None = 2.0, fixed_delay_ms: float | None = None, **kw: Any) -> ServerThread:
    spec = EmulatorSpec(model=MODEL, fixed_step_ms=fixed_step_ms if fixed_delay_ms is None else None,
                        fixed_delay_ms=fixed_delay_ms, **kw)
    srv = ServerThread(build_emulator(spec))
    wait_http(srv.url + "/health")
    return srv


def spawn_emulator(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "gpuyield.edges.cli.main", "engine-emulator", "--model", MODEL,
           "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", 30)
    except TimeoutError:
        proc.kill()
        raise
    return proc, url


def spawn_gateway(cfg: dict[str, Any], tmp_path: Any) -> tuple[subprocess.Popen[bytes], str]:
    """``gpuyield serve`` as a subprocess (its own GIL, like production)."""
    import yaml

    port = free_port()
    cfg = {**cfg, "listen": {"host": "127.0.0.1", "port": port}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "gpuyield.edges.cli.main", "serve", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", 30)
    except TimeoutError:
        proc.kill()
        raise
    return proc, url


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def gateway_config(urls: list[str], tmp_path: Any = None, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 1},
        "backends": [{"name": f"r{i}", "url": u, "kind": "vllm", "models": [MODEL], "max_inflight": 64}
                     for i, u in enumerate(urls)],
        "tenants": [
            {"name": "a", "api_key_sha256": [hash_key(KEY_A)]},
            {"name": "b", "api_key_sha256": [hash_key(KEY_B)], "allowed_models": ["other-model"]},
            {"name": "limited", "api_key_sha256": [hash_key(KEY_LIMITED)], "tokens_per_min": 200,
             "max_queued": 1, "max_concurrency": 1},
        ],
        "router": {"policy": "round_robin", "max_retries": 2},
        "health": {"interval_s": 0.2, "timeout_s": 0.5, "failure_threshold": 2, "open_s": 30},
        "limits": {"max_body_bytes": 64 * 1024, "connect_timeout_s": 0.5, "request_timeout_s": 30},
    }
    if tmp_path is not None:
        cfg["request_log"] = {"path": str(tmp_path / "requests.jsonl")}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def start_gateway(cfg: dict[str, Any]) -> tuple[ServerThread, Gateway]:
    gw = Gateway(load_config(cfg))
    srv = ServerThread(gw)
    wait_http(srv.url + "/healthz")
    return srv, gw


def assert_openai_error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"} and isinstance(err["message"], str) and err["message"]
    return err


def wait_idle(gw: Gateway, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        adm = gw.admission
        assert adm is not None
        if (gw.num_active == 0 and adm.num_inflight == 0 and adm.num_queued == 0
                and all(r.outstanding == 0 and r.outstanding_prefill_tokens == 0 for r in gw.replicas.values())):
            return
        time.sleep(0.02)
    adm = gw.admission
    raise AssertionError(
        f"leak: active={gw.num_active} inflight={adm.num_inflight if adm else '?'} "
        f"queued={adm.num_queued if adm else '?'} "
        f"outstanding={[(r.name, r.outstanding, r.outstanding_prefill_tokens) for r in gw.replicas.values()]}")
