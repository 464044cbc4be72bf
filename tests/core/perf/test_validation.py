"""Closed-loop solver, layout parsing and validation scoring."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import PerfModel, estimate_closed_loop
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.closed_loop import estimate_disaggregated, own_scheduler_limits
from gpuyield.core.perf.validation import (
    LAYOUT_KINDS,
    error_summary,
    layout_kind,
    parse_layout,
    repeat_floor,
    row_from_mapping,
    validate_rows,
)
from gpuyield.errors import ConfigError, DoesNotFitError

CAT = default_catalog()
CAL = default_calibration()


def _perf(tp: int = 2) -> PerfModel:
    return PerfModel.build(CAT.model("Qwen/Qwen3-32B"), CAT.gpu("h100_sxm"), tp=tp)


def test_closed_loop_latency_grows_with_concurrency_and_throughput_too():
    p = _perf()
    res = [estimate_closed_loop(p, 1024, 512, c) for c in (1, 8, 64)]
    assert res[0].ttft_ms < res[1].ttft_ms < res[2].ttft_ms
    assert res[0].tpot_ms < res[1].tpot_ms < res[2].tpot_ms
    assert res[0].throughput_tok_s < res[1].throughput_tok_s < res[2].throughput_tok_s
    r = res[1]
    assert r.e2e_ms == pytest.approx(r.ttft_ms + 511 * r.tpot_ms)
    # closed loop: throughput = C * osl / e2e (Little's law, no queue at this concurrency)
    assert r.throughput_tok_s == pytest.approx(8 * 512 / ((r.ttft_ms + 511 * r.tpot_ms) / 1e3), rel=0.02)


def test_closed_loop_queues_beyond_max_num_seqs():
    p = _perf()
    free = estimate_closed_loop(p, 512, 128, 64, max_num_seqs=64)
    capped = estimate_closed_loop(p, 512, 128, 64, max_num_seqs=16)
    assert capped.limited_by == "max_num_seqs" and capped.running_seqs == 16
    assert capped.queue_wait_ms > 0 and capped.ttft_ms > free.ttft_ms


def test_offline_needs_num_requests_and_runs():
    p = _perf()
    with pytest.raises(ConfigError):
        estimate_closed_loop(p, 128, 16, None)
    r = estimate_closed_loop(p, 128, 16, None, num_requests=100)
    assert r.concurrency == 100 and r.throughput_tok_s > 0


def test_closed_loop_does_not_fit_is_explicit():
    p = PerfModel.build(CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("h100_sxm"), tp=1)
    with pytest.raises(DoesNotFitError, match="exceed"):
        estimate_closed_loop(p, 1024, 128, 4)


def _r1_pools() -> tuple[PerfModel, PerfModel]:
    """(prefill, decode) pools of DeepSeek-R1 at fp4 on 8 B200s, TensorRT-LLM."""
    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("b200_sxm")
    build = lambda: PerfModel.build(m, g, tp=8, ep=8, weight_precision="fp4", kv_dtype="fp8", engine="trtllm")  # noqa: E731
    return build(), build()


def test_disaggregated_has_no_prefill_interference_in_tpot():
    pre, dec = _r1_pools()
    d = estimate_disaggregated(pre, dec, 1024, 1024, 32, num_prefill=1, num_decode=1)
    agg = estimate_closed_loop(dec, 1024, 1024, 32)
    assert d.tpot_ms < agg.tpot_ms
    unknown = estimate_disaggregated(pre, dec, 1024, 1024, 32, num_prefill=None, num_decode=None)
    assert any("assumed" in n for n in unknown.notes)


def test_serving_settings_are_checked():
    from gpuyield.core.perf.validation import ServingSettings

    assert ServingSettings(max_num_seqs=8, max_num_batched_tokens=8).max_num_seqs == 8
    for kw, msg in (
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.2}, "gpu_memory_utilization"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"max_num_batched_tokens": -5}, "max_num_batched_tokens"),
    ):
        with pytest.raises(ConfigError, match=msg):
            ServingSettings(**kw)  # type: ignore[arg-type]


def test_scheduler_limits_one_rule_for_both_paths():
    from types import SimpleNamespace

    from gpuyield.core.perf.closed_loop import scheduler_limits
    from gpuyield.core.sim.closed_loop import estimate_with_engine_model

    own = SimpleNamespace(engine="vllm", engine_coeffs=SimpleNamespace(max_num_seqs=1024, max_num_batched_tokens=8192))
    assert scheduler_limits(own) == (1024, 8192)
    assert scheduler_limits(own, 16, 64) == (16, 64)
    assert scheduler_limits(own, max_num_batched_tokens=2048) == (1024, 2048)
    for seqs, budget, said in (
        (32, 8, "max_num_batched_tokens 8 and max_num_seqs 32"),
        (None, 512, "max_num_batched_tokens 512 and the engine's own max_num_seqs 1024"),
        (9000, None, "max_num_seqs 9000 and the engine's own max_num_batched_tokens 8192"),
    ):
        with pytest.raises(ConfigError, match=said):
            scheduler_limits(own, seqs, budget)
    # TensorRT-LLM's max_num_tokens counts decodes: the limit drops to the budget; SGLang's chunked-prefill size
    # caps prompt chunks only: the model's one budget rises to the limit
    trt = SimpleNamespace(engine="trtllm:disagg", engine_coeffs=own.engine_coeffs)
    sgl = SimpleNamespace(engine="sglang", engine_coeffs=own.engine_coeffs)
    for seqs, budget, want_trt, want_sgl in ((None, 512, (512, 512), (1024, 1024)), (9000, None, (8192, 8192),
                                             (9000, 9000)), (32, 8, (8, 8), (32, 32))):  # fmt: skip
        assert scheduler_limits(trt, seqs, budget) == want_trt
        assert scheduler_limits(sgl, seqs, budget) == want_sgl
    # the analytic solver, the engine model and both pools of a P/D deployment refuse what the rule refuses
    cat, cal = default_catalog(), default_calibration()
    perf = PerfModel.build(cat.model("Qwen/Qwen3-8B"), cat.gpu("h100_sxm"), tp=1, calibration=cal)
    bad = {"max_num_batched_tokens": own_scheduler_limits(perf)[0] - 1}
    with pytest.raises(ConfigError, match="the engine's own max_num_seqs"):
        estimate_closed_loop(perf, 512, 64, 8, **bad)
    with pytest.raises(ConfigError, match="the engine's own max_num_seqs"):
        estimate_with_engine_model(perf, 512, 64, 8, **bad)
    with pytest.raises(ConfigError, match="the engine's own max_num_seqs"):
        estimate_disaggregated(perf, perf, 512, 64, 8, num_prefill=1, num_decode=1, **bad)
    # a TensorRT-LLM replica with a budget of 16 runs 16 of 64 clients, and says why
    trt_perf = PerfModel.build(cat.model("Qwen/Qwen3-8B"), cat.gpu("h100_sxm"), tp=1, engine="trtllm", calibration=cal)
    for res in (estimate_closed_loop(trt_perf, 512, 64, 64, max_num_batched_tokens=16),
                estimate_disaggregated(trt_perf, trt_perf, 512, 64, 64, num_prefill=1, num_decode=1,
                                       max_num_batched_tokens=16)):  # fmt: skip
        assert res.running_seqs == 16 and res.limited_by == "max_num_seqs"
        assert any("max_num_seqs lowered to the token budget, 16" in n for n in res.notes), res.notes
    assert estimate_with_engine_model(trt_perf, 512, 64, 64, max_num_batched_tokens=16).ttft_ms > 0


def test_disaggregated_pools_take_the_engine_limits():
    # the decode pool admits at most max_num_seqs a replica (the rest wait for a seat, in TTFT); with unknown
    # worker counts the limit sets how many decode replicas are assumed; the prefill pool's token budget chunks
    # each prompt (more, smaller steps: a longer first token) and leaves TPOT alone
    pre, dec = _r1_pools()
    base = estimate_disaggregated(pre, dec, 4096, 512, 64, num_prefill=1, num_decode=1)
    capped = estimate_disaggregated(pre, dec, 4096, 512, 64, num_prefill=1, num_decode=1, max_num_seqs=16)
    assert base.limited_by == "concurrency" and base.running_seqs == 64
    assert capped.limited_by == "max_num_seqs" and capped.running_seqs == 16
    assert capped.ttft_ms > base.ttft_ms and capped.tpot_ms < base.tpot_ms
    unknown = estimate_disaggregated(pre, dec, 4096, 512, 64, num_prefill=None, num_decode=None, max_num_seqs=16)
    assert any("and 4 decode replica(s)" in n for n in unknown.notes)
    small = estimate_disaggregated(pre, dec, 4096, 512, 64, num_prefill=1, num_decode=1, max_num_batched_tokens=512)
    assert small.ttft_ms > base.ttft_ms and small.tpot_ms == pytest.approx(base.tpot_ms)


@pytest.mark.parametrize(
    ("text", "kind", "tp", "adp", "ep"),
    [
        ("agg tp8 pp1 adp1 moe_tp8 ep1", "agg", 8, 1, 1),
        ("agg tp4 pp1 adp4 moe_tp1 ep16", "agg", 4, 4, 16),
        ("agg tp2 pp1 adp1 moe_tp0 ep0", "agg", 2, 1, 1),
    ],
)
def test_parse_agg_layouts(text, kind, tp, adp, ep):
    lay = parse_layout(text)
    assert lay.kind == kind and lay.replica is not None
    assert (lay.replica.tp, lay.replica.adp, lay.replica.ep) == (tp, adp, ep)


def test_parse_disagg_layouts():
    lay = parse_layout("disagg 1x prefill(tp1 adp4 ep4) + 4x decode(tp8 adp1 ep8)")
    assert lay.kind == "disagg"
    assert lay.prefill is not None and lay.decode is not None
    assert (lay.prefill.count, lay.prefill.tp, lay.prefill.adp, lay.prefill.ep) == (1, 1, 4, 4)
    assert (lay.decode.count, lay.decode.tp, lay.decode.ep) == (4, 8, 8)
    zero = parse_layout("disagg 0x prefill(tp8 adp1 ep8) + 0x decode(tp8 adp1 ep8)")
    assert zero.prefill is not None and zero.prefill.count is None
    with pytest.raises(ConfigError, match="not understood"):
        parse_layout("mixed tp8")


def test_error_summary_arithmetic():
    s = error_summary([(110.0, 100.0), (90.0, 100.0), (150.0, 100.0), (100.0, 100.0)])
    assert s["n"] == 4
    assert s["mape"] == pytest.approx((0.1 + 0.1 + 0.5 + 0.0) / 4)
    assert s["bias"] == pytest.approx((0.1 - 0.1 + 0.5 + 0.0) / 4)
    assert s["median_ape"] == pytest.approx(0.1)
    assert s["p90_ape"] == pytest.approx(0.1 + 0.7 * 0.4)
    assert error_summary([])["mape"] is None


def _row(i: int, **kw: str) -> dict[str, str]:
    base = {
        "gpu": "h100_sxm",
        "num_gpus": "2",
        "model": "Qwen/Qwen3-32B",
        "engine": "vllm",
        "precision": "bf16",
        "layout": "agg tp2 pp1 adp1 moe_tp1 ep1",
        "tp": "2",
        "isl": "1024",
        "osl": "1024",
        "concurrency": "8",
        "num_requests": "",
        "ttft_ms": "154.3",
        "tpot_ms": "15.9",
        "e2e_ms": "",
        "throughput_tok_s": "",
        "source": "fixture",
    }
    base.update(kw)
    return base


def test_validate_rows_coverage_unsupported_and_errors_are_exact():
    raw = [
        _row(0),
        _row(1, concurrency="32", ttft_ms="236.8", tpot_ms="20.06"),
        _row(2, model="no-such/model"),
        _row(3, model="deepseek-ai/DeepSeek-R1", layout="agg tp1 pp1 adp1 moe_tp1 ep1", tp="1"),
        _row(4, tpot_ms="", ttft_ms=""),
    ]
    rows = [row_from_mapping(r, i) for i, r in enumerate(raw)]
    res = validate_rows(rows, CAT.model, CAT.gpu, CAL)
    assert res["num_rows"] == 5
    assert res["coverage"] == pytest.approx(3 / 5)
    assert {u["row"] for u in res["unsupported"]} == {2, 3}
    assert all(u["reason"] for u in res["unsupported"])
    assert len(res["rows"]) == 3
    # TTFT/TPOT summaries cover only rows with a measured value (rows 0 and 1)
    assert res["summary"]["tpot_ms"]["n"] == 2 and res["summary"]["e2e_ms"]["n"] == 0
    r0 = res["rows"][0]
    expect = abs(r0["predicted_tpot_ms"] - 15.9) / 15.9
    r1 = res["rows"][1]
    expect = (expect + abs(r1["predicted_tpot_ms"] - 20.06) / 20.06) / 2
    assert math.isclose(res["summary"]["tpot_ms"]["mape"], expect, rel_tol=1e-12)
    assert res["rows"][2]["measured_tpot_ms"] is None


def test_repeat_floor_is_the_error_no_model_of_the_inputs_can_remove():
    """Rows 0 and 1 share every input and differ in TPOT (10 vs 20 ms): the best one answer for both is 10
    (|10/20 - 1| = 0.5 summed), 0.5 / 5 rows = 0.1 of the file's MAPE; each predicted by the other scores 1.0 and
    0.5. Rows 2 and 3 repeat verbatim (one measurement, no disagreement); row 4 is alone."""
    raw = [
        _row(0, tpot_ms="10", ttft_ms="100"),
        _row(1, tpot_ms="20", ttft_ms="100"),
        _row(2, concurrency="32", tpot_ms="12", ttft_ms="200"),
        _row(3, concurrency="32", tpot_ms="12", ttft_ms="200"),
        _row(4, concurrency="64", tpot_ms="14", ttft_ms="300"),
    ]
    rows = [row_from_mapping(r, i) for i, r in enumerate(raw)]
    rep = repeat_floor(rows)
    assert rep["rows"] == 2 and rep["groups"] == 1
    d = rep["tpot_ms"]
    assert d["n"] == 5 and d["rows"] == 2
    assert d["oracle_floor"] == pytest.approx(0.5 / 5)
    assert d["twin_mape"] == pytest.approx((1.0 + 0.5) / 2) and d["twin_points"] == pytest.approx(1.5 / 5)
    # TTFT agrees within every group: nothing is irreducible there
    t = rep["ttft_ms"]
    assert t["rows"] == 0 and t["oracle_floor"] == 0.0 and t["twin_mape"] is None
    # validate reports it over the rows it predicted
    res = validate_rows(rows, CAT.model, CAT.gpu, CAL)
    assert res["repeat_floor"] == rep
    # a layout written with other spacing or case is the same input
    raw[1]["layout"] = "  " + raw[1]["layout"].upper()
    assert repeat_floor([row_from_mapping(r, i) for i, r in enumerate(raw)])["rows"] == 2


def test_errors_and_repeat_floor_are_split_by_layout_kind_with_unrecorded_counts_apart():
    """A P/D layout recorded without its worker counts (``0x``) is its own kind: its rows' errors and repeat
    floor are reported apart from the P/D rows whose counts are known; the kinds' rows add up to the summary."""
    pd_known = "disagg 1x prefill(tp2 adp1 ep1) + 1x decode(tp4 adp1 ep1)"
    pd_zero = "disagg 0x prefill(tp2 adp1 ep1) + 0x decode(tp4 adp1 ep1)"
    raw = [
        _row(0),
        _row(1, engine="trtllm", layout=pd_known, num_gpus="6", tp=""),
        _row(2, engine="trtllm", layout=pd_zero, num_gpus="0", tp="", tpot_ms="10"),
        _row(3, engine="trtllm", layout=pd_zero, num_gpus="0", tp="", tpot_ms="20"),  # another run, other counts
        _row(4, layout="not a layout"),
    ]
    rows = [row_from_mapping(r, i) for i, r in enumerate(raw)]
    assert [layout_kind(r) for r in rows] == ["agg", "disagg", "disagg_counts_unknown", "disagg_counts_unknown", "not"]
    assert set(LAYOUT_KINDS) == {"agg", "disagg", "disagg_counts_unknown"}
    res = validate_rows(rows, CAT.model, CAT.gpu, CAL)
    kinds = res["summary_by_layout_kind"]
    assert set(kinds) == set(LAYOUT_KINDS)  # the unparsable row is unsupported, never scored
    assert [kinds[k]["tpot_ms"]["n"] for k in LAYOUT_KINDS] == [1, 1, 2]
    assert sum(k["ttft_ms"]["n"] for k in kinds.values()) == res["summary"]["ttft_ms"]["n"] == 4
    floors = res["repeat_floor_by_layout_kind"]
    assert floors["disagg_counts_unknown"] == repeat_floor(rows[2:4])
    assert floors["disagg_counts_unknown"]["tpot_ms"]["twin_mape"] == pytest.approx((1.0 + 0.5) / 2)
    assert floors["agg"]["rows"] == floors["disagg"]["rows"] == 0
    assert res["repeat_floor"]["rows"] == 2


