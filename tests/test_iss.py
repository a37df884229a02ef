"""Tests of rsbook.iss (Chen et al., AAAI 2022), each against a truth computed independently.

* psi against an exhaustive scan that uses only the *forward* regularised incomplete beta
  function (no quantile inversion, no bisection), so a wrong search or a non-monotone
  R̂(k, p) would show up as a mismatch.
* the Fig. 3 sample sizes and decline stated in the paper.
* the soundness of both Alg. 2 variants: the linear classifier of rsbook.groundtruth has an
  analytic p_A and radius; the simulated failure rates must agree with the exact failure
  probabilities of rsbook.iss.failure_probability, which are in turn checked against alpha.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import betainc, ndtr, ndtri
from scipy.stats import binom
from torch.utils.data import TensorDataset

from scipy import stats

from rsbook import iss
from rsbook.analysis import acr, read_log
from rsbook.certify import LOG_COLUMNS
from rsbook.groundtruth import LinearClassifier, certify_failure_rate, point_at_p_a
from rsbook.smooth import Smooth
from rsbook.stats import beta_lower_bound, clopper_pearson_lower, clopper_pearson_upper

ALPHA = 0.001


# ----------------------------------------------------------------------------- R̂ and psi
def test_continuous_bound_agrees_with_core_clopper_pearson_at_integer_counts():
    n = np.array([1, 7, 50, 1000, 1000, 1000, 100000])
    k = np.array([1, 3, 50, 0, 500, 999, 99000])
    got = beta_lower_bound(k, n, ALPHA)
    # independent path: scipy's Beta quantile (the core bound also uses betaincinv)
    want = np.where(k > 0, stats.beta.ppf(ALPHA, np.maximum(k, 1), n - k + 1), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # and R̂ is sigma * Phi^{-1} of it (radius 0 when the bound is <= 1/2)
    r = iss.radius_hat(1000, 0.999, 0.5, ALPHA)
    assert abs(ndtr(r / 0.5) - clopper_pearson_lower(999, 1000, ALPHA)) < 1e-12
    assert iss.radius_hat(1000, 0.5, 0.5, ALPHA) == 0.0
    assert iss.radius_hat(0, 0.9, 0.5, ALPHA) == 0.0


def _psi_by_scan(p, k_max, sigma, alpha, bound, kind):
    """min k with R̂(k, p) >= r̃, scanning every k, with R̂(k) >= r ⇔ I_q(pk, k - pk + 1) <= alpha, q = Phi(r / sigma)."""
    k = np.arange(1, k_max + 1, dtype=float)
    # r̄ from the forward function too: the largest q with I_q(p k_max, ...) <= alpha, by bisection on q
    a, b = p * k_max, k_max - p * k_max + 1
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if betainc(a, b, mid) <= alpha else (lo, mid)
    r_bar = sigma * ndtri(lo) if lo > 0.5 else 0.0
    need = r_bar - bound if kind == "AD" else (1 - bound) * r_bar
    if need <= 0:
        return 0, None
    q = ndtr(need / sigma)
    feasible = betainc(p * k, k - p * k + 1, q) <= alpha
    return int(k[np.argmax(feasible)]), feasible


@pytest.mark.parametrize("kind,bound,sigma", [("AD", 0.05, 0.25), ("AD", 0.02, 1.0), ("RD", 0.05, 0.5),
                                              ("RD", 0.2, 0.25)])
def test_psi_is_the_exact_minimum_found_by_an_exhaustive_scan(kind, bound, sigma):
    k_max = 3000
    ps = [0.55, 0.62, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]
    got = iss.sample_size(np.array(ps), k_max, sigma, ALPHA, bound, kind)
    for p, g in zip(ps, got):
        want, feasible = _psi_by_scan(p, k_max, sigma, ALPHA, bound, kind)
        assert g == want, (p, g, want)
        if feasible is not None:
            # the feasible k form the interval [psi, k_max]: R̂ increases in k, so bisection is valid
            assert feasible[want - 1:].all() and not feasible[:want - 1].any()


@pytest.mark.parametrize("kind,bound", [("AD", 0.05), ("AD", 0.1), ("RD", 0.01), ("RD", 0.05)])
def test_psi_properties_and_tightness(kind, bound):
    k_max, sigma = 100_000, 0.5
    p = np.linspace(0, 1, 4001)
    psi = iss.sample_size(p, k_max, sigma, ALPHA, bound, kind)
    assert np.all(psi[p <= 0.5] == 0)
    assert np.all((psi >= 0) & (psi <= k_max))
    if kind == "AD":  # Fig. 6 / Ablation: non-decreasing in p_A on [0.5, 1]
        assert np.all(np.diff(psi[p >= 0.5]) >= 0)
    else:  # RD first falls then rises: once it has gone up it never comes down
        pos = psi[psi > 0]
        d = np.diff(pos)
        first_up = np.argmax(d > 0)
        assert (d[:first_up] <= 0).all() and (d[first_up:] >= 0).all() and (d < 0).any()
    # within the bound at psi(p), outside it at psi(p) - 1 (psi > 0 only)
    sel = psi > 0
    at = iss.radius_decline(psi[sel], k_max, p[sel], sigma, ALPHA, kind)
    below = iss.radius_decline(psi[sel] - 1, k_max, p[sel], sigma, ALPHA, kind)
    assert np.all(at <= bound) and np.all(below > bound)
    # where psi = 0, zero samples (radius 0) are within the bound already
    assert np.all(iss.radius_decline(0, k_max, p[~sel], sigma, ALPHA, kind) <= bound)


def test_fig3_sample_sizes_are_reproduced_at_sigma_one_half():
    """Paper: ~35,000 (p_A = 0.51) and ~65,000 (0.99) at k_bar = 100,000, U_AD = 0.0042, alpha = 0.001."""
    got = iss.sample_size(np.array([0.51, 0.99]), 100_000, 0.5, ALPHA, 0.0042, "AD")
    print(f"sigma = 0.5: psi(0.51) = {got[0]}, psi(0.99) = {got[1]}")
    assert got.tolist() == [35266, 65863]
    assert abs(got[0] - 35000) / 35000 < 0.015 and abs(got[1] - 65000) / 65000 < 0.015
    # the paper's second number: 100,000 -> 50,000 costs x2 "up to 0.0075"
    assert abs(iss.radius_decline(50_000, 100_000, 0.99, 0.5, ALPHA) - 0.0075) < 1e-4
    # the other usual noise levels miss by far: the check can tell sigma apart
    table = iss.sigma_for_sample_sizes({0.51: 35000, 0.99: 65000}, 100_000, ALPHA, 0.0042, [0.25, 0.5, 1.0])
    assert table["max_rel_error"].idxmin() == 0.5 and table["max_rel_error"].drop(0.5).min() > 0.25


# ----------------------------------------------------------------------------- psi_ISS
@pytest.mark.parametrize("kind,bound,k_max", [("AD", 0.05, 100_000), ("AD", 0.1, 2000), ("RD", 0.05, 100_000),
                                              ("RD", 0.01, 500_000)])
def test_psi_iss_dominates_psi_on_and_between_grid_points(kind, bound, k_max):
    sigma = 0.5
    m = iss.build_mapping(k_max, sigma, ALPHA, bound, kind, delta=1e-3)
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(5000), m.grid, m.p_star + np.logspace(-11, -3, 40)])
    p = p[(p >= 0) & (p <= 1)]
    assert np.all(m(p) >= iss.sample_size(p, k_max, sigma, ALPHA, bound, kind))
    assert np.array_equal(m(m.grid), m.values)  # eq. 6, first case
    assert m(1.0) == m.values[-1] and m(0.0) == 0


def test_printed_eq6_breaks_domination_for_relative_decline():
    """Negative control: without the jump-cell correction the check above fails for RD."""
    k_max, sigma, bound = 100_000, 0.5, 0.05
    m = iss.build_mapping(k_max, sigma, ALPHA, bound, "RD", printed_eq6=True)
    p = m.p_star + np.logspace(-11, -3, 40)
    assert np.any(m(p) < iss.sample_size(p, k_max, sigma, ALPHA, bound, "RD"))


def test_plan_equals_eq5_for_absolute_decline_and_mapping_roundtrip(tmp_path):
    m = iss.build_mapping(10_000, 0.25, ALPHA, 0.05, "AD", delta=0.01)
    rng = np.random.default_rng(1)
    for _ in range(200):
        lo, up = np.sort(rng.random(2))
        assert m.plan(lo, up) == max(m(lo), m(up))
    m2 = iss.ISSMapping.load(m.save(tmp_path / "psi.npz"))
    assert np.array_equal(m2.cells, m.cells) and m2.kind == "AD" and m2.k_max == 10_000
    assert m.build_seconds > 0


def test_input_validation_names_the_parameter():
    with pytest.raises(ValueError, match="kind.*AD, RD"):
        iss.sample_size(0.9, 1000, 0.25, ALPHA, 0.05, kind="XX")
    with pytest.raises(ValueError, match="variant.*fresh, printed, reuse"):
        iss.failure_probability(0.9, iss.build_mapping(100, 0.25, ALPHA, 0.05, delta=0.1), 10, variant="cohen")
    with pytest.raises(ValueError, match="delta"):
        iss.build_mapping(100, 0.25, ALPHA, 0.05, delta=0.3)
    with pytest.raises(ValueError, match="max_decline"):
        iss.sample_size(0.9, 1000, 0.25, ALPHA, 1.5, kind="RD")
    with pytest.raises(ValueError, match="alpha"):
        iss.sample_size(0.9, 1000, 0.25, 1.0, 0.05)
    clf = LinearClassifier(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="sigma"):
        iss.iss_certify(Smooth(clf, 2, 0.5), torch.zeros(2), iss.build_mapping(100, 0.25, ALPHA, 0.05), 10)


# ----------------------------------------------------------------------------- Prop. 1, exactly
@pytest.mark.parametrize("kind,bound", [("AD", 0.05), ("RD", 0.05)])
def test_prop1_holds_exactly_over_the_first_stage_distribution(kind, bound):
    """P_j(decline(k̂(j); k_max, p_A) <= U) >= 1 - alpha with j ~ Binomial(k0, p_A), for each p_A."""
    k_max, k0, sigma, alpha = 10_000, 100, 0.5, 0.01
    m = iss.build_mapping(k_max, sigma, alpha, bound, kind)
    j = np.arange(k0 + 1)
    lo, up = clopper_pearson_lower(j, k0, alpha / 2), clopper_pearson_upper(j, k0, alpha / 2)
    k_hat = np.array([m.plan(a, b) for a, b in zip(lo, up)])
    worst = 1.0
    for p in np.linspace(0.5, 1.0, 101):
        ok = iss.radius_decline(k_hat, k_max, p, sigma, alpha, kind) <= bound + 1e-12
        worst = min(worst, float(binom.pmf(j, k0, p)[ok].sum()))
    print(f"{kind}: smallest probability that k_hat meets the bound = {worst:.5f} (need >= {1 - alpha})")
    assert worst >= 1 - alpha


# ----------------------------------------------------------------------------- soundness
def test_exact_failure_probability_fresh_is_valid_and_printed_alg2_is_not():
    sigma, alpha = 0.5, 0.05
    m = iss.build_mapping(1000, sigma, alpha, 0.1, "AD")
    fresh = [iss.failure_probability(p, m, 100, alpha, "fresh") for p in (0.501, 0.6, 0.8, 0.95, 0.999)]
    printed = iss.failure_probability(0.501, m, 100, alpha, "printed")
    reuse = iss.failure_probability(0.501, m, 100, alpha, "reuse")
    print("fresh:", np.round(fresh, 4), "printed / reuse at p_A = 0.501:", round(printed, 4), round(reuse, 4))
    assert max(fresh) <= alpha
    assert printed > 1.5 * alpha and reuse > 1.5 * alpha


@pytest.mark.slow
@pytest.mark.parametrize("variant,p_a", [("fresh", 0.501), ("printed", 0.501), ("fresh", 0.9), ("printed", 0.9)])
def test_soundness_simulation_matches_exact_failure_probability(variant, p_a):
    """The foundation's harness on the analytic linear classifier, for both Alg. 2 variants."""
    sigma, alpha, k0, trials = 0.5, 0.05, 100, 2000
    m = iss.build_mapping(1000, sigma, alpha, 0.1, "AD")
    clf = LinearClassifier(torch.tensor([1.0, 0.0]))
    x = point_at_p_a(clf, p_a, sigma)
    smooth = Smooth(clf, 2, sigma, seed=11)
    result = certify_failure_rate(lambda z: iss.iss_certify(smooth, z, m, k0, alpha, variant, batch_size=2000),
                                  clf, x, alpha, trials, sigma)
    exact = iss.failure_probability(p_a, m, k0, alpha, variant)
    print(f"{variant} at p_A = {p_a}: {result}; exact failure probability {exact:.4f}")
    se = np.sqrt(exact * (1 - exact) / trials)
    assert abs(result.rate - exact) <= 4 * se + 1e-9
    # the harness's verdict: fresh is sound everywhere, the printed algorithm is flagged near p_A = 1/2
    assert result.sound == (variant == "fresh" or p_a > 0.6)


