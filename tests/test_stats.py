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


# ---------------------------------------------------------------- CERTIFY's radius over calls, exactly
from rsbook.stats import (certify_abstain_probability, expected_certified_radius, radius_cap,  # noqa: E402
                          selection_probability)


@pytest.mark.parametrize("n", [10, 100, 2_000, 100_000])
@pytest.mark.parametrize("sigma", [0.25, 1.0])
def test_certain_top_class_gives_the_cap_exactly(n, sigma):
    """All n votes for the top class: p_lower = alpha^(1/n) on every call (n >= 10, so that it exceeds 1/2)."""
    result = expected_certified_radius(1.0, n, 0.001, sigma)
    assert result.mean == pytest.approx(radius_cap(sigma, 0.001, n), rel=1e-12)
    assert result.sd == 0.0
    # with n = 1 even a unanimous vote gives p_lower = alpha < 1/2: CERTIFY always abstains
    assert expected_certified_radius(1.0, 1, 0.001, sigma) == (0.0, 0.0)


@pytest.mark.parametrize("p_a,n", [(0.6, 50), (0.9, 300), (0.99, 1_000), (0.999, 5_000)])
def test_sum_over_every_count_agrees(p_a, n):
    """The windowed sum equals the brute-force sum over k = 0..n (radius(k) with Clopper-Pearson, 0 if abstaining)."""
    alpha, sigma = 0.001, 0.5
    k = np.arange(n + 1)
    pmf = stats.binom.pmf(k, n, p_a)
    lower = np.array([clopper_pearson_lower(int(j), n, alpha) for j in k])
    radius = np.where(lower > 0.5, sigma * stats.norm.ppf(np.maximum(lower, 0.5)), 0.0)
    mean = np.sum(pmf * radius)
    sd = np.sqrt(np.sum(pmf * radius ** 2) - mean ** 2)
    result = expected_certified_radius(p_a, n, alpha, sigma)
    assert result.mean == pytest.approx(mean, rel=1e-10, abs=1e-14)
    assert result.sd == pytest.approx(sd, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("p_a", [0.6, 0.9, 0.99])
def test_expected_radius_grows_with_n_towards_the_truth(p_a):
    sigma = 0.5
    means = [expected_certified_radius(p_a, m, 0.001, sigma).mean for m in (100, 1_000, 10_000, 100_000, 1_000_000)]
    assert np.all(np.diff(means) > 0)
    assert means[-1] < sigma * stats.norm.ppf(p_a)          # a lower bound on average, at every n
    assert means[-1] > 0.97 * sigma * stats.norm.ppf(p_a)


def test_values_quoted_in_the_primer():
    assert expected_certified_radius(0.6, 1_000, 0.001, 0.5).mean == pytest.approx(0.0643, abs=5e-4)
    assert expected_certified_radius(0.6, 10_000, 0.001, 0.5).mean == pytest.approx(0.107, abs=5e-4)


@pytest.mark.parametrize("n", [100, 1_000, 100_000])
def test_tie_almost_always_abstains(n):
    alpha = 0.001
    abstain = certify_abstain_probability(0.5, n, alpha)
    assert 1 - alpha <= abstain < 1
    result = expected_certified_radius(0.5, n, alpha, 1.0)
    assert 0 < result.mean <= (1 - abstain) * radius_cap(1.0, alpha, n)
    assert certify_abstain_probability(1.0, n, alpha) == 0.0


def test_selection_probability():
    assert selection_probability(0.6, 100) == pytest.approx(stats.binom.sf(50, 100, 0.6))
    assert selection_probability(0.6, 100, ties_to_top=True) == pytest.approx(stats.binom.sf(49, 100, 0.6))
    assert selection_probability(0.6, 101) == pytest.approx(stats.binom.sf(50, 101, 0.6))
    assert selection_probability(1.0, 10) == 1.0


@pytest.mark.parametrize("n0", [11, 12])
def test_selection_probability_bounds_plurality_with_more_classes(n0):
    """A majority implies a plurality: with three classes P(K_A > n0/2) bounds the chance that A wins the vote."""
    def wins(probs):   # exact P(class 0 gets strictly more votes than every other class), multinomial
        total = 0.0
        for k_a in range(n0 + 1):
            for k_b in range(n0 - k_a + 1):
                k_c = n0 - k_a - k_b
                if k_a > k_b and k_a > k_c:
                    total += stats.multinomial.pmf([k_a, k_b, k_c], n0, probs)
        return total

    for p_a, p_b in ((0.5, 0.3), (0.45, 0.45), (0.4, 0.35), (0.6, 0.2)):
        assert wins([p_a, p_b, 1 - p_a - p_b]) >= selection_probability(p_a, n0) - 1e-12
    assert wins([0.45, 0.3, 0.25]) > selection_probability(0.45, n0) + 0.05   # strictly more: pluralities count
    assert wins([0.6, 0.4, 0.0]) == pytest.approx(selection_probability(0.6, n0))   # the rest is one class


@pytest.mark.parametrize("p_a,n", [(0.6, 1_000), (0.9, 100), (0.99, 1_000)])
def test_agrees_with_monte_carlo_certify_on_a_linear_classifier(p_a, n):
    """Smooth.certify on LinearClassifier, averaged over calls, matches the exact expectation (selection included)."""
    import torch

    from rsbook.groundtruth import LinearClassifier, point_at_p_a
    from rsbook.smooth import Smooth

    sigma, alpha, n0, calls = 0.5, 0.001, 100, 1_500
    clf = LinearClassifier(torch.randn(20, generator=torch.Generator().manual_seed(3)), b=0.2)
    x = point_at_p_a(clf, p_a, sigma)
    smooth = Smooth(clf, 2, sigma, seed=11)
    radii = np.array([smooth.certify(x, n0, n, alpha, batch_size=2_000).radius for _ in range(calls)])
    exact = expected_certified_radius(p_a, n, alpha, sigma)
    # a wrong selection (probability 1 - P_sel) bounds a class of probability 1 - p_a < 1/2: it abstains
    # except with probability < alpha, so the unconditional mean is P_sel * mean up to alpha * cap
    p_sel = selection_probability(p_a, n0)
    expected_mean = p_sel * exact.mean
    expected_sd = np.sqrt(p_sel * (exact.sd ** 2 + exact.mean ** 2) - expected_mean ** 2)
    se = expected_sd / np.sqrt(calls)
    assert abs(radii.mean() - expected_mean) < 4 * se + alpha * radius_cap(sigma, alpha, n)
    assert radii.std() == pytest.approx(expected_sd, rel=0.15)


def test_expected_radius_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p_a"):
        expected_certified_radius(1.2, 100, 0.01)
    with pytest.raises(ValueError, match="n must"):
        expected_certified_radius(0.9, 0, 0.01)
    with pytest.raises(ValueError, match="sigma"):
        expected_certified_radius(0.9, 100, 0.01, sigma=0.0)
    with pytest.raises(ValueError, match="alpha"):
        expected_certified_radius(0.9, 100, 1.5)
