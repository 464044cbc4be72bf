import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from gpuyield.core.workload import PrefixSpec, SessionSpec, SystemPromptSpec, inspect
from gpuyield.edges.io.traces import detect_format, load_rate_curve, load_workload, parse_timestamp
from gpuyield.errors import WorkloadError

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "traces"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/traces not present")


# ---------------------------------------------------------------- built-ins and their documented figures
def test_builtin_azure_conv_matches_its_documentation():
    w = load_workload("builtin:azure-conv")
    s = inspect(w)
    assert s.num_requests == 19_366  # shared/data/README.md: 19,366 requests over 1 h
    assert 3000 < s.duration_s <= 3600
    assert s.duration_s == pytest.approx(3501.722, abs=1e-3)  # 18:15:46.6805900 -> 19:14:08.4025270
    assert w.arrival_s[0] == 0.0 and not w.has_hashes
    assert s.input_tokens.total == 22_361_870 and s.output_tokens.total == 4_088_665  # column sums of the CSV
    assert w.meta.licence == "CC-BY-4.0"


def test_builtin_mooncake_synthetic_matches_its_documentation():
    w = load_workload("builtin:mooncake-synthetic")
    s = inspect(w)
    # Mooncake FAST'25 paper (FAST25-release/Mooncake-FAST25.pdf), Table 2 "Workload Statistics", Synthetic:
    # 3,993 requests, avg input 15,325, avg output 149 tokens, cache ratio 66%, Poisson arrivals
    assert s.num_requests == 3_993
    assert round(s.input_tokens.mean) == 15_325 and round(s.output_tokens.mean) == 149
    assert s.interarrival_cv == pytest.approx(1.0, abs=0.05)  # Poisson
    assert s.block_size_tokens == 512
    assert s.num_blocks == 121_877  # one hash id per 512-token block, ceil(input_length / 512)
    assert s.num_unique_blocks == 121_877 - 77_953
    # upper bound of reuse with an unlimited cache: 64.0% of blocks, 65.2% of input tokens
    assert s.prefix_reuse_block_frac == pytest.approx(77_953 / 121_877)
    assert s.prefix_reuse_token_frac == pytest.approx(0.6522, abs=5e-4)
    assert s.prefix_reuse_token_frac == pytest.approx(0.66, abs=0.015)  # the paper's 66% cache ratio
    assert s.duration_s == pytest.approx(1022.025)


@needs_shared
def test_builtins_are_the_shared_files():
    w_file = load_workload(str(SHARED / "AzureLLMInferenceTrace_conv.csv"))
    w_builtin = load_workload("builtin:azure-conv")
    assert np.array_equal(w_file.arrival_s, w_builtin.arrival_s)
    assert np.array_equal(w_file.input_tokens, w_builtin.input_tokens)
    m_file = load_workload(str(SHARED / "mooncake_synthetic_trace.jsonl"))
    assert len(m_file) == 3993 and m_file.hash_values.size == 121_877


def test_unknown_builtin():
    with pytest.raises(WorkloadError, match="unknown built-in trace 'nope'; expected one of: azure-conv"):
        load_workload("builtin:nope")


# ---------------------------------------------------------------- Azure CSV
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_azure_parses_timestamps_and_sorts(tmp_path):
    p = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "2023-11-16 18:15:50.5,10,5\n2023-11-16 18:15:46.6805900,20,0\n2023-11-16T18:15:47Z,30,7\n")
    w = load_workload(str(p))
    assert w.arrival_s.tolist() == pytest.approx([0.0, 0.31941, 3.81941])
    assert w.input_tokens.tolist() == [20, 30, 10]
    assert w.output_tokens.tolist() == [1, 7, 5]  # GeneratedTokens=0 replayed as 1 token, with a note
    assert any("out of arrival order" in n for n in w.meta.notes)
    assert any("GeneratedTokens=0" in n for n in w.meta.notes)


def test_parse_timestamp_forms():
    assert parse_timestamp("1970-01-01 00:00:01.5") == 1.5
    assert parse_timestamp("1970-01-01T01:00:00+01:00") == 0.0
    assert parse_timestamp("12.25") == 12.25
    with pytest.raises(ValueError, match="unparseable timestamp 'yesterday'"):
        parse_timestamp("yesterday")


@pytest.mark.parametrize(
    "body, match",
    [
        ("TIMESTAMP,Context,GeneratedTokens\n", "unrecognised header"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,abc,3\n", r"az.csv:2: field ContextTokens: 'abc' is not an integer"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5,3\nnot-a-date,5,3\n", r"az.csv:3: field TIMESTAMP: unparseable"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,0,3\n", r"az.csv:2: field ContextTokens: 0 is below the minimum 1"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5\n", r"az.csv:2: 2 fields; expected 3"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
    ],
)
def test_azure_bad_files(tmp_path, body, match):
    p = write(tmp_path, "az.csv", body)
    with pytest.raises(WorkloadError, match=match):
        load_workload(str(p))


def test_lenient_counts_and_reports_skipped_rows(tmp_path):
    p = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5,3\n"
              "bad,5,3\n2023-11-16 18:15:47,x,3\n2023-11-16 18:15:48,6,3\n")
    w = load_workload(str(p), lenient=True)
    assert len(w) == 2
    note = [n for n in w.meta.notes if n.startswith("lenient")][0]
    assert "skipped 2 bad rows" in note and "az.csv:3" in note


