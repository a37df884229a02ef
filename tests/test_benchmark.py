"""The benchmark command runs and reports its ratios (timings are not asserted: that is the benchmark's job)."""

from rsbook.benchmark import benchmark_certify, naive_sample_counts
from rsbook.groundtruth import LinearClassifier, point_at_p_a
from rsbook.noise import Gaussian
from rsbook.smooth import Smooth

import numpy as np
import torch


def test_benchmark_reports_all_three_rates():
    result = benchmark_certify(n=300, n0=10, batch_size=100, rounds=1)
    for key in ("raw_samples_per_s", "certify_samples_per_s", "naive_samples_per_s", "certify_over_raw",
                "certify_over_naive"):
        assert result[key] > 0


def test_naive_counter_agrees_with_the_sampler_in_distribution():
    clf = LinearClassifier(torch.ones(5), 0.0)
    x = point_at_p_a(clf, 0.8, 0.5)
    naive = naive_sample_counts(clf, x, Gaussian(0.5), 20_000, 999, 2, torch.Generator().manual_seed(0))
    ours = Smooth(clf, 2, 0.5).sample_counts(x, 20_000, 999)
    assert sum(naive) == ours.sum() == 20_000
    assert abs(naive[1] - ours[1]) / 20_000 < 4 * np.sqrt(2 * 0.16 / 20_000)
