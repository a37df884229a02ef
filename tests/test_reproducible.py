"""Reproducible anywhere: the seed offset, run keys, resumable experiments, fail-fast parameters, claims."""

import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from rsbook.claims import ClaimFailed, Claims, binomial_se, certified_at, paired_difference, per_example_radius
from rsbook.experiment import TrainConfig, expand_grid, run_key, shard_configs, train_run
from rsbook.params import check_overrides, check_parameters, list_of, positive_float
from rsbook.train import GaussianAugmentation, Objective, fit, register_objective
from rsbook.utils import progress_bar, training_seed

REPO = Path(__file__).resolve().parents[1]
TINY = dict(dataset="toy2d", arch="toy_mlp", sigma=0.1, epochs=2, batch_size=256, lr=0.05)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_seed_offset_changes_training_and_only_training(monkeypatch):
    from rsbook.data import get_dataset
    from rsbook.models import get_model

    data = get_dataset("toy2d", "train")

    def trained():
        torch.manual_seed(0)
        model = get_model("toy_mlp", "toy2d")
        fit(model, data, GaussianAugmentation(0.1), 1, batch_size=256, lr=0.05, device="cpu", progress=False)
        return _weights(model)

    monkeypatch.delenv("RSBOOK_SEED_OFFSET", raising=False)
    base, again = trained(), trained()
    assert torch.equal(base, again)
    monkeypatch.setenv("RSBOOK_SEED_OFFSET", "1000")
    assert training_seed(3) == 1003
    assert not torch.equal(base, trained())
    monkeypatch.setenv("RSBOOK_SEED_OFFSET", "x")
    with pytest.raises(ValueError, match="RSBOOK_SEED_OFFSET"):
        training_seed(0)


