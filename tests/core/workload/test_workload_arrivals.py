import numpy as np
import pytest

from gpuyield.core.workload import (
    ArrivalSpec,
    RateCurve,
    WorkloadMeta,
    gamma_arrivals,
    generate_arrivals,
    synthesize,
)
from gpuyield.core.workload.arrivals import rate_curve_arrivals
from gpuyield.errors import WorkloadError


def cv_of(t):
    g = np.diff(t)
    return g.std() / g.mean()


def test_poisson_rate_and_cv():
    t = generate_arrivals(ArrivalSpec("poisson", rate_per_s=50.0), 50_000, np.random.default_rng(0))
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert len(t) / t[-1] == pytest.approx(50.0, rel=0.03)
    assert cv_of(t) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_cv(cv):
    t = gamma_arrivals(100_000, 10.0, cv, np.random.default_rng(1))
    assert cv_of(t) == pytest.approx(cv, rel=0.06)
    assert len(t) / t[-1] == pytest.approx(10.0, rel=0.05)


def test_seeded():
    a = gamma_arrivals(100, 3.0, 2.0, np.random.default_rng(5))
    b = gamma_arrivals(100, 3.0, 2.0, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_rate_curve_follows_the_windows():
    curve = RateCurve.from_windows([(0, 100, 10.0), (100, 100, 0.0), (200, 100, 40.0)])
    t = rate_curve_arrivals(curve, np.random.default_rng(2))
    counts = np.histogram(t, bins=[0, 100, 200, 300])[0]
    assert counts[1] == 0
    assert counts[0] == pytest.approx(1000, rel=0.1)
    assert counts[2] == pytest.approx(4000, rel=0.05)
    assert t.max() < 300
    scaled = curve.scaled_to_mean(5.0)
    assert scaled.mean_rate_per_s == pytest.approx(5.0)
    assert scaled.rate_per_s[2] / scaled.rate_per_s[0] == pytest.approx(4.0)


def test_rate_curve_errors():
    with pytest.raises(WorkloadError, match="contiguous"):
        RateCurve.from_windows([(0, 10, 1.0), (20, 10, 1.0)])
    with pytest.raises(WorkloadError, match="every window has rate 0"):
        RateCurve.from_windows([(0, 10, 0.0)])
    with pytest.raises(WorkloadError, match="need a rate"):
        generate_arrivals(ArrivalSpec("poisson"), 10, np.random.default_rng(0))


def test_synthesize_draws_rows_and_is_deterministic():
    isl, osl = np.array([10, 20, 30, 40]), np.array([1, 2, 3, 4])
    spec = ArrivalSpec("gamma", rate_per_s=2.0, cv=3.0)
    a = synthesize(isl, osl, spec, WorkloadMeta("x"), seed=3)
    b = synthesize(isl, osl, spec, WorkloadMeta("x"), seed=3)
    assert sorted(a.input_tokens.tolist()) == [10, 20, 30, 40]  # without replacement when the table suffices
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.input_tokens, b.input_tokens)
    assert np.array_equal(a.output_tokens * 10, a.input_tokens)  # rows stay paired
    big = synthesize(isl, osl, spec, WorkloadMeta("x"), num_requests=100, seed=3)
    assert len(big) == 100 and set(big.input_tokens.tolist()) <= {10, 20, 30, 40}
