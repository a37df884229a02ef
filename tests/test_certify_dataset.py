"""certify_dataset: append-as-you-go logs, resume after a crash, disjoint shards that merge."""

import dataclasses

import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from rsbook.analysis import read_log
from rsbook.certify import LOG_COLUMNS, certify_dataset, merge_logs, select_indices
from rsbook.groundtruth import LinearClassifier
from rsbook.smooth import Certificate, Smooth


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    clf = LinearClassifier(torch.randn(10, generator=gen), b=0.1)
    x = torch.randn(23, 10, generator=gen)
    y = (clf.margin(x) > 0).long()
    y[::5] = 1 - y[::5]  # some wrong labels so 'correct' varies
    return clf, TensorDataset(x, y)


def run(clf, data, path, **kw):
    return certify_dataset(Smooth(clf, 2, 0.5), data, 10, 200, 0.01, path, progress=False, **kw)


def test_log_has_reference_columns_and_one_row_per_example(setup, tmp_path):
    clf, data = setup
    log = read_log(run(clf, data, tmp_path / "log.tsv", skip=2))
    assert list(log.columns)[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    assert list(log.columns) == list(LOG_COLUMNS)
    assert log["idx"].tolist() == list(range(0, 23, 2))
    assert (log["correct"] == (log["predict"] == log["label"]).astype(int)).all()


def test_interrupted_run_resumes_without_duplicates_or_losses(setup, tmp_path):
    clf, data = setup
    clean = read_log(run(clf, data, tmp_path / "clean.tsv"))
    path = tmp_path / "crash.tsv"
    smooth = Smooth(clf, 2, 0.5)
    calls = {"n": 0}

    def crashing(x):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt  # the job is killed while certifying the 9th example
        return smooth.certify(x, 10, 200, 0.01)

    with pytest.raises(KeyboardInterrupt):
        certify_dataset(smooth, data, 10, 200, 0.01, path, certify_fn=crashing, progress=False)
    assert len(read_log(path)) == 8  # every finished example was already on disk
    with open(path, "a") as fh:
        fh.write("8\t1\t1\t0.3")  # ... and a half-written row, as a kill during a write leaves
    resumed = read_log(run(clf, data, path))
    assert sorted(resumed["idx"]) == list(range(23))
    pd.testing.assert_frame_equal(resumed.drop(columns="time"), clean.drop(columns="time"))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_shards_are_disjoint_cover_everything_and_merge(setup, tmp_path, k):
    clf, data = setup
    clean = read_log(run(clf, data, tmp_path / "clean.tsv", skip=2))
    shards = [run(clf, data, tmp_path / f"s{i}.tsv", skip=2, shard=(i, k)) for i in range(k)]
    seen = [set(read_log(s)["idx"]) for s in shards]
    assert sum(map(len, seen)) == len(set().union(*seen)) == len(clean)
    merged = read_log(merge_logs(shards, tmp_path / "merged.tsv"))
    pd.testing.assert_frame_equal(merged.drop(columns="time"), clean.drop(columns="time"))


def test_merge_refuses_overlapping_logs(setup, tmp_path):
    clf, data = setup
    a = run(clf, data, tmp_path / "a.tsv", max_examples=5)
    b = run(clf, data, tmp_path / "b.tsv", max_examples=7)
    with pytest.raises(ValueError, match="overlap"):
        merge_logs([a, b], tmp_path / "m.tsv")


def test_extra_columns_are_logged(setup, tmp_path):
    clf, data = setup
    smooth = Smooth(clf, 2, 0.5)

    @dataclasses.dataclass(frozen=True)
    class Tagged(Certificate):
        samples_used: int = 0

    def certify_fn(x):
        cert = smooth.certify(x, 10, 200, 0.01)
        return Tagged(**dataclasses.asdict(cert), samples_used=cert.n0 + cert.n)

    path = certify_dataset(smooth, data, 10, 200, 0.01, tmp_path / "x.tsv", max_examples=3, progress=False,
                           certify_fn=certify_fn, extra_columns=["samples_used"])
    log = read_log(path)
    assert list(log.columns) == list(LOG_COLUMNS) + ["samples_used"]
    assert (log["samples_used"] == 210).all()


def test_resuming_with_other_columns_is_refused(setup, tmp_path):
    clf, data = setup
    path = tmp_path / "log.tsv"
    path.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
    with pytest.raises(ValueError, match="columns"):
        run(clf, data, path)


def test_select_indices():
    assert select_indices(10, skip=3) == [0, 3, 6, 9]
    assert select_indices(10, skip=3, max_examples=2) == [0, 3]
    assert select_indices(10, shard="1/2") == [1, 3, 5, 7, 9]
    with pytest.raises(ValueError, match="shard"):
        select_indices(10, shard=(2, 2))
    with pytest.raises(ValueError, match="shard"):
        select_indices(10, shard="half")
