"""plan --multi-model: LPT placement and the dedicated-vs-shared search (issue 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gpuyield.core.catalog import default_catalog
from gpuyield.core.plan.placement import lpt_placement, plan_multi_model
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.simulate import SloTarget, simulate
from gpuyield.core.workload.workload import Workload, WorkloadMeta

SERVEGEN = Path(__file__).resolve().parents[4] / "shared" / "data" / "traces" / "servegen" / "deepseek-r1"


def test_lpt_spreads_load_and_splits_hot_models() -> None:
    loads = {"hot": 1.5, "a": 0.5, "b": 0.4, "c": 0.1}
    groups = lpt_placement(loads, 3, copy_utilisation=0.6)
    assert sum(g.count("hot") for g in groups) == 3  # ceil(1.5 / 0.6) copies, one per group
    assert all(len(set(g)) == len(g) for g in groups)  # never twice in one group
    assert sorted(m for g in groups for m in g if m != "hot") == ["a", "b", "c"]


def _poisson_models(rates: dict[str, float], seconds: float, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    arr, model, names = [], [], list(rates)
    for k, r in enumerate(rates.values()):
        n = rng.poisson(r * seconds)
        arr.append(np.sort(rng.uniform(0, seconds, n)))
        model.append(np.full(n, k, dtype=np.int32))
    a = np.concatenate(arr)
    order = np.argsort(a, kind="stable")
    n = len(a)
    return Workload(arrival_s=a[order], input_tokens=rng.integers(200, 2000, n)[order] * 0 + 800,
                    output_tokens=np.full(n, 200), model_codes=np.concatenate(model)[order], models=names,
                    meta=WorkloadMeta("poisson-models"))  # fmt: skip


def test_cold_models_share_gpus_and_the_plan_is_verified() -> None:
    rates = {"meta-llama/Llama-3.1-8B": 0.2, "Qwen/Qwen3-8B": 0.1, "Qwen/Qwen3-1.7B": 0.05, "Qwen/Qwen3-0.6B": 0.05}
    w = _poisson_models(rates, 1800.0)
    cat = default_catalog()
    slo = SloTarget(ttft_p99_ms=3000, tpot_p99_ms=100)
    plan = plan_multi_model(w, cat, "h100_sxm", lambda d, wl: simulate(d, wl, cat, slo=slo).summary,
                            weight_precision="fp8")  # fmt: skip
    assert plan.gpus_dedicated == 4  # one replica per model is enough for these light loads
    assert plan.gpus_multiplexed < plan.gpus_dedicated
    per = plan.summary["multiplex"]["per_model"]
    assert all(d["slo_attainment"] >= 0.99 for d in per.values())
    # the written deployment replays to the same answer
    again = simulate(parse_deployment(plan.deployment.model_dump(mode="json")), w, cat, slo=slo).summary
    assert again["completed"] == plan.summary["completed"] == len(w)


def test_multi_model_cli_writes_a_replayable_plan(tmp_path: Path) -> None:
    if not SERVEGEN.exists():
        pytest.skip("../shared/data ServeGen traces not present")
    from gpuyield.edges.cli.main import app

    out = tmp_path / "mm"
    models = "meta-llama/Llama-3.1-8B,Qwen/Qwen3-8B,Qwen/Qwen3-1.7B,Qwen/Qwen3-0.6B"
    res = CliRunner().invoke(app, ["plan", "--multi-model", "-w", str(SERVEGEN), "--start-s", "36000",
                                   "--duration-s", "600", "--rate-scale", "0.05", "--models-from-tenants", models,
                                   "--gpus", "h100_sxm", "--allow-lower-precision",
                                   "--slo", "ttft_p99_ms=2000,tpot_p99_ms=100", "--out", str(out), "--json=-"])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "plan.json").read_text())
    assert doc["kind"] == "multi-model" and doc["gpus"] <= doc["dedicated"]["gpus"]
    assert doc["price"]["as_of"] is not None and doc["swaps_per_hour"] is not None
    sim = CliRunner().invoke(app, ["simulate", "-d", str(out / "plan.yaml"), "-w", str(out / "workload.jsonl"),
                                   "--json", str(tmp_path / "s.json")])  # fmt: skip
    assert sim.exit_code == 0, sim.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["completed"] + s["rejected"] == s["requests"] > 0 and "multiplex" in s
    bad = CliRunner().invoke(app, ["plan", "--multi-model", "-w", str(SERVEGEN), "--models-from-tenants", "no-such-model",
                                   "--slo", "ttft_p99_ms=2000", "--out", str(tmp_path / "x")])  # fmt: skip
    assert bad.exit_code == 2
