"""One training loop, many objectives.

Every training method in the book is an :class:`Objective`: a callable that maps a
batch ``(x, y)`` to a loss, registered by name with :func:`register_objective` so the
command line and the notebooks reach it (``OBJECTIVES``). :func:`fit` owns everything
else (optimiser, learning-rate warm-up and schedule, seeding, checkpoint-per-epoch with
resume, AMP and channels_last on CUDA, progress).
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

from rsbook._checks import check_choice, check_options, check_positive_float, check_positive_int
from rsbook.noise import Noise, make_noise
from rsbook import distributed
from rsbook.utils import progress_bar, training_seed

__all__ = ["Objective", "ObjectiveOutput", "GaussianAugmentation", "fit", "evaluate_accuracy",
           "SCHEDULES", "BATCH_COUNTS", "noisy_copies", "SmoothAdv", "OBJECTIVES", "make_objective", "training_settings",
           "register_objective"]

SCHEDULES = ("step", "cosine", "constant")
#: what ``fit(batch_size=...)`` counts: clean images per step, or noisy inputs per step
BATCH_COUNTS = ("images", "noisy")


@dataclass
class ObjectiveOutput:
    """The loss to minimise plus the logits/targets it was computed on (for reporting accuracy)."""

    loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


class Objective:
    """A training method. Subclasses implement :meth:`__call__`.

    ``num_noise`` is the number of noise draws per example (``fit(batch_counts="noisy")``
    divides the image batch by it). An objective that needs to know *which* training
    examples are in the batch (e.g. a table of per-example teacher targets) sets
    ``uses_index = True`` and then receives ``index=`` (the dataset indices) in
    :meth:`__call__`. :meth:`prepare` runs once before training, after the model is on its
    device. :meth:`cross_entropy` is the loss every objective should use: it honours
    ``fit(label_smoothing=...)`` and computes in float32 under AMP.
    """

    name = "objective"
    num_noise = 1
    uses_index = False
    label_smoothing = 0.0
    #: what each constructor option without a default means (quoted when it is missing)
    option_help: dict[str, str] = {}

    @classmethod
    def forwarded_options(cls, options: dict) -> tuple[str, ...]:
        """Names the constructor accepts through ``**kwargs`` given ``options`` (e.g. its attack's)."""
        return ()

    @classmethod
    def missing_options(cls, options: dict) -> dict[str, str]:
        """Options that ``options`` make necessary but leave out, ``{name: meaning}`` (checked before training)."""
        return {}

    def prepare(self, model: nn.Module, train_set: Dataset, device: torch.device) -> None:
        """Called by :func:`fit` once before the first epoch (e.g. to precompute targets)."""

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by :func:`fit` before each epoch (0-based), e.g. for an epsilon warm-up."""

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy in float32 (float16 log-softmax loses the small probabilities), with label smoothing."""
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing, reduction=reduction)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ObjectiveOutput:
        raise NotImplementedError


#: training methods by name (used by the command line and the notebooks); see :func:`register_objective`
OBJECTIVES: dict[str, type] = {}


def register_objective(name: str):
    """Class decorator: make an :class:`Objective` reachable by ``name`` (``make_objective``, ``--objective``).

    Its constructor must accept ``(sigma, num_noise=1, **kwargs)``.
    """
    def register(cls):
        if name in OBJECTIVES and OBJECTIVES[name] is not cls:
            raise ValueError(f"objective name {name!r} is already registered to {OBJECTIVES[name].__name__}")
        OBJECTIVES[name] = cls
        return cls

    return register


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


@register_objective("gaussian")
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
        return ObjectiveOutput(self.cross_entropy(logits, targets), logits, targets)


