"""Base classifiers, each starting with a per-channel normalisation layer.

Putting the normalisation inside the model means noise is added to, and radii are
measured in, raw [0, 1] inputs, as in Cohen et al. (2019) and the papers built on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from rsbook._checks import check_choice
from rsbook.data import dataset_info

__all__ = ["ARCHITECTURES", "NormalizeLayer", "get_model", "save_checkpoint", "load_checkpoint"]

#: architecture -> datasets it is built for
ARCHITECTURES = {
    "cifar_resnet20": ("cifar10",),
    "cifar_resnet110": ("cifar10",),
    "resnet50": ("imagenet",),
    "digits_cnn": ("digits",),
    "toy_mlp": ("toy2d",),
}


class NormalizeLayer(nn.Module):
    """``(x - mean) / std`` per channel (channel = dim 1)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1))

    def forward(self, x):
        extra = x.dim() - 2
        mean = self.mean.view(self.mean.shape + (1,) * extra)
        std = self.std.view(self.std.shape + (1,) * extra)
        return (x - mean) / std


class _BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. (2016), Sec. 4.2: 3 stages of n basic blocks (16/32/64 channels), depth 6n + 2."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, inplanes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(_BasicBlock(inplanes, planes, stride if i == 0 else 1))
                inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _digits_cnn(num_classes):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 2 * 2, 128), nn.ReLU(), nn.Linear(128, num_classes))


def _toy_mlp(num_classes):
    return nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, num_classes))


def get_model(arch: str, dataset: str) -> nn.Module:
    """A freshly initialised ``arch`` for ``dataset``, wrapped as ``Sequential(normalize, net)``."""
    check_choice(arch, ARCHITECTURES, "architecture")
    info = dataset_info(dataset)
    if dataset not in ARCHITECTURES[arch]:
        raise ValueError(f"architecture {arch!r} is not built for dataset {dataset!r}; "
                         f"valid datasets for it: {', '.join(ARCHITECTURES[arch])}")
    if arch == "cifar_resnet20":
        net = CifarResNet(20, info.num_classes)
    elif arch == "cifar_resnet110":
        net = CifarResNet(110, info.num_classes)
    elif arch == "resnet50":
        import torchvision

        net = torchvision.models.resnet50(weights=None, num_classes=info.num_classes)
    elif arch == "digits_cnn":
        net = _digits_cnn(info.num_classes)
    else:
        net = _toy_mlp(info.num_classes)
    return nn.Sequential(NormalizeLayer(info.mean, info.std), net)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, arch: str, dataset: str, **extra) -> Path:
    """Write ``{"arch", "dataset", "state_dict", **extra}`` atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"arch": arch, "dataset": dataset, "state_dict": model.state_dict(), **extra}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by :func:`save_checkpoint` (``weights_only=True``); returns ``(model, checkpoint)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise ValueError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or not {"arch", "dataset", "state_dict"} <= set(ckpt):
        raise ValueError(f"checkpoint {path} lacks the keys 'arch', 'dataset', 'state_dict' "
                         "(was it written by rsbook.models.save_checkpoint or rsbook.train.fit?)")
    model = get_model(ckpt["arch"], ckpt["dataset"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not match architecture {ckpt['arch']!r}: {err}") from err
    return model, ckpt
