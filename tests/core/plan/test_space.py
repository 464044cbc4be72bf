"""Candidate enumeration respects the flags; SLO parsing."""

from __future__ import annotations

import dataclasses

import pytest

from gpuyield.core.plan.space import Candidate, PoolShape, SearchSpace, enumerate_candidates
from gpuyield.core.plan.spec import PlanMode, PlanRequest, Slo, parse_slo
from gpuyield.errors import ConfigError


def fits_small(gpu: str, tp: int, pp: int, wp: str, kvd: str) -> str | None:
    # "small" GPUs need TP >= 2 in bf16, TP >= 1 in fp8; "big" always fits
    if gpu == "small" and tp * pp < (1 if wp == "fp8" else 2):
        return f"weights {16 if wp == 'bf16' else 8} GB > {gpu} memory at tp{tp}"
    return None


def test_enumeration_counts_and_memory_rejections() -> None:
    space = SearchSpace(gpu_ids=("big", "small"), allow_disaggregated=False)
    cands, rej = enumerate_candidates(space, fits_small)
    # big: 4 TPs, small: 3 TPs; knobs 4*3; pc/offload pairs (on,none),(on,cpu),(off,none); 3 routers
    assert len(cands) == (4 + 3) * 4 * 3 * (3 * 4 - 1)
    assert all(c.pools[0].weight_precision == "bf16" and c.pools[0].kv_dtype == "bf16" for c in cands)
    assert [r.candidate for r in rej] == ["small tp1 wbf16/kvbf16"] and rej[0].kind == "memory"
    assert not any(c.pools[0].kv_offload == "cpu" and not c.pools[0].enable_prefix_caching for c in cands)
    assert len({c.key() for c in cands}) == len(cands)


def test_lower_precision_only_with_flag_and_native_support() -> None:
    plain = SearchSpace.for_request(("big",), allow_lower_precision=False, allow_disaggregated=False, is_moe=False)
    assert plain.weight_precisions == ("bf16",) and plain.kv_dtypes == ("bf16",)
    low = SearchSpace.for_request(("big", "small"), allow_lower_precision=True, allow_disaggregated=False, is_moe=False)
    cands, rej = enumerate_candidates(low, fits_small, lambda g, p: not (g == "small" and p == "fp8"))
    assert {c.pools[0].weight_precision for c in cands if c.pools[0].gpu_id == "big"} == {"bf16", "fp8"}
    assert {c.pools[0].weight_precision for c in cands if c.pools[0].gpu_id == "small"} == {"bf16"}
    assert any(r.kind == "precision" and "small" in r.candidate for r in rej)


def test_pp_only_when_no_single_node_tp_fits_and_ep_only_for_moe() -> None:
    def fits_huge(gpu: str, tp: int, pp: int, wp: str, kvd: str) -> str | None:
        return None if tp * pp >= 16 else "too big"

    space = SearchSpace(gpu_ids=("g",), allow_disaggregated=False, is_moe=True)
    cands, rej = enumerate_candidates(space, fits_huge)
    # experts spread over one pipeline stage's GPUs (each stage holds its own layers' experts)
    assert {(c.pools[0].tp, c.pools[0].pp, c.pools[0].ep) for c in cands} == {(8, 2, 8)}
    assert len(rej) == 4
    dense, _ = enumerate_candidates(SearchSpace(gpu_ids=("g",), allow_disaggregated=False), lambda *a: None)
    assert {c.pools[0].pp for c in dense} == {1} and {c.pools[0].ep for c in dense} == {1}


def test_disaggregated_candidates_mix_gpu_types() -> None:
    space = SearchSpace(gpu_ids=("a", "b"), tp_options=(1,), max_num_seqs_options=(128,), routers=("round_robin",),
                        max_num_batched_tokens_options=(8192,), prefix_caching_options=(True,), kv_offload_options=("none",))
    cands, _ = enumerate_candidates(space, lambda *a: None)
    pd = [c for c in cands if c.disaggregated]
    assert {(c.pools[0].gpu_id, c.pools[1].gpu_id) for c in pd} == {("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")}
    c = pd[0]
    assert c.pools[0].role == "prefill" and c.pools[1].role == "decode"
    x, y = c.pd_ratio  # type: ignore[misc]
    assert c.replicas_at(3) == (3 * x, 3 * y)
    assert c.num_gpus_at(2) == 2 * x + 2 * y


def test_candidate_sizes() -> None:
    c = Candidate((PoolShape("mixed", "g", tp=2),), "round_robin")
    assert c.replicas_at(5) == (5,) and c.num_gpus_at(5) == 10 and not c.disaggregated