def test_harness_flags_an_obviously_unsound_certifier():
    """Negative control: a 'bound' at the median (alpha = 0.5) over-certifies about half the time."""
    sigma = 0.5
    clf = LinearClassifier(torch.tensor([1.0, 0.0]))
    x = point_at_p_a(clf, 0.8, sigma)
    smooth = Smooth(clf, 2, sigma, seed=3)
    result = certify_failure_rate(lambda z: smooth.certify(z, 20, 500, 0.5, batch_size=1000), clf, x, 0.05, 300,
                                  sigma)
    print("median 'bound':", result)
    assert not result.sound and result.rate > 0.3


# ----------------------------------------------------------------------------- certification and logs
class _Counting(Smooth):
    drawn = 0

    def sample_counts(self, x, n, batch_size=1000):
        self.drawn += n
        return super().sample_counts(x, n, batch_size)


def _toy_problem():
    clf = LinearClassifier(torch.tensor([1.0, -0.5]), b=0.1)
    sigma = 0.5
    xs = torch.stack([point_at_p_a(clf, p, sigma, side=s) for p, s in
                      [(0.55, 1), (0.7, -1), (0.9, 1), (0.97, -1), (0.999, 1), (0.52, 1)]])
    ys = torch.tensor([clf.true_class(x) for x in xs])
    return clf, sigma, TensorDataset(xs, ys)


