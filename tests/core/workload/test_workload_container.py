import numpy as np
import pytest

from gpuyield.core.workload import Request, Workload, WorkloadMeta
from gpuyield.errors import WorkloadError

META = WorkloadMeta("t", source="test")


def make(n=5, **kw):
    return Workload(
        arrival_s=np.arange(n, dtype=float),
        input_tokens=np.full(n, 1000),
        output_tokens=np.full(n, 10),
        meta=META,
        **kw,
    )


def test_from_requests_round_trip_and_dense_ids():
    reqs = [
        Request(req_id=7, arrival_s=2.0, input_tokens=1024, output_tokens=3, block_hashes=(11, 12), model="m1",
                tenant="a", priority=2, session_id="s1"),
        Request(req_id=3, arrival_s=1.0, input_tokens=600, output_tokens=4, block_hashes=(11,), model=None, tenant="b"),
        Request(req_id=9, arrival_s=2.0, input_tokens=50, output_tokens=5, session_id="s1"),
    ]
    w = Workload.from_requests(reqs, META)
    assert [r.req_id for r in w] == [0, 1, 2]
    assert [r.arrival_s for r in w] == [1.0, 2.0, 2.0]  # sorted, stable on ties
    assert w[0].tenant == "b" and w[0].block_hashes == (11,)
    assert w[1] == Request(req_id=1, arrival_s=2.0, input_tokens=1024, output_tokens=3, block_hashes=(11, 12),
                           model="m1", tenant="a", priority=2, session_id="s1")
    assert w[2].session_id == "s1" and w[2].block_hashes == ()
    assert w[0].session_id is None
    assert any("sorted" in n for n in w.meta.notes)
    assert w[-1] == w[2]
    with pytest.raises(IndexError):
        w[3]


def test_validation_messages_name_the_request():
    with pytest.raises(WorkloadError, match="request 2 has input_tokens=0"):
        Workload(arrival_s=[0, 1, 2], input_tokens=[5, 5, 0], output_tokens=[1, 1, 1], meta=META)
    with pytest.raises(WorkloadError, match="decrease at request 1"):
        Workload(arrival_s=[0, -1], input_tokens=[5, 5], output_tokens=[1, 1], meta=META)
    with pytest.raises(WorkloadError, match="allows at most 1 blocks"):
        Workload(arrival_s=[0], input_tokens=[5], output_tokens=[1], meta=META, hash_offsets=[0, 2], hash_values=[1, 2])
    with pytest.raises(WorkloadError, match="mix block sizes"):
        Workload.from_requests(
            [Request(0, 0.0, 100, 1, (1,), 16), Request(1, 0.0, 100, 1, (1,), 32)], META
        )


def test_memory_per_request_is_small():
    n = 1_000_000
    w = make(n)
    assert w.nbytes / n < 48.1  # 40 bytes of columns + 8 of CSR offsets
    assert w.duration_s == n - 1


def test_take_gathers_hashes():
    w = Workload(
        arrival_s=[0, 1, 2], input_tokens=[1024, 512, 2048], output_tokens=[1, 1, 1], meta=META,
        hash_offsets=[0, 2, 3, 7], hash_values=[1, 2, 3, 4, 5, 6, 7],
    )
    t = w.take([2, 0], validate=False)  # reordering is for internal use (sorting), then validated
    assert t.block_hashes(0).tolist() == [4, 5, 6, 7]
    assert t.block_hashes(1).tolist() == [1, 2]
    assert t.hash_offsets.tolist() == [0, 4, 6]
