"""The sampler, PREDICT and CERTIFY, checked against a classifier whose answer is known exactly."""

import numpy as np
import pytest
import torch

from rsbook.groundtruth import LinearClassifier, certify_failure_rate, point_at_p_a, predict_error_rate
from rsbook.noise import Gaussian
from rsbook.smooth import ABSTAIN, Certificate, Smooth

SIGMA, ALPHA, TRIALS = 0.5, 0.05, 2000


@pytest.fixture(scope="module")
def linear():
    return LinearClassifier(torch.randn(100, generator=torch.Generator().manual_seed(1)), b=0.3)


# ---------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("n,batch_size", [(1000, 100), (1000, 1000), (1001, 100), (7, 3), (5, 1000), (1, 1)])
def test_counts_sum_to_n_for_any_batch_size(linear, n, batch_size):
    counts = Smooth(linear, 2, SIGMA).sample_counts(point_at_p_a(linear, 0.8, SIGMA), n, batch_size)
    assert counts.shape == (2,) and counts.dtype.kind == "i"
    assert counts.sum() == n


def test_batched_counts_sum_to_n_per_input(linear):
    xs = torch.stack([point_at_p_a(linear, p, SIGMA) for p in (0.6, 0.9, 0.99)])
    counts = Smooth(linear, 2, SIGMA).sample_counts_batch(xs, 1001, 300)
    assert counts.shape == (3, 2) and (counts.sum(1) == 1001).all()
    # each input's vote fraction matches its analytic p_A (4 standard errors)
    np.testing.assert_allclose(counts[:, 1] / 1001, [0.6, 0.9, 0.99], atol=4 * np.sqrt(0.25 / 1001))


def test_same_seed_same_counts_other_seed_other_counts(linear):
    x = point_at_p_a(linear, 0.7, SIGMA)
    a = Smooth(linear, 2, SIGMA, seed=3).sample_counts(x, 5000, 512)
    b = Smooth(linear, 2, SIGMA, seed=3).sample_counts(x, 5000, 512)
    c = Smooth(linear, 2, SIGMA, seed=4).sample_counts(x, 5000, 512)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_vote_frequency_matches_analytic_probability(linear):
    x = point_at_p_a(linear, 0.8, SIGMA)
    counts = Smooth(linear, 2, SIGMA).sample_counts(x, 200_000, 20_000)
    assert counts[1] / 200_000 == pytest.approx(linear.true_p_a(x, SIGMA), abs=4 * np.sqrt(0.16 / 200_000))


def test_sampler_restores_training_mode():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5))
    model.train()
    Smooth(model, 2, 0.1).sample_counts(torch.zeros(3), 10)
    assert model.training


# ---------------------------------------------------------------------------- CERTIFY soundness
@pytest.mark.slow
@pytest.mark.parametrize("p_a", [0.6, 0.9, 0.99])
def test_certify_failure_rate_is_at_most_alpha(linear, p_a):
    """Over 2,000 independent calls, radius > true distance (or a wrong class) happens <= alpha of the time."""
    x = point_at_p_a(linear, p_a, SIGMA)
    smooth = Smooth(linear, 2, SIGMA, seed=11)
    result = certify_failure_rate(lambda z: smooth.certify(z, 20, 500, ALPHA, 1000), linear, x, ALPHA, TRIALS, SIGMA)
    print(f"CERTIFY p_A={p_a}: {result}")
    assert result.sound, str(result)
    assert result.mean_radius <= result.true_radius


@pytest.mark.slow
def test_unsound_certifier_is_caught(linear):
    """Negative control: plugging the point estimate k/n in place of the lower bound must fail the check."""
    x = point_at_p_a(linear, 0.9, SIGMA)
    smooth = Smooth(linear, 2, SIGMA, seed=12)

    def overconfident(z):
        counts = smooth.sample_counts(z, 500)
        c = int(counts.argmax())
        return c, smooth.noise.certified_radius(counts[c] / 500)

    result = certify_failure_rate(overconfident, linear, x, ALPHA, TRIALS, SIGMA)
    print(f"point-estimate 'certifier': {result}")
    assert not result.sound


def test_radius_approaches_truth_as_n_grows(linear):
    x = point_at_p_a(linear, 0.95, SIGMA)
    truth = linear.true_radius(x)
    gaps = []
    for n in (100, 1_000, 10_000, 100_000, 1_000_000):
        radii = [Smooth(linear, 2, SIGMA, seed=s).certify(x, 100, n, 0.001, 50_000).radius for s in range(3)]
        gaps.append(truth - np.mean(radii))
    print("truth - mean radius by n:", np.round(gaps, 4))
    assert all(g >= 0 for g in gaps)
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.01 * truth + 0.005


def test_certificate_unpacks_and_logs(linear):
    cert = Smooth(linear, 2, SIGMA).certify(point_at_p_a(linear, 0.99, SIGMA), 100, 1000, 0.001)
    assert isinstance(cert, Certificate)
    cls, radius = cert
    assert cls == 1 and radius == cert.radius > 0 and cert.n == 1000 and cert.n0 == 100
    assert cert.radius == pytest.approx(SIGMA * __import__("scipy").stats.norm.ppf(cert.p_lower))


def test_certify_abstains_on_the_boundary(linear):
    x = point_at_p_a(linear, 0.5, SIGMA)
    results = [Smooth(linear, 2, SIGMA, seed=s).certify(x, 100, 1000, 0.001) for s in range(20)]
    assert all(r.prediction == ABSTAIN and r.radius == 0.0 for r in results)


# ---------------------------------------------------------------------------- PREDICT
@pytest.mark.slow
def test_predict_answers_at_most_alpha_of_the_time_on_the_boundary(linear):
    """At p_A = p_B = 1/2 every answer is unjustified: the answer rate is the test's type-I error <= alpha."""
    x = point_at_p_a(linear, 0.5, SIGMA)
    smooth = Smooth(linear, 2, SIGMA, seed=21)
    answers = np.array([smooth.predict(x, 500, ALPHA, 1000) for _ in range(TRIALS)])
    rate = float(np.mean(answers != ABSTAIN))
    tol = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / TRIALS)
    print(f"PREDICT on the boundary: answered {rate:.4f} of {TRIALS} calls (alpha {ALPHA}, tolerance {tol:.4f})")
    assert rate <= tol


@pytest.mark.slow
def test_predict_wrong_class_rate_is_at_most_alpha(linear):
    x = point_at_p_a(linear, 0.52, SIGMA)
    smooth = Smooth(linear, 2, SIGMA, seed=22)
    result = predict_error_rate(lambda z: smooth.predict(z, 500, ALPHA, 1000), linear, x, ALPHA, TRIALS)
    print(f"PREDICT p_A=0.52 wrong-class rate: {result.failures}/{result.trials} = {result.rate:.4f}")
    assert result.sound


def test_predict_answers_confident_points(linear):
    assert Smooth(linear, 2, SIGMA).predict(point_at_p_a(linear, 0.9, SIGMA), 1000, 0.001) == 1
    assert Smooth(linear, 2, SIGMA).predict(point_at_p_a(linear, 0.9, SIGMA, side=-1), 1000, 0.001) == 0


def test_gaussian_noise_statistics():
    draws = Gaussian(0.3).sample((200_000,), generator=torch.Generator().manual_seed(0))
    assert float(draws.mean()) == pytest.approx(0.0, abs=0.005)
    assert float(draws.std()) == pytest.approx(0.3, rel=0.01)
