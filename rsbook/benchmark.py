"""Throughput of certification against the raw model and against a naive counter, per precision.

Three measurements on one model, batch size and machine, for each inference precision:

* **raw**: forward passes of the base model on pre-made noisy batches (the ceiling);
* **certify**: :meth:`rsbook.smooth.Smooth.certify` end to end (noise drawn on the fly,
  votes counted with ``bincount`` on the device);
* **naive**: the straightforward way, predictions copied to the host each batch and
  counted in a Python loop.

All three run the base classifier the same way (:meth:`Smooth.logits`: precision,
memory layout, compilation). They run interleaved for several rounds and the median of
each is reported. A lower precision changes the base classifier;
:func:`precision_disagreement` measures on how many noisy inputs its answer differs
from float32's.
"""

from __future__ import annotations

import statistics
import time

import torch

from rsbook.data import dataset_info, get_dataset
from rsbook.models import get_model, load_checkpoint
from rsbook.smooth import PRECISIONS, Smooth

__all__ = ["benchmark_certify", "benchmark_precisions", "naive_sample_counts", "precision_disagreement"]


def naive_sample_counts(model, x, noise, n, batch_size, num_classes, generator):
    """The reference implementation's counting: predictions to the CPU, then a Python loop per sample."""
    counts = [0] * num_classes
    with torch.no_grad():
        remaining = n
        while remaining > 0:
            b = min(batch_size, remaining)
            batch = x.unsqueeze(0).repeat(b, *([1] * x.dim()))
            noisy = batch + noise.sample(batch.shape, generator=generator, device=x.device, dtype=x.dtype)
            predictions = model(noisy).argmax(1).cpu().numpy()
            for p in predictions:
                counts[p] += 1
            remaining -= b
    return counts


@torch.inference_mode()
def precision_disagreement(model: torch.nn.Module, xs: torch.Tensor, noise, precision: str, n: int = 1000,
                           batch_size: int = 1000, seed: int = 0, channels_last: bool = False) -> dict:
    """Fraction of noisy inputs on which ``model`` at ``precision`` and at float32 predict different classes.

    Each of the inputs ``xs`` (shape ``(B, ...)``) gets ``n`` noise draws; both precisions
    classify the *same* noisy inputs. Returns ``{"disagree", "total", "fraction"}``.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    reference = Smooth(model, 2, noise, device=device)  # only noise and logits() are used
    lowered = Smooth(model, 2, noise, device=device, precision=precision, channels_last=channels_last)
    disagree = total = 0
    model.eval()
    for x in xs.to(device):
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            noisy = x.expand(b, *x.shape) + reference.noise.sample((b, *x.shape), generator=gen, device=device)
            a = reference.logits(noisy).argmax(1)
            c = lowered.logits(noisy).argmax(1)
            disagree += int((a != c).sum())
            total += b
    return {"disagree": disagree, "total": total, "fraction": disagree / total}


def _setup(arch, dataset, device, checkpoint):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if checkpoint is not None:
        model, ckpt = load_checkpoint(checkpoint, map_location=device)
        arch, dataset = ckpt["arch"], ckpt["dataset"]
    else:
        model = get_model(arch, dataset)
    info = dataset_info(dataset)
    model = model.to(device).eval()
    x = torch.rand(info.input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    if dataset in ("digits", "toy2d"):
        x = get_dataset(dataset, "test")[0][0].to(device)
    return device, arch, dataset, info, model, x


def benchmark_certify(arch: str = "digits_cnn", dataset: str = "digits", batch_size: int = 1000,
                      n: int = 20_000, n0: int = 100, rounds: int = 5, device: str | None = None,
                      sigma: float = 0.5, precision: str = "float32", channels_last: bool = False,
                      compile: bool = False, checkpoint: str | None = None) -> dict:
    """Samples per second of (a), (b), (c) and the ratios b/a and b/c (see module docstring).

    ``checkpoint`` benchmarks a trained model (its ``arch``/``dataset`` replace the arguments).
    """
    device, arch, dataset, info, model, x = _setup(arch, dataset, device, checkpoint)
    smooth = Smooth(model, info.num_classes, sigma, device=device, precision=precision,
                    channels_last=channels_last, compile=compile)
    gen = torch.Generator(device=device).manual_seed(0)
    premade = [x + smooth.noise.sample((batch_size, *x.shape), generator=gen, device=device)
               for _ in range(-(-(n0 + n) // batch_size))]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def raw():
        with torch.inference_mode():
            for batch in premade:
                smooth.logits(batch).argmax(1)
        sync()

    def certify():
        smooth.certify(x, n0, n, 0.001, batch_size)
        sync()

    def naive():
        with torch.inference_mode():
            naive_sample_counts(smooth.logits, x, smooth.noise, n0, batch_size, info.num_classes, gen)
            naive_sample_counts(smooth.logits, x, smooth.noise, n, batch_size, info.num_classes, gen)
        sync()

    total = {"raw": len(premade) * batch_size, "certify": n0 + n, "naive": n0 + n}
    times = {k: [] for k in total}
    for fn in (raw, certify, naive):  # warm-up (and compilation)
        fn()
    for _ in range(rounds):
        for key, fn in (("raw", raw), ("certify", certify), ("naive", naive)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    rate = {k: total[k] / statistics.median(v) for k, v in times.items()}
    return {"device": str(device), "arch": arch, "precision": precision, "channels_last": channels_last,
            "compile": compile, "batch_size": batch_size, "n": n, "n0": n0, "rounds": rounds,
            "raw_samples_per_s": rate["raw"], "certify_samples_per_s": rate["certify"],
            "naive_samples_per_s": rate["naive"], "certify_over_raw": rate["certify"] / rate["raw"],
            "certify_over_naive": rate["certify"] / rate["naive"],
            "seconds_per_image": (n0 + n) / rate["certify"], "threads": torch.get_num_threads()}


def benchmark_precisions(arch: str = "digits_cnn", dataset: str = "digits", precisions=tuple(PRECISIONS),
                         batch_size: int = 1000, n: int = 20_000, n0: int = 100, rounds: int = 5,
                         device: str | None = None, sigma: float = 0.5, channels_last: bool = False,
                         compile: bool = False, checkpoint: str | None = None, disagreement_inputs: int = 10,
                         disagreement_n: int = 1000):
    """One :func:`benchmark_certify` row per precision plus the fp32 disagreement on noisy inputs.

    The disagreement is measured on ``disagreement_inputs`` test images (random inputs for
    datasets not on disk) with ``disagreement_n`` noise draws each. Returns a DataFrame.
    """
    import pandas as pd

    rows = []
    for precision in precisions:
        row = benchmark_certify(arch, dataset, batch_size, n, n0, rounds, device, sigma, precision,
                                channels_last, compile, checkpoint)
        rows.append(row)
    dev, _, ds, info, model, _ = _setup(arch, dataset, device, checkpoint)
    if ds in ("digits", "toy2d"):
        test = get_dataset(ds, "test")
        xs = torch.stack([test[i][0] for i in range(min(disagreement_inputs, len(test)))])
    else:
        xs = torch.rand(disagreement_inputs, *info.input_shape, generator=torch.Generator().manual_seed(1))
    from rsbook.noise import make_noise

    for row in rows:
        d = precision_disagreement(model, xs, make_noise(sigma), row["precision"], disagreement_n,
                                   min(batch_size, disagreement_n), channels_last=channels_last)
        row["disagree_with_fp32"] = d["fraction"]
        row["disagreement_samples"] = d["total"]
    return pd.DataFrame(rows)
