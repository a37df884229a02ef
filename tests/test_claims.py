"""Seed-level claims: the interval covers the method effect when training seeds differ, the image-level SE does not."""

import numpy as np
import pytest
from scipy.stats import norm

from rsbook.claims import ClaimFailed, Claims, seed_difference
from rsbook.stats import clopper_pearson_lower, radius_cap


def _two_level_coverage(seed_sd, replications=2000, seeds=3, images=300, effect=0.05, rng_seed=1):
    """Coverage of the true method effect by the seed-level t interval and by the image-level normal interval.

    Per replication: image difficulties ``b_i``; each (method, seed) network is shifted by
    ``u ~ N(0, seed_sd^2)`` (what retraining with another seed does); the per-image
    outcome is Bernoulli(b_i + mu_method + u). The method effect is ``effect`` exactly.
    """
    rng = np.random.default_rng(rng_seed)
    seed_hits = image_hits = 0
    for _ in range(replications):
        base = rng.uniform(0.25, 0.7, images)
        shifts = rng.normal(0.0, seed_sd, (2, seeds))
        a = [(rng.random(images) < base + effect + shifts[0, s]).astype(float) for s in range(seeds)]
        b = [(rng.random(images) < base + shifts[1, s]).astype(float) for s in range(seeds)]
        d = seed_difference(a, b, level=0.95)
        seed_hits += d.lower <= effect <= d.upper
        image_hits += abs(d.mean - effect) <= norm.ppf(0.975) * d.image_se
    return seed_hits / replications, image_hits / replications


def test_seed_level_interval_covers_at_its_nominal_rate_and_the_image_level_se_does_not():
    tolerance = 3 * np.sqrt(0.95 * 0.05 / 2000)  # 3 binomial SEs of a coverage estimated from 2,000 runs
    seed_cov, image_cov = _two_level_coverage(seed_sd=0.04)
    print(f"training seeds differ (sd 0.04): seed-level t interval covers {seed_cov:.3f}, "
          f"image-level interval {image_cov:.3f} (nominal 0.95)")
    assert abs(seed_cov - 0.95) <= tolerance
    assert image_cov < 0.80  # it leaves the seed variance out: a claim resting on it is overconfident
    # control: when retraining changes nothing, both are right, so the test above can tell them apart
    seed_cov0, image_cov0 = _two_level_coverage(seed_sd=0.0, rng_seed=2)
    print(f"no seed variance: seed-level {seed_cov0:.3f}, image-level {image_cov0:.3f}")
    assert abs(seed_cov0 - 0.95) <= tolerance and abs(image_cov0 - 0.95) <= tolerance


def _image_effect_coverage(image_sd, replications=1000, seeds=3, images=120, effect=0.05, seed_sd=0.005, rng_seed=3):
    """Coverage when the *difference* between the methods varies from test image to test image.

    Per-example values (radius-like, Gaussian): method A is better by ``effect + c_i`` on
    image i, ``c_i ~ N(0, image_sd^2)`` drawn afresh with the test sample of each replication
    (another test set holds other digits), so the method effect is ``effect`` on average
    over test images. Returns the coverage of the two-way interval (``d.lower, d.upper``) and
    of the seed part alone (a t interval on ``seed_se`` with S - 1 df).
    """
    from scipy.stats import t as student_t

    rng = np.random.default_rng(rng_seed)
    two = student_t.ppf(0.975, seeds - 1)
    hits = seed_only = 0
    for _ in range(replications):
        base = rng.uniform(0.2, 0.6, images)
        c = rng.normal(0.0, image_sd, images)
        shifts = rng.normal(0.0, seed_sd, (2, seeds))
        a = [base + effect + c + shifts[0, s] + rng.normal(0, 0.05, images) for s in range(seeds)]
        b = [base + shifts[1, s] + rng.normal(0, 0.05, images) for s in range(seeds)]
        d = seed_difference(a, b, level=0.95)
        hits += d.lower <= effect <= d.upper
        seed_only += abs(d.mean - effect) <= two * d.seed_se
    return hits / replications, seed_only / replications


