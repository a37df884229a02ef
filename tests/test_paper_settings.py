"""Every preset that claims a paper's experiment runs the paper's settings, or says where and why it does not."""

import shutil
from pathlib import Path

import pytest
import yaml

from rsbook.paper_settings import check_presets, deviations_table, paper_experiments, preset_rows, same_value

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ("00_randomized_smoothing", "02_adre", "01_smoothadv", "03_catrs", "04_non_gaussian", "05_iss")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_preset_runs_its_papers_settings_or_says_why(chapter):
    problems = check_presets(ROOT / "notebooks" / f"{chapter}.ipynb")
    assert not problems, f"{chapter}:\n" + "\n".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_setting_has_a_source_and_every_full_scale_preset_names_its_experiment(chapter):
    experiments = paper_experiments(chapter)
    assert experiments, f"{chapter} records no experiment"
    for r in preset_rows(chapter):
        preset = yaml.safe_load((ROOT / "notebooks" / "presets" / chapter / f"{r['preset']}.yaml").read_text())
        if preset.get("dataset", "digits") not in ("digits", "toy2d") and r["experiment"] is None:
            # only a smoke run of the full-scale code path may opt out: a run of one epoch at most
            assert r["reason"] and preset.get("epochs", 99) <= 1, \
                f"{chapter}/{r['preset']}: a full-scale preset must name its paper experiment (only a smoke run may not)"


def test_the_check_finds_a_silent_deviation_and_a_stale_one(tmp_path):
    chapter = "02_adre"
    nb = tmp_path / f"{chapter}.ipynb"
    shutil.copy(ROOT / "notebooks" / f"{chapter}.ipynb", nb)
    (tmp_path / "presets" / chapter).mkdir(parents=True)
    name, exp = next(iter(paper_experiments(chapter).items()))
    param, entry = next((p, e) for p, e in exp["settings"].items() if isinstance(e["value"], (int, float))
                        and not isinstance(e["value"], bool))
    faithful = {p: e["value"] for p, e in exp["settings"].items()}
    preset = tmp_path / "presets" / chapter / "x.yaml"

    def write(**extra):
        preset.write_text(yaml.safe_dump({**faithful, "paper_experiment": name, **extra}))

    write()
    assert check_presets(nb) == []
    write(**{param: entry["value"] * 2 + 1})
    problems = check_presets(nb)
    assert len(problems) == 1 and param in problems[0] and "no reason" in problems[0]
    write(**{param: entry["value"] * 2 + 1, "deviations": {param: "a reason"}})
    assert check_presets(nb) == []
    assert deviations_table(nb)["setting"].tolist()[:1] == [param]
    write(deviations={param: "a reason for nothing"})
    assert "equals the paper's" in check_presets(nb)[0]
    preset.write_text(yaml.safe_dump({"paper_experiment": None}))
    assert "no purpose" in check_presets(nb)[0]


def test_same_value():
    assert same_value(0.1 + 0.2, 0.3) and same_value([0.25, 0.5], (0.25, 0.5)) and same_value({0.5: 1}, {0.5: 1.0})
    assert not same_value(256, 400) and not same_value(True, 1) and not same_value([1, 2], [1, 2, 3])
    assert same_value(None, None) and not same_value(None, 0.0) and same_value("step", "step")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_papers_numbers_printed_beside_a_preset_are_for_its_dataset(chapter):
    """An ImageNet run must not print CIFAR-10 numbers as "the paper's" (the table name says its dataset)."""
    from rsbook.plan import notebook_defaults
    from rsbook.runner import list_presets, load_parameters

    notebook = ROOT / "notebooks" / f"{chapter}.ipynb"
    defaults = notebook_defaults(notebook)
    wrong = []
    for preset in list_presets(notebook):
        params = {**defaults, **load_parameters(notebook, preset)}
        table, dataset = params.get("paper_table_name"), params.get("dataset")
        if table and dataset not in ("digits", "toy2d") and dataset not in table:
            wrong.append(f"{preset}: dataset {dataset!r}, paper_table_name {table!r}")
    assert not wrong, "\n".join(wrong)
