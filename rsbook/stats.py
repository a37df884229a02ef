"""Exact binomial confidence bounds and the binomial test used by PREDICT.

Randomized smoothing turns "how often does the base classifier output class c under
noise" into a certificate. The frequency is a binomial count, so the guarantee rests on
exact (Clopper-Pearson) bounds for a binomial proportion, never on a normal approximation.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

from rsbook._checks import check_alpha

__all__ = ["clopper_pearson_lower", "clopper_pearson_upper", "binomial_test_pvalue"]


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
    with np.errstate(invalid="ignore"):
        lower = np.where(kf > 0, _st.beta.ppf(alpha, np.maximum(kf, 1), nf - kf + 1), 0.0)
    return _scalar_or_array(lower, k, n)


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
