"""The smoothed classifier ``g(x) = argmax_c P(f(x + eps) = c)`` and its two procedures.

This is the whole of Cohen, Rosenfeld & Kolter (ICML 2019), Section 3.2: a Monte-Carlo
sampler that counts the base classifier's votes under noise, PREDICT (abstain unless a
binomial test separates the top two classes) and CERTIFY (pick the top class on ``n0``
samples, bound its probability from below on ``n`` fresh samples, convert to a radius).
Every other certifier in rsbook reuses :meth:`Smooth.sample_counts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rsbook._checks import check_alpha, check_choice, check_positive_int
from rsbook.noise import Noise, make_noise
from rsbook.stats import binomial_test_pvalue, clopper_pearson_lower
from rsbook.utils import eval_mode

__all__ = ["ABSTAIN", "Certificate", "Smooth", "PRECISIONS"]

#: returned in place of a class when the smoothed classifier declines to answer
ABSTAIN = -1

#: inference precisions of the base classifier (``float32`` runs without autocast)
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Certificate:
    """Everything one CERTIFY call learned about one input.

    ``prediction`` is the class (or :data:`ABSTAIN`), ``radius`` the certified radius
    (0 when abstaining), ``count`` the votes for the selected class among ``n`` estimation
    samples, ``p_lower`` its Clopper-Pearson lower bound, ``n0`` the selection samples.
    """

    prediction: int
    radius: float
    count: int
    n: int
    p_lower: float
    n0: int

    def __iter__(self):
        # unpacks like Cohen et al.'s (class, radius) pair
        return iter((self.prediction, self.radius))


class Smooth:
    """A smoothed classifier built on ``base_classifier`` (a module returning logits).

    ``noise`` is a :class:`~rsbook.noise.Noise` or a float (Gaussian sigma). ``seed`` fixes
    the sampler's generator; :meth:`reseed` resets it (``certify_dataset`` reseeds per
    example so that resumed and sharded runs reproduce an uninterrupted one).

    How the base classifier is run (see :meth:`logits`): ``precision`` is ``"float32"``
    (default), ``"bfloat16"`` or ``"float16"`` (autocast; the noise is still drawn and added
    in float32), ``channels_last`` converts the model and the 4-D batches to that memory
    layout, ``compile=True`` runs it through ``torch.compile``. A lower precision makes the
    base classifier a slightly different function: the certificates are sound for the
    classifier *as run* (what PREDICT at the same precision answers), not for its float32
    twin; :func:`rsbook.benchmark.precision_disagreement` measures how often the two differ.
    """

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, noise: Noise | float,
                 seed: int = 0, device: torch.device | str | None = None, precision: str = "float32",
                 channels_last: bool = False, compile: bool = False):
        self.base_classifier = base_classifier
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.noise = make_noise(noise)
        if device is None:
            try:
                device = next(base_classifier.parameters()).device
            except (StopIteration, AttributeError):
                device = torch.device("cpu")
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.reseed(seed)
        self._set_inference(precision, channels_last, compile)

    @property
    def sigma(self) -> float:
        return getattr(self.noise, "sigma", float("nan"))

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    # ------------------------------------------------------------------ how f is run
    def _set_inference(self, precision: str, channels_last: bool, compile: bool) -> None:
        self.precision = check_choice(precision, PRECISIONS, "precision")
        if not isinstance(channels_last, bool) or not isinstance(compile, bool):
            raise ValueError(f"channels_last and compile must be True or False, got {channels_last!r}, {compile!r}")
        self.channels_last, self.compiled = channels_last, compile
        if channels_last:
            self.base_classifier.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.base_classifier) if compile else self.base_classifier

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The base classifier's logits on ``batch``, run at this object's precision and memory layout."""
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.precision == "float32":
            return self._forward(batch)
        with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision]):
            return self._forward(batch)

    # ------------------------------------------------------------------ sampler
    def sample_counts(self, x: torch.Tensor, n: int, batch_size: int = 1000) -> np.ndarray:
        """Votes of the base classifier on ``n`` noisy copies of ``x`` (one input, no batch dim).

        Returns an integer array of length ``num_classes`` summing to ``n``.
        """
        return self.sample_counts_batch(x.unsqueeze(0), n, batch_size)[0]

    def sample_counts_batch(self, xs: torch.Tensor, n: int, batch_size: int = 1000) -> np.ndarray:
        """Votes on ``n`` noisy copies of each of the inputs ``xs`` (shape ``(B, ...)``): array ``(B, num_classes)``.

        The ``B * n`` noisy inputs are streamed through the model in chunks of ``batch_size``
        (which need not divide ``n``); a chunk may span several inputs. Votes are counted
        on the device with one ``bincount`` per chunk over ``input * num_classes + class``
        and copied to the host once, at the end.
        """
        n = check_positive_int(n, "n")
        batch_size = check_positive_int(batch_size, "batch_size")
        xs = xs.to(self.device)
        num_inputs, k = xs.shape[0], self.num_classes
        counts = torch.zeros(num_inputs * k, dtype=torch.long, device=self.device)
        with eval_mode(self.base_classifier), torch.inference_mode():
            total = num_inputs * n
            for start in range(0, total, batch_size):
                b = min(batch_size, total - start)
                if num_inputs == 1:
                    owner = None
                    batch = xs.expand(b, *xs.shape[1:])
                else:
                    owner = torch.arange(start, start + b, device=self.device) // n
                    batch = xs[owner]
                eps = self.noise.sample(batch.shape, generator=self.generator, device=self.device, dtype=xs.dtype)
                predictions = self.logits(batch + eps).argmax(dim=1)
                slots = predictions if owner is None else owner * k + predictions
                counts += torch.bincount(slots, minlength=num_inputs * k)
        return counts.view(num_inputs, k).cpu().numpy()

    # ------------------------------------------------------------------ PREDICT
    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int = 1000) -> int:
        """Cohen et al. (2019), PREDICT: the top class, or ABSTAIN.

        Returns the wrong class with probability at most ``alpha`` (their Proposition 1):
        a two-sided binomial test of the top two counts must reject ``p = 1/2`` at level alpha.
        """
        alpha = check_alpha(alpha)
        counts = self.sample_counts(x, n, batch_size)
        top2 = np.argsort(counts, kind="stable")[::-1][:2]
        n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
        if binomial_test_pvalue(n_a, n_a + n_b, 0.5) > alpha:
            return ABSTAIN
        return int(top2[0])

    # ------------------------------------------------------------------ CERTIFY
    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int = 1000) -> Certificate:
        """Cohen et al. (2019), CERTIFY. Unpacks as ``(class, radius)``.

        ``n0`` samples choose the candidate class; ``n`` *fresh* samples give a one-sided
        ``1 - alpha`` Clopper-Pearson lower bound ``p_lower`` on its probability. If
        ``p_lower > 1/2`` the answer is certified at radius ``noise.certified_radius(p_lower)``
        (``sigma * Phi^{-1}(p_lower)`` for Gaussian noise, their Theorem 1); otherwise ABSTAIN.
        The returned :class:`Certificate` also carries the counts for logging.
        """
        n0 = check_positive_int(n0, "n0")
        n = check_positive_int(n, "n")
        alpha = check_alpha(alpha)
        candidate = int(np.argmax(self.sample_counts(x, n0, batch_size)))
        count = int(self.sample_counts(x, n, batch_size)[candidate])
        return self.certificate_from_count(candidate, count, n, alpha, n0=n0)

    def certificate_from_count(self, candidate: int, count: int, n: int, alpha: float, n0: int = 0) -> Certificate:
        """The certificate implied by ``count`` votes for ``candidate`` among ``n`` estimation samples."""
        p_lower = float(clopper_pearson_lower(count, n, alpha))
        if p_lower <= 0.5:
            return Certificate(ABSTAIN, 0.0, count, n, p_lower, n0)
        return Certificate(candidate, self.noise.certified_radius(p_lower), count, n, p_lower, n0)

    # ------------------------------------------------------------------ T-CERTIFY (Feng et al., 2020)
    def t_certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int = 1000, grid: int = 10,
                  variant: str = "grid", combine: str = "sum", fraction: float = 0.5):
        """T-CERTIFY (Feng et al., AAAI 2020, Alg. 2): CERTIFY's draws, ``p_A`` and ``p_B`` bounded separately.

        Draws exactly what :meth:`certify` draws (``n0`` selection votes, then ``n`` estimation
        votes, through the one sampler), so with the same seed the returned
        :class:`rsbook.adre.TCertificate` carries CERTIFY's radius (``radius_certify``) and
        T-CERTIFY's (``radius``) on the same samples. ``variant="grid"`` maximises over
        ``alpha' = alpha i / grid``; ``variant="fixed"`` uses ``alpha' = fraction * alpha``, fixed in
        advance; ``variant="exact"`` fixes ``alpha'`` from the selection
        votes (:func:`rsbook.adre.choose_alpha_prime`). Gaussian noise only (eq. 2).
        """
        from rsbook.adre import VARIANTS, _fixed_alpha_prime, choose_alpha_prime, t_certificate_from_counts
        from rsbook.noise import Gaussian

        if not isinstance(self.noise, Gaussian):
            raise ValueError(f"T-CERTIFY's radius (eq. 2) holds for Gaussian noise only, got {self.noise!r}")
        n0, n = check_positive_int(n0, "n0"), check_positive_int(n, "n")
        alpha = check_alpha(alpha)
        check_choice(variant, VARIANTS, "variant")
        alpha_prime = _fixed_alpha_prime(alpha, fraction) if variant == "fixed" else None   # fixed before sampling
        counts0 = self.sample_counts(x, n0, batch_size)
        candidate = int(np.argmax(counts0))
        counts = self.sample_counts(x, n, batch_size)
        if variant == "exact":
            alpha_prime = choose_alpha_prime(counts0, n, alpha, self.sigma, grid, combine)
        return t_certificate_from_counts(counts, candidate, alpha, self.sigma, grid, combine=combine,
                                         alpha_prime=alpha_prime, n0=n0)
