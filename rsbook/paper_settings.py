"""The papers' experimental settings, as data, and the presets held against them.

``rsbook/paper_data/settings/<chapter>.yaml`` records, per experiment a chapter offers at full
scale, what the paper ran: each setting keyed by the chapter notebook's parameter name, with its
source (the paper's section or table, or the authors' public code where the paper is silent),
and what no parameter can express (``unexpressed``). The format is in ``FORMAT.md`` beside the
files. A preset of ``notebooks/presets/<chapter>/`` names the experiment it runs
(``paper_experiment``) and lists every parameter it runs differently, with the reason
(``deviations``); :func:`check_presets` finds the differences a preset does not declare, and
:func:`deviations_table` is what each chapter's "run it at full scale" section prints, so a
reader learns them without opening a YAML file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SETTINGS_DIR", "paper_experiments", "same_value", "preset_rows", "check_presets", "deviations_table"]

SETTINGS_DIR = Path(__file__).parent / "paper_data" / "settings"
#: the chapter notebooks of a checkout (the book runs from one)
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _notebook(notebook: str | os.PathLike) -> Path:
    """A chapter given by its stem (``"01_smoothadv"``) or by the path of its notebook."""
    path = Path(notebook)
    return path if path.suffix == ".ipynb" else NOTEBOOKS / f"{path.name}.ipynb"


def paper_experiments(chapter: str) -> dict[str, dict]:
    """The experiments of one chapter (``"01_smoothadv"``), each ``{paper, what, settings, unexpressed}``."""
    path = SETTINGS_DIR / f"{chapter}.yaml"
    if not path.exists():
        raise ValueError(f"no paper settings for chapter {chapter!r} ({path.name}); valid choices: "
                         + ", ".join(sorted(p.stem for p in SETTINGS_DIR.glob("*.yaml"))))
    data = yaml.safe_load(path.read_text()) or {}
    experiments = data.get("experiments") or {}
    for name, exp in experiments.items():
        for key in ("paper", "what", "settings"):
            if key not in exp:
                raise ValueError(f"{path.name}: experiment {name!r} has no {key!r}")
        for param, entry in exp["settings"].items():
            if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
                raise ValueError(f"{path.name}: {name}.{param} needs a value and a source, got {entry!r}")
        exp.setdefault("unexpressed", [])
        exp["not_stated"] = dict(exp.get("not_stated") or {})
        for param, why in exp["not_stated"].items():
            if param in exp["settings"] or not str(why or "").strip():
                raise ValueError(f"{path.name}: {name}.not_stated.{param} needs a reason and must not also be a setting")
    return experiments


#: what every training experiment records, as a setting or under ``not_stated`` with the reason
#: (only those that are parameters of the chapter's notebook); a value the paper states and the file
#: leaves out could otherwise never be found deviating
CORE_SETTINGS = ("dataset", "arch", "epochs", "lr", "schedule", "step_size", "batch_size", "batch_counts",
                 "sigmas", "sigma", "n0", "n", "alpha", "skip")


def same_value(a: Any, b: Any) -> bool:
    """Equal as parameter values: numbers to rounding (1e-9 relative), lists and mappings element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        norm = lambda d: {float(k) if isinstance(k, (int, float)) else k: v for k, v in d.items()}
        a, b = norm(a), norm(b)
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def preset_rows(notebook: str | os.PathLike) -> list[dict]:
    """One row per (preset, setting of its experiment): the paper's value, the preset's, and what the preset says.

    ``status`` is ``"same"``, ``"deviation"`` (declared, with its reason), ``"silent"`` (differs,
    not declared), ``"stale"`` (declared but the values agree), ``"not a parameter"`` (the
    settings file names a parameter the notebook does not have), ``"no experiment"`` (a preset
    naming an experiment the settings file lacks) or ``"no purpose"`` (``paper_experiment: null``
    without a ``purpose``).
    """
    from rsbook.plan import notebook_defaults
    from rsbook.runner import list_presets, load_parameters, preset_metadata

    notebook = _notebook(notebook)
    chapter = notebook.stem
    defaults = notebook_defaults(notebook)
    experiments = paper_experiments(chapter)
    rows = []
    for preset in list_presets(notebook):
        meta = preset_metadata(notebook, preset)
        params = load_parameters(notebook, preset)
        name = meta["paper_experiment"]
        base = {"preset": preset, "experiment": name}
        if name is None:
            rows.append({**base, "parameter": None, "paper": None, "preset value": None,
                         "status": "not a paper experiment" if meta["purpose"] else "no purpose",
                         "reason": meta["purpose"], "source": None})
            continue
        if name not in experiments:
            rows.append({**base, "parameter": None, "paper": None, "preset value": None, "status": "no experiment",
                         "reason": f"valid experiments: {', '.join(experiments)}", "source": None})
            continue
        settings = experiments[name]["settings"]
        for param, entry in settings.items():
            row = {**base, "parameter": param, "paper": entry["value"], "source": entry["source"]}
            if param not in defaults:
                rows.append({**row, "preset value": None, "status": "not a parameter", "reason": None})
                continue
            value = params.get(param, defaults[param])
            same = same_value(value, entry["value"])
            reason = meta["deviations"].get(param)
            status = ("stale" if reason else "same") if same else ("deviation" if reason else "silent")
            rows.append({**row, "preset value": value, "status": status, "reason": reason})
        for param, reason in meta["deviations"].items():
            if param not in settings:   # a deviation from what the paper does not state: the book's choice
                value = params.get(param, defaults.get(param))
                status = "deviation" if param in defaults and reason else "not a parameter"
                stated = experiments[name]["not_stated"]
                rows.append({**base, "parameter": param,
                             "paper": "(not stated)" if param in stated else "(no paper value)",
                             "source": stated.get(param), "preset value": value, "status": status, "reason": reason})
        for param in CORE_SETTINGS:     # a core setting neither recorded nor declared not stated
            if param in defaults and param not in settings and param not in experiments[name]["not_stated"]:
                rows.append({**base, "parameter": param, "paper": None, "source": None, "preset value": None,
                             "status": "not recorded", "reason": None})
    return rows


