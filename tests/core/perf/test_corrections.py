"""Measured operating points: interpolation, shrinkage, self-exclusion, the file form, and validate's use."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import calibration_from_dict, calibration_to_dict, default_calibration
from gpuyield.core.perf.closed_loop import ClosedLoopResult
from gpuyield.core.perf.corrections import (
    CorrectionSettings,
    DeploymentKey,
    MeasuredCorrections,
    MeasuredPoint,
    _estimate,
    _layout_distance,
    apply_correction,
    architecture_id,
    settings_with,
)
from gpuyield.core.perf.validation import (
    build_corrections,
    deployment_key,
    measurement_copies,
    row_from_mapping,
    row_measurement_id,
    validate_rows,
)
from gpuyield.errors import ConfigError

CAT = default_catalog()
BASE = dataclasses.replace(default_calibration(), corrections=None)
QWEN32 = architecture_id(CAT.model("Qwen/Qwen3-32B"))
KEY = DeploymentKey("vllm", "Qwen/Qwen3-32B", QWEN32, "h100_sxm", "bf16", "agg tp2 pp1 adp1", 1)
MEAN = CorrectionSettings(ttft_estimator="log_mean", tpot_estimator="log_mean")


def _table(points, key=KEY, settings=MEAN, extra=None):  # type: ignore[no-untyped-def]
    deps = {key.text(): tuple(points)}
    deps.update(extra or {})
    return MeasuredCorrections(deployments=deps, settings=settings)


def _grid(log_ttft: float, log_tpot: float) -> list[MeasuredPoint]:
    return [
        MeasuredPoint(isl, 1024, c, log_ttft, log_tpot, f"{isl}-{c}")
        for isl in (1024, 8192)
        for c in (4, 8, 16, 32, 64)
    ]


def test_unmeasured_model_is_not_corrected():
    t = _table(_grid(0.5, -0.2))
    other = dataclasses.replace(KEY, model="Qwen/Qwen3-8B", architecture=architecture_id(CAT.model("Qwen/Qwen3-8B")))
    assert t.correct(other, 1024, 1024, 16) is None
    assert t.correct(dataclasses.replace(KEY, engine="sglang"), 1024, 1024, 16) is None
    assert t.correct(dataclasses.replace(KEY, precision="fp8"), 1024, 1024, 16) is None


def test_inside_measured_points_the_factor_is_the_measured_residual():
    t = _table(_grid(math.log(2.0), math.log(0.8)))
    c = t.correct(KEY, 1024, 1024, 16)
    assert c is not None and c.same_deployment
    # a uniform residual comes back, shrunk by the prior only slightly where many points support it
    assert 1.9 < c.ttft_factor <= 2.0 and 0.8 <= c.tpot_factor < 0.82
    between = t.correct(KEY, 2048, 1024, 16)  # fewer points nearby: more shrinkage
    assert between is not None and 1.0 < between.ttft_factor < c.ttft_factor
    assert c.support > 1.0 and c.num_points == 10


@pytest.mark.parametrize("estimator", ["log_mean", "mape_median"])
@pytest.mark.parametrize("axis", ["concurrency", "isl"])
def test_local_linear_follows_the_trend_at_the_edge_of_the_measured_points(estimator, axis):
    # the TTFT residual grows along one axis: log ratio = 0.3 * log2(v / 4), measured at v = 4 .. 64 (x 64 for isl)
    unit = 64 if axis == "isl" else 1
    settings = CorrectionSettings(ttft_estimator=estimator, tpot_estimator=estimator)

    def point(v: int) -> MeasuredPoint:
        isl, c = (v * unit, 16) if axis == "isl" else (1024, v)
        return MeasuredPoint(isl, 1024, c, 0.3 * math.log2(v / 4), 0.2, f"v{v}")

    def query(table: MeasuredCorrections, v: int):  # type: ignore[no-untyped-def]
        return table.correct(KEY, v * unit, 1024, 16) if axis == "isl" else table.correct(KEY, 1024, 1024, v)

    pts = [point(v) for v in (4, 8, 16, 32, 64)]
    linear = _table(pts, settings=settings)
    flat = _table(pts, settings=dataclasses.replace(settings, slope_ridge=None))
    for v in (5, 56):  # near both edges: local-constant is pulled towards the middle of its neighbours
        truth = 0.3 * math.log2(v / 4)
        lin, cst = query(linear, v), query(flat, v)
        assert lin is not None and cst is not None
        assert abs(math.log(lin.ttft_factor) - truth) < 0.75 * abs(math.log(cst.ttft_factor) - truth)
        # a constant residual has no slope to take out: the same factor either way
        assert lin.tpot_factor == pytest.approx(cst.tpot_factor, rel=1e-9) and lin.tpot_factor > 1.1


def test_local_linear_is_finite_on_degenerate_neighbourhoods():
    one = _table([MeasuredPoint(1024, 1024, 16, 0.4, -0.1, "a")])  # one point: no slope to fit
    c = one.correct(KEY, 1024, 1024, 32)
    assert c is not None and 1.0 < c.ttft_factor < math.exp(0.4) and c.tpot_factor < 1.0
    same_x = _table([MeasuredPoint(1024, 1024, 16, r, r, f"s{i}") for i, r in enumerate((0.1, 0.5, 0.9))])
    c = same_x.correct(KEY, 1024, 1024, 16)
    assert c is not None and math.isfinite(c.ttft_factor) and 1.0 < c.ttft_factor < math.exp(0.9)
    # a steep trend far from the query: the extrapolated residuals of nearly weightless points stay finite
    steep = _table([MeasuredPoint(1024, 1024, c, 400.0 * math.log2(c), -400.0 * math.log2(c), f"c{c}") for c in
                    (1, 2, 4)], settings=CorrectionSettings())  # fmt: skip
    c = steep.correct(KEY, 1024, 1024, 2)
    assert c is not None and all(math.isfinite(f) and f > 0 for f in (c.ttft_factor, c.tpot_factor))
    # a weightless point with an extrapolated residual beyond exp's range neither counts nor overflows
    assert _estimate(np.array([0.0, 1.0]), np.array([-800.0, 0.1]), 0.1, "mape_median") == pytest.approx(0.1)
    assert _estimate(np.array([1.0, 1.0]), np.array([-800.0, 0.1]), 0.1, "mape_median") == pytest.approx(-800.0)
    for bad in (0.0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ConfigError, match="slope_ridge"):
            CorrectionSettings(slope_ridge=bad)


def test_far_from_measured_points_the_correction_shrinks_to_none():
    t = _table(_grid(math.log(2.0), math.log(0.8)))
    near = t.correct(KEY, 1024, 1024, 16)
    mid = t.correct(KEY, 256, 1024, 256)
    assert near is not None and mid is not None
    assert 0.0 < math.log(mid.ttft_factor) < math.log(near.ttft_factor)
    assert mid.support < near.support
    # beyond reach (kernel support below MIN_SUPPORT): no correction at all, rather than a factor of 1.00
    assert t.correct(KEY, 128, 64, 4096) is None


def test_interpolates_between_concurrencies():
    pts = [MeasuredPoint(1024, 1024, c, r, r, str(c)) for c, r in ((4, 0.0), (64, 1.0))]
    t = _table(pts, settings=dataclasses.replace(MEAN, prior_weight=1e-6))
    lo, mid, hi = (t.correct(KEY, 1024, 1024, c) for c in (4, 16, 64))
    assert lo is not None and mid is not None and hi is not None
    assert math.log(lo.tpot_factor) < math.log(mid.tpot_factor) < math.log(hi.tpot_factor)
    assert math.log(mid.tpot_factor) == pytest.approx(0.5, abs=1e-5)  # 16 is the log-midpoint of 4 and 64


def test_models_of_one_architecture_share_measurements():
    ds = {n: architecture_id(CAT.model(n)) for n in ("deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-R1",
                                                      "moonshotai/Kimi-K2.5")}  # fmt: skip
    assert ds["deepseek-ai/DeepSeek-V3"] == ds["deepseek-ai/DeepSeek-R1"] != ds["moonshotai/Kimi-K2.5"]
    r1 = DeploymentKey("sglang", "deepseek-ai/DeepSeek-R1", ds["deepseek-ai/DeepSeek-R1"], "b200_sxm", "fp8",
                       "agg tp8 pp1 adp1 ep1 moe_tp8", 1)  # fmt: skip
    t = _table(_grid(math.log(2.0), math.log(1.5)), key=r1)
    v3 = dataclasses.replace(r1, model="deepseek-ai/DeepSeek-V3")
    own, twin = t.correct(r1, 1024, 1024, 16), t.correct(v3, 1024, 1024, 16)
    assert own is not None and twin is not None
    # the twin's measurements count, with the other-model penalty: less support, a smaller correction
    assert 1.0 < twin.ttft_factor < own.ttft_factor and twin.support < own.support
    kimi = dataclasses.replace(r1, model="moonshotai/Kimi-K2.5", architecture=ds["moonshotai/Kimi-K2.5"])
    assert t.correct(kimi, 1024, 1024, 16) is None


def test_a_measurement_never_predicts_itself():
    t = _table([MeasuredPoint(1024, 1024, 16, 1.0, 1.0, "me")])
    assert t.correct(KEY, 1024, 1024, 16) is not None
    assert t.correct(KEY, 1024, 1024, 16, exclude=("me",)) is None


def test_a_repeat_of_the_query_outweighs_its_neighbours():
    grid = _grid(0.0, 0.0)
    repeat = MeasuredPoint(1024, 1024, 16, math.log(2.0), math.log(2.0), "repeat")
    plain = _table([*grid, repeat], settings=dataclasses.replace(MEAN, same_point_weight=0.0))
    boosted = _table([*grid, repeat], settings=dataclasses.replace(MEAN, same_point_weight=3.0))
    a, b = plain.correct(KEY, 1024, 1024, 16), boosted.correct(KEY, 1024, 1024, 16)
    assert a is not None and b is not None
    assert 1.0 < a.ttft_factor < b.ttft_factor < 2.0
    assert b.support == pytest.approx(a.support + 2 * 3.0)  # the grid's own point at 1024/16 and the repeat
    # only the identical operating point of the identical deployment is boosted
    near = boosted.correct(KEY, 1024, 1024, 17)
    near_plain = plain.correct(KEY, 1024, 1024, 17)
    assert near is not None and near_plain is not None and near.ttft_factor == pytest.approx(near_plain.ttft_factor)
    other = dataclasses.replace(KEY, layout="agg tp4 pp1 adp1")
    t = _table(grid, extra={other.text(): (repeat,)}, settings=dataclasses.replace(MEAN, same_point_weight=3.0))
    t0 = _table(grid, extra={other.text(): (repeat,)}, settings=dataclasses.replace(MEAN, same_point_weight=0.0))
    c, c0 = t.correct(KEY, 1024, 1024, 16), t0.correct(KEY, 1024, 1024, 16)
    assert c is not None and c0 is not None
    assert c.support == pytest.approx(c0.support + 3.0)  # the grid's own point only, not the other layout's
    with pytest.raises(ConfigError, match="same_point_weight"):
        CorrectionSettings(same_point_weight=-1.0)


def test_layout_distance_counts_log2_steps_of_parallelism_and_counts():
    def key(layout: str, n: int = 1) -> DeploymentKey:
        return dataclasses.replace(KEY, layout=layout, num_gpus=n)

    moe = "agg tp8 pp1 adp1 ep8 moe_tp1"
    assert _layout_distance(key(moe), key(moe)) == 0.0
    assert _layout_distance(key(moe), key("agg tp4 pp1 adp1 ep4 moe_tp1")) == 2.0
    assert _layout_distance(key(moe), key("agg tp1 pp1 adp8 ep8 moe_tp1")) == 6.0
    assert _layout_distance(key("agg tp2 pp1 adp1", 1), key("agg tp2 pp1 adp1", 4)) == 2.0  # replicas
    d0 = "disagg 0x prefill(tp4 pp1 adp1) + 0x decode(tp8 pp1 adp1)"
    d1 = "disagg 2x prefill(tp4 pp1 adp1) + 1x decode(tp8 pp1 adp1)"
    d2 = "disagg 4x prefill(tp4 pp1 adp1) + 1x decode(tp8 pp1 adp1)"
    assert _layout_distance(key(d0, 0), key(d1, 0)) == 2.0  # an unrecorded count is one step from any
    assert _layout_distance(key(d1, 0), key(d2, 0)) == 1.0
    assert math.isinf(_layout_distance(key(moe), key(d0, 0)))
    assert math.isinf(_layout_distance(key("agg auto", 8), key("agg tp8 pp1 adp1", 1)))  # a GPU count, not replicas


def test_layout_distance_reads_every_canonical_layout_deployment_key_writes():
    layouts = [
        ("agg tp8 pp1 adp1 moe_tp8 ep1", "deepseek-ai/DeepSeek-R1", "8"),
        ("agg tp1 pp1 adp8 moe_tp1 ep8", "deepseek-ai/DeepSeek-R1", "8"),
        ("agg tp2 pp1 adp1", "Qwen/Qwen3-32B", "4"),
        ("disagg 1x prefill(tp1 adp4 ep4) + 4x decode(tp8 adp1 ep8)", "deepseek-ai/DeepSeek-R1", "0"),
        ("disagg 0x prefill(tp4 adp1 ep4) + 0x decode(tp32 adp1 ep4)", "deepseek-ai/DeepSeek-R1", "0"),
    ]
    keys = [
        deployment_key(_row(0, layout=lay, model=m, num_gpus=n, tp="", gpu="b200_sxm", precision="fp8"), CAT.model,
                       CAT.gpu)  # fmt: skip
        for lay, m, n in layouts
    ]
    for k in keys:
        assert _layout_distance(k, k) == 0.0
    assert _layout_distance(keys[0], keys[1]) == pytest.approx(_layout_distance(keys[1], keys[0]))
    assert _layout_distance(keys[0], keys[1]) > 0
    # the disaggregated pair: prefill tp1 adp4 vs tp4 adp1 (2 + 2); decode tp8 ep8 moe_tp1 vs tp32 ep4 moe_tp8
    # (2 + 1 + 3; deployment_key spells out the expert split); two recorded counts against unrecorded (1 + 1)
    assert "moe_tp8" in keys[4].layout
    assert _layout_distance(keys[3], keys[4]) == pytest.approx(12.0)


def test_a_near_layout_counts_more_than_a_far_one():
    query = dataclasses.replace(KEY, layout="agg tp8 pp1 adp1 ep8 moe_tp1")
    near = dataclasses.replace(KEY, layout="agg tp4 pp1 adp1 ep4 moe_tp1")
    far = dataclasses.replace(KEY, layout="agg tp1 pp1 adp8 ep8 moe_tp1")
    pts = {
        near.text(): (MeasuredPoint(1024, 1024, 16, 1.0, 1.0, "near"),),
        far.text(): (MeasuredPoint(1024, 1024, 16, -1.0, -1.0, "far"),),
    }
    c = MeasuredCorrections(deployments=pts, settings=MEAN).correct(query, 1024, 1024, 16)
    assert c is not None and not c.same_deployment and math.log(c.tpot_factor) > 0.1
    # without the distance term both are just "another layout": they cancel
    flat = dataclasses.replace(MEAN, near_layout_penalty=8.0, layout_distance_penalty=0.0, other_layout_penalty=8.0)
    c0 = MeasuredCorrections(deployments=pts, settings=flat).correct(query, 1024, 1024, 16)
    assert c0 is not None and abs(math.log(c0.tpot_factor)) < 1e-9
    with pytest.raises(ConfigError, match="layout_distance_penalty"):
        CorrectionSettings(layout_distance_penalty=-1.0)
    with pytest.raises(ConfigError, match="same_point_weight"):
        CorrectionSettings(same_point_weight=math.inf)


def test_other_layouts_and_gpus_count_less_than_the_same_deployment():
    same = [MeasuredPoint(1024, 1024, 16, 0.0, 0.0, "a")]
    other_layout = dataclasses.replace(KEY, layout="agg tp4 pp1 adp1")
    other_gpu = dataclasses.replace(KEY, gpu="h200_sxm")
    t = _table(
        same,
        extra={
            other_layout.text(): (MeasuredPoint(1024, 1024, 16, 1.0, 1.0, "b"),),
            other_gpu.text(): (MeasuredPoint(1024, 1024, 16, -1.0, -1.0, "c"),),
        },
    )
    c = t.correct(KEY, 1024, 1024, 16)
    # the deployment's own point (weight 1 + same_point_weight) against tp4, one log2 step away (weight ~0.2)
    assert c is not None and abs(math.log(c.ttft_factor)) < 0.1
    # without the exact deployment, the other layout on the same GPU dominates the other GPU
    c2 = t.correct(KEY, 1024, 1024, 16, exclude=("a",))
    assert c2 is not None and not c2.same_deployment and math.log(c2.ttft_factor) > 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.01, 5.0), st.floats(-3.0, 3.0)), min_size=1, max_size=12
    ),
    st.floats(0.001, 1.0),
)
def test_mape_median_minimises_the_weighted_percentage_error(pairs, prior):
    w = np.array([p[0] for p in pairs])
    r = np.array([p[1] for p in pairs])
    best = _estimate(w, r, prior, "mape_median")
    vals = np.append(r, 0.0)
    wts = np.append(w, prior)

    def loss(logc: float) -> float:  # weighted mean |c - ratio| / ratio over the neighbours and the prior
        return float((wts * np.abs(np.exp(logc) - np.exp(vals)) / np.exp(vals)).sum())

    assert all(loss(best) <= loss(v) + 1e-9 for v in vals)


def test_estimators_ignore_unmeasured_residuals():
    w = np.array([1.0, 1.0])
    r = np.array([np.nan, math.log(3.0)])
    assert _estimate(w, r, 1e-9, "log_mean") == pytest.approx(math.log(3.0), rel=1e-6)
    assert _estimate(w, r, 1e-9, "mape_median") == pytest.approx(math.log(3.0))


def test_apply_correction_scales_latency_and_follows_littles_law():
    res = ClosedLoopResult(
        ttft_ms=100.0, tpot_ms=10.0, e2e_ms=100.0 + 99 * 10.0, throughput_tok_s=1000.0, request_rate_per_s=10.0,
        concurrency=11, running_seqs=11.0, queue_wait_ms=0.0, limited_by="concurrency", memory=None,  # type: ignore[arg-type]
    )  # fmt: skip
    t = _table(_grid(math.log(2.0), math.log(1.5)))
    corr = t.correct(KEY, 1024, 1024, 16)
    assert corr is not None
    out = apply_correction(res, corr)
    assert out.ttft_ms == pytest.approx(100 * corr.ttft_factor)
    assert out.tpot_ms == pytest.approx(10 * corr.tpot_factor)
    assert out.e2e_ms == pytest.approx(out.ttft_ms + 99 * out.tpot_ms)
    assert out.throughput_tok_s * out.e2e_ms == pytest.approx(res.throughput_tok_s * res.e2e_ms)
    assert out.request_rate_per_s * out.e2e_ms == pytest.approx(res.request_rate_per_s * res.e2e_ms)
    assert "measured operating points" in out.notes[-1]


def test_file_form_round_trips_and_rejects_bad_input():
    t = _table(_grid(0.3, None))  # type: ignore[arg-type]
    cal = dataclasses.replace(BASE, corrections=t)
    back = calibration_from_dict(calibration_to_dict(cal))
    assert back.corrections is not None and len(back.corrections) == len(t)
    assert back.corrections.settings == t.settings
    flat = _table(_grid(0.3, 0.1), settings=dataclasses.replace(MEAN, slope_ridge=None))  # local-constant: null
    assert MeasuredCorrections.from_dict(flat.to_dict()).settings.slope_ridge is None
    a, b = t.correct(KEY, 2000, 1000, 10), back.corrections.correct(KEY, 2000, 1000, 10)
    assert a is not None and b is not None and a.ttft_factor == pytest.approx(b.ttft_factor, rel=1e-4)
    d = t.to_dict()
    for bad, match in (
        ({**d, "settings": {**d["settings"], "ttft_estimator": "mode"}}, "ttft_estimator"),
        ({**d, "settings": {**d["settings"], "scale_log_isl": -1}}, "scale_log_isl"),
        ({**d, "settings": {**d["settings"], "slope_ridge": 0}}, "slope_ridge"),
        ({**d, "extra": 1}, "unknown"),
        ({**d, "deployments": {"a|b": []}}, "deployment key"),
        ({**d, "deployments": {"a|b|c|d|e|f|x": []}}, "num_gpus must be an integer"),
        ({**d, "deployments": {KEY.text(): [[1, 2, 3]]}}, "expected"),
        ({**d, "deployments": {KEY.text(): [["x", 2, 3, 0, 0, "i"]]}}, "not numbers"),
        ({**d, "deployments": {KEY.text(): [[0, 2, 3, 0, 0, "i"]]}}, ">= 1"),
    ):
        with pytest.raises(ConfigError, match=match):
            MeasuredCorrections.from_dict(bad)


def _row(i: int, **kw: str):  # type: ignore[no-untyped-def]
    base = {
        "gpu": "h100_sxm", "num_gpus": "2", "model": "Qwen/Qwen3-32B", "engine": "vllm", "precision": "bf16",
        "layout": "agg tp2 pp1 adp1 moe_tp0 ep0", "tp": "2", "isl": "1024", "osl": "1024", "concurrency": "16",
        "num_requests": "", "ttft_ms": "300", "tpot_ms": "20", "e2e_ms": "", "throughput_tok_s": "", "source": "t",
    }  # fmt: skip
    base.update(kw)
    return row_from_mapping(base, i)


def test_deployment_key_is_canonical():
    a = deployment_key(_row(0), CAT.model, CAT.gpu)
    b = deployment_key(_row(0, layout="agg tp2 pp1 adp1", engine="vLLM", num_gpus="0"), CAT.model, CAT.gpu)
    assert a == b == KEY
    assert deployment_key(_row(0, model="nvidia/Qwen3-32B-NVFP4"), CAT.model, CAT.gpu).model == "Qwen/Qwen3-32B"
    moe = _row(0, model="deepseek-ai/DeepSeek-R1", gpu="b200_sxm", layout="agg tp8 pp1 adp1 ep1", precision="fp8")
    stated = _row(0, model="deepseek-ai/DeepSeek-R1", gpu="b200_sxm", layout="agg tp8 pp1 adp1 moe_tp8 ep1",
                  precision="fp8")  # fmt: skip
    assert deployment_key(moe, CAT.model, CAT.gpu) == deployment_key(stated, CAT.model, CAT.gpu)
    # measured 4-bit float rows say "fp4" whatever the format: gpt-oss's MXFP4 release queried at mxfp4 matches
    oss = {"model": "openai/gpt-oss-120b", "layout": "agg tp2 pp1 adp1 moe_tp2 ep1"}
    keys = {deployment_key(_row(0, precision=p, **oss), CAT.model, CAT.gpu) for p in ("fp4", "mxfp4", "nvfp4")}
    assert len(keys) == 1 and next(iter(keys)).precision == "fp4"
    disagg = _row(0, layout="disagg 0x prefill(tp1 adp1 ep1) + 0x decode(tp2 adp1 ep1)", num_gpus="0")
    assert deployment_key(disagg, CAT.model, CAT.gpu).layout == "disagg 0x prefill(tp1 pp1 adp1) + 0x decode(tp2 pp1 adp1)"


def test_validate_leaves_each_rows_own_measurement_out():
    rows = [_row(0)]
    table = build_corrections(rows, CAT.model, CAT.gpu, BASE)
    assert len(table) == 1
    cal = dataclasses.replace(BASE, corrections=table)
    plain = validate_rows(rows, CAT.model, CAT.gpu, BASE)
    res = validate_rows(rows, CAT.model, CAT.gpu, cal)
    # its only neighbour is itself: no correction, the step-time model's own prediction
    assert res["corrected_rows"] == 0
    assert res["rows"][0]["predicted_ttft_ms"] == plain["rows"][0]["predicted_ttft_ms"]
    # a repeated measurement of the same point (other values) is corrected by its twin
    twin = _row(1, ttft_ms="330", tpot_ms="21")
    both = validate_rows([*rows, twin], CAT.model, CAT.gpu, cal, leave_own_out=True)
    assert both["corrected_rows"] == 1
    rec = next(r for r in both["rows"] if r["row"] == 1)
    assert rec["predicted_ttft_ms"] != plain["rows"][0]["predicted_ttft_ms"]
    assert "correction" in rec
    # and --no-corrections scores the model alone
    off = validate_rows([*rows, twin], CAT.model, CAT.gpu, cal, corrections=False)
    assert off["corrected_rows"] == 0


def test_a_measurement_filed_under_two_names_never_predicts_its_copy():
    # a study may list one run under DeepSeek-R1 and -V3 (one architecture): the same GPU, engine, lengths,
    # concurrency and measured values; leaving one out leaves the other out too
    kw = {"gpu": "b200_sxm", "num_gpus": "8", "precision": "fp8", "layout": "agg tp8 pp1 adp1 moe_tp8 ep1", "tp": "8"}
    r1 = _row(0, model="deepseek-ai/DeepSeek-R1", **kw)
    v3 = _row(1, model="deepseek-ai/DeepSeek-V3", **kw)
    other = _row(2, model="deepseek-ai/DeepSeek-V3", **kw | {"tpot_ms": "21"})  # another value: not a copy
    # the sample also files runs under a second layout with their values rounded to two decimals
    rounded = [_row(5, ttft_ms="207.73", tpot_ms="14.2201"), _row(6, layout="agg tp2", ttft_ms="207.73", tpot_ms="14.22")]
    assert len(measurement_copies(rounded)[0]) == 2
    assert measurement_copies([r1, v3, other]) == [
        (row_measurement_id(r1), row_measurement_id(v3)),
        (row_measurement_id(v3), row_measurement_id(r1)),
        (row_measurement_id(other),),
    ]
    cal = dataclasses.replace(BASE, corrections=build_corrections([r1, v3], CAT.model, CAT.gpu, BASE))
    assert len(cal.corrections) == 2  # two deployments' points: the table keeps both names
    plain = validate_rows([r1, v3], CAT.model, CAT.gpu, BASE)
    loo = validate_rows([r1, v3], CAT.model, CAT.gpu, cal)
    assert loo["own_rows"]["left_out"] is True
    # each row's only neighbour is its own copy, so neither is corrected
    assert loo["corrected_rows"] == 0
    assert [r["predicted_tpot_ms"] for r in loo["rows"]] == [r["predicted_tpot_ms"] for r in plain["rows"]]
    # on a file of new measurements the copy is a repeat the table really holds
    assert validate_rows([r1], CAT.model, CAT.gpu, cal, leave_own_out=False)["corrected_rows"] == 1


def test_a_row_repeated_verbatim_is_one_measurement():
    table = build_corrections([_row(0), _row(1), _row(2, ttft_ms="330")], CAT.model, CAT.gpu, BASE)
    assert len(table) == 2


def test_rows_outside_the_table_may_use_an_identical_training_measurement():
    train, test = [_row(0)], [_row(7)]  # the same measurement, recorded twice (a random split can part them)
    cal = dataclasses.replace(BASE, corrections=build_corrections(train, CAT.model, CAT.gpu, BASE))
    loo = validate_rows(test, CAT.model, CAT.gpu, cal)
    # every measured row of this file is in the table: it is the calibration's own data, scored leave-one-out
    assert loo["own_rows"] == {"in_table": 1, "measured_rows": 1, "left_out": True, "decided": "auto"}
    assert loo["corrected_rows"] == 0
    kept = validate_rows(test, CAT.model, CAT.gpu, cal, leave_own_out=False)
    assert kept["corrected_rows"] == 1 and kept["own_rows"]["decided"] == "asked"
    rec = kept["rows"][0]
    assert abs(rec["predicted_ttft_ms"] / 300 - 1) < abs(loo["rows"][0]["predicted_ttft_ms"] / 300 - 1)
    # a file of new measurements that repeats one of the table's: the repeat is kept, automatically
    new = [_row(7), _row(8, isl="2048", ttft_ms="520"), _row(9, isl="4096", ttft_ms="900")]
    auto = validate_rows(new, CAT.model, CAT.gpu, cal)
    assert auto["own_rows"] == {"in_table": 1, "measured_rows": 3, "left_out": False, "decided": "auto"}
    assert next(r for r in auto["rows"] if r["row"] == 7)["predicted_ttft_ms"] == rec["predicted_ttft_ms"]
    # and can be left out on request
    asked = validate_rows(new, CAT.model, CAT.gpu, cal, leave_own_out=True)
    assert next(r for r in asked["rows"] if r["row"] == 7)["predicted_ttft_ms"] == loo["rows"][0]["predicted_ttft_ms"]
    # without measured points there is nothing to leave out, whatever is asked
    assert validate_rows(new, CAT.model, CAT.gpu, BASE, leave_own_out=True)["own_rows"]["left_out"] is False
    # progress: two calls per row (predicted, then corrected and scored)
    calls: list[int] = []
    validate_rows(new, CAT.model, CAT.gpu, cal, progress=calls.append)
    assert calls == [1] * (2 * len(new))
    # one layout kind: its split is the summary itself, corrected predictions included
    assert auto["summary_by_layout_kind"] == {"agg": auto["summary"]}


def test_corrections_move_predictions_towards_measurements():
    rows = [_row(i, concurrency=str(c), ttft_ms=str(60 * c), tpot_ms=str(12 + c / 2)) for i, c in
            enumerate((2, 4, 8, 16, 32, 64))]  # fmt: skip
    cal = dataclasses.replace(BASE, corrections=build_corrections(rows, CAT.model, CAT.gpu, BASE))
    plain = validate_rows(rows, CAT.model, CAT.gpu, BASE)["summary"]
    corrected = validate_rows(rows, CAT.model, CAT.gpu, cal)["summary"]
    assert corrected["ttft_ms"]["mape"] < plain["ttft_ms"]["mape"]
    assert corrected["tpot_ms"]["mape"] < plain["tpot_ms"]["mape"]


def test_shipped_calibration_holds_the_training_residuals():
    cal = default_calibration()
    assert cal.corrections is not None and len(cal.corrections) > 3500  # distinct measurements
    assert "e2e_train.csv" in cal.corrections.source
    # its learned residual model was fitted on the same distinct measurements (a refresh with --no-learned, or
    # from another file, would leave one that does not belong to the table)
    assert cal.corrections.learned is not None and cal.corrections.learned.training["rows"] == len(cal.corrections)


def test_merging_tables_adds_new_points_once():
    a = _table(_grid(0.1, 0.1))
    other_key = dataclasses.replace(KEY, layout="agg tp4 pp1 adp1")
    b = _table([MeasuredPoint(1024, 1024, 4, 0.2, 0.2, "1024-4"), MeasuredPoint(1024, 1024, 128, 0.2, 0.2, "new")],
               extra={other_key.text(): (MeasuredPoint(512, 64, 2, 0.0, 0.0, "x"),)})  # fmt: skip
    m = a.merged(b)
    assert len(m) == len(a) + 2  # "1024-4" was already there
    assert m.settings == a.settings and len(m.deployments) == 2


def test_engine_model_predictions_use_their_own_residuals():
    pts = [MeasuredPoint(1024, 1024, c, math.log(2.0), math.log(2.0), str(c), math.log(1.5), None) for c in (8, 16)]
    t = _table(pts)
    a = t.correct(KEY, 1024, 1024, 16)
    s = t.correct(KEY, 1024, 1024, 16, method="sim")
    assert a is not None and s is not None
    assert s.ttft_factor < a.ttft_factor  # the sim residual (×1.5) instead of the analytic one (×2)
    assert s.tpot_factor == pytest.approx(a.tpot_factor)  # none stored for sim: the analytic one
    with pytest.raises(ConfigError, match="method"):
        t.correct(KEY, 1024, 1024, 16, method="exact")
    # six-column rows (no sim residuals) still load
    d = t.to_dict()
    d["deployments"] = {k: [r[:6] for r in v] for k, v in d["deployments"].items()}
    back = MeasuredCorrections.from_dict(d)
    s6 = back.correct(KEY, 1024, 1024, 16, method="sim")
    assert s6 is not None and s6.ttft_factor == pytest.approx(a.ttft_factor, rel=1e-4)


def test_residuals_under_other_coefficients_are_refused():
    rows = [_row(0), _row(1, concurrency="32", ttft_ms="400", tpot_ms="25")]
    cal = dataclasses.replace(BASE, corrections=build_corrections(rows, CAT.model, CAT.gpu, BASE))
    d = calibration_to_dict(cal)
    assert calibration_from_dict(d).corrections is not None  # round trip: same coefficients
    d["engines"]["vllm"]["step_overhead_s"] *= 1.5
    with pytest.raises(ConfigError, match="stale"):
        calibration_from_dict(d)


TRAIN_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "measurements" / "e2e_train.csv"


@pytest.mark.skipif(not TRAIN_CSV.exists(), reason="shared measurements not present")
def test_shipped_residuals_match_the_current_model():
    # a change to the step-time model (code, catalogue) that moves predictions must refresh the shipped table
    # (scripts/refresh_shipped_corrections.py); a sample of its points is recomputed here
    from gpuyield.edges.perf.calibrate import load_measurements, lookups

    cal = default_calibration()
    assert cal.corrections is not None
    rows = [r for r in load_measurements(TRAIN_CSV) if r.concurrency is not None][::97]
    model_of, gpu_of = lookups(CAT, cal)
    fresh = build_corrections(rows, model_of, gpu_of, cal)
    stored = {p.measurement_id: p for pts in cal.corrections.deployments.values() for p in pts}
    compared = 0
    for pts in fresh.deployments.values():
        for p in pts:
            s = stored[p.measurement_id]
            for a, b in ((p.log_ttft, s.log_ttft), (p.log_tpot, s.log_tpot)):
                assert (a is None) == (b is None) and (a is None or abs(a - b) < 1e-4), (p, s)
            compared += 1
    assert compared >= 40


def test_measured_throughputs_correct_throughput_directly():
    rows = [_row(i, concurrency=str(c), throughput_tok_s="") for i, c in enumerate((4, 8, 16))]
    plain = validate_rows(rows, CAT.model, CAT.gpu, BASE, corrections=False)["rows"]
    # the same rows, measured at half the throughput the model predicts (a protocol Little's law misses)
    measured = [
        _row(i, concurrency=str(c), throughput_tok_s=f"{0.5 * p['predicted_throughput_tok_s']:.6g}")
        for i, (c, p) in enumerate(zip((4, 8, 16), plain, strict=True))
    ]
    table = build_corrections(measured, CAT.model, CAT.gpu, BASE)
    assert all(p.log_throughput is not None for pts in table.deployments.values() for p in pts)
    key = deployment_key(measured[1], CAT.model, CAT.gpu)
    c = table.correct(key, 1024, 1024, 8)
    assert c is not None and c.throughput_factor is not None and 0.5 < c.throughput_factor < 0.7
    assert "throughput ×" in c.note()
    # without measured throughputs the factor is absent and throughput follows TTFT/TPOT
    c0 = build_corrections(rows, CAT.model, CAT.gpu, BASE).correct(key, 1024, 1024, 8)
    assert c0 is not None and c0.throughput_factor is None
    res = ClosedLoopResult(100.0, 10.0, 100.0 + 1023 * 10.0, 800.0, 0.78, 8, 8.0, 0.0, "concurrency",
                           plain_memory())  # fmt: skip
    assert apply_correction(res, c).throughput_tok_s == pytest.approx(800.0 * c.throughput_factor)
    # the file form keeps the ninth column, and rows without it still load
    again = MeasuredCorrections.from_dict(table.to_dict())  # residuals rounded to 5 decimals in the file
    for a, b in zip(again.deployments.values(), table.deployments.values(), strict=True):
        assert [p.log_throughput for p in a] == pytest.approx([p.log_throughput for p in b], abs=1e-5)
    assert MeasuredCorrections.from_dict(again.to_dict()).deployments == again.deployments
    assert len(next(iter(table.to_dict()["deployments"].values()))[0]) == 9
    assert len(next(iter(build_corrections(rows, CAT.model, CAT.gpu, BASE).to_dict()["deployments"].values()))[0]) == 8


def plain_memory():  # type: ignore[no-untyped-def]
    from gpuyield.core.perf import PerfModel

    return PerfModel.build(CAT.model("Qwen/Qwen3-32B"), CAT.gpu("h100_sxm"), tp=2).memory(0.9)


def test_throughput_keeps_littles_law_unless_measured_throughputs_carry_the_query():
    own = MeasuredPoint(1024, 1024, 16, math.log(2.0), math.log(2.0), "own")  # no throughput measured
    far = MeasuredPoint(1024, 1024, 512, 0.0, 0.0, "far", None, None, math.log(0.5))
    t = _table([own, far])
    c = t.correct(KEY, 1024, 1024, 16)
    assert c is not None and c.ttft_factor > 1.5 and c.throughput_factor is None
    near = MeasuredPoint(1024, 1024, 16, math.log(2.0), math.log(2.0), "near", None, None, math.log(0.5))
    t2 = _table([near])
    c2 = t2.correct(KEY, 1024, 1024, 16)
    assert c2 is not None and c2.throughput_factor is not None and c2.throughput_factor < 0.6
    # the residual is measured against the analytic solver: the engine model's answer keeps Little's law
    assert t2.correct(KEY, 1024, 1024, 16, method="sim").throughput_factor is None


def test_merging_fills_in_a_throughput_the_base_point_lacked():
    base = _table([MeasuredPoint(1024, 1024, 16, 0.1, 0.1, "m")])
    more = _table([MeasuredPoint(1024, 1024, 16, 0.1, 0.1, "m", None, None, -0.3)])
    (pts,) = base.merged(more).deployments.values()
    assert len(pts) == 1 and pts[0].log_throughput == -0.3


def test_file_form_rejects_infinite_residuals():
    d = _table([MeasuredPoint(1024, 1024, 16, 0.1, 0.1, "m", None, None, -0.3)]).to_dict()
    row = next(iter(d["deployments"].values()))[0]
    row[8] = math.inf
    with pytest.raises(ConfigError, match="finite"):
        MeasuredCorrections.from_dict(d)


def test_settings_overrides_parse_numbers_estimators_and_null():
    base = CorrectionSettings()
    s = settings_with(base, ["slope_ridge=null", "tpot_estimator=log_mean", "scale_log_isl=1.5"])
    assert s.slope_ridge is None and s.tpot_estimator == "log_mean" and s.scale_log_isl == 1.5
    assert settings_with(base, []) == base
    for bad, match in (
        (["nope=1"], "NAME=VALUE"),
        (["slope_ridge"], "NAME=VALUE"),
        (["source=x"], "NAME=VALUE"),
        (["same_point_weight=abc"], "takes a number"),
        (["scale_log_isl=null"], "scale_log_isl"),
        (["ttft_estimator=mode"], "ttft_estimator"),
    ):
        with pytest.raises(ConfigError, match=match):
            settings_with(base, bad)


def test_tpot_pools_its_residuals_over_a_wider_length_neighbourhood_than_ttft():
    pts = [MeasuredPoint(1024, 1024, c, 0.3, 0.3, f"c{c}") for c in (4, 8, 16, 32)]
    wide = _table(pts, settings=dataclasses.replace(MEAN, tpot_scale_log_isl=1.6, tpot_scale_log_osl=1.6))
    shared = _table(pts, settings=dataclasses.replace(MEAN, tpot_scale_log_isl=None, tpot_scale_log_osl=None))
    far = wide.correct(KEY, 8192, 1024, 16)  # three doublings of the prompt away from every point
    same = shared.correct(KEY, 8192, 1024, 16)
    assert far is not None and same is not None
    assert math.log(far.tpot_factor) > 2 * math.log(far.ttft_factor) > 0  # TPOT still near its residual
    assert same.tpot_factor == pytest.approx(same.ttft_factor)  # one kernel: the same residuals, the same factor
    assert far.ttft_factor == pytest.approx(same.ttft_factor)  # TTFT's kernel is untouched
    with pytest.raises(ConfigError, match="tpot_scale_log_osl"):
        CorrectionSettings(tpot_scale_log_osl=0.0)


def test_each_metric_uses_only_its_own_kernel():
    # TPOT with its own length scales is exactly TPOT under a shared kernel of those scales, and TTFT is
    # exactly TTFT under the TTFT scales: no weight, offset, exclusion or same-point weight leaks across
    pts = [
        MeasuredPoint(isl, 1024, c, 0.1 * math.log(isl) - 0.2 * math.log(c), 0.05 * math.log(isl), f"{isl}-{c}")
        for isl in (512, 2048, 8192)
        for c in (2, 8, 32)
    ]
    split = _table(pts, settings=CorrectionSettings(tpot_scale_log_isl=1.6, tpot_scale_log_osl=1.3))
    as_tpot = _table(pts, settings=CorrectionSettings(scale_log_isl=1.6, scale_log_osl=1.3,
                                                      tpot_scale_log_isl=None, tpot_scale_log_osl=None))  # fmt: skip
    as_ttft = _table(pts, settings=CorrectionSettings(tpot_scale_log_isl=None, tpot_scale_log_osl=None))
    for query, exclude in (((2048, 1024, 8), ()), ((2048, 1024, 8), ("2048-8",)), ((30000, 1024, 64), ())):
        a, b, c = (t.correct(KEY, *query, exclude=exclude) for t in (split, as_tpot, as_ttft))
        assert a is not None and b is not None and c is not None
        assert a.tpot_factor == pytest.approx(b.tpot_factor, rel=1e-12)
        assert a.ttft_factor == pytest.approx(c.ttft_factor, rel=1e-12)


def test_tpot_is_corrected_where_only_its_wider_kernel_reaches():
    t = _table([MeasuredPoint(1024, 1024, 16, 0.3, 0.3, f"c{i}") for i in range(3)], settings=CorrectionSettings())
    c = t.correct(KEY, 1024 * 40, 1024, 16)  # 3.7 log units of prompt away: beyond TTFT's kernel, within TPOT's
    assert c is not None
    assert c.ttft_factor == 1.0 and c.tpot_factor > 1.0
    assert t.correct(KEY, 1024 * 4000, 1024, 16) is None  # beyond both


def test_every_shipped_measured_point_is_filed_under_a_catalogue_architecture() -> None:
    """A new ModelSpec field must not re-key the shipped points (architecture_id hashes it only when set):
    were the ids to move, every stored point would silently stop matching its model."""
    table = default_calibration().corrections
    assert table is not None
    stored = {DeploymentKey.parse(text).architecture for text in table.deployments}
    catalogue = {architecture_id(m) for m in default_catalog().models}
    assert stored and stored <= catalogue
    llama = default_catalog().model("meta-llama/Llama-3.1-8B")
    gemma_like = llama.model_copy(update={"full_attention_kv_heads": 4})
    assert architecture_id(gemma_like) != architecture_id(llama)