@pytest.mark.parametrize("variant", iss.VARIANTS)
def test_iss_draws_through_the_sampler_and_accounts_its_samples(variant):
    clf, sigma, data = _toy_problem()
    m = iss.build_mapping(2000, sigma, ALPHA, 0.05, "AD")
    smooth = _Counting(clf, 2, sigma, seed=0)
    for x, _ in data:
        before = smooth.drawn
        cert = iss.iss_certify(smooth, x, m, 50, variant=variant)
        assert smooth.drawn - before == cert.sample_size
        assert cert.sample_size == (50 + cert.k_hat if variant == "fresh" else max(cert.k_hat, 50))
        counted = {"fresh": cert.k_hat, "printed": cert.k_hat, "reuse": max(cert.k_hat, 50)}[variant]
        assert cert.n == counted or (cert.n == 0 and cert.prediction == -1 and counted == 0)
        # the selection samples are counted once: n0 + n never exceeds what was drawn
        assert cert.n0 + cert.n <= cert.sample_size
        pred, radius = cert  # unpacks like CERTIFY
        assert radius >= 0


def test_iss_and_ias_logs_are_read_by_analysis_and_resume(tmp_path):
    clf, sigma, data = _toy_problem()
    m = iss.build_mapping(2000, sigma, ALPHA, 0.05, "AD")
    smooth = Smooth(clf, 2, sigma, seed=0)
    ref = iss.certify_dataset_ias(smooth, data, 2000, 50, ALPHA, tmp_path / "ref.tsv", progress=False)
    logs = {v: iss.certify_dataset_iss(smooth, data, m, 50, tmp_path / f"iss_{v}.tsv", variant=v, progress=False)
            for v in iss.VARIANTS}
    k = iss.matching_ias_size(logs["fresh"], n0=50)
    assert (read_log(logs["reuse"])["n0"] == 0).all() and (read_log(logs["fresh"])["n0"] == 50).all()
    ias = iss.certify_dataset_ias(smooth, data, k, 50, ALPHA, tmp_path / "ias.tsv", progress=False)
    for path in [ref, ias, *logs.values()]:
        frame = read_log(path)
        assert list(frame.columns) == list(LOG_COLUMNS + iss.ISS_COLUMNS) and len(frame) == len(data)
        assert 0 <= acr(frame) <= 3
    assert (read_log(ias)["sample_size"] == 50 + k).all()
    # a rerun resumes: nothing is appended
    iss.certify_dataset_iss(smooth, data, m, 50, logs["fresh"], progress=False)
    assert len(read_log(logs["fresh"])) == len(data)
    table = iss.compare_table({"ISS": logs["fresh"], "IAS": ias, "k_max": ref}, "k_max", [0.0, 0.5], time=True)
    assert list(table.columns) == ["Avg", "Time (s)", "speed-up (samples)", "speed-up (time)", "MAD", "ACR", "0",
                                   "0.5"]
    assert table.loc["k_max", "MAD"] == 0 and table.loc["k_max", "Avg"] == 2050
    assert table.loc["k_max", "speed-up (samples)"] == 1.0
    assert table.loc["IAS", "speed-up (samples)"] == pytest.approx(2050 / (50 + k))
    check = iss.prop1_check(ref, logs["fresh"], m)
    print(check)
    assert check.n == len(data) and 0 <= check.plug_in <= 1
    assert np.allclose(iss.p_a_hat(ref), read_log(ref)["count"] / 2000)


