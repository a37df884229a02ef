"""Every kind of ADRE preset runs the chapter end to end (on digits, at a tiny size).

The presets differ in structure, not only in size: Table 1 trains a lambda grid without
adversarial models, Fig. 1 trains only lambda = 0 and the adversarial pair, and Fig. 2 on the
released models trains nothing. A branch that only a preset reaches (a checks cell with no
rows, a section with nothing to do) fails here rather than hours into a GPU run.
"""

from pathlib import Path

import pytest

from rsbook.experiment import TrainConfig, train_run
from rsbook.runner import load_parameters, run_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_adre.ipynb"
#: the preset's structure on digits at a tiny size: the sizes change, the branches do not
TINY = dict(dataset="digits", arch="digits_cnn", data_root=None, workers=0, epochs=1, batch_size=128,
            num_noise=2, adv_num_noise=2, adv_steps=1, n0=32, n=500, skip=60, certify_batch=500, soft_draws=2,
            sim_trials=200, sim_n=1000)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cifar10_resnet110", "cifar10_resnet110_adv", "cifar10_cohen_released"])
def test_preset_structure_runs_end_to_end(preset, tmp_path, monkeypatch):
    monkeypatch.delenv("RSBOOK_SEED_OFFSET", raising=False)
    params = load_parameters(NOTEBOOK, preset)
    overrides = dict(TINY)
    if params.get("released_models"):
        # a digits checkpoint stands in for each released model: certification, not training, is under test
        run = train_run(TrainConfig(dataset="digits", arch="digits_cnn", sigma=0.25, epochs=1, batch_size=128),
                        tmp_path / "train", device="cpu", progress=False)
        overrides["released_models"] = {0.25: str(run.checkpoint)}
        overrides["sigmas"] = [0.25]
    run_dir = run_notebook(NOTEBOOK, preset, overrides=overrides, run_dir=tmp_path / "run", progress=False)
    assert (run_dir / NOTEBOOK.name).exists()
