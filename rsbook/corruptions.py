"""Corruption robustness of smoothed classifiers: CAT-RS's CIFAR-10-C protocol (Table 3), and digits.

The protocol of Jeong, Kim & Shin (AAAI 2023, Sec. 4.3), after Sun et al. (2021): take the
``sigma = 0.25`` models; for each of the 15 CIFAR-10-C corruptions certify every 100th image
of its file (100 images per severity, 500 per corruption, 7,500 in all) with CERTIFY
(``n0 = 100``, ``n = 100,000``, ``alpha = 0.001``); report the certified accuracy at
``r = 0`` (correct *and* not abstaining) averaged over the five severities, per corruption,
and its mean over corruptions (mAcc); likewise the ACR (mACR).

CIFAR-10-C is 32x32 colour; for the CPU chapter :func:`digits_corrupted` applies five
simple corruptions to the 8x8 ``digits`` test set at three severities, laid out like a
CIFAR-10-C file (severity blocks one after another), so both go through the same
:func:`certify_corruptions` and :func:`corruption_table`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

from rsbook._checks import check_choice, check_positive_int

__all__ = ["DIGITS_CORRUPTIONS", "DIGITS_SEVERITIES", "corrupt", "digits_corrupted", "StackedCorruption",
           "certify_corruptions", "corruption_table", "read_corruption_logs"]

#: corruption -> its parameter at severities 1, 2, 3 (pixel values in [0, 1], images 8x8)
DIGITS_SEVERITIES = {
    "gaussian_noise": (0.08, 0.16, 0.24),   # std of additive noise (then clipped to [0, 1])
    "impulse_noise": (0.03, 0.07, 0.12),    # fraction of pixels set to 0 or 1 (salt and pepper)
    "blur": (0.5, 0.8, 1.1),                # std (pixels) of a 5x5 Gaussian blur, reflect padding
    "contrast": (0.6, 0.4, 0.25),           # factor on the deviation from the image's mean
    "brightness": (0.15, 0.30, 0.45),       # added to every pixel (then clipped)
}
DIGITS_CORRUPTIONS = tuple(DIGITS_SEVERITIES)


def corrupt(x: torch.Tensor, corruption: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Apply ``corruption`` at ``severity`` (1..3) to a batch ``x`` of shape ``(B, C, H, W)`` in [0, 1].

    Random corruptions draw from a generator seeded with ``(seed, severity)``, so a
    corrupted test set is the same on every run. Output is clipped to [0, 1].
    """
    check_choice(corruption, DIGITS_CORRUPTIONS, "corruption")
    levels = DIGITS_SEVERITIES[corruption]
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= len(levels):
        raise ValueError(f"severity must be an integer in 1..{len(levels)}, got {severity!r}")
    c = levels[int(severity) - 1]
    gen = torch.Generator().manual_seed(int(seed) * 101 + int(severity))
    x = x.float()
    if corruption == "gaussian_noise":
        out = x + c * torch.randn(x.shape, generator=gen)
    elif corruption == "impulse_noise":
        u = torch.rand(x.shape, generator=gen)
        salt = torch.rand(x.shape, generator=gen) < 0.5
        out = torch.where(u < c, salt.float(), x)
    elif corruption == "blur":
        r = torch.arange(-2, 3, dtype=torch.float32)
        k1 = torch.exp(-r ** 2 / (2 * c ** 2))
        k1 = k1 / k1.sum()
        kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)
        out = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])
    elif corruption == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        out = (x - mean) * c + mean
    else:
        out = x + c
    return out.clamp(0.0, 1.0)


