"""Throughput of certification against the raw model and against a naive counter.

Three measurements on one model, batch size and machine:

* **raw**: forward passes of the base model on pre-made noisy batches (the ceiling);
* **certify**: :meth:`rsbook.smooth.Smooth.certify` end to end (noise drawn on the fly,
  votes counted with ``bincount`` on the device);
* **naive**: the straightforward way, predictions copied to the host each batch and
  counted in a Python loop.

They run interleaved for several rounds and the median of each is reported.
"""

from __future__ import annotations

import statistics
import time

import torch

from rsbook.data import dataset_info, get_dataset
from rsbook.models import get_model
from rsbook.smooth import Smooth

__all__ = ["benchmark_certify", "naive_sample_counts"]


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


def benchmark_certify(arch: str = "digits_cnn", dataset: str = "digits", batch_size: int = 1000,
                      n: int = 20_000, n0: int = 100, rounds: int = 5, device: str | None = None,
                      sigma: float = 0.5) -> dict:
    """Samples per second of (a), (b), (c) and the ratios b/a and b/c (see module docstring)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = dataset_info(dataset)
    model = get_model(arch, dataset).to(device).eval()
    x = torch.rand(info.input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    if dataset in ("digits", "toy2d"):
        x = get_dataset(dataset, "test")[0][0].to(device)
    smooth = Smooth(model, info.num_classes, sigma, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    premade = [x + smooth.noise.sample((batch_size, *x.shape), generator=gen, device=device)
               for _ in range(-(-(n0 + n) // batch_size))]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def raw():
        with torch.inference_mode():
            for batch in premade:
                model(batch).argmax(1)
        sync()

    def certify():
        smooth.certify(x, n0, n, 0.001, batch_size)
        sync()

    def naive():
        naive_sample_counts(model, x, smooth.noise, n0, batch_size, info.num_classes, gen)
        naive_sample_counts(model, x, smooth.noise, n, batch_size, info.num_classes, gen)
        sync()

    total = {"raw": len(premade) * batch_size, "certify": n0 + n, "naive": n0 + n}
    times = {k: [] for k in total}
    for fn in (raw, certify, naive):  # warm-up
        fn()
    for _ in range(rounds):
        for key, fn in (("raw", raw), ("certify", certify), ("naive", naive)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    rate = {k: total[k] / statistics.median(v) for k, v in times.items()}
    return {"device": str(device), "arch": arch, "batch_size": batch_size, "n": n, "n0": n0, "rounds": rounds,
            "raw_samples_per_s": rate["raw"], "certify_samples_per_s": rate["certify"],
            "naive_samples_per_s": rate["naive"], "certify_over_raw": rate["certify"] / rate["raw"],
            "certify_over_naive": rate["certify"] / rate["naive"], "threads": torch.get_num_threads()}
