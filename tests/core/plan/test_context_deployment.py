"""The planner against the real catalogue, performance model and deployment format (no simulation)."""

from __future__ import annotations

import pytest
import yaml

from gpuyield.core.catalog import default_catalog
from gpuyield.core.plan.context import PlanContext
from gpuyield.core.plan.space import Candidate, PoolShape, SearchSpace, enumerate_candidates
from gpuyield.core.plan.to_deployment import candidate_to_deployment, deployment_to_yaml
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.simulate import build_cluster

CAT = default_catalog()


@pytest.mark.parametrize("cand,level", [
    (Candidate((PoolShape("mixed", "h100_sxm", tp=2, max_num_seqs=128, max_num_batched_tokens=4096,
                          enable_prefix_caching=True, kv_offload="cpu"),), "prefix_affinity"), 3),
    (Candidate((PoolShape("prefill", "h100_sxm", max_num_batched_tokens=16384),
                PoolShape("decode", "l40s", max_num_seqs=256, max_num_batched_tokens=2048)), "least_outstanding", (1, 2)), 2),
])
def test_plan_yaml_round_trips_and_builds_a_cluster(cand: Candidate, level: int) -> None:
    dep = candidate_to_deployment(cand, level, "meta-llama/Llama-3.1-8B", prices={"h100_sxm": 2.5, "l40s": 1.5, "a100_sxm": 9})
    text = deployment_to_yaml(dep, "header line")
    assert text.startswith("# header line\n")
    back = parse_deployment(yaml.safe_load(text), "plan.yaml")
    assert back == dep
    assert [p.replicas for p in back.pools] == list(cand.replicas_at(level))
    assert set(back.prices) == {p.gpu_id for p in cand.pools}  # only the GPUs used
    if cand.disaggregated:
        assert back.pd is not None and back.is_disaggregated
    else:
        assert back.pools[0].engine.offload is not None and back.pools[0].engine.offload.capacity_gib == 256
    cluster, pools = build_cluster(back, CAT)
    assert sum(p["replicas"] for p in pools) == sum(cand.replicas_at(level))


def test_memory_rejections_name_the_shortfall() -> None:
    ctx = PlanContext(CAT, CAT.model("meta-llama/Llama-3.1-70B"))
    cands, rej = enumerate_candidates(SearchSpace(gpu_ids=("l40s", "h100_sxm"), allow_disaggregated=False), ctx.fits)
    rejected = {r.candidate for r in rej}
    assert "l40s tp1 wbf16/kvbf16" in rejected and "h100_sxm tp1 wbf16/kvbf16" in rejected
    assert all(r.kind == "memory" and r.reason for r in rej)
    assert min(c.pools[0].tp for c in cands if c.pools[0].gpu_id == "h100_sxm") >= 2


def test_prices_carry_source_and_date_and_owned_wins() -> None:
    from gpuyield.core.plan.economics import OwnedHardware

    ctx = PlanContext(CAT, CAT.model("meta-llama/Llama-3.1-8B"))
    p = ctx.price_for("h100_sxm")
    assert p.kind == "cloud" and p.source and p.as_of and p.usd_per_gpu_hour > 0
    owned = PlanContext(CAT, CAT.model("meta-llama/Llama-3.1-8B"),
                        owned={"h100_sxm": OwnedHardware(gpu="h100_sxm", capex_usd_per_gpu=30000)})
    o = owned.price_for("h100_sxm")
    assert o.kind == "owned" and set(o.breakdown_usd_per_gpu_hour) == {"capex", "power", "ops"}
    assert "defaults:" in o.source  # the fields left out came from the catalogue, and say so


def test_the_screen_and_the_simulator_time_a_measured_pool_alike() -> None:
    from gpuyield.core.perf import default_calibration
    from gpuyield.core.plan.simulator import SimulatorBinding  # noqa: F401  (the binding passes measured_at on)

    cal = default_calibration()
    pool = PoolShape("mixed", "h100_sxm", tp=4)
    on = PlanContext(CAT, CAT.model("Qwen/Qwen3-32B"), calibration=cal, measured_at=(1024, 256))
    off = PlanContext(CAT, CAT.model("Qwen/Qwen3-32B"), calibration=cal)
    step_on, step_off = on.perf_for(pool).step, off.perf_for(pool).step  # type: ignore[union-attr]
    assert step_off.measured is None and step_on.measured is not None
    assert step_on.measured is on.measured_scales(pool)
    assert step_on.step_time_s(0, 0.0, 64, 64 * 1200) != step_off.step_time_s(0, 0.0, 64, 64 * 1200)
    dep = candidate_to_deployment(Candidate((pool,), "round_robin"), 1, "Qwen/Qwen3-32B", prices={"h100_sxm": 2.5})
    cluster, info = build_cluster(dep, CAT, calibration=cal, measured_at=(1024, 256))
    sim_step = cluster.rts[0].setup.step_model
    assert sim_step.measured == step_on.measured and info[0]["measured_step_scales"] == step_on.measured.to_dict()
    # a decode (or prefill) pool takes the scales of an aggregated replica of its shape: the same kernels and, for
    # vLLM (no P/D constants fitted), the same engine constants (PerfModel.build_pool)
    assert on.perf_for(PoolShape("decode", "h100_sxm", tp=4)).step.measured is step_on.measured  # type: ignore[union-attr]
