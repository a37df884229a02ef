"""Tests of the non-Gaussian smoothing families (rsbook.noise.NormPowerGaussian) and their
certificates (rsbook.non_gaussian, Zhang et al. 2020), each against a truth computed another way:

* k = 0 is Gaussian: the exact l2 integral must give Cohen et al.'s sigma Phi^{-1}(p) (Cor. 1);
  the Gaussian dual's maximum is Phi(Phi^{-1}(p) - r/sigma);
* the samplers against their laws (KS of ||z|| vs sigma chi_{d-k}, of (1+u)/2 vs its Beta; the
  mixed family's l-inf norm against a quadrature of its density, moments against importance
  sampling from a Gaussian);
* Neyman-Pearson tightness by simulation: the worst-case set has mass p under pi_0 and 1/2
  under pi_delta at the certified radius;
* linear classifiers (true radius = margin): R(p_A) <= m, equal at k = 0;
* full-pipeline soundness through Smooth: simulated failure rates <= alpha + 3 SE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from rsbook import non_gaussian as ng
from rsbook.groundtruth import LinearClassifier
from rsbook.noise import (NOISE_FAMILIES, Gaussian, NormPowerGaussian, linf_max_law, make_noise_family,
                          matched_sigma, standard_gamma)
from rsbook.smooth import Smooth
from rsbook.stats import clopper_pearson_lower


# ----------------------------------------------------------------------------- k = 0 is Cohen et al.
@pytest.mark.parametrize("dim", [64, 3072, 150528])
def test_l2_integral_reproduces_cohen_at_k0(dim):
    ps = np.array([0.51, 0.55, 0.6, 0.75, 0.9, 0.99, 0.999, 1 - 1e-5, 1 - 1e-7, 1 - 1e-9])
    for sigma in (0.5, 1.0):
        got = np.array([ng.l2_radius(p, sigma, 0, dim) for p in ps])
        want = sigma * special.ndtri(ps)
        assert np.max(np.abs(got - want)) <= 1e-8
        assert np.all(got <= want + 1e-12)  # rounded down, never up


def test_noise_object_certified_radius_k0_is_gaussian():
    noise = NormPowerGaussian(0.5, 0, 64)
    for p in (0.6, 0.9, 0.999):
        assert noise.certified_radius(p) == Gaussian(0.5).certified_radius(p)
    assert noise.certified_radius(0.5) == 0.0 and noise.certified_radius(0.3) == 0.0


def test_gaussian_dual_maximum_is_cohen_value():
    """Cor. 1: max_lambda lambda p - D(lambda) = Phi(Phi^{-1}(p) - r/sigma), at lambda* of App. A.2."""
    for p, r, sigma in [(0.9, 0.3, 0.5), (0.99, 1.0, 0.5), (0.7, 0.1, 0.25)]:
        lam_star = ng.gaussian_dual_argmax(p, r, sigma)
        lams = lam_star * np.exp(np.linspace(-3, 3, 2001))
        values = ng.gaussian_dual(lams, p, r, sigma)
        assert abs(values.max() - ng.cohen_value(p, r, sigma)) < 1e-6
        assert abs(ng.gaussian_dual(lam_star, p, r, sigma) - ng.cohen_value(p, r, sigma)) < 1e-12
        # the printed eq. (2) ("- r/6") is not it
        assert abs(special.ndtr(special.ndtri(p) - r / 6) - ng.cohen_value(p, r, sigma)) > 1e-3


# ----------------------------------------------------------------------------- samplers
def test_l2_sampler_radius_and_direction_laws():
    d, k, sigma = 64, 20, 0.5
    z = NormPowerGaussian(sigma, k, d).sample((20000, 1, 8, 8), generator=torch.Generator().manual_seed(1),
                                              dtype=torch.float64)
    assert z.shape == (20000, 1, 8, 8)
    flat = z.reshape(len(z), -1).numpy()
    rho = np.linalg.norm(flat, axis=1)
    assert stats.kstest(rho / sigma, stats.chi(d - k).cdf).pvalue > 1e-3
    u = flat[:, 0] / rho
    assert stats.kstest((1 + u) / 2, stats.beta((d - 1) / 2, (d - 1) / 2).cdf).pvalue > 1e-3
    # and a wrong law is rejected (the test can fail)
    assert stats.kstest(rho / sigma, stats.chi(d).cdf).pvalue < 1e-6


def test_standard_gamma_small_and_large_shape():
    gen = torch.Generator().manual_seed(3)
    for a in (0.3, 2.5, 5000.0):
        g = standard_gamma(a, 20000, generator=gen).numpy()
        assert stats.kstest(g, stats.gamma(a).cdf).pvalue > 1e-3


def test_sampler_is_reproducible_and_checks_shape():
    noise = NormPowerGaussian(0.25, 10, 64)
    a = noise.sample((5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    b = noise.sample((5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    # (batch, m, C, H, W) from noisy_copies also works: the trailing dims hold one example
    assert noise.sample((3, 2, 1, 8, 8)).shape == (3, 2, 1, 8, 8)
    with pytest.raises(ValueError, match="dim=64"):
        noise.sample((5, 1, 7, 7))


def _max_law_cdf(k, d, sigma):
    def dens(m):
        return m ** (-k) * stats.norm.pdf(m / sigma) * special.erf(m / (sigma * math.sqrt(2))) ** (d - 1)

    total = integrate.quad(dens, 0, 15 * sigma, limit=500)[0]
    return lambda x: np.array([integrate.quad(dens, 0, xi, limit=500)[0] for xi in np.atleast_1d(x)]) / total


def test_mixed_sampler_max_law_and_importance_sampling():
    d, k, sigma = 16, 4, 0.5
    gen = torch.Generator().manual_seed(5)
    z = NormPowerGaussian(sigma, k, d, norm="linf").sample((60000, d), generator=gen, dtype=torch.float64)
    m = z.abs().max(1).values.numpy()
    # tabulated law against an independent quadrature of the density
    y, cdf = linf_max_law(k, d)
    exact = _max_law_cdf(k, d, 1.0)
    grid = np.exp(y[::1024])
    assert np.max(np.abs(np.interp(grid, np.exp(y), cdf) - exact(grid))) < 1e-6
    # KS of the sampled l-inf norm against that quadrature
    sub = np.sort(m)[::100]
    ecdf = (np.arange(len(m))[::100] + 1) / len(m)
    assert np.max(np.abs(_max_law_cdf(k, d, sigma)(sub) - ecdf)) < 1.63 / math.sqrt(len(m))  # KS 1% critical
    # exactly one coordinate attains the maximum; the others lie strictly inside
    flat = np.abs(z.numpy())
    assert np.all((flat >= m[:, None] - 1e-12).sum(1) == 1)
    # moments against self-normalised importance sampling from N(0, sigma^2 I) with weights M^-k
    g = torch.randn(300000, d, generator=gen, dtype=torch.float64) * sigma
    mg = g.abs().max(1).values.numpy()
    w = mg ** -k
    w /= w.sum()
    for name, a, b in [("M", m, mg), ("|z_1|", np.abs(z[:, 0].numpy()), np.abs(g[:, 0].numpy())),
                       ("sum^2", z.sum(1).numpy() ** 2, g.sum(1).numpy() ** 2)]:
        mc_se = a.std() / math.sqrt(len(a))
        is_se = math.sqrt(np.sum(w ** 2 * (b - np.sum(w * b)) ** 2))
        assert abs(a.mean() - np.sum(w * b)) < 4 * math.hypot(mc_se, is_se), name


# ----------------------------------------------------------------------------- Neyman-Pearson tightness
def test_neyman_pearson_set_has_mass_p_and_half():
    d, k, sigma, p = 16, 6, 0.5, 0.9
    R = ng.l2_radius(p, sigma, k, d)
    t = ng.l2_threshold(p, R, sigma, k, d)
    assert abs(ng.l2_value(p, R, sigma, k, d) - 0.5) < 1e-9
    z = NormPowerGaussian(sigma, k, d).sample((200000, d), generator=torch.Generator().manual_seed(11),
                                              dtype=torch.float64).numpy()
    mass0 = np.mean(ng.l2_logratio(z, R, sigma, k) <= t)
    shifted = z.copy()
    shifted[:, 0] += R
    mass_delta = np.mean(ng.l2_logratio(shifted, R, sigma, k) <= t)
    n = len(z)
    assert abs(mass0 - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert abs(mass_delta - 0.5) < 4 * math.sqrt(0.25 / n)
    # the plug-in dual from the same draws peaks at the same value (Thm. 1: dual = Neyman-Pearson)
    lams = np.exp(np.linspace(t - 1, t + 1, 81))
    dual = ng.dual_objective(lams, p, ng.l2_logratio(z[:50000], R, sigma, k))
    assert abs(dual.max() - 0.5) < 0.01


def test_monotone_in_p_and_k():
    d, sigma = 64, 0.5
    ps = [0.55, 0.7, 0.9, 0.99, 0.9999]
    for k in (0, 10, 40):
        radii = [ng.l2_radius(p, sigma, k, d) for p in ps]
        assert np.all(np.diff(radii) > 0)
    for p in (0.6, 0.99):
        radii = [ng.l2_radius(p, sigma, k, d) for k in (0, 5, 20, 40, 62)]
        assert np.all(np.diff(radii) < 0)


def test_matched_sigma_matches_the_mode_and_certifies_like_gaussian_in_high_d():
    d, k, s0 = 3072, 500, 0.5
    s = matched_sigma(s0, k, d)
    assert abs(s * math.sqrt(d - k - 1) - s0 * math.sqrt(d - 1)) < 1e-12
    for p in (0.7, 0.99):
        assert abs(ng.l2_radius(p, s, k, d) / (s0 * special.ndtri(p)) - 1) < 1e-3


# ----------------------------------------------------------------------------- linear classifiers (truth: the margin)
@pytest.mark.parametrize("d,k", [(16, 0), (16, 8), (64, 30), (3072, 500)])
def test_linear_classifier_radius_below_margin(d, k):
    sigma = 0.5
    for m in (0.05, 0.3, 1.0):
        p_a = ng.projection_cdf(m, sigma, k, d)
        R = ng.l2_radius(p_a, sigma, k, d)
        assert R <= m + 1e-10
        if k == 0:
            assert abs(R - m) < 1e-8
            assert abs(p_a - special.ndtr(m / sigma)) < 1e-12


def test_projection_cdf_against_sampling():
    d, k, sigma, m = 16, 8, 0.5, 0.3
    z = NormPowerGaussian(sigma, k, d).sample((100000, d), generator=torch.Generator().manual_seed(2),
                                              dtype=torch.float64).numpy()
    p = ng.projection_cdf(m, sigma, k, d)
    assert abs(np.mean(z[:, 3] <= m) - p) < 4 * math.sqrt(p * (1 - p) / len(z))


# ----------------------------------------------------------------------------- l-inf certificate
def test_linf_certificate_k0_is_below_gaussian_truth_and_close():
    """At k = 0 the mixed family is N(0, sigma^2 I) and the vertex r*1 has l2 norm r sqrt(d): truth sigma Phi^-1(p)/sqrt(d).

    Lower bound on what a non-wasteful certificate gives: with n draws per half and Bonferroni
    level ~1e-7 (z ~ 5.3 < 6), it needs F(t) <= p with 6 binomial SE of slack and a threshold
    grid whose tail counts step by < 1.3, and F(-t) < 1/2 - 6 SE.
    """
    d, sigma, n = 16, 0.5, 20000
    radii = np.linspace(0.005, 0.6, 120)
    step = radii[1] - radii[0]
    cert = ng.linf_certificate(sigma, 0, d, radii=radii, n=n, alpha=1e-3, seed=1)
    for p in (0.7, 0.9, 0.99):
        truth = ng.gaussian_linf_radius(p, sigma, d)
        got = cert.radius(p)
        assert got <= truth
        tail = 1.3 * ((1 - p) + 6 * math.sqrt(p * (1 - p) / n))
        eps = 6 * math.sqrt(0.25 / n)
        floor = sigma * (special.ndtri(1 - tail) - special.ndtri(0.5 + eps)) / math.sqrt(d) - step
        assert got >= floor


@pytest.mark.slow
def test_linf_band_failure_rate_at_k0():
    """At k = 0 the log-ratio is Gaussian, F known exactly: the bounds must cover it in >= 1 - alpha of rebuilds."""
    d, sigma, r, alpha, trials = 8, 0.5, 0.1, 0.2, 60
    mu = d * r * r / (2 * sigma ** 2)  # l = (r S - d r^2/2)/sigma^2 ~ N(-mu, 2 mu)
    F = stats.norm(-mu, math.sqrt(2 * mu)).cdf
    failures = 0
    for seed in range(trials):
        c = ng.linf_certificate(sigma, 0, d, radii=[r], n=2000, alpha=alpha, seed=100 + seed, n_thresholds=12)
        t = c.thresholds[0]
        failures += int(np.any(c.F_upper[0] < F(t)) or np.any(c.G_upper[0] < F(-t)))
    assert failures / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    # the bounds are not vacuous: they sit within a few percent of the truth
    assert np.median(c.F_upper[0] - F(c.thresholds[0])) < 0.1


# ----------------------------------------------------------------------------- full pipeline soundness
@pytest.mark.slow
def test_pipeline_soundness_on_the_worst_case_classifier():
    """Smooth + NormPowerGaussian on the Neyman-Pearson classifier, whose true radius is exactly R(p)."""
    d, k, sigma, p, alpha, trials, n = 16, 6, 0.5, 0.8, 0.1, 200, 200
    x0 = torch.zeros(d, dtype=torch.float64)
    R = ng.l2_radius(p, sigma, k, d)
    t = ng.l2_threshold(p, R, sigma, k, d)
    smooth = Smooth(ng.NeymanPearsonClassifier(x0, sigma, k, R, t), 2, NormPowerGaussian(sigma, k, d), seed=0)
    failures = 0
    for _ in range(trials):
        prediction, radius = smooth.certify(x0, n0=20, n=n, alpha=alpha, batch_size=4000)
        failures += int(prediction != -1 and (prediction != 0 or radius > R))
    # exact failure probability: P(Clopper-Pearson lower bound > p)
    counts = np.arange(n + 1)
    exact = stats.binom.pmf(counts, n, p)[clopper_pearson_lower(counts, np.full(n + 1, n), alpha) > p].sum()
    assert exact <= alpha
    assert failures / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert failures > 0  # the certificate is tight, so it does fail sometimes (at about `exact`)


@pytest.mark.slow
def test_pipeline_soundness_linf_linear_classifier():
    """Mixed family, w = 1/sqrt(d): the true l-inf radius of the (unchanged) linear classifier is m / sqrt(d)."""
    d, k, sigma, alpha_total, trials = 16, 4, 0.5, 0.2, 150
    noise_alpha = 0.02
    noise = NormPowerGaussian(sigma, k, d, norm="linf", linf_radii=np.linspace(0.01, 0.5, 50),
                              noise_samples=20000, noise_alpha=noise_alpha, noise_seed=3)
    clf = LinearClassifier(torch.ones(d) / math.sqrt(d), 0.0)
    p_target = 0.95
    # put x where the mixed family gives p_A ~ 0.95 (estimated once; soundness does not depend on it)
    z = noise.sample((50000, d), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    m = float(np.quantile(z.sum(1).numpy() / math.sqrt(d), p_target))
    x = torch.ones(d) * (m / math.sqrt(d))
    truth = m / math.sqrt(d)
    smooth = Smooth(clf, 2, noise, seed=1)
    alpha_c = ng.split_alpha(alpha_total, noise_alpha)
    failures, radii = 0, []
    for _ in range(trials):
        prediction, radius = smooth.certify(x, n0=20, n=200, alpha=alpha_c, batch_size=4000)
        radii.append(radius)
        failures += int(prediction != -1 and (prediction != 1 or radius > truth))
    assert failures / trials <= alpha_total + 3 * math.sqrt(alpha_total * (1 - alpha_total) / trials)
    assert np.mean(radii) > 0  # it certifies something


# ----------------------------------------------------------------------------- registry, errata, errors
def test_registry_and_training_objective():
    assert set(NOISE_FAMILIES) >= {"gaussian", "norm_power"}
    noise = make_noise_family("norm_power", 0.25, dim=64, k=10, matched=True)
    assert isinstance(noise, NormPowerGaussian) and noise.sigma == matched_sigma(0.25, 10, 64)
    assert isinstance(make_noise_family("gaussian", 0.25, dim=64), Gaussian)
    with pytest.raises(ValueError, match="needs k"):
        make_noise_family("norm_power", 0.25, dim=64)
    with pytest.raises(ValueError, match="valid choices"):
        make_noise_family("laplace", 0.25, dim=64)
    with pytest.raises(ValueError, match="norm_power noise family takes no"):
        make_noise_family("norm_power", 0.25, dim=64, k=3, power=2)
    from rsbook.train import GaussianAugmentation

    objective = GaussianAugmentation(make_noise_family("norm_power", 0.25, dim=64, k=10, norm="linf"), num_noise=2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    out = objective(model, torch.rand(4, 1, 8, 8), torch.arange(4))
    assert out.logits.shape == (8, 10) and torch.isfinite(out.loss)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="k must satisfy"):
        NormPowerGaussian(0.5, 64, 64)
    with pytest.raises(ValueError, match="k must satisfy"):
        NormPowerGaussian(0.5, -1, 64)
    with pytest.raises(ValueError, match="dim must be"):
        NormPowerGaussian(0.5, 0, 1)
    with pytest.raises(ValueError, match="sigma"):
        NormPowerGaussian(0.0, 0, 64)
    with pytest.raises(ValueError, match="valid choices: l2, linf"):
        NormPowerGaussian(0.5, 1, 64, norm="l1")
    with pytest.raises(ValueError, match="k < dim - 1"):
        matched_sigma(0.5, 63, 64)
    with pytest.raises(ValueError, match="noise_alpha"):
        ng.split_alpha(0.001, 0.01)


def test_errata_numbers():
    # Thm. 7 at N = 1e5, alpha = 0.001: p lowered by 0.00588; the Gaussian-equivalent radius cap is ~2.5 sigma
    assert abs(ng.hoeffding_penalty(0.001, 100_000) - 0.0058770) < 1e-6
    cap = ng.radius_cap(100_000, 0.001, 1.0, 0, 150528, noise_n=100_000)
    assert 2.45 < cap < 2.55
    assert abs(ng.radius_cap(100_000, 0.001, 1.0, 0, 150528) - special.ndtri(0.001 ** 1e-5)) < 1e-8
    # Alg. 1's maximum over J re-estimated bounds fails about J times as often
    single = ng.max_of_bounds_failure(0.9, 500, 0.01, 1)
    assert single <= 0.01
    assert ng.max_of_bounds_failure(0.9, 500, 0.01, 20) > 5 * single


def test_soap_bubble_numbers():
    table = ng.soap_bubble_table(dims=(64, 3072))
    for _, row in table.iterrows():
        assert abs(row["sd"] - 1 / math.sqrt(2)) < 0.01  # an O(1) shell
        assert row["shell_width"] < 4
        assert abs(row["mean"] - math.sqrt(row["d"] - 0.5)) < 1e-3  # E chi_d = sqrt(d - 1/2) + O(d^-3/2)
    # Sec. 4.1 toy: the smoothed ball classifier vanishes for Gaussian noise in high d
    assert ng.ball_classifier_probability(0.9, 3072) < 1e-12
    assert ng.ball_classifier_probability(0.9, 3072, k=3072 - 10) > 0.99
