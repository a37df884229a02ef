"""Set-up files agree with each other and with the README."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_has_the_same_pins_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pip = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    for req in wanted:
        assert _name(req) in pip, f"{req} is in pyproject.toml but not in environment.yml"
        assert pip[_name(req)] == req.replace(" ", ""), f"pins differ: {req} vs {pip[_name(req)]}"
    assert set(pip) == {_name(r) for r in wanted}, "environment.yml lists packages pyproject.toml does not"
    assert "torch==2.14.1" in wanted and "torchvision==0.29.1" in wanted


def test_readme_commands_and_ci_agree():
    readme = (REPO / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert readme.index("make book") < readme.index("make test")
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_preset_is_a_mapping_of_notebook_parameters():
    import json

    for preset in (REPO / "notebooks" / "presets").glob("*/*.yaml"):
        notebook = REPO / "notebooks" / f"{preset.parent.name}.ipynb"
        assert notebook.exists(), f"preset {preset} has no notebook {notebook.name}"
        cells = json.loads(notebook.read_text())["cells"]
        params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
        names = set(re.findall(r"^(\w+)\s*=", "".join(params["source"]), flags=re.M))
        values = yaml.safe_load(preset.read_text())
        assert isinstance(values, dict)
        unknown = set(values) - names
        assert not unknown, f"{preset.name} sets parameters the notebook does not have: {unknown}"