def test_parse_slo() -> None:
    s = parse_slo("ttft_p99_ms=2000,tpot_p99_ms=100")
    assert s.targets() == {"ttft_p99_ms": 2000.0, "tpot_p99_ms": 100.0}
    assert parse_slo("ttft_p99=2s").ttft_p99_ms == 2000.0
    assert s.violations({"ttft_p99_ms": 2500.0, "tpot_p99_ms": 50.0}) == [("ttft_p99_ms", 2500.0, 2000.0)]
    assert s.violations({"ttft_p99_ms": 10.0}) [0][0] == "tpot_p99_ms"  # a missing metric is a miss
    for bad, match in (("ttft_p99_ms", "KEY=VALUE"), ("latency=3", "expected one of"), ("ttft_p99_ms=-1", "positive"),
                       ("ttft_p99_ms=abc", "number"), ("", "at least one")):
        with pytest.raises(ConfigError, match=match):
            parse_slo(bad)


def test_plan_request_validation() -> None:
    slo = Slo(ttft_p99_ms=1000)
    with pytest.raises(ConfigError, match="--gpus"):
        PlanRequest("m", slo, ())
    with pytest.raises(ConfigError, match="budget"):
        PlanRequest("m", slo, ("g",), mode=PlanMode.MAX_GOODPUT)
    with pytest.raises(ConfigError, match="max-gpus"):
        PlanRequest("m", slo, ("g",), mode=PlanMode.CAPACITY)


def test_speculative_plans_keep_budgets_that_hold_a_full_batch_of_drafts() -> None:
    space = SearchSpace(gpu_ids=("g",), tp_options=(1,), routers=("round_robin",), prefix_caching_options=(True,),
                        kv_offload_options=("none",), decode_budget_tokens=5)  # fmt: skip
    cands, _ = enumerate_candidates(space, lambda *a: None)
    mixed = [c.pools[0] for c in cands if not c.disaggregated]
    assert mixed and all(p.max_num_batched_tokens >= 5 * p.max_num_seqs for p in mixed)
    shapes = {(p.max_num_seqs, p.max_num_batched_tokens) for p in mixed}
    assert (512, 2048) not in shapes and (256, 2048) in shapes  # 5 x 512 > 2048 >= 5 x 256
    decode = [c.pools[1] for c in cands if c.disaggregated]
    assert decode and all(p.max_num_batched_tokens >= 5 * p.max_num_seqs for p in decode)


def test_a_quantised_checkpoint_is_planned_as_shipped() -> None:
    """A natively fp8 checkpoint is planned at fp8, not upcast to bf16, and runs on a GPU without fp8 tensor cores
    (weight-only kernels); a model whose cache must be fp8 gets only fp8 KV; a bf16 checkpoint still needs the flag."""
    fp8 = SearchSpace.for_request(("big", "small"), allow_lower_precision=False, allow_disaggregated=False, is_moe=True,
                                  native_precision="fp8", kv_dtypes=("fp8",))
    assert fp8.weight_precisions == ("fp8",) and fp8.kv_dtypes == ("fp8",)
    cands, rej = enumerate_candidates(fp8, lambda g, tp, pp, wp, kvd: None, lambda g, p: g == "big" or p == "bf16")
    # "small" lacks fp8: the checkpoint's own weights run there, the fp8 KV the model needs does not
    assert {c.pools[0].gpu_id for c in cands} == {"big"} and any("small" in r.candidate for r in rej)
    cands, _ = enumerate_candidates(
        SearchSpace.for_request(("small",), allow_lower_precision=False, allow_disaggregated=False, is_moe=True,
                                native_precision="mxfp4"),
        lambda g, tp, pp, wp, kvd: None, lambda g, p: p == "bf16")
    assert cands and {c.pools[0].weight_precision for c in cands} == {"mxfp4"}
    low = SearchSpace.for_request(("big",), allow_lower_precision=True, allow_disaggregated=False, is_moe=False,
                                  native_precision="nvfp4")
    assert low.weight_precisions == ("fp4",) and low.kv_dtypes == ("bf16", "fp8")


def test_the_naive_baseline_runs_the_checkpoint_as_shipped() -> None:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.plan.context import PlanContext

    cat = default_catalog()
    gpt = PlanContext(cat, cat.model("openai/gpt-oss-120b")).naive_pool("h100_sxm", 1)
    assert (gpt.weight_precision, gpt.kv_dtype) == ("mxfp4", "bf16")
    v4 = PlanContext(cat, cat.model("deepseek-ai/DeepSeek-V4-Flash")).naive_pool("b200_sxm", 4)
    assert (v4.weight_precision, v4.kv_dtype) == ("mxfp4", "fp8")  # fp4 experts, fp8 elsewhere (native_dense_dtype)
    r1_fp4 = PlanContext(cat, cat.model("deepseek-ai/DeepSeek-R1"), checkpoint_dtype="nvfp4").naive_pool("b200_sxm", 8)
    assert r1_fp4.weight_precision == "fp4"