def test_repeat_floor_leaves_out_only_verbatim_copies_and_ignores_missing_values():
    def floor(pairs: list[tuple[str, str]]) -> dict:
        return repeat_floor([row_from_mapping(_row(i, ttft_ms=t, tpot_ms=d), i) for i, (t, d) in enumerate(pairs)])

    # TPOT 10, 10, 10, 20 measured in four runs (TTFTs differ): a 10 is predicted by the other runs' median (10),
    # the 20 by 10
    rep = floor([("100", "10"), ("110", "10"), ("120", "10"), ("130", "20")])
    assert rep["tpot_ms"]["twin_mape"] == pytest.approx(0.5 / 4) and rep["rows"] == 4
    # a verbatim copy is the same measurement: each copy of (100, 10) is predicted by the other run alone
    rep = floor([("100", "10"), ("100", "10"), ("100", "20")])
    assert rep["tpot_ms"]["twin_mape"] == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    assert rep["ttft_ms"]["rows"] == 0 and rep["rows"] == 3 and rep["groups"] == 1
    # a value one run did not measure disagrees with nothing
    rep = floor([("100", "10"), ("100", "")])
    assert rep["rows"] == 0 and rep["groups"] == 0 and rep["tpot_ms"]["n"] == 1
    assert rep["tpot_ms"]["oracle_floor"] == 0.0 and rep["tpot_ms"]["twin_mape"] is None
    assert floor([])["tpot_ms"] == {"n": 0, "rows": 0, "oracle_floor": None, "twin_mape": None, "twin_points": None}


