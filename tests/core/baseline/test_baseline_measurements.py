"""A baseline's deployments as measurement rows (the loop from telemetry back to the performance model)."""

from __future__ import annotations

import dataclasses

import pytest

from gpuyield.core.baseline.measurements import measurement_rows
from gpuyield.core.baseline.result import ModelResult
from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.validation import CSV_COLUMNS, row_from_mapping

CAT = default_catalog()


def _result(**kw: object) -> ModelResult:
    fields = {f.name: None for f in dataclasses.fields(ModelResult) if f.name != "gap"}
    fields.update(
        deployment="llama", model="meta-llama/Llama-3.1-8B-Instruct", engine_kind="vllm", engines=["e0", "e1"],
        gpus=["g0", "g1", "g2", "g3"], device_name="NVIDIA H100 80GB HBM3", joined_by="map", window_s=600.0,
        basis="window", gpu_hours=0.67, mean_input_tokens=1000.4, mean_output_tokens=250.0,
        request_rate_per_s=4.0, ttft_mean_s=0.2, tpot_mean_s=0.02, mean_running=9.0, output_tokens=600_000.0,
    )  # fmt: skip
    fields.update(kw)
    return ModelResult(**fields)  # type: ignore[arg-type]


def test_a_measured_deployment_becomes_one_valid_row():
    rows, skipped = measurement_rows([_result()], CAT)
    assert skipped == [] and len(rows) == 1
    r = rows[0]
    assert list(r) == list(CSV_COLUMNS)
    assert (r["gpu"], r["num_gpus"], r["tp"], r["layout"]) == ("h100_sxm", "4", "2", "agg tp2 pp1 adp1")
    assert r["model"] == CAT.model("meta-llama/Llama-3.1-8B-Instruct").id and r["engine"] == "vllm"
    assert (r["isl"], r["osl"]) == ("1000", "250")
    # Little's law: 4 req/s x (0.2 + 249 x 0.02) s = 20.72 requests in flight
    assert r["concurrency"] == "21" and "Little" in r["source"]
    assert float(r["ttft_ms"]) == pytest.approx(200) and float(r["tpot_ms"]) == pytest.approx(20)
    assert float(r["throughput_tok_s"]) == pytest.approx(1000)
    row = row_from_mapping(r, 0)  # the validate/calibrate reader accepts it
    assert row.concurrency == 21 and row.measured["tpot_ms"] == pytest.approx(20)


def test_without_a_rate_the_running_requests_give_the_concurrency():
    rows, _ = measurement_rows([_result(request_rate_per_s=None)], CAT)
    assert rows[0]["concurrency"] == "18" and "running" in rows[0]["source"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"basis": "lifetime"}, "one scrape"),
        ({"engine_kind": "llamacpp"}, "not an engine family"),
        ({"gpus": []}, "no GPU"),
        ({"device_name": "Some Future GPU"}, "not in the catalogue"),
        ({"tpot_mean_s": None}, "mean TPOT"),
        ({"request_rate_per_s": None, "mean_running": None}, "neither"),
    ],
)
def test_deployments_that_cannot_give_a_row_say_why(change, reason):
    rows, skipped = measurement_rows([_result(**change), _result(deployment="ok")], CAT)
    assert len(rows) == 1 and len(skipped) == 1
    assert skipped[0].startswith("deployment llama:") and reason in skipped[0]


def test_unknown_model_keeps_its_served_name():
    rows, _ = measurement_rows([_result(model="my-org/private-ft")], CAT)
    assert rows[0]["model"] == "my-org/private-ft" and "not in the catalogue" in rows[0]["source"]
