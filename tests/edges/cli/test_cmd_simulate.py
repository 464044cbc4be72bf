"""``gpuyield simulate`` end to end on the shipped examples and built-in traces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuyield.edges.cli.common import normalise_json_flag
from gpuyield.edges.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "deployments"
runner = CliRunner()

SUMMARY_KEYS = {
    "requests", "completed", "rejected", "duration_s", "throughput_output_tok_s", "throughput_req_s",
    "goodput_req_s", "slo_attainment", "ttft_ms", "tpot_ms", "e2e_ms", "prefix_cache_hit_rate", "preemptions",
    "per_replica", "gpu_count", "cost_usd_per_hour", "usd_per_1m_output_tokens", "sim_wall_s", "sim_requests_per_s",
}  # fmt: skip


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, normalise_json_flag(list(args)))


def test_simulate_example_writes_summary_and_records(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    rec = tmp_path / "rec.csv"
    r = run("simulate", "--deployment", str(EXAMPLES / "llama8b-h100-x8.yaml"), "--workload", "builtin:azure-conv",
            "--duration", "300", "--rate-scale", "4", "--slo", "ttft_p99_ms=2000,tpot_p99_ms=100",
            "--json", str(out), "--records", str(rec))  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads(out.read_text())
    assert set(s) >= SUMMARY_KEYS
    assert s["completed"] + s["rejected"] == s["requests"] > 0
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(s[key]) == {"mean", "p50", "p90", "p99"}
        assert 0 < s[key]["p50"] <= s[key]["p99"]
    assert len(s["per_replica"]) == 8 and s["gpu_count"] == 8
    assert {"id", "gpu", "model", "busy_frac", "requests", "output_tokens", "kv_util_mean"} <= set(s["per_replica"][0])
    assert sum(p["requests"] for p in s["per_replica"]) == s["completed"]
    assert 0 <= s["slo_attainment"] <= 1 and s["goodput_req_s"] <= s["throughput_req_s"] + 1e-9
    rows = list(csv.DictReader(rec.open()))
    assert len(rows) == s["requests"]
    assert {"arrival_s", "first_token_s", "finish_s", "input_tokens", "output_tokens", "cached_tokens", "replica",
            "preemptions", "status", "reject_reason"} <= set(rows[0])  # fmt: skip


def test_simulate_is_reproducible(tmp_path: Path) -> None:
    outs = []
    for k in range(2):
        p = tmp_path / f"r{k}.jsonl"
        r = run("simulate", "-d", str(EXAMPLES / "llama8b-h100-pd.yaml"), "-w", "builtin:mooncake-synthetic",
                "--duration", "120", "--seed", "7", "--records", str(p), "--json", str(tmp_path / f"s{k}.json"))  # fmt: skip
        assert r.exit_code == 0, r.output
        outs.append(p.read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("name", ["llama8b-h100-x8", "llama8b-h100-pd", "multi-model"])
def test_examples_parse(name: str) -> None:
    from gpuyield.edges.io.deployment import load_deployment

    d = load_deployment(EXAMPLES / f"{name}.yaml")
    assert d.pools


def test_bad_deployment_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  - name: a\n    replicas: 2\n    gpu: h100\n    model: llama-3.1-8b\n    tpp: 2\n")
    r = run("simulate", "-d", str(bad), "-w", "builtin:azure-conv")
    assert r.exit_code == 2
    assert "tpp" in r.output and "bad.yaml" in r.output
    r = run("simulate", "-d", str(EXAMPLES / "llama8b-h100-x8.yaml"), "-w", "builtin:azure-conv", "--slo", "ttft=3")
    assert r.exit_code == 2 and "ttft_p99_ms" in r.output


def test_records_as_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq  # in the [test] extra

    p = tmp_path / "r.parquet"
    r = run("simulate", "-d", str(EXAMPLES / "llama8b-h100-x8.yaml"), "-w", "builtin:azure-conv", "--duration", "30",
            "--records", str(p), "--json", "-")  # fmt: skip
    assert r.exit_code == 0, r.output
    t = pq.read_table(p)
    s = json.loads(r.stdout)
    assert t.num_rows == s["requests"] and t.column("status").to_pylist().count("completed") == s["completed"]


def test_calibration_times_the_simulated_steps(tmp_path: Path, calibration_file) -> None:  # type: ignore[no-untyped-def]
    # a calibration whose engines run every op twice as slow: the same replay decodes about twice as slow
    slow = calibration_file(decode_factor=2.0)
    args = ["simulate", "-d", str(EXAMPLES / "llama8b-h100-x8.yaml"), "-w", "builtin:azure-conv", "--duration", "30",
            "--json", "-"]  # fmt: skip
    base, slowed = run(*args), run(*args, "--calibration", str(slow))
    assert base.exit_code == 0 and slowed.exit_code == 0, base.output + slowed.output
    b, s = json.loads(base.stdout)["tpot_ms"]["mean"], json.loads(slowed.stdout)["tpot_ms"]["mean"]
    assert 1.6 < s / b < 2.1
    bad = run(*args, "--calibration", str(tmp_path / "none.yaml"))
    assert bad.exit_code == 2 and "none.yaml" in bad.output


def test_a_device_described_by_the_calibration_can_be_simulated(tmp_path: Path, calibration_file) -> None:  # type: ignore[no-untyped-def]
    # `gpuyield profile --device cpu` + `calibrate` describe the CPU under `devices:`; simulate accepts it
    import yaml

    cal = calibration_file(devices={"cpu": {"memory_gb": 24.0, "memory_bandwidth_tb_s": 0.01,
                                            "bf16_dense_tflops": 0.02, "interconnect_gb_s": 10.0}})  # fmt: skip
    dep = tmp_path / "cpu_dep.yaml"
    dep.write_text(yaml.safe_dump({
        "name": "tiny-on-cpu", "router": {"policy": "round_robin"},
        "pools": [{"name": "main", "model": "tiny-llama", "gpu": "cpu", "replicas": 1, "tp": 1,
                   "engine": {"family": "vllm", "max_model_len": 8192}}],
    }))  # fmt: skip
    args = ["simulate", "-d", str(dep), "-w", "builtin:azure-conv", "--duration", "10", "--json", "-"]
    r = run(*args, "--calibration", str(cal))
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["completed"] > 0 and s["pools"][0]["gpu"] == "cpu"
    unknown = run(*args)  # the shipped calibration does not describe a cpu device
    assert unknown.exit_code == 2 and "cpu" in unknown.output


def test_simulate_names_a_calibration_fitted_under_older_model_rules(tmp_path: Path) -> None:
    import yaml

    from gpuyield.core.perf.calibration import calibration_to_dict, default_calibration

    d = calibration_to_dict(default_calibration())
    d.pop("corrections")
    d.pop("model_rules")
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(d, sort_keys=False))
    args = ["simulate", "--deployment", str(EXAMPLES / "llama8b-h100-x8.yaml"), "--workload", "builtin:azure-conv",
            "--duration", "30", "--json", "-"]  # fmt: skip
    stale = json.loads(run(*args, "--calibration", str(old)).stdout)
    assert any("model's rules v0" in n for n in stale["calibration_notes"])
    assert "calibration_notes" not in json.loads(run(*args).stdout)
