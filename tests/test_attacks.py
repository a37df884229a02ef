"""Tests of rsbook.attacks against known truth: feasibility, determinism, closed-form gradients.

The closed-form model is a two-component probit mixture, ``F(x)_1 = (Phi(a1.x + b1) +
Phi(a2.x + b2)) / 2``. Under ``N(0, sigma^2 I)`` noise ``a.(x + delta) + b ~ N(a.x + b,
sigma^2 |a|^2)`` and ``E Phi(Z) = Phi(mu / sqrt(1 + s^2))`` for ``Z ~ N(mu, s^2)``, so the
smoothed soft classifier and its gradient are exact:
``G(x)_1 = sum_k Phi(u_k / s_k) / 2``, ``grad G(x)_1 = sum_k phi(u_k / s_k) a_k / (2 s_k)``
with ``u_k = a_k.x + b_k``, ``s_k = sqrt(1 + sigma^2 |a_k|^2)``. Unlike a linear model, the
gradient direction of ``-log G`` mixes ``a1`` and ``a2`` with weights that a finite-sample
estimate gets wrong, so convergence of the direction is a real property to check.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rsbook.attacks import (ATTACKS, ascent_direction, attack_loss, empirical_robust_accuracy, l2_to_linf_radius,
                            linf_to_l2_radius, make_attack, smoothed_soft_probability)
from rsbook.data import get_dataset
from rsbook.smoothadv import ProbitMixture, direction_cosines, lipschitz_ratios
from rsbook.models import get_model
from rsbook.train import GaussianAugmentation, fit
from rsbook.smooth import Smooth
from rsbook.utils import seed_everything


# ---------------------------------------------------------------- closed-form model
# rsbook.smoothadv.ProbitMixture: G and grad G in closed form (see its docstring)


SIGMA = 0.5
D = 4


@pytest.fixture(scope="module")
def mixture():
    # a shallow component and a steep, mostly-off one: the regime where averaging the loss
    # (eq. 4) and averaging the probability (eq. 3) weight the noise draws very differently
    return ProbitMixture.default()


def _cosine(u: torch.Tensor, v: np.ndarray) -> np.ndarray:
    v = torch.as_tensor(v, dtype=u.dtype)
    return (u @ v / (u.norm(dim=1) * v.norm())).numpy()


def test_mixture_closed_form_matches_monte_carlo(mixture):
    # the ground truth itself, checked once against brute force
    x = np.zeros(D)
    draws = torch.randn(200_000, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * SIGMA
    p = torch.softmax(mixture(draws), dim=1)[:, 1]
    assert abs(p.mean().item() - mixture.exact_g(x, SIGMA)) < 4 * p.std().item() / math.sqrt(len(p))


def test_plugin_gradient_direction_converges(mixture):
    """Eq. (6) is biased for finite m but its direction converges to the true grad of -log G (eq. 5)."""
    x0 = np.zeros(D)
    truth = -mixture.exact_grad_g(x0, SIGMA) / mixture.exact_g(x0, SIGMA)  # grad of -log G_1
    reps = 64
    x = torch.zeros(reps, D, dtype=torch.float64)
    y = torch.ones(reps, dtype=torch.long)
    gen = torch.Generator().manual_seed(1)
    medians = {}
    for m in (1, 16, 256, 4096):
        draws = torch.randn(reps, m, D, generator=gen, dtype=torch.float64) * SIGMA
        g, _ = ascent_direction(mixture, x, y, draws, "smoothadv")
        medians[m] = float(np.median(_cosine(g, truth)))
    print(f"\nplug-in (eq. 6) median cosine to the true gradient by m: {medians}")
    assert medians[1] < 0.95  # one draw really is a poor direction: the check below is not vacuous
    assert medians[1] < medians[16] < medians[256] <= medians[4096] + 1e-4
    assert medians[4096] > 0.995
    # negative control: eq. (4) converges too, but to the gradient of a different function
    draws = torch.randn(reps, 4096, D, generator=gen, dtype=torch.float64) * SIGMA
    g4, _ = ascent_direction(mixture, x, y, draws, "expected_loss")
    wrong = float(np.median(_cosine(g4, truth)))
    print(f"expected-loss (eq. 4) median cosine at m=4096: {wrong:.4f}")
    assert wrong < medians[4096] - 0.03
    # the chapter's helper computes the same statistic
    helper = direction_cosines(mixture, x0, SIGMA, [1, 4096], "smoothadv", seed=5)
    helper4 = direction_cosines(mixture, x0, SIGMA, [4096], "expected_loss", seed=5)
    assert helper[1] < 0.95 < 0.995 < helper[4096] and helper4[4096] < helper[4096] - 0.03


def test_sigma_probit_of_smoothed_probability_is_one_lipschitz():
    """Salman et al., App. A: x -> sigma Phi^-1(G(x)_c) is 1-Lipschitz, tight for a steep (hard) classifier."""
    assert lipschitz_ratios(ProbitMixture.default(), SIGMA, pairs=5000).max() <= 1 + 1e-9
    a = torch.tensor([40.0, 0.0, 0.0, 0.0])
    steep = ProbitMixture(a, a, 0.0, 0.0)  # G = Phi(a.x / sqrt(1 + sigma^2 |a|^2)): Lipschitz constant ~ 1
    ratios = lipschitz_ratios(steep, SIGMA, pairs=5000, scale=0.05)
    print(f"\nsteep probit: largest ratio {ratios.max():.5f} over {len(ratios)} pairs")
    assert ratios.max() <= 1 + 1e-9 and ratios.max() > 0.99


def test_stein_estimator_is_unbiased(mixture):
    """Eq. (7): the mean of the Stein estimates equals -grad G_1 within sampling error."""
    x0 = np.array([0.1, -0.2, 0.3, 0.0])
    truth = -mixture.exact_grad_g(x0, SIGMA)
    reps, m = 2000, 20
    x = torch.tensor(x0).repeat(reps, 1)
    y = torch.ones(reps, dtype=torch.long)
    draws = torch.randn(reps, m, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * SIGMA
    g, _ = ascent_direction(mixture, x, y, draws, "stein", sigma=SIGMA)
    est = g.numpy()
    z = (est.mean(0) - truth) / (est.std(0, ddof=1) / math.sqrt(reps))
    print(f"\nStein estimator z-scores per coordinate: {np.round(z, 2)}")
    assert np.all(np.abs(z) < 4.5)
    # negative control: the same draws divided by the wrong variance are detectably biased
    g_bad, _ = ascent_direction(mixture, x, y, draws, "stein", sigma=2 * SIGMA)
    bad = g_bad.numpy()
    z_bad = (bad.mean(0) - truth) / (bad.std(0, ddof=1) / math.sqrt(reps))
    assert np.max(np.abs(z_bad)) > 8


def test_plugin_loss_matches_definition(mixture):
    # eq. (6) computed stably must equal -log of the plain average of F_y
    x = torch.tensor([[0.2, 0.1, -0.3, 0.5]], dtype=torch.float64)
    y = torch.tensor([1])
    draws = torch.randn(1, 50, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * SIGMA
    loss, _ = attack_loss(mixture, x, y, draws, "smoothadv")
    direct = -torch.log(torch.softmax(mixture(x + draws[0]), dim=1)[:, 1].mean())
    assert torch.allclose(loss[0], direct)
    assert torch.allclose(smoothed_soft_probability(mixture, x, y, draws)[0], torch.exp(-direct))


# ---------------------------------------------------------------- feasibility & determinism
@pytest.fixture(scope="module")
def untrained_cnn():
    torch.manual_seed(0)
    return get_model("digits_cnn", "digits").eval()


def _inputs(b=12):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(b, 1, 8, 8, generator=gen)
    x[: b // 3] = (x[: b // 3] > 0.5).float()  # pixels on the box's faces make clipping bite
    y = torch.randint(0, 10, (b,), generator=gen)
    return x, y


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_stay_in_ball_and_box(untrained_cnn, name):
    x, y = _inputs()
    for eps in (0.05, 0.3, 1.5, 6.0):
        attack = make_attack(name, eps, steps=4, num_noise=3, noise=0.25)
        x_adv, draws = attack(untrained_cnn, x, y, generator=torch.Generator().manual_seed(5))
        dist = (x_adv - x).flatten(1).norm(dim=1)
        assert torch.all(dist <= eps * (1 + 1e-5) + 1e-6), (name, eps, dist.max().item())
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert x_adv.shape == x.shape
        assert (dist > 0.25 * min(eps, 1.0)).any()  # it did move: the checks above are not vacuous
        if name != "base_pgd":
            assert draws.shape == (12, 3, 1, 8, 8)
    # without the box the ball constraint still holds, and iterates leave [0, 1]
    attack = make_attack(name, 6.0, steps=4, num_noise=3, noise=0.25, clip=None)
    x_adv, _ = attack(untrained_cnn, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.all((x_adv - x).flatten(1).norm(dim=1) <= 6.0 * (1 + 1e-5))
    assert x_adv.min() < 0 or x_adv.max() > 1


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_are_deterministic_given_a_seed(untrained_cnn, name):
    x, y = _inputs()
    attack = make_attack(name, 0.7, steps=3, num_noise=4, noise=0.5)
    a1, d1 = attack(untrained_cnn, x, y, generator=torch.Generator().manual_seed(11))
    a2, d2 = attack(untrained_cnn, x, y, generator=torch.Generator().manual_seed(11))
    a3, d3 = attack(untrained_cnn, x, y, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a1, a2)
    if name == "base_pgd":
        assert d1 is None
    else:
        assert torch.equal(d1, d2) and not torch.equal(d1, d3)
        assert not torch.equal(a1, a3)  # the answer does depend on the draws
        # passing the returned draws back reproduces the attack exactly (training relies on it)
        a4, d4 = attack(untrained_cnn, x, y, draws=d1)
        assert torch.equal(a4, a1) and d4 is d1


def test_attack_restores_training_mode_and_eps_zero_is_identity(untrained_cnn):
    x, y = _inputs()
    model = get_model("digits_cnn", "digits").train()
    attack = make_attack("pgd", 0.5, 2, 2, 0.5)
    attack(model, x, y)
    assert model.training
    x_adv, draws = make_attack("ddn", 0.0, 2, 2, 0.5)(untrained_cnn, x, y)
    assert torch.equal(x_adv, x) and draws.shape == (12, 2, 1, 8, 8)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="unknown attack 'fgsm'; valid choices: .*smoothadv_pgd"):
        make_attack("fgsm", 0.5, 1, 1, 0.5)
    with pytest.raises(ValueError, match="epsilon"):
        make_attack("pgd", -0.1, 1, 1, 0.5)
    with pytest.raises(ValueError, match="steps"):
        make_attack("pgd", 0.1, 0, 1, 0.5)
    with pytest.raises(ValueError, match="num_noise"):
        make_attack("ddn", 0.1, 1, 0, 0.5)
    with pytest.raises(ValueError, match="needs noise"):
        make_attack("pgd", 0.1, 1, 1, None)
    with pytest.raises(ValueError, match="gamma"):
        make_attack("ddn", 0.1, 1, 1, 0.5, gamma=1.5)
    with pytest.raises(ValueError, match="unknown estimator"):
        ascent_direction(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), None, "svd")


def test_l2_linf_conversion():
    # Salman et al., Sec. 4.1: 2/255 in linf on CIFAR-10 needs l2 radius 2 sqrt(3072) / 255 = 0.435
    assert linf_to_l2_radius(2 / 255, (3, 32, 32)) == pytest.approx(0.435, abs=5e-4)
    assert l2_to_linf_radius(2 * math.sqrt(3072) / 255, 3072) == pytest.approx(2 / 255)
    # the linf ball of radius r / sqrt(d) lies inside the l2 ball of radius r: its corner is on the sphere
    r, d = 0.7, 64
    corner = np.full(d, l2_to_linf_radius(r, d))
    assert np.linalg.norm(corner) == pytest.approx(r)


# ---------------------------------------------------------------- on a trained model
@pytest.fixture(scope="session")
def digits_gaussian_05():
    """A digits CNN trained with Gaussian augmentation at sigma = 0.5 (seeded, ~10 s on 2 cores)."""
    seed_everything(0)
    model = get_model("digits_cnn", "digits")
    fit(model, get_dataset("digits", "train"), GaussianAugmentation(0.5), 10, batch_size=64, lr=0.1,
        schedule="cosine", seed=0, progress=False)
    return model.eval()


def test_attack_lowers_smoothed_probability_more_than_random(digits_gaussian_05):
    test = get_dataset("digits", "test")
    x, y = (t[:60] for t in test.tensors)
    eps = 0.5
    attack = make_attack("pgd", eps, steps=10, num_noise=16, noise=0.5)
    x_adv, _ = attack(digits_gaussian_05, x, y, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(x.shape, generator=gen)
    x_rand = torch.clamp(x + eps * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1), 0, 1)
    # common fresh draws (not the attacker's) for all three estimates of G_y
    fresh = torch.randn(60, 256, 1, 8, 8, generator=gen) * 0.5
    p_clean, p_adv, p_rand = (smoothed_soft_probability(digits_gaussian_05, z, y, fresh) for z in (x, x_adv, x_rand))
    print(f"\nmean G_y: clean {p_clean.mean():.3f}, random direction {p_rand.mean():.3f}, "
          f"SmoothAdv-PGD {p_adv.mean():.3f}; attack lower on {(p_adv < p_rand).float().mean():.0%} of examples")
    assert p_adv.mean() < p_rand.mean() - 0.1
    assert (p_adv < p_rand).float().mean() > 0.9
    assert abs(p_rand.mean() - p_clean.mean()) < 0.1  # random directions of this size barely matter


def test_empirical_robust_accuracy_is_reproducible_and_monotone_in_epsilon(digits_gaussian_05):
    from rsbook import Smooth

    test = get_dataset("digits", "test")
    smooth = Smooth(digits_gaussian_05, 10, 0.5)
    attack = make_attack("pgd", 0.0, 5, 8, 0.5)
    kwargs = dict(n=200, alpha=0.001, indices=range(20), seed=3, progress=False)
    f1 = empirical_robust_accuracy(smooth, test, attack, [0.0, 0.5, 1.5], **kwargs)
    f2 = empirical_robust_accuracy(smooth, test, attack, [0.0, 0.5, 1.5], **kwargs)
    assert f1.equals(f2)
    assert attack.epsilon == 0.0  # restored
    acc = f1.groupby("epsilon")["correct"].mean()
    print(f"\nempirical accuracy by epsilon: {acc.to_dict()}")
    assert acc[0.0] >= acc[0.5] >= acc[1.5] and acc[1.5] < acc[0.0]
    assert (f1["perturbation"] <= f1["epsilon"] + 1e-5).all()


def test_empirical_robust_accuracy_log_resumes_after_a_crash(tmp_path, monkeypatch):
    """With out=..., an interrupted run (plus a half-written row) resumes to exactly the uninterrupted result."""
    from rsbook.attacks import SmoothAdvPGD

    torch.manual_seed(0)
    model = get_model("toy_mlp", "toy2d").eval()
    data = get_dataset("toy2d", "test")
    kwargs = dict(epsilons=[0.0, 0.1], n=50, alpha=0.01, indices=range(7), batch_size=3, progress=False)

    def attack():
        return SmoothAdvPGD(0.1, steps=2, num_noise=4, noise=0.05)

    clean = empirical_robust_accuracy(Smooth(model, 3, 0.05), data, attack(), **kwargs)
    path = tmp_path / "empirical.tsv"
    smooth = Smooth(model, 3, 0.05)
    calls = {"n": 0}
    original = Smooth.predict

    def crashing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(Smooth, "predict", crashing)
    with pytest.raises(KeyboardInterrupt):
        empirical_robust_accuracy(smooth, data, attack(), out=path, **kwargs)
    monkeypatch.setattr(Smooth, "predict", original)
    assert len(path.read_text().splitlines()) == 1 + 9  # header + every row finished before the crash
    with open(path, "a") as fh:
        fh.write("6\t1\t0.1\t1")  # a half-written row
    resumed = empirical_robust_accuracy(Smooth(model, 3, 0.05), data, attack(), out=path, **kwargs)
    pd.testing.assert_frame_equal(resumed, clean, check_dtype=False)
    assert len(path.read_text().splitlines()) == 1 + 14


# ---------------------------------------------------------------- DDN (issue 8) and chunked draws
class _Halfspace(nn.Module):
    """Class 1 iff ``u.x > dist`` for a unit ``u``: the l2 distance from 0 to class 1 is exactly ``dist``."""

    def __init__(self, d=4, dist=1.8, steep=20.0):
        super().__init__()
        u = torch.zeros(d, dtype=torch.float64)
        u[0], u[1] = 0.6, 0.8
        self.register_buffer("u", u)
        self.dist, self.steep = dist, steep

    def forward(self, x):
        z = self.steep * (x.double().flatten(1) @ self.u - self.dist)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _ddn_on_halfspace(epsilon, steps, dist, **kwargs):
    model = _Halfspace(dist=dist).eval()
    x = torch.zeros(3, 4, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    attack = make_attack("ddn", epsilon, steps, num_noise=4, noise=0.01, clip=None, **kwargs)
    x_adv, _ = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    return x_adv.norm(dim=1), (x_adv.double() @ model.u > dist)


def test_ddn_reaches_a_large_epsilon_in_two_steps():
    """Issue 8: with epsilon = 2 and T = 2 the old DDN (r_0 = 1) never left the ball of radius ~1.10."""
    norms, adversarial = _ddn_on_halfspace(2.0, 2, dist=1.8)
    print(f"\nDDN, epsilon = 2, T = 2, boundary at 1.8: returned norms {norms.tolist()}")
    assert (norms > 1.5).all() and adversarial.all()
    # an explicit r_0 = 1 reproduces the old behaviour: the negative control of the check above
    norms_old, adv_old = _ddn_on_halfspace(2.0, 2, dist=1.8, init_norm=1.0)
    assert (norms_old < 1.2).all() and not adv_old.any()


def test_ddn_returns_the_smallest_adversarial_point_it_found():
    dist = 1.3
    norms, adversarial = _ddn_on_halfspace(3.0, 20, dist=dist)
    print(f"\nDDN, epsilon = 3, T = 20, boundary at {dist}: returned norms {norms.tolist()}")
    # adversarial, and within a few budget updates of the minimal norm (the budget moves by 5% a step)
    assert adversarial.all() and (norms >= dist).all() and (norms <= dist * 1.05 ** 2).all()
    # no adversarial point inside the ball: the last iterate (ours) or no perturbation (the authors')
    last, adv_last = _ddn_on_halfspace(1.0, 5, dist=dist)
    clean, _ = _ddn_on_halfspace(1.0, 5, dist=dist, if_none_found="clean")
    assert not adv_last.any() and torch.allclose(last, torch.ones(3, dtype=torch.float64))
    assert (clean == 0).all()


class _FlippedDDN(ATTACKS["smoothadv_ddn"]):
    """Negative control: DDN descending instead of ascending."""

    def _direction(self, model, x, y, draws):
        g, prediction = super()._direction(model, x, y, draws)
        return -g, prediction


def test_ddn_increases_the_attack_loss_and_a_sign_flip_is_caught(untrained_cnn):
    x, _ = _inputs(24)
    gen = torch.Generator().manual_seed(21)
    attack = make_attack("ddn", 1.0, 6, num_noise=4, noise=0.25)
    draws = attack.draw(x, gen)
    with torch.no_grad():
        # label = the smoothed prediction, so the clean point is not yet adversarial
        y = attack_loss(untrained_cnn, x, torch.zeros(24, dtype=torch.long), draws)[1]
        before = attack_loss(untrained_cnn, x, y, draws)[0]

    def fraction_increased(att):
        x_adv, _ = att(untrained_cnn, x, y, draws=draws)
        with torch.no_grad():
            return float((attack_loss(untrained_cnn, x_adv, y, draws)[0] > before).float().mean())

    ascent = fraction_increased(attack)
    descent = fraction_increased(_FlippedDDN(1.0, 6, num_noise=4, noise=0.25))
    print(f"\nDDN raises the eq. (6) loss on {ascent:.0%} of examples; with the sign flipped on {descent:.0%}")
    assert ascent >= 0.9
    assert descent < 0.5


@pytest.mark.parametrize("name", ["smoothadv_pgd", "expected_loss_pgd", "stein_pgd", "smoothadv_ddn"])
def test_chunked_draws_give_the_same_iterate_with_bounded_memory(untrained_cnn, name):
    """Issue 8: m draws in chunks (gradients accumulated) = all at once; no forward pass exceeds B * chunk."""
    x, y = _inputs(6)
    whole = make_attack(name, 0.8, 3, num_noise=7, noise=0.5)
    chunked = make_attack(name, 0.8, 3, num_noise=7, noise=0.5, chunk=3)  # chunks of 3, 3, 1
    draws = whole.draw(x, torch.Generator().manual_seed(8))
    sizes = []
    handle = untrained_cnn.register_forward_pre_hook(lambda mod, inp: sizes.append(inp[0].shape[0]))
    try:
        a, _ = whole(untrained_cnn, x, y, draws=draws)
        n_whole = len(sizes)
        b, _ = chunked(untrained_cnn, x, y, draws=draws)
    finally:
        handle.remove()
    assert max(sizes[:n_whole]) == 6 * 7 and max(sizes[n_whole:]) <= 6 * 3
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    assert not torch.equal(a, x)


def test_chunked_plugin_gradient_is_exact_even_for_tiny_probabilities(mixture):
    """The running-max combination of eq. (6) over chunks: equal to one pass, finite where F_y ~ 1e-11."""
    gen = torch.Generator().manual_seed(9)
    for x0 in (torch.zeros(5, D, dtype=torch.float64), torch.full((5, D), -5.0, dtype=torch.float64)):
        y = torch.ones(5, dtype=torch.long)
        draws = torch.randn(5, 10, D, generator=gen, dtype=torch.float64) * SIGMA
        g1, p1 = ascent_direction(mixture, x0, y, draws, "smoothadv")
        g2, p2 = ascent_direction(mixture, x0, y, draws, "smoothadv", chunk=3)
        assert torch.isfinite(g2).all() and torch.allclose(g1, g2, rtol=1e-9, atol=0) and torch.equal(p1, p2)
