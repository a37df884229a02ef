"""Classifiers whose smoothed version is known in closed form, for testing certifiers.

For a linear binary classifier ``f(x) = 1[w.x + b > 0]`` under ``N(0, sigma^2 I)`` noise,
``w.(x + eps) + b ~ N(w.x + b, sigma^2 |w|^2)``, so the top-class probability is
``p_A = Phi(|w.x + b| / (sigma |w|))`` and the smoothed classifier equals ``f`` itself:
its decision boundary is the hyperplane and the exact robust radius of ``x`` is the
distance ``|w.x + b| / |w|``. Cohen et al.'s bound ``sigma Phi^{-1}(p_A)`` is tight here.
A certifier is *unsound* on one call when it returns the wrong class or a radius above
that distance; a valid procedure does so with probability at most ``alpha``.

A binary classifier always has ``p_B = 1 - p_A``, so it cannot tell a certifier that bounds
``p_B`` separately (T-CERTIFY, Feng et al. 2020) from CERTIFY. :class:`SlabClassifier` has
more classes, votes that spread, and a smoothed radius that is still exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

__all__ = ["LinearClassifier", "point_at_p_a", "FailureRate", "certify_failure_rate", "predict_error_rate",
           "SlabClassifier"]


class LinearClassifier(nn.Module):
    """Two-class linear model: logits ``(0, w.x + b)``, so class 1 iff ``w.x + b > 0``."""

    def __init__(self, w: torch.Tensor, b: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(w.detach().clone().float().flatten(), requires_grad=False)
        self.b = nn.Parameter(torch.tensor(float(b)), requires_grad=False)

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(start_dim=1) @ self.w + self.b

    def forward(self, x):
        z = self.margin(x)
        return torch.stack([torch.zeros_like(z), z], dim=1)

    def true_class(self, x: torch.Tensor) -> int:
        return int(self.margin(x.unsqueeze(0)).item() > 0)

    def true_radius(self, x: torch.Tensor) -> float:
        """Exact l2 distance from ``x`` to the smoothed classifier's decision boundary."""
        return abs(self.margin(x.unsqueeze(0)).item()) / float(self.w.norm())

    def true_p_a(self, x: torch.Tensor, sigma: float) -> float:
        """Exact probability of the top class under ``N(x, sigma^2 I)``."""
        return float(norm.cdf(self.true_radius(x) / sigma))


def point_at_p_a(clf: LinearClassifier, p_a: float, sigma: float, side: int = 1) -> torch.Tensor:
    """A point on the given side of the boundary whose top-class probability is exactly ``p_a``."""
    distance = sigma * norm.ppf(p_a)
    unit = clf.w / clf.w.norm()
    foot = -clf.b * clf.w / clf.w.norm() ** 2  # closest point of the hyperplane to the origin
    return (foot + (1 if side > 0 else -1) * distance * unit).detach()


@dataclass
class FailureRate:
    """Outcome of a soundness simulation: ``failures`` out of ``trials`` and the tolerance used."""

    failures: int
    trials: int
    alpha: float
    mean_radius: float
    true_radius: float

    @property
    def rate(self) -> float:
        return self.failures / self.trials

    @property
    def upper_tolerance(self) -> float:
        """alpha plus 3 binomial standard errors: the largest rate a sound procedure plausibly shows."""
        return self.alpha + 3 * np.sqrt(self.alpha * (1 - self.alpha) / self.trials)

    @property
    def sound(self) -> bool:
        return self.rate <= self.upper_tolerance

    def __str__(self) -> str:
        return (f"{self.failures}/{self.trials} failures = {self.rate:.4f} (alpha = {self.alpha}, tolerance "
                f"{self.upper_tolerance:.4f}); mean radius {self.mean_radius:.4f} vs true {self.true_radius:.4f}")


