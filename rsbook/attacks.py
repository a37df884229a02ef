"""l2 attacks on smoothed classifiers: SmoothAdv (Salman et al., NeurIPS 2019) and its foils.

The smoothed *soft* classifier of a base network with softmax output ``F`` is
``G(x) = E_{delta ~ N(0, sigma^2 I)} F(x + delta)`` (Salman et al., eq. 3). SmoothAdv
looks for ``x_hat = argmax_{|x' - x|_2 <= epsilon} -log G(x')_y`` (their objective (S)).
The gradient of that objective is an intractable integral (eq. 5); every attack here is
projected first-order ascent that differs only in how it estimates the ascent direction:

============================  ===============================================================
``"smoothadv"`` (eq. 6)       plug-in: ``grad -log( (1/m) sum_i F(x' + delta_i)_y )``
``"expected_loss"`` (eq. 4)   the "wrong" objective ``(1/m) sum_i -log F(x' + delta_i)_y``
``"base"``                    vanilla PGD on the base classifier, ``-log F(x')_y``, no noise
``"stein"`` (eq. 7)           gradient-free: ``-(1/m) sum_i delta_i / sigma^2 F(x' + delta_i)_y``
============================  ===============================================================

Eq. (4) averages the loss *outside* the log: a point where a few noise draws are badly
misclassified already has a large loss, so the attack spends its budget on making single
noisy copies very wrong instead of moving the *average* probability down, which is what
the smoothed classifier (and its certificate) depends on. Eq. (6) puts the average inside.

All attacks work on a batch ``x`` of shape ``(B, ...)`` with ``m`` noise draws per example
(a tensor ``(B, m, ...)``) that are drawn once and reused at every step (Salman et al.,
Pseudocode 1 and footnote 4: it stabilises the attack, and training reuses the very same
draws for augmentation, so the attack returns them). Every iterate satisfies
``|x_hat - x|_2 <= epsilon`` and, with ``clip=(0, 1)``, is a valid image.

The ``m`` draws can be processed in chunks (``chunk=``) with the gradients accumulated
exactly, so an attack with ``m_test = 128`` ImageNet draws fits in memory; see
:func:`ascent_direction`. :class:`SmoothAdvDDN` documents where it differs from the
authors' DDN.

Also here: :func:`empirical_robust_accuracy` (attack with ``m_test`` draws, then PREDICT
on the attacked input, as in Salman et al., Sec. 4.3 / Fig. 3) and the naive l2 -> linf
conversion of certified radii used for their Table 3.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from rsbook._checks import check_alpha, check_choice, check_nonneg_float, check_positive_float, check_positive_int
from rsbook.noise import Gaussian, Noise, make_noise
from rsbook.certify import finished_rows, format_row
from rsbook.utils import eval_mode, progress_bar

__all__ = ["ESTIMATORS", "ATTACKS", "DDN_FALLBACKS", "AttackResult", "L2Attack", "SmoothAdvPGD", "SmoothAdvDDN",
           "ExpectedLossPGD", "BasePGD", "SteinPGD", "make_attack", "attack_options", "attack_loss", "ascent_direction",
           "smoothed_soft_probability", "empirical_robust_accuracy", "empirical_accuracy_curve",
           "l2_to_linf_radius", "linf_to_l2_radius", "linf_certified_accuracy"]

#: gradient estimators an l2 PGD attack can use (see the module docstring)
ESTIMATORS = ("smoothadv", "expected_loss", "base", "stein")


def _check_epsilon(epsilon: float) -> float:
    # epsilon = 0 is legal: it is how SmoothAdv training reduces to Gaussian augmentation
    return check_nonneg_float(epsilon, "epsilon")


def _check_clip(clip) -> tuple[float, float] | None:
    if clip is None:
        return None
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ValueError(f"clip must be None or a pair (low, high), got {clip!r}") from None
    if not lo < hi:
        raise ValueError(f"clip must satisfy low < high, got {clip!r}")
    return lo, hi


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example l2 norm, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project(x: torch.Tensor, delta: torch.Tensor, radius: torch.Tensor | float,
             clip: tuple[float, float] | None) -> torch.Tensor:
    """Project ``delta`` onto the l2 ball of ``radius`` (per example), then into the image box.

    Clipping after the ball projection keeps the norm bound: since ``x`` lies in the box,
    clipping ``x + delta`` moves every coordinate of ``delta`` towards 0.
    """
    norm = _flat_norm(delta)
    radius = torch.as_tensor(radius, dtype=delta.dtype, device=delta.device)
    if radius.dim() > 0:
        radius = radius.view(-1, *([1] * (delta.dim() - 1)))
    delta = delta * torch.clamp(radius / norm.clamp_min(1e-12), max=1.0)
    if clip is not None:
        delta = torch.clamp(x + delta, *clip) - x
    return delta


def _normalize(g: torch.Tensor) -> torch.Tensor:
    """Unit l2 direction per example (zero gradients stay zero)."""
    return g / _flat_norm(g).clamp_min(1e-12)


def _upcast(t: torch.Tensor) -> torch.Tensor:
    # under CUDA autocast logits are float16: softmax/log of them in float32; float64 stays
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _noisy_logits(model: nn.Module, x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Logits on ``x_j + delta_ij`` for all ``j, i``, shaped ``(B, m, K)`` -- one forward pass."""
    b, m = draws.shape[:2]
    logits = model((x.unsqueeze(1) + draws).reshape(b * m, *x.shape[1:]))
    return logits.view(b, m, -1)


