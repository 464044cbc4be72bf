"""Speculative decoding in the step-time model: tokens per step, the cost of a step, one model for all paths."""

from __future__ import annotations

import math

import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import PerfModel, SpeculativeDecoding, estimate_closed_loop
from gpuyield.core.sim.closed_loop import estimate_with_engine_model
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.simulate import build_cluster
from gpuyield.errors import ConfigError

CAT = default_catalog()


def _llama() -> PerfModel:
    return PerfModel.build(CAT.model("meta-llama/Llama-3.1-8B"), CAT.gpu("h100_sxm"), tp=1)


def _r1() -> PerfModel:
    return PerfModel.build(CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("b200_sxm"), tp=8, ep=8,
                           weight_precision="fp8", kv_dtype="fp8", engine="trtllm")  # fmt: skip


@pytest.mark.parametrize(("k", "a", "want"), [(3, 0.0, 1.0), (3, 1.0, 4.0), (2, 0.5, 1.75), (1, 0.8, 1.8)])
def test_tokens_per_step_is_the_geometric_sum(k: int, a: float, want: float) -> None:
    assert SpeculativeDecoding("eagle", k, a).tokens_per_step == pytest.approx(want)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "medusa"}, "method"),
        ({"num_draft_tokens": 0}, "num_draft_tokens"),
        ({"num_draft_tokens": 2.5}, "num_draft_tokens"),
        ({"acceptance_rate": 1.5}, "acceptance_rate"),
        ({"acceptance_rate": math.nan}, "acceptance_rate"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SpeculativeDecoding(**kwargs)  # type: ignore[arg-type]


def test_a_new_setting_replaces_the_old_note() -> None:
    pm = _r1()
    a = pm.with_speculative(SpeculativeDecoding("mtp", 2, 0.7))
    b = a.with_speculative(SpeculativeDecoding("mtp", 3, 0.6))
    off = b.with_speculative(None)
    assert sum("speculative decoding" in n for n in b.notes) == 1 and "3 draft" in b.notes[-1]
    assert not any("speculative decoding" in n for n in off.notes) and off.speculative is None
    assert off.step_time_s(0, 0.0, 8, 8000) == pm.step_time_s(0, 0.0, 8, 8000)


def test_mtp_needs_mtp_layers_and_says_what_to_use_instead() -> None:
    with pytest.raises(ConfigError, match="eagle"):
        _llama().with_speculative(SpeculativeDecoding("mtp", 2, 0.7))
    assert CAT.model("deepseek-ai/DeepSeek-R1").num_mtp_layers >= 1
    _r1().with_speculative(SpeculativeDecoding("mtp", 2, 0.7))  # no error


def test_small_batches_gain_and_useless_drafts_cost() -> None:
    pm = _r1()
    good = pm.with_speculative(SpeculativeDecoding("mtp", 3, 0.8))
    useless = pm.with_speculative(SpeculativeDecoding("mtp", 3, 0.0))  # every draft rejected: E = 1
    for n in (1, 8):
        plain = pm.step_time_s(0, 0.0, n, n * 2000)
        assert good.step_time_s(0, 0.0, n, n * 2000) < 0.7 * plain  # weight-bound: verification is nearly free
        assert useless.step_time_s(0, 0.0, n, n * 2000) > plain  # verification and drafting for nothing
    # n-gram drafting costs nothing but the verification
    ngram = pm.with_speculative(SpeculativeDecoding("ngram", 3, 0.0))
    assert pm.step_time_s(0, 0.0, 4, 8000) < ngram.step_time_s(0, 0.0, 4, 8000) < useless.step_time_s(0, 0.0, 4, 8000)


def test_ngram_pays_only_the_verification() -> None:
    pm = _llama()
    sd = SpeculativeDecoding("ngram", 4, 0.0)
    ng = pm.with_speculative(sd)
    verify = sum(pm._ops(0, 0.0, 8, 16000, float(sd.positions_per_seq)))  # no drafter passes, no extra LM heads
    assert ng.step_time_s(0, 0.0, 8, 16000) == pytest.approx(verify / sd.tokens_per_step)
    assert sd.positions_per_seq == 5 and ng.decode_budget_tokens == 5 and pm.decode_budget_tokens == 1


def test_which_pools_speculate() -> None:
    mtp, ngram = SpeculativeDecoding("mtp", 2, 0.7), SpeculativeDecoding("ngram", 2, 0.7)
    assert [mtp.times_pool(r) for r in ("mixed", "prefill", "decode")] == [True, False, True]
    # a model drafter's KV is filled on the prefill side, so P/D prefill servers launch with it too
    assert [mtp.launches_on(r) for r in ("mixed", "prefill", "decode")] == [True, True, True]
    assert [ngram.launches_on(r) for r in ("mixed", "prefill", "decode")] == [True, False, True]


def test_compute_bound_batches_gain_less() -> None:
    pm = _llama()
    sp = pm.with_speculative(SpeculativeDecoding("eagle", 4, 0.6))
    small = sp.step_time_s(0, 0.0, 1, 1000) / pm.step_time_s(0, 0.0, 1, 1000)
    large = sp.step_time_s(0, 0.0, 512, 512 * 1000) / pm.step_time_s(0, 0.0, 512, 512 * 1000)
    assert small < large


def test_prefill_keeps_its_cost_and_the_breakdown_adds_up() -> None:
    pm = _r1()
    sp = pm.with_speculative(SpeculativeDecoding("mtp", 2, 0.7))
    # a prefill-only step is untouched, and adding decodes to it never makes it shorter (the chunks keep
    # their whole cost; only the decodes' share is charged per token)
    pre = pm.step_time_s(4096, 4096**2 / 2, 0, 0)
    assert sp.step_time_s(4096, 4096**2 / 2, 0, 0) == pre
    for d in (1, 4, 32):
        assert pre < sp.step_time_s(4096, 4096**2 / 2, d, d * 3000) < pm.step_time_s(4096, 4096**2 / 2, d, d * 3000) + 1e-3
    bd = sp.step_breakdown(2048, 2048**2 / 2, 32, 32 * 3000)
    assert bd.total_s == pytest.approx(sp.step_time_s(2048, 2048**2 / 2, 32, 32 * 3000))
    assert sum(bd.ops.values()) == pytest.approx(bd.total_s)
    # affine in the decode context for a fixed batch (the engine model's analytic decode runs rely on it)
    t = [sp.step_time_s(0, 0.0, 16, 16 * c) for c in (1000, 2000, 3000)]
    assert t[2] - t[1] == pytest.approx(t[1] - t[0], rel=1e-9)


def test_the_analytic_solver_and_the_engine_model_agree_with_speculation() -> None:
    sp = _llama().with_speculative(SpeculativeDecoding("eagle", 3, 0.7))
    plain = _llama()
    for c in (1, 16):
        a = estimate_closed_loop(sp, 1024, 256, c)
        e = estimate_with_engine_model(sp, 1024, 256, c, num_requests=max(8, 4 * c))
        assert e.tpot_ms == pytest.approx(a.tpot_ms, rel=0.15)
        assert a.tpot_ms < estimate_closed_loop(plain, 1024, 256, c).tpot_ms


def test_a_deployment_pool_can_speculate() -> None:
    doc = {
        "pools": [
            {"name": "p", "replicas": 1, "gpu": "h100_sxm", "model": "meta-llama/Llama-3.1-8B",
             "speculative": {"method": "eagle", "num_draft_tokens": 2, "acceptance_rate": 0.75}},
        ]
    }  # fmt: skip
    dep = parse_deployment(doc)
    assert dep.pools[0].speculative is not None
    assert dep.pools[0].speculative.to_core().tokens_per_step == pytest.approx(1 + 0.75 + 0.75**2)
    cluster, _info = build_cluster(dep, CAT)
    step = cluster.rts[0].setup.step_model  # what the replica's engine times its steps with
    assert step.speculative == SpeculativeDecoding("eagle", 2, 0.75)
    plain, _ = build_cluster(parse_deployment({"pools": [{k: v for k, v in doc["pools"][0].items() if k != "speculative"}]}), CAT)
    assert step.step_time_s(0, 0.0, 4, 4000) < plain.rts[0].setup.step_model.step_time_s(0, 0.0, 4, 4000)
    bad = {"pools": [dict(doc["pools"][0], speculative={"method": "mtp"})]}
    with pytest.raises(ConfigError, match="pools\\[p\\].*MTP"):
        build_cluster(parse_deployment(bad), CAT)
    for bad_field in ({"acceptance_rate": 2}, {"acceptance_rate": True}, {"num_draft_tokens": True},
                      {"num_draft_tokens": "3"}, {"method": "medusa"}):  # fmt: skip
        with pytest.raises(ConfigError, match=next(iter(bad_field))):
            parse_deployment({"pools": [dict(doc["pools"][0], speculative=bad_field)]})
    ok = parse_deployment({"pools": [dict(doc["pools"][0], speculative={"method": "ngram", "acceptance_rate": 1})]})
    assert ok.pools[0].speculative is not None and ok.pools[0].speculative.acceptance_rate == 1.0
