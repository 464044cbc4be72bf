"""One rule for the engine constants of a pool of each role (``PerfModel.build_pool``), used by ``estimate --layout``,
``validate``, ``simulate`` and ``plan`` alike."""

from __future__ import annotations

import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import PerfModel
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.model import POOL_ROLES
from gpuyield.errors import ConfigError

CAT = default_catalog()
CAL = default_calibration()
QWEN = CAT.model("Qwen/Qwen3-32B")
H100 = CAT.gpu("h100_sxm")


def _pool(role: str, engine: str = "trtllm", tp: int = 4, **kw: object) -> PerfModel:
    return PerfModel.build_pool(QWEN, H100, role, engine=engine, calibration=CAL, tp=tp, **kw)  # type: ignore[arg-type]


def test_each_role_runs_its_constants():
    fam = CAL.engine_for("trtllm", "h100_sxm", "bf16")
    pd = CAL.engine_for("trtllm:disagg", "h100_sxm", "bf16")
    assert pd.decode_scale != fam.decode_scale and pd.prefill_scale != fam.prefill_scale  # the shipped fit
    mixed, pre = _pool("mixed"), _pool("prefill")
    dec, dec_campaign = _pool("decode"), _pool("decode", worker_counts_known=False)
    assert mixed.engine == "trtllm" and mixed.engine_coeffs == fam
    assert pre.engine == "trtllm:disagg" and pre.engine_coeffs == pd
    # a decode pool of a deployment with its worker counts decodes at the family's speed, other constants P/D
    assert dec.engine_coeffs.decode_scale == fam.decode_scale
    assert dec.engine_coeffs.prefill_scale == pd.prefill_scale and dec.engine_coeffs.decode_attn_scale == pd.decode_attn_scale
    assert dec_campaign.engine_coeffs == pd  # the campaign that recorded no counts: its own decode speed
    # the same step differs by role exactly as the constants say
    args = (0, 0.0, 64, 64 * 2048)
    assert dec_campaign.step_time_s(*args) < dec.step_time_s(*args)
    assert _pool("mixed", engine="TensorRT-LLM:disagg").engine == "trtllm"  # a mode in the name is the role's
    assert set(POOL_ROLES) == {"mixed", "prefill", "decode"}
    with pytest.raises(ConfigError, match="pool role"):
        _pool("replica")


def test_a_family_without_pd_constants_runs_its_own_in_every_role():
    """vLLM has no fitted P/D constants: every role falls back to the family's, memory plan included (the
    hybrid-model page sizing is vLLM's whatever the role)."""
    hybrid = CAT.model("Qwen/Qwen3.5-27B")
    plans = []
    for role in POOL_ROLES:
        p = PerfModel.build_pool(hybrid, H100, role, engine="vllm", calibration=CAL, tp=2)
        assert p.family == "vllm" and p.engine_coeffs == CAL.engine_for("vllm", "h100_sxm", "bf16")
        plans.append(p.memory(0.9))
    assert plans[0].hybrid_block_tokens > 0  # vLLM's hybrid pages apply ...
    assert all(m.kv_capacity_tokens == plans[0].kv_capacity_tokens for m in plans)  # ... in every role
    assert all(m.hybrid_block_tokens == plans[0].hybrid_block_tokens for m in plans)