def _chunks(m: int, chunk: int | None):
    """Slices of the ``m`` draws, ``chunk`` at a time (all at once when ``chunk`` is None)."""
    size = m if chunk is None else max(1, min(int(chunk), m))
    return [slice(start, min(start + size, m)) for start in range(0, m, size)]


def attack_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: torch.Tensor | None,
                estimator: str = "smoothadv") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example loss the attacker ascends, and the smoothed-soft prediction on the same draws.

    ``"smoothadv"``: eq. (6) of Salman et al., ``-log (1/m) sum_i softmax(f(x + delta_i))_y``,
    computed as ``log m - logsumexp_i log_softmax_i[y]`` so it stays finite when every
    draw gives the true class a tiny probability. ``"expected_loss"``: eq. (4),
    ``mean_i -log softmax_i[y]``. ``"base"``: ``-log softmax(f(x))_y`` (``draws`` unused).
    Returns ``(loss (B,), predicted class (B,))``; the prediction is the argmax of the
    plug-in estimate of ``G`` (of ``F`` for ``"base"``). One forward pass over all ``B m``
    noisy inputs; :func:`ascent_direction` is the memory-bounded (chunked) gradient.
    """
    check_choice(estimator, ESTIMATORS[:3], "estimator")
    if estimator == "base" or draws is None:
        logits = model(x)
        return F.cross_entropy(logits, y, reduction="none"), logits.argmax(1)
    log_p = F.log_softmax(_upcast(_noisy_logits(model, x, draws)), dim=2)  # (B, m, K)
    m = draws.shape[1]
    index = y.view(-1, 1, 1).expand(-1, m, 1)
    log_p_y = log_p.gather(2, index).squeeze(2)  # (B, m)
    prediction = log_p.exp().mean(1).argmax(1)
    if estimator == "smoothadv":
        return math.log(m) - torch.logsumexp(log_p_y, dim=1), prediction
    return -log_p_y.mean(1), prediction


@torch.no_grad()
def smoothed_soft_probability(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                              draws: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Monte-Carlo estimate of ``G(x)_y`` (eq. 3) on the given draws, shape ``(B,)`` (``chunk`` draws per pass)."""
    return _soft_mean(model, x, draws, chunk).gather(1, y.view(-1, 1)).squeeze(1)


@torch.no_grad()
def _soft_mean(model, x, draws, chunk=None) -> torch.Tensor:
    """``(1/m) sum_i softmax(f(x + delta_i))``, shape ``(B, K)``, accumulated over chunks of draws."""
    total = 0.0
    for s in _chunks(draws.shape[1], chunk):
        total = total + F.softmax(_upcast(_noisy_logits(model, x, draws[:, s])), dim=2).sum(1)
    return total / draws.shape[1]


