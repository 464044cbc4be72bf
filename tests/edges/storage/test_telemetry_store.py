"""The DuckDB store: round trip, appends across opens, series reuse, windows, derived tables."""

from __future__ import annotations

from pathlib import Path

from gpuyield.edges.storage import TelemetryStore
from gpuyield.edges.telemetry import SampleBuffer, assemble_inputs, group_samples

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"


def _buffer(scrapes: int, t0: float) -> SampleBuffer:
    buf = SampleBuffer()
    text = "".join(
        f"# scrape at {t0 + 15 * k}\n"
        f'DCGM_FI_DEV_POWER_USAGE{{gpu="0",Hostname="h"}} {100 + k}\n'
        f'vllm:generation_tokens_total{{model_name="m",pod="p"}} {10 * k}\n'
        for k in range(scrapes)
    )
    buf.add_text(text, source="src", default_ts_s=0)
    return buf


def test_roundtrip_and_append_across_opens(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    with TelemetryStore(db) as store:
        res = store.ingest(_buffer(3, 1000.0), sources=[("src", _buffer(3, 1000.0).stats)])
        assert res.num_samples == 6 and res.num_new_series == 2
    with TelemetryStore(db) as store:
        res = store.ingest(_buffer(2, 1045.0))  # two later scrapes of the same series
        assert res.num_new_series == 0
        keys, sources, sid, ts, values = store.load()
        assert len(keys) == 2 and sources == ["src", "src"] and store.num_samples() == 10
        raw = {r.name: r for r in group_samples(keys, sources, sid, ts, values)}
        power = raw["DCGM_FI_DEV_POWER_USAGE"].series
        assert power.ts_s.tolist() == [1000, 1015, 1030, 1045, 1060]
        assert power.values.tolist() == [100, 101, 102, 100, 101]
        # a window
        keys, sources, sid, ts, values = store.load(start_ms=1030_000, end_ms=1045_000)
        assert sorted(ts.tolist()) == [1030_000, 1030_000, 1045_000, 1045_000]
        assert store.con.execute("SELECT metric_type FROM series ORDER BY series_id").fetchall() == [(None,), (None,)]


def test_entities_are_recorded(tmp_path: Path) -> None:
    buf = SampleBuffer()
    buf.add_text((FIX / "dcgm_sample_h100_8gpu.prom").read_text(), source="h100", default_ts_s=0)
    with TelemetryStore(tmp_path / "e.duckdb") as store:
        store.ingest(buf)
        keys, sources, sid, ts, values = store.load()
        inputs = assemble_inputs(group_samples(keys, sources, sid, ts, values))
        store.record_entities(inputs)
        rows = store.con.execute("SELECT gpu_id, device_name, pod FROM gpus ORDER BY gpu_id").fetchall()
    assert len(rows) == 8 and rows[0] == ("gpu-node-1/gpu0", "NVIDIA H100 80GB HBM3", "vllm-agg-0-vllmdecodeworker-s65j5")
    assert rows[1][2] is None
