import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.workload import (
    ArrivalSpec,
    Workload,
    WorkloadMeta,
    inspect,
    merge,
    rate_scale,
    sample,
    slice_index,
    slice_time,
    synthesize,
    time_scale,
)
from gpuyield.errors import WorkloadError


def wl(n=1000, seed=0, name="w", **kw):
    return synthesize(np.arange(100, 100 + n), np.arange(1, 1 + n), ArrivalSpec("poisson", rate_per_s=10.0),
                      WorkloadMeta(name), num_requests=n, seed=seed, **kw)


def test_rate_scale_halves_duration_and_doubles_rate():
    w = wl()
    f = rate_scale(w, 2.0)
    assert f.duration_s == pytest.approx(w.duration_s / 2)
    assert inspect(f).mean_rate_per_s == pytest.approx(2 * inspect(w).mean_rate_per_s)
    assert len(f) == len(w) and np.array_equal(f.input_tokens, w.input_tokens)
    assert "rate scaled x2" in f.meta.notes


def test_time_scale_doubles_duration():
    w = wl()
    assert time_scale(w, 2.0).duration_s == pytest.approx(2 * w.duration_s)
    with pytest.raises(WorkloadError, match="positive"):
        time_scale(w, 0)
    with pytest.raises(WorkloadError, match="positive"):
        rate_scale(w, -1)


def test_slices():
    w = wl()
    s = slice_index(w, 10, 20)
    assert len(s) == 10 and s.input_tokens[0] == w.input_tokens[10]
    t = slice_time(w, 10.0, 20.0)
    inside = (w.arrival_s >= 10) & (w.arrival_s < 20)
    assert len(t) == int(inside.sum())
    assert t.arrival_s.min() >= 0 and t.arrival_s.max() < 10
    np.testing.assert_allclose(t.arrival_s + 10.0, w.arrival_s[inside])
    with pytest.raises(WorkloadError, match="after its start"):
        slice_time(w, 5, 5)


def test_sample_is_seeded_and_ordered():
    w = wl()
    a, b, c = sample(w, 100, seed=1), sample(w, 100, seed=1), sample(w, 100, seed=2)
    assert np.array_equal(a.arrival_s, b.arrival_s) and not np.array_equal(a.arrival_s, c.arrival_s)
    assert len(a) == 100 and np.all(np.diff(a.arrival_s) >= 0)
    assert set(a.arrival_s) <= set(w.arrival_s)
    assert len(sample(w, fraction=0.25, seed=3)) == 250
    with pytest.raises(WorkloadError):
        sample(w, 2000)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=4), st.integers(0, 1000))
def test_merge_preserves_counts_order_and_attributes(sizes, seed):
    parts = []
    for k, n in enumerate(sizes):
        w = wl(n, seed=seed + k, name=f"p{k}")
        w = w.replace(models=(f"model-{k % 2}",), tenants=(f"tenant-{k}",))
        parts.append(w)
    m = merge(parts)
    assert len(m) == sum(sizes)
    assert np.all(np.diff(m.arrival_s) >= 0)
    per_model = inspect(m).requests_per_model
    assert sum(per_model.values()) == sum(sizes)
    for k in range(2):
        assert per_model.get(f"model-{k}", 0) == sum(n for j, n in enumerate(sizes) if j % 2 == k)
    for k, n in enumerate(sizes):
        assert inspect(m).requests_per_tenant[f"tenant-{k}"] == n
    # total tokens conserved
    assert m.input_tokens.sum() == sum(int(p.input_tokens.sum()) for p in parts)


def test_merge_keeps_hashes_and_separates_same_named_sessions():
    a = Workload(arrival_s=[0, 2], input_tokens=[1024, 1024], output_tokens=[1, 1], meta=WorkloadMeta("a"),
                 hash_offsets=[0, 2, 4], hash_values=[1, 2, 3, 4], session_codes=[0, 0], sessions=("s",))
    b = Workload(arrival_s=[1], input_tokens=[1024], output_tokens=[1], meta=WorkloadMeta("b"),
                 hash_offsets=[0, 1], hash_values=[9], session_codes=[0], sessions=("s",))
    m = merge([a, b])
    assert [m.block_hashes(i).tolist() for i in range(3)] == [[1, 2], [9], [3, 4]]
    assert m.session_of(0) == m.session_of(2) != m.session_of(1)
    assert inspect(m).num_sessions == 2
    c = b.replace(block_size_tokens=16)
    with pytest.raises(WorkloadError, match="different block sizes"):
        merge([a, c])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 400), st.floats(0.1, 10.0), st.floats(0.1, 10.0), st.integers(0, 100))
def test_scales_compose_and_preserve_everything_but_time(n, a, b, seed):
    w = wl(n, seed=seed)
    x = rate_scale(time_scale(w, a), b)
    np.testing.assert_allclose(x.arrival_s, w.arrival_s * a / b, rtol=1e-12)
    assert x.duration_s == pytest.approx(w.duration_s * a / b)
    assert np.array_equal(x.input_tokens, w.input_tokens) and np.array_equal(x.output_tokens, w.output_tokens)
    assert inspect(x).interarrival_cv == pytest.approx(inspect(w).interarrival_cv, rel=1e-9, nan_ok=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.floats(0.0, 50.0), st.floats(1.0, 60.0))
def test_time_slices_partition_the_workload(n, cut, width):
    w = wl(n)
    parts = [slice_time(w, 0.0, cut), slice_time(w, cut, cut + width), slice_time(w, cut + width, None)] if cut > 0 \
        else [slice_time(w, 0.0, width), slice_time(w, width, None)]
    assert sum(len(p) for p in parts) == len(w)
    assert sum(int(p.input_tokens.sum()) for p in parts) == int(w.input_tokens.sum())
