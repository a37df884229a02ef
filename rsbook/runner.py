"""Run a chapter notebook with papermill, from a named preset or a YAML parameter file.

A preset is ``notebooks/presets/<notebook stem>/<name>.yaml``: a mapping of the
notebook's ``parameters`` cell variables. Each run gets its own folder holding the
parameters used, the executed notebook and every artefact the notebook writes
(the runner sets the notebook's ``out_dir`` parameter to that folder). Parameters are
checked against the notebook's ``parameters`` cell before anything executes
(:func:`rsbook.params.check_overrides`).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Mapping

import yaml

__all__ = ["list_presets", "load_parameters", "preset_metadata", "PRESET_METADATA", "run_notebook", "parse_overrides", "check_data", "NotebookFailed"]


class NotebookFailed(RuntimeError):
    """A cell of the executed notebook raised; the message names the cell, the error and the saved notebook."""


def _preset_dir(notebook: Path) -> Path:
    return notebook.parent / "presets" / notebook.stem


def list_presets(notebook: str | os.PathLike) -> list[str]:
    """Names of the presets available for ``notebook``."""
    return sorted(p.stem for p in _preset_dir(Path(notebook)).glob("*.yaml"))


def _read_yaml_mapping(notebook: Path, preset: str | None, params_file) -> dict:
    """The whole mapping of a preset or a YAML file, checked (empty when neither is given)."""
    if preset is not None and params_file is not None:
        raise ValueError("give either preset or params_file, not both")
    if preset is not None:
        path = _preset_dir(notebook) / f"{preset}.yaml"
        if not path.exists():
            choices = ", ".join(list_presets(notebook)) or "(none)"
            raise ValueError(f"unknown preset {preset!r} for {notebook.name}; valid choices: {choices}")
    elif params_file is not None:
        path = Path(params_file)
        if not path.exists():
            raise FileNotFoundError(f"parameter file not found: {path}")
    else:
        return {}
    if path.is_dir():
        raise ValueError(f"parameter file {path} is a directory; give a YAML file")
    try:
        with open(path) as fh:
            params = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a mapping of parameter names to values, got {type(params).__name__}")
    return params


def load_parameters(notebook: str | os.PathLike, preset: str | None = None,
                    params_file: str | os.PathLike | None = None) -> dict:
    """The parameter mapping of a preset or a YAML file (empty = the notebook's defaults)."""
    params = _read_yaml_mapping(Path(notebook), preset, params_file)
    # what the preset says about itself (the paper experiment it runs, its deviations) is not a parameter
    return {k: v for k, v in params.items() if k not in PRESET_METADATA}


#: keys of a preset that describe it rather than set a notebook parameter (rsbook.paper_settings reads them)
PRESET_METADATA = ("paper_experiment", "deviations", "purpose")


def preset_metadata(notebook: str | os.PathLike, preset: str) -> dict:
    """``paper_experiment``, ``deviations`` and ``purpose`` of a preset (absent keys: None / {})."""
    raw = _read_yaml_mapping(Path(notebook), preset, None)
    return {"paper_experiment": raw.get("paper_experiment"), "deviations": dict(raw.get("deviations") or {}),
            "purpose": raw.get("purpose")}


def _yaml_problem(err) -> str:
    """One line from a YAML error: what is wrong and where."""
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or err}{where}".replace("\n", " ")


def parse_overrides(pairs) -> dict:
    """``["key=value", ...]`` -> dict, values parsed as YAML (so ``0.5``, ``[1, 2]``, ``null`` work)."""
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"override must look like key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        if not key.strip():
            raise ValueError(f"override {pair!r} has no name before '='")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"override {pair!r}: the value is not valid YAML: {_yaml_problem(err)} "
                             "(quote a string, write lists as [a, b])") from None
    return out


def _check_kernel(kernel: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    names = sorted(KernelSpecManager().find_kernel_specs())
    if kernel not in names:
        raise ValueError(f"unknown Jupyter kernel {kernel!r}; valid choices here: {', '.join(names) or '(none)'}")


def check_data(params: Mapping) -> None:
    """The dataset a run will read exists and fits its architecture (before a cell runs).

    Raises :class:`rsbook.data.DatasetNotFound` for a missing folder and ``ValueError`` when
    ``arch`` is not built for ``dataset``. Parameters a notebook does not have are skipped.
    """
    from rsbook.data import check_dataset_present
    from rsbook.models import check_arch_fits

    dataset = params.get("dataset")
    if not isinstance(dataset, str):
        return
    trains = not params.get("checkpoint")  # a chapter given a checkpoint only certifies: the test split
    if isinstance(params.get("arch"), str) and trains:
        check_arch_fits(params["arch"], dataset)
    check_dataset_present(dataset, params.get("data_root"), splits=("train", "test") if trains else ("test",))


def run_notebook(notebook: str | os.PathLike, preset: str | None = None, params_file: str | os.PathLike | None = None,
                 overrides: Mapping | None = None, run_dir: str | os.PathLike | None = None,
                 kernel: str = "python3", progress: bool = True) -> Path:
    """Execute ``notebook`` into a run folder; returns the folder.

    The folder (default ``runs/<stem>-<preset>-<timestamp>``) receives ``parameters.yaml``,
    the executed ``<stem>.ipynb`` and all artefacts. An existing folder is reused, so
    rerunning an interrupted run resumes its checkpoints and certification logs.
    """
    import papermill

    notebook = Path(notebook).resolve()
    if not notebook.exists():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    params = load_parameters(notebook, preset, params_file)
    params.update(overrides or {})
    # fail before any cell runs: unknown names (typos), wrong types, bad values
    from rsbook.chapters import chapter_rules
    from rsbook.params import check_overrides

    check_overrides(notebook, params, extra=chapter_rules(notebook))
    from rsbook.params import notebook_parameters

    check_data({**notebook_parameters(notebook), **params})
    _check_kernel(kernel)
    label = preset or (Path(params_file).stem if params_file else "defaults")
    if run_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{notebook.stem}-{label}-{stamp}"
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params["out_dir"] = str(run_dir)
    with open(run_dir / "parameters.yaml", "w") as fh:
        yaml.safe_dump({"notebook": str(notebook), "preset": preset, "parameters": params}, fh, sort_keys=False)
    # The stock "python3" kernelspec launches whatever `python` is first on PATH; make that
    # the interpreter running rsbook, so a venv works without being activated.
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + old_path
    executed = run_dir / notebook.name
    if progress:
        print(f"rsbook run: {notebook.name} ({label}) into {run_dir}", flush=True)
    try:
        # the kernel's own start-up warnings (e.g. "running over TCP without encryption", about a
        # local kernel papermill starts itself) say nothing to the user: the kernel logs errors only
        papermill.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name=kernel,
                                   cwd=str(notebook.parent), progress_bar=progress,
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except papermill.PapermillExecutionError as err:
        raise NotebookFailed(f"cell {err.exec_count} of {notebook.name} raised {err.ename}: "
                             f"{str(err.evalue).splitlines()[0] if err.evalue else ''} -- the executed notebook, "
                             f"with the full traceback, is {executed}") from None
    finally:
        os.environ["PATH"] = old_path
    return run_dir