def test_models_sharing_gpus_each_keep_their_checkpoint_precision() -> None:
    """gpt-oss (mxfp4) beside Llama (bf16) on one GPU: each engine process loads its own checkpoint, so each model
    is sized and timed at its own precision (it used to fall back to bf16 for the whole group)."""
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel
    from gpuyield.core.plan.placement import ModelDemand, _multiplex_deployment, checkpoint_precisions
    from gpuyield.core.sim.cluster import ReplicaSetup
    from gpuyield.core.sim.deployment import EngineSpec
    from gpuyield.core.sim.multiplex import build_multiplex

    cat = default_catalog()
    demands = [ModelDemand("oss", "openai/gpt-oss-20b", 1, 1.0, 1, 1), ModelDemand("llama", "meta-llama/Llama-3.1-8B", 1, 1.0, 1, 1),
               ModelDemand("r1", "deepseek-ai/DeepSeek-R1", 1, 1.0, 1, 1)]  # fmt: skip
    precisions = checkpoint_precisions(cat, demands)
    assert precisions == {"oss": "mxfp4", "llama": "bf16", "r1": "fp8"}
    # the quality flag quantises the 16-bit checkpoint only
    assert checkpoint_precisions(cat, demands, lower=True) == {"oss": "mxfp4", "llama": "fp8", "r1": "fp8"}
    # a label naming a release is planned at that release's precision
    nv = [ModelDemand("nvidia/DeepSeek-R1-NVFP4", "deepseek-ai/DeepSeek-R1", 1, 1.0, 1, 1)]
    assert checkpoint_precisions(cat, nv) == {"nvidia/DeepSeek-R1-NVFP4": "fp4"}
    archs = {d.name: d.arch for d in demands}
    dep = _multiplex_deployment([["oss", "llama"]], archs, "h100_sxm", 1, precisions, None, {}, {"oss": 1.0})
    assert dep.multiplex is not None
    group = dep.multiplex.groups[0]
    assert [(m.name, m.weight_precision) for m in group.models] == [("oss", "mxfp4"), ("llama", "bf16")]  # type: ignore[union-attr]
    _, _, info = build_multiplex(dep.multiplex, cat, EngineSpec, ReplicaSetup)
    uniform = _multiplex_deployment([["oss", "llama"]], archs, "h100_sxm", 1, dict.fromkeys(archs, "bf16"), None, {},
                                    {"oss": 1.0})  # fmt: skip
    assert uniform.multiplex is not None
    _, _, info16 = build_multiplex(uniform.multiplex, cat, EngineSpec, ReplicaSetup)
    resident = {f["model"]: f["resident_gb"] for f in info[0]["footprints"]}
    resident16 = {f["model"]: f["resident_gb"] for f in info16[0]["footprints"]}
    h100 = cat.gpu("h100_sxm")
    oss = cat.model("openai/gpt-oss-20b")
    saved = (PerfModel.build(oss, h100, weight_precision="bf16").weights_bytes_per_gpu()
             - PerfModel.build(oss, h100, weight_precision="mxfp4").weights_bytes_per_gpu()) / 1e9  # fmt: skip
    assert saved > 20  # 21 B weights: 2 bytes vs about half a byte for the experts
    # resident = weights + runtime reserve + the group's KV budget (which the smaller model leaves larger)
    held = resident["oss"] - info[0]["kv_budget_gb_per_gpu"]
    held16 = resident16["oss"] - info16[0]["kv_budget_gb_per_gpu"]
    assert held16 - held == pytest.approx(saved, rel=1e-6)
    assert resident["llama"] - info[0]["kv_budget_gb_per_gpu"] == pytest.approx(
        resident16["llama"] - info16[0]["kv_budget_gb_per_gpu"], rel=1e-9
    )


def test_the_screen_credits_hybrid_prefix_hits_in_whole_granules() -> None:
    """vLLM caches a hybrid model's prefixes in whole raised blocks: the screen takes half a granule off each
    request's hit (all of it when the hit is smaller)."""
    from types import SimpleNamespace

    from gpuyield.core.plan.screen import ReplicaPerf, _hit_for

    prof = SimpleNamespace(input_mean_tokens=4000.0, hit_fraction=lambda replicas, affinity: 0.5)
    pool = PoolShape("mixed", "h100_sxm", 1)
    cand = Candidate((pool,), "prefix_affinity")
    plain = ReplicaPerf(step=None, kv_capacity_tokens=1, kv_bytes_per_token=1.0, kv_transfer_bytes_per_s=1.0)  # type: ignore[arg-type]
    hybrid = dataclasses.replace(plain, prefix_hit_tokens=2000)
    assert _hit_for(cand, pool, prof, 1, plain) == 0.5  # type: ignore[arg-type]
    assert _hit_for(cand, pool, prof, 1, hybrid) == pytest.approx(0.25)  # type: ignore[arg-type]
    coarse = dataclasses.replace(plain, prefix_hit_tokens=8000)
    assert _hit_for(cand, pool, prof, 1, coarse) == 0.0  # type: ignore[arg-type]
