"""Measured step scales: a deployment's measured points adjust the step times the simulator and planner use."""

from __future__ import annotations

import math

import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import PerfModel, SpeculativeDecoding, default_calibration
from gpuyield.core.perf.measured_steps import MeasuredStepScales
from gpuyield.core.perf.validation import METRICS, MeasurementRow, correct_row
from gpuyield.core.sim.closed_loop import estimate_with_engine_model
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.measured import measured_step_scales, measured_step_scales_cached
from gpuyield.core.sim.simulate import simulate
from gpuyield.core.workload import Request
from gpuyield.errors import ConfigError

CAT = default_catalog()
CAL = default_calibration()
QWEN = "Qwen/Qwen3-32B"  # 90+ measured vLLM points on H100 TP4 in the shipped calibration


def _qwen(engine: str = "vllm") -> PerfModel:
    return PerfModel.build(CAT.model(QWEN), CAL.accelerator(CAT, "h100_sxm"), tp=4, engine=engine, calibration=CAL)


def _scales(pm: PerfModel, engine: str = "vllm", model: str = QWEN) -> MeasuredStepScales | None:
    return measured_step_scales(pm, model_id=model, gpu_id="h100_sxm", engine=engine, isl=1024, osl=256,
                                calibration=CAL, model_of=CAT.model, gpu_of=lambda g: CAL.accelerator(CAT, g))  # fmt: skip


