"""simulate() with the real catalogue and performance model."""

from __future__ import annotations

import numpy as np
import pytest

from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.simulate import SloTarget, simulate
from gpuyield.core.workload.transforms import slice_index
from gpuyield.errors import ConfigError


def _dep(policy: str = "least_outstanding", **engine: object) -> object:
    return parse_deployment({
        "pools": [{"name": "h", "replicas": 2, "gpu": "h100_sxm", "model": "meta-llama/Llama-3.1-8B",
                   "engine": {"family": "vllm", **engine}}],
        "router": {"policy": policy},
    })  # fmt: skip


@pytest.fixture(scope="module")
def small():  # type: ignore[no-untyped-def]
    from gpuyield.core.catalog import default_catalog
    from gpuyield.edges.io.traces import load_workload

    return slice_index(load_workload("builtin:azure-conv"), 0, 150), default_catalog()


def test_analytic_runs_match_step_by_step_with_the_real_perf_model(small) -> None:  # type: ignore[no-untyped-def]
    w, cat = small
    # round_robin: routing must not depend on snapshot KV use, which is coarser during analytic runs
    fast = simulate(_dep("round_robin"), w, cat, rate_scale=20.0)
    slow = simulate(_dep("round_robin", max_decode_run_steps=1), w, cat, rate_scale=20.0)
    for col in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(getattr(fast.records, col), getattr(slow.records, col), rtol=1e-9, atol=1e-9)
    assert fast.summary["preemptions"] == slow.summary["preemptions"]
    assert fast.summary["sim_events"] < slow.summary["sim_events"] / 2


def test_slo_and_cost_fields(small) -> None:  # type: ignore[no-untyped-def]
    w, cat = small
    s = simulate(_dep(), w, cat, rate_scale=20.0, slo=SloTarget(ttft_p99_ms=1e9, tpot_p99_ms=1e-3)).summary
    assert s["completed"] == 150 and s["goodput_req_s"] == 0.0 and s["slo_attainment"] == 0.0
    assert s["slo_met_at_p99"] is False
    s2 = simulate(_dep(), w, cat, rate_scale=20.0, slo=SloTarget(ttft_p99_ms=1e9)).summary
    assert s2["slo_attainment"] == 1.0 and s2["goodput_req_s"] == pytest.approx(s2["throughput_req_s"])
    # h100_sxm has a catalogue price: the cost fields must be filled (this used to be skipped when they were not)
    assert s2["gpu_count"] == 2 and s2["cost_usd_per_hour"] is not None and s2["cost_usd_per_hour"] > 0
    per_tok = s2["cost_usd_per_hour"] / (s2["throughput_output_tok_s"] * 3600) * 1e6
    assert s2["usd_per_1m_output_tokens"] == pytest.approx(per_tok)
    assert s2["prices"] and all(p["as_of"] for p in s2["prices"] if p["usd_per_gpu_hour"] is not None)


def test_bad_arguments(small) -> None:  # type: ignore[no-untyped-def]
    w, cat = small
    with pytest.raises(ConfigError, match="rate-scale"):
        simulate(_dep(), w, cat, rate_scale=0.0)
    with pytest.raises(ConfigError, match="duration"):
        simulate(_dep(), w, cat, duration_s=-1.0)
    with pytest.raises(ConfigError, match="tpp"):
        parse_deployment({"pools": [{"name": "a", "replicas": 1, "gpu": "h100", "model": "x", "tpp": 2}]})
    with pytest.raises(ConfigError, match="prefill"):
        parse_deployment({"pools": [{"name": "a", "role": "prefill", "replicas": 1, "gpu": "h100", "model": "x"}]})


def test_every_first_token_carries_the_engine_familys_first_token_overhead(small) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from gpuyield.core.perf.calibration import default_calibration

    w, cat = small
    cal = default_calibration()

    def with_per_layer(s: float):  # type: ignore[no-untyped-def]
        ec = dataclasses.replace(cal.engines["vllm"], ttft_overhead_s=0.0, ttft_per_layer_s=s)
        return dataclasses.replace(cal, engines={**cal.engines, "vllm": ec}, corrections=None)

    none = simulate(_dep(), w, cat, rate_scale=20.0, calibration=with_per_layer(0.0))
    some = simulate(_dep(), w, cat, rate_scale=20.0, calibration=with_per_layer(0.001))
    # Llama-3.1-8B has 32 layers: 32 ms on every first token and every end, the schedule itself unchanged
    for col in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(getattr(some.records, col) - getattr(none.records, col), 0.032, atol=1e-9)
    assert some.summary["ttft_ms"]["mean"] == pytest.approx(none.summary["ttft_ms"]["mean"] + 32.0)
    assert some.summary["tpot_ms"]["mean"] == pytest.approx(none.summary["tpot_ms"]["mean"])
    # the summary's window reaches the last (shifted) finish
    last = float(np.nanmax(some.records.finish_s)) - float(some.records.arrival_s.min())
    assert some.summary["duration_s"] >= last - 1e-9
