"""Smoothing distributions.

A noise object knows two things: how to draw a batch of perturbations (on a given
device, from a given ``torch.Generator``, so the sampler stays reproducible) and how to
turn a lower confidence bound on the top-class probability into a certified radius.
The sampler in :mod:`rsbook.smooth` only ever calls :meth:`Noise.sample`, so a new
family is one new subclass here: :class:`NormPowerGaussian` is the non-Gaussian family of
Zhang et al. (2020, "Filling the soap bubbles"), whose certificates live in
:mod:`rsbook.non_gaussian`. :data:`NOISE_FAMILIES` names the families for the command line
and the experiment helper (:func:`make_noise_family`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from scipy.stats import norm as _normal

from rsbook._checks import check_choice, check_positive_float

__all__ = ["Noise", "Gaussian", "make_noise", "NormPowerGaussian", "matched_sigma", "NOISE_FAMILIES",
           "make_noise_family", "standard_gamma", "linf_max_law"]


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


# --------------------------------------------------------------------------- non-Gaussian families
def matched_sigma(sigma0: float, k: float, dim: int) -> float:
    """The scale of :class:`NormPowerGaussian` that Zhang et al. (2020, Sec. 5) pair with a ``N(0, sigma0^2 I)`` model.

    ``sigma = sigma0 * sqrt((d - 1) / (d - 1 - k))``. The paper says this matches the
    *expectation* of ``||z||_2``; it matches the *mode*: ``||z||/sigma ~ chi_{d-k}`` has its
    mode at ``sqrt(d - k - 1)``, and ``sigma sqrt(d - k - 1) = sigma0 sqrt(d - 1)``, the mode of
    the Gaussian's norm. (The means differ by a factor that tends to 1 as ``d - k`` grows.)
    """
    sigma0 = check_positive_float(sigma0, "sigma0")
    k, dim = _check_k_dim(k, dim)
    if not k < dim - 1:
        raise ValueError(f"matched_sigma needs k < dim - 1 (the mode of chi_(d-k) is 0 otherwise), got k={k!r}, dim={dim}")
    return sigma0 * math.sqrt((dim - 1) / (dim - 1 - k))


def _check_k_dim(k, dim) -> tuple[float, int]:
    if isinstance(dim, bool) or int(dim) != dim or int(dim) < 2:
        raise ValueError(f"dim must be an integer >= 2 (the number of input coordinates), got {dim!r}")
    try:
        k = float(k)
    except (TypeError, ValueError):
        raise ValueError(f"k must be a number with 0 <= k < dim, got {k!r}") from None
    if not (0.0 <= k < int(dim)):
        raise ValueError(f"k must satisfy 0 <= k < dim = {int(dim)} (the density must be integrable), got {k!r}")
    return k, int(dim)


def _per_example(shape: Sequence[int], dim: int) -> int:
    """Number of examples in a sample of ``shape`` whose trailing dimensions hold ``dim`` coordinates."""
    shape = tuple(int(s) for s in shape)
    for j in range(len(shape)):
        if math.prod(shape[j:]) == dim:
            return math.prod(shape[:j])
    raise ValueError(f"noise of dim={dim} cannot fill a sample of shape {shape}: no trailing dimensions hold "
                     f"exactly {dim} coordinates (per-example size must equal dim)")


def standard_gamma(shape_parameter: float, n: int, *, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` exact draws of ``Gamma(shape_parameter, 1)`` in float64, from ``generator``, on ``device``.

    Marsaglia & Tsang (2000): for ``a >= 1`` accept ``d (1 + c x)^3`` (``x`` standard normal,
    ``d = a - 1/3``, ``c = 1/sqrt(9 d)``) when ``log u < x^2/2 + d - d v + d log v``; for
    ``a < 1`` draw ``Gamma(a + 1) * U^(1/a)``. ``torch.distributions.Gamma`` takes no generator,
    which the reproducible sampler needs. Rejected draws are redrawn (acceptance > 95%).
    """
    a = float(shape_parameter)
    if not a > 0:
        raise ValueError(f"shape_parameter must be > 0, got {shape_parameter!r}")
    boost = a < 1.0
    d = (a + 1.0 if boost else a) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel():
        m = todo.numel()
        x = torch.randn(m, generator=generator, device=device, dtype=torch.float64)
        u = torch.rand(m, generator=generator, device=device, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = d * v[ok]
        todo = todo[~ok]
    if boost:
        out *= torch.rand(n, generator=generator, device=device, dtype=torch.float64) ** (1.0 / a)
    return out


_MAX_LAW_CACHE: dict = {}


def linf_max_law(k: float, dim: int, points: int = 16385) -> tuple:
    """Tabulated law of ``M = ||z||_inf`` under the mixed family (eq. 9) with ``sigma = 1``.

    ``M`` has density proportional to ``m^{-k} phi(m) erf(m / sqrt 2)^{d-1}`` (the Gaussian
    maximum's density tilted by ``m^{-k}``). Returned as ``(y, cdf)`` on a grid of ``y = log m``
    covering all but ``e^{-60}`` of the mass (in ``y`` the density decays exponentially at both
    ends for every ``0 <= k < d``), with the CDF by the trapezoidal rule in float64; sampling
    inverts it by linear interpolation. Cached per ``(k, dim)``.
    """
    import numpy as np
    from scipy import special

    key = (float(k), int(dim), int(points))
    if key in _MAX_LAW_CACHE:
        return _MAX_LAW_CACHE[key]

    def log_density(y):
        m = np.exp(y)
        x = m / math.sqrt(2.0)
        log_erf = np.where(x < 1.0, np.log(special.erf(np.minimum(x, 1.0))), np.log1p(-special.erfc(np.maximum(x, 1.0))))
        return (1.0 - k) * y - 0.5 * m * m + (dim - 1) * log_erf

    coarse = np.linspace(-40.0, 5.0, 20001)
    lp = log_density(coarse)
    peak = lp.max()
    inside = np.nonzero(lp > peak - 60.0)[0]
    lo, hi = coarse[max(inside[0] - 1, 0)], coarse[min(inside[-1] + 1, len(coarse) - 1)]
    y = np.linspace(lo, hi, points)
    dens = np.exp(log_density(y) - peak)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(y))])
    cdf /= cdf[-1]
    _MAX_LAW_CACHE[key] = (y, cdf)
    return y, cdf


