"""`rsbook plan`: counts checked by hand on the tiny presets, sane for every preset in the repository."""

from pathlib import Path

import pytest

from rsbook.cli import main
from rsbook.plan import format_seconds, notebook_defaults, plan_notebook
from rsbook.runner import list_presets

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PRESETS = [(nb, p) for nb in sorted(NOTEBOOKS.glob("*.ipynb")) for p in list_presets(nb)]


def test_tiny_primer_preset_counts(tiny_cifar10):
    plan = plan_notebook(NOTEBOOKS / "00_randomized_smoothing.ipynb", "tiny_cifar10",
                         overrides={"data_root": str(tiny_cifar10)}, calibrate_device=False)
    # one sigma, one epoch over the fixture's 5 x 4 training images; 4 of its 6 test images at n0 + n = 10 + 50
    assert (plan.models, plan.epochs, plan.train_images, plan.train_passes) == (1, 1, 20, 20)
    assert (plan.certified_models, plan.certified_examples, plan.samples_per_example) == (1, 4, 60)
    assert plan.certify_passes == 240


def test_calibrated_estimate_on_the_defaults():
    plan = plan_notebook(NOTEBOOKS / "00_randomized_smoothing.ipynb", calibration_seconds=0.2)
    # digits: 3 sigmas x 3 seeds x 30 epochs x 1,437 images; every 2nd of 360 test images at 100 + 2,000 samples
    assert plan.models == 9
    assert plan.train_passes == 9 * 30 * 1437 and plan.certify_passes == 9 * 180 * 2100
    assert plan.train_rate > 0 and plan.infer_rate > 0
    assert plan.seconds == pytest.approx(plan.train_passes / plan.train_rate + plan.certify_passes / plan.infer_rate)
    assert "estimated wall-clock" in str(plan)


def test_tiny_smoothadv_preset_counts(tiny_cifar10):
    plan = plan_notebook(NOTEBOOKS / "01_smoothadv.ipynb", "tiny", overrides={"data_root": str(tiny_cifar10)},
                         calibrate_device=False)
    # methods gaussian, pgd (1 step), ddn (2 steps) at one sigma + a one-point grid (m_train 2, 1 step):
    # per training image 1 + 2 + 3 + 2 * 2 noisy forward-backward passes; 4 test images at 10 + 100 samples
    assert plan.models == 4 and plan.train_images == 20
    assert plan.train_passes == pytest.approx(20 * (1 + 2 + 3 + 2 * 2))
    assert plan.certify_passes == 4 * 4 * 110
    assert plan.seconds is None


PARAMETERS = """dataset = "digits"
arch = "digits_cnn"
sigmas = [0.25, 0.5]
methods = ["gaussian", "pgd"]
seeds = 3
pgd_steps = 4               # T for "pgd" (a comment with = and "quotes")
m_train = 2
epochs = 7
ablation_method = "pgd"
ablation_epsilons = [1.0, 2.0]
grid = {"sigma": [0.25, 0.5], "steps": [1, 3]}
n0 = 100
n = [1000, 4000]
skip = 3
max_examples = 50
linf = [0.5 / 255]
unknown_setting = {"x": [1]}
"""


def _notebook(tmp_path, source=PARAMETERS):
    import json

    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": source,
                     "outputs": [], "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "99_made_up.ipynb"
    path.write_text(json.dumps(nb))
    (tmp_path / "presets" / "99_made_up").mkdir(parents=True)
    (tmp_path / "presets" / "99_made_up" / "small.yaml").write_text("epochs: 2\nmax_examples: 10\n")
    return path


def test_counts_of_a_made_up_chapter(tmp_path):
    nb = _notebook(tmp_path)
    assert notebook_defaults(nb)["linf"] == [0.5 / 255] and notebook_defaults(nb)["pgd_steps"] == 4
    plan = plan_notebook(nb, "small", calibrate_device=False)
    # sigmas 2 x methods 2 x seeds 3 = 12, + 2 epsilon ablations x 3 seeds, + a 4-point grid
    assert plan.models == 12 + 6 + 4 and plan.epochs == 2
    per_image = 6 * (2 + 2 * 5) + 6 * 2 * 5 + 2 * 2 * 2 + 2 * 2 * 4  # gaussian/pgd, ablations, grid steps 1 and 3
    assert plan.train_passes == pytest.approx(2 * 1437 * per_image)
    # every 3rd of 360 digits test images (120), at most 10; n0 per sample size: 2 x 100 + 1000 + 4000
    assert plan.certified_examples == 10 and plan.samples_per_example == 5200
    assert plan.certify_passes == 22 * 10 * 5200
    with pytest.raises(ValueError, match="unknown preset 'big'.*valid choices: small"):
        plan_notebook(nb, "big", calibrate_device=False)


def test_a_checkpoint_parameter_means_nothing_is_trained(tmp_path):
    nb = _notebook(tmp_path, 'dataset = "cifar10"\ncheckpoint = None\nsigma = 0.25\nn0 = 10\nn = 100\nskip = 20\n')
    plan = plan_notebook(nb, calibrate_device=False)
    assert plan.models == 0 and plan.train_passes == 0 and plan.certify_passes == 500 * 110
    assert any("pass -p checkpoint=PATH" in note for note in plan.notes)
    given = plan_notebook(nb, overrides={"checkpoint": "m.pth", "dataset": "digits"}, calibrate_device=False)
    assert given.models == 0 and given.certified_models == 1


@pytest.mark.parametrize("notebook,preset", PRESETS, ids=[f"{n.stem}:{p}" for n, p in PRESETS])
def test_every_preset_has_a_sane_plan(notebook, preset):
    plan = plan_notebook(notebook, preset, calibrate_device=False)
    assert plan.models >= 0 and plan.certified_models >= 1
    assert plan.certify_passes > 0 and plan.train_passes >= 0
    assert (plan.models == 0) == (plan.train_passes == 0)
    assert "models to train" in str(plan)


def test_unknown_parameters_do_not_break_the_plan():
    plan = plan_notebook(NOTEBOOKS / "00_randomized_smoothing.ipynb", None,
                         overrides={"frobnicate": {"a": [1, 2]}, "new_thing": [1, 2, 3]}, calibrate_device=False)
    assert plan.models == 9  # 3 sigmas x 3 seeds


def test_plan_command(capsys):
    assert main(["plan", str(NOTEBOOKS / "00_randomized_smoothing.ipynb"), "--preset", "imagenet_resnet50",
                 "--no-calibration"]) == 0
    out = capsys.readouterr().out
    assert "models to train" in out and "1,281,167" in out
    assert main(["plan", str(NOTEBOOKS / "00_randomized_smoothing.ipynb"), "--preset", "nope"]) == 2
    assert "valid choices" in capsys.readouterr().err


def test_format_seconds():
    assert [format_seconds(s) for s in (42, 600, 7200, 86400 * 10)] == ["42 s", "10.0 min", "2.0 h", "10.0 days"]
