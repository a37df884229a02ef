"""Classifiers whose smoothed version is known in closed form, for testing certifiers.

For a linear binary classifier ``f(x) = 1[w.x + b > 0]`` under ``N(0, sigma^2 I)`` noise,
``w.(x + eps) + b ~ N(w.x + b, sigma^2 |w|^2)``, so the top-class probability is
``p_A = Phi(|w.x + b| / (sigma |w|))`` and the smoothed classifier equals ``f`` itself:
its decision boundary is the hyperplane and the exact robust radius of ``x`` is the
distance ``|w.x + b| / |w|``. Cohen et al.'s bound ``sigma Phi^{-1}(p_A)`` is tight here.
A certifier is *unsound* on one call when it returns the wrong class or a radius above
that distance; a valid procedure does so with probability at most ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

__all__ = ["LinearClassifier", "point_at_p_a", "FailureRate", "certify_failure_rate", "predict_error_rate"]


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
        if prediction != -1 and (prediction != truth_class or radius > truth_radius):
            failures += 1
    return FailureRate(failures, trials, alpha, float(np.mean(radii)), truth_radius)


def predict_error_rate(predict: Callable[[torch.Tensor], int], clf: LinearClassifier, x: torch.Tensor,
                       alpha: float, trials: int) -> FailureRate:
    """Run ``predict(x)`` ``trials`` times; count answers that are neither the true class nor ABSTAIN."""
    truth_class = clf.true_class(x)
    failures = sum(int(p not in (-1, truth_class)) for p in (predict(x) for _ in range(trials)))
    return FailureRate(failures, trials, alpha, float("nan"), clf.true_radius(x))