def certificate_failures(prediction, radius, true_class: int, true_radius: float) -> np.ndarray:
    """Which answers are wrong certificates: a non-abstaining answer (``-1`` abstains) for another class than
    ``true_class``, or a radius above ``true_radius``. Scalars or ``(T,)`` arrays; returns bool (array)."""
    prediction, radius = np.asarray(prediction), np.asarray(radius, dtype=float)
    return (prediction != -1) & ((prediction != true_class) | (radius > true_radius + 1e-12))


def certify_failure_rate(certify: Callable[[torch.Tensor], tuple], clf: LinearClassifier, x: torch.Tensor,
                         alpha: float, trials: int, sigma: float) -> FailureRate:
    """Run ``certify(x) -> (class, radius)`` ``trials`` times; count wrong classes and radii above the truth.

    Abstentions are never failures. The caller's ``certify`` must draw fresh noise each call.
    """
    truth_class, truth_radius = clf.true_class(x), clf.true_radius(x)
    failures, radii = 0, []
    for _ in range(trials):
        prediction, radius = tuple(certify(x))[:2]
        radii.append(radius)
        if certificate_failures(prediction, radius, truth_class, truth_radius):
            failures += 1
    return FailureRate(failures, trials, alpha, float(np.mean(radii)), truth_radius)


def predict_error_rate(predict: Callable[[torch.Tensor], int], clf: LinearClassifier, x: torch.Tensor,
                       alpha: float, trials: int) -> FailureRate:
    """Run ``predict(x)`` ``trials`` times; count answers that are neither the true class nor ABSTAIN."""
    truth_class = clf.true_class(x)
    failures = sum(int(p not in (-1, truth_class)) for p in (predict(x) for _ in range(trials)))
    return FailureRate(failures, trials, alpha, float("nan"), clf.true_radius(x))