def _interp(u: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    idx = torch.searchsorted(xp, u).clamp(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    width = x1 - x0
    w = torch.where(width > 0, (u - x0) / torch.where(width > 0, width, torch.ones_like(width)), torch.zeros_like(u))
    return fp[idx - 1] + w.clamp(0, 1) * (fp[idx] - fp[idx - 1])


class NormPowerGaussian(Noise):
    """Zhang et al. (2020) non-Gaussian smoothing noise, density ``∝ ||z||^{-k} exp(-||z||_2^2 / (2 sigma^2))``.

    ``norm="l2"``: ``||.||`` is the l2 norm (their eq. 8); ``||z||/sigma ~ chi_{d-k}`` and the
    direction is uniform, so :meth:`sample` draws exactly (a Gamma radius from the given
    generator times a normalised Gaussian vector). :meth:`certified_radius` is the exact l2
    certificate of :func:`rsbook.non_gaussian.l2_radius` (the Neyman-Pearson value as a 1-D
    integral, Thm. 1-2). ``k = 0`` is ``Gaussian(sigma)``.

    ``norm="linf"``: the mixed family of their eq. 9, ``||z||_inf^{-k} exp(-||z||_2^2/2 sigma^2)``.
    :meth:`sample` draws ``M = ||z||_inf`` from its 1-D law (:func:`linf_max_law`), puts ``±M``
    on a uniformly chosen coordinate and fills the others with ``N(0, sigma^2)`` truncated to
    ``[-M, M]``. :meth:`certified_radius` returns the largest radius of ``linf_radii`` that the
    Monte-Carlo certificate :class:`rsbook.non_gaussian.LinfCertificate` certifies (built once,
    lazily, from ``noise_samples`` fresh draws per half and valid with probability
    ``1 - noise_alpha``): run the classifier's bound at ``alpha - noise_alpha`` (union bound,
    :func:`rsbook.non_gaussian.split_alpha`).

    ``dim`` is the number of coordinates of one input (``C*H*W``); ``0 <= k < dim``.
    """

    def __init__(self, sigma: float, k: float, dim: int, norm: str = "l2", *, linf_radii=None,
                 noise_samples: int = 100_000, noise_alpha: float = 1e-4, noise_seed: int = 0,
                 noise_device: torch.device | str | None = None):
        self.sigma = check_positive_float(sigma, "sigma")
        self.k, self.dim = _check_k_dim(k, dim)
        self.norm = check_choice(norm, ("l2", "linf"), "norm")
        self.linf_radii = linf_radii
        self.noise_samples = int(noise_samples)
        self.noise_alpha = float(noise_alpha)
        self.noise_seed = int(noise_seed)
        self.noise_device = noise_device
        self._linf_certificate = None

    # ------------------------------------------------------------------ sampling
    def sample(self, shape, *, generator=None, device=None, dtype=torch.float32):
        n = _per_example(shape, self.dim)
        if self.norm == "l2":
            z = self._sample_l2(n, generator, device, dtype)
        else:
            z = self._sample_linf(n, generator, device).to(dtype)
        return z.reshape(tuple(shape))

    def _sample_l2(self, n, generator, device, dtype):
        radius = self.sigma * torch.sqrt(2.0 * standard_gamma((self.dim - self.k) / 2.0, n, generator=generator,
                                                               device=device))
        direction = torch.randn((n, self.dim), generator=generator, device=device, dtype=dtype)
        direction = direction / direction.norm(dim=1, keepdim=True)
        return direction * radius.to(dtype).unsqueeze(1)

    def _sample_linf(self, n, generator, device):
        y, cdf = linf_max_law(self.k, self.dim)
        y_t = torch.as_tensor(y, dtype=torch.float64, device=device)
        cdf_t = torch.as_tensor(cdf, dtype=torch.float64, device=device)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        m = torch.exp(_interp(u, cdf_t, y_t))  # sigma = 1
        where = torch.randint(0, self.dim, (n,), generator=generator, device=device)
        sign = torch.rand(n, generator=generator, device=device, dtype=torch.float64) < 0.5
        lower = torch.special.ndtr(-m).unsqueeze(1)
        q = torch.rand((n, self.dim), generator=generator, device=device, dtype=torch.float64)
        z = torch.special.ndtri(lower + q * (1.0 - 2.0 * lower))
        z = torch.maximum(torch.minimum(z, m.unsqueeze(1)), -m.unsqueeze(1))
        z[torch.arange(n, device=device), where] = torch.where(sign, m, -m)
        return z * self.sigma

    # ------------------------------------------------------------------ certificates
    def certified_radius(self, p_lower: float) -> float:
        if p_lower <= 0.5:
            return 0.0
        if self.norm == "l2":
            if p_lower >= 1.0:
                return math.inf
            if self.k == 0:
                return float(self.sigma * _normal.ppf(p_lower))
            from rsbook.non_gaussian import l2_radius

            return l2_radius(p_lower, self.sigma, self.k, self.dim)
        return self.linf_certificate().radius(p_lower)

    def linf_certificate(self):
        """The Monte-Carlo l-inf certificate of this noise (built on first use, then reused)."""
        if self.norm != "linf":
            raise ValueError(f"linf_certificate needs norm='linf', this noise has norm={self.norm!r}")
        if self._linf_certificate is None:
            from rsbook.non_gaussian import linf_certificate

            self._linf_certificate = linf_certificate(self.sigma, self.k, self.dim, radii=self.linf_radii,
                                                      n=self.noise_samples, alpha=self.noise_alpha,
                                                      seed=self.noise_seed, device=self.noise_device)
        return self._linf_certificate

    def __repr__(self) -> str:
        # the repr names certification logs (rsbook.experiment), so it carries every setting of the certificate
        text = f"NormPowerGaussian(sigma={self.sigma!r}, k={self.k:g}, dim={self.dim}, norm={self.norm!r}"
        if self.norm == "linf":
            radii = None if self.linf_radii is None else [float(r) for r in self.linf_radii]
            text += (f", linf_radii={radii}, noise_samples={self.noise_samples}, noise_alpha={self.noise_alpha:g}, "
                     f"noise_seed={self.noise_seed}")
        return text + ")"


#: noise families by name (the ``noise`` setting of the command line and the experiment helper)
NOISE_FAMILIES = {"gaussian": Gaussian, "norm_power": NormPowerGaussian}


def make_noise_family(name: str, sigma: float, dim: int | None = None, option_flag: str = "setting",
                      **kwargs) -> Noise:
    """The noise family ``name`` (see :data:`NOISE_FAMILIES`) at scale ``sigma``.

    ``"gaussian"`` takes no further settings. ``"norm_power"`` needs ``dim`` and ``k`` and
    accepts ``norm`` (``"l2"`` or ``"linf"``), ``matched=True`` (use
    :func:`matched_sigma` ``(sigma, k, dim)`` instead of ``sigma``: the paper's pairing with a
    model trained at Gaussian ``sigma``) and the l-inf certificate's settings of
    :class:`NormPowerGaussian`. ``option_flag`` is how the caller names these settings in
    its errors (the command line: ``"--noise-arg"``).
    """
    check_choice(name, NOISE_FAMILIES, "noise family")
    if name == "gaussian":
        if kwargs:
            raise ValueError(f"the gaussian noise family takes no {option_flag} (its only setting is sigma), "
                             f"got {', '.join(map(repr, sorted(kwargs)))}")
        return Gaussian(sigma)
    if dim is None:
        raise ValueError("the norm_power noise family needs dim (the number of input coordinates, C*H*W)")
    if "k" not in kwargs:
        raise ValueError(f"the norm_power noise family needs k, the power of ||z||^-k (give {option_flag} "
                         "k=VALUE; the paper: k=500 on CIFAR-10)")
    kwargs = dict(kwargs)
    k = kwargs.pop("k")
    if kwargs.pop("matched", False):
        sigma = matched_sigma(sigma, k, dim)
    allowed = ("norm", "linf_radii", "noise_samples", "noise_alpha", "noise_seed", "noise_device")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"the norm_power noise family takes no {option_flag} {', '.join(map(repr, unknown))}; "
                         f"the ones it takes: k, matched, {', '.join(allowed)}")
    return NormPowerGaussian(sigma, k, dim, **kwargs)