class _LearningRate:
    """Multiplier of the base learning rate in epoch ``e``: linear warm-up, then the schedule.

    Warm-up (Goyal et al., 2017) raises the rate linearly over the first ``warmup`` epochs,
    ``(e + 1) / warmup``; the schedule then runs over the remaining ``epochs - warmup`` epochs
    as if they started at 0: ``step`` multiplies by ``gamma`` every ``step_size`` epochs,
    ``cosine`` anneals to 0 (``(1 + cos(pi t / T)) / 2``), ``constant`` keeps it.
    """

    def __init__(self, schedule: str, epochs: int, warmup: int, step_size: int, gamma: float):
        self.schedule, self.epochs, self.warmup = schedule, epochs, warmup
        self.step_size, self.gamma = step_size, gamma

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / self.warmup
        t, horizon = epoch - self.warmup, max(1, self.epochs - self.warmup)
        if self.schedule == "step":
            return self.gamma ** (t // self.step_size)
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t / horizon))
        return 1.0


class _WithIndex(Dataset):
    """Yields ``(x, y, index)`` so objectives with ``uses_index`` learn which examples they see."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


def _check_nonneg_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def fit(model: nn.Module, train_set: Dataset, objective: Objective, epochs: int, *, batch_size: int = 256,
        lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4, schedule: str = "step",
        step_size: int = 30, gamma: float = 0.1, warmup_epochs: int = 0, label_smoothing: float = 0.0,
        batch_counts: str = "images", checkpoint: str | os.PathLike | None = None,
        arch: str | None = None, dataset: str | None = None, device: str | torch.device | None = None,
        seed: int = 0, num_workers: int = 0, amp: bool | None = None, progress: bool = True,
        adopt_unrecorded: bool = False) -> list[dict]:
    """Train ``model`` on ``train_set`` by minimising ``objective`` with SGD; returns per-epoch history.

    Learning rate: ``lr`` with a linear warm-up over ``warmup_epochs`` and then ``schedule``
    (see :class:`_LearningRate`). ``label_smoothing`` goes to the objective's cross-entropy.

    ``batch_counts`` says what ``batch_size`` counts when the objective draws ``m > 1`` noisy
    copies per image: ``"images"`` (default) steps on ``batch_size`` images, i.e.
    ``batch_size * m`` noisy inputs; ``"noisy"`` steps on ``batch_size // m`` images, i.e.
    ``batch_size`` noisy inputs per step and ``m`` times more steps per epoch. ``"noisy"`` is
    the convention of Salman et al.'s and Jeong et al.'s code (a 256-input batch is split
    into ``m`` sub-batches of ``256 / m`` images, each with ``m`` draws).

    With ``checkpoint=path`` the state (model, optimiser, schedule, history) is written
    after every epoch and a rerun resumes after the last finished epoch; ``arch`` and
    ``dataset`` are stored so :func:`rsbook.models.load_checkpoint` can rebuild the model.
    The checkpoint also records what made it (:func:`training_settings`: objective, noise,
    optimiser, schedule, batch, seed, ...). A rerun continues only the same run: any other
    setting raises ``ValueError`` naming the differences. A larger ``epochs`` extends a
    ``step`` or ``constant`` schedule (whose finished epochs do not depend on the total;
    each history record says the total in force); a ``cosine`` schedule is fixed by its
    total, so changing ``epochs`` there is refused. A checkpoint without the record (older
    rsbook) is refused unless ``adopt_unrecorded`` (the experiment helper, whose folder
    names hash every setting).
    Each epoch's shuffling and noise are seeded from ``(seed', epoch)`` with
    ``seed' = seed + $RSBOOK_SEED_OFFSET`` (:func:`rsbook.utils.training_seed`), so a resumed
    run continues exactly as an uninterrupted one would. On CUDA, ``amp`` (default on) uses
    float16 autocast with loss scaling, and 4-D inputs use channels_last. Under ``torchrun`` it
    trains with DistributedDataParallel (:mod:`rsbook.distributed`): ``batch_size`` stays the
    global batch, and rank 0 alone writes the checkpoint (which records ``world_size``).
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    check_choice(schedule, SCHEDULES, "schedule")
    check_choice(batch_counts, BATCH_COUNTS, "batch_counts")
    warmup_epochs = _check_nonneg_int(warmup_epochs, "warmup_epochs")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
    objective.label_smoothing = float(label_smoothing)
    if checkpoint is not None and (arch is None or dataset is None):
        raise ValueError("fit(checkpoint=...) needs arch= and dataset= so the checkpoint can be reloaded")
    seed = training_seed(seed)
    images_per_step = batch_size if batch_counts == "images" else max(1, batch_size // objective.num_noise)
    device = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    ctx, device = distributed.setup(device)  # under torchrun: join the group, cuda:<LOCAL_RANK>
    on_cuda = device.type == "cuda"
    amp = on_cuda if amp is None else (amp and on_cuda)
    model.to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _LearningRate(schedule, epochs, warmup_epochs, step_size, gamma))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict] = []
    start_epoch = 0
    settings = training_settings(objective, arch=arch, dataset=dataset, batch_size=batch_size,
                                 batch_counts=batch_counts, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                 schedule=schedule, step_size=step_size, gamma=gamma, warmup_epochs=warmup_epochs,
                                 label_smoothing=label_smoothing, seed=seed)
    if checkpoint is not None and Path(checkpoint).exists():
        from rsbook.models import load_checkpoint

        _, state = load_checkpoint(checkpoint, map_location=device)
        _check_same_training(checkpoint, state, settings, epochs, adopt_unrecorded)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # load_state_dict copied the old schedule's fields into ours: put this run's back
        scheduler.lr_lambdas[0].__dict__.update(vars(_LearningRate(schedule, epochs, warmup_epochs, step_size,
                                                                    gamma)))
        history = list(state.get("history", []))
        start_epoch = int(state["epoch"]) + 1
    data = _WithIndex(train_set) if objective.uses_index else train_set
    net = distributed.wrap(model, ctx, device)  # the module the objective calls (DDP averages gradients)
    if start_epoch < epochs:
        objective.prepare(model, train_set, device)

    bar = progress_bar(range(start_epoch, epochs), desc=f"train {objective.name}",
                       disable=not progress or not ctx.is_main, initial=start_epoch, total=epochs)
    for epoch in bar:
        torch.manual_seed(distributed.rank_seed(seed * 100_003 + epoch, ctx))
        loader = distributed.loader(data, images_per_step, ctx, seed * 100_003 + epoch, epoch,
                                    num_workers=num_workers, pin_memory=on_cuda, drop_last=False)
        objective.start_epoch(epoch, epochs)
        model.train()
        total_loss, total_correct, total_seen, total_noisy, t0 = 0.0, 0, 0, 0, time.perf_counter()
        for batch in loader:
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            extra = {"index": batch[2].to(device)} if objective.uses_index else {}
            if on_cuda and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out = objective(net, x, y, **extra)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += float(out.loss.detach()) * x.shape[0]
            total_correct += int((out.logits.detach().argmax(1) == out.targets).sum())
            total_noisy += len(out.targets)
            total_seen += x.shape[0]
        scheduler.step()
        total_loss, total_correct, total_noisy, total_seen = distributed.all_sum(
            (total_loss, total_correct, total_noisy, total_seen), ctx, device)
        record = {"epoch": epoch, "loss": total_loss / total_seen, "noisy_acc": total_correct / total_noisy,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0, "epochs": epochs}
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch}: loss {record['loss']} (lower lr?)")
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['noisy_acc']:.3f}")
        if checkpoint is not None and ctx.is_main:
            from rsbook.models import save_checkpoint

            save_checkpoint(checkpoint, model, arch, dataset, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), epoch=epoch, history=history,
                            objective=objective.name, world_size=ctx.world_size, training=settings,
                            epochs=epochs)
    distributed.check_in_sync(model, ctx, device)
    model.eval()
    return history