def test_the_interval_keeps_its_coverage_when_seeds_and_images_weigh_alike():
    """The chapters' own regime (binary outcomes, 3 seeds, 180 images, seed SE 2-3 x the image SE).

    There one pooled t with Satterthwaite's degrees of freedom under-covers (measured 0.93);
    the interval of seed_difference, each part with its own t quantile, must not.
    """
    from scipy.stats import t as student_t

    rng = np.random.default_rng(5)
    replications, seeds, images, effect = 2000, 3, 180, 0.05
    hits = pooled_hits = 0
    for _ in range(replications):
        base = rng.uniform(0.2, 0.6, images)
        c = rng.normal(0.0, 0.25, images)
        shifts = rng.normal(0.0, 0.01, (2, seeds))
        a = [(rng.random(images) < np.clip(base + effect + c + shifts[0, s], 0, 1)).astype(float) for s in range(seeds)]
        b = [(rng.random(images) < np.clip(base + shifts[1, s], 0, 1)).astype(float) for s in range(seeds)]
        d = seed_difference(a, b)
        hits += d.lower <= effect <= d.upper
        seed_part, image_part = d.seed_se ** 2, d.se ** 2 - d.seed_se ** 2
        df = (seed_part + image_part) ** 2 / (seed_part ** 2 / (seeds - 1) + image_part ** 2 / (images - 1))
        pooled_hits += abs(d.mean - effect) <= student_t.ppf(0.975, df) * d.se
    tolerance = 3 * np.sqrt(0.95 * 0.05 / replications)
    print(f"seed and image parts alike: seed_difference covers {hits / replications:.3f}, "
          f"one pooled Satterthwaite t {pooled_hits / replications:.3f} (nominal 0.95)")
    assert hits / replications >= 0.95 - tolerance
    assert pooled_hits / replications < hits / replications


def test_the_interval_includes_the_test_image_variance():
    """The seeds answer "would another training run agree?", the images "would another test sample?". Both count."""
    tolerance = 3 * np.sqrt(0.95 * 0.05 / 1000)
    two_way, seed_only = _image_effect_coverage(image_sd=0.2)
    print(f"method effect varies over test images (sd 0.2): two-way interval covers {two_way:.3f}, "
          f"the seed part alone {seed_only:.3f} (nominal 0.95)")
    assert abs(two_way - 0.95) <= tolerance
    assert seed_only < 0.85              # holding the test images fixed is overconfident here