# ----------------------------------------------------------------------------- issue 8
def test_reuse_variants_record_no_separate_selection_samples():
    """Issue 8: the reuse variant logged n0 = k0 although n already contained those k0 samples."""
    clf, sigma, data = _toy_problem()
    m = iss.build_mapping(2000, sigma, ALPHA, 0.05, "AD")
    smooth = Smooth(clf, 2, sigma, seed=0)
    for variant in ("reuse", "printed"):
        for x, _ in data:
            cert = iss.iss_certify(smooth, x, m, 50, variant=variant)
            assert cert.n0 == 0 and cert.n <= cert.sample_size


def test_printed_alg2_counts_only_k_hat_samples_when_k_hat_is_below_k0():
    """Alg. 2 lines 7-8 literally: with k_hat < k0 the bound uses k_hat of the k0 first-stage samples."""
    clf, sigma, data = _toy_problem()
    # a large bound makes psi small: k_hat < k0 = 500 for the confident inputs
    m = iss.build_mapping(2000, sigma, ALPHA, 0.3, "AD")
    smooth = _Counting(clf, 2, sigma, seed=1)
    seen_small = False
    for x, _ in data:
        before = smooth.drawn
        printed = iss.iss_certify(smooth, x, m, 500, variant="printed")
        assert smooth.drawn - before == printed.sample_size == max(500, printed.k_hat)
        if 0 < printed.k_hat < 500:
            seen_small = True
            assert printed.n == printed.k_hat and printed.count <= printed.k_hat
    assert seen_small


