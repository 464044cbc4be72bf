import json

import pytest
from typer.testing import CliRunner

from gpuyield.edges.cli.common import normalise_json_flag
from gpuyield.edges.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, normalise_json_flag(list(args)))


def test_inspect_builtin_json():
    r = run("workload", "inspect", "builtin:mooncake-synthetic", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["num_requests"] == 3993
    assert d["prefix_reuse_block_frac"] == pytest.approx(0.6396, abs=1e-4)
    assert set(d["input_tokens"]) == {"mean", "p50", "p90", "p99", "min", "max", "total"}
    assert d["window_s"] == 15.0 and len(d["rate_per_s"]) == 68


def test_inspect_human_output_and_window():
    r = run("workload", "inspect", "builtin:azure-conv", "--window-s", "60")
    assert r.exit_code == 0, r.output
    assert "19,366" in r.stdout and "inter-arrival CV" in r.stdout and "no block hashes" in r.stdout


def test_convert_transforms_then_inspect(tmp_path):
    out = tmp_path / "fast.jsonl"
    r = run("workload", "convert", "builtin:azure-conv", str(out), "--slice-s", "0:600", "--rate-scale", "2",
            "--json", str(tmp_path / "summary.json"))
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["duration_s"] <= 300.0 and summary["requests"] == len(out.read_text().splitlines())
    r = run("workload", "inspect", str(out), "--json")
    d = json.loads(r.stdout)
    assert d["num_requests"] == summary["requests"] and d["duration_s"] == pytest.approx(summary["duration_s"])


def test_convert_sample_is_seeded(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for p in (a, b):
        assert run("workload", "convert", "builtin:mooncake-synthetic", str(p), "--sample", "50", "--seed", "4").exit_code == 0
    assert a.read_bytes() == b.read_bytes() and len(a.read_text().splitlines()) == 50


def test_synth_is_reproducible(tmp_path):
    args = ["builtin:sharegpt", "--arrival", "gamma", "--rate", "5", "--cv", "2", "-n", "300", "--sessions", "3",
            "--system-prompts", "4", "--rag-docs", "20", "--seed", "9"]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    r = run("workload", "synth", args[0], str(a), *args[1:], "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["num_requests"] == 300 and d["num_sessions"] > 1 and d["prefix_reuse_block_frac"] > 0
    run("workload", "synth", args[0], str(b), *args[1:], "--json")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    "args, match",
    [
        (("inspect", "missing.csv"), "workload file not found: missing.csv"),
        (("inspect", "builtin:azure-conv", "--window-s", "0"), "--window-s must be > 0"),
        (("convert", "builtin:azure-conv", "x.jsonl", "--slice", "abc"), "expected START:END"),
        (("convert", "builtin:azure-conv", "x.txt"), "unknown request-log extension"),
        (("synth", "builtin:sharegpt", "x.jsonl"), "--arrival poisson needs --rate"),
        (("synth", "builtin:sharegpt", "x.jsonl", "--rate", "1", "--system-prompts", "2", "--system-prompt-share", "2"),
         "--system-prompt-share 2.0: Input should be less than or equal to 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    r = run("workload", *args)
    assert r.exit_code == 2, r.output
    assert match in r.output.replace("\n", " ")


def test_convert_adds_prefix_structure_keeping_arrivals(tmp_path):
    out = tmp_path / "s.jsonl"
    r = run("workload", "convert", "builtin:azure-conv", str(out), "--slice", ":2000", "--sessions", "3",
            "--system-prompts", "2", "--preserve-input-tokens", "--seed", "1")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2000 and all("session_id" in x for x in rows)
    base = tmp_path / "b.jsonl"
    run("workload", "convert", "builtin:azure-conv", str(base), "--slice", ":2000")
    brows = [json.loads(x) for x in base.read_text().splitlines()]
    assert [x["arrival_ts"] for x in rows] == [x["arrival_ts"] for x in brows]
    assert [x["input_tokens"] for x in rows] == [x["input_tokens"] for x in brows]
    # every request with at least one full 512-token block carries hashes
    assert sum(1 for x in rows if x.get("block_hashes")) == sum(1 for x in rows if x["input_tokens"] >= 512)