def test_seed_difference_arithmetic():
    a = [np.array([1.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0])]
    b = [np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0, 1.0])]
    d = seed_difference(a, b)
    assert d.per_seed == (0.25, 0.25, 0.25) and d.mean == 0.25 and d.seed_se == 0.0 and d.images == 4

    def two_way_se(table):   # by hand: (MS_seed + max(0, MS_image - MS_e)) / (S N) of the S x N table
        s_, n_ = table.shape
        resid = table - table.mean(1, keepdims=True) - table.mean(0)[None] + table.mean()
        ms_e = (resid ** 2).sum() / ((s_ - 1) * (n_ - 1))
        ms_seed, ms_img = n_ * table.mean(1).var(ddof=1), s_ * table.mean(0).var(ddof=1)
        return np.sqrt((ms_seed + max(0.0, ms_img - ms_e)) / (s_ * n_))

    # the seeds agree on their means, and image by image they disagree more than the images differ:
    # no image component is left, and the error is the seed part alone (0 here)
    assert d.se == pytest.approx(two_way_se(np.array([[1.0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]))) and d.se == 0
    # the same image wins in every seed: an image component (the test sample), not a seed one
    same = seed_difference([np.array([1.0, 0, 0, 0])] * 3, [np.zeros(4)] * 3)
    assert same.seed_se == 0 and same.se > 0 and same.se == pytest.approx(two_way_se(np.array([[1.0, 0, 0, 0]] * 3)))
    a[2] = np.array([1.0, 1.0, 0.0, 1.0])  # per-seed differences 0.25, 0.25, 0
    d = seed_difference(a, b)
    sd = np.std([0.25, 0.25, 0.0], ddof=1)
    assert d.mean == pytest.approx(1 / 6) and d.seed_se == pytest.approx(sd / np.sqrt(3))
    assert d.se == pytest.approx(two_way_se(np.array([[1.0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])))
    assert d.se >= d.seed_se
    # half-width: t(0.975, 2) on the seed part and t(0.975, 3) on the image part, in quadrature
    image_part = d.se ** 2 - d.seed_se ** 2
    assert d.upper - d.mean == pytest.approx(np.hypot(4.302653 * d.seed_se, 3.182446 * np.sqrt(image_part)), rel=1e-6)
    assert d.mean - d.lower_one_sided == pytest.approx(np.hypot(2.919986 * d.seed_se, 2.353363 * np.sqrt(image_part)),
                                                       rel=1e-6)
    # images that differ between seeds: only the seed part is available
    d = seed_difference([x[:3] if i == 0 else x for i, x in enumerate(a)], [x[:3] if i == 0 else x for i, x in enumerate(b)])
    assert d.images == 0 and d.se == d.seed_se


def test_method_claims_need_three_seeds_a_stated_margin_and_a_radius_below_the_cap():
    rng = np.random.default_rng(0)
    good = [rng.random(200) < 0.9 for _ in range(3)]
    bad = [rng.random(200) < 0.3 for _ in range(3)]
    checks = Claims("seeds")
    assert checks.over_seeds("A beats B", good, bad, paper=0.5)
    assert not checks.over_seeds("one seed is not a method", good[:1], bad[:1])
    with pytest.raises(ValueError, match="needs margin > 0 and the reason"):
        checks.over_seeds("A no worse than B", good, bad, direction="not_less")
    assert checks.over_seeds("B no worse than A by more than 0.7", bad, good, direction="not_less", margin=0.7,
                             reason="made up for the test")
    with pytest.raises(ValueError, match="within 10% of the certification cap"):
        checks.over_seeds("at the cap", good, bad, radius=0.95, cap=1.0)
    bound = checks.bound("what one run rules out", good, bad, paper=0.2)
    assert 0.4 < bound.lower_one_sided < bound.mean < bound.upper_one_sided  # 0.9 - 0.3 = 0.6 on average
    table = checks.table()
    assert list(table.columns) == ["claim", "seeds", "measured", "required", "paper", "verdict"]
    assert table["verdict"].tolist() == ["ok", "untested", "ok", "reported"]
    checks.report()  # untested and reported rows do not fail the section ...
    checks.over_seeds("B beats A", bad, good)
    with pytest.raises(ClaimFailed, match="B beats A"):  # ... a refuted claim does
        checks.report()


@pytest.mark.parametrize("n", [1, 10, 300, 100_000])
def test_radius_cap_is_the_radius_of_a_unanimous_vote(n):
    assert radius_cap(0.5, 0.001, n) == pytest.approx(0.5 * norm.ppf(clopper_pearson_lower(n, n, 0.001)))
    assert radius_cap(1.0, 0.001, n) == pytest.approx(2 * radius_cap(0.5, 0.001, n))


def test_radius_cap_values_the_chapters_quote():
    assert radius_cap(1.0, 0.001, 300) == pytest.approx(2.00, abs=0.005)  # CAT-RS's default budget: 2.00 sigma
    assert radius_cap(1.0, 0.001, 256) == pytest.approx(1.93, abs=0.005)  # SmoothAdv's: 1.93 sigma
    assert radius_cap(1.0, 0.001, 1000) == pytest.approx(2.46, abs=0.005)  # SmoothAdv's default now
    assert radius_cap(1.0, 0.001, 2000) == pytest.approx(2.70, abs=0.005)  # ADRE's
    assert radius_cap(0.25, 0.001, 100_000) == pytest.approx(0.953, abs=0.001)
    with pytest.raises(ValueError, match="alpha"):
        radius_cap(0.5, 1.5, 100)


def test_certify_at_a_unanimous_vote_returns_exactly_the_cap():
    """What the chapters used to 'check' on trained models holds by construction: a test of the code."""
    import torch

    from rsbook.groundtruth import LinearClassifier
    from rsbook.smooth import Smooth

    far = LinearClassifier(torch.ones(16), b=1e6)  # every noisy copy votes class 1
    for sigma, n in ((0.25, 2000), (1.0, 300)):
        cert = Smooth(far, 2, sigma, seed=0).certify(torch.zeros(16), n0=10, n=n, alpha=0.001, batch_size=1000)
        assert cert.count == n and cert.radius == pytest.approx(radius_cap(sigma, 0.001, n), rel=1e-9)


def test_our_effect_beside_the_papers():
    a = [np.full(10, 0.6), np.full(10, 0.7), np.full(10, 0.65)]
    b = [np.full(10, 0.5)] * 3
    d = seed_difference(a, b)  # 0.15 [0.026, 0.274]
    assert d.versus(0.2) == "consistent" and d.versus(0.5) == "smaller" and d.versus(0.01) == "larger"
    assert d.versus(-0.1) == "opposite"


def test_summary_over_seeds_gives_mean_and_seed_level_se():
    import pandas as pd

    from rsbook.analysis import format_over_seeds, summary_over_seeds

    def log(radii):
        return pd.DataFrame({"idx": range(len(radii)), "label": 0, "predict": 0, "radius": radii, "correct": 1})

    table = summary_over_seeds({"m": [log([0.2, 0.4]), log([0.4, 0.6]), log([0.6, 0.8])]}, [0.5])
    assert table.loc["m", "ACR"] == pytest.approx(0.5) and table.loc["m", "ACR SE"] == pytest.approx(0.2 / np.sqrt(3))
    assert table.loc["m", "0.5"] == pytest.approx(50.0) and table.loc["m", "seeds"] == 3
    assert format_over_seeds(table).loc["m", "ACR"] == "0.500 ± 0.115"


def test_paired_bound_reports_image_level_bounds_without_a_verdict():
    checks = Claims("one network")
    a, b = np.array([1.0, 0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])
    lower, upper = checks.paired_bound("same model, two noises", a, b, paper=0.03)
    se = np.std(a - b, ddof=1) / 2
    assert lower == pytest.approx(0.25 - 1.6449 * se, rel=1e-4) and upper == pytest.approx(0.25 + 1.6449 * se, rel=1e-4)
    assert checks.table()["verdict"].tolist() == ["reported"]
    checks.report()  # a reported row never fails


def test_plug_in_certified_at_drops_the_confidence_bound_only():
    import pandas as pd

    from rsbook.claims import certified_at, plug_in_certified_at

    sigma, n, alpha = 0.5, 1000, 0.001
    counts = np.array([1000, 800, 790, 600, 520])
    correct = np.array([1, 1, 1, 0, 1])
    lower = clopper_pearson_lower(counts, n, alpha)
    radius = np.where(lower > 0.5, sigma * norm.ppf(lower), 0.0)
    log = pd.DataFrame({"idx": range(5), "correct": correct, "radius": radius, "count": counts, "n": n})
    # sigma Phi^-1(0.8) = 0.421 and Phi^-1(0.79) = 0.403 clear r = 0.4 without the bound; with it neither does
    np.testing.assert_array_equal(plug_in_certified_at(log, 0.4, sigma), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(certified_at(log, 0.4), [1, 0, 0, 0, 0])
    # the plug-in radius is never below the certified one (the bound only lowers it)
    for r in (0.0, 0.01, 0.2, 0.4, 1.0, 5.0):
        assert np.all(plug_in_certified_at(log, r, sigma) >= certified_at(log, r))


def test_share_needed_is_the_least_certifying_count_and_matches_certify():
    from rsbook.claims import certified_at, certified_at_budget, share_needed

    sigma, alpha = 0.25, 0.001
    for n in (1000, 100_000):
        for r in (0.1, 0.5):
            s = share_needed(r, sigma, n, alpha)
            k = round(s * n)
            # k certifies r, k - 1 does not (exhaustively at the boundary)
            assert sigma * norm.ppf(clopper_pearson_lower(k, n, alpha)) >= r
            assert sigma * norm.ppf(clopper_pearson_lower(k - 1, n, alpha)) < r
    assert share_needed(0.5, 0.25, 1000, alpha) == 0.991     # the chapter's "991 of 1,000 votes"
    assert share_needed(1.01 * float(radius_cap(0.25, alpha, 1000)), 0.25, 1000, alpha) == float("inf")
    # at the run's own budget it is CERTIFY's certified accuracy
    import pandas as pd

    counts = np.array([1000, 995, 991, 990, 700])
    lower = clopper_pearson_lower(counts, 1000, alpha)
    log = pd.DataFrame({"idx": range(5), "correct": 1, "count": counts, "n": 1000,
                        "radius": np.where(lower > 0.5, sigma * norm.ppf(lower), 0.0)})
    np.testing.assert_array_equal(certified_at_budget(log, 0.5, sigma, 1000, alpha), certified_at(log, 0.5))
    # a larger budget needs a smaller share: more of the same examples reach r = 0.5
    assert certified_at_budget(log, 0.5, sigma, 100_000, alpha).sum() > certified_at(log, 0.5).sum()
