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
* :meth:`Claims.holds` -- an exact fact (e.g. "no certificate was broken").

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

__all__ = ["Claims", "ClaimResult", "per_example_radius", "certified_at", "paired_difference", "binomial_se",
           "ClaimFailed"]


class ClaimFailed(AssertionError):
    """A chapter's claim is not supported by this run's numbers."""


@dataclass(frozen=True)
class ClaimResult:
    claim: str
    measured: str
    tolerance: str
    passed: bool


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


class Claims:
    """Collects the claim checks of one section of a chapter; :meth:`report` prints and asserts them."""

    def __init__(self, section: str):
        self.section = section
        self.results: list[ClaimResult] = []

    def _add(self, claim: str, measured: str, tolerance: str, passed: bool) -> bool:
        self.results.append(ClaimResult(claim, measured, tolerance, bool(passed)))
        return bool(passed)

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
        return pd.DataFrame([{"claim": r.claim, "measured": r.measured, "required": r.tolerance,
                              "verdict": "ok" if r.passed else "FAILED"} for r in self.results])

    def report(self) -> None:
        """Print the checks of this section; raise :class:`ClaimFailed` listing every failed claim."""
        if not self.results:
            raise ValueError(f"section {self.section!r} has no claim checks to report")
        with pd.option_context("display.max_colwidth", 90, "display.width", 200):
            print(f"checks: {self.section}")
            print(self.table().to_string(index=False))
        failed = [r for r in self.results if not r.passed]
        if failed:
            lines = "; ".join(f"{r.claim}: measured {r.measured}, required {r.tolerance}" for r in failed)
            raise ClaimFailed(f"{len(failed)} claim(s) of section {self.section!r} not supported: {lines}")