def test_bad_rows_name_the_field():
    with pytest.raises(ConfigError, match="isl"):
        row_from_mapping(_row(0, isl="abc"), 7)
    with pytest.raises(ConfigError, match="concurrency"):
        row_from_mapping(_row(0, concurrency="-3"), 7)
    assert row_from_mapping(_row(0, concurrency="offline"), 1).concurrency is None


def test_a_measured_value_is_positive_or_blank():
    # a negative, zero or infinite measurement is refused with its field (it was read as "not measured")
    for bad in ("-5", "0", "inf"):
        with pytest.raises(ConfigError, match=f"row 7: ttft_ms='{bad}' is not a positive measurement"):
            row_from_mapping(_row(0, ttft_ms=bad), 7)
    # blank, and NaN as exporters write a missing value, are "not measured"; so is the TPOT 0 of one output token
    assert row_from_mapping(_row(0, ttft_ms="NaN"), 7).measured["ttft_ms"] is None
    assert row_from_mapping(_row(0, tpot_ms=""), 7).measured["tpot_ms"] is None
    assert row_from_mapping(_row(0, osl="1", tpot_ms="0"), 7).measured["tpot_ms"] is None
    with pytest.raises(ConfigError, match="tpot_ms='0'"):
        row_from_mapping(_row(0, osl="2", tpot_ms="0"), 7)


