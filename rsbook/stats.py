"""Exact binomial confidence bounds and the binomial test used by PREDICT.

Randomized smoothing turns "how often does the base classifier output class c under
noise" into a certificate. The frequency is a binomial count, so the guarantee rests on
exact (Clopper-Pearson) bounds for a binomial proportion, never on a normal approximation.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st
from scipy.special import betaincinv

from rsbook._checks import check_alpha

__all__ = ["clopper_pearson_lower", "clopper_pearson_upper", "beta_lower_bound", "binomial_test_pvalue", "radius_cap"]


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
