"""Closed-loop driver: the benchmark protocol (all clients at t=0, three requests each, every request measured),
the optional staggered start and warm-up window, seeded determinism."""

from __future__ import annotations

import pytest
from sim_helpers import LinearStepModel

from gpuyield.core.sim import EngineConfig, run_closed_loop
from gpuyield.core.sim.closed_loop import MAX_REQUESTS, REQUESTS_PER_CLIENT
from gpuyield.errors import ConfigError


def _run(spread: float, seed: int = 0, exclude_warmup: bool = True):
    cfg = EngineConfig(max_num_seqs=256, max_num_batched_tokens=8192)
    return run_closed_loop(LinearStepModel(), cfg, isl=1000, osl=200, concurrency=32, seed=seed,
                           num_gpu_blocks=100_000, start_spread=spread, exclude_warmup=exclude_warmup)  # fmt: skip


def test_default_is_the_benchmark_protocol() -> None:
    cfg = EngineConfig(max_num_seqs=256, max_num_batched_tokens=8192)
    res = run_closed_loop(LinearStepModel(), cfg, isl=1000, osl=200, concurrency=32, num_gpu_blocks=100_000)
    assert res.num_requests == 96 and res.num_measured == 96  # three per client, every one measured
    assert REQUESTS_PER_CLIENT == 3 and MAX_REQUESTS == 4096  # sim/data/closed_loop.yaml
    assert res == _run(0.0, exclude_warmup=False)  # all clients start at t = 0
    # the first wave is a burst: 32 prompts of 1000 tokens packed 8 per 8192-token step, so its mean TTFT
    # is ~2.5 prefill steps; the later waves arrive partly spread and queue less, so the mean over all
    # requests lies between the steady state and the burst
    steady = _run(0.0, exclude_warmup=True)
    assert steady.ttft_ms.mean < res.ttft_ms.mean < 3 * steady.ttft_ms.mean
    big = run_closed_loop(LinearStepModel(), cfg, isl=100, osl=20, concurrency=2000, num_gpu_blocks=100_000)
    assert big.num_requests == 4096  # bounded run time (3 x 2000 capped)
    few = run_closed_loop(LinearStepModel(), cfg, isl=10, osl=2, concurrency=5000, num_gpu_blocks=100_000)
    assert few.num_requests == 5000  # never fewer than the clients: each sends at least one


def test_staggered_start_breaks_lock_step_waves() -> None:
    lock, stag = _run(0.0), _run(1.0)
    # in lock-step, every prompt of a wave queues behind the others: far higher mean TTFT
    assert stag.ttft_ms.mean < 0.6 * lock.ttft_ms.mean
    assert stag.ttft_ms.p90 < lock.ttft_ms.p90
    assert stag.num_measured == stag.num_requests - 32  # the first 32 (warm-up) are not measured


def test_seeded_stagger_same_seed_same_result_other_seed_differs() -> None:
    assert _run(1.0, seed=3) == _run(1.0, seed=3)
    assert _run(1.0, seed=3).ttft_ms != _run(1.0, seed=4).ttft_ms


def test_start_spread_is_validated() -> None:
    with pytest.raises(ConfigError, match="start_spread"):
        _run(-1.0)


def test_the_protocol_file_is_checked() -> None:
    from gpuyield.core.sim.closed_loop import _protocol

    assert _protocol()["requests_per_client"] == REQUESTS_PER_CLIENT
    ok = "requests_per_client: 3\nmax_requests: 4096\nsource: fitted\n"
    assert _protocol(ok)["max_requests"] == 4096
    for bad in (ok.replace("3", "0"), ok.replace("3", "2.5"), ok.replace("4096", "true"), "requests_per_client: 3\n",
                ok.replace("fitted", "''"), "- 1\n"):  # fmt: skip
        with pytest.raises(ConfigError, match="test.yaml"):
            _protocol(bad, where="test.yaml")
