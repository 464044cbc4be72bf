import pytest
from pydantic import ValidationError

from gpuyield.core.workload import RequestLogRecord

OK = dict(request_id="r1", arrival_ts=100.0, first_token_ts=100.2, finish_ts=101.0, input_tokens=600,
          cached_tokens=512, output_tokens=20, block_size_tokens=512, block_hashes=[7])


def test_valid_record_and_derived_times():
    r = RequestLogRecord(**OK)
    assert r.ttft_s == pytest.approx(0.2) and r.e2e_s == pytest.approx(1.0)
    assert r.status == "ok" and r.tenant == "default" and r.schema_version == 1


@pytest.mark.parametrize(
    "change, match",
    [
        ({"first_token_ts": 99.0}, "first_token_ts is before arrival_ts"),
        ({"finish_ts": 100.1}, "finish_ts is before first_token_ts"),
        ({"cached_tokens": 601}, "cached_tokens exceeds input_tokens"),
        ({"block_hashes": [1, 2, 3]}, "more block_hashes"),
        ({"block_size_tokens": None}, "without block_size_tokens"),
        ({"block_hashes": [-1]}, r"\[0, 2\*\*63\)"),
        ({"status": "weird"}, "status"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_invalid_records(change, match):
    with pytest.raises(ValidationError, match=match):
        RequestLogRecord(**{**OK, **change})
