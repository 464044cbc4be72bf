import json

import numpy as np
import pytest

from gpuyield.core.workload import (
    PrefixSpec,
    SessionSpec,
    SystemPromptSpec,
    apply_prefix_structure,
    inspect,
    merge,
    rebase,
    sample,
    slice_index,
)
from gpuyield.edges.io.request_log import write_records, write_request_log
from gpuyield.edges.io.traces import load_workload
from gpuyield.errors import WorkloadError


def same(a, b):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.arrival_s, b.arrival_s, rtol=0, atol=1e-6)  # epoch floats: ~0.2 us resolution
    for col in ("input_tokens", "output_tokens", "priority", "hash_offsets", "hash_values"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert a.block_size_tokens == b.block_size_tokens
    for i in range(0, len(a), max(1, len(a) // 50)):
        assert (a.model_of(i), a.tenant_of(i), a.session_of(i)) == (b.model_of(i), b.tenant_of(i), b.session_of(i))


def rich_workload():
    m = sample(load_workload("builtin:mooncake-synthetic"), 300, seed=1)
    a = slice_index(load_workload("builtin:azure-conv"), 0, 1500)
    a = apply_prefix_structure(
        a, PrefixSpec(system_prompts=SystemPromptSpec(count=3, tokens=700), sessions=SessionSpec(mean_turns=3)), seed=2
    )
    a = sample(a, 300, seed=3)
    a = a.replace(models=("llama-3.1-8b",), tenants=("acme",), priority=np.ones(len(a), dtype=np.int32))
    return merge([m, a])


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_round_trip(tmp_path, suffix):
    w = rich_workload()
    p = tmp_path / f"log{suffix}"
    assert write_request_log(w, p, start_ts=1_763_798_400.0) == len(w)
    back = load_workload(str(p))
    same(rebase(w), back)  # a log's first arrival becomes t = 0
    assert inspect(back).prefix_reuse_block_frac == inspect(w).prefix_reuse_block_frac


def test_deterministic_bytes(tmp_path):
    w = rich_workload()
    write_request_log(w, tmp_path / "a.jsonl")
    write_request_log(rich_workload(), tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_gateway_records_with_failures(tmp_path):
    recs = [
        {"request_id": "a", "arrival_ts": 1000.5, "first_token_ts": 1000.7, "finish_ts": 1002.0, "input_tokens": 100,
         "output_tokens": 20, "model": "m", "tenant": "t1", "replica": "r0", "status": "ok"},
        {"request_id": "b", "arrival_ts": 1000.0, "input_tokens": 50, "output_tokens": 0, "max_output_tokens": 64,
         "status": "rejected", "error": "queue full"},
        {"request_id": "c", "arrival_ts": 1001.0, "input_tokens": 70, "status": "error"},
    ]
    p = tmp_path / "gw.jsonl"
    write_records(recs, p)
    w = load_workload(str(p))
    assert w.arrival_s.tolist() == [0.0, 0.5, 1.0]
    assert w.output_tokens.tolist() == [64, 20, 1]
    assert any("without output tokens" in n for n in w.meta.notes)
    assert any("rejected 1" in n for n in w.meta.notes)


def test_bad_log_lines_name_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"request_id": "a", "arrival_ts": 1.0, "input_tokens": 5}) + "\n"
                 + json.dumps({"request_id": "b", "arrival_ts": 2.0, "input_tokens": "many"}) + "\n")
    with pytest.raises(WorkloadError, match=r"bad.jsonl:2: field input_tokens"):
        load_workload(str(p))
    p.write_text(json.dumps({"request_id": "a", "arrival_ts": 1.0, "input_tokens": 5, "colour": "red"}) + "\n")
    with pytest.raises(WorkloadError, match=r"bad.jsonl:1: field colour: Extra inputs are not permitted"):
        load_workload(str(p))
    p.write_text(json.dumps({"request_id": "a", "arrival_ts": 1.0, "input_tokens": 0}) + "\n")
    with pytest.raises(WorkloadError, match=r"bad.jsonl:1: field input_tokens: 0 cannot be replayed"):
        load_workload(str(p))
    with pytest.raises(WorkloadError, match="unknown request-log extension"):
        write_records([], tmp_path / "x.csv")
