"""CAT-RS: confidence-aware training of smoothed classifiers (Jeong, Kim & Shin, AAAI 2023).

For each training example ``(x, y)`` draw ``M`` noises ``delta_i ~ N(0, sigma^2 I)`` and
compute the cross-entropies ``l_i = CE(F(x + delta_i), y)``. The fraction of the ``M``
noisy copies the model classifies correctly, ``p_hat``, is a cheap proxy of the smoothed
classifier's confidence ``p_f(x, y)`` (eq. 4) and hence of its certified radius (eq. 3).
Draw ``K ~ Bin(M, p_hat)`` and

* **bottom-K loss** (eq. 6): ``L_low = (1/M) * sum of the max(K, 1) smallest l_i`` -- a
  low-confidence example is only asked to keep the noisy copies it can already get right;
* **worst-case loss** (eq. 7): ``L_high = max_i max_{|delta*_i - delta_i|_2 <= eps}
  KL(y_hat || F(x + delta*_i))`` -- a confident example is pushed to be right on the
  hardest noise near its draws, found by PGD *on the noise* (not on ``x``);
* **final loss** (eq. 9): ``L = L_low + lambda * 1[K = M] * L_high``.

Three points the paper's text leaves open or gets wrong, settled here:

1. eq. (7) prints ``KL(F(x + delta*), y_hat)``; only ``KL(y_hat || F)`` is the
   cross-entropy when ``y_hat`` is one-hot, as the text right after eq. (7) says (and as
   the authors' code computes), so that order is used (:func:`kl_to_target`).
2. ``K = M`` uses the *unclamped* ``K``: the worst-case loss is on with probability
   ``p_hat^M`` (for ``M = 1`` a wrong draw gives ``K = 0``, which the clamp would hide).
3. The paper also rescales each PGD iterate to the mean and standard deviation of the
   original draw ("to maintain the Gaussian likelihood"). That can move ``delta*`` slightly
   outside the ``eps``-ball of eq. (7); we rescale (centred mean and standard deviation,
   per draw) and then project onto the ball again, so the constraint of eq. (7) holds
   exactly. ``rescale=False`` turns the rescaling off.

The soft target ``y_hat`` is by default the vote frequencies of a Gaussian-trained teacher
(``sigma_0 = 0.25``) on ``N`` noisy copies of every training example, computed once before
training (:func:`teacher_targets`) and looked up by dataset index (``uses_index = True``:
:func:`rsbook.train.fit` passes ``index=``); ``targets="self"`` uses the mean softmax of
the model itself over the ``M`` draws instead (the paper's Appendix G.1 variant).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rsbook._checks import check_choice, check_positive_float, check_positive_int
from rsbook.noise import Noise, make_noise
from rsbook.train import Objective, ObjectiveOutput, register_objective

__all__ = ["bottom_k_loss", "sample_k", "kl_to_target", "noise_pgd", "teacher_targets", "CATRS",
           "TARGETS", "CONFIDENCES", "read_trace", "table_from_logs"]

#: where the soft target y_hat of the worst-case loss comes from
TARGETS = ("teacher", "self", "onehot")
#: what p_hat (the law of K) is computed from: the model's own M draws, or the teacher's votes
CONFIDENCES = ("model", "teacher")


def bottom_k_loss(losses: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Eq. (6): per example, the sum of the ``k`` smallest of ``M`` losses divided by ``M``.

    ``losses`` has shape ``(B, M)``, ``k`` integer shape ``(B,)`` with ``0 <= k <= M``.
    Returns shape ``(B,)``. The gradient reaches only the selected entries (sorting is a
    permutation; the others are multiplied by 0). The divisor is ``M``, not ``k``: a
    low-confidence example contributes less, as the paper intends.
    """
    if losses.dim() != 2:
        raise ValueError(f"losses must have shape (B, M), got {tuple(losses.shape)}")
    k = torch.as_tensor(k, device=losses.device)
    if k.shape != losses.shape[:1] or k.is_floating_point():
        raise ValueError(f"k must be an integer tensor of shape ({losses.shape[0]},), got {k.dtype} {tuple(k.shape)}")
    m = losses.shape[1]
    if bool((k < 0).any()) or bool((k > m).any()):
        raise ValueError(f"k must lie in [0, M] = [0, {m}], got values {k.min().item()}..{k.max().item()}")
    ordered, _ = losses.sort(dim=1)
    keep = torch.arange(m, device=losses.device).unsqueeze(0) < k.unsqueeze(1)
    return torch.where(keep, ordered, torch.zeros_like(ordered)).sum(1) / m


