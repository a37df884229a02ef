"""One experiment helper: train one configuration, certify it, never reuse a stale result.

Every chapter trains models and certifies them; this module is the one place that does it.

* :class:`TrainConfig` holds *every* setting that changes the trained model (dataset,
  architecture, objective and its hyper-parameters, noise, epochs, learning rate and its
  schedule, batch, seed, ...).
* :func:`run_key` names a configuration: a readable prefix plus a short hash of the full
  configuration (with the effective training seed, see :func:`rsbook.utils.training_seed`),
  so a changed setting gets a new folder and never reuses an old checkpoint or log.
* :func:`train_run` trains into ``<root>/<key>/`` (``config.json`` beside ``model.pth``)
  and resumes an interrupted run; a finished run is loaded, not retrained.
* :meth:`TrainedRun.certify` writes a certification log whose name hashes its own settings
  (certifier, noise, ``n0``, ``n``, ``alpha``, test subset, seed) into the run's folder;
  :func:`rsbook.certify.certify_dataset` makes it resumable and shardable.
* :func:`expand_grid` and :func:`shard_configs` turn a preset's grid into configurations
  and split them across jobs.

Tables and envelopes are then built from the :class:`TrainedRun` objects a notebook asked
for, never from whatever is lying on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from rsbook.utils import training_seed

__all__ = ["TrainConfig", "TrainedRun", "run_key", "train_run", "train_from_spec", "checkpoint_run", "expand_grid", "shard_configs", "settings_hash",
           "resolve_device"]

#: bump when the meaning of a saved run changes, so old folders are not reused
FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that determines a trained model.

    ``objective_args`` go to the objective (e.g. ``{"epsilon": 0.5, "steps": 1}`` for
    SmoothAdv, ``{"lam": 0.2}`` for ADRE); ``noise`` is ``None`` for Gaussian noise of
    level ``sigma`` or a family spec such as ``{"family": "norm_power", "k": 10}``
    (:data:`rsbook.noise.NOISE_FAMILIES`). ``fit``'s arguments keep their meaning
    (:func:`rsbook.train.fit`).
    """

    dataset: str = "digits"
    arch: str = "digits_cnn"
    objective: str = "gaussian"
    sigma: float = 0.25
    num_noise: int = 1
    objective_args: Mapping[str, Any] = field(default_factory=dict)
    noise: Mapping[str, Any] | None = None
    epochs: int = 30
    batch_size: int = 64
    batch_counts: str = "images"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self):
        from rsbook.params import check_parameters, choice, mapping, optional
        from rsbook.train import OBJECTIVES

        check_parameters(asdict(self), extra={"objective": choice(lambda: OBJECTIVES),
                                              "objective_args": mapping, "noise": optional(mapping)})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)


def _digest(payload: Mapping) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def settings_hash(**settings) -> str:
    """A short stable hash of keyword settings (used to name certification logs)."""
    return _digest(settings)


