"""The command line, end to end, including a full-scale notebook preset on a tiny CIFAR-10 fixture."""

import json
import re
from pathlib import Path

import pytest

from rsbook.analysis import read_log
from rsbook.certify import settings_path
from rsbook.cli import main
from rsbook.runner import list_presets, load_parameters, parse_overrides

REPO = Path(__file__).resolve().parents[1]


def test_train_certify_shard_merge_analyze(tmp_path, capsys):
    ckpt = tmp_path / "m.pth"
    assert main(["train", "--dataset", "toy2d", "--arch", "toy_mlp", "--sigma", "0.05", "--epochs", "2",
                 "--batch-size", "128", "--lr", "0.05", "--out", str(ckpt)]) == 0
    for i in range(2):
        assert main(["certify", "--checkpoint", str(ckpt), "--sigma", "0.05", "--n0", "10", "--n", "100",
                     "--max", "10", "--shard", f"{i}/2", "--out", str(tmp_path / f"c{i}.tsv")]) == 0
    assert main(["merge", str(tmp_path / "all.tsv"), str(tmp_path / "c0.tsv"), str(tmp_path / "c1.tsv")]) == 0
    assert read_log(tmp_path / "all.tsv")["idx"].tolist() == list(range(10))
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "all.tsv"), "--radii", "0", "0.1"]) == 0
    assert "ACR" in capsys.readouterr().out


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--arch", "digits_cnn", "--sigma", "0.5", "--out", "x"]) == 2
    assert "valid choices" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--arch", "digits_cnn", "--sigma", "0.5", "--out", "x",
                 "--objective", "magic"]) == 2
    assert "unknown objective 'magic'" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_text("garbage")
    assert main(["certify", "--checkpoint", str(bad), "--sigma", "0.5", "--out", str(tmp_path / "l.tsv")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_presets_and_overrides():
    nb = REPO / "notebooks" / "00_randomized_smoothing.ipynb"
    assert {"cifar10_resnet110", "imagenet_resnet50", "tiny_cifar10"} <= set(list_presets(nb))
    assert load_parameters(nb, "cifar10_resnet110")["n"] == 100_000
    with pytest.raises(ValueError, match="unknown preset 'nope'.*valid choices: cifar10_resnet110"):
        load_parameters(nb, "nope")
    assert parse_overrides(["sigmas=[0.25, 0.5]", "n=10", "data_root=null"]) == {
        "sigmas": [0.25, 0.5], "n": 10, "data_root": None}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["oops"])


@pytest.mark.slow
def test_full_scale_preset_runs_on_a_tiny_cifar10_fixture(tiny_cifar10, tmp_path):
    """`python -m rsbook run ... --preset` exercises the CIFAR-10 loader, a CIFAR ResNet and the logs."""
    run_dir = tmp_path / "run"
    assert main(["run", str(REPO / "notebooks" / "00_randomized_smoothing.ipynb"), "--preset", "tiny_cifar10",
                 "-p", f"data_root={tiny_cifar10}", "--run-dir", str(run_dir)]) == 0
    executed = json.loads((run_dir / "00_randomized_smoothing.ipynb").read_text())
    assert not any(o.get("output_type") == "error" for c in executed["cells"] for o in c.get("outputs", []))
    (model_dir,) = run_dir.glob("gaussian-cifar10-cifar_resnet20-s0.25-*")  # the run key of the one model
    (log,) = model_dir.glob("certify-n50-*.tsv")
    assert read_log(log)["idx"].tolist() == [0, 1, 2, 3]
    assert (model_dir / "model.pth").exists() and (model_dir / "config.json").exists()
    assert (run_dir / "parameters.yaml").exists()


def test_train_with_the_smoothadv_objective(tmp_path):
    ckpt = tmp_path / "adv.pth"
    assert main(["train", "--dataset", "toy2d", "--arch", "toy_mlp", "--sigma", "0.05", "--epochs", "1",
                 "--objective", "smoothadv", "--num-noise", "2", "--objective-arg", "epsilon=0.05",
                 "--objective-arg", "steps=2", "--objective-arg", "attack=ddn", "--batch-size", "256",
                 "--out", str(ckpt)]) == 0
    from rsbook.models import load_checkpoint

    assert load_checkpoint(ckpt)[1]["objective"] == "smoothadv_ddn"


def test_slurm_shards_and_status(tmp_path, monkeypatch, capsys):
    from rsbook.cli import resolve_shard
    from rsbook.models import get_model, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pth", get_model("toy_mlp", "toy2d"), "toy_mlp", "toy2d")
    logs = [tmp_path / f"c{i}.tsv" for i in (1, 2)]
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")  # sbatch --array=1-2
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert resolve_shard("auto") == (0, 2)
    assert main(["certify", "--checkpoint", str(ckpt), "--sigma", "0.1", "--n0", "5", "--n", "20", "--skip", "3",
                 "--max", "7", "--shard", "auto", "--out", str(logs[0])]) == 0
    assert read_log(logs[0])["idx"].tolist() == [0, 6, 12, 18]
    capsys.readouterr()
    status = ["status", str(logs[0]), "--dataset", "toy2d", "--skip", "3", "--max", "7"]
    assert main(status) == 1
    assert "done: 4/7" in capsys.readouterr().out
    # shard 2 killed while writing its second row (certify writes the settings record before any row)
    logs[1].write_text(logs[0].read_text().splitlines()[0] + "\n3\t0\t0\t0.1\t1\t0.0\t20\t20\t0.9\t5\n9\t0")
    record = json.loads(settings_path(logs[0]).read_text())
    record["selection"]["shard"] = [1, 2]
    settings_path(logs[1]).write_text(json.dumps(record))
    assert main(status[:2] + [str(logs[1])] + status[2:]) == 1
    assert "missing (2): 9, 15" in capsys.readouterr().out  # the row of 9 is half-written: not done
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert main(["certify", "--checkpoint", str(ckpt), "--sigma", "0.1", "--n0", "5", "--n", "20", "--skip", "3",
                 "--max", "7", "--shard", "auto", "--out", str(logs[1])]) == 0
    capsys.readouterr()
    assert main(status[:2] + [str(logs[1])] + status[2:]) == 0
    assert "complete" in capsys.readouterr().out
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID is not set"):
        resolve_shard("auto")
    assert resolve_shard("1/3") == (1, 3) and resolve_shard(None) is None


def test_certify_at_lower_precision_and_benchmark_command(tmp_path, capsys):
    from rsbook.models import get_model, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pth", get_model("toy_mlp", "toy2d"), "toy_mlp", "toy2d")
    assert main(["certify", "--checkpoint", str(ckpt), "--sigma", "0.1", "--n0", "5", "--n", "20", "--max", "2",
                 "--precision", "bfloat16", "--out", str(tmp_path / "c.tsv")]) == 0
    assert len(read_log(tmp_path / "c.tsv")) == 2
    capsys.readouterr()
    assert main(["benchmark", "--arch", "toy_mlp", "--dataset", "toy2d", "--n", "100", "--n0", "10",
                 "--batch-size", "100", "--rounds", "1", "--precision", "float32", "bfloat16",
                 "--disagreement-inputs", "2", "--disagreement-n", "100"]) == 0
    out = capsys.readouterr().out
    assert "certify/raw" in out and "bfloat16" in out and "disagree vs fp32" in out


def _train_args(tmp_path, objective, *extra):
    return ["train", "--dataset", "toy2d", "--arch", "toy_mlp", "--sigma", "0.1", "--epochs", "1",
            "--batch-size", "256", "--objective", objective, "--out", str(tmp_path / f"{objective}.pth"), *extra]


def test_every_registered_objective_trains_or_names_the_option_it_needs(tmp_path, capsys):
    """Only the required options: train, or a one-line error naming the missing --objective-arg and its meaning."""
    from rsbook.train import OBJECTIVES

    outcomes = {}
    for name in sorted(OBJECTIVES):
        code = main(_train_args(tmp_path, name))
        err = capsys.readouterr().err.strip()
        outcomes[name] = code
        if code != 0:
            assert code == 2 and len(err.splitlines()) == 1, (name, err)
            assert re.search(r"needs --objective-arg \w+=VALUE \(.{10,}\)", err), (name, err)
    assert outcomes["smoothadv"] == 2 and outcomes["catrs"] == 2 and outcomes["gaussian"] == 0
    # the options the errors name are enough
    assert main(_train_args(tmp_path, "smoothadv", "--objective-arg", "epsilon=0.1")) == 0
    assert main(_train_args(tmp_path, "catrs", "--objective-arg", "targets=self")) == 0


def test_an_option_the_method_does_not_take_is_refused_with_the_ones_it_takes(tmp_path, capsys):
    from rsbook.train import OBJECTIVES

    for name in sorted(OBJECTIVES):
        assert main(_train_args(tmp_path, name, "--objective-arg", "bogus=1")) == 2
        err = capsys.readouterr().err
        assert f"objective '{name}' takes no --objective-arg 'bogus'; the ones it takes:" in err, err
    assert main(_train_args(tmp_path, "smoothadv", "--objective-arg", "epsilon=0.1", "--objective-arg", "chunk=2",
                            "--objective-arg", "bogus=1")) == 2
    assert "attack, chunk, clip, epsilon, step_size, steps, warmup_epochs" in capsys.readouterr().err
    ckpt = tmp_path / "gaussian.pth"
    assert main(_train_args(tmp_path, "gaussian")) == 0
    certify = ["certify", "--checkpoint", str(ckpt), "--sigma", "0.1", "--n0", "10", "--n", "50", "--max", "2",
               "--out", str(tmp_path / "c.tsv")]
    capsys.readouterr()
    assert main(certify + ["--certifier-arg", "grid=5"]) == 2
    assert "certifier 'certify' takes no --certifier-arg 'grid'; the ones it takes: none" in capsys.readouterr().err
    assert main(certify + ["--certifier", "t_certify", "--certifier-arg", "gird=5"]) == 2
    assert "the ones it takes: combine, fraction, grid, variant" in capsys.readouterr().err
    assert main(certify + ["--certifier", "t_certify", "--certifier-arg", "grid=5"]) == 0
    assert main(certify + ["--noise-arg", "k=3"]) == 2
    assert "gaussian noise family takes no --noise-arg" in capsys.readouterr().err
    assert main(certify + ["--noise", "norm_power", "--noise-arg", "power=2", "--noise-arg", "k=1"]) == 2
    assert "takes no --noise-arg 'power'; the ones it takes: k, matched" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "c.tsv")]) == 0


def test_a_missing_dataset_names_the_command_line_option(tmp_path, capsys):
    assert main(["train", "--dataset", "cifar10", "--arch", "cifar_resnet20", "--sigma", "0.25", "--epochs", "1",
                 "--out", str(tmp_path / "m.pth"), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pass --data-root DIR" in err and "root=" not in err and "download=True" not in err
