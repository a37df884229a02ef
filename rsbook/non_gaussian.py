"""Non-Gaussian smoothing: Zhang, Ye, Gong, Zhu & Liu, "Filling the soap bubbles" (2020).

The paper's certificate (Sec. 3, Thm. 1) is a functional optimisation: the smallest value
``E_{pi_delta} f`` over all ``f`` with values in [0, 1] and ``E_{pi_0} f = p``. Its Lagrangian
dual is ``max_lambda lambda p - D(lambda)`` with ``D(lambda) = E_{pi_0} (lambda - pi_delta/pi_0)_+``
(eq. 5), and the maximiser is the Neyman-Pearson threshold: with the log-likelihood ratio
``l = log(pi_delta / pi_0)`` and ``F(t) = P_{pi_0}(l <= t)``, ``lambda* = exp(t*)`` where
``F(t*) = p``, and the value is ``V = P_{pi_delta}(l <= t*) = P_{pi_0}(l >= -t*)`` (the second
form for symmetric noise). Only the noise law enters, never the classifier.

This module computes that value for the paper's two families (see
:class:`rsbook.noise.NormPowerGaussian`):

* l2 family (eq. 8), shift ``delta = R e_1`` (Thm. 2): exactly, as 1-D integrals over the
  radius ``rho = ||z||`` (:func:`l2_tail`, :func:`l2_value`, :func:`l2_radius`);
* mixed l-inf family (eq. 9), shift at a vertex ``r 1`` (Thm. 5): by Monte Carlo over the
  noise only, with a valid confidence bound (:class:`LinfCertificate`);

plus the soap-bubble numbers of Sec. 4.1, the Gaussian special case of Cor. 1, helpers for
soundness checks, and the numbers behind the paper's errata (Alg. 1, Thm. 7, Table 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from scipy import optimize, special, stats
from torch import nn

from rsbook._checks import check_alpha, check_positive_float, check_positive_int
from rsbook.noise import NormPowerGaussian, _check_k_dim
from rsbook.stats import clopper_pearson_upper

__all__ = [
    "radial_law", "soap_bubble_table", "ball_classifier_probability", "radial_moments",
    "gaussian_dual", "gaussian_dual_argmax", "cohen_value", "dual_objective", "neyman_pearson_value",
    "l2_logratio", "l2_tail", "l2_threshold", "l2_value", "l2_radius", "projection_cdf",
    "NeymanPearsonClassifier",
    "linf_logratio", "linf_statistics", "LinfCertificate", "linf_certificate", "default_linf_radii",
    "gaussian_linf_radius",
    "split_alpha",
    "hoeffding_penalty", "max_p_lower", "radius_cap", "noise_samples_for_radius", "max_of_bounds_failure",
]


# =============================================================================== the soap bubble
def radial_law(sigma: float, k: float, dim: int):
    """The law of ``||z||_2`` under the l2 family (eq. 8): ``sigma * chi_{d-k}`` (Lemma 2), a frozen scipy law."""
    sigma = check_positive_float(sigma, "sigma")
    k, dim = _check_k_dim(k, dim)
    return stats.chi(df=dim - k, scale=sigma)


def radial_moments(sigma: float, k: float, dim: int) -> dict:
    """Mean, standard deviation and mode of ``||z||_2`` (``sigma chi_{d-k}``), exactly (log-gamma, no cancellation)."""
    k, dim = _check_k_dim(k, dim)
    nu = dim - k
    mean_ratio = math.exp(special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2))  # E chi_nu / sqrt 2
    mean = sigma * math.sqrt(2.0) * mean_ratio
    # Var = nu - 2 ratio^2 subtracts two numbers of size nu to leave about 1/2: float64 keeps
    # ~1e-10 relative accuracy at nu = 150528, enough for the tables.
    var = sigma ** 2 * (nu - 2.0 * mean_ratio ** 2)
    return {"mean": mean, "sd": math.sqrt(max(var, 0.0)), "mode": sigma * math.sqrt(max(nu - 1.0, 0.0))}


def soap_bubble_table(dims=(2, 64, 3072, 150528), sigma: float = 1.0, coverage: float = 0.99) -> pd.DataFrame:
    """Where a Gaussian ``N(0, sigma^2 I_d)`` puts its mass (Sec. 4.1, Lemma 1), exactly.

    One row per ``d``: ``sigma sqrt(d)``, the mean and sd of ``||z||`` (``sigma chi_d``), the
    central ``coverage`` interval of ``||z||`` and its width (the "shell"), and the probability
    that ``||z||`` is at most half of ``sigma sqrt(d)``.
    """
    rows = []
    tail = (1.0 - coverage) / 2.0
    for d in dims:
        law = radial_law(sigma, 0, d)
        mom = radial_moments(sigma, 0, d)
        lo, hi = law.ppf(tail), law.isf(tail)
        rows.append({"d": d, "sigma*sqrt(d)": sigma * math.sqrt(d), "mean": mom["mean"], "sd": mom["sd"],
                     "shell_lo": lo, "shell_hi": hi, "shell_width": hi - lo,
                     "P(|z| <= sigma*sqrt(d)/2)": law.cdf(0.5 * sigma * math.sqrt(d))})
    return pd.DataFrame(rows)


def ball_classifier_probability(eps: float, dim: int, sigma: float = 1.0, k: float = 0.0) -> float:
    """Sec. 4.1's toy: the smoothed value at ``x0`` of ``f(x) = 1[||x - x0|| <= eps sqrt(d)]``.

    Equals ``P(||z|| <= eps sqrt(d)) = P(chi_{d-k} <= eps sqrt(d) / sigma)`` under the l2 family
    (``k = 0``: Gaussian). The paper's point: with ``sigma = 1`` and ``eps < 1`` it tends to 0 as
    ``d`` grows, although ``f(x0) = 1``.
    """
    return float(radial_law(sigma, k, dim).cdf(eps * math.sqrt(dim)))


# =============================================================================== the variational certificate
def gaussian_dual(lam, p: float, r: float, sigma: float):
    """The dual objective ``lambda p - D(lambda)`` of Thm. 1 for ``N(0, sigma^2 I)`` and a shift of norm ``r``.

    App. A.2 (reconstructed; the printed formula is garbled): the set
    ``{lambda pi_0 >= pi_delta}`` is the half-space ``delta.z <= r^2/2 + sigma^2 ln lambda``, so
    ``D(lambda) = lambda Phi(r/(2 sigma) + sigma ln(lambda)/r) - Phi(-r/(2 sigma) + sigma ln(lambda)/r)``.
    """
    lam = np.asarray(lam, dtype=float)
    a = sigma * np.log(lam) / r
    d = lam * special.ndtr(r / (2 * sigma) + a) - special.ndtr(-r / (2 * sigma) + a)
    return lam * p - d


def gaussian_dual_argmax(p: float, r: float, sigma: float) -> float:
    """The maximiser of :func:`gaussian_dual`: ``ln lambda* = (r / sigma) (Phi^{-1}(p) - r / (2 sigma))``.

    Setting the derivative ``p - Phi(r/(2 sigma) + sigma ln(lambda)/r)`` to zero (the other two
    terms cancel, the Neyman-Pearson identity). At ``lambda*`` the dual equals :func:`cohen_value`.
    """
    return float(np.exp((r / sigma) * (special.ndtri(p) - r / (2 * sigma))))


def cohen_value(p: float, r: float, sigma: float) -> float:
    """Cor. 1: the bound of Cohen et al., ``Phi(Phi^{-1}(p) - r / sigma)``.

    The paper's eq. (2) prints ``- r/6`` for ``- r/sigma`` (an OCR/typesetting slip).
    """
    return float(special.ndtr(special.ndtri(p) - r / sigma))


def dual_objective(lam, p: float, logratio: np.ndarray):
    """Plug-in dual objective ``lambda p - mean((lambda - exp(l_i))_+)`` from draws ``l_i`` of ``l`` under ``pi_0``.

    ``D(lambda) = E_{pi_0}(lambda - pi_delta/pi_0)_+`` (Thm. 1 II, written as an expectation
    under ``pi_0`` as in Sec. 4.1). Vectorised over ``lam``.
    """
    lam = np.atleast_1d(np.asarray(lam, dtype=float))
    ratio = np.exp(np.asarray(logratio, dtype=float))
    return np.array([v * p - np.mean(np.maximum(v - ratio, 0.0)) for v in lam])


def neyman_pearson_value(p: float, logratio: np.ndarray, logratio_shifted: np.ndarray | None = None) -> float:
    """Plug-in Neyman-Pearson value from draws of ``l`` under ``pi_0``: ``t*`` = the ``p`` quantile, ``V = P(l >= -t*)``.

    ``V = P_{pi_0}(l >= -t*)`` uses the symmetry of the noise; pass ``logratio_shifted``
    (draws of ``l`` under ``pi_delta``) to use ``V = P_{pi_delta}(l <= t*)`` instead. Equals the
    maximum of :func:`dual_objective` (at ``lambda = e^{t*}``) up to Monte-Carlo error.
    """
    logratio = np.asarray(logratio, dtype=float)
    t = np.quantile(logratio, p)
    if logratio_shifted is not None:
        return float(np.mean(np.asarray(logratio_shifted) <= t))
    return float(np.mean(logratio >= -t))


# =============================================================================== exact l2 certificate
def l2_logratio(z: torch.Tensor | np.ndarray, R: float, sigma: float, k: float):
    """``l(z) = log pi_0(z - R e_1) / pi_0(z)`` for the l2 family, rows of ``z`` flattened.

    ``= k log(||z|| / ||z - R e_1||) + (2 R z_1 - R^2) / (2 sigma^2)``.
    """
    if isinstance(z, torch.Tensor):
        z = z.reshape(z.shape[0], -1)
        shifted = z.clone()
        shifted[:, 0] -= R
        return k * torch.log(z.norm(dim=1) / shifted.norm(dim=1)) + (2 * R * z[:, 0] - R * R) / (2 * sigma ** 2)
    z = np.asarray(z, dtype=float).reshape(len(z), -1)
    shifted = z.copy()
    shifted[:, 0] -= R
    return k * np.log(np.linalg.norm(z, axis=1) / np.linalg.norm(shifted, axis=1)) + \
        (2 * R * z[:, 0] - R * R) / (2 * sigma ** 2)


@lru_cache(maxsize=64)
def _radial_nodes(k: float, dim: int, step: float = 0.2, cut: float = 80.0):
    """Trapezoidal nodes for ``E g(||z||)``, ``||z|| ~ chi_{d-k}`` (sigma = 1).

    In ``y = sqrt(a) log(g / a)`` with ``g = ||z||^2 / 2 ~ Gamma(a)``, ``a = (d - k)/2``, the
    density is ``exp(sqrt(a) y - a (e^{y/sqrt a} - 1))`` (peak 0 at ``y = 0``, about ``N(0, 1)``
    for large ``a``, an exponential left tail for small ``a``): smooth and fast-decaying, where
    the trapezoidal rule converges geometrically. Nodes cover log-density > ``-cut``.
    """
    a = (dim - k) / 2.0
    sa = math.sqrt(a)

    def logdens(y):
        return sa * y - a * np.expm1(y / sa)

    lo = -1.0
    while logdens(lo) > -cut:
        lo *= 1.25
    hi = 1.0
    while logdens(hi) > -cut:
        hi *= 1.25
    y = np.arange(math.floor(lo / step) * step, hi + step, step)
    w = np.exp(logdens(y))
    w /= w.sum()
    rho = np.sqrt(2.0 * a * np.exp(y / sa))
    return rho, w


def _u_threshold(rho: np.ndarray, t: float, R: float, k: float) -> np.ndarray:
    """``u*(rho)``: for fixed ``||z|| = rho`` (sigma = 1), ``l <= t`` iff ``z_1/rho <= u*``.

    With ``s = ||z - R e_1||^2 / rho^2`` the log-ratio is ``-(k/2) log s - rho^2 (s - 1)/2``,
    decreasing in ``s``, so ``l = t`` solves ``k log s + rho^2 (s - 1) = -2t``: a Wright-omega
    equation, ``s = omega(c + log a) / a`` with ``a = rho^2/k``, ``c = (rho^2 - 2t)/k``. Two Newton
    steps on ``v = log s`` polish it so ``s - 1 = expm1(v)`` keeps full relative precision
    (``s`` is close to 1 in high dimension). Then ``u* = R/(2 rho) - rho (s - 1)/(2R)``.
    """
    A = rho * rho
    if k == 0:
        e = -2.0 * t / A
    else:
        a = A / k
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s0 = np.real(special.wrightomega((A - 2.0 * t) / k + np.log(a))) / a
            v = np.log(s0)
            for _ in range(2):
                ev = np.exp(v)
                v = v - (k * v + A * np.expm1(v) + 2.0 * t) / (k + A * ev)
            e = np.where(np.isfinite(v), np.expm1(v), -1.0)
    return R / (2.0 * rho) - rho * e / (2.0 * R)


def _beta_shape(dim: int) -> float:
    return (dim - 1) / 2.0


def l2_tail(t: float, R: float, k: float, dim: int) -> float:
    """``P_{pi_0}(l > t)`` for the l2 family with sigma = 1 and shift ``R e_1`` (a 1-D integral over ``rho``).

    For fixed ``rho``, ``u = z_1/rho`` is independent of ``rho`` with ``(1 + u)/2 ~
    Beta((d-1)/2, (d-1)/2)``, so ``P(l > t | rho) = I_{(1 - u*)/2}((d-1)/2, (d-1)/2)``.
    """
    rho, w = _radial_nodes(float(k), int(dim))
    b = _beta_shape(dim)
    x = np.clip((1.0 - _u_threshold(rho, t, R, k)) / 2.0, 0.0, 1.0)
    return float(np.dot(w, special.betainc(b, b, x)))


def l2_threshold(p: float, R: float, sigma: float, k: float, dim: int) -> float:
    """The Neyman-Pearson threshold ``t*``: ``P_{pi_0}(l <= t*) = p`` at shift ``R`` (solved on ``log P(l > t)``)."""
    r = R / sigma  # l is scale-free: noise sigma and shift R is noise 1 and shift R/sigma
    target = math.log1p(-p)

    def gap(t):
        return math.log(max(l2_tail(t, r, k, dim), 1e-300)) - target

    t0 = r * special.ndtri(p) - r * r / 2.0  # exact for k = 0
    step = max(1.0, abs(t0))
    lo, hi = t0 - step, t0 + step
    for _ in range(200):
        if gap(lo) >= 0:
            break
        lo -= step
        step *= 2
    for _ in range(200):
        if gap(hi) <= 0:
            break
        hi += step
        step *= 2
    return optimize.brentq(gap, lo, hi, xtol=1e-13, rtol=1e-15, maxiter=300)


def l2_value(p: float, R: float, sigma: float, k: float, dim: int) -> float:
    """Thm. 1's lower bound on the smoothed probability at shift ``R``: ``V = P_{pi_0}(l >= -t*)``.

    The Neyman-Pearson value, which equals the maximum of the Lagrangian dual (eq. 5); by
    Thm. 2 the shift ``R e_1`` is the worst over the l2 ball of radius ``R``.
    """
    if R <= 0:
        return float(p)
    t = l2_threshold(p, R, sigma, k, dim)
    return l2_tail(-t, R / sigma, k, dim)


def l2_radius(p: float, sigma: float, k: float, dim: int) -> float:
    """The exact l2 radius certified by the l2 family (eq. 8) when the top class has probability ``>= p``.

    The largest ``R`` with ``V(R) > 1/2`` (:func:`l2_value`), found by Brent's method in float64
    and rounded *down* (never interpolated upward). ``k = 0`` reproduces ``sigma Phi^{-1}(p)``
    (Cor. 1) to about 1e-13. Cached per ``(p, k, dim)``; the radius scales with ``sigma``.
    """
    sigma = check_positive_float(sigma, "sigma")
    k, dim = _check_k_dim(k, dim)
    p = float(p)
    if not p > 0.5:
        return 0.0
    if p >= 1.0:
        return math.inf
    return sigma * _unit_l2_radius(p, k, dim)


@lru_cache(maxsize=100_000)
def _unit_l2_radius(p: float, k: float, dim: int) -> float:
    def gap(R):
        return l2_value(p, R, 1.0, k, dim) - 0.5

    guess = special.ndtri(p)
    lo, hi = 0.5 * guess, 1.5 * guess
    for _ in range(200):
        if gap(lo) > 0:
            break
        lo /= 2.0
    for _ in range(200):
        if gap(hi) <= 0:
            break
        lo, hi = hi, 2.0 * hi
    root = optimize.brentq(gap, lo, hi, xtol=1e-13, rtol=1e-15, maxiter=300)
    return max(0.0, root - 4e-13 * max(1.0, root))


def projection_cdf(m: float, sigma: float, k: float, dim: int) -> float:
    """``P(w.z <= m)`` for a unit vector ``w`` and ``z`` from the l2 family: the projection law's CDF.

    For a linear classifier at distance ``m`` from its boundary this is ``p_A`` exactly (the
    smoothed classifier equals the base one for any symmetric noise, and its true radius is ``m``).
    """
    rho, w = _radial_nodes(float(k), int(dim))
    b = _beta_shape(dim)
    x = np.clip((1.0 + m / (sigma * rho)) / 2.0, 0.0, 1.0)
    return float(np.dot(w, special.betainc(b, b, x)))


class NeymanPearsonClassifier(nn.Module):
    """The worst-case base classifier for the l2 family at ``x0``: class 0 on ``{l_{R e_1}(x - x0) <= t}``, else 1.

    With ``t = l2_threshold(p, R, ...)`` its smoothed class-0 probability is ``p`` at ``x0`` and
    exactly ``V(R)`` at ``x0 + R e_1``; at ``R = l2_radius(p)`` that is 1/2, so the smoothed
    classifier's true l2 radius at ``x0`` is exactly the certified one (the certificate is tight).
    """

    def __init__(self, x0: torch.Tensor, sigma: float, k: float, R: float, t: float):
        super().__init__()
        self.register_buffer("x0", x0.detach().clone())
        self.sigma, self.k, self.R, self.t = float(sigma), float(k), float(R), float(t)

    def forward(self, x):
        z = (x - self.x0).reshape(x.shape[0], -1).double()
        score = self.t - l2_logratio(z, self.R, self.sigma, self.k)
        return torch.stack([score, torch.zeros_like(score)], dim=1).to(x.dtype)


# =============================================================================== the mixed l-inf family
def linf_logratio(zmax, zmin, zsum, r: float, sigma: float, k: float, dim: int):
    """``l(z) = log pi_0(z - r 1) / pi_0(z)`` for the mixed family (eq. 9), from ``max z``, ``min z``, ``sum z``.

    ``= k log(||z||_inf / ||z - r 1||_inf) + (r sum_j z_j - d r^2 / 2) / sigma^2``; both norms need
    only the extreme coordinates, so one pass over the noise serves every radius.
    """
    zmax, zmin, zsum = (np.asarray(a, dtype=float) for a in (zmax, zmin, zsum))
    m = np.maximum(zmax, -zmin)
    m_shift = np.maximum(zmax - r, r - zmin)
    return k * np.log(m / m_shift) + (r * zsum - dim * r * r / 2.0) / sigma ** 2


def linf_statistics(noise: NormPowerGaussian, n: int, seed: int = 0, device=None, batch_size: int = 4096):
    """``(max, min, sum)`` of each of ``n`` fresh draws of ``noise``, in float64 numpy arrays."""
    n = check_positive_int(n, "n")
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    out = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = noise.sample((b, noise.dim), generator=gen, device=device, dtype=torch.float64)
            out.append(torch.stack([z.max(1).values, z.min(1).values, z.sum(1)], 1).cpu().numpy())
    s = np.concatenate(out)
    return s[:, 0], s[:, 1], s[:, 2]


@dataclass
class LinfCertificate:
    """A Monte-Carlo l-inf certificate for the mixed family, valid with probability ``1 - alpha`` over the noise.

    For each radius ``r`` of ``radii`` (shift ``r 1``, the worst vertex by Thm. 5) and each
    threshold ``t_j``: ``F_upper[i, j] >= F(t_j)`` and ``G_upper[i, j] >= F(-t_j)`` where
    ``F(t) = P_{pi_0}(l <= t)``. ``t_j`` is an order statistic of a first half of the draws,
    so ``F(t_j) ~ Beta(i, n - i + 1)`` exactly and its upper bound is a Beta quantile; ``F(-t_j)``
    is bounded by Clopper-Pearson on an independent second half. All ``2 * len(radii) *
    n_thresholds`` bounds hold together with probability ``>= 1 - alpha`` (Bonferroni).

    Guarantee: on that event, if the classifier's top class has probability ``>= p`` then for
    every ``j`` with ``F_upper <= p``, the Neyman-Pearson lemma gives smoothed probability
    ``>= 1 - F(-t_j) >= 1 - G_upper > 1/2`` at every point of the l-inf ball of radius ``r``.
    Combined with a classifier bound at level ``alpha_c`` the certificate fails with probability
    at most ``alpha_c + alpha`` (union bound). The same noise draws serve every input, so
    failures across a test set are not independent.
    """

    sigma: float
    k: float
    dim: int
    radii: np.ndarray
    thresholds: np.ndarray
    F_upper: np.ndarray
    G_upper: np.ndarray
    alpha: float
    n: int
    plugin: np.ndarray = field(default=None, repr=False)

    def certified(self, p: float) -> np.ndarray:
        """Boolean per radius: is the l-inf ball of that radius certified at top-class probability ``p``."""
        ok = np.zeros(len(self.radii), dtype=bool)
        for i in range(len(self.radii)):
            j = np.searchsorted(self.F_upper[i], p, side="right") - 1
            ok[i] = j >= 0 and self.G_upper[i, j] < 0.5
        return ok

    def radius(self, p: float) -> float:
        """The largest certified radius of the grid (rounded down to it), 0 if none."""
        if not p > 0.5:
            return 0.0
        ok = self.certified(p)
        return float(self.radii[ok].max()) if ok.any() else 0.0

    def plugin_radius(self, p: float) -> float:
        """The plug-in (not confidence-corrected) grid radius, for comparison only: ``V_hat(r) > 1/2``."""
        vals = np.array([np.mean(row >= -np.quantile(row, p)) for row in self.plugin])
        ok = vals > 0.5
        return float(self.radii[ok].max()) if ok.any() else 0.0


_LINF_CACHE: dict = {}


def default_linf_radii(sigma: float, dim: int, count: int = 64) -> np.ndarray:
    """A grid of l-inf radii up to twice the largest Gaussian l-inf radius at ``n = 10^5`` (``4 sigma / sqrt d``)."""
    return np.linspace(0.0, 8.0 * sigma / math.sqrt(dim), count + 1)[1:]


def linf_certificate(sigma: float, k: float, dim: int, radii=None, n: int = 100_000, alpha: float = 1e-4,
                     seed: int = 0, device=None, n_thresholds: int = 48, keep_plugin: bool = False) -> LinfCertificate:
    """Build (or fetch from the cache) the :class:`LinfCertificate` of the mixed family from ``2 n`` noise draws.

    Computed once per ``(sigma, k, dim, radii, n, alpha, seed)`` and reused across a test set:
    it depends on the noise only. ``n`` draws give the thresholds (order statistics at tail
    counts spaced geometrically from ``n/2`` down to 1, plus 16 evenly from ``n/2`` to ``n/20``),
    ``n`` fresh draws bound ``F(-t)``.
    """
    sigma = check_positive_float(sigma, "sigma")
    k, dim = _check_k_dim(k, dim)
    n = check_positive_int(n, "n")
    alpha = check_alpha(alpha)
    radii = default_linf_radii(sigma, dim) if radii is None else np.sort(np.asarray(radii, dtype=float))
    if radii.size == 0 or np.any(radii <= 0):
        raise ValueError(f"radii must be a non-empty list of numbers > 0, got {radii!r}")
    key = (sigma, k, dim, tuple(radii), n, alpha, int(seed), n_thresholds, keep_plugin)
    if key in _LINF_CACHE:
        return _LINF_CACHE[key]
    noise = NormPowerGaussian(sigma, k, dim, norm="linf")
    first = linf_statistics(noise, n, seed=2 * int(seed), device=device)
    second = linf_statistics(noise, n, seed=2 * int(seed) + 1, device=device)
    # tail counts: geometric down to 1 (high p) plus a linear stretch near the median (p near 1/2)
    tails = np.concatenate([np.geomspace(n / 2.0, 1.0, n_thresholds), np.linspace(n / 2.0, n / 20.0, 16)])
    tails = np.unique(np.clip(np.round(tails), 1, n - 1).astype(int))[::-1]
    index = n - tails  # 1-based order statistic index i = n - tail, 0-based position i - 1
    level = alpha / (2.0 * len(radii) * len(index))
    F_upper = np.tile(clopper_pearson_upper(index - 1, n, level), (len(radii), 1))
    thresholds = np.empty((len(radii), len(index)))
    G_upper = np.empty_like(thresholds)
    plugin = []
    for i, r in enumerate(radii):
        la = np.sort(linf_logratio(*first, r, sigma, k, dim))
        lb = np.sort(linf_logratio(*second, r, sigma, k, dim))
        thresholds[i] = la[index - 1]
        below = np.searchsorted(lb, -thresholds[i], side="right")  # #{l_B <= -t_j}
        G_upper[i] = clopper_pearson_upper(below, n, level)
        if keep_plugin:
            plugin.append(np.concatenate([la, lb]))
    cert = LinfCertificate(sigma, k, dim, radii, thresholds, F_upper, G_upper, alpha, n,
                           plugin=np.array(plugin) if keep_plugin else None)
    _LINF_CACHE[key] = cert
    return cert


def gaussian_linf_radius(p: float, sigma: float, dim: int) -> float:
    """The l-inf radius Gaussian noise certifies: ``sigma Phi^{-1}(p) / sqrt(d)`` (the l-inf ball sits in the l2 ball of radius ``r sqrt d``)."""
    return float(sigma * special.ndtri(p) / math.sqrt(dim)) if p > 0.5 else 0.0


def split_alpha(alpha: float, noise_alpha: float) -> float:
    """The classifier's share of a total failure probability ``alpha`` when the noise certificate uses ``noise_alpha``."""
    alpha, noise_alpha = check_alpha(alpha), check_alpha(noise_alpha, "noise_alpha")
    if not noise_alpha < alpha:
        raise ValueError(f"noise_alpha must be below the total alpha={alpha}, got {noise_alpha!r}")
    return alpha - noise_alpha


