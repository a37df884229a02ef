"""Small shared helpers: reproducibility, device choice and progress bars."""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time

import numpy as np
import torch

__all__ = ["seed_everything", "default_device", "check_device", "eval_mode", "seed_offset", "training_seed", "progress_bar",
           "SEED_OFFSET_ENV"]

#: environment variable whose integer value is added to every training seed (see :func:`training_seed`)
SEED_OFFSET_ENV = "RSBOOK_SEED_OFFSET"


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


def check_device(device, option: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine (``None``/``"auto"``: CUDA if any, else CPU).

    A device torch does not know, or a GPU this machine does not have, is a ``ValueError``
    naming it and what is available: an error about the device, before any file is read.
    """
    if device is None or device == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    available = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{option} {device!r} is not a device; valid choices here: {', '.join(available)}")
    if dev.type == "cuda" and (count == 0 or (dev.index is not None and dev.index >= count)):
        have = f"{count} CUDA device(s)" if count else "no CUDA GPU visible to torch"
        raise ValueError(f"{option} {device!r} is not available on this machine ({have}); "
                         f"valid choices here: {', '.join(available)}")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{option} {device!r} is not available on this machine; valid choices here: "
                         f"{', '.join(available)}")
    return dev


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


def seed_offset() -> int:
    """The integer in ``$RSBOOK_SEED_OFFSET`` (0 when unset).

    ``make test`` sets it so that every notebook trains with other random numbers than the
    run that stored its outputs: a locked digit that depends on training then fails on every
    machine, not only on other people's.
    """
    raw = os.environ.get(SEED_OFFSET_ENV, "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_OFFSET_ENV} must be an integer, got {raw!r}") from None


def training_seed(seed: int) -> int:
    """The seed training actually uses: ``seed + $RSBOOK_SEED_OFFSET``.

    Applied to training randomness only (initial weights, shuffling, training noise);
    certification and analytic-classifier seeds are left alone, so exact results stay exact.
    """
    return int(seed) + seed_offset()


class _FinalLine:
    """A progress counter for notebook kernels: silent while running, one summary line at the end.

    A headless kernel (papermill, nbval) would store every redraw of a text bar as output;
    this stores one line instead. Interface: the subset of tqdm that rsbook uses.
    """

    def __init__(self, iterable=None, desc="", total=None, initial=0, **_):
        self.iterable, self.desc, self.n = iterable, desc, initial
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix, self.start, self.closed = "", time.perf_counter(), False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def update(self, k=1):
        self.n += k

    def set_postfix(self, **kwargs):
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def close(self):
        if self.closed:
            return
        self.closed = True
        total = f"/{self.total}" if self.total is not None else ""
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}{total} done in {time.perf_counter() - self.start:.1f} s{extra}",
              file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _in_notebook_kernel() -> bool:
    return "ipykernel" in sys.modules and not sys.stderr.isatty()


def progress_bar(iterable=None, *, desc: str = "", total=None, initial: int = 0, disable: bool = False):
    """A tqdm bar on a terminal; one final line in a notebook kernel; nothing when ``disable``.

    ``$RSBOOK_PROGRESS`` overrides the choice: ``bar``, ``final`` or ``off``.
    """
    mode = os.environ.get("RSBOOK_PROGRESS", "").strip().lower() or ("final" if _in_notebook_kernel() else "bar")
    if disable or mode == "off":
        from tqdm.std import tqdm

        return tqdm(iterable, desc=desc, total=total, initial=initial, disable=True)
    if mode == "final":
        return _FinalLine(iterable, desc=desc, total=total, initial=initial)
    from tqdm.std import tqdm

    # on a terminal redraw often; in a log file (Slurm) every 30 s is plenty
    return tqdm(iterable, desc=desc, total=total, initial=initial, dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 30.0)