def ascent_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: torch.Tensor | None,
                     estimator: str = "smoothadv", sigma: float | None = None, chunk: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated gradient of the attack objective at ``x`` (not normalised) and the current prediction.

    For the autograd estimators this is ``d loss / d x`` of :func:`attack_loss`; examples
    are independent as long as the model is in eval mode (no batch statistics). For
    ``"stein"`` it is eq. (7) of Salman et al. with a minus sign,
    ``-(1/m) sum_i delta_i / sigma^2 * F(x + delta_i)_y``, an unbiased estimate of
    ``-grad G(x)_y``; no gradient of the network is taken. Its scale differs from
    ``grad -log G_y`` by the positive factor ``1 / G_y``, which the normalised steps ignore.

    Memory: the ``m`` draws are processed ``chunk`` at a time (all at once if None), each
    chunk with its own forward/backward pass, so at most ``B * chunk`` noisy inputs are in
    one autograd graph whatever ``m`` is. The chunks combine exactly: eq. (4) is a sum over
    draws; for eq. (6), with ``L_c = logsumexp_{i in c} log F_i(y)`` per chunk,
    ``-log((1/m) sum_i F_i(y)) = log m - logsumexp_c L_c`` and its gradient is
    ``-sum_c softmax_c(L) grad L_c``, accumulated with a running maximum so it stays finite.
    """
    check_choice(estimator, ESTIMATORS, "estimator")
    if estimator == "stein":
        if draws is None or sigma is None:
            raise ValueError("the Stein estimator (eq. 7) needs noise draws and sigma")
        grad_g, p_sum = torch.zeros_like(x), 0.0
        with torch.no_grad():
            for s in _chunks(draws.shape[1], chunk):
                p = F.softmax(_upcast(_noisy_logits(model, x, draws[:, s])), dim=2)
                p_y = p.gather(2, y.view(-1, 1, 1).expand(-1, p.shape[1], 1))  # (B, c, 1)
                weights = p_y.view(*p_y.shape[:2], *([1] * (x.dim() - 1)))
                grad_g = grad_g + (draws[:, s] * weights).sum(1).to(x.dtype)
                p_sum = p_sum + p.sum(1)
        grad_g = grad_g / (draws.shape[1] * sigma ** 2)
        return -grad_g, p_sum.argmax(1)
    if estimator == "base" or draws is None:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss, prediction = attack_loss(model, x, y, None, "base")
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad.detach(), prediction.detach()
    m = draws.shape[1]
    shape = (-1, *([1] * (x.dim() - 1)))
    acc = torch.zeros_like(x)
    run_max = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    run_sum = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    p_sum = 0.0
    for s in _chunks(m, chunk):
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            log_p = F.log_softmax(_upcast(_noisy_logits(model, xg, draws[:, s])), dim=2)  # (B, c, K)
            log_p_y = log_p.gather(2, y.view(-1, 1, 1).expand(-1, log_p.shape[1], 1)).squeeze(2)
            part = torch.logsumexp(log_p_y, dim=1) if estimator == "smoothadv" else -log_p_y.sum(1)
            (g,) = torch.autograd.grad(part.sum(), xg)
        p_sum = p_sum + log_p.detach().exp().sum(1)
        if estimator == "smoothadv":
            level = part.detach().double()
            new_max = torch.maximum(run_max, level)
            scale_old, scale_new = torch.exp(run_max - new_max), torch.exp(level - new_max)
            acc = acc * scale_old.to(x.dtype).view(shape) + g * scale_new.to(x.dtype).view(shape)
            run_sum = run_sum * scale_old + scale_new
            run_max = new_max
        else:
            acc = acc + g
    if estimator == "smoothadv":
        grad = -acc / run_sum.to(x.dtype).view(shape)
    else:
        grad = acc / m
    return grad.detach(), p_sum.argmax(1)


@dataclass
class AttackResult:
    """``x_adv`` (same shape as ``x``) and the noise ``draws`` ``(B, m, ...)`` the attack used (None for "base")."""

    x_adv: torch.Tensor
    draws: torch.Tensor | None

    def __iter__(self):
        return iter((self.x_adv, self.draws))


class L2Attack:
    """Common machinery: draw (or accept) the noise, run in eval mode, keep iterates feasible.

    ``noise`` is a :class:`~rsbook.noise.Noise` or a Gaussian sigma (needed unless the
    estimator is ``"base"``); ``num_noise`` is ``m`` (``m_train`` or ``m_test``); ``clip`` the
    valid input box (``None`` for unbounded inputs). ``epsilon`` may be changed between
    calls (the training warm-up does). ``chunk`` bounds memory: the ``m`` draws go through
    the network ``chunk`` at a time with their gradients accumulated (see
    :func:`ascent_direction`), so one autograd graph holds at most ``B * chunk`` noisy inputs;
    the iterates equal the unchunked ones up to floating-point summation order.
    Call as ``attack(model, x, y, generator=g)``.
    """

    name = "l2"
    estimator = "smoothadv"

    def __init__(self, epsilon: float, steps: int, num_noise: int = 1, noise: Noise | float | None = None,
                 clip: tuple[float, float] | None = (0.0, 1.0), chunk: int | None = None):
        self.epsilon = _check_epsilon(epsilon)
        self.chunk = None if chunk is None else check_positive_int(chunk, "chunk")
        self.steps = check_positive_int(steps, "steps")
        self.num_noise = check_positive_int(num_noise, "num_noise")
        self.noise = make_noise(noise) if noise is not None else None
        if self.estimator != "base" and self.noise is None:
            raise ValueError(f"attack {self.name!r} attacks a smoothed classifier and needs noise= (a sigma)")
        if self.estimator == "stein" and not isinstance(self.noise, Gaussian):
            raise ValueError("the Stein estimator (eq. 7) holds for Gaussian noise only; pass noise=<sigma>")
        self.clip = _check_clip(clip)

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The ``(B, m, ...)`` noise draws for ``x`` (reused at every step)."""
        if self.noise is None or self.estimator == "base":
            return None
        return self.noise.sample((x.shape[0], self.num_noise, *x.shape[1:]), generator=generator,
                                 device=x.device, dtype=x.dtype)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator | None = None, draws: torch.Tensor | None = None) -> AttackResult:
        x = x.detach()
        if draws is None:
            draws = self.draw(x, generator)
        elif draws.shape[:2] != (x.shape[0], self.num_noise) or draws.shape[2:] != x.shape[1:]:
            raise ValueError(f"draws must have shape {(x.shape[0], self.num_noise, *x.shape[1:])}, "
                             f"got {tuple(draws.shape)}")
        if self.epsilon == 0.0:
            return AttackResult(x.clone(), draws)
        # The attack targets the classifier as it is deployed and certified: eval mode, so
        # BatchNorm uses running statistics, examples do not interact through batch statistics,
        # and the attack's forward passes do not move the running averages.
        with eval_mode(model):
            delta = self._run(model, x, y, draws)
        return AttackResult((x + delta).detach(), draws)

    def _direction(self, model, x, y, draws):
        sigma = getattr(self.noise, "sigma", None)
        return ascent_direction(model, x, y, draws, self.estimator, sigma, chunk=self.chunk)

    def _run(self, model, x, y, draws) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(epsilon={self.epsilon:g}, steps={self.steps}, "
                f"num_noise={self.num_noise}, noise={self.noise!r})")


