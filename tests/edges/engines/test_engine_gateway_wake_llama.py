"""Real engine: the gateway loads and evicts models of a llama.cpp ``llama-server`` in router mode.

Marked ``engine``; skips at once unless ``.engines/bin/llama-server`` (``scripts/build_llama_server.sh``, or
``$LLAMA_SERVER``) and a tiny GGUF (``$GPUYIELD_TINY_GGUF``, or converted from the tiny Llama) are available.
The gateway's residency group fits one model at a time: a request for the other one makes the gateway
unload the first (``POST /models/unload``) and load the second (``POST /models/load``, polled until loaded).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[3]
LLAMA_SERVER = Path(os.environ.get("LLAMA_SERVER", str(ROOT / ".engines/bin/llama-server")))
BUILD_PYTHON = Path(os.environ.get("VLLM_VENV", str(ROOT / ".venv-vllm"))) / "bin" / "python"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_router_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not LLAMA_SERVER.exists():
        pytest.skip("no llama-server: run scripts/build_llama_server.sh")
    tmp = tmp_path_factory.mktemp("llama-wake")
    gguf_env = os.environ.get("GPUYIELD_TINY_GGUF")
    if gguf_env:
        gguf = Path(gguf_env)
    else:
        if not BUILD_PYTHON.exists() or not (ROOT / ".engines/llama.cpp/convert_hf_to_gguf.py").exists():
            pytest.skip("no GGUF: set GPUYIELD_TINY_GGUF or install .venv-vllm and build llama.cpp")
        gguf = tmp / "tiny-llama.gguf"
        subprocess.run([str(BUILD_PYTHON), str(ROOT / "scripts/convert_tiny_gguf.py"),
                        str(request.getfixturevalue("tiny_llama_dir")), str(gguf)],
                       check=True, capture_output=True, timeout=180)
    models = tmp / "models"
    models.mkdir()
    for name in ("tiny-a", "tiny-b"):
        shutil.copy(gguf, models / f"{name}.gguf")
    port = _free_port()
    env = {**os.environ, "MODELS_MAX": "2", "GPUYIELD_ENGINE_RUN_DIR": str(tmp / "run"),
           "LLAMA_SERVER": str(LLAMA_SERVER)}
    started = subprocess.run([str(ROOT / "scripts/start_llama_server.sh"), "--models-dir", str(models), str(port)],
                             env=env, capture_output=True, text=True, timeout=90)
    try:
        if started.returncode != 0:
            pytest.fail(f"start_llama_server.sh failed:\n{started.stdout}\n{started.stderr}")
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(ROOT / "scripts/stop_engines.sh")], env=env, capture_output=True, timeout=60)


def _statuses(url: str) -> dict[str, str]:
    return {m["id"]: m["status"]["value"] for m in httpx.get(url + "/models", timeout=10.0).json()["data"]}


def test_gateway_loads_and_evicts_llama_server_models(llama_router_url: str) -> None:
    openai = pytest.importorskip("openai")
    from gateway_harness import KEY_A, gateway_config, start_gateway

    url = llama_router_url
    cfg = gateway_config([url])
    cfg["backends"][0].update(kind="llamacpp", models=["tiny-a", "tiny-b"])
    cfg["limits"]["request_timeout_s"] = 60
    cfg["residency_groups"] = [{"name": "cpu", "backends": ["r0"], "memory_gb": 1.0, "prewarmed": False,
                                "models": [{"model": "tiny-a", "weight_gb": 0.6}, {"model": "tiny-b", "weight_gb": 0.6}],
                                "wake_timeout_s": 60}]
    srv, gw = start_gateway(cfg)
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY_A, max_retries=0, timeout=60)

        def ask(model: str) -> str:
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=4)
            return str(r.model)

        ask("tiny-a")
        assert _statuses(url) == {"tiny-a": "loaded", "tiny-b": "unloaded"}
        ask("tiny-b")  # only one fits the group: the gateway unloads tiny-a first, then loads tiny-b
        deadline = time.monotonic() + 20
        while _statuses(url) != {"tiny-a": "unloaded", "tiny-b": "loaded"}:
            assert time.monotonic() < deadline, _statuses(url)
            time.sleep(0.1)
        text = httpx.get(srv.url + "/metrics", timeout=10.0).text
        assert 'gpuyield_model_wakes_total{group="cpu",model="tiny-b"} 1.0' in text
        assert 'gpuyield_model_sleeps_total{group="cpu",model="tiny-a",reason="evict"} 1.0' in text
    finally:
        srv.stop()