def test_exact_failure_probability_of_the_printed_variant_matches_simulation_when_k_hat_is_small():
    """Hypergeometric branch of failure_probability against a direct simulation of the thinning."""
    sigma, alpha, k0, p_a = 0.5, 0.05, 200, 0.7
    m = iss.build_mapping(400, sigma, alpha, 0.2, "AD")
    exact = iss.failure_probability(p_a, m, k0, alpha, "printed")
    rng = np.random.default_rng(0)
    trials, fails = 40_000, 0
    j = rng.binomial(k0, p_a, trials)
    for jj in np.unique(j):
        picked = 2 * jj > k0
        k_top = jj if picked else k0 - jj
        lo, up = clopper_pearson_lower(k_top, k0, alpha / 2), clopper_pearson_upper(k_top, k0, alpha / 2)
        k_hat = m.plan(float(lo), float(up))
        reps = int((j == jj).sum())
        if k_hat >= k0:
            counts = k_top + rng.binomial(k_hat - k0, p_a if picked else 1 - p_a, reps)
            n = k_hat
        elif k_hat == 0:
            continue
        else:
            counts = rng.hypergeometric(k_top, k0 - k_top, k_hat, reps)
            n = k_hat
        bound = clopper_pearson_lower(counts, n, alpha)
        fails += int(np.sum(bound > (p_a if picked else 0.5)))
    rate = fails / trials
    se = np.sqrt(exact * (1 - exact) / trials)
    print(f"printed Alg. 2 at p_A = {p_a}: exact {exact:.4f}, simulated {rate:.4f}")
    assert abs(rate - exact) <= 4 * se + 1e-9 and exact > 0