def test_max_num_seqs_is_per_attention_dp_rank():
    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("b200_sxm")
    p = PerfModel.build(m, g, tp=1, attention_dp=8, ep=8, weight_precision="fp4", kv_dtype="fp8", engine="trtllm")
    r = estimate_closed_loop(p, 1024, 1024, 64, max_num_seqs=16)
    assert r.running_seqs == 64 and r.limited_by == "concurrency"  # 8 ranks x 16
    r = estimate_closed_loop(p, 1024, 1024, 256, max_num_seqs=16)
    assert r.running_seqs == 128 and r.limited_by == "max_num_seqs"


def test_disaggregated_decode_admission_wait_lands_in_ttft_and_unknown_counts_admit_everyone():
    """The client streams from the decode engine: its first token comes with the first decode step, after any
    wait for a decode seat, so the wait is in TTFT and TPOT is the decode step."""
    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("b200_sxm")
    pre = PerfModel.build(m, g, tp=8, ep=8, weight_precision="fp4", kv_dtype="fp8", engine="trtllm")
    dec = PerfModel.build(m, g, tp=8, ep=8, weight_precision="fp4", kv_dtype="fp8", engine="trtllm")
    cap = own_scheduler_limits(dec)[0]
    known = estimate_disaggregated(pre, dec, 1024, 1024, 2 * cap, num_prefill=4, num_decode=1)
    assert known.limited_by == "max_num_seqs" and known.queue_wait_ms > 0
    step_ms = dec.step_time_s(0, 0.0, cap, cap * 1536) * 1e3
    assert known.tpot_ms == pytest.approx(step_ms, rel=1e-9)
    # closed loop: every client is somewhere in its cycle (Little's law), and with every seat busy the replica
    # serves cap requests per seat-holding time
    assert known.request_rate_per_s * known.e2e_ms / 1e3 == pytest.approx(2 * cap, rel=1e-6)
    # more clients than seats but a long prefill before each seat: no wait, every client still cycles
    long = estimate_disaggregated(pre, dec, 8192, 64, cap + cap // 8, num_prefill=1, num_decode=1)
    assert long.queue_wait_ms == 0
    assert long.request_rate_per_s * long.e2e_ms / 1e3 == pytest.approx(cap + cap // 8, rel=1e-6)
    one = estimate_disaggregated(pre, dec, 1024, 1024, cap, num_prefill=4, num_decode=1)
    assert one.queue_wait_ms == 0 and known.ttft_ms > one.ttft_ms + known.queue_wait_ms * 0.99
    unknown = estimate_disaggregated(pre, dec, 1024, 1024, 2 * cap, num_prefill=None, num_decode=None)
    assert unknown.queue_wait_ms == 0 and unknown.ttft_ms < known.ttft_ms
    # at least the two replicas the seats need (TensorRT-LLM's KV, reserved for the whole output, may need more)
    assert unknown.pd_workers is not None and unknown.pd_workers[1] >= 2
    assert any(f"{unknown.pd_workers[1]} decode replica" in n for n in unknown.notes)


def test_wide_tensor_parallel_layouts_run_attention_data_parallel():
    """tp48 cannot shard 128 attention heads, nor tp64 stay inside a node: the rows are modelled as attention-DP
    ranks of the widest tensor parallelism that fits both, with the experts expert-parallel over all GPUs."""
    from gpuyield.core.perf.validation import MeasurementRow, _pool_model

    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("gb200")
    row = MeasurementRow(
        index=0, gpu="gb200", num_gpus=48, model=m.id, engine="trtllm", precision="fp4",
        layout="agg tp48 pp1 adp1 moe_tp48 ep1", tp=48, isl=1024, osl=1024, concurrency=64,
        num_requests=None, measured={}, source="test",
    )
    lay = parse_layout(row.layout, 48)
    assert lay.replica is not None
    p = _pool_model(m, g, lay.replica, row, CAL)  # gb200 trays of 4 GPUs: 12 attention-DP ranks of tp4
    assert (p.tp, p.attention_dp, p.ep, p.moe_tp) == (4, 12, 48, 1)
    # wider than a node: node-wide tensor-parallel groups, one attention-DP rank each
    lay64 = parse_layout("agg tp64 pp1 adp1 moe_tp8 ep8", 64)
    assert lay64.replica is not None
    for engine in ("sglang", "trtllm", "vllm"):
        p = _pool_model(m, CAT.gpu("b200_sxm"), lay64.replica, dataclasses.replace(row, engine=engine), CAL)
        assert (p.tp, p.attention_dp, p.ep, p.moe_tp) == (8, 8, 8, 8), engine
    # a degree that does not divide the heads keeps the widest one that does (Qwen3-32B: 64 heads)
    q = CAT.model("Qwen/Qwen3-32B")
    lay24 = parse_layout("agg tp24 pp1 adp1 moe_tp1 ep1", 24)
    assert lay24.replica is not None
    p = _pool_model(q, CAT.gpu("h100_sxm"), lay24.replica, dataclasses.replace(row, model=q.id), CAL)
    assert (p.tp, p.attention_dp) == (8, 3)
    # a tp that shards the heads inside one node is left alone
    lay8 = parse_layout("agg tp8 pp1 adp1 moe_tp8 ep1", 8)
    assert lay8.replica is not None
    p8 = _pool_model(m, CAT.gpu("b200_sxm"), lay8.replica, row, CAL)
    assert (p8.tp, p8.attention_dp) == (8, 1)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("agg tp2", (2, 1, 1, 1, None)),
        ("agg ep8 tp8", (8, 1, 1, 8, None)),
        ("agg tp2 pp1 adp1 moe_tp0 ep0", (2, 1, 1, 1, None)),  # dense rows in AIConfigurator's tables
        ("AGG  TP4 PP2", (4, 2, 1, 1, None)),
    ],
)
def test_partial_and_reordered_agg_layouts(text, want):
    r = parse_layout(text).replica
    assert r is not None and (r.tp, r.pp, r.adp, r.ep, r.moe_tp) == want