class _PGD(L2Attack):
    """l2 PGD: ``delta <- Proj(delta + a * g / |g|)`` for ``steps`` steps from ``delta = 0``.

    ``step_size`` defaults to ``2 epsilon / steps``, so the iterate can cross the whole ball
    and come back (a common choice for l2 PGD; 1-step PGD then jumps straight to the sphere).
    """

    def __init__(self, epsilon, steps, num_noise=1, noise=None, step_size: float | None = None,
                 clip=(0.0, 1.0), chunk: int | None = None):
        super().__init__(epsilon, steps, num_noise, noise, clip, chunk)
        self.step_size = None if step_size is None else check_positive_float(step_size, "step_size")

    def _run(self, model, x, y, draws):
        step = self.step_size if self.step_size is not None else 2 * self.epsilon / self.steps
        delta = torch.zeros_like(x)
        for _ in range(self.steps):
            g, _ = self._direction(model, x + delta, y, draws)
            delta = _project(x, delta + step * _normalize(g), self.epsilon, self.clip)
        return delta


class SmoothAdvPGD(_PGD):
    """SmoothAdv-PGD: l2 PGD on the smoothed soft classifier with the plug-in gradient of eq. (6).

    ``SmoothAdvPGD(epsilon, steps, num_noise, noise=sigma)``; the ``num_noise`` draws per
    example are sampled once (from ``generator``) and reused at every step.
    """

    name = "smoothadv_pgd"
    estimator = "smoothadv"


