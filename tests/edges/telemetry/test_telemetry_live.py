"""Live sources on 127.0.0.1: a fake Prometheus (query_range), a fake exporter for ``baseline watch``, the
DuckDB store, and MIG / relabelled series joined end to end."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpuyield.edges.cli.cmd_baseline import build_baseline
from gpuyield.edges.storage import TelemetryStore
from gpuyield.edges.telemetry import SampleBuffer, query_prometheus
from gpuyield.edges.telemetry.watch import TargetsFile, watch
from gpuyield.errors import TelemetryError

T0 = 1773144000.0


@contextmanager
def serve(handler: Callable[[str], tuple[int, str, str]]) -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1; ``handler(path) -> (status, content_type, body)``."""

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            status, ctype, body = handler(self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _matrix(series: list[tuple[dict[str, str], list[float]]], start: float, step: float) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": labels, "values": [[start + i * step, repr(v)] for i, v in enumerate(vals)]}
        for labels, vals in series]}})


def test_prometheus_query_range_with_mig_and_relabelled_pods(tmp_path: Path) -> None:
    # Two MIG instances of one A100 (GPU_I_ID 1 and 2), relabelled by Prometheus (exported_pod = workload,
    # pod = the exporter); one vLLM engine scraped with pod = its own pod. 5 points, 60 s apart.
    dcgm = {"__name__": "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gpu": "0", "UUID": "GPU-1", "Hostname": "n1",
            "modelName": "NVIDIA A100-SXM4-80GB", "pod": "dcgm-exporter-abc", "namespace": "gpu-operator"}
    mig1 = {**dcgm, "GPU_I_ID": "1", "GPU_I_PROFILE": "3g.40gb", "exported_pod": "vllm-a", "exported_namespace": "s"}
    mig2 = {**dcgm, "GPU_I_ID": "2", "GPU_I_PROFILE": "3g.40gb"}
    parent = {**dcgm, "__name__": "DCGM_FI_DEV_POWER_USAGE"}  # device-level field: on the parent GPU only
    eng = {"__name__": "vllm:generation_tokens_total", "model_name": "m", "pod": "vllm-a", "namespace": "s",
           "instance": "10.0.0.9:8000"}
    seen: list[dict[str, list[str]]] = []

    def handler(path: str) -> tuple[int, str, str]:
        q = urllib.parse.urlparse(path)
        params = urllib.parse.parse_qs(q.query)
        seen.append(params)
        assert q.path == "/api/v1/query_range"
        return 200, "application/json", _matrix(
            [(mig1, [0.5, 0.5, 0.7, 0.7, 0.9]), (mig2, [0.0] * 5), (parent, [300.0] * 5),
             (eng, [0, 600, 1200, 1200, 1800])],
            float(params["start"][0]), 60.0)

    with serve(handler) as url:
        prices = tmp_path / "prices.yaml"
        prices.write_text('prices:\n  - {gpu: "NVIDIA A100-SXM4-80GB", usd_per_gpu_hour: 1.4, source: t, as_of: 2026-01-01}\n')
        result, section = build_baseline(metrics=[], prometheus=url, window="4m", end=str(T0 + 240),
                                         prices=str(prices), map_file=None, db=None, interval="15s", catalog=None)
    assert seen and "DCGM_FI_PROF_SM_ACTIVE" in seen[0]["query"][0] and seen[0]["step"] == ["15"]
    gpus = {g.gpu_id: g for g in result.per_gpu}
    assert set(gpus) == {"n1/gpu0/mig1", "n1/gpu0/mig2"}
    assert gpus["n1/gpu0/mig1"].pod == "vllm-a" and gpus["n1/gpu0/mig2"].pod is None
    assert gpus["n1/gpu0/mig1"].mig_profile == "3g.40gb"
    # step-held GR_ENGINE_ACTIVE over 4 intervals: (0.5 + 0.5 + 0.7 + 0.7) / 4 = 0.6
    assert gpus["n1/gpu0/mig1"].mean_gr_engine_active == pytest.approx(0.6)
    (m,) = result.per_model
    assert m.gpus == ["n1/gpu0/mig1"] and m.output_tokens == 1800
    # the engine had no traffic in (120, 180]: 60 s idle on mig1; mig2 has no engine: 240 s idle
    assert gpus["n1/gpu0/mig1"].idle_gpu_hours == pytest.approx(60 / 3600)
    assert gpus["n1/gpu0/mig2"].idle_reason == "no engine"
    assert section["sources"][0]["samples"] == 20
    # The parent GPU is not a unit of its own: its 300 W are shared by its 2 instances (150 W each), and each
    # 3g.40gb instance costs 3/7 of the GPU's $1.40/hour = $0.60/hour.
    assert gpus["n1/gpu0/mig2"].mean_power_w == pytest.approx(150.0)
    assert gpus["n1/gpu0/mig1"].usd_per_gpu_hour == pytest.approx(0.60)
    assert result.fleet.energy_kwh == pytest.approx(300 * 240 / 3.6e6)
    assert any("split into 2 MIG instances" in n for n in result.notes)


def test_prometheus_errors_are_telemetry_errors() -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with serve(lambda p: (200, "application/json", body)) as url, pytest.raises(TelemetryError, match="bad_data"):
        query_prometheus(url, window_s=3600, end_s=T0, buffer=SampleBuffer())
    with pytest.raises(TelemetryError, match="cannot fetch"):
        query_prometheus("http://127.0.0.1:9", window_s=60, end_s=T0, buffer=SampleBuffer(), timeout_s=2)


def test_watch_scrapes_a_fake_exporter_into_duckdb_and_baseline_reads_it(tmp_path: Path) -> None:
    calls = {"n": 0}

    def exporter(path: str) -> tuple[int, str, str]:
        calls["n"] += 1
        n = calls["n"]
        return 200, "text/plain; version=0.0.4", (
            "# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
            f'DCGM_FI_DEV_POWER_USAGE{{gpu="0",Hostname="h",modelName="NVIDIA H100 80GB HBM3"}} {100 + n}\n'
            "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
            'DCGM_FI_DEV_GPU_UTIL{gpu="0",Hostname="h",modelName="NVIDIA H100 80GB HBM3"} 50\n'
            "this line is malformed\n"
        )

    db = tmp_path / "fleet.duckdb"
    with serve(exporter) as url:
        targets = TargetsFile.model_validate({"targets": [{"url": url + "/metrics", "labels": {"job": "dcgm"}},
                                                          {"url": "http://127.0.0.1:9/metrics"}]})
        with TelemetryStore(db) as store:
            report = watch(targets, store, every_s=0.4, duration_s=1.2, timeout_s=1.0)
    assert report.num_ticks == 4  # t = 0, 0.4, 0.8, 1.2 s
    assert report.num_samples == 8 and report.num_malformed == 4
    assert len(report.errors) == 4 and "127.0.0.1:9" in report.errors[0]  # the dead target, every tick
    with TelemetryStore(db) as store:
        assert store.num_samples() == 8
        rows = store.con.execute("SELECT count(*), sum(num_malformed) FROM ingests").fetchone()
        assert rows == (4, 4)
    result, _ = build_baseline(metrics=[], prometheus=None, window=None, end=None, prices=None, map_file=None,
                               db=str(db), interval="15s", catalog=None)
    (g,) = result.per_gpu
    assert g.gpu_id == "h/gpu0" and g.mean_gpu_util == pytest.approx(0.5)
    assert 1.0 <= g.window_s <= 2.5  # four real scrapes ~0.4 s apart
    assert 101 <= g.mean_power_w <= 104
