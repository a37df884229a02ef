"""One training loop, many objectives.

Every training method in the book is an :class:`Objective`: a callable that maps a
batch ``(x, y)`` to a loss. :func:`fit` owns everything else (optimiser, schedule,
seeding, checkpoint-per-epoch with resume, AMP and channels_last on CUDA, progress).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from rsbook._checks import check_choice, check_positive_float, check_positive_int
from rsbook.noise import Noise, make_noise

__all__ = ["Objective", "ObjectiveOutput", "GaussianAugmentation", "fit", "evaluate_accuracy",
           "SCHEDULES", "noisy_copies", "SmoothAdv", "OBJECTIVES", "make_objective"]

SCHEDULES = ("step", "cosine", "constant")


@dataclass
class ObjectiveOutput:
    """The loss to minimise plus the logits/targets it was computed on (for reporting accuracy)."""

    loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


class Objective:
    """A training method. Subclasses implement :meth:`__call__`."""

    name = "objective"

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by :func:`fit` before each epoch (0-based), e.g. for an epsilon warm-up."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ObjectiveOutput:
        raise NotImplementedError


def noisy_copies(x: torch.Tensor, y: torch.Tensor, noise: Noise, m: int, noise_draws: torch.Tensor | None = None):
    """``m`` noisy copies of each example, laid out example-major: ``(x_1+d_11, ..., x_1+d_1m, x_2+d_21, ...)``.

    ``noise_draws`` (shape ``(batch, m, *x.shape[1:])``) reuses given perturbations
    (SmoothAdv trains on the same draws its attack used); otherwise fresh ones are drawn.
    Returns ``(inputs, targets, noise_draws)``.
    """
    b = x.shape[0]
    if noise_draws is None:
        noise_draws = noise.sample((b, m, *x.shape[1:]), device=x.device, dtype=x.dtype)
    inputs = (x.unsqueeze(1) + noise_draws).reshape(b * m, *x.shape[1:])
    return inputs, y.repeat_interleave(m), noise_draws


class GaussianAugmentation(Objective):
    """Cohen et al. (2019), Sec. 3.3: cross-entropy of ``f`` on ``x + delta``, ``delta ~ N(0, sigma^2 I)``.

    With ``num_noise = m > 1`` each example contributes the mean loss over ``m``
    independent draws (the ``m_train`` of Salman et al., 2019, with epsilon = 0).
    """

    name = "gaussian"

    def __init__(self, sigma: float | Noise, num_noise: int = 1):
        self.noise = make_noise(sigma)
        self.num_noise = check_positive_int(num_noise, "num_noise")

    def __call__(self, model, x, y):
        inputs, targets, _ = noisy_copies(x, y, self.noise, self.num_noise)
        logits = model(inputs)
        return ObjectiveOutput(F.cross_entropy(logits, targets), logits, targets)


def _make_scheduler(optimizer, schedule, epochs, step_size, gamma):
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def fit(model: nn.Module, train_set: Dataset, objective: Objective, epochs: int, *, batch_size: int = 256,
        lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4, schedule: str = "step",
        step_size: int = 30, gamma: float = 0.1, checkpoint: str | os.PathLike | None = None,
        arch: str | None = None, dataset: str | None = None, device: str | torch.device | None = None,
        seed: int = 0, num_workers: int = 0, amp: bool | None = None, progress: bool = True) -> list[dict]:
    """Train ``model`` on ``train_set`` by minimising ``objective`` with SGD; returns per-epoch history.

    With ``checkpoint=path`` the state (model, optimiser, schedule, history) is written
    after every epoch and a rerun resumes after the last finished epoch; ``arch`` and
    ``dataset`` are stored so :func:`rsbook.models.load_checkpoint` can rebuild the model.
    Each epoch's shuffling and noise are seeded from ``(seed, epoch)``, so a resumed run
    continues exactly as an uninterrupted one would. On CUDA, ``amp`` (default on) uses
    float16 autocast with loss scaling, and 4-D inputs use channels_last.
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    check_choice(schedule, SCHEDULES, "schedule")
    if checkpoint is not None and (arch is None or dataset is None):
        raise ValueError("fit(checkpoint=...) needs arch= and dataset= so the checkpoint can be reloaded")
    device = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    on_cuda = device.type == "cuda"
    amp = on_cuda if amp is None else (amp and on_cuda)
    model.to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = _make_scheduler(optimizer, schedule, epochs, step_size, gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict] = []
    start_epoch = 0
    if checkpoint is not None and Path(checkpoint).exists():
        from rsbook.models import load_checkpoint

        _, state = load_checkpoint(checkpoint, map_location=device)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state.get("history", []))
        start_epoch = int(state["epoch"]) + 1

    bar = tqdm(range(start_epoch, epochs), desc=f"train {objective.name}", disable=not progress,
               initial=start_epoch, total=epochs)
    for epoch in bar:
        torch.manual_seed(seed * 100_003 + epoch)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                            generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
                            pin_memory=on_cuda, drop_last=False)
        objective.start_epoch(epoch, epochs)
        model.train()
        total_loss, total_correct, total_seen, total_noisy, t0 = 0.0, 0, 0, 0, time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if on_cuda and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out = objective(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += float(out.loss.detach()) * x.shape[0]
            total_correct += int((out.logits.detach().argmax(1) == out.targets).sum())
            total_noisy += len(out.targets)
            total_seen += x.shape[0]
        scheduler.step()
        record = {"epoch": epoch, "loss": total_loss / total_seen, "noisy_acc": total_correct / total_noisy,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch}: loss {record['loss']} (lower lr?)")
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['noisy_acc']:.3f}")
        if checkpoint is not None:
            from rsbook.models import save_checkpoint

            save_checkpoint(checkpoint, model, arch, dataset, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), epoch=epoch, history=history,
                            objective=objective.name)
    model.eval()
    return history


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, dataset: Dataset, noise: Noise | float | None = None,
                      batch_size: int = 1000, seed: int = 0) -> float:
    """Top-1 accuracy of the *base* classifier, clean or under one draw of ``noise`` per example."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    noise = make_noise(noise) if noise is not None else None
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        if noise is not None:
            x = x + noise.sample(x.shape, generator=gen, device=device, dtype=x.dtype)
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


class SmoothAdv(Objective):
    """Salman et al. (NeurIPS 2019), Pseudocode 1: adversarial training of the *smoothed* classifier.

    For each minibatch: draw ``m = num_noise`` perturbations ``delta_i ~ N(0, sigma^2 I)``
    per example; find ``x_hat`` with ``steps`` steps of SmoothAdv-PGD or -DDN
    (:mod:`rsbook.attacks`) on the plug-in estimate (eq. 6) of the smoothed soft
    classifier built from *those* draws; then minimise the cross-entropy of ``f`` on
    ``x_hat + delta_i`` with the *same* draws. With ``epsilon = 0`` no attack is run and
    this is exactly :class:`GaussianAugmentation` with ``num_noise`` draws (same random
    numbers, same loss).

    ``warmup_epochs = w > 0`` raises the attack radius linearly, ``epsilon * min(1, (e + 1) / w)``
    in epoch ``e`` (the authors warm epsilon up over the first epochs; early on the base
    classifier is too poor for adversarial examples of its smoothed version to be useful).
    The attack runs with the model in eval mode (see :class:`rsbook.attacks.L2Attack`):
    it attacks the classifier that will be certified, and its T extra forward passes per
    batch must neither couple examples through BatchNorm batch statistics nor update the
    running averages; the training step itself is in train mode as usual.
    """

    name = "smoothadv"

    def __init__(self, sigma: float | Noise, epsilon: float, steps: int = 1, num_noise: int = 1,
                 attack: str = "pgd", warmup_epochs: int = 0, **attack_kwargs):
        from rsbook.attacks import make_attack

        self.noise = make_noise(sigma)
        self.num_noise = check_positive_int(num_noise, "num_noise")
        check_choice(attack, ("pgd", "ddn"), "attack")
        self.attack = make_attack(attack, epsilon, steps, self.num_noise, self.noise, **attack_kwargs)
        self.max_epsilon = self.attack.epsilon
        if isinstance(warmup_epochs, bool) or int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = int(warmup_epochs)
        self.name = f"smoothadv_{attack}"

    @property
    def epsilon(self) -> float:
        """The attack radius in force for the current epoch."""
        return self.attack.epsilon

    def start_epoch(self, epoch: int, epochs: int) -> None:
        if self.warmup_epochs > 0:
            self.attack.epsilon = self.max_epsilon * min(1.0, (epoch + 1) / self.warmup_epochs)
        else:
            self.attack.epsilon = self.max_epsilon

    def __call__(self, model, x, y):
        # drawn exactly as noisy_copies would draw them, so epsilon = 0 is Gaussian augmentation
        draws = self.noise.sample((x.shape[0], self.num_noise, *x.shape[1:]), device=x.device, dtype=x.dtype)
        x_hat = self.attack(model, x, y, draws=draws).x_adv if self.attack.epsilon > 0 else x
        inputs, targets, _ = noisy_copies(x_hat, y, self.noise, self.num_noise, noise_draws=draws)
        logits = model(inputs)
        return ObjectiveOutput(F.cross_entropy(logits, targets), logits, targets)


#: training methods by name (used by the command line and the notebooks)
OBJECTIVES = {"gaussian": GaussianAugmentation, "smoothadv": SmoothAdv}


def make_objective(name: str, sigma: float | Noise, num_noise: int = 1, **kwargs) -> Objective:
    """The objective called ``name`` (see :data:`OBJECTIVES`) for noise ``sigma`` with ``num_noise`` draws.

    ``kwargs`` go to the objective, e.g. ``make_objective("smoothadv", 0.5, 2, epsilon=1.0, steps=2,
    attack="ddn")``; with ``epsilon=0`` SmoothAdv is Gaussian augmentation.
    """
    check_choice(name, OBJECTIVES, "objective")
    return OBJECTIVES[name](sigma=sigma, num_noise=num_noise, **kwargs)