def _plain_option(value):
    """An objective option as the checkpoint records it (JSON-able; a table or a tensor by its type)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_option(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_option(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return f"<{type(value).__name__}>"


def training_settings(objective: Objective, **settings) -> dict:
    """What identifies a training run: the objective (name, noise, draws, options) and ``fit``'s settings."""
    return {"objective": objective.name, "noise": repr(getattr(objective, "noise", None)),
            "num_noise": int(objective.num_noise), "objective_options": _plain_option(getattr(objective, "options", {})),
            **{k: _plain_option(v) for k, v in settings.items()}}


def _check_same_training(path, state: dict, settings: dict, epochs: int, adopt_unrecorded: bool) -> None:
    """Refuse to resume ``state`` (a checkpoint) under other settings, or onto a schedule fixed by another total."""
    recorded = state.get("training")
    finished = int(state["epoch"]) + 1
    if recorded is None:
        if adopt_unrecorded:
            return
        raise ValueError(f"checkpoint {path} was written by an older rsbook without its training settings: nothing "
                         "can tell whether resuming it continues the same run. Train into another checkpoint "
                         "(or delete this one)")
    diff = [f"{k}: {recorded.get(k)!r} in the checkpoint vs {settings.get(k)!r} now"
            for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k)]
    if diff:
        raise ValueError(f"checkpoint {path} is another training run; resuming it would mix two runs. "
                         f"Differences: {'; '.join(diff)}. Train into another checkpoint (or delete this one)")
    total = int(state.get("epochs", epochs))
    if epochs == total:
        return
    if epochs < finished:
        raise ValueError(f"checkpoint {path} has already trained {finished} epochs, more than epochs={epochs}")
    if settings["schedule"] == "cosine":
        raise ValueError(f"checkpoint {path} follows a cosine schedule over {total} epochs; its learning rates "
                         f"depend on that total, so it cannot be extended to {epochs} epochs as one run. "
                         "Train into another checkpoint")


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


