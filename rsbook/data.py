"""Datasets, all returning ``(x, y)`` with ``x`` a float tensor in [0, 1].

Noise is added, and radii are measured, in this [0, 1] pixel space; each model
normalises internally (see :mod:`rsbook.models`). ``digits`` and ``toy2d`` need no
download and are what the notebooks run on by default; ``cifar10`` and ``imagenet``
read the standard on-disk formats from ``root``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from rsbook._checks import check_choice

__all__ = ["DATASETS", "DatasetInfo", "DatasetNotFound", "check_dataset_present", "CIFAR10Batches", "dataset_info", "get_dataset",
           "CIFAR10C_CORRUPTIONS", "CIFAR10C", "get_cifar10c"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts a model or certifier needs about a dataset."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_numel(self) -> int:
        """Dimension d of one input (what noise families and l2/linf conversions need)."""
        out = 1
        for s in self.input_shape:
            out *= s
        return out


DATASETS = {
    "digits": DatasetInfo("digits", 10, (1, 8, 8), (0.3050,), (0.3810,)),
    "toy2d": DatasetInfo("toy2d", 3, (2,), (0.5, 0.5), (0.25, 0.25)),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": DatasetInfo("imagenet", 1000, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS[check_choice(name, DATASETS, "dataset")]


def get_dataset(name: str, split: str, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """The ``split`` (``"train"`` or ``"test"``) of dataset ``name``.

    ``root`` is where cifar10/imagenet live (default: ``$RSBOOK_DATA/<name>`` or
    ``./data/<name>``). A missing dataset raises :class:`FileNotFoundError` saying what
    to put where; ``download=True`` fetches CIFAR-10 on a machine with internet.
    """
    check_choice(name, DATASETS, "dataset")
    check_choice(split, SPLITS, "split")
    if name == "digits":
        return _digits(split)
    if name == "toy2d":
        return _toy2d(split)
    root = Path(root) if root is not None else Path(os.environ.get("RSBOOK_DATA", "data")) / name
    if name == "cifar10":
        return _cifar10(split, root, download)
    return _imagenet(split, root)


def check_dataset_present(name: str, root: str | os.PathLike | None = None, splits=SPLITS) -> None:
    """Raise :class:`DatasetNotFound` now, not hours into a run, when dataset ``name`` is not on disk.

    Looks for the folders :func:`get_dataset` will read (without loading them); the
    built-in datasets (digits, toy2d) are always present.
    """
    check_choice(name, DATASETS, "dataset")
    if name not in ("cifar10", "imagenet"):
        return
    root = Path(root) if root is not None else Path(os.environ.get("RSBOOK_DATA", "data")) / name
    if name == "cifar10":
        if not (root / "cifar-10-batches-py").is_dir():
            _cifar10("test", root, download=False)  # raises the explained error
        return
    for split in splits:
        if not (root / ("train" if split == "train" else "val")).is_dir():
            _imagenet(split, root)


def _digits(split: str) -> TensorDataset:
    # scikit-learn's 1,797 real 8x8 handwritten digits (UCI), pixel values 0..16.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    # a fixed, stratification-free permutation: 1,437 train / 360 test
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(20190207))
    cut = len(y) - 360
    idx = perm[:cut] if split == "train" else perm[cut:]
    return TensorDataset(x[idx], y[idx])


def _toy2d(split: str, n_train: int = 1500, n_test: int = 300) -> TensorDataset:
    """Three classes in the unit square: two interleaved arcs and a blob, for pictures."""
    rng = np.random.default_rng(7 if split == "train" else 8)
    n = n_train if split == "train" else n_test
    y = rng.integers(0, 3, size=n)
    t = rng.uniform(0, np.pi, size=n)
    x = np.empty((n, 2))
    arc0, arc1, blob = y == 0, y == 1, y == 2
    x[arc0] = np.c_[np.cos(t[arc0]), np.sin(t[arc0])]
    x[arc1] = np.c_[1 - np.cos(t[arc1]), 0.5 - np.sin(t[arc1])]
    x[blob] = np.c_[rng.normal(2.6, 0.25, blob.sum()), rng.normal(0.9, 0.25, blob.sum())]
    x += rng.normal(0, 0.08, size=x.shape)
    # map the scene into [0, 1]^2
    x = np.clip((x - np.array([-1.2, -0.8])) / np.array([4.4, 2.6]), 0.0, 1.0)
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long))


class CIFAR10Batches(Dataset):
    """CIFAR-10 read from its python-pickle batches (``data_batch_1..5``, ``test_batch``).

    Each batch is a pickled dict with ``b"data"`` (uint8, ``N x 3072``, channel-major
    32x32 planes) and ``b"labels"``. Images come out as float tensors in [0, 1], after an
    optional tensor ``transform`` (e.g. random crop and flip for training).
    """

    TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
    TEST = ("test_batch",)

    def __init__(self, folder: Path, train: bool, transform=None):
        import pickle

        images, labels = [], []
        for name in self.TRAIN if train else self.TEST:
            path = Path(folder) / name
            if not path.exists():
                raise FileNotFoundError(f"CIFAR-10 batch file missing: {path}")
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="bytes")
            images.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(v) for v in entry[b"labels"])
        self.data = torch.from_numpy(np.concatenate(images))
        self.targets = torch.tensor(labels, dtype=torch.long)
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.data[i].float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])


class DatasetNotFound(FileNotFoundError):
    """A dataset folder or file is missing. The message names the way to point at the data.

    ``str(err)`` speaks to Python callers (``root=...``, ``download=True``);
    :meth:`message` rewords it for another interface, e.g. the command line's
    ``err.message(root="--data-root DIR", download="--download")`` or a notebook's
    ``data_root``.
    """

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.message())

    def message(self, root: str = "pass root=...", download: str = "pass download=True") -> str:
        # replace, not format: the folder names in the text may hold braces
        return self.template.replace("{root}", root).replace("{download}", download)


def _cifar10(split: str, root: Path, download: bool) -> Dataset:
    from torchvision import transforms

    folder = root / "cifar-10-batches-py"
    if download and not folder.is_dir():
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    if not folder.is_dir():
        raise DatasetNotFound(
            f"CIFAR-10 not found: expected the folder {folder} (the python version, "
            "cifar-10-python.tar.gz extracted). Put it there, set RSBOOK_DATA or {root}, "
            "or {download} on a machine with internet.")
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]) \
        if split == "train" else None
    return CIFAR10Batches(folder, train=split == "train", transform=tf)


def _imagenet(split: str, root: Path) -> Dataset:
    import torchvision
    from torchvision import transforms

    folder = root / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise DatasetNotFound(
            f"ImageNet not found: expected an ImageFolder tree at {folder} (one sub-folder per class, "
            f"e.g. {folder / 'n01440764'}/*.JPEG). Put the ILSVRC2012 {'train' if split == 'train' else 'val'} "
            "images there, set RSBOOK_DATA or {root} (ImageNet cannot be downloaded automatically).")
    if split == "train":
        tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor()])
    else:
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    return torchvision.datasets.ImageFolder(str(folder), transform=tf)


#: the 15 corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019) used for CAT-RS's Table 3
CIFAR10C_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                        "elastic_transform", "pixelate", "jpeg_compression")


class CIFAR10C(Dataset):
    """One corruption of CIFAR-10-C in its published format, as ``(x, y)`` with ``x`` in [0, 1].

    The folder holds ``<corruption>.npy`` (uint8, ``(5 * n, 32, 32, 3)``: the ``n = 10,000``
    test images at severity 1, then at severity 2, ..., 5) and ``labels.npy`` (``(5 * n,)``).
    The arrays are memory-mapped. ``severity`` (1..5) restricts to one block; the dataset
    index of an image is its row in the file, so ``severity_of(i) = i // n + 1`` for the
    whole file (logs written on the whole file keep the published row numbers).
    """

    SEVERITIES = 5

    def __init__(self, folder: str | os.PathLike, corruption: str, severity: int | None = None):
        folder = Path(folder)
        path, labels_path = folder / f"{corruption}.npy", folder / "labels.npy"
        for p in (path, labels_path):
            if not p.exists():
                raise DatasetNotFound(
                    f"CIFAR-10-C file missing: {p}. Expected the published CIFAR-10-C folder (one "
                    f"<corruption>.npy per corruption and labels.npy, from zenodo.org/record/2535967); "
                    "set RSBOOK_DATA or {root}")
        images = np.load(path, mmap_mode="r")
        labels = np.load(labels_path)
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
            raise ValueError(f"{path} must hold uint8 images of shape (N, 32, 32, 3), got {images.dtype} "
                             f"{images.shape}")
        if len(images) != len(labels) or len(images) % self.SEVERITIES:
            raise ValueError(f"{path} has {len(images)} images and labels.npy {len(labels)} labels; expected "
                             f"the same number, a multiple of {self.SEVERITIES} (one block per severity)")
        self.per_severity = len(images) // self.SEVERITIES
        self.offset = 0
        if severity is not None:
            if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= self.SEVERITIES:
                raise ValueError(f"severity must be an integer in 1..{self.SEVERITIES}, got {severity!r}")
            self.offset = (int(severity) - 1) * self.per_severity
            images = images[self.offset:self.offset + self.per_severity]
            labels = labels[self.offset:self.offset + self.per_severity]
        self.images, self.labels = images, labels
        self.corruption, self.severity = corruption, severity

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1).float().div_(255.0)
        return x, int(self.labels[i])

    def severity_of(self, i: int) -> int:
        """Severity (1..5) of the image at index ``i`` of this dataset."""
        return (self.offset + int(i)) // self.per_severity + 1


def get_cifar10c(corruption: str, root: str | os.PathLike | None = None, severity: int | None = None) -> CIFAR10C:
    """CIFAR-10-C's ``corruption`` (one of :data:`CIFAR10C_CORRUPTIONS`) from ``root``.

    ``root`` defaults to ``$RSBOOK_DATA/CIFAR-10-C`` or ``./data/CIFAR-10-C``.
    """
    check_choice(corruption, CIFAR10C_CORRUPTIONS, "corruption")
    root = Path(root) if root is not None else Path(os.environ.get("RSBOOK_DATA", "data")) / "CIFAR-10-C"
    return CIFAR10C(root, corruption, severity)