class SlabClassifier(nn.Module):
    """A multi-class classifier whose smoothed top-two probabilities and radius are exact.

    With unit ``u`` and ``v = `` orthogonal unit vectors (the first two coordinate axes of
    ``dim``-dimensional inputs) and ``t = u.x``, ``s = v.x``: class 0 ("A") where ``t < a``,
    class 1 ("B") where ``t > b``, and in the band ``a <= t <= b`` one of ``num_middle``
    classes ``2 + (floor(s / stripe_width) mod num_middle)`` (stripes along ``v``). Under
    ``N(0, sigma^2 I)`` noise ``t`` and ``s`` are independent normals, so
    ``p_A = Phi((a - t)/sigma)``, ``p_B = Phi((t - b)/sigma)`` and each middle class gets the
    band probability times its stripes' probability (:meth:`class_probabilities`).

    Exact radius. For ``t < (a + b)/2``, ``G_A > G_B``; the band's mass relative to ``G_A``,
    ``Phi((b - t')/sigma) / Phi((a - t')/sigma) - 1``, increases with ``t'`` (``Phi`` is
    log-concave), so if ``3 Phi((b - a)/(2 sigma)) <= 2`` no middle class (even one holding the
    whole band) beats A before ``t' = (a + b)/2``, where B takes over. Hence
    ``g(x') = A`` iff ``u.x' < (a + b)/2`` and the exact radius at ``x`` is
    ``(a + b)/2 - t = sigma/2 (Phi^-1 p_A - Phi^-1 p_B)`` (eq. 2 of Feng et al., tight here),
    provided every middle class has probability at most ``p_B`` at ``x`` (checked), while
    CERTIFY can reach at most ``sigma Phi^-1(p_A) = a - t``: a gap of ``(b - a)/2``.
    """

    def __init__(self, dim: int, a: float = 0.0, b: float = 0.4, num_middle: int = 8, stripe_width: float = 0.05):
        super().__init__()
        if int(dim) != dim or dim < 2:
            raise ValueError(f"dim must be an integer >= 2 (u and v are the first two axes), got {dim!r}")
        if not float(a) < float(b):
            raise ValueError(f"the band needs a < b, got a={a!r}, b={b!r}")
        if int(num_middle) != num_middle or num_middle < 1:
            raise ValueError(f"num_middle must be an integer >= 1, got {num_middle!r}")
        if not float(stripe_width) > 0:
            raise ValueError(f"stripe_width must be > 0, got {stripe_width!r}")
        self.dim, self.a, self.b = int(dim), float(a), float(b)
        self.num_middle, self.stripe_width = int(num_middle), float(stripe_width)
        self.num_classes = self.num_middle + 2
        self.register_buffer("_anchor", torch.zeros(1))  # gives the module a device

    def coordinates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(start_dim=1)
        return flat[:, 0], flat[:, 1]

    def forward(self, x):
        t, s = self.coordinates(x)
        middle = 2 + torch.remainder(torch.floor(s / self.stripe_width), self.num_middle).long()
        cls = torch.where(t < self.a, 0, torch.where(t > self.b, 1, middle))
        return nn.functional.one_hot(cls, self.num_classes).to(x.dtype)

    def point(self, t: float, s: float = 0.0) -> torch.Tensor:
        """The input with ``u.x = t``, ``v.x = s`` and 0 elsewhere."""
        x = torch.zeros(self.dim)
        x[0], x[1] = float(t), float(s)
        return x

    def point_at_p_a(self, p_a: float, sigma: float, s: float = 0.0) -> torch.Tensor:
        """A point with smoothed top-class probability exactly ``p_a`` (``t = a - sigma Phi^-1(p_a)``)."""
        return self.point(self.a - sigma * norm.ppf(p_a), s)

    def class_probabilities(self, x: torch.Tensor, sigma: float) -> np.ndarray:
        """Exact ``(P(f(x + delta) = c))_c`` for one input ``x`` under ``N(0, sigma^2 I)``."""
        t, s = (float(c[0]) for c in self.coordinates(x.unsqueeze(0)))
        p_a = norm.cdf((self.a - t) / sigma)
        p_b = norm.cdf((t - self.b) / sigma)
        band = max(0.0, 1.0 - p_a - p_b)
        w, k = self.stripe_width, self.num_middle
        lo = int(np.floor((s - 12 * sigma) / w)) - 1
        hi = int(np.ceil((s + 12 * sigma) / w)) + 1
        j = np.arange(lo, hi)
        mass = norm.cdf(((j + 1) * w - s) / sigma) - norm.cdf((j * w - s) / sigma)
        stripes = np.bincount(np.remainder(j, k), weights=mass, minlength=k)
        probs = np.concatenate([[p_a, p_b], band * stripes / stripes.sum()])
        return probs

    def _check_exact(self, x: torch.Tensor, sigma: float) -> np.ndarray:
        probs = self.class_probabilities(x, sigma)
        t = float(self.coordinates(x.unsqueeze(0))[0][0])
        if t >= 0.5 * (self.a + self.b):
            raise ValueError(f"x must lie on class A's side, u.x < (a + b)/2 = {0.5 * (self.a + self.b)}, got {t}")
        if 3 * norm.cdf((self.b - self.a) / (2 * sigma)) > 2:
            raise ValueError(f"the band is too wide for sigma={sigma}: need 3 Phi((b - a)/(2 sigma)) <= 2")
        if probs[2:].max() > probs[1]:
            raise ValueError(f"a middle class has probability {probs[2:].max():.4g} > p_B = {probs[1]:.4g} at x; "
                             "use more middle classes or narrower stripes")
        return probs

    def true_class(self, x: torch.Tensor, sigma: float) -> int:
        self._check_exact(x, sigma)
        return 0

    def true_radius(self, x: torch.Tensor, sigma: float) -> float:
        """Exact l2 distance from ``x`` to the smoothed classifier's decision boundary ``u.x' = (a + b)/2``."""
        self._check_exact(x, sigma)
        return 0.5 * (self.a + self.b) - float(self.coordinates(x.unsqueeze(0))[0][0])
