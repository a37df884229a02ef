"""Validate a notebook's parameters before anything runs.

Two entry points share the same rules:

* :func:`check_parameters` is called by each chapter in the cell right after its papermill
  ``parameters`` cell, so plain ``papermill`` users get the same clear errors as
  ``rsbook run`` users: ``check_parameters(globals(), extra={"lambdas": list_of(nonneg_float)})``.
* :func:`check_overrides` is called by :func:`rsbook.runner.run_notebook` *before executing any
  cell*: it reads the notebook's parameters cell (papermill's inspection), rejects an unknown
  name (listing the valid ones and suggesting the closest) and a value of the wrong type,
  then applies :func:`check_parameters` to the merged values.

A rule is a function ``rule(name, value)`` that raises ``ValueError`` naming the parameter,
the value and what is allowed. Rules apply by parameter name, so every notebook that calls
its noise levels ``sigmas`` gets the same check.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
from typing import Any, Callable, Iterable, Mapping

__all__ = ["check_parameters", "check_overrides", "notebook_parameters", "RULES", "positive_float",
           "nonneg_float", "positive_int", "nonneg_int", "integer", "alpha_value", "open_fraction", "probability", "list_of",
           "optional", "one_or_list", "choice", "boolean", "string", "mapping", "Rule"]

Rule = Callable[[str, Any], None]


def _fail(name: str, value, allowed: str):
    raise ValueError(f"parameter {name}={value!r} is invalid: {allowed}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_float(name, value):
    if not _is_number(value) or not (value > 0) or math.isinf(value):
        _fail(name, value, "must be a finite number > 0")


def nonneg_float(name, value):
    if not _is_number(value) or not (value >= 0) or math.isinf(value):
        _fail(name, value, "must be a finite number >= 0")


def probability(name, value):
    if not _is_number(value) or not (0 <= value <= 1):
        _fail(name, value, "must be a number in [0, 1]")


def alpha_value(name, value):
    if not _is_number(value) or not (0 < value < 1):
        _fail(name, value, "must be a failure probability in the open interval (0, 1)")


def open_fraction(name, value):
    if not _is_number(value) or not (0 < value < 1):
        _fail(name, value, "must be a number in the open interval (0, 1)")


def integer(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, value, "must be an integer")


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, value, "must be an integer >= 1")


def nonneg_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(name, value, "must be an integer >= 0")


def boolean(name, value):
    if not isinstance(value, bool):
        _fail(name, value, "must be true or false")


def string(name, value):
    if not isinstance(value, str):
        _fail(name, value, "must be a string")


def mapping(name, value):
    if not isinstance(value, dict):
        _fail(name, value, "must be a mapping (a YAML/JSON object)")


def list_of(rule: Rule, allow_empty: bool = True) -> Rule:
    """A list whose every element passes ``rule`` (a bare scalar is refused: it is a common typo)."""
    def check(name, value):
        if not isinstance(value, (list, tuple)):
            try:  # suggest the one-element list only when it would be accepted
                rule(name, value)
                hint = f"; for this one value write [{value!r}]"
            except ValueError:
                hint = ""
            _fail(name, value, f"must be a list, got {_kind(value)}{hint}")
        if not allow_empty and not value:
            _fail(name, value, "must be a non-empty list")
        for i, item in enumerate(value):
            rule(f"{name}[{i}]", item)
    return check


def one_or_list(rule: Rule, allow_empty: bool = True) -> Rule:
    """One value passing ``rule``, or a list of such values (for parameters documented as "X or list")."""
    as_list = list_of(rule, allow_empty)

    def check(name, value):
        if isinstance(value, (list, tuple)):
            as_list(name, value)
        else:
            rule(name, value)
    return check


def _kind(value) -> str:
    if value is None:
        return "null (None)"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    return {str: "string", dict: "mapping"}.get(type(value), type(value).__name__)


def optional(rule: Rule) -> Rule:
    """``None`` or a value passing ``rule``."""
    def check(name, value):
        if value is not None:
            rule(name, value)
    return check


def choice(values: Iterable[str] | Callable[[], Iterable[str]]) -> Rule:
    """One of ``values`` (a callable is evaluated lazily, so registries filled later are seen)."""
    def check(name, value):
        valid = list(values() if callable(values) else values)
        if value not in valid:
            close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(name, value, f"valid choices: {', '.join(map(str, valid))}{hint}")
    return check


def _datasets():
    from rsbook.data import DATASETS

    return DATASETS


def _archs():
    from rsbook.models import ARCHITECTURES

    return ARCHITECTURES


def _objectives():
    from rsbook.train import OBJECTIVES

    return OBJECTIVES


def _schedules():
    from rsbook.train import SCHEDULES

    return SCHEDULES


def _device(name, value):
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        _fail(name, value, "valid choices: auto, cpu, cuda, cuda:<index>")


#: rules by parameter name, shared by every chapter
RULES: dict[str, Rule] = {
    "seed": nonneg_int,
    "seeds": list_of(nonneg_int, allow_empty=False),
    "out_dir": string,
    "data_root": optional(string),
    "checkpoint": optional(string),
    "dataset": choice(_datasets),
    "arch": choice(_archs),
    "device": _device,
    "objective": choice(_objectives),
    "sigma": positive_float,
    "sigmas": list_of(positive_float, allow_empty=False),
    "epochs": positive_int,
    "batch_size": positive_int,
    "lr": positive_float,
    "momentum": nonneg_float,
    "weight_decay": nonneg_float,
    "schedule": choice(_schedules),
    "step_size": positive_int,
    "warmup_epochs": nonneg_int,
    "label_smoothing": probability,
    "batch_counts": choice(("images", "noisy")),
    "num_noise": positive_int,
    "workers": nonneg_int,
    "gpus": positive_int,
    "n0": positive_int,
    "n": positive_int,
    "alpha": alpha_value,
    "certify_batch": positive_int,
    "skip": positive_int,
    "max_examples": optional(positive_int),
    "num_test": optional(positive_int),
    "radii": list_of(nonneg_float),
}


def check_parameters(namespace: Mapping[str, Any], extra: Mapping[str, Rule] | None = None) -> None:
    """Check every parameter in ``namespace`` that has a rule (:data:`RULES`, then ``extra``).

    Pass ``globals()`` from a notebook: names without a rule are ignored, so the call is safe
    in any chapter. Raises ``ValueError`` on the first bad value.
    """
    rules = {**RULES, **(extra or {})}
    for name, rule in rules.items():
        if name in namespace and not isinstance(namespace[name], _Expression):
            rule(name, namespace[name])


class _Expression(str):
    """A parameter default that is an expression we could not evaluate: any type is accepted for it."""


def notebook_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """The notebook's ``parameters`` cell as ``{name: default value}``.

    The cell is parsed with Python's own parser (papermill's line-by-line inspection drops
    lines it cannot read, e.g. a comment holding ``=``). A literal default is returned as its
    value; an arithmetic expression such as ``[0.5 / 255, 1 / 255]`` is evaluated without
    builtins; anything else is returned as an :class:`_Expression` (its source text).
    """
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError(f"{os.path.basename(str(notebook))} has no cell tagged 'parameters'")
    out = {}
    for node in ast.parse(cell.source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        source = ast.get_source_segment(cell.source, node.value)
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            try:
                out[node.targets[0].id] = eval(compile(ast.Expression(node.value), "<parameters>", "eval"),
                                               {"__builtins__": {}})
            except Exception:  # noqa: BLE001 -- not evaluable here: accept any value for it
                out[node.targets[0].id] = _Expression(source)
    return out


def _type_family(value) -> str:
    if value is None or isinstance(value, _Expression):
        return "none"
    if isinstance(value, bool):
        return "bool"
    if _is_number(value):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def check_overrides(notebook: str | os.PathLike, overrides: Mapping[str, Any],
                    ignore: Iterable[str] = ("out_dir",), extra: Mapping[str, Rule] | None = None) -> dict[str, Any]:
    """Refuse unknown names and bad values for ``notebook``; return the merged parameters.

    ``extra`` are the chapter's own rules (:func:`rsbook.chapters.chapter_rules`), as its
    validation cell passes them to :func:`check_parameters`. A parameter with a rule is
    judged by its rule alone (so ``k_bar`` may be an int or a list, and ``radii`` may be
    ``None`` where the chapter says so); one without a rule must be of its default's kind
    (number, bool, string, list, mapping), any kind if its default is ``None``.
    """
    ruled = {**RULES, **(extra or {})}
    defaults = notebook_parameters(notebook)
    valid = sorted(defaults)
    for name, value in overrides.items():
        if name in ignore:
            continue
        if name not in defaults:
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown parameter {name!r} for {os.path.basename(str(notebook))}{hint} "
                             f"valid names: {', '.join(valid)}")
        if name in ruled:
            continue
        want, got = _type_family(defaults[name]), _type_family(value)
        if want != "none" and got != want and not (got == "none" and want in ("number", "str")):
            raise ValueError(f"parameter {name}={value!r} has the wrong type: expected a {want} like the "
                             f"default {defaults[name]!r}, got a {got}")
    merged = {**defaults, **dict(overrides)}
    check_parameters(merged, extra)
    return merged