class ExpectedLossPGD(_PGD):
    """The same PGD on the "wrong" objective of eq. (4): the noise-averaged cross-entropy of ``F``."""

    name = "expected_loss_pgd"
    estimator = "expected_loss"


class SteinPGD(_PGD):
    """PGD whose direction is the unbiased, gradient-free Stein estimate of eq. (7)."""

    name = "stein_pgd"
    estimator = "stein"


class BasePGD(_PGD):
    """Vanilla l2 PGD on the base classifier ``f`` (no noise): the baseline of Salman et al., Fig. 3,
    and the attack of vanilla adversarial training (:class:`rsbook.smoothadv.VanillaAdversarial`)."""

    name = "base_pgd"
    estimator = "base"

    def __init__(self, epsilon, steps, num_noise=1, noise=None, step_size=None, clip=(0.0, 1.0), chunk=None):
        super().__init__(epsilon, steps, num_noise, noise, step_size, clip, chunk)


#: what :class:`SmoothAdvDDN` returns for an example on which no iterate was adversarial
DDN_FALLBACKS = ("last", "clean")


class SmoothAdvDDN(L2Attack):
    """SmoothAdv-DDN: Decoupled Direction and Norm (Rony et al., CVPR 2019) on eq. (6).

    DDN keeps a norm budget ``r_k`` apart from the direction. Each step: take a normalised
    gradient step of size ``a_k = step_size * (1 + cos(pi k / T)) / 2``, then shrink the
    budget by ``(1 - gamma)`` if the current point already fools the smoothed classifier
    (estimated on the same draws) or grow it by ``(1 + gamma)`` if not, capped at
    ``epsilon``, and rescale ``delta`` onto the sphere of radius ``r_k``, then into the image
    box. It returns the smallest adversarial perturbation among all iterates (the last one
    included); for an example with none, the last iterate (``if_none_found="last"``) or no
    perturbation (``"clean"``).

    ``init_norm`` is ``r_0``; ``None`` (default) starts at the *current* ``epsilon``, read at
    each call. Salman et al.'s training script resets DDN's starting norm to the current
    (warmed-up) epsilon every epoch, which is what this does; a fixed ``r_0 = 1`` with
    ``T = 2`` steps could never exceed ``(1 + gamma)^2 r_0 = 1.1025``, so an "epsilon = 2" DDN
    model would be trained at about half its label.

    Differences from the authors' DDN (``code/attacks.py`` of Hadisalman/smoothing-adversarial),
    kept on purpose and tested as such:

    * *adversarial* means the argmax of the averaged softmax (the plug-in ``G`` this attack
      ascends) differs from ``y``; the authors take the majority vote of the ``m`` argmaxes.
    * the budget is capped at ``epsilon`` at every step; the authors cap it at the largest
      norm the image box allows and renormalise the returned perturbation to ``epsilon``.
    * no 256-level quantisation of the iterates (the authors round to 8-bit levels; the
      book's inputs are floats and the certificate does not need it).
    * step sizes ``a_k`` above, first step ``step_size``; the authors' cosine schedule runs
      from 1 to 0.01 and is stepped before the first use (with ``T = 2``: 0.505, then 0.01).
    * without any adversarial iterate the authors return the clean input
      (``if_none_found="clean"``); our default keeps the last iterate, a point at distance
      ``<= epsilon`` with a larger loss, as PGD would.
    """

    name = "smoothadv_ddn"
    estimator = "smoothadv"

    def __init__(self, epsilon, steps, num_noise=1, noise=None, init_norm: float | None = None,
                 gamma: float = 0.05, step_size: float = 1.0, clip=(0.0, 1.0), chunk: int | None = None,
                 if_none_found: str = "last"):
        super().__init__(epsilon, steps, num_noise, noise, clip, chunk)
        self.init_norm = None if init_norm is None else check_positive_float(init_norm, "init_norm")
        self.gamma = check_positive_float(gamma, "gamma")
        if self.gamma >= 1:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma!r}")
        self.step_size = check_positive_float(step_size, "step_size")
        self.if_none_found = check_choice(if_none_found, DDN_FALLBACKS, "if_none_found")

    def _run(self, model, x, y, draws):
        b = x.shape[0]
        shape = (-1, *([1] * (x.dim() - 1)))
        r0 = self.epsilon if self.init_norm is None else min(self.init_norm, self.epsilon)
        delta = torch.zeros_like(x)
        radius = torch.full((b,), r0, dtype=x.dtype, device=x.device)
        best = torch.zeros_like(x)
        best_norm = torch.full((b,), float("inf"), dtype=x.dtype, device=x.device)

        def keep_if_smaller(prediction):
            nonlocal best, best_norm
            is_adv = prediction != y
            norm = _flat_norm(delta).view(-1)
            improve = is_adv & (norm < best_norm)
            best = torch.where(improve.view(shape), delta, best)
            best_norm = torch.where(improve, norm, best_norm)
            return is_adv

        for k in range(self.steps):
            g, prediction = self._direction(model, x + delta, y, draws)
            is_adv = keep_if_smaller(prediction)
            step = self.step_size * 0.5 * (1 + math.cos(math.pi * k / self.steps))
            delta = delta + step * _normalize(g)
            radius = torch.where(is_adv, radius * (1 - self.gamma), radius * (1 + self.gamma))
            radius = radius.clamp(max=self.epsilon)
            # onto the sphere of radius r_k (DDN's projection), then into the image box
            delta = delta * (radius.view(shape) / _flat_norm(delta).clamp_min(1e-12))
            delta = _project(x, delta, self.epsilon, self.clip)
        # the final iterate may also be adversarial
        keep_if_smaller(_soft_mean(model, x + delta, draws, self.chunk).argmax(1))
        found = torch.isfinite(best_norm)
        fallback = delta if self.if_none_found == "last" else torch.zeros_like(delta)
        return torch.where(found.view(shape), best, fallback).detach()


