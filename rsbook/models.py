"""Base classifiers, each starting with a per-channel normalisation layer.

Putting the normalisation inside the model means noise is added to, and radii are
measured in, raw [0, 1] inputs, as in Cohen et al. (2019) and the papers built on it.

The module names are those of Cohen et al.'s released models (locuslab/smoothing), which
SmoothAdv, MACER, Consistency, CAT-RS and the papers after them reuse, so their
checkpoints load as they are: ``Sequential(normalize, net)`` where the normalisation
holds no state, the CIFAR ResNets are ``conv1, bn1, layer1..layer3, fc`` with
``downsample`` shortcuts (keys such as ``1.layer2.0.downsample.0.weight``), and the
ImageNet ResNet-50 is torchvision's under a ``module`` attribute, as ``DataParallel``
left it (keys such as ``1.module.conv1.weight``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from rsbook._checks import check_choice
from rsbook.data import dataset_info

__all__ = ["ARCHITECTURES", "NORMALIZATIONS", "REFERENCE_DATASETS", "NormalizeLayer", "CifarResNet",
           "BasicBlock", "ModuleWrapper", "check_arch_fits", "get_model", "save_checkpoint", "load_checkpoint",
           "upgrade_state_dict"]

#: architecture -> datasets it is built for
ARCHITECTURES = {
    "cifar_resnet20": ("cifar10",),
    "cifar_resnet110": ("cifar10",),
    "resnet50": ("imagenet",),
    "digits_cnn": ("digits",),
    "toy_mlp": ("toy2d",),
}

#: the dataset of a checkpoint that does not name one (the reference code stores only ``arch``)
REFERENCE_DATASETS = {"cifar_resnet20": "cifar10", "cifar_resnet110": "cifar10", "resnet50": "imagenet"}

#: first layer of the model: ``(x - mean) / std`` (Cohen et al.) or ``x - mean`` (SmoothAdv's released models)
NORMALIZATIONS = ("standardize", "center")


class NormalizeLayer(nn.Module):
    """``(x - mean) / std`` per channel (channel = dim 1).

    The statistics are fixed by the dataset, so they are not part of the state dict
    (exactly like the reference code's layer): checkpoints hold the network's weights only.
    """

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1), persistent=False)

    def forward(self, x):
        extra = x.dim() - 2
        mean = self.mean.view(self.mean.shape + (1,) * extra)
        std = self.std.view(self.std.shape + (1,) * extra)
        return (x - mean) / std


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; ``downsample`` (1x1 conv + BN) when the shape changes."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class CifarResNet(nn.Module):
    """He et al. (2016), Sec. 4.2: 3 stages of n basic blocks (16/32/64 channels), depth 6n + 2."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        inplanes = 16
        for stage, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = [BasicBlock(inplanes if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(n)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            inplanes = planes
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ModuleWrapper(nn.Module):
    """Holds a network under the attribute ``module`` and calls it.

    The reference ImageNet models were trained inside ``nn.DataParallel``, which stores the
    network as ``module``; this keeps that key layout without DataParallel's scattering.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def _digits_cnn(num_classes):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 2 * 2, 128), nn.ReLU(), nn.Linear(128, num_classes))


def _toy_mlp(num_classes):
    return nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, num_classes))


def check_arch_fits(arch: str, dataset: str) -> None:
    """``ValueError`` unless ``arch`` is a known architecture built for ``dataset``'s inputs and classes."""
    check_choice(arch, ARCHITECTURES, "architecture")
    dataset_info(dataset)
    if dataset not in ARCHITECTURES[arch]:
        fitting = [a for a, sets in ARCHITECTURES.items() if dataset in sets]
        raise ValueError(f"architecture {arch!r} is not built for dataset {dataset!r} (it takes "
                         f"{', '.join(ARCHITECTURES[arch])}); architectures for {dataset}: {', '.join(fitting)}")


def get_model(arch: str, dataset: str, normalization: str = "standardize") -> nn.Module:
    """A freshly initialised ``arch`` for ``dataset``, wrapped as ``Sequential(normalize, net)``.

    ``normalization="center"`` subtracts the mean only (SmoothAdv's released models were
    trained that way; the state dict cannot tell, so the caller must say so).
    """
    check_choice(normalization, NORMALIZATIONS, "normalization")
    check_arch_fits(arch, dataset)
    info = dataset_info(dataset)
    if arch == "cifar_resnet20":
        net = CifarResNet(20, info.num_classes)
    elif arch == "cifar_resnet110":
        net = CifarResNet(110, info.num_classes)
    elif arch == "resnet50":
        import torchvision

        net = ModuleWrapper(torchvision.models.resnet50(weights=None, num_classes=info.num_classes))
    elif arch == "digits_cnn":
        net = _digits_cnn(info.num_classes)
    else:
        net = _toy_mlp(info.num_classes)
    std = info.std if normalization == "standardize" else (1.0,) * len(info.std)
    return nn.Sequential(NormalizeLayer(info.mean, std), net)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, arch: str, dataset: str, **extra) -> Path:
    """Write ``{"arch", "dataset", "state_dict", **extra}`` atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"arch": arch, "dataset": dataset, "state_dict": model.state_dict(), **extra}, tmp)
    os.replace(tmp, path)
    return path


_OLD_BLOCK = re.compile(r"^1\.layers\.(\d+)\.(.*)$")


def upgrade_state_dict(state_dict: dict, arch: str) -> tuple[dict, bool]:
    """Rename the keys of a checkpoint written by rsbook before it adopted the reference layout.

    Old rsbook files stored the normalisation statistics (``0.mean``, ``0.std``, dropped:
    they are the dataset's), named the CIFAR ResNet's stem ``conv``/``bn`` and its blocks
    ``layers.<i>`` with a ``shortcut``, and kept ResNet-50 unwrapped. Returns
    ``(state_dict, changed)``; a state dict already in the reference layout comes back as is.
    """
    out, changed = {}, False
    blocks = {"cifar_resnet20": 3, "cifar_resnet110": 18}.get(arch)
    for key, value in state_dict.items():
        new = key
        if key in ("0.mean", "0.std"):
            changed = True
            continue
        if blocks is not None:
            if key.startswith(("1.conv.", "1.bn.")):
                new = key.replace("1.conv.", "1.conv1.", 1).replace("1.bn.", "1.bn1.", 1)
            match = _OLD_BLOCK.match(new)
            if match:
                i, rest = int(match.group(1)), match.group(2).replace("shortcut.", "downsample.", 1)
                new = f"1.layer{i // blocks + 1}.{i % blocks}.{rest}"
        elif arch == "resnet50" and key.startswith("1.") and not key.startswith("1.module."):
            new = "1.module." + key[2:]
        changed |= new != key
        out[new] = value
    return out, changed


def load_checkpoint(path: str | os.PathLike, map_location="cpu",
                    normalization: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint (``weights_only=True``); returns ``(model, checkpoint)``.

    Reads files written by :func:`save_checkpoint` / :func:`rsbook.train.fit` and the
    authors' released models in Cohen et al.'s format (``arch``, ``epoch``, ``optimizer``,
    ``state_dict``; no ``dataset``, which follows from ``arch``). Checkpoints written by
    older rsbook versions are translated (:func:`upgrade_state_dict`). The returned
    checkpoint's ``state_dict`` is in the current layout (``model.load_state_dict`` takes it).
    ``normalization`` overrides the checkpoint's (default ``"standardize"``; ``"center"`` for
    SmoothAdv's released models).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory, not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        text = str(err).strip()
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
        if isinstance(err, RuntimeError) and ("CUDA" in text or "device" in text.lower()):
            raise ValueError(f"device error: cannot load checkpoint {path} onto {map_location!s}: {first}") from err
        raise ValueError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint "
                         f"({type(err).__name__}: {first[:200]})") from err
    if not isinstance(ckpt, dict) or not {"arch", "state_dict"} <= set(ckpt):
        raise ValueError(f"checkpoint {path} lacks the keys 'arch', 'state_dict' (was it written by "
                         "rsbook.models.save_checkpoint, rsbook.train.fit or Cohen et al.'s train.py?)")
    arch = ckpt["arch"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"checkpoint {path} has unknown architecture {arch!r}; "
                         f"valid choices: {', '.join(ARCHITECTURES)}")
    if "dataset" not in ckpt:
        if arch not in REFERENCE_DATASETS:
            raise ValueError(f"checkpoint {path} (architecture {arch!r}) does not say its dataset")
        ckpt["dataset"] = REFERENCE_DATASETS[arch]
        ckpt.setdefault("format", "reference")
    normalization = normalization or ckpt.get("normalization", "standardize")
    model = get_model(arch, ckpt["dataset"], normalization)
    state, upgraded = upgrade_state_dict(ckpt["state_dict"], arch)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:5]) + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")
        parts = ([f"missing key(s) {show(missing)}"] if missing else []) + (
            [f"unexpected key(s) {show(unexpected)}"] if unexpected else [])
        raise ValueError(f"checkpoint {path} does not match architecture {arch!r}: {'; '.join(parts)}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # shapes
        raise ValueError(f"checkpoint {path} does not match architecture {arch!r}: {err}") from err
    ckpt["state_dict"] = state
    ckpt["normalization"] = normalization
    if upgraded:
        ckpt["upgraded_from_old_layout"] = True
    return model, ckpt