class StackedCorruption(TensorDataset):
    """A corrupted test set laid out like a CIFAR-10-C file: severity 1's block, then 2's, ...."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, per_severity: int, corruption: str):
        super().__init__(x, y)
        self.per_severity, self.corruption = int(per_severity), corruption

    def severity_of(self, i: int) -> int:
        return int(i) // self.per_severity + 1


def digits_corrupted(corruption: str, severities: Iterable[int] = (1, 2, 3), seed: int = 0) -> StackedCorruption:
    """The ``digits`` test set under ``corruption``, one block of 360 images per severity."""
    from rsbook.data import get_dataset

    test = get_dataset("digits", "test")
    x, y = test.tensors
    severities = list(severities)
    blocks = [corrupt(x, corruption, s, seed) for s in severities]
    return StackedCorruption(torch.cat(blocks), y.repeat(len(severities)), len(y), corruption)


def certify_corruptions(smooth, datasets: Mapping[str, Dataset], out_dir: str | os.PathLike, n0: int, n: int,
                        alpha: float, skip: int = 100, batch_size: int = 1000, seed: int = 0,
                        progress: bool = True) -> dict[str, Path]:
    """CERTIFY every ``skip``-th image of each corrupted dataset into ``out_dir/<corruption>.tsv``.

    The logs are the usual resumable :func:`rsbook.certify.certify_dataset` logs; their
    ``idx`` is the row in the corrupted file, so :func:`corruption_table` can recover the
    severity. CIFAR-10-C: ``skip = 100`` (the paper's 100 images per severity).
    """
    from rsbook.certify import certify_dataset

    out_dir = Path(out_dir)
    return {name: certify_dataset(smooth, ds, n0, n, alpha, out_dir / f"{name}.tsv", skip=skip,
                                  batch_size=batch_size, seed=seed, progress=progress)
            for name, ds in datasets.items()}


def _severity_means(frame: pd.DataFrame, per_severity: int) -> tuple[float, float]:
    severity = frame["idx"].to_numpy() // per_severity
    correct = frame["correct"].to_numpy() == 1
    radius = np.where(correct, frame["radius"].to_numpy(dtype=float), 0.0)
    sev = pd.DataFrame({"s": severity, "acc": correct.astype(float), "r": radius}).groupby("s").mean()
    return float(sev["acc"].mean()), float(sev["r"].mean())


def corruption_table(logs: Mapping[str, Mapping[str, object]], per_severity: int, metric: str = "accuracy",
                     clean: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Table 3 of CAT-RS: rows corruptions (+ ``mean``), columns methods.

    ``logs[method][corruption]`` is a certification log (path or DataFrame) on a corrupted
    file whose row ``idx`` has severity ``idx // per_severity + 1`` (CIFAR-10-C:
    ``per_severity = 10,000``; :func:`digits_corrupted`: 360). ``metric = "accuracy"``:
    certified accuracy at ``r = 0`` in percent (correct without abstaining); ``"acr"``:
    average certified radius. Each cell averages over severities first, then ``mean``
    averages the corruptions (mAcc / mACR). ``clean[method]``, if given, adds a first row
    ``clean`` from a log on the clean test set (not part of the mean).
    """
    from rsbook.analysis import read_log

    check_choice(metric, ("accuracy", "acr"), "metric")
    per_severity = check_positive_int(per_severity, "per_severity")
    scale, pick = (100.0, 0) if metric == "accuracy" else (1.0, 1)
    table = {}
    for method, by_corruption in logs.items():
        if not by_corruption:
            raise ValueError(f"no corruption logs for method {method!r}")
        column = {}
        for corruption, log in by_corruption.items():
            frame = log if isinstance(log, pd.DataFrame) else read_log(log)
            if len(frame) == 0:
                raise ValueError(f"empty log for {method!r} / {corruption!r}")
            column[corruption] = scale * _severity_means(frame, per_severity)[pick]
        column["mean"] = float(np.mean(list(column.values())))
        if clean is not None and method in clean:
            frame = clean[method] if isinstance(clean[method], pd.DataFrame) else read_log(clean[method])
            correct = frame["correct"].to_numpy() == 1
            column = {"clean": scale * (correct.mean() if pick == 0 else
                                        np.where(correct, frame["radius"], 0.0).mean()), **column}
        table[method] = column
    return pd.DataFrame(table)


def read_corruption_logs(folder: str | os.PathLike, methods: Mapping[str, str],
                         corruptions: Iterable[str] | None = None) -> dict[str, dict[str, Path]]:
    """``{method: {corruption: path}}`` for logs stored as ``folder/<subfolder>/<corruption>.tsv``.

    ``methods`` maps a display name to its sub-folder (e.g. the authors' published
    ``data/cifar10c/cat_rs``: ``{"CAT-RS": "cat_rs", "Gaussian": "cohen"}``); ``corruptions``
    defaults to the 15 of CIFAR-10-C. A missing file raises, naming it.
    """
    from rsbook.data import CIFAR10C_CORRUPTIONS

    corruptions = tuple(corruptions) if corruptions is not None else CIFAR10C_CORRUPTIONS
    out = {}
    for name, sub in methods.items():
        paths = {c: Path(folder) / sub / f"{c}.tsv" for c in corruptions}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise FileNotFoundError(f"corruption logs missing for {name!r}: {', '.join(missing[:3])}"
                                    + (" ..." if len(missing) > 3 else ""))
        out[name] = paths
    return out
