"""Exact binomial confidence bounds and the binomial test used by PREDICT.

Randomized smoothing turns "how often does the base classifier output class c under
noise" into a certificate. The frequency is a binomial count, so the guarantee rests on
exact (Clopper-Pearson) bounds for a binomial proportion, never on a normal approximation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats as _st
from scipy.special import betaincinv

from rsbook._checks import check_alpha

__all__ = ["clopper_pearson_lower", "clopper_pearson_upper", "beta_lower_bound", "binomial_test_pvalue", "radius_cap",
           "ExpectedRadius", "expected_certified_radius", "certify_abstain_probability", "selection_probability"]


def _check_counts(k, n):
    k_arr = np.asarray(k)
    n_arr = np.asarray(n)
    if np.any(n_arr < 1) or np.any(n_arr != np.floor(n_arr)):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if np.any(k_arr < 0) or np.any(k_arr > n_arr) or np.any(k_arr != np.floor(k_arr)):
        raise ValueError(f"k must be an integer with 0 <= k <= n, got k={k!r}, n={n!r}")
    return k_arr.astype(float), n_arr.astype(float)


def _scalar_or_array(value, *inputs):
    return float(value) if all(np.ndim(i) == 0 for i in inputs) else value


def clopper_pearson_lower(k, n, alpha):
    """One-sided lower confidence bound on a binomial proportion.

    Returns ``p_lower`` with ``P(p >= p_lower) >= 1 - alpha`` when ``k ~ Binomial(n, p)``:
    the ``alpha`` quantile of ``Beta(k, n - k + 1)`` (Clopper & Pearson, 1934), and 0 when
    ``k = 0``. This is the bound CERTIFY uses for ``p_A`` (Cohen et al., 2019, Alg. CERTIFY,
    ``LowerConfBound``). Works elementwise on arrays.
    """
    alpha = check_alpha(alpha)
    kf, nf = _check_counts(k, n)
    return _scalar_or_array(_beta_lower(kf, nf, alpha), k, n)


def _beta_lower(count, n, alpha):
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = betaincinv(np.maximum(count, 1e-300), n - count + 1.0, alpha)
    return np.where((count > 0) & (n > 0), lower, 0.0)


def beta_lower_bound(count, n, alpha):
    """:func:`clopper_pearson_lower` extended continuously to *real* counts ``0 <= count <= n``.

    The alpha quantile of ``Beta(count, n - count + 1)`` is defined for any real shape
    parameters; at integer counts it *is* the Clopper-Pearson bound. It is not a
    confidence bound for a fractional count (no binomial produces one): ISS (Chen et al.,
    2022, Def. 1) uses it to *plan* sample sizes from the expected count ``p * n``.
    """
    alpha = check_alpha(alpha)
    count = np.asarray(count, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(n < 0) or np.any(count < 0) or np.any(count > n):
        raise ValueError(f"need 0 <= count <= n, got count={count!r}, n={n!r}")
    return _scalar_or_array(_beta_lower(count, n, alpha), count, n)


def clopper_pearson_upper(k, n, alpha):
    """One-sided upper confidence bound: the ``1 - alpha`` quantile of ``Beta(k + 1, n - k)``, 1 when ``k = n``."""
    alpha = check_alpha(alpha)
    kf, nf = _check_counts(k, n)
    with np.errstate(invalid="ignore"):
        upper = np.where(kf < nf, _st.beta.ppf(1 - alpha, kf + 1, np.maximum(nf - kf, 1)), 1.0)
    return _scalar_or_array(upper, k, n)


def binomial_test_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test of ``H0: k ~ Binomial(n, p)``.

    PREDICT (Cohen et al., 2019) abstains unless this p-value for the top two counts,
    ``k = n_A`` out of ``n = n_A + n_B`` at ``p = 1/2``, is at most ``alpha``. With ``n = 0``
    (no sample hit either class) there is no evidence at all and the p-value is 1.
    """
    k, n = int(k), int(n)
    if n == 0:
        return 1.0
    _check_counts(k, n)
    return float(_st.binomtest(k, n, p).pvalue)


def radius_cap(sigma, alpha: float, n):
    """The largest radius CERTIFY can certify with ``n`` samples: ``sigma * Phi^-1(alpha^(1/n))``.

    With all ``n`` votes for the top class the one-sided Clopper-Pearson lower bound is
    ``alpha^(1/n)`` (it solves ``p^n = alpha``), and Cohen et al.'s radius (Thm. 1 with
    ``p_B = 1 - p_A``) is ``sigma * Phi^-1`` of it. A certified-accuracy curve is 0 beyond
    this radius whatever the model, so no statement about a model may be read there:
    ``radius_cap(0.5, 0.001, 100_000)`` = 1.91 (Cohen et al.'s CIFAR-10 budget at sigma =
    0.5), ``radius_cap(0.5, 0.001, 300)`` = 1.00. Vectorised over ``sigma`` and ``n``.
    """
    alpha = check_alpha(alpha)
    n_arr = np.asarray(n)
    if np.any(n_arr < 1) or np.any(n_arr != np.floor(n_arr)):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    sigma_arr = np.asarray(sigma, dtype=float)
    if np.any(~(sigma_arr > 0)):
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    cap = sigma_arr * _st.norm.ppf(alpha ** (1.0 / n_arr.astype(float)))
    return _scalar_or_array(cap, sigma, n)


