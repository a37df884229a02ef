"""Claim checks: the sentences of a chapter that state a result of training, asserted with statistics.

A trained network's last digits differ between machines (floating-point summation order,
chaotic training), so a chapter never locks them. Instead every claim about a trained
result ("SmoothAdv certifies more than Gaussian at r = 0.5", "our ACR is within 0.05 of the
paper") is checked with a tolerance derived from its standard error:

* :meth:`Claims.paired` -- a difference on the *same* test images, ``mean(a - b)`` against
  ``n_se`` times its paired standard error ``sd(a - b) / sqrt(N)``;
* :meth:`Claims.at_least` / :meth:`Claims.at_most` -- a measured value against a bound,
  with slack ``n_se * se`` (e.g. the binomial standard error of an accuracy);
* :meth:`Claims.within` -- ``|value - target| <= tol``, the tolerance stated with its reason;
* :meth:`Claims.holds` -- an exact fact (e.g. "no certificate was broken");
* :meth:`Claims.over_seeds` -- a claim about *methods* (or their hyper-parameters): the
  per-seed paired difference on the same test images, averaged over ``S >= 3``
  independently trained seeds, with a t interval whose standard error counts the seeds and the
  test images (:func:`seed_difference`). Test images answer "do these two networks differ?"; seeds
  answer "do the methods differ?", which is what a chapter's prose claims. A "not worse
  than" claim states its margin and where the margin comes from; the paper's effect is
  shown beside ours;
* :meth:`Claims.bound` -- no verdict: the one-sided bound of a seed-level difference and
  what it rules out (for an effect the default budget cannot resolve); :meth:`Claims.paired_bound`
  does the same for a fact about one network (image-level).

:meth:`Claims.report` prints one row per claim and raises ``AssertionError`` naming every
failed one, so a notebook whose prose stops being true stops executing. The helpers below
turn certification logs into the per-example arrays the checks need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["Claims", "ClaimResult", "per_example_radius", "certified_at", "plug_in_certified_at", "share_needed", "certified_at_budget", "paired_difference", "binomial_se",
           "ClaimFailed", "SeedDifference", "seed_difference", "MIN_SEEDS"]

#: seeds a claim about training methods needs (issue: "several trained seeds")
MIN_SEEDS = 3


class ClaimFailed(AssertionError):
    """A chapter's claim is not supported by this run's numbers."""


@dataclass(frozen=True)
class ClaimResult:
    claim: str
    measured: str
    tolerance: str
    passed: bool | None  # None: reported, not checked
    seeds: str = ""
    paper: str = ""      # the paper's effect, and how ours compares with it


@dataclass(frozen=True)
class SeedDifference:
    """A method difference over independently trained seeds (see :func:`seed_difference`)."""

    mean: float          # mean over seeds of the per-seed paired difference
    se: float            # its standard error over seeds *and* test images (see seed_difference)
    seeds: int           # S
    level: float         # confidence level of ``lower``/``upper``
    lower: float         # two-sided interval (see seed_difference)
    upper: float
    lower_one_sided: float   # one-sided bound at ``level``: the difference is >= this
    upper_one_sided: float   # ... and <= this
    per_seed: tuple[float, ...]
    image_se: float      # the image-level paired SE pooling all seeds' images (ignores seed variance)
    seed_se: float = float("nan")   # sd(d_s) / sqrt(S): the seed part alone (test images held fixed)
    images: int = 0      # N, the test images every seed was certified on (0: they differ between seeds)

    def __str__(self) -> str:
        over = f"{self.seeds} seeds x {self.images} images" if self.images else f"{self.seeds} seeds"
        return (f"{_fmt(self.mean)} [{_fmt(self.lower)}, {_fmt(self.upper)}] "
                f"({100 * self.level:g}% t-interval over {over})")

    def versus(self, paper: float) -> str:
        """How the paper's effect compares with ours: consistent, smaller, larger or opposite.

        *consistent*: the paper's value lies in our interval; *opposite*: our interval
        excludes 0 on the other side of the paper's sign; otherwise our effect is
        *smaller* or *larger* in size than the paper's (and the interval excludes it).
        """
        if (self.upper < 0 < paper) or (self.lower > 0 > paper):
            return "opposite"
        if self.lower <= paper <= self.upper:
            return "consistent"
        return "smaller" if abs(self.mean) < abs(paper) else "larger"


def seed_difference(a_by_seed: Sequence[Sequence[float]], b_by_seed: Sequence[Sequence[float]],
                    level: float = 0.95) -> SeedDifference:
    """Mean over seeds of ``mean_i(a_si - b_si)``, with a t interval over seeds and test images.

    ``a_by_seed[s]`` and ``b_by_seed[s]`` are per-example values (e.g. :func:`certified_at`,
    :func:`per_example_radius`) of the two methods trained with seed ``s``, on the same test
    examples. Each seed gives one paired difference ``d_s``; the estimate is ``mean(d_s)``.
    Two sources of error are in its standard error, as in a two-way layout
    ``d_si = mu + a_s + b_i + e_si``: the training seeds (``a_s``, which the image-level SE
    leaves out) and the test images (``b_i``: a method may be better on some digits than on
    others, and another test sample would hold other digits). When every seed was certified
    on the same N images,

        se^2 = var_s(d_s) / S + var_i(dbar_i) / N - MS_e / (S N),

    with ``dbar_i`` the per-image difference averaged over seeds and ``MS_e`` the residual
    mean square of the two-way table (the last term removes the interaction counted twice):
    this is ``(MS_seed + MS_image - MS_e) / (S N)`` of the two-way analysis of variance, with the
    image component ``MS_image - MS_e`` kept >= 0, so it is never below the seed part
    ``var_s(d_s) / S`` alone (``seed_se``). With images that differ between seeds only the seed
    part is available. The interval gives each part its own Student t quantile, ``S - 1``
    degrees of freedom for the seed part and ``N - 1`` for the image part, and adds the two
    half-widths in quadrature (in the manner of Graybill and Wang's intervals for sums of
    variance components): with no image part it is the seed-level t interval (with 3 seeds its
    half-width is 4.30 seed SE at 95%, the honest price of 3 seeds), and when both parts are of
    the same size it keeps its coverage, where one pooled t with Satterthwaite's degrees of
    freedom under-covers. ``image_se`` is the paired SE over all seeds' images
    pooled, for contrast. ``tests/test_claims.py`` measures the coverage of all three on
    simulated two-level cases whose answer is known.
    """
    from scipy.stats import t as student_t

    if len(a_by_seed) != len(b_by_seed):
        raise ValueError(f"a and b need the same seeds, got {len(a_by_seed)} and {len(b_by_seed)}")
    if len(a_by_seed) < 2:
        raise ValueError(f"a seed-level interval needs at least 2 seeds, got {len(a_by_seed)}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    diffs, pooled = [], []
    for s, (a, b) in enumerate(zip(a_by_seed, b_by_seed)):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape or a.ndim != 1 or len(a) < 1:
            raise ValueError(f"seed {s}: paired values need two 1-D arrays of the same length, "
                             f"got {a.shape} and {b.shape}")
        diffs.append(float((a - b).mean()))
        pooled.append(a - b)
    d = np.asarray(diffs)
    k = len(d)
    seed_se = float(d.std(ddof=1) / math.sqrt(k))
    se, n_images, image_part = seed_se, 0, 0.0
    if len({len(x) for x in pooled}) == 1 and len(pooled[0]) > 1:   # the same N images for every seed
        table = np.vstack(pooled)                                  # S x N
        n_images = table.shape[1]
        image_means = table.mean(axis=0)
        resid = table - table.mean(axis=1, keepdims=True) - image_means[None, :] + table.mean()
        ms_e = float((resid ** 2).sum() / ((k - 1) * (n_images - 1)))
        ms_image = k * image_means.var(ddof=1)
        seed_part = seed_se ** 2                                        # MS_seed / (S N), S - 1 df
        image_part = max(0.0, ms_image - ms_e) / (k * n_images)         # sigma_b^2 / N, kept >= 0
        se = float(math.sqrt(seed_part + image_part))

    def half_width(q):   # each part with its own t quantile (S - 1 and N - 1 df), combined in quadrature
        t_seed = float(student_t.ppf(q, k - 1))
        t_image = float(student_t.ppf(q, n_images - 1)) if n_images > 1 else 0.0
        return math.sqrt((t_seed * seed_se) ** 2 + t_image ** 2 * image_part)

    two, one = half_width(0.5 + level / 2), half_width(level)
    all_d = np.concatenate(pooled)
    image_se = float(all_d.std(ddof=1) / math.sqrt(len(all_d))) if len(all_d) > 1 else float("nan")
    mean = float(d.mean())
    return SeedDifference(mean, se, k, level, mean - two, mean + two, mean - one, mean + one,
                          tuple(diffs), image_se, seed_se, n_images)


def _frame(log) -> pd.DataFrame:
    if isinstance(log, pd.DataFrame):
        return log
    from rsbook.analysis import read_log

    return read_log(log)


def per_example_radius(log) -> np.ndarray:
    """Certified radius of each example in log order, 0 where wrong or abstaining (its mean is the ACR)."""
    frame = _frame(log).sort_values("idx")
    return np.where(frame["correct"].to_numpy() == 1, frame["radius"].to_numpy(dtype=float), 0.0)


def certified_at(log, radius: float) -> np.ndarray:
    """1.0 for each example certified correctly at ``radius`` (radius >= r, as in certified accuracy), else 0."""
    frame = _frame(log).sort_values("idx")
    ok = (frame["correct"].to_numpy() == 1) & (frame["radius"].to_numpy(dtype=float) >= radius)
    return ok.astype(float)


def plug_in_certified_at(log, radius: float, sigma: float) -> np.ndarray:
    """1.0 for each example CERTIFY got right whose *plug-in* radius ``sigma Phi^{-1}(count / n)`` is ``>= radius``.

    The plug-in radius drops the Clopper-Pearson bound: it is what CERTIFY's radius approaches as
    ``n`` grows, an estimate and not a certificate, so it shows how much of a certified accuracy
    the sample budget costs. An abstention counts 0 (its vote share is close to 1/2, so its
    plug-in radius is small); a unanimous example (``count = n``) has an infinite plug-in radius.
    """
    from scipy.special import ndtri

    frame = _frame(log).sort_values("idx")
    share = frame["count"].to_numpy(dtype=float) / np.maximum(frame["n"].to_numpy(dtype=float), 1.0)
    with np.errstate(divide="ignore"):
        plug = sigma * ndtri(share)
    return ((frame["correct"].to_numpy() == 1) & (plug >= radius)).astype(float)


def share_needed(radius: float, sigma: float, n: int, alpha: float) -> float:
    """The least vote share ``k / n`` whose Clopper-Pearson bound certifies ``radius`` with ``n`` samples.

    CERTIFY certifies ``r`` when ``sigma Phi^{-1}(p_lower(k, n, alpha)) >= r``; the bound grows with
    ``k``, so the least such ``k`` is found by bisection. Returns ``inf`` when even ``k = n`` does not
    certify ``radius`` (it lies beyond the cap ``sigma Phi^{-1}(alpha^{1/n})``).
    """
    from scipy.stats import norm

    from rsbook.stats import clopper_pearson_lower

    need = float(norm.cdf(radius / sigma))
    if float(clopper_pearson_lower(n, n, alpha)) < need:
        return math.inf
    lo, hi = 0, n   # invariant: hi certifies, lo does not (k = 0 never does)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if float(clopper_pearson_lower(mid, n, alpha)) >= need:
            hi = mid
        else:
            lo = mid
    return hi / n


def certified_at_budget(log, radius: float, sigma: float, n: int, alpha: float) -> np.ndarray:
    """1.0 for each example CERTIFY got right whose vote share would certify ``radius`` with ``n`` samples.

    An estimate of :func:`certified_at` at another budget from the same votes: the example's share
    ``count / n_run`` is compared with :func:`share_needed` at ``n``. It reads a claim made near the
    cap of a small ``n`` at the threshold a larger budget (e.g. the paper's ``n = 100,000``) would use;
    it is not a certificate (the share itself is estimated from ``n_run`` votes).
    """
    frame = _frame(log).sort_values("idx")
    share = frame["count"].to_numpy(dtype=float) / np.maximum(frame["n"].to_numpy(dtype=float), 1.0)
    return ((frame["correct"].to_numpy() == 1) & (share >= share_needed(radius, sigma, n, alpha))).astype(float)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(mean(a - b), sd(a - b) / sqrt(N))`` for per-example values on the same examples."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired values need two 1-D arrays of the same length >= 2, got {a.shape} and {b.shape}")
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def binomial_se(p: float, n: int) -> float:
    """Standard error ``sqrt(p (1 - p) / n)`` of a proportion measured on ``n`` examples.

    At ``p`` in {0, 1} the plug-in value is 0, which would make any tolerance vanish;
    the rule-of-three-like floor ``1 / n`` keeps a check honest there.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    return max(math.sqrt(max(p * (1.0 - p), 0.0) / n), 1.0 / n)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _versus(d: "SeedDifference", paper: float | None) -> str:
    return "" if paper is None else f"{_fmt(paper)} ({d.versus(paper)})"


class Claims:
    """Collects the claim checks of one section of a chapter; :meth:`report` prints and asserts them."""

    def __init__(self, section: str):
        self.section = section
        self.results: list[ClaimResult] = []

    def _add(self, claim: str, measured: str, tolerance: str, passed: bool | None, seeds: str = "",
             paper: str = "") -> bool:
        self.results.append(ClaimResult(claim, measured, tolerance, None if passed is None else bool(passed),
                                        seeds, paper))
        return bool(passed)

    @staticmethod
    def _check_radius(claim: str, radius: float | None, cap: float | None) -> None:
        if radius is not None and cap is not None and radius >= 0.9 * cap:
            raise ValueError(f"claim {claim!r} is made at r={radius:g}, within 10% of the certification cap "
                             f"sigma Phi^-1(alpha^(1/n)) = {cap:.3g}: there every model's curve is forced to 0. "
                             "Spend more samples (larger n) or claim at a smaller radius")

    def over_seeds(self, claim: str, a_by_seed, b_by_seed, *, direction: str = "greater", margin: float = 0.0,
                   reason: str = "", level: float = 0.95, paper: float | None = None, radius: float | None = None,
                   cap: float | None = None) -> bool:
        """A claim about methods, over ``S >= 3`` trained seeds (:func:`seed_difference`).

        ``direction="greater"``: A beats B by more than ``margin``, i.e. the one-sided
        ``level`` lower bound of the difference exceeds ``margin``. ``"less"``: B beats A
        (upper bound below ``-margin``). ``"not_less"``: A is not worse than B by more than
        ``margin`` (lower bound above ``-margin``); such a claim needs ``margin > 0`` and its
        ``reason`` (e.g. "half the paper's gain of 0.06"). ``paper`` is the paper's effect for
        the same comparison, shown beside ours. ``radius``/``cap`` refuse a claim made within
        10% of the certification cap (:func:`rsbook.stats.radius_cap`). With fewer than
        :data:`MIN_SEEDS` seeds the row reads "untested" (neither supported nor refuted) and
        :meth:`report` does not raise for it: a full-scale preset may train the paper's one
        model per setting, and then the chapter says its claims rest on the digits seeds.
        """
        self._check_radius(claim, radius, cap)
        if direction not in ("greater", "less", "not_less"):
            raise ValueError(f"unknown direction {direction!r}; valid choices: greater, less, not_less")
        if direction == "not_less" and not (margin > 0 and reason):
            raise ValueError(f"claim {claim!r}: a 'not worse than' claim needs margin > 0 and the reason for it")
        if len(a_by_seed) < MIN_SEEDS:  # e.g. a full-scale preset training the paper's one model per setting
            self._add(claim, f"{len(a_by_seed)} seed(s)", f"untested: a claim about methods needs >= {MIN_SEEDS} "
                      "seeds", None, str(len(a_by_seed)), "" if paper is None else _fmt(paper))
            return False
        d = seed_difference(a_by_seed, b_by_seed, level)
        why = f" ({reason})" if reason else ""
        pct = f"{100 * level:g}%"
        if direction == "greater":
            ok, tol = d.lower_one_sided > margin, f"{pct} lower bound {_fmt(d.lower_one_sided)} > {_fmt(margin)}{why}"
        elif direction == "less":
            ok, tol = d.upper_one_sided < -margin, f"{pct} upper bound {_fmt(d.upper_one_sided)} < {_fmt(-margin)}{why}"
        else:
            ok, tol = d.lower_one_sided > -margin, f"{pct} lower bound {_fmt(d.lower_one_sided)} > {_fmt(-margin)}{why}"
        return self._add(claim, str(d), tol, ok, str(d.seeds), _versus(d, paper))

    def bound(self, claim: str, a_by_seed, b_by_seed, *, level: float = 0.95, paper: float | None = None,
              radius: float | None = None, cap: float | None = None) -> SeedDifference | None:
        """Report, without a verdict, what the seeds rule out: the difference lies in the one-sided bounds.

        For an effect the run cannot resolve, the honest statement is its bound ("the gain is
        at most +0.03 here, against the paper's +0.23"); the row reads "reported".
        """
        self._check_radius(claim, radius, cap)
        if len(a_by_seed) < MIN_SEEDS:
            self._add(claim, f"{len(a_by_seed)} seed(s)", f"untested: a claim about methods needs >= {MIN_SEEDS} "
                      "seeds", None, str(len(a_by_seed)), "" if paper is None else _fmt(paper))
            return None
        d = seed_difference(a_by_seed, b_by_seed, level)
        self._add(claim, str(d), f"{100 * level:g}% one-sided: >= {_fmt(d.lower_one_sided)}, "
                                 f"<= {_fmt(d.upper_one_sided)}", None, str(d.seeds), _versus(d, paper))
        return d

    def paired(self, claim: str, a: Sequence[float], b: Sequence[float], *, n_se: float = 2.0,
               direction: str = "greater", margin: float = 0.0) -> bool:
        """``mean(a - b)`` exceeds ``margin`` by ``n_se`` paired standard errors (``direction="greater"``).

        ``direction="less"``: ``b`` exceeds ``a``. ``direction="not_less"``: ``a`` is not
        significantly below ``b`` (``mean(a - b) >= -n_se * se``), for "no worse than" claims.
        """
        mean, se = paired_difference(a, b)
        if direction == "greater":
            ok, tol = mean - margin > n_se * se, f"> {_fmt(margin)} + {n_se:g} SE ({_fmt(n_se * se)})"
        elif direction == "less":
            ok, tol = -mean - margin > n_se * se, f"< -{_fmt(margin)} - {n_se:g} SE ({_fmt(n_se * se)})"
        elif direction == "not_less":
            ok, tol = mean >= -n_se * se, f">= -{n_se:g} SE ({_fmt(-n_se * se)})"
        else:
            raise ValueError(f"unknown direction {direction!r}; valid choices: greater, less, not_less")
        return self._add(claim, f"diff {_fmt(mean)} (SE {_fmt(se)}, N={len(np.asarray(a))})", tol, ok)

    def paired_bound(self, claim: str, a: Sequence[float], b: Sequence[float], *, level: float = 0.95,
                     paper: float | None = None) -> tuple[float, float]:
        """Report, without a verdict, the one-sided bounds of ``mean(a - b)`` over the same examples.

        For a fact about *one* network (e.g. the same model certified with two noises):
        normal bounds from the paired standard error, labelled image-level. Returns
        ``(lower, upper)``; ``paper`` is shown beside them.
        """
        from scipy.stats import norm

        mean, se = paired_difference(a, b)
        z = float(norm.ppf(level))
        lower, upper = mean - z * se, mean + z * se
        self._add(claim, f"diff {_fmt(mean)} (image-level SE {_fmt(se)}, N={len(np.asarray(a))})",
                  f"{100 * level:g}% one-sided: >= {_fmt(lower)}, <= {_fmt(upper)}", None, "",
                  "" if paper is None else _fmt(paper))
        return lower, upper

    def at_least(self, claim: str, value: float, bound: float, *, se: float = 0.0, n_se: float = 2.0) -> bool:
        """``value >= bound - n_se * se``."""
        slack = n_se * se
        return self._add(claim, _fmt(value), f">= {_fmt(bound)} - {_fmt(slack)}", value >= bound - slack)

    def at_most(self, claim: str, value: float, bound: float, *, se: float = 0.0, n_se: float = 2.0) -> bool:
        """``value <= bound + n_se * se``."""
        slack = n_se * se
        return self._add(claim, _fmt(value), f"<= {_fmt(bound)} + {_fmt(slack)}", value <= bound + slack)

    def within(self, claim: str, value: float, target: float, tol: float, why: str = "") -> bool:
        """``|value - target| <= tol``; ``why`` says where the tolerance comes from."""
        reason = f" ({why})" if why else ""
        return self._add(claim, _fmt(value), f"{_fmt(target)} ± {_fmt(tol)}{reason}", abs(value - target) <= tol)

    def holds(self, claim: str, condition: bool, detail: str = "") -> bool:
        """An exact statement (no sampling error), e.g. a count that must be zero."""
        return self._add(claim, detail or str(bool(condition)), "exact", bool(condition))

    def table(self) -> pd.DataFrame:
        """claim | seeds | measured | required | paper | verdict (seeds and paper only where some claim has them)."""
        frame = pd.DataFrame([{"claim": r.claim, "seeds": r.seeds, "measured": r.measured, "required": r.tolerance,
                               "paper": r.paper,
                               "verdict": ("untested" if r.tolerance.startswith("untested") else "reported")
                               if r.passed is None else ("ok" if r.passed else "FAILED")}
                              for r in self.results])
        return frame.drop(columns=[c for c in ("seeds", "paper") if not frame[c].astype(bool).any()])

    def report(self) -> None:
        """Print the checks of this section; raise :class:`ClaimFailed` listing every failed claim."""
        if not self.results:
            raise ValueError(f"section {self.section!r} has no claim checks to report")
        with pd.option_context("display.max_colwidth", 90, "display.width", 200):
            print(f"checks: {self.section}")
            print(self.table().to_string(index=False))
        failed = [r for r in self.results if r.passed is False]
        if failed:
            lines = "; ".join(f"{r.claim}: measured {r.measured}, required {r.tolerance}" for r in failed)
            raise ClaimFailed(f"{len(failed)} claim(s) of section {self.section!r} not supported: {lines}")