def sample_k(p_hat: torch.Tensor, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``K ~ Bin(m, p_hat)`` per example, as the number of ``m`` uniforms below ``p_hat``."""
    m = check_positive_int(m, "m")
    u = torch.rand((p_hat.shape[0], m), generator=generator, device=p_hat.device)
    return (u < p_hat.unsqueeze(1).to(u.dtype)).sum(1)


def kl_to_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``KL(target || softmax(logits))`` per row, in float32 (``0 log 0 = 0``).

    With a one-hot ``target`` this is exactly the cross-entropy ``-log softmax(logits)_y``.
    """
    logits = logits.float()
    target = target.float()
    return (torch.xlogy(target, target) - target * F.log_softmax(logits, dim=1)).sum(1)


def _per_draw(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2)


def _bshape(stat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return stat.view(*stat.shape, *([1] * (like.dim() - stat.dim())))


def _project_ball(delta: torch.Tensor, center: torch.Tensor, epsilon: float) -> torch.Tensor:
    step = delta - center
    norm = _bshape(_per_draw(step).norm(dim=2), step)
    return center + step * torch.clamp(epsilon / norm.clamp_min(1e-12), max=1.0)


def noise_pgd(model: nn.Module, x: torch.Tensor, draws: torch.Tensor, target: torch.Tensor, epsilon: float,
              steps: int, rescale: bool = True) -> torch.Tensor:
    """The inner maximisation of eq. (7): PGD on the noise, one run per draw.

    ``x`` is ``(B, ...)``, ``draws`` ``(B, M, ...)``, ``target`` ``(B, K)`` probabilities.
    Each ``delta_i`` ascends ``KL(target || F(x + delta_i))`` from ``delta_i`` itself (no
    random start): ``steps`` steps of size ``2 eps / steps`` along the l2-normalised
    gradient, projected onto the ``eps``-ball around the original draw; no [0, 1] clipping
    (the noisy input is not an image). With ``rescale`` each iterate is also moved to the
    original draw's mean and standard deviation, then projected again (see the module
    docstring). The model is in eval mode and no parameter gradient is accumulated.
    Returns the perturbed draws ``delta*``, detached, same shape as ``draws``.
    """
    epsilon = float(epsilon)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    d0 = draws.detach()
    if epsilon == 0 or steps == 0:
        return d0.clone()
    from rsbook.utils import eval_mode

    b, m = d0.shape[:2]
    base = x.detach().unsqueeze(1).expand_as(d0)
    tgt = target.detach().unsqueeze(1).expand(b, m, target.shape[1]).reshape(b * m, -1)
    mean0 = _per_draw(d0).mean(2)
    std0 = _per_draw(d0).std(2, unbiased=False)
    step_size = 2.0 * epsilon / steps
    delta = d0.clone()
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = model((base + delta).reshape(b * m, *d0.shape[2:]))
            loss = kl_to_target(logits, tgt).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            grad = grad.float()
            unit = grad / _bshape(_per_draw(grad).norm(dim=2), grad).clamp_min(1e-12)
            delta = _project_ball(delta.detach() + step_size * unit.to(delta.dtype), d0, epsilon)
            if rescale:
                mean = _per_draw(delta).mean(2)
                std = _per_draw(delta).std(2, unbiased=False).clamp_min(1e-12)
                delta = (delta - _bshape(mean, delta)) * _bshape(std0 / std, delta) + _bshape(mean0, delta)
                delta = _project_ball(delta, d0, epsilon)
    return delta.detach()


@torch.inference_mode()
def teacher_targets(teacher: nn.Module, dataset, num_classes: int, sigma: float | Noise = 0.25, n: int = 1000,
                    batch_size: int = 1000, seed: int = 0, device: str | torch.device | None = None,
                    progress: bool = True) -> torch.Tensor:
    """Soft targets ``y_hat``: the teacher's vote frequencies on ``n`` noisy copies of each example.

    The smoothed prediction of a Gaussian-trained teacher (Sec. 3.2; the authors use
    ``sigma_0 = 0.25`` and ``n = 10,000``). Counts come from the one batched sampler,
    :meth:`rsbook.smooth.Smooth.sample_counts_batch`, reseeded per chunk of examples so the
    table does not depend on ``batch_size``. Returns a float tensor ``(len(dataset), num_classes)``
    (on the CPU) whose rows sum to 1.
    """
    from torch.utils.data import DataLoader

    from rsbook.smooth import Smooth
    from rsbook.utils import progress_bar

    n = check_positive_int(n, "n")
    if device is None:
        device = next(teacher.parameters()).device
    teacher = teacher.to(device)
    smooth = Smooth(teacher, num_classes, sigma, seed=seed, device=device)
    chunk = 64
    rows = []
    loader = DataLoader(dataset, batch_size=chunk, shuffle=False)
    for i, (xs, _) in enumerate(progress_bar(loader, desc="teacher targets", disable=not progress)):
        smooth.reseed(seed * 1_000_003 + i)
        rows.append(torch.from_numpy(smooth.sample_counts_batch(xs.to(device), n, batch_size)).float() / n)
    return torch.cat(rows)


@register_objective("catrs")
class CATRS(Objective):
    """Confidence-aware training (Jeong, Kim & Shin, AAAI 2023), eq. (9): ``L_low + lambda 1[K = M] L_high``.

    Parameters (the authors' CIFAR-10 settings: ``num_noise = 4``, ``epsilon = 1.0``,
    ``steps = 4``, ``lbd = 0.5 / 1.0 / 2.0`` for ``sigma = 0.25 / 0.5 / 1.0``; ImageNet
    ``num_noise = 2``, ``steps = 1``, ``lbd = 2.0``, ``epsilon`` 1.0 then 2.0 from epoch 80,
    ``confidence = "teacher"``):

    ``num_noise`` -- M draws per example; ``epsilon``, ``steps`` -- the noise-PGD ball
    and steps (step size ``2 epsilon / steps``); ``lbd`` -- lambda of eq. (9), 0 turns the
    worst-case loss (and the attack) off; ``targets`` -- ``"teacher"`` (a table, given as
    ``target_table`` or computed by :meth:`prepare` from ``teacher_checkpoint``), ``"self"``
    (mean softmax of the model over the M draws, detached) or ``"onehot"`` (then
    ``L_high`` is the worst-case cross-entropy); ``confidence`` -- ``"model"`` (``p_hat`` from
    the M draws, the default) or ``"teacher"`` (``p_hat = y_hat_y``, the authors' ImageNet
    option against the cold start); ``late_epsilon``/``late_from`` -- use ``late_epsilon``
    from epoch ``late_from`` (0-based) on; ``rescale`` -- see the module docstring.

    Every example's draws feed the attack (as in the authors' code, so the second
    forward pass sees the whole batch); only examples with ``K = M`` add its loss.
    ``trace = True`` records, per epoch, each example's ``p_hat`` and whether its
    worst-case loss was on (:meth:`trace_frame`), for the chapter's figure;
    ``trace_file = path`` appends the same rows to a tab-separated file (:func:`read_trace`).
    """

    name = "catrs"
    uses_index = True

    @classmethod
    def missing_options(cls, options):
        if options.get("targets", "teacher") != "teacher" or any(
                options.get(k) is not None for k in ("target_table", "teacher_checkpoint", "teacher_cache")):
            return {}
        return {"teacher_checkpoint": "a Gaussian-trained checkpoint whose smoothed predictions are the soft "
                                      "targets y_hat", "targets": "'self' to use the model's own predictions"}

    def __init__(self, sigma: float | Noise, num_noise: int = 4, epsilon: float = 1.0, steps: int = 4,
                 lbd: float = 1.0, targets: str = "teacher", confidence: str = "model",
                 target_table: torch.Tensor | np.ndarray | None = None,
                 teacher_checkpoint: str | os.PathLike | None = None, teacher_sigma: float = 0.25,
                 teacher_samples: int = 1000, teacher_cache: str | os.PathLike | None = None,
                 rescale: bool = True, late_epsilon: float | None = None, late_from: int | None = None,
                 trace: bool = False, trace_file: str | os.PathLike | None = None):
        self.noise = make_noise(sigma)
        self.num_noise = check_positive_int(num_noise, "num_noise")
        self.max_epsilon = float(epsilon)
        if self.max_epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self.epsilon = self.max_epsilon
        if isinstance(steps, bool) or int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        self.steps = int(steps)
        self.lbd = float(lbd)
        if self.lbd < 0:
            raise ValueError(f"lbd must be >= 0, got {lbd!r}")
        self.targets = check_choice(targets, TARGETS, "targets")
        self.confidence = check_choice(confidence, CONFIDENCES, "confidence")
        if self.confidence == "teacher" and self.targets != "teacher":
            raise ValueError("confidence='teacher' needs targets='teacher' (p_hat is read from the teacher table)")
        self.table = None if target_table is None else torch.as_tensor(np.asarray(target_table), dtype=torch.float32)
        self.teacher_checkpoint = teacher_checkpoint
        self.teacher_sigma = check_positive_float(teacher_sigma, "teacher_sigma")
        self.teacher_samples = check_positive_int(teacher_samples, "teacher_samples")
        self.teacher_cache = teacher_cache
        self.rescale = bool(rescale)
        if (late_epsilon is None) != (late_from is None):
            raise ValueError("late_epsilon and late_from go together (e.g. late_epsilon=2.0, late_from=80)")
        self.late_epsilon, self.late_from = late_epsilon, late_from
        self.trace = bool(trace)
        self.trace_file = None if trace_file is None else Path(trace_file)
        self._trace: dict[int, list] = {}
        self._epoch = 0

    # ------------------------------------------------------------------ set-up
    def prepare(self, model: nn.Module, train_set, device: torch.device | str | None = None) -> None:
        """Compute (or load from ``teacher_cache``) the teacher's soft-target table before training."""
        if self.targets != "teacher" or self.table is not None:
            return
        if self.teacher_cache is not None and Path(self.teacher_cache).exists():
            self.table = torch.as_tensor(np.load(self.teacher_cache), dtype=torch.float32)
        else:
            if self.teacher_checkpoint is None:
                raise ValueError("targets='teacher' needs target_table=... or teacher_checkpoint=... "
                                 "(a Gaussian-trained model); or use targets='self'")
            from rsbook.data import dataset_info
            from rsbook.models import load_checkpoint

            teacher, ckpt = load_checkpoint(self.teacher_checkpoint, map_location="cpu")
            teacher.to(device or "cpu")
            table = teacher_targets(teacher, train_set, dataset_info(ckpt["dataset"]).num_classes,
                                    self.teacher_sigma, self.teacher_samples, device=device, progress=True)
            self.table = table
            if self.teacher_cache is not None:
                Path(self.teacher_cache).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(str(self.teacher_cache) + ".tmp.npy")
                np.save(tmp, table.numpy())
                os.replace(tmp, self.teacher_cache)
        if len(self.table) != len(train_set):
            raise ValueError(f"teacher table has {len(self.table)} rows but the training set has {len(train_set)}")

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self._epoch = epoch
        late = self.late_from is not None and epoch >= self.late_from
        self.epsilon = float(self.late_epsilon) if late else self.max_epsilon

    # ------------------------------------------------------------------ the loss
    def _lookup(self, index, device) -> torch.Tensor:
        if self.table is None:
            raise ValueError("targets='teacher' but no teacher table: pass target_table=..., or "
                             "teacher_checkpoint=... and call prepare(model, train_set) before training")
        if index is None:
            raise ValueError("targets='teacher' needs the dataset indices of the batch (fit passes index= "
                             "to objectives with uses_index = True)")
        return self.table[torch.as_tensor(index).cpu()].to(device)

    def __call__(self, model, x, y, index=None):
        b, m = x.shape[0], self.num_noise
        # drawn exactly as rsbook.train.noisy_copies draws them: M = 1, lbd = 0 is Gaussian augmentation
        draws = self.noise.sample((b, m, *x.shape[1:]), device=x.device, dtype=x.dtype)
        inputs = (x.unsqueeze(1) + draws).reshape(b * m, *x.shape[1:])
        targets = y.repeat_interleave(m)
        logits = model(inputs)
        losses = self.cross_entropy(logits, targets, reduction="none").view(b, m)
        teacher = self._lookup(index, x.device) if self.targets == "teacher" else None
        with torch.no_grad():
            if self.confidence == "teacher":
                p_hat = teacher.gather(1, y.view(-1, 1)).squeeze(1)
            else:
                p_hat = (logits.argmax(1) == targets).view(b, m).float().mean(1)
            k = sample_k(p_hat, m)
        loss = bottom_k_loss(losses, k.clamp(min=1))
        full = k == m
        if self.lbd > 0:
            if self.targets == "teacher":
                y_hat = teacher
            elif self.targets == "self":
                y_hat = F.softmax(logits.detach().float(), dim=1).view(b, m, -1).mean(1)
            else:
                y_hat = F.one_hot(y, logits.shape[1]).float()
            worst = noise_pgd(model, x, draws, y_hat, self.epsilon, self.steps, rescale=self.rescale)
            adv_logits = model((x.unsqueeze(1) + worst).reshape(b * m, *x.shape[1:]))
            kl = kl_to_target(adv_logits, y_hat.repeat_interleave(m, dim=0)).view(b, m).max(1).values
            loss = loss + self.lbd * torch.where(full, kl, torch.zeros_like(kl))
        if (self.trace or self.trace_file is not None) and index is not None:
            record = (torch.as_tensor(index).cpu(), p_hat.detach().cpu(), full.cpu())
            if self.trace:
                self._trace.setdefault(self._epoch, []).append(record)
            if self.trace_file is not None:
                self._append_trace(record)
        return ObjectiveOutput(loss.mean(), logits, targets)

    def _append_trace(self, record) -> None:
        new = not self.trace_file.exists()
        if new:
            self.trace_file.parent.mkdir(parents=True, exist_ok=True)
        idx, p, full = record
        with open(self.trace_file, "a") as fh:
            if new:
                fh.write("epoch\tindex\tp_hat\thigh\n")
            fh.writelines(f"{self._epoch}\t{int(i)}\t{float(q):.6g}\t{int(h)}\n" for i, q, h in zip(idx, p, full))

    def trace_frame(self):
        """The recorded ``(epoch, index, p_hat, high)`` rows (``trace=True``) as a DataFrame."""
        import pandas as pd

        rows = []
        for epoch, parts in sorted(self._trace.items()):
            for idx, p, full in parts:
                rows.append(pd.DataFrame({"epoch": epoch, "index": idx.numpy(), "p_hat": p.numpy(),
                                          "high": full.numpy().astype(bool)}))
        if not rows:
            return pd.DataFrame(columns=["epoch", "index", "p_hat", "high"])
        return pd.concat(rows, ignore_index=True)


def read_trace(path: str | os.PathLike):
    """The ``(epoch, index, p_hat, high)`` rows a CAT-RS run appended to ``trace_file``.

    A resumed run repeats the rows of the epoch it was interrupted in; the last row per
    ``(epoch, index)`` is kept, which is the one of the completed epoch.
    """
    import pandas as pd

    frame = pd.read_csv(path, sep="\t")
    frame["high"] = frame["high"].astype(bool)
    return frame.drop_duplicates(["epoch", "index"], keep="last").reset_index(drop=True)


def table_from_logs(folder: str | os.PathLike, logs: dict, radii) -> "pandas.DataFrame":
    """Rebuild a Table 1 / 2 of the paper from certification logs in the reference format.

    ``logs`` maps ``sigma -> {method: path relative to folder}`` (or ``method -> path`` for
    a single-sigma table such as ImageNet's, which gets ``sigma = NaN``); e.g. the authors'
    published ``data/cifar10/noise_0.5/cat-rs/noise_0.5.tsv``. Returns one row per log with
    ``sigma, method, ACR`` and the certified accuracy (%) at each radius -- the layout of
    ``rsbook/paper_data/catrs_table1_cifar10.csv``. A missing log raises, naming it.
    """
    import pandas as pd

    from rsbook.analysis import acr, certified_accuracy, read_log

    radii = [float(r) for r in radii]
    nested = all(isinstance(v, dict) for v in logs.values())
    items = logs.items() if nested else [(float("nan"), logs)]
    rows = []
    for sigma, by_method in items:
        for method, rel in by_method.items():
            frame = read_log(Path(folder) / rel)
            row = {"sigma": float(sigma), "method": method, "ACR": acr(frame)}
            row.update({f"{r:g}": 100 * a for r, a in zip(radii, certified_accuracy(frame, radii))})
            rows.append(row)
    return pd.DataFrame(rows)
