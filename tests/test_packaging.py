"""Set-up files agree with each other and with the README."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


LOCK_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==([^ ;]+)\s*(?:;\s*(.+))?$")


def _lock() -> dict[str, list[tuple[str, str | None]]]:
    pins: dict[str, list[tuple[str, str | None]]] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = LOCK_LINE.match(line)
        assert m, f"requirements.lock line is not an exact pin: {line!r}"
        pins.setdefault(_name(m.group(1)), []).append((m.group(2), m.group(3)))
    return pins


def _wanted() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    return wanted


def test_lock_pins_every_dependency_and_keeps_the_torch_pins():
    pins = _lock()
    assert len(pins) > 100, "the lock must pin the transitive dependencies too"
    for req in _wanted():
        assert _name(req) in pins, f"{req} (pyproject.toml) is missing from requirements.lock: run `make lock`"
        if "==" in req:
            version = req.split("==", 1)[1].strip()
            assert [v for v, _ in pins[_name(req)]] == [version], f"{req} is locked as {pins[_name(req)]}"
    assert "torch==2.14.1" in _wanted() and "torchvision==0.29.1" in _wanted()


def test_installed_versions_are_the_locked_ones():
    from importlib.metadata import PackageNotFoundError, version

    from packaging.markers import Marker

    mismatched = []
    for name, entries in _lock().items():
        wanted = [v for v, marker in entries if marker is None or Marker(marker).evaluate()]
        if not wanted:
            continue
        try:
            have = version(name)
        except PackageNotFoundError:
            mismatched.append(f"{name} not installed (lock: {wanted[0]})")
            continue
        if have not in wanted:
            mismatched.append(f"{name} {have} (lock: {wanted[0]})")
    assert not mismatched, "environment differs from requirements.lock: " + ", ".join(mismatched)


def test_environment_yml_installs_the_lock():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.lock", "-e ."]
    assert "python=3.11" in env["dependencies"]
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.lock" in makefile and "uv pip compile" in makefile


def test_readme_commands_and_ci_agree():
    readme = (REPO / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert readme.index("make book") < readme.index("make test")
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_preset_is_a_mapping_of_notebook_parameters():
    import json

    from rsbook.runner import PRESET_METADATA

    for preset in (REPO / "notebooks" / "presets").glob("*/*.yaml"):
        notebook = REPO / "notebooks" / f"{preset.parent.name}.ipynb"
        assert notebook.exists(), f"preset {preset} has no notebook {notebook.name}"
        cells = json.loads(notebook.read_text())["cells"]
        params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
        names = set(re.findall(r"^(\w+)\s*=", "".join(params["source"]), flags=re.M))
        values = yaml.safe_load(preset.read_text())
        assert isinstance(values, dict)
        unknown = set(values) - names - set(PRESET_METADATA)   # what the preset says about itself
        assert not unknown, f"{preset.name} sets parameters the notebook does not have: {unknown}"


def test_every_preset_passes_the_runners_parameter_checks():
    """`rsbook run --preset P` must not be refused: names, kinds and values of every preset are valid."""
    from rsbook.chapters import chapter_rules
    from rsbook.params import check_overrides
    from rsbook.runner import load_parameters

    failures = []
    for preset in sorted((REPO / "notebooks" / "presets").glob("*/*.yaml")):
        notebook = REPO / "notebooks" / f"{preset.parent.name}.ipynb"
        try:
            check_overrides(notebook, load_parameters(notebook, preset.stem), extra=chapter_rules(notebook))
        except ValueError as err:
            failures.append(f"{preset.parent.name}/{preset.name}: {err}")
    assert not failures, "\n".join(failures)