def test_make_test_trains_with_the_offset():
    makefile = (REPO / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "RSBOOK_SEED_OFFSET=$(TEST_SEED_OFFSET)" in test_recipe and "--nbval-lax" in test_recipe
    assert "TEST_SEED_OFFSET ?= " in makefile and "TEST_SEED_OFFSET ?= 0" not in makefile


def test_run_key_changes_with_every_setting(monkeypatch):
    monkeypatch.delenv("RSBOOK_SEED_OFFSET", raising=False)
    base = TrainConfig(**TINY)
    changes = {"dataset": "digits", "arch": "digits_cnn", "objective": "smoothadv", "sigma": 0.2, "num_noise": 2,
               "objective_args": {"epsilon": 0.1}, "noise": {"family": "gaussian"}, "epochs": 3, "batch_size": 128,
               "batch_counts": "noisy", "lr": 0.1, "momentum": 0.8, "weight_decay": 0.0, "schedule": "step",
               "step_size": 5, "gamma": 0.5, "warmup_epochs": 1, "label_smoothing": 0.1, "seed": 1}
    from dataclasses import fields

    assert set(changes) == {f.name for f in fields(TrainConfig)}, "every field must be covered"
    keys = {run_key(base)} | {run_key(base.replace(**{k: v})) for k, v in changes.items()}
    assert len(keys) == len(changes) + 1
    monkeypatch.setenv("RSBOOK_SEED_OFFSET", "1000")
    assert run_key(base) not in keys and "seed1000" in run_key(base)


class _Interrupt(RuntimeError):
    pass


@register_objective("_test_interrupting")
class _Interrupting(GaussianAugmentation):
    """Gaussian augmentation that dies once at the start of epoch 1 (a killed job)."""

    fired = False

    def start_epoch(self, epoch, epochs):
        if epoch == 1 and not _Interrupting.fired:
            _Interrupting.fired = True
            raise _Interrupt


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    monkeypatch.delenv("RSBOOK_SEED_OFFSET", raising=False)
    clean = train_run(TrainConfig(**TINY), tmp_path / "clean", device="cpu", progress=False)
    config = TrainConfig(**{**TINY, "objective": "_test_interrupting"})
    with pytest.raises(_Interrupt):
        train_run(config, tmp_path / "killed", device="cpu", progress=False)
    resumed = train_run(config, tmp_path / "killed", device="cpu", progress=False)
    assert torch.equal(_weights(clean.model), _weights(resumed.model))
    saved = json.loads((resumed.dir / "config.json").read_text())
    assert saved["objective"] == "_test_interrupting" and saved["effective_seed"] == 0
    # a finished run is loaded, not retrained
    again = train_run(config, tmp_path / "killed", device="cpu", progress=False)
    assert again.history == resumed.history


def test_certification_logs_are_keyed_by_their_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("RSBOOK_SEED_OFFSET", raising=False)
    run = train_run(TrainConfig(**TINY), tmp_path, device="cpu", progress=False)
    a = run.certify(n0=10, n=50, alpha=0.01, max_examples=4, progress=False)
    assert a == run.certify(n0=10, n=50, alpha=0.01, max_examples=4, progress=False)  # resumes the same log
    others = {run.certify(n0=10, n=60, alpha=0.01, max_examples=4, progress=False),
              run.certify(n0=10, n=50, alpha=0.02, max_examples=4, progress=False),
              run.certify(n0=10, n=50, alpha=0.01, max_examples=4, noise=0.2, progress=False),
              run.certify(n0=20, n=50, alpha=0.01, max_examples=4, progress=False)}
    assert a not in others and len(others) == 4
    with pytest.raises(ValueError, match="valid choices"):
        run.certify(n0=10, n=50, alpha=0.01, certifier="magic")
    # an explicitly passed dataset is named by its content, so a rerun (new object) resumes the same log
    from rsbook.data import get_dataset

    b = run.certify(get_dataset("toy2d", "test"), n0=10, n=50, alpha=0.01, max_examples=4, progress=False)
    assert b == run.certify(get_dataset("toy2d", "test"), n0=10, n=50, alpha=0.01, max_examples=4, progress=False)
    assert b != run.certify(get_dataset("toy2d", "train"), n0=10, n=50, alpha=0.01, max_examples=4, progress=False)


def test_grid_expansion_and_sharding():
    base = TrainConfig(**{**TINY, "objective": "smoothadv"})
    grid = expand_grid(base, {"sigma": [0.1, 0.2], "epsilon": [0.5, 1.0], "num_noise": [1]})
    assert [(c.sigma, c.objective_args["epsilon"]) for c in grid] == [(0.1, 0.5), (0.1, 1.0), (0.2, 0.5), (0.2, 1.0)]
    parts = [shard_configs(grid, f"{i}/3") for i in range(3)]
    assert sorted(run_key(c) for p in parts for c in p) == sorted(run_key(c) for c in grid)
    with pytest.raises(ValueError, match="non-empty list"):
        expand_grid(base, {"sigma": 0.1})


@pytest.mark.parametrize("bad, message", [
    (dict(sigma=-1), "sigma=-1"), (dict(sigmas=0.5), "must be a list"), (dict(sigmas=[0.5, -1]), r"sigmas\[1\]"),
    (dict(alpha=1.0), "open interval"), (dict(n=0), "integer >= 1"), (dict(dataset="mnist"), "valid choices"),
    (dict(arch="resnet"), "valid choices"), (dict(schedule="cosin"), "did you mean 'cosine'"),
    (dict(device="gpu"), "valid choices")])
def test_check_parameters_names_the_bad_value(bad, message):
    with pytest.raises(ValueError, match=message):
        check_parameters(bad)
    check_parameters({"sigmas": [0.25], "alpha": 0.001, "unrelated": object()})  # names without a rule are ignored
    with pytest.raises(ValueError, match=r"lambdas\[0\]"):
        check_parameters({"lambdas": [-0.1]}, extra={"lambdas": list_of(positive_float)})


def _parameter_notebook(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("sigmas = [0.25, 0.5]\nalpha = 0.001\nmarker = 'ran'\ndata_root = None")
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("open('ran.txt', 'w').write(marker)")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_runner_rejects_typos_and_wrong_types_before_running_a_cell(tmp_path):
    from rsbook.runner import run_notebook

    nb = _parameter_notebook(tmp_path)
    with pytest.raises(ValueError, match="unknown parameter 'sigmaz'.*did you mean 'sigmas'"):
        run_notebook(nb, overrides={"sigmaz": 0.5}, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="sigmas=-1 is invalid: must be a list, got number"):
        run_notebook(nb, overrides={"sigmas": -1}, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="alpha=2"):
        run_notebook(nb, overrides={"alpha": 2}, run_dir=tmp_path / "run")
    assert not (tmp_path / "ran.txt").exists() and not (tmp_path / "run").exists()
    merged = check_overrides(nb, {"data_root": "/data", "sigmas": [1.0]})
    assert merged["sigmas"] == [1.0] and merged["alpha"] == 0.001


def test_cli_run_reports_a_typo(tmp_path, capsys):
    from rsbook.cli import main

    nb = _parameter_notebook(tmp_path)
    assert main(["run", str(nb), "-p", "sigmaz=0.5", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'sigmaz'" in err and "valid names: alpha, data_root, marker, sigmas" in err


def test_progress_bar_prints_one_line_in_a_notebook_kernel(monkeypatch, capsys):
    monkeypatch.setenv("RSBOOK_PROGRESS", "final")
    bar = progress_bar(range(500), desc="certify x", total=500)
    for _ in bar:
        bar.set_postfix(acc="0.9")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "certify x: 500/500 done" in err and "acc=0.9" in err
    monkeypatch.setenv("RSBOOK_PROGRESS", "off")
    list(progress_bar(range(5), desc="quiet"))
    assert capsys.readouterr().err == ""


def _log(tmp_path, name, radii, correct):
    path = tmp_path / f"{name}.tsv"
    rows = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    rows += [f"{i}\t0\t0\t{r}\t{c}\t0.1" for i, (r, c) in enumerate(zip(radii, correct))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_claims_detect_real_differences_and_refuse_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 400)
    better = _log(tmp_path, "better", base + 0.1, np.ones(400, int))
    same = _log(tmp_path, "same", base + rng.normal(0, 0.05, 400), np.ones(400, int))
    ref = _log(tmp_path, "ref", base, np.ones(400, int))
    diff, se = paired_difference(per_example_radius(better), per_example_radius(ref))
    assert diff == pytest.approx(0.1) and se < 1e-9
    checks = Claims("demo")
    assert checks.paired("better beats ref", per_example_radius(better), per_example_radius(ref))
    assert not checks.paired("noise beats ref", per_example_radius(same), per_example_radius(ref))
    assert checks.paired("noise is no worse", per_example_radius(same), per_example_radius(ref), direction="not_less")
    assert checks.at_least("accuracy", 0.93, 0.95, se=binomial_se(0.93, 360))
    assert not checks.within("paper", 0.5, 0.6, 0.05, why="2 SE")
    with pytest.raises(ClaimFailed, match="noise beats ref.*paper"):
        checks.report()
    wrong = _log(tmp_path, "wrong", [1.0, 1.0], [1, 0])
    assert per_example_radius(wrong).tolist() == [1.0, 0.0]
    assert certified_at(wrong, 1.0).tolist() == [1.0, 0.0] and certified_at(wrong, 1.01).tolist() == [0.0, 0.0]
    assert binomial_se(1.0, 100) == pytest.approx(0.01)


def test_a_given_checkpoint_becomes_a_resumable_run(tmp_path, monkeypatch):
    from rsbook.experiment import checkpoint_run

    monkeypatch.delenv("RSBOOK_SEED_OFFSET", raising=False)
    trained = train_run(TrainConfig(**TINY), tmp_path / "train", device="cpu", progress=False)
    run = checkpoint_run(trained.checkpoint, tmp_path / "given", 0.1, dataset="toy2d", device="cpu")
    assert torch.equal(_weights(run.model), _weights(trained.model)) and run.config.arch == "toy_mlp"
    log = run.certify(n0=10, n=50, alpha=0.01, max_examples=4, progress=False)
    again = checkpoint_run(trained.checkpoint, tmp_path / "given", 0.1, device="cpu")
    assert again.dir == run.dir and again.certify(n0=10, n=50, alpha=0.01, max_examples=4, progress=False) == log
    with pytest.raises(ValueError, match="trained on 'toy2d', not 'digits'"):
        checkpoint_run(trained.checkpoint, tmp_path / "given", 0.1, dataset="digits", device="cpu")
