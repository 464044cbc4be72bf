"""The tolerant exposition parser: real files, malformed lines, scrape headers, timestamps, escapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuyield.edges.telemetry import SampleBuffer, parse_duration_s
from gpuyield.edges.telemetry.exposition import parse_scrape_header, parse_timestamp_s
from gpuyield.edges.telemetry.families import normalise_labels
from gpuyield.errors import ConfigError

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"
REAL = sorted(p.name for p in FIX.glob("*.prom"))


@pytest.mark.parametrize("name", REAL)
def test_real_files_parse_like_prometheus_client(name: str) -> None:
    text = (FIX / name).read_text()
    buf = SampleBuffer()
    stats = buf.add_text(text, source=name, default_ts_s=0)
    assert stats.num_malformed == 0
    ref = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    assert stats.num_samples == len(ref)
    _, _, values = buf.arrays()
    assert sorted(values.tolist()) == sorted(float(s.value) for s in ref)


def test_malformed_lines_are_counted_and_skipped_never_raised() -> None:
    text = "\n".join([
        "# TYPE good counter",
        'good{a="1"} 5',
        'bad{a="1" 5',  # unclosed label set
        "good2 notanumber",  # bad value
        "no_value_here",  # no value
        '9starts_with_digit{a="1"} 1',  # bad metric name
        'good{a="1"} 6 1773144000000 extra',  # too many fields
        'good{a="x\\"y\\\\z"} 7',  # escaped quote and backslash: fine
        "# TYPE",  # malformed TYPE line
        "# scrape at not-a-time",  # malformed scrape header
        "good3 +Inf",
    ])
    buf = SampleBuffer()
    stats = buf.add_text(text, source="bad.prom", default_ts_s=0)
    assert stats.num_malformed == 7
    assert stats.num_samples == 3
    assert stats.malformed_examples[0] == 'bad.prom:3: bad{a="1" 5'
    assert len(stats.malformed_examples) == 5  # the first five are kept, all are counted
    labels = [dict(k.labels) for k in buf.series]
    assert {"a": 'x"y\\z'} in labels


def test_scrape_headers_split_a_file_and_attach_target_labels() -> None:
    text = "\n".join([
        "# scrape at 2026-03-10T12:00:00Z {pod=\"p\",namespace=\"n\"}",
        'vllm:generation_tokens_total{model_name="m"} 10',
        "# scrape at 1773144015",
        'vllm:generation_tokens_total{model_name="m"} 20',
        'vllm:generation_tokens_total{model_name="m",pod="own"} 1 1773144999000',
    ])
    buf = SampleBuffer()
    stats = buf.add_text(text, source="s", default_ts_s=0)
    assert stats.num_scrapes == 2 and stats.num_malformed == 0
    sid, ts, values = buf.arrays()
    assert ts.tolist() == [1773144000000, 1773144015000, 1773144999000]
    # each header states its own target labels (none on the second); the line's own labels win
    assert dict(buf.series[sid[0]].labels) == {"model_name": "m", "namespace": "n", "pod": "p"}
    assert dict(buf.series[sid[1]].labels) == {"model_name": "m"}
    assert dict(buf.series[sid[2]].labels)["pod"] == "own"


def test_exemplars_and_crlf_are_tolerated() -> None:
    text = 'x_bucket{le="0.1"} 3 # {trace_id="abc"} 0.05 1773144000\r\nx_count 3\r\n'
    buf = SampleBuffer()
    stats = buf.add_text(text, source="s", default_ts_s=0)
    assert stats.num_malformed == 0 and stats.num_samples == 2


def test_header_and_time_parsing() -> None:
    assert parse_timestamp_s("1773144000.5") == 1773144000.5
    assert parse_timestamp_s("2026-03-10T12:00:00Z") == 1773144000
    assert parse_timestamp_s("2026-03-10T12:00:00") == 1773144000  # naive = UTC
    assert parse_timestamp_s("yesterday") is None
    assert parse_scrape_header('# scrape at 5 {a="b"}') == (5.0, {"a": "b"})
    assert parse_scrape_header("# scrape at 5 {a=}") is None
    assert parse_duration_s("24h") == 86400 and parse_duration_s("1h30m") == 5400 and parse_duration_s("90") == 90
    assert parse_duration_s("250ms") == 0.25
    with pytest.raises(ConfigError, match="--window 'abc'"):
        parse_duration_s("abc")


def test_label_variants_are_normalised() -> None:
    # dcgm Hostname/hostname, relabelled exported_pod/exported_namespace (Prometheus' own pod = the exporter),
    # MIG GPU_I_ID / GPU_I_PROFILE
    got = normalise_labels({"Hostname": "h", "pod": "dcgm-exporter-x", "exported_pod": "vllm-0",
                            "exported_namespace": "serving", "GPU_I_ID": "3", "GPU_I_PROFILE": "1g.10gb",
                            "modelName": "NVIDIA A100-SXM4-80GB", "pod_uid": ""})
    assert got == {"host": "h", "pod": "vllm-0", "namespace": "serving", "mig_instance": "3",
                   "mig_profile": "1g.10gb", "device_name": "NVIDIA A100-SXM4-80GB"}
    assert normalise_labels({"hostname": "h2"}) == {"host": "h2"}
