"""Clopper-Pearson bounds and the binomial test against exact binomial facts."""

import numpy as np
import pytest
from scipy import stats

from rsbook.stats import beta_lower_bound, binomial_test_pvalue, clopper_pearson_lower, clopper_pearson_upper


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (0, 1), (1, 1), (873, 1000),
                                 (99_990, 100_000), (100_000, 100_000)])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_bounds_are_exact_beta_quantiles(k, n, alpha):
    lower, upper = clopper_pearson_lower(k, n, alpha), clopper_pearson_upper(k, n, alpha)
    expected_lower = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
    expected_upper = 1.0 if k == n else stats.beta.ppf(1 - alpha, k + 1, n - k)
    assert lower == pytest.approx(expected_lower, abs=1e-12)
    assert upper == pytest.approx(expected_upper, abs=1e-12)
    assert 0.0 <= lower <= k / n <= upper <= 1.0


@pytest.mark.parametrize("n", [1, 7, 100, 100_000])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_edge_counts_have_closed_forms(n, alpha):
    # all successes: P(X = n | p) = p^n = alpha at the bound; no successes: (1 - p)^n = alpha
    assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)
    assert clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-10)
    assert clopper_pearson_lower(0, n, alpha) == 0.0
    assert clopper_pearson_upper(n, n, alpha) == 1.0


@pytest.mark.parametrize("k,n", [(3, 10), (50, 100), (990, 1000)])
def test_lower_bound_is_where_the_upper_tail_equals_alpha(k, n):
    """Defining property, checked with the binomial distribution itself (not the beta function)."""
    alpha = 0.01
    p = clopper_pearson_lower(k, n, alpha)
    assert stats.binom.sf(k - 1, n, p) == pytest.approx(alpha, rel=1e-6)   # P(X >= k | p_lower) = alpha
    q = clopper_pearson_upper(k, n, alpha)
    assert stats.binom.cdf(k, n, q) == pytest.approx(alpha, rel=1e-6)      # P(X <= k | p_upper) = alpha


def test_coverage_by_simulation():
    """P(p_lower > p) <= alpha: the property CERTIFY relies on, measured."""
    rng = np.random.default_rng(0)
    alpha, n, trials = 0.05, 200, 20_000
    for p in (0.3, 0.7, 0.97):
        k = rng.binomial(n, p, size=trials)
        miss = np.mean(clopper_pearson_lower(k, n, alpha) > p)
        print(f"p={p}: P(lower bound > p) = {miss:.4f} (alpha {alpha})")
        assert miss <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


def test_vectorised_matches_scalar():
    k, n = np.array([0, 5, 10]), np.array([10, 10, 10])
    np.testing.assert_allclose(clopper_pearson_lower(k, n, 0.01), [clopper_pearson_lower(int(a), 10, 0.01) for a in k])


def test_binomial_test():
    assert binomial_test_pvalue(0, 0) == 1.0
    assert binomial_test_pvalue(5, 10) == pytest.approx(1.0)
    assert binomial_test_pvalue(10, 10) == pytest.approx(2 * 0.5 ** 10)
    assert binomial_test_pvalue(60, 100) == pytest.approx(stats.binomtest(60, 100).pvalue)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(3, 10, bad)


@pytest.mark.parametrize("k,n", [(-1, 10), (11, 10), (3, 0), (2.5, 10)])
def test_bad_counts_are_rejected(k, n):
    with pytest.raises(ValueError, match="n must|k must"):
        clopper_pearson_lower(k, n, 0.05)


def test_real_count_extension_is_continuous_and_monotone():
    """beta_lower_bound equals Clopper-Pearson at integers and interpolates monotonically between them."""
    counts = np.linspace(0, 50, 2001)
    values = beta_lower_bound(counts, 50, 0.01)
    assert np.all(np.diff(values) >= 0)
    assert np.max(np.abs(np.diff(values))) < 0.01  # no jumps on a 0.025-wide grid
    for k in (1, 10, 50):
        assert beta_lower_bound(k, 50, 0.01) == pytest.approx(clopper_pearson_lower(k, 50, 0.01), abs=1e-12)
    with pytest.raises(ValueError, match="count <= n"):
        beta_lower_bound(51, 50, 0.01)
