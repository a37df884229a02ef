"""ADRE training and T-CERTIFY (Feng, Wu, Chen, Zhang & Ning, AAAI 2020).

**Training** (Sec. 3). The certified radius of a correctly classified input grows with
the gap between the smoothed classifier's top score ``G_y`` and its runner-up
``max_{c != y} G_c`` (eq. 2). ADRE adds to the perturbed risk (eq. 3) a regulariser on
the runner-up: ``R_reg = R_per - lambda R_adre`` (eq. 5) with
``R_adre = E[-log G_yhat(x)]``, ``yhat = argmax_{c != y} G_c(x)`` (eq. 4). With the plug-in
soft estimate ``G_hat = (1/k) sum_j softmax(f(x + delta_j))`` (eq. 8) and the cross-entropy
estimate (7) on the *same* draws, the per-example loss (eq. 6, Alg. 1) is::

    CE(f(x + delta_j), y) averaged over j   +   lambda * log G_hat_yhat(x)

so minimising it pushes the runner-up's smoothed probability *down* (the sign a test pins).
``ADRE_ADV`` (eqs. 11-13) first moves ``x`` by l2 PGD ascending
``-log G_hat_y + lambda log G_hat_yhat`` (``yhat`` recomputed every step, the same draws at
every step and for the loss), then applies the ADRE loss at the attacked point. The attack
is :class:`ADREPGD`, a SmoothAdv-PGD (:mod:`rsbook.attacks`) with another ascent objective.

**Certification** (Sec. 4). CERTIFY bounds ``p_B`` by ``1 - p_A_lower``. T-CERTIFY
(eq. 14, Alg. 2) bounds ``p_B`` separately: for ``alpha' = alpha i / grid`` it takes the
one-sided Clopper-Pearson lower bound ``p_A_lower`` at level ``alpha'`` and
``p_B_upper = inf{p : sum_{j != A} P(Bin(n, p) <= N_j) <= alpha - alpha'}`` (capped at
``1 - p_A_lower``), and returns the largest ``sigma/2 (Phi^-1(p_A_lower) - Phi^-1(p_B_upper))``
over the grid. See :func:`t_certificate_from_counts` for what is guaranteed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import betainc, betaincinv
from scipy.stats import norm as _normal
from torch import nn
from torch.nn import functional as F

from rsbook._checks import check_alpha, check_choice, check_nonneg_float, check_positive_float, check_positive_int
from rsbook.attacks import ATTACKS, SmoothAdvPGD, _noisy_logits, _upcast
from rsbook.noise import Noise, make_noise
from rsbook.groundtruth import certificate_failures
from rsbook.stats import clopper_pearson_lower
from rsbook.train import Objective, ObjectiveOutput, register_objective

__all__ = ["ADRE", "ADREPGD", "smoothed_log_probs", "runner_up", "adre_loss_terms", "adre_attack_loss",
           "TCertificate", "t_certificate_from_counts", "t_certify_counts_batch", "choose_alpha_prime",
           "upper_bound_b", "certificate_failures", "t_certify_soundness", "CE_MODES", "COMBINE", "VARIANTS", "certify_view", "runner_up_fraction", "soft_runner_up"]

#: how the cross-entropy term averages the k draws: eq. (7) (``"all"``) or one random draw per
#: example (``"single"``, what the paper's Table 1 CIFAR-10 runs did)
CE_MODES = ("all", "single")
#: how T-CERTIFY combines the other classes' counts into p_B_upper: the paper's sum (eq. 14) or
#: the largest single-class bound (valid too, and never looser; see :func:`upper_bound_b`)
COMBINE = ("sum", "max")
#: T-CERTIFY variants: ``"grid"`` (Alg. 2, max over the alpha' grid after seeing the counts: no proof
#: of level alpha, a union bound gives 1.9 alpha), ``"fixed"`` (alpha' = fraction * alpha fixed in
#: advance: guarantee exactly 1 - alpha) and ``"exact"`` (alpha' chosen from the n0 selection counts
#: only: guarantee exactly 1 - alpha)
VARIANTS = ("grid", "fixed", "exact")


# ============================================================================ training
def _check_lam(lam: float, name: str = "lam") -> float:
    return check_nonneg_float(lam, name)


def smoothed_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``log G_hat`` of eq. (8) from logits shaped ``(B, k, K)``: ``logsumexp_j log_softmax_j - log k``.

    Computed in log space and at least float32 (logits from float16 autocast are upcast),
    so it stays finite and keeps its gradient when ``G_hat_c`` underflows: ``log(G_hat + 1e-10)``
    would flatten to a constant (zero gradient) exactly where the runner-up is already small.
    """
    log_p = F.log_softmax(_upcast(logits), dim=2)
    return torch.logsumexp(log_p, dim=1) - math.log(logits.shape[1])