# =============================================================================== errata numbers
def hoeffding_penalty(alpha: float, n: int) -> float:
    """Thm. 7 / Sec. 4.1: the Hoeffding slack ``sqrt(ln(1/alpha) / (2N))`` of ``N`` noise draws.

    The estimate of ``D(lambda)`` lies in ``[0, lambda]``, so the slack ``lambda * sqrt(...)`` on
    ``lambda p - D(lambda)`` is the same as lowering ``p`` by ``sqrt(ln(1/alpha)/(2N))``.
    """
    return math.sqrt(math.log(1.0 / check_alpha(alpha)) / (2.0 * check_positive_int(n, "n")))


def max_p_lower(n: int, alpha: float) -> float:
    """The largest Clopper-Pearson lower bound ``n`` samples can give (all ``n`` votes): ``alpha^(1/n)``."""
    return float(check_alpha(alpha) ** (1.0 / check_positive_int(n, "n")))


def radius_cap(n: int, alpha: float, sigma: float, k: float, dim: int, noise_n: int | None = None) -> float:
    """The largest l2 radius the l2 family can certify with ``n`` classifier samples.

    ``noise_n = None``: the exact integral (no noise Monte Carlo). ``noise_n = N``: the paper's
    Monte-Carlo certificate with Thm. 7's Hoeffding correction at the same ``alpha``.
    """
    p = max_p_lower(n, alpha)
    if noise_n is not None:
        p -= hoeffding_penalty(alpha, noise_n)
    return l2_radius(p, sigma, k, dim)


