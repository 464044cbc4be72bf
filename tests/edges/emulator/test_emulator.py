"""The engine emulator: timing from the engine model, prefix cache, KV limits, vLLM metrics, sleep/wake."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
from gateway_harness import MODEL, start_emulator  # noqa: E402

from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator  # noqa: E402
from gpuyield.errors import ConfigError  # noqa: E402


def _post(url: str, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json={"model": MODEL, **body}, timeout=30)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_timing_follows_step_model_and_batches() -> None:
    emu = start_emulator(fixed_step_ms=20.0)
    try:
        _post(emu.url, prompt="warm", max_tokens=1)
        t0 = time.perf_counter()
        r = _post(emu.url, prompt="hi", max_tokens=10, ignore_eos=True)
        alone = time.perf_counter() - t0
        assert r.json()["usage"]["completion_tokens"] == 10
        # 10 steps of 20 ms (prefill + first token, then 9 decodes); never faster, slower only by CPU load
        assert 0.19 <= alone < 2.0
        eng = emu.app.engine
        alone_engine_s = eng.stats.e2e_s[-1]  # arrival at the engine to last token
        # continuous batching: 8 concurrent requests each take about as long as one alone, not up to 8x
        with ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(lambda _i: _post(emu.url, prompt="hi", max_tokens=10, ignore_eos=True), range(8)))
        assert all(x.status_code == 200 for x in rs)
        assert max(eng.stats.e2e_s[-8:]) < 2 * alone_engine_s
    finally:
        emu.stop()


def test_prefix_cache_and_metrics() -> None:
    emu = start_emulator(fixed_step_ms=1.0)
    try:
        prompt = "shared system prompt " * 50
        a = _post(emu.url, prompt=prompt + "one", max_tokens=2, ignore_eos=True).json()
        b = _post(emu.url, prompt=prompt + "two", max_tokens=2, ignore_eos=True).json()
        assert a["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert b["usage"]["prompt_tokens_details"]["cached_tokens"] >= 240
        text = httpx.get(emu.url + "/metrics").text
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                     "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:prefix_cache_hits_total",
                     "vllm:prefix_cache_queries_total", "vllm:time_to_first_token_seconds_bucket",
                     "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
                     "vllm:request_queue_time_seconds_bucket", "vllm:num_preemptions_total"):
            assert name + "{" in text, name
        assert _metric(text, "vllm:generation_tokens_total") == 4
        assert _metric(text, "vllm:prefix_cache_hits_total") >= 240
        assert _metric(text, "vllm:e2e_request_latency_seconds_count") == 2
        from gpuyield.edges.gateway.backends import parse_load_metrics

        assert parse_load_metrics(text) == {"running": 0.0, "waiting": 0.0, "kv_usage": 0.0}
    finally:
        emu.stop()


def test_kv_limit_preempts_and_everything_finishes() -> None:
    emu = start_emulator(fixed_step_ms=10.0, num_kv_blocks=24, block_size_tokens=16)
    try:
        with ThreadPoolExecutor(6) as pool:
            rs = list(pool.map(lambda i: _post(emu.url, prompt=f"p{i} " + "x" * 200, max_tokens=60,
                                               ignore_eos=True), range(6)))
        assert [r.json()["usage"]["completion_tokens"] for r in rs] == [60] * 6
        text = httpx.get(emu.url + "/metrics").text
        assert _metric(text, "vllm:num_preemptions_total") > 0
        too_big = _post(emu.url, prompt="x" * 2000, max_tokens=10)
        assert too_big.status_code == 400 and "KV blocks" in too_big.json()["error"]["message"]
    finally:
        emu.stop()


def test_eos_is_deterministic_and_streaming_usage() -> None:
    emu = start_emulator(fixed_step_ms=1.0, mean_output_tokens=8)
    try:
        a = _post(emu.url, prompt="determinism", max_tokens=200).json()
        b = _post(emu.url, prompt="determinism", max_tokens=200).json()
        assert a["choices"][0]["text"] == b["choices"][0]["text"]
        assert a["choices"][0]["finish_reason"] == "stop" and a["usage"]["completion_tokens"] <= 16
        with httpx.stream("POST", emu.url + "/v1/chat/completions", timeout=30, json={
                "model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}) as r:
            lines = [x for x in r.iter_lines() if x.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and '"completion_tokens":3' in lines[-2]
        assert _post(emu.url, prompt="x", max_tokens=0).status_code == 400
        assert httpx.post(emu.url + "/v1/completions", json={"model": "other", "prompt": "x"}).status_code == 404
    finally:
        emu.stop()


def test_sleep_wake_holds_requests() -> None:
    emu = start_emulator(fixed_step_ms=1.0)
    try:
        assert httpx.post(emu.url + "/sleep?level=1").status_code == 200
        assert httpx.get(emu.url + "/is_sleeping").json() == {"is_sleeping": True}
        assert 'sleep_state="weights_offloaded"} 1' in httpx.get(emu.url + "/metrics").text
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(_post, emu.url, prompt="held", max_tokens=2, ignore_eos=True)
            time.sleep(0.3)
            assert not fut.done()
            assert httpx.post(emu.url + "/wake_up").status_code == 200
            assert fut.result().status_code == 200
        assert httpx.get(emu.url + "/is_sleeping").json() == {"is_sleeping": False}
        assert httpx.post(emu.url + "/sleep?level=7").status_code == 400
    finally:
        emu.stop()


def test_fleet_model_timing_and_bad_specs() -> None:
    pytest.importorskip("gpuyield.core.perf")
    emu = build_emulator(EmulatorSpec(model="llama-3.1-8b", gpu="h100-sxm", served_model_name=MODEL))
    assert emu.engine is not None and emu.engine.config.num_kv_blocks > 1000  # from the memory model
    assert "fleet model" in emu.settings.description
    with pytest.raises(ConfigError, match="--gpu"):
        build_emulator(EmulatorSpec(model="llama-3.1-8b"))
    with pytest.raises(ConfigError, match="--tp"):
        build_emulator(EmulatorSpec(model="m", fixed_step_ms=1, tp=0))
    with pytest.raises(ConfigError):
        build_emulator(EmulatorSpec(model="no-such-model-xyz", gpu="h100-sxm"))


def test_fleet_model_emulator_with_speculative_decoding() -> None:
    pytest.importorskip("gpuyield.core.perf")
    from gpuyield.core.perf import SpeculativeDecoding

    sd = SpeculativeDecoding("eagle", 3, 0.7)
    emu = build_emulator(EmulatorSpec(model="llama-3.1-8b", gpu="h100-sxm", served_model_name=MODEL, speculative=sd))
    plain = build_emulator(EmulatorSpec(model="llama-3.1-8b", gpu="h100-sxm", served_model_name=MODEL))
    assert emu.engine is not None and plain.engine is not None
    assert emu.engine.step_model.speculative == sd  # type: ignore[attr-defined]
    assert "3 draft token" in emu.settings.description
    # a decode step per token is shorter; the KV capacity is the plain model's
    assert emu.engine.step_model.step_time_s(0, 0.0, 8, 8000) < plain.engine.step_model.step_time_s(0, 0.0, 8, 8000)
    assert emu.engine.config.num_kv_blocks == plain.engine.config.num_kv_blocks
    with pytest.raises(ConfigError, match="fleet model"):
        build_emulator(EmulatorSpec(model="m", fixed_step_ms=5, speculative=sd))
    with pytest.raises(ConfigError, match="MTP"):
        build_emulator(EmulatorSpec(model="llama-3.1-8b", gpu="h100-sxm", speculative=SpeculativeDecoding("mtp", 1, 0.7)))


def test_fleet_model_emulator_times_steps_as_simulate_does() -> None:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import default_calibration
    from gpuyield.core.sim.deployment import parse_deployment
    from gpuyield.core.sim.simulate import build_cluster

    # an FP8 checkpoint runs at FP8 (in BF16 it would not fit on 8 x H200)
    r1 = build_emulator(EmulatorSpec(model="deepseek-ai/DeepSeek-R1", gpu="h200_sxm", tp=8))
    assert "fp8 weights" in r1.settings.description
    # Qwen3-32B on 4 x H100 (vLLM) has measured points: at --measured-at the replica steps as simulate's pool
    # at a workload of those mean lengths, and the description says how
    kw = {"model": "Qwen/Qwen3-32B", "gpu": "h100_sxm", "tp": 4}
    emu = build_emulator(EmulatorSpec(**kw, measured_at=(1024, 256)))  # type: ignore[arg-type]
    plain = build_emulator(EmulatorSpec(**kw))  # type: ignore[arg-type]
    assert "measured" in emu.settings.description and "bf16 weights" in plain.settings.description
    cat, cal = default_catalog(), default_calibration()
    dep = parse_deployment({"pools": [{"name": "q", "replicas": 1, "gpu": "h100_sxm", "model": "Qwen/Qwen3-32B",
                                       "tp": 4}]})  # fmt: skip
    cluster, _ = build_cluster(dep, cat, calibration=cal, measured_at=(1024, 256))
    sim_step = cluster.rts[0].setup.step_model
    assert emu.engine is not None and plain.engine is not None
    for args in ((0, 0.0, 16, 16 * 1200), (2048, 2048.0**2, 8, 8000), (0, 0.0, 1, 1100)):
        assert emu.engine.step_model.step_time_s(*args) == pytest.approx(sim_step.step_time_s(*args))
    assert emu.engine.step_model.step_time_s(0, 0.0, 16, 19200) != pytest.approx(
        plain.engine.step_model.step_time_s(0, 0.0, 16, 19200), rel=0.02)
    # an FP8 checkpoint steps as a pool of that checkpoint at FP8 (what plan writes)
    fp8 = build_emulator(EmulatorSpec(model="Qwen/Qwen3-32B-FP8", gpu="h100_sxm", tp=2))
    pool8 = parse_deployment({"pools": [{"name": "q", "replicas": 1, "gpu": "h100_sxm", "model": "Qwen/Qwen3-32B-FP8",
                                         "tp": 2, "weight_precision": "fp8"}]})  # fmt: skip
    step8 = build_cluster(pool8, cat, calibration=cal)[0].rts[0].setup.step_model
    assert fp8.engine is not None and "fp8 weights" in fp8.settings.description
    assert fp8.engine.step_model.step_time_s(0, 0.0, 32, 32000) == pytest.approx(step8.step_time_s(0, 0.0, 32, 32000))
    with pytest.raises(ConfigError, match="speculative"):
        from gpuyield.core.perf import SpeculativeDecoding

        build_emulator(EmulatorSpec(**kw, measured_at=(1024, 256), speculative=SpeculativeDecoding("ngram", 2, 0.5)))  # type: ignore[arg-type]
    # an unmeasured model at --measured-at: the step model alone, and the description says so
    llama = build_emulator(EmulatorSpec(model="llama-3.1-8b", gpu="h100-sxm", measured_at=(1024, 256)))
    assert "no measured point reaches it" in llama.settings.description
