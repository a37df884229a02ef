"""Every chapter's parameters: the runner accepts each chapter's own defaults and what its comments promise."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

from rsbook.chapters import CHAPTER_RULES, chapter_rules
from rsbook.params import RULES, _Expression, check_overrides, list_of, nonneg_float, notebook_parameters

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: for each parameter whose default is None, one value of the kind its comment promises
NONE_DEFAULT_EXAMPLES = {"data_root": "/data/cifar10", "checkpoint": "model.pth", "max_examples": 10,
                         "num_test": 10, "attack_chunk": 4, "cifar10c_root": "/data/CIFAR-10-C",
                         "reference_logs": "/data/catrs-logs", "k0": 100, "radii": [0.0, 0.5],
                         "paper_sigma": 0.5}


def _commented_parameters(notebook):
    """``[(name, default, comment)]`` of the notebook's parameters cell, comments as written."""
    nb = nbformat.read(str(notebook), as_version=4)
    source = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    defaults = notebook_parameters(notebook)
    lines = source.splitlines()
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            line = lines[node.end_lineno - 1]
            comment = line[node.end_col_offset:].partition("#")[2].strip()
            out.append((node.targets[0].id, defaults[node.targets[0].id], comment))
    return out


def _accepts(notebook, name, value):
    try:
        check_overrides(notebook, {name: value}, extra=chapter_rules(notebook))
    except ValueError as err:
        return str(err)
    return None


def test_every_chapter_has_rules_for_all_its_parameters():
    assert {nb.stem for nb in CHAPTERS} == set(CHAPTER_RULES)
    for nb in CHAPTERS:
        missing = [p for p in notebook_parameters(nb) if p not in RULES and p not in chapter_rules(nb)]
        assert not missing, f"{nb.name}: parameters without a rule: {missing}"
        unknown = sorted(set(chapter_rules(nb)) - set(notebook_parameters(nb)))
        assert not unknown, f"{nb.name}: rules for names the parameters cell does not have: {unknown}"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_defaults_and_each_default_as_an_override_pass(notebook):
    """`rsbook run <chapter>` and `-p name=<its default>` for every name (the ISS chapter refused 25 of 26)."""
    check_overrides(notebook, {}, extra=chapter_rules(notebook))
    refused = {}
    for name, default in notebook_parameters(notebook).items():
        if isinstance(default, _Expression):
            continue
        err = _accepts(notebook, name, default)
        if err:
            refused[name] = err
    assert not refused, refused


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_what_the_comments_promise_is_accepted(notebook):
    broken = []
    for name, default, comment in _commented_parameters(notebook):
        promises = []
        if re.search(r"\bNone(:| is\b)", comment):  # "None: computed from sigma", "None is the paper form"
            promises.append(None)
        if default is None:
            assert name in NONE_DEFAULT_EXAMPLES, f"{notebook.name}: give an example value for {name!r}"
            promises.append(NONE_DEFAULT_EXAMPLES[name])
        if "|" in comment:  # '"a" | "b" | "c"': the choices
            for option in re.findall(r'"([^"]+)"', comment):
                promises.append([option] if isinstance(default, list) else option)
        if re.search(r"\b(int|number) or list\b", comment):
            element = default[0] if isinstance(default, list) else default
            promises += [element, [element]]
        for value in promises:
            err = _accepts(notebook, name, value)
            if err:
                broken.append(f"{name}={value!r} (comment: {comment!r}): {err}")
    assert not broken, "\n".join(broken)


def test_the_iss_chapter_takes_k_bar_as_an_int_or_a_list_and_radii_as_none():
    iss = REPO / "notebooks" / "05_iss.ipynb"
    for value in (1000, [1000, 5000]):
        assert _accepts(iss, "k_bar", value) is None
    assert _accepts(iss, "radii", None) is None
    assert "k_bar[0]=0 is invalid" in _accepts(iss, "k_bar", [0])
    assert "must be an integer >= 1" in _accepts(iss, "k_bar", 0.5)


def test_a_list_error_never_suggests_an_impossible_value():
    rule = list_of(nonneg_float)
    with pytest.raises(ValueError) as err:
        rule("radii", None)
    assert "[None]" not in str(err.value) and "got null (None)" in str(err.value)
    with pytest.raises(ValueError, match=r"for this one value write \[0.5\]"):
        rule("radii", 0.5)
    with pytest.raises(ValueError) as err:
        rule("radii", -1)
    assert "[-1]" not in str(err.value)