@register_objective("smoothadv")
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
    option_help = {"epsilon": "l2 radius of the training attack in [0, 1] pixel units; the paper's CIFAR-10 "
                              "models use 0.25 to 2.0"}

    @classmethod
    def forwarded_options(cls, options):
        from rsbook.attacks import attack_options

        return attack_options(options.get("attack", "pgd"))

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
        return ObjectiveOutput(self.cross_entropy(logits, targets), logits, targets)


def make_objective(name: str, sigma: float | Noise, num_noise: int = 1, option_flag: str = "option",
                   **kwargs) -> Objective:
    """The objective called ``name`` (see :data:`OBJECTIVES`) for noise ``sigma`` with ``num_noise`` draws.

    ``kwargs`` go to the objective, e.g. ``make_objective("smoothadv", 0.5, 2, epsilon=1.0, steps=2,
    attack="ddn")``; with ``epsilon=0`` SmoothAdv is Gaussian augmentation. An option the
    objective does not take, or a required one left out, is a ``ValueError`` naming it as
    ``option_flag`` (the command line passes ``"--objective-arg"``).
    """
    check_choice(name, OBJECTIVES, "objective")
    cls = OBJECTIVES[name]
    check_options(cls.__init__, kwargs, f"objective {name!r}", option_flag, passed=("sigma", "num_noise"),
                  extra=cls.forwarded_options(kwargs), meanings=cls.option_help)
    missing = cls.missing_options(kwargs)
    if missing:
        raise ValueError(f"objective {name!r} needs " + " or ".join(
            f"{option_flag} {m}=VALUE ({meaning})" for m, meaning in missing.items()))
    objective = cls(sigma=sigma, num_noise=num_noise, **kwargs)
    objective.options = dict(kwargs)  # recorded in checkpoints: a resume must use the same ones
    return objective


from rsbook import baselines, catrs  # noqa: E402,F401 (register objectives)
from rsbook import adre  # noqa: E402,F401 (registers "adre")
from rsbook import smoothadv  # noqa: E402,F401 (registers "vanilla_adv")