def run_key(config: TrainConfig) -> str:
    """``<objective>-<dataset>-<arch>-s<sigma>-e<epochs>-seed<seed'>-<hash>``: readable, and unique per setting.

    The hash covers the whole configuration with the *effective* training seed, so a run
    under ``$RSBOOK_SEED_OFFSET`` never reuses the stored run's checkpoint.
    """
    payload = {**config.to_dict(), "seed": training_seed(config.seed), "format": FORMAT}
    return (f"{config.objective}-{config.dataset}-{config.arch}-s{config.sigma:g}-e{config.epochs}"
            f"-seed{training_seed(config.seed)}-{_digest(payload)}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA when available, else CPU; a device this machine lacks is a ``ValueError``."""
    from rsbook.utils import check_device

    return check_device(device)


def _noise(config: TrainConfig, dim: int | None = None):
    if config.noise is None:
        return config.sigma
    from rsbook import noise as noise_module

    spec = dict(config.noise)
    family = spec.pop("family", "gaussian")
    return noise_module.make_noise_family(family, config.sigma, dim=dim, **spec)


def _dataset_id(dataset) -> str:
    """A stable name for a dataset object: its type, length and a digest of a few of its examples.

    (``repr`` would hold a memory address, so a rerun would never find its own log.)
    """
    n = len(dataset)
    h = hashlib.sha1(f"{type(dataset).__name__}:{n}".encode())
    for i in sorted({0, n // 2, n - 1}) if n else ():
        x, y = dataset[i]
        h.update(torch.as_tensor(x).detach().cpu().contiguous().numpy().tobytes())
        h.update(str(int(y)).encode())
    return f"{type(dataset).__name__}[{n}]:{h.hexdigest()[:10]}"


@dataclass
class TrainedRun:
    """A trained model, the folder that holds it, and what it was trained with."""

    config: TrainConfig
    key: str
    dir: Path
    model: torch.nn.Module
    history: list[dict]
    device: torch.device
    data_root: str | None = None

    @property
    def checkpoint(self) -> Path:
        return self.dir / "model.pth"

    def training_noise(self):
        """The noise the model was trained under (a float sigma means Gaussian)."""
        from rsbook.data import dataset_info

        return _noise(self.config, dim=dataset_info(self.config.dataset).input_numel)

    def test_set(self, split: str = "test"):
        from rsbook.data import get_dataset

        return get_dataset(self.config.dataset, split, root=self.data_root)

    def certify(self, dataset=None, *, n0: int, n: int, alpha: float, skip: int = 1, max_examples: int | None = None,
                batch_size: int = 1000, noise=None, certifier: str = "certify",
                certifier_args: Mapping[str, Any] | None = None, seed: int = 0, shard=None, name: str | None = None,
                precision: str = "float32", channels_last: bool = False, progress: bool = True) -> Path:
        """Certify the test set (or ``dataset``) into a log in this run's folder; returns its path.

        ``noise`` defaults to the training noise (a :class:`~rsbook.noise.Noise` or a float
        sigma certifies this model under another distribution). ``certifier`` names an
        entry of :data:`rsbook.certify.CERTIFIERS` and ``certifier_args`` its options. The
        log's name hashes all of these, so changing any of them starts a new log, while
        rerunning the same call resumes the old one. ``precision`` (``float32``, ``bfloat16``,
        ``float16``) and ``channels_last`` go to :class:`~rsbook.smooth.Smooth`; a lower
        precision certifies the classifier *as run* in that precision, so it is part of the key.
        """
        from rsbook.certify import CERTIFIERS, check_certifier_options, certify_dataset, parse_shard
        from rsbook.data import dataset_info
        from rsbook.params import choice
        from rsbook.smooth import Smooth

        choice(list(CERTIFIERS))("certifier", certifier)
        fn, extra_columns = CERTIFIERS[certifier]
        certifier_args = dict(certifier_args or {})
        check_certifier_options(certifier, certifier_args, "certifier_args key")
        noise = self.training_noise() if noise is None else noise
        data = self.test_set() if dataset is None else dataset
        settings = {"certifier": certifier, "certifier_args": certifier_args, "noise": repr(noise), "n0": n0,
                    "n": n, "alpha": alpha, "skip": skip, "max_examples": max_examples, "seed": seed,
                    "dataset": "test" if dataset is None else _dataset_id(dataset), "format": FORMAT}
        if precision != "float32":
            settings["precision"] = precision
        stem = f"{name or certifier}-n{n}-{_digest(settings)}"
        shard = parse_shard(shard)
        if shard is not None:
            stem += f".shard{shard[0]}of{shard[1]}"
        out = self.dir / f"{stem}.tsv"
        (self.dir / f"{stem}.json").write_text(json.dumps(settings, indent=1, sort_keys=True, default=str))
        smooth = Smooth(self.model, dataset_info(self.config.dataset).num_classes, noise, seed=seed,
                        device=self.device, precision=precision, channels_last=channels_last)

        def certify_fn(x):
            return fn(smooth, x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, **certifier_args)

        # the log's name already hashes these settings: a log from before settings records is adopted
        return certify_dataset(smooth, data, n0, n, alpha, out, skip=skip, max_examples=max_examples, shard=shard,
                               batch_size=batch_size, seed=seed, certify_fn=certify_fn,
                               extra_columns=extra_columns, progress=progress, unrecorded="adopt",
                               settings={k: settings[k] for k in ("certifier", "certifier_args", "dataset")},
                               info={"run": self.dir.name})


def _fit_config(config: TrainConfig, folder: Path, device: torch.device, data_root, workers: int,
                progress: bool) -> tuple[torch.nn.Module, list[dict]]:
    """Build the data, initial network and objective of ``config`` and run ``fit`` on ``folder/model.pth``.

    The initial weights are drawn from ``training_seed(config.seed)``, whatever ran before,
    so every configuration with the same seed starts from the same network. Under torchrun
    every rank calls this; ``fit`` makes rank 0 the only writer.
    """
    from rsbook.data import dataset_info, get_dataset
    from rsbook.models import get_model
    from rsbook.train import fit, make_objective

    train_set = get_dataset(config.dataset, "train", root=data_root)
    torch.manual_seed(training_seed(config.seed))
    model = get_model(config.arch, config.dataset)
    noise = _noise(config, dim=dataset_info(config.dataset).input_numel)
    objective = make_objective(config.objective, noise, config.num_noise, option_flag="objective_args key",
                               **dict(config.objective_args))
    history = fit(model, train_set, objective, config.epochs, batch_size=config.batch_size, lr=config.lr,
                  momentum=config.momentum, weight_decay=config.weight_decay, schedule=config.schedule,
                  step_size=config.step_size, gamma=config.gamma, warmup_epochs=config.warmup_epochs,
                  label_smoothing=config.label_smoothing, batch_counts=config.batch_counts,
                  checkpoint=folder / "model.pth", arch=config.arch, dataset=config.dataset, device=device,
                  seed=config.seed, num_workers=workers, progress=progress, adopt_unrecorded=True)
    return model, history


def train_run(config: TrainConfig, root: str | os.PathLike, *, gpus: int = 1,
              device: str | torch.device | None = "auto", data_root: str | None = None, workers: int = 0,
              progress: bool = True) -> TrainedRun:
    """Train ``config`` into ``<root>/<run_key(config)>/`` (or resume / load it); returns the :class:`TrainedRun`.

    With ``gpus > 1`` (a notebook's ``gpus`` parameter) training runs under ``torchrun`` on
    that many processes (DistributedDataParallel, :mod:`rsbook.distributed`) through
    ``python -m rsbook train-config <run>/launch.json``; this process then loads the
    finished checkpoint (nothing is retrained). An interrupted run resumes either way.
    """
    device = resolve_device(device)
    key = run_key(config)
    folder = Path(root) / key
    folder.mkdir(parents=True, exist_ok=True)
    saved = {**config.to_dict(), "effective_seed": training_seed(config.seed), "format": FORMAT}
    config_file = folder / "config.json"
    if config_file.exists() and json.loads(config_file.read_text()) != saved:
        raise RuntimeError(f"{config_file} holds another configuration under the same key; delete {folder}")
    config_file.write_text(json.dumps(saved, indent=1, sort_keys=True))
    if gpus is not None and int(gpus) > 1:
        import subprocess

        from rsbook.distributed import torchrun_command

        spec = folder / "launch.json"
        spec.write_text(json.dumps({"config": config.to_dict(), "root": str(root), "device": str(device),
                                    "data_root": data_root, "workers": workers, "progress": progress}, indent=1))
        subprocess.run(torchrun_command(int(gpus), ["train-config", str(spec)]), check=True)
    model, history = _fit_config(config, folder, device, data_root, workers, progress)
    model.to(device).eval()
    return TrainedRun(config, key, folder, model, history, device, data_root)


def checkpoint_run(checkpoint: str | os.PathLike, root: str | os.PathLike, sigma: float, *,
                   dataset: str | None = None, device: str | torch.device | None = "auto",
                   data_root: str | None = None) -> TrainedRun:
    """A given checkpoint (rsbook's or the authors' reference format) as a :class:`TrainedRun`.

    Its logs go to ``<root>/checkpoint-<hash of the checkpoint's path>/``, so certifying the
    same file again resumes. ``sigma`` is the noise it is certified under (a checkpoint does
    not record it); ``dataset``, when given, must be the one the checkpoint was trained on.
    """
    from rsbook.models import load_checkpoint

    device = resolve_device(device)
    model, ckpt = load_checkpoint(checkpoint, map_location=device)
    if dataset is not None and ckpt["dataset"] != dataset:
        raise ValueError(f"checkpoint {checkpoint} was trained on {ckpt['dataset']!r}, not {dataset!r}")
    folder = Path(root) / f"checkpoint-{_digest({'path': str(Path(checkpoint).resolve())})}"
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(dataset=ckpt["dataset"], arch=ckpt["arch"], sigma=sigma)
    return TrainedRun(config, folder.name, folder, model.to(device).eval(), [], device, data_root)


def expand_grid(base: TrainConfig, grid: Mapping[str, Sequence]) -> list[TrainConfig]:
    """The configurations of the Cartesian product of ``grid`` over ``base``.

    Keys that are :class:`TrainConfig` fields set that field; any other key is an
    objective argument (e.g. ``{"sigma": [0.25, 0.5], "epsilon": [0.5, 1.0]}``).
    Order: the product in the order the keys are given, last key fastest.
    """
    names = {f.name for f in fields(TrainConfig)}
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise ValueError(f"grid[{key!r}] must be a non-empty list, got {grid[key]!r}")
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        top = {k: v for k, v in zip(keys, values) if k in names}
        args = {**dict(base.objective_args), **{k: v for k, v in zip(keys, values) if k not in names}}
        configs.append(base.replace(**top, objective_args=args))
    return configs


def shard_configs(configs: Sequence[TrainConfig], shard) -> list[TrainConfig]:
    """The ``i``-th of ``k`` interleaved slices of ``configs`` (``shard`` is ``None``, ``(i, k)`` or ``"i/k"``)."""
    from rsbook.certify import parse_shard

    shard = parse_shard(shard)
    if shard is None:
        return list(configs)
    i, k = shard
    return list(configs)[i::k]


_LAUNCH_KEYS = ("config", "root", "device", "data_root", "workers", "progress")


def check_launch_spec(spec_path: str | os.PathLike) -> dict:
    """The launch file :func:`train_run` writes for ``torchrun``, or a ``ValueError`` saying what is wrong with it."""
    path = Path(spec_path)
    if not path.is_file():
        raise FileNotFoundError(f"launch file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not JSON ({err}); train-config takes the launch.json that "
                         "rsbook.experiment.train_run(gpus=N) writes") from None
    missing = [k for k in _LAUNCH_KEYS if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise ValueError(f"{path} is not a launch file of rsbook.experiment.train_run(gpus=N): it lacks "
                         f"{', '.join(missing)}")
    if not isinstance(spec["config"], dict):
        raise ValueError(f"{path}: 'config' must be a TrainConfig mapping, got {type(spec['config']).__name__}")
    try:
        TrainConfig(**spec["config"])
    except TypeError as err:
        raise ValueError(f"{path}: 'config' is not a TrainConfig: {err}") from None
    return spec


def train_from_spec(spec_path: str | os.PathLike) -> None:
    """One rank's share of ``train_run(..., gpus=N)`` (run under torchrun by ``rsbook train-config``).

    ``config.json`` is left to the launching process (ranks writing it at once would race).
    """
    spec = json.loads(Path(spec_path).read_text())
    config = TrainConfig(**spec["config"])
    _fit_config(config, Path(spec["root"]) / run_key(config), resolve_device(spec["device"]), spec["data_root"],
                spec["workers"], spec["progress"])
