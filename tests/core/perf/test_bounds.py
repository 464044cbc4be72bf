"""Physical floors under closed-loop measurements, and validate's use of them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.bounds import closed_loop_floor
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.validation import (
    SPECULATIVE_TOKENS_PER_STEP,
    implausible_reason,
    measurement_floor,
    row_from_mapping,
    validate_rows,
)
from gpuyield.errors import ConfigError

CAT = default_catalog()
CAL = default_calibration()


def _floor(**kw):  # type: ignore[no-untyped-def]
    args = dict(
        concurrency=10, isl=1000, osl=101, num_gpus=2, params_active=1e9, kv_bytes_at_isl=1e6,
        peak_flops_per_gpu=1e15, memory_bytes_per_s_per_gpu=1e12,
    )  # fmt: skip
    args.update(kw)
    return closed_loop_floor(**args)


def test_floor_is_the_larger_of_the_compute_and_memory_rates():
    f = _floor()
    # compute: 10 clients x 2 x 1e9 x 1000 FLOPs / 2e15 FLOP/s = 10 ms
    assert f.compute_e2e_ms == pytest.approx(10.0)
    # memory: 10 x 100 output tokens x 1 MB / 2e12 B/s = 0.5 ms
    assert f.memory_e2e_ms == pytest.approx(0.5)
    assert f.e2e_ms == f.compute_e2e_ms and f.bound_by == "compute"
    m = _floor(kv_bytes_at_isl=1e9)
    assert m.bound_by == "memory" and m.e2e_ms == pytest.approx(500.0)
    assert _floor(osl=1).memory_e2e_ms == 0.0  # one output token: no decode reads
    # speculative decoding: one read of the cache per verification step, several tokens accepted
    assert _floor(kv_bytes_at_isl=1e9, tokens_per_cache_read=4).memory_e2e_ms == pytest.approx(125.0)
    for bad in ({"concurrency": 0}, {"num_gpus": 0}, {"memory_bytes_per_s_per_gpu": 0.0}, {"params_active": -1},
                {"tokens_per_cache_read": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            _floor(**bad)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4096), st.integers(1, 64), st.integers(1, 32768), st.integers(1, 8192))
def test_floor_scales_with_clients_and_shrinks_with_gpus(c, g, isl, osl):
    f = _floor(concurrency=c, num_gpus=g, isl=isl, osl=osl)
    twice = _floor(concurrency=2 * c, num_gpus=g, isl=isl, osl=osl)
    wider = _floor(concurrency=c, num_gpus=2 * g, isl=isl, osl=osl)
    assert twice.e2e_ms == pytest.approx(2 * f.e2e_ms)
    assert wider.e2e_ms == pytest.approx(f.e2e_ms / 2)


def _row(i: int = 0, **kw: str):  # type: ignore[no-untyped-def]
    base = {
        "gpu": "h100_sxm", "num_gpus": "1", "model": "Qwen/Qwen3-32B", "engine": "vllm", "precision": "bf16",
        "layout": "agg tp1 pp1 adp1", "tp": "1", "isl": "8000", "osl": "500", "concurrency": "400",
        "num_requests": "", "ttft_ms": "300", "tpot_ms": "10", "e2e_ms": "", "throughput_tok_s": "", "source": "t",
    }  # fmt: skip
    base.update(kw)
    return row_from_mapping(base, i)


def test_an_impossible_row_is_flagged_still_scored_and_left_out_of_the_plausible_summary():
    # 400 clients of 8,000-token prompts on one H100 cannot finish a request every 5.3 s / 400
    bad = _row(0)
    got = measurement_floor(bad, CAT.model, CAT.gpu)
    assert got is not None and got[1] == pytest.approx(300 + 499 * 10)
    assert got[0].e2e_ms > got[1]
    reason = implausible_reason(bad, CAT.model, CAT.gpu)
    assert reason is not None and "physical floor" in reason and "400 clients" in reason
    # the same clients on 64 GPUs (num_gpus counts replicas) could have done it
    assert implausible_reason(_row(0, num_gpus="64"), CAT.model, CAT.gpu) is None
    ok = _row(1, concurrency="4", ttft_ms="900", tpot_ms="30")
    assert implausible_reason(ok, CAT.model, CAT.gpu) is None
    res = validate_rows([bad, ok], CAT.model, CAT.gpu, CAL, corrections=False)
    assert res["implausible"] == [{"row": 0, "reason": reason}]
    assert res["summary"]["ttft_ms"]["n"] == 2 and res["summary_plausible"]["ttft_ms"]["n"] == 1
    assert res["rows"][0]["implausible"] == reason and "implausible" not in res["rows"][1]


def test_the_floor_leaves_out_what_a_real_run_can_skip():
    row = _row(0)
    got = measurement_floor(row, CAT.model, CAT.gpu)
    assert got is not None
    floor = got[0]
    model, gpu = CAT.model("Qwen/Qwen3-32B"), CAT.gpu("h100_sxm")
    # compute: decoder GEMMs only (no LM head), at the GPU's fastest dense rate
    p = sum(g.params_active for g in model.gemm_shapes if g.group != "lm_head")
    assert p < model.params_active
    rate = max(r for r in (gpu.bf16_dense_tflops, gpu.fp8_dense_tflops, gpu.fp4_dense_tflops, gpu.int8_dense_tops) if r)
    assert floor.compute_e2e_ms == pytest.approx(400 * 2 * p * 8000 / (rate * 1e12) * 1e3)
    # memory: the prompt's cache at 4 bits, once per SPECULATIVE_TOKENS_PER_STEP tokens
    kv = model.kv_bytes_for_context(8000, "fp4")
    assert floor.memory_e2e_ms == pytest.approx(
        400 * 499 * kv / (SPECULATIVE_TOKENS_PER_STEP * gpu.memory_bandwidth_bytes_per_s) * 1e3
    )
    # sparse (indexed) attention reads a top-k subset of the cache: only the compute floor is used
    sparse = next((m for m in CAT.models if m.index_head_dim), None)
    if sparse is not None:
        got = measurement_floor(_row(0, model=sparse.id, num_gpus="64", layout="agg tp8 pp1 adp1"), CAT.model, CAT.gpu)
        assert got is not None and got[0].memory_e2e_ms == 0.0


def test_rows_that_do_not_say_enough_are_not_judged():
    assert measurement_floor(_row(0, num_gpus=""), CAT.model, CAT.gpu) is None  # deployment size unknown
    assert measurement_floor(_row(0, concurrency="offline", num_requests="400"), CAT.model, CAT.gpu) is None
    assert measurement_floor(_row(0, ttft_ms="", tpot_ms=""), CAT.model, CAT.gpu) is None
    assert measurement_floor(_row(0, model="not/a-model"), CAT.model, CAT.gpu) is None
    # the e2e column wins when given
    got = measurement_floor(_row(0, e2e_ms="123456"), CAT.model, CAT.gpu)
    assert got is not None and got[1] == 123456
    disagg = _row(0, layout="disagg 0x prefill(tp1 adp1 ep1) + 0x decode(tp1 adp1 ep1)", num_gpus="0")
    assert measurement_floor(disagg, CAT.model, CAT.gpu) is None
    # concurrency 0 is not a closed loop: not judged here (validate lists the row as unsupported)
    assert measurement_floor(_row(0, concurrency="0"), CAT.model, CAT.gpu) is None
    res = validate_rows([_row(0, concurrency="0")], CAT.model, CAT.gpu, CAL, corrections=False)
    assert res["implausible"] == [] and len(res["unsupported"]) == 1
    counted = _row(0, layout="disagg 2x prefill(tp1 adp1 ep1) + 1x decode(tp2 adp1 ep1)", num_gpus="0")
    got = measurement_floor(counted, CAT.model, CAT.gpu)
    assert got is not None
    assert got[0].e2e_ms == pytest.approx(measurement_floor(_row(0, num_gpus="4"), CAT.model, CAT.gpu)[0].e2e_ms)
    # a num_gpus below the worker counts' total (per pool, say) does not raise the floor
    fewer = dataclasses.replace(counted, num_gpus=2)
    assert measurement_floor(fewer, CAT.model, CAT.gpu)[0].e2e_ms == pytest.approx(got[0].e2e_ms)


TRAIN = Path(__file__).resolve().parents[3].parent / "shared/data/measurements/e2e_train.csv"


@pytest.mark.skipif(not TRAIN.exists(), reason="shared training data not present")
def test_on_the_training_rows_only_the_three_known_impossible_rows_are_flagged():
    from gpuyield.edges.perf.calibrate import load_measurements

    rows = load_measurements(TRAIN)
    flagged = {r.index: r.model for r in rows if implausible_reason(r, CAT.model, CAT.gpu)}
    assert flagged == {890: "nvidia/Qwen3-32B-NVFP4", 912: "nvidia/Qwen3-32B-NVFP4", 913: "nvidia/Qwen3-32B-NVFP4"}
    # and every other checkable row clears its floor by a wide margin (no borderline calls)
    margins = []
    for r in rows:
        got = measurement_floor(r, CAT.model, CAT.gpu)
        if got is not None and r.index not in flagged:
            margins.append(got[1] / got[0].e2e_ms)
    assert len(margins) > 3000 and min(margins) > 2.0