def test_endpoint_rule_breaks_prop1_for_relative_decline():
    """Negative control (issue 8): eq. 5's endpoint rule misses psi's jump at p*; the interval maximum does not.

    k_bar = 10^5, sigma = 0.5, U_RD = 0.05, k0 = 1000, alpha = 0.001 (the paper's setting).
    Measured exactly: endpoint rule 0.000203 just above p*, 0.340 at p_A = 0.55; interval max >= 0.9992.
    """
    m = iss.build_mapping(100_000, 0.5, ALPHA, 0.05, "RD")
    just_above = m.p_star + 1e-6
    end = {p: iss.prop1_coverage(p, m, 1000, "endpoints") for p in (just_above, 0.55)}
    inside = {p: iss.prop1_coverage(p, m, 1000, "interval") for p in (just_above, 0.55, 0.6, 0.9)}
    print(f"\nProp. 1 coverage, endpoint rule: {end}; interval maximum: {inside}")
    assert end[just_above] < 1e-3 and 0.2 < end[0.55] < 0.5
    assert min(inside.values()) >= 1 - ALPHA
    # for AD the two rules coincide (psi is non-decreasing)
    ad = iss.build_mapping(100_000, 0.5, ALPHA, 0.05, "AD")
    assert all(iss.prop1_coverage(p, ad, 1000, "endpoints") == iss.prop1_coverage(p, ad, 1000, "interval")
               for p in (0.55, 0.9))