def test_disagg_pools_in_any_order_with_partial_parallelism():
    lay = parse_layout("disagg 1x decode(tp2) + 2x prefill(tp4 pp1 adp1 ep1)")
    assert lay.prefill is not None and lay.decode is not None
    assert (lay.prefill.count, lay.prefill.tp, lay.decode.count, lay.decode.tp) == (2, 4, 1, 2)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("agg tp2 foo1", "'foo1' not understood"), ("agg tp2 tp4", "tp given twice"), ("agg tp0", ">= 1"),
     ("disagg 1x prefill(tp2)", "not understood"), ("disagg 1x prefill(tp2) + 1x prefill(tp2)", "not understood")],
)  # fmt: skip
def test_bad_layouts_name_the_problem(text, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_layout(text)


@pytest.mark.parametrize(
    ("engine", "precision", "want"),
    [
        ("TensorRT-LLM", "FP8-Block", ("trtllm", "fp8")),
        ("vllm-0.11.0", "W4A16", ("vllm", "int4")),
        ("SGLang 0.5.3", "bfloat16", ("sglang", "bf16")),
        ("trt-llm", "NVFP4", ("trtllm", "nvfp4")),
    ],
)
def test_engine_and_precision_spellings_are_normalised(engine, precision, want):
    row = row_from_mapping({"isl": "100", "osl": "10", "concurrency": "4", "engine": engine, "precision": precision}, 0)
    assert (row.engine, row.precision) == want
    from gpuyield.core.perf.model import normalise_engine, normalise_precision

    assert normalise_engine("trtllm:disagg") == "trtllm:disagg" and normalise_engine("vllmx") == "vllmx"
    assert normalise_precision("w4a8") == "w4a8"  # no precision has int4 weights and fp8 compute: refused later


def test_bare_agg_row_without_tp_takes_the_smallest_replica_that_fits() -> None:
    from gpuyield.core.perf.validation import predict_row

    cat, cal = default_catalog(), default_calibration()
    base = {"isl": "1024", "osl": "256", "concurrency": "32", "engine": "sglang", "precision": "fp8",
            "layout": "agg", "tp": "", "gpu": "h200_sxm"}  # fmt: skip
    big = row_from_mapping({**base, "model": "deepseek-ai/DeepSeek-R1", "num_gpus": "8"}, 0)
    res = predict_row(big, cat.model, cat.gpu, cal)  # tp1 cannot hold 671 B parameters: tp8 does
    assert res.memory.fits and res.running_seqs >= 1
    small = row_from_mapping({**base, "model": "Qwen/Qwen3-8B", "num_gpus": "8"}, 1)
    one = row_from_mapping({**base, "model": "Qwen/Qwen3-8B", "num_gpus": "1"}, 2)
    # a small model fits on one GPU: eight tp1 replicas share the 32 clients (4 each)
    r8, r1 = predict_row(small, cat.model, cat.gpu, cal), predict_row(one, cat.model, cat.gpu, cal)
    assert r8.running_seqs == 4 and r1.running_seqs == 32
    assert r8.tpot_ms < r1.tpot_ms and r8.throughput_tok_s > r1.throughput_tok_s


def test_a_request_longer_than_the_models_context_gets_a_note():
    p = _perf()
    ctx = CAT.model("Qwen/Qwen3-32B").max_position_embeddings
    long = estimate_closed_loop(p, ctx, 1024, 1)
    assert any("exceeds Qwen/Qwen3-32B's context" in n for n in long.notes)
    assert not any("context of" in n for n in estimate_closed_loop(p, 1024, 1024, 1).notes)
    d = estimate_disaggregated(p, p, ctx, 1024, 1, num_prefill=1, num_decode=1)
    assert any("exceeds" in n for n in d.notes)


def test_first_token_overhead_grows_with_the_models_depth():
    import dataclasses

    from gpuyield.core.perf.calibration import EngineCoefficients
    from gpuyield.core.sim.closed_loop import estimate_with_engine_model

    ec = EngineCoefficients(ttft_overhead_s=0.01, ttft_per_layer_s=0.002)
    assert ec.first_token_overhead_s(64) == pytest.approx(0.01 + 0.128)
    base = dataclasses.replace(CAL, engines={**CAL.engines, "vllm": dataclasses.replace(
        CAL.engines["vllm"], ttft_overhead_s=0.0, ttft_per_layer_s=0.0)})  # fmt: skip
    deeper = dataclasses.replace(base, engines={**base.engines, "vllm": dataclasses.replace(
        base.engines["vllm"], ttft_per_layer_s=0.002)})  # fmt: skip
    for model, layers in (("Qwen/Qwen3-32B", 64), ("Qwen/Qwen3-8B", 36)):
        p0, p1 = (PerfModel.build(CAT.model(model), CAT.gpu("h100_sxm"), tp=2, calibration=c) for c in (base, deeper))
        assert p1.model.num_layers == layers
        # the analytic solver and the engine model both add 2 ms per decoder layer to every first token
        a0, a1 = estimate_closed_loop(p0, 1024, 64, 2), estimate_closed_loop(p1, 1024, 64, 2)
        assert a1.ttft_ms - a0.ttft_ms == pytest.approx(2.0 * layers, rel=1e-6)
        s0, s1 = (estimate_with_engine_model(p, 1024, 64, concurrency=2) for p in (p0, p1))
        assert s1.ttft_ms - s0.ttft_ms == pytest.approx(2.0 * layers, rel=1e-6)
        d0 = estimate_disaggregated(p0, p0, 1024, 64, 2, num_prefill=1, num_decode=1)
        d1 = estimate_disaggregated(p1, p1, 1024, 64, 2, num_prefill=1, num_decode=1)
        assert d1.ttft_ms - d0.ttft_ms == pytest.approx(2.0 * layers, rel=1e-6)


def test_a_calibration_may_set_a_first_token_term_to_zero_but_not_below():
    from gpuyield.core.perf.calibration import calibration_from_dict, calibration_to_dict

    d = calibration_to_dict(CAL)
    d.pop("corrections", None)
    d["engines"]["vllm"]["ttft_overhead_s"] = 0
    assert calibration_from_dict(d).engines["vllm"].ttft_overhead_s == 0.0
    d["engines"]["vllm"]["ttft_per_layer_s"] = -1e-3
    with pytest.raises(ConfigError, match="ttft_per_layer_s"):
        calibration_from_dict(d)
    d["engines"]["vllm"]["ttft_per_layer_s"] = 1e-3
    d["engines"]["vllm"]["prefill_scale"] = 0
    with pytest.raises(ConfigError, match="prefill_scale"):
        calibration_from_dict(d)


def test_a_pd_deployment_with_worker_counts_decodes_at_its_familys_speed(monkeypatch):
    """The fitted P/D decode_scale (shipped: 0.5) is that of the campaign that did not record its worker counts; a
    layout that gives them decodes at the aggregated family's speed, its prefill pool keeping the P/D constants."""
    from gpuyield.core.perf import validation

    seen: dict[str, tuple[float, float, str]] = {}
    real = validation.estimate_disaggregated

    def spy(pre, dec, *args, **kw):
        seen["last"] = (pre.engine_coeffs.decode_scale, dec.engine_coeffs.decode_scale, dec.engine)
        return real(pre, dec, *args, **kw)

    monkeypatch.setattr(validation, "estimate_disaggregated", spy)
    fam = CAL.engine_for("trtllm", "h100_sxm", "bf16").decode_scale
    pd = CAL.engine_for("trtllm:disagg", "h100_sxm", "bf16").decode_scale
    assert pd < fam  # the shipped calibration: the campaign decoded about twice as fast
    tpot = {}
    for counts in ("2x", "0x"):
        layout = f"disagg {counts} prefill(tp2 adp1 ep1) + {counts[0] if counts == '0x' else '1'}x decode(tp4 adp1 ep1)"
        row = row_from_mapping(_row(0, engine="trtllm", layout=layout, num_gpus="8" if counts == "2x" else "0", tp=""), 0)
        tpot[counts] = validation.predict_row(row, CAT.model, CAT.gpu, CAL).tpot_ms
        pre_s, dec_s, eng = seen["last"]
        assert eng == "trtllm:disagg" and pre_s == pytest.approx(pd)
        assert dec_s == pytest.approx(fam if counts == "2x" else pd), counts
    assert tpot["2x"] > 1.5 * tpot["0x"]


def test_with_decode_scale_rescales_every_op_and_refuses_nonsense():
    p = _perf()
    base = p.step_time_s(512, 512.0**2 / 2, 16, 16 * 1024)
    half = p.with_decode_scale(p.engine_coeffs.decode_scale / 2)
    assert half.step_time_s(512, 512.0**2 / 2, 16, 16 * 1024) < base
    assert p.step_time_s(512, 512.0**2 / 2, 16, 16 * 1024) == base  # a copy: the original is unchanged
    assert half.engine_coeffs.decode_scale == pytest.approx(p.engine_coeffs.decode_scale / 2)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="decode_scale"):
            p.with_decode_scale(bad)
    half.notes.append("only the copy's")
    assert "only the copy's" not in p.notes  # the copy's notes are its own