#: attack name -> class, for :func:`make_attack` and the notebooks' parameters
ATTACKS = {
    "smoothadv_pgd": SmoothAdvPGD,
    "smoothadv_ddn": SmoothAdvDDN,
    "expected_loss_pgd": ExpectedLossPGD,
    "stein_pgd": SteinPGD,
    "base_pgd": BasePGD,
}
_ALIASES = {"pgd": "smoothadv_pgd", "ddn": "smoothadv_ddn"}


def make_attack(name: str, epsilon: float, steps: int, num_noise: int = 1, noise: Noise | float | None = None,
                **kwargs) -> L2Attack:
    """Build an attack by name (``"pgd"`` and ``"ddn"`` abbreviate the SmoothAdv ones)."""
    name = _ALIASES.get(name, name)
    check_choice(name, list(ATTACKS) + list(_ALIASES), "attack")
    return ATTACKS[name](epsilon, steps, num_noise, noise, **kwargs)


def attack_options(name: str) -> tuple[str, ...]:
    """The options of attack ``name`` beyond those its user sets itself (``epsilon, steps, num_noise, noise``).

    An objective that builds an attack from its own ``**kwargs`` reports these as the options
    it accepts (:meth:`rsbook.train.Objective.forwarded_options`). An unknown name gives none:
    the objective's own check then names the bad attack.
    """
    import inspect

    cls = ATTACKS.get(_ALIASES.get(name, name))
    if cls is None:
        return ()
    own = ("self", "epsilon", "steps", "num_noise", "noise")
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p not in own)