def test_equal_budget_comparison_special_cases():
    k_max, sigma, u = 100_000, 0.5, 0.05
    p = np.array([0.6, 0.9, 0.99, 1.0])
    # IAS at k_max: ISS gives up at most U (AD) and never gains
    gain = iss.equal_budget_gain(p, k_max, k_max, sigma, ALPHA, u)
    assert np.all(gain <= 1e-12) and np.all(gain >= -u - 1e-12)
    # every input with the same p_A: IAS spends exactly what ISS spends, so nothing to gain
    same = iss.equal_budget_comparison(np.full(7, 0.9), k_max, sigma, ALPHA, u)
    assert same["k_ias"] == iss.sample_size(0.9, k_max, sigma, ALPHA, u) and abs(same["gain"]) < 1e-12
    # Fig. 4a: ISS ahead only where AD(30,000) exceeds U, i.e. very close to p_A = 1 at sigma = 0.5
    grid = np.linspace(0.5, 1.0, 2001)
    ahead = grid[iss.equal_budget_gain(grid, k_max, 30_000, sigma, ALPHA, u) > 0]
    assert ahead.min() > 0.99


def test_expected_planned_size_is_the_mean_plan_over_the_pilot():
    """E[k̂] summed over the pilot's binomial agrees with planning from simulated pilots, the valid interval
    rule never plans less than the printed endpoint rule, the two agree where psi is monotone (AD), and for
    RD near the jump the valid rule spends nearly the whole budget."""
    from rsbook.iss import expected_planned_size
    from rsbook.stats import clopper_pearson_lower, clopper_pearson_upper

    rd = iss.build_mapping(100_000, 0.5, 0.001, 0.05, kind="RD")
    ad = iss.build_mapping(100_000, 0.5, 0.001, 0.05, kind="AD")
    rng = np.random.default_rng(0)
    for p_a in (0.52, 0.55, 0.9):
        j = rng.binomial(1000, p_a, size=4000)
        plans = np.array([rd.plan(float(clopper_pearson_lower(x, 1000, 0.0005)),
                                  float(clopper_pearson_upper(x, 1000, 0.0005))) for x in j])
        exact = expected_planned_size(p_a, rd, 1000)
        assert abs(plans.mean() - exact) <= 4 * plans.std(ddof=1) / np.sqrt(len(plans)) + 1.0
        assert exact >= expected_planned_size(p_a, rd, 1000, "endpoints")
        assert expected_planned_size(p_a, ad, 1000) == pytest.approx(expected_planned_size(p_a, ad, 1000, "endpoints"))
    assert expected_planned_size(0.52, rd, 1000) > 0.99 * 100_000
    assert expected_planned_size(0.52, rd, 1000, "endpoints") < 0.5 * 100_000
    # a pilot that always sees every vote plans psi's value for the interval it gives
    assert binom.pmf(1000, 1000, 1.0) == 1.0
    assert expected_planned_size(1.0, ad, 1000) == ad.plan(float(clopper_pearson_lower(1000, 1000, 0.0005)), 1.0)
    with pytest.raises(ValueError, match="p_a must lie in"):
        expected_planned_size(1.5, ad, 1000)


def test_expected_cost_counts_the_pilot_once():
    """The fresh variant pays k0 on top of E[k̂]; the printed one pays E[max(k̂, k0)], which lies between
    max(k0, E[k̂]) (Jensen) and k0 + E[k̂]; and a simulation of the printed cost agrees with the exact sum."""
    from rsbook.stats import clopper_pearson_lower, clopper_pearson_upper

    m = iss.build_mapping(100_000, 0.5, 0.001, 0.05, kind="AD")
    for p_a, k0 in ((0.9, 500), (0.99, 2_000)):
        e_k = iss.expected_planned_size(p_a, m, k0)
        assert iss.expected_cost(p_a, m, k0, "fresh") == pytest.approx(k0 + e_k)
        printed = iss.expected_cost(p_a, m, k0, "printed")
        assert max(k0, e_k) - 1e-9 <= printed <= k0 + e_k + 1e-9
        assert iss.expected_cost(p_a, m, k0, "reuse") == pytest.approx(printed)
        j = np.random.default_rng(1).binomial(k0, p_a, size=3000)
        sim = np.array([max(k0, m.plan(float(clopper_pearson_lower(x, k0, 0.0005)),
                                       float(clopper_pearson_upper(x, k0, 0.0005)))) for x in j])
        assert abs(sim.mean() - printed) <= 4 * sim.std(ddof=1) / np.sqrt(len(sim)) + 1.0
    with pytest.raises(ValueError, match="variant"):
        iss.expected_cost(0.9, m, 500, "twice")