def check_presets(notebook: str | os.PathLike) -> list[str]:
    """Every problem of the chapter's presets against the papers' settings, one line each (empty: none)."""
    problems = []
    for r in preset_rows(notebook):
        what = f"{r['preset']}: {r['parameter']}" if r["parameter"] else r["preset"]
        if r["status"] == "silent":
            problems.append(f"{what} = {r['preset value']!r}, the paper's {r['paper']!r} ({r['source']}), "
                            "and no reason under deviations:")
        elif r["status"] == "stale":
            problems.append(f"{what} is listed under deviations but equals the paper's {r['paper']!r}")
        elif r["status"] == "not recorded":
            problems.append(f"{what}: the experiment {r['experiment']!r} records no value for this core setting; "
                            "give the paper's (with its source) or list it under not_stated: with the reason")
        elif r["status"] in ("not a parameter", "no experiment", "no purpose"):
            problems.append(f"{what}: {r['status']}" + (f" ({r['reason']})" if r["reason"] else ""))
        elif r["status"] == "deviation" and not str(r["reason"] or "").strip():
            problems.append(f"{what}: a deviation needs its reason")
    return problems


def deviations_table(notebook: str | os.PathLike):
    """What a chapter prints under "run it at full scale": per preset, every difference from its paper, and why.

    Rows: the declared deviations (paper's value, the preset's, the reason) and, per
    experiment, what the paper ran that no parameter expresses (``unexpressed``).
    """
    import pandas as pd

    notebook = _notebook(notebook)
    experiments = paper_experiments(notebook.stem)
    rows, preset_list = [], preset_rows(notebook)
    for r in preset_list:
        if r["status"] == "deviation":
            rows.append({"preset": r["preset"], "setting": r["parameter"], "paper": _short(r["paper"]),
                         "preset value": _short(r["preset value"]), "why": r["reason"]})
    seen = set()
    for r in preset_list:
        name = r["experiment"]
        if name in experiments and name not in seen:
            seen.add(name)
            for u in experiments[name]["unexpressed"]:
                rows.append({"preset": r["preset"], "setting": u["setting"], "paper": f"({u.get('source', '')})",
                             "preset value": "not expressible", "why": u.get("why", "")})
    return pd.DataFrame(rows, columns=["preset", "setting", "paper", "preset value", "why"])


def _short(value: Any, width: int = 40) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
