"""estimate / validate / calibrate / profile commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import PerfModel
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.edges.cli.cmd_estimate import estimate_record
from gpuyield.edges.cli.common import normalise_json_flag
from gpuyield.edges.cli.main import app

runner = CliRunner()
AIC = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "calibration" / "aiconfigurator"


def _run(args: list[str]):
    return runner.invoke(app, normalise_json_flag(args))


def test_estimate_json_reports_latency_memory_and_breakdown():
    r = _run(
        [
            "estimate",
            "--model",
            "Qwen/Qwen3-32B",
            "--gpu",
            "h100_sxm",
            "--tp",
            "2",
            "--isl",
            "1024",
            "--osl",
            "256",
            "--concurrency",
            "8",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["fits"] is True
    for k in ("ttft_ms", "tpot_ms", "e2e_ms", "throughput_tok_s"):
        assert rec[k] > 0
    assert rec["memory"]["kv_capacity_tokens"] > 0
    assert "engine model" in rec["method"]
    ops = rec["decode_step"]["ops_ms"]
    assert abs(sum(ops.values()) - rec["decode_step"]["total_ms"]) < 1e-6
    assert rec["scheduler_limits"] == {"max_num_seqs": 1024, "max_num_batched_tokens": 8192}


def test_estimate_takes_the_engine_defaults_of_the_gpu():
    """vLLM on a 48 GB L40S starts with 256 sequences and a 2,048-token budget (its get_batch_defaults), as
    simulate's pools there do: the budget chunks a 4k prompt and 300 clients are held to 256."""
    base = ["estimate", "--model", "Qwen/Qwen3-0.6B", "--gpu", "l40s", "--isl", "4096", "--osl", "64", "--json"]
    r = _run([*base, "--concurrency", "300"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["scheduler_limits"] == {"max_num_seqs": 256, "max_num_batched_tokens": 2048}
    assert rec["prefill_step"]["num_prefill_tokens"] == 2048
    assert rec["running_seqs_per_replica"] <= 256
    r = _run([*base, "--concurrency", "8", "--max-num-batched-tokens", "128"])
    assert r.exit_code != 0 and "the engine's own max_num_seqs 256" in r.output
    # --layout reports the pair its pools ran with, by the same rule
    lay = ["estimate", "--model", "Qwen/Qwen3-0.6B", "--gpu", "l40s", "--layout", "agg tp1 pp1 adp1 moe_tp1 ep1",
           "--isl", "1024", "--osl", "64", "--concurrency", "8", "--json"]  # fmt: skip
    for extra, want in (([], (256, 2048)), (["--max-num-seqs", "64"], (64, 2048))):
        r = _run([*lay, *extra])
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)["scheduler_limits"]
        assert (got["max_num_seqs"], got["max_num_batched_tokens"]) == want
    # a P/D layout on a B200 with SGLang: its pools run SGLang's defaults there (chunked prefill 16,384)
    r = _run(["estimate", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "b200_sxm", "--engine", "sglang",
              "--precision", "fp4", "--layout", "disagg 1x prefill(tp4 adp1 ep4) + 2x decode(tp8 adp1 ep8)",
              "--isl", "1024", "--osl", "256", "--concurrency", "64", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["scheduler_limits"] == {"max_num_seqs": 4096, "max_num_batched_tokens": 16384}


def test_estimate_with_speculative_decoding_is_faster_per_token_and_says_so():
    base = ["estimate", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "b200_sxm", "--tp", "8", "--ep", "8",
            "--precision", "fp8", "--engine", "trtllm", "--isl", "1024", "--osl", "256", "--concurrency", "4",
            "--method", "analytic", "--json"]  # fmt: skip
    plain = json.loads(_run(base).stdout)
    r = _run([*base, "--spec-method", "mtp", "--spec-tokens", "3", "--spec-acceptance", "0.7"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["speculative"] == {"method": "mtp", "num_draft_tokens": 3, "acceptance_rate": 0.7,
                                  "tokens_per_step": pytest.approx(1 + 0.7 + 0.49 + 0.343)}  # fmt: skip
    assert plain["speculative"] is None
    # against plain decoding on the same step model (the plain estimate is also corrected by measured points,
    # some of which ran with MTP on: the columns do not say)
    raw = json.loads(_run([*base, "--no-corrections"]).stdout)
    assert rec["tpot_ms"] < 0.8 * raw["tpot_ms"]
    # the measured points (no speculative setting recorded) are not applied, and the output says why
    assert plain["measured_correction"] is not None and rec["measured_correction"] is None
    assert any("not applied" in n for n in rec["notes"]) and any("3 draft token" in n for n in rec["notes"])
    human = _run([*base[:-1], "--spec-method", "ngram", "--spec-tokens", "2", "--spec-acceptance", "0.5"])
    assert human.exit_code == 0 and "per output token with speculative decoding" in human.stdout
    # a disaggregated layout: the decode pool speculates, the prefill pool's steps are untouched. TTFT moves by its
    # first decode step (the client's stream waits for it) and by the prefill queue that the faster request cycle
    # feeds (a closed loop: clients send their next prompt sooner), which stays small while the pool is lightly loaded
    for clients, queue_share in (("16", 0.02), ("256", None)):
        lay = ["estimate", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "gb200", "--precision", "fp4", "--engine",
               "trtllm", "--isl", "8192", "--osl", "1024", "--concurrency", clients, "--no-corrections", "--json",
               "--layout", "disagg 2x prefill(tp4 adp1 ep4) + 1x decode(tp16 adp1 ep16)"]  # fmt: skip
        p_rec = json.loads(_run(lay).stdout)
        s_rec = json.loads(_run([*lay, "--spec-method", "mtp", "--spec-tokens", "3"]).stdout)
        assert s_rec["speculative"]["tokens_per_step"] == pytest.approx(1 + 0.7 + 0.49 + 0.343)
        assert s_rec["tpot_ms"] < 0.8 * p_rec["tpot_ms"]
        first_step = s_rec["tpot_ms"] - p_rec["tpot_ms"]  # < 0: the speculating decode step is faster
        assert s_rec["ttft_ms"] - p_rec["ttft_ms"] >= first_step - 1e-9
        if queue_share is not None:
            assert s_rec["ttft_ms"] - p_rec["ttft_ms"] == pytest.approx(first_step, abs=queue_share * p_rec["ttft_ms"])


def test_estimate_analytic_offline_and_human_output():
    r = _run(
        [
            "estimate",
            "--model",
            "Qwen/Qwen3-8B",
            "--gpu",
            "h100",
            "--isl",
            "512",
            "--osl",
            "64",
            "--concurrency",
            "offline",
            "--num-requests",
            "50",
            "--method",
            "analytic",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "TTFT" in r.stdout and "analytic" in r.stdout


def test_estimate_does_not_fit_exits_2_with_reason():
    r = _run(
        [
            "estimate",
            "--model",
            "deepseek-ai/DeepSeek-R1",
            "--gpu",
            "h100_sxm",
            "--isl",
            "128",
            "--osl",
            "16",
            "--concurrency",
            "1",
        ]
    )
    assert r.exit_code == 2
    assert "does not fit" in r.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--concurrency", "many"], "--concurrency"),
        (["--concurrency", "4", "--method", "magic"], "--method"),
        (["--concurrency", "4", "--precision", "fp3"], "precision"),
        (["--concurrency", "4", "--spec-tokens", "2"], "--spec-method"),
        (["--concurrency", "4", "--spec-method", "mtp"], "MTP layers"),
        (["--concurrency", "4", "--spec-method", "eagle", "--spec-acceptance", "1.2"], "acceptance_rate"),
    ],
)
def test_estimate_bad_input_exits_2(args, fragment):
    r = _run(["estimate", "--model", "Qwen/Qwen3-8B", "--gpu", "h100", "--isl", "128", "--osl", "16", *args])
    assert r.exit_code == 2
    assert fragment in r.output


def test_estimate_answers_for_every_catalogue_model_that_fits_on_a_catalogue_gpu():
    cat = default_catalog()
    cal = default_calibration()
    answered = 0
    for model in cat.models:
        for gpu in cat.gpus:
            if not gpu.bf16_dense_tflops:
                continue
            tp = next(
                (
                    t
                    for t in (1, 2, 4, 8)
                    if t <= model.num_attention_heads
                    and PerfModel.build(model, gpu, tp=t, calibration=cal).memory().fits
                ),
                None,
            )
            if tp is None:
                continue
            rec = estimate_record(
                catalog=cat,
                calibration=cal,
                model=model.id,
                gpu=gpu.id,
                tp=tp,
                pp=1,
                ep=1,
                attention_dp=1,
                precision="bf16",
                kv_dtype=None,
                engine="vllm",
                isl=512,
                osl=64,
                concurrency=4,
                num_requests=None,
                replicas=1,
                gpu_memory_utilization=0.9,
                max_num_seqs=None,
                max_num_batched_tokens=None,
                method="analytic",
            )
            assert rec["fits"] and rec["ttft_ms"] > 0 and rec["tpot_ms"] > 0, (model.id, gpu.id)
            answered += 1
    assert answered > 50


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    cols = [
        "gpu",
        "num_gpus",
        "model",
        "engine",
        "precision",
        "layout",
        "tp",
        "isl",
        "osl",
        "concurrency",
        "num_requests",
        "ttft_ms",
        "tpot_ms",
        "e2e_ms",
        "throughput_tok_s",
        "source",
    ]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})


FIXTURE = [
    {
        "gpu": "h100_sxm",
        "num_gpus": "2",
        "model": "Qwen/Qwen3-32B",
        "engine": "vllm",
        "precision": "bf16",
        "layout": "agg tp2 pp1 adp1 moe_tp1 ep1",
        "tp": "2",
        "isl": "1024",
        "osl": "1024",
        "concurrency": "8",
        "ttft_ms": "154.344",
        "tpot_ms": "15.9005",
        "source": "aiconfigurator silicon sample",
    },
    {
        "gpu": "h100_sxm",
        "num_gpus": "8",
        "model": "Qwen/Qwen3-32B",
        "engine": "vllm",
        "precision": "bf16",
        "layout": "agg tp8 pp1 adp1 moe_tp1 ep1",
        "tp": "8",
        "isl": "1024",
        "osl": "1024",
        "concurrency": "64",
        "ttft_ms": "180.305",
        "tpot_ms": "13.2781",
        "source": "aiconfigurator silicon sample",
    },
    {
        "gpu": "b200_sxm",
        "num_gpus": "0",
        "model": "deepseek-ai/DeepSeek-R1",
        "engine": "trtllm",
        "precision": "fp4",
        "layout": "disagg 0x prefill(tp4 adp1 ep4) + 0x decode(tp8 adp1 ep4)",
        "isl": "1024",
        "osl": "1024",
        "concurrency": "45",
        "ttft_ms": "249",
        "tpot_ms": "7.8959",
        "source": "aiconfigurator silicon sample",
    },
    {
        "gpu": "h100_sxm",
        "num_gpus": "1",
        "model": "not/a-model",
        "engine": "vllm",
        "precision": "bf16",
        "layout": "agg tp1 pp1 adp1 moe_tp1 ep1",
        "tp": "1",
        "isl": "10",
        "osl": "10",
        "concurrency": "1",
        "ttft_ms": "1",
        "tpot_ms": "1",
        "source": "made up",
    },
]


def test_validate_json_shape_and_report(tmp_path):
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, FIXTURE)
    report = tmp_path / "r.html"
    r = _run(["validate", "--measurements", str(csv_path), "--report", str(report), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res) >= {"summary", "coverage", "unsupported", "rows", "implausible", "summary_plausible"}
    assert res["implausible"] == []  # every fixture row is physically possible
    # the same errors split by layout kind: their row counts add up to the summary's
    kinds = res["summary_by_layout_kind"]
    assert set(kinds) <= {"agg", "disagg", "disagg_counts_unknown"} and kinds
    assert sum(k["ttft_ms"]["n"] for k in kinds.values()) == res["summary"]["ttft_ms"]["n"]
    assert set(res["summary"]) == {"ttft_ms", "tpot_ms", "e2e_ms", "throughput_tok_s"}
    for s in res["summary"].values():
        assert set(s) == {"n", "mape", "median_ape", "p90_ape", "bias"}
    assert res["coverage"] == pytest.approx(0.75)
    assert res["unsupported"] == [{"row": 3, "reason": res["unsupported"][0]["reason"]}]
    assert (
        "not/a-model" in res["unsupported"][0]["reason"]
        or "unknown" in res["unsupported"][0]["reason"].lower()
    )
    assert res["summary"]["tpot_ms"]["n"] == 3
    row = res["rows"][0]
    for k in (
        "gpu",
        "model",
        "isl",
        "osl",
        "concurrency",
        "predicted_ttft_ms",
        "measured_ttft_ms",
        "predicted_tpot_ms",
        "measured_tpot_ms",
    ):
        assert k in row
    text = report.read_text()
    assert (
        text.startswith("<!doctype html>")
        and "<svg" in text
        and "http" not in text.split("</title>")[1][:200]
    )
    assert "per layout kind" in text and "per gpu" in text
    # error-vs-measured plots per GPU, engine and model (issue 3), when the file has more than one of each
    engines = {r["engine"] for r in res["rows"]}
    assert ("predicted vs measured per engine" in text) == (len(engines) > 1)
    assert "predicted vs measured per model" in text


def test_validate_method_sim_runs_the_engine_model_like_estimate(tmp_path):
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, FIXTURE)
    res = {}
    compared = 0
    for method in ("analytic", "sim"):
        r = _run([
            "validate", "--measurements", str(csv_path), "--report", "-", "--method", method, "--json",
            "--no-corrections",
        ])  # fmt: skip
        assert r.exit_code == 0, r.output
        res[method] = json.loads(r.stdout)
        assert res[method]["method"] == method
    assert res["sim"]["coverage"] == res["analytic"]["coverage"]
    pd_compared = 0
    for a_row, s_row in zip(res["analytic"]["rows"], res["sim"]["rows"], strict=True):
        if not a_row["layout"].startswith("agg"):
            # disaggregated: the engine model's P/D cluster, as `estimate --layout ... --method sim` runs it
            assert s_row["predicted_ttft_ms"] != a_row["predicted_ttft_ms"]
            est = _run([
                "estimate", "--model", s_row["model"], "--gpu", s_row["gpu"], "--isl", str(s_row["isl"]),
                "--osl", str(s_row["osl"]), "--concurrency", str(s_row["concurrency"]), "--engine", s_row["engine"],
                "--precision", s_row["precision"], "--layout", s_row["layout"], "--json", "--no-corrections",
                "--method", "sim",
            ])  # fmt: skip
            out = json.loads(est.stdout)
            assert "P/D cluster" in out["method"]
            assert out["ttft_ms"] == pytest.approx(s_row["predicted_ttft_ms"], rel=1e-9)
            assert out["tpot_ms"] == pytest.approx(s_row["predicted_tpot_ms"], rel=1e-9)
            pd_compared += 1
            continue
        est = _run([
            "estimate", "--model", s_row["model"], "--gpu", s_row["gpu"], "--isl", str(s_row["isl"]),
            "--osl", str(s_row["osl"]), "--concurrency", str(s_row["concurrency"]), "--engine", s_row["engine"],
            "--precision", s_row["precision"], "--tp", a_row["layout"].split()[1][2:], "--json", "--no-corrections",
        ])  # fmt: skip
        if est.exit_code == 0 and "ttft_ms" in json.loads(est.stdout):
            assert json.loads(est.stdout)["ttft_ms"] == pytest.approx(s_row["predicted_ttft_ms"], rel=1e-9)
            compared += 1
    assert compared >= 1 and pd_compared >= 1
    bad = _run(["validate", "--measurements", str(csv_path), "--report", "-", "--method", "exact"])
    assert bad.exit_code == 2 and "--method" in bad.output


def test_validate_lists_an_unreadable_row_and_keeps_the_others(tmp_path):
    csv_path = tmp_path / "m.csv"
    bad = {**FIXTURE[0], "isl": "0"}
    _write_csv(csv_path, [FIXTURE[0], bad, {**FIXTURE[0], "concurrency": "lots"}, FIXTURE[1]])
    r = _run(["validate", "--measurements", str(csv_path), "--report", "-", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["num_rows"] == 4 and res["coverage"] == pytest.approx(0.5)
    assert [u["row"] for u in res["unsupported"]] == [1, 2]
    assert "isl" in res["unsupported"][0]["reason"] and "concurrency" in res["unsupported"][1]["reason"]
    assert [row["row"] for row in res["rows"]] == [0, 3]


def test_validate_reads_a_spreadsheet_export(tmp_path):
    # a byte-order mark, padded header names and an extra column, as spreadsheets write them
    p = tmp_path / "excel.csv"
    from gpuyield.core.perf.validation import CSV_COLUMNS

    header = ",".join(f" {c}" if c == "num_gpus" else c for c in CSV_COLUMNS) + ",comment"
    values = ",".join(FIXTURE[0].get(c, "") for c in CSV_COLUMNS) + ",ok"
    p.write_bytes(("\ufeff" + header + "\n" + values + "\n").encode("utf-8"))
    r = _run(["validate", "--measurements", str(p), "--report", "-", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["coverage"] == 1.0


def test_validate_missing_column_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("gpu,model\nh100,x\n")
    r = _run(["validate", "--measurements", str(p), "--report", "-"])
    assert r.exit_code == 2
    assert "missing column" in r.output


@pytest.mark.skipif(not AIC.exists(), reason="shared AIConfigurator tables not present")
def test_calibrate_from_one_aiconfigurator_device(tmp_path):
    # a one-device tree: <root>/h100_sxm.yaml + <root>/data/h100_sxm -> symlinks keep the test fast
    root = tmp_path / "aic"
    (root / "data").mkdir(parents=True)
    (root / "h100_sxm.yaml").symlink_to(AIC / "h100_sxm.yaml")
    (root / "data" / "h100_sxm").mkdir()
    for op in ("gemm", "attention", "comm"):
        (root / "data" / "h100_sxm" / op).symlink_to(AIC / "data" / "h100_sxm" / op)
    out = tmp_path / "c.yaml"
    r = _run(["calibrate", "--from", str(root), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert "h100_sxm" in res["devices"]
    g = res["calibration"]["gpus"]["h100_sxm"]
    assert 0.5 < g["mem_bw_eff"] <= 1.0 and 0.3 < g["attn_prefill_eff"] < 1.0
    r2 = _run(
        [
            "estimate",
            "--model",
            "Qwen/Qwen3-8B",
            "--gpu",
            "h100_sxm",
            "--isl",
            "256",
            "--osl",
            "32",
            "--concurrency",
            "2",
            "--calibration",
            str(out),
            "--method",
            "analytic",
            "--json",
        ]
    )
    assert r2.exit_code == 0, r2.output


def test_calibrate_bad_root_is_a_clear_error(tmp_path):
    r = _run(["calibrate", "--from", str(tmp_path / "nope"), "--out", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "no such directory" in r.output


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_profile_calibrate_estimate_loop_on_cpu(tmp_path, backend):
    # numpy needs no extra, so the loop runs wherever the tests do; torch (the engines' kernels) where installed
    if backend == "torch":
        pytest.importorskip("torch")
    prof = tmp_path / "prof"
    r = _run(
        [
            "profile",
            "--device",
            "cpu",
            "--backend",
            backend,
            "--model",
            "tiny-llama",
            "--out",
            str(prof),
            "--budget-s",
            "6",
            "--max-tokens",
            "64",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["device"] == "cpu" and summary["gemm_rows"] > 0 and summary["backend"] == backend
    assert summary["context_attention_rows"] > 0 and summary["generation_attention_rows"] > 0
    assert (prof / "cpu.yaml").exists()
    assert len(list(prof.glob(f"data/cpu/*/{backend}/*/*.csv"))) == 3
    cal = tmp_path / "cpu.yaml"
    r = _run(["calibrate", "--from", str(prof), "--base", "shipped", "--out", str(cal), "--json"])
    assert r.exit_code == 0, r.output
    assert "cpu" in json.loads(r.stdout)["devices"], json.loads(r.stdout)["log"]
    # the profiled peaks are the calibrated device's, and its GEMM efficiency comes from the profiled table
    written = yaml.safe_load(cal.read_text())
    dev = written["devices"]["cpu"]
    assert dev["memory_bandwidth_tb_s"] * 1e3 == pytest.approx(summary["mem_bw_gb_s"], rel=1e-3)
    assert dev["bf16_dense_tflops"] == pytest.approx(summary["peak_tflops"], rel=1e-3)
    assert str(prof / "data" / "cpu") in written["gpus"]["cpu"]["source"]
    r = _run(
        [
            "estimate",
            "--model",
            "tiny-llama",
            "--gpu",
            "cpu",
            "--calibration",
            str(cal),
            "--isl",
            "128",
            "--osl",
            "32",
            "--concurrency",
            "4",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["gpu"] == "cpu" and rec["tpot_ms"] > 0 and rec["ttft_ms"] > 0


def test_estimate_layout_agg_matches_the_parallelism_options_and_disagg_is_analytic(tmp_path):
    common = ["estimate", "--model", "Qwen/Qwen3-32B", "--gpu", "h100_sxm", "--isl", "1024", "--osl", "256",
              "--concurrency", "16", "--precision", "bf16", "--json"]  # fmt: skip
    by_tp = _run([*common, "--tp", "2"])
    by_layout = _run([*common, "--layout", "agg tp2 pp1 adp1 moe_tp1 ep1"])
    assert by_tp.exit_code == 0 and by_layout.exit_code == 0, by_layout.output
    a, b = json.loads(by_tp.stdout), json.loads(by_layout.stdout)
    for k in ("ttft_ms", "tpot_ms", "throughput_tok_s"):
        assert b[k] == pytest.approx(a[k], rel=1e-9)
    assert b["method"] == a["method"] and b["num_gpus"] == 2
    pd = _run([*common, "--layout", "disagg 2x prefill(tp2 adp1 ep1) + 1x decode(tp4 adp1 ep1)"])
    assert pd.exit_code == 0, pd.output
    rec = json.loads(pd.stdout)
    assert rec["num_gpus"] == 8 and "disaggregated" in rec["method"]
    assert any("analytic" in n for n in rec["notes"])
    assert not any("P/D pools use" in n for n in rec["notes"])  # vLLM's P/D pools run the aggregated constants
    # the shipped TensorRT-LLM P/D constants decode at half the aggregated family's: a layout without worker
    # counts (as the campaign they were fitted on) runs them and says so; with counts the decode pool runs at the
    # family's speed, and says that
    trt0 = json.loads(_run([*common, "--engine", "trtllm", "--no-corrections", "--layout",
                            "disagg 0x prefill(tp2 adp1 ep1) + 0x decode(tp4 adp1 ep1)"]).stdout)  # fmt: skip
    from gpuyield.core.perf.calibration import default_calibration

    pd_s = default_calibration().engine_for("trtllm:disagg", "h100_sxm", "bf16").decode_scale
    assert pd_s < 0.8  # the shipped campaign constant (0.40 in the twenty-third pass)
    note = next(n for n in trt0["notes"] if "P/D pools use the 'trtllm:disagg' constants" in n)
    assert f"x{pd_s:.2g} of the aggregated family's (x1)" in note and f"up to {1 / pd_s:.2g}x this" in note
    trt = json.loads(_run([*common, "--engine", "trtllm", "--no-corrections", "--layout",
                           "disagg 2x prefill(tp2 adp1 ep1) + 1x decode(tp4 adp1 ep1)"]).stdout)  # fmt: skip
    note = next(n for n in trt["notes"] if "decode pool runs with the aggregated family's decode_scale (x1)" in n)
    assert f"x{pd_s:.2g}" in note and "--speculative" in note
    assert not any("P/D pools use" in n for n in trt["notes"])
    assert trt["tpot_ms"] > 1.5 * trt0["tpot_ms"]  # the counted layout's decode steps run at the kernels' speed
    # the engine's spelling does not matter (normalised before the family's constants are looked up)
    alias = json.loads(_run([*common, "--engine", "TensorRT-LLM", "--no-corrections", "--layout",
                             "disagg 2x prefill(tp2 adp1 ep1) + 1x decode(tp4 adp1 ep1)"]).stdout)  # fmt: skip
    assert alias["tpot_ms"] == pytest.approx(trt["tpot_ms"], rel=1e-9)
    # validate reads the same deployment from a CSV row and predicts the same numbers
    row = {**FIXTURE[0], "num_gpus": "8", "layout": "disagg 2x prefill(tp2 adp1 ep1) + 1x decode(tp4 adp1 ep1)",
           "tp": "", "isl": "1024", "osl": "256", "concurrency": "16"}  # fmt: skip
    csv_path = tmp_path / "one.csv"
    _write_csv(csv_path, [row])
    val = _run(["validate", "--measurements", str(csv_path), "--report", "-", "--json"])
    assert val.exit_code == 0, val.output
    assert json.loads(val.stdout)["rows"][0]["predicted_ttft_ms"] == pytest.approx(rec["ttft_ms"], rel=1e-9)
    both = _run([*common, "--tp", "2", "--layout", "agg tp2 pp1 adp1 moe_tp1 ep1"])
    assert both.exit_code == 2 and "--layout" in both.output
    bad = _run([*common, "--layout", "mixed tp2"])
    assert bad.exit_code == 2 and "not understood" in bad.output
    too_big = _run(["estimate", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "h100_sxm", "--isl", "1024",
                    "--osl", "128", "--concurrency", "8", "--layout", "agg tp1 pp1 adp1 moe_tp1 ep1", "--json"])  # fmt: skip
    assert too_big.exit_code == 2 and json.loads(too_big.stdout)["fits"] is False


def test_estimate_layout_takes_the_engine_settings_the_parallelism_options_take():
    # --kv-dtype, --gpu-memory-utilization, --max-num-seqs and --max-num-batched-tokens reached only the --tp path;
    # with --layout they were dropped without a word. Now an aggregated layout answers exactly as --tp does ...
    common = ["estimate", "--model", "Qwen/Qwen3-32B", "--gpu", "h100_sxm", "--isl", "2048", "--osl", "256",
              "--concurrency", "64", "--precision", "bf16", "--json", "--no-corrections"]  # fmt: skip
    settings = [["--max-num-seqs", "16"], ["--max-num-batched-tokens", "1024"], ["--kv-dtype", "fp8"],
                ["--gpu-memory-utilization", "0.6"]]  # fmt: skip
    plain = json.loads(_run([*common, "--method", "analytic", "--layout", "agg tp2 pp1 adp1 moe_tp1 ep1"]).stdout)
    assert plain["kv_dtype"] == "bf16"
    for extra in settings:
        for method in ("sim", "analytic"):
            by_tp = _run([*common, "--method", method, "--tp", "2", *extra])
            by_layout = _run([*common, "--method", method, "--layout", "agg tp2 pp1 adp1 moe_tp1 ep1", *extra])
            assert by_tp.exit_code == 0 and by_layout.exit_code == 0, by_layout.output
            a, b = json.loads(by_tp.stdout), json.loads(by_layout.stdout)
            for k in ("ttft_ms", "tpot_ms", "throughput_tok_s"):
                assert b[k] == pytest.approx(a[k], rel=1e-9), (extra, method, k)
            assert b["memory"]["kv_capacity_tokens"] == a["memory"]["kv_capacity_tokens"]
        # each setting moves the answer it should (b: the analytic pass, as plain)
        if extra[0] in ("--kv-dtype", "--gpu-memory-utilization"):
            assert b["memory"]["kv_capacity_tokens"] != plain["memory"]["kv_capacity_tokens"]
        elif extra[0] == "--max-num-seqs":  # 16 of 64 clients run: the rest queue
            assert b["limited_by"] == "max_num_seqs" and b["ttft_ms"] > 2 * plain["ttft_ms"]
        else:  # 1,024-token chunks instead of 8,192
            assert b["ttft_ms"] != pytest.approx(plain["ttft_ms"], rel=0.01)
        if extra[0] == "--kv-dtype":
            assert b["kv_dtype"] == "fp8"
    # ... and every pool of a disaggregated layout runs with them
    pd = [*common, "--layout", "disagg 2x prefill(tp2 adp1 ep1) + 1x decode(tp4 adp1 ep1)"]
    base = json.loads(_run(pd).stdout)
    seqs = json.loads(_run([*pd, "--max-num-seqs", "16"]).stdout)
    assert seqs["limited_by"] == "max_num_seqs" and seqs["running_seqs_per_replica"] == 16
    assert base["limited_by"] == "concurrency" and seqs["ttft_ms"] > base["ttft_ms"]
    kv = json.loads(_run([*pd, "--kv-dtype", "fp8"]).stdout)
    assert kv["memory"]["kv_capacity_tokens"] == pytest.approx(2 * base["memory"]["kv_capacity_tokens"], rel=0.01)
    mem = json.loads(_run([*pd, "--gpu-memory-utilization", "0.6"]).stdout)
    assert mem["memory"]["kv_capacity_tokens"] < base["memory"]["kv_capacity_tokens"]
    budget = json.loads(_run([*pd, "--max-num-batched-tokens", "512", "--max-num-seqs", "256"]).stdout)
    assert budget["ttft_ms"] > base["ttft_ms"] and budget["tpot_ms"] == pytest.approx(base["tpot_ms"])
    # a value no engine takes is refused, not read as "the default" (0 and negatives were ignored)
    for bad in (["--num-requests", "0"], ["--max-num-seqs", "0"], ["--max-num-batched-tokens", "-5"]):
        r = _run([*common, "--tp", "2", *bad])
        assert r.exit_code == 2 and bad[0] in r.output, (bad, r.output)
    # a step budget below the running sequences cannot hold their decodes: refused on both paths and every
    # layout (the engine model raised the budget to the limit and the analytic solver did not, so the two
    # answers disagreed 3x), also when only one is given and the engine's own other one breaks the rule
    for where in (["--tp", "2"], ["--layout", "agg tp2"], ["--layout", "disagg 1x prefill(tp2) + 1x decode(tp2)"]):
        for method in ("sim", "analytic"):
            for bad, said in (
                (["--max-num-seqs", "32", "--max-num-batched-tokens", "8"], "max_num_batched_tokens 8 and max_num_seqs 32"),
                (["--max-num-batched-tokens", "8"], "max_num_batched_tokens 8 and the engine's own max_num_seqs"),
                (["--max-num-seqs", "100000"], "max_num_seqs 100000 and the engine's own max_num_batched_tokens"),
            ):
                r = _run([*common, *where, "--method", method, *bad])
                assert r.exit_code == 2 and said in r.output and "vLLM requires" in r.output, (where, bad, r.output)
    # the same settings on TensorRT-LLM: its step carries at most the budget's tokens, so the limit drops to it
    trt = json.loads(_run([*common, "--tp", "2", "--engine", "trtllm", "--max-num-batched-tokens", "8"]).stdout)
    assert trt["running_seqs_per_replica"] == 8 and trt["limited_by"] == "max_num_seqs"
    assert trt["prefill_step"]["num_prefill_tokens"] == 8  # the step shown is the budget's, not the family's
    assert any("lowered to the token budget, 8" in n for n in trt["notes"]), trt["notes"]
    # refused settings are the answer even where the model does not fit (DeepSeek-R1 on one H100)
    big = _run(["estimate", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "h100_sxm", "--isl", "128", "--osl", "16",
                "--concurrency", "4", "--max-num-seqs", "32", "--max-num-batched-tokens", "8"])  # fmt: skip
    assert big.exit_code == 2 and "vLLM requires" in big.output
    # a bare `agg` is sized to the smallest TP holding the model and one request, and says what it chose
    bare = json.loads(_run([*common, "--layout", "agg"]).stdout)
    assert bare["num_gpus"] == 1 and any("bare 'agg'" in n and "1 GPU(s)" in n for n in bare["notes"])


def test_calibrate_with_measurements_stores_measured_operating_points(tmp_path):
    # refit from the shipped coefficients (no kernel tables needed): the shipped points are dropped as stale
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, [r for r in FIXTURE if r["gpu"] == "h100_sxm"])
    outs = {}
    for flag in ("--corrections", "--no-corrections"):
        out = tmp_path / f"c{flag}.yaml"
        r = _run([
            "calibrate", "--measurements", str(csv_path), "--rounds", "1", "--out", str(out),
            "--base", "shipped", flag, "--json",
        ])  # fmt: skip
        assert r.exit_code == 0, r.output
        outs[flag] = json.loads(r.stdout)["calibration"]
    table = outs["--corrections"]["corrections"]
    assert table["deployments"] and str(csv_path) in table["source"]
    # the shipped table is dropped (stale under the refitted constants), not merged
    assert sum(len(v) for v in table["deployments"].values()) <= len(FIXTURE)
    assert "corrections" not in outs["--no-corrections"]


def test_estimate_reports_the_measured_correction_only_for_measured_deployments():
    args = ["estimate", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "b200_sxm", "--tp", "8", "--engine", "sglang",
            "--precision", "fp8", "--isl", "1024", "--osl", "1024", "--concurrency", "64", "--method", "analytic",
            "--json"]  # fmt: skip
    on = json.loads(_run(args).stdout)
    off = json.loads(_run([*args, "--no-corrections"]).stdout)
    corr = on["measured_correction"]
    assert corr is not None and corr["same_deployment"] and corr["num_points"] > 10
    assert off["measured_correction"] is None
    assert on["ttft_ms"] == pytest.approx(off["ttft_ms"] * corr["ttft_factor"])
    assert on["tpot_ms"] == pytest.approx(off["tpot_ms"] * corr["tpot_factor"])
    assert any("measured operating points" in n for n in on["notes"])
    # --layout reads the same deployment and applies the same correction
    lay = json.loads(_run([*args[:5], *args[7:], "--layout", "agg tp8 pp1 adp1 moe_tp8 ep1"]).stdout)
    assert lay["measured_correction"] == pytest.approx(corr)
    assert lay["ttft_ms"] == pytest.approx(on["ttft_ms"]) and lay["tpot_ms"] == pytest.approx(on["tpot_ms"])
    # the engine model is corrected by its own residuals
    sim_args = [a if a != "analytic" else "sim" for a in args]
    sim_on = json.loads(_run(sim_args).stdout)
    sim_off = json.loads(_run([*sim_args, "--no-corrections"]).stdout)
    sc = sim_on["measured_correction"]
    assert sc is not None and sc["ttft_factor"] != pytest.approx(corr["ttft_factor"])
    assert sim_on["ttft_ms"] == pytest.approx(sim_off["ttft_ms"] * sc["ttft_factor"])
    assert sum("measured operating points" in n for n in sim_on["notes"]) == 1
    unmeasured = json.loads(_run([
        "estimate", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "h100_sxm", "--isl", "1024", "--osl",
        "256", "--concurrency", "8", "--method", "analytic", "--json",
    ]).stdout)  # fmt: skip
    assert unmeasured["measured_correction"] is None


def test_validate_reports_corrected_rows_and_can_turn_them_off(tmp_path):
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, FIXTURE)
    report = tmp_path / "r.html"
    on = _run(["validate", "--measurements", str(csv_path), "--report", str(report), "--json"])
    off = _run(["validate", "--measurements", str(csv_path), "--report", "-", "--json", "--no-corrections"])
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    a, b = json.loads(on.stdout), json.loads(off.stdout)
    assert a["corrected_rows"] >= 1 and b["corrected_rows"] == 0
    assert sum("correction" in r for r in a["rows"]) == a["corrected_rows"]
    # the same run also scores the step-time model alone, exactly as --no-corrections does
    assert a["summary_step_model"]["tpot_ms"] == b["summary"]["tpot_ms"] and b["summary_step_model"] is None
    assert "leave-one-out" in report.read_text()


def test_validate_uses_a_held_measurement_only_on_new_files(tmp_path):
    mine = [
        {**FIXTURE[0], "model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "h100_sxm", "num_gpus": "1", "tp": "1",
         "layout": "agg tp1 pp1 adp1", "engine": "vllm", "precision": "bf16", "isl": "1024", "osl": "256",
         "concurrency": str(c), "ttft_ms": str(ttft), "tpot_ms": str(tpot), "e2e_ms": "", "throughput_tok_s": ""}
        for c, ttft, tpot in ((4, 90.0, 9.0), (8, 120.0, 10.5), (16, 170.0, 12.0), (32, 260.0, 14.0),
                              (64, 420.0, 17.0))
    ]  # fmt: skip
    train, held, mixed = tmp_path / "train.csv", tmp_path / "held.csv", tmp_path / "mixed.csv"
    _write_csv(train, mine[:3])
    _write_csv(held, mine[2:])  # one repeat of a training measurement, two new points
    _write_csv(mixed, mine[1:4])  # two repeats, one new point
    calib = tmp_path / "c.yaml"
    r = _run(["calibrate", "--base", "shipped", "--measurements", str(train), "--no-fit", "--out", str(calib)])
    assert r.exit_code == 0, r.output
    base = ["validate", "--calibration", str(calib), "--report", "-", "--json"]
    own = json.loads(_run([*base, "--measurements", str(train)]).stdout)
    assert own["own_rows"] == {"in_table": 3, "measured_rows": 3, "left_out": True, "decided": "auto"}
    # offline rows are never in the table: they do not count against a file being the calibration's own
    offline = tmp_path / "own_offline.csv"
    _write_csv(offline, [*mine[:3], *({**m, "concurrency": "offline", "num_requests": "64"} for m in mine[:3])])
    assert json.loads(_run([*base, "--measurements", str(offline)]).stdout)["own_rows"]["left_out"]
    new = json.loads(_run([*base, "--measurements", str(held)]).stdout)
    assert new["own_rows"] == {"in_table": 1, "measured_rows": 3, "left_out": False, "decided": "auto"}
    asked = json.loads(_run([*base, "--measurements", str(held), "--leave-own-out", "yes"]).stdout)
    assert asked["own_rows"]["left_out"] and asked["own_rows"]["decided"] == "asked"
    # the repeat is predicted from the measurement the calibration holds, unless it is left out (the measured
    # points' share of the prediction: the shipped learned residual model multiplies both by its own factor)
    def by_points(rec):  # type: ignore[no-untyped-def]
        return rec["predicted_ttft_ms"] / rec["correction"].get("learned_factors", [1.0])[0]

    repeat_new, repeat_asked = by_points(new["rows"][0]), by_points(asked["rows"][0])
    assert abs(repeat_new / 170 - 1) < abs(repeat_asked / 170 - 1)
    text = " ".join(_run([*base[:-1], "--measurements", str(held)]).output.split())
    assert "not a leave-one-out error" in text and "note:" not in text
    # mostly held rows, but fewer than 90 %: scored as new data, with a note saying how to score it otherwise
    mix = json.loads(_run([*base, "--measurements", str(mixed)]).stdout)["own_rows"]
    assert mix["in_table"] == 2 and not mix["left_out"] and "--leave-own-out yes" in mix["note"]
    assert "note:" in " ".join(_run([*base[:-1], "--measurements", str(mixed)]).output.split())
    # the report says why it is not leave-one-out
    report = tmp_path / "r.html"
    r = _run([*base[:2], str(calib), "--report", str(report), "--measurements", str(train), "--leave-own-out", "no"])
    assert r.exit_code == 0, r.output
    assert "as asked (--leave-own-out no)" in report.read_text()
    bad = _run([*base, "--measurements", str(held), "--leave-own-out", "maybe"])
    assert bad.exit_code == 2 and "--leave-own-out" in bad.output


def test_calibrate_no_fit_adds_measured_points_to_the_shipped_calibration(tmp_path):
    csv_path = tmp_path / "mine.csv"
    mine = [
        {**FIXTURE[0], "model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "h100_sxm", "num_gpus": "1", "tp": "1",
         "layout": "agg tp1 pp1 adp1", "engine": "vllm", "precision": "bf16", "isl": "1024", "osl": "256",
         "concurrency": str(c), "ttft_ms": str(ttft), "tpot_ms": str(tpot), "e2e_ms": "", "throughput_tok_s": ""}
        for c, ttft, tpot in ((4, 90.0, 9.0), (8, 120.0, 10.5), (16, 170.0, 12.0))
    ]  # fmt: skip
    _write_csv(csv_path, mine)
    out = tmp_path / "mine.yaml"
    r = _run(["calibrate", "--base", "shipped", "--measurements", str(csv_path), "--no-fit", "--out", str(out),
              "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    written = json.loads(r.stdout)["calibration"]
    from gpuyield.core.perf.calibration import calibration_to_dict, default_calibration

    shipped = calibration_to_dict(default_calibration())
    assert written["engines"] == shipped["engines"] and written["gpus"] == shipped["gpus"]  # coefficients kept
    n_shipped = sum(len(v) for v in shipped["corrections"]["deployments"].values())
    assert sum(len(v) for v in written["corrections"]["deployments"].values()) == n_shipped + 3
    args = ["estimate", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "h100_sxm", "--isl", "1024", "--osl",
            "256", "--concurrency", "8", "--method", "analytic", "--json"]  # fmt: skip
    assert json.loads(_run(args).stdout)["measured_correction"] is None
    est = json.loads(_run([*args, "--calibration", str(out)]).stdout)
    assert est["measured_correction"] is not None and est["measured_correction"]["same_deployment"]
    assert est["ttft_ms"] == pytest.approx(120.0, rel=0.35) and est["tpot_ms"] == pytest.approx(10.5, rel=0.2)
    # clear errors for calls that cannot mean anything
    bad = _run(["calibrate", "--out", str(tmp_path / "x.yaml")])
    assert bad.exit_code == 2 and "--base" in bad.output
    bad = _run(["calibrate", "--base", "shipped", "--no-fit", "--out", str(tmp_path / "x.yaml")])
    assert bad.exit_code == 2 and "--measurements" in bad.output
    bad = _run(["calibrate", "--base", "shipped", "--fit-method", "sim", "--out", str(tmp_path / "x.yaml")])
    assert bad.exit_code == 2 and "--measurements" in bad.output  # nothing to fit through the engine model
    bad = _run(["calibrate", "--base", "shipped", "--fit-method", "simulate", "--out", str(tmp_path / "x.yaml")])
    assert bad.exit_code == 2 and "--fit-method" in bad.output
    assert not (tmp_path / "x.yaml").exists()


# 400 clients of 8,000-token prompts on one H100 cannot each finish a request every 5.3 s (compute floor)
IMPOSSIBLE = {
    "gpu": "h100_sxm", "num_gpus": "1", "model": "Qwen/Qwen3-32B", "engine": "vllm", "precision": "bf16",
    "layout": "agg tp1 pp1 adp1", "tp": "1", "isl": "8000", "osl": "500", "concurrency": "400",
    "ttft_ms": "300", "tpot_ms": "10", "source": "made up",
}  # fmt: skip
POSSIBLE = {**IMPOSSIBLE, "concurrency": "4", "ttft_ms": "900", "tpot_ms": "30"}


def test_validate_names_physically_impossible_rows(tmp_path):
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, [IMPOSSIBLE, POSSIBLE])
    r = _run(["validate", "--measurements", str(csv_path), "--report", "-"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "1 rows are physically impossible as recorded" in text and "row 0" in text
    j = _run(["validate", "--measurements", str(csv_path), "--report", "-", "--json"])
    res = json.loads(j.stdout)
    assert [u["row"] for u in res["implausible"]] == [0]
    assert res["summary_plausible"]["ttft_ms"]["n"] == 1 and res["summary"]["ttft_ms"]["n"] == 2


def test_calibrate_says_which_measurements_are_physically_impossible(tmp_path):
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, [POSSIBLE, IMPOSSIBLE])
    r = _run(["calibrate", "--base", "shipped", "--measurements", str(csv_path), "--no-fit", "--out",
              str(tmp_path / "c.yaml"), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    logs = json.loads(r.stdout)["log"]
    assert any("1 measurement(s) are physically impossible as recorded (rows 1)" in m for m in logs), logs


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_profiles_of_two_models_into_one_directory_add_up(tmp_path, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    prof = tmp_path / "prof"
    args = ["profile", "--device", "cpu", "--backend", backend, "--out", str(prof), "--budget-s", "4", "--max-tokens",
            "16", "--json"]  # fmt: skip
    first = _run([*args, "--model", "tiny-llama"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["kept_rows"] == 0
    table = next(prof.glob(f"data/cpu/gemm/{backend}/*/gemm_perf.csv"))
    shapes_a = {tuple(r.split(",")[7:9]) for r in table.read_text().splitlines()[1:]}
    second = _run([*args, "--model", "tiny-llama-100m"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["kept_rows"] > 0
    shapes_ab = {tuple(r.split(",")[7:9]) for r in table.read_text().splitlines()[1:]}
    assert shapes_a < shapes_ab  # the first model's shapes are still there, with the second's
    assert "merged with" in (prof / "cpu.yaml").read_text()
    # another dtype (or another backend's kernels) into the same directory would be timed against one peak:
    # refused, nothing written
    before = table.read_text()
    if backend == "torch":
        mixed = _run([*args, "--model", "tiny-llama", "--dtype", "bf16"])
    else:
        other = prof / "data" / "cpu" / "gemm" / "torch" / "2.5.0" / "gemm_perf.csv"
        other.parent.mkdir(parents=True)
        other.write_text(before)
        mixed = _run([*args, "--model", "tiny-llama"])
        assert "already holds a torch profile" in mixed.output
    assert mixed.exit_code == 2 and "would mix" in mixed.output
    assert table.read_text() == before


def test_numpy_profile_is_cpu_and_fp32_only(tmp_path):
    base = ["profile", "--backend", "numpy", "--out", str(tmp_path / "p"), "--budget-s", "2"]
    for extra, said in ((["--device", "cuda"], "CPU only"), (["--dtype", "bf16"], "fp32 only")):
        r = _run([*base, *extra])
        assert r.exit_code == 2 and said in r.output, r.output
    r = _run([*base, "--backend", "jax"])
    assert r.exit_code == 2 and "--backend" in r.output
    assert not (tmp_path / "p").exists()


def test_validate_reports_the_floor_of_repeated_inputs(tmp_path):
    """A row repeated with another measured TPOT: the text, the JSON and the report say how much error no model
    of the inputs can remove."""
    rows = [FIXTURE[0], dict(FIXTURE[0], tpot_ms=str(2 * float(FIXTURE[0]["tpot_ms"]))), FIXTURE[1]]
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, rows)
    report = tmp_path / "r.html"
    r = _run(["validate", "--measurements", str(csv_path), "--report", str(report), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)["repeat_floor"]
    assert rep["rows"] == 2 and rep["groups"] == 1
    assert rep["tpot_ms"]["oracle_floor"] == pytest.approx(0.5 / 3)  # the lower answer for both, over 3 rows
    assert "repeated inputs, other measurements" in report.read_text()
    text = _run(["validate", "--measurements", str(csv_path), "--report", "-"])
    assert text.exit_code == 0, text.output
    assert "2 rows repeat another row's inputs" in " ".join(text.output.split())


def test_baseline_capacity_is_the_analytic_estimate_at_its_concurrency() -> None:
    from gpuyield.core.baseline import Achievable, WorkloadMix, perf_model_achievable
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import default_calibration
    from gpuyield.edges.cli.cmd_estimate import estimate_record

    for engine, gpus, tpot_s in (("vllm", 2, 0.030), ("sglang", 4, 0.025)):
        mix = WorkloadMix("Qwen/Qwen3-32B", "NVIDIA H100 80GB HBM3", gpus, 1, 600.0, 1024.0, 128.0, None, None, tpot_s,
                          None, None, engine_kind=engine)  # fmt: skip
        got = perf_model_achievable()(mix)
        assert isinstance(got, Achievable) and got.concurrency is not None
        rec = estimate_record(
            catalog=default_catalog(), calibration=default_calibration(), model="Qwen/Qwen3-32B", gpu="h100_sxm",
            tp=gpus, pp=1, ep=1, attention_dp=1, precision="bf16", kv_dtype="bf16", engine=engine, isl=1024, osl=128,
            concurrency=got.concurrency, num_requests=None, replicas=1, gpu_memory_utilization=0.9, max_num_seqs=None,
            max_num_batched_tokens=None, method="analytic",
        )  # fmt: skip
        assert rec["measured_correction"] is not None
        assert got.output_tokens_per_gpu_hour == pytest.approx(rec["throughput_tok_s"] * 3600.0 / gpus, rel=1e-9)


def test_validate_lists_a_bad_measurement_with_its_row_once(tmp_path):
    # a negative TTFT was read as "not measured" and the row scored on TPOT alone; it is listed as unsupported
    # with its reason, and the text names the row once ("row 0: row 0: ..." before)
    rows = [{**FIXTURE[0], "ttft_ms": "-5"}, FIXTURE[1]]
    csv_path = tmp_path / "bad.csv"
    _write_csv(csv_path, rows)
    text = _run(["validate", "--measurements", str(csv_path), "--report", str(tmp_path / "r.html")])
    assert text.exit_code == 0, text.output
    assert "row 0: ttft_ms='-5' is not a positive measurement" in " ".join(text.output.split())
    assert "row 0: row 0" not in text.output
    rec = json.loads(_run(["validate", "--measurements", str(csv_path), "--report", "-", "--json"]).stdout)
    assert [u["row"] for u in rec["unsupported"]] == [0] and [r["row"] for r in rec["rows"]] == [1]
    assert rec["unsupported"][0]["reason"].startswith("ttft_ms='-5'")  # the record names its row once


def test_a_calibration_fitted_under_older_model_rules_loads_with_a_note_until_refitted(tmp_path):
    """A file records the model-rules version its engine constants were fitted under; an older one (or one
    without the key, written before versions were kept) still loads, and estimate, validate and calibrate say to
    refit it. Refitting writes this build's version; --no-fit keeps the base's constants and so its version."""
    from gpuyield.core.perf.calibration import MODEL_RULES, calibration_to_dict

    d = calibration_to_dict(default_calibration())
    assert d["model_rules"] == MODEL_RULES  # the shipped file is fitted under this build's rules
    d.pop("corrections")
    d.pop("model_rules")
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(d, sort_keys=False))
    args = ["estimate", "--model", "Qwen/Qwen3-32B", "--gpu", "h100_sxm", "--tp", "2", "--isl", "1024", "--osl",
            "256", "--concurrency", "8", "--method", "analytic", "--json"]  # fmt: skip
    stale = "fitted under the model's rules v0"
    assert any(stale in n for n in json.loads(_run([*args, "--calibration", str(old)]).stdout)["notes"])
    assert not any("model's rules" in n for n in json.loads(_run(args).stdout)["notes"])
    csv_path = tmp_path / "m.csv"
    _write_csv(csv_path, [r for r in FIXTURE if r["gpu"] == "h100_sxm"])
    r = _run(["validate", "--measurements", str(csv_path), "--calibration", str(old), "--json"])
    assert r.exit_code == 0, r.output
    assert any(stale in n for n in json.loads(r.stdout)["calibration_notes"])
    r = _run(["validate", "--measurements", str(csv_path), "--json"])
    assert json.loads(r.stdout)["calibration_notes"] == []
    kept, refit = tmp_path / "kept.yaml", tmp_path / "refit.yaml"
    r = _run(["calibrate", "--base", str(old), "--measurements", str(csv_path), "--no-fit", "--out", str(kept),
              "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["calibration"]["model_rules"] == 0 and any(stale in line for line in out["log"])
    assert yaml.safe_load(kept.read_text())["model_rules"] == 0
    r = _run(["calibrate", "--base", str(old), "--measurements", str(csv_path), "--rounds", "1",
              "--no-corrections", "--out", str(refit), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    # the CSV has vLLM rows only: the other families keep the base's constants, and the file the base's rules
    assert yaml.safe_load(refit.read_text())["model_rules"] == 0
    log = json.loads(r.stdout)["log"]
    assert any("kept from the base" in line and "trtllm" in line and "vllm," not in line for line in log)
    assert any(stale in line for line in log)
    d["engines"] = {"vllm": d["engines"]["vllm"]}  # a base of vLLM constants only: all refitted
    old.write_text(yaml.safe_dump(d, sort_keys=False))
    r = _run(["calibrate", "--base", str(old), "--measurements", str(csv_path), "--rounds", "1",
              "--no-corrections", "--out", str(refit), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(refit.read_text())["model_rules"] == MODEL_RULES
    assert not any("model's rules" in line or "kept from the base" in line for line in json.loads(r.stdout)["log"])


def test_estimate_refuses_a_deployment_mode_in_the_engine_name():
    for extra in (["--tp", "2"], ["--layout", "disagg 1x prefill(tp2 adp1 ep1) + 1x decode(tp2 adp1 ep1)"]):
        r = _run(["estimate", "--model", "Qwen/Qwen3-32B", "--gpu", "h100_sxm", "--isl", "1024",
                  "--osl", "256", "--concurrency", "8", "--engine", "trtllm:disagg", *extra])  # fmt: skip
        assert r.exit_code != 0 and "engine family" in r.output, r.output
