"""Small shared helpers: reproducibility and device choice."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["seed_everything", "default_device", "eval_mode"]


def seed_everything(seed: int = 0, threads: int | None = 2) -> None:
    """Seed Python, NumPy and torch, and fix the CPU thread count.

    The thread count matters for bit-reproducibility on CPU: reductions split across a
    different number of threads add in a different order. Notebooks call this first so
    that their locked outputs agree between a laptop and CI.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Run a block with ``model`` in eval mode and restore its previous mode afterwards.

    Sampling and attacks evaluate the classifier as it is deployed: BatchNorm uses its
    running statistics (examples do not interact, running averages do not move) and
    dropout is off, whatever mode the caller (e.g. the training loop) left it in.
    """
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
