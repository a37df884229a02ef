"""The book builds without a warning, and its pages load no script or font from the internet."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_toc_notebooks_are_executed_without_errors():
    sys.path.insert(0, str(REPO / "book"))
    from check_notebooks import problems, toc_notebooks

    notebooks = toc_notebooks()
    assert any(p.name == "00_randomized_smoothing.ipynb" for p in notebooks)
    assert [p for nb in notebooks for p in problems(nb)] == []


def test_the_check_catches_a_notebook_error(tmp_path):
    sys.path.insert(0, str(REPO / "book"))
    from check_notebooks import problems

    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [{"cell_type": "code", "source": ["1/0"], "execution_count": 1, "metadata": {}, '
                   '"outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",'
                   ' "traceback": []}]}]}')
    assert problems(bad) == ["bad.ipynb: code cell 0 raised ZeroDivisionError: division by zero"]


@pytest.mark.slow
def test_book_builds_cleanly_and_offline(tmp_path):
    build = tmp_path / "build"
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(REPO), "--path-output", str(build), "--warningiserror",
                           "--keep-going"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = build / "_build" / "html"
    pages = list(html.rglob("*.html"))
    assert (html / "notebooks" / "00_randomized_smoothing.html").exists()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    remote = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["']https?://""")
    offenders = [p.name for p in pages if remote.search(p.read_text(errors="ignore"))]
    assert not offenders, f"pages load remote scripts/styles: {offenders}"
    primer = (html / "notebooks" / "00_randomized_smoothing.html").read_text()
    assert "mathjax/tex-chtml.js" in primer and primer.count("<img") >= 3


# ---------------------------------------------------------------- stored outputs and conventions
def _toc_notebooks():
    sys.path.insert(0, str(REPO / "book"))
    from check_notebooks import toc_notebooks

    return toc_notebooks()


def _cells(path):
    import json

    return json.loads(path.read_text())["cells"]


ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:home|root|work|Users|tmp|usr|opt|var|private)/[^\s'\"]*|[A-Z]:\\\\Users")
PROGRESS_SPAM = re.compile(r"\d+%\|[^\n]*\|")


def _output_text(out) -> str:
    if out.get("output_type") == "stream":
        return "".join(out.get("text", ""))
    data = out.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/html", ""))


def test_stored_outputs_are_clean():
    """No absolute paths of any machine, no errors, no progress-bar spam in any chapter's stored outputs."""
    found = []
    for nb in _toc_notebooks():
        for i, cell in enumerate(_cells(nb)):
            for out in cell.get("outputs", []):
                text = _output_text(out)
                if out.get("output_type") == "error":
                    found.append(f"{nb.name} cell {i}: error output")
                if ABSOLUTE_PATH.search(text):
                    found.append(f"{nb.name} cell {i}: absolute path {ABSOLUTE_PATH.search(text).group(0)!r}")
                if "\r" in text or len(PROGRESS_SPAM.findall(text)) > 1:
                    found.append(f"{nb.name} cell {i}: progress-bar redraws")
                if "TqdmWarning" in text or "IProgress" in text:
                    found.append(f"{nb.name} cell {i}: tqdm widget warning")
    assert not found, "\n".join(found)


def test_the_output_scan_catches_paths_and_spam():
    assert ABSOLUTE_PATH.search("saved to /work/main/_artifacts/x.pth")
    assert ABSOLUTE_PATH.search("/root/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning")
    assert not ABSOLUTE_PATH.search("../_artifacts/00/x.pth and 1/2 and σ/√d")
    assert len(PROGRESS_SPAM.findall("a 10%|█  | 1/10\na 20%|██ | 2/10")) == 2


CHAPTERS = ("00_randomized_smoothing", "02_adre", "01_smoothadv", "03_catrs", "04_non_gaussian", "05_iss")


def test_every_chapter_follows_the_book_conventions():
    """Parameters validated next; claim checks; 3+ exercises each with a revealable solution; full-scale command."""
    problems = []
    for nb in _toc_notebooks():
        if nb.stem not in CHAPTERS:
            continue
        cells = _cells(nb)
        src = ["".join(c["source"]) for c in cells]
        tags = [c.get("metadata", {}).get("tags", []) for c in cells]
        p = next((i for i, t in enumerate(tags) if "parameters" in t), None)
        if p is None:
            problems.append(f"{nb.name}: no parameters cell")
            continue
        following = next(s for c, s in zip(cells[p + 1:], src[p + 1:]) if c["cell_type"] == "code")
        if "check_parameters(" not in following:
            problems.append(f"{nb.name}: the cell after the parameters does not call check_parameters")
        code = "\n".join(s for c, s in zip(cells, src) if c["cell_type"] == "code")
        markdown = "\n".join(s for c, s in zip(cells, src) if c["cell_type"] == "markdown")
        if "Claims(" not in code or ".report()" not in code:
            problems.append(f"{nb.name}: no claim checks (rsbook.claims.Claims ... .report())")
        exercises = re.findall(r"```\{admonition\} Exercise (\d+)", markdown)
        solutions = set(re.findall(r"```\{dropdown\} Solution to exercise (\d+)", markdown))
        if len(exercises) < 3:
            problems.append(f"{nb.name}: {len(exercises)} exercises (at least 3)")
        if not set(exercises) <= solutions:
            problems.append(f"{nb.name}: exercises {sorted(set(exercises) - solutions)} have no solution dropdown")
        for c, s, t in zip(cells, src, tags):
            if c["cell_type"] == "code" and s.lstrip().startswith("# Solution to exercise") and "hide-input" not in t:
                problems.append(f"{nb.name}: a solution code cell is not tagged hide-input")
        if "python -m rsbook run notebooks/" not in markdown:
            problems.append(f"{nb.name}: no full-scale command")
    assert not problems, "\n".join(problems)
