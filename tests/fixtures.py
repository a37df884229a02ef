"""Tiny datasets written in the real on-disk formats, for testing the loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_tiny_cifar10(root: Path, n_train_per_batch: int = 4, n_test: int = 6, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` in CIFAR-10's python-pickle format (5 train batches + test batch)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n, name):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}, fh, protocol=2)

    for i in range(1, 6):
        batch(n_train_per_batch, f"data_batch_{i}")
    batch(n_test, "test_batch")
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": 10000,
                     b"num_vis": 3072}, fh, protocol=2)
    return Path(root)


def write_tiny_imagenet(root: Path, classes=("n01440764", "n01443537"), per_class: int = 2, seed: int = 0) -> Path:
    """``root/{train,val}/<wnid>/*.JPEG``: an ImageFolder tree of small random JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for wnid in classes:
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(40 + 8 * i, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", format="JPEG")
    return Path(root)


def write_tiny_cifar10c(root: Path, corruptions=("fog", "snow"), per_severity: int = 4, seed: int = 0) -> Path:
    """``root/<corruption>.npy`` (uint8, ``(5 * per_severity, 32, 32, 3)``) and ``root/labels.npy``: CIFAR-10-C's format."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 5 * per_severity
    np.save(root / "labels.npy", np.tile(rng.integers(0, 10, size=per_severity), 5).astype(np.int64))
    for name in corruptions:
        np.save(root / f"{name}.npy", rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8))
    return root
