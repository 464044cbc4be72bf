"""Real llama.cpp ``llama-server`` in router mode: on-demand load, LRU eviction, unload frees the process.

Marked ``engine``; skips at once unless ``.engines/bin/llama-server`` (``scripts/build_llama_server.sh``,
or ``$LLAMA_SERVER``) exists and a GGUF can be had: ``$GPUYIELD_TINY_GGUF``, or built here from the tiny Llama
with ``scripts/convert_tiny_gguf.py`` (needs the ``.venv-vllm`` python for torch; ~10-30 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[3]
LLAMA_SERVER = Path(os.environ.get("LLAMA_SERVER", str(ROOT / ".engines/bin/llama-server")))
BUILD_PYTHON = Path(os.environ.get("VLLM_VENV", str(ROOT / ".venv-vllm"))) / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tiny_gguf(request: pytest.FixtureRequest, tmp: Path) -> Path:
    given = os.environ.get("GPUYIELD_TINY_GGUF")
    if given:
        return Path(given)
    if not BUILD_PYTHON.exists() or not (ROOT / ".engines/llama.cpp/convert_hf_to_gguf.py").exists():
        pytest.skip("no GGUF: set GPUYIELD_TINY_GGUF or install .venv-vllm and build llama.cpp")
    hf = request.getfixturevalue("tiny_llama_dir")
    out = tmp / "tiny-llama.gguf"
    subprocess.run([str(BUILD_PYTHON), str(ROOT / "scripts/convert_tiny_gguf.py"), str(hf), str(out)],
                   check=True, capture_output=True, timeout=180)
    return out


@pytest.fixture(scope="module")
def llama_router(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    if not LLAMA_SERVER.exists():
        pytest.skip("no llama-server: run scripts/build_llama_server.sh")
    tmp = tmp_path_factory.mktemp("llama")
    gguf = _tiny_gguf(request, tmp)
    models = tmp / "models"
    models.mkdir()
    for name in ("tiny-a", "tiny-b"):
        shutil.copy(gguf, models / f"{name}.gguf")
    port = _free_port()
    env = {**os.environ, "MODELS_MAX": "1", "GPUYIELD_ENGINE_RUN_DIR": str(tmp / "run"),
           "LLAMA_SERVER": str(LLAMA_SERVER)}
    started = subprocess.run([str(ROOT / "scripts/start_llama_server.sh"), "--models-dir", str(models), str(port)],
                             env=env, capture_output=True, text=True, timeout=90)
    try:
        if started.returncode != 0:
            pytest.fail(f"start_llama_server.sh failed:\n{started.stdout}\n{started.stderr}")
        pid = int(next(line for line in started.stdout.splitlines() if line.startswith("PID="))[4:])
        yield {"url": f"http://127.0.0.1:{port}", "pid": pid}
    finally:
        subprocess.run([str(ROOT / "scripts/stop_engines.sh")], env=env, capture_output=True, timeout=60)


def statuses(url: str) -> dict[str, str]:
    data = httpx.get(url + "/models", timeout=10.0).json()["data"]
    return {m["id"]: m["status"]["value"] for m in data}


def children_rss_kib(pid: int) -> int:
    """Resident memory of the router's child processes (one per loaded model)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                status = (stat.parent / "status").read_text()
                total += int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return total


def wait_for(url: str, want: dict[str, str], timeout_s: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = statuses(url)
        if all(got.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def chat(url: str, model: str) -> dict:
    r = httpx.post(url + "/v1/chat/completions", timeout=60.0, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "ignore_eos": True})
    r.raise_for_status()
    return r.json()


def test_router_loads_on_demand_evicts_lru_and_unload_frees_the_model_process(llama_router: dict) -> None:
    url, pid = llama_router["url"], llama_router["pid"]
    assert statuses(url) == {"tiny-a": "unloaded", "tiny-b": "unloaded"}
    assert children_rss_kib(pid) == 0

    r = httpx.post(url + "/models/load", json={"model": "tiny-a"}, timeout=60.0)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert wait_for(url, {"tiny-a": "loaded"}) == {"tiny-a": "loaded", "tiny-b": "unloaded"}
    assert children_rss_kib(pid) > 10_000  # the model runs in a child process (tens of MB)

    # A request for an unloaded model loads it on demand; --models-max 1 evicts the least recently used.
    out = chat(url, "tiny-b")
    assert out["model"] == "tiny-b" and out["usage"]["completion_tokens"] == 4
    assert wait_for(url, {"tiny-a": "unloaded", "tiny-b": "loaded"}) == {"tiny-a": "unloaded", "tiny-b": "loaded"}

    r = httpx.post(url + "/models/unload", json={"model": "tiny-b"}, timeout=60.0)
    assert r.status_code == 200
    assert wait_for(url, {"tiny-b": "unloaded"}) == {"tiny-a": "unloaded", "tiny-b": "unloaded"}
    deadline = time.monotonic() + 10
    while children_rss_kib(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children_rss_kib(pid) == 0  # unloading really frees the model's memory


def test_router_rejects_unknown_models(llama_router: dict) -> None:
    url = llama_router["url"]
    r = httpx.post(url + "/models/unload", json={"model": "no-such-model"}, timeout=10.0)
    assert r.status_code == 400
    assert "not found" in r.json()["error"]["message"]
