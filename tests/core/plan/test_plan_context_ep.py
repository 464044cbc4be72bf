"""A MoE model that needs pipeline stages: expert parallelism is per stage (the search used to ask for ep =
tp x pp, which the performance model refuses, and the whole plan failed)."""

from __future__ import annotations

from gpuyield.core.catalog import default_catalog
from gpuyield.core.plan.context import PlanContext


def test_moe_with_pipeline_stages_is_screened_not_refused() -> None:
    cat = default_catalog()
    ctx = PlanContext(cat, cat.model("deepseek-ai/DeepSeek-V3"))
    # bf16 DeepSeek-V3 does not fit 8 x H200 in one stage; two stages of tp8 do
    assert ctx.fits("h200_sxm", 8, 1, "bf16", "bf16") is not None
    assert ctx.fits("h200_sxm", 8, 2, "bf16", "bf16") is None
    pm = ctx.perf_model("h200_sxm", 8, 2, 8, "bf16", "bf16")
    assert pm.ep == 8 and pm.pp == 2 and pm.num_gpus == 16