def test_p_a_ends_moves_only_unanimous_inputs_to_their_clopper_pearson_bound():
    import pandas as pd

    frame = pd.DataFrame({"idx": [0, 1, 2, 3], "count": [2000, 1999, 20_000, 0], "n": [2000, 2000, 20_000, 0]})
    p_hat, low = iss.p_a_ends(frame, 0.001)
    np.testing.assert_allclose(p_hat, [1.0, 0.9995, 1.0, 0.0])
    # a unanimous input's lower end is the one-sided Clopper-Pearson bound of n out of n (alpha^(1/n))
    np.testing.assert_allclose(low[[0, 2]], clopper_pearson_lower(np.array([2000, 20_000]),
                                                                  np.array([2000, 20_000]), 0.001), rtol=1e-12)
    np.testing.assert_array_equal(low[[1, 3]], p_hat[[1, 3]])
    assert low[2] > low[0]                      # more samples, a tighter end
    # coverage: an input whose true p_A is below the lower end is unanimous with probability below alpha
    for n in (2000, 20_000):
        p_true = np.nextafter(low[0] if n == 2000 else low[2], 0.0)
        assert binom.pmf(n, n, p_true) <= 0.001


def test_cap_account_prices_the_cap_difference_of_a_published_pair():
    import pandas as pd
    from rsbook.stats import radius_cap

    table = pd.DataFrame({"sigma": [0.5, 0.5], "method": ["ISS-AD-10-0.05", "IAS-3.3"], "Avg": [32992, 33000],
                          "ACR": [0.794, 0.770], "1.5": [33.2, 32.8], "2.0": [4.0, 0.0]})
    row = iss.cap_account(table, ALPHA).iloc[0]
    psi_1 = iss.sample_size(1.0, 100_000, 0.5, ALPHA, 0.05)
    # psi(1) in closed form (the chapter's exercise 1): the least k with R_hat(k_bar, 1) - R_hat(k, 1) <= U
    need = 0.5 * ndtri(ALPHA ** (1 / 100_000)) - 0.05
    assert row["psi(1)"] == psi_1 == int(np.ceil(np.log(ALPHA) / np.log(ndtr(need / 0.5))))
    assert row["cap ISS"] == pytest.approx(float(radius_cap(0.5, ALPHA, psi_1)))
    assert row["cap IAS"] == pytest.approx(float(radius_cap(0.5, ALPHA, 33000)))
    assert row["share the cap needs (%)"] == pytest.approx(100 * 0.024 / row["cap difference"])
    assert row["ISS beyond IAS's cap (%)"] == "4 at r=2"
    assert row["most at psi(1) (%)"] == pytest.approx(100 * 32992 / psi_1)
    with pytest.raises(ValueError, match="ISS row followed by its IAS row"):
        iss.cap_account(table.iloc[::-1], ALPHA)


def test_equal_budget_comparison_returns_per_input_radii_and_their_standard_error():
    p = np.array([0.6, 0.8, 0.95, 0.999, 0.9999, 1.0])
    res = iss.equal_budget_comparison(p, 100_000, 0.5, ALPHA, 0.05)
    d = res["r_iss"] - res["r_ias"]
    assert res["gain"] == pytest.approx(d.mean())
    assert res["gain_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(len(p)))
    np.testing.assert_allclose(res["r_ias"], iss.radius_hat(res["k_ias"], p, 0.5, ALPHA))
