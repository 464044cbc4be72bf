"""End to end: a small plan on a slice of the Azure trace writes every output; plan.yaml round-trips into
simulate and meets the SLO; the naive baseline is what the issue defines; Ray gives the local result;
infeasible and bad input exit 2 with the reason."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpuyield.edges.cli.cmd_plan import run_plan_command
from gpuyield.edges.cli.main import app

SLO = "ttft_p99_ms=2000,tpot_p99_ms=100"
ARGS: dict[str, Any] = dict(workload="builtin:azure-conv", model="meta-llama/Llama-3.1-8B", slo=SLO, head=300,
                            rate_scale=4.0, gpus="h100_sxm,l40s", top_k=3, show_progress=False)


def _timeless(doc: dict[str, Any]) -> dict[str, Any]:
    d = json.loads(json.dumps(doc))
    for k in ("wall_time_s", "screen_wall_time_s", "simulate_wall_time_s"):
        d["search"].pop(k, None)
    d.pop("executor", None)
    return d


@pytest.fixture(scope="module")
def local_plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("plan")
    doc = run_plan_command(out=str(out), **ARGS)
    return out, doc


def test_writes_every_output(local_plan: tuple[Path, dict[str, Any]]) -> None:
    out, doc = local_plan
    for rel in ("plan.yaml", "plan.json", "report.html", "deploy/launch_vllm.sh", "deploy/launch_sglang.sh",
                "deploy/launch_llamacpp.sh", "deploy/gateway.yaml", "deploy/ray/serve_config.yaml",
                "deploy/ray/cluster.yaml", "deploy/k8s/gateway.yaml"):
        assert (out / rel).is_file(), rel
    on_disk = json.loads((out / "plan.json").read_text())
    assert _timeless(on_disk) == _timeless(doc)
    s = doc["search"]
    assert s["candidates_screened"] >= 300 and s["candidates_simulated"] >= 3 and s["simulations"] >= 3
    assert doc["best"]["verified"]["meets_slo"] and doc["pareto"]
    for key in ("plan", "naive"):
        e = doc["economics"][key]
        assert e["usd_per_hour"] > 0 and all(p["source"] and p["as_of"] for p in e["pools"])
        # the volume this fleet is verified to carry at the SLO, and whether the break-even lies within it
        assert e["capacity_tokens_per_month"] == pytest.approx(e["tokens_per_month_at_workload_rate"], rel=1e-6)
        if e["break_even_tokens_per_month"] is not None:
            assert e["break_even_within_capacity"] == (e["break_even_tokens_per_month"] <= e["capacity_tokens_per_month"])
    # the plan is a point of the same search as naive, so it is never dearer
    assert doc["economics"]["plan"]["usd_per_hour"] <= doc["economics"]["naive"]["usd_per_hour"] + 1e-9
    html = (out / "report.html").read_text()
    assert "<svg" in html and "<script" not in html and "http://" not in html.split("<body>")[0]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium_without_console_errors(
    local_plan: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = local_plan
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           "--enable-logging=stderr", "--v=0", "--window-size=1200,1600", f"--screenshot={shot}",
           (out / "report.html").as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console


def test_plan_yaml_round_trips_into_simulate(local_plan: tuple[Path, dict[str, Any]]) -> None:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.plan.simulator import outcome_from_result
    from gpuyield.core.sim.deployment import parse_deployment
    from gpuyield.core.sim.simulate import SloTarget, simulate
    from gpuyield.core.workload.transforms import slice_index
    from gpuyield.edges.io.traces import load_workload

    out, doc = local_plan
    dep = parse_deployment(yaml.safe_load((out / "plan.yaml").read_text()), "plan.yaml")
    assert sum(p.replicas * p.gpus_per_replica for p in dep.pools) == doc["best"]["num_gpus"]
    w = slice_index(load_workload("builtin:azure-conv"), 0, 300)
    res = simulate(dep, w, default_catalog(), 0, SloTarget(2000, 100), rate_scale=4.0)
    o = outcome_from_result(res)
    assert o.summary["ttft_p99_ms"] <= 2000 and o.summary["tpot_p99_ms"] <= 100
    assert math.isclose(o.summary["ttft_p99_ms"], doc["best"]["verified"]["ttft_p99_ms"], abs_tol=1e-3)


def test_naive_baseline_definition(local_plan: tuple[Path, dict[str, Any]]) -> None:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.sim.engine.config import engine_family_defaults

    _, doc = local_plan
    naive = doc["naive"]
    cat = default_catalog()
    cheapest = min(("h100_sxm", "l40s"), key=lambda g: cat.gpu_price(g).usd_per_gpu_hour)
    (pool,) = naive["pools"]
    d = engine_family_defaults("vllm", cat.gpu(cheapest))  # the engine's defaults on that GPU
    assert naive["router"] == "round_robin" and pool["tp"] == 1 and pool["gpu"] == cheapest
    assert pool["enable_prefix_caching"] is True and pool["max_num_seqs"] == d["max_num_seqs"]
    assert pool["max_num_batched_tokens"] == d["max_num_batched_tokens"]
    assert naive["verified"]["meets_slo"]
    # "just enough": one replica fewer fails the SLO (when it was simulated)
    fewer = [p for p in doc["simulated"] if p["candidate"] == naive["candidate"] and p["level"] == pool["replicas"] - 1]
    assert all(not p["meets_slo"] for p in fewer)


@pytest.mark.slow
def test_ray_executor_gives_the_local_result(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    small = {**ARGS, "head": 150, "gpus": "h100_sxm", "top_k": 2, "disaggregated": False, "report": False}
    local_doc = run_plan_command(out=str(tmp_path / "local"), **small)
    doc = run_plan_command(out=str(tmp_path / "ray"), executor="ray", **small)
    assert doc["executor"] == "ray" and local_doc["executor"] == "local"
    assert _timeless(doc) == _timeless(local_doc)
    assert (tmp_path / "ray" / "plan.yaml").read_text() == (tmp_path / "local" / "plan.yaml").read_text()


def test_infeasible_exits_2_with_reasons(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["plan", "--workload", "builtin:azure-conv", "--head", "200", "--model",
                                 "meta-llama/Llama-3.1-8B", "--slo", "tpot_p99_ms=1", "--gpus", "l40s", "--top-k", "2",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code == 2, r.output
    assert "no deployment meets" in r.output and "tpot" in r.output


@pytest.mark.parametrize("args,needle", [
    (["--slo", "latency=3"], "--slo key 'latency'"),
    (["--slo", SLO, "--gpus", "h100_sxmm"], "h100"),
    (["--slo", SLO, "--api-price", "1"], "--api-price"),
    (["--slo", SLO, "--mode", "fastest"], "--mode"),
    (["--slo", SLO, "--owned", "/nonexistent.yaml"], "--owned /nonexistent.yaml: file not found"),
])
def test_bad_input_exits_2_naming_the_value(tmp_path: Path, args: list[str], needle: str) -> None:
    r = CliRunner().invoke(app, ["plan", "--workload", "builtin:azure-conv", "--head", "50", "--model",
                                 "meta-llama/Llama-3.1-8B", "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output.replace("\n", " ")


def test_capacity_mode_with_owned_hardware(tmp_path: Path) -> None:
    owned = tmp_path / "owned.yaml"
    owned.write_text(yaml.safe_dump({"owned": [{
        "gpu": "h100_sxm", "capex_usd_per_gpu": 35040, "amortisation_years": 4, "power_w_per_gpu": 1000, "pue": 1.5,
        "usd_per_kwh": 0.1, "ops_usd_per_gpu_year": 876, "source": "test quote", "as_of": "2026-01-01"}]}))
    doc = run_plan_command(out=str(tmp_path / "out"), **{**ARGS, "head": 200, "gpus": "h100_sxm", "top_k": 2,
                                                         "disaggregated": False, "report": False},
                           mode="capacity", max_gpus=1, owned=str(owned))
    assert doc["mode"] == "capacity" and doc["best"]["num_gpus"] == 1
    assert doc["capacity_rate_scale"] > 0
    assert all(p["meets_slo"] == (p["rate_scale"] <= doc["capacity_rate_scale"] * 1.001)
               for p in doc["simulated"] if p["candidate"] == doc["best"]["candidate"])
    (pool,) = doc["economics"]["plan"]["pools"]
    assert pool["price_kind"] == "owned" and pool["usd_per_gpu_hour"] == pytest.approx(1.25)
    assert "test quote" in pool["source"] and pool["as_of"] == "2026-01-01"


def test_plan_records_and_uses_the_calibration(tmp_path: Path, calibration_file) -> None:  # type: ignore[no-untyped-def]
    slow = calibration_file(decode_factor=2.0)
    stale = yaml.safe_load(slow.read_text())
    del stale["model_rules"]  # written before rule versions were kept: the plan says to refit it
    slow.write_text(yaml.safe_dump(stale, sort_keys=False))
    small = {**ARGS, "head": 200, "gpus": "h100_sxm", "top_k": 2, "disaggregated": False, "report": False}
    base = run_plan_command(out=str(tmp_path / "base"), **small)
    slowed = run_plan_command(out=str(tmp_path / "slow"), calibration=str(slow), **small)
    assert base["calibration"] == "shipped" and slowed["calibration"] == str(slow)
    assert any("model's rules v0" in n for n in slowed["notes"])
    assert not any("model's rules" in n for n in base["notes"])
    # twice-as-slow steps: the verified plan decodes slower, on at least as many GPUs
    assert slowed["best"]["verified"]["tpot_p99_ms"] > 1.5 * base["best"]["verified"]["tpot_p99_ms"]
    assert slowed["best"]["num_gpus"] >= base["best"]["num_gpus"]


def test_plan_notes_what_measured_operating_points_say_about_the_chosen_deployment(
    tmp_path: Path, local_plan: tuple[Path, dict[str, Any]]
) -> None:
    # the shipped calibration holds vLLM Qwen3-32B on H100 measurements; Llama-3.1-8B has none
    doc = run_plan_command(out=str(tmp_path / "q"), **{**ARGS, "model": "Qwen/Qwen3-32B", "head": 200,
                                                       "gpus": "h100_sxm", "top_k": 2, "disaggregated": False,
                                                       "report": False, "slo": "ttft_p99_ms=3000,tpot_p99_ms=100"})  # fmt: skip
    (note,) = [n for n in doc["notes"] if n.startswith("measured operating points")]
    assert "TPOT at ×" in note and "gpuyield estimate --model Qwen/Qwen3-32B" in note
    assert not any(n.startswith("measured operating points") for n in local_plan[1]["notes"])


def test_a_plan_with_speculative_decoding_writes_it_into_plan_and_commands(tmp_path: Path) -> None:
    from gpuyield.core.perf import SpeculativeDecoding

    sd = SpeculativeDecoding("eagle", 2, 0.7, "org/eagle-head")
    out = tmp_path / "spec"
    doc = run_plan_command(out=str(out), **{**ARGS, "top_k": 2}, speculative=sd, report=False)
    assert doc["speculative"] == sd.to_dict()
    dep = yaml.safe_load((out / "plan.yaml").read_text())
    decoding = [p for p in dep["pools"] if p["role"] != "prefill"]
    assert decoding and all(p["speculative"]["draft_model"] == "org/eagle-head" for p in decoding)
    assert "--speculative-config" in (out / "deploy" / "launch_vllm.sh").read_text()
    assert any("planned with speculative decoding" in n for n in doc["notes"])
    # the written plan re-simulates with the same setting and reproduces plan.json's verified numbers
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.sim.deployment import parse_deployment
    from gpuyield.core.sim.simulate import build_cluster

    parsed = parse_deployment(dep)
    cluster, _ = build_cluster(parsed, default_catalog())
    assert all(rt.setup.step_model.speculative == SpeculativeDecoding("eagle", 2, 0.7, "org/eagle-head")
               for rt in cluster.rts if rt.setup.role != "prefill")  # fmt: skip
    from gpuyield.core.plan.simulator import outcome_from_result
    from gpuyield.core.sim.simulate import SloTarget, simulate
    from gpuyield.core.workload.transforms import slice_index
    from gpuyield.edges.io.traces import load_workload

    w = slice_index(load_workload("builtin:azure-conv"), 0, 300)
    o = outcome_from_result(simulate(parsed, w, default_catalog(), 0, SloTarget(2000, 100), rate_scale=4.0))
    assert math.isclose(o.summary["tpot_p99_ms"], doc["best"]["verified"]["tpot_p99_ms"], abs_tol=1e-3)
    # and plain decoding would have been slower per token on the same deployment
    plain = parse_deployment({**dep, "pools": [{k: v for k, v in p.items() if k != "speculative"} for p in dep["pools"]]})
    o_plain = outcome_from_result(simulate(plain, w, default_catalog(), 0, SloTarget(2000, 100), rate_scale=4.0))
    assert o.summary["tpot_p99_ms"] < o_plain.summary["tpot_p99_ms"]
    # eagle without its head cannot be deployed: refused before the search (nothing is written)
    r = CliRunner().invoke(app, ["plan", "--workload", "builtin:azure-conv", "--head", "50", "--model",
                                 "meta-llama/Llama-3.1-8B", "--slo", SLO, "--out", str(tmp_path / "y"),
                                 "--spec-method", "eagle"])  # fmt: skip
    assert r.exit_code == 2 and "--spec-draft-model" in r.output and not (tmp_path / "y").exists()
    r = CliRunner().invoke(app, ["plan", "--workload", "builtin:azure-conv", "--head", "50", "--model",
                                 "meta-llama/Llama-3.1-8B", "--slo", SLO, "--out", str(tmp_path / "z"),
                                 "--spec-method", "ngram", "--spec-draft-model", "org/x"])  # fmt: skip
    assert r.exit_code == 2 and "eagle" in r.output


def test_the_plan_search_times_decode_steps_with_the_speculative_setting() -> None:
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import SpeculativeDecoding
    from gpuyield.core.plan.context import PlanContext

    cat = default_catalog()
    model = cat.model("meta-llama/Llama-3.1-8B")
    sd = SpeculativeDecoding("eagle", 2, 0.7, "org/eagle-head")
    plain = PlanContext(cat, model).perf_model("h100_sxm", 1, 1, 1, "bf16", "bf16")
    spec = PlanContext(cat, model, speculative=sd).perf_model("h100_sxm", 1, 1, 1, "bf16", "bf16")
    assert spec.speculative == sd and plain.speculative is None
    assert spec.step_time_s(0, 0.0, 8, 8000) < plain.step_time_s(0, 0.0, 8, 8000)