def test_simulate_plan_and_validate_build_a_pd_pool_alike():
    from gpuyield.core.perf.validation import predict_row, row_from_mapping
    from gpuyield.core.plan.context import PlanContext
    from gpuyield.core.plan.space import Candidate, PoolShape
    from gpuyield.core.plan.to_deployment import candidate_to_deployment
    from gpuyield.core.sim.simulate import build_cluster

    pools = (PoolShape("prefill", "h100_sxm", tp=2), PoolShape("decode", "h100_sxm", tp=4))
    ctx = PlanContext(CAT, QWEN, engine="trtllm", calibration=CAL)
    planned = {p.role: ctx.perf_for(p).step for p in pools}  # type: ignore[union-attr]
    dep = candidate_to_deployment(Candidate(pools, "round_robin", (1, 1)), 1, QWEN.id, engine="trtllm",
                                  prices={"h100_sxm": 2.5})  # fmt: skip
    cluster, _ = build_cluster(dep, CAT, calibration=CAL)
    simulated = {rt.setup.role: rt.setup.step_model for rt in cluster.rts}
    seen = {}

    from gpuyield.core.perf import validation

    real = validation.estimate_disaggregated

    def spy(pre, dec, *args, **kw):
        seen.update(prefill=pre, decode=dec)
        return real(pre, dec, *args, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(validation, "estimate_disaggregated", spy)
    try:
        fields = dict(gpu="h100_sxm", num_gpus="6", model=QWEN.id, engine="trtllm", precision="bf16",
                      layout="disagg 1x prefill(tp2 adp1 ep1) + 1x decode(tp4 adp1 ep1)", tp="", isl="1024",
                      osl="256", concurrency="16", num_requests="", ttft_ms="", tpot_ms="", e2e_ms="",
                      throughput_tok_s="", source="test")  # fmt: skip
        predict_row(row_from_mapping(fields, 0), CAT.model, CAT.gpu, CAL)
    finally:
        mp.undo()
    for role in ("prefill", "decode"):
        want = _pool(role, tp=2 if role == "prefill" else 4)
        step = (512, 512.0**2 / 2, 32, 32 * 1500)
        for face, got in (("plan", planned[role]), ("simulate", simulated[role]), ("validate", seen[role])):
            assert got.engine_coeffs == want.engine_coeffs, (face, role)
            assert got.step_time_s(*step) == pytest.approx(want.step_time_s(*step)), (face, role)


def test_model_rules_are_checked_when_a_calibration_loads():
    from gpuyield.core.perf.calibration import MODEL_RULES, calibration_from_dict, calibration_to_dict

    d = calibration_to_dict(CAL)
    d.pop("corrections")
    assert calibration_from_dict(d).model_rules == MODEL_RULES
    d.pop("model_rules")
    assert calibration_from_dict(d).model_rules == 0  # written before versions were kept
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ConfigError, match="model_rules"):
            calibration_from_dict({**d, "model_rules": bad})
    with pytest.raises(ConfigError, match="newer"):
        calibration_from_dict({**d, "model_rules": MODEL_RULES + 1})
    old = calibration_from_dict(d)
    assert any("model's rules v0" in n for n in PerfModel.build(QWEN, H100, calibration=old).notes)
    assert not any("model's rules" in n for n in PerfModel.build(QWEN, H100, calibration=CAL).notes)


def test_every_model_rules_version_says_what_changed():
    from gpuyield.core.perf.calibration import MODEL_RULES, MODEL_RULES_CHANGES

    assert sorted(MODEL_RULES_CHANGES) == list(range(1, MODEL_RULES + 1))
    assert all(text.strip() for text in MODEL_RULES_CHANGES.values())


def test_a_pd_pools_measured_scales_are_solved_against_its_own_constants():
    """The planner caches measured step scales per pool; a TensorRT-LLM decode pool (P/D constants) gets its own,
    whichever pool asks first (the cache is keyed by the pool's engine constants)."""
    from gpuyield.core.plan.context import PlanContext
    from gpuyield.core.plan.space import PoolShape

    dsr1 = CAT.model("deepseek-ai/DeepSeek-R1")
    shape = dict(gpu_id="b200_sxm", tp=8, ep=8, weight_precision="fp4", kv_dtype="fp8")
    scales = {}
    for order in (("decode", "mixed"), ("mixed", "decode")):
        ctx = PlanContext(CAT, dsr1, engine="trtllm", calibration=CAL, measured_at=(1024, 1024))
        got = {role: ctx.measured_scales(PoolShape(role, **shape)) for role in order}  # type: ignore[arg-type]
        assert got["mixed"] is not None and got["decode"] is not None
        assert got["mixed"].decode != got["decode"].decode  # solved against different step models
        scales[order] = got
    assert scales[("decode", "mixed")] == scales[("mixed", "decode")]  # whichever asked first