# ---------------------------------------------------------------------- CERTIFY's radius as a random variable
#: binomial counts farther than this many standard deviations from the mean are left out of the sums below
_WINDOW_SD = 12.0
#: ... provided the probability mass so left out is below this (otherwise every count is summed)
_MAX_OMITTED_MASS = 1e-15


class ExpectedRadius(NamedTuple):
    """Mean and standard deviation, over CERTIFY calls, of the certified radius (abstention = 0)."""

    mean: float
    sd: float


def _count_distribution(p_a: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The counts ``k`` and their ``Binomial(n, p_a)`` probabilities that carry all but ``< 1e-15`` of the mass.

    Sums over the window ``n p_a +- 12 sd`` (clipped to ``[0, n]``); when the mass outside
    the window is not below ``1e-15`` (small ``n``, skewed ``p_a``) every ``k = 0..n`` is used.
    """
    if not 0.0 <= float(p_a) <= 1.0:
        raise ValueError(f"p_a must lie in [0, 1], got {p_a!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    sd = np.sqrt(n * p_a * (1.0 - p_a))
    lo = max(0, int(np.floor(n * p_a - _WINDOW_SD * sd)) - 1)
    hi = min(n, int(np.ceil(n * p_a + _WINDOW_SD * sd)) + 1)
    k = np.arange(lo, hi + 1)
    pmf = _st.binom.pmf(k, n, p_a)
    if 1.0 - pmf.sum() >= _MAX_OMITTED_MASS and (lo > 0 or hi < n):
        k = np.arange(n + 1)
        pmf = _st.binom.pmf(k, n, p_a)
    return k, pmf


def _radius_of_count(k: np.ndarray, n: int, alpha: float, sigma: float) -> np.ndarray:
    p_lower = _beta_lower(k.astype(float), float(n), alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p_lower > 0.5, sigma * _st.norm.ppf(np.where(p_lower > 0.5, p_lower, 0.75)), 0.0)


def expected_certified_radius(p_a: float, n: int, alpha: float, sigma: float = 1.0) -> ExpectedRadius:
    """Exact mean and sd over CERTIFY calls of the Gaussian radius, given that selection picked the top class.

    CERTIFY's estimation count for the selected class is ``k ~ Binomial(n, p_a)``; it returns
    the radius ``sigma Phi^-1(p_lower(k))`` when the one-sided Clopper-Pearson bound
    ``p_lower(k)`` (:func:`clopper_pearson_lower`) exceeds 1/2 and abstains (radius 0)
    otherwise. This sums that radius, and its square, against the binomial probabilities of
    ``k``: no sampling. The sum runs over the counts within 12 sd of ``n p_a`` when the mass
    outside them is below ``1e-15``, else over every ``k``, so the result is exact to
    far below display precision.

    Selection is *conditioned on*: the result is what CERTIFY returns when its ``n0``
    selection votes chose the class of probability ``p_a``. The unconditional mean is
    ``selection_probability(...) * mean`` plus what a wrongly selected class certifies, which
    for a class of probability ``1 - p_a < 1/2`` is an abstention except with a probability
    below ``alpha`` (that certificate is then wrong, not a radius for the top class).

    ``p_a = 1`` gives the cap ``radius_cap(sigma, alpha, n)`` with sd 0; ``p_a <= 1/2`` gives
    a mean of at most ``alpha`` times the cap (CERTIFY abstains with probability >= 1 - alpha).
    """
    alpha = check_alpha(alpha)
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    k, pmf = _count_distribution(p_a, n)
    radius = _radius_of_count(k, int(n), alpha, float(sigma))
    mean = float(np.sum(pmf * radius))
    var = max(float(np.sum(pmf * radius ** 2)) - mean ** 2, 0.0)
    return ExpectedRadius(mean, float(np.sqrt(var)))


def certify_abstain_probability(p_a: float, n: int, alpha: float) -> float:
    """``P(p_lower(k) <= 1/2)`` for ``k ~ Binomial(n, p_a)``: how often CERTIFY's estimation step abstains.

    Like :func:`expected_certified_radius`, conditional on the selected class having
    probability ``p_a``. At ``p_a = 1/2`` it is at least ``1 - alpha``.
    """
    alpha = check_alpha(alpha)
    k, pmf = _count_distribution(p_a, n)
    return float(np.sum(pmf[_beta_lower(k.astype(float), float(n), alpha) <= 0.5]))


def selection_probability(p_a: float, n0: int, ties_to_top: bool = False) -> float:
    """Probability that the top class gets a majority of CERTIFY's ``n0`` selection votes.

    That is ``P(K > n0/2)`` for ``K ~ Binomial(n0, p_a)``; a tie (even ``n0``, ``K = n0/2``) is
    added only if ``ties_to_top`` (``numpy.argmax`` gives ties to the lower class index). With
    two classes it is the probability that selection picks the top class. With more classes a
    majority still implies a plurality, but the top class can also be selected with a
    plurality short of a majority, so the value is always a lower bound on the probability of
    selecting it; it is exact when the remaining mass ``1 - p_a`` belongs to a single class.
    """
    if not 0.0 <= float(p_a) <= 1.0:
        raise ValueError(f"p_a must lie in [0, 1], got {p_a!r}")
    if int(n0) != n0 or n0 < 1:
        raise ValueError(f"n0 must be an integer >= 1, got {n0!r}")
    n0 = int(n0)
    win = float(_st.binom.sf(n0 // 2, n0, p_a))   # P(K > floor(n0/2))
    if n0 % 2 == 0 and ties_to_top:
        win += float(_st.binom.pmf(n0 // 2, n0, p_a))
    return win