def noise_samples_for_radius(target: float, n: int, alpha: float, sigma: float, k: float, dim: int) -> float:
    """The number ``N`` of noise draws Thm. 7 needs before :func:`radius_cap` can reach ``target`` (inf if never)."""
    if radius_cap(n, alpha, sigma, k, dim) <= target:
        return math.inf
    # the radius is increasing in p; find the p reaching target, then N from the slack
    lo, hi = 0.5 + 1e-12, max_p_lower(n, alpha)
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (lo, mid) if l2_radius(mid, sigma, k, dim) >= target else (mid, hi)
    slack = max_p_lower(n, alpha) - hi
    return math.log(1.0 / alpha) / (2.0 * slack * slack)


def max_of_bounds_failure(p: float, n: int, alpha: float, repeats: int) -> float:
    """Alg. 1's multiple testing: P(the largest of ``repeats`` independent Clopper-Pearson lower bounds exceeds ``p``).

    Exact: one bound exceeds ``p`` with probability ``q = P(CP(K) > p)``, ``K ~ Binomial(n, p)``;
    the maximum of ``J`` independent ones with ``1 - (1 - q)^J``, up to about ``J alpha``.
    """
    from rsbook.stats import clopper_pearson_lower

    counts = np.arange(n + 1)
    lower = clopper_pearson_lower(counts, np.full_like(counts, n), alpha)
    q = float(stats.binom.pmf(counts, n, p)[lower > p].sum())
    return 1.0 - (1.0 - q) ** int(repeats)