def runner_up(log_g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``yhat = argmax_{c != y} G_hat_c`` (eq. 4), detached: the class the regulariser pushes down."""
    with torch.no_grad():
        masked = log_g.detach().clone()
        masked.scatter_(1, y.view(-1, 1), -math.inf)
        return masked.argmax(1)


def adre_loss_terms(logits: torch.Tensor, y: torch.Tensor, ce: str = "all",
                    choice: torch.Tensor | None = None, floor: float | None = None):
    """The two per-example terms of eq. (6) from logits ``(B, k, K)`` on ``x + delta_j``.

    Returns ``(ce_logits, ce_targets, log_g_yhat, yhat)``: the logits/targets the cross-entropy
    term is taken over (all ``B k`` rows for ``ce="all"``, eq. 7; one row per example, draw
    ``choice[i]``, for ``ce="single"``), ``log G_hat_yhat`` per example and ``yhat``.
    ``floor`` (a probability, default None = the paper) turns the regulariser into a hinge
    ``max(log G_hat_yhat, log floor)``: an example stops contributing once its runner-up is
    below ``floor``. Without it ``lambda log G_hat_yhat`` has no lower bound: its gradient
    in the logits stays of order one, so it keeps widening the logit gap (weight decay
    and the cross-entropy term are what hold the scale).
    """
    b, k, num_classes = logits.shape
    log_g = smoothed_log_probs(logits)
    yhat = runner_up(log_g, y)
    log_g_yhat = log_g.gather(1, yhat.view(-1, 1)).squeeze(1)
    if floor is not None:
        log_g_yhat = torch.clamp(log_g_yhat, min=math.log(floor))
    if ce == "all":
        return logits.reshape(b * k, num_classes), y.repeat_interleave(k), log_g_yhat, yhat
    rows = logits[torch.arange(b, device=logits.device), choice]
    return rows, y, log_g_yhat, yhat


def adre_attack_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: torch.Tensor,
                     lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example objective the ADRE attack ascends (eq. 12 with the plug-in (8)), and ``argmax G_hat``.

    ``-log G_hat_y + lam log G_hat_yhat`` with ``yhat = argmax_{c != y} G_hat_c`` at the current
    point. The first term is written exactly as SmoothAdv's (``log m - logsumexp_j log F_j[y]``,
    :func:`rsbook.attacks.attack_loss`), so ``lam = 0`` reproduces SmoothAdv-PGD's iterates.
    """
    log_p = F.log_softmax(_upcast(_noisy_logits(model, x, draws)), dim=2)  # (B, m, K)
    m = draws.shape[1]
    log_p_y = log_p.gather(2, y.view(-1, 1, 1).expand(-1, m, 1)).squeeze(2)
    log_g = torch.logsumexp(log_p, dim=1) - math.log(m)
    yhat = runner_up(log_g, y)
    loss = math.log(m) - torch.logsumexp(log_p_y, dim=1)
    loss = loss + lam * log_g.gather(1, yhat.view(-1, 1)).squeeze(1)
    return loss, log_g.detach().argmax(1)


class ADREPGD(SmoothAdvPGD):
    """The ADRE_ADV attack (eq. 13): SmoothAdv-PGD whose ascent objective is :func:`adre_attack_loss`.

    Everything else is SmoothAdv-PGD's machinery (:class:`rsbook.attacks.L2Attack`): draws
    made once and reused at every step, eval mode, normalised l2 steps of ``2 epsilon / steps``,
    projection onto the ball and the image box. ``lam = 0`` is SmoothAdv-PGD.
    """

    name = "adre_pgd"
    estimator = "smoothadv"

    def __init__(self, epsilon, steps, num_noise=1, noise=None, lam: float = 0.0, step_size=None,
                 clip=(0.0, 1.0)):
        super().__init__(epsilon, steps, num_noise, noise, step_size=step_size, clip=clip)
        self.lam = _check_lam(lam)

    def _direction(self, model, x, y, draws):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss, prediction = adre_attack_loss(model, x, y, draws, self.lam)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad.detach(), prediction.detach()


# make_attack("adre_pgd", epsilon, steps, m, sigma, lam=...) reaches it by name
ATTACKS.setdefault("adre_pgd", ADREPGD)


@register_objective("adre")
class ADRE(Objective):
    """ADRE_REG (Alg. 1, eqs. 6-8) and, with ``epsilon > 0``, ADRE_ADV (eqs. 11-13).

    ``ADRE(sigma, num_noise=k, lam=0.1)``: per minibatch draw ``k`` perturbations per example,
    feed the ``B k`` noisy copies through the model once, and minimise
    ``CE + lam * mean_i log G_hat_yhat(x_i)``. ``ce="all"`` averages the cross-entropy over the
    ``k`` draws (eq. 7); ``ce="single"`` uses one uniformly chosen draw per example (the
    paper's Table 1 CIFAR-10 setting, so lam is the only difference from Basic training; with
    ``lam = 0`` only the chosen draws go through the network, which is Basic training itself).
    ``epsilon > 0`` runs ``steps`` steps of :class:`ADREPGD` on the *same* draws first
    (``attack_lam`` defaults to ``lam``; ``warmup_epochs`` raises epsilon linearly as in
    :class:`rsbook.train.SmoothAdv`). ``floor``: see :func:`adre_loss_terms`.

    Special cases (tested on the same random numbers): ``lam = 0, ce="all"`` is
    :class:`rsbook.train.GaussianAugmentation` with ``k`` draws, and ``lam = 0, epsilon > 0``
    is :class:`rsbook.train.SmoothAdv` with PGD.
    """

    name = "adre"

    def __init__(self, sigma: float | Noise, num_noise: int = 1, lam: float = 0.1, ce: str = "all",
                 epsilon: float = 0.0, steps: int = 1, attack_lam: float | None = None,
                 warmup_epochs: int = 0, floor: float | None = None, step_size: float | None = None,
                 clip=(0.0, 1.0)):
        self.noise = make_noise(sigma)
        self.num_noise = check_positive_int(num_noise, "num_noise")
        self.lam = _check_lam(lam)
        self.ce = check_choice(ce, CE_MODES, "ce")
        if floor is not None:
            floor = check_positive_float(floor, "floor")
            if floor >= 1:
                raise ValueError(f"floor must be a probability in (0, 1) or None, got {floor!r}")
        self.floor = floor
        self.attack = ADREPGD(epsilon, steps, self.num_noise, self.noise,
                              lam=self.lam if attack_lam is None else attack_lam, step_size=step_size, clip=clip)
        self.max_epsilon = self.attack.epsilon
        if isinstance(warmup_epochs, bool) or int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = int(warmup_epochs)
        if self.max_epsilon > 0:
            self.name = "adre_adv"

    def start_epoch(self, epoch: int, epochs: int) -> None:
        scale = min(1.0, (epoch + 1) / self.warmup_epochs) if self.warmup_epochs > 0 else 1.0
        self.attack.epsilon = self.max_epsilon * scale

    def __call__(self, model, x, y):
        b, k = x.shape[0], self.num_noise
        # drawn exactly as noisy_copies / SmoothAdv draw them, so lam = 0 reproduces those objectives
        draws = self.noise.sample((b, k, *x.shape[1:]), device=x.device, dtype=x.dtype)
        x_hat = self.attack(model, x, y, draws=draws).x_adv if self.attack.epsilon > 0 else x
        choice = torch.randint(k, (b,), device=x.device) if self.ce == "single" else None
        if choice is not None and self.lam == 0 and self.attack.epsilon == 0:
            # Basic training on one random draw: only those B inputs need a forward pass
            logits = model(x_hat + draws[torch.arange(b, device=x.device), choice])
            return ObjectiveOutput(self.cross_entropy(logits, y), logits, y)
        logits = model((x_hat.unsqueeze(1) + draws).reshape(b * k, *x.shape[1:]))
        ce_logits, ce_targets, log_g_yhat, _ = adre_loss_terms(logits.view(b, k, -1), y, self.ce, choice,
                                                               self.floor)
        loss = self.cross_entropy(ce_logits, ce_targets)  # fit's label smoothing, float32
        if self.lam > 0:
            loss = loss + self.lam * log_g_yhat.mean()
        return ObjectiveOutput(loss, ce_logits, ce_targets)


# ============================================================================ T-CERTIFY
def _binom_cdf(k: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """``P(Bin(n, p) <= k)`` elementwise (``k < n``) through the regularised incomplete beta."""
    return betainc(n - k, k + 1.0, 1.0 - p)


def _cp_upper(k: np.ndarray, n: int, level: np.ndarray) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound at ``level`` (elementwise; 1 for ``level <= 0`` or ``k = n``)."""
    k = np.asarray(k, dtype=float)
    level = np.asarray(level, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        upper = betaincinv(k + 1.0, np.maximum(n - k, 1e-300), 1.0 - np.clip(level, 1e-300, 1.0))
    return np.where((level > 0) & (k < n), upper, 1.0)


def upper_bound_b(others: np.ndarray, n: int, level, combine: str = "sum", iterations: int = 30) -> np.ndarray:
    """Upper confidence bound on ``p_B = max_{c != A} p_c`` from the other classes' counts (eq. 14).

    ``others``: counts ``(T, C - 1)``; ``level``: ``alpha - alpha'``, shape ``(T, G)`` (or
    broadcastable). ``combine="sum"`` is the paper's
    ``inf{p : sum_j P(Bin(n, p) <= N_j) <= level}``. The sum decreases in ``p`` and lies between
    its largest term and ``C - 1`` times it, so the root is bracketed by
    ``[CP_upper(N_max, level), CP_upper(N_max, level / (C - 1))]``; ``iterations`` steps of the
    Illinois (safeguarded false-position) method shrink the bracket and the *upper* end, where
    the sum is ``<= level``, is returned, so rounding never makes the bound smaller than it is.
    ``combine="max"`` is ``CP_upper(max_j N_j, level)``.

    Both are valid at level ``level`` for *any* class ``c*`` (in particular the true
    runner-up): ``N_max >= N_c*`` and the sum is at least its ``c*`` term, so either bound is at
    least ``CP_upper(N_c*, level)``, which is below ``p_c*`` with probability at most ``level``.
    The max is never looser than the sum. Returns ``(T, G)``; 1 where ``level <= 0``.
    """
    check_choice(combine, COMBINE, "combine")
    others = np.asarray(others, dtype=float)
    if others.ndim == 1:
        others = others[None, :]
    level = np.atleast_2d(np.asarray(level, dtype=float))
    n_max = others.max(axis=1, keepdims=True)  # (T, 1)
    lo = _cp_upper(n_max, n, level)
    if combine == "max" or others.shape[1] == 1:
        return lo
    hi = _cp_upper(n_max, n, level / others.shape[1])
    counts = np.minimum(others[:, None, :], n - 1)  # N_j = n only if N_A = 0 (then CERTIFY abstains)

    def excess(p):  # sum_j P(Bin(n, p) <= N_j) - level, decreasing in p
        with np.errstate(invalid="ignore"):
            return _binom_cdf(counts, n, p[..., None]).sum(axis=2) - level

    lo, hi = np.broadcast_arrays(lo, hi)
    lo, hi = lo.copy(), hi.copy()
    active = (level > 0) & (hi < 1.0) & (hi > lo)
    f_lo, f_hi = excess(lo), excess(hi)
    active &= (f_lo > 0) & (f_hi <= 0)  # otherwise an end of the bracket is already the answer
    hi = np.where((level > 0) & (f_lo <= 0), lo, hi)
    last = np.zeros(hi.shape, dtype=int)
    for _ in range(iterations):
        if not active.any():
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        x = np.where(np.isfinite(x) & (x > lo) & (x < hi), x, 0.5 * (lo + hi))
        f_x = excess(x)
        feasible = f_x <= 0
        move_hi = active & feasible
        move_lo = active & ~feasible
        # Illinois: when the same end moves twice running, halve the other end's value so
        # false position cannot stall with one end fixed
        f_lo = np.where(move_hi & (last == 1), f_lo * 0.5, np.where(move_lo, f_x, f_lo))
        f_hi = np.where(move_lo & (last == -1), f_hi * 0.5, np.where(move_hi, f_x, f_hi))
        hi = np.where(move_hi, x, hi)
        lo = np.where(move_lo, x, lo)
        last = np.where(move_hi, 1, np.where(move_lo, -1, last))
        active &= (hi - lo) > 1e-13 * np.maximum(hi, 1e-300)
    return hi


def _grid_radii(counts, candidate, alpha, sigma, a_prime, combine, cap):
    """Per-row, per-``alpha'`` bounds and radii: the shared core of T-CERTIFY and the ``alpha'`` choice."""
    t, c = counts.shape
    n = int(counts[0].sum())
    rows = np.arange(t)
    n_a = counts[rows, candidate].astype(float)
    mask = np.ones_like(counts, dtype=bool)
    mask[rows, candidate] = False
    others = counts[mask].reshape(t, c - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_a = np.where(n_a[:, None] > 0,
                       betaincinv(np.maximum(n_a, 1e-300)[:, None], n - n_a[:, None] + 1.0, a_prime), 0.0)
    p_b = upper_bound_b(others, n, alpha - a_prime, combine)
    if cap:
        p_b = np.minimum(p_b, 1.0 - p_a)  # the cap: on the event p_A >= p_A_lower, p_B <= 1 - p_A_lower
    with np.errstate(invalid="ignore", divide="ignore"):
        radii = np.where(p_a > 0.5, 0.5 * sigma * (_normal.ppf(p_a) - _normal.ppf(p_b)), 0.0)
        # at alpha' = alpha the capped bound is CERTIFY's: write its radius exactly, not via 1 - p
        radii = np.where((a_prime >= alpha) & (p_a > 0.5) & cap, sigma * _normal.ppf(np.clip(p_a, 0.5, 1.0)), radii)
    return n, n_a, others, p_a, p_b, radii


def _check_counts(counts, candidate):
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] < 2:
        raise ValueError(f"counts must have shape (T, C) with C >= 2 classes, got {counts.shape}")
    if np.any(counts < 0) or np.any(counts != np.floor(counts)):
        raise ValueError("counts must be non-negative integers")
    n = counts.sum(axis=1)
    if np.any(n != n[0]) or n[0] < 1:
        raise ValueError(f"every vote vector must have the same total n >= 1, got totals {np.unique(n)}")
    candidate = np.broadcast_to(np.asarray(candidate, dtype=int), (counts.shape[0],))
    if np.any(candidate < 0) or np.any(candidate >= counts.shape[1]):
        raise ValueError(f"candidate must be a class index in [0, {counts.shape[1]}), got {candidate!r}")
    return counts, candidate


def t_certify_counts_batch(counts: np.ndarray, candidate, alpha: float, sigma: float, grid: int = 10,
                           alpha_prime=None, combine: str = "sum", cap: bool = True) -> dict:
    """T-CERTIFY on many vote vectors at once: ``counts`` ``(T, C)``, ``candidate`` ``(T,)``.

    ``alpha_prime=None`` maximises over the grid ``alpha i / grid`` (Alg. 2); a number or a
    ``(T,)`` array fixes ``alpha'`` per row (the exact variant). Returns a dict of ``(T,)``
    arrays: ``prediction radius radius_certify p_lower p_upper_b alpha_prime p_lower_certify
    count count_b n``. ``cap=False`` drops the cap ``p_B_upper <= 1 - p_A_lower`` (only to show
    why it is there).
    """
    alpha = check_alpha(alpha)
    sigma = check_positive_float(sigma, "sigma")
    check_choice(combine, COMBINE, "combine")
    counts, candidate = _check_counts(counts, candidate)
    t = counts.shape[0]
    if alpha_prime is None:
        grid = check_positive_int(grid, "grid")
        a_prime = np.broadcast_to(alpha * np.arange(1, grid + 1) / grid, (t, grid))
    else:
        a_prime = np.asarray(alpha_prime, dtype=float)
        if np.any(~(a_prime > 0)) or np.any(a_prime > alpha):
            raise ValueError(f"alpha_prime must lie in (0, alpha] = (0, {alpha}], got {alpha_prime!r}")
        a_prime = np.broadcast_to(a_prime.reshape(-1, 1) if a_prime.ndim else a_prime, (t, 1))
    n, n_a, others, p_a, p_b, radii = _grid_radii(counts, candidate, alpha, sigma, a_prime, combine, cap)
    rows = np.arange(t)
    p_lower_certify = clopper_pearson_lower(n_a, np.full(t, n), alpha)
    best = radii.argmax(axis=1)
    radius = radii[rows, best]
    certified = p_lower_certify > 0.5
    # the grid contains alpha' = alpha (CERTIFY's own p_A_lower); a fixed alpha' has its own test
    certified_t = certified if alpha_prime is None else p_a[rows, best] > 0.5
    return {
        "prediction": np.where(certified_t, candidate, -1),
        "radius": np.where(certified_t, radius, 0.0),
        "radius_certify": np.where(certified, sigma * _normal.ppf(np.clip(p_lower_certify, 0.5, 1.0)), 0.0),
        "p_lower": p_a[rows, best],
        "p_upper_b": p_b[rows, best],
        "alpha_prime": a_prime[rows, best],
        "p_lower_certify": p_lower_certify,
        "count": counts[rows, candidate],
        "count_b": others.max(axis=1),
        "n": np.full(t, n),
    }


@dataclass(frozen=True)
class TCertificate:
    """One T-CERTIFY answer, with CERTIFY's on the same counts beside it.

    ``prediction`` (class or -1), ``radius`` (T-CERTIFY), ``radius_certify`` (CERTIFY,
    ``sigma Phi^-1(p_lower_certify)``), ``p_lower`` / ``p_upper_b`` / ``alpha_prime`` at the
    chosen ``alpha'``, ``count`` (votes for the candidate), ``count_b`` (largest other
    count), ``n``, ``n0``. Unpacks as ``(prediction, radius)``; :func:`rsbook.certify.certify_dataset`
    logs it (``extra_columns=TCertificate.LOG_COLUMNS``).
    """

    prediction: int
    radius: float
    radius_certify: float
    p_lower: float
    p_upper_b: float
    alpha_prime: float
    p_lower_certify: float
    count: int
    count_b: int
    n: int
    n0: int = 0

    LOG_COLUMNS = ("radius_certify", "p_upper_b", "alpha_prime", "count_b")

    def __iter__(self):
        return iter((self.prediction, self.radius))


def t_certificate_from_counts(counts, candidate: int, alpha: float, sigma: float, grid: int = 10, *,
                              combine: str = "sum", alpha_prime: float | None = None, n0: int = 0) -> TCertificate:
    """T-CERTIFY (Feng et al., 2020, eq. 14, Alg. 2) from the ``n`` estimation votes ``counts`` (all classes).

    ``candidate`` is the class chosen on the ``n0`` selection samples (independent of
    ``counts``). For ``alpha' = alpha i / grid``, ``i = 1..grid``: ``p_A_lower`` is the one-sided
    Clopper-Pearson bound at level ``alpha'``, ``p_B_upper`` the eq. (14) bound at level
    ``alpha - alpha'`` over all other classes (``combine="max"``: the largest single-class
    bound, see :func:`upper_bound_b`), capped at ``1 - p_A_lower``; the radius is
    ``sigma/2 (Phi^-1 p_A_lower - Phi^-1 p_B_upper)`` where ``p_A_lower > 1/2``, maximised over
    the grid. Abstains exactly when CERTIFY does (the grid contains ``alpha' = alpha``, where
    the capped bound gives CERTIFY's radius, so T-CERTIFY's radius is never below it).

    Validity (the correct form of the paper's Prop. 1 / Thm. 1). For ``alpha'`` fixed
    independently of ``counts``: ``P(p_A_lower > p_A) <= alpha'`` and
    ``P(p_B_upper < p_B) <= alpha - alpha'``; on the complement ``p_A > 1/2`` (so the candidate is
    ``g(x)``) and ``p_B <= min(p_B_upper, 1 - p_A_lower)``, so the radius is at most the exact
    radius of eq. (2): the answer is wrong with probability at most ``alpha``. Taking the
    maximum over the grid *after* seeing the counts is not covered: the events are nested in
    ``alpha'``, so a union bound gives ``alpha + (alpha - alpha/grid) < 2 alpha`` (1.9 alpha for
    grid = 10), not ``alpha``. Passing ``alpha_prime`` (chosen beforehand, e.g. by
    :func:`choose_alpha_prime` from the ``n0`` selection counts) gives the exact guarantee;
    then the answer abstains when ``p_A_lower(alpha') <= 1/2``, which can happen where
    CERTIFY would not.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError(f"counts must be one vote vector (1-D), got shape {counts.shape}")
    out = t_certify_counts_batch(counts[None, :], [int(candidate)], alpha, sigma, grid, alpha_prime, combine)
    return TCertificate(int(out["prediction"][0]), float(out["radius"][0]), float(out["radius_certify"][0]),
                        float(out["p_lower"][0]), float(out["p_upper_b"][0]), float(out["alpha_prime"][0]),
                        float(out["p_lower_certify"][0]), int(out["count"][0]), int(out["count_b"][0]),
                        int(out["n"][0]), int(n0))


def _fixed_alpha_prime(alpha: float, fraction: float) -> float:
    """The fixed variant's ``alpha' = fraction * alpha``, ``0 < fraction < 1``."""
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1) (alpha' = fraction * alpha, fixed in advance), got {fraction!r}")
    return fraction * float(alpha)


def choose_alpha_prime(counts0, n: int, alpha: float, sigma: float, grid: int = 10, combine: str = "sum"):
    """The ``alpha'`` of the exact variant, chosen from the ``n0`` *selection* votes only.

    Scales the selection vote fractions to ``n`` pseudo-counts and returns the grid point
    where T-CERTIFY on them would give the largest radius (ties and abstentions: ``alpha``,
    i.e. CERTIFY). It never looks at the estimation counts, so the fixed-``alpha'``
    guarantee applies. ``counts0``: one vote vector (returns a float) or ``(T, C)`` (an array).
    """
    alpha = check_alpha(alpha)
    n = check_positive_int(n, "n")
    grid = check_positive_int(grid, "grid")
    counts0 = np.asarray(counts0, dtype=float)
    single = counts0.ndim == 1
    counts0 = np.atleast_2d(counts0)
    if np.any(counts0.sum(axis=1) < 1):
        raise ValueError("counts0 must hold at least one vote per row")
    t = counts0.shape[0]
    candidate = counts0.argmax(axis=1)
    pseudo = np.floor(counts0 / counts0.sum(axis=1, keepdims=True) * n)
    pseudo[np.arange(t), candidate] += n - pseudo.sum(axis=1)
    a_prime = np.broadcast_to(alpha * np.arange(1, grid + 1) / grid, (t, grid))
    radii = _grid_radii(pseudo, candidate, alpha, sigma, a_prime, combine, True)[-1]
    # the largest alpha' among the (numerically) best ones
    best = grid - 1 - np.argmax((radii >= radii.max(axis=1, keepdims=True) - 1e-12)[:, ::-1], axis=1)
    chosen = a_prime[np.arange(t), best]
    return float(chosen[0]) if single else chosen


# ============================================================================ soundness by simulation
def t_certify_soundness(counts0: np.ndarray, counts: np.ndarray, alpha: float, sigma: float, true_class: int,
                        true_radius: float, grid: int = 10, combine: str = "sum", fraction: float = 0.5) -> dict:
    """Failures of T-CERTIFY (every variant) and of CERTIFY on the same simulated votes.

    ``counts0`` ``(T, C)``: selection votes (they choose the candidate and, for the exact
    variant, ``alpha'``); ``counts`` ``(T, C)``: estimation votes, independent of ``counts0``.
    Each certifier is judged by *its own* answer (class or abstention, and radius) against the
    true class and the exact radius: the fixed and exact variants can abstain where CERTIFY
    certifies, so one certifier's prediction must not stand in for another's. Returns, per
    certifier (``"grid"``, ``"fixed"`` with ``alpha' = fraction * alpha``, ``"exact"``,
    ``"certify"``), a dict with ``failures`` (count), ``trials``, ``mean_radius`` and ``abstain``
    (count).
    """
    counts0, counts = np.asarray(counts0), np.asarray(counts)
    if counts0.shape[0] != counts.shape[0] or counts0.shape[1] != counts.shape[1]:
        raise ValueError(f"counts0 {counts0.shape} and counts {counts.shape} must have the same (T, C) shape")
    candidate = counts0.argmax(axis=1)
    n = int(counts[0].sum())
    grid_res = t_certify_counts_batch(counts, candidate, alpha, sigma, grid, combine=combine)
    exact_res = t_certify_counts_batch(counts, candidate, alpha, sigma, grid, combine=combine,
                                       alpha_prime=choose_alpha_prime(counts0, n, alpha, sigma, grid, combine))
    fixed_res = t_certify_counts_batch(counts, candidate, alpha, sigma, grid, combine=combine,
                                       alpha_prime=_fixed_alpha_prime(alpha, fraction))
    certify_prediction = np.where(grid_res["p_lower_certify"] > 0.5, candidate, -1)
    answers = {"grid": (grid_res["prediction"], grid_res["radius"]),
               "fixed": (fixed_res["prediction"], fixed_res["radius"]),
               "exact": (exact_res["prediction"], exact_res["radius"]),
               "certify": (certify_prediction, grid_res["radius_certify"])}
    return {name: {"failures": int(certificate_failures(pred, rad, true_class, true_radius).sum()),
                   "trials": int(len(pred)), "mean_radius": float(np.mean(rad)), "abstain": int((pred == -1).sum())}
            for name, (pred, rad) in answers.items()}


# ============================================================================ logs
def certify_view(log):
    """A T-CERTIFY log read as a CERTIFY log: ``radius`` replaced by ``radius_certify`` (same rows)."""
    from rsbook.analysis import read_log

    frame = log.copy() if hasattr(log, "columns") else read_log(log)
    if "radius_certify" not in frame.columns:
        raise ValueError("not a T-CERTIFY log: no radius_certify column")
    frame["radius"] = frame["radius_certify"]
    return frame


def runner_up_fraction(log) -> np.ndarray:
    """Per-example runner-up vote fraction ``count_b / n`` from a T-CERTIFY log (the quantity ADRE pushes down)."""
    from rsbook.analysis import read_log

    frame = log if hasattr(log, "columns") else read_log(log)
    return (frame["count_b"] / frame["n"]).to_numpy(dtype=float)


# ============================================================================ registry
from rsbook.certify import register_certifier  # noqa: E402


@register_certifier("t_certify", extra_columns=TCertificate.LOG_COLUMNS)
def _t_certify(smooth, x, *, n0: int, n: int, alpha: float, batch_size: int, grid: int = 10, variant: str = "grid",
               combine: str = "sum", fraction: float = 0.5) -> TCertificate:
    """T-CERTIFY by name (experiment helper, command line): one log with both radii.

    ``variant``: ``"grid"`` (Alg. 2), ``"fixed"`` (``alpha' = fraction * alpha``) or ``"exact"``."""
    return smooth.t_certify(x, n0, n, alpha, batch_size, grid=grid, variant=variant, combine=combine,
                            fraction=fraction)


@torch.inference_mode()
def soft_runner_up(model: nn.Module, dataset, sigma: float, num_noise: int = 16, indices=None, seed: int = 0,
                   batch_size: int = 256) -> np.ndarray:
    """Per-example ``log G_hat_yhat(x)`` (eq. 8, ``yhat = argmax_{c != y}``) on test data: what ADRE's term lowers.

    ``num_noise`` fresh draws per example from a generator seeded with ``seed``, model in eval
    mode; ``indices`` selects examples (default all). The hard-vote counterpart is
    :func:`runner_up_fraction` of a certification log.
    """
    from rsbook.utils import eval_mode

    num_noise = check_positive_int(num_noise, "num_noise")
    noise = make_noise(sigma)
    device = next(model.parameters()).device
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    gen = torch.Generator(device=device).manual_seed(int(seed))
    out = []
    with eval_mode(model):
        for start in range(0, len(indices), batch_size):
            xs, ys = zip(*(dataset[i] for i in indices[start:start + batch_size]))
            x = torch.stack(list(xs)).to(device)
            y = torch.as_tensor([int(v) for v in ys], device=device)
            draws = noise.sample((x.shape[0], num_noise, *x.shape[1:]), generator=gen, device=device, dtype=x.dtype)
            logits = model((x.unsqueeze(1) + draws).reshape(-1, *x.shape[1:])).view(x.shape[0], num_noise, -1)
            log_g = smoothed_log_probs(logits)
            out.append(log_g.gather(1, runner_up(log_g, y).view(-1, 1)).squeeze(1).cpu())
    return torch.cat(out).numpy().astype(float)
