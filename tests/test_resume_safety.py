"""A resumed run never mixes settings, and every bad command-line input is a one-line error (exit status 2)."""

import json
from pathlib import Path

import pytest
import torch

from rsbook.analysis import read_log
from rsbook.certify import read_settings, settings_path
from rsbook.cli import main

REPO = Path(__file__).resolve().parents[1]
PRIMER = str(REPO / "notebooks" / "00_randomized_smoothing.ipynb")


def run_cli(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``rsbook argv`` in this process (an exception is a traceback: it fails)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:  # argparse
        code = err.code
    out, err = capsys.readouterr()
    return code, out, err


def _error(code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("rsbook") and "error:" in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from rsbook.models import get_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("m") / "m.pth", get_model("toy_mlp", "toy2d"), "toy_mlp", "toy2d")


def _certify(model_file, out, *extra):
    return ["certify", "--checkpoint", model_file, "--n0", "5", "--out", out, *extra]


# ------------------------------------------------------------------- certification logs know what made them
def test_a_resume_with_other_settings_is_refused_and_the_log_untouched(model_file, tmp_path, capsys):
    log = tmp_path / "a.tsv"
    assert run_cli(_certify(model_file, log, "--sigma", "0.25", "--n", "100", "--max", "5"), capsys)[0] == 0
    before = log.read_text()
    line = _error(*run_cli(_certify(model_file, log, "--sigma", "0.5", "--n", "50", "--max", "8"), capsys)[::2])
    assert "n: 100 in the log vs 50 now" in line and "Gaussian(sigma=0.25)" in line and "Gaussian(sigma=0.5)" in line
    line = _error(*run_cli(_certify(model_file, log, "--sigma", "0.25", "--n", "100", "--split", "train",
                                    "--skip", "2", "--noise", "norm_power", "--noise-arg", "k=1"), capsys)[::2])
    assert "split: 'test' in the log vs 'train' now" in line and "norm_power" not in line or "NormPower" in line
    assert log.read_text() == before
    # the same settings resume it, and a larger --max extends it
    assert run_cli(_certify(model_file, log, "--sigma", "0.25", "--n", "100", "--max", "8"), capsys)[0] == 0
    assert read_log(log)["idx"].tolist() == list(range(8))
    record = read_settings(log)
    assert record["selection"]["max_examples"] == 8 and record["settings"]["n"] == 100
    assert record["settings"]["split"] == "test" and record["settings"]["noise"] == "Gaussian(sigma=0.25)"
    # another selection is another run
    line = _error(*run_cli(_certify(model_file, log, "--sigma", "0.25", "--n", "100", "--skip", "2"), capsys)[::2])
    assert "skip=1" in line and "skip=2" in line
    # another model is another run
    from rsbook.models import get_model, save_checkpoint

    other = save_checkpoint(tmp_path / "other.pth", get_model("toy_mlp", "toy2d"), "toy_mlp", "toy2d")
    line = _error(*run_cli(_certify(other, log, "--sigma", "0.25", "--n", "100", "--max", "8"), capsys)[::2])
    assert "model:" in line


def test_a_log_without_a_record_is_neither_resumed_nor_mixed(model_file, tmp_path, capsys):
    log = tmp_path / "old.tsv"
    assert run_cli(_certify(model_file, log, "--sigma", "0.25", "--n", "100", "--max", "3"), capsys)[0] == 0
    settings_path(log).unlink()  # as written by an older rsbook
    assert len(read_log(log)) == 3  # old logs still read
    assert run_cli(["analyze", log], capsys)[0] == 0
    line = _error(*run_cli(_certify(model_file, log, "--sigma", "0.25", "--n", "100", "--max", "5"), capsys)[::2])
    assert "no settings record" in line


def test_merge_and_status_refuse_shards_of_different_runs(model_file, tmp_path, capsys):
    a, b = tmp_path / "s0.tsv", tmp_path / "s1.tsv"
    assert run_cli(_certify(model_file, a, "--sigma", "0.25", "--n", "100", "--max", "6", "--shard", "0/2"),
                   capsys)[0] == 0
    assert run_cli(_certify(model_file, b, "--sigma", "0.25", "--n", "50", "--max", "6", "--shard", "1/2"),
                   capsys)[0] == 0
    line = _error(*run_cli(["merge", tmp_path / "all.tsv", a, b], capsys)[::2])
    assert "n: 100" in line and "50" in line and not (tmp_path / "all.tsv").exists()
    line = _error(*run_cli(["status", a, b], capsys)[::2])
    assert "other settings" in line
    # the matching shard merges, and the merged log keeps the record of the whole run
    assert run_cli(_certify(model_file, b, "--sigma", "0.25", "--n", "100", "--max", "6", "--shard", "1/2"),
                   capsys)[0] == 2  # b is still the n = 50 shard: refused
    b.unlink()
    settings_path(b).unlink()
    assert run_cli(_certify(model_file, b, "--sigma", "0.25", "--n", "100", "--max", "6", "--shard", "1/2"),
                   capsys)[0] == 0
    code, out, _ = run_cli(["status", a, b], capsys)  # length and selection come from the records
    assert code == 0 and "done: 6/6" in out
    assert _error(*run_cli(["status", a, b, "--max", "7"], capsys)[::2])
    assert run_cli(["merge", tmp_path / "all.tsv", a, b], capsys)[0] == 0
    merged = read_settings(tmp_path / "all.tsv")
    assert merged["selection"]["shard"] is None and merged["settings"]["n"] == 100


def test_merge_of_unrecorded_logs_refuses_a_visibly_different_n(tmp_path, capsys):
    header = "idx\tlabel\tpredict\tradius\tcorrect\ttime\tcount\tn\tp_lower\tn0\n"
    (tmp_path / "x.tsv").write_text(header + "0\t1\t1\t0.5\t1\t0.1\t990\t1000\t0.9\t100\n")
    (tmp_path / "y.tsv").write_text(header + "1\t1\t1\t0.5\t1\t0.1\t490\t500\t0.9\t100\n")
    line = _error(*run_cli(["merge", tmp_path / "m.tsv", tmp_path / "x.tsv", tmp_path / "y.tsv"], capsys)[::2])
    assert "different n" in line


# ------------------------------------------------------------------------------------------ analyze
def test_analyze_keys_by_path_ignores_a_partial_line_and_refuses_duplicates(model_file, tmp_path, capsys):
    a, b = tmp_path / "a" / "full.tsv", tmp_path / "b" / "full.tsv"
    assert run_cli(_certify(model_file, a, "--sigma", "0.25", "--n", "100", "--max", "4"), capsys)[0] == 0
    assert run_cli(_certify(model_file, b, "--sigma", "0.5", "--n", "100", "--max", "4"), capsys)[0] == 0
    code, out, _ = run_cli(["analyze", a, b], capsys)
    assert code == 0 and str(a) in out and str(b) in out
    with open(a, "a") as fh:
        fh.write("4\t1\t")  # certify is still writing this row
    with pytest.warns(UserWarning, match="no newline yet"):  # printed as "rsbook analyze: warning: ..."
        code, out, err = run_cli(["analyze", a], capsys)
    assert code == 0 and "Traceback" not in err
    with pytest.warns(UserWarning):
        assert len(read_log(a)) == 4
    dup = tmp_path / "dup.tsv"
    lines = b.read_text().splitlines()
    dup.write_text("\n".join(lines + lines[1:2]) + "\n")
    assert "more than once" in _error(*run_cli(["analyze", dup], capsys)[::2])


# ------------------------------------------------------------------------ checkpoints know what made them
def _train(out, *extra, epochs="2", schedule="step"):
    return ["train", "--dataset", "toy2d", "--arch", "toy_mlp", "--sigma", "0.1", "--epochs", epochs,
            "--batch-size", "256", "--lr", "0.05", "--schedule", schedule, "--step-size", "1", "--gamma", "0.5",
            "--out", out, *extra]


def test_a_resumed_training_run_is_the_same_run_or_refused(tmp_path, capsys):
    ckpt = tmp_path / "r.pt"
    assert run_cli(_train(ckpt), capsys)[0] == 0
    for extra in (["--sigma", "0.2"], ["--lr", "0.1"], ["--schedule", "constant"], ["--objective", "stability"],
                  ["--seed", "1"], ["--gamma", "0.9"]):
        args = _train(ckpt)
        for flag, value in zip(extra[::2], extra[1::2]):  # replace, not append
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        line = _error(*run_cli(args, capsys)[::2])
        assert "another training run" in line, (extra, line)
    # another architecture: one line, no size-mismatch traceback
    line = _error(*run_cli(["train", "--dataset", "digits", "--arch", "digits_cnn", "--sigma", "0.1", "--epochs", "2",
                            "--out", ckpt], capsys)[::2])
    assert "arch: 'toy_mlp' in the checkpoint vs 'digits_cnn' now" in line


def test_extending_a_step_schedule_equals_the_uninterrupted_run_and_cosine_is_refused(tmp_path, capsys):
    from rsbook.models import load_checkpoint

    short, full = tmp_path / "short.pt", tmp_path / "full.pt"
    assert run_cli(_train(short, epochs="2"), capsys)[0] == 0
    assert run_cli(_train(short, epochs="4"), capsys)[0] == 0  # extended
    assert run_cli(_train(full, epochs="4"), capsys)[0] == 0
    (_, a), (_, b) = load_checkpoint(short), load_checkpoint(full)
    assert [h["lr"] for h in a["history"]] == [h["lr"] for h in b["history"]] == [0.025, 0.0125, 0.00625, 0.003125]
    assert [h["epochs"] for h in a["history"]] == [2, 2, 4, 4]  # the history says it was extended
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
    cosine = tmp_path / "cos.pt"
    assert run_cli(_train(cosine, epochs="2", schedule="cosine"), capsys)[0] == 0
    line = _error(*run_cli(_train(cosine, epochs="4", schedule="cosine"), capsys)[::2])
    assert "cosine schedule over 2 epochs" in line


def test_a_checkpoint_without_training_settings_is_not_resumed(tmp_path, capsys, model_file):
    import shutil

    ckpt = tmp_path / "legacy.pt"
    shutil.copy(model_file, ckpt)
    state = torch.load(ckpt, weights_only=True)
    from rsbook.models import get_model

    optim = torch.optim.SGD(get_model("toy_mlp", "toy2d").parameters(), lr=0.05)
    state.update(epoch=0, optimizer=optim.state_dict(), scheduler={}, history=[])
    torch.save(state, ckpt)
    line = _error(*run_cli(_train(ckpt), capsys)[::2])
    assert "older rsbook without its training settings" in line


# ------------------------------------------------------------------------- bad input: a one-line error
def _bad_inputs(tmp_path, model_file):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a log\n")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("sigmas: [0.25,\nn: 3\n")
    not_launch = tmp_path / "launch.json"
    not_launch.write_text(json.dumps({"config": {"dataset": "digits"}}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("garbage")
    train = ["train", "--dataset", "toy2d", "--arch", "toy_mlp", "--sigma", "0.1", "--out", tmp_path / "t.pt"]
    cert = ["certify", "--checkpoint", model_file, "--sigma", "0.25", "--out", tmp_path / "c.tsv"]
    run = ["run", PRIMER, "--run-dir", tmp_path / "never"]
    plan = ["plan", PRIMER, "--no-calibration"]
    bench = ["benchmark", "--n", "100", "--rounds", "1"]
    return {
        # train
        "train --epochs 0": train + ["--epochs", "0"], "train --epochs -1": train + ["--epochs", "-1"],
        "train --epochs two": train + ["--epochs", "two"], "train --batch-size 0": train + ["--batch-size", "0"],
        "train --lr 0": train + ["--lr", "0"], "train --lr -1": train + ["--lr", "-1"],
        "train --momentum -1": train + ["--momentum", "-1"], "train --weight-decay -1": train + ["--weight-decay", "-1"],
        "train --step-size 0": train + ["--step-size", "0"], "train --gamma -1": train + ["--gamma", "-1"],
        "train --gamma 0": train + ["--gamma", "0"], "train --gamma 2": train + ["--gamma", "2"],
        "train --sigma 0": train + ["--sigma", "0"], "train --sigma nan": train + ["--sigma", "nan"],
        "train --num-noise 0": train + ["--num-noise", "0"], "train --workers -1": train + ["--workers", "-1"],
        "train --seed -1": train + ["--seed", "-1"], "train --schedule cosin": train + ["--schedule", "cosin"],
        "train --dataset mnist": ["train", "--dataset", "mnist", "--arch", "toy_mlp", "--sigma", "0.1", "--out",
                                  tmp_path / "t.pt"],
        "train --arch vgg": ["train", "--dataset", "toy2d", "--arch", "vgg", "--sigma", "0.1", "--out", tmp_path / "t.pt"],
        "train --arch digits_cnn on toy2d": ["train", "--dataset", "toy2d", "--arch", "digits_cnn", "--sigma", "0.1",
                                             "--out", tmp_path / "t.pt"],
        "train --objective magic": train + ["--objective", "magic"],
        "train --device cuda (none here)": train + ["--device", "cuda"] if not torch.cuda.is_available() else
        train + ["--device", "cuda:99"],
        "train --device tpu": train + ["--device", "tpu"],
        "train --out <directory>": train[:-1] + [tmp_path],
        "train --out <file>/x.pt": train[:-1] + [a_file / "x.pt"],
        "train --objective-arg noequals": train + ["--objective-arg", "noequals"],
        "train --objective-arg bad YAML": train + ["--objective", "smoothadv", "--objective-arg", "epsilon=[1,"],
        "train --data-root for missing cifar10": ["train", "--dataset", "cifar10", "--arch", "cifar_resnet20",
                                                  "--sigma", "0.1", "--out", tmp_path / "t.pt", "--data-root",
                                                  tmp_path / "nodata"],
        # certify
        "certify --n 0": cert + ["--n", "0"], "certify --n0 0": cert + ["--n0", "0"],
        "certify --alpha 0": cert + ["--alpha", "0"], "certify --alpha 1": cert + ["--alpha", "1"],
        "certify --alpha 1.5": cert + ["--alpha", "1.5"], "certify --batch-size 0": cert + ["--batch-size", "0"],
        "certify --skip 0": cert + ["--skip", "0"], "certify --max 0": cert + ["--max", "0"],
        "certify --seed -1": cert + ["--seed", "-1"], "certify --sigma -1": cert + ["--sigma", "-1"],
        "certify --split val": cert + ["--split", "val"], "certify --shard 3/2": cert + ["--shard", "3/2"],
        "certify --shard x": cert + ["--shard", "x"], "certify --precision fp8": cert + ["--precision", "fp8"],
        "certify --out <directory>": cert[:-1] + [tmp_path],
        "certify --out <file>/x.tsv": cert[:-1] + [a_file / "x.tsv"],
        "certify --checkpoint missing": ["certify", "--checkpoint", tmp_path / "none.pth", "--sigma", "0.25",
                                         "--out", tmp_path / "c.tsv"],
        "certify --checkpoint <directory>": ["certify", "--checkpoint", tmp_path, "--sigma", "0.25", "--out",
                                             tmp_path / "c.tsv"],
        "certify --checkpoint garbage": ["certify", "--checkpoint", garbage, "--sigma", "0.25", "--out",
                                         tmp_path / "c.tsv"],
        "certify --device cuda (none here)": cert + ["--device", "cuda" if not torch.cuda.is_available() else "cuda:99"],
        "certify --dataset of another architecture": cert + ["--dataset", "digits"],
        "certify --certifier nope": cert + ["--certifier", "nope"],
        "certify --certifier-arg grid=5": cert + ["--certifier-arg", "grid=5"],
        "certify --noise laplace": cert + ["--noise", "laplace"],
        "certify --noise-arg k=3 (gaussian)": cert + ["--noise-arg", "k=3"],
        # merge / analyze / status
        "merge out <directory>": ["merge", tmp_path, a_file],
        "merge missing log": ["merge", tmp_path / "m.tsv", tmp_path / "none.tsv"],
        "merge a directory": ["merge", tmp_path / "m.tsv", tmp_path],
        "merge a non-log": ["merge", tmp_path / "m.tsv", a_file],
        "analyze .": ["analyze", tmp_path], "analyze missing": ["analyze", tmp_path / "none.tsv"],
        "analyze a non-log": ["analyze", a_file], "analyze --radii -1": ["analyze", a_file, "--radii", "-1"],
        "status a directory": ["status", tmp_path], "status missing": ["status", tmp_path / "none.tsv"],
        "status --length 0": ["status", a_file, "--length", "0"],
        # train-config
        "train-config missing": ["train-config", tmp_path / "none.json"],
        "train-config not JSON": ["train-config", a_file],
        "train-config JSON that is not a launch file": ["train-config", not_launch],
        # run / plan
        "run -p malformed YAML": run + ["-p", "sigmas=[0.25,"],
        "run --params malformed YAML": run + ["--params", bad_yaml],
        "run --params <directory>": run + ["--params", tmp_path],
        "run --params missing": run + ["--params", tmp_path / "none.yaml"],
        "run --kernel unknown": run + ["--kernel", "no-such-kernel"],
        "run -p dataset=cifar10 without the data": run + ["-p", "dataset=cifar10", "-p", "arch=cifar_resnet20",
                                                          "-p", f"data_root={tmp_path / 'nodata'}"],
        "run -p arch of another dataset": run + ["-p", "arch=resnet50"],
        "run --preset unknown": run + ["--preset", "nope"],
        "run -p unknown name": run + ["-p", "sigmaz=0.5"],
        "run missing notebook": ["run", tmp_path / "none.ipynb"],
        "plan -p malformed YAML": plan + ["-p", "n={"],
        "plan --params malformed YAML": plan + ["--params", bad_yaml],
        "plan --device cuda (none here)": ["plan", PRIMER, "--device", "cuda" if not torch.cuda.is_available()
                                           else "cuda:99"],
        "plan --calibration-seconds 0": plan + ["--calibration-seconds", "0"],
        # benchmark
        "benchmark --batch-size 0": bench + ["--batch-size", "0"], "benchmark --n 0": bench[:1] + ["--n", "0"],
        "benchmark --rounds 0": bench[:3] + ["--rounds", "0"],
        "benchmark --device cuda (none here)": bench + ["--device", "cuda" if not torch.cuda.is_available()
                                                        else "cuda:99"],
        "benchmark --checkpoint missing": bench + ["--checkpoint", tmp_path / "none.pth"],
        "benchmark --precision fp8": bench + ["--precision", "fp8"],
        "benchmark --dataset mnist": bench + ["--dataset", "mnist"],
        "benchmark --arch vgg": bench + ["--arch", "vgg"],
    }


def test_every_bad_input_is_a_one_line_error_before_work_starts(tmp_path, model_file, capsys):
    failures = []
    for name, argv in _bad_inputs(tmp_path, model_file).items():
        try:
            code, out, err = run_cli(argv, capsys)
        except Exception as exc:  # noqa: BLE001 -- a traceback: report every case, not just the first
            failures.append(f"{name}: raised {type(exc).__name__}: {exc}")
            capsys.readouterr()
            continue
        lines = [line for line in err.splitlines() if line.strip()]
        if code != 2 or len(lines) != 1 or "error:" not in lines[0]:
            failures.append(f"{name}: exit {code}, stderr {err[-300:]!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "never").exists() and not (tmp_path / "c.tsv").exists()
    assert not (tmp_path / "t.pt").exists()


def test_the_errors_name_the_option_and_the_valid_values(tmp_path, model_file, capsys):
    cases = _bad_inputs(tmp_path, model_file)

    def error(name):
        return _error(*run_cli(cases[name], capsys)[::2])

    assert "argument --step-size: must be >= 1, got '0'" in error("train --step-size 0")
    assert "argument --gamma: must be in (0, 1]" in error("train --gamma -1")
    assert "argument --batch-size: must be >= 1" in error("benchmark --batch-size 0")
    assert "is a directory" in error("certify --out <directory>")
    assert "is a file, not a directory" in error("certify --out <file>/x.tsv")
    assert "is a directory" in error("analyze .")
    assert "not a launch file" in error("train-config JSON that is not a launch file")
    assert "not valid YAML" in error("run -p malformed YAML") and "line" in error("run --params malformed YAML")
    assert "unknown Jupyter kernel 'no-such-kernel'; valid choices here: " in error("run --kernel unknown")
    device = error("certify --device cuda (none here)")
    assert "not available on this machine" in device and "corrupt" not in device
    assert "built for toy2d" in error("certify --dataset of another architecture")
    missing = error("run -p dataset=cifar10 without the data")
    assert "CIFAR-10 not found" in missing and "-p data_root=DIR" in missing
    assert "not built for dataset 'digits'" in error("run -p arch of another dataset")
    assert not (tmp_path / "never").exists()
