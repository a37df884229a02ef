"""The command line, end to end, including a full-scale notebook preset on a tiny CIFAR-10 fixture."""

import json
from pathlib import Path

import pytest

from rsbook.analysis import read_log
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
    log = read_log(run_dir / "cifar10_cifar_resnet20_sigma0.25_n50.tsv")
    assert log["idx"].tolist() == [0, 1, 2, 3]
    assert (run_dir / "cifar10_cifar_resnet20_sigma0.25.pth").exists()
    assert (run_dir / "parameters.yaml").exists()


def test_train_with_the_smoothadv_objective(tmp_path):
    ckpt = tmp_path / "adv.pth"
    assert main(["train", "--dataset", "toy2d", "--arch", "toy_mlp", "--sigma", "0.05", "--epochs", "1",
                 "--objective", "smoothadv", "--num-noise", "2", "--objective-arg", "epsilon=0.05",
                 "--objective-arg", "steps=2", "--objective-arg", "attack=ddn", "--batch-size", "256",
                 "--out", str(ckpt)]) == 0
    from rsbook.models import load_checkpoint

    assert load_checkpoint(ckpt)[1]["objective"] == "smoothadv_ddn"