# ---------------------------------------------------------------- Mooncake JSONL
def test_mooncake_hashes_and_errors(tmp_path):
    rows = [
        {"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [0, 1]},
        {"timestamp": 1500, "input_length": 600, "output_length": 5, "hash_ids": [0, 2]},
    ]
    p = write(tmp_path, "mc.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    w = load_workload(str(p))
    assert w.arrival_s.tolist() == [0.0, 1.5]
    assert w.block_hashes(0)[0] == w.block_hashes(1)[0] and w.block_hashes(0)[1] != w.block_hashes(1)[1]
    assert inspect(w).prefix_reuse_block_frac == 0.25
    # the same ids in a differently named trace do not collide
    q = write(tmp_path, "other.jsonl", p.read_text())
    assert load_workload(str(q)).block_hashes(0)[0] != w.block_hashes(0)[0]
    bad = write(tmp_path, "bad.jsonl", json.dumps(rows[0]) + "\n" + '{"timestamp": 5, "input_length": 100}\n')
    with pytest.raises(WorkloadError, match=r"bad.jsonl:2: missing field output_length"):
        load_workload(str(bad))
    too_many = write(tmp_path, "tm.jsonl", json.dumps({**rows[0], "hash_ids": [1, 2, 3]}) + "\n")
    with pytest.raises(WorkloadError, match=r"tm.jsonl:1: field hash_ids: 3 blocks for input_length 1000"):
        load_workload(str(too_many))
    garbage = write(tmp_path, "g.jsonl", json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(WorkloadError, match=r"g.jsonl:2: not valid JSON"):
        load_workload(str(garbage))


@needs_shared
def test_mooncake_gzip_slice(tmp_path):
    lines = (SHARED / "mooncake_synthetic_trace.jsonl").read_text().splitlines()[:200]
    p = tmp_path / "slice.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(lines) + "\n")
    w = load_workload(str(p))
    assert len(w) == 200 and detect_format(p) == "mooncake"


# ---------------------------------------------------------------- length tables and arrivals
@needs_shared
def test_length_tables_with_synthetic_arrivals():
    arxiv = SHARED / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
    w = load_workload(str(arxiv), arrival="gamma", rate=20.0, cv=2.0, num_requests=5000, seed=1)
    s = inspect(w)
    assert len(w) == 5000 and s.mean_rate_per_s == pytest.approx(20.0, rel=0.1)
    assert s.interarrival_cv == pytest.approx(2.0, rel=0.15)
    assert w.input_tokens.max() <= 16_384
    again = load_workload(str(arxiv), arrival="gamma", rate=20.0, cv=2.0, num_requests=5000, seed=1)
    assert np.array_equal(w.arrival_s, again.arrival_s)


@needs_shared
def test_rate_curve_from_servegen_aggregate():
    curve_file = SHARED / "servegen_aggregate_rate_10min.csv"
    curve = load_rate_curve(f"{curve_file}#m-large")
    assert len(curve.rate_per_s) == 2016 and curve.window_s[0] == 600
    with pytest.raises(WorkloadError, match="pick one with FILE#SERIES"):
        load_rate_curve(str(curve_file))
    w = load_workload("builtin:sharegpt", arrival=f"curve:{curve_file}#language/m-mid", rate=0.05, seed=2)
    s = inspect(w, window_s=600)
    assert s.mean_rate_per_s == pytest.approx(0.05, rel=0.1)
    with pytest.raises(WorkloadError, match="a rate curve, not a trace"):
        load_workload(str(curve_file))


def test_length_table_bad_value(tmp_path):
    p = write(tmp_path, "len.csv", "num_prefill_tokens,num_decode_tokens\n10,5\n-3,5\n")
    with pytest.raises(WorkloadError, match=r"len.csv:3: field num_prefill_tokens: -3 is below the minimum 1"):
        load_workload(str(p))


# ---------------------------------------------------------------- ServeGen
@needs_shared
def test_servegen_span_is_seeded_and_plausible():
    d = SHARED / "servegen" / "deepseek-r1"
    w = load_workload(str(d), start_s=36_000, duration_s=600, seed=3)
    again = load_workload(str(d), start_s=36_000, duration_s=600, seed=3)
    assert np.array_equal(w.arrival_s, again.arrival_s) and np.array_equal(w.input_tokens, again.input_tokens)
    # expected count: sum over clients of rate x 600 s in the 36000 s window
    expected = 0.0
    for f in d.glob("chunk-*-trace.csv"):
        for line in f.read_text().splitlines():
            ts, rate, _cv, pat, *_ = line.split(",")
            if int(ts) == 36_000 and pat:
                expected += float(rate) * 600
    assert len(w) == pytest.approx(expected, rel=0.1)
    assert w.arrival_s.min() >= 0 and w.arrival_s.max() < 600
    assert inspect(w).num_tenants > 5


def test_servegen_bad_trace_row(tmp_path):
    (tmp_path / "chunk-0-trace.csv").write_text("0,1.0,1.0,Gamma,1.0\n")
    (tmp_path / "chunk-0-dataset.json").write_text("{}")
    with pytest.raises(WorkloadError, match=r"chunk-0-trace.csv:1: 5 fields; expected timestamp,rate,cv,pattern"):
        load_workload(str(tmp_path))


# ---------------------------------------------------------------- detection and prefix synthesis
def test_empty_file(tmp_path):
    p = write(tmp_path, "empty.jsonl", "")
    with pytest.raises(WorkloadError, match="empty.jsonl: empty file"):
        load_workload(str(p))


def test_unknown_jsonl_and_missing_file(tmp_path):
    p = write(tmp_path, "x.jsonl", '{"foo": 1}\n')
    with pytest.raises(WorkloadError, match="unknown JSONL record"):
        load_workload(str(p))
    with pytest.raises(WorkloadError, match="workload file not found: nope.csv"):
        load_workload("nope.csv")
    with pytest.raises(WorkloadError, match="unknown trace format 'xml'"):
        load_workload("builtin:azure-conv", format="xml")
    with pytest.raises(WorkloadError, match="rate only apply to length-only tables"):
        load_workload("builtin:azure-conv", rate=5.0)
    with pytest.raises(WorkloadError, match="select a span of ServeGen"):
        load_workload("builtin:mooncake-synthetic", duration_s=60)


def test_prefix_structure_on_azure_conv_keeps_lengths():
    spec = PrefixSpec(system_prompts=SystemPromptSpec(count=4, tokens=512), sessions=SessionSpec(mean_turns=3),
                      preserve_input_tokens=True)
    w = load_workload("builtin:azure-conv", prefix=spec, seed=5)
    base = load_workload("builtin:azure-conv")
    assert np.array_equal(w.input_tokens, base.input_tokens) and np.array_equal(w.arrival_s, base.arrival_s)
    assert w.has_hashes and inspect(w).num_sessions > 1000


# ---------------------------------------------------------------- DuckDB fast path for large Azure CSVs
import gpuyield.edges.io.traces as traces_mod  # noqa: E402


@needs_shared
def test_duckdb_fast_path_equals_the_python_reader(monkeypatch):
    f = str(SHARED / "AzureLLMInferenceTrace_conv.csv")
    monkeypatch.setattr(traces_mod, "_FAST_MIN_BYTES", 10**12)
    slow = load_workload(f)
    monkeypatch.setattr(traces_mod, "_FAST_MIN_BYTES", 0)
    fast = load_workload(f)
    assert "read with DuckDB" in fast.meta.notes and "read with DuckDB" not in slow.meta.notes
    np.testing.assert_allclose(fast.arrival_s, slow.arrival_s, rtol=0, atol=1e-6)
    assert np.array_equal(fast.input_tokens, slow.input_tokens) and np.array_equal(fast.output_tokens, slow.output_tokens)


@pytest.mark.parametrize(
    "body, match",
    [
        ("2023-11-16 18:15:46,5,3\n2023-11-16 18:15:47,abc,3\n", r"az.csv:3: field ContextTokens: 'abc'"),
        ("2023-11-16 18:15:46,5,3\n2023-11-16 18:15:47,0,3\n", r"az.csv:3: field ContextTokens: 0 is below"),
        ("2023-11-16 18:15:46,5,3\n2023-11-16 18:15:47,,3\n", r"az.csv:3: field ContextTokens: '' is not an integer"),
        ("2023-11-16 18:15:46,5,3\nnot a time,5,3\n", r"az.csv:3: field TIMESTAMP: unparseable"),
        ("2023-11-16 18:15:46,5,3\n2023-11-16 18:15:47,5.5,3\n", r"az.csv:3: field ContextTokens: '5.5' is not an integer"),
    ],
)
def test_fast_path_falls_back_to_name_the_bad_line(tmp_path, monkeypatch, body, match):
    monkeypatch.setattr(traces_mod, "_FAST_MIN_BYTES", 0)
    p = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n" + body)
    with pytest.raises(WorkloadError, match=match):
        load_workload(str(p))


def test_fast_path_defers_zoned_timestamps_to_the_python_reader(tmp_path, monkeypatch):
    # DuckDB would drop the +01:00 offset; the Python reader honours it
    body = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16T19:15:47+01:00,30,7\n2023-11-16 18:15:46.5,20,1\n"
    p = write(tmp_path, "az.csv", body)
    monkeypatch.setattr(traces_mod, "_FAST_MIN_BYTES", 0)
    w = load_workload(str(p))
    assert "read with DuckDB" not in w.meta.notes
    assert w.arrival_s.tolist() == pytest.approx([0.0, 0.5]) and w.input_tokens.tolist() == [20, 30]
