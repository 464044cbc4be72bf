"""Closed-loop driver for estimate/validate: known answers on a linear model, the real perf model, errors."""

from __future__ import annotations

import pytest
from sim_helpers import LinearStepModel

from gpuyield.core.sim import EngineConfig, run_closed_loop
from gpuyield.errors import ConfigError, DoesNotFitError


def test_single_client_matches_step_times() -> None:
    m = LinearStepModel()
    res = run_closed_loop(m, EngineConfig(), isl=500, osl=11, concurrency=1, num_requests=4, num_gpu_blocks=1000)
    prefill = m.step_time_s(500, 500 * 250.0, 0, 0)
    decode = [m.step_time_s(0, 0.0, 1, 500 + j + 1) for j in range(10)]
    assert res.ttft_ms.p50 == pytest.approx(prefill * 1e3)
    assert res.tpot_ms.mean == pytest.approx(sum(decode) / 10 * 1e3)
    assert res.e2e_ms.mean == pytest.approx((prefill + sum(decode)) * 1e3)
    assert res.output_tok_s == pytest.approx(11 / (prefill + sum(decode)), rel=1e-6)
    assert res.num_preemptions == 0


def test_throughput_grows_with_concurrency_and_ttft_with_load() -> None:
    cfg = EngineConfig(max_num_seqs=256, max_num_batched_tokens=8192)
    prev = None
    for c in (1, 8, 64):
        r = run_closed_loop(LinearStepModel(), cfg, isl=1000, osl=200, concurrency=c, num_gpu_blocks=100_000)
        if prev is not None:
            assert r.output_tok_s > prev.output_tok_s
            assert r.tpot_ms.mean > prev.tpot_ms.mean
        prev = r


def test_offline_queues_everything_at_time_zero() -> None:
    r = run_closed_loop(LinearStepModel(), EngineConfig(max_num_seqs=16), isl=200, osl=50, concurrency=64,
                        offline=True, num_gpu_blocks=100_000)  # fmt: skip
    assert r.num_requests == 64 and r.num_measured == 64
    assert r.ttft_ms.p99 > 3 * r.ttft_ms.p50 / 2  # later waves wait for seats (max_num_seqs=16)
    assert r.output_tok_s == pytest.approx(64 * 50 / r.duration_s)


def test_kv_pressure_preempts() -> None:
    r = run_closed_loop(LinearStepModel(), EngineConfig(max_num_seqs=64), isl=1000, osl=500, concurrency=64,
                        num_gpu_blocks=2000)  # fmt: skip
    assert r.num_preemptions > 0


def test_with_the_real_performance_model() -> None:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel

    cat = default_catalog()
    perf = PerfModel.build(cat.model("meta-llama/Llama-3.1-8B"), cat.gpu("h100_sxm"))
    r = run_closed_loop(perf, EngineConfig.for_family("vllm"), isl=2000, osl=500, concurrency=32)
    assert r.num_requests == 96 and r.num_measured == 96  # three requests per client (fitted), all measured
    assert 0 < r.ttft_ms.p50 < 5_000 and 0 < r.tpot_ms.p50 < 200 and r.output_tok_s > 0
    with pytest.raises(DoesNotFitError):
        run_closed_loop(perf, EngineConfig.for_family("vllm"), isl=10_000_000, osl=10, concurrency=1)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        run_closed_loop(LinearStepModel(), EngineConfig(), isl=0, osl=1, concurrency=1, num_gpu_blocks=10)
    with pytest.raises(ConfigError):
        run_closed_loop(LinearStepModel(), EngineConfig(), isl=1, osl=1, concurrency=0, num_gpu_blocks=10)
    with pytest.raises(ConfigError, match="memory"):
        run_closed_loop(LinearStepModel(), EngineConfig(), isl=1, osl=1, concurrency=1)


def test_the_bounded_cache_of_sliding_layers_limits_the_batch() -> None:
    """Gemma 4 26B-A4B on one H100: each sequence also holds its 25 sliding layers' 1,024-token window (about 10 k
    tokens of the growing cache), so about 90 sequences fit, not 500: 256 clients queue."""
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel

    cat = default_catalog()
    pm = PerfModel.build(cat.model("google/gemma-4-26B-A4B"), cat.gpu("h100_sxm"), tp=1)
    cfg = EngineConfig(max_num_seqs=512, max_model_len=4096)
    assert pm.memory(cfg.gpu_memory_utilization).fixed_blocks_per_seq(cfg.block_size) == 640
    held = run_closed_loop(pm, cfg, 2048, 128, 256, num_requests=600)
    ignored = run_closed_loop(pm, cfg, 2048, 128, 256, num_requests=600, fixed_blocks_per_seq=0)
    assert held.ttft_ms.mean > 3 * ignored.ttft_ms.mean


def test_short_requests_fill_only_part_of_their_windows() -> None:
    """Requests of 384 tokens hold 384 of each 1,024-token window, so all 256 clients run at once; charged whole
    windows, they would queue. The analytic admission holds the same number as the engine model."""
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel
    from gpuyield.core.perf.closed_loop import estimate_closed_loop

    cat = default_catalog()
    pm = PerfModel.build(cat.model("google/gemma-4-26B-A4B"), cat.gpu("h100_sxm"), tp=1)
    cfg = EngineConfig(max_num_seqs=512, max_model_len=4096)
    mem = pm.memory(cfg.gpu_memory_utilization)
    by_length = run_closed_loop(pm, cfg, 256, 128, 256, num_requests=600)
    whole = run_closed_loop(pm, cfg, 256, 128, 256, num_requests=600,
                            fixed_blocks_per_seq=mem.fixed_blocks_per_seq(cfg.block_size))  # fmt: skip
    assert whole.ttft_ms.mean > 5 * by_length.ttft_ms.mean
    # the analytic solver sizes the windows at the final length too: 256 / 1,024 admits fewer than 256 / 128
    long_out = estimate_closed_loop(pm, 256, 1024, 1000, max_num_seqs=1000)
    assert long_out.running_seqs == mem.max_concurrent_seqs(256 + 512, bounded_tokens=256 + 1024)
    assert long_out.running_seqs < mem.max_concurrent_seqs(256 + 512)


def test_the_benchmark_engine_holds_its_requests_not_the_models_whole_context() -> None:
    # Qwen3-32B at bf16 on one H100 leaves ~7.8 GB of KV: a 2 k-token benchmark fits, the model's 40,960-token
    # context does not. The closed loop runs with max_model_len = isl + osl, as `estimate`'s memory report and
    # the analytic solver do (it refused before, naming a max_model_len no `estimate` option sets); a config
    # that sets its own max_model_len keeps vLLM's refusal.
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel

    cat = default_catalog()
    perf = PerfModel.build(cat.model("Qwen/Qwen3-32B"), cat.gpu("h100_sxm"), tp=1)
    assert not perf.memory(0.9).fits and perf.memory(0.9, max_model_len=1024 + 128).fits
    res = run_closed_loop(perf, EngineConfig.for_family("vllm"), isl=1024, osl=128, concurrency=4)
    assert res.num_requests == 12 and res.tpot_ms.mean > 0
    with pytest.raises(DoesNotFitError, match="max_model_len=40960"):
        run_closed_loop(perf, EngineConfig.for_family("vllm", max_model_len=40960), isl=1024, osl=128, concurrency=4)
