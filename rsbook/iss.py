"""Input-Specific Sampling (ISS): spend Monte-Carlo samples where they buy certified radius.

Chen, Li, Yan, Li & Sheng, "Input-Specific Robustness Certification for Randomized
Smoothing" (AAAI 2022). CERTIFY (Cohen et al., 2019) spends the same number ``k`` of
noisy forward passes on every input ("input-agnostic sampling", IAS). ISS first looks at
a few samples, guesses how large ``p_A`` is, and then draws only as many samples as are
needed to stay within a chosen radius decline of what ``k_max`` (the paper's ``k̄``)
samples would certify.

The pieces, with the paper's numbering:

* :func:`radius_hat` -- ``R̂(k, p)``, the radius certified from ``k`` samples when the
  count is exactly ``p k`` (Sec. "Compare ISS(AD) to IAS", and the radii inside Def. 1).
* :func:`radius_decline` -- absolute (Def. 1, eq. 3) and relative (Def. 2, eq. 4) decline.
* :func:`sample_size` -- ``psi(p)``: the least ``k`` whose decline is within the bound
  (the ``argmin`` under eq. 5), by an exact integer bisection.
* :func:`build_mapping` / :class:`ISSMapping` -- the tabulated ``psi_ISS`` (Alg. 1, eq. 6).
* :func:`iss_certify` -- Alg. 2 for one input, in three variants (see below);
  :func:`ias_certify` -- the fixed-``k`` baseline; both return a :class:`SampledCertificate`.
* :func:`certify_dataset_iss` / :func:`certify_dataset_ias` -- the same log as
  :func:`rsbook.certify.certify_dataset` plus the sample size spent per input.
* :func:`failure_probability` -- the exact failure probability of each variant on a
  two-class problem with known ``p_A`` (the truth behind the soundness simulation).
* :func:`prop1_coverage` -- the exact probability that the planned ``k̂`` keeps the
  decline within the bound (Prop. 1), for the interval maximum and the paper's endpoint rule.
* :func:`equal_budget_gain` / :func:`equal_budget_comparison` -- the analytic ISS-vs-IAS
  comparison of the paper's Fig. 4a and its average over a model's ``p_A`` values.
* :func:`run_comparison`, :func:`compare_table`, :func:`prop1_check` -- the experiment of
  the paper's Tables 1/4/5, its layout (with the speed-ups over ``k_max``) and an
  empirical check of Prop. 1.

Statistical validity. Alg. 2 as printed picks the class and plans ``k̂`` from the first
``k0`` samples and then *reuses* them inside the final Clopper-Pearson bound, whose
sample size therefore depends on the data. A Clopper-Pearson bound is valid (coverage
``>= 1 - alpha``) only for a class and a sample size fixed before the counted samples are
drawn, so the printed algorithm has no ``1 - alpha`` guarantee. The variants:

* ``"fresh"`` (default): the ``k0`` samples only choose the class and plan ``k̂``; ``p_A``
  is bounded from ``k̂`` *new* samples. Given the first stage, ``k̂`` is a constant, so the
  bound is valid, as in CERTIFY. Price: ``k0`` more forward passes per input.
* ``"printed"``: Alg. 2 literally. ``max(k̂ - k0, 0)`` new samples; the bound counts the
  first ``k̂`` samples (lines 7-8), i.e. only ``k̂`` of the ``k0`` first-stage samples when
  ``k̂ < k0``.
* ``"reuse"``: our earlier reading, the bound counts all ``max(k̂, k0)`` samples drawn.

Props. 1-2 of the paper are stated for AD; for RD, Prop. 1 needs ``k̂`` to be the maximum
of ``psi_ISS`` over the whole interval ``[p_low, p_up]`` (see :meth:`ISSMapping.plan`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import brentq
from scipy.special import ndtri

from rsbook._checks import check_alpha, check_choice, check_positive_float, check_positive_int
from rsbook.analysis import acr, certified_accuracy, read_log
from rsbook.certify import certify_dataset
from rsbook.smooth import ABSTAIN, Certificate, Smooth
from rsbook.stats import beta_lower_bound, clopper_pearson_lower, clopper_pearson_upper

__all__ = ["DECLINE_KINDS", "VARIANTS", "ISS_COLUMNS", "radius_hat", "radius_decline", "sample_size",
           "ISSMapping", "build_mapping", "SampledCertificate", "iss_certify", "ias_certify",
           "certify_dataset_iss", "certify_dataset_ias", "p_a_hat", "matching_ias_size", "compare_table",
           "Prop1Check", "prop1_check", "prop1_coverage", "expected_planned_size", "expected_cost", "sigma_for_sample_sizes", "failure_probability",
           "run_comparison", "matched_pairs", "PLAN_RULES", "equal_budget_gain", "equal_budget_comparison", "p_a_ends", "cap_account"]

#: "AD": absolute decline (Def. 1), "RD": relative decline (Def. 2)
DECLINE_KINDS = ("AD", "RD")
#: "fresh": valid (k0 only selects and plans); "printed": Alg. 2 literally; "reuse": counts all samples drawn
VARIANTS = ("fresh", "printed", "reuse")
#: how k̂ is planned from [p_low, p_up]: "interval" (max of psi_ISS over it) or "endpoints" (eq. 5 as printed)
PLAN_RULES = ("interval", "endpoints")
#: columns :func:`certify_dataset_iss` / :func:`certify_dataset_ias` add to the standard log
ISS_COLUMNS = ("sample_size", "k_hat", "p_low", "p_up")


# ----------------------------------------------------------------------------- R̂(k, p)
def radius_hat(k, p, sigma: float, alpha: float):
    """``R̂(k, p) = sigma * Phi^{-1}(B(alpha; p k, k - p k + 1))``, clipped at 0.

    The radius CERTIFY would report from ``k`` samples if the top class got exactly the
    expected share ``p`` of them (Remark 1 of the paper: "fixing ``k_A/k = p_A``"). Our
    reconstruction of the garbled formulas: Def. 1/2 and Fig. 3 use shape parameters
    ``(p k, k - p k + 1)`` (Alg. 1 prints the abbreviation ``B(alpha; p k, k)``); the
    count ``p k`` may be fractional (see :func:`rsbook.stats.beta_lower_bound`). A bound ``<= 1/2`` means
    CERTIFY abstains, i.e. radius 0, and ``k = 0`` samples certify nothing, also radius 0.
    With this convention ``psi(p) = 0`` of Alg. 1 (lines 5-6) is simply the case where
    zero samples already meet the decline bound. Broadcasts over ``k`` and ``p``.
    """
    sigma = check_positive_float(sigma, "sigma")
    alpha = check_alpha(alpha)
    k = np.asarray(k, dtype=float)
    p = np.asarray(p, dtype=float)
    lower = np.asarray(beta_lower_bound(p * k, k, alpha))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sigma * ndtri(lower)
    r = np.where(lower > 0.5, r, 0.0)
    return float(r) if r.ndim == 0 else r


def radius_decline(k, k_max: int, p, sigma: float, alpha: float, kind: str = "AD"):
    """Expected radius decline of ``k`` samples against ``k_max`` samples at ``p_A = p``.

    ``kind="AD"``: ``R̂(k_max, p) - R̂(k, p)`` (Def. 1, eq. 3); ``kind="RD"``: the same
    divided by ``R̂(k_max, p)`` (Def. 2, eq. 4), defined as 0 where ``R̂(k_max, p) = 0``.
    """
    check_choice(kind, DECLINE_KINDS, "kind")
    k_max = check_positive_int(k_max, "k_max")
    top = radius_hat(k_max, p, sigma, alpha)
    drop = np.asarray(top - radius_hat(k, p, sigma, alpha), dtype=float)
    if kind == "RD":
        top = np.broadcast_to(np.asarray(top, dtype=float), drop.shape)
        drop = np.divide(drop, top, out=np.zeros_like(drop), where=top > 0)
    return float(drop) if drop.ndim == 0 else drop


# ----------------------------------------------------------------------------- psi(p)
def _required_radius(p, k_max, sigma, alpha, max_decline, kind):
    """``r̃`` of Alg. 1, line 4: the least radius a smaller sample must still certify."""
    top = radius_hat(k_max, p, sigma, alpha)
    return np.asarray(top - max_decline if kind == "AD" else (1.0 - max_decline) * top, dtype=float)


def sample_size(p, k_max: int, sigma: float, alpha: float, max_decline: float, kind: str = "AD"):
    """``psi(p)``: the least ``k`` in ``{0, ..., k_max}`` whose expected decline is within the bound.

    Eq. 5 of the paper: ``psi(p) = min{k : AD(k; k_max, p) <= U_AD}`` (``kind="AD"``) or
    ``min{k : RD(k; k_max, p) <= U_RD}`` (``kind="RD"``). It is 0 when the required radius
    ``r̃`` of Alg. 1 is not positive (in particular when ``R̂(k_max, p) = 0``, e.g.
    ``p <= 1/2``), and never above ``k_max`` (``k_max`` itself has decline 0).

    ``R̂(k, p)`` increases with ``k`` (the Beta quantile moves up as the sample grows at
    fixed share ``p``; checked against an exhaustive scan in the tests), so the feasible
    ``k`` form an interval ``[psi(p), k_max]`` and an integer bisection finds its left end
    exactly in ``ceil(log2 k_max)`` vectorised steps. Accepts a scalar or an array ``p``.
    """
    k_max = check_positive_int(k_max, "k_max")
    sigma = check_positive_float(sigma, "sigma")
    alpha = check_alpha(alpha)
    max_decline = check_positive_float(max_decline, "max_decline")
    check_choice(kind, DECLINE_KINDS, "kind")
    if kind == "RD" and max_decline >= 1:
        raise ValueError(f"max_decline for kind='RD' is a fraction in (0, 1), got {max_decline!r}")
    p_arr = np.atleast_1d(np.asarray(p, dtype=float))
    if np.any((p_arr < 0) | (p_arr > 1)) or np.any(np.isnan(p_arr)):
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    need = np.broadcast_to(_required_radius(p_arr, k_max, sigma, alpha, max_decline, kind), p_arr.shape)
    # invariant: lo is infeasible, hi is feasible (k = 0 certifies radius 0 < need)
    lo = np.zeros(p_arr.shape, dtype=np.int64)
    hi = np.full(p_arr.shape, k_max, dtype=np.int64)
    active = need > 0
    while True:
        idx = np.flatnonzero(active & (hi - lo > 1))
        if idx.size == 0:
            break
        mid = (lo[idx] + hi[idx]) // 2
        ok = radius_hat(mid, p_arr[idx], sigma, alpha) >= need[idx]
        hi[idx[ok]] = mid[ok]
        lo[idx[~ok]] = mid[~ok]
    out = np.where(active, hi, 0)
    return int(out[0]) if np.ndim(p) == 0 else out


def _jump_point(k_max, sigma, alpha, max_decline, kind) -> float:
    """The ``p*`` where ``r̃(p)`` turns positive, i.e. where ``psi`` jumps up from 0 (nan if never)."""
    # unclipped radius at k_max, increasing in p (the Beta(pk, k-pk+1) law increases stochastically)
    def raw(p):
        return sigma * ndtri(beta_lower_bound(p * k_max, k_max, alpha))

    target = max_decline if kind == "AD" else 0.0
    hi = 1.0
    if raw(hi) <= target:
        return math.nan
    return float(brentq(lambda p: raw(p) - target, 0.5, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps))


# ----------------------------------------------------------------------------- psi_ISS
@dataclass
class ISSMapping:
    """The piecewise-constant ``psi_ISS`` of Alg. 1 / eq. 6 on the grid ``p = 0, delta, ..., 1``.

    ``values[N] = psi(N delta)``; ``cells[N]`` is the value on the open cell
    ``(N delta, (N + 1) delta)``: the larger of its two end values (eq. 6), and, for RD, in
    the one cell containing the jump point ``p*`` where ``psi`` leaps up from 0, ``k_max``
    (the limit of ``psi`` just right of ``p*``). The paper calls ``psi_ISS >= psi`` obvious;
    that holds when ``psi`` is monotone (AD) but eq. 6 as printed breaks it for RD in the
    jump cell, where ``psi`` is close to ``k_max`` while both end values can be far smaller
    (``printed_eq6=True`` in :func:`build_mapping` reproduces that, for comparison). That
    correction matters only within about ``delta`` of ``p*``.
    Call it on ``p`` for ``psi_ISS(p)``; :meth:`plan` gives the ``k̂`` of eq. 5.
    """

    k_max: int
    sigma: float
    alpha: float
    max_decline: float
    kind: str
    delta: float
    grid: np.ndarray
    values: np.ndarray
    cells: np.ndarray
    p_star: float
    build_seconds: float

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def __call__(self, p):
        """``psi_ISS(p)`` (eq. 6); vectorised."""
        p_arr = np.atleast_1d(np.asarray(p, dtype=float))
        if np.any((p_arr < 0) | (p_arr > 1)) or np.any(np.isnan(p_arr)):
            raise ValueError(f"p must lie in [0, 1], got {p!r}")
        scaled = p_arr * self.n_cells
        on_grid = scaled == np.floor(scaled)
        n1 = np.minimum(np.floor(scaled).astype(np.int64), self.n_cells - 1)
        out = np.where(on_grid, self.values[np.floor(scaled).astype(np.int64)], self.cells[n1])
        return int(out[0]) if np.ndim(p) == 0 else out

    def plan(self, p_low: float, p_up: float, rule: str = "interval") -> int:
        """``k̂`` for a confidence interval ``[p_low, p_up]`` of ``p_A`` (eq. 5).

        ``rule="interval"`` (default): the largest ``psi_ISS`` over the grid cells meeting the
        interval, so ``k̂ >= psi(p_A)`` for every ``p_A`` in it, which is what Prop. 1 needs.
        ``rule="endpoints"``: eq. 5 as printed, ``max(psi_ISS(p_low), psi_ISS(p_up))``. The
        two agree where ``psi`` is non-decreasing on the interval (AD). They differ for RD
        because ``psi_RD`` jumps from 0 to nearly ``k_max`` at ``p*``: an interval with
        ``p_low < p* < p_up`` has ``psi(p_low) = 0`` and a moderate ``psi(p_up)`` while its
        interior needs nearly ``k_max`` (a function that merely fell and rose would take its
        interval maximum at an endpoint). :func:`prop1_coverage` measures the consequence.
        """
        if not (0.0 <= p_low <= p_up <= 1.0):
            raise ValueError(f"need 0 <= p_low <= p_up <= 1, got p_low={p_low!r}, p_up={p_up!r}")
        check_choice(rule, PLAN_RULES, "rule")
        if rule == "endpoints":
            return int(max(self(p_low), self(p_up)))
        a = int(math.floor(p_low * self.n_cells))
        b = int(math.ceil(p_up * self.n_cells))
        if a == b:
            return int(self.values[a])
        return int(max(self.values[a:b + 1].max(), self.cells[a:b].max()))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table to ``path`` (``.npz``) so a later run can :meth:`load` it instead of rebuilding."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: getattr(self, k) for k in ("k_max", "sigma", "alpha", "max_decline", "kind", "delta",
                                              "p_star", "build_seconds")}
        np.savez(path, grid=self.grid, values=self.values, cells=self.cells, **{k: np.asarray(v) for k, v in meta.items()})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ISSMapping":
        with np.load(path) as z:
            return cls(int(z["k_max"]), float(z["sigma"]), float(z["alpha"]), float(z["max_decline"]),
                       str(z["kind"]), float(z["delta"]), z["grid"], z["values"], z["cells"], float(z["p_star"]),
                       float(z["build_seconds"]))


def build_mapping(k_max: int, sigma: float, alpha: float, max_decline: float, kind: str = "AD",
                  delta: float = 1e-3, printed_eq6: bool = False) -> ISSMapping:
    """Alg. 1: tabulate ``psi`` on ``p = 0, delta, ..., 1`` and extend it by eq. 6.

    ``1/delta`` must be an integer. ``build_seconds`` records the wall-clock time of the
    build (the quantity of the paper's Table 3). ``printed_eq6=True`` omits the RD jump-cell
    correction described in :class:`ISSMapping` (eq. 6 exactly as printed).
    """
    k_max = check_positive_int(k_max, "k_max")
    sigma = check_positive_float(sigma, "sigma")
    alpha = check_alpha(alpha)
    max_decline = check_positive_float(max_decline, "max_decline")
    check_choice(kind, DECLINE_KINDS, "kind")
    delta = check_positive_float(delta, "delta")
    n_cells = int(round(1.0 / delta))
    if n_cells < 1 or abs(n_cells * delta - 1.0) > 1e-9:
        raise ValueError(f"delta must divide 1 (1/delta an integer), got {delta!r}")
    start = time.perf_counter()
    grid = np.arange(n_cells + 1) / n_cells
    values = sample_size(grid, k_max, sigma, alpha, max_decline, kind)
    cells = np.maximum(values[:-1], values[1:])
    p_star = _jump_point(k_max, sigma, alpha, max_decline, kind)
    if kind == "RD" and not printed_eq6 and not math.isnan(p_star):
        # sup of psi on (p*, p* + eps) is k_max: r̃ -> 0+ there while R̂(k, p*) = 0 for every
        # k < k_max. (AD needs no fix: psi is non-decreasing, so the right end value bounds the cell.)
        n = min(int(math.floor(p_star * n_cells)), n_cells - 1)
        cells[n] = max(cells[n], k_max)
    seconds = time.perf_counter() - start
    return ISSMapping(k_max, sigma, alpha, max_decline, kind, 1.0 / n_cells, grid, values, cells, p_star, seconds)


def sigma_for_sample_sizes(targets: Mapping[float, int], k_max: int, alpha: float, max_decline: float,
                           sigmas: Sequence[float], kind: str = "AD") -> pd.DataFrame:
    """``psi(p)`` at each ``p`` in ``targets`` for each candidate ``sigma``, with the worst relative error.

    Used to recover the noise level the paper left unstated in its Fig. 3 discussion:
    the row with the smallest ``max_rel_error`` reproduces the stated sample sizes best.
    """
    rows = []
    ps = np.array(sorted(targets), dtype=float)
    want = np.array([targets[p] for p in sorted(targets)], dtype=float)
    for s in sigmas:
        got = np.asarray(sample_size(ps, k_max, s, alpha, max_decline, kind), dtype=float)
        row = {"sigma": float(s)}
        row.update({f"psi({p:g})": int(g) for p, g in zip(ps, got)})
        row["max_rel_error"] = float(np.max(np.abs(got - want) / want))
        rows.append(row)
    return pd.DataFrame(rows).set_index("sigma")


# ----------------------------------------------------------------------------- certification
@dataclass(frozen=True)
class SampledCertificate(Certificate):
    """A :class:`~rsbook.smooth.Certificate` plus how many samples it cost.

    ``sample_size`` counts every forward pass spent on the input (selection + estimation;
    for the variants that reuse the selection samples, ``n0 = 0`` and they are inside ``n``),
    ``k_hat`` is the planned estimation size (``psi`` for ISS, the fixed ``k`` for IAS),
    ``p_low``/``p_up`` the two-sided interval from the ``k0`` first-stage samples (nan for IAS).
    """

    sample_size: int = 0
    k_hat: int = 0
    p_low: float = math.nan
    p_up: float = math.nan


def iss_certify(smooth: Smooth, x: torch.Tensor, mapping: ISSMapping, k0: int, alpha: float | None = None,
                variant: str = "fresh", batch_size: int = 1000, rule: str = "interval") -> SampledCertificate:
    """Alg. 2: certify ``x`` with an input-specific number of samples. Unpacks as ``(class, radius)``.

    1. ``k0`` samples: the top class ``c`` and its count ``k_A^0``; the two-sided
       ``1 - alpha`` Clopper-Pearson interval ``[p_low, p_up]`` (``alpha/2`` per side, Alg. 2 line 4).
    2. ``k̂ = mapping.plan(p_low, p_up, rule)`` (eq. 5).
    3. ``variant="fresh"``: ``k̂`` new samples, ``p_lower`` from them alone (abstain if
       ``k̂ = 0``: zero samples certify nothing, which by construction of ``psi`` is within
       the decline bound). Cost ``k0 + k̂``; the log's ``n0`` is ``k0``. The bound is valid
       because ``k̂`` is fixed before the samples it is computed from are drawn.
       ``variant="printed"``: Alg. 2 lines 6-8 literally: ``max(k̂ - k0, 0)`` new samples
       and ``p_lower`` from the first ``k̂`` samples; when ``k̂ < k0`` those are ``k̂`` of the
       ``k0`` first-stage samples, drawn here by hypergeometric thinning of the first-stage
       counts (equal in law to keeping the first ``k̂`` of ``k0`` i.i.d. samples). Cost
       ``max(k̂, k0)``.
       ``variant="reuse"``: ``p_lower`` from all ``max(k̂, k0)`` samples drawn. Cost ``max(k̂, k0)``.
       For both, the selection samples are part of ``n``, so the log records ``n0 = 0``.
       We count the votes of ``c``; line 7 prints a max over classes, which agrees unless
       the top class changes after the first stage.

    ``alpha`` defaults to the mapping's (the level ``psi`` was planned for).
    """
    check_choice(variant, VARIANTS, "variant")
    k0 = check_positive_int(k0, "k0")
    alpha = mapping.alpha if alpha is None else check_alpha(alpha)
    if not math.isclose(smooth.sigma, mapping.sigma, rel_tol=1e-9):
        raise ValueError(f"the mapping was built for sigma={mapping.sigma}, the smoothed classifier has "
                         f"sigma={smooth.sigma}; build the mapping for the model's sigma")
    counts0 = smooth.sample_counts(x, k0, batch_size)
    candidate = int(np.argmax(counts0))
    k_a0 = int(counts0[candidate])
    p_low = float(clopper_pearson_lower(k_a0, k0, alpha / 2))
    p_up = float(clopper_pearson_upper(k_a0, k0, alpha / 2))
    k_hat = mapping.plan(p_low, p_up, rule)
    extra = {"k_hat": k_hat, "p_low": p_low, "p_up": p_up}
    if variant == "fresh":
        if k_hat == 0:
            return SampledCertificate(ABSTAIN, 0.0, 0, 0, 0.0, k0, sample_size=k0, **extra)
        count = int(smooth.sample_counts(x, k_hat, batch_size)[candidate])
        cert, n_total = smooth.certificate_from_count(candidate, count, k_hat, alpha, n0=k0), k0 + k_hat
    elif variant == "printed" and k_hat < k0:
        n_total = k0
        if k_hat == 0:
            return SampledCertificate(ABSTAIN, 0.0, 0, 0, 0.0, 0, sample_size=n_total, **extra)
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=smooth.generator, device=smooth.generator.device))
        kept = np.random.default_rng(seed).multivariate_hypergeometric(counts0.astype(np.int64), k_hat)
        cert = smooth.certificate_from_count(candidate, int(kept[candidate]), k_hat, alpha, n0=0)
    else:
        more = max(k_hat - k0, 0)
        counts = counts0 + (smooth.sample_counts(x, more, batch_size) if more > 0 else 0)
        n_total = k0 + more
        cert = smooth.certificate_from_count(candidate, int(counts[candidate]), n_total, alpha, n0=0)
    return SampledCertificate(cert.prediction, cert.radius, cert.count, cert.n, cert.p_lower, cert.n0,
                              sample_size=n_total, **extra)


def ias_certify(smooth: Smooth, x: torch.Tensor, k: int, n0: int, alpha: float,
                batch_size: int = 1000) -> SampledCertificate:
    """Input-agnostic sampling: CERTIFY with a fixed ``n = k`` for every input (cost ``n0 + k``)."""
    cert = smooth.certify(x, n0, k, alpha, batch_size)
    return SampledCertificate(cert.prediction, cert.radius, cert.count, cert.n, cert.p_lower, cert.n0,
                              sample_size=n0 + cert.n, k_hat=cert.n)


def certify_dataset_iss(smooth: Smooth, dataset, mapping: ISSMapping, k0: int, out: str | os.PathLike,
                        alpha: float | None = None, variant: str = "fresh", batch_size: int = 1000,
                        rule: str = "interval", **kwargs) -> Path:
    """ISS over a dataset through :func:`rsbook.certify.certify_dataset` (resumable log + :data:`ISS_COLUMNS`).

    ``kwargs`` (``skip``, ``max_examples``, ``shard``, ``seed``, ``progress``) go to ``certify_dataset``.
    """
    alpha = mapping.alpha if alpha is None else check_alpha(alpha)
    check_choice(variant, VARIANTS, "variant")
    check_choice(rule, PLAN_RULES, "rule")
    settings = {"certifier": "iss", "variant": variant, "rule": rule, "mapping": _mapping_identity(mapping)}
    return certify_dataset(smooth, dataset, k0, mapping.k_max, alpha, out, batch_size=batch_size,
                           certify_fn=lambda x: iss_certify(smooth, x, mapping, k0, alpha, variant, batch_size, rule),
                           extra_columns=ISS_COLUMNS, settings=settings, **kwargs)


def _mapping_identity(mapping: ISSMapping) -> dict:
    """What makes one ISS mapping differ from another, for the log's settings record."""
    import hashlib

    values = hashlib.sha1(np.ascontiguousarray(mapping.values).tobytes()).hexdigest()[:16]
    return {"k_max": mapping.k_max, "sigma": mapping.sigma, "alpha": mapping.alpha, "kind": mapping.kind,
            "max_decline": mapping.max_decline, "delta": mapping.delta, "values_sha1": values}


def certify_dataset_ias(smooth: Smooth, dataset, k: int, n0: int, alpha: float, out: str | os.PathLike,
                        batch_size: int = 1000, **kwargs) -> Path:
    """IAS (fixed ``k``) over a dataset; same log format as :func:`certify_dataset_iss`."""
    return certify_dataset(smooth, dataset, n0, k, alpha, out, batch_size=batch_size,
                           certify_fn=lambda x: ias_certify(smooth, x, k, n0, alpha, batch_size),
                           extra_columns=ISS_COLUMNS, settings={"certifier": "ias"}, **kwargs)


# ----------------------------------------------------------------------------- analysis
def _frame(log) -> pd.DataFrame:
    return log if isinstance(log, pd.DataFrame) else read_log(log)


def p_a_hat(log) -> np.ndarray:
    """Estimated ``p_A`` per input, ``count / n`` of the selected class (the paper's Fig. 4b uses 10^6 samples)."""
    frame = _frame(log)
    return (frame["count"] / frame["n"].where(frame["n"] > 0)).fillna(0.0).to_numpy(dtype=float)


def p_a_ends(log, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two ends of what a log says about each input's ``p_A``, for a question decided near ``p_A = 1``.

    Returns the plug-in ``p̂_A = count / n`` (:func:`p_a_hat`) and the same with every
    *unanimous* input (``count = n``, so ``p̂_A = 1`` exactly, whatever its true ``p_A``)
    moved down to its one-sided ``1 - alpha`` Clopper-Pearson lower bound ``alpha^{1/n}``.
    With ``n`` samples a unanimous input's ``p_A`` lies between the two with probability at
    least ``1 - alpha``; other inputs keep ``p̂_A`` at both ends. Where an answer (e.g. the
    sign of :func:`equal_budget_comparison`) is the same at both ends, the estimate's
    resolution does not decide it.
    """
    alpha = check_alpha(alpha)
    frame = _frame(log)
    p_hat = p_a_hat(frame)
    n = frame["n"].to_numpy(dtype=float)
    unanimous = (frame["count"].to_numpy() == frame["n"].to_numpy()) & (n > 0)
    low = np.where(unanimous, alpha ** (1.0 / np.where(n > 0, n, 1.0)), p_hat)
    return p_hat, low


def _is_fresh_iss(name: str) -> bool:
    return name.startswith("ISS") and "(" not in name


def matched_pairs(logs: Mapping[str, object], k0: int) -> dict[str, str]:
    """``{ISS log name: name of the IAS log of equal average cost}`` for the logs of :func:`run_comparison`."""
    pairs = {}
    for name, log in logs.items():
        if _is_fresh_iss(name):
            ias = f"IAS-{matching_ias_size(log, k0)}"
            if ias in logs:
                pairs[name] = ias
    return pairs


def matching_ias_size(log, n0: int) -> int:
    """The fixed ``k`` whose cost ``n0 + k`` matches the average ``sample_size`` of an ISS log (at least 1)."""
    n0 = check_positive_int(n0, "n0")
    return max(1, int(round(_frame(log)["sample_size"].mean() - n0)))


def _declines(reference, log) -> np.ndarray:
    ref, other = _frame(reference), _frame(log)
    merged = ref[["idx", "radius"]].merge(other[["idx", "radius"]], on="idx", suffixes=("_ref", ""))
    if len(merged) != len(other):
        raise ValueError("the log has inputs the reference log lacks; certify the same indices")
    return (merged["radius_ref"] - merged["radius"]).to_numpy(dtype=float)


def compare_table(logs: Mapping[str, object], reference, radii: Sequence[float],
                  time: bool = False) -> pd.DataFrame:
    """The layout of the paper's Tables 1, 4 and 5, one row per named log.

    ``reference`` is the log of certification at ``k_max`` (or its name in ``logs``).
    ``Avg``: mean forward passes per input; ``MAD``: the largest per-input decline of the
    certified radius against the reference (abstain counts as radius 0); ``ACR`` and
    certified accuracy (%) at ``radii``. ``time=True`` adds the total certification
    wall-clock ``Time (s)`` and the speed-ups over the reference in samples and in time
    (kept out by default so the table is reproducible to the digit).
    """
    ref = _frame(logs[reference] if isinstance(reference, str) else reference)

    def cost(frame):
        return float(frame["sample_size"].mean()) if "sample_size" in frame else float((frame["n"] + frame["n0"]).mean())

    rows = []
    for name, log in logs.items():
        frame = _frame(log)
        row = {"method": name, "Avg": cost(frame)}
        if time:
            row["Time (s)"] = float(frame["time"].sum())
            row["speed-up (samples)"] = cost(ref) / row["Avg"]
            row["speed-up (time)"] = float(ref["time"].sum()) / row["Time (s)"]
        row["MAD"] = float(np.max(_declines(ref, frame)))
        row["ACR"] = acr(frame)
        row.update({f"{r:g}": 100 * a for r, a in zip(radii, certified_accuracy(frame, list(radii)))})
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


@dataclass
class Prop1Check:
    """Empirical Prop. 1 on one ISS log against the ``k_max`` reference log.

    ``plug_in``: fraction of inputs whose planned ``k̂`` satisfies ``AD(k̂; k_max, p̂) <= U``
    (or RD), with ``p̂`` the reference run's ``count / n`` standing in for the unknown ``p_A``
    -- this is the statement of Prop. 1. ``realized``: fraction whose *certified* radius
    dropped by at most ``U`` against the reference run (AD: absolute, RD: relative), which
    also carries the Monte-Carlo noise of both runs. ``mad``: the largest realised drop.
    """

    plug_in: float
    realized: float
    mad: float
    n: int
    bound: float
    kind: str

    def __str__(self) -> str:
        return (f"Prop. 1 ({self.kind} <= {self.bound:g}) on {self.n} inputs: planned k_hat meets the bound for "
                f"{100 * self.plug_in:.1f}% (plug-in p_A), certified radius within the bound for "
                f"{100 * self.realized:.1f}%; MAD = {self.mad:.4f}")


def prop1_check(reference, iss_log, mapping: ISSMapping) -> Prop1Check:
    """Check Prop. 1 empirically (see :class:`Prop1Check`); logs must cover the same inputs."""
    ref, log = _frame(reference), _frame(iss_log)
    merged = ref[["idx", "radius", "count", "n"]].merge(log[["idx", "radius", "k_hat"]], on="idx",
                                                           suffixes=("_ref", ""))
    p_hat = (merged["count"] / merged["n"]).to_numpy(dtype=float)
    planned = radius_decline(merged["k_hat"].to_numpy(), mapping.k_max, p_hat, mapping.sigma, mapping.alpha,
                             mapping.kind)
    drop = (merged["radius_ref"] - merged["radius"]).to_numpy(dtype=float)
    ref_r = merged["radius_ref"].to_numpy(dtype=float)
    if mapping.kind == "RD":
        drop_rel = np.divide(drop, ref_r, out=np.zeros_like(drop), where=ref_r > 0)
        realized = drop_rel <= mapping.max_decline + 1e-12
    else:
        realized = drop <= mapping.max_decline + 1e-12
    return Prop1Check(float(np.mean(planned <= mapping.max_decline + 1e-12)), float(np.mean(realized)),
                      float(drop.max()), len(merged), mapping.max_decline, mapping.kind)


def prop1_coverage(p_a: float, mapping: ISSMapping, k0: int, rule: str = "interval",
                   alpha: float | None = None) -> float:
    """Exact ``P(decline(k̂; k_max, p_A) <= U)`` over the first-stage count ``j ~ Binomial(k0, p_A)`` (Prop. 1).

    ``k̂ = mapping.plan(p_low(j), p_up(j), rule)`` with the two-sided ``1 - alpha`` interval of
    Alg. 2; Prop. 1 claims at least ``1 - alpha`` (the paper proves it for AD). For RD the
    printed endpoint rule (``rule="endpoints"``) falls far short near the jump ``p*``.
    """
    k_hat, weights = _planned_sizes(p_a, mapping, k0, rule, alpha)
    ok = radius_decline(k_hat, mapping.k_max, float(p_a), mapping.sigma, mapping.alpha, mapping.kind)
    return float(weights[np.asarray(ok) <= mapping.max_decline + 1e-12].sum())


def _planned_sizes(p_a: float, mapping: ISSMapping, k0: int, rule: str, alpha: float | None):
    """Every planned ``k̂`` of Alg. 2 with its probability: one per first-stage count ``j ~ Binomial(k0, p_A)``."""
    from scipy.stats import binom

    check_choice(rule, PLAN_RULES, "rule")
    k0 = check_positive_int(k0, "k0")
    if not 0.0 <= float(p_a) <= 1.0:
        raise ValueError(f"p_a must lie in [0, 1], got {p_a!r}")
    alpha = mapping.alpha if alpha is None else check_alpha(alpha)
    j = np.arange(k0 + 1)
    weights = binom.pmf(j, k0, float(p_a))
    keep = weights >= 1e-300
    j, weights = j[keep], weights[keep]
    lows, ups = clopper_pearson_lower(j, k0, alpha / 2), clopper_pearson_upper(j, k0, alpha / 2)
    k_hat = np.array([mapping.plan(float(a), float(b), rule) for a, b in zip(lows, ups)], dtype=np.int64)
    return k_hat, weights


def expected_cost(p_a: float, mapping: ISSMapping, k0: int, variant: str = "fresh", rule: str = "interval",
                  alpha: float | None = None) -> float:
    """Exact expected forward passes per input of Alg. 2 at ``p_A = p_a``: pilot and estimation together.

    ``variant="fresh"`` draws ``k0`` pilot samples and then ``k̂`` new ones: ``k0 + E[k̂]``.
    ``"printed"`` and ``"reuse"`` count the pilot's samples into the estimate and draw
    ``max(k̂ - k0, 0)`` more: ``E[max(k̂, k0)]``. The expectation is over the pilot's
    ``Binomial(k0, p_A)`` count, as in :func:`expected_planned_size`.
    """
    check_choice(variant, VARIANTS, "variant")
    k_hat, weights = _planned_sizes(p_a, mapping, k0, rule, alpha)
    per_pilot = k0 + k_hat if variant == "fresh" else np.maximum(k_hat, k0)
    return float(np.sum(weights * per_pilot) / np.sum(weights))


def expected_planned_size(p_a: float, mapping: ISSMapping, k0: int, rule: str = "interval",
                          alpha: float | None = None) -> float:
    """Exact ``E[k̂]`` at ``p_A = p_a``: the second-stage sample size Alg. 2 plans, averaged over the pilot.

    The pilot count is ``j ~ Binomial(k0, p_A)``; each ``j`` gives the two-sided interval and the
    plan ``k̂ = mapping.plan(p_low(j), p_up(j), rule)``, as in :func:`prop1_coverage`. The
    ``k0`` pilot samples are not included (add them for the total cost). For RD the valid
    ``"interval"`` rule plans nearly ``k_max`` wherever the interval can reach the jump ``p*``,
    which is the price of keeping Prop. 1's guarantee there.
    """
    k_hat, weights = _planned_sizes(p_a, mapping, k0, rule, alpha)
    return float(np.sum(weights * k_hat) / np.sum(weights))


# ----------------------------------------------------------------------------- ISS vs IAS, analytically
def equal_budget_gain(p, k_max: int, k_ias: int, sigma: float, alpha: float, max_decline: float,
                      kind: str = "AD"):
    """``R̂(psi(p), p) - R̂(k_ias, p)``: what ISS certifies beyond IAS at ``p_A = p`` (the paper's Fig. 4a).

    ISS is represented by its sample size at the true ``p_A`` (``psi``, no planning
    interval); Fig. 4a uses ``k_max = 100,000``, ``U_AD = 0.05``, ``k_ias = 30,000`` (ISS's
    average on their ImageNet model) and finds ISS ahead for ``p_A > 0.94``.
    """
    k = sample_size(p, k_max, sigma, alpha, max_decline, kind)
    return radius_hat(k, p, sigma, alpha) - radius_hat(k_ias, p, sigma, alpha)


def equal_budget_comparison(p_values, k_max: int, sigma: float, alpha: float, max_decline: float,
                            kind: str = "AD") -> dict:
    """ISS against IAS at the same average sample size, analytically, over a model's ``p_A`` values.

    An *oracle* ISS: it spends ``psi(p)`` on an input with ``p_A = p``, as if ``p_A`` were
    known (no pilot, no planning interval, no ``k0``); IAS spends the average of those on
    every input. Pass the ``p_A`` of the inputs the smoothed classifier gets right. Returns
    the average sample size, ``k_ias``, the mean ``R̂`` of each (the analytic ACR over those
    inputs), their difference ``gain`` with its image-level standard error ``gain_se`` (the
    inputs as a sample of test inputs, ``k_ias`` held fixed), and the per-input ``R̂`` arrays
    ``r_iss``, ``r_ias``.
    """
    p = np.asarray(p_values, dtype=float)
    k_iss = np.asarray(sample_size(p, k_max, sigma, alpha, max_decline, kind), dtype=float)
    k_ias = max(1, int(round(k_iss.mean())))
    r_iss = np.asarray(radius_hat(k_iss, p, sigma, alpha), dtype=float)
    r_ias = np.asarray(radius_hat(k_ias, p, sigma, alpha), dtype=float)
    d = r_iss - r_ias
    return {"avg_samples": float(k_iss.mean()), "k_ias": k_ias, "mean_R_iss": float(r_iss.mean()),
            "mean_R_ias": float(r_ias.mean()), "gain": float(d.mean()),
            "gain_se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan,
            "share_psi_max": float(np.mean(k_iss == k_iss.max())) if len(k_iss) else math.nan,
            "r_iss": r_iss, "r_ias": r_ias}


def cap_account(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """How much of a published ISS-IAS gain at equal cost the radius cap can explain (Tables 1 and 5).

    ``table`` holds ISS rows (``method`` ``"ISS-AD-<k_bar/10^4>-<U>"``, ``sigma``, ``ACR``, and a
    certified-accuracy column per radius) each followed by its IAS row of equal cost (``Avg``).
    An input with ``p_A = 1`` is certified at the cap ``sigma Phi^{-1}(alpha^{1/n})`` of its sample
    size: ``psi(1)`` samples for ISS, the IAS row's ``Avg`` for IAS. Per pair this returns both caps,
    their difference, the ACR gain, the share of inputs at ``p_A ~ 1`` that would give the whole
    gain through the cap difference alone (``gain / cap difference``; a lower bound, since it ignores what
    ISS gives up on the other inputs), the most inputs the ISS row's average can give ``psi(1)`` samples
    (``Avg / psi(1)``), and the radius columns where
    ISS certifies and IAS certifies nothing, with ISS's accuracy there (inputs beyond IAS's cap).
    """
    from rsbook.stats import radius_cap

    alpha = check_alpha(alpha)
    radius_columns = [c for c in table.columns if c.replace(".", "", 1).isdigit()]
    rows = []
    for i in range(0, len(table) - 1, 2):
        iss_row, ias_row = table.iloc[i], table.iloc[i + 1]
        parts = str(iss_row["method"]).split("-")
        if len(parts) != 4 or parts[0] != "ISS" or not str(ias_row["method"]).startswith("IAS"):
            raise ValueError(f"expected an ISS row followed by its IAS row, got {iss_row['method']!r}, "
                             f"{ias_row['method']!r}")
        sigma, k_max, bound = float(iss_row["sigma"]), int(parts[2]) * 10_000, float(parts[3])
        psi_1 = int(sample_size(1.0, k_max, sigma, alpha, bound, parts[1]))
        cap_iss, cap_ias = float(radius_cap(sigma, alpha, psi_1)), float(radius_cap(sigma, alpha, int(ias_row["Avg"])))
        gain = float(iss_row["ACR"]) - float(ias_row["ACR"])
        beyond = {float(c): float(iss_row[c]) for c in radius_columns
                  if float(iss_row[c]) > 0 and float(ias_row[c]) == 0}
        rows.append({"sigma": sigma, "setting": iss_row["method"], "psi(1)": psi_1, "cap ISS": cap_iss,
                     "IAS k": int(ias_row["Avg"]), "cap IAS": cap_ias, "cap difference": cap_iss - cap_ias,
                     "ACR gain": gain, "share the cap needs (%)": 100 * gain / (cap_iss - cap_ias),
                     "most at psi(1) (%)": 100 * min(1.0, float(iss_row["Avg"]) / psi_1),
                     "ISS beyond IAS's cap (%)": ", ".join(f"{v:g} at r={r:g}" for r, v in beyond.items()) or "-"})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- exact failure probability
def failure_probability(p_a: float, mapping: ISSMapping, k0: int, alpha: float | None = None,
                        variant: str = "fresh", rule: str = "interval") -> float:
    """Exact probability that :func:`iss_certify` fails on a two-class problem with top-class probability ``p_a``.

    The setting of :mod:`rsbook.groundtruth`: a base classifier with two classes, the true
    one being class 1 with probability ``p_a >= 1/2`` under noise and exact radius
    ``sigma Phi^{-1}(p_a)``. A failure is a certificate (not ABSTAIN) for the wrong class,
    or for the right class with ``p_lower > p_a`` (radius above the truth). Sum over the
    first-stage count ``j ~ Binomial(k0, p_a)``: ``j`` fixes the class (``np.argmax``
    breaks a tie towards class 0), ``[p_low, p_up]`` and ``k̂``; the counted votes are then
    ``j``-dependent plus a binomial (``fresh``, ``reuse``, ``printed`` with ``k̂ >= k0``) or a
    hypergeometric (``printed`` with ``k̂ < k0``) variable, so each term is one tail. This is
    the truth the soundness simulation (:func:`rsbook.groundtruth.certify_failure_rate`) is
    checked against, and it shows where the printed Alg. 2 loses its ``1 - alpha`` guarantee.
    """
    from scipy.stats import binom, hypergeom

    check_choice(variant, VARIANTS, "variant")
    k0 = check_positive_int(k0, "k0")
    alpha = mapping.alpha if alpha is None else check_alpha(alpha)
    p_a = float(p_a)
    if not (0.5 <= p_a <= 1.0):
        raise ValueError(f"p_a must lie in [1/2, 1], got {p_a!r}")
    j = np.arange(k0 + 1)
    weights = binom.pmf(j, k0, p_a)
    keep = weights >= 1e-17  # all skipped terms together weigh < (k0 + 1) * 1e-17
    j, weights = j[keep], weights[keep]
    right = 2 * j > k0  # the first stage picks the true class (np.argmax breaks a tie towards class 0)
    k_top = np.where(right, j, k0 - j)  # first-stage votes of the picked class
    p_top = np.where(right, p_a, 1.0 - p_a)
    lows = clopper_pearson_lower(k_top, k0, alpha / 2)
    ups = clopper_pearson_upper(k_top, k0, alpha / 2)
    k_hat = np.array([mapping.plan(float(a), float(b), rule) for a, b in zip(lows, ups)], dtype=np.int64)
    thinned = (variant == "printed") & (k_hat < k0)
    if variant == "fresh":
        extra, base, n = k_hat, np.zeros_like(k_hat), k_hat
    else:
        extra = np.maximum(k_hat - k0, 0)
        base = np.where(thinned, 0, k_top)
        n = np.where(thinned, k_hat, k0 + extra)
    # the true class fails if p_lower > p_a; the wrong class as soon as it is certified (p_lower > 1/2)
    level = np.where(right, p_a, 0.5)
    # least count t with clopper_pearson_lower(t, n) > level, by a vectorised bisection
    # (invariant: bound(lo) <= level < bound(hi), with bound(-1) := 0 and bound(n + 1) := 1)
    lo, hi = np.full(len(j), -1, dtype=np.int64), n + 1
    while True:
        todo = np.flatnonzero(hi - lo > 1)
        if todo.size == 0:
            break
        mid = (lo[todo] + hi[todo]) // 2
        above = clopper_pearson_lower(mid, np.maximum(n[todo], 1), alpha) > level[todo]
        hi[todo[above]] = mid[above]
        lo[todo[~above]] = mid[~above]
    need = hi - base  # counted votes (beyond base) for the picked class needed to fail
    tail = np.where(need <= 0, 1.0, binom.sf(need - 1, extra, p_top))
    tail = np.where((need > 0) & (extra == 0), 0.0, tail)
    # printed, k_hat < k0: the counted votes are the picked class's among k_hat of the k0 first-stage samples
    tail = np.where(thinned, hypergeom.sf(need - 1, k0, k_top, np.maximum(k_hat, 0)), tail)
    tail = np.where(n == 0, 0.0, tail)
    return float(np.sum(weights * tail))


# ----------------------------------------------------------------------------- experiment driver
def run_comparison(smooth: Smooth, dataset, out_dir: str | os.PathLike, k_max: int, k0: int, alpha: float,
                   ad_bounds: Sequence[float] = (0.05,), rd_bounds: Sequence[float] = (),
                   ias_sizes: Sequence[int] = (), printed_variant: bool = True, delta: float = 1e-3,
                   batch_size: int = 1000, **kwargs) -> dict[str, Path]:
    """Certify ``dataset`` at ``k_max`` and with ISS/IAS the way the paper's Tables 1, 4 and 5 do.

    Writes (or resumes) under ``out_dir``: the reference log (CERTIFY at ``k_max`` with
    ``n0 = k0``, named ``"k_max"``), one ISS log per bound (``"ISS-AD-0.05"``, ``"ISS-RD-0.01"``;
    the valid ``variant="fresh"``), Alg. 2 as printed for the first bound
    (``"ISS-AD-0.05 (printed)"``, if ``printed_variant``), for each fresh ISS log an IAS log of
    equal average cost (``"IAS-1234"``: ``n0 = k0`` plus ``k`` estimation samples) and IAS at
    the extra ``ias_sizes``. Returns ``{name: log path}`` in that order; ``kwargs`` go to
    :func:`rsbook.certify.certify_dataset` (``skip``, ``max_examples``, ``seed``, ``progress``).
    The file names carry every setting that changes a log, so a changed setting never reuses one.
    """
    out_dir = Path(out_dir)
    k_max, k0 = check_positive_int(k_max, "k_max"), check_positive_int(k0, "k0")
    tag = f"k{k_max}_n0{k0}_a{alpha:g}"
    logs: dict[str, Path] = {"k_max": certify_dataset_ias(smooth, dataset, k_max, k0, alpha,
                                                          out_dir / f"certify_{tag}.tsv", batch_size, **kwargs)}
    bounds = [("AD", u) for u in ad_bounds] + [("RD", u) for u in rd_bounds]
    for i, (kind, u) in enumerate(bounds):
        name = f"ISS-{kind}-{u:g}"
        mapping = build_mapping(k_max, smooth.sigma, alpha, u, kind, delta)
        stem = f"iss_{kind}{u:g}_{tag}_d{delta:g}"
        logs[name] = certify_dataset_iss(smooth, dataset, mapping, k0, out_dir / f"{stem}.tsv", alpha, "fresh",
                                         batch_size, **kwargs)
        if printed_variant and i == 0:
            logs[f"{name} (printed)"] = certify_dataset_iss(smooth, dataset, mapping, k0,
                                                            out_dir / f"{stem}_printed.tsv", alpha, "printed",
                                                            batch_size, **kwargs)
    for name in [n for n in logs if _is_fresh_iss(n)]:
        k = matching_ias_size(logs[name], k0)
        logs[f"IAS-{k}"] = certify_dataset_ias(smooth, dataset, k, k0, alpha, out_dir / f"ias_k{k}_n0{k0}_a{alpha:g}.tsv",
                                               batch_size, **kwargs)
    for k in ias_sizes:
        k = check_positive_int(k, "ias_sizes")
        if f"IAS-{k}" not in logs and k != k_max:
            logs[f"IAS-{k}"] = certify_dataset_ias(smooth, dataset, k, k0, alpha,
                                                   out_dir / f"ias_k{k}_n0{k0}_a{alpha:g}.tsv", batch_size, **kwargs)
    return logs
