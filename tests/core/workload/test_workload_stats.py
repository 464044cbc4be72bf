import math

import numpy as np
import pytest

from gpuyield.core.workload import Workload, WorkloadMeta, inspect


def test_numbers_by_hand():
    # 5 requests at 0, 1, 3, 6, 10 s; blocks of 4 tokens
    w = Workload(
        arrival_s=[0, 1, 3, 6, 10],
        input_tokens=[8, 8, 12, 4, 9],
        output_tokens=[1, 2, 3, 4, 100],
        meta=WorkloadMeta("h"),
        block_size_tokens=4,
        hash_offsets=[0, 2, 4, 7, 8, 10],
        #            r0: a b   r1: a c   r2: a b d   r3: e   r4: x b
        hash_values=[1, 2, 1, 3, 1, 2, 4, 5, 6, 2],
        tenant_codes=[0, 1, 1, 0, 0],
        tenants=("x", "y"),
    )
    s = inspect(w, window_s=5.0)
    assert s.num_requests == 5 and s.duration_s == 10.0
    assert s.mean_rate_per_s == 0.5
    assert s.rate_per_s == (3 / 5, 2 / 5)  # [0,5): 0,1,3  [5,10]: 6,10
    gaps = np.array([1, 2, 3, 4.0])
    assert s.interarrival_cv == pytest.approx(gaps.std() / gaps.mean())
    assert s.input_tokens.mean == pytest.approx(41 / 5) and s.input_tokens.max == 12 and s.input_tokens.total == 41
    assert s.output_tokens.p50 == 3
    # seen before: r1's a; r2's a, b; r4's b  -> 4 of 10
    assert s.num_blocks == 10 and s.num_unique_blocks == 6
    assert s.prefix_reuse_block_frac == pytest.approx(0.4)
    assert s.prefix_reuse_token_frac == pytest.approx(4 * 4 / 41)
    # leading runs: r1 1 (a), r2 2 (a b), r4 0 (x misses first) -> 3 blocks
    assert s.prefix_hit_token_frac == pytest.approx(3 * 4 / 41)
    assert s.requests_per_tenant == {"x": 3, "y": 2}
    assert s.num_tenants == 2 and s.num_models == 1 and s.num_sessions == 0


def test_no_hashes_and_tiny_workloads():
    w = Workload(arrival_s=[5.0], input_tokens=[3], output_tokens=[1], meta=WorkloadMeta("one"))
    s = inspect(w)
    assert s.prefix_reuse_block_frac is None and s.duration_s == 0.0
    assert math.isnan(s.interarrival_cv) and math.isnan(s.mean_rate_per_s)


def test_partial_last_window_uses_its_real_width():
    w = Workload(arrival_s=[0, 1, 2, 3, 4, 5, 6], input_tokens=[1] * 7, output_tokens=[1] * 7, meta=WorkloadMeta("p"))
    s = inspect(w, window_s=4.0)  # [0,4): 4 requests; [4,6]: 3 requests over 2 s
    assert s.rate_per_s == (1.0, 1.5)
    s = inspect(w, window_s=5.5)  # last window 0.5 s < a quarter window: folded into the first
    assert s.rate_per_s == (7 / 6,)


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpuyield.core.workload.stats import _seen_before  # noqa: E402


@given(st.lists(st.lists(st.integers(0, 12), max_size=6), min_size=1, max_size=30))
def test_reuse_bound_matches_a_naive_set_walk(per_request):
    lens = [len(r) for r in per_request]
    offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    vals = np.array([h for r in per_request for h in r], dtype=np.int64)
    seen: set[int] = set()
    naive, lead = [], 0
    for r in per_request:
        run = True
        for h in r:
            naive.append(h in seen)
            run = run and h in seen
            lead += run
            seen.add(h)
    if len(vals):
        assert _seen_before(vals).tolist() == naive
    w = Workload(arrival_s=np.arange(len(lens), dtype=float), input_tokens=[max(1, n) * 4 for n in lens],
                 output_tokens=[1] * len(lens), meta=WorkloadMeta("p"), block_size_tokens=4,
                 hash_offsets=offs, hash_values=vals)
    s = inspect(w)
    if len(vals):
        assert s.prefix_reuse_block_frac == pytest.approx(sum(naive) / len(vals))
        assert s.prefix_hit_token_frac == pytest.approx(lead * 4 / int(w.input_tokens.sum()))
    else:
        assert s.prefix_reuse_block_frac is None
