"""Smoothing distributions.

A noise object knows two things: how to draw a batch of perturbations (on a given
device, from a given ``torch.Generator``, so the sampler stays reproducible) and how to
turn a lower confidence bound on the top-class probability into a certified radius.
The sampler in :mod:`rsbook.smooth` only ever calls :meth:`Noise.sample`, so a new
family (e.g. the non-Gaussian ones of Zhang et al., 2020) is one new subclass here.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from scipy.stats import norm as _normal

from rsbook._checks import check_positive_float

__all__ = ["Noise", "Gaussian", "make_noise"]


class Noise:
    """Base class of smoothing distributions (additive, zero-centred)."""

    #: the norm in which :meth:`certified_radius` is measured
    norm: str = "l2"

    def sample(self, shape: Sequence[int], *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A tensor of the given shape filled with i.i.d. draws of the noise."""
        raise NotImplementedError

    def certified_radius(self, p_lower: float) -> float:
        """Radius certified when the top class has probability at least ``p_lower`` > 1/2."""
        raise NotImplementedError


class Gaussian(Noise):
    """Isotropic Gaussian noise ``N(0, sigma^2 I)``.

    Its certificate is Cohen et al. (2019), Theorem 1 with ``p_B = 1 - p_A``: the smoothed
    classifier is constant within ``l2`` radius ``sigma * Phi^{-1}(p_A)``.
    """

    norm = "l2"

    def __init__(self, sigma: float):
        self.sigma = check_positive_float(sigma, "sigma")

    def sample(self, shape, *, generator=None, device=None, dtype=torch.float32):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype) * self.sigma

    def certified_radius(self, p_lower: float) -> float:
        if p_lower <= 0.5:
            return 0.0
        if p_lower >= 1.0:
            return math.inf
        return float(self.sigma * _normal.ppf(p_lower))

    def __repr__(self) -> str:
        return f"Gaussian(sigma={self.sigma:g})"


def make_noise(noise: Noise | float) -> Noise:
    """Accept a :class:`Noise` or a bare float, which means Gaussian with that sigma."""
    if isinstance(noise, Noise):
        return noise
    if isinstance(noise, (int, float)) and not isinstance(noise, bool):
        return Gaussian(noise)
    raise TypeError(f"noise must be a Noise object or a float sigma, got {noise!r}")