# ---------------------------------------------------------------------------- evaluation
def empirical_robust_accuracy(smooth, dataset, attack: L2Attack, epsilons: Sequence[float] | float, n: int,
                              alpha: float, indices: Iterable[int] | None = None, batch_size: int = 32,
                              predict_batch_size: int = 1000, seed: int = 0, soft_draws: int = 0,
                              progress: bool = True, out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Empirical accuracy of the smoothed classifier ``smooth`` under ``attack`` (Salman et al., Sec. 4.3).

    For each example and each ``epsilon`` in ``epsilons``: attack the *smoothed soft*
    classifier of ``smooth.base_classifier`` with ``attack`` (its ``num_noise`` is
    ``m_test``), then run PREDICT with ``n`` samples at level ``alpha`` on the attacked input.
    An example counts as robust when PREDICT returns its label (abstaining counts as wrong).
    ``epsilon = 0`` is clean PREDICT. Attack noise is drawn from a generator seeded from
    ``(seed, epsilon, batch)`` and PREDICT is reseeded per example, so the result is
    reproducible. Returns one row per (example, epsilon): ``idx label epsilon predict correct
    perturbation`` (the l2 norm actually used) and, with ``soft_draws > 0``, ``soft_prob``: a
    Monte-Carlo estimate of ``G(x_hat)_y`` on that many *fresh* draws (not the attacker's).
    Memory: ``batch_size`` examples are attacked together and the attack's ``chunk`` bounds
    how many of their ``m_test`` noisy copies share one forward/backward pass (e.g. ImageNet,
    ``m_test = 128``: ``batch_size=8, chunk=16`` keeps 128 ResNet-50 inputs per pass).

    With ``out=path`` every row is appended to a tab-separated log as soon as its batch
    finishes, and a rerun skips the (example, epsilon) pairs already there: a batch is
    recomputed only if some of its rows are missing, and since all randomness is seeded
    from (seed, epsilon, batch, example) the recomputed rows equal the lost ones. The
    returned frame is then read from the log, in the order of an uninterrupted run.
    """
    n = check_positive_int(n, "n")
    alpha = check_alpha(alpha)
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(soft_draws, bool) or int(soft_draws) != soft_draws or soft_draws < 0:
        raise ValueError(f"soft_draws must be an integer >= 0, got {soft_draws!r}")
    soft_draws = int(soft_draws)
    eps_list = [_check_epsilon(e) for e in np.atleast_1d(np.asarray(epsilons, dtype=float))]
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    model = smooth.base_classifier
    device = smooth.device
    original_epsilon = attack.epsilon
    columns = ["idx", "label", "epsilon", "predict", "correct", "perturbation"] + (["soft_prob"] if soft_draws else [])
    done = set()
    log = None
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        done = {(int(r[0]), _eps_key(float(r[2]))) for r in finished_rows(out, columns)}
        log = open(out, "a", buffering=1)
        if out.stat().st_size == 0:
            log.write("\t".join(columns) + "\n")
    gen = torch.Generator(device=device)
    rows = []
    total = len(eps_list) * len(indices)
    bar = progress_bar(total=total, desc=f"attack+predict {attack.name}", disable=not progress,
                       initial=sum((i, _eps_key(e)) in done for e in eps_list for i in indices))
    try:
        for e_i, eps in enumerate(eps_list):
            attack.epsilon = eps
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                missing = [(i, idx) for i, idx in enumerate(chunk) if (idx, _eps_key(eps)) not in done]
                if not missing:
                    continue
                xs, ys = zip(*(dataset[i] for i in chunk))
                x = torch.stack(list(xs)).to(device)
                y = torch.as_tensor([int(v) for v in ys], device=device)
                gen.manual_seed(seed * 1_000_003 + e_i * 10_007 + start)
                x_adv = attack(model, x, y, generator=gen).x_adv if eps > 0 else x
                norms = (x_adv - x).flatten(1).norm(dim=1).tolist()
                soft = [float("nan")] * len(chunk)
                if soft_draws:
                    # fresh draws from another stream, so the estimate is not the attacker's own
                    gen.manual_seed(seed * 1_000_003 + e_i * 10_007 + start + 5_000_011)
                    fresh = smooth.noise.sample((len(chunk), soft_draws, *x.shape[1:]), generator=gen,
                                                device=device, dtype=x.dtype)
                    with eval_mode(model):
                        soft = smoothed_soft_probability(model, x_adv, y, fresh, attack.chunk).tolist()
                for j, idx in missing:
                    smooth.reseed(seed * 1_000_003 + 7 * idx + 1)
                    pred = smooth.predict(x_adv[j], n, alpha, predict_batch_size)
                    row = (idx, int(y[j]), eps, pred, int(pred == int(y[j])), norms[j]) + ((soft[j],) if soft_draws else ())
                    rows.append(row)
                    if log is not None:
                        log.write(format_row(row))
                bar.update(len(missing))
    finally:
        attack.epsilon = original_epsilon
        bar.close()
        if log is not None:
            log.close()
    if out is None:
        return pd.DataFrame(rows, columns=columns)
    frame = pd.read_csv(out, sep="\t")
    frame["_eps"] = frame["epsilon"].map(_eps_key)
    wanted = pd.DataFrame([(i, _eps_key(e), k) for k, (e, i) in enumerate((e, i) for e in eps_list for i in indices)],
                          columns=["idx", "_eps", "_order"])
    frame = wanted.merge(frame, on=["idx", "_eps"], how="left").sort_values("_order")
    return frame[columns].reset_index(drop=True)


def _eps_key(eps: float) -> float:
    # the log stores 6 significant digits; compare epsilons at that precision
    return float(f"{float(eps):.6g}")


def empirical_accuracy_curve(frame: pd.DataFrame) -> pd.Series:
    """Empirical robust accuracy (fraction correct) per epsilon from :func:`empirical_robust_accuracy`."""
    return frame.groupby("epsilon")["correct"].mean()


# ---------------------------------------------------------------------------- l2 -> linf
def l2_to_linf_radius(l2_radius, dim: int | Sequence[int]):
    """The linf radius implied by an l2 certificate: the l2 ball of radius ``r`` contains the
    linf ball of radius ``r / sqrt(d)`` (Salman et al., Sec. 4.1, Table 3). ``dim`` is ``d``
    or the input shape."""
    d = int(np.prod(dim)) if not isinstance(dim, (int, np.integer)) else int(dim)
    check_positive_int(d, "dim")
    return np.asarray(l2_radius, dtype=float) / math.sqrt(d) if np.ndim(l2_radius) else float(l2_radius) / math.sqrt(d)


def linf_to_l2_radius(linf_radius, dim: int | Sequence[int]):
    """The l2 radius that must be certified to imply a linf certificate of ``linf_radius``:
    ``linf_radius * sqrt(d)`` (e.g. ``2/255 * sqrt(3*32*32) = 0.435`` on CIFAR-10)."""
    d = int(np.prod(dim)) if not isinstance(dim, (int, np.integer)) else int(dim)
    check_positive_int(d, "dim")
    return np.asarray(linf_radius, dtype=float) * math.sqrt(d) if np.ndim(linf_radius) else float(linf_radius) * math.sqrt(d)


def linf_certified_accuracy(log, linf_radii: Sequence[float] | float, dim: int | Sequence[int]):
    """Certified linf accuracy implied by an l2 certification log: the l2 certified accuracy at
    ``linf_radius * sqrt(d)``."""
    from rsbook.analysis import certified_accuracy

    return certified_accuracy(log, linf_to_l2_radius(linf_radii, dim))
