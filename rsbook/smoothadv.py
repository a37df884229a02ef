"""SmoothAdv's control experiment and its teaching model (Salman et al., NeurIPS 2019).

* :class:`VanillaAdversarial` -- "vanilla adversarial training" of the *base* classifier
  (Sec. 2.3 and App. C.1 of the paper): l2 PGD on ``f`` itself (:class:`rsbook.attacks.BasePGD`,
  no noise in the attack), then Gaussian augmentation at the attacked point. The paper
  reports it certifies noticeably less than SmoothAdv because its adversary is not the
  one the certificate faces. Registered as objective ``"vanilla_adv"``.
* :class:`ProbitMixture` -- a two-class soft classifier whose smoothed soft classifier
  ``G`` (eq. 3) and its gradient are known in closed form, so the estimators of the
  SmoothAdv gradient (eqs. 4, 6, 7) can be compared with the truth
  (:func:`direction_cosines`).

Appendix A of the paper (its statement; the proof is not reproduced here): for every class ``c`` the map ``x -> sigma * Phi^{-1}(G(x)_c)`` is
1-Lipschitz, whatever ``F`` is. :func:`lipschitz_ratios` measures it on the mixture.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import norm
from torch import nn

from rsbook._checks import check_positive_int
from rsbook.noise import make_noise
from rsbook.train import Objective, ObjectiveOutput, noisy_copies, register_objective

__all__ = ["VanillaAdversarial", "ProbitMixture", "direction_cosines", "draws_for_cosine", "lipschitz_ratios"]


@register_objective("vanilla_adv")
class VanillaAdversarial(Objective):
    """Adversarial training of the base classifier ``f``, then Gaussian augmentation (the paper's control).

    Per minibatch: ``x_hat`` = ``steps`` steps of l2 PGD on the cross-entropy of ``f`` at the
    clean ``x`` (radius ``epsilon``, no noise: the attack ignores smoothing), then the
    cross-entropy of ``f`` on ``x_hat + delta_i`` for ``m = num_noise`` Gaussian draws.
    It differs from :class:`rsbook.train.SmoothAdv` only in the attacked function (``f``
    instead of the smoothed soft classifier ``G``). The details are in the paper's App. C.1,
    which is not used here, so the noise after the attack is our reading: without it the smoothed classifier of
    an ``f`` never trained under noise abstains almost everywhere. ``epsilon = 0`` is
    Gaussian augmentation. ``warmup_epochs`` as in SmoothAdv.
    """

    name = "vanilla_adv"

    @classmethod
    def forwarded_options(cls, options):
        from rsbook.attacks import attack_options

        return attack_options("base_pgd")

    def __init__(self, sigma, num_noise: int = 1, epsilon: float = 0.5, steps: int = 1, warmup_epochs: int = 0,
                 **attack_kwargs):
        from rsbook.attacks import BasePGD

        self.noise = make_noise(sigma)
        self.num_noise = check_positive_int(num_noise, "num_noise")
        self.attack = BasePGD(epsilon, steps, **attack_kwargs)
        self.max_epsilon = self.attack.epsilon
        if isinstance(warmup_epochs, bool) or int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = int(warmup_epochs)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        scale = min(1.0, (epoch + 1) / self.warmup_epochs) if self.warmup_epochs else 1.0
        self.attack.epsilon = self.max_epsilon * scale

    def __call__(self, model, x, y):
        x_hat = self.attack(model, x, y).x_adv if self.attack.epsilon > 0 else x
        inputs, targets, _ = noisy_copies(x_hat, y, self.noise, self.num_noise)
        logits = model(inputs)
        return ObjectiveOutput(self.cross_entropy(logits, targets), logits, targets)


class ProbitMixture(nn.Module):
    """Two classes with ``softmax(logits)_1 = (Phi(a_1.x + b_1) + Phi(a_2.x + b_2)) / 2`` (float64).

    Under ``N(0, sigma^2 I)`` noise ``a.(x + delta) + b ~ N(a.x + b, sigma^2 |a|^2)`` and
    ``E Phi(Z) = Phi(mu / sqrt(1 + s^2))`` for ``Z ~ N(mu, s^2)``, so
    ``G(x)_1 = sum_k Phi(u_k / s_k) / 2`` and ``grad G(x)_1 = sum_k phi(u_k / s_k) a_k / (2 s_k)``
    with ``u_k = a_k.x + b_k``, ``s_k = sqrt(1 + sigma^2 |a_k|^2)``. With one shallow and
    one steep, mostly-off component, averaging the loss (eq. 4) and averaging the
    probability (eq. 3/6) weight the noise draws very differently.
    """

    def __init__(self, a1, a2, b1: float, b2: float):
        super().__init__()
        self.register_buffer("a", torch.stack([torch.as_tensor(a1), torch.as_tensor(a2)]).double())
        self.register_buffer("b", torch.tensor([b1, b2], dtype=torch.float64))

    @classmethod
    def default(cls, d: int = 4) -> "ProbitMixture":
        """The mixture of the chapter and the tests: a shallow and a steep component, in ``d >= 4`` dimensions.

        Both components live in the first three coordinates; the others only add noise dimensions,
        which is what separates the estimators of the ascent direction as ``d`` grows."""
        d = check_positive_int(d, "d")
        if d < 4:
            raise ValueError(f"d must be >= 4 (the components use the first three coordinates), got {d}")
        a1, a2 = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        a1[0], a2[1], a2[2] = 1.0, 6.0, 1.0
        return cls(a1, a2, -1.5, -3.25).eval()

    def forward(self, x):
        p = 0.5 * torch.special.ndtr(x.double() @ self.a.T + self.b).sum(1)
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)

    def _terms(self, x, sigma):
        a, b = self.a.numpy(), self.b.numpy()
        s = np.sqrt(1 + sigma ** 2 * (a ** 2).sum(1))
        return a, (np.asarray(x, dtype=float) @ a.T + b) / s, s

    def exact_g(self, x: np.ndarray, sigma: float):
        """``G(x)_1`` exactly; ``x`` is ``(d,)`` or ``(N, d)``."""
        _, z, _ = self._terms(x, sigma)
        return 0.5 * norm.cdf(z).sum(-1)

    def exact_grad_g(self, x: np.ndarray, sigma: float) -> np.ndarray:
        """``grad G(x)_1`` exactly at one point ``x`` of shape ``(d,)``."""
        a, z, s = self._terms(x, sigma)
        return 0.5 * ((norm.pdf(z) / s)[:, None] * a).sum(0)


def direction_cosines(model: ProbitMixture, x0: np.ndarray, sigma: float, ms: Sequence[int],
                      estimator: str = "smoothadv", reps: int = 64, seed: int = 0) -> dict[int, float]:
    """Median cosine between the estimated ascent direction and the true ``grad -log G_1`` (eq. 5), per ``m``.

    ``reps`` independent sets of ``m`` draws per ``m``; ``estimator`` as in
    :func:`rsbook.attacks.ascent_direction` (``"smoothadv"`` = eq. 6, ``"expected_loss"`` = eq. 4,
    ``"stein"`` = eq. 7). Eq. (6) is biased for finite ``m`` but its direction converges to
    the truth; eq. (4) converges to the gradient of another function.
    """
    from rsbook.attacks import ascent_direction

    truth = torch.as_tensor(-model.exact_grad_g(x0, sigma) / model.exact_g(x0, sigma))
    x = torch.as_tensor(np.asarray(x0, dtype=float)).repeat(reps, 1)
    y = torch.ones(reps, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for m in ms:
        draws = torch.randn(reps, int(m), x.shape[1], generator=gen, dtype=torch.float64) * sigma
        g, _ = ascent_direction(model, x, y, draws, estimator, sigma=sigma)
        cos = (g @ truth) / (g.norm(dim=1) * truth.norm()).clamp_min(1e-300)
        out[int(m)] = float(cos.median())
    return out


def draws_for_cosine(model: ProbitMixture, x0: np.ndarray, sigma: float, target: float, estimator: str,
                     ms: Sequence[int], reps: int = 64, seed: int = 0) -> int | None:
    """The smallest ``m`` in ``ms`` whose median cosine (:func:`direction_cosines`) reaches ``target``; None if none."""
    cosines = direction_cosines(model, x0, sigma, sorted(int(m) for m in ms), estimator, reps=reps, seed=seed)
    return next((m for m, c in cosines.items() if c >= target), None)


def lipschitz_ratios(model: ProbitMixture, sigma: float, pairs: int = 10_000, scale: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """``|sigma Phi^{-1}(G(x)_1) - sigma Phi^{-1}(G(x')_1)| / |x - x'|`` on random pairs (App. A: all <= 1)."""
    rng = np.random.default_rng(seed)
    d = model.a.shape[1]
    x = rng.normal(scale=scale, size=(pairs, d))
    x2 = x + rng.normal(scale=scale, size=(pairs, d)) * rng.random((pairs, 1))
    gx, gx2 = model.exact_g(x, sigma), model.exact_g(x2, sigma)
    keep = (gx > 1e-12) & (gx < 1 - 1e-12) & (gx2 > 1e-12) & (gx2 < 1 - 1e-12)
    num = sigma * np.abs(ndtri(gx[keep]) - ndtri(gx2[keep]))
    return num / np.linalg.norm(x - x2, axis=1)[keep]
