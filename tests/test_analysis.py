"""ACR, certified accuracy and log reading on hand-made logs with known answers."""

import numpy as np
import pytest

from rsbook.analysis import (acr, available_paper_tables, certified_accuracy, envelope, paper_table, read_log,
                             summary_table)

# 5 examples: radii 0.5 (correct), 1.0 (correct), 2.0 (wrong), 0.0 abstain, 0.25 (correct)
OURS = """idx\tlabel\tpredict\tradius\tcorrect\ttime\tcount\tn\tp_lower\tn0
0\t3\t3\t0.5\t1\t1.25\t900\t1000\t0.9\t100
10\t1\t1\t1.0\t1\t0.5\t990\t1000\t0.99\t100
20\t2\t7\t2.0\t0\t0.5\t999\t1000\t0.999\t100
30\t4\t-1\t0.0\t0\t0.5\t400\t1000\t0.4\t100
40\t5\t5\t0.25\t1\t0.5\t700\t1000\t0.7\t100
"""
# the reference implementations' format: 6 columns, time as H:MM:SS.ffffff
REFERENCE = """idx\tlabel\tpredict\tradius\tcorrect\ttime
0\t3\t3\t0.5\t1\t0:00:01.250000
10\t1\t1\t1.0\t1\t1:02:03.500000
"""


@pytest.fixture
def log(tmp_path):
    p = tmp_path / "ours.tsv"
    p.write_text(OURS)
    return p


def test_acr_counts_wrong_and_abstained_as_zero(log):
    assert acr(log) == pytest.approx((0.5 + 1.0 + 0.25) / 5)


def test_certified_accuracy_by_hand(log):
    acc = certified_accuracy(log, [0.0, 0.25, 0.3, 0.5, 1.0, 1.01, 2.0])
    np.testing.assert_allclose(acc, [3 / 5, 3 / 5, 2 / 5, 2 / 5, 1 / 5, 0, 0])
    assert certified_accuracy(log, 0.5) == pytest.approx(0.4)


def test_reads_both_time_formats(log, tmp_path):
    assert read_log(log)["time"].tolist() == [1.25, 0.5, 0.5, 0.5, 0.5]
    ref = tmp_path / "ref.tsv"
    ref.write_text(REFERENCE)
    frame = read_log(ref)
    assert frame["time"].tolist() == pytest.approx([1.25, 3723.5])
    assert acr(frame) == pytest.approx(0.75)


def test_envelope_takes_best_model_per_radius(log, tmp_path):
    other = tmp_path / "other.tsv"
    other.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t3.0\t1\t0.1\n1\t1\t0\t0.0\t0\t0.1\n")
    radii = [0.0, 0.5, 2.5]
    np.testing.assert_allclose(envelope({"a": log, "b": other}, radii), [0.6, 0.5, 0.5])


def test_summary_table(log):
    table = summary_table({"m": log}, [0.0, 0.5])
    assert table.loc["m", "ACR"] == pytest.approx(0.35)
    assert table.loc["m", "0.5"] == pytest.approx(40.0)


def test_bad_logs_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "missing.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_log(bad)


def test_paper_tables_carry_citations():
    names = available_paper_tables()
    assert "cohen_cifar10_per_sigma" in names
    for name in names:
        table = paper_table(name)
        assert len(table) > 0 and table.attrs["citation"], name
    cohen = paper_table("cohen_cifar10_per_sigma").set_index("sigma")
    assert cohen.loc[0.5, "ACR"] == pytest.approx(0.525)
    with pytest.raises(ValueError, match="valid choices"):
        paper_table("nope")


def test_at_cap_marks_correct_unanimous_certificates_in_idx_order():
    import pandas as pd

    from rsbook.analysis import at_cap

    log = pd.DataFrame({"idx": [2, 0, 1, 3], "label": [1, 0, 1, 0], "predict": [1, 0, 0, 0],
                        "radius": [0.9, 0.9, 0.9, 0.1], "correct": [1, 1, 0, 1], "count": [100, 100, 100, 60],
                        "n": [100, 100, 100, 100]})
    # idx 0: correct and unanimous; idx 1: unanimous but wrong; idx 2: correct and unanimous; idx 3: not unanimous
    assert at_cap(log).tolist() == [True, False, True, False]
