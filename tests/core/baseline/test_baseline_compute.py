"""The baseline arithmetic on small hand-built fleets (every expected number is worked out in a comment)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.baseline import (
    Achievable,
    BaselineInputs,
    Deployment,
    EngineTelemetry,
    GpuTelemetry,
    Price,
    TenantTelemetry,
    TimeSeries,
    WorkloadMix,
    compute_baseline,
    default_achievable,
)

T = [0.0, 60.0, 120.0, 180.0, 240.0]  # 5 scrapes, 4 one-minute intervals, window 240 s
PRICE = Price(3.6, "test", "2026-01-01")  # $3.60 / GPU-hour = $0.001 / GPU-second


def _gpu(gid: str, pod: str | None, power: float, util: float) -> GpuTelemetry:
    return GpuTelemetry(
        gpu_id=gid, host="n1", index=gid[-1], device_name="NVIDIA H100 80GB HBM3", pod=pod,
        gauges={"power_w": TimeSeries.of(T, [power] * 5), "gpu_util_pct": TimeSeries.of(T, [util] * 5),
                "sm_active": TimeSeries.of(T, [util / 200] * 5)},
    )


def _fleet() -> BaselineInputs:
    # Engine output counter 0, 600, 600, 1800, 3000: traffic in intervals 1, 3, 4; interval 2 idle (60 s).
    eng = EngineTelemetry(
        engine_id="e0", kind="vllm", model_name="m", pod="p0",
        counters={"output_tokens": [TimeSeries.of(T, [0, 600, 600, 1800, 3000])],
                  "prompt_tokens": [TimeSeries.of(T, [0, 1000, 1000, 3000, 5000])],
                  "cached_prompt_tokens": [TimeSeries.of(T, [0, 0, 0, 0, 0])],
                  "requests": [TimeSeries.of(T, [0, 2, 2, 6, 10])]},
        gauges={"running": [TimeSeries.of(T, [2, 0, 3, 3, 0])]},
    )
    tenant = TenantTelemetry("acme", "m", {"output_tokens": [TimeSeries.of(T, [0, 300, 300, 900, 1500])]})
    return BaselineInputs(
        gpus=(_gpu("n1/gpu0", "p0", 300.0, 80.0), _gpu("n1/gpu1", None, 70.0, 0.0)),
        engines=(eng,),
        deployments=(Deployment("dep", "m", ("e0",), ("n1/gpu0",), "pod label"),),
        tenants=(tenant,),
        prices={"n1/gpu0": PRICE, "n1/gpu1": PRICE},
    )


def _capacity(mix: WorkloadMix) -> Achievable:
    # The observed mix the computation hands over: ISL 5000/10 = 500, OSL 3000/10 = 300, 10 req / 240 s.
    assert mix.mean_input_tokens == 500 and mix.mean_output_tokens == 300
    assert mix.request_rate_per_s == pytest.approx(10 / 240)
    assert mix.num_gpus == 1 and mix.device_name == "NVIDIA H100 80GB HBM3"
    return Achievable(output_tokens_per_gpu_hour=150_000.0, method="test capacity", concurrency=32)


def test_fleet_figures_by_hand() -> None:
    r = compute_baseline(_fleet(), _capacity)
    f = r.fleet
    # 2 GPUs × 240 s = 480 GPU-s = 0.13333 GPU-h; × $3.60 = $0.48
    assert f.gpu_hours == pytest.approx(480 / 3600)
    assert f.usd == pytest.approx(0.48)
    assert f.output_tokens == 3000 and f.input_tokens == 5000 and f.cached_input_tokens == 0
    # $0.48 / 0.003 M tokens = $160 per 1M output tokens
    assert f.usd_per_1m_output_tokens == pytest.approx(160.0)
    # idle: gpu1 has no engine (240 s), gpu0's engine had no traffic in (60, 120] (60 s) → 300 s
    assert f.idle_gpu_hours == pytest.approx(300 / 3600)
    assert f.idle_usd == pytest.approx(0.30)
    assert f.idle_gpus == 1
    # idle $/hour: gpu1 fully idle ($3.60/h) + gpu0 idle 1/4 of the time ($0.90/h)
    assert f.idle_usd_per_hour == pytest.approx(4.5)
    # energy from integrated power: (300 + 70) W × 240 s = 88,800 J = 0.024667 kWh
    assert f.energy_kwh == pytest.approx(88_800 / 3.6e6)
    assert f.mean_gpu_util == pytest.approx(0.40)  # (0.8 + 0.0) / 2, equal GPU-hours
    assert f.mean_sm_active == pytest.approx(0.20)
    # achievable: 150,000 tok/GPU-h × 0.13333 GPU-h (both GPUs: gpu1 charged at gpu0's capacity) = 20,000
    assert f.achievable_output_tokens == pytest.approx(20_000)
    assert f.productivity == pytest.approx(3000 / 20_000)
    # the idle timeline (48 bins over the 240 s window) adds up to the same idle cost
    assert len(r.idle_timeline) == 48
    assert sum(p.idle_usd or 0 for p in r.idle_timeline) == pytest.approx(0.30)
    (fleet_gap,) = r.gap
    assert fleet_gap.cause == "over-provisioning" and fleet_gap.lost_fraction == pytest.approx(0.5)


def test_per_model_and_gap_by_hand() -> None:
    r = compute_baseline(_fleet(), _capacity)
    (m,) = r.per_model
    assert m.basis == "window" and m.gpu_hours == pytest.approx(240 / 3600)
    assert m.usd == pytest.approx(0.24)
    assert m.uncached_input_tokens == 5000
    # achievable 150,000 × 240/3600 = 10,000 → productivity 0.30
    assert m.achievable_output_tokens == pytest.approx(10_000)
    assert m.productivity == pytest.approx(0.30)
    assert m.idle_gpu_hours == pytest.approx(60 / 3600)
    # mean running: step-held (2×60 + 0×60 + 3×60 + 3×60) / 240 = 2.0
    assert m.mean_running == pytest.approx(2.0)
    causes = {g.cause: g for g in m.gap}
    assert causes["idle"].lost_fraction == pytest.approx(0.25)
    # busy capacity 10,000 × 0.75 = 7,500; delivered 3,000 → 4,500 / 10,000 = 0.45 lost to small batches
    assert causes["small batches"].lost_fraction == pytest.approx(0.45)
    assert "no prefix caching" in causes  # 5,000 prompt tokens, none cached
    assert causes["idle"].command and causes["idle"].command.startswith("gpuyield plan")
    g0, g1 = r.per_gpu
    assert g0.idle_reason == "engine without traffic" and g1.idle_reason == "no engine"
    assert g0.output_tokens == 3000 and g0.productivity == pytest.approx(0.30)
    (t,) = r.per_tenant
    assert t.output_tokens == 1500 and t.output_share == 1.0 and t.usd == pytest.approx(0.24)


def test_productivity_not_measured_without_a_model() -> None:
    r = compute_baseline(_fleet(), lambda mix: "no model for this GPU")
    assert r.fleet.productivity is None and r.per_model[0].productivity is None
    assert any("no model for this GPU" in n for n in r.notes)
    assert any("fleet productivity not measured" in n for n in r.notes)


def test_default_achievable_says_why_it_cannot_answer() -> None:
    mix = WorkloadMix("m", None, 1, 1, 60.0, 10.0, 10.0, None, None, 0.01, None, None)
    assert isinstance(default_achievable(mix), str)


def test_missing_price_and_energy_are_not_guessed() -> None:
    inputs = _fleet()
    inputs = BaselineInputs(
        gpus=tuple(GpuTelemetry(g.gpu_id, host=g.host, index=g.index, gauges={"gpu_util_pct": g.gauges["gpu_util_pct"]})
                   for g in inputs.gpus),
        engines=inputs.engines, deployments=inputs.deployments, prices={},
    )
    r = compute_baseline(inputs, lambda mix: Achievable(150_000.0, "test"))
    assert r.fleet.usd is None and r.fleet.idle_usd is None and r.fleet.energy_kwh is None
    assert r.fleet.usd_per_1m_output_tokens is None
    assert any("no price" in n for n in r.notes) and any("energy not measured" in n for n in r.notes)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=50), min_size=2, max_size=12),
       st.lists(st.floats(min_value=1, max_value=120), min_size=11, max_size=11))
def test_idle_and_cost_invariants(increments: list[int], gaps: list[float]) -> None:
    # Any traffic pattern: idle time within [0, window], $ = GPU-hours × price, delivered tokens = counter sum.
    ts = [0.0]
    for g in gaps[: len(increments) - 1]:
        ts.append(ts[-1] + g)
    values = [float(sum(increments[: i + 1])) for i in range(len(ts))]
    eng = EngineTelemetry("e", "vllm", "m", counters={"output_tokens": [TimeSeries.of(ts, values)]})
    gpu = GpuTelemetry("g", gauges={"power_w": TimeSeries.of(ts, [100.0] * len(ts))})
    r = compute_baseline(BaselineInputs((gpu,), (eng,), (Deployment("d", "m", ("e",), ("g",), "map file"),),
                                        prices={"g": PRICE}), lambda mix: "n/a")
    window_h = (ts[-1] - ts[0]) / 3600
    assert r.fleet.gpu_hours == pytest.approx(window_h)
    assert r.fleet.usd == pytest.approx(window_h * 3.6)
    assert r.fleet.idle_gpu_hours is not None and -1e-12 <= r.fleet.idle_gpu_hours <= window_h + 1e-12
    busy_s = sum(ts[i + 1] - ts[i] for i in range(len(ts) - 1) if values[i + 1] > values[i])
    assert r.fleet.idle_gpu_hours == pytest.approx(window_h - busy_s / 3600, abs=1e-12)
    assert r.fleet.output_tokens == values[-1] - values[0]


def _mix(model: str, engine: str | None, tpot_s: float = 0.030, gpus: int = 2, device: str = "NVIDIA H100 80GB HBM3"
         ) -> WorkloadMix:
    return WorkloadMix(model, device, gpus, 1, 600.0, 1024.0, 128.0, None, None, tpot_s, None, None, engine_kind=engine)


def test_achievable_is_what_estimate_reports_for_a_measured_deployment() -> None:
    from gpuyield.core.baseline import perf_model_achievable

    # vLLM Qwen3-32B on 2 x H100 (TP2) has measured points in the shipped calibration: the capacity at the
    # observed TPOT is the corrected closed loop, not the step model's alone
    mix = _mix("Qwen/Qwen3-32B", "vllm")
    corrected, plain = perf_model_achievable()(mix), perf_model_achievable(corrections=False)(mix)
    assert isinstance(corrected, Achievable) and isinstance(plain, Achievable)
    assert "measured vllm points of this model, GPU and precision correct it" in corrected.method
    assert "measured points" not in plain.method
    assert corrected.output_tokens_per_gpu_hour != pytest.approx(plain.output_tokens_per_gpu_hour, rel=0.01)
    assert default_achievable(mix) == corrected


def test_achievable_uses_the_engines_family_and_the_checkpoints_precision() -> None:
    from gpuyield.core.baseline import perf_model_achievable

    fn = perf_model_achievable(corrections=False)
    vllm, sglang = fn(_mix("Qwen/Qwen3-32B", "vllm")), fn(_mix("Qwen/Qwen3-32B", "sglang"))
    assert isinstance(vllm, Achievable) and isinstance(sglang, Achievable)
    assert "TP2, vllm, bf16 weights" in vllm.method and "TP2, sglang, bf16 weights" in sglang.method
    assert vllm.output_tokens_per_gpu_hour != pytest.approx(sglang.output_tokens_per_gpu_hour, rel=1e-3)
    # llama.cpp has no engine constants of its own: vLLM's, and the method says so
    llama = fn(_mix("Qwen/Qwen3-32B", "llamacpp"))
    assert isinstance(llama, Achievable) and "vllm constants (none for llamacpp)" in llama.method
    assert llama.output_tokens_per_gpu_hour == pytest.approx(vllm.output_tokens_per_gpu_hour)
    mixed = fn(_mix("Qwen/Qwen3-32B", "mixed"))
    assert isinstance(mixed, Achievable) and "vllm constants (engines of several kinds)" in mixed.method
    # an FP8 checkpoint is run (and its capacity modelled) at FP8 (in BF16 it would not fit on 8 x H200)
    fp8 = fn(_mix("deepseek-ai/DeepSeek-R1", "vllm", tpot_s=0.05, gpus=8, device="NVIDIA H200"))
    assert isinstance(fp8, Achievable) and "TP8, vllm, fp8 weights" in fp8.method


def test_more_clients_never_decode_faster_in_the_achievable_ladder() -> None:
    from gpuyield.core.baseline import perf_model_achievable

    # AIConfigurator's gpt-oss-120b vLLM rows on 2 x H100 at 512 clients ran about 100 sequences at a time
    # (TTFT 24-460 s of queueing, TPOT below the 64-client rows'): interpolated towards them, the corrected TPOT
    # falls from ~16 ms at 128 clients to ~7 ms at 192-512. At a 13 ms target the ladder must not jump there.
    mix = WorkloadMix("openai/gpt-oss-120b", "NVIDIA H100 80GB HBM3", 2, 1, 600.0, 1024.0, 128.0, None, None, 0.013,
                      None, None, engine_kind="vllm")  # fmt: skip
    got = perf_model_achievable()(mix)
    assert isinstance(got, Achievable) and got.concurrency is not None and got.concurrency <= 64
