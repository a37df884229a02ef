"""The benchmark command runs and reports its ratios (timings are not asserted: that is the benchmark's job)."""

from rsbook.benchmark import benchmark_certify, naive_sample_counts
from rsbook.groundtruth import LinearClassifier, point_at_p_a
from rsbook.noise import Gaussian
from rsbook.smooth import Smooth

import numpy as np
import torch
import pytest


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


def _near_tie_classifier(margin):
    """Two logits ``x`` and ``x + margin`` with x ~ 1: float32 resolves them, 16-bit formats round them together."""
    clf = torch.nn.Linear(1, 2)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[1.0], [1.0]]))
        clf.bias.copy_(torch.tensor([0.0, margin]))
    return clf


def test_precision_disagreement_against_a_known_answer():
    from rsbook.benchmark import precision_disagreement

    xs = torch.ones(2, 1)
    # margin 1e-6 << the 16-bit spacing near 1 (about 1e-3 for float16, 8e-3 for bfloat16): the low-precision
    # logits tie and argmax returns class 0, float32 keeps class 1 -- nearly every noisy input disagrees
    for precision in ("bfloat16", "float16"):
        d = precision_disagreement(_near_tie_classifier(1e-6), xs, Gaussian(0.01), precision, n=500, batch_size=250)
        assert d["total"] == 1000 and d["fraction"] > 0.95
    # a margin of 0.5 survives any rounding: no disagreement
    d = precision_disagreement(_near_tie_classifier(0.5), xs, Gaussian(0.01), "bfloat16", n=500, batch_size=250)
    assert d["disagree"] == 0
    assert precision_disagreement(_near_tie_classifier(1e-6), xs, Gaussian(0.01), "float32", n=100)["disagree"] == 0


def test_smooth_runs_the_classifier_at_its_precision():
    clf = _near_tie_classifier(1e-6)
    x = torch.ones(1)
    assert Smooth(clf, 2, 0.001).sample_counts(x, 200, 100)[1] == 200
    assert Smooth(clf, 2, 0.001, precision="bfloat16").sample_counts(x, 200, 100)[0] > 190
    with pytest.raises(ValueError, match="unknown precision 'fp8'.*float32, bfloat16, float16"):
        Smooth(clf, 2, 0.5, precision="fp8")


def test_benchmark_table_has_one_row_per_precision():
    from rsbook.benchmark import benchmark_precisions

    table = benchmark_precisions("toy_mlp", "toy2d", ("float32", "bfloat16"), batch_size=100, n=200, n0=10,
                                 rounds=1, disagreement_inputs=2, disagreement_n=100)
    assert table["precision"].tolist() == ["float32", "bfloat16"]
    assert (table[["raw_samples_per_s", "certify_samples_per_s", "naive_samples_per_s"]] > 0).all().all()
    assert table.loc[0, "disagree_with_fp32"] == 0.0
    assert 0.0 <= table.loc[1, "disagree_with_fp32"] <= 1.0 and table.loc[1, "disagreement_samples"] == 200
