"""Closed-loop driver: staggered client starts (no lock-step waves), seeded determinism, warm-up window."""

from __future__ import annotations

import pytest
from sim_helpers import LinearStepModel

from gpuyield.core.sim import EngineConfig, run_closed_loop
from gpuyield.errors import ConfigError


def _run(spread: float, seed: int = 0):
    cfg = EngineConfig(max_num_seqs=256, max_num_batched_tokens=8192)
    return run_closed_loop(LinearStepModel(), cfg, isl=1000, osl=200, concurrency=32, seed=seed,
                           num_gpu_blocks=100_000, start_spread=spread)  # fmt: skip


def test_staggered_start_breaks_lock_step_waves() -> None:
    lock, stag = _run(0.0), _run(1.0)
    # in lock-step, every prompt of a wave queues behind the others: far higher mean TTFT
    assert stag.ttft_ms.mean < 0.6 * lock.ttft_ms.mean
    assert stag.ttft_ms.p90 < lock.ttft_ms.p90
    assert stag.num_measured == stag.num_requests - 32  # the first 32 (warm-up) are not measured


def test_same_seed_same_result_other_seed_differs() -> None:
    assert _run(1.0, seed=3) == _run(1.0, seed=3)
    assert _run(1.0, seed=3).ttft_ms != _run(1.0, seed=4).ttft_ms


def test_start_spread_is_validated() -> None:
    with pytest.raises(ConfigError, match="start_spread"):
        _run(-1.0)