def test_multipliers_interpolate_in_log_space_and_hold_at_the_ends() -> None:
    s = MeasuredStepScales((1, 4, 16), (1.0, 1.0, 1.0), (1.0, 2.0, 4.0), 1000, 200, 3.0, 10, True)
    assert s.at(0) == (1.0, 1.0) and s.at(1) == (1.0, 1.0)
    assert s.at(2)[1] == pytest.approx(math.sqrt(2.0))  # halfway between 1 and 4 in log concurrency
    assert s.at(8)[1] == pytest.approx(2.0 * math.sqrt(2.0))
    assert s.at(16) == (1.0, 4.0) and s.at(1000) == (1.0, 4.0)
    assert MeasuredStepScales.from_dict(s.to_dict()) == s
    assert "prefill ×1.00, decode ×1.00–4.00" in s.describe()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((), (), ()), "one value per point"),
        (((1, 2), (1.0,), (1.0, 1.0)), "one value per point"),
        (((2, 1), (1.0, 1.0), (1.0, 1.0)), "ascending"),
        (((0, 1), (1.0, 1.0), (1.0, 1.0)), "ascending"),
        (((1,), (0.0,), (1.0,)), "not a positive"),
        (((1,), (1.0,), (math.nan,)), "not a positive"),
    ],
)
def test_bad_scales_are_refused(args: tuple[tuple[float, ...], ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MeasuredStepScales(*args, 1, 1, 0.0, 0, False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="measured step scales"):
        MeasuredStepScales.from_dict({"concurrency": [1]})


def test_a_step_splits_into_its_decode_and_prefill_parts() -> None:
    pm = _qwen()
    s = MeasuredStepScales((1, 64), (0.5, 0.5), (2.0, 3.0), 1024, 256, 1.0, 1, True)
    sp = pm.with_measured(s)
    md = s.at(8)[1]
    assert sp.step_time_s(0, 0.0, 8, 8000) == pytest.approx(md * pm.step_time_s(0, 0.0, 8, 8000))
    # a step that only prefills: its fixed costs (one sequence's step at no context) keep the decode multiplier
    one, pre = pm.step_time_s(0, 0.0, 1, 0), pm.step_time_s(2048, 2048 * 1024.0, 0, 0)
    assert sp.step_time_s(2048, 2048 * 1024.0, 0, 0) == pytest.approx(2.0 * one + 0.5 * (pre - one), rel=0.02)
    # ... so the first decoding sequence joining a prefill step adds little, under either multiplier
    assert 0 <= sp.step_time_s(64, 64 * 32.0, 1, 100) - sp.step_time_s(64, 64 * 32.0, 0, 0) < 0.1 * one
    full, dec = pm.step_time_s(512, 512 * 600.0, 8, 8000), pm.step_time_s(0, 0.0, 8, 8000)
    assert sp.step_time_s(512, 512 * 600.0, 8, 8000) == pytest.approx(md * dec + 0.5 * (full - dec))
    # the breakdown adds up to the step, and the step stays affine in the decode context
    assert sp.step_breakdown(512, 512 * 600.0, 8, 8000).total_s == pytest.approx(sp.step_time_s(512, 512 * 600.0, 8, 8000))
    a, b, c = (sp.step_time_s(0, 0.0, 8, x) for x in (1000, 5000, 9000))
    assert b - a == pytest.approx(c - b)
    assert any(n.startswith("step times adjusted to") for n in sp.notes)
    off = sp.with_measured(None)
    assert off.step_time_s(512, 512 * 600.0, 8, 8000) == pm.step_time_s(512, 512 * 600.0, 8, 8000)
    assert not any(n.startswith("step times adjusted to") for n in off.notes)


def _corrected(pm: PerfModel, c: int) -> tuple[float, float]:
    row = MeasurementRow(index=0, gpu="h100_sxm", num_gpus=4, model=QWEN, engine="vllm", precision="bf16",
                         layout="agg tp4 pp1 adp1 ep1", tp=4, isl=1024, osl=256, concurrency=c, num_requests=None,
                         measured=dict.fromkeys(METRICS), source="test")  # fmt: skip
    eng = estimate_with_engine_model(pm, 1024, 256, c)
    out, corr = correct_row(eng, row, CAT.model, lambda g: CAL.accelerator(CAT, g), CAL, method="sim")
    assert corr is not None
    return out.ttft_ms, out.tpot_ms


def test_the_scaled_engine_model_reproduces_what_estimate_reports_from_measured_points() -> None:
    pm = _qwen()
    s = _scales(pm)
    assert s is not None and s.same_deployment and s.points > 10
    sp = pm.with_measured(s)
    ttft1, tpot1 = _corrected(pm, 1)
    got, base = estimate_with_engine_model(sp, 1024, 256, 1), estimate_with_engine_model(pm, 1024, 256, 1)
    assert got.tpot_ms == pytest.approx(tpot1, rel=0.03)
    if 0.5 < s.prefill[0] < 2.0:  # the single-client TTFT is met unless the prefill multiplier is at its bounds
        # (solved on the analytic solver, whose TTFT responds to prefill time a little unlike the engine model's)
        assert got.ttft_ms == pytest.approx(ttft1, rel=0.05)
    else:  # here: the fixed costs (weight reads, first-token overhead) leave prefill too little to cut
        assert abs(got.ttft_ms - ttft1) < 0.5 * abs(base.ttft_ms - ttft1)
    for c in (16, 64):  # TPOT at every concurrency (the decode multiplier is per batch size)
        _t, tpot = _corrected(pm, c)
        base = estimate_with_engine_model(pm, 1024, 256, c).tpot_ms
        assert abs(tpot / base - 1) > 0.05  # the measured points do move it here
        assert estimate_with_engine_model(sp, 1024, 256, c).tpot_ms == pytest.approx(tpot, rel=0.05)


def test_no_measured_point_no_adjustment() -> None:
    llama = PerfModel.build(CAT.model("meta-llama/Llama-3.1-8B"), CAT.gpu("h100_sxm"), tp=1, calibration=CAL)
    assert _scales(llama, model="meta-llama/Llama-3.1-8B") is None  # an architecture never measured
    spec = _qwen().with_speculative(SpeculativeDecoding("ngram", 2, 0.5))
    assert _scales(spec) is None  # measured rows record no speculative decoding
    assert measured_step_scales(_qwen(), model_id=QWEN, gpu_id="h100_sxm", engine="vllm", isl=1024, osl=256,
                                calibration=None, model_of=CAT.model, gpu_of=CAT.gpu) is None  # fmt: skip


def test_the_cache_answers_with_the_same_numbers() -> None:
    kw = dict(model_id=QWEN, gpu_id="h100_sxm", engine="vllm", isl=1024, osl=256, calibration=CAL, catalog=CAT)
    a = measured_step_scales_cached(_qwen(), **kw)  # type: ignore[arg-type]
    b = measured_step_scales_cached(_qwen(), **kw)  # type: ignore[arg-type]
    assert a is b and a == _scales(_qwen())


def _requests(n: int = 120) -> list[Request]:
    return [Request(i, i * 0.05, 1024, 256) for i in range(n)]


def test_simulate_times_a_measured_deployment_with_its_scales() -> None:
    dep = parse_deployment({"pools": [{"name": "q", "replicas": 1, "gpu": "h100_sxm", "model": QWEN, "tp": 4}]})
    on = simulate(dep, _requests(), CAT, calibration=CAL)
    off = simulate(dep, _requests(), CAT, calibration=CAL, measured=False)
    sc = on.summary["pools"][0]["measured_step_scales"]
    assert sc is not None and off.summary["pools"][0]["measured_step_scales"] is None
    assert (sc["isl"], sc["osl"]) == (1024, 256)  # the workload's means
    # the decode multiplier at the batch the simulation ran (Little's law: request rate x time in the system)
    running = on.summary["throughput_req_s"] * on.summary["e2e_ms"]["mean"] / 1e3
    assert 20 < running < 256
    want = MeasuredStepScales.from_dict(sc).at(round(running))[1]
    ratio = on.summary["tpot_ms"]["p50"] / off.summary["tpot_ms"]["p50"]
    assert abs(want - 1) > 0.2 and ratio == pytest.approx(want, rel=0.1)
    # an architecture without measured points simulates exactly as before
    llama = parse_deployment({"pools": [{"name": "l", "replicas": 1, "gpu": "h100_sxm",
                                         "model": "meta-llama/Llama-3.1-8B"}]})  # fmt: skip
    a = simulate(llama, _requests(40), CAT, calibration=CAL)
    b = simulate(llama, _requests(40), CAT, calibration=CAL, measured=False)
    assert a.summary["pools"][0]["measured_step_scales"] is None
    assert a.summary["ttft_ms"] == b.summary["ttft_ms"] and a.summary["tpot_ms"] == b.summary["tpot_ms"]


@pytest.mark.parametrize(("engine", "tp"), [("sglang", 4), ("vllm", 8), ("vllm", 4)])
def test_a_bigger_batch_never_steps_faster(engine: str, tp: int) -> None:
    pm = PerfModel.build(CAT.model(QWEN), CAL.accelerator(CAT, "h100_sxm"), tp=tp, engine=engine, calibration=CAL)
    s = _scales(pm, engine)
    assert s is not None
    sp = pm.with_measured(s)
    times = [sp.step_time_s(0, 0.0, d, d * 1152) for d in range(1, 257)]
    assert all(b >= a * (1 - 1e-9) for a, b in zip(times, times[1:], strict=False))
    if engine == "sglang":  # one client is out of the points' reach: no cliff to 1 there
        assert s.decode[0] == pytest.approx(s.decode[1], rel=0.2) and s.decode[0] < 0.97


def test_an_unmeasured_model_costs_no_engine_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpuyield.core.sim.closed_loop as cl

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("engine model run for a model no measured point reaches")

    monkeypatch.setattr(cl, "estimate_with_engine_model", boom)
    llama = PerfModel.build(CAT.model("meta-llama/Llama-3.1-8B"), CAT.gpu("h100_sxm"), tp=1, calibration=CAL)
    assert _scales(llama, model="meta-llama/Llama-3.1-8B") is None


def test_each_replica_is_adjusted_at_the_lengths_of_the_requests_routed_to_it() -> None:
    from gpuyield.core.sim.measured import WorkloadLengths, routed_points

    lengths = WorkloadLengths.of([100, 300, 2000, 50], [10, 30, 500, 5], [0, 0, 1, 2], ("a", "b", None))
    assert lengths.mean() == (612, 136) and lengths.mean(["a"]) == (200, 20) and lengths.mean(["zz"]) is None
    assert WorkloadLengths.of([], [], [], ()).mean() is None
    kinds = [("p", "org/M", ("a", "b"), "mixed"), ("q", "org/N", (), "mixed")]
    # a replica serving two names gets both, whatever their order; unnamed requests go to the default model;
    # an alias reaches the model it resolves to; a replica no request reaches takes the whole workload's means
    got = routed_points(lengths, kinds, None, lambda n: {"m-alias": "org/M"}.get(n))
    assert got == {"p": lengths.mean(["a", "b", None]), "q": (612, 136)}
    assert routed_points(lengths, kinds[::-1], "org/M", None)["p"] == got["p"]
    alias = WorkloadLengths.of([1000, 10], [100, 1], [0, 1], ("m-alias", "other"))
    assert routed_points(alias, kinds, None, lambda n: {"m-alias": "org/M"}.get(n))["p"] == (1000, 100)
    # a name only a decode pool lists is rejected by the cluster, and counts for nobody
    pd = [("pre", "org/M", ("a",), "prefill"), ("dec", "org/M", ("a", "b"), "decode")]
    got_pd = routed_points(lengths, pd, "org/M", None)
    assert got_pd["pre"] == got_pd["dec"] == lengths.mean(["a", None])
    # one pool serving two names of one measured model: timed at all its requests, in either name order
    reqs = [Request(i, 0.05 * i, 512 if i % 2 else 8000, 64 if i % 2 else 1000, model="chat" if i % 2 else "rag")
            for i in range(40)]  # fmt: skip
    for names in (["chat", "rag"], ["rag", "chat"]):
        dep = parse_deployment({"pools": [{"name": "q", "replicas": 1, "gpu": "h100_sxm", "model": QWEN, "tp": 4,
                                           "served_model_names": names}]})  # fmt: skip
        sc = simulate(dep, reqs, CAT, calibration=CAL).summary["pools"][0]["measured_step_scales"]
        assert (sc["isl"], sc["osl"]) == (4256, 532)
    # two pools, one name each: each at its own requests' means
    dep = parse_deployment({"pools": [
        {"name": "short", "replicas": 1, "gpu": "h100_sxm", "model": QWEN, "tp": 4, "served_model_names": ["chat"]},
        {"name": "long", "replicas": 1, "gpu": "h100_sxm", "model": QWEN, "tp": 4, "served_model_names": ["rag"]},
    ]})  # fmt: skip
    pools = {p["pool"]: p["measured_step_scales"] for p in simulate(dep, reqs, CAT, calibration=CAL).summary["pools"]}
    assert (pools["short"]["isl"], pools["short"]["osl"]) == (512, 64)
    assert (pools["long"]["isl"], pools["long"]["osl"]) == (8000, 1000)


def test_multiplexed_models_take_their_measured_scales() -> None:
    from gpuyield.core.sim.simulate import build_cluster

    dep = parse_deployment({"name": "mux", "multiplex": {"groups": [
        {"name": "g", "gpu": "h100_sxm", "tp": 4, "models": [QWEN, "Qwen/Qwen3-8B"]},
    ]}})  # fmt: skip
    cluster, info = build_cluster(dep, CAT, calibration=CAL, measured_at=(1024, 256))
    scales = info[0]["measured_step_scales"]
    assert scales["Qwen/Qwen3-8B"] is None  # no measured point of that architecture
    assert scales[QWEN] is not None and (scales[QWEN]["isl"], scales[QWEN]["osl"]) == (1024, 256)
    plain, _ = build_cluster(dep, CAT, calibration=CAL)
    step = {rt.setup.model: rt.setup.step_model for rt in cluster.rts}
    base = {rt.setup.model: rt.setup.step_model for rt in plain.rts}
    args = (0, 0.0, 16, 16 * 1500)
    assert step[QWEN].step_time_s(*args) != pytest.approx(base[QWEN].step_time_s(*args), rel=0.02)
    assert step["Qwen/Qwen3-8B"].step_time_s(*args) == base["Qwen/Qwen3-8B"].step_time_s(*args)
    # routed by name: the measured model at its own requests' lengths, not the mix's
    from gpuyield.core.sim.measured import WorkloadLengths

    lengths = WorkloadLengths.of([2048, 100], [512, 10], [0, 1], (QWEN, "Qwen/Qwen3-8B"))
    _, info = build_cluster(dep, CAT, calibration=CAL, measured_at=lengths)
    own = info[0]["measured_step_scales"][QWEN]
    assert (own["isl"], own["osl"]) == (2048, 512)
